//! The pool's round two: an account asks only when PostgreSQL grants the request at the
//! moment it starts (pause, closed hours, trouble in force, today's cap, its rate), its
//! breaker backs off with trial numbers, and no gateway's trouble is charged to a number.
//! Each race is forced: a request held at the fake gateway while the operator (or WhatsApp)
//! says stop, then released.
use std::time::{Duration, Instant};

use wavalidate::domain::checker::{AccountStatus, PacingChange};
use wavalidate::pb::NumberStatus;
use wavalidate_test_support::fakes::{self, Gateway, Mode};
use wavalidate_test_support::*;

const NOT: i32 = NumberStatus::NotOnWhatsapp as i32;

/// Request times at the fake, in order.
fn times(gw: &Gateway) -> Vec<Instant> {
    let mut at: Vec<Instant> = gw.state.calls().iter().map(|c| c.0).collect();
    at.sort();
    at
}

/// Account "a" (5 checks/s, one request at a time per process: while one is held at its
/// gateway, no other of its requests is under way there) and "b" (20/s), on fakes that
/// register every third of `numbers`.
async fn slow_and_fast(numbers: &[String]) -> (Gateway, Gateway, TestDb) {
    let on = registered(numbers);
    let (a, b) = (
        fakes::waha(&on, "secret", "default").await,
        fakes::waha(&on, "secret", "default").await,
    );
    let db = fresh_database().await;
    add_account(&db.store, "a", &a, "waha", 5.0, |p| {
        p.max_concurrency = Some(1)
    })
    .await;
    add_account(&db.store, "b", &b, "waha", 20.0, |_| {}).await;
    (a, b, db)
}

/// Local hours that are closed now, in UTC.
fn closed_hours() -> String {
    use chrono::Timelike;
    let h = chrono::Utc::now().hour();
    format!("{:02}:00-{:02}:00", (h + 2) % 24, (h + 3) % 24)
}

#[tokio::test]
async fn a_pause_stops_the_next_request_of_a_slice_already_under_way() {
    let numbers = us_numbers(0, 120);
    let (a, _b, db) = slow_and_fast(&numbers).await;
    a.state.hold_from(3);
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("a's fourth request held at its gateway", || async {
        a.state.held() == 1
    })
    .await;
    // The operator pauses "a" between its slice's requests: the held one was granted
    // before, every later one must be refused, though its slice holds more numbers.
    assert!(app.store.set_paused("a", true).await.unwrap());
    a.state.release();
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), expected(&numbers));
    assert_eq!(
        a.state.calls().len(),
        4,
        "no request of a paused account starts after `checker pause` returned"
    );
    assert_eq!(attempts_made(&app.store).await, [1]);
}

#[tokio::test]
async fn closing_hours_stop_the_account_in_every_replica_at_its_next_request() {
    let numbers = us_numbers(0, 80);
    let (a, _b, db) = slow_and_fast(&numbers).await;
    // Every request of "a" waits at its gateway: one per replica (one at a time in each).
    a.state.hold_from(0);
    let one = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let two = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = one.account(1000).await;
    let (mut c1, mut c2) = (one.client().await, two.client().await);
    let first = submit(&mut c1, &key, &numbers[..40]).await;
    let second = submit(&mut c2, &key, &numbers[40..]).await;
    wait_until("a request of 'a' held in each replica", || async {
        a.state.held() == 2
    })
    .await;
    let closed = PacingChange {
        hours: Some(closed_hours()),
        ..PacingChange::default()
    };
    assert!(db.store.update_pacing("a", &closed).await.unwrap());
    a.state.release();
    let done = wait_completed(&mut c1, &key, &first.batch_id).await;
    assert_eq!(statuses(&done), expected(&numbers[..40]));
    let done = wait_completed(&mut c2, &key, &second.batch_id).await;
    assert_eq!(statuses(&done), expected(&numbers)[40..]);
    assert_eq!(
        a.state.calls().len(),
        2,
        "outside its hours the account asks nothing more, in either replica"
    );
    let row = account_status(&db.store, "a").await;
    assert_eq!(row.status, AccountStatus::Resting, "{row:?}");
}

