//! Concurrency defects, each forced into the interleaving that exposes it: a cancel
//! meeting a result write, leases across the calls of one claim, watchers ending
//! together, and a write whose commit its client never heard of.
use std::time::Duration;

use sqlx::Connection;

use wavalidate::pb::{self, NumberStatus};
use wavalidate_test_support::fakes;
use wavalidate_test_support::pgproxy::PgProxy;
use wavalidate_test_support::*;

/// Holds a statement's row update (after its row locks are taken) while the test holds
/// advisory lock `key` exclusively: the statement waits in `wait_event = 'advisory'`.
async fn hold_updates(pool: &sqlx::PgPool, table: &str, when: &str, key: i64) {
    let sql = format!(
        "CREATE FUNCTION hold_{table}() RETURNS trigger AS $$
         BEGIN
             PERFORM pg_advisory_lock_shared({key});
             PERFORM pg_advisory_unlock_shared({key});
             RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER hold_{table} BEFORE UPDATE ON {table}
             FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION hold_{table}();"
    );
    // Test-only SQL built from the test's own constants.
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await
        .unwrap();
}

async fn gatekeeper(url: &str, key: i64) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

async fn open_gate(conn: &mut sqlx::PgConnection, key: i64) {
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(key)
        .execute(conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_cancel_that_meets_a_result_write_of_its_batch_neither_deadlocks_nor_fails() {
    // One worker loop, one chunk of 50 per claim: the write covers numbers 0-49.
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let app = spawn_app_on(url.clone(), store.clone(), |s| {
        s.workers.loops = 1;
        s.checker.simulated.per_call = 50;
    })
    .await;
    let pool = store.pool().clone();
    hold_updates(
        &pool,
        "batch_numbers",
        "OLD.state = 1 AND NEW.state IN (2, 3)",
        41,
    )
    .await;
    let mut gate = gatekeeper(&url, 41).await;
    let (account, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 100)).await;

    // Interleaving: the write holds its numbers, then the cancel starts and waits for
    // one of them, then the write goes on to the batch row.
    wait_until("the result write to hold its numbers", || async {
        waiting_for(&pool, "advisory").await == 1
    })
    .await;
    let mut canceller = client.clone();
    let request = pb::CancelBatchRequest {
        api_key: key.clone(),
        batch_id: sub.batch_id.clone(),
    };
    let cancel = tokio::spawn(async move { canceller.cancel_batch(request).await });
    wait_until(
        "the cancel to wait for a number the write holds",
        || async {
            waiting_for(&pool, "transactionid").await + waiting_for(&pool, "tuple").await >= 1
        },
    )
    .await;
    open_gate(&mut gate, 41).await;

    let cancelled = cancel
        .await
        .unwrap()
        .expect("the cancel succeeds")
        .into_inner();
    assert_eq!(
        cancelled.cancelled_numbers, 50,
        "the write's 50 are answered, the other chunk's 50 cancelled"
    );
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!((done.completed, done.cancelled, done.pending), (50, 50, 0));
    assert_eq!(store.balance(account).await.unwrap(), 1000 - 50);
    drop(gate);
    app.stop().await;
    assert_eq!(deadlocks(&url).await, 0, "PostgreSQL detected a deadlock");
}

#[tokio::test]
async fn cancels_racing_result_writes_never_deadlock_nor_fail() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let app = spawn_app_on(url.clone(), store.clone(), |s| {
        s.workers.loops = 8;
        s.checker.simulated.per_call = 50;
        s.checker.simulated.latency = ms(5);
    })
    .await;
    let mut clients = Vec::new();
    for c in 0..4 {
        let (account, key) = app.account(100_000).await;
        let mut client = app.client().await;
        clients.push(tokio::spawn(async move {
            let mut batches = Vec::new();
            for round in 0..10 {
                let from = (c * 10 + round) * 250;
                let sub = submit(&mut client, &key, &us_numbers(from, 250)).await;
                // Cancel at different depths into the batch: at once, or after some results.
                let answered = (round % 4) as i32 * 50;
                if answered > 0 {
                    wait_until("some results", || {
                        let (mut c, k, id) = (client.clone(), key.clone(), sub.batch_id.clone());
                        async move {
                            let p = poll(&mut c, &k, &id).await;
                            p.completed >= answered || p.pending == 0
                        }
                    })
                    .await;
                }
                let cancel = client
                    .cancel_batch(pb::CancelBatchRequest {
                        api_key: key.clone(),
                        batch_id: sub.batch_id.clone(),
                    })
                    .await;
                assert!(cancel.is_ok(), "cancel failed: {cancel:?}");
                batches.push(sub.batch_id);
            }
            (account, key, client, batches)
        }));
    }
    for task in clients {
        let (account, key, mut client, batches) = task.await.unwrap();
        let mut answered = 0;
        for id in &batches {
            let p = wait_completed(&mut client, &key, id).await;
            assert_eq!(p.completed + p.failed + p.cancelled, 250);
            answered += p.completed as i64;
        }
        assert_eq!(
            store.balance(account).await.unwrap(),
            100_000 - answered,
            "charged exactly the numbers answered"
        );
    }
    app.stop().await;
    assert_eq!(deadlocks(&url).await, 0, "PostgreSQL detected a deadlock");
}

