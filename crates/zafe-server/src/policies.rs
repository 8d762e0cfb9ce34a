//! The policy store: ACL policies behind the barrier at `core/policy/<name>`,
//! the Vault endpoints that manage them (`sys/policy`, `sys/policies/acl`,
//! `sys/capabilities*`), and compiled ACLs cached per policy set.
//!
//! The language and its evaluation are `zafe_core::policy`: this module only
//! stores texts and hands them to that one engine.
//!
//! # Policies that a token names but that are not there (R-KEY-9)
//!
//! Beside the policies, one record, the index at `core/policy-index`, names every
//! policy ever stored and whether it still exists; it is written in the same
//! atomic commit as every policy write and delete. So when a token names a
//! policy:
//!
//! - stored and live in the index: the policy applies;
//! - never stored (absent, and not in the index): ignored, as in Vault,
//!   where a token may name a policy that is created later;
//! - deleted through the API (`deleted` in the index): ignored, as in
//!   Vault: the token keeps working without it;
//! - live in the index but its row is gone (removed behind the server's
//!   back), or a row the index says was deleted or never knew (a deleted row
//!   put back): the request fails with an integrity error (500, logged),
//!   never silently with more or less access.
//!
//! A store written before the index existed has none until the first policy
//! change, which creates it from the policies stored then; until then a
//! missing policy is ignored as before.

use parking_lot::RwLock;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
pub(crate) use zafe_core::policy::Capability;
use zafe_core::policy::{Acl, Policy};

use crate::barrier::{Barrier, BarrierError, Expect, Write};
use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};

const PREFIX: &str = "core/policy/";
/// The policy index (see the module documentation). Not under [`PREFIX`],
/// so listings of policies never show it.
const INDEX_KEY: &str = "core/policy-index";

/// How often a policy change retries a lost compare-and-swap race.
const MAX_RETRIES: usize = 64;

/// Every policy name ever stored, and whether it still exists.
#[derive(Default, Serialize, Deserialize)]
struct Index {
    names: BTreeMap<String, State>,
}

#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    Live,
    Deleted,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    name: String,
    policy: String,
}

/// The policy store's state in the core.
#[derive(Default)]
pub struct PolicyStore {
    /// Policy changes of this process, one at a time: every change also
    /// rewrites the one index record, so concurrent changes would only
    /// lose compare-and-swap races to each other (and, with dozens at once,
    /// run out of retries). Other nodes still race; the retries cover them.
    changes: tokio::sync::Mutex<()>,
}

/// Compiled ACLs, part of the core's unsealed state (dropped at seal). It reads policies through
/// the barrier and nothing else of the core.
#[derive(Default)]
pub(crate) struct AclCache {
    /// Keyed by the sorted policy names of a token. Cleared when any policy changes.
    acls: RwLock<HashMap<Vec<String>, Arc<Acl>>>,
    /// ACLs of generated policies (project roles) plus stored ones, keyed by
    /// the generated texts themselves and the stored names: a key can never
    /// stand for another set of grants, so nothing here goes stale when a
    /// membership changes.
    generated: RwLock<HashMap<GeneratedKey, Arc<Acl>>>,
    /// Bumped by every [`AclCache::clear`]: an ACL compiled from policies read before a clear
    /// (a change on this node or another) is not cached after it, or it would bring the old
    /// grants back.
    generation: std::sync::atomic::AtomicU64,
}

/// (sorted generated (name, HCL) pairs, sorted stored policy names).
type GeneratedKey = (Vec<(String, String)>, Vec<String>);

/// Distinct generated ACLs kept before the cache starts over.
const MAX_GENERATED: usize = 4096;

