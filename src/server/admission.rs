//! What a request passes before its body is read. On our API, its key in the headers
//! (`authorization`, `x-api-key`) or the query (`api_key`) is checked first, so an unknown
//! key never gets a byte of its body read; a request whose key may be in its body is read
//! whole within a budget of bytes shared by every such request, and refused while the
//! budget is spent; and every body must arrive within the body timeout. Requests that
//! take no key (health, reflection, metrics) stream their bodies within the same budget.
//! A request's `AuthMark` says whose key was checked, here or by its handler: only such
//! requests keep a connection from being evicted (`connections`).
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::response::{IntoResponse, Response};
use http::Request;
use http_body::Body as _;
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;
use crate::service::{AuthMark, KeySources, Peer, ValidationService};

/// Largest body buffered before authentication: a gRPC message at its limit and its frame
/// header, or a JSON body at its limit.
const MAX_BUFFERED: usize = crate::grpc::MAX_MESSAGE_BYTES + 1024;
/// The budget is counted in KiB, so it fits a semaphore's permits with room to spare.
const UNIT: usize = 1024;

pub struct Gate {
    core: Option<Arc<ValidationService>>,
    budget: Arc<Semaphore>,
    body_timeout: Duration,
}

/// What the request holds while it is served: its share of the unauthenticated budget.
pub type Held = Option<OwnedSemaphorePermit>;

/// A request let through, and what it holds meanwhile.
pub type Passed = (Request<Body>, Held);

impl Gate {
    /// `core` is None on a worker-only process (no API routes to guard).
    pub fn new(
        core: Option<Arc<ValidationService>>,
        unauthenticated_bytes: usize,
        body_timeout: Duration,
    ) -> Gate {
        Gate {
            core,
            budget: Arc::new(Semaphore::new((unauthenticated_bytes / UNIT).max(1))),
            body_timeout,
        }
    }

    /// The request to serve, with what it holds meanwhile, or the answer refusing it.
    pub async fn admit<B>(&self, req: Request<B>, peer: Peer) -> Result<Passed, Response>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        parts.extensions.insert(peer);
        let path = parts.uri.path();
        let Some(core) = self.core.as_ref().filter(|_| guarded(path)) else {
            // No key to check: the body streams within the budget, and (but for
            // reflection's streams, open as long as grpcurl wants) within the timeout.
            let reflection = path.starts_with("/grpc.reflection.");
            let body = Budgeted::new(body, self.budget.clone());
            let body = if reflection {
                Body::new(body)
            } else {
                Body::new(Deadline::new(body, self.body_timeout))
            };
            return Ok((Request::from_parts(parts, body), None));
        };
        let body = Deadline::new(body, self.body_timeout);
        let grpc = is_grpc(&parts.headers);
        let refuse = |err: ApiError| {
            if grpc {
                status_response(err)
            } else {
                err.into_response()
            }
        };
        let query_key = query_key(&parts.uri);
        let headers_key =
            parts.headers.contains_key("authorization") || parts.headers.contains_key("x-api-key");
        if headers_key || query_key.is_some() {
            let keys = KeySources::from_headers(&parts.headers, query_key.as_deref().unwrap_or(""))
                .with_peer(Some(&peer));
            let known = core.pre_authenticate(keys).await.map_err(refuse)?;
            if let Some(mark) = parts.extensions.get::<AuthMark>() {
                mark.set(known.account);
            }
            parts.extensions.insert(known);
            return Ok((Request::from_parts(parts, Body::new(body)), None));
        }
        if body.is_end_stream() {
            // No key anywhere but perhaps the body, and no body: the handler refuses it.
            return Ok((Request::from_parts(parts, Body::new(body)), None));
        }
        let (bytes, held) = self.buffer(body).await.map_err(refuse)?;
        Ok((Request::from_parts(parts, Body::from(bytes)), Some(held)))
    }

    /// The whole body, each KiB of it taken from the budget as it arrives.
    async fn buffer<B>(
        &self,
        mut body: Deadline<B>,
    ) -> Result<(Bytes, OwnedSemaphorePermit), ApiError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        // A declared length is refused at once when too large, and taken from the budget
        // up front (and allocated once) when not.
        let declared = body.size_hint().exact().unwrap_or(0) as usize;
        if declared > MAX_BUFFERED {
            return Err(too_large());
        }
        let units = declared.div_ceil(UNIT).max(1) as u32;
        let mut held = self
            .budget
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| busy())?;
        let mut buf = Vec::with_capacity(declared);
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|err| match err.downcast_ref::<TimedOut>() {
                Some(_) => ApiError::SlowBody(self.body_timeout),
                None => ApiError::InvalidArgument("the request body could not be read".into()),
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > MAX_BUFFERED {
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
            let want = buf.len().div_ceil(UNIT) as u32;
            if want > held.num_permits() as u32 {
                let more = self
                    .budget
                    .clone()
                    .try_acquire_many_owned(want - held.num_permits() as u32)
                    .map_err(|_| busy())?;
                held.merge(more);
            }
        }
        Ok((Bytes::from(buf), held))
    }
}

