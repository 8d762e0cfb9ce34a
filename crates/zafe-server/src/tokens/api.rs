//! The token auth method at `auth/token/` (R-AUTH-10), with Vault's
//! endpoints and shapes: create (with roles and orphans), lookup, renew and
//! revoke (self, by token, by accessor), revoke-orphan, accessors, roles and
//! tidy. The store itself is `crate::tokens`; this module decides who may
//! create what:
//!
//! - a non-root token may only create children whose policies are a subset
//!   of its own (plus `default`), and never `root`;
//! - except through a role, as in Vault: a role with `allowed_policies` is a
//!   grant, so `create/<role>` gives exactly a subset of those (minus
//!   `disallowed_policies`, plus `default`), whatever the caller's own, for
//!   no longer than the role's `token_explicit_max_ttl`, `token_max_ttl` and
//!   the mount's maximum; writing or deleting a role needs sudo, and no role
//!   can allow `root`; a role without `allowed_policies` keeps the subset
//!   rule;
//! - orphans (`no_parent`) and periodic tokens without a role need root or
//!   `sudo` on the path; `create-orphan` needs only the path's policy, as in
//!   Vault, and still applies the subset rule;
//! - limited-use tokens cannot create tokens at all;
//! - TTLs are capped by the explicit maximum, the mount's maximum and the
//!   parent's remaining lifetime.

use std::sync::atomic::{AtomicI64, Ordering};

use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_engine::params;

use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::engine::View;
use crate::error::{Error, Result};
use crate::mounts::MountEntry;
use crate::policies::Capability;
use crate::tokens::{self, LifetimeRequest, NewToken, TokenEntry};

const ROLE_PREFIX: &str = "roles/";
/// Background tidy at most this often (expired tokens that are presented
/// are removed at once anyway).
const TIDY_EVERY_SECS: i64 = 3600;
static LAST_TIDY: AtomicI64 = AtomicI64::new(0);

const CREATE_FIELDS: &[&str] = &[
    "id",
    "role_name",
    "policies",
    "meta",
    "no_parent",
    "no_default_policy",
    "renewable",
    "ttl",
    "type",
    "explicit_max_ttl",
    "display_name",
    "num_uses",
    "period",
    "entity_alias",
    "lease",
];

/// What the token store's endpoints get for one request. Unlike an engine's context this one
/// holds the core: the token store is part of it.
pub(crate) struct Ctx<'a> {
    pub(crate) core: &'a Arc<Core>,
    pub(crate) mount: &'a MountEntry,
    pub(crate) view: View,
    /// The token store has no public paths: there is always a caller.
    pub(crate) caller: &'a Caller,
}

/// Whether a write creates or updates (see [`zafe_engine::Engine::exists`]).
pub(crate) async fn exists(ctx: &Ctx<'_>, rel_path: &str) -> Result<bool> {
    // Roles distinguish create from update, as in Vault; every other
    // write is an update.
    match rel_path.strip_prefix(ROLE_PREFIX) {
        Some(name) => Ok(ctx.view.get(&role_key(&role_name(name)?)).await?.is_some()),
        None => Ok(true),
    }
}

