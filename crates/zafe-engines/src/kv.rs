//! The KV version 2 secrets engine (R-KV-1), with Vault's HTTP API:
//!
//! | path                  | operations                                             |
//! |-----------------------|--------------------------------------------------------|
//! | `config`              | read, write (`max_versions`, `cas_required`, `delete_version_after`) |
//! | `data/<path>`         | read (`?version=N`), write (`{"data", "options": {"cas"}}`), patch (JSON merge patch into the latest version), delete (soft-delete the latest version) |
//! | `metadata/<path>`     | read, list (`?after=`, `?limit=`), write, patch, delete (every version and the metadata) |
//! | `delete/<path>`       | write `{"versions": [...]}`: soft delete                |
//! | `undelete/<path>`     | write `{"versions": [...]}`                             |
//! | `destroy/<path>`      | write `{"versions": [...]}`: the data is removed for good |
//!
//! # Storage layout (keys relative to the mount's view, `logical/<uuid>/`)
//!
//! - `config`: the mount's `KvConfig`.
//! - `meta/<path>`: one [`Meta`] record per secret: settings, custom
//!   metadata and the state of every kept version. `DELETE metadata/<path>`
//!   leaves a tombstone here instead of removing the row (see
//!   `load_meta`): the row's generation then never starts over, so a
//!   compare-and-swap computed from the deleted secret cannot match a
//!   re-created one.
//! - `keys/<path>`: an empty marker that exists exactly while the secret
//!   does. Listing a folder is a listing of `keys/<folder>/`, so tombstones
//!   never show up in it.
//! - `ver/<path>/<n>`: version `n`'s data, one record per version, so a read
//!   decrypts the metadata and that one version, never the whole history.
//!   The mapping from (path, n) to the key is injective: the last segment is
//!   always the version number.
//!
//! Every change to a secret is one atomic [`View::try_commit`] of the new
//! metadata (compare-and-swap on the generation it was read at) together with
//! the version records it adds or removes. Two writers that read the same
//! metadata cannot both commit, so no acknowledged write is ever lost and
//! every acknowledged write gets its own version number, also with several
//! server nodes on one database. Inside one process, writers to the same path
//! are serialised by the engine's sharded async mutex first (see
//! `Kv::lock_path`), so they queue instead of failing their compare-and-swap
//! over and over; a change that loses it to other nodes 32 times in a row is
//! refused with a 409 and writes nothing.
//!
//! Each version record repeats the version number and the random
//! `incarnation` of the metadata that owns it. The barrier already binds a
//! ciphertext to its storage key; this also catches an old record put back
//! after the secret was deleted and re-created at the same path.

use std::collections::BTreeMap;
use std::hash::BuildHasher as _;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use zafe_engine::{
    Caller, Ctx, Engine, Error, Expect, MAX_LIST, Operation, Request, Response, Result, Status,
    View, Write,
};

/// Versions kept when neither the mount nor the secret sets `max_versions`
/// (Vault's default).
const DEFAULT_MAX_VERSIONS: u32 = 10;

/// Longest secret path accepted, in bytes.
const MAX_PATH_LEN: usize = 1024;

/// Vault's limits on `custom_metadata`.
const MAX_CUSTOM_KEYS: usize = 64;
const MAX_CUSTOM_KEY_LEN: usize = 128;
const MAX_CUSTOM_VALUE_LEN: usize = 512;

/// How often a change is retried after losing a compare-and-swap race (to
/// another node: inside this process writers to a path queue on a lock).
const MAX_CAS_ATTEMPTS: usize = 32;

/// Shards of the per-path write lock.
const LOCK_SHARDS: usize = 256;

const CAS_MISMATCH: &str = "check-and-set parameter did not match the current version";
const CAS_REQUIRED: &str = "check-and-set parameter required for this call";

const CONFIG_KEY: &str = "config";

fn meta_key(path: &str) -> String {
    format!("meta/{path}")
}

fn version_key(path: &str, version: u64) -> String {
    format!("ver/{path}/{version}")
}

fn index_key(path: &str) -> String {
    format!("keys/{path}")
}

/// The mount-wide settings (`<mount>/config`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KvConfig {
    #[serde(default)]
    pub max_versions: u32,
    #[serde(default)]
    pub cas_required: bool,
    /// Seconds; 0 means never.
    #[serde(default)]
    pub delete_version_after: u64,
}

/// One secret's metadata, stored at `meta/<path>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Meta {
    /// A tombstone left by `DELETE metadata/<path>`: the secret is gone, but
    /// the row stays so that its generation keeps counting (see [`load_meta`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deleted: bool,
    /// Random per life of the secret: version records must carry the same.
    incarnation: String,
    /// Unix nanoseconds.
    created: i64,
    updated: i64,
    current_version: u64,
    /// 0 until versions were first pruned, as in Vault.
    oldest_version: u64,
    max_versions: u32,
    cas_required: bool,
    delete_version_after: u64,
    custom_metadata: Option<BTreeMap<String, String>>,
    /// Counts metadata writes (OpenBao's `current_metadata_version`).
    metadata_version: u64,
    versions: BTreeMap<u64, VersionMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionMeta {
    created: i64,
    /// When the version is (or will be, with `delete_version_after`) deleted.
    deletion: Option<i64>,
    destroyed: bool,
    /// Who wrote the version (R-KV-2): a person's email, or a token's
    /// display name and accessor (never a token). Shown as `created_by` in
    /// the metadata's `versions` (an extra field Vault clients ignore; the
    /// data endpoints keep Vault's exact shape). Empty for versions written
    /// before it was recorded.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    created_by: String,
}

/// One version's data, stored at `ver/<path>/<n>`.
#[derive(Serialize, Deserialize)]
struct VersionRecord {
    incarnation: String,
    version: u64,
    data: Map<String, Value>,
}

