//! R-KEY-1, R-KEY-3 against a real SQLite file: an attacker with write
//! access to the database swaps ciphertexts between rows, restores an older
//! ciphertext, and plants a copied token record; every read fails loudly.

use std::sync::Arc;

use sqlx::Connection;
use zafe_core::keyring::Keyring;
use zafe_server::barrier::{Barrier, BarrierError, Expect};
use zafe_storage::Backend;
use zafe_storage::sqlite::SqliteBackend;

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
    {
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
            .unwrap();
    }
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
            .put("secret/config", b"version two", Expect::Generation(1))
            .await
            .unwrap();
    }
    // Swap alice's and bob's ciphertexts (both at generation 1), and roll
    // the config back to version one.
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
    for (key, value) in [("secret/alice", &bob), ("secret/bob", &alice)] {
        sqlx::query("UPDATE zafe_entries SET value = ? WHERE key = CAST(? AS BLOB)")
            .bind(value)
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
    sqlx::query("UPDATE zafe_entries SET generation = 1 WHERE key = CAST('secret/config' AS BLOB)")
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
