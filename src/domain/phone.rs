//! Phone numbers as submitted: parsed with libphonenumber metadata, normalized
//! to E.164 and deduplicated in submission order.
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use phonenumber::{Metadata, Mode, PhoneNumber, Type, country, metadata::DATABASE};

use super::numbering::{self, LineType};

/// Longest entry we accept; anything longer is a client bug, not a phone number.
pub const MAX_ENTRY_CHARS: usize = 256;
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// A region known to libphonenumber, given as ISO 3166-1 alpha-2 in any case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region(country::Id);

impl Region {
    pub fn parse(text: &str) -> Option<Region> {
        let upper = text.trim().to_ascii_uppercase();
        if upper.len() != 2 || DATABASE.by_id(upper.as_str()).is_none() {
            return None;
        }
        upper.parse().ok().map(Region)
    }

    /// ISO 3166-1 alpha-2, upper case.
    pub fn code(&self) -> &str {
        self.0.as_ref()
    }

    /// A region given as ISO 3166-1 alpha-2 ("US") or as a country calling code ("1",
    /// "+44"), which stands for the main region of that code.
    pub fn from_hint(text: &str) -> Option<Region> {
        let text = text.trim();
        let digits = text.strip_prefix('+').unwrap_or(text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Region::parse(text);
        }
        // No calling code starts with 0 ("001" is a dialling prefix, not a code).
        if digits.starts_with('0') {
            return None;
        }
        let code: u16 = digits.parse().ok()?;
        let regions = DATABASE.by_code(&code)?;
        let main = regions
            .iter()
            .find(|m| m.is_main_country_for_code())
            .or(regions.first())?;
        Region::parse(main.id())
    }
}

/// A number libphonenumber accepts, in E.164.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidNumber {
    pub e164: String,
    /// ISO 3166-1 alpha-2; empty for non-geographic numbers.
    pub region: String,
    /// Set when a legacy form was repaired before validation.
    pub note: Option<String>,
    pub line_type: LineType,
    /// The original carrier of the number's range, where libphonenumber's data has one.
    pub carrier: Option<&'static str>,
}

/// One entry after parsing: a valid number or the reason it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Valid(ValidNumber),
    Invalid { reason: String },
}

pub const NOTE_MEXICO_1: &str = "repaired: removed the legacy mobile prefix 1 after +52 (Mexico)";
pub const NOTE_BRAZIL_9: &str =
    "repaired: added the ninth digit to a Brazilian mobile written with 8 digits";

/// How many metadata regexes phonenumber keeps compiled, twice over at most
/// (vendor/regex-cache/PATCH.md): 1,000 holds every region's patterns at once in ~40 MB,
/// where upstream's 100 recompiled patterns for any list spanning more than a few countries.
const PATTERN_CACHE: usize = 1000;

fn size_pattern_cache() {
    static SIZED: Once = Once::new();
    SIZED.call_once(|| {
        let cache = DATABASE.cache();
        let mut cache = cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        cache.set_capacity(PATTERN_CACHE);
    });
}

pub fn parse_number(text: &str, default_region: Option<Region>) -> Parsed {
    size_pattern_cache();
    let invalid = |reason: &str| Parsed::Invalid {
        reason: reason.to_string(),
    };
    if text.trim().is_empty() {
        return invalid("empty entry");
    }
    let folded = fold_digits(text);
    // The phonenumber crate has panicked on odd input before; one entry must not take down a request.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        let number = phonenumber::parse(default_region.map(|r| r.0), &folded)?;
        if number.is_valid() {
            return Ok(Some((number, None)));
        }
        Ok(repair_legacy(&number))
    }));
    match parsed {
        Err(_) => invalid("could not be parsed as a phone number"),
        Ok(Err(err)) => Parsed::Invalid {
            reason: parse_error_reason(text, default_region, &err),
        },
        Ok(Ok(None)) => invalid("not a valid number for its country (libphonenumber)"),
        Ok(Ok(Some((number, note)))) => {
            let e164 = number.format().mode(Mode::E164).to_string();
            let (plan, line_type) = classify(&number);
            let region = plan
                .map(|m| m.id())
                .filter(|id| id.len() == 2 && id.bytes().all(|b| b.is_ascii_uppercase()))
                .unwrap_or_default()
                .to_string();
            let carrier = numbering::carrier_of(&e164, &region, line_type);
            Parsed::Valid(ValidNumber {
                e164,
                region,
                note: note.map(str::to_string),
                line_type,
                carrier,
            })
        }
    }
}

