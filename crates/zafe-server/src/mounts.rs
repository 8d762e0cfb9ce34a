//! The mount table and the router: which engine serves which path prefix
//! (`secret/` → KV v2, `transit/` → transit, `auth/approle/` → AppRole...).
//!
//! The table lives behind the barrier at `core/mounts`. Each mount has a
//! random uuid, and its engine's storage is `logical/<uuid>/` (or
//! `auth/<uuid>/`), so a path is never reused by a later mount at the same
//! place, and disabling a mount removes exactly its rows.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::barrier::Expect;
use zafe_engine::{Ctx, Engine, Mount, View};
pub use zafe_engine::{parse_duration, parse_ttl};

use crate::core::{Core, Request, Response};
use crate::error::{Error, Result};

pub(crate) const TABLE_KEY: &str = "core/mounts";

/// Paths no secrets engine may be mounted at.
const RESERVED: &[&str] = &["sys/", "auth/", "identity/", "cubbyhole/", "v1/"];

/// One row of the mount table: an engine or auth method mounted at a path,
/// with Vault's mount settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MountEntry {
    /// With a trailing slash: `secret/`, `auth/approle/`.
    pub path: String,
    /// Engine kind: `kv`, `transit`, `token`, `approle`.
    pub kind: String,
    /// Random, fixed at creation. Names the mount's storage prefix
    /// (`logical/<uuid>/` or `auth/<uuid>/`), so a later mount at the same path
    /// never sees this one's data.
    pub uuid: String,
    /// Vault's mount accessor: `<kind>_<8 hex digits>` (`auth_<kind>_...` for an
    /// auth method).
    pub accessor: String,
    /// Free text set by whoever enabled or tuned the mount.
    #[serde(default)]
    pub description: String,
    /// Engine options as Vault passes them (for KV, `version` is always `2`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Default lease TTL in seconds; 0 means the system default.
    #[serde(default)]
    pub default_lease_ttl: u64,
    /// Maximum lease TTL in seconds; 0 means the system maximum.
    #[serde(default)]
    pub max_lease_ttl: u64,
    /// An auth method (under `auth/`) rather than a secrets engine.
    #[serde(default)]
    pub auth: bool,
    /// When the mount was enabled (Unix seconds).
    #[serde(default)]
    pub created_at: i64,
}

impl MountEntry {
    /// A new mount of engine `kind` at `path` (with its trailing slash), with a
    /// fresh uuid and accessor and no options or TTLs.
    /// A new mount created at `now` (Unix seconds).
    pub fn new(path: &str, kind: &str, auth: bool, now: i64) -> Self {
        let uuid = uuid::Uuid::new_v4().to_string();
        let short = &uuid[..8];
        Self {
            path: path.to_string(),
            kind: kind.to_string(),
            accessor: format!(
                "{}_{short}",
                if auth {
                    format!("auth_{kind}")
                } else {
                    kind.to_string()
                }
            ),
            uuid,
            description: String::new(),
            options: BTreeMap::new(),
            default_lease_ttl: 0,
            max_lease_ttl: 0,
            auth,
            created_at: now,
        }
    }

    /// The mount as its engine sees it.
    pub(crate) fn engine_mount(&self) -> Mount {
        Mount {
            path: self.path.clone(),
            kind: self.kind.clone(),
            uuid: self.uuid.clone(),
            default_lease_ttl: self.default_lease_ttl,
            max_lease_ttl: self.max_lease_ttl,
        }
    }

    /// Where this mount's engine keeps its data.
    pub(crate) fn storage_prefix(&self) -> String {
        format!(
            "{}/{}/",
            if self.auth { "auth" } else { "logical" },
            self.uuid
        )
    }

