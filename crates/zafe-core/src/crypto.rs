//! The envelope format: how every record is encrypted at rest (R-KEY-1..3).
//!
//! Each record gets its own random data key (DEK). The record is encrypted
//! with the DEK, and the DEK is wrapped by a versioned key-encryption key
//! (KEK) from the keyring, both with XChaCha20-Poly1305 (192-bit random
//! nonces, so random nonces never collide in practice).
//!
//! ```text
//! envelope = FORMAT (1 byte) || kek_version (u32 BE) || wrap_nonce (24)
//!          || wrapped_dek (32 + 16) || data_nonce (24) || ciphertext+tag
//! ```
//!
//! What the associated data binds, and why:
//! - the wrapped DEK is bound to the format byte, the KEK version and the
//!   record's *context* (its location: table, key, generation), so a wrapped
//!   key cannot be moved to another record or relabelled with another version;
//! - the data is bound to the whole header (format byte, KEK version, wrap
//!   nonce, wrapped DEK) and the context, so the blob cannot be paired with
//!   another wrapped key, and the format byte is authenticated, not trusted.
//!
//! Copying an envelope to another row, or an older envelope back over a newer
//! one, changes the context and makes [`open`] fail with
//! [`CryptoError::Integrity`]: the read fails loudly instead of returning the
//! wrong record.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::secret::{KEY_LEN, SecretKey};

/// The only envelope format so far. A new format gets a new byte; old ones
/// keep decrypting.
pub(crate) const FORMAT_V1: u8 = 1;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const WRAPPED_DEK_LEN: usize = KEY_LEN + TAG_LEN;
const HEADER_LEN: usize = 1 + 4 + NONCE_LEN + WRAPPED_DEK_LEN;
/// The smallest possible envelope: a header, a nonce and an empty message's tag.
pub(crate) const MIN_ENVELOPE_LEN: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;

const DOMAIN_DEK: &[u8] = b"zafe/v1/wrapped-dek";
const DOMAIN_DATA: &[u8] = b"zafe/v1/data";

/// Why sealing or opening an envelope failed. No variant carries key
/// material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// Authentication failed: the ciphertext, its header or its location was
    /// changed, or the wrong key was used. Never says which, on purpose.
    #[error(
        "integrity check failed: the stored record was modified, moved or rolled back, or the key is wrong"
    )]
    Integrity,
    /// The bytes are not an envelope this code can read (too short, an unknown
    /// format byte); the text says which.
    #[error("malformed envelope: {0}")]
    Malformed(&'static str),
    /// The envelope names a key-encryption key version the keyring does not
    /// hold (retired, or from another keyring).
    #[error("unknown key version {0}")]
    UnknownKeyVersion(u32),
}

/// Fills `buf` from the operating system's CSPRNG.
pub fn fill_random(buf: &mut [u8]) {
    OsRng.fill_bytes(buf);
}

/// `N` random bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// The KEK version stored in an envelope's header, without decrypting it.
/// Used by the re-wrap job to find records that still use an old KEK.
pub fn envelope_key_version(envelope: &[u8]) -> Result<u32, CryptoError> {
    if envelope.len() < MIN_ENVELOPE_LEN {
        return Err(CryptoError::Malformed("too short"));
    }
    if envelope[0] != FORMAT_V1 {
        return Err(CryptoError::Malformed("unknown format"));
    }
    Ok(u32::from_be_bytes(
        envelope[1..5].try_into().expect("4 bytes"),
    ))
}

