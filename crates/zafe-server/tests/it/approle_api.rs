//! AppRole through the real router (R-AUTH-11, R-AUTH-5, R-OPS-2): roles,
//! role ids, secret ids (generated, custom, looked up, destroyed), login,
//! use counts, TTLs, CIDR binding and indistinguishable failures.

use std::time::{Duration, Instant};

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};
use zafe_server::Config;

async fn with_approle(config: Config) -> (Harness, String) {
    let (h, root) = unsealed_with(config).await;
    let a = h
        .call(
            "POST",
            "/v1/sys/auth/approle",
            Some(&root),
            Some(json!({"type": "approle"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    (h, root)
}

async fn setup() -> (Harness, String) {
    with_approle(Config::default()).await
}

async fn write_role(h: &Harness, root: &str, name: &str, body: Value) {
    let a = h
        .call(
            "POST",
            &format!("/v1/auth/approle/role/{name}"),
            Some(root),
            Some(body),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
}

async fn role_id(h: &Harness, root: &str, name: &str) -> String {
    let a = h
        .call(
            "GET",
            &format!("/v1/auth/approle/role/{name}/role-id"),
            Some(root),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    a.json["data"]["role_id"].as_str().unwrap().to_string()
}

/// Generates a secret id; returns (secret_id, accessor).
async fn secret_id(h: &Harness, root: &str, name: &str, body: Value) -> (String, String) {
    let a = h
        .call(
            "POST",
            &format!("/v1/auth/approle/role/{name}/secret-id"),
            Some(root),
            Some(body),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    (
        a.json["data"]["secret_id"].as_str().unwrap().to_string(),
        a.json["data"]["secret_id_accessor"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

async fn login(h: &Harness, role_id: &str, secret_id: &str) -> Answer {
    h.call(
        "POST",
        "/v1/auth/approle/login",
        None,
        Some(json!({"role_id": role_id, "secret_id": secret_id})),
    )
    .await
}

// R-AUTH-11, R-AUTH-14: the whole flow with OpenBao 2.7's shapes.
#[tokio::test]
async fn role_secret_id_and_login_with_vault_shapes() {
    let (h, root) = setup().await;
    write_role(&h, &root, "app", json!({"token_policies": ["a"], "secret_id_num_uses": 2, "secret_id_ttl": "10m", "token_ttl": "20m", "token_max_ttl": "30m"})).await;
    let a = h
        .call("GET", "/v1/auth/approle/role/app", Some(&root), None)
        .await;
    let expected = json!({
        "bind_secret_id": true, "local_secret_ids": false, "secret_id_bound_cidrs": null, "secret_id_num_uses": 2,
        "secret_id_ttl": 600, "token_bound_cidrs": [], "token_explicit_max_ttl": 0, "token_max_ttl": 1800,
        "token_no_default_policy": false, "token_num_uses": 0, "token_period": 0, "token_policies": ["a"],
        "token_strictly_bind_ip": false, "token_ttl": 1200, "token_type": "default"
    });
    assert_eq!(a.json["data"], expected);
    let a = h
        .call("LIST", "/v1/auth/approle/role", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["keys"], json!(["app"]));

    let rid = role_id(&h, &root, "app").await;
    assert!(uuid::Uuid::parse_str(&rid).is_ok(), "{rid}");
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id",
            Some(&root),
            Some(json!({"metadata": "{\"host\":\"web1\"}"})),
        )
        .await;
    let d = &a.json["data"];
    let sid = d["secret_id"].as_str().unwrap().to_string();
    assert!(
        zafe_core::token::is_well_formed(&sid, zafe_core::token::TokenKind::SecretId),
        "{sid}"
    );
    assert_eq!(
        (
            d["secret_id_num_uses"].as_u64(),
            d["secret_id_ttl"].as_u64()
        ),
        (Some(2), Some(600))
    );
    assert!(d["secret_id_accessor"].is_string());

    let a = login(&h, &rid, &sid).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let auth = &a.json["auth"];
    assert_eq!(auth["policies"], json!(["a", "default"]));
    assert_eq!(auth["token_policies"], json!(["a", "default"]));
    assert_eq!(
        auth["metadata"],
        json!({"role_name": "app", "host": "web1"})
    );
    assert_eq!(auth["lease_duration"], 1200);
    assert_eq!(
        (auth["renewable"].as_bool(), auth["orphan"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(auth["token_type"], "service");
    let token = auth["client_token"].as_str().unwrap();
    let a = h
        .call("GET", "/v1/auth/token/lookup-self", Some(token), None)
        .await;
    let d = &a.json["data"];
    assert_eq!(
        (d["path"].as_str(), d["display_name"].as_str()),
        (Some("auth/approle/login"), Some("approle"))
    );
    // The token cannot outlive token_max_ttl.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(token),
            Some(json!({"increment": "2h"})),
        )
        .await;
    assert!(
        a.json["auth"]["lease_duration"].as_i64().unwrap() <= 1800,
        "{:?}",
        a.json
    );

    // Only login is public.
    for (method, path) in [
        ("GET", "/v1/auth/approle/role/app"),
        ("GET", "/v1/auth/approle/role/app/role-id"),
        ("POST", "/v1/auth/approle/role/app/secret-id"),
        ("LIST", "/v1/auth/approle/role"),
    ] {
        assert_eq!(
            h.call(method, path, None, None).await.status,
            StatusCode::FORBIDDEN,
            "{method} {path}"
        );
    }
    // The role-id is not in the role's own read.
    assert!(
        !h.call("GET", "/v1/auth/approle/role/app", Some(&root), None)
            .await
            .json
            .to_string()
            .contains(&rid)
    );
}

// R-AUTH-11, R-AUTH-5: a wrong role id and a wrong secret id are the same answer, in similar time.
#[tokio::test]
async fn wrong_role_id_and_wrong_secret_id_look_the_same() {
    let (h, root) = setup().await;
    write_role(&h, &root, "app", json!({"token_policies": ["a"]})).await;
    let rid = role_id(&h, &root, "app").await;
    let (sid, _) = secret_id(&h, &root, "app", json!({})).await;
    let wrong_role = login(&h, "00000000-1111-2222-3333-444444444444", &sid).await;
    let wrong_secret = login(&h, &rid, "zafe_sid_wrong").await;
    let empty_secret = login(&h, &rid, "").await;
    for a in [&wrong_role, &wrong_secret, &empty_secret] {
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_eq!(a.json, json!({"errors": ["invalid role or secret ID"]}));
    }
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(json!({"secret_id": sid})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing role_id"))
    );

    // Timing: interleaved, medians within a factor of 1.5 of each other.
    let (mut t_role, mut t_secret) = (Vec::new(), Vec::new());
    for _ in 0..150 {
        let start = Instant::now();
        login(&h, "00000000-1111-2222-3333-444444444444", &sid).await;
        t_role.push(start.elapsed());
        let start = Instant::now();
        login(&h, &rid, "zafe_sid_wrong").await;
        t_secret.push(start.elapsed());
    }
    t_role.sort();
    t_secret.sort();
    let (a, b) = (t_role[75].as_secs_f64(), t_secret[75].as_secs_f64());
    let ratio = a.max(b) / a.min(b);
    assert!(
        ratio < 1.5,
        "median wrong-role {a:.6}s vs wrong-secret {b:.6}s"
    );
    // The real secret id still works afterwards (failed logins use nothing).
    assert_eq!(login(&h, &rid, &sid).await.status, StatusCode::OK);
}

// R-AUTH-11: secret_id_num_uses, also under concurrent logins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn secret_id_use_counts_are_enforced() {
    let (h, root) = setup().await;
    write_role(
        &h,
        &root,
        "app",
        json!({"token_policies": "a", "secret_id_num_uses": 2}),
    )
    .await;
    let rid = role_id(&h, &root, "app").await;
    let (sid, accessor) = secret_id(&h, &root, "app", json!({})).await;
    assert_eq!(login(&h, &rid, &sid).await.status, StatusCode::OK);
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id-accessor/lookup",
            Some(&root),
            Some(json!({"secret_id_accessor": accessor})),
        )
        .await;
    assert_eq!(a.json["data"]["secret_id_num_uses"], 1);
    assert_eq!(login(&h, &rid, &sid).await.status, StatusCode::OK);
    assert_eq!(login(&h, &rid, &sid).await.status, StatusCode::BAD_REQUEST);
    // Used up: gone with its accessor.
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id-accessor/lookup",
            Some(&root),
            Some(json!({"secret_id_accessor": accessor})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // A secret id may ask for fewer uses, never more, than the role allows.
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id",
            Some(&root),
            Some(json!({"num_uses": 5})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id",
            Some(&root),
            Some(json!({"num_uses": 0})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    write_role(&h, &root, "app", json!({"secret_id_num_uses": 3})).await;
    let (sid, _) = secret_id(&h, &root, "app", json!({})).await;
    let h = std::sync::Arc::new(h);
    let tasks: Vec<_> = (0..12)
        .map(|_| {
            let (h, rid, sid) = (h.clone(), rid.clone(), sid.clone());
            tokio::spawn(async move { login(&h, &rid, &sid).await.status })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 3, "exactly secret_id_num_uses logins succeed");
}

// R-AUTH-11: secret_id_ttl.
#[tokio::test]
async fn secret_ids_expire() {
    let (h, root) = setup().await;
    write_role(
        &h,
        &root,
        "app",
        json!({"token_policies": ["a"], "secret_id_ttl": "1s"}),
    )
    .await;
    let rid = role_id(&h, &root, "app").await;
    let (sid, _) = secret_id(&h, &root, "app", json!({})).await;
    let (sid2, _) = secret_id(&h, &root, "app", json!({})).await;
    assert_eq!(login(&h, &rid, &sid2).await.status, StatusCode::OK);
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id/lookup",
            Some(&root),
            Some(json!({"secret_id": sid})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.json["data"]["expiration_time"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    h.clock.advance(Duration::from_millis(1300));
    let a = login(&h, &rid, &sid).await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid role or secret ID"))
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id/lookup",
            Some(&root),
            Some(json!({"secret_id": sid})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    // A longer TTL than the role's is refused.
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id",
            Some(&root),
            Some(json!({"ttl": "1h"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// An AppRole login from `client` (through the trusted proxy).
async fn login_from(h: &Harness, body: Value, client: &str) -> Answer {
    h.call_from(client, "POST", "/v1/auth/approle/login", None, Some(body))
        .await
}

/// The status of `lookup-self` with `token` from `client`.
async fn lookup_self_from(h: &Harness, token: &str, client: &str) -> StatusCode {
    h.call_from(
        client,
        "GET",
        "/v1/auth/token/lookup-self",
        Some(token),
        None,
    )
    .await
    .status
}

// R-AUTH-11, R-OPS-2: CIDR binding against the real client address, at login and on token use.
#[tokio::test]
async fn cidr_bindings_use_the_real_client_address() {
    let config = Config {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Config::default()
    };
    let (h, root) = with_approle(config).await;
    write_role(&h, &root, "ci", json!({"token_policies": ["a"], "secret_id_bound_cidrs": "10.0.0.0/8", "token_bound_cidrs": ["10.0.0.0/8"]})).await;
    let a = h
        .call("GET", "/v1/auth/approle/role/ci", Some(&root), None)
        .await;
    assert_eq!(
        a.json["data"]["secret_id_bound_cidrs"],
        json!(["10.0.0.0/8"])
    );
    let rid = role_id(&h, &root, "ci").await;
    let (sid, _) = secret_id(&h, &root, "ci", json!({})).await;
    let body = json!({"role_id": rid, "secret_id": sid});

    let denied = login_from(&h, body.clone(), "192.168.0.9").await;
    assert_eq!(denied.status, StatusCode::BAD_REQUEST);
    assert!(
        denied.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("unauthorized by CIDR"),
        "{:?}",
        denied.json
    );
    // The leftmost hop is the client's own claim and is not believed.
    assert_eq!(
        login_from(&h, body.clone(), "10.1.1.1, 192.168.0.9")
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    // Directly from the proxy address (not in 10/8): denied.
    assert_eq!(login(&h, &rid, &sid).await.status, StatusCode::BAD_REQUEST);
    let ok = login_from(&h, body.clone(), "10.1.1.1").await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.json);
    let token = ok.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    // token_bound_cidrs on every later use.
    assert_eq!(
        lookup_self_from(&h, &token, "10.200.0.1").await,
        StatusCode::OK
    );
    assert_eq!(
        lookup_self_from(&h, &token, "172.16.0.1").await,
        StatusCode::FORBIDDEN
    );

    // A secret id's own cidr_list must lie within the role's, and narrows it.
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/ci/secret-id",
            Some(&root),
            Some(json!({"cidr_list": "192.168.0.0/24"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let (narrow, _) = secret_id(&h, &root, "ci", json!({"cidr_list": ["10.5.0.0/16"]})).await;
    let body = json!({"role_id": rid, "secret_id": narrow});
    assert_eq!(
        login_from(&h, body.clone(), "10.6.0.1").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        login_from(&h, body, "10.5.0.1").await.status,
        StatusCode::OK
    );
}

// R-AUTH-11: custom secret ids, lookup, destroy (by value and by accessor), listing.
#[tokio::test]
async fn custom_listed_and_destroyed_secret_ids() {
    let (h, root) = setup().await;
    write_role(&h, &root, "app", json!({"token_policies": ["a"]})).await;
    let rid = role_id(&h, &root, "app").await;
    let custom = "my-own-secret-id-0123456789";
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/custom-secret-id",
            Some(&root),
            Some(json!({"secret_id": custom})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["secret_id"], custom);
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/custom-secret-id",
            Some(&root),
            Some(json!({"secret_id": custom})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (
            StatusCode::BAD_REQUEST,
            Some("SecretID is already registered")
        )
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/custom-secret-id",
            Some(&root),
            Some(json!({"secret_id": "short"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(login(&h, &rid, custom).await.status, StatusCode::OK);

    let (sid, accessor) = secret_id(&h, &root, "app", json!({"metadata": {"k": "v"}})).await;
    let a = h
        .call(
            "LIST",
            "/v1/auth/approle/role/app/secret-id",
            Some(&root),
            None,
        )
        .await;
    let keys = a.json["data"]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&json!(accessor)));
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id/lookup",
            Some(&root),
            Some(json!({"secret_id": sid})),
        )
        .await;
    let d = &a.json["data"];
    assert_eq!(
        (d["secret_id_accessor"].as_str(), d["metadata"].clone()),
        (Some(accessor.as_str()), json!({"k": "v"}))
    );
    assert_eq!(d["expiration_time"], "0001-01-01T00:00:00Z");
    assert!(
        !a.json.to_string().contains(&sid),
        "a lookup never shows the secret id"
    );

    // destroy by value
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id/destroy",
            Some(&root),
            Some(json!({"secret_id": custom})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(
        login(&h, &rid, custom).await.status,
        StatusCode::BAD_REQUEST
    );
    // destroy by accessor
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id-accessor/destroy",
            Some(&root),
            Some(json!({"secret_id_accessor": accessor})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(login(&h, &rid, &sid).await.status, StatusCode::BAD_REQUEST);
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/secret-id-accessor/destroy",
            Some(&root),
            Some(json!({"secret_id_accessor": accessor})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call(
            "LIST",
            "/v1/auth/approle/role/app/secret-id",
            Some(&root),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    // A secret id of one role is worthless for another.
    write_role(&h, &root, "other", json!({"token_policies": ["b"]})).await;
    let (other_sid, _) = secret_id(&h, &root, "other", json!({})).await;
    assert_eq!(
        login(&h, &rid, &other_sid).await.status,
        StatusCode::BAD_REQUEST
    );
}

// R-AUTH-11: custom role ids; they are unique; the old one stops working.
#[tokio::test]
async fn role_ids_can_be_set_and_are_unique() {
    let (h, root) = setup().await;
    write_role(&h, &root, "app", json!({"token_policies": ["a"]})).await;
    write_role(&h, &root, "other", json!({"token_policies": ["b"]})).await;
    let old = role_id(&h, &root, "app").await;
    let (sid, _) = secret_id(&h, &root, "app", json!({})).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app/role-id",
            Some(&root),
            Some(json!({"role_id": "app-role-id"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    assert_eq!(role_id(&h, &root, "app").await, "app-role-id");
    assert_eq!(login(&h, &old, &sid).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(login(&h, "app-role-id", &sid).await.status, StatusCode::OK);
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/other/role-id",
            Some(&root),
            Some(json!({"role_id": "app-role-id"})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("role_id is already in use"))
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/third",
            Some(&root),
            Some(json!({"role_id": "app-role-id", "token_policies": "c"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call("GET", "/v1/auth/approle/role/third", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call(
            "GET",
            "/v1/auth/approle/role/nope/role-id",
            Some(&root),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
}

// R-AUTH-11, R-ACL-4: deleting a role kills its secret ids, also for a new role of the same name.
#[tokio::test]
async fn deleting_a_role_removes_its_secret_ids() {
    let (h, root) = setup().await;
    write_role(&h, &root, "app", json!({"token_policies": ["a"]})).await;
    let (sid, _) = secret_id(&h, &root, "app", json!({})).await;
    assert_eq!(
        h.call("DELETE", "/v1/auth/approle/role/app", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call("GET", "/v1/auth/approle/role/app", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    write_role(
        &h,
        &root,
        "app",
        json!({"token_policies": ["a"], "role_id": "same-again"}),
    )
    .await;
    assert_eq!(
        login(&h, "same-again", &sid).await.status,
        StatusCode::BAD_REQUEST
    );
    // Only the new role's two rows (and the login timing decoy) are left in the mount's storage.
    let auths = h.call("GET", "/v1/sys/auth", Some(&root), None).await;
    let uuid = auths.json["data"]["approle/"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = format!("auth/{uuid}/");
    let rows = h.core.backend().keys(&prefix, &prefix, 100).await.unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(
        rows.iter()
            .all(|r| !r.contains("/secret_id/") && !r.contains("/accessor/")),
        "{rows:?}"
    );
    assert_eq!(
        h.call("DELETE", "/v1/auth/approle/role/app", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call("LIST", "/v1/auth/approle/role", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

// Bad input is a clear 400 and changes nothing; root is never handed out.
#[tokio::test]
async fn bad_role_input_is_refused_and_changes_nothing() {
    let (h, root) = setup().await;
    for body in [
        json!({"secret_id_bound_cidrs": ["notacidr"]}),
        json!({"token_bound_cidrs": "10.0.0.0/33"}),
        json!({"secret_id_ttl": "forever"}),
        json!({"token_policies": ["root"]}),
        json!({"policies": "a,root"}),
        json!({"bind_secret_id": false}),
        json!({"token_ttl": "2h", "token_max_ttl": "1h"}),
        json!({"token_num_uses": -1}),
        json!({"token_type": "batch"}),
        json!({"role_id": ""}),
    ] {
        let a = h
            .call(
                "POST",
                "/v1/auth/approle/role/app",
                Some(&root),
                Some(body.clone()),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {:?}", a.json);
        assert_eq!(
            h.call("GET", "/v1/auth/approle/role/app", Some(&root), None)
                .await
                .status,
            StatusCode::NOT_FOUND,
            "{body}"
        );
    }
    write_role(&h, &root, "app", json!({"token_policies": ["a"]})).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/app",
            Some(&root),
            Some(json!({"token_policies": ["root"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call("GET", "/v1/auth/approle/role/app", Some(&root), None)
            .await
            .json["data"]["token_policies"],
        json!(["a"])
    );
    assert_eq!(
        h.call(
            "POST",
            "/v1/auth/approle/role/a%20b",
            Some(&root),
            Some(json!({}))
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.call(
            "POST",
            "/v1/auth/approle/role/nope/secret-id",
            Some(&root),
            None
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("GET", "/v1/auth/approle/login", None, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // bind_secret_id=false with a CIDR constraint logs in by role id alone, from inside only.
    write_role(&h, &root, "open", json!({"bind_secret_id": false, "secret_id_bound_cidrs": ["127.0.0.1/32"], "token_policies": "a"})).await;
    let rid = role_id(&h, &root, "open").await;
    assert_eq!(
        h.call(
            "POST",
            "/v1/auth/approle/login",
            None,
            Some(json!({"role_id": rid}))
        )
        .await
        .status,
        StatusCode::OK
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/approle/role/open/secret-id",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

// R-AUTH-5: secret ids are stored only as HMACs, even behind the barrier.
#[tokio::test]
async fn secret_ids_are_stored_only_as_hmacs() {
    let (h, root) = setup().await;
    write_role(&h, &root, "app", json!({"token_policies": ["a"]})).await;
    let rid = role_id(&h, &root, "app").await;
    let (sid, accessor) = secret_id(&h, &root, "app", json!({})).await;
    let rows = h.core.backend().keys("", "", 10_000).await.unwrap();
    for key in &rows {
        assert!(
            !key.contains(&sid) && !key.contains(&rid) && !key.contains(&accessor),
            "{key}"
        );
        if key.starts_with("seal/") {
            continue;
        }
        // Decrypted, no record holds the secret id itself.
        let plain = h.core.barrier.get(key).await.unwrap().unwrap();
        assert!(
            !String::from_utf8_lossy(&plain.value).contains(&sid),
            "{key}"
        );
    }
}
