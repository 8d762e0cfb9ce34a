//! The transit engine (R-KV-3): encryption as a service with Vault's API.
//!
//! Named keys live in this mount's storage view at `policy/<name>` (the
//! same name Vault uses), so the barrier encrypts them at rest and no other
//! mount can reach them (R-ACL-4). A key record holds every version of the
//! key material; callers only ever see ciphertexts, signatures and MACs,
//! unless the key was created `exportable`.
//!
//! Formats follow Vault exactly, so ciphertexts are interchangeable with a
//! Vault key holding the same material:
//!
//! - ciphertext: `vault:v<N>:<base64(nonce || ciphertext || tag)>`, with a
//!   random 12-byte nonce for both `aes256-gcm96` and `chacha20-poly1305`;
//! - signature (`ed25519`): `vault:v<N>:<base64(signature)>`;
//! - HMAC: `vault:v<N>:<base64(mac)>`, under a separate per-version HMAC key.
//!
//! Key-name binding: like Vault, the key name is not part of the AEAD's
//! associated data (only the caller's `associated_data` is). What stops a
//! ciphertext of key A being accepted by key B is that the two keys hold
//! independent random material: B's tag check fails, and decryption answers
//! "message authentication failed".
//!
//! Changes to a key (create, rotate, config, trim) are read-modify-write
//! with compare-and-swap on the record's generation (`View::update`), so
//! concurrent rotations on any number of nodes never lose a version; on one
//! node they are also serialised per key by a striped lock, so they do not
//! even have to retry.

use std::collections::BTreeMap;
use std::hash::{Hash as _, Hasher as _};

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as B64URL};
use chacha20poly1305::ChaCha20Poly1305;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha224, Sha256, Sha384, Sha512};
use zafe_core::crypto::fill_random;
use zafe_engine::{
    Ctx, Engine, Error, Expect, MAX_LIST, Operation, Request, Response, Result, Status, Timestamp,
    Write,
};
use zeroize::Zeroizing;

/// Where a named key lives inside the mount's view.
const POLICY_PREFIX: &str = "policy/";
/// AEAD nonce length for both supported ciphers (96 bits, as in Vault).
const NONCE_LEN: usize = 12;
/// AEAD tag length for both supported ciphers.
const TAG_LEN: usize = 16;
/// Bounds the work one request can ask for; Vault has no limit, but the
/// body size limit alone would still allow tens of thousands of signatures.
const MAX_BATCH: usize = 10_000;
/// Vault's limit for `random`: "'bytes' should be less than 131072".
const MAX_RANDOM_BYTES: u64 = 128 * 1024;
/// Key names are path segments; keep them short enough to read and store.
const MAX_NAME_LEN: usize = 128;
/// Per-key lock stripes: bounded memory whatever the number of keys.
const LOCK_STRIPES: usize = 64;

/// Vault's text for a version below `min_decryption_version`.
const TOO_OLD: &str = "ciphertext or signature version is disallowed by policy (too old)";

/// The transit engine of one mount: encryption as a service with named keys that never leave it.
pub struct Transit {
    /// Serialises changes to one key on this node (CAS still guards
    /// against other nodes); indexed by a hash of the key name.
    locks: [tokio::sync::Mutex<()>; LOCK_STRIPES],
}

impl Default for Transit {
    fn default() -> Self {
        Self::new()
    }
}

impl Transit {
    /// An engine with its own key locks.
    pub fn new() -> Self {
        Self {
            locks: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
        }
    }

    async fn lock(&self, name: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        name.hash(&mut hasher);
        self.locks[(hasher.finish() % LOCK_STRIPES as u64) as usize]
            .lock()
            .await
    }
}

// ---- Keys and their storage ---------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum KeyType {
    #[serde(rename = "aes256-gcm96")]
    Aes256Gcm96,
    #[serde(rename = "chacha20-poly1305")]
    ChaCha20Poly1305,
    #[serde(rename = "ed25519")]
    Ed25519,
}

impl KeyType {
    fn parse(raw: &str) -> Result<Self> {
        match raw {
            "aes256-gcm96" => Ok(KeyType::Aes256Gcm96),
            "chacha20-poly1305" => Ok(KeyType::ChaCha20Poly1305),
            "ed25519" => Ok(KeyType::Ed25519),
            other => Err(Error::bad_request(format!(
                "unknown key type {other}: Zafe's transit engine supports aes256-gcm96 (the default), \
                 chacha20-poly1305 and ed25519"
            ))),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            KeyType::Aes256Gcm96 => "aes256-gcm96",
            KeyType::ChaCha20Poly1305 => "chacha20-poly1305",
            KeyType::Ed25519 => "ed25519",
        }
    }

    fn supports_encryption(self) -> bool {
        matches!(self, KeyType::Aes256Gcm96 | KeyType::ChaCha20Poly1305)
    }

    fn supports_signing(self) -> bool {
        self == KeyType::Ed25519
    }
}

/// Key material: zeroized on drop, base64 in the (barrier-encrypted)
/// record, never printed.
struct KeyBytes(Zeroizing<Vec<u8>>);

impl KeyBytes {
    fn random(len: usize) -> Self {
        let mut bytes = Zeroizing::new(vec![0u8; len]);
        fill_random(&mut bytes);
        Self(bytes)
    }

    fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for KeyBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&Zeroizing::new(B64.encode(&self.0[..])))
    }
}

impl<'de> Deserialize<'de> for KeyBytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = KeyBytes;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("base64 key material")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<KeyBytes, E> {
                // Decoded straight into a zeroizing buffer; the error says
                // nothing about the content.
                B64.decode(v)
                    .map(|b| KeyBytes(Zeroizing::new(b)))
                    .map_err(|_| E::custom("key material is not valid base64"))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[derive(Serialize, Deserialize)]
struct KeyVersion {
    /// The AEAD key (32 bytes), or the Ed25519 seed (32 bytes).
    key: KeyBytes,
    /// A separate key for `hmac/`, as in Vault, so MACs never reuse the
    /// encryption or signing key.
    hmac_key: KeyBytes,
    /// Unix seconds (Vault shows this for symmetric keys).
    created: i64,
    /// RFC 3339 (Vault shows this for asymmetric keys).
    creation_time: String,
}

impl KeyVersion {
    /// A new version made at `now`.
    fn generate(now: Timestamp) -> Self {
        Self {
            key: KeyBytes::random(32),
            hmac_key: KeyBytes::random(32),
            created: now.secs(),
            creation_time: zafe_engine::rfc3339(now.secs()),
        }
    }

    fn signing_key(&self) -> Result<SigningKey> {
        let seed: &[u8; 32] = self
            .key
            .expose()
            .try_into()
            .map_err(|_| Error::Internal("stored ed25519 key has the wrong length".into()))?;
        Ok(SigningKey::from_bytes(seed))
    }
}

/// One named key: its type, settings and every version still available.
#[derive(Serialize, Deserialize)]
struct Policy {
    name: String,
    #[serde(rename = "type")]
    key_type: KeyType,
    exportable: bool,
    deletion_allowed: bool,
    latest_version: u32,
    min_decryption_version: u32,
    /// 0 means "the latest version", as in Vault.
    min_encryption_version: u32,
    /// Versions below this were trimmed: their material is gone.
    min_available_version: u32,
    versions: BTreeMap<u32, KeyVersion>,
}

impl Policy {
    fn new(name: &str, key_type: KeyType, exportable: bool, now: Timestamp) -> Self {
        let mut versions = BTreeMap::new();
        versions.insert(1, KeyVersion::generate(now));
        Self {
            name: name.to_string(),
            key_type,
            exportable,
            deletion_allowed: false,
            latest_version: 1,
            min_decryption_version: 1,
            min_encryption_version: 0,
            min_available_version: 0,
            versions,
        }
    }

    fn rotate(&mut self, now: Timestamp) {
        self.latest_version += 1;
        self.versions
            .insert(self.latest_version, KeyVersion::generate(now));
    }

