//! WAHA (self-hosted WhatsApp HTTP API): one number per request.
//! `GET {url}/api/contacts/check-exists?phone=<digits>&session=<session>`
//! answers `{"numberExists": bool, "chatId": "...@c.us"}`.
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{base_url, client, mentions_rate_limit, status_error, transport_error};
use super::{Backend, CallError, CallResult, Outcome, wa_id_from_jid};
use crate::settings::WahaSettings;

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

    async fn check_one(&self, e164: &str) -> Result<Outcome, CallError> {
        let digits = e164.trim_start_matches('+');
        let mut req = self
            .client
            .get(format!("{}/api/contacts/check-exists", self.url))
            .query(&[("phone", digits), ("session", self.session.as_str())]);
        if let Some(key) = &self.api_key {
            req = req.header("X-Api-Key", key);
        }
        let resp = req.send().await.map_err(|e| transport_error(&e, "WAHA"))?;
        if let Some(err) = status_error(&resp, "WAHA") {
            return Err(err);
        }
        let body = resp.text().await.map_err(|e| transport_error(&e, "WAHA"))?;
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
            Err(_) if mentions_rate_limit(&body) => {
                Err(CallError::RateLimited { retry_after: None })
            }
            Err(_) => Ok(Outcome::Retryable(format!(
                "WAHA answered something unexpected: {}",
                body.chars().take(120).collect::<String>()
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

    async fn check(&self, e164: &[String]) -> CallResult {
        let mut outcomes = Vec::with_capacity(e164.len());
        for number in e164 {
            match self.check_one(number).await {
                Ok(outcome) => outcomes.push(outcome),
                // Keep what was answered; the rest follow the error.
                Err(err) => return CallResult::failed(outcomes, err),
            }
        }
        CallResult::ok(outcomes)
    }
}
