//! The command line: every flag also reads a `WAV_*` environment variable. `serve`'s
//! flags become a `Settings` here, and nowhere else.
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::settings::{CheckerKind, Role, Secret, Settings, SettingsError, TlsFiles};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(
    name = "wavalidate",
    version,
    about = "Tells which phone numbers are on WhatsApp, in batches of up to 1,000"
)]
pub struct Cli {
    /// PostgreSQL connection URL.
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run migrations, then serve gRPC and/or run workers until SIGTERM/SIGINT.
    // A flag given twice takes its last value, so scripts can override defaults.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts and their credits.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Manage the checking accounts `serve --checker pool` spreads checks over.
    #[command(subcommand)]
    Checker(CheckerCommand),
    /// Link a WhatsApp account for the whatsapp-web checker.
    #[command(subcommand)]
    Whatsapp(WhatsappCommand),
    /// Client: submit a file of numbers (split into batches of 1,000), optionally watch and save results.
    Submit(SubmitArgs),
    /// Client: a batch's progress and results, as JSON.
    Poll {
        #[command(flatten)]
        conn: ClientArgs,
        batch_id: String,
    },
    /// Client: stream a batch's results as they are written.
    Watch {
        #[command(flatten)]
        conn: ClientArgs,
        batch_id: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Jsonl)]
        format: OutputFormat,
    },
    /// Measure submit latency, ingest and end-to-end throughput and delivery latency, beside the PostgreSQL floor.
    Bench(BenchArgs),
    /// Client: the account's credits.
    Balance {
        #[command(flatten)]
        conn: ClientArgs,
    },
}

/// Where the client commands find the server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Server address.
    #[arg(long, env = "WAV_SERVER", default_value = "http://127.0.0.1:50051")]
    pub server: String,
    /// API key.
    #[arg(long, env = "WAV_API_KEY", hide_env_values = true)]
    pub api_key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Csv,
    Jsonl,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Drive this running server instead of starting one in-process on a fresh database.
    #[arg(long, env = "WAV_BENCH_SERVER")]
    pub server: Option<String>,
    /// API key for --server (its account needs credits).
    #[arg(long, env = "WAV_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Open the watch streams on this server (another replica sharing the database); --server by default.
    #[arg(long, env = "WAV_BENCH_WATCH_SERVER", requires = "server")]
    pub watch_server: Option<String>,
    /// Sequential 1,000-number submits timed one by one (after one untimed warm-up submit).
    #[arg(long, default_value_t = 100)]
    pub submits: usize,
    /// 1,000-number batches sent by concurrent submitters for the ingest figure (200: a
    /// window of a few seconds, like the floor's; 40 took half a second and moved ±20%).
    #[arg(long, default_value_t = 200)]
    pub ingest_batches: usize,
    /// 1,000-number batches submitted and watched for the end-to-end figure (as many as
    /// --watchers by default: one stream per batch, as its submitter would watch it).
    #[arg(long, default_value_t = 1000)]
    pub batches: usize,
    /// Concurrent submitters.
    #[arg(long, default_value_t = 4)]
    pub submitters: usize,
    /// Accounts the ingest phase's submitters spread over (submitter s uses account s mod N),
    /// as the floor's ingest spreads over 100; 1: every submit debits the same account row.
    /// Needs the bench's own server.
    #[arg(long, default_value_t = 1)]
    pub ingest_accounts: usize,
    /// WatchBatch streams opened during the end-to-end phase, spread over its batches (more
    /// than --batches: several streams per batch, each result sent to each of them).
    #[arg(long, default_value_t = 1000)]
    pub watchers: usize,
    /// Worker loops of the in-process server.
    #[arg(long, default_value_t = 4)]
    pub workers: usize,
    /// With the bench's own server: queue this many batches while no worker runs, open one
    /// stream on each, then start the workers, so delivery is timed with every stream
    /// open at once (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub held_watchers: usize,
    /// Then compare how fast workers drain a small backlog and one of this many numbers (another
    /// account), with watched batches beside it, and measure end to end again after it is worked off.
    #[arg(long, default_value_t = 0)]
    pub backlog: i64,
    /// ../shared/bench/pg_floor.sh by default.
    #[arg(long)]
    pub floor_script: Option<std::path::PathBuf>,
    /// Seconds per phase of the floor measurement.
    #[arg(long, default_value_t = 5)]
    pub floor_seconds: u64,
}