impl Meta {
    fn new(now: i64) -> Self {
        Self {
            deleted: false,
            incarnation: uuid::Uuid::new_v4().to_string(),
            created: now,
            updated: now,
            current_version: 0,
            oldest_version: 0,
            max_versions: 0,
            cas_required: false,
            delete_version_after: 0,
            custom_metadata: None,
            metadata_version: 0,
            versions: BTreeMap::new(),
        }
    }

    /// Vault's metadata read.
    fn to_json(&self) -> Value {
        let versions: Map<String, Value> = self
            .versions
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    json!({
                        "created_by": v.created_by,
                        "created_time": rfc3339(v.created),
                        "deletion_time": v.deletion.map(rfc3339).unwrap_or_default(),
                        "destroyed": v.destroyed,
                    }),
                )
            })
            .collect();
        json!({
            "cas_required": self.cas_required,
            "created_time": rfc3339(self.created),
            "current_metadata_version": self.metadata_version,
            "current_version": self.current_version,
            "custom_metadata": self.custom_metadata,
            "delete_version_after": go_duration(self.delete_version_after),
            "max_versions": self.max_versions,
            "metadata_cas_required": false,
            "oldest_version": self.oldest_version,
            "updated_time": rfc3339(self.updated),
            "versions": versions,
        })
    }

    /// The metadata of one version, as data reads and writes show it.
    fn version_json(&self, version: u64, v: &VersionMeta) -> Value {
        json!({
            "created_time": rfc3339(v.created),
            "custom_metadata": self.custom_metadata,
            "deletion_time": v.deletion.map(rfc3339).unwrap_or_default(),
            "destroyed": v.destroyed,
            "version": version,
        })
    }
}

impl VersionMeta {
    fn is_deleted(&self, now: i64) -> bool {
        self.deletion.is_some_and(|t| t <= now)
    }

    fn is_live(&self, now: i64) -> bool {
        !self.destroyed && !self.is_deleted(now)
    }
}

/// A change to one secret, committed atomically with the metadata.
struct Change<T> {
    /// The new metadata; `None` deletes it.
    meta: Option<Meta>,
    /// Version records to create (they must not exist yet).
    create: Vec<(u64, Vec<u8>)>,
    /// Version records to remove.
    remove: Vec<u64>,
    reply: T,
}

enum Outcome<T> {
    Write(Change<T>),
    /// Nothing to change (deleting what is already deleted...).
    Unchanged(T),
}

/// The KV v2 engine of one mount.
///
/// It owns its write locks: a fixed table of shards, one of which serialises the writers of one
/// secret within this process, so they queue instead of racing on the compare-and-swap. The
/// router keeps one engine per mount for as long as the mount exists, so every writer of a
/// mount meets the same table. The hasher is seeded randomly per engine, so nobody can choose
/// paths that share a shard. Other processes (other nodes) still meet only in storage, where
/// the compare-and-swap decides.
pub struct Kv {
    hasher: std::collections::hash_map::RandomState,
    shards: Vec<tokio::sync::Mutex<()>>,
}

