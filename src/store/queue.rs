//! The work queue: leasing chunks of queued numbers and writing their results.
use std::time::Duration;

use uuid::Uuid;

use super::notify::results_payload;
use super::rows::{Answer, ChunkEnd, ChunkKey, Claim, Claimed, Retry, WrittenRow};
use super::{RESULTS_CHANNEL, Result, Store, StoreError, retry_conflicts};
use crate::domain::batch::NumberState;

#[derive(sqlx::FromRow)]
struct ClaimRow {
    batch_id: Uuid,
    first_idx: i32,
    attempts: i32,
    queued_at: chrono::DateTime<chrono::Utc>,
    idx: Option<i32>,
    e164: Option<String>,
}

/// The end of both claims: the chosen chunks `c` are leased under `$2` for `$3` seconds,
/// and their numbers still pending (`$4`) read.
macro_rules! lease_chosen_chunks {
    () => {
        ",
         k AS (
            UPDATE queue_chunks k
            SET lease_token = $2, lease_until = now() + make_interval(secs => $3), attempts = k.attempts + 1
            FROM c WHERE k.batch_id = c.batch_id AND k.first_idx = c.first_idx
            RETURNING k.batch_id, k.first_idx, k.last_idx, k.attempts, k.queued_at)
         SELECT k.batch_id, k.first_idx, k.attempts, k.queued_at, n.idx, n.e164
         FROM k LEFT JOIN batch_numbers n
           ON n.batch_id = k.batch_id AND n.idx BETWEEN k.first_idx AND k.last_idx AND n.state = $4"
    };
}

/// `l`: the chunks of `$1`/`$2` (batch ids, first indexes) still held under token `$3`,
/// locked in ascending key order (the store's lock order, store/mod.rs).
macro_rules! held_chunks_locked {
    () => {
        "WITH l AS (
            SELECT q.batch_id, q.first_idx FROM queue_chunks q
            JOIN unnest($1::uuid[], $2::int[]) AS r(batch_id, first_idx)
              ON q.batch_id = r.batch_id AND q.first_idx = r.first_idx
            WHERE q.lease_token = $3
            ORDER BY q.batch_id, q.first_idx
            FOR NO KEY UPDATE OF q)"
    };
}