/// Digits from other scripts (full-width, Arabic-Indic, Devanagari...) and
/// full-width punctuation become ASCII, as libphonenumber's own normalization does.
fn fold_digits(text: &str) -> String {
    // First code point (the zero) of each Unicode decimal digit run we accept.
    const ZEROS: [u32; 17] = [
        0x0660, 0x06F0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66,
        0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x17E0, 0x1810,
    ];
    text.chars()
        .map(|c| {
            let cp = c as u32;
            if (0xFF01..=0xFF5E).contains(&cp) {
                // Full-width ASCII block: digits, '+', parentheses, letters.
                return char::from_u32(cp - 0xFEE0).unwrap_or(c);
            }
            if cp == 0x3000 {
                return ' ';
            }
            ZEROS
                .iter()
                .find(|&&zero| (zero..zero + 10).contains(&cp))
                .and_then(|zero| char::from_digit(cp - zero, 10))
                .unwrap_or(c)
        })
        .collect()
}

/// Legacy forms that libphonenumber now rejects but real contact lists are full of.
fn repair_legacy(number: &PhoneNumber) -> Option<(PhoneNumber, Option<&'static str>)> {
    let national = number.national().value().to_string();
    let (candidate, note) = match number.code().value() {
        // Mexico dropped the "1" after +52 for mobiles in 2019.
        52 if national.len() == 11 && national.starts_with('1') => {
            (format!("+52{}", &national[1..]), NOTE_MEXICO_1)
        }
        // Brazil: area code + 8-digit mobile (starting 6-9) without the ninth digit.
        55 if national.len() == 10 && matches!(national.as_bytes()[2], b'6'..=b'9') => (
            format!("+55{}9{}", &national[..2], &national[2..]),
            NOTE_BRAZIL_9,
        ),
        _ => return None,
    };
    let repaired = phonenumber::parse(None, &candidate).ok()?;
    let is_mobile = matches!(
        repaired.number_type(&DATABASE),
        Type::Mobile | Type::FixedLineOrMobile
    );
    (repaired.is_valid() && is_mobile).then_some((repaired, Some(note)))
}

/// The other forms WhatsApp may have registered for a number: Brazil's mobiles
/// without the ninth digit, Mexico's with the old "1", Argentina's mobiles without the "9".
pub fn whatsapp_variants(e164: &str) -> Vec<String> {
    let digits = e164.trim_start_matches('+');
    let all_digits = digits.bytes().all(|b| b.is_ascii_digit());
    if !all_digits {
        return Vec::new();
    }
    match digits.len() {
        13 if digits.starts_with("55") && digits.as_bytes()[4] == b'9' => {
            vec![format!("+{}{}", &digits[..4], &digits[5..])]
        }
        12 if digits.starts_with("52") => vec![format!("+521{}", &digits[2..])],
        13 if digits.starts_with("549") => vec![format!("+54{}", &digits[3..])],
        _ => Vec::new(),
    }
}

fn parse_error_reason(text: &str, region: Option<Region>, err: &phonenumber::ParseError) -> String {
    use phonenumber::ParseError as E;
    match err {
        E::InvalidCountryCode if region.is_none() && !text.trim_start().starts_with('+') => {
            "no country code: write the number with a leading + or give its region (default_region; country_code for a single check)".to_string()
        }
        E::InvalidCountryCode => "unknown country calling code".to_string(),
        E::NoNumber => "not a phone number".to_string(),
        E::TooShortNsn | E::TooShortAfterIdd => "too short to be a phone number".to_string(),
        E::TooLong => "too long to be a phone number".to_string(),
        other => format!("could not be parsed: {other}"),
    }
}

/// The region whose plan a valid number is in (None for non-geographic calling codes'
/// plans too are returned; their ids are "001") and its line type, as libphonenumber's
/// `getNumberType` decides them. The crate's own lookups read the national number without
/// its leading zeros, which left Italy's, the Vatican's and a dozen other countries'
/// zero-led numbers unclassified (tests/it/numbering.rs compares every region's examples
/// with Python's phonenumbers).
fn classify(number: &PhoneNumber) -> (Option<&'static Metadata>, LineType) {
    let nsn = number.national().to_string();
    let Some(plans) = DATABASE.by_code(&number.code().value()) else {
        return (None, LineType::Unknown);
    };
    if let [plan] = plans[..] {
        return (Some(plan), kind_in(plan, &nsn));
    }
    for plan in plans {
        match plan.leading_digits() {
            Some(leading) if leading.find(&nsn).is_some_and(|m| m.start() == 0) => {
                return (Some(plan), kind_in(plan, &nsn));
            }
            Some(_) => {}
            None => match kind_in(plan, &nsn) {
                LineType::Unknown => {}
                kind => return (Some(plan), kind),
            },
        }
    }
    (None, LineType::Unknown)
}

