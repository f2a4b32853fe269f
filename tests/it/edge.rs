//! The public edge against clients without a key: silent and slow sockets, unfinished
//! bodies, wrong keys by the hundred, watch streams by the hundred, and bytes that are
//! not protobuf. Each holds something of the server that a caller with a key must still get.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tonic::Code;

use wavalidate::pb;
use wavalidate_test_support::*;

/// Whether the server closed `socket` within `within` (a read returns end of file or an error).
async fn closed_within(socket: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, socket.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (408, 503...) before the close: keep reading.
            Ok(Ok(_)) => continue,
        }
    }
}

/// A balance over HTTP/1 on a new connection and over gRPC on a new channel, each within `deadline`.
async fn caller_is_answered(addr: SocketAddr, key: &str, deadline: Duration) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(deadline)
        .build()
        .unwrap();
    let started = Instant::now();
    let resp = http
        .get(format!("http://{addr}/api/v1/balance"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("the JSON API answers a caller while attackers hold sockets");
    assert_eq!(resp.status(), 200);
    let grpc = async {
        let mut client = connect(addr).await;
        client
            .get_balance(pb::GetBalanceRequest {
                api_key: key.into(),
            })
            .await
    };
    let balance = tokio::time::timeout(deadline, grpc)
        .await
        .expect("gRPC answers a caller while attackers hold sockets")
        .expect("balance");
    assert_eq!(balance.into_inner().credits, 10);
    assert!(started.elapsed() < deadline * 2);
}

/// Sockets the server process holds open (listener and database connections included).
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

async fn trickle(addr: SocketAddr, head: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(head.as_bytes()).await.unwrap();
    socket
}

const SLOW_HEAD: &str = "POST /api/v1/wavalidation/batch HTTP/1.1\r\nHost: x\r\n";
const SLOW_BODY: &str = "POST /api/v1/wavalidation/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off_and_never_keep_a_caller_out() {
    let db = fresh_database().await;
    let (_, key) = db.store.create_account("edge", 10).await.unwrap();
    let key = key.expose().to_string();
    let args = [
        "--max-connections",
        "64",
        "--header-timeout",
        "1s",
        "--body-timeout",
        "1s",
        "--idle-timeout",
        "4s",
    ];
    let mut server = spawn_process(&db.url, &args, &[]).await;
    let (addr, pid) = (server.addr, server.child.id().unwrap());

    // Under the cap, each kind is cut by its own timeout: a head sent a line at a time
    // by the header timeout, a body sent a byte at a time (no key in the headers, so it
    // is read before any key is known) by the body timeout, silence by the idle timeout.
    let started = tokio::time::Instant::now();
    let mut silent = Vec::new();
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        heads.push(trickle(addr, SLOW_HEAD).await);
        bodies.push(trickle(addr, SLOW_BODY).await);
    }
    let drip = |mut sockets: Vec<TcpStream>, bytes: &'static [u8]| {
        tokio::spawn(async move {
            // A byte or a line every 100 ms, on each, until each is closed.
            let mut closed_at = vec![None; sockets.len()];
            while closed_at.iter().any(Option::is_none) && started.elapsed() < secs(8) {
                for (socket, closed) in sockets.iter_mut().zip(closed_at.iter_mut()) {
                    if closed.is_none()
                        && (socket.write_all(bytes).await.is_err()
                            || closed_within(socket, ms(1)).await)
                    {
                        *closed = Some(started.elapsed());
                    }
                }
                tokio::time::sleep(ms(100)).await;
            }
            closed_at
        })
    };
    let (heads, bodies) = (drip(heads, b"X-Drip: 1\r\n"), drip(bodies, b" "));
    for (what, closed_at, before) in [
        ("slow head", heads.await.unwrap(), ms(2500)),
        ("slow body", bodies.await.unwrap(), ms(2500)),
    ] {
        for at in closed_at {
            let at = at.unwrap_or_else(|| panic!("a {what} socket still open after 8 s"));
            assert!(
                at < before,
                "a {what} socket was cut only after {at:?}: by the idle timeout, not its own"
            );
        }
    }
    for socket in silent.iter_mut() {
        assert!(
            closed_within(socket, secs(5)).await,
            "a silent socket is still open"
        );
    }
    assert!(
        started.elapsed() >= secs(4),
        "silence was cut before the idle timeout"
    );

    // Over the cap: 200 silent sockets take at most 64 places, and callers still get in,
    // each taking the place of the longest-idle socket.
    let mut silent = Vec::new();
    for _ in 0..200 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_until("the server holds at most its cap", || async {
        // 64 connections, the listener and the database pool's.
        open_sockets(pid) <= 64 + 1 + 10
    })
    .await;
    for _ in 0..5 {
        caller_is_answered(addr, &key, secs(2)).await;
    }
    let mut closed = 0;
    for socket in silent.iter_mut() {
        closed += closed_within(socket, ms(10)).await as usize;
    }
    assert!(
        closed >= 200 - 64,
        "only {closed} of 200 silent sockets were closed"
    );
    server.terminate().await;
}

