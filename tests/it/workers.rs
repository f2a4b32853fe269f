use wavalidate::pb::NumberStatus;
use wavalidate_test_support::*;

#[tokio::test]
async fn checker_errors_end_as_errors_never_as_not_on_whatsapp() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.error_rate = 1.0;
        s.workers.max_attempts = 3;
        s.workers.retry_base = ms(10);
        s.workers.retry_max = ms(50);
    })
    .await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let mut numbers = us_numbers(0, 10);
    numbers.push("nonsense".into());
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!((done.completed, done.failed, done.pending), (1, 10, 0));
    for r in &done.results[..10] {
        assert_eq!(r.status, NumberStatus::Error as i32, "{r:?}");
        assert!(r.error.contains("gave up after 3 attempts"), "{}", r.error);
        assert!(r.wa_id.is_empty());
    }
    assert_eq!(done.results[10].status, NumberStatus::InvalidNumber as i32);
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempts FROM batch_numbers WHERE state = 5")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert!(attempts.iter().all(|&a| a == 3), "{attempts:?}");
    // What could not be answered costs nothing.
    assert_eq!((done.credits_charged, done.credits_refunded), (11, 11));
    let balance = app.store.balance(account).await.unwrap();
    assert_eq!(balance, 100);
    let ledger: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, delta FROM credit_ledger WHERE account_id = $1 AND batch_id IS NOT NULL ORDER BY id")
            .bind(account)
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    let refunded: i64 = ledger
        .iter()
        .filter(|(r, _)| r.starts_with("refund"))
        .map(|(_, d)| d)
        .sum();
    assert_eq!(refunded, 11, "{ledger:?}");
}

