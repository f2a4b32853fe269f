//! Accounts, API keys and the credit ledger.
use uuid::Uuid;

use super::{Result, Store, StoreError};
use crate::domain::api_key::ApiKey;

impl Store {
    /// Creates an account with an opening balance and its first API key.
    pub async fn create_account(&self, name: &str, credits: i64) -> Result<(Uuid, ApiKey)> {
        let id = Uuid::new_v4();
        let key = ApiKey::generate();
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO accounts (id, name, credits) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(credits)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO credit_ledger (account_id, delta, reason, balance_after) VALUES ($1, $2, 'opening_balance', $2)",
        )
        .bind(id)
        .bind(credits)
        .execute(&mut *tx)
        .await?;
        sqlx::query("INSERT INTO api_keys (key_hash, account_id) VALUES ($1, $2)")
            .bind(key.hash())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((id, key))
    }

    /// Adds credits with a ledger entry; returns the new balance, or None for an unknown account.
    pub async fn add_credits(&self, account_id: Uuid, amount: i64) -> Result<Option<i64>> {
        let mut tx = self.pool.begin().await?;
        let balance: Option<i64> = sqlx::query_scalar(
            "UPDATE accounts SET credits = credits + $2 WHERE id = $1 RETURNING credits",
        )
        .bind(account_id)
        .bind(amount)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(balance) = balance else {
            return Ok(None);
        };
        sqlx::query(
            "INSERT INTO credit_ledger (account_id, delta, reason, balance_after) VALUES ($1, $2, 'credit', $3)",
        )
        .bind(account_id)
        .bind(amount)
        .bind(balance)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Some(balance))
    }

    /// A new key for an existing account, or None when the account does not exist.
    pub async fn create_key(&self, account_id: Uuid) -> Result<Option<ApiKey>> {
        let key = ApiKey::generate();
        let inserted = sqlx::query(
            "INSERT INTO api_keys (key_hash, account_id) SELECT $1, id FROM accounts WHERE id = $2",
        )
        .bind(key.hash())
        .bind(account_id)
        .execute(&self.pool)
        .await?;
        Ok((inserted.rows_affected() == 1).then_some(key))
    }

    /// Revokes a key; false when no such active key exists.
    pub async fn revoke_key(&self, key: &ApiKey) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key.hash())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn account_for_key(&self, key: &ApiKey) -> Result<Option<Uuid>> {
        sqlx::query_scalar(
            "SELECT account_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(key.hash())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    pub async fn balance(&self, account_id: Uuid) -> Result<i64> {
        sqlx::query_scalar("SELECT credits FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from)
    }

    /// The account's webhook signing secret, rotated first when asked; None for an unknown account.
    /// The account's own limit of invalid entries an hour (None: the server's); false when
    /// there is no such account.
    pub async fn set_free_entries_limit(
        &self,
        account_id: Uuid,
        limit: Option<i32>,
    ) -> Result<bool> {
        let done = sqlx::query("UPDATE accounts SET free_entries_per_hour = $2 WHERE id = $1")
            .bind(account_id)
            .bind(limit)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn webhook_secret(&self, account_id: Uuid, rotate: bool) -> Result<Option<String>> {
        let query = if rotate {
            "UPDATE accounts SET webhook_secret = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '')
             WHERE id = $1 RETURNING webhook_secret"
        } else {
            "SELECT webhook_secret FROM accounts WHERE id = $1"
        };
        sqlx::query_scalar(query)
            .bind(account_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from)
    }
}
