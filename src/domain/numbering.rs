//! What libphonenumber's data says about a number we already hold in E.164: its line type, the
//! carrier its range was first given to, where it is, its time zones, its country and its usual
//! formats. Everything comes from data compiled into the binary (namba, which bundles
//! libphonenumber 9.0.36's metadata, carrier, geocoding and time zone files), so it costs no
//! WhatsApp check and no I/O. Validity is still decided by `domain::phone` (the `phonenumber`
//! crate, 9.0.33 data); this module only describes numbers.
//!
//! The answers follow Python phonenumbers 9.0.36 (`number_type`, `carrier.name_for_number`,
//! `geocoder.description_for_number`, `geocoder.country_name_for_number`,
//! `timezone.time_zones_for_number`) wherever that is cheap; tests/it/numbering.rs holds every
//! example number of the metadata against Python. Where namba cannot follow Python, it says so
//! below. Country names are the `keshvar` crate's English names, which are closer to ISO's than
//! Python's table is for about one country in nine ("Czechia" for "Czech Republic", "Russian
//! Federation" for "Russia", "Saint Kitts and Nevis" for "Saint Kitts And Nevis").
use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{LazyLock, PoisonError, RwLock};

use namba::{CarrierName, Format, Location, NumberKind, PhoneNumber, Region, TimeZones};
use phonenumber::Mode;

/// The libphonenumber release whose data answers here ("libphonenumber-9.0.36").
pub const DATA_VERSION: &str = namba::DATA_VERSION;

/// A number's line type, as libphonenumber classifies its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LineType {
    Mobile,
    FixedLine,
    FixedLineOrMobile,
    Voip,
    TollFree,
    PremiumRate,
    SharedCost,
    PersonalNumber,
    Pager,
    /// Universal access number: one number routed to several sites of a company.
    Uan,
    Voicemail,
    /// The number matches none of its country's ranges (or could not be read).
    Unknown,
}

impl LineType {
    pub const ALL: [LineType; 12] = [
        LineType::Mobile,
        LineType::FixedLine,
        LineType::FixedLineOrMobile,
        LineType::Voip,
        LineType::TollFree,
        LineType::PremiumRate,
        LineType::SharedCost,
        LineType::PersonalNumber,
        LineType::Pager,
        LineType::Uan,
        LineType::Voicemail,
        LineType::Unknown,
    ];

