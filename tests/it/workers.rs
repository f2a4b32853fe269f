use crate::helpers::*;
use wavalidate::pb::NumberStatus;

#[tokio::test]
async fn checker_errors_end_as_errors_never_as_not_on_whatsapp() {
    let app = spawn_app_with(&[
        "--sim-error-rate",
        "1",
        "--max-attempts",
        "3",
        "--retry-base-ms",
        "10",
        "--retry-max-ms",
        "50",
    ])
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
    let app = spawn_app_with(&["--sim-error-rate", "1", "--max-attempts", "1"]).await;
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
    let (url, store) = fresh_database().await;
    let api = spawn_app_on(url.clone(), store.clone(), &["--role", "api"]).await;
    let (_, big) = api.account(100_000).await;
    let (small_account, small) = api.account(1000).await;
    let mut client = api.client().await;
    for b in 0..50 {
        submit(&mut client, &big, &us_numbers(b * 100, 100)).await;
    }
    let mine = submit(&mut client, &small, &us_numbers(9000, 100)).await;

    let _workers = spawn_app_on(
        url,
        store.clone(),
        &[
            "--role",
            "worker",
            "--workers",
            "1",
            "--sim-latency-ms",
            "20",
        ],
    )
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
    use wavalidate::store::queue::{Answer, Completion};

    let (url, store) = fresh_database().await;
    let api = spawn_app_on(url, store.clone(), &["--role", "api"]).await;
    let (account, key) = api.account(10).await;
    let mut client = api.client().await;
    let sub = submit(&mut client, &key, &["+14155552671".into()]).await;

    // A worker claims with a lease that runs out at once; another takes the number over.
    let (stale, claimed) = store.claim(10, Duration::from_millis(1)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let deadline = std::time::Instant::now() + DEADLINE;
    let fresh = loop {
        let (token, rows) = store.claim(10, Duration::from_secs(30)).await.unwrap();
        if !rows.is_empty() {
            break token;
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
        state: NumberState::Error,
        wa_id: None,
        is_business: false,
        error: Some("upstream failed".into()),
    }];
    let work = Completion {
        answers: &answers,
        retries: &[],
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
        // Written rows of this batch come back, so the assertions below count them.
        watched: &[claimed[0].batch_id],
    };
    assert_eq!(
        store.complete(stale, None, &work).await.unwrap().len(),
        0,
        "the stale worker writes nothing"
    );
    assert_eq!(store.complete(fresh, None, &work).await.unwrap().len(), 1);
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
    let app = spawn_app_with(&["--vacuum-dead-rows", "1", "--vacuum-every", "100ms"]).await;
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
    // Each checked number leaves dead row versions behind (the lease, then the answer).
    submit_and_wait(&mut client, &key, &us_numbers(0, 50)).await;

    let autovacuum: bool = sqlx::query_scalar("SELECT current_setting('autovacuum')::bool")
        .fetch_one(&pool)
        .await
        .unwrap();
    if autovacuum {
        // PostgreSQL's daemon does it here; the migration only tunes when.
        let options: Vec<String> = sqlx::query_scalar(
            "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'batch_numbers'::regclass",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        assert!(options.contains(&"autovacuum_vacuum_threshold=200000".to_string()));
        return;
    }
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
