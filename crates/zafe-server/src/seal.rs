//! Initialisation, unsealing and sealing (R-KEY-4, R-KEY-5).
//!
//! Key hierarchy:
//!
//! ```text
//! unseal shares ──Shamir──▶ root key ──seals──▶ keyring (KEKs, derivation root)
//! master key (optional) ──seals──▶ root key
//! ```
//!
//! The root key is never stored in the clear. With Shamir shares only, it
//! exists in memory between the last share and sealing. With a master key
//! (`ZAFE_MASTER_KEY` / `ZAFE_MASTER_KEY_FILE`), a copy of the root key is
//! stored sealed under it, so the server unseals itself at start; the shares
//! still work as recovery keys.
//!
//! The records this module keeps live outside the barrier (it is what opens
//! the barrier), but the secret ones are envelopes bound to their location,
//! exactly like barrier records.

use parking_lot::Mutex;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use zafe_core::crypto;
use zafe_core::keyring::Keyring;
use zafe_core::secret::SecretKey;
use zafe_core::shamir::{self, Share};
use zafe_storage::{Backend, Condition, Entry, Op, StorageError};

use crate::barrier::{KEYRING_KEY, ROOT_KEK_VERSION, location, read_keyring, seal_keyring};
use crate::error::{Error, Result};

pub(crate) const CONFIG_KEY: &str = "seal/config";
pub(crate) const MASTER_WRAPPED_ROOT_KEY: &str = "seal/root-key/master";

/// Not secret: how many shares exist, how many unseal, and digests that let
/// the server recognise its own shares.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealConfig {
    /// How many unseal shares `init` produced.
    pub secret_shares: usize,
    /// How many of them unseal.
    pub secret_threshold: usize,
    /// A digest of each share (not the share), so the server can tell its own
    /// shares from foreign ones.
    pub share_digests: Vec<String>,
    /// Whether a master-key-sealed copy of the root key exists.
    pub auto_unseal: bool,
    /// When the server was initialised (Unix seconds).
    pub created_at: i64,
}

/// Everything that must be in memory while the server is unsealed.
pub struct Unsealed {
    /// The key that seals the keyring; zeroized on drop.
    pub root_key: SecretKey,
    /// The key-encryption keys and the derivation root.
    pub keyring: Keyring,
}

/// What `init` hands back to the caller, exactly once.
pub struct Initialized {
    /// The unseal shares, to hand to the operators; never stored.
    pub shares: Vec<Share>,
    /// The keys that open the barrier right away.
    pub unsealed: Unsealed,
}

/// What submitting one unseal share achieved.
pub(crate) enum UnsealProgress {
    /// The share was accepted; more are needed to reach the threshold.
    Collecting,
    /// The threshold was reached and the shares opened the keyring.
    Done(Unsealed),
}

#[derive(Default)]
struct Progress {
    shares: Vec<Share>,
    /// Identifies one unseal attempt, as Vault's `nonce` does.
    nonce: String,
}

/// Initialisation and unsealing: the seal configuration, the keyring sealed
/// under the root key, the optional master key, and the shares collected so
/// far in an unseal attempt. Its records live outside the barrier.
pub struct Seal {
    backend: Arc<dyn Backend>,
    master_key: Option<SecretKey>,
    progress: Mutex<Progress>,
}

impl Seal {
    /// A seal over `backend`; `master_key` (if configured) lets the server
    /// unseal itself at start.
    pub fn new(backend: Arc<dyn Backend>, master_key: Option<SecretKey>) -> Self {
        Self {
            backend,
            master_key,
            progress: Mutex::new(Progress::default()),
        }
    }

    pub(crate) fn has_master_key(&self) -> bool {
        self.master_key.is_some()
    }

    /// The seal configuration; `None` before `init`. [`Error::Integrity`] if the
    /// record does not parse.
    pub async fn config(&self) -> Result<Option<SealConfig>> {
        let Some(entry) = self.backend.get(CONFIG_KEY).await.map_err(storage)? else {
            return Ok(None);
        };
        serde_json::from_slice(&entry.value)
            .map(Some)
            .map_err(|_| Error::Integrity {
                key: CONFIG_KEY.into(),
            })
    }

