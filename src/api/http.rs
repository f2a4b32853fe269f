//! The JSON HTTP API, shaped like ProWebLook's (the API our users already call),
//! on the same port as gRPC. Handlers read the request, delegate to `Ops`, shape the reply.
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use utoipa::{IntoParams, OpenApi, ToSchema};

use super::auth::KeySources;
use super::convert::{Counts, batch_status};
use super::ops::{Ops, SubmitInput};
use crate::domain::batch::NumberState;
use crate::error::ApiError;
use crate::pb::{self, watch_batch_response::Event as WatchEvent};
use crate::store::batches::{BatchRow, ResultRow};

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

#[derive(Debug, Deserialize, IntoParams)]
pub struct KeyQuery {
    /// May also come as `Authorization: Bearer` or `X-Api-Key`.
    pub api_key: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BalanceQuery {
    pub api_key: Option<String>,
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
    pub api_key: Option<String>,
    /// At most 200; default 50.
    pub page_size: Option<i32>,
    pub page_token: Option<String>,
    /// `processing` or `completed`.
    pub status: Option<String>,
}

fn batch_json(batch: &BatchRow) -> BatchJson {
    BatchJson {
        batch_id: batch.id.to_string(),
        status: status_word(batch),
        total_numbers: batch.total_numbers,
        completed: batch.completed,
        failed: batch.failed,
        cancelled: batch.cancelled,
        pending: batch.pending(),
        credits_charged: batch.credits_charged,
        credits_refunded: batch.credits_refunded,
        request_id: batch.request_id.clone(),
        created_at: batch.created_at,
        completed_at: batch.completed_at,
    }
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
}

fn status_word(batch: &BatchRow) -> String {
    match batch_status(batch) {
        pb::BatchStatus::Completed => "completed",
        _ => "processing",
    }
    .to_string()
}

fn number_status_word(state: NumberState) -> &'static str {
    match state {
        NumberState::Pending => "PENDING",
        NumberState::OnWhatsApp => "ON_WHATSAPP",
        NumberState::NotOnWhatsApp => "NOT_ON_WHATSAPP",
        NumberState::InvalidNumber => "INVALID_NUMBER",
        NumberState::Error => "ERROR",
        NumberState::Cancelled => "CANCELLED",
    }
}

pub fn result_json(row: &ResultRow) -> ResultJson {
    let state = row.state();
    let mut json = ResultJson {
        index: row.idx,
        phone_number: row.input.clone(),
        status: if state == NumberState::Pending {
            "pending"
        } else {
            "completed"
        }
        .into(),
        number_status: number_status_word(state).into(),
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
    json.numberstatus = Some(
        if row.e164.is_some() {
            "valid"
        } else {
            "invalid"
        }
        .into(),
    );
    json.businessnumber = Some(row.is_business);
    json.formatted_number = row.e164.clone();
    json.country = row.region.clone().filter(|r| !r.is_empty());
    json.e164 = row.e164.clone();
    json.wa_id = row.wa_id.clone();
    json.error = row.error.clone();
    json.checked_at = row.checked_at;
    json.from_cache = Some(row.from_cache);
    json.normalization_note = row.normalization_note.clone();
    json
}

/// The JSON error of an API error: its code's HTTP status and reason, ProWebLook's
/// wording where they have the case, and the details as fields.
impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let code = self.code();
        let details = self.details();
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.peer_message().into());
        if let Some(field) = details.field {
            body.insert("field".into(), field.into());
        }
        if let Some(reason) = code.reason() {
            body.insert("reason".into(), reason.into());
        }
        for (name, value) in details.metadata {
            body.insert(name.into(), value);
        }
        let mut resp = (code.http(), Json(body)).into_response();
        if let Some(after) = details.retry_after {
            let secs = after.as_secs().max(1).to_string();
            resp.headers_mut()
                .insert("retry-after", secs.parse().expect("digits"));
        }
        resp
    }
}

/// A malformed body is the client's mistake: 400 with what the parser said, never a 500.
fn json_body<T>(body: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    body.map(|Json(b)| b).map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body larger than {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::InvalidArgument(format!("invalid JSON body: {}", rejection.body_text()))
        }
    })
}

/// Largest request accepted: 1,000 entries of 256 characters fit with room to spare.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

type Shared = State<Arc<Ops>>;

