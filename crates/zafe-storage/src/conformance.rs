//! The behaviour every [`Backend`] must share, as executable checks.
//!
//! Both backends in this crate run these in `tests/it/backends.rs`, and other
//! crates can run them against a backend of their own (or one wrapped in
//! middleware) with [`run_all`]. The checks panic on the first violation,
//! like a test.
//!
//! Each check needs an **empty** backend, leaves it empty again, and uses
//! only keys it creates, so they can run in any order.

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use crate::audit::{AuditDraft, AuditLink, AuditRow, SharedLinker};
use crate::{Backend, Condition, Entry, Op, StorageError, list_children};

/// Runs every check in this module against `backend`, which must be empty.
pub async fn run_all(backend: &dyn Backend) {
    assert_empty(backend, "at the start of the conformance suite").await;
    ping(backend).await;
    get_missing_and_present(backend).await;
    generation_round_trip(backend).await;
    binary_values(backend).await;
    put_absent(backend).await;
    put_generation(backend).await;
    put_any(backend).await;
    commit_is_atomic(backend).await;
    delete_conditions(backend).await;
    keys_prefix_start_limit(backend).await;
    list_children_folders(backend).await;
    cas_counter(&[backend], 16, 50).await;
    notices(backend).await;
}

/// The next notice of `receiver` that `wanted` accepts, within 5 s (others are skipped).
pub async fn next_notice(
    receiver: &mut tokio::sync::broadcast::Receiver<crate::Notice>,
    wanted: impl FnMut(&crate::Notice) -> bool,
) -> crate::Notice {
    notices_until(receiver, wanted)
        .await
        .pop()
        .expect("the wanted notice")
}

/// Every notice of `receiver` up to and including the first that `wanted` accepts, within 5 s.
pub async fn notices_until(
    receiver: &mut tokio::sync::broadcast::Receiver<crate::Notice>,
    mut wanted: impl FnMut(&crate::Notice) -> bool,
) -> Vec<crate::Notice> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Ok(notice)) => {
                let done = wanted(&notice);
                seen.push(notice);
                if done {
                    return seen;
                }
            }
            Ok(Err(e)) => panic!("notices: {e}"),
            Err(_) => panic!("no such notice within 5 s"),
        }
    }
}

fn names(notice: &crate::Notice, key: &str) -> bool {
    matches!(notice, crate::Notice::Keys(keys) if keys.iter().any(|k| k == key))
}

/// Every commit is announced with its keys, after it succeeded, and a failed one is not; a
/// published message reaches the subscribers. (A backend may announce several commits in one
/// notice, and a subscriber may hear of earlier commits first.)
pub async fn notices(backend: &dyn Backend) {
    let mut notices = backend.notices();
    backend
        .commit(vec![
            put(entry("notice/a", b"1", 1), Condition::Absent),
            Op::Delete {
                key: "notice/b".into(),
                condition: Condition::Any,
            },
        ])
        .await
        .unwrap();
    let first = next_notice(&mut notices, |n| names(n, "notice/a")).await;
    assert!(names(&first, "notice/b"), "{first:?}");
    // A conflict writes nothing and announces nothing: no later notice names notice/a.
    assert!(
        backend
            .commit(vec![put(entry("notice/a", b"2", 1), Condition::Absent)])
            .await
            .is_err()
    );
    backend
        .commit(vec![put(entry("notice/c", b"1", 1), Condition::Any)])
        .await
        .unwrap();
    let until_c = notices_until(&mut notices, |n| names(n, "notice/c")).await;
    assert!(
        !until_c.iter().any(|n| names(n, "notice/a")),
        "a failed commit was announced: {until_c:?}"
    );
    backend
        .publish("zafe.test", "{\"hello\": 1}")
        .await
        .unwrap();
    let message = next_notice(&mut notices, |n| matches!(n, crate::Notice::Message { .. })).await;
    assert_eq!(
        message,
        crate::Notice::Message {
            topic: "zafe.test".into(),
            payload: "{\"hello\": 1}".into()
        }
    );
    backend
        .commit(vec![
            Op::Delete {
                key: "notice/a".into(),
                condition: Condition::Any,
            },
            Op::Delete {
                key: "notice/c".into(),
                condition: Condition::Any,
            },
        ])
        .await
        .unwrap();
}

