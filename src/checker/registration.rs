//! Mapping WhatsApp's own usync answers (as the `whatsapp-web` backend gets them
//! from `contacts().is_on_whatsapp`) to outcomes. Kept apart from the network
//! client so it is compiled and tested in every build.
use std::collections::HashMap;

use super::http::excerpt;
use super::{Failure, Outcome};

/// One row of an `is_on_whatsapp` answer, reduced to what we use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Registration {
    /// Phone-number user of the answer's JID (or of its `pn_jid` when the JID is a LID).
    pub phone: Option<String>,
    /// The LID user, when WhatsApp gave one.
    pub lid: Option<String>,
    pub is_registered: bool,
    pub is_business: bool,
    /// WhatsApp could not answer for this contact.
    pub error: Option<String>,
}

/// Matches rows to the numbers asked by phone digits. `wa_id` is the registered
/// phone id, or the LID when that is all there is. A number without a row, or
/// whose row carries an error, is retryable: never "not on WhatsApp".
pub fn map_registrations(asked: &[String], rows: Vec<Registration>) -> Vec<Outcome> {
    let mut by_phone: HashMap<String, Registration> = HashMap::new();
    for row in rows {
        if let Some(phone) = row.phone.clone() {
            by_phone.entry(phone).or_insert(row);
        }
    }
    asked
        .iter()
        .map(|e164| {
            let digits = e164.trim_start_matches('+');
            match by_phone.get(digits) {
                None => Outcome::Retryable(Failure::no_answer(
                    "WhatsApp returned no answer for this number",
                )),
                Some(Registration { error: Some(e), .. }) => Outcome::Retryable(Failure::failed(
                    // WhatsApp's own words may name the number: masked, for the log.
                    format!("WhatsApp could not check this number: {}", excerpt(e)),
                )),
                Some(r) if r.is_registered => Outcome::OnWhatsApp {
                    wa_id: r
                        .phone
                        .clone()
                        .or_else(|| r.lid.clone())
                        .unwrap_or_else(|| digits.to_string()),
                    is_business: r.is_business,
                },
                Some(_) => Outcome::NotOnWhatsApp,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_answers_by_phone_and_never_turns_gaps_into_no() {
        let asked: Vec<String> = [
            "+14155552671",
            "+442079460958",
            "+919876543210",
            "+5511981234567",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rows = vec![
            Registration {
                phone: Some("442079460958".into()),
                is_registered: false,
                ..Default::default()
            },
            Registration {
                phone: Some("14155552671".into()),
                lid: Some("123456789012345".into()),
                is_registered: true,
                is_business: true,
                ..Default::default()
            },
            Registration {
                phone: Some("5511981234567".into()),
                error: Some("429 rate-overlimit".into()),
                ..Default::default()
            },
        ];
        let out = map_registrations(&asked, rows);
        assert_eq!(
            out[0],
            Outcome::OnWhatsApp {
                wa_id: "14155552671".into(),
                is_business: true
            }
        );
        assert_eq!(out[1], Outcome::NotOnWhatsApp);
        assert!(matches!(out[2], Outcome::Retryable(_)), "no row");
        assert!(matches!(out[3], Outcome::Retryable(_)), "row with an error");
    }

    #[test]
    fn falls_back_to_the_lid_when_no_phone_id_is_known() {
        let rows = vec![Registration {
            phone: Some("14155552671".into()),
            lid: Some("99887766554433".into()),
            is_registered: true,
            ..Default::default()
        }];
        // The row is matched by the phone the LID answer was paired with, and keeps the phone id.
        let out = map_registrations(&["+14155552671".into()], rows);
        assert_eq!(
            out[0],
            Outcome::OnWhatsApp {
                wa_id: "14155552671".into(),
                is_business: false
            }
        );
    }
}
