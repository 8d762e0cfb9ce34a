//! The audit log's storage contract on both backends (R-AUD-2, R-AUD-5,
//! R-SCALE-2): sequence numbers from the database, one chain under
//! concurrent writers (several PostgreSQL nodes included), no forks,
//! append-only tables, paged reads far beyond 5,000 rows, the retention
//! sweep and checkpoints.
//!
//! PostgreSQL tests need `ZAFE_TEST_POSTGRES_URL` (see `support.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;

use sqlx::Connection;
use zafe_storage::Backend;
use zafe_storage::audit::{
    AuditCheckpoint, AuditDraft, AuditLink, AuditRow, GENESIS_HASH, TimeBound,
};
use zafe_storage::postgres::PostgresBackend;
use zafe_storage::sqlite::SqliteBackend;

use crate::support::with_postgres_database;

/// A stand-in for the server's hash: unique per sequence number, and it
/// records what the backend passed in, so the test can check the link.
fn link(seq: i64, prev: &[u8], draft: &AuditDraft) -> AuditLink {
    let mut hash = seq.to_be_bytes().to_vec();
    hash.extend_from_slice(&draft.body);
    let mut mac = prev.to_vec();
    mac.extend_from_slice(b"|mac");
    AuditLink { hash, mac }
}

fn draft(time_us: i64, body: &str) -> AuditDraft {
    AuditDraft {
        time_us,
        body: body.as_bytes().to_vec(),
    }
}

async fn append(backend: &dyn Backend, drafts: Vec<AuditDraft>) -> Vec<AuditRow> {
    backend.audit_append(drafts, &link).await.expect("append")
}

/// Reads the whole chain in pages of `page` and checks every link: dense
/// sequence numbers from `first`, each `prev_hash` the previous `hash`.
async fn read_all_checked(backend: &dyn Backend, page: usize) -> Vec<AuditRow> {
    let mut out: Vec<AuditRow> = Vec::new();
    let mut from = i64::MIN;
    loop {
        let rows = backend.audit_read(from, page).await.expect("read");
        let n = rows.len();
        for r in rows {
            if let Some(last) = out.last() {
                assert_eq!(r.seq, last.seq + 1, "sequence numbers are dense");
                assert_eq!(
                    r.prev_hash, last.hash,
                    "seq {} links to its predecessor",
                    r.seq
                );
            }
            assert_eq!(link(r.seq, &r.prev_hash, &draft(r.time_us, "")).mac, r.mac);
            from = r.seq + 1;
            out.push(r);
        }
        if n < page {
            return out;
        }
    }
}

/// The single-backend contract.
async fn contract(backend: &dyn Backend) {
    // Empty: the head is genesis.
    let head = backend.audit_head().await.unwrap();
    assert_eq!((head.seq, head.hash.as_slice()), (0, &GENESIS_HASH[..]));
    assert!(backend.audit_read(0, 10).await.unwrap().is_empty());
    assert!(append(backend, vec![]).await.is_empty());

    // The database numbers the rows and links them, across calls. Times go
    // backwards on purpose: order is by sequence, never by clock.
    let first = append(backend, vec![draft(3_000, "a"), draft(1_000, "b")]).await;
    let second = append(backend, vec![draft(2_000, "c")]).await;
    let seqs: Vec<i64> = first.iter().chain(&second).map(|r| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(first[0].prev_hash, GENESIS_HASH);
    assert_eq!(first[1].prev_hash, first[0].hash);
    assert_eq!(second[0].prev_hash, first[1].hash);
    let all = read_all_checked(backend, 2).await;
    assert_eq!(all, [first.clone(), second.clone()].concat());
    let bodies: Vec<&[u8]> = all.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies, [b"a", b"b", b"c"]);
    let head = backend.audit_head().await.unwrap();
    assert_eq!((head.seq, head.hash), (3, second[0].hash.clone()));

    // Time lookups for export ranges and retention.
    use TimeBound::*;
    assert_eq!(
        backend.audit_seq_at(1_500, FirstAtOrAfter).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        backend.audit_seq_at(2_500, FirstAtOrAfter).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        backend.audit_seq_at(3_001, FirstAtOrAfter).await.unwrap(),
        None
    );
    assert_eq!(
        backend.audit_seq_at(1_500, LastAtOrBefore).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        backend.audit_seq_at(999, LastAtOrBefore).await.unwrap(),
        None
    );

    // Checkpoints, paged by (seq, id).
    for (seq, kind) in [(3, "periodic"), (1, "anchor"), (3, "shutdown")] {
        backend
            .audit_checkpoint_append(AuditCheckpoint {
                id: 0,
                seq,
                hash: vec![seq as u8; 32],
                time_us: 7,
                kind: kind.into(),
                public_key: vec![1; 32],
                signature: vec![2; 64],
            })
            .await
            .unwrap();
    }
    let page1 = backend
        .audit_checkpoints((i64::MIN, i64::MIN), 2)
        .await
        .unwrap();
    let last = page1.last().unwrap();
    let page2 = backend
        .audit_checkpoints((last.seq, last.id), 2)
        .await
        .unwrap();
    let kinds: Vec<&str> = page1
        .iter()
        .chain(&page2)
        .map(|c| c.kind.as_str())
        .collect();
    assert_eq!(kinds, ["anchor", "periodic", "shutdown"]);
    assert_eq!(page2[0].signature, vec![2; 64]);

    // The sweep removes a prefix in batches; the head stays, and the chain
    // continues after it even when every row is gone.
    assert_eq!(backend.audit_sweep(2, 1).await.unwrap(), 1);
    assert_eq!(backend.audit_read(0, 10).await.unwrap()[0].seq, 2);
    assert_eq!(backend.audit_sweep(2, 10).await.unwrap(), 1);
    assert_eq!(backend.audit_sweep(2, 10).await.unwrap(), 0);
    assert_eq!(backend.audit_sweep(i64::MAX, 10).await.unwrap(), 1);
    assert!(backend.audit_read(0, 10).await.unwrap().is_empty());
    let after = append(backend, vec![draft(4_000, "d")]).await;
    assert_eq!((after[0].seq, &after[0].prev_hash), (4, &second[0].hash));
}

