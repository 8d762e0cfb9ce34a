//! R-KEY-1, R-KEY-3, R-KEY-9 against a real SQLite file: an attacker with
//! write access to the database swaps ciphertexts between rows, restores an
//! older ciphertext (also after the record was deleted and re-created),
//! removes or re-inserts policy rows, and restores the whole store from an
//! older copy; every read fails loudly, and the old store is recognised.

use std::sync::Arc;

use crate::common::{Harness, token_with, unsealed, write_policy};
use http::StatusCode;
use serde_json::json;

use sqlx::Connection;
use zafe_core::keyring::Keyring;
use zafe_server::barrier::{Barrier, BarrierError, Expect};
use zafe_storage::sqlite::SqliteBackend;
use zafe_storage::{Backend, Condition, Entry, Op};

async fn raw(path: &std::path::Path) -> sqlx::SqliteConnection {
    sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap()
}

async fn barrier_on(path: &std::path::Path, keyring: &Keyring) -> Barrier {
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::open(path).await.unwrap());
    let barrier = Barrier::new(backend);
    barrier.unseal(
        zafe_core::SecretKey::generate(),
        Keyring::from_bytes(&keyring.to_bytes()).unwrap(),
    );
    barrier
}

#[tokio::test]
async fn tampering_with_the_sqlite_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zafe.db");
    let keyring = Keyring::generate();
    let config_v1 = {
        let barrier = barrier_on(&path, &keyring).await;
        barrier
            .put("secret/alice", b"alice's password", Expect::Absent)
            .await
            .unwrap();
        barrier
            .put("secret/bob", b"bob's password", Expect::Absent)
            .await
            .unwrap();
        barrier
            .put("secret/config", b"version one", Expect::Absent)
            .await
            .unwrap()
    };
    let mut db = raw(&path).await;
    // Nothing readable in the file.
    let all: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT value FROM zafe_entries")
        .fetch_all(&mut db)
        .await
        .unwrap();
    for (value,) in &all {
        assert!(!value.windows(8).any(|w| w == b"password"));
    }
    // Keep version one's ciphertext, then write version two.
    let (old,): (Vec<u8>,) =
        sqlx::query_as("SELECT value FROM zafe_entries WHERE key = CAST('secret/config' AS BLOB)")
            .fetch_one(&mut db)
            .await
            .unwrap();
    {
        let barrier = barrier_on(&path, &keyring).await;
        barrier
            .put(
                "secret/config",
                b"version two",
                Expect::Generation(config_v1),
            )
            .await
            .unwrap();
    }
    // Swap alice's and bob's ciphertexts (with their generations: alice's
    // row gets bob's whole row), and roll the config back to version one.
    let value_of = |key: &'static str| {
        format!("SELECT value FROM zafe_entries WHERE key = CAST('{key}' AS BLOB)")
    };
    let (alice,): (Vec<u8>,) = sqlx::query_as(&value_of("secret/alice"))
        .fetch_one(&mut db)
        .await
        .unwrap();
    let (bob,): (Vec<u8>,) = sqlx::query_as(&value_of("secret/bob"))
        .fetch_one(&mut db)
        .await
        .unwrap();
    let generation_of = |key: &'static str| {
        format!("SELECT generation FROM zafe_entries WHERE key = CAST('{key}' AS BLOB)")
    };
    let (alice_g,): (i64,) = sqlx::query_as(&generation_of("secret/alice"))
        .fetch_one(&mut db)
        .await
        .unwrap();
    let (bob_g,): (i64,) = sqlx::query_as(&generation_of("secret/bob"))
        .fetch_one(&mut db)
        .await
        .unwrap();
    for (key, value, generation) in [
        ("secret/alice", &bob, bob_g),
        ("secret/bob", &alice, alice_g),
    ] {
        sqlx::query(
            "UPDATE zafe_entries SET value = ?, generation = ? WHERE key = CAST(? AS BLOB)",
        )
        .bind(value)
        .bind(generation)
        .bind(key)
        .execute(&mut db)
        .await
        .unwrap();
    }
    sqlx::query("UPDATE zafe_entries SET value = ? WHERE key = CAST('secret/config' AS BLOB)")
        .bind(&old)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();

    let barrier = barrier_on(&path, &keyring).await;
    for key in ["secret/alice", "secret/bob", "secret/config"] {
        match barrier.get(key).await {
            Err(BarrierError::Integrity { key: k }) => assert_eq!(k, key),
            Ok(r) => panic!(
                "{key} returned {:?} instead of failing",
                r.map(|r| String::from_utf8_lossy(&r.value).into_owned())
            ),
            Err(e) => panic!("{key}: unexpected error {e}"),
        }
    }
    // Rolling back the generation column too makes version one readable
    // again: the limit of what location binding can detect on its own, which
    // SECURITY.md states.
    let mut db = raw(&path).await;
    sqlx::query("UPDATE zafe_entries SET generation = ? WHERE key = CAST('secret/config' AS BLOB)")
        .bind(config_v1)
        .execute(&mut db)
        .await
        .unwrap();
    db.close().await.unwrap();
    let barrier = barrier_on(&path, &keyring).await;
    assert_eq!(
        &barrier.get("secret/config").await.unwrap().unwrap().value[..],
        b"version one"
    );
}

