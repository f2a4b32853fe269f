//! WAHA (self-hosted WhatsApp HTTP API): one number per request.
//! `GET {url}/api/contacts/check-exists?phone=<digits>&session=<session>`
//! answers `{"numberExists": bool, "chatId": "...@c.us"}`; `GET {url}/api/sessions/{session}`
//! says the session's status (`WORKING`, `SCAN_QR_CODE`, `STARTING`, `FAILED`, `STOPPED`).
//!
//! How WAHA (2024.10) refuses a check, from its source: a session not `WORKING` after
//! a 5 s wait is 422 `{"error", "session", "status", "expected"}`; a stopped session is
//! 404 "We didn't find a session with name ..."; on WAHA Core, any session but `default`
//! is 422 "WAHA Core support only 'default' session"; other errors are
//! `{"statusCode", "message", "error"}`.
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;

use super::http::{Answer, answer, base_url, client, excerpt};
use super::{Backend, CallError, CallResult, Failure, Outcome, Probe, wa_id_from_jid};
use crate::settings::WahaSettings;

/// Requests that fail in a row, with nothing answered yet, before a call gives up on the
/// gateway rather than asking every number of it.
const FAILURES_BEFORE_GIVING_UP: usize = 3;

pub struct Waha {
    client: reqwest::Client,
    url: String,
    session: String,
    api_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CheckExists {
    number_exists: bool,
    chat_id: Option<String>,
}

#[derive(Deserialize)]
struct Session {
    status: String,
}

/// A refusal's body: NestJS's `{"statusCode", "message", "error"}`, the session
/// status guard's `{"error", "session", "status", "expected"}`, or an unexpected error's
/// `{"statusCode": 500, "exception": {"message", ...}, "request", ...}`.
#[derive(Deserialize, Default)]
struct Refusal {
    /// A string, or a list of them for a request that failed validation.
    #[serde(default)]
    message: serde_json::Value,
    /// The guard's: the session's status when it gave up waiting.
    status: Option<String>,
    exception: Option<Exception>,
}

#[derive(Deserialize, Default)]
struct Exception {
    #[serde(default)]
    message: String,
}

impl Refusal {
    fn message(&self) -> String {
        match &self.message {
            serde_json::Value::String(m) => m.clone(),
            serde_json::Value::Array(list) => list
                .iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join("; "),
            _ => self
                .exception
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_default(),
        }
    }
}

/// Why a session in this status cannot check numbers; None when it can. Every status
/// but WORKING needs the operator (or time): the account is logged out and its session
/// probed now and then.
fn session_trouble(session: &str, status: &str) -> Option<CallError> {
    let why = match status {
        "WORKING" => return None,
        // Checks wait 5 s for WORKING; a session still starting after that has no way to
        // WhatsApp, and stays so until the gateway's network is fixed.
        "STARTING" => "the gateway cannot reach WhatsApp (check its network and logs)",
        "SCAN_QR_CODE" => "link it again (scan the QR code)",
        "STOPPED" => return Some(stopped(session)),
        "FAILED" => "restart or re-link the session",
        _ => "link or restart it",
    };
    Some(CallError::LoggedOut(format!(
        "WAHA session {session} is {}: {why}",
        excerpt(status)
    )))
}

fn stopped(session: &str) -> CallError {
    CallError::LoggedOut(format!(
        "WAHA session {session} is stopped: start or re-link the session"
    ))
}

/// What WAHA's non-2xx answer means for the account.
fn refusal(session: &str, answer: &Answer) -> CallError {
    let said: Refusal = serde_json::from_str(&answer.body).unwrap_or_default();
    let message = said.message();
    match answer.status {
        StatusCode::NOT_FOUND if message.contains("didn't find a session") => stopped(session),
        // The session status probe's answer for a session WAHA does not have.
        StatusCode::NOT_FOUND if message == "Session not found" => CallError::Misconfigured(
            format!("WAHA has no session {session} (check the account's session setting)"),
        ),
        StatusCode::UNPROCESSABLE_ENTITY if message.contains("only 'default'") => {
            CallError::Misconfigured(format!(
                "WAHA Core runs only the session 'default', not {session} (check the account's session setting)"
            ))
        }
        StatusCode::UNPROCESSABLE_ENTITY => match said.status.as_deref() {
            // WORKING by the time it answered: ready now, not in time.
            Some(status) => session_trouble(session, status).unwrap_or_else(|| {
                CallError::Unreachable(format!("WAHA session {session} was not ready in time"))
            }),
            // Older versions: "The session under FAILED status. Please try to restart it."
            None if !message.is_empty() => {
                CallError::LoggedOut(format!("WAHA answered HTTP 422: {}", excerpt(&message)))
            }
            None => answer.trouble("WAHA"),
        },
        // What the engine said, for the operator (`checker list`, the log; never a customer).
        status if status.is_server_error() && !message.is_empty() => match answer.trouble("WAHA") {
            CallError::Failed(reason) => {
                CallError::Failed(format!("{reason}: {}", excerpt(&message)))
            }
            trouble => trouble,
        },
        _ => answer.trouble("WAHA"),
    }
}

impl Waha {
    /// From validated settings (`Settings::validate` checked the URL and session).
    pub fn new(settings: &WahaSettings, timeout: Duration) -> anyhow::Result<Waha> {
        Ok(Waha {
            client: client(timeout)?,
            url: base_url(settings.url.as_deref().unwrap_or_default()),
            session: settings.session.trim().to_string(),
            api_key: settings.api_key.as_ref().map(|k| k.expose().to_string()),
        })
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.client.get(format!("{}{path}", self.url));
        match &self.api_key {
            Some(key) => req.header("X-Api-Key", key),
            None => req,
        }
    }

