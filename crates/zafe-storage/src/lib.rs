//! Physical storage for Zafe: the bottom layer, and an untrusted one.
//!
//! Everything above this crate treats storage the way Vault treats its physical
//! backend: a sorted map from keys to opaque byte strings that an attacker may
//! read, copy, reorder or roll back. The encryption barrier (in `zafe-server`)
//! only ever hands this crate ciphertext, and binds each ciphertext to its key and
//! generation with AEAD associated data, so this crate needs no cryptography and
//! must never be given plaintext secret material.
//!
//! One trait, [`Backend`], with two implementations: [`sqlite::SqliteBackend`]
//! (the embedded default) and [`postgres::PostgresBackend`] (several stateless
//! server nodes over one database).
//!
//! What every backend guarantees (and [`conformance`] checks):
//!
//! - keys compare byte-wise (memcmp order), so listings and pagination are
//!   the same on both;
//! - [`Backend::commit`] is atomic and durable: all of its [`Op`]s or none,
//!   on disk before it returns, and a failed [`Condition`] writes nothing;
//! - the audit log ([`audit`]) is one append-only hash chain whose sequence
//!   numbers come from the database, written in the same transaction as the
//!   change it records ([`Backend::commit_audited`]);
//! - every commit is announced to every node sharing the storage
//!   ([`Backend::notices`], see [`notices`]), so what a node keeps in memory
//!   never goes stale without it knowing;
//! - nothing here interprets a value: the crate does no cryptography and holds
//!   no keys, so whoever can read the database learns keys, sizes and
//!   generations, never plaintext.

#![warn(missing_docs)]

use async_trait::async_trait;

pub mod audit;
mod cache;
pub mod conformance;
pub mod notices;
pub mod postgres;
pub mod snapshot;
mod sql;
pub mod sqlite;
mod sqlite_writer;

pub use cache::CacheConfig;
pub use notices::Notice;

/// One stored row.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    /// The storage key, a `/`-separated path chosen by the barrier (never
    /// containing NUL). Keys compare byte-wise on every backend.
    pub key: String,
    /// Opaque bytes; always ciphertext for anything secret.
    pub value: Vec<u8>,
    /// Chosen by the writer and bound into the ciphertext's associated data, so
    /// that copying an older ciphertext back over a newer row fails to decrypt.
    /// Also the unit of compare-and-swap.
    pub generation: i64,
}

impl std::fmt::Debug for Entry {
    // Values are ciphertext, but there is no reason to print them either.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("key", &self.key)
            .field("value_len", &self.value.len())
            .field("generation", &self.generation)
            .finish()
    }
}

/// What must be true of a key for an [`Op`] on it to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// No check.
    Any,
    /// The key must not exist.
    Absent,
    /// The key must exist with exactly this generation.
    Generation(i64),
}

/// One write inside an atomic [`Backend::commit`].
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes `entry` (insert or overwrite) if `condition` holds for its key.
    Put {
        /// The row to store, with the generation the writer chose.
        entry: Entry,
        /// What must be true of `entry.key` beforehand.
        condition: Condition,
    },
    /// Removes `key` if `condition` holds; deleting a missing key with
    /// [`Condition::Any`] is not an error.
    Delete {
        /// The key to remove.
        key: String,
        /// What must be true of `key` beforehand.
        condition: Condition,
    },
}

/// Why a storage call failed. Messages name keys and database errors, never
/// values (which are ciphertext anyway).
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A condition of a commit did not hold; nothing was written.
    #[error("storage conflict on {key:?}: the record changed concurrently")]
    Conflict {
        /// The first key whose condition failed.
        key: String,
    },
    /// The database could not be reached or answered with an error.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The database schema is newer than this binary, or migrations failed.
    #[error("storage migration error: {0}")]
    Migration(String),
    /// Bad configuration (path, URL, permissions).
    #[error("storage configuration error: {0}")]
    Config(String),
    /// A restore was refused (a store that is not empty, a stream that is
    /// invalid or ended early); nothing was written.
    #[error("restore refused: {0}")]
    Restore(String),
}

/// The result of every storage call.
pub type Result<T> = std::result::Result<T, StorageError>;

