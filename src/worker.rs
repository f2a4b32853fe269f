//! Workers: claim queued numbers, ask the checker, write the answers.
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checker::{DynChecker, Outcome};
use crate::domain::batch::NumberState;
use crate::events::EventHub;
use crate::store::Store;
use crate::store::queue::{Answer, Claimed, Completion, Retry};

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Concurrent claim-check-write loops in this process.
    pub concurrency: usize,
    pub lease: Duration,
    /// Attempts per number before it ends as NUMBER_STATUS_ERROR.
    pub max_attempts: i32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How long an idle worker waits before looking again without a wake-up.
    pub idle_poll: Duration,
    /// How long in-flight checks may run on after shutdown before their numbers are released.
    pub shutdown_grace: Duration,
}

pub struct Workers {
    store: Store,
    checker: DynChecker,
    config: WorkerConfig,
    /// Wakes idle loops when numbers are queued, and takes the results they write.
    hub: Arc<EventHub>,
}

impl Workers {
    pub fn new(
        store: Store,
        checker: DynChecker,
        config: WorkerConfig,
        hub: Arc<EventHub>,
    ) -> Arc<Workers> {
        Arc::new(Workers {
            store,
            checker,
            config,
            hub,
        })
    }

    /// Runs every loop until shutdown; a loop that panics is restarted.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..self.config.concurrency.max(1) {
            loops.spawn(self.clone().run_loop(shutdown.clone()));
        }
        while let Some(done) = loops.join_next().await {
            if let Err(err) = done
                && err.is_panic()
                && !shutdown.is_cancelled()
            {
                tracing::error!(error = %err, "worker loop panicked; restarting it");
                loops.spawn(self.clone().run_loop(shutdown.clone()));
            }
        }
    }

    async fn run_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let limit = self.checker.max_batch() as i64;
        while !shutdown.is_cancelled() {
            // A paused checker (backoff, open circuit, daily cap) leaves the numbers queued.
            if let Some(wait) = self.checker.paused_for() {
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(self.config.idle_poll.max(Duration::from_millis(100)))) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            // Registered before claiming, so a wake-up sent meanwhile is not missed.
            let woken = self.hub.queued.notified();
            match self.store.claim(limit, self.config.lease).await {
                Ok((token, claimed)) if !claimed.is_empty() => {
                    self.process(token, claimed, &shutdown).await;
                }
                Ok(_) => {
                    tokio::select! {
                        _ = woken => {}
                        _ = tokio::time::sleep(self.config.idle_poll) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, "claiming work failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
        }
    }

    #[tracing::instrument(name = "chunk", skip_all, fields(numbers = claimed.len()))]
    async fn process(&self, token: Uuid, claimed: Vec<Claimed>, shutdown: &CancellationToken) {
        let max = self.config.max_attempts;
        // Numbers whose earlier workers all died before answering: stop trying.
        let (exhausted, mut to_check): (Vec<Claimed>, Vec<Claimed>) =
            claimed.into_iter().partition(|c| c.attempts > max);
        let mut answers: Vec<Answer> = exhausted
            .iter()
            .map(|c| {
                error_answer(
                    c,
                    format!("gave up after {max} attempts: no worker finished the check"),
                )
            })
            .collect();
        let mut retries = Vec::new();
        let mut deferred = Vec::new();
        let mut defer_for = Duration::ZERO;

        if !to_check.is_empty() {
            // Moved, not cloned: the claimed rows need only their ids from here on.
            let numbers: Vec<String> = to_check
                .iter_mut()
                .map(|c| std::mem::take(&mut c.e164))
                .collect();
            let held: Vec<(Uuid, i32)> = to_check.iter().map(|c| (c.batch_id, c.idx)).collect();
            let Some(outcomes) = self
                .check_under_lease(token, &held, &numbers, shutdown)
                .await
            else {
                // Shut down mid-check: hand the numbers back for another process.
                if let Err(err) = self.store.release(token, &held).await {
                    tracing::warn!(error = %err, "could not release numbers; their lease will expire");
                }
                return;
            };
            let mut outcomes = outcomes.into_iter();
            for c in &to_check {
                let outcome = outcomes.next().unwrap_or_else(|| {
                    Outcome::Retryable("the checker returned no answer for this number".into())
                });
                match outcome {
                    Outcome::OnWhatsApp { wa_id, is_business } => answers.push(Answer {
                        batch_id: c.batch_id,
                        idx: c.idx,
                        state: NumberState::OnWhatsApp,
                        wa_id: Some(wa_id),
                        is_business,
                        error: None,
                    }),
                    Outcome::NotOnWhatsApp => answers.push(Answer {
                        batch_id: c.batch_id,
                        idx: c.idx,
                        state: NumberState::NotOnWhatsApp,
                        wa_id: None,
                        is_business: false,
                        error: None,
                    }),
                    Outcome::Final(reason) => answers.push(error_answer(c, reason)),
                    Outcome::Retryable(reason) if c.attempts >= max => answers.push(error_answer(
                        c,
                        format!("{reason} (gave up after {} attempts)", c.attempts),
                    )),
                    Outcome::Retryable(reason) => retries.push(Retry {
                        batch_id: c.batch_id,
                        idx: c.idx,
                        error: reason,
                    }),
                    Outcome::Deferred { retry_in, .. } => {
                        deferred.push((c.batch_id, c.idx));
                        defer_for = defer_for.max(retry_in);
                    }
                }
            }
        }
        record_outcomes(&answers, retries.len(), deferred.len());
        self.write(token, &answers, &retries).await;
        if !deferred.is_empty()
            && let Err(err) = self.store.defer(token, &deferred, defer_for).await
        {
            tracing::warn!(error = %err, "could not hand deferred numbers back; their lease will expire");
        }
    }

    /// Runs the check while renewing the lease; None when shutdown's grace ran out first.
    async fn check_under_lease(
        &self,
        token: Uuid,
        held: &[(Uuid, i32)],
        numbers: &[String],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Outcome>> {
        let check = self.checker.check(numbers);
        tokio::pin!(check);
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.config.shutdown_grace).await;
        };
        tokio::pin!(grace);
        let mut renew = tokio::time::interval(self.config.lease / 3);
        renew.tick().await;
        loop {
            tokio::select! {
                outcomes = &mut check => return Some(outcomes),
                _ = &mut grace => return None,
                _ = renew.tick() => {
                    if let Err(err) = self.store.renew_lease(token, held, self.config.lease).await {
                        tracing::warn!(error = %err, "could not renew lease");
                    }
                }
            }
        }
    }

    /// Writes, retrying briefly on database errors. If it still fails the
    /// lease expires and another worker checks the numbers again: at least once,
    /// and the lease guard keeps the result written exactly once.
    async fn write(&self, token: Uuid, answers: &[Answer], retries: &[Retry]) {
        if answers.is_empty() && retries.is_empty() {
            return;
        }
        // Asked before writing: a batch watched only from later on gets its notification
        // without our origin, and its watchers read the rows back.
        let watched = self.hub.watched_among(answers.iter().map(|a| a.batch_id));
        let work = Completion {
            answers,
            retries,
            backoff_base: self.config.backoff_base,
            backoff_max: self.config.backoff_max,
            watched: &watched,
        };
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=5 {
            let cache_as = self.checker.cacheable().then(|| self.checker.name());
            match self.store.complete(token, cache_as, &work).await {
                Ok(written) => {
                    self.hub.publish_written(written);
                    return;
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "writing results failed");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
    }
}

fn record_outcomes(answers: &[Answer], retries: usize, deferred: usize) {
    let mut on = 0u64;
    let mut not = 0u64;
    let mut errors = 0u64;
    for a in answers {
        match a.state {
            NumberState::OnWhatsApp => on += 1,
            NumberState::NotOnWhatsApp => not += 1,
            _ => errors += 1,
        }
    }
    metrics::counter!("wav_numbers_checked_total", "outcome" => "on_whatsapp").increment(on);
    metrics::counter!("wav_numbers_checked_total", "outcome" => "not_on_whatsapp").increment(not);
    metrics::counter!("wav_numbers_checked_total", "outcome" => "error").increment(errors);
    metrics::counter!("wav_numbers_checked_total", "outcome" => "retry").increment(retries as u64);
    metrics::counter!("wav_numbers_checked_total", "outcome" => "deferred")
        .increment(deferred as u64);
    metrics::counter!("wav_credits_refunded_total", "reason" => "error").increment(errors);
}

fn error_answer(c: &Claimed, reason: String) -> Answer {
    Answer {
        batch_id: c.batch_id,
        idx: c.idx,
        state: NumberState::Error,
        wa_id: None,
        is_business: false,
        error: Some(reason),
    }
}
