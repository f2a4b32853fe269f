//! Gateway backends against fake WAHA and Evolution API servers: answers,
//! failure modes, pacing, the result cache and country variants.
use std::time::{Duration, Instant};

use wavalidate::domain::checker::AccountStatus;
use wavalidate::pb::{BatchStatus, NumberStatus};
use wavalidate_test_support::fakes::{self, Mode};
use wavalidate_test_support::*;

const ON: i32 = NumberStatus::OnWhatsapp as i32;
const NOT: i32 = NumberStatus::NotOnWhatsapp as i32;
const INVALID: i32 = NumberStatus::InvalidNumber as i32;
const ERROR: i32 = NumberStatus::Error as i32;

#[tokio::test]
async fn waha_answers_become_results_and_invalid_numbers_are_never_sent() {
    let gw = fakes::waha(&["+14155552671", "+442079460958"], "secret", "default").await;
    let app = spawn_gateway_app(&gw, "waha", |_| {}).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let numbers = [
        "+14155552671",
        "+44 20 7946 0958",
        "+91 98765 43210",
        "junk",
    ]
    .map(String::from);
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(statuses(&done), [ON, ON, NOT, INVALID]);
    assert_eq!(done.results[0].wa_id, "14155552671");
    assert!(!done.results[0].from_cache);
    assert_eq!(
        gw.state.numbers_asked(),
        3,
        "the invalid entry never reaches the gateway"
    );
}

#[tokio::test]
async fn a_rejected_gateway_key_keeps_numbers_waiting_never_not_on_whatsapp() {
    let gw = fakes::waha(&["+14155552671"], "secret", "default").await;
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.checker.waha.api_key = Some(Secret::new("wrong".to_string()));
    })
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(
        &mut client,
        &key,
        &["+14155552671".into(), "+14155550100".into()],
    )
    .await;
    // The account is refused: its settings are the operator's to fix, so it stops (one
    // request, not one per number) and the numbers wait, uncounted.
    wait_until("the flags' account to fail on its settings", || async {
        account_status(&app.store, "flags:waha").await.status == AccountStatus::Failing
    })
    .await;
    let row = account_status(&app.store, "flags:waha").await;
    assert!(
        row.status_reason
            .as_deref()
            .unwrap_or("")
            .contains("API key"),
        "the reason says what to fix: {row:?}"
    );
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(
        p.pending, 2,
        "never ERROR nor 'not on WhatsApp' for the account's fault"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempts FROM batch_numbers")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, [0]);
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        8,
        "charged once, up front"
    );
}

#[tokio::test]
async fn waha_recovers_from_500s_rate_limits_and_timeouts() {
    let gw = fakes::waha(&["+14155552671"], "secret", "default").await;
    gw.state.script([
        Mode::ServerError,
        Mode::RateLimited(None),
        Mode::Hang(Duration::from_secs(3)),
        Mode::RateLimited(None),
    ]);
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.checker.http_timeout = ms(300);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(
        &mut client,
        &key,
        &["+14155552671".into(), "+14155550100".into()],
    )
    .await;
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON, NOT]);
    assert!(
        gw.state.calls().len() >= 6,
        "every scripted failure was met"
    );
    // None of it is the numbers' fault: rate limits and a timeout are the account's, and
    // the 500 was met by one number before its account answered any other (then asked
    // again, it was answered). Only the final check counts as an attempt.
    let attempts: i32 = sqlx::query_scalar("SELECT max(attempts) FROM batch_numbers")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 1);
}

