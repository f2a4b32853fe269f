//! `wavalidation.v1.WaValidationService`: read the request, delegate to `Ops`, shape the reply.
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::KeySources;
use super::convert::{Counts, batch_status, batch_summary, number_result, timestamp};
use super::ops::{Ops, SubmitInput};
use super::watch::WatchStream;
use crate::pb::{self, wa_validation_service_server::WaValidationService};

pub struct Service {
    ops: Arc<Ops>,
}

impl Service {
    pub fn new(ops: Arc<Ops>) -> Service {
        Service { ops }
    }
}

#[tonic::async_trait]
impl WaValidationService for Service {
    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = self
            .ops
            .authenticate(KeySources::from_metadata(&metadata, &req.api_key))
            .await?;
        let batch = self
            .ops
            .submit(
                account_id,
                SubmitInput {
                    phone_numbers: &req.phone_numbers,
                    request_id: &req.request_id,
                    default_region: &req.default_region,
                    force_check: req.force_check,
                    callback_url: &req.callback_url,
                },
            )
            .await?;
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
        let account_id = self
            .ops
            .authenticate(KeySources::from_metadata(&metadata, &req.api_key))
            .await?;
        let (batch, rows) = self.ops.poll(account_id, &req.batch_id).await?;
        let counts = Counts::of(rows.iter().map(|r| r.state()));
        Ok(Response::new(pb::PollBatchResponse {
            batch_id: batch.id.to_string(),
            status: batch_status(&batch) as i32,
            total_numbers: batch.total_numbers,
            completed: counts.completed,
            failed: counts.failed,
            cancelled: counts.cancelled,
            pending: counts.pending(batch.total_numbers),
            results: rows.iter().map(number_result).collect(),
            created_at: Some(timestamp(batch.created_at)),
            completed_at: batch.completed_at.map(timestamp),
            credits_charged: batch.credits_charged,
            credits_refunded: batch.credits_refunded,
        }))
    }

    type WatchBatchStream = WatchStream;

    async fn watch_batch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = self
            .ops
            .authenticate(KeySources::from_metadata(&metadata, &req.api_key))
            .await?;
        let events = self.ops.watch(account_id, &req.batch_id).await?;
        Ok(Response::new(events))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = self
            .ops
            .authenticate(KeySources::from_metadata(&metadata, &req.api_key))
            .await?;
        let credits = self.ops.balance(account_id).await?;
        Ok(Response::new(pb::GetBalanceResponse { credits }))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = self
            .ops
            .authenticate(KeySources::from_metadata(&metadata, &req.api_key))
            .await?;
        let completed = match pb::BatchStatus::try_from(req.status) {
            Ok(pb::BatchStatus::Completed) => Some(true),
            Ok(pb::BatchStatus::Processing) => Some(false),
            _ => None,
        };
        let (batches, next_page_token) = self
            .ops
            .list(account_id, req.page_size, &req.page_token, completed)
            .await?;
        Ok(Response::new(pb::ListBatchesResponse {
            batches: batches.iter().map(batch_summary).collect(),
            next_page_token,
        }))
    }

    async fn cancel_batch(
        &self,
        request: Request<pb::CancelBatchRequest>,
    ) -> Result<Response<pb::CancelBatchResponse>, Status> {
        let (metadata, _, req) = request.into_parts();
        let account_id = self
            .ops
            .authenticate(KeySources::from_metadata(&metadata, &req.api_key))
            .await?;
        let (batch, cancelled) = self.ops.cancel(account_id, &req.batch_id).await?;
        Ok(Response::new(pb::CancelBatchResponse {
            batch: Some(batch_summary(&batch)),
            cancelled_numbers: cancelled as i32,
            credits_refunded: cancelled,
        }))
    }
}
