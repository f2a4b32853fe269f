//! One watch of a batch: replay what is finished, then follow the event hub, then the
//! completed event. A task per watch feeds a bounded channel; the transport encodes.
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::batch::{Counts, NumberResult, WatchEvent};
use crate::error::ApiError;
use crate::runtime::events::EventHub;
use crate::store::rows::ResultRow;
use crate::store::{Store, StoreError};

pub type WatchItem = Result<WatchEvent, ApiError>;
pub type WatchStream = Pin<Box<dyn Stream<Item = WatchItem> + Send>>;

/// Events go to the client stream in runs of up to `RUN`: one channel send (and one
/// stall timer) per run instead of per number, which is most of a watch's cost when a
/// thousand streams follow the same results.
type Runs = mpsc::Sender<Vec<WatchItem>>;
const RUN: usize = 64;
/// Runs buffered per stream: a slower client holds the sender back instead of growing memory.
const RUNS_BUFFERED: usize = 2;

/// How long the final UNAVAILABLE of a shutdown may wait for room.
const SHUTDOWN_SEND: Duration = Duration::from_secs(1);
/// Backoff of a replay that met a database outage: from the first to the longest wait.
const REPLAY_RETRY_FIRST: Duration = Duration::from_millis(100);
const REPLAY_RETRY_MAX: Duration = Duration::from_secs(2);

/// Watch streams each account holds open on this server, up to `limit` (0: no limit).
pub struct WatchSlots {
    limit: usize,
    held: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// One open watch of an account, given back when its stream is dropped.
pub struct WatchSlot {
    account: Uuid,
    held: Arc<Mutex<HashMap<Uuid, usize>>>,
}

impl WatchSlots {
    pub fn new(limit: usize) -> WatchSlots {
        WatchSlots {
            limit,
            held: Arc::default(),
        }
    }

