//! Unseal shares: Shamir's secret sharing of the root key over GF(256)
//! (R-KEY-4).
//!
//! The field arithmetic comes from `vsss-rs` (constant time). This module
//! fixes the parameters, the share format (`identifier || 32 bytes`) and the
//! checks around them. A share carries no integrity of its own: combining a
//! wrong share yields a wrong key, which the keyring's AEAD then rejects. The
//! server additionally keeps a digest of every share it issued (see
//! [`Share::digest`]) so that a wrong share is refused when it is submitted,
//! before it can spoil the shares already collected.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::{KEY_LEN, SecretKey};

/// Length of an encoded share: the identifier byte and the 32 key bytes.
pub(crate) const SHARE_LEN: usize = 1 + KEY_LEN;

/// Why a seal configuration or a set of shares was refused. Messages follow
/// Vault's wording where Vault has one; none contains share bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShamirError {
    /// `secret_shares` outside 1..=255 (GF(256) has 255 non-zero points).
    #[error("secret_shares must be between 1 and 255, got {0}")]
    BadShareCount(usize),
    /// `secret_threshold` outside 1..=`secret_shares`.
    #[error("secret_threshold must be between 1 and secret_shares ({shares}), got {threshold}")]
    BadThreshold {
        /// The requested number of shares.
        shares: usize,
        /// The requested threshold.
        threshold: usize,
    },
    /// A threshold of one with several shares (any single share would recover the key).
    #[error("secret_threshold must be greater than one for multiple shares")]
    ThresholdOneForMany,
    /// A share of the wrong length (it must be 33 bytes); carries the length
    /// given.
    #[error("a key share must be {SHARE_LEN} bytes, got {0}")]
    BadLength(usize),
    /// A share whose identifier byte is 0, or a set of shares the field
    /// arithmetic cannot combine.
    #[error("a key share has an invalid identifier")]
    BadIdentifier,
    /// Two shares with the same identifier.
    #[error("the same key share was given twice")]
    Duplicate,
    /// [`combine`] was given no shares.
    #[error("no key shares given")]
    Empty,
}

/// One unseal share. Zeroized on drop; `Debug` shows only its identifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Share(Zeroizing<Vec<u8>>);

impl Share {
    /// A share as submitted (`identifier || 32 bytes`). Checks only the
    /// length and the identifier: a share carries no integrity of its own.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ShamirError> {
        if bytes.len() != SHARE_LEN {
            return Err(ShamirError::BadLength(bytes.len()));
        }
        if bytes[0] == 0 {
            // x = 0 would be the secret itself; no issued share has it.
            return Err(ShamirError::BadIdentifier);
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    /// The encoded share, for handing it to its holder once. Secret.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The share's x coordinate (1..=255); not secret.
    pub fn identifier(&self) -> u8 {
        self.0[0]
    }

    /// A domain-separated SHA-256 of the share. Shares are 256-bit random
    /// values, so their digests reveal nothing and are safe to store beside
    /// the sealed keyring, where they let the server recognise a wrong share
    /// the moment it is submitted.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"zafe/v1/unseal-share-digest");
        h.update(&self.0[..]);
        h.finalize().into()
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Share(#{}, <redacted>)", self.identifier())
    }
}

/// Checks Vault's rules for a seal configuration.
pub fn validate(shares: usize, threshold: usize) -> Result<(), ShamirError> {
    if !(1..=255).contains(&shares) {
        return Err(ShamirError::BadShareCount(shares));
    }
    if threshold < 1 || threshold > shares {
        return Err(ShamirError::BadThreshold { shares, threshold });
    }
    if shares > 1 && threshold == 1 {
        return Err(ShamirError::ThresholdOneForMany);
    }
    Ok(())
}

/// Splits `secret` into `shares` shares, any `threshold` of which recover it.
pub fn split(
    secret: &SecretKey,
    shares: usize,
    threshold: usize,
) -> Result<Vec<Share>, ShamirError> {
    validate(shares, threshold)?;
    if shares == 1 {
        // A single share is the key itself, as in Vault.
        let mut one = Zeroizing::new(Vec::with_capacity(SHARE_LEN));
        one.push(1);
        one.extend_from_slice(secret.expose());
        return Ok(vec![Share(one)]);
    }
    let raw = vsss_rs::Gf256::split_array(threshold, shares, secret.expose(), rand_core::OsRng)
        .expect("parameters were validated");
    Ok(raw.into_iter().map(|s| Share(Zeroizing::new(s))).collect())
}

/// Recovers the secret from shares. With fewer than the threshold, or a wrong
/// share, the result is a wrong key, not an error: the caller must verify it
/// (the keyring's AEAD does).
pub fn combine(shares: &[Share]) -> Result<SecretKey, ShamirError> {
    let first = shares.first().ok_or(ShamirError::Empty)?;
    for (i, a) in shares.iter().enumerate() {
        if shares[..i].iter().any(|b| b.identifier() == a.identifier()) {
            return Err(ShamirError::Duplicate);
        }
    }
    if shares.len() == 1 {
        return Ok(SecretKey::from_slice(&first.0[1..]).expect("SHARE_LEN checked"));
    }
    let raw: Vec<Vec<u8>> = shares.iter().map(|s| s.0.to_vec()).collect();
    let raw = Zeroizing::new(raw);
    let secret = Zeroizing::new(
        vsss_rs::Gf256::combine_array(&*raw).map_err(|_| ShamirError::BadIdentifier)?,
    );
    SecretKey::from_slice(&secret).ok_or(ShamirError::BadLength(secret.len() + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_threshold_subset_recovers_the_secret() {
        let secret = SecretKey::generate();
        let shares = split(&secret, 5, 3).unwrap();
        assert_eq!(shares.len(), 5);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let subset = [shares[a].clone(), shares[b].clone(), shares[c].clone()];
                    assert_eq!(combine(&subset).unwrap(), secret);
                }
            }
        }
        assert_eq!(combine(&shares).unwrap(), secret);
    }

