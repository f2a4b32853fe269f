//! The work queue: claiming numbers under a lease and writing their results.
use std::time::Duration;

use sqlx::Connection;

use uuid::Uuid;

use super::batches::ResultRow;
use super::{RESULTS_CHANNEL, Store};
use crate::domain::batch::NumberState;

/// A number claimed by a worker until its lease runs out.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub batch_id: Uuid,
    pub idx: i32,
    pub e164: String,
    /// Including this one.
    pub attempts: i32,
}

/// A final answer for a claimed number.
#[derive(Debug, Clone)]
pub struct Answer {
    pub batch_id: Uuid,
    pub idx: i32,
    pub state: NumberState,
    pub wa_id: Option<String>,
    pub is_business: bool,
    pub error: Option<String>,
}

/// A result as written, for the watchers of its batch in this process.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WrittenRow {
    pub batch_id: Uuid,
    #[sqlx(flatten)]
    pub row: ResultRow,
}

/// A claimed number to hand back for a later attempt.
#[derive(Debug, Clone)]
pub struct Retry {
    pub batch_id: Uuid,
    pub idx: i32,
    pub error: String,
}

impl Store {
    /// Claims up to `limit` queued numbers, in fair order, under a new lease token.
    pub async fn claim(
        &self,
        limit: i64,
        lease: Duration,
    ) -> Result<(Uuid, Vec<Claimed>), sqlx::Error> {
        let token = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        // Walk the queue index in fair order whatever the statistics say. Without them
        // (a table never analyzed, autovacuum off) or with stale ones, the planner
        // guesses a handful of queued rows and sorts every one of them instead:
        // 150 ms per claim with 300,000 queued against 7 ms through the index.
        sqlx::raw_sql("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query_as(
            "WITH c AS (
                SELECT batch_id, idx FROM batch_numbers
                WHERE state = 1 AND available_at <= now() AND (lease_until IS NULL OR lease_until < now())
                ORDER BY fair_key
                LIMIT $1
                FOR UPDATE SKIP LOCKED)
             UPDATE batch_numbers n
             SET lease_token = $2, lease_until = now() + make_interval(secs => $3), attempts = n.attempts + 1
             FROM c WHERE n.batch_id = c.batch_id AND n.idx = c.idx
             RETURNING n.batch_id, n.idx, n.e164, n.attempts",
        )
        .bind(limit)
        .bind(token)
        .bind(lease.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((token, rows))
    }

