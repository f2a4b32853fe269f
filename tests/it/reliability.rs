//! Faults and hostile conditions: retention, listener loss, database outages,
//! stalled and vanished watchers, crashes under load, hostile input.
use std::time::Duration;

use tonic::Code;

use crate::helpers::*;
use wavalidate::pb;

#[tokio::test]
async fn retention_prunes_finished_batches_but_keeps_the_ledger_and_running_ones() {
    let app = spawn_app_with(|s| {
        s.maintenance.retention = secs(1);
        s.maintenance.retention_every = ms(100);
        s.checker.simulated.latency = ms(600000);
        s.workers.shutdown_grace = secs(0);
    })
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let finished = submit(&mut client, &key, &["junk".into(), "nope".into()]).await;
    let running = submit(&mut client, &key, &["+14155552671".into()]).await;
    assert_eq!(finished.status, pb::BatchStatus::Completed as i32);
    wait_until("the finished batch to be pruned", || {
        let mut c = client.clone();
        let (k, id) = (key.clone(), finished.batch_id.clone());
        async move {
            c.poll_batch(pb::PollBatchRequest {
                api_key: k,
                batch_id: id,
            })
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
        }
    })
    .await;
    poll(&mut client, &key, &running.batch_id).await;
    let ledger: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM credit_ledger WHERE account_id = $1 AND batch_id = $2",
    )
    .bind(account)
    .bind(uuid::Uuid::parse_str(&finished.batch_id).unwrap())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert_eq!(
        ledger, 2,
        "the charge and the refund of the pruned batch are kept"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM batch_numbers WHERE batch_id = $1")
        .bind(uuid::Uuid::parse_str(&finished.batch_id).unwrap())
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn a_request_id_retried_after_retention_deleted_its_batch_is_answered_not_charged() {
    let app = spawn_app_with(|s| {
        s.maintenance.retention = secs(1);
        s.maintenance.retention_every = ms(100);
    })
    .await;
    let (account, key) = app.account(10).await;
    let mut client = app.client().await;
    let request = pb::SubmitBatchRequest {
        request_id: "nightly-import-7".into(),
        ..submit_request(&key, &["+14155552671", "+14155550100"])
    };
    let first = client
        .submit_batch(request.clone())
        .await
        .unwrap()
        .into_inner();
    wait_completed(&mut client, &key, &first.batch_id).await;
    wait_until("the finished batch to be pruned", || {
        let mut c = client.clone();
        let (k, id) = (key.clone(), first.batch_id.clone());
        async move {
            c.poll_batch(pb::PollBatchRequest {
                api_key: k,
                batch_id: id,
            })
            .await
            .is_err_and(|s| s.code() == Code::NotFound)
        }
    })
    .await;
    let ledger = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM credit_ledger WHERE account_id = $1")
            .bind(account)
            .fetch_one(app.store.pool())
            .await
            .unwrap()
    };
    let entries = ledger().await;

    let retry = client
        .submit_batch(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        retry.batch_id, first.batch_id,
        "the original batch, not a new one"
    );
    assert_eq!(retry.total_numbers, 2);
    assert_eq!(retry.status, pb::BatchStatus::Completed as i32);
    assert_eq!(app.store.balance(account).await.unwrap(), 8, "charged once");
    assert_eq!(ledger().await, entries, "nothing written to the ledger");

    let reused = client
        .submit_batch(pb::SubmitBatchRequest {
            phone_numbers: vec!["+14155550199".into()],
            ..request
        })
        .await
        .unwrap_err();
    assert_eq!(reused.code(), Code::InvalidArgument);
    assert!(reused.message().contains("already used"), "{reused:?}");
}

