//! One checking account in this process: its backend, its concurrency here, and its
//! status as last read from PostgreSQL. `run` asks it a slice of numbers, call by call,
//! each call within the account's shared cap and rate, and says what became of each.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::checker::isolate::ask;
use crate::checker::{Backend, CallError, CallResult, Outcome, Probe, timed_check};
use crate::domain::checker::AccountStatus;
use crate::store::Store;
use crate::store::checkers::Trouble;
use crate::store::rows::AccountRow;

/// Failed calls in a row (with nothing to blame on a number) that open the account's circuit.
pub const FAILURES_BEFORE_FAILING: i32 = 3;
/// Lone numbers failing in a row on an account whose session says it works, before the
/// account is taken for failing (a poison number is retried on few accounts at most).
const NUMBER_FAILURES_BEFORE_FAILING: i32 = 10;
/// How long a failing account rests before it is probed.
pub const FAILING_COOLDOWN: Duration = Duration::from_secs(60);
/// A throttled account's first pause, doubling per rate limit in a row, up to the max.
const THROTTLE_BASE: Duration = Duration::from_secs(30);
const THROTTLE_MAX: Duration = Duration::from_secs(3600);
/// How long a temporary ban lasts when WhatsApp does not say.
const BAN_DEFAULT: Duration = Duration::from_secs(6 * 3600);
/// How often a logged-out account's session is looked at again.
pub const LOGGED_OUT_PROBE: Duration = Duration::from_secs(30);

pub struct Account {
    pub id: Uuid,
    pub name: String,
    /// The row this account was built from (settings and status at the last refresh).
    pub row: Mutex<AccountRow>,
    backend: Arc<dyn Backend>,
    permits: Semaphore,
    store: Store,
    /// When the numbers this process has given the account will be asked, by its rate.
    booked: Mutex<DateTime<Utc>>,
}

/// What a slice of numbers came to on one account.
#[derive(Debug, Default)]
pub struct Slice {
    /// Numbers asked and answered (or failed on their own), by position in the call.
    pub answered: Vec<(usize, Outcome)>,
    /// Numbers the account could not take (its trouble, its cap): for another account.
    pub back: Vec<usize>,
    /// The account is in trouble: give it nothing more in this call.
    pub troubled: bool,
}

