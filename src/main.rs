use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use serde_json::json;
use tracing_subscriber::EnvFilter;

use wavalidate::cli::{AccountCommand, CheckerCommand, Cli, Command, KeyCommand, WhatsappCommand};
use wavalidate::client;
use wavalidate::domain::api_key::ApiKey;
use wavalidate::domain::checker::{AccountBackend, AccountConfig, Hours, NewAccount};
use wavalidate::store::Store;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // WAV_LOG_FORMAT=json: one JSON object per line, for log pipelines.
    if std::env::var("WAV_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.json().init();
    } else {
        logs.init();
    }
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line a person can act on; no backtrace.
            eprintln!("wavalidate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let url = cli.database_url;
    match cli.command {
        Command::Serve(args) => serve(args.into_settings(url)?).await,
        Command::Migrate => {
            Store::connect_migrated(&database(url)?).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Account(command) => account(command, &database(url)?).await,
        Command::Key(command) => key(command, &database(url)?).await,
        Command::Checker(command) => checker(command, &database(url)?).await,
        Command::Whatsapp(WhatsappCommand::Link { phone, session_db }) => {
            link_whatsapp(&phone, &session_db).await
        }
        Command::Submit(args) => client::submit(args).await,
        Command::Poll { conn, batch_id } => client::poll(conn, batch_id).await,
        Command::Watch {
            conn,
            batch_id,
            format,
        } => client::watch(conn, batch_id, format).await,
        Command::Balance { conn } => client::balance(conn).await,
        Command::Bench(args) => wavalidate::bench::run(args, url).await,
    }
}

fn database(url: Option<String>) -> anyhow::Result<String> {
    url.context("no database: set DATABASE_URL or pass --database-url")
}

async fn account(command: AccountCommand, url: &str) -> anyhow::Result<()> {
    let store = connected(url).await?;
    match command {
        AccountCommand::Create { name, credits } => {
            let (account_id, key) = store.create_account(&name, credits).await?;
            println!(
                "{}",
                json!({"account_id": account_id, "api_key": key.expose()})
            );
        }
        AccountCommand::Credit { account_id, amount } => {
            let balance = store
                .add_credits(account_id, amount)
                .await?
                .with_context(|| format!("no account {account_id}"))?;
            println!("{}", json!({"account_id": account_id, "credits": balance}));
        }
        AccountCommand::Limits {
            account_id,
            free_entries_per_hour,
        } => {
            let own = match free_entries_per_hour {
                wavalidate::cli::Limit::Default => None,
                wavalidate::cli::Limit::Own(n) => Some(n),
            };
            store
                .set_free_entries_limit(account_id, own)
                .await?
                .then_some(())
                .with_context(|| format!("no account {account_id}"))?;
            println!(
                "{}",
                json!({"account_id": account_id, "free_entries_per_hour": own})
            );
        }
        AccountCommand::WebhookSecret { account_id, rotate } => {
            let secret = store
                .webhook_secret(account_id, rotate)
                .await?
                .with_context(|| format!("no account {account_id}"))?;
            println!(
                "{}",
                json!({"account_id": account_id, "webhook_secret": secret})
            );
        }
    }
    Ok(())
}

async fn key(command: KeyCommand, url: &str) -> anyhow::Result<()> {
    let store = connected(url).await?;
    match command {
        KeyCommand::Create { account_id } => {
            let key = store
                .create_key(account_id)
                .await?
                .with_context(|| format!("no account {account_id}"))?;
            println!(
                "{}",
                json!({"account_id": account_id, "api_key": key.expose()})
            );
        }
        KeyCommand::Revoke { key } => {
            let key = ApiKey::from_presented(&key).context("empty key")?;
            anyhow::ensure!(store.revoke_key(&key).await?, "no such active key");
            println!("{}", json!({"revoked": true}));
        }
    }
    Ok(())
}

async fn checker(command: CheckerCommand, url: &str) -> anyhow::Result<()> {
    let store = connected(url).await?;
    let missing = |name: &str| anyhow::anyhow!("--name: no checking account named {name:?}");
    match command {
        CheckerCommand::Add(args) => {
            let config = AccountConfig {
                url: args.url,
                session: args.session,
                instance: args.instance,
                api_key: args.api_key,
                session_db: args.session_db,
            };
            let new = NewAccount::parse(&args.name, args.backend, config, &args.pacing.change())?;
            let id = store.add_account(&new).await?;
            println!("{}", json!({"checker_id": id, "name": new.name}));
        }
        CheckerCommand::List => {
            let (rows, unreadable) = store.accounts().await?;
            let mut accounts: Vec<_> = rows.iter().map(account_json).collect();
            // A row that cannot be read is listed by name, with why, not left out.
            accounts.extend(
                unreadable
                    .iter()
                    .map(|u| json!({"name": u.name, "state": "unreadable", "reason": u.reason})),
            );
            println!("{}", serde_json::Value::Array(accounts));
        }
        CheckerCommand::Pause { name } => {
            anyhow::ensure!(store.set_paused(&name, true).await?, missing(&name));
            println!("{}", json!({"name": name, "paused": true}));
        }
        CheckerCommand::Resume { name } => {
            anyhow::ensure!(store.set_paused(&name, false).await?, missing(&name));
            println!("{}", json!({"name": name, "paused": false}));
        }
        CheckerCommand::Update { name, pacing } => {
            anyhow::ensure!(
                store.update_pacing(&name, &pacing.change()).await?,
                missing(&name)
            );
            let row = store.account(&name).await?.ok_or_else(|| missing(&name))?;
            println!("{}", account_json(&row));
        }
        CheckerCommand::Remove { name } => {
            anyhow::ensure!(store.remove_account(&name).await?, missing(&name));
            println!("{}", json!({"name": name, "removed": true}));
        }
        CheckerCommand::Link { name, phone } => {
            let row = store.account(&name).await?.ok_or_else(|| missing(&name))?;
            anyhow::ensure!(
                row.backend == AccountBackend::WhatsappWeb,
                "--name: {name:?} is a {} account; only whatsapp-web accounts are linked here",
                row.backend.name()
            );
            let session_db = row.config.session_db_or_default(&name);
            link_whatsapp(&phone, &session_db).await?;
        }
    }
    Ok(())
}

/// An account in `checker list`: its state, counters and pacing.
fn account_json(a: &wavalidate::store::rows::AccountRow) -> serde_json::Value {
    json!({
        "name": a.name,
        "backend": a.backend.name(),
        "state": a.status.as_str(),
        "state_until": a.status_until,
        "reason": a.status_reason,
        "checks_today": a.checks_today,
        "daily_cap": a.daily_cap,
        "cap_today": a.cap_today,
        "rate_per_sec": a.rate_per_sec,
        "max_concurrency": a.max_concurrency,
        "warmup_days": a.warmup_days,
        "hours": a.hours_start.zip(a.hours_end).map(|(start, end)| Hours { start, end }.to_string()),
        "timezone": a.timezone,
        "checks_total": a.checks_total,
        "last_check_at": a.last_check_at,
    })
}

/// Admin commands run against a migrated schema, so they work on a fresh database too.
async fn connected(url: &str) -> anyhow::Result<Store> {
    Ok(Store::connect_migrated(url).await?)
}

#[cfg(feature = "whatsapp-web")]
async fn link_whatsapp(phone: &str, session_db: &str) -> anyhow::Result<()> {
    wavalidate::checker::whatsapp_web::link(session_db, phone).await
}

#[cfg(not(feature = "whatsapp-web"))]
async fn link_whatsapp(_phone: &str, _session_db: &str) -> anyhow::Result<()> {
    anyhow::bail!(
        "this build has no whatsapp-web backend: build with `cargo build --release --features whatsapp-web`"
    )
}

async fn serve(settings: wavalidate::settings::Settings) -> anyhow::Result<()> {
    let server = wavalidate::app::start(settings).await?;
    // One line on stdout, so scripts and tests can find a port chosen with :0.
    println!("wavalidate listening on {}", server.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: health NOT_SERVING, workers finishing in-flight checks");
    server.shutdown();
    server.wait().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