/// Encrypts `plaintext` for the location described by `context` under a
/// fresh data key wrapped by `kek` (version `kek_version`).
pub fn seal(kek: &SecretKey, kek_version: u32, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
    // The data key lives for this call only. It is zeroized on drop but not
    // mlock'ed: the cipher copies it into its own (unlocked) key schedule
    // anyway, and an mlock per record is a system call on every write.
    // One draw from the OS for the key and both nonces.
    let mut fresh = Zeroizing::new([0u8; KEY_LEN + 2 * NONCE_LEN]);
    fill_random(&mut fresh[..]);
    let dek: &[u8; KEY_LEN] = fresh[..KEY_LEN].try_into().expect("key length");
    let wrap_nonce: [u8; NONCE_LEN] = fresh[KEY_LEN..KEY_LEN + NONCE_LEN]
        .try_into()
        .expect("nonce length");
    let data_nonce: [u8; NONCE_LEN] = fresh[KEY_LEN + NONCE_LEN..]
        .try_into()
        .expect("nonce length");

    let mut out = Vec::with_capacity(MIN_ENVELOPE_LEN + plaintext.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&kek_version.to_be_bytes());
    out.extend_from_slice(&wrap_nonce);

    let wrapped = aead_encrypt(
        kek.expose(),
        &wrap_nonce,
        dek,
        &dek_aad(FORMAT_V1, kek_version, context),
    );
    out.extend_from_slice(&wrapped);
    debug_assert_eq!(out.len(), HEADER_LEN);

    let data_aad = data_aad(&out, context);
    let ciphertext = aead_encrypt(dek, &data_nonce, plaintext, &data_aad);
    out.extend_from_slice(&data_nonce);
    out.extend_from_slice(&ciphertext);
    out
}

/// Decrypts an envelope made by [`seal`] for the same `context`. `kek_for`
/// maps the header's KEK version to the key, so old versions keep working
/// after a rotation.
pub fn open<'k>(
    kek_for: impl FnOnce(u32) -> Option<&'k SecretKey>,
    context: &[u8],
    envelope: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let kek_version = envelope_key_version(envelope)?;
    let kek = kek_for(kek_version).ok_or(CryptoError::UnknownKeyVersion(kek_version))?;
    let header = &envelope[..HEADER_LEN];
    let wrap_nonce = &header[5..5 + NONCE_LEN];
    let wrapped = &header[5 + NONCE_LEN..];
    let dek_bytes = aead_decrypt(
        kek.expose(),
        wrap_nonce,
        wrapped,
        &dek_aad(FORMAT_V1, kek_version, context),
    )?;
    // Used straight from its zeroizing buffer: a copy into an mlock'ed
    // `SecretKey` would protect nothing (the bytes are already here) and
    // cost a system call on every read.
    let dek: &[u8; KEY_LEN] = dek_bytes
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::Integrity)?;
    let data_nonce = &envelope[HEADER_LEN..HEADER_LEN + NONCE_LEN];
    let ciphertext = &envelope[HEADER_LEN + NONCE_LEN..];
    aead_decrypt(dek, data_nonce, ciphertext, &data_aad(header, context))
}

fn dek_aad(format: u8, kek_version: u32, context: &[u8]) -> Vec<u8> {
    crate::encoding::fields(&[DOMAIN_DEK, &[format], &kek_version.to_be_bytes(), context])
}

fn data_aad(header: &[u8], context: &[u8]) -> Vec<u8> {
    crate::encoding::fields(&[DOMAIN_DATA, header, context])
}

fn aead_encrypt(key: &[u8; KEY_LEN], nonce: &[u8], plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    XChaCha20Poly1305::new(key.into())
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption fails only for messages beyond 2^38 bytes, which the
        // request size limit makes impossible.
        .expect("XChaCha20-Poly1305 encryption cannot fail for bounded input")
}

fn aead_decrypt(
    key: &[u8; KEY_LEN],
    nonce: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    XChaCha20Poly1305::new(key.into())
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Integrity)
}

/// Derives a purpose-specific key from a root secret with HKDF-SHA256
/// (R-AUTH-14): keys for different purposes are independent even though they
/// share a root, and `info` names the purpose.
pub fn derive_key(root: &[u8], info: &str) -> SecretKey {
    let mut okm = Zeroizing::new([0u8; KEY_LEN]);
    Hkdf::<Sha256>::new(Some(b"zafe/v1/hkdf-salt"), root)
        .expand(info.as_bytes(), &mut okm[..])
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    SecretKey::from_bytes(&okm)
}

