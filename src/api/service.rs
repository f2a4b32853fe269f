//! `wavalidation.v1.WaValidationService`: parse, authenticate, delegate.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::auth::authenticate;
use super::convert::{Counts, batch_status, number_result, timestamp};
use super::watch;
use crate::domain::batch::{parse_batch_id, request_fingerprint};
use crate::domain::phone::{MAX_BATCH_ENTRIES, MAX_ENTRY_CHARS, Parsed, Region, dedup_entries};
use crate::error::ApiError;
use crate::events::EventHub;
use crate::pb::{self, wa_validation_service_server::WaValidationService};
use crate::store::Store;
use crate::store::batches::NewBatch;

const MAX_REQUEST_ID_CHARS: usize = 256;
/// Results buffered per watch stream; a slower client holds the sender back instead of growing memory.
const WATCH_BUFFER: usize = 128;

/// Which cached answers a submission may reuse.
#[derive(Debug, Clone, Copy)]
pub struct CachePolicy {
    /// The configured checker backend: answers from another backend are never reused.
    pub backend: &'static str,
    pub ttl: Duration,
}

pub struct Service {
    store: Store,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
    cache: CachePolicy,
}

impl Service {
    pub fn new(
        store: Store,
        hub: Arc<EventHub>,
        shutdown: CancellationToken,
        cache: CachePolicy,
    ) -> Service {
        Service {
            store,
            hub,
            shutdown,
            cache,
        }
    }
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
        n if n > MAX_BATCH_ENTRIES => {
            return Err(ApiError::bad_field(
                "phone_numbers",
                format!(
                    "{n} entries submitted; a batch holds at most {MAX_BATCH_ENTRIES}: split the list"
                ),
            ));
        }
        _ => {}
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

#[tonic::async_trait]
impl WaValidationService for Service {
    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = authenticate(&self.store, &metadata, &req.api_key).await?;
        check_entries(&req.phone_numbers)?;
        let region = parse_region(&req.default_region)?;
        let request_id = req.request_id.trim();
        if request_id.chars().count() > MAX_REQUEST_ID_CHARS {
            return Err(ApiError::bad_field(
                "request_id",
                format!("request_id is longer than {MAX_REQUEST_ID_CHARS} characters"),
            )
            .into());
        }
        let entries = dedup_entries(&req.phone_numbers, region);
        let cached = if req.force_check {
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
                .await
                .map_err(ApiError::from)?
        };
        let batch = self
            .store
            .submit_batch(NewBatch {
                account_id,
                request_id: (!request_id.is_empty()).then_some(request_id),
                fingerprint: request_fingerprint(
                    &req.phone_numbers,
                    &req.default_region,
                    req.force_check,
                ),
                entries: &entries,
                cached: &cached,
            })
            .await?;
        tracing::info!(batch_id = %batch.id, %account_id, total = batch.total_numbers, "batch submitted");
        Ok(Response::new(pb::SubmitBatchResponse {
            batch_id: batch.id.to_string(),
            total_numbers: batch.total_numbers,
            status: batch_status(&batch) as i32,
        }))
    }

    async fn poll_batch(
        &self,
        request: Request<pb::PollBatchRequest>,
    ) -> Result<Response<pb::PollBatchResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = authenticate(&self.store, &metadata, &req.api_key).await?;
        let batch_id = parse_id(&req.batch_id)?;
        let (batch, rows) = self
            .store
            .batch_with_results(account_id, batch_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound)?;
        let counts = Counts::of(rows.iter().map(|r| r.state()));
        Ok(Response::new(pb::PollBatchResponse {
            batch_id: batch.id.to_string(),
            status: batch_status(&batch) as i32,
            total_numbers: batch.total_numbers,
            completed: counts.completed,
            failed: counts.failed,
            pending: batch.total_numbers - counts.completed - counts.failed,
            results: rows.iter().map(number_result).collect(),
            created_at: Some(timestamp(batch.created_at)),
            completed_at: batch.completed_at.map(timestamp),
            credits_charged: batch.credits_charged,
            credits_refunded: batch.credits_refunded,
        }))
    }

    type WatchBatchStream = ReceiverStream<Result<pb::WatchBatchResponse, Status>>;

    async fn watch_batch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = authenticate(&self.store, &metadata, &req.api_key).await?;
        let batch_id = parse_id(&req.batch_id)?;
        let batch = self
            .store
            .batch(account_id, batch_id)
            .await
            .map_err(ApiError::from)?
            .ok_or(ApiError::NotFound)?;
        let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
        tokio::spawn(watch::stream_batch(
            self.store.clone(),
            self.hub.clone(),
            batch,
            tx,
            self.shutdown.clone(),
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = authenticate(&self.store, &metadata, &req.api_key).await?;
        let credits = self
            .store
            .balance(account_id)
            .await
            .map_err(ApiError::from)?;
        Ok(Response::new(pb::GetBalanceResponse { credits }))
    }
}
