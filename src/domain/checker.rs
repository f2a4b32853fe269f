//! Checking accounts as the operator describes them: the backend and its settings, and
//! the pacing that protects the account. Parsed here, so nothing invalid is stored.
use std::fmt;
use std::ops::RangeInclusive;

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

/// What an account checks through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AccountBackend {
    /// A WAHA gateway session.
    Waha,
    /// An Evolution API instance.
    Evolution,
    /// A linked WhatsApp Web device (`wavalidate checker link`).
    WhatsappWeb,
}

impl AccountBackend {
    pub fn name(self) -> &'static str {
        match self {
            AccountBackend::Waha => "waha",
            AccountBackend::Evolution => "evolution",
            AccountBackend::WhatsappWeb => "whatsapp-web",
        }
    }

    pub fn parse(name: &str) -> Option<AccountBackend> {
        [
            AccountBackend::Waha,
            AccountBackend::Evolution,
            AccountBackend::WhatsappWeb,
        ]
        .into_iter()
        .find(|b| b.name() == name)
    }
}

impl TryFrom<String> for AccountBackend {
    type Error = String;

    /// As stored (`checkers.backend`).
    fn try_from(name: String) -> Result<Self, Self::Error> {
        AccountBackend::parse(&name).ok_or_else(|| format!("unknown checking backend {name:?}"))
    }
}

/// A checking account's effective status (`checker_status.status`): paused by the
/// operator, in trouble (until a time, then probed), resting (cap, warm-up, hours) or active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountStatus {
    Active,
    Resting,
    Paused,
    Throttled,
    LoggedOut,
    Banned,
    Failing,
}

impl AccountStatus {
    pub const ALL: [AccountStatus; 7] = [
        AccountStatus::Active,
        AccountStatus::Resting,
        AccountStatus::Paused,
        AccountStatus::Throttled,
        AccountStatus::LoggedOut,
        AccountStatus::Banned,
        AccountStatus::Failing,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Resting => "resting",
            AccountStatus::Paused => "paused",
            AccountStatus::Throttled => "throttled",
            AccountStatus::LoggedOut => "logged_out",
            AccountStatus::Banned => "banned",
            AccountStatus::Failing => "failing",
        }
    }
}

impl fmt::Display for AccountStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for AccountStatus {
    type Error = String;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        AccountStatus::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| format!("unknown checking account status {name:?}"))
    }
}

/// The backend's settings, as stored (`checkers.config`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_db: Option<String>,
}

impl AccountConfig {
    /// A whatsapp-web account's session store: its own file unless one was given.
    pub fn session_db_or_default(&self, account: &str) -> String {
        self.session_db
            .clone()
            .unwrap_or_else(|| format!("whatsapp-{account}.db"))
    }
}

/// Local times between which an account checks; `start > end` spans midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hours {
    pub start: NaiveTime,
    pub end: NaiveTime,
}

impl Hours {
    /// `HH:MM-HH:MM`.
    pub fn parse(text: &str) -> Option<Hours> {
        let (start, end) = text.trim().split_once('-')?;
        let time = |t: &str| NaiveTime::parse_from_str(t.trim(), "%H:%M").ok();
        let hours = Hours {
            start: time(start)?,
            end: time(end)?,
        };
        (hours.start != hours.end).then_some(hours)
    }
}

impl fmt::Display for Hours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}",
            self.start.format("%H:%M"),
            self.end.format("%H:%M")
        )
    }
}

/// Names of the accounts `serve`'s flags set (`flags:waha`, ...); `checker add` refuses them.
pub const FLAG_ACCOUNT_PREFIX: &str = "flags:";

/// The pacing that protects one account.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountPacing {
    /// Checks per second, at most.
    pub rate_per_sec: f64,
    /// Calls in flight at once (in each process).
    pub max_concurrency: i32,
    /// Checks per local day; 0: none.
    pub daily_cap: i32,
    /// The cap ramps up over this many first days.
    pub warmup_days: i32,
    pub hours: Option<Hours>,
    /// IANA name; the day and the hours are local to it.
    pub timezone: String,
}