/// `ping` answers.
pub async fn ping(backend: &dyn Backend) {
    backend.ping().await.expect("ping");
}

/// A missing key reads as `None`; a written one reads back exactly.
pub(crate) async fn get_missing_and_present(backend: &dyn Backend) {
    assert_eq!(get(backend, "get/missing").await, None);
    let entry = entry("get/present", b"ciphertext", 1);
    commit_ok(backend, vec![put(entry.clone(), Condition::Absent)]).await;
    assert_eq!(get(backend, "get/present").await, Some(entry));
    // A key that is a prefix of, or extends, a stored key is a different key.
    assert_eq!(get(backend, "get/presen").await, None);
    assert_eq!(get(backend, "get/present/").await, None);
    clear(backend).await;
}

/// The generation is stored as given, across the whole `i64` range.
pub(crate) async fn generation_round_trip(backend: &dyn Backend) {
    for (i, generation) in [0, 1, 42, -1, i64::MIN, i64::MAX].into_iter().enumerate() {
        let entry = entry(&format!("gen/{i}"), b"v", generation);
        commit_ok(backend, vec![put(entry.clone(), Condition::Any)]).await;
        assert_eq!(get(backend, &entry.key).await, Some(entry));
    }
    clear(backend).await;
}

/// Values are opaque bytes: every byte value, NUL included, and the empty
/// value survive unchanged.
pub(crate) async fn binary_values(backend: &dyn Backend) {
    let all_bytes: Vec<u8> = (0..=255u8).collect();
    let reversed: Vec<u8> = all_bytes.iter().rev().copied().collect();
    let large: Vec<u8> = (0..1 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
    for (key, value) in [
        ("bin/all", all_bytes),
        ("bin/reversed", reversed),
        ("bin/empty", Vec::new()),
        ("bin/nul", vec![0]),
        ("bin/large", large),
    ] {
        let entry = entry(key, &value, 7);
        commit_ok(backend, vec![put(entry.clone(), Condition::Absent)]).await;
        let read = get(backend, key).await.expect("value was just written");
        assert!(read.value == value, "{key}: value changed in storage");
        assert_eq!(read, entry);
    }
    clear(backend).await;
}

/// `Absent` creates a key once; a second attempt conflicts and changes nothing.
pub(crate) async fn put_absent(backend: &dyn Backend) {
    let first = entry("absent/k", b"first", 1);
    commit_ok(backend, vec![put(first.clone(), Condition::Absent)]).await;
    let second = entry("absent/k", b"second", 2);
    expect_conflict(backend, vec![put(second, Condition::Absent)], "absent/k").await;
    assert_eq!(get(backend, "absent/k").await, Some(first));
    clear(backend).await;
}

/// `Generation(g)` replaces a key only while it has generation `g`, and never
/// creates one.
pub(crate) async fn put_generation(backend: &dyn Backend) {
    let missing = entry("cas/missing", b"v", 1);
    expect_conflict(
        backend,
        vec![put(missing, Condition::Generation(0))],
        "cas/missing",
    )
    .await;
    assert_eq!(get(backend, "cas/missing").await, None);

    let v1 = entry("cas/k", b"one", 1);
    commit_ok(backend, vec![put(v1.clone(), Condition::Absent)]).await;
    let v2 = entry("cas/k", b"two", 2);
    commit_ok(backend, vec![put(v2.clone(), Condition::Generation(1))]).await;
    assert_eq!(get(backend, "cas/k").await, Some(v2.clone()));

    // A stale writer that still believes generation 1 loses.
    let stale = entry("cas/k", b"stale", 2);
    expect_conflict(backend, vec![put(stale, Condition::Generation(1))], "cas/k").await;
    // So does one that guesses a future generation.
    let ahead = entry("cas/k", b"ahead", 4);
    expect_conflict(backend, vec![put(ahead, Condition::Generation(3))], "cas/k").await;
    assert_eq!(get(backend, "cas/k").await, Some(v2));

    // The generation a writer chooses need not be `g + 1`.
    let v9 = entry("cas/k", b"nine", 9);
    commit_ok(backend, vec![put(v9.clone(), Condition::Generation(2))]).await;
    assert_eq!(get(backend, "cas/k").await, Some(v9));
    clear(backend).await;
}

/// `Any` creates and overwrites unconditionally.
pub(crate) async fn put_any(backend: &dyn Backend) {
    let v1 = entry("any/k", b"one", 5);
    commit_ok(backend, vec![put(v1.clone(), Condition::Any)]).await;
    assert_eq!(get(backend, "any/k").await, Some(v1));
    let v2 = entry("any/k", b"two", 3);
    commit_ok(backend, vec![put(v2.clone(), Condition::Any)]).await;
    assert_eq!(get(backend, "any/k").await, Some(v2));
    clear(backend).await;
}

/// One failed condition anywhere in a commit writes nothing at all, and the
/// conflict names the first op whose condition failed.
pub(crate) async fn commit_is_atomic(backend: &dyn Backend) {
    let a = entry("atomic/a", b"a", 1);
    let b = entry("atomic/b", b"b", 1);
    let c = entry("atomic/c", b"c", 1);
    commit_ok(
        backend,
        vec![
            put(a.clone(), Condition::Absent),
            put(b.clone(), Condition::Absent),
        ],
    )
    .await;

    // Ops before the failing one (a put, a delete, a new key) and after it
    // must all be undone.
    expect_conflict(
        backend,
        vec![
            put(entry("atomic/a", b"a2", 2), Condition::Generation(1)),
            Op::Delete {
                key: "atomic/b".into(),
                condition: Condition::Any,
            },
            put(entry("atomic/new", b"n", 1), Condition::Absent),
            put(c.clone(), Condition::Generation(1)), // atomic/c does not exist
            put(entry("atomic/later", b"l", 1), Condition::Any),
        ],
        "atomic/c",
    )
    .await;
    assert_eq!(get(backend, "atomic/a").await, Some(a.clone()));
    assert_eq!(get(backend, "atomic/b").await, Some(b.clone()));
    assert_eq!(get(backend, "atomic/new").await, None);
    assert_eq!(get(backend, "atomic/later").await, None);
    assert_eq!(
        keys(backend, "atomic/", "", 100).await,
        ["atomic/a", "atomic/b"]
    );

    // Two failing conditions: the first one in op order is reported.
    expect_conflict(
        backend,
        vec![
            put(entry("atomic/b", b"x", 2), Condition::Absent),
            put(entry("atomic/a", b"x", 2), Condition::Generation(7)),
        ],
        "atomic/b",
    )
    .await;

    // Ops apply in order, so one commit can create and then update a key.
    commit_ok(
        backend,
        vec![
            put(c.clone(), Condition::Absent),
            put(entry("atomic/c", b"c2", 2), Condition::Generation(1)),
        ],
    )
    .await;
    assert_eq!(
        get(backend, "atomic/c").await,
        Some(entry("atomic/c", b"c2", 2))
    );

    // An empty commit is fine and changes nothing.
    commit_ok(backend, Vec::new()).await;
    assert_eq!(keys(backend, "atomic/", "", 100).await.len(), 3);
    clear(backend).await;
}

/// Deletes honour their conditions the same way puts do.
pub(crate) async fn delete_conditions(backend: &dyn Backend) {
    let del = |key: &str, condition| Op::Delete {
        key: key.to_string(),
        condition,
    };
    let k = entry("del/k", b"v", 3);
    commit_ok(backend, vec![put(k.clone(), Condition::Absent)]).await;

    // Any: deleting a missing key is not an error.
    commit_ok(backend, vec![del("del/missing", Condition::Any)]).await;

    // Generation: only the current generation deletes.
    expect_conflict(
        backend,
        vec![del("del/k", Condition::Generation(2))],
        "del/k",
    )
    .await;
    expect_conflict(
        backend,
        vec![del("del/missing", Condition::Generation(0))],
        "del/missing",
    )
    .await;
    assert_eq!(get(backend, "del/k").await, Some(k.clone()));

    // Absent: asserts that the key does not exist, and deletes nothing.
    expect_conflict(backend, vec![del("del/k", Condition::Absent)], "del/k").await;
    assert_eq!(get(backend, "del/k").await, Some(k.clone()));
    commit_ok(backend, vec![del("del/missing", Condition::Absent)]).await;
    assert_eq!(get(backend, "del/missing").await, None);
    // ...and the assertion leaves the key free for a later insert.
    commit_ok(
        backend,
        vec![put(entry("del/missing", b"m", 1), Condition::Absent)],
    )
    .await;

    // A delete in a failing commit is undone.
    expect_conflict(
        backend,
        vec![
            del("del/k", Condition::Generation(3)),
            put(entry("del/missing", b"m", 1), Condition::Absent),
        ],
        "del/missing",
    )
    .await;
    assert_eq!(get(backend, "del/k").await, Some(k));

    commit_ok(backend, vec![del("del/k", Condition::Generation(3))]).await;
    assert_eq!(get(backend, "del/k").await, None);
    commit_ok(backend, vec![del("del/k", Condition::Any)]).await;
    clear(backend).await;
}

/// `keys` returns full keys under a prefix in memcmp order, from `start_at`
/// inclusive, at most `limit` of them; no collation, case folding, UTF-16
/// ordering or `LIKE` wildcards.
pub(crate) async fn keys_prefix_start_limit(backend: &dyn Backend) {
    let stored = [
        "j",
        "k",
        "k/",
        "k/B",
        "k/a",
        "k/a-",
        "k/a/b",
        "k/a0",
        "k/a_",
        "k/a%",
        "k/ab",
        "k/\u{7f}",
        "k/\u{ff}",  // ÿ = C3 BF: its last byte is the largest in any UTF-8 continuation
        "k/\u{100}", // C4 80: just after every key under "k/\u{ff}"
        "k/é",
        "k/ê",
        "k/日本",
        "k/\u{ffff}",    // EF BF BF, sorts before...
        "k/\u{10000}",   // ...F0 90 80 80 (UTF-16 order would reverse these)
        "k/\u{10ffff}",  // F4 8F BF BF: the largest scalar value
        "k/\u{10ffff}x", // keys extending it
        "k/\u{10ffff}\u{10ffff}",
        "k0",
        "kz",
        "l",
    ];
    let ops = stored
        .iter()
        .map(|k| put(entry(k, k.as_bytes(), 1), Condition::Absent))
        .collect();
    commit_ok(backend, ops).await;

    // The oracle: Rust's `str` ordering is byte-wise, i.e. memcmp.
    let under = |prefix: &str, start_at: &str| -> Vec<String> {
        let mut v: Vec<String> = stored
            .iter()
            .filter(|k| k.starts_with(prefix) && **k >= start_at)
            .map(|k| k.to_string())
            .collect();
        v.sort();
        v
    };

    for prefix in [
        "",
        "k",
        "k/",
        "k/a",
        "k/a%",
        "k/a_",
        "k/\u{ff}",
        "k/\u{ffff}",
        "k/\u{10ffff}",
        "k/e",
        "k/日",
        "nothing",
    ] {
        assert_eq!(
            keys(backend, prefix, "", 1000).await,
            under(prefix, ""),
            "keys under {prefix:?}"
        );
    }
    // Nothing outside the prefix leaks in, even though "kz" > "k/..." etc.
    assert_eq!(
        keys(backend, "k/\u{ff}", "", 1000).await,
        ["k/\u{ff}"],
        "prefix ending in ÿ"
    );

    // start_at is inclusive, and need not be a stored key.
    let all_k = under("k/", "");
    for start in all_k.iter() {
        assert_eq!(keys(backend, "k/", start, 1000).await, under("k/", start));
    }
    for start in ["k/a\0", "k/a/", "k/\u{ff}\0", "k/\u{10ffff}\0", "k/z"] {
        assert_eq!(
            keys(backend, "k/", start, 1000).await,
            under("k/", start),
            "start_at {start:?}"
        );
    }
    // A start before the prefix does not widen the scan; one after it ends it.
    assert_eq!(keys(backend, "k/", "a", 1000).await, all_k);
    assert_eq!(keys(backend, "k/", "k0", 1000).await, Vec::<String>::new());

    // limit.
    assert_eq!(keys(backend, "k/", "", 0).await, Vec::<String>::new());
    assert_eq!(keys(backend, "k/", "", 1).await, all_k[..1]);
    assert_eq!(keys(backend, "k/", "", 3).await, all_k[..3]);
    assert_eq!(keys(backend, "k/", "k/a", 2).await, ["k/a", "k/a%"]);
    assert_eq!(keys(backend, "k/", "", usize::MAX).await, all_k);

    // Paging through with limit + the successor of the last key visits each
    // key exactly once.
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = keys(backend, "", &cursor, 4).await;
        if page.is_empty() {
            break;
        }
        cursor = format!("{}\0", page.last().unwrap());
        paged.extend(page);
    }
    assert_eq!(paged, under("", ""));
    clear(backend).await;
}

