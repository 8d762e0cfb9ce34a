//! The system backend: `sys/...` routes with Vault's request and response
//! shapes. [`ROUTES`] is the one table of what exists and who may call it;
//! the core consults it for every request, and the test suite walks it to
//! prove that only the public allowlist answers strangers (R-AUTH-1).

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};
use zafe_engine::Status;

use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};
use crate::seal::UnsealProgress;
use crate::{mounts, policies};

/// The server's version (the crate's), reported by `sys/seal-status` and
/// `sys/health`.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: health, seal status, init, unseal, identity.
    Public,
    /// A token whose policies grant the operation's capability on the path.
    Token,
    /// As `Token`, and the policies must also grant `sudo` on the path.
    Sudo,
    /// Any valid token, without a policy check: for harmless metadata that
    /// Vault serves without one (`sys/leader`, `sys/internal/ui/mounts`).
    Authenticated,
}

/// Which handler serves a route: one per entry of [`ROUTES`] (whose path
/// says what each is), and [`dispatch`] matches on it with the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteId {
    Init,
    Unseal,
    SealStatus,
    Health,
    Identity,
    Seal,
    Mounts,
    Mount,
    Auths,
    Auth,
    Policies,
    Policy,
    Capabilities,
    CapabilitiesSelf,
    Rotate,
    KeyStatus,
    RekeyInit,
    RekeyUpdate,
    AuditExport,
    AuditVerify,
    AuditDevices,
    AuditDevice,
    WrappingUnwrap,
    WrappingLookup,
    WrappingRewrap,
    WrappingWrap,
    /// `sys/backup` (backup.rs).
    Backup,
    /// `sys/restore` reached through the core (the HTTP edge serves the upload).
    Restore,
    AuditCheckpoints,
    ServiceAccounts,
    ServiceAccount,
    Agents,
    Leader,
    UiMounts,
    Resolve,
    Projects,
    Project,
    OidcAuthUrl,
    OidcCallback,
    Totp,
    /// People: setup, login, sessions, accounts (people/api.rs).
    People(crate::people::api::Endpoint),
}

/// A route: an exact path, or with `/*` a prefix whose rest is passed to
/// the handler.
pub struct Route {
    /// The path after `/v1/`, without a leading or trailing slash
    /// (`sys/health`, `auth/user/login`); ending in `/*` it is a prefix.
    pub path: &'static str,
    /// Who may call it; checked by the core before the handler runs.
    pub access: Access,
    /// The operations it accepts; the core refuses any other with 405, and
    /// only after the access check, so strangers learn nothing from it.
    pub(crate) operations: &'static [Operation],
    /// The handler.
    pub(crate) id: RouteId,
}

use crate::people::api::Endpoint as P;
use Operation::*;

