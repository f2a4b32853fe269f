//! Completion webhooks: signed, retried, never lost across a crash, never sent after a 2xx.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;
use tonic::Code;

use wavalidate::domain::webhook::sign;
use wavalidate::pb;
use wavalidate_test_support::*;

/// A receiver that fails its first `fail_first` deliveries with 500.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<(HeaderMap, String, u16)>>>,
    fail_first: Arc<Mutex<usize>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let got: Arc<Mutex<Vec<(HeaderMap, String, u16)>>> = Arc::default();
    let fail = Arc::new(Mutex::new(fail_first));
    let (g, f) = (got.clone(), fail.clone());
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let (g, f) = (g.clone(), f.clone());
            async move {
                let mut left = f.lock().unwrap();
                let code = if *left > 0 {
                    *left -= 1;
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                };
                g.lock().unwrap().push((headers, body, code.as_u16()));
                code
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        addr,
        got,
        fail_first: fail,
    }
}

impl Receiver {
    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }
    fn successes(&self) -> usize {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.2 == 200)
            .count()
    }
}

/// Loopback receivers allowed, retries and outbox reads every 50 ms.
fn fast_webhooks(s: &mut Settings) {
    s.webhooks.allow_private = true;
    s.webhooks.retry_base = ms(50);
    s.webhooks.poll = ms(50);
}

/// A `--role worker` process whose webhooks may reach loopback and are retried and read
/// every 50 ms, with `extra` in its environment.
async fn webhook_worker(url: &str, extra: &[(&str, &str)]) -> ServerProcess {
    let mut env = vec![
        ("WAV_WEBHOOK_ALLOW_PRIVATE", "1"),
        ("WAV_WEBHOOK_RETRY_BASE_MS", "50"),
        ("WAV_WEBHOOK_POLL_MS", "50"),
    ];
    env.extend_from_slice(extra);
    spawn_process(url, &["--role", "worker"], &env).await
}

/// An API-only server on `db` (a worker process delivers), loopback receivers allowed.
async fn api_only(db: &TestDb) -> TestApp {
    spawn_app_on(db.url.clone(), db.store.clone(), |s| {
        s.server.role = Role::Api;
        s.webhooks.allow_private = true;
    })
    .await
}