/// `auth/token/...`.
pub(crate) async fn handle(ctx: &Ctx<'_>, req: &Request, rel_path: &str) -> Result<Response> {
    maybe_tidy(ctx);
    let caller = ctx.caller;
    let rel = rel_path.trim_end_matches('/');
    use Operation::*;
    match (rel, req.operation) {
        ("create", Write) => create(ctx, req, caller, None, false).await,
        ("create-orphan", Write) => create(ctx, req, caller, None, true).await,
        (r, Write) if r.starts_with("create/") => {
            let name = role_name(&r["create/".len()..])?;
            create(ctx, req, caller, Some(&name), false).await
        }
        ("lookup", Write) => lookup(ctx, req).await,
        ("lookup-self", Read | Write) => Ok(Response::data(lookup_data(
            caller.token(),
            own_token(req),
            ctx.core.now_secs(),
        ))),
        ("lookup-accessor", Write) => lookup_accessor(ctx, req).await,
        ("renew", Write) => renew(ctx, req, Target::Token).await,
        ("renew-self", Write) => renew(ctx, req, Target::Caller(caller)).await,
        ("renew-accessor", Write) => renew(ctx, req, Target::Accessor).await,
        ("revoke", Write) => revoke(ctx, req).await,
        ("revoke-self", Write) => {
            // A person's session: end the whole session, as logout does.
            if let Some(user) = caller.person() {
                crate::people::sessions::revoke_family(&ctx.core.barrier, &user.session_id).await?;
                return Ok(Response::NoContent);
            }
            tokens::revoke_hash(
                &ctx.core.barrier,
                &ctx.core.token_key()?,
                &caller.token().id_hash,
            )
            .await?;
            Ok(Response::NoContent)
        }
        ("revoke-accessor", Write) => revoke_accessor(ctx, req).await,
        ("revoke-orphan", Write) => revoke_orphan(ctx, req, caller).await,
        ("accessors", List) => accessors(ctx, req, caller).await,
        ("roles", List) => list_roles(ctx, req).await,
        (r, Read | Write | Delete) if r.starts_with(ROLE_PREFIX) => {
            let name = role_name(&r[ROLE_PREFIX.len()..])?;
            // A role is a grant: whoever may use create/<role> gets its
            // allowed policies, whatever their own. Defining one is
            // therefore granting those policies, and needs sudo.
            if req.operation != Read && !has_sudo(ctx, caller, &req.path).await? {
                return Err(Error::PermissionDenied);
            }
            match req.operation {
                Read => read_role(ctx, &name).await,
                Write => write_role(ctx, req, &name).await,
                _ => {
                    ctx.view.delete(&role_key(&name)).await?;
                    Ok(Response::NoContent)
                }
            }
        }
        ("tidy", Write) => tidy(ctx, req, caller).await,
        (
            "create" | "create-orphan" | "lookup" | "lookup-self" | "lookup-accessor" | "renew"
            | "renew-self" | "renew-accessor" | "revoke" | "revoke-self" | "revoke-accessor"
            | "revoke-orphan" | "accessors" | "roles" | "tidy",
            _,
        ) => Err(Error::MethodNotAllowed("unsupported operation".into())),
        _ => Err(Error::NotFound("unsupported path".into())),
    }
}

/// Starts a background tidy when the last one is old enough.
fn maybe_tidy(ctx: &Ctx<'_>) {
    let now = ctx.core.now_secs();
    let last = LAST_TIDY.load(Ordering::Relaxed);
    if now - last < TIDY_EVERY_SECS
        || LAST_TIDY
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let core = ctx.core.clone();
    tokio::spawn(async move {
        match tokens::tidy(&core.barrier, core.now_secs()).await {
            Ok(report) => tracing::info!(?report, "token store tidied"),
            Err(e) => tracing::warn!(error = %e, "token store tidy stopped"),
        }
    });
}

/// The caller's own token, as sent (for `id` in lookup-self, as Vault does).
fn own_token(req: &Request) -> &str {
    req.token.as_deref().unwrap_or_default()
}

/// Whether the caller holds `sudo` on `path` (root always does).
async fn has_sudo(ctx: &Ctx<'_>, caller: &Caller, path: &str) -> Result<bool> {
    match ctx
        .core
        .authorize(caller, path, Capability::Sudo, false)
        .await
    {
        Ok(()) => Ok(true),
        Err(Error::PermissionDenied) => Ok(false),
        Err(e) => Err(e),
    }
}

// ---- create ---------------------------------------------------------------

