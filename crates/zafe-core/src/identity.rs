//! The server's identity (R-ID-1..3).
//!
//! A Zafe server holds a long-lived Ed25519 key. Its `server_id` is a short
//! hash of the public key, so an id cannot be claimed without the key. To
//! prove possession, the server signs a *proof* over:
//!
//! - the client's fresh random nonce (so a captured proof cannot be
//!   replayed: a signed timestamp alone can be, for as long as the skew
//!   window lasts),
//! - the server's clock (so a client can bound how stale a proof is),
//! - and, when the client reached the server over TLS, the SHA-256 of the
//!   TLS certificate's SubjectPublicKeyInfo the server presents.
//!
//! The last field defeats a relaying proxy: a man in the middle with its own
//! certificate can forward the client's nonce to the real server and relay
//! the valid signature back, but the signature names the real server's TLS
//! key, and the client sees the proxy's key on its connection.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::encoding;

const DOMAIN_PROOF: &[u8] = b"zafe/v1/identity-proof";
const DOMAIN_ID: &[u8] = b"zafe/v1/server-id";

/// Accepted nonce lengths, in bytes. At least 128 bits of client randomness.
pub const NONCE_LEN_RANGE: std::ops::RangeInclusive<usize> = 16..=64;

/// How far the server's clock may be from the client's, in seconds.
pub const DEFAULT_MAX_SKEW_SECS: i64 = 120;

/// The server's Ed25519 signing key. Its secret half leaves the type only
/// through [`IdentityKey::seed`] (zeroized on drop, for the key file) and
/// never through `Debug`, which prints the server id.
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// A new key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        Self(SigningKey::generate(&mut rand_core::OsRng))
    }

    /// The key whose secret seed is `seed` (as stored by [`IdentityKey::seed`]).
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The 32-byte secret seed, for storing the key in its file.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }

    /// This key's `server_id` ([`server_id_for`] its public key).
    pub fn server_id(&self) -> String {
        server_id_for(&self.public_key())
    }

    /// Signs an identity proof for `nonce` at `timestamp` (Unix seconds),
    /// bound to the TLS key whose SPKI hash is `tls_spki_sha256` when the
    /// request arrived over TLS ([`spki_sha256`]). Checked by [`verify_proof`].
    pub fn prove(
        &self,
        nonce: &[u8],
        timestamp: i64,
        tls_spki_sha256: Option<[u8; 32]>,
    ) -> IdentityProof {
        let public_key = self.public_key();
        let server_id = server_id_for(&public_key);
        let message = proof_message(
            &server_id,
            &public_key,
            nonce,
            timestamp,
            tls_spki_sha256.as_ref(),
        );
        IdentityProof {
            server_id,
            algorithm: "ed25519".into(),
            public_key: b64(&public_key),
            nonce: hex::encode(nonce),
            timestamp,
            tls_spki_sha256: tls_spki_sha256.map(hex::encode),
            signature: b64(&self.0.sign(&message).to_bytes()),
        }
    }

    /// Signs an arbitrary domain-separated field list (used for audit
    /// checkpoints). `domain` must be unique to its purpose.
    pub fn sign_fields(&self, domain: &[u8], fields: &[&[u8]]) -> [u8; 64] {
        let mut all = Vec::with_capacity(fields.len() + 1);
        all.push(domain);
        all.extend_from_slice(fields);
        self.0.sign(&encoding::fields(&all)).to_bytes()
    }
}

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityKey({})", self.server_id())
    }
}

/// Verifies a signature made by [`IdentityKey::sign_fields`].
pub fn verify_fields(
    public_key: &[u8; 32],
    domain: &[u8],
    fields: &[&[u8]],
    signature: &[u8; 64],
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let mut all = Vec::with_capacity(fields.len() + 1);
    all.push(domain);
    all.extend_from_slice(fields);
    key.verify_strict(&encoding::fields(&all), &Signature::from_bytes(signature))
        .is_ok()
}