impl Store {
    /// Leases up to `chunks` queue chunks, in fair order, under a new token, and reads
    /// their pending numbers: one row written per chunk, none per number. `ahead_only`:
    /// only chunks queued ahead of batch work (single checks, fair keys below zero).
    pub async fn claim(&self, chunks: i64, lease: Duration, ahead_only: bool) -> Result<Claim> {
        let token = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        // Walk the queue index in fair order whatever the statistics say. Without them
        // (a table never analyzed, autovacuum off) or with stale ones, the planner
        // guesses a handful of queued rows and sorts every one of them instead.
        sqlx::raw_sql("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")
            .execute(&mut *tx)
            .await?;
        let rows: Vec<ClaimRow> = sqlx::query_as(concat!(
            "WITH c AS (
                SELECT batch_id, first_idx FROM queue_chunks
                WHERE available_at <= now() AND (lease_until IS NULL OR lease_until < now())
                  AND fair_key < $5
                ORDER BY fair_key
                LIMIT $1
                FOR UPDATE SKIP LOCKED)",
            lease_chosen_chunks!()
        ))
        .bind(chunks)
        .bind(token)
        .bind(lease.as_secs_f64())
        .bind(NumberState::Pending as i16)
        // A bound on the index walk: the ahead-only claim stops at the first batch's chunk.
        .bind(if ahead_only { 0 } else { i64::MAX })
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(into_claim(token, rows))
    }

    /// Leases up to `chunks` chunks queued more than `older_than` ago, whatever their
    /// backoff, to end their numbers (no checking account took them in time).
    pub async fn claim_overdue(
        &self,
        chunks: i64,
        lease: Duration,
        older_than: Duration,
    ) -> Result<Claim> {
        let token = Uuid::new_v4();
        let rows: Vec<ClaimRow> = sqlx::query_as(concat!(
            "WITH c AS (
                SELECT batch_id, first_idx FROM queue_chunks
                WHERE queued_at < now() - make_interval(secs => $5)
                  AND (lease_until IS NULL OR lease_until < now())
                LIMIT $1
                FOR UPDATE SKIP LOCKED)",
            lease_chosen_chunks!()
        ))
        .bind(chunks)
        .bind(token)
        .bind(lease.as_secs_f64())
        .bind(NumberState::Pending as i16)
        .bind(older_than.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(into_claim(token, rows))
    }

    /// Extends the lease of the given chunks that are still held under `token`, and
    /// returns those (a chunk missing from the answer was taken over or cancelled).
    pub async fn renew_lease(
        &self,
        token: Uuid,
        chunks: &[ChunkKey],
        lease: Duration,
    ) -> Result<Vec<ChunkKey>> {
        let renewed: Vec<(Uuid, i32)> = sqlx::query_as(concat!(
            held_chunks_locked!(),
            " UPDATE queue_chunks q SET lease_until = now() + make_interval(secs => $4)
             FROM l WHERE q.batch_id = l.batch_id AND q.first_idx = l.first_idx
             RETURNING q.batch_id, q.first_idx"
        ))
        .bind(batch_ids(chunks))
        .bind(first_idxs(chunks))
        .bind(token)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(renewed
            .into_iter()
            .map(|(batch_id, first_idx)| ChunkKey {
                batch_id,
                first_idx,
            })
            .collect())
    }

    /// Hands chunks back untouched (shutdown): the attempt did not happen.
    pub async fn release(&self, token: Uuid, chunks: &[ChunkKey]) -> Result<u64> {
        let done = sqlx::query(concat!(
            held_chunks_locked!(),
            " UPDATE queue_chunks q SET lease_token = NULL, lease_until = NULL, attempts = q.attempts - 1
             FROM l WHERE q.batch_id = l.batch_id AND q.first_idx = l.first_idx"
        ))
        .bind(batch_ids(chunks))
        .bind(first_idxs(chunks))
        .bind(token)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Writes final answers, the errors of numbers to retry and the chunks let go of,
    /// in one statement: the batch counters, the refund of numbers that ended in error,
    /// the result cache, and one notification per batch touched commit with the answers.
    ///
    /// Every write is guarded by the chunk's lease token, so a worker whose lease was
    /// taken over cannot overwrite, double-count or double-refund a number. A deadlock
    /// or serialization failure is retried here (the statement rolled back whole).
    /// Returns the answers written (committed) for `work.watched`, for this process's watchers.
    /// `cache_as`: the backend whose cache gets the answers, or None to cache nothing.
    pub async fn complete(
        &self,
        token: Uuid,
        cache_as: Option<&str>,
        work: &Completion<'_>,
    ) -> Result<Vec<WrittenRow>> {
        if work.answers.is_empty() && work.retries.is_empty() && work.ends.is_empty() {
            return Ok(Vec::new());
        }
        retry_conflicts(|| write_answers(&self.pool, token, cache_as, work, self.origin)).await
    }

    /// Numbers waiting to be checked, and how long the oldest has waited (seconds).
    pub async fn queue_stats(&self) -> Result<(i64, f64)> {
        sqlx::query_as(
            "SELECT coalesce(sum(total_numbers - completed - failed - cancelled), 0)::bigint,
                    coalesce(extract(epoch FROM now() - min(created_at))::float8, 0)
             FROM batches WHERE completed_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from)
    }
}