fn with_callback(key: &str, numbers: Vec<String>, url: &str) -> pb::SubmitBatchRequest {
    pb::SubmitBatchRequest {
        api_key: key.into(),
        phone_numbers: numbers,
        callback_url: url.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_signed_summary_is_retried_until_delivered_then_never_again() {
    let hook = receiver(2).await;
    let app = spawn_app_with(fast_webhooks).await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let mut numbers = us_numbers(0, 5);
    numbers.push("junk".into());
    let sub = client
        .submit_batch(with_callback(&key, numbers, &hook.url()))
        .await
        .unwrap()
        .into_inner();
    wait_until("a delivery the receiver accepts", || async {
        hook.successes() == 1
    })
    .await;

    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "two failures, then one success");
    let secret = app
        .store
        .webhook_secret(account, false)
        .await
        .unwrap()
        .unwrap();
    let mut last_sent = 0;
    for (headers, body, _) in &got {
        // Each attempt is signed with the moment it was sent, so a receiver can refuse
        // an old one (a replay).
        let sent: i64 = headers["x-wavalidate-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((chrono::Utc::now().timestamp() - sent).abs() < 60, "{sent}");
        assert!(sent >= last_sent);
        last_sent = sent;
        assert_eq!(
            headers["x-wavalidate-signature"].to_str().unwrap(),
            sign(&secret, sent, body.as_bytes())
        );
        assert_ne!(
            headers["x-wavalidate-signature"].to_str().unwrap(),
            sign(&secret, sent - 3600, body.as_bytes()),
            "an hour-old timestamp does not verify"
        );
        assert_eq!(headers["content-type"], "application/json");
    }
    let summary: Value = serde_json::from_str(&got[2].1).unwrap();
    assert_eq!(summary["batch_id"], sub.batch_id.as_str());
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["total_numbers"], 6);
    assert_eq!(summary["completed"], 6);
    assert_eq!(summary["credits_charged"], 6);
    assert_eq!(summary["credits_refunded"], 1);
    // The receiver answers before the worker records the delivery: wait for the record.
    let delivery = || async {
        let row: (i32, bool) =
            sqlx::query_as("SELECT attempts, delivered_at IS NOT NULL FROM webhook_deliveries")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        row
    };
    wait_until("the delivery to be recorded", || async {
        delivery().await.1
    })
    .await;
    assert_eq!(
        delivery().await,
        (3, true),
        "marked delivered, so it is never claimed again"
    );
}

#[tokio::test]
async fn a_pending_delivery_survives_a_crash_and_goes_out_once_after_restart() {
    let hook = receiver(usize::MAX).await;
    let db = fresh_database().await;
    let url = db.url.clone();
    let api = api_only(&db).await;
    let (_, key) = api.account(100).await;
    let mut first = webhook_worker(&url, &[]).await;
    let mut client = api.client().await;
    client
        .submit_batch(with_callback(&key, us_numbers(0, 3), &hook.url()))
        .await
        .unwrap();
    // Recorded, not only received: killed between the two, the delivery would wait out
    // its 60 s lease before the restart could send it.
    wait_until("a failed delivery attempt, recorded", || async {
        !hook.got.lock().unwrap().is_empty()
            && sqlx::query_scalar::<_, bool>(
                "SELECT last_error IS NOT NULL AND lease_until IS NULL FROM webhook_deliveries",
            )
            .fetch_one(db.store.pool())
            .await
            .unwrap()
    })
    .await;
    first.kill9().await;

    *hook.fail_first.lock().unwrap() = 0;
    let _second = webhook_worker(&url, &[]).await;
    wait_until("the delivery after the restart", || async {
        hook.successes() == 1
    })
    .await;
    wait_until("the outbox to record it", || async {
        sqlx::query_scalar::<_, bool>("SELECT delivered_at IS NOT NULL FROM webhook_deliveries")
            .fetch_one(db.store.pool())
            .await
            .unwrap()
    })
    .await;
    assert_eq!(hook.successes(), 1);
}

#[tokio::test]
async fn private_callback_urls_are_refused_by_default_and_cost_nothing() {
    let app = spawn_app().await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest",
        "ftp://example.com/x",
    ] {
        let err = client
            .submit_batch(with_callback(&key, us_numbers(0, 2), url))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{url}");
        assert!(
            err.message().contains("callback_url") || err.message().contains("address"),
            "{}",
            err.message()
        );
    }
    assert_eq!(app.store.balance(account).await.unwrap(), 10);
}

#[tokio::test]
async fn the_webhook_secret_command_shows_and_rotates() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let (account, _) = store.create_account("hooks", 0).await.unwrap();
    let run = |rotate: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"));
        cmd.args([
            "account",
            "webhook-secret",
            "--account-id",
            &account.to_string(),
        ])
        .env("DATABASE_URL", &url);
        if rotate {
            cmd.arg("--rotate");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["webhook_secret"].as_str().unwrap().to_string()
    };
    let shown = run(false);
    assert_eq!(shown.len(), 64);
    assert_eq!(run(false), shown);
    let rotated = run(true);
    assert_ne!(rotated, shown);
    assert_eq!(
        store.webhook_secret(account, false).await.unwrap().unwrap(),
        rotated
    );
}

/// What a proxy test holds until it ends: the database and both servers.
type Held = (TestDb, TestApp, ServerProcess);

