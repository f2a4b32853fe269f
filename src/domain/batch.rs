//! Batch identifiers, number states and the request fingerprint used for idempotency.
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::pb;

pub fn parse_batch_id(text: &str) -> Option<Uuid> {
    Uuid::try_parse(text.trim()).ok()
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

    pub fn to_proto(self) -> pb::NumberStatus {
        match self {
            NumberState::Pending => pb::NumberStatus::Pending,
            NumberState::OnWhatsApp => pb::NumberStatus::OnWhatsapp,
            NumberState::NotOnWhatsApp => pb::NumberStatus::NotOnWhatsapp,
            NumberState::InvalidNumber => pb::NumberStatus::InvalidNumber,
            NumberState::Error => pb::NumberStatus::Error,
            NumberState::Cancelled => pb::NumberStatus::Cancelled,
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
        assert!(parse_batch_id("67e55044-10b1-426f-9247-bb680e5fe0c8").is_some());
        assert!(parse_batch_id("not-a-uuid").is_none());
        assert!(parse_batch_id("").is_none());
    }
}
