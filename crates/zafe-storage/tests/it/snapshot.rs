//! Online backup and restore at the storage level (R-OPS-8): a snapshot is
//! consistent while another task keeps committing, a restore reproduces
//! entries (values and generations), audit rows (sequence numbers, hashes,
//! MACs), the audit head and checkpoints byte for byte, on both backends and
//! across them; a store that is not empty is refused unless forced (then
//! replaced in one transaction); a truncated or edited file writes nothing.
//!
//! PostgreSQL tests need `ZAFE_TEST_POSTGRES_URL` (see `support.rs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use zafe_core::backup::{BackupError, Frame, Reader, Writer};
use zafe_storage::audit::{AuditCheckpoint, AuditDraft, AuditHead, AuditLink, AuditRow};
use zafe_storage::postgres::PostgresBackend;
use zafe_storage::snapshot::{RestoreOptions, RestoreSummary};
use zafe_storage::sqlite::SqliteBackend;
use zafe_storage::{Backend, Condition, Entry, Op, StorageError};

use crate::support::{put_entry, with_postgres_database};

fn link(seq: i64, prev: &[u8], draft: &AuditDraft) -> AuditLink {
    let mut hash = seq.to_be_bytes().to_vec();
    hash.extend_from_slice(&draft.body);
    let mut mac = prev.to_vec();
    mac.extend_from_slice(b"|mac");
    AuditLink { hash, mac }
}

fn shared_link() -> zafe_storage::audit::SharedLinker {
    Arc::new(link)
}

fn draft(time_us: i64, body: &str) -> AuditDraft {
    AuditDraft {
        time_us,
        body: body.as_bytes().to_vec(),
    }
}

/// Everything a store holds, read through the ordinary API.
#[derive(Debug, PartialEq, Eq)]
struct Dump {
    entries: Vec<Entry>,
    audit: Vec<AuditRow>,
    checkpoints: Vec<AuditCheckpoint>,
    head: AuditHead,
}

async fn dump(b: &dyn Backend) -> Dump {
    let mut entries = Vec::new();
    for key in b.keys("", "", usize::MAX).await.unwrap() {
        entries.push(b.get(&key).await.unwrap().unwrap());
    }
    Dump {
        entries,
        audit: b.audit_read(i64::MIN, usize::MAX).await.unwrap(),
        checkpoints: b
            .audit_checkpoints((i64::MIN, i64::MIN), usize::MAX)
            .await
            .unwrap(),
        head: b.audit_head().await.unwrap(),
    }
}

/// More than a page of everything, binary values, a swept start of the
/// chain (so sequence numbers do not start at 1) and checkpoints.
async fn fill(b: &dyn Backend) {
    for chunk in 0..3 {
        let ops = (0..450)
            .map(|i| {
                let n = chunk * 450 + i;
                put_entry(
                    &format!("logical/{n:05}"),
                    &[n as u8, 0, 0xFF, (n >> 8) as u8],
                    (n as i64) * 7919 - 1_000_000,
                    Condition::Absent,
                )
            })
            .collect();
        b.commit(ops).await.unwrap();
    }
    b.commit(vec![put_entry("seal/config", b"", 1, Condition::Any)])
        .await
        .unwrap();
    for i in 0..3 {
        let drafts = (0..250).map(|j| draft(i * 1000 + j, &format!("e{i}-{j}")));
        b.audit_append(drafts.collect(), &link).await.unwrap();
    }
    b.commit_audited(
        vec![put_entry("core/x", b"x", 42, Condition::Absent)],
        vec![draft(9_999, "with a change")],
        shared_link(),
    )
    .await
    .unwrap();
    assert_eq!(b.audit_sweep(10, 100).await.unwrap(), 10);
    for seq in [100, 200, 200, 751] {
        b.audit_checkpoint_append(AuditCheckpoint {
            id: 0,
            seq,
            hash: seq.to_be_bytes().to_vec(),
            time_us: seq * 3,
            kind: "periodic".into(),
            public_key: vec![7; 32],
            signature: vec![seq as u8; 64],
        })
        .await
        .unwrap();
    }
}

