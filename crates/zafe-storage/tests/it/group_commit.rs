//! The SQLite file backend's group-commit writer and its entry cache:
//! concurrent commits share transactions yet each batch stays atomic on its
//! own; audit appends share them too; the cache never serves a value older
//! than the last acknowledged local commit, and notices other processes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use zafe_storage::audit::{AuditDraft, AuditLink};
use zafe_storage::sqlite::{SqliteBackend, SqliteOptions};
use zafe_storage::{Backend, CacheConfig, Condition, Op, StorageError, conformance};

use crate::support::put_entry;

async fn cached(path: &std::path::Path) -> SqliteBackend {
    SqliteBackend::open_with(
        path,
        SqliteOptions {
            cache: CacheConfig::default(),
        },
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_the_cache_on() {
    let dir = tempfile::tempdir().unwrap();
    let backend = cached(&dir.path().join("zafe.db")).await;
    conformance::run_all(&backend).await;
    backend.close().await;
}

// Many batches race for one key in the same transactions: exactly one wins,
// and every loser's other writes are rolled back with it, while unrelated
// batches in the same transactions commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_batch_is_atomic_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(cached(&dir.path().join("zafe.db")).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let backend = backend.clone();
        tasks.spawn(async move {
            let ops = if i % 2 == 0 {
                // Contenders: their own key plus the shared one.
                vec![
                    put_entry(&format!("own/{i}"), b"x", 1, Condition::Absent),
                    put_entry(&format!("own/{i}/more"), b"x", 1, Condition::Any),
                    put_entry("race", format!("{i}").as_bytes(), 1, Condition::Absent),
                ]
            } else {
                vec![
                    put_entry(&format!("free/{i}"), b"y", 1, Condition::Absent),
                    Op::Delete {
                        key: format!("never/{i}"),
                        condition: Condition::Absent,
                    },
                ]
            };
            (i, backend.commit(ops).await)
        });
    }
    let mut winners = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, result) = done.unwrap();
        match result {
            Ok(()) if i % 2 == 0 => winners.push(i),
            Ok(()) => {}
            Err(StorageError::Conflict { key }) => {
                assert_eq!(i % 2, 0, "an unrelated batch conflicted");
                assert_eq!(key, "race");
            }
            Err(e) => panic!("batch {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one contender wins");
    let winner = winners[0];
    let race = backend.get("race").await.unwrap().unwrap();
    assert_eq!(race.value, format!("{winner}").as_bytes());
    for i in 0..200 {
        let own = backend.get(&format!("own/{i}")).await.unwrap();
        let more = backend.get(&format!("own/{i}/more")).await.unwrap();
        let free = backend.get(&format!("free/{i}")).await.unwrap();
        if i % 2 == 1 {
            assert!(free.is_some(), "unrelated batch {i} lost");
        } else {
            assert_eq!(own.is_some(), i == winner, "batch {i} was applied in part");
            assert_eq!(more.is_some(), i == winner, "batch {i} was applied in part");
        }
    }
    // The same from a fresh connection (what is on disk, not the cache).
    backend.close().await;
    let reopened = SqliteBackend::open(&dir.path().join("zafe.db"))
        .await
        .unwrap();
    let keys = reopened.keys("", "", 10_000).await.unwrap();
    assert_eq!(keys.len(), 1 + 2 + 100, "{keys:?}");
}

