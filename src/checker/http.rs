//! What the HTTP gateway backends share: one pooled client, and how HTTP failures are classified.
use std::time::Duration;

use reqwest::{Response, StatusCode};

use super::CallError;

/// One client per backend: connections are reused across calls.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("wavalidate/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A validated base URL without the trailing slash, so paths can be appended.
pub fn base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

/// A non-success status as a call error; None for 2xx.
pub fn status_error(resp: &Response, gateway: &str) -> Option<CallError> {
    let status = resp.status();
    if status.is_success() {
        return None;
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Some(CallError::RateLimited { retry_after });
    }
    let hint = match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => " (check the gateway API key)",
        StatusCode::NOT_FOUND => " (check the gateway URL and session/instance name)",
        _ => "",
    };
    Some(CallError::Failed(format!(
        "{gateway} answered HTTP {status}{hint}"
    )))
}

pub fn transport_error(err: &reqwest::Error, gateway: &str) -> CallError {
    if err.is_timeout() {
        CallError::Failed(format!("{gateway} did not answer in time"))
    } else if err.is_connect() {
        CallError::Failed(format!("cannot connect to {gateway}"))
    } else {
        CallError::Failed(format!("{gateway} request failed: {err}"))
    }
}

/// Gateways signal WhatsApp's own rate limit in the body too.
pub fn mentions_rate_limit(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    lower.contains("rate-overlimit")
        || lower.contains("rate limit")
        || lower.contains("too many requests")
}