/// The server process's resident memory, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib / 1024.0
}

/// A gRPC frame carrying `len` bytes that are the start of a SubmitBatchRequest.
fn grpc_frame_start(len: usize) -> Vec<u8> {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(len as u32).to_be_bytes());
    frame.resize(5 + len.min(1 << 20), b'1');
    frame
}

#[tokio::test]
async fn unauthenticated_body_floods_hold_bounded_memory() {
    let db = fresh_database().await;
    let args = ["--unauthenticated-body-kib", "8192", "--body-timeout", "3s"];
    let mut server = spawn_process(&db.url, &args, &[]).await;
    let (addr, pid) = (server.addr, server.child.id().unwrap());
    // Warm up both protocols first, so the baseline holds what any server holds.
    let (_, key) = db.store.create_account("flood", 10).await.unwrap();
    caller_is_answered(addr, key.expose(), Duration::from_secs(5)).await;
    let before = rss_mib(pid);
    let peak = std::sync::Arc::new(std::sync::Mutex::new(before));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let now = rss_mib(pid);
                {
                    let mut p = peak.lock().unwrap();
                    *p = p.max(now);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // 100 HTTP/1.1 connections, each sending 1 MB of a batch body without a key.
    let body = vec![b' '; 1_000_000];
    let http1 = (0..100).map(|_| {
        let body = body.clone();
        async move {
            let mut socket = TcpStream::connect(addr).await.unwrap();
            let head = "POST /api/v1/wavalidation/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
            socket.write_all(head.as_bytes()).await.unwrap();
            let _ = socket.write_all(&body).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
            String::from_utf8_lossy(&answer).lines().next().unwrap_or("").to_string()
        }
    });
    // One HTTP/2 connection opening 100 SubmitBatch streams of 1 MB that never finish.
    let h2 = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
        tokio::spawn(conn);
        let mut streams = Vec::new();
        for _ in 0..100 {
            send = send.ready().await.unwrap();
            let req = http::Request::post(format!(
                "http://{addr}/wavalidation.v1.WaValidationService/SubmitBatch"
            ))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
            let (response, mut body) = send.send_request(req, false).unwrap();
            let _ = body.send_data(grpc_frame_start(2 << 20).into(), false);
            streams.push((response, body));
        }
        let mut statuses = Vec::new();
        for (response, _body) in streams {
            let answer = tokio::time::timeout(Duration::from_secs(10), response).await;
            statuses.push(match answer {
                Ok(Ok(resp)) => resp
                    .headers()
                    .get("grpc-status")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_else(|| "in trailers".into()),
                Ok(Err(_)) => "reset".into(),
                Err(_) => "no answer".into(),
            });
        }
        statuses
    };
    let (lines, h2_statuses) = tokio::join!(futures::future::join_all(http1), h2);
    sampler.abort();
    let growth = *peak.lock().unwrap() - before;
    println!("RSS before {before:.1} MiB, peak growth {growth:.1} MiB");
    // Refused unread (503), or read within the budget and refused: spaces are no JSON
    // (400), or too slow (408). Never accepted.
    for line in &lines {
        assert!(
            line.is_empty() || [" 400 ", " 408 ", " 503 "].iter().any(|c| line.contains(c)),
            "{line}"
        );
    }
    assert!(
        lines.iter().any(|l| l.contains(" 503 ")),
        "the budget was met: some bodies are refused unread"
    );
    assert!(
        !h2_statuses.iter().any(|s| s == "no answer"),
        "every HTTP/2 stream is answered or reset: {h2_statuses:?}"
    );
    // 200 MB were sent; the budget is 8 MiB, and each connection's buffers add a little
    // (18 MiB measured; 76 + 92 MiB before the budget, for the same floods apart).
    assert!(growth < 32.0, "RSS grew {growth:.1} MiB");
    server.terminate().await;
}

