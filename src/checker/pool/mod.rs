//! `--checker pool`: the workers check through every usable checking account in
//! PostgreSQL (`wavalidate checker add ...`). Each number of a call goes to the usable
//! account that can ask it soonest (so accounts share the work by their rates), ties to
//! the healthiest and least used today; numbers an account cannot take (its trouble, its
//! cap, a refusal at the moment of its request) go to another account at once, uncounted.
//! Accounts' caps, rates and states are shared by every replica through PostgreSQL, which
//! grants each request as it starts; this process re-reads them every second to plan,
//! probes logged-out and banned accounts (their session's status, not a number) and
//! gives throttled and failing ones a trial number once their backoff is over.
//!
//! A number whose own request fails is the account's failure first (its breaker counts
//! it): it is asked elsewhere, and only when it fails on a second account too, or again
//! on the same one after that account answered other numbers, is it the number's fault
//! (an attempt counted against it).
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::evolution::Evolution;
use super::waha::Waha;
use super::{Backend, Checker, Outcome, Probe};
use crate::domain::checker::{AccountBackend, AccountStatus};
use crate::settings::{EvolutionSettings, Secret, WahaSettings};
use crate::store::Store;
use crate::store::rows::AccountRow;

mod account;

pub use account::Rules;
use account::{Account, LOGGED_OUT_PROBE, Slice, Suspect};

/// How often accounts are re-read (so changes reach running processes within seconds).
const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// A claim holds about this much of the usable accounts' combined rate.
const CLAIM_SECONDS: f64 = 5.0;
const MAX_CLAIM: usize = 500;
/// How long a suspect number's failures are remembered.
const SUSPECT_MEMORY: Duration = Duration::from_secs(3600);

/// Which accounts a pool uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Members {
    /// Those added with `wavalidate checker add` (`--checker pool`).
    Added,
    /// The one set by flags (`--checker waha|evolution|whatsapp-web`), by id.
    Only(Uuid),
}

pub struct Pool {
    /// Keys the result cache: `pool`, or a single backend's name (`waha`, ...).
    name: &'static str,
    store: Store,
    http_timeout: Duration,
    members: Members,
    rules: Arc<Rules>,
    accounts: RwLock<Vec<Arc<Account>>>,
    /// Numbers (by a keyed hash, never their digits) whose own request failed on an
    /// account, not yet judged: which accounts, and their answer counts then.
    suspects: Mutex<HashMap<u64, Known>>,
    hasher: std::collections::hash_map::RandomState,
}

/// What this process knows of a number whose own request failed.
#[derive(Debug)]
struct Known {
    /// Each account it failed on, with that account's answer count at its last failure.
    failed_on: Vec<(Uuid, u64)>,
    /// Accounts whose streak still counts one of its failures.
    unabsolved: Vec<Uuid>,
    /// Found at fault once: its next failures count at once.
    at_fault: bool,
    since: Instant,
}

impl Pool {
    /// Reads the accounts, then keeps them fresh and probes troubled ones until shutdown.
    pub async fn start(
        name: &'static str,
        store: Store,
        http_timeout: Duration,
        members: Members,
        rules: Rules,
        shutdown: CancellationToken,
    ) -> Arc<Pool> {
        let pool = Arc::new(Pool {
            name,
            store,
            http_timeout,
            members,
            rules: Arc::new(rules),
            accounts: RwLock::new(Vec::new()),
            suspects: Mutex::new(HashMap::new()),
            hasher: std::collections::hash_map::RandomState::new(),
        });
        pool.refresh().await;
        let keeper = pool.clone();
        tokio::spawn(async move {
            crate::runtime::every(REFRESH_EVERY, &shutdown, || async {
                keeper.refresh().await;
                keeper.probe_due();
                crate::runtime::Next::Wait
            })
            .await;
        });
        pool
    }

    fn accounts(&self) -> Vec<Arc<Account>> {
        self.accounts.read().expect("accounts").clone()
    }

