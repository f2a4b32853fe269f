//! Fake WhatsApp gateways answering like the real WAHA (2024.10, its source read for
//! each answer) and Evolution API, failure modes included, and counting every call
//! they get.
use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// How the fake answers one request.
#[derive(Debug, Clone)]
pub enum Mode {
    Normal,
    /// HTTP 429 with an optional Retry-After (seconds).
    RateLimited(Option<u64>),
    /// WhatsApp's `rate-overlimit` as the gateway passes it on: HTTP 500 with the word
    /// in the body (WAHA's error JSON echoes the request, number included).
    RateOverlimit,
    ServerError,
    /// Answers only after this long (clients time out first).
    Hang(Duration),
    /// Evolution: `[]`.
    Empty,
    /// Evolution: leaves these digits out of the answer.
    MissingRows(Vec<String>),
}

/// A WhatsApp session's status, as WAHA names it (Evolution: `open` when `Working`,
/// `close` otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Session {
    Working,
    /// Started but not connected: WAHA stays so for good when it cannot reach WhatsApp.
    Starting,
    /// Not linked (logged out): waits for a QR code scan.
    ScanQrCode,
    /// Not running: checks answer 404 "We didn't find a session".
    Stopped,
    Failed,
}

impl Session {
    pub fn as_str(self) -> &'static str {
        match self {
            Session::Working => "WORKING",
            Session::Starting => "STARTING",
            Session::ScanQrCode => "SCAN_QR_CODE",
            Session::Stopped => "STOPPED",
            Session::Failed => "FAILED",
        }
    }
}

/// How long WAHA waits for a session to be WORKING before it answers a check 422
/// (5 s on the real one; short so that tests stay fast).
pub const STATUS_WAIT: Duration = Duration::from_millis(250);

pub struct Gateway {
    pub addr: SocketAddr,
    pub state: Arc<FakeState>,
}

pub struct FakeState {
    /// Digits of numbers registered on WhatsApp.
    registered: HashSet<String>,
    api_key: String,
    /// Whether a request with another key is refused (WAHA 2024.10 ignores keys).
    key_required: std::sync::atomic::AtomicBool,
    /// Scripted modes for the next requests; `default` afterwards.
    script: Mutex<VecDeque<Mode>>,
    default: Mutex<Mode>,
    /// (when, digits asked) per request.
    calls: Mutex<Vec<(Instant, Vec<String>)>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    /// Added to every answer, like a real gateway's round trip to WhatsApp.
    latency: Mutex<Duration>,
    /// Requests after this many wait until the gate opens (`hold_from`, `release`).
    hold_from: Mutex<Option<usize>>,
    gate: tokio::sync::watch::Sender<bool>,
    /// Requests waiting at the closed gate now.
    held: AtomicUsize,
    /// Digits the gateway fails on: a request holding one answers 500.
    poison: Mutex<HashSet<String>>,
    /// The error message WAHA's 500 for a poisoned number carries (its exception's).
    poison_message: Mutex<String>,
    /// The WhatsApp session's status; watched by WAHA checks waiting for WORKING.
    session: tokio::sync::watch::Sender<Session>,
    /// How long a WAHA check waits for the session to be WORKING.
    status_wait: Mutex<Duration>,
    /// Session status probes received.
    probes: AtomicUsize,
}

