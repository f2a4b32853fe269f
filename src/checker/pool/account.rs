//! One checking account in this process: its backend, its concurrency here, and its
//! status as last read from PostgreSQL. `run` asks it a slice of numbers, call by call;
//! every upstream request is granted by PostgreSQL at the moment it starts
//! (`Store::take_checks`), so a pause, a closed hour or another replica's view of the
//! account's trouble stops the very next request, here and everywhere.
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::checker::isolate::ask;
use crate::checker::{Backend, CallError, CallResult, Failure, Outcome, timed_check};
use crate::domain::checker::{AccountStatus, RATE_PER_SEC};
use crate::store::Store;
use crate::store::checkers::{Backoff, Take, Trouble};
use crate::store::rows::AccountRow;

/// How often a logged-out or banned account's session is looked at again.
pub const LOGGED_OUT_PROBE: Duration = Duration::from_secs(30);
/// How long a temporary ban lasts when WhatsApp does not say.
const BAN_DEFAULT: Duration = Duration::from_secs(6 * 3600);
/// The longest a call waits for its account's next rate slot; past it the numbers go to
/// another account or back to the queue rather than holding the claim.
const MAX_SLOT_WAIT: Duration = Duration::from_secs(30);

/// What every account of a pool shares: how trouble is backed off, and how long a
/// half-open account's trial holds it.
#[derive(Debug, Clone)]
pub struct Rules {
    pub backoff: Backoff,
    pub trial_lease: Duration,
}

pub struct Account {
    pub id: Uuid,
    pub name: String,
    /// The row this account was built from (settings and status at the last refresh).
    pub row: Mutex<AccountRow>,
    backend: Arc<dyn Backend>,
    permits: Semaphore,
    store: Store,
    rules: Arc<Rules>,
    /// When the numbers this process has given the account will be asked, by its rate.
    booked: Mutex<DateTime<Utc>>,
    /// Numbers this account answered in this process: a number that failed here is the
    /// number's fault once it fails here again after the account answered others.
    answered: AtomicU64,
    /// When this process expects the account's rate to allow its next request (its last
    /// grant's end): a call waits until then before it asks PostgreSQL, which decides.
    slot_hint: Mutex<tokio::time::Instant>,
}

/// What a slice of numbers came to on one account.
#[derive(Debug, Default)]
pub struct Slice {
    /// Numbers asked and answered, by position in the call.
    pub answered: Vec<(usize, Outcome)>,
    /// Numbers the account could not take (its trouble, its cap, a refusal): for another
    /// account, uncounted.
    pub back: Vec<usize>,
    /// Numbers whose own request failed: the account's failure until the pool finds
    /// the number fails elsewhere too.
    pub suspects: Vec<Suspect>,
    /// The account cannot go on: give it nothing more in this call.
    pub troubled: bool,
}

/// A number whose own request failed on this account.
#[derive(Debug)]
pub struct Suspect {
    /// Position in the call.
    pub index: usize,
    pub reason: Failure,
    /// The account's answer count at the failure (answers to the same request's other
    /// numbers count as after it): a later count above it means the account answered
    /// other numbers since.
    pub mark: u64,
    /// Failed as a half-open account's trial: the account's failure, whatever else.
    pub trial: bool,
}

/// Checks taken for one call, given back unless they were spent on requests.
struct Taken {
    checks: AtomicUsize,
    spent: AtomicUsize,
}

