//! The result cache (`number_cache`): live checks' answers, reused within a TTL.
//! Written by the result statement (queue.rs), read at submission.
use std::collections::HashMap;
use std::time::Duration;

use super::rows::CachedAnswer;
use super::{Result, Store};

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
            "SELECT e164, on_whatsapp, wa_id, is_business, checked_at FROM number_cache
             WHERE backend = $1 AND e164 = ANY($2) AND checked_at > now() - make_interval(secs => $3)",
        )
        .bind(backend)
        .bind(e164)
        .bind(ttl.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.e164.clone(), r)).collect())
    }
}
