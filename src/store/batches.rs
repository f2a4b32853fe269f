//! Storing batches (with their credit charge) and reading their results.
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{QUEUED_CHANNEL, Store};
use crate::domain::batch::NumberState;
use crate::domain::phone::{Entry, Parsed};
use crate::error::ApiError;

/// A batch to store: its unique entries and what identifies the request.
pub struct NewBatch<'a> {
    pub account_id: Uuid,
    pub request_id: Option<&'a str>,
    pub fingerprint: Vec<u8>,
    pub entries: &'a [Entry],
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BatchRow {
    pub id: Uuid,
    pub total_numbers: i32,
    pub completed: i32,
    pub failed: i32,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ResultRow {
    pub idx: i32,
    pub input: String,
    pub e164: Option<String>,
    pub region: Option<String>,
    pub state: i16,
    pub wa_id: Option<String>,
    pub is_business: bool,
    pub error: Option<String>,
    pub checked_at: Option<DateTime<Utc>>,
}

impl ResultRow {
    pub fn state(&self) -> NumberState {
        NumberState::from_db(self.state)
    }
}

// Macros rather than consts so queries stay `&'static str` (sqlx refuses runtime-built SQL).
macro_rules! batch_columns {
    () => {
        "id, total_numbers, completed, failed, created_at, completed_at"
    };
}
macro_rules! result_columns {
    () => {
        "idx, input, e164, region, state, wa_id, is_business, error, checked_at"
    };
}

impl Store {
    /// Stores the batch, its numbers and the credit charge in one transaction.
    /// A repeated `request_id` returns the original batch and charges nothing.
    pub async fn submit_batch(&self, new: NewBatch<'_>) -> Result<BatchRow, ApiError> {
        let total = new.entries.len() as i64;
        let valid = new
            .entries
            .iter()
            .filter(|e| matches!(e.parsed, Parsed::Valid { .. }))
            .count() as i64;
        let mut tx = self.pool.begin().await?;

        // Inserted first, so a concurrent twin waits on the unique key and then sees this batch.
        let batch: Option<BatchRow> = sqlx::query_as(concat!("INSERT INTO batches (id, account_id, request_id, request_hash, total_numbers, completed, completed_at)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 = $5 THEN now() END)
             ON CONFLICT (account_id, request_id) DO NOTHING
             RETURNING ", batch_columns!()))
        .bind(Uuid::new_v4())
        .bind(new.account_id)
        .bind(new.request_id)
        .bind(&new.fingerprint)
        .bind(total as i32)
        .bind((total - valid) as i32)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(batch) = batch else {
            tx.rollback().await?;
            return self.existing_batch(&new).await;
        };

        // NO KEY UPDATE: the batch row's foreign key holds KEY SHARE on the account,
        // which a plain FOR UPDATE would conflict with (and deadlock concurrent submits).
        let (credits, fair_clock): (i64, i64) = sqlx::query_as(
            "SELECT credits, fair_clock FROM accounts WHERE id = $1 FOR NO KEY UPDATE",
        )
        .bind(new.account_id)
        .fetch_one(&mut *tx)
        .await?;
        if credits < total {
            tx.rollback().await?;
            return Err(ApiError::InsufficientCredits {
                required: total,
                available: credits,
            });
        }
        // Start-time fair queuing: the batch's numbers start at the later of the
        // queue's current virtual time and the end of this account's own queued work,
        // so an account with a long backlog is interleaved with, not ahead of, a newcomer.
        let (balance, start): (i64, i64) = sqlx::query_as(
            "WITH v AS (
                SELECT greatest($3, coalesce(
                    (SELECT min(fair_key) FROM batch_numbers WHERE state = 1),
                    (SELECT max(fair_clock) FROM accounts), 0)) AS start)
             UPDATE accounts SET credits = credits - $2, fair_clock = v.start + $4
             FROM v WHERE id = $1
             RETURNING credits, v.start",
        )
        .bind(new.account_id)
        .bind(total)
        .bind(fair_clock)
        .bind(valid)
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO credit_ledger (account_id, delta, reason, batch_id, balance_after)
             VALUES ($1, $2, 'batch_charge', $3, $4)",
        )
        .bind(new.account_id)
        .bind(-total)
        .bind(batch.id)
        .bind(balance)
        .execute(&mut *tx)
        .await?;
        insert_numbers(&mut tx, batch.id, new.entries, start).await?;
        if valid > 0 {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(QUEUED_CHANNEL)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(batch)
    }

    async fn existing_batch(&self, new: &NewBatch<'_>) -> Result<BatchRow, ApiError> {
        let request_id = new.request_id.unwrap_or_default();
        let (hash, batch): (Vec<u8>, BatchRow) = {
            let row: Option<(Vec<u8>, Uuid)> = sqlx::query_as(
                "SELECT request_hash, id FROM batches WHERE account_id = $1 AND request_id = $2",
            )
            .bind(new.account_id)
            .bind(request_id)
            .fetch_optional(&self.pool)
            .await?;
            // The twin that held the key rolled back after we saw the conflict: rare; the client retries.
            let (hash, id) = row.ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("request_id conflict vanished; retry"))
            })?;
            let batch = self
                .batch(new.account_id, id)
                .await?
                .ok_or(ApiError::NotFound)?;
            (hash, batch)
        };
        if hash != new.fingerprint {
            return Err(ApiError::IdempotencyKeyReused(request_id.to_string()));
        }
        Ok(batch)
    }

    /// The batch, if it belongs to the account.
    pub async fn batch(
        &self,
        account_id: Uuid,
        batch_id: Uuid,
    ) -> Result<Option<BatchRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            batch_columns!(),
            " FROM batches WHERE id = $1 AND account_id = $2"
        ))
        .bind(batch_id)
        .bind(account_id)
        .fetch_optional(&self.pool)
        .await
    }

    /// The batch and all its results in index order, from one snapshot so the counters match the rows.
    pub async fn batch_with_results(
        &self,
        account_id: Uuid,
        batch_id: Uuid,
    ) -> Result<Option<(BatchRow, Vec<ResultRow>)>, sqlx::Error> {
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

    /// Finished results of a batch (all of them, or only the given indexes), in index order.
    pub async fn finished_results(
        &self,
        batch_id: Uuid,
        only: Option<&[i32]>,
    ) -> Result<Vec<ResultRow>, sqlx::Error> {
        sqlx::query_as(concat!(
            "SELECT ",
            result_columns!(),
            " FROM batch_numbers
             WHERE batch_id = $1 AND state <> 1 AND ($2::int[] IS NULL OR idx = ANY($2))
             ORDER BY idx"
        ))
        .bind(batch_id)
        .bind(only)
        .fetch_all(&self.pool)
        .await
    }
}

