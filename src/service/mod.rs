//! What the API does, over domain types: both transports (`crate::grpc`, `crate::http`)
//! read their wire format, call these, and encode what comes back.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::batch::{
    BatchId, BatchStatus, BatchSummary, Counts, NumberResult, request_fingerprint,
};
use crate::domain::phone::{MAX_BATCH_ENTRIES, MAX_ENTRY_CHARS, Parsed, Region, dedup_entries};
use crate::domain::webhook::{check_callback_target, parse_callback_url};
use crate::error::ApiError;
use crate::metrics::observe;
use crate::runtime::events::EventHub;
use crate::store::Store;
use crate::store::batches::NewBatch;

pub mod auth;
mod check;
mod paging;
pub mod watch;

pub use auth::{AuthMark, Authenticated, KeySources, Peer};
pub use check::{CheckInput, Checked, DEFAULT_CHECK_WAIT, MAX_CHECK_WAIT, MIN_CHECK_WAIT};
pub use paging::PageToken;
pub use watch::WatchStream;

const MAX_REQUEST_ID_CHARS: usize = 256;
const DEFAULT_PAGE_SIZE: i32 = 50;
const MAX_PAGE_SIZE: i32 = 200;

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

/// A page of the account's batches, newest first.
#[derive(Debug)]
pub struct BatchPage {
    pub batches: Vec<BatchSummary>,
    /// For the next page; None on the last one.
    pub next: Option<PageToken>,
}

/// What a cancel did.
#[derive(Debug)]
pub struct Cancelled {
    pub batch: BatchSummary,
    /// Numbers cancelled (and refunded) by this call.
    pub numbers: i64,
}

/// A batch and every result so far, in index order, with counters taken from the results.
#[derive(Debug)]
pub struct BatchResults {
    pub batch: BatchSummary,
    pub results: Vec<NumberResult>,
}

/// The API's settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    pub cache: CachePolicy,
    /// Lets callback URLs point at loopback and private addresses (tests, private deployments).
    pub allow_private_callbacks: bool,
    /// How long a watch waits for a client that stopped reading.
    pub watch_stall: Duration,
    /// Requests per second per API key (bursts of twice that); 0 turns the limit off.
    pub key_rate_per_sec: u32,
    /// Failed authentications per second per peer address (bursts of 4 times that); 0: off.
    pub auth_failures_per_sec: u32,
    /// Watch streams one account may hold open here; 0: no limit.
    pub watches_per_account: usize,
    /// Free entries (invalid, cancelled) an account may have an hour, unless the operator set
    /// its own; 0: none.
    pub free_entries_per_hour: i64,
}

/// The validation service: accounts' batches, from submission to results.
pub struct ValidationService {
    store: Store,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
    config: ServiceConfig,
    limiter: auth::KeyLimiter,
    failures: auth::FailureLimiter,
    watches: watch::WatchSlots,
}

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

fn parse_region(text: &str) -> Result<Option<Region>, ApiError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    Region::parse(text).map(Some).ok_or_else(|| {
        ApiError::bad_field(
            "default_region",
            format!(
                "unknown region {}: use an ISO 3166-1 alpha-2 code such as \"US\" or \"gb\"",
                quoted_start(text)
            ),
        )
    })
}