/// A backup file, as the server streams it.
async fn take(b: &dyn Backend) -> Vec<u8> {
    let (tx, mut rx) = mpsc::channel(16);
    let collect = async move {
        let mut writer = Writer::new();
        let mut bytes = Vec::new();
        while let Some(frame) = rx.recv().await {
            bytes.extend(writer.frame(&frame));
        }
        bytes
    };
    let (taken, bytes) = tokio::join!(b.snapshot(tx), collect);
    taken.unwrap();
    bytes
}

#[derive(Debug)]
enum Refused {
    File(BackupError),
    Storage(StorageError),
}

/// Feeds a backup file to `b.restore` in small pieces, as the server does
/// with an upload.
async fn restore(b: &dyn Backend, bytes: &[u8], force: bool) -> Result<RestoreSummary, Refused> {
    let options = if force {
        RestoreOptions::forced()
    } else {
        RestoreOptions::empty()
    };
    restore_with(b, bytes, &options).await
}

async fn restore_with(
    b: &dyn Backend,
    bytes: &[u8],
    options: &RestoreOptions,
) -> Result<RestoreSummary, Refused> {
    let (tx, rx) = mpsc::channel(16);
    let feed = async move {
        let mut reader = Reader::new();
        for piece in bytes.chunks(1000) {
            for frame in reader.push(piece)? {
                if tx.send(frame).await.is_err() {
                    return Ok(());
                }
            }
        }
        reader.finish()
        // `tx` drops here: a restore that did not see `End` rolls back.
    };
    let (restored, fed) = tokio::join!(b.restore(rx, options), feed);
    fed.map_err(Refused::File)?;
    restored.map_err(Refused::Storage)
}

async fn round_trip(from: &dyn Backend, to: &dyn Backend) {
    fill(from).await;
    let before = dump(from).await;
    assert_eq!(before.audit.first().unwrap().seq, 11, "the sweep happened");
    let file = take(from).await;
    let summary = restore(to, &file, false).await.unwrap();
    assert_eq!(
        summary,
        RestoreSummary {
            entries: before.entries.len() as u64,
            audit_rows: before.audit.len() as u64,
            checkpoints: 4,
            replaced: false,
        }
    );
    let after = dump(to).await;
    assert_eq!(
        after, before,
        "byte-identical entries, audit rows, checkpoints and head"
    );

    // A second restore is refused: the store is no longer empty.
    let err = restore(to, &file, false).await.unwrap_err();
    assert!(
        matches!(&err, Refused::Storage(StorageError::Restore(m)) if m.contains("not empty")),
        "{err:?}"
    );
    assert_eq!(dump(to).await, before);

    // The chain goes on from the restored head, and new checkpoints get new ids.
    let rows = to
        .audit_append(vec![draft(1, "next")], &link)
        .await
        .unwrap();
    assert_eq!(rows[0].seq, before.head.seq + 1);
    assert_eq!(rows[0].prev_hash, before.head.hash);
    to.audit_checkpoint_append(AuditCheckpoint {
        id: 0,
        seq: rows[0].seq,
        hash: rows[0].hash.clone(),
        time_us: 0,
        kind: "periodic".into(),
        public_key: vec![],
        signature: vec![],
    })
    .await
    .unwrap();
    let cps = to
        .audit_checkpoints((i64::MIN, i64::MIN), 100)
        .await
        .unwrap();
    assert_eq!(cps.len(), 5);
    assert!(cps[4].id > before.checkpoints.iter().map(|c| c.id).max().unwrap());
}

