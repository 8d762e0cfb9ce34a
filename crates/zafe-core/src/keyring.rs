//! The keyring: everything the barrier needs to read and write storage.
//!
//! It holds versioned key-encryption keys (KEKs) and one derivation root. New
//! writes use the active KEK; every version stays available for reading until
//! a re-wrap has moved all records off it (R-KEY-6). Keys for other purposes
//! (token hashing, the audit chain) are derived from the derivation root with
//! HKDF, never from the KEKs, so encryption keys and MAC keys are independent
//! (R-KEY-8, R-AUTH-14).
//!
//! The keyring itself is stored encrypted under the root key, which is never
//! stored: it comes from Shamir shares or from the configured master key.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::crypto::derive_key;
use crate::secret::{KEY_LEN, SecretKey};

const MAGIC: &[u8; 4] = b"ZKR1";

/// The barrier's keys: KEK versions and the derivation root. Key bytes leave
/// it only as [`SecretKey`]s and through [`Keyring::to_bytes`] (to be sealed
/// under the root key); `Debug` shows versions only.
pub struct Keyring {
    keks: BTreeMap<u32, SecretKey>,
    active: u32,
    derivation_root: SecretKey,
}

/// The bytes given to [`Keyring::from_bytes`] are not a keyring (bad magic,
/// truncated, trailing bytes, a repeated version, or an active version it
/// does not hold). Names the defect, never key bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the stored keyring is malformed: {0}")]
pub struct KeyringError(&'static str);

/// Purposes of derived keys. One constant per purpose, so that two features
/// can never derive the same key by accident.
pub mod purpose {
    /// The key under which tokens are hashed for storage and lookup
    /// ([`crate::token::lookup_hash`]).
    pub const TOKEN_HMAC: &str = "zafe/v1/token-hmac";
    /// The MAC key of the audit hash chain.
    pub const AUDIT_CHAIN: &str = "zafe/v1/audit-chain";
    /// The key that HMACs identifying fields in audit entries, so that they
    /// can be correlated without being readable.
    pub const AUDIT_FIELD_HMAC: &str = "zafe/v1/audit-field-hmac";
    /// The Argon2 secret (pepper) for passwords, when no password pepper
    /// is configured.
    pub const PASSWORD_PEPPER: &str = "zafe/v1/password-pepper";
}

impl Keyring {
    /// A new keyring with KEK version 1 and a fresh derivation root.
    pub fn generate() -> Self {
        let mut keks = BTreeMap::new();
        keks.insert(1, SecretKey::generate());
        Self {
            keks,
            active: 1,
            derivation_root: SecretKey::generate(),
        }
    }

    /// The KEK for new writes, with its version.
    pub fn active(&self) -> (u32, &SecretKey) {
        (self.active, &self.keks[&self.active])
    }

    /// The KEK of `version`, for reading records written under it; `None`
    /// if this keyring never had it or has retired it.
    pub fn kek(&self, version: u32) -> Option<&SecretKey> {
        self.keks.get(&version)
    }

    /// Every KEK version held, ascending.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.keks.keys().copied()
    }

    /// Adds a new KEK version and makes it active; returns the new version.
    pub fn rotate(&mut self) -> u32 {
        let next = self.active.checked_add(1).expect("2^32 key rotations");
        self.keks.insert(next, SecretKey::generate());
        self.active = next;
        next
    }

    /// Forgets KEK versions older than `version` (never the active one).
    /// The caller must first have re-wrapped every record off them: records
    /// still under a forgotten version can no longer be read.
    pub fn retire_before(&mut self, version: u32) {
        let version = version.min(self.active);
        self.keks.retain(|v, _| *v >= version);
    }

    /// A key for one purpose from [`purpose`].
    pub fn derive(&self, purpose: &str) -> SecretKey {
        derive_key(self.derivation_root.expose(), purpose)
    }

    /// The serialised keyring (magic, active version, derivation root, every
    /// KEK), zeroized on drop. Plaintext key material: seal it before it
    /// leaves memory.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(
            4 + 4 + KEY_LEN + 4 + self.keks.len() * (4 + KEY_LEN),
        ));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.active.to_be_bytes());
        out.extend_from_slice(self.derivation_root.expose());
        out.extend_from_slice(&(self.keks.len() as u32).to_be_bytes());
        for (version, key) in &self.keks {
            out.extend_from_slice(&version.to_be_bytes());
            out.extend_from_slice(key.expose());
        }
        out
    }

    /// Reads what [`Keyring::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyringError> {
        let mut rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(KeyringError("bad magic"))?;
        let active = take_u32(&mut rest)?;
        let derivation_root = take_key(&mut rest)?;
        let count = take_u32(&mut rest)?;
        let mut keks = BTreeMap::new();
        for _ in 0..count {
            let version = take_u32(&mut rest)?;
            if keks.insert(version, take_key(&mut rest)?).is_some() {
                return Err(KeyringError("duplicate key version"));
            }
        }
        if !rest.is_empty() {
            return Err(KeyringError("trailing bytes"));
        }
        if !keks.contains_key(&active) {
            return Err(KeyringError("active key version missing"));
        }
        Ok(Self {
            keks,
            active,
            derivation_root,
        })
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("active", &self.active)
            .field("versions", &self.keks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn take_u32(rest: &mut &[u8]) -> Result<u32, KeyringError> {
    let (head, tail) = rest.split_at_checked(4).ok_or(KeyringError("truncated"))?;
    *rest = tail;
    Ok(u32::from_be_bytes(head.try_into().expect("4 bytes")))
}

fn take_key(rest: &mut &[u8]) -> Result<SecretKey, KeyringError> {
    let (head, tail) = rest
        .split_at_checked(KEY_LEN)
        .ok_or(KeyringError("truncated"))?;
    *rest = tail;
    Ok(SecretKey::from_slice(head).expect("KEY_LEN bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialisation_round_trips() {
        let mut ring = Keyring::generate();
        ring.rotate();
        let restored = Keyring::from_bytes(&ring.to_bytes()).unwrap();
        assert_eq!(restored.active().0, 2);
        assert_eq!(restored.kek(1), ring.kek(1));
        assert_eq!(restored.kek(2), ring.kek(2));
        assert_eq!(
            restored.derive(purpose::TOKEN_HMAC),
            ring.derive(purpose::TOKEN_HMAC)
        );
    }

    #[test]
    fn rotation_keeps_old_versions_readable() {
        let mut ring = Keyring::generate();
        let old = ring.kek(1).unwrap().duplicate();
        assert_eq!(ring.rotate(), 2);
        assert_eq!(ring.kek(1), Some(&old));
        assert_ne!(ring.active().1, &old);
        ring.retire_before(2);
        assert!(ring.kek(1).is_none());
    }

    #[test]
    fn derived_keys_are_not_encryption_keys() {
        let ring = Keyring::generate();
        let token = ring.derive(purpose::TOKEN_HMAC);
        let audit = ring.derive(purpose::AUDIT_CHAIN);
        assert_ne!(token, audit);
        assert_ne!(&token, ring.active().1);
    }

    #[test]
    fn malformed_bytes_are_rejected() {
        let bytes = Keyring::generate().to_bytes();
        for len in 0..bytes.len() {
            assert!(Keyring::from_bytes(&bytes[..len]).is_err());
        }
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(Keyring::from_bytes(&extra).is_err());
    }
}