impl Default for AccountPacing {
    /// Careful by default: 30 checks a minute (the "safe" end of what operators report),
    /// one call at a time, 500 checks a day.
    fn default() -> AccountPacing {
        AccountPacing {
            rate_per_sec: 0.5,
            max_concurrency: 1,
            daily_cap: 500,
            warmup_days: 0,
            hours: None,
            timezone: "UTC".into(),
        }
    }
}

/// Checks per second an account may be given. Below the floor the interval between two
/// checks (1/rate seconds) no longer fits a PostgreSQL timestamp and every reservation
/// fails; above the ceiling no WhatsApp account survives for long.
pub const RATE_PER_SEC: RangeInclusive<f64> = 0.0001..=100.0;

/// Checks per local day (0: no cap). An account can safely do a few thousand a day, so
/// the ceiling only refuses absurd values, before the cap's `int` arithmetic overflows.
pub const DAILY_CAP: RangeInclusive<i32> = 0..=100_000;

/// Calls in flight at once to one account, in each process: at least one, and a gateway
/// gains nothing from more than a handful.
pub const MAX_CONCURRENCY: RangeInclusive<i32> = 1..=64;

/// Days over which a new account's cap ramps up: a year at most. Longer ramps overflow
/// the `int` arithmetic of today's cap, which would blind the whole pool.
pub const WARMUP_DAYS: RangeInclusive<i32> = 0..=365;

/// A bad setting, named by its flag.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{flag}: {problem}")]
pub struct AccountError {
    pub flag: &'static str,
    pub problem: String,
}

fn bad(flag: &'static str, problem: impl Into<String>) -> AccountError {
    AccountError {
        flag,
        problem: problem.into(),
    }
}

/// A rate as typed: `-1`, `0.5`; `1e-300`, `NaN` and `inf` where digits would not do.
fn shown(rate: f64) -> String {
    if rate == 0.0 || (1e-4..1e15).contains(&rate.abs()) {
        rate.to_string()
    } else {
        format!("{rate:?}")
    }
}

/// `value` when `range` holds it; else an error naming the flag, the value and the range.
fn within(
    flag: &'static str,
    value: i32,
    range: &RangeInclusive<i32>,
    note: &str,
) -> Result<i32, AccountError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(bad(
            flag,
            format!(
                "{value} is not between {} and {}{note}",
                range.start(),
                range.end()
            ),
        ))
    }
}

/// What a pacing change asks for; each field left None keeps its value.
#[derive(Debug, Clone, Default)]
pub struct PacingChange {
    pub rate_per_sec: Option<f64>,
    pub max_concurrency: Option<i32>,
    pub daily_cap: Option<i32>,
    pub warmup_days: Option<i32>,
    /// `HH:MM-HH:MM`, or `any` for no limit.
    pub hours: Option<String>,
    pub timezone: Option<String>,
}

impl PacingChange {
    /// `pacing` with this change applied, checked.
    pub fn apply(&self, mut pacing: AccountPacing) -> Result<AccountPacing, AccountError> {
        if let Some(rate) = self.rate_per_sec {
            if !RATE_PER_SEC.contains(&rate) {
                return Err(bad(
                    "--rate-per-sec",
                    format!(
                        "{} is not between {} and {} checks per second (0.5 is 30 a minute)",
                        shown(rate),
                        shown(*RATE_PER_SEC.start()),
                        shown(*RATE_PER_SEC.end())
                    ),
                ));
            }
            pacing.rate_per_sec = rate;
        }
        if let Some(n) = self.max_concurrency {
            pacing.max_concurrency = within("--max-concurrency", n, &MAX_CONCURRENCY, "")?;
        }
        if let Some(cap) = self.daily_cap {
            pacing.daily_cap = within("--daily-cap", cap, &DAILY_CAP, " (0: no cap)")?;
        }
        if let Some(days) = self.warmup_days {
            pacing.warmup_days = within("--warmup-days", days, &WARMUP_DAYS, "")?;
        }
        if let Some(hours) = &self.hours {
            pacing.hours = if hours.trim().eq_ignore_ascii_case("any") {
                None
            } else {
                Some(Hours::parse(hours).ok_or_else(|| {
                    bad(
                        "--hours",
                        format!("{hours:?} is not HH:MM-HH:MM (e.g. 08:00-20:00), or `any`"),
                    )
                })?)
            };
        }
        if let Some(tz) = &self.timezone {
            let tz = tz.trim();
            if tz.is_empty() {
                return Err(bad(
                    "--timezone",
                    "must name a time zone, e.g. Europe/Berlin",
                ));
            }
            pacing.timezone = tz.to_string();
        }
        Ok(pacing)
    }
}

