//! Builds and runs one process: gRPC server, event hub, health, workers; and shuts them down in order.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::checker::direct::Direct;
use crate::checker::pool::{Members, Pool};
use crate::checker::simulated::Simulated;
use crate::checker::variants::Variants;
use crate::checker::{Checker, DynChecker};
use crate::grpc::GrpcService;
use crate::pb::wa_validation_service_server::WaValidationServiceServer;
use crate::runtime::events::EventHub;
use crate::runtime::health;
use crate::runtime::webhooks::{WebhookConfig, Webhooks};
use crate::runtime::workers::{WorkerConfig, Workers};
use crate::service::{CachePolicy, ServiceConfig, ValidationService};
use crate::settings::{CheckerKind, Role, Settings};
use crate::store::Store;

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

/// The checker chain for workers: the simulated backend asked directly, or checking
/// accounts through the pool (a single backend set by flags is a pool of one), then
/// country variants (which remember a main form's answer in PostgreSQL while its other
/// form waits).
async fn build_checker(
    settings: &Settings,
    store: &Store,
    shutdown: &CancellationToken,
) -> anyhow::Result<DynChecker> {
    let c = &settings.checker;
    let members = match c.backend {
        CheckerKind::Simulated => {
            let simulated = Simulated::new(
                c.simulated.latency,
                c.simulated.error_rate,
                c.simulated.per_call,
            );
            tracing::info!("checker ready: simulated");
            return Ok(Arc::new(Variants::new(Arc::new(Direct::new(simulated)))));
        }
        CheckerKind::Pool => Members::Added,
        #[cfg(not(feature = "whatsapp-web"))]
        CheckerKind::WhatsappWeb => anyhow::bail!(
            "this build has no whatsapp-web backend: build with `cargo build --release --features whatsapp-web`"
        ),
        _ => {
            let account = settings.flag_account()?;
            let id = store.flag_account(&account).await?;
            tracing::info!(account = %account.name, pacing = ?account.pacing, "checking account from flags ready");
            Members::Only(id)
        }
    };
    let rules = settings.pacing.rules(c.http_timeout);
    let pool = Pool::start(
        c.backend.name(),
        store.clone(),
        c.http_timeout,
        members,
        rules,
        shutdown.clone(),
    )
    .await;
    tracing::info!(claim = pool.max_batch(), "checker pool ready");
    Ok(Arc::new(Variants::remembering(
        pool,
        store.clone(),
        c.cache_ttl,
    )))
}

