//! `domain::numbering` against Python phonenumbers on every example number of libphonenumber's
//! metadata (tests/python/example_numbers.py): every region's example of every type and the
//! non-geographic calling codes' examples. Python must have the data namba bundles (9.0.36;
//! scripts/lib.sh installs it). Line type and carrier must agree exactly, as must time zones,
//! regions and formats; location and country name agree exactly up to the country names'
//! spelling (keshvar's English names against Python's own table), whose agreement is printed.
use std::collections::BTreeMap;
use std::process::Command;

use serde::Deserialize;
use wavalidate::domain::numbering::{self, LineType, Numbering};
use wavalidate::domain::phone::{Parsed, Region, parse_number};

/// Calling codes whose places namba 0.1.0's geocoding table lacks in part: of the 287,289
/// English prefixes Python has, it misses 17,900, all under France (+33), Malaysia (+60), Latvia
/// (+371) and Estonia (+372). There a number of a missing prefix is located in its country.
const PLACES_MISSING: [u16; 4] = [33, 60, 371, 372];

/// namba 0.1.0 puts the national prefix before a format's `$1` only, so Argentina's mobiles
/// (`$2 15-$3-$4`) lose their "0": "11 15-2345-6789" where libphonenumber writes "011 15-...".
const NATIONAL_FORMAT_DEFECTS: [&str; 1] = ["+5491123456789"];

#[derive(Deserialize)]
struct Examples {
    version: String,
    numbers: Vec<Example>,
    country_zones: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
struct Example {
    example_of: String,
    asked_type: String,
    e164: String,
    number_type: String,
    carrier: Option<String>,
    time_zones: Vec<String>,
    location: Option<String>,
    country_name: Option<String>,
    region: Option<String>,
    national: String,
    international: String,
}

/// Python's "no zone" answer is the one zone `Etc/Unknown`; ours is no zones.
fn zones(python: &[String]) -> Vec<&str> {
    let mut zones: Vec<&str> = python
        .iter()
        .map(String::as_str)
        .filter(|zone| *zone != "Etc/Unknown")
        .collect();
    zones.sort_unstable();
    zones
}

fn python_examples() -> Examples {
    let python = std::env::var("WAV_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/example_numbers.py"
    );
    let out = Command::new(&python)
        .arg(script)
        .output()
        .expect("python (scripts/test provides one with phonenumbers)");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let examples: Examples = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(
        format!("libphonenumber-{}", examples.version),
        numbering::DATA_VERSION,
        "{python} has phonenumbers {}: the comparison needs the release whose data namba bundles",
        examples.version
    );
    assert!(examples.numbers.len() > 1300, "too few example numbers");
    examples
}

/// Counts agreements of one field and keeps the disagreements to print.
#[derive(Default)]
struct Tally {
    agree: usize,
    disagree: Vec<String>,
}

impl Tally {
    fn check(&mut self, same: bool, what: impl FnOnce() -> String) {
        if same {
            self.agree += 1;
        } else {
            self.disagree.push(what());
        }
    }

    fn total(&self) -> usize {
        self.agree + self.disagree.len()
    }