#[tokio::test]
async fn a_watcher_that_stops_reading_is_closed_and_frees_its_resources() {
    let app = spawn_app_with(|s| {
        s.api.watch_stall = secs(1);
    })
    .await;
    let (_, key) = app.account(1000).await;
    // A client with the HTTP/2 windows of the spec (64 KiB), not hyper's generous ones.
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut client =
        wavalidate::pb::wa_validation_service_client::WaValidationServiceClient::new(channel);
    // 1,000 long invalid entries: done at once, and far more than the stream's buffers hold.
    let numbers: Vec<String> = (0..1000)
        .map(|i| format!("{}{i:04}", "x".repeat(240)))
        .collect();
    let sub = submit(&mut client, &key, &numbers).await;
    let mut stream = open_watch(&mut client, &key, &sub.batch_id).await;
    wait_until("the watch to start", || async { app.active_watches() == 1 }).await;
    wait_until("the stalled watch to be closed", || async {
        app.active_watches() == 0
    })
    .await;

    let mut received = 0;
    let status = loop {
        match stream.message().await {
            Ok(Some(_)) => received += 1,
            Ok(None) => panic!("the stream ended without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        received < 1000,
        "only what was buffered arrives: {received}"
    );
}

#[tokio::test]
async fn a_client_that_disconnects_mid_stream_frees_its_watch() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(600000);
        s.workers.shutdown_grace = secs(0);
    })
    .await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &["+14155552671".into(), "junk".into()]).await;
    let mut watcher = app.client().await;
    let mut stream = open_watch(&mut watcher, &key, &sub.batch_id).await;
    stream
        .message()
        .await
        .unwrap()
        .expect("the invalid entry's result");
    wait_until("the watch to be open", || async {
        app.active_watches() == 1
    })
    .await;
    drop(stream);
    drop(watcher);
    wait_until("the watch task to notice and end", || async {
        app.active_watches() == 0
    })
    .await;
}

async fn health(addr: std::net::SocketAddr) -> Option<i32> {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .ok()?
    .ok()?;
    Some(resp.into_inner().status)
}

/// While the database is away: health says NOT_SERVING, and requests fail fast with UNAVAILABLE instead of hanging.
async fn assert_down_and_failing_fast(app: &TestApp, client: &mut Client, key: &str) {
    wait_until("health to report NOT_SERVING", || async {
        health(app.addr).await == Some(NOT_SERVING)
    })
    .await;
    let started = std::time::Instant::now();
    let err = client
        .get_balance(pb::GetBalanceRequest {
            api_key: key.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "fails fast, does not hang: {:?}",
        started.elapsed()
    );
}

const SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
const NOT_SERVING: i32 = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;

fn spawn_watch(
    client: &Client,
    key: &str,
    batch_id: &str,
) -> tokio::task::JoinHandle<(Vec<pb::NumberResult>, pb::BatchCompleted)> {
    let (mut c, k, id) = (client.clone(), key.to_string(), batch_id.to_string());
    tokio::spawn(async move { watch_all(&mut c, &k, &id).await })
}

#[tokio::test]
async fn watchers_miss_nothing_when_the_listening_connection_is_killed() {
    // Workers in one server; the watcher in another (API only, reaching PostgreSQL
    // through a proxy), which learns of results only by LISTEN: no periodic re-read.
    let (url, store) = fresh_database().await;
    let _workers = spawn_app_on(url.clone(), store.clone(), |s| {
        s.server.role = Role::Worker;
        s.checker.simulated.latency = ms(150);
        s.workers.loops = 1;
    })
    .await;
    let proxy = crate::pgproxy::PgProxy::start(&url).await;
    let watcher = spawn_app_on(proxy.url(&url), store.clone(), |s| {
        s.server.role = Role::Api;
        s.api.watch_backstop = ms(600000);
    })
    .await;
    let (_, key) = watcher.account(1000).await;
    let mut client = watcher.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 600)).await;
    let watch = spawn_watch(&client, &key, &sub.batch_id);
    let answered = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM batch_numbers WHERE state <> 1")
            .fetch_one(store.pool())
            .await
            .unwrap()
    };
    wait_until("the first results", || async { answered().await >= 100 }).await;

    // The watcher's server loses its listening connection (and every other one) and
    // cannot connect again until results were written that it never heard of.
    proxy.hold_new_connections();
    proxy.sever_all();
    let before = answered().await;
    wait_until(
        "results written while the watcher cannot listen",
        || async { answered().await >= before + 200 },
    )
    .await;
    proxy.let_new_connections_in();

    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 600);
    assert_eq!(completed.completed, 600);
}

#[tokio::test]
async fn a_database_outage_turns_health_off_fails_fast_and_loses_nothing() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(100);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 500)).await;
    let watch = spawn_watch(&client, &key, &sub.batch_id);
    assert_eq!(health(app.addr).await, Some(SERVING));
    let db: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(app.store.pool())
        .await
        .unwrap();

    // The outage: no new connections, and every existing one cut.
    let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
    let set_allowed = |allowed: bool| {
        let (admin, db) = (admin.clone(), db.clone());
        async move {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "ALTER DATABASE \"{db}\" ALLOW_CONNECTIONS {allowed}"
            )))
            .execute(&admin)
            .await
            .unwrap();
            if !allowed {
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                )
                .bind(&db)
                .execute(&admin)
                .await
                .unwrap();
            }
        }
    };
    let outage = std::time::Instant::now();
    set_allowed(false).await;
    assert_down_and_failing_fast(&app, &mut client, &key).await;

    set_allowed(true).await;
    wait_until("health to report SERVING again", || async {
        health(app.addr).await == Some(SERVING)
    })
    .await;
    let recovered = outage.elapsed();
    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 500);
    assert_eq!(completed.completed, 500);
    eprintln!("database outage: serving again {recovered:?} after it began");
}

