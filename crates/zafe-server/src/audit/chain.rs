//! The audit chain's formats and its verifier: pure, no I/O, shared by the
//! server (`sys/audit-log/verify`, checkpoints) and the CLI (`zafe audit
//! verify`, offline, from an export or the file sink).
//!
//! For the entry with sequence number `seq`:
//!
//! ```text
//! canonical = fields(["zafe/v1/audit-event", v, seq, time_us, request_id, ..., dropped])
//! hash      = SHA-256(fields(["zafe/v1/audit-entry", canonical, prev_hash]))
//! mac       = HMAC-SHA256(audit chain key, hash)
//! ```
//!
//! `fields` is `zafe_core::encoding::fields`, injective, so no two entries
//! encode alike. The hash is publicly recomputable: anyone can check the
//! links. The MAC needs the chain key (HKDF from the keyring, purpose
//! `AUDIT_CHAIN`, only ever inside the server): it catches a rewrite that
//! recomputed the hashes. And because whoever verifies MACs could also forge
//! them, the server periodically **signs** the head, `(kind, seq, hash,
//! time)`, with its Ed25519 identity key: an auditor with only the public
//! key detects edits, deletions, insertions, reordering, and the removal of
//! the newest entries up to the last checkpoint.

use std::collections::{BTreeMap, VecDeque};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use zafe_core::crypto::{constant_time_eq, hmac_sha256};
use zafe_core::encoding::fields;
use zafe_core::identity::IdentityKey;
use zafe_core::secret::SecretKey;
use zafe_storage::audit::{AuditCheckpoint, AuditRow, GENESIS_HASH};

/// The version of [`Event`]'s canonical encoding.
/// 2 added `resources`; entries of version 1 keep their encoding.
pub const EVENT_VERSION: u32 = 2;
const EVENT_DOMAIN: &[u8] = b"zafe/v1/audit-event";
const ENTRY_DOMAIN: &[u8] = b"zafe/v1/audit-entry";
/// Domain of checkpoint signatures (distinct from identity proofs).
pub(crate) const CHECKPOINT_DOMAIN: &[u8] = b"zafe/v1/audit-checkpoint";
/// Domain of the signed end line of an export (distinct from checkpoints,
/// so neither can stand in for the other).
pub(crate) const EXPORT_END_DOMAIN: &[u8] = b"zafe/v1/audit-export-end";
/// The prefix of keyed hashes of correlatable identifiers, as in Vault.
pub(crate) const HMAC_PREFIX: &str = "hmac-sha256:";
/// Version of the export / file sink line format.
pub(crate) const EXPORT_FORMAT: u32 = 1;

/// One audited request. No request or response body, no token, no secret:
/// only what an auditor needs to know who did what, from where, and how it
/// ended. Stored as JSON; hashed through [`canonical`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// Version of the canonical encoding this entry was hashed with
    /// ([`EVENT_VERSION`] for new entries).
    pub v: u32,
    /// Microseconds since the Unix epoch, by the clock of the node that
    /// handled the request. For people and time ranges only: order is by
    /// sequence number.
    pub time_us: i64,
    /// The request's id: the client's `X-Request-Id` when acceptable, else a
    /// fresh uuid; the same id is in the response and the server's logs.
    pub request_id: String,
    /// After `trusted_proxies` (R-OPS-2).
    pub client_ip: String,
    /// The HTTP method.
    pub method: String,
    /// Without `/v1/` and without the query string.
    pub path: String,
    /// read, list, write, delete, patch, head; empty for other methods.
    pub operation: String,
    /// Who made the request, as far as the server could tell.
    pub actor: Actor,
    /// allowed, denied (401/403) or failed (any other error).
    pub decision: String,
    /// The HTTP status of the response.
    pub status: u16,
    /// The error message the caller got, if any.
    pub error: String,
    /// Recorded while the server was sealed and written after unseal.
    pub buffered: bool,
    /// How many sealed-time entries were dropped (buffer full) before this one.
    pub dropped: u64,
    /// Version 2: the secrets a request reached besides its own path (the
    /// references `sys/resolve` read), by name; empty for most requests.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
}

/// Who made an audited request. Identifiers that could be correlated
/// outside the log (token, accessor) appear only as keyed hashes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// "token" when the request authenticated, else "anonymous".
    pub kind: String,
    /// `hmac-sha256:<hex>` of the token's accessor; empty when anonymous.
    pub accessor: String,
    /// The token's display name; empty when anonymous.
    pub display_name: String,
    /// The token's policies; empty when anonymous.
    pub policies: Vec<String>,
    /// `hmac-sha256:<hex>` of the token the request presented (also when it
    /// failed), so failed attempts with one token correlate; empty if none,
    /// or if the server was sealed. Never the token itself.
    pub token: String,
}

/// The canonical encoding of an entry: every field, length-prefixed.
pub fn canonical(seq: i64, e: &Event) -> Vec<u8> {
    let policies: Vec<&[u8]> = e.actor.policies.iter().map(String::as_bytes).collect();
    let policies = fields(&policies);
    let mut canonical = fields(&[
        EVENT_DOMAIN,
        &e.v.to_be_bytes(),
        &seq.to_be_bytes(),
        &e.time_us.to_be_bytes(),
        e.request_id.as_bytes(),
        e.client_ip.as_bytes(),
        e.method.as_bytes(),
        e.path.as_bytes(),
        e.operation.as_bytes(),
        e.actor.kind.as_bytes(),
        e.actor.accessor.as_bytes(),
        e.actor.display_name.as_bytes(),
        &policies,
        e.actor.token.as_bytes(),
        e.decision.as_bytes(),
        &e.status.to_be_bytes(),
        e.error.as_bytes(),
        &[u8::from(e.buffered)],
        &e.dropped.to_be_bytes(),
    ]);
    // Version 1 entries have none; resources added to one change its hash.
    if e.v >= 2 || !e.resources.is_empty() {
        let resources: Vec<&[u8]> = e.resources.iter().map(String::as_bytes).collect();
        canonical = fields(&[&canonical, &fields(&resources)]);
    }
    canonical
}

/// `SHA-256(fields([domain, canonical, prev_hash]))`.
pub fn entry_hash(seq: i64, event: &Event, prev_hash: &[u8]) -> [u8; 32] {
    Sha256::digest(fields(&[ENTRY_DOMAIN, &canonical(seq, event), prev_hash])).into()
}

/// `HMAC-SHA256(chain key, hash)`: the entry's MAC.
pub(crate) fn entry_mac(chain_key: &SecretKey, hash: &[u8]) -> [u8; 32] {
    hmac_sha256(chain_key, hash)
}

/// `hmac-sha256:<hex>` of a correlatable identifier.
pub(crate) fn field_hmac(field_key: &SecretKey, value: &str) -> String {
    format!(
        "{HMAC_PREFIX}{}",
        hex::encode(hmac_sha256(field_key, value.as_bytes()))
    )
}

/// The signed message of a checkpoint.
fn checkpoint_fields<'a>(
    kind: &'a str,
    seq: &'a [u8; 8],
    hash: &'a [u8],
    time: &'a [u8; 8],
) -> [&'a [u8]; 4] {
    [kind.as_bytes(), seq, hash, time]
}

/// Signs `(kind, seq, hash, time_us)` with the server's identity key.
pub fn sign_checkpoint(
    identity: &IdentityKey,
    kind: &str,
    seq: i64,
    hash: &[u8],
    time_us: i64,
) -> AuditCheckpoint {
    let (s, t) = (seq.to_be_bytes(), time_us.to_be_bytes());
    let signature = identity.sign_fields(CHECKPOINT_DOMAIN, &checkpoint_fields(kind, &s, hash, &t));
    AuditCheckpoint {
        id: 0,
        seq,
        hash: hash.to_vec(),
        time_us,
        kind: kind.to_string(),
        public_key: identity.public_key().to_vec(),
        signature: signature.to_vec(),
    }
}

