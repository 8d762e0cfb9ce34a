//! The token store (R-AUTH-5, R-AUTH-10).
//!
//! A token is stored only as `HMAC-SHA256(token key, token)`: the storage key
//! of its entry is that hash, so a lookup is one indexed read and the token
//! itself is never written anywhere. The entry (behind the barrier) repeats
//! the hash, and the lookup checks it in constant time, so a record copied
//! to another token's slot is refused even before the barrier's own location
//! binding would catch it.
//!
//! The token key is derived from the keyring with HKDF, or from the
//! configured token pepper (`ZAFE_TOKEN_PEPPER`) when one is set.

use serde::{Deserialize, Serialize};
use zafe_core::crypto::constant_time_eq;
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};

use crate::barrier::{Barrier, Expect};
use crate::error::{Error, Result};

const ID_PREFIX: &str = "sys/token/id/";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenEntry {
    /// Hex of the token's keyed hash; also the last segment of its storage key.
    pub id_hash: String,
    /// A non-secret handle for the token (for listing and revoking it).
    pub accessor: String,
    pub policies: Vec<String>,
    pub display_name: String,
    pub created_at: i64,
    /// Unix seconds; `None` never expires (the root token).
    pub expires_at: Option<i64>,
}

impl TokenEntry {
    pub fn is_root(&self) -> bool {
        self.policies.iter().any(|p| p == "root")
    }
}

/// What a new token should be.
pub struct TokenSpec {
    pub policies: Vec<String>,
    pub display_name: String,
    pub ttl_secs: Option<i64>,
}

fn storage_key(hash: &str) -> String {
    format!("{ID_PREFIX}{hash}")
}

/// Issues a new token; returns the token (shown once) and its entry.
/// `fixed` is only for `zafe server --dev --dev-root-token`.
pub async fn create(barrier: &Barrier, key: &SecretKey, spec: TokenSpec, fixed: Option<&str>) -> Result<(String, TokenEntry)> {
    let token = fixed.map(str::to_string).unwrap_or_else(|| token::generate(TokenKind::Service));
    let id_hash = hex::encode(token::lookup_hash(key, &token));
    let now = crate::seal::now();
    let entry = TokenEntry {
        id_hash: id_hash.clone(),
        accessor: hex::encode(zafe_core::crypto::random_bytes::<16>()),
        policies: spec.policies,
        display_name: spec.display_name,
        created_at: now,
        expires_at: spec.ttl_secs.map(|t| now + t),
    };
    let bytes = serde_json::to_vec(&entry).expect("serialisable");
    barrier
        .put(&storage_key(&id_hash), &bytes, Expect::Absent)
        .await
        .map_err(Error::from)?;
    Ok((token, entry))
}

/// The live entry for `token`, or `None` for unknown, malformed or expired
/// tokens (all indistinguishable to the caller).
pub async fn lookup(barrier: &Barrier, key: &SecretKey, token: &str) -> Result<Option<TokenEntry>> {
    if token.is_empty() || token.len() > 256 {
        return Ok(None);
    }
    let id_hash = hex::encode(token::lookup_hash(key, token));
    let Some(record) = barrier.get(&storage_key(&id_hash)).await? else {
        return Ok(None);
    };
    let entry: TokenEntry = serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
        key: storage_key(&id_hash),
    })?;
    if !constant_time_eq(entry.id_hash.as_bytes(), id_hash.as_bytes()) {
        return Err(Error::Integrity { key: storage_key(&id_hash) });
    }
    if entry.expires_at.is_some_and(|t| t <= crate::seal::now()) {
        return Ok(None);
    }
    Ok(Some(entry))
}

/// Revokes `token`; revoking an unknown token is not an error.
pub async fn revoke(barrier: &Barrier, key: &SecretKey, token: &str) -> Result<()> {
    let id_hash = hex::encode(token::lookup_hash(key, token));
    barrier.delete(&storage_key(&id_hash)).await.map_err(Error::from)
}
