//! Prunes finished batches after the retention period, a few at a time.
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Batches deleted per statement: small, so each transaction stays short.
const CHUNK: i64 = 100;

pub async fn run(store: Store, retention: Duration, every: Duration, shutdown: CancellationToken) {
    loop {
        let mut pruned = 0;
        loop {
            match store.prune_batches(retention, CHUNK).await {
                Ok(0) => break,
                Ok(n) => pruned += n,
                Err(err) => {
                    tracing::warn!(error = %err, "retention: pruning failed; will retry");
                    break;
                }
            }
            if shutdown.is_cancelled() {
                return;
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, "retention: pruned finished batches");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}
