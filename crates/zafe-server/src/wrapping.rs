//! Response wrapping, as Vault does it: a request with `X-Vault-Wrap-TTL` gets a single-use
//! wrapping token instead of its answer (`wrap_info`), and whoever holds that token gets the
//! answer once from `sys/wrapping/unwrap`. The usual use: an orchestrator fetches a wrapped
//! AppRole secret id or token and hands the wrapping token to the machine; if anyone unwrapped
//! it on the way, the machine's unwrap fails and says so.
//!
//! - The wrapped answer is kept behind the barrier at `sys/wrapping/token/<keyed hash>` (the
//!   token itself is never stored), written in the request's own commit, so with its audit
//!   entry.
//! - Unwrapping deletes the record with a compare-and-swap on its generation: of two unwraps
//!   racing for one token, exactly one gets the answer. Rewrapping replaces it the same way.
//! - A wrapping token expires after its TTL (1 s to 30 days); an expired one is refused like
//!   an unknown one, and its record deleted when it is next presented.
//! - `sys/wrapping/lookup` says when and where a token was made and its TTL, never the answer.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_core::token::{self, TokenKind};

use crate::barrier::{BarrierError, Expect, Write};
use crate::core::{Core, Request, Response};
use crate::error::{Error, Result};

const PREFIX: &str = "sys/wrapping/token/";
/// The longest a wrapping token may live.
pub(crate) const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// Vault's answer for a token that is unknown, used, expired or malformed: one message, so
/// that a caller learns nothing about which.
const INVALID: &str = "wrapping token is not valid or does not exist";

/// A wrapped answer, as stored.
#[derive(Serialize, Deserialize)]
struct Wrapped {
    data: Option<Value>,
    auth: Option<Value>,
    #[serde(default)]
    warnings: Vec<String>,
    creation_path: String,
    /// Unix seconds.
    creation_time: i64,
    ttl: u64,
    accessor: String,
}

impl Wrapped {
    fn expired(&self, now: i64) -> bool {
        now >= self
            .creation_time
            .saturating_add(i64::try_from(self.ttl).unwrap_or(i64::MAX))
    }
}

fn key_for(core: &Core, wrapping_token: &str) -> Result<String> {
    let hash = token::lookup_hash(&core.token_key()?, wrapping_token);
    Ok(format!("{PREFIX}{}", hex::encode(hash)))
}

/// Wraps `response` (an answer with `data` or `auth`) in a new wrapping token living `ttl`
/// seconds; anything else (no content, a stream, an error status) is answered as it is, as
/// Vault does.
pub(crate) async fn wrap(
    core: &Arc<Core>,
    response: Response,
    ttl: u64,
    path: &str,
) -> Result<Response> {
    let (data, auth, warnings) = match response {
        Response::Vault {
            status,
            data,
            auth,
            warnings,
        } if status == zafe_engine::Status::OK && (data.is_some() || auth.is_some()) => {
            (data, auth, warnings)
        }
        Response::VaultWithTopLevel { data, .. } => (Some(data), None, Vec::new()),
        other => return Ok(other),
    };
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(Error::bad_request(format!(
            "the wrapping TTL must be between 1 second and {} days",
            MAX_TTL_SECS / 86_400
        )));
    }
    let wrapped_accessor = auth
        .as_ref()
        .and_then(|a| a["accessor"].as_str())
        .unwrap_or_default()
        .to_string();
    let record = Wrapped {
        data,
        auth,
        warnings,
        creation_path: path.to_string(),
        creation_time: core.now_secs(),
        ttl,
        accessor: uuid::Uuid::new_v4().to_string(),
    };
    let wrapping_token = token::generate(TokenKind::Wrapping);
    store(core, &wrapping_token, &record, Expect::Absent).await?;
    Ok(Response::Wrapped(wrap_info(
        &wrapping_token,
        &record,
        &wrapped_accessor,
    )))
}

fn wrap_info(wrapping_token: &str, record: &Wrapped, wrapped_accessor: &str) -> Value {
    json!({
        "token": wrapping_token,
        "accessor": record.accessor,
        "ttl": record.ttl,
        "creation_time": zafe_engine::rfc3339(record.creation_time),
        "creation_path": record.creation_path,
        "wrapped_accessor": wrapped_accessor,
    })
}