/// [`list_children`] over this backend: folders are reported once, in order
/// among the files, and pagination with `start_after` works across both.
pub(crate) async fn list_children_folders(backend: &dyn Backend) {
    let stored = [
        "lc/",  // a key equal to the listed prefix: not its own child
        "lc/a", // a file
        "lc/b-",
        "lc/b/1", // folder b/ with files...
        "lc/b/2",
        "lc/b/deep/x", // ...and a nested folder
        "lc/b/deep/y/z",
        "lc/b0", // sorts right after everything in b/
        "lc/c",
        "lc/d/e/f", // a folder holding only a folder
        "lc/z",
        "lc/é/x", // a non-ASCII folder, sorting after ASCII
        "lc/\u{10ffff}",
        "lcx", // outside the prefix, sorting after it
        "la",  // outside the prefix, sorting before it
    ];
    let ops = stored
        .iter()
        .map(|k| put(entry(k, b"", 1), Condition::Absent))
        .collect();
    commit_ok(backend, ops).await;

    let all = ["a", "b-", "b/", "b0", "c", "d/", "z", "é/", "\u{10ffff}"];
    assert_eq!(children(backend, "lc/", "", 100).await, all);
    assert_eq!(
        children(backend, "lc/b/", "", 100).await,
        ["1", "2", "deep/"]
    );
    assert_eq!(children(backend, "lc/b/deep/", "", 100).await, ["x", "y/"]);
    assert_eq!(children(backend, "lc/d/", "", 100).await, ["e/"]);
    assert_eq!(children(backend, "", "", 100).await, ["la", "lc/", "lcx"]);
    assert_eq!(
        children(backend, "lc/nothing/", "", 100).await,
        Vec::<String>::new()
    );
    // A prefix need not end in '/'.
    assert_eq!(children(backend, "lc/b", "", 100).await, ["-", "/", "0"]);

    // limit.
    assert_eq!(children(backend, "lc/", "", 0).await, Vec::<String>::new());
    assert_eq!(children(backend, "lc/", "", 3).await, all[..3]);

    // start_after: a file, a folder, a name that is not stored, a name inside
    // a folder (the folder sorts before it), and the last one.
    assert_eq!(children(backend, "lc/", "a", 100).await, all[1..]);
    assert_eq!(children(backend, "lc/", "b/", 100).await, all[3..]);
    assert_eq!(children(backend, "lc/", "b", 100).await, all[1..]);
    assert_eq!(children(backend, "lc/", "b/1", 100).await, all[3..]);
    assert_eq!(children(backend, "lc/", "bz", 100).await, all[4..]);
    assert_eq!(children(backend, "lc/", "é/", 100).await, all[8..]);
    assert_eq!(
        children(backend, "lc/", "\u{10ffff}", 100).await,
        Vec::<String>::new()
    );

    // Every page size reassembles the full listing.
    for page_size in 1..=all.len() + 1 {
        let mut paged: Vec<String> = Vec::new();
        loop {
            let after = paged.last().cloned().unwrap_or_default();
            let page = children(backend, "lc/", &after, page_size).await;
            assert!(page.len() <= page_size);
            if page.is_empty() {
                break;
            }
            paged.extend(page);
        }
        assert_eq!(paged, all, "page size {page_size}");
    }
    clear(backend).await;
}