    /// Re-reads every account: new ones get a backend, removed ones go, changed settings
    /// rebuild theirs; status changes are logged and counted.
    async fn refresh(&self) {
        let (rows, unreadable) = match self.store.accounts().await {
            Ok(read) => read,
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the checking accounts");
                return;
            }
        };
        for bad in &unreadable {
            tracing::warn!(account = %bad.name, reason = %bad.reason, "skipping a checking account that cannot be read");
        }
        let rows: Vec<AccountRow> = rows
            .into_iter()
            .filter(|r| match self.members {
                Members::Added => !r.from_flags,
                Members::Only(id) => r.id == id,
            })
            .collect();
        self.suspects
            .lock()
            .expect("suspects")
            .retain(|_, s| s.since.elapsed() < SUSPECT_MEMORY);
        let current: HashMap<Uuid, Arc<Account>> =
            self.accounts().into_iter().map(|a| (a.id, a)).collect();
        let mut next = Vec::with_capacity(rows.len());
        let mut counts: HashMap<AccountStatus, usize> = HashMap::new();
        for row in rows {
            *counts.entry(row.status).or_default() += 1;
            let reusable = current.get(&row.id).filter(|a| {
                let old = a.row.lock().expect("account row");
                old.config == row.config
                    && old.backend == row.backend
                    && old.max_concurrency == row.max_concurrency
            });
            match reusable {
                Some(account) => {
                    let mut old = account.row.lock().expect("account row");
                    if old.status != row.status {
                        tracing::info!(
                            account = %row.name,
                            from = %old.status,
                            to = %row.status,
                            reason = row.status_reason.as_deref().unwrap_or(""),
                            "checking account state changed"
                        );
                    }
                    *old = row;
                    drop(old);
                    next.push(account.clone());
                }
                None => match self.backend(&row) {
                    Ok(backend) => {
                        tracing::info!(account = %row.name, backend = row.backend.name(), status = %row.status, "checking account ready");
                        next.push(Arc::new(Account::new(
                            row,
                            backend,
                            self.store.clone(),
                            self.rules.clone(),
                        )));
                    }
                    Err(err) => {
                        tracing::warn!(account = %row.name, error = %err, "cannot set up the checking account");
                    }
                },
            }
        }
        for status in AccountStatus::ALL {
            metrics::gauge!("wav_checker_accounts", "state" => status.as_str())
                .set(counts.get(&status).copied().unwrap_or(0) as f64);
        }
        *self.accounts.write().expect("accounts") = next;
    }

    fn backend(&self, row: &AccountRow) -> anyhow::Result<Arc<dyn Backend>> {
        let config = row.config.clone();
        Ok(match row.backend {
            AccountBackend::Waha => Arc::new(Waha::new(
                &WahaSettings {
                    url: config.url,
                    session: config.session.unwrap_or_else(|| "default".into()),
                    api_key: config.api_key.map(Secret::new),
                },
                self.http_timeout,
            )?),
            AccountBackend::Evolution => Arc::new(Evolution::new(
                &EvolutionSettings {
                    url: config.url,
                    instance: config.instance,
                    api_key: config.api_key.map(Secret::new),
                },
                self.http_timeout,
            )?),
            AccountBackend::WhatsappWeb => {
                Arc::new(linked::Linked::new(config.session_db_or_default(&row.name)))
            }
        })
    }

    /// Probes logged-out and banned accounts whose wait is over, one replica each, each on
    /// its own task (a gateway that hangs delays neither the others nor the refresh): a
    /// session that works makes the account active again. Throttled and failing accounts
    /// are not probed: a session that says it works proves nothing about a rate limit or
    /// a gateway failing checks, so they get a trial number instead.
    fn probe_due(self: &Arc<Self>) {
        let now = chrono::Utc::now();
        let due: Vec<Arc<Account>> = self
            .accounts()
            .into_iter()
            .filter(|a| {
                let row = a.row.lock().expect("account row");
                matches!(row.status, AccountStatus::LoggedOut | AccountStatus::Banned)
                    && row.status_until.is_none_or(|until| until <= now)
            })
            .collect();
        for account in due {
            let pool = self.clone();
            tokio::spawn(async move { pool.probe(account).await });
        }
    }

    async fn probe(&self, account: Arc<Account>) {
        match self.store.claim_probe(account.id, LOGGED_OUT_PROBE).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(err) => {
                tracing::warn!(account = %account.name, error = %err, "cannot claim a probe");
                return;
            }
        }
        match account.backend().probe().await {
            Probe::Working => {
                let before = account.status();
                if let Err(err) = self.store.account_recovered(account.id).await {
                    tracing::warn!(account = %account.name, error = %err, "cannot record the recovery");
                    return;
                }
                let mut row = account.row.lock().expect("account row");
                row.status = AccountStatus::Active;
                row.status_reason = None;
                row.failures = 0;
                tracing::info!(account = %account.name, from = %before, to = "active", "checking account state changed: its session works again");
            }
            Probe::Trouble(trouble) => {
                account.in_trouble(&trouble, false).await;
            }
        }
    }

    /// Accounts that may be given checks now (active, or half-open for a trial), most
    /// preferred first: the healthiest, then the least used today.
    fn usable(&self, excluded: &HashSet<Uuid>) -> Vec<Arc<Account>> {
        let now = chrono::Utc::now();
        let mut usable: Vec<(Arc<Account>, (bool, i32, i64))> = self
            .accounts()
            .into_iter()
            .filter(|a| !excluded.contains(&a.id) && a.usable(now))
            .map(|a| {
                let row = a.row.lock().expect("account row");
                let key = (
                    row.status != AccountStatus::Active,
                    row.failures,
                    i64::from(row.checks_today),
                );
                drop(row);
                (a, key)
            })
            .collect();
        usable.sort_by_key(|(_, key)| *key);
        usable.into_iter().map(|(a, _)| a).collect()
    }

    /// How long until an account may be usable again, for numbers no account took.
    fn next_available(&self) -> Duration {
        let now = chrono::Utc::now();
        self.accounts()
            .iter()
            .filter_map(|a| a.row.lock().expect("account row").status_until)
            .map(|until| (until - now).to_std().unwrap_or_default())
            .min()
            .unwrap_or(REFRESH_EVERY)
            .clamp(Duration::from_millis(100), REFRESH_EVERY)
    }
}