#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub conn: ClientArgs,
    /// One number per line, or a CSV file with --column; `-` reads standard input.
    pub file: String,
    /// CSV column holding the numbers: its header name, or its 1-based position.
    #[arg(long, env = "WAV_COLUMN")]
    pub column: Option<String>,
    /// Region for numbers written without +, e.g. US.
    #[arg(long, env = "WAV_DEFAULT_REGION", default_value = "")]
    pub default_region: String,
    /// Idempotency prefix: batch i is sent with request_id PREFIX-i, so re-running is free.
    #[arg(long, env = "WAV_REQUEST_ID")]
    pub request_id: Option<String>,
    /// Check upstream even when a cached answer exists.
    #[arg(long)]
    pub force_check: bool,
    /// Wait for the results, with a progress bar, and write them out.
    #[arg(long)]
    pub watch: bool,
    /// Results file (with --watch); standard output when absent.
    #[arg(long, short)]
    pub output: Option<String>,
    #[arg(long, value_enum, default_value_t = OutputFormat::Csv)]
    pub format: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum CheckerCommand {
    /// Add a checking account; prints {"checker_id", "name"}.
    Add(AddAccountArgs),
    /// Every checking account and its state, as a JSON array.
    List,
    /// Stop giving the account checks until `resume` (running servers follow within seconds).
    Pause {
        #[arg(long)]
        name: String,
    },
    /// Use a paused account again.
    Resume {
        #[arg(long)]
        name: String,
    },
    /// Change an account's pacing; flags left out keep their values.
    Update {
        #[arg(long)]
        name: String,
        #[command(flatten)]
        pacing: PacingArgs,
    },
    /// Remove an account (its linked WhatsApp Web session file is left in place).
    Remove {
        #[arg(long)]
        name: String,
    },
    /// Link a whatsapp-web account: prints a pair code (and a QR code) for the phone.
    Link {
        #[arg(long)]
        name: String,
        /// The account's phone number with country code, e.g. +14155552671.
        #[arg(long)]
        phone: String,
    },
}

#[derive(Debug, Clone, Args)]
pub struct AddAccountArgs {
    /// A name for the account (letters, digits, '-', '_', '.'); other commands take it.
    #[arg(long)]
    pub name: String,
    /// What the account checks through.
    #[arg(long, value_enum)]
    pub backend: crate::domain::checker::AccountBackend,
    /// waha, evolution: the gateway's base URL, e.g. http://127.0.0.1:3000.
    #[arg(long)]
    pub url: Option<String>,
    /// waha: the session name [default: default].
    #[arg(long)]
    pub session: Option<String>,
    /// evolution: the instance name.
    #[arg(long)]
    pub instance: Option<String>,
    /// waha (X-Api-Key, when the gateway wants one), evolution (apikey, required).
    #[arg(long)]
    pub api_key: Option<String>,
    /// whatsapp-web: the SQLite file of the linked session [default: whatsapp-NAME.db].
    #[arg(long)]
    pub session_db: Option<String>,
    #[command(flatten)]
    pub pacing: PacingArgs,
}

/// The pacing that protects one checking account.
// Numbers may look negative (`--rate-per-sec -1`): taken as values, so the bounds refuse
// them naming flag and value, not read as a stray flag.
#[derive(Debug, Clone, Args)]
pub struct PacingArgs {
    /// Checks per second at most, 0.0001 to 100, shared by every replica [default for a new account: 0.5, 30 a minute].
    #[arg(long, allow_negative_numbers = true)]
    pub rate_per_sec: Option<f64>,
    /// Checks per day (in --timezone), shared by every replica, 0 to 100000; 0: none [default: 500].
    #[arg(long, allow_negative_numbers = true)]
    pub daily_cap: Option<i32>,
    /// Calls to the account in flight at once, in each process, 1 to 64 [default: 1].
    #[arg(long, allow_negative_numbers = true)]
    pub max_concurrency: Option<i32>,
    /// Ramp the daily cap up over the account's first days, 0 to 365 (day 1 of 7 gets 1/8 of it) [default: 0].
    #[arg(long, allow_negative_numbers = true)]
    pub warmup_days: Option<i32>,
    /// Check only between these local times, HH:MM-HH:MM (overnight allowed); `any` for no limit.
    #[arg(long)]
    pub hours: Option<String>,
    /// The time zone of --hours and of the daily cap's day, e.g. Europe/Berlin [default: UTC].
    #[arg(long)]
    pub timezone: Option<String>,
}