    /// Vault's JSON for one mount in `sys/mounts` and `sys/auth`.
    pub(crate) fn to_vault_json(&self) -> Value {
        json!({
            "type": self.kind,
            "description": self.description,
            "accessor": self.accessor,
            "uuid": self.uuid,
            "config": if self.auth {
                json!({
                    "default_lease_ttl": self.default_lease_ttl,
                    "max_lease_ttl": self.max_lease_ttl,
                    "force_no_cache": false,
                    "token_type": "default-service",
                })
            } else {
                json!({
                    "default_lease_ttl": self.default_lease_ttl,
                    "max_lease_ttl": self.max_lease_ttl,
                    "force_no_cache": false,
                })
            },
            "options": if self.options.is_empty() { Value::Null } else { json!(self.options) },
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
            "plugin_version": "",
            "running_plugin_version": "",
            "running_sha256": "",
        })
    }
}

/// The whole mount table, as stored behind the barrier at `core/mounts`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MountTable {
    /// Every mount, in the order they were enabled.
    pub entries: Vec<MountEntry>,
}

/// What serves a mount.
#[derive(Clone)]
pub enum Handler {
    /// The token store's endpoints (`auth/token/`): part of the core, not an engine.
    TokenStore,
    /// An engine, which sees only the engine contract.
    Engine(Arc<dyn Engine>),
}

/// A mount with what serves it: one entry of the [`Router`].
#[derive(Clone)]
pub struct Mounted {
    /// The mount table's row.
    pub entry: MountEntry,
    /// The mount as its engine may know it.
    pub mount: Mount,
    /// The token store or the engine instance, kept across reloads of the
    /// table while the mount lives.
    pub handler: Handler,
}

/// The live routing table: longest prefix first.
#[derive(Clone, Default)]
pub struct Router {
    mounts: Vec<Mounted>,
}

impl Router {
    /// The routing table for `table`. An engine that `previous` already ran for the same mount
    /// (same uuid and kind) is kept, so engine state such as write locks lives exactly as long
    /// as its mount, across reloads.
    pub fn build(table: &MountTable, previous: Option<&Router>, engines: Engines) -> Self {
        let mut mounts: Vec<Mounted> = table
            .entries
            .iter()
            .map(|entry| {
                let kept = previous.and_then(|p| {
                    p.mounts
                        .iter()
                        .find(|m| m.entry.uuid == entry.uuid && m.entry.kind == entry.kind)
                });
                let handler = match kept {
                    Some(m) => m.handler.clone(),
                    None => handler_for(entry, engines),
                };
                Mounted {
                    handler,
                    mount: entry.engine_mount(),
                    entry: entry.clone(),
                }
            })
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.entry.path.len()));
        Self { mounts }
    }

    /// The mount serving `path`, and the path relative to it.
    pub fn resolve<'p>(&self, path: &'p str) -> Option<(&Mounted, &'p str)> {
        self.mounts.iter().find_map(|m| {
            if let Some(rest) = path.strip_prefix(m.entry.path.as_str()) {
                Some((m, rest))
            } else if path == m.entry.path.trim_end_matches('/') {
                Some((m, ""))
            } else {
                None
            }
        })
    }

    /// Every mounted entry, longest path first.
    pub fn entries(&self) -> impl Iterator<Item = &MountEntry> {
        self.mounts.iter().map(|m| &m.entry)
    }
}

/// The engines this server can mount: a new engine of a kind (`kv`, `transit`, `approle`), or
/// `None` for a kind it does not have. The binary passes `zafe_engines::build`; the core never
/// names an engine.
pub type Engines = fn(&str) -> Option<Arc<dyn Engine>>;

fn handler_for(entry: &MountEntry, engines: Engines) -> Handler {
    if entry.kind == "token" {
        return Handler::TokenStore;
    }
    match engines(&entry.kind) {
        Some(engine) => Handler::Engine(engine),
        // One mount whose engine cannot start (a mount table written by a newer Zafe) must not
        // take the others down: it answers 503 until fixed.
        None => {
            tracing::error!(mount = %entry.path, kind = %entry.kind, "no engine of this kind: the mount is unavailable");
            Handler::Engine(Arc::new(Unavailable))
        }
    }
}