#[tokio::test]
async fn gateway_backends_refuse_to_start_without_their_settings() {
    let db = fresh_database().await;
    let url = db.url.clone();
    let waha = |s: &mut Settings| s.checker.backend = CheckerKind::Waha;
    let evolution = |s: &mut Settings| {
        s.checker.backend = CheckerKind::Evolution;
        s.checker.evolution.url = Some("http://127.0.0.1:9".into());
    };
    type Edit = Box<dyn Fn(&mut Settings)>;
    let cases: [(&str, Edit, &str); 4] = [
        ("waha without a URL", Box::new(waha), "WAV_WAHA_URL"),
        (
            "waha with an ftp URL",
            Box::new(move |s| {
                waha(s);
                s.checker.waha.url = Some("ftp://x".into());
            }),
            "http",
        ),
        (
            "evolution without an instance",
            Box::new(evolution),
            "WAV_EVOLUTION_INSTANCE",
        ),
        (
            "evolution without a key",
            Box::new(move |s| {
                evolution(s);
                s.checker.evolution.instance = Some("main".into());
            }),
            "WAV_EVOLUTION_API_KEY",
        ),
    ];
    for (what, edit, needs) in cases {
        let mut settings = test_settings(&url);
        edit(&mut settings);
        let err = match wavalidate::app::start(settings).await {
            Ok(_) => panic!("{what}: started"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(needs), "{what}: {err}");
    }
}

#[tokio::test]
async fn evolution_checks_many_numbers_per_call_and_survives_empty_and_partial_answers() {
    let gw = fakes::evolution(&["+14155552671", "+442079460958"], "secret", "main").await;
    gw.state.script([
        Mode::Empty,
        Mode::MissingRows(vec!["442079460958".into()]),
        Mode::ServerError,
    ]);
    let app = spawn_gateway_app(&gw, "evolution", |s| {
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let numbers = ["+14155552671", "+442079460958", "+919876543210"].map(String::from);
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(
        statuses(&done),
        [ON, ON, NOT],
        "no failure mode turned into 'not on WhatsApp'"
    );
    assert_eq!(
        gw.state.calls()[0].1.len(),
        3,
        "one call carries the whole chunk"
    );
}

#[tokio::test]
async fn a_number_the_gateway_always_leaves_out_ends_in_error_and_is_refunded() {
    let gw = fakes::evolution(&["+14155552671", "+442079460958"], "secret", "main").await;
    gw.state
        .set_default(Mode::MissingRows(vec!["442079460958".into()]));
    let app = spawn_gateway_app(&gw, "evolution", |_| {}).await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(
        &mut client,
        &key,
        &["+14155552671".into(), "+442079460958".into()],
    )
    .await;
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON, ERROR]);
    // Alone in its request, the answer is an empty list: the request failed.
    assert_eq!(
        done.results[1].error,
        "the checking service failed (gave up after 5 attempts)"
    );
    assert_eq!((done.credits_charged, done.credits_refunded), (2, 1));
    assert_eq!(app.store.balance(account).await.unwrap(), 99);
}

#[tokio::test]
async fn the_rate_and_concurrency_limits_bound_upstream_calls() {
    let gw = fakes::waha(&[], "secret", "default").await;
    // WAHA checks one number per request and a call carries up to 10: burst 10, then 20/s.
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.pacing.rate_per_sec = Some(20.0);
        s.pacing.max_concurrency = Some(2);
        s.workers.loops = 4;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 70)).await;
    wait_completed(&mut client, &key, &sub.batch_id).await;
    let times: Vec<Instant> = gw.state.calls().iter().map(|c| c.0).collect();
    assert_eq!(times.len(), 70);
    let busiest = times
        .iter()
        .map(|start| {
            times
                .iter()
                .filter(|t| **t >= *start && **t < *start + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        busiest <= 10 + 20 + 1,
        "{busiest} requests within one second"
    );
    assert!(
        gw.state.max_in_flight() <= 2,
        "{} requests at once",
        gw.state.max_in_flight()
    );
}

#[tokio::test]
async fn the_daily_cap_leaves_the_rest_queued_for_tomorrow() {
    let gw = fakes::waha(&[], "secret", "default").await;
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.pacing.daily_cap = Some(7);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 10)).await;
    wait_until("7 answered and the account resting", || async {
        let answered: i64 =
            sqlx::query_scalar("SELECT count(*) FILTER (WHERE state <> 1) FROM batch_numbers")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        answered == 7
            && account_status(&app.store, "flags:waha").await.status == AccountStatus::Resting
    })
    .await;
    assert_eq!(gw.state.numbers_asked(), 7);
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!((p.completed, p.pending), (7, 3));
    let row = account_status(&app.store, "flags:waha").await;
    assert_eq!((row.checks_today, row.cap_today), (7, 7));
    assert_eq!(row.status, AccountStatus::Resting);
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM queue_chunks")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, [0], "a capped number has not been tried");
}