async fn create(
    ctx: &Ctx<'_>,
    req: &Request,
    caller: &Caller,
    role: Option<&str>,
    orphan_endpoint: bool,
) -> Result<Response> {
    if caller.person().is_some() {
        // A person's session is not a token of this store, so it cannot be a
        // parent: a token minted from it would be an orphan that outlives
        // logout, password change, disabling the person and refresh-reuse
        // revocation (and an administrator's session would mint non-expiring
        // root tokens). Sessions therefore cannot mint tokens (R-AUTH-4/6).
        return Err(Error::Denied(
            "a person's session cannot create tokens: they would outlive the session; use a Vault token or a service account"
                .into(),
        ));
    }
    // Only a token of this store can be a parent; a service account never gets this far (it
    // may only read and list).
    let Caller::Token(caller_entry) = caller else {
        return Err(Error::PermissionDenied);
    };
    if caller_entry.num_uses > 0 || caller_entry.uses_exhausted {
        return Err(Error::bad_request(
            "restricted use token cannot generate child tokens",
        ));
    }
    if params::string(req, "id")?.is_some_and(|id| !id.is_empty()) {
        return Err(Error::bad_request(
            "custom token ids are not supported: Zafe issues its own zafe_s_ tokens",
        ));
    }
    match params::string(req, "type")?.as_deref() {
        None | Some("" | "service" | "default" | "default-service") => {}
        Some("batch" | "default-batch") => {
            return Err(Error::bad_request(
                "batch tokens are not supported: use service tokens",
            ));
        }
        Some(other) => return Err(Error::bad_request(format!("invalid token type {other:?}"))),
    }
    if params::string(req, "entity_alias")?.is_some_and(|a| !a.is_empty()) {
        return Err(Error::bad_request("entity aliases are not supported"));
    }
    let role = match role {
        Some(name) => Some(
            load_role(ctx, name)
                .await?
                .ok_or_else(|| Error::bad_request(format!("unknown role {name}")))?,
        ),
        None => None,
    };
    let requested = params::policies(req, "policies")?;
    let no_default = params::boolean(req, "no_default_policy")?.unwrap_or(false)
        || role.as_ref().is_some_and(|r| r.token_no_default_policy);
    let no_parent = params::boolean(req, "no_parent")?.unwrap_or(false);
    let renewable = params::boolean(req, "renewable")?.unwrap_or(true);
    let ttl = params::duration(req, "ttl")?;
    let explicit_max_ttl = params::duration(req, "explicit_max_ttl")?.unwrap_or(0);
    let period = params::duration(req, "period")?.unwrap_or(0);
    let num_uses = params::uint(req, "num_uses")?.unwrap_or(0);
    let display_name = params::string(req, "display_name")?;
    let meta = params::string_map(req, "meta")?.unwrap_or_default();
    params::check_meta(&meta)?;

    let is_root = caller.is_root();
    let sudo = is_root || has_sudo(ctx, caller, &req.path).await?;

    let orphan = if role.as_ref().is_some_and(|r| r.orphan) || orphan_endpoint {
        true
    } else if no_parent {
        if !sudo {
            return Err(Error::bad_request(
                "root or sudo privileges required to create orphan token",
            ));
        }
        true
    } else {
        false
    };

    let policies = child_policies(caller_entry, requested, no_default, role.as_ref())?;

    let period = match &role {
        Some(r) if r.token_period > 0 => r.token_period,
        _ if period > 0 && !sudo => {
            return Err(Error::bad_request(
                "root or sudo privileges required to create periodic token",
            ));
        }
        _ => period,
    };
    let explicit_max_ttl = match &role {
        Some(r)
            if r.token_explicit_max_ttl > 0
                && (explicit_max_ttl == 0 || explicit_max_ttl > r.token_explicit_max_ttl) =>
        {
            r.token_explicit_max_ttl
        }
        _ => explicit_max_ttl,
    };
    let num_uses = match &role {
        Some(r) if r.token_num_uses > 0 && (num_uses == 0 || num_uses > r.token_num_uses) => {
            r.token_num_uses
        }
        _ => num_uses,
    };
    let mount_max = ctx.mount.max_lease_ttl as i64;
    let role_max = role.as_ref().map_or(0, |r| r.token_max_ttl);
    let lifetime_req = LifetimeRequest {
        ttl: ttl
            .filter(|t| *t > 0)
            .or(role.as_ref().map(|r| r.token_ttl).filter(|t| *t > 0)),
        explicit_max_ttl,
        period,
        default_ttl: ctx.mount.default_lease_ttl as i64,
        max_ttl: min_nonzero(mount_max, role_max),
        may_be_unlimited: policies == ["root"],
    };
    let parent = (!orphan).then(|| caller_entry.clone());
    let (lifetime, mut warnings) =
        tokens::plan_lifetime(&lifetime_req, parent.as_ref(), ctx.core.now_secs());
    let new = NewToken {
        policies,
        display_name: vault_display_name(display_name.as_deref()),
        path: req.path.trim_end_matches('/').to_string(),
        meta,
        parent,
        num_uses,
        lifetime,
        renewable: renewable && role.as_ref().is_none_or(|r| r.renewable),
        role: role.as_ref().map(|r| r.name.clone()),
        bound_cidrs: role
            .as_ref()
            .map(|r| r.token_bound_cidrs.clone())
            .unwrap_or_default(),
    };
    let (token, entry) = tokens::issue(
        &ctx.core.barrier,
        &ctx.core.token_key()?,
        new,
        ctx.core.now_secs(),
    )
    .await?;
    warnings.extend(params::unknown_fields(req, CREATE_FIELDS));
    Ok(auth_reply(&entry, Some(&token), warnings, entry.created_at))
}