/// Stands in for an engine that could not be built: every request gets a 503.
struct Unavailable;

#[async_trait::async_trait]
impl Engine for Unavailable {
    async fn handle(&self, ctx: &Ctx<'_>, _req: &Request, _rel: &str) -> Result<Response> {
        Err(Error::StorageUnavailable(format!(
            "the {} engine at {} is unavailable",
            ctx.mount.kind, ctx.mount.path
        )))
    }
}

/// The storage view of a mount: its engine's rows, and no one else's.
pub(crate) fn view_for(core: &Core, entry: &MountEntry) -> View {
    View::new(core.barrier.clone(), entry.storage_prefix())
}

/// Checks and normalises a mount path: trailing slash, no empty or dot
/// segments, not reserved, not nested in or around another mount.
pub(crate) fn normalise_path(raw: &str, auth: bool, existing: &MountTable) -> Result<String> {
    let trimmed = raw.trim_matches('/');
    if trimmed.is_empty()
        || trimmed.len() > 200
        || trimmed
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        || trimmed
            .chars()
            .any(|c| c.is_control() || c == '*' || c == '+')
    {
        return Err(Error::bad_request(format!("invalid mount path {raw:?}")));
    }
    let path = if auth {
        format!("auth/{trimmed}/")
    } else {
        format!("{trimmed}/")
    };
    if !auth && RESERVED.iter().any(|r| path.starts_with(r)) {
        return Err(Error::bad_request(format!(
            "cannot mount at {path:?}: the path is reserved"
        )));
    }
    for entry in &existing.entries {
        if entry.path == path {
            return Err(Error::bad_request(format!(
                "path is already in use at {path}"
            )));
        }
        if path.starts_with(&entry.path) || entry.path.starts_with(&path) {
            return Err(Error::bad_request(format!(
                "cannot mount at {path}: it overlaps the mount at {}",
                entry.path
            )));
        }
    }
    Ok(path)
}

/// Reads the table, creating the default mounts (`secret/` KV v2 and the
/// token store at `auth/token/`) the first time.
pub(crate) async fn load_or_create(core: &Arc<Core>) -> Result<MountTable> {
    if let Some(record) = core.barrier.get(TABLE_KEY).await? {
        return serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: TABLE_KEY.into(),
        });
    }
    let mut secret = MountEntry::new("secret/", "kv", false, core.now_secs());
    secret.options.insert("version".into(), "2".into());
    secret.description = "key/value secret storage".into();
    let mut token = MountEntry::new("auth/token/", "token", true, core.now_secs());
    token.description = "token based credentials".into();
    let table = MountTable {
        entries: vec![secret, token],
    };
    match core
        .barrier
        .put(
            TABLE_KEY,
            &serde_json::to_vec(&table).expect("serialisable"),
            Expect::Absent,
        )
        .await
    {
        Ok(_) => Ok(table),
        // Another node created it first: use theirs.
        Err(crate::barrier::BarrierError::Conflict { .. }) => Box::pin(load_or_create(core)).await,
        Err(e) => Err(e.into()),
    }
}

/// Applies `change` to the stored table with compare-and-swap, then
/// rebuilds the router.
pub(crate) async fn modify<F>(core: &Arc<Core>, mut change: F) -> Result<MountTable>
where
    F: FnMut(&mut MountTable) -> Result<()>,
{
    // Make sure the defaults exist first, so a change never starts from an
    // empty table.
    load_or_create(core).await?;
    let mut failure = None;
    core.barrier
        .update(TABLE_KEY, |current| {
            let parsed = current.map(serde_json::from_slice::<MountTable>);
            let mut table = match parsed {
                Some(Ok(table)) => table,
                _ => {
                    failure = Some(Error::Integrity {
                        key: TABLE_KEY.into(),
                    });
                    return None;
                }
            };
            match change(&mut table) {
                Ok(()) => Some(serde_json::to_vec(&table).expect("serialisable")),
                Err(e) => {
                    failure = Some(e);
                    None
                }
            }
        })
        .await?;
    if let Some(e) = failure {
        return Err(e);
    }
    core.reload_mounts().await
}

