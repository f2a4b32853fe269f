//! Statements only the benchmark uses: a synthetic backlog, queued at SQL speed.
use uuid::Uuid;

use super::queue::CHUNK_NUMBERS;
use super::{Result, Store, StoreError};

impl Store {
    /// Queues `n` valid numbers for `account_id` in batches of 1,000, charging nothing:
    /// load for `wavalidate bench --backlog`, not a way to submit work.
    pub async fn enqueue_backlog(&self, account_id: Uuid, n: i64) -> Result<()> {
        // Queued at the account's place in the fair queue, as a real submission would be.
        let start = self
            .reserve_fair_slots(account_id, 0, n)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        let batches = (n + 999) / 1000;
        for b in 0..batches {
            let size = (n - b * 1000).min(1000) as i32;
            let id = Uuid::now_v7();
            let mut tx = self.pool.begin().await?;
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
                    SELECT $1, g, n, n, 'US', 1
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
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Whether any number is still queued (the bench waits for its queue to drain).
    pub async fn any_queued(&self) -> Result<bool> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM batches WHERE completed_at IS NULL)")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from)
    }

    /// Numbers checked (or given up on) since `since`.
    pub async fn finished_since(&self, since: chrono::DateTime<chrono::Utc>) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM batch_numbers WHERE state <> 1 AND checked_at >= $1",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(StoreError::from)
    }
}
