//! Typed settings of `wavalidate serve`: every knob the command line and the `WAV_*`
//! variables set, with its default, checked in one place (`validate`). Tests and the
//! benchmark build a `Settings` directly and change the fields they care about.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;

use crate::checker::pool::Rules;
use crate::domain::checker::{
    AccountBackend, AccountConfig, AccountPacing, DAILY_CAP, FLAG_ACCOUNT_PREFIX, MAX_CONCURRENCY,
    NewAccount, RATE_PER_SEC,
};
use crate::store::checkers::Backoff;

/// The fastest a single account set by flags may check (a rate of 0 means this).
pub const MAX_RATE_PER_SEC: f64 = *RATE_PER_SEC.end();

#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub server: ServerSettings,
    pub api: ApiSettings,
    pub workers: WorkerSettings,
    pub checker: CheckerSettings,
    pub pacing: PacingSettings,
    pub webhooks: WebhookSettings,
    pub maintenance: MaintenanceSettings,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// PostgreSQL URL; created when missing, migrated at start.
    pub url: Secret,
    /// Largest number of connections in this process's pool.
    pub max_connections: u32,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Address for gRPC and the JSON API (port 0 picks a free port).
    pub listen: SocketAddr,
    pub role: Role,
    /// Serve TLS instead of plaintext.
    pub tls: Option<TlsFiles>,
    pub edge: EdgeSettings,
}

/// What a client may hold of the server before and while it is served.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// Open connections at most (lowered to fit the open-file limit); at the cap a new
    /// connection closes the longest-idle one.
    pub max_connections: usize,
    /// Time to send a complete HTTP/1 request head (also the wait for the next request).
    pub header_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// Time, from its head, for a request body to arrive whole.
    pub body_timeout: Duration,
    /// Concurrent HTTP/2 streams per connection.
    pub h2_max_streams: u32,
    /// Bytes of request bodies read, server-wide, before their keys are known (a key in
    /// the body); beyond it such requests are refused with UNAVAILABLE / HTTP 503.
    pub unauthenticated_body_bytes: usize,
}

