//! Country forms WhatsApp may have registered: when a number's current form is
//! not on WhatsApp, its older forms (Brazil without the ninth digit, Mexico with
//! "1", Argentina without "9") are asked too, and the one that exists is the answer.
use async_trait::async_trait;

use super::{Checker, DynChecker, Outcome};
use crate::domain::phone::whatsapp_variants;

pub struct Variants {
    inner: DynChecker,
}

impl Variants {
    pub fn new(inner: DynChecker) -> Variants {
        Variants { inner }
    }
}

/// The answer for a number whose current form was not on WhatsApp, given its other forms' answers.
fn fold(alternates: &[Outcome]) -> Outcome {
    if let Some(found) = alternates
        .iter()
        .find(|o| matches!(o, Outcome::OnWhatsApp { .. }))
    {
        return found.clone();
    }
    // Not on WhatsApp only when every form said so; otherwise the failure stands.
    alternates
        .iter()
        .find(|o| !matches!(o, Outcome::NotOnWhatsApp))
        .cloned()
        .unwrap_or(Outcome::NotOnWhatsApp)
}

#[async_trait]
impl Checker for Variants {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn max_batch(&self) -> usize {
        self.inner.max_batch()
    }

    fn paused_for(&self) -> Option<std::time::Duration> {
        self.inner.paused_for()
    }

    fn cacheable(&self) -> bool {
        self.inner.cacheable()
    }

    async fn check(&self, e164: &[String]) -> Vec<Outcome> {
        let mut outcomes = self.inner.check(e164).await;
        // (position in e164, alternate form)
        let asks: Vec<(usize, String)> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Outcome::NotOnWhatsApp))
            .flat_map(|(i, _)| whatsapp_variants(&e164[i]).into_iter().map(move |v| (i, v)))
            .collect();
        if asks.is_empty() {
            return outcomes;
        }
        let forms: Vec<String> = asks.iter().map(|(_, v)| v.clone()).collect();
        let mut answers = Vec::with_capacity(forms.len());
        for call in forms.chunks(self.inner.max_batch().max(1)) {
            answers.extend(self.inner.check(call).await);
        }
        let mut per_number: Vec<Vec<Outcome>> = vec![Vec::new(); e164.len()];
        for ((i, _), answer) in asks.iter().zip(answers) {
            per_number[*i].push(answer);
        }
        for (i, alternates) in per_number.iter().enumerate() {
            if !alternates.is_empty() {
                outcomes[i] = fold(alternates);
            }
        }
        outcomes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// Answers from a table; remembers what it was asked.
    struct Table {
        on: HashMap<&'static str, &'static str>,
        asked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl Checker for Table {
        fn name(&self) -> &'static str {
            "table"
        }
        fn max_batch(&self) -> usize {
            10
        }
        async fn check(&self, e164: &[String]) -> Vec<Outcome> {
            self.asked.lock().unwrap().extend(e164.iter().cloned());
            e164.iter()
                .map(|n| match self.on.get(n.as_str()) {
                    Some(&"error") => Outcome::Retryable("upstream down".into()),
                    Some(wa) => Outcome::OnWhatsApp {
                        wa_id: wa.to_string(),
                        is_business: false,
                    },
                    None => Outcome::NotOnWhatsApp,
                })
                .collect()
        }
    }

    #[tokio::test]
    async fn reports_the_registered_form_and_asks_only_when_needed() {
        let table = Arc::new(Table {
            on: HashMap::from([
                ("+551181234567", "551181234567"), // BR registered without the ninth digit
                ("+5215512345678", "5215512345678"), // MX registered with the old 1
                ("+14155552671", "14155552671"),
                ("+543516123456", "error"), // AR alternate form fails
            ]),
            asked: Mutex::new(vec![]),
        });
        let variants = Variants::new(table.clone());
        let asked: Vec<String> = [
            "+5511981234567",
            "+525512345678",
            "+14155552671",
            "+5493516123456",
            "+5521998765432",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = variants.check(&asked).await;
        let on = |wa: &str| Outcome::OnWhatsApp {
            wa_id: wa.into(),
            is_business: false,
        };
        assert_eq!(out[0], on("551181234567"));
        assert_eq!(out[1], on("5215512345678"));
        assert_eq!(out[2], on("14155552671"));
        assert!(
            matches!(out[3], Outcome::Retryable(_)),
            "an error on the other form is not 'not on WhatsApp'"
        );
        assert_eq!(out[4], Outcome::NotOnWhatsApp, "both forms said no");
        let calls = table.asked.lock().unwrap().clone();
        assert_eq!(
            calls.len(),
            5 + 4,
            "one extra question per BR/MX/AR number that was not found"
        );
        assert!(!calls[5..].contains(&"+14155552671".to_string()));
    }
}
