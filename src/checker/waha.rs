//! WAHA (self-hosted WhatsApp HTTP API): one number per request.
//! `GET {url}/api/contacts/check-exists?phone=<digits>&session=<session>`
//! answers `{"numberExists": bool, "chatId": "...@c.us"}`; `GET {url}/api/sessions/{session}`
//! says the session's status (`WORKING`, `SCAN_QR_CODE`, `STARTING`, `FAILED`, `STOPPED`).
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{base_url, body, client, excerpt};
use super::{Backend, CallError, CallResult, Outcome, Probe, wa_id_from_jid};
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
        let body = body(sent, "WAHA").await?;
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
                    outcomes.push(Outcome::Retryable(format!("{reason} for this number")));
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
        let body = match body(sent, "WAHA").await {
            Ok(body) => body,
            Err(trouble) => return Probe::Trouble(trouble),
        };
        match serde_json::from_str::<Session>(&body) {
            Ok(s) if s.status == "WORKING" => Probe::Working,
            // Sessions flap to STARTING under load: not a lost session, only not ready yet.
            Ok(s) if s.status == "STARTING" => Probe::Trouble(CallError::Unreachable(format!(
                "WAHA session {} is starting",
                self.session
            ))),
            Ok(s) => Probe::Trouble(CallError::LoggedOut(format!(
                "WAHA session {} is {}: link or restart it",
                self.session, s.status
            ))),
            Err(_) => Probe::Trouble(CallError::Failed(format!(
                "WAHA answered something unexpected: {}",
                excerpt(&body)
            ))),
        }
    }
}