impl PacingArgs {
    pub fn change(&self) -> crate::domain::checker::PacingChange {
        crate::domain::checker::PacingChange {
            rate_per_sec: self.rate_per_sec,
            max_concurrency: self.max_concurrency,
            daily_cap: self.daily_cap,
            warmup_days: self.warmup_days,
            hours: self.hours.clone(),
            timezone: self.timezone.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum WhatsappCommand {
    /// Pair an account by pair code (a QR code is printed too); the session is kept in --session-db.
    Link {
        /// The account's phone number with country code, e.g. +14155552671.
        #[arg(long, env = "WAV_WHATSAPP_PHONE")]
        phone: String,
        /// SQLite file holding the WhatsApp session.
        #[arg(
            long,
            env = "WAV_WHATSAPP_SESSION_DB",
            default_value = "whatsapp-session.db"
        )]
        session_db: String,
    },
}

/// `serve`'s defaults are the settings' own (one place: `Settings::default`).
fn defaults() -> Settings {
    Settings::default()
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn human(d: Duration) -> humantime::Duration {
    d.into()
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC and the JSON API on (port 0 picks a free port).
    #[arg(long, env = "WAV_LISTEN", default_value_t = defaults().server.listen)]
    pub listen: SocketAddr,
    /// What this process does.
    #[arg(long, env = "WAV_ROLE", value_enum, default_value_t = defaults().server.role)]
    pub role: Role,
    /// Concurrent worker loops in this process.
    #[arg(long, env = "WAV_WORKERS", default_value_t = defaults().workers.loops)]
    pub workers: usize,
    /// Checker backend.
    #[arg(long, env = "WAV_CHECKER", value_enum, default_value_t = defaults().checker.backend)]
    pub checker: CheckerKind,
    /// Seconds a claimed chunk of numbers stays leased to a worker; renewed while it is worked on.
    #[arg(long, env = "WAV_LEASE_SECS", default_value_t = defaults().workers.lease.as_secs())]
    pub lease_secs: u64,
    /// Checker attempts per number before it ends as NUMBER_STATUS_ERROR.
    #[arg(long, env = "WAV_MAX_ATTEMPTS", default_value_t = defaults().workers.max_attempts)]
    pub max_attempts: i32,
    /// First retry delay in milliseconds; doubles per attempt, with jitter.
    #[arg(long, env = "WAV_RETRY_BASE_MS", default_value_t = ms(defaults().workers.retry_base))]
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, env = "WAV_RETRY_MAX_MS", default_value_t = ms(defaults().workers.retry_max))]
    pub retry_max_ms: u64,
    /// Simulated checker: latency of each call in milliseconds (a call covers up to --sim-batch numbers).
    #[arg(long, env = "WAV_SIM_LATENCY_MS", default_value_t = ms(defaults().checker.simulated.latency))]
    pub sim_latency_ms: u64,
    /// Simulated checker: numbers per call, so per worker claim.
    #[arg(long, env = "WAV_SIM_BATCH", default_value_t = defaults().checker.simulated.per_call)]
    pub sim_batch: usize,
    /// Simulated checker: chance (0..1) that a number's check fails with a retryable error.
    #[arg(long, env = "WAV_SIM_ERROR_RATE", default_value_t = defaults().checker.simulated.error_rate)]
    pub sim_error_rate: f64,
    /// WAHA: gateway base URL, e.g. http://127.0.0.1:3000.
    #[arg(long, env = "WAV_WAHA_URL")]
    pub waha_url: Option<String>,
    /// WAHA: session name.
    #[arg(long, env = "WAV_WAHA_SESSION", default_value_t = defaults().checker.waha.session)]
    pub waha_session: String,
    /// WAHA: value of the X-Api-Key header, when the gateway requires one.
    #[arg(long, env = "WAV_WAHA_API_KEY", hide_env_values = true)]
    pub waha_api_key: Option<String>,
    /// Evolution API: gateway base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, env = "WAV_EVOLUTION_URL")]
    pub evolution_url: Option<String>,
    /// Evolution API: instance name.
    #[arg(long, env = "WAV_EVOLUTION_INSTANCE")]
    pub evolution_instance: Option<String>,
    /// Evolution API: value of the apikey header.
    #[arg(long, env = "WAV_EVOLUTION_API_KEY", hide_env_values = true)]
    pub evolution_api_key: Option<String>,
    /// whatsapp-web: SQLite file holding the linked session.
    #[arg(long, env = "WAV_WHATSAPP_SESSION_DB", default_value_t = defaults().checker.whatsapp_web.session_db)]
    pub whatsapp_session_db: String,
    /// Timeout of one gateway HTTP request (ms).
    #[arg(long, env = "WAV_HTTP_TIMEOUT_MS", default_value_t = ms(defaults().checker.http_timeout))]
    pub http_timeout_ms: u64,
    /// A single backend's account: checks per second, shared by every replica; 0 for the most an account may (100) [default: 1].
    #[arg(long, allow_negative_numbers = true, env = "WAV_RATE_PER_SEC")]
    pub rate_per_sec: Option<f64>,
    /// A single backend's account: calls in flight at once per process [default: 1].
    #[arg(long, allow_negative_numbers = true, env = "WAV_MAX_CONCURRENCY")]
    pub max_concurrency: Option<usize>,
    /// A single backend's account: checks per UTC day across all replicas, 0 for none [default: 1000].
    #[arg(long, allow_negative_numbers = true, env = "WAV_DAILY_CAP")]
    pub daily_cap: Option<i64>,
    /// Failed requests in a row that open a checking account's circuit (every account's).
    #[arg(long, allow_negative_numbers = true, env = "WAV_BREAKER_FAILURES", default_value_t = defaults().pacing.breaker_failures)]
    pub breaker_failures: u32,
    /// Seconds an open circuit rests before a trial number, doubling per failed trial.
    #[arg(long, allow_negative_numbers = true, env = "WAV_BREAKER_COOLDOWN_SECS", default_value_t = defaults().pacing.breaker_cooldown.as_secs())]
    pub breaker_cooldown_secs: u64,
    /// A throttled account's first rest after a rate limit (429), doubling per one in a row (ms).
    #[arg(long, allow_negative_numbers = true, env = "WAV_RATE_LIMIT_BACKOFF_MS", default_value_t = ms(defaults().pacing.rate_limit_backoff))]
    pub rate_limit_backoff_ms: u64,
    /// Longest rest either backoff doubles to (ms); a longer Retry-After is still honoured.
    #[arg(long, allow_negative_numbers = true, env = "WAV_RATE_LIMIT_BACKOFF_MAX_MS", default_value_t = ms(defaults().pacing.rate_limit_backoff_max))]
    pub rate_limit_backoff_max_ms: u64,
    /// How long a checked answer is reused for the same number, e.g. 7d, 12h, 0s to disable.
    #[arg(long, env = "WAV_CACHE_TTL", default_value_t = human(defaults().checker.cache_ttl))]
    pub cache_ttl: humantime::Duration,
    /// Let callback URLs reach loopback and private addresses (off: only public hosts).
    #[arg(long, env = "WAV_WEBHOOK_ALLOW_PRIVATE", action = clap::ArgAction::SetTrue,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub webhook_allow_private: bool,
    /// First webhook retry delay (ms); doubles per attempt up to an hour, for up to 24 hours.
    #[arg(long, env = "WAV_WEBHOOK_RETRY_BASE_MS", default_value_t = ms(defaults().webhooks.retry_base))]
    pub webhook_retry_base_ms: u64,
    /// How often the webhook outbox is read when idle (ms).
    #[arg(long, env = "WAV_WEBHOOK_POLL_MS", default_value_t = ms(defaults().webhooks.poll))]
    pub webhook_poll_ms: u64,
    /// Send webhook deliveries through this proxy (http://, https:// or socks5:// URL); by default they go straight to their targets, ignoring HTTP_PROXY and the like.
    #[arg(long, env = "WAV_WEBHOOK_PROXY")]
    pub webhook_proxy: Option<String>,
    /// PEM certificate chain: serve TLS (with --tls-key) instead of plaintext.
    #[arg(long, env = "WAV_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "WAV_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Finished batches (and their numbers) are deleted this long after completion; the ledger and request ids are kept.
    #[arg(long, env = "WAV_RETENTION", default_value_t = human(defaults().maintenance.retention))]
    pub retention: humantime::Duration,
    /// How often retention runs.
    #[arg(long, env = "WAV_RETENTION_EVERY", default_value_t = human(defaults().maintenance.retention_every))]
    pub retention_every: humantime::Duration,
    /// With autovacuum off, processes running workers vacuum the queue tables once they
    /// hold this many dead rows; 0: never.
    #[arg(long, env = "WAV_VACUUM_DEAD_ROWS", default_value_t = defaults().maintenance.vacuum_dead_rows)]
    pub vacuum_dead_rows: i64,
    /// How often the dead rows are counted for --vacuum-dead-rows.
    #[arg(long, env = "WAV_VACUUM_EVERY", default_value_t = human(defaults().maintenance.vacuum_every))]
    pub vacuum_every: humantime::Duration,
    /// Largest number of database connections in this process's pool.
    #[arg(long, env = "WAV_DB_MAX_CONNECTIONS", default_value_t = defaults().database.max_connections)]
    pub db_max_connections: u32,
    /// How often watched batches are re-read in case a notification was missed (ms).
    #[arg(long, env = "WAV_WATCH_BACKSTOP_MS", default_value_t = ms(defaults().api.watch_backstop))]
    pub watch_backstop_ms: u64,
    /// Requests per second per API key, bursts of twice that; beyond it RESOURCE_EXHAUSTED / HTTP 429. 0: no limit.
    #[arg(long, env = "WAV_KEY_RATE_PER_SEC", default_value_t = defaults().api.key_rate_per_sec)]
    pub key_rate_per_sec: u32,
    /// Open connections at most (lowered to fit the open-file limit); at the cap a new connection closes the longest-idle one.
    #[arg(long, env = "WAV_MAX_CONNECTIONS", default_value_t = defaults().server.edge.max_connections)]
    pub max_connections: usize,
    /// Time a client has to send a complete HTTP/1 request head, and to start the next one.
    #[arg(long, env = "WAV_HEADER_TIMEOUT", default_value_t = human(defaults().server.edge.header_timeout))]
    pub header_timeout: humantime::Duration,
    /// A connection with no request in flight this long is closed.
    #[arg(long, env = "WAV_IDLE_TIMEOUT", default_value_t = human(defaults().server.edge.idle_timeout))]
    pub idle_timeout: humantime::Duration,
    /// Time, from its head, for a request body to arrive whole.
    #[arg(long, env = "WAV_BODY_TIMEOUT", default_value_t = human(defaults().server.edge.body_timeout))]
    pub body_timeout: humantime::Duration,
    /// Concurrent HTTP/2 streams per connection.
    #[arg(long, env = "WAV_H2_MAX_STREAMS", default_value_t = defaults().server.edge.h2_max_streams)]
    pub h2_max_streams: u32,
    /// KiB of request bodies read, server-wide, before their keys are known (a key in the body, none in the headers); beyond it UNAVAILABLE / HTTP 503.
    #[arg(long, env = "WAV_UNAUTHENTICATED_BODY_KIB", default_value_t = defaults().server.edge.unauthenticated_body_bytes / 1024)]
    pub unauthenticated_body_kib: usize,
    /// Failed authentications per second per client address (bursts of 4 times that); beyond it every key from that address is refused with RESOURCE_EXHAUSTED / HTTP 429 without a lookup. 0: no limit.
    #[arg(long, env = "WAV_AUTH_FAILURES_PER_SEC", default_value_t = defaults().api.auth_failures_per_sec)]
    pub auth_failures_per_sec: u32,
    /// Watch streams (gRPC WatchBatch and SSE) one account may hold open on this server; beyond it RESOURCE_EXHAUSTED / HTTP 429. 0: no limit.
    #[arg(long, env = "WAV_WATCHES_PER_ACCOUNT", default_value_t = defaults().api.watches_per_account)]
    pub watches_per_account: usize,
    /// Invalid entries and cancelled numbers (refunded, but stored) an account may have an hour, unless set for the account (`wavalidate account limits`); past it a batch is refused whole with RESOURCE_EXHAUSTED / HTTP 429. 0: no limit.
    #[arg(long, env = "WAV_FREE_ENTRIES_PER_HOUR", default_value_t = defaults().api.free_entries_per_hour, value_parser = clap::value_parser!(i64).range(0..))]
    pub free_entries_per_hour: i64,
    /// Seconds a watch waits for a client that stopped reading before closing its stream.
    #[arg(long, env = "WAV_WATCH_STALL_SECS", default_value_t = defaults().api.watch_stall.as_secs())]
    pub watch_stall_secs: u64,
    /// How often an idle worker looks for work without a wake-up (ms).
    #[arg(long, env = "WAV_IDLE_POLL_MS", default_value_t = ms(defaults().workers.idle_poll))]
    pub idle_poll_ms: u64,
    /// Seconds in-flight checks may finish after SIGTERM before their numbers are handed back.
    #[arg(long, env = "WAV_SHUTDOWN_GRACE_SECS", default_value_t = defaults().workers.shutdown_grace.as_secs())]
    pub shutdown_grace_secs: u64,
    /// Numbers pending this long while no checking account can take them end as NUMBER_STATUS_ERROR, refunded.
    #[arg(long, env = "WAV_MAX_PENDING", default_value_t = human(defaults().workers.max_pending))]
    pub max_pending: humantime::Duration,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; prints {"account_id", "api_key"} once.
    Create {
        #[arg(long, env = "WAV_ACCOUNT_NAME")]
        name: String,
        /// Opening balance.
        #[arg(long, env = "WAV_CREDITS", default_value_t = 0, value_parser = clap::value_parser!(i64).range(0..))]
        credits: i64,
    },
    /// Show the account's webhook signing secret (or rotate it first with --rotate).
    WebhookSecret {
        #[arg(long, env = "WAV_ACCOUNT_ID")]
        account_id: Uuid,
        /// Replace the secret; deliveries from now on are signed with the new one.
        #[arg(long)]
        rotate: bool,
    },
    /// Set the account's own limits (what it may cost the service without paying).
    Limits {
        #[arg(long, env = "WAV_ACCOUNT_ID")]
        account_id: Uuid,
        /// Invalid entries and cancelled numbers the account may have an hour: a number (0: no limit), or `default` for the server's WAV_FREE_ENTRIES_PER_HOUR.
        #[arg(long, value_parser = parse_limit)]
        free_entries_per_hour: Limit,
    },
    /// Add credits to an account.
    Credit {
        #[arg(long, env = "WAV_ACCOUNT_ID")]
        account_id: Uuid,
        /// Credits to add (at least 1).
        #[arg(long, env = "WAV_AMOUNT", value_parser = clap::value_parser!(i64).range(1..))]
        amount: i64,
    },
}

