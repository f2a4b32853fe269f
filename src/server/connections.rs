//! The open connections: at most `cap` of them, each closed once idle (no request in
//! flight) for the idle timeout; at the cap, a new connection closes the longest-idle
//! one, or else the oldest whose requests are all unauthenticated (a health watch, a
//! body trickling in without a key), so no one without a key can keep a caller out. A
//! connection serving a caller whose key was checked is never closed for another.
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
// Tokio's clock, so the idle deadline and its check agree (and tests can pause time).
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct Connections {
    cap: usize,
    open: Mutex<Open>,
    /// Protected requests in flight, per account, across connections.
    protecting: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// Requests one account may have protecting connections at once; past it, its requests
/// are served like key-less ones (evictable, living at most the idle timeout), so one
/// key cannot pin the connection cap.
pub const PROTECTED_PER_ACCOUNT: usize = 256;

#[derive(Default)]
struct Open {
    next: u64,
    by_id: HashMap<u64, Arc<Activity>>,
}

/// What one connection is doing: requests in flight, idle since when, and whether it was
/// asked to close.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    /// Requests in flight whose key was checked (or whose body was read within the
    /// unauthenticated budget): while any, the connection is never evicted.
    protected: AtomicUsize,
    admitted_at: Instant,
    idle_since: Mutex<Option<Instant>>,
    changed: Notify,
    evicted: CancellationToken,
    protecting: Arc<Mutex<HashMap<Uuid, usize>>>,
    /// The progress of each request in flight.
    responses: Mutex<Vec<std::sync::Weak<Progress>>>,
}

/// A connection's place among the open ones, given back when it is dropped.
pub struct Admitted {
    id: u64,
    pub activity: Arc<Activity>,
    connections: Arc<Connections>,
}

/// A request in flight on its connection, until dropped (with its response body).
pub struct InFlight {
    activity: Arc<Activity>,
    /// The account whose checked key protects the connection.
    protected: Option<Uuid>,
    progress: Arc<Progress>,
}

/// Whether a response's client keeps taking it: the last time its body was asked for a
/// frame, and whether it is waiting on us (a watch with nothing new) rather than on the
/// client (no window granted, nothing read).
#[derive(Debug)]
pub struct Progress {
    since: std::sync::Mutex<Instant>,
    waiting_on_us: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// While the request is handled, it waits on us.
    fn new() -> Progress {
        Progress {
            since: std::sync::Mutex::new(Instant::now()),
            waiting_on_us: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The response is handed to the client: from now on it waits on them until it asks.
    fn handed_over(&self) {
        *self.since.lock().expect("progress") = Instant::now();
        self.waiting_on_us.store(false, Ordering::SeqCst);
    }

    /// How long the client has left the response untaken, if it has.
    fn stalled_for(&self) -> Option<Duration> {
        (!self.waiting_on_us.load(Ordering::SeqCst))
            .then(|| self.since.lock().expect("progress").elapsed())
    }
}

/// A response body that records its client's progress (`Progress`) and keeps its request
/// in flight until it ends.
pub struct Tracked<B> {
    inner: std::pin::Pin<Box<B>>,
    in_flight: InFlight,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Tracked<B> {
        in_flight.progress.handed_over();
        Tracked {
            inner: Box::pin(inner),
            in_flight,
        }
    }
}

impl<B: http_body::Body> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = self.inner.as_mut().poll_frame(cx);
        let progress = &self.in_flight.progress;
        *progress.since.lock().expect("progress") = Instant::now();
        progress
            .waiting_on_us
            .store(polled.is_pending(), Ordering::SeqCst);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a connection should close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Idle for the timeout: gracefully (nothing is in flight).
    Idle,
    /// Evicted for a newcomer: at once, whatever unauthenticated request it holds.
    Evicted,
}

impl Connections {
    pub fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap: cap.max(1),
            open: Mutex::default(),
            protecting: Arc::default(),
        })
    }

    /// A place for a new connection, closing at the cap the longest-idle one, or else the
    /// oldest with only unauthenticated requests; None when every open connection serves
    /// a checked key.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().expect("connections");
        if open.by_id.len() >= self.cap {
            let idlest = open
                .by_id
                .iter()
                .filter_map(|(id, a)| a.idle_since().map(|since| (since, *id)))
                .min()
                .or_else(|| {
                    open.by_id
                        .iter()
                        .filter(|(_, a)| a.protected.load(Ordering::SeqCst) == 0)
                        .map(|(id, a)| (a.admitted_at, *id))
                        .min()
                })?;
            if let Some(evicted) = open.by_id.remove(&idlest.1) {
                evicted.evicted.cancel();
                metrics::counter!("wav_connections_evicted_total").increment(1);
            }
        }
        open.next += 1;
        let id = open.next;
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            protected: AtomicUsize::new(0),
            admitted_at: Instant::now(),
            idle_since: Mutex::new(Some(Instant::now())),
            changed: Notify::new(),
            evicted: CancellationToken::new(),
            protecting: self.protecting.clone(),
            responses: Mutex::default(),
        });
        open.by_id.insert(id, activity.clone());
        metrics::gauge!("wav_connections_open").set(open.by_id.len() as f64);
        Some(Admitted {
            id,
            activity,
            connections: self.clone(),
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().expect("connections");
        open.by_id.remove(&self.id);
        metrics::gauge!("wav_connections_open").set(open.by_id.len() as f64);
    }
}