#[tokio::test]
async fn a_429_while_calls_wait_for_the_rate_sets_off_no_burst() {
    let numbers = us_numbers(0, 3);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    // The first request is held at the gateway, then refused for four seconds.
    gw.state.script([Mode::RateLimited(Some(4))]);
    gw.state.hold_from(0);
    let db = fresh_database().await;
    add_account(&db.store, "a", &gw, "waha", 0.5, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), |s| {
        use_pool(s);
        s.pacing.rate_limit_backoff = ms(500);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    // Three batches: three worker loops each hold a call for the account, two of them
    // waiting for its next slot (2 s away at 0.5 checks/s) while the first is held.
    let mut batches = Vec::new();
    for n in &numbers {
        batches.push(
            submit(&mut client, &key, std::slice::from_ref(n))
                .await
                .batch_id,
        );
    }
    wait_until("three claims under way, one request held", || async {
        let leased: i64 =
            sqlx::query_scalar("SELECT count(*) FROM queue_chunks WHERE lease_token IS NOT NULL")
                .fetch_one(db.store.pool())
                .await
                .unwrap();
        leased == 3 && gw.state.held() == 1
    })
    .await;
    gw.state.release();
    for (batch, want) in batches.iter().zip(expected(&numbers)) {
        let done = wait_completed(&mut client, &key, batch).await;
        assert_eq!(statuses(&done), [want]);
    }
    let at = times(&gw);
    assert_eq!(at.len(), 4, "each number once, plus the refused request");
    let after = at[1] - at[0];
    assert!(
        after >= ms(3900),
        "the next request came {after:?} after the 429 (Retry-After: 4 s): the waiting calls went"
    );
    let closest = at.windows(2).map(|w| w[1] - w[0]).min().unwrap();
    assert!(
        closest >= ms(1900),
        "requests {closest:?} apart at 0.5 checks/s: giving checks back made a burst"
    );
    assert_eq!(attempts_made(&app.store).await, [1]);
}

#[tokio::test]
async fn a_throttled_accounts_backoff_doubles_until_a_trial_is_answered() {
    let numbers = us_numbers(0, 3);
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.set_default(Mode::RateLimited(None));
    let db = fresh_database().await;
    add_account(&db.store, "a", &gw, "waha", 20.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), |s| {
        use_pool(s);
        s.pacing.rate_limit_backoff = ms(500);
        s.pacing.breaker_cooldown = secs(1);
        s.pacing.rate_limit_backoff_max = secs(3);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("five requests refused", || async {
        gw.state.calls().len() >= 5
    })
    .await;
    let at = times(&gw);
    // 0.5 s, then 1, 2, 3 (the max): each after a trial number that met a 429 again.
    for (k, want) in [500u64, 1000, 2000, 3000].into_iter().enumerate() {
        let gap = at[k + 1] - at[k];
        assert!(
            gap >= ms(want * 9 / 10),
            "request {} came {gap:?} after the one before, not after {want} ms",
            k + 1
        );
    }
    let row = account_status(&app.store, "a").await;
    assert!(row.throttles >= 4, "the streak is kept in the row: {row:?}");
    assert_eq!(
        gw.state.probes(),
        0,
        "a session probe proves nothing about a 429"
    );
    assert_eq!(poll(&mut client, &key, &sub.batch_id).await.pending, 3);
    assert_eq!(attempts_made(&app.store).await, [0]);

    gw.state.set_default(Mode::Normal);
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), [NOT, NOT, NOT]);
    let row = account_status(&app.store, "a").await;
    assert_eq!((row.status, row.throttles), (AccountStatus::Active, 0));
}

#[tokio::test]
async fn a_gateway_failing_every_number_while_its_session_works_costs_no_attempt() {
    let numbers = us_numbers(0, 10);
    let gw = fakes::waha(&[], "secret", "default").await;
    // Every check answers 500; the session says WORKING.
    for n in &numbers {
        gw.state.poison(n);
    }
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.pacing.breaker_failures = 3;
        s.pacing.breaker_cooldown = secs(3600);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("the account's circuit to open", || async {
        account_status(&app.store, "flags:waha").await.status == AccountStatus::Failing
    })
    .await;
    assert_eq!(gw.state.calls().len(), 3, "three failures in a row open it");
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(p.pending, 10);
    assert_eq!(
        attempts_made(&app.store).await,
        [0],
        "a failure no other account or answer tells apart is the account's"
    );
}

