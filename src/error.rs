//! The one error type of the API, and its one mapping to `tonic::Status`.
use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

const DOMAIN: &str = "wavalidate";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    InvalidArgument(String),
    /// A request field is wrong; `field` is its path, e.g. `phone_numbers`.
    #[error("{description}")]
    BadField { field: String, description: String },
    #[error("{submitted} entries submitted; a batch holds at most {max}: split the list", max = crate::domain::phone::MAX_BATCH_ENTRIES)]
    BatchTooLarge { submitted: usize },
    #[error("insufficient credits: the batch needs {required}, the balance is {available}")]
    InsufficientCredits { required: i64, available: i64 },
    #[error("request_id {0:?} was already used for a different list of numbers")]
    IdempotencyKeyReused(String),
    #[error("batch not found")]
    NotFound,
    #[error("too many requests for this API key; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: std::time::Duration },
    #[error("{0}")]
    TooLarge(String),
    #[error("the database is unavailable; retry shortly")]
    Unavailable(#[source] sqlx::Error),
    /// Concurrent work kept conflicting with this request (retried inside the store first).
    #[error("the request conflicted with concurrent changes; retry it")]
    Conflict(#[source] sqlx::Error),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    /// Logs what the caller is not told in detail (database down, internal errors); both APIs call this.
    pub fn log(&self) {
        match self {
            ApiError::Unavailable(source) => {
                tracing::warn!(error = %source, "database unavailable")
            }
            ApiError::Conflict(source) => {
                tracing::warn!(error = %source, "request kept conflicting with concurrent work")
            }
            ApiError::Internal(source) => tracing::error!(error = ?source, "internal error"),
            _ => {}
        }
    }

    pub fn bad_field(field: impl Into<String>, description: impl Into<String>) -> ApiError {
        ApiError::BadField {
            field: field.into(),
            description: description.into(),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> ApiError {
        match err {
            // Connection-level failures: the database is down or unreachable.
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => ApiError::Unavailable(err),
            // Shutting down, not accepting connections, out of connections, gone.
            sqlx::Error::Database(ref db)
                if db.code().is_some_and(|c| {
                    c.starts_with("57P")
                        || c.starts_with("08")
                        || c == "53300"
                        || c == "3D000"
                        || (c == "55000" && db.message().contains("accepting connections"))
                }) =>
            {
                ApiError::Unavailable(err)
            }
            ref e if crate::store::is_conflict(e) => ApiError::Conflict(err),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Status {
        err.log();
        let message = err.to_string();
        match err {
            ApiError::Unauthenticated(_) => Status::unauthenticated(message),
            ApiError::InvalidArgument(_) => Status::invalid_argument(message),
            ApiError::BadField { field, description } => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_bad_request_violation(field, description),
            ),
            ApiError::BatchTooLarge { .. } => Status::with_error_details(
                Code::InvalidArgument,
                message.clone(),
                ErrorDetails::with_bad_request_violation("phone_numbers", message),
            ),
            ApiError::InsufficientCredits {
                required,
                available,
            } => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                ErrorDetails::with_error_info(
                    "INSUFFICIENT_CREDITS",
                    DOMAIN,
                    HashMap::from([
                        ("required".to_string(), required.to_string()),
                        ("available".to_string(), available.to_string()),
                    ]),
                ),
            ),
            ApiError::IdempotencyKeyReused(request_id) => Status::with_error_details(
                Code::InvalidArgument,
                message,
                ErrorDetails::with_error_info(
                    "IDEMPOTENCY_KEY_REUSED",
                    DOMAIN,
                    HashMap::from([("request_id".to_string(), request_id)]),
                ),
            ),
            ApiError::NotFound => Status::not_found(message),
            ApiError::RateLimited { retry_after } => {
                let mut details = ErrorDetails::with_retry_info(Some(retry_after));
                details.set_error_info("RATE_LIMITED", DOMAIN, HashMap::new());
                Status::with_error_details(Code::ResourceExhausted, message, details)
            }
            ApiError::TooLarge(_) => Status::resource_exhausted(message),
            ApiError::Unavailable(_) => Status::unavailable(message),
            ApiError::Conflict(_) => Status::aborted(message),
            ApiError::Internal(_) => Status::internal(message),
        }
    }
}
