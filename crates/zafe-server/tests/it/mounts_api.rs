//! The mount table through the real router: `sys/mounts`, `sys/auth`,
//! tuning, reserved paths, and data removal on disable.

use crate::common::*;
use http::StatusCode;
use serde_json::json;

#[tokio::test]
async fn a_fresh_server_has_secret_and_the_token_store() {
    let (h, root) = unsealed().await;
    let a = h.call("GET", "/v1/sys/mounts", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["secret/"]["type"], "kv");
    assert_eq!(a.json["data"]["secret/"]["options"]["version"], "2");
    assert_eq!(
        a.json["secret/"]["type"], "kv",
        "Vault repeats mounts at the top level"
    );
    let a = h.call("GET", "/v1/sys/auth", Some(&root), None).await;
    assert_eq!(a.json["data"]["token/"]["type"], "token");
}

// Regression: enabling a mount before anything had loaded the table must
// not drop the default mounts.
#[tokio::test]
async fn the_first_change_keeps_the_defaults() {
    let (h, root) = unsealed().await;
    let a = h
        .call(
            "POST",
            "/v1/sys/mounts/transit",
            Some(&root),
            Some(json!({"type": "transit"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = h.call("GET", "/v1/sys/mounts", Some(&root), None).await;
    assert_eq!(a.json["data"]["secret/"]["type"], "kv");
    assert_eq!(a.json["data"]["transit/"]["type"], "transit");
}

#[tokio::test]
async fn enable_tune_and_disable() {
    let (h, root) = unsealed().await;
    let a = h
        .call(
            "POST",
            "/v1/sys/mounts/team/kv",
            Some(&root),
            Some(json!({"type": "kv-v2", "description": "team secrets"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = h
        .call("GET", "/v1/sys/mounts/team/kv", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["description"], "team secrets");
    let a = h
        .call(
            "POST",
            "/v1/sys/mounts/team/kv/tune",
            Some(&root),
            Some(json!({"max_lease_ttl": "1h", "description": "tuned"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let a = h
        .call("GET", "/v1/sys/mounts/team/kv/tune", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["max_lease_ttl"], 3600);
    assert_eq!(a.json["data"]["description"], "tuned");

    for (path, body) in [
        ("/v1/sys/mounts/team/kv", json!({"type": "kv"})),
        ("/v1/sys/mounts/team", json!({"type": "kv"})),
        ("/v1/sys/mounts/sys", json!({"type": "kv"})),
        (
            "/v1/sys/mounts/x",
            json!({"type": "kv", "options": {"version": "1"}}),
        ),
        ("/v1/sys/mounts/y", json!({"type": "database"})),
        ("/v1/sys/mounts/z", json!({})),
        ("/v1/sys/mounts/w", json!({"type": "approle"})),
        ("/v1/sys/auth/a", json!({"type": "kv"})),
    ] {
        let a = h.call("POST", path, Some(&root), Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path} {body}");
    }

    let a = h
        .call("DELETE", "/v1/sys/mounts/team/kv", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = h.call("GET", "/v1/sys/mounts", Some(&root), None).await;
    assert!(a.json["data"].get("team/kv/").is_none());
    assert_eq!(
        h.call("DELETE", "/v1/sys/auth/token", Some(&root), None)
            .await
            .status,
        StatusCode::BAD_REQUEST,
        "the token store cannot be disabled"
    );
}

#[tokio::test]
async fn disabling_a_mount_removes_its_rows_and_only_its_rows() {
    let (h, root) = unsealed().await;
    h.call(
        "POST",
        "/v1/sys/mounts/gone",
        Some(&root),
        Some(json!({"type": "transit"})),
    )
    .await;
    let uuid = h
        .call("GET", "/v1/sys/mounts/gone", Some(&root), None)
        .await
        .json["data"]["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let backend = h.core.backend().clone();
    // Plant rows in both mounts' storage (as their engines would).
    let gone_key = format!("logical/{uuid}/keys/k");
    backend
        .commit(vec![zafe_storage::Op::Put {
            entry: zafe_storage::Entry {
                key: gone_key.clone(),
                value: vec![1],
                generation: 1,
            },
            condition: zafe_storage::Condition::Absent,
        }])
        .await
        .unwrap();
    let before = backend.keys("", "", 10_000).await.unwrap().len();
    assert_eq!(
        h.call("DELETE", "/v1/sys/mounts/gone", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert!(backend.get(&gone_key).await.unwrap().is_none());
    let after = backend.keys("", "", 10_000).await.unwrap().len();
    assert_eq!(after, before - 1, "nothing else was removed");
}
