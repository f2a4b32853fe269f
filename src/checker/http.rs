//! What the HTTP gateway backends share: one pooled client, and how a gateway's answer
//! is read: a body, or the kind of trouble it reports.
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

/// The body of a 2xx answer, or what the gateway's status and body say went wrong.
pub async fn body(sent: reqwest::Result<Response>, gateway: &str) -> Result<String, CallError> {
    let resp = sent.map_err(|e| transport_error(&e, gateway))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = resp
        .text()
        .await
        .map_err(|e| transport_error(&e, gateway))?;
    if status.is_success() {
        return Ok(body);
    }
    Err(status_error(status, retry_after, &body, gateway))
}

/// The trouble a non-2xx answer reports: the account's (rate limit, session, settings)
/// or a failed request.
fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
    gateway: &str,
) -> CallError {
    let lower = body.to_ascii_lowercase();
    if status == StatusCode::TOO_MANY_REQUESTS || mentions_rate_limit(body) {
        return CallError::RateLimited { retry_after };
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CallError::Misconfigured(format!(
            "{gateway} answered HTTP {status} (check the gateway API key)"
        )),
        StatusCode::NOT_FOUND => CallError::Misconfigured(format!(
            "{gateway} answered HTTP {status} (check the gateway URL and session/instance name)"
        )),
        // WAHA, for a session that is not WORKING (after waiting a few seconds for it).
        StatusCode::UNPROCESSABLE_ENTITY => CallError::LoggedOut(format!(
            "{gateway} answered HTTP {status}: the session is not working ({})",
            excerpt(body)
        )),
        // Evolution API, for an instance whose WhatsApp connection is closed.
        _ if lower.contains("connection closed") => CallError::LoggedOut(format!(
            "{gateway}: the instance's WhatsApp connection is closed"
        )),
        _ => CallError::Failed(format!("{gateway} answered HTTP {status}")),
    }
}

pub fn transport_error(err: &reqwest::Error, gateway: &str) -> CallError {
    if err.is_timeout() {
        CallError::Unreachable(format!("{gateway} did not answer in time"))
    } else if err.is_connect() {
        CallError::Unreachable(format!("cannot connect to {gateway}"))
    } else {
        CallError::Unreachable(format!("{gateway} request failed: {err}"))
    }
}

/// Gateways signal WhatsApp's own rate limit in the body too.
pub fn mentions_rate_limit(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    lower.contains("rate-overlimit")
        || lower.contains("rate limit")
        || lower.contains("too many requests")
}

/// The start of a body, for a message.
pub fn excerpt(body: &str) -> String {
    body.chars().take(120).collect()
}
