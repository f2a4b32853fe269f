//! Checks spent per checker per UTC day (`checker_usage`), shared by every replica:
//! the daily cap.
use super::{Result, Store};

impl Store {
    /// Reserves up to `n` checks of today's cap for `backend`; returns how many were granted.
    pub async fn reserve_daily_checks(&self, backend: &str, n: i64, cap: i64) -> Result<i64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO checker_usage (backend, day, used) VALUES ($1, (now() AT TIME ZONE 'utc')::date, 0)
             ON CONFLICT (backend, day) DO NOTHING",
        )
        .bind(backend)
        .execute(&mut *tx)
        .await?;
        let granted: Option<i64> = sqlx::query_scalar(
            "WITH old AS (
                SELECT used FROM checker_usage
                WHERE backend = $1 AND day = (now() AT TIME ZONE 'utc')::date FOR UPDATE)
             UPDATE checker_usage c SET used = least(c.used + $2, greatest($3, c.used))
             FROM old WHERE c.backend = $1 AND c.day = (now() AT TIME ZONE 'utc')::date
             RETURNING c.used - old.used",
        )
        .bind(backend)
        .bind(n)
        .bind(cap)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(granted.unwrap_or(0))
    }

    /// Gives back reserved checks that were not made.
    pub async fn return_daily_checks(&self, backend: &str, n: i64) -> Result<()> {
        sqlx::query(
            "UPDATE checker_usage SET used = greatest(0, used - $2)
             WHERE backend = $1 AND day = (now() AT TIME ZONE 'utc')::date",
        )
        .bind(backend)
        .bind(n)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
