//! The JSON API's request and response bodies, shaped like ProWebLook's (the API our
//! users already call) with our fields beside theirs, and how domain values become them.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::batch::{BatchStatus, BatchSummary, NumberResult, NumberState};
use crate::domain::numbering;
use crate::service::Checked;

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

/// A single check, as query parameters (GET) or a JSON body (POST).
#[derive(Debug, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CheckParams {
    /// May also come as `Authorization: Bearer` or `X-Api-Key`.
    #[serde(default)]
    pub api_key: String,
    /// The number, with a leading `+` or with `country_code`.
    #[serde(default)]
    #[schema(required = true)]
    #[param(required = true)]
    pub phone_number: String,
    /// For a number written without `+`: a region (`US`) or a calling code (`1`).
    #[serde(default)]
    pub country_code: String,
    /// Idempotency key: a repeat returns the same check and charges nothing.
    #[serde(default)]
    pub request_id: String,
    /// Ask WhatsApp even when a recent answer is cached.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub force_check: bool,
    /// Seconds to wait for the answer before replying 202 with the batch to poll
    /// (default 20, at most 60).
    #[serde(default)]
    pub timeout: Option<f64>,
}

/// `true`/`false` from JSON, or `true`/`false`/`1`/`0` from a query string.
fn flexible_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Text(String),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Text(t) => match t.as_str() {
            "true" | "1" => Ok(true),
            "false" | "0" | "" => Ok(false),
            _ => Err(serde::de::Error::custom(
                "force_check must be true or false",
            )),
        },
    }
}

/// The single check's answer: ProWebLook's fields, then ours (the batch result's names).
/// 200 with an answer, 202 (`status: PENDING`) when none came in time: poll `batch_id`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CheckReply {
    /// `VALID_CONFIRMED` (on WhatsApp), `INVALID` (not on WhatsApp, or not a valid
    /// number), `ERROR` (could not be checked; refunded), `CANCELLED` or `PENDING`.
    pub status: String,
    /// International format, e.g. `+1 415-555-2671`; null for an invalid entry.
    #[schema(required = true)]
    pub formatted_number: Option<String>,
    /// As in batch results.
    #[schema(required = true)]
    pub linetype: Option<String>,
    /// The original carrier of the number's range; null where the data has none.
    #[schema(required = true)]
    pub carrier: Option<String>,
    /// The range's place, or the country's name.
    #[schema(required = true)]
    pub location: Option<String>,
    /// Country calling code, e.g. 1.
    #[schema(required = true)]
    pub countrycodenum: Option<i32>,
    /// ISO 3166-1 alpha-2, e.g. `US`.
    #[schema(required = true)]
    pub countrycode: Option<String>,
    /// e.g. `United States`.
    #[schema(required = true)]
    pub countryname: Option<String>,
    /// e.g. `(415) 555-2671`.
    #[schema(required = true)]
    pub formatnational: Option<String>,
    /// e.g. `+1 415-555-2671`.
    #[schema(required = true)]
    pub formatinternational: Option<String>,
    /// IANA time zone names; empty for an invalid entry.
    pub timezone: Vec<String>,
    /// As in batch results: true on WhatsApp, false not on WhatsApp or invalid, null
    /// without an answer.
    #[schema(required = true)]
    pub numberstatus: Option<bool>,
    #[schema(required = true)]
    pub businessnumber: Option<bool>,
    /// The batch of one holding this check (poll or watch it).
    pub batch_id: String,
    pub phone_number: String,
    /// As in batch results: `PENDING`, `ON_WHATSAPP`, `NOT_ON_WHATSAPP`, `INVALID_NUMBER`,
    /// `ERROR` or `CANCELLED`.
    pub number_status: String,
    #[schema(required = true)]
    pub wa_status: Option<String>,
    #[schema(required = true)]
    pub e164: Option<String>,
    #[schema(required = true)]
    pub wa_id: Option<String>,
    #[schema(required = true)]
    pub error: Option<String>,
    #[schema(required = true)]
    pub checked_at: Option<DateTime<Utc>>,
    pub from_cache: bool,
    #[schema(required = true)]
    pub normalization_note: Option<String>,
}

