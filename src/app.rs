//! Builds and runs one process: gRPC server, event hub, health, workers; and shuts them down in order.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::api::ops::{CachePolicy, Ops, OpsConfig};
use crate::api::service::Service;
use crate::checker::evolution::{Evolution, EvolutionConfig};
use crate::checker::paced::{Paced, PacingConfig};
use crate::checker::simulated::Simulated;
use crate::checker::variants::Variants;
use crate::checker::waha::{Waha, WahaConfig};
use crate::checker::{Backend, DynChecker};
use crate::cli::{CheckerKind, Role, ServeArgs};
use crate::events::EventHub;
use crate::health;
use crate::pb::wa_validation_service_server::WaValidationServiceServer;
use crate::store::Store;
use crate::webhooks::{WebhookConfig, Webhooks};
use crate::worker::{WorkerConfig, Workers};

/// A running server; `shutdown` begins a graceful stop, `wait` ends it.
pub struct Server {
    pub addr: SocketAddr,
    hub: Arc<EventHub>,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Watch streams open in this process.
    pub fn active_watches(&self) -> usize {
        self.hub.watchers()
    }

    /// Batches the event hub keeps a channel for (each has at least one watch open).
    pub fn watched_batches(&self) -> usize {
        self.hub.watched_batches()
    }

    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?
    }
}

/// The checker chain for workers: backend, pacing, then country variants.
async fn build_checker(args: &ServeArgs, store: &Store) -> anyhow::Result<DynChecker> {
    let timeout = Duration::from_millis(args.http_timeout_ms.max(1));
    let backend: Box<dyn Backend> = match args.checker {
        CheckerKind::Simulated => Box::new(Simulated::new(
            Duration::from_millis(args.sim_latency_ms),
            args.sim_error_rate,
            args.sim_batch,
        )),
        CheckerKind::Waha => Box::new(Waha::new(WahaConfig {
            url: args.waha_url.as_deref(),
            session: &args.waha_session,
            api_key: args.waha_api_key.as_deref(),
            timeout,
        })?),
        CheckerKind::Evolution => Box::new(Evolution::new(EvolutionConfig {
            url: args.evolution_url.as_deref(),
            instance: args.evolution_instance.as_deref(),
            api_key: args.evolution_api_key.as_deref(),
            timeout,
        })?),
        #[cfg(feature = "whatsapp-web")]
        CheckerKind::WhatsappWeb => Box::new(
            crate::checker::whatsapp_web::WhatsAppWeb::connect(&args.whatsapp_session_db).await?,
        ),
        #[cfg(not(feature = "whatsapp-web"))]
        CheckerKind::WhatsappWeb => anyhow::bail!(
            "this build has no whatsapp-web backend: build with `cargo build --release --features whatsapp-web`"
        ),
    };
    let gateway = args.checker != CheckerKind::Simulated;
    let defaults = PacingConfig::unlimited();
    let pacing = PacingConfig {
        rate_per_sec: args.rate_per_sec.unwrap_or(if gateway { 1.0 } else { 0.0 }),
        max_concurrency: args.max_concurrency.unwrap_or(if gateway {
            1
        } else {
            defaults.max_concurrency
        }),
        daily_cap: args.daily_cap.unwrap_or(if gateway { 1000 } else { 0 }),
        breaker_failures: args.breaker_failures,
        breaker_cooldown: Duration::from_secs(args.breaker_cooldown_secs),
        rate_limit_backoff: Duration::from_millis(args.rate_limit_backoff_ms),
        rate_limit_backoff_max: Duration::from_millis(args.rate_limit_backoff_max_ms),
    };
    tracing::info!(backend = backend.name(), ?pacing, "checker ready");
    let paced: DynChecker = Arc::new(Paced::new(backend, pacing, store.clone()));
    Ok(Arc::new(Variants::new(paced)))
}

fn announce_checker(args: &ServeArgs) {
    if args.checker == CheckerKind::Simulated {
        tracing::warn!(
            latency_ms = args.sim_latency_ms,
            error_rate = args.sim_error_rate,
            "checker backend: SIMULATED. Answers are computed from the number itself, not looked up on WhatsApp"
        );
    } else {
        tracing::info!(backend = args.checker.name(), "checker backend");
    }
}

/// Reflection knows our service, health and both reflection versions, so every grpcurl lists them all.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
}