/// `sys/mounts` and `sys/auth` handlers.
pub(crate) async fn list(core: &Arc<Core>, auth: bool) -> Result<Response> {
    let router = core.router().await?;
    let mut map = serde_json::Map::new();
    for entry in router.entries().filter(|e| e.auth == auth) {
        let key = if auth {
            entry.path.trim_start_matches("auth/").to_string()
        } else {
            entry.path.clone()
        };
        map.insert(key, entry.to_vault_json());
    }
    // Vault also repeats the mounts at the top level; old clients read them there.
    Ok(Response::VaultWithTopLevel {
        data: Value::Object(map.clone()),
        top_level: map,
    })
}

/// `POST sys/mounts/<path>` and `sys/auth/<path>`: mounts an engine
/// (`type`, `description`, `options`, `config.*_lease_ttl`). A bad request if
/// the kind does not belong under that endpoint, the path is taken or
/// reserved, or a TTL does not parse.
pub(crate) async fn enable(
    core: &Arc<Core>,
    req: &Request,
    raw_path: &str,
    auth: bool,
) -> Result<()> {
    let kind = req
        .field("type")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_request("type is required"))?;
    let (kind, mut options) = normalise_kind(kind, req.field("options"))?;
    if auth != matches!(kind.as_str(), "approle" | "token") {
        return Err(Error::bad_request(format!(
            "{kind:?} is {} and cannot be enabled {}",
            if auth {
                "not an auth method"
            } else {
                "an auth method"
            },
            if auth {
                "under sys/auth"
            } else {
                "under sys/mounts"
            }
        )));
    }
    if kind == "token" {
        return Err(Error::bad_request(
            "the token auth method is always enabled at auth/token/",
        ));
    }
    let description = req
        .field("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let config = req.field("config");
    let ttl = |name: &str| config.and_then(|c| c.get(name)).map(parse_ttl).transpose();
    let default_lease_ttl = ttl("default_lease_ttl")?.unwrap_or(0);
    let max_lease_ttl = ttl("max_lease_ttl")?.unwrap_or(0);
    modify(core, |table| {
        let path = normalise_path(raw_path, auth, table)?;
        let mut entry = MountEntry::new(&path, &kind, auth, core.now_secs());
        entry.description = description.clone();
        entry.options = std::mem::take(&mut options);
        entry.default_lease_ttl = default_lease_ttl;
        entry.max_lease_ttl = max_lease_ttl;
        table.entries.push(entry);
        Ok(())
    })
    .await?;
    Ok(())
}

/// `DELETE sys/mounts/<path>` and `sys/auth/<path>`: unmounts and deletes
/// every record of the mount. Not mounted is not an error (as in Vault);
/// `auth/token/` cannot be disabled.
pub(crate) async fn disable(core: &Arc<Core>, raw_path: &str, auth: bool) -> Result<()> {
    let trimmed = raw_path.trim_matches('/');
    let path = if auth {
        format!("auth/{trimmed}/")
    } else {
        format!("{trimmed}/")
    };
    if path == "auth/token/" {
        return Err(Error::bad_request(
            "the token auth method cannot be disabled",
        ));
    }
    let mut removed = None;
    modify(core, |table| {
        if let Some(i) = table
            .entries
            .iter()
            .position(|e| e.path == path && e.auth == auth)
        {
            removed = Some(table.entries.remove(i));
        }
        Ok(())
    })
    .await?;
    // Vault answers 204 for a path that is not mounted, too.
    if let Some(entry) = removed {
        purge(core, &entry.storage_prefix()).await?;
    }
    Ok(())
}