/// The key, on routes without a body (read by the `Caller` extractor).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// May also come as `Authorization: Bearer` or `X-Api-Key`.
    // Documents the parameter; `auth::query_key` reads it (two different ones are refused).
    #[allow(dead_code)]
    pub api_key: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BalanceQuery {
    /// Must be `wavalidation` when given.
    pub service: Option<String>,
}

/// One number: ProWebLook's fields first, ours beside them. Every key is always present,
/// `null` where there is no value, so a client reading a field blindly gets the same
/// meaning in polls, Server-Sent Events and the CLI's outputs (README: "Result fields").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResultJson {
    /// Position among the batch's unique entries, in submission order.
    pub index: i32,
    /// The entry's text as first submitted.
    pub phone_number: String,
    /// `completed` or `pending`.
    pub status: String,
    /// `VALID_CONFIRMED` (on WhatsApp), `INVALID` (not on WhatsApp), `INVALID_NUMBER`,
    /// `ERROR` or `CANCELLED`; null while pending.
    #[schema(required = true)]
    pub wa_status: Option<String>,
    /// True when the number is on WhatsApp; false when it is not or is not a valid
    /// number; null while pending, on error and when cancelled.
    #[schema(required = true)]
    pub numberstatus: Option<bool>,
    /// True for a WhatsApp Business account; false when the answer is not on WhatsApp,
    /// invalid or a personal account; null while there is no answer.
    #[schema(required = true)]
    pub businessnumber: Option<bool>,
    /// E.164, e.g. `+14155552671`; null for an invalid entry.
    #[schema(required = true)]
    pub formatted_number: Option<String>,
    /// The original carrier of the number's range (libphonenumber data, not a
    /// portability lookup); null where the data has none.
    #[schema(required = true)]
    pub carrier: Option<String>,
    /// `Mobile`, `Fixed Line`, `Fixed Line or Mobile`, `VoIP`, `Toll Free`, `Premium Rate`,
    /// `Shared Cost`, `Personal Number`, `Pager`, `UAN`, `Voicemail` or `Unknown`; null for
    /// an invalid entry.
    #[schema(required = true)]
    pub linetype: Option<String>,
    /// ISO 3166-1 alpha-2; null for an invalid entry or a non-geographic number (+800...).
    #[schema(required = true)]
    pub country: Option<String>,
    /// `PENDING`, `ON_WHATSAPP`, `NOT_ON_WHATSAPP`, `INVALID_NUMBER`, `ERROR` or `CANCELLED`.
    pub number_status: String,
    /// Same as `formatted_number`.
    #[schema(required = true)]
    pub e164: Option<String>,
    /// The WhatsApp id when on WhatsApp: the digits of the form actually registered
    /// (which may differ from `e164` in Brazil, Mexico, Argentina), or a LID.
    #[schema(required = true)]
    pub wa_id: Option<String>,
    /// Why the entry is invalid, could not be checked or was cancelled.
    #[schema(required = true)]
    pub error: Option<String>,
    /// When the answer was obtained (a cached answer: when it was first checked, to the hour).
    #[schema(required = true)]
    pub checked_at: Option<DateTime<Utc>>,
    /// Answered from the result cache without asking WhatsApp.
    pub from_cache: bool,
    /// Set when a legacy form was repaired (Mexico's +52 1, Brazil's missing ninth digit).
    #[schema(required = true)]
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
#[into_params(parameter_in = Query)]
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
        let answered = matches!(
            state,
            NumberState::OnWhatsApp | NumberState::NotOnWhatsApp | NumberState::InvalidNumber
        );
        ResultJson {
            index: r.index,
            phone_number: r.phone_number,
            status: if state == NumberState::Pending {
                "pending"
            } else {
                "completed"
            }
            .into(),
            wa_status: match state {
                NumberState::Pending => None,
                NumberState::OnWhatsApp => Some("VALID_CONFIRMED"),
                NumberState::NotOnWhatsApp => Some("INVALID"),
                NumberState::InvalidNumber => Some("INVALID_NUMBER"),
                NumberState::Cancelled => Some("CANCELLED"),
                NumberState::Error => Some("ERROR"),
            }
            .map(str::to_string),
            numberstatus: answered.then_some(state == NumberState::OnWhatsApp),
            businessnumber: answered.then_some(state == NumberState::OnWhatsApp && r.is_business),
            formatted_number: r.e164.clone(),
            carrier: r.carrier,
            linetype: r.line_type.map(|t| t.word().to_string()),
            country: r.region.filter(|region| !region.is_empty()),
            number_status: state.name().into(),
            e164: r.e164,
            wa_id: r.wa_id,
            error: r.error,
            checked_at: r.checked_at,
            from_cache: r.from_cache,
            normalization_note: r.normalization_note,
        }
    }
}