/// Every route the system backend serves (`sys/...` and the people and
/// OIDC routes under `auth/`): the first entry whose path matches serves a
/// request. A path in none of them goes to the mount table.
pub const ROUTES: &[Route] = &[
    Route {
        path: "sys/init",
        access: Access::Public,
        operations: &[Read, Write],
        id: RouteId::Init,
    },
    Route {
        path: "sys/unseal",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::Unseal,
    },
    Route {
        path: "sys/seal-status",
        access: Access::Public,
        operations: &[Read],
        id: RouteId::SealStatus,
    },
    Route {
        path: "sys/health",
        access: Access::Public,
        operations: &[Read, Head],
        id: RouteId::Health,
    },
    Route {
        path: "sys/identity",
        access: Access::Public,
        operations: &[Read],
        id: RouteId::Identity,
    },
    Route {
        path: "sys/seal",
        access: Access::Sudo,
        operations: &[Write],
        id: RouteId::Seal,
    },
    Route {
        path: "sys/backup",
        access: Access::Sudo,
        operations: &[Read],
        id: RouteId::Backup,
    },
    Route {
        path: "sys/restore",
        access: Access::Sudo,
        operations: &[Write],
        id: RouteId::Restore,
    },
    Route {
        path: "sys/mounts",
        access: Access::Token,
        operations: &[Read],
        id: RouteId::Mounts,
    },
    Route {
        path: "sys/mounts/*",
        access: Access::Token,
        operations: &[Read, Write, Delete],
        id: RouteId::Mount,
    },
    Route {
        path: "sys/auth",
        access: Access::Token,
        operations: &[Read],
        id: RouteId::Auths,
    },
    Route {
        path: "sys/auth/*",
        access: Access::Sudo,
        operations: &[Read, Write, Delete],
        id: RouteId::Auth,
    },
    Route {
        path: "sys/policy",
        access: Access::Token,
        operations: &[Read, List],
        id: RouteId::Policies,
    },
    Route {
        path: "sys/policy/*",
        access: Access::Token,
        operations: &[Read, Write, Delete],
        id: RouteId::Policy,
    },
    Route {
        path: "sys/policies/acl",
        access: Access::Token,
        operations: &[Read, List],
        id: RouteId::Policies,
    },
    Route {
        path: "sys/policies/acl/*",
        access: Access::Token,
        operations: &[Read, Write, Delete],
        id: RouteId::Policy,
    },
    Route {
        path: "sys/capabilities",
        access: Access::Token,
        operations: &[Write],
        id: RouteId::Capabilities,
    },
    Route {
        path: "sys/capabilities-self",
        access: Access::Token,
        operations: &[Write],
        id: RouteId::CapabilitiesSelf,
    },
    Route {
        path: "sys/rotate",
        access: Access::Sudo,
        operations: &[Write],
        id: RouteId::Rotate,
    },
    Route {
        path: "sys/key-status",
        access: Access::Token,
        operations: &[Read],
        id: RouteId::KeyStatus,
    },
    Route {
        path: "sys/rekey/init",
        access: Access::Sudo,
        operations: &[Read, Write, Delete],
        id: RouteId::RekeyInit,
    },
    Route {
        path: "sys/leader",
        access: Access::Authenticated,
        operations: &[Read],
        id: RouteId::Leader,
    },
    Route {
        path: "sys/internal/ui/mounts/*",
        access: Access::Authenticated,
        operations: &[Read],
        id: RouteId::UiMounts,
    },
    Route {
        path: "sys/rekey/update",
        access: Access::Sudo,
        operations: &[Write],
        id: RouteId::RekeyUpdate,
    },
    Route {
        path: "sys/service-accounts",
        access: Access::Sudo,
        operations: &[Read, List],
        id: RouteId::ServiceAccounts,
    },
    Route {
        path: "sys/service-accounts/*",
        access: Access::Sudo,
        operations: &[Read, Write, Delete],
        id: RouteId::ServiceAccount,
    },
    // Host agents of a project (R-AGT-1): `sys/agents/<project>[/<name>[/rotate-token]]`,
    // governed by policy (root, and the project's admins through their role).
    Route {
        path: "sys/agents/*",
        access: Access::Token,
        operations: &[Read, List, Write, Delete],
        id: RouteId::Agents,
    },
    // Authenticated only: every reference is authorised on its own KV path
    // by the handler (crate::resolve).
    Route {
        path: "sys/resolve",
        access: Access::Authenticated,
        operations: &[Write],
        id: RouteId::Resolve,
    },
    // People (docs/design/people-and-workflow.md). Only setup, login,
    // refresh and registration are public.
    Route {
        path: "sys/setup",
        access: Access::Public,
        operations: &[Read, Write],
        id: RouteId::People(P::Setup),
    },
    Route {
        path: "auth/user/login",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::People(P::Login),
    },
    Route {
        path: "auth/user/refresh",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::People(P::Refresh),
    },
    Route {
        path: "auth/user/register",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::People(P::Register),
    },
    Route {
        path: "auth/user/logout",
        access: Access::Authenticated,
        operations: &[Write],
        id: RouteId::People(P::Logout),
    },
    Route {
        path: "auth/user/self",
        access: Access::Authenticated,
        operations: &[Read],
        id: RouteId::People(P::SelfInfo),
    },
    Route {
        path: "auth/user/password",
        access: Access::Authenticated,
        operations: &[Write],
        id: RouteId::People(P::Password),
    },
    Route {
        path: "auth/user/sessions",
        access: Access::Authenticated,
        operations: &[Read, List],
        id: RouteId::People(P::Sessions),
    },
    Route {
        path: "sys/users",
        access: Access::Sudo,
        operations: &[Read, List, Write],
        id: RouteId::People(P::Users),
    },
    Route {
        path: "sys/users/*",
        access: Access::Sudo,
        operations: &[Read, Write, Delete],
        id: RouteId::People(P::User),
    },
    Route {
        path: "sys/wrapping/unwrap",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::WrappingUnwrap,
    },
    Route {
        path: "sys/wrapping/lookup",
        access: Access::Public,
        operations: &[Read, Write],
        id: RouteId::WrappingLookup,
    },
    Route {
        path: "sys/wrapping/rewrap",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::WrappingRewrap,
    },
    Route {
        path: "sys/wrapping/wrap",
        access: Access::Token,
        operations: &[Write],
        id: RouteId::WrappingWrap,
    },
    Route {
        path: "sys/audit",
        access: Access::Sudo,
        operations: &[Read],
        id: RouteId::AuditDevices,
    },
    Route {
        path: "sys/audit/*",
        access: Access::Sudo,
        operations: &[Read, Write, Delete],
        id: RouteId::AuditDevice,
    },
    Route {
        path: "sys/audit-log/export",
        access: Access::Sudo,
        operations: &[Read],
        id: RouteId::AuditExport,
    },
    Route {
        path: "sys/audit-log/verify",
        access: Access::Sudo,
        operations: &[Read],
        id: RouteId::AuditVerify,
    },
    Route {
        path: "auth/oidc/auth_url",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::OidcAuthUrl,
    },
    Route {
        path: "auth/user/totp/*",
        access: Access::Authenticated,
        operations: &[Write],
        id: RouteId::Totp,
    },
    Route {
        path: "auth/oidc/callback",
        access: Access::Public,
        operations: &[Write],
        id: RouteId::OidcCallback,
    },
    Route {
        path: "sys/audit-log/checkpoints",
        access: Access::Sudo,
        operations: &[Read, Write],
        id: RouteId::AuditCheckpoints,
    },
    // Projects (R-ACL-2, R-KV-2): listing shows each caller what they may
    // see and creation checks `create` on `sys/projects` in the handler;
    // everything under a project is authorised against the project's path
    // (a person's role policies; non-members get a 404).
    Route {
        path: "sys/projects",
        access: Access::Authenticated,
        operations: &[Read, List, Write],
        id: RouteId::Projects,
    },
    Route {
        path: "sys/projects/*",
        access: Access::Token,
        operations: &[Read, List, Write, Delete],
        id: RouteId::Project,
    },
];