/// A checking account to add.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: String,
    pub backend: AccountBackend,
    pub config: AccountConfig,
    pub pacing: AccountPacing,
}

impl NewAccount {
    /// Checks the name, the backend's settings (each flag only where it applies) and the
    /// pacing. The time zone is checked against PostgreSQL's list when stored.
    pub fn parse(
        name: &str,
        backend: AccountBackend,
        mut config: AccountConfig,
        pacing: &PacingChange,
    ) -> Result<NewAccount, AccountError> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad(
                "--name",
                "use 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        let trimmed = |v: Option<String>| v.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        config = AccountConfig {
            url: trimmed(config.url),
            session: trimmed(config.session),
            instance: trimmed(config.instance),
            api_key: trimmed(config.api_key),
            session_db: trimmed(config.session_db),
        };
        let not_for = |flag: &'static str, given: bool| {
            if given {
                Err(bad(
                    flag,
                    format!("does not apply to --backend {}", backend.name()),
                ))
            } else {
                Ok(())
            }
        };
        match backend {
            AccountBackend::Waha => {
                check_url(config.url.as_deref(), "http://127.0.0.1:3000")?;
                not_for("--instance", config.instance.is_some())?;
                not_for("--session-db", config.session_db.is_some())?;
                config.session.get_or_insert_with(|| "default".into());
            }
            AccountBackend::Evolution => {
                check_url(config.url.as_deref(), "http://127.0.0.1:8080")?;
                if config.instance.is_none() {
                    return Err(bad(
                        "--instance",
                        "is required: the Evolution API instance name",
                    ));
                }
                if config.api_key.is_none() {
                    return Err(bad(
                        "--api-key",
                        "is required: Evolution API checks its apikey header",
                    ));
                }
                not_for("--session", config.session.is_some())?;
                not_for("--session-db", config.session_db.is_some())?;
            }
            AccountBackend::WhatsappWeb => {
                not_for("--url", config.url.is_some())?;
                not_for("--session", config.session.is_some())?;
                not_for("--instance", config.instance.is_some())?;
                not_for("--api-key", config.api_key.is_some())?;
                // Each account keeps its own linked session.
                config.session_db = Some(config.session_db_or_default(name));
            }
        }
        Ok(NewAccount {
            name: name.to_string(),
            backend,
            config,
            pacing: pacing.apply(AccountPacing::default())?,
        })
    }
}