impl Activity {
    fn idle_since(&self) -> Option<Instant> {
        *self.idle_since.lock().expect("idle since")
    }

    /// Marks a request in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            *self.idle_since.lock().expect("idle since") = None;
            self.changed.notify_waiters();
        }
        let progress = Arc::new(Progress::new());
        {
            let mut responses = self.responses.lock().expect("responses");
            responses.retain(|p| p.strong_count() > 0);
            responses.push(Arc::downgrade(&progress));
        }
        InFlight {
            activity: self.clone(),
            protected: None,
            progress,
        }
    }

    /// Returns once the connection is evicted.
    pub async fn evicted(&self) {
        self.evicted.cancelled().await
    }

    /// Returns once a response in flight has been left untaken by its client for `limit`
    /// (looked at four times a limit: one timer per connection, rarely).
    pub async fn until_stalled(&self, limit: Duration) {
        let mut tick = tokio::time::interval((limit / 4).max(Duration::from_millis(100)));
        loop {
            tick.tick().await;
            let stalled = self
                .responses
                .lock()
                .expect("responses")
                .iter()
                .filter_map(std::sync::Weak::upgrade)
                .any(|p| p.stalled_for().is_some_and(|d| d >= limit));
            if stalled {
                metrics::counter!("wav_connections_stalled_total").increment(1);
                return;
            }
        }
    }

    /// Returns when the connection should close, and why: evicted for a newcomer, or idle
    /// for `idle` with nothing in flight.
    pub async fn until_closing(&self, idle: Duration) -> Closing {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the state is read, so no change is missed.
            changed.as_mut().enable();
            let deadline = self.idle_since().map(|since| since + idle);
            tokio::select! {
                _ = self.evicted.cancelled() => return Closing::Evicted,
                _ = changed => {}
                _ = sleep_until(deadline) => {
                    if self.idle_since().is_some_and(|since| since.elapsed() >= idle) {
                        return Closing::Idle;
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl InFlight {
    /// The request is served for `account`'s checked key: its connection is no longer
    /// anyone's to evict, within the account's share (`PROTECTED_PER_ACCOUNT`).
    pub fn protect(&mut self, account: Uuid) {
        if self.protected.is_some() {
            return;
        }
        let mut protecting = self.activity.protecting.lock().expect("protecting");
        let held = protecting.entry(account).or_default();
        if *held >= PROTECTED_PER_ACCOUNT {
            return;
        }
        *held += 1;
        self.protected = Some(account);
        self.activity.protected.fetch_add(1, Ordering::SeqCst);
    }

    pub fn is_protected(&self) -> bool {
        self.protected.is_some()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        if let Some(account) = self.protected {
            activity.protected.fetch_sub(1, Ordering::SeqCst);
            let mut protecting = activity.protecting.lock().expect("protecting");
            if let Some(held) = protecting.get_mut(&account) {
                *held -= 1;
                if *held == 0 {
                    protecting.remove(&account);
                }
            }
        }
        if activity.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *activity.idle_since.lock().expect("idle since") = Some(Instant::now());
            activity.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room_and_busy_ones_never_do() {
        let connections = Connections::new(2);
        let first = connections.admit().unwrap();
        let second = connections.admit().unwrap();
        let mut busy = second.activity.begin();
        busy.protect(Uuid::nil());
        let third = connections.admit().expect("the idle first makes room");
        assert!(first.activity.evicted.is_cancelled());
        assert!(!second.activity.evicted.is_cancelled());
        let mut busy_too = third.activity.begin();
        busy_too.protect(Uuid::nil());
        assert!(
            connections.admit().is_none(),
            "every connection serves a checked key"
        );
        drop(busy);
        let fourth = connections.admit().expect("the second is idle again");
        assert!(second.activity.evicted.is_cancelled());
        // A request without a checked key holds its connection only until a newcomer needs it.
        let _unchecked = fourth.activity.begin();
        assert!(
            connections.admit().is_some(),
            "the unauthenticated one makes room"
        );
        assert!(fourth.activity.evicted.is_cancelled());
        assert!(!third.activity.evicted.is_cancelled());
    }

    #[test]
    fn one_account_protects_at_most_its_share() {
        let connections = Connections::new(PROTECTED_PER_ACCOUNT + 2);
        let account = Uuid::now_v7();
        let mut held = Vec::new();
        for _ in 0..PROTECTED_PER_ACCOUNT {
            let conn = connections.admit().unwrap();
            let mut request = conn.activity.begin();
            request.protect(account);
            assert!(request.is_protected());
            held.push((conn, request));
        }
        let conn = connections.admit().unwrap();
        let mut one_more = conn.activity.begin();
        one_more.protect(account);
        assert!(!one_more.is_protected(), "past the account's share");
        one_more.protect(Uuid::now_v7());
        assert!(one_more.is_protected(), "another account has its own share");
        drop(held.pop());
        let conn = connections.admit().unwrap();
        let mut freed = conn.activity.begin();
        freed.protect(account);
        assert!(freed.is_protected(), "a place given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_its_client_never_takes_stalls_its_connection() {
        use http_body_util::BodyExt;
        let connections = Connections::new(4);
        let conn = connections.admit().unwrap();
        let limit = Duration::from_secs(10);
        let stalled = {
            let activity = conn.activity.clone();
            tokio::spawn(async move { activity.until_stalled(limit).await })
        };
        // Handled for longer than the limit (a single check waiting): not the client's doing.
        let request = conn.activity.begin();
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!stalled.is_finished());
        // A stream that waits on us between its frames (a quiet watch) is not stalled.
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<axum::body::Bytes>, std::convert::Infallible>,
        >(1);
        let mut body = Tracked::new(
            http_body_util::StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx)),
            request,
        );
        let polled = tokio::time::timeout(Duration::from_secs(30), body.frame()).await;
        assert!(polled.is_err(), "nothing to send yet");
        assert!(!stalled.is_finished());
        // A frame sent and never asked for again: the client is not taking it.
        tx.send(Ok(http_body::Frame::data(axum::body::Bytes::from_static(
            b"x",
        ))))
        .await
        .unwrap();
        body.frame().await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(12), stalled)
            .await
            .expect("stalled after the limit")
            .unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_closes_after_being_idle_for_the_timeout() {
        let connections = Connections::new(4);
        let conn = connections.admit().unwrap();
        let activity = conn.activity.clone();
        let guard = activity.begin();
        let idle = Duration::from_secs(10);
        let closing = tokio::spawn({
            let activity = activity.clone();
            async move { activity.until_closing(idle).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!closing.is_finished(), "a request in flight keeps it open");
        drop(guard);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!closing.is_finished());
        tokio::time::timeout(Duration::from_secs(2), closing)
            .await
            .expect("idle for the timeout: closing")
            .unwrap();
    }
}
