//! Evolution API (self-hosted): many numbers per request.
//! `POST {url}/chat/whatsappNumbers/{instance}` with header `apikey` and body
//! `{"numbers": [...]}` answers `[{"exists": bool, "jid": "...", "number": "..."}]`;
//! `GET {url}/instance/connectionState/{instance}` says `open`, `connecting` or `close`.
use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::http::{base_url, body, client, excerpt};
use super::{Backend, CallError, CallResult, Failure, Outcome, Probe, wa_id_from_jid};
use crate::settings::EvolutionSettings;

pub struct Evolution {
    client: reqwest::Client,
    url: String,
    instance: String,
    api_key: String,
}

#[derive(Deserialize)]
struct Row {
    exists: bool,
    jid: Option<String>,
    number: Option<String>,
    #[serde(default, rename = "isBusiness")]
    is_business: bool,
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

impl Evolution {
    /// From validated settings (`Settings::validate` checked URL, instance and key).
    pub fn new(settings: &EvolutionSettings, timeout: Duration) -> anyhow::Result<Evolution> {
        Ok(Evolution {
            client: client(timeout)?,
            url: base_url(settings.url.as_deref().unwrap_or_default()),
            instance: settings
                .instance
                .as_deref()
                .unwrap_or_default()
                .trim()
                .to_string(),
            api_key: settings
                .api_key
                .as_ref()
                .map(|k| k.expose().to_string())
                .unwrap_or_default(),
        })
    }
}

/// Matches answer rows to the numbers asked, by the echoed number, else by the JID.
/// A number with no row is an error for that number, never "not on WhatsApp".
fn map_rows(e164: &[String], rows: Vec<Row>) -> Vec<Outcome> {
    let mut by_digits: HashMap<String, Row> = HashMap::new();
    for row in rows {
        let key = row
            .number
            .as_deref()
            .map(digits)
            .filter(|d| !d.is_empty())
            .or_else(|| row.jid.as_deref().and_then(wa_id_from_jid));
        if let Some(key) = key {
            by_digits.entry(key).or_insert(row);
        }
    }
    e164.iter()
        .map(|n| match by_digits.get(&digits(n)) {
            Some(row) if row.exists => Outcome::OnWhatsApp {
                wa_id: row
                    .jid
                    .as_deref()
                    .and_then(wa_id_from_jid)
                    .unwrap_or_else(|| digits(n)),
                is_business: row.is_business,
            },
            Some(_) => Outcome::NotOnWhatsApp,
            None => Outcome::Retryable(Failure::no_answer(
                "Evolution API returned no row for this number",
            )),
        })
        .collect()
}

#[derive(Deserialize)]
struct ConnectionState {
    instance: InstanceState,
}

#[derive(Deserialize)]
struct InstanceState {
    state: String,
}

#[async_trait]
impl Backend for Evolution {
    fn name(&self) -> &'static str {
        "evolution"
    }

    fn max_batch(&self) -> usize {
        50
    }

    async fn check(&self, e164: &[String]) -> CallResult {
        let numbers: Vec<String> = e164.iter().map(|n| digits(n)).collect();
        let sent = self
            .client
            .post(format!(
                "{}/chat/whatsappNumbers/{}",
                self.url, self.instance
            ))
            .header("apikey", &self.api_key)
            .json(&serde_json::json!({ "numbers": numbers }))
            .send()
            .await;
        let body = match body(sent, "Evolution API").await {
            Ok(body) => body,
            Err(trouble) => return CallResult::failed(vec![], trouble),
        };
        match serde_json::from_str::<Vec<Row>>(&body) {
            // No row for any number: a failed request (of the gateway, or of a number
            // alone in it); whether the instance is connected is the probe's to say.
            Ok(rows) if rows.is_empty() => CallResult::failed(
                vec![],
                CallError::Failed(
                    "Evolution API answered an empty list: no row for any number".into(),
                ),
            ),
            Ok(rows) => CallResult::ok(map_rows(e164, rows)),
            Err(_) => CallResult::failed(
                vec![],
                CallError::Failed(format!(
                    "Evolution API answered something unexpected: {}",
                    excerpt(&body)
                )),
            ),
        }
    }

    async fn probe(&self) -> Probe {
        let sent = self
            .client
            .get(format!(
                "{}/instance/connectionState/{}",
                self.url, self.instance
            ))
            .header("apikey", &self.api_key)
            .send()
            .await;
        let body = match body(sent, "Evolution API").await {
            Ok(body) => body,
            Err(trouble) => return Probe::Trouble(trouble),
        };
        match serde_json::from_str::<ConnectionState>(&body) {
            Ok(c) if c.instance.state == "open" => Probe::Working,
            Ok(c) if c.instance.state == "connecting" => Probe::Trouble(CallError::Unreachable(
                format!("Evolution API instance {} is connecting", self.instance),
            )),
            Ok(c) => Probe::Trouble(CallError::LoggedOut(format!(
                "Evolution API instance {} is {}: connect it again",
                self.instance, c.instance.state
            ))),
            Err(_) => Probe::Trouble(CallError::Failed(format!(
                "Evolution API answered something unexpected: {}",
                excerpt(&body)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(exists: bool, jid: Option<&str>, number: Option<&str>) -> Row {
        Row {
            exists,
            jid: jid.map(str::to_string),
            number: number.map(str::to_string),
            is_business: false,
        }
    }

    #[test]
    fn rows_are_matched_by_number_then_jid_and_missing_rows_are_errors() {
        let asked: Vec<String> = [
            "+14155552671",
            "+442079460958",
            "+5511981234567",
            "+919876543210",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = vec![
            row(
                true,
                Some("14155552671@s.whatsapp.net"),
                Some("14155552671"),
            ),
            row(false, None, Some("+44 20 7946 0958")),
            // Registered without the ninth digit: matched by the echoed number, wa_id from the JID.
            row(
                true,
                Some("551181234567@s.whatsapp.net"),
                Some("5511981234567"),
            ),
        ];
        let out = map_rows(&asked, rows);
        assert_eq!(
            out[0],
            Outcome::OnWhatsApp {
                wa_id: "14155552671".into(),
                is_business: false
            }
        );
        assert_eq!(out[1], Outcome::NotOnWhatsApp);
        assert_eq!(
            out[2],
            Outcome::OnWhatsApp {
                wa_id: "551181234567".into(),
                is_business: false
            }
        );
        assert!(
            matches!(out[3], Outcome::Retryable(_)),
            "missing row is not 'not on WhatsApp'"
        );
    }
}
