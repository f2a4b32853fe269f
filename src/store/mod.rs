//! Every SQL statement of the service lives under this module.
//!
//! # Lock order
//! Statements that lock rows of several tables take them in this order, each table's
//! rows in ascending key order, so no two of them can wait on each other in a cycle:
//!
//! 1. `queue_chunks` (batch_id, first_idx). A chunk's lock guards its numbers: result
//!    writes lock the chunks they hold before touching a number, and a cancel locks
//!    every chunk of its batch before cancelling the numbers.
//! 2. `batch_numbers` (batch_id, idx), only under their chunk's lock.
//! 3. `batches` (id).
//! 4. `accounts` (id).
//! 5. `number_cache` (backend, e164).
//!
//! A `checkers` row (a checking account of the pool) is locked alone, by one short
//! statement at a time, never together with any of the above; so are the `number_cache`
//! rows `Variants` keeps under their own key (`cache.rs`), in key order.
//!
//! Claims take chunk locks with `SKIP LOCKED` and never wait. Retention deletes only
//! finished batches, whose numbers no one else locks (nothing is pending in them), and
//! takes the batch first with `SKIP LOCKED`. A deadlock or serialization failure that
//! still happens (PostgreSQL decides lock order inside one statement's plan in a few
//! places) is retried by `retry_conflicts`, never shown to a caller.
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

pub mod accounts;
mod error;
pub use error::{Result, StoreError};
pub mod batches;
mod cache;
pub mod checkers;
pub mod maintenance;
pub mod notify;
pub mod queue;
pub mod rows;
pub mod webhooks;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Numbers per queue chunk: submitting cuts a batch's queued numbers into chunks of this
/// many, and a claim leases whole chunks (migration 9).
pub const CHUNK_NUMBERS: usize = 50;

pub use notify::{QUEUED_CHANNEL, RESULTS_CHANNEL};

/// `url` with its database name replaced (tests and benchmarks make throwaway databases).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let prefix = head.rsplit_once('/').map(|(p, _)| p).unwrap_or(head);
    format!("{prefix}/{database}{query}")
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// Signs this process's result notifications: its own watchers got those results
    /// straight from the worker that wrote them, so its hub need not read them back.
    origin: uuid::Uuid,
}

impl Store {
    /// Connects lazily: the server starts (and reports NOT_SERVING) while the database is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            // Requests fail fast with UNAVAILABLE instead of hanging while the database is away.
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)?;
        Ok(Store {
            pool,
            origin: uuid::Uuid::new_v4(),
        })
    }

    /// Connects for a one-off command: creates the database if needed and applies migrations.
    pub async fn connect_migrated(url: &str) -> Result<Store> {
        Store::create_database_if_missing(url).await?;
        let store = Store::connect_lazy(url, 5)?;
        store.migrate().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// This store's signature on the result notifications it sends.
    pub fn origin(&self) -> uuid::Uuid {
        self.origin
    }

    /// Creates the URL's database when it does not exist, so a fresh server needs no manual setup.
    pub async fn create_database_if_missing(url: &str) -> Result<()> {
        use sqlx::migrate::MigrateDatabase;
        if !sqlx::Postgres::database_exists(url).await? {
            // A replica starting at the same moment may win the race; that is fine.
            if let Err(err) = sqlx::Postgres::create_database(url).await
                && !sqlx::Postgres::database_exists(url).await?
            {
                return Err(err.into());
            }
            tracing::info!("created the database");
        }
        Ok(())
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Runs a statement (or a whole transaction) again when PostgreSQL aborted it for a
/// deadlock or a serialization failure; it rolled back whole, so nothing is doubled.
pub(crate) async fn retry_conflicts<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    const TRIES: u32 = 5;
    let mut delay = Duration::from_millis(5);
    let mut tried = 0;
    loop {
        tried += 1;
        match attempt().await {
            Err(err) if tried < TRIES && err.is_conflict() => {
                tracing::debug!(error = %err, tried, "conflict with concurrent work; trying again");
                tokio::time::sleep(delay.mul_f64(0.5 + rand::random::<f64>())).await;
                delay *= 4;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            super::url_with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            super::url_with_database("postgres://h/db", "y"),
            "postgres://h/y"
        );
    }
}
