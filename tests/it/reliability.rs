//! Faults and hostile conditions: retention, listener loss, database outages,
//! stalled and vanished watchers, crashes under load, hostile input.
use std::time::Duration;

use tonic::Code;

use crate::helpers::*;
use wavalidate::pb;

#[tokio::test]
async fn retention_prunes_finished_batches_but_keeps_the_ledger_and_running_ones() {
    let app = spawn_app_with(&[
        "--retention",
        "1s",
        "--retention-every",
        "100ms",
        "--sim-latency-ms",
        "600000",
        "--shutdown-grace-secs",
        "0",
    ])
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let finished = submit(&mut client, &key, &["junk".into(), "nope".into()]).await;
    let running = submit(&mut client, &key, &["+14155552671".into()]).await;
    assert_eq!(finished.status, pb::BatchStatus::Completed as i32);
    wait_until("the finished batch to be pruned", || {
        let mut c = client.clone();
        let (k, id) = (key.clone(), finished.batch_id.clone());
        async move {
            c.poll_batch(pb::PollBatchRequest {
                api_key: k,
                batch_id: id,
            })
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
        }
    })
    .await;
    poll(&mut client, &key, &running.batch_id).await;
    let ledger: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM credit_ledger WHERE account_id = $1 AND batch_id = $2",
    )
    .bind(account)
    .bind(uuid::Uuid::parse_str(&finished.batch_id).unwrap())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        ledger, 2,
        "the charge and the refund of the pruned batch are kept"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_numbers WHERE batch_id = $1")
        .bind(uuid::Uuid::parse_str(&finished.batch_id).unwrap())
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_and_frees_its_resources() {
    let app = spawn_app_with(&["--watch-stall-secs", "1"]).await;
    let (_, key) = app.account(1000).await;
    // A client with the HTTP/2 windows of the spec (64 KiB), not hyper's generous ones.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client = wavalidate::pb::wa_validation_service_client::WaValidationServiceClient::new(channel);
    // 1,000 long invalid entries: done at once, and far more than the stream's buffers hold.
    let numbers: Vec<String> = (0..1000)
        .map(|i| format!("{}{i:04}", "x".repeat(240)))
        .collect();
    let sub = submit(&mut client, &key, &numbers).await;
    let mut stream = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.clone(),
            batch_id: sub.batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    wait_until("the watch to start", || async { app.active_watches() == 1 }).await;
    wait_until("the stalled watch to be closed", || async {
        app.active_watches() == 0
    })
    .await;

    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        received < 1000,
        "only what was buffered arrives: {received}"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_watch() {
    let app = spawn_app_with(&["--sim-latency-ms", "600000", "--shutdown-grace-secs", "0"]).await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &["+14155552671".into(), "junk".into()]).await;
    let mut watcher = app.client().await;
    let mut stream = watcher
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.clone(),
            batch_id: sub.batch_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    stream
        .message()
        .await
        .unwrap()
        .expect("the invalid entry's result");
    wait_until("the watch to be open", || async {
        app.active_watches() == 1
    })
    .await;
    drop(stream);
    drop(watcher);
    wait_until("the watch task to notice and end", || async {
        app.active_watches() == 0
    })
    .await;
}
