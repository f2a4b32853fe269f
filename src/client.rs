//! The command-line client: submit files (split into batches), poll, watch, balance.
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tonic::transport::Channel;

use crate::cli::{ClientArgs, OutputFormat, SubmitArgs};
use crate::domain::phone::MAX_BATCH_ENTRIES;
use crate::grpc::convert::result_from_pb;
use crate::http::ResultJson;
use crate::pb::{
    self, wa_validation_service_client::WaValidationServiceClient, watch_batch_response::Event,
};

type Client = WaValidationServiceClient<Channel>;

async fn connect(conn: &ClientArgs) -> anyhow::Result<Client> {
    let server = if conn.server.contains("://") {
        conn.server.clone()
    } else {
        format!("http://{}", conn.server)
    };
    let channel = Channel::from_shared(server.clone())
        .with_context(|| format!("--server {server:?} is not a valid address"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot reach the server at {server}"))?;
    Ok(WaValidationServiceClient::new(channel))
}

/// A status as one line a person can act on.
fn status_error(what: &str, status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", status.message(), status.code())
}

/// One result line: the batch it belongs to, then the JSON API's result object, with the
/// same keys in the same order (a CSV's columns are those keys).
#[derive(Debug, Serialize)]
pub struct ResultRecord {
    pub batch_id: String,
    #[serde(flatten)]
    pub result: ResultJson,
}

fn record(batch_id: &str, r: &pb::NumberResult) -> ResultRecord {
    ResultRecord {
        batch_id: batch_id.to_string(),
        result: ResultJson::from(result_from_pb(r)),
    }
}

/// Writes records as CSV (with a header) or JSON lines.
struct ResultsFile {
    csv: Option<csv::Writer<Box<dyn Write>>>,
    jsonl: Option<Box<dyn Write>>,
}

impl ResultsFile {
    fn open(output: Option<&str>, format: OutputFormat) -> anyhow::Result<ResultsFile> {
        let out: Box<dyn Write> = match output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("cannot write {path}"))?,
            )),
            None => Box::new(std::io::stdout()),
        };
        Ok(match format {
            OutputFormat::Csv => ResultsFile {
                csv: Some(csv::Writer::from_writer(out)),
                jsonl: None,
            },
            OutputFormat::Jsonl => ResultsFile {
                csv: None,
                jsonl: Some(out),
            },
        })
    }

    fn write(&mut self, r: &ResultRecord) -> anyhow::Result<()> {
        if let Some(w) = &mut self.csv {
            // The csv crate cannot flatten; a tuple of two structs gives the same columns.
            #[derive(Serialize)]
            struct BatchColumn<'a> {
                batch_id: &'a str,
            }
            let batch = BatchColumn {
                batch_id: &r.batch_id,
            };
            w.serialize((batch, &r.result))?;
        }
        if let Some(w) = &mut self.jsonl {
            serde_json::to_writer(&mut *w, r)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if let Some(w) = &mut self.csv {
            w.flush()?;
        }
        if let Some(w) = &mut self.jsonl {
            w.flush()?;
        }
        Ok(())
    }
}

/// Numbers from a file: one per line, or one CSV column.
fn read_numbers(file: &str, column: Option<&str>) -> anyhow::Result<Vec<String>> {
    let mut text = String::new();
    if file == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read standard input")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {file}"))?
            .read_to_string(&mut text)
            .with_context(|| format!("{file} is not UTF-8 text"))?;
    }
    let Some(column) = column else {
        return Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect());
    };
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .context("cannot read the CSV header")?
        .clone();
    let position = headers
        .iter()
        .position(|h| h.trim().eq_ignore_ascii_case(column.trim()))
        .or_else(|| {
            column
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .map(|n| n - 1)
        })
        .with_context(|| {
            format!(
                "no column {column:?} in the CSV header ({})",
                headers.iter().collect::<Vec<_>>().join(", ")
            )
        })?;
    let mut numbers = Vec::new();
    for (line, row) in reader.records().enumerate() {
        let row = row.with_context(|| format!("CSV row {} is malformed", line + 2))?;
        if let Some(value) = row.get(position).map(str::trim).filter(|v| !v.is_empty()) {
            numbers.push(value.to_string());
        }
    }
    Ok(numbers)
}

