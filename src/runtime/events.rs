//! One LISTEN connection per process fans result notifications out to the
//! watchers of each batch, so database load stays flat as watchers grow.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::store::notify::ResultsNotice;
use crate::store::rows::ResultRow;
use crate::store::rows::WrittenRow;
use crate::store::{QUEUED_CHANNEL, RESULTS_CHANNEL, Store};

/// Results just written for one batch. Watchers skip the ones they already sent.
pub type Update = Arc<Vec<ResultRow>>;

/// Per-batch channel depth; a watcher that falls further behind re-reads the table.
const CHANNEL_DEPTH: usize = 64;

pub struct EventHub {
    store: Store,
    batches: Mutex<HashMap<Uuid, Channel>>,
    /// Woken when numbers are queued, so idle workers start at once.
    pub queued: Arc<Notify>,
    backstop: Duration,
}

/// A watched batch's channel and how many subscriptions share it, counted under the
/// hub's lock (a receiver count would still include a receiver being dropped).
struct Channel {
    tx: broadcast::Sender<Update>,
    subscriptions: usize,
}

/// A watcher's handle on a batch; dropping the last one frees the batch's channel.
pub struct Subscription {
    hub: Arc<EventHub>,
    batch_id: Uuid,
    pub updates: broadcast::Receiver<Update>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut batches = self.hub.batches.lock().expect("hub lock");
        if let Some(channel) = batches.get_mut(&self.batch_id) {
            channel.subscriptions -= 1;
            if channel.subscriptions == 0 {
                batches.remove(&self.batch_id);
            }
        }
    }
}

impl EventHub {
    pub fn new(store: Store, backstop: Duration) -> Arc<EventHub> {
        Arc::new(EventHub {
            store,
            batches: Mutex::new(HashMap::new()),
            queued: Arc::new(Notify::new()),
            backstop,
        })
    }

    /// Subscribe before reading what is already finished, so nothing falls in between.
    pub fn subscribe(self: &Arc<Self>, batch_id: Uuid) -> Subscription {
        let mut batches = self.batches.lock().expect("hub lock");
        let channel = batches.entry(batch_id).or_insert_with(|| Channel {
            tx: broadcast::channel(CHANNEL_DEPTH).0,
            subscriptions: 0,
        });
        channel.subscriptions += 1;
        let updates = channel.tx.subscribe();
        Subscription {
            hub: self.clone(),
            batch_id,
            updates,
        }
    }

    /// Watch streams open in this process.
    pub fn watchers(&self) -> usize {
        self.batches
            .lock()
            .expect("hub lock")
            .values()
            .map(|channel| channel.subscriptions)
            .sum()
    }

    /// Batches with a channel, i.e. with at least one subscription alive.
    pub fn watched_batches(&self) -> usize {
        self.batches.lock().expect("hub lock").len()
    }

    fn is_watched(&self, batch_id: &Uuid) -> bool {
        self.batches
            .lock()
            .expect("hub lock")
            .contains_key(batch_id)
    }

    /// Which of `batch_ids` have watchers in this process.
    pub fn watched_among(&self, batch_ids: impl IntoIterator<Item = Uuid>) -> Vec<Uuid> {
        let batches = self.batches.lock().expect("hub lock");
        let mut watched: Vec<Uuid> = batch_ids
            .into_iter()
            .filter(|id| batches.contains_key(id))
            .collect();
        watched.sort_unstable();
        watched.dedup();
        watched
    }

    fn watched(&self) -> Vec<Uuid> {
        self.batches
            .lock()
            .expect("hub lock")
            .keys()
            .copied()
            .collect()
    }

    /// Hands results this process's workers just committed to their batches' watchers
    /// here (other processes read them back when the notification arrives).
    pub fn publish_written(&self, written: Vec<WrittenRow>) {
        let mut by_batch: HashMap<Uuid, Vec<ResultRow>> = HashMap::new();
        for w in written {
            by_batch.entry(w.batch_id).or_default().push(w.row);
        }
        for (batch_id, rows) in by_batch {
            self.publish(batch_id, rows);
        }
    }

