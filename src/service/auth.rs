//! Where a request's API key comes from, which account it opens, how fast each key may
//! call, and how many wrong keys an address may try.
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::domain::api_key::ApiKey;
use crate::error::ApiError;
use crate::store::Store;

/// Requests per second per key (bursts of twice that); None: no limit.
pub struct KeyLimiter(Option<governor::DefaultKeyedRateLimiter<Vec<u8>>>);

impl KeyLimiter {
    pub fn new(per_sec: u32) -> KeyLimiter {
        KeyLimiter(NonZeroU32::new(per_sec).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::new(2).expect("2"));
            governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
        }))
    }

    fn check(&self, key: &ApiKey) -> Result<(), ApiError> {
        if let Some(limiter) = &self.0
            && let Err(not_until) = limiter.check_key(&key.hash())
        {
            use governor::clock::{Clock, DefaultClock};
            let retry_after = not_until.wait_time_from(DefaultClock::default().now());
            return Err(ApiError::RateLimited { retry_after });
        }
        Ok(())
    }

    /// Forgets idle keys' state, so memory follows the active keys only.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.0 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The address a request came from, put in its extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// Where a request's handler records whose key it checked, put in its extensions by the
/// server: a request served for a checked key may keep its connection open.
#[derive(Debug, Clone, Default)]
pub struct AuthMark(Arc<Mutex<Option<Uuid>>>);

impl AuthMark {
    pub fn set(&self, account: Uuid) {
        *self.0.lock().expect("auth mark") = Some(account);
    }

    pub fn get(&self) -> Option<Uuid> {
        *self.0.lock().expect("auth mark")
    }
}

/// Failed authentications per peer address (an IPv6 address's /64, which one host
/// holds): `per_sec` a second, bursts of 4 times that. An address that failed within
/// `SUSPECT_FOR` pays for every lookup before it is made, so concurrent wrong keys cannot
/// outrun the limit; past it every key from that address is refused without a database
/// lookup until the limiter allows another. None: no limit.
pub struct FailureLimiter {
    limiter: Option<governor::DefaultKeyedRateLimiter<IpAddr>>,
    state: Mutex<HashMap<IpAddr, Standing>>,
}

/// How long after a failure an address's lookups are paid for up front.
const SUSPECT_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Standing {
    failed_at: Instant,
    blocked_until: Option<Instant>,
}

/// Whether a lookup was already paid for (`FailureLimiter::admit`).
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    paid: bool,
}

/// The address a limit is kept for: IPv4 as it is, IPv6 by its /64.
fn limited_address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl FailureLimiter {
    pub fn new(per_sec: u32) -> FailureLimiter {
        FailureLimiter {
            limiter: NonZeroU32::new(per_sec).map(|rate| {
                let burst = rate.saturating_mul(NonZeroU32::new(4).expect("4"));
                governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
            }),
            state: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses a peer that failed too often lately; a suspect one pays for its lookup now.
    fn admit(&self, peer: Option<IpAddr>) -> Result<Admission, ApiError> {
        let (Some(limiter), Some(peer)) = (&self.limiter, peer.map(limited_address)) else {
            return Ok(Admission { paid: false });
        };
        let now = Instant::now();
        let mut state = self.state.lock().expect("peer standing");
        let Some(standing) = state.get_mut(&peer) else {
            return Ok(Admission { paid: false });
        };
        if let Some(until) = standing.blocked_until.filter(|until| *until > now) {
            return Err(ApiError::AuthThrottled {
                retry_after: until - now,
            });
        }
        if now.duration_since(standing.failed_at) > SUSPECT_FOR {
            state.remove(&peer);
            return Ok(Admission { paid: false });
        }
        Self::pay(limiter, peer, standing)?;
        Ok(Admission { paid: true })
    }

    /// Takes one failure's worth from the address's allowance, or blocks it.
    fn pay(
        limiter: &governor::DefaultKeyedRateLimiter<IpAddr>,
        peer: IpAddr,
        standing: &mut Standing,
    ) -> Result<(), ApiError> {
        use governor::clock::{Clock, DefaultClock};
        let Err(not_until) = limiter.check_key(&peer) else {
            return Ok(());
        };
        let wait = not_until
            .wait_time_from(DefaultClock::default().now())
            .max(Duration::from_millis(100));
        if standing.blocked_until.is_none() {
            tracing::warn!(%peer, "too many failed authentications: refusing this address for a while");
        }
        standing.blocked_until = Some(Instant::now() + wait);
        Err(ApiError::AuthThrottled { retry_after: wait })
    }

    /// Counts a failed authentication from `peer` (paid for already, if it was suspect).
    fn failed(&self, peer: Option<IpAddr>, admission: Admission) {
        let (Some(limiter), Some(peer)) = (&self.limiter, peer.map(limited_address)) else {
            return;
        };
        let mut state = self.state.lock().expect("peer standing");
        let standing = state.entry(peer).or_insert(Standing {
            failed_at: Instant::now(),
            blocked_until: None,
        });
        standing.failed_at = Instant::now();
        if !admission.paid {
            let _ = Self::pay(limiter, peer, standing);
        }
    }

    /// Forgets quiet addresses, so memory follows the active ones.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        self.state.lock().expect("peer standing").retain(|_, s| {
            now.duration_since(s.failed_at) <= SUSPECT_FOR
                || s.blocked_until.is_some_and(|until| until > now)
        });
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// A key the server checked from the headers before reading the body (`Gate`): the
/// handler's own check of the same key needs no second lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticated {
    pub account: Uuid,
    key_hash: [u8; 32],
}

