//! Gateway backends against the test suite's fake WAHA and Evolution API, at a
//! fixed fake latency: numbers/s through the whole service, and upstream calls
//! saved by the result cache when the same 1,000 numbers are submitted twice.
//! Run: `cargo bench --bench gateways` (DATABASE_URL as for the tests). One JSON line per backend.
use wavalidate_test_support::{fakes, fresh_database, test_settings, use_gateway};

use std::time::{Duration, Instant};

use wavalidate::pb::{self, wa_validation_service_client::WaValidationServiceClient};

const LATENCY_MS: u64 = 20;
const NUMBERS: usize = 1000;

async fn run(kind: &str, gateway: &fakes::Gateway) -> anyhow::Result<serde_json::Value> {
    gateway.state.set_latency(Duration::from_millis(LATENCY_MS));
    // A database of its own, dropped when the run ends.
    let db = fresh_database().await;
    let store = db.store.clone();
    let mut settings = test_settings(&db.url);
    settings.workers.loops = 8;
    use_gateway(&mut settings, gateway, kind);
    settings.pacing.rate_per_sec = Some(0.0);
    let server = wavalidate::app::start(settings).await?;
    let (_, key) = store.create_account("bench", 1_000_000).await?;
    let key = key.expose().to_string();
    let mut client = WaValidationServiceClient::connect(format!("http://{}", server.addr)).await?;
    let numbers: Vec<String> = (0..NUMBERS).map(|i| format!("+1201555{i:04}")).collect();

    let mut rounds = Vec::new();
    for _ in 0..2 {
        let start = Instant::now();
        let sub = client
            .submit_batch(pb::SubmitBatchRequest {
                api_key: key.clone(),
                phone_numbers: numbers.clone(),
                ..Default::default()
            })
            .await?
            .into_inner();
        let mut stream = client
            .watch_batch(pb::WatchBatchRequest {
                api_key: key.clone(),
                batch_id: sub.batch_id,
            })
            .await?
            .into_inner();
        while stream.message().await?.is_some() {}
        rounds.push((start.elapsed(), gateway.state.numbers_asked()));
    }
    server.shutdown();
    server.wait().await?;
    let (first, asked_first) = rounds[0];
    let (second, asked_total) = rounds[1];
    Ok(serde_json::json!({
        "backend": kind,
        "fake_latency_ms": LATENCY_MS,
        "workers": 8,
        "numbers_per_s": (NUMBERS as f64 / first.as_secs_f64()).round(),
        "upstream_requests_first_run": gateway.state.calls().len(),
        "numbers_asked_first_run": asked_first,
        "numbers_asked_second_run": asked_total - asked_first,
        "second_run_ms": second.as_millis(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let waha = fakes::waha(&["+12015550001"], "secret", "default").await;
    println!("{}", run("waha", &waha).await?);
    let evolution = fakes::evolution(&["+12015550001"], "secret", "main").await;
    println!("{}", run("evolution", &evolution).await?);
    Ok(())
}
