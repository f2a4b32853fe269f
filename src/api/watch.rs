//! One WatchBatch stream: replay what is finished, then follow the hub.
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert::{Counts, number_result};
use crate::error::ApiError;
use crate::events::EventHub;
use crate::pb::{self, watch_batch_response::Event};
use crate::store::Store;
use crate::store::batches::{BatchRow, ResultRow};

type Sink = mpsc::Sender<Result<pb::WatchBatchResponse, Status>>;

/// What this stream has already sent, so each number goes out once.
struct Progress {
    sent: Vec<bool>,
    remaining: usize,
    counts: Counts,
}

impl Progress {
    fn new(total: i32) -> Progress {
        Progress {
            sent: vec![false; total.max(0) as usize],
            remaining: total.max(0) as usize,
            counts: Counts::default(),
        }
    }

    /// Sends the rows not sent yet; false when the client has gone.
    async fn send_new(&mut self, rows: &[ResultRow], sink: &Sink) -> bool {
        for row in rows {
            let Some(slot) = self.sent.get_mut(row.idx as usize) else {
                continue;
            };
            if *slot {
                continue;
            }
            let event = Event::Result(number_result(row));
            if sink
                .send(Ok(pb::WatchBatchResponse { event: Some(event) }))
                .await
                .is_err()
            {
                return false;
            }
            *slot = true;
            self.remaining -= 1;
            self.counts.add(row.state());
        }
        true
    }
}

pub async fn stream_batch(
    store: Store,
    hub: Arc<EventHub>,
    batch: BatchRow,
    sink: Sink,
    shutdown: CancellationToken,
) {
    let mut progress = Progress::new(batch.total_numbers);
    // Subscribed before the replay, so a result written in between still arrives.
    let mut subscription = hub.subscribe(batch.id);
    let replay = match store.finished_results(batch.id, None).await {
        Ok(rows) => rows,
        Err(err) => {
            let _ = sink.send(Err(ApiError::from(err).into())).await;
            return;
        }
    };
    if !progress.send_new(&replay, &sink).await {
        return;
    }
    while progress.remaining > 0 {
        let rows = tokio::select! {
            _ = sink.closed() => return,
            // Open streams would hold a graceful shutdown forever; end them so clients reconnect elsewhere.
            _ = shutdown.cancelled() => {
                let _ = sink.send(Err(Status::unavailable("server shutting down; watch again"))).await;
                return;
            }
            update = subscription.updates.recv() => match update {
                Ok(rows) => rows,
                // Fell behind the hub: the table has everything.
                Err(RecvError::Lagged(_)) => match store.finished_results(batch.id, None).await {
                    Ok(rows) => Arc::new(rows),
                    Err(err) => {
                        tracing::warn!(batch_id = %batch.id, error = %err, "watch re-read failed; waiting for the next update");
                        continue;
                    }
                },
                Err(RecvError::Closed) => {
                    let _ = sink.send(Err(Status::unavailable("server shutting down; watch again"))).await;
                    return;
                }
            },
        };
        if !progress.send_new(&rows, &sink).await {
            return;
        }
    }
    let done = pb::BatchCompleted {
        total_numbers: batch.total_numbers,
        completed: progress.counts.completed,
        failed: progress.counts.failed,
        cancelled: progress.counts.cancelled,
    };
    let _ = sink
        .send(Ok(pb::WatchBatchResponse {
            event: Some(Event::Completed(done)),
        }))
        .await;
}