/// An account's own limit, or the server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Default,
    Own(i32),
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    match text.trim() {
        "default" => Ok(Limit::Default),
        n => n
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Limit::Own)
            .ok_or_else(|| format!("{n:?} is not a count (0 or more) or `default`")),
    }
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create another API key for an account; prints {"account_id", "api_key"}.
    Create {
        #[arg(long, env = "WAV_ACCOUNT_ID")]
        account_id: Uuid,
    },
    /// Revoke an API key; requests with it then get UNAUTHENTICATED.
    Revoke {
        #[arg(long, env = "WAV_API_KEY", hide_env_values = true)]
        key: String,
    },
}

impl ServeArgs {
    /// The settings these flags (and variables) describe, checked.
    pub fn into_settings(self, database_url: Option<String>) -> Result<Settings, SettingsError> {
        let ms = Duration::from_millis;
        let secret = |v: Option<String>| v.filter(|v| !v.is_empty()).map(Secret::new);
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (cert, _) => {
                let (flag, env) = if cert.is_some() {
                    ("--tls-key", "WAV_TLS_KEY")
                } else {
                    ("--tls-cert", "WAV_TLS_CERT")
                };
                return Err(SettingsError {
                    flag,
                    env,
                    problem: "TLS needs both WAV_TLS_CERT and WAV_TLS_KEY".into(),
                });
            }
        };
        let settings = Settings {
            database: crate::settings::DatabaseSettings {
                url: Secret::new(database_url.unwrap_or_default()),
                max_connections: self.db_max_connections,
            },
            server: crate::settings::ServerSettings {
                listen: self.listen,
                role: self.role,
                tls,
                edge: crate::settings::EdgeSettings {
                    max_connections: self.max_connections,
                    header_timeout: self.header_timeout.into(),
                    idle_timeout: self.idle_timeout.into(),
                    body_timeout: self.body_timeout.into(),
                    h2_max_streams: self.h2_max_streams,
                    unauthenticated_body_bytes: self.unauthenticated_body_kib.saturating_mul(1024),
                },
            },
            api: crate::settings::ApiSettings {
                key_rate_per_sec: self.key_rate_per_sec,
                auth_failures_per_sec: self.auth_failures_per_sec,
                watches_per_account: self.watches_per_account,
                free_entries_per_hour: self.free_entries_per_hour,
                watch_stall: Duration::from_secs(self.watch_stall_secs),
                watch_backstop: ms(self.watch_backstop_ms),
            },
            workers: crate::settings::WorkerSettings {
                loops: self.workers,
                lease: Duration::from_secs(self.lease_secs),
                max_attempts: self.max_attempts,
                retry_base: ms(self.retry_base_ms),
                retry_max: ms(self.retry_max_ms),
                idle_poll: ms(self.idle_poll_ms),
                shutdown_grace: Duration::from_secs(self.shutdown_grace_secs),
                max_pending: self.max_pending.into(),
            },
            checker: crate::settings::CheckerSettings {
                backend: self.checker,
                simulated: crate::settings::SimulatedSettings {
                    latency: ms(self.sim_latency_ms),
                    per_call: self.sim_batch,
                    error_rate: self.sim_error_rate,
                },
                waha: crate::settings::WahaSettings {
                    url: self.waha_url,
                    session: self.waha_session,
                    api_key: secret(self.waha_api_key),
                },
                evolution: crate::settings::EvolutionSettings {
                    url: self.evolution_url,
                    instance: self.evolution_instance,
                    api_key: secret(self.evolution_api_key),
                },
                whatsapp_web: crate::settings::WhatsappWebSettings {
                    session_db: self.whatsapp_session_db,
                },
                http_timeout: ms(self.http_timeout_ms),
                cache_ttl: self.cache_ttl.into(),
            },
            pacing: crate::settings::PacingSettings {
                rate_per_sec: self.rate_per_sec,
                max_concurrency: self.max_concurrency,
                daily_cap: self.daily_cap,
                breaker_failures: self.breaker_failures,
                breaker_cooldown: Duration::from_secs(self.breaker_cooldown_secs),
                rate_limit_backoff: ms(self.rate_limit_backoff_ms),
                rate_limit_backoff_max: ms(self.rate_limit_backoff_max_ms),
            },
            webhooks: crate::settings::WebhookSettings {
                allow_private: self.webhook_allow_private,
                retry_base: ms(self.webhook_retry_base_ms),
                poll: ms(self.webhook_poll_ms),
                proxy: self.webhook_proxy.filter(|p| !p.trim().is_empty()),
            },
            maintenance: crate::settings::MaintenanceSettings {
                retention: self.retention.into(),
                retention_every: self.retention_every.into(),
                vacuum_dead_rows: self.vacuum_dead_rows,
                vacuum_every: self.vacuum_every.into(),
            },
        };
        settings.validate()?;
        Ok(settings)
    }
}

