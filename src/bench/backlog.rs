//! SQL only the benchmark runs: a synthetic backlog queued at SQL speed, and how many
//! numbers were finished in a window. Not a way to submit work: nothing is charged.
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::batch::NumberState;
use crate::store::{CHUNK_NUMBERS, Store};

/// Queues `n` valid numbers for `account_id` in batches of 1,000, charging nothing.
pub async fn enqueue(store: &Store, account_id: Uuid, n: i64) -> anyhow::Result<()> {
    // Queued at the account's place in the fair queue, as a real submission would be.
    let start = store
        .reserve_fair_slots(account_id, 0, n)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the backlog account is gone"))?;
    let batches = (n + 999) / 1000;
    for b in 0..batches {
        let size = (n - b * 1000).min(1000) as i32;
        let id = Uuid::now_v7();
        let mut tx = store.pool().begin().await?;
        sqlx::query(
            "INSERT INTO batches (id, account_id, request_hash, total_numbers, credits_charged)
             VALUES ($1, $2, '\\x00', $3, 0)",
        )
        .bind(id)
        .bind(account_id)
        .bind(size)
        .execute(&mut *tx)
        .await?;
        // Numbers +1 202 2xx xxxx, distinct per batch and index, in chunks as submitted.
        sqlx::query(
            "WITH n AS (
                INSERT INTO batch_numbers (batch_id, idx, input, e164, region, state)
                SELECT $1, g, n, n, 'US', $6
                FROM generate_series(0, $2 - 1) g,
                     LATERAL (SELECT '+1202' || lpad(((($4::bigint * 1000 + g) % 7999999) + 2000000)::text, 7, '0') AS n) x)
             INSERT INTO queue_chunks (batch_id, first_idx, last_idx, fair_key)
             SELECT $1, c, least(c + $5 - 1, $2 - 1), $3 + c FROM generate_series(0, $2 - 1, $5) c",
        )
        .bind(id)
        .bind(size)
        .bind(start + b * 1000)
        .bind(b)
        .bind(CHUNK_NUMBERS as i32)
        .bind(NumberState::Pending as i16)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Numbers checked (or given up on) since `since`.
pub async fn finished_since(store: &Store, since: DateTime<Utc>) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM batch_numbers WHERE state <> $2 AND checked_at >= $1",
    )
    .bind(since)
    .bind(NumberState::Pending as i16)
    .fetch_one(store.pool())
    .await?)
}