// A flipped byte anywhere in a stored envelope fails the read.
#[tokio::test]
async fn a_flipped_byte_in_the_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zafe.db");
    let keyring = Keyring::generate();
    barrier_on(&path, &keyring)
        .await
        .put("k", b"value", Expect::Absent)
        .await
        .unwrap();
    let mut db = raw(&path).await;
    let (value,): (Vec<u8>,) =
        sqlx::query_as("SELECT value FROM zafe_entries WHERE key = CAST('k' AS BLOB)")
            .fetch_one(&mut db)
            .await
            .unwrap();
    for i in [0, 1, 5, 40, value.len() - 1] {
        let mut bad = value.clone();
        bad[i] ^= 0x01;
        sqlx::query("UPDATE zafe_entries SET value = ? WHERE key = CAST('k' AS BLOB)")
            .bind(&bad)
            .execute(&mut db)
            .await
            .unwrap();
        let barrier = barrier_on(&path, &keyring).await;
        assert!(barrier.get("k").await.is_err(), "byte {i}");
    }
}

// ---- R-KEY-9: delete and re-create, removed and re-inserted rows ----------

/// Overwrites the value of `key` behind the server's back, keeping the
/// row's current generation: an old ciphertext copied back alone.
async fn copy_back_value(backend: &dyn Backend, key: &str, value: Vec<u8>) {
    let current = backend.get(key).await.unwrap().unwrap();
    backend
        .commit(vec![Op::Put {
            entry: Entry {
                key: key.into(),
                value,
                generation: current.generation,
            },
            condition: Condition::Any,
        }])
        .await
        .unwrap();
}

/// Puts a whole row (value and generation) back, or removes one, behind the
/// server's back.
async fn raw_put(backend: &dyn Backend, entry: Entry) {
    backend
        .commit(vec![Op::Put {
            entry,
            condition: Condition::Any,
        }])
        .await
        .unwrap();
}

async fn raw_delete(backend: &dyn Backend, key: &str) {
    backend
        .commit(vec![Op::Delete {
            key: key.into(),
            condition: Condition::Any,
        }])
        .await
        .unwrap();
}