/// The places a key may be given: the request body (or query), and two headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct KeySources<'a> {
    pub body: &'a str,
    /// `authorization` header / metadata, `Bearer <key>`.
    pub authorization: Option<&'a str>,
    /// `x-api-key` header / metadata.
    pub x_api_key: Option<&'a str>,
    /// One of the headers came twice with different values, or the query string had two
    /// different `api_key`s: refused, as two keys in two places are.
    pub repeated: bool,
    /// Where the request came from, for the limit on failed authentications.
    pub peer: Option<IpAddr>,
    /// The headers' key, already checked.
    pub authenticated: Option<Authenticated>,
    /// Told the account once the key is checked.
    pub mark: Option<&'a AuthMark>,
}

/// The first value and whether another one differs from it.
fn first_and_repeated<'a>(mut values: impl Iterator<Item = &'a str>) -> (Option<&'a str>, bool) {
    let first = values.next();
    let repeated = values.any(|v| Some(v.trim()) != first.map(str::trim));
    (first, repeated)
}

impl<'a> KeySources<'a> {
    pub fn with_peer(self, peer: Option<&Peer>) -> KeySources<'a> {
        KeySources {
            peer: peer.map(|p| p.0),
            ..self
        }
    }

    /// The request's extensions: its address, the key the server checked, its mark.
    pub fn with_extensions(self, extensions: &'a http::Extensions) -> KeySources<'a> {
        KeySources {
            peer: extensions.get::<Peer>().map(|p| p.0),
            authenticated: extensions.get::<Authenticated>().copied(),
            mark: extensions.get::<AuthMark>(),
            ..self
        }
    }

    pub fn from_metadata(
        metadata: &'a tonic::metadata::MetadataMap,
        body: &'a str,
    ) -> KeySources<'a> {
        KeySources::from_values(body, |name| {
            metadata
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        })
    }

    pub fn from_headers(headers: &'a http::HeaderMap, body: &'a str) -> KeySources<'a> {
        KeySources::from_values(body, |name| {
            headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        })
    }

    /// From the body's key and every value of each key header (`all`).
    fn from_values(body: &'a str, all: impl Fn(&'static str) -> Vec<&'a str>) -> KeySources<'a> {
        let (authorization, a) = first_and_repeated(all("authorization").into_iter());
        let (x_api_key, x) = first_and_repeated(all("x-api-key").into_iter());
        KeySources {
            body,
            authorization,
            x_api_key,
            repeated: a || x,
            peer: None,
            authenticated: None,
            mark: None,
        }
    }
}