    /// libphonenumber's (and the proto's) name: `MOBILE`, `FIXED_LINE`, ...
    pub fn name(self) -> &'static str {
        match self {
            LineType::Mobile => "MOBILE",
            LineType::FixedLine => "FIXED_LINE",
            LineType::FixedLineOrMobile => "FIXED_LINE_OR_MOBILE",
            LineType::Voip => "VOIP",
            LineType::TollFree => "TOLL_FREE",
            LineType::PremiumRate => "PREMIUM_RATE",
            LineType::SharedCost => "SHARED_COST",
            LineType::PersonalNumber => "PERSONAL_NUMBER",
            LineType::Pager => "PAGER",
            LineType::Uan => "UAN",
            LineType::Voicemail => "VOICEMAIL",
            LineType::Unknown => "UNKNOWN",
        }
    }

    /// ProWebLook's wording in JSON: `Mobile`, `Fixed Line`, `VoIP`, ...
    pub fn word(self) -> &'static str {
        match self {
            LineType::Mobile => "Mobile",
            LineType::FixedLine => "Fixed Line",
            LineType::FixedLineOrMobile => "Fixed Line or Mobile",
            LineType::Voip => "VoIP",
            LineType::TollFree => "Toll Free",
            LineType::PremiumRate => "Premium Rate",
            LineType::SharedCost => "Shared Cost",
            LineType::PersonalNumber => "Personal Number",
            LineType::Pager => "Pager",
            LineType::Uan => "UAN",
            LineType::Voicemail => "Voicemail",
            LineType::Unknown => "Unknown",
        }
    }

    fn of_kind(kind: NumberKind) -> LineType {
        match kind {
            NumberKind::Mobile => LineType::Mobile,
            NumberKind::FixedLine => LineType::FixedLine,
            NumberKind::FixedLineOrMobile => LineType::FixedLineOrMobile,
            NumberKind::Voip => LineType::Voip,
            NumberKind::TollFree => LineType::TollFree,
            NumberKind::PremiumRate => LineType::PremiumRate,
            NumberKind::SharedCost => LineType::SharedCost,
            NumberKind::Personal => LineType::PersonalNumber,
            NumberKind::Pager => LineType::Pager,
            NumberKind::UniversalAccess => LineType::Uan,
            NumberKind::Voicemail => LineType::Voicemail,
            // NumberKind is non-exhaustive: a kind a later namba adds reads as Unknown until it is
            // mapped here (the comparison with Python would show it).
            _ => LineType::Unknown,
        }
    }

    /// libphonenumber names a carrier only for these types (`PhoneNumberToCarrierMapper`):
    /// the carrier files also cover other ranges sharing a prefix, where the name would be wrong.
    fn has_carrier(self) -> bool {
        matches!(
            self,
            LineType::Mobile | LineType::FixedLineOrMobile | LineType::Pager
        )
    }

    /// libphonenumber's `isNumberTypeGeographical`: fixed lines everywhere, mobiles only in the
    /// countries whose mobile numbers carry an area code.
    fn is_geographic(self, calling_code: u16) -> bool {
        // PhoneNumberUtil.GEO_MOBILE_COUNTRIES: Mexico, Argentina, Brazil, Indonesia, China.
        const GEO_MOBILE: [u16; 5] = [52, 54, 55, 62, 86];
        match self {
            LineType::FixedLine | LineType::FixedLineOrMobile => true,
            LineType::Mobile => GEO_MOBILE.contains(&calling_code),
            _ => false,
        }
    }
}

/// Everything the data says about one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbering {
    pub line_type: LineType,
    /// The carrier the number's range was allocated to, in English; since numbers are ported this
    /// is not necessarily the carrier serving it today. Only for mobile, fixed-line-or-mobile and
    /// pager numbers.
    pub carrier: Option<&'static str>,
    /// The range's place ("Mountain View, CA"), or the country's name where the data has no place
    /// or the number is not geographic (toll free, VoIP, most countries' mobiles); None for a
    /// number of no known type, or when its calling code's regions all accept it (+1 800...).
    pub location: Option<String>,
    /// IANA names, sorted; empty when the data has none (non-geographic calling codes such as
    /// +800, or a number of no known type).
    pub time_zones: Vec<&'static str>,
    pub calling_code: u16,
    /// ISO 3166-1 alpha-2 of the region whose ranges the number is in; None for non-geographic
    /// calling codes (+800, +882...) and numbers of no known type.
    pub region: Option<String>,
    /// The country's English name (see the module doc); None when several regions sharing the
    /// calling code accept the number, or the region has no name (AC, TA, XK).
    pub country_name: Option<String>,
    /// As dialled at home: "(415) 555-2671".
    pub national: String,
    /// "+1 415-555-2671".
    pub international: String,
}

/// What the data says about `e164`; None when it cannot be read as a number.
pub fn of(e164: &str) -> Option<Numbering> {
    let number = namba::parse(e164).ok()?;
    let assessment = number.assess();
    let line_type = LineType::of_kind(assessment.kind());
    let calling_code = number.calling_code().value();
    let country_name = country_name(&number, assessment.regions());
    let geographic = line_type.is_geographic(calling_code);
    // geocoder.description_for_number: nothing for a number of no known type, the country's name
    // for a non-geographic one, else the range's place falling back to the country's name.
    let location = match line_type {
        LineType::Unknown => None,
        _ if !geographic => country_name.map(str::to_owned),
        _ => place(&number).or_else(|| country_name.map(str::to_owned)),
    };
    // timezone.time_zones_for_number: a non-geographic number gets its calling code's zones.
    let time_zones = match line_type {
        LineType::Unknown => Vec::new(),
        _ if !geographic => country_time_zones(calling_code),
        _ => zones(TimeZones::for_number(&number)),
    };
    let (national, international) = formats(&number);
    Some(Numbering {
        line_type,
        carrier: carrier(&number, line_type),
        location,
        time_zones,
        calling_code,
        region: number.region().map(|region| region.as_str().to_owned()),
        country_name: country_name.map(str::to_owned),
        national,
        international,
    })
}

