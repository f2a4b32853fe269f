//! A batch's results as Server-Sent Events: one `result` event per number, one
//! `completed` event, then the stream ends; an `error` event if it ends early.
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use serde_json::json;

use super::auth::Caller;
use super::types::{ErrorBody, KeyQuery, ResultJson};
use crate::domain::batch::{BatchId, WatchEvent};
use crate::error::ApiError;
use crate::service::ValidationService;

/// Server-Sent Events: one `result` event per number (the same result object as a
/// poll's), then one `completed` event, then the stream ends.
#[utoipa::path(get, path = "/api/v1/wavalidation/batch/{batch_id}/events", params(("batch_id" = String, Path), KeyQuery),
    responses((status = 200, description = "text/event-stream of `result` and `completed` events"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn events(
    State(core): State<Arc<ValidationService>>,
    Caller(account): Caller,
    Path(batch_id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let watch = core.watch(account, BatchId::parse(&batch_id)?).await?;
    let events = watch.map(|item| {
        let event = match item {
            Ok(WatchEvent::Result(r)) => Event::default()
                .event("result")
                .json_data(ResultJson::from(r)),
            Ok(WatchEvent::Completed(c)) => Event::default().event("completed").json_data(json!({
                "total_numbers": c.total_numbers,
                "completed": c.completed,
                "failed": c.failed,
                "cancelled": c.cancelled,
            })),
            Err(err) => Event::default()
                .event("error")
                .json_data(json!({"error": err.to_string()})),
        };
        Ok(event.unwrap_or_else(|_| Event::default().comment("unencodable event")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}