#[tokio::test]
async fn an_open_circuit_backs_off_with_trials_and_keeps_numbers_queued_uncounted() {
    let gw = fakes::waha(&["+14155552671"], "secret", "default").await;
    gw.state.set_default(Mode::ServerError);
    // The default max_attempts: the gateway's failures must cost the numbers nothing.
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.pacing.breaker_failures = 3;
        s.pacing.breaker_cooldown = secs(1);
        s.workers.loops = 2;
    })
    .await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(
        &mut client,
        &key,
        &["+14155552671".into(), "+14155550100".into()],
    )
    .await;
    // Three failures open the circuit; then one trial number after 1 s, and after 2 s more.
    wait_until("the circuit open and two trials failed", || async {
        gw.state.calls().len() >= 5
    })
    .await;
    let mut at: Vec<Instant> = gw.state.calls().iter().map(|c| c.0).collect();
    at.sort();
    let (first, second) = (at[3] - at[2], at[4] - at[3]);
    assert!(
        first >= ms(900),
        "first trial {first:?} after the circuit opened"
    );
    assert!(
        second >= ms(1800),
        "a failed trial doubles the wait: {second:?}"
    );
    let row = account_status(&app.store, "flags:waha").await;
    assert_eq!(row.status, AccountStatus::Failing, "{row:?}");
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(
        p.pending, 2,
        "numbers wait while the circuit is open; they are not failed"
    );
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT DISTINCT attempts FROM batch_numbers")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(
        attempts,
        [0],
        "the gateway's failures cost the numbers nothing"
    );

    gw.state.set_default(Mode::Normal);
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON, NOT]);
    assert_eq!(
        account_status(&app.store, "flags:waha").await.status,
        AccountStatus::Active,
        "an answered trial closes the circuit"
    );
}

