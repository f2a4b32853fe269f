//! `wavalidate bench`, as the README runs it: its own server on its own database,
//! one JSON line of figures beside the floor, and nothing left behind.
use std::time::Duration;

use wavalidate_test_support::*;

async fn bench_databases() -> i64 {
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname LIKE 'wavbench_%'")
        .fetch_one(&admin)
        .await
        .unwrap();
    admin.close().await;
    n
}

#[tokio::test]
async fn bench_prints_its_figures_beside_the_floor_and_drops_its_database() {
    // The floor is the shared pgbench script; a stand-in with known figures lets the ratios be checked.
    let floor =
        std::env::temp_dir().join(format!("wav_floor_{}.sh", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &floor,
        "#!/bin/sh\necho '{\"ingest_rows_per_s\":100000,\"work_rows_per_s\":50000,\"pipeline_rows_per_s\":40000}'\n",
    )
    .unwrap();
    let before = bench_databases().await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"))
        .args([
            "bench",
            "--submits",
            "3",
            "--ingest-batches",
            "2",
            "--batches",
            "2",
        ])
        .args([
            "--watchers",
            "6",
            "--submitters",
            "2",
            "--ingest-accounts",
            "2",
            "--workers",
            "2",
            "--backlog",
            "50000",
            "--held-watchers",
            "3",
        ])
        .arg("--floor-script")
        .arg(&floor)
        .env("DATABASE_URL", admin_url())
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("bench finishes")
        .unwrap();
    std::fs::remove_file(&floor).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("a JSON line");
    let report: serde_json::Value = serde_json::from_str(line).expect("the last line is JSON");

    let figure = |name: &str| {
        report[name]
            .as_f64()
            .unwrap_or_else(|| panic!("{name} in {report}"))
    };
    for name in [
        "submit_p50_ms",
        "submit_p99_ms",
        "ingest_numbers_per_s",
        "e2e_numbers_per_s",
    ] {
        assert!(figure(name) > 0.0, "{name} in {report}");
    }
    assert!(figure("submit_p50_ms") <= figure("submit_p99_ms"));
    assert_eq!(report["watchers"], 6);
    assert_eq!(report["settings"]["streams_per_batch"], 3);
    // Counted as streams open and close: at least one was open, never more than were opened.
    assert!((1.0..=6.0).contains(&figure("peak_watchers")), "{report}");
    assert!(figure("delivery_samples") >= 0.0 && figure("server_rss_mb") > 0.0);
    let ratio = |ours: f64, floor: f64| (ours / floor * 100.0).round() / 100.0;
    assert_eq!(
        figure("ingest_ratio"),
        ratio(figure("ingest_numbers_per_s"), 100_000.0)
    );
    assert_eq!(
        figure("e2e_ratio"),
        ratio(figure("e2e_numbers_per_s"), 40_000.0)
    );
    assert_eq!(report["settings"]["submits"], 3);
    assert_eq!(report["settings"]["ingest_accounts"], 2);
    // Submits were timed on an API-only server, like the floor's ingest phase.
    assert_eq!(report["settings"]["numbers_checked_during_submits"], 0);
    // Three batches queued before the workers start, one stream held on each to the end.
    let held = &report["held_watchers"];
    assert_eq!(held["streams"], 3, "{held}");
    assert!(
        (1..=3).contains(&held["peak_watchers"].as_u64().unwrap_or(0)),
        "{held}"
    );
    assert!(
        held["numbers_per_s"].as_f64().is_some_and(|v| v > 0.0),
        "{held}"
    );
    let backlog = &report["backlog"];
    assert_eq!(backlog["backlog_numbers"], 50000);
    for name in [
        "backlog_ratio",
        "after_drain_ratio",
        "drain_numbers_per_s_backlog",
    ] {
        assert!(
            backlog[name].as_f64().is_some_and(|v| v > 0.0),
            "{name} in {backlog}"
        );
    }
    assert_eq!(
        bench_databases().await,
        before,
        "the bench dropped its own database"
    );
}
