//! Authentication as axum extractors: handlers take the caller's account as an argument.
use std::sync::Arc;

use axum::Json;
use axum::extract::{Form, FromRef, FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::service::{KeySources, ValidationService};

/// The account of a request whose key comes as `Authorization: Bearer <key>`,
/// `X-Api-Key: <key>` or the `api_key` query parameter.
pub struct Caller(pub Uuid);

/// A JSON body and the account of its key: the body's `api_key` field or the headers.
pub struct CallerJson<T>(pub Uuid, pub T);

/// Parameters from a JSON body, a form body, or the query string when the body is empty
/// (ProWebLook's clients POST all three), and the account of their key.
pub struct CallerParams<T>(pub Uuid, pub T);

/// The query string's `api_key`; two different ones are refused, not read as the first.
fn query_key(uri: &axum::http::Uri) -> Result<Option<String>, ApiError> {
    let mut keys = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .filter(|(name, _)| name == "api_key")
        .map(|(_, key)| key.trim().to_string());
    let first = keys.next();
    if keys.any(|key| Some(&key) != first.as_ref()) {
        return Err(ApiError::InvalidArgument(
            "two different API keys in one request; send one key".into(),
        ));
    }
    Ok(first)
}

/// A request's head, kept while its body (which may hold the key) is read: a key in the
/// headers or query was checked before the body (the server's gate), one in the body
/// is checked after.
struct Head {
    parts: Parts,
    query: Option<String>,
}

impl Head {
    fn of(req: Request) -> Result<(Head, Request), ApiError> {
        let query = query_key(req.uri())?;
        let (parts, body) = req.into_parts();
        let head = Head {
            parts: parts.clone(),
            query,
        };
        Ok((head, Request::from_parts(parts, body)))
    }

    /// The account of the one key among the headers, the query and the body's.
    async fn account(&self, core: &ValidationService, body_key: &str) -> Result<Uuid, ApiError> {
        let key = one_key(self.query.as_deref(), body_key)?;
        let keys = KeySources::from_headers(&self.parts.headers, key)
            .with_extensions(&self.parts.extensions);
        core.authenticate(keys).await
    }
}

/// The key of the query string or of the body: both count, and two different ones are refused.
fn one_key<'a>(query: Option<&'a str>, body: &'a str) -> Result<&'a str, ApiError> {
    let body = body.trim();
    match query.map(str::trim).filter(|q| !q.is_empty()) {
        Some(q) if !body.is_empty() && q != body => Err(ApiError::InvalidArgument(
            "two different API keys in one request (query string and body)".into(),
        )),
        Some(q) if body.is_empty() => Ok(q),
        _ => Ok(body),
    }
}

/// A body that may carry the caller's key.
pub trait BodyKey {
    fn api_key(&self) -> &str;
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<ValidationService>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Caller, ApiError> {
        let core = Arc::<ValidationService>::from_ref(state);
        let query = query_key(&parts.uri)?;
        let keys = KeySources::from_headers(&parts.headers, query.as_deref().unwrap_or(""))
            .with_extensions(&parts.extensions);
        Ok(Caller(core.authenticate(keys).await?))
    }
}

impl<S, T> FromRequest<S> for CallerJson<T>
where
    Arc<ValidationService>: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned + BodyKey + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<CallerJson<T>, ApiError> {
        let core = Arc::<ValidationService>::from_ref(state);
        let (head, req) = Head::of(req)?;
        let Json(body) = Json::<T>::from_request(req, state).await?;
        Ok(CallerJson(head.account(&core, body.api_key()).await?, body))
    }
}

impl<S, T> FromRequest<S> for CallerParams<T>
where
    Arc<ValidationService>: FromRef<S>,
    S: Send + Sync,
    T: DeserializeOwned + BodyKey + Send,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<CallerParams<T>, ApiError> {
        let core = Arc::<ValidationService>::from_ref(state);
        let (head, req) = Head::of(req)?;
        let headers = &head.parts.headers;
        let form = headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        let json = headers.contains_key(axum::http::header::CONTENT_TYPE) && !form;
        let params = if json {
            Json::<T>::from_request(req, state).await?.0
        } else if form {
            Form::<T>::from_request(req, state).await?.0
        } else {
            let uri = req.uri().clone();
            let body = axum::body::to_bytes(req.into_body(), super::MAX_BODY_BYTES)
                .await
                .map_err(|_| {
                    ApiError::TooLarge(format!(
                        "request body larger than {} bytes",
                        super::MAX_BODY_BYTES
                    ))
                })?;
            if !body.is_empty() {
                return Err(ApiError::InvalidArgument(
                    "send the parameters as JSON (Content-Type: application/json), as a form, or in the query string".into(),
                ));
            }
            Query::<T>::try_from_uri(&uri)?.0
        };
        Ok(CallerParams(
            head.account(&core, params.api_key()).await?,
            params,
        ))
    }
}
