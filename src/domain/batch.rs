//! Batches as callers see them: ids, each number's state and result, a batch's
//! progress, the events of a watch, and the request fingerprint used for idempotency.
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::numbering::LineType;
use crate::error::ApiError;

/// A batch id as a caller gives it: a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchId(pub Uuid);

impl BatchId {
    pub fn parse(text: &str) -> Result<BatchId, ApiError> {
        Uuid::try_parse(text.trim()).map(BatchId).map_err(|_| {
            ApiError::bad_field(
                "batch_id",
                format!("{text:?} is not a batch id: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8"),
            )
        })
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A batch is processing until every number has its final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchStatus {
    Processing,
    Completed,
}

/// A batch's progress; the counters add up to `total_numbers`.
#[derive(Debug, Clone)]
pub struct BatchSummary {
    pub id: Uuid,
    pub status: BatchStatus,
    pub total_numbers: i32,
    /// Definite answers: on WhatsApp, not on WhatsApp, invalid.
    pub completed: i32,
    pub failed: i32,
    pub cancelled: i32,
    pub credits_charged: i64,
    pub credits_refunded: i64,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl BatchSummary {
    pub fn pending(&self) -> i32 {
        self.total_numbers - self.completed - self.failed - self.cancelled
    }
}

/// One entry of a batch and what became of it so far.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberResult {
    /// Position among the batch's unique entries.
    pub index: i32,
    /// The entry as submitted.
    pub phone_number: String,
    pub state: NumberState,
    pub e164: Option<String>,
    pub wa_id: Option<String>,
    pub is_business: bool,
    /// ISO 3166-1 alpha-2.
    pub region: Option<String>,
    /// Why it is invalid, failed or cancelled (a pending number's last retry error is not shown).
    pub error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
    pub from_cache: bool,
    pub normalization_note: Option<String>,
    /// From libphonenumber's data; None for an invalid entry.
    pub line_type: Option<LineType>,
    /// The original carrier of the number's range, where the data has one.
    pub carrier: Option<String>,
}

/// What a watch of a batch delivers: each result once, then the final counters.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    Result(NumberResult),
    Completed(Counts),
}

/// How many numbers ended each way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total_numbers: i32,
    /// Definite answers: on WhatsApp, not on WhatsApp, invalid.
    pub completed: i32,
    pub failed: i32,
    pub cancelled: i32,
}

impl Counts {
    pub fn new(total_numbers: i32) -> Counts {
        Counts {
            total_numbers,
            ..Counts::default()
        }
    }

    pub fn add(&mut self, state: NumberState) {
        match state {
            s if s.is_definite() => self.completed += 1,
            NumberState::Error => self.failed += 1,
            NumberState::Cancelled => self.cancelled += 1,
            _ => {}
        }
    }

    pub fn pending(&self) -> i32 {
        self.total_numbers - self.completed - self.failed - self.cancelled
    }
}

/// A number's state, stored as the proto's `NumberStatus` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i16)]
pub enum NumberState {
    Pending = 1,
    OnWhatsApp = 2,
    NotOnWhatsApp = 3,
    InvalidNumber = 4,
    Error = 5,
    Cancelled = 6,
}

impl NumberState {
    pub fn from_db(v: i16) -> NumberState {
        match v {
            2 => NumberState::OnWhatsApp,
            3 => NumberState::NotOnWhatsApp,
            4 => NumberState::InvalidNumber,
            5 => NumberState::Error,
            6 => NumberState::Cancelled,
            _ => NumberState::Pending,
        }
    }

    /// The state's name in results, as in the proto without its prefix.
    pub fn name(self) -> &'static str {
        match self {
            NumberState::Pending => "PENDING",
            NumberState::OnWhatsApp => "ON_WHATSAPP",
            NumberState::NotOnWhatsApp => "NOT_ON_WHATSAPP",
            NumberState::InvalidNumber => "INVALID_NUMBER",
            NumberState::Error => "ERROR",
            NumberState::Cancelled => "CANCELLED",
        }
    }

    /// A definite answer counts as `completed`; an error as `failed`.
    pub fn is_definite(self) -> bool {
        matches!(
            self,
            NumberState::OnWhatsApp | NumberState::NotOnWhatsApp | NumberState::InvalidNumber
        )
    }
}

/// Fingerprint of what was submitted, so a retry with the same `request_id`
/// can be told apart from a different request reusing it.
pub fn request_fingerprint(
    numbers: &[String],
    default_region: &str,
    force_check: bool,
    callback_url: &str,
) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(default_region.trim().to_ascii_uppercase().as_bytes());
    h.update([force_check as u8]);
    h.update((callback_url.len() as u64).to_le_bytes());
    h.update(callback_url.as_bytes());
    for n in numbers {
        // Length-prefixed so ["ab","c"] and ["a","bc"] differ.
        h.update((n.len() as u64).to_le_bytes());
        h.update(n.as_bytes());
    }
    h.finalize().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_tells_lists_apart() {
        let a = request_fingerprint(&["ab".into(), "c".into()], "us", false, "");
        let b = request_fingerprint(&["a".into(), "bc".into()], "us", false, "");
        assert_ne!(a, b);
        assert_eq!(
            a,
            request_fingerprint(&["ab".into(), "c".into()], "US", false, "")
        );
        assert_ne!(
            a,
            request_fingerprint(&["ab".into(), "c".into()], "US", true, "")
        );
    }

    #[test]
    fn batch_ids_parse_only_uuids() {
        assert!(BatchId::parse(" 67e55044-10b1-426f-9247-bb680e5fe0c8").is_ok());
        assert!(BatchId::parse("not-a-uuid").is_err());
        assert!(BatchId::parse("").is_err());
    }
}