/// Applies migrations, retrying while the database is not up yet.
async fn migrate(store: &Store, url: &str, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
            Store::create_database_if_missing(url).await?;
            store.migrate().await
        };
        match attempt.await {
            Ok(()) => return Ok(()),
            Err(err) if shutdown.is_cancelled() => return Err(err),
            Err(err) => {
                tracing::warn!(error = %err, "migrations failed; is PostgreSQL up? retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

pub async fn start(args: ServeArgs, database_url: &str) -> anyhow::Result<Server> {
    let shutdown = CancellationToken::new();
    crate::metrics::handle();
    let store = Store::connect_lazy(database_url, args.db_max_connections)?;
    announce_checker(&args);
    // Built before anything starts, so a missing gateway URL or key fails the start with a clear error.
    let checker = if args.role == Role::Api {
        None
    } else {
        Some(build_checker(&args, &store).await?)
    };
    migrate(&store, database_url, &shutdown).await?;

    let hub = EventHub::new(
        store.clone(),
        Duration::from_millis(args.watch_backstop_ms.max(50)),
    );
    let hub_task = tokio::spawn(hub.clone().run(shutdown.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(health::run(store.clone(), reporter, shutdown.clone()));

    let retention_task = (args.role != Role::Api).then(|| {
        tokio::spawn(crate::retention::run(
            store.clone(),
            args.retention,
            args.retention_every.max(Duration::from_millis(100)),
            shutdown.clone(),
        ))
    });
    let vacuum_task = (args.role != Role::Api).then(|| {
        let config = crate::vacuum::VacuumConfig {
            dead_rows: args.vacuum_dead_rows,
            every: args.vacuum_every.max(Duration::from_millis(100)),
        };
        tokio::spawn(crate::vacuum::run(store.clone(), config, shutdown.clone()))
    });
    // Webhooks go out from processes that run workers, like the rest of the background work.
    let webhooks_task = if args.role == Role::Api {
        None
    } else {
        let config = WebhookConfig {
            allow_private: args.webhook_allow_private,
            retry_base: Duration::from_millis(args.webhook_retry_base_ms),
            poll: Duration::from_millis(args.webhook_poll_ms.max(10)),
        };
        Some(tokio::spawn(
            Webhooks::new(store.clone(), config)?.run(shutdown.clone()),
        ))
    };
    let workers_task = checker.map(|checker| {
        let config = WorkerConfig {
            concurrency: args.workers,
            lease: Duration::from_secs(args.lease_secs.max(1)),
            max_attempts: args.max_attempts.max(1),
            backoff_base: Duration::from_millis(args.retry_base_ms),
            backoff_max: Duration::from_millis(args.retry_max_ms),
            idle_poll: Duration::from_millis(args.idle_poll_ms.max(10)),
            shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        };
        let workers = Workers::new(store.clone(), checker, config, hub.clone());
        tokio::spawn(workers.run(shutdown.clone()))
    });

    let listener = TcpListener::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    let mut grpc = Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    let mut json = axum::Router::new();
    if args.role != Role::Worker {
        // Simulated answers are never cached (see Backend::cacheable), so there is nothing to look up.
        let cache = CachePolicy {
            backend: args.checker.name(),
            ttl: if args.checker == CheckerKind::Simulated {
                Duration::ZERO
            } else {
                args.cache_ttl
            },
        };
        let config = OpsConfig {
            cache,
            allow_private_callbacks: args.webhook_allow_private,
            watch_stall: Duration::from_secs(args.watch_stall_secs.max(1)),
            key_rate_per_sec: args.key_rate_per_sec,
        };
        let ops = Arc::new(Ops::new(
            store.clone(),
            hub.clone(),
            shutdown.clone(),
            config,
        ));
        let tidy = (ops.clone(), shutdown.clone());
        tokio::spawn(async move {
            let (ops, shutdown) = tidy;
            while !shutdown.is_cancelled() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => ops.forget_idle_keys(),
                    _ = shutdown.cancelled() => {}
                }
            }
        });
        grpc = grpc.add_service(
            WaValidationServiceServer::new(Service::new(ops.clone()))
                .max_decoding_message_size(crate::api::http::MAX_BODY_BYTES),
        );
        json = crate::api::http::router(ops);
    }
    let json = json.merge(crate::metrics::router(store.clone(), hub.clone()));
    // gRPC paths are routed to tonic, everything else to the JSON API.
    let router = grpc.prepare().into_axum_router().fallback_service(json);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::server::tls_acceptor(cert, key)?),
        (None, None) => None,
        _ => anyhow::bail!("TLS needs both WAV_TLS_CERT and WAV_TLS_KEY"),
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = crate::server::serve(listener, router, tls, shutdown.clone());
    tracing::info!(%addr, scheme, role = ?args.role, "wavalidate serving gRPC and JSON");

    let task_shutdown = shutdown.clone();
    let task = tokio::spawn(async move {
        server.await;
        // The server returns once shutdown began and connections drained; finish the rest in order.
        task_shutdown.cancel();
        if let Some(workers) = workers_task {
            workers.await?;
        }
        if let Some(webhooks) = webhooks_task {
            webhooks.await?;
        }
        if let Some(retention) = retention_task {
            retention.await?;
        }
        if let Some(vacuum) = vacuum_task {
            vacuum.await?;
        }
        health_task.await?;
        hub_task.await?;
        store.pool().close().await;
        Ok(())
    });
    Ok(Server {
        addr,
        hub,
        shutdown,
        task,
    })
}
