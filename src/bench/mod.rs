//! `wavalidate bench`: end-to-end figures for a server (its own, in-process, or a running
//! one), beside the raw PostgreSQL floor measured in the same run. `run` goes through the
//! phases in order; each returns its figures, and `report` puts them in one JSON line.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::cli::BenchArgs;
use crate::settings::{Role, Secret, Settings};
use crate::store::{Store, url_with_database};

mod backlog;
mod floor;
mod report;
mod streams;

use report::{BacklogReport, HeldReport, Report, SettingsReport, pct, ratio};
use streams::{Client, Phase, Targets, end_to_end, hold_watchers, submit, submit_concurrently};

/// The bench's own server, in this process, on a database of its own.
struct Own {
    server: crate::app::Server,
    store: Store,
    url: String,
}

/// The server under test and the account the bench submits with.
struct Target {
    own: Option<Own>,
    addr: String,
    key: String,
    client: Client,
}

/// The bench's own server: a free port, no per-key rate limit, patient watch streams.
fn serve_settings(url: &str, role: Role, workers: usize) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = Secret::new(url);
    settings.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.server.role = role;
    settings.workers.loops = workers;
    settings.api.key_rate_per_sec = 0;
    // One key holds every watcher of the benchmark.
    settings.api.watches_per_account = 0;
    settings.api.free_entries_per_hour = 0;
    settings.api.watch_stall = Duration::from_secs(120);
    settings
}

fn with_scheme(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Target {
    /// `--server` with its key, or a server of our own on a fresh database: the API alone
    /// first, so submits are timed like the floor's ingest phase, without workers
    /// checking the numbers (CPU-bound at simulated latency 0) beside them.
    async fn open(args: &BenchArgs, base: &str) -> anyhow::Result<Target> {
        let (own, addr, key) = match &args.server {
            Some(server) => (
                None,
                with_scheme(server),
                args.api_key.clone().context("--server needs --api-key")?,
            ),
            None => {
                let url =
                    url_with_database(base, &format!("wavbench_{}", uuid::Uuid::new_v4().simple()));
                let store = Store::connect_migrated(&url).await?;
                let server =
                    crate::app::start(serve_settings(&url, Role::Api, args.workers)).await?;
                let (_, key) = store.create_account("bench", i64::MAX / 2).await?;
                let addr = format!("http://{}", server.addr);
                (
                    Some(Own { server, store, url }),
                    addr,
                    key.expose().to_string(),
                )
            }
        };
        let client = Client::connect(addr.clone()).await?;
        eprintln!(
            "bench: {} against {addr}",
            if own.is_some() {
                "own in-process server"
            } else {
                "running server"
            }
        );
        Ok(Target {
            own,
            addr,
            key,
            client,
        })
    }

    fn own_store(&self, flag: &str) -> anyhow::Result<&Store> {
        Ok(&self
            .own
            .as_ref()
            .with_context(|| format!("{flag} needs the bench's own server"))?
            .store)
    }

    /// Replaces our API-only server with one that runs workers too; returns how many
    /// numbers were checked before it started (none, or the submit phases were not alone).
    async fn start_workers(&mut self, workers: usize) -> anyhow::Result<Option<i64>> {
        let Some(own) = &mut self.own else {
            return Ok(None);
        };
        let checked = backlog::finished_since(&own.store, chrono::DateTime::UNIX_EPOCH).await?;
        let all = crate::app::start(serve_settings(&own.url, Role::All, workers)).await?;
        let api_only = std::mem::replace(&mut own.server, all);
        api_only.shutdown();
        api_only.wait().await?;
        self.addr = format!("http://{}", own.server.addr);
        self.client = Client::connect(self.addr.clone()).await?;
        Ok(Some(checked))
    }

    /// Stops our own server and drops its database (a backlog run leaves millions of rows).
    async fn close(self) {
        let Some(Own { server, store, url }) = self.own else {
            return;
        };
        server.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), server.wait()).await;
        store.pool().close().await;
        use sqlx::migrate::MigrateDatabase;
        if let Err(err) = sqlx::Postgres::force_drop_database(&url).await {
            eprintln!("bench: could not drop its database: {err}");
        }
    }
}

