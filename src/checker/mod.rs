//! Checker backends and the layers around them.
//!
//! A `Backend` talks to one upstream (simulated, WAHA, Evolution API, WhatsApp Web).
//! A real backend is a checking account, and every account goes through the `pool`
//! (rate, concurrency, daily cap, hours, backoff on rate limits, circuit breaker, all
//! granted in PostgreSQL); a single backend set by flags is a pool of one. The
//! simulated backend spends no account and is asked `Direct`ly. `Variants` adds the
//! country forms WhatsApp may have registered.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub mod direct;
pub mod evolution;
mod http;
pub mod isolate;
pub mod pool;
pub mod registration;
pub mod simulated;
pub mod variants;
pub mod waha;
#[cfg(feature = "whatsapp-web")]
pub mod whatsapp_web;

/// What a check says about one number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    OnWhatsApp {
        wa_id: String,
        is_business: bool,
    },
    NotOnWhatsApp,
    /// Worth asking again later; counts as an attempt.
    Retryable(Failure),
    /// Not asked: the backend is paused. Back to the queue, no attempt counted.
    Deferred {
        reason: String,
        retry_in: Duration,
    },
}

/// Why one number got no answer: a kind, which the customer reads in our words
/// (`NumberResult.error`), and the upstream's detail, which only the operator's log gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    /// Fit for a log line (built from `http::excerpt` or our own words): no number, no
    /// credential. Never shown to a customer: it may name the gateway, its host or session.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The checking service answered this number's request with an error, or with
    /// something we cannot read.
    Failed,
    /// It answered the request without this number.
    NoAnswer,
    /// It could not be reached (refused, timed out).
    Unreachable,
    /// No checking account could ask (rate limited, logged out, banned, its settings).
    NoAccount,
}

impl FailureKind {
    /// What the customer reads: the same words for every tenant, whatever the upstream said.
    pub fn public(self) -> &'static str {
        match self {
            FailureKind::Failed => "the checking service failed",
            FailureKind::NoAnswer => "the checking service returned no answer for this number",
            FailureKind::Unreachable => "the checking service could not be reached",
            FailureKind::NoAccount => "no checking account available",
        }
    }
}

impl Failure {
    pub fn failed(detail: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Failed,
            detail: detail.into(),
        }
    }

    pub fn no_answer(detail: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::NoAnswer,
            detail: detail.into(),
        }
    }

    /// A number caught in a call that failed as a whole.
    pub fn of_call(error: &CallError) -> Failure {
        let kind = match error {
            CallError::Failed(_) => FailureKind::Failed,
            CallError::Unreachable(_) => FailureKind::Unreachable,
            CallError::RateLimited { .. }
            | CallError::LoggedOut(_)
            | CallError::Banned { .. }
            | CallError::Misconfigured(_)
            | CallError::Withheld(_) => FailureKind::NoAccount,
        };
        Failure {
            kind,
            detail: error.reason(),
        }
    }
}

/// Why a backend call failed as a whole (or stopped part-way). Every kind but `Failed`
/// is the checking account's trouble, never its numbers'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// HTTP 429 / rate-overlimit: back off, do not count against the numbers.
    RateLimited { retry_after: Option<Duration> },
    /// The account's session does not work (not linked, stopped, failed): it needs the
    /// operator (re-link or restart) or time to come back.
    LoggedOut(String),
    /// WhatsApp barred the account, for this long when it says.
    Banned {
        reason: String,
        until: Option<Duration>,
    },
    /// The gateway refused our settings: API key, session or instance name.
    Misconfigured(String),
    /// The gateway did not answer: connection refused, timed out.
    Unreachable(String),
    /// A request failed (5xx, an answer we cannot read): the gateway's fault, or a
    /// number in it. Only this kind is worth splitting a request over.
    Failed(String),
    /// Not sent: the account may not ask now (paused, its trouble, its hours, its cap).
    Withheld(String),
}

impl CallError {
    /// Why, in a line.
    pub fn reason(&self) -> String {
        match self {
            CallError::RateLimited {
                retry_after: Some(after),
            } => format!("rate limited upstream; retry after {}s", after.as_secs()),
            CallError::RateLimited { retry_after: None } => "rate limited upstream".into(),
            CallError::Banned { reason, .. } => reason.clone(),
            CallError::LoggedOut(reason)
            | CallError::Misconfigured(reason)
            | CallError::Unreachable(reason)
            | CallError::Failed(reason)
            | CallError::Withheld(reason) => reason.clone(),
        }
    }
}

