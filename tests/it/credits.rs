use tonic::Code;
use tonic_types::StatusExt;

use wavalidate::pb;
use wavalidate_test_support::*;

async fn balance(client: &mut Client, key: &str) -> i64 {
    client
        .get_balance(pb::GetBalanceRequest {
            api_key: key.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .credits
}

/// Sum of ledger deltas must equal the balance.
async fn assert_ledger_balances(app: &TestApp, account: uuid::Uuid, balance: i64) {
    let sum: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(delta), 0)::bigint FROM credit_ledger WHERE account_id = $1",
    )
    .bind(account)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(sum, balance, "ledger and balance disagree");
}

#[tokio::test]
async fn a_batch_the_balance_cannot_cover_is_rejected_whole() {
    let app = spawn_app().await;
    let (account, key) = app.account(3).await;
    let mut client = app.client().await;
    let err = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: us_numbers(0, 4),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let details = err.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.reason, "INSUFFICIENT_CREDITS");
    assert_eq!(info.metadata.get("required").map(String::as_str), Some("4"));
    assert_eq!(
        info.metadata.get("available").map(String::as_str),
        Some("3")
    );

    assert_eq!(balance(&mut client, &key).await, 3);
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM batches) + (SELECT count(*) FROM batch_numbers)",
    )
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(rows, 0, "nothing stored");

    // Exactly the balance is fine.
    submit(&mut client, &key, &us_numbers(0, 3)).await;
    assert_eq!(balance(&mut client, &key).await, 0);
    assert_ledger_balances(&app, account, 0).await;
}

#[tokio::test]
async fn a_repeated_request_id_returns_the_original_batch_and_charges_once() {
    let app = spawn_app().await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let request = |numbers: Vec<String>| pb::SubmitBatchRequest {
        api_key: key.clone(),
        phone_numbers: numbers,
        request_id: "order-42".into(),
        ..Default::default()
    };
    let first = client
        .submit_batch(request(us_numbers(0, 5)))
        .await
        .unwrap()
        .into_inner();
    let again = client
        .submit_batch(request(us_numbers(0, 5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.batch_id, again.batch_id);
    assert_eq!(first.total_numbers, again.total_numbers);
    assert_eq!(balance(&mut client, &key).await, 95);

    let err = client
        .submit_batch(request(us_numbers(0, 6)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(
        err.get_error_details()
            .error_info()
            .expect("ErrorInfo")
            .reason,
        "IDEMPOTENCY_KEY_REUSED"
    );
    assert_eq!(balance(&mut client, &key).await, 95);

    // Another account may use the same request_id for its own batch.
    let (_, other) = app.account(100).await;
    let theirs = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: other,
            ..request(us_numbers(0, 5))
        })
        .await
        .unwrap()
        .into_inner();
    assert_ne!(theirs.batch_id, first.batch_id);
    assert_ledger_balances(&app, account, 95).await;

    // Once the balance is spent, a retry is still the batch it retries, not a refusal.
    submit(&mut client, &key, &us_numbers(100, 95)).await;
    assert_eq!(balance(&mut client, &key).await, 0);
    let retried = client
        .submit_batch(request(us_numbers(0, 5)))
        .await
        .expect("a retry after the balance ran out")
        .into_inner();
    assert_eq!(retried.batch_id, first.batch_id);
    let reused = client
        .submit_batch(request(us_numbers(0, 6)))
        .await
        .unwrap_err();
    assert_eq!(
        reused
            .get_error_details()
            .error_info()
            .expect("ErrorInfo")
            .reason,
        "IDEMPOTENCY_KEY_REUSED",
        "a reused key is named as such even when the balance is short"
    );
    assert_ledger_balances(&app, account, 0).await;
}

#[tokio::test]
async fn the_same_request_id_submitted_concurrently_makes_one_batch() {
    let app = spawn_app().await;
    let (account, key) = app.account(1000).await;
    let numbers = us_numbers(0, 50);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let mut client = app.client().await;
        let req = pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: numbers.clone(),
            request_id: "same-key".into(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move { client.submit_batch(req).await }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(
            t.await
                .unwrap()
                .expect("every twin succeeds")
                .into_inner()
                .batch_id,
        );
    }
    assert_eq!(ids.len(), 1, "one batch for one request_id");
    let mut client = app.client().await;
    assert_eq!(balance(&mut client, &key).await, 950, "charged once");
    assert_ledger_balances(&app, account, 950).await;
}

#[tokio::test]
async fn concurrent_submits_never_overdraw_the_last_credits() {
    let app = spawn_app().await;
    let (account, key) = app.account(50).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let mut client = app.client().await;
        let req = pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: us_numbers(i * 10, 5),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move { client.submit_batch(req).await }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition, "{s:?}");
                refused += 1;
            }
        }
    }
    assert_eq!(
        (ok, refused),
        (10, 14),
        "exactly the credits' worth of batches succeed"
    );
    let mut client = app.client().await;
    assert_eq!(balance(&mut client, &key).await, 0);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_numbers")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(stored, 50);
    assert_ledger_balances(&app, account, 0).await;
}
