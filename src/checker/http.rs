//! What the HTTP gateway backends share: one pooled client, and how a gateway's answer
//! is read: a body, or the kind of trouble it reports. Upstream text reaches a reason
//! only through `excerpt` (or without its URL): a request's query names the number asked.
use std::time::{Duration, SystemTime};

use reqwest::{Response, StatusCode};

use super::CallError;

/// The longest `Retry-After` taken as given: a longer one is a gateway's mistake, and
/// the account would sit idle for it.
pub const RETRY_AFTER_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Most characters of upstream text in a reason.
const EXCERPT_CHARS: usize = 120;

/// Digits in a row from which upstream text is taken to hold a phone number.
const NUMBER_DIGITS: usize = 7;

/// One client per backend: connections are reused across calls.
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("wavalidate/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

/// A validated base URL without the trailing slash, so paths can be appended.
pub fn base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_string()
}

/// A gateway's whole answer, for a backend that reads its refusals itself.
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub body: String,
}

impl Answer {
    /// What a non-2xx answer reports, read the way every gateway's is.
    pub fn trouble(&self, gateway: &str) -> CallError {
        status_error(self.status, self.retry_after, &self.body, gateway)
    }
}

/// The answer to a request that was sent, or why none came.
pub async fn answer(sent: reqwest::Result<Response>, gateway: &str) -> Result<Answer, CallError> {
    let resp = sent.map_err(|e| transport_error(e, gateway))?;
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, SystemTime::now()));
    let body = resp.text().await.map_err(|e| transport_error(e, gateway))?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// The body of a 2xx answer, or what the gateway's status and body say went wrong.
pub async fn body(sent: reqwest::Result<Response>, gateway: &str) -> Result<String, CallError> {
    let answer = answer(sent, gateway).await?;
    if answer.status.is_success() {
        return Ok(answer.body);
    }
    Err(answer.trouble(gateway))
}

/// A `Retry-After` value (RFC 9110: delay-seconds or an HTTP-date) as a wait from `now`:
/// a date past is no wait, and no wait is longer than `RETRY_AFTER_MAX`.
fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still a count of seconds, an absurd one.
        value
            .parse()
            .map(Duration::from_secs)
            .unwrap_or(RETRY_AFTER_MAX)
    } else {
        let at = httpdate::parse_http_date(value).ok()?;
        at.duration_since(now).unwrap_or(Duration::ZERO)
    };
    Some(wait.min(RETRY_AFTER_MAX))
}

/// The trouble a non-2xx answer reports: the account's (rate limit, session, settings)
/// or a failed request.
fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &str,
    gateway: &str,
) -> CallError {
    let lower = body.to_ascii_lowercase();
    if status == StatusCode::TOO_MANY_REQUESTS || mentions_rate_limit(body) {
        return CallError::RateLimited { retry_after };
    }
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => CallError::Misconfigured(format!(
            "{gateway} answered HTTP {status} (check the gateway API key)"
        )),
        StatusCode::NOT_FOUND => CallError::Misconfigured(format!(
            "{gateway} answered HTTP {status} (check the gateway URL and session/instance name)"
        )),
        // WAHA, for a session that is not WORKING (after waiting a few seconds for it).
        StatusCode::UNPROCESSABLE_ENTITY => CallError::LoggedOut(format!(
            "{gateway} answered HTTP {status}: the session is not working ({})",
            excerpt(body)
        )),
        // Evolution API, for an instance whose WhatsApp connection is closed.
        _ if lower.contains("connection closed") => CallError::LoggedOut(format!(
            "{gateway}: the instance's WhatsApp connection is closed"
        )),
        _ => CallError::Failed(format!("{gateway} answered HTTP {status}")),
    }
}

/// A request that got no answer. reqwest's message carries the request's URL, whose
/// query names the number asked: it is dropped, and the cause kept.
pub fn transport_error(err: reqwest::Error, gateway: &str) -> CallError {
    let err = err.without_url();
    let cause = excerpt(&root_cause(&err));
    if err.is_timeout() {
        CallError::Unreachable(format!("{gateway} did not answer in time"))
    } else if err.is_connect() {
        CallError::Unreachable(format!("cannot connect to {gateway}: {cause}"))
    } else {
        CallError::Unreachable(format!("{gateway} request failed: {cause}"))
    }
}