    #[test]
    fn below_threshold_gives_a_wrong_key() {
        let secret = SecretKey::generate();
        let shares = split(&secret, 5, 3).unwrap();
        assert_ne!(combine(&shares[..2]).unwrap(), secret);
    }

    #[test]
    fn a_corrupted_share_gives_a_wrong_key() {
        let secret = SecretKey::generate();
        let shares = split(&secret, 3, 2).unwrap();
        let mut bad = shares[0].as_bytes().to_vec();
        bad[5] ^= 1;
        let bad = Share::from_bytes(&bad).unwrap();
        assert_ne!(bad.digest(), shares[0].digest());
        assert_ne!(combine(&[bad, shares[1].clone()]).unwrap(), secret);
    }

    #[test]
    fn single_share_is_the_key() {
        let secret = SecretKey::generate();
        let shares = split(&secret, 1, 1).unwrap();
        assert_eq!(combine(&shares).unwrap(), secret);
    }

    #[test]
    fn configuration_rules() {
        assert!(validate(5, 3).is_ok());
        assert!(validate(1, 1).is_ok());
        assert_eq!(validate(0, 0), Err(ShamirError::BadShareCount(0)));
        assert_eq!(validate(256, 3), Err(ShamirError::BadShareCount(256)));
        assert!(validate(3, 4).is_err());
        assert!(validate(3, 0).is_err());
        assert_eq!(validate(3, 1), Err(ShamirError::ThresholdOneForMany));
    }

    #[test]
    fn malformed_shares_are_refused() {
        assert_eq!(Share::from_bytes(&[1; 10]), Err(ShamirError::BadLength(10)));
        assert_eq!(
            Share::from_bytes(&[0; SHARE_LEN]),
            Err(ShamirError::BadIdentifier)
        );
        let s = split(&SecretKey::generate(), 3, 2).unwrap();
        assert_eq!(
            combine(&[s[0].clone(), s[0].clone()]),
            Err(ShamirError::Duplicate)
        );
        assert_eq!(combine(&[]), Err(ShamirError::Empty));
    }

    #[test]
    fn debug_hides_share_bytes() {
        let s = split(&SecretKey::from_bytes(&[0xCD; 32]), 3, 2).unwrap();
        assert!(!format!("{:?}", s[0]).to_lowercase().contains("cd"));
    }
}
