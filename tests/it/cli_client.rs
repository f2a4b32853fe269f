//! The command-line client as a user runs it: the binary, a CSV file, a real server.
use std::process::Command;

use serde_json::Value;

use wavalidate_test_support::*;

fn cli(addr: std::net::SocketAddr, key: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wavalidate"))
        .args(args)
        .env("WAV_SERVER", format!("http://{addr}"))
        .env("WAV_API_KEY", key)
        .env_remove("DATABASE_URL")
        .output()
        .expect("run the CLI")
}

/// A CSV with a name column, 2,500 phone rows: distinct numbers, plus a duplicate and an invalid entry.
fn write_csv(dir: &std::path::Path) -> (std::path::PathBuf, Vec<String>) {
    let mut phones: Vec<String> = us_numbers(0, 2498);
    phones.insert(10, "+1 201 555 0003".into()); // same number as row 3 once normalized
    phones.insert(1500, "not a phone".into());
    let mut csv = String::from("name,phone,notes\n");
    for (i, p) in phones.iter().enumerate() {
        csv.push_str(&format!("person {i},\"{p}\",x\n"));
    }
    let path = dir.join("contacts.csv");
    std::fs::write(&path, csv).unwrap();
    (path, phones)
}

#[tokio::test]
async fn a_2500_number_csv_goes_out_in_three_batches_and_comes_back_in_order() {
    let app = spawn_app().await;
    let (_, key) = app.account(10_000).await;
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let (input, phones) = write_csv(&dir);
    let output = dir.join("results.csv");
    let run = tokio::task::spawn_blocking({
        let (input, output, key, addr) = (input.clone(), output.clone(), key.clone(), app.addr);
        move || {
            cli(
                addr,
                &key,
                &[
                    "submit",
                    input.to_str().unwrap(),
                    "--column",
                    "phone",
                    "--watch",
                    "--output",
                    output.to_str().unwrap(),
                    "--format",
                    "csv",
                ],
            )
        }
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("2500 numbers in 3 batches"), "{stderr}");

    let mut reader = csv::Reader::from_path(&output).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    // The duplicate sits in the first batch, so it is removed there: 2,499 results.
    assert_eq!(rows.len(), 2499);
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let batch_ids: Vec<&str> = rows
        .iter()
        .map(|r| r.get(col("batch_id")).unwrap())
        .collect();
    let mut distinct = batch_ids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 3, "three batches, each contiguous");
    let written: Vec<&str> = rows
        .iter()
        .map(|r| r.get(col("phone_number")).unwrap())
        .collect();
    let mut expected: Vec<&str> = phones.iter().map(String::as_str).collect();
    expected.remove(10);
    assert_eq!(written, expected, "submission order, first occurrence kept");
    let invalid = rows
        .iter()
        .filter(|r| r.get(col("number_status")) == Some("INVALID_NUMBER"))
        .count();
    assert_eq!(invalid, 1);
    assert!(
        rows.iter()
            .all(|r| r.get(col("number_status")) != Some("PENDING"))
    );
}

#[tokio::test]
async fn a_refused_batch_is_reported_and_the_others_results_are_kept() {
    let app = spawn_app().await;
    let (_, key) = app.account(1500).await;
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("numbers.txt");
    std::fs::write(&input, us_numbers(0, 2100).join("\n")).unwrap();
    let output = dir.join("out.jsonl");
    let (i, o, k, addr) = (input.clone(), output.clone(), key.clone(), app.addr);
    let run = tokio::task::spawn_blocking(move || {
        cli(
            addr,
            &k,
            &[
                "submit",
                i.to_str().unwrap(),
                "--watch",
                "--format",
                "jsonl",
                "-o",
                o.to_str().unwrap(),
            ],
        )
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "a refused batch makes the run fail");
    assert!(stderr.contains("batch 2/3 refused"), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .contains("1 of 3 batches failed"),
        "{stderr}"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1000 + 100, "batches 1 and 3 were written");

    // poll, watch and balance print JSON.
    let batch_id = lines[0]["batch_id"].as_str().unwrap().to_string();
    let (k, addr) = (key.clone(), app.addr);
    let (poll, balance, watch) = tokio::task::spawn_blocking(move || {
        (
            cli(addr, &k, &["poll", &batch_id]),
            cli(addr, &k, &["balance"]),
            cli(addr, &k, &["watch", &batch_id]),
        )
    })
    .await
    .unwrap();
    let poll: Value = serde_json::from_slice(&poll.stdout).unwrap();
    assert_eq!(poll["total_numbers"], 1000);
    assert_eq!(poll["status"], "COMPLETED");
    let balance: Value = serde_json::from_slice(&balance.stdout).unwrap();
    assert_eq!(balance["credits"], 1500 - 1100);
    assert_eq!(String::from_utf8_lossy(&watch.stdout).lines().count(), 1000);

    let (k, addr) = ("wav_wrong".to_string(), app.addr);
    let bad = tokio::task::spawn_blocking(move || cli(addr, &k, &["balance"]))
        .await
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("Invalid API key"), "{err}");
}