/// No lost updates under contention: `tasks` concurrent writers, spread over
/// `nodes` (several backends over the same database, or one), each perform
/// `increments` compare-and-swap increments of one counter, retrying on
/// conflict. Every successful commit must be reflected in the final
/// generation.
///
/// Returns how many commits conflicted, to show that the writers really did
/// contend.
pub async fn cas_counter(nodes: &[&dyn Backend], tasks: usize, increments: usize) -> usize {
    const KEY: &str = "concurrency/counter";
    assert!(!nodes.is_empty());
    commit_ok(
        nodes[0],
        vec![put(entry(KEY, &0i64.to_be_bytes(), 0), Condition::Absent)],
    )
    .await;

    let workers = (0..tasks).map(|t| {
        let node = nodes[t % nodes.len()];
        async move {
            let (mut successes, mut conflicts) = (0usize, 0usize);
            while successes < increments {
                let current = node
                    .get(KEY)
                    .await
                    .expect("get counter")
                    .expect("counter exists");
                let next = current.generation + 1;
                let op = put(
                    entry(KEY, &next.to_be_bytes(), next),
                    Condition::Generation(current.generation),
                );
                match node.commit(vec![op]).await {
                    Ok(()) => successes += 1,
                    Err(StorageError::Conflict { key }) => {
                        assert_eq!(key, KEY);
                        conflicts += 1;
                        // Bounded, so a backend that always conflicts fails
                        // the test instead of hanging it.
                        assert!(conflicts < 1_000_000, "task {t}: endless conflicts");
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("task {t}: commit failed: {e}"),
                }
            }
            (successes, conflicts)
        }
    });
    let results = join_all(workers.collect()).await;
    let successes: usize = results.iter().map(|(s, _)| s).sum();
    let conflicts: usize = results.iter().map(|(_, c)| c).sum();

    assert_eq!(successes, tasks * increments);
    let last = get(nodes[0], KEY).await.expect("counter exists");
    assert_eq!(
        last.generation as usize, successes,
        "lost updates: {successes} successful commits"
    );
    assert_eq!(last.value, (successes as i64).to_be_bytes());
    for node in nodes {
        assert_eq!(
            get(*node, KEY).await,
            Some(last.clone()),
            "every node agrees"
        );
    }
    clear(nodes[0]).await;
    conflicts
}

// ---- helpers ----

fn entry(key: &str, value: &[u8], generation: i64) -> Entry {
    Entry {
        key: key.to_string(),
        value: value.to_vec(),
        generation,
    }
}

// ---- A change and its audit entries as one commit (R-AUD-0). Not in
// `run_all`: only backends with an audit log have `commit_audited`.

/// A stand-in for the server's linker: the hash names the row's sequence
/// number and body, the MAC its predecessor, so links can be checked.
fn test_link(seq: i64, prev: &[u8], draft: &AuditDraft) -> AuditLink {
    let mut hash = seq.to_be_bytes().to_vec();
    hash.extend_from_slice(&draft.body);
    let mut mac = prev.to_vec();
    mac.extend_from_slice(b"|mac");
    AuditLink { hash, mac }
}

fn test_linker() -> SharedLinker {
    std::sync::Arc::new(test_link)
}

fn draft(body: &str) -> AuditDraft {
    AuditDraft {
        time_us: 1,
        body: body.as_bytes().to_vec(),
    }
}

/// Every row from `from` on, checked to link onto `prev` and each other.
async fn chain_from(backend: &dyn Backend, from: i64, mut prev: Vec<u8>) -> Vec<AuditRow> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let rows = backend.audit_read(next, 500).await.expect("audit read");
        let Some(last) = rows.last() else {
            return out;
        };
        next = last.seq + 1;
        for row in rows {
            assert_eq!(row.seq, from + out.len() as i64, "dense sequence numbers");
            assert_eq!(
                row.prev_hash, prev,
                "seq {} links to its predecessor",
                row.seq
            );
            let expected = test_link(
                row.seq,
                &prev,
                &AuditDraft {
                    time_us: row.time_us,
                    body: row.body.clone(),
                },
            );
            assert_eq!((&row.hash, &row.mac), (&expected.hash, &expected.mac));
            prev = row.hash.clone();
            out.push(row);
        }
    }
}

