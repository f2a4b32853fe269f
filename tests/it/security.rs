//! Hostile and careless callers: per-key rate limits, hostile input, bad admin
//! amounts, keys in logs, and TLS.

use tonic::Code;

use wavalidate::pb;
use wavalidate_test_support::*;

#[tokio::test]
async fn a_key_over_its_rate_gets_resource_exhausted_with_a_retry_hint() {
    let app = spawn_app_with(|s| {
        s.api.key_rate_per_sec = 5;
    })
    .await;
    let (_, key) = app.account(10).await;
    let (_, other) = app.account(10).await;
    let mut client = app.client().await;
    let mut limited = None;
    for _ in 0..30 {
        if let Err(status) = client
            .get_balance(pb::GetBalanceRequest {
                api_key: key.clone(),
            })
            .await
        {
            limited = Some(status);
            break;
        }
    }
    let status = limited.expect("30 quick requests exceed 5/s with a burst of 10");
    assert_eq!(status.code(), Code::ResourceExhausted);
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    assert!(
        details.retry_info().and_then(|r| r.retry_delay).is_some(),
        "a retry hint"
    );
    // Another key is not affected.
    client
        .get_balance(pb::GetBalanceRequest { api_key: other })
        .await
        .unwrap();
    // Over HTTP: 429 with Retry-After.
    let resp = reqwest::get(format!("http://{}/api/v1/balance?api_key={key}", app.addr))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::TOO_MANY_REQUESTS);
    assert!(resp.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_change_nothing() {
    let app = spawn_app().await;
    let (account, key) = app.account(100).await;
    let mut client = app.client().await;
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["+1415\u{0}555".into()], "phone_numbers[0]"),
        (
            vec!["+14155552671".into(), "9".repeat(10_000)],
            "phone_numbers[1]",
        ),
    ];
    for (numbers, field) in cases {
        let err = client
            .submit_batch(pb::SubmitBatchRequest {
                api_key: key.clone(),
                phone_numbers: numbers,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        use tonic_types::StatusExt;
        assert_eq!(
            err.get_error_details()
                .bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            field
        );
    }
    let err = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: vec!["+14155552671".into()],
            request_id: "a\0b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Control characters and odd scripts are just invalid entries.
    let odd = vec![
        "\u{7}\u{1b}[31m+1 415\r\n555 2671".to_string(),
        "☎️📞".into(),
        "\u{202e}1762555514+".into(),
    ];
    let p = submit_and_wait(&mut client, &key, &odd).await;
    assert_eq!(p.results.len(), 3);
    // An oversized message is refused by the size limit, and the server carries on.
    let huge = vec!["x".repeat(200); 10_000];
    let err = client
        .submit_batch(pb::SubmitBatchRequest {
            api_key: key.clone(),
            phone_numbers: huge,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );
    let big_json = format!(
        r#"{{"api_key": "{key}", "phone_numbers": ["{}"]}}"#,
        "1".repeat(2 * 1024 * 1024)
    );
    let resp = reqwest::Client::new()
        .post(format!("http://{}/api/v1/wavalidation/batch", app.addr))
        .header("content-type", "application/json")
        .body(big_json)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let balance = app.store.balance(account).await.unwrap();
    assert_eq!(
        balance,
        100 - 3 + p.credits_refunded,
        "only the valid odd batch was charged"
    );
}

#[tokio::test]
async fn admin_commands_refuse_bad_amounts_with_one_line() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let (account, _) = store.create_account("admin", 0).await.unwrap();
    let id = account.to_string();
    let max = i64::MAX.to_string();
    for args in [
        vec!["account", "create", "--name", "x", "--credits", "-5"],
        vec!["account", "credit", "--account-id", &id, "--amount", "0"],
        vec!["account", "credit", "--account-id", &id, "--amount", "-10"],
        vec![
            "account",
            "credit",
            "--account-id",
            &id,
            "--amount",
            "99999999999999999999999",
        ],
        vec!["key", "create", "--account-id", "not-a-uuid"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"))
            .args(&args)
            .env("DATABASE_URL", &url)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // Overflowing the balance is refused by the database, not wrapped around.
    let credit = |amount: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_wavalidate"))
            .args(["account", "credit", "--account-id", &id, "--amount", amount])
            .env("DATABASE_URL", &url)
            .output()
            .unwrap()
    };
    assert!(credit(&max).status.success());
    let overflow = credit("1");
    assert!(!overflow.status.success());
    assert_eq!(
        String::from_utf8_lossy(&overflow.stderr)
            .trim()
            .lines()
            .count(),
        1
    );
    assert_eq!(store.balance(account).await.unwrap(), i64::MAX);
}

#[tokio::test]
async fn api_keys_never_appear_in_the_logs() {
    let db = fresh_database().await;
    let (url, store) = (db.url.clone(), db.store.clone());
    let (_, key) = store.create_account("logs", 10).await.unwrap();
    let key = key.expose().to_string();
    let mut server = spawn_process(&url, &[], &[("RUST_LOG", "debug")]).await;
    let mut client = connect(server.addr).await;
    submit(&mut client, &key, &us_numbers(0, 3)).await;
    let mut req = tonic::Request::new(pb::GetBalanceRequest::default());
    req.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    client.get_balance(req).await.unwrap();
    let wrong = "wav_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let _ = client
        .get_balance(pb::GetBalanceRequest {
            api_key: wrong.into(),
        })
        .await;
    let _ = reqwest::get(format!(
        "http://{}/api/v1/balance?api_key={key}",
        server.addr
    ))
    .await;
    server.terminate().await;
    let logs = std::fs::read_to_string(&server.log).unwrap();
    assert!(logs.len() > 1000, "debug logs were written");
    assert!(!logs.contains(&key[4..]), "the key appears in the logs");
    assert!(
        !logs.contains(&wrong[4..]),
        "a wrong key appears in the logs"
    );
}

#[tokio::test]
async fn tls_serves_grpc_and_json_with_a_given_certificate() {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(uuid::Uuid::new_v4().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let app = spawn_app_with(|s| {
        s.server.tls = Some(wavalidate::settings::TlsFiles {
            cert: cert.clone(),
            key: key_file.clone(),
        })
    })
    .await;
    let (_, key) = app.account(7).await;
    let port = app.addr.port();

    let https = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let balance = get_json(
        &https,
        format!("https://localhost:{port}/api/v1/balance?api_key={key}"),
    )
    .await;
    assert_eq!(balance["balance"], 7);
    // Plaintext is not served on a TLS port.
    assert!(
        reqwest::get(format!(
            "http://127.0.0.1:{port}/api/v1/balance?api_key={key}"
        ))
        .await
        .is_err()
    );

    let out = tokio::process::Command::new("grpcurl")
        .args([
            "-cacert",
            cert.to_str().unwrap(),
            "-servername",
            "localhost",
            &format!("127.0.0.1:{port}"),
            "grpc.health.v1.Health/Check",
        ])
        .output()
        .await
        .expect("grpcurl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SERVING"));
}
