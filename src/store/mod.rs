//! Every SQL statement of the service lives under this module.
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub mod accounts;
pub mod batches;
pub mod queue;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Channel carrying `"<batch_id> <idx>,<idx>,..."` when results are written.
pub const RESULTS_CHANNEL: &str = "wav_results";
/// Channel poked when numbers are queued, to wake idle workers.
pub const QUEUED_CHANNEL: &str = "wav_queued";

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
}

impl Store {
    /// Connects lazily: the server starts (and reports NOT_SERVING) while the database is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> anyhow::Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Requests fail fast with UNAVAILABLE instead of hanging while the database is away.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)?;
        Ok(Store { pool })
    }

    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let store = Store::connect_lazy(url, 5)?;
        store.ping().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }
}
