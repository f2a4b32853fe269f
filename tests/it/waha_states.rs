//! A pool account on a WAHA gateway (the fake answers as WAHA 2024.10 does) in each
//! state its session can be in: what the account becomes, the reason an operator reads,
//! and that its numbers wait, pending, at no attempt.
use wavalidate::domain::checker::{
    AccountBackend, AccountConfig, AccountStatus, NewAccount, PacingChange,
};
use wavalidate::pb::NumberStatus;
use wavalidate::store::Store;
use wavalidate::store::rows::AccountRow;
use wavalidate_test_support::fakes::{self, Gateway, Mode, Session};
use wavalidate_test_support::*;

/// A WAHA account on `gateway` with this session name and key.
async fn add_waha(store: &Store, name: &str, gateway: &Gateway, session: &str, key: &str) {
    let config = AccountConfig {
        url: Some(format!("http://{}", gateway.addr)),
        session: Some(session.into()),
        api_key: Some(key.into()),
        ..AccountConfig::default()
    };
    let pacing = PacingChange {
        rate_per_sec: Some(100.0),
        max_concurrency: Some(4),
        daily_cap: Some(0),
        ..PacingChange::default()
    };
    let new = NewAccount::parse(name, AccountBackend::Waha, config, &pacing).expect("valid");
    store.add_account(&new).await.expect("account added");
}

/// A pool server with one account on `gateway` (session `session`) given five numbers:
/// the account's row once its first call got an answer it reads as trouble.
async fn troubled(gateway: &Gateway, session: &str) -> (TestApp, AccountRow) {
    let app = spawn_app_with(use_pool).await;
    add_waha(&app.store, "gw", gateway, session, "secret").await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 5)).await;
    wait_until("the account to be in trouble", || async {
        account_status(&app.store, "gw").await.status != AccountStatus::Active
    })
    .await;
    let row = account_status(&app.store, "gw").await;
    let p = poll(&mut client, &key, &sub.batch_id).await;
    assert_eq!(p.pending, 5, "the numbers wait: {row:?}");
    assert_eq!(
        attempts_made(&app.store).await,
        [0],
        "the account's trouble cost the numbers no attempt"
    );
    (app, row)
}

/// Ends the account's wait so that it is probed now.
async fn probe_now(store: &Store) {
    sqlx::query("UPDATE checkers SET state_until = now(), probe_at = now() WHERE name = 'gw'")
        .execute(store.pool())
        .await
        .unwrap();
}

fn reason(row: &AccountRow) -> &str {
    row.status_reason.as_deref().unwrap_or_default()
}

#[tokio::test]
async fn a_session_stuck_starting_is_logged_out_probed_and_comes_back() {
    let gw = fakes::waha(&["+12015550000"], "secret", "default").await;
    gw.state.set_session(Session::Starting);
    let (app, row) = troubled(&gw, "default").await;
    assert_eq!(row.status, AccountStatus::LoggedOut, "{row:?}");
    assert_eq!(
        reason(&row),
        "WAHA session default is STARTING: the gateway cannot reach WhatsApp (check its network and logs)"
    );
    let wait = row.status_until.expect("probed again later") - chrono::Utc::now();
    assert!(
        wait > chrono::Duration::seconds(20) && wait <= chrono::Duration::seconds(30),
        "probed every 30 s, not {wait}"
    );

    // Still starting when probed: its session status reads as the check did.
    probe_now(&app.store).await;
    wait_until("a probe to find it still starting", || async {
        let row = account_status(&app.store, "gw").await;
        gw.state.probes() >= 1
            && row.status == AccountStatus::LoggedOut
            && row.status_until.unwrap() > chrono::Utc::now() + chrono::Duration::seconds(20)
    })
    .await;
    let row = account_status(&app.store, "gw").await;
    assert!(reason(&row).contains("is STARTING"), "{row:?}");

    // The gateway reaches WhatsApp again: the next probe puts the account back to work.
    gw.state.set_session(Session::Working);
    probe_now(&app.store).await;
    wait_until("the account probed back to active", || async {
        account_status(&app.store, "gw").await.status == AccountStatus::Active
    })
    .await;
    wait_until("the numbers answered", || async {
        attempts_made(&app.store).await == [1]
    })
    .await;
}

#[tokio::test]
async fn a_session_waiting_for_its_qr_code_is_logged_out() {
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.set_session(Session::ScanQrCode);
    let (_app, row) = troubled(&gw, "default").await;
    assert_eq!(row.status, AccountStatus::LoggedOut, "{row:?}");
    assert!(reason(&row).contains("SCAN_QR_CODE"), "{row:?}");
    assert!(reason(&row).contains("QR code"), "says what to do: {row:?}");
}

