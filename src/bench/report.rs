//! The bench's one JSON line: every figure, beside the floor and the settings it ran with.
use serde::Serialize;
use serde_json::Value;

use super::streams::Phase;

/// The `p` quantile (0..1) of sorted values, to a tenth.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let v = sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (v * 10.0).round() / 10.0
}

/// Ours over the floor's, to a hundredth.
pub fn ratio(ours: f64, floor: f64) -> f64 {
    (ours / floor * 100.0).round() / 100.0
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// One 1,000-number submit at a time.
    pub submit_p50_ms: f64,
    pub submit_p99_ms: f64,
    /// Concurrent submitters, API-only server.
    pub ingest_numbers_per_s: f64,
    /// From the first submit to the last completed event, every batch watched.
    pub e2e_numbers_per_s: f64,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    /// Results written after their stream opened; earlier ones arrive in its replay, untimed.
    pub delivery_samples: usize,
    pub watch_open_p50_ms: f64,
    pub watch_open_p99_ms: f64,
    pub watchers: usize,
    /// Streams open at the same moment: batches finish while later ones are still submitted.
    pub peak_watchers: usize,
    pub server_rss_mb: Option<f64>,
    /// Every stream opened before the workers reached its batch: `peak_watchers` open at once.
    pub held_watchers: Option<HeldReport>,
    pub floor: Value,
    pub ingest_ratio: Option<f64>,
    pub e2e_ratio: Option<f64>,
    pub backlog: Option<BacklogReport>,
    pub settings: SettingsReport,
}

#[derive(Debug, Serialize)]
pub struct HeldReport {
    pub streams: usize,
    pub peak_watchers: usize,
    pub delivery_p50_ms: f64,
    pub delivery_p99_ms: f64,
    pub delivery_samples: usize,
    pub watch_open_p50_ms: f64,
    pub watch_open_p99_ms: f64,
    pub numbers_per_s: f64,
}

impl HeldReport {
    pub fn of(streams: usize, phase: &Phase) -> HeldReport {
        HeldReport {
            streams,
            peak_watchers: phase.peak_watchers,
            delivery_p50_ms: pct(&phase.delivery, 0.5),
            delivery_p99_ms: pct(&phase.delivery, 0.99),
            delivery_samples: phase.delivery.len(),
            watch_open_p50_ms: pct(&phase.opens, 0.5),
            watch_open_p99_ms: pct(&phase.opens, 0.99),
            numbers_per_s: phase.per_s.round(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct BacklogReport {
    pub backlog_numbers: i64,
    pub drain_numbers_per_s_small: Option<f64>,
    pub drain_numbers_per_s_backlog: Option<f64>,
    /// Draining the big backlog against the small one; null when the watched phase
    /// already worked the backlog off and nothing was left to time.
    pub backlog_ratio: Option<f64>,
    pub numbers_per_s_beside_watched_batches: f64,
    pub e2e_numbers_per_s_after_drain: f64,
    pub after_drain_ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct SettingsReport {
    pub submits: usize,
    pub warmup_submits: usize,
    pub ingest_batches: usize,
    pub batches: usize,
    pub streams_per_batch: usize,
    pub submitters: usize,
    pub ingest_accounts: usize,
    pub workers: Option<usize>,
    pub checker: &'static str,
    pub numbers_checked_during_submits: Option<i64>,
    pub submit_phases: &'static str,
    pub server: &'static str,
    pub watch_server: String,
    pub floor_seconds: u64,
}