/// Gives each number of `todo` (positions) to the account that can ask it soonest: its
/// next free moment is the later of now, its shared rate's next slot and what this process
/// already gave it, and each number takes it 1/rate longer. So numbers spread in
/// proportion to the accounts' rates and around the work they already have; ties go to
/// the most preferred (the order of `accounts`), and no account gets more than it has left
/// today, nor a number `may` keeps from it, nor work that would start past `CLAIM_SECONDS`
/// from now. What no account can take is left in `todo` (back to the queue, uncounted).
fn assign(
    todo: &mut Vec<usize>,
    accounts: &[Arc<Account>],
    may: impl Fn(usize, &Account) -> bool,
) -> Vec<(Arc<Account>, Vec<usize>)> {
    let now = chrono::Utc::now();
    let mut free: Vec<(f64, f64, usize)> = accounts.iter().map(|a| a.availability(now)).collect();
    let mut parts: Vec<Vec<usize>> = vec![Vec::new(); accounts.len()];
    let mut kept = Vec::new();
    while let Some(number) = todo.pop() {
        // The first of equals: `min_by` keeps the earliest minimum.
        // Nothing beyond the claim's horizon: a slow account is not handed work it would
        // hold for minutes while a faster one (back from its trouble) could do it.
        let soonest = (0..free.len())
            .filter(|&i| free[i].2 > 0 && free[i].0 <= CLAIM_SECONDS && may(number, &accounts[i]))
            .min_by(|&a, &b| free[a].0.total_cmp(&free[b].0));
        let Some(soonest) = soonest else {
            kept.push(number);
            continue;
        };
        parts[soonest].push(number);
        let (at, step, left) = &mut free[soonest];
        *at += *step;
        *left -= 1;
    }
    kept.reverse();
    *todo = kept;
    accounts
        .iter()
        .zip(parts)
        .filter(|(_, part)| !part.is_empty())
        .map(|(account, part)| {
            account.book(part.len() as i64);
            (account.clone(), part)
        })
        .collect()
}

impl Pool {
    fn key(&self, e164: &str) -> u64 {
        self.hasher.hash_one(e164)
    }

    /// Numbers whose own request has failed before (a half-open account's trial is not
    /// spent on them: their failure would say nothing about the account).
    /// Of `todo`'s numbers, those; one look at the memory, no hashing while it is empty.
    fn suspected(&self, todo: &[usize], e164: &[String]) -> HashSet<usize> {
        let memory = self.suspects.lock().expect("suspects");
        if memory.is_empty() {
            return HashSet::new();
        }
        todo.iter()
            .copied()
            .filter(|&i| memory.contains_key(&self.key(&e164[i])))
            .collect()
    }