/// `commit_audited` applies the ops and appends the entries together; a
/// failed condition writes neither; concurrent callers (and plain appends
/// among them) make one dense chain with every change in it.
pub async fn commit_audited(backend: &dyn Backend) {
    let kind = backend.kind();
    assert_empty(backend, "before commit_audited").await;
    let start = backend.audit_head().await.expect("audit head");

    let rows = backend
        .commit_audited(
            vec![put(entry("aud/a", b"1", 1), Condition::Absent)],
            vec![draft("write aud/a")],
            test_linker(),
        )
        .await
        .unwrap_or_else(|e| panic!("{kind}: commit_audited: {e}"));
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].seq,
        start.seq + 1,
        "{kind}: numbered by the database"
    );
    assert_eq!(rows[0].prev_hash, start.hash);
    assert_eq!(get(backend, "aud/a").await.unwrap().value, b"1");
    let head = backend.audit_head().await.unwrap();
    assert_eq!((head.seq, &head.hash), (rows[0].seq, &rows[0].hash));

    // A failed condition (on the second op): no op, no entry.
    let failed = backend
        .commit_audited(
            vec![
                put(entry("aud/b", b"2", 1), Condition::Absent),
                put(entry("aud/a", b"x", 2), Condition::Absent),
            ],
            vec![draft("write aud/b")],
            test_linker(),
        )
        .await;
    match failed {
        Err(StorageError::Conflict { key }) => assert_eq!(key, "aud/a"),
        other => panic!("{kind}: expected a conflict, got {other:?}"),
    }
    assert!(
        get(backend, "aud/b").await.is_none(),
        "{kind}: nothing applied"
    );
    assert_eq!(get(backend, "aud/a").await.unwrap().value, b"1");
    assert_eq!(
        backend.audit_head().await.unwrap(),
        head,
        "{kind}: no entry"
    );

    // Concurrent callers, with plain appends among them: one chain.
    let writers = 24;
    let audited = (0..writers).map(|i| async move {
        let key = format!("aud/c/{i:02}");
        backend
            .commit_audited(
                vec![put(entry(&key, b"c", 1), Condition::Absent)],
                vec![
                    draft(&format!("write {key}")),
                    draft(&format!("more {key}")),
                ],
                test_linker(),
            )
            .await
            .map(|rows| rows.len())
    });
    let plain = (0..writers).map(|i| async move {
        backend
            .audit_append(vec![draft(&format!("read {i:02}"))], &test_link)
            .await
            .map(|rows| rows.len())
    });
    let (a, p) = futures_join(join_all(audited.collect()), join_all(plain.collect())).await;
    for n in a.into_iter().chain(p) {
        n.unwrap_or_else(|e| panic!("{kind}: concurrent audited commits: {e}"));
    }
    let rows = chain_from(backend, start.seq + 1, start.hash.clone()).await;
    assert_eq!(rows.len(), 1 + writers * 3, "{kind}: every entry, once");
    for i in 0..writers {
        let key = format!("aud/c/{i:02}");
        assert!(
            get(backend, &key).await.is_some(),
            "{kind}: {key} committed"
        );
        let write = rows
            .iter()
            .position(|r| r.body == format!("write {key}").as_bytes())
            .unwrap_or_else(|| panic!("{kind}: the entry of {key}"));
        assert_eq!(
            rows[write + 1].body,
            format!("more {key}").as_bytes(),
            "{kind}: one caller's entries are consecutive"
        );
    }
    clear(backend).await;
}

