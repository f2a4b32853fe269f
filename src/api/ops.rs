//! What the API does, shared by the gRPC service and the JSON HTTP API:
//! both parse their wire format, then call these.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::auth::{KeySources, authenticate, presented_key};
use super::watch::{self, WatchStream};
use crate::domain::batch::{parse_batch_id, request_fingerprint};
use crate::domain::phone::{MAX_BATCH_ENTRIES, MAX_ENTRY_CHARS, Parsed, Region, dedup_entries};
use crate::domain::webhook::{check_callback_target, parse_callback_url};
use crate::error::ApiError;
use crate::events::EventHub;
use crate::metrics::observe;
use crate::store::Store;
use crate::store::batches::{BatchRow, NewBatch, ResultRow};

const MAX_REQUEST_ID_CHARS: usize = 256;

async fn timed<T>(
    op: &'static str,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    use tracing::Instrument;
    let started = std::time::Instant::now();
    let result = work.instrument(tracing::info_span!("request", op)).await;
    observe(op, started, &result);
    result
}
const DEFAULT_PAGE_SIZE: i32 = 50;
const MAX_PAGE_SIZE: i32 = 200;

/// Opaque to clients: the last row's position, hex-encoded.
fn encode_page_token(created_at: DateTime<Utc>, id: Uuid) -> String {
    hex::encode(format!("{}/{id}", created_at.timestamp_micros()))
}

fn decode_page_token(token: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let text = String::from_utf8(hex::decode(token).ok()?).ok()?;
    let (micros, id) = text.split_once('/')?;
    Some((
        DateTime::from_timestamp_micros(micros.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}
/// Runs of events (up to 64 each) buffered per watch stream; a slower client holds
/// the sender back instead of growing memory.
const WATCH_BUFFER: usize = 2;

/// Which cached answers a submission may reuse.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// The configured checker backend: answers from another backend are never reused.
    pub backend: &'static str,
    pub ttl: Duration,
}

/// A submission as both APIs receive it.
#[derive(Debug, Default)]
pub struct SubmitInput<'a> {
    pub phone_numbers: &'a [String],
    pub request_id: &'a str,
    pub default_region: &'a str,
    pub force_check: bool,
    pub callback_url: &'a str,
}

/// The API's settings.
#[derive(Debug, Clone)]
pub struct OpsConfig {
    pub cache: CachePolicy,
    /// Lets callback URLs point at loopback and private addresses (tests, private deployments).
    pub allow_private_callbacks: bool,
    /// How long a watch waits for a client that stopped reading.
    pub watch_stall: Duration,
    /// Requests per second per API key (bursts of twice that); 0 turns the limit off.
    pub key_rate_per_sec: u32,
}

type KeyLimiter = governor::DefaultKeyedRateLimiter<Vec<u8>>;

pub struct Ops {
    store: Store,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
    cache: CachePolicy,
    allow_private_callbacks: bool,
    watch_stall: Duration,
    limiter: Option<KeyLimiter>,
}

fn parse_region(text: &str) -> Result<Option<Region>, ApiError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Region::parse(text).map(Some).ok_or_else(|| {
        ApiError::bad_field(
            "default_region",
            format!(
                "unknown region {text:?}: use an ISO 3166-1 alpha-2 code such as \"US\" or \"gb\""
            ),
        )
    })
}

fn parse_id(text: &str) -> Result<Uuid, ApiError> {
    parse_batch_id(text).ok_or_else(|| {
        ApiError::bad_field(
            "batch_id",
            format!("{text:?} is not a batch id: expected a UUID such as 67e55044-10b1-426f-9247-bb680e5fe0c8"),
        )
    })
}

fn check_entries(numbers: &[String]) -> Result<(), ApiError> {
    match numbers.len() {
        0 => {
            return Err(ApiError::bad_field(
                "phone_numbers",
                "at least one phone number is required",
            ));
        }
        n if n > MAX_BATCH_ENTRIES => return Err(ApiError::BatchTooLarge { submitted: n }),
        _ => {}
    }
    // PostgreSQL text cannot hold NUL; say so instead of failing inside the database.
    if let Some(i) = numbers.iter().position(|n| n.contains('\0')) {
        return Err(ApiError::bad_field(
            format!("phone_numbers[{i}]"),
            format!("entry {i} contains a NUL character"),
        ));
    }
    if let Some(i) = numbers
        .iter()
        .position(|n| n.chars().count() > MAX_ENTRY_CHARS)
    {
        return Err(ApiError::bad_field(
            format!("phone_numbers[{i}]"),
            format!("entry {i} is longer than {MAX_ENTRY_CHARS} characters"),
        ));
    }
    Ok(())
}

