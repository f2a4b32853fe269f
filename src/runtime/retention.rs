//! Prunes finished batches after the retention period, a few at a time.
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Next;
use crate::store::Store;

/// Batches deleted per statement: small, so each transaction stays short.
const BATCHES_PER_STATEMENT: i64 = 100;

pub async fn run(store: Store, retention: Duration, every: Duration, shutdown: CancellationToken) {
    super::every(every, &shutdown, || async {
        let mut pruned = 0;
        while !shutdown.is_cancelled() {
            match store.prune_batches(retention, BATCHES_PER_STATEMENT).await {
                Ok(0) => break,
                Ok(n) => pruned += n,
                Err(err) => {
                    tracing::warn!(error = %err, "retention: pruning failed; will retry");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::info!(pruned, "retention: pruned finished batches");
        }
        Next::Wait
    })
    .await;
}