    /// Creates the root key, the keyring and the shares. Safe against two
    /// concurrent initialisations (even on two nodes): every record is
    /// created with `Condition::Absent` in one atomic commit, so exactly one
    /// wins and the other gets [`Error::AlreadyInitialized`].
    pub async fn initialize(
        &self,
        shares: usize,
        threshold: usize,
        now: i64,
    ) -> Result<Initialized> {
        shamir::validate(shares, threshold)
            .map_err(|e| Error::bad_request(format!("invalid seal configuration: {e}")))?;
        if self.config().await?.is_some() {
            return Err(Error::AlreadyInitialized);
        }
        let root_key = SecretKey::generate();
        let keyring = Keyring::generate();
        let issued = shamir::split(&root_key, shares, threshold)
            .map_err(|e| Error::bad_request(e.to_string()))?;
        let config = SealConfig {
            secret_shares: shares,
            secret_threshold: threshold,
            share_digests: issued.iter().map(|s| hex::encode(s.digest())).collect(),
            auto_unseal: self.master_key.is_some(),
            created_at: now,
        };

        let mut ops = vec![
            create(KEYRING_KEY, seal_keyring(&root_key, &keyring, 1)),
            create(
                CONFIG_KEY,
                serde_json::to_vec(&config).expect("serialisable"),
            ),
        ];
        if let Some(master) = &self.master_key {
            ops.push(create(
                MASTER_WRAPPED_ROOT_KEY,
                crypto::seal(
                    master,
                    ROOT_KEK_VERSION,
                    &location(MASTER_WRAPPED_ROOT_KEY, 1),
                    root_key.expose(),
                ),
            ));
        }
        match self.backend.commit(ops).await {
            Ok(()) => {}
            Err(StorageError::Conflict { .. }) => return Err(Error::AlreadyInitialized),
            Err(e) => return Err(storage(e)),
        }
        Ok(Initialized {
            shares: issued,
            unsealed: Unsealed { root_key, keyring },
        })
    }

    /// Unseals with the configured master key. A wrong master key is an
    /// error, never a silent re-initialisation.
    pub async fn unseal_with_master_key(&self) -> Result<Unsealed> {
        let master = self
            .master_key
            .as_ref()
            .ok_or_else(|| Error::bad_request("no master key is configured"))?;
        let config = self.config().await?.ok_or(Error::NotInitialized)?;
        if !config.auto_unseal {
            return Err(Error::bad_request(
                "this server was initialized without a master key: unseal it with key shares (`zafe operator unseal`)",
            ));
        }
        let entry = self
            .backend
            .get(MASTER_WRAPPED_ROOT_KEY)
            .await
            .map_err(storage)?
            .ok_or(Error::Integrity {
                key: MASTER_WRAPPED_ROOT_KEY.into(),
            })?;
        let root = crypto::open(
            |v| (v == ROOT_KEK_VERSION).then_some(master),
            &location(MASTER_WRAPPED_ROOT_KEY, entry.generation),
            &entry.value,
        )
        .map_err(|_| {
            Error::bad_request(
                "the master key does not match this server's data (decryption failed): check ZAFE_MASTER_KEY / ZAFE_MASTER_KEY_FILE",
            )
        })?;
        let root_key = SecretKey::from_slice(&root).ok_or(Error::Integrity {
            key: MASTER_WRAPPED_ROOT_KEY.into(),
        })?;
        let keyring = self.open_keyring(&root_key).await?;
        Ok(Unsealed { root_key, keyring })
    }

    /// Takes one share. A malformed share, or one that is not among the
    /// shares this server issued, is refused with a 400 and changes nothing:
    /// shares already collected stay, so one bad share never wedges
    /// unsealing. The same share twice is ignored, as in Vault.
    pub(crate) async fn submit_share(&self, encoded: &str) -> Result<UnsealProgress> {
        let config = self.config().await?.ok_or(Error::NotInitialized)?;
        let bytes = decode_share(encoded)?;
        let share = Share::from_bytes(&bytes)
            .map_err(|e| Error::bad_request(format!("invalid key: {e}")))?;
        let digest = hex::encode(share.digest());
        if !config
            .share_digests
            .iter()
            .any(|d| crypto::constant_time_eq(d.as_bytes(), digest.as_bytes()))
        {
            return Err(Error::bad_request(
                "invalid key: this is not one of this server's unseal key shares (progress is kept)",
            ));
        }
        let collected = {
            let mut progress = self.progress.lock();
            if progress.shares.is_empty() {
                progress.nonce = uuid::Uuid::new_v4().to_string();
            }
            if !progress
                .shares
                .iter()
                .any(|s| s.identifier() == share.identifier())
            {
                progress.shares.push(share);
            }
            if progress.shares.len() < config.secret_threshold {
                return Ok(UnsealProgress::Collecting);
            }
            std::mem::take(&mut *progress).shares
        };
        let root_key = shamir::combine(&collected)
            .map_err(|e| Error::bad_request(format!("invalid key: {e}")))?;
        let keyring = self.open_keyring(&root_key).await.map_err(|_| {
            Error::bad_request(
                "unseal failed: the shares do not open this server's keyring; progress was reset",
            )
        })?;
        Ok(UnsealProgress::Done(Unsealed { root_key, keyring }))
    }