    pub fn take(&self, account: Uuid) -> Result<WatchSlot, ApiError> {
        let mut held = self.held.lock().expect("watch slots");
        let open = held.entry(account).or_default();
        if self.limit > 0 && *open >= self.limit {
            return Err(ApiError::LimitReached(format!(
                "this account already has {} open watch streams, the most allowed: close one, or poll",
                self.limit
            )));
        }
        *open += 1;
        Ok(WatchSlot {
            account,
            held: self.held.clone(),
        })
    }
}

impl WatchSlot {
    /// `stream`, holding this slot until it is dropped.
    pub fn hold(self, stream: WatchStream) -> WatchStream {
        Box::pin(stream.map(move |item| {
            let _held = &self;
            item
        }))
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().expect("watch slots");
        if let Some(open) = held.get_mut(&self.account) {
            *open -= 1;
            if *open == 0 {
                held.remove(&self.account);
            }
        }
    }
}

/// Starts watching batch `batch_id` of `total_numbers`; the stream ends after the
/// completed event, or with an error (shutdown, a client that stopped reading).
pub fn start(
    store: Store,
    hub: Arc<EventHub>,
    batch_id: Uuid,
    total_numbers: i32,
    shutdown: CancellationToken,
    stall: Duration,
) -> WatchStream {
    let (runs, rx) = mpsc::channel(RUNS_BUFFERED);
    let stalled = Arc::new(AtomicBool::new(false));
    let watch = Watch {
        store,
        hub,
        batch_id,
        runs,
        stall,
    };
    let flag = stalled.clone();
    tokio::spawn(async move {
        if let Err(End::Stalled) = watch.follow(total_numbers, &shutdown).await {
            tracing::info!(%batch_id, "watch closed: the client stopped reading");
            flag.store(true, Ordering::SeqCst);
        }
    });
    client_stream(rx, stalled, stall)
}

/// The events handed to the client: what the watch task sends, then, if the task gave
/// up on a stalled reader, the error that says so.
fn client_stream(
    rx: mpsc::Receiver<Vec<WatchItem>>,
    stalled: Arc<AtomicBool>,
    stall: Duration,
) -> WatchStream {
    let tail = futures::stream::once(async move {
        stalled
            .load(Ordering::SeqCst)
            .then(|| Err(ApiError::Stalled(stall)))
    })
    .filter_map(|item| async move { item });
    Box::pin(
        ReceiverStream::new(rx)
            .flat_map(futures::stream::iter)
            .chain(tail),
    )
}

/// Why a watch ended before its completed event.
#[derive(Debug)]
enum End {
    /// The client went away.
    Gone,
    /// The client stopped reading for longer than the stall limit.
    Stalled,
}

struct Watch {
    store: Store,
    hub: Arc<EventHub>,
    batch_id: Uuid,
    runs: Runs,
    stall: Duration,
}

/// What this watch has already sent, so each number goes out once.
struct Progress {
    sent: Vec<bool>,
    remaining: usize,
    counts: Counts,
}

impl Watch {
    /// Replays, follows and completes the batch; Err when the client went away or stalled.
    async fn follow(&self, total: i32, shutdown: &CancellationToken) -> Result<(), End> {
        let mut progress = Progress {
            sent: vec![false; total.max(0) as usize],
            remaining: total.max(0) as usize,
            counts: Counts::new(total),
        };
        // Subscribed before the replay, so a result written in between still arrives.
        let mut subscription = self.hub.subscribe(self.batch_id);
        let mut retry = REPLAY_RETRY_FIRST;
        let replay = loop {
            match self.store.finished_results(self.batch_id, None).await {
                Ok(rows) => break rows,
                // The stream is open: an outage is waited out here, as it is once following.
                Err(err @ StoreError::Unavailable(_)) => {
                    tracing::warn!(batch_id = %self.batch_id, error = %err, "watch replay failed; retrying");
                    tokio::select! {
                        _ = self.runs.closed() => return Err(End::Gone),
                        _ = shutdown.cancelled() => {
                            return self.deliver(vec![Err(ApiError::ShuttingDown)], SHUTDOWN_SEND).await;
                        }
                        _ = tokio::time::sleep(retry) => {}
                    }
                    retry = (retry * 2).min(REPLAY_RETRY_MAX);
                }
                Err(err) => return self.deliver(vec![Err(err.into())], self.stall).await,
            }
        };
        self.send_new(&mut progress, &replay).await?;
        while progress.remaining > 0 {
            let rows = tokio::select! {
                _ = self.runs.closed() => return Err(End::Gone),
                // Open streams would hold a graceful shutdown forever; end them so clients reconnect elsewhere.
                _ = shutdown.cancelled() => {
                    return self.deliver(vec![Err(ApiError::ShuttingDown)], SHUTDOWN_SEND).await;
                }
                update = subscription.updates.recv() => match update {
                    Ok(rows) => rows,
                    // Fell behind the hub: the table has everything.
                    Err(RecvError::Lagged(_)) => match self.store.finished_results(self.batch_id, None).await {
                        Ok(rows) => Arc::new(rows),
                        Err(err) => {
                            tracing::warn!(batch_id = %self.batch_id, error = %err, "watch re-read failed; waiting for the next update");
                            continue;
                        }
                    },
                    Err(RecvError::Closed) => {
                        return self.deliver(vec![Err(ApiError::ShuttingDown)], SHUTDOWN_SEND).await;
                    }
                },
            };
            self.send_new(&mut progress, &rows).await?;
        }
        let done = WatchEvent::Completed(progress.counts);
        self.deliver(vec![Ok(done)], self.stall).await
    }

    /// Sends the results not sent yet, in runs.
    async fn send_new(&self, progress: &mut Progress, rows: &[ResultRow]) -> Result<(), End> {
        let mut run = Vec::with_capacity(RUN.min(rows.len()));
        for row in rows {
            let Some(slot) = progress.sent.get_mut(row.idx as usize) else {
                continue;
            };
            if *slot {
                continue;
            }
            *slot = true;
            progress.remaining -= 1;
            let result = NumberResult::from(row.clone());
            progress.counts.add(result.state);
            run.push(Ok(WatchEvent::Result(result)));
            if run.len() == RUN {
                let full = std::mem::replace(&mut run, Vec::with_capacity(RUN));
                self.deliver(full, self.stall).await?;
            }
        }
        if !run.is_empty() {
            self.deliver(run, self.stall).await?;
        }
        Ok(())
    }

    /// Sends a run, waiting at most `stall` for the client to make room: a reader that
    /// stopped must not hold a task and a subscription forever.
    async fn deliver(&self, items: Vec<WatchItem>, stall: Duration) -> Result<(), End> {
        // Room is the common case: no timer for it.
        let items = match self.runs.try_send(items) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(End::Gone),
            Err(mpsc::error::TrySendError::Full(items)) => items,
        };
        match tokio::time::timeout(stall, self.runs.send(items)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Gone),
            Err(_) => Err(End::Stalled),
        }
    }
}
