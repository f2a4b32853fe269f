//! Gateway backends against fake WAHA and Evolution API servers: answers,
//! failure modes, pacing, the result cache and country variants.
use std::time::{Duration, Instant};

use wavalidate::pb::{BatchStatus, NumberStatus};
use wavalidate_test_support::fakes::{self, Mode};
use wavalidate_test_support::*;

fn statuses(p: &wavalidate::pb::PollBatchResponse) -> Vec<i32> {
    p.results.iter().map(|r| r.status).collect()
}

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
async fn a_rejected_gateway_key_ends_in_error_never_in_not_on_whatsapp() {
    let gw = fakes::waha(&["+14155552671"], "secret", "default").await;
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.checker.waha.api_key = Some(Secret::new("wrong".to_string()));
        s.workers.max_attempts = 2;
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
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ERROR, ERROR]);
    assert!(
        done.results[0].error.contains("HTTP 401"),
        "{}",
        done.results[0].error
    );
    assert!(
        done.results[0].error.contains("API key"),
        "the message says what to fix"
    );
    assert_eq!((done.failed, done.credits_refunded), (2, 2));
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        10,
        "nothing charged for what was not answered"
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
        s.workers.max_attempts = 4;
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
    // Rate limits are not the numbers' fault, nor is a 500 no neighbour was answered beside
    // (the other number's request met the rate limit): only the timeout (one backend, so
    // its trouble counts) and the final check count as attempts.
    let attempts: i32 = sqlx::query_scalar("SELECT max(attempts) FROM batch_numbers")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, 2);
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
        s.workers.max_attempts = 5;
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
    let app = spawn_gateway_app(&gw, "evolution", |s| {
        s.workers.max_attempts = 2;
    })
    .await;
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
    assert!(
        done.results[1].error.contains("no row"),
        "{}",
        done.results[1].error
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
    wait_until("7 answered and 3 deferred to tomorrow", || async {
        let (answered, deferred): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE n.state <> 1),
                    count(*) FILTER (WHERE n.state = 1 AND q.available_at > now() + interval '10 minutes'
                                     AND q.lease_token IS NULL)
             FROM batch_numbers n
             LEFT JOIN queue_chunks q ON q.batch_id = n.batch_id AND n.idx BETWEEN q.first_idx AND q.last_idx",
        )
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        answered == 7 && deferred == 3
    })
    .await;
    assert_eq!(gw.state.numbers_asked(), 7);
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!((p.completed, p.pending), (7, 3));
    let used: i64 = sqlx::query_scalar("SELECT used FROM checker_usage WHERE backend = 'waha'")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(used, 7);
    let attempts: Vec<i32> = sqlx::query_scalar("SELECT attempts FROM queue_chunks")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(attempts, [0], "a capped number has not been tried");
}

#[tokio::test]
async fn an_open_circuit_pauses_the_backend_and_keeps_numbers_queued() {
    let gw = fakes::waha(&["+14155552671"], "secret", "default").await;
    gw.state.set_default(Mode::ServerError);
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.pacing.breaker_failures = 3;
        s.pacing.breaker_cooldown = secs(1);
        s.workers.max_attempts = 100;
        s.workers.loops = 2;
    })
    .await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let started = Instant::now();
    let sub = submit(
        &mut client,
        &key,
        &["+14155552671".into(), "+14155550100".into()],
    )
    .await;
    wait_until("a few trial calls after the circuit opened", || async {
        gw.state.calls().len() >= 6
    })
    .await;
    // Without the breaker, retries 10-50 ms apart would make dozens of calls per second.
    // Each call asks both numbers before it gives up on the gateway (one number's 500 may be
    // that number's own): two requests a call.
    let calls = gw.state.calls().len() as f64;
    let allowed = 2.0 * (3.0 + 2.0 * (started.elapsed().as_secs_f64() / 1.0 + 1.0));
    assert!(calls <= allowed, "{calls} calls in {:?}", started.elapsed());
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(
        p.pending, 2,
        "numbers wait while the circuit is open; they are not failed"
    );

    gw.state.set_default(Mode::Normal);
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [ON, NOT]);
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

    let again = submit(&mut client, &key, &numbers).await;
    assert_eq!(
        again.status,
        BatchStatus::Completed as i32,
        "answered at submission"
    );
    let again = poll(&mut client, &key, &again.batch_id).await;
    assert_eq!(
        gw.state.numbers_asked(),
        20,
        "no upstream call for cached numbers"
    );
    for (a, b) in first.results.iter().zip(&again.results) {
        assert!(b.from_cache && !a.from_cache);
        assert_eq!(
            (a.status, &a.wa_id, &a.checked_at),
            (b.status, &b.wa_id, &b.checked_at),
            "original checked_at kept"
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

/// One number that makes the gateway answer 500, among four that do not.
async fn one_bad_number_among_five(kind: &str) {
    let gw = match kind {
        "waha" => fakes::waha(&["+14155552671"], "secret", "default").await,
        _ => fakes::evolution(&["+14155552671"], "secret", "main").await,
    };
    gw.state.poison("+14155550102");
    let app = spawn_gateway_app(&gw, kind, |s| s.workers.max_attempts = 3).await;
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
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(statuses(&done), [ON, NOT, ERROR, NOT, NOT], "{kind}");
    assert!(
        done.results[2].error.contains("500"),
        "{kind}: {}",
        done.results[2].error
    );
    assert!(done.results[2].error.contains("gave up after 3 attempts"));
    let asked = gw.state.asked_counts();
    for n in ["14155552671", "14155550100", "14155550103", "14155550104"] {
        assert!(
            asked.get(n).copied().unwrap_or(0) >= 1,
            "{kind}: {n} was asked"
        );
    }
    assert_eq!((done.failed, done.credits_refunded), (1, 1));
    assert_eq!(app.store.balance(account).await.unwrap(), 10 - 4);
}

#[tokio::test]
async fn one_bad_number_fails_alone_with_waha() {
    one_bad_number_among_five("waha").await;
}

#[tokio::test]
async fn one_bad_number_is_split_out_of_an_evolution_request() {
    one_bad_number_among_five("evolution").await;
}