impl Kv {
    /// An engine with its own lock table.
    pub fn new() -> Self {
        Self {
            hasher: Default::default(),
            shards: (0..LOCK_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }

    /// The lock for the writers of one secret.
    async fn lock_path(&self, path: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let shard = (self.hasher.hash_one(path) % self.shards.len() as u64) as usize;
        self.shards[shard].lock().await
    }
}

impl Default for Kv {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Engine for Kv {
    /// Vault's existence check for KV v2: a write to `data/<path>` or
    /// `metadata/<path>` needs `create` when the secret has no metadata yet,
    /// `update` when it has.
    async fn exists(&self, ctx: &Ctx<'_>, rel_path: &str) -> Result<bool> {
        let (head, rest) = split(rel_path);
        match head {
            "data" | "metadata" => match validate_path(rest) {
                Ok(path) => Ok(load_meta(&ctx.view, path).await?.0.is_some()),
                // The handler answers the bad path after authorisation.
                Err(_) => Ok(true),
            },
            _ => Ok(true),
        }
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request, rel_path: &str) -> Result<Response> {
        let (head, rest) = split(rel_path);
        let response = self.route(ctx, req, head, rest).await?;
        // A committed change to a secret's versions is reported, so that agents following it
        // learn at once (names and versions only).
        let changes_versions = matches!(
            (head, req.operation),
            (
                "data",
                Operation::Write | Operation::Patch | Operation::Delete
            ) | ("metadata", Operation::Delete)
                | ("delete" | "undelete" | "destroy", Operation::Write)
        );
        if changes_versions
            && response.status().code() < 300
            && let Ok(path) = validate_path(rest)
        {
            let version = match &response {
                Response::Vault {
                    data: Some(data), ..
                } => data["version"].as_u64(),
                _ => None,
            };
            ctx.system.changed(ctx.mount, path, version);
        }
        Ok(response)
    }
}

impl Kv {
    /// The handler of one request, by endpoint and operation.
    async fn route(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        head: &str,
        rest: &str,
    ) -> Result<Response> {
        use Operation::*;
        let view = &ctx.view;
        match (head, req.operation) {
            ("config", Read) if rest.is_empty() => config_read(view).await,
            ("config", Write) if rest.is_empty() => config_write(view, req).await,
            ("data", Read) => data_read(view, req, rest, ctx.system.now().nanos()).await,
            ("data", Write) => self.data_write(ctx, req, rest).await,
            ("data", Patch) => self.data_patch(ctx, req, rest).await,
            ("data", Delete) => self.delete_latest(ctx, rest).await,
            ("metadata", Read) => metadata_read(view, rest).await,
            ("metadata", List) => list(view, req, rest).await,
            ("metadata", Write) => self.metadata_write(ctx, req, rest, false).await,
            ("metadata", Patch) => self.metadata_write(ctx, req, rest, true).await,
            ("metadata", Delete) => self.metadata_delete(ctx, rest).await,
            ("delete", Write) => self.versions_op(ctx, req, rest, VersionsOp::Delete).await,
            ("undelete", Write) => self.versions_op(ctx, req, rest, VersionsOp::Undelete).await,
            ("destroy", Write) => self.versions_op(ctx, req, rest, VersionsOp::Destroy).await,
            // A known endpoint, asked for an operation it does not have.
            ("config", _) if rest.is_empty() => Err(unsupported()),
            ("data" | "metadata" | "delete" | "undelete" | "destroy", _) => Err(unsupported()),
            _ => Ok(Response::Vault { status: Status::NOT_FOUND, data: None, auth: None, warnings: vec![
                        "Invalid path for a versioned K/V secrets engine. See the API docs for the appropriate API \
                         endpoints to use. If using the Zafe CLI, use 'zafe kv get' for this operation."
                            .into(),
                    ] }),
        }
    }
}

fn unsupported() -> Error {
    Error::MethodNotAllowed("unsupported operation".into())
}

// ---- config -----------------------------------------------------------------

async fn load_config(view: &View) -> Result<KvConfig> {
    Ok(view
        .get_json::<KvConfig>(CONFIG_KEY)
        .await?
        .map(|(c, _)| c)
        .unwrap_or_default())
}

fn config_json(c: &KvConfig) -> Value {
    json!({
        "cas_required": c.cas_required,
        "delete_version_after": go_duration(c.delete_version_after),
        "max_versions": c.max_versions,
        "metadata_cas_required": false,
    })
}

async fn config_read(view: &View) -> Result<Response> {
    Ok(Response::data(config_json(&load_config(view).await?)))
}

async fn config_write(view: &View, req: &Request) -> Result<Response> {
    // Parse everything before changing anything: bad input changes nothing.
    let max_versions = opt_field(req, "max_versions", parse_max_versions)?;
    let cas_required = opt_field(req, "cas_required", |v| parse_bool(v, "cas_required"))?;
    let delete_after = opt_field(req, "delete_version_after", |v| {
        parse_duration(v, "delete_version_after")
    })?;
    refuse_metadata_cas(req)?;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let current = view.get_json::<KvConfig>(CONFIG_KEY).await?;
        let (mut config, expect) = match current {
            Some((c, g)) => (c, Expect::Generation(g)),
            None => (KvConfig::default(), Expect::Absent),
        };
        if let Some(m) = max_versions {
            config.max_versions = m;
        }
        if let Some(c) = cas_required {
            config.cas_required = c;
        }
        if let Some(d) = delete_after {
            config.delete_version_after = d;
        }
        let write = Write::Put {
            key: CONFIG_KEY.into(),
            value: serde_json::to_vec(&config).expect("serialisable"),
            expect,
        };
        if view.try_commit(vec![write]).await? {
            return Ok(Response::NoContent);
        }
    }
    Err(Error::Internal(
        "config: too many concurrent changes".into(),
    ))
}

// ---- data -------------------------------------------------------------------

/// `now`: Unix nanoseconds, from the system view's clock.
async fn data_read(view: &View, req: &Request, rest: &str, now: i64) -> Result<Response> {
    let Ok(path) = validate_path(rest) else {
        return Ok(not_found());
    };
    let version = match req.query("version") {
        Some(v) => parse_version(v)?,
        None => match req.field("version") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => parse_version(&n.to_string())?,
            Some(Value::String(s)) => parse_version(s)?,
            Some(_) => return Err(Error::bad_request(VERSION_REFUSED)),
        },
    };
    match read_secret_version(view, path, version, now).await? {
        VersionRead::Missing => Ok(not_found()),
        // Vault answers 404 with the version's metadata, so clients can
        // tell "deleted" and "destroyed" from "never existed".
        VersionRead::Gone { metadata } => Ok(Response::Vault {
            status: Status::NOT_FOUND,
            data: Some(json!({ "data": null, "metadata": metadata })),
            auth: None,
            warnings: Vec::new(),
        }),
        VersionRead::Live { data, metadata } => Ok(Response::data(
            json!({ "data": data, "metadata": metadata }),
        )),
    }
}

const VERSION_REFUSED: &str =
    "version must be a non-negative integer (0 or none for the latest version)";

/// `?version=`: a version number, or `None` for the latest (empty or 0, as
/// in Vault). Anything else, a negative number included, is a 400: reading
/// the latest version instead of the one asked for would hand out a value
/// the caller did not mean.
fn parse_version(raw: &str) -> Result<Option<u64>> {
    match raw {
        "" => Ok(None),
        v if v.bytes().all(|b| b.is_ascii_digit()) => v
            .parse::<u64>()
            .map(|n| (n > 0).then_some(n))
            .map_err(|_| Error::bad_request(VERSION_REFUSED)),
        _ => Err(Error::bad_request(VERSION_REFUSED)),
    }
}

/// One version of a secret, as [`read_secret_version`] found it.
enum VersionRead {
    /// No such secret or version, or not a valid secret path.
    Missing,
    /// The version exists but is deleted or destroyed; its metadata.
    Gone { metadata: Value },
    /// The version's data and metadata.
    Live {
        data: Map<String, Value>,
        metadata: Value,
    },
}

/// Reads one version (`None`: the current one) of the secret at `path`
/// through the mount's view. `GET data/<path>` and `sys/resolve` both read
/// through here, so there is one way to read a KV v2 secret. The caller has
/// authorised the read.
async fn read_secret_version(
    view: &View,
    path: &str,
    version: Option<u64>,
    now: i64,
) -> Result<VersionRead> {
    let Ok(path) = validate_path(path) else {
        return Ok(VersionRead::Missing);
    };
    // Twice at most: if the version record vanished between reading the
    // metadata and the record, a concurrent destroy or prune explains it.
    for attempt in 0..2 {
        let (Some(meta), _) = load_meta(view, path).await? else {
            return Ok(VersionRead::Missing);
        };
        let version = version.unwrap_or(meta.current_version);
        let Some(vm) = meta.versions.get(&version) else {
            return Ok(VersionRead::Missing);
        };
        let metadata = meta.version_json(version, vm);
        if !vm.is_live(now) {
            return Ok(VersionRead::Gone { metadata });
        }
        match read_version(view, path, &meta, version).await? {
            Some(data) => return Ok(VersionRead::Live { data, metadata }),
            None if attempt == 0 => continue,
            None => break,
        }
    }
    Err(Error::Integrity {
        key: format!("{} (a live version without its data)", meta_key(path)),
    })
}

/// A version's data, checked against the metadata that owns it.
async fn read_version(
    view: &View,
    path: &str,
    meta: &Meta,
    version: u64,
) -> Result<Option<Map<String, Value>>> {
    let key = version_key(path, version);
    let Some((record, _)) = view.get_json::<VersionRecord>(&key).await? else {
        return Ok(None);
    };
    if record.version != version || record.incarnation != meta.incarnation {
        return Err(Error::Integrity { key });
    }
    Ok(Some(record.data))
}

/// What a data write or patch asks for.
struct WriteRequest {
    data: Map<String, Value>,
    cas: Option<i64>,
}

fn parse_write(req: &Request, max_bytes: usize) -> Result<WriteRequest> {
    let data = match req.field("data") {
        None | Some(Value::Null) => return Err(Error::bad_request("no data provided")),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err(Error::bad_request(
                "data must be a JSON object of keys and values",
            ));
        }
    };
    let cas = match req.field("options") {
        None | Some(Value::Null) => None,
        Some(Value::Object(options)) => match options.get("cas") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_i64()
                    .ok_or_else(|| Error::bad_request("error parsing check-and-set parameter"))?,
            ),
            Some(Value::String(s)) => Some(
                s.trim()
                    .parse::<i64>()
                    .map_err(|_| Error::bad_request("error parsing check-and-set parameter"))?,
            ),
            Some(_) => return Err(Error::bad_request("error parsing check-and-set parameter")),
        },
        Some(_) => return Err(Error::bad_request("options must be a JSON object")),
    };
    check_size(&data, max_bytes)?;
    Ok(WriteRequest { data, cas })
}

