//! An API error as a JSON response: its code's HTTP status and reason, ProWebLook's
//! wording where their API has the case, and the details as fields (`ErrorBody`).
use axum::Json;
use axum::extract::rejection::{FormRejection, JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::MAX_BODY_BYTES;
use crate::error::ApiError;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.log();
        let code = self.code();
        let details = self.details();
        let mut body = serde_json::Map::new();
        body.insert("error".into(), self.peer_message().into());
        if let Some(field) = details.field {
            body.insert("field".into(), field.into());
        }
        if let Some(reason) = code.reason() {
            body.insert("reason".into(), reason.into());
        }
        for (name, value) in details.metadata {
            body.insert(name.into(), value);
        }
        let mut resp = (code.http(), Json(body)).into_response();
        if let Some(after) = details.retry_after {
            let secs = after.as_secs().max(1).to_string();
            resp.headers_mut()
                .insert("retry-after", secs.parse().expect("digits"));
        }
        resp
    }
}

/// A malformed body is the client's mistake: 400 with what the parser said, never a 500.
impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> ApiError {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(format!("request body larger than {MAX_BODY_BYTES} bytes"))
        } else {
            ApiError::InvalidArgument(format!("invalid JSON body: {}", rejection.body_text()))
        }
    }
}

/// Query parameters that do not parse: 400 with what the parser said.
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        ApiError::InvalidArgument(format!("invalid query: {}", rejection.body_text()))
    }
}

/// A form body that does not parse: 400 with what the parser said.
impl From<FormRejection> for ApiError {
    fn from(rejection: FormRejection) -> ApiError {
        ApiError::InvalidArgument(format!("invalid form body: {}", rejection.body_text()))
    }
}
