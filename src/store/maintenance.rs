//! Housekeeping statements: keeping the queue's tables vacuumed.
use super::Store;

impl Store {
    /// Whether PostgreSQL's autovacuum daemon is on for this server.
    pub async fn autovacuum_on(&self) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT current_setting('autovacuum')::bool")
            .fetch_one(&self.pool)
            .await
    }

    /// Dead row versions in the numbers table, as the statistics collector last counted them.
    pub async fn queue_dead_rows(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT coalesce(n_dead_tup, 0) FROM pg_stat_user_tables
             WHERE relid = 'batch_numbers'::regclass",
        )
        .fetch_optional(&self.pool)
        .await
        .map(|n| n.unwrap_or(0))
    }

    /// Vacuums and analyzes the tables every claim and submit touches. SKIP_LOCKED: if
    /// another replica (or autovacuum) is at it already, this one does nothing.
    /// INDEX_CLEANUP ON: the dead entries to clear are in the queue index, which
    /// vacuum would otherwise leave when few heap pages hold dead rows.
    pub async fn vacuum_queue(&self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(
            "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, ANALYZE) batch_numbers, batches, accounts",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