/// The answers' statement: rows, retries, cache, counters, refunds, ledger,
/// notifications and the chunks let go of, at once, taking its locks in the store's
/// order (store/mod.rs): the chunks it holds first (`k`, ascending), which guard their
/// numbers; then the batch rows (`lb`, ascending), the accounts refunded (`la`,
/// ascending) and the cache rows (ascending e164, once the accounts are done). Returns
/// the rows written for the batches in `work.watched`, whose notifications carry
/// `origin` so this process's hub skips reading them back; other batches'
/// notifications are read back everywhere.
async fn write_answers(
    pool: &sqlx::PgPool,
    token: Uuid,
    cache_as: Option<&str>,
    work: &Completion<'_>,
    origin: Uuid,
) -> Result<Vec<WrittenRow>> {
    let (answers, retries, ends) = (work.answers, work.retries, work.ends);
    sqlx::query_as(concat!(
        "WITH r AS (
            SELECT * FROM unnest($1::uuid[], $2::int[], $3::int[], $4::smallint[], $5::text[], $6::bool[], $7::text[])
                AS r(batch_id, idx, chunk, state, wa_id, is_business, error)),
         t AS (
            SELECT * FROM unnest($19::uuid[], $20::int[], $21::int[], $22::text[]) AS t(batch_id, idx, chunk, error)),
         e AS (
            SELECT * FROM unnest($13::uuid[], $14::int[], $15::smallint[]) AS e(batch_id, first_idx, action)),
         -- The chunks still held under this lease, locked: only their numbers are written.
         k AS (
            SELECT q.batch_id, q.first_idx, q.attempts
            FROM queue_chunks q
            JOIN (SELECT batch_id, chunk FROM r UNION SELECT batch_id, chunk FROM t
                  UNION SELECT batch_id, first_idx FROM e) h
              ON q.batch_id = h.batch_id AND q.first_idx = h.chunk
            WHERE q.lease_token = $8
            ORDER BY q.batch_id, q.first_idx
            FOR UPDATE OF q),
         u AS (
            UPDATE batch_numbers n
            SET state = r.state, wa_id = r.wa_id, is_business = r.is_business, error = r.error,
                checked_at = now(), attempts = k.attempts
            FROM r JOIN k ON k.batch_id = r.batch_id AND k.first_idx = r.chunk
            WHERE n.batch_id = r.batch_id AND n.idx = r.idx AND n.state = $26
            RETURNING n.batch_id, n.idx, n.input, n.e164, n.region, n.state, n.wa_id, n.is_business,
                      n.error, n.checked_at, n.from_cache, n.normalization_note, n.line_type, n.carrier),
         -- Numbers to try again keep their last error, shown while they wait.
         retried AS (
            UPDATE batch_numbers n SET error = t.error, attempts = k.attempts
            FROM t JOIN k ON k.batch_id = t.batch_id AND k.first_idx = t.chunk
            WHERE n.batch_id = t.batch_id AND n.idx = t.idx AND n.state = $26),
         agg AS (
            SELECT batch_id,
                   count(*) FILTER (WHERE state <> $27)::int AS done,
                   count(*) FILTER (WHERE state = $27)::int AS failed,
                   string_agg(idx::text, ',' ORDER BY idx) AS idxs
            FROM u GROUP BY batch_id),
         lb AS (
            SELECT batches.id FROM batches JOIN agg ON agg.batch_id = batches.id
            ORDER BY batches.id FOR NO KEY UPDATE OF batches),
         b AS (
            UPDATE batches
            SET completed = batches.completed + agg.done,
                failed = batches.failed + agg.failed,
                credits_refunded = batches.credits_refunded + agg.failed,
                completed_at = CASE
                    WHEN batches.completed + agg.done + batches.failed + agg.failed + batches.cancelled
                         = batches.total_numbers
                    THEN now() ELSE batches.completed_at END
            FROM agg JOIN lb ON lb.id = agg.batch_id WHERE batches.id = agg.batch_id
            -- The notification rides on this data-modifying CTE, which always runs,
            -- whichever rows the final SELECT returns.
            RETURNING batches.id, batches.account_id, agg.failed::bigint AS refund,
                      pg_notify($9, ",
        results_payload!("agg.batch_id", "agg.idxs", "CASE WHEN agg.batch_id = ANY($11) THEN $12 END"),
        ")),
         refunds AS (
            SELECT account_id, sum(refund)::bigint AS refund FROM b WHERE refund > 0 GROUP BY account_id),
         la AS (
            SELECT accounts.id FROM accounts JOIN refunds ON refunds.account_id = accounts.id
            ORDER BY accounts.id FOR NO KEY UPDATE OF accounts),
         acct AS (
            UPDATE accounts SET credits = credits + refunds.refund
            FROM refunds JOIN la ON la.id = refunds.account_id
            WHERE accounts.id = refunds.account_id
            RETURNING accounts.id, accounts.credits),
         ledger AS (
            INSERT INTO credit_ledger (account_id, delta, reason, batch_id, balance_after)
            SELECT b.account_id, b.refund, 'refund_error', b.id,
                   acct.credits - coalesce(sum(b.refund) OVER (PARTITION BY b.account_id ORDER BY b.id
                        ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING), 0)
            FROM b JOIN acct ON acct.id = b.account_id WHERE b.refund > 0),
         cache AS (
            INSERT INTO number_cache (backend, e164, on_whatsapp, wa_id, is_business, checked_at)
            SELECT DISTINCT ON (e164) $10, e164, state = $28, wa_id, is_business, checked_at
            FROM u WHERE state IN ($28, $29) AND $10::text IS NOT NULL
              -- After the batch rows and the accounts: the order every writer takes.
              AND (SELECT count(*) FROM acct) >= 0
            ORDER BY e164
            ON CONFLICT (backend, e164) DO UPDATE
            SET on_whatsapp = excluded.on_whatsapp, wa_id = excluded.wa_id,
                is_business = excluded.is_business, checked_at = excluded.checked_at),
         finished AS (
            DELETE FROM queue_chunks q USING e, k
            WHERE q.batch_id = e.batch_id AND q.first_idx = e.first_idx AND e.action = $23
              AND k.batch_id = e.batch_id AND k.first_idx = e.first_idx),
         requeued AS (
            -- Exponential backoff with jitter for retries: base * 2^(attempts-1), capped,
            -- times 0.5..1; a deferral waits as long as the checker said and is not counted.
            UPDATE queue_chunks q
            SET lease_token = NULL, lease_until = NULL, attempts = q.attempts - (e.action = $25)::int,
                available_at = now() + make_interval(secs => CASE WHEN e.action = $25 THEN $16::float8
                    ELSE least($18::float8, $17::float8 * power(2, q.attempts - 1)) * (0.5 + random() / 2) END)
            FROM e JOIN k ON k.batch_id = e.batch_id AND k.first_idx = e.first_idx
            WHERE q.batch_id = e.batch_id AND q.first_idx = e.first_idx AND e.action IN ($24, $25))
         SELECT u.batch_id, u.idx, u.input, u.e164, u.region, u.state, u.wa_id, u.is_business, u.error,
                u.checked_at, u.from_cache, u.normalization_note, u.line_type, u.carrier
         FROM u WHERE u.batch_id = ANY($11)"
    ))
    .bind(answers.iter().map(|a| a.batch_id).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.idx).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.chunk).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.state as i16).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.wa_id.as_deref()).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.is_business).collect::<Vec<_>>())
    .bind(answers.iter().map(|a| a.error.as_deref()).collect::<Vec<_>>())
    .bind(token)
    .bind(RESULTS_CHANNEL)
    .bind(cache_as)
    .bind(work.watched)
    .bind(origin.to_string())
    .bind(ends.iter().map(|(c, _)| c.batch_id).collect::<Vec<_>>())
    .bind(ends.iter().map(|(c, _)| c.first_idx).collect::<Vec<_>>())
    .bind(ends.iter().map(|(_, e)| *e as i16).collect::<Vec<_>>())
    .bind(work.defer_for.as_secs_f64())
    .bind(work.backoff_base.as_secs_f64())
    .bind(work.backoff_max.as_secs_f64())
    .bind(retries.iter().map(|r| r.batch_id).collect::<Vec<_>>())
    .bind(retries.iter().map(|r| r.idx).collect::<Vec<_>>())
    .bind(retries.iter().map(|r| r.chunk).collect::<Vec<_>>())
    .bind(retries.iter().map(|r| r.error.as_str()).collect::<Vec<_>>())
    .bind(ChunkEnd::Done as i16)
    .bind(ChunkEnd::Retry as i16)
    .bind(ChunkEnd::Defer as i16)
    .bind(NumberState::Pending as i16)
    .bind(NumberState::Error as i16)
    .bind(NumberState::OnWhatsApp as i16)
    .bind(NumberState::NotOnWhatsApp as i16)
    .fetch_all(pool)
    .await
    .map_err(StoreError::from)
}

