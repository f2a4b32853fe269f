//! The test harness: a fresh database per test (dropped when the test passes, kept and
//! named when it fails), real servers (in-process or as child processes) on port 0, and
//! real gRPC clients.
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::transport::Channel;
use uuid::Uuid;

use wavalidate::app::Server;
use wavalidate::pb;
use wavalidate::pb::wa_validation_service_client::WaValidationServiceClient;
pub use wavalidate::settings::{CheckerKind, Role, Secret, Settings};
use wavalidate::store::{Store, url_with_database};

pub type Client = WaValidationServiceClient<Channel>;

pub const DEADLINE: Duration = Duration::from_secs(30);

/// A connection URL to the server's maintenance database, for tests that act on a test database from outside.
pub fn admin_url() -> String {
    base_url()
}

pub fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A test's own database: created empty and migrated; dropped when the test passes,
/// kept (and named on stderr) when it fails, for a look inside.
pub struct TestDb {
    pub url: String,
    pub store: Store,
    name: String,
}

/// A new, empty, migrated database for one test.
pub async fn fresh_database() -> TestDb {
    let name = format!("wavtest_{}", Uuid::new_v4().simple());
    let url = url_with_database(&base_url(), &name);
    let store = Store::connect_migrated(&url).await.expect("test database");
    TestDb { url, store, name }
}

/// A new database migrated only up to `version`, as an older release left it.
pub async fn database_at(version: i64) -> TestDb {
    let name = format!("wavtest_{}", Uuid::new_v4().simple());
    let url = url_with_database(&base_url(), &name);
    Store::create_database_if_missing(&url)
        .await
        .expect("test database");
    let store = Store::connect_lazy(&url, 2).expect("pool");
    wavalidate::store::MIGRATOR
        .run_to(version, store.pool())
        .await
        .expect("older migrations");
    TestDb { url, store, name }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: its database {} is kept", self.name);
            return;
        }
        // Drop runs inside the test's runtime, which this blocks: drop the database from a
        // thread of its own, and with FORCE, since the test's servers, child processes and
        // pools (their tasks on the blocked runtime included) may still hold connections.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            use sqlx::migrate::MigrateDatabase;
            runtime.block_on(sqlx::Postgres::force_drop_database(&url))?;
            anyhow::Ok(())
        })
        .join();
        if let Ok(Err(err)) = dropped {
            eprintln!("could not drop the test database {}: {err}", self.name);
        }
    }
}

/// The `wavalidate` binary cargo built beside the test executable (target/debug/deps/..).
pub fn binary() -> std::path::PathBuf {
    if let Some(path) = std::env::var_os("WAV_BIN") {
        return path.into();
    }
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .expect("deps")
        .parent()
        .expect("target profile dir");
    dir.join(format!("wavalidate{}", std::env::consts::EXE_SUFFIX))
}

/// Where server processes write their logs.
fn log_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("wavalidate-test-logs");
    std::fs::create_dir_all(&dir).expect("log dir");
    dir
}

/// What every test server runs with: a free port, quick idle polling, and no per-key
/// rate limit (tests poll in tight loops; the rate-limit test turns it on).
/// Tests see progress call by call: 100 simulated numbers a call, not the production 500.
const TEST_SERVE_ARGS: [&str; 13] = [
    "serve",
    "--listen",
    "127.0.0.1:0",
    "--idle-poll-ms",
    "100",
    "--key-rate-per-sec",
    "0",
    "--auth-failures-per-sec",
    "0",
    "--watches-per-account",
    "0",
    "--sim-batch",
    "100",
];