fn too_large() -> ApiError {
    ApiError::TooLarge(format!("request body larger than {MAX_BUFFERED} bytes"))
}

fn busy() -> ApiError {
    metrics::counter!("wav_unauthenticated_bodies_refused_total").increment(1);
    ApiError::Busy(
        "the server is busy reading other requests' bodies: retry, or send your key in the authorization or x-api-key header"
            .into(),
    )
}

/// The query's `api_key`, when it names one key (two different ones are the handler's
/// to refuse).
fn query_key(uri: &http::Uri) -> Option<String> {
    let mut keys = form_urlencoded::parse(uri.query()?.as_bytes())
        .filter(|(name, _)| name == "api_key")
        .map(|(_, key)| key.trim().to_string());
    let first = keys.next().filter(|k| !k.is_empty())?;
    keys.all(|k| k == first).then_some(first)
}

/// Our API: the gRPC service and the JSON routes.
fn guarded(path: &str) -> bool {
    path.starts_with("/wavalidation.v1.WaValidationService/") || path.starts_with("/api/")
}

fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/grpc"))
}

/// An API error as a gRPC answer (trailers-only), for a request refused before tonic saw it.
fn status_response(err: ApiError) -> Response {
    tonic::Status::from(err).into_http::<Body>()
}

/// A request body that takes each KiB it brings from the unauthenticated budget, kept
/// until the request ends; past the budget it fails (and the request with it).
struct Budgeted<B> {
    inner: Pin<Box<B>>,
    budget: Arc<Semaphore>,
    held: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl<B> Budgeted<B> {
    fn new(inner: B, budget: Arc<Semaphore>) -> Budgeted<B> {
        Budgeted {
            inner: Box::pin(inner),
            budget,
            held: None,
            bytes: 0,
        }
    }
}

impl<B> http_body::Body for Budgeted<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        let frame = match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            Poll::Ready(other) => return Poll::Ready(other.map(|f| f.map_err(Into::into))),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(data) = frame.data_ref() {
            let this = &mut *self;
            this.bytes += data.len();
            let want = this.bytes.div_ceil(UNIT) as u32;
            let have = this.held.as_ref().map_or(0, |h| h.num_permits() as u32);
            if want > have {
                match this.budget.clone().try_acquire_many_owned(want - have) {
                    Ok(more) => match &mut this.held {
                        Some(held) => held.merge(more),
                        None => this.held = Some(more),
                    },
                    Err(_) => return Poll::Ready(Some(Err(Box::new(busy())))),
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The body timed out.
#[derive(Debug)]
struct TimedOut;

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for TimedOut {}

/// A body that must end by a deadline: a request body set when the request arrived (a
/// client trickling it a byte at a time still has to finish), or the response to a
/// request without a key (a health watch, a client that never reads).
pub struct Deadline<B> {
    inner: Pin<Box<B>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Deadline<B> {
    pub fn new(inner: B, timeout: Duration) -> Deadline<B> {
        Deadline {
            inner: Box::pin(inner),
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }
}

impl<B> http_body::Body for Deadline<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        if let Poll::Ready(frame) = self.inner.as_mut().poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(TimedOut)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