impl Default for EdgeSettings {
    fn default() -> EdgeSettings {
        EdgeSettings {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            h2_max_streams: 32,
            unauthenticated_body_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Requests per second per API key, bursts of twice that; 0: no limit.
    pub key_rate_per_sec: u32,
    /// Failed authentications per second per peer address, bursts of 4 times that; 0: no limit.
    pub auth_failures_per_sec: u32,
    /// Watch streams (gRPC and SSE) one account may hold open on this server; 0: no limit.
    pub watches_per_account: usize,
    /// Invalid entries and cancelled numbers (refunded, but stored) an account may have an
    /// hour unless the operator set its own limit; 0: no limit.
    pub free_entries_per_hour: i64,
    /// A watch whose client reads nothing this long is closed.
    pub watch_stall: Duration,
    /// Watched batches are re-read this often in case a notification was missed.
    pub watch_backstop: Duration,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Concurrent claim-check-write loops in this process.
    pub loops: usize,
    /// Lease on claimed chunks, renewed while they are worked on.
    pub lease: Duration,
    /// Checker attempts per number before it ends as NUMBER_STATUS_ERROR.
    pub max_attempts: i32,
    /// First retry delay; doubles per attempt, jittered, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// How often an idle worker looks for work without a wake-up.
    pub idle_poll: Duration,
    /// How long in-flight checks may finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// Numbers pending this long while no checking account can take them end as errors,
    /// refunded.
    pub max_pending: Duration,
}

#[derive(Debug, Clone)]
pub struct CheckerSettings {
    pub backend: CheckerKind,
    pub simulated: SimulatedSettings,
    pub waha: WahaSettings,
    pub evolution: EvolutionSettings,
    pub whatsapp_web: WhatsappWebSettings,
    /// Timeout of one gateway HTTP request.
    pub http_timeout: Duration,
    /// How long a checked answer is reused for the same number; zero: never.
    pub cache_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct SimulatedSettings {
    /// Latency of each call.
    pub latency: Duration,
    /// Numbers per call, so per worker claim.
    pub per_call: usize,
    /// Share (0..1) of checks that fail with a retryable error.
    pub error_rate: f64,
}

#[derive(Debug, Clone, Default)]
pub struct WahaSettings {
    pub url: Option<String>,
    pub session: String,
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone, Default)]
pub struct EvolutionSettings {
    pub url: Option<String>,
    pub instance: Option<String>,
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct WhatsappWebSettings {
    /// SQLite file holding the linked session.
    pub session_db: String,
}

/// Pacing that protects the checking account. `None` takes the backend's default
/// (`PacingSettings::resolve`): careful for gateways, unlimited for the simulated checker.
#[derive(Debug, Clone)]
pub struct PacingSettings {
    pub rate_per_sec: Option<f64>,
    pub max_concurrency: Option<usize>,
    pub daily_cap: Option<i64>,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    /// First pause after an upstream rate limit, doubling per repeat up to the max.
    pub rate_limit_backoff: Duration,
    pub rate_limit_backoff_max: Duration,
}

#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Let callback URLs reach loopback and private addresses.
    pub allow_private: bool,
    /// First retry delay; doubles per attempt up to an hour, for up to 24 hours.
    pub retry_base: Duration,
    /// How often the outbox is read when idle.
    pub poll: Duration,
    /// A proxy for deliveries (http://, https:// or socks5:// URL); None: straight to the target.
    pub proxy: Option<String>,
}

#[derive(Debug, Clone)]
pub struct MaintenanceSettings {
    /// Finished batches are deleted this long after completion.
    pub retention: Duration,
    pub retention_every: Duration,
    /// With autovacuum off, vacuum the queue tables once they hold this many dead rows; 0: never.
    pub vacuum_dead_rows: i64,
    pub vacuum_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Serve the gRPC and JSON APIs (and stream results); no workers.
    Api,
    /// Run workers only; serves just grpc.health.v1 and /metrics on --listen.
    Worker,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckerKind {
    /// Deterministic answers computed from the number; no network.
    Simulated,
    /// A WAHA gateway (WAV_WAHA_URL, WAV_WAHA_SESSION, WAV_WAHA_API_KEY).
    Waha,
    /// An Evolution API gateway (WAV_EVOLUTION_URL, WAV_EVOLUTION_INSTANCE, WAV_EVOLUTION_API_KEY).
    Evolution,
    /// A linked WhatsApp Web session (needs the `whatsapp-web` build feature and `wavalidate whatsapp link`).
    WhatsappWeb,
    /// Every usable checking account in the database (`wavalidate checker add ...`).
    Pool,
}

impl CheckerKind {
    /// The backend's name, which keys the result cache and the daily cap.
    pub fn name(self) -> &'static str {
        match self {
            CheckerKind::Simulated => "simulated",
            CheckerKind::Waha => "waha",
            CheckerKind::Evolution => "evolution",
            CheckerKind::WhatsappWeb => "whatsapp-web",
            CheckerKind::Pool => "pool",
        }
    }
}

/// A value that never shows up in logs or debug output (keys, URLs with passwords).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for DatabaseSettings {
    fn default() -> DatabaseSettings {
        DatabaseSettings {
            url: Secret::default(),
            max_connections: 16,
        }
    }
}

impl Default for ServerSettings {
    fn default() -> ServerSettings {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            role: Role::All,
            tls: None,
            edge: EdgeSettings::default(),
        }
    }
}

