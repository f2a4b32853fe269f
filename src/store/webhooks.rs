//! The webhook outbox, filled by a trigger when a batch completes (migration 4).
use std::time::Duration;

use uuid::Uuid;

use super::{Result, Store, StoreError};

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub account_id: Uuid,
    pub url: String,
    pub payload: String,
    pub attempts: i32,
    pub secret: String,
}

impl Store {
    /// Claims up to `limit` due deliveries under a short lease, so replicas never send one
    /// at the same time, fairly: each account's first due delivery before any account's
    /// second, and no account past `per_account` in flight, counting the ones this
    /// process already has (`busy`: account, deliveries in flight).
    pub async fn claim_deliveries(
        &self,
        limit: i64,
        per_account: i64,
        busy: &[(Uuid, i64)],
        lease: Duration,
    ) -> Result<Vec<Delivery>> {
        let (accounts, in_flight): (Vec<Uuid>, Vec<i64>) = busy.iter().copied().unzip();
        sqlx::query_as(
            "WITH busy AS (SELECT * FROM unnest($4::uuid[], $5::bigint[]) AS b(account_id, n)),
             ranked AS (
                SELECT id, account_id, next_attempt_at,
                       row_number() OVER (PARTITION BY account_id ORDER BY next_attempt_at, id) AS place
                FROM webhook_deliveries
                WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
                  AND (lease_until IS NULL OR lease_until < now())),
             fair AS (
                SELECT r.id FROM ranked r LEFT JOIN busy b USING (account_id)
                WHERE r.place <= $3 - coalesce(b.n, 0)
                ORDER BY r.place, r.next_attempt_at LIMIT $1),
             c AS (
                SELECT id FROM webhook_deliveries
                WHERE id IN (SELECT id FROM fair) AND delivered_at IS NULL AND failed_at IS NULL
                  AND (lease_until IS NULL OR lease_until < now())
                FOR UPDATE SKIP LOCKED)
             UPDATE webhook_deliveries d
             SET lease_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
             FROM c, accounts a
             WHERE d.id = c.id AND a.id = d.account_id
             RETURNING d.id, d.account_id, d.url, d.payload, d.attempts, a.webhook_secret AS secret",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
        .bind(per_account)
        .bind(accounts)
        .bind(in_flight)
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    pub async fn delivery_succeeded(&self, id: i64) -> Result<()> {
        sqlx::query("UPDATE webhook_deliveries SET delivered_at = now(), lease_until = NULL, last_error = NULL WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Schedules the next attempt, or gives up once the delivery is past its 24 hours.
    pub async fn delivery_failed(&self, id: i64, error: &str, retry_in: Duration) -> Result<()> {
        sqlx::query(
            "UPDATE webhook_deliveries
             SET lease_until = NULL, last_error = $2,
                 next_attempt_at = now() + make_interval(secs => $3),
                 failed_at = CASE WHEN now() + make_interval(secs => $3) > give_up_at THEN now() END
             WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(retry_in.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
