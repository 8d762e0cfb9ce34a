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

use async_trait::async_trait;

pub mod postgres;
pub mod sqlite;

/// One stored row.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
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
    Put { entry: Entry, condition: Condition },
    Delete { key: String, condition: Condition },
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A condition of a commit did not hold; nothing was written.
    #[error("storage conflict on {key:?}: the record changed concurrently")]
    Conflict { key: String },
    /// The database could not be reached or answered with an error.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The database schema is newer than this binary, or migrations failed.
    #[error("storage migration error: {0}")]
    Migration(String),
    /// Bad configuration (path, URL, permissions).
    #[error("storage configuration error: {0}")]
    Config(String),
}

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
}

/// The immediate children of `prefix`, Vault style: `"a"` for a key
/// `prefix + "a"`, `"dir/"` once for any number of keys under `prefix + "dir/"`.
/// Sorted, strictly after `start_after`, at most `limit`. Skips over each
/// child folder with one indexed query, so a folder with a million nested keys
/// costs one step, not a million. Keys never contain NUL (the barrier refuses
/// them), which makes `key + "\0"` the immediate successor of `key`.
pub async fn list_children(
    backend: &dyn Backend,
    prefix: &str,
    start_after: &str,
    limit: usize,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cursor = if start_after.is_empty() {
        prefix.to_string()
    } else {
        past(&format!("{prefix}{start_after}"))
    };
    'scan: while out.len() < limit {
        let want = limit - out.len();
        let batch = backend.keys(prefix, &cursor, want).await?;
        let exhausted = batch.len() < want;
        for key in batch {
            let rest = &key[prefix.len()..];
            if let Some(i) = rest.find('/') {
                // A folder: report it once and jump over all of its keys.
                let child = &rest[..=i];
                cursor = past(&format!("{prefix}{child}"));
                out.push(child.to_string());
                continue 'scan;
            }
            cursor = past(&key);
            out.push(rest.to_string());
        }
        if exhausted {
            break;
        }
    }
    Ok(out)
}

/// The smallest key that sorts after `key` and, when `key` is a folder
/// (ends in `/`), after everything inside it: `'0'` is the byte after `'/'`.
fn past(key: &str) -> String {
    match key.strip_suffix('/') {
        Some(stem) => format!("{stem}0"),
        None => format!("{key}\0"),
    }
}
