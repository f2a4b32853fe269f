//! `--checker pool`: checks spread over checking accounts kept in PostgreSQL, each paced
//! on its own; an account's trouble (logged out, throttled, failing) moves its numbers to
//! the others at no cost; caps hold across replicas; accounts come and go while serving.
use std::collections::HashMap;

use futures::StreamExt;

use wavalidate::domain::checker::AccountStatus;
use wavalidate::pb::{self, NumberStatus};
use wavalidate_test_support::fakes::{self, Gateway, Mode};
use wavalidate_test_support::*;

const ERROR: i32 = NumberStatus::Error as i32;

/// Numbers asked, per fake gateway, and how often each number was asked over all of them.
fn asked(gateways: &[&Gateway]) -> (Vec<usize>, HashMap<String, usize>) {
    let mut per_number = HashMap::new();
    let per_gateway = gateways
        .iter()
        .map(|g| {
            let counts = g.state.asked_counts();
            for (n, c) in &counts {
                *per_number.entry(n.clone()).or_insert(0) += c;
            }
            counts.values().sum()
        })
        .collect();
    (per_gateway, per_number)
}

#[tokio::test]
async fn checks_spread_over_accounts_in_proportion_to_their_rates() {
    let numbers = us_numbers(0, 140);
    let on = registered(&numbers);
    let (a, b, c) = (
        fakes::waha(&on, "secret", "default").await,
        fakes::waha(&on, "secret", "default").await,
        fakes::evolution(&on, "secret", "main").await,
    );
    let db = fresh_database().await;
    add_account(&db.store, "slow", &a, "waha", 5.0, |_| {}).await;
    add_account(&db.store, "medium", &b, "waha", 10.0, |_| {}).await;
    add_account(&db.store, "fast", &c, "evolution", 20.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (account, key) = app.account(1000).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        expected(&numbers)
    );
    let (per_gateway, per_number) = asked(&[&a, &b, &c]);
    assert!(
        per_number.values().all(|&n| n == 1),
        "each number asked once"
    );
    // 5 : 10 : 20 of 140 is 20 : 40 : 80.
    for (got, want) in per_gateway.iter().zip([20.0, 40.0, 80.0]) {
        assert!(
            (*got as f64 - want).abs() <= want * 0.4,
            "checks per account {per_gateway:?}, not in proportion to 5:10:20"
        );
    }
    assert_eq!(app.store.balance(account).await.unwrap(), 1000 - 140);
    let total: i64 = ["slow", "medium", "fast"]
        .iter()
        .map(|n| async { account_status(&app.store, n).await.checks_total })
        .collect::<futures::stream::FuturesUnordered<_>>()
        .fold(0, |sum, n| async move { sum + n })
        .await;
    assert_eq!(
        total, 140,
        "every check counted against the account that made it"
    );
}

#[tokio::test]
async fn an_account_keeps_its_pace_across_replicas_one_request_at_a_time() {
    let numbers = us_numbers(0, 20);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    let db = fresh_database().await;
    add_account(&db.store, "paced", &gw, "waha", 10.0, |_| {}).await;
    // Two replicas share the one account: its rate lives in PostgreSQL, not in either.
    let one = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let two = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = one.account(100).await;
    let (mut a, mut b) = (one.client().await, two.client().await);
    let first = submit(&mut a, &key, &numbers[..10]).await;
    let second = submit(&mut b, &key, &numbers[10..]).await;
    wait_completed(&mut a, &key, &first.batch_id).await;
    wait_completed(&mut b, &key, &second.batch_id).await;

    let calls = gw.state.calls();
    assert_eq!(calls.len(), 20, "one request a number");
    let mut at: Vec<_> = calls.iter().map(|(t, _)| *t).collect();
    at.sort();
    // 10 checks/s: 20 requests span at least 1.9 s of slots (a little less on arrival,
    // as a send may run late); a burst would put requests a millisecond apart.
    let span = at[19] - at[0];
    assert!(span >= ms(1700), "20 requests in {span:?} at 10/s");
    let closest = at.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        closest >= ms(20),
        "requests {closest:?} apart: a burst, not a pace"
    );
    // Not in the order submitted, forwards or backwards: a run of consecutive numbers
    // looks like scraping. A shuffle of 10 puts about 2 neighbours next to each other;
    // 7 or more happens about once in 10^5 runs.
    let mut calls = calls;
    calls.sort_by_key(|(t, _)| *t);
    let positions: Vec<usize> = calls
        .iter()
        .flat_map(|(_, asked)| asked)
        .filter_map(|n| {
            let n = n.trim_start_matches('+');
            numbers[..10]
                .iter()
                .position(|m| m.trim_start_matches('+') == n)
        })
        .collect();
    let neighbours = positions
        .windows(2)
        .filter(|w| w[0].abs_diff(w[1]) == 1)
        .count();
    assert_eq!(positions.len(), 10);
    assert!(neighbours < 7, "asked in submission order: {positions:?}");
}

