//! An engine's storage: a [`View`] over the barrier that prefixes every key with the mount's
//! folder (`logical/<uuid>/`, `auth/<uuid>/`).
//!
//! The prefix is added here and nowhere else, so an engine handler that forgets a check still
//! cannot read or write another mount's rows (R-ACL-4). Engines get the view, never the
//! [`Storage`] under it.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// A decrypted record and the generation it was read at (for compare-and-swap).
pub struct Record {
    /// The plaintext, wiped when dropped.
    pub value: Zeroizing<Vec<u8>>,
    /// The record's generation: what [`Expect::Generation`] compares against.
    pub generation: i64,
}

/// What a write expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Create only.
    Absent,
    /// Replace exactly the generation that was read.
    Generation(i64),
}

/// One write of an atomic commit.
pub enum Write {
    /// Store `value` at `key` if the expectation holds.
    Put {
        /// The key.
        key: String,
        /// The plaintext (encrypted by the barrier).
        value: Vec<u8>,
        /// What must be there now.
        expect: Expect,
    },
    /// Remove `key`; with an expectation, only if it holds.
    Delete {
        /// The key.
        key: String,
        /// What must be there now; `None` deletes whatever is there.
        expect: Option<Expect>,
    },
}

/// The plaintext storage an engine's view writes through: the server's barrier. Keys are full
/// keys; only [`View`] calls this, adding the mount's prefix.
#[async_trait]
pub trait Storage: Send + Sync {
    /// The record at `key`.
    async fn get(&self, key: &str) -> Result<Option<Record>>;
    /// Writes `value` if `expect` holds; returns the new generation.
    async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<i64>;
    /// Read-modify-write, retried on a lost race: `f` gets the current value and returns the new
    /// one, or `None` to leave it. Returns the new generation if something was written.
    async fn update(
        &self,
        key: &str,
        f: &mut (dyn for<'v> FnMut(Option<&'v [u8]>) -> Option<Vec<u8>> + Send),
    ) -> Result<Option<i64>>;
    /// Removes `key`.
    async fn delete(&self, key: &str) -> Result<()>;
    /// All writes or none; a failed expectation is [`Error::Conflict`].
    async fn commit(&self, writes: Vec<Write>) -> Result<()>;
    /// Keys under `prefix` (relative to it), after `start_after`, at most `limit`.
    async fn list(&self, prefix: &str, start_after: &str, limit: usize) -> Result<Vec<String>>;
}

/// A mount's slice of storage.
#[derive(Clone)]
pub struct View {
    storage: Arc<dyn Storage>,
    prefix: String,
}

impl View {
    /// A view of the keys under `prefix` (which ends with `/`).
    pub fn new(storage: Arc<dyn Storage>, prefix: String) -> Self {
        debug_assert!(prefix.ends_with('/'));
        Self { storage, prefix }
    }

    /// The full storage key of `key`, to name a record in an integrity error.
    pub fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The record at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<Record>> {
        self.storage.get(&self.full(key)).await
    }

    /// Reads and deserialises a JSON record, with its generation. A record that does not parse
    /// is an integrity failure: only this engine writes here.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(record) => {
                let value =
                    serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
                        key: self.full(key),
                    })?;
                Ok(Some((value, record.generation)))
            }
        }
    }

    /// Writes `value` if `expect` holds; returns the new generation.
    pub async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<i64> {
        self.storage.put(&self.full(key), value, expect).await
    }

    /// [`View::put`] of a value as JSON.
    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<i64> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| Error::Internal(format!("cannot serialise a record: {e}")))?;
        self.put(key, &bytes, expect).await
    }

    /// Read-modify-write; see [`Storage::update`].
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Option<i64>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>> + Send,
    {
        self.storage.update(&self.full(key), &mut f).await
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.storage.delete(&self.full(key)).await
    }

    /// Atomic batch; keys are relative to the view.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        self.storage.commit(self.prefixed(writes)).await
    }

    /// As [`Self::commit`], but a failed expectation (another writer got there first) is
    /// `Ok(false)` instead of an error, so that the caller can re-read and decide again.
    /// Nothing is written in that case.
    pub async fn try_commit(&self, writes: Vec<Write>) -> Result<bool> {
        match self.storage.commit(self.prefixed(writes)).await {
            Ok(()) => Ok(true),
            Err(Error::Conflict { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Keys under `prefix`, relative to it, after `start_after`, at most `limit`.
    pub async fn list(&self, prefix: &str, start_after: &str, limit: usize) -> Result<Vec<String>> {
        self.storage
            .list(&self.full(prefix), start_after, limit)
            .await
    }

    fn prefixed(&self, writes: Vec<Write>) -> Vec<Write> {
        writes
            .into_iter()
            .map(|w| match w {
                Write::Put { key, value, expect } => Write::Put {
                    key: self.full(&key),
                    value,
                    expect,
                },
                Write::Delete { key, expect } => Write::Delete {
                    key: self.full(&key),
                    expect,
                },
            })
            .collect()
    }
}
