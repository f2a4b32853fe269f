//! `wavalidate bench`: end-to-end figures for a server (its own, in-process, or
//! a running one), beside the raw PostgreSQL floor measured in the same run.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use tonic::transport::Channel;

use crate::cli::BenchArgs;
use crate::pb::{
    self, wa_validation_service_client::WaValidationServiceClient, watch_batch_response::Event,
};
use crate::settings::{Role, Secret, Settings};
use crate::store::{Store, url_with_database};

mod backlog;

type Client = WaValidationServiceClient<Channel>;

/// 1,000 distinct valid numbers for batch `b` of this run.
fn numbers(b: usize) -> Vec<String> {
    (0..1000)
        .map(|i| format!("+1201{:03}{i:04}", 200 + b % 800))
        .collect()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let v = sorted[((sorted.len() - 1) as f64 * p).round() as usize];
    (v * 10.0).round() / 10.0
}

async fn submit(client: &mut Client, key: &str, b: usize) -> anyhow::Result<String> {
    Ok(client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.to_string(),
            phone_numbers: numbers(b),
            ..Default::default()
        })
        .await?
        .into_inner()
        .batch_id)
}

/// Submits batches `first..first + n` from `submitters` concurrent clients, each using one
/// of `keys` in turn; returns their ids.
async fn submit_concurrently(
    client: &Client,
    keys: &[String],
    first: usize,
    n: usize,
    submitters: usize,
) -> anyhow::Result<Vec<String>> {
    let per = submitters.max(1);
    let mut tasks = Vec::new();
    for s in 0..per {
        let (mut c, k) = (client.clone(), keys[s % keys.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut b = s;
            while b < n {
                ids.push(submit(&mut c, &k, first + b).await?);
                b += per;
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

/// What the watch streams of one phase record together.
#[derive(Default)]
struct WatchLog {
    /// Commit-to-receipt latencies (ms) of live results.
    delivery: Mutex<Vec<f64>>,
    /// How long opening each stream took (ms).
    opens: Mutex<Vec<f64>>,
    /// Streams open now, and the most open at once.
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Watches a batch to its end; records delivery latency (commit to receipt) of the
/// results written after the stream opened (earlier ones arrive as its snapshot).
async fn watch(
    mut client: Client,
    key: String,
    id: String,
    log: Arc<WatchLog>,
) -> anyhow::Result<Instant> {
    let asked = Instant::now();
    let mut stream = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key,
            batch_id: id,
        })
        .await?
        .into_inner();
    // Results after this come as live events (the replay covers those before).
    let opened = chrono::Utc::now();
    log.opens
        .lock()
        .expect("opens")
        .push(asked.elapsed().as_secs_f64() * 1e3);
    let open = log.open.fetch_add(1, Ordering::SeqCst) + 1;
    log.peak.fetch_max(open, Ordering::SeqCst);
    let mut mine = Vec::new();
    while let Some(msg) = stream.message().await? {
        if let Some(Event::Result(r)) = msg.event
            && let Some(t) = r.checked_at
            && let Some(at) = chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
            && at >= opened
        {
            mine.push((chrono::Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    log.open.fetch_sub(1, Ordering::SeqCst);
    log.delivery.lock().expect("latencies").extend(mine);
    Ok(Instant::now())
}

impl WatchLog {
    /// The phase's figures: `numbers` from `start` to the last completed event at `last`.
    fn phase(&self, numbers: usize, start: Instant, last: Instant) -> Phase {
        let sorted = |v: &Mutex<Vec<f64>>| {
            let mut v = v.lock().expect("latencies").clone();
            v.sort_by(f64::total_cmp);
            v
        };
        Phase {
            per_s: numbers as f64 / (last - start).as_secs_f64(),
            delivery: sorted(&self.delivery),
            opens: sorted(&self.opens),
            peak_watchers: self.peak.load(Ordering::SeqCst),
        }
    }
}

/// Watchers come from many clients: one HTTP/2 connection per 50 streams, not one for all.
async fn watch_connections(addr: &str, streams: usize) -> anyhow::Result<Arc<Vec<Client>>> {
    let mut connections = Vec::new();
    for _ in 0..streams.div_ceil(50) {
        connections.push(WaValidationServiceClient::connect(addr.to_string()).await?);
    }
    Ok(Arc::new(connections))
}

/// Opens one stream on each batch of `ids` at once and holds them all until every one
/// of those batches has completed.
async fn hold_watchers(addr: &str, key: &str, ids: &[String]) -> anyhow::Result<Phase> {
    let connections = watch_connections(addr, ids.len()).await?;
    let log = Arc::new(WatchLog::default());
    let start = Instant::now();
    let streams: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(w, id)| {
            let conn = connections[w / 50].clone();
            tokio::spawn(watch(conn, key.to_string(), id.clone(), log.clone()))
        })
        .collect();
    let mut last = start;
    for s in streams {
        last = last.max(s.await??);
    }
    Ok(log.phase(ids.len() * 1000, start, last))
}

/// Where the end-to-end phase submits and where it watches (two replicas, or one).
struct Targets<'a> {
    submit: &'a Client,
    watch_addr: &'a str,
    key: &'a str,
}

/// What one end-to-end phase measured.
struct Phase {
    /// Numbers per second from the first submit to the last completed event.
    per_s: f64,
    /// Commit-to-receipt latencies (ms) of live results, sorted.
    delivery: Vec<f64>,
    /// How long opening each watch stream took (ms), sorted.
    opens: Vec<f64>,
    /// The most streams open at once.
    peak_watchers: usize,
}

/// Submits `batches` batches, each watched by its share of `watchers` streams as soon
/// as it is accepted.
async fn end_to_end(
    to: &Targets<'_>,
    first: usize,
    batches: usize,
    watchers: usize,
    submitters: usize,
) -> anyhow::Result<Phase> {
    let streams = watchers.max(batches);
    let connections = watch_connections(to.watch_addr, streams).await?;
    let log = Arc::new(WatchLog::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..submitters.max(1) {
        let (mut c, k) = (to.submit.clone(), to.key.to_string());
        let (connections, log) = (connections.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut watches = Vec::new();
            let mut b = s;
            while b < batches {
                let id = submit(&mut c, &k, first + b).await?;
                // Streams w with w % batches == b watch batch b.
                for w in (b..streams).step_by(batches) {
                    let conn = connections[w / 50].clone();
                    watches.push(tokio::spawn(watch(
                        conn,
                        k.clone(),
                        id.clone(),
                        log.clone(),
                    )));
                }
                b += submitters.max(1);
            }
            let mut last = start;
            for w in watches {
                last = last.max(w.await??);
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = start;
    for t in tasks {
        last = last.max(t.await??);
    }
    Ok(log.phase(batches * 1000, start, last))
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

fn floor_script(given: Option<PathBuf>) -> Option<PathBuf> {
    given.or_else(|| {
        ["../shared/bench/pg_floor.sh", "shared/bench/pg_floor.sh"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
    })
}

async fn pg_floor(script: &PathBuf, url: &str, seconds: u64) -> anyhow::Result<Value> {
    let out = tokio::process::Command::new("bash")
        .arg(script)
        .arg(url)
        .arg(seconds.to_string())
        .output()
        .await
        .with_context(|| format!("cannot run {}", script.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "pg_floor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(serde_json::from_str(text.lines().last().unwrap_or("{}"))?)
}

/// The bench's own servers, in this process, on a database of its own.
struct Own {
    server: crate::app::Server,
    store: Store,
    url: String,
}

/// The bench's own server: a free port, no per-key rate limit, patient watch streams.
fn serve_settings(url: &str, role: Role, workers: usize) -> Settings {
    let mut settings = Settings::default();
    settings.database.url = Secret::new(url);
    settings.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    settings.server.role = role;
    settings.workers.loops = workers;
    settings.api.key_rate_per_sec = 0;
    settings.api.watch_stall = Duration::from_secs(120);
    settings
}

pub async fn run(args: BenchArgs, database_url: Option<String>) -> anyhow::Result<()> {
    let base = database_url
        .context("bench needs DATABASE_URL (for its own server and for the PostgreSQL floor)")?;
    let mut own = None;
    let (addr, key) = match &args.server {
        Some(server) => (
            server.clone(),
            args.api_key.clone().context("--server needs --api-key")?,
        ),
        None => {
            let url = url_with_database(
                &base,
                &format!("wavbench_{}", uuid::Uuid::new_v4().simple()),
            );
            let store = Store::connect_migrated(&url).await?;
            // The API alone first: submits are timed like the floor's ingest phase, without
            // workers checking the numbers (CPU-bound at simulated latency 0) beside them.
            let server = crate::app::start(serve_settings(&url, Role::Api, args.workers)).await?;
            let (_, key) = store.create_account("bench", i64::MAX / 2).await?;
            let addr = format!("http://{}", server.addr);
            own = Some(Own { server, store, url });
            (addr, key.expose().to_string())
        }
    };
    let mut addr = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let mut client = WaValidationServiceClient::connect(addr.clone()).await?;
    eprintln!(
        "bench: {} against {addr}",
        if own.is_some() {
            "own in-process server"
        } else {
            "running server"
        }
    );

    // Submit latency, one at a time, after one untimed submit: the first request on
    // fresh pool connections pays for preparing every statement once.
    submit(&mut client, &key, 0).await?;
    let mut submit_ms = Vec::new();
    for b in 1..=args.submits {
        let start = Instant::now();
        submit(&mut client, &key, b).await?;
        submit_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    submit_ms.sort_by(f64::total_cmp);

    // Ingest throughput with concurrent submitters (the workers drain meanwhile).
    let first = args.submits + 1;
    let mut ingest_keys = vec![key.clone()];
    if args.ingest_accounts > 1 {
        let store = &own
            .as_ref()
            .context("--ingest-accounts needs the bench's own server")?
            .store;
        for _ in 1..args.ingest_accounts {
            let (_, k) = store.create_account("bench", i64::MAX / 2).await?;
            ingest_keys.push(k.expose().to_string());
        }
    }
    let start = Instant::now();
    submit_concurrently(
        &client,
        &ingest_keys,
        first,
        args.ingest_batches,
        args.submitters,
    )
    .await?;
    let ingest = (args.ingest_batches * 1000) as f64 / start.elapsed().as_secs_f64();
    // Batches to be watched all at once, queued while no worker runs (own server only).
    let held_first = first + args.ingest_batches;
    let mut held_ids = Vec::new();
    if own.is_some() {
        let keys = [key.clone()];
        held_ids = submit_concurrently(
            &client,
            &keys,
            held_first,
            args.held_watchers,
            args.submitters,
        )
        .await?;
    }
    // From here on a server with workers, as before, in place of the API-only one; let its
    // workers drain the queue before measuring end to end.
    let mut checked_during_submits = None;
    if let Some(own) = &mut own {
        checked_during_submits =
            Some(backlog::finished_since(&own.store, chrono::DateTime::UNIX_EPOCH).await?);
        let all = crate::app::start(serve_settings(&own.url, Role::All, args.workers)).await?;
        let api_only = std::mem::replace(&mut own.server, all);
        api_only.shutdown();
        api_only.wait().await?;
        addr = format!("http://{}", own.server.addr);
        client = WaValidationServiceClient::connect(addr.clone()).await?;
    }
    // At once, while the workers start on the ingest phase's batches queued ahead of these.
    let held = if held_ids.is_empty() {
        None
    } else {
        Some(hold_watchers(&addr, &key, &held_ids).await?)
    };
    if let Some(own) = &own {
        drain(&own.store).await?;
    }

    let next = held_first + held_ids.len();
    let watch_addr = match &args.watch_server {
        Some(w) if !w.contains("://") => format!("http://{w}"),
        Some(w) => w.clone(),
        None => addr.clone(),
    };
    let targets = Targets {
        submit: &client,
        watch_addr: &watch_addr,
        key: &key,
    };
    let phase = end_to_end(&targets, next, args.batches, args.watchers, args.submitters).await?;
    let (e2e, lat) = (phase.per_s, &phase.delivery);
    let rss = own.as_ref().and_then(|_| peak_rss_mb());

    let mut backlog = Value::Null;
    if args.backlog > 0 {
        let store = &own
            .as_ref()
            .context("--backlog needs the bench's own server")?
            .store;
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
        end_to_end(
            &targets,
            next + args.batches,
            args.batches,
            args.watchers,
            args.submitters,
        )
        .await?;
        let window = start.elapsed().as_secs_f64();
        let finished = backlog::finished_since(store, since).await?;
        let big_per_s = drain_rate(store).await?;
        // Then measure again over the dead rows the backlog left behind.
        let after = end_to_end(
            &targets,
            next + 2 * args.batches,
            args.batches,
            args.watchers,
            args.submitters,
        )
        .await?
        .per_s;
        let ratio = |x: f64, base: f64| (x / base * 100.0).round() / 100.0;
        // A backlog the watched phase already worked off leaves no drain to time: null.
        let backlog_ratio = small_per_s.zip(big_per_s).map(|(s, b)| ratio(b, s));
        backlog = json!({"backlog_numbers": args.backlog,
                         "drain_numbers_per_s_small": small_per_s.map(f64::round),
                         "drain_numbers_per_s_backlog": big_per_s.map(f64::round),
                         "backlog_ratio": backlog_ratio,
                         "numbers_per_s_beside_watched_batches": (finished as f64 / window).round(),
                         "e2e_numbers_per_s_after_drain": after.round(),
                         "after_drain_ratio": ratio(after, e2e)});
    }

    let floor = match floor_script(args.floor_script.clone()) {
        Some(script) => pg_floor(&script, &base, args.floor_seconds)
            .await
            .unwrap_or_else(|e| json!({"error": e.to_string()})),
        None => json!({"error": "pg_floor.sh not found: pass --floor-script"}),
    };
    let ratio = |ours: f64, field: &str| {
        floor[field]
            .as_f64()
            .map(|f| (ours / f * 100.0).round() / 100.0)
    };
    let report = json!({
        "submit_p50_ms": pct(&submit_ms, 0.5),
        "submit_p99_ms": pct(&submit_ms, 0.99),
        "ingest_numbers_per_s": ingest.round(),
        "e2e_numbers_per_s": e2e.round(),
        "delivery_p50_ms": pct(lat, 0.5),
        "delivery_p99_ms": pct(lat, 0.99),
        // Results written after their stream opened; earlier ones arrive in its replay, untimed.
        "delivery_samples": lat.len(),
        "watch_open_p50_ms": pct(&phase.opens, 0.5),
        "watch_open_p99_ms": pct(&phase.opens, 0.99),
        "watchers": args.watchers.max(args.batches),
        // Streams open at the same moment: batches finish while later ones are still submitted.
        "peak_watchers": phase.peak_watchers,
        "server_rss_mb": rss,
        // Every stream opened before the workers reached its batch: `peak_watchers` open at once.
        "held_watchers": held.as_ref().map(|h| json!({
            "streams": held_ids.len(),
            "peak_watchers": h.peak_watchers,
            "delivery_p50_ms": pct(&h.delivery, 0.5),
            "delivery_p99_ms": pct(&h.delivery, 0.99),
            "delivery_samples": h.delivery.len(),
            "watch_open_p50_ms": pct(&h.opens, 0.5),
            "watch_open_p99_ms": pct(&h.opens, 0.99),
            "numbers_per_s": h.per_s.round(),
        })),
        "floor": floor,
        "ingest_ratio": ratio(ingest, "ingest_rows_per_s"),
        "e2e_ratio": ratio(e2e, "pipeline_rows_per_s"),
        "backlog": backlog,
        "settings": {"submits": args.submits, "warmup_submits": 1, "ingest_batches": args.ingest_batches, "batches": args.batches,
                     "streams_per_batch": args.watchers.max(args.batches).div_ceil(args.batches.max(1)),
                     "submitters": args.submitters, "ingest_accounts": ingest_keys.len(), "workers": own.as_ref().map(|_| args.workers), "checker": "simulated, latency 0",
                     "numbers_checked_during_submits": checked_during_submits,
                     "submit_phases": if own.is_some() { "API-only server; workers start after the ingest phase" } else { "external server, with whatever workers it runs" },
                     "server": if own.is_some() { "in-process (rss includes the bench client)" } else { "external" },
                     "watch_server": if watch_addr == addr { "same" } else { watch_addr.as_str() },
                     "floor_seconds": args.floor_seconds},
    });
    if let Some(Own { server, store, url }) = own {
        server.shutdown();
        let _ = tokio::time::timeout(Duration::from_secs(30), server.wait()).await;
        store.pool().close().await;
        // The database was the bench's own: a backlog run leaves millions of rows in it.
        use sqlx::migrate::MigrateDatabase;
        if let Err(err) = sqlx::Postgres::force_drop_database(&url).await {
            eprintln!("bench: could not drop its database: {err}");
        }
    }
    println!("{report}");
    Ok(())
}