/// The time zones `timezone.time_zones_for_number` gives every number of a non-geographic type
/// under `calling_code`: the zones of its calling code as a whole. Empty for an unknown code and
/// for the non-geographic codes (+800...), which have none.
pub fn country_time_zones(calling_code: u16) -> Vec<&'static str> {
    // namba looks zones up by a whole number's longest prefix and cannot be asked for a calling
    // code alone, and no digits after the code miss every longer prefix in every country (+39 0,
    // +47 0, +44 9... have entries of their own). But the data's entry for a calling code is the
    // union of its ranges' zones, so the union over numbers starting with each digit after the
    // code is that entry (tests/it/numbering.rs checks every calling code against Python).
    static BY_CODE: LazyLock<RwLock<HashMap<u16, Vec<&'static str>>>> =
        LazyLock::new(Default::default);
    if !(1..=999).contains(&calling_code) {
        return Vec::new();
    }
    if let Some(zones) = BY_CODE
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&calling_code)
    {
        return zones.clone();
    }
    let mut union: Vec<&'static str> = (b'0'..=b'9')
        .filter_map(|digit| namba::parse(&format!("+{calling_code}{}1", char::from(digit))).ok())
        .filter(|probe| probe.calling_code().value() == calling_code)
        .flat_map(|probe| zones(TimeZones::for_number(&probe)))
        .collect();
    union.sort_unstable();
    union.dedup();
    BY_CODE
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(calling_code, union.clone());
    union
}

/// namba 0.1.0's carrier table lacks 84 of libphonenumber's 29,054 English prefixes: all those
/// of Argentina's mobiles (+54 9 11 3..., +54 9 22..., all "Personal"), which get None where
/// Python names the carrier.
fn carrier(number: &PhoneNumber, line_type: LineType) -> Option<&'static str> {
    if !line_type.has_carrier() {
        return None;
    }
    CarrierName::for_number(number).map(|name| intern(name.as_str()))
}

/// The place of the number's range. Argentina's mobiles carry a "9" before the area code
/// (libphonenumber's mobile token) which the geocoding data does not: it is dropped before the
/// lookup, as Python does. namba 0.1.0's table lacks 17,900 of the 287,289 English prefixes of
/// libphonenumber 9.0.36 (most of France's and Malaysia's, some of Latvia's and Estonia's):
/// numbers there are located in their country where Python names a town.
fn place(number: &PhoneNumber) -> Option<String> {
    const ARGENTINA: u16 = 54;
    let lookup = |number: &PhoneNumber| Location::for_number(number).map(|p| p.as_str().to_owned());
    if number.calling_code().value() == ARGENTINA
        && let Some(rest) = number.national_number().strip_prefix('9')
    {
        // As Python: the rest read as an Argentine number, or the number itself if it is not one.
        let region = Region::new("AR").ok()?;
        return match namba::parse_in(region, rest) {
            Ok(rest) => lookup(&rest),
            Err(_) => lookup(number),
        };
    }
    lookup(number)
}

