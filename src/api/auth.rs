//! Where a request's API key comes from, and which account it opens.
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::domain::api_key::ApiKey;
use crate::error::ApiError;
use crate::store::Store;

/// The key from the request body or from `authorization: Bearer` / `x-api-key`.
/// Keys given in more than one place must agree.
pub fn presented_key(metadata: &MetadataMap, body_key: &str) -> Result<ApiKey, ApiError> {
    let bearer = metadata
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            let v = v.trim();
            match v.get(..7) {
                Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => v[7..].trim(),
                _ => v,
            }
        });
    let header = metadata.get("x-api-key").and_then(|v| v.to_str().ok());
    let mut found: Option<&str> = None;
    for candidate in [Some(body_key), bearer, header].into_iter().flatten() {
        let candidate = candidate.trim();
        if candidate.is_empty() {
            continue;
        }
        match found {
            Some(prev) if prev != candidate => {
                return Err(ApiError::InvalidArgument(
                    "the API key in the request differs from the one in the metadata; send one key"
                        .into(),
                ));
            }
            _ => found = Some(candidate),
        }
    }
    found
        .and_then(ApiKey::from_presented)
        .ok_or(ApiError::Unauthenticated(
            "missing API key: set api_key, or send `authorization: Bearer <key>` or `x-api-key: <key>`",
        ))
}

pub async fn authenticate(
    store: &Store,
    metadata: &MetadataMap,
    body_key: &str,
) -> Result<Uuid, ApiError> {
    let key = presented_key(metadata, body_key)?;
    store
        .account_for_key(&key)
        .await?
        .ok_or(ApiError::Unauthenticated("invalid or revoked API key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(pairs: &[(&'static str, &str)]) -> MetadataMap {
        let mut m = MetadataMap::new();
        for (k, v) in pairs {
            m.insert(*k, v.parse().unwrap());
        }
        m
    }

    #[test]
    fn takes_the_key_from_any_one_place() {
        assert_eq!(presented_key(&md(&[]), "k1").unwrap().expose(), "k1");
        assert_eq!(
            presented_key(&md(&[("authorization", "Bearer k2")]), "")
                .unwrap()
                .expose(),
            "k2"
        );
        assert_eq!(
            presented_key(&md(&[("authorization", "bearer k2")]), "k2")
                .unwrap()
                .expose(),
            "k2"
        );
        assert_eq!(
            presented_key(&md(&[("x-api-key", "k3")]), "")
                .unwrap()
                .expose(),
            "k3"
        );
    }

    #[test]
    fn rejects_missing_and_conflicting_keys() {
        assert!(matches!(
            presented_key(&md(&[]), ""),
            Err(ApiError::Unauthenticated(_))
        ));
        assert!(matches!(
            presented_key(&md(&[("x-api-key", "a")]), "b"),
            Err(ApiError::InvalidArgument(_))
        ));
        assert!(matches!(
            presented_key(
                &md(&[("x-api-key", "a"), ("authorization", "Bearer b")]),
                ""
            ),
            Err(ApiError::InvalidArgument(_))
        ));
    }
}