#[tokio::test]
async fn invalid_numbers_never_reach_the_checker() {
    // With every check failing, only entries that reached the checker can end in error.
    let app = spawn_app_with(|s| {
        s.checker.simulated.error_rate = 1.0;
        s.workers.max_attempts = 1;
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(
        &mut client,
        &key,
        &["+1 555".into(), "hello".into(), "+14155552671".into()],
    )
    .await;
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    let statuses: Vec<i32> = done.results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [
            NumberStatus::InvalidNumber as i32,
            NumberStatus::InvalidNumber as i32,
            NumberStatus::Error as i32
        ]
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM batch_numbers ORDER BY idx")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, [0, 0, 1]);
}

#[tokio::test]
async fn one_accounts_backlog_does_not_stall_another_accounts_batch() {
    // Workers off while the queue fills, so the order is decided by the claim alone.
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let api = spawn_app_on(url.clone(), store.clone(), |s| {
        s.server.role = Role::Api;
    })
    .await;
    let (_, big) = api.account(100_000).await;
    let (small_account, small) = api.account(1000).await;
    let mut client = api.client().await;
    for b in 0..50 {
        submit(&mut client, &big, &us_numbers(b * 100, 100)).await;
    }
    let mine = submit(&mut client, &small, &us_numbers(9000, 100)).await;

    let _workers = spawn_app_on(url, store.clone(), |s| {
        s.server.role = Role::Worker;
        s.workers.loops = 1;
        s.checker.simulated.latency = ms(20);
    })
    .await;
    wait_completed(&mut client, &small, &mine.batch_id).await;
    let others_done: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM batch_numbers n JOIN batches b ON b.id = n.batch_id
         WHERE b.account_id <> $1 AND n.state <> 1",
    )
    .bind(small_account)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert!(
        others_done <= 400,
        "{others_done} of the backlog's 5000 numbers were checked before the small batch finished"
    );
}

#[tokio::test]
async fn a_stale_or_repeated_write_neither_overwrites_nor_refunds_twice() {
    use std::time::Duration;
    use wavalidate::domain::batch::NumberState;
    use wavalidate::store::queue::Completion;
    use wavalidate::store::rows::{Answer, ChunkEnd};

    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let api = spawn_app_on(url, store.clone(), |s| {
        s.server.role = Role::Api;
    })
    .await;
    let (account, key) = api.account(10).await;
    let mut client = api.client().await;
    let sub = submit(&mut client, &key, &["+14155552671".into()]).await;

    // A worker claims with a lease that runs out at once; another takes the number over.
    let stale = store
        .claim(10, Duration::from_millis(1), false)
        .await
        .unwrap();
    let claimed = stale.numbers;
    assert_eq!(claimed.len(), 1);
    let deadline = std::time::Instant::now() + DEADLINE;
    let fresh = loop {
        let claim = store
            .claim(10, Duration::from_secs(30), false)
            .await
            .unwrap();
        if !claim.numbers.is_empty() {
            break claim.token;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the expired lease was never claimed again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };

    let answers = [Answer {
        batch_id: claimed[0].batch_id,
        idx: 0,
        chunk: claimed[0].chunk,
        state: NumberState::Error,
        wa_id: None,
        is_business: false,
        error: Some("upstream failed".into()),
    }];
    let work = Completion {
        answers: &answers,
        retries: &[],
        ends: &[(claimed[0].chunk_key(), ChunkEnd::Done)],
        defer_for: Duration::ZERO,
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
        // Written rows of this batch come back, so the assertions below count them.
        watched: &[claimed[0].batch_id],
    };
    assert_eq!(
        store
            .complete(stale.token, None, &work)
            .await
            .unwrap()
            .len(),
        0,
        "the stale worker writes nothing"
    );
    assert_eq!(store.complete(fresh, None, &work).await.unwrap().len(), 1);
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_chunks")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(chunks, 0, "the finished chunk left the queue");
    assert_eq!(
        store.complete(fresh, None, &work).await.unwrap().len(),
        0,
        "a repeated write changes nothing"
    );

    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!((p.failed, p.credits_refunded), (1, 1));
    assert_eq!(store.balance(account).await.unwrap(), 10);
    let refunds: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM credit_ledger WHERE account_id = $1 AND reason = 'refund_error'",
    )
    .bind(account)
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(refunds, 1);
}

#[tokio::test]
async fn the_queue_tables_are_vacuumed_once_dead_rows_pile_up() {
    // Autovacuum off for the queue's tables, whatever the server's own setting: the
    // service must clear them itself.
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    sqlx::raw_sql(
        "ALTER TABLE batch_numbers SET (autovacuum_enabled = off);
         ALTER TABLE queue_chunks SET (autovacuum_enabled = off);",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let app = spawn_app_on(url, store, |s| {
        s.maintenance.vacuum_dead_rows = 1;
        s.maintenance.vacuum_every = ms(100);
    })
    .await;
    let pool = app.store.pool().clone();
    let stats = || async {
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT vacuum_count, n_dead_tup FROM pg_stat_user_tables
             WHERE relid = 'batch_numbers'::regclass",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let (before, _) = stats().await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    // Each checked number leaves a dead row version behind (its answer replaces it).
    submit_and_wait(&mut client, &key, &us_numbers(0, 50)).await;

    // Vacuumed, and no dead rows left: a vacuum may also have run between claim and answer.
    wait_until(
        "the workers' process to vacuum the numbers table clean",
        || async {
            let (count, dead) = stats().await;
            count > before && dead == 0
        },
    )
    .await;
    // Counted once the service hears the VACUUM finish, a moment after PostgreSQL's statistics do.
    wait_until("wav_queue_vacuums_total to count it", || async {
        metric(
            &metrics_page(app.addr).await,
            "wav_queue_vacuums_total",
            &[],
        ) >= 1.0
    })
    .await;
}

#[tokio::test]
async fn a_chunk_checked_in_several_calls_shows_each_calls_results_at_once() {
    // 10 numbers a call against chunks of 50: one claim, five calls, five writes.
    let app = spawn_app_with(|s| {
        s.checker.simulated.per_call = 10;
        s.checker.simulated.latency = ms(300);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 50)).await;
    wait_for_progress(&client, &key, &sub.batch_id, 10).await;
    let p = poll(&mut client, &key, &sub.batch_id).await;
    let leased: i64 =
        sqlx::query_scalar("SELECT count(*) FROM queue_chunks WHERE lease_token IS NOT NULL")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert!(
        p.completed < 50 && leased == 1,
        "results written while their chunk is still being checked ({} done, {leased} leased)",
        p.completed
    );
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(done.completed, 50);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_chunks")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the finished chunk left the queue");
}