/// Queue a batch; credits are taken at once.
#[utoipa::path(post, path = "/api/v1/wavalidation/batch", request_body = SubmitBody,
    responses((status = 202, body = SubmitReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 402, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn submit(
    State(ops): Shared,
    headers: HeaderMap,
    body: Result<Json<SubmitBody>, JsonRejection>,
) -> Result<(StatusCode, Json<SubmitReply>), ApiError> {
    let body = json_body(body)?;
    let account_id = ops
        .authenticate(KeySources::from_headers(&headers, &body.api_key))
        .await?;
    let batch = ops
        .submit(
            account_id,
            SubmitInput {
                phone_numbers: &body.phone_numbers,
                request_id: &body.request_id,
                default_region: &body.default_region,
                force_check: body.force_check,
                callback_url: &body.callback_url,
            },
        )
        .await?;
    let reply = SubmitReply {
        batch_id: batch.id.to_string(),
        total_numbers: batch.total_numbers,
        status: status_word(&batch),
    };
    Ok((StatusCode::ACCEPTED, Json(reply)))
}

/// Progress and every result so far, in submission order.
#[utoipa::path(get, path = "/api/v1/wavalidation/batch/{batch_id}", params(("batch_id" = String, Path), KeyQuery),
    responses((status = 200, body = PollReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn poll(
    State(ops): Shared,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<PollReply>, ApiError> {
    let account_id = ops
        .authenticate(KeySources::from_headers(
            &headers,
            q.api_key.as_deref().unwrap_or(""),
        ))
        .await?;
    let (batch, rows) = ops.poll(account_id, &batch_id).await?;
    let counts = Counts::of(rows.iter().map(|r| r.state()));
    // Counters from the rows of the same snapshot, like the gRPC poll.
    let mut summary = batch_json(&batch);
    summary.completed = counts.completed;
    summary.failed = counts.failed;
    summary.cancelled = counts.cancelled;
    summary.pending = counts.pending(batch.total_numbers);
    Ok(Json(PollReply {
        batch: summary,
        results: rows.iter().map(result_json).collect(),
    }))
}

/// The account's credit balance.
#[utoipa::path(get, path = "/api/v1/balance", params(BalanceQuery),
    responses((status = 200, body = BalanceReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn balance(
    State(ops): Shared,
    headers: HeaderMap,
    Query(q): Query<BalanceQuery>,
) -> Result<Json<BalanceReply>, ApiError> {
    if let Some(service) = q.service.as_deref().filter(|s| *s != "wavalidation") {
        return Err(ApiError::bad_field(
            "service",
            format!("unknown service {service:?}: this API serves \"wavalidation\""),
        ));
    }
    let account_id = ops
        .authenticate(KeySources::from_headers(
            &headers,
            q.api_key.as_deref().unwrap_or(""),
        ))
        .await?;
    let balance = ops.balance(account_id).await?;
    Ok(Json(BalanceReply {
        balance,
        service: "wavalidation".into(),
    }))
}

/// The account's batches, newest first.
#[utoipa::path(get, path = "/api/v1/wavalidation/batches", params(ListQuery),
    responses((status = 200, body = ListReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
async fn list(
    State(ops): Shared,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListReply>, ApiError> {
    let account_id = ops
        .authenticate(KeySources::from_headers(
            &headers,
            q.api_key.as_deref().unwrap_or(""),
        ))
        .await?;
    let completed = match q.status.as_deref() {
        None | Some("") => None,
        Some("completed") => Some(true),
        Some("processing") => Some(false),
        Some(other) => {
            return Err(ApiError::bad_field(
                "status",
                format!("unknown status {other:?}: use processing or completed"),
            ));
        }
    };
    let (rows, next) = ops
        .list(
            account_id,
            q.page_size.unwrap_or(0),
            q.page_token.as_deref().unwrap_or(""),
            completed,
        )
        .await?;
    Ok(Json(ListReply {
        batches: rows.iter().map(batch_json).collect(),
        next_page_token: (!next.is_empty()).then_some(next),
    }))
}

/// Stops a batch; numbers not yet checked are cancelled and refunded once.
#[utoipa::path(post, path = "/api/v1/wavalidation/batch/{batch_id}/cancel", params(("batch_id" = String, Path), KeyQuery),
    responses((status = 200, body = CancelReply), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn cancel(
    State(ops): Shared,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Result<Json<CancelReply>, ApiError> {
    let account_id = ops
        .authenticate(KeySources::from_headers(
            &headers,
            q.api_key.as_deref().unwrap_or(""),
        ))
        .await?;
    let (batch, cancelled) = ops.cancel(account_id, &batch_id).await?;
    Ok(Json(CancelReply {
        batch: batch_json(&batch),
        cancelled_numbers: cancelled,
        credits_refunded: cancelled,
    }))
}

/// Server-Sent Events: one `result` event per number (the NumberResult as proto3 JSON
/// field names in snake_case), then one `completed` event, then the stream ends.
#[utoipa::path(get, path = "/api/v1/wavalidation/batch/{batch_id}/events", params(("batch_id" = String, Path), KeyQuery),
    responses((status = 200, description = "text/event-stream of `result` and `completed` events"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn events(
    State(ops): Shared,
    headers: HeaderMap,
    Path(batch_id): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let account_id = ops
        .authenticate(KeySources::from_headers(
            &headers,
            q.api_key.as_deref().unwrap_or(""),
        ))
        .await?;
    let watch = ops.watch(account_id, &batch_id).await?;
    let stream = watch.map(|item| {
        let event = match item {
            Ok(pb::WatchBatchResponse { event: Some(WatchEvent::Result(r)) }) => {
                Event::default().event("result").json_data(sse_result(&r))
            }
            Ok(pb::WatchBatchResponse { event: Some(WatchEvent::Completed(c)) }) => Event::default()
                .event("completed")
                .json_data(serde_json::json!({"total_numbers": c.total_numbers, "completed": c.completed, "failed": c.failed, "cancelled": c.cancelled})),
            Ok(pb::WatchBatchResponse { event: None }) => Ok(Event::default().comment("")),
            Err(status) => Event::default().event("error").json_data(serde_json::json!({"error": status.message()})),
        };
        Ok(event.unwrap_or_else(|_| Event::default().comment("unencodable event")))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The same fields as the gRPC NumberResult.
fn sse_result(r: &pb::NumberResult) -> serde_json::Value {
    let status = pb::NumberStatus::try_from(r.status).unwrap_or(pb::NumberStatus::Unspecified);
    serde_json::json!({
        "index": r.index,
        "phone_number": r.phone_number,
        "number_status": status.as_str_name().trim_start_matches("NUMBER_STATUS_"),
        "e164": r.e164,
        "wa_id": r.wa_id,
        "is_business": r.is_business,
        "region": r.region,
        "error": r.error,
        "checked_at": r.checked_at.as_ref().and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos as u32)),
        "from_cache": r.from_cache,
        "normalization_note": r.normalization_note,
    })
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "wavalidate JSON API",
        description = "ProWebLook-compatible WhatsApp number validation, served beside gRPC on the same port."
    ),
    paths(submit, poll, balance, events),
    components(schemas(
        SubmitBody,
        SubmitReply,
        PollReply,
        ResultJson,
        BalanceReply,
        ErrorBody
    ))
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(ErrorBody {
            error: "no such endpoint: see /openapi.json".into(),
            ..Default::default()
        }),
    )
        .into_response()
}

pub fn router(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/api/v1/wavalidation/batch", post(submit))
        .route("/api/v1/wavalidation/batch/{batch_id}", get(poll))
        .route("/api/v1/wavalidation/batch/{batch_id}/events", get(events))
        .route("/api/v1/wavalidation/batch/{batch_id}/cancel", post(cancel))
        .route("/api/v1/wavalidation/batches", get(list))
        .route("/api/v1/balance", get(balance))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ops)
}

#[cfg(test)]
mod tests {
    #[test]
    fn pending_results_carry_only_the_basics() {
        let row = crate::store::batches::ResultRow {
            idx: 3,
            input: "+14155552671".into(),
            e164: Some("+14155552671".into()),
            region: Some("US".into()),
            state: 1,
            wa_id: None,
            is_business: false,
            error: Some("earlier retry".into()),
            checked_at: None,
            from_cache: false,
            normalization_note: None,
        };
        let json = serde_json::to_value(super::result_json(&row)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"index": 3, "phone_number": "+14155552671", "status": "pending", "number_status": "PENDING"})
        );
    }
}