pub async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let numbers = read_numbers(&args.file, args.column.as_deref())?;
    if numbers.is_empty() {
        bail!("no phone numbers in {}", args.file);
    }
    let batches: Vec<&[String]> = numbers.chunks(MAX_BATCH_ENTRIES).collect();
    let mut client = connect(&args.conn).await?;
    let balance = client
        .get_balance(pb::GetBalanceRequest {
            api_key: args.conn.api_key.clone(),
        })
        .await
        .map_err(|s| status_error("balance", s))?
        .into_inner()
        .credits;
    // Duplicates inside a batch are charged once, so this is the most it can cost.
    eprintln!(
        "{} numbers in {} batch{}: up to {} credits needed, {} available",
        numbers.len(),
        batches.len(),
        if batches.len() == 1 { "" } else { "es" },
        numbers.len(),
        balance
    );
    if balance < numbers.len() as i64 {
        eprintln!(
            "warning: the balance may not cover every batch; batches it cannot cover will be refused whole"
        );
    }

    let mut submitted: Vec<(usize, pb::SubmitBatchResponse)> = Vec::new();
    let mut failures = Vec::new();
    for (i, batch) in batches.iter().enumerate() {
        let request = pb::SubmitBatchRequest {
            api_key: args.conn.api_key.clone(),
            phone_numbers: batch.to_vec(),
            request_id: args
                .request_id
                .as_ref()
                .map(|p| format!("{p}-{}", i + 1))
                .unwrap_or_default(),
            default_region: args.default_region.clone(),
            force_check: args.force_check,
            callback_url: String::new(),
        };
        match client.submit_batch(request).await {
            Ok(resp) => {
                let resp = resp.into_inner();
                eprintln!(
                    "batch {}/{}: {} ({} unique)",
                    i + 1,
                    batches.len(),
                    resp.batch_id,
                    resp.total_numbers
                );
                submitted.push((i, resp));
            }
            Err(status) => {
                let err = status_error(
                    &format!("batch {}/{} refused", i + 1, batches.len()),
                    status,
                );
                eprintln!("{err}");
                failures.push(err);
            }
        }
    }
    if !args.watch {
        for (i, resp) in &submitted {
            println!(
                "{}",
                serde_json::json!({"batch": i + 1, "batch_id": resp.batch_id, "total_numbers": resp.total_numbers})
            );
        }
    } else {
        let total: u64 = submitted.iter().map(|(_, r)| r.total_numbers as u64).sum();
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} numbers  {per_sec}  ETA {eta}")
                .expect("template")
                .progress_chars("=> "),
        );
        let watches = submitted.iter().map(|(_, resp)| {
            let (mut client, key, bar) = (client.clone(), args.conn.api_key.clone(), bar.clone());
            let id = resp.batch_id.clone();
            async move { collect_results(&mut client, &key, &id, &bar).await }
        });
        let results = futures::future::join_all(watches).await;
        bar.finish_and_clear();
        let mut sink = ResultsFile::open(args.output.as_deref(), args.format)?;
        for ((_, resp), results) in submitted.iter().zip(results) {
            match results {
                Ok(results) => {
                    for r in &results {
                        sink.write(&record(&resp.batch_id, r))?;
                    }
                }
                Err(err) => {
                    eprintln!("batch {}: {err:#}", resp.batch_id);
                    failures.push(err);
                }
            }
        }
        sink.finish()?;
        let unique: i64 = submitted.iter().map(|(_, r)| r.total_numbers as i64).sum();
        eprintln!("done: {} batches, {unique} unique numbers", submitted.len());
    }
    match failures.len() {
        0 => Ok(()),
        n => bail!(
            "{n} of {} batches failed (see above); the others' results were kept",
            batches.len()
        ),
    }
}

