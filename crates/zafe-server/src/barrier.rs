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
//! Generations are never reused for a key (R-KEY-9): every write, a create
//! as much as an update, draws a fresh random 63-bit generation (see
//! `fresh_generation`), so a record deleted and re-created does not start
//! again at a number its older ciphertexts were bound to, and an old
//! ciphertext copied back alone fails even then.
//!
//! While sealed the barrier holds no keyring and refuses every operation.

use parking_lot::RwLock;
use std::sync::Arc;

use zafe_core::crypto;
use zafe_core::encoding;
use zafe_core::keyring::Keyring;
use zafe_core::secret::SecretKey;
use zafe_storage::{Backend, Condition, Entry, Op, StorageError};

use crate::audit::hook::commit as audited_commit;

/// How often a read-modify-write retries a lost compare-and-swap race.
const MAX_CAS_RETRIES: usize = 64;

/// Why a barrier operation failed. Messages name the storage key at most,
/// never a value.
#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    /// The barrier holds no keyring: the server is sealed.
    #[error("sealed")]
    Sealed,
    /// A record does not decrypt under its key and generation: it was
    /// modified, moved from another key, or an older copy was put back.
    #[error("integrity check failed for {key}")]
    Integrity {
        /// The storage key of the record.
        key: String,
    },
    /// A compare-and-swap condition did not hold (someone else wrote first),
    /// or a read-modify-write kept losing the race.
    #[error("conflict on {key}")]
    Conflict {
        /// The storage key written.
        key: String,
    },
    /// The storage key is not one the barrier accepts (under `seal/`, a NUL
    /// byte, longer than 4096 bytes, an empty, `.` or `..` segment); the
    /// message names the key.
    #[error("{0}")]
    InvalidKey(String),
    /// The storage backend failed (other than a CAS conflict).
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

/// The barrier's result type.
pub type Result<T> = std::result::Result<T, BarrierError>;

pub use zafe_engine::{Expect, Record, Write};

/// The keys an open barrier holds.
struct Keys {
    /// Encrypts the keyring record; needed to rotate and to reload it.
    root_key: SecretKey,
    keyring: Arc<Keyring>,
}

/// The encryption barrier over one storage backend. Holds the root key and
/// the keyring while unsealed (zeroized when the last holder drops them);
/// every record passes through it encrypted, bound to its key and generation.
pub struct Barrier {
    backend: Arc<dyn Backend>,
    keys: RwLock<Option<Arc<Keys>>>,
}

/// Records outside the barrier live under this prefix: the seal's own
/// records (configuration, the keyring sealed under the root key), the
/// identity's public half, the cluster id. The barrier refuses to touch it,
/// and the re-wrap job skips it.
pub(crate) const RAW_PREFIX: &str = "seal/";

/// Where the keyring lives, sealed under the root key.
pub(crate) const KEYRING_KEY: &str = "seal/keyring";

/// The version number used in envelope headers when the root key (or the
/// master key) acts as the key-encryption key.
pub(crate) const ROOT_KEK_VERSION: u32 = 0;

/// The associated data of the record at `key`, written at `generation`.
/// Shared with the seal, which stores the keyring itself the same way.
pub fn location(key: &str, generation: i64) -> Vec<u8> {
    encoding::fields(&[
        b"zafe/v1/barrier",
        key.as_bytes(),
        &generation.to_be_bytes(),
    ])
}