/// Far more than 5,000 rows (one comparable verifier read only the oldest
/// 5,000): paged reads see every row, in order.
async fn many_rows(backend: &dyn Backend, total: usize) {
    let start = backend.audit_head().await.unwrap().seq;
    for chunk in 0..total / 1000 {
        let drafts = (0..1000)
            .map(|i| draft(i, &format!("r{chunk}-{i}")))
            .collect();
        append(backend, drafts).await;
    }
    let all: Vec<AuditRow> = read_all_checked(backend, 777)
        .await
        .into_iter()
        .filter(|r| r.seq > start)
        .collect();
    assert_eq!(all.len(), total);
    assert_eq!(all.last().unwrap().seq, start + total as i64);
}

/// Several writers (tasks over one or more backends, like several server
/// nodes) append at once; the result is one dense chain holding every row
/// exactly once.
async fn concurrent_appends(
    backends: &[Arc<dyn Backend>],
    tasks_per_backend: usize,
    rounds: usize,
) {
    let mut handles = Vec::new();
    for (b, backend) in backends.iter().enumerate() {
        for t in 0..tasks_per_backend {
            let backend = backend.clone();
            handles.push(tokio::spawn(async move {
                for r in 0..rounds {
                    let size = 1 + (b + t + r) % 4;
                    let drafts = (0..size)
                        .map(|i| draft(0, &format!("{b}/{t}/{r}/{i}")))
                        .collect();
                    let rows = backend.audit_append(drafts, &link).await.expect("append");
                    // Within one call the rows are consecutive.
                    for pair in rows.windows(2) {
                        assert_eq!(pair[1].seq, pair[0].seq + 1);
                        assert_eq!(pair[1].prev_hash, pair[0].hash);
                    }
                }
            }));
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let expected: usize = (0..backends.len())
        .flat_map(|b| {
            (0..tasks_per_backend).flat_map(move |t| (0..rounds).map(move |r| 1 + (b + t + r) % 4))
        })
        .sum();
    let all = read_all_checked(&*backends[0], 500).await;
    assert_eq!(all.len(), expected, "every acknowledged row is stored once");
    assert_eq!(all[0].seq, 1);
    let bodies: BTreeSet<&[u8]> = all.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies.len(), expected, "no row twice");
    let head = backends[1 % backends.len()].audit_head().await.unwrap();
    assert_eq!(head.seq, expected as i64);
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_memory_audit_contract() {
    let backend = SqliteBackend::memory().await.unwrap();
    contract(&backend).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_file_audit_contract_and_many_rows() {
    let dir = tempfile::tempdir().unwrap();
    let backend = SqliteBackend::open(&dir.path().join("zafe.db"))
        .await
        .unwrap();
    contract(&backend).await;
    backend.close().await;
    let backend = SqliteBackend::open(&dir.path().join("zafe.db"))
        .await
        .unwrap();
    assert_eq!(
        backend.audit_head().await.unwrap().seq,
        4,
        "the head survives reopening"
    );
    let dir2 = tempfile::tempdir().unwrap();
    let fresh = SqliteBackend::open(&dir2.path().join("zafe.db"))
        .await
        .unwrap();
    many_rows(&fresh, 12_000).await;
}

/// Two backends on one file stand for two processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_concurrent_appends_make_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zafe.db");
    let a: Arc<dyn Backend> = Arc::new(SqliteBackend::open(&path).await.unwrap());
    let b: Arc<dyn Backend> = Arc::new(SqliteBackend::open(&path).await.unwrap());
    concurrent_appends(&[a, b], 6, 20).await;
}

#[tokio::test]
async fn sqlite_audit_rows_cannot_be_updated_or_forked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zafe.db");
    let backend = SqliteBackend::open(&path).await.unwrap();
    append(&backend, vec![draft(1, "a"), draft(2, "b")]).await;
    backend
        .audit_checkpoint_append(AuditCheckpoint {
            id: 0,
            seq: 2,
            hash: vec![0; 32],
            time_us: 0,
            kind: "periodic".into(),
            public_key: vec![],
            signature: vec![],
        })
        .await
        .unwrap();

    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    for sql in [
        "UPDATE zafe_audit SET body = x'00' WHERE seq = 1",
        "UPDATE zafe_audit_checkpoints SET seq = 1",
        "DELETE FROM zafe_audit_checkpoints",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // A second row claiming seq 1's predecessor: a fork, refused by the
    // UNIQUE constraint whatever the writer does.
    let err = sqlx::query(
        "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) \
         SELECT 99, 0, prev_hash, x'01', x'01', x'01' FROM zafe_audit WHERE seq = 1",
    )
    .execute(&mut conn)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
    conn.close().await.unwrap();
    read_all_checked(&backend, 10).await;
}

// ---- PostgreSQL ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_audit_contract_and_many_rows() {
    with_postgres_database("zafe_audit_test", |url| async move {
        let backend = PostgresBackend::connect(&url).await.unwrap();
        contract(&backend).await;
        many_rows(&backend, 12_000).await;
        backend.close().await;
    })
    .await;
}

/// Several nodes over one database append at once: one chain, no fork, no
/// lost row (R-AUD-5, R-SCALE-2).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_several_nodes_append_one_chain() {
    with_postgres_database("zafe_audit_test", |url| async move {
        let (a, b, c) = tokio::join!(
            PostgresBackend::connect(&url),
            PostgresBackend::connect(&url),
            PostgresBackend::connect(&url),
        );
        let nodes: Vec<Arc<dyn Backend>> = vec![
            Arc::new(a.unwrap()),
            Arc::new(b.unwrap()),
            Arc::new(c.unwrap()),
        ];
        concurrent_appends(&nodes, 8, 15).await;
    })
    .await;
}