impl FakeState {
    #[allow(dead_code)] // used by the gateway benchmark
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap() = latency;
    }

    /// Requests after the first `n` wait at a closed gate until `release` (a test
    /// forces a worker to be mid-call while it does something else).
    pub fn hold_from(&self, n: usize) {
        *self.hold_from.lock().unwrap() = Some(n);
        self.gate.send_replace(false);
    }

    /// Opens the gate: held requests go on, and later ones pass.
    pub fn release(&self) {
        *self.hold_from.lock().unwrap() = None;
        self.gate.send_replace(true);
    }

    /// Any request holding this number (`+` or not) fails with HTTP 500, as gateways do
    /// for a number that trips them.
    pub fn poison(&self, number: &str) {
        let digits = number.trim_start_matches('+').to_string();
        self.poison.lock().unwrap().insert(digits);
    }

    /// What WAHA's 500 for a poisoned number says (a real one passes its engine's error on,
    /// internal hostnames and connection strings included).
    pub fn set_poison_message(&self, message: &str) {
        *self.poison_message.lock().unwrap() = message.to_string();
    }

    /// Logs the WhatsApp session out (`false`, `SCAN_QR_CODE`) or back in (`WORKING`).
    pub fn set_connected(&self, connected: bool) {
        self.set_session(if connected {
            Session::Working
        } else {
            Session::ScanQrCode
        });
    }

    /// Puts the session in this status. Until it is WORKING, WAHA answers checks with
    /// 422 and the status after `set_status_wait` (404 at once when `Stopped`); Evolution
    /// answers 500 "Connection Closed" and its connection state is `close`.
    pub fn set_session(&self, status: Session) {
        self.session.send_replace(status);
    }

    fn connected(&self) -> bool {
        *self.session.borrow() == Session::Working
    }

    /// How long a WAHA check waits for the session to be WORKING before answering 422.
    pub fn set_status_wait(&self, wait: Duration) {
        *self.status_wait.lock().unwrap() = wait;
    }

    /// Takes any API key, or none, as WAHA 2024.10 does (later versions enforce
    /// `WAHA_API_KEY`, as this fake does by default).
    pub fn ignore_api_key(&self) {
        self.key_required.store(false, Ordering::SeqCst);
    }

    /// The session's status once it is WORKING or `status_wait` is over, as WAHA's
    /// session status guard waits.
    async fn status_after_wait(&self) -> Session {
        let wait = *self.status_wait.lock().unwrap();
        let mut status = self.session.subscribe();
        let _ = tokio::time::timeout(wait, status.wait_for(|s| *s == Session::Working)).await;
        *status.borrow()
    }

    /// Session status requests received so far.
    pub fn probes(&self) -> usize {
        self.probes.load(Ordering::SeqCst)
    }

    fn poisoned(&self, numbers: &[String]) -> bool {
        let poison = self.poison.lock().unwrap();
        numbers.iter().any(|n| poison.contains(n))
    }

    /// Requests waiting at the gate now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// How often each number (its digits) was asked, over all requests.
    pub fn asked_counts(&self) -> std::collections::HashMap<String, usize> {
        let mut counts = std::collections::HashMap::new();
        for (_, numbers) in self.calls.lock().unwrap().iter() {
            for n in numbers {
                *counts.entry(n.clone()).or_insert(0) += 1;
            }
        }
        counts
    }

    pub fn script(&self, modes: impl IntoIterator<Item = Mode>) {
        self.script.lock().unwrap().extend(modes);
    }

    pub fn set_default(&self, mode: Mode) {
        *self.default.lock().unwrap() = mode;
    }

    /// Requests received so far.
    pub fn calls(&self) -> Vec<(Instant, Vec<String>)> {
        self.calls.lock().unwrap().clone()
    }

    /// Numbers asked so far, over all requests.
    pub fn numbers_asked(&self) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .map(|(_, n)| n.len())
            .sum()
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    fn next_mode(&self) -> Mode {
        self.script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.default.lock().unwrap().clone())
    }

    /// A gateway failing every request (`set_default(Mode::ServerError)`) fails its
    /// session status too.
    fn broken(&self) -> Option<Response> {
        let mode = self.default.lock().unwrap().clone();
        matches!(mode, Mode::ServerError)
            .then(|| failure(&mode))
            .flatten()
    }

    fn authorized(&self, headers: &HeaderMap, header: &str) -> bool {
        !self.key_required.load(Ordering::SeqCst)
            || headers.get(header).and_then(|v| v.to_str().ok()) == Some(self.api_key.as_str())
    }

    /// Records the call and applies its mode; Some(response) when the mode answers instead of the normal path.
    async fn begin(&self, numbers: Vec<String>) -> (Mode, InFlight<'_>) {
        let seq = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((Instant::now(), numbers));
            calls.len()
        };
        let hold = self.hold_from.lock().unwrap().is_some_and(|n| seq > n);
        if hold {
            let mut open = self.gate.subscribe();
            self.held.fetch_add(1, Ordering::SeqCst);
            let _ = open.wait_for(|open| *open).await;
            self.held.fetch_sub(1, Ordering::SeqCst);
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let guard = InFlight(&self.in_flight);
        let mode = self.next_mode();
        let latency = *self.latency.lock().unwrap();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if let Mode::Hang(d) = &mode {
            tokio::time::sleep(*d).await;
        }
        (mode, guard)
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn failure(mode: &Mode) -> Option<Response> {
    match mode {
        Mode::RateLimited(after) => {
            let mut resp = (
                StatusCode::TOO_MANY_REQUESTS,
                Json(json!({"error": "rate-overlimit"})),
            )
                .into_response();
            if let Some(s) = after {
                resp.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            Some(resp)
        }
        Mode::ServerError => {
            Some((StatusCode::INTERNAL_SERVER_ERROR, "session not ready").into_response())
        }
        Mode::RateOverlimit => Some(
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"status": 500, "error": "Internal Server Error",
                            "response": {"message": ["rate-overlimit"]}})),
            )
                .into_response(),
        ),
        _ => None,
    }
}