#[tokio::test]
async fn an_accounts_trouble_moves_its_numbers_to_the_others_at_no_cost() {
    let all = us_numbers(0, 600);
    let on = registered(&all);
    let numbers = &all[..300];
    // good: answers. lost: an Evolution instance that loses its session mid-batch.
    // throttled: WAHA answering 429 with a one-hour Retry-After. broken: WAHA failing every
    // request with 500.
    let good = fakes::waha(&on, "secret", "default").await;
    let lost = fakes::evolution(&on, "secret", "main").await;
    lost.state.hold_from(1);
    let throttled = fakes::waha(&on, "secret", "default").await;
    throttled.state.set_default(Mode::RateLimited(Some(3600)));
    let broken = fakes::waha(&on, "secret", "default").await;
    broken.state.set_default(Mode::ServerError);
    let db = fresh_database().await;
    add_account(&db.store, "good", &good, "waha", 100.0, |_| {}).await;
    add_account(&db.store, "lost", &lost, "evolution", 100.0, |_| {}).await;
    add_account(&db.store, "throttled", &throttled, "waha", 100.0, |_| {}).await;
    add_account(&db.store, "broken", &broken, "waha", 100.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (account, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, numbers).await;
    // The Evolution instance answers its first request, then its session is lost.
    wait_until("the Evolution account's second request", || async {
        lost.state.held() >= 1
    })
    .await;
    lost.state.set_connected(false);
    lost.state.release();

    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        expected(numbers),
        "no ERROR and no wrong answer: every number went to a working account"
    );
    assert_eq!((done.credits_charged, done.credits_refunded), (300, 0));
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        700,
        "charged once"
    );
    let attempts = attempts_made(&app.store).await;
    assert_eq!(
        attempts,
        [1],
        "the accounts' trouble cost the numbers no attempt"
    );

    let state = |name: &'static str| {
        let store = app.store.clone();
        async move { account_status(&store, name).await }
    };
    let lost_row = state("lost").await;
    assert_eq!(lost_row.status, AccountStatus::LoggedOut, "{lost_row:?}");
    assert!(
        lost_row
            .status_reason
            .unwrap()
            .contains("connection is closed"),
        "the reason says what happened"
    );
    let throttled_row = state("throttled").await;
    assert_eq!(throttled_row.status, AccountStatus::Throttled);
    let wait = throttled_row.status_until.unwrap() - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::minutes(55),
        "the gateway's Retry-After is honoured: {wait}"
    );
    assert_eq!(state("good").await.status, AccountStatus::Active);

    // The broken gateway fails each call it is given; its numbers move on at once, and
    // after a few failed calls in a row its circuit opens and it is given nothing more.
    for chunk in all[300..].chunks(30) {
        if state("broken").await.status == AccountStatus::Failing {
            break;
        }
        let sub = submit(&mut client, &key, chunk).await;
        let done = wait_completed(&mut client, &key, &sub.batch_id).await;
        assert_eq!(
            done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
            expected(chunk)
        );
    }
    let broken = state("broken").await;
    assert_eq!(broken.status, AccountStatus::Failing, "{broken:?}");
    assert!(broken.status_reason.unwrap().contains("500"));

    // The session comes back; once its wait is over the account is probed (its connection
    // state, not a number) and works again by itself.
    lost.state.set_connected(true);
    sqlx::query("UPDATE checkers SET state_until = now(), probe_at = now() WHERE name = 'lost'")
        .execute(app.store.pool())
        .await
        .unwrap();
    wait_until("the lost account to be probed back to active", || async {
        state("lost").await.status == AccountStatus::Active
    })
    .await;
    assert!(lost.state.probes() >= 1);
}