impl Ops {
    pub fn new(
        store: Store,
        hub: Arc<EventHub>,
        shutdown: CancellationToken,
        config: OpsConfig,
    ) -> Ops {
        let limiter = std::num::NonZeroU32::new(config.key_rate_per_sec).map(|rate| {
            let burst = rate.saturating_mul(std::num::NonZeroU32::new(2).expect("2"));
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        });
        Ops {
            store,
            hub,
            shutdown,
            cache: config.cache,
            allow_private_callbacks: config.allow_private_callbacks,
            watch_stall: config.watch_stall,
            limiter,
        }
    }

    /// The account behind the presented key, within the key's request rate.
    async fn authenticate_inner(&self, keys: KeySources<'_>) -> Result<Uuid, ApiError> {
        let key = presented_key(keys)?;
        let account = authenticate(&self.store, &key).await?;
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check_key(&key.hash())
        {
            use governor::clock::{Clock, DefaultClock};
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(account)
    }

    /// Forgets idle keys' rate state, so the limiter's memory follows active keys only.
    pub fn forget_idle_keys(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    async fn submit_inner(
        &self,
        account_id: Uuid,
        input: SubmitInput<'_>,
    ) -> Result<BatchRow, ApiError> {
        check_entries(input.phone_numbers)?;
        let region = parse_region(input.default_region)?;
        let request_id = input.request_id.trim();
        if request_id.contains('\0') {
            return Err(ApiError::bad_field(
                "request_id",
                "request_id contains a NUL character",
            ));
        }
        if request_id.chars().count() > MAX_REQUEST_ID_CHARS {
            return Err(ApiError::bad_field(
                "request_id",
                format!("request_id is longer than {MAX_REQUEST_ID_CHARS} characters"),
            ));
        }
        let callback_url = input.callback_url.trim();
        if !callback_url.is_empty() {
            let url = parse_callback_url(callback_url)
                .map_err(|e| ApiError::bad_field("callback_url", e))?;
            check_callback_target(&url, self.allow_private_callbacks)
                .await
                .map_err(|e| ApiError::bad_field("callback_url", e))?;
        }
        // libphonenumber costs ~8 ms per 1,000 numbers: off the async threads, so
        // watch streams and other requests keep moving meanwhile.
        let numbers = input.phone_numbers.to_vec();
        let entries = tokio::task::spawn_blocking(move || dedup_entries(&numbers, region))
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("parsing numbers failed: {e}")))?;
        let cached = if input.force_check || self.cache.ttl.is_zero() {
            HashMap::new()
        } else {
            let valid: Vec<&str> = entries
                .iter()
                .filter_map(|e| match &e.parsed {
                    Parsed::Valid(v) => Some(v.e164.as_str()),
                    Parsed::Invalid { .. } => None,
                })
                .collect();
            self.store
                .cached_answers(self.cache.backend, &valid, self.cache.ttl)
                .await?
        };
        let batch = self
            .store
            .submit_batch(NewBatch {
                account_id,
                request_id: (!request_id.is_empty()).then_some(request_id),
                fingerprint: request_fingerprint(
                    input.phone_numbers,
                    input.default_region,
                    input.force_check,
                    callback_url,
                ),
                entries: &entries,
                cached: &cached,
                callback_url: (!callback_url.is_empty()).then_some(callback_url),
            })
            .await?;
        tracing::info!(batch_id = %batch.id, %account_id, total = batch.total_numbers, "batch submitted");
        metrics::counter!("wav_numbers_submitted_total").increment(batch.total_numbers as u64);
        metrics::counter!("wav_cache_hits_total").increment(cached.len() as u64);
        metrics::counter!("wav_credits_charged_total").increment(batch.credits_charged as u64);
        metrics::counter!("wav_credits_refunded_total", "reason" => "invalid")
            .increment(batch.credits_refunded as u64);
        Ok(batch)
    }

    async fn poll_inner(
        &self,
        account_id: Uuid,
        batch_id: &str,
    ) -> Result<(BatchRow, Vec<ResultRow>), ApiError> {
        let batch_id = parse_id(batch_id)?;
        self.store
            .batch_with_results(account_id, batch_id)
            .await?
            .ok_or(ApiError::NotFound)
    }

