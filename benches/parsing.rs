//! Cost of parsing, validating and deduplicating a 1,000-number batch (the CPU work of a
//! submit before it reaches the database), one thread. Run: `cargo bench --bench parsing`.
//! Prints one JSON line: milliseconds per 1,000 numbers for US numbers (every +1 number is
//! matched against the NANP regions' patterns), for a list mixing ten countries' usual forms
//! and for every region's example number in turn (every region's patterns in use); peak RSS.
use std::time::Instant;

use wavalidate::domain::phone::dedup_entries;

const ROUNDS: usize = 20;

fn us_batch(b: usize) -> Vec<String> {
    (0..1000)
        .map(|i| format!("+1201{:03}{i:04}", 200 + b))
        .collect()
}

/// Numbers of many countries in the forms people write them, some invalid.
fn mixed_batch(b: usize) -> Vec<String> {
    // A prefix as people write it, then that many digits from the entry's number.
    const FORMS: [(&str, u32); 10] = [
        ("+44 7700 9", 5),
        ("+49 151 2", 7),
        ("+33 6 12 ", 6),
        ("+55 11 9", 8),
        ("+52 1 55 ", 8),
        ("+91 98", 8),
        ("+234 803 ", 7),
        ("+62 812", 7),
        ("(415) 555-", 4),
        ("+7 912 ", 7),
    ];
    (0..1000)
        .map(|i| {
            let (prefix, digits) = FORMS[i % FORMS.len()];
            let n = (b * 1000 + i) % 10usize.pow(digits);
            format!("{prefix}{n:0width$}", width = digits as usize)
        })
        .collect()
}

/// Every region's example mobile number (fixed line where it has none), round robin:
/// the worst case for the pattern cache, since every region's patterns are in use.
fn world_batch(b: usize) -> Vec<String> {
    use phonenumber::metadata::DATABASE;
    let examples: Vec<String> = (1u16..1000)
        .filter_map(|code| DATABASE.by_code(&code))
        .flatten()
        .filter_map(|meta| {
            let d = meta.descriptors();
            let example = d.mobile().or(d.fixed_line())?.example()?;
            Some(format!("+{} {example}", meta.country_code()))
        })
        .collect();
    (0..1000)
        .map(|i| examples[(b * 1000 + i) % examples.len()].clone())
        .collect()
}

fn ms_per_batch(batch: fn(usize) -> Vec<String>) -> f64 {
    let region = wavalidate::domain::phone::Region::parse("US");
    let batches: Vec<Vec<String>> = (0..=ROUNDS).map(batch).collect();
    // The first batch compiles the patterns it needs; time the rest.
    dedup_entries(&batches[0], region);
    let start = Instant::now();
    let kept: usize = batches[1..]
        .iter()
        .map(|numbers| dedup_entries(numbers, region).len())
        .sum();
    assert!(kept > 0);
    (start.elapsed().as_secs_f64() * 1000.0 / ROUNDS as f64 * 100.0).round() / 100.0
}

fn main() {
    let us = ms_per_batch(us_batch);
    let mixed = ms_per_batch(mixed_batch);
    let world = ms_per_batch(world_batch);
    let peak_rss_mb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map(|kb| (kb / 1024.0).round());
    println!(
        "{}",
        serde_json::json!({"us_ms_per_1000": us, "mixed_ms_per_1000": mixed,
            "world_ms_per_1000": world, "peak_rss_mb": peak_rss_mb, "rounds": ROUNDS})
    );
}