/// The policies of a child token, by Vault's rules, with the subset rule
/// applied without exception for non-root callers.
fn child_policies(
    caller: &TokenEntry,
    requested: Option<Vec<String>>,
    no_default: bool,
    role: Option<&TokenRole>,
) -> Result<Vec<String>> {
    let is_root = caller.is_root();
    let mut policies = requested.unwrap_or_default();
    if policies.is_empty() {
        policies = match role {
            Some(r) if !r.allowed_policies.is_empty() => r.allowed_policies.clone(),
            _ => caller.policies.clone(),
        };
    }
    if policies.iter().any(|p| p == "root") {
        // Only a root token can make another one (lessons.md: children were
        // once created with any policy, root included).
        if !is_root {
            return Err(Error::bad_request(
                "child policies must be subset of parent",
            ));
        }
        return Ok(vec!["root".into()]);
    }
    if no_default {
        policies.retain(|p| p != "default");
    } else if !policies.iter().any(|p| p == "default") {
        policies.push("default".into());
    }
    policies.sort();
    policies.dedup();
    match role {
        Some(r) if !r.allowed_policies.is_empty() => {
            let allowed = |p: &String| p == "default" || r.allowed_policies.contains(p);
            if !policies.iter().all(allowed) {
                return Err(Error::bad_request(format!(
                    "token policies ({}) must be subset of the role's allowed policies ({})",
                    policies.join(", "),
                    r.allowed_policies.join(", ")
                )));
            }
        }
        _ => {
            let allowed = |p: &String| p == "default" || caller.policies.contains(p);
            if !is_root && !policies.iter().all(allowed) {
                return Err(Error::bad_request(
                    "child policies must be subset of parent",
                ));
            }
        }
    }
    if let Some(r) = role
        && let Some(bad) = policies.iter().find(|p| r.disallowed_policies.contains(p))
    {
        return Err(Error::bad_request(format!(
            "token policy {bad:?} is disallowed by this role"
        )));
    }
    if policies.is_empty() {
        return Err(Error::bad_request("a token must have at least one policy"));
    }
    Ok(policies)
}

fn min_nonzero(a: i64, b: i64) -> i64 {
    match (a, b) {
        (0, x) | (x, 0) => x,
        (a, b) => a.min(b),
    }
}

/// `"token"`, or `"token-<name>"` with anything but letters, digits and
/// dashes replaced by dashes, as Vault does.
fn vault_display_name(name: Option<&str>) -> String {
    match name.map(str::trim).filter(|n| !n.is_empty()) {
        None => "token".into(),
        Some(n) => {
            let full: String = format!("token-{n}")
                .chars()
                .take(128)
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            full.trim_end_matches('-').to_string()
        }
    }
}