    fn publish(&self, batch_id: Uuid, rows: Vec<ResultRow>) {
        if rows.is_empty() {
            return;
        }
        if let Some(channel) = self.batches.lock().expect("hub lock").get(&batch_id) {
            let _ = channel.tx.send(Arc::new(rows));
        }
    }

    /// Reads these results back for the watchers here of `batches` (after a write whose
    /// outcome was unknown, so no one else will hand them over).
    pub fn reread(
        self: &Arc<Self>,
        batches: &[Uuid],
        results: impl IntoIterator<Item = (Uuid, i32)>,
    ) {
        let mut by_batch: HashMap<Uuid, Vec<i32>> = HashMap::new();
        for (batch_id, idx) in results {
            if batches.contains(&batch_id) {
                by_batch.entry(batch_id).or_default().push(idx);
            }
        }
        for (batch_id, idxs) in by_batch {
            tokio::spawn(self.clone().refresh(batch_id, Some(idxs)));
        }
    }

    /// Reads the given results (or all finished ones) and hands them to the batch's watchers.
    async fn refresh(self: Arc<Self>, batch_id: Uuid, only: Option<Vec<i32>>) {
        match self.store.finished_results(batch_id, only.as_deref()).await {
            Ok(rows) => self.publish(batch_id, rows),
            Err(err) => {
                tracing::warn!(%batch_id, error = %err, "could not read results for watchers")
            }
        }
    }

    fn refresh_all_watched(self: &Arc<Self>) {
        for batch_id in self.watched() {
            tokio::spawn(self.clone().refresh(batch_id, None));
        }
    }

    /// Listens until shutdown, reconnecting by itself. After every (re)connect
    /// and every backstop period, watched batches are re-read from the tables,
    /// so a missed notification delays a result but never loses it.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut retry = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            let mut listener = match self.connect().await {
                Ok(listener) => listener,
                Err(err) => {
                    tracing::warn!(error = %err, "event listener cannot connect; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    retry = (retry * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            retry = Duration::from_millis(200);
            tracing::debug!("event listener connected");
            self.refresh_all_watched();
            // Workers may have missed queued-work wake-ups while we were away.
            self.queued.notify_waiters();
            let mut backstop = tokio::time::interval(self.backstop);
            backstop.tick().await;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = backstop.tick() => self.refresh_all_watched(),
                    msg = listener.try_recv() => match msg {
                        Ok(Some(n)) if n.channel() == QUEUED_CHANNEL => self.queued.notify_waiters(),
                        Ok(Some(n)) => self.on_results(n.payload()),
                        // Connection lost: reconnect and re-read, since notifications were missed.
                        Ok(None) => break,
                        Err(err) => {
                            tracing::warn!(error = %err, "event listener failed; reconnecting");
                            break;
                        }
                    }
                }
            }
        }
    }

    async fn connect(&self) -> Result<PgListener, sqlx::Error> {
        let mut listener = PgListener::connect_with(self.store.pool()).await?;
        listener
            .listen_all([RESULTS_CHANNEL, QUEUED_CHANNEL])
            .await?;
        Ok(listener)
    }

    fn on_results(self: &Arc<Self>, payload: &str) {
        let Some(notice) = ResultsNotice::parse(payload) else {
            tracing::warn!(payload, "ignoring malformed results notification");
            return;
        };
        // Written by this process's workers, which published the rows themselves.
        if notice.origin == Some(self.store.origin()) {
            return;
        }
        if self.is_watched(&notice.batch_id) {
            tokio::spawn(self.clone().refresh(notice.batch_id, Some(notice.indexes)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_last_subscription_to_go_frees_its_batch_whatever_receivers_linger() {
        // Never connected: subscribing needs no database.
        let store = Store::connect_lazy("postgres://127.0.0.1:1/none", 1).unwrap();
        let hub = EventHub::new(store, Duration::from_secs(60));
        let batch = Uuid::new_v4();
        let (a, b) = (hub.subscribe(batch), hub.subscribe(batch));
        // A receiver outliving its subscription for a moment: what the other of two
        // watchers ending together sees while the first one's drop is under way.
        let lingering = a.updates.resubscribe();
        drop(a);
        drop(b);
        assert_eq!((hub.watched_batches(), hub.watchers()), (0, 0));
        drop(lingering);
    }
}
