//! A TCP proxy in front of the test PostgreSQL, for faults no real server gives on
//! demand: a write that commits while its client sees the connection drop, and a
//! listener that cannot reconnect for a while.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct PgProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    /// Upstream local ports (PostgreSQL's `client_port` for the backend) whose next
    /// answer is swallowed and whose client is then disconnected.
    cut: Mutex<HashSet<u16>>,
    /// Connections cut so far.
    cuts: AtomicUsize,
    /// While set, new connections wait before reaching PostgreSQL.
    hold_new: AtomicBool,
    opened: tokio::sync::Notify,
    /// Bumped to close every connection open at that moment.
    epoch: tokio::sync::watch::Sender<u64>,
}

impl PgProxy {
    /// Listens on a free port and forwards to the server of `database_url`.
    pub async fn start(database_url: &str) -> PgProxy {
        let url = reqwest::Url::parse(database_url).expect("database URL");
        let upstream: SocketAddr = format!(
            "{}:{}",
            url.host_str().expect("host"),
            url.port().unwrap_or(5432)
        )
        .parse()
        .expect("the test database is addressed by IP");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            cut: Mutex::default(),
            cuts: AtomicUsize::new(0),
            hold_new: AtomicBool::new(false),
            opened: tokio::sync::Notify::new(),
            epoch: tokio::sync::watch::channel(0).0,
        });
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(forward(client, upstream, accepting.clone()));
            }
        });
        PgProxy { addr, shared }
    }

    /// `database_url` reached through this proxy.
    pub fn url(&self, database_url: &str) -> String {
        let mut url = reqwest::Url::parse(database_url).expect("database URL");
        url.set_port(Some(self.addr.port())).unwrap();
        url.to_string()
    }

    /// The next complete answer PostgreSQL sends to the backend whose `client_port`
    /// this is never reaches its client, which is disconnected instead: whatever that
    /// answer acknowledged (a commit) happened, and the client cannot know it.
    pub fn cut_after_next_answer(&self, backend_client_port: u16) {
        self.shared.cut.lock().unwrap().insert(backend_client_port);
    }

    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }

    /// New connections wait (existing ones carry on) until `let_new_connections_in`.
    pub fn hold_new_connections(&self) {
        self.shared.hold_new.store(true, Ordering::SeqCst);
    }

    /// Closes every connection open now, as a network fault would.
    pub fn sever_all(&self) {
        self.shared.epoch.send_modify(|e| *e += 1);
    }

    pub fn let_new_connections_in(&self) {
        self.shared.hold_new.store(false, Ordering::SeqCst);
        self.shared.opened.notify_waiters();
    }
}

async fn forward(client: TcpStream, upstream: SocketAddr, shared: Arc<Shared>) {
    while shared.hold_new.load(Ordering::SeqCst) {
        let opened = shared.opened.notified();
        if !shared.hold_new.load(Ordering::SeqCst) {
            break;
        }
        opened.await;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let port = server.local_addr().map(|a| a.port()).unwrap_or(0);
    let mut severed = shared.epoch.subscribe();
    severed.mark_unchanged();
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream_task = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    // Dropping both halves of both sockets closes them.
    let _abort = AbortOnDrop(upstream_task);
    let mut buf = vec![0u8; 64 * 1024];
    // Message framing of the answer being swallowed: (bytes of the current message left, its type).
    let mut cutting: Option<Framing> = None;
    loop {
        let n = tokio::select! {
            read = server_read.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = severed.changed() => return,
        };
        if cutting.is_none() && shared.cut.lock().unwrap().remove(&port) {
            // Armed while the backend was busy on a statement, so this read starts its answer.
            cutting = Some(Framing::default());
        }
        match &mut cutting {
            None => {
                if client_write.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
            Some(framing) => {
                if framing.feed(&buf[..n]) {
                    // ReadyForQuery seen: the statement and its commit are done.
                    shared.cuts.fetch_add(1, Ordering::SeqCst);
                    return;
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Follows PostgreSQL's backend messages (type byte, 4-byte length) to spot ReadyForQuery.
#[derive(Default)]
struct Framing {
    header: Vec<u8>,
    body_left: usize,
}

impl Framing {
    /// True once a ReadyForQuery ('Z') message has been read whole.
    fn feed(&mut self, mut bytes: &[u8]) -> bool {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let take = self.body_left.min(bytes.len());
                self.body_left -= take;
                bytes = &bytes[take..];
                if self.body_left == 0 && self.header[0] == b'Z' {
                    return true;
                }
                continue;
            }
            if self.header.len() == 5 {
                self.header.clear();
            }
            let take = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == 5 {
                let len = u32::from_be_bytes(self.header[1..5].try_into().unwrap()) as usize;
                self.body_left = len - 4;
                if self.body_left == 0 && self.header[0] == b'Z' {
                    return true;
                }
            }
        }
        false
    }
}