fn check_url(url: Option<&str>, example: &str) -> Result<(), AccountError> {
    let url = url.ok_or_else(|| {
        bad(
            "--url",
            format!("is required: the gateway's base URL, e.g. {example}"),
        )
    })?;
    let parsed =
        reqwest::Url::parse(url).map_err(|e| bad("--url", format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad(
            "--url",
            format!("{url:?} must be an http:// or https:// URL"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waha(url: Option<&str>) -> AccountConfig {
        AccountConfig {
            url: url.map(String::from),
            ..AccountConfig::default()
        }
    }

    #[test]
    fn an_account_needs_its_backends_settings_and_only_those() {
        let ok = NewAccount::parse(
            "wa-1",
            AccountBackend::Waha,
            waha(Some("http://gw:3000")),
            &PacingChange::default(),
        )
        .unwrap();
        assert_eq!(ok.config.session.as_deref(), Some("default"));
        assert_eq!(ok.pacing, AccountPacing::default());
        let err = |backend, config, pacing: PacingChange| {
            NewAccount::parse("wa-1", backend, config, &pacing)
                .unwrap_err()
                .flag
        };
        assert_eq!(
            err(AccountBackend::Waha, waha(None), PacingChange::default()),
            "--url"
        );
        assert_eq!(
            err(
                AccountBackend::Waha,
                waha(Some("ftp://x")),
                PacingChange::default()
            ),
            "--url"
        );
        assert_eq!(
            err(
                AccountBackend::Evolution,
                waha(Some("http://gw")),
                PacingChange::default()
            ),
            "--instance"
        );
        assert_eq!(
            err(
                AccountBackend::WhatsappWeb,
                waha(Some("http://gw")),
                PacingChange::default()
            ),
            "--url"
        );
        let slow = PacingChange {
            rate_per_sec: Some(0.0),
            ..PacingChange::default()
        };
        assert_eq!(
            err(AccountBackend::Waha, waha(Some("http://gw")), slow),
            "--rate-per-sec"
        );
        let night = PacingChange {
            hours: Some("25:00-06:00".into()),
            ..PacingChange::default()
        };
        assert_eq!(
            err(AccountBackend::Waha, waha(Some("http://gw")), night),
            "--hours"
        );
        assert!(
            NewAccount::parse(
                "bad name",
                AccountBackend::WhatsappWeb,
                AccountConfig::default(),
                &PacingChange::default()
            )
            .is_err()
        );
    }

    #[test]
    fn pacing_is_bounded_at_both_ends_and_the_error_names_flag_value_and_range() {
        let apply = |change: PacingChange| change.apply(AccountPacing::default());
        let rate = |r: f64| {
            apply(PacingChange {
                rate_per_sec: Some(r),
                ..PacingChange::default()
            })
        };
        let cap = |n: i32| {
            apply(PacingChange {
                daily_cap: Some(n),
                ..PacingChange::default()
            })
        };
        let concurrency = |n: i32| {
            apply(PacingChange {
                max_concurrency: Some(n),
                ..PacingChange::default()
            })
        };
        let warmup = |n: i32| {
            apply(PacingChange {
                warmup_days: Some(n),
                ..PacingChange::default()
            })
        };
        for r in [0.0001, 0.5, 100.0] {
            assert_eq!(rate(r).unwrap().rate_per_sec, r);
        }
        for r in [
            0.0,
            0.000_099,
            1e-300,
            -1.0,
            100.001,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(rate(r).unwrap_err().flag, "--rate-per-sec", "{r}");
        }
        assert_eq!(
            rate(-1.0).unwrap_err().to_string(),
            "--rate-per-sec: -1 is not between 0.0001 and 100 checks per second (0.5 is 30 a minute)"
        );
        assert!(rate(1e-300).unwrap_err().to_string().contains(" 1e-300 "));
        assert!(rate(f64::NAN).unwrap_err().to_string().contains(" NaN "));

        for n in [0, 1, 100_000] {
            assert_eq!(cap(n).unwrap().daily_cap, n);
        }
        for n in [-1, 100_001, i32::MAX] {
            assert_eq!(cap(n).unwrap_err().flag, "--daily-cap");
        }
        assert_eq!(
            cap(100_000_000).unwrap_err().to_string(),
            "--daily-cap: 100000000 is not between 0 and 100000 (0: no cap)"
        );

        for n in [1, 64] {
            assert_eq!(concurrency(n).unwrap().max_concurrency, n);
        }
        for n in [0, -1, 65] {
            assert_eq!(concurrency(n).unwrap_err().flag, "--max-concurrency");
        }

        for n in [0, 365] {
            assert_eq!(warmup(n).unwrap().warmup_days, n);
        }
        for n in [-1, 366, i32::MAX] {
            assert_eq!(warmup(n).unwrap_err().flag, "--warmup-days");
        }
        assert_eq!(
            warmup(i32::MAX).unwrap_err().to_string(),
            "--warmup-days: 2147483647 is not between 0 and 365"
        );
    }

    #[test]
    fn hours_span_midnight_and_any_clears_them() {
        let h = Hours::parse("22:00-06:30").unwrap();
        assert!(h.start > h.end);
        assert_eq!(h.to_string(), "22:00-06:30");
        assert!(Hours::parse("08:00-08:00").is_none());
        let pacing = PacingChange {
            hours: Some("any".into()),
            ..PacingChange::default()
        }
        .apply(AccountPacing {
            hours: Some(h),
            ..AccountPacing::default()
        })
        .unwrap();
        assert_eq!(pacing.hours, None);
    }
}