/// The physical storage contract. Keys compare byte-wise (memcmp order) on
/// every backend, so listings and pagination are identical everywhere.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`; shown in status output.
    fn kind(&self) -> &'static str;

    /// Reads one key.
    async fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Full keys that start with `prefix` and sort at or after `start_at`
    /// (pass `""` to start at the beginning), ascending, at most `limit`.
    async fn keys(&self, prefix: &str, start_at: &str, limit: usize) -> Result<Vec<String>>;

    /// Applies every op atomically and durably (on disk before it returns
    /// `Ok`), or none of them: the first failed condition yields
    /// [`StorageError::Conflict`] naming its key.
    async fn commit(&self, ops: Vec<Op>) -> Result<()>;

    /// A cheap round trip that proves the database answers.
    async fn ping(&self) -> Result<()>;

    /// Follows the notices of every commit and published message from now on, from every node
    /// sharing this storage (see [`notices`]). A subscriber that falls behind is told it lagged;
    /// it must then act as on [`Notice::Lost`].
    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice>;

    /// Carries `payload` on `topic` to the subscribers of every node, this one's included.
    /// Small texts only (about 7,900 bytes with the topic), never a secret; best effort: a node
    /// whose notification connection is down gets [`Notice::Lost`] instead.
    async fn publish(&self, topic: &str, payload: &str) -> Result<()>;

    // ---- The audit log (see [`audit`]). Backends without one keep these
    // defaults, which fail, so a server on them refuses every request
    // (fail-closed) rather than running unaudited.

    /// Appends `drafts` to the audit chain in one durable transaction that
    /// holds the chain head; `link` computes each row's hash and MAC. Returns
    /// the stored rows, with the sequence numbers the database assigned.
    async fn audit_append(
        &self,
        _drafts: Vec<audit::AuditDraft>,
        _link: audit::Linker<'_>,
    ) -> Result<Vec<audit::AuditRow>> {
        Err(audit::unsupported())
    }

    /// Applies `ops` **and** appends `drafts` to the audit chain in one
    /// atomic, durable transaction (R-AUD-0): a change never exists without
    /// its audit entry. If a condition fails ([`StorageError::Conflict`]) or
    /// the entries cannot be stored, nothing of either is written. `link`
    /// is called with the chain head held, once per row, as for
    /// [`Backend::audit_append`]. Returns the stored rows.
    async fn commit_audited(
        &self,
        _ops: Vec<Op>,
        _drafts: Vec<audit::AuditDraft>,
        _link: audit::SharedLinker,
    ) -> Result<Vec<audit::AuditRow>> {
        Err(audit::unsupported())
    }

    /// The newest link of the chain (`seq` 0 and the genesis hash if empty).
    async fn audit_head(&self) -> Result<audit::AuditHead> {
        Err(audit::unsupported())
    }

    /// At most `limit` rows with `seq >= from_seq`, ascending by `seq`.
    async fn audit_read(&self, _from_seq: i64, _limit: usize) -> Result<Vec<audit::AuditRow>> {
        Err(audit::unsupported())
    }

    /// Where a time range starts or ends, as a sequence number.
    async fn audit_seq_at(&self, _time_us: i64, _bound: audit::TimeBound) -> Result<Option<i64>> {
        Err(audit::unsupported())
    }

    /// Retention: deletes at most `limit` of the oldest rows with
    /// `seq <= through_seq`, in one transaction; returns how many.
    async fn audit_sweep(&self, _through_seq: i64, _limit: usize) -> Result<u64> {
        Err(audit::unsupported())
    }

    /// Stores a signed checkpoint.
    async fn audit_checkpoint_append(&self, _checkpoint: audit::AuditCheckpoint) -> Result<()> {
        Err(audit::unsupported())
    }

    /// At most `limit` checkpoints after `(seq, id)`, ordered by `(seq, id)`;
    /// start with `(i64::MIN, i64::MIN)`.
    async fn audit_checkpoints(
        &self,
        _after: (i64, i64),
        _limit: usize,
    ) -> Result<Vec<audit::AuditCheckpoint>> {
        Err(audit::unsupported())
    }

    // ---- Backup and restore (R-OPS-8, see [`snapshot`]).

    /// Sends everything stored, read in one consistent snapshot, to `out`:
    /// the header (counts and audit head, `created_us` and `server_id` left
    /// for the caller), every entry by key, every audit row by sequence
    /// number, every checkpoint by `(seq, id)`, then [`zafe_core::backup::Frame::End`].
    /// Writes continue meanwhile. Fails if `out` is closed early.
    async fn snapshot(
        &self,
        _out: tokio::sync::mpsc::Sender<zafe_core::backup::Frame>,
    ) -> Result<()> {
        Err(StorageError::Backend(format!(
            "{} storage cannot take a snapshot",
            self.kind()
        )))
    }

    /// Writes the frames of `input` into this store in one transaction that
    /// commits only when [`zafe_core::backup::Frame::End`] arrives, with every
    /// count matching the header; refuses ([`StorageError::Restore`]) a store
    /// that holds anything but `options.replaceable` keys unless
    /// `options.force`, in which case everything stored is replaced in the
    /// same transaction.
    async fn restore(
        &self,
        _input: tokio::sync::mpsc::Receiver<zafe_core::backup::Frame>,
        _options: &snapshot::RestoreOptions,
    ) -> Result<snapshot::RestoreSummary> {
        Err(StorageError::Backend(format!(
            "{} storage cannot restore",
            self.kind()
        )))
    }
}

