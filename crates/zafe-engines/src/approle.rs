//! The AppRole auth method (R-AUTH-11): machines log in with a role id and a
//! secret id and get a token with the role's policies.
//!
//! Everything lives in the mount's own view:
//!
//! ```text
//! role/<name>                          the role
//! role_id/<HMAC(role id)>              role id index → role name
//! secret_id/<role uuid>/<HMAC(sid)>    a secret id: only its HMAC, never the secret
//! accessor/<role uuid>/<HMAC(acc)>     secret id accessor index → the HMAC above
//! ```
//!
//! Secret ids are 256-bit `zafe_sid_...` tokens (R-AUTH-5, R-AUTH-14) and
//! stored only as HMAC-SHA256 under a key derived (HKDF) from the token key
//! for this purpose. Keys are per role *uuid*, not name, so the secret ids of
//! a deleted role never work for a new role of the same name. A login with
//! a wrong role id and one with a wrong secret id do the same reads and get
//! the same error. Use counts and TTLs are enforced with compare-and-swap;
//! CIDR bindings are checked against the real client address (resolved
//! through trusted proxies only, R-OPS-2), at login for the secret id and on
//! every use for the token.

use std::collections::BTreeMap;
use std::net::IpAddr;

use async_trait::async_trait;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_core::crypto::{constant_time_eq, hmac_sha256};
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};

use zafe_engine::{
    Ctx, Engine, Error, Expect, Grant, LifetimeRequest, Operation, Request, Response, Result,
    Status, Write, params, rfc3339,
};

/// HKDF purpose of the key that hashes role ids, secret ids and accessors.
const HMAC_PURPOSE: &str = "zafe/v1/approle-hmac";
const MAX_RETRIES: usize = 64;
const PAGE: usize = 500;
/// A role-sized record that logins with an unknown role id read instead of
/// the index entry and the role, so that they take as long as logins with a
/// known role id and a wrong secret id.
const DECOY_KEY: &str = "decoy";
/// The one error for every failed login, whatever was wrong.
const INVALID: &str = "invalid role or secret ID";

/// The AppRole auth method of one mount.
pub struct AppRole;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Role {
    name: String,
    /// Random and never reused: the storage folder of this role's secret ids.
    uuid: String,
    role_id: String,
    bind_secret_id: bool,
    secret_id_bound_cidrs: Vec<IpNet>,
    secret_id_num_uses: u32,
    secret_id_ttl: i64,
    token_policies: Vec<String>,
    /// Set through the legacy `policies` name: read shows it back.
    legacy_policies: bool,
    token_ttl: i64,
    token_max_ttl: i64,
    token_explicit_max_ttl: i64,
    token_period: i64,
    token_num_uses: u32,
    token_no_default_policy: bool,
    token_bound_cidrs: Vec<IpNet>,
}

impl Role {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            uuid: uuid::Uuid::new_v4().to_string(),
            role_id: uuid::Uuid::new_v4().to_string(),
            bind_secret_id: true,
            secret_id_bound_cidrs: Vec::new(),
            secret_id_num_uses: 0,
            secret_id_ttl: 0,
            token_policies: Vec::new(),
            legacy_policies: false,
            token_ttl: 0,
            token_max_ttl: 0,
            token_explicit_max_ttl: 0,
            token_period: 0,
            token_num_uses: 0,
            token_no_default_policy: false,
            token_bound_cidrs: Vec::new(),
        }
    }

    /// OpenBao 2.7's shape for `GET role/<name>` (no role id, no secrets).
    fn to_vault_json(&self) -> Value {
        let mut data = json!({
            "bind_secret_id": self.bind_secret_id,
            "local_secret_ids": false,
            "secret_id_bound_cidrs": if self.secret_id_bound_cidrs.is_empty() { Value::Null } else { json!(strings(&self.secret_id_bound_cidrs)) },
            "secret_id_num_uses": self.secret_id_num_uses,
            "secret_id_ttl": self.secret_id_ttl,
            "token_bound_cidrs": strings(&self.token_bound_cidrs),
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_no_default_policy": self.token_no_default_policy,
            "token_num_uses": self.token_num_uses,
            "token_period": self.token_period,
            "token_policies": self.token_policies,
            "token_strictly_bind_ip": false,
            "token_ttl": self.token_ttl,
            "token_type": "default",
        });
        if self.legacy_policies {
            data["policies"] = json!(self.token_policies);
        }
        data
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct SecretIdEntry {
    /// The HMAC this entry is stored under, checked on every read.
    hash: String,
    accessor: String,
    created_at: i64,
    updated_at: i64,
    /// `None` never expires.
    expires_at: Option<i64>,
    ttl: i64,
    /// Uses left; 0 is unlimited.
    num_uses: u32,
    metadata: BTreeMap<String, String>,
    cidr_list: Vec<IpNet>,
    token_bound_cidrs: Vec<IpNet>,
}

impl SecretIdEntry {
    fn is_expired(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }

    fn to_vault_json(&self) -> Value {
        json!({
            "cidr_list": strings(&self.cidr_list),
            "creation_time": rfc3339(self.created_at),
            // Vault shows Go's zero time for "never".
            "expiration_time": self.expires_at.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), rfc3339),
            "last_updated_time": rfc3339(self.updated_at),
            "metadata": self.metadata,
            "secret_id_accessor": self.accessor,
            "secret_id_num_uses": self.num_uses,
            "secret_id_ttl": self.ttl,
            "token_bound_cidrs": strings(&self.token_bound_cidrs),
        })
    }
}

