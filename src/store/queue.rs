//! The work queue: claiming numbers under a lease and writing their results.
use std::time::Duration;

use uuid::Uuid;

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
        .fetch_all(&self.pool)
        .await?;
        Ok((token, rows))
    }

    /// Extends the lease of every number still held under `token`.
    pub async fn renew_lease(&self, token: Uuid, lease: Duration) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE batch_numbers SET lease_until = now() + make_interval(secs => $2)
             WHERE lease_token = $1 AND state = 1",
        )
        .bind(token)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Hands numbers back untouched (shutdown): the attempt did not happen.
    pub async fn release(&self, token: Uuid) -> Result<u64, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE batch_numbers SET lease_token = NULL, lease_until = NULL, attempts = attempts - 1
             WHERE lease_token = $1 AND state = 1",
        )
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Writes final answers and schedules retries in one transaction, then
    /// notifies watchers once per batch touched.
    ///
    /// Every write is guarded by the lease token, so a worker whose lease was
    /// taken over cannot overwrite or double-count a number.
    /// Returns how many answers were written.
    pub async fn complete(
        &self,
        token: Uuid,
        answers: &[Answer],
        retries: &[Retry],
        backoff_base: Duration,
        backoff_max: Duration,
    ) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        if !answers.is_empty() {
            let mut batch_ids: Vec<Uuid> = answers.iter().map(|a| a.batch_id).collect();
            batch_ids.sort_unstable();
            batch_ids.dedup();
            // Lock the batch rows in one order, so workers writing to the same batches cannot deadlock.
            sqlx::query("SELECT 1 FROM batches WHERE id = ANY($1) ORDER BY id FOR UPDATE")
                .bind(&batch_ids)
                .execute(&mut *tx)
                .await?;
            let written_rows: Vec<(i64,)> = sqlx::query_as(
                "WITH r AS (
                    SELECT * FROM unnest($1::uuid[], $2::int[], $3::smallint[], $4::text[], $5::bool[], $6::text[])
                        AS r(batch_id, idx, state, wa_id, is_business, error)),
                 u AS (
                    UPDATE batch_numbers n
                    SET state = r.state, wa_id = r.wa_id, is_business = r.is_business, error = r.error,
                        checked_at = now(), lease_token = NULL, lease_until = NULL
                    FROM r
                    WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.state = 1 AND n.lease_token = $7
                    RETURNING n.batch_id, n.idx, n.state),
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
                        completed_at = CASE
                            WHEN batches.completed + agg.done + batches.failed + agg.failed = batches.total_numbers
                            THEN now() ELSE batches.completed_at END
                    FROM agg WHERE batches.id = agg.batch_id)
                 SELECT (done + failed)::bigint FROM agg, pg_notify($8, agg.batch_id::text || ' ' || agg.idxs)",
            )
            .bind(answers.iter().map(|a| a.batch_id).collect::<Vec<_>>())
            .bind(answers.iter().map(|a| a.idx).collect::<Vec<_>>())
            .bind(answers.iter().map(|a| a.state as i16).collect::<Vec<_>>())
            .bind(answers.iter().map(|a| a.wa_id.as_deref()).collect::<Vec<_>>())
            .bind(answers.iter().map(|a| a.is_business).collect::<Vec<_>>())
            .bind(answers.iter().map(|a| a.error.as_deref()).collect::<Vec<_>>())
            .bind(token)
            .bind(RESULTS_CHANNEL)
            .fetch_all(&mut *tx)
            .await?;
            written = written_rows.iter().map(|r| r.0 as u64).sum();
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
            .bind(backoff_base.as_secs_f64())
            .bind(backoff_max.as_secs_f64())
            .bind(token)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(written)
    }
}
