//! The native backend: a linked WhatsApp Web session (the `whatsapp-rust`
//! crate) asks WhatsApp itself with `contacts().is_on_whatsapp(...)`.
//! Built only with `--features whatsapp-web`.
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use whatsapp_rust::features::{ContactError, IsOnWhatsAppResult};
use whatsapp_rust::pair_code::PairCodeOptions;
use whatsapp_rust::prelude::*;

use super::registration::{Registration, map_registrations};
use super::{Backend, CallError, CallResult, Probe};

/// How long a start waits for the saved session to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `whatsapp link` waits for the phone to accept the pairing.
const LINK_TIMEOUT: Duration = Duration::from_secs(300);

pub struct WhatsAppWeb {
    client: Arc<Client>,
    _bot: BotHandle,
    /// What the client's events said is wrong with the account (logged out, banned).
    trouble: Trouble,
}

/// Account trouble the client reported by event, and when a temporary ban ends.
type Trouble = Arc<std::sync::Mutex<Option<(CallError, Option<std::time::Instant>)>>>;

fn registration(r: &IsOnWhatsAppResult) -> Registration {
    // WhatsApp may answer with a LID as the primary JID and the phone JID beside it.
    let (phone, lid) = if r.jid.is_pn() {
        (
            Some(r.jid.user.to_string()),
            r.lid.as_ref().map(|l| l.user.to_string()),
        )
    } else {
        (
            r.pn_jid.as_ref().map(|p| p.user.to_string()),
            Some(r.jid.user.to_string()),
        )
    };
    Registration {
        phone,
        lid,
        is_registered: r.is_registered,
        is_business: r.is_business,
        error: r.contact_error.as_ref().map(|e| format!("{e:?}")),
    }
}

/// Starts a session from `session_db` and resolves once it is connected.
async fn start(
    session_db: &str,
    pair_with: Option<String>,
    timeout: Duration,
    trouble: Trouble,
) -> anyhow::Result<(Arc<Client>, BotHandle)> {
    let store = SqliteStore::new(session_db)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the WhatsApp session store {session_db}: {e}"))?;
    let connected = Arc::new(Notify::new());
    let on_connected = connected.clone();
    let linking = pair_with.is_some();
    let mut builder = Bot::builder()
        .with_backend(store)
        .on_connected(move |_client| {
            let connected = on_connected.clone();
            async move { connected.notify_one() }
        })
        .on_logged_out({
            let trouble = trouble.clone();
            move |_info| {
                let trouble = trouble.clone();
                async move {
                    tracing::error!("WhatsApp logged this device out: link it again");
                    *trouble.lock().expect("trouble") = Some((
                        CallError::LoggedOut("WhatsApp logged this device out: link it again".into()),
                        None,
                    ));
                }
            }
        })
        .on_event_for(&[EventKind::TemporaryBan], {
            let trouble = trouble.clone();
            move |event, _client| {
                let trouble = trouble.clone();
                async move {
                    if let Event::TemporaryBan(ban) = &*event {
                        let lasts = ban.expire.to_std().unwrap_or_default();
                        let reason = format!(
                            "WhatsApp banned the account for {}s ({:?})",
                            lasts.as_secs(),
                            ban.code
                        );
                        tracing::error!(%reason, "temporary ban");
                        *trouble.lock().expect("trouble") = Some((
                            CallError::Banned {
                                reason,
                                until: Some(lasts),
                            },
                            Some(std::time::Instant::now() + lasts),
                        ));
                    }
                }
            }
        })
        .on_qr_code(move |code, valid_for| async move {
            if linking {
                eprintln!("Or scan this QR code (valid {}s) in WhatsApp > Linked devices:\n{code}", valid_for.as_secs());
            }
        })
        .on_pair_code(|code, valid_for| async move {
            eprintln!(
                "Pair code (valid {}s): {code}\nOn the phone: WhatsApp > Linked devices > Link a device > Link with phone number instead.",
                valid_for.as_secs()
            );
        });
    if let Some(phone) = pair_with {
        builder = builder.with_pair_code(PairCodeOptions {
            phone_number: phone,
            ..Default::default()
        });
    }
    let bot = builder
        .build()
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the WhatsApp client: {e}"))?;
    let client = bot.client();
    let handle = bot.spawn();
    tokio::time::timeout(timeout, connected.notified())
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the WhatsApp session in {session_db} did not connect within {}s; \
             link an account first with `wavalidate whatsapp link --phone +NUMBER`",
                timeout.as_secs()
            )
        })?;
    Ok((client, handle))
}

impl WhatsAppWeb {
    pub async fn connect(session_db: &str) -> anyhow::Result<WhatsAppWeb> {
        let trouble = Trouble::default();
        let (client, bot) = start(session_db, None, CONNECT_TIMEOUT, trouble.clone()).await?;
        tracing::warn!(
            "checker backend: WhatsApp Web session; checking many numbers risks this account"
        );
        Ok(WhatsAppWeb {
            client,
            _bot: bot,
            trouble,
        })
    }

    /// The account's trouble, if the client reported one that still holds.
    fn trouble(&self) -> Option<CallError> {
        let mut trouble = self.trouble.lock().expect("trouble");
        match &*trouble {
            Some((_, Some(until))) if *until <= std::time::Instant::now() => {
                *trouble = None;
                None
            }
            Some((error, _)) => Some(error.clone()),
            None => None,
        }
    }
}

/// `wavalidate whatsapp link --phone +NUMBER`: pairs an account and keeps the session in `session_db`.
pub async fn link(session_db: &str, phone: &str) -> anyhow::Result<()> {
    let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
    anyhow::ensure!(
        digits.len() >= 8,
        "--phone must be the account's full number with country code, e.g. +14155552671"
    );
    let (_client, bot) = start(session_db, Some(digits), LINK_TIMEOUT, Trouble::default()).await?;
    eprintln!("Linked. The session is saved in {session_db}.");
    bot.shutdown().await;
    Ok(())
}

#[async_trait]
impl Backend for WhatsAppWeb {
    fn name(&self) -> &'static str {
        "whatsapp-web"
    }

    fn max_batch(&self) -> usize {
        50
    }

    async fn probe(&self) -> Probe {
        match self.trouble() {
            Some(trouble) => Probe::Trouble(trouble),
            None if !self.client.is_connected() => Probe::Trouble(CallError::Unreachable(
                "the WhatsApp Web session is not connected".into(),
            )),
            None => Probe::Working,
        }
    }

    async fn check(&self, e164: &[String]) -> CallResult {
        if let Some(trouble) = self.trouble() {
            return CallResult::failed(vec![], trouble);
        }
        let jids: Vec<Jid> = e164
            .iter()
            .map(|n| Jid::pn(n.trim_start_matches('+')))
            .collect();
        match self.client.contacts().is_on_whatsapp(&jids).await {
            Ok(rows) => CallResult::ok(map_registrations(
                e164,
                rows.iter().map(registration).collect(),
            )),
            Err(ContactError::Iq(IqError::ServerError {
                code: 429, backoff, ..
            })) => CallResult::failed(
                vec![],
                CallError::RateLimited {
                    retry_after: backoff.map(|s| Duration::from_secs(s.into())),
                },
            ),
            Err(err) => CallResult::failed(vec![], CallError::Failed(format!("WhatsApp: {err}"))),
        }
    }
}
