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
    let mut client =
        wavalidate::pb::wa_validation_service_client::WaValidationServiceClient::new(channel);
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

async fn health(addr: std::net::SocketAddr) -> Option<i32> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .ok()?
    .ok()?;
    Some(resp.into_inner().status)
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

fn spawn_watch(
    client: &Client,
    key: &str,
    batch_id: &str,
) -> tokio::task::JoinHandle<(Vec<pb::NumberResult>, pb::BatchCompleted)> {
    let (mut c, k, id) = (client.clone(), key.to_string(), batch_id.to_string());
    tokio::spawn(async move { watch_all(&mut c, &k, &id).await })
}

#[tokio::test]
async fn watchers_miss_nothing_when_the_listening_connection_is_killed() {
    // A long backstop: only the reconnect and its re-read can make up for lost notifications.
    let app = spawn_app_with(&[
        "--sim-latency-ms",
        "150",
        "--workers",
        "1",
        "--watch-backstop-ms",
        "600000",
    ])
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 600)).await;
    let watch = spawn_watch(&client, &key, &sub.batch_id);
    wait_until("some progress", || {
        let mut c = client.clone();
        let (k, id) = (key.clone(), sub.batch_id.clone());
        async move { poll(&mut c, &k, &id).await.completed >= 100 }
    })
    .await;
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query ILIKE '%LISTEN%' AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(
        killed >= 1,
        "the listener's backend was found and terminated"
    );
    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 600);
    assert_eq!(completed.completed, 600);
}

#[tokio::test]
async fn a_database_outage_turns_health_off_fails_fast_and_loses_nothing() {
    let app = spawn_app_with(&["--sim-latency-ms", "100", "--workers", "1"]).await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 500)).await;
    let watch = spawn_watch(&client, &key, &sub.batch_id);
    assert_eq!(health(app.addr).await, Some(SERVING));
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(app.store.pool())
        .await
        .unwrap();

    // The outage: no new connections, and every existing one cut.
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    let set_allowed = |allowed: bool| {
        let (admin, db) = (admin.clone(), db.clone());
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {allowed}"
            )))
            .execute(&admin)
            .await
            .unwrap();
            if !allowed {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                )
                .bind(&db)
                .execute(&admin)
                .await
                .unwrap();
            }
        }
    };
    let outage = std::time::Instant::now();
    set_allowed(false).await;
    wait_until("health to report NOT_SERVING", || async {
        health(app.addr).await == Some(NOT_SERVING)
    })
    .await;
    let started = std::time::Instant::now();
    let err = client
        .get_balance(pb::GetBalanceRequest {
            api_key: key.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast, does not hang: {:?}",
        started.elapsed()
    );

    set_allowed(true).await;
    wait_until("health to report SERVING again", || async {
        health(app.addr).await == Some(SERVING)
    })
    .await;
    let recovered = outage.elapsed();
    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 500);
    assert_eq!(completed.completed, 500);
    eprintln!("database outage: serving again {recovered:?} after it began");
}