#[tokio::test]
async fn a_gateway_that_breaks_after_working_costs_the_numbers_nothing() {
    let all = us_numbers(0, 300);
    let on = registered(&all);
    let good = fakes::waha(&on, "secret", "default").await;
    let breaks = fakes::waha(&on, "secret", "default").await;
    breaks.state.hold_from(3);
    let db = fresh_database().await;
    add_account(&db.store, "good", &good, "waha", 100.0, |_| {}).await;
    add_account(&db.store, "breaks", &breaks, "waha", 100.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let first = submit(&mut client, &key, &all[..60]).await;
    // Three numbers answered, then the gateway fails every request, its session status too.
    wait_until("the breaking gateway's fourth request", || async {
        breaks.state.held() >= 1
    })
    .await;
    breaks.state.set_default(Mode::ServerError);
    breaks.state.release();
    let done = wait_completed(&mut client, &key, &first.batch_id).await;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        expected(&all[..60])
    );
    // Each claim it is given, it fails at once; after three in a row its circuit opens.
    for chunk in all[60..].chunks(30) {
        if account_status(&app.store, "breaks").await.status == AccountStatus::Failing {
            break;
        }
        let done = submit_and_wait(&mut client, &key, chunk).await;
        assert_eq!(
            done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
            expected(chunk)
        );
    }
    assert_eq!(
        account_status(&app.store, "breaks").await.status,
        AccountStatus::Failing
    );
    let attempts = attempts_made(&app.store).await;
    assert_eq!(
        attempts,
        [1],
        "a failure its session shares is the account's, not the number's"
    );
}

#[tokio::test]
async fn accounts_come_and_go_in_a_running_server_and_numbers_wait_meanwhile() {
    let numbers = us_numbers(0, 20);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    let app = spawn_app_with(use_pool).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;

    // No account yet: the numbers wait, pending, never ERROR nor "not on WhatsApp".
    let first = submit(&mut client, &key, &numbers[..10]).await;
    // Added while the server runs: it takes effect within seconds.
    add_account(&app.store, "late", &gw, "waha", 50.0, |_| {}).await;
    let done = wait_completed(&mut client, &key, &first.batch_id).await;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        expected(&numbers)[..10]
    );

    // Paused: numbers wait again.
    assert!(app.store.set_paused("late", true).await.unwrap());
    wait_until("the pause to reach the server", || async {
        metric(
            &metrics_page(app.addr).await,
            "wav_checker_accounts",
            &["state=\"paused\""],
        ) >= 1.0
    })
    .await;
    let asked_before = gw.state.numbers_asked();
    let second = submit(&mut client, &key, &numbers[10..]).await;
    let p = poll(&mut client, &key, &second.batch_id).await;
    assert_eq!(p.pending, 10);
    assert!(
        p.results
            .iter()
            .all(|r| r.status == NumberStatus::Pending as i32)
    );
    assert_eq!(
        account_status(&app.store, "late").await.status,
        AccountStatus::Paused
    );

    assert!(app.store.set_paused("late", false).await.unwrap());
    let done = wait_completed(&mut client, &key, &second.batch_id).await;
    assert_eq!(done.completed, 10);
    assert_eq!(gw.state.numbers_asked(), asked_before + 10);
}

