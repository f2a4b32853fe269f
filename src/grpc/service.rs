//! The tonic service: authenticate, read the request, call the core, encode the reply.
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert;
use crate::domain::batch::BatchId;
use crate::pb::{self, wa_validation_service_server::WaValidationService};
use crate::service::{KeySources, PageToken, SubmitInput, ValidationService};

pub struct GrpcService {
    core: Arc<ValidationService>,
}

impl GrpcService {
    pub fn new(core: Arc<ValidationService>) -> GrpcService {
        GrpcService { core }
    }

    /// The account of the request's key (its `api_key` field, or the metadata).
    async fn caller<T: WithApiKey>(&self, request: &Request<T>) -> Result<Uuid, Status> {
        let keys = KeySources::from_metadata(request.metadata(), request.get_ref().api_key());
        Ok(self.core.authenticate(keys).await?)
    }
}

/// Every request message carries an optional `api_key`.
trait WithApiKey {
    fn api_key(&self) -> &str;
}

macro_rules! with_api_key {
    ($($request:ty),*) => {
        $(impl WithApiKey for $request {
            fn api_key(&self) -> &str {
                &self.api_key
            }
        })*
    };
}

with_api_key!(
    pb::SubmitBatchRequest,
    pb::PollBatchRequest,
    pb::WatchBatchRequest,
    pb::GetBalanceRequest,
    pb::ListBatchesRequest,
    pb::CancelBatchRequest
);

type WatchEvents = Pin<Box<dyn Stream<Item = Result<pb::WatchBatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WaValidationService for GrpcService {
    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let account = self.caller(&request).await?;
        let req = request.into_inner();
        let batch = self
            .core
            .submit(
                account,
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
            status: convert::status(batch.status) as i32,
        }))
    }

    async fn poll_batch(
        &self,
        request: Request<pb::PollBatchRequest>,
    ) -> Result<Response<pb::PollBatchResponse>, Status> {
        let account = self.caller(&request).await?;
        let batch = BatchId::parse(&request.get_ref().batch_id)?;
        let polled = self.core.poll(account, batch).await?;
        Ok(Response::new(convert::poll_response(polled)))
    }

    type WatchBatchStream = WatchEvents;

    async fn watch_batch(
        &self,
        request: Request<pb::WatchBatchRequest>,
    ) -> Result<Response<Self::WatchBatchStream>, Status> {
        let account = self.caller(&request).await?;
        let batch = BatchId::parse(&request.get_ref().batch_id)?;
        let events = self.core.watch(account, batch).await?;
        Ok(Response::new(Box::pin(events.map(|item| {
            item.map(convert::watch_event).map_err(Status::from)
        }))))
    }

    async fn get_balance(
        &self,
        request: Request<pb::GetBalanceRequest>,
    ) -> Result<Response<pb::GetBalanceResponse>, Status> {
        let account = self.caller(&request).await?;
        let credits = self.core.balance(account).await?;
        Ok(Response::new(pb::GetBalanceResponse { credits }))
    }

    async fn list_batches(
        &self,
        request: Request<pb::ListBatchesRequest>,
    ) -> Result<Response<pb::ListBatchesResponse>, Status> {
        let account = self.caller(&request).await?;
        let req = request.into_inner();
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(PageToken::parse(token)?),
        };
        let page = self
            .core
            .list(
                account,
                req.page_size,
                after,
                convert::status_filter(req.status),
            )
            .await?;
        Ok(Response::new(convert::list_response(page)))
    }

    async fn cancel_batch(
        &self,
        request: Request<pb::CancelBatchRequest>,
    ) -> Result<Response<pb::CancelBatchResponse>, Status> {
        let account = self.caller(&request).await?;
        let batch = BatchId::parse(&request.get_ref().batch_id)?;
        let cancelled = self.core.cancel(account, batch).await?;
        Ok(Response::new(convert::cancel_response(cancelled)))
    }
}
