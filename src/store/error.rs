//! What can go wrong in the store, in the store's own terms: callers decide what each
//! means to them (the API maps it to statuses in `crate::error`).

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL is down, unreachable, shutting down or out of connections.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Aborted for a deadlock or a serialization failure, still after the store's retries.
    #[error("conflicted with concurrent work: {0}")]
    Conflict(#[source] sqlx::Error),
    /// Anything else PostgreSQL or the driver reported.
    #[error("database error: {0}")]
    Query(#[source] sqlx::Error),
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The account cannot pay for the batch; nothing was stored.
    #[error("the balance ({available}) does not cover {required} credits")]
    InsufficientCredits { required: i64, available: i64 },
    /// The account used this request_id for a different request.
    #[error("request_id {0:?} was already used for a different request")]
    RequestIdReused(String),
    /// The batch would take the account past its free entries (invalid, cancelled) an hour;
    /// nothing was stored.
    #[error("this account may have {limit} invalid entries and cancelled numbers an hour")]
    FreeEntriesLimit { limit: i64 },
    /// A value PostgreSQL refuses (a name taken, a time zone it does not know): what to fix.
    #[error("{0}")]
    Rejected(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        if is_unavailable(&err) {
            StoreError::Unavailable(err)
        } else if is_conflict(&err) {
            StoreError::Conflict(err)
        } else {
            StoreError::Query(err)
        }
    }
}

impl StoreError {
    /// Worth running again as it is: PostgreSQL aborted it for a deadlock or a
    /// serialization failure, and it rolled back whole.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Conflict(_))
    }
}

/// Whether PostgreSQL aborted the statement for a deadlock (40P01) or a serialization
/// failure (40001).
fn is_conflict(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

/// Connection-level failures: the database is down, unreachable or refusing us.
fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        // Shutting down, not accepting connections, out of connections, gone.
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("57P")
                || c.starts_with("08")
                || c == "53300"
                || c == "3D000"
                || (c == "55000" && db.message().contains("accepting connections"))
        }),
        _ => false,
    }
}
