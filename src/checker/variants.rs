//! Country forms WhatsApp may have registered: when a number's current form is
//! not on WhatsApp, its older forms (Brazil without the ninth digit, Mexico with
//! "1", Argentina without "9") are asked too, and the one that exists is the answer.
//!
//! When the other form cannot be asked now (`Outcome::Deferred`: its account is at its
//! cap or in trouble), the number goes back to the queue; the main form's "not on
//! WhatsApp" is remembered in PostgreSQL meanwhile (`number_cache`, under
//! `<checker>#form`), so the next check asks only the missing form and no check of a cap
//! is spent twice on one question. The memory lasts the cache TTL at most, and is
//! forgotten once the number has its answer.
use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;

use super::{Checker, DynChecker, Failure, Outcome};
use crate::domain::phone::whatsapp_variants;
use crate::store::Store;

pub struct Variants {
    inner: DynChecker,
    /// Where main forms' answers are remembered while their other forms wait; None:
    /// nowhere, a deferred number is asked whole again.
    memory: Option<Memory>,
}

struct Memory {
    store: Store,
    ttl: Duration,
    /// `<checker>#form`: never a checker's name, so never read as a number's answer.
    key: String,
}

/// What a check learned about main forms: numbers whose main form said "not on WhatsApp"
/// while their other form was deferred (to remember), and remembered numbers that now
/// have their answer (to forget).
#[derive(Debug, Default, PartialEq)]
struct Learned {
    remember: Vec<String>,
    forget: Vec<String>,
}

impl Variants {
    /// Without a memory: a deferred number is asked whole again.
    pub fn new(inner: DynChecker) -> Variants {
        Variants {
            inner,
            memory: None,
        }
    }

    /// Remembers, for up to `ttl`, a main form's "not on WhatsApp" while its other form waits.
    pub fn remembering(inner: DynChecker, store: Store, ttl: Duration) -> Variants {
        let key = format!("{}#form", inner.name());
        Variants {
            inner,
            memory: Some(Memory { store, ttl, key }),
        }
    }

    /// Numbers of `e164` (with other forms) whose main form is remembered as not on WhatsApp.
    async fn recall(&self, e164: &[String]) -> HashSet<String> {
        let Some(m) = &self.memory else {
            return HashSet::new();
        };
        let with_forms: Vec<&str> = e164
            .iter()
            .filter(|n| !whatsapp_variants(n).is_empty())
            .map(String::as_str)
            .collect();
        if with_forms.is_empty() || m.ttl.is_zero() {
            return HashSet::new();
        }
        m.store
            .remembered_not_on_whatsapp(&m.key, &with_forms, m.ttl)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "cannot read remembered number forms; asking them again");
                HashSet::new()
            })
    }

    async fn memorize(&self, learned: Learned) {
        let Some(m) = &self.memory else {
            return;
        };
        if m.ttl.is_zero() {
            return;
        }
        fn as_str(v: &[String]) -> Vec<&str> {
            v.iter().map(String::as_str).collect()
        }
        if let Err(err) = m
            .store
            .remember_not_on_whatsapp(&m.key, &as_str(&learned.remember))
            .await
        {
            tracing::warn!(error = %err, "cannot remember number forms; they will be asked again");
        }
        if let Err(err) = m
            .store
            .forget_remembered(&m.key, &as_str(&learned.forget))
            .await
        {
            tracing::warn!(error = %err, "cannot forget answered number forms");
        }
    }

    /// Checks `e164`, taking the main forms of `known` as not on WhatsApp without asking.
    async fn check_knowing(
        &self,
        e164: &[String],
        known: &HashSet<String>,
    ) -> (Vec<Outcome>, Learned) {
        let ask: Vec<String> = e164
            .iter()
            .filter(|n| !known.contains(*n))
            .cloned()
            .collect();
        let mut answers = if ask.is_empty() {
            Vec::new()
        } else {
            self.inner.check(&ask).await
        }
        .into_iter();
        let mut outcomes: Vec<Outcome> = e164
            .iter()
            .map(|n| {
                if known.contains(n) {
                    Outcome::NotOnWhatsApp
                } else {
                    answers.next().unwrap_or_else(|| {
                        Outcome::Retryable(Failure::no_answer(
                            "the checker gave fewer answers than numbers",
                        ))
                    })
                }
            })
            .collect();
        // (position in e164, alternate form)
        let asks: Vec<(usize, String)> = outcomes
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, Outcome::NotOnWhatsApp))
            .flat_map(|(i, _)| whatsapp_variants(&e164[i]).into_iter().map(move |v| (i, v)))
            .collect();
        let mut learned = Learned::default();
        if asks.is_empty() {
            return (outcomes, learned);
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
            if alternates.is_empty() {
                continue;
            }
            outcomes[i] = fold(alternates);
            let was_known = known.contains(&e164[i]);
            match &outcomes[i] {
                Outcome::Deferred { .. } if !was_known => learned.remember.push(e164[i].clone()),
                // Worth keeping while the number is asked again.
                Outcome::Deferred { .. } | Outcome::Retryable(_) => {}
                _ if was_known => learned.forget.push(e164[i].clone()),
                _ => {}
            }
        }
        (outcomes, learned)
    }
}