#[tokio::test]
async fn a_wrong_key_in_the_headers_is_refused_before_the_body_is_read() {
    let app = spawn_app().await;
    // HTTP/1: the head promises a megabyte that never comes; the answer comes anyway.
    let mut socket = TcpStream::connect(app.addr).await.unwrap();
    let head = "POST /api/v1/wavalidation/batch HTTP/1.1\r\nHost: x\r\nx-api-key: wav_wrong\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // gRPC: an unfinished message with a wrong key in the metadata.
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post(format!(
        "http://{}/wavalidation.v1.WaValidationService/SubmitBatch",
        app.addr
    ))
    .header("content-type", "application/grpc")
    .header("authorization", "Bearer wav_wrong")
    .body(())
    .unwrap();
    let (response, mut body) = send.send_request(req, false).unwrap();
    body.send_data(grpc_frame_start(1000).into(), false)
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), response)
        .await
        .expect("answered without the rest of the message")
        .unwrap();
    assert_eq!(resp.headers()["grpc-status"], "16", "UNAUTHENTICATED");
}

#[tokio::test]
async fn wrong_keys_are_limited_per_address_and_other_addresses_go_on() {
    let app = spawn_app_with(|s| s.api.auth_failures_per_sec = 2).await;
    let (_, key) = app.account(10).await;
    let mut client = app.client().await;
    let wrong = || pb::GetBalanceRequest {
        api_key: "wav_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
    };
    let mut codes = Vec::new();
    for _ in 0..20 {
        codes.push(client.get_balance(wrong()).await.unwrap_err().code());
    }
    // A burst of 8 (4 times the rate) is looked up (9, if half a second passed meanwhile);
    // the rest is refused unread.
    let looked_up = codes
        .iter()
        .filter(|c| **c == Code::Unauthenticated)
        .count();
    assert!((8..=9).contains(&looked_up), "{codes:?}");
    let refused = client.get_balance(wrong()).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused
            .message()
            .contains("failed authentications from this address")
    );
    // The address is refused whatever the key, while it lasts: a right key too.
    let right = pb::GetBalanceRequest {
        api_key: key.clone(),
    };
    assert_eq!(
        client.get_balance(right.clone()).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // Another address is not: 127.0.0.2 is this machine too.
    let other = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let resp = other
        .get(format!("http://{}/api/v1/balance", app.addr))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Wrong keys in parallel from a third address: once one failed, each lookup is paid
    // for before it is made, so 50 at once cannot outrun the burst.
    let third = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 3]))
        .build()
        .unwrap();
    let wrong_key = |client: reqwest::Client| {
        let url = format!("http://{}/api/v1/balance", app.addr);
        async move {
            client
                .get(url)
                .header(
                    "x-api-key",
                    "wav_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                )
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(wrong_key(third.clone()).await, 401);
    let statuses = futures::future::join_all((0..50).map(|_| wrong_key(third.clone()))).await;
    let looked_up = statuses.iter().filter(|s| **s == 401).count();
    assert!(looked_up <= 9, "{looked_up} lookups: {statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    // And the address is let in again once the limiter allows a failure (half a second).
    wait_until("the address let in again", || {
        let (mut client, right) = (client.clone(), right.clone());
        async move { client.get_balance(right).await.is_ok() }
    })
    .await;
}

#[tokio::test]
async fn watch_streams_are_capped_per_account() {
    let app = spawn_app_with(|s| {
        s.api.watches_per_account = 3;
        // The batch stays pending, so its watches stay open.
        s.checker.simulated.latency = secs(60);
    })
    .await;
    let (_, key) = app.account(10).await;
    let (_, other_key) = app.account(10).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 2)).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(open_watch(&mut client, &key, &sub.batch_id).await);
    }
    let refused = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.clone(),
            batch_id: sub.batch_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(
        refused.message().contains("3 open watch streams"),
        "{}",
        refused.message()
    );
    // SSE counts against the same cap.
    let http = reqwest::Client::new();
    let sse = http
        .get(format!(
            "http://{}/api/v1/wavalidation/batch/{}/events",
            app.addr, sub.batch_id
        ))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 429);
    // Another account is not held back by this one's.
    let other = submit(&mut client, &other_key, &us_numbers(10, 1)).await;
    open_watch(&mut client, &other_key, &other.batch_id).await;
    // A stream closed gives its place back.
    drop(open.pop());
    wait_until("a watch place freed", || {
        let (mut client, key, batch_id) = (client.clone(), key.clone(), sub.batch_id.clone());
        async move {
            client
                .watch_batch(pb::WatchBatchRequest {
                    api_key: key,
                    batch_id,
                })
                .await
                .is_ok()
        }
    })
    .await;
}

/// Bytes sent as a request message as they are.
#[derive(Clone, Debug, Default, PartialEq)]
struct Raw(Vec<u8>);