    fn report(&self, field: &str) {
        eprintln!(
            "{field}: {}/{} agree with Python ({:.1}%)",
            self.agree,
            self.total(),
            100.0 * self.agree as f64 / self.total().max(1) as f64
        );
    }
}

#[test]
fn numbering_agrees_with_python_phonenumbers_on_every_example_number() {
    let examples = python_examples();
    let mut fields: BTreeMap<&str, Tally> = BTreeMap::new();
    // Country names as spelled: region -> (ours, Python's).
    let mut spellings: BTreeMap<String, (Option<String>, String)> = BTreeMap::new();
    for py in &examples.numbers {
        let at = format!(
            "{} (example of {} {})",
            py.e164, py.example_of, py.asked_type
        );
        let Some(ours) = numbering::of(&py.e164) else {
            fields
                .entry("parse")
                .or_default()
                .check(false, || format!("{at}: namba cannot read it"));
            continue;
        };
        let Numbering {
            line_type,
            carrier,
            location,
            time_zones,
            calling_code,
            region,
            country_name,
            national,
            international,
        } = &ours;
        let py_region = py.region.as_deref().filter(|r| *r != "001");
        let mut check = |field, same, what: &dyn Fn() -> String| {
            fields
                .entry(field)
                .or_default()
                .check(same, || format!("{at}: {}", what()));
        };
        check("line type", line_type.name() == py.number_type, &|| {
            format!("ours {}, Python {}", line_type.name(), py.number_type)
        });
        check("carrier", carrier.map(str::to_owned) == py.carrier, &|| {
            format!("ours {carrier:?}, Python {:?}", py.carrier)
        });
        // What a batch stores: the validator's own line type (the `phonenumber` crate's
        // 9.0.33 data) and carrier, and its region.
        match parse_number(&py.e164, None) {
            Parsed::Valid(v) => {
                check(
                    "stored line type",
                    v.line_type.name() == py.number_type,
                    &|| format!("stored {}, Python {}", v.line_type.name(), py.number_type),
                );
                check(
                    "stored carrier",
                    v.carrier.map(str::to_owned) == py.carrier,
                    &|| format!("stored {:?}, Python {:?}", v.carrier, py.carrier),
                );
                let stored_region = (!v.region.is_empty()).then_some(v.region.as_str());
                check("stored region", stored_region == py_region, &|| {
                    format!("stored {stored_region:?}, Python {py_region:?}")
                });
            }
            Parsed::Invalid { reason } => check("valid for the validator", false, &|| {
                format!("refused: {reason}")
            }),
        }
        // Written as people at home write it (Python's national format), with its region.
        if let Some(home) = py_region.and_then(Region::parse) {
            let parsed = parse_number(&py.national, Some(home));
            let same = matches!(&parsed, Parsed::Valid(v) if v.e164 == py.e164);
            check("national form parses to the number", same, &|| {
                format!("{:?} in {:?}: {parsed:?}", py.national, py_region)
            });
        }
        check("time zones", *time_zones == zones(&py.time_zones), &|| {
            format!("ours {time_zones:?}, Python {:?}", py.time_zones)
        });
        check("region", region.as_deref() == py_region, &|| {
            format!("ours {region:?}, Python {:?}", py.region)
        });
        check(
            "calling code",
            py.e164.starts_with(&format!("+{calling_code}")),
            &|| format!("ours {calling_code}"),
        );
        check(
            "national format",
            *national == py.national || NATIONAL_FORMAT_DEFECTS.contains(&py.e164.as_str()),
            &|| format!("ours {national:?}, Python {:?}", py.national),
        );
        check("national format exactly", *national == py.national, &|| {
            format!("ours {national:?}, Python {:?}", py.national)
        });
        check(
            "international format",
            *international == py.international,
            &|| format!("ours {international:?}, Python {:?}", py.international),
        );
        // Where Python has a country name we have one, and the reverse; the spelling is counted
        // apart (per region, below).
        check(
            "country name given",
            country_name.is_some() == py.country_name.is_some(),
            &|| format!("ours {country_name:?}, Python {:?}", py.country_name),
        );
        check("country name", *country_name == py.country_name, &|| {
            format!("ours {country_name:?}, Python {:?}", py.country_name)
        });
        if let (Some(r), Some(name)) = (py_region, &py.country_name) {
            spellings.insert(r.to_owned(), (country_name.clone(), name.clone()));
        }
        // The location is Python's, or the country where Python's is the country too (only the
        // spelling may differ), or the country where namba's data lacks Python's place.
        let ours_is_country = location.is_some() && location == country_name;
        let py_is_country = py.location.is_some() && py.location == py.country_name;
        let place_missing =
            ours_is_country && !py_is_country && PLACES_MISSING.contains(calling_code);
        check(
            "location, up to country names and namba's missing places",
            *location == py.location || (ours_is_country && py_is_country) || place_missing,
            &|| format!("ours {location:?}, Python {:?}", py.location),
        );
        check("location has namba's place", !place_missing, &|| {
            format!("ours {location:?}, Python {:?}", py.location)
        });
        check("location", *location == py.location, &|| {
            format!("ours {location:?}, Python {:?}", py.location)
        });
    }
    for (code, py_zones) in &examples.country_zones {
        let code: u16 = code.parse().unwrap();
        let ours = numbering::country_time_zones(code);
        fields
            .entry("calling code's zones")
            .or_default()
            .check(ours == zones(py_zones), || {
                format!("+{code}: ours {ours:?}, Python {py_zones:?}")
            });
    }

    eprintln!(
        "{} example numbers ({} distinct), {} calling codes, phonenumbers {}",
        examples.numbers.len(),
        examples
            .numbers
            .iter()
            .map(|n| &n.e164)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        examples.country_zones.len(),
        examples.version
    );
    for (field, tally) in &fields {
        tally.report(field);
    }
    let spelled_alike = spellings
        .values()
        .filter(|(ours, theirs)| ours.as_deref() == Some(theirs))
        .count();
    eprintln!(
        "country names of the examples' regions: {spelled_alike}/{} spelled as Python spells them",
        spellings.len()
    );
    for (region, (ours, theirs)) in &spellings {
        if ours.as_deref() != Some(theirs) {
            eprintln!("  {region}: ours {ours:?}, Python {theirs:?}");
        }
    }
    // Only these are allowed to differ, for the reasons above; everything else must be Python's.
    let loose = [
        "country name",
        "location",
        "location has namba's place",
        "national format exactly",
    ];
    let mut failed = false;
    for (field, tally) in &fields {
        if loose.contains(field) || tally.disagree.is_empty() {
            continue;
        }
        failed = true;
        eprintln!("{field}: {} disagreements", tally.disagree.len());
        for line in &tally.disagree {
            eprintln!("  {line}");
        }
    }
    assert!(!failed, "numbering disagrees with Python (above)");
    // Every type but UNKNOWN has examples, so a mapping mixing two types up cannot pass.
    let seen: std::collections::HashSet<&str> = examples
        .numbers
        .iter()
        .map(|n| n.number_type.as_str())
        .collect();
    for line_type in LineType::ALL {
        assert_eq!(
            seen.contains(line_type.name()),
            line_type != LineType::Unknown,
            "{line_type:?} among the examples' types"
        );
    }
}