/// National and international formats. namba formats a number with its own region's rules, and
/// leaves the digits bare when that region has none of its own: libphonenumber formats with the
/// calling code's main region, whose rules the regions sharing it borrow (Canada and the
/// Caribbean's +1, Kazakhstan's +7, Jersey's +44...). Those numbers take the `phonenumber`
/// crate's formats (the crate `domain::phone` validates with, 9.0.33 data), which follow
/// libphonenumber there, when it reads the same number. One namba defect stays: it puts the
/// national prefix before a format's `$1` only, so Argentina's mobiles (`$2 15-$3-$4`) lose
/// their "0" ("11 15-2345-6789" for libphonenumber's "011 15-2345-6789").
fn formats(number: &PhoneNumber) -> (String, String) {
    let national = number.format(Format::National).to_string();
    let international = number.format(Format::International).to_string();
    if national != number.national_number() {
        return (national, international);
    }
    let e164 = number.format(Format::E164).to_string();
    // phonenumber has panicked on odd input before (domain::phone guards its calls the same way).
    let borrowed = catch_unwind(AssertUnwindSafe(|| {
        let other = phonenumber::parse(None, &e164).ok()?;
        (other.format().mode(Mode::E164).to_string() == e164).then(|| {
            (
                other.format().mode(Mode::National).to_string(),
                other.format().mode(Mode::International).to_string(),
            )
        })
    }));
    borrowed.ok().flatten().unwrap_or((national, international))
}

fn zones(zones: Option<TimeZones>) -> Vec<&'static str> {
    let mut zones: Vec<&'static str> = zones
        .iter()
        .flat_map(|zones| zones.iter())
        .map(intern)
        .collect();
    zones.sort_unstable();
    zones
}

/// geocoder.country_name_for_number: the name of the calling code's only region, or of the one
/// region among several sharing it whose ranges accept the number; None when none or more than
/// one does.
fn country_name(number: &PhoneNumber, regions: &[Region]) -> Option<&'static str> {
    let region = match regions {
        [only] => *only,
        _ => {
            let mut valid = regions
                .iter()
                .filter(|region| number.is_valid_for(**region));
            let first = *valid.next()?;
            if valid.next().is_some() {
                return None;
            }
            first
        }
    };
    english_name(region.as_str())
}

/// The English name keshvar has for an ISO 3166-1 alpha-2 region.
fn english_name(alpha2: &str) -> Option<&'static str> {
    // keshvar builds a country's translations table each time it is asked for one: build one map
    // of the English names, once.
    static NAMES: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
        keshvar::CountryIterator::new()
            .filter_map(|country| {
                let name = *country.translations().get("en")?;
                Some((country.alpha2().to_string(), name))
            })
            .collect()
    });
    NAMES.get(alpha2).copied()
}

/// namba lends its table entries (carrier names, zone names) only for as long as the
/// value looked up, though they are static data. Each distinct entry is copied once and kept for
/// the life of the process; the texts all come from the bundled tables, never from a caller, so
/// the set is bounded by the data.
fn intern(text: &str) -> &'static str {
    static TEXTS: LazyLock<RwLock<HashSet<&'static str>>> = LazyLock::new(Default::default);
    if let Some(&kept) = TEXTS
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(text)
    {
        return kept;
    }
    let mut texts = TEXTS.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(&kept) = texts.get(text) {
        return kept;
    }
    let kept: &'static str = Box::leak(text.into());
    texts.insert(kept);
    kept
}

/// A valid number's original carrier, read once when its batch is stored: only for the
/// mobile-like types libphonenumber names carriers for, and without a parse at all in the
/// regions its data has no carrier for (the US and Canada, most numbers we see; namba's
/// parse is the costly part, ~18 µs).
pub fn carrier_of(e164: &str, region: &str, line_type: LineType) -> Option<&'static str> {
    if !line_type.has_carrier() || matches!(region, "US" | "CA") {
        return None;
    }
    carrier(&namba::parse(e164).ok()?, line_type)
}

impl LineType {
    /// The number stored for it: the proto's LineType value.
    pub fn code(self) -> i16 {
        LineType::ALL
            .iter()
            .position(|t| *t == self)
            .map_or(12, |i| i as i16 + 1)
    }