impl Default for ApiSettings {
    fn default() -> ApiSettings {
        ApiSettings {
            key_rate_per_sec: 50,
            auth_failures_per_sec: 5,
            watches_per_account: 100,
            free_entries_per_hour: 10_000,
            watch_stall: Duration::from_secs(30),
            watch_backstop: Duration::from_millis(2000),
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> WorkerSettings {
        WorkerSettings {
            loops: 4,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(60_000),
            idle_poll: Duration::from_millis(1000),
            shutdown_grace: Duration::from_secs(10),
            max_pending: Duration::from_secs(24 * 3600),
        }
    }
}

impl Default for CheckerSettings {
    fn default() -> CheckerSettings {
        CheckerSettings {
            backend: CheckerKind::Simulated,
            simulated: SimulatedSettings::default(),
            waha: WahaSettings {
                session: "default".into(),
                ..WahaSettings::default()
            },
            evolution: EvolutionSettings::default(),
            whatsapp_web: WhatsappWebSettings::default(),
            http_timeout: Duration::from_millis(15_000),
            cache_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl Default for SimulatedSettings {
    fn default() -> SimulatedSettings {
        SimulatedSettings {
            latency: Duration::ZERO,
            // With no upstream limit, statement costs dominate; 500 rows a statement is
            // where they flatten out.
            per_call: 500,
            error_rate: 0.0,
        }
    }
}

impl Default for WhatsappWebSettings {
    fn default() -> WhatsappWebSettings {
        WhatsappWebSettings {
            session_db: "whatsapp-session.db".into(),
        }
    }
}

impl Default for PacingSettings {
    fn default() -> PacingSettings {
        PacingSettings {
            rate_per_sec: None,
            max_concurrency: None,
            daily_cap: None,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(60),
            rate_limit_backoff: Duration::from_secs(30),
            rate_limit_backoff_max: Duration::from_secs(3600),
        }
    }
}

impl Default for WebhookSettings {
    fn default() -> WebhookSettings {
        WebhookSettings {
            allow_private: false,
            retry_base: Duration::from_millis(5_000),
            poll: Duration::from_millis(1_000),
            proxy: None,
        }
    }
}

impl Default for MaintenanceSettings {
    fn default() -> MaintenanceSettings {
        MaintenanceSettings {
            retention: Duration::from_secs(30 * 24 * 3600),
            retention_every: Duration::from_secs(600),
            vacuum_dead_rows: 200_000,
            vacuum_every: Duration::from_secs(5),
        }
    }
}

impl PacingSettings {
    /// The rules every checking account backs off by (`--checker pool` and a single
    /// backend alike).
    pub fn rules(&self, http_timeout: Duration) -> Rules {
        Rules {
            backoff: Backoff {
                throttle_base: self.rate_limit_backoff,
                failures_before_failing: self.breaker_failures.clamp(1, 1000) as i32,
                failing_cooldown: self.breaker_cooldown,
                // `validate` makes sure it is at least both bases.
                max: self.rate_limit_backoff_max,
            },
            // A trial is one request: it holds the account at most this long.
            trial_lease: http_timeout * 2 + Duration::from_secs(1),
        }
    }

    /// The single account's pacing: what was set, else one careful account's (1 check/s,
    /// one call at a time, 1,000 a day). A rate of 0 ("no limit") is the fastest an
    /// account may go.
    pub fn account_pacing(&self) -> AccountPacing {
        AccountPacing {
            rate_per_sec: match self.rate_per_sec {
                None => 1.0,
                Some(r) if r <= 0.0 => MAX_RATE_PER_SEC,
                Some(r) => r.min(MAX_RATE_PER_SEC),
            },
            max_concurrency: self.max_concurrency.unwrap_or(1).clamp(
                *MAX_CONCURRENCY.start() as usize,
                *MAX_CONCURRENCY.end() as usize,
            ) as i32,
            daily_cap: self
                .daily_cap
                .unwrap_or(1000)
                .clamp(i64::from(*DAILY_CAP.start()), i64::from(*DAILY_CAP.end()))
                as i32,
            warmup_days: 0,
            hours: None,
            timezone: "UTC".into(),
        }
    }
}

/// A setting that cannot work, named as the operator gives it.
#[derive(Debug, thiserror::Error)]
#[error("{flag} ({env}): {problem}")]
pub struct SettingsError {
    pub flag: &'static str,
    pub env: &'static str,
    pub problem: String,
}

fn check(
    ok: bool,
    flag: &'static str,
    env: &'static str,
    problem: impl FnOnce() -> String,
) -> Result<(), SettingsError> {
    if ok {
        Ok(())
    } else {
        Err(SettingsError {
            flag,
            env,
            problem: problem(),
        })
    }
}

/// An http(s) base URL, without a trailing slash.
fn base_url(
    value: Option<&str>,
    flag: &'static str,
    env: &'static str,
    example: &str,
) -> Result<String, SettingsError> {
    let value = value.map(str::trim).filter(|v| !v.is_empty());
    let value = value.ok_or_else(|| SettingsError {
        flag,
        env,
        problem: format!("is not set: give the gateway's base URL, e.g. {example}"),
    })?;
    let url = reqwest::Url::parse(value).map_err(|e| SettingsError {
        flag,
        env,
        problem: format!("{value:?} is not a URL: {e}"),
    })?;
    check(matches!(url.scheme(), "http" | "https"), flag, env, || {
        format!("{value:?} must be an http:// or https:// URL")
    })?;
    Ok(value.trim_end_matches('/').to_string())
}

fn required<'a>(
    value: Option<&'a str>,
    flag: &'static str,
    env: &'static str,
    what: &str,
) -> Result<&'a str, SettingsError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| SettingsError {
            flag,
            env,
            problem: format!("is not set: {what}"),
        })
}

impl Settings {
    /// The checking account a single backend set by flags checks through, named after its
    /// backend under a reserved prefix (`checker add` refuses names that start with it).
    pub fn flag_account(&self) -> anyhow::Result<NewAccount> {
        let c = &self.checker;
        let key = |k: &Option<Secret>| k.as_ref().map(|k| k.expose().to_string());
        let (backend, config) = match c.backend {
            CheckerKind::Waha => (
                AccountBackend::Waha,
                AccountConfig {
                    url: c.waha.url.clone(),
                    session: Some(c.waha.session.trim().to_string()),
                    api_key: key(&c.waha.api_key),
                    ..AccountConfig::default()
                },
            ),
            CheckerKind::Evolution => (
                AccountBackend::Evolution,
                AccountConfig {
                    url: c.evolution.url.clone(),
                    instance: c.evolution.instance.clone(),
                    api_key: key(&c.evolution.api_key),
                    ..AccountConfig::default()
                },
            ),
            CheckerKind::WhatsappWeb => (
                AccountBackend::WhatsappWeb,
                AccountConfig {
                    session_db: Some(c.whatsapp_web.session_db.clone()),
                    ..AccountConfig::default()
                },
            ),
            CheckerKind::Simulated | CheckerKind::Pool => {
                anyhow::bail!("--checker {} has no account of its own", c.backend.name())
            }
        };
        Ok(NewAccount {
            name: format!("{FLAG_ACCOUNT_PREFIX}{}", backend.name()),
            backend,
            config,
            pacing: self.pacing.account_pacing(),
        })
    }