/// With the audit log unable to store anything (the test made its inserts
/// fail), `commit_audited` fails and applies none of its ops.
pub async fn commit_audited_fails_whole_when_the_audit_fails(backend: &dyn Backend) {
    let kind = backend.kind();
    assert_empty(backend, "before commit_audited_fails_whole").await;
    let head = backend.audit_head().await.expect("audit head");
    let result = backend
        .commit_audited(
            vec![
                put(entry("aud/x", b"1", 1), Condition::Absent),
                Op::Delete {
                    key: "aud/none".into(),
                    condition: Condition::Any,
                },
            ],
            vec![draft("write aud/x")],
            test_linker(),
        )
        .await;
    match result {
        Err(StorageError::Backend(_)) => {}
        other => panic!("{kind}: expected a backend error, got {other:?}"),
    }
    assert!(
        get(backend, "aud/x").await.is_none(),
        "{kind}: the op was not applied"
    );
    assert_eq!(
        backend.audit_head().await.unwrap(),
        head,
        "{kind}: no entry"
    );
    // Plain commits are not affected.
    commit_ok(
        backend,
        vec![put(entry("aud/y", b"1", 1), Condition::Absent)],
    )
    .await;
    clear(backend).await;
}

async fn futures_join<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = Box::pin(a);
    let mut b = Box::pin(b);
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(|cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (ra.expect("ready"), rb.expect("ready"))
}

