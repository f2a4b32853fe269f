//! End-to-end figures for the real server (simulated checker, latency 0) on a fresh database:
//!   submit_ms:   time for SubmitBatch of 1,000 unique numbers to return (median and p95);
//!   complete_ms: from the start of SubmitBatch to WatchBatch's `completed` event, one batch alone;
//!   numbers/s:   `BATCHES` batches of 1,000 submitted back to back, until the last completes.
//! Run: `cargo bench --bench pipeline` (DATABASE_URL as for the tests). Prints one JSON line.
use std::time::{Duration, Instant};

use clap::Parser;
use tonic::transport::Channel;
use wavalidate::cli::{Cli, Command};
use wavalidate::pb::{self, wa_validation_service_client::WaValidationServiceClient};
use wavalidate::store::{Store, url_with_database};

const SUBMITS: usize = 20;
const SOLO: usize = 5;
const BATCHES: usize = 20;

fn numbers(batch: usize) -> Vec<String> {
    (0..1000)
        .map(|i| format!("+1201{:03}{i:04}", 200 + batch))
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn watch_to_end(client: &mut WaValidationServiceClient<Channel>, key: &str, id: &str) {
    let mut s = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.into(),
            batch_id: id.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    while s.message().await.expect("stream").is_some() {}
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let url = url_with_database(
        &base,
        &format!("wavbench_{}", uuid::Uuid::new_v4().simple()),
    );
    let store = Store::connect_migrated(&url).await?;
    let workers = std::env::var("WAV_WORKERS").unwrap_or_else(|_| "4".into());
    let Command::Serve(args) = Cli::try_parse_from([
        "wavalidate",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--role",
        "all",
        "--workers",
        &workers,
    ])?
    .command
    else {
        unreachable!()
    };
    let server = wavalidate::app::start(*args, &url).await?;
    let (_, key) = store.create_account("bench", 10_000_000).await?;
    let key = key.expose().to_string();
    let mut client = WaValidationServiceClient::connect(format!("http://{}", server.addr)).await?;
    let mut batch_no = 0;
    let mut next = || {
        batch_no += 1;
        numbers(batch_no)
    };

    // One batch at a time: submit, then wait for the completed event.
    let mut submit_ms = Vec::new();
    let mut complete_ms = Vec::new();
    for i in 0..SUBMITS.max(SOLO) {
        let start = Instant::now();
        let sub = client
            .submit_batch(pb::SubmitBatchRequest {
                api_key: key.clone(),
                phone_numbers: next(),
                ..Default::default()
            })
            .await?
            .into_inner();
        submit_ms.push(start.elapsed().as_secs_f64() * 1e3);
        watch_to_end(&mut client, &key, &sub.batch_id).await;
        if i < SOLO {
            complete_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }

    // Throughput: many batches queued at once.
    let start = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..BATCHES {
        let sub = client
            .submit_batch(pb::SubmitBatchRequest {
                api_key: key.clone(),
                phone_numbers: next(),
                ..Default::default()
            })
            .await?
            .into_inner();
        ids.push(sub.batch_id);
    }
    for id in &ids {
        watch_to_end(&mut client, &key, id).await;
    }
    let elapsed = start.elapsed();

    submit_ms.sort_by(f64::total_cmp);
    complete_ms.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "submit_1000_ms_p50": (percentile(&submit_ms, 0.5) * 10.0).round() / 10.0,
            "submit_1000_ms_p95": (percentile(&submit_ms, 0.95) * 10.0).round() / 10.0,
            "complete_1000_ms_p50": (percentile(&complete_ms, 0.5) * 10.0).round() / 10.0,
            "pipeline_numbers_per_s": ((BATCHES * 1000) as f64 / elapsed.as_secs_f64()).round(),
            "batches": BATCHES,
            "workers": workers,
        })
    );
    server.shutdown();
    tokio::time::timeout(Duration::from_secs(30), server.wait()).await??;
    Ok(())
}