/// The route serving `path`, and the rest of the path after a `/*` route.
pub(crate) fn find(path: &str) -> Option<(&'static Route, &str)> {
    let exact = path.trim_end_matches('/');
    ROUTES.iter().find_map(|r| match r.path.strip_suffix("/*") {
        Some(prefix) => path
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|rest| !rest.trim_matches('/').is_empty())
            .map(|rest| (r, rest)),
        None => (r.path == exact).then_some((r, "")),
    })
}

/// Runs the handler `id` for a request the core has already authorized
/// against the route's [`Access`] (`caller` is `None` on public routes);
/// `rest` is the path after a `/*` route's prefix, empty otherwise.
pub(crate) async fn dispatch(
    core: &Arc<Core>,
    id: RouteId,
    rest: &str,
    req: Request,
    caller: Option<Caller>,
) -> Result<Response> {
    match (id, req.operation) {
        (RouteId::Init, Read) => Ok(ok(json!({ "initialized": core.is_initialized().await? }))),
        (RouteId::Init, _) => init(core, &req).await,
        (RouteId::Unseal, _) => unseal(core, &req).await,
        (RouteId::SealStatus, _) => Ok(ok(seal_status(core).await?)),
        (RouteId::Health, op) => health(core, &req, op == Head).await,
        (RouteId::Identity, _) => identity(core, &req),
        (RouteId::Seal, _) => {
            core.close();
            tracing::warn!(request_id = %req.request_id, "sealed by API request");
            Ok(Response::NoContent)
        }
        (RouteId::Mounts, _) => mounts::list(core, false).await,
        (RouteId::Auths, _) => mounts::list(core, true).await,
        (RouteId::Mount | RouteId::Auth, op) => {
            let auth = id == RouteId::Auth;
            match (rest.trim_end_matches('/').strip_suffix("/tune"), op) {
                (Some(path), Read) => mounts::read_tune(core, path, auth).await,
                (Some(path), Write) => mounts::tune(core, &req, path, auth)
                    .await
                    .map(|()| Response::NoContent),
                (Some(_), _) => Err(Error::MethodNotAllowed("unsupported operation".into())),
                (None, Read) => mounts::read_one(core, rest, auth).await,
                (None, Write) => mounts::enable(core, &req, rest, auth)
                    .await
                    .map(|()| Response::NoContent),
                (None, _) => mounts::disable(core, rest, auth)
                    .await
                    .map(|()| Response::NoContent),
            }
        }
        (RouteId::Policies, _) => policies::list_reply(core).await,
        (RouteId::Policy, op) => policies::handle(core, &req, rest, op).await,
        (RouteId::Capabilities, _) => policies::capabilities(core, &req, None).await,
        (RouteId::CapabilitiesSelf, _) => policies::capabilities(core, &req, caller.as_ref()).await,
        (RouteId::Rotate, _) => {
            let version = core.rotate_keyring().await?;
            tracing::info!(request_id = %req.request_id, version, "rotated the key-encryption key");
            Ok(Response::NoContent)
        }
        (RouteId::KeyStatus, _) => core.key_status(),
        (RouteId::RekeyInit, Read) => Ok(ok(core.rekey_status().await?)),
        (RouteId::Leader, _) => Ok(ok(json!({
            "ha_enabled": false,
            "is_self": false,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": "",
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }))),
        (RouteId::UiMounts, _) => {
            // The vault CLI asks which engine (and KV version) serves a path.
            let router = core.router().await?;
            let (mounted, _) = router
                .resolve(rest)
                .ok_or_else(|| Error::NotFound(String::new()))?;
            let mut data = mounted.entry.to_vault_json();
            data["path"] = json!(mounted.entry.path);
            Ok(Response::data(data))
        }
        (RouteId::RekeyInit, Delete) => {
            core.rekey_cancel();
            Ok(Response::NoContent)
        }
        (RouteId::RekeyInit, _) => {
            let (Some(shares), Some(threshold)) = (
                uint_field(&req, "secret_shares")?,
                uint_field(&req, "secret_threshold")?,
            ) else {
                return Err(Error::bad_request(
                    "secret_shares and secret_threshold are required",
                ));
            };
            Ok(ok(core.rekey_init(shares, threshold)?))
        }
        (RouteId::ServiceAccounts, _) => {
            let names = crate::service_accounts::list(&core.barrier).await?;
            Ok(Response::data(json!({ "keys": names })))
        }
        (RouteId::ServiceAccount, op) => service_account(core, &req, rest, op).await,
        (RouteId::Agents, _) => {
            let caller = caller.ok_or(Error::PermissionDenied)?;
            crate::agents::handle(core, &req, rest, &caller).await
        }
        (RouteId::RekeyUpdate, _) => {
            let key = req
                .field("key")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::bad_request("'key' is required"))?;
            let nonce = req
                .field("nonce")
                .and_then(Value::as_str)
                .unwrap_or_default();
            Ok(ok(core.rekey_update(nonce, key).await?))
        }
        (RouteId::Resolve, _) => {
            let caller = caller.as_ref().ok_or(Error::PermissionDenied)?;
            crate::resolve::resolve(core, &req, caller).await
        }
        (RouteId::Projects, _) => {
            let caller = caller.ok_or(Error::PermissionDenied)?;
            crate::projects::handle_root(core, &req, &caller).await
        }
        (RouteId::Project, _) => {
            let caller = caller.ok_or(Error::PermissionDenied)?;
            crate::projects::handle(core, &req, rest, &caller).await
        }
        (RouteId::Backup, _) => crate::backup::backup(core).await,
        (RouteId::Restore, _) => Err(Error::bad_request(
            "send the backup file itself as the request body (zafe operator restore FILE)",
        )),
        (RouteId::AuditExport, _) => crate::audit::api::export(core, &req).await,
        (RouteId::AuditVerify, _) => crate::audit::api::verify(core).await,
        (RouteId::AuditDevices, _) => crate::audit::api::devices(core),
        (RouteId::WrappingUnwrap, _) => crate::wrapping::unwrap(core, &req).await,
        (RouteId::WrappingLookup, _) => crate::wrapping::lookup(core, &req).await,
        (RouteId::WrappingRewrap, _) => crate::wrapping::rewrap(core, &req).await,
        (RouteId::WrappingWrap, _) => crate::wrapping::wrap_request(&req),
        (RouteId::AuditDevice, _) => Err(Error::bad_request(
            "audit devices are not enabled through the API in Zafe: the audit chain in the database \
             is always on, and a file sink is set in the configuration ([audit] file_path)",
        )),
        (RouteId::AuditCheckpoints, _) => crate::audit::api::checkpoints(core, &req).await,
        (RouteId::Totp, _) => crate::people::totp::handle(core, rest, &req, caller.as_ref()).await,
        (RouteId::OidcAuthUrl, _) => crate::people::oidc::auth_url_route(core, &req).await,
        (RouteId::OidcCallback, _) => {
            crate::people::oidc_accounts::callback_route(core, &req).await
        }
        (RouteId::People(endpoint), _) => {
            crate::people::api::handle(core, endpoint, rest, req, caller).await
        }
    }
}