/// The stored data may not outgrow what one request may carry; a chain of
/// patches could otherwise grow a secret without bound.
fn check_size(data: &Map<String, Value>, max_bytes: usize) -> Result<()> {
    let size = serde_json::to_vec(data)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > max_bytes {
        return Err(Error::bad_request(format!(
            "the secret is too large: {size} bytes of JSON, the limit is {max_bytes}"
        )));
    }
    Ok(())
}

/// Vault's check-and-set rules for a write against `meta`.
fn check_cas(cas: Option<i64>, required: bool, current: u64) -> Result<()> {
    match cas {
        None if required => Err(Error::bad_request(CAS_REQUIRED)),
        Some(c) if c < 0 || c as u64 != current => Err(Error::bad_request(CAS_MISMATCH)),
        _ => Ok(()),
    }
}

/// Appends a version to `meta`, pruning the oldest beyond the effective
/// maximum; returns the new version number and the versions pruned.
fn add_version(meta: &mut Meta, config: &KvConfig, now: i64, by: &str) -> (u64, Vec<u64>) {
    let version = meta.current_version + 1;
    meta.current_version = version;
    meta.updated = now;
    let after = effective_delete_after(config.delete_version_after, meta.delete_version_after);
    meta.versions.insert(
        version,
        VersionMeta {
            created: now,
            deletion: after
                .map(|secs| now.saturating_add((secs as i64).saturating_mul(1_000_000_000))),
            destroyed: false,
            created_by: by.to_string(),
        },
    );
    // As OpenBao does: the larger of the two settings, 10 when neither is set.
    let max = match meta.max_versions.max(config.max_versions) {
        0 => DEFAULT_MAX_VERSIONS,
        n => n,
    } as usize;
    let mut pruned = Vec::new();
    while meta.versions.len() > max {
        let (oldest, vm) = meta
            .versions
            .pop_first()
            .expect("more than max >= 1 versions");
        if !vm.destroyed {
            pruned.push(oldest);
        }
        meta.oldest_version = *meta
            .versions
            .keys()
            .next()
            .expect("at least the new version");
    }
    (version, pruned)
}

/// Vault: the secret's `delete_version_after` applies when shorter than the
/// mount's; zero means unset.
fn effective_delete_after(mount: u64, secret: u64) -> Option<u64> {
    match (mount, secret) {
        (0, 0) => None,
        (0, s) => Some(s),
        (m, 0) => Some(m),
        (m, s) => Some(m.min(s)),
    }
}

/// Who is writing, for [`VersionMeta::created_by`].
fn author(ctx: &Ctx<'_>) -> String {
    ctx.caller.map(Caller::actor).unwrap_or_default()
}

fn version_record(meta: &Meta, version: u64, data: Map<String, Value>) -> Vec<u8> {
    let record = VersionRecord {
        incarnation: meta.incarnation.clone(),
        version,
        data,
    };
    serde_json::to_vec(&record).expect("serialisable")
}

impl Kv {
    async fn data_write(&self, ctx: &Ctx<'_>, req: &Request, rest: &str) -> Result<Response> {
        let path = validate_write_path(rest)?;
        let write = parse_write(req, ctx.system.max_body_bytes())?;
        let warnings = unknown_params(req, &["data", "options"]);
        let config = load_config(&ctx.view).await?;
        let reply = self
            .modify(ctx, path, |meta, now| {
                let mut meta = meta.unwrap_or_else(|| Meta::new(now));
                check_cas(
                    write.cas,
                    config.cas_required || meta.cas_required,
                    meta.current_version,
                )?;
                let (version, pruned) = add_version(&mut meta, &config, now, &author(ctx));
                let reply = meta.version_json(version, &meta.versions[&version]);
                let record = version_record(&meta, version, write.data.clone());
                Ok(Outcome::Write(Change {
                    meta: Some(meta),
                    create: vec![(version, record)],
                    remove: pruned,
                    reply,
                }))
            })
            .await?;
        Ok(Response::with_warnings(
            Status::OK,
            reply,
            warnings.unwrap_or_default(),
        ))
    }