impl Barrier {
    /// A sealed barrier over `backend`; [`Barrier::unseal`] opens it.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Self {
            backend,
            keys: RwLock::new(None),
        }
    }

    /// The physical storage below the barrier. Only for what lives outside
    /// it (the seal's records, the audit log): anything else written here
    /// bypasses the encryption.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Opens the barrier with the root key and the keyring it decrypted.
    pub fn unseal(&self, root_key: SecretKey, keyring: Keyring) {
        *self.keys.write() = Some(Arc::new(Keys {
            root_key,
            keyring: Arc::new(keyring),
        }));
    }

    /// Closes the barrier. The keys are zeroized as soon as the last
    /// in-flight request that holds them finishes.
    pub fn seal(&self) {
        self.keys.write().take();
    }

    /// Whether the barrier holds no keys.
    pub fn is_sealed(&self) -> bool {
        self.keys.read().is_none()
    }

    fn keys(&self) -> Result<Arc<Keys>> {
        self.keys.read().clone().ok_or(BarrierError::Sealed)
    }

    /// A copy of the root key, for `operator rekey` to compare shares with.
    pub(crate) fn root_key(&self) -> Result<SecretKey> {
        Ok(self.keys()?.root_key.duplicate())
    }

    /// The keyring, while unsealed; [`BarrierError::Sealed`] otherwise.
    pub fn keyring(&self) -> Result<Arc<Keyring>> {
        Ok(self.keys()?.keyring.clone())
    }

    /// Re-reads the keyring record (after another node rotated it).
    pub(crate) async fn reload_keyring(&self) -> Result<()> {
        let keys = self.keys()?;
        let (keyring, _) = read_keyring(&*self.backend, &keys.root_key).await?;
        let root_key = keys.root_key.duplicate();
        self.unseal(root_key, keyring);
        Ok(())
    }

    /// Adds a new key-encryption key version for new writes (R-KEY-6). Old
    /// versions keep decrypting. Safe against concurrent rotations on other
    /// nodes: the keyring record is replaced with compare-and-swap.
    pub async fn rotate(&self) -> Result<u32> {
        for _ in 0..MAX_CAS_RETRIES {
            let keys = self.keys()?;
            let (mut keyring, generation) = read_keyring(&*self.backend, &keys.root_key).await?;
            let version = keyring.rotate();
            let next = generation + 1;
            let op = Op::Put {
                entry: Entry {
                    key: KEYRING_KEY.into(),
                    value: seal_keyring(&keys.root_key, &keyring, next),
                    generation: next,
                },
                condition: Condition::Generation(generation),
            };
            match audited_commit(&*self.backend, vec![op]).await {
                Ok(()) => {
                    self.unseal(keys.root_key.duplicate(), keyring);
                    return Ok(version);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(BarrierError::Conflict {
            key: KEYRING_KEY.into(),
        })
    }

    /// Replaces the root key (for `operator rekey`): the same keyring,
    /// sealed under `new_root`, written together with `extra` ops (the new
    /// seal configuration) in one atomic commit.
    pub(crate) async fn replace_root_key(&self, new_root: SecretKey, extra: Vec<Op>) -> Result<()> {
        let keys = self.keys()?;
        let (keyring, generation) = read_keyring(&*self.backend, &keys.root_key).await?;
        let next = generation + 1;
        let mut ops = vec![Op::Put {
            entry: Entry {
                key: KEYRING_KEY.into(),
                value: seal_keyring(&new_root, &keyring, next),
                generation: next,
            },
            condition: Condition::Generation(generation),
        }];
        ops.extend(extra);
        audited_commit(&*self.backend, ops).await?;
        self.unseal(new_root, keyring);
        Ok(())
    }

    /// Re-encrypts every record written under an older key-encryption key
    /// with the active one, reporting progress. Records changed concurrently
    /// are skipped: their writer already used a current key.
    pub async fn rewrap(&self, progress: &RewrapProgress) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut cursor = String::new();
        loop {
            let keys = self.backend.keys("", &cursor, 256).await?;
            let Some(last) = keys.last() else {
                return Ok(());
            };
            cursor = format!("{last}\0");
            for key in keys.iter().filter(|k| !k.starts_with(RAW_PREFIX)) {
                progress.scanned.fetch_add(1, Relaxed);
                let active = self.keyring()?.active().0;
                let Some(entry) = self.backend.get(key).await? else {
                    continue;
                };
                if crypto::envelope_key_version(&entry.value).map_or(true, |v| v >= active) {
                    continue;
                }
                let Some(record) = self.get(key).await? else {
                    continue;
                };
                match self
                    .put(key, &record.value, Expect::Generation(record.generation))
                    .await
                {
                    Ok(_) => {
                        progress.rewrapped.fetch_add(1, Relaxed);
                    }
                    Err(BarrierError::Conflict { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Reads and decrypts the record at `key`; `None` if absent.
    /// [`BarrierError::Integrity`] if it does not decrypt under its key and
    /// generation.
    pub async fn get(&self, key: &str) -> Result<Option<Record>> {
        check_key(key)?;
        let keyring = self.keyring()?;
        let Some(entry) = self.backend.get(key).await? else {
            return Ok(None);
        };
        let context = location(key, entry.generation);
        let value = match crypto::open(|v| keyring.kek(v), &context, &entry.value) {
            Ok(value) => value,
            // Written by a node that rotated the keyring after we loaded it.
            Err(crypto::CryptoError::UnknownKeyVersion(_)) => {
                self.reload_keyring().await?;
                let keyring = self.keyring()?;
                crypto::open(|v| keyring.kek(v), &context, &entry.value).map_err(|_| {
                    BarrierError::Integrity {
                        key: key.to_string(),
                    }
                })?
            }
            Err(_) => {
                return Err(BarrierError::Integrity {
                    key: key.to_string(),
                });
            }
        };
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
        let generations = self.commit_generations(writes).await?;
        Ok(generations[0])
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
        Err(BarrierError::Conflict {
            key: key.to_string(),
        })
    }

    /// Deletes the record at `key`, unconditionally (absent is not an error).
    pub async fn delete(&self, key: &str) -> Result<()> {
        self.commit(vec![Write::Delete {
            key: key.to_string(),
            expect: None,
        }])
        .await
    }

    /// Applies all writes atomically, or none of them. Inside an audited
    /// request, the request's audit entry is part of the same commit
    /// (R-AUD-0, see `audit::hook::commit`).
    pub async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        self.commit_generations(writes).await.map(drop)
    }

    /// [`Barrier::commit`], returning the generation of each put, in order.
    async fn commit_generations(&self, writes: Vec<Write>) -> Result<Vec<i64>> {
        let keyring = self.keyring()?;
        let (kek_version, kek) = keyring.active();
        let mut ops = Vec::with_capacity(writes.len());
        let mut generations = Vec::new();
        for write in writes {
            ops.push(match write {
                Write::Put { key, value, expect } => {
                    check_key(&key)?;
                    let generation = fresh_generation(expect);
                    generations.push(generation);
                    let envelope =
                        crypto::seal(kek, kek_version, &location(&key, generation), &value);
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
        audited_commit(&*self.backend, ops).await?;
        Ok(generations)
    }

    /// Immediate children of `prefix` (see `zafe_storage::list_children`).
    pub async fn list(&self, prefix: &str, start_after: &str, limit: usize) -> Result<Vec<String>> {
        self.keyring()?;
        check_key(prefix)?;
        Ok(zafe_storage::list_children(&*self.backend, prefix, start_after, limit).await?)
    }
}

/// Progress of a re-wrap, readable while it runs.
#[derive(Debug, Default)]
pub struct RewrapProgress {
    /// Records looked at so far (outside `seal/`).
    pub scanned: std::sync::atomic::AtomicU64,
    /// Records re-encrypted under the active key so far.
    pub rewrapped: std::sync::atomic::AtomicU64,
    /// Set once the job has finished (successfully or not).
    pub done: std::sync::atomic::AtomicBool,
}

/// The keyring record encrypted under `root_key`, bound to its location.
pub(crate) fn seal_keyring(root_key: &SecretKey, keyring: &Keyring, generation: i64) -> Vec<u8> {
    crypto::seal(
        root_key,
        ROOT_KEK_VERSION,
        &location(KEYRING_KEY, generation),
        &keyring.to_bytes(),
    )
}

/// Reads and decrypts the keyring record; a wrong root key, like a
/// tampered record, is an integrity failure.
pub(crate) async fn read_keyring(
    backend: &dyn Backend,
    root_key: &SecretKey,
) -> Result<(Keyring, i64)> {
    let integrity = || BarrierError::Integrity {
        key: KEYRING_KEY.into(),
    };
    let entry = backend.get(KEYRING_KEY).await?.ok_or_else(integrity)?;
    let bytes = crypto::open(
        |v| (v == ROOT_KEK_VERSION).then_some(root_key),
        &location(KEYRING_KEY, entry.generation),
        &entry.value,
    )
    .map_err(|_| integrity())?;
    let keyring = Keyring::from_bytes(&bytes).map_err(|_| integrity())?;
    Ok((keyring, entry.generation))
}

/// The generation of a new write: random in `1..=i64::MAX`, never the one
/// it replaces (R-KEY-9).
///
/// Random rather than counted, on purpose. A counter (per key or store-wide)
/// lives in the database, so restoring an older copy of the database winds
/// it back and makes it hand out again generations that ciphertexts of the
/// discarded timeline were bound to; a counter per key also starts over when
/// the record is deleted and re-created. Random draws need no storage, no
/// coordination between nodes and no extra write, and two writes of one key
/// share a generation with probability 2^-63 per pair, which nobody can
/// influence. Nothing relies on generations growing: compare-and-swap only
/// compares them for equality.
pub(crate) fn fresh_generation(expect: Expect) -> i64 {
    loop {
        let draw = (u64::from_be_bytes(crypto::random_bytes::<8>()) >> 1) as i64;
        if draw != 0 && expect != Expect::Generation(draw) {
            return draw;
        }
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
    let bad = key.starts_with(RAW_PREFIX)
        || key.contains('\0')
        || key.len() > 4096
        || key.split('/').any(|seg| seg == "." || seg == "..")
        || key.contains("//");
    if bad {
        return Err(BarrierError::InvalidKey(format!(
            "invalid storage path {key:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
impl Barrier {
    /// Holds the barrier's lock, for the test that a panic cannot wedge the server.
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        self.keys.write()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_storage::sqlite::SqliteBackend;

    async fn open_barrier() -> Barrier {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let barrier = Barrier::new(backend);
        barrier.unseal(SecretKey::generate(), Keyring::generate());
        barrier
    }

    #[tokio::test]
    async fn storage_sees_only_ciphertext() {
        let barrier = open_barrier().await;
        barrier
            .put("secret/a", b"plaintext-marker-123", Expect::Absent)
            .await
            .unwrap();
        let raw = barrier.backend().get("secret/a").await.unwrap().unwrap();
        let needle = b"plaintext-marker-123";
        assert!(!raw.value.windows(needle.len()).any(|w| w == needle));
        assert_eq!(
            &barrier.get("secret/a").await.unwrap().unwrap().value[..],
            needle
        );
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
                entry: Entry {
                    key: "a".into(),
                    value: b.value.clone(),
                    generation: b.generation,
                },
                condition: Condition::Any,
            }])
            .await
            .unwrap();
        assert!(matches!(
            barrier.get("a").await,
            Err(BarrierError::Integrity { .. })
        ));

        // Roll back: write v2 over v1, then put v1's ciphertext back.
        let g1 = barrier.put("c", b"v1", Expect::Absent).await.unwrap();
        let old = backend.get("c").await.unwrap().unwrap();
        let g2 = barrier
            .put("c", b"v2", Expect::Generation(g1))
            .await
            .unwrap();
        backend
            .commit(vec![Op::Put {
                entry: Entry {
                    key: "c".into(),
                    value: old.value,
                    generation: g2,
                },
                condition: Condition::Any,
            }])
            .await
            .unwrap();
        assert!(matches!(
            barrier.get("c").await,
            Err(BarrierError::Integrity { .. })
        ));
        let _ = a;
    }

    #[tokio::test]
    async fn sealed_barrier_refuses_everything() {
        let barrier = open_barrier().await;
        barrier.put("a", b"x", Expect::Absent).await.unwrap();
        barrier.seal();
        assert!(matches!(barrier.get("a").await, Err(BarrierError::Sealed)));
        assert!(matches!(
            barrier.put("b", b"x", Expect::Absent).await,
            Err(BarrierError::Sealed)
        ));
        assert!(matches!(
            barrier.list("", "", 10).await,
            Err(BarrierError::Sealed)
        ));
    }

    #[tokio::test]
    async fn compare_and_swap_and_update() {
        let barrier = open_barrier().await;
        let first = barrier.put("k", b"1", Expect::Absent).await.unwrap();
        assert_eq!(barrier.get("k").await.unwrap().unwrap().generation, first);
        assert!(matches!(
            barrier.put("k", b"x", Expect::Absent).await,
            Err(BarrierError::Conflict { .. })
        ));
        assert!(matches!(
            barrier.put("k", b"x", Expect::Generation(7)).await,
            Err(BarrierError::Conflict { .. })
        ));
        let g = barrier
            .update("k", |old| Some([old.unwrap(), b"2"].concat()))
            .await
            .unwrap();
        let g = g.unwrap();
        assert_eq!(barrier.get("k").await.unwrap().unwrap().generation, g);
        assert!(matches!(
            barrier.put("k", b"x", Expect::Generation(first)).await,
            Err(BarrierError::Conflict { .. })
        ));
        assert_eq!(&barrier.get("k").await.unwrap().unwrap().value[..], b"12");
    }

    #[tokio::test]
    async fn rotated_keyring_reads_old_records() {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let barrier = Barrier::new(backend);
        let mut ring = Keyring::generate();
        barrier.unseal(
            SecretKey::generate(),
            Keyring::from_bytes(&ring.to_bytes()).unwrap(),
        );
        barrier
            .put("old", b"written with v1", Expect::Absent)
            .await
            .unwrap();
        ring.rotate();
        barrier.unseal(SecretKey::generate(), ring);
        barrier
            .put("new", b"written with v2", Expect::Absent)
            .await
            .unwrap();
        assert_eq!(
            &barrier.get("old").await.unwrap().unwrap().value[..],
            b"written with v1"
        );
        let raw = barrier.backend().get("new").await.unwrap().unwrap();
        assert_eq!(crypto::envelope_key_version(&raw.value).unwrap(), 2);
    }

    #[tokio::test]
    async fn path_tricks_are_refused() {
        let barrier = open_barrier().await;
        for bad in ["a/../b", "a//b", "a\0b", "./a", "seal/keyring"] {
            assert!(
                matches!(
                    barrier.put(bad, b"x", Expect::Absent).await,
                    Err(BarrierError::InvalidKey(_))
                ),
                "{bad:?}"
            );
        }
    }
}
