//! ProWebLook parity, as a client written for their API reads ours: `numberstatus` as a
//! boolean, one result shape in polls, Server-Sent Events, the CLI's outputs and the
//! OpenAPI document, line type and carrier, and the single-number check.
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use wavalidate::pb;
use wavalidate_test_support::*;

/// Every key of a result, in order: the README's table of result fields.
const RESULT_KEYS: [&str; 17] = [
    "index",
    "phone_number",
    "status",
    "wa_status",
    "numberstatus",
    "businessnumber",
    "formatted_number",
    "carrier",
    "linetype",
    "country",
    "number_status",
    "e164",
    "wa_id",
    "error",
    "checked_at",
    "from_cache",
    "normalization_note",
];

/// The single check's keys, ProWebLook's first.
const CHECK_KEYS: [&str; 23] = [
    "status",
    "formatted_number",
    "linetype",
    "carrier",
    "location",
    "countrycodenum",
    "countrycode",
    "countryname",
    "formatnational",
    "formatinternational",
    "timezone",
    "numberstatus",
    "businessnumber",
    "batch_id",
    "phone_number",
    "number_status",
    "wa_status",
    "e164",
    "wa_id",
    "error",
    "checked_at",
    "from_cache",
    "normalization_note",
];

fn base(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

/// JavaScript's `Boolean(value)`, which is how a ProWebLook client filters on a field.
fn js_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    names.sort();
    names.dedup();
    names
}

async fn http_poll(http: &reqwest::Client, app: &TestApp, key: &str, id: &str) -> Value {
    get_json(
        http,
        format!("{}/api/v1/wavalidation/batch/{id}?api_key={key}", base(app)),
    )
    .await
}

/// The numbers of the parity test: on WhatsApp, not on it, a UK mobile (a carrier),
/// an Italian fixed line (a leading zero) and an entry that is no number.
const ON: &str = "+14155552671";
const OFF: &str = "+14155550100";
const UK_MOBILE: &str = "+447400123456";
const IT_FIXED: &str = "+390212345678";
const NOT_A_NUMBER: &str = "12345";

