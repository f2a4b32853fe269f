//! The bench's clients: submitting batches, and watch streams that time delivery.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tonic::transport::Channel;

use crate::pb::{
    self, wa_validation_service_client::WaValidationServiceClient, watch_batch_response::Event,
};

pub type Client = WaValidationServiceClient<Channel>;

/// 1,000 distinct valid numbers for batch `b` of this run.
fn numbers(b: usize) -> Vec<String> {
    (0..1000)
        .map(|i| format!("+1201{:03}{i:04}", 200 + b % 800))
        .collect()
}

pub async fn submit(client: &mut Client, key: &str, b: usize) -> anyhow::Result<String> {
    Ok(client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.to_string(),
            phone_numbers: numbers(b),
            ..Default::default()
        })
        .await?
        .into_inner()
        .batch_id)
}

/// Submits batches `first..first + n` from `submitters` concurrent clients, each using one
/// of `keys` in turn; returns their ids.
pub async fn submit_concurrently(
    client: &Client,
    keys: &[String],
    first: usize,
    n: usize,
    submitters: usize,
) -> anyhow::Result<Vec<String>> {
    let per = submitters.max(1);
    let mut tasks = Vec::new();
    for s in 0..per {
        let (mut c, k) = (client.clone(), keys[s % keys.len()].clone());
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            let mut b = s;
            while b < n {
                ids.push(submit(&mut c, &k, first + b).await?);
                b += per;
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.extend(t.await??);
    }
    Ok(ids)
}

/// What the watch streams of one phase record together.
#[derive(Default)]
struct WatchLog {
    /// Commit-to-receipt latencies (ms) of live results.
    delivery: Mutex<Vec<f64>>,
    /// How long opening each stream took (ms).
    opens: Mutex<Vec<f64>>,
    /// Streams open now, and the most open at once.
    open: AtomicUsize,
    peak: AtomicUsize,
}

/// Watches a batch to its end; records delivery latency (commit to receipt) of the
/// results written after the stream opened (earlier ones arrive as its snapshot).
async fn watch(
    mut client: Client,
    key: String,
    id: String,
    log: Arc<WatchLog>,
) -> anyhow::Result<Instant> {
    let asked = Instant::now();
    let mut stream = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key,
            batch_id: id,
        })
        .await?
        .into_inner();
    // Results after this come as live events (the replay covers those before).
    let opened = chrono::Utc::now();
    log.opens
        .lock()
        .expect("opens")
        .push(asked.elapsed().as_secs_f64() * 1e3);
    let open = log.open.fetch_add(1, Ordering::SeqCst) + 1;
    log.peak.fetch_max(open, Ordering::SeqCst);
    let mut mine = Vec::new();
    while let Some(msg) = stream.message().await? {
        if let Some(Event::Result(r)) = msg.event
            && let Some(t) = r.checked_at
            && let Some(at) = chrono::DateTime::from_timestamp(t.seconds, t.nanos as u32)
            && at >= opened
        {
            mine.push((chrono::Utc::now() - at).num_microseconds().unwrap_or(0) as f64 / 1000.0);
        }
    }
    log.open.fetch_sub(1, Ordering::SeqCst);
    log.delivery.lock().expect("latencies").extend(mine);
    Ok(Instant::now())
}

impl WatchLog {
    /// The phase's figures: `numbers` from `start` to the last completed event at `last`.
    fn phase(&self, numbers: usize, start: Instant, last: Instant) -> Phase {
        let sorted = |v: &Mutex<Vec<f64>>| {
            let mut v = v.lock().expect("latencies").clone();
            v.sort_by(f64::total_cmp);
            v
        };
        Phase {
            per_s: numbers as f64 / (last - start).as_secs_f64(),
            delivery: sorted(&self.delivery),
            opens: sorted(&self.opens),
            peak_watchers: self.peak.load(Ordering::SeqCst),
        }
    }
}

/// Watchers come from many clients: one HTTP/2 connection per 50 streams, not one for all.
async fn watch_connections(addr: &str, streams: usize) -> anyhow::Result<Arc<Vec<Client>>> {
    let mut connections = Vec::new();
    for _ in 0..streams.div_ceil(50) {
        connections.push(WaValidationServiceClient::connect(addr.to_string()).await?);
    }
    Ok(Arc::new(connections))
}

/// Opens one stream on each batch of `ids` at once and holds them all until every one
/// of those batches has completed.
pub async fn hold_watchers(addr: &str, key: &str, ids: &[String]) -> anyhow::Result<Phase> {
    let connections = watch_connections(addr, ids.len()).await?;
    let log = Arc::new(WatchLog::default());
    let start = Instant::now();
    let streams: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(w, id)| {
            let conn = connections[w / 50].clone();
            tokio::spawn(watch(conn, key.to_string(), id.clone(), log.clone()))
        })
        .collect();
    let mut last = start;
    for s in streams {
        last = last.max(s.await??);
    }
    Ok(log.phase(ids.len() * 1000, start, last))
}

/// Where the end-to-end phase submits and where it watches (two replicas, or one).
pub struct Targets<'a> {
    pub submit: &'a Client,
    pub watch_addr: &'a str,
    pub key: &'a str,
}

/// What one end-to-end phase measured.
pub struct Phase {
    /// Numbers per second from the first submit to the last completed event.
    pub per_s: f64,
    /// Commit-to-receipt latencies (ms) of live results, sorted.
    pub delivery: Vec<f64>,
    /// How long opening each watch stream took (ms), sorted.
    pub opens: Vec<f64>,
    /// The most streams open at once.
    pub peak_watchers: usize,
}

/// Submits `batches` batches, each watched by its share of `watchers` streams as soon
/// as it is accepted.
pub async fn end_to_end(
    to: &Targets<'_>,
    first: usize,
    batches: usize,
    watchers: usize,
    submitters: usize,
) -> anyhow::Result<Phase> {
    let streams = watchers.max(batches);
    let connections = watch_connections(to.watch_addr, streams).await?;
    let log = Arc::new(WatchLog::default());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..submitters.max(1) {
        let (mut c, k) = (to.submit.clone(), to.key.to_string());
        let (connections, log) = (connections.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let mut watches = Vec::new();
            let mut b = s;
            while b < batches {
                let id = submit(&mut c, &k, first + b).await?;
                // Streams w with w % batches == b watch batch b.
                for w in (b..streams).step_by(batches) {
                    let conn = connections[w / 50].clone();
                    watches.push(tokio::spawn(watch(
                        conn,
                        k.clone(),
                        id.clone(),
                        log.clone(),
                    )));
                }
                b += submitters.max(1);
            }
            let mut last = start;
            for w in watches {
                last = last.max(w.await??);
            }
            anyhow::Ok(last)
        }));
    }
    let mut last = start;
    for t in tasks {
        last = last.max(t.await??);
    }
    Ok(log.phase(batches * 1000, start, last))
}
