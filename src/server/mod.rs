//! One listener for gRPC (HTTP/2) and the JSON API (HTTP/1.1 or 2): hyper's
//! auto connection builder in front of one axum router, with HTTP/2 keepalive,
//! optional TLS (rustls), and a graceful drain on shutdown. The edge limits what anyone
//! without a key can hold: connections (`connections`), time to send a request head or
//! body, and bodies read before a key is known (`admission`).
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::AuthMark;
use crate::settings::EdgeSettings;
use admission::Gate;
use connections::{Admitted, Closing, Connections};

mod admission;
mod connections;

/// How long open connections get to finish after shutdown begins.
const DRAIN: Duration = Duration::from_secs(10);
/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// TLS from PEM files: a certificate chain and its private key. ALPN offers h2 and http/1.1.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("cannot read the TLS key {}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| anyhow::anyhow!("the TLS certificate and key do not fit together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The connection and request limits of the public edge (`EdgeSettings`, made concrete).
pub struct Edge {
    pub connections: Arc<Connections>,
    pub gate: Arc<Gate>,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub h2_max_streams: u32,
}

impl Edge {
    /// From the settings; the connection cap stays below the open-file limit (raised to
    /// the system's maximum first), keeping room for database connections and the rest.
    pub fn new(
        settings: &EdgeSettings,
        core: Option<Arc<crate::service::ValidationService>>,
        reserved_files: u64,
    ) -> Edge {
        let files = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
        let room = files.saturating_sub(reserved_files + 64).max(16) as usize;
        let cap = settings.max_connections.min(room);
        if cap < settings.max_connections {
            tracing::info!(
                cap,
                open_files = files,
                "connection cap lowered to fit the open-file limit"
            );
        }
        Edge {
            connections: Connections::new(cap),
            gate: Arc::new(Gate::new(
                core,
                settings.unauthenticated_body_bytes,
                settings.body_timeout,
            )),
            header_timeout: settings.header_timeout,
            idle_timeout: settings.idle_timeout,
            h2_max_streams: settings.h2_max_streams,
        }
    }
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    edge: Edge,
    tls: Option<TlsAcceptor>,
    shutdown: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // A client that sends no complete request head for this long (silent, or trickling
    // it) is cut off; so is one idle between requests (`Activity`).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(edge.header_timeout);
    // Load balancers cut idle connections; pings keep long watch streams alive and find dead peers.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10))
        // Streams one connection may have open: each may carry a message of up to 1 MiB.
        .max_concurrent_streams(edge.h2_max_streams)
        // What one stream may queue for a client that is not reading: bounds memory per stream.
        .max_send_buf_size(64 * 1024);
    let edge = Arc::new(edge);
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(admitted) = edge.connections.admit() else {
            // Every connection has a request in flight: this one waits for none.
            metrics::counter!("wav_connections_refused_total").increment(1);
            tracing::debug!("connection refused: every open connection is busy");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = ConnService {
            router: router.clone(),
            edge: edge.clone(),
            activity: admitted.activity.clone(),
            peer: crate::service::Peer(peer.ip()),
        };
        let (builder, shutdown, edge) = (builder.clone(), shutdown.clone(), edge.clone());
        match tls.clone() {
            None => {
                tracker.spawn(async move {
                    drive(builder, service, admitted, &edge, &shutdown, stream).await
                });
            }
            Some(acceptor) => {
                tracker.spawn(async move {
                    // Evicted mid-handshake, the socket closes now, not at the timeout.
                    let activity = admitted.activity.clone();
                    let handshake = tokio::select! {
                        done = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)) => done,
                        _ = activity.evicted() => return,
                    };
                    match handshake {
                        Ok(Ok(stream)) => {
                            drive(builder, service, admitted, &edge, &shutdown, stream).await
                        }
                        Ok(Err(err)) => tracing::debug!(error = %err, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the drain period; closing them");
    }
}

/// Serves one connection until it ends; shutdown, eviction or idleness close it
/// gracefully (requests in flight finish; HTTP/2 gets a GOAWAY).
async fn drive<S>(
    builder: Builder<TokioExecutor>,
    service: ConnService,
    admitted: Admitted,
    edge: &Edge,
    shutdown: &CancellationToken,
    stream: S,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(conn);
    let activity = admitted.activity.clone();
    let closing = async move {
        tokio::select! {
            _ = shutdown.cancelled() => Closing::Idle,
            why = activity.until_closing(edge.idle_timeout) => why,
            // A response its client has not taken for the idle timeout (no window granted,
            // nothing read): the connection holds it for no one.
            _ = activity.until_stalled(edge.idle_timeout) => Closing::Evicted,
        }
    };
    tokio::pin!(closing);
    let mut closed = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "connection ended with an error");
                }
                break;
            }
            why = &mut closing, if !closed => {
                closed = true;
                if why == Closing::Evicted {
                    // Its requests are unauthenticated (or none): cut, not drained.
                    break;
                }
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    // Only now is its place among the open connections free.
    drop(admitted);
}

/// One connection's service: each request is marked in flight until its response body
/// ends, passes the gate, then reaches the router.
#[derive(Clone)]
struct ConnService {
    router: Router,
    edge: Arc<Edge>,
    activity: Arc<connections::Activity>,
    peer: crate::service::Peer,
}

impl tower::Service<http::Request<hyper::body::Incoming>> for ConnService {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut in_flight = self.activity.begin();
        let mark = AuthMark::default();
        req.extensions_mut().insert(mark.clone());
        let this = self.clone();
        Box::pin(async move {
            use tower::ServiceExt;
            let resp = match this.edge.gate.admit(req, this.peer).await {
                Ok((req, held)) => {
                    // A key checked before the body protects the connection at once; one
                    // in the body, once the handler has checked it.
                    if let Some(account) = mark.get() {
                        in_flight.protect(account);
                    }
                    let resp = this.router.oneshot(req).await?;
                    drop(held);
                    if let Some(account) = mark.get() {
                        in_flight.protect(account);
                    }
                    resp
                }
                Err(refused) => refused,
            };
            // Without a checked key (or past its account's share of protected requests), a
            // request lives at most the idle timeout, its response included.
            let resp = if in_flight.is_protected() {
                resp
            } else {
                let limit = this.edge.idle_timeout;
                resp.map(|body| axum::body::Body::new(admission::Deadline::new(body, limit)))
            };
            // The connection stays busy until the response body ends (a watch stream), and
            // the body tells whether its client keeps taking it.
            Ok(resp.map(|body| axum::body::Body::new(connections::Tracked::new(body, in_flight))))
        })
    }
}