/// What every in-process test server runs with, like `TEST_SERVE_ARGS`: a free port,
/// quick idle polling, no per-key rate limit, no limit on failed keys or watches, 100
/// simulated numbers a call.
pub fn test_settings(url: &str) -> Settings {
    let mut s = Settings::default();
    s.database.url = Secret::new(url);
    s.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    s.workers.idle_poll = ms(100);
    s.api.key_rate_per_sec = 0;
    s.api.auth_failures_per_sec = 0;
    s.api.watches_per_account = 0;
    s.checker.simulated.per_call = 100;
    s
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub store: Store,
    server: Option<Server>,
    /// The database the app was made with, when it made its own.
    db: Option<TestDb>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// A server on a fresh database, with `edit` applied to the test settings.
pub async fn spawn_app_with(edit: impl FnOnce(&mut Settings)) -> TestApp {
    let db = fresh_database().await;
    let mut app = spawn_app_on(db.url.clone(), db.store.clone(), edit).await;
    app.db = Some(db);
    app
}

/// Another server on an existing test database.
pub async fn spawn_app_on(url: String, store: Store, edit: impl FnOnce(&mut Settings)) -> TestApp {
    // Server warnings and errors show up in a failing test's output.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
    let mut settings = test_settings(&url);
    edit(&mut settings);
    let server = wavalidate::app::start(settings)
        .await
        .expect("server starts");
    TestApp {
        addr: server.addr,
        store,
        server: Some(server),
        db: None,
    }
}

impl TestApp {
    /// Watch streams open in this server.
    pub fn active_watches(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.active_watches())
    }

    /// Batches this server's event hub keeps a channel for.
    pub fn watched_batches(&self) -> usize {
        self.server.as_ref().map_or(0, |s| s.watched_batches())
    }

    /// Shuts the server down and waits until it has let go of the database.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.wait().await.expect("clean shutdown");
        }
        self.store.pool().close().await;
    }

    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// A new account with `credits`; returns its id and API key.
    pub async fn account(&self, credits: i64) -> (Uuid, String) {
        let (id, key) = self
            .store
            .create_account("test", credits)
            .await
            .expect("account");
        (id, key.expose().to_string())
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            server.shutdown();
        }
    }
}

pub async fn connect(addr: SocketAddr) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    WaValidationServiceClient::new(channel)
}

pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn submit_request(key: &str, numbers: &[&str]) -> pb::SubmitBatchRequest {
    pb::SubmitBatchRequest {
        api_key: key.to_string(),
        phone_numbers: numbers.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// `n` distinct valid US numbers starting at `from`.
pub fn us_numbers(from: usize, n: usize) -> Vec<String> {
    (from..from + n)
        .map(|i| format!("+1201555{i:04}"))
        .collect()
}

pub async fn submit(client: &mut Client, key: &str, numbers: &[String]) -> pb::SubmitBatchResponse {
    client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.to_string(),
            phone_numbers: numbers.to_vec(),
            ..Default::default()
        })
        .await
        .expect("submit")
        .into_inner()
}

pub async fn poll(client: &mut Client, key: &str, batch_id: &str) -> pb::PollBatchResponse {
    client
        .poll_batch(pb::PollBatchRequest {
            api_key: key.to_string(),
            batch_id: batch_id.to_string(),
        })
        .await
        .expect("poll")
        .into_inner()
}

/// Submits and waits until the batch completes; returns the final poll.
pub async fn submit_and_wait(
    client: &mut Client,
    key: &str,
    numbers: &[String],
) -> pb::PollBatchResponse {
    let sub = submit(client, key, numbers).await;
    wait_completed(client, key, &sub.batch_id).await
}

