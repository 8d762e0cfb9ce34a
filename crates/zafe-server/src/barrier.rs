//! The encryption barrier (R-KEY-1..3).
//!
//! Everything above this module reads and writes plaintext; everything below
//! it (physical storage) sees only envelopes from `zafe_core::crypto`. Each
//! envelope's associated data names the storage key and generation it was
//! written for, so the storage layer, or anyone who can write to the
//! database, cannot move a ciphertext to another key, or put an older
//! ciphertext back over a newer one: the next read fails with
//! [`BarrierError::Integrity`] instead of returning the wrong record.
//!
//! While sealed the barrier holds no keyring and refuses every operation.

use std::sync::{Arc, RwLock};

use zafe_core::crypto;
use zafe_core::encoding;
use zafe_core::keyring::Keyring;
use zafe_storage::{Backend, Condition, Entry, Op, StorageError};
use zeroize::Zeroizing;

/// How often a read-modify-write retries a lost compare-and-swap race.
const MAX_CAS_RETRIES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    #[error("sealed")]
    Sealed,
    #[error("integrity check failed for {key}")]
    Integrity { key: String },
    #[error("conflict on {key}")]
    Conflict { key: String },
    #[error("{0}")]
    InvalidKey(String),
    #[error(transparent)]
    Storage(StorageError),
}

impl From<StorageError> for BarrierError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict { key } => BarrierError::Conflict { key },
            other => BarrierError::Storage(other),
        }
    }
}

pub type Result<T> = std::result::Result<T, BarrierError>;

/// A decrypted record and the generation it was read at (for compare-and-swap).
pub struct Record {
    pub value: Zeroizing<Vec<u8>>,
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

/// One write of an atomic [`Barrier::commit`].
pub enum Write {
    Put { key: String, value: Vec<u8>, expect: Expect },
    Delete { key: String, expect: Option<Expect> },
}

pub struct Barrier {
    backend: Arc<dyn Backend>,
    keyring: RwLock<Option<Arc<Keyring>>>,
}

/// The associated data of the record at `key`, written at `generation`.
/// Shared with the seal, which stores the keyring itself the same way.
pub fn location(key: &str, generation: i64) -> Vec<u8> {
    encoding::fields(&[b"zafe/v1/barrier", key.as_bytes(), &generation.to_be_bytes()])
}

impl Barrier {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            keyring: RwLock::new(None),
        }
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Opens the barrier with an unsealed keyring.
    pub fn unseal(&self, keyring: Arc<Keyring>) {
        *self.keyring.write().expect("keyring lock") = Some(keyring);
    }

    /// Closes the barrier. The keyring's keys are zeroized as soon as the last
    /// in-flight request that holds it finishes.
    pub fn seal(&self) {
        self.keyring.write().expect("keyring lock").take();
    }

    pub fn is_sealed(&self) -> bool {
        self.keyring.read().expect("keyring lock").is_none()
    }