/// The answer for a number whose current form was not on WhatsApp, given its other forms'
/// answers: a form found on WhatsApp is the answer, even while another form waits.
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
        let known = self.recall(e164).await;
        let (outcomes, learned) = self.check_knowing(e164, &known).await;
        self.memorize(learned).await;
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
                    Some(&"error") => Outcome::Retryable(Failure::failed("upstream down")),
                    Some(&"deferred") => Outcome::Deferred {
                        reason: "at its cap".into(),
                        retry_in: Duration::from_secs(1),
                    },
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

    fn table(on: &[(&'static str, &'static str)]) -> Arc<Table> {
        Arc::new(Table {
            on: on.iter().copied().collect(),
            asked: Mutex::new(vec![]),
        })
    }

    #[test]
    fn a_form_found_on_whatsapp_is_the_answer_even_while_another_waits() {
        let on = Outcome::OnWhatsApp {
            wa_id: "551187654321".into(),
            is_business: false,
        };
        let waiting = Outcome::Deferred {
            reason: "at its cap".into(),
            retry_in: Duration::from_secs(1),
        };
        assert_eq!(fold(&[waiting.clone(), on.clone()]), on);
        assert_eq!(fold(&[on.clone(), waiting.clone()]), on);
        assert_eq!(
            fold(&[Outcome::NotOnWhatsApp, waiting.clone()]),
            waiting,
            "not known yet"
        );
    }

    #[tokio::test]
    async fn a_main_form_known_while_its_other_form_waits_is_not_asked_again() {
        let number = "+5511987654321".to_string();
        let us = "+14155552671".to_string();
        let both = vec![number.clone(), us.clone()];
        // The alternate form cannot be asked now: the number waits, its main form's
        // answer is to be remembered; a number without other forms has nothing to keep.
        let capped = table(&[("+551187654321", "deferred")]);
        let (out, learned) = Variants::new(capped.clone())
            .check_knowing(&both, &HashSet::new())
            .await;
        assert!(matches!(out[0], Outcome::Deferred { .. }), "{out:?}");
        assert_eq!(out[1], Outcome::NotOnWhatsApp);
        assert_eq!(
            learned,
            Learned {
                remember: vec![number.clone()],
                forget: vec![]
            }
        );
        assert_eq!(
            *capped.asked.lock().unwrap(),
            [number.clone(), us.clone(), "+551187654321".into()]
        );

        // Next time only the missing form is asked; the answer is whole, the memory goes.
        let later = table(&[("+551187654321", "551187654321")]);
        let known = HashSet::from([number.clone()]);
        let (out, learned) = Variants::new(later.clone())
            .check_knowing(&both, &known)
            .await;
        assert_eq!(
            out[0],
            Outcome::OnWhatsApp {
                wa_id: "551187654321".into(),
                is_business: false
            }
        );
        assert_eq!(out[1], Outcome::NotOnWhatsApp);
        assert_eq!(
            learned,
            Learned {
                remember: vec![],
                forget: vec![number.clone()]
            }
        );
        assert_eq!(
            *later.asked.lock().unwrap(),
            [us.clone(), "+551187654321".into()],
            "the known main form is not asked"
        );

        // Still waiting: nothing new to remember, nothing to forget.
        let (out, learned) = Variants::new(capped.clone())
            .check_knowing(std::slice::from_ref(&number), &known)
            .await;
        assert!(matches!(out[0], Outcome::Deferred { .. }));
        assert_eq!(learned, Learned::default());
    }
}