    /// Forgets the shares collected so far (`sys/unseal` with `reset`).
    pub(crate) fn reset_progress(&self) {
        *self.progress.lock() = Progress::default();
    }

    /// `(shares collected, nonce)` of the unseal attempt in progress.
    pub fn progress(&self) -> (usize, String) {
        let p = self.progress.lock();
        (p.shares.len(), p.nonce.clone())
    }

    async fn open_keyring(&self, root_key: &SecretKey) -> Result<Keyring> {
        Ok(read_keyring(&*self.backend, root_key).await?.0)
    }

    /// `operator rekey`: checks that `old_shares` recover the current root
    /// key, then makes a new root key, splits it into new shares and
    /// re-seals the keyring (not the data) under it, all in one atomic
    /// commit with the new configuration. The old shares stop working.
    pub async fn rekey(
        &self,
        barrier: &crate::barrier::Barrier,
        current_root: &SecretKey,
        old_shares: &[String],
        shares: usize,
        threshold: usize,
    ) -> Result<Vec<Share>> {
        shamir::validate(shares, threshold)
            .map_err(|e| Error::bad_request(format!("invalid seal configuration: {e}")))?;
        let (config, generation) = self
            .config_with_generation()
            .await?
            .ok_or(Error::NotInitialized)?;
        if old_shares.len() < config.secret_threshold {
            return Err(Error::bad_request(format!(
                "{} current key shares are needed to rekey, got {}",
                config.secret_threshold,
                old_shares.len()
            )));
        }
        let mut parsed = Vec::new();
        for encoded in old_shares {
            let share = Share::from_bytes(&decode_share(encoded)?)
                .map_err(|e| Error::bad_request(format!("invalid key: {e}")))?;
            let digest = hex::encode(share.digest());
            if !config
                .share_digests
                .iter()
                .any(|d| crypto::constant_time_eq(d.as_bytes(), digest.as_bytes()))
            {
                return Err(Error::bad_request(
                    "invalid key: this is not one of this server's current key shares",
                ));
            }
            parsed.push(share);
        }
        let recovered = shamir::combine(&parsed)
            .map_err(|e| Error::bad_request(format!("invalid key: {e}")))?;
        if recovered != *current_root {
            return Err(Error::bad_request(
                "the key shares do not recover this server's root key",
            ));
        }
        let new_root = SecretKey::generate();
        let issued = shamir::split(&new_root, shares, threshold)
            .map_err(|e| Error::bad_request(e.to_string()))?;
        let new_config = SealConfig {
            secret_shares: shares,
            secret_threshold: threshold,
            share_digests: issued.iter().map(|s| hex::encode(s.digest())).collect(),
            ..config
        };
        let mut ops = vec![Op::Put {
            entry: Entry {
                key: CONFIG_KEY.into(),
                value: serde_json::to_vec(&new_config).expect("serialisable"),
                generation: generation + 1,
            },
            condition: Condition::Generation(generation),
        }];
        if let Some(master) = &self.master_key {
            let entry = self
                .backend
                .get(MASTER_WRAPPED_ROOT_KEY)
                .await
                .map_err(storage)?;
            let (condition, next) = match &entry {
                Some(e) => (Condition::Generation(e.generation), e.generation + 1),
                None => (Condition::Absent, 1),
            };
            ops.push(Op::Put {
                entry: Entry {
                    key: MASTER_WRAPPED_ROOT_KEY.into(),
                    value: crypto::seal(
                        master,
                        ROOT_KEK_VERSION,
                        &location(MASTER_WRAPPED_ROOT_KEY, next),
                        new_root.expose(),
                    ),
                    generation: next,
                },
                condition,
            });
        }
        barrier.replace_root_key(new_root, ops).await?;
        self.reset_progress();
        Ok(issued)
    }

    async fn config_with_generation(&self) -> Result<Option<(SealConfig, i64)>> {
        let Some(entry) = self.backend.get(CONFIG_KEY).await.map_err(storage)? else {
            return Ok(None);
        };
        let config = serde_json::from_slice(&entry.value).map_err(|_| Error::Integrity {
            key: CONFIG_KEY.into(),
        })?;
        Ok(Some((config, entry.generation)))
    }
}

/// Accepts a share as hex (what `keys` holds) or standard base64
/// (`keys_base64`), like Vault.
fn decode_share(encoded: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let encoded = encoded.trim();
    if encoded.is_empty() {
        return Err(Error::bad_request("invalid key: empty"));
    }
    if let Ok(bytes) = hex::decode(encoded) {
        return Ok(bytes);
    }
    base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| Error::bad_request("invalid key: not hex or base64"))
}