fn ok(body: Value) -> Response {
    Response::Json(Status::OK, body)
}

fn uint_field(req: &Request, name: &str) -> Result<Option<usize>> {
    match req.field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| Error::bad_request(format!("{name} must be a non-negative integer"))),
    }
}

async fn init(core: &Arc<Core>, req: &Request) -> Result<Response> {
    for unsupported in ["pgp_keys", "root_token_pgp_key"] {
        if req
            .field(unsupported)
            .is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!(""))
        {
            return Err(Error::bad_request(format!(
                "{unsupported} is not supported by Zafe"
            )));
        }
    }
    // Auto-unseal clients send recovery_* instead, as with Vault.
    let shares = uint_field(req, "secret_shares")?.or(uint_field(req, "recovery_shares")?);
    let threshold = uint_field(req, "secret_threshold")?.or(uint_field(req, "recovery_threshold")?);
    let (Some(shares), Some(threshold)) = (shares, threshold) else {
        return Err(Error::bad_request(
            "secret_shares and secret_threshold are required",
        ));
    };
    let (shares, root_token) = core.initialize(shares, threshold, None).await?;
    tracing::info!(request_id = %req.request_id, shares = shares.len(), "initialized");
    // With a master key the server is unsealed now: offer the setup link.
    crate::people::setup::announce_if_needed(core).await;
    let keys: Vec<String> = shares.iter().map(|s| hex::encode(s.as_bytes())).collect();
    let keys_base64: Vec<String> = shares
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        .collect();
    Ok(ok(
        json!({ "keys": keys, "keys_base64": keys_base64, "root_token": root_token }),
    ))
}

