//! Outages: the listening connection lost, the database refusing connections, a real
//! PostgreSQL restart. Health follows, requests fail fast, and nothing is lost.
use std::time::Duration;

use tonic::Code;

use wavalidate::pb;
use wavalidate_test_support::*;

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
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let _workers = spawn_app_on(url.clone(), store.clone(), |s| {
        s.server.role = Role::Worker;
        s.checker.simulated.latency = ms(150);
        s.workers.loops = 1;
    })
    .await;
    let proxy = wavalidate_test_support::pgproxy::PgProxy::start(&url).await;
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
    // Open before the outage; what it streams is read meanwhile.
    let watch = tokio::spawn(collect_watch(
        open_watch(&mut client, &key, &sub.batch_id).await,
    ));
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

/// The interleaving forced: a watch is open, its first read of the results waits on a
/// lock, and that read's connection is cut. The watch waits the outage out and streams
/// everything, where it used to end with UNAVAILABLE.
#[tokio::test]
async fn a_watch_whose_first_read_meets_an_outage_waits_it_out() {
    // No backstop re-read meanwhile: the only read of the results is the watch's own.
    let app = spawn_app_with(|s| s.api.watch_backstop = Duration::from_secs(3600)).await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 5)).await;
    watch_all(&mut client, &key, &sub.batch_id).await;

    let mut hold = app.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE batch_numbers IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *hold)
        .await
        .unwrap();
    let watch = tokio::spawn(collect_watch(
        open_watch(&mut client, &key, &sub.batch_id).await,
    ));
    let waiting = "SELECT pid FROM pg_stat_activity
                   WHERE datname = current_database() AND wait_event_type = 'Lock'
                     AND query LIKE '%FROM batch_numbers WHERE batch_id = $1 AND state <> $2%'";
    wait_until("the watch's read to wait on the lock", || async {
        sqlx::query_scalar::<_, i32>(waiting)
            .fetch_optional(app.store.pool())
            .await
            .unwrap()
            .is_some()
    })
    .await;
    let cut: Vec<bool> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT pg_terminate_backend(pid) FROM ({waiting}) w"
    )))
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    assert_eq!(cut, [true]);
    hold.commit().await.unwrap();

    let (results, completed) = watch.await.expect("the watch streams everything");
    assert_each_index_once(&results, 5);
    assert_eq!(completed.completed, 5);
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