#[tokio::test]
async fn a_key_over_its_rate_gets_resource_exhausted_with_a_retry_hint() {
    let app = spawn_app_with(|s| {
        s.api.key_rate_per_sec = 5;
    })
    .await;
    let (_, key) = app.account(10).await;
    let (_, other) = app.account(10).await;
    let mut client = app.client().await;
    let mut limited = None;
    for _ in 0..30 {
        if let Err(status) = client
            .get_balance(pb::GetBalanceRequest {
                api_key: key.clone(),
            })
            .await
        {
            limited = Some(status);
            break;
        }
    }
    let status = limited.expect("30 quick requests exceed 5/s with a burst of 10");
    assert_eq!(status.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    assert!(
        details.retry_info().and_then(|r| r.retry_delay).is_some(),
        "a retry hint"
    );
    // Another key is not affected.
    client
        .get_balance(pb::GetBalanceRequest { api_key: other })
        .await
        .unwrap();
    // Over HTTP: 429 with Retry-After.
    let resp = reqwest::get(format!("http://{}/api/v1/balance?api_key={key}", app.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_change_nothing() {
    let app = spawn_app().await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["+1415\u{0}555".into()], "phone_numbers[0]"),
        (
            vec!["+14155552671".into(), "9".repeat(10_000)],
            "phone_numbers[1]",
        ),
    ];
    for (numbers, field) in cases {
        let err = client
            .submit_batch(pb::SubmitBatchRequest {
                api_key: key.clone(),
                phone_numbers: numbers,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        use tonic_types::StatusExt;
        assert_eq!(
            err.get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    let err = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: vec!["+14155552671".into()],
            request_id: "a\0b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Control characters and odd scripts are just invalid entries.
    let odd = vec![
        "\u{7}\u{1b}[31m+1 415\r\n555 2671".to_string(),
        "☎️📞".into(),
        "\u{202e}1762555514+".into(),
    ];
    let p = submit_and_wait(&mut client, &key, &odd).await;
    assert_eq!(p.results.len(), 3);
    // An oversized message is refused by the size limit, and the server carries on.
    let huge = vec!["x".repeat(200); 10_000];
    let err = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let big_json = format!(
        r#"{{"api_key": "{key}", "phone_numbers": ["{}"]}}"#,
        "1".repeat(2 * 1024 * 1024)
    );
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/wavalidation/batch", app.addr))
        .header("content-type", "application/json")
        .body(big_json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let balance = app.store.balance(account).await.unwrap();
    assert_eq!(
        balance,
        100 - 3 + p.credits_refunded,
        "only the valid odd batch was charged"
    );
}

#[tokio::test]
async fn admin_commands_refuse_bad_amounts_with_one_line() {
    let (url, store) = fresh_database().await;
    let (account, _) = store.create_account("admin", 0).await.unwrap();
    let id = account.to_string();
    let max = i64::MAX.to_string();
    for args in [
        vec!["account", "create", "--name", "x", "--credits", "-5"],
        vec!["account", "credit", "--account-id", &id, "--amount", "0"],
        vec!["account", "credit", "--account-id", &id, "--amount", "-10"],
        vec![
            "account",
            "credit",
            "--account-id",
            &id,
            "--amount",
            "99999999999999999999999",
        ],
        vec!["key", "create", "--account-id", "not-a-uuid"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Overflowing the balance is refused by the database, not wrapped around.
    let credit = |amount: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"))
            .args(["account", "credit", "--account-id", &id, "--amount", amount])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    assert!(credit(&max).status.success());
    let overflow = credit("1");
    assert!(!overflow.status.success());
    assert_eq!(
        String::from_utf8_lossy(&overflow.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
    assert_eq!(store.balance(account).await.unwrap(), i64::MAX);
}

#[tokio::test]
async fn api_keys_never_appear_in_the_logs() {
    let (url, store) = fresh_database().await;
    let (_, key) = store.create_account("logs", 10).await.unwrap();
    let key = key.expose().to_string();
    let mut server = spawn_process(&url, &[], &[("RUST_LOG", "debug")]).await;
    let mut client = connect(server.addr).await;
    submit(&mut client, &key, &us_numbers(0, 3)).await;
    let mut req = tonic::Request::new(pb::GetBalanceRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    client.get_balance(req).await.unwrap();
    let wrong = "wav_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let _ = client
        .get_balance(pb::GetBalanceRequest {
            api_key: wrong.into(),
        })
        .await;
    let _ = reqwest::get(format!(
        "http://{}/api/v1/balance?api_key={key}",
        server.addr
    ))
    .await;
    server.terminate().await;
    let logs = std::fs::read_to_string(&server.log).unwrap();
    assert!(logs.len() > 1000, "debug logs were written");
    assert!(!logs.contains(&key[4..]), "the key appears in the logs");
    assert!(
        !logs.contains(&wrong[4..]),
        "a wrong key appears in the logs"
    );
}

#[tokio::test]
async fn tls_serves_grpc_and_json_with_a_given_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let app = spawn_app_with(|s| {
        s.server.tls = Some(wavalidate::settings::TlsFiles {
            cert: cert.clone(),
            key: key_file.clone(),
        })
    })
    .await;
    let (_, key) = app.account(7).await;
    let port = app.addr.port();

    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let balance = get_json(
        &https,
        format!("https://localhost:{port}/api/v1/balance?api_key={key}"),
    )
    .await;
    assert_eq!(balance["balance"], 7);
    // Plaintext is not served on a TLS port.
    assert!(
        reqwest::get(format!(
            "http://127.0.0.1:{port}/api/v1/balance?api_key={key}"
        ))
        .await
        .is_err()
    );

    let out = tokio::process::Command::new("grpcurl")
        .args([
            "-cacert",
            cert.to_str().unwrap(),
            "-servername",
            "localhost",
            &format!("127.0.0.1:{port}"),
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .expect("grpcurl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
}

/// A PostgreSQL server of the test's own, so the test can restart it without
/// disturbing the one every other test uses.
struct PrivatePostgres {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivatePostgres {
    fn run(&self, tool: &str, args: &[&str]) -> std::process::Output {
        let exe = self.bin.join(tool);
        // initdb and postgres refuse to run as root.
        let mut cmd = if nix::unistd::Uid::effective().is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            std::process::Command::new(&exe)
        };
        let out = cmd.args(args).output().expect("run a PostgreSQL tool");
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn start_new() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect(
                "PostgreSQL server binaries in /usr/lib/postgresql (scripts/test installs them)",
            )
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("an initdb");
        let dir = std::env::temp_dir().join(format!("wavpg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        if nix::unistd::Uid::effective().is_root() {
            let out = std::process::Command::new("chown")
                .args(["postgres:", dir.to_str().unwrap()])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres { dir, bin, port };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.dir.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg.start();
        pg
    }

    fn start(&self) {
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {}",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("server.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.dir.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
    }

    fn stop(&self) {
        self.run(
            "pg_ctl",
            &["-D", self.dir.to_str().unwrap(), "-m", "fast", "-w", "stop"],
        );
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/wavalidate", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = std::process::Command::new(self.bin.join("pg_ctl"))
            .args(["-D", self.dir.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        if nix::unistd::Uid::effective().is_root() {
            let _ = std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["-D", self.dir.to_str().unwrap(), "-m", "immediate", "stop"])
                .output();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_real_postgres_restart_mid_batch_loses_nothing() {
    let pg = tokio::task::spawn_blocking(PrivatePostgres::start_new)
        .await
        .unwrap();
    let url = pg.url();
    let store = wavalidate::store::Store::connect_migrated(&url)
        .await
        .unwrap();
    let app = spawn_app_on(url, store.clone(), |s| {
        s.checker.simulated.latency = ms(100);
        s.workers.loops = 1;
    })
    .await;
    let (account, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 400)).await;
    let watch = spawn_watch(&client, &key, &sub.batch_id);
    wait_for_progress(&client, &key, &sub.batch_id, 100).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop();
        pg
    })
    .await
    .unwrap();
    assert_down_and_failing_fast(&app, &mut client, &key).await;

    let restarted = std::time::Instant::now();
    let pg = tokio::task::spawn_blocking(move || {
        pg.start();
        pg
    })
    .await
    .unwrap();
    wait_until("health to report SERVING again", || async {
        health(app.addr).await == Some(SERVING)
    })
    .await;
    eprintln!(
        "postgres restart: SERVING {:?} after PostgreSQL was back",
        restarted.elapsed()
    );
    let (results, completed) = watch.await.unwrap();
    assert_each_index_once(&results, 400);
    assert_eq!(completed.completed, 400);
    assert_eq!(
        store.balance(account).await.unwrap(),
        600,
        "charged once, nothing refunded"
    );
    drop(app);
    drop(pg);
}
