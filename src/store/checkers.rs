//! Checking accounts (`checkers`): managed by `wavalidate checker`, read and updated by
//! the pool in every replica. Each statement locks one account row, alone.
use std::time::Duration;

use uuid::Uuid;

use super::rows::AccountRow;
use super::{Result, Store, StoreError};
use crate::domain::checker::{AccountPacing, AccountStatus, Hours, NewAccount, PacingChange};

macro_rules! account_columns {
    () => {
        "id, name, backend, config, rate_per_sec, max_concurrency, daily_cap,
         warmup_days, hours_start, hours_end, timezone, paused, from_flags, state, failures, throttles,
         checks_today, cap_today, checks_total, checker_finite(last_check_at) AS last_check_at,
         checker_finite(next_slot) AS next_slot, status,
         checker_finite(status_until) AS status_until, status_reason"
    };
}

/// What trouble an account is in, as stored (`checkers.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    Throttled,
    LoggedOut,
    Banned,
    Failing,
}

impl Trouble {
    /// The account's status while in this trouble.
    pub fn status(self) -> AccountStatus {
        match self {
            Trouble::Throttled => AccountStatus::Throttled,
            Trouble::LoggedOut => AccountStatus::LoggedOut,
            Trouble::Banned => AccountStatus::Banned,
            Trouble::Failing => AccountStatus::Failing,
        }
    }
}

/// An account whose row cannot be read as it stands (named, with why).
#[derive(Debug, Clone)]
pub struct Unreadable {
    pub name: String,
    pub reason: String,
}

/// What `take_checks` gave a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Take {
    /// Ask this many now; `trial`: the half-open account's one check.
    Granted { checks: i32, trial: bool },
    /// Not yet: the account's rate lets the next call start after this long.
    Wait(Duration),
    /// Not this account, for this reason (paused, its trouble, its hours, its cap, removed).
    Refused(String),
}

/// How long a troubled account rests: the breaker's and the rate-limit backoff's
/// settings, the same for every account.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// A throttled account's first wait, doubling per rate limit in a row.
    pub throttle_base: Duration,
    /// Failed calls in a row that open the account's circuit.
    pub failures_before_failing: i32,
    /// An open circuit's first wait, doubling per failed trial.
    pub failing_cooldown: Duration,
    /// The longest wait either doubles to.
    pub max: Duration,
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds an account's pacing as the next parameters, in the column order rate_per_sec,
/// max_concurrency, daily_cap, warmup_days, hours_start, hours_end, timezone.
fn bind_pacing<'q>(query: PgQuery<'q>, p: &'q AccountPacing) -> PgQuery<'q> {
    query
        .bind(p.rate_per_sec)
        .bind(p.max_concurrency)
        .bind(p.daily_cap)
        .bind(p.warmup_days)
        .bind(p.hours.map(|h| h.start))
        .bind(p.hours.map(|h| h.end))
        .bind(&p.timezone)
}

impl Store {
    /// Adds an account; refused when the name is taken or the time zone unknown.
    pub async fn add_account(&self, new: &NewAccount) -> Result<Uuid> {
        self.known_timezone(&new.pacing.timezone).await?;
        let id = Uuid::new_v4();
        let p = &new.pacing;
        let config = serde_json::to_string(&new.config).expect("config serializes");
        let inserted = sqlx::query(
            "INSERT INTO checkers (id, name, backend, config, rate_per_sec, max_concurrency, daily_cap,
                                   warmup_days, hours_start, hours_end, timezone)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(id)
        .bind(&new.name)
        .bind(new.backend.name())
        .bind(config);
        let inserted = bind_pacing(inserted, p).execute(&self.pool).await?;
        if inserted.rows_affected() == 0 {
            return Err(StoreError::Rejected(format!(
                "--name: a checking account named {:?} exists already",
                new.name
            )));
        }
        Ok(id)
    }