    pub fn keyring(&self) -> Result<Arc<Keyring>> {
        self.keyring
            .read()
            .expect("keyring lock")
            .clone()
            .ok_or(BarrierError::Sealed)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>> {
        let keyring = self.keyring()?;
        check_key(key)?;
        let Some(entry) = self.backend.get(key).await? else {
            return Ok(None);
        };
        let value = crypto::open(|v| keyring.kek(v), &location(key, entry.generation), &entry.value)
            .map_err(|_| BarrierError::Integrity { key: key.to_string() })?;
        Ok(Some(Record {
            value,
            generation: entry.generation,
        }))
    }

    /// Writes `value` at `key` if the expectation holds; returns the new
    /// generation. A failed expectation is [`BarrierError::Conflict`].
    pub async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<i64> {
        let writes = vec![Write::Put {
            key: key.to_string(),
            value: value.to_vec(),
            expect,
        }];
        self.commit(writes).await?;
        Ok(next_generation(expect))
    }

    /// Read-modify-write with automatic retry on concurrent change. `f` gets
    /// the current plaintext (if any) and returns the new one, or `None` to
    /// leave the record as it is.
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Option<i64>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        for _ in 0..MAX_CAS_RETRIES {
            let current = self.get(key).await?;
            let expect = match &current {
                Some(r) => Expect::Generation(r.generation),
                None => Expect::Absent,
            };
            let Some(new) = f(current.as_ref().map(|r| &r.value[..])) else {
                return Ok(None);
            };
            match self.put(key, &new, expect).await {
                Ok(g) => return Ok(Some(g)),
                Err(BarrierError::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(BarrierError::Conflict { key: key.to_string() })
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.commit(vec![Write::Delete {
            key: key.to_string(),
            expect: None,
        }])
        .await
    }

    /// Applies all writes atomically, or none of them.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        let keyring = self.keyring()?;
        let (kek_version, kek) = keyring.active();
        let mut ops = Vec::with_capacity(writes.len());
        for write in writes {
            ops.push(match write {
                Write::Put { key, value, expect } => {
                    check_key(&key)?;
                    let generation = next_generation(expect);
                    let envelope = crypto::seal(kek, kek_version, &location(&key, generation), &value);
                    Op::Put {
                        entry: Entry {
                            key,
                            value: envelope,
                            generation,
                        },
                        condition: condition(expect),
                    }
                }
                Write::Delete { key, expect } => {
                    check_key(&key)?;
                    Op::Delete {
                        key,
                        condition: expect.map(condition).unwrap_or(Condition::Any),
                    }
                }
            });
        }
        Ok(self.backend.commit(ops).await?)
    }

    /// Immediate children of `prefix` (see `zafe_storage::list_children`).
    pub async fn list(&self, prefix: &str, start_after: &str, limit: usize) -> Result<Vec<String>> {
        self.keyring()?;
        check_key(prefix)?;
        Ok(zafe_storage::list_children(&*self.backend, prefix, start_after, limit).await?)
    }
}

fn next_generation(expect: Expect) -> i64 {
    match expect {
        Expect::Absent => 1,
        Expect::Generation(g) => g + 1,
    }
}

fn condition(expect: Expect) -> Condition {
    match expect {
        Expect::Absent => Condition::Absent,
        Expect::Generation(g) => Condition::Generation(g),
    }
}

/// Storage keys are paths: no NUL (the storage layer relies on it for
/// ordering), no empty or dot segments that could alias another path.
fn check_key(key: &str) -> Result<()> {
    let bad = key.contains('\0')
        || key.len() > 4096
        || key.split('/').any(|seg| seg == "." || seg == "..")
        || key.contains("//");
    if bad {
        return Err(BarrierError::InvalidKey(format!("invalid storage path {key:?}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_storage::sqlite::SqliteBackend;

    async fn open_barrier() -> Barrier {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let barrier = Barrier::new(backend);
        barrier.unseal(Arc::new(Keyring::generate()));
        barrier
    }

    #[tokio::test]
    async fn storage_sees_only_ciphertext() {
        let barrier = open_barrier().await;
        barrier.put("secret/a", b"plaintext-marker-123", Expect::Absent).await.unwrap();
        let raw = barrier.backend().get("secret/a").await.unwrap().unwrap();
        let needle = b"plaintext-marker-123";
        assert!(!raw.value.windows(needle.len()).any(|w| w == needle));
        assert_eq!(&barrier.get("secret/a").await.unwrap().unwrap().value[..], needle);
    }

    // R-KEY-3: swapping ciphertexts between rows, or rolling one back, fails loudly.
    #[tokio::test]
    async fn swapped_and_rolled_back_ciphertexts_fail() {
        let barrier = open_barrier().await;
        let backend = barrier.backend().clone();
        barrier.put("a", b"value a", Expect::Absent).await.unwrap();
        barrier.put("b", b"value b", Expect::Absent).await.unwrap();
        let a = backend.get("a").await.unwrap().unwrap();
        let b = backend.get("b").await.unwrap().unwrap();
        backend
            .commit(vec![Op::Put {
                entry: Entry { key: "a".into(), value: b.value.clone(), generation: b.generation },
                condition: Condition::Any,
            }])
            .await
            .unwrap();
        assert!(matches!(barrier.get("a").await, Err(BarrierError::Integrity { .. })));

        // Roll back: write v2 over v1, then put v1's ciphertext back.
        barrier.put("c", b"v1", Expect::Absent).await.unwrap();
        let old = backend.get("c").await.unwrap().unwrap();
        barrier.put("c", b"v2", Expect::Generation(1)).await.unwrap();
        backend
            .commit(vec![Op::Put {
                entry: Entry { key: "c".into(), value: old.value, generation: 2 },
                condition: Condition::Any,
            }])
            .await
            .unwrap();
        assert!(matches!(barrier.get("c").await, Err(BarrierError::Integrity { .. })));
        let _ = a;
    }

    #[tokio::test]
    async fn sealed_barrier_refuses_everything() {
        let barrier = open_barrier().await;
        barrier.put("a", b"x", Expect::Absent).await.unwrap();
        barrier.seal();
        assert!(matches!(barrier.get("a").await, Err(BarrierError::Sealed)));
        assert!(matches!(barrier.put("b", b"x", Expect::Absent).await, Err(BarrierError::Sealed)));
        assert!(matches!(barrier.list("", "", 10).await, Err(BarrierError::Sealed)));
    }

    #[tokio::test]
    async fn compare_and_swap_and_update() {
        let barrier = open_barrier().await;
        assert_eq!(barrier.put("k", b"1", Expect::Absent).await.unwrap(), 1);
        assert!(matches!(barrier.put("k", b"x", Expect::Absent).await, Err(BarrierError::Conflict { .. })));
        assert!(matches!(barrier.put("k", b"x", Expect::Generation(7)).await, Err(BarrierError::Conflict { .. })));
        let g = barrier.update("k", |old| Some([old.unwrap(), b"2"].concat())).await.unwrap();
        assert_eq!(g, Some(2));
        assert_eq!(&barrier.get("k").await.unwrap().unwrap().value[..], b"12");
    }

    #[tokio::test]
    async fn rotated_keyring_reads_old_records() {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let barrier = Barrier::new(backend);
        let mut ring = Keyring::generate();
        barrier.unseal(Arc::new(Keyring::from_bytes(&ring.to_bytes()).unwrap()));
        barrier.put("old", b"written with v1", Expect::Absent).await.unwrap();
        ring.rotate();
        barrier.unseal(Arc::new(ring));
        barrier.put("new", b"written with v2", Expect::Absent).await.unwrap();
        assert_eq!(&barrier.get("old").await.unwrap().unwrap().value[..], b"written with v1");
        let raw = barrier.backend().get("new").await.unwrap().unwrap();
        assert_eq!(crypto::envelope_key_version(&raw.value).unwrap(), 2);
    }

    #[tokio::test]
    async fn path_tricks_are_refused() {
        let barrier = open_barrier().await;
        for bad in ["a/../b", "a//b", "a\0b", "./a"] {
            assert!(matches!(barrier.put(bad, b"x", Expect::Absent).await, Err(BarrierError::InvalidKey(_))), "{bad:?}");
        }
    }
}