#[derive(Serialize, Deserialize)]
struct RoleIdIndex {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct AccessorIndex {
    hash: String,
    accessor: String,
}

fn strings(nets: &[IpNet]) -> Vec<String> {
    nets.iter().map(ToString::to_string).collect()
}

fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.is_empty() || nets.iter().any(|n| n.contains(&ip))
}

/// Every net of `inner` lies within one of `outer` (an empty `outer`
/// allows anything).
fn within(inner: &[IpNet], outer: &[IpNet]) -> bool {
    outer.is_empty() || inner.iter().all(|i| outer.iter().any(|o| o.contains(i)))
}

fn role_key(name: &str) -> String {
    format!("role/{name}")
}

fn secret_key(role: &Role, hash: &str) -> String {
    format!("secret_id/{}/{hash}", role.uuid)
}

fn accessor_key(role: &Role, hasher: &Hasher, accessor: &str) -> String {
    format!(
        "accessor/{}/{}",
        role.uuid,
        hasher.hash("accessor", accessor)
    )
}

/// The keyed hash for role ids, secret ids and accessors.
struct Hasher(SecretKey);

impl Hasher {
    fn new(ctx: &Ctx<'_>) -> Result<Self> {
        Ok(Self(ctx.system.derived_key(HMAC_PURPOSE)?))
    }

    /// Domain-separated, so a role id can never match a secret id.
    fn hash(&self, kind: &str, value: &str) -> String {
        hex::encode(hmac_sha256(&self.0, format!("{kind}\0{value}").as_bytes()))
    }
}

/// Role names: letters, digits, `_ - .`, up to 128 characters; lower-cased
/// (AppRole role names are case-insensitive).
fn role_name(raw: &str) -> Result<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        && raw != "."
        && raw != "..";
    if ok {
        Ok(raw.to_ascii_lowercase())
    } else {
        Err(Error::bad_request(format!(
            "invalid role name {raw:?}: use letters, digits, '_', '-' or '.' (up to 128)"
        )))
    }
}

fn no_role(name: &str) -> Error {
    Error::NotFound(format!("role {name:?} does not exist"))
}

#[async_trait]
impl Engine for AppRole {
    fn is_public(&self, rel_path: &str, op: Operation) -> bool {
        rel_path.trim_end_matches('/') == "login" && op == Operation::Write
    }