/// `GET sys/mounts/<path>`: one mount's configuration.
pub(crate) async fn read_one(core: &Arc<Core>, raw_path: &str, auth: bool) -> Result<Response> {
    let entry = find(core, raw_path, auth).await?;
    let data = entry.to_vault_json();
    let top_level = data.as_object().cloned().unwrap_or_default();
    Ok(Response::VaultWithTopLevel { data, top_level })
}

/// `GET sys/mounts/<path>/tune`: the TTLs in force (the system maximum when
/// unset), description and options.
pub(crate) async fn read_tune(core: &Arc<Core>, raw_path: &str, auth: bool) -> Result<Response> {
    let entry = find(core, raw_path, auth).await?;
    let mut data = tune_data(&entry);
    if auth {
        data["token_type"] = json!("default-service");
    }
    Ok(Response::data(data))
}

fn tune_data(entry: &MountEntry) -> Value {
    // Vault reports the TTLs in force: the system default when unset.
    json!({
        "default_lease_ttl": if entry.default_lease_ttl == 0 { crate::tokens::SYSTEM_MAX_TTL as u64 } else { entry.default_lease_ttl },
        "max_lease_ttl": if entry.max_lease_ttl == 0 { crate::tokens::SYSTEM_MAX_TTL as u64 } else { entry.max_lease_ttl },
        "force_no_cache": false,
        "description": entry.description,
        "options": entry.options,
    })
}

/// `POST sys/mounts/<path>/tune`: changes the TTLs, description or options
/// of a mount. A KV mount's `version` option can only be `2`.
pub(crate) async fn tune(
    core: &Arc<Core>,
    req: &Request,
    raw_path: &str,
    auth: bool,
) -> Result<()> {
    let entry = find(core, raw_path, auth).await?;
    let default_lease_ttl = req.field("default_lease_ttl").map(parse_ttl).transpose()?;
    let max_lease_ttl = req.field("max_lease_ttl").map(parse_ttl).transpose()?;
    let description = req
        .field("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let options: Option<BTreeMap<String, String>> = match req.field("options") {
        Some(Value::Object(o)) => Some(
            o.iter()
                .map(|(k, v)| (k.clone(), value_string(v)))
                .collect(),
        ),
        _ => None,
    };
    if let Some(v) = options.as_ref().and_then(|o| o.get("version"))
        && entry.kind == "kv"
        && v != "2"
    {
        return Err(Error::bad_request("Zafe's KV engine is version 2 only"));
    }
    modify(core, |table| {
        let e = table
            .entries
            .iter_mut()
            .find(|e| e.uuid == entry.uuid)
            .ok_or_else(|| Error::bad_request("the mount was removed concurrently"))?;
        if let Some(t) = default_lease_ttl {
            e.default_lease_ttl = t;
        }
        if let Some(t) = max_lease_ttl {
            e.max_lease_ttl = t;
        }
        if let Some(d) = &description {
            e.description = d.clone();
        }
        if let Some(o) = &options {
            e.options.extend(o.clone());
        }
        Ok(())
    })
    .await?;
    Ok(())
}

async fn find(core: &Arc<Core>, raw_path: &str, auth: bool) -> Result<MountEntry> {
    let trimmed = raw_path.trim_matches('/');
    let path = if auth {
        format!("auth/{trimmed}/")
    } else {
        format!("{trimmed}/")
    };
    core.router()
        .await?
        .entries()
        .find(|e| e.path == path)
        .cloned()
        .ok_or_else(|| Error::bad_request(format!("no mount at {path}")))
}

