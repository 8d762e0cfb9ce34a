//! The policy store: ACL policies behind the barrier at `core/policy/<name>`,
//! the Vault endpoints that manage them (`sys/policy`, `sys/policies/acl`,
//! `sys/capabilities*`), and compiled ACLs cached per policy set.
//!
//! The language and its evaluation are `zafe_core::policy`: this module only
//! stores texts and hands them to that one engine.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
pub use zafe_core::policy::Capability;
use zafe_core::policy::{Acl, Policy};

use crate::core::{Core, Operation, Reply, Request};
use crate::engine::envelope;
use crate::error::{Error, Result};
use crate::tokens::TokenEntry;

const PREFIX: &str = "core/policy/";

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    policy: String,
}

/// Compiled ACLs keyed by the sorted policy names of a token. Cleared when
/// any policy changes (and at seal).
#[derive(Default)]
pub struct PolicyStore {
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
    /// ACLs of generated policies (project roles) plus stored ones, keyed by
    /// the generated texts themselves and the stored names: a key can never
    /// stand for another set of grants, so nothing here goes stale when a
    /// membership changes.
    generated: RwLock<HashMap<GeneratedKey, Arc<Acl>>>,
}

/// (sorted generated (name, HCL) pairs, sorted stored policy names).
type GeneratedKey = (Vec<(String, String)>, Vec<String>);

/// Distinct generated ACLs kept before the cache starts over.
const MAX_GENERATED: usize = 4096;

impl PolicyStore {
    pub fn clear(&self) {
        self.acls.write().expect("acl cache lock").clear();
        self.generated.write().expect("acl cache lock").clear();
    }

    /// The ACL of generated policies (name, HCL) together with stored
    /// policies by name, compiled by the one policy engine and cached.
    pub async fn acl_for_generated(
        &self,
        core: &Core,
        generated: &[(String, String)],
        names: &[String],
    ) -> Result<Arc<Acl>> {
        let mut texts = generated.to_vec();
        texts.sort();
        texts.dedup();
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        let key = (texts, names);
        if let Some(acl) = self.generated.read().expect("acl cache lock").get(&key) {
            return Ok(acl.clone());
        }
        let mut policies = Vec::new();
        for (name, text) in &key.0 {
            policies.push(
                Policy::parse(name, text)
                    .map_err(|e| Error::Internal(format!("generated policy {name}: {e}")))?,
            );
        }
        for name in &key.1 {
            if let Some(policy) = load(core, name).await? {
                policies.push(policy);
            }
        }
        let acl = Arc::new(Acl::new(policies.iter()));
        let mut cache = self.generated.write().expect("acl cache lock");
        if cache.len() >= MAX_GENERATED {
            cache.clear();
        }
        cache.insert(key, acl.clone());
        Ok(acl)
    }

    pub async fn acl_for(&self, core: &Core, names: &[String]) -> Result<Arc<Acl>> {
        let mut key: Vec<String> = names.to_vec();
        key.sort();
        key.dedup();
        if let Some(acl) = self.acls.read().expect("acl cache lock").get(&key) {
            return Ok(acl.clone());
        }
        let mut policies = Vec::new();
        for name in &key {
            if let Some(policy) = load(core, name).await? {
                policies.push(policy);
            }
        }
        let acl = Arc::new(Acl::new(policies.iter()));
        self.acls
            .write()
            .expect("acl cache lock")
            .insert(key, acl.clone());
        Ok(acl)
    }
}

/// A stored policy, or the built-in `default` while it has not been
/// customised. `root` is never stored: root tokens bypass the ACL.
async fn load(core: &Core, name: &str) -> Result<Option<Policy>> {
    let text = match read_text(core, name).await? {
        Some(text) => text,
        None if name == "default" => zafe_core::policy::DEFAULT_POLICY_HCL.to_string(),
        None => return Ok(None),
    };
    Policy::parse(name, &text)
        .map(Some)
        .map_err(|e| Error::Internal(format!("stored policy {name} no longer parses: {e}")))
}

async fn read_text(core: &Core, name: &str) -> Result<Option<String>> {
    let Some(record) = core.barrier.get(&format!("{PREFIX}{name}")).await? else {
        return Ok(None);
    };
    let stored: Stored = serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
        key: format!("{PREFIX}{name}"),
    })?;
    Ok(Some(stored.policy))
}

async fn names(core: &Core) -> Result<Vec<String>> {
    let mut names: Vec<String> = core
        .barrier
        .list(PREFIX, "", 10_000)
        .await?
        .into_iter()
        .filter(|n| !n.ends_with('/'))
        .collect();
    if !names.iter().any(|n| n == "default") {
        names.push("default".into());
    }
    names.push("root".into());
    names.sort();
    Ok(names)
}