/// Whether `cp` is signed by `public_key`.
pub(crate) fn checkpoint_signed_by(cp: &AuditCheckpoint, public_key: &[u8; 32]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(cp.signature.as_slice()) else {
        return false;
    };
    let (s, t) = (cp.seq.to_be_bytes(), cp.time_us.to_be_bytes());
    cp.public_key.as_slice() == public_key.as_slice()
        && zafe_core::identity::verify_fields(
            public_key,
            CHECKPOINT_DOMAIN,
            &checkpoint_fields(&cp.kind, &s, &cp.hash, &t),
            &signature,
        )
}

/// The signed message of an export's end line. `None` bounds are encoded
/// as an empty field, distinct from any number's 8 bytes.
fn end_message(end: &EndLine, hash: &[u8]) -> Vec<u8> {
    let opt = |v: Option<i64>| v.map_or(Vec::new(), |v| v.to_be_bytes().to_vec());
    let (from, to) = (opt(end.from_seq), opt(end.to_seq));
    fields(&[
        &end.seq.to_be_bytes(),
        hash,
        &end.time_us.to_be_bytes(),
        &end.interval_secs.to_be_bytes(),
        &from,
        &to,
    ])
}

/// The signed end of an export: the last entry it holds (`seq` 0 and no hash
/// when it holds none), the export's bounds, when it was made and the
/// checkpoint interval the server runs with, signed with the identity key.
pub(crate) fn sign_export_end(
    identity: &IdentityKey,
    last: Option<(i64, &[u8])>,
    from_seq: Option<i64>,
    to_seq: Option<i64>,
    interval_secs: u64,
    time_us: i64,
) -> EndLine {
    let (seq, hash) = last.unwrap_or((0, &[]));
    let mut end = EndLine {
        seq,
        hash: hex::encode(hash),
        time: render_time(time_us),
        time_us,
        interval_secs,
        from_seq,
        to_seq,
        public_key: b64(&identity.public_key()),
        signature: String::new(),
    };
    let signature = identity.sign_fields(EXPORT_END_DOMAIN, &[&end_message(&end, hash)]);
    end.signature = b64(&signature);
    end
}

/// Whether `end` is signed by `public_key` (and shows the time it signs).
pub(crate) fn end_signed_by(end: &EndLine, public_key: &[u8; 32]) -> bool {
    let std = base64::engine::general_purpose::STANDARD;
    let (Ok(hash), Ok(key), Ok(signature)) = (
        hex::decode(&end.hash),
        std.decode(&end.public_key),
        std.decode(&end.signature),
    ) else {
        return false;
    };
    let Ok(signature) = <[u8; 64]>::try_from(signature.as_slice()) else {
        return false;
    };
    key.as_slice() == public_key.as_slice()
        && end.time == render_time(end.time_us)
        && zafe_core::identity::verify_fields(
            public_key,
            EXPORT_END_DOMAIN,
            &[&end_message(end, &hash)],
            &signature,
        )
}

/// How long an entry may wait for its first signed checkpoint: the interval,
/// once more for a tick delayed by load or a retention sweep, and 30 s for
/// clock differences between nodes.
pub(crate) fn freshness_allowance_us(interval_secs: u64) -> i64 {
    i64::try_from(interval_secs)
        .unwrap_or(i64::MAX / 4_000_000)
        .min(i64::MAX / 4_000_000)
        .saturating_mul(2)
        .saturating_add(30)
        .saturating_mul(1_000_000)
}

/// RFC 3339 in UTC, for people; derived from `time_us` and checked against
/// it by the verifier, so it cannot be edited on its own.
pub(crate) fn render_time(time_us: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_us) * 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Standard base64 (with padding), the encoding of keys and signatures in
/// export lines.
pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A 32-byte public key from standard base64.
pub fn public_key_from_b64(text: &str) -> Option<[u8; 32]> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()?
        .try_into()
        .ok()
}

// ---- Export and file-sink lines -----------------------------------------

/// The first line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportHeader {
    /// The line format's version (`EXPORT_FORMAT`, now 1).
    pub format: u32,
    /// The exporting server's identity (server id).
    pub server_id: String,
    /// Set when the export was asked to start later than the oldest entry:
    /// its first entry's predecessor is then not in the export.
    pub from_seq: Option<i64>,
    /// Set when the export was asked to stop before the newest entry.
    pub to_seq: Option<i64>,
}

/// An entry as one JSON line: the [`Event`]'s fields and the chain fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLine {
    /// The entry's sequence number: consecutive, from 1 (retention may have
    /// removed the oldest).
    pub seq: i64,
    /// Derived from `time_us`.
    pub time: String,
    /// Microseconds since the Unix epoch (see [`Event::time_us`]).
    pub time_us: i64,
    /// See [`Event::request_id`].
    pub request_id: String,
    /// See [`Event::client_ip`].
    pub client_ip: String,
    /// See [`Event::method`].
    pub method: String,
    /// See [`Event::path`].
    pub path: String,
    /// See [`Event::operation`].
    pub operation: String,
    /// See [`Event::actor`].
    pub actor: Actor,
    /// See [`Event::decision`].
    pub decision: String,
    /// See [`Event::status`].
    pub status: u16,
    /// See [`Event::error`].
    pub error: String,
    /// See [`Event::buffered`].
    pub buffered: bool,
    /// See [`Event::dropped`].
    pub dropped: u64,
    /// See [`Event::resources`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// See [`Event::v`].
    pub v: u32,
    /// Hex of the previous entry's hash (the genesis hash for the first entry).
    pub prev_hash: String,
    /// Hex of this entry's hash ([`entry_hash`]).
    pub hash: String,
    /// Hex of this entry's MAC under the chain key; only the server can check it.
    pub mac: String,
}

impl EntryLine {
    /// The line for entry `seq` with its event and raw chain fields (hex-encoded
    /// here; `time` rendered from `time_us`).
    pub fn new(seq: i64, e: Event, prev_hash: &[u8], hash: &[u8], mac: &[u8]) -> Self {
        Self {
            seq,
            time: render_time(e.time_us),
            time_us: e.time_us,
            request_id: e.request_id,
            client_ip: e.client_ip,
            method: e.method,
            path: e.path,
            operation: e.operation,
            actor: e.actor,
            decision: e.decision,
            status: e.status,
            error: e.error,
            buffered: e.buffered,
            dropped: e.dropped,
            resources: e.resources,
            v: e.v,
            prev_hash: hex::encode(prev_hash),
            hash: hex::encode(hash),
            mac: hex::encode(mac),
        }
    }

    /// From a stored row; `None` if its body is not an [`Event`].
    pub(crate) fn from_row(row: &AuditRow) -> Option<Self> {
        let event: Event = serde_json::from_slice(&row.body).ok()?;
        Some(Self::new(
            row.seq,
            event,
            &row.prev_hash,
            &row.hash,
            &row.mac,
        ))
    }

    /// The event again, as it was hashed (what the verifier recomputes the
    /// hash from).
    pub fn event(&self) -> Event {
        Event {
            v: self.v,
            time_us: self.time_us,
            request_id: self.request_id.clone(),
            client_ip: self.client_ip.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            operation: self.operation.clone(),
            actor: self.actor.clone(),
            decision: self.decision.clone(),
            status: self.status,
            error: self.error.clone(),
            buffered: self.buffered,
            dropped: self.dropped,
            resources: self.resources.clone(),
        }
    }
}