#[tokio::test]
async fn numbers_queued_before_the_chunk_migration_are_checked_after_it() {
    use wavalidate::store::Store;

    // A database at the schema before chunks, holding a queued batch, one number of it
    // leased by a worker of that version.
    let db = database_at(20261127000008).await;
    let (url, old) = (db.url.clone(), db.store.clone());
    let (account, key) = old.create_account("old", 1000).await.unwrap();
    let batch = uuid::Uuid::now_v7();
    sqlx::query(
        "INSERT INTO batches (id, account_id, request_hash, total_numbers, credits_charged)
         VALUES ($1, $2, '\\x00', 120, 120)",
    )
    .bind(batch)
    .bind(account)
    .execute(old.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO batch_numbers (batch_id, idx, input, e164, region, state, fair_key, attempts, lease_token, lease_until)
         SELECT $1, g, n, n, 'US', 1, g,
                CASE WHEN g = 7 THEN 1 ELSE 0 END,
                CASE WHEN g = 7 THEN gen_random_uuid() END,
                CASE WHEN g = 7 THEN now() + interval '1 hour' END
         FROM generate_series(0, 119) g, LATERAL (SELECT '+1202555' || lpad(g::text, 4, '0') AS n) x",
    )
    .bind(batch)
    .execute(old.pool())
    .await
    .unwrap();

    let store = Store::connect_migrated(&url).await.unwrap();
    let chunks: Vec<(i32, i32, i32)> =
        sqlx::query_as("SELECT first_idx, last_idx, attempts FROM queue_chunks ORDER BY first_idx")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(chunks, [(0, 49, 1), (50, 99, 0), (100, 119, 0)]);

    let app = spawn_app_on(url, store, |_| {}).await;
    let mut client = app.client().await;
    let done = wait_completed(&mut client, key.expose(), &batch.to_string()).await;
    assert_eq!((done.completed, done.pending), (120, 0));
}

#[tokio::test]
async fn a_write_that_never_lands_leaves_its_numbers_to_be_claimed_again() {
    // One chunk of 50 checked in five calls; the database refuses the first call's
    // results (numbers 0-9) until the test lets it.
    let app = spawn_app_with(|s| {
        s.checker.simulated.per_call = 10;
        s.workers.loops = 1;
        s.workers.lease = secs(2);
    })
    .await;
    sqlx::raw_sql(
        "CREATE TABLE refuse_writes ();
         INSERT INTO refuse_writes DEFAULT VALUES;
         CREATE FUNCTION refuse_write() RETURNS trigger AS $$
         BEGIN
             IF EXISTS (SELECT 1 FROM refuse_writes) THEN RAISE EXCEPTION 'write refused by the test'; END IF;
             RETURN NEW;
         END $$ LANGUAGE plpgsql;
         CREATE TRIGGER refuse_first_call BEFORE UPDATE ON batch_numbers
             FOR EACH ROW WHEN (OLD.idx < 10 AND NEW.state <> 1) EXECUTE FUNCTION refuse_write();",
    )
    .execute(app.store.pool())
    .await
    .unwrap();
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let rolled_back = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap()
    };
    let before = rolled_back().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 50)).await;
    // The worker tries five times, then gives the write up.
    wait_until("the first call's write to fail five times", || async {
        rolled_back().await >= before + 5
    })
    .await;
    sqlx::query("DELETE FROM refuse_writes")
        .execute(app.store.pool())
        .await
        .unwrap();
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!((done.completed, done.pending), (50, 0));
}
