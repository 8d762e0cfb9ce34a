//! Key rotation with background re-wrap, and rekeying the unseal shares
//! (R-KEY-6), through the real router.

use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use serde_json::json;
use zafe_core::crypto::envelope_key_version;

/// Every barrier record's KEK version, straight from storage.
async fn kek_versions(h: &Harness) -> Vec<u32> {
    let backend = h.core.backend();
    let keys = backend.keys("", "", 10_000).await.unwrap();
    let mut versions = Vec::new();
    for key in keys.iter().filter(|k| !k.starts_with("seal/")) {
        let entry = backend.get(key).await.unwrap().unwrap();
        versions.push(envelope_key_version(&entry.value).unwrap());
    }
    versions
}

async fn wait_for_rewrap(h: &Harness, root: &str) -> serde_json::Value {
    for _ in 0..200 {
        let a = h.call("GET", "/v1/sys/key-status", Some(root), None).await;
        if a.json["data"]["rewrap"]["done"] == true {
            return a.json;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the re-wrap did not finish");
}

// R-KEY-6: rotate adds a KEK version for new writes; old records stay
// readable; the background re-wrap moves everything to the new version.
#[tokio::test]
async fn rotation_rewraps_every_record_and_loses_nothing() {
    let h = harness().await;
    let (keys, root) = h.init(1, 1).await;
    h.unseal(&keys[0]).await;
    // Some records under KEK 1: tokens, the mount table, policies.
    for i in 0..20 {
        let policy = format!("path \"secret/data/p{i}/*\" {{ capabilities = [\"read\"] }}");
        let a = h
            .call(
                "PUT",
                &format!("/v1/sys/policy/p{i}"),
                Some(&root),
                Some(json!({ "policy": policy })),
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    }
    assert!(kek_versions(&h).await.iter().all(|v| *v == 1));

    let a = h.call("PUT", "/v1/sys/rotate", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let status = wait_for_rewrap(&h, &root).await;
    assert_eq!(status["data"]["term"], 2);
    assert!(status["data"]["rewrap"]["rewrapped"].as_u64().unwrap() >= 21);
    assert!(
        kek_versions(&h).await.iter().all(|v| *v == 2),
        "every record moved to KEK 2"
    );

    // Nothing was lost: every policy still reads back.
    for i in 0..20 {
        let a = h
            .call("GET", &format!("/v1/sys/policy/p{i}"), Some(&root), None)
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(a.json["rules"].as_str().unwrap().contains(&format!("p{i}")));
    }
    // And the rotated keyring survives a seal/unseal.
    assert_eq!(
        h.call("PUT", "/v1/sys/seal", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    h.unseal(&keys[0]).await;
    let a = h.call("GET", "/v1/sys/key-status", Some(&root), None).await;
    assert_eq!(a.json["term"], 2);
    assert_eq!(
        h.call("GET", "/v1/sys/policy/p7", Some(&root), None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotation_needs_a_sudo_token() {
    let (h, _) = unsealed().await;
    assert_eq!(
        h.call("PUT", "/v1/sys/rotate", None, None).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        h.call("GET", "/v1/sys/key-status", None, None).await.status,
        StatusCode::FORBIDDEN
    );
}

// R-KEY-6: rekey issues new shares without re-encrypting data; the old
// shares stop working at once.
#[tokio::test]
async fn rekey_replaces_the_shares() {
    let h = harness().await;
    let (old, root) = h.init(3, 2).await;
    h.unseal(&old[0]).await;
    h.unseal(&old[1]).await;
    let before = kek_versions(&h).await;

    let a = h
        .call(
            "PUT",
            "/v1/sys/rekey/init",
            Some(&root),
            Some(json!({"secret_shares": 5, "secret_threshold": 3})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let nonce = a.json["nonce"].as_str().unwrap().to_string();
    // A wrong nonce, a share that is not ours.
    let bad = h
        .call(
            "PUT",
            "/v1/sys/rekey/update",
            Some(&root),
            Some(json!({"nonce": "nope", "key": old[0]})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let a = h
        .call(
            "PUT",
            "/v1/sys/rekey/update",
            Some(&root),
            Some(json!({"nonce": nonce, "key": old[0]})),
        )
        .await;
    assert_eq!(a.json["complete"], false);
    let a = h
        .call(
            "PUT",
            "/v1/sys/rekey/update",
            Some(&root),
            Some(json!({"nonce": nonce, "key": old[2]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["complete"], true);
    let new: Vec<String> = a.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(new.len(), 5);
    // The data was not re-encrypted.
    assert_eq!(kek_versions(&h).await, before);

    assert_eq!(
        h.call("PUT", "/v1/sys/seal", Some(&root), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Old shares are refused outright.
    for k in &old {
        assert_eq!(h.unseal(k).await.status, StatusCode::BAD_REQUEST);
    }
    for k in &new[1..4] {
        h.unseal(k).await;
    }
    assert!(!h.core.is_sealed());
    let a = h.call("GET", "/v1/sys/seal-status", None, None).await;
    assert_eq!(
        (a.json["t"].as_u64(), a.json["n"].as_u64()),
        (Some(3), Some(5))
    );
}