/// One request upstream through `backend`, timed and counted in the metrics.
pub async fn timed_check(backend: &dyn Backend, e164: &[String]) -> CallResult {
    let started = std::time::Instant::now();
    let result = backend.check(e164).await;
    let name = backend.name();
    metrics::histogram!("wav_upstream_call_seconds", "backend" => name)
        .record(started.elapsed().as_secs_f64());
    metrics::counter!("wav_upstream_calls_total", "backend" => name, "result" => call_label(&result))
        .increment(1);
    result
}

/// The `result` label of an upstream call.
fn call_label(result: &CallResult) -> &'static str {
    match &result.error {
        None => "ok",
        Some(CallError::RateLimited { .. }) => "rate_limited",
        Some(CallError::LoggedOut(_)) => "logged_out",
        Some(CallError::Banned { .. }) => "banned",
        Some(CallError::Misconfigured(_)) => "misconfigured",
        Some(CallError::Unreachable(_)) => "unreachable",
        Some(CallError::Failed(_)) => "failed",
        Some(CallError::Withheld(_)) => "withheld",
    }
}

/// What a cheap look at an account's session says (no number is checked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The session works: the account can check numbers.
    Working,
    /// Not usable now, for this reason (the same kinds as a call's errors).
    Trouble(CallError),
}

/// The answers a backend got before it stopped (in input order), and why it stopped.
#[derive(Debug, Default)]
pub struct CallResult {
    pub outcomes: Vec<Outcome>,
    pub error: Option<CallError>,
}

impl CallResult {
    pub fn ok(outcomes: Vec<Outcome>) -> CallResult {
        CallResult {
            outcomes,
            error: None,
        }
    }

    pub fn failed(outcomes: Vec<Outcome>, error: CallError) -> CallResult {
        CallResult {
            outcomes,
            error: Some(error),
        }
    }
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Shown in logs and used to key the result cache and the daily cap.
    fn name(&self) -> &'static str;
    /// Most numbers one `check` call may carry.
    fn max_batch(&self) -> usize;
    async fn check(&self, e164: &[String]) -> CallResult;
    /// Whether answers are worth keeping in the result cache (an upstream call saved).
    fn cacheable(&self) -> bool {
        true
    }
    /// Whether one request carries all of a call's numbers, so a failed call says nothing
    /// about each and is worth splitting (Evolution, WhatsApp Web); false where every
    /// number is its own request and a call already answers per number (WAHA).
    fn one_request_per_call(&self) -> bool {
        true
    }
    /// A cheap look at the session (its status, not a number check).
    async fn probe(&self) -> Probe {
        Probe::Working
    }
}

#[async_trait]
pub trait Checker: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn max_batch(&self) -> usize;
    /// One outcome per number, in order.
    async fn check(&self, e164: &[String]) -> Vec<Outcome>;
    /// Some(wait) while the checker will not make calls (rate-limit backoff,
    /// open circuit, daily cap reached): workers leave numbers queued meanwhile.
    fn paused_for(&self) -> Option<Duration> {
        None
    }
    /// Whether answers are worth keeping in the result cache.
    fn cacheable(&self) -> bool {
        true
    }
}

pub type DynChecker = Arc<dyn Checker>;

/// The WhatsApp id in a JID such as `5511981234567@s.whatsapp.net` or `...@c.us`.
/// Only digits are an id: whatever else a gateway puts there (its host, a session, markup)
/// is never shown to a customer, and callers fall back to the number asked.
pub fn wa_id_from_jid(jid: &str) -> Option<String> {
    let user = jid.split('@').next()?.split(':').next()?;
    let plausible = (5..=20).contains(&user.len()) && user.bytes().all(|b| b.is_ascii_digit());
    plausible.then(|| user.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn wa_ids_come_from_jids() {
        use super::wa_id_from_jid;
        assert_eq!(
            wa_id_from_jid("5511981234567@s.whatsapp.net").as_deref(),
            Some("5511981234567")
        );
        assert_eq!(
            wa_id_from_jid("14155552671@c.us").as_deref(),
            Some("14155552671")
        );
        assert_eq!(
            wa_id_from_jid("123456789012345@lid").as_deref(),
            Some("123456789012345")
        );
        assert_eq!(
            wa_id_from_jid("14155552671:12@s.whatsapp.net").as_deref(),
            Some("14155552671")
        );
        assert_eq!(wa_id_from_jid("@c.us"), None);
        for garbage in [
            "gw.internal/session=secret apikey=KEY@c.us",
            "<img src=x onerror=alert(1)>\r\nX@c.us",
            "https://gw:3000/x@c.us",
            "1234@c.us",
        ] {
            assert_eq!(wa_id_from_jid(garbage), None, "{garbage}");
        }
    }
}
