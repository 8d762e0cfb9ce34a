//! The system API through the real router: init, unseal, seal, health,
//! identity, the public allowlist, limits and headers.

use crate::common::*;
use http::StatusCode;
use serde_json::json;
use zafe_server::sys::{Access, ROUTES};

#[tokio::test]
async fn init_unseal_seal_cycle_with_five_shares_threshold_three() {
    let h = harness().await;
    let a = h.call("GET", "/v1/sys/init", None, None).await;
    assert_eq!(a.json, json!({ "initialized": false }));
    let (keys, root) = h.init(5, 3).await;
    assert_eq!(keys.len(), 5);
    assert!(root.starts_with("zafe_s_"));

    // Sealed after init, as in Vault; two shares are not enough.
    assert_eq!(h.unseal(&keys[0]).await.json["progress"], 1);
    let a = h.unseal(&keys[3]).await;
    assert_eq!(
        (a.json["sealed"].as_bool(), a.json["progress"].as_u64()),
        (Some(true), Some(2))
    );
    let a = h.unseal(&keys[4]).await;
    assert_eq!(a.json["sealed"], false);
    assert_eq!(a.json["progress"], 0);

    // Seal needs the root token; then the same shares unseal again.
    assert_eq!(
        h.call("PUT", "/v1/sys/seal", None, None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call("PUT", "/v1/sys/seal", Some("zafe_s_wrong"), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call("PUT", "/v1/sys/seal", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(h.core.is_sealed());
    // While sealed, the root token is worthless: the 503 says sealed.
    assert_eq!(
        h.call("PUT", "/v1/sys/seal", Some(&root), None)
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for k in &keys[1..4] {
        h.unseal(k).await;
    }
    assert!(!h.core.is_sealed());
}

// A wrong or malformed share is refused with 400, keeps the progress, and
// never wedges unsealing; reset clears progress (lessons.md).
#[tokio::test]
async fn bad_shares_never_wedge_unsealing() {
    let h = harness().await;
    let (keys, _) = h.init(5, 3).await;
    h.unseal(&keys[0]).await;
    let mut wrong = hex::decode(&keys[1]).unwrap();
    wrong[9] ^= 0xff;
    for bad in [
        hex::encode(&wrong),
        "zz".into(),
        "".into(),
        "00".repeat(33),
        "ab".repeat(2000),
    ] {
        let a = h.unseal(&bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(a.json["errors"][0].as_str().unwrap().contains("key"));
    }
    let a = h.call("PUT", "/v1/sys/unseal", None, Some(json!({}))).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h.call("GET", "/v1/sys/seal-status", None, None).await;
    assert_eq!(a.json["progress"], 1);
    // Reset, then three good shares still unseal.
    let a = h
        .call("PUT", "/v1/sys/unseal", None, Some(json!({"reset": true})))
        .await;
    assert_eq!(a.json["progress"], 0);
    for k in &keys[2..5] {
        h.unseal(k).await;
    }
    assert!(!h.core.is_sealed());
}

#[tokio::test]
async fn shares_in_base64_work_too() {
    let h = harness().await;
    let a = h
        .call(
            "PUT",
            "/v1/sys/init",
            None,
            Some(json!({"secret_shares": 3, "secret_threshold": 2})),
        )
        .await;
    let b64 = a.json["keys_base64"].as_array().unwrap();
    h.unseal(b64[0].as_str().unwrap()).await;
    h.unseal(b64[2].as_str().unwrap()).await;
    assert!(!h.core.is_sealed());
}

#[tokio::test]
async fn init_is_validated_and_happens_once() {
    let h = harness().await;
    for body in [
        json!({"secret_shares": 3, "secret_threshold": 1}),
        json!({"secret_shares": 0, "secret_threshold": 0}),
        json!({"secret_shares": 2, "secret_threshold": 3}),
        json!({"secret_shares": "5", "secret_threshold": 3}),
        json!({"secret_shares": 300, "secret_threshold": 3}),
        json!({}),
        json!({"secret_shares": 1, "secret_threshold": 1, "pgp_keys": ["x"]}),
    ] {
        let a = h
            .call("PUT", "/v1/sys/init", None, Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
    }
    assert_eq!(
        h.call("GET", "/v1/sys/init", None, None).await.json["initialized"],
        false
    );
    h.init(1, 1).await;
    let a = h
        .call(
            "PUT",
            "/v1/sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["errors"][0], "Zafe is already initialized");
}

// Vault clients (vaultrs) fail on a missing field, so every field is there
// in every state, with Vault's status codes.
#[tokio::test]
async fn health_has_every_field_and_vault_status_codes() {
    let h = harness().await;
    let fields = [
        "initialized",
        "sealed",
        "standby",
        "performance_standby",
        "replication_performance_mode",
        "replication_dr_mode",
        "server_time_utc",
        "version",
        "cluster_name",
        "cluster_id",
    ];
    let a = h.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(a.status, StatusCode::NOT_IMPLEMENTED);
    for f in fields {
        assert!(a.json.get(f).is_some(), "uninitialised health lacks {f}");
    }
    let (keys, _) = h.init(1, 1).await;
    let a = h.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        h.call("GET", "/v1/sys/health?sealedcode=200", None, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.call("GET", "/v1/sys/health?sealedcode=abc", None, None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    h.unseal(&keys[0]).await;
    let a = h.call("GET", "/v1/sys/health", None, None).await;
    assert_eq!(a.status, StatusCode::OK);
    for f in fields {
        assert!(a.json.get(f).is_some(), "healthy health lacks {f}");
    }
    assert!(a.json["cluster_id"].as_str().unwrap().len() == 36);
    let head = h.call("HEAD", "/v1/sys/health", None, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.json, serde_json::Value::Null);
}

// R-AUTH-1: walk the route table. Every route outside the public allowlist
// refuses a request without a token, and a request with a bad token; the
// allowlist is exactly what the requirement names.
#[tokio::test]
async fn only_the_public_allowlist_answers_without_a_token() {
    let (h, _root) = unsealed().await;
    let public: Vec<&str> = ROUTES
        .iter()
        .filter(|r| r.access == Access::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(
        public,
        [
            "sys/init",
            "sys/unseal",
            "sys/seal-status",
            "sys/health",
            "sys/identity",
            "sys/setup",
            "auth/user/login",
            "auth/user/refresh",
            "auth/user/register",
            // Authenticated by the single-use wrapping token they are given, as in Vault.
            "sys/wrapping/unwrap",
            "sys/wrapping/lookup",
            "sys/wrapping/rewrap",
            "auth/oidc/auth_url",
            "auth/oidc/callback",
        ]
    );
    // A well-formed session token that was never issued is no better.
    let forged_session = zafe_core::token::generate(zafe_core::token::TokenKind::Access);
    for route in ROUTES.iter().filter(|r| r.access != Access::Public) {
        for op in ["GET", "PUT", "POST", "DELETE", "LIST", "PATCH"] {
            for token in [
                None,
                Some("zafe_s_not-a-token"),
                Some(""),
                Some("zafe_at_not-a-token"),
                Some(forged_session.as_str()),
            ] {
                let a = h
                    .call(op, &format!("/v1/{}", route.path), token, None)
                    .await;
                assert_eq!(
                    a.status,
                    StatusCode::FORBIDDEN,
                    "{op} {} with {token:?}",
                    route.path
                );
                assert_eq!(a.json, json!({"errors": ["permission denied"]}));
            }
        }
    }
    // Unknown paths look the same as private ones to strangers.
    for path in [
        "/v1/secret/data/x",
        "/v1/sys/nope",
        "/v1/auth/token/lookup-self",
    ] {
        assert_eq!(
            h.call("GET", path, None, None).await.status,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_are_404_for_a_valid_token() {
    let (h, root) = unsealed().await;
    let a = h.call("GET", "/v1/sys/nope", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = h.call("GET", "/v1/sys/seal", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        h.call("GET", "/nothing", None, None).await.status,
        StatusCode::NOT_FOUND
    );
}

// R-OPS-1: oversized bodies get 413 and change nothing.
#[tokio::test]
async fn oversized_bodies_are_refused_before_anything_happens() {
    let config = zafe_server::Config {
        max_body_bytes: Some(1024),
        ..Default::default()
    };
    let h = harness_with(config, None).await;
    let body = json!({"secret_shares": 1, "secret_threshold": 1, "pad": "x".repeat(4096)});
    let a = h.call("PUT", "/v1/sys/init", None, Some(body)).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(a.json["errors"][0].as_str().unwrap().contains("1024"));
    assert_eq!(
        h.call("GET", "/v1/sys/init", None, None).await.json["initialized"],
        false
    );

    // Without a Content-Length (a streamed body), the limit still holds.
    let stream = futures_stream(vec![vec![b' '; 800], vec![b' '; 800]]);
    let req = http::Request::builder()
        .method("PUT")
        .uri("/v1/sys/init")
        .body(axum::body::Body::from_stream(stream))
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::PAYLOAD_TOO_LARGE);
}

fn futures_stream(
    chunks: Vec<Vec<u8>>,
) -> impl futures_util::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures_util::stream::iter(chunks.into_iter().map(Ok))
}

#[tokio::test]
async fn malformed_json_is_a_clear_400() {
    let h = harness().await;
    for body in ["{", "[1,2]", "\"x\"", "{\"secret_shares\": }"] {
        let req = http::Request::builder()
            .method("PUT")
            .uri("/v1/sys/init")
            .body(axum::body::Body::from(body))
            .unwrap();
        let a = h.send(req).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.json["errors"].is_array());
    }
}

// Vault's clients send `null` for a write without data (`vault write -f`, OpenBao Agent asking
// for an AppRole secret-id): it is an empty object, as in Vault.
#[tokio::test]
async fn a_null_body_is_an_empty_object() {
    let (h, root) = unsealed().await;
    let enabled = h
        .call(
            "POST",
            "/v1/sys/mounts/transit",
            Some(&root),
            Some(serde_json::json!({"type": "transit"})),
        )
        .await;
    assert!(enabled.status.is_success(), "{:?}", enabled.json);
    for path in ["/v1/transit/keys/k1", "/v1/transit/keys/k1/rotate"] {
        let req = http::Request::builder()
            .method("POST")
            .uri(path)
            .header("x-vault-token", &root)
            .body(axum::body::Body::from("null"))
            .unwrap();
        let a = h.send(req).await;
        assert!(a.status.is_success(), "{path}: {:?}", a.json);
    }
    let key = h
        .call("GET", "/v1/transit/keys/k1", Some(&root), None)
        .await;
    assert_eq!(key.json["data"]["latest_version"], 2, "{:?}", key.json);
}

// `bao audit list` / hvac's `list_enabled_audit_devices`: Zafe's sinks in Vault's shape (sudo);
// enabling or disabling a device through the API is refused with a message saying where sinks
// are configured.
#[tokio::test]
async fn audit_devices_are_listed_in_vaults_shape() {
    let (h, root) = unsealed().await;
    let listed = h.call("GET", "/v1/sys/audit", Some(&root), None).await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.json);
    assert_eq!(listed.json["data"]["database/"]["type"], "database");
    assert_eq!(
        listed.json["database/"]["path"], "database/",
        "also at the top level"
    );
    let token = token_with(&h, &root, &["default"]).await;
    let refused = h.call("GET", "/v1/sys/audit", Some(&token), None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let enable = h
        .call(
            "PUT",
            "/v1/sys/audit/file",
            Some(&root),
            Some(serde_json::json!({"type": "file", "options": {"file_path": "/tmp/x"}})),
        )
        .await;
    assert_eq!(enable.status, StatusCode::BAD_REQUEST);
    assert!(
        enable.first_error().contains("[audit] file_path"),
        "{:?}",
        enable.json
    );
}

// R-OPS-3 and R-WEB-2: request ids and security headers on every response.
#[tokio::test]
async fn every_response_has_a_request_id_and_security_headers() {
    let h = harness().await;
    for (method, path) in [
        ("GET", "/v1/sys/health"),
        ("GET", "/v1/sys/nope"),
        ("GET", "/x"),
        ("PUT", "/v1/sys/seal"),
    ] {
        let a = h.call(method, path, None, None).await;
        let id = a
            .headers
            .get("x-request-id")
            .expect("request id")
            .to_str()
            .unwrap();
        assert_eq!(id.len(), 36, "{path}");
        assert_eq!(a.headers["cache-control"], "no-store");
        assert_eq!(a.headers["x-content-type-options"], "nosniff");
        assert_eq!(a.headers["x-frame-options"], "DENY");
        assert!(
            a.headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
    // A caller's plain request id is kept; an unsafe one is replaced.
    let req = http::Request::builder()
        .uri("/v1/sys/health")
        .header("x-request-id", "trace-42")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.headers["x-request-id"], "trace-42");
    let req = http::Request::builder()
        .uri("/v1/sys/health")
        .header("x-request-id", "a\"b<c>")
        .body(axum::body::Body::empty())
        .unwrap();
    assert_ne!(h.send(req).await.headers["x-request-id"], "a\"b<c>");
}

// CORS is off unless origins are configured (lessons.md: any-origin CORS on
// an API developers run on localhost).
#[tokio::test]
async fn cors_is_off_by_default_and_exact_when_configured() {
    let h = harness().await;
    let req = http::Request::builder()
        .method("OPTIONS")
        .uri("/v1/sys/health")
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "GET")
        .body(axum::body::Body::empty())
        .unwrap();
    assert!(
        h.send(req)
            .await
            .headers
            .get("access-control-allow-origin")
            .is_none()
    );

    let config = zafe_server::Config {
        cors_origins: vec!["https://app.example".into()],
        ..Default::default()
    };
    let h = harness_with(config, None).await;
    for (origin, allowed) in [
        ("https://app.example", true),
        ("https://evil.example", false),
    ] {
        let req = http::Request::builder()
            .uri("/v1/sys/health")
            .header("origin", origin)
            .body(axum::body::Body::empty())
            .unwrap();
        let a = h.send(req).await;
        assert_eq!(
            a.headers.get("access-control-allow-origin").is_some(),
            allowed,
            "{origin}"
        );
    }
}

// R-ID-2: the identity endpoint signs the caller's nonce; it works while
// sealed and uninitialised.
#[tokio::test]
async fn identity_proofs_sign_the_callers_nonce() {
    let h = harness().await;
    let nonce = [7u8; 32];
    let a = h
        .call(
            "GET",
            &format!("/v1/sys/identity?nonce={}", hex::encode(nonce)),
            None,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let proof: zafe_core::identity::IdentityProof = serde_json::from_value(a.json).unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let v = zafe_core::identity::verify_proof(&proof, &nonce, now, 120, None, false).unwrap();
    assert_eq!(v.server_id, h.core.identity.server_id());
    for bad in [
        "",
        "?nonce=",
        "?nonce=abcd",
        "?nonce=zz",
        &format!("?nonce={}", "00".repeat(65)),
    ] {
        let a = h
            .call("GET", &format!("/v1/sys/identity{bad}"), None, None)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

// With a master key, init leaves the server unsealed and a restart of the
// core unseals itself.
#[tokio::test]
async fn master_key_mode_stays_unsealed_after_init() {
    let h = harness_with(
        Default::default(),
        Some(zafe_core::secret::SecretKey::generate()),
    )
    .await;
    let (_, root) = h.init(1, 1).await;
    assert!(!h.core.is_sealed());
    let a = h.call("PUT", "/v1/sys/seal", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    h.core.unseal_with_master_key().await.unwrap();
    assert!(!h.core.is_sealed());
}

// Sealing forgets everything unsealed at once: the token key, the password
// pepper, the router (and with it every engine), compiled ACLs and a rekey
// in progress. After unsealing again, all of it is rebuilt from storage.
#[tokio::test]
async fn sealing_forgets_every_unsealed_thing_at_once() {
    let h = harness().await;
    let (keys, root) = h.init(1, 1).await;
    h.unseal(&keys[0]).await;
    let put = h
        .call(
            "POST",
            "/v1/secret/data/app",
            Some(&root),
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.json);
    let started = h
        .call(
            "PUT",
            "/v1/sys/rekey/init",
            Some(&root),
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.json);
    assert!(h.core.token_key().is_ok() && h.core.password_pepper().is_ok());

    h.core.close();
    assert!(h.core.token_key().is_err());
    assert!(h.core.password_pepper().is_err());
    assert!(h.core.router().await.is_err());

    h.unseal(&keys[0]).await;
    let read = h
        .call("GET", "/v1/secret/data/app", Some(&root), None)
        .await;
    assert_eq!(read.json["data"]["data"]["k"], "v", "{:?}", read.json);
    // The rekey that was in progress did not survive the seal.
    let status = h.call("GET", "/v1/sys/rekey/init", Some(&root), None).await;
    assert_eq!(status.json["started"], false, "{:?}", status.json);
}