/// Parses a master key: 32 bytes as 64 hex characters or as base64.
pub(crate) fn parse_master_key(text: &str) -> std::result::Result<SecretKey, String> {
    use base64::Engine as _;
    let text = zeroize::Zeroizing::new(text.trim().to_string());
    let bytes = zeroize::Zeroizing::new(
        hex::decode(text.as_bytes())
            .ok()
            .or_else(|| {
                base64::engine::general_purpose::STANDARD
                    .decode(text.as_bytes())
                    .ok()
            })
            .unwrap_or_default(),
    );
    SecretKey::from_slice(&bytes).ok_or_else(|| {
        "the master key must be 32 bytes written as 64 hex characters or as base64".to_string()
    })
}

fn create(key: &str, value: Vec<u8>) -> Op {
    Op::Put {
        entry: Entry {
            key: key.to_string(),
            value,
            generation: 1,
        },
        condition: Condition::Absent,
    }
}

fn storage(e: StorageError) -> Error {
    Error::StorageUnavailable(e.to_string())
}

#[cfg(test)]
impl Seal {
    /// Holds the seal's lock, for the test that a panic cannot wedge the server.
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        self.progress.lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_storage::sqlite::SqliteBackend;

    async fn seal_with(master: Option<SecretKey>) -> (Seal, Arc<dyn Backend>) {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        (Seal::new(backend.clone(), master), backend)
    }

    #[tokio::test]
    async fn threshold_shares_unseal_and_a_wrong_share_is_refused_without_losing_progress() {
        let (seal, _) = seal_with(None).await;
        let init = seal.initialize(5, 3, 1_700_000_000).await.unwrap();
        let hexes: Vec<String> = init
            .shares
            .iter()
            .map(|s| hex::encode(s.as_bytes()))
            .collect();
        assert!(matches!(
            seal.submit_share(&hexes[0]).await.unwrap(),
            UnsealProgress::Collecting
        ));
        // A corrupted share: refused at once, progress kept.
        let mut bad = init.shares[1].as_bytes().to_vec();
        bad[7] ^= 0x55;
        assert!(matches!(
            seal.submit_share(&hex::encode(&bad)).await,
            Err(Error::BadRequest(_))
        ));
        assert!(matches!(
            seal.submit_share("not a share").await,
            Err(Error::BadRequest(_))
        ));
        assert_eq!(seal.progress().0, 1);
        assert!(matches!(
            seal.submit_share(&hexes[1]).await.unwrap(),
            UnsealProgress::Collecting
        ));
        match seal.submit_share(&hexes[4]).await.unwrap() {
            UnsealProgress::Done(u) => assert_eq!(u.root_key, init.unsealed.root_key),
            UnsealProgress::Collecting => panic!("three shares must unseal"),
        }
        assert_eq!(seal.progress().0, 0);
    }

    #[tokio::test]
    async fn a_second_initialisation_is_refused() {
        let (seal, _) = seal_with(None).await;
        seal.initialize(1, 1, 1_700_000_000).await.unwrap();
        assert!(matches!(
            seal.initialize(1, 1, 1_700_000_000).await,
            Err(Error::AlreadyInitialized)
        ));
    }

    #[tokio::test]
    async fn concurrent_initialisations_have_one_winner() {
        let (seal, _) = seal_with(None).await;
        let seal = Arc::new(seal);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let s = seal.clone();
            tasks.push(tokio::spawn(async move {
                s.initialize(3, 2, 1_700_000_000).await.is_ok()
            }));
        }
        let mut wins = 0;
        for t in tasks {
            wins += t.await.unwrap() as usize;
        }
        assert_eq!(wins, 1);
    }

    #[tokio::test]
    async fn master_key_unseals_and_a_wrong_one_fails_clearly() {
        let master = SecretKey::generate();
        let (seal, backend) = seal_with(Some(master.duplicate())).await;
        let init = seal.initialize(1, 1, 1_700_000_000).await.unwrap();
        let again = Seal::new(backend.clone(), Some(master))
            .unseal_with_master_key()
            .await
            .unwrap();
        assert_eq!(again.root_key, init.unsealed.root_key);
        let wrong = Seal::new(backend, Some(SecretKey::generate()));
        match wrong.unseal_with_master_key().await {
            Err(Error::BadRequest(msg)) => assert!(msg.contains("does not match")),
            other => panic!("expected a clear error, got {:?}", other.err()),
        }
    }

    #[test]
    fn master_key_formats() {
        assert!(parse_master_key(&"ab".repeat(32)).is_ok());
        assert!(parse_master_key(&format!(" {}\n", "AB".repeat(32))).is_ok());
        use base64::Engine as _;
        assert!(
            parse_master_key(&base64::engine::general_purpose::STANDARD.encode([9u8; 32])).is_ok()
        );
        assert!(parse_master_key("short").is_err());
        assert!(parse_master_key(&"ab".repeat(31)).is_err());
    }
}
