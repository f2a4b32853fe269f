//! Delivers completion webhooks from the PostgreSQL outbox: signed with the moment of
//! sending, retried with backoff for up to 24 hours, never lost across restarts, marked
//! delivered right after a 2xx so it is not sent again, and fair between accounts.
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::domain::webhook::{
    DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, check_callback_target, is_forbidden_ip,
    sign,
};
use crate::store::Store;
use crate::store::webhooks::Delivery;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub allow_private: bool,
    /// First retry delay; doubles per attempt up to an hour, jittered.
    pub retry_base: Duration,
    pub poll: Duration,
    /// The operator's proxy for deliveries (`WAV_WEBHOOK_PROXY`); None: straight to the target.
    pub proxy: Option<String>,
}

/// Resolves like the system does, but drops forbidden addresses, so a public
/// name that later points at a private address (DNS rebinding) is still refused.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((name.as_str(), 0))
                .await?
                .filter(|a| !is_forbidden_ip(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{} is not a public address", name.as_str()).into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

pub struct Webhooks {
    store: Store,
    client: reqwest::Client,
    config: WebhookConfig,
}

/// Deliveries in flight at once in this process: cheap (a socket each), and many, so that
/// receivers that never answer hold them all only when more than `IN_FLIGHT / PER_ACCOUNT`
/// accounts have one at once.
const IN_FLIGHT: usize = 256;
/// Of one account: a receiver that never answers holds at most this many places, each
/// for one `TIMEOUT`, so it never delays another account's delivery.
const PER_ACCOUNT: i64 = 2;
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// A claimed delivery is someone else's to send again after this.
const LEASE: Duration = Duration::from_secs(60);

impl Webhooks {
    pub fn new(store: Store, config: WebhookConfig) -> anyhow::Result<Arc<Webhooks>> {
        let mut builder = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("wavalidate-webhooks/", env!("CARGO_PKG_VERSION")));
        builder = match &config.proxy {
            // The operator's egress for customers' URLs. The proxy resolves the name itself,
            // so each delivery checks the target's addresses first (`send`).
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy.as_str())?),
            // HTTP(S)_PROXY is the operator's egress for gateways, not for customers' URLs:
            // a proxy would resolve names itself, past the public-address check.
            None if config.allow_private => builder.no_proxy(),
            None => builder.no_proxy().dns_resolver(Arc::new(PublicOnly)),
        };
        Ok(Arc::new(Webhooks {
            store,
            client: builder.build()?,
            config,
        }))
    }

    /// Sends due deliveries as places free up, fairly between accounts (`PER_ACCOUNT`);
    /// on shutdown, those in flight finish (each within `TIMEOUT`).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        let mut owner: HashMap<tokio::task::Id, Uuid> = HashMap::new();
        let mut busy: HashMap<Uuid, i64> = HashMap::new();
        let done =
            |id: tokio::task::Id, owner: &mut HashMap<_, Uuid>, busy: &mut HashMap<Uuid, i64>| {
                if let Some(account) = owner.remove(&id)
                    && let Some(n) = busy.get_mut(&account)
                {
                    *n -= 1;
                    if *n <= 0 {
                        busy.remove(&account);
                    }
                }
            };
        while !shutdown.is_cancelled() {
            while let Some(finished) = tasks.try_join_next_with_id() {
                let id = finished.map_or_else(|e| e.id(), |(id, ())| id);
                done(id, &mut owner, &mut busy);
            }
            let free = IN_FLIGHT - tasks.len();
            let mut claimed = 0;
            if free > 0 {
                let held: Vec<(Uuid, i64)> = busy.iter().map(|(a, n)| (*a, *n)).collect();
                match self
                    .store
                    .claim_deliveries(free as i64, PER_ACCOUNT, &held, LEASE)
                    .await
                {
                    Ok(due) => {
                        claimed = due.len();
                        for d in due {
                            *busy.entry(d.account_id).or_default() += 1;
                            let account = d.account_id;
                            let this = self.clone();
                            let handle = tasks.spawn(async move { this.deliver(d).await });
                            owner.insert(handle.id(), account);
                        }
                    }
                    Err(err) => tracing::warn!(error = %err, "cannot read the webhook outbox"),
                }
            }
            if claimed > 0 && tasks.len() < IN_FLIGHT {
                // More may be due now.
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                Some(finished) = tasks.join_next_with_id() => {
                    let id = finished.map_or_else(|e| e.id(), |(id, ())| id);
                    done(id, &mut owner, &mut busy);
                }
                _ = tokio::time::sleep(self.config.poll) => {}
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn deliver(&self, d: Delivery) {
        let outcome = self.send(&d).await;
        let recorded = match &outcome {
            Ok(()) => self.store.delivery_succeeded(d.id).await,
            Err(error) => {
                let exp =
                    self.config.retry_base.as_secs_f64() * 2f64.powi(d.attempts.clamp(1, 20) - 1);
                let wait = exp.min(3600.0) * rand::rng().random_range(0.5..=1.0);
                tracing::info!(
                    delivery = d.id,
                    attempt = d.attempts,
                    error,
                    "webhook delivery failed; will retry"
                );
                self.store
                    .delivery_failed(d.id, error, Duration::from_secs_f64(wait))
                    .await
            }
        };
        if let Err(err) = recorded {
            // The lease expires and the delivery is tried again: at least once.
            tracing::warn!(delivery = d.id, error = %err, "cannot record a webhook attempt");
        }
    }

    async fn send(&self, d: &Delivery) -> Result<(), String> {
        if !self.config.allow_private {
            let url = reqwest::Url::parse(&d.url).map_err(|e| e.to_string())?;
            if self.config.proxy.is_some() {
                // The proxy resolves the name: check what it resolves to now.
                check_callback_target(&url, false).await?;
            } else if let Some(ip) = url
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
                && is_forbidden_ip(ip)
            {
                return Err(format!("{ip} is not a public address"));
            }
        }
        // Signed with the moment of sending: a captured delivery replayed later is stale.
        let timestamp = chrono::Utc::now().timestamp();
        let resp = self
            .client
            .post(&d.url)
            .header("Content-Type", "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(
                SIGNATURE_HEADER,
                sign(&d.secret, timestamp, d.payload.as_bytes()),
            )
            .header(DELIVERY_HEADER, d.id.to_string())
            .body(d.payload.clone())
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("receiver answered HTTP {}", resp.status()))
        }
    }
}