fn announce_checker(settings: &Settings) {
    let c = &settings.checker;
    if c.backend == CheckerKind::Simulated {
        tracing::warn!(
            latency_ms = c.simulated.latency.as_millis() as u64,
            error_rate = c.simulated.error_rate,
            "checker backend: SIMULATED. Answers are computed from the number itself, not looked up on WhatsApp"
        );
    } else {
        tracing::info!(backend = c.backend.name(), "checker backend");
    }
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
            Err(err) if shutdown.is_cancelled() => return Err(err.into()),
            Err(err) => {
                tracing::warn!(error = %err, "migrations failed; is PostgreSQL up? retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

pub async fn start(settings: Settings) -> anyhow::Result<Server> {
    settings.validate()?;
    let shutdown = CancellationToken::new();
    crate::metrics::handle();
    let database_url = settings.database.url.expose();
    let role = settings.server.role;
    let store = Store::connect_lazy(database_url, settings.database.max_connections)?;
    announce_checker(&settings);
    migrate(&store, database_url, &shutdown).await?;
    // A backend that cannot start fails the start with a clear error, before serving.
    let checker = if role == Role::Api {
        None
    } else {
        Some(build_checker(&settings, &store, &shutdown).await?)
    };

    let hub = EventHub::new(store.clone(), settings.api.watch_backstop);
    let hub_task = tokio::spawn(hub.clone().run(shutdown.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    let health_task = tokio::spawn(health::run(store.clone(), reporter, shutdown.clone()));

    let m = &settings.maintenance;
    let retention_task = (role != Role::Api).then(|| {
        tokio::spawn(crate::runtime::retention::run(
            store.clone(),
            m.retention,
            m.retention_every,
            shutdown.clone(),
        ))
    });
    let vacuum_task = (role != Role::Api).then(|| {
        let config = crate::runtime::vacuum::VacuumConfig {
            dead_rows: m.vacuum_dead_rows,
            every: m.vacuum_every,
        };
        tokio::spawn(crate::runtime::vacuum::run(
            store.clone(),
            config,
            shutdown.clone(),
        ))
    });
    // Webhooks go out from processes that run workers, like the rest of the background work.
    let webhooks_task = if role == Role::Api {
        None
    } else {
        let w = &settings.webhooks;
        let config = WebhookConfig {
            allow_private: w.allow_private,
            retry_base: w.retry_base,
            poll: w.poll,
            proxy: w.proxy.clone(),
        };
        Some(tokio::spawn(
            Webhooks::new(store.clone(), config)?.run(shutdown.clone()),
        ))
    };
    let workers_task = checker.map(|checker| {
        let w = &settings.workers;
        let config = WorkerConfig {
            concurrency: w.loops,
            lease: w.lease,
            max_attempts: w.max_attempts,
            backoff_base: w.retry_base,
            backoff_max: w.retry_max,
            idle_poll: w.idle_poll,
            shutdown_grace: w.shutdown_grace,
            max_pending: w.max_pending,
        };
        let workers = Workers::new(store.clone(), checker, config, hub.clone());
        tokio::spawn(workers.run(shutdown.clone()))
    });

    let listener = TcpListener::bind(settings.server.listen).await?;
    let addr = listener.local_addr()?;
    // Health and reflection take no key: their messages are names, so they get no room
    // for more (tonic's default is 4 MiB a message).
    let small = crate::grpc::KEYLESS_MESSAGE_BYTES;
    let mut grpc = Routes::new(health_service.max_decoding_message_size(small))
        .add_service(
            crate::grpc::reflection()
                .build_v1()?
                .max_decoding_message_size(small),
        )
        .add_service(
            crate::grpc::reflection()
                .build_v1alpha()?
                .max_decoding_message_size(small),
        );
    let mut json = axum::Router::new();
    let mut api_core = None;
    if role != Role::Worker {
        let c = &settings.checker;
        // Simulated answers are never cached (see Backend::cacheable), so there is nothing to look up.
        let cache = CachePolicy {
            backend: c.backend.name(),
            ttl: if c.backend == CheckerKind::Simulated {
                Duration::ZERO
            } else {
                c.cache_ttl
            },
        };
        let config = ServiceConfig {
            cache,
            allow_private_callbacks: settings.webhooks.allow_private,
            watch_stall: settings.api.watch_stall,
            key_rate_per_sec: settings.api.key_rate_per_sec,
            auth_failures_per_sec: settings.api.auth_failures_per_sec,
            watches_per_account: settings.api.watches_per_account,
            free_entries_per_hour: settings.api.free_entries_per_hour,
        };
        let core = Arc::new(ValidationService::new(
            store.clone(),
            hub.clone(),
            shutdown.clone(),
            config,
        ));
        // The per-key rate limiter forgets idle keys, so its memory follows active ones.
        let (tidy, stop) = (core.clone(), shutdown.clone());
        tokio::spawn(async move {
            crate::runtime::every(Duration::from_secs(60), &stop, || async {
                tidy.forget_idle_peers();
                crate::runtime::Next::Wait
            })
            .await
        });
        grpc = grpc.add_service(
            WaValidationServiceServer::new(GrpcService::new(core.clone()))
                .max_decoding_message_size(crate::grpc::MAX_MESSAGE_BYTES),
        );
        json = crate::http::router(core.clone());
        api_core = Some(core);
    }
    let json = json.merge(crate::metrics::router(store.clone(), hub.clone()));
    // gRPC paths are routed to tonic, everything else to the JSON API.
    let router = grpc.prepare().into_axum_router().fallback_service(json);
    let tls = match &settings.server.tls {
        Some(files) => Some(crate::server::tls_acceptor(&files.cert, &files.key)?),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let edge = crate::server::Edge::new(
        &settings.server.edge,
        api_core,
        u64::from(settings.database.max_connections),
    );
    let server = crate::server::serve(listener, router, edge, tls, shutdown.clone());
    tracing::info!(%addr, scheme, ?role, "wavalidate serving gRPC and JSON");

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