#[tokio::test]
async fn postgres_audit_tables_are_append_only() {
    with_postgres_database("zafe_audit_test", |url| async move {
        let backend = PostgresBackend::connect(&url).await.unwrap();
        append(&backend, vec![draft(1, "a"), draft(2, "b"), draft(3, "c")]).await;
        backend
            .audit_checkpoint_append(AuditCheckpoint {
                id: 0,
                seq: 3,
                hash: vec![0; 32],
                time_us: 0,
                kind: "periodic".into(),
                public_key: vec![],
                signature: vec![],
            })
            .await
            .unwrap();
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        for sql in [
            "UPDATE zafe_audit SET body = '\\x00' WHERE seq = 1",
            "DELETE FROM zafe_audit WHERE seq = 3",
            "TRUNCATE zafe_audit",
            "UPDATE zafe_audit_checkpoints SET seq = 1",
            "DELETE FROM zafe_audit_checkpoints",
            "TRUNCATE zafe_audit_checkpoints",
        ] {
            let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
            assert!(err.to_string().contains("append-only"), "{sql}: {err}");
        }
        let err = sqlx::query(
            "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) \
             SELECT 99, 0, prev_hash, '\\x01', '\\x01', '\\x01' FROM zafe_audit WHERE seq = 1",
        )
        .execute(&mut conn)
        .await
        .unwrap_err();
        assert!(
            err.to_string().contains("23505") || err.to_string().contains("unique"),
            "{err}"
        );
        // The sweep's own setting does not leak out of its transaction.
        assert_eq!(backend.audit_sweep(1, 10).await.unwrap(), 1);
        assert!(
            sqlx::query("DELETE FROM zafe_audit")
                .execute(&mut conn)
                .await
                .is_err()
        );
        assert_eq!(read_all_checked(&backend, 10).await.len(), 2);
        conn.close().await.unwrap();
        backend.close().await;
    })
    .await;
}
