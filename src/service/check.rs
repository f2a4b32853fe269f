//! The single-number check: a batch of one, queued ahead of batch work and answered
//! while the caller waits, or handed back as a batch to poll when the wait runs out.
//! Charging, refunds, the cache and the checking pool are the batch's own.
use std::time::Duration;

use futures::StreamExt;
use uuid::Uuid;

use super::{SubmitInput, ValidationService, quoted_start, timed};
use crate::domain::batch::{BatchId, BatchSummary, NumberResult, NumberState, WatchEvent};
use crate::domain::phone::{MAX_ENTRY_CHARS, Region};
use crate::error::ApiError;

/// How long a check waits for its answer when the caller sets no deadline.
pub const DEFAULT_CHECK_WAIT: Duration = Duration::from_secs(20);
/// The longest a check waits, whatever the caller asks: a held request holds a connection.
pub const MAX_CHECK_WAIT: Duration = Duration::from_secs(60);
/// The shortest: storing the check takes a few milliseconds, and a caller gone by then
/// would be charged without hearing of its batch.
pub const MIN_CHECK_WAIT: Duration = Duration::from_millis(200);

/// A single check as both APIs receive it.
#[derive(Debug, Default)]
pub struct CheckInput<'a> {
    pub phone_number: &'a str,
    /// ISO 3166-1 alpha-2 or a country calling code, for numbers written without `+`.
    pub country_code: &'a str,
    pub request_id: &'a str,
    pub force_check: bool,
}

/// A check's batch of one and its result: PENDING when the wait ran out first.
#[derive(Debug)]
pub struct Checked {
    pub batch: BatchSummary,
    pub result: NumberResult,
}

impl ValidationService {
    /// Checks one number, answering within `wait` of the call (at most [`MAX_CHECK_WAIT`];
    /// shorter than [`MIN_CHECK_WAIT`] is refused before anything is charged).
    pub async fn check_number(
        &self,
        account_id: Uuid,
        input: CheckInput<'_>,
        wait: Duration,
    ) -> Result<Checked, ApiError> {
        timed("check", self.check_inner(account_id, input, wait)).await
    }

    async fn check_inner(
        &self,
        account_id: Uuid,
        input: CheckInput<'_>,
        wait: Duration,
    ) -> Result<Checked, ApiError> {
        // The caller's clock started with the call: the time spent storing counts.
        let until = tokio::time::Instant::now() + wait.min(MAX_CHECK_WAIT);
        if wait < MIN_CHECK_WAIT {
            return Err(ApiError::bad_field(
                "timeout",
                format!(
                    "a check needs a deadline of at least {} ms to answer with its batch",
                    MIN_CHECK_WAIT.as_millis()
                ),
            ));
        }
        let number = input.phone_number;
        if number.trim().is_empty() {
            return Err(ApiError::bad_field(
                "phone_number",
                "phone_number is required",
            ));
        }
        if number.contains('\0') || number.chars().count() > MAX_ENTRY_CHARS {
            return Err(ApiError::bad_field(
                "phone_number",
                format!("phone_number must be at most {MAX_ENTRY_CHARS} characters, without NUL"),
            ));
        }
        let region = match input.country_code.trim() {
            "" => None,
            hint => Some(Region::from_hint(hint).ok_or_else(|| {
                ApiError::bad_field(
                    "country_code",
                    format!(
                        "unknown country_code {}: use a region such as \"US\" or a calling code such as \"1\"",
                        quoted_start(hint)
                    ),
                )
            })?),
        };
        let numbers = [number.to_string()];
        let batch = self
            .submit_queued(
                account_id,
                SubmitInput {
                    phone_numbers: &numbers,
                    request_id: input.request_id,
                    default_region: region.as_ref().map_or("", Region::code),
                    force_check: input.force_check,
                    callback_url: "",
                },
                true,
            )
            .await?;
        let batch_id = BatchId(batch.id);
        if batch.completed_at.is_none() {
            self.wait_for_answer(account_id, batch_id, until).await?;
        }
        // What the batch holds now: the answer, or PENDING when the wait ran out.
        let polled = self.poll_inner(account_id, batch_id).await?;
        let result = polled
            .results
            .into_iter()
            .next()
            .ok_or(ApiError::NotFound)?;
        Ok(Checked {
            batch: polled.batch,
            result,
        })
    }

    /// Follows the batch's results until its number is answered or `wait` runs out.
    async fn wait_for_answer(
        &self,
        account_id: Uuid,
        batch: BatchId,
        until: tokio::time::Instant,
    ) -> Result<(), ApiError> {
        let mut events = self.watch_inner(account_id, batch).await?;
        let answered = async {
            while let Some(event) = events.next().await {
                match event {
                    Ok(WatchEvent::Result(r)) if r.state == NumberState::Pending => {}
                    // Answered, or the watch ended (shutdown): the caller gets what the
                    // batch holds, with its id, either way.
                    _ => break,
                }
            }
        };
        let _ = tokio::time::timeout_at(until, answered).await;
        Ok(())
    }
}
