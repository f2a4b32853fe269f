//! Pacing that protects checking accounts: a rate limit (governor), a
//! concurrency limit, a daily cap shared by all replicas (in PostgreSQL),
//! exponential backoff with jitter on rate limits, and a circuit breaker.
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::Semaphore;

use super::isolate::ask;
use super::{Backend, CallError, CallResult, Checker, Outcome, timed_check};
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct PacingConfig {
    /// Checks per second; 0 means unlimited.
    pub rate_per_sec: f64,
    /// Calls in flight at once in this process.
    pub max_concurrency: usize,
    /// Checks per UTC day across all replicas; 0 means no cap.
    pub daily_cap: i64,
    /// Consecutive failed calls that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit pauses the backend before one trial call.
    pub breaker_cooldown: Duration,
    /// First pause after a rate-limit answer; doubles per consecutive one, with jitter.
    pub rate_limit_backoff: Duration,
    pub rate_limit_backoff_max: Duration,
}

impl PacingConfig {
    /// No pacing at all (the simulated backend's default).
    pub fn unlimited() -> PacingConfig {
        PacingConfig {
            rate_per_sec: 0.0,
            max_concurrency: 1024,
            daily_cap: 0,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
            rate_limit_backoff: Duration::from_secs(5),
            rate_limit_backoff_max: Duration::from_secs(300),
        }
    }
}

#[derive(Default)]
struct State {
    consecutive_failures: u32,
    open_until: Option<Instant>,
    rate_limited_streak: u32,
    rate_limited_until: Option<Instant>,
    capped_until: Option<Instant>,
}

pub struct Paced {
    backend: Box<dyn Backend>,
    config: PacingConfig,
    limiter: Option<DefaultDirectRateLimiter>,
    burst: usize,
    permits: Semaphore,
    store: Store,
    state: Mutex<State>,
}

fn until(t: Option<Instant>, now: Instant) -> Option<Duration> {
    t.filter(|t| *t > now).map(|t| t - now)
}

fn next_utc_midnight() -> Duration {
    let now = chrono::Utc::now();
    let tomorrow = (now.date_naive() + chrono::Days::new(1))
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc();
    (tomorrow - now).to_std().unwrap_or(Duration::from_secs(60))
}

impl Paced {
    pub fn new(backend: Box<dyn Backend>, config: PacingConfig, store: Store) -> Paced {
        let burst = backend.max_batch().max(1);
        let limiter = (config.rate_per_sec > 0.0).then(|| {
            let period = Duration::from_secs_f64(1.0 / config.rate_per_sec);
            let quota = Quota::with_period(period)
                .expect("positive period")
                .allow_burst(NonZeroU32::new(burst as u32).expect("burst >= 1"));
            RateLimiter::direct(quota)
        });
        Paced {
            permits: Semaphore::new(config.max_concurrency.max(1)),
            backend,
            config,
            limiter,
            burst,
            store,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("pacing state")
    }

    fn on_success(&self) {
        let mut s = self.state();
        if s.open_until.is_some() {
            tracing::info!(
                backend = self.backend.name(),
                "circuit closed: the backend answers again"
            );
        }
        s.consecutive_failures = 0;
        s.open_until = None;
        s.rate_limited_streak = 0;
    }

    fn on_failure(&self, reason: &str) {
        let mut s = self.state();
        s.consecutive_failures += 1;
        if s.consecutive_failures >= self.config.breaker_failures.max(1) {
            s.open_until = Some(Instant::now() + self.config.breaker_cooldown);
            tracing::warn!(
                backend = self.backend.name(),
                failures = s.consecutive_failures,
                cooldown_s = self.config.breaker_cooldown.as_secs_f64(),
                reason,
                "circuit open: pausing the backend; numbers stay queued"
            );
        }
    }

    fn on_rate_limited(&self, retry_after: Option<Duration>) -> Duration {
        let mut s = self.state();
        s.rate_limited_streak += 1;
        let exp = self.config.rate_limit_backoff.as_secs_f64()
            * 2f64.powi(s.rate_limited_streak as i32 - 1);
        let backoff = exp.min(self.config.rate_limit_backoff_max.as_secs_f64())
            * rand::rng().random_range(0.5..=1.0);
        let wait = retry_after
            .unwrap_or_default()
            .max(Duration::from_secs_f64(backoff));
        s.rate_limited_until = Some(Instant::now() + wait);
        tracing::warn!(
            backend = self.backend.name(),
            wait_s = wait.as_secs_f64(),
            "rate limited upstream: backing off"
        );
        wait
    }

    async fn return_cap(&self, n: usize) {
        if self.config.daily_cap > 0
            && n > 0
            && let Err(err) = self
                .store
                .return_daily_checks(self.backend.name(), n as i64)
                .await
        {
            tracing::warn!(error = %err, "could not return unused daily checks");
        }
    }
}

fn deferred(n: usize, reason: &str, retry_in: Duration) -> Vec<Outcome> {
    vec![
        Outcome::Deferred {
            reason: reason.to_string(),
            retry_in,
        };
        n
    ]
}

#[async_trait]
impl Checker for Paced {
    fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn max_batch(&self) -> usize {
        self.burst
    }