impl Account {
    pub fn new(row: AccountRow, backend: Arc<dyn Backend>, store: Store) -> Account {
        Account {
            id: row.id,
            name: row.name.clone(),
            permits: Semaphore::new(row.max_concurrency.max(1) as usize),
            row: Mutex::new(row),
            backend,
            store,
            booked: Mutex::new(Utc::now()),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn status(&self) -> AccountStatus {
        self.row.lock().expect("account row").status
    }

    /// When the account could ask one more number (seconds from `now`: the later of its
    /// shared rate's next slot and the work this process gave it), the seconds each number
    /// takes, and how many it has left today by the last refresh's count (the reservation
    /// decides for real).
    pub fn availability(&self, now: DateTime<Utc>) -> (f64, f64, usize) {
        let row = self.row.lock().expect("account row");
        let booked = *self.booked.lock().expect("account booking");
        let free = booked.max(row.next_slot).max(now);
        let left = if row.cap_today > 0 {
            (row.cap_today - row.checks_today).max(0) as usize
        } else {
            usize::MAX
        };
        ((free - now).as_seconds_f64(), 1.0 / row.rate_per_sec, left)
    }

    /// Books `numbers` more (positive) or fewer (negative) on the account's rate.
    pub fn book(&self, numbers: i64) {
        let rate = self.row.lock().expect("account row").rate_per_sec;
        let span = chrono::Duration::microseconds((numbers as f64 / rate * 1e6) as i64);
        let mut booked = self.booked.lock().expect("account booking");
        *booked = (*booked).max(Utc::now()) + span;
    }

    /// Asks `numbers` (position in the call, E.164), in calls of the backend's size.
    pub async fn run(&self, numbers: Vec<(usize, String)>) -> Slice {
        let mut slice = Slice::default();
        let Ok(_permit) = self.permits.acquire().await else {
            slice.back = numbers.into_iter().map(|(i, _)| i).collect();
            return slice;
        };
        // A backend asking number by number gets one number a call, so each request
        // waits its own slot of the account's rate (never a burst of requests).
        let per_call = if self.backend.one_request_per_call() {
            self.backend.max_batch().max(1)
        } else {
            1
        };
        let mut rest = numbers.as_slice();
        while !rest.is_empty() {
            let (call, after) = rest.split_at(per_call.min(rest.len()));
            rest = after;
            if !self.call(call, &mut slice).await {
                slice.back.extend(rest.iter().map(|(i, _)| *i));
                slice.troubled = true;
                break;
            }
        }
        // Numbers not asked here no longer hold the account's time.
        self.book(-(slice.back.len() as i64));
        slice
    }

    /// One call: reserve checks and a rate slot, ask, record. False when the account
    /// cannot go on (its numbers not answered are in `slice.back`).
    async fn call(&self, call: &[(usize, String)], slice: &mut Slice) -> bool {
        let reserved = match self.store.reserve_checks(self.id, call.len() as i32).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                // Removed meanwhile.
                slice.back.extend(call.iter().map(|(i, _)| *i));
                return false;
            }
            Err(err) => {
                tracing::warn!(account = %self.name, error = %err, "cannot reserve checks");
                slice.back.extend(call.iter().map(|(i, _)| *i));
                return false;
            }
        };
        let granted = (reserved.granted.max(0) as usize).min(call.len());
        let (asked, capped) = call.split_at(granted);
        // Past today's cap: those numbers go to another account (this one rests).
        slice.back.extend(capped.iter().map(|(i, _)| *i));
        if asked.is_empty() {
            return false;
        }
        let wait = (reserved.start_at - chrono::Utc::now())
            .to_std()
            .unwrap_or_default();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let numbers: Vec<String> = asked.iter().map(|(_, n)| n.clone()).collect();
        let healthy = self.row.lock().expect("account row").failures == 0;
        let backend = self.backend.as_ref();
        let result = ask(
            backend,
            &numbers,
            healthy,
            &|part: Vec<String>| async move { timed_check(backend, &part).await },
        )
        .await;
        self.settle(asked, result, slice).await
    }

    /// Files a call's result: answers kept, the rest back, the account's record updated.
    async fn settle(
        &self,
        asked: &[(usize, String)],
        result: CallResult,
        slice: &mut Slice,
    ) -> bool {
        let answered = result.outcomes.len().min(asked.len());
        for ((i, _), outcome) in asked.iter().zip(result.outcomes) {
            self.count(&outcome);
            slice.answered.push((*i, outcome));
        }
        let unanswered = &asked[answered..];
        let Some(error) = result.error else {
            // A backend that answered fewer numbers than asked: those count as an attempt.
            for (i, _) in unanswered {
                slice.answered.push((
                    *i,
                    Outcome::Retryable("the checker returned no answer for this number".into()),
                ));
            }
            self.worked(asked.len() as i32, false).await;
            return true;
        };
        // One number, alone in its request, failing: the account's session is looked at
        // (not a number). Working, the failure is the number's, an attempt; otherwise the
        // account's, and the number goes to another account.
        let mut error = error;
        if let (CallError::Failed(reason), [(i, _)]) = (&error, unanswered)
            && answered == 0
        {
            match self.backend.probe().await {
                Probe::Working => {
                    slice
                        .answered
                        .push((*i, Outcome::Retryable(reason.clone())));
                    metrics::counter!("wav_checks_total", "checker" => self.name.clone(), "outcome" => "number_error")
                        .increment(1);
                    let failures = self.worked(asked.len() as i32, true).await;
                    if failures >= NUMBER_FAILURES_BEFORE_FAILING {
                        let reason = format!(
                            "{failures} calls in a row failed though its session works; last: {reason}"
                        );
                        self.record_trouble(Trouble::Failing, Some(FAILING_COOLDOWN), &reason)
                            .await;
                        return false;
                    }
                    return true;
                }
                Probe::Trouble(trouble) => error = trouble,
            }
        }
        if answered > 0 {
            self.worked(answered as i32, false).await;
        }
        // The account's trouble: its numbers go to another account, uncounted.
        slice.back.extend(unanswered.iter().map(|(i, _)| *i));
        if let Err(err) = self
            .store
            .return_checks(self.id, unanswered.len() as i32)
            .await
        {
            tracing::warn!(account = %self.name, error = %err, "cannot give back unused checks");
        }
        metrics::counter!("wav_checks_total", "checker" => self.name.clone(), "outcome" => "account_error")
            .increment(unanswered.len() as u64);
        self.in_trouble(&error).await;
        false
    }

