//! The rows the store reads and writes, as Rust types: batches and their results,
//! cached answers, and the queue's chunks, claims and answers.
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::batch::{BatchStatus, BatchSummary, NumberResult, NumberState};
use crate::domain::checker::{AccountBackend, AccountConfig, AccountStatus};
use crate::domain::numbering::LineType;
use crate::domain::phone::{Parsed, parse_number};

/// A live check's answer kept for reuse.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CachedAnswer {
    pub e164: String,
    pub on_whatsapp: bool,
    pub wa_id: Option<String>,
    pub is_business: bool,
    pub checked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: Uuid,
    pub total_numbers: i32,
    pub completed: i32,
    pub failed: i32,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub credits_charged: i64,
    pub credits_refunded: i64,
    pub cancelled: i32,
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultRow {
    pub idx: i32,
    pub input: String,
    pub e164: Option<String>,
    pub region: Option<String>,
    pub state: i16,
    pub wa_id: Option<String>,
    pub is_business: bool,
    pub error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    pub from_cache: bool,
    pub normalization_note: Option<String>,
    pub line_type: Option<i16>,
    pub carrier: Option<String>,
}

impl BatchRow {
    /// Numbers without an answer yet; the counters always add up to the total.
    pub fn pending(&self) -> i32 {
        self.total_numbers - self.completed - self.failed - self.cancelled
    }
}

impl ResultRow {
    pub fn state(&self) -> NumberState {
        NumberState::from_db(self.state)
    }
}

impl From<BatchRow> for BatchSummary {
    fn from(row: BatchRow) -> BatchSummary {
        BatchSummary {
            id: row.id,
            status: if row.completed_at.is_some() {
                BatchStatus::Completed
            } else {
                BatchStatus::Processing
            },
            total_numbers: row.total_numbers,
            completed: row.completed,
            failed: row.failed,
            cancelled: row.cancelled,
            credits_charged: row.credits_charged,
            credits_refunded: row.credits_refunded,
            request_id: row.request_id,
            created_at: row.created_at,
            completed_at: row.completed_at,
        }
    }
}

impl From<ResultRow> for NumberResult {
    fn from(row: ResultRow) -> NumberResult {
        let state = row.state();
        // Rows stored before line types were: read from the number (costly, and rare).
        let (line_type, carrier) = match (row.line_type, row.e164.as_deref()) {
            (Some(code), _) => (Some(LineType::from_code(code)), row.carrier),
            (None, Some(e164)) => match parse_number(e164, None) {
                Parsed::Valid(v) => (Some(v.line_type), v.carrier.map(str::to_string)),
                Parsed::Invalid { .. } => (None, None),
            },
            (None, None) => (None, None),
        };
        NumberResult {
            index: row.idx,
            phone_number: row.input,
            state,
            e164: row.e164,
            wa_id: row.wa_id,
            is_business: row.is_business,
            region: row.region,
            // A retry's last error is kept on the row, but a pending number has no answer yet.
            error: row.error.filter(|_| state != NumberState::Pending),
            checked_at: row.checked_at,
            from_cache: row.from_cache,
            normalization_note: row.normalization_note,
            line_type,
            carrier,
        }
    }
}

/// A queue chunk: a batch and the first index of the range it covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkKey {
    pub batch_id: Uuid,
    pub first_idx: i32,
}

/// What a claim got: the chunks leased under `token` and their numbers still pending
/// (a chunk may have none left, when they were answered or cancelled meanwhile).
#[derive(Debug)]
pub struct Claim {
    pub token: Uuid,
    pub chunks: Vec<ChunkKey>,
    pub numbers: Vec<Claimed>,
}

/// A number claimed by a worker until its chunk's lease runs out.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub batch_id: Uuid,
    pub idx: i32,
    /// First index of the chunk it was claimed with.
    pub chunk: i32,
    pub e164: String,
    /// Including this one.
    pub attempts: i32,
    /// When its chunk was queued.
    pub queued_at: DateTime<Utc>,
}

impl Claimed {
    pub fn chunk_key(&self) -> ChunkKey {
        ChunkKey {
            batch_id: self.batch_id,
            first_idx: self.chunk,
        }
    }
}

/// A final answer for a claimed number.
#[derive(Debug, Clone)]
pub struct Answer {
    pub batch_id: Uuid,
    pub idx: i32,
    pub chunk: i32,
    pub state: NumberState,
    pub wa_id: Option<String>,
    pub is_business: bool,
    pub error: Option<String>,
}

/// A result as written, for the watchers of its batch in this process.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrittenRow {
    pub batch_id: Uuid,
    #[sqlx(flatten)]
    pub row: ResultRow,
}

/// A claimed number to try again later: its error so far, shown while it waits.
#[derive(Debug, Clone)]
pub struct Retry {
    pub batch_id: Uuid,
    pub idx: i32,
    pub chunk: i32,
    pub error: String,
}

/// How a worker lets go of a chunk once every number it claimed in it is dealt with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkEnd {
    /// Nothing pending is left in it: the chunk leaves the queue.
    Done = 1,
    /// Some numbers are to be tried again: after a backoff that grows with its attempts.
    Retry = 2,
    /// The checker paused before trying some: after `Completion::defer_for`, this claim uncounted.
    Defer = 3,
}

/// A checking account as it stands now (the `checker_status` view).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub id: Uuid,
    pub name: String,
    #[sqlx(try_from = "String")]
    pub backend: AccountBackend,
    /// The backend's settings.
    #[sqlx(json)]
    pub config: AccountConfig,
    pub rate_per_sec: f64,
    pub max_concurrency: i32,
    pub daily_cap: i32,
    pub warmup_days: i32,
    pub hours_start: Option<chrono::NaiveTime>,
    pub hours_end: Option<chrono::NaiveTime>,
    pub timezone: String,
    pub paused: bool,
    /// Set by `serve`'s flags (a single backend), not by `wavalidate checker add`.
    pub from_flags: bool,
    /// The last trouble (`active` when none) and its count in a row.
    pub state: String,
    pub failures: i32,
    pub throttles: i32,
    pub checks_today: i32,
    pub cap_today: i32,
    pub checks_total: i64,
    pub last_check_at: Option<DateTime<Utc>>,
    /// When the account's shared rate next lets a call start.
    pub next_slot: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub status: AccountStatus,
    pub status_until: Option<DateTime<Utc>>,
    pub status_reason: Option<String>,
}
