//! Retention: finished batches are pruned, the ledger and request ids are kept.
use tonic::Code;

use wavalidate::pb;
use wavalidate_test_support::*;

/// Waits until retention has deleted the batch: polling it answers NOT_FOUND.
async fn wait_pruned(client: &Client, key: &str, batch_id: &str) {
    wait_until("the finished batch to be pruned", || {
        let mut c = client.clone();
        let (k, id) = (key.to_string(), batch_id.to_string());
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
}

#[tokio::test]
async fn retention_prunes_finished_batches_but_keeps_the_ledger_and_running_ones() {
    let app = spawn_app_with(|s| {
        s.maintenance.retention = secs(1);
        s.maintenance.retention_every = ms(100);
        s.checker.simulated.latency = ms(600000);
        s.workers.shutdown_grace = secs(0);
    })
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let finished = submit(&mut client, &key, &["junk".into(), "nope".into()]).await;
    let running = submit(&mut client, &key, &["+14155552671".into()]).await;
    assert_eq!(finished.status, pb::BatchStatus::Completed as i32);
    wait_pruned(&client, &key, &finished.batch_id).await;
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
async fn a_request_id_retried_after_retention_deleted_its_batch_is_answered_not_charged() {
    let app = spawn_app_with(|s| {
        s.maintenance.retention = secs(1);
        s.maintenance.retention_every = ms(100);
    })
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let request = pb::SubmitBatchRequest {
        request_id: "nightly-import-7".into(),
        ..submit_request(&key, &["+14155552671", "+14155550100"])
    };
    let first = client
        .submit_batch(request.clone())
        .await
        .unwrap()
        .into_inner();
    wait_completed(&mut client, &key, &first.batch_id).await;
    wait_pruned(&client, &key, &first.batch_id).await;
    let ledger = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM credit_ledger WHERE account_id = $1")
            .bind(account)
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    let entries = ledger().await;

    let retry = client
        .submit_batch(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retry.batch_id, first.batch_id,
        "the original batch, not a new one"
    );
    assert_eq!(retry.total_numbers, 2);
    assert_eq!(retry.status, pb::BatchStatus::Completed as i32);
    assert_eq!(app.store.balance(account).await.unwrap(), 8, "charged once");
    assert_eq!(ledger().await, entries, "nothing written to the ledger");

    let reused = client
        .submit_batch(pb::SubmitBatchRequest {
            phone_numbers: vec!["+14155550199".into()],
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert!(reused.message().contains("already used"), "{reused:?}");
}