async fn delete_policy(h: &Harness, root: &str, name: &str) {
    let a = h
        .call(
            "DELETE",
            &format!("/v1/sys/policy/{name}"),
            Some(root),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
}

/// What `token` may do on `path`, or the error status.
async fn capabilities(h: &Harness, token: &str, path: &str) -> Result<Vec<String>, StatusCode> {
    let a = h
        .call(
            "POST",
            "/v1/sys/capabilities-self",
            Some(token),
            Some(json!({ "paths": [path] })),
        )
        .await;
    if a.status != StatusCode::OK {
        return Err(a.status);
    }
    let mut caps: Vec<String> = a.json[path]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    caps.sort();
    Ok(caps)
}

const WIDE: &str = r#"path "secret/data/*" { capabilities = ["read", "update"] }"#;
const NARROW: &str = r#"path "secret/data/app/*" { capabilities = ["read"] }"#;

// R-KEY-9: policy `app` is wide, then narrowed, deleted and re-created
// narrow. The wide ciphertext, copied back alone into the current row, must
// fail its integrity check. (Before generations were drawn fresh, the
// re-created record started again at generation 1, the wide one's, and the
// copy decrypted as the current policy: the token was widened silently.)
#[tokio::test]
async fn an_old_policy_ciphertext_copied_back_after_delete_and_recreate_fails() {
    let (h, root) = unsealed().await;
    let backend = h.core.backend().clone();
    write_policy(&h, &root, "app", WIDE).await;
    let wide = backend.get("core/policy/app").await.unwrap().unwrap();
    write_policy(&h, &root, "app", NARROW).await;
    delete_policy(&h, &root, "app").await;
    write_policy(&h, &root, "app", NARROW).await;
    let recreated = backend.get("core/policy/app").await.unwrap().unwrap();
    let token = token_with(&h, &root, &["app"]).await;
    assert_eq!(
        capabilities(&h, &token, "secret/data/other").await,
        Ok(vec!["deny".to_string()])
    );

    copy_back_value(&*backend, "core/policy/app", wide.value.clone()).await;
    h.core.clear_acl_cache();
    assert_eq!(
        capabilities(&h, &token, "secret/data/other").await,
        Err(StatusCode::INTERNAL_SERVER_ERROR),
        "the wide policy must not be served"
    );
    let read = h.call("GET", "/v1/sys/policy/app", Some(&root), None).await;
    assert_eq!(
        read.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        read.json
    );
    assert_ne!(
        recreated.generation, wide.generation,
        "a re-created record must not reuse a generation"
    );
}

// R-KEY-9: the same for any record behind the barrier, e.g. a token's: a
// record deleted and re-created at the same key takes a fresh generation,
// so the old ciphertext copied back alone fails.
#[tokio::test]
async fn a_record_deleted_and_recreated_never_reuses_a_generation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zafe.db");
    let barrier = barrier_on(&path, &Keyring::generate()).await;
    let key = "sys/token/id/0123";
    let mut seen = std::collections::HashSet::new();
    let first = barrier
        .put(key, b"revoked token", Expect::Absent)
        .await
        .unwrap();
    seen.insert(first);
    let old = barrier.backend().get(key).await.unwrap().unwrap();
    for _ in 0..20 {
        barrier.delete(key).await.unwrap();
        let g = barrier
            .put(key, b"another token", Expect::Absent)
            .await
            .unwrap();
        assert!(seen.insert(g), "generation {g} was used before for {key}");
    }
    copy_back_value(&**barrier.backend(), key, old.value).await;
    assert!(matches!(
        barrier.get(key).await,
        Err(BarrierError::Integrity { .. })
    ));
}

// R-KEY-9: a token names policies `base` (grants secret/data/*) and
// `guard` (denies secret/data/prod/*). Removing guard's row behind the
// server's back must not widen the token silently: integrity error.
// (Before the policy index, a missing policy was skipped like one that
// never existed, and the token could read prod.)
#[tokio::test]
async fn a_policy_removed_behind_the_servers_back_is_an_integrity_error() {
    let (h, root) = unsealed().await;
    let backend = h.core.backend().clone();
    write_policy(&h, &root, "base", WIDE).await;
    write_policy(
        &h,
        &root,
        "guard",
        r#"path "secret/data/prod/*" { capabilities = ["deny"] }"#,
    )
    .await;
    let token = token_with(&h, &root, &["base", "guard"]).await;
    raw_delete(&*backend, "core/policy/guard").await;
    assert_eq!(
        capabilities(&h, &token, "secret/data/prod/db").await,
        Err(StatusCode::INTERNAL_SERVER_ERROR)
    );
}

// R-KEY-9, Vault's behaviour: a policy deleted through the API is dropped
// from the tokens that name it, and a policy that never existed is ignored;
// both tokens keep working with the rest of their policies. But a deleted
// policy's row put back behind the server's back (a deleted deny policy
// re-inserted, or a deleted grant) is an integrity error.
#[tokio::test]
async fn a_deleted_policy_is_dropped_but_its_row_put_back_is_an_integrity_error() {
    let (h, root) = unsealed().await;
    let backend = h.core.backend().clone();
    write_policy(&h, &root, "base", NARROW).await;
    write_policy(&h, &root, "extra", WIDE).await;
    let token = token_with(&h, &root, &["base", "extra", "never-created"]).await;
    assert_eq!(
        capabilities(&h, &token, "secret/data/other").await,
        Ok(vec!["read".to_string(), "update".to_string()])
    );
    let extra_row = backend.get("core/policy/extra").await.unwrap().unwrap();
    delete_policy(&h, &root, "extra").await;
    assert_eq!(
        capabilities(&h, &token, "secret/data/other").await,
        Ok(vec!["deny".to_string()]),
        "the deleted policy no longer applies"
    );
    assert_eq!(
        capabilities(&h, &token, "secret/data/app/x").await,
        Ok(vec!["read".to_string()]),
        "the token keeps its other policies"
    );

    raw_put(&*backend, extra_row).await;
    h.core.clear_acl_cache();
    assert_eq!(
        capabilities(&h, &token, "secret/data/other").await,
        Err(StatusCode::INTERNAL_SERVER_ERROR),
        "a deleted row put back must not apply again"
    );
}