async fn store(core: &Core, wrapping_token: &str, record: &Wrapped, expect: Expect) -> Result<()> {
    let value = serde_json::to_vec(record)
        .map_err(|e| Error::Internal(format!("a wrapped answer does not serialise: {e}")))?;
    core.barrier
        .commit(vec![Write::Put {
            key: key_for(core, wrapping_token)?,
            value,
            expect,
        }])
        .await?;
    Ok(())
}

/// The wrapping token a request names: `token` in the body, else the request's own token.
fn presented(req: &Request) -> Result<String> {
    let named = req
        .field("token")
        .and_then(Value::as_str)
        .or_else(|| req.query("token"));
    let token = named.or(req.token.as_deref()).ok_or_else(|| {
        Error::bad_request("no wrapping token given (the request's token, or \"token\")")
    })?;
    if !token::is_well_formed(token, TokenKind::Wrapping) {
        return Err(Error::bad_request(INVALID));
    }
    Ok(token.to_string())
}

/// The record of a live wrapping token and its generation; expired ones are deleted.
async fn find(core: &Core, wrapping_token: &str) -> Result<(String, Wrapped, i64)> {
    let key = key_for(core, wrapping_token)?;
    let Some(stored) = core.barrier.get(&key).await? else {
        return Err(Error::bad_request(INVALID));
    };
    let record: Wrapped =
        serde_json::from_slice(&stored.value).map_err(|_| Error::Integrity { key: key.clone() })?;
    if record.expired(core.now_secs()) {
        let _ = consume(core, &key, stored.generation).await;
        return Err(Error::bad_request(INVALID));
    }
    Ok((key, record, stored.generation))
}

/// Deletes the record if it is still at `generation`: `false` when another request consumed it
/// first.
async fn consume(core: &Core, key: &str, generation: i64) -> Result<bool> {
    match core
        .barrier
        .commit(vec![Write::Delete {
            key: key.to_string(),
            expect: Some(Expect::Generation(generation)),
        }])
        .await
    {
        Ok(()) => Ok(true),
        Err(BarrierError::Conflict { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `sys/wrapping/unwrap`: the answer, once.
pub(crate) async fn unwrap(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let wrapping_token = presented(req)?;
    let (key, record, generation) = find(core, &wrapping_token).await?;
    if !consume(core, &key, generation).await? {
        return Err(Error::bad_request(INVALID));
    }
    Ok(Response::Vault {
        status: zafe_engine::Status::OK,
        data: record.data,
        auth: record.auth,
        warnings: record.warnings,
    })
}

/// `sys/wrapping/lookup`: when and where a token was made, and its TTL; never the answer.
pub(crate) async fn lookup(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let wrapping_token = presented(req)?;
    let (_, record, _) = find(core, &wrapping_token).await?;
    Ok(Response::data(json!({
        "creation_path": record.creation_path,
        "creation_time": zafe_engine::rfc3339(record.creation_time),
        "creation_ttl": record.ttl,
    })))
}

/// `sys/wrapping/rewrap`: the same answer under a new token; the old one ends.
pub(crate) async fn rewrap(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let wrapping_token = presented(req)?;
    let (key, mut record, generation) = find(core, &wrapping_token).await?;
    if !consume(core, &key, generation).await? {
        return Err(Error::bad_request(INVALID));
    }
    let wrapped_accessor = record
        .auth
        .as_ref()
        .and_then(|a| a["accessor"].as_str())
        .unwrap_or_default()
        .to_string();
    record.creation_time = core.now_secs();
    record.accessor = uuid::Uuid::new_v4().to_string();
    let fresh = token::generate(TokenKind::Wrapping);
    store(core, &fresh, &record, Expect::Absent).await?;
    Ok(Response::Wrapped(wrap_info(
        &fresh,
        &record,
        &wrapped_accessor,
    )))
}

/// `sys/wrapping/wrap`: the body itself is the answer, which the core wraps on its way out.
pub(crate) fn wrap_request(req: &Request) -> Result<Response> {
    if req.wrap_ttl.is_none() {
        return Err(Error::bad_request(
            "sys/wrapping/wrap needs a wrapping TTL (X-Vault-Wrap-TTL)",
        ));
    }
    let data = req
        .body
        .as_ref()
        .map(|b| (**b).clone())
        .filter(|d| d.as_object().is_some_and(|o| !o.is_empty()))
        .ok_or_else(|| Error::bad_request("nothing to wrap: send the data as the body"))?;
    Ok(Response::data(data))
}
