//! The command line: every flag also reads a `WAV_*` environment variable.
use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};
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
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    Migrate,
    /// Manage accounts and their credits.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Serve the gRPC API (and stream results); no workers.
    Api,
    /// Run workers only; serves just grpc.health.v1 on --listen.
    Worker,
    /// Both.
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CheckerKind {
    /// Deterministic answers computed from the number; no network.
    Simulated,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to serve gRPC on (port 0 picks a free port).
    #[arg(long, env = "WAV_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// What this process does.
    #[arg(long, env = "WAV_ROLE", value_enum, default_value_t = Role::All)]
    pub role: Role,
    /// Concurrent worker loops in this process.
    #[arg(long, env = "WAV_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Checker backend.
    #[arg(long, env = "WAV_CHECKER", value_enum, default_value_t = CheckerKind::Simulated)]
    pub checker: CheckerKind,
    /// Seconds a claimed number stays leased to a worker; renewed while its check runs.
    #[arg(long, env = "WAV_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,
    /// Checker attempts per number before it ends as NUMBER_STATUS_ERROR.
    #[arg(long, env = "WAV_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: i32,
    /// First retry delay in milliseconds; doubles per attempt, with jitter.
    #[arg(long, env = "WAV_RETRY_BASE_MS", default_value_t = 1000)]
    pub retry_base_ms: u64,
    /// Longest retry delay in milliseconds.
    #[arg(long, env = "WAV_RETRY_MAX_MS", default_value_t = 60_000)]
    pub retry_max_ms: u64,
    /// Simulated checker: latency of each call (a call covers up to 100 numbers).
    #[arg(long, env = "WAV_SIM_LATENCY_MS", default_value_t = 0)]
    pub sim_latency_ms: u64,
    /// Simulated checker: chance (0..1) that a number's check fails with a retryable error.
    #[arg(long, env = "WAV_SIM_ERROR_RATE", default_value_t = 0.0)]
    pub sim_error_rate: f64,
    /// Largest number of database connections in this process's pool.
    #[arg(long, env = "WAV_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,
    /// How often watched batches are re-read in case a notification was missed (ms).
    #[arg(long, env = "WAV_WATCH_BACKSTOP_MS", default_value_t = 2000)]
    pub watch_backstop_ms: u64,
    /// How often an idle worker looks for work without a wake-up (ms).
    #[arg(long, env = "WAV_IDLE_POLL_MS", default_value_t = 1000)]
    pub idle_poll_ms: u64,
    /// Seconds in-flight checks may finish after SIGTERM before their numbers are handed back.
    #[arg(long, env = "WAV_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; prints {"account_id", "api_key"} once.
    Create {
        #[arg(long, env = "WAV_ACCOUNT_NAME")]
        name: String,
        /// Opening balance.
        #[arg(long, env = "WAV_CREDITS", default_value_t = 0)]
        credits: i64,
    },
    /// Add credits to an account.
    Credit {
        #[arg(long, env = "WAV_ACCOUNT_ID")]
        account_id: Uuid,
        #[arg(long, env = "WAV_AMOUNT")]
        amount: i64,
    },
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
