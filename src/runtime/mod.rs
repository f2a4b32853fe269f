//! What a process runs in the background besides serving requests: the workers, the
//! event hub that feeds watchers, webhook delivery, retention, the queue's vacuum and
//! the health probe. `app` starts them and stops them in order.
use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub mod events;
pub mod health;
pub mod retention;
pub mod vacuum;
pub mod webhooks;
pub mod workers;

/// What a periodic loop does after a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// There may be more to do: run again at once.
    Again,
    /// Wait a period (or until shutdown).
    Wait,
}

/// Runs `round` until shutdown, waiting `period` after each round that returns
/// `Next::Wait`; the first round runs at once.
pub async fn every<F, Fut>(period: Duration, shutdown: &CancellationToken, mut round: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Next>,
{
    while !shutdown.is_cancelled() {
        if round().await == Next::Again {
            continue;
        }
        pause(period, shutdown).await;
    }
}

/// Sleeps for `period`, or less if shutdown comes first.
pub async fn pause(period: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(period) => {}
        _ = shutdown.cancelled() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rounds_run_at_once_again_or_after_a_period_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut rounds = 0;
        let started = tokio::time::Instant::now();
        every(Duration::from_secs(10), &shutdown, || {
            rounds += 1;
            if rounds == 5 {
                shutdown.cancel();
            }
            // Two rounds back to back, then a wait, and again.
            let next = if rounds % 3 == 0 {
                Next::Wait
            } else {
                Next::Again
            };
            async move { next }
        })
        .await;
        assert_eq!(rounds, 5);
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(10),
            "one wait in five rounds"
        );
    }
}
