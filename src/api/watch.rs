//! One WatchBatch stream: replay what is finished, then follow the hub.
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;

use super::convert::{Counts, number_result};
use crate::error::ApiError;
use crate::events::EventHub;
use crate::pb::{self, watch_batch_response::Event};
use crate::store::Store;
use crate::store::batches::{BatchRow, ResultRow};

type Item = Result<pb::WatchBatchResponse, Status>;
/// Events travel to the client stream in small runs: one channel send (and one
/// stall timer) per run instead of per number, which is most of a watch's cost
/// when a thousand streams follow the same results.
pub type Sink = mpsc::Sender<Vec<Item>>;

/// Most events in one run; with the runs queued per stream (`WATCH_BUFFER` in
/// ops.rs), this bounds what a stream buffers for a client that stopped reading.
const RUN: usize = 64;

/// How long the final UNAVAILABLE of a shutdown may wait for room.
const SHUTDOWN_SEND: Duration = Duration::from_secs(1);

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

    /// Sends the rows not sent yet.
    async fn send_new(
        &mut self,
        rows: &[ResultRow],
        sink: &Sink,
        stall: Duration,
    ) -> Result<(), End> {
        let mut run = Vec::with_capacity(RUN.min(rows.len()));
        for row in rows {
            let Some(slot) = self.sent.get_mut(row.idx as usize) else {
                continue;
            };
            if *slot {
                continue;
            }
            *slot = true;
            self.remaining -= 1;
            self.counts.add(row.state());
            run.push(Ok(pb::WatchBatchResponse {
                event: Some(Event::Result(number_result(row))),
            }));
            if run.len() == RUN {
                let full = std::mem::replace(&mut run, Vec::with_capacity(RUN));
                deliver(sink, full, stall).await?;
            }
        }
        if !run.is_empty() {
            deliver(sink, run, stall).await?;
        }
        Ok(())
    }
}

/// Why a stream ended before its completed event.
#[derive(Debug)]
enum End {
    /// The client went away.
    Gone,
    /// The client stopped reading for longer than the stall limit.
    Stalled,
}

/// Sends a run of events, waiting at most `stall` for the client to make room:
/// a reader that stopped must not hold a task and a subscription forever.
async fn deliver(sink: &Sink, items: Vec<Item>, stall: Duration) -> Result<(), End> {
    // Room is the common case: no timer for it.
    let items = match sink.try_send(items) {
        Ok(()) => return Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Gone),
        Err(mpsc::error::TrySendError::Full(items)) => items,
    };
    match tokio::time::timeout(stall, sink.send(items)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => Err(End::Stalled),
    }
}

/// The event stream handed to the client: what the watch task sends, then, if
/// the task gave up on a stalled reader, a RESOURCE_EXHAUSTED status.
pub fn client_stream(
    rx: mpsc::Receiver<Vec<Item>>,
    stalled: Arc<AtomicBool>,
    stall: Duration,
) -> WatchStream {
    let tail = futures::stream::once(async move {
        stalled.load(Ordering::SeqCst).then(|| {
            Err(Status::resource_exhausted(format!(
                "the stream was closed because the client read nothing for {}s; watch again to resume",
                stall.as_secs()
            )))
        })
    })
    .filter_map(|item| async move { item });
    Box::pin(
        ReceiverStream::new(rx)
            .flat_map(futures::stream::iter)
            .chain(tail),
    )
}

pub type WatchStream = Pin<Box<dyn Stream<Item = Item> + Send>>;

pub async fn stream_batch(
    store: Store,
    hub: Arc<EventHub>,
    batch: BatchRow,
    sink: Sink,
    shutdown: CancellationToken,
    stall: Duration,
    stalled: Arc<AtomicBool>,
) {
    if let Err(End::Stalled) = follow(&store, &hub, &batch, &sink, &shutdown, stall).await {
        tracing::info!(batch_id = %batch.id, "watch closed: the client stopped reading");
        stalled.store(true, Ordering::SeqCst);
    }
}

/// Replays, follows and completes one batch; Err when the client went away or stalled.
async fn follow(
    store: &Store,
    hub: &Arc<EventHub>,
    batch: &BatchRow,
    sink: &Sink,
    shutdown: &CancellationToken,
    stall: Duration,
) -> Result<(), End> {
    let mut progress = Progress::new(batch.total_numbers);
    // Subscribed before the replay, so a result written in between still arrives.
    let mut subscription = hub.subscribe(batch.id);
    let replay = match store.finished_results(batch.id, None).await {
        Ok(rows) => rows,
        Err(err) => return deliver(sink, vec![Err(ApiError::from(err).into())], stall).await,
    };
    progress.send_new(&replay, sink, stall).await?;
    while progress.remaining > 0 {
        let rows = tokio::select! {
            _ = sink.closed() => return Err(End::Gone),
            // Open streams would hold a graceful shutdown forever; end them so clients reconnect elsewhere.
            _ = shutdown.cancelled() => {
                return deliver(sink, vec![Err(Status::unavailable("server shutting down; watch again"))], SHUTDOWN_SEND).await;
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
                    return deliver(sink, vec![Err(Status::unavailable("server shutting down; watch again"))], SHUTDOWN_SEND).await;
                }
            },
        };
        progress.send_new(&rows, sink, stall).await?;
    }
    let done = pb::BatchCompleted {
        total_numbers: batch.total_numbers,
        completed: progress.counts.completed,
        failed: progress.counts.failed,
        cancelled: progress.counts.cancelled,
    };
    deliver(
        sink,
        vec![Ok(pb::WatchBatchResponse {
            event: Some(Event::Completed(done)),
        })],
        stall,
    )
    .await
}
