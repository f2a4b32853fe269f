//! Storing batches (with their credit charge) and reading their results.
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::notify::results_payload;
use super::rows::{BatchRow, CachedAnswer, ResultRow};
use super::{CHUNK_NUMBERS, QUEUED_CHANNEL, Result, Store, StoreError};
use crate::domain::batch::NumberState;
use crate::domain::phone::{Entry, Parsed};

/// A batch to store: its unique entries and what identifies the request.
pub struct NewBatch<'a> {
    pub account_id: Uuid,
    pub request_id: Option<&'a str>,
    pub fingerprint: Vec<u8>,
    pub entries: &'a [Entry],
    /// Answers from the result cache, by E.164; these numbers are done at once.
    pub cached: &'a HashMap<String, CachedAnswer>,
    pub callback_url: Option<&'a str>,
    /// Queue the numbers before every batch's (a caller is waiting for them).
    pub ahead: bool,
    /// Free entries (invalid, cancelled) an account may have an hour unless it has its own
    /// limit; 0: none.
    pub free_per_hour: i64,
}

// Macros rather than consts so queries stay `&'static str` (sqlx refuses runtime-built SQL).
macro_rules! batch_columns {
    () => {
        "id, total_numbers, completed, failed, cancelled, created_at, completed_at, credits_charged, credits_refunded, request_id"
    };
}
macro_rules! result_columns {
    () => {
        "idx, input, e164, region, state, wa_id, is_business, error, checked_at, from_cache, normalization_note, line_type, carrier"
    };
}

impl Store {
    /// Stores the batch, its numbers and the credit charge in one transaction.
    /// Invalid entries are refunded in the same transaction: they cost nothing,
    /// but the balance must cover the whole batch up front.
    /// A repeated `request_id` returns the original batch and charges nothing.
    ///
    /// The account row is locked only by the final debit, just before commit,
    /// so one account's concurrent submits overlap their inserts instead of
    /// queueing behind each other's.
    pub async fn submit_batch(&self, new: NewBatch<'_>) -> Result<BatchRow> {
        let total = new.entries.len() as i64;
        let mut invalid = 0i64;
        let mut cached = 0i64;
        for entry in new.entries {
            match &entry.parsed {
                Parsed::Invalid { .. } => invalid += 1,
                Parsed::Valid(v) if new.cached.contains_key(&v.e164) => cached += 1,
                Parsed::Valid(_) => {}
            }
        }
        let queued = total - invalid - cached;

        // Reserved before the transaction; it also pre-checks the balance, so a batch
        // that cannot be paid for costs no insert. The charge is checked again below.
        let start = if new.ahead {
            self.front_of_queue(new.account_id, total).await?
        } else {
            self.reserve_fair_slots(new.account_id, total, queued)
                .await?
        };
        let Some(start) = start else {
            // A retry of a batch accepted before the balance ran low is still that batch,
            // and a reused request_id is reported as such, as when the balance suffices.
            if new.request_id.is_some() {
                match self.existing_batch(&new).await {
                    Ok(batch) => return Ok(batch),
                    Err(err @ StoreError::RequestIdReused(_)) => return Err(err),
                    Err(_) => {}
                }
            }
            return Err(self.insufficient(new.account_id, total).await);
        };
        let slots = FairSlots {
            account_id: new.account_id,
            end: start + queued,
            // Queued ahead, the batch reserved nothing of the account's clock.
            len: if new.ahead { 0 } else { queued },
        };
        let stored = self.store_paid(&new, total, invalid, cached, start).await;
        // Whatever kept the batch out (a twin, a short balance, an error) gives the slots back.
        if !matches!(stored, Ok(Stored::New(_))) {
            self.release_slots(&slots).await;
        }
        match stored? {
            Stored::New(batch) => Ok(batch),
            Stored::Twin => self.existing_batch(&new).await,
            // A concurrent submit spent the credits after the pre-check.
            Stored::Unpaid => Err(self.insufficient(new.account_id, total).await),
        }
    }