#[tokio::test]
async fn cached_answers_save_upstream_calls_unless_forced() {
    let gw = fakes::evolution(&["+12015550003", "+12015550007"], "secret", "main").await;
    let app = spawn_gateway_app(&gw, "evolution", |_| {}).await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let numbers = us_numbers(0, 20);
    let first = submit(&mut client, &key, &numbers).await;
    let first = wait_completed(&mut client, &key, &first.batch_id).await;
    assert_eq!(gw.state.numbers_asked(), 20);

    // Another account: the cache is shared, what it reveals of the first account is not.
    let (_, other) = app.account(1000).await;
    let again = submit(&mut client, &other, &numbers).await;
    assert_eq!(
        again.status,
        BatchStatus::Completed as i32,
        "answered at submission"
    );
    let again = poll(&mut client, &other, &again.batch_id).await;
    assert_eq!(
        gw.state.numbers_asked(),
        20,
        "no upstream call for cached numbers"
    );
    for (a, b) in first.results.iter().zip(&again.results) {
        assert!(b.from_cache && !a.from_cache);
        let original = a.checked_at.unwrap();
        let hour = prost_types::Timestamp {
            seconds: original.seconds - original.seconds.rem_euclid(3600),
            nanos: 0,
        };
        assert_eq!(
            (a.status, &a.wa_id, Some(hour)),
            (b.status, &b.wa_id, b.checked_at),
            "the original checked_at, to the hour: no other account's exact moment"
        );
    }

    let forced = client
        .submit_batch(wavalidate::pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: numbers.clone(),
            force_check: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let forced = wait_completed(&mut client, &key, &forced.batch_id).await;
    assert!(forced.results.iter().all(|r| !r.from_cache));
    assert_eq!(gw.state.numbers_asked(), 40);
}

#[tokio::test]
async fn country_variants_find_the_form_whatsapp_registered() {
    // Registered: a Brazilian mobile without its ninth digit, a Mexican one with the old "1".
    let gw = fakes::evolution(&["+551181234567", "+5215512345678"], "secret", "main").await;
    let app = spawn_gateway_app(&gw, "evolution", |_| {}).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let numbers = [
        "+55 11 98123-4567",
        "+52 1 55 1234 5678",
        "+55 21 9876-5432",
        "+1 415 555 2671",
    ]
    .map(String::from);
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(statuses(&done), [ON, ON, NOT, NOT]);
    let r = &done.results;
    assert_eq!(
        (r[0].e164.as_str(), r[0].wa_id.as_str()),
        ("+5511981234567", "551181234567")
    );
    assert_eq!(
        (r[1].e164.as_str(), r[1].wa_id.as_str()),
        ("+525512345678", "5215512345678")
    );
    assert!(r[1].normalization_note.contains("Mexico"), "{:?}", r[1]);
    assert_eq!(r[2].e164, "+5521998765432");
    assert!(
        r[2].normalization_note.contains("ninth digit"),
        "{:?}",
        r[2]
    );
    // The US number has no other form: asked once.
    let asked: Vec<String> = gw.state.calls().into_iter().flat_map(|c| c.1).collect();
    assert_eq!(
        asked.iter().filter(|n| n.as_str() == "14155552671").count(),
        1
    );
}

/// A Brazilian number whose main form is not on WhatsApp while its other form cannot be
/// asked (the only account is at its cap): the number waits, and when the cap is raised
/// only the missing form is asked. The main form's answer was kept: each form asked once.
#[tokio::test]
async fn a_number_whose_other_form_waits_is_not_asked_its_main_form_again() {
    let gw = fakes::waha(&["+551187654321"], "secret", "default").await;
    let app = spawn_app_with(use_pool).await;
    add_account(&app.store, "wa-1", &gw, "waha", 50.0, |p| {
        p.daily_cap = Some(1)
    })
    .await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &["+5511987654321".to_string()]).await;
    // The main form took the cap; the other form was deferred and the number is back in
    // the queue (its chunk no longer leased).
    wait_until(
        "the main form asked and the number back in the queue",
        || async {
            let released: bool = sqlx::query_scalar(
                "SELECT coalesce(bool_and(lease_token IS NULL), false) FROM queue_chunks",
            )
            .fetch_one(app.store.pool())
            .await
            .unwrap();
            gw.state.asked_counts().get("5511987654321") == Some(&1) && released
        },
    )
    .await;
    assert_eq!(gw.state.asked_counts().get("551187654321"), None);
    let raise = wavalidate::domain::checker::PacingChange {
        daily_cap: Some(10),
        ..Default::default()
    };
    assert!(app.store.update_pacing("wa-1", &raise).await.unwrap());
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON]);
    assert_eq!(done.results[0].wa_id, "551187654321");
    let asked = gw.state.asked_counts();
    assert_eq!(
        (asked.get("5511987654321"), asked.get("551187654321")),
        (Some(&1), Some(&1)),
        "each form asked once: {asked:?}"
    );
    let row = account_status(&app.store, "wa-1").await;
    assert_eq!(row.checks_today, 2, "two checks of the cap for one number");
    let kept: i64 = sqlx::query_scalar("SELECT count(*) FROM number_cache WHERE backend <> 'pool'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(kept, 0, "the main form's memory is forgotten once answered");
}