impl Account {
    pub fn new(
        row: AccountRow,
        backend: Arc<dyn Backend>,
        store: Store,
        rules: Arc<Rules>,
    ) -> Account {
        Account {
            id: row.id,
            name: row.name.clone(),
            permits: Semaphore::new(row.max_concurrency.max(1) as usize),
            row: Mutex::new(row),
            backend,
            store,
            rules,
            booked: Mutex::new(Utc::now()),
            answered: AtomicU64::new(0),
            slot_hint: Mutex::new(tokio::time::Instant::now()),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    pub fn status(&self) -> AccountStatus {
        self.row.lock().expect("account row").status
    }

    /// Numbers answered by this account in this process.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::SeqCst)
    }

    /// Active (not half-open) by the last refresh.
    pub fn is_active(&self) -> bool {
        self.status() == AccountStatus::Active
    }

    /// Active, or half-open: throttled or failing with its wait over, so it may be given
    /// one number, its trial (PostgreSQL decides at the call).
    pub fn usable(&self, now: DateTime<Utc>) -> bool {
        let row = self.row.lock().expect("account row");
        match row.status {
            AccountStatus::Active => true,
            AccountStatus::Throttled | AccountStatus::Failing => {
                row.status_until.is_none_or(|until| until <= now)
            }
            _ => false,
        }
    }

    /// When the account could ask one more number (seconds from `now`: the later of its
    /// shared rate's next slot and the work this process gave it), the seconds each number
    /// takes, and how many it has left today by the last refresh's count (one for a
    /// half-open account's trial; the grant decides for real).
    pub fn availability(&self, now: DateTime<Utc>) -> (f64, f64, usize) {
        let row = self.row.lock().expect("account row");
        let booked = *self.booked.lock().expect("account booking");
        let free = booked.max(row.next_slot).max(now);
        let left = if row.status != AccountStatus::Active {
            1
        } else if row.cap_today > 0 {
            (row.cap_today - row.checks_today).max(0) as usize
        } else {
            usize::MAX
        };
        ((free - now).as_seconds_f64(), 1.0 / rate(&row), left)
    }

    /// Books `numbers` more (positive) or fewer (negative) on the account's rate.
    pub fn book(&self, numbers: i64) {
        let rate = rate(&self.row.lock().expect("account row"));
        let span = chrono::Duration::microseconds((numbers as f64 / rate * 1e6) as i64);
        let mut booked = self.booked.lock().expect("account booking");
        *booked = (*booked).max(Utc::now()) + span;
    }

    /// Asks `numbers` (position in the call, E.164), in calls of the backend's size.
    pub async fn run(&self, numbers: Vec<(usize, String)>) -> Slice {
        let mut slice = Slice::default();
        // A backend asking number by number gets one number a call, so each request
        // waits its own slot of the account's rate (never a burst of requests).
        let per_call = if self.backend.one_request_per_call() {
            self.backend.max_batch().max(1)
        } else {
            1
        };
        let mut rest = numbers.as_slice();
        while !rest.is_empty() {
            // A permit a request, not a slice: the semaphore serves first come first, so
            // a single check waiting for this account goes right after the request in
            // flight instead of after every number of the slice.
            let Ok(_permit) = self.permits.acquire().await else {
                slice.back.extend(rest.iter().map(|(i, _)| *i));
                break;
            };
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

    /// Takes up to `wanted` checks now, waiting for the account's rate slot; Err with why
    /// when the account may not ask (paused, trouble, hours, cap, removed).
    async fn take(&self, wanted: usize) -> Result<(usize, bool), String> {
        loop {
            // Asking before the slot this process knows of would only be told to wait.
            let hint = *self.slot_hint.lock().expect("slot hint");
            tokio::time::sleep_until(hint).await;
            let take = self
                .store
                .take_checks(self.id, wanted as i32, self.rules.trial_lease)
                .await;
            let now = tokio::time::Instant::now();
            match take {
                Ok(Take::Granted { checks, trial }) => {
                    let span = Duration::from_secs_f64(
                        f64::from(checks.max(0)) / rate(&self.row.lock().expect("account row")),
                    );
                    self.hint(now + span);
                    return Ok((checks.max(0) as usize, trial));
                }
                Ok(Take::Wait(wait)) if wait <= MAX_SLOT_WAIT => self.hint(now + wait),
                Ok(Take::Wait(wait)) => {
                    return Err(format!("its next slot is {}s away", wait.as_secs()));
                }
                Ok(Take::Refused(reason)) => return Err(reason),
                Err(err) => {
                    tracing::warn!(account = %self.name, error = %err, "cannot take checks");
                    return Err("its checks cannot be counted now".into());
                }
            }
        }
    }

    /// Moves the slot this process knows of later (never earlier: another call of this
    /// process may have learnt of a later one).
    fn hint(&self, at: tokio::time::Instant) {
        let mut hint = self.slot_hint.lock().expect("slot hint");
        *hint = (*hint).max(at);
    }

    /// One call: take checks at the moment of each request, ask, record. False when the
    /// account cannot go on (its numbers not answered are in `slice.back`).
    async fn call(&self, call: &[(usize, String)], slice: &mut Slice) -> bool {
        let (granted, trial) = match self.take(call.len()).await {
            Ok(taken) => taken,
            Err(reason) => {
                tracing::debug!(account = %self.name, reason, "account may not ask now");
                self.note_refusal(&reason);
                slice.back.extend(call.iter().map(|(i, _)| *i));
                return false;
            }
        };
        let (asked, capped) = call.split_at(granted.min(call.len()));
        // Not granted (today's cap, a half-open trial's one number): for another account.
        slice.back.extend(capped.iter().map(|(i, _)| *i));
        let numbers: Vec<String> = asked.iter().map(|(_, n)| n.clone()).collect();
        let healthy = self.row.lock().expect("account row").failures == 0 && !trial;
        let taken = Taken {
            checks: AtomicUsize::new(asked.len()),
            spent: AtomicUsize::new(0),
        };
        let first = std::sync::atomic::AtomicBool::new(true);
        let backend = self.backend.as_ref();
        let (taken_ref, first_ref) = (&taken, &first);
        // Each request upstream spends its own checks: the first the call's, every
        // request of a split its own, granted when it starts.
        let request = |part: Vec<String>| async move {
            if !first_ref.swap(false, Ordering::SeqCst) {
                match self.take(part.len()).await {
                    Ok((n, _)) if n == part.len() => {
                        taken_ref.checks.fetch_add(n, Ordering::SeqCst);
                    }
                    Ok((n, _)) => {
                        self.give_back(n).await;
                        return CallResult::failed(
                            vec![],
                            CallError::Withheld("daily cap reached".into()),
                        );
                    }
                    Err(reason) => return CallResult::failed(vec![], CallError::Withheld(reason)),
                }
            }
            let result = timed_check(backend, &part).await;
            // A request refused for the account's trouble looked nothing up.
            if matches!(result.error, None | Some(CallError::Failed(_)))
                || !result.outcomes.is_empty()
            {
                taken_ref.spent.fetch_add(part.len(), Ordering::SeqCst);
            }
            result
        };
        let result = ask(backend, &numbers, healthy, &request).await;
        let unused = taken
            .checks
            .load(Ordering::SeqCst)
            .saturating_sub(taken.spent.load(Ordering::SeqCst));
        self.give_back(unused).await;
        self.settle(asked, result, trial, slice).await
    }

    async fn give_back(&self, unused: usize) {
        if unused == 0 {
            return;
        }
        if let Err(err) = self.store.return_checks(self.id, unused as i32).await {
            tracing::warn!(account = %self.name, error = %err, "cannot give back unused checks");
        }
    }

    /// A refusal says the account's state changed since the last refresh: stop giving it
    /// numbers here until the next refresh says otherwise.
    fn note_refusal(&self, reason: &str) {
        let mut row = self.row.lock().expect("account row");
        if row.status == AccountStatus::Active {
            row.status = AccountStatus::Resting;
            row.status_reason = Some(reason.to_string());
        } else {
            // A half-open account whose trial another call or replica holds.
            row.status_until = Some(Utc::now() + self.rules.trial_lease);
        }
    }

    /// Files a call's result: answers kept, the rest back, the account's record updated.
    async fn settle(
        &self,
        asked: &[(usize, String)],
        result: CallResult,
        trial: bool,
        slice: &mut Slice,
    ) -> bool {
        let answered = result.outcomes.len().min(asked.len());
        // The same request's (or split call's) answers count as after its failures.
        let before = self.answered();
        let suspect = |index: usize, reason: Failure, mark: u64| Suspect {
            index,
            reason,
            mark,
            trial,
        };
        let mut worked = 0;
        for ((i, _), outcome) in asked.iter().zip(result.outcomes) {
            match outcome {
                // A number that failed on its own while others were answered: a suspect.
                Outcome::Retryable(reason) => {
                    self.count("suspect", 1);
                    slice.suspects.push(suspect(*i, reason, before));
                }
                outcome => {
                    self.count(label(&outcome), 1);
                    worked += 1;
                    slice.answered.push((*i, outcome));
                }
            }
        }
        self.answered.fetch_add(worked, Ordering::SeqCst);
        let unanswered = &asked[answered..];
        let Some(error) = result.error else {
            // A backend that answered fewer numbers than asked: suspects too.
            for (i, _) in unanswered {
                let failure = Failure::no_answer("the checker returned no answer for this number");
                slice.suspects.push(suspect(*i, failure, before));
            }
            self.worked(asked.len() as i32, trial).await;
            return true;
        };
        if answered > 0 {
            self.worked(answered as i32, trial).await;
        }
        if let CallError::Withheld(reason) = &error {
            self.note_refusal(reason);
            slice.back.extend(unanswered.iter().map(|(i, _)| *i));
            return false;
        }
        // One number alone in its request failing: the account's failure for now (its
        // breaker counts it), and the number a suspect the pool asks elsewhere.
        if let (CallError::Failed(_), [(i, _)]) = (&error, unanswered)
            && answered == 0
        {
            self.count("suspect", 1);
            slice
                .suspects
                .push(suspect(*i, Failure::of_call(&error), self.answered()));
            return !self.in_trouble(&error, trial).await;
        }
        // The account's trouble: its numbers go to another account, uncounted.
        slice.back.extend(unanswered.iter().map(|(i, _)| *i));
        self.count("account_error", unanswered.len() as u64);
        self.in_trouble(&error, trial).await;
        false
    }

    fn count(&self, label: &'static str, n: u64) {
        metrics::counter!("wav_checks_total", "checker" => self.name.clone(), "outcome" => label)
            .increment(n);
    }

    /// Records `asked` checks made; a trial's answer ends the account's trouble.
    async fn worked(&self, asked: i32, trial: bool) {
        {
            let mut row = self.row.lock().expect("account row");
            row.failures = 0;
            row.checks_total += i64::from(asked);
            if trial {
                row.status = AccountStatus::Active;
                row.status_reason = None;
                row.throttles = 0;
            }
        }
        if let Err(err) = self.store.account_worked(self.id, asked, trial).await {
            tracing::warn!(account = %self.name, error = %err, "cannot record checks");
        }
        if trial {
            tracing::info!(account = %self.name, to = "active", "checking account state changed: its trial was answered");
        }
    }

    /// A suspect's failure here turned out to be the number's: the failure it added to
    /// the account's streak is taken back.
    pub async fn absolve(&self) {
        let threshold = self.rules.backoff.failures_before_failing;
        if let Err(err) = self.store.account_absolved(self.id, threshold).await {
            tracing::warn!(account = %self.name, error = %err, "cannot take back a failure");
        }
    }

    /// Records the account's trouble in PostgreSQL (every replica stops using it) and logs
    /// the transition. True when the account is now out of use. `trial`: the half-open
    /// account's one request (its trouble doubles the wait; others met the same episode).
    pub async fn in_trouble(&self, error: &CallError, trial: bool) -> bool {
        let reason = error.reason();
        let (trouble, at_least) = match error {
            CallError::RateLimited { retry_after } => {
                (Trouble::Throttled, retry_after.unwrap_or_default())
            }
            CallError::LoggedOut(_) => (Trouble::LoggedOut, LOGGED_OUT_PROBE),
            CallError::Banned { until, .. } => (Trouble::Banned, until.unwrap_or(BAN_DEFAULT)),
            // Nothing was asked: the numbers go elsewhere, the account's state stands.
            CallError::Withheld(_) => return true,
            CallError::Misconfigured(_) | CallError::Unreachable(_) | CallError::Failed(_) => {
                let failures = match self.store.account_failed(self.id, trial).await {
                    Ok(failures) => failures,
                    Err(err) => {
                        tracing::warn!(account = %self.name, error = %err, "cannot record a failure");
                        return true;
                    }
                };
                self.row.lock().expect("account row").failures = failures;
                // The operator must fix wrong settings: no point trying twice more.
                let settings = matches!(error, CallError::Misconfigured(_));
                if failures < self.rules.backoff.failures_before_failing && !settings {
                    tracing::info!(account = %self.name, failures, reason, "checking account call failed");
                    return false;
                }
                (Trouble::Failing, Duration::ZERO)
            }
        };
        self.record_trouble(trouble, at_least, &reason, trial).await;
        true
    }

    /// Writes the account's trouble (every replica stops using it) and logs the change.
    async fn record_trouble(
        &self,
        trouble: Trouble,
        at_least: Duration,
        reason: &str,
        trial: bool,
    ) {
        let before = self.row.lock().expect("account row").status;
        let wait = match self
            .store
            .account_in_trouble(
                self.id,
                trouble,
                at_least,
                &self.rules.backoff,
                reason,
                trial,
            )
            .await
        {
            Ok(Some((failures, throttles, wait))) => {
                let mut row = self.row.lock().expect("account row");
                row.failures = failures;
                row.throttles = throttles;
                row.status = trouble.status();
                row.status_reason = Some(reason.to_string());
                row.status_until = Some(Utc::now() + Duration::from_secs_f64(wait));
                wait
            }
            Ok(None) => return,
            Err(err) => {
                tracing::warn!(account = %self.name, error = %err, "cannot record the account's trouble");
                return;
            }
        };
        tracing::warn!(
            account = %self.name,
            from = %before,
            to = %trouble.status(),
            wait_s = wait,
            reason,
            "checking account state changed"
        );
    }
}

/// The account's rate within the door's bounds (a row written before the door refused
/// tiny rates, or by hand, must not overflow the booking's arithmetic).
fn rate(row: &AccountRow) -> f64 {
    if row.rate_per_sec.is_nan() {
        return *RATE_PER_SEC.start();
    }
    row.rate_per_sec
        .clamp(*RATE_PER_SEC.start(), *RATE_PER_SEC.end())
}

/// The `outcome` label of an answer in `wav_checks_total`.
fn label(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::OnWhatsApp { .. } => "on_whatsapp",
        Outcome::NotOnWhatsApp => "not_on_whatsapp",
        Outcome::Retryable(_) => "number_error",
        Outcome::Deferred { .. } => "deferred",
    }
}
