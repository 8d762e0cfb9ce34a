//! The system backend: `sys/...` routes with Vault's request and response
//! shapes. [`ROUTES`] is the one table of what exists and who may call it;
//! the core consults it for every request, and the test suite walks it to
//! prove that only the public allowlist answers strangers (R-AUTH-1).

use std::sync::Arc;

use base64::Engine as _;
use http::StatusCode;
use serde_json::{Value, json};

use crate::core::{Core, Operation, Reply, Request};
use crate::error::{Error, Result};
use crate::seal::UnsealProgress;
use crate::tokens::TokenEntry;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: health, seal status, init, unseal, identity.
    Public,
    /// Any valid token.
    Token,
    /// A token with the root policy (sudo).
    Root,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteId {
    Init,
    Unseal,
    SealStatus,
    Health,
    Identity,
    Seal,
}

pub struct Route {
    pub path: &'static str,
    pub access: Access,
    pub operations: &'static [Operation],
    pub id: RouteId,
}

use Operation::*;

pub const ROUTES: &[Route] = &[
    Route { path: "sys/init", access: Access::Public, operations: &[Read, Write], id: RouteId::Init },
    Route { path: "sys/unseal", access: Access::Public, operations: &[Write], id: RouteId::Unseal },
    Route { path: "sys/seal-status", access: Access::Public, operations: &[Read], id: RouteId::SealStatus },
    Route { path: "sys/health", access: Access::Public, operations: &[Read, Head], id: RouteId::Health },
    Route { path: "sys/identity", access: Access::Public, operations: &[Read], id: RouteId::Identity },
    Route { path: "sys/seal", access: Access::Root, operations: &[Write], id: RouteId::Seal },
];

pub fn find(path: &str) -> Option<&'static Route> {
    let path = path.trim_end_matches('/');
    ROUTES.iter().find(|r| r.path == path)
}

pub async fn dispatch(core: &Arc<Core>, id: RouteId, req: Request, _caller: Option<TokenEntry>) -> Result<Reply> {
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
            Ok(Reply::NoContent)
        }
    }
}

fn ok(body: Value) -> Reply {
    Reply::Json(StatusCode::OK, body)
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

async fn init(core: &Arc<Core>, req: &Request) -> Result<Reply> {
    for unsupported in ["pgp_keys", "root_token_pgp_key"] {
        if req.field(unsupported).is_some_and(|v| !v.is_null() && v != &json!([]) && v != &json!("")) {
            return Err(Error::bad_request(format!("{unsupported} is not supported by Zafe")));
        }
    }
    // Auto-unseal clients send recovery_* instead, as with Vault.
    let shares = uint_field(req, "secret_shares")?.or(uint_field(req, "recovery_shares")?);
    let threshold = uint_field(req, "secret_threshold")?.or(uint_field(req, "recovery_threshold")?);
    let (Some(shares), Some(threshold)) = (shares, threshold) else {
        return Err(Error::bad_request("secret_shares and secret_threshold are required"));
    };
    let (shares, root_token) = core.initialize(shares, threshold, None).await?;
    tracing::info!(request_id = %req.request_id, shares = shares.len(), "initialized");
    let keys: Vec<String> = shares.iter().map(|s| hex::encode(s.as_bytes())).collect();
    let keys_base64: Vec<String> = shares
        .iter()
        .map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_bytes()))
        .collect();
    Ok(ok(json!({ "keys": keys, "keys_base64": keys_base64, "root_token": root_token })))
}

async fn unseal(core: &Arc<Core>, req: &Request) -> Result<Reply> {
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

pub async fn seal_status(core: &Arc<Core>) -> Result<Value> {
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
async fn health(core: &Arc<Core>, req: &Request, head: bool) -> Result<Reply> {
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
        "server_time_utc": crate::seal::now(),
        "version": VERSION,
        "enterprise": false,
        "cluster_name": cluster.cluster_name,
        "cluster_id": cluster.cluster_id,
    });
    let (param, default) = if !initialized {
        ("uninitcode", StatusCode::NOT_IMPLEMENTED)
    } else if sealed {
        ("sealedcode", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("activecode", StatusCode::OK)
    };
    let status = match req.query(param) {
        Some(code) => code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or_else(|| Error::bad_request(format!("{param} must be an HTTP status code")))?,
        None => default,
    };
    Ok(if head { Reply::Status(status) } else { Reply::Json(status, body) })
}

/// R-ID-2: a fresh signature over the caller's nonce.
fn identity(core: &Arc<Core>, req: &Request) -> Result<Reply> {
    let nonce = req
        .query("nonce")
        .ok_or_else(|| Error::bad_request("the nonce query parameter is required (hex, 16 to 64 random bytes)"))?;
    let nonce = hex::decode(nonce)
        .ok()
        .filter(|n| zafe_core::identity::NONCE_LEN_RANGE.contains(&n.len()))
        .ok_or_else(|| Error::bad_request("nonce must be 16 to 64 bytes written in hex"))?;
    let tls = core.tls_spki.or(core.proxy_spki);
    let proof = core.identity.prove(&nonce, crate::seal::now(), tls);
    Ok(ok(serde_json::to_value(proof).expect("serialisable")))
}
