use tonic::{Code, Request};

use wavalidate::domain::api_key::ApiKey;
use wavalidate::pb;
use wavalidate_test_support::*;

fn balance_request(
    body_key: &str,
    metadata: &[(&'static str, &str)],
) -> Request<pb::GetBalanceRequest> {
    let mut req = Request::new(pb::GetBalanceRequest {
        api_key: body_key.to_string(),
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    req
}

#[tokio::test]
async fn keys_come_from_the_body_or_the_metadata() {
    let app = spawn_app().await;
    let (_, key) = app.account(7).await;
    let mut client = app.client().await;
    let bearer = format!("Bearer {key}");
    for req in [
        balance_request(&key, &[]),
        balance_request("", &[("authorization", &bearer)]),
        balance_request("", &[("x-api-key", &key)]),
        balance_request(&key, &[("x-api-key", &key)]),
    ] {
        assert_eq!(
            client.get_balance(req).await.unwrap().into_inner().credits,
            7
        );
    }

    let mut submit_req = Request::new(submit_request("", &["+14155552671"]));
    submit_req
        .metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    client
        .submit_batch(submit_req)
        .await
        .expect("submit with bearer metadata");
}

#[tokio::test]
async fn missing_unknown_revoked_and_conflicting_keys_are_refused() {
    let app = spawn_app().await;
    let (_, key) = app.account(10).await;
    let (_, other) = app.account(10).await;
    let mut client = app.client().await;

    for req in [balance_request("", &[]), balance_request("wav_nope", &[])] {
        assert_eq!(
            client.get_balance(req).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    let conflict = client
        .get_balance(balance_request(&key, &[("x-api-key", &other)]))
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::InvalidArgument);

    // A refused submit charges nothing.
    let err = client
        .submit_batch(submit_request("wav_nope", &["+14155552671"]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let err = client
        .submit_batch({
            let mut r = Request::new(submit_request(&key, &["+14155552671"]));
            r.metadata_mut().insert("x-api-key", other.parse().unwrap());
            r
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let batches: i64 = sqlx::query_scalar("SELECT count(*) FROM batches")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert_eq!(batches, 0);

    assert!(
        app.store
            .revoke_key(&ApiKey::from_presented(&key).unwrap())
            .await
            .unwrap()
    );
    let revoked = client
        .get_balance(balance_request(&key, &[]))
        .await
        .unwrap_err();
    assert_eq!(revoked.code(), Code::Unauthenticated);
    let poll = client
        .poll_batch(pb::PollBatchRequest {
            api_key: key.clone(),
            batch_id: uuid::Uuid::new_v4().to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(poll.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn keys_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let (account, key) = app.account(1).await;
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT key_hash FROM api_keys WHERE account_id = $1")
            .bind(account)
            .fetch_all(app.store.pool())
            .await
            .unwrap();
    assert_eq!(stored, vec![ApiKey::from_presented(&key).unwrap().hash()]);
    let dump: String = sqlx::query_scalar("SELECT string_agg(t::text, '|') FROM api_keys t")
        .fetch_one(app.store.pool())
        .await
        .unwrap();
    assert!(
        !dump.contains(&key[4..]),
        "the plain key must not be stored"
    );
}

/// A key given twice in one place (two headers, two metadata entries, the query string
/// twice) with different values is refused as two keys in two places are, not read as the
/// first; and a forged page token is the caller's mistake, not an internal error.
#[tokio::test]
async fn repeated_keys_and_forged_page_tokens_are_invalid_arguments() {
    let app = spawn_app().await;
    let (_, alice) = app.account(10).await;
    let (_, bob) = app.account(10).await;
    let http = reqwest::Client::new();
    let balance = format!("http://{}/api/v1/balance", app.addr);
    let two_headers = http
        .get(&balance)
        .header("x-api-key", &alice)
        .header("x-api-key", &bob)
        .send()
        .await
        .unwrap();
    assert_eq!(two_headers.status(), reqwest::StatusCode::BAD_REQUEST);
    let two_bearers = http
        .get(&balance)
        .header("authorization", format!("Bearer {alice}"))
        .header("authorization", format!("Bearer {bob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(two_bearers.status(), reqwest::StatusCode::BAD_REQUEST);
    let two_in_query = http
        .get(format!("{balance}?api_key={alice}&api_key={bob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(two_in_query.status(), reqwest::StatusCode::BAD_REQUEST);
    // The same key twice is one key.
    let same_twice = http
        .get(format!("{balance}?api_key={alice}&api_key={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(same_twice.status(), reqwest::StatusCode::OK);
    // A batch with one key in its query and another in its body.
    let query_and_body = http
        .post(format!(
            "http://{}/api/v1/wavalidation/batch?api_key={bob}",
            app.addr
        ))
        .json(&serde_json::json!({"api_key": alice, "phone_numbers": ["+14155552671"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(query_and_body.status(), reqwest::StatusCode::BAD_REQUEST);

    let mut client = app.client().await;
    let mut req = balance_request("", &[("x-api-key", &alice)]);
    req.metadata_mut().append("x-api-key", bob.parse().unwrap());
    let status = client.get_balance(req).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");

    let forged = hex::encode(format!("-8000000000000000000/{}", uuid::Uuid::new_v4()));
    let resp = http
        .get(format!(
            "http://{}/api/v1/wavalidation/batches?api_key={alice}&page_token={forged}",
            app.addr
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
    let status = client
        .list_batches(pb::ListBatchesRequest {
            api_key: alice.clone(),
            page_token: forged,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
}
