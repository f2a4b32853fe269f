//! `--checker pool` against N fake WAHA accounts at R checks/s each: end-to-end
//! numbers/s (submit to the last result) against N x R, the most the accounts allow,
//! and `efficiency`: the accounts' own fastest time (each asks its share one slot after
//! another) over the time the run took.
//! Run: `cargo bench --bench pool` (DATABASE_URL as for the tests), or with runs of
//! your own: `cargo bench --bench pool -- 3:1 30:1 300:1 300:5` (ACCOUNTS:RATE).
//! One JSON line per run.
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use wavalidate::pb::{self, wa_validation_service_client::WaValidationServiceClient};
use wavalidate_test_support::{add_account, fakes, fresh_database, test_settings, use_pool};

/// Each run lasts about this long at full speed (so the start is a small part of it).
const SECONDS: f64 = 20.0;
/// A gateway's round trip to WhatsApp.
const LATENCY_MS: u64 = 50;
const BATCH: usize = 1000;

/// CPU seconds this process (server, fakes and bench) has used so far.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // utime and stime are fields 14 and 15, counted after the command's closing paren.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

fn numbers(n: usize) -> Vec<String> {
    // Distinct valid US numbers: exchange 200-999, line 0000-9999.
    (0..n)
        .map(|i| format!("+1201{:03}{:04}", 200 + i / 10_000, i % 10_000))
        .collect()
}

async fn run(accounts: usize, rate: f64) -> anyhow::Result<serde_json::Value> {
    let target = accounts as f64 * rate;
    let total = ((target * SECONDS).round() as usize).max(30);
    let numbers = numbers(total);
    let registered: Vec<&str> = numbers.iter().step_by(3).map(String::as_str).collect();
    let db = fresh_database().await;
    let mut gateways = Vec::with_capacity(accounts);
    for i in 0..accounts {
        let gw = fakes::waha(&registered, "secret", "default").await;
        gw.state.set_latency(Duration::from_millis(LATENCY_MS));
        add_account(&db.store, &format!("wa-{i}"), &gw, "waha", rate, |p| {
            p.max_concurrency = Some(1);
        })
        .await;
        gateways.push(gw);
    }
    let mut settings = test_settings(&db.url);
    use_pool(&mut settings);
    let server = wavalidate::app::start(settings).await?;
    let (_, key) = db.store.create_account("bench", 10_000_000).await?;
    let key = key.expose().to_string();
    let client = WaValidationServiceClient::connect(format!("http://{}", server.addr)).await?;

    let cpu = cpu_seconds();
    let start = Instant::now();
    let watches = numbers.chunks(BATCH).map(|chunk| {
        let (mut client, key) = (client.clone(), key.clone());
        async move {
            let sub = client
                .submit_batch(pb::SubmitBatchRequest {
                    api_key: key.clone(),
                    phone_numbers: chunk.to_vec(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let mut stream = client
                .watch_batch(pb::WatchBatchRequest {
                    api_key: key,
                    batch_id: sub.batch_id,
                })
                .await?
                .into_inner();
            let mut errors = 0;
            while let Some(update) = stream.message().await? {
                if let Some(pb::watch_batch_response::Event::Completed(done)) = update.event {
                    errors += done.failed as usize;
                }
            }
            anyhow::Ok(errors)
        }
    });
    let errors: usize = try_join_all(watches).await?.into_iter().sum();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    server.shutdown();
    server.wait().await?;
    let asked: usize = gateways.iter().map(|g| g.state.numbers_asked()).sum();
    let per_s = total as f64 / elapsed;
    // The fastest the accounts allow: each asks its share one slot after another, the
    // first at once, then waits one round trip.
    let ideal = ((total as f64 / accounts as f64).ceil() - 1.0) / rate + LATENCY_MS as f64 / 1000.0;
    Ok(serde_json::json!({
        "accounts": accounts,
        "rate_per_account": rate,
        "target_per_s": target,
        "numbers": total,
        "numbers_per_s": (per_s * 10.0).round() / 10.0,
        "ratio_to_target": (per_s / target * 1000.0).round() / 1000.0,
        "elapsed_s": (elapsed * 100.0).round() / 100.0,
        "ideal_s": (ideal * 100.0).round() / 100.0,
        "efficiency": (ideal / elapsed * 1000.0).round() / 1000.0,
        "errors": errors,
        "asked_upstream": asked,
        // Of one core: how busy the server (with the fakes and the client) was.
        "process_cpu_percent": (cpu / elapsed * 100.0).round(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; anything of the form ACCOUNTS:RATE is a run.
    let mut runs: Vec<(usize, f64)> = std::env::args()
        .skip(1)
        .filter_map(|arg| {
            let (n, r) = arg.split_once(':')?;
            Some((n.parse().ok()?, r.parse().ok()?))
        })
        .collect();
    if runs.is_empty() {
        runs = vec![(3, 1.0), (30, 1.0), (300, 1.0), (300, 5.0)];
    }
    for (accounts, rate) in runs {
        println!("{}", run(accounts, rate).await?);
    }
    Ok(())
}