/// libphonenumber's order: the special services first, then fixed line and mobile (a
/// plan whose two patterns are the same cannot tell them apart).
fn kind_in(plan: &Metadata, nsn: &str) -> LineType {
    let d = plan.descriptors();
    if !d.general().is_match(nsn) {
        return LineType::Unknown;
    }
    let matches = |kind: Type| d.get(kind).is_some_and(|desc| desc.is_match(nsn));
    const SERVICES: [(Type, LineType); 8] = [
        (Type::PremiumRate, LineType::PremiumRate),
        (Type::TollFree, LineType::TollFree),
        (Type::SharedCost, LineType::SharedCost),
        (Type::Voip, LineType::Voip),
        (Type::PersonalNumber, LineType::PersonalNumber),
        (Type::Pager, LineType::Pager),
        (Type::Uan, LineType::Uan),
        (Type::Voicemail, LineType::Voicemail),
    ];
    if let Some((_, line)) = SERVICES.iter().find(|(kind, _)| matches(*kind)) {
        return *line;
    }
    let same = d.fixed_line().map(|f| f.national_number().as_str())
        == d.mobile().map(|m| m.national_number().as_str());
    if matches(Type::FixedLine) {
        if same || matches(Type::Mobile) {
            return LineType::FixedLineOrMobile;
        }
        return LineType::FixedLine;
    }
    if !same && matches(Type::Mobile) {
        return LineType::Mobile;
    }
    LineType::Unknown
}

/// A unique entry of a batch, at its position among the unique entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub index: i32,
    pub input: String,
    pub parsed: Parsed,
}