async fn unseal(core: &Arc<Core>, req: &Request) -> Result<Response> {
    if !core.is_initialized().await? {
        return Err(Error::NotInitialized);
    }
    if req.field("reset").and_then(Value::as_bool) == Some(true) {
        core.seal.reset_progress();
        return Ok(ok(seal_status(core).await?));
    }
    let key = match req.field("key") {
        Some(Value::String(k)) => k,
        _ => {
            return Err(Error::bad_request(
                "'key' must be specified in request body as JSON, or 'reset' set to true",
            ));
        }
    };
    if core.is_sealed() {
        match core.seal.submit_share(key).await {
            Ok(UnsealProgress::Done(unsealed)) => {
                core.open(unsealed);
                tracing::info!(request_id = %req.request_id, "unsealed");
                crate::people::setup::announce_if_needed(core).await;
            }
            Ok(UnsealProgress::Collecting) => {}
            Err(e) => {
                tracing::warn!(request_id = %req.request_id, client_ip = %req.client_ip, "rejected unseal key share");
                return Err(e);
            }
        }
    }
    Ok(ok(seal_status(core).await?))
}

/// Vault's `sys/seal-status` body: whether the server is initialised and
/// sealed, the threshold and share count, the unseal progress, and, once
/// unsealed, the cluster's name and id. Never a key or a share.
async fn seal_status(core: &Arc<Core>) -> Result<Value> {
    let config = core.seal.config().await?;
    let (progress, nonce) = core.seal.progress();
    let sealed = core.is_sealed();
    let mut status = json!({
        "type": "shamir",
        "initialized": config.is_some(),
        "sealed": sealed,
        "t": config.as_ref().map_or(0, |c| c.secret_threshold),
        "n": config.as_ref().map_or(0, |c| c.secret_shares),
        "progress": progress,
        "nonce": nonce,
        "version": VERSION,
        "build_date": "",
        "migration": false,
        "recovery_seal": false,
        "storage_type": core.backend().kind(),
        "server_id": core.identity.server_id(),
    });
    if !sealed {
        let cluster = core.cluster();
        status["cluster_name"] = json!(cluster.cluster_name);
        status["cluster_id"] = json!(cluster.cluster_id);
    }
    Ok(status)
}