impl AclCache {
    /// Forgets every compiled ACL.
    pub(crate) fn clear(&self) {
        let mut acls = self.acls.write();
        let mut generated = self.generated.write();
        self.generation.fetch_add(1, Ordering::SeqCst);
        acls.clear();
        generated.clear();
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The ACL of generated policies (name, HCL) together with stored
    /// policies by name, compiled by the one policy engine and cached.
    pub(crate) async fn acl_for_generated(
        &self,
        barrier: &Barrier,
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
        if let Some(acl) = self.generated.read().get(&key) {
            return Ok(acl.clone());
        }
        let read_at = self.generation();
        let mut policies = Vec::new();
        for (name, text) in &key.0 {
            policies.push(
                Policy::parse(name, text)
                    .map_err(|e| Error::Internal(format!("generated policy {name}: {e}")))?,
            );
        }
        let index = read_index(barrier).await?;
        for name in &key.1 {
            if let Some(policy) = load(barrier, index.as_ref(), name).await? {
                policies.push(policy);
            }
        }
        let acl = Arc::new(Acl::new(policies.iter()));
        let mut cache = self.generated.write();
        if self.generation() == read_at {
            if cache.len() >= MAX_GENERATED {
                cache.clear();
            }
            cache.insert(key, acl.clone());
        }
        Ok(acl)
    }

    /// The ACL of the stored policies `names` (a token's), compiled by the
    /// one policy engine and cached by the sorted set of names (`default`
    /// is the built-in one until customised). Names that were never stored,
    /// or were deleted through the API, are ignored; a policy whose row and
    /// index disagree is [`Error::Integrity`].
    pub(crate) async fn acl_for(&self, barrier: &Barrier, names: &[String]) -> Result<Arc<Acl>> {
        let mut key: Vec<String> = names.to_vec();
        key.sort();
        key.dedup();
        if let Some(acl) = self.acls.read().get(&key) {
            return Ok(acl.clone());
        }
        let read_at = self.generation();
        let mut policies = Vec::new();
        let index = read_index(barrier).await?;
        for name in &key {
            if let Some(policy) = load(barrier, index.as_ref(), name).await? {
                policies.push(policy);
            }
        }
        let acl = Arc::new(Acl::new(policies.iter()));
        let mut cache = self.acls.write();
        if self.generation() == read_at {
            cache.insert(key, acl.clone());
        }
        Ok(acl)
    }
}

/// A stored policy, or the built-in `default` while it has not been
/// customised. `root` is never stored: root tokens bypass the ACL.
async fn load(barrier: &Barrier, index: Option<&Index>, name: &str) -> Result<Option<Policy>> {
    let text = match checked_text(barrier, index, name).await? {
        Some(text) => text,
        None if name == "default" => zafe_core::policy::DEFAULT_POLICY_HCL.to_string(),
        None => return Ok(None),
    };
    Policy::parse(name, &text)
        .map(Some)
        .map_err(|e| Error::Internal(format!("stored policy {name} no longer parses: {e}")))
}

/// The stored text of `name`, checked against the index (see the module
/// documentation): `None` for a policy that was never stored or was deleted
/// through the API; an integrity error for a row that the index says must
/// be there and is not, or must not be there and is.
async fn checked_text(
    barrier: &Barrier,
    index: Option<&Index>,
    name: &str,
) -> Result<Option<String>> {
    let text = read_text(barrier, name).await?;
    let Some(index) = index else {
        // A store from before the index: nothing to check against yet.
        return Ok(text);
    };
    let state = index.names.get(name).copied();
    match (&text, state) {
        (Some(_), Some(State::Live)) | (None, None | Some(State::Deleted)) => Ok(text),
        (None, Some(State::Live)) | (Some(_), None | Some(State::Deleted)) => {
            Err(Error::Integrity {
                key: format!("{PREFIX}{name}"),
            })
        }
    }
}

async fn read_index(barrier: &Barrier) -> Result<Option<Index>> {
    Ok(read_index_record(barrier).await?.map(|(index, _)| index))
}

async fn read_index_record(barrier: &Barrier) -> Result<Option<(Index, i64)>> {
    let Some(record) = barrier.get(INDEX_KEY).await? else {
        return Ok(None);
    };
    let index = serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
        key: INDEX_KEY.into(),
    })?;
    Ok(Some((index, record.generation)))
}