    /// Whether a number may go to `account` in this call: to an account it has not failed
    /// on here; to one it failed on only when every usable account has failed it and that
    /// one has answered other numbers since (then a failure there again is the number's).
    /// Across calls it may go anywhere: a failure nobody can judge is the account's, and
    /// its breaker decides.
    fn may_ask(
        failed: &HashMap<usize, Vec<(Uuid, u64)>>,
        usable: &[Arc<Account>],
        number: usize,
        account: &Account,
    ) -> bool {
        let Some(on) = failed.get(&number) else {
            return true;
        };
        let failed_on = |a: &Account| on.iter().find(|(id, _)| *id == a.id);
        match failed_on(account) {
            None => true,
            Some((_, mark)) => {
                account.answered() > *mark && usable.iter().all(|a| failed_on(a).is_some())
            }
        }
    }

    /// A number whose own request failed on `account`, with `usable` the accounts it
    /// could still go to: true when that makes it the number's fault, and then the
    /// failures it added to the accounts' streaks are taken back. It is at fault when it
    /// has failed on another account too; or failed on this one before, this account
    /// answered other numbers between the two failures, and no usable account is left
    /// that it has not failed on; or it was found at fault before (its next failures
    /// count at once). A half-open account's trial failure is the account's unless the
    /// number failed on another account too.
    async fn judge(
        &self,
        key: u64,
        account: &Arc<Account>,
        failure: &Suspect,
        usable: &[Uuid],
    ) -> bool {
        let absolve: Vec<Uuid> = {
            let mut memory = self.suspects.lock().expect("suspects");
            let known = memory.entry(key).or_insert_with(|| Known {
                failed_on: Vec::new(),
                unabsolved: Vec::new(),
                at_fault: false,
                since: Instant::now(),
            });
            known.unabsolved.push(account.id);
            let elsewhere = known.failed_on.iter().any(|(id, _)| *id != account.id);
            let again = known
                .failed_on
                .iter()
                .any(|(id, mark)| *id == account.id && failure.mark > *mark);
            let fresh_left = usable
                .iter()
                .any(|u| *u != account.id && known.failed_on.iter().all(|(id, _)| id != u));
            known.failed_on.retain(|(id, _)| *id != account.id);
            known.failed_on.push((account.id, failure.mark));
            // Failing on two accounts convicts it even on a trial; the weaker evidence
            // (again on one account, or a past conviction) does not outweigh a trial's.
            let guilty =
                elsewhere || (!failure.trial && (known.at_fault || (again && !fresh_left)));
            if !guilty {
                return false;
            }
            known.at_fault = true;
            std::mem::take(&mut known.unabsolved)
        };
        for account in self.accounts().iter().filter(|a| absolve.contains(&a.id)) {
            account.absolve().await;
        }
        true
    }
}