impl From<Checked> for CheckReply {
    fn from(checked: Checked) -> CheckReply {
        let details = checked.result.e164.as_deref().and_then(numbering::of);
        let result = ResultJson::from(checked.result);
        let status = match result.number_status.as_str() {
            "ON_WHATSAPP" => "VALID_CONFIRMED",
            "NOT_ON_WHATSAPP" | "INVALID_NUMBER" => "INVALID",
            other => other,
        };
        let (details, timezone) = match details {
            Some(n) => {
                let zones = n.time_zones.iter().map(|z| z.to_string()).collect();
                (Some(n), zones)
            }
            None => (None, Vec::new()),
        };
        CheckReply {
            status: status.to_string(),
            formatted_number: details.as_ref().map(|n| n.international.clone()),
            linetype: result.linetype,
            carrier: result.carrier,
            location: details.as_ref().and_then(|n| n.location.clone()),
            countrycodenum: details.as_ref().map(|n| n.calling_code.into()),
            countrycode: result.country.clone(),
            countryname: details.as_ref().and_then(|n| n.country_name.clone()),
            formatnational: details.as_ref().map(|n| n.national.clone()),
            formatinternational: details.map(|n| n.international),
            timezone,
            numberstatus: result.numberstatus,
            businessnumber: result.businessnumber,
            batch_id: checked.batch.id.to_string(),
            phone_number: result.phone_number,
            number_status: result.number_status,
            wa_status: result.wa_status,
            e164: result.e164,
            wa_id: result.wa_id,
            error: result.error,
            checked_at: result.checked_at,
            from_cache: result.from_cache,
            normalization_note: result.normalization_note,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::numbering::LineType;

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

    fn result(state: NumberState, e164: Option<&str>) -> NumberResult {
        NumberResult {
            index: 3,
            phone_number: "+1 415 555 2671".into(),
            state,
            e164: e164.map(str::to_string),
            wa_id: None,
            is_business: false,
            region: e164.map(|_| "US".to_string()),
            error: None,
            checked_at: None,
            from_cache: false,
            normalization_note: None,
            line_type: e164.map(|_| LineType::FixedLineOrMobile),
            carrier: None,
        }
    }

    /// Every key, whatever the state: a client reading a field never finds it missing.
    #[test]
    fn every_result_has_every_key() {
        let keys = |r: NumberResult| {
            let json = serde_json::to_value(ResultJson::from(r)).unwrap();
            json.as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        let all = keys(result(NumberState::OnWhatsApp, Some("+14155552671")));
        assert_eq!(all.len(), 17, "{all:?}");
        for state in [
            NumberState::Pending,
            NumberState::NotOnWhatsApp,
            NumberState::InvalidNumber,
            NumberState::Error,
            NumberState::Cancelled,
        ] {
            assert_eq!(keys(result(state, None)), all, "{state:?}");
        }
    }

    #[test]
    fn numberstatus_is_whether_the_number_is_on_whatsapp() {
        let numberstatus = |state, e164| ResultJson::from(result(state, e164)).numberstatus;
        let valid = Some("+14155552671");
        assert_eq!(numberstatus(NumberState::OnWhatsApp, valid), Some(true));
        assert_eq!(numberstatus(NumberState::NotOnWhatsApp, valid), Some(false));
        assert_eq!(numberstatus(NumberState::InvalidNumber, None), Some(false));
        assert_eq!(numberstatus(NumberState::Pending, valid), None);
        assert_eq!(numberstatus(NumberState::Error, valid), None);
        assert_eq!(numberstatus(NumberState::Cancelled, valid), None);
    }
}
