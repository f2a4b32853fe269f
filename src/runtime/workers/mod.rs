//! Workers: claim queued numbers, ask the checker, write the answers.
use std::sync::Arc;
use std::time::Duration;

use rand::seq::SliceRandom;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::checker::{DynChecker, Failure, Outcome};
use crate::domain::batch::NumberState;
use crate::runtime::events::EventHub;
use crate::store::CHUNK_NUMBERS;
use crate::store::Store;
use crate::store::queue::Completion;
use crate::store::rows::{Answer, ChunkEnd, ChunkKey, Claim, Claimed, Retry};

mod leases;
mod tally;

use leases::Leases;
use tally::{ChunkTally, Settled};

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
    /// Numbers pending this long while no checker can take them end as errors.
    pub max_pending: Duration,
}

/// The part of the queue a loop claims from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queue {
    All,
    /// Only what is queued ahead of batch work: single checks.
    Ahead,
}

pub struct Workers {
    store: Store,
    checker: DynChecker,
    config: WorkerConfig,
    /// Wakes idle loops when numbers are queued, and takes the results they write.
    hub: Arc<EventHub>,
    /// When this process last looked for overdue numbers (one loop looks at a time).
    last_sweep: std::sync::Mutex<Option<std::time::Instant>>,
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
            last_sweep: std::sync::Mutex::new(None),
        })
    }

    /// Runs every loop until shutdown; a loop that panics is restarted. Besides the
    /// configured loops, one takes only single checks (a caller is waiting for each), so
    /// they need not wait for the numbers the others already hold to be checked.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut loops = tokio::task::JoinSet::new();
        for _ in 0..self.config.concurrency.max(1) {
            loops.spawn(self.clone().run_loop(Queue::All, shutdown.clone()));
        }
        loops.spawn(self.clone().run_loop(Queue::Ahead, shutdown.clone()));
        while let Some(done) = loops.join_next().await {
            if let Err(err) = done
                && err.is_panic()
                && !shutdown.is_cancelled()
            {
                // Which loop it was is unknown: one more of the general ones is harmless.
                tracing::error!(error = %err, "worker loop panicked; restarting it");
                loops.spawn(self.clone().run_loop(Queue::All, shutdown.clone()));
            }
        }
    }

    async fn run_loop(self: Arc<Self>, queue: Queue, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            // A paused checker (backoff, open circuit, daily cap, no usable checking
            // account) leaves the numbers queued, until they have waited too long.
            if let Some(wait) = self.checker.paused_for() {
                self.end_overdue().await;
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(self.config.idle_poll.max(Duration::from_millis(100)))) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            // Enough chunks for one checker call (its size may change, as a pool's
            // accounts do); a call smaller than a chunk makes several.
            let per_call = self.checker.max_batch().max(1);
            let chunks = per_call.div_ceil(CHUNK_NUMBERS) as i64;
            // Registered before claiming, so a wake-up sent meanwhile is not missed.
            let woken = self.hub.queued.notified();
            match self
                .store
                .claim(chunks, self.config.lease, queue == Queue::Ahead)
                .await
            {
                Ok(claim) if !claim.chunks.is_empty() => {
                    self.process(claim, per_call, &shutdown).await;
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

    /// Ends numbers pending longer than `max_pending` while nothing can check them: errors,
    /// refunded. Replicas and loops may sweep at once; each chunk is leased by one.
    async fn end_overdue(&self) {
        // A few looks per WAV_MAX_PENDING, at most one a minute: the search reads the
        // whole queue, and a paused checker's loops come by several times a second.
        let every = (self.config.max_pending / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(60));
        {
            let mut last = self.last_sweep.lock().expect("sweep time");
            if last.is_some_and(|at| at.elapsed() < every) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let claim = match self
            .store
            .claim_overdue(10, self.config.lease, self.config.max_pending)
            .await
        {
            Ok(claim) if !claim.chunks.is_empty() => claim,
            Ok(_) => return,
            Err(err) => {
                tracing::warn!(error = %err, "cannot look for overdue numbers");
                return;
            }
        };
        let mut chunks = ChunkTally::new(&claim);
        let answers: Vec<Answer> = claim
            .numbers
            .iter()
            .map(|c| {
                chunks.settle(c, Settled::Answered);
                error_answer(c, self.overdue_reason())
            })
            .collect();
        tracing::warn!(
            numbers = answers.len(),
            "no checking account could take these numbers in time: ended as errors, refunded"
        );
        record_outcomes(&answers, 0, 0);
        let ends = chunks.take_ends(true);
        self.write(claim.token, &answers, &[], &ends, Duration::ZERO)
            .await;
    }

    fn overdue_reason(&self) -> String {
        format!(
            "no checking account available: pending for more than {}",
            humantime::format_duration(self.config.max_pending)
        )
    }

    #[tracing::instrument(name = "claim", skip_all, fields(numbers = claim.numbers.len()))]
    async fn process(&self, claim: Claim, per_call: usize, shutdown: &CancellationToken) {
        let max = self.config.max_attempts;
        let token = claim.token;
        let mut chunks = ChunkTally::new(&claim);
        let leases = Leases::keep(self.store.clone(), token, chunks.held(), self.config.lease);
        // Numbers whose earlier workers all died before answering: stop trying.
        let (exhausted, mut to_check): (Vec<Claimed>, Vec<Claimed>) =
            claim.numbers.into_iter().partition(|c| c.attempts > max);
        let mut answers: Vec<Answer> = Vec::new();
        for c in &exhausted {
            let reason = format!("gave up after {max} attempts: no worker finished the check");
            answers.push(error_answer(c, reason));
            chunks.settle(c, Settled::Answered);
        }
        // One checker call at a time; each call's results are written before the next,
        // and a chunk is let go of with the write that settles its last number.
        let mut calls = to_check.chunks_mut(per_call).enumerate().peekable();
        loop {
            let mut retries = Vec::new();
            let mut deferred = 0;
            if let Some((n, call)) = calls.next() {
                // The claim itself took the leases for the first call; later calls first
                // make sure they still hold them, so no number goes upstream twice.
                if n > 0 {
                    leases.renew_now().await;
                }
                for lost in leases.take_lost() {
                    chunks.lose(lost);
                }
                if chunks.held().is_empty() {
                    return;
                }
                let mut call: Vec<&mut Claimed> = call
                    .iter_mut()
                    .filter(|c| chunks.holds(c.chunk_key()))
                    .collect();
                // A run of consecutive numbers looks like scraping to WhatsApp.
                call.shuffle(&mut rand::rng());
                if !call.is_empty() {
                    let Some(outcomes) = self.call(&leases, &mut call, shutdown).await else {
                        return;
                    };
                    for (c, outcome) in call.iter().zip(outcomes) {
                        let settled = self.file_outcome(c, outcome, &mut answers, &mut retries);
                        deferred += matches!(settled, Settled::Deferred(_)) as usize;
                        chunks.settle(c, settled);
                    }
                }
            }
            let last = calls.peek().is_none();
            let ends = chunks.take_ends(last);
            record_outcomes(&answers, retries.len(), deferred);
            let written = {
                // Renewals wait while results are written, so none races the write that
                // lets a chunk go.
                let mut held = leases.held().await;
                let written = self
                    .write(token, &answers, &retries, &ends, chunks.defer_for)
                    .await;
                held.retain(|key| !ends.iter().any(|(ended, _)| ended == key));
                written
            };
            // A write that did not land leaves its numbers pending: a later write must not
            // end their chunks as done. Give the claim up; its leases expire and every
            // number still pending is claimed again.
            if last || !written {
                return;
            }
            answers.clear();
        }
    }

    /// One checker call for `call`, one outcome per number; None when shutdown came
    /// first, after handing the chunks still held back.
    async fn call(
        &self,
        leases: &Leases,
        call: &mut [&mut Claimed],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Outcome>> {
        let mut outcomes = match self.checker.paused_for() {
            // Paused after an earlier call of this claim: the rest waits, untried (below).
            Some(_) => Vec::new(),
            None => {
                // Moved, not cloned: the claimed rows need only their ids from here on.
                let numbers: Vec<String> = call
                    .iter_mut()
                    .map(|c| std::mem::take(&mut c.e164))
                    .collect();
                let Some(outcomes) = self.check_within_grace(&numbers, shutdown).await else {
                    leases.release().await;
                    return None;
                };
                outcomes
            }
        };
        while outcomes.len() < call.len() {
            outcomes.push(match self.checker.paused_for() {
                Some(retry_in) => Outcome::Deferred {
                    retry_in,
                    reason: "the checker paused".into(),
                },
                None => Outcome::Retryable(Failure::no_answer(
                    "the checker returned no answer for this number",
                )),
            });
        }
        Some(outcomes)
    }

    /// Files one number's outcome as an answer or a retry.
    fn file_outcome(
        &self,
        c: &Claimed,
        outcome: Outcome,
        answers: &mut Vec<Answer>,
        retries: &mut Vec<Retry>,
    ) -> Settled {
        let max = self.config.max_attempts;
        answers.push(match outcome {
            Outcome::OnWhatsApp { wa_id, is_business } => {
                answer(c, NumberState::OnWhatsApp, Some(wa_id), is_business)
            }
            Outcome::NotOnWhatsApp => answer(c, NumberState::NotOnWhatsApp, None, false),
            // The customer reads our words; the upstream's detail goes to the operator's
            // log, naming the entry, never its number.
            Outcome::Retryable(failure) if c.attempts >= max => {
                tracing::warn!(batch_id = %c.batch_id, entry = c.idx, attempts = c.attempts,
                    detail = %failure.detail, "number ended in error");
                error_answer(
                    c,
                    format!(
                        "{} (gave up after {} attempts)",
                        failure.kind.public(),
                        c.attempts
                    ),
                )
            }
            Outcome::Retryable(failure) => {
                tracing::info!(batch_id = %c.batch_id, entry = c.idx, attempts = c.attempts,
                    detail = %failure.detail, "number to try again");
                retries.push(Retry {
                    batch_id: c.batch_id,
                    idx: c.idx,
                    chunk: c.chunk,
                    error: failure.kind.public().to_string(),
                });
                return Settled::Retry;
            }
            // Waiting for a checker is free, up to a point.
            Outcome::Deferred { .. }
                if chrono::Utc::now() - c.queued_at
                    > chrono::Duration::from_std(self.config.max_pending)
                        .unwrap_or(chrono::Duration::MAX) =>
            {
                error_answer(c, self.overdue_reason())
            }
            Outcome::Deferred { retry_in, .. } => return Settled::Deferred(retry_in),
        });
        Settled::Answered
    }

    /// Runs the check (the claim's leases are kept meanwhile); None when shutdown's grace
    /// ran out first.
    async fn check_within_grace(
        &self,
        numbers: &[String],
        shutdown: &CancellationToken,
    ) -> Option<Vec<Outcome>> {
        let grace = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.config.shutdown_grace).await;
        };
        tokio::select! {
            outcomes = self.checker.check(numbers) => Some(outcomes),
            _ = grace => None,
        }
    }

    /// Writes, retrying briefly on database errors; false when it still failed. Then the
    /// lease expires and another worker checks the numbers again: at least once, and the
    /// lease guard keeps the result written exactly once.
    async fn write(
        &self,
        token: Uuid,
        answers: &[Answer],
        retries: &[Retry],
        ends: &[(ChunkKey, ChunkEnd)],
        defer_for: Duration,
    ) -> bool {
        if answers.is_empty() && retries.is_empty() && ends.is_empty() {
            return true;
        }
        // Asked before writing: a batch watched only from later on gets its notification
        // without our origin, and its watchers read the rows back.
        let watched = self.hub.watched_among(answers.iter().map(|a| a.batch_id));
        let work = Completion {
            answers,
            retries,
            ends,
            defer_for,
            backoff_base: self.config.backoff_base,
            backoff_max: self.config.backoff_max,
            watched: &watched,
        };
        let cache_as = self.checker.cacheable().then(|| self.checker.name());
        let mut delay = Duration::from_millis(100);
        let mut written = false;
        let mut failed = false;
        for attempt in 1..=5 {
            match self.store.complete(token, cache_as, &work).await {
                Ok(rows) => {
                    self.hub.publish_written(rows);
                    written = true;
                    break;
                }
                Err(err) => {
                    tracing::warn!(attempt, error = %err, "writing results failed");
                    failed = true;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        // A failed attempt may have committed without our hearing of it (the connection
        // dropped after the commit): a later attempt then writes nothing, and that commit's
        // notification carried our origin, so our hub skipped it. Read the rows back.
        if failed {
            self.hub
                .reread(&watched, answers.iter().map(|a| (a.batch_id, a.idx)));
        }
        written
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

fn answer(c: &Claimed, state: NumberState, wa_id: Option<String>, is_business: bool) -> Answer {
    Answer {
        batch_id: c.batch_id,
        idx: c.idx,
        chunk: c.chunk,
        state,
        wa_id,
        is_business,
        error: None,
    }
}

fn error_answer(c: &Claimed, reason: String) -> Answer {
    Answer {
        error: Some(reason),
        ..answer(c, NumberState::Error, None, false)
    }
}