    fn cacheable(&self) -> bool {
        self.backend.cacheable()
    }

    fn paused_for(&self) -> Option<Duration> {
        let now = Instant::now();
        let s = self.state();
        [s.open_until, s.rate_limited_until, s.capped_until]
            .into_iter()
            .filter_map(|t| until(t, now))
            .max()
    }

    async fn check(&self, e164: &[String]) -> Vec<Outcome> {
        let n = e164.len();
        if let Some(wait) = self.paused_for() {
            return deferred(n, "backend paused", wait);
        }
        // Numbers past today's cap wait for tomorrow, unchecked and uncounted.
        let mut capped = Vec::new();
        let mut e164 = e164;
        if self.config.daily_cap > 0 {
            let granted = match self
                .store
                .reserve_daily_checks(self.backend.name(), n as i64, self.config.daily_cap)
                .await
            {
                Ok(granted) => granted.clamp(0, n as i64) as usize,
                Err(err) => {
                    tracing::warn!(error = %err, "cannot read the daily cap");
                    return deferred(n, "daily cap unavailable", Duration::from_secs(5));
                }
            };
            if granted < n {
                let wait = next_utc_midnight();
                self.state().capped_until = Some(Instant::now() + wait);
                tracing::warn!(
                    backend = self.backend.name(),
                    cap = self.config.daily_cap,
                    "daily cap reached"
                );
                capped = deferred(n - granted, "daily cap reached", wait);
                e164 = &e164[..granted];
                if granted == 0 {
                    return capped;
                }
            }
        }
        let n = e164.len();
        let _permit = self.permits.acquire().await.expect("semaphore open");
        // One bad number must not fail its neighbours (each split request paced like any other).
        let healthy = self.state().consecutive_failures == 0;
        let result = ask(self.backend.as_ref(), e164, healthy, &|numbers: Vec<
            String,
        >| async move {
            self.request(&numbers).await
        })
        .await;
        let mut outcomes = result.outcomes;
        outcomes.truncate(n);
        let unanswered = n - outcomes.len();
        match result.error {
            None => {
                self.on_success();
                outcomes.resize(
                    n,
                    Outcome::Retryable("the backend returned no answer for this number".into()),
                );
            }
            Some(CallError::RateLimited { retry_after }) => {
                let wait = self.on_rate_limited(retry_after);
                outcomes.extend(deferred(unanswered, "rate limited upstream", wait));
                self.return_cap(unanswered).await;
            }
            // One backend, nowhere else to send the numbers: its trouble counts as an
            // attempt (the circuit opens after a few, and then numbers wait uncounted).
            Some(error) => {
                let reason = error.reason();
                self.on_failure(&reason);
                outcomes.resize(n, Outcome::Retryable(reason));
                self.return_cap(unanswered).await;
            }
        }
        outcomes.extend(capped);
        outcomes
    }
}

impl Paced {
    /// One request upstream, within the rate limit.
    async fn request(&self, e164: &[String]) -> CallResult {
        if let Some(limiter) = &self.limiter {
            let cells = NonZeroU32::new(e164.len().clamp(1, self.burst) as u32).expect("non-zero");
            let _ = limiter.until_n_ready(cells).await;
        }
        timed_check(self.backend.as_ref(), e164).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::checker::CallResult;

    /// An upstream that answers with what it is told, and counts calls.
    struct Upstream {
        calls: AtomicUsize,
        answer: Mutex<Option<CallError>>,
    }

    #[async_trait]
    impl Backend for Arc<Upstream> {
        fn name(&self) -> &'static str {
            "upstream"
        }
        fn max_batch(&self) -> usize {
            5
        }
        // One request a number, as WAHA: these tests are about pacing, not splitting.
        fn one_request_per_call(&self) -> bool {
            false
        }
        async fn check(&self, e164: &[String]) -> CallResult {
            self.calls.fetch_add(1, Ordering::SeqCst);
            match self.answer.lock().unwrap().clone() {
                None => CallResult::ok(vec![Outcome::NotOnWhatsApp; e164.len()]),
                Some(err) => CallResult::failed(vec![], err),
            }
        }
    }

