//! The API's one error type. Each kind has an `ErrorCode`, and each transport derives its
//! status from that code in one small function (`grpc::status`, `http::error`): adding a
//! kind is one variant, its message and its code.
use std::time::Duration;

use serde_json::{Value, json};

use crate::domain::phone::MAX_BATCH_ENTRIES;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    InvalidArgument(String),
    /// A request field is wrong; `field` is its path, e.g. `phone_numbers[3]`.
    #[error("{description}")]
    BadField { field: String, description: String },
    #[error(
        "{submitted} entries submitted; a batch holds at most {MAX_BATCH_ENTRIES}: split the list"
    )]
    BatchTooLarge { submitted: usize },
    #[error("insufficient credits: the batch needs {required}, the balance is {available}")]
    InsufficientCredits { required: i64, available: i64 },
    #[error("request_id {0:?} was already used for a different list of numbers")]
    IdempotencyKeyReused(String),
    #[error("batch not found")]
    NotFound,
    #[error("too many requests for this API key; retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error("too many failed authentications from this address; retry in {}s", retry_after.as_secs().max(1))]
    AuthThrottled { retry_after: Duration },
    /// A limit the operator set on what one account may hold at once.
    #[error("{0}")]
    LimitReached(String),
    #[error("{0}")]
    TooLarge(String),
    /// Too many requests' bodies are being read before their keys are known.
    #[error("{0}")]
    Busy(String),
    #[error("the request body did not arrive within {}s", .0.as_secs())]
    SlowBody(Duration),
    #[error("the database is unavailable; retry shortly")]
    Unavailable(#[source] StoreError),
    /// Concurrent work kept conflicting with this request (retried inside the store first).
    #[error("the request conflicted with concurrent changes; retry it")]
    Conflict(#[source] StoreError),
    /// A watch ended because this server is stopping.
    #[error("server shutting down; watch again")]
    ShuttingDown,
    /// A watch whose client read nothing for this long was closed.
    #[error("the stream was closed because the client read nothing for {}s; watch again to resume", .0.as_secs())]
    Stalled(Duration),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// What kind of failure an error is, for every transport at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Unauthenticated,
    InvalidArgument,
    NotFound,
    InsufficientCredits,
    IdempotencyKeyReused,
    RateLimited,
    LimitReached,
    TooLarge,
    Unavailable,
    Conflict,
    Stalled,
    Internal,
}

impl ErrorCode {
    pub fn grpc(self) -> tonic::Code {
        use tonic::Code;
        match self {
            ErrorCode::Unauthenticated => Code::Unauthenticated,
            ErrorCode::InvalidArgument | ErrorCode::IdempotencyKeyReused => Code::InvalidArgument,
            ErrorCode::NotFound => Code::NotFound,
            ErrorCode::InsufficientCredits => Code::FailedPrecondition,
            ErrorCode::RateLimited
            | ErrorCode::LimitReached
            | ErrorCode::TooLarge
            | ErrorCode::Stalled => Code::ResourceExhausted,
            ErrorCode::Unavailable => Code::Unavailable,
            ErrorCode::Conflict => Code::Aborted,
            ErrorCode::Internal => Code::Internal,
        }
    }

    /// The HTTP status, ProWebLook's where their API has the case.
    pub fn http(self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::InvalidArgument => StatusCode::BAD_REQUEST,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::InsufficientCredits => StatusCode::PAYMENT_REQUIRED,
            ErrorCode::IdempotencyKeyReused | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::RateLimited | ErrorCode::LimitReached => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Stalled => StatusCode::REQUEST_TIMEOUT,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `reason` of google.rpc.ErrorInfo and of the JSON body, where callers act on it.
    pub fn reason(self) -> Option<&'static str> {
        match self {
            ErrorCode::InsufficientCredits => Some("INSUFFICIENT_CREDITS"),
            ErrorCode::IdempotencyKeyReused => Some("IDEMPOTENCY_KEY_REUSED"),
            ErrorCode::RateLimited => Some("RATE_LIMITED"),
            ErrorCode::LimitReached => Some("LIMIT_REACHED"),
            ErrorCode::Conflict => Some("CONFLICT"),
            _ => None,
        }
    }

    /// The `outcome` label of the request metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::NotFound => "not_found",
            ErrorCode::InsufficientCredits => "insufficient_credits",
            ErrorCode::IdempotencyKeyReused => "idempotency_key_reused",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitReached => "limit_reached",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Conflict => "conflict",
            ErrorCode::Stalled => "stalled",
            ErrorCode::Internal => "internal",
        }
    }
}