    /// JSON merge patch (RFC 7396) of the latest version into a new version.
    /// Needs a live latest version, as in Vault.
    async fn data_patch(&self, ctx: &Ctx<'_>, req: &Request, rest: &str) -> Result<Response> {
        let path = validate_write_path(rest)?;
        let max_bytes = ctx.system.max_body_bytes();
        let patch = parse_write(req, max_bytes)?;
        let config = load_config(&ctx.view).await?;
        let view = &ctx.view;
        let _guard = self.lock_path(path).await;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (Some(mut meta), Some(generation)) = load_meta(view, path).await? else {
                // OpenBao answers a patch of nothing with a bare 404.
                return Ok(Response::Status(Status::NOT_FOUND));
            };
            let now = ctx.system.now().nanos();
            let current = meta.current_version;
            let Some(vm) = meta.versions.get(&current) else {
                return Ok(Response::Status(Status::NOT_FOUND));
            };
            if !vm.is_live(now) {
                return Ok(Response::Vault {
                    status: Status::NOT_FOUND,
                    data: Some(meta.version_json(current, vm)),
                    auth: None,
                    warnings: Vec::new(),
                });
            }
            check_cas(patch.cas, config.cas_required || meta.cas_required, current)?;
            let Some(mut data) = read_version(view, path, &meta, current).await? else {
                // Destroyed by another node since we read the metadata.
                continue;
            };
            merge_patch_map(&mut data, &patch.data);
            check_size(&data, max_bytes)?;
            let (version, pruned) = add_version(&mut meta, &config, now, &author(ctx));
            let reply = meta.version_json(version, &meta.versions[&version]);
            let record = version_record(&meta, version, data);
            let change = Change {
                meta: Some(meta),
                create: vec![(version, record)],
                remove: pruned,
                reply,
            };
            if let Some(reply) = commit(view, path, Some(generation), true, change, now).await? {
                return Ok(Response::data(reply));
            }
        }
        Err(conflict_error(path))
    }

    /// `DELETE data/<path>`: soft-deletes the latest version.
    async fn delete_latest(&self, ctx: &Ctx<'_>, rest: &str) -> Result<Response> {
        let path = validate_write_path(rest)?;
        self.modify(ctx, path, |meta, now| {
            let Some(mut meta) = meta else {
                return Ok(Outcome::Unchanged(()));
            };
            let current = meta.current_version;
            match meta.versions.get_mut(&current) {
                Some(vm) if vm.is_live(now) => {
                    vm.deletion = Some(now);
                    Ok(Outcome::Write(Change {
                        meta: Some(meta),
                        create: vec![],
                        remove: vec![],
                        reply: (),
                    }))
                }
                _ => Ok(Outcome::Unchanged(())),
            }
        })
        .await?;
        Ok(Response::NoContent)
    }

    async fn versions_op(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        rest: &str,
        op: VersionsOp,
    ) -> Result<Response> {
        let path = validate_write_path(rest)?;
        let versions = parse_versions(req.field("versions"))
            .map_err(Error::bad_request)?
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::bad_request(match op {
                    // Vault's own spelling, capital letters and all.
                    VersionsOp::Destroy => "no version number provided",
                    _ => "No version number provided",
                })
            })?;
        self.modify(ctx, path, |meta, now| {
            let Some(mut meta) = meta else {
                return Ok(Outcome::Unchanged(()));
            };
            let mut changed = false;
            let mut remove = Vec::new();
            for n in &versions {
                let Some(vm) = meta.versions.get_mut(n) else {
                    continue;
                };
                if vm.destroyed {
                    continue;
                }
                match op {
                    VersionsOp::Delete if !vm.is_deleted(now) => vm.deletion = Some(now),
                    VersionsOp::Undelete if vm.deletion.is_some() => vm.deletion = None,
                    VersionsOp::Destroy => {
                        vm.destroyed = true;
                        remove.push(*n);
                    }
                    _ => continue,
                }
                changed = true;
            }
            if !changed {
                return Ok(Outcome::Unchanged(()));
            }
            Ok(Outcome::Write(Change {
                meta: Some(meta),
                create: vec![],
                remove,
                reply: (),
            }))
        })
        .await?;
        Ok(Response::NoContent)
    }

    // ---- metadata ---------------------------------------------------------

    /// `POST metadata/<path>` creates or updates the settings; `PATCH`
    /// needs existing metadata and merges `custom_metadata` key by key.
    async fn metadata_write(
        &self,
        ctx: &Ctx<'_>,
        req: &Request,
        rest: &str,
        patch: bool,
    ) -> Result<Response> {
        let path = validate_write_path(rest)?;
        let max_versions = opt_field(req, "max_versions", parse_max_versions)?;
        let cas_required = opt_field(req, "cas_required", |v| parse_bool(v, "cas_required"))?;
        let delete_after = opt_field(req, "delete_version_after", |v| {
            parse_duration(v, "delete_version_after")
        })?;
        let custom = opt_field(req, "custom_metadata", |v| parse_custom_metadata(v, patch))?;
        refuse_metadata_cas(req)?;
        let found = self
            .modify(ctx, path, |meta, now| {
                let mut meta = match meta {
                    Some(m) => m,
                    None if patch => return Ok(Outcome::Unchanged(false)),
                    None => Meta::new(now),
                };
                if let Some(m) = max_versions {
                    meta.max_versions = m;
                }
                if let Some(c) = cas_required {
                    meta.cas_required = c;
                }
                if let Some(d) = delete_after {
                    meta.delete_version_after = d;
                }
                if let Some(custom) = &custom {
                    meta.custom_metadata = Some(if patch {
                        let mut merged = meta.custom_metadata.take().unwrap_or_default();
                        for (k, v) in custom {
                            match v {
                                Some(v) => merged.insert(k.clone(), v.clone()),
                                None => merged.remove(k),
                            };
                        }
                        merged
                    } else {
                        custom
                            .iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                            .collect()
                    });
                    check_custom_count(meta.custom_metadata.as_ref().map_or(0, BTreeMap::len))?;
                }
                meta.metadata_version += 1;
                meta.updated = now;
                Ok(Outcome::Write(Change {
                    meta: Some(meta),
                    create: vec![],
                    remove: vec![],
                    reply: true,
                }))
            })
            .await?;
        if !found {
            return Ok(Response::Status(Status::NOT_FOUND));
        }
        // As OpenBao: the write succeeds, with a warning, when it turns off a
        // check-and-set that the mount's configuration requires anyway.
        if cas_required == Some(false) && load_config(&ctx.view).await?.cas_required {
            return Ok(Response::warnings(vec![
                        "\"cas_required\" set to false, but is mandated by backend config. This value will be ignored."
                            .into(),
                    ]));
        }
        Ok(Response::NoContent)
    }

    /// Deletes the metadata and every version, for good.
    async fn metadata_delete(&self, ctx: &Ctx<'_>, rest: &str) -> Result<Response> {
        let path = validate_write_path(rest)?;
        self.modify(ctx, path, |meta, _now| {
            let Some(meta) = meta else {
                return Ok(Outcome::Unchanged(()));
            };
            let remove = meta
                .versions
                .iter()
                .filter(|(_, v)| !v.destroyed)
                .map(|(n, _)| *n)
                .collect();
            Ok(Outcome::Write(Change {
                meta: None,
                create: vec![],
                remove,
                reply: (),
            }))
        })
        .await?;
        Ok(Response::NoContent)
    }

    /// Read-modify-write of one secret: `f` gets the current metadata (if
    /// any) and the time, and says what to change. Serialised per path in
    /// this process, compare-and-swap across processes, retried on conflict.
    async fn modify<T, F>(&self, ctx: &Ctx<'_>, path: &str, mut f: F) -> Result<T>
    where
        F: FnMut(Option<Meta>, i64) -> Result<Outcome<T>>,
    {
        let view = &ctx.view;
        let _guard = self.lock_path(path).await;
        for _ in 0..MAX_CAS_ATTEMPTS {
            let (current, generation) = load_meta(view, path).await?;
            let existed = current.is_some();
            let now = ctx.system.now().nanos();
            let change = match f(current, now)? {
                Outcome::Unchanged(reply) => return Ok(reply),
                Outcome::Write(change) => change,
            };
            if let Some(reply) = commit(view, path, generation, existed, change, now).await? {
                return Ok(reply);
            }
        }
        Err(conflict_error(path))
    }
}