/// A checkpoint as one JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointLine {
    /// Why it was signed: `periodic`, `unseal`, `shutdown`, `sweep` (retention
    /// removed entries), `manual` or `anchor`.
    pub kind: String,
    /// Sequence number of the entry it covers (the chain head then).
    pub seq: i64,
    /// Hex of that entry's hash.
    pub hash: String,
    /// Derived from `time_us`.
    pub time: String,
    /// When it was signed, in microseconds since the Unix epoch; signed too.
    pub time_us: i64,
    /// Base64 of the Ed25519 identity public key that signed it.
    pub public_key: String,
    /// Base64 of the Ed25519 signature over `(kind, seq, hash, time_us)`.
    pub signature: String,
}

impl CheckpointLine {
    /// The line for a stored checkpoint.
    pub fn new(cp: &AuditCheckpoint) -> Self {
        Self {
            kind: cp.kind.clone(),
            seq: cp.seq,
            hash: hex::encode(&cp.hash),
            time: render_time(cp.time_us),
            time_us: cp.time_us,
            public_key: b64(&cp.public_key),
            signature: b64(&cp.signature),
        }
    }

    /// Back to a checkpoint (id 0); `None` if the hex or base64 fields do not
    /// decode. The signature is not checked here.
    pub fn checkpoint(&self) -> Option<AuditCheckpoint> {
        let std = base64::engine::general_purpose::STANDARD;
        Some(AuditCheckpoint {
            id: 0,
            seq: self.seq,
            hash: hex::decode(&self.hash).ok()?,
            time_us: self.time_us,
            kind: self.kind.clone(),
            public_key: std.decode(&self.public_key).ok()?,
            signature: std.decode(&self.signature).ok()?,
        })
    }
}

/// The last line of every export: the export's last entry and bounds, the
/// time it was made and the server's checkpoint interval, signed. An export
/// cut short (its last lines removed) no longer ends with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndLine {
    /// The last entry in the export; 0 when it holds none.
    pub seq: i64,
    /// Its hash; empty when the export holds no entry.
    pub hash: String,
    /// Derived from `time_us`.
    pub time: String,
    /// When the export was made, by the server's clock.
    pub time_us: i64,
    /// `[audit] checkpoint_interval_secs` of the server that made it.
    pub interval_secs: u64,
    /// The export's bounds, as in its header.
    pub from_seq: Option<i64>,
    /// See [`ExportHeader::to_seq`].
    pub to_seq: Option<i64>,
    /// Base64 of the identity public key that signed this line.
    pub public_key: String,
    /// Base64 of the Ed25519 signature over `(seq, hash, time_us,
    /// interval_secs, from_seq, to_seq)`; `time` is derived, not signed.
    pub signature: String,
}

/// One line of an export or of the file sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `"type": "export"`: the first line of an export.
    Header(ExportHeader),
    /// `"type": "entry"`: one audit entry.
    Entry(Box<EntryLine>),
    /// `"type": "checkpoint"`: a signed chain head.
    Checkpoint(CheckpointLine),
    /// `"type": "end"`: the signed last line of an export.
    End(EndLine),
}

impl Line {
    /// `{"type": "...", ...}` as one line of JSON, without the newline.
    pub fn to_json(&self) -> String {
        let (kind, value) = match self {
            Line::Header(h) => ("export", serde_json::to_value(h)),
            Line::Entry(e) => ("entry", serde_json::to_value(e)),
            Line::Checkpoint(c) => ("checkpoint", serde_json::to_value(c)),
            Line::End(e) => ("end", serde_json::to_value(e)),
        };
        let mut ordered = serde_json::Map::new();
        ordered.insert("type".into(), Value::String(kind.into()));
        if let Ok(Value::Object(mut map)) = value {
            ordered.append(&mut map);
        }
        Value::Object(ordered).to_string()
    }

    /// Parses one line. Unknown types and unknown fields are errors: a line
    /// that says more than the chain covers must not pass as verified.
    pub fn parse(text: &str) -> Result<Line, String> {
        let mut value: Value =
            serde_json::from_str(text).map_err(|e| format!("not JSON (column {})", e.column()))?;
        let Some(map) = value.as_object_mut() else {
            return Err("not a JSON object".into());
        };
        let kind = match map.remove("type") {
            Some(Value::String(kind)) => kind,
            _ => return Err("no \"type\"".into()),
        };
        let bad =
            |e: serde_json::Error| format!("malformed {kind} line: {}", first_line(&e.to_string()));
        Ok(match kind.as_str() {
            "export" => Line::Header(serde_json::from_value(value).map_err(bad)?),
            "entry" => Line::Entry(Box::new(serde_json::from_value(value).map_err(bad)?)),
            "checkpoint" => Line::Checkpoint(serde_json::from_value(value).map_err(bad)?),
            "end" => Line::End(serde_json::from_value(value).map_err(bad)?),
            _ => return Err(format!("unknown line type {kind:?}")),
        })
    }
}

/// serde_json's messages can quote input; a verifier's report does not need
/// more than the kind of problem.
fn first_line(message: &str) -> String {
    let short: String = message.chars().take(120).collect();
    short.lines().next().unwrap_or_default().to_string()
}

// ---- Verification --------------------------------------------------------

/// The outcome of a verification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Whether the whole input verified (no problem found).
    pub ok: bool,
    /// How many entries were checked.
    pub entries: u64,
    /// Sequence number of the first entry seen.
    pub first_seq: Option<i64>,
    /// Sequence number of the last entry seen.
    pub last_seq: Option<i64>,
    /// Checkpoints whose signature and hash were checked against the chain.
    pub checkpoints: u64,
    /// Sequence number covered by the newest checkpoint that verified.
    pub last_checkpoint_seq: Option<i64>,
    /// Whether MACs were checked (only the server holds the chain key).
    pub macs_checked: bool,
    /// The export starts after the beginning of the log and its first
    /// entry's predecessor is neither genesis nor covered by a signed anchor.
    pub partial: bool,
    /// The first sequence number that is missing, altered or out of place.
    pub first_bad_seq: Option<i64>,
    /// What was wrong at `first_bad_seq`, in a sentence that never quotes the
    /// input.
    pub problem: Option<String>,
}

/// Checks a chain fed to it in sequence order, in constant memory (a few
/// pending checkpoints and a short window of recent hashes aside).
pub struct Verifier {
    chain_key: Option<SecretKey>,
    public_key: [u8; 32],
    allow_partial_start: bool,
    report: Report,
    /// seq and hash of the last entry.
    last: Option<(i64, Vec<u8>)>,
    /// The newest verified checkpoint seen before the first entry.
    anchor: Option<(i64, Vec<u8>)>,
    /// Checkpoints ahead of the entries seen so far.
    pending: BTreeMap<i64, Vec<AuditCheckpoint>>,
    /// The hashes of the most recent entries, for checkpoints that arrive
    /// shortly after their entry.
    /// With the entry's time (`None` for buffered entries).
    recent: VecDeque<(i64, Vec<u8>, Option<i64>)>,
    /// An export that was asked to stop here: nothing after it is expected.
    until: Option<i64>,
    /// The stream began with an export header: it must end with a signed
    /// end line, which `end` holds once seen.
    export: Option<ExportHeader>,
    end: Option<EndLine>,
    /// The server's checkpoint interval, when known (from the export's
    /// signed end, or the server's configuration): enables the freshness
    /// check of the newest entries.
    interval_secs: Option<u64>,
    /// "Now" for the freshness check: the verifying server's clock, or the
    /// time an export was signed.
    now_us: Option<i64>,
    /// The oldest entry (seq, time) not yet covered by a matching
    /// checkpoint; entries written from the sealed-time buffer do not start
    /// the clock.
    unsigned_since: Option<(i64, i64)>,
    /// The newest entry time seen (buffered entries aside).
    newest_time_us: Option<i64>,
    /// The newest signing time of a validly signed checkpoint.
    newest_cp_time_us: Option<i64>,
    /// A point this verifier's user verified before: the log must still
    /// reach it, with that hash.
    floor: Option<(i64, Vec<u8>)>,
    floor_as_of_us: Option<i64>,
    done: bool,
}