#[tokio::test]
async fn a_proweblook_client_reads_the_same_result_everywhere() {
    let gateway = fakes::waha(&[ON, UK_MOBILE], "secret", "default").await;
    let app = spawn_gateway_app(&gateway, "waha", |_| {}).await;
    let (_, key) = app.account(50).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/v1/wavalidation/batch", base(&app)))
        .json(
            &json!({"api_key": key, "phone_numbers": [ON, NOT_A_NUMBER, OFF, UK_MOBILE, IT_FIXED]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut client = app.client().await;
    let grpc = wait_completed(&mut client, &key, &id).await;
    let poll = http_poll(&http, &app, &key, &id).await;
    let results = poll["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    for r in &results {
        assert_eq!(keys(r), sorted(&RESULT_KEYS), "every key, always: {r}");
    }

    // As their client filters: `results.filter(r => r.numberstatus)`.
    let registered: Vec<&str> = results
        .iter()
        .filter(|r| js_truthy(&r["numberstatus"]))
        .map(|r| r["phone_number"].as_str().unwrap())
        .collect();
    assert_eq!(registered, [ON, UK_MOBILE]);
    let by_input = |input: &str| {
        results
            .iter()
            .find(|r| r["phone_number"] == input)
            .unwrap()
            .clone()
    };
    let invalid = by_input(NOT_A_NUMBER);
    assert_eq!(invalid["numberstatus"], false);
    assert_eq!(invalid["wa_status"], "INVALID_NUMBER");
    for absent in ["formatted_number", "country", "linetype", "carrier", "e164"] {
        assert!(invalid[absent].is_null(), "{absent}: {invalid}");
    }
    assert_eq!(by_input(OFF)["numberstatus"], false);
    assert_eq!(by_input(OFF)["businessnumber"], false);
    assert_eq!(by_input(ON)["linetype"], "Fixed Line or Mobile");
    assert!(
        by_input(ON)["carrier"].is_null(),
        "no carrier data for US ranges"
    );
    let uk = by_input(UK_MOBILE);
    assert_eq!(
        (uk["linetype"].as_str(), uk["country"].as_str()),
        (Some("Mobile"), Some("GB"))
    );
    assert!(
        uk["carrier"].as_str().is_some_and(|c| !c.is_empty()),
        "{uk}"
    );
    assert_eq!(by_input(IT_FIXED)["linetype"], "Fixed Line");

    // gRPC: the same facts in its own message.
    let uk_grpc = grpc.results.iter().find(|r| r.e164 == UK_MOBILE).unwrap();
    assert_eq!(uk_grpc.line_type, pb::LineType::Mobile as i32);
    assert_eq!(uk_grpc.carrier, uk["carrier"].as_str().unwrap());
    let invalid_grpc = grpc.results.iter().find(|r| r.e164.is_empty()).unwrap();
    assert_eq!(invalid_grpc.line_type, pb::LineType::Unspecified as i32);

    // Server-Sent Events: each `result` event is the poll's result object, key for key.
    let body = http
        .get(format!(
            "{}/api/v1/wavalidation/batch/{id}/events?api_key={key}",
            base(&app)
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut event = "";
    let mut streamed = Vec::new();
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e;
        } else if let Some(data) = line.strip_prefix("data: ")
            && event == "result"
        {
            streamed.push(serde_json::from_str::<Value>(data).unwrap());
        }
    }
    streamed.sort_by_key(|r| r["index"].as_i64());
    assert_eq!(streamed, results, "SSE events are the poll's results");

    // The CLI's JSON lines: the batch id, then the same object.
    // The server shares this test's runtime: the CLI is awaited, never waited for.
    let cli = async |format: &str| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"))
            .args(["watch", &id, "--format", format])
            .env("WAV_SERVER", format!("http://{}", app.addr))
            .env("WAV_API_KEY", &key)
            .env_remove("DATABASE_URL")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let lines: Vec<Value> = cli("jsonl")
        .await
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut from_cli: Vec<Value> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["batch_id"], id.as_str());
            let mut l = l.clone();
            l.as_object_mut().unwrap().remove("batch_id");
            l
        })
        .collect();
    from_cli.sort_by_key(|r| r["index"].as_i64());
    assert_eq!(
        from_cli, results,
        "the CLI's JSON lines are the poll's results"
    );

    // Its CSV: the same columns in the table's order, empty cells for nulls.
    let csv_text = cli("csv").await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let mut want = vec!["batch_id".to_string()];
    want.extend(RESULT_KEYS.iter().map(|k| k.to_string()));
    assert_eq!(header, want);
    for row in reader.records() {
        let row = row.unwrap();
        let index: usize = row[1].parse().unwrap();
        let result = &results[index];
        for (column, cell) in RESULT_KEYS.iter().zip(row.iter().skip(1)) {
            let expected = match &result[*column] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            // Timestamps are the same instant, written with serde's and chrono's own digits.
            if *column == "checked_at" {
                assert_eq!(cell.is_empty(), expected.is_empty());
                continue;
            }
            assert_eq!(cell, expected, "{column} of {index}");
        }
    }

    // The OpenAPI document says the same: every key required, the absent ones nullable.
    let doc = get_json(&http, format!("{}/openapi.json", base(&app))).await;
    let schema = &doc["components"]["schemas"]["ResultJson"];
    let required: Vec<&str> = schema["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(sorted(&required), sorted(&RESULT_KEYS));
    for nullable in [
        "numberstatus",
        "carrier",
        "linetype",
        "formatted_number",
        "wa_status",
    ] {
        let types = schema["properties"][nullable]["type"].to_string();
        assert!(types.contains("null"), "{nullable}: {types}");
    }
}

#[tokio::test]
async fn pending_results_carry_every_key_with_what_is_known() {
    let gateway = fakes::waha(&[ON], "secret", "default").await;
    gateway.state.hold_from(0);
    let app = spawn_gateway_app(&gateway, "waha", |_| {}).await;
    let (_, key) = app.account(5).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &[ON.to_string()]).await;
    wait_until("the check is held at the gateway", || async {
        gateway.state.held() >= 1
    })
    .await;
    let http = reqwest::Client::new();
    let poll = http_poll(&http, &app, &key, &sub.batch_id).await;
    let pending = &poll["results"][0];
    assert_eq!(keys(pending), sorted(&RESULT_KEYS));
    assert_eq!(pending["status"], "pending");
    assert!(pending["numberstatus"].is_null() && pending["wa_status"].is_null());
    assert!(!js_truthy(&pending["numberstatus"]));
    assert_eq!(
        pending["formatted_number"], ON,
        "known from the number itself"
    );
    assert_eq!(pending["linetype"], "Fixed Line or Mobile");
    gateway.state.release();
}

async fn check(
    http: &reqwest::Client,
    app: &TestApp,
    query: &[(&str, &str)],
) -> (StatusCode, Value) {
    let resp = http
        .get(format!("{}/api/v1/wavalidation", base(app)))
        .query(query)
        .send()
        .await
        .unwrap();
    (resp.status(), resp.json().await.unwrap())
}

