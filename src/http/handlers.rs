//! The JSON routes: each reads its request, calls the core and shapes the reply. The
//! `#[utoipa::path]` on each is what the router serves it with and documents it by.
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;

use super::auth::{BodyKey, Caller, CallerJson, CallerParams};
use super::types::*;
use uuid::Uuid;

use crate::domain::batch::{BatchId, BatchStatus, NumberState};
use crate::error::ApiError;
use crate::service::{
    CheckInput, DEFAULT_CHECK_WAIT, MAX_CHECK_WAIT, MIN_CHECK_WAIT, PageToken, SubmitInput,
    ValidationService,
};

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

impl BodyKey for CheckParams {
    fn api_key(&self) -> &str {
        &self.api_key
    }
}

/// Check one number while the caller waits: one credit, charged and refunded as in a
/// batch. 200 with the answer; 202 (`status: PENDING`) when none came within `timeout`
/// seconds (default 20): poll `batch_id`; 503 when it could not be checked (refunded).
#[utoipa::path(get, path = "/api/v1/wavalidation", params(CheckParams),
    responses((status = 200, body = CheckReply), (status = 202, body = CheckReply), (status = 503, body = CheckReply),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn check_get(
    State(core): Core,
    Caller(account): Caller,
    params: Result<Query<CheckParams>, QueryRejection>,
) -> Result<(StatusCode, Json<CheckReply>), ApiError> {
    check(&core, account, params?.0).await
}

/// The same check with the parameters as a JSON body, a form body or the query string
/// (`api_key` may be among them).
#[utoipa::path(post, path = "/api/v1/wavalidation",
    request_body(content((CheckParams = "application/json"), (CheckParams = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = CheckReply), (status = 202, body = CheckReply), (status = 503, body = CheckReply),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 402, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn check_post(
    State(core): Core,
    CallerParams(account, params): CallerParams<CheckParams>,
) -> Result<(StatusCode, Json<CheckReply>), ApiError> {
    check(&core, account, params).await
}

async fn check(
    core: &ValidationService,
    account: Uuid,
    params: CheckParams,
) -> Result<(StatusCode, Json<CheckReply>), ApiError> {
    let wait = match params.timeout {
        None => DEFAULT_CHECK_WAIT,
        Some(secs)
            if secs.is_finite()
                && secs >= MIN_CHECK_WAIT.as_secs_f64()
                && secs <= MAX_CHECK_WAIT.as_secs_f64() =>
        {
            Duration::from_secs_f64(secs)
        }
        Some(_) => {
            return Err(ApiError::bad_field(
                "timeout",
                format!(
                    "timeout is in seconds, from {} to {}",
                    MIN_CHECK_WAIT.as_secs_f64(),
                    MAX_CHECK_WAIT.as_secs()
                ),
            ));
        }
    };
    let checked = core
        .check_number(
            account,
            CheckInput {
                phone_number: &params.phone_number,
                country_code: &params.country_code,
                request_id: &params.request_id,
                force_check: params.force_check,
            },
            wait,
        )
        .await?;
    let status = match checked.result.state {
        NumberState::Pending => StatusCode::ACCEPTED,
        NumberState::Error => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    Ok((status, Json(CheckReply::from(checked))))
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
    q: Result<Query<BalanceQuery>, QueryRejection>,
) -> Result<Json<BalanceReply>, ApiError> {
    let Query(q) = q?;
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
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListReply>, ApiError> {
    let Query(q) = q?;
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
