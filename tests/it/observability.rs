//! Prometheus metrics on /metrics, and JSON logs.
use crate::helpers::*;
use wavalidate::pb;

#[tokio::test]
async fn metrics_move_with_requests_work_and_watchers() {
    let app = spawn_app_with(&["--role", "api"]).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let before = metrics_page(app.addr).await;
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
    wait_until("the watch to be counted", || async {
        app.active_watches() == 1
    })
    .await;

    let during = metrics_page(app.addr).await;
    let grew =
        |name: &str, labels: &[&str]| metric(&during, name, labels) - metric(&before, name, labels);
    assert!(grew("wav_numbers_submitted_total", &[]) >= 3.0);
    assert!(grew("wav_credits_charged_total", &[]) >= 3.0);
    assert!(grew("wav_credits_refunded_total", &["reason=\"invalid\""]) >= 1.0);
    assert!(grew("wav_requests_total", &["op=\"submit\"", "outcome=\"ok\""]) >= 1.0);
    assert!(
        grew(
            "wav_requests_total",
            &["op=\"authenticate\"", "outcome=\"unauthenticated\""]
        ) >= 1.0
    );
    assert!(
        metric(
            &during,
            "wav_request_duration_seconds_count",
            &["op=\"submit\""]
        ) >= 1.0
    );
    assert!(metric(&during, "wav_watchers", &[]) >= 1.0);
    // No workers in this process: the two valid numbers are still queued.
    assert_eq!(metric(&during, "wav_queue_depth", &[]), 2.0);
    assert!(during.contains("wav_queue_oldest_seconds"));

    // Workers elsewhere check them; their counters move in that process.
    let worker = spawn_process(&app_url(&app).await, &["--role", "worker"], &[]).await;
    wait_completed(&mut client, &key, &sub.batch_id).await;
    let page = metrics_page(worker.addr).await;
    assert!(
        metric(&page, "wav_numbers_checked_total", &[]) >= 2.0,
        "{page}"
    );
    assert!(
        metric(
            &page,
            "wav_upstream_calls_total",
            &["backend=\"simulated\"", "result=\"ok\""]
        ) >= 1.0
    );
    assert!(metric(&page, "wav_upstream_call_seconds_count", &[]) >= 1.0);
    assert_eq!(metric(&page, "wav_queue_depth", &[]), 0.0);
}

/// The test database's URL, read back from the server's own connection.
async fn app_url(app: &TestApp) -> String {
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    let base = admin_url();
    let (head, _) = base.rsplit_once('/').unwrap();
    format!("{head}/{db}")
}

#[tokio::test]
async fn json_logs_on_request() {
    let (url, _) = fresh_database().await;
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