    fn count(&self, outcome: &Outcome) {
        let label = match outcome {
            Outcome::OnWhatsApp { .. } => "on_whatsapp",
            Outcome::NotOnWhatsApp => "not_on_whatsapp",
            Outcome::Retryable(_) | Outcome::Final(_) => "number_error",
            Outcome::Deferred { .. } => "deferred",
        };
        metrics::counter!("wav_checks_total", "checker" => self.name.clone(), "outcome" => label)
            .increment(1);
    }

    /// Records `asked` checks made; returns the failures in a row after them.
    async fn worked(&self, asked: i32, number_failed: bool) -> i32 {
        let failures = {
            let mut row = self.row.lock().expect("account row");
            row.failures = if number_failed { row.failures + 1 } else { 0 };
            row.checks_total += i64::from(asked);
            row.failures
        };
        if let Err(err) = self
            .store
            .account_worked(self.id, asked, number_failed)
            .await
        {
            tracing::warn!(account = %self.name, error = %err, "cannot record checks");
        }
        failures
    }

    /// Records the account's trouble in PostgreSQL (every replica stops using it) and logs
    /// the transition.
    pub async fn in_trouble(&self, error: &CallError) {
        let reason = error.reason();
        let (trouble, until) = match error {
            CallError::RateLimited { retry_after } => {
                let streak = self.row.lock().expect("account row").throttles;
                let backoff = THROTTLE_BASE
                    .saturating_mul(1 << streak.clamp(0, 10))
                    .min(THROTTLE_MAX);
                (
                    Trouble::Throttled,
                    Some(retry_after.unwrap_or_default().max(backoff)),
                )
            }
            CallError::LoggedOut(_) => (Trouble::LoggedOut, Some(LOGGED_OUT_PROBE)),
            CallError::Banned { until, .. } => {
                (Trouble::Banned, Some(until.unwrap_or(BAN_DEFAULT)))
            }
            // The operator must fix the settings; a probe checks now and then.
            CallError::Misconfigured(_) => (Trouble::Failing, Some(FAILING_COOLDOWN)),
            CallError::Unreachable(_) | CallError::Failed(_) => {
                let failures = match self.store.account_failed(self.id).await {
                    Ok(failures) => failures,
                    Err(err) => {
                        tracing::warn!(account = %self.name, error = %err, "cannot record a failure");
                        return;
                    }
                };
                self.row.lock().expect("account row").failures = failures;
                if failures < FAILURES_BEFORE_FAILING {
                    tracing::info!(account = %self.name, failures, reason, "checking account call failed");
                    return;
                }
                (Trouble::Failing, Some(FAILING_COOLDOWN))
            }
        };
        self.record_trouble(trouble, until, &reason).await;
    }

    /// Writes the account's trouble (every replica stops using it) and logs the change.
    async fn record_trouble(&self, trouble: Trouble, until: Option<Duration>, reason: &str) {
        let before = self.row.lock().expect("account row").status;
        match self
            .store
            .account_in_trouble(self.id, trouble, until, reason)
            .await
        {
            Ok(Some((failures, throttles))) => {
                let mut row = self.row.lock().expect("account row");
                row.failures = failures;
                row.throttles = throttles;
                row.status = trouble.status();
                row.status_reason = Some(reason.to_string());
            }
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(account = %self.name, error = %err, "cannot record the account's trouble");
                return;
            }
        }
        tracing::warn!(
            account = %self.name,
            from = %before,
            to = %trouble.status(),
            until_s = until.map(|u| u.as_secs()),
            reason,
            "checking account state changed"
        );
    }
}
