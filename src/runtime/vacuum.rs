//! Vacuums the queue's tables when PostgreSQL's autovacuum will not.
//!
//! Every check leaves dead row versions behind, and the claim index only ever grows at
//! its right end (fair keys increase), so the entries of finished chunks pile up at its
//! left, where every claim and every submit starts reading. Only vacuum removes them;
//! left alone, each claim reads further past them (docs/performance.md has the figures).
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Next;
use crate::store::Store;

pub struct VacuumConfig {
    /// Vacuum once the queue's tables hold this many dead rows (a dead chunk counting
    /// for the numbers it held); 0: never.
    pub dead_rows: i64,
    /// How often the dead rows are counted.
    pub every: Duration,
}

pub async fn run(store: Store, config: VacuumConfig, shutdown: CancellationToken) {
    if config.dead_rows <= 0 {
        return;
    }
    // The first count comes after a period: a fresh process has nothing to clear yet.
    super::pause(config.every, &shutdown).await;
    super::every(config.every, &shutdown, || async {
        // None while autovacuum looks after the tables (the migrations tune it).
        let dead = match store.dead_rows_to_vacuum().await {
            Ok(Some(dead)) if dead >= config.dead_rows => dead,
            Ok(_) => return Next::Wait,
            Err(err) => {
                tracing::warn!(error = %err, "vacuum: cannot count dead rows");
                return Next::Wait;
            }
        };
        let start = std::time::Instant::now();
        let done = tokio::select! {
            done = store.vacuum_queue() => done,
            // A vacuum of a big table takes seconds; shutting down need not wait for it.
            _ = shutdown.cancelled() => return Next::Wait,
        };
        match done {
            Ok(()) => {
                metrics::counter!("wav_queue_vacuums_total").increment(1);
                tracing::info!(
                    dead,
                    ms = start.elapsed().as_millis() as u64,
                    "vacuumed the queue tables (autovacuum does not)"
                );
            }
            Err(err) => tracing::warn!(error = %err, "vacuum failed; will retry"),
        }
        Next::Wait
    })
    .await;
}
