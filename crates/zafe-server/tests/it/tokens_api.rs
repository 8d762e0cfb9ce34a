//! The token store through the real router (R-AUTH-5, R-AUTH-10, R-ACL-1):
//! create, lookup, renew and revoke in all their forms, the subset rule,
//! subtrees, orphans, use counts, expiry, accessors, roles and CIDR binding.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};

async fn create(h: &Harness, token: &str, body: Value) -> Answer {
    h.call("POST", "/v1/auth/token/create", Some(token), Some(body))
        .await
}

/// Creates a token and returns (token, accessor).
async fn new_token(h: &Harness, parent: &str, body: Value) -> (String, String) {
    let a = create(h, parent, body).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    (
        a.json["auth"]["client_token"].as_str().unwrap().to_string(),
        a.json["auth"]["accessor"].as_str().unwrap().to_string(),
    )
}

async fn lookup_self(h: &Harness, token: &str) -> Answer {
    h.call("GET", "/v1/auth/token/lookup-self", Some(token), None)
        .await
}

/// A policy that may create child tokens (update on the create paths, as
/// Vault's own examples grant) and look tokens up.
const CREATOR: &str = r#"
path "auth/token/create" { capabilities = ["update"] }
path "auth/token/create-orphan" { capabilities = ["update"] }
path "auth/token/revoke-orphan" { capabilities = ["update"] }
path "auth/token/accessors" { capabilities = ["list"] }
"#;