/// `GET sys/policy` and `LIST sys/policies/acl`.
pub async fn list_reply(core: &Arc<Core>, req: &Request) -> Result<Reply> {
    let names = names(core).await?;
    let mut body = envelope(
        &req.request_id,
        Some(json!({ "keys": names, "policies": names })),
        None,
        None,
    );
    body["keys"] = json!(names);
    body["policies"] = json!(names);
    Ok(Reply::Json(http::StatusCode::OK, body))
}

/// `sys/policy/<name>` and `sys/policies/acl/<name>`.
pub async fn handle(core: &Arc<Core>, req: &Request, name: &str, op: Operation) -> Result<Reply> {
    let name = name.trim_end_matches('/').to_lowercase();
    let legacy = req.path.starts_with("sys/policy/");
    match op {
        Operation::Read => {
            let text = match read_text(core, &name).await? {
                Some(text) => text,
                None if name == "default" => zafe_core::policy::DEFAULT_POLICY_HCL.to_string(),
                None if name == "root" => String::new(),
                None => return Err(Error::NotFound(String::new())),
            };
            let data = if legacy {
                json!({ "name": name, "rules": text })
            } else {
                json!({ "name": name, "policy": text })
            };
            let mut body = envelope(&req.request_id, Some(data.clone()), None, None);
            if legacy {
                body["name"] = data["name"].clone();
                body["rules"] = data["rules"].clone();
            }
            Ok(Reply::Json(http::StatusCode::OK, body))
        }
        Operation::Write => {
            if name == "root" {
                return Err(Error::bad_request("cannot update the root policy"));
            }
            let name = zafe_core::policy::normalize_policy_name(&name)
                .map_err(|e| Error::bad_request(e.to_string()))?;
            let text = req
                .field("policy")
                .or_else(|| req.field("rules"))
                .and_then(Value::as_str)
                .ok_or_else(|| Error::bad_request("'policy' parameter not supplied or empty"))?;
            // Parse before storing: a policy that does not parse is never saved.
            Policy::parse(&name, text)
                .map_err(|e| Error::bad_request(format!("failed to parse policy: {e}")))?;
            let stored = serde_json::to_vec(&Stored {
                name: name.clone(),
                policy: text.to_string(),
            })
            .expect("serialisable");
            let key = format!("{PREFIX}{name}");
            core.barrier.update(&key, |_| Some(stored.clone())).await?;
            core.policies.clear();
            Ok(Reply::NoContent)
        }
        Operation::Delete => {
            zafe_core::policy::check_policy_deletable(&name)
                .map_err(|e| Error::bad_request(e.to_string()))?;
            core.barrier.delete(&format!("{PREFIX}{name}")).await?;
            core.policies.clear();
            Ok(Reply::NoContent)
        }
        _ => Err(Error::MethodNotAllowed("unsupported operation".into())),
    }
}

/// `sys/capabilities-self` (for the caller) and `sys/capabilities` (for a
/// token given in the body; needs the right to call it, checked by the core).
pub async fn capabilities(
    core: &Arc<Core>,
    req: &Request,
    caller: Option<&TokenEntry>,
) -> Result<Reply> {
    let paths: Vec<String> = match (req.field("paths"), req.field("path")) {
        (Some(Value::Array(a)), _) => a
            .iter()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect(),
        (Some(Value::String(s)), _) | (_, Some(Value::String(s))) => vec![s.clone()],
        _ => return Err(Error::bad_request("'paths' must be given")),
    };
    let subject = match caller {
        Some(c) => c.clone(),
        None => {
            let token = req
                .field("token")
                .and_then(Value::as_str)
                .ok_or_else(|| Error::bad_request("'token' must be given"))?;
            crate::tokens::lookup(&core.barrier, &core.token_key()?, token)
                .await?
                .ok_or_else(|| Error::bad_request("invalid token"))?
        }
    };
    let mut data = serde_json::Map::new();
    let mut all: Vec<String> = Vec::new();
    for path in &paths {
        let caps: Vec<String> = if subject.is_root() {
            vec!["root".to_string()]
        } else {
            let acl = core.acl_of(&subject).await?;
            let names = acl.capabilities(path.trim_start_matches('/')).names();
            if names.is_empty() {
                vec!["deny".to_string()]
            } else {
                names.into_iter().map(str::to_string).collect()
            }
        };
        for c in &caps {
            if !all.contains(c) {
                all.push(c.clone());
            }
        }
        data.insert(path.clone(), json!(caps));
    }
    data.insert("capabilities".into(), json!(all));
    let mut body = envelope(
        &req.request_id,
        Some(Value::Object(data.clone())),
        None,
        None,
    );
    for (k, v) in data {
        body[k] = v;
    }
    Ok(Reply::Json(http::StatusCode::OK, body))
}