    async fn check_one(&self, e164: &str) -> Result<Outcome, CallError> {
        let digits = e164.trim_start_matches('+');
        let sent = self
            .get("/api/contacts/check-exists")
            .query(&[("phone", digits), ("session", self.session.as_str())])
            .send()
            .await;
        let answer = answer(sent, "WAHA").await?;
        if !answer.status.is_success() {
            return Err(refusal(&self.session, &answer));
        }
        let body = answer.body;
        match serde_json::from_str::<CheckExists>(&body) {
            Ok(answer) if answer.number_exists => Ok(Outcome::OnWhatsApp {
                wa_id: answer
                    .chat_id
                    .as_deref()
                    .and_then(wa_id_from_jid)
                    .unwrap_or_else(|| digits.to_string()),
                // WAHA's check does not say whether the account is a business.
                is_business: false,
            }),
            Ok(_) => Ok(Outcome::NotOnWhatsApp),
            Err(_) => Err(CallError::Failed(format!(
                "WAHA answered something unexpected: {}",
                excerpt(&body)
            ))),
        }
    }
}

#[async_trait]
impl Backend for Waha {
    fn name(&self) -> &'static str {
        "waha"
    }

    fn max_batch(&self) -> usize {
        10
    }

    /// Each number is its own request: a call already answers number by number.
    fn one_request_per_call(&self) -> bool {
        false
    }

    /// A number whose own request fails is that number's attempt while its neighbours
    /// are answered; the account's trouble (rate limit, session, settings, an unreachable
    /// gateway) stops the call; when every request failed, so did the call.
    async fn check(&self, e164: &[String]) -> CallResult {
        let mut outcomes = Vec::with_capacity(e164.len());
        let mut answered = 0;
        let mut last_failure = None;
        for number in e164 {
            match self.check_one(number).await {
                Ok(outcome) => {
                    answered += 1;
                    outcomes.push(outcome);
                }
                Err(CallError::Failed(reason)) => {
                    outcomes.push(Outcome::Retryable(Failure::failed(format!(
                        "{reason} for this number"
                    ))));
                    last_failure = Some(CallError::Failed(reason));
                    if answered == 0 && outcomes.len() >= FAILURES_BEFORE_GIVING_UP {
                        break;
                    }
                }
                Err(trouble) => {
                    // Keep the answers so far; failures are nobody's to count without one.
                    if answered == 0 {
                        outcomes.clear();
                    }
                    return CallResult::failed(outcomes, trouble);
                }
            }
        }
        match last_failure {
            Some(failure) if answered == 0 => CallResult::failed(vec![], failure),
            _ => CallResult::ok(outcomes),
        }
    }