#[derive(Clone, Copy)]
enum VersionsOp {
    Delete,
    Undelete,
    Destroy,
}

/// Commits a change guarded by the generation of the metadata row it was
/// computed from (`existed`: that row held a live secret, not a tombstone);
/// `None` when another writer got there first.
async fn commit<T>(
    view: &View,
    path: &str,
    generation: Option<i64>,
    existed: bool,
    change: Change<T>,
    now: i64,
) -> Result<Option<T>> {
    let key = meta_key(path);
    let expect = generation.map_or(Expect::Absent, Expect::Generation);
    let mut writes = Vec::with_capacity(2 + change.create.len() + change.remove.len());
    match change.meta {
        Some(meta) => {
            writes.push(Write::Put {
                key,
                value: serde_json::to_vec(&meta).expect("serialisable"),
                expect,
            });
            if !existed {
                // The secret appears in listings in the same commit.
                writes.push(Write::Put {
                    key: index_key(path),
                    value: b"{}".to_vec(),
                    expect: Expect::Absent,
                });
            }
        }
        // Nothing to delete.
        None if !existed => return Ok(Some(change.reply)),
        None => {
            // A tombstone, not a deletion: see `load_meta`.
            let tombstone = Meta {
                deleted: true,
                ..Meta::new(now)
            };
            writes.push(Write::Put {
                key,
                value: serde_json::to_vec(&tombstone).expect("serialisable"),
                expect,
            });
            writes.push(Write::Delete {
                key: index_key(path),
                expect: None,
            });
        }
    }
    for (version, value) in change.create {
        writes.push(Write::Put {
            key: version_key(path, version),
            value,
            expect: Expect::Absent,
        });
    }
    for version in change.remove {
        writes.push(Write::Delete {
            key: version_key(path, version),
            expect: None,
        });
    }
    Ok(view.try_commit(writes).await?.then_some(change.reply))
}

/// Every attempt lost its compare-and-swap to writers on other nodes:
/// nothing was written, and the client may retry (409).
fn conflict_error(path: &str) -> Error {
    Error::Conflict {
        key: meta_key(path),
    }
}

async fn metadata_read(view: &View, rest: &str) -> Result<Response> {
    let Ok(path) = validate_path(rest) else {
        return Ok(not_found());
    };
    match load_meta(view, path).await?.0 {
        Some(meta) => Ok(Response::data(meta.to_json())),
        None => Ok(not_found()),
    }
}

/// The live metadata of `path`, and the generation of its row.
///
/// A tombstone reads as "no secret" but keeps its generation. Deleting the
/// row instead would let a re-created secret start again at generation 1,
/// and a writer on another node that read the old secret at generation `g`
/// could then commit its stale metadata over the new secret once that
/// reached `g` too (the ABA problem), silently dropping acknowledged
/// writes. With tombstones a row's generation only ever grows.
async fn load_meta(view: &View, path: &str) -> Result<(Option<Meta>, Option<i64>)> {
    Ok(match view.get_json::<Meta>(&meta_key(path)).await? {
        Some((meta, generation)) => ((!meta.deleted).then_some(meta), Some(generation)),
        None => (None, None),
    })
}

