//! Housekeeping statements: keeping the queue's tables vacuumed.
use super::Store;
use super::queue::CHUNK_NUMBERS;

impl Store {
    /// Dead row versions in the queue's tables, as the statistics collector last counted
    /// them, when the service is to vacuum them itself; None while autovacuum runs. A
    /// dead chunk counts for the numbers it held, so one threshold in numbers serves both:
    /// its dead entry in the claim index is what every claim reads past.
    pub async fn dead_rows_to_vacuum(&self) -> Result<Option<i64>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT greatest(
                 coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'batch_numbers'::regclass), 0),
                 coalesce((SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = 'queue_chunks'::regclass), 0) * $1)
             WHERE NOT current_setting('autovacuum')::bool",
        )
        .bind(CHUNK_NUMBERS as i64)
        .fetch_optional(&self.pool)
        .await
    }

    /// Vacuums and analyzes the tables every claim and submit touches. SKIP_LOCKED: if
    /// another replica (or autovacuum) is at it already, this one does nothing.
    /// INDEX_CLEANUP ON: the dead entries to clear are in the queue index, which
    /// vacuum would otherwise leave when few heap pages hold dead rows.
    pub async fn vacuum_queue(&self) -> Result<(), sqlx::Error> {
        sqlx::raw_sql(
            "VACUUM (SKIP_LOCKED, INDEX_CLEANUP ON, ANALYZE) queue_chunks, batch_numbers, batches, accounts",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