    /// Writes the account a single backend set by flags checks through (`serve
    /// --checker waha|evolution|whatsapp-web`), under a name reserved for it, and returns
    /// its id. Its settings and pacing are the flags' (the last replica started wins);
    /// its state, counters and rate slot are kept, so a restart neither forgets a backoff
    /// nor spends today's cap again.
    pub async fn flag_account(&self, new: &NewAccount) -> Result<Uuid> {
        let p = &new.pacing;
        let config = serde_json::to_string(&new.config).expect("config serializes");
        let upsert = sqlx::query(
            "INSERT INTO checkers (id, name, backend, config, rate_per_sec, max_concurrency, daily_cap,
                                   warmup_days, hours_start, hours_end, timezone, from_flags)
             VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, $9, $10, $11, true)
             ON CONFLICT (name) DO UPDATE SET backend = EXCLUDED.backend, config = EXCLUDED.config,
                 rate_per_sec = EXCLUDED.rate_per_sec, max_concurrency = EXCLUDED.max_concurrency,
                 daily_cap = EXCLUDED.daily_cap, warmup_days = EXCLUDED.warmup_days,
                 hours_start = NULL, hours_end = NULL, timezone = EXCLUDED.timezone, from_flags = true
             RETURNING id",
        )
        .bind(Uuid::new_v4())
        .bind(&new.name)
        .bind(new.backend.name())
        .bind(config);
        let row = bind_pacing(upsert, p).fetch_one(&self.pool).await?;
        Ok(sqlx::Row::try_get(&row, "id")?)
    }

    async fn known_timezone(&self, timezone: &str) -> Result<()> {
        let known: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1)")
                .bind(timezone)
                .fetch_one(&self.pool)
                .await?;
        if known {
            Ok(())
        } else {
            Err(StoreError::Rejected(format!(
                "--timezone: {timezone:?} is not a time zone PostgreSQL knows (e.g. Europe/Berlin, America/Sao_Paulo)"
            )))
        }
    }

    /// Every account as it stands now, by name, and the accounts that cannot be read
    /// (by name, with why): one row whose settings break the view's arithmetic or its
    /// decoding is set aside rather than hiding every other account.
    pub async fn accounts(&self) -> Result<(Vec<AccountRow>, Vec<Unreadable>)> {
        let all = sqlx::query_as(concat!(
            "SELECT ",
            account_columns!(),
            " FROM checker_status ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await;
        match all.map_err(StoreError::from) {
            Ok(rows) => return Ok((rows, Vec::new())),
            Err(StoreError::Query(_)) => {}
            Err(err) => return Err(err),
        }
        // One by one, to find the rows at fault.
        let names: Vec<String> = sqlx::query_scalar("SELECT name FROM checkers ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        let mut rows = Vec::with_capacity(names.len());
        let mut unreadable = Vec::new();
        for name in names {
            match self.account(&name).await {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => {}
                Err(StoreError::Query(err)) => unreadable.push(Unreadable {
                    reason: format!("cannot read this account: {err}"),
                    name,
                }),
                Err(err) => return Err(err),
            }
        }
        Ok((rows, unreadable))
    }

    pub async fn account(&self, name: &str) -> Result<Option<AccountRow>> {
        sqlx::query_as(concat!(
            "SELECT ",
            account_columns!(),
            " FROM checker_status WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// Changes an account's pacing; false when there is no such account.
    pub async fn update_pacing(&self, name: &str, change: &PacingChange) -> Result<bool> {
        let Some(row) = self.account(name).await? else {
            return Ok(false);
        };
        let current = AccountPacing {
            rate_per_sec: row.rate_per_sec,
            max_concurrency: row.max_concurrency,
            daily_cap: row.daily_cap,
            warmup_days: row.warmup_days,
            hours: row
                .hours_start
                .zip(row.hours_end)
                .map(|(start, end)| Hours { start, end }),
            timezone: row.timezone,
        };
        let p = change
            .apply(current)
            .map_err(|e| StoreError::Rejected(e.to_string()))?;
        self.known_timezone(&p.timezone).await?;
        let done = sqlx::query(
            "UPDATE checkers SET rate_per_sec = $2, max_concurrency = $3, daily_cap = $4,
                    warmup_days = $5, hours_start = $6, hours_end = $7, timezone = $8
             WHERE name = $1",
        )
        .bind(name);
        let done = bind_pacing(done, &p).execute(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Pauses or resumes an account; false when there is no such account.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let done = sqlx::query("UPDATE checkers SET paused = $2 WHERE name = $1")
            .bind(name)
            .bind(paused)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn remove_account(&self, name: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM checkers WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Takes up to `wanted` of today's checks for a call that starts now, if the account
    /// may ask now (`checker_take` decides, from the locked row: not paused, no trouble
    /// in force, within its hours, under today's cap, at its shared rate). A throttled or
    /// failing account whose wait is over gets one check, its trial, held for `trial`.
    pub async fn take_checks(&self, id: Uuid, wanted: i32, trial: Duration) -> Result<Take> {
        let (granted, wait_s, refused, is_trial): (i32, f64, Option<String>, bool) =
            sqlx::query_as("SELECT granted, wait_s, refused, trial FROM checker_take($1, $2, $3)")
                .bind(id)
                .bind(wanted)
                .bind(trial.as_secs_f64())
                .fetch_one(&self.pool)
                .await?;
        Ok(match refused {
            Some(reason) => Take::Refused(reason),
            None if granted > 0 => Take::Granted {
                checks: granted,
                trial: is_trial,
            },
            None => Take::Wait(Duration::from_secs_f64(wait_s.clamp(0.0, 86_400.0))),
        })
    }

    /// Gives back checks taken but not made (the numbers were not asked). The rate's next
    /// slot stays where it is: giving back never lets the next call come sooner.
    pub async fn return_checks(&self, id: Uuid, unused: i32) -> Result<()> {
        sqlx::query(
            "UPDATE checkers c SET checks_day = greatest(0, checker_checks_today(c) - $2)
             WHERE id = $1 AND c.day = checker_today(c)",
        )
        .bind(id)
        .bind(unused)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A call that was answered: `asked` checks made, the failures in a row end. Only a
    /// trial's answer (or any answer while the account is active) ends the rate-limit
    /// streak, and a trial's answer ends the trouble: an answer to a call granted before
    /// a 429 was recorded does not undo the backoff.
    pub async fn account_worked(&self, id: Uuid, asked: i32, trial: bool) -> Result<()> {
        sqlx::query(
            "UPDATE checkers SET checks_total = checks_total + $2, last_check_at = now(), failures = 0,
                    throttles = CASE WHEN $3 OR state = 'active' THEN 0 ELSE throttles END,
                    state = CASE WHEN $3 AND state IN ('throttled', 'failing') THEN 'active' ELSE state END,
                    state_until = CASE WHEN $3 AND state IN ('throttled', 'failing') THEN NULL ELSE state_until END,
                    reason = CASE WHEN $3 AND state IN ('throttled', 'failing') THEN NULL ELSE reason END
             WHERE id = $1",
        )
        .bind(id)
        .bind(asked)
        .bind(trial)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A number's failure judged to be the number's after all (it failed on another
    /// account too): the failure it added to this account's streak is taken back, and a
    /// circuit those failures opened closes again (numbers at fault, not the account).
    pub async fn account_absolved(&self, id: Uuid, failures_before_failing: i32) -> Result<()> {
        sqlx::query(
            "UPDATE checkers c SET failures = greatest(c.failures - 1, 0),
                    state = CASE WHEN c.state = 'failing' AND c.failures - 1 < $2 THEN 'active' ELSE c.state END,
                    state_until = CASE WHEN c.state = 'failing' AND c.failures - 1 < $2 THEN NULL ELSE c.state_until END,
                    reason = CASE WHEN c.state = 'failing' AND c.failures - 1 < $2 THEN NULL ELSE c.reason END
             WHERE id = $1 AND c.state IN ('active', 'failing')",
        )
        .bind(id)
        .bind(failures_before_failing)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts an account in trouble, with the reason, until at least `at_least` from now;
    /// a throttled or failing account waits the backoff of its streak (kept in the row,
    /// so every replica agrees): `backoff.base` doubled per trouble in a row, at most
    /// `backoff.max`. Returns the counters after the change (failures, throttles in a
    /// row) and the wait.
    pub async fn account_in_trouble(
        &self,
        id: Uuid,
        trouble: Trouble,
        at_least: Duration,
        backoff: &Backoff,
        reason: &str,
        trial: bool,
    ) -> Result<Option<(i32, i32, f64)>> {
        // A trouble already in force, met by a request granted before it was recorded (not
        // a trial), is the same episode: its streak does not grow, its wait only lengthens
        // to what this answer asks.
        sqlx::query_as(
            "WITH next AS (
                SELECT id, failures, state = $2 AND state_until > now() AND NOT $9 AS same,
                       throttles + ($2 = 'throttled' AND NOT (state = $2 AND state_until > now() AND NOT $9))::int
                           AS throttles,
                       state_until AS until_before
                FROM checkers WHERE id = $1 FOR UPDATE),
             wait AS (
                SELECT id, failures, throttles, greatest($3, CASE $2
                    WHEN 'throttled' THEN checker_backoff(throttles, $5, $6)
                    WHEN 'failing' THEN checker_backoff(failures - $7 + 1, $8, $6)
                    ELSE 0 END) AS secs,
                    same, until_before
                FROM next)
             UPDATE checkers c
             SET state = $2, reason = $4, failures = w.failures, throttles = w.throttles,
                 state_until = CASE WHEN w.same THEN greatest(w.until_before, now() + make_interval(secs => $3))
                                    ELSE now() + make_interval(secs => w.secs) END,
                 probe_at = CASE WHEN w.same THEN c.probe_at ELSE now() + make_interval(secs => w.secs) END
             FROM wait w WHERE c.id = w.id
             RETURNING c.failures, c.throttles,
                       extract(epoch FROM c.state_until - now())::float8 AS secs",
        )
        .bind(id)
        .bind(trouble.status().as_str())
        .bind(at_least.as_secs_f64())
        .bind(reason)
        .bind(backoff.throttle_base.as_secs_f64())
        .bind(backoff.max.as_secs_f64())
        .bind(backoff.failures_before_failing)
        .bind(backoff.failing_cooldown.as_secs_f64())
        .bind(trial)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// A failed call that does not (yet) put the account in trouble; returns the failures
    /// in a row so far.
    /// A request that was under way when the circuit opened (not a trial) adds nothing:
    /// one failed episode opens it once, however many requests were in flight.
    pub async fn account_failed(&self, id: Uuid, trial: bool) -> Result<i32> {
        Ok(sqlx::query_scalar(
            "UPDATE checkers
             SET failures = failures
                 + CASE WHEN $2 OR NOT (state = 'failing' AND state_until > now()) THEN 1 ELSE 0 END
             WHERE id = $1 RETURNING failures",
        )
        .bind(id)
        .bind(trial)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(0))
    }

    /// Claims the next probe of a logged-out or banned account whose wait is over (its
    /// session, not a number, says whether it works); false when another replica has
    /// it, or it is not due. Throttled and failing accounts are tried with a number
    /// instead (`take_checks`' trial). The next one is due `again_in` later.
    pub async fn claim_probe(&self, id: Uuid, again_in: Duration) -> Result<bool> {
        let claimed = sqlx::query(
            "UPDATE checkers SET probe_at = now() + make_interval(secs => $2)
             WHERE id = $1 AND state IN ('logged_out', 'banned') AND probe_at <= now()
               AND (state_until IS NULL OR state_until <= now())",
        )
        .bind(id)
        .bind(again_in.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(claimed.rows_affected() == 1)
    }

    /// The probe found the account working again: active, counters reset.
    pub async fn account_recovered(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE checkers SET state = 'active', state_until = NULL, reason = NULL,
                    failures = 0, throttles = 0
             WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