const RECENT: usize = 4096;
const MAX_PENDING: usize = 100_000;

impl Verifier {
    /// `chain_key` checks MACs (server only); `public_key` is the identity
    /// key checkpoints must be signed with. `allow_partial_start` accepts a
    /// first entry whose predecessor is not anchored (an export of a range).
    pub fn new(
        chain_key: Option<SecretKey>,
        public_key: [u8; 32],
        allow_partial_start: bool,
    ) -> Self {
        Self {
            report: Report {
                macs_checked: chain_key.is_some(),
                ..Report::default()
            },
            chain_key,
            public_key,
            allow_partial_start,
            last: None,
            anchor: None,
            pending: BTreeMap::new(),
            recent: VecDeque::with_capacity(RECENT),
            until: None,
            export: None,
            end: None,
            interval_secs: None,
            now_us: None,
            unsigned_since: None,
            newest_time_us: None,
            newest_cp_time_us: None,
            floor: None,
            floor_as_of_us: None,
            done: false,
        }
    }

    /// Enables the freshness check: the oldest entry not covered by a signed
    /// checkpoint must be younger than the interval allows
    /// ([`freshness_allowance_us`]) relative to the newest entry, and to
    /// `now_us` when given (the server's own log).
    pub(crate) fn freshness(&mut self, interval_secs: u64, now_us: Option<i64>) {
        self.interval_secs = Some(interval_secs);
        self.now_us = now_us;
    }

    /// A point (seq and hash) verified before, kept by the verifier's user:
    /// a log that no longer reaches it, or holds another entry there, has
    /// regressed. `as_of_us` is when the server signed it: an export whose
    /// signed end is older (an archived copy) need not reach it. Checks
    /// nothing when the log was swept past it.
    pub fn expect_reaches(&mut self, seq: i64, hash: Vec<u8>, as_of_us: Option<i64>) {
        self.floor = Some((seq, hash));
        self.floor_as_of_us = as_of_us;
    }

    /// Whether a problem was found (feeding more changes nothing).
    pub fn failed(&self) -> bool {
        self.done
    }

    /// How many entries were checked so far.
    pub fn entries(&self) -> u64 {
        self.report.entries
    }

    fn fail(&mut self, seq: i64, problem: String) {
        if !self.done {
            self.done = true;
            self.report.first_bad_seq = Some(seq);
            self.report.problem = Some(problem);
        }
    }

    /// Feeds one line of an export or file sink.
    pub fn line(&mut self, line: &Line) {
        if self.done {
            return;
        }
        if let Some(end) = &self.end {
            let seq = end.seq;
            return self.fail(
                seq + 1,
                format!("a line follows the signed end of the export (at seq {seq}): lines were appended"),
            );
        }
        match line {
            Line::End(end) => self.end_line(end),
            Line::Header(h) => {
                self.export = Some(h.clone());
                if h.format != EXPORT_FORMAT {
                    let seq = self.next_seq();
                    self.fail(seq, format!("unsupported export format {}", h.format));
                }
                if h.from_seq.is_some() {
                    self.allow_partial_start = true;
                }
                self.until = h.to_seq;
            }
            Line::Entry(e) => self.entry_line(e),
            Line::Checkpoint(c) => match c.checkpoint() {
                Some(cp) if c.time == render_time(c.time_us) => self.checkpoint(cp),
                Some(_) => self.fail(
                    c.seq,
                    format!(
                        "the checkpoint at seq {} shows a time its signature does not cover",
                        c.seq
                    ),
                ),
                None => self.fail(
                    c.seq,
                    format!("the checkpoint at seq {} is malformed", c.seq),
                ),
            },
        }
    }

    fn end_line(&mut self, end: &EndLine) {
        if !end_signed_by(end, &self.public_key) {
            return self.fail(
                self.next_seq(),
                format!(
                    "the export's end line (seq {}) is not validly signed by this key",
                    end.seq
                ),
            );
        }
        if end.to_seq.is_none() {
            self.now_us = Some(end.time_us);
        }
        self.interval_secs = Some(end.interval_secs);
        self.end = Some(end.clone());
    }

    /// A line that did not parse, after `self.last`.
    pub fn malformed(&mut self, what: &str) {
        let seq = self.next_seq();
        self.fail(
            seq,
            format!("a line after seq {} is malformed: {what}", seq - 1),
        );
    }

    fn next_seq(&self) -> i64 {
        self.last
            .as_ref()
            .map_or(self.anchor.as_ref().map_or(1, |a| a.0 + 1), |l| l.0 + 1)
    }

    fn entry_line(&mut self, e: &EntryLine) {
        let (Ok(prev), Ok(hash), Ok(mac)) = (
            hex::decode(&e.prev_hash),
            hex::decode(&e.hash),
            hex::decode(&e.mac),
        ) else {
            return self.fail(e.seq, format!("entry {} has malformed hashes", e.seq));
        };
        if e.time != render_time(e.time_us) {
            return self.fail(
                e.seq,
                format!(
                    "entry {} shows a time its hash does not cover (altered)",
                    e.seq
                ),
            );
        }
        self.entry(e.seq, &e.event(), &prev, &hash, &mac);
    }

    /// Feeds a stored row.
    pub fn row(&mut self, row: &AuditRow) {
        match serde_json::from_slice::<Event>(&row.body) {
            Ok(event) if event.time_us == row.time_us => {
                self.entry(row.seq, &event, &row.prev_hash, &row.hash, &row.mac)
            }
            Ok(_) => self.fail(
                row.seq,
                format!(
                    "entry {}'s time column does not match its content (altered)",
                    row.seq
                ),
            ),
            Err(_) => self.fail(
                row.seq,
                format!(
                    "entry {}'s content is not an audit event (altered)",
                    row.seq
                ),
            ),
        }
    }

