//! The default backend: no network, answers derived from the number itself.
//!
//! Rule: take SHA-256 of the E.164 text (with the `+`), read its first 8 bytes
//! as a big-endian integer `h`. `h % 100 < 70` is on WhatsApp (about 70%), with
//! `wa_id` = the E.164 digits; of those, `h % 100 < 10` is a business account.
//! Everything else is not on WhatsApp.
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use sha2::{Digest, Sha256};

use super::{Backend, CallResult, Failure, Outcome};

pub struct Simulated {
    latency: Duration,
    error_rate: f64,
    per_call: usize,
}

impl Simulated {
    /// `per_call`: numbers per checker call, so per claim.
    pub fn new(latency: Duration, error_rate: f64, per_call: usize) -> Simulated {
        Simulated {
            latency,
            error_rate: error_rate.clamp(0.0, 1.0),
            per_call: per_call.max(1),
        }
    }

    /// The deterministic answer for a number, without latency or injected errors.
    pub fn answer(e164: &str) -> Outcome {
        let digest = Sha256::digest(e164.as_bytes());
        let h = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 100;
        if h < 70 {
            Outcome::OnWhatsApp {
                wa_id: e164.trim_start_matches('+').to_string(),
                is_business: h < 10,
            }
        } else {
            Outcome::NotOnWhatsApp
        }
    }
}

#[async_trait]
impl Backend for Simulated {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn max_batch(&self) -> usize {
        self.per_call
    }

    /// Recomputing an answer costs nothing, so caching it would only cost writes.
    fn cacheable(&self) -> bool {
        false
    }

    async fn check(&self, e164: &[String]) -> CallResult {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let mut rng = rand::rng();
        let outcomes = e164
            .iter()
            .map(|n| {
                if self.error_rate > 0.0 && rng.random_bool(self.error_rate) {
                    Outcome::Retryable(Failure::failed(
                        "simulated checker error (WAV_SIM_ERROR_RATE)",
                    ))
                } else {
                    Simulated::answer(n)
                }
            })
            .collect();
        CallResult::ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_deterministic_and_about_seventy_percent() {
        let numbers: Vec<String> = (0..2000).map(|i| format!("+1415555{i:04}")).collect();
        let on = numbers
            .iter()
            .filter(|n| matches!(Simulated::answer(n), Outcome::OnWhatsApp { .. }))
            .count();
        assert!((1250..=1550).contains(&on), "{on} of 2000 on WhatsApp");
        for n in &numbers[..20] {
            assert_eq!(Simulated::answer(n), Simulated::answer(n));
        }
    }

    #[tokio::test]
    async fn error_rate_one_never_answers_not_on_whatsapp() {
        let sim = Simulated::new(Duration::ZERO, 1.0, 100);
        let out = sim
            .check(&["+14155552671".into(), "+442079460958".into()])
            .await;
        assert!(out.error.is_none());
        assert!(
            out.outcomes
                .iter()
                .all(|o| matches!(o, Outcome::Retryable(_)))
        );
    }
}
