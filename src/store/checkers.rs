//! Checking accounts (`checkers`): managed by `wavalidate checker`, read and updated by
//! the pool in every replica. Each statement locks one account row, alone.
use std::time::Duration;

use uuid::Uuid;

use super::rows::{AccountRow, Reservation};
use super::{Result, Store, StoreError};
use crate::domain::checker::{AccountPacing, AccountStatus, Hours, NewAccount, PacingChange};

macro_rules! account_columns {
    () => {
        "id, name, backend, config, rate_per_sec, max_concurrency, daily_cap,
         warmup_days, hours_start, hours_end, timezone, paused, state, failures, throttles,
         checks_today, cap_today, checks_total, last_check_at, next_slot, status, status_until,
         status_reason"
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

    /// Every account as it stands now, by name.
    pub async fn accounts(&self) -> Result<Vec<AccountRow>> {
        sqlx::query_as(concat!(
            "SELECT ",
            account_columns!(),
            " FROM checker_status ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from)
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

    /// Reserves up to `wanted` of today's checks, and a slot in the account's rate shared
    /// by every replica: the call may start at `start_at`. Computed from the locked row,
    /// so concurrent reservations never overspend the cap.
    pub async fn reserve_checks(&self, id: Uuid, wanted: i32) -> Result<Option<Reservation>> {
        sqlx::query_as(
            "UPDATE checkers c
             SET day = checker_today(c),
                 checks_day = checker_checks_today(c) + checker_grant(c, $2),
                 last_grant = checker_grant(c, $2),
                 next_slot = greatest(c.next_slot, now())
                     + make_interval(secs => checker_grant(c, $2) / c.rate_per_sec)
             WHERE id = $1
             RETURNING last_grant AS granted,
                       next_slot - make_interval(secs => last_grant / rate_per_sec) AS start_at",
        )
        .bind(id)
        .bind(wanted)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// Gives back checks reserved but not made (the numbers were not asked).
    pub async fn return_checks(&self, id: Uuid, unused: i32) -> Result<()> {
        sqlx::query(
            "UPDATE checkers c
             SET checks_day = greatest(0, checker_checks_today(c) - $2),
                 next_slot = greatest(now(), c.next_slot - make_interval(secs => $2 / c.rate_per_sec))
             WHERE id = $1 AND c.day = checker_today(c)",
        )
        .bind(id)
        .bind(unused)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A call that was answered: `asked` checks made; the rate-limit streak ends. The
    /// failures in a row reset, unless the call was one number's failure (`number_failed`):
    /// then they count it, so a gateway failing every number still opens the circuit.
    pub async fn account_worked(&self, id: Uuid, asked: i32, number_failed: bool) -> Result<()> {
        sqlx::query(
            "UPDATE checkers SET checks_total = checks_total + $2, last_check_at = now(),
                    failures = CASE WHEN $3 THEN failures + 1 ELSE 0 END, throttles = 0
             WHERE id = $1",
        )
        .bind(id)
        .bind(asked)
        .bind(number_failed)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts an account in trouble until `until` (then it is probed), with the reason.
    /// Returns the trouble counters after the change (failures, throttles in a row).
    pub async fn account_in_trouble(
        &self,
        id: Uuid,
        trouble: Trouble,
        until: Option<Duration>,
        reason: &str,
    ) -> Result<Option<(i32, i32)>> {
        sqlx::query_as(
            "UPDATE checkers
             SET state = $2, reason = $4,
                 state_until = now() + make_interval(secs => $3),
                 probe_at = now() + make_interval(secs => $3),
                 failures = failures + ($2 = 'failing')::int,
                 throttles = throttles + ($2 = 'throttled')::int
             WHERE id = $1
             RETURNING failures, throttles",
        )
        .bind(id)
        .bind(trouble.status().as_str())
        .bind(until.unwrap_or_default().as_secs_f64())
        .bind(reason)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// A failed call that does not (yet) put the account in trouble; returns the failures
    /// in a row so far.
    pub async fn account_failed(&self, id: Uuid) -> Result<i32> {
        Ok(sqlx::query_scalar(
            "UPDATE checkers SET failures = failures + 1 WHERE id = $1 RETURNING failures",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .unwrap_or(0))
    }

    /// Claims the next probe of a troubled account whose wait is over; false when another
    /// replica has it, or it is not due. The next one is due `again_in` later.
    pub async fn claim_probe(&self, id: Uuid, again_in: Duration) -> Result<bool> {
        let claimed = sqlx::query(
            "UPDATE checkers SET probe_at = now() + make_interval(secs => $2)
             WHERE id = $1 AND state <> 'active' AND probe_at <= now()
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