/// The numbers of `batch` (as the fakes see them: digits) and how often each was asked.
fn asked(gw: &fakes::Gateway, numbers: &[String]) -> Vec<usize> {
    let counts = gw.state.asked_counts();
    numbers
        .iter()
        .map(|n| counts.get(n.trim_start_matches('+')).copied().unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_claim_checked_in_many_calls_keeps_its_lease_and_asks_each_number_once() {
    // WAHA takes 10 numbers a call; at 50 ms a request a call takes 0.5 s, shorter than a
    // third of the 2 s lease, and the chunk's five calls take 2.5 s, longer than the lease.
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.set_latency(Duration::from_millis(50));
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.workers.loops = 2;
        s.workers.lease = secs(2);
        s.pacing.rate_per_sec = Some(0.0);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let numbers = us_numbers(0, 50);
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(done.completed, 50);
    assert_eq!(
        asked(&gw, &numbers),
        vec![1; 50],
        "each number reached the gateway exactly once"
    );
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_stops_asking_for_numbers_it_no_longer_holds() {
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.hold_from(0);
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.workers.loops = 1;
        s.pacing.rate_per_sec = Some(0.0);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let numbers = us_numbers(0, 50);
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("the worker to be in its first call", || async {
        gw.state.held() == 1
    })
    .await;
    // Another claimant takes the chunk over, for longer than the test runs.
    sqlx::query(
        "UPDATE queue_chunks SET lease_token = gen_random_uuid(), lease_until = now() + interval '1 hour'",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    gw.state.release();

    // The one worker loop takes another batch only once it has let go of this claim.
    let (_, other) = app.account(10).await;
    let next = submit(&mut client, &other, &["+14155552671".into()]).await;
    wait_completed(&mut client, &other, &next.batch_id).await;
    let asked_first = asked(&gw, &numbers);
    assert_eq!(
        asked_first.iter().sum::<usize>(),
        10,
        "only the call under way when the lease was lost reached the gateway: {asked_first:?}"
    );
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(p.pending, 50, "a write without the lease is refused");

    // The taken-over lease runs out; the chunk is claimed again and finished.
    sqlx::query("UPDATE queue_chunks SET lease_until = now() - interval '1 second'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(done.completed, 50);
    let mut expected = vec![2; 10];
    expected.extend([1; 40]);
    assert_eq!(asked(&gw, &numbers), expected);
}

#[tokio::test]
async fn watchers_that_end_together_leave_no_batch_registered() {
    // No workers: each batch waits until it is cancelled, which ends both its watchers at once.
    let app = spawn_app_with(|s| {
        s.server.role = Role::Api;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let mut batches = Vec::new();
    for i in 0..100 {
        batches.push(submit(&mut client, &key, &us_numbers(i, 1)).await.batch_id);
    }
    let mut watches = Vec::new();
    for id in &batches {
        // A connection per batch: HTTP/2 caps the streams one connection carries.
        let watcher = app.client().await;
        for _ in 0..2 {
            let (mut c, k, id) = (watcher.clone(), key.clone(), id.clone());
            watches.push(tokio::spawn(
                async move { watch_all(&mut c, &k, &id).await },
            ));
        }
    }
    wait_until("every watch to be open", || async {
        app.active_watches() == 200
    })
    .await;
    assert_eq!(app.watched_batches(), 100);
    for id in &batches {
        client
            .cancel_batch(pb::CancelBatchRequest {
                api_key: key.clone(),
                batch_id: id.clone(),
            })
            .await
            .unwrap();
    }
    for w in watches {
        let (results, completed) = w.await.unwrap();
        assert_eq!((results.len(), completed.cancelled), (1, 1));
    }
    wait_until("every batch to be forgotten by the hub", || async {
        app.watched_batches() == 0
    })
    .await;
}

#[tokio::test]
async fn results_whose_commit_was_never_acknowledged_still_reach_local_watchers() {
    // Evolution answers 50 numbers in one call: one claim, one write.
    let gw = fakes::evolution(&[], "secret", "main").await;
    gw.state.hold_from(0);
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let proxy = PgProxy::start(&url).await;
    // Watchers here get results only from this process's workers or from a re-read:
    // no periodic re-read.
    let app = spawn_gateway_app_on(proxy.url(&url), store.clone(), &gw, "evolution", |s| {
        s.workers.loops = 1;
        s.api.watch_backstop = ms(600000);
    })
    .await;
    let pool = store.pool().clone();
    hold_updates(&pool, "batches", "NEW.completed <> OLD.completed", 42).await;
    let mut gate = gatekeeper(&url, 42).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 50)).await;
    let (mut c, k, id) = (client.clone(), key.clone(), sub.batch_id.clone());
    let watch = tokio::spawn(async move { watch_all(&mut c, &k, &id).await });
    wait_until("the watch to be registered", || async {
        app.watched_batches() == 1
    })
    .await;
    gw.state.release();

    // The write is under way (its numbers updated, the batch counters next): when its
    // answer comes, the proxy swallows it and drops the connection.
    wait_until("the result write to reach the batch row", || async {
        waiting_for(&pool, "advisory").await == 1
    })
    .await;
    let port: i32 = sqlx::query_scalar(
        "SELECT client_port FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event = 'advisory'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    proxy.cut_after_next_answer(port as u16);
    open_gate(&mut gate, 42).await;

    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 50);
    assert_eq!(completed.completed, 50);
    assert_eq!(proxy.cuts(), 1, "the write's answer was cut");
    assert!(
        results
            .iter()
            .all(|r| r.status == NumberStatus::NotOnWhatsapp as i32)
    );
}
