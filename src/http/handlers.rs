//! The JSON routes: each reads its request, calls the core and shapes the reply. The
//! `#[utoipa::path]` on each is what the router serves it with and documents it by.
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::auth::{BodyKey, Caller, CallerJson};
use super::types::*;
use crate::domain::batch::{BatchId, BatchStatus};
use crate::error::ApiError;
use crate::service::{PageToken, SubmitInput, ValidationService};

type Core = State<Arc<ValidationService>>;

impl BodyKey for SubmitBody {
    fn api_key(&self) -> &str {
        &self.api_key
    }
}

/// Queue a batch; credits are taken at once.
#[utoipa::path(post, path = "/api/v1/wavalidation/batch", request_body = SubmitBody,
    responses((status = 202, body = SubmitReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 402, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn submit(
    State(core): Core,
    CallerJson(account, body): CallerJson<SubmitBody>,
) -> Result<(StatusCode, Json<SubmitReply>), ApiError> {
    let batch = core
        .submit(
            account,
            SubmitInput {
                phone_numbers: &body.phone_numbers,
                request_id: &body.request_id,
                default_region: &body.default_region,
                force_check: body.force_check,
                callback_url: &body.callback_url,
            },
        )
        .await?;
    Ok((StatusCode::ACCEPTED, Json(SubmitReply::of(&batch))))
}

/// Progress and every result so far, in submission order.
#[utoipa::path(get, path = "/api/v1/wavalidation/batch/{batch_id}", params(("batch_id" = String, Path), KeyQuery),
    responses((status = 200, body = PollReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn poll(
    State(core): Core,
    Caller(account): Caller,
    Path(batch_id): Path<String>,
) -> Result<Json<PollReply>, ApiError> {
    let polled = core.poll(account, BatchId::parse(&batch_id)?).await?;
    Ok(Json(PollReply {
        batch: polled.batch.into(),
        results: polled.results.into_iter().map(ResultJson::from).collect(),
    }))
}

/// The account's credit balance.
#[utoipa::path(get, path = "/api/v1/balance", params(BalanceQuery, KeyQuery),
    responses((status = 200, body = BalanceReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn balance(
    State(core): Core,
    Caller(account): Caller,
    Query(q): Query<BalanceQuery>,
) -> Result<Json<BalanceReply>, ApiError> {
    if let Some(service) = q.service.as_deref().filter(|s| *s != "wavalidation") {
        return Err(ApiError::bad_field(
            "service",
            format!("unknown service {service:?}: this API serves \"wavalidation\""),
        ));
    }
    let balance = core.balance(account).await?;
    Ok(Json(BalanceReply {
        balance,
        service: "wavalidation".into(),
    }))
}

/// The account's batches, newest first.
#[utoipa::path(get, path = "/api/v1/wavalidation/batches", params(ListQuery, KeyQuery),
    responses((status = 200, body = ListReply), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(core): Core,
    Caller(account): Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<ListReply>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some("completed") => Some(BatchStatus::Completed),
        Some("processing") => Some(BatchStatus::Processing),
        Some(other) => {
            return Err(ApiError::bad_field(
                "status",
                format!("unknown status {other:?}: use processing or completed"),
            ));
        }
    };
    let after = match q.page_token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(PageToken::parse(token)?),
    };
    let page = core
        .list(account, q.page_size.unwrap_or(0), after, status)
        .await?;
    Ok(Json(ListReply {
        batches: page.batches.into_iter().map(BatchJson::from).collect(),
        next_page_token: page.next.map(|t| t.encode()),
    }))
}

/// Stops a batch; numbers not yet checked are cancelled and refunded once.
#[utoipa::path(post, path = "/api/v1/wavalidation/batch/{batch_id}/cancel", params(("batch_id" = String, Path), KeyQuery),
    responses((status = 200, body = CancelReply), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn cancel(
    State(core): Core,
    Caller(account): Caller,
    Path(batch_id): Path<String>,
) -> Result<Json<CancelReply>, ApiError> {
    let cancelled = core.cancel(account, BatchId::parse(&batch_id)?).await?;
    Ok(Json(CancelReply {
        batch: cancelled.batch.into(),
        cancelled_numbers: cancelled.numbers,
        credits_refunded: cancelled.numbers,
    }))
}