/// What an error says beyond its message, for both transports: gRPC puts `field` in a
/// BadRequest, `metadata` in the ErrorInfo of the code's reason and `retry_after` in a
/// RetryInfo; the JSON body carries `field` and `metadata` as fields, `retry_after` as
/// the Retry-After header.
#[derive(Debug, Default)]
pub struct ErrorDetails {
    pub field: Option<String>,
    pub metadata: Vec<(&'static str, Value)>,
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ApiError::InvalidArgument(_)
            | ApiError::BadField { .. }
            | ApiError::BatchTooLarge { .. } => ErrorCode::InvalidArgument,
            ApiError::InsufficientCredits { .. } => ErrorCode::InsufficientCredits,
            ApiError::IdempotencyKeyReused(_) => ErrorCode::IdempotencyKeyReused,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::RateLimited { .. } | ApiError::AuthThrottled { .. } => ErrorCode::RateLimited,
            ApiError::LimitReached(_) => ErrorCode::LimitReached,
            ApiError::TooLarge(_) => ErrorCode::TooLarge,
            ApiError::Unavailable(_) | ApiError::ShuttingDown | ApiError::Busy(_) => {
                ErrorCode::Unavailable
            }
            ApiError::Conflict(_) => ErrorCode::Conflict,
            ApiError::Stalled(_) | ApiError::SlowBody(_) => ErrorCode::Stalled,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn details(&self) -> ErrorDetails {
        match self {
            ApiError::BadField { field, .. } => ErrorDetails {
                field: Some(field.clone()),
                ..ErrorDetails::default()
            },
            ApiError::BatchTooLarge { submitted } => ErrorDetails {
                field: Some("phone_numbers".into()),
                metadata: vec![
                    ("submitted", json!(submitted)),
                    ("max_allowed", json!(MAX_BATCH_ENTRIES)),
                ],
                ..ErrorDetails::default()
            },
            ApiError::InsufficientCredits {
                required,
                available,
            } => ErrorDetails {
                metadata: vec![
                    ("required", json!(required)),
                    ("available", json!(available)),
                ],
                ..ErrorDetails::default()
            },
            ApiError::IdempotencyKeyReused(request_id) => ErrorDetails {
                metadata: vec![("request_id", json!(request_id))],
                ..ErrorDetails::default()
            },
            ApiError::Busy(_) => ErrorDetails {
                retry_after: Some(Duration::from_secs(1)),
                ..ErrorDetails::default()
            },
            ApiError::RateLimited { retry_after } | ApiError::AuthThrottled { retry_after } => {
                ErrorDetails {
                    retry_after: Some(*retry_after),
                    ..ErrorDetails::default()
                }
            }
            _ => ErrorDetails::default(),
        }
    }

    /// ProWebLook's wording of the error, for the JSON API that mirrors theirs, where
    /// their API has the case; otherwise the message.
    pub fn peer_message(&self) -> String {
        match self {
            ApiError::BatchTooLarge { .. } => format!(
                "Batch size exceeds the maximum allowed limit of {MAX_BATCH_ENTRIES} numbers."
            ),
            ApiError::InsufficientCredits { .. } => "Insufficient WA API credits.".into(),
            ApiError::NotFound => "Batch not found.".into(),
            other => other.to_string(),
        }
    }

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

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> ApiError {
        match err {
            StoreError::Unavailable(_) => ApiError::Unavailable(err),
            StoreError::Conflict(_) => ApiError::Conflict(err),
            StoreError::InsufficientCredits {
                required,
                available,
            } => ApiError::InsufficientCredits {
                required,
                available,
            },
            StoreError::RequestIdReused(request_id) => ApiError::IdempotencyKeyReused(request_id),
            StoreError::Rejected(problem) => ApiError::InvalidArgument(problem),
            StoreError::FreeEntriesLimit { limit } => ApiError::LimitReached(format!(
                "this account may have {limit} invalid entries and cancelled numbers an hour (both refunded, both stored) and is past it: fix or remove the invalid entries, cancel less, or wait"
            )),
            StoreError::Query(_) | StoreError::Migrate(_) => ApiError::Internal(err.into()),
        }
    }
}