/// A claim from the leased chunks' rows (a chunk with no number pending has one row
/// without a number).
fn into_claim(token: Uuid, rows: Vec<ClaimRow>) -> Claim {
    let mut claim = Claim {
        token,
        chunks: Vec::new(),
        numbers: Vec::with_capacity(rows.len()),
    };
    for row in rows {
        let key = ChunkKey {
            batch_id: row.batch_id,
            first_idx: row.first_idx,
        };
        if !claim.chunks.contains(&key) {
            claim.chunks.push(key);
        }
        if let (Some(idx), Some(e164)) = (row.idx, row.e164) {
            claim.numbers.push(Claimed {
                batch_id: row.batch_id,
                idx,
                chunk: row.first_idx,
                e164,
                attempts: row.attempts,
                queued_at: row.queued_at,
            });
        }
    }
    // Checked in index order, so a chunk is finished as early as its numbers allow.
    claim.numbers.sort_unstable_by_key(|c| (c.batch_id, c.idx));
    claim
}

/// The chunks' keys as the two arrays a statement unnests.
fn batch_ids(chunks: &[ChunkKey]) -> Vec<Uuid> {
    chunks.iter().map(|c| c.batch_id).collect()
}

fn first_idxs(chunks: &[ChunkKey]) -> Vec<i32> {
    chunks.iter().map(|c| c.first_idx).collect()
}

/// What one checker call produced, for `Store::complete`.
pub struct Completion<'a> {
    pub answers: &'a [Answer],
    pub retries: &'a [Retry],
    /// Chunks every claimed number of which is now dealt with, and how to let go of them.
    pub ends: &'a [(ChunkKey, ChunkEnd)],
    /// How long deferred chunks wait.
    pub defer_for: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Batches watched in this process: their written rows are returned to be handed
    /// to the watchers directly (none in a worker-only process).
    pub watched: &'a [Uuid],
}