/// The innermost error's message: "connection refused", not "error sending request".
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    cause.to_string()
}

/// Gateways signal WhatsApp's own rate limit in the body too.
pub fn mentions_rate_limit(body: &str) -> bool {
    let lower = body.to_ascii_lowercase();
    lower.contains("rate-overlimit")
        || lower.contains("rate limit")
        || lower.contains("too many requests")
}

/// `text` with the query of every URL or path in it dropped
/// (`/api/contacts/check-exists?phone=14155552671` becomes `/api/contacts/check-exists`).
pub fn strip_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let (mut in_path, mut in_query) = (false, false);
    for c in text.chars() {
        let ends_token = c.is_whitespace() || "\"'`()<>[]{}".contains(c);
        if in_query && !ends_token {
            continue;
        }
        in_query = false;
        if ends_token {
            in_path = false;
        } else if c == '/' {
            in_path = true;
        } else if c == '?' && in_path {
            in_query = true;
            continue;
        }
        out.push(c);
    }
    out
}

/// `text` with the user and password of every URL in it masked
/// (`postgres://wa:secret@db:5432/x` becomes `postgres://***@db:5432/x`): a gateway's
/// error may quote its own connection strings.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| c.is_whitespace() || "/?#\"'`()<>[]{},;".contains(c))
            .unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(userinfo_end) => {
                out.push_str("***");
                rest = &tail[userinfo_end..];
            }
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// `text` with every run of `NUMBER_DIGITS` digits or more (a phone number, as a gateway
/// may echo it outside a URL) replaced by `#`.
fn mask_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String| {
        if digits.len() >= NUMBER_DIGITS {
            out.push('#');
        } else {
            out.push_str(digits);
        }
        digits.clear();
    };
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out);
            out.push(c);
        }
    }
    flush(&mut digits, &mut out);
    out
}