/// HMAC-SHA256 of `message` under `key`.
pub fn hmac_sha256(key: &SecretKey, message: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose()).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Constant-time equality of two byte strings of possibly different length
/// (the length itself is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> SecretKey {
        SecretKey::from_bytes(&[7u8; KEY_LEN])
    }

    fn open_with(
        key: &SecretKey,
        version: u32,
        ctx: &[u8],
        env: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        open(|v| (v == version).then_some(key), ctx, env).map(|p| p.to_vec())
    }

    #[test]
    fn round_trip() {
        let env = seal(&kek(), 3, b"ctx", b"hello");
        assert_eq!(open_with(&kek(), 3, b"ctx", &env).unwrap(), b"hello");
        assert_eq!(envelope_key_version(&env).unwrap(), 3);
    }

    #[test]
    fn empty_plaintext_round_trips() {
        let env = seal(&kek(), 1, b"ctx", b"");
        assert_eq!(env.len(), MIN_ENVELOPE_LEN);
        assert_eq!(open_with(&kek(), 1, b"ctx", &env).unwrap(), b"");
    }

    // R-KEY-3: a ciphertext moved to another location does not decrypt.
    #[test]
    fn other_context_fails() {
        let env = seal(&kek(), 1, b"secret/a@1", b"hello");
        assert_eq!(
            open_with(&kek(), 1, b"secret/b@1", &env),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            open_with(&kek(), 1, b"secret/a@2", &env),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn wrong_key_fails() {
        let env = seal(&kek(), 1, b"ctx", b"hello");
        let other = SecretKey::from_bytes(&[8u8; KEY_LEN]);
        assert_eq!(
            open_with(&other, 1, b"ctx", &env),
            Err(CryptoError::Integrity)
        );
    }

    // Every single bit of the envelope is authenticated, the format byte and
    // the key version included (a comparable system left them unauthenticated).
    #[test]
    fn every_bit_flip_is_detected() {
        let key = kek();
        let env = seal(&key, 1, b"ctx", b"hello world");
        for i in 0..env.len() {
            for bit in 0..8 {
                let mut bad = env.clone();
                bad[i] ^= 1 << bit;
                // Version-relabelled envelopes must fail too, even when the
                // caller has a key for the new version.
                let r = open(|_| Some(&key), b"ctx", &bad);
                assert!(r.is_err(), "flip at byte {i} bit {bit} went unnoticed");
            }
        }
    }

    // A wrapped DEK cannot be grafted onto another record's ciphertext.
    #[test]
    fn wrapped_key_is_bound_to_its_blob() {
        let a = seal(&kek(), 1, b"ctx", b"record a");
        let b = seal(&kek(), 1, b"ctx", b"record b");
        let mut mixed = a[..HEADER_LEN].to_vec();
        mixed.extend_from_slice(&b[HEADER_LEN..]);
        assert_eq!(
            open_with(&kek(), 1, b"ctx", &mixed),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn truncated_envelopes_are_malformed() {
        let env = seal(&kek(), 1, b"ctx", b"x");
        for len in 0..MIN_ENVELOPE_LEN {
            assert!(open_with(&kek(), 1, b"ctx", &env[..len]).is_err());
        }
    }

    #[test]
    fn unknown_version_is_reported() {
        let env = seal(&kek(), 9, b"ctx", b"x");
        assert_eq!(
            open_with(&kek(), 1, b"ctx", &env),
            Err(CryptoError::UnknownKeyVersion(9))
        );
    }

    #[test]
    fn derived_keys_depend_on_purpose() {
        let root = [1u8; 32];
        assert_ne!(derive_key(&root, "a"), derive_key(&root, "b"));
        assert_eq!(derive_key(&root, "a"), derive_key(&root, "a"));
    }
}