/// A pool server retrying a number at most 3 times, over two accounts whose gateways
/// both answer 500 for `poison`: "a" on WAHA, "b" on a `second` gateway (waha or evolution).
async fn poisoned_pool(on: &[&str], poison: &str, second: &str) -> (Gateway, Gateway, TestApp) {
    let a = fakes::waha(on, "secret", "default").await;
    let b = match second {
        "waha" => fakes::waha(on, "secret", "default").await,
        _ => fakes::evolution(on, "secret", "main").await,
    };
    for gw in [&a, &b] {
        gw.state.poison(poison);
    }
    let app = spawn_app_with(|s| {
        use_pool(s);
        s.workers.max_attempts = 3;
    })
    .await;
    add_account(&app.store, "a", &a, "waha", 100.0, |_| {}).await;
    add_account(&app.store, "b", &b, second, 100.0, |_| {}).await;
    (a, b, app)
}

#[tokio::test]
async fn a_poison_number_ends_in_error_alone_and_is_refunded_once() {
    let numbers = us_numbers(0, 12);
    let (_, _, app) = poisoned_pool(&registered(&numbers), &numbers[5], "evolution").await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    let mut want = expected(&numbers);
    want[5] = ERROR;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        want
    );
    assert_eq!(
        done.results[5].error,
        "the checking service failed (gave up after 3 attempts)"
    );
    assert_eq!((done.failed, done.credits_refunded), (1, 1));
    assert_eq!(app.store.balance(account).await.unwrap(), 100 - 11);
    let refunds: i64 =
        sqlx::query_scalar("SELECT count(*) FROM credit_ledger WHERE reason = 'refund_error'")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(refunds, 1);
    for name in ["a", "b"] {
        assert_eq!(
            account_status(&app.store, name).await.status,
            AccountStatus::Active,
            "one bad number does not make an account fail"
        );
    }
}

#[tokio::test]
async fn a_poison_number_as_the_first_check_of_new_accounts_is_still_the_numbers() {
    let poison = us_numbers(0, 1);
    let (a, b, app) = poisoned_pool(&[], &poison[0], "waha").await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    // It fails on both accounts, so the failure is the number's; found at fault, its next
    // failures count at once: three attempts in four requests, then ERROR.
    let done = submit_and_wait(&mut client, &key, &poison).await;
    assert_eq!(done.results[0].status, ERROR);
    assert_eq!(done.credits_refunded, 1);
    let (per_gateway, _) = asked(&[&a, &b]);
    assert!(per_gateway.iter().all(|&n| n >= 1), "{per_gateway:?}");
    assert_eq!(per_gateway.iter().sum::<usize>(), 4, "{per_gateway:?}");
    for name in ["a", "b"] {
        assert_eq!(
            account_status(&app.store, name).await.status,
            AccountStatus::Active
        );
    }
}

#[tokio::test]
async fn numbers_no_account_takes_in_time_end_in_error_and_are_refunded() {
    let app = spawn_app_with(|s| {
        use_pool(s);
        s.workers.max_pending = ms(500);
    })
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &us_numbers(0, 3)).await;
    for r in &done.results {
        assert_eq!(r.status, ERROR);
        assert!(
            r.error.contains("no checking account available"),
            "{}",
            r.error
        );
    }
    assert_eq!((done.failed, done.credits_refunded), (3, 3));
    assert_eq!(app.store.balance(account).await.unwrap(), 10);
}