#[tokio::test]
async fn a_stopped_session_is_logged_out_not_misconfigured() {
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.set_session(Session::Stopped);
    let (app, row) = troubled(&gw, "default").await;
    assert_eq!(row.status, AccountStatus::LoggedOut, "{row:?}");
    assert_eq!(
        reason(&row),
        "WAHA session default is stopped: start or re-link the session"
    );
    assert!(gw.state.calls().is_empty(), "WAHA refuses before it waits");
    // Its session status says STOPPED: the probe keeps the same reason.
    probe_now(&app.store).await;
    wait_until("a probe to find it still stopped", || async {
        let row = account_status(&app.store, "gw").await;
        gw.state.probes() >= 1
            && row.status == AccountStatus::LoggedOut
            && row.status_until.unwrap() > chrono::Utc::now() + chrono::Duration::seconds(20)
    })
    .await;
    let row = account_status(&app.store, "gw").await;
    assert_eq!(
        reason(&row),
        "WAHA session default is stopped: start or re-link the session"
    );
}

#[tokio::test]
async fn another_session_than_default_on_waha_core_is_failing_naming_the_setting() {
    let gw = fakes::waha(&[], "secret", "default").await;
    let (_app, row) = troubled(&gw, "sales").await;
    assert_eq!(row.status, AccountStatus::Failing, "{row:?}");
    assert!(
        reason(&row).contains("only the session 'default'"),
        "{row:?}"
    );
    assert!(reason(&row).contains("session setting"), "{row:?}");
}

#[tokio::test]
async fn whatsapps_rate_overlimit_in_a_500_throttles_the_account() {
    let gw = fakes::waha(&[], "secret", "default").await;
    gw.state.set_default(Mode::RateOverlimit);
    let (_app, row) = troubled(&gw, "default").await;
    assert_eq!(row.status, AccountStatus::Throttled, "{row:?}");
    assert!(
        !reason(&row).contains("1201555"),
        "the gateway echoed the request; the reason must not: {row:?}"
    );
}

#[tokio::test]
async fn waha_2024_takes_any_key_and_later_versions_refuse_a_wrong_one() {
    let numbers = us_numbers(0, 30);
    let on: Vec<&str> = numbers.iter().step_by(2).map(String::as_str).collect();
    let (old, new) = (
        fakes::waha(&on, "other", "default").await,
        fakes::waha(&on, "other", "default").await,
    );
    old.state.ignore_api_key();
    let app = spawn_app_with(use_pool).await;
    add_waha(&app.store, "old", &old, "default", "secret").await;
    add_waha(&app.store, "new", &new, "default", "secret").await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let done = submit_and_wait(&mut client, &key, &numbers).await;
    let on_wa = NumberStatus::OnWhatsapp as i32;
    let not = NumberStatus::NotOnWhatsapp as i32;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        (0..30)
            .map(|i| if i % 2 == 0 { on_wa } else { not })
            .collect::<Vec<_>>()
    );
    assert_eq!(
        old.state.numbers_asked(),
        30,
        "the old gateway answered all"
    );
    wait_until("the new gateway's account to fail", || async {
        account_status(&app.store, "new").await.status == AccountStatus::Failing
    })
    .await;
    let row = account_status(&app.store, "new").await;
    assert!(reason(&row).contains("API key"), "{row:?}");
}

#[tokio::test]
async fn a_session_working_within_wahas_wait_answers_the_check() {
    let gw = fakes::waha(&["+12015550000"], "secret", "default").await;
    gw.state.set_session(Session::Starting);
    gw.state.set_status_wait(secs(10));
    let app = spawn_app_with(use_pool).await;
    add_waha(&app.store, "gw", &gw, "default", "secret").await;
    let (_, key) = app.account(100).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 2)).await;
    wait_until("a check to wait for the session", || async {
        !gw.state.calls().is_empty()
    })
    .await;
    gw.state.set_session(Session::Working);
    let done = wait_completed(&mut client, &key, &sub.batch_id).await;
    assert_eq!(
        done.results.iter().map(|r| r.status).collect::<Vec<_>>(),
        [
            NumberStatus::OnWhatsapp as i32,
            NumberStatus::NotOnWhatsapp as i32
        ]
    );
    assert_eq!(
        account_status(&app.store, "gw").await.status,
        AccountStatus::Active
    );
}