// Commits and audit appends from many tasks at once: every acknowledged
// commit is there, and the chain is one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn audit_appends_share_the_writer_with_commits() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(cached(&dir.path().join("zafe.db")).await);
    let link = |seq: i64, prev: &[u8], draft: &AuditDraft| {
        let mut hash = prev.to_vec();
        hash.extend_from_slice(&seq.to_be_bytes());
        hash.extend_from_slice(&draft.body);
        AuditLink { hash, mac: vec![1] }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let backend = backend.clone();
        tasks.spawn(async move {
            for r in 0..25 {
                if t % 2 == 0 {
                    backend
                        .commit(vec![put_entry(
                            &format!("k/{t}/{r}"),
                            b"v",
                            1,
                            Condition::Absent,
                        )])
                        .await
                        .unwrap();
                } else {
                    let drafts = (0..3)
                        .map(|i| AuditDraft {
                            time_us: 1,
                            body: format!("{t}/{r}/{i}").into_bytes(),
                        })
                        .collect();
                    let rows = backend.audit_append(drafts, &link).await.unwrap();
                    assert_eq!(rows.len(), 3);
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(backend.keys("k/", "", 1000).await.unwrap().len(), 100);
    let rows = backend.audit_read(1, 1000).await.unwrap();
    assert_eq!(rows.len(), 4 * 25 * 3);
    for (i, pair) in rows.windows(2).enumerate() {
        assert_eq!(pair[0].seq, i as i64 + 1);
        assert_eq!(
            pair[1].prev_hash, pair[0].hash,
            "broken link at {}",
            pair[1].seq
        );
    }
    let bodies: BTreeSet<&[u8]> = rows.iter().map(|r| r.body.as_slice()).collect();
    assert_eq!(bodies.len(), rows.len());
    assert_eq!(backend.audit_head().await.unwrap().seq, 300);
}

// Readers racing writers never see a value older than the last commit that
// was acknowledged before their read started.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cached_reads_never_go_back_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(cached(&dir.path().join("zafe.db")).await);
    let acknowledged = Arc::new(std::sync::atomic::AtomicI64::new(0));
    backend
        .commit(vec![put_entry("counter", b"0", 0, Condition::Absent)])
        .await
        .unwrap();
    let writer = {
        let (backend, acknowledged) = (backend.clone(), acknowledged.clone());
        tokio::spawn(async move {
            for g in 1..=300i64 {
                backend
                    .commit(vec![put_entry(
                        "counter",
                        &g.to_be_bytes(),
                        g,
                        Condition::Generation(g - 1),
                    )])
                    .await
                    .unwrap();
                acknowledged.store(g, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let mut readers = Vec::new();
    for _ in 0..4 {
        let (backend, acknowledged) = (backend.clone(), acknowledged.clone());
        readers.push(tokio::spawn(async move {
            loop {
                let floor = acknowledged.load(std::sync::atomic::Ordering::SeqCst);
                let seen = backend.get("counter").await.unwrap().unwrap().generation;
                assert!(
                    seen >= floor,
                    "read generation {seen} after {floor} was acknowledged"
                );
                if floor == 300 {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }));
    }
    writer.await.unwrap();
    for r in readers {
        r.await.unwrap();
    }
}

// A second process on the same file: its commits clear this one's cache
// (within the idle poll), and a conflict drops the stale key at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_process_on_the_file_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("zafe.db");
    let a = cached(&path).await;
    let b = SqliteBackend::open(&path).await.unwrap();
    a.commit(vec![put_entry("k", b"1", 1, Condition::Absent)])
        .await
        .unwrap();
    assert_eq!(a.get("k").await.unwrap().unwrap().generation, 1);
    b.commit(vec![put_entry("k", b"2", 2, Condition::Generation(1))])
        .await
        .unwrap();
    // A compare-and-swap on the stale generation fails and drops it.
    let stale = a
        .commit(vec![put_entry("k", b"x", 2, Condition::Generation(1))])
        .await;
    assert!(
        matches!(stale, Err(StorageError::Conflict { .. })),
        "{stale:?}"
    );
    assert_eq!(a.get("k").await.unwrap().unwrap().value, b"2");
    // A plain read sees the other process's write once the writer notices.
    b.commit(vec![put_entry("k", b"3", 3, Condition::Generation(2))])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while a.get("k").await.unwrap().unwrap().value != b"3" {
        assert!(
            std::time::Instant::now() < deadline,
            "never noticed the other process"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    a.close().await;
    b.close().await;
}

// Closing finishes what was queued and then refuses new work.
#[tokio::test]
async fn closing_stops_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let backend = cached(&dir.path().join("zafe.db")).await;
    backend
        .commit(vec![put_entry("a", b"1", 1, Condition::Absent)])
        .await
        .unwrap();
    backend.close().await;
    let err = backend
        .commit(vec![put_entry("b", b"1", 1, Condition::Absent)])
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Backend(_)), "{err:?}");
}