    /// Feeds one entry. Checked in this order, so that the first bad entry
    /// is the one named: its place in the sequence, its own hash (which
    /// covers its sequence number, content and predecessor), its MAC, and
    /// only then its link to the entry before it.
    pub fn entry(&mut self, seq: i64, event: &Event, prev_hash: &[u8], hash: &[u8], mac: &[u8]) {
        if self.done {
            return;
        }
        if let Some((last_seq, _)) = &self.last {
            let (last_seq, expected) = (*last_seq, last_seq + 1);
            if seq > expected {
                let missing = if seq - 1 == expected {
                    format!("entry {expected} is")
                } else {
                    format!("entries {expected}..={} are", seq - 1)
                };
                return self.fail(expected, format!("{missing} missing"));
            }
            if seq < expected {
                return self.fail(
                    seq,
                    format!("entry {seq} is out of order or repeated (after entry {last_seq})"),
                );
            }
        }
        let computed = entry_hash(seq, event, prev_hash);
        if !constant_time_eq(&computed, hash) {
            return self.fail(
                seq,
                format!("entry {seq} was altered: its content does not match its hash"),
            );
        }
        if let Some(key) = &self.chain_key
            && !constant_time_eq(&entry_mac(key, hash), mac)
        {
            return self.fail(seq, format!("entry {seq} has an invalid MAC: it was not written by this server (forged or rewritten)"));
        }
        if let Some((floor, floor_hash)) = &self.floor
            && *floor == seq
            && !constant_time_eq(floor_hash, hash)
        {
            return self.fail(
                seq,
                format!("regression: entry {seq} is not the entry this client verified there before (the log was cut back to before seq {seq} and rewritten)"),
            );
        }
        match self.last.clone() {
            None => {
                self.report.first_seq = Some(seq);
                // Remembered checkpoints of entries swept since.
                self.pending.retain(|s, _| *s >= seq);
                if seq == 1 {
                    if prev_hash != GENESIS_HASH {
                        return self.fail(
                            1,
                            "entry 1 does not start the chain (its predecessor is not genesis)"
                                .into(),
                        );
                    }
                } else if let Some((anchor_seq, anchor_hash)) = self.anchor.clone() {
                    if anchor_seq == seq - 1 {
                        if !constant_time_eq(&anchor_hash, prev_hash) {
                            return self.fail(seq, format!("entry {seq} does not follow the signed anchor at seq {anchor_seq}"));
                        }
                    } else if anchor_seq >= seq {
                        return self.fail(
                            seq,
                            format!(
                                "entry {seq} comes before the signed anchor at seq {anchor_seq}"
                            ),
                        );
                    } else if self.allow_partial_start {
                        self.report.partial = true;
                    } else {
                        return self.fail(
                            anchor_seq + 1,
                            format!("entries {}..={} are missing (after the signed anchor at seq {anchor_seq})", anchor_seq + 1, seq - 1),
                        );
                    }
                } else if self.allow_partial_start {
                    self.report.partial = true;
                } else {
                    return self.fail(
                        1,
                        format!(
                            "entries 1..={} are missing and no signed anchor covers them",
                            seq - 1
                        ),
                    );
                }
            }
            Some((last_seq, last_hash)) => {
                if !constant_time_eq(&last_hash, prev_hash) {
                    return self.fail(
                        last_seq,
                        format!("entry {seq} does not follow entry {last_seq}: entry {last_seq} was rewritten, or an entry was inserted or removed"),
                    );
                }
            }
        }
        self.report.entries += 1;
        self.report.last_seq = Some(seq);
        self.last = Some((seq, hash.to_vec()));
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        let time = (!event.buffered).then_some(event.time_us);
        self.recent.push_back((seq, hash.to_vec(), time));
        if let Some(t) = time {
            self.newest_time_us = Some(self.newest_time_us.map_or(t, |n| n.max(t)));
            if self.unsigned_since.is_none_or(|(_, u)| t < u) {
                self.unsigned_since = Some((seq, t));
            }
        }
        if let Some(waiting) = self.pending.remove(&seq) {
            for cp in waiting {
                self.match_checkpoint(&cp, hash);
            }
        }
    }

    /// A checkpoint the auditor kept from an earlier verification (or the
    /// server from its last signing): the log must still hold that entry
    /// with that hash, so removing the newest entries together with their
    /// checkpoints is caught too. Feed it before the entries.
    pub fn remember(&mut self, cp: AuditCheckpoint) {
        if self.done {
            return;
        }
        if !checkpoint_signed_by(&cp, &self.public_key) {
            return self.fail(
                cp.seq,
                format!(
                    "the remembered checkpoint at seq {} is not signed by this key",
                    cp.seq
                ),
            );
        }
        self.pending.entry(cp.seq).or_default().push(cp);
    }

    /// Feeds a checkpoint (anywhere in the stream; normally right after the
    /// entry it names).
    pub fn checkpoint(&mut self, cp: AuditCheckpoint) {
        if self.done {
            return;
        }
        if !checkpoint_signed_by(&cp, &self.public_key) {
            let why = if cp.public_key.as_slice() == self.public_key.as_slice() {
                "an invalid signature"
            } else {
                "another key's signature"
            };
            return self.fail(
                cp.seq,
                format!("the checkpoint at seq {} has {why}", cp.seq),
            );
        }
        if self.newest_cp_time_us.is_none_or(|t| t < cp.time_us) {
            self.newest_cp_time_us = Some(cp.time_us);
        }
        match &self.last {
            None => {
                // Before any entry: a candidate anchor for the first one.
                if self.anchor.as_ref().is_none_or(|a| a.0 <= cp.seq) {
                    self.anchor = Some((cp.seq, cp.hash.clone()));
                }
            }
            Some((last_seq, last_hash)) if *last_seq == cp.seq => {
                let hash = last_hash.clone();
                self.match_checkpoint(&cp, &hash);
            }
            Some((last_seq, _)) if *last_seq < cp.seq => {
                let count: usize = self.pending.values().map(Vec::len).sum();
                if count >= MAX_PENDING {
                    return self.fail(cp.seq, "too many checkpoints ahead of the entries".into());
                }
                self.pending.entry(cp.seq).or_default().push(cp);
            }
            Some(_) => match self
                .recent
                .iter()
                .find(|(s, _, _)| *s == cp.seq)
                .map(|(_, h, _)| h.clone())
            {
                Some(hash) => self.match_checkpoint(&cp, &hash),
                None if self.report.first_seq.is_some_and(|f| cp.seq < f) => {}
                None => self.fail(
                    cp.seq,
                    format!("the checkpoint at seq {} is out of order", cp.seq),
                ),
            },
        }
    }

    fn match_checkpoint(&mut self, cp: &AuditCheckpoint, hash: &[u8]) {
        if !constant_time_eq(&cp.hash, hash) {
            let since = self
                .report
                .last_checkpoint_seq
                .map_or(self.report.first_seq.unwrap_or(1), |s| s + 1);
            return self.fail(
                since.min(cp.seq),
                format!("the chain up to seq {} does not match its signed checkpoint: entries {since}..={} were rewritten", cp.seq, cp.seq),
            );
        }
        self.report.checkpoints += 1;
        if self.report.last_checkpoint_seq.is_none_or(|s| s < cp.seq) {
            self.report.last_checkpoint_seq = Some(cp.seq);
        }
        // Entries up to it are signed: the clock restarts at the first
        // entry after it.
        if self.unsigned_since.is_some_and(|(u, _)| u <= cp.seq) {
            self.unsigned_since = self
                .recent
                .iter()
                .filter(|(s, _, _)| *s > cp.seq)
                .filter_map(|(s, _, t)| t.map(|t| (*s, t)))
                .min_by_key(|(_, t)| *t);
        }
    }

    /// Ends the stream: checkpoints beyond the last entry mean the newest
    /// entries were removed.
    pub fn finish(mut self) -> Report {
        if let Some(until) = self.until {
            self.pending.retain(|s, _| *s <= until);
        }
        if !self.done
            && let Some((&seq, _)) = self.pending.iter().next_back()
        {
            let last = self.report.last_seq.unwrap_or(0);
            self.fail(last + 1, format!("the log ends at seq {last} but a signed checkpoint covers seq {seq}: entries {}..={seq} were removed", last + 1));
        }
        if !self.done && self.last.is_none() {
            // No entries at all: fine only if nothing was ever signed.
            if let Some((seq, _)) = &self.anchor
                && !self.allow_partial_start
            {
                let seq = *seq;
                self.fail(seq, format!("the log is empty but a signed checkpoint covers seq {seq}: every entry was removed"));
            }
        }
        // The most specific cause first: a signed checkpoint beyond the end,
        // a point verified before, the signed end, then the newest entries'
        // age.
        self.check_floor();
        self.check_end();
        self.check_fresh();
        self.report.ok = !self.done;
        self.report
    }

    /// The point verified before must still be there (unless this export
    /// was asked to stop before it).
    fn check_floor(&mut self) {
        let Some((floor, _)) = &self.floor else {
            return;
        };
        let floor = *floor;
        let last = self.report.last_seq.unwrap_or(0);
        let older_export = self
            .end
            .as_ref()
            .zip(self.floor_as_of_us)
            .is_some_and(|(end, as_of)| end.time_us < as_of);
        if self.done || self.until.is_some_and(|u| u < floor) || last >= floor || older_export {
            return;
        }
        self.fail(
            last + 1,
            format!("regression: this client verified this log up to seq {floor} before, but it now ends at seq {last}: entries {}..={floor} were removed", last + 1),
        );
    }