pub async fn wait_completed(
    client: &mut Client,
    key: &str,
    batch_id: &str,
) -> pb::PollBatchResponse {
    let end = Instant::now() + DEADLINE;
    loop {
        let p = poll(client, key, batch_id).await;
        if p.status == pb::BatchStatus::Completed as i32 {
            return p;
        }
        assert!(
            Instant::now() < end,
            "batch {batch_id} did not complete: {} pending",
            p.pending
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Opens a WatchBatch stream.
pub async fn open_watch(
    client: &mut Client,
    key: &str,
    batch_id: &str,
) -> tonic::Streaming<pb::WatchBatchResponse> {
    client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.to_string(),
            batch_id: batch_id.to_string(),
        })
        .await
        .expect("watch")
        .into_inner()
}

/// Waits until at least `answered` numbers of the batch have a definite answer.
pub async fn wait_for_progress(client: &Client, key: &str, batch_id: &str, answered: i32) {
    wait_until("progress on the batch", || {
        let mut c = client.clone();
        async move { poll(&mut c, key, batch_id).await.completed >= answered }
    })
    .await;
}

/// Collects a whole WatchBatch stream: the results in arrival order and the completed event.
pub async fn watch_all(
    client: &mut Client,
    key: &str,
    batch_id: &str,
) -> (Vec<pb::NumberResult>, pb::BatchCompleted) {
    collect_watch(open_watch(client, key, batch_id).await).await
}

/// Collects the rest of an open WatchBatch stream, as `watch_all` does.
pub async fn collect_watch(
    mut stream: tonic::Streaming<pb::WatchBatchResponse>,
) -> (Vec<pb::NumberResult>, pb::BatchCompleted) {
    let mut results = Vec::new();
    let mut completed = None;
    while let Some(msg) = tokio::time::timeout(DEADLINE, stream.message())
        .await
        .expect("watch event within the deadline")
        .expect("watch stream ok")
    {
        match msg.event.expect("event") {
            pb::watch_batch_response::Event::Result(r) => {
                assert!(completed.is_none(), "result after the completed event");
                results.push(r);
            }
            pb::watch_batch_response::Event::Completed(c) => completed = Some(c),
        }
    }
    (
        results,
        completed.expect("a completed event before the stream ends"),
    )
}

/// Asserts each index 0..total appears exactly once.
pub fn assert_each_index_once(results: &[pb::NumberResult], total: i32) {
    let mut seen = vec![0; total as usize];
    for r in results {
        seen[r.index as usize] += 1;
    }
    let wrong: Vec<usize> = (0..seen.len()).filter(|&i| seen[i] != 1).collect();
    assert!(wrong.is_empty(), "indexes not seen exactly once: {wrong:?}");
}

/// A `wavalidate serve` child process; killed when dropped.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Where its stderr (the logs) goes.
    pub log: std::path::PathBuf,
}

pub async fn spawn_process(url: &str, extra: &[&str], env: &[(&str, &str)]) -> ServerProcess {
    let log_path = log_dir().join(format!("server-{}.log", Uuid::new_v4()));
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = Command::new(binary())
        .args(TEST_SERVE_ARGS)
        .args(extra)
        .env("DATABASE_URL", url)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .expect("spawn wavalidate");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("server prints its address")
        .expect("read stdout")
        .expect("a line");
    let addr = line
        .strip_prefix("wavalidate listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    ServerProcess {
        child,
        addr,
        log: log_path,
    }
}

impl ServerProcess {
    pub async fn kill9(&mut self) {
        self.child.kill().await.expect("SIGKILL");
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id().expect("running") as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
    }

    /// SIGTERM, then the exit status, which must come within the deadline.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("exits after SIGTERM")
            .expect("exit status")
    }
}