/// Vault's `auth` block for a token that was just issued or renewed at
/// `granted_at`: `lease_duration` is the lifetime granted then, exactly (a
/// reply written a second later must not say 3599 for a one-hour token).
pub(crate) fn auth_block(entry: &TokenEntry, token: Option<&str>, granted_at: i64) -> Value {
    json!({
        "client_token": token.unwrap_or_default(),
        "accessor": entry.accessor,
        "policies": entry.policies,
        "token_policies": entry.policies,
        "metadata": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "lease_duration": entry.ttl(granted_at),
        "renewable": entry.renewable,
        "entity_id": "",
        "token_type": "service",
        "orphan": entry.is_orphan(),
        "mfa_requirement": null,
        "num_uses": entry.num_uses,
    })
}

/// Vault's answer to a login or a token creation: the `auth` block (with the token itself only
/// where it was just created or given by the caller).
pub(crate) fn auth_reply(
    entry: &TokenEntry,
    token: Option<&str>,
    warnings: Vec<String>,
    granted_at: i64,
) -> Response {
    Response::Vault {
        status: zafe_engine::Status::OK,
        data: None,
        auth: Some(auth_block(entry, token, granted_at)),
        warnings,
    }
}

// ---- lookup ---------------------------------------------------------------

/// Vault's lookup data. `id` is the token itself where the caller gave it
/// (lookup, lookup-self) and empty for lookup-accessor: it is never stored,
/// so it cannot leak from here.
fn lookup_data(entry: &TokenEntry, id: &str, now: i64) -> Value {
    let mut data = json!({
        "accessor": entry.accessor,
        "creation_time": entry.created_at,
        "creation_ttl": entry.creation_ttl,
        "display_name": entry.display_name,
        "entity_id": "",
        "expire_time": entry.expires_at.map(tokens::rfc3339),
        "explicit_max_ttl": entry.explicit_max_ttl,
        "id": id,
        "issue_time": tokens::rfc3339(entry.created_at),
        "meta": if entry.meta.is_empty() { Value::Null } else { json!(entry.meta) },
        "num_uses": entry.num_uses,
        "orphan": entry.is_orphan(),
        "path": entry.path,
        "policies": entry.policies,
        "renewable": entry.renewable,
        "ttl": entry.ttl(now),
        "type": "service",
    });
    if entry.period > 0 {
        data["period"] = json!(entry.period);
    }
    if let Some(role) = &entry.role {
        data["role"] = json!(role);
    }
    if !entry.bound_cidrs.is_empty() {
        data["bound_cidrs"] = json!(
            entry
                .bound_cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }
    data
}

async fn lookup(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let token = params::string(req, "token")?.unwrap_or_default();
    if token.is_empty() {
        // Vault looks up the caller's own token when none is given.
        let caller = ctx.caller;
        return Ok(Response::data(lookup_data(
            caller.token(),
            own_token(req),
            ctx.core.now_secs(),
        )));
    }
    let entry = tokens::lookup(
        &ctx.core.barrier,
        &ctx.core.token_key()?,
        &token,
        ctx.core.now_secs(),
    )
    .await?
    .ok_or(Error::PermissionDenied)?;
    Ok(Response::data(lookup_data(
        &entry,
        &token,
        ctx.core.now_secs(),
    )))
}

async fn lookup_accessor(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let entry = by_accessor(ctx, req).await?;
    Ok(Response::data(lookup_data(&entry, "", ctx.core.now_secs())))
}

async fn by_accessor(ctx: &Ctx<'_>, req: &Request) -> Result<TokenEntry> {
    let accessor = params::string(req, "accessor")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::bad_request("missing accessor"))?;
    tokens::lookup_accessor(
        &ctx.core.barrier,
        &ctx.core.token_key()?,
        &accessor,
        ctx.core.now_secs(),
    )
    .await?
    .ok_or_else(|| Error::bad_request("invalid accessor"))
}

// ---- renew ----------------------------------------------------------------

enum Target<'a> {
    Caller(&'a Caller),
    Token,
    Accessor,
}