#[tokio::test]
async fn a_daily_cap_is_never_exceeded_even_by_two_replicas() {
    let numbers = us_numbers(0, 60);
    let on = registered(&numbers);
    let (a, b) = (
        fakes::waha(&on, "secret", "default").await,
        fakes::waha(&on, "secret", "default").await,
    );
    let db = fresh_database().await;
    for (name, gw) in [("a", &a), ("b", &b)] {
        add_account(&db.store, name, gw, "waha", 50.0, |p| {
            p.daily_cap = Some(15)
        })
        .await;
    }
    let args = ["--checker", "pool", "--workers", "4"];
    let one = spawn_process(&db.url, &args, &[]).await;
    let two = spawn_process(&db.url, &args, &[]).await;
    let (_, key) = db.store.create_account("caps", 100).await.unwrap();
    let key = key.expose().to_string();
    let mut client = connect(one.addr).await;
    let mut other = connect(two.addr).await;
    let first = submit(&mut client, &key, &numbers[..30]).await;
    let second = submit(&mut other, &key, &numbers[30..]).await;
    wait_until("both accounts to reach their cap", || async {
        let (a, b) = (
            account_status(&db.store, "a").await,
            account_status(&db.store, "b").await,
        );
        a.status == AccountStatus::Resting && b.status == AccountStatus::Resting
    })
    .await;
    let (per_gateway, per_number) = asked(&[&a, &b]);
    assert_eq!(per_gateway, [15, 15], "each account asked exactly its cap");
    assert!(per_number.values().all(|&n| n == 1));
    let pending = poll(&mut client, &key, &first.batch_id).await.pending
        + poll(&mut client, &key, &second.batch_id).await.pending;
    assert_eq!(pending, 30, "the rest wait for tomorrow, pending");
    let row = account_status(&db.store, "a").await;
    assert_eq!((row.checks_today, row.cap_today), (15, 15));
    assert!(row.status_reason.unwrap().contains("daily cap of 15"));
    // Each replica says so on its own /metrics.
    let page = metrics_page(one.addr).await;
    wait_until("the replica's gauge to count both resting", || async {
        metric(
            &metrics_page(one.addr).await,
            "wav_checker_accounts",
            &["state=\"resting\""],
        ) == 2.0
    })
    .await;
    assert!(metric(&page, "wav_checks_total", &[]) <= 30.0);
}