fn put(entry: Entry, condition: Condition) -> Op {
    Op::Put { entry, condition }
}

async fn get(backend: &dyn Backend, key: &str) -> Option<Entry> {
    backend
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("{}: get {key:?}: {e}", backend.kind()))
}

async fn keys(backend: &dyn Backend, prefix: &str, start_at: &str, limit: usize) -> Vec<String> {
    backend
        .keys(prefix, start_at, limit)
        .await
        .unwrap_or_else(|e| panic!("{}: keys {prefix:?} {start_at:?}: {e}", backend.kind()))
}

async fn children(
    backend: &dyn Backend,
    prefix: &str,
    start_after: &str,
    limit: usize,
) -> Vec<String> {
    list_children(backend, prefix, start_after, limit)
        .await
        .unwrap_or_else(|e| panic!("{}: list_children {prefix:?}: {e}", backend.kind()))
}

async fn commit_ok(backend: &dyn Backend, ops: Vec<Op>) {
    backend
        .commit(ops)
        .await
        .unwrap_or_else(|e| panic!("{}: commit: {e}", backend.kind()));
}

async fn expect_conflict(backend: &dyn Backend, ops: Vec<Op>, key: &str) {
    match backend.commit(ops).await {
        Err(StorageError::Conflict { key: k }) => assert_eq!(k, key, "conflict names the key"),
        other => panic!(
            "{}: expected a conflict on {key:?}, got {other:?}",
            backend.kind()
        ),
    }
}

async fn assert_empty(backend: &dyn Backend, when: &str) {
    let left = keys(backend, "", "", 10).await;
    assert!(left.is_empty(), "backend not empty {when}: {left:?}");
}

/// Deletes every key, so that the next check starts from an empty backend.
async fn clear(backend: &dyn Backend) {
    loop {
        let batch = keys(backend, "", "", 500).await;
        if batch.is_empty() {
            return;
        }
        let ops = batch
            .into_iter()
            .map(|key| Op::Delete {
                key,
                condition: Condition::Any,
            })
            .collect();
        commit_ok(backend, ops).await;
    }
}

/// Polls all `futures` concurrently on the current task and collects their
/// outputs in order. The suite only borrows the backend, so it cannot spawn
/// `'static` tasks; the database still sees the requests concurrently.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("polled to completion"))
        .collect()
}