    async fn exists(&self, ctx: &Ctx<'_>, rel_path: &str) -> Result<bool> {
        // `role/<name>` distinguishes create from update, as in Vault.
        match rel_path.trim_end_matches('/').strip_prefix("role/") {
            Some(name) if !name.contains('/') => {
                Ok(ctx.view.get(&role_key(&role_name(name)?)).await?.is_some())
            }
            _ => Ok(true),
        }
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request, rel_path: &str) -> Result<Response> {
        let rel = rel_path.trim_end_matches('/');
        use Operation::*;
        if rel == "login" {
            return match req.operation {
                Write => login(ctx, req).await,
                _ => Err(Error::MethodNotAllowed("unsupported operation".into())),
            };
        }
        if rel == "role" {
            return match req.operation {
                List => list_roles(ctx, req).await,
                _ => Err(Error::MethodNotAllowed("unsupported operation".into())),
            };
        }
        if rel == "tidy/secret-id" {
            return match req.operation {
                Write => tidy(ctx, req),
                _ => Err(Error::MethodNotAllowed("unsupported operation".into())),
            };
        }
        let Some(rest) = rel.strip_prefix("role/") else {
            return Err(Error::NotFound("unsupported path".into()));
        };
        let (name, sub) = rest.split_once('/').unwrap_or((rest, ""));
        let name = role_name(name)?;
        match (sub, req.operation) {
            ("", Read) => read_role(ctx, &name).await,
            ("", Write) => write_role(ctx, req, &name).await,
            ("", Delete) => delete_role(ctx, &name).await,
            ("role-id", Read) => {
                let (role, _) = load_role(ctx, &name).await?.ok_or_else(|| no_role(&name))?;
                Ok(Response::data(json!({ "role_id": role.role_id })))
            }
            ("role-id", Write) => set_role_id(ctx, req, &name).await,
            ("secret-id", Write) => generate_secret_id(ctx, req, &name, None).await,
            ("secret-id", List) => list_secret_ids(ctx, req, &name).await,
            ("custom-secret-id", Write) => {
                let secret = params::string(req, "secret_id")?.unwrap_or_default();
                if secret.len() < 16 || secret.len() > 512 || secret.chars().any(char::is_control) {
                    return Err(Error::bad_request(
                        "secret_id must be 16 to 512 printable characters",
                    ));
                }
                generate_secret_id(ctx, req, &name, Some(secret)).await
            }
            ("secret-id/lookup", Write) => lookup_secret_id(ctx, req, &name).await,
            ("secret-id/destroy", Write | Delete) => destroy_secret_id(ctx, req, &name).await,
            ("secret-id-accessor/lookup", Write) => lookup_accessor(ctx, req, &name).await,
            ("secret-id-accessor/destroy", Write | Delete) => {
                destroy_accessor(ctx, req, &name).await
            }
            (
                ""
                | "role-id"
                | "secret-id"
                | "custom-secret-id"
                | "secret-id/lookup"
                | "secret-id/destroy"
                | "secret-id-accessor/lookup"
                | "secret-id-accessor/destroy",
                _,
            ) => Err(Error::MethodNotAllowed("unsupported operation".into())),
            _ => Err(Error::NotFound("unsupported path".into())),
        }
    }
}

async fn load_role(ctx: &Ctx<'_>, name: &str) -> Result<Option<(Role, i64)>> {
    ctx.view.get_json::<Role>(&role_key(name)).await
}

// ---- roles ----------------------------------------------------------------

async fn read_role(ctx: &Ctx<'_>, name: &str) -> Result<Response> {
    let (role, _) = load_role(ctx, name)
        .await?
        .ok_or_else(|| Error::NotFound(String::new()))?;
    Ok(Response::data(role.to_vault_json()))
}

async fn list_roles(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let limit = params::page_limit(req)?;
    let after = req.query("after").unwrap_or_default();
    let keys: Vec<String> = ctx
        .view
        .list("role/", after, limit)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect();
    if keys.is_empty() {
        return Err(Error::NotFound(String::new()));
    }
    Ok(Response::data(json!({ "keys": keys })))
}

/// Applies the request's fields to `role`; checks everything before any
/// write, so bad input changes nothing.
fn apply_role_fields(req: &Request, role: &mut Role) -> Result<()> {
    if let Some(v) = params::boolean(req, "bind_secret_id")? {
        role.bind_secret_id = v;
    }
    for name in ["bound_cidr_list", "secret_id_bound_cidrs"] {
        if let Some(v) = params::cidrs(req, name)? {
            role.secret_id_bound_cidrs = v;
        }
    }
    if let Some(v) = params::uint(req, "secret_id_num_uses")? {
        role.secret_id_num_uses = v;
    }
    if let Some(v) = params::duration(req, "secret_id_ttl")? {
        role.secret_id_ttl = v;
    }
    if let Some(v) = params::policies(req, "policies")? {
        role.token_policies = v;
        role.legacy_policies = true;
    }
    if let Some(v) = params::policies(req, "token_policies")? {
        role.token_policies = v;
    }
    if role.token_policies.iter().any(|p| p == "root") {
        return Err(Error::bad_request(
            "the root policy cannot be given through AppRole",
        ));
    }
    for (name, slot) in [
        ("token_ttl", &mut role.token_ttl),
        ("token_max_ttl", &mut role.token_max_ttl),
        ("token_explicit_max_ttl", &mut role.token_explicit_max_ttl),
    ] {
        if let Some(v) = params::duration(req, name)? {
            *slot = v;
        }
    }
    // The legacy name first, so that `token_period` wins when both are given.
    for name in ["period", "token_period"] {
        if let Some(v) = params::duration(req, name)? {
            role.token_period = v;
        }
    }
    if let Some(v) = params::uint(req, "token_num_uses")? {
        role.token_num_uses = v;
    }
    if let Some(v) = params::boolean(req, "token_no_default_policy")? {
        role.token_no_default_policy = v;
    }
    if let Some(v) = params::cidrs(req, "token_bound_cidrs")? {
        role.token_bound_cidrs = v;
    }
    match params::string(req, "token_type")?.as_deref() {
        None | Some("" | "service" | "default" | "default-service") => {}
        Some(other) => {
            return Err(Error::bad_request(format!(
                "unsupported token_type {other:?}: Zafe issues service tokens"
            )));
        }
    }
    if params::boolean(req, "enable_local_secret_ids")? == Some(true) {
        return Err(Error::bad_request("local secret ids are not supported"));
    }
    if role.token_max_ttl > 0 && role.token_ttl > role.token_max_ttl {
        return Err(Error::bad_request(
            "token_ttl cannot be greater than token_max_ttl",
        ));
    }
    if !role.bind_secret_id
        && role.secret_id_bound_cidrs.is_empty()
        && role.token_bound_cidrs.is_empty()
    {
        return Err(Error::bad_request(
            "at least one constraint should be enabled on the role: bind_secret_id, secret_id_bound_cidrs or token_bound_cidrs",
        ));
    }
    Ok(())
}