/// `LIST metadata/<folder>`: the folder's secrets and sub-folders (ending in
/// `/`), sorted. At most [`MAX_LIST`] per call (R-ACL-3); `?limit=` asks for
/// fewer, `?after=<key>` continues after a key of an earlier page. A
/// truncated answer says so in `warnings`.
async fn list(view: &View, req: &Request, rest: &str) -> Result<Response> {
    let folder = rest.trim_end_matches('/');
    let prefix = if folder.is_empty() {
        String::new()
    } else {
        validate_path(folder).map_err(Error::bad_request)?;
        format!("{folder}/")
    };
    let after = req.query("after").unwrap_or_default();
    if after.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "after must not contain control characters",
        ));
    }
    let limit = match req.query("limit") {
        None | Some("") => MAX_LIST,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n <= 0 => MAX_LIST,
            Ok(n) => (n as u64).min(MAX_LIST as u64) as usize,
            Err(_) => return Err(Error::bad_request("limit must be an integer")),
        },
    };
    let mut keys = view.list(&index_key(&prefix), after, limit + 1).await?;
    if keys.is_empty() {
        return Ok(not_found());
    }
    let warnings = (keys.len() > limit).then(|| {
        keys.truncate(limit);
        vec![format!(
            "only the first {limit} keys are listed; continue with ?after={}",
            keys.last().map(String::as_str).unwrap_or_default()
        )]
    });
    Ok(Response::with_warnings(
        Status::OK,
        json!({ "keys": keys }),
        warnings.unwrap_or_default(),
    ))
}

// ---- input ------------------------------------------------------------------

/// `data/app` → (`data`, `app`); `config` → (`config`, ``).
fn split(rel: &str) -> (&str, &str) {
    rel.split_once('/').unwrap_or((rel, ""))
}

/// A secret path: non-empty, bounded, no empty, `.` or `..` segments, no
/// control characters, no trailing slash.
fn validate_path(path: &str) -> std::result::Result<&str, String> {
    if path.is_empty() {
        return Err("a secret path is required".into());
    }
    if path.len() > MAX_PATH_LEN {
        return Err(format!(
            "the secret path is longer than {MAX_PATH_LEN} bytes"
        ));
    }
    if path.ends_with('/') {
        return Err("cannot write to a path ending in '/'".into());
    }
    if path.chars().any(char::is_control) {
        return Err("the secret path must not contain control characters".into());
    }
    if path
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err("the secret path must not contain empty, '.' or '..' segments".into());
    }
    Ok(path)
}

fn validate_write_path(path: &str) -> Result<&str> {
    validate_path(path).map_err(Error::bad_request)
}

/// A field that may be absent or null, parsed when present.
fn opt_field<T>(
    req: &Request,
    name: &str,
    parse: impl FnOnce(&Value) -> Result<T>,
) -> Result<Option<T>> {
    match req.field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => parse(v).map(Some),
    }
}

fn parse_max_versions(v: &Value) -> Result<u32> {
    let n = match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }
    .ok_or_else(|| Error::bad_request("max_versions must be an integer"))?;
    u32::try_from(n)
        .map_err(|_| Error::bad_request("max_versions must be between 0 and 4294967295"))
}

fn parse_bool(v: &Value, name: &str) -> Result<bool> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if matches!(s.as_str(), "true" | "1") => Ok(true),
        Value::String(s) if matches!(s.as_str(), "false" | "0") => Ok(false),
        _ => Err(Error::bad_request(format!("{name} must be true or false"))),
    }
}

/// Seconds, or a duration string (`"90s"`, `"1h30m"`, `"7d"`). Negative
/// durations are refused, as Vault's documentation says.
fn parse_duration(v: &Value, name: &str) -> Result<u64> {
    let bad = || {
        Error::bad_request(format!(
            "{name} must be a non-negative duration such as \"30m\", \"1h\" or 3600"
        ))
    };
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => zafe_engine::parse_duration(s).ok_or_else(bad),
        _ => Err(bad()),
    }
}

/// OpenBao's metadata check-and-set is not implemented: refuse to turn it on
/// rather than pretend it is enforced.
fn refuse_metadata_cas(req: &Request) -> Result<()> {
    match opt_field(req, "metadata_cas_required", |v| {
        parse_bool(v, "metadata_cas_required")
    })? {
        Some(true) => Err(Error::bad_request(
            "metadata_cas_required is not supported by Zafe",
        )),
        _ => Ok(()),
    }
}

/// `custom_metadata`: string values (numbers and booleans are converted as
/// Vault's weak decoding does). With `patch`, a null value removes the key.
fn parse_custom_metadata(v: &Value, patch: bool) -> Result<BTreeMap<String, Option<String>>> {
    let Value::Object(map) = v else {
        return Err(Error::bad_request(
            "custom_metadata must be a JSON object of strings",
        ));
    };
    check_custom_count(map.len())?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if k.is_empty() || k.len() > MAX_CUSTOM_KEY_LEN {
            return Err(Error::bad_request(format!(
                "custom_metadata validation failed: length of key {k:?} is {} but must be 0 < len(key) <= {MAX_CUSTOM_KEY_LEN}",
                k.len()
            )));
        }
        let value = match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
            Value::Null if patch => None,
            _ => {
                return Err(Error::bad_request(format!(
                    "custom_metadata validation failed: the value of key {k:?} must be a string"
                )));
            }
        };
        if k.chars().any(char::is_control)
            || value
                .as_deref()
                .is_some_and(|s| s.chars().any(char::is_control))
        {
            return Err(Error::bad_request(format!(
                "custom_metadata validation failed: the key {k:?} or its value contains unprintable characters"
            )));
        }
        if let Some(s) = &value
            && s.len() > MAX_CUSTOM_VALUE_LEN
        {
            return Err(Error::bad_request(format!(
                "custom_metadata validation failed: length of value for key {k:?} is {} but must be 0 < len(value) <= {MAX_CUSTOM_VALUE_LEN}",
                s.len()
            )));
        }
        out.insert(k.clone(), value);
    }
    Ok(out)
}