/// `--force` replaces everything, in one transaction.
async fn forced(from: &dyn Backend, to: &dyn Backend) {
    fill(from).await;
    let before = dump(from).await;
    let file = take(from).await;
    to.commit(vec![put_entry("stale/key", b"old", 5, Condition::Absent)])
        .await
        .unwrap();
    to.audit_append(vec![draft(1, "old")], &link).await.unwrap();
    to.audit_checkpoint_append(AuditCheckpoint {
        id: 0,
        seq: 1,
        hash: vec![1],
        time_us: 0,
        kind: "periodic".into(),
        public_key: vec![],
        signature: vec![],
    })
    .await
    .unwrap();
    let summary = restore(to, &file, true).await.unwrap();
    assert!(summary.replaced);
    assert_eq!(dump(to).await, before, "nothing of the old store is left");
}

/// A store that holds only keys the caller may replace (a new server's
/// identity record) counts as empty; those keys are replaced. Any other key
/// still makes it not empty.
async fn replaceable(from: &dyn Backend, to: &dyn Backend) {
    fill(from).await;
    from.commit(vec![put_entry(
        "seal/identity",
        b"theirs",
        9,
        Condition::Any,
    )])
    .await
    .unwrap();
    let file = take(from).await;
    to.commit(vec![put_entry(
        "seal/identity",
        b"mine",
        1,
        Condition::Absent,
    )])
    .await
    .unwrap();
    let err = restore(to, &file, false).await.unwrap_err();
    assert!(
        matches!(err, Refused::Storage(StorageError::Restore(_))),
        "{err:?}"
    );
    let options = RestoreOptions {
        force: false,
        replaceable: vec!["seal/identity".into()],
    };
    to.commit(vec![put_entry("other/key", b"x", 1, Condition::Absent)])
        .await
        .unwrap();
    let err = restore_with(to, &file, &options).await.unwrap_err();
    assert!(
        matches!(err, Refused::Storage(StorageError::Restore(_))),
        "{err:?}"
    );
    to.commit(vec![Op::Delete {
        key: "other/key".into(),
        condition: Condition::Any,
    }])
    .await
    .unwrap();
    let summary = restore_with(to, &file, &options).await.unwrap();
    assert!(!summary.replaced);
    assert_eq!(dump(to).await, dump(from).await);
}

/// Truncated or edited files, and a stream that stops early, write nothing.
async fn refuses_damage(from: &dyn Backend, to: &dyn Backend) {
    fill(from).await;
    let file = take(from).await;
    let empty = dump(to).await;

    let cut = &file[..file.len() - 10];
    let err = restore(to, cut, false).await.unwrap_err();
    assert!(
        matches!(err, Refused::File(BackupError::Truncated)),
        "{err:?}"
    );
    assert_eq!(dump(to).await, empty);

    let mut edited = file.clone();
    let middle = edited.len() / 2;
    edited[middle] ^= 0x20;
    let err = restore(to, &edited, false).await.unwrap_err();
    assert!(matches!(err, Refused::File(_)), "{err:?}");
    assert_eq!(dump(to).await, empty);

    // A frame stream with the right hash but whose counts disagree with the
    // header (a second, consistent-looking producer) is refused by storage.
    let frames = zafe_core::backup::read_all(&file).unwrap();
    let mut writer = Writer::new();
    let mut fewer = Vec::new();
    let mut dropped = false;
    for f in &frames {
        if matches!(f, Frame::Entry { .. }) && !dropped {
            dropped = true;
            continue;
        }
        fewer.extend(writer.frame(f));
    }
    let err = restore(to, &fewer, false).await.unwrap_err();
    assert!(matches!(err, Refused::File(_)), "{err:?}");
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        for f in frames
            .into_iter()
            .filter(|f| !matches!(f, Frame::Checkpoint(_)))
        {
            let _ = tx.send(f).await;
        }
    };
    let empty_only = RestoreOptions::empty();
    let (restored, ()) = tokio::join!(to.restore(rx, &empty_only), feed);
    assert!(
        matches!(&restored, Err(StorageError::Restore(m)) if m.contains("counts")),
        "{restored:?}"
    );
    assert_eq!(dump(to).await, empty);

    // The whole file still restores.
    restore(to, &file, false).await.unwrap();
    assert_eq!(dump(to).await, dump(from).await);
}