impl prost::Message for Raw {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }
    fn merge_field(
        &mut self,
        _: u32,
        _: prost::encoding::WireType,
        _: &mut impl prost::bytes::Buf,
        _: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        unreachable!("only sent")
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn clear(&mut self) {
        self.0.clear()
    }
}

#[tokio::test]
async fn a_message_that_is_not_protobuf_is_an_invalid_argument() {
    let app = spawn_app().await;
    let (_, key) = app.account(10).await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    // A truncated varint, and a field 1 whose length runs past the end.
    for bytes in [vec![0x08, 0xff], vec![0x0a, 0x7f, b'x']] {
        grpc.ready().await.unwrap();
        let mut req = tonic::Request::new(Raw(bytes));
        req.metadata_mut().insert("x-api-key", key.parse().unwrap());
        let status = grpc
            .unary::<Raw, pb::SubmitBatchResponse, _>(
                req,
                http::uri::PathAndQuery::from_static(
                    "/wavalidation.v1.WaValidationService/SubmitBatch",
                ),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("not a valid protobuf message"));
    }
    assert_eq!(app.store.balance(app.account(0).await.0).await.unwrap(), 0);
}

fn junk(n: usize, tag: &str) -> Vec<String> {
    (0..n).map(|i| format!("not a number {tag} {i}")).collect()
}