/// One number that makes the gateway answer 500, among four that do not.
async fn one_bad_number_among_five(kind: &str) {
    let gw = match kind {
        "waha" => fakes::waha(&["+14155552671"], "secret", "default").await,
        _ => fakes::evolution(&["+14155552671"], "secret", "main").await,
    };
    gw.state.poison("+14155550102");
    let app = spawn_gateway_app(&gw, kind, |_| {}).await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let numbers = [
        "+14155552671",
        "+14155550100",
        "+14155550102",
        "+14155550103",
        "+14155550104",
    ]
    .map(String::from);
    let sub = submit(&mut client, &key, &numbers).await;
    // With one account a number is at fault only once the account answered other numbers
    // after its failure: more work makes sure it does, wherever the bad one came in the
    // first batch (last, nothing was answered after it).
    wait_until("the bad number asked", || async {
        gw.state.asked_counts().contains_key("14155550102")
    })
    .await;
    let more = submit_and_wait(&mut client, &key, &["+14155550105".to_string()]).await;
    assert_eq!(statuses(&more), [NOT]);
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON, NOT, ERROR, NOT, NOT], "{kind}");
    assert_eq!(
        done.results[2].error, "the checking service failed (gave up after 5 attempts)",
        "{kind}"
    );
    let asked = gw.state.asked_counts();
    for n in ["14155552671", "14155550100", "14155550103", "14155550104"] {
        assert!(
            asked.get(n).copied().unwrap_or(0) >= 1,
            "{kind}: {n} was asked"
        );
    }
    assert_eq!((done.failed, done.credits_refunded), (1, 1));
    assert_eq!(app.store.balance(account).await.unwrap(), 10 - 5);
}

#[tokio::test]
async fn one_bad_number_fails_alone_with_waha() {
    one_bad_number_among_five("waha").await;
}

#[tokio::test]
async fn one_bad_number_is_split_out_of_an_evolution_request() {
    one_bad_number_among_five("evolution").await;
}

/// A number's `error` is in our words, the same for every tenant: never the gateway's
/// URL, port or session, nor what its engine said (internal hosts, connection strings),
/// which go to the operator's log, without the number or the password.
#[tokio::test]
async fn customers_read_our_words_and_only_the_operators_log_reads_the_gateways() {
    let gw = fakes::waha(&["+14155552671"], "gw-secret", "ops-session-7").await;
    let bad = "+14155550102";
    gw.state.poison(bad);
    gw.state.set_poison_message(
        "engine crashed on gw-7.internal.corp: cannot reach postgres://waha:hunter2@db.internal:5432/waha",
    );
    let db = fresh_database().await;
    let (_, key) = db.store.create_account("words", 10).await.unwrap();
    let key = key.expose().to_string();
    let waha_url = format!("http://{}", gw.addr);
    let args = [
        "--checker",
        "waha",
        "--waha-url",
        &waha_url,
        "--waha-session",
        "ops-session-7",
        "--waha-api-key",
        "gw-secret",
        "--max-attempts",
        "2",
        "--retry-base-ms",
        "10",
        "--retry-max-ms",
        "20",
    ];
    let mut server = spawn_process(&db.url, &args, &[("RUST_LOG", "info")]).await;
    let mut client = connect(server.addr).await;
    let numbers = ["+14155552671", bad, "+14155550103"].map(String::from);
    let sub = submit(&mut client, &key, &numbers).await;
    // A number is at fault once its account answered others after its failure.
    wait_until("the bad number asked", || async {
        gw.state.asked_counts().get(&bad[1..]).copied().unwrap_or(0) >= 1
    })
    .await;
    submit_and_wait(&mut client, &key, &["+14155550105".to_string()]).await;
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON, ERROR, NOT]);
    assert_eq!(
        done.results[1].error,
        "the checking service failed (gave up after 2 attempts)"
    );
    let port = gw.addr.port().to_string();
    for leak in ["internal", "hunter2", "ops-session-7", &port, "WAHA", "500"] {
        assert!(
            !done.results[1].error.contains(leak),
            "{leak} shown to the customer"
        );
    }
    server.terminate().await;
    let logs = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        logs.contains("gw-7.internal.corp") && logs.contains("postgres://***@db.internal"),
        "the engine's words reach the operator's log:\n{logs}"
    );
    assert!(!logs.contains("hunter2"), "a password in the log");
    assert!(!logs.contains(&bad[1..]), "the number in the log");
}
