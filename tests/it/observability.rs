//! Prometheus metrics on /metrics, and JSON logs.
use wavalidate::pb;
use wavalidate_test_support::*;

#[tokio::test]
async fn metrics_move_with_requests_work_and_watchers() {
    // Each server in a process of its own: the recorder is global to a process, and the
    // figures below are this server's alone.
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let api = spawn_process(&url, &["--role", "api"], &[]).await;
    let (_, key) = store.create_account("metrics", 100).await.unwrap();
    let key = key.expose().to_string();
    let mut client = connect(api.addr).await;
    let sub = submit(
        &mut client,
        &key,
        &["+14155552671".into(), "+14155550100".into(), "junk".into()],
    )
    .await;
    let _ = client
        .get_balance(pb::GetBalanceRequest {
            api_key: "wav_nope".into(),
        })
        .await;
    let mut watch = open_watch(&mut client, &key, &sub.batch_id).await;
    watch.message().await.unwrap();

    let page = metrics_page(api.addr).await;
    let value = |name: &str, labels: &[&str]| metric(&page, name, labels);
    assert_eq!(value("wav_numbers_submitted_total", &[]), 3.0);
    assert_eq!(value("wav_credits_charged_total", &[]), 3.0);
    assert_eq!(
        value("wav_credits_refunded_total", &["reason=\"invalid\""]),
        1.0
    );
    assert_eq!(
        value("wav_requests_total", &["op=\"submit\"", "outcome=\"ok\""]),
        1.0
    );
    assert_eq!(
        value(
            "wav_requests_total",
            &["op=\"authenticate\"", "outcome=\"unauthenticated\""]
        ),
        1.0
    );
    assert_eq!(
        value("wav_request_duration_seconds_count", &["op=\"submit\""]),
        1.0
    );
    assert_eq!(value("wav_watchers", &[]), 1.0);
    // No workers in this process: the two valid numbers are still queued.
    assert_eq!(value("wav_queue_depth", &[]), 2.0);
    assert!(page.contains("wav_queue_oldest_seconds"));

    // Workers elsewhere check them; their counters move in that process.
    let worker = spawn_process(&url, &["--role", "worker"], &[]).await;
    wait_completed(&mut client, &key, &sub.batch_id).await;
    let page = metrics_page(worker.addr).await;
    assert_eq!(
        metric(&page, "wav_numbers_checked_total", &[]),
        2.0,
        "{page}"
    );
    assert_eq!(
        metric(
            &page,
            "wav_upstream_calls_total",
            &["backend=\"simulated\"", "result=\"ok\""]
        ),
        1.0
    );
    assert_eq!(metric(&page, "wav_upstream_call_seconds_count", &[]), 1.0);
    assert_eq!(metric(&page, "wav_queue_depth", &[]), 0.0);
}

#[tokio::test]
async fn json_logs_on_request() {
    let db = fresh_database().await;
    let url = db.url.clone();
    let mut server = spawn_process(&url, &[], &[("WAV_LOG_FORMAT", "json")]).await;
    let _ = connect(server.addr).await;
    server.terminate().await;
    let logs = std::fs::read_to_string(&server.log).unwrap();
    let lines: Vec<&str> = logs.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
}