/// A writer commits a counter, a new key per step and an audit entry in one
/// transaction; every snapshot taken meanwhile shows them in step.
async fn consistent_under_writes(b: Arc<dyn Backend>) {
    fill(&*b).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (b, stop) = (b.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let condition = if n == 0 {
                    Condition::Absent
                } else {
                    Condition::Generation(n)
                };
                n += 1;
                b.commit_audited(
                    vec![
                        put_entry("w/counter", n.to_string().as_bytes(), n, condition),
                        put_entry(&format!("w/step/{n:08}"), b"s", 1, Condition::Absent),
                    ],
                    vec![draft(n, &format!("step {n}"))],
                    shared_link(),
                )
                .await
                .unwrap();
            }
            n
        })
    };
    let mut seen = Vec::new();
    for _ in 0..6 {
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        let frames = zafe_core::backup::read_all(&take(&*b).await).unwrap();
        let counter = frames.iter().find_map(|f| match f {
            Frame::Entry { key, value, .. } if key == "w/counter" => Some(
                String::from_utf8(value.clone())
                    .unwrap()
                    .parse::<i64>()
                    .unwrap(),
            ),
            _ => None,
        });
        let counter = counter.unwrap_or(0);
        let steps = frames
            .iter()
            .filter(|f| matches!(f, Frame::Entry { key, .. } if key.starts_with("w/step/")))
            .count() as i64;
        let last_step = frames
            .iter()
            .rev()
            .find_map(|f| match f {
                Frame::Audit(r) if r.body.starts_with(b"step ") => Some(
                    String::from_utf8(r.body[5..].to_vec())
                        .unwrap()
                        .parse::<i64>()
                        .unwrap(),
                ),
                _ => None,
            })
            .unwrap_or(0);
        assert_eq!(steps, counter, "every step key with its counter");
        assert_eq!(last_step, counter, "every audit entry with its change");
        seen.push(counter);
    }
    stop.store(true, Ordering::Relaxed);
    let total = writer.await.unwrap();
    assert!(
        total > 0 && seen.iter().any(|&c| c > 0 && c < total),
        "{seen:?} of {total}"
    );
}

async fn sqlite_file(dir: &tempfile::TempDir, name: &str) -> SqliteBackend {
    SqliteBackend::open(&dir.path().join(name)).await.unwrap()
}