/// `docs/configuration.md`: every command's flags, variables and defaults, generated
/// from the definitions above so it cannot drift from `--help` (a unit test compares).
pub fn configuration_markdown() -> String {
    use clap::CommandFactory;
    let mut out = String::from(
        "# Configuration\n\n\
         Generated from the command-line definitions (`src/cli.rs`); a unit test fails when this file and\n\
         `--help` disagree (regenerate with `WAV_WRITE_DOCS=1 cargo test --lib configuration`).\n\n\
         Every flag can also be given as its environment variable; a flag given twice takes its last value.\n\
         `serve` checks every value before it starts, and a bad one stops it with one line naming the flag\n\
         and its variable. Durations written like `30d` take any [humantime](https://docs.rs/humantime) form\n\
         (`500ms`, `10m`, `12h`, `7d`).\n",
    );
    let cli = Cli::command();
    let global: Vec<&clap::Arg> = cli.get_arguments().filter(|a| a.is_global_set()).collect();
    out.push_str("\n## Every command\n\n");
    push_table(&mut out, global.iter().copied());
    for command in cli.get_subcommands() {
        push_command(
            &mut out,
            command,
            &format!("wavalidate {}", command.get_name()),
        );
    }
    out
}

fn push_command(out: &mut String, command: &clap::Command, path: &str) {
    if command.get_name() == "help" {
        return;
    }
    let args: Vec<&clap::Arg> = command
        .get_arguments()
        .filter(|a| !a.is_global_set() && a.get_id() != "help" && a.get_id() != "version")
        .collect();
    if !args.is_empty() {
        out.push_str(&format!("\n## `{path}`\n\n"));
        if let Some(about) = command.get_about() {
            out.push_str(&format!("{about}\n\n"));
        }
        push_table(out, args.into_iter());
    }
    for sub in command.get_subcommands() {
        push_command(out, sub, &format!("{path} {}", sub.get_name()));
    }
}

