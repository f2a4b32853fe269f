//! grpc.health.v1: SERVING only while the database answers.
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::Next;
use crate::store::Store;

pub const SERVICE_NAME: &str = "wavalidation.v1.WaValidationService";
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

async fn set_all(reporter: &HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Probes the database until shutdown, then reports NOT_SERVING for good.
pub async fn run(store: Store, reporter: HealthReporter, shutdown: CancellationToken) {
    let last = &std::sync::Mutex::new(None);
    let (store, reporter) = (&store, &reporter);
    super::every(PROBE_EVERY, &shutdown, || async move {
        let ok = matches!(
            tokio::time::timeout(PROBE_TIMEOUT, store.ping()).await,
            Ok(Ok(()))
        );
        let status = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        let changed = last.lock().expect("health").replace(status) != Some(status);
        if changed {
            tracing::info!(?status, "health changed");
            set_all(reporter, status).await;
        }
        Next::Wait
    })
    .await;
    set_all(reporter, ServingStatus::NotServing).await;
}
