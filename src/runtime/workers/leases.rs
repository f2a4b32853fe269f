//! A claim's leases, kept alive while the claim is worked on.
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::store::Store;
use crate::store::rows::ChunkKey;

/// A claim's leases, kept for as long as it is worked on: renewed every third of the
/// lease in the background, and on demand before each checker call after the first.
/// Chunks found taken over (or cancelled) are reported once by `take_lost`.
pub struct Leases {
    store: Store,
    token: Uuid,
    lease: Duration,
    state: Arc<tokio::sync::Mutex<Vec<ChunkKey>>>,
    lost: Arc<std::sync::Mutex<Vec<ChunkKey>>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl Leases {
    pub fn keep(store: Store, token: Uuid, held: Vec<ChunkKey>, lease: Duration) -> Leases {
        let state = Arc::new(tokio::sync::Mutex::new(held));
        let lost = Arc::new(std::sync::Mutex::new(Vec::new()));
        let keeper = {
            let (store, state, lost) = (store.clone(), state.clone(), lost.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(lease / 3);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await;
                loop {
                    every.tick().await;
                    renew(&store, token, lease, &state, &lost).await;
                }
            })
        };
        Leases {
            store,
            token,
            lease,
            state,
            lost,
            keeper,
        }
    }

    pub async fn renew_now(&self) {
        renew(&self.store, self.token, self.lease, &self.state, &self.lost).await;
    }

    pub fn take_lost(&self) -> Vec<ChunkKey> {
        std::mem::take(&mut *self.lost.lock().expect("lost leases"))
    }

    /// The chunks still held, locked against renewals while a write lets some go.
    pub async fn held(&self) -> tokio::sync::MutexGuard<'_, Vec<ChunkKey>> {
        self.state.lock().await
    }

    /// Hands the chunks still held back untouched (shutdown).
    pub async fn release(&self) {
        let held = self.state.lock().await;
        if let Err(err) = self.store.release(self.token, &held).await {
            tracing::warn!(error = %err, "could not release numbers; their lease will expire");
        }
    }
}

impl Drop for Leases {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

async fn renew(
    store: &Store,
    token: Uuid,
    lease: Duration,
    state: &tokio::sync::Mutex<Vec<ChunkKey>>,
    lost: &std::sync::Mutex<Vec<ChunkKey>>,
) {
    let mut held = state.lock().await;
    if held.is_empty() {
        return;
    }
    match store.renew_lease(token, &held, lease).await {
        Ok(renewed) if renewed.len() < held.len() => {
            let (kept, gone): (Vec<ChunkKey>, Vec<ChunkKey>) =
                held.iter().partition(|key| renewed.contains(key));
            tracing::info!(
                chunks = gone.len(),
                "lease lost (taken over or cancelled): leaving those numbers to their holder"
            );
            *held = kept;
            lost.lock().expect("lost leases").extend(gone);
        }
        Ok(_) => {}
        // Not a lost lease: the database did not answer. The next renewal tries again.
        Err(err) => tracing::warn!(error = %err, "could not renew lease"),
    }
}
