//! R-ACL-1 / R-AUTH-1 through the real router: a table of capability sets
//! against every KV operation, deny winning, and a token confined to one
//! prefix getting 403 everywhere else (including sys/).

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};

/// Writes the policy `name` and returns a new token carrying it.
async fn token_with_policy(h: &Harness, root: &str, name: &str, policy: &str) -> String {
    write_policy(h, root, name, policy).await;
    token_with(h, root, &[name]).await
}

/// One KV operation and the capability Vault requires for it.
struct Op {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    needs: &'static str,
}

fn operations() -> Vec<Op> {
    vec![
        Op {
            name: "create",
            method: "POST",
            path: "/v1/secret/data/app/new",
            body: Some(json!({"data": {"k": "v"}})),
            needs: "create",
        },
        Op {
            name: "update",
            method: "POST",
            path: "/v1/secret/data/app/existing",
            body: Some(json!({"data": {"k": "v2"}})),
            needs: "update",
        },
        Op {
            name: "read",
            method: "GET",
            path: "/v1/secret/data/app/existing",
            body: None,
            needs: "read",
        },
        Op {
            name: "list",
            method: "LIST",
            path: "/v1/secret/metadata/app",
            body: None,
            needs: "list",
        },
        Op {
            name: "delete",
            method: "DELETE",
            path: "/v1/secret/data/app/existing",
            body: None,
            needs: "delete",
        },
    ]
}

// R-ACL-1: for every capability, a policy granting exactly that capability
// (on data/ and metadata/) allows exactly the operations that need it.
#[tokio::test]
async fn each_capability_allows_exactly_its_operations() {
    for granted in ["create", "read", "update", "delete", "list"] {
        let (h, root) = unsealed().await;
        let a = h
            .call(
                "POST",
                "/v1/secret/data/app/existing",
                Some(&root),
                Some(json!({"data": {"k": "v1"}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        let policy = format!(
            "path \"secret/data/app/*\" {{ capabilities = [\"{granted}\"] }}\npath \"secret/metadata/app/*\" {{ capabilities = [\"{granted}\"] }}"
        );
        let token = token_with_policy(&h, &root, &format!("only-{granted}"), &policy).await;
        for op in operations() {
            let a = h
                .call(op.method, op.path, Some(&token), op.body.clone())
                .await;
            let allowed = op.needs == granted;
            if allowed {
                assert!(
                    a.status.is_success(),
                    "{granted}: {} should be allowed, got {} {:?}",
                    op.name,
                    a.status,
                    a.json
                );
            } else {
                assert_eq!(
                    a.status,
                    StatusCode::FORBIDDEN,
                    "{granted}: {} should be denied",
                    op.name
                );
            }
        }
    }
}

// Deny wins over any grant, across policies.
#[tokio::test]
async fn deny_wins() {
    let (h, root) = unsealed().await;
    h.call(
        "POST",
        "/v1/secret/data/app/private/key",
        Some(&root),
        Some(json!({"data": {"k": "v"}})),
    )
    .await;
    h.call(
        "POST",
        "/v1/secret/data/app/public",
        Some(&root),
        Some(json!({"data": {"k": "v"}})),
    )
    .await;
    for (name, policy) in [
        (
            "grant",
            "path \"secret/data/app/*\" { capabilities = [\"read\", \"update\", \"create\"] }",
        ),
        (
            "deny",
            "path \"secret/data/app/private/*\" { capabilities = [\"deny\"] }",
        ),
    ] {
        h.call(
            "PUT",
            &format!("/v1/sys/policy/{name}"),
            Some(&root),
            Some(json!({ "policy": policy })),
        )
        .await;
    }
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["grant", "deny"]})),
        )
        .await;
    let token = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(
        h.call("GET", "/v1/secret/data/app/public", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.call("GET", "/v1/secret/data/app/private/key", Some(&token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let a = h
        .call(
            "POST",
            "/v1/secret/data/app/private/key",
            Some(&token),
            Some(json!({"data": {"x": "y"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

// Issue 3: a token with a read-only policy on secret/data/app/* reads there
// and gets 403 on write, on other paths and on sys/; revoked tokens get 403.
#[tokio::test]
async fn a_read_only_token_stays_in_its_lane() {
    let (h, root) = unsealed().await;
    h.call(
        "POST",
        "/v1/secret/data/app/db",
        Some(&root),
        Some(json!({"data": {"password": "s3cret"}})),
    )
    .await;
    h.call(
        "POST",
        "/v1/secret/data/other/db",
        Some(&root),
        Some(json!({"data": {"password": "other"}})),
    )
    .await;
    let token = token_with_policy(
        &h,
        &root,
        "app-read",
        "path \"secret/data/app/*\" { capabilities = [\"read\"] }",
    )
    .await;

    let a = h
        .call("GET", "/v1/secret/data/app/db", Some(&token), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["data"]["password"], "s3cret");
    for (method, path, body) in [
        (
            "POST",
            "/v1/secret/data/app/db",
            Some(json!({"data": {"password": "x"}})),
        ),
        (
            "PATCH",
            "/v1/secret/data/app/db",
            Some(json!({"data": {"password": "x"}})),
        ),
        ("DELETE", "/v1/secret/data/app/db", None),
        ("GET", "/v1/secret/data/other/db", None),
        ("GET", "/v1/secret/metadata/app/db", None),
        (
            "POST",
            "/v1/secret/destroy/app/db",
            Some(json!({"versions": [1]})),
        ),
        ("GET", "/v1/sys/mounts", None),
        (
            "PUT",
            "/v1/sys/policy/app-read",
            Some(json!({"policy": "path \"*\" { capabilities = [\"sudo\"] }"})),
        ),
        ("PUT", "/v1/sys/seal", None),
        ("PUT", "/v1/sys/rotate", None),
        ("POST", "/v1/sys/mounts/evil", Some(json!({"type": "kv"}))),
        (
            "POST",
            "/v1/auth/token/create",
            Some(json!({"policies": ["root"]})),
        ),
    ] {
        let a = h.call(method, path, Some(&token), body).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            a.json
        );
    }
    // Revoked: 403 even where it was allowed.
    let a = h
        .call("POST", "/v1/auth/token/revoke-self", Some(&token), None)
        .await;
    assert!(a.status.is_success(), "{:?}", a.json);
    assert_eq!(
        h.call("GET", "/v1/secret/data/app/db", Some(&token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

// An expired token gets 403.
#[tokio::test]
async fn an_expired_token_is_refused() {
    let (h, root) = unsealed().await;
    h.call(
        "POST",
        "/v1/secret/data/app/db",
        Some(&root),
        Some(json!({"data": {"k": "v"}})),
    )
    .await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["default"], "ttl": "1s"})),
        )
        .await;
    let token = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    assert_eq!(
        h.call("GET", "/v1/auth/token/lookup-self", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
    h.clock.advance(std::time::Duration::from_millis(2100));
    assert_eq!(
        h.call("GET", "/v1/auth/token/lookup-self", Some(&token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}
