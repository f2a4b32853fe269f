//! The result cache (`number_cache`): live checks' answers, reused within a TTL.
//! Written by the result statement (queue.rs), read at submission.
//!
//! The same table keeps what `Variants` learned about a number's main form while its
//! other form waits (`remember_not_on_whatsapp`): under a key of its own, never a
//! checker's name, so it is never served as a number's answer.
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::rows::CachedAnswer;
use super::{Result, Store, retry_conflicts};

impl Store {
    /// Answers cached for `backend` within `ttl`, by E.164.
    pub async fn cached_answers(
        &self,
        backend: &str,
        e164: &[&str],
        ttl: Duration,
    ) -> Result<HashMap<String, CachedAnswer>> {
        if e164.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<CachedAnswer> = sqlx::query_as(
            // To the hour: an answer another account's check left must not tell that
            // account's exact moment (the TTL still counts from the real one).
            "SELECT e164, on_whatsapp, wa_id, is_business, date_trunc('hour', checked_at) AS checked_at FROM number_cache
             WHERE backend = $1 AND e164 = ANY($2) AND checked_at > now() - make_interval(secs => $3)",
        )
        .bind(backend)
        .bind(e164)
        .bind(ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.e164.clone(), r)).collect())
    }

    /// Of `e164`, those remembered under `key` as not on WhatsApp within `ttl`.
    pub async fn remembered_not_on_whatsapp(
        &self,
        key: &str,
        e164: &[&str],
        ttl: Duration,
    ) -> Result<HashSet<String>> {
        Ok(self
            .cached_answers(key, e164, ttl)
            .await?
            .into_values()
            .filter(|a| !a.on_whatsapp)
            .map(|a| a.e164)
            .collect())
    }

    /// Remembers under `key` that `e164` are not on WhatsApp, as of now.
    pub async fn remember_not_on_whatsapp(&self, key: &str, e164: &[&str]) -> Result<()> {
        if e164.is_empty() {
            return Ok(());
        }
        retry_conflicts(|| async {
            // Rows in key order, the order every writer of the table takes.
            sqlx::query(
                "INSERT INTO number_cache (backend, e164, on_whatsapp, wa_id, is_business, checked_at)
                 SELECT DISTINCT $1, e164, false, NULL, false, now()
                 FROM unnest($2::text[]) AS e164 ORDER BY 2
                 ON CONFLICT (backend, e164) DO UPDATE
                 SET on_whatsapp = false, wa_id = NULL, is_business = false, checked_at = now()",
            )
            .bind(key)
            .bind(e164)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
        .await
    }

    /// Forgets what was remembered under `key` about `e164`.
    pub async fn forget_remembered(&self, key: &str, e164: &[&str]) -> Result<()> {
        if e164.is_empty() {
            return Ok(());
        }
        retry_conflicts(|| async {
            sqlx::query("DELETE FROM number_cache WHERE backend = $1 AND e164 = ANY($2)")
                .bind(key)
                .bind(e164)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
        .await
    }
}