/// The immediate children of `prefix`, Vault style: `"a"` for a key
/// `prefix + "a"`, `"dir/"` once for any number of keys under `prefix + "dir/"`.
/// Sorted (memcmp order, like [`Backend::keys`]), strictly after
/// `start_after`, at most `limit`.
///
/// `start_after` is normally a child returned by an earlier page. If it names
/// something inside a folder (`"dir/x"`), the whole folder `"dir/"` sorts
/// before it and is skipped too. A key equal to `prefix` itself is not a child
/// of `prefix` and is never reported.
///
/// Skips over each child folder with one indexed query, so a folder with a
/// million nested keys costs one step, not a million. Keys never contain NUL
/// (the barrier refuses them), which makes `key + "\0"` the immediate
/// successor of `key`.
pub async fn list_children(
    backend: &dyn Backend,
    prefix: &str,
    start_after: &str,
    limit: usize,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor = match start_after.find('/') {
        // Everything after a folder, or after anything inside one, starts
        // past the whole folder: its name sorts before all of its contents.
        Some(i) => past_folder(&format!("{prefix}{}", &start_after[..=i])),
        None if start_after.is_empty() => prefix.to_string(),
        None => past_key(&format!("{prefix}{start_after}")),
    };
    'scan: while out.len() < limit {
        let want = limit - out.len();
        let batch = backend.keys(prefix, &cursor, want).await?;
        let exhausted = batch.len() < want;
        for key in batch {
            let Some(rest) = key.strip_prefix(prefix) else {
                return Err(StorageError::Backend(
                    "backend returned a key outside the requested prefix".into(),
                ));
            };
            if let Some(i) = rest.find('/') {
                // A folder: report it once and jump over all of its keys.
                let child = &rest[..=i];
                cursor = past_folder(&format!("{prefix}{child}"));
                out.push(child.to_string());
                continue 'scan;
            }
            // A plain key. Its successor is `key + "\0"` even when `key` ends
            // in '/' (only possible for `key == prefix`): treating it as a
            // folder would jump over every real child.
            cursor = past_key(&key);
            if !rest.is_empty() {
                out.push(rest.to_string());
            }
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

/// The immediate successor of `key` in memcmp order.
fn past_key(key: &str) -> String {
    format!("{key}\0")
}

/// The smallest key after `folder` (which ends in `/`) and everything inside
/// it: `'0'` is the byte after `'/'`.
fn past_folder(folder: &str) -> String {
    debug_assert!(folder.ends_with('/'));
    let stem = folder.strip_suffix('/').unwrap_or(folder);
    format!("{stem}0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A reference backend: a `BTreeMap<String, _>` orders keys byte-wise,
    /// exactly as the contract requires. Counts `keys` calls.
    #[derive(Default)]
    struct MapBackend {
        map: Mutex<BTreeMap<String, (Vec<u8>, i64)>>,
        key_scans: AtomicUsize,
        notices: notices::Notices,
    }

    #[async_trait]
    impl Backend for MapBackend {
        fn kind(&self) -> &'static str {
            "map"
        }

        async fn get(&self, key: &str) -> Result<Option<Entry>> {
            let map = self.map.lock().unwrap();
            Ok(map.get(key).map(|(value, generation)| Entry {
                key: key.to_string(),
                value: value.clone(),
                generation: *generation,
            }))
        }

        async fn keys(&self, prefix: &str, start_at: &str, limit: usize) -> Result<Vec<String>> {
            self.key_scans.fetch_add(1, Ordering::Relaxed);
            let map = self.map.lock().unwrap();
            Ok(map
                .range(prefix.max(start_at).to_string()..)
                .map(|(k, _)| k)
                .take_while(|k| k.starts_with(prefix))
                .take(limit)
                .cloned()
                .collect())
        }

        async fn commit(&self, ops: Vec<Op>) -> Result<()> {
            let keys = notices::keys_of(&ops);
            let mut map = self.map.lock().unwrap();
            let mut next = map.clone();
            for op in ops {
                let (key, condition) = match &op {
                    Op::Put { entry, condition } => (&entry.key, condition),
                    Op::Delete { key, condition } => (key, condition),
                };
                let held = match (condition, next.get(key)) {
                    (Condition::Any, _) => true,
                    (Condition::Absent, current) => current.is_none(),
                    (Condition::Generation(g), Some((_, current))) => current == g,
                    (Condition::Generation(_), None) => false,
                };
                if !held {
                    return Err(StorageError::Conflict { key: key.clone() });
                }
                match op {
                    Op::Put { entry, .. } => {
                        next.insert(entry.key, (entry.value, entry.generation));
                    }
                    Op::Delete { key, .. } => {
                        next.remove(&key);
                    }
                }
            }
            *map = next;
            self.notices.send(Notice::Keys(keys));
            Ok(())
        }

        fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
            self.notices.subscribe()
        }

        async fn publish(&self, topic: &str, payload: &str) -> Result<()> {
            self.notices.send(Notice::Message {
                topic: topic.into(),
                payload: payload.into(),
            });
            Ok(())
        }

        async fn ping(&self) -> Result<()> {
            Ok(())
        }
    }

    /// The suite itself is checked against the obviously correct backend.
    #[tokio::test]
    async fn conformance_suite_passes_on_reference_backend() {
        conformance::run_all(&MapBackend::default()).await;
    }

    #[tokio::test]
    async fn list_children_skips_folders_in_one_scan() {
        let backend = MapBackend::default();
        let mut ops: Vec<Op> = (0..10_000)
            .map(|i| Op::Put {
                entry: Entry {
                    key: format!("p/big/{i:05}"),
                    value: Vec::new(),
                    generation: 1,
                },
                condition: Condition::Any,
            })
            .collect();
        for key in ["p/a", "p/z"] {
            ops.push(Op::Put {
                entry: Entry {
                    key: key.into(),
                    value: Vec::new(),
                    generation: 1,
                },
                condition: Condition::Any,
            });
        }
        backend.commit(ops).await.unwrap();

        let children = list_children(&backend, "p/", "", 100).await.unwrap();
        assert_eq!(children, ["a", "big/", "z"]);
        // One scan up to and including the folder, one after it.
        assert_eq!(backend.key_scans.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn list_children_does_not_treat_the_prefix_key_as_a_folder() {
        let backend = MapBackend::default();
        let ops = ["p/", "p/a", "p/b/c"]
            .into_iter()
            .map(|key| Op::Put {
                entry: Entry {
                    key: key.into(),
                    value: Vec::new(),
                    generation: 1,
                },
                condition: Condition::Any,
            })
            .collect();
        backend.commit(ops).await.unwrap();
        assert_eq!(
            list_children(&backend, "p/", "", 10).await.unwrap(),
            ["a", "b/"]
        );
    }
}
