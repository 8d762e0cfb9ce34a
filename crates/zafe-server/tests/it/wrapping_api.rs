//! Response wrapping (Vault's `X-Vault-Wrap-TTL` and `sys/wrapping/*`): an answer goes into a
//! single-use, short-lived wrapping token, kept encrypted behind the barrier, given back once.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};

/// `method path` as `token`, asking for the answer wrapped for `ttl`.
async fn wrapped(
    h: &Harness,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
    ttl: &str,
) -> Answer {
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("x-vault-token", token)
        .header("x-vault-wrap-ttl", ttl);
    let body = match body {
        Some(b) => {
            req = req.header("content-type", "application/json");
            axum::body::Body::from(b.to_string())
        }
        None => axum::body::Body::empty(),
    };
    h.send(req.body(body).unwrap()).await
}

async fn unwrap(h: &Harness, wrapping_token: &str) -> Answer {
    h.call(
        "POST",
        "/v1/sys/wrapping/unwrap",
        Some(wrapping_token),
        None,
    )
    .await
}

// A wrapped token (the orchestrator pattern): the answer carries wrap_info and no token; the
// holder of the wrapping token unwraps it once; a second unwrap, a lookup afterwards and a
// malformed token all get Vault's one message.
#[tokio::test]
async fn a_wrapped_answer_is_given_back_once() {
    let (h, root) = unsealed().await;
    let a = wrapped(
        &h,
        &root,
        "POST",
        "/v1/auth/token/create",
        Some(json!({"policies": ["default"], "ttl": "1h"})),
        "5m",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert!(
        a.json["auth"].is_null() && a.json["data"].is_null(),
        "{:?}",
        a.json
    );
    let info = &a.json["wrap_info"];
    assert_eq!(info["ttl"], 300);
    assert_eq!(info["creation_path"], "auth/token/create");
    assert!(
        info["wrapped_accessor"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    let wrapping_token = info["token"].as_str().unwrap().to_string();
    assert!(wrapping_token.starts_with("zafe_wr_"));

    let looked = h
        .call(
            "POST",
            "/v1/sys/wrapping/lookup",
            None,
            Some(json!({"token": wrapping_token})),
        )
        .await;
    assert_eq!(looked.status, StatusCode::OK, "{:?}", looked.json);
    assert_eq!(looked.json["data"]["creation_ttl"], 300);
    assert!(
        !looked.json.to_string().contains("zafe_s_"),
        "lookup never shows the answer"
    );

    let first = unwrap(&h, &wrapping_token).await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.json);
    let inner = first.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(first.json["auth"]["accessor"], info["wrapped_accessor"]);
    let me = h
        .call("GET", "/v1/auth/token/lookup-self", Some(&inner), None)
        .await;
    assert_eq!(me.status, StatusCode::OK, "the unwrapped token works");

    for again in [
        unwrap(&h, &wrapping_token).await,
        h.call(
            "POST",
            "/v1/sys/wrapping/lookup",
            None,
            Some(json!({"token": wrapping_token})),
        )
        .await,
        unwrap(&h, "zafe_wr_not-a-token").await,
    ] {
        assert_eq!(again.status, StatusCode::BAD_REQUEST, "{:?}", again.json);
        assert_eq!(
            again.first_error(),
            "wrapping token is not valid or does not exist"
        );
    }
}

// Two unwraps racing for one token: exactly one gets the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_unwraps_get_the_answer_once() {
    let (h, root) = unsealed().await;
    let h = std::sync::Arc::new(h);
    for round in 0..5 {
        let a = wrapped(
            &h,
            &root,
            "POST",
            "/v1/sys/wrapping/wrap",
            Some(json!({"round": round, "secret": "s3cr3t"})),
            "1m",
        )
        .await;
        let wrapping_token = a.json["wrap_info"]["token"].as_str().unwrap().to_string();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (h, t) = (h.clone(), wrapping_token.clone());
                tokio::spawn(async move { unwrap(&h, &t).await })
            })
            .collect();
        let mut won = 0;
        for racer in racers {
            let answer = racer.await.unwrap();
            if answer.status == StatusCode::OK {
                assert_eq!(answer.json["data"]["secret"], "s3cr3t");
                won += 1;
            }
        }
        assert_eq!(won, 1, "round {round}");
    }
}

// A wrapping token lives its TTL and no longer; rewrapping gives a new token and ends the old
// one; TTLs outside 1 s..30 days and a wrap without a TTL are refused.
#[tokio::test]
async fn wrapping_tokens_expire_and_rewrap() {
    let (h, root) = unsealed().await;
    let wrap = |ttl: &'static str| {
        let (h, root) = (&h, root.clone());
        async move {
            wrapped(
                h,
                &root,
                "POST",
                "/v1/sys/wrapping/wrap",
                Some(json!({"k": "v"})),
                ttl,
            )
            .await
        }
    };
    let a = wrap("60s").await;
    let old = a.json["wrap_info"]["token"].as_str().unwrap().to_string();
    let r = h
        .call(
            "POST",
            "/v1/sys/wrapping/rewrap",
            None,
            Some(json!({"token": old})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.json);
    let new = r.json["wrap_info"]["token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(unwrap(&h, &old).await.status, StatusCode::BAD_REQUEST);

    h.clock.advance(Duration::from_secs(61));
    let expired = unwrap(&h, &new).await;
    assert_eq!(
        expired.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        expired.json
    );

    for ttl in ["0s", "31d", "soon"] {
        assert_eq!(wrap(ttl).await.status, StatusCode::BAD_REQUEST, "{ttl}");
    }
    let unwrapped_wrap = h
        .call(
            "POST",
            "/v1/sys/wrapping/wrap",
            Some(&root),
            Some(json!({"k": "v"})),
        )
        .await;
    assert_eq!(unwrapped_wrap.status, StatusCode::BAD_REQUEST);
    let anonymous = h
        .call(
            "POST",
            "/v1/sys/wrapping/wrap",
            None,
            Some(json!({"k": "v"})),
        )
        .await;
    assert_eq!(anonymous.status, StatusCode::FORBIDDEN);
}

// What is wrapped is stored encrypted behind the barrier and keyed by the token's keyed hash:
// neither the value nor the wrapping token appears in storage.
#[tokio::test]
async fn wrapped_answers_are_stored_encrypted() {
    let (h, root) = unsealed().await;
    let a = wrapped(
        &h,
        &root,
        "POST",
        "/v1/sys/wrapping/wrap",
        Some(json!({"password": "wrapped-value-0xC0FFEE"})),
        "5m",
    )
    .await;
    let wrapping_token = a.json["wrap_info"]["token"].as_str().unwrap().to_string();
    let backend = h.core.backend();
    let keys = backend.keys("", "", 100_000).await.unwrap();
    let needle = wrapping_token.as_bytes();
    let mut found_record = false;
    for key in &keys {
        assert!(!key.contains(&wrapping_token));
        let entry = backend.get(key).await.unwrap().unwrap();
        assert!(!entry.value.windows(needle.len()).any(|w| w == needle));
        assert!(
            !entry
                .value
                .windows(b"0xC0FFEE".len())
                .any(|w| w == b"0xC0FFEE"),
            "{key} holds the wrapped value in the clear"
        );
        found_record |= key.starts_with("sys/wrapping/token/");
    }
    assert!(found_record);
}