#[tokio::test]
async fn a_number_failing_on_one_account_is_answered_by_another_at_no_cost() {
    let numbers = us_numbers(0, 30);
    let on = registered(&numbers);
    let (bad, good) = (
        fakes::waha(&on, "secret", "default").await,
        fakes::waha(&on, "secret", "default").await,
    );
    // "bad" fails these numbers (its session works); "good" answers them.
    for n in numbers.iter().step_by(5) {
        bad.state.poison(n);
    }
    let db = fresh_database().await;
    add_account(&db.store, "bad", &bad, "waha", 50.0, |_| {}).await;
    add_account(&db.store, "good", &good, "waha", 50.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(statuses(&done), expected(&numbers));
    assert_eq!(
        attempts_made(&app.store).await,
        [1],
        "no number charged twice"
    );
}

#[tokio::test]
async fn each_request_of_a_split_call_waits_its_own_slot_and_counts_its_checks() {
    let numbers = us_numbers(0, 10);
    let on = registered(&numbers);
    let gw = fakes::evolution(&on, "secret", "main").await;
    gw.state.poison(&numbers[7]);
    let db = fresh_database().await;
    add_account(&db.store, "ev", &gw, "evolution", 4.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), |s| {
        use_pool(s);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("the bad number split out", || async {
        gw.state.calls().iter().any(|(_, n)| n.len() == 1)
    })
    .await;
    let calls = {
        let mut c = gw.state.calls();
        c.sort_by_key(|(t, _)| *t);
        c
    };
    // Each request holds the rate for its own numbers: the next starts no sooner.
    for w in calls.windows(2) {
        let (gap, size) = (w[1].0 - w[0].0, w[0].1.len());
        let slot = Duration::from_secs_f64(size as f64 / 4.0);
        assert!(
            gap >= slot.mul_f64(0.9),
            "a request of {size} numbers, then the next {gap:?} later at 4 checks/s"
        );
    }
    let sent: usize = calls.iter().map(|(_, n)| n.len()).sum();
    let row = account_status(&app.store, "ev").await;
    assert_eq!(
        row.checks_today as usize, sent,
        "every number sent upstream is counted against the account's day"
    );
    let _ = poll(&mut client, &key, &sub.batch_id).await;
}

#[tokio::test]
async fn an_account_row_that_cannot_be_read_is_named_and_the_others_still_check() {
    let numbers = us_numbers(0, 6);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    let db = fresh_database().await;
    add_account(&db.store, "good", &gw, "waha", 50.0, |_| {}).await;
    add_account(&db.store, "huge", &gw, "waha", 50.0, |_| {}).await;
    add_account(&db.store, "lost", &gw, "waha", 50.0, |_| {}).await;
    // Rows the door now refuses, written before it did (or by hand): a warm-up and a cap
    // whose product overflowed an int, and a time zone PostgreSQL no longer knows.
    sqlx::query(
        "UPDATE checkers SET warmup_days = 2147483647, daily_cap = 100000000, rate_per_sec = 1e-300
         WHERE name = 'huge'",
    )
    .execute(db.store.pool())
    .await
    .unwrap();
    sqlx::query("UPDATE checkers SET timezone = 'Mars/Olympus_Mons' WHERE name = 'lost'")
        .execute(db.store.pool())
        .await
        .unwrap();
    let (rows, unreadable) = db.store.accounts().await.expect("the others are readable");
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["good", "huge"]);
    assert_eq!(unreadable.len(), 1);
    assert_eq!(unreadable[0].name, "lost");
    assert!(
        unreadable[0].reason.contains("cannot read"),
        "{unreadable:?}"
    );
    let huge = &rows[1];
    assert_eq!(
        huge.cap_today, 1,
        "warm-up day 1 of 2^31: the least cap, no overflow"
    );

    let (ok, out, err) = checker_command(&db.url, &["list"]);
    assert!(ok, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let lost = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "lost")
        .expect("the unreadable account is listed");
    assert_eq!(lost["state"], "unreadable");
    assert!(lost["reason"].as_str().unwrap().contains("cannot read"));

    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    assert_eq!(statuses(&done), expected(&numbers));
}

#[tokio::test]
async fn a_day_that_rolls_over_mid_claim_grants_the_new_days_cap() {
    let numbers = us_numbers(0, 6);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    let db = fresh_database().await;
    add_account(&db.store, "a", &gw, "waha", 50.0, |p| {
        p.daily_cap = Some(3);
        p.max_concurrency = Some(1);
    })
    .await;
    // The third request (the day's last check) is held while the day ends.
    gw.state.hold_from(2);
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("the day's third check held at the gateway", || async {
        gw.state.held() == 1
    })
    .await;
    // Midnight: the counters in the row now belong to yesterday.
    sqlx::query("UPDATE checkers SET day = day - 1 WHERE name = 'a'")
        .execute(db.store.pool())
        .await
        .unwrap();
    gw.state.release();
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(statuses(&done), expected(&numbers));
    assert!(gw.state.asked_counts().values().all(|&n| n == 1));
    let row = account_status(&app.store, "a").await;
    assert_eq!(
        (row.checks_today, row.status),
        (3, AccountStatus::Resting),
        "the rest was granted under the new day's cap, and it is spent"
    );
}

#[tokio::test]
async fn a_lone_account_whose_gateway_breaks_after_working_charges_no_number() {
    let numbers = us_numbers(0, 10);
    let on = registered(&numbers);
    let gw = fakes::waha(&on, "secret", "default").await;
    // Three numbers answered, then every check fails while the session says WORKING.
    gw.state.hold_from(3);
    let app = spawn_gateway_app(&gw, "waha", |s| {
        s.pacing.breaker_cooldown = secs(3600);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("the fourth request held", || async { gw.state.held() == 1 }).await;
    for n in &numbers {
        gw.state.poison(n);
    }
    gw.state.release();
    wait_until("the circuit open and the three answers written", || async {
        let open = account_status(&app.store, "flags:waha").await.status == AccountStatus::Failing;
        open && poll(&mut client.clone(), &key, &sub.batch_id)
            .await
            .completed
            == 3
    })
    .await;
    // Answers before a failure are no evidence against the number: only answers after it.
    assert_eq!(attempts_made(&app.store).await, [0, 1]);
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!((p.completed, p.pending), (3, 7));
}

#[tokio::test]
async fn rate_limits_met_by_requests_already_in_flight_are_one_episode() {
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.set_default(Mode::RateLimited(None));
    gw.state.hold_from(0);
    let db = fresh_database().await;
    add_account(&db.store, "a", &gw, "waha", 20.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), use_pool).await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    // Four batches: four loops each have a request granted and held at the gateway.
    for n in us_numbers(0, 4) {
        submit(&mut client, &key, &[n]).await;
    }
    wait_until("four requests held", || async { gw.state.held() == 4 }).await;
    gw.state.release();
    // Each loop records its answer before it lets its claim go.
    wait_until("the four answers recorded", || async {
        let leased: i64 =
            sqlx::query_scalar("SELECT count(*) FROM queue_chunks WHERE lease_token IS NOT NULL")
                .fetch_one(db.store.pool())
                .await
                .unwrap();
        leased == 0 && gw.state.calls().len() == 4 && gw.state.held() == 0
    })
    .await;
    let row = account_status(&app.store, "a").await;
    assert_eq!(row.status, AccountStatus::Throttled);
    assert_eq!(
        row.throttles, 1,
        "one rate limit, however many requests were under way when it came"
    );
    let wait = row.status_until.unwrap() - chrono::Utc::now();
    assert!(
        wait <= chrono::Duration::seconds(30),
        "the first backoff: {wait}"
    );
}

#[tokio::test]
async fn numbers_failing_on_every_account_end_in_error_and_leave_the_accounts_working() {
    let numbers = us_numbers(0, 8);
    let on = registered(&numbers);
    let (a, b) = (
        fakes::waha(&on, "secret", "default").await,
        fakes::waha(&on, "secret", "default").await,
    );
    // Three numbers both gateways fail (their sessions work): enough in a row to open a
    // circuit before anyone could tell they are the numbers' fault.
    for gw in [&a, &b] {
        for n in &numbers[..3] {
            gw.state.poison(n);
        }
    }
    let db = fresh_database().await;
    add_account(&db.store, "a", &a, "waha", 50.0, |_| {}).await;
    add_account(&db.store, "b", &b, "waha", 50.0, |_| {}).await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), |s| {
        use_pool(s);
        s.pacing.breaker_cooldown = secs(3600);
    })
    .await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    let mut want = expected(&numbers);
    want[..3].fill(NumberStatus::Error as i32);
    assert_eq!(statuses(&done), want);
    for name in ["a", "b"] {
        let row = account_status(&app.store, name).await;
        assert_eq!(
            row.status,
            AccountStatus::Active,
            "numbers at fault do not keep a circuit open: {row:?}"
        );
    }
}
