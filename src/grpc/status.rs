//! An API error as a gRPC status: its code's status, with the google.rpc details gRPC
//! clients read (BadRequest for the field, ErrorInfo for the reason, RetryInfo).
use std::collections::HashMap;

use tonic_types::{ErrorDetails, StatusExt};

use crate::error::ApiError;

const DOMAIN: &str = "wavalidate";

impl From<ApiError> for tonic::Status {
    fn from(err: ApiError) -> tonic::Status {
        err.log();
        let code = err.code();
        let details = err.details();
        let message = err.to_string();
        if details.field.is_none() && code.reason().is_none() {
            return tonic::Status::new(code.grpc(), message);
        }
        let mut rpc = ErrorDetails::new();
        if let Some(field) = details.field {
            rpc.add_bad_request_violation(field, message.clone());
        }
        if let Some(reason) = code.reason() {
            let metadata: HashMap<String, String> = details
                .metadata
                .into_iter()
                .map(|(name, value)| {
                    let text = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string);
                    (name.to_string(), text)
                })
                .collect();
            rpc.set_error_info(reason, DOMAIN, metadata);
        }
        if let Some(after) = details.retry_after {
            rpc.set_retry_info(Some(after));
        }
        tonic::Status::with_error_details(code.grpc(), message, rpc)
    }
}
