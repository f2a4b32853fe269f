//! Housekeeping statements: keeping the queue's tables vacuumed.
use super::CHUNK_NUMBERS;
use super::{Result, Store, StoreError};

impl Store {
    /// Dead row versions in the queue's tables that autovacuum will not clear (it is off
    /// on the server, or for that table), as the statistics collector last counted them;
    /// None when autovacuum looks after both. A dead chunk counts for the numbers it
    /// held, so one threshold in numbers serves both: its dead entry in the claim index
    /// is what every claim reads past.
    pub async fn dead_rows_to_vacuum(&self) -> Result<Option<i64>> {
        sqlx::query_scalar(
            "WITH t AS (
                SELECT s.relname, s.n_dead_tup,
                       current_setting('autovacuum')::bool
                       AND coalesce((SELECT option_value::bool FROM pg_options_to_table(c.reloptions)
                                     WHERE option_name = 'autovacuum_enabled'), true) AS autovacuumed
                FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
                WHERE s.relid IN ('batch_numbers'::regclass, 'queue_chunks'::regclass))
             SELECT coalesce(max(CASE WHEN relname = 'queue_chunks' THEN n_dead_tup * $1 ELSE n_dead_tup END), 0)
             FROM t WHERE NOT autovacuumed
             HAVING count(*) > 0",
        )
        .bind(CHUNK_NUMBERS as i64)
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from)
    }

    /// Vacuums and analyzes the tables every claim and submit touches. SKIP_LOCKED: if
    /// another replica (or autovacuum) is at it already, this one does nothing.
    /// INDEX_CLEANUP ON: the dead entries to clear are in the queue index, which
    /// vacuum would otherwise leave when few heap pages hold dead rows.
    pub async fn vacuum_queue(&self) -> Result<()> {
        sqlx::raw_sql(
            "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, ANALYZE) queue_chunks, batch_numbers, batches, accounts",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