    /// Starts streaming a batch's results; the receiver ends after the completed event.
    async fn watch_inner(&self, account_id: Uuid, batch_id: &str) -> Result<WatchStream, ApiError> {
        let batch_id = parse_id(batch_id)?;
        let batch = self
            .store
            .batch(account_id, batch_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let stalled = Arc::new(AtomicBool::new(false));
        tokio::spawn(watch::stream_batch(
            self.store.clone(),
            self.hub.clone(),
            batch,
            tx,
            self.shutdown.clone(),
            self.watch_stall,
            stalled.clone(),
        ));
        Ok(watch::client_stream(rx, stalled, self.watch_stall))
    }

    /// A page of the account's batches, newest first, and the token for the next page.
    async fn list_inner(
        &self,
        account_id: Uuid,
        page_size: i32,
        page_token: &str,
        completed: Option<bool>,
    ) -> Result<(Vec<BatchRow>, String), ApiError> {
        let size = match page_size {
            0 => DEFAULT_PAGE_SIZE,
            n if n < 0 => {
                return Err(ApiError::bad_field(
                    "page_size",
                    "page_size must not be negative",
                ));
            }
            n => n.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(decode_page_token(page_token).ok_or_else(|| {
                ApiError::bad_field("page_token", "page_token is not one this API returned")
            })?)
        };
        // One extra row tells whether another page exists.
        let mut rows = self
            .store
            .list_batches(account_id, completed, after, size as i64 + 1)
            .await?;
        let next = if rows.len() > size as usize {
            rows.truncate(size as usize);
            rows.last()
                .map(|b| encode_page_token(b.created_at, b.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows, next))
    }

    /// Cancels the batch's unchecked numbers; returns the batch and how many were cancelled.
    async fn cancel_inner(
        &self,
        account_id: Uuid,
        batch_id: &str,
    ) -> Result<(BatchRow, i64), ApiError> {
        let batch_id = parse_id(batch_id)?;
        let (batch, cancelled) = self
            .store
            .cancel_batch(account_id, batch_id)
            .await?
            .ok_or(ApiError::NotFound)?;
        if cancelled > 0 {
            tracing::info!(%batch_id, cancelled, "batch cancelled");
            metrics::counter!("wav_credits_refunded_total", "reason" => "cancelled")
                .increment(cancelled as u64);
        }
        Ok((batch, cancelled))
    }

    async fn balance_inner(&self, account_id: Uuid) -> Result<i64, ApiError> {
        Ok(self.store.balance(account_id).await?)
    }

    // The API's operations, each counted and timed by outcome (see crate::metrics).

    /// The account behind the presented key, within the key's request rate.
    pub async fn authenticate(&self, keys: KeySources<'_>) -> Result<Uuid, ApiError> {
        timed("authenticate", self.authenticate_inner(keys)).await
    }

    pub async fn submit(
        &self,
        account_id: Uuid,
        input: SubmitInput<'_>,
    ) -> Result<BatchRow, ApiError> {
        timed("submit", self.submit_inner(account_id, input)).await
    }

    pub async fn poll(
        &self,
        account_id: Uuid,
        batch_id: &str,
    ) -> Result<(BatchRow, Vec<ResultRow>), ApiError> {
        timed("poll", self.poll_inner(account_id, batch_id)).await
    }

    /// Starts streaming a batch's results; the stream ends after the completed event.
    pub async fn watch(&self, account_id: Uuid, batch_id: &str) -> Result<WatchStream, ApiError> {
        timed("watch", self.watch_inner(account_id, batch_id)).await
    }

    pub async fn balance(&self, account_id: Uuid) -> Result<i64, ApiError> {
        timed("balance", self.balance_inner(account_id)).await
    }

    /// A page of the account's batches, newest first, and the token for the next page.
    pub async fn list(
        &self,
        account_id: Uuid,
        page_size: i32,
        page_token: &str,
        completed: Option<bool>,
    ) -> Result<(Vec<BatchRow>, String), ApiError> {
        timed(
            "list",
            self.list_inner(account_id, page_size, page_token, completed),
        )
        .await
    }

    /// Cancels the batch's unchecked numbers; returns the batch and how many were cancelled.
    pub async fn cancel(
        &self,
        account_id: Uuid,
        batch_id: &str,
    ) -> Result<(BatchRow, i64), ApiError> {
        timed("cancel", self.cancel_inner(account_id, batch_id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_reject_garbage() {
        let at = DateTime::from_timestamp_micros(1_780_000_000_123_456).unwrap();
        let id = Uuid::new_v4();
        assert_eq!(
            decode_page_token(&encode_page_token(at, id)),
            Some((at, id))
        );
        assert_eq!(decode_page_token("zz"), None);
        assert_eq!(decode_page_token(&hex::encode("x/y")), None);
    }
}
