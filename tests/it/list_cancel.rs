//! ListBatches paging and CancelBatch refunds, over gRPC and HTTP.
use std::collections::HashSet;

use serde_json::Value;
use tonic::Code;

use wavalidate::pb::{self, BatchStatus, NumberStatus};
use wavalidate_test_support::*;

fn list_req(
    key: &str,
    page_size: i32,
    page_token: &str,
    status: BatchStatus,
) -> pb::ListBatchesRequest {
    pb::ListBatchesRequest {
        api_key: key.into(),
        page_size,
        page_token: page_token.into(),
        status: status as i32,
    }
}

#[tokio::test]
async fn list_pages_newest_first_filters_by_status_and_stays_in_the_account() {
    // No workers: batches stay processing unless every entry is invalid.
    let app = spawn_app_with(|s| {
        s.server.role = Role::Api;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let (_, other) = app.account(1000).await;
    let mut client = app.client().await;
    let mut submitted = Vec::new();
    for i in 0..7 {
        submitted.push(
            submit(&mut client, &key, &us_numbers(i * 10, 2))
                .await
                .batch_id,
        );
    }
    let invalid_only = submit(&mut client, &key, &["nope".into()]).await.batch_id;
    submit(&mut client, &other, &us_numbers(500, 2)).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_batches(list_req(&key, 3, &token, BatchStatus::Unspecified))
            .await
            .unwrap()
            .into_inner();
        pages += 1;
        assert!(page.batches.len() <= 3);
        seen.extend(page.batches.into_iter().map(|b| b.batch_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<String> = submitted.clone();
    expected.push(invalid_only.clone());
    expected.reverse();
    assert_eq!(
        seen, expected,
        "newest first, each once, only this account's"
    );

    let done = client
        .list_batches(list_req(&key, 0, "", BatchStatus::Completed))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        done.batches
            .iter()
            .map(|b| b.batch_id.clone())
            .collect::<Vec<_>>(),
        [invalid_only]
    );
    let processing = client
        .list_batches(list_req(&key, 0, "", BatchStatus::Processing))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(processing.batches.len(), 7);
    assert!(
        processing
            .batches
            .iter()
            .all(|b| b.pending == 2 && b.credits_charged == 2)
    );

    let err = client
        .list_batches(list_req(&key, 3, "not-a-token", BatchStatus::Unspecified))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // The same over HTTP.
    let http = get_json(
        &reqwest::Client::new(),
        format!(
            "http://{}/api/v1/wavalidation/batches?api_key={key}&page_size=5&status=processing",
            app.addr
        ),
    )
    .await;
    assert_eq!(http["batches"].as_array().unwrap().len(), 5);
    assert!(http["next_page_token"].is_string());
}

#[tokio::test]
async fn cancel_stops_unchecked_numbers_refunds_them_once_and_ends_watchers() {
    // Evolution answers a chunk of 50 per call; the gateway answers two calls, then holds
    // the third until the cancel has committed, so a worker is mid-call during it.
    let gw = wavalidate_test_support::fakes::evolution(&[], "secret", "main").await;
    gw.state.hold_from(2);
    let app = spawn_gateway_app(&gw, "evolution", |s| {
        s.workers.loops = 1;
    })
    .await;
    let (account, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 300)).await;
    let mut watcher = app.client().await;
    let (k, id) = (key.clone(), sub.batch_id.clone());
    let watch = tokio::spawn(async move { watch_all(&mut watcher, &k, &id).await });
    wait_until("the worker to be mid-call on numbers 100-149", || async {
        gw.state.held() == 1
    })
    .await;

    let cancel = pb::CancelBatchRequest {
        api_key: key.clone(),
        batch_id: sub.batch_id.clone(),
    };
    let first = client
        .cancel_batch(cancel.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.cancelled_numbers, 200,
        "the numbers being checked and those still queued"
    );
    assert_eq!(first.credits_refunded, 200);
    let again = client.cancel_batch(cancel).await.unwrap().into_inner();
    assert_eq!(
        (again.cancelled_numbers, again.credits_refunded),
        (0, 0),
        "a second cancel refunds nothing"
    );

    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 300);
    assert_eq!((completed.completed, completed.cancelled), (100, 200));

    // The held call now answers: its late write must not overwrite a cancelled number.
    // The one worker loop takes the next batch only after it wrote the one it holds.
    gw.state.release();
    let (_, other) = app.account(10).await;
    let next = submit(&mut client, &other, &us_numbers(900, 1)).await;
    wait_completed(&mut client, &other, &next.batch_id).await;
    assert_eq!(
        gw.state.calls().len(),
        4,
        "the held call did reach the gateway"
    );
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(p.status, BatchStatus::Completed as i32);
    assert_eq!((p.pending, p.completed, p.cancelled), (0, 100, 200));
    let statuses: Vec<i32> = p.results.iter().map(|r| r.status).collect();
    assert!(
        statuses[100..]
            .iter()
            .all(|&s| s == NumberStatus::Cancelled as i32),
        "no cancelled number was overwritten"
    );
    assert_eq!(p.credits_refunded, 200);
    assert_eq!(app.store.balance(account).await.unwrap(), 1000 - 100);
    let refunds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM credit_ledger WHERE reason = 'refund_cancelled'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(refunds, 1);
    let unique: HashSet<i32> = results.iter().map(|r| r.index).collect();
    assert_eq!(unique.len(), 300);
}

#[tokio::test]
async fn cancel_over_http_and_of_another_accounts_batch() {
    let app = spawn_app_with(|s| {
        s.server.role = Role::Api;
    })
    .await;
    let (_, alice) = app.account(100).await;
    let (_, bob) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &alice, &us_numbers(0, 5)).await;
    let http = reqwest::Client::new();
    let url = format!(
        "http://{}/api/v1/wavalidation/batch/{}/cancel",
        app.addr, sub.batch_id
    );
    let theirs = http.post(&url).bearer_auth(&bob).send().await.unwrap();
    assert_eq!(theirs.status(), reqwest::StatusCode::NOT_FOUND);
    let mine: Value = http
        .post(&url)
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["cancelled_numbers"], 5);
    assert_eq!(mine["batch"]["status"], "completed");
    assert_eq!(mine["batch"]["pending"], 0);
    let balance = client
        .get_balance(pb::GetBalanceRequest { api_key: alice })
        .await
        .unwrap()
        .into_inner()
        .credits;
    assert_eq!(balance, 100);
}
