//! The webhook outbox, filled by a trigger when a batch completes (migration 4).
use std::time::Duration;

use super::{Result, Store, StoreError};

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub url: String,
    pub payload: String,
    pub attempts: i32,
    pub secret: String,
}

impl Store {
    /// Claims due deliveries under a short lease, so replicas never send one at the same time.
    pub async fn claim_deliveries(&self, limit: i64, lease: Duration) -> Result<Vec<Delivery>> {
        sqlx::query_as(
            "WITH c AS (
                SELECT id FROM webhook_deliveries
                WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
                  AND (lease_until IS NULL OR lease_until < now())
                ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             UPDATE webhook_deliveries d
             SET lease_until = now() + make_interval(secs => $2), attempts = d.attempts + 1
             FROM c, accounts a
             WHERE d.id = c.id AND a.id = d.account_id
             RETURNING d.id, d.url, d.payload, d.attempts, a.webhook_secret AS secret",
        )
        .bind(limit)
        .bind(lease.as_secs_f64())
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