/// NestJS's error body, as WAHA answers an HttpException.
fn waha_error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "error": status.canonical_reason(),
    });
    (status, Json(body)).into_response()
}

/// WAHA's answer to any other exception (its `AllExceptionsFilter`): HTTP 500 with the
/// error and the request echoed, query and all.
fn waha_exception(message: &str, uri: &axum::http::Uri) -> Response {
    let query: Value = uri
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        })
        .unwrap_or_else(|| json!({}));
    let body = json!({
        "statusCode": 500,
        "timestamp": "2024-10-21T07:28:00.000Z",
        "exception": {"message": message, "name": "Error", "stack": format!("Error: {message}\n    at ...")},
        "request": {"path": uri.to_string(), "method": "GET", "body": {}, "query": query},
        "version": {"version": "2024.10.8", "engine": "WEBJS", "tier": "CORE"},
    });
    (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response()
}

/// WAHA's refusal of a request with a wrong `X-Api-Key` (when keys are enforced).
fn waha_unauthorized(state: &FakeState, headers: &HeaderMap) -> Option<Response> {
    (!state.authorized(headers, "x-api-key"))
        .then(|| waha_error(StatusCode::UNAUTHORIZED, "Unauthorized"))
}

/// WAHA Core's refusal of a check that cannot wait for the session: another session than
/// its one (it runs only `default`), or a stopped one.
fn waha_no_session(state: &FakeState, asked: &str, session: &str) -> Option<Response> {
    if asked != session {
        return Some(waha_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "WAHA Core support only 'default' session. If you want to run more then one WhatsApp account - please get WAHA PLUS version. Check this out: https://waha.devlike.pro/docs/how-to/plus-version",
        ));
    }
    (*state.session.borrow() == Session::Stopped).then(|| {
        waha_error(
            StatusCode::NOT_FOUND,
            &format!(
                "We didn't find a session with name '{asked}'.\nPlease start it first by using POST /api/sessions/{asked}/start request"
            ),
        )
    })
}

/// Evolution API's answer to a request with a wrong `apikey` or for another instance.
fn evolution_refuses(
    state: &FakeState,
    headers: &HeaderMap,
    asked: &str,
    instance: &str,
) -> Option<Response> {
    if !state.authorized(headers, "apikey") {
        return Some(
            (
                StatusCode::UNAUTHORIZED,
                Json(json!({"status": 401, "error": "Unauthorized"})),
            )
                .into_response(),
        );
    }
    (asked != instance).then(|| {
        (
            StatusCode::NOT_FOUND,
            Json(json!({"status": 404, "error": "Not Found"})),
        )
            .into_response()
    })
}