/// A bad value as an error quotes it: its first 16 characters, so a huge one stays out of
/// the reply.
fn quoted_start(text: &str) -> String {
    let shown: String = text.chars().take(16).collect();
    let cut = if shown.len() < text.len() { "..." } else { "" };
    format!("{shown:?}{cut}")
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

fn check_request_id(request_id: &str) -> Result<Option<&str>, ApiError> {
    let request_id = request_id.trim();
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
    Ok((!request_id.is_empty()).then_some(request_id))
}

impl ValidationService {
    pub fn new(
        store: Store,
        hub: Arc<EventHub>,
        shutdown: CancellationToken,
        config: ServiceConfig,
    ) -> ValidationService {
        ValidationService {
            limiter: auth::KeyLimiter::new(config.key_rate_per_sec),
            failures: auth::FailureLimiter::new(config.auth_failures_per_sec),
            watches: watch::WatchSlots::new(config.watches_per_account),
            store,
            hub,
            shutdown,
            config,
        }
    }

    /// Forgets idle keys' and addresses' rate state, so the limiters' memory follows
    /// active ones only.
    pub fn forget_idle_peers(&self) {
        self.limiter.forget_idle();
        self.failures.forget_idle();
    }

    // The API's operations, each counted and timed by outcome (see crate::metrics).

    /// The account behind the presented key, within the key's request rate.
    pub async fn authenticate(&self, keys: KeySources<'_>) -> Result<Uuid, ApiError> {
        timed(
            "authenticate",
            auth::authenticate(&self.store, &self.limiter, &self.failures, keys),
        )
        .await
    }

    /// The headers' key, checked before the request's body is read (the server's gate).
    pub async fn pre_authenticate(&self, keys: KeySources<'_>) -> Result<Authenticated, ApiError> {
        timed(
            "authenticate",
            auth::authenticate_key(&self.store, &self.limiter, &self.failures, keys),
        )
        .await
    }

    pub async fn submit(
        &self,
        account_id: Uuid,
        input: SubmitInput<'_>,
    ) -> Result<BatchSummary, ApiError> {
        timed("submit", self.submit_queued(account_id, input, false)).await
    }

    /// The batch and every result so far.
    pub async fn poll(&self, account_id: Uuid, batch: BatchId) -> Result<BatchResults, ApiError> {
        timed("poll", self.poll_inner(account_id, batch)).await
    }

    async fn poll_inner(&self, account_id: Uuid, batch: BatchId) -> Result<BatchResults, ApiError> {
        {
            let (row, rows) = self
                .store
                .batch_with_results(account_id, batch.0)
                .await?
                .ok_or(ApiError::NotFound)?;
            let results: Vec<NumberResult> = rows.into_iter().map(NumberResult::from).collect();
            // Counters from the rows of the same snapshot, so they always add up.
            let mut counts = Counts::new(row.total_numbers);
            for r in &results {
                counts.add(r.state);
            }
            let mut batch = BatchSummary::from(row);
            batch.completed = counts.completed;
            batch.failed = counts.failed;
            batch.cancelled = counts.cancelled;
            Ok(BatchResults { batch, results })
        }
    }

    /// Starts streaming a batch's results; the stream ends after the completed event.
    /// A client's watch, within the account's number of open watches.
    pub async fn watch(&self, account_id: Uuid, batch: BatchId) -> Result<WatchStream, ApiError> {
        timed("watch", async {
            let slot = self.watches.take(account_id)?;
            Ok(slot.hold(self.watch_inner(account_id, batch).await?))
        })
        .await
    }

    async fn watch_inner(&self, account_id: Uuid, batch: BatchId) -> Result<WatchStream, ApiError> {
        {
            let row = self
                .store
                .batch(account_id, batch.0)
                .await?
                .ok_or(ApiError::NotFound)?;
            Ok(watch::start(
                self.store.clone(),
                self.hub.clone(),
                row.id,
                row.total_numbers,
                self.shutdown.clone(),
                self.config.watch_stall,
            ))
        }
    }

    pub async fn balance(&self, account_id: Uuid) -> Result<i64, ApiError> {
        timed("balance", async {
            Ok(self.store.balance(account_id).await?)
        })
        .await
    }

    /// A page of the account's batches, newest first (`page_size` 0: the default).
    pub async fn list(
        &self,
        account_id: Uuid,
        page_size: i32,
        after: Option<PageToken>,
        status: Option<BatchStatus>,
    ) -> Result<BatchPage, ApiError> {
        timed("list", async {
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
            let completed = status.map(|s| s == BatchStatus::Completed);
            // One extra row tells whether another page exists.
            let mut rows = self
                .store
                .list_batches(
                    account_id,
                    completed,
                    after.map(|t| (t.created_at, t.id)),
                    size as i64 + 1,
                )
                .await?;
            let next = (rows.len() > size as usize).then(|| {
                rows.truncate(size as usize);
                let last = rows.last().expect("a full page");
                PageToken {
                    created_at: last.created_at,
                    id: last.id,
                }
            });
            Ok(BatchPage {
                batches: rows.into_iter().map(BatchSummary::from).collect(),
                next,
            })
        })
        .await
    }

    /// Cancels the batch's unchecked numbers, refunding them once.
    pub async fn cancel(&self, account_id: Uuid, batch: BatchId) -> Result<Cancelled, ApiError> {
        timed("cancel", async {
            let (row, cancelled) = self
                .store
                .cancel_batch(account_id, batch.0)
                .await?
                .ok_or(ApiError::NotFound)?;
            if cancelled > 0 {
                tracing::info!(%batch, cancelled, "batch cancelled");
                metrics::counter!("wav_credits_refunded_total", "reason" => "cancelled")
                    .increment(cancelled as u64);
            }
            Ok(Cancelled {
                batch: row.into(),
                numbers: cancelled,
            })
        })
        .await
    }

    /// Stores a submission; `ahead` queues its numbers before all queued batch work
    /// (a caller is waiting for them).
    async fn submit_queued(
        &self,
        account_id: Uuid,
        input: SubmitInput<'_>,
        ahead: bool,
    ) -> Result<BatchSummary, ApiError> {
        check_entries(input.phone_numbers)?;
        let region = parse_region(input.default_region)?;
        let request_id = check_request_id(input.request_id)?;
        let callback_url = input.callback_url.trim();
        if !callback_url.is_empty() {
            let url = parse_callback_url(callback_url)
                .map_err(|e| ApiError::bad_field("callback_url", e))?;
            check_callback_target(&url, self.config.allow_private_callbacks)
                .await
                .map_err(|e| ApiError::bad_field("callback_url", e))?;
        }
        // libphonenumber costs ~8 ms per 1,000 numbers: off the async threads, so
        // watch streams and other requests keep moving meanwhile.
        let numbers = input.phone_numbers.to_vec();
        let entries = tokio::task::spawn_blocking(move || dedup_entries(&numbers, region))
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("parsing numbers failed: {e}")))?;
        let cache = self.config.cache;
        let cached = if input.force_check || cache.ttl.is_zero() {
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
                .cached_answers(cache.backend, &valid, cache.ttl)
                .await?
        };
        let batch = self
            .store
            .submit_batch(NewBatch {
                account_id,
                request_id,
                fingerprint: request_fingerprint(
                    input.phone_numbers,
                    input.default_region,
                    input.force_check,
                    callback_url,
                ),
                entries: &entries,
                cached: &cached,
                callback_url: (!callback_url.is_empty()).then_some(callback_url),
                ahead,
                free_per_hour: self.config.free_entries_per_hour,
            })
            .await?;
        tracing::info!(batch_id = %batch.id, %account_id, total = batch.total_numbers, "batch submitted");
        metrics::counter!("wav_numbers_submitted_total").increment(batch.total_numbers as u64);
        metrics::counter!("wav_cache_hits_total").increment(cached.len() as u64);
        metrics::counter!("wav_credits_charged_total").increment(batch.credits_charged as u64);
        metrics::counter!("wav_credits_refunded_total", "reason" => "invalid")
            .increment(batch.credits_refunded as u64);
        Ok(batch.into())
    }
}