/// Vault's health endpoint: every field real clients expect, and the status
/// code overrides (`sealedcode`, `uninitcode`, `standbyok`, ...).
async fn health(core: &Arc<Core>, req: &Request, head: bool) -> Result<Response> {
    let initialized = core.is_initialized().await?;
    let sealed = core.is_sealed();
    let cluster = core.cluster();
    let body = json!({
        "initialized": initialized,
        "sealed": sealed,
        "standby": false,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": core.now_secs(),
        "version": VERSION,
        "enterprise": false,
        "cluster_name": cluster.cluster_name,
        "cluster_id": cluster.cluster_id,
    });
    let (param, default) = if !initialized {
        ("uninitcode", Status::NOT_IMPLEMENTED)
    } else if sealed {
        ("sealedcode", Status::SERVICE_UNAVAILABLE)
    } else {
        ("activecode", Status::OK)
    };
    let status = match req.query(param) {
        Some(code) => code
            .parse::<u16>()
            .ok()
            .and_then(Status::new)
            .ok_or_else(|| Error::bad_request(format!("{param} must be an HTTP status code")))?,
        None => default,
    };
    Ok(if head {
        Response::Status(status)
    } else {
        Response::Json(status, body)
    })
}

/// R-ID-2: a fresh signature over the caller's nonce.
fn identity(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let nonce = req.query("nonce").ok_or_else(|| {
        Error::bad_request("the nonce query parameter is required (hex, 16 to 64 random bytes)")
    })?;
    let nonce = hex::decode(nonce)
        .ok()
        .filter(|n| zafe_core::identity::NONCE_LEN_RANGE.contains(&n.len()))
        .ok_or_else(|| Error::bad_request("nonce must be 16 to 64 bytes written in hex"))?;
    let tls = core.tls_spki.or(core.proxy_spki);
    let proof = core.identity.prove(&nonce, core.now_secs(), tls);
    Ok(ok(serde_json::to_value(proof).expect("serialisable")))
}