    /// The version a new ciphertext (or datakey) uses, checked as Vault does.
    fn encryption_version(&self, requested: Option<u32>) -> Result<u32> {
        let version = match requested {
            None | Some(0) => self.latest_version,
            Some(v) => v,
        };
        if version > self.latest_version {
            return Err(Error::bad_request(
                "requested version for encryption is higher than the latest key version",
            ));
        }
        if self.min_encryption_version > 0 && version < self.min_encryption_version {
            return Err(Error::bad_request(
                "requested version for encryption is less than the minimum encryption key version",
            ));
        }
        if version < self.min_decryption_version {
            // A ciphertext nobody could decrypt is worse than an error.
            return Err(Error::bad_request(format!(
                "no such key version: version {version} is below the key's min_decryption_version ({})",
                self.min_decryption_version
            )));
        }
        Ok(version)
    }

    /// The key material for a ciphertext, signature or MAC of `version`.
    fn decryption_version(&self, version: u32, what: &str) -> Result<&KeyVersion> {
        if version > self.latest_version {
            return Err(Error::bad_request(format!(
                "invalid {what}: version is too new"
            )));
        }
        if version < self.min_decryption_version {
            return Err(Error::bad_request(TOO_OLD));
        }
        self.versions
            .get(&version)
            .ok_or_else(|| Error::bad_request(TOO_OLD))
    }

    fn version(&self, version: u32) -> Result<&KeyVersion> {
        self.versions.get(&version).ok_or_else(|| {
            Error::Internal(format!(
                "transit key version {version} is missing from its record"
            ))
        })
    }

    /// Vault's `GET keys/<name>` data.
    fn to_json(&self) -> Value {
        let mut keys = Map::new();
        for (version, entry) in self.versions.range(self.min_decryption_version..) {
            let shown = match self.key_type {
                KeyType::Ed25519 => {
                    let public = entry
                        .signing_key()
                        .map(|k| B64.encode(k.verifying_key().to_bytes()))
                        .unwrap_or_default();
                    json!({
                        "certificate_chain": "",
                        "creation_time": entry.creation_time,
                        "name": "ed25519",
                        "public_key": public,
                    })
                }
                _ => json!(entry.created),
            };
            keys.insert(version.to_string(), shown);
        }
        json!({
            "allow_plaintext_backup": false,
            "auto_rotate_period": 0,
            "deletion_allowed": self.deletion_allowed,
            "derived": false,
            "exportable": self.exportable,
            "imported_key": false,
            "keys": keys,
            "latest_version": self.latest_version,
            "min_available_version": self.min_available_version,
            "min_decryption_version": self.min_decryption_version,
            "min_encryption_version": self.min_encryption_version,
            "name": self.name,
            "soft_deleted": false,
            "supports_decryption": self.key_type.supports_encryption(),
            // Zafe does not implement key derivation (see `create`).
            "supports_derivation": false,
            "supports_encryption": self.key_type.supports_encryption(),
            "supports_signing": self.key_type.supports_signing(),
            "type": self.key_type.as_str(),
        })
    }
}

fn storage_key(name: &str) -> String {
    format!("{POLICY_PREFIX}{name}")
}

/// What a change to a key record decided.
enum Change {
    /// Store this (new or changed) key.
    Write(Policy),
    /// Leave the record as it is; answer with this.
    Keep(Policy),
}

impl Transit {
    async fn load(&self, ctx: &Ctx<'_>, name: &str) -> Result<Option<(Policy, i64)>> {
        let Some(record) = ctx.view.get(&storage_key(name)).await? else {
            return Ok(None);
        };
        let policy = parse_policy(ctx, name, &record.value)?;
        Ok(Some((policy, record.generation)))
    }

    /// Read-modify-write of one key record with compare-and-swap: `change`
    /// sees the current key (if any) and may run again after a concurrent
    /// change elsewhere. Errors from `change` leave the record untouched.
    async fn modify<F>(&self, ctx: &Ctx<'_>, name: &str, mut change: F) -> Result<Policy>
    where
        F: FnMut(Option<Policy>) -> Result<Change> + Send,
    {
        let _serialised = self.lock(name).await;
        let mut outcome: Option<Result<Policy>> = None;
        ctx.view
            .update(&storage_key(name), |current| {
                let current = match current
                    .map(|bytes| parse_policy(ctx, name, bytes))
                    .transpose()
                {
                    Ok(current) => current,
                    Err(e) => {
                        outcome = Some(Err(e));
                        return None;
                    }
                };
                match change(current) {
                    Ok(Change::Write(policy)) => {
                        let bytes = serde_json::to_vec(&policy).expect("a key record serialises");
                        outcome = Some(Ok(policy));
                        Some(bytes)
                    }
                    Ok(Change::Keep(policy)) => {
                        outcome = Some(Ok(policy));
                        None
                    }
                    Err(e) => {
                        outcome = Some(Err(e));
                        None
                    }
                }
            })
            .await?;
        outcome.unwrap_or_else(|| {
            Err(Error::Internal(
                "transit key update produced no outcome".into(),
            ))
        })
    }

    /// A key that must exist, for operations that answer 400 otherwise
    /// (Vault's behaviour for encrypt, decrypt, sign...).
    async fn require(&self, ctx: &Ctx<'_>, name: &str, purpose: &str) -> Result<Policy> {
        match self.load(ctx, name).await? {
            Some((policy, _)) => Ok(policy),
            None => Err(Error::bad_request(format!(
                "{purpose} key not found: no transit key named {name:?}"
            ))),
        }
    }
}

fn parse_policy(ctx: &Ctx<'_>, name: &str, bytes: &[u8]) -> Result<Policy> {
    serde_json::from_slice(bytes).map_err(|_| Error::Integrity {
        key: ctx.view.full(&storage_key(name)),
    })
}

/// Vault's key-name rule (`\w(([\w-.@]+)?\w)?`, ASCII word characters).
fn check_name(name: &str) -> Result<()> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| word(c) || matches!(c, '-' | '.' | '@'))
        && name.starts_with(word)
        && name.ends_with(word);
    if ok {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid key name {name:?}: use up to {MAX_NAME_LEN} letters, digits, '_', '-', '.' and '@', \
             starting and ending with a letter, digit or '_'"
        )))
    }
}

// ---- Request fields -------------------------------------------------------

/// Fields of a request (JSON body, then query string) or of one batch item.
/// JSON `null` counts as absent: hvac sends `"plaintext": null` with batches.
/// Numbers and booleans may also come as strings, as Vault accepts.
#[derive(Clone, Copy)]
struct Fields<'a> {
    body: Option<&'a Map<String, Value>>,
    query: &'a [(String, String)],
}

enum Raw<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Raw<'a> {
    /// The value when it is text: a query parameter or a JSON string.
    fn text(&self) -> Option<&'a str> {
        match self {
            Raw::Text(s) => Some(s),
            Raw::Json(Value::String(s)) => Some(s.as_str()),
            Raw::Json(_) => None,
        }
    }
}

impl<'a> Fields<'a> {
    fn of(req: &'a Request) -> Self {
        Self {
            body: req.body.as_deref().and_then(Value::as_object),
            query: &req.query,
        }
    }

    fn item(item: &'a Value) -> Result<Self> {
        Ok(Self {
            body: Some(item.as_object().ok_or_else(|| {
                Error::bad_request("each batch_input item must be a JSON object")
            })?),
            query: &[],
        })
    }

    fn raw(&self, name: &str) -> Option<Raw<'a>> {
        if let Some(v) = self.body.and_then(|b| b.get(name)).filter(|v| !v.is_null()) {
            return Some(Raw::Json(v));
        }
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| Raw::Text(v.as_str()))
    }

    fn str(&self, name: &str) -> Result<Option<&'a str>> {
        match self.raw(name) {
            None => Ok(None),
            Some(raw) => raw
                .text()
                .map(Some)
                .ok_or_else(|| Error::bad_request(format!("{name} must be a string"))),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>> {
        let bad = || Error::bad_request(format!("{name} must be a boolean (true or false)"));
        match self.raw(name) {
            None => Ok(None),
            Some(Raw::Json(Value::Bool(b))) => Ok(Some(*b)),
            Some(raw) => match raw.text().map(|s| s.trim().to_ascii_lowercase()).as_deref() {
                Some("true" | "1" | "t") => Ok(Some(true)),
                Some("false" | "0" | "f") => Ok(Some(false)),
                _ => Err(bad()),
            },
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>> {
        let bad = || Error::bad_request(format!("{name} must be an integer"));
        match self.raw(name) {
            None => Ok(None),
            Some(Raw::Json(Value::Number(n))) => n.as_i64().map(Some).ok_or_else(bad),
            Some(raw) => raw
                .text()
                .and_then(|s| s.trim().parse().ok())
                .map(Some)
                .ok_or_else(bad),
        }
    }

    /// A key version: a non-negative integer that fits a `u32`.
    fn version(&self, name: &str) -> Result<Option<u32>> {
        match self.int(name)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| {
                Error::bad_request(format!("{name} must be a non-negative key version"))
            }),
        }
    }

    fn base64(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>> {
        match self.str(name)? {
            None => Ok(None),
            Some(s) => B64.decode(s).map(|b| Some(Zeroizing::new(b))).map_err(|_| {
                Error::bad_request(format!(
                    "{name} is not valid base64 (standard alphabet, padded)"
                ))
            }),
        }
    }

    fn reference(&self) -> Value {
        json!(self.raw("reference").and_then(|r| r.text()).unwrap_or(""))
    }
}

/// `batch_input`, when given: a non-empty array of at most [`MAX_BATCH`].
fn batch_input(req: &Request) -> Result<Option<&Vec<Value>>> {
    match req.field("batch_input") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(Error::bad_request("missing batch input to process"))
        }
        Some(Value::Array(items)) if items.len() > MAX_BATCH => Err(Error::bad_request(format!(
            "batch_input has {} items; the limit is {MAX_BATCH} per request",
            items.len()
        ))),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(Error::bad_request(
            "batch_input must be an array of objects",
        )),
    }
}