#[tokio::test]
async fn the_checker_commands_manage_accounts_and_refuse_bad_settings_with_one_line() {
    let db = fresh_database().await;
    let run = |args: &[&str]| checker_command(&db.url, args);
    let (ok, out, _) = run(&[
        "add",
        "--name",
        "wa-1",
        "--backend",
        "waha",
        "--url",
        "http://127.0.0.1:3000",
        "--rate-per-sec",
        "0.5",
        "--daily-cap",
        "300",
        "--hours",
        "08:00-20:00",
        "--timezone",
        "Europe/Berlin",
        "--warmup-days",
        "7",
    ]);
    assert!(ok);
    let added: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(added["name"], "wa-1");
    assert!(uuid::Uuid::parse_str(added["checker_id"].as_str().unwrap()).is_ok());

    for (args, flag) in [
        (
            vec![
                "add",
                "--name",
                "wa-1",
                "--backend",
                "waha",
                "--url",
                "http://x",
            ],
            "--name",
        ),
        (
            vec![
                "add",
                "--name",
                "ev",
                "--backend",
                "evolution",
                "--url",
                "http://x",
            ],
            "--instance",
        ),
        (vec!["add", "--name", "ev", "--backend", "waha"], "--url"),
        (
            vec![
                "add",
                "--name",
                "ev",
                "--backend",
                "waha",
                "--url",
                "http://x",
                "--timezone",
                "Mars/Base",
            ],
            "--timezone",
        ),
        (
            vec![
                "add",
                "--name",
                "ev",
                "--backend",
                "waha",
                "--url",
                "http://x",
                "--hours",
                "9-5",
            ],
            "--hours",
        ),
        (
            vec![
                "add",
                "--name",
                "ev",
                "--backend",
                "waha",
                "--url",
                "http://x",
                "--instance",
                "i",
            ],
            "--instance",
        ),
        (vec!["pause", "--name", "nobody"], "--name"),
    ] {
        let (ok, _, err) = run(&args);
        assert!(!ok, "{args:?} succeeded");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }

    assert!(run(&["pause", "--name", "wa-1"]).0);
    assert!(
        run(&[
            "update",
            "--name",
            "wa-1",
            "--daily-cap",
            "400",
            "--hours",
            "any"
        ])
        .0
    );
    let (ok, out, _) = run(&["list"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "nothing stored by the refused commands");
    let a = &list[0];
    for field in [
        "name",
        "backend",
        "state",
        "state_until",
        "reason",
        "checks_today",
        "daily_cap",
        "rate_per_sec",
        "checks_total",
        "last_check_at",
    ] {
        assert!(a.get(field).is_some(), "{field} in {a}");
    }
    assert_eq!(a["state"], "paused");
    assert_eq!(a["daily_cap"], 400);
    assert_eq!(a["hours"], serde_json::Value::Null);
    assert_eq!(a["cap_today"], 50, "warm-up day 1 of 7: an eighth of 400");
    assert!(run(&["resume", "--name", "wa-1"]).0);
    assert!(run(&["remove", "--name", "wa-1"]).0);
    assert_eq!(run(&["list"]).1.trim(), "[]");
}

/// Pacing outside its bounds (which today's cap arithmetic and the reservations could not
/// survive) is refused at the door, by `add` and `update` alike, in one line that names the
/// flag and the value, and nothing is stored; a negative value is read as the flag's value.
#[tokio::test]
async fn the_checker_commands_refuse_pacing_out_of_bounds_naming_flag_and_value() {
    let db = fresh_database().await;
    let run = |args: &[&str]| checker_command(&db.url, args);
    let add = [
        "add",
        "--name",
        "wa-1",
        "--backend",
        "waha",
        "--url",
        "http://x",
    ];
    let update = ["update", "--name", "wa-1"];
    let bad = [
        ("--warmup-days", "2147483647"),
        ("--daily-cap", "100000000"),
        ("--rate-per-sec", "1e-300"),
        ("--rate-per-sec", "-1"),
        ("--rate-per-sec", "NaN"),
        ("--max-concurrency", "65"),
        ("--daily-cap", "-1"),
    ];
    for (flag, value) in bad {
        let (ok, out, err) = run(&[&add[..], &[flag, value]].concat());
        assert!(!ok, "add {flag} {value} succeeded: {out}");
        assert_eq!(err.lines().count(), 1, "add {flag} {value}: {err}");
        assert!(
            err.contains(&format!("{flag}: {value} is not between")),
            "add {flag} {value}: {err}"
        );
    }
    assert_eq!(run(&["list"]).1.trim(), "[]", "nothing stored");

    assert!(run(&[&add[..], &["--daily-cap", "300"]].concat()).0);
    let before = run(&["list"]).1;
    for (flag, value) in bad {
        let (ok, _, err) = run(&[&update[..], &[flag, value]].concat());
        assert!(!ok, "update {flag} {value} succeeded");
        assert_eq!(err.lines().count(), 1, "update {flag} {value}: {err}");
        assert!(
            err.contains(&format!("{flag}: {value} is not between")),
            "update {flag} {value}: {err}"
        );
    }
    assert_eq!(run(&["list"]).1, before, "nothing changed");
    let (ok, out, _) = run(&[
        &update[..],
        &["--warmup-days", "365", "--daily-cap", "100000"],
    ]
    .concat());
    assert!(ok, "the edges are allowed");
    let row: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (row["warmup_days"].as_i64(), row["daily_cap"].as_i64()),
        (Some(365), Some(100_000))
    );
}

/// Submits through the JSON API too: a pool server answers like any other.
#[tokio::test]
async fn a_pool_server_answers_over_grpc_like_any_other() {
    let numbers = us_numbers(0, 4);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    let db = fresh_database().await;
    add_account(&db.store, "only", &gw, "waha", 50.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        expected(&numbers)
    );
    // The same numbers again come from the result cache, with no request upstream.
    let again = client
        .submit_batch(pb::SubmitBatchRequest {
            request_id: "again".into(),
            ..submit_request(
                &key,
                &numbers.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await
        .unwrap()
        .into_inner();
    let cached = wait_completed(&mut client, &key, &again.batch_id).await;
    assert!(cached.results.iter().all(|r| r.from_cache));
    assert_eq!(gw.state.numbers_asked(), 4);
}
