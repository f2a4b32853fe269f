//! The JSON HTTP API, through a real HTTP client on the gRPC port.
use reqwest::StatusCode;
use serde_json::{Value, json};

use wavalidate_test_support::*;

fn base(app: &TestApp) -> String {
    format!("http://{}", app.addr)
}

#[tokio::test]
async fn prowebloks_documented_example_works_and_matches_grpc() {
    let app = spawn_app().await;
    let (_, key) = app.account(100).await;
    let http = reqwest::Client::new();
    // ProWebLook's own example, verbatim but for the host and key.
    let resp = http
        .post(format!("{}/api/v1/wavalidation/batch", base(&app)))
        .header("Content-Type", "application/json")
        .body(format!(
            r#"{{"api_key": "{key}", "phone_numbers": ["+14155552671", "+919876543210", "+441234567890", "+33123456789"]}}"#
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let sub: Value = resp.json().await.unwrap();
    assert_eq!(sub["total_numbers"], 4);
    assert_eq!(sub["status"], "processing");
    let id = sub["batch_id"].as_str().unwrap().to_string();

    let mut client = app.client().await;
    let grpc = wait_completed(&mut client, &key, &id).await;
    let poll = get_json(
        &http,
        format!(
            "{}/api/v1/wavalidation/batch/{id}?api_key={key}",
            base(&app)
        ),
    )
    .await;
    assert_eq!(poll["status"], "completed");
    let total = poll["total_numbers"].as_i64().unwrap();
    let (completed, failed, pending) = (
        poll["completed"].as_i64().unwrap(),
        poll["failed"].as_i64().unwrap(),
        poll["pending"].as_i64().unwrap(),
    );
    assert_eq!(completed + failed + pending, total, "counters add up");
    assert_eq!(
        (completed, failed, pending),
        (grpc.completed as i64, grpc.failed as i64, 0)
    );
    let results = poll["results"].as_array().unwrap();
    assert_eq!(results.len(), grpc.results.len());
    for (h, g) in results.iter().zip(&grpc.results) {
        assert_eq!(h["phone_number"], g.phone_number.as_str());
        assert_eq!(h["index"], g.index);
        assert_eq!(h["status"], "completed");
        assert_eq!(h["e164"].as_str().unwrap_or(""), g.e164);
        assert_eq!(h["wa_id"].as_str().unwrap_or(""), g.wa_id);
        assert_eq!(h["country"].as_str().unwrap_or(""), g.region);
        assert_eq!(h["businessnumber"], g.is_business);
        let on = g.status == wavalidate::pb::NumberStatus::OnWhatsapp as i32;
        assert_eq!(h["wa_status"] == "VALID_CONFIRMED", on);
        assert_eq!(h["formatted_number"].as_str().unwrap_or(""), g.e164);
    }
}

#[tokio::test]
async fn http_errors_have_prowebloks_codes_and_fields() {
    let app = spawn_app().await;
    let (_, key) = app.account(3).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/wavalidation/batch", base(&app));
    let post = |body: Value| http.post(&url).json(&body).send();

    let too_many: Vec<String> = us_numbers(0, 1001);
    let resp = post(json!({"api_key": key, "phone_numbers": too_many}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"],
        "Batch size exceeds the maximum allowed limit of 1000 numbers."
    );
    assert_eq!(
        (body["submitted"].clone(), body["max_allowed"].clone()),
        (json!(1001), json!(1000))
    );

    let resp = post(json!({"api_key": "wav_wrong", "phone_numbers": ["+14155552671"]}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "Invalid API key."
    );

    let resp = post(json!({"api_key": key, "phone_numbers": us_numbers(0, 4)}))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYMENT_REQUIRED);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "Insufficient WA API credits.");
    assert_eq!(
        (body["required"].clone(), body["available"].clone()),
        (json!(4), json!(3))
    );

    let resp = post(json!({"api_key": key})).await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "missing phone_numbers"
    );
    assert!(
        resp.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("phone_numbers")
    );

    for raw in [
        b"{\"api_key\": ".to_vec(),
        b"{\"phone_numbers\": [\"\xff\xfe\"]}".to_vec(),
        b"[1,2".to_vec(),
    ] {
        let resp = http
            .post(&url)
            .header("Content-Type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::BAD_REQUEST,
            "malformed JSON is the client's error"
        );
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid JSON body"),
            "{body}"
        );
    }

    let poll_url =
        |id: &str, k: &str| format!("{}/api/v1/wavalidation/batch/{id}?api_key={k}", base(&app));
    let resp = http
        .get(poll_url(&uuid::Uuid::new_v4().to_string(), &key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = http.get(poll_url("nope", &key)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http
        .get(format!(
            "{}/api/v1/balance?service=sms&api_key={key}",
            base(&app)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let resp = http
        .get(format!("{}/api/v1/nothing", base(&app)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(resp.json::<Value>().await.unwrap()["error"].is_string());

    let balance = get_json(
        &http,
        format!(
            "{}/api/v1/balance?service=wavalidation&api_key={key}",
            base(&app)
        ),
    )
    .await;
    assert_eq!(
        balance,
        json!({"balance": 3, "service": "wavalidation"}),
        "no error charged anything"
    );
}

#[tokio::test]
async fn keys_in_headers_and_another_accounts_batch() {
    let app = spawn_app().await;
    let (_, alice) = app.account(10).await;
    let (_, bob) = app.account(10).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/api/v1/wavalidation/batch", base(&app)))
        .bearer_auth(&alice)
        .json(&json!({"phone_numbers": ["+14155552671"], "request_id": "r-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("{}/api/v1/wavalidation/batch/{id}", base(&app));
    assert_eq!(
        http.get(&url)
            .header("X-Api-Key", &alice)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        http.get(&url)
            .header("X-Api-Key", &bob)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    let conflict = http
        .get(format!("{url}?api_key={bob}"))
        .header("X-Api-Key", &alice)
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::BAD_REQUEST);
    // The same request_id with another list.
    let reused = http
        .post(format!("{}/api/v1/wavalidation/batch", base(&app)))
        .bearer_auth(&alice)
        .json(&json!({"phone_numbers": ["+14155550100"], "request_id": "r-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(reused.status(), StatusCode::CONFLICT);
    assert_eq!(
        reused.json::<Value>().await.unwrap()["reason"],
        "IDEMPOTENCY_KEY_REUSED"
    );
}

#[tokio::test]
async fn server_sent_events_stream_every_result_then_completed() {
    let app = spawn_app_with(|s| {
        s.checker.simulated.latency = ms(100);
        s.workers.loops = 1;
    })
    .await;
    let (_, key) = app.account(1000).await;
    let mut client = app.client().await;
    let sub = submit(&mut client, &key, &us_numbers(0, 250)).await;
    let resp = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/wavalidation/batch/{}/events?api_key={key}",
            base(&app),
            sub.batch_id
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let body = tokio::time::timeout(DEADLINE, resp.text())
        .await
        .expect("stream ends")
        .unwrap();
    let mut seen = vec![0; 250];
    let mut completed = None;
    let mut event = "";
    for line in body.lines() {
        if let Some(e) = line.strip_prefix("event: ") {
            event = e;
        } else if let Some(data) = line.strip_prefix("data: ") {
            let v: Value = serde_json::from_str(data).unwrap();
            match event {
                "result" => {
                    assert!(completed.is_none(), "result after completed");
                    seen[v["index"].as_u64().unwrap() as usize] += 1;
                }
                "completed" => completed = Some(v),
                other => panic!("unexpected event {other}: {data}"),
            }
        }
    }
    assert!(seen.iter().all(|&n| n == 1), "each number exactly once");
    assert_eq!(completed.unwrap()["total_numbers"], 250);
}

#[tokio::test]
async fn the_openapi_document_describes_the_http_api() {
    let app = spawn_app().await;
    let doc = get_json(
        &reqwest::Client::new(),
        format!("{}/openapi.json", base(&app)),
    )
    .await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/wavalidation/batch",
        "/api/v1/wavalidation/batch/{batch_id}",
        "/api/v1/wavalidation/batch/{batch_id}/events",
        "/api/v1/wavalidation/batch/{batch_id}/cancel",
        "/api/v1/wavalidation/batches",
        "/api/v1/balance",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["PollReply"].is_object());
    // A parameter said to be in the path is in the path's template; the rest are query parameters.
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            for param in op["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                let want = if in_path { "path" } else { "query" };
                assert_eq!(param["in"], want, "{method} {path}: {param}");
            }
        }
    }
}