    /// An export must end with its signed end line, naming its last entry.
    fn check_end(&mut self) {
        let Some(header) = &self.export else {
            return;
        };
        if self.done {
            return;
        }
        let last = self.report.last_seq.unwrap_or(0);
        let Some(end) = &self.end else {
            return self.fail(
                last + 1,
                format!("the export ends unanchored: it was cut short (after seq {last} there is no signed end line)"),
            );
        };
        let (end_seq, from, to) = (end.seq, end.from_seq, end.to_seq);
        let last_hash = self.last.as_ref().map(|(_, h)| hex::encode(h));
        let matches = match &last_hash {
            Some(h) => end_seq == last && constant_time_eq(h.as_bytes(), end.hash.as_bytes()),
            None => end_seq == 0 && end.hash.is_empty(),
        };
        if !matches {
            return self.fail(
                last.min(end_seq) + 1,
                format!("the export ends unanchored: it was cut short (its signed end names seq {end_seq}, its last entry is seq {last})"),
            );
        }
        if (header.from_seq, header.to_seq) != (from, to) {
            self.fail(
                self.report.first_seq.unwrap_or(1),
                "the export's header does not match its signed end (its range was altered)".into(),
            );
        }
    }

    /// Entries no checkpoint covers: stale when both the oldest of them
    /// and the newest checkpoint are older than the interval allows,
    /// relative to the newest entry or to now. (Both, so that neither an
    /// idle log's old checkpoint followed by a new entry, nor an entry
    /// stamped by a node whose clock is behind, counts as stale.)
    fn check_fresh(&mut self) {
        let (Some(interval), Some((seq, since))) = (self.interval_secs, self.unsigned_since) else {
            return;
        };
        if self.done {
            return;
        }
        let allowed = freshness_allowance_us(interval);
        let newest = self.newest_time_us.unwrap_or(since);
        // Without any checkpoint there is no signer's clock to judge by (a
        // server in its first interval); the signed end or the server's own
        // newest checkpoint guards such a log.
        let stale = |reference: i64| {
            reference - since > allowed
                && self
                    .newest_cp_time_us
                    .is_some_and(|cp| reference - cp > allowed)
        };
        let (age, against) = match self.now_us {
            _ if stale(newest) => (newest - since, "before the newest entry"),
            Some(now) if stale(now) => (now - since, "at verification"),
            _ => return,
        };
        {
            let last_cp = self
                .report
                .last_checkpoint_seq
                .map_or("none".to_string(), |s| format!("seq {s}"));
            self.fail(
                seq,
                format!("stale checkpoints: entry {seq} was written {}s {against} and no signed checkpoint covers it (newest checkpoint: {last_cp}); with a {interval}s checkpoint interval at most {}s are allowed: the newest entries and their checkpoints were removed, or the server stopped without signing its head", age / 1_000_000, allowed / 1_000_000),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: i64) -> Event {
        Event {
            v: EVENT_VERSION,
            time_us: 1_700_000_000_000_000 + i,
            request_id: format!("req-{i}"),
            client_ip: "127.0.0.1".into(),
            method: "GET".into(),
            path: "sys/health".into(),
            operation: "read".into(),
            decision: "allowed".into(),
            status: 200,
            ..Event::default()
        }
    }

    // Version 2 added `resources` to the hashed encoding; entries written
    // as version 1 must keep verifying with the encoding they were hashed in.
    #[test]
    fn resources_are_hashed_from_version_2_and_version_1_keeps_its_encoding() {
        let mut v2 = event(1);
        let plain = canonical(1, &v2);
        v2.resources = vec!["zafe://app/prod/KEY".into()];
        assert_ne!(
            canonical(1, &v2),
            plain,
            "resources must be covered by the hash"
        );
        let mut other = v2.clone();
        other.resources = vec!["zafe://app/prod/OTHER".into()];
        assert_ne!(canonical(1, &v2), canonical(1, &other));

        let mut v1 = event(1);
        v1.v = 1;
        let v1_plain = canonical(1, &v1);
        // A version-1 entry keeps the old encoding (no resources list), and
        // resources smuggled into one later break its hash.
        let mut forged = event(1);
        forged.v = 1;
        forged.resources = vec!["zafe://app/prod/KEY".into()];
        assert_ne!(canonical(1, &forged), v1_plain);
        let mut as_v2 = v1.clone();
        as_v2.v = 2;
        assert_ne!(canonical(1, &as_v2), v1_plain);
        // And serialising an entry without resources writes no new field,
        // so version-1 lines round-trip byte for byte.
        assert!(!serde_json::to_string(&v1).unwrap().contains("resources"));
    }

    fn chain(key: &SecretKey, n: i64) -> Vec<EntryLine> {
        let mut prev = GENESIS_HASH.to_vec();
        (1..=n)
            .map(|seq| {
                let e = event(seq);
                let hash = entry_hash(seq, &e, &prev);
                let line = EntryLine::new(seq, e, &prev, &hash, &entry_mac(key, &hash));
                prev = hash.to_vec();
                line
            })
            .collect()
    }

    fn verify(key: Option<&SecretKey>, public: [u8; 32], lines: &[Line]) -> Report {
        let mut v = Verifier::new(key.map(SecretKey::duplicate), public, false);
        for l in lines {
            // Through text, as a file would be read.
            v.line(&Line::parse(&l.to_json()).unwrap());
        }
        v.finish()
    }

    #[test]
    fn canonical_encoding_covers_every_field() {
        let base = event(1);
        let mut variants = vec![];
        let mut e = base.clone();
        e.actor.policies = vec!["a,b".into()];
        variants.push(e);
        let mut e = base.clone();
        e.actor.policies = vec!["a".into(), "b".into()];
        variants.push(e);
        let mut e = base.clone();
        e.buffered = true;
        variants.push(e);
        let mut e = base.clone();
        e.dropped = 1;
        variants.push(e);
        let mut e = base.clone();
        e.error = "x".into();
        variants.push(e);
        let mut all: Vec<Vec<u8>> = variants.iter().map(|e| canonical(1, e)).collect();
        all.push(canonical(1, &base));
        all.push(canonical(2, &base));
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }

    #[test]
    fn a_clean_chain_with_checkpoints_verifies() {
        let key = SecretKey::generate();
        let id = IdentityKey::generate();
        let entries = chain(&key, 10);
        let mut lines: Vec<Line> = entries
            .iter()
            .cloned()
            .map(|e| Line::Entry(Box::new(e)))
            .collect();
        let h5 = hex::decode(&entries[4].hash).unwrap();
        lines.insert(
            5,
            Line::Checkpoint(CheckpointLine::new(&sign_checkpoint(
                &id, "periodic", 5, &h5, 9,
            ))),
        );
        let r = verify(Some(&key), id.public_key(), &lines);
        assert!(r.ok, "{r:?}");
        assert_eq!(
            (r.entries, r.checkpoints, r.last_checkpoint_seq),
            (10, 1, Some(5))
        );
        // Offline, without the chain key.
        assert!(verify(None, id.public_key(), &lines).ok);
        // Another key's checkpoints do not count.
        let other = IdentityKey::generate();
        let r = verify(None, other.public_key(), &lines);
        assert_eq!(r.first_bad_seq, Some(5), "{r:?}");
    }

    #[test]
    fn tampering_is_named() {
        let key = SecretKey::generate();
        let id = IdentityKey::generate();
        let entries = chain(&key, 8);
        let h8 = hex::decode(&entries[7].hash).unwrap();
        let cp = Line::Checkpoint(CheckpointLine::new(&sign_checkpoint(
            &id, "periodic", 8, &h8, 9,
        )));
        let as_lines = |es: &[EntryLine]| -> Vec<Line> {
            let mut l: Vec<Line> = es
                .iter()
                .cloned()
                .map(|e| Line::Entry(Box::new(e)))
                .collect();
            l.push(cp.clone());
            l
        };
        // Edit.
        let mut edited = entries.clone();
        edited[2].status = 403;
        assert_eq!(
            verify(None, id.public_key(), &as_lines(&edited)).first_bad_seq,
            Some(3)
        );
        // The displayed time alone.
        let mut edited = entries.clone();
        edited[3].time = "2001-01-01T00:00:00Z".into();
        assert_eq!(
            verify(None, id.public_key(), &as_lines(&edited)).first_bad_seq,
            Some(4)
        );
        // Deletion.
        let mut deleted = entries.clone();
        deleted.remove(4);
        assert_eq!(
            verify(None, id.public_key(), &as_lines(&deleted)).first_bad_seq,
            Some(5)
        );
        // Reordering.
        let mut swapped = entries.clone();
        swapped.swap(5, 6);
        assert_eq!(
            verify(None, id.public_key(), &as_lines(&swapped)).first_bad_seq,
            Some(6)
        );
        // Truncation of the newest entries, up to the checkpoint.
        let r = verify(None, id.public_key(), &as_lines(&entries[..6]));
        assert_eq!(r.first_bad_seq, Some(7), "{r:?}");
        // A rewrite that recomputed every hash after entry 3: the MAC names
        // entry 3; without the key the signed checkpoint still catches it.
        let mut rewritten = entries.clone();
        rewritten[2].status = 500;
        let mut prev = hex::decode(&rewritten[1].hash).unwrap();
        for e in &mut rewritten[2..] {
            let h = entry_hash(e.seq, &e.event(), &prev);
            e.prev_hash = hex::encode(&prev);
            e.hash = hex::encode(h);
            prev = h.to_vec();
        }
        assert_eq!(
            verify(Some(&key), id.public_key(), &as_lines(&rewritten)).first_bad_seq,
            Some(3)
        );
        let r = verify(None, id.public_key(), &as_lines(&rewritten));
        assert!(!r.ok && r.first_bad_seq.is_some_and(|s| s <= 3), "{r:?}");
        // Insertion of a forged entry 9 after the end is fine only if it is
        // genuinely chained; a copy of entry 8 is a repeat.
        let mut inserted = entries.clone();
        inserted.insert(5, entries[4].clone());
        assert_eq!(
            verify(None, id.public_key(), &as_lines(&inserted)).first_bad_seq,
            Some(5)
        );
        // Unknown fields are refused, not ignored.
        let mut text = Line::Entry(Box::new(entries[0].clone())).to_json();
        text.insert_str(1, "\"note\":\"all fine\",");
        assert!(Line::parse(&text).is_err());
    }

    // Removing the newest entries together with their checkpoint lines is
    // invisible in the file alone, and caught with a checkpoint remembered
    // from an earlier verification.
    #[test]
    fn a_remembered_checkpoint_catches_truncation_of_everything_after_it() {
        let key = SecretKey::generate();
        let id = IdentityKey::generate();
        let entries = chain(&key, 9);
        let h7 = hex::decode(&entries[6].hash).unwrap();
        let cp = sign_checkpoint(&id, "periodic", 7, &h7, 5);
        let cut: Vec<Line> = entries[..5]
            .iter()
            .cloned()
            .map(|e| Line::Entry(Box::new(e)))
            .collect();
        assert!(
            verify(None, id.public_key(), &cut).ok,
            "nothing in the file shows it"
        );
        let mut v = Verifier::new(None, id.public_key(), false);
        v.remember(cp.clone());
        cut.iter().for_each(|l| v.line(l));
        let r = v.finish();
        assert_eq!(r.first_bad_seq, Some(6), "{r:?}");
        // The whole log still verifies with it.
        let mut v = Verifier::new(None, id.public_key(), false);
        v.remember(cp);
        entries
            .iter()
            .for_each(|e| v.line(&Line::Entry(Box::new(e.clone()))));
        let r = v.finish();
        assert!(r.ok && r.checkpoints == 1, "{r:?}");
        // A forged one is refused.
        let mut v = Verifier::new(None, id.public_key(), false);
        v.remember(sign_checkpoint(
            &IdentityKey::generate(),
            "periodic",
            7,
            &h7,
            5,
        ));
        assert!(!v.finish().ok);
    }

    #[test]
    fn a_swept_log_verifies_from_its_anchor() {
        let key = SecretKey::generate();
        let id = IdentityKey::generate();
        let entries = chain(&key, 6);
        let h3 = hex::decode(&entries[2].hash).unwrap();
        let anchor = Line::Checkpoint(CheckpointLine::new(&sign_checkpoint(
            &id, "anchor", 3, &h3, 1,
        )));
        let mut lines = vec![anchor.clone()];
        lines.extend(
            entries[3..]
                .iter()
                .cloned()
                .map(|e| Line::Entry(Box::new(e))),
        );
        let r = verify(Some(&key), id.public_key(), &lines);
        assert!(r.ok && !r.partial, "{r:?}");
        // Without the anchor, the missing start is named.
        assert_eq!(
            verify(None, id.public_key(), &lines[1..]).first_bad_seq,
            Some(1)
        );
        // Deleting more than was swept is named too.
        let mut more = vec![anchor];
        more.extend(
            entries[4..]
                .iter()
                .cloned()
                .map(|e| Line::Entry(Box::new(e))),
        );
        assert_eq!(verify(None, id.public_key(), &more).first_bad_seq, Some(4));
    }
}

#[cfg(test)]
mod end_and_freshness_tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000_000;
    const SEC: i64 = 1_000_000;

    /// Entries 1..=n, entry i written at `times[i - 1]` (µs).
    fn chain(key: &SecretKey, times: &[i64]) -> Vec<EntryLine> {
        let mut prev = GENESIS_HASH.to_vec();
        times
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let seq = i as i64 + 1;
                let e = Event {
                    v: EVENT_VERSION,
                    time_us: *t,
                    request_id: format!("req-{seq}"),
                    method: "GET".into(),
                    path: "sys/health".into(),
                    decision: "allowed".into(),
                    status: 200,
                    ..Event::default()
                };
                let hash = entry_hash(seq, &e, &prev);
                let line = EntryLine::new(seq, e, &prev, &hash, &entry_mac(key, &hash));
                prev = hash.to_vec();
                line
            })
            .collect()
    }

    fn cp(id: &IdentityKey, e: &EntryLine, time_us: i64) -> Line {
        let hash = hex::decode(&e.hash).unwrap();
        Line::Checkpoint(CheckpointLine::new(&sign_checkpoint(
            id, "periodic", e.seq, &hash, time_us,
        )))
    }

    /// An export of `entries` with a checkpoint after entry `cp_at`, ending
    /// with a signed end made at `now`.
    fn export(id: &IdentityKey, entries: &[EntryLine], cp_at: usize, now: i64) -> Vec<Line> {
        let mut lines = vec![Line::Header(ExportHeader {
            format: EXPORT_FORMAT,
            server_id: id.server_id(),
            from_seq: None,
            to_seq: None,
        })];
        for (i, e) in entries.iter().enumerate() {
            lines.push(Line::Entry(Box::new(e.clone())));
            if i + 1 == cp_at {
                lines.push(cp(id, e, e.time_us));
            }
        }
        let last = entries.last().unwrap();
        let hash = hex::decode(&last.hash).unwrap();
        lines.push(Line::End(sign_export_end(
            id,
            Some((last.seq, &hash)),
            None,
            None,
            60,
            now,
        )));
        lines
    }

    fn verify(public: [u8; 32], lines: &[Line], floor: Option<(i64, Vec<u8>)>) -> Report {
        let mut v = Verifier::new(None, public, false);
        if let Some((seq, hash)) = floor {
            v.expect_reaches(seq, hash, Some(T0 + 5 * SEC));
        }
        for l in lines {
            v.line(&Line::parse(&l.to_json()).unwrap());
        }
        v.finish()
    }

    fn entries_hash(entries: &[EntryLine], seq: usize) -> Vec<u8> {
        hex::decode(&entries[seq - 1].hash).unwrap()
    }

    fn times(n: i64) -> Vec<i64> {
        (0..n).map(|i| T0 + i * SEC).collect()
    }

    // R-AUD-6: an export ends with a signed end; one cut short by its last
    // lines (with or without the end line) no longer verifies.
    #[test]
    fn an_export_cut_short_ends_unanchored() {
        let (key, id) = (SecretKey::generate(), IdentityKey::generate());
        let entries = chain(&key, &times(10));
        let full = export(&id, &entries, 10, T0 + 10 * SEC);
        let r = verify(id.public_key(), &full, None);
        assert!(r.ok, "{r:?}");

        // The end line removed; then the last entries too (the checkpoint
        // of entry 10 goes with them).
        let r = verify(id.public_key(), &full[..full.len() - 1], None);
        assert!(
            !r.ok && r.problem.as_deref().unwrap().contains("ends unanchored"),
            "{r:?}"
        );
        assert_eq!(r.first_bad_seq, Some(11));
        let cut: Vec<Line> = full[..8].to_vec();
        let r = verify(id.public_key(), &cut, None);
        assert!(
            !r.ok && r.problem.as_deref().unwrap().contains("ends unanchored"),
            "{r:?}"
        );
        // The end line kept after cutting entries: it names another entry.
        let mut cut = full[..8].to_vec();
        cut.push(full.last().unwrap().clone());
        let r = verify(id.public_key(), &cut, None);
        assert!(
            !r.ok && r.problem.as_deref().unwrap().contains("ends unanchored"),
            "{r:?}"
        );
        assert_eq!(r.first_bad_seq, Some(8));
        // An end signed by another key, an end with its time edited, and a
        // line after the end.
        let mut other = full.clone();
        let other_end = export(&IdentityKey::generate(), &entries, 10, T0)
            .pop()
            .unwrap();
        *other.last_mut().unwrap() = other_end;
        assert!(!verify(id.public_key(), &other, None).ok);
        let mut edited = full.clone();
        if let Some(Line::End(end)) = edited.last_mut() {
            end.time_us += 1;
            end.time = render_time(end.time_us);
        }
        assert!(!verify(id.public_key(), &edited, None).ok);
        let mut appended = full.clone();
        appended.push(Line::Entry(Box::new(entries[9].clone())));
        assert!(!verify(id.public_key(), &appended, None).ok);
        // A full export made to look like a requested range.
        let mut ranged = full.clone();
        if let Line::Header(h) = &mut ranged[0] {
            h.to_seq = Some(10);
        }
        assert!(!verify(id.public_key(), &ranged, None).ok);
        // The file sink has no header and no end line.
        assert!(verify(id.public_key(), &full[1..full.len() - 1], None).ok);
    }

    // R-AUD-6: the newest entries must be covered by a checkpoint within
    // the interval the server signs at, relative to the newest entry and to
    // the time the export was made.
    #[test]
    fn stale_checkpoints_are_named() {
        let (key, id) = (SecretKey::generate(), IdentityKey::generate());
        // 60 s interval: 150 s allowed. Entries 1..=5 signed; 6 unsigned and
        // 12 minutes older than entry 8.
        let mut t = times(8);
        t[5] = T0 + 10 * SEC;
        t[6] = T0 + 700 * SEC;
        t[7] = T0 + 730 * SEC;
        let entries = chain(&key, &t);
        let r = verify(
            id.public_key(),
            &export(&id, &entries, 5, T0 + 731 * SEC),
            None,
        );
        assert!(!r.ok, "{r:?}");
        assert_eq!(r.first_bad_seq, Some(6), "{r:?}");
        assert!(
            r.problem.as_deref().unwrap().contains("stale checkpoints"),
            "{r:?}"
        );
        // Relative to the time of the export alone: the newest entries are
        // recent to each other but waited too long.
        let entries = chain(&key, &times(8));
        let r = verify(
            id.public_key(),
            &export(&id, &entries, 5, T0 + 600 * SEC),
            None,
        );
        assert!(!r.ok && r.first_bad_seq == Some(6), "{r:?}");
        // Normal operation: recent unsigned entries, or an idle log whose
        // entries are all signed, verify.
        assert!(
            verify(
                id.public_key(),
                &export(&id, &entries, 5, T0 + 60 * SEC),
                None
            )
            .ok
        );
        assert!(
            verify(
                id.public_key(),
                &export(&id, &entries, 8, T0 + 86_400 * SEC),
                None
            )
            .ok
        );
        // An idle log: an old checkpoint, then new entries; and entries
        // stamped by a node whose clock is an hour behind, after a recent
        // checkpoint. Neither is stale.
        let mut t = times(8);
        for (i, x) in t.iter_mut().enumerate().skip(5) {
            *x = T0 + 1000 * SEC + i as i64;
        }
        let idle = chain(&key, &t);
        assert!(
            verify(
                id.public_key(),
                &export(&id, &idle, 5, T0 + 1010 * SEC),
                None
            )
            .ok
        );
        let mut t = times(8);
        t[5] = T0 - 3600 * SEC;
        let skewed = chain(&key, &t);
        let mut lines = export(&id, &skewed, 0, T0 + 8 * SEC);
        lines.insert(6, cp(&id, &skewed[4], T0 + 8 * SEC));
        assert!(verify(id.public_key(), &lines, None).ok);
        // A range that stops before the newest entries is not judged
        // against the time of the export.
        let mut ranged = export(&id, &entries, 5, T0 + 86_400 * SEC);
        if let Line::Header(h) = &mut ranged[0] {
            h.to_seq = Some(8);
        }
        let h8 = hex::decode(&entries[7].hash).unwrap();
        *ranged.last_mut().unwrap() = Line::End(sign_export_end(
            &id,
            Some((8, &h8)),
            None,
            Some(8),
            60,
            T0 + 86_400 * SEC,
        ));
        assert!(verify(id.public_key(), &ranged, None).ok);
        let mut v = Verifier::new(None, id.public_key(), false);
        v.freshness(60, Some(T0 + 86_400 * SEC));
        for e in &entries {
            v.line(&Line::Entry(Box::new(e.clone())));
            if e.seq == 5 {
                v.line(&cp(&id, e, e.time_us));
            }
        }
        assert!(
            !v.finish().ok,
            "online, the server's own log is judged against now"
        );
    }

    // R-AUD-6: a point verified before must still be reached, with its hash.
    #[test]
    fn a_regression_below_a_verified_point_is_named() {
        let (key, id) = (SecretKey::generate(), IdentityKey::generate());
        let entries = chain(&key, &times(10));
        let h8 = hex::decode(&entries[7].hash).unwrap();
        let full = export(&id, &entries, 10, T0 + 10 * SEC);
        assert!(verify(id.public_key(), &full, Some((8, h8.clone()))).ok);
        // Cut back to 6 (and signed again there: the export alone is fine).
        let short = export(&id, &entries[..6], 6, T0 + 10 * SEC);
        assert!(verify(id.public_key(), &short, None).ok);
        let r = verify(id.public_key(), &short, Some((8, h8)));
        assert!(!r.ok && r.first_bad_seq == Some(7), "{r:?}");
        assert!(
            r.problem.as_deref().unwrap().contains("up to seq 8"),
            "{r:?}"
        );
        // An archived export made before that point was verified.
        let archived = export(&id, &entries[..6], 6, T0 + 4 * SEC);
        assert!(
            verify(
                id.public_key(),
                &archived,
                Some((8, entries_hash(&entries, 8)))
            )
            .ok
        );
        // Another entry at the verified point.
        let r = verify(id.public_key(), &full, Some((8, vec![0; 32])));
        assert!(!r.ok && r.first_bad_seq == Some(8), "{r:?}");
        assert!(
            r.problem.as_deref().unwrap().contains("regression"),
            "{r:?}"
        );
    }
}