    /// Extends the lease of the given numbers while they are still held under `token`.
    /// Rows are found by primary key, so no index on the token is needed (one less
    /// index to maintain on every claim and every result write).
    pub async fn renew_lease(
        &self,
        token: Uuid,
        items: &[(Uuid, i32)],
        lease: Duration,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE batch_numbers n SET lease_until = now() + make_interval(secs => $4)
             FROM unnest($1::uuid[], $2::int[]) AS r(batch_id, idx)
             WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.lease_token = $3 AND n.state = 1",
        )
        .bind(items.iter().map(|i| i.0).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.1).collect::<Vec<_>>())
        .bind(token)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Hands numbers back untouched (shutdown): the attempt did not happen.
    pub async fn release(&self, token: Uuid, items: &[(Uuid, i32)]) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE batch_numbers n SET lease_token = NULL, lease_until = NULL, attempts = n.attempts - 1
             FROM unnest($1::uuid[], $2::int[]) AS r(batch_id, idx)
             WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.lease_token = $3 AND n.state = 1",
        )
        .bind(items.iter().map(|i| i.0).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.1).collect::<Vec<_>>())
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Hands numbers back without counting an attempt, to be claimed again
    /// after `delay` (the checker is paused: rate limit, daily cap, open circuit).
    pub async fn defer(
        &self,
        token: Uuid,
        items: &[(Uuid, i32)],
        delay: Duration,
    ) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE batch_numbers n
             SET lease_token = NULL, lease_until = NULL, attempts = n.attempts - 1,
                 available_at = now() + make_interval(secs => $4)
             FROM unnest($1::uuid[], $2::int[]) AS r(batch_id, idx)
             WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.state = 1 AND n.lease_token = $3",
        )
        .bind(items.iter().map(|i| i.0).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.1).collect::<Vec<_>>())
        .bind(token)
        .bind(delay.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Writes final answers and schedules retries atomically: the batch
    /// counters, the refund of numbers that ended in error, the result cache,
    /// and one notification per batch touched all commit with the answers.
    ///
    /// Every write is guarded by the lease token, so a worker whose lease was
    /// taken over cannot overwrite, double-count or double-refund a number.
    /// Returns the answers written (committed) for `work.watched`, for this process's watchers.
    /// `cache_as`: the backend whose cache gets the answers, or None to cache nothing.
    pub async fn complete(
        &self,
        token: Uuid,
        cache_as: Option<&str>,
        work: &Completion<'_>,
    ) -> Result<Vec<WrittenRow>, sqlx::Error> {
        let (answers, retries) = (work.answers, work.retries);
        let refunds = answers.iter().any(|a| a.state == NumberState::Error);
        let mut conn = self.pool.acquire().await?;
        // The common case, answers only and no refund, is one statement: it
        // locks each batch row only from its counter update to its commit, so
        // workers finishing chunks of the same batch barely wait on each other.
        if !refunds && retries.is_empty() {
            return write_answers(&mut conn, token, cache_as, work, self.origin).await;
        }
        let mut tx = conn.begin().await?;
        let mut written = Vec::new();
        if !answers.is_empty() {
            // Refunds lock accounts too: lock batches, then their accounts, each in
            // one order (as cancelling does), so concurrent writers cannot deadlock.
            let batch_ids = distinct_batches(answers);
            sqlx::query("SELECT 1 FROM batches WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&batch_ids)
                .execute(&mut *tx)
                .await?;
            if refunds {
                sqlx::query(
                    "SELECT 1 FROM accounts WHERE id IN (SELECT account_id FROM batches WHERE id = ANY($1))
                     ORDER BY id FOR NO KEY UPDATE",
                )
                .bind(&batch_ids)
                .execute(&mut *tx)
                .await?;
            }
            written = write_answers(&mut tx, token, cache_as, work, self.origin).await?;
        }
        if !retries.is_empty() {
            // Exponential backoff with jitter: base * 2^(attempts-1), capped, times 0.5..1.
            sqlx::query(
                "UPDATE batch_numbers n
                 SET lease_token = NULL, lease_until = NULL, error = r.error,
                     available_at = now() + make_interval(secs =>
                         least($5::float8, $4::float8 * power(2, n.attempts - 1)) * (0.5 + random() / 2))
                 FROM unnest($1::uuid[], $2::int[], $3::text[]) AS r(batch_id, idx, error)
                 WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.state = 1 AND n.lease_token = $6",
            )
            .bind(retries.iter().map(|r| r.batch_id).collect::<Vec<_>>())
            .bind(retries.iter().map(|r| r.idx).collect::<Vec<_>>())
            .bind(retries.iter().map(|r| r.error.as_str()).collect::<Vec<_>>())
            .bind(work.backoff_base.as_secs_f64())
            .bind(work.backoff_max.as_secs_f64())
            .bind(token)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(written)
    }

    /// Reserves up to `n` checks of today's cap for `backend`; returns how many were granted.
    pub async fn reserve_daily_checks(
        &self,
        backend: &str,
        n: i64,
        cap: i64,
    ) -> Result<i64, sqlx::Error> {
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
    pub async fn return_daily_checks(&self, backend: &str, n: i64) -> Result<(), sqlx::Error> {
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

    /// Numbers waiting to be checked, and how long the oldest has waited (seconds).
    pub async fn queue_stats(&self) -> Result<(i64, f64), sqlx::Error> {
        sqlx::query_as(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(b.created_at))::float8, 0)
             FROM batch_numbers n JOIN batches b ON b.id = n.batch_id WHERE n.state = 1",
        )
        .fetch_one(&self.pool)
        .await
    }
}

/// The answers' statement: rows, cache, counters, refunds, ledger and
/// notifications at once. Batch rows are updated in id order (the sorted
/// `agg`), the order every other writer locks them in. Returns the rows written for
/// the batches in `work.watched`, whose notifications carry `origin` so this process's
/// hub skips reading them back; other batches' notifications are read back everywhere.
async fn write_answers(
    conn: &mut sqlx::PgConnection,
    token: Uuid,
    cache_as: Option<&str>,
    work: &Completion<'_>,
    origin: Uuid,
) -> Result<Vec<WrittenRow>, sqlx::Error> {
    let answers = work.answers;
    if answers.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "WITH r AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::smallint[], $4::text[], $5::bool[], $6::text[])
                AS r(batch_id, idx, state, wa_id, is_business, error)),
         u AS (
            UPDATE batch_numbers n
            SET state = r.state, wa_id = r.wa_id, is_business = r.is_business, error = r.error,
                checked_at = now(), lease_token = NULL, lease_until = NULL
            FROM r
            WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.state = 1 AND n.lease_token = $7
            RETURNING n.batch_id, n.idx, n.input, n.e164, n.region, n.state, n.wa_id, n.is_business,
                      n.error, n.checked_at, n.from_cache, n.normalization_note),
         cache AS (
            INSERT INTO number_cache (backend, e164, on_whatsapp, wa_id, is_business, checked_at)
            SELECT DISTINCT ON (e164) $9, e164, state = 2, wa_id, is_business, checked_at
            FROM u WHERE state IN (2, 3) AND $9::text IS NOT NULL
            ON CONFLICT (backend, e164) DO UPDATE
            SET on_whatsapp = excluded.on_whatsapp, wa_id = excluded.wa_id,
                is_business = excluded.is_business, checked_at = excluded.checked_at),
         agg AS (
            SELECT batch_id,
                   count(*) FILTER (WHERE state <> 5)::int AS done,
                   count(*) FILTER (WHERE state = 5)::int AS failed,
                   string_agg(idx::text, ',' ORDER BY idx) AS idxs
            FROM u GROUP BY batch_id),
         b AS (
            UPDATE batches
            SET completed = batches.completed + agg.done,
                failed = batches.failed + agg.failed,
                credits_refunded = batches.credits_refunded + agg.failed,
                completed_at = CASE
                    WHEN batches.completed + agg.done + batches.failed + agg.failed + batches.cancelled
                         = batches.total_numbers
                    THEN now() ELSE batches.completed_at END
            FROM (SELECT * FROM agg ORDER BY batch_id) agg WHERE batches.id = agg.batch_id
            -- The notification rides on this data-modifying CTE, which always runs,
            -- whichever rows the final SELECT returns.
            RETURNING batches.id, batches.account_id, agg.failed::bigint AS refund,
                      pg_notify($8, agg.batch_id::text || ' ' || agg.idxs
                          || CASE WHEN agg.batch_id = ANY($10) THEN ' ' || $11 ELSE '' END)),
         acct AS (
            UPDATE accounts SET credits = credits + t.refund
            FROM (SELECT account_id, sum(refund)::bigint AS refund FROM b WHERE refund > 0 GROUP BY account_id) t
            WHERE accounts.id = t.account_id
            RETURNING accounts.id, accounts.credits),
         ledger AS (
            INSERT INTO credit_ledger (account_id, delta, reason, batch_id, balance_after)
            SELECT b.account_id, b.refund, 'refund_error', b.id,
                   acct.credits - coalesce(sum(b.refund) OVER (PARTITION BY b.account_id ORDER BY b.id
                        ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0)
            FROM b JOIN acct ON acct.id = b.account_id WHERE b.refund > 0)
         SELECT u.batch_id, u.idx, u.input, u.e164, u.region, u.state, u.wa_id, u.is_business, u.error,
                u.checked_at, u.from_cache, u.normalization_note
         FROM u WHERE u.batch_id = ANY($10)",
    )
    .bind(answers.iter().map(|a| a.batch_id).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.idx).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.state as i16).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.wa_id.as_deref()).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.is_business).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.error.as_deref()).collect::<Vec<_>>())
    .bind(token)
    .bind(RESULTS_CHANNEL)
    .bind(cache_as)
    .bind(work.watched)
    .bind(origin.to_string())
    .fetch_all(conn)
    .await
}

fn distinct_batches(answers: &[Answer]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = answers.iter().map(|a| a.batch_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// What one checker call produced, for `Store::complete`.
pub struct Completion<'a> {
    pub answers: &'a [Answer],
    pub retries: &'a [Retry],
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Batches watched in this process: their written rows are returned to be handed
    /// to the watchers directly (none in a worker-only process).
    pub watched: &'a [Uuid],
}