/// Every result of a batch, in index order: watched live, or polled when the stream breaks.
async fn collect_results(
    client: &mut Client,
    key: &str,
    batch_id: &str,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<pb::NumberResult>> {
    let streamed = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: key.to_string(),
            batch_id: batch_id.to_string(),
        })
        .await;
    if let Ok(stream) = streamed {
        let mut stream = stream.into_inner();
        let mut results = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(pb::WatchBatchResponse {
                    event: Some(Event::Result(r)),
                })) => {
                    bar.inc(1);
                    results.push(r);
                }
                Ok(Some(pb::WatchBatchResponse {
                    event: Some(Event::Completed(_)),
                })) => {
                    results.sort_by_key(|r| r.index);
                    return Ok(results);
                }
                Ok(Some(_)) => {}
                // Ended early (server restart): poll for the rest.
                Ok(None) | Err(_) => break,
            }
        }
    }
    loop {
        let poll = client
            .poll_batch(pb::PollBatchRequest {
                api_key: key.to_string(),
                batch_id: batch_id.to_string(),
            })
            .await
            .map_err(|s| status_error("poll", s))?
            .into_inner();
        if poll.status == pb::BatchStatus::Completed as i32 {
            return Ok(poll.results);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

pub async fn poll(conn: ClientArgs, batch_id: String) -> anyhow::Result<()> {
    let mut client = connect(&conn).await?;
    let p = client
        .poll_batch(pb::PollBatchRequest {
            api_key: conn.api_key.clone(),
            batch_id: batch_id.clone(),
        })
        .await
        .map_err(|s| status_error("poll", s))?
        .into_inner();
    let status = pb::BatchStatus::try_from(p.status).unwrap_or(pb::BatchStatus::Unspecified);
    let results: Vec<ResultRecord> = p.results.iter().map(|r| record(&p.batch_id, r)).collect();
    println!(
        "{}",
        serde_json::json!({
            "batch_id": p.batch_id,
            "status": status.as_str_name().trim_start_matches("BATCH_STATUS_"),
            "total_numbers": p.total_numbers,
            "completed": p.completed,
            "failed": p.failed,
            "cancelled": p.cancelled,
            "pending": p.pending,
            "credits_charged": p.credits_charged,
            "credits_refunded": p.credits_refunded,
            "results": results,
        })
    );
    Ok(())
}

pub async fn watch(conn: ClientArgs, batch_id: String, format: OutputFormat) -> anyhow::Result<()> {
    let mut client = connect(&conn).await?;
    let mut stream = client
        .watch_batch(pb::WatchBatchRequest {
            api_key: conn.api_key.clone(),
            batch_id: batch_id.clone(),
        })
        .await
        .map_err(|s| status_error("watch", s))?
        .into_inner();
    let mut sink = ResultsFile::open(None, format)?;
    while let Some(msg) = stream
        .message()
        .await
        .map_err(|s| status_error("watch", s))?
    {
        match msg.event {
            Some(Event::Result(r)) => {
                sink.write(&record(&batch_id, &r))?;
                std::io::stdout().flush()?;
            }
            Some(Event::Completed(c)) => eprintln!(
                "completed: {} numbers, {} answered, {} failed, {} cancelled",
                c.total_numbers, c.completed, c.failed, c.cancelled
            ),
            None => {}
        }
    }
    sink.finish()
}

pub async fn balance(conn: ClientArgs) -> anyhow::Result<()> {
    let mut client = connect(&conn).await?;
    let credits = client
        .get_balance(pb::GetBalanceRequest {
            api_key: conn.api_key.clone(),
        })
        .await
        .map_err(|s| status_error("balance", s))?
        .into_inner()
        .credits;
    println!("{}", serde_json::json!({"credits": credits}));
    Ok(())
}