async fn renew(ctx: &Ctx<'_>, req: &Request, target: Target<'_>) -> Result<Response> {
    let increment = params::duration(req, "increment")?;
    let (hash, token) = match target {
        Target::Caller(caller) => (
            caller.token().id_hash.clone(),
            Some(own_token(req).to_string()),
        ),
        Target::Token => {
            let token = params::string(req, "token")?
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Error::bad_request("missing token"))?;
            let entry = tokens::lookup(
                &ctx.core.barrier,
                &ctx.core.token_key()?,
                &token,
                ctx.core.now_secs(),
            )
            .await?
            .ok_or_else(|| Error::bad_request("token not found"))?;
            (entry.id_hash, Some(token))
        }
        Target::Accessor => (by_accessor(ctx, req).await?.id_hash, None),
    };
    let renewed = tokens::renew(&ctx.core.barrier, &hash, increment, ctx.core.now_secs()).await?;
    Ok(auth_reply(
        &renewed.entry,
        token.as_deref(),
        renewed.warnings,
        renewed.renewed_at,
    ))
}

// ---- revoke ---------------------------------------------------------------

async fn revoke(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let token = params::string(req, "token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::bad_request("missing token"))?;
    tokens::revoke(&ctx.core.barrier, &ctx.core.token_key()?, &token).await?;
    Ok(Response::NoContent)
}

async fn revoke_accessor(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let accessor = params::string(req, "accessor")?
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::bad_request("missing accessor"))?;
    let key = ctx.core.token_key()?;
    match tokens::lookup_accessor(&ctx.core.barrier, &key, &accessor, ctx.core.now_secs()).await? {
        Some(entry) => {
            tokens::revoke_hash(&ctx.core.barrier, &key, &entry.id_hash).await?;
            Ok(Response::NoContent)
        }
        // Vault answers 200 with a warning.
        None => Ok(Response::warnings(vec![
            "No token found with this accessor".into(),
        ])),
    }
}

async fn revoke_orphan(ctx: &Ctx<'_>, req: &Request, caller: &Caller) -> Result<Response> {
    if !caller.is_root() && !has_sudo(ctx, caller, &req.path).await? {
        return Err(Error::bad_request(
            "root or sudo privileges required to revoke and orphan",
        ));
    }
    let token = params::string(req, "token")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::bad_request("missing token"))?;
    let key = ctx.core.token_key()?;
    if let Some(entry) =
        tokens::lookup(&ctx.core.barrier, &key, &token, ctx.core.now_secs()).await?
    {
        tokens::revoke_orphan(&ctx.core.barrier, &key, &entry.id_hash).await?;
    }
    Ok(Response::NoContent)
}

// ---- accessors and tidy ---------------------------------------------------

async fn accessors(ctx: &Ctx<'_>, req: &Request, caller: &Caller) -> Result<Response> {
    if !has_sudo(ctx, caller, &req.path).await? {
        return Err(Error::PermissionDenied);
    }
    let limit = params::page_limit(req)?;
    let after = req.query("after").unwrap_or_default();
    let (keys, next) = tokens::list_accessors(&ctx.core.barrier, after, limit).await?;
    if keys.is_empty() && next.is_none() {
        return Err(Error::NotFound(String::new()));
    }
    let mut data = json!({ "keys": keys });
    if let Some(next) = next {
        // More than one page: pass this as `after` to continue.
        data["next_after"] = json!(next);
    }
    Ok(Response::data(data))
}

async fn tidy(ctx: &Ctx<'_>, req: &Request, caller: &Caller) -> Result<Response> {
    if !has_sudo(ctx, caller, &req.path).await? {
        return Err(Error::PermissionDenied);
    }
    let core = ctx.core.clone();
    let request_id = req.request_id.clone();
    tokio::spawn(async move {
        match tokens::tidy(&core.barrier, core.now_secs()).await {
            Ok(report) => tracing::info!(%request_id, ?report, "token store tidied"),
            Err(e) => tracing::warn!(%request_id, error = %e, "token store tidy stopped"),
        }
    });
    Ok(Response::Vault { status: zafe_engine::Status::ACCEPTED, data: None, auth: None, warnings: vec!["Tidy operation successfully started. Any information from the operation will be printed to Zafe's server logs.".into()] })
}

// ---- roles ----------------------------------------------------------------