fn check_role_id(role_id: &str) -> Result<()> {
    if role_id.is_empty() || role_id.len() > 512 || role_id.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "role_id must be 1 to 512 printable characters",
        ));
    }
    Ok(())
}

async fn write_role(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let hasher = Hasher::new(ctx)?;
    for _ in 0..MAX_RETRIES {
        let current = load_role(ctx, name).await?;
        let mut role = current
            .as_ref()
            .map(|(r, _)| r.clone())
            .unwrap_or_else(|| Role::new(name));
        apply_role_fields(req, &mut role)?;
        let old_role_id = role.role_id.clone();
        if let Some(id) = params::string(req, "role_id")? {
            check_role_id(&id)?;
            role.role_id = id;
        }
        let mut writes = vec![Write::Put {
            key: role_key(name),
            value: serde_json::to_vec(&role).expect("serialisable"),
            expect: current
                .as_ref()
                .map_or(Expect::Absent, |(_, g)| Expect::Generation(*g)),
        }];
        if current.is_none() || old_role_id != role.role_id {
            if ctx
                .view
                .get(&format!(
                    "role_id/{}",
                    hasher.hash("role_id", &role.role_id)
                ))
                .await?
                .is_some()
            {
                return Err(Error::bad_request("role_id is already in use"));
            }
            writes.extend(role_id_swap(
                &hasher,
                current.as_ref().map(|(r, _)| r.role_id.as_str()),
                &role,
            ));
        }
        match ctx.view.commit(writes).await {
            Ok(()) => {
                ensure_decoy(ctx).await?;
                return Ok(Response::NoContent);
            }
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(
        "could not write the role: too many concurrent changes".into(),
    ))
}

/// Writes the decoy record once per mount (see [`DECOY_KEY`]).
async fn ensure_decoy(ctx: &Ctx<'_>) -> Result<()> {
    if ctx.view.get(DECOY_KEY).await?.is_some() {
        return Ok(());
    }
    let mut decoy = Role::new("decoy");
    decoy.token_policies = vec!["default".into()];
    match ctx.view.put_json(DECOY_KEY, &decoy, Expect::Absent).await {
        Ok(_) | Err(Error::Conflict { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The writes that point the role id index at `role` (and drop `old`).
fn role_id_swap(hasher: &Hasher, old: Option<&str>, role: &Role) -> Vec<Write> {
    let mut writes = Vec::new();
    if let Some(old) = old {
        writes.push(Write::Delete {
            key: format!("role_id/{}", hasher.hash("role_id", old)),
            expect: None,
        });
    }
    writes.push(Write::Put {
        key: format!("role_id/{}", hasher.hash("role_id", &role.role_id)),
        value: serde_json::to_vec(&RoleIdIndex {
            name: role.name.clone(),
        })
        .expect("serialisable"),
        expect: Expect::Absent,
    });
    writes
}

async fn set_role_id(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let id = params::string(req, "role_id")?.unwrap_or_default();
    check_role_id(&id)?;
    let hasher = Hasher::new(ctx)?;
    for _ in 0..MAX_RETRIES {
        let (mut role, generation) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
        if role.role_id == id {
            return Ok(Response::NoContent);
        }
        if ctx
            .view
            .get(&format!("role_id/{}", hasher.hash("role_id", &id)))
            .await?
            .is_some()
        {
            return Err(Error::bad_request("role_id is already in use"));
        }
        let old = std::mem::replace(&mut role.role_id, id.clone());
        let mut writes = vec![Write::Put {
            key: role_key(name),
            value: serde_json::to_vec(&role).expect("serialisable"),
            expect: Expect::Generation(generation),
        }];
        writes.extend(role_id_swap(&hasher, Some(&old), &role));
        match ctx.view.commit(writes).await {
            Ok(()) => return Ok(Response::NoContent),
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(
        "could not set the role id: too many concurrent changes".into(),
    ))
}

async fn delete_role(ctx: &Ctx<'_>, name: &str) -> Result<Response> {
    let Some((role, generation)) = load_role(ctx, name).await? else {
        return Ok(Response::NoContent);
    };
    let hasher = Hasher::new(ctx)?;
    ctx.view
        .commit(vec![
            Write::Delete {
                key: role_key(name),
                expect: Some(Expect::Generation(generation)),
            },
            Write::Delete {
                key: format!("role_id/{}", hasher.hash("role_id", &role.role_id)),
                expect: None,
            },
        ])
        .await?;
    // The secret ids are unreachable now (they live under the role's uuid);
    // remove them too.
    purge(ctx, &format!("secret_id/{}/", role.uuid)).await?;
    purge(ctx, &format!("accessor/{}/", role.uuid)).await?;
    Ok(Response::NoContent)
}

async fn purge(ctx: &Ctx<'_>, folder: &str) -> Result<()> {
    loop {
        let keys = ctx.view.list(folder, "", PAGE).await?;
        if keys.is_empty() {
            return Ok(());
        }
        let writes = keys
            .into_iter()
            .map(|k| Write::Delete {
                key: format!("{folder}{}", k.trim_end_matches('/')),
                expect: None,
            })
            .collect();
        ctx.view.commit(writes).await?;
    }
}

// ---- secret ids -----------------------------------------------------------

async fn generate_secret_id(
    ctx: &Ctx<'_>,
    req: &Request,
    name: &str,
    custom: Option<String>,
) -> Result<Response> {
    // Retried when a concurrent change to the role (another secret id being
    // created, say) wins the compare-and-swap on it.
    for _ in 0..MAX_RETRIES {
        let (role, generation) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
        if !role.bind_secret_id {
            return Err(Error::bad_request(
                "bind_secret_id is not set on this role: it does not use secret ids",
            ));
        }
        let metadata = params::string_map(req, "metadata")?.unwrap_or_default();
        params::check_meta(&metadata)?;
        if metadata.contains_key("role_name") {
            return Err(Error::bad_request("metadata cannot set role_name"));
        }
        let cidr_list = params::cidrs(req, "cidr_list")?.unwrap_or_default();
        if !within(&cidr_list, &role.secret_id_bound_cidrs) {
            return Err(Error::bad_request(
                "cidr_list must lie within the role's secret_id_bound_cidrs",
            ));
        }
        let token_bound_cidrs = params::cidrs(req, "token_bound_cidrs")?.unwrap_or_default();
        if !within(&token_bound_cidrs, &role.token_bound_cidrs) {
            return Err(Error::bad_request(
                "token_bound_cidrs must lie within the role's token_bound_cidrs",
            ));
        }
        let ttl = match params::duration(req, "ttl")? {
            Some(t) if role.secret_id_ttl > 0 && (t == 0 || t > role.secret_id_ttl) => {
                return Err(Error::bad_request(
                    "ttl cannot be longer than the role's secret_id_ttl",
                ));
            }
            Some(t) if t > 0 => t,
            _ => role.secret_id_ttl,
        };
        let num_uses = match params::uint(req, "num_uses")? {
            Some(n) if role.secret_id_num_uses > 0 && (n == 0 || n > role.secret_id_num_uses) => {
                return Err(Error::bad_request(
                    "num_uses cannot be higher than the role's secret_id_num_uses",
                ));
            }
            Some(n) if n > 0 => n,
            _ => role.secret_id_num_uses,
        };
        let hasher = Hasher::new(ctx)?;
        let secret = custom
            .clone()
            .unwrap_or_else(|| token::generate(TokenKind::SecretId));
        let hash = hasher.hash("secret_id", &secret);
        if custom.is_some() && ctx.view.get(&secret_key(&role, &hash)).await?.is_some() {
            return Err(Error::bad_request("SecretID is already registered"));
        }
        let now = ctx.system.now().secs();
        let entry = SecretIdEntry {
            hash: hash.clone(),
            accessor: uuid::Uuid::new_v4().to_string(),
            created_at: now,
            updated_at: now,
            expires_at: (ttl > 0).then_some(now + ttl),
            ttl,
            num_uses,
            metadata,
            cidr_list,
            token_bound_cidrs,
        };
        let writes = vec![
            Write::Put {
                key: secret_key(&role, &hash),
                value: serde_json::to_vec(&entry).expect("serialisable"),
                expect: Expect::Absent,
            },
            Write::Put {
                key: accessor_key(&role, &hasher, &entry.accessor),
                value: serde_json::to_vec(&AccessorIndex {
                    hash,
                    accessor: entry.accessor.clone(),
                })
                .expect("serialisable"),
                expect: Expect::Absent,
            },
            // The role exactly as read: a role deleted or changed meanwhile
            // fails the whole commit, so no secret id is added to a dead role.
            Write::Put {
                key: role_key(name),
                value: serde_json::to_vec(&role).expect("serialisable"),
                expect: Expect::Generation(generation),
            },
        ];
        match ctx.view.commit(writes).await {
            Ok(()) => {
                return Ok(Response::data(json!({
                    "secret_id": secret,
                    "secret_id_accessor": entry.accessor,
                    "secret_id_num_uses": entry.num_uses,
                    "secret_id_ttl": entry.ttl,
                })));
            }
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(
        "could not create the secret id: too many concurrent changes to the role".into(),
    ))
}

/// Reads a secret id entry, checking its stored hash; an expired one is
/// deleted and reported as absent.
async fn read_secret(
    ctx: &Ctx<'_>,
    role: &Role,
    hasher: &Hasher,
    hash: &str,
) -> Result<Option<(SecretIdEntry, i64)>> {
    let key = secret_key(role, hash);
    let Some((entry, generation)) = ctx.view.get_json::<SecretIdEntry>(&key).await? else {
        return Ok(None);
    };
    if !constant_time_eq(entry.hash.as_bytes(), hash.as_bytes()) {
        return Err(Error::Integrity { key });
    }
    if entry.is_expired(ctx.system.now().secs()) {
        ctx.view
            .commit(delete_secret_writes(role, hasher, &entry, None))
            .await?;
        return Ok(None);
    }
    Ok(Some((entry, generation)))
}

fn delete_secret_writes(
    role: &Role,
    hasher: &Hasher,
    entry: &SecretIdEntry,
    generation: Option<i64>,
) -> Vec<Write> {
    vec![
        Write::Delete {
            key: secret_key(role, &entry.hash),
            expect: generation.map(Expect::Generation),
        },
        Write::Delete {
            key: accessor_key(role, hasher, &entry.accessor),
            expect: None,
        },
    ]
}

async fn lookup_secret_id(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let (role, _) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
    let secret = params::string(req, "secret_id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::bad_request("missing secret_id"))?;
    let hasher = Hasher::new(ctx)?;
    match read_secret(ctx, &role, &hasher, &hasher.hash("secret_id", &secret)).await? {
        Some((entry, _)) => Ok(Response::data(entry.to_vault_json())),
        // Vault answers an unknown secret id with 204.
        None => Ok(Response::NoContent),
    }
}

async fn destroy_secret_id(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let (role, _) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
    let secret = params::string(req, "secret_id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::bad_request("missing secret_id"))?;
    let hasher = Hasher::new(ctx)?;
    if let Some((entry, _)) =
        read_secret(ctx, &role, &hasher, &hasher.hash("secret_id", &secret)).await?
    {
        ctx.view
            .commit(delete_secret_writes(&role, &hasher, &entry, None))
            .await?;
    }
    Ok(Response::NoContent)
}

/// The entry an accessor names, if it is live.
async fn by_accessor(
    ctx: &Ctx<'_>,
    role: &Role,
    hasher: &Hasher,
    accessor: &str,
) -> Result<Option<SecretIdEntry>> {
    let key = accessor_key(role, hasher, accessor);
    let Some((index, _)) = ctx.view.get_json::<AccessorIndex>(&key).await? else {
        return Ok(None);
    };
    if index.accessor != accessor {
        return Err(Error::Integrity { key });
    }
    Ok(read_secret(ctx, role, hasher, &index.hash)
        .await?
        .map(|(e, _)| e))
}

fn accessor_field(req: &Request) -> Result<String> {
    params::string(req, "secret_id_accessor")?
        .filter(|s| !s.is_empty() && s.len() <= 128)
        .ok_or_else(|| Error::bad_request("missing secret_id_accessor"))
}

async fn lookup_accessor(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let (role, _) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
    let accessor = accessor_field(req)?;
    let hasher = Hasher::new(ctx)?;
    let entry = by_accessor(ctx, &role, &hasher, &accessor)
        .await?
        .ok_or_else(|| {
            Error::NotFound(format!(
                "failed to find accessor entry for secret_id_accessor: {accessor:?}"
            ))
        })?;
    Ok(Response::data(entry.to_vault_json()))
}

async fn destroy_accessor(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let (role, _) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
    let accessor = accessor_field(req)?;
    let hasher = Hasher::new(ctx)?;
    let entry = by_accessor(ctx, &role, &hasher, &accessor)
        .await?
        .ok_or_else(|| {
            Error::bad_request(format!(
                "failed to find accessor entry for secret_id_accessor: {accessor:?}"
            ))
        })?;
    ctx.view
        .commit(delete_secret_writes(&role, &hasher, &entry, None))
        .await?;
    Ok(Response::NoContent)
}

async fn list_secret_ids(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    let (role, _) = load_role(ctx, name).await?.ok_or_else(|| no_role(name))?;
    let limit = params::page_limit(req)?;
    let after = req.query("after").unwrap_or_default();
    let folder = format!("secret_id/{}/", role.uuid);
    let rows = ctx.view.list(&folder, after, limit).await?;
    let now = ctx.system.now().secs();
    let mut keys = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some((entry, _)) = ctx
            .view
            .get_json::<SecretIdEntry>(&format!("{folder}{row}"))
            .await?
            && !entry.is_expired(now)
        {
            keys.push(entry.accessor);
        }
    }
    if keys.is_empty() {
        return Err(Error::NotFound(String::new()));
    }
    let mut data = json!({ "keys": keys });
    if rows.len() == limit
        && let Some(last) = rows.last()
    {
        data["next_after"] = json!(last);
    }
    Ok(Response::data(data))
}

/// `tidy/secret-id`: removes expired secret ids, and those of roles that no
/// longer exist, in the background.
fn tidy(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let view = ctx.view.clone();
    let request_id = req.request_id.clone();
    let now = ctx.system.now().secs();
    tokio::spawn(async move {
        match tidy_secret_ids(&view, now).await {
            Ok(removed) => tracing::info!(%request_id, removed, "AppRole secret ids tidied"),
            Err(e) => tracing::warn!(%request_id, error = %e, "AppRole tidy stopped"),
        }
    });
    Ok(Response::Vault { status: Status::ACCEPTED, data: None, auth: None, warnings: vec!["Tidy operation successfully started. Any information from the operation will be printed to Zafe's server logs.".into()] })
}

async fn tidy_secret_ids(view: &zafe_engine::View, now: i64) -> Result<usize> {
    let mut live_roles = std::collections::HashSet::new();
    let mut after = String::new();
    loop {
        let names = view.list("role/", &after, PAGE).await?;
        let Some(last) = names.last() else { break };
        after = last.clone();
        for name in names {
            if let Some((role, _)) = view.get_json::<Role>(&role_key(&name)).await? {
                live_roles.insert(role.uuid);
            }
        }
    }
    let mut removed = 0;
    let mut after = String::new();
    loop {
        let folders = view.list("secret_id/", &after, PAGE).await?;
        let Some(last) = folders.last() else { break };
        after = last.clone();
        for folder in folders {
            let uuid = folder.trim_end_matches('/');
            let orphaned = !live_roles.contains(uuid);
            let prefix = format!("secret_id/{uuid}/");
            let mut row_after = String::new();
            loop {
                let rows = view.list(&prefix, &row_after, PAGE).await?;
                let Some(last) = rows.last() else { break };
                row_after = last.clone();
                for row in rows {
                    let key = format!("{prefix}{row}");
                    let expired = match view.get_json::<SecretIdEntry>(&key).await {
                        Ok(Some((entry, _))) => entry.is_expired(now),
                        Ok(None) => false,
                        Err(_) => true,
                    };
                    if orphaned || expired {
                        // The accessor row is keyed by a hash we cannot
                        // rebuild without the key; it points at nothing now
                        // and every accessor lookup re-reads the entry.
                        view.delete(&key).await?;
                        removed += 1;
                    }
                }
            }
        }
    }
    Ok(removed)
}

// ---- login ----------------------------------------------------------------

async fn login(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let role_id = params::string(req, "role_id")?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::bad_request("missing role_id"))?;
    let secret_id = params::string(req, "secret_id")?.unwrap_or_default();
    let hasher = Hasher::new(ctx)?;
    let invalid = || Error::bad_request(INVALID);
    // Hash both before any read, and do the same reads whether the role id
    // is right or wrong: the answer and its timing say nothing about which
    // half was wrong.
    let role_hash = hasher.hash("role_id", &role_id);
    let secret_hash = hasher.hash("secret_id", &secret_id);
    let oversized = role_id.len() > 512 || secret_id.len() > 512;
    let index = ctx
        .view
        .get_json::<RoleIdIndex>(&format!("role_id/{role_hash}"))
        .await?;
    let role = match &index {
        Some((index, _)) => load_role(ctx, &index.name)
            .await?
            .map(|(r, _)| r)
            .filter(|r| r.role_id == role_id),
        None => {
            // The work of reading an index entry and a role: decrypting
            // two records costs far more than missing one.
            let _ = ctx.view.get_json::<Role>(DECOY_KEY).await;
            let _ = ctx.view.get_json::<Role>(DECOY_KEY).await;
            None
        }
    };
    let Some(role) = role.filter(|_| !oversized) else {
        let _ = ctx
            .view
            .get(&format!(
                "secret_id/00000000-0000-0000-0000-000000000000/{secret_hash}"
            ))
            .await;
        return Err(invalid());
    };
    let secret = if role.bind_secret_id {
        Some(consume_secret_id(ctx, &role, &hasher, &secret_hash, req.client_ip).await?)
    } else {
        if !allowed(&role.secret_id_bound_cidrs, req.client_ip) {
            return Err(cidr_refused(req.client_ip));
        }
        None
    };
    let mut meta = secret
        .as_ref()
        .map(|s| s.metadata.clone())
        .unwrap_or_default();
    meta.insert("role_name".into(), role.name.clone());
    let bound_cidrs = match &secret {
        Some(s) if !s.token_bound_cidrs.is_empty() => s.token_bound_cidrs.clone(),
        _ => role.token_bound_cidrs.clone(),
    };
    let mut policies = role.token_policies.clone();
    if !role.token_no_default_policy && !policies.iter().any(|p| p == "default") {
        policies.push("default".into());
    }
    policies.sort();
    let max = match (ctx.mount.max_lease_ttl as i64, role.token_max_ttl) {
        (0, r) => r,
        (m, 0) => m,
        (m, r) => m.min(r),
    };
    let lifetime_req = LifetimeRequest {
        ttl: Some(role.token_ttl).filter(|t| *t > 0),
        explicit_max_ttl: role.token_explicit_max_ttl,
        period: role.token_period,
        default_ttl: ctx.mount.default_lease_ttl as i64,
        max_ttl: max,
        may_be_unlimited: false,
    };
    let mount_name = ctx
        .mount
        .path
        .trim_start_matches("auth/")
        .trim_end_matches('/')
        .replace('/', "-");
    tracing::info!(request_id = %req.request_id, role = %role.name, "AppRole login");
    // The core mints the token from this grant.
    Ok(Response::Login {
        grant: Grant {
            policies,
            display_name: mount_name,
            path: format!("{}login", ctx.mount.path),
            meta,
            num_uses: role.token_num_uses,
            lifetime: lifetime_req,
            renewable: true,
            bound_cidrs,
        },
        warnings: Vec::new(),
    })
}

fn cidr_refused(ip: IpAddr) -> Error {
    Error::bad_request(format!(
        "source address {:?} unauthorized by CIDR restrictions on the role",
        ip.to_string()
    ))
}

/// Checks a secret id and takes one use of it (compare-and-swap; the last
/// use deletes it). Expired, unknown and used-up secret ids are all the same
/// login error.
async fn consume_secret_id(
    ctx: &Ctx<'_>,
    role: &Role,
    hasher: &Hasher,
    hash: &str,
    ip: IpAddr,
) -> Result<SecretIdEntry> {
    for _ in 0..MAX_RETRIES {
        let Some((mut entry, generation)) = read_secret(ctx, role, hasher, hash).await? else {
            return Err(Error::bad_request(INVALID));
        };
        // Only now, with both halves right, may the answer differ.
        if !allowed(&role.secret_id_bound_cidrs, ip) || !allowed(&entry.cidr_list, ip) {
            return Err(cidr_refused(ip));
        }
        let writes = match entry.num_uses {
            0 => return Ok(entry),
            1 => delete_secret_writes(role, hasher, &entry, Some(generation)),
            n => {
                entry.num_uses = n - 1;
                entry.updated_at = ctx.system.now().secs();
                vec![Write::Put {
                    key: secret_key(role, hash),
                    value: serde_json::to_vec(&entry).expect("serialisable"),
                    expect: Expect::Generation(generation),
                }]
            }
        };
        match ctx.view.commit(writes).await {
            Ok(()) => return Ok(entry),
            // A concurrent login took a use first: read again.
            Err(Error::Conflict { .. }) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(
        "could not use the secret id: too many concurrent logins".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_containment() {
        let outer: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(within(&["10.1.0.0/16".parse().unwrap()], &outer));
        assert!(!within(&["11.0.0.0/16".parse().unwrap()], &outer));
        assert!(within(&["1.2.3.4/32".parse().unwrap()], &[]));
        assert!(allowed(&outer, "10.9.9.9".parse().unwrap()));
        assert!(!allowed(&outer, "192.168.0.1".parse().unwrap()));
    }

    #[test]
    fn role_names_are_checked_and_lower_cased() {
        assert_eq!(role_name("My-App_1").unwrap(), "my-app_1");
        for bad in ["", "a/b", "..", "a b", "x?"] {
            assert!(role_name(bad).is_err(), "{bad}");
        }
    }
}