// R-KEY-9: a whole store put back from an earlier copy is behind the anchor
// (the newest checkpoint this node signed, kept outside the store); a store
// whose log went another way is detected too; the current store passes.
#[tokio::test]
async fn a_store_behind_or_beside_the_anchor_is_detected() {
    use zafe_server::anchor::{self, AnchorError};
    use zafe_server::audit::{AuditConfig, AuditLog, Event};

    async fn log_entry(log: &AuditLog) {
        let event = Event {
            v: zafe_core::audit::EVENT_VERSION,
            time_us: zafe_server::audit::now_us(),
            method: "GET".into(),
            path: "sys/health".into(),
            ..Event::default()
        };
        log.record(event, log.keys()).await.unwrap();
    }

    async fn log_with(entries: usize, identity: &zafe_core::identity::IdentityKey) -> AuditLog {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let log = AuditLog::start(backend, &AuditConfig::default(), identity).unwrap();
        log.unsealed(&Keyring::generate());
        for _ in 0..entries {
            log_entry(&log).await;
        }
        log
    }

    let dir = tempfile::tempdir().unwrap();
    let anchor_file = anchor::path_for(&dir.path().join("identity.key"));
    assert_eq!(anchor_file, dir.path().join("identity.key.anchor"));
    let identity = zafe_core::identity::IdentityKey::generate();

    let current = log_with(5, &identity).await;
    current.set_anchor(anchor_file.clone());
    let cp = current.checkpoint("periodic").await.unwrap().unwrap();
    assert_eq!(cp.seq, 5);
    let anchor = anchor::read(&anchor_file, &identity.public_key())
        .unwrap()
        .expect("the checkpoint was anchored");
    assert_eq!((anchor.seq, &anchor.hash), (cp.seq, &cp.hash));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&anchor_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    anchor::check(&**current.backend(), &anchor, &anchor_file)
        .await
        .unwrap();

    let older = log_with(3, &identity).await;
    let err = anchor::check(&**older.backend(), &anchor, &anchor_file)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            AnchorError::Behind {
                store_seq: 3,
                anchor_seq: 5,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("entry 3") && message.contains("entry 5"),
        "{message}"
    );
    assert!(message.contains("--accept-rollback"), "{message}");

    let other = log_with(7, &identity).await;
    let err = anchor::check(&**other.backend(), &anchor, &anchor_file)
        .await
        .unwrap_err();
    assert!(matches!(err, AnchorError::Diverged { .. }), "{err}");

    // A running server whose database went back (or elsewhere) under it
    // keeps the anchor where it was, so the next start still refuses.
    for store in [&older, &other] {
        store.set_anchor(anchor_file.clone());
        assert!(store.checkpoint("periodic").await.unwrap().is_some());
        let kept = anchor::read(&anchor_file, &identity.public_key())
            .unwrap()
            .unwrap();
        assert_eq!((kept.seq, &kept.hash), (anchor.seq, &anchor.hash));
    }
    // The current store moves it on.
    log_entry(&current).await;
    let cp = current.checkpoint("periodic").await.unwrap().unwrap();
    let moved = anchor::read(&anchor_file, &identity.public_key())
        .unwrap()
        .unwrap();
    assert_eq!((moved.seq, &moved.hash), (6, &cp.hash));

    // An anchor signed by another identity is not this server's.
    assert!(matches!(
        anchor::read(
            &anchor_file,
            &zafe_core::identity::IdentityKey::generate().public_key()
        ),
        Err(AnchorError::File { .. })
    ));
}