#[async_trait]
impl Checker for Pool {
    fn name(&self) -> &'static str {
        self.name
    }

    /// About `CLAIM_SECONDS` of each usable account's rate, at most one backend call's
    /// worth each: the workers renew their leases (and write results) between calls, so a
    /// call is never much longer than one upstream call per account.
    fn max_batch(&self) -> usize {
        let numbers: usize = self
            .usable(&HashSet::new())
            .iter()
            .map(|a| {
                let rate = a.row.lock().expect("account row").rate_per_sec;
                ((rate * CLAIM_SECONDS).ceil() as usize).min(a.backend().max_batch())
            })
            .sum();
        numbers.clamp(1, MAX_CLAIM)
    }

    fn paused_for(&self) -> Option<Duration> {
        self.usable(&HashSet::new())
            .is_empty()
            .then(|| self.next_available())
    }

    async fn check(&self, e164: &[String]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; e164.len()];
        // Already shuffled by the workers: no account gets a run of consecutive numbers.
        let mut todo: Vec<usize> = (0..e164.len()).collect();
        let mut excluded = HashSet::new();
        // Numbers of this call whose own request failed: the accounts, with their answer
        // counts before.
        let mut failed: HashMap<usize, Vec<(Uuid, u64)>> = HashMap::new();
        while !todo.is_empty() {
            let accounts = self.usable(&excluded);
            if accounts.is_empty() {
                break;
            }
            // A half-open account's trial goes to a number not suspected, where there is one.
            let suspected = self.suspected(&todo, e164);
            let only_suspects = suspected.len() == todo.len();
            let slices = assign(&mut todo, &accounts, |i, a| {
                Pool::may_ask(&failed, &accounts, i, a)
                    && (a.is_active() || only_suspects || !suspected.contains(&i))
            });
            let usable: Vec<Uuid> = accounts.iter().map(|a| a.id).collect();
            if slices.is_empty() {
                // Every usable account is at its cap, or has failed the numbers left.
                break;
            }
            let runs = slices.into_iter().map(|(account, part)| async move {
                let numbers = part.iter().map(|&i| (i, e164[i].clone())).collect();
                let slice: Slice = account.run(numbers).await;
                (account, slice)
            });
            for (account, slice) in futures::future::join_all(runs).await {
                {
                    // An answer clears the number of suspicion (hashed only while any is held).
                    let mut memory = self.suspects.lock().expect("suspects");
                    for (i, outcome) in slice.answered {
                        failed.remove(&i);
                        if !memory.is_empty() {
                            memory.remove(&self.key(&e164[i]));
                        }
                        outcomes[i] = Some(outcome);
                    }
                }
                for failure in slice.suspects {
                    let i = failure.index;
                    let on = failed.entry(i).or_default();
                    on.retain(|(id, _)| *id != account.id);
                    on.push((account.id, failure.mark));
                    let key = self.key(&e164[i]);
                    if self.judge(key, &account, &failure, &usable).await {
                        metrics::counter!("wav_checks_total", "checker" => account.name.clone(), "outcome" => "number_error")
                            .increment(1);
                        outcomes[i] = Some(Outcome::Retryable(failure.reason));
                    } else {
                        todo.push(i);
                    }
                }
                if slice.troubled || !slice.back.is_empty() {
                    excluded.insert(account.id);
                }
                todo.extend(slice.back);
            }
        }
        // What no account could take goes back to the queue, uncounted.
        let retry_in = self.next_available();
        outcomes
            .into_iter()
            .map(|o| {
                o.unwrap_or_else(|| Outcome::Deferred {
                    reason: "no checking account available".into(),
                    retry_in,
                })
            })
            .collect()
    }
}

/// WhatsApp Web accounts: the linked device's session, connected on first use.
mod linked {
    use async_trait::async_trait;

    use crate::checker::{Backend, CallError, CallResult, Probe};

    pub struct Linked {
        #[cfg_attr(not(feature = "whatsapp-web"), allow(dead_code))]
        session_db: String,
        #[cfg(feature = "whatsapp-web")]
        client: tokio::sync::OnceCell<crate::checker::whatsapp_web::WhatsAppWeb>,
    }

    impl Linked {
        pub fn new(session_db: String) -> Linked {
            Linked {
                session_db,
                #[cfg(feature = "whatsapp-web")]
                client: tokio::sync::OnceCell::new(),
            }
        }

        #[cfg(feature = "whatsapp-web")]
        async fn client(&self) -> Result<&crate::checker::whatsapp_web::WhatsAppWeb, CallError> {
            self.client
                .get_or_try_init(|| {
                    crate::checker::whatsapp_web::WhatsAppWeb::connect(&self.session_db)
                })
                .await
                .map_err(|e| CallError::LoggedOut(format!("{e:#}")))
        }

        #[cfg(not(feature = "whatsapp-web"))]
        async fn client(&self) -> Result<&dyn Backend, CallError> {
            Err(CallError::Misconfigured(
                "this build has no whatsapp-web backend: build with --features whatsapp-web".into(),
            ))
        }
    }

    #[async_trait]
    impl Backend for Linked {
        fn name(&self) -> &'static str {
            "whatsapp-web"
        }

        fn max_batch(&self) -> usize {
            50
        }

        async fn check(&self, e164: &[String]) -> CallResult {
            match self.client().await {
                Ok(client) => client.check(e164).await,
                Err(trouble) => CallResult::failed(vec![], trouble),
            }
        }

        async fn probe(&self) -> Probe {
            match self.client().await {
                Ok(client) => client.probe().await,
                Err(trouble) => Probe::Trouble(trouble),
            }
        }
    }
}