/// Upstream text fit for a reason: on one line, with no query, no URL credentials and no
/// phone number, and
/// at most `EXCERPT_CHARS` characters, cut between words (marked "…").
pub fn excerpt(text: &str) -> String {
    let clean = mask_numbers(&mask_userinfo(&strip_queries(text)));
    let line = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= EXCERPT_CHARS {
        return line;
    }
    // Room for the "…".
    let end = line
        .char_indices()
        .nth(EXCERPT_CHARS - 1)
        .map_or(line.len(), |(i, _)| i);
    let head = if line[end..].starts_with(' ') {
        &line[..end]
    } else {
        // Back to the last word's end; one word longer than the excerpt is cut anyway.
        line[..end].rfind(' ').map_or(&line[..end], |i| &line[..i])
    };
    format!("{}…", head.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: &str) -> SystemTime {
        httpdate::parse_http_date(date).unwrap()
    }

    #[test]
    fn retry_after_is_read_in_seconds_or_as_a_date() {
        let now = at("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 ", now), Some(Duration::ZERO));
        let date = "Wed, 21 Oct 2015 07:30:30 GMT";
        assert_eq!(retry_after(date, now), Some(Duration::from_secs(150)));
        // RFC 9110's obsolete forms are still HTTP-dates.
        let rfc850 = "Wednesday, 21-Oct-15 07:30:30 GMT";
        assert_eq!(retry_after(rfc850, now), Some(Duration::from_secs(150)));
        let asctime = "Wed Oct 21 07:30:30 2015";
        assert_eq!(retry_after(asctime, now), Some(Duration::from_secs(150)));
    }

    #[test]
    fn a_retry_after_date_past_is_now() {
        let now = at("Wed, 21 Oct 2015 07:28:00 GMT");
        let past = "Wed, 21 Oct 2015 07:00:00 GMT";
        assert_eq!(retry_after(past, now), Some(Duration::ZERO));
    }

    #[test]
    fn a_garbled_retry_after_is_ignored() {
        let now = SystemTime::now();
        for garbage in [
            "",
            "soon",
            "-5",
            "1.5",
            "12s",
            "Wed, 32 Oct 2015 07:28:00 GMT",
        ] {
            assert_eq!(retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn an_absurd_retry_after_is_capped_at_a_day() {
        let now = at("Wed, 21 Oct 2015 07:28:00 GMT");
        assert_eq!(retry_after("86400", now), Some(RETRY_AFTER_MAX));
        assert_eq!(retry_after("86401", now), Some(RETRY_AFTER_MAX));
        let overflow = "99999999999999999999999";
        assert_eq!(retry_after(overflow, now), Some(RETRY_AFTER_MAX));
        let next_year = "Fri, 21 Oct 2016 07:28:00 GMT";
        assert_eq!(retry_after(next_year, now), Some(RETRY_AFTER_MAX));
    }

    #[test]
    fn queries_are_stripped_from_urls_and_paths_in_text() {
        assert_eq!(
            strip_queries(
                "error sending request for url (http://gw:3000/api/contacts/check-exists?phone=14155552671&session=default)"
            ),
            "error sending request for url (http://gw:3000/api/contacts/check-exists)"
        );
        assert_eq!(
            strip_queries(r#"{"path":"/api/contacts/check-exists?phone=14155552671","x":1}"#),
            r#"{"path":"/api/contacts/check-exists","x":1}"#
        );
        assert_eq!(
            strip_queries("see https://a/b?c=1 and http://d/e?f=2\nnext"),
            "see https://a/b and http://d/e\nnext"
        );
        // A question is not a query.
        assert_eq!(strip_queries("is it down? yes"), "is it down? yes");
    }

    #[test]
    fn excerpts_hold_no_phone_number() {
        let body = r#"{"query":{"phone":"14155552671","session":"default"},"statusCode":500}"#;
        let cut = excerpt(body);
        assert!(!cut.contains("14155552671"), "{cut}");
        assert!(cut.contains("500"), "short numbers stay: {cut}");
    }

    #[test]
    fn excerpts_hold_no_url_credentials() {
        let body = "cannot reach postgres://waha:hunter2@db.internal:5432/waha (also redis://:pw@cache:6379) at http://gw:3000/x";
        let cut = excerpt(body);
        assert_eq!(
            cut,
            "cannot reach postgres://***@db.internal:5432/waha (also redis://***@cache:6379) at http://gw:3000/x"
        );
    }

    #[test]
    fn excerpts_are_cut_between_words() {
        let short = "We didn't find a session with name 'default'.\nPlease start it first";
        assert_eq!(
            excerpt(short),
            "We didn't find a session with name 'default'. Please start it first"
        );
        let words = "lorem ipsum dolor ".repeat(20);
        let cut = excerpt(&words);
        assert!(cut.chars().count() <= EXCERPT_CHARS, "{cut}");
        assert!(cut.ends_with('…'), "{cut}");
        let kept = cut.trim_end_matches('…');
        assert!(words.starts_with(kept), "{cut}");
        assert!(words[kept.len()..].starts_with(' '), "cut mid-word: {cut}");
        // A single word longer than an excerpt is cut all the same.
        let blob = "x".repeat(500);
        assert_eq!(excerpt(&blob).chars().count(), EXCERPT_CHARS);
    }

    /// A server that reads a request and closes the connection without answering.
    async fn hang_up() -> std::net::SocketAddr {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn transport_errors_never_carry_the_number_asked() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let client = client(Duration::from_secs(5)).unwrap();
        for addr in [hang_up().await, closed] {
            let url = format!(
                "http://{addr}/api/contacts/check-exists?phone=14155552671&session=default"
            );
            let sent = client.get(&url).send().await;
            assert!(
                sent.as_ref()
                    .unwrap_err()
                    .to_string()
                    .contains("14155552671"),
                "reqwest's own message names the number: the test would prove nothing"
            );
            let Err(CallError::Unreachable(reason)) = body(sent, "WAHA").await else {
                panic!("a request without an answer is Unreachable");
            };
            assert!(!reason.contains("14155552671"), "{reason}");
            assert!(!reason.contains("phone="), "{reason}");
        }
    }
}