// R-AUTH-10, R-AUTH-14: Vault's response shapes, the zafe_s_ format, display names.
#[tokio::test]
async fn create_and_lookup_have_vaults_shapes() {
    let (h, root) = unsealed().await;
    let a = create(
        &h,
        &root,
        json!({"policies": ["a"], "ttl": "1h", "meta": {"team": "ops"}, "display_name": "My App", "num_uses": 5}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let auth = &a.json["auth"];
    let token = auth["client_token"].as_str().unwrap().to_string();
    assert!(
        zafe_core::token::is_well_formed(&token, zafe_core::token::TokenKind::Service),
        "{token}"
    );
    for field in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(a.json.get(field).is_some(), "envelope misses {field}");
    }
    assert_eq!(auth["policies"], json!(["a", "default"]));
    assert_eq!(auth["token_policies"], json!(["a", "default"]));
    assert_eq!(auth["metadata"], json!({"team": "ops"}));
    assert_eq!(auth["lease_duration"], 3600);
    assert_eq!(auth["renewable"], true);
    assert_eq!(auth["entity_id"], "");
    assert_eq!(auth["token_type"], "service");
    assert_eq!(auth["orphan"], false);
    assert_eq!(auth["num_uses"], 5);
    let accessor = auth["accessor"].as_str().unwrap().to_string();

    // lookup (by root) shows the token as `id`: the caller gave it.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup",
            Some(&root),
            Some(json!({ "token": token })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let d = &a.json["data"];
    assert_eq!(d["id"], token.as_str());
    assert_eq!(d["accessor"], accessor.as_str());
    assert_eq!(d["display_name"], "token-My-App");
    assert_eq!(d["path"], "auth/token/create");
    assert_eq!(d["policies"], json!(["a", "default"]));
    assert_eq!(d["meta"], json!({"team": "ops"}));
    assert_eq!(d["orphan"], false);
    assert_eq!(d["type"], "service");
    assert_eq!(d["entity_id"], "");
    assert_eq!(d["creation_ttl"], 3600);
    assert_eq!(d["explicit_max_ttl"], 0);
    assert_eq!(
        d["num_uses"], 5,
        "a lookup by someone else does not use the token"
    );
    assert!(d["ttl"].as_i64().unwrap() > 3590);
    assert!(d["expire_time"].as_str().unwrap().ends_with('Z'));
    assert!(d["issue_time"].is_string() && d["creation_time"].is_i64());

    // lookup-accessor never carries the token.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(&root),
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["id"], "");
    assert!(!a.json.to_string().contains(&token));

    // The root token itself: orphan, no expiry, not renewable.
    let a = lookup_self(&h, &root).await;
    assert_eq!(a.json["data"]["policies"], json!(["root"]));
    assert_eq!(a.json["data"]["orphan"], true);
    assert_eq!(a.json["data"]["expire_time"], Value::Null);
    assert_eq!(a.json["data"]["ttl"], 0);
    assert_eq!(a.json["data"]["id"], root.as_str());

    // Root creating a token without a TTL gets the 32-day default; with root policy, no expiry.
    let a = create(&h, &root, json!({"policies": ["a"]})).await;
    assert_eq!(a.json["auth"]["lease_duration"], 32 * 24 * 3600);
    let a = create(&h, &root, json!({})).await;
    assert_eq!(a.json["auth"]["policies"], json!(["root"]));
    assert_eq!(a.json["auth"]["lease_duration"], 0);
    let a = create(
        &h,
        &root,
        json!({"policies": ["x"], "no_default_policy": true}),
    )
    .await;
    assert_eq!(a.json["auth"]["policies"], json!(["x"]));
    // create-orphan by root.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create-orphan",
            Some(&root),
            Some(json!({"policies": ["a"]})),
        )
        .await;
    assert_eq!(a.json["auth"]["orphan"], true);
    // Unknown parameters are ignored with Vault's warning.
    let a = create(&h, &root, json!({"policies": ["a"], "zzz": 1})).await;
    assert_eq!(
        a.json["warnings"],
        json!(["Endpoint ignored these unrecognized parameters: [zzz]"])
    );
    // R-AUTH-10: the root token can be revoked.
    let a = h
        .call("POST", "/v1/auth/token/revoke-self", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(lookup_self(&h, &root).await.status, StatusCode::FORBIDDEN);
}

// R-AUTH-10, lessons.md "Child tokens could be created with any policy, including root".
#[tokio::test]
async fn child_policies_must_be_a_subset_of_the_parent_and_never_root() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (parent, _) = new_token(
        &h,
        &root,
        json!({"policies": ["creator", "a"], "ttl": "1h"}),
    )
    .await;

    let a = create(&h, &parent, json!({"policies": ["a"]})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["auth"]["policies"], json!(["a", "default"]));
    assert_eq!(a.json["auth"]["orphan"], false);
    // No policies: the parent's.
    let a = create(&h, &parent, json!({})).await;
    assert_eq!(
        a.json["auth"]["policies"],
        json!(["a", "creator", "default"])
    );

    for bad in [
        json!(["b"]),
        json!(["root"]),
        json!(["a", "root"]),
        json!("a,b"),
        json!(["ROOT"]),
    ] {
        let a = create(&h, &parent, json!({ "policies": bad })).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", a.json);
        assert_eq!(
            a.json["errors"][0],
            "child policies must be subset of parent"
        );
    }
    // create-orphan needs only the path's policy, as in Vault, but the subset rule still holds.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create-orphan",
            Some(&parent),
            Some(json!({"policies": ["a"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["auth"]["orphan"], true);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create-orphan",
            Some(&parent),
            Some(json!({"policies": ["root"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // no_parent and periodic tokens need sudo.
    let a = create(&h, &parent, json!({"no_parent": true})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json["errors"][0],
        "root or sudo privileges required to create orphan token"
    );
    let a = create(&h, &parent, json!({"period": "1h"})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // A child's TTL never exceeds its parent's remaining lifetime.
    let a = create(&h, &parent, json!({"policies": ["a"], "ttl": "3h"})).await;
    assert!(
        a.json["auth"]["lease_duration"].as_i64().unwrap() <= 3600,
        "{:?}",
        a.json
    );
    assert!(a.json["warnings"][0].as_str().unwrap().contains("parent"));
    // A token without the creator policy cannot create at all.
    let (plain, _) = new_token(&h, &root, json!({"policies": ["a"]})).await;
    assert_eq!(
        create(&h, &plain, json!({"policies": ["a"]})).await.status,
        StatusCode::FORBIDDEN
    );
}

// R-ACL-1: sudo on the path allows orphans, periodic tokens and listing accessors.
#[tokio::test]
async fn sudo_allows_orphans_periodic_tokens_and_accessor_listing() {
    let (h, root) = unsealed().await;
    write_policy(
        &h,
        &root,
        "admin",
        r#"path "auth/token/create" { capabilities = ["update", "sudo"] }
           path "auth/token/accessors" { capabilities = ["list", "sudo"] }"#,
    )
    .await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (admin, _) = new_token(&h, &root, json!({"policies": ["admin"]})).await;
    let a = create(
        &h,
        &admin,
        json!({"no_parent": true, "policies": ["admin"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["auth"]["orphan"], true);
    let a = create(&h, &admin, json!({"period": "10m", "policies": ["admin"]})).await;
    assert_eq!(a.json["auth"]["lease_duration"], 600);
    // Even sudo does not lift the subset rule.
    assert_eq!(
        create(&h, &admin, json!({"policies": ["root"]}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        create(&h, &admin, json!({"policies": ["other"]}))
            .await
            .status,
        StatusCode::BAD_REQUEST
    );

    let a = h
        .call("LIST", "/v1/auth/token/accessors", Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert!(a.json["data"]["keys"].as_array().unwrap().len() >= 3);
    // list without sudo: 403.
    let (creator, _) = new_token(&h, &root, json!({"policies": ["creator"]})).await;
    assert_eq!(
        h.call("LIST", "/v1/auth/token/accessors", Some(&creator), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Page sizes are clamped and bad ones refused (R-ACL-3).
    let a = h
        .call(
            "LIST",
            "/v1/auth/token/accessors?limit=1",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(a.json["data"]["keys"].as_array().unwrap().len(), 1);
    assert!(a.json["data"]["next_after"].is_string());
    assert_eq!(
        h.call(
            "LIST",
            "/v1/auth/token/accessors?limit=x",
            Some(&root),
            None
        )
        .await
        .status,
        StatusCode::BAD_REQUEST
    );
}

// R-AUTH-10: "child tokens die with their parent", the whole subtree.
#[tokio::test]
async fn revoking_a_token_revokes_its_whole_subtree() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (a, _) = new_token(&h, &root, json!({"policies": ["creator"]})).await;
    let (b, _) = new_token(&h, &a, json!({})).await;
    let (c, _) = new_token(&h, &b, json!({})).await;
    let (c2, _) = new_token(&h, &b, json!({})).await;
    let (sibling, _) = new_token(&h, &a, json!({})).await;
    for t in [&a, &b, &c, &c2, &sibling] {
        assert_eq!(lookup_self(&h, t).await.status, StatusCode::OK);
    }
    // revoke-self on b: b, c and c2 go; a and sibling stay.
    assert_eq!(
        h.call("POST", "/v1/auth/token/revoke-self", Some(&b), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    for t in [&b, &c, &c2] {
        assert_eq!(lookup_self(&h, t).await.status, StatusCode::FORBIDDEN);
    }
    assert_eq!(lookup_self(&h, &a).await.status, StatusCode::OK);
    assert_eq!(lookup_self(&h, &sibling).await.status, StatusCode::OK);
    // A revoked token cannot create children any more.
    assert_eq!(
        create(&h, &b, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    // revoke by root: a and what is left under it.
    let r = h
        .call(
            "POST",
            "/v1/auth/token/revoke",
            Some(&root),
            Some(json!({ "token": a })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(lookup_self(&h, &a).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        lookup_self(&h, &sibling).await.status,
        StatusCode::FORBIDDEN
    );
    // Revoking an unknown token is not an error; a missing one is.
    let r = h
        .call(
            "POST",
            "/v1/auth/token/revoke",
            Some(&root),
            Some(json!({ "token": "zafe_s_nope" })),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = h
        .call(
            "POST",
            "/v1/auth/token/revoke",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Nothing of them is left in storage: only the root token's rows.
    let rows = h
        .core
        .backend()
        .keys("sys/token/", "sys/token/", 1000)
        .await
        .unwrap();
    assert_eq!(
        rows.iter()
            .filter(|k| k.starts_with("sys/token/id/"))
            .count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|k| k.starts_with("sys/token/parent/"))
            .count(),
        0,
        "{rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|k| k.starts_with("sys/token/accessor/"))
            .count(),
        1,
        "{rows:?}"
    );
}

// R-AUTH-10: revoke-orphan needs sudo, removes one token and orphans its children.
#[tokio::test]
async fn revoke_orphan_keeps_the_children_as_orphans() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (parent, _) = new_token(&h, &root, json!({"policies": ["creator"]})).await;
    let (child, _) = new_token(&h, &parent, json!({})).await;
    let (grandchild, _) = new_token(&h, &child, json!({})).await;
    assert_eq!(lookup_self(&h, &child).await.json["data"]["orphan"], false);
    // Without sudo: refused, as in Vault.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/revoke-orphan",
            Some(&parent),
            Some(json!({ "token": child })),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json["errors"][0],
        "root or sudo privileges required to revoke and orphan"
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/token/revoke-orphan",
            Some(&root),
            Some(json!({ "token": parent })),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(lookup_self(&h, &parent).await.status, StatusCode::FORBIDDEN);
    let a = lookup_self(&h, &child).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["orphan"], true);
    // The grandchild still belongs to the child.
    assert_eq!(
        lookup_self(&h, &grandchild).await.json["data"]["orphan"],
        false
    );
    h.call(
        "POST",
        "/v1/auth/token/revoke",
        Some(&root),
        Some(json!({ "token": child })),
    )
    .await;
    assert_eq!(
        lookup_self(&h, &grandchild).await.status,
        StatusCode::FORBIDDEN
    );
}

// R-AUTH-10: num_uses is counted on every request; the last use revokes.
#[tokio::test]
async fn use_counts_are_enforced_and_the_last_use_revokes() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (t, accessor) = new_token(&h, &root, json!({"policies": ["creator"], "num_uses": 3})).await;
    assert_eq!(lookup_self(&h, &t).await.json["data"]["num_uses"], 2);
    // A limited-use token cannot create children (this request is a use too).
    let a = create(&h, &t, json!({})).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json["errors"][0],
        "restricted use token cannot generate child tokens"
    );
    assert_eq!(lookup_self(&h, &t).await.json["data"]["num_uses"], 0);
    // Used up: gone, also for its accessor.
    assert_eq!(lookup_self(&h, &t).await.status, StatusCode::FORBIDDEN);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(&root),
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

// R-AUTH-10: concurrent requests each take their own use (compare-and-swap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_uses_are_counted_exactly() {
    let (h, root) = unsealed().await;
    let (t, _) = new_token(&h, &root, json!({"policies": ["default"], "num_uses": 5})).await;
    let h = std::sync::Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (h, t) = (h.clone(), t.clone());
        tasks.push(tokio::spawn(
            async move { lookup_self(&h, &t).await.status },
        ));
    }
    let mut ok = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "exactly num_uses requests succeed");
}

// R-AUTH-10: expired tokens are refused with 403 and removed.
#[tokio::test]
async fn expired_tokens_are_refused_and_removed() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (t, accessor) = new_token(&h, &root, json!({"policies": ["creator"], "ttl": "2s"})).await;
    let (child, _) = new_token(&h, &t, json!({"ttl": "1h"})).await;
    assert_eq!(lookup_self(&h, &t).await.status, StatusCode::OK);
    let child_ttl = lookup_self(&h, &child).await.json["data"]["ttl"]
        .as_i64()
        .unwrap();
    assert!(
        child_ttl <= 2,
        "the child cannot outlive its parent: {child_ttl}"
    );
    h.clock.advance(Duration::from_millis(2200));
    assert_eq!(lookup_self(&h, &t).await.status, StatusCode::FORBIDDEN);
    assert_eq!(lookup_self(&h, &child).await.status, StatusCode::FORBIDDEN);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup",
            Some(&root),
            Some(json!({ "token": t })),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(&root),
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    // Removed from storage, subtree included: only the root's entry is left.
    let rows = h
        .core
        .backend()
        .keys("sys/token/id/", "sys/token/id/", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
}

// R-AUTH-10: renew by increment, capped by explicit_max_ttl; non-renewable tokens refuse.
#[tokio::test]
async fn renewals_respect_their_limits() {
    let (h, root) = unsealed().await;
    let (t, accessor) = new_token(
        &h,
        &root,
        json!({"policies": ["a"], "ttl": 60, "explicit_max_ttl": "2m"}),
    )
    .await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "1h"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let lease = a.json["auth"]["lease_duration"].as_i64().unwrap();
    assert!((118..=120).contains(&lease), "{lease}");
    assert!(
        a.json["warnings"][0].as_str().unwrap().contains("max_ttl"),
        "{:?}",
        a.json
    );
    assert_eq!(a.json["auth"]["client_token"], t.as_str());
    // renew by token, to a shorter TTL.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew",
            Some(&root),
            Some(json!({"token": t, "increment": 30})),
        )
        .await;
    assert_eq!(a.json["auth"]["lease_duration"], 30);
    assert!(
        lookup_self(&h, &t).await.json["data"]["ttl"]
            .as_i64()
            .unwrap()
            <= 30
    );
    // renew by accessor: no token in the answer.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew-accessor",
            Some(&root),
            Some(json!({"accessor": accessor, "increment": 45})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["auth"]["lease_duration"], 45);
    assert_eq!(a.json["auth"]["client_token"], "");
    // Not renewable: refused; root: refused; unknown: refused.
    let (fixed, _) = new_token(
        &h,
        &root,
        json!({"policies": ["a"], "ttl": "1h", "renewable": false}),
    )
    .await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew",
            Some(&root),
            Some(json!({"token": fixed})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("lease is not renewable"))
    );
    let a = h
        .call("POST", "/v1/auth/token/renew-self", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew",
            Some(&root),
            Some(json!({"token": "zafe_s_unknown"})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("token not found"))
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew",
            Some(&root),
            Some(json!({"token": t, "increment": "soon"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

// R-AUTH-10: renewing a parent to an earlier expiry caps its children.
#[tokio::test]
async fn shortening_a_parent_caps_its_children() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (p, _) = new_token(&h, &root, json!({"policies": ["creator"], "ttl": "1h"})).await;
    let (c, _) = new_token(&h, &p, json!({"ttl": "1h"})).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew",
            Some(&root),
            Some(json!({"token": p, "increment": 20})),
        )
        .await;
    assert_eq!(a.json["auth"]["lease_duration"], 20);
    assert!(
        lookup_self(&h, &c).await.json["data"]["ttl"]
            .as_i64()
            .unwrap()
            <= 20
    );
    // And a child cannot renew past its parent.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&c),
            Some(json!({"increment": "1h"})),
        )
        .await;
    assert!(
        a.json["auth"]["lease_duration"].as_i64().unwrap() <= 20,
        "{:?}",
        a.json
    );
}

// R-AUTH-10: accessors look up, renew and revoke without the token.
#[tokio::test]
async fn accessor_operations() {
    let (h, root) = unsealed().await;
    let (t, accessor) = new_token(&h, &root, json!({"policies": ["a"], "ttl": "1h"})).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/revoke-accessor",
            Some(&root),
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(lookup_self(&h, &t).await.status, StatusCode::FORBIDDEN);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(&root),
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid accessor"))
    );
    // Vault: 200 with a warning for an unknown accessor.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/revoke-accessor",
            Some(&root),
            Some(json!({ "accessor": accessor })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json["warnings"],
        json!(["No token found with this accessor"])
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("missing accessor"))
    );
    // Another token's details need a policy: a default-only token gets 403.
    let (other, other_accessor) = new_token(&h, &root, json!({"policies": ["a"]})).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup-accessor",
            Some(&other),
            Some(json!({ "accessor": other_accessor })),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/lookup",
            Some(&other),
            Some(json!({ "token": root })),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

// R-AUTH-10: token roles (CRUD, list) and creating tokens through them.
#[tokio::test]
async fn token_roles() {
    let (h, root) = unsealed().await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/roles/web",
            Some(&root),
            Some(json!({"allowed_policies": ["a", "b"], "disallowed_policies": "c", "orphan": true, "token_period": "1h", "token_explicit_max_ttl": "10h"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = h
        .call("GET", "/v1/auth/token/roles/web", Some(&root), None)
        .await;
    let d = &a.json["data"];
    assert_eq!(d["name"], "web");
    assert_eq!(d["allowed_policies"], json!(["a", "b"]));
    assert_eq!(d["disallowed_policies"], json!(["c"]));
    assert_eq!(
        (d["orphan"].as_bool(), d["renewable"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(
        (
            d["token_period"].as_i64(),
            d["token_explicit_max_ttl"].as_i64()
        ),
        (Some(3600), Some(36000))
    );
    assert_eq!(d["token_type"], "default-service");
    let a = h
        .call("LIST", "/v1/auth/token/roles", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["keys"], json!(["web"]));

    let a = h
        .call(
            "POST",
            "/v1/auth/token/create/web",
            Some(&root),
            Some(json!({"policies": ["a"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["auth"]["policies"], json!(["a", "default"]));
    assert_eq!(a.json["auth"]["orphan"], true);
    assert_eq!(a.json["auth"]["lease_duration"], 3600);
    let t = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let d = lookup_self(&h, &t).await.json["data"].clone();
    assert_eq!(
        (d["role"].as_str(), d["period"].as_i64(), d["path"].as_str()),
        (Some("web"), Some(3600), Some("auth/token/create/web"))
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create/web",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(a.json["auth"]["policies"], json!(["a", "b", "default"]));
    for bad in ["c", "z"] {
        let a = h
            .call(
                "POST",
                "/v1/auth/token/create/web",
                Some(&root),
                Some(json!({"policies": [bad]})),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create/nope",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (a.status, a.json["errors"][0].as_str()),
        (StatusCode::BAD_REQUEST, Some("unknown role nope"))
    );
    // Roles can never hand out root.
    let a = h
        .call(
            "POST",
            "/v1/auth/token/roles/evil",
            Some(&root),
            Some(json!({"allowed_policies": ["root"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call("GET", "/v1/auth/token/roles/evil", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .call(
            "POST",
            "/v1/auth/token/roles/bad%20name",
            Some(&root),
            Some(json!({})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);

    assert_eq!(
        h.call("DELETE", "/v1/auth/token/roles/web", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.call("GET", "/v1/auth/token/roles/web", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("LIST", "/v1/auth/token/roles", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

// R-ACL-1, lessons.md "Read-only service accounts could write through a second API".
#[tokio::test]
async fn a_read_only_token_gets_403_on_writes_and_on_sys() {
    let (h, root) = unsealed().await;
    write_policy(
        &h,
        &root,
        "reader",
        r#"path "secret/data/*" { capabilities = ["read", "list"] }"#,
    )
    .await;
    let (t, _) = new_token(&h, &root, json!({"policies": ["reader"]})).await;
    let a = h
        .call(
            "PUT",
            "/v1/secret/data/app",
            Some(&t),
            Some(json!({"data": {"k": "v"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
    assert_eq!(
        h.call("DELETE", "/v1/secret/data/app", Some(&t), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    for (method, path) in [
        ("GET", "/v1/sys/mounts"),
        ("PUT", "/v1/sys/policy/mine"),
        ("POST", "/v1/sys/auth/approle"),
        ("PUT", "/v1/sys/seal"),
    ] {
        let a = h
            .call(
                method,
                path,
                Some(&t),
                Some(json!({"policy": "", "type": "approle"})),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    assert_eq!(
        create(&h, &t, json!({})).await.status,
        StatusCode::FORBIDDEN
    );
    // Reading is allowed by the policy (the secret does not exist: 404, not 403).
    assert_ne!(
        h.call("GET", "/v1/secret/data/app", Some(&t), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // The built-in default policy lets it look itself up, renew and revoke itself.
    assert_eq!(lookup_self(&h, &t).await.status, StatusCode::OK);
    assert_eq!(
        h.call("POST", "/v1/auth/token/renew-self", Some(&t), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.call("POST", "/v1/auth/token/revoke-self", Some(&t), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(lookup_self(&h, &t).await.status, StatusCode::FORBIDDEN);
}

// Bad input is a clear 400 and creates nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let (h, root) = unsealed().await;
    let before = h
        .core
        .backend()
        .keys("sys/token/", "sys/token/", 1000)
        .await
        .unwrap()
        .len();
    for body in [
        json!({"ttl": "abc"}),
        json!({"ttl": -5}),
        json!({"explicit_max_ttl": [1]}),
        json!({"meta": {"k": 1}}),
        json!({"meta": "not json"}),
        json!({"policies": 5}),
        json!({"policies": ["a/b"]}),
        json!({"num_uses": -1}),
        json!({"num_uses": "many"}),
        json!({"type": "batch"}),
        json!({"id": "my-own-token"}),
        json!({"renewable": "perhaps"}),
        json!({"display_name": {"x": 1}}),
    ] {
        let a = create(&h, &root, body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {:?}", a.json);
        assert!(!a.json["errors"][0].as_str().unwrap().is_empty());
    }
    let after = h
        .core
        .backend()
        .keys("sys/token/", "sys/token/", 1000)
        .await
        .unwrap()
        .len();
    assert_eq!(before, after);
    // Unknown endpoints and methods.
    assert_eq!(
        h.call("POST", "/v1/auth/token/nope", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.call("DELETE", "/v1/auth/token/create", Some(&root), None)
            .await
            .status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    // Strangers learn nothing.
    assert_eq!(
        h.call("POST", "/v1/auth/token/create", None, Some(json!({})))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call(
            "GET",
            "/v1/auth/token/lookup-self",
            Some("zafe_s_forged"),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
}

// R-AUTH-5: neither tokens nor accessors appear in storage keys; values are ciphertext.
#[tokio::test]
async fn tokens_and_accessors_never_reach_storage_in_clear() {
    let (h, root) = unsealed().await;
    let (t, accessor) = new_token(&h, &root, json!({"policies": ["a"]})).await;
    let rows = h.core.backend().keys("", "", 10_000).await.unwrap();
    for key in &rows {
        assert!(
            !key.contains(&t) && !key.contains(&accessor) && !key.contains(&root),
            "{key}"
        );
        let value = h.core.backend().get(key).await.unwrap().unwrap().value;
        for secret in [&t, &root, &accessor] {
            assert!(
                !value.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{key}"
            );
        }
    }
    // Behind the barrier, the entry holds the HMAC, not the token.
    let hash = zafe_server::tokens::hash_of(&h.core.token_key().unwrap(), &t);
    let record = h
        .core
        .barrier
        .get(&format!("sys/token/id/{hash}"))
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&record.value).contains(&t));
}

// R-AUTH-10, R-OPS-2: token_bound_cidrs are checked on every use against the real client address.
#[tokio::test]
async fn bound_tokens_work_only_from_their_networks() {
    let (h, root) = unsealed_with(behind_proxy()).await;
    let a = h
        .call(
            "POST",
            "/v1/auth/token/roles/ci",
            Some(&root),
            Some(json!({"token_bound_cidrs": ["10.0.0.0/8"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create/ci",
            Some(&root),
            Some(json!({"policies": ["a"]})),
        )
        .await;
    let t = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let inside = h
        .call_from(
            "10.1.2.3",
            "GET",
            "/v1/auth/token/lookup-self",
            Some(&t),
            None,
        )
        .await;
    assert_eq!(inside.status, StatusCode::OK, "{:?}", inside.json);
    assert_eq!(inside.json["data"]["bound_cidrs"], json!(["10.0.0.0/8"]));
    assert_eq!(
        h.call_from(
            "192.168.1.1",
            "GET",
            "/v1/auth/token/lookup-self",
            Some(&t),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    // The leftmost X-Forwarded-For entry is the client's to forge: not believed.
    assert_eq!(
        h.call_from(
            "10.1.2.3, 192.168.1.1",
            "GET",
            "/v1/auth/token/lookup-self",
            Some(&t),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        lookup_self(&h, &t).await.status,
        StatusCode::FORBIDDEN,
        "the proxy itself is not in 10/8"
    );
}

// R-AUTH-10: tidy needs sudo, and finishes revocations (and revoke-orphans) cut short by a crash.
#[tokio::test]
async fn tidy_finishes_interrupted_revocations() {
    let (h, root) = unsealed().await;
    write_policy(&h, &root, "creator", CREATOR).await;
    let (t, _) = new_token(&h, &root, json!({"policies": ["a"]})).await;

    let key = h.core.token_key().unwrap();
    let hash = |t: &str| zafe_server::tokens::hash_of(&key, t);
    // A revocation that deleted the parent and crashed before its children.
    let (p1, _) = new_token(&h, &root, json!({"policies": ["creator"]})).await;
    let (c1, _) = new_token(&h, &p1, json!({})).await;
    h.core
        .barrier
        .delete(&format!("sys/token/id/{}", hash(&p1)))
        .await
        .unwrap();
    // A revoke-orphan that did the same.
    let (p2, _) = new_token(&h, &root, json!({"policies": ["creator"]})).await;
    let (c2, _) = new_token(&h, &p2, json!({})).await;
    h.core
        .barrier
        .put(
            &format!("sys/token/orphaning/{}", hash(&p2)),
            b"{}",
            zafe_server::barrier::Expect::Absent,
        )
        .await
        .unwrap();
    h.core
        .barrier
        .delete(&format!("sys/token/id/{}", hash(&p2)))
        .await
        .unwrap();
    // Background tidies (the server's own, and the one the API call below
    // starts) may finish the work before the direct call does, so only the
    // outcomes are checked, never the interrupted state in between.
    assert_eq!(
        h.call("POST", "/v1/auth/token/tidy", Some(&t), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call("POST", "/v1/auth/token/tidy", Some(&root), None)
            .await
            .status,
        StatusCode::ACCEPTED
    );
    zafe_server::tokens::tidy(&h.core.barrier, h.core.now_secs())
        .await
        .unwrap();
    assert_eq!(
        lookup_self(&h, &c1).await.status,
        StatusCode::FORBIDDEN,
        "revocation finished"
    );
    let a = lookup_self(&h, &c2).await;
    assert_eq!(
        (a.status, a.json["data"]["orphan"].as_bool()),
        (StatusCode::OK, Some(true)),
        "orphaning finished"
    );
    let rows = h
        .core
        .backend()
        .keys("sys/token/", "sys/token/", 1000)
        .await
        .unwrap();
    for gone in [hash(&p1), hash(&p2)] {
        assert!(rows.iter().all(|k| !k.contains(&gone)), "{rows:?}");
    }
    assert!(
        rows.iter().all(|k| !k.starts_with("sys/token/orphaning/")),
        "{rows:?}"
    );
}

// R-AUTH-10, R-ACL-1 (issue: a non-root parent got `admin` and 32 days from
// a role). A token role is a grant, as in Vault: whoever may use
// `auth/token/create/<role>` gets exactly the role's allowed policies (never
// others, never root) for no longer than the role's caps; so writing or
// deleting a role needs sudo, and update on `auth/token/roles/*` is not enough.
#[tokio::test]
async fn a_role_grants_exactly_what_it_allows_and_only_sudo_writes_roles() {
    let (h, root) = unsealed().await;
    write_policy(
        &h,
        &root,
        "role-user",
        r#"path "auth/token/create/esc" { capabilities = ["update"] }
           path "auth/token/create/brief" { capabilities = ["update"] }
           path "auth/token/roles/*" { capabilities = ["create", "read", "update", "delete"] }"#,
    )
    .await;
    write_policy(
        &h,
        &root,
        "role-admin",
        r#"path "auth/token/roles/*" { capabilities = ["create", "read", "update", "delete", "sudo"] }"#,
    )
    .await;
    let (user, _) = new_token(&h, &root, json!({"policies": ["role-user"], "ttl": "2h"})).await;
    let (admin, _) = new_token(&h, &root, json!({"policies": ["role-admin"]})).await;
    let role = |token: &str, name: &str, body: Value| {
        let (h, token, path) = (
            &h,
            token.to_string(),
            format!("/v1/auth/token/roles/{name}"),
        );
        async move { h.call("POST", &path, Some(&token), Some(body)).await }
    };

    // Only a sudo holder defines, changes or deletes roles.
    let a = role(
        &user,
        "esc",
        json!({"allowed_policies": ["admin"], "orphan": true}),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
    let a = role(
        &admin,
        "esc",
        json!({"allowed_policies": ["admin", "ops"], "orphan": true, "token_explicit_max_ttl": "1h"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = role(
        &admin,
        "brief",
        json!({"allowed_policies": ["ops"], "token_max_ttl": "10m"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = role(
        &user,
        "esc",
        json!({"allowed_policies": ["admin", "root-ish"]}),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
    let a = h
        .call("DELETE", "/v1/auth/token/roles/esc", Some(&user), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
    let a = h
        .call("GET", "/v1/auth/token/roles/esc", Some(&user), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "reading a role needs no sudo");
    assert_eq!(a.json["data"]["allowed_policies"], json!(["admin", "ops"]));

    // Through the role: exactly its policies, orphan, at most its explicit max.
    let via = |role: &str, body: Value| {
        let (h, user, path) = (&h, user.clone(), format!("/v1/auth/token/create/{role}"));
        async move { h.call("POST", &path, Some(&user), Some(body)).await }
    };
    let a = via("esc", json!({"ttl": "768h"})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        a.json["auth"]["policies"],
        json!(["admin", "default", "ops"])
    );
    assert_eq!(a.json["auth"]["orphan"], true);
    assert_eq!(a.json["auth"]["lease_duration"], 3600);
    let t = a.json["auth"]["client_token"].as_str().unwrap().to_string();
    let a = h
        .call(
            "POST",
            "/v1/auth/token/renew-self",
            Some(&t),
            Some(json!({"increment": "768h"})),
        )
        .await;
    assert!(
        a.json["auth"]["lease_duration"].as_i64().unwrap() <= 3600,
        "renewal past the role's explicit max: {:?}",
        a.json
    );
    let d = lookup_self(&h, &t).await.json["data"].clone();
    assert_eq!(d["explicit_max_ttl"], 3600);
    // A longer explicit max asked for is cut to the role's.
    let a = via("esc", json!({"explicit_max_ttl": "100h"})).await;
    assert_eq!(a.json["auth"]["lease_duration"], 3600, "{:?}", a.json);
    // The role's max TTL caps too.
    let a = via("brief", json!({"ttl": "5h"})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["auth"]["lease_duration"], 600, "{:?}", a.json);
    assert_eq!(a.json["auth"]["policies"], json!(["default", "ops"]));

    // Nothing outside the role's allowed policies, not even the caller's own.
    for bad in [
        json!(["admin", "other"]),
        json!(["role-user"]),
        json!(["root"]),
    ] {
        let a = via("esc", json!({ "policies": bad })).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", a.json);
    }
    // A role the caller has no update on is refused.
    let a = role(&admin, "other", json!({"allowed_policies": ["admin"]})).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    assert_eq!(via("other", json!({})).await.status, StatusCode::FORBIDDEN);
}