/// `sys/service-accounts/<name>[/token[/<accessor>]]` (R-AUTH-12).
async fn service_account(
    core: &Arc<Core>,
    req: &Request,
    rest: &str,
    op: Operation,
) -> Result<Response> {
    use crate::service_accounts as sa;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let envelope = Response::data;
    match (parts.as_slice(), op) {
        ([name], Read) => {
            let (account, _) = sa::read(&core.barrier, name)
                .await?
                .ok_or_else(|| Error::NotFound(String::new()))?;
            let mut data = sa::to_json(&account);
            data["tokens"] = json!(sa::token_usage(&core.barrier, &account).await?);
            Ok(envelope(data))
        }
        ([name], Write) => {
            let (account, token, record) = sa::create(
                &core.barrier,
                &core.token_key()?,
                name,
                req.body.as_deref(),
                core.now_secs(),
            )
            .await?;
            let mut data = sa::to_json(&account);
            data["token"] = json!(token);
            data["token_info"] = sa::token_json(&record);
            Ok(envelope(data))
        }
        ([name], Delete) => {
            sa::delete(&core.barrier, name).await?;
            Ok(Response::NoContent)
        }
        ([name, "token"], Write) => {
            let (token, record) = sa::issue_token(
                &core.barrier,
                &core.token_key()?,
                name,
                req.body.as_deref(),
                core.now_secs(),
            )
            .await?;
            let mut data = sa::token_json(&record);
            data["token"] = json!(token);
            Ok(envelope(data))
        }
        ([name, "token", accessor], Delete) => {
            sa::revoke_token(&core.barrier, name, accessor).await?;
            Ok(Response::NoContent)
        }
        _ => Err(Error::NotFound("unsupported path".into())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    // Every route is reachable: `find` is first-match, so a route listed
    // after another that also matches its paths would never run.
    #[test]
    fn every_route_is_reachable_and_patterns_are_unique() {
        let mut seen = HashSet::new();
        for route in ROUTES {
            assert!(seen.insert(route.path), "{} is listed twice", route.path);
            let path = match route.path.strip_suffix("/*") {
                Some(prefix) => format!("{prefix}/some/rest"),
                None => route.path.to_string(),
            };
            let (found, _) = find(&path).unwrap_or_else(|| panic!("{path} finds nothing"));
            assert_eq!(found.path, route.path, "{path} is shadowed");
        }
    }

    // A route's shape: relative, no empty or wildcard segment except one
    // trailing `/*`, and at least one operation, none twice.
    #[test]
    fn routes_are_well_formed() {
        for route in ROUTES {
            let exact = route.path.strip_suffix("/*").unwrap_or(route.path);
            assert!(
                !exact.is_empty()
                    && !exact.starts_with('/')
                    && exact.split('/').all(|s| !s.is_empty() && s != "*"),
                "{}",
                route.path
            );
            assert!(!route.operations.is_empty(), "{}", route.path);
            for (i, op) in route.operations.iter().enumerate() {
                assert!(!route.operations[..i].contains(op), "{}", route.path);
            }
        }
    }

    // R-AUTH-1: only the documented allowlist runs without a token (the
    // list in SECURITY.md and sys_api's walk over the routes).
    #[test]
    fn the_public_allowlist_is_exactly_the_documented_one() {
        let public: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.access == Access::Public)
            .map(|r| r.path)
            .collect();
        assert_eq!(
            public,
            [
                "sys/init",
                "sys/unseal",
                "sys/seal-status",
                "sys/health",
                "sys/identity",
                "sys/setup",
                "auth/user/login",
                "auth/user/refresh",
                "auth/user/register",
                // Authenticated by the single-use wrapping token they are given, as in Vault.
                "sys/wrapping/unwrap",
                "sys/wrapping/lookup",
                "sys/wrapping/rewrap",
                "auth/oidc/auth_url",
                "auth/oidc/callback",
            ]
        );
        // Public routes never pass a rest to their handler.
        assert!(
            ROUTES
                .iter()
                .filter(|r| r.access == Access::Public)
                .all(|r| !r.path.ends_with("/*"))
        );
    }

    // Every handler has one route, except the legacy and the new spelling
    // of the policy API (`sys/policy` and `sys/policies/acl`).
    #[test]
    fn each_handler_has_one_route_but_the_two_policy_apis() {
        for route in ROUTES {
            let same: Vec<&str> = ROUTES
                .iter()
                .filter(|r| r.id == route.id)
                .map(|r| r.path)
                .collect();
            let expected = match route.id {
                RouteId::Policies => vec!["sys/policy", "sys/policies/acl"],
                RouteId::Policy => vec!["sys/policy/*", "sys/policies/acl/*"],
                _ => vec![route.path],
            };
            assert_eq!(same, expected);
        }
    }

    #[test]
    fn find_matches_exact_paths_and_prefixes_with_a_rest() {
        let (r, rest) = find("sys/health").unwrap();
        assert_eq!((r.path, rest), ("sys/health", ""));
        // A trailing slash names the same exact route.
        assert_eq!(find("sys/health/").unwrap().0.path, "sys/health");
        let (r, rest) = find("sys/policy/dev/").unwrap();
        assert_eq!((r.path, rest), ("sys/policy/*", "dev/"));
        // A prefix route needs a rest; the bare prefix is its own route or nothing.
        assert_eq!(find("sys/policy").unwrap().0.path, "sys/policy");
        assert_eq!(find("sys/policy/").unwrap().0.path, "sys/policy");
        assert!(find("sys/projects/").is_some_and(|(r, _)| r.path == "sys/projects"));
        // Neither a longer name nor an unknown path matches.
        assert!(find("sys/healthy").is_none());
        assert!(find("sys/policyx/dev").is_none());
        assert!(find("secret/data/x").is_none());
        assert!(find("").is_none());
    }
}
