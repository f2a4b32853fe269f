//! Phone numbers as submitted: parsed with libphonenumber metadata, normalized
//! to E.164 and deduplicated in submission order.
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use phonenumber::{Mode, PhoneNumber, country, metadata::DATABASE};

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
}

/// One entry after parsing: a valid number or the reason it is not one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Valid { e164: String, region: String },
    Invalid { reason: String },
}

pub fn parse_number(text: &str, default_region: Option<Region>) -> Parsed {
    let invalid = |reason: &str| Parsed::Invalid {
        reason: reason.to_string(),
    };
    if text.trim().is_empty() {
        return invalid("empty entry");
    }
    // The phonenumber crate has panicked on odd input before; one entry must not take down a request.
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        phonenumber::parse(default_region.map(|r| r.0), text).map(|n| (n.is_valid(), n))
    }));
    match parsed {
        Err(_) => invalid("could not be parsed as a phone number"),
        Ok(Err(err)) => Parsed::Invalid {
            reason: parse_error_reason(text, default_region, &err),
        },
        Ok(Ok((false, _))) => invalid("not a valid number for its country (libphonenumber)"),
        Ok(Ok((true, number))) => Parsed::Valid {
            e164: number.format().mode(Mode::E164).to_string(),
            region: region_of(&number),
        },
    }
}

fn parse_error_reason(text: &str, region: Option<Region>, err: &phonenumber::ParseError) -> String {
    use phonenumber::ParseError as E;
    match err {
        E::InvalidCountryCode if region.is_none() && !text.trim_start().starts_with('+') => {
            "no country code: write the number with a leading + or set default_region".to_string()
        }
        E::InvalidCountryCode => "unknown country calling code".to_string(),
        E::NoNumber => "not a phone number".to_string(),
        E::TooShortNsn | E::TooShortAfterIdd => "too short to be a phone number".to_string(),
        E::TooLong => "too long to be a phone number".to_string(),
        other => format!("could not be parsed: {other}"),
    }
}

/// ISO 3166-1 alpha-2 region of a valid number; empty for non-geographic numbers (+800, +882...).
fn region_of(number: &PhoneNumber) -> String {
    number
        .metadata(&DATABASE)
        .map(|m| m.id())
        .filter(|id| id.len() == 2 && id.bytes().all(|b| b.is_ascii_uppercase()))
        .unwrap_or_default()
        .to_string()
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
            Parsed::Valid { e164, .. } => e164.clone(),
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

    fn valid(e164: &str, region: &str) -> Parsed {
        Parsed::Valid {
            e164: e164.into(),
            region: region.into(),
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
}
