use tonic::Code;
use tonic_types::StatusExt;

use wavalidate::pb::{self, BatchStatus, NumberStatus};
use wavalidate_test_support::*;

#[tokio::test]
async fn dedups_after_normalization_keeps_order_and_counts_add_up() {
    let app = spawn_app().await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let mut req = submit_request(
        &key,
        &[
            "+1 415-555-2671",
            "(415) 555-0100",
            "+14155552671",
            "not a number",
            "+44 20 7946 0958",
            "not a number",
            "4155550100",
            "+1 555",
        ],
    );
    req.default_region = "us".into();
    let sub = client.submit_batch(req).await.unwrap().into_inner();
    assert_eq!(sub.total_numbers, 5);
    assert_eq!(sub.batch_id, sub.batch_id.to_lowercase());
    assert!(uuid::Uuid::parse_str(&sub.batch_id).is_ok());
    assert_eq!(sub.status, BatchStatus::Processing as i32);

    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    let texts: Vec<&str> = done
        .results
        .iter()
        .map(|r| r.phone_number.as_str())
        .collect();
    assert_eq!(
        texts,
        [
            "+1 415-555-2671",
            "(415) 555-0100",
            "not a number",
            "+44 20 7946 0958",
            "+1 555"
        ]
    );
    let indexes: Vec<i32> = done.results.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    let e164: Vec<&str> = done.results.iter().map(|r| r.e164.as_str()).collect();
    assert_eq!(
        e164,
        ["+14155552671", "+14155550100", "", "+442079460958", ""]
    );
    let regions: Vec<&str> = done.results.iter().map(|r| r.region.as_str()).collect();
    assert_eq!(regions, ["US", "US", "", "GB", ""]);

    for r in &done.results {
        assert!(r.checked_at.is_some(), "{r:?}");
        if r.e164.is_empty() {
            assert_eq!(r.status, NumberStatus::InvalidNumber as i32);
            assert!(!r.error.is_empty() && r.wa_id.is_empty());
        } else {
            assert!(
                r.status == NumberStatus::OnWhatsapp as i32
                    || r.status == NumberStatus::NotOnWhatsapp as i32
            );
            // The simulated checker's documented rule.
            let expect_on = matches!(
                wavalidate::checker::simulated::Simulated::answer(&r.e164),
                wavalidate::checker::Outcome::OnWhatsApp { .. }
            );
            assert_eq!(r.status == NumberStatus::OnWhatsapp as i32, expect_on);
            if expect_on {
                assert_eq!(r.wa_id, r.e164.trim_start_matches('+'));
            }
        }
    }
    assert_eq!((done.completed, done.failed, done.pending), (5, 0, 0));
    assert_eq!(done.total_numbers, 5);
    assert!(done.created_at.is_some() && done.completed_at.is_some());
    assert_eq!(
        (done.credits_charged, done.credits_refunded),
        (5, 2),
        "invalid entries are refunded"
    );

    let balance = client
        .get_balance(pb::GetBalanceRequest {
            api_key: key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        balance.credits, 97,
        "one credit per unique entry, invalid ones given back"
    );
}

#[tokio::test]
async fn poll_shows_progress_with_counters_that_add_up() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(150);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let numbers = us_numbers(0, 300);
    let sub = submit(&mut client, &key, &numbers).await;
    let mut saw_partial = false;
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        let p = poll(&mut client, &key, &sub.batch_id).await;
        assert_eq!(p.completed + p.failed + p.pending, p.total_numbers);
        let pending_rows = p
            .results
            .iter()
            .filter(|r| r.status == NumberStatus::Pending as i32)
            .count() as i32;
        assert_eq!(pending_rows, p.pending);
        assert_eq!(p.results.len(), 300);
        if p.pending > 0 {
            assert_eq!(p.status, BatchStatus::Processing as i32);
            assert!(p.completed_at.is_none());
            saw_partial |= p.completed > 0;
        } else {
            assert_eq!(p.status, BatchStatus::Completed as i32);
            assert!(p.completed_at.is_some());
            break;
        }
        assert!(std::time::Instant::now() < end, "did not complete");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(saw_partial, "progress should be visible call by call");
}

#[tokio::test]
async fn an_all_invalid_batch_is_complete_at_once() {
    let app = spawn_app().await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = client
        .submit_batch(submit_request(&key, &["abc", "12", "abc"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sub.total_numbers, 2);
    assert_eq!(sub.status, BatchStatus::Completed as i32);
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!((p.completed, p.failed, p.pending), (2, 0, 0));
}

fn bad_request_field(status: &tonic::Status) -> String {
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest detail");
    bad.field_violations[0].field.clone()
}

#[tokio::test]
async fn bad_input_is_invalid_argument_and_changes_nothing() {
    let app = spawn_app().await;
    let (_, key) = app.account(2000).await;
    let mut client = app.client().await;

    let empty = client
        .submit_batch(submit_request(&key, &[]))
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&empty), "phone_numbers");

    let too_many = us_numbers(0, 1001);
    let err = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: too_many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "phone_numbers");
    assert!(err.message().contains("1001"), "{}", err.message());

    // 1,000 entries is allowed, even when they are all duplicates.
    let thousand: Vec<String> = std::iter::repeat_n("+14155552671".to_string(), 1000).collect();
    let ok = submit(&mut client, &key, &thousand).await;
    assert_eq!(ok.total_numbers, 1);

    let mut req = submit_request(&key, &["+14155552671"]);
    req.default_region = "XX".into();
    let err = client.submit_batch(req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(bad_request_field(&err), "default_region");

    let err = client
        .poll_batch(pb::PollBatchRequest {
            api_key: key.clone(),
            batch_id: "not-a-uuid".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.clone(),
            batch_id: "42".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let balance = client
        .get_balance(pb::GetBalanceRequest {
            api_key: key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balance.credits, 1999, "only the valid batch was charged");
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(batches, 1);
}

#[tokio::test]
async fn other_accounts_batches_are_not_found() {
    let app = spawn_app().await;
    let (_, alice) = app.account(10).await;
    let (_, bob) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &alice, &us_numbers(0, 2)).await;

    let theirs = client
        .poll_batch(pb::PollBatchRequest {
            api_key: bob.clone(),
            batch_id: sub.batch_id.clone(),
        })
        .await
        .unwrap_err();
    let missing = client
        .poll_batch(pb::PollBatchRequest {
            api_key: bob.clone(),
            batch_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        theirs.message(),
        missing.message(),
        "no hint that the batch exists"
    );

    let watch = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: bob,
            batch_id: sub.batch_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(watch.code(), Code::NotFound);
    // The owner still sees it.
    poll(&mut client, &alice, &sub.batch_id).await;
}
