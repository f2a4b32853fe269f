//! Where a request's API key comes from, which account it opens, and how fast each
//! key may call.
use std::num::NonZeroU32;

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
}

/// The first value and whether another one differs from it.
fn first_and_repeated<'a>(mut values: impl Iterator<Item = &'a str>) -> (Option<&'a str>, bool) {
    let first = values.next();
    let repeated = values.any(|v| Some(v.trim()) != first.map(str::trim));
    (first, repeated)
}

impl<'a> KeySources<'a> {
    pub fn from_metadata(
        metadata: &'a tonic::metadata::MetadataMap,
        body: &'a str,
    ) -> KeySources<'a> {
        let (authorization, a) = first_and_repeated(
            metadata
                .get_all("authorization")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let (x_api_key, x) = first_and_repeated(
            metadata
                .get_all("x-api-key")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        KeySources {
            body,
            authorization,
            x_api_key,
            repeated: a || x,
        }
    }

    pub fn from_headers(headers: &'a http::HeaderMap, body: &'a str) -> KeySources<'a> {
        let (authorization, a) = first_and_repeated(
            headers
                .get_all("authorization")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        let (x_api_key, x) = first_and_repeated(
            headers
                .get_all("x-api-key")
                .iter()
                .filter_map(|v| v.to_str().ok()),
        );
        KeySources {
            body,
            authorization,
            x_api_key,
            repeated: a || x,
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

/// The account behind the presented key, within the key's request rate.
pub async fn authenticate(
    store: &Store,
    limiter: &KeyLimiter,
    keys: KeySources<'_>,
) -> Result<Uuid, ApiError> {
    let key = presented_key(keys)?;
    let account = store
        .account_for_key(&key)
        .await?
        .ok_or(ApiError::Unauthenticated("Invalid API key."))?;
    limiter.check(&key)?;
    Ok(account)
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
        }
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