/// A token role (`auth/token/roles/<name>`): what tokens created through
/// `auth/token/create/<name>` get.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenRole {
    name: String,
    allowed_policies: Vec<String>,
    disallowed_policies: Vec<String>,
    orphan: bool,
    renewable: bool,
    path_suffix: String,
    token_period: i64,
    token_explicit_max_ttl: i64,
    token_ttl: i64,
    token_max_ttl: i64,
    token_num_uses: u32,
    token_no_default_policy: bool,
    token_bound_cidrs: Vec<IpNet>,
}

impl TokenRole {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            allowed_policies: Vec::new(),
            disallowed_policies: Vec::new(),
            orphan: false,
            renewable: true,
            path_suffix: String::new(),
            token_period: 0,
            token_explicit_max_ttl: 0,
            token_ttl: 0,
            token_max_ttl: 0,
            token_num_uses: 0,
            token_no_default_policy: false,
            token_bound_cidrs: Vec::new(),
        }
    }

    fn to_vault_json(&self) -> Value {
        json!({
            "allowed_entity_aliases": null,
            "allowed_policies": self.allowed_policies,
            "allowed_policies_glob": [],
            "disallowed_policies": self.disallowed_policies,
            "disallowed_policies_glob": [],
            "explicit_max_ttl": 0,
            "name": self.name,
            "orphan": self.orphan,
            "path_suffix": self.path_suffix,
            "period": 0,
            "renewable": self.renewable,
            "token_bound_cidrs": self.token_bound_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "token_explicit_max_ttl": self.token_explicit_max_ttl,
            "token_max_ttl": self.token_max_ttl,
            "token_no_default_policy": self.token_no_default_policy,
            "token_num_uses": self.token_num_uses,
            "token_period": self.token_period,
            "token_ttl": self.token_ttl,
            "token_type": "default-service",
        })
    }
}

fn role_key(name: &str) -> String {
    format!("{ROLE_PREFIX}{name}")
}

/// Role names: letters, digits, `_ - . @`, up to 128 characters.
fn role_name(raw: &str) -> Result<String> {
    let ok = !raw.is_empty()
        && raw.len() <= 128
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.@".contains(c))
        && raw != "."
        && raw != "..";
    if ok {
        Ok(raw.to_string())
    } else {
        Err(Error::bad_request(format!(
            "invalid role name {raw:?}: use letters, digits, '_', '-', '.' or '@' (up to 128)"
        )))
    }
}

async fn load_role(ctx: &Ctx<'_>, name: &str) -> Result<Option<TokenRole>> {
    Ok(ctx
        .view
        .get_json::<TokenRole>(&role_key(name))
        .await?
        .map(|(r, _)| r))
}

async fn read_role(ctx: &Ctx<'_>, name: &str) -> Result<Response> {
    let role = load_role(ctx, name)
        .await?
        .ok_or_else(|| Error::NotFound(String::new()))?;
    Ok(Response::data(role.to_vault_json()))
}

async fn list_roles(ctx: &Ctx<'_>, req: &Request) -> Result<Response> {
    let limit = params::page_limit(req)?;
    let after = req.query("after").unwrap_or_default();
    let keys: Vec<String> = ctx
        .view
        .list(ROLE_PREFIX, after, limit)
        .await?
        .into_iter()
        .filter(|k| !k.ends_with('/'))
        .collect();
    if keys.is_empty() {
        return Err(Error::NotFound(String::new()));
    }
    Ok(Response::data(json!({ "keys": keys })))
}