    /// Checks every value once, before anything starts; the first problem found is
    /// reported as one line naming its flag and variable.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let ms = Duration::from_millis;
        check(
            !self.database.url.expose().trim().is_empty(),
            "--database-url",
            "DATABASE_URL",
            || "no database: set DATABASE_URL or pass --database-url".into(),
        )?;
        check(
            self.database.max_connections >= 1,
            "--db-max-connections",
            "WAV_DB_MAX_CONNECTIONS",
            || "must be at least 1".into(),
        )?;
        let w = &self.workers;
        check(w.loops >= 1, "--workers", "WAV_WORKERS", || {
            "must be at least 1".into()
        })?;
        check(
            w.lease >= Duration::from_secs(1),
            "--lease-secs",
            "WAV_LEASE_SECS",
            || "must be at least 1 second".into(),
        )?;
        check(
            w.max_attempts >= 1,
            "--max-attempts",
            "WAV_MAX_ATTEMPTS",
            || "must be at least 1".into(),
        )?;
        check(
            w.retry_max >= w.retry_base,
            "--retry-max-ms",
            "WAV_RETRY_MAX_MS",
            || "must not be below --retry-base-ms".into(),
        )?;
        check(
            w.idle_poll >= ms(10),
            "--idle-poll-ms",
            "WAV_IDLE_POLL_MS",
            || "must be at least 10 ms".into(),
        )?;
        let api = &self.api;
        check(
            api.watch_stall >= Duration::from_secs(1),
            "--watch-stall-secs",
            "WAV_WATCH_STALL_SECS",
            || "must be at least 1 second".into(),
        )?;
        check(
            api.watch_backstop >= ms(50),
            "--watch-backstop-ms",
            "WAV_WATCH_BACKSTOP_MS",
            || "must be at least 50 ms".into(),
        )?;
        let c = &self.checker;
        check(
            c.http_timeout >= ms(1),
            "--http-timeout-ms",
            "WAV_HTTP_TIMEOUT_MS",
            || "must be at least 1 ms".into(),
        )?;
        check(
            c.simulated.per_call >= 1,
            "--sim-batch",
            "WAV_SIM_BATCH",
            || "must be at least 1".into(),
        )?;
        check(
            (0.0..=1.0).contains(&c.simulated.error_rate),
            "--sim-error-rate",
            "WAV_SIM_ERROR_RATE",
            || "must be between 0 and 1".into(),
        )?;
        match c.backend {
            CheckerKind::Simulated | CheckerKind::WhatsappWeb | CheckerKind::Pool => {}
            CheckerKind::Waha => {
                base_url(
                    c.waha.url.as_deref(),
                    "--waha-url",
                    "WAV_WAHA_URL",
                    "http://127.0.0.1:3000",
                )?;
                required(
                    Some(c.waha.session.as_str()),
                    "--waha-session",
                    "WAV_WAHA_SESSION",
                    "give the WAHA session name",
                )?;
            }
            CheckerKind::Evolution => {
                base_url(
                    c.evolution.url.as_deref(),
                    "--evolution-url",
                    "WAV_EVOLUTION_URL",
                    "http://127.0.0.1:8080",
                )?;
                required(
                    c.evolution.instance.as_deref(),
                    "--evolution-instance",
                    "WAV_EVOLUTION_INSTANCE",
                    "give the Evolution API instance name",
                )?;
                required(
                    c.evolution.api_key.as_ref().map(Secret::expose),
                    "--evolution-api-key",
                    "WAV_EVOLUTION_API_KEY",
                    "Evolution API requires its apikey header",
                )?;
            }
        }
        // The single backend's account: the door's bounds (`domain::checker`), 0 for the
        // fastest rate.
        let p = &self.pacing;
        check(
            p.rate_per_sec
                .is_none_or(|r| r == 0.0 || RATE_PER_SEC.contains(&r)),
            "--rate-per-sec",
            "WAV_RATE_PER_SEC",
            || {
                format!(
                    "must be between {} and {} checks per second, or 0 for {}",
                    RATE_PER_SEC.start(),
                    RATE_PER_SEC.end(),
                    RATE_PER_SEC.end()
                )
            },
        )?;
        check(
            p.max_concurrency
                .is_none_or(|c| i32::try_from(c).is_ok_and(|c| MAX_CONCURRENCY.contains(&c))),
            "--max-concurrency",
            "WAV_MAX_CONCURRENCY",
            || {
                format!(
                    "must be between {} and {}",
                    MAX_CONCURRENCY.start(),
                    MAX_CONCURRENCY.end()
                )
            },
        )?;
        check(
            p.daily_cap
                .is_none_or(|c| i32::try_from(c).is_ok_and(|c| DAILY_CAP.contains(&c))),
            "--daily-cap",
            "WAV_DAILY_CAP",
            || {
                format!(
                    "must be between {} and {} (0 for none)",
                    DAILY_CAP.start(),
                    DAILY_CAP.end()
                )
            },
        )?;
        check(
            p.breaker_failures >= 1,
            "--breaker-failures",
            "WAV_BREAKER_FAILURES",
            || "must be at least 1".into(),
        )?;
        check(
            p.breaker_cooldown >= Duration::from_secs(1),
            "--breaker-cooldown-secs",
            "WAV_BREAKER_COOLDOWN_SECS",
            || "must be at least 1 (an open circuit must rest)".into(),
        )?;
        check(
            p.rate_limit_backoff >= ms(10),
            "--rate-limit-backoff-ms",
            "WAV_RATE_LIMIT_BACKOFF_MS",
            || "must be at least 10 (a rate-limited account must rest)".into(),
        )?;
        check(
            p.rate_limit_backoff_max >= p.rate_limit_backoff.max(p.breaker_cooldown),
            "--rate-limit-backoff-max-ms",
            "WAV_RATE_LIMIT_BACKOFF_MAX_MS",
            || {
                format!(
                    "must be at least --rate-limit-backoff-ms and --breaker-cooldown-secs ({} ms)",
                    p.rate_limit_backoff.max(p.breaker_cooldown).as_millis()
                )
            },
        )?;
        check(
            self.webhooks.proxy.as_deref().is_none_or(|p| {
                reqwest::Proxy::all(p).is_ok()
                    && ["http://", "https://", "socks5://", "socks5h://"]
                        .iter()
                        .any(|s| p.starts_with(s))
            }),
            "--webhook-proxy",
            "WAV_WEBHOOK_PROXY",
            || "must be a proxy URL: http://host:port, https://... or socks5://...".into(),
        )?;
        check(
            self.webhooks.poll >= ms(10),
            "--webhook-poll-ms",
            "WAV_WEBHOOK_POLL_MS",
            || "must be at least 10 ms".into(),
        )?;
        let m = &self.maintenance;
        check(
            m.retention_every >= ms(100),
            "--retention-every",
            "WAV_RETENTION_EVERY",
            || "must be at least 100ms".into(),
        )?;
        check(
            m.vacuum_every >= ms(100),
            "--vacuum-every",
            "WAV_VACUUM_EVERY",
            || "must be at least 100ms".into(),
        )?;
        check(
            m.vacuum_dead_rows >= 0,
            "--vacuum-dead-rows",
            "WAV_VACUUM_DEAD_ROWS",
            || "must not be negative (0: never)".into(),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Settings {
        let mut s = Settings::default();
        s.database.url = Secret::new("postgres://127.0.0.1/x");
        s
    }

    #[test]
    fn defaults_are_valid_once_there_is_a_database() {
        assert!(valid().validate().is_ok());
        let err = Settings::default().validate().unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL"), "{err}");
    }

    #[test]
    fn a_bad_value_is_one_line_naming_its_flag_and_variable() {
        let mut s = valid();
        s.workers.lease = Duration::ZERO;
        assert_eq!(
            s.validate().unwrap_err().to_string(),
            "--lease-secs (WAV_LEASE_SECS): must be at least 1 second"
        );
        let mut s = valid();
        s.checker.backend = CheckerKind::Evolution;
        s.checker.evolution.url = Some("http://127.0.0.1:8080".into());
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("--evolution-instance (WAV_EVOLUTION_INSTANCE)"),
            "{err}"
        );
    }

    #[test]
    fn a_single_accounts_pacing_is_careful_unless_set() {
        let p = PacingSettings::default();
        assert_eq!(p.account_pacing().rate_per_sec, 1.0);
        assert_eq!(p.account_pacing().daily_cap, 1000);
        assert_eq!(p.account_pacing().max_concurrency, 1);
        let set = PacingSettings {
            daily_cap: Some(0),
            rate_per_sec: Some(0.0),
            ..PacingSettings::default()
        };
        assert_eq!(set.account_pacing().daily_cap, 0);
        assert_eq!(set.account_pacing().rate_per_sec, MAX_RATE_PER_SEC);
    }
}