async fn insert_numbers(
    tx: &mut sqlx::PgConnection,
    batch_id: Uuid,
    entries: &[Entry],
    fair_start: i64,
) -> Result<(), sqlx::Error> {
    let n = entries.len();
    let (mut idx, mut input, mut e164, mut region, mut state, mut fair) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut error: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut next_fair = fair_start;
    for entry in entries {
        idx.push(entry.index);
        input.push(entry.input.as_str());
        match &entry.parsed {
            Parsed::Valid { e164: e, region: r } => {
                e164.push(Some(e.as_str()));
                region.push(Some(r.as_str()));
                state.push(NumberState::Pending as i16);
                error.push(None);
                fair.push(next_fair);
                next_fair += 1;
            }
            Parsed::Invalid { reason } => {
                e164.push(None);
                region.push(None);
                state.push(NumberState::InvalidNumber as i16);
                error.push(Some(reason.as_str()));
                fair.push(0);
            }
        }
    }
    // Invalid entries are answered at submission; they never reach a checker.
    sqlx::query(
        "INSERT INTO batch_numbers (batch_id, idx, input, e164, region, state, error, fair_key, checked_at)
         SELECT $1, t.idx, t.input, t.e164, t.region, t.state, t.error, t.fair,
                CASE WHEN t.state = 1 THEN NULL ELSE now() END
         FROM unnest($2::int[], $3::text[], $4::text[], $5::text[], $6::smallint[], $7::text[], $8::bigint[])
              AS t(idx, input, e164, region, state, error, fair)",
    )
    .bind(batch_id)
    .bind(idx)
    .bind(input)
    .bind(e164)
    .bind(region)
    .bind(state)
    .bind(error)
    .bind(fair)
    .execute(tx)
    .await?;
    Ok(())
}
