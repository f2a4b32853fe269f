//! Delivers completion webhooks from the PostgreSQL outbox: signed, retried with
//! backoff for up to 24 hours, never lost across restarts, and marked delivered
//! right after a 2xx so it is not sent again.
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use tokio_util::sync::CancellationToken;

use super::Next;
use crate::domain::webhook::{DELIVERY_HEADER, SIGNATURE_HEADER, is_forbidden_ip, sign};
use crate::store::Store;
use crate::store::webhooks::Delivery;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub allow_private: bool,
    /// First retry delay; doubles per attempt up to an hour, jittered.
    pub retry_base: Duration,
    pub poll: Duration,
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

impl Webhooks {
    pub fn new(store: Store, config: WebhookConfig) -> anyhow::Result<Arc<Webhooks>> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            // HTTP(S)_PROXY is the operator's egress for gateways, not for customers' URLs:
            // a proxy would resolve names itself, past the public-address check.
            .no_proxy()
            .user_agent(concat!("wavalidate-webhooks/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        Ok(Arc::new(Webhooks {
            store,
            client: builder.build()?,
            config,
        }))
    }

    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        super::every(self.config.poll, &shutdown, || async {
            match self
                .store
                .claim_deliveries(16, Duration::from_secs(60))
                .await
            {
                Ok(due) if !due.is_empty() => {
                    futures::future::join_all(due.into_iter().map(|d| self.deliver(d))).await;
                    Next::Again
                }
                Ok(_) => Next::Wait,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the webhook outbox");
                    Next::Wait
                }
            }
        })
        .await;
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
            if let Some(ip) = url
                .host_str()
                .and_then(|h| h.trim_matches(['[', ']']).parse::<IpAddr>().ok())
                && is_forbidden_ip(ip)
            {
                return Err(format!("{ip} is not a public address"));
            }
        }
        let resp = self
            .client
            .post(&d.url)
            .header("Content-Type", "application/json")
            .header(SIGNATURE_HEADER, sign(&d.secret, d.payload.as_bytes()))
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