    /// A stored number back; Unknown for one this build does not know.
    pub fn from_code(code: i16) -> LineType {
        usize::try_from(code - 1)
            .ok()
            .and_then(|i| LineType::ALL.get(i).copied())
            .unwrap_or(LineType::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_and_carrier_of(e164: &str) -> (LineType, Option<&'static str>) {
        of(e164).map_or((LineType::Unknown, None), |n| (n.line_type, n.carrier))
    }

    #[test]
    fn a_us_number_is_fixed_line_or_mobile_in_california() {
        let n = of("+14155552671").unwrap();
        assert_eq!(n.line_type, LineType::FixedLineOrMobile);
        assert_eq!(n.carrier, None);
        assert!(n.time_zones.contains(&"America/Los_Angeles"), "{n:?}");
        assert_eq!(n.calling_code, 1);
        assert_eq!(n.region.as_deref(), Some("US"));
        assert_eq!(n.country_name.as_deref(), Some("United States"));
        assert_eq!(n.location.as_deref(), Some("San Francisco, CA"));
        assert_eq!(n.national, "(415) 555-2671");
        assert_eq!(n.international, "+1 415-555-2671");
        assert_eq!(
            line_and_carrier_of("+14155552671"),
            (LineType::FixedLineOrMobile, None)
        );
    }

    #[test]
    fn a_uk_mobile_has_its_original_carrier_and_the_country_level_answers() {
        let n = of("+447400123456").unwrap();
        assert_eq!(n.line_type, LineType::Mobile);
        assert!(n.carrier.is_some_and(|c| !c.is_empty()), "{n:?}");
        assert_eq!(
            line_and_carrier_of("+447400123456"),
            (n.line_type, n.carrier)
        );
        // A UK mobile is not geographic: the country, and all of +44's zones.
        assert_eq!(n.location.as_deref(), Some("United Kingdom"));
        assert_eq!(n.time_zones, country_time_zones(44));
        assert!(n.time_zones.contains(&"Europe/London"));
        assert_eq!(n.region.as_deref(), Some("GB"));
    }

    #[test]
    fn other_types_and_their_carriers() {
        let italy = of("+390212345678").unwrap();
        assert_eq!(italy.line_type, LineType::FixedLine);
        assert_eq!(italy.carrier, None);
        assert_eq!(italy.country_name.as_deref(), Some("Italy"));
        assert_eq!(
            line_and_carrier_of("+78001234567"),
            (LineType::TollFree, None)
        );
        let toll_free = of("+78001234567").unwrap();
        assert_eq!(toll_free.region.as_deref(), Some("RU"));
        assert_eq!(toll_free.time_zones, country_time_zones(7));
        // Non-geographic calling codes: no region, no country, no zones.
        let global = of("+80012345678").unwrap();
        assert_eq!(global.line_type, LineType::TollFree);
        assert_eq!(
            (global.region, global.country_name, global.location),
            (None, None, None)
        );
        assert!(global.time_zones.is_empty());
    }

    #[test]
    fn numbers_it_cannot_read_are_none_or_unknown() {
        for garbage in ["", "garbage", "+", "+0123", "+999999999999999999", "12345"] {
            assert_eq!(of(garbage), None, "{garbage:?}");
            assert_eq!(line_and_carrier_of(garbage), (LineType::Unknown, None));
        }
        // Read, but in no range of its country.
        let n = of("+14150000000").unwrap();
        assert_eq!(n.line_type, LineType::Unknown);
        assert_eq!((n.carrier, n.location), (None, None));
        assert!(n.time_zones.is_empty());
    }

    #[test]
    fn country_zones_come_from_the_calling_code_alone() {
        // Italy, Norway and Indonesia have zone prefixes right after the code starting with 0.
        assert_eq!(country_time_zones(39), ["Europe/Rome", "Europe/Vatican"]);
        assert_eq!(
            country_time_zones(47),
            ["Arctic/Longyearbyen", "Europe/Oslo"]
        );
        assert!(country_time_zones(800).is_empty());
        assert!(country_time_zones(999).is_empty());
    }

    #[test]
    fn names_and_words_are_distinct() {
        let names: HashSet<_> = LineType::ALL.iter().map(|t| t.name()).collect();
        let words: HashSet<_> = LineType::ALL.iter().map(|t| t.word()).collect();
        assert_eq!((names.len(), words.len()), (12, 12));
        assert_eq!(LineType::Voip.word(), "VoIP");
        assert_eq!(LineType::FixedLineOrMobile.name(), "FIXED_LINE_OR_MOBILE");
    }
}
