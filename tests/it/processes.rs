//! Several `wavalidate serve` processes sharing one database, killed and stopped like in production.
use wavalidate_test_support::*;

async fn leased(store: &wavalidate::store::Store) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM batch_numbers n
         JOIN queue_chunks q ON q.batch_id = n.batch_id AND n.idx BETWEEN q.first_idx AND q.last_idx
         WHERE q.lease_token IS NOT NULL AND n.state = 1",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn submit_work_and_watch_on_different_processes() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
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
    // No periodic re-read: the results reach this process only through the notifications.
    let watcher_app = spawn_app_on(url, store, |s| {
        s.server.role = Role::Api;
        s.api.watch_backstop = ms(600000);
    })
    .await;
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
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let api = spawn_app_on(url.clone(), store.clone(), |s| {
        s.server.role = Role::Api;
    })
    .await;
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
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let api = spawn_app_on(url.clone(), store.clone(), |s| {
        s.server.role = Role::Api;
    })
    .await;
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

    let status = worker.terminate().await;
    assert!(status.success(), "{status:?}");
    assert_eq!(
        leased(&store).await,
        0,
        "leases released, not left to expire"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM queue_chunks")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(
        attempts,
        [0],
        "an interrupted check does not count as an attempt"
    );
    // Nothing lost: another worker finishes the batch.
    let _next = spawn_app_on(url, store.clone(), |s| {
        s.server.role = Role::Worker;
    })
    .await;
    wait_until("the batch to finish", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batch_numbers WHERE state = 1")
            .fetch_one(store.pool())
            .await
            .unwrap()
            == 0
    })
    .await;
}

/// charged - refunded must equal what the results justify: the numbers with a definite answer from a check.
async fn assert_ledger_matches_results(
    store: &wavalidate::store::Store,
    account: uuid::Uuid,
    opening: i64,
) {
    let (charged_net, answered): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(credits_charged - credits_refunded), 0)::bigint FROM batches WHERE account_id = $1),
                (SELECT count(*) FROM batch_numbers n JOIN batches b ON b.id = n.batch_id
                 WHERE b.account_id = $1 AND n.state IN (2, 3))",
    )
    .bind(account)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(
        charged_net, answered,
        "charged - refunded = numbers answered"
    );
    assert_eq!(store.balance(account).await.unwrap(), opening - answered);
    let ledger: i64 =
        sqlx::query_scalar("SELECT sum(delta)::bigint FROM credit_ledger WHERE account_id = $1")
            .bind(account)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(
        ledger,
        opening - answered,
        "the ledger explains the balance"
    );
}

#[tokio::test]
async fn killing_a_serving_replica_mid_batch_loses_nothing_and_charges_once() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let slow = [
        "--role",
        "all",
        "--workers",
        "2",
        "--sim-latency-ms",
        "300",
        "--lease-secs",
        "2",
    ];
    let mut victim = spawn_process(&url, &slow, &[]).await;
    let survivor = spawn_process(&url, &slow, &[]).await;
    let (account, key) = store.create_account("crash", 5000).await.unwrap();
    let key = key.expose().to_string();
    let mut on_victim = connect(victim.addr).await;
    let mut batches = Vec::new();
    for b in 0..3 {
        let mut numbers = us_numbers(b * 1000, 400);
        numbers.push(format!("invalid-{b}"));
        batches.push(submit(&mut on_victim, &key, &numbers).await.batch_id);
    }
    // Watchers on the survivor see everything, whoever does the work.
    let on_survivor = connect(survivor.addr).await;
    let watches: Vec<_> = batches
        .iter()
        .map(|id| {
            let (mut c, k, id) = (on_survivor.clone(), key.clone(), id.clone());
            tokio::spawn(async move { watch_all(&mut c, &k, &id).await })
        })
        .collect();
    wait_until("work under way on both replicas", || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM batch_numbers WHERE state <> 1 AND state <> 4",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
            >= 200
    })
    .await;
    let killed_at = std::time::Instant::now();
    victim.kill9().await;
    let _restarted = spawn_process(&url, &slow, &[]).await;
    for w in watches {
        let (results, completed) = w.await.unwrap();
        assert_each_index_once(&results, 401);
        assert_eq!(completed.completed + completed.failed, 401);
    }
    eprintln!(
        "after SIGKILL: every batch complete {:?} later",
        killed_at.elapsed()
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_numbers WHERE state = 1")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(pending, 0);
    assert_ledger_matches_results(&store, account, 5000).await;
}

#[tokio::test]
async fn sigterm_under_load_ends_watchers_cleanly_and_loses_nothing() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let args = [
        "--role",
        "all",
        "--workers",
        "2",
        "--sim-latency-ms",
        "300",
        "--shutdown-grace-secs",
        "5",
    ];
    let leaving = spawn_process(&url, &args, &[]).await;
    let staying = spawn_process(&url, &args, &[]).await;
    let (account, key) = store.create_account("drain", 5000).await.unwrap();
    let key = key.expose().to_string();
    let mut client = connect(leaving.addr).await;
    let mut batches = Vec::new();
    for b in 0..3 {
        batches.push(
            submit(&mut client, &key, &us_numbers(b * 1000, 300))
                .await
                .batch_id,
        );
    }
    let mut streams = Vec::new();
    for id in &batches {
        let stream = open_watch(&mut client, &key, id).await;
        streams.push(stream);
    }
    wait_until("work under way", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batch_numbers WHERE state <> 1")
            .fetch_one(store.pool())
            .await
            .unwrap()
            >= 100
    })
    .await;
    let mut leaving = leaving;
    let sent = std::time::Instant::now();
    leaving.signal(nix::sys::signal::Signal::SIGTERM);
    for mut stream in streams {
        let mut completed = false;
        let end = loop {
            match tokio::time::timeout(DEADLINE, stream.message())
                .await
                .expect("the stream ends")
            {
                Ok(Some(msg)) => {
                    completed |= matches!(
                        msg.event,
                        Some(wavalidate::pb::watch_batch_response::Event::Completed(_))
                    );
                }
                Ok(None) => break None,
                Err(status) => break Some(status.code()),
            }
        };
        // A stream either finished its batch (its completed event, then OK) or was told
        // to go elsewhere; never a silent end.
        assert!(
            (end.is_none() && completed) || end == Some(tonic::Code::Unavailable),
            "stream ended with {end:?}, completed event: {completed}"
        );
    }
    let status = tokio::time::timeout(DEADLINE, leaving.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(status.success(), "{status:?}");
    eprintln!(
        "SIGTERM under load: exited {:?} after the signal",
        sent.elapsed()
    );

    let mut other = connect(staying.addr).await;
    for id in &batches {
        let (results, completed) = watch_all(&mut other, &key, id).await;
        assert_each_index_once(&results, 300);
        assert_eq!(completed.completed, 300);
    }
    assert_ledger_matches_results(&store, account, 5000).await;
}
