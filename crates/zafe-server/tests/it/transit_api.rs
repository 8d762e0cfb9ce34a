//! The transit engine through the real router (R-KV-3): named keys,
//! encrypt/decrypt/rewrap with Vault's `vault:vN:` format, rotation,
//! minimum versions, trim, batches, datakeys, random, hash, HMAC, Ed25519
//! signatures and export, with their error cases; plus isolation between
//! mounts, scoped tokens, and concurrent rotations from two nodes.

use std::sync::Arc;

use crate::common::*;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use http::StatusCode;
use serde_json::{Value, json};
use zafe_core::secret::SecretKey;

async fn transit() -> (Harness, String) {
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
    (h, root)
}

fn b64(s: &str) -> String {
    B64.encode(s)
}

impl Harness {
    async fn post(&self, root: &str, path: &str, body: Value) -> Answer {
        self.call(
            "POST",
            &format!("/v1/transit/{path}"),
            Some(root),
            Some(body),
        )
        .await
    }

    async fn encrypt(&self, root: &str, key: &str, plaintext: &str) -> String {
        let a = self
            .post(
                root,
                &format!("encrypt/{key}"),
                json!({ "plaintext": b64(plaintext) }),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        a.json["data"]["ciphertext"].as_str().unwrap().to_string()
    }

    async fn decrypt(&self, root: &str, key: &str, ciphertext: &str) -> Answer {
        self.post(
            root,
            &format!("decrypt/{key}"),
            json!({ "ciphertext": ciphertext }),
        )
        .await
    }
}

fn plaintext_of(a: &Answer) -> String {
    String::from_utf8(
        B64.decode(a.json["data"]["plaintext"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn key_lifecycle_create_read_list_rotate_delete() {
    let (h, root) = transit().await;
    let a = h.call("LIST", "/v1/transit/keys", Some(&root), None).await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "an empty listing is a bare 404, as in Vault"
    );

    let a = h.post(&root, "keys/orders", json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let d = &a.json["data"];
    assert_eq!(d["type"], "aes256-gcm96");
    assert_eq!(d["name"], "orders");
    assert_eq!(d["latest_version"], 1);
    assert_eq!(d["min_decryption_version"], 1);
    assert_eq!(d["min_encryption_version"], 0);
    assert_eq!(d["min_available_version"], 0);
    assert_eq!(
        (d["deletion_allowed"].as_bool(), d["exportable"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(
        (
            d["supports_encryption"].as_bool(),
            d["supports_signing"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert!(
        d["keys"]["1"].as_i64().unwrap() > 1_600_000_000,
        "creation time in unix seconds"
    );

    let a = h
        .post(&root, "keys/signer", json!({"type": "ed25519"}))
        .await;
    let d = &a.json["data"];
    assert_eq!(d["type"], "ed25519");
    assert_eq!(
        (
            d["supports_encryption"].as_bool(),
            d["supports_signing"].as_bool()
        ),
        (Some(false), Some(true))
    );
    assert_eq!(
        B64.decode(d["keys"]["1"]["public_key"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    assert_eq!(d["keys"]["1"]["name"], "ed25519");
    assert!(
        d["keys"]["1"]["creation_time"]
            .as_str()
            .unwrap()
            .contains('T')
    );

    // Creating again changes nothing (OpenBao answers with the key).
    let a = h
        .post(&root, "keys/orders", json!({"type": "chacha20-poly1305"}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["type"], "aes256-gcm96");
    assert!(
        a.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("already exists")
    );

    let a = h.call("LIST", "/v1/transit/keys", Some(&root), None).await;
    assert_eq!(a.json["data"]["keys"], json!(["orders", "signer"]));
    let a = h
        .call("GET", "/v1/transit/keys?list=true", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["keys"], json!(["orders", "signer"]));
    let a = h
        .call("GET", "/v1/transit/keys/orders", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["name"], "orders");

    let a = h.post(&root, "keys/orders/rotate", json!({})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["latest_version"], 2);
    assert_eq!(a.json["data"]["keys"].as_object().unwrap().len(), 2);

    // Deletion needs deletion_allowed first.
    let a = h
        .call("DELETE", "/v1/transit/keys/orders", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.first_error().contains("deletion is not allowed"),
        "{}",
        a.first_error()
    );
    assert_eq!(
        h.call("GET", "/v1/transit/keys/orders", Some(&root), None)
            .await
            .status,
        StatusCode::OK
    );
    let a = h
        .post(
            &root,
            "keys/orders/config",
            json!({"deletion_allowed": true}),
        )
        .await;
    assert_eq!(a.json["data"]["deletion_allowed"], true);
    let a = h
        .call("DELETE", "/v1/transit/keys/orders", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    assert_eq!(
        h.call("GET", "/v1/transit/keys/orders", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .call("DELETE", "/v1/transit/keys/orders", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("not found"));
}

#[tokio::test]
async fn bad_key_options_are_refused_and_change_nothing() {
    let (h, root) = transit().await;
    for (body, needle) in [
        (json!({"type": "rsa-4096"}), "unknown key type"),
        (json!({"derived": true}), "derived keys"),
        (json!({"convergent_encryption": true}), "convergent"),
        (
            json!({"exportable": "maybe"}),
            "exportable must be a boolean",
        ),
        (json!({"auto_rotate_period": "24h"}), "auto_rotate_period"),
        (
            json!({"allow_plaintext_backup": true}),
            "allow_plaintext_backup",
        ),
    ] {
        let a = h.post(&root, "keys/k", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            a.first_error().contains(needle),
            "{body}: {}",
            a.first_error()
        );
    }
    for bad in ["-lead", "a%20b", "trail.", "%C3%A4"] {
        let a = h
            .call(
                "POST",
                &format!("/v1/transit/keys/{bad}"),
                Some(&root),
                Some(json!({})),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            a.first_error().contains("invalid key name"),
            "{bad}: {}",
            a.first_error()
        );
    }
    assert_eq!(
        h.call("LIST", "/v1/transit/keys", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Unknown paths and wrong methods.
    assert_eq!(
        h.post(&root, "nothing/here", json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.post(&root, "keys/a/b/c", json!({})).await.status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .call("GET", "/v1/transit/encrypt/k", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    // Strangers learn nothing.
    assert_eq!(
        h.call("POST", "/v1/transit/keys/k", None, Some(json!({})))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

// R-KV-3: Vault's ciphertext format, exactly.
#[tokio::test]
async fn encrypt_decrypt_round_trip_in_vaults_format() {
    let (h, root) = transit().await;
    for key_type in ["aes256-gcm96", "chacha20-poly1305"] {
        h.post(
            &root,
            &format!("keys/{key_type}"),
            json!({ "type": key_type }),
        )
        .await;
        let ct = h.encrypt(&root, key_type, "attack at dawn").await;
        let body = ct.strip_prefix("vault:v1:").expect("vault:v1: prefix");
        assert_eq!(
            B64.decode(body).unwrap().len(),
            12 + "attack at dawn".len() + 16,
            "nonce || ciphertext || tag"
        );
        let a = h.decrypt(&root, key_type, &ct).await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        assert_eq!(plaintext_of(&a), "attack at dawn");
        // Fresh nonce every time.
        assert_ne!(ct, h.encrypt(&root, key_type, "attack at dawn").await);

        // Empty plaintext is allowed, as in Vault.
        let a = h
            .post(
                &root,
                &format!("encrypt/{key_type}"),
                json!({"plaintext": ""}),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        let a = h
            .decrypt(
                &root,
                key_type,
                a.json["data"]["ciphertext"].as_str().unwrap(),
            )
            .await;
        assert_eq!(a.json["data"]["plaintext"], "");

        // associated_data is authenticated.
        let a = h
            .post(
                &root,
                &format!("encrypt/{key_type}"),
                json!({"plaintext": b64("x"), "associated_data": b64("order-17")}),
            )
            .await;
        let ct = a.json["data"]["ciphertext"].as_str().unwrap().to_string();
        assert_eq!(
            h.decrypt(&root, key_type, &ct).await.status,
            StatusCode::BAD_REQUEST
        );
        let a = h
            .post(
                &root,
                &format!("decrypt/{key_type}"),
                json!({"ciphertext": ct, "associated_data": b64("order-17")}),
            )
            .await;
        assert_eq!(plaintext_of(&a), "x");
    }

    // `context` binds nothing on a non-derived key (as in Vault): say so, once.
    let a = h
        .post(&root, "encrypt/aes256-gcm96", json!({"batch_input": [
            {"plaintext": b64("x"), "context": b64("c")}, {"plaintext": b64("y"), "context": b64("c")},
        ]}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["warnings"].as_array().unwrap().len(), 1);
    assert!(
        a.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("context was ignored")
    );

    // Encrypting under a key that does not exist creates it (Vault's upsert).
    let ct = h.encrypt(&root, "upserted", "hi").await;
    assert!(ct.starts_with("vault:v1:"));
    let a = h
        .call("GET", "/v1/transit/keys/upserted", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["type"], "aes256-gcm96");

    // Bad input: a clear 400 that does not echo the input.
    let a = h
        .post(
            &root,
            "encrypt/upserted",
            json!({"plaintext": "not base64 SECRETVALUE!"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        a.first_error().contains("plaintext is not valid base64"),
        "{}",
        a.first_error()
    );
    assert!(!a.json.to_string().contains("SECRETVALUE"));
    let a = h.post(&root, "encrypt/upserted", json!({})).await;
    assert_eq!(a.first_error(), "missing plaintext to encrypt");
    let a = h
        .post(
            &root,
            "encrypt/signer",
            json!({"plaintext": b64("x"), "type": "ed25519"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.call("GET", "/v1/transit/keys/signer", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .post(
            &root,
            "encrypt/upserted",
            json!({"plaintext": b64("x"), "key_version": 2}),
        )
        .await;
    assert!(
        a.first_error()
            .contains("higher than the latest key version")
    );
}

// Tampered ciphertexts and ciphertexts of another key fail authentication
// with a clear 400 (R-KV-3; the key name is not bound, the key material is).
#[tokio::test]
async fn tampered_or_foreign_ciphertexts_are_refused() {
    let (h, root) = transit().await;
    let ct = h.encrypt(&root, "a", "payroll").await;
    h.post(&root, "keys/b", json!({})).await;

    let mut raw = B64.decode(ct.strip_prefix("vault:v1:").unwrap()).unwrap();
    for i in [0, 12, raw.len() - 1] {
        raw[i] ^= 0x01;
        let tampered = format!("vault:v1:{}", B64.encode(&raw));
        raw[i] ^= 0x01;
        let a = h.decrypt(&root, "a", &tampered).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "byte {i}");
        assert!(
            a.first_error().contains("message authentication failed"),
            "{}",
            a.first_error()
        );
    }
    // Key A's ciphertext given to key B.
    let a = h.decrypt(&root, "b", &ct).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("message authentication failed"));

    for (bad, needle) in [
        ("garbage", "no prefix"),
        ("vault:vx:AAAA", "version number could not be decoded"),
        ("vault:v0:AAAA", "version number could not be decoded"),
        ("vault:v9:AAAA", "version is too new"),
        ("vault:v1:!!!", "could not decode base64"),
        ("vault:v1:AAAA", "invalid ciphertext length"),
    ] {
        let a = h.decrypt(&root, "a", bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            a.first_error().contains(needle),
            "{bad}: {}",
            a.first_error()
        );
    }
    let a = h.decrypt(&root, "missing", &ct).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("encryption key not found"));
    assert_eq!(
        h.call("GET", "/v1/transit/keys/missing", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // The untouched ciphertext still decrypts.
    assert_eq!(plaintext_of(&h.decrypt(&root, "a", &ct).await), "payroll");
}

// R-KV-3: rotation, min_decryption_version with Vault's error text, rewrap.
#[tokio::test]
async fn min_decryption_version_and_rewrap() {
    let (h, root) = transit().await;
    let v1 = h.encrypt(&root, "k", "one").await;
    h.post(&root, "keys/k/rotate", json!({})).await;
    let v2 = h.encrypt(&root, "k", "two").await;
    assert!(v2.starts_with("vault:v2:"));
    h.post(&root, "keys/k/rotate", json!({})).await;
    // Old versions still decrypt after rotation.
    assert_eq!(plaintext_of(&h.decrypt(&root, "k", &v1).await), "one");

    let a = h
        .post(&root, "keys/k/config", json!({"min_decryption_version": 2}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["min_decryption_version"], 2);
    assert_eq!(
        a.json["data"]["keys"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["2", "3"]
    );
    let a = h.decrypt(&root, "k", &v1).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.first_error(),
        "ciphertext or signature version is disallowed by policy (too old)"
    );
    let a = h.post(&root, "rewrap/k", json!({"ciphertext": v1})).await;
    assert_eq!(
        a.first_error(),
        "ciphertext or signature version is disallowed by policy (too old)"
    );
    let a = h
        .post(
            &root,
            "encrypt/k",
            json!({"plaintext": b64("x"), "key_version": 1}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("no such key version"));

    // Rewrap moves a v2 ciphertext to v3 without showing the plaintext.
    let a = h.post(&root, "rewrap/k", json!({"ciphertext": v2})).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["key_version"], 3);
    assert!(a.json["data"].get("plaintext").is_none());
    let v3 = a.json["data"]["ciphertext"].as_str().unwrap().to_string();
    assert!(v3.starts_with("vault:v3:"));
    assert_eq!(plaintext_of(&h.decrypt(&root, "k", &v3).await), "two");

    // Config errors change nothing.
    for (body, needle) in [
        (
            json!({"min_decryption_version": 9}),
            "cannot set min decryption version of 9, latest key version is 3",
        ),
        (json!({"min_decryption_version": -1}), "cannot be negative"),
        (
            json!({"min_encryption_version": 9}),
            "cannot set min encryption version of 9",
        ),
        (
            json!({"min_encryption_version": 1}),
            "must be greater than or equal to min decryption version of 2",
        ),
        (
            json!({"deletion_allowed": "perhaps"}),
            "deletion_allowed must be a boolean",
        ),
    ] {
        let a = h.post(&root, "keys/k/config", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            a.first_error().contains(needle),
            "{body}: {}",
            a.first_error()
        );
    }
    let a = h
        .post(
            &root,
            "keys/missing/config",
            json!({"deletion_allowed": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let a = h.call("GET", "/v1/transit/keys/k", Some(&root), None).await;
    assert_eq!(
        (
            a.json["data"]["min_decryption_version"].as_u64(),
            a.json["data"]["min_encryption_version"].as_u64()
        ),
        (Some(2), Some(0))
    );

    // min_encryption_version: encryption below it is refused.
    let a = h
        .post(&root, "keys/k/config", json!({"min_encryption_version": 3}))
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = h
        .post(
            &root,
            "encrypt/k",
            json!({"plaintext": b64("x"), "key_version": 2}),
        )
        .await;
    assert!(
        a.first_error()
            .contains("less than the minimum encryption key version")
    );

    // Lowering min_decryption_version again works until the versions are trimmed.
    let a = h
        .post(
            &root,
            "keys/k/config",
            json!({"min_decryption_version": "1"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(plaintext_of(&h.decrypt(&root, "k", &v1).await), "one");
}

#[tokio::test]
async fn trim_deletes_old_versions_for_good() {
    let (h, root) = transit().await;
    let v1 = h.encrypt(&root, "k", "one").await;
    h.post(&root, "keys/k/rotate", json!({})).await;
    h.post(&root, "keys/k/rotate", json!({})).await;
    let a = h
        .post(&root, "keys/k/trim", json!({"min_available_version": 2}))
        .await;
    assert!(
        a.first_error()
            .contains("minimum encryption version is not set"),
        "{}",
        a.first_error()
    );
    let a = h
        .post(
            &root,
            "keys/k/config",
            json!({"min_decryption_version": 2, "min_encryption_version": 3}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    for (body, needle) in [
        (json!({}), "missing min_available_version"),
        (json!({"min_available_version": 0}), "should be positive"),
        (
            json!({"min_available_version": 3}),
            "greater than minimum decryption version",
        ),
    ] {
        let a = h.post(&root, "keys/k/trim", body.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            a.first_error().contains(needle),
            "{body}: {}",
            a.first_error()
        );
    }
    let a = h
        .post(&root, "keys/k/trim", json!({"min_available_version": 2}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["min_available_version"], 2);
    let a = h
        .post(&root, "keys/k/trim", json!({"min_available_version": 1}))
        .await;
    assert!(a.first_error().contains("cannot be decremented"));
    let a = h
        .post(&root, "keys/k/config", json!({"min_decryption_version": 1}))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("min available version"));
    assert_eq!(
        h.decrypt(&root, "k", &v1).await.status,
        StatusCode::BAD_REQUEST
    );
}

// One bad item never fails the others; the status follows Vault
// (400 unless partial_failure_response_code, 200 for rewrap).
#[tokio::test]
async fn batches_report_errors_per_item() {
    let (h, root) = transit().await;
    h.post(&root, "keys/k", json!({})).await;
    let a = h
        .post(
            &root,
            "encrypt/k",
            json!({"batch_input": [
                {"plaintext": b64("first"), "reference": "r1"},
                {"plaintext": "!!not base64"},
                {},
                "not an object",
                {"plaintext": b64("last"), "reference": "r5"},
            ]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let results = a.json["data"]["batch_results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 5);
    assert_eq!(results[0]["reference"], "r1");
    assert!(
        results[0]["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("vault:v1:")
    );
    assert!(results[1]["error"].as_str().unwrap().contains("base64"));
    assert_eq!(results[2]["error"], "missing plaintext to encrypt");
    assert!(
        results[3]["error"]
            .as_str()
            .unwrap()
            .contains("JSON object")
    );
    assert_eq!(results[4]["reference"], "r5");
    assert!(results[4].get("error").is_none());

    let a = h
        .post(
            &root,
            "encrypt/k",
            json!({"partial_failure_response_code": 207, "batch_input": [{"plaintext": b64("ok")}, {"plaintext": "!"}]}),
        )
        .await;
    assert_eq!(a.status.as_u16(), 207);
    let a = h
        .post(
            &root,
            "encrypt/k",
            json!({"batch_input": [{"plaintext": b64("ok")}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);

    let good = results[0]["ciphertext"].as_str().unwrap();
    let a = h
        .post(
            &root,
            "decrypt/k",
            json!({"batch_input": [{"ciphertext": good, "reference": "a"}, {"ciphertext": "bad"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    let results = a.json["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results[0]["plaintext"], b64("first"));
    assert_eq!(results[0]["reference"], "a");
    assert!(results[1]["error"].as_str().unwrap().contains("no prefix"));

    let a = h
        .post(
            &root,
            "rewrap/k",
            json!({"batch_input": [{"ciphertext": good}, {"ciphertext": "bad"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    let results = a.json["data"]["batch_results"].as_array().unwrap();
    assert!(
        results[0]["ciphertext"]
            .as_str()
            .unwrap()
            .starts_with("vault:v1:")
    );
    assert!(results[1]["error"].is_string());

    for (body, needle) in [
        (json!({"batch_input": []}), "missing batch input"),
        (json!({"batch_input": "x"}), "must be an array"),
        (
            json!({"batch_input": vec![json!({"plaintext": ""}); 10_001]}),
            "limit is 10000",
        ),
    ] {
        let a = h.post(&root, "encrypt/k", body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert!(a.first_error().contains(needle), "{}", a.first_error());
    }
}

#[tokio::test]
async fn datakeys_random_bytes_and_hashes() {
    let (h, root) = transit().await;
    h.post(&root, "keys/k", json!({})).await;
    for bits in [128, 256, 512] {
        let a = h
            .post(&root, "datakey/plaintext/k", json!({"bits": bits}))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        let plain = a.json["data"]["plaintext"].as_str().unwrap().to_string();
        assert_eq!(B64.decode(&plain).unwrap().len(), bits / 8);
        let back = h
            .decrypt(&root, "k", a.json["data"]["ciphertext"].as_str().unwrap())
            .await;
        assert_eq!(back.json["data"]["plaintext"], plain);
    }
    let a = h.post(&root, "datakey/wrapped/k", json!({})).await;
    assert!(a.json["data"].get("plaintext").is_none());
    assert_eq!(a.json["data"]["key_version"], 1);
    assert!(
        h.post(&root, "datakey/wrapped/k", json!({"bits": 100}))
            .await
            .first_error()
            .contains("invalid bit length")
    );
    assert!(
        h.post(&root, "datakey/other/k", json!({}))
            .await
            .first_error()
            .contains("'plaintext' or 'wrapped'")
    );
    assert!(
        h.post(&root, "datakey/plaintext/none", json!({}))
            .await
            .first_error()
            .contains("encryption key not found")
    );

    let a = h.post(&root, "random", json!({})).await;
    assert_eq!(
        B64.decode(a.json["data"]["random_bytes"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );
    let a = h.post(&root, "random/16", json!({"format": "hex"})).await;
    assert_eq!(
        hex::decode(a.json["data"]["random_bytes"].as_str().unwrap())
            .unwrap()
            .len(),
        16
    );
    let a = h
        .post(&root, "random/platform/8", json!({"bytes": 4}))
        .await;
    assert_eq!(
        B64.decode(a.json["data"]["random_bytes"].as_str().unwrap())
            .unwrap()
            .len(),
        8,
        "the URL wins"
    );
    for (path, body, needle) in [
        ("random/bad/8", json!({}), "unsupported entropy source"),
        (
            "random/8",
            json!({"format": "x"}),
            "unsupported encoding format",
        ),
        ("random/0", json!({}), "cannot be less than 1"),
        ("random/999999", json!({}), "at most 131072"),
        (
            "random",
            json!({"bytes": "abc"}),
            "bytes must be an integer",
        ),
    ] {
        let a = h.post(&root, path, body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            a.first_error().contains(needle),
            "{path}: {}",
            a.first_error()
        );
    }

    // Values from OpenBao for "hello".
    let a = h.post(&root, "hash", json!({"input": b64("hello")})).await;
    assert_eq!(
        a.json["data"]["sum"],
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
    let a = h
        .post(
            &root,
            "hash/sha2-512",
            json!({"input": b64("hello"), "format": "base64"}),
        )
        .await;
    assert_eq!(
        a.json["data"]["sum"],
        "m3HSJL1i83hdltRq0+o9czGb+8KJDKra4t/3JRlnPKcjI8PZm6XBHXx6zG4UuMXaDEZjR1wuXDre9G9zvN7AQw=="
    );
    let a = h
        .post(
            &root,
            "hash",
            json!({"input": b64("hello"), "algorithm": "sha2-384"}),
        )
        .await;
    assert!(
        a.json["data"]["sum"]
            .as_str()
            .unwrap()
            .starts_with("59e1748777448c69de6b800d7a33bbfb")
    );
    assert!(
        h.post(&root, "hash/md5", json!({"input": b64("hello")}))
            .await
            .first_error()
            .contains("unsupported algorithm")
    );
    assert_eq!(
        h.post(&root, "hash", json!({})).await.first_error(),
        "input missing"
    );
}

#[tokio::test]
async fn hmac_and_its_verification() {
    let (h, root) = transit().await;
    h.post(&root, "keys/k", json!({})).await;
    let a = h.post(&root, "hmac/k", json!({"input": b64("msg")})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let mac = a.json["data"]["hmac"].as_str().unwrap().to_string();
    assert!(mac.starts_with("vault:v1:"));
    assert_eq!(
        B64.decode(mac.strip_prefix("vault:v1:").unwrap())
            .unwrap()
            .len(),
        32
    );
    let verify = |input: &str, mac: &str, path: &str| {
        let body = json!({"input": b64(input), "hmac": mac});
        let path = path.to_string();
        let h = &h;
        let root = root.clone();
        async move { h.post(&root, &path, body).await }
    };
    assert_eq!(
        verify("msg", &mac, "verify/k").await.json["data"]["valid"],
        true
    );
    assert_eq!(
        verify("msh", &mac, "verify/k").await.json["data"]["valid"],
        false
    );
    assert_eq!(
        verify("msg", &mac, "verify/k/sha2-512").await.json["data"]["valid"],
        false
    );
    let a = h
        .post(&root, "hmac/k/sha2-512", json!({"input": b64("msg")}))
        .await;
    let mac512 = a.json["data"]["hmac"].as_str().unwrap().to_string();
    assert_eq!(
        B64.decode(mac512.strip_prefix("vault:v1:").unwrap())
            .unwrap()
            .len(),
        64
    );
    assert_eq!(
        verify("msg", &mac512, "verify/k/sha2-512").await.json["data"]["valid"],
        true
    );
    let a = verify("msg", "garbage", "verify/k").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("no prefix"));
    let a = h
        .post(&root, "verify/k", json!({"input": b64("msg")}))
        .await;
    assert!(
        a.first_error()
            .contains("neither a 'signature' nor an 'hmac'")
    );
    assert!(
        h.post(&root, "hmac/none", json!({"input": b64("m")}))
            .await
            .first_error()
            .contains("key not found")
    );

    // Batch, then rotation and min_decryption_version.
    let a = h
        .post(
            &root,
            "hmac/k",
            json!({"batch_input": [{"input": b64("msg")}, {"input": "!"}]}),
        )
        .await;
    let results = a.json["data"]["batch_results"].as_array().unwrap();
    assert_eq!(results[0]["hmac"], mac.as_str());
    assert!(results[1]["error"].is_string());
    h.post(&root, "keys/k/rotate", json!({})).await;
    let a = h.post(&root, "hmac/k", json!({"input": b64("msg")})).await;
    assert!(
        a.json["data"]["hmac"]
            .as_str()
            .unwrap()
            .starts_with("vault:v2:")
    );
    h.post(&root, "keys/k/config", json!({"min_decryption_version": 2}))
        .await;
    let a = verify("msg", &mac, "verify/k").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("too old"));
}

#[tokio::test]
async fn ed25519_sign_and_verify() {
    let (h, root) = transit().await;
    h.post(&root, "keys/ed", json!({"type": "ed25519"})).await;
    let a = h
        .post(&root, "sign/ed", json!({"input": b64("release 1.0")}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["key_version"], 1);
    let sig = a.json["data"]["signature"].as_str().unwrap().to_string();
    assert_eq!(
        B64.decode(sig.strip_prefix("vault:v1:").unwrap())
            .unwrap()
            .len(),
        64
    );

    let verify = |input: &str, sig: &str| {
        h.post(
            &root,
            "verify/ed",
            json!({"input": b64(input), "signature": sig}),
        )
    };
    assert_eq!(
        verify("release 1.0", &sig).await.json["data"]["valid"],
        true
    );
    assert_eq!(
        verify("release 1.1", &sig).await.json["data"]["valid"],
        false
    );
    assert_eq!(
        verify("release 1.0", "vault:v1:AAAA").await.json["data"]["valid"],
        false
    );
    for (bad, needle) in [
        ("nope", "no prefix"),
        ("vault:v2:AAAA", "version is too new"),
        ("vault:v1:!!", "invalid base64"),
    ] {
        let a = verify("release 1.0", bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(
            a.first_error().contains(needle),
            "{bad}: {}",
            a.first_error()
        );
    }

    // The signature checks against the public key from `keys/ed`.
    let a = h
        .call("GET", "/v1/transit/keys/ed", Some(&root), None)
        .await;
    let public = B64
        .decode(a.json["data"]["keys"]["1"]["public_key"].as_str().unwrap())
        .unwrap();
    let public = ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
    let raw: [u8; 64] = B64
        .decode(sig.strip_prefix("vault:v1:").unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    public
        .verify_strict(b"release 1.0", &ed25519_dalek::Signature::from_bytes(&raw))
        .unwrap();

    // Rotation: new signatures use v2, old ones still verify until min_decryption_version moves.
    h.post(&root, "keys/ed/rotate", json!({})).await;
    let a = h
        .post(&root, "sign/ed", json!({"input": b64("release 2.0")}))
        .await;
    assert!(
        a.json["data"]["signature"]
            .as_str()
            .unwrap()
            .starts_with("vault:v2:")
    );
    let a = h
        .post(
            &root,
            "sign/ed",
            json!({"input": b64("x"), "key_version": 5}),
        )
        .await;
    assert!(
        a.first_error()
            .contains("higher than the latest key version")
    );
    assert_eq!(
        verify("release 1.0", &sig).await.json["data"]["valid"],
        true
    );
    h.post(
        &root,
        "keys/ed/config",
        json!({"min_decryption_version": 2}),
    )
    .await;
    let a = verify("release 1.0", &sig).await;
    assert_eq!(
        a.first_error(),
        "ciphertext or signature version is disallowed by policy (too old)"
    );

    // jws marshaling, batches, and keys that cannot sign.
    let a = h
        .post(
            &root,
            "sign/ed",
            json!({"input": b64("j"), "marshaling_algorithm": "jws"}),
        )
        .await;
    let jws = a.json["data"]["signature"].as_str().unwrap().to_string();
    assert!(!jws.contains('=') && !jws.contains('+') && !jws.contains('/'));
    let a = h
        .post(
            &root,
            "verify/ed",
            json!({"input": b64("j"), "signature": jws, "marshaling_algorithm": "jws"}),
        )
        .await;
    assert_eq!(a.json["data"]["valid"], true);
    let a = h
        .post(
            &root,
            "sign/ed",
            json!({"batch_input": [{"input": b64("a"), "reference": "x"}, {"input": "!"}]}),
        )
        .await;
    let results = a.json["data"]["batch_results"].as_array().unwrap();
    assert!(
        results[0]["signature"]
            .as_str()
            .unwrap()
            .starts_with("vault:v2:")
    );
    assert_eq!(results[0]["reference"], "x");
    assert_eq!(results[1]["key_version"], 0);
    assert!(results[1]["error"].is_string());
    h.post(&root, "keys/aes", json!({})).await;
    assert!(
        h.post(&root, "sign/aes", json!({"input": b64("a")}))
            .await
            .first_error()
            .contains("does not support signing")
    );
    let a = h
        .post(
            &root,
            "verify/aes",
            json!({"input": b64("a"), "signature": sig}),
        )
        .await;
    assert!(a.first_error().contains("does not support verification"));
    assert!(
        h.post(&root, "encrypt/ed", json!({"plaintext": b64("a")}))
            .await
            .first_error()
            .contains("not supported for key type ed25519")
    );
    assert!(
        h.post(&root, "sign/none", json!({"input": b64("a")}))
            .await
            .first_error()
            .contains("signing key not found")
    );
}

// Key material leaves only for keys created or configured `exportable`;
// public keys are always readable (R-ACL-4: no material by default).
#[tokio::test]
async fn export_only_when_exportable() {
    let (h, root) = transit().await;
    h.post(&root, "keys/k", json!({})).await;
    h.post(&root, "keys/ed", json!({"type": "ed25519"})).await;
    for path in [
        "export/encryption-key/k",
        "export/hmac-key/k",
        "export/signing-key/ed",
    ] {
        let a = h
            .call("GET", &format!("/v1/transit/{path}"), Some(&root), None)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
        assert_eq!(a.first_error(), "private key material is not exportable");
    }
    let a = h
        .call("GET", "/v1/transit/export/public-key/ed", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        B64.decode(a.json["data"]["keys"]["1"].as_str().unwrap())
            .unwrap()
            .len(),
        32
    );

    // exportable is one-way.
    let a = h
        .post(&root, "keys/k/config", json!({"exportable": true}))
        .await;
    assert_eq!(a.json["data"]["exportable"], true);
    let a = h
        .post(&root, "keys/k/config", json!({"exportable": false}))
        .await;
    assert_eq!(a.json["data"]["exportable"], true);
    assert!(
        a.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("cannot be turned off")
    );

    h.post(&root, "keys/k/rotate", json!({})).await;
    let a = h
        .call(
            "GET",
            "/v1/transit/export/encryption-key/k",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["name"], "k");
    assert_eq!(a.json["data"]["type"], "aes256-gcm96");
    let keys = a.json["data"]["keys"].as_object().unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(B64.decode(keys["2"].as_str().unwrap()).unwrap().len(), 32);
    let a = h
        .call(
            "GET",
            "/v1/transit/export/encryption-key/k/latest",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(
        a.json["data"]["keys"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["2"]
    );
    let a = h
        .call("GET", "/v1/transit/export/hmac-key/k/1", Some(&root), None)
        .await;
    assert_eq!(
        a.json["data"]["keys"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["1"]
    );
    assert_ne!(
        a.json["data"]["keys"]["1"], keys["1"],
        "the HMAC key is separate"
    );
    let a = h
        .call(
            "GET",
            "/v1/transit/export/encryption-key/k/9",
            Some(&root),
            None,
        )
        .await;
    assert!(a.first_error().contains("version does not exist"));
    let a = h
        .call("GET", "/v1/transit/export/bad/k", Some(&root), None)
        .await;
    assert!(a.first_error().contains("invalid export type"));
    let a = h
        .call("GET", "/v1/transit/export/hmac-key/none", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    // The exported key really is the key: decrypt a ciphertext with it.
    let ct = h.encrypt(&root, "k", "exported").await;
    let raw = B64.decode(ct.strip_prefix("vault:v2:").unwrap()).unwrap();
    let key = B64.decode(keys["2"].as_str().unwrap()).unwrap();
    use aes_gcm::aead::{Aead, KeyInit};
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).unwrap();
    let plain = cipher
        .decrypt(aes_gcm::Nonce::from_slice(&raw[..12]), &raw[12..])
        .unwrap();
    assert_eq!(plain, b"exported");

    h.post(
        &root,
        "keys/ed2",
        json!({"type": "ed25519", "exportable": true}),
    )
    .await;
    let a = h
        .call(
            "GET",
            "/v1/transit/export/signing-key/ed2",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(
        B64.decode(a.json["data"]["keys"]["1"].as_str().unwrap())
            .unwrap()
            .len(),
        64,
        "seed || public key"
    );
    let a = h
        .call(
            "GET",
            "/v1/transit/export/encryption-key/ed2",
            Some(&root),
            None,
        )
        .await;
    assert!(a.first_error().contains("encryption not supported"));
}

// Storage never sees transit key material: it is behind the barrier.
#[tokio::test]
async fn storage_never_holds_key_material_in_the_clear() {
    let (h, root) = transit().await;
    h.post(&root, "keys/k", json!({"exportable": true})).await;
    let a = h
        .call(
            "GET",
            "/v1/transit/export/encryption-key/k",
            Some(&root),
            None,
        )
        .await;
    let b64_key = a.json["data"]["keys"]["1"].as_str().unwrap().to_string();
    let key = B64.decode(&b64_key).unwrap();
    let backend = h.core.backend().clone();
    let rows = backend.keys("", "", 10_000).await.unwrap();
    assert!(
        rows.iter().any(|r| r.starts_with("logical/")),
        "the key record is in the mount's view"
    );
    for row in rows {
        let value = backend.get(&row).await.unwrap().unwrap().value;
        assert!(
            !value.windows(key.len()).any(|w| w == key.as_slice()),
            "{row}"
        );
        assert!(
            !value
                .windows(b64_key.len())
                .any(|w| w == b64_key.as_bytes()),
            "{row}"
        );
    }
}

// R-ACL-4: two transit mounts never see each other's keys, even with the
// same key name.
#[tokio::test]
async fn transit_mounts_are_isolated() {
    let (h, root) = transit().await;
    let a = h
        .call(
            "POST",
            "/v1/sys/mounts/transit2",
            Some(&root),
            Some(json!({"type": "transit"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let ct = h.encrypt(&root, "shared-name", "mount one").await;
    assert_eq!(
        h.call("LIST", "/v1/transit2/keys", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    h.call(
        "POST",
        "/v1/transit2/keys/shared-name",
        Some(&root),
        Some(json!({})),
    )
    .await;
    let a = h
        .call(
            "POST",
            "/v1/transit2/decrypt/shared-name",
            Some(&root),
            Some(json!({"ciphertext": ct})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("message authentication failed"));
}

// Vault's ACL split: encrypting under a missing key creates it, so it needs
// `create`; a token with `update` only can use existing keys. A scoped token
// cannot export key material.
#[tokio::test]
async fn scoped_tokens_need_create_for_upserts() {
    let (h, root) = transit().await;
    h.post(&root, "keys/app", json!({"exportable": true})).await;
    let policy = r#"
path "transit/encrypt/*" { capabilities = ["update"] }
path "transit/decrypt/*" { capabilities = ["update"] }
"#;
    let a = h
        .call(
            "PUT",
            "/v1/sys/policies/acl/app-crypto",
            Some(&root),
            Some(json!({"policy": policy})),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.json);
    let (token, _) = zafe_server::tokens::create(
        &h.core.barrier,
        &h.core.token_key().unwrap(),
        zafe_server::tokens::TokenSpec {
            policies: vec!["app-crypto".into()],
            display_name: "app".into(),
            ttl_secs: Some(600),
        },
        None,
        h.core.now_secs(),
    )
    .await
    .unwrap();
    let ct = h.encrypt(&token, "app", "scoped").await;
    assert_eq!(plaintext_of(&h.decrypt(&token, "app", &ct).await), "scoped");
    let a = h
        .post(&token, "encrypt/new-key", json!({"plaintext": b64("x")}))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.call("GET", "/v1/transit/keys/new-key", Some(&root), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let a = h
        .call(
            "GET",
            "/v1/transit/export/encryption-key/app",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(
        h.post(&token, "keys/app/rotate", json!({})).await.status,
        StatusCode::FORBIDDEN
    );
}

// Two servers over one storage rotate the same key concurrently: every
// rotation lands as its own version (compare-and-swap, no lost updates).
#[tokio::test]
async fn concurrent_rotations_on_two_nodes_never_lose_a_version() {
    use zafe_storage::Backend;
    let backend: Arc<dyn Backend> =
        Arc::new(zafe_storage::sqlite::SqliteBackend::memory().await.unwrap());
    let master = SecretKey::generate();
    let node = |backend: Arc<dyn Backend>, master: SecretKey| async move {
        let clock = std::sync::Arc::new(zafe_engine::ManualClock::starting_now());
        let core = zafe_server::core::Core::new(zafe_server::core::CoreParts {
            config: zafe_server::Config::default(),
            clock: clock.clone(),
            projects: zafe_server::projects::rule(),
            engines: zafe_engines::build,
            backend,
            identity: zafe_core::identity::IdentityKey::generate(),
            master_key: Some(master),
            token_pepper: None,
            tls_spki: None,
            proxy_spki: None,
        })
        .await
        .unwrap();
        let app = zafe_server::http::router(core.clone());
        Harness { core, app, clock }
    };
    let one = node(backend.clone(), master.duplicate()).await;
    let (_, root) = one.init(1, 1).await;
    let two = node(backend, master).await;
    two.core.unseal_with_master_key().await.unwrap();
    one.call(
        "POST",
        "/v1/sys/mounts/transit",
        Some(&root),
        Some(json!({"type": "transit"})),
    )
    .await;
    one.post(&root, "keys/hot", json!({})).await;

    const PER_NODE: usize = 12;
    async fn rotate(h: &Harness, root: &str) -> Vec<Answer> {
        let calls: Vec<_> = (0..PER_NODE)
            .map(|_| h.post(root, "keys/hot/rotate", json!({})))
            .collect();
        futures_util::future::join_all(calls).await
    }
    let (a, b) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        tokio::join!(rotate(&one, &root), rotate(&two, &root))
    })
    .await
    .expect("rotations finish");
    for answer in a.iter().chain(b.iter()) {
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    }
    let a = two
        .call("GET", "/v1/transit/keys/hot", Some(&root), None)
        .await;
    assert_eq!(a.json["data"]["latest_version"], 1 + 2 * PER_NODE as u64);
    assert_eq!(
        a.json["data"]["keys"].as_object().unwrap().len(),
        1 + 2 * PER_NODE
    );
}
