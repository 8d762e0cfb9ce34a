//! Service accounts (R-AUTH-12) through the real router: scopes, read/list
//! only, CIDR allowlists against the real client IP (R-OPS-2), expiry,
//! revocation and last-use recording.

use crate::common::*;
use http::StatusCode;
use serde_json::json;

async fn setup() -> (Harness, String) {
    let (h, root) = unsealed_with(behind_proxy()).await;
    for (path, value) in [
        ("myapp/prod", "prod-secret"),
        ("myapp/dev", "dev-secret"),
        ("other/prod", "other-secret"),
    ] {
        let a = h
            .call(
                "POST",
                &format!("/v1/secret/data/{path}"),
                Some(&root),
                Some(json!({"data": {"KEY": value}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    }
    h.call(
        "POST",
        "/v1/sys/mounts/transit",
        Some(&root),
        Some(json!({"type": "transit"})),
    )
    .await;
    h.call("POST", "/v1/transit/keys/k", Some(&root), None)
        .await;
    (h, root)
}

async fn create(h: &Harness, root: &str, name: &str, body: serde_json::Value) -> String {
    let a = h
        .call(
            "POST",
            &format!("/v1/sys/service-accounts/{name}"),
            Some(root),
            Some(body),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let token = a.json["data"]["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("zafe_sa_"));
    assert!(zafe_core::token::is_well_formed(
        &token,
        zafe_core::token::TokenKind::ServiceAccount
    ));
    token
}

// R-AUTH-12: read and list inside the scope; nothing else, through any API.
#[tokio::test]
async fn service_accounts_read_and_list_only_inside_their_scopes() {
    let (h, root) = setup().await;
    let token = create(
        &h,
        &root,
        "ci",
        json!({"scopes": ["project:myapp", "transit/encrypt/*"]}),
    )
    .await;
    let ip = "198.51.100.7";
    let a = h
        .call_from(ip, "GET", "/v1/secret/data/myapp/prod", Some(&token), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["data"]["KEY"], "prod-secret");
    let a = h
        .call_from(ip, "LIST", "/v1/secret/metadata/myapp", Some(&token), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    for (method, path, body) in [
        ("GET", "/v1/secret/data/other/prod", None),
        (
            "POST",
            "/v1/secret/data/myapp/prod",
            Some(json!({"data": {"KEY": "x"}})),
        ),
        (
            "PATCH",
            "/v1/secret/data/myapp/prod",
            Some(json!({"data": {"KEY": "x"}})),
        ),
        ("DELETE", "/v1/secret/data/myapp/prod", None),
        ("DELETE", "/v1/secret/metadata/myapp/prod", None),
        (
            "POST",
            "/v1/secret/destroy/myapp/prod",
            Some(json!({"versions": [1]})),
        ),
        // A write through a second API, even inside a scope glob.
        (
            "POST",
            "/v1/transit/encrypt/k",
            Some(json!({"plaintext": "aGk="})),
        ),
        ("GET", "/v1/sys/mounts", None),
        ("POST", "/v1/auth/token/create", Some(json!({}))),
        ("GET", "/v1/auth/token/lookup-self", None),
        ("POST", "/v1/sys/service-accounts/ci/token", None),
    ] {
        let a = h.call_from(ip, method, path, Some(&token), body).await;
        assert_eq!(
            a.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            a.json
        );
    }
}

// R-AUTH-12, R-OPS-2: the allowlist is checked against the real client
// address; a spoofed leftmost X-Forwarded-For entry does not help.
#[tokio::test]
async fn the_cidr_allowlist_uses_the_real_client_address() {
    let (h, root) = setup().await;
    let token = create(
        &h,
        &root,
        "ci",
        json!({"scopes": ["project:myapp"], "allowed_cidrs": ["10.0.0.0/8"]}),
    )
    .await;
    let ok = h
        .call_from(
            "10.1.2.3",
            "GET",
            "/v1/secret/data/myapp/prod",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    for ip in ["198.51.100.7", "10.1.2.3, 198.51.100.7"] {
        let a = h
            .call_from(ip, "GET", "/v1/secret/data/myapp/prod", Some(&token), None)
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{ip}");
    }
}

#[tokio::test]
async fn expiry_revocation_and_last_use() {
    let (h, root) = setup().await;
    let short = create(
        &h,
        &root,
        "short",
        json!({"scopes": ["project:myapp"], "ttl": "1s"}),
    )
    .await;
    let token = create(
        &h,
        &root,
        "ci",
        json!({"scopes": ["project:myapp"], "description": "deploys"}),
    )
    .await;
    let ip = "198.51.100.7";
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&short), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );

    // Usage is recorded; the token itself never appears in a read.
    let a = h
        .call("GET", "/v1/sys/service-accounts/ci", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.json["data"]["tokens"][0]["last_used_time"].is_string(),
        "{:?}",
        a.json
    );
    assert!(!a.json.to_string().contains(&token));
    let a = h
        .call("LIST", "/v1/sys/service-accounts", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["keys"], json!(["ci", "short"]));

    // A second token; revoking it by accessor leaves the first working.
    let a = h
        .call(
            "POST",
            "/v1/sys/service-accounts/ci/token",
            Some(&root),
            None,
        )
        .await;
    let second = a.json["data"]["token"].as_str().unwrap().to_string();
    let accessor = a.json["data"]["accessor"].as_str().unwrap().to_string();
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&second), None)
            .await
            .status,
        StatusCode::OK
    );
    let a = h
        .call(
            "DELETE",
            &format!("/v1/sys/service-accounts/ci/token/{accessor}"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&second), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );

    // Deleting the account ends every token at once.
    assert_eq!(
        h.call("DELETE", "/v1/sys/service-accounts/ci", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&token), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    h.clock.advance(std::time::Duration::from_millis(2100));
    assert_eq!(
        h.call_from(ip, "GET", "/v1/secret/data/myapp/dev", Some(&short), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn bad_definitions_are_refused_and_only_sudo_manages_accounts() {
    let (h, root) = setup().await;
    for (name, body) in [
        ("Bad%20Name", json!({"scopes": ["project:myapp"]})),
        ("x", json!({})),
        ("x", json!({"scopes": []})),
        ("x", json!({"scopes": ["tag:Prod"]})),
        ("x", json!({"scopes": ["team:prod"]})),
        ("x", json!({"scopes": ["sys/*"]})),
        (
            "x",
            json!({"scopes": ["project:myapp"], "allowed_cidrs": ["not-a-cidr"]}),
        ),
        ("x", json!({"scopes": ["project:myapp"], "ttl": "soon"})),
    ] {
        let a = h
            .call(
                "POST",
                &format!("/v1/sys/service-accounts/{name}"),
                Some(&root),
                Some(body.clone()),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name} {body}");
    }
    create(&h, &root, "dup", json!({"scopes": ["project:myapp"]})).await;
    let a = h
        .call(
            "POST",
            "/v1/sys/service-accounts/dup",
            Some(&root),
            Some(json!({"scopes": ["project:myapp"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    // A non-sudo token cannot create accounts.
    h.call("PUT", "/v1/sys/policy/sa-admin", Some(&root), Some(json!({"policy": "path \"sys/service-accounts/*\" { capabilities = [\"create\", \"update\", \"read\"] }"}))).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["sa-admin"]})),
        )
        .await;
    let admin = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let a = h
        .call(
            "POST",
            "/v1/sys/service-accounts/nope",
            Some(&admin),
            Some(json!({"scopes": ["project:myapp"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}