/// Stores (`Some`) or deletes (`None`) the policy `name` together with its
/// entry in the index, in one atomic commit.
async fn change(core: &Core, name: &str, stored: Option<Vec<u8>>) -> Result<()> {
    let key = format!("{PREFIX}{name}");
    let _one_at_a_time = core.policies.changes.lock().await;
    for _ in 0..MAX_RETRIES {
        let (mut index, index_expect) = match read_index_record(&core.barrier).await? {
            Some((index, generation)) => (index, Expect::Generation(generation)),
            None => (index_of_stored_policies(core).await?, Expect::Absent),
        };
        // Only the generation, for compare-and-swap: the stored text is
        // replaced or removed unread, so an administrator can also repair a
        // policy whose row fails its integrity check.
        let current = core
            .barrier
            .backend()
            .get(&key)
            .await
            .map_err(BarrierError::from)?
            .map(|entry| entry.generation);
        let expect = current.map_or(Expect::Absent, Expect::Generation);
        let mut writes = Vec::new();
        match &stored {
            Some(value) => {
                writes.push(Write::Put {
                    key: key.clone(),
                    value: value.clone(),
                    expect,
                });
                index.names.insert(name.to_string(), State::Live);
            }
            None => {
                if current.is_none() && !index.names.contains_key(name) {
                    return Ok(());
                }
                writes.push(Write::Delete {
                    key: key.clone(),
                    expect: Some(expect),
                });
                index.names.insert(name.to_string(), State::Deleted);
            }
        }
        writes.push(Write::Put {
            key: INDEX_KEY.into(),
            value: serde_json::to_vec(&index).expect("serialisable"),
            expect: index_expect,
        });
        match core.barrier.commit(writes).await {
            Ok(()) => return Ok(()),
            Err(BarrierError::Conflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Conflict { key })
}

/// The first index of a store written before there was one: every policy
/// stored now is live.
async fn index_of_stored_policies(core: &Core) -> Result<Index> {
    let mut index = Index::default();
    let mut after = String::new();
    loop {
        let page = core.barrier.list(PREFIX, &after, 1000).await?;
        let Some(last) = page.last().cloned() else {
            return Ok(index);
        };
        for name in page.into_iter().filter(|n| !n.ends_with('/')) {
            index.names.insert(name, State::Live);
        }
        after = last;
    }
}

async fn read_text(barrier: &Barrier, name: &str) -> Result<Option<String>> {
    let Some(record) = barrier.get(&format!("{PREFIX}{name}")).await? else {
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
pub(crate) async fn list_reply(core: &Arc<Core>) -> Result<Response> {
    let names = names(core).await?;
    let data = json!({ "keys": names, "policies": names });
    let top_level = data.as_object().cloned().unwrap_or_default();
    Ok(Response::VaultWithTopLevel { data, top_level })
}

/// `sys/policy/<name>` and `sys/policies/acl/<name>`.
pub(crate) async fn handle(
    core: &Arc<Core>,
    req: &Request,
    name: &str,
    op: Operation,
) -> Result<Response> {
    let name = name.trim_end_matches('/').to_lowercase();
    let legacy = req.path.starts_with("sys/policy/");
    match op {
        Operation::Read => {
            let index = read_index(&core.barrier).await?;
            let text = match checked_text(&core.barrier, index.as_ref(), &name).await? {
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
            // The old `sys/policy` route repeats name and rules at the top level.
            let top_level = match legacy {
                true => data.as_object().cloned().unwrap_or_default(),
                false => serde_json::Map::new(),
            };
            Ok(Response::VaultWithTopLevel { data, top_level })
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
            change(core, &name, Some(stored)).await?;
            core.clear_acl_cache();
            Ok(Response::NoContent)
        }
        Operation::Delete => {
            zafe_core::policy::check_policy_deletable(&name)
                .map_err(|e| Error::bad_request(e.to_string()))?;
            change(core, &name, None).await?;
            core.clear_acl_cache();
            Ok(Response::NoContent)
        }
        _ => Err(Error::MethodNotAllowed("unsupported operation".into())),
    }
}

/// `sys/capabilities-self` (for the caller) and `sys/capabilities` (for a
/// token given in the body; needs the right to call it, checked by the core).
pub(crate) async fn capabilities(
    core: &Arc<Core>,
    req: &Request,
    caller: Option<&Caller>,
) -> Result<Response> {
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
            crate::tokens::lookup(&core.barrier, &core.token_key()?, token, core.now_secs())
                .await?
                .map(Caller::Token)
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
    Ok(Response::VaultWithTopLevel {
        data: Value::Object(data.clone()),
        top_level: data,
    })
}

#[cfg(test)]
impl AclCache {
    /// Holds the ACL caches' locks, for the test that a panic cannot wedge the server.
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        (self.acls.write(), self.generated.write())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    // The index must never show up as a policy: listings read under PREFIX.
    #[test]
    fn the_index_is_not_under_the_policy_prefix() {
        assert!(!INDEX_KEY.starts_with(PREFIX));
        assert!(PREFIX.ends_with('/'));
    }

    // The stored formats are read back after upgrades: pin them.
    #[test]
    fn stored_records_keep_their_format() {
        let mut index = Index::default();
        index.names.insert("dev".into(), State::Live);
        index.names.insert("old".into(), State::Deleted);
        let value = serde_json::to_value(&index).unwrap();
        assert_eq!(value, json!({"names": {"dev": "live", "old": "deleted"}}));
        let back: Index = serde_json::from_value(value).unwrap();
        assert!(back.names["dev"] == State::Live && back.names["old"] == State::Deleted);
        assert!(
            serde_json::from_value::<Index>(json!({"names": {"x": "gone"}})).is_err(),
            "an unknown state is an error, not a guess"
        );
        let stored = Stored {
            name: "dev".into(),
            policy: "path \"a/*\" {}".into(),
        };
        assert_eq!(
            serde_json::to_value(&stored).unwrap(),
            json!({"name": "dev", "policy": "path \"a/*\" {}"})
        );
    }
}