    /// The submit's transaction: the batch and its numbers, then the charge.
    async fn store_paid(
        &self,
        new: &NewBatch<'_>,
        total: i64,
        invalid: i64,
        cached: i64,
        start: i64,
    ) -> Result<Stored> {
        let queued = total - invalid - cached;
        let mut tx = self.pool.begin().await?;
        // The request (and batch) rows go first, so a concurrent twin waits on the request key and then sees this batch.
        let Some(batch) = insert_batch(&mut tx, new, total, invalid, cached, start).await? else {
            return Ok(Stored::Twin);
        };
        let charged: Option<(i64,)> = sqlx::query_as(
            "WITH d AS (
                UPDATE accounts SET credits = credits - $2 + $4
                WHERE id = $1 AND credits >= $2
                RETURNING credits),
             l AS (
                INSERT INTO credit_ledger (account_id, delta, reason, batch_id, balance_after)
                SELECT $1, -$2::bigint, 'batch_charge', $3, d.credits - $4 FROM d
                UNION ALL
                SELECT $1, $4, 'refund_invalid', $3, d.credits FROM d WHERE $4 > 0),
             n AS (SELECT pg_notify($5, '') FROM d WHERE $6)
             SELECT d.credits FROM d, (SELECT count(*) FROM n) AS notified",
        )
        .bind(new.account_id)
        .bind(total)
        .bind(batch.id)
        .bind(invalid)
        .bind(QUEUED_CHANNEL)
        .bind(queued > 0)
        .fetch_optional(&mut *tx)
        .await?;
        if charged.is_none() {
            return Ok(Stored::Unpaid);
        }
        // Free entries (invalid, cancelled) of the last hour, this batch's invalid ones
        // included, within the account's limit. After the charge locked the account row:
        // a concurrent submit of the same account committed before this statement's
        // snapshot, so its entries count.
        let over: Option<i64> = sqlx::query_scalar(
            "SELECT l.lim::bigint FROM
                (SELECT coalesce(free_entries_per_hour, $2) AS lim FROM accounts WHERE id = $1) l
             WHERE l.lim > 0 AND l.lim < (
                SELECT coalesce(sum(delta), 0) FROM credit_ledger
                WHERE account_id = $1 AND reason IN ('refund_invalid', 'refund_cancelled')
                  AND created_at > now() - interval '1 hour')",
        )
        .bind(new.account_id)
        .bind(new.free_per_hour)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(limit) = over {
            return Err(StoreError::FreeEntriesLimit { limit });
        }
        tx.commit().await?;
        Ok(Stored::New(batch))
    }

    /// Start-time fair queuing: reserves `queued` slots of the account's clock, starting
    /// at the later of the queue's current virtual time and the end of the account's
    /// own queued work, so an account with a long backlog is interleaved with, not
    /// ahead of, a newcomer. One short statement of its own; None when the balance is
    /// below `covering`. Returns the first slot.
    pub async fn reserve_fair_slots(
        &self,
        account_id: Uuid,
        covering: i64,
        queued: i64,
    ) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "WITH v AS (
                SELECT coalesce((SELECT min(fair_key) FROM queue_chunks WHERE fair_key >= 0),
                                (SELECT max(fair_clock) FROM accounts), 0) AS now)
             UPDATE accounts SET fair_clock = greatest(fair_clock, v.now) + $3
             FROM v WHERE id = $1 AND credits >= $2
             RETURNING fair_clock - $3",
        )
        .bind(account_id)
        .bind(covering)
        .bind(queued)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// A place before every batch's work, for a caller waiting on its number: fair keys
    /// below zero in arrival order (batches' keys are never negative); None when the
    /// balance is below `covering`.
    async fn front_of_queue(&self, account_id: Uuid, covering: i64) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint - 4611686018427387904
             FROM accounts WHERE id = $1 AND credits >= $2",
        )
        .bind(account_id)
        .bind(covering)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    async fn insufficient(&self, account_id: Uuid, required: i64) -> StoreError {
        match sqlx::query_scalar("SELECT credits FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_one(&self.pool)
            .await
        {
            Ok(available) => StoreError::InsufficientCredits {
                required,
                available,
            },
            Err(err) => err.into(),
        }
    }

    /// Gives back a reservation that no batch used, if nothing was reserved after it;
    /// otherwise the gap only delays this account's next batch a little.
    async fn release_slots(&self, slots: &FairSlots) {
        if slots.len == 0 {
            return;
        }
        let released = sqlx::query(
            "UPDATE accounts SET fair_clock = fair_clock - $3 WHERE id = $1 AND fair_clock = $2",
        )
        .bind(slots.account_id)
        .bind(slots.end)
        .bind(slots.len)
        .execute(&self.pool)
        .await;
        if let Err(err) = released {
            tracing::debug!(error = %err, "could not give back unused queue slots");
        }
    }

    /// The batch an earlier request with this request_id created. Its row may be gone
    /// (retention deletes finished batches); the request is kept for good, and a retry
    /// is then answered from it: the same batch id and total, completed.
    async fn existing_batch(&self, new: &NewBatch<'_>) -> Result<BatchRow> {
        let request_id = new.request_id.unwrap_or_default();
        let row: Option<(Vec<u8>, Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
            "SELECT request_hash, batch_id, total_numbers, created_at FROM batch_requests
             WHERE account_id = $1 AND request_id = $2",
        )
        .bind(new.account_id)
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        // The twin that held the key rolled back after we saw the conflict: rare; the
        // request raced a failed twin and can simply be sent again.
        let Some((hash, id, total_numbers, created_at)) = row else {
            return Err(StoreError::Conflict(sqlx::Error::RowNotFound));
        };
        if hash != new.fingerprint {
            return Err(StoreError::RequestIdReused(request_id.to_string()));
        }
        Ok(match self.batch(new.account_id, id).await? {
            Some(batch) => batch,
            None => BatchRow {
                id,
                total_numbers,
                completed: 0,
                failed: 0,
                cancelled: 0,
                created_at,
                completed_at: Some(created_at),
                credits_charged: 0,
                credits_refunded: 0,
                request_id: Some(request_id.to_string()),
            },
        })
    }

    /// The batch, if it belongs to the account.
    pub async fn batch(&self, account_id: Uuid, batch_id: Uuid) -> Result<Option<BatchRow>> {
        sqlx::query_as(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM batches WHERE id = $1 AND account_id = $2"
        ))
        .bind(batch_id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// The batch and all its results in index order, from one snapshot so the counters match the rows.
    pub async fn batch_with_results(
        &self,
        account_id: Uuid,
        batch_id: Uuid,
    ) -> Result<Option<(BatchRow, Vec<ResultRow>)>> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let batch: Option<BatchRow> = sqlx::query_as(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM batches WHERE id = $1 AND account_id = $2"
        ))
        .bind(batch_id)
        .bind(account_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(batch) = batch else {
            return Ok(None);
        };
        let rows = sqlx::query_as(concat!(
            "SELECT ",
            result_columns!(),
            " FROM batch_numbers WHERE batch_id = $1 ORDER BY idx"
        ))
        .bind(batch_id)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((batch, rows)))
    }

    /// The account's batches, newest first, strictly after `after` (created_at, id) when given.
    pub async fn list_batches(
        &self,
        account_id: Uuid,
        completed: Option<bool>,
        after: Option<(DateTime<Utc>, Uuid)>,
        limit: i64,
    ) -> Result<Vec<BatchRow>> {
        sqlx::query_as(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM batches
             WHERE account_id = $1
               AND ($2::bool IS NULL OR (completed_at IS NOT NULL) = $2)
               AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
             ORDER BY created_at DESC, id DESC
             LIMIT $5"
        ))
        .bind(account_id)
        .bind(completed)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// Cancels what is still queued or being checked: those numbers end as
    /// cancelled and are refunded in the same transaction, once (a number leaves
    /// the pending state only once, and late worker writes are ignored).
    /// Returns the batch after the change and how many numbers were cancelled.
    pub async fn cancel_batch(
        &self,
        account_id: Uuid,
        batch_id: Uuid,
    ) -> Result<Option<(BatchRow, i64)>> {
        super::retry_conflicts(|| self.cancel_once(account_id, batch_id)).await
    }

    async fn cancel_once(
        &self,
        account_id: Uuid,
        batch_id: Uuid,
    ) -> Result<Option<(BatchRow, i64)>> {
        let mut tx = self.pool.begin().await?;
        let found: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM batches WHERE id = $1 AND account_id = $2")
                .bind(batch_id)
                .bind(account_id)
                .fetch_optional(&mut *tx)
                .await?;
        if found.is_none() {
            return Ok(None);
        }
        // The store's lock order: the batch's chunks first. A worker writing results of
        // one of them finishes first; one that has not started its write finds its
        // lease gone afterwards and writes nothing.
        sqlx::query("SELECT 1 FROM queue_chunks WHERE batch_id = $1 ORDER BY first_idx FOR UPDATE")
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        // `n` is read so it runs: a plain SELECT in WITH runs only when referenced.
        let (cancelled, _notified): (i64, i64) = sqlx::query_as(concat!(
            "WITH u AS (
                UPDATE batch_numbers
                SET state = $2, checked_at = now(), error = 'cancelled before it was checked'
                WHERE batch_id = $1 AND state = $3
                RETURNING idx),
             -- Watchers on every replica learn of the cancelled numbers like of any result.
             n AS (
                SELECT pg_notify($4, ",
            results_payload!("$1", "string_agg(idx::text, ',' ORDER BY idx)", "NULL"),
            ") FROM u HAVING count(*) > 0)
             SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)"
        ))
        .bind(batch_id)
        .bind(NumberState::Cancelled as i16)
        .bind(NumberState::Pending as i16)
        .bind(super::RESULTS_CHANNEL)
        .fetch_one(&mut *tx)
        .await?;
        if cancelled > 0 {
            // Then the batch row, then the account.
            sqlx::query(
                "UPDATE batches SET cancelled = cancelled + $2, credits_refunded = credits_refunded + $2,
                        completed_at = coalesce(completed_at, now())
                 WHERE id = $1",
            )
            .bind(batch_id)
            .bind(cancelled as i32)
            .execute(&mut *tx)
            .await?;
            let balance: i64 = sqlx::query_scalar(
                "UPDATE accounts SET credits = credits + $2 WHERE id = $1 RETURNING credits",
            )
            .bind(account_id)
            .bind(cancelled)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO credit_ledger (account_id, delta, reason, batch_id, balance_after)
                 VALUES ($1, $2, 'refund_cancelled', $3, $4)",
            )
            .bind(account_id)
            .bind(cancelled)
            .bind(batch_id)
            .bind(balance)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM queue_chunks WHERE batch_id = $1")
            .bind(batch_id)
            .execute(&mut *tx)
            .await?;
        let batch: BatchRow = sqlx::query_as(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM batches WHERE id = $1"
        ))
        .bind(batch_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some((batch, cancelled)))
    }

    /// Deletes up to `limit` batches that completed more than `age` ago (numbers and
    /// deliveries go with them; the ledger stays). Small statements that skip
    /// locked rows, so pruning never blocks workers. Returns how many were deleted.
    pub async fn prune_batches(&self, age: Duration, limit: i64) -> Result<u64> {
        // Numbers have no foreign key to their batch (it cost every insert): delete them here.
        let done: i64 = sqlx::query_scalar(
            "WITH gone AS (
                DELETE FROM batches WHERE id IN (
                    SELECT id FROM batches
                    WHERE completed_at < now() - make_interval(secs => $1)
                    ORDER BY completed_at LIMIT $2 FOR UPDATE SKIP LOCKED)
                RETURNING id),
             numbers AS (DELETE FROM batch_numbers WHERE batch_id IN (SELECT id FROM gone)),
             chunks AS (DELETE FROM queue_chunks WHERE batch_id IN (SELECT id FROM gone))
             SELECT count(*) FROM gone",
        )
        .bind(age.as_secs_f64())
        .bind(limit)
        .fetch_one(&self.pool)
        .await?;
        Ok(done as u64)
    }

    /// Finished results of a batch (all of them, or only the given indexes), in index order.
    pub async fn finished_results(
        &self,
        batch_id: Uuid,
        only: Option<&[i32]>,
    ) -> Result<Vec<ResultRow>> {
        // Two statements, so the index list is a primary-key lookup, not a filter
        // comparing every row of the batch with every index asked for.
        match only {
            Some(indexes) => sqlx::query_as(concat!(
                "SELECT ",
                result_columns!(),
                " FROM batch_numbers
                 WHERE batch_id = $1 AND idx = ANY($2) AND state <> $3
                 ORDER BY idx"
            ))
            .bind(batch_id)
            .bind(indexes)
            .bind(NumberState::Pending as i16),
            None => sqlx::query_as(concat!(
                "SELECT ",
                result_columns!(),
                " FROM batch_numbers WHERE batch_id = $1 AND state <> $2 ORDER BY idx"
            ))
            .bind(batch_id)
            .bind(NumberState::Pending as i16),
        }
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from)
    }
}