fn push_table<'a>(out: &mut String, args: impl Iterator<Item = &'a clap::Arg>) {
    out.push_str("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n");
    for arg in args {
        let flag = match arg.get_long() {
            Some(long) => format!("`--{long}`"),
            None => format!("`{}` (argument)", arg.get_id().as_str().to_uppercase()),
        };
        let env = arg
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let default: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        let default = if default.is_empty() || default == ["false"] {
            String::new()
        } else {
            format!("`{}`", default.join(","))
        };
        let mut meaning = arg
            .get_help()
            .map(|h| h.to_string().replace('\n', " "))
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| match v.get_help() {
                Some(help) => format!("`{}`: {help}", v.get_name()),
                None => format!("`{}`", v.get_name()),
            })
            .collect();
        if !values.is_empty() && !matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            meaning.push_str(&format!(". One of: {}", values.join("; ")));
        }
        out.push_str(&format!(
            "| {flag} | {env} | {default} | {} |\n",
            meaning.replace('|', "\\|")
        ));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn configuration_doc_matches_the_flags() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let generated = super::configuration_markdown();
        if std::env::var_os("WAV_WRITE_DOCS").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let written = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            written == generated,
            "docs/configuration.md is out of date: run `WAV_WRITE_DOCS=1 cargo test --lib configuration`"
        );
    }

    #[test]
    fn the_pacing_help_states_the_bounds_the_domain_enforces() {
        use crate::domain::checker::{DAILY_CAP, MAX_CONCURRENCY, RATE_PER_SEC, WARMUP_DAYS};
        use clap::CommandFactory;
        let cli = super::Cli::command();
        let add = cli
            .find_subcommand("checker")
            .and_then(|c| c.find_subcommand("add"))
            .unwrap();
        let help = |id: &str| {
            let arg = add.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(arg.is_allow_negative_numbers_set(), "{id}");
            arg.get_help().unwrap().to_string()
        };
        for (id, range) in [
            (
                "rate_per_sec",
                format!("{} to {}", RATE_PER_SEC.start(), RATE_PER_SEC.end()),
            ),
            (
                "daily_cap",
                format!("{} to {}", DAILY_CAP.start(), DAILY_CAP.end()),
            ),
            (
                "max_concurrency",
                format!("{} to {}", MAX_CONCURRENCY.start(), MAX_CONCURRENCY.end()),
            ),
            (
                "warmup_days",
                format!("{} to {}", WARMUP_DAYS.start(), WARMUP_DAYS.end()),
            ),
        ] {
            assert!(help(id).contains(&range), "{id}: {range} in {:?}", help(id));
        }
    }

    #[test]
    fn serve_flags_become_valid_settings_and_bad_ones_one_line() {
        use clap::Parser;
        let parse = |extra: &[&str]| {
            let mut argv = vec!["wavalidate", "serve"];
            argv.extend_from_slice(extra);
            match super::Cli::try_parse_from(argv).unwrap().command {
                super::Command::Serve(args) => args.into_settings(Some("postgres://h/db".into())),
                _ => unreachable!("serve parses as serve"),
            }
        };
        let defaults = parse(&[]).unwrap();
        let fresh = crate::settings::Settings::default();
        assert_eq!(defaults.workers.lease, fresh.workers.lease);
        assert_eq!(defaults.maintenance.retention, fresh.maintenance.retention);
        assert_eq!(defaults.checker.cache_ttl, fresh.checker.cache_ttl);
        let lease = parse(&["--lease-secs", "0"]).unwrap_err().to_string();
        assert_eq!(
            lease,
            "--lease-secs (WAV_LEASE_SECS): must be at least 1 second"
        );
        let tls = parse(&["--tls-cert", "c.pem"]).unwrap_err().to_string();
        assert!(tls.starts_with("--tls-key (WAV_TLS_KEY)"), "{tls}");
    }
}