/// Invalid entries and cancelled numbers are refunded, so only this limit keeps an account
/// from filling the database for free: past it a batch is refused whole, racing submits
/// included; the operator can set the account's own limit.
#[tokio::test]
async fn free_entries_an_hour_are_limited_per_account() {
    let db = fresh_database().await;
    let app = spawn_app_on(db.url.clone(), db.store.clone(), |s| {
        s.api.free_entries_per_hour = 2500;
        // Valid numbers stay pending, so a cancel refunds them all.
        s.checker.simulated.latency = secs(60);
    })
    .await;
    // The balance must cover a batch before its invalid entries are refunded.
    let (account, key) = app.account(1003).await;
    let limits = |value: &'static str| {
        let (url, id) = (db.url.clone(), account.to_string());
        async move {
            let out = tokio::process::Command::new(binary())
                .args(["account", "limits", "--account-id", &id])
                .args(["--free-entries-per-hour", value])
                .env("DATABASE_URL", url)
                .output()
                .await
                .unwrap();
            assert!(out.status.success(), "{out:?}");
        }
    };
    let mut client = app.client().await;
    let batches = || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
        n
    };
    // Six racing submits of 1,000 invalid entries: exactly two fit.
    let racing = (0..6).map(|i| {
        let (mut client, key) = (client.clone(), key.clone());
        async move {
            client
                .submit_batch(pb::SubmitBatchRequest {
                    api_key: key,
                    phone_numbers: junk(1000, &i.to_string()),
                    ..Default::default()
                })
                .await
        }
    });
    let outcomes = futures::future::join_all(racing).await;
    let refused: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(refused.len(), 4, "{outcomes:?}");
    for status in &refused {
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(
            status
                .message()
                .contains("2500 invalid entries and cancelled numbers an hour"),
            "{}",
            status.message()
        );
    }
    assert_eq!(batches().await, 2, "refused batches store nothing");
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        1003,
        "and cost nothing"
    );
    // Valid numbers are paid for, and not limited while the account is within it.
    submit(&mut client, &key, &us_numbers(0, 3)).await;
    // Over HTTP: 429 with the reason.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/wavalidation/batch", app.addr))
        .header("x-api-key", &key)
        .json(&serde_json::json!({"phone_numbers": junk(600, "http")}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["reason"], "LIMIT_REACHED");
    // The operator raises this account's limit, then gives it the server's again.
    limits("5000").await;
    submit(&mut client, &key, &junk(1000, "raised")).await;
    limits("default").await;
    let refused = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: junk(1, "default"),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    // Submit and cancel: as free as invalid entries, and counted with them (3,000 so far).
    limits("3600").await;
    let cancelled = submit(&mut client, &key, &us_numbers(100, 601)).await;
    client
        .cancel_batch(pb::CancelBatchRequest {
            api_key: key.clone(),
            batch_id: cancelled.batch_id,
        })
        .await
        .unwrap();
    let refused = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: us_numbers(900, 1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
}

/// A health watch (which takes no key) on a connection of its own.
async fn health_watch(addr: SocketAddr) -> tonic::Streaming<tonic_health::pb::HealthCheckResponse> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic_health::pb::health_client::HealthClient::new(channel)
        .watch(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner()
}

/// An HTTP/2 connection that never opens its receive window: no answer reaches it.
async fn zero_window_h2(
    addr: SocketAddr,
) -> (
    h2::client::SendRequest<prost::bytes::Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, prost::bytes::Bytes>(tcp)
        .await
        .unwrap();
    let connection = tokio::spawn(conn);
    (send.ready().await.unwrap(), connection)
}

/// Requests that take no key (a health watch on every connection, a health check
/// declaring a 4 MiB message) hold nothing a caller needs: at the cap their connections
/// make room, and no message is read past what such a service needs.
#[tokio::test]
async fn keyless_streams_never_keep_a_caller_out() {
    let db = fresh_database().await;
    let (_, key) = db.store.create_account("keyless", 10).await.unwrap();
    let key = key.expose().to_string();
    let args = ["--max-connections", "16", "--idle-timeout", "2s"];
    let mut server = spawn_process(&db.url, &args, &[]).await;
    let addr = server.addr;
    // Twice the cap of health watches, each on its own connection, each kept open.
    let mut watches = Vec::new();
    for _ in 0..32 {
        watches.push(health_watch(addr).await);
    }
    for _ in 0..3 {
        caller_is_answered(addr, &key, secs(2)).await;
    }
    // Wrong keys in bodies, on HTTP/2 connections that never open their receive window:
    // each answer (401) stays unsent, and still holds nothing a caller needs.
    let mut pinned = Vec::new();
    for _ in 0..32 {
        let (mut send, _connection) = zero_window_h2(addr).await;
        let req = http::Request::post(format!("http://{addr}/api/v1/wavalidation/batch"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (response, mut body) = send.send_request(req, false).unwrap();
        let json = r#"{"api_key": "wav_wrong", "phone_numbers": ["+14155552671"]}"#;
        body.send_data(json.into(), true).unwrap();
        pinned.push((send, response));
    }
    for _ in 0..3 {
        caller_is_answered(addr, &key, secs(2)).await;
    }
    // A request without a key lives at most the idle timeout: a watch opened now, with no
    // newcomer to make room for, ends by itself.
    let mut watch = health_watch(addr).await;
    let started = tokio::time::Instant::now();
    let ended = tokio::time::timeout(secs(5), async {
        while let Ok(Some(_)) = watch.message().await {}
    })
    .await;
    assert!(ended.is_ok(), "a key-less watch outlived the idle timeout");
    assert!(
        started.elapsed() >= ms(1500),
        "ended before the idle timeout"
    );
    // A health check whose message would be 4 MiB is refused at its length.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut send = send.ready().await.unwrap();
    let req = http::Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = send.send_request(req, false).unwrap();
    body.send_data(
        grpc_frame_start(4 << 20)[..64 * 1024].to_vec().into(),
        false,
    )
    .unwrap();
    let resp = tokio::time::timeout(secs(5), response)
        .await
        .expect("refused without the rest of the message")
        .unwrap();
    let status = match resp.headers().get("grpc-status") {
        Some(s) => s.to_str().unwrap().to_string(),
        None => {
            let mut body = resp.into_body();
            while body.data().await.is_some() {}
            let trailers = body.trailers().await.unwrap().unwrap();
            trailers["grpc-status"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(
        status, "11",
        "OUT_OF_RANGE: larger than a health message may be"
    );
    server.terminate().await;
}

/// A client that never takes its answers (HTTP/2, no window granted) loses its connection
/// after the idle timeout, key or no key: unsent answers are memory held for no one.
#[tokio::test]
async fn clients_that_never_read_their_answers_lose_the_connection() {
    let db = fresh_database().await;
    let (_, key) = db.store.create_account("unread", 10).await.unwrap();
    let key = key.expose().to_string();
    let mut server = spawn_process(&db.url, &["--idle-timeout", "2s"], &[]).await;
    let addr = server.addr;
    for path in [
        "/openapi.json".to_string(),
        format!("/api/v1/balance?api_key={key}"),
    ] {
        let (mut send, connection) = zero_window_h2(addr).await;
        let mut answers = Vec::new();
        for _ in 0..4 {
            let req = http::Request::get(format!("http://{addr}{path}"))
                .body(())
                .unwrap();
            let (response, _) = send.send_request(req, true).unwrap();
            answers.push(response);
            send = send.ready().await.unwrap();
        }
        let started = Instant::now();
        tokio::time::timeout(secs(6), connection)
            .await
            .unwrap_or_else(|_| panic!("{path}: the connection outlived its unread answers"))
            .unwrap()
            .ok();
        assert!(
            started.elapsed() >= ms(1500),
            "{path}: closed before the idle timeout"
        );
    }
    // Callers reading their answers are served as ever.
    caller_is_answered(addr, &key, secs(2)).await;
    server.terminate().await;
}