    async fn probe(&self) -> Probe {
        let sent = self
            .get(&format!("/api/sessions/{}", self.session))
            .send()
            .await;
        let answer = match answer(sent, "WAHA").await {
            Ok(answer) => answer,
            Err(trouble) => return Probe::Trouble(trouble),
        };
        if !answer.status.is_success() {
            return Probe::Trouble(refusal(&self.session, &answer));
        }
        let body = answer.body;
        match serde_json::from_str::<Session>(&body) {
            Ok(s) => {
                session_trouble(&self.session, &s.status).map_or(Probe::Working, Probe::Trouble)
            }
            Err(_) => Probe::Trouble(CallError::Failed(format!(
                "WAHA answered something unexpected: {}",
                excerpt(&body)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, body: &str) -> CallError {
        let answer = Answer {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: None,
            body: body.to_string(),
        };
        refusal("default", &answer)
    }

    fn not_working(status: &str) -> String {
        serde_json::json!({
            "error": "Session status is not as expected. Try again later or restart the session",
            "session": "default",
            "status": status,
            "expected": ["WORKING"],
        })
        .to_string()
    }

    #[test]
    fn a_session_not_working_is_logged_out_with_what_to_do() {
        let CallError::LoggedOut(reason) = refused(422, &not_working("STARTING")) else {
            panic!("STARTING is logged out");
        };
        assert_eq!(
            reason,
            "WAHA session default is STARTING: the gateway cannot reach WhatsApp (check its network and logs)"
        );
        let CallError::LoggedOut(reason) = refused(422, &not_working("SCAN_QR_CODE")) else {
            panic!("SCAN_QR_CODE is logged out");
        };
        assert!(reason.contains("SCAN_QR_CODE"), "{reason}");
        assert!(matches!(
            refused(422, &not_working("FAILED")),
            CallError::LoggedOut(_)
        ));
        // Older versions said it in a message.
        let old = r#"{"statusCode":422,"message":"The session under FAILED status. Please try to restart it.","error":"Unprocessable Entity"}"#;
        let CallError::LoggedOut(reason) = refused(422, old) else {
            panic!("an old 422 is logged out");
        };
        assert!(reason.contains("FAILED status"), "{reason}");
    }

    #[test]
    fn a_stopped_session_is_logged_out_and_a_wrong_path_misconfigured() {
        let body = r#"{"statusCode":404,"message":"We didn't find a session with name 'default'.\nPlease start it first by using POST /api/sessions/default/start request","error":"Not Found"}"#;
        assert_eq!(
            refused(404, body),
            CallError::LoggedOut(
                "WAHA session default is stopped: start or re-link the session".into()
            )
        );
        let wrong_path = r#"{"statusCode":404,"message":"Cannot GET /api/contact/check-exists?phone=14155552671","error":"Not Found"}"#;
        let CallError::Misconfigured(reason) = refused(404, wrong_path) else {
            panic!("a wrong path is misconfigured");
        };
        assert!(!reason.contains("14155552671"), "{reason}");
    }

    #[test]
    fn an_unknown_session_on_waha_core_is_misconfigured() {
        let body = r#"{"statusCode":422,"message":"WAHA Core support only 'default' session. If you want to run more then one WhatsApp account - please get WAHA PLUS version. Check this out: https://waha.devlike.pro/docs/how-to/plus-version","error":"Unprocessable Entity"}"#;
        let CallError::Misconfigured(reason) = refused(422, body) else {
            panic!("another session on WAHA Core is misconfigured");
        };
        assert!(reason.contains("session setting"), "{reason}");
        let probe = r#"{"statusCode":404,"message":"Session not found","error":"Not Found"}"#;
        assert!(matches!(refused(404, probe), CallError::Misconfigured(_)));
    }

    #[test]
    fn whatsapps_rate_limit_in_a_500_is_a_rate_limit() {
        let body = r#"{"statusCode":500,"exception":{"message":"rate-overlimit","name":"Error"},"request":{"path":"/api/contacts/check-exists?phone=14155552671&session=default"}}"#;
        assert_eq!(
            refused(500, body),
            CallError::RateLimited { retry_after: None }
        );
        let other = body.replace("rate-overlimit", "boom");
        let CallError::Failed(reason) = refused(500, &other) else {
            panic!("a 500 is a failed request");
        };
        assert!(!reason.contains("14155552671"), "{reason}");
    }

    #[test]
    fn the_probe_reads_session_states_as_checks_do() {
        assert_eq!(session_trouble("default", "WORKING"), None);
        for status in ["STARTING", "SCAN_QR_CODE", "STOPPED", "FAILED"] {
            let probed = session_trouble("default", status);
            let checked = refused(422, &not_working(status));
            assert_eq!(probed, Some(checked), "{status}");
        }
    }
}
