//! A Python client generated from our proto (grpcio) against a real server.
use tokio::process::Command;

use wavalidate_test_support::*;

#[tokio::test]
async fn a_python_client_generated_from_the_proto_works() {
    let app = spawn_app().await;
    let (_, key) = app.account(50).await;
    let python = std::env::var("WAV_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client.py");
    let out = Command::new(&python)
        .args([script, &app.addr.to_string(), &key])
        .output()
        .await
        .expect("python (scripts/test provides one with grpcio)");
    assert!(
        out.status.success(),
        "python client failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