/// Parses every entry and keeps the first occurrence of each number: valid
/// numbers are the same when their E.164 forms are, invalid ones when their texts are.
pub fn dedup_entries(numbers: &[String], region: Option<Region>) -> Vec<Entry> {
    let mut seen: HashMap<String, ()> = HashMap::with_capacity(numbers.len());
    let mut entries = Vec::with_capacity(numbers.len());
    for text in numbers {
        let parsed = parse_number(text, region);
        let key = match &parsed {
            Parsed::Valid(v) => v.e164.clone(),
            // Cannot collide with an E.164 key, which always starts with '+'.
            Parsed::Invalid { .. } => format!("\0{text}"),
        };
        if seen.insert(key, ()).is_none() {
            entries.push(Entry {
                index: entries.len() as i32,
                input: text.clone(),
                parsed,
            });
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the data says of the canonical form, which these tests do not check.
    fn facts(e164: &str) -> (LineType, Option<&'static str>) {
        match parse_number(e164, None) {
            Parsed::Valid(v) => (v.line_type, v.carrier),
            Parsed::Invalid { reason } => panic!("{e164}: {reason}"),
        }
    }

    fn valid(e164: &str, region: &str) -> Parsed {
        let (line_type, carrier) = facts(e164);
        Parsed::Valid(ValidNumber {
            e164: e164.into(),
            region: region.into(),
            note: None,
            line_type,
            carrier,
        })
    }

    fn repaired(e164: &str, region: &str, note: &str) -> Parsed {
        let (line_type, carrier) = facts(e164);
        Parsed::Valid(ValidNumber {
            e164: e164.into(),
            region: region.into(),
            note: Some(note.into()),
            line_type,
            carrier,
        })
    }

    #[test]
    fn classifies_numbers_whose_national_number_starts_with_zero() {
        // The crate's own lookups dropped the leading zero: Italian fixed lines were unclassified,
        // and the Vatican's numbers read as Italy's.
        assert_eq!(
            parse_number("+39 02 1234 5678", None),
            Parsed::Valid(ValidNumber {
                e164: "+390212345678".into(),
                region: "IT".into(),
                note: None,
                line_type: LineType::FixedLine,
                carrier: None,
            })
        );
        assert_eq!(facts("+390669812345").0, LineType::FixedLine);
        assert_eq!(
            valid("+390669812345", "VA"),
            parse_number("+390669812345", None)
        );
        assert_eq!(facts("+14155552671").0, LineType::FixedLineOrMobile);
        assert_eq!(facts("+447400123456").0, LineType::Mobile);
        assert!(
            facts("+447400123456").1.is_some(),
            "a UK mobile range has its carrier"
        );
    }

    /// Numbers the crate's parser refused until vendor/phonenumber/PATCH.md: a national prefix
    /// stripped twice (or after the calling code), and a calling code taken off national numbers
    /// that merely start with it.
    #[test]
    fn parses_what_libphonenumber_parses() {
        let us = |text: &str, region: &str| match parse_number(text, Region::parse(region)) {
            Parsed::Valid(v) => (v.e164, v.line_type),
            Parsed::Invalid { reason } => panic!("{text} ({region}): {reason}"),
        };
        for (text, region, e164, line_type) in [
            ("+7 800 123-45-67", "", "+78001234567", LineType::TollFree),
            ("+7 812 345-67-89", "", "+78123456789", LineType::FixedLine),
            (
                "8 (812) 345-67-89",
                "RU",
                "+78123456789",
                LineType::FixedLine,
            ),
            ("8 800 123-45-67", "RU", "+78001234567", LineType::TollFree),
            (
                "+375 801 123 4567",
                "",
                "+3758011234567",
                LineType::TollFree,
            ),
            ("+370 800 12345", "", "+37080012345", LineType::TollFree),
            ("8 800 12345", "LT", "+37080012345", LineType::TollFree),
            ("91987 65432", "IN", "+919198765432", LineType::Mobile),
            ("701 234 5678", "KZ", "+77012345678", LineType::Mobile),
            ("(55) 99123-4567", "BR", "+5555991234567", LineType::Mobile),
            ("+44 20 7946 0958", "", "+442079460958", LineType::FixedLine),
            ("020 7946 0958", "GB", "+442079460958", LineType::FixedLine),
        ] {
            assert_eq!(
                us(text, region),
                (e164.to_string(), line_type),
                "{text} ({region})"
            );
        }
    }

    #[test]
    fn normalizes_common_written_forms() {
        let us = Region::parse("us");
        let cases = [
            ("+14155552671", None, valid("+14155552671", "US")),
            ("+1 415-555-2671", None, valid("+14155552671", "US")),
            ("(415) 555-2671", us, valid("+14155552671", "US")),
            ("+44 20 7946 0958", None, valid("+442079460958", "GB")),
            ("+91 98765 43210", None, valid("+919876543210", "IN")),
            ("+55 11 91234-5678", None, valid("+5511912345678", "BR")),
            (
                "030 123456",
                Region::parse("DE"),
                valid("+4930123456", "DE"),
            ),
        ];
        for (text, region, want) in cases {
            assert_eq!(parse_number(text, region), want, "{text}");
        }
    }

    #[test]
    fn parses_numbers_as_people_paste_them() {
        let us = Region::parse("US");
        let cases = [
            (
                "＋１ ４１５ ５５５ ２６７１",
                None,
                valid("+14155552671", "US"),
            ),
            ("+١٤١٥٥٥٥٢٦٧١", None, valid("+14155552671", "US")),
            ("+۱۴۱۵۵۵۵۲۶۷۱", None, valid("+14155552671", "US")),
            ("+९१ ९८७६५ ४३२१०", None, valid("+919876543210", "IN")),
            ("tel:+1-415-555-2671", None, valid("+14155552671", "US")),
            (
                "tel:+1-415-555-2671;ext=123",
                None,
                valid("+14155552671", "US"),
            ),
            (
                "+1 415 555 2671 ext. 123",
                None,
                valid("+14155552671", "US"),
            ),
            ("+1 415 555 2671 x123", None, valid("+14155552671", "US")),
            ("+44 (0)20 7946 0958", None, valid("+442079460958", "GB")),
            ("+44 (0) 7400 123456", None, valid("+447400123456", "GB")),
            ("415.555.2671", us, valid("+14155552671", "US")),
            ("415/555/2671", us, valid("+14155552671", "US")),
            ("1-800-FLOWERS", us, valid("+18003569377", "US")),
            (
                "00 44 20 7946 0958",
                Region::parse("DE"),
                valid("+442079460958", "GB"),
            ),
            ("011 44 20 7946 0958", us, valid("+442079460958", "GB")),
            (
                "0351 15 612-3456",
                Region::parse("AR"),
                valid("+5493516123456", "AR"),
            ),
            (
                "011 15 5555-1234",
                Region::parse("AR"),
                valid("+5491155551234", "AR"),
            ),
        ];
        for (text, region, want) in cases {
            assert_eq!(parse_number(text, region), want, "{text}");
        }
    }

    #[test]
    fn repairs_legacy_mexican_and_brazilian_mobiles() {
        let cases = [
            (
                "+52 1 55 1234 5678",
                None,
                repaired("+525512345678", "MX", NOTE_MEXICO_1),
            ),
            (
                "+52 1 33 1234 5678",
                None,
                repaired("+523312345678", "MX", NOTE_MEXICO_1),
            ),
            ("+52 55 1234 5678", None, valid("+525512345678", "MX")),
            (
                "+55 11 8123-4567",
                None,
                repaired("+5511981234567", "BR", NOTE_BRAZIL_9),
            ),
            (
                "+55 21 9876-5432",
                None,
                repaired("+5521998765432", "BR", NOTE_BRAZIL_9),
            ),
            (
                "(31) 8765-4321",
                Region::parse("BR"),
                repaired("+5531987654321", "BR", NOTE_BRAZIL_9),
            ),
            ("+55 11 98123-4567", None, valid("+5511981234567", "BR")),
            // A Brazilian landline (starts 2-5) is valid as it is and never gains a 9.
            ("+55 11 3123-4567", None, valid("+551131234567", "BR")),
        ];
        for (text, region, want) in cases {
            assert_eq!(parse_number(text, region), want, "{text}");
        }
    }

    #[test]
    fn lists_the_forms_whatsapp_may_have_registered() {
        assert_eq!(whatsapp_variants("+5511981234567"), ["+551181234567"]);
        assert_eq!(whatsapp_variants("+525512345678"), ["+5215512345678"]);
        assert_eq!(whatsapp_variants("+5493516123456"), ["+543516123456"]);
        assert!(whatsapp_variants("+551131234567").is_empty(), "landline");
        assert!(whatsapp_variants("+543516123456").is_empty(), "AR landline");
        assert!(whatsapp_variants("+14155552671").is_empty());
    }

    #[test]
    fn rejects_what_is_not_a_valid_number() {
        for text in [
            "",
            "   ",
            "hello",
            "+1 555",
            "+999 123456789",
            "+1 415 555 26710000",
        ] {
            assert!(
                matches!(parse_number(text, None), Parsed::Invalid { .. }),
                "{text:?} should be invalid"
            );
        }
        match parse_number("4155552671", None) {
            Parsed::Invalid { reason } => assert!(reason.contains("default_region"), "{reason}"),
            other => panic!("national number without region parsed: {other:?}"),
        }
    }

    #[test]
    fn a_region_hint_may_be_a_calling_code() {
        assert_eq!(Region::from_hint("1"), Region::parse("US"));
        assert_eq!(Region::from_hint("+44"), Region::parse("GB"));
        assert_eq!(Region::from_hint(" br "), Region::parse("BR"));
        assert_eq!(Region::from_hint("7"), Region::parse("RU"));
        assert_eq!(Region::from_hint("999"), None);
        assert_eq!(Region::from_hint("+"), None);
        assert_eq!(Region::from_hint("001"), None);
        assert_eq!(Region::from_hint("99999999999999999999"), None);
    }

    #[test]
    fn region_must_be_known_to_libphonenumber() {
        assert!(Region::parse("us").is_some());
        assert!(Region::parse("Gb").is_some());
        assert!(Region::parse("ZZ").is_none());
        assert!(Region::parse("USA").is_none());
        assert!(Region::parse("").is_none());
    }

    #[test]
    fn dedups_after_normalization_keeping_first_text() {
        let input: Vec<String> = [
            "+1 415-555-2671",
            "+14155552671",
            "junk",
            "+44 20 7946 0958",
            "junk",
            "junk ",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let entries = dedup_entries(&input, None);
        let texts: Vec<&str> = entries.iter().map(|e| e.input.as_str()).collect();
        assert_eq!(
            texts,
            ["+1 415-555-2671", "junk", "+44 20 7946 0958", "junk "]
        );
        let indexes: Vec<i32> = entries.iter().map(|e| e.index).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever people paste, parsing answers and never panics.
        #[test]
        fn parsing_never_panics(text in "\\PC{0,64}", region in proptest::option::of("[A-Za-z]{2}")) {
            let region = region.as_deref().and_then(Region::parse);
            let _ = parse_number(&text, region);
        }

        /// Phone-shaped input (digits, separators, letters, other scripts' digits) never panics either,
        /// and a valid answer is always E.164.
        #[test]
        fn phone_shaped_input_never_panics(text in "[+]?[0-9０-９٠-٩ ()./x-]{0,40}[A-Za-z]{0,4}") {
            if let Parsed::Valid(v) = parse_number(&text, Region::parse("US")) {
                proptest::prop_assert!(v.e164.starts_with('+'));
                proptest::prop_assert!(v.e164[1..].bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
