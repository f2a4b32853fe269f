//! The JSON API's request and response bodies, shaped like ProWebLook's (the API our
//! users already call) with our fields beside theirs, and how domain values become them.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::batch::{BatchStatus, BatchSummary, NumberResult, NumberState};

#[derive(Debug, Deserialize, ToSchema)]
pub struct SubmitBody {
    /// May also come as `Authorization: Bearer` or `X-Api-Key`.
    #[serde(default)]
    pub api_key: String,
    /// 1 to 1,000 entries; duplicates after normalization are removed.
    pub phone_numbers: Vec<String>,
    /// Idempotency key: a repeat returns the original batch and charges nothing.
    #[serde(default)]
    pub request_id: String,
    /// ISO 3166-1 alpha-2 region for numbers written without `+`.
    #[serde(default)]
    pub default_region: String,
    /// Check upstream even when a recent answer is cached.
    #[serde(default)]
    pub force_check: bool,
    /// http(s) URL that gets a signed JSON summary when the batch completes.
    #[serde(default)]
    pub callback_url: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SubmitReply {
    pub batch_id: String,
    pub total_numbers: i32,
    /// `processing` or `completed`.
    pub status: String,
}

/// The key, on routes without a body (read by the `Caller` extractor).
#[derive(Debug, Deserialize, IntoParams)]
pub struct KeyQuery {
    /// May also come as `Authorization: Bearer` or `X-Api-Key`.
    pub api_key: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BalanceQuery {
    /// Must be `wavalidation` when given.
    pub service: Option<String>,
}

/// One number, ProWebLook's fields first, ours beside them. A pending result
/// carries only `index`, `phone_number`, `status` and `number_status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ResultJson {
    pub index: i32,
    pub phone_number: String,
    /// `completed` or `pending`.
    pub status: String,
    /// `PENDING`, `ON_WHATSAPP`, `NOT_ON_WHATSAPP`, `INVALID_NUMBER`, `ERROR` or `CANCELLED`.
    pub number_status: String,
    /// `VALID_CONFIRMED` (on WhatsApp), `INVALID` (not on WhatsApp), `INVALID_NUMBER`, `ERROR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wa_status: Option<String>,
    /// `valid` or `invalid` (the number itself, by libphonenumber).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub numberstatus: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub businessnumber: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub formatted_number: Option<String>,
    /// ISO 3166-1 alpha-2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub e164: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wa_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_cache: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normalization_note: Option<String>,
}

/// A batch's counters and every result so far, in submission order.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PollReply {
    #[serde(flatten)]
    pub batch: BatchJson,
    pub results: Vec<ResultJson>,
}