#[tokio::test]
async fn the_single_check_answers_with_proweblooks_fields() {
    let gateway = fakes::waha(&[ON, UK_MOBILE], "secret", "default").await;
    let app = spawn_gateway_app(&gateway, "waha", |_| {}).await;
    let (account, key) = app.account(10).await;
    let http = reqwest::Client::new();

    let (status, on) = check(&http, &app, &[("phone_number", ON), ("api_key", &key)]).await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert_eq!(keys(&on), sorted(&CHECK_KEYS));
    assert_eq!(on["status"], "VALID_CONFIRMED");
    assert_eq!(on["numberstatus"], true);
    assert_eq!(on["formatted_number"], "+1 415-555-2671");
    assert_eq!(on["formatinternational"], "+1 415-555-2671");
    assert_eq!(on["formatnational"], "(415) 555-2671");
    assert_eq!(on["countrycodenum"], 1);
    assert_eq!(on["countrycode"], "US");
    assert_eq!(on["countryname"], "United States");
    assert_eq!(on["linetype"], "Fixed Line or Mobile");
    assert!(
        on["location"].as_str().is_some_and(|l| !l.is_empty()),
        "{on}"
    );
    let zones: Vec<&str> = on["timezone"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z.as_str().unwrap())
        .collect();
    assert!(zones.contains(&"America/Los_Angeles"), "{zones:?}");
    assert_eq!(app.store.balance(account).await.unwrap(), 9, "one credit");

    // POST, a national number with a calling code as the hint.
    let resp = http
        .post(format!("{}/api/v1/wavalidation", base(&app)))
        .json(&json!({"api_key": key, "phone_number": "07400 123456", "country_code": "44"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let uk: Value = resp.json().await.unwrap();
    assert_eq!(
        (uk["e164"].as_str(), uk["status"].as_str()),
        (Some(UK_MOBILE), Some("VALID_CONFIRMED"))
    );
    assert_eq!(uk["linetype"], "Mobile");
    assert!(
        uk["carrier"].as_str().is_some_and(|c| !c.is_empty()),
        "{uk}"
    );

    // A form body, and the query string of a bodiless POST, as ProWebLook's clients send them.
    let form: Value = http
        .post(format!("{}/api/v1/wavalidation", base(&app)))
        .form(&[
            ("api_key", key.as_str()),
            ("phone_number", "(415) 555-2671"),
            ("country_code", "US"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (form["e164"].as_str(), form["numberstatus"].as_bool()),
        (Some(ON), Some(true)),
        "{form}"
    );
    let resp = http
        .post(format!("{}/api/v1/wavalidation", base(&app)))
        .query(&[("api_key", key.as_str()), ("phone_number", UK_MOBILE)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap()["linetype"], "Mobile");

    // Not on WhatsApp: INVALID, false; an entry that is no number: INVALID too, refunded.
    let (_, off) = check(&http, &app, &[("phone_number", OFF), ("api_key", &key)]).await;
    assert_eq!(
        (off["status"].as_str(), &off["numberstatus"]),
        (Some("INVALID"), &json!(false))
    );
    assert_eq!(off["wa_status"], "INVALID");
    let (status, bad) = check(
        &http,
        &app,
        &[("phone_number", NOT_A_NUMBER), ("api_key", &key)],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (bad["status"].as_str(), bad["wa_status"].as_str()),
        (Some("INVALID"), Some("INVALID_NUMBER"))
    );
    assert!(bad["formatted_number"].is_null() && bad["countrycodenum"].is_null());
    assert_eq!(bad["timezone"], json!([]));
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        5,
        "five checks of numbers; the invalid entry was refunded"
    );

    // Each check is a batch of one the caller can poll again.
    let mut client = app.client().await;
    let again = poll(&mut client, &key, on["batch_id"].as_str().unwrap()).await;
    assert_eq!(again.total_numbers, 1);
    assert_eq!(again.results[0].status, pb::NumberStatus::OnWhatsapp as i32);

    // Asked again, the cache answers: no new request upstream.
    let asked = gateway.state.numbers_asked();
    let (_, cached) = check(&http, &app, &[("phone_number", ON), ("api_key", &key)]).await;
    assert_eq!(
        (
            cached["from_cache"].as_bool(),
            gateway.state.numbers_asked()
        ),
        (Some(true), asked)
    );

    // gRPC: the same check, with the details in their own message.
    let reply = client
        .check_number(pb::CheckNumberRequest {
            api_key: key.clone(),
            phone_number: "+44 7400 123456".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let result = reply.result.unwrap();
    assert_eq!(result.status, pb::NumberStatus::OnWhatsapp as i32);
    assert_eq!(result.line_type, pb::LineType::Mobile as i32);
    let details = reply.details.unwrap();
    assert_eq!(details.country_calling_code, 44);
    assert_eq!(details.country_name, "United Kingdom");
    assert_eq!(details.international_format, "+44 7400 123456");
}

#[tokio::test]
async fn the_single_check_refuses_bad_requests_and_changes_nothing() {
    let app = spawn_app().await;
    let (account, key) = app.account(3).await;
    let (_, broke) = app.account(0).await;
    let http = reqwest::Client::new();
    for (query, status, field) in [
        (
            vec![("api_key", key.as_str())],
            StatusCode::BAD_REQUEST,
            "phone_number",
        ),
        (
            vec![
                ("api_key", key.as_str()),
                ("phone_number", ON),
                ("country_code", "ZZ"),
            ],
            StatusCode::BAD_REQUEST,
            "country_code",
        ),
        (
            vec![
                ("api_key", key.as_str()),
                ("phone_number", ON),
                ("timeout", "0"),
            ],
            StatusCode::BAD_REQUEST,
            "timeout",
        ),
        (
            vec![
                ("api_key", key.as_str()),
                ("phone_number", ON),
                ("force_check", "maybe"),
            ],
            StatusCode::BAD_REQUEST,
            "",
        ),
        (vec![("phone_number", ON)], StatusCode::UNAUTHORIZED, ""),
        (
            vec![("api_key", broke.as_str()), ("phone_number", ON)],
            StatusCode::PAYMENT_REQUIRED,
            "",
        ),
    ] {
        let (got, body) = check(&http, &app, &query).await;
        assert_eq!(got, status, "{query:?}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        if !field.is_empty() {
            assert_eq!(body["field"], field, "{body}");
        }
    }
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        3,
        "nothing charged"
    );
    let mut client = app.client().await;
    let status = client
        .check_number(pb::CheckNumberRequest {
            api_key: key.clone(),
            phone_number: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn a_check_past_its_deadline_is_a_batch_to_poll_charged_once() {
    let gateway = fakes::waha(&[ON], "secret", "default").await;
    gateway.state.hold_from(0);
    let app = spawn_gateway_app(&gateway, "waha", |_| {}).await;
    let (account, key) = app.account(5).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (status, pending) = check(
        &http,
        &app,
        &[("phone_number", ON), ("api_key", &key), ("timeout", "1")],
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{pending}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(pending["status"], "PENDING");
    assert!(pending["numberstatus"].is_null());
    assert_eq!(app.store.balance(account).await.unwrap(), 4, "charged once");

    // gRPC, with a deadline of its own: answered PENDING before it, not DEADLINE_EXCEEDED.
    let mut client = app.client().await;
    let mut request = tonic::Request::new(pb::CheckNumberRequest {
        api_key: key.clone(),
        phone_number: OFF.into(),
        ..Default::default()
    });
    request.set_timeout(Duration::from_millis(1500));
    let reply = client.check_number(request).await.unwrap().into_inner();
    assert_eq!(
        reply.result.unwrap().status,
        pb::NumberStatus::Pending as i32
    );

    // The answer lands in the batch the caller was given.
    gateway.state.release();
    let id = pending["batch_id"].as_str().unwrap();
    let done = wait_completed(&mut client, &key, id).await;
    assert_eq!(done.results[0].status, pb::NumberStatus::OnWhatsapp as i32);
    let other = wait_completed(&mut client, &key, &reply.batch_id).await;
    assert_eq!(
        other.results[0].status,
        pb::NumberStatus::NotOnWhatsapp as i32
    );
    assert_eq!(
        app.store.balance(account).await.unwrap(),
        3,
        "two checks, two credits"
    );
}

#[tokio::test]
async fn a_check_goes_ahead_of_batch_work_even_work_already_claimed() {
    // One account, one request at a time, 2 checks a second: a worker's claim of the batch
    // holds seconds of its work, which a check must not wait for.
    let numbers = us_numbers(0, 40);
    let gateway = fakes::waha(&registered(&numbers), "secret", "default").await;
    let app = spawn_gateway_app(&gateway, "waha", |s| {
        s.pacing.rate_per_sec = Some(2.0);
        s.pacing.max_concurrency = Some(1);
        // One loop, busy with the batch: the check needs the loop kept for single checks.
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &numbers).await;
    wait_until("the batch is under way", || async {
        gateway.state.numbers_asked() >= 2
    })
    .await;
    let asked_before = gateway.state.numbers_asked();
    let reply = client
        .check_number(pb::CheckNumberRequest {
            api_key: key.clone(),
            phone_number: ON.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        reply.result.unwrap().status,
        pb::NumberStatus::NotOnWhatsapp as i32
    );
    let calls = gateway.state.calls();
    let at = calls
        .iter()
        .position(|(_, asked)| asked.iter().any(|n| ON.ends_with(n.as_str())))
        .expect("the check was asked");
    // Only the request in flight when it came may go first (and one more that had
    // already taken its slot); behind the claim it waited for ten.
    assert!(
        at <= asked_before + 2,
        "{} batch numbers were asked before the check",
        at - asked_before
    );
    let batch = poll(&mut client, &key, &sub.batch_id).await;
    assert!(batch.pending > 20, "{} pending", batch.pending);
}