/// A receiver and a proxy (answering `proxy_fails` or 200, as it would relay a POST), and
/// one batch with a callback to the receiver, its delivery sent by a worker whose
/// environment holds `env(proxy URL)`.
async fn deliver_beside_a_proxy(
    proxy_fails: bool,
    env: impl FnOnce(&str) -> Vec<(&'static str, String)>,
) -> (Receiver, Receiver, Held) {
    let hook = receiver(0).await;
    let proxy = receiver(if proxy_fails { usize::MAX } else { 0 }).await;
    let db = fresh_database().await;
    let url = db.url.clone();
    let api = api_only(&db).await;
    let (_, key) = api.account(100).await;
    let env = env(&format!("http://{}", proxy.addr));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = webhook_worker(&url, &env).await;
    let mut client = api.client().await;
    client
        .submit_batch(with_callback(&key, us_numbers(0, 3), &hook.url()))
        .await
        .unwrap();
    (hook, proxy, (db, api, worker))
}

/// Proxy variables in the server's environment are the operator's egress for gateways: a
/// webhook goes straight to its target, where the public-address check looked (a proxy would
/// resolve the name itself, past that check).
#[tokio::test]
async fn webhooks_ignore_proxy_variables() {
    let (hook, proxy, _held) = deliver_beside_a_proxy(true, |proxy| {
        let p = || proxy.to_string();
        vec![
            ("HTTP_PROXY", p()),
            ("http_proxy", p()),
            ("ALL_PROXY", p()),
            ("NO_PROXY", String::new()),
            ("no_proxy", String::new()),
        ]
    })
    .await;
    wait_until("the delivery, straight to its target", || async {
        hook.successes() == 1
    })
    .await;
    assert!(
        proxy.got.lock().unwrap().is_empty(),
        "nothing went through the proxy"
    );
}

/// A receiver that accepts connections and never answers.
async fn tarpit() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// One account's 48 deliveries to a receiver that never answers hold two places at a
/// time; another account's delivery goes out at once, not after the tarpit's timeouts.
#[tokio::test]
async fn a_tarpit_receiver_never_delays_another_accounts_delivery() {
    let hook = receiver(0).await;
    let pit = format!("http://{}/hook", tarpit().await);
    let app = spawn_app_with(fast_webhooks).await;
    let (_, flooder) = app.account(1).await;
    let (_, honest) = app.account(10).await;
    let mut client = app.client().await;
    // Invalid entries cost nothing: one credit pays for any number of these batches.
    for i in 0..48 {
        client
            .submit_batch(with_callback(&flooder, vec![format!("junk {i}")], &pit))
            .await
            .unwrap();
    }
    wait_until("the tarpit holding deliveries", || async {
        let leased: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE lease_until > now()")
                .fetch_one(app.store.pool())
                .await
                .unwrap();
        leased >= 2
    })
    .await;
    let started = std::time::Instant::now();
    client
        .submit_batch(with_callback(&honest, us_numbers(0, 2), &hook.url()))
        .await
        .unwrap();
    wait_until("the honest delivery", || async { hook.successes() == 1 }).await;
    let late = started.elapsed();
    // A delivery waits at most 10 s; behind the tarpit's it would wait at least that.
    assert!(
        late < std::time::Duration::from_secs(5),
        "delivered after {late:?}"
    );
    // The tarpit's only: the honest delivery is received before it is marked delivered.
    let in_flight: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhook_deliveries
         WHERE url = $1 AND lease_until > now() AND delivered_at IS NULL",
    )
    .bind(&pit)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(in_flight <= 2, "the tarpit holds {in_flight} places");
}

/// With a proxy named by the operator, deliveries go through it (and only then).
#[tokio::test]
async fn webhooks_go_through_the_proxy_the_operator_names() {
    let (hook, proxy, _held) = deliver_beside_a_proxy(false, |proxy| {
        vec![("WAV_WEBHOOK_PROXY", proxy.to_string())]
    })
    .await;
    wait_until("the delivery, through the proxy", || async {
        proxy.successes() == 1
    })
    .await;
    let (headers, _, _) = proxy.got.lock().unwrap()[0].clone();
    assert!(headers.contains_key("x-wavalidate-signature"));
    assert!(
        hook.got.lock().unwrap().is_empty(),
        "nothing went around the proxy"
    );
}