/// Deadlocks PostgreSQL detected in the database of `url` (counted when a backend
/// reports its statistics, at the latest when it exits: stop the servers first).
pub async fn deadlocks(url: &str) -> i64 {
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
        .await
        .expect("connect");
    // Every other backend of the database gone, so their statistics are in.
    let end = Instant::now() + DEADLINE;
    loop {
        let others: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap();
        if others == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "other connections to the test database stay open"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    sqlx::query_scalar("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
}

/// Backends of the database behind `pool` now waiting for a lock of this kind
/// (`advisory`, `transactionid`, `tuple`, ...).
pub async fn waiting_for(pool: &sqlx::PgPool, wait_event: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = $1",
    )
    .bind(wait_event)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// GETs `url` with `http` and reads the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: String) -> serde_json::Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// A server's Prometheus page.
pub async fn metrics_page(addr: SocketAddr) -> String {
    let resp = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    resp.text().await.unwrap()
}

/// The sum of every sample of `name` on `page` whose labels contain all of `labels`.
pub fn metric(page: &str, name: &str, labels: &[&str]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Points the workers at this fake gateway (`kind` "waha" or "evolution"), with pacing
/// off; a test's own edits come after these.
pub fn use_gateway(s: &mut Settings, gateway: &crate::fakes::Gateway, kind: &str) {
    let url = Some(format!("http://{}", gateway.addr));
    let key = Some(Secret::new("secret"));
    match kind {
        "waha" => {
            s.checker.backend = CheckerKind::Waha;
            s.checker.waha.url = url;
            s.checker.waha.api_key = key;
        }
        _ => {
            s.checker.backend = CheckerKind::Evolution;
            s.checker.evolution.url = url;
            s.checker.evolution.instance = Some("main".into());
            s.checker.evolution.api_key = key;
        }
    }
    // Fast by default (the fastest an account may go); tests about pacing set their own
    // limits after these.
    s.pacing.rate_per_sec = Some(100.0);
    s.pacing.max_concurrency = Some(8);
    s.pacing.daily_cap = Some(0);
    s.workers.retry_base = ms(10);
    s.workers.retry_max = ms(50);
    s.pacing.rate_limit_backoff = ms(50);
}

/// A server on a fresh database whose workers ask this fake gateway.
pub async fn spawn_gateway_app(
    gateway: &crate::fakes::Gateway,
    kind: &str,
    edit: impl FnOnce(&mut Settings),
) -> TestApp {
    let db = fresh_database().await;
    let mut app = spawn_gateway_app_on(db.url.clone(), db.store.clone(), gateway, kind, edit).await;
    app.db = Some(db);
    app
}

pub async fn spawn_gateway_app_on(
    url: String,
    store: Store,
    gateway: &crate::fakes::Gateway,
    kind: &str,
    edit: impl FnOnce(&mut Settings),
) -> TestApp {
    spawn_app_on(url, store, |s| {
        use_gateway(s, gateway, kind);
        edit(s);
    })
    .await
}

/// A checking account of `kind` ("waha" or "evolution") on this fake gateway, paced at
/// `rate` checks a second with no daily cap; `edit` changes the pacing further.
pub async fn add_account(
    store: &Store,
    name: &str,
    gateway: &crate::fakes::Gateway,
    kind: &str,
    rate: f64,
    edit: impl FnOnce(&mut wavalidate::domain::checker::PacingChange),
) -> Uuid {
    use wavalidate::domain::checker::{AccountBackend, AccountConfig, NewAccount, PacingChange};
    let url = Some(format!("http://{}", gateway.addr));
    let (backend, config) = match kind {
        "waha" => (
            AccountBackend::Waha,
            AccountConfig {
                url,
                api_key: Some("secret".into()),
                ..AccountConfig::default()
            },
        ),
        _ => (
            AccountBackend::Evolution,
            AccountConfig {
                url,
                instance: Some("main".into()),
                api_key: Some("secret".into()),
                ..AccountConfig::default()
            },
        ),
    };
    let mut pacing = PacingChange {
        rate_per_sec: Some(rate),
        max_concurrency: Some(4),
        daily_cap: Some(0),
        ..PacingChange::default()
    };
    edit(&mut pacing);
    let new = NewAccount::parse(name, backend, config, &pacing).expect("valid account");
    store.add_account(&new).await.expect("account added")
}

/// Settings for a server whose workers check through the pool of checking accounts,
/// retrying quickly.
pub fn use_pool(s: &mut Settings) {
    s.checker.backend = CheckerKind::Pool;
    s.workers.retry_base = ms(10);
    s.workers.retry_max = ms(50);
}

/// An account's row of `wavalidate checker list`, by name.
pub async fn account_status(store: &Store, name: &str) -> wavalidate::store::rows::AccountRow {
    store
        .account(name)
        .await
        .expect("accounts readable")
        .unwrap_or_else(|| panic!("no account {name}"))
}

/// The attempt counts the numbers were charged, each once.
pub async fn attempts_made(store: &Store) -> Vec<i32> {
    sqlx::query_scalar("SELECT DISTINCT attempts FROM batch_numbers ORDER BY 1")
        .fetch_all(store.pool())
        .await
        .unwrap()
}

/// The numbers a pool test's fakes register: every third.
pub fn registered(numbers: &[String]) -> Vec<&str> {
    numbers.iter().step_by(3).map(String::as_str).collect()
}

/// The statuses `registered` numbers come to.
pub fn expected(numbers: &[String]) -> Vec<i32> {
    (0..numbers.len())
        .map(|i| {
            if i % 3 == 0 {
                pb::NumberStatus::OnWhatsapp as i32
            } else {
                pb::NumberStatus::NotOnWhatsapp as i32
            }
        })
        .collect()
}

/// A poll's statuses, in index order.
pub fn statuses(p: &pb::PollBatchResponse) -> Vec<i32> {
    p.results.iter().map(|r| r.status).collect()
}

/// Runs `wavalidate checker ARGS` against `url`: (succeeded, stdout, stderr trimmed).
pub fn checker_command(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(binary())
        .arg("checker")
        .args(args)
        .env("DATABASE_URL", url)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    (out.status.success(), stdout, stderr)
}