/// `zs_` followed by the first 16 bytes of a domain-separated SHA-256 of the
/// public key, in hex.
pub fn server_id_for(public_key: &[u8; 32]) -> String {
    let mut h = Sha256::new();
    h.update(DOMAIN_ID);
    h.update(public_key);
    let digest = h.finalize();
    format!("zs_{}", hex::encode(&digest[..16]))
}

/// What `GET /v1/sys/identity` returns.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdentityProof {
    /// The id the server claims; must be [`server_id_for`] `public_key`.
    pub server_id: String,
    /// Always `"ed25519"`; anything else is refused.
    pub algorithm: String,
    /// Standard base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    /// Hex of the client's nonce, echoed.
    pub nonce: String,
    /// The server's clock, Unix seconds.
    pub timestamp: i64,
    /// Hex SHA-256 of the TLS certificate's SubjectPublicKeyInfo, when the
    /// request arrived over TLS (or the server knows its proxy's certificate).
    #[serde(default)]
    pub tls_spki_sha256: Option<String>,
    /// Standard base64 of the Ed25519 signature.
    pub signature: String,
}

/// What a client learns from a proof that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The proven id (`zs_` and 32 hex digits); what clients pin.
    pub server_id: String,
    /// The Ed25519 public key the id derives from.
    pub public_key: [u8; 32],
    /// Whether the proof was bound to the TLS key on this connection.
    pub tls_bound: bool,
}

/// Why [`verify_proof`] refused a proof. Every variant means the client must
/// not send a credential on this connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// A field could not be decoded, or the algorithm is not Ed25519; names
    /// the field.
    #[error("the identity proof is malformed: {0}")]
    Malformed(&'static str),
    /// The claimed `server_id` is not the hash of the presented key: the
    /// server claims an identity that is not its own.
    #[error(
        "the server_id {claimed} does not belong to the public key it presented (derived {derived})"
    )]
    IdMismatch {
        /// The id in the proof.
        claimed: String,
        /// The id its public key actually hashes to.
        derived: String,
    },
    /// The signature does not verify for our nonce although the nonce was
    /// echoed: the server does not hold the key it presents.
    #[error("the identity signature is invalid: the server does not hold the key it claims")]
    BadSignature,
    /// The proof was made for another nonce: a replayed or relayed proof.
    #[error("the identity proof answers a different nonce: it was replayed or relayed")]
    NonceMismatch,
    /// The signed timestamp is further from our clock than allowed.
    #[error("the server's clock is {skew_secs}s away from ours (more than {max_secs}s allowed)")]
    ClockSkew {
        /// How far apart the clocks are, in seconds (absolute).
        skew_secs: i64,
        /// The allowed maximum, in seconds.
        max_secs: i64,
    },
    /// The proof names a different TLS key than the one on our connection:
    /// someone in between terminates TLS and relays the proof.
    #[error(
        "the server signed a different TLS key than the one on this connection: a proxy is relaying this connection"
    )]
    TlsKeyMismatch,
    /// Over TLS, a proof that names no TLS key, and unbound proofs were not
    /// allowed for this server.
    #[error("the connection uses TLS but the server's proof does not cover a TLS key")]
    TlsNotBound,
    /// A proof that names a TLS key, over plain HTTP.
    #[error("the proof covers a TLS key but this connection is not TLS")]
    UnexpectedTlsBinding,
}