/// The one key presented; keys given in more than one place must agree.
pub fn presented_key(sources: KeySources<'_>) -> Result<ApiKey, ApiError> {
    if sources.repeated {
        return Err(ApiError::InvalidArgument(
            "two different API keys in one request; send one key".into(),
        ));
    }
    let bearer = sources.authorization.map(|v| {
        let v = v.trim();
        match v.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
            _ => v,
        }
    });
    let mut found: Option<&str> = None;
    for candidate in [Some(sources.body), bearer, sources.x_api_key]
        .into_iter()
        .flatten()
    {
        let candidate = candidate.trim();
        if candidate.is_empty() {
            continue;
        }
        match found {
            Some(prev) if prev != candidate => {
                return Err(ApiError::InvalidArgument(
                    "the API key in the request differs from the one in the headers; send one key"
                        .into(),
                ));
            }
            _ => found = Some(candidate),
        }
    }
    found.and_then(ApiKey::from_presented).ok_or(ApiError::Unauthenticated(
        "missing API key: set api_key, or send `authorization: Bearer <key>` or `x-api-key: <key>`",
    ))
}

/// The account behind the presented key, within the key's request rate; an address that
/// keeps presenting wrong keys is refused before its keys are looked up.
pub async fn authenticate(
    store: &Store,
    limiter: &KeyLimiter,
    failures: &FailureLimiter,
    keys: KeySources<'_>,
) -> Result<Uuid, ApiError> {
    let account = authenticate_key(store, limiter, failures, keys)
        .await?
        .account;
    if let Some(mark) = keys.mark {
        mark.set(account);
    }
    Ok(account)
}

/// The account and the key's hash, for a check made before the body is read.
pub async fn authenticate_key(
    store: &Store,
    limiter: &KeyLimiter,
    failures: &FailureLimiter,
    keys: KeySources<'_>,
) -> Result<Authenticated, ApiError> {
    if let Some(known) = keys.authenticated {
        // Checked (and counted against its rate) from the headers; the body's key, if
        // any, must be the same one (`presented_key` refuses two).
        if presented_key(keys)?.hash() == known.key_hash[..] {
            return Ok(known);
        }
    }
    let admission = failures.admit(keys.peer)?;
    let looked_up = match presented_key(keys) {
        Ok(key) => store
            .account_for_key(&key)
            .await?
            .map(|account| (key, account))
            .ok_or(ApiError::Unauthenticated("Invalid API key.")),
        Err(err) => Err(err),
    };
    if let Err(ApiError::Unauthenticated(_)) = &looked_up {
        failures.failed(keys.peer, admission);
    }
    let (key, account) = looked_up?;
    limiter.check(&key)?;
    Ok(Authenticated {
        account,
        key_hash: key.hash().try_into().expect("a SHA-256 digest"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<'a>(
        body: &'a str,
        authorization: Option<&'a str>,
        x_api_key: Option<&'a str>,
    ) -> KeySources<'a> {
        KeySources {
            body,
            authorization,
            x_api_key,
            repeated: false,
            peer: None,
            authenticated: None,
            mark: None,
        }
    }

    #[test]
    fn an_ipv6_host_is_limited_by_its_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            limited_address(ip("2001:db8:1:2:aaaa::1")),
            limited_address(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            limited_address(ip("2001:db8:1:2::1")),
            limited_address(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limited_address(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(limited_address(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn takes_the_key_from_any_one_place() {
        assert_eq!(
            presented_key(keys("k1", None, None)).unwrap().expose(),
            "k1"
        );
        assert_eq!(
            presented_key(keys("", Some("Bearer k2"), None))
                .unwrap()
                .expose(),
            "k2"
        );
        assert_eq!(
            presented_key(keys("k2", Some("bearer k2"), None))
                .unwrap()
                .expose(),
            "k2"
        );
        assert_eq!(
            presented_key(keys("", None, Some("k3"))).unwrap().expose(),
            "k3"
        );
    }

    #[test]
    fn rejects_missing_and_conflicting_keys() {
        assert!(matches!(
            presented_key(keys("", None, None)),
            Err(ApiError::Unauthenticated(_))
        ));
        assert!(matches!(
            presented_key(keys("b", None, Some("a"))),
            Err(ApiError::InvalidArgument(_))
        ));
        assert!(matches!(
            presented_key(keys("", Some("Bearer b"), Some("a"))),
            Err(ApiError::InvalidArgument(_))
        ));
    }
}