/// Runs `op` on every batch item; a bad item gets an `error` and never
/// fails the others. Returns the results and whether any succeeded/failed.
fn run_batch(
    items: &[Value],
    mut op: impl FnMut(Fields<'_>) -> Result<Map<String, Value>>,
    error_item: impl Fn(String) -> Map<String, Value>,
) -> (Vec<Value>, bool, bool) {
    let (mut any_ok, mut any_err) = (false, false);
    let results = items
        .iter()
        .map(|item| {
            let reference = Fields::item(item)
                .map(|f| f.reference())
                .unwrap_or(json!(""));
            let mut out = match Fields::item(item).and_then(&mut op) {
                Ok(out) => {
                    any_ok = true;
                    out
                }
                Err(e) => {
                    any_err = true;
                    if let Error::Internal(detail) = &e {
                        tracing::error!(%detail, "transit batch item failed");
                    }
                    error_item(e.to_string())
                }
            };
            out.insert("reference".into(), reference);
            Value::Object(out)
        })
        .collect();
    (results, any_ok, any_err)
}

/// Vault's status for encrypt/decrypt batches: 400 when any item failed,
/// unless the caller chose another code with `partial_failure_response_code`
/// and at least one item succeeded.
fn batch_status(
    req: &Request,
    any_ok: bool,
    any_err: bool,
    warnings: &mut Vec<String>,
) -> Result<Status> {
    if !any_err {
        return Ok(Status::OK);
    }
    let code = Fields::of(req).int("partial_failure_response_code")?;
    match code {
        Some(c) if any_ok => match u16::try_from(c)
            .ok()
            .filter(|c| (1..=599).contains(c))
            .and_then(Status::new)
        {
            Some(status) => Ok(status),
            None => {
                warnings.push("invalid HTTP response code override from partial_failure_response_code, reverting to 400".into());
                Ok(Status::BAD_REQUEST)
            }
        },
        _ => Ok(Status::BAD_REQUEST),
    }
}

fn reply(status: Status, data: Value, warnings: Vec<String>) -> Response {
    let warnings = (!warnings.is_empty()).then_some(warnings);
    Response::Vault {
        status: status,
        data: Some(data),
        auth: None,
        warnings: warnings.unwrap_or_default(),
    }
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

// ---- Cryptography ------------------------------------------------------------

/// `vault:v<N>:<body>` → (N, body). `what` names the value in errors.
fn split_versioned<'a>(value: &'a str, what: &str) -> Result<(u32, &'a str)> {
    let rest = value.strip_prefix("vault:v").ok_or_else(|| {
        Error::bad_request(format!(
            "invalid {what}: no prefix (expected vault:v<version>:...)"
        ))
    })?;
    let (version, body) = rest
        .split_once(':')
        .ok_or_else(|| Error::bad_request(format!("invalid {what}: wrong number of fields")))?;
    let version: u32 = version.parse().ok().filter(|v| *v > 0).ok_or_else(|| {
        Error::bad_request(format!(
            "invalid {what}: version number could not be decoded"
        ))
    })?;
    Ok((version, body))
}

fn seal(key_type: KeyType, key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let sealed = match key_type {
        KeyType::Aes256Gcm96 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| Error::Internal("bad AES key length".into()))?
            .encrypt(aes_gcm::Nonce::from_slice(&nonce), payload),
        KeyType::ChaCha20Poly1305 => ChaCha20Poly1305::new_from_slice(key)
            .map_err(|_| Error::Internal("bad ChaCha20 key length".into()))?
            .encrypt(chacha20poly1305::Nonce::from_slice(&nonce), payload),
        KeyType::Ed25519 => return Err(Error::Internal("seal called with a signing key".into())),
    }
    .map_err(|_| Error::Internal("AEAD encryption failed".into()))?;
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

fn open(key_type: KeyType, key: &[u8], blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if blob.len() < NONCE_LEN + TAG_LEN {
        return Err(Error::bad_request("invalid ciphertext length"));
    }
    let (nonce, sealed) = blob.split_at(NONCE_LEN);
    let payload = Payload { msg: sealed, aad };
    let opened = match key_type {
        KeyType::Aes256Gcm96 => Aes256Gcm::new_from_slice(key)
            .map_err(|_| Error::Internal("bad AES key length".into()))?
            .decrypt(aes_gcm::Nonce::from_slice(nonce), payload),
        KeyType::ChaCha20Poly1305 => ChaCha20Poly1305::new_from_slice(key)
            .map_err(|_| Error::Internal("bad ChaCha20 key length".into()))?
            .decrypt(chacha20poly1305::Nonce::from_slice(nonce), payload),
        KeyType::Ed25519 => return Err(Error::Internal("open called with a signing key".into())),
    };
    opened.map(Zeroizing::new).map_err(|_| {
        Error::bad_request(
            "cipher: message authentication failed: the ciphertext was altered, was made by another key, \
             or its associated_data differs",
        )
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashAlg {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    fn parse(raw: Option<&str>) -> Result<Self> {
        match raw.unwrap_or("sha2-256") {
            "sha2-224" => Ok(HashAlg::Sha224),
            "sha2-256" => Ok(HashAlg::Sha256),
            "sha2-384" => Ok(HashAlg::Sha384),
            "sha2-512" => Ok(HashAlg::Sha512),
            other => Err(Error::bad_request(format!(
                "unsupported algorithm {other}: use sha2-224, sha2-256, sha2-384 or sha2-512"
            ))),
        }
    }

    fn digest(self, input: &[u8]) -> Vec<u8> {
        match self {
            HashAlg::Sha224 => Sha224::digest(input).to_vec(),
            HashAlg::Sha256 => Sha256::digest(input).to_vec(),
            HashAlg::Sha384 => Sha384::digest(input).to_vec(),
            HashAlg::Sha512 => Sha512::digest(input).to_vec(),
        }
    }

    fn hmac(self, key: &[u8], input: &[u8]) -> Vec<u8> {
        macro_rules! mac {
            ($d:ty) => {{
                let mut mac = <Hmac<$d> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                mac.update(input);
                mac.finalize().into_bytes().to_vec()
            }};
        }
        match self {
            HashAlg::Sha224 => mac!(Sha224),
            HashAlg::Sha256 => mac!(Sha256),
            HashAlg::Sha384 => mac!(Sha384),
            HashAlg::Sha512 => mac!(Sha512),
        }
    }

    /// Constant-time check of `tag` against the MAC of `input`.
    fn hmac_verify(self, key: &[u8], input: &[u8], tag: &[u8]) -> bool {
        zafe_core::crypto::constant_time_eq(&self.hmac(key, input), tag)
    }
}

/// `hex` (default for hash) or `base64` (default for random).
fn encode_as(format: Option<&str>, default: &str, bytes: &[u8]) -> Result<String> {
    match format.unwrap_or(default) {
        "hex" => Ok(hex::encode(bytes)),
        "base64" => Ok(B64.encode(bytes)),
        other => Err(Error::bad_request(format!(
            "unsupported encoding format {other:?}; must be \"hex\" or \"base64\""
        ))),
    }
}

/// Ed25519 signatures are plain base64 (`asn1`, Vault's default name) or
/// unpadded base64url (`jws`).
#[derive(Clone, Copy)]
enum Marshaling {
    Asn1,
    Jws,
}

impl Marshaling {
    fn parse(raw: Option<&str>) -> Result<Self> {
        match raw.unwrap_or("asn1") {
            "asn1" => Ok(Marshaling::Asn1),
            "jws" => Ok(Marshaling::Jws),
            other => Err(Error::bad_request(format!(
                "unsupported marshaling_algorithm {other:?}; use asn1 or jws"
            ))),
        }
    }

    fn encode(self, bytes: &[u8]) -> String {
        match self {
            Marshaling::Asn1 => B64.encode(bytes),
            Marshaling::Jws => B64URL.encode(bytes),
        }
    }

    fn decode(self, text: &str) -> Option<Vec<u8>> {
        match self {
            Marshaling::Asn1 => B64.decode(text).ok(),
            Marshaling::Jws => B64URL.decode(text).ok(),
        }
    }
}

// ---- Routing --------------------------------------------------------------------

/// Every path the engine serves, relative to the mount.
enum Route<'a> {
    Keys,
    Key(&'a str),
    KeyConfig(&'a str),
    KeyRotate(&'a str),
    KeyTrim(&'a str),
    Encrypt(&'a str),
    Decrypt(&'a str),
    Rewrap(&'a str),
    DataKey(&'a str, &'a str),
    Random(Option<&'a str>, Option<&'a str>),
    Hash(Option<&'a str>),
    Hmac(&'a str, Option<&'a str>),
    Sign(&'a str, Option<&'a str>),
    Verify(&'a str, Option<&'a str>),
    Export(&'a str, &'a str, Option<&'a str>),
}

impl<'a> Route<'a> {
    fn parse(rel: &'a str) -> Option<Self> {
        let segments: Vec<&str> = rel.trim_end_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["keys"] => Route::Keys,
            ["keys", name] => Route::Key(name),
            ["keys", name, "config"] => Route::KeyConfig(name),
            ["keys", name, "rotate"] => Route::KeyRotate(name),
            ["keys", name, "trim"] => Route::KeyTrim(name),
            ["encrypt", name] => Route::Encrypt(name),
            ["decrypt", name] => Route::Decrypt(name),
            ["rewrap", name] => Route::Rewrap(name),
            ["datakey", kind, name] => Route::DataKey(kind, name),
            ["random"] => Route::Random(None, None),
            ["random", one] => Route::Random(Some(one), None),
            ["random", source, bytes] => Route::Random(Some(source), Some(bytes)),
            ["hash"] => Route::Hash(None),
            ["hash", alg] => Route::Hash(Some(alg)),
            ["hmac", name] => Route::Hmac(name, None),
            ["hmac", name, alg] => Route::Hmac(name, Some(alg)),
            ["sign", name] => Route::Sign(name, None),
            ["sign", name, alg] => Route::Sign(name, Some(alg)),
            ["verify", name] => Route::Verify(name, None),
            ["verify", name, alg] => Route::Verify(name, Some(alg)),
            ["export", kind, name] => Route::Export(kind, name, None),
            ["export", kind, name, version] => Route::Export(kind, name, Some(version)),
            _ => return None,
        })
    }

    fn allows(&self, op: Operation) -> bool {
        match self {
            Route::Keys => op == Operation::List,
            Route::Key(_) => matches!(op, Operation::Read | Operation::Write | Operation::Delete),
            Route::Export(..) => op == Operation::Read,
            _ => op == Operation::Write,
        }
    }

    /// The key name in the path, to validate before any storage access.
    fn key_name(&self) -> Option<&'a str> {
        match self {
            Route::Key(n)
            | Route::KeyConfig(n)
            | Route::KeyRotate(n)
            | Route::KeyTrim(n)
            | Route::Encrypt(n)
            | Route::Decrypt(n)
            | Route::Rewrap(n)
            | Route::DataKey(_, n)
            | Route::Hmac(n, _)
            | Route::Sign(n, _)
            | Route::Verify(n, _)
            | Route::Export(_, n, _) => Some(n),
            Route::Keys | Route::Random(..) | Route::Hash(_) => None,
        }
    }
}

#[async_trait]
impl Engine for Transit {
    /// Vault's existence check: `encrypt/<name>` creates the key when it is
    /// missing (an upsert), so the policy must grant `create` then. Every
    /// other write needs `update`, as in Vault.
    async fn exists(&self, ctx: &Ctx<'_>, rel_path: &str) -> Result<bool> {
        match Route::parse(rel_path) {
            Some(Route::Encrypt(name)) if check_name(name).is_ok() => {
                Ok(self.load(ctx, name).await?.is_some())
            }
            _ => Ok(true),
        }
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request, rel_path: &str) -> Result<Response> {
        let route =
            Route::parse(rel_path).ok_or_else(|| Error::NotFound("unsupported path".into()))?;
        if !route.allows(req.operation) {
            return Err(Error::MethodNotAllowed("unsupported operation".into()));
        }
        if let Some(name) = route.key_name() {
            check_name(name)?;
        }
        match route {
            Route::Keys => self.list(ctx, req).await,
            Route::Key(name) => match req.operation {
                Operation::Read => self.read(ctx, name).await,
                Operation::Delete => self.delete(ctx, name).await,
                _ => self.create(ctx, req, name).await,
            },
            Route::KeyConfig(name) => self.config(ctx, req, name).await,
            Route::KeyRotate(name) => self.rotate(ctx, name).await,
            Route::KeyTrim(name) => self.trim(ctx, req, name).await,
            Route::Encrypt(name) => self.encrypt(ctx, req, name).await,
            Route::Decrypt(name) => self.decrypt(ctx, req, name).await,
            Route::Rewrap(name) => self.rewrap(ctx, req, name).await,
            Route::DataKey(kind, name) => self.datakey(ctx, req, kind, name).await,
            Route::Random(a, b) => random(req, a, b),
            Route::Hash(alg) => hash(req, alg),
            Route::Hmac(name, alg) => self.hmac(ctx, req, name, alg).await,
            Route::Sign(name, alg) => {
                // Ed25519 hashes internally and Vault ignores the algorithm
                // for it; still refuse a misspelt one.
                HashAlg::parse(alg)?;
                self.sign(ctx, req, name).await
            }
            Route::Verify(name, alg) => self.verify(ctx, req, name, alg).await,
            Route::Export(kind, name, version) => self.export(ctx, kind, name, version).await,
        }
    }
}

// ---- Key management -------------------------------------------------------------

impl Transit {
    async fn list(&self, ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
        let fields = Fields::of(req);
        let after = fields.str("after")?.unwrap_or("");
        let limit = match fields.int("limit")? {
            None => MAX_LIST,
            Some(n) if n < 1 => return Err(Error::bad_request("limit must be at least 1")),
            Some(n) => usize::try_from(n).unwrap_or(MAX_LIST).min(MAX_LIST),
        };
        let keys = ctx.view.list(POLICY_PREFIX, after, limit).await?;
        if keys.is_empty() {
            // Vault answers an empty listing with a bare 404.
            return Ok(Response::Json(Status::NOT_FOUND, json!({ "errors": [] })));
        }
        Ok(Response::data(json!({ "keys": keys })))
    }

    async fn read(&self, ctx: &Ctx<'_>, name: &str) -> Result<Response> {
        match self.load(ctx, name).await? {
            Some((policy, _)) => Ok(Response::data(policy.to_json())),
            None => Err(Error::NotFound(format!("no transit key named {name:?}"))),
        }
    }

    /// `POST keys/<name>`: creates the key; an existing key is returned
    /// unchanged (as OpenBao does), with a warning if options were given.
    async fn create(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let fields = Fields::of(req);
        let key_type = KeyType::parse(fields.str("type")?.unwrap_or("aes256-gcm96"))?;
        let exportable = fields.bool("exportable")?.unwrap_or(false);
        if fields.bool("derived")?.unwrap_or(false)
            || fields.bool("convergent_encryption")?.unwrap_or(false)
        {
            return Err(Error::bad_request(
                "derived keys and convergent encryption are not supported by Zafe's transit engine; \
                 create the key without derived/convergent_encryption",
            ));
        }
        reject_unsupported_options(&fields)?;
        let mut existed = false;
        let now = ctx.system.now();
        let policy = self
            .modify(ctx, name, |current| match current {
                Some(existing) => {
                    existed = true;
                    Ok(Change::Keep(existing))
                }
                None => {
                    existed = false;
                    Ok(Change::Write(Policy::new(name, key_type, exportable, now)))
                }
            })
            .await?;
        let mut warnings = Vec::new();
        if existed && (fields.raw("type").is_some() || fields.raw("exportable").is_some()) {
            warnings.push(format!(
                "key {name:?} already exists and was not changed; use keys/{name}/config to change its settings"
            ));
        }
        Ok(reply(Status::OK, policy.to_json(), warnings))
    }

    async fn delete(&self, ctx: &Ctx<'_>, name: &str) -> Result<Response> {
        let _serialised = self.lock(name).await;
        let Some((policy, generation)) = self.load(ctx, name).await? else {
            return Err(Error::bad_request(format!(
                "error deleting key {name}: could not delete key; not found"
            )));
        };
        if !policy.deletion_allowed {
            return Err(Error::bad_request(format!(
                "error deleting key {name}: deletion is not allowed for this key; set deletion_allowed with keys/{name}/config first"
            )));
        }
        // Only the generation we checked: a concurrent config change on
        // another node makes this fail rather than delete on stale rules.
        ctx.view
            .commit(vec![Write::Delete {
                key: storage_key(name),
                expect: Some(Expect::Generation(generation)),
            }])
            .await?;
        Ok(Response::NoContent)
    }

    async fn config(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let fields = Fields::of(req);
        let min_decryption = fields.int("min_decryption_version")?;
        let min_encryption = fields.int("min_encryption_version")?;
        let deletion_allowed = fields.bool("deletion_allowed")?;
        let exportable = fields.bool("exportable")?;
        reject_unsupported_options(&fields)?;
        let mut warnings = Vec::new();
        let policy = self
            .modify(ctx, name, |current| {
                let Some(mut p) = current else {
                    return Err(Error::bad_request(format!("no existing key named {name} could be found")));
                };
                let latest = i64::from(p.latest_version);
                let min_available = i64::from(p.min_available_version);
                if let Some(mut v) = min_decryption {
                    if v < 0 {
                        return Err(Error::bad_request("min decryption version cannot be negative"));
                    }
                    if v == 0 {
                        // Vault: numbering starts at 1.
                        v = 1;
                    }
                    if v > latest {
                        return Err(Error::bad_request(format!(
                            "cannot set min decryption version of {v}, latest key version is {latest}"
                        )));
                    }
                    if min_available > 0 && v < min_available {
                        return Err(Error::bad_request(format!(
                            "min decryption version should not be less than min available version ({min_available}): \
                             older versions were trimmed"
                        )));
                    }
                    p.min_decryption_version = v as u32;
                }
                if let Some(v) = min_encryption {
                    if v < 0 {
                        return Err(Error::bad_request("min encryption version cannot be negative"));
                    }
                    if v > latest {
                        return Err(Error::bad_request(format!(
                            "cannot set min encryption version of {v}, latest key version is {latest}"
                        )));
                    }
                    if v < min_available {
                        return Err(Error::bad_request(format!(
                            "min encryption version should not be less than min available version ({min_available})"
                        )));
                    }
                    p.min_encryption_version = v as u32;
                }
                if p.min_encryption_version > 0 && p.min_decryption_version > p.min_encryption_version {
                    return Err(Error::bad_request(format!(
                        "cannot set min encryption/decryption values; min encryption version of {} must be greater \
                         than or equal to min decryption version of {}",
                        p.min_encryption_version, p.min_decryption_version
                    )));
                }
                if let Some(allowed) = deletion_allowed {
                    p.deletion_allowed = allowed;
                }
                warnings.clear();
                match exportable {
                    // One-way, as in Vault: exported material cannot be un-exported.
                    Some(true) => p.exportable = true,
                    Some(false) if p.exportable => {
                        warnings.push("exportable cannot be turned off once a key is exportable; it stays true".into())
                    }
                    _ => {}
                }
                Ok(Change::Write(p))
            })
            .await?;
        Ok(reply(Status::OK, policy.to_json(), warnings))
    }

    async fn rotate(&self, ctx: &Ctx<'_>, name: &str) -> Result<Response> {
        let now = ctx.system.now();
        let policy = self
            .modify(ctx, name, |current| match current {
                Some(mut p) => {
                    p.rotate(now);
                    Ok(Change::Write(p))
                }
                None => Err(Error::bad_request(format!(
                    "key not found: no transit key named {name:?}"
                ))),
            })
            .await?;
        Ok(Response::data(policy.to_json()))
    }

    /// Permanently deletes the material of versions below
    /// `min_available_version` (Vault's rules).
    async fn trim(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let wanted = Fields::of(req)
            .int("min_available_version")?
            .ok_or_else(|| Error::bad_request("missing min_available_version"))?;
        let policy = self
            .modify(ctx, name, |current| {
                let Some(mut p) = current else {
                    return Err(Error::bad_request(format!("key not found: no transit key named {name:?}")));
                };
                if wanted < 1 {
                    return Err(Error::bad_request("minimum available version should be positive"));
                }
                if wanted < i64::from(p.min_available_version) {
                    return Err(Error::bad_request("minimum available version cannot be decremented"));
                }
                if p.min_encryption_version == 0 {
                    return Err(Error::bad_request(
                        "minimum available version cannot be set when minimum encryption version is not set",
                    ));
                }
                if wanted > i64::from(p.min_encryption_version) {
                    return Err(Error::bad_request(
                        "minimum available version cannot be greater than minimum encryption version",
                    ));
                }
                if wanted > i64::from(p.min_decryption_version) {
                    return Err(Error::bad_request(
                        "minimum available version cannot be greater than minimum decryption version",
                    ));
                }
                let wanted = wanted as u32;
                p.min_available_version = wanted;
                p.versions.retain(|v, _| *v >= wanted);
                Ok(Change::Write(p))
            })
            .await?;
        Ok(Response::data(policy.to_json()))
    }

    async fn export(
        &self,
        ctx: &Ctx<'_>,
        kind: &str,
        name: &str,
        version: Option<&str>,
    ) -> Result<Response> {
        if !matches!(
            kind,
            "encryption-key" | "signing-key" | "hmac-key" | "public-key"
        ) {
            return Err(Error::bad_request(format!(
                "invalid export type: {kind} (use encryption-key, signing-key, hmac-key or public-key)"
            )));
        }
        let Some((policy, _)) = self.load(ctx, name).await? else {
            return Err(Error::NotFound(format!("no transit key named {name:?}")));
        };
        if kind != "public-key" && !policy.exportable {
            // Scoped principals never receive key material (R-ACL-4).
            return Err(Error::bad_request("private key material is not exportable"));
        }
        match kind {
            "encryption-key" if !policy.key_type.supports_encryption() => {
                return Err(Error::bad_request("encryption not supported for the key"));
            }
            "signing-key" | "public-key" if !policy.key_type.supports_signing() => {
                return Err(Error::bad_request(format!(
                    "{kind} export is not supported for key type {}",
                    policy.key_type.as_str()
                )));
            }
            _ => {}
        }
        let selected: Vec<u32> = match version {
            None => policy.versions.keys().copied().collect(),
            Some("latest") => vec![policy.latest_version],
            Some(raw) => {
                let v: u32 = raw.parse().map_err(|_| {
                    Error::bad_request(format!(
                        "invalid version {raw:?}: use a number or \"latest\""
                    ))
                })?;
                if v < policy.min_decryption_version && policy.versions.contains_key(&v) {
                    return Err(Error::bad_request(
                        "version for export is below minimum decryption version",
                    ));
                }
                if !policy.versions.contains_key(&v) {
                    return Err(Error::bad_request(
                        "version does not exist or cannot be found",
                    ));
                }
                vec![v]
            }
        };
        let mut keys = Map::new();
        for v in selected {
            let entry = policy.version(v)?;
            let exported = match kind {
                "encryption-key" => Zeroizing::new(B64.encode(entry.key.expose())),
                "hmac-key" => Zeroizing::new(B64.encode(entry.hmac_key.expose())),
                "signing-key" => {
                    // Vault's (and Go's) form: seed || public key, 64 bytes.
                    let signing = entry.signing_key()?;
                    Zeroizing::new(B64.encode(Zeroizing::new(signing.to_keypair_bytes())))
                }
                _ => Zeroizing::new(B64.encode(entry.signing_key()?.verifying_key().to_bytes())),
            };
            keys.insert(v.to_string(), json!(exported.as_str()));
        }
        Ok(Response::data(
            json!({ "keys": keys, "name": policy.name, "type": policy.key_type.as_str() }),
        ))
    }
}

/// Options Vault has that Zafe does not implement: refused when switched
/// on, so nobody believes they are in effect.
fn reject_unsupported_options(fields: &Fields<'_>) -> Result<()> {
    if fields.bool("allow_plaintext_backup")?.unwrap_or(false) {
        return Err(Error::bad_request(
            "allow_plaintext_backup is not supported: Zafe's transit engine has no backup endpoint",
        ));
    }
    let off = match fields.raw("auto_rotate_period") {
        None => true,
        Some(Raw::Json(Value::Number(n))) => n.as_i64() == Some(0),
        Some(raw) => matches!(raw.text().map(str::trim), Some("0" | "0s" | "")),
    };
    if off {
        Ok(())
    } else {
        Err(Error::bad_request(
            "auto_rotate_period is not supported by Zafe's transit engine; rotate with keys/<name>/rotate",
        ))
    }
}

// ---- Encryption --------------------------------------------------------------------

/// Vault ignores `context` on keys that are not derived; say so rather
/// than let a caller believe the ciphertext is bound to it.
fn context_warning(fields: &Fields<'_>, warnings: &mut Vec<String>) {
    const IGNORED: &str =
        "context was ignored: this key is not derived (use associated_data to bind data)";
    // Once per response, however many batch items carry a context.
    if fields.raw("context").is_some() && !warnings.iter().any(|w| w == IGNORED) {
        warnings.push(IGNORED.into());
    }
}

/// Zafe never uses a caller's nonce (only convergent encryption would).
fn reject_nonce(fields: &Fields<'_>) -> Result<()> {
    match fields.str("nonce")? {
        Some(n) if !n.is_empty() => Err(Error::bad_request(
            "nonce is only used with convergent encryption, which Zafe does not support; leave it out",
        )),
        _ => Ok(()),
    }
}

fn encrypt_item(policy: &Policy, fields: Fields<'_>) -> Result<Map<String, Value>> {
    reject_nonce(&fields)?;
    let plaintext = fields
        .base64("plaintext")?
        .ok_or_else(|| Error::bad_request("missing plaintext to encrypt"))?;
    let aad = fields.base64("associated_data")?.unwrap_or_default();
    let version = policy.encryption_version(fields.version("key_version")?)?;
    let sealed = seal(
        policy.key_type,
        policy.version(version)?.key.expose(),
        &plaintext,
        &aad,
    )?;
    Ok(map(json!({
        "ciphertext": format!("vault:v{version}:{}", B64.encode(sealed)),
        "key_version": version,
    })))
}

/// Decrypts one `vault:vN:` ciphertext; the plaintext is zeroized on drop.
fn decrypt_value(policy: &Policy, ciphertext: &str, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (version, body) = split_versioned(ciphertext, "ciphertext")?;
    let entry = policy.decryption_version(version, "ciphertext")?;
    let blob = B64
        .decode(body)
        .map_err(|_| Error::bad_request("invalid ciphertext: could not decode base64"))?;
    open(policy.key_type, entry.key.expose(), &blob, aad)
}

fn decrypt_item(policy: &Policy, fields: Fields<'_>) -> Result<Map<String, Value>> {
    let ciphertext = fields
        .str("ciphertext")?
        .ok_or_else(|| Error::bad_request("missing ciphertext to decrypt"))?;
    let aad = fields.base64("associated_data")?.unwrap_or_default();
    let plaintext = decrypt_value(policy, ciphertext, &aad)?;
    Ok(map(
        json!({ "plaintext": Zeroizing::new(B64.encode(&plaintext[..])).as_str() }),
    ))
}

fn rewrap_item(policy: &Policy, fields: Fields<'_>) -> Result<Map<String, Value>> {
    reject_nonce(&fields)?;
    let ciphertext = fields
        .str("ciphertext")?
        .ok_or_else(|| Error::bad_request("missing ciphertext to rewrap"))?;
    let aad = fields.base64("associated_data")?.unwrap_or_default();
    let version = policy.encryption_version(fields.version("key_version")?)?;
    let plaintext = decrypt_value(policy, ciphertext, &aad)?;
    let sealed = seal(
        policy.key_type,
        policy.version(version)?.key.expose(),
        &plaintext,
        &aad,
    )?;
    Ok(map(json!({
        "ciphertext": format!("vault:v{version}:{}", B64.encode(sealed)),
        "key_version": version,
    })))
}

fn require_encryption(policy: &Policy) -> Result<()> {
    if policy.key_type.supports_encryption() {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "message encryption not supported for key type {}",
            policy.key_type.as_str()
        )))
    }
}

impl Transit {
    async fn encrypt(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let top = Fields::of(req);
        let batch = batch_input(req)?;
        if batch.is_none() && top.raw("plaintext").is_none() {
            return Err(Error::bad_request("missing plaintext to encrypt"));
        }
        let policy = match self.load(ctx, name).await? {
            Some((policy, _)) => policy,
            // Vault's upsert: the core already required `create` for this.
            None => self.upsert(ctx, req, name).await?,
        };
        require_encryption(&policy)?;
        let mut warnings = Vec::new();
        context_warning(&top, &mut warnings);
        match batch {
            None => Ok(reply(
                Status::OK,
                Value::Object(encrypt_item(&policy, top)?),
                warnings,
            )),
            Some(items) => {
                let (results, any_ok, any_err) = run_batch(
                    items,
                    |f| {
                        context_warning(&f, &mut warnings);
                        encrypt_item(&policy, f)
                    },
                    |e| map(json!({ "error": e })),
                );
                let status = batch_status(req, any_ok, any_err, &mut warnings)?;
                Ok(reply(status, json!({ "batch_results": results }), warnings))
            }
        }
    }

    async fn upsert(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Policy> {
        let fields = Fields::of(req);
        let key_type = KeyType::parse(fields.str("type")?.unwrap_or("aes256-gcm96"))?;
        if !key_type.supports_encryption() {
            return Err(Error::bad_request(format!(
                "cannot create a key of type {} by encrypting: it does not support encryption",
                key_type.as_str()
            )));
        }
        if fields.bool("convergent_encryption")?.unwrap_or(false) {
            return Err(Error::bad_request(
                "convergent encryption is not supported by Zafe's transit engine",
            ));
        }
        let now = ctx.system.now();
        self.modify(ctx, name, |current| match current {
            Some(existing) => Ok(Change::Keep(existing)),
            None => Ok(Change::Write(Policy::new(name, key_type, false, now))),
        })
        .await
    }

    async fn decrypt(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let top = Fields::of(req);
        let batch = batch_input(req)?;
        if batch.is_none() && top.raw("ciphertext").is_none() {
            return Err(Error::bad_request("missing ciphertext to decrypt"));
        }
        let policy = self.require(ctx, name, "encryption").await?;
        require_encryption(&policy)?;
        match batch {
            None => Ok(Response::data(Value::Object(decrypt_item(&policy, top)?))),
            Some(items) => {
                let (results, any_ok, any_err) = run_batch(
                    items,
                    |f| decrypt_item(&policy, f),
                    |e| map(json!({ "plaintext": "", "error": e })),
                );
                let mut warnings = Vec::new();
                let status = batch_status(req, any_ok, any_err, &mut warnings)?;
                Ok(reply(status, json!({ "batch_results": results }), warnings))
            }
        }
    }

    /// Decrypts and encrypts again with the latest (or the given) version,
    /// without the plaintext leaving the server.
    async fn rewrap(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let top = Fields::of(req);
        let batch = batch_input(req)?;
        if batch.is_none() && top.raw("ciphertext").is_none() {
            return Err(Error::bad_request("missing ciphertext to rewrap"));
        }
        let policy = self.require(ctx, name, "encryption").await?;
        require_encryption(&policy)?;
        match batch {
            None => Ok(Response::data(Value::Object(rewrap_item(&policy, top)?))),
            Some(items) => {
                // Vault answers 200 for rewrap batches, errors per item.
                let (results, _, _) = run_batch(
                    items,
                    |f| rewrap_item(&policy, f),
                    |e| map(json!({ "error": e })),
                );
                Ok(Response::data(json!({ "batch_results": results })))
            }
        }
    }

    /// `datakey/plaintext|wrapped/<name>`: a fresh random key, returned
    /// encrypted under the named key (and in the clear for `plaintext`).
    async fn datakey(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        kind: &str,
        name: &str,
    ) -> Result<Response> {
        let with_plaintext = match kind {
            "plaintext" => true,
            "wrapped" => false,
            other => {
                return Err(Error::bad_request(format!(
                    "invalid path datakey/{other}/...: must be 'plaintext' or 'wrapped'"
                )));
            }
        };
        let fields = Fields::of(req);
        reject_nonce(&fields)?;
        let bits = fields.int("bits")?.unwrap_or(256);
        if !matches!(bits, 128 | 256 | 512) {
            return Err(Error::bad_request(
                "invalid bit length: use 128, 256 or 512",
            ));
        }
        let policy = self.require(ctx, name, "encryption").await?;
        require_encryption(&policy)?;
        let version = policy.encryption_version(fields.version("key_version")?)?;
        let aad = fields.base64("associated_data")?.unwrap_or_default();
        let datakey = KeyBytes::random((bits / 8) as usize);
        let sealed = seal(
            policy.key_type,
            policy.version(version)?.key.expose(),
            datakey.expose(),
            &aad,
        )?;
        let mut data = json!({
            "ciphertext": format!("vault:v{version}:{}", B64.encode(sealed)),
            "key_version": version,
        });
        if with_plaintext {
            data["plaintext"] = json!(Zeroizing::new(B64.encode(datakey.expose())).as_str());
        }
        Ok(Response::data(data))
    }
}

// ---- Random, hash, HMAC, signatures -------------------------------------------------

/// `random[/<source>][/<bytes>]`; a single segment is the byte count when it
/// is a number (Vault's `random/<bytes>`), else the source.
fn random(req: &Request, first: Option<&str>, second: Option<&str>) -> Result<Response> {
    let fields = Fields::of(req);
    let (source, url_bytes) = match (first, second) {
        (Some(one), None) if one.chars().all(|c| c.is_ascii_digit()) => (None, Some(one)),
        (source, bytes) => (source, bytes),
    };
    let source = source.or(fields.str("source")?).unwrap_or("platform");
    // Zafe has no seal-backed entropy source; every source is the OS CSPRNG.
    if !matches!(source, "platform" | "seal" | "all") {
        return Err(Error::bad_request(format!(
            "unsupported entropy source {source:?}; must be \"platform\" or \"seal\", or \"all\""
        )));
    }
    let bytes = match url_bytes {
        Some(raw) => raw
            .parse::<i64>()
            .map_err(|_| Error::bad_request(format!("invalid byte count {raw:?}")))?,
        None => fields.int("bytes")?.unwrap_or(32),
    };
    if bytes < 1 {
        return Err(Error::bad_request("'bytes' cannot be less than 1"));
    }
    if bytes as u64 > MAX_RANDOM_BYTES {
        return Err(Error::bad_request(format!(
            "'bytes' should be at most {MAX_RANDOM_BYTES}"
        )));
    }
    let format = fields.str("format")?;
    let mut buf = Zeroizing::new(vec![0u8; bytes as usize]);
    fill_random(&mut buf);
    let encoded = Zeroizing::new(encode_as(format, "base64", &buf)?);
    Ok(Response::data(json!({ "random_bytes": encoded.as_str() })))
}

fn hash(req: &Request, url_alg: Option<&str>) -> Result<Response> {
    let fields = Fields::of(req);
    let alg = HashAlg::parse(url_alg.or(fields.str("algorithm")?))?;
    let format = fields.str("format")?;
    let input = fields
        .base64("input")?
        .ok_or_else(|| Error::bad_request("input missing"))?;
    let sum = encode_as(format, "hex", &alg.digest(&input))?;
    Ok(Response::data(json!({ "sum": sum })))
}

fn hmac_item(policy: &Policy, alg: HashAlg, fields: Fields<'_>) -> Result<Map<String, Value>> {
    let input = fields
        .base64("input")?
        .ok_or_else(|| Error::bad_request("missing input for HMAC"))?;
    let version = match fields.version("key_version")? {
        None | Some(0) => policy.latest_version,
        Some(v) if v > policy.latest_version => {
            return Err(Error::bad_request(
                "invalid key version: higher than the latest key version",
            ));
        }
        Some(v) if v < policy.min_encryption_version || v < policy.min_decryption_version => {
            return Err(Error::bad_request(
                "cannot generate HMAC: version is too old (disallowed by policy)",
            ));
        }
        Some(v) => v,
    };
    let mac = alg.hmac(policy.version(version)?.hmac_key.expose(), &input);
    Ok(map(
        json!({ "hmac": format!("vault:v{version}:{}", B64.encode(mac)) }),
    ))
}

fn verify_hmac_item(
    policy: &Policy,
    alg: HashAlg,
    fields: Fields<'_>,
) -> Result<Map<String, Value>> {
    let input = fields
        .base64("input")?
        .ok_or_else(|| Error::bad_request("missing input to verify"))?;
    let tag = fields
        .str("hmac")?
        .ok_or_else(|| Error::bad_request("missing hmac to verify"))?;
    let (version, body) = split_versioned(tag, "HMAC to verify")?;
    let entry = policy.decryption_version(version, "HMAC to verify")?;
    let tag = B64
        .decode(body)
        .map_err(|_| Error::bad_request("invalid HMAC to verify: could not decode base64"))?;
    Ok(map(
        json!({ "valid": alg.hmac_verify(entry.hmac_key.expose(), &input, &tag) }),
    ))
}

fn sign_item(
    policy: &Policy,
    marshaling: Marshaling,
    fields: Fields<'_>,
) -> Result<Map<String, Value>> {
    let input = fields
        .base64("input")?
        .ok_or_else(|| Error::bad_request("missing input to sign"))?;
    let version = match fields.version("key_version")? {
        None | Some(0) => policy.latest_version,
        Some(v) if v > policy.latest_version => {
            return Err(Error::bad_request(
                "requested version for signing is higher than the latest key version",
            ));
        }
        Some(v) if v < policy.min_encryption_version => {
            return Err(Error::bad_request(
                "requested version for signing is less than the minimum encryption key version",
            ));
        }
        Some(v) if v < policy.min_decryption_version => {
            return Err(Error::bad_request(format!(
                "no such key version: version {v} is below the key's min_decryption_version ({})",
                policy.min_decryption_version
            )));
        }
        Some(v) => v,
    };
    // Ed25519 hashes internally (hash_algorithm and prehashed are ignored,
    // as in Vault for this key type).
    let signature = policy.version(version)?.signing_key()?.sign(&input);
    Ok(map(json!({
        "signature": format!("vault:v{version}:{}", marshaling.encode(&signature.to_bytes())),
        "key_version": version,
    })))
}

fn verify_signature_item(
    policy: &Policy,
    marshaling: Marshaling,
    fields: Fields<'_>,
) -> Result<Map<String, Value>> {
    let input = fields
        .base64("input")?
        .ok_or_else(|| Error::bad_request("missing input to verify"))?;
    let signature = fields
        .str("signature")?
        .ok_or_else(|| Error::bad_request("missing signature to verify"))?;
    let (version, body) = split_versioned(signature, "signature")?;
    let entry = policy.decryption_version(version, "signature")?;
    let bytes = marshaling
        .decode(body)
        .ok_or_else(|| Error::bad_request("invalid base64 signature value"))?;
    // A signature of the wrong length is simply not valid, as in Vault.
    let valid = match Signature::from_slice(&bytes) {
        Ok(sig) => {
            let public: VerifyingKey = entry.signing_key()?.verifying_key();
            public.verify_strict(&input, &sig).is_ok()
        }
        Err(_) => false,
    };
    Ok(map(json!({ "valid": valid })))
}

impl Transit {
    async fn hmac(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        name: &str,
        url_alg: Option<&str>,
    ) -> Result<Response> {
        let top = Fields::of(req);
        let alg = HashAlg::parse(url_alg.or(top.str("algorithm")?))?;
        let batch = batch_input(req)?;
        if batch.is_none() && top.raw("input").is_none() {
            return Err(Error::bad_request("missing input for HMAC"));
        }
        let policy = self.require(ctx, name, "encryption").await?;
        match batch {
            None => Ok(Response::data(Value::Object(hmac_item(&policy, alg, top)?))),
            Some(items) => {
                let (results, _, _) = run_batch(
                    items,
                    |f| hmac_item(&policy, alg, f),
                    |e| map(json!({ "error": e })),
                );
                Ok(Response::data(json!({ "batch_results": results })))
            }
        }
    }

    async fn sign(&self, ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
        let top = Fields::of(req);
        let marshaling = Marshaling::parse(top.str("marshaling_algorithm")?)?;
        let batch = batch_input(req)?;
        if batch.is_none() && top.raw("input").is_none() {
            return Err(Error::bad_request("missing input to sign"));
        }
        let policy = self.require(ctx, name, "signing").await?;
        if !policy.key_type.supports_signing() {
            return Err(Error::bad_request(format!(
                "key type {} does not support signing",
                policy.key_type.as_str()
            )));
        }
        match batch {
            None => Ok(Response::data(Value::Object(sign_item(
                &policy, marshaling, top,
            )?))),
            Some(items) => {
                let (results, _, _) = run_batch(
                    items,
                    |f| sign_item(&policy, marshaling, f),
                    |e| map(json!({ "key_version": 0, "error": e })),
                );
                Ok(Response::data(json!({ "batch_results": results })))
            }
        }
    }

    /// `verify/<name>`: an ed25519 `signature`, or an `hmac` from `hmac/`.
    async fn verify(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        name: &str,
        url_alg: Option<&str>,
    ) -> Result<Response> {
        let top = Fields::of(req);
        let batch = batch_input(req)?;
        // Which kind of verification: from the top level, or the first item.
        let probe = match batch {
            Some(items) => Fields::item(&items[0]).ok(),
            None => Some(top),
        };
        let has = |name: &str| probe.is_some_and(|f| f.raw(name).is_some());
        let by_signature = has("signature");
        if !by_signature && !has("hmac") {
            return Err(Error::bad_request(
                "neither a 'signature' nor an 'hmac' were given to verify",
            ));
        }
        if batch.is_none() && top.raw("input").is_none() {
            return Err(Error::bad_request("missing input to verify"));
        }
        let policy = self.require(ctx, name, "signature verification").await?;
        let marshaling = Marshaling::parse(top.str("marshaling_algorithm")?)?;
        let alg = HashAlg::parse(
            url_alg
                .or(top.str("algorithm")?)
                .or(top.str("hash_algorithm")?),
        )?;
        if by_signature && !policy.key_type.supports_signing() {
            return Err(Error::bad_request(format!(
                "key type {} does not support verification",
                policy.key_type.as_str()
            )));
        }
        let one = |f: Fields<'_>| {
            if by_signature {
                verify_signature_item(&policy, marshaling, f)
            } else {
                verify_hmac_item(&policy, alg, f)
            }
        };
        match batch {
            None => Ok(Response::data(Value::Object(one(top)?))),
            Some(items) => {
                let (results, _, _) =
                    run_batch(items, one, |e| map(json!({ "valid": false, "error": e })));
                Ok(Response::data(json!({ "batch_results": results })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_with(key_type: KeyType, key: &[u8]) -> Policy {
        let mut p = Policy::new(
            "vector",
            key_type,
            true,
            Timestamp::from_secs(1_700_000_000),
        );
        let v = p.versions.get_mut(&1).unwrap();
        v.key = KeyBytes(Zeroizing::new(key.to_vec()));
        p
    }

    // R-KV-3: ciphertexts made by OpenBao 2.7's transit engine (exported
    // keys, `vault:v1:` format) decrypt here byte for byte, so the format is
    // Vault's exactly: 12-byte nonce || ciphertext || 16-byte tag.
    #[test]
    fn openbao_ciphertexts_decrypt() {
        let cases = [
            (
                KeyType::Aes256Gcm96,
                "rHjxJgl/KFI+3chPMX9EpdN+ZEqJkvFYnj1N+2B67tQ=",
                "vault:v1:sJO+u9SyHfdit05A8tGU+ghay1QqPGKgyVJ34EHFURXALNJyW4o1OvkYSAk4BpE=",
                "vault:v1:u9LVxwwfEiobSCFNoooZBxcxa4lPYJgwhgkGWbIOXYoYf8p8swj55XcEefEhga0=",
            ),
            (
                KeyType::ChaCha20Poly1305,
                "QAqqMMN6cZ28TN4vicwnWm78o3LDkhkjLtdarGEgZls=",
                "vault:v1:zf5vap1eogLtUfWv58CKO84FnIpMlYQe2Jr5FvB76gG+ouzZjL9yGWokI0b0ii4=",
                "vault:v1:jFu9QSwuxQdbYlYy1degBxV5LVhz1Fd7fJvWjIyrdGAnOlMauNf2i7CT2/f5IjM=",
            ),
        ];
        for (key_type, key, plain_ct, aad_ct) in cases {
            let p = policy_with(key_type, &B64.decode(key).unwrap());
            assert_eq!(
                &decrypt_value(&p, plain_ct, b"").unwrap()[..],
                b"zafe transit vector"
            );
            assert_eq!(
                &decrypt_value(&p, aad_ct, b"aad").unwrap()[..],
                b"zafe transit vector"
            );
            // The associated data is authenticated.
            assert!(decrypt_value(&p, aad_ct, b"").is_err());
        }
    }

    #[test]
    fn openbao_ed25519_signature_and_hmac_verify() {
        // Exported signing key (seed || public) and a signature by OpenBao.
        let keypair = B64
            .decode("qUiD4L8SoCIduYIJSO3EfG3U9bf7x+btO26sCnOA16paDtU+clZeVoUTucnbjCizGGlLpeVQq7xglPczzV0mDA==")
            .unwrap();
        let mut p = policy_with(KeyType::Ed25519, &keypair[..32]);
        p.versions.get_mut(&1).unwrap().hmac_key = KeyBytes(Zeroizing::new(
            B64.decode("DubtLRDptBBl3LuIsf6ulNvYCwJsiFullX67RE4c+L4=")
                .unwrap(),
        ));
        let sig = B64
            .decode("RSA5QPQ889UCEJcztf+3HQeT7p2HVHHrr78WU1cEy6vvqsjDl3vFUlLdVFVUXYLWss3cZm2IWRHo+ZaffJ8xAA==")
            .unwrap();
        let body = json!({ "input": "emFmZSB0cmFuc2l0IHZlY3Rvcg==", "signature": format!("vault:v1:{}", B64.encode(&sig)) });
        let out =
            verify_signature_item(&p, Marshaling::Asn1, Fields::item(&body).unwrap()).unwrap();
        assert_eq!(out["valid"], true);
        // Our own signature of the same input is identical (Ed25519 is deterministic).
        let signed = sign_item(&p, Marshaling::Asn1, Fields::item(&body).unwrap()).unwrap();
        assert_eq!(
            signed["signature"],
            json!(format!("vault:v1:{}", B64.encode(&sig)))
        );
        // HMAC made by OpenBao with the exported HMAC key.
        let body = json!({ "input": "emFmZSB0cmFuc2l0IHZlY3Rvcg==", "hmac": "vault:v1:ikkPU6+0IWvf329K5HT08oGAtTcUuweHXrokgQfGUhs=" });
        let out = verify_hmac_item(&p, HashAlg::Sha256, Fields::item(&body).unwrap()).unwrap();
        assert_eq!(out["valid"], true);
    }

    #[test]
    fn key_records_never_show_material_in_debug_or_errors() {
        let json = serde_json::to_vec(&Policy::new(
            "k",
            KeyType::Aes256Gcm96,
            false,
            Timestamp::from_secs(1_700_000_000),
        ))
        .unwrap();
        // Garbled material fails with a message that does not echo it.
        let text = String::from_utf8(json).unwrap();
        let garbled = text.replacen("\"key\":\"", "\"key\":\"!!SECRET", 1);
        let err = serde_json::from_str::<Policy>(&garbled)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("SECRET"), "{err}");
    }

    #[test]
    fn names_follow_vaults_rule() {
        for good in ["a", "my-key", "a.b@c_d", "_x_", "K9"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "a b", "a/b", "ä", ".a", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