async fn spawn(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn new_state(registered: &[&str], api_key: &str) -> Arc<FakeState> {
    Arc::new(FakeState {
        registered: registered
            .iter()
            .map(|n| n.trim_start_matches('+').to_string())
            .collect(),
        api_key: api_key.to_string(),
        key_required: std::sync::atomic::AtomicBool::new(true),
        script: Mutex::new(VecDeque::new()),
        default: Mutex::new(Mode::Normal),
        calls: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        latency: Mutex::new(Duration::ZERO),
        hold_from: Mutex::new(None),
        gate: tokio::sync::watch::channel(true).0,
        held: AtomicUsize::new(0),
        poison: Mutex::new(HashSet::new()),
        poison_message: Mutex::new("session not ready".into()),
        session: tokio::sync::watch::channel(Session::Working).0,
        status_wait: Mutex::new(STATUS_WAIT),
        probes: AtomicUsize::new(0),
    })
}

/// WAHA: `GET /api/contacts/check-exists?phone=&session=` with `X-Api-Key`.
pub async fn waha(registered: &[&str], api_key: &str, session: &'static str) -> Gateway {
    async fn check(
        State((state, session)): State<(Arc<FakeState>, &'static str)>,
        headers: HeaderMap,
        uri: axum::http::Uri,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Response {
        if let Some(refused) = waha_unauthorized(&state, &headers) {
            return refused;
        }
        let asked = q.get("session").map(String::as_str).unwrap_or_default();
        if let Some(refused) = waha_no_session(&state, asked, session) {
            return refused;
        }
        let phone = q.get("phone").cloned().unwrap_or_default();
        let (mode, _guard) = state.begin(vec![phone.clone()]).await;
        match mode {
            Mode::RateOverlimit => return waha_exception("rate-overlimit", &uri),
            Mode::ServerError => return waha_exception("session not ready", &uri),
            _ => {}
        }
        if let Some(resp) = failure(&mode) {
            return resp;
        }
        let status = state.status_after_wait().await;
        if status != Session::Working {
            // The session status guard's own body (an object, not NestJS's message).
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": "Session status is not as expected. Try again later or restart the session",
                    "session": session,
                    "status": status.as_str(),
                    "expected": ["WORKING"],
                })),
            )
                .into_response();
        }
        if state.poisoned(std::slice::from_ref(&phone)) {
            let message = state.poison_message.lock().unwrap().clone();
            return waha_exception(&message, &uri);
        }
        if state.registered.contains(&phone) {
            Json(json!({"numberExists": true, "chatId": format!("{phone}@c.us")})).into_response()
        } else {
            Json(json!({"numberExists": false})).into_response()
        }
    }
    let state = new_state(registered, api_key);
    async fn session_status(
        State((state, session)): State<(Arc<FakeState>, &'static str)>,
        Path(asked): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(refused) = waha_unauthorized(&state, &headers) {
            return refused;
        }
        if asked != session {
            return waha_error(StatusCode::NOT_FOUND, "Session not found");
        }
        state.probes.fetch_add(1, Ordering::SeqCst);
        if let Some(broken) = state.broken() {
            return broken;
        }
        let status = state.session.borrow().as_str();
        Json(json!({"name": session, "status": status, "config": null, "me": null})).into_response()
    }
    let router = Router::new()
        .route("/api/contacts/check-exists", get(check))
        .route("/api/sessions/{session}", get(session_status))
        .with_state((state.clone(), session));
    Gateway {
        addr: spawn(router).await,
        state,
    }
}

/// Evolution API: `POST /chat/whatsappNumbers/{instance}` with `apikey`.
pub async fn evolution(registered: &[&str], api_key: &str, instance: &'static str) -> Gateway {
    async fn check(
        State((state, instance)): State<(Arc<FakeState>, &'static str)>,
        Path(asked_instance): Path<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        if let Some(refused) = evolution_refuses(&state, &headers, &asked_instance, instance) {
            return refused;
        }
        let numbers: Vec<String> = body["numbers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let (mode, _guard) = state.begin(numbers.clone()).await;
        if let Some(resp) = failure(&mode) {
            return resp;
        }
        if !state.connected() {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"status": 500, "error": "Internal Server Error",
                            "response": {"message": ["Error: Connection Closed"]}})),
            )
                .into_response();
        }
        if state.poisoned(&numbers) {
            return failure(&Mode::ServerError).expect("a failure");
        }
        let missing = match &mode {
            Mode::Empty => return Json(json!([])).into_response(),
            Mode::MissingRows(m) => m.clone(),
            _ => vec![],
        };
        let rows: Vec<Value> = numbers
            .iter()
            .filter(|n| !missing.contains(n))
            .map(|n| {
                let exists = state.registered.contains(n);
                json!({"exists": exists, "jid": format!("{n}@s.whatsapp.net"), "number": n})
            })
            .collect();
        Json(Value::Array(rows)).into_response()
    }
    let state = new_state(registered, api_key);
    async fn connection_state(
        State((state, instance)): State<(Arc<FakeState>, &'static str)>,
        Path(asked): Path<String>,
        headers: HeaderMap,
    ) -> Response {
        if let Some(refused) = evolution_refuses(&state, &headers, &asked, instance) {
            return refused;
        }
        state.probes.fetch_add(1, Ordering::SeqCst);
        if let Some(broken) = state.broken() {
            return broken;
        }
        let connection = if state.connected() { "open" } else { "close" };
        Json(json!({"instance": {"instanceName": instance, "state": connection}})).into_response()
    }
    let router = Router::new()
        .route("/chat/whatsappNumbers/{instance}", post(check))
        .route(
            "/instance/connectionState/{instance}",
            get(connection_state),
        )
        .with_state((state.clone(), instance));
    Gateway {
        addr: spawn(router).await,
        state,
    }
}