    use std::sync::Arc;

    fn paced(upstream: &Arc<Upstream>, config: PacingConfig) -> Paced {
        // Never connected: the daily cap is off in these tests.
        let store = Store::connect_lazy("postgres://127.0.0.1:1/none", 1).unwrap();
        Paced::new(Box::new(upstream.clone()), config, store)
    }

    fn numbers(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("+1415555{i:04}")).collect()
    }

    #[tokio::test]
    async fn repeated_failures_open_the_circuit_and_defer_without_calling() {
        let upstream = Arc::new(Upstream {
            calls: AtomicUsize::new(0),
            answer: Mutex::new(Some(CallError::Failed("HTTP 500".into()))),
        });
        let config = PacingConfig {
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(3600),
            ..PacingConfig::unlimited()
        };
        let p = paced(&upstream, config);
        for _ in 0..3 {
            let out = p.check(&numbers(2)).await;
            assert!(
                out.iter().all(|o| matches!(o, Outcome::Retryable(_))),
                "{out:?}"
            );
        }
        assert!(p.paused_for().is_some(), "open after 3 failures");
        let out = p.check(&numbers(2)).await;
        assert!(
            out.iter().all(|o| matches!(o, Outcome::Deferred { .. })),
            "{out:?}"
        );
        assert_eq!(
            upstream.calls.load(Ordering::SeqCst),
            3,
            "no call while open"
        );
    }

    #[tokio::test]
    async fn a_rate_limit_defers_the_numbers_and_pauses_with_backoff() {
        let upstream = Arc::new(Upstream {
            calls: AtomicUsize::new(0),
            answer: Mutex::new(Some(CallError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            })),
        });
        let p = paced(&upstream, PacingConfig::unlimited());
        let out = p.check(&numbers(3)).await;
        assert_eq!(out.len(), 3);
        for o in &out {
            match o {
                Outcome::Deferred { retry_in, .. } => assert!(*retry_in >= Duration::from_secs(7)),
                other => panic!("{other:?}"),
            }
        }
        let paused = p.paused_for().expect("paused");
        assert!(paused > Duration::from_secs(6) && paused <= Duration::from_secs(300));
    }

    #[tokio::test]
    async fn the_rate_limit_spaces_calls() {
        let upstream = Arc::new(Upstream {
            calls: AtomicUsize::new(0),
            answer: Mutex::new(None),
        });
        // 50 checks/s with a burst of 5 (the backend's batch): 5 calls of 5 need at least 0.4 s.
        let config = PacingConfig {
            rate_per_sec: 50.0,
            ..PacingConfig::unlimited()
        };
        let p = paced(&upstream, config);
        let start = Instant::now();
        for _ in 0..5 {
            p.check(&numbers(5)).await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(390),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(upstream.calls.load(Ordering::SeqCst), 5);
    }
}
