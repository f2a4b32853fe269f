//! The tonic service: authenticate, read the request, call the core, encode the reply.
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use super::convert;
use crate::domain::batch::BatchId;
use crate::pb::{self, wa_validation_service_server::WaValidationService};
use crate::service::{
    CheckInput, DEFAULT_CHECK_WAIT, KeySources, PageToken, SubmitInput, ValidationService,
};

pub struct GrpcService {
    core: Arc<ValidationService>,
}

impl GrpcService {
    pub fn new(core: Arc<ValidationService>) -> GrpcService {
        GrpcService { core }
    }

    /// The account of the request's key (its `api_key` field, or the metadata).
    async fn caller<T: WithApiKey>(&self, request: &Request<T>) -> Result<Uuid, Status> {
        let keys = KeySources::from_metadata(request.metadata(), request.get_ref().api_key())
            .with_extensions(request.extensions());
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
    pb::CancelBatchRequest,
    pb::CheckNumberRequest
);

/// How long a CheckNumber may wait: the default unless the call's own deadline
/// (`grpc-timeout`) is sooner, less a margin for the answer to reach the client in time.
fn check_wait(metadata: &tonic::metadata::MetadataMap) -> Duration {
    let Some(deadline) = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    else {
        return DEFAULT_CHECK_WAIT;
    };
    let margin = (deadline / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    deadline.saturating_sub(margin)
}

/// The gRPC wire form of a deadline: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    if !text.is_ascii() {
        return None;
    }
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

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

    async fn check_number(
        &self,
        request: Request<pb::CheckNumberRequest>,
    ) -> Result<Response<pb::CheckNumberResponse>, Status> {
        let account = self.caller(&request).await?;
        let wait = check_wait(request.metadata());
        let req = request.into_inner();
        let checked = self
            .core
            .check_number(
                account,
                CheckInput {
                    phone_number: &req.phone_number,
                    country_code: &req.country_code,
                    request_id: &req.request_id,
                    force_check: req.force_check,
                },
                wait,
            )
            .await?;
        Ok(Response::new(convert::check_response(checked)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_grpc_deadlines() {
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_grpc_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            "",
            "S",
            "5",
            "5s",
            "123456789S",
            "-1S",
            "1.5S",
            "５S",
            "S５",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
        let mut metadata = tonic::metadata::MetadataMap::new();
        assert_eq!(check_wait(&metadata), DEFAULT_CHECK_WAIT);
        metadata.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(check_wait(&metadata), Duration::from_millis(1800));
        metadata.insert("grpc-timeout", "1H".parse().unwrap());
        assert_eq!(check_wait(&metadata), Duration::from_secs(3599));
    }
}