// ---- SQLite ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_backup_restores_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    round_trip(
        &sqlite_file(&dir, "a.db").await,
        &sqlite_file(&dir, "b.db").await,
    )
    .await;
    round_trip(
        &SqliteBackend::memory().await.unwrap(),
        &SqliteBackend::memory().await.unwrap(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_forced_restore_replaces_everything() {
    let dir = tempfile::tempdir().unwrap();
    forced(
        &sqlite_file(&dir, "a.db").await,
        &sqlite_file(&dir, "b.db").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_restore_replaces_only_the_keys_it_may() {
    let dir = tempfile::tempdir().unwrap();
    replaceable(
        &sqlite_file(&dir, "a.db").await,
        &sqlite_file(&dir, "b.db").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restore_replaces_only_the_keys_it_may() {
    with_postgres_database("zafe_backup_replaceable", |url| async move {
        let dir = tempfile::tempdir().unwrap();
        let target = PostgresBackend::connect(&url).await.unwrap();
        replaceable(&sqlite_file(&dir, "a.db").await, &target).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_damaged_backups_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    refuses_damage(
        &sqlite_file(&dir, "a.db").await,
        &sqlite_file(&dir, "b.db").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_snapshot_is_consistent_under_writes() {
    let dir = tempfile::tempdir().unwrap();
    consistent_under_writes(Arc::new(sqlite_file(&dir, "a.db").await)).await;
}

// ---- PostgreSQL, and across backends ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backup_restores_on_both_backends() {
    with_postgres_database("zafe_backup_a", |url_a| async move {
        with_postgres_database("zafe_backup_b", |url_b| async move {
            let dir = tempfile::tempdir().unwrap();
            let a = PostgresBackend::connect(&url_a).await.unwrap();
            let b = PostgresBackend::connect(&url_b).await.unwrap();
            // PostgreSQL to PostgreSQL, to SQLite, and SQLite to PostgreSQL.
            round_trip(&a, &b).await;
            let from_pg = dump(&a).await;
            let file = take(&a).await;
            let s = sqlite_file(&dir, "from-pg.db").await;
            restore(&s, &file, false).await.unwrap();
            assert_eq!(dump(&s).await, from_pg);
            let s2 = sqlite_file(&dir, "source.db").await;
            fill(&s2).await;
            let c = {
                let file = take(&s2).await;
                let c = PostgresBackend::connect(&url_a).await.unwrap();
                restore(&c, &file, true).await.unwrap();
                c
            };
            assert_eq!(dump(&c).await, dump(&s2).await);
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_forced_restore_and_damaged_backups() {
    with_postgres_database("zafe_backup_force", |url| async move {
        let dir = tempfile::tempdir().unwrap();
        let target = PostgresBackend::connect(&url).await.unwrap();
        refuses_damage(&sqlite_file(&dir, "a.db").await, &target).await;
        // Not empty now: a forced restore of another store replaces it.
        let src = sqlite_file(&dir, "b.db").await;
        fill(&src).await;
        src.commit(vec![put_entry("only/in/b", b"b", 3, Condition::Absent)])
            .await
            .unwrap();
        let file = take(&src).await;
        let err = restore(&target, &file, false).await.unwrap_err();
        assert!(
            matches!(err, Refused::Storage(StorageError::Restore(_))),
            "{err:?}"
        );
        assert!(restore(&target, &file, true).await.unwrap().replaced);
        assert_eq!(dump(&target).await, dump(&src).await);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_forced_restore_replaces_everything() {
    with_postgres_database("zafe_backup_forced", |url| async move {
        let dir = tempfile::tempdir().unwrap();
        let target = PostgresBackend::connect(&url).await.unwrap();
        forced(&sqlite_file(&dir, "a.db").await, &target).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_snapshot_is_consistent_under_writes() {
    with_postgres_database("zafe_backup_consistent", |url| async move {
        consistent_under_writes(Arc::new(PostgresBackend::connect(&url).await.unwrap())).await;
    })
    .await;
}

/// Backup and restore time for 100,000 entries (issue 12, item 8): not a
/// test of behaviour, so ignored; run it with
/// `cargo test --workspace --test it -- --ignored backup_100k --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore]
async fn backup_100k_timings() {
    let dir = tempfile::tempdir().unwrap();
    let source = sqlite_file(&dir, "source.db").await;
    for chunk in 0..100 {
        let ops = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                put_entry(
                    &format!("logical/kv/data/app{n:06}"),
                    &[n as u8; 200],
                    n as i64,
                    Condition::Absent,
                )
            })
            .collect();
        source.commit(ops).await.unwrap();
    }
    let started = std::time::Instant::now();
    let file = take(&source).await;
    eprintln!(
        "snapshot of 100,000 entries (SQLite): {:?}, {} bytes",
        started.elapsed(),
        file.len()
    );
    let target = sqlite_file(&dir, "target.db").await;
    let started = std::time::Instant::now();
    restore(&target, &file, false).await.unwrap();
    eprintln!("restore into SQLite: {:?}", started.elapsed());
    with_postgres_database("zafe_backup_bench", |url| async move {
        let pg = PostgresBackend::connect(&url).await.unwrap();
        let started = std::time::Instant::now();
        restore(&pg, &file, false).await.unwrap();
        eprintln!("restore into PostgreSQL: {:?}", started.elapsed());
        let started = std::time::Instant::now();
        let again = take(&pg).await;
        eprintln!(
            "snapshot of 100,000 entries (PostgreSQL): {:?}",
            started.elapsed()
        );
        // The same records (the header names another backend).
        assert_eq!(
            zafe_core::backup::read_all(&again).unwrap()[1..],
            zafe_core::backup::read_all(&file).unwrap()[1..]
        );
    })
    .await;
}