async fn write_role(ctx: &Ctx<'_>, req: &Request, name: &str) -> Result<Response> {
    // Parse everything first: bad input changes nothing.
    let mut role = load_role(ctx, name)
        .await?
        .unwrap_or_else(|| TokenRole::new(name));
    if let Some(p) = params::policies(req, "allowed_policies")? {
        if p.iter().any(|p| p == "root") {
            return Err(Error::bad_request(
                "a token role cannot allow the root policy",
            ));
        }
        role.allowed_policies = p;
    }
    if let Some(p) = params::policies(req, "disallowed_policies")? {
        role.disallowed_policies = p;
    }
    if let Some(v) = params::boolean(req, "orphan")? {
        role.orphan = v;
    }
    if let Some(v) = params::boolean(req, "renewable")? {
        role.renewable = v;
    }
    if let Some(v) = params::string(req, "path_suffix")? {
        if v.contains("..") || v.len() > 128 {
            return Err(Error::bad_request("invalid path_suffix"));
        }
        role.path_suffix = v;
    }
    // The legacy names first, so that the token_* names win when both are given.
    for (legacy, field) in [
        ("period", "token_period"),
        ("explicit_max_ttl", "token_explicit_max_ttl"),
    ] {
        for name in [legacy, field] {
            if let Some(v) = params::duration(req, name)? {
                match field {
                    "token_period" => role.token_period = v,
                    _ => role.token_explicit_max_ttl = v,
                }
            }
        }
    }
    if let Some(v) = params::duration(req, "token_ttl")? {
        role.token_ttl = v;
    }
    if let Some(v) = params::duration(req, "token_max_ttl")? {
        role.token_max_ttl = v;
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
    if role.token_max_ttl > 0 && role.token_ttl > role.token_max_ttl {
        return Err(Error::bad_request(
            "token_ttl cannot be greater than token_max_ttl",
        ));
    }
    // Last writer wins, as in Vault.
    let bytes = serde_json::to_vec(&role).expect("serialisable");
    ctx.view
        .update(&role_key(name), |_| Some(bytes.clone()))
        .await?;
    Ok(Response::NoContent)
}

/// Parsing of request parameters the way Vault accepts them: lists as JSON
/// arrays or comma-separated strings, durations as seconds or `"1h30m"`,
/// numbers and booleans also as strings. Every bad value is a clear 400.

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(policies: &[&str]) -> TokenEntry {
        TokenEntry {
            policies: policies.iter().map(|s| s.to_string()).collect(),
            ..TokenEntry::default()
        }
    }

    fn list(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    // R-AUTH-10, lessons.md: the subset rule, and root only from root.
    #[test]
    fn child_policies_are_a_subset_of_the_parent() {
        let parent = caller(&["a", "b", "default"]);
        assert_eq!(
            child_policies(&parent, list(&["a"]), false, None).unwrap(),
            ["a", "default"]
        );
        assert_eq!(
            child_policies(&parent, None, false, None).unwrap(),
            ["a", "b", "default"]
        );
        assert_eq!(
            child_policies(&parent, list(&["a"]), true, None).unwrap(),
            ["a"]
        );
        assert!(child_policies(&parent, list(&["c"]), false, None).is_err());
        assert!(child_policies(&parent, list(&["root"]), false, None).is_err());
        // Even a role that names root cannot get a non-root caller there.
        let mut role = TokenRole::new("r");
        role.allowed_policies = vec!["root".into()];
        assert!(child_policies(&parent, None, false, Some(&role)).is_err());
        let root = caller(&["root"]);
        assert_eq!(child_policies(&root, None, false, None).unwrap(), ["root"]);
        assert_eq!(
            child_policies(&root, list(&["x"]), false, None).unwrap(),
            ["default", "x"]
        );
    }

    #[test]
    fn roles_widen_and_narrow_as_in_vault() {
        let parent = caller(&["default"]);
        let mut role = TokenRole::new("r");
        role.allowed_policies = vec!["a".into(), "b".into()];
        role.disallowed_policies = vec!["b".into()];
        assert_eq!(
            child_policies(&parent, list(&["a"]), false, Some(&role)).unwrap(),
            ["a", "default"]
        );
        assert!(child_policies(&parent, list(&["b"]), false, Some(&role)).is_err());
        assert!(child_policies(&parent, list(&["z"]), false, Some(&role)).is_err());
    }

    #[test]
    fn display_names_are_sanitised_like_vault() {
        assert_eq!(vault_display_name(None), "token");
        assert_eq!(vault_display_name(Some("My App")), "token-My-App");
        assert_eq!(vault_display_name(Some("ci/job!")), "token-ci-job");
    }
}