fn check_custom_count(n: usize) -> Result<()> {
    if n > MAX_CUSTOM_KEYS {
        return Err(Error::bad_request(format!(
            "custom_metadata validation failed: payload must contain at most {MAX_CUSTOM_KEYS} keys, provided {n}"
        )));
    }
    Ok(())
}

/// `versions` as Vault takes it: a list of integers (or integer strings),
/// or one string of comma-separated integers.
fn parse_versions(v: Option<&Value>) -> std::result::Result<Option<Vec<u64>>, String> {
    let bad = || "versions must be a list of version numbers".to_string();
    let one = |v: &Value| match v {
        Value::Number(n) => n.as_u64().ok_or_else(bad),
        Value::String(s) => s.trim().parse::<u64>().map_err(|_| bad()),
        _ => Err(bad()),
    };
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(one)
            .collect::<std::result::Result<_, _>>()
            .map(Some),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(Some(vec![])),
        Some(Value::String(s)) => s
            .split(',')
            .map(|p| p.trim().parse::<u64>().map_err(|_| bad()))
            .collect::<std::result::Result<_, _>>()
            .map(Some),
        Some(n @ Value::Number(_)) => one(n).map(|n| Some(vec![n])),
        Some(_) => Err(bad()),
    }
}

/// Vault's warning for body fields an endpoint does not know.
fn unknown_params(req: &Request, known: &[&str]) -> Option<Vec<String>> {
    let body = req.body.as_ref()?.as_object()?;
    let unknown: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| !known.contains(k))
        .collect();
    (!unknown.is_empty()).then(|| {
        vec![format!(
            "Endpoint ignored these unrecognized parameters: [{}]",
            unknown.join(" ")
        )]
    })
}

// ---- output -----------------------------------------------------------------

/// Vault's bare 404 for a secret that does not exist.
fn not_found() -> Response {
    Response::Json(Status::NOT_FOUND, json!({ "errors": [] }))
}

/// RFC 7396 JSON merge patch of `patch` into `target`.
fn merge_patch_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (k, v) in patch {
        match v {
            Value::Null => {
                target.remove(k);
            }
            Value::Object(p) => match target.get_mut(k) {
                Some(Value::Object(t)) => merge_patch_map(t, p),
                _ => {
                    let mut fresh = Map::new();
                    merge_patch_map(&mut fresh, p);
                    target.insert(k.clone(), Value::Object(fresh));
                }
            },
            other => {
                target.insert(k.clone(), other.clone());
            }
        }
    }
}

/// RFC 3339 in UTC with nanoseconds, trailing zeros dropped, as Go's
/// `time.RFC3339Nano` (and so Vault) prints it.
pub fn rfc3339(ns: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)) else {
        return String::new();
    };
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Seconds as Go prints a `time.Duration`: `0s`, `45s`, `10m0s`, `1h0m0s`.
pub fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_like_go() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(1_795_500_821_156_086_990),
            "2026-11-24T06:13:41.15608699Z"
        );
        assert_eq!(rfc3339(1_795_500_821_000_000_000), "2026-11-24T06:13:41Z");
        assert_eq!(
            rfc3339(1_795_500_821_000_000_001),
            "2026-11-24T06:13:41.000000001Z"
        );
    }

    #[test]
    fn durations_print_like_go() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(30), "30s");
        assert_eq!(go_duration(600), "10m0s");
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(5405), "1h30m5s");
        assert_eq!(go_duration(172_800), "48h0m0s");
    }

    #[test]
    fn paths_are_validated() {
        for good in ["a", "a/b", "app/prod/db", "with space", "ünï"] {
            assert!(validate_path(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_PATH_LEN + 1);
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "..",
            ".",
            "a/./b",
            "a\0b",
            "a\nb",
            long.as_str(),
        ] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "x": [1]})
            .as_object()
            .unwrap()
            .clone();
        let patch =
            json!({"a": "z", "c": {"f": null, "h": {"i": null, "j": 1}}, "x": null, "n": 2});
        merge_patch_map(&mut target, patch.as_object().unwrap());
        assert_eq!(
            Value::Object(target),
            json!({"a": "z", "c": {"d": "e", "h": {"j": 1}}, "n": 2})
        );
    }

    #[test]
    fn versions_parse_like_vault() {
        assert_eq!(parse_versions(Some(&json!([1, "2"]))), Ok(Some(vec![1, 2])));
        assert_eq!(parse_versions(Some(&json!("3, 4"))), Ok(Some(vec![3, 4])));
        assert_eq!(parse_versions(Some(&json!(5))), Ok(Some(vec![5])));
        assert_eq!(parse_versions(None), Ok(None));
        assert!(parse_versions(Some(&json!([-1]))).is_err());
        assert!(parse_versions(Some(&json!({"a": 1}))).is_err());
        assert!(parse_versions(Some(&json!("1,x"))).is_err());
    }

    #[test]
    fn pruning_keeps_the_larger_maximum_and_sets_oldest() {
        let config = KvConfig::default();
        let mut meta = Meta::new(1);
        for i in 0..12 {
            add_version(&mut meta, &config, 10 + i, "");
        }
        assert_eq!(
            meta.versions.keys().copied().collect::<Vec<_>>(),
            (3..=12).collect::<Vec<_>>()
        );
        assert_eq!(meta.oldest_version, 3);
        meta.max_versions = 2;
        let config = KvConfig {
            max_versions: 5,
            ..Default::default()
        };
        let (v, pruned) = add_version(&mut meta, &config, 100, "t");
        assert_eq!(v, 13);
        assert_eq!(pruned, vec![3, 4, 5, 6, 7, 8]);
        assert_eq!(meta.oldest_version, 9);
    }

    #[test]
    fn the_shorter_delete_after_wins() {
        assert_eq!(effective_delete_after(0, 0), None);
        assert_eq!(effective_delete_after(3600, 0), Some(3600));
        assert_eq!(effective_delete_after(0, 60), Some(60));
        assert_eq!(effective_delete_after(3600, 7200), Some(3600));
        assert_eq!(effective_delete_after(3600, 1800), Some(1800));
    }
}