/// Checks a proof the way every Zafe client must: the id derives from the
/// key, the signature verifies over our nonce, the clock is close, and the
/// signed TLS key is the one on our connection (`observed_tls_spki_sha256`,
/// `None` for plain HTTP). An unbound proof over TLS is reported with
/// `tls_bound: false` only when `allow_unbound_tls` is set (a server behind a
/// TLS-terminating proxy that was pinned that way); otherwise it is refused.
pub fn verify_proof(
    proof: &IdentityProof,
    expected_nonce: &[u8],
    now: i64,
    max_skew_secs: i64,
    observed_tls_spki_sha256: Option<&[u8; 32]>,
    allow_unbound_tls: bool,
) -> Result<VerifiedIdentity, IdentityError> {
    use base64::Engine as _;
    let std_b64 = base64::engine::general_purpose::STANDARD;

    if proof.algorithm != "ed25519" {
        return Err(IdentityError::Malformed("unsupported algorithm"));
    }
    let public_key: [u8; 32] = std_b64
        .decode(&proof.public_key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or(IdentityError::Malformed("public_key"))?;
    let derived = server_id_for(&public_key);
    if derived != proof.server_id {
        return Err(IdentityError::IdMismatch {
            claimed: proof.server_id.clone(),
            derived,
        });
    }
    let signature: [u8; 64] = std_b64
        .decode(&proof.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or(IdentityError::Malformed("signature"))?;
    let tls_spki: Option<[u8; 32]> = match &proof.tls_spki_sha256 {
        None => None,
        Some(h) => Some(
            hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(IdentityError::Malformed("tls_spki_sha256"))?,
        ),
    };
    // The signature covers the nonce we sent, not the one echoed back, so a
    // proof for another nonce fails here even if the echo was edited.
    let message = proof_message(
        &proof.server_id,
        &public_key,
        expected_nonce,
        proof.timestamp,
        tls_spki.as_ref(),
    );
    let key = VerifyingKey::from_bytes(&public_key)
        .map_err(|_| IdentityError::Malformed("public_key"))?;
    if key
        .verify_strict(&message, &Signature::from_bytes(&signature))
        .is_err()
    {
        return Err(if proof.nonce != hex::encode(expected_nonce) {
            IdentityError::NonceMismatch
        } else {
            IdentityError::BadSignature
        });
    }
    let skew = (now - proof.timestamp).abs();
    if skew > max_skew_secs {
        return Err(IdentityError::ClockSkew {
            skew_secs: skew,
            max_secs: max_skew_secs,
        });
    }
    let tls_bound = match (observed_tls_spki_sha256, tls_spki) {
        (Some(seen), Some(signed)) if crate::crypto::constant_time_eq(seen, &signed) => true,
        (Some(_), Some(_)) => return Err(IdentityError::TlsKeyMismatch),
        (Some(_), None) if allow_unbound_tls => false,
        (Some(_), None) => return Err(IdentityError::TlsNotBound),
        (None, Some(_)) => return Err(IdentityError::UnexpectedTlsBinding),
        (None, None) => false,
    };
    Ok(VerifiedIdentity {
        server_id: proof.server_id.clone(),
        public_key,
        tls_bound,
    })
}

fn proof_message(
    server_id: &str,
    public_key: &[u8; 32],
    nonce: &[u8],
    timestamp: i64,
    tls: Option<&[u8; 32]>,
) -> Vec<u8> {
    encoding::fields(&[
        DOMAIN_PROOF,
        server_id.as_bytes(),
        public_key,
        nonce,
        &timestamp.to_be_bytes(),
        tls.map(|t| &t[..]).unwrap_or(&[]),
    ])
}

/// SHA-256 of a DER-encoded SubjectPublicKeyInfo.
pub fn spki_sha256(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const NONCE: &[u8] = b"0123456789abcdef";

    fn check(
        proof: &IdentityProof,
        tls: Option<&[u8; 32]>,
    ) -> Result<VerifiedIdentity, IdentityError> {
        verify_proof(proof, NONCE, NOW, DEFAULT_MAX_SKEW_SECS, tls, false)
    }

    #[test]
    fn a_fresh_proof_verifies() {
        let key = IdentityKey::generate();
        let v = check(&key.prove(NONCE, NOW, None), None).unwrap();
        assert_eq!(v.server_id, key.server_id());
        assert!(!v.tls_bound);
        assert!(v.server_id.starts_with("zs_") && v.server_id.len() == 35);
    }

    #[test]
    fn the_seed_round_trips() {
        let key = IdentityKey::generate();
        assert_eq!(
            IdentityKey::from_seed(&key.seed()).public_key(),
            key.public_key()
        );
    }

    // A "parrot" server copies the real public key and id but cannot sign.
    #[test]
    fn a_copied_public_key_without_the_private_key_fails() {
        let real = IdentityKey::generate();
        let parrot = IdentityKey::generate();
        let mut proof = parrot.prove(NONCE, NOW, None);
        proof.public_key = real.prove(NONCE, NOW, None).public_key;
        proof.server_id = real.server_id();
        assert_eq!(check(&proof, None), Err(IdentityError::BadSignature));
    }

    #[test]
    fn an_id_that_does_not_match_the_key_fails() {
        let key = IdentityKey::generate();
        let mut proof = key.prove(NONCE, NOW, None);
        proof.server_id = IdentityKey::generate().server_id();
        assert!(matches!(
            check(&proof, None),
            Err(IdentityError::IdMismatch { .. })
        ));
    }

    // R-ID-2: a proof captured for one nonce is useless for another.
    #[test]
    fn a_replayed_proof_fails() {
        let key = IdentityKey::generate();
        let old = key.prove(b"an-earlier-nonce-0000", NOW, None);
        assert_eq!(check(&old, None), Err(IdentityError::NonceMismatch));
        let mut edited = old.clone();
        edited.nonce = hex::encode(NONCE);
        assert_eq!(check(&edited, None), Err(IdentityError::BadSignature));
    }

    #[test]
    fn clock_skew_is_bounded() {
        let key = IdentityKey::generate();
        let stale = key.prove(NONCE, NOW - 3600, None);
        assert!(matches!(
            check(&stale, None),
            Err(IdentityError::ClockSkew { .. })
        ));
        let mut edited = key.prove(NONCE, NOW - 3600, None);
        edited.timestamp = NOW;
        assert_eq!(check(&edited, None), Err(IdentityError::BadSignature));
    }

    // R-ID-3: the relay attack. The proxy's connection key differs from the
    // key the real server signed.
    #[test]
    fn a_relayed_tls_proof_fails() {
        let key = IdentityKey::generate();
        let real_tls = [1u8; 32];
        let proxy_tls = [2u8; 32];
        let proof = key.prove(NONCE, NOW, Some(real_tls));
        assert!(check(&proof, Some(&real_tls)).unwrap().tls_bound);
        assert_eq!(
            check(&proof, Some(&proxy_tls)),
            Err(IdentityError::TlsKeyMismatch)
        );
        assert_eq!(
            check(&proof, None),
            Err(IdentityError::UnexpectedTlsBinding)
        );
        // Stripping the binding breaks the signature.
        let mut stripped = proof.clone();
        stripped.tls_spki_sha256 = None;
        assert_eq!(
            check(&stripped, Some(&proxy_tls)),
            Err(IdentityError::BadSignature)
        );
        // An unbound proof over TLS is refused unless explicitly allowed.
        let unbound = key.prove(NONCE, NOW, None);
        assert_eq!(
            check(&unbound, Some(&proxy_tls)),
            Err(IdentityError::TlsNotBound)
        );
        let allowed = verify_proof(&unbound, NONCE, NOW, 120, Some(&proxy_tls), true).unwrap();
        assert!(!allowed.tls_bound);
    }

    #[test]
    fn field_signatures_verify_and_are_domain_separated() {
        let key = IdentityKey::generate();
        let sig = key.sign_fields(b"zafe/v1/test", &[b"a", b"b"]);
        assert!(verify_fields(
            &key.public_key(),
            b"zafe/v1/test",
            &[b"a", b"b"],
            &sig
        ));
        assert!(!verify_fields(
            &key.public_key(),
            b"zafe/v1/other",
            &[b"a", b"b"],
            &sig
        ));
        assert!(!verify_fields(
            &key.public_key(),
            b"zafe/v1/test",
            &[b"ab"],
            &sig
        ));
    }
}
