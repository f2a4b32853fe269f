//! Several `wavalidate serve` processes sharing one database, killed and stopped like in production.
use crate::helpers::*;

async fn leased(store: &wavalidate::store::Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM batch_numbers WHERE lease_token IS NOT NULL AND state = 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn submit_work_and_watch_on_different_processes() {
    let (url, store) = fresh_database().await;
    let api_proc = spawn_process(&url, &["--role", "api"], &[]).await;
    let _worker_proc = spawn_process(
        &url,
        &[
            "--role",
            "worker",
            "--workers",
            "2",
            "--sim-latency-ms",
            "100",
        ],
        &[],
    )
    .await;
    let watcher_app = spawn_app_on(url, store, &["--role", "api"]).await;
    let (_, key) = watcher_app.account(1000).await;

    let mut submitter = connect(api_proc.addr).await;
    let sub = submit(&mut submitter, &key, &us_numbers(0, 400)).await;
    let mut watcher = watcher_app.client().await;
    let (results, completed) = watch_all(&mut watcher, &key, &sub.batch_id).await;
    assert_each_index_once(&results, 400);
    assert_eq!(completed.completed, 400);
    let polled = poll(&mut submitter, &key, &sub.batch_id).await;
    assert_eq!(polled.pending, 0);
}

#[tokio::test]
async fn a_killed_workers_numbers_are_reclaimed_when_their_lease_expires() {
    let (url, store) = fresh_database().await;
    let api = spawn_app_on(url.clone(), store.clone(), &["--role", "api"]).await;
    let (account, key) = api.account(1000).await;
    // This worker hangs in its check and dies without answering.
    let mut doomed = spawn_process(
        &url,
        &[
            "--role",
            "worker",
            "--workers",
            "1",
            "--sim-latency-ms",
            "600000",
            "--lease-secs",
            "2",
        ],
        &[],
    )
    .await;
    let mut client = api.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 100)).await;
    wait_until("the doomed worker to claim the batch", || async {
        leased(&store).await == 100
    })
    .await;

    // A watcher on the API process, which shares neither memory nor connection with any worker.
    let mut watcher = api.client().await;
    let (key2, id2) = (key.clone(), sub.batch_id.clone());
    let watch = tokio::spawn(async move { watch_all(&mut watcher, &key2, &id2).await });

    doomed.kill9().await;
    let _rescuer = spawn_process(&url, &["--role", "worker", "--lease-secs", "2"], &[]).await;

    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 100);
    assert_eq!(completed.completed, 100);
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempts FROM batch_numbers")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        attempts,
        [2],
        "each number was claimed by the dead worker, then once more"
    );
    let balance = store.balance(account).await.unwrap();
    assert_eq!(balance, 900, "charged once");
    let charges: i64 =
        sqlx::query_scalar("SELECT count(*) FROM credit_ledger WHERE reason = 'batch_charge'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(charges, 1);
}

#[tokio::test]
async fn sigterm_hands_in_flight_numbers_back_and_exits_cleanly() {
    let (url, store) = fresh_database().await;
    let api = spawn_app_on(url.clone(), store.clone(), &["--role", "api"]).await;
    let (_, key) = api.account(1000).await;
    let mut worker = spawn_process(
        &url,
        &[
            "--role",
            "worker",
            "--workers",
            "1",
            "--sim-latency-ms",
            "600000",
            "--shutdown-grace-secs",
            "0",
        ],
        &[],
    )
    .await;
    let mut client = api.client().await;
    submit(&mut client, &key, &us_numbers(0, 50)).await;
    wait_until("the worker to claim", || async {
        leased(&store).await == 50
    })
    .await;

    worker.signal(nix::sys::signal::Signal::SIGTERM);
    let status = tokio::time::timeout(DEADLINE, worker.child.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(
        leased(&store).await,
        0,
        "leases released, not left to expire"
    );
    let attempts: i64 = sqlx::query_scalar("SELECT sum(attempts)::bigint FROM batch_numbers")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(
        attempts, 0,
        "an interrupted check does not count as an attempt"
    );
    // Nothing lost: another worker finishes the batch.
    let _next = spawn_app_on(url, store.clone(), &["--role", "worker"]).await;
    wait_until("the batch to finish", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batch_numbers WHERE state = 1")
            .fetch_one(store.pool())
            .await
            .unwrap()
            == 0
    })
    .await;
}