/// A batch's counters (they add up: `pending = total_numbers - completed - failed - cancelled`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchJson {
    pub batch_id: String,
    /// `processing` or `completed`.
    pub status: String,
    pub total_numbers: i32,
    /// Definite answers: on WhatsApp, not on WhatsApp, invalid.
    pub completed: i32,
    pub failed: i32,
    pub cancelled: i32,
    pub pending: i32,
    pub credits_charged: i64,
    pub credits_refunded: i64,
    pub request_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ListReply {
    pub batches: Vec<BatchJson>,
    /// Pass as `page_token` for the next page; absent on the last page.
    pub next_page_token: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CancelReply {
    pub batch: BatchJson,
    pub cancelled_numbers: i64,
    pub credits_refunded: i64,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// At most 200; default 50.
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    /// `processing` or `completed`.
    pub status: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BalanceReply {
    pub balance: i64,
    pub service: String,
}

/// Every error: `error` says what is wrong; the other fields appear where they apply.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submitted: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_allowed: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// `processing` or `completed`.
fn status_word(status: BatchStatus) -> String {
    match status {
        BatchStatus::Completed => "completed",
        BatchStatus::Processing => "processing",
    }
    .to_string()
}

impl SubmitReply {
    pub fn of(batch: &BatchSummary) -> SubmitReply {
        SubmitReply {
            batch_id: batch.id.to_string(),
            total_numbers: batch.total_numbers,
            status: status_word(batch.status),
        }
    }
}

impl From<BatchSummary> for BatchJson {
    fn from(batch: BatchSummary) -> BatchJson {
        BatchJson {
            batch_id: batch.id.to_string(),
            status: status_word(batch.status),
            total_numbers: batch.total_numbers,
            completed: batch.completed,
            failed: batch.failed,
            cancelled: batch.cancelled,
            pending: batch.pending(),
            credits_charged: batch.credits_charged,
            credits_refunded: batch.credits_refunded,
            request_id: batch.request_id,
            created_at: batch.created_at,
            completed_at: batch.completed_at,
        }
    }
}

impl From<NumberResult> for ResultJson {
    fn from(r: NumberResult) -> ResultJson {
        let state = r.state;
        let mut json = ResultJson {
            index: r.index,
            phone_number: r.phone_number,
            status: if state == NumberState::Pending {
                "pending"
            } else {
                "completed"
            }
            .into(),
            number_status: state.name().into(),
            wa_status: None,
            numberstatus: None,
            businessnumber: None,
            formatted_number: None,
            country: None,
            e164: None,
            wa_id: None,
            error: None,
            checked_at: None,
            from_cache: None,
            normalization_note: None,
        };
        if state == NumberState::Pending {
            return json;
        }
        json.wa_status = Some(
            match state {
                NumberState::OnWhatsApp => "VALID_CONFIRMED",
                NumberState::NotOnWhatsApp => "INVALID",
                NumberState::InvalidNumber => "INVALID_NUMBER",
                NumberState::Cancelled => "CANCELLED",
                _ => "ERROR",
            }
            .into(),
        );
        json.numberstatus = Some(if r.e164.is_some() { "valid" } else { "invalid" }.into());
        json.businessnumber = Some(r.is_business);
        json.formatted_number = r.e164.clone();
        json.country = r.region.filter(|region| !region.is_empty());
        json.e164 = r.e164;
        json.wa_id = r.wa_id;
        json.error = r.error;
        json.checked_at = r.checked_at;
        json.from_cache = Some(r.from_cache);
        json.normalization_note = r.normalization_note;
        json
    }
}

/// A result as a Server-Sent Event: the gRPC NumberResult's fields, empty strings for
/// what is absent.
#[derive(Debug, Serialize)]
pub struct EventResult {
    pub index: i32,
    pub phone_number: String,
    pub number_status: &'static str,
    pub e164: String,
    pub wa_id: String,
    pub is_business: bool,
    pub region: String,
    pub error: String,
    pub checked_at: Option<DateTime<Utc>>,
    pub from_cache: bool,
    pub normalization_note: String,
}

impl From<NumberResult> for EventResult {
    fn from(r: NumberResult) -> EventResult {
        EventResult {
            index: r.index,
            phone_number: r.phone_number,
            number_status: r.state.name(),
            e164: r.e164.unwrap_or_default(),
            wa_id: r.wa_id.unwrap_or_default(),
            is_business: r.is_business,
            region: r.region.unwrap_or_default(),
            error: r.error.unwrap_or_default(),
            checked_at: r.checked_at,
            from_cache: r.from_cache,
            normalization_note: r.normalization_note.unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the request decoders (JSON here, protobuf beside it).
        #[test]
        fn request_decoding_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            use prost::Message;
            let _ = crate::pb::SubmitBatchRequest::decode(bytes.as_slice());
            let _ = serde_json::from_slice::<SubmitBody>(&bytes);
        }
    }

    #[test]
    fn pending_results_carry_only_the_basics() {
        let pending = NumberResult {
            index: 3,
            phone_number: "+14155552671".into(),
            state: NumberState::Pending,
            e164: Some("+14155552671".into()),
            wa_id: None,
            is_business: false,
            region: Some("US".into()),
            error: None,
            checked_at: None,
            from_cache: false,
            normalization_note: None,
        };
        let json = serde_json::to_value(ResultJson::from(pending)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"index": 3, "phone_number": "+14155552671", "status": "pending", "number_status": "PENDING"})
        );
    }
}