/// How the submit's transaction ended; anything but `New` rolled back.
enum Stored {
    New(BatchRow),
    /// The account already has a batch with this request_id.
    Twin,
    /// The balance no longer covers the batch.
    Unpaid,
}

/// A range of an account's fair-queuing clock reserved for one batch.
struct FairSlots {
    account_id: Uuid,
    end: i64,
    len: i64,
}

/// Inserts the batch row and its numbers in one statement; None when the
/// account already has a batch with this request_id.
async fn insert_batch(
    tx: &mut sqlx::PgConnection,
    new: &NewBatch<'_>,
    total: i64,
    invalid: i64,
    cached: i64,
    fair_start: i64,
) -> Result<Option<BatchRow>> {
    let (entries, cache) = (new.entries, new.cached);
    let n = entries.len();
    let mut idx = Vec::with_capacity(n);
    let mut input = Vec::with_capacity(n);
    let mut e164 = Vec::with_capacity(n);
    let mut region = Vec::with_capacity(n);
    let mut state = Vec::with_capacity(n);
    let mut error: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut note = Vec::with_capacity(n);
    let mut wa_id: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut business = Vec::with_capacity(n);
    let mut checked_at: Vec<Option<DateTime<Utc>>> = Vec::with_capacity(n);
    let mut from_cache = Vec::with_capacity(n);
    let mut line_type: Vec<Option<i16>> = Vec::with_capacity(n);
    let mut carrier: Vec<Option<&str>> = Vec::with_capacity(n);
    // Queued entries, cut into chunks of CHUNK_NUMBERS in index order, each at its
    // place in the fair queue.
    let mut chunk_first: Vec<i32> = Vec::new();
    let mut chunk_last: Vec<i32> = Vec::new();
    let mut chunk_fair: Vec<i64> = Vec::new();
    let mut queued = 0usize;
    for entry in entries {
        idx.push(entry.index);
        input.push(entry.input.as_str());
        match &entry.parsed {
            Parsed::Valid(v) => {
                e164.push(Some(v.e164.as_str()));
                region.push(Some(v.region.as_str()));
                note.push(v.note.as_deref());
                error.push(None);
                line_type.push(Some(v.line_type.code()));
                carrier.push(v.carrier);
                match cache.get(&v.e164) {
                    Some(c) => {
                        state.push(if c.on_whatsapp {
                            NumberState::OnWhatsApp
                        } else {
                            NumberState::NotOnWhatsApp
                        } as i16);
                        wa_id.push(c.wa_id.as_deref());
                        business.push(c.is_business);
                        checked_at.push(Some(c.checked_at));
                        from_cache.push(true);
                    }
                    None => {
                        state.push(NumberState::Pending as i16);
                        wa_id.push(None);
                        business.push(false);
                        checked_at.push(None);
                        from_cache.push(false);
                        if queued.is_multiple_of(CHUNK_NUMBERS) {
                            chunk_first.push(entry.index);
                            chunk_last.push(entry.index);
                            chunk_fair.push(fair_start + queued as i64);
                        } else if let Some(last) = chunk_last.last_mut() {
                            *last = entry.index;
                        }
                        queued += 1;
                    }
                }
            }
            Parsed::Invalid { reason } => {
                e164.push(None);
                region.push(None);
                note.push(None);
                line_type.push(None);
                carrier.push(None);
                state.push(NumberState::InvalidNumber as i16);
                error.push(Some(reason.as_str()));
                wa_id.push(None);
                business.push(false);
                checked_at.push(Some(Utc::now()));
                from_cache.push(false);
            }
        }
    }
    // Invalid and cached entries are answered at submission; they never reach a checker.
    sqlx::query_as(concat!(
        "WITH rq AS (
            INSERT INTO batch_requests (account_id, request_id, request_hash, batch_id, total_numbers)
            SELECT $2, $3, $4, $1, $5 WHERE $3::text IS NOT NULL
            ON CONFLICT (account_id, request_id) DO NOTHING
            RETURNING 1),
         b AS (
            INSERT INTO batches (id, account_id, request_id, request_hash, total_numbers, completed, completed_at,
                                 credits_charged, credits_refunded, callback_url)
            SELECT $1, $2, $3, $4, $5, $6, CASE WHEN $6 = $5 THEN now() END, $5, $7, $8
            WHERE $3::text IS NULL OR EXISTS (SELECT 1 FROM rq)
            RETURNING *),
         n AS (
            INSERT INTO batch_numbers (batch_id, idx, input, e164, region, state, error,
                                       normalization_note, wa_id, is_business, checked_at, from_cache,
                                       line_type, carrier)
            SELECT b.id, t.* FROM b, unnest($9::int[], $10::text[], $11::text[], $12::text[], $13::smallint[],
                                           $14::text[], $15::text[], $16::text[], $17::bool[],
                                           $18::timestamptz[], $19::bool[], $23::smallint[], $24::text[])
                AS t(idx, input, e164, region, state, error, note, wa_id, is_business, checked_at, from_cache,
                     line_type, carrier)),
         q AS (
            INSERT INTO queue_chunks (batch_id, first_idx, last_idx, fair_key)
            SELECT b.id, t.* FROM b, unnest($20::int[], $21::int[], $22::bigint[]) AS t(first_idx, last_idx, fair))
         SELECT ",
        batch_columns!(),
        " FROM b"
    ))
    // Time-ordered ids: a batch's numbers land at the right edge of the primary key, not on random pages.
    .bind(Uuid::now_v7())
    .bind(new.account_id)
    .bind(new.request_id)
    .bind(&new.fingerprint)
    .bind(total as i32)
    .bind((invalid + cached) as i32)
    .bind(invalid)
    .bind(new.callback_url)
    .bind(idx)
    .bind(input)
    .bind(e164)
    .bind(region)
    .bind(state)
    .bind(error)
    .bind(note)
    .bind(wa_id)
    .bind(business)
    .bind(checked_at)
    .bind(from_cache)
    .bind(chunk_first)
    .bind(chunk_last)
    .bind(chunk_fair)
    .bind(line_type)
    .bind(carrier)
    .fetch_optional(tx)
    .await
    .map_err(StoreError::from)
}