/// `kv` + `options.version=2`, `kv-v2`, and the auth and transit kinds.
fn normalise_kind(
    kind: &str,
    options: Option<&Value>,
) -> Result<(String, BTreeMap<String, String>)> {
    let mut opts: BTreeMap<String, String> = match options {
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| (k.clone(), value_string(v)))
            .collect(),
        Some(Value::Null) | None => BTreeMap::new(),
        Some(_) => return Err(Error::bad_request("options must be an object")),
    };
    let kind = match kind {
        "kv-v2" => {
            opts.insert("version".into(), "2".into());
            "kv"
        }
        "kv" => {
            match opts.get("version").map(String::as_str) {
                Some("2") => {}
                None => {
                    opts.insert("version".into(), "2".into());
                }
                Some(v) => {
                    return Err(Error::bad_request(format!(
                        "KV version {v} is not supported: Zafe's KV engine is version 2"
                    )));
                }
            }
            "kv"
        }
        "transit" | "approle" | "token" => kind,
        other => {
            return Err(Error::bad_request(format!(
                "unknown engine type {other:?}: Zafe has kv (version 2), transit and approle"
            )));
        }
    };
    Ok((kind.to_string(), opts))
}

fn value_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Deletes every row under `prefix`, in batches.
async fn purge(core: &Arc<Core>, prefix: &str) -> Result<()> {
    let backend = core.backend().clone();
    loop {
        let keys = backend
            .keys(prefix, prefix, 500)
            .await
            .map_err(|e| Error::StorageUnavailable(e.to_string()))?;
        if keys.is_empty() {
            return Ok(());
        }
        let ops = keys
            .into_iter()
            .map(|key| zafe_storage::Op::Delete {
                key,
                condition: zafe_storage::Condition::Any,
            })
            .collect();
        crate::audit::hook::commit(&*backend, ops)
            .await
            .map_err(|e| Error::StorageUnavailable(e.to_string()))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine_of(router: &Router, path: &str) -> Arc<dyn Engine> {
        match &router.resolve(path).expect("mounted").0.handler {
            Handler::Engine(engine) => engine.clone(),
            Handler::TokenStore => panic!("{path} is the token store"),
        }
    }

    // An engine lives as long as its mount: a reload keeps the instance (and so its write
    // locks), a new mount at the same path gets a new one, and the token store is the core's.
    #[test]
    fn reloads_keep_each_mounts_engine() {
        let kv = MountEntry::new("secret/", "kv", false, 0);
        let token = MountEntry::new("auth/token/", "token", true, 0);
        let table = MountTable {
            entries: vec![kv.clone(), token],
        };
        let first = Router::build(&table, None, zafe_engines::build);
        let second = Router::build(&table, Some(&first), zafe_engines::build);
        assert!(Arc::ptr_eq(
            &engine_of(&first, "secret/data/x"),
            &engine_of(&second, "secret/data/x")
        ));
        assert!(matches!(
            second.resolve("auth/token/create").unwrap().0.handler,
            Handler::TokenStore
        ));
        let remounted = MountTable {
            entries: vec![MountEntry::new("secret/", "kv", false, 0)],
        };
        let third = Router::build(&remounted, Some(&second), zafe_engines::build);
        assert!(!Arc::ptr_eq(
            &engine_of(&second, "secret/data/x"),
            &engine_of(&third, "secret/data/x")
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Some(90));
        assert_eq!(parse_duration("90s"), Some(90));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("2d"), Some(172800));
        assert_eq!(parse_duration(""), Some(0));
        assert_eq!(parse_duration("5x"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("10m5"), None);
    }

    #[test]
    fn mount_paths() {
        let table = MountTable {
            entries: vec![MountEntry::new("secret/", "kv", false, 0)],
        };
        assert_eq!(normalise_path("team/", false, &table).unwrap(), "team/");
        assert_eq!(normalise_path("/team", false, &table).unwrap(), "team/");
        assert_eq!(
            normalise_path("approle", true, &table).unwrap(),
            "auth/approle/"
        );
        for bad in [
            "",
            "/",
            "a//b",
            "../x",
            "sys",
            "auth/x",
            "secret",
            "secret/nested",
            "a*",
            "x/./y",
        ] {
            assert!(normalise_path(bad, false, &table).is_err(), "{bad}");
        }
    }
}
