//! Prometheus metrics, served on `/metrics` beside the APIs.
//!
//! Counters and histograms are recorded where things happen; gauges that live in
//! PostgreSQL (queue depth, oldest queued age) are read when the page is scraped.
use std::sync::OnceLock;
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::ApiError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide recorder; installed once, shared by every server in the process.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
            .expect("static buckets")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder (a test harness) may already be installed; then ours only renders.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The Prometheus page: recorded metrics plus gauges read now.
pub async fn page(store: &crate::store::Store, hub: &crate::runtime::events::EventHub) -> String {
    metrics::gauge!("wav_watchers").set(hub.watchers() as f64);
    match store.queue_stats().await {
        Ok((depth, oldest)) => {
            metrics::gauge!("wav_queue_depth").set(depth as f64);
            metrics::gauge!("wav_queue_oldest_seconds").set(oldest);
        }
        Err(err) => tracing::warn!(error = %err, "cannot read queue gauges"),
    }
    handle().render()
}

/// `GET /metrics`, served by every role.
pub fn router(
    store: crate::store::Store,
    hub: std::sync::Arc<crate::runtime::events::EventHub>,
) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (store, hub) = (store.clone(), hub.clone());
            async move {
                let body = page(&store, &hub).await;
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    body,
                )
            }
        }),
    )
}

/// The outcome label of an API call: "ok" or the error's code.
pub fn outcome<T>(result: &Result<T, ApiError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code().label(),
    }
}

/// Counts and times one API operation (gRPC and HTTP alike).
pub fn observe<T>(op: &'static str, started: Instant, result: &Result<T, ApiError>) {
    let outcome = outcome(result);
    metrics::counter!("wav_requests_total", "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!("wav_request_duration_seconds", "op" => op)
        .record(started.elapsed().as_secs_f64());
}