/// Submit latency, one at a time, after one untimed submit: the first request on fresh
/// pool connections pays for preparing every statement once. Sorted milliseconds.
async fn submit_latency(target: &mut Target, submits: usize) -> anyhow::Result<Vec<f64>> {
    submit(&mut target.client, &target.key, 0).await?;
    let mut submit_ms = Vec::new();
    for b in 1..=submits {
        let start = Instant::now();
        submit(&mut target.client, &target.key, b).await?;
        submit_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    submit_ms.sort_by(f64::total_cmp);
    Ok(submit_ms)
}

/// Ingest throughput: batches `first..` from concurrent submitters, spread over
/// `--ingest-accounts` accounts. Returns numbers per second and the accounts used.
async fn ingest(target: &Target, args: &BenchArgs, first: usize) -> anyhow::Result<(f64, usize)> {
    let mut keys = vec![target.key.clone()];
    if args.ingest_accounts > 1 {
        let store = target.own_store("--ingest-accounts")?;
        for _ in 1..args.ingest_accounts {
            let (_, k) = store.create_account("bench", i64::MAX / 2).await?;
            keys.push(k.expose().to_string());
        }
    }
    let start = Instant::now();
    submit_concurrently(
        &target.client,
        &keys,
        first,
        args.ingest_batches,
        args.submitters,
    )
    .await?;
    let per_s = (args.ingest_batches * 1000) as f64 / start.elapsed().as_secs_f64();
    Ok((per_s, keys.len()))
}

/// Works off what is queued (no watchers): numbers per second, None when nothing was left.
async fn drain_rate(store: &Store) -> anyhow::Result<Option<f64>> {
    let (queued, _) = store.queue_stats().await?;
    let start = Instant::now();
    drain(store).await?;
    Ok((queued > 0).then(|| queued as f64 / start.elapsed().as_secs_f64()))
}

/// Waits until nothing is queued.
async fn drain(store: &Store) -> anyhow::Result<()> {
    while store.queue_stats().await?.0 > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// The backlog phase: the workers' drain rate on a small backlog and on `--backlog`
/// numbers (another account), end to end beside the big one, and again after it.
async fn backlog_phase(
    store: &Store,
    targets: &Targets<'_>,
    args: &BenchArgs,
    first: usize,
    e2e: f64,
) -> anyhow::Result<BacklogReport> {
    let (other, _) = store.create_account("backlog", 0).await?;
    // Like for like: the workers' rate on a small unwatched backlog (big enough to time,
    // a tenth of the big one up to 100,000), then on the big one.
    let small = (args.backlog / 10).clamp(1000, 100_000);
    backlog::enqueue(store, other, small).await?;
    let small_per_s = drain_rate(store).await?;
    eprintln!("bench: queueing a backlog of {} numbers", args.backlog);
    backlog::enqueue(store, other, args.backlog).await?;
    // Watched batches beside the backlog: fair queuing gives them only their share,
    // so this counts every number finished in the window, the backlog's included.
    let since = chrono::Utc::now();
    let start = Instant::now();
    end_to_end(targets, first, args.batches, args.watchers, args.submitters).await?;
    let window = start.elapsed().as_secs_f64();
    let finished = backlog::finished_since(store, since).await?;
    let big_per_s = drain_rate(store).await?;
    // Then measure again over the dead rows the backlog left behind.
    let after = end_to_end(
        targets,
        first + args.batches,
        args.batches,
        args.watchers,
        args.submitters,
    )
    .await?
    .per_s;
    Ok(BacklogReport {
        backlog_numbers: args.backlog,
        drain_numbers_per_s_small: small_per_s.map(f64::round),
        drain_numbers_per_s_backlog: big_per_s.map(f64::round),
        backlog_ratio: small_per_s.zip(big_per_s).map(|(s, b)| ratio(b, s)),
        numbers_per_s_beside_watched_batches: (finished as f64 / window).round(),
        e2e_numbers_per_s_after_drain: after.round(),
        after_drain_ratio: ratio(after, e2e),
    })
}

fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((kb / 1024.0).round())
}

pub async fn run(args: BenchArgs, database_url: Option<String>) -> anyhow::Result<()> {
    let base = database_url
        .context("bench needs DATABASE_URL (for its own server and for the PostgreSQL floor)")?;
    let mut target = Target::open(&args, &base).await?;
    let submit_ms = submit_latency(&mut target, args.submits).await?;
    let first = args.submits + 1;
    let (ingest_per_s, ingest_accounts) = ingest(&target, &args, first).await?;

    // Batches to be watched all at once, queued while no worker runs (own server only).
    let held_first = first + args.ingest_batches;
    let held_ids = if target.own.is_some() {
        let keys = [target.key.clone()];
        submit_concurrently(
            &target.client,
            &keys,
            held_first,
            args.held_watchers,
            args.submitters,
        )
        .await?
    } else {
        Vec::new()
    };
    let checked_during_submits = target.start_workers(args.workers).await?;
    // At once, while the workers start on the ingest phase's batches queued ahead of these.
    let held = if held_ids.is_empty() {
        None
    } else {
        Some(hold_watchers(&target.addr, &target.key, &held_ids).await?)
    };
    if let Some(own) = &target.own {
        drain(&own.store).await?;
    }

    let next = held_first + held_ids.len();
    let watch_addr = args
        .watch_server
        .as_deref()
        .map_or_else(|| target.addr.clone(), with_scheme);
    let targets = Targets {
        submit: &target.client,
        watch_addr: &watch_addr,
        key: &target.key,
    };
    let phase = end_to_end(&targets, next, args.batches, args.watchers, args.submitters).await?;
    let rss = target.own.as_ref().and_then(|_| peak_rss_mb());
    let backlog = if args.backlog > 0 {
        let store = target.own_store("--backlog")?;
        Some(backlog_phase(store, &targets, &args, next + args.batches, phase.per_s).await?)
    } else {
        None
    };

    let floor = match floor::script(args.floor_script.clone()) {
        Some(script) => floor::measure(&script, &base, args.floor_seconds)
            .await
            .unwrap_or_else(|e| serde_json::json!({"error": e.to_string()})),
        None => serde_json::json!({"error": "pg_floor.sh not found: pass --floor-script"}),
    };
    let vs_floor = |ours: f64, field: &str| floor[field].as_f64().map(|f| ratio(ours, f));
    let own = target.own.is_some();
    let report = Report {
        submit_p50_ms: pct(&submit_ms, 0.5),
        submit_p99_ms: pct(&submit_ms, 0.99),
        ingest_numbers_per_s: ingest_per_s.round(),
        e2e_numbers_per_s: phase.per_s.round(),
        delivery_p50_ms: pct(&phase.delivery, 0.5),
        delivery_p99_ms: pct(&phase.delivery, 0.99),
        delivery_samples: phase.delivery.len(),
        watch_open_p50_ms: pct(&phase.opens, 0.5),
        watch_open_p99_ms: pct(&phase.opens, 0.99),
        watchers: args.watchers.max(args.batches),
        peak_watchers: phase.peak_watchers,
        server_rss_mb: rss,
        held_watchers: held
            .as_ref()
            .map(|h: &Phase| HeldReport::of(held_ids.len(), h)),
        ingest_ratio: vs_floor(ingest_per_s, "ingest_rows_per_s"),
        e2e_ratio: vs_floor(phase.per_s, "pipeline_rows_per_s"),
        floor,
        backlog,
        settings: SettingsReport {
            submits: args.submits,
            warmup_submits: 1,
            ingest_batches: args.ingest_batches,
            batches: args.batches,
            streams_per_batch: args
                .watchers
                .max(args.batches)
                .div_ceil(args.batches.max(1)),
            submitters: args.submitters,
            ingest_accounts,
            workers: own.then_some(args.workers),
            checker: "simulated, latency 0",
            numbers_checked_during_submits: checked_during_submits,
            submit_phases: if own {
                "API-only server; workers start after the ingest phase"
            } else {
                "external server, with whatever workers it runs"
            },
            server: if own {
                "in-process (rss includes the bench client)"
            } else {
                "external"
            },
            watch_server: if watch_addr == target.addr {
                "same".into()
            } else {
                watch_addr.clone()
            },
            floor_seconds: args.floor_seconds,
        },
    };
    target.close().await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
