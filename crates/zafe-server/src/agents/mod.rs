//! Host agents (R-AGT-1): registration, per-agent tokens, and what an agent may read.
//!
//! An agent belongs to one project and reads only the environments it was created for: its
//! requests are authorised by the one policy engine against a policy generated from those
//! environments, with `read` and `list` only, and the core refuses every other capability for
//! it on top (as for service accounts). `(project, name)` is unique: the agent's record is
//! created with a must-not-exist write in the same commit as its token, so of racing
//! registrations of one name exactly one succeeds and the others change nothing.
//!
//! Each agent has one `zafe_ag_` token (256 bits, prefix and checksum), stored only as its keyed
//! hash; rotating it replaces the old one in one commit, and revoking the agent deletes both
//! records, so its token is refused on every route from then on.
//!
//! Records behind the barrier:
//!
//! ```text
//! sys/agents/agent/<project>/<name>   the agent (its token's hash, never the token)
//! sys/agents/token/<hash>             token → project, name, agent id
//! sys/agents/events/<agent id>/...     what the agent reported (events.rs)
//! sys/agents/presence/<agent id>       where it is connected, for every node (presence.rs)
//! ```

pub mod events;
pub mod presence;
pub mod session;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zafe_core::policy::{Acl, Policy};
use zafe_core::secret::SecretKey;
use zafe_core::token::{self, TokenKind};

use crate::barrier::{Barrier, BarrierError, Expect, Write};
use crate::caller::Caller;
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};

const AGENT_PREFIX: &str = "sys/agents/agent/";
const TOKEN_PREFIX: &str = "sys/agents/token/";
/// Last-seen times are written at most this often, so that a busy agent does not turn every
/// read into a write.
const LAST_SEEN_RESOLUTION_SECS: i64 = 60;
/// Environments one agent may read.
const MAX_ENVIRONMENTS: usize = 32;

/// A registered agent, stored at `sys/agents/agent/<project>/<name>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Agent {
    /// A random uuid, new for every registration (a re-created agent of the same name is
    /// another agent).
    pub(crate) id: String,
    /// The project it belongs to.
    pub(crate) project: String,
    /// The project's id when the agent was registered: a project deleted and created again
    /// under the same name is another project, and grants this agent nothing.
    pub(crate) project_id: String,
    /// Its name, unique in the project.
    pub(crate) name: String,
    /// The environments of the project it may read.
    pub(crate) environments: Vec<String>,
    /// Hex of its token's keyed hash (the token's storage key), never the token.
    pub(crate) token_hash: String,
    /// A non-secret handle of its current token.
    pub(crate) accessor: String,
    /// Unix seconds.
    pub(crate) created_at: i64,
    /// Who registered it (an actor name, never a token).
    pub(crate) created_by: String,
    /// The last request its token authenticated, in Unix seconds, written at most once a minute.
    #[serde(default)]
    pub(crate) last_seen: Option<i64>,
}

/// The record of one agent token, at `sys/agents/token/<hash>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AgentToken {
    project: String,
    name: String,
    /// The agent's id: a token of a deleted and re-created agent of the same name is refused.
    agent_id: String,
    /// Hex of the keyed hash; repeats the storage key's, checked in constant time on use.
    id_hash: String,
}

fn agent_key(project: &str, name: &str) -> String {
    format!("{AGENT_PREFIX}{project}/{name}")
}

fn token_key(hash: &str) -> String {
    format!("{TOKEN_PREFIX}{hash}")
}

fn validate(what: &str, value: &str) -> Result<()> {
    if crate::projects::is_valid_name(value) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "invalid {what} {value:?}: use 1 to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit"
        )))
    }
}

/// A new token and its record for `agent`.
fn new_token(key: &SecretKey, agent: &mut Agent) -> (String, AgentToken) {
    let token = token::generate(TokenKind::Agent);
    let id_hash = hex::encode(token::lookup_hash(key, &token));
    agent.token_hash = id_hash.clone();
    agent.accessor = hex::encode(zafe_core::crypto::random_bytes::<16>());
    let record = AgentToken {
        project: agent.project.clone(),
        name: agent.name.clone(),
        agent_id: agent.id.clone(),
        id_hash,
    };
    (token, record)
}

fn to_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("serialisable")
}

/// The agent `(project, name)` and its record's generation, or `None`.
pub(crate) async fn read(
    barrier: &Barrier,
    project: &str,
    name: &str,
) -> Result<Option<(Agent, i64)>> {
    validate("project", project)?;
    validate("agent name", name)?;
    let key = agent_key(project, name);
    let Some(record) = barrier.get(&key).await? else {
        return Ok(None);
    };
    let agent = serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key })?;
    Ok(Some((agent, record.generation)))
}

/// `sys/agents/<project>[/<name>[/rotate-token]]`.
pub(crate) async fn handle(
    core: &Core,
    req: &Request,
    rest: &str,
    caller: &Caller,
) -> Result<Response> {
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match (parts.as_slice(), req.operation) {
        ([project], Operation::List | Operation::Read) => list(core, project, req).await,
        ([project, name], Operation::Write) => create(core, req, project, name, caller).await,
        ([project, name], Operation::Read) => match read(&core.barrier, project, name).await? {
            Some((agent, _)) => {
                let presence = presence::of(core, &agent).await;
                Ok(Response::data(to_json(&agent, presence)))
            }
            None => Err(no_agent(project, name)),
        },
        ([project, name, "events"], Operation::Read) => {
            match read(&core.barrier, project, name).await? {
                Some((agent, _)) => Ok(Response::data(events::list(core, &agent, req).await?)),
                None => Err(no_agent(project, name)),
            }
        }
        ([project, name], Operation::Delete) => revoke(core, project, name).await,
        ([project, name, "rotate-token"], Operation::Write) => rotate(core, project, name).await,
        ([_], _) | ([_, _], _) | ([_, _, "rotate-token" | "events"], _) => {
            Err(Error::MethodNotAllowed("unsupported operation".into()))
        }
        _ => Err(Error::NotFound("unsupported path".into())),
    }
}

fn no_agent(project: &str, name: &str) -> Error {
    Error::NotFound(format!("no agent {name} in project {project}"))
}

/// Vault-style JSON for an agent (never its token or its hash).
/// Where an agent is connected right now (on this node, or on another: [`presence`]): what its
/// `hello` said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Presence {
    /// The agent's version, as it reported it (control characters removed, at most 64).
    pub version: String,
    /// Its host name, as it reported it (control characters removed, at most 253).
    pub host: String,
    /// When it connected, in Unix seconds.
    pub since: i64,
    /// When its last heartbeat came, in Unix seconds (`None`: none yet).
    pub last_heartbeat: Option<i64>,
}

/// The agents connected to this node, by agent id (the connection of a revoked agent ends, and
/// its entry with it).
#[derive(Default)]
pub struct Connected {
    agents: parking_lot::Mutex<std::collections::HashMap<String, Presence>>,
}

impl Connected {
    /// The presence of agent `id`, if it is connected here.
    pub fn get(&self, id: &str) -> Option<Presence> {
        self.agents.lock().get(id).cloned()
    }

    pub(crate) fn set(&self, id: &str, presence: Presence) {
        self.agents.lock().insert(id.to_string(), presence);
    }

    /// Notes a heartbeat of agent `id` at `now` (Unix seconds), if it is connected here.
    pub(crate) fn heartbeat(&self, id: &str, now: i64) {
        if let Some(presence) = self.agents.lock().get_mut(id) {
            presence.last_heartbeat = Some(now);
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.agents.lock().remove(id);
    }
}

/// A reported name as data: control characters (line breaks, terminal escapes) removed, length
/// capped. Nothing an agent says is ever evaluated.
pub(crate) fn reported(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

fn to_json(agent: &Agent, presence: Option<Presence>) -> Value {
    json!({
        "id": agent.id,
        "project": agent.project,
        "name": agent.name,
        "environments": agent.environments,
        "accessor": agent.accessor,
        "creation_time": crate::tokens::rfc3339(agent.created_at),
        "created_by": agent.created_by,
        "last_seen_time": agent.last_seen.map(crate::tokens::rfc3339),
        "connected": presence.is_some(),
        "version": presence.as_ref().map(|p| p.version.clone()),
        "host": presence.as_ref().map(|p| p.host.clone()),
        "last_heartbeat_time": presence.as_ref().and_then(|p| p.last_heartbeat).map(crate::tokens::rfc3339),
    })
}

/// The environments of a creation request: a list or a comma-separated string, each one of the
/// project's environments.
fn environments(req: &Request, known: &[String]) -> Result<Vec<String>> {
    let mut envs: Vec<String> = match req.field("environments") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(|s| s.trim().to_string())
                    .ok_or_else(|| Error::bad_request("environments must be strings"))
            })
            .collect::<Result<_>>()?,
        Some(Value::String(s)) => s.split(',').map(|e| e.trim().to_string()).collect(),
        _ => {
            return Err(Error::bad_request(
                "environments is required: the project's environments the agent may read",
            ));
        }
    };
    envs.retain(|e| !e.is_empty());
    envs.sort();
    envs.dedup();
    if envs.is_empty() || envs.len() > MAX_ENVIRONMENTS {
        return Err(Error::bad_request(format!(
            "between 1 and {MAX_ENVIRONMENTS} environments are required"
        )));
    }
    if let Some(unknown) = envs.iter().find(|e| !known.contains(e)) {
        return Err(Error::bad_request(format!(
            "the project has no environment {unknown:?}; create it first (zafe env create)"
        )));
    }
    Ok(envs)
}

async fn create(
    core: &Core,
    req: &Request,
    project: &str,
    name: &str,
    caller: &Caller,
) -> Result<Response> {
    validate("project", project)?;
    validate("agent name", name)?;
    let Some((registered, _)) = crate::projects::read(core, project).await? else {
        return Err(Error::NotFound(format!("no project {project}")));
    };
    let environments = environments(req, &registered.environments)?;
    let key = core.token_key()?;
    let mut agent = Agent {
        id: uuid::Uuid::new_v4().to_string(),
        project: project.to_string(),
        project_id: registered.id.clone(),
        name: name.to_string(),
        environments,
        token_hash: String::new(),
        accessor: String::new(),
        created_at: core.now_secs(),
        created_by: caller.engine_caller().actor(),
        last_seen: None,
    };
    let (token, record) = new_token(&key, &mut agent);
    let writes = vec![
        Write::Put {
            key: agent_key(project, name),
            value: to_bytes(&agent),
            expect: Expect::Absent,
        },
        Write::Put {
            key: token_key(&record.id_hash),
            value: to_bytes(&record),
            expect: Expect::Absent,
        },
    ];
    match core.barrier.commit(writes).await {
        Ok(()) => {}
        Err(BarrierError::Conflict { .. }) => {
            return Err(Error::StateConflict(format!(
                "an agent named {name} already exists in project {project}"
            )));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(request_id = %req.request_id, %project, agent = %name, accessor = %agent.accessor, "agent registered");
    let mut data = to_json(&agent, None);
    data["token"] = json!(token);
    Ok(Response::data(data))
}

/// A page of a project's agents: at most `limit` (default and most [`crate::engine::MAX_LIST`])
/// after the name `after`; `next` names the last one when there may be more.
async fn list(core: &Core, project: &str, req: &Request) -> Result<Response> {
    validate("project", project)?;
    let limit = match req.query("limit") {
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=crate::engine::MAX_LIST).contains(n))
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "limit must be a number from 1 to {}",
                    crate::engine::MAX_LIST
                ))
            })?,
        None => crate::engine::MAX_LIST,
    };
    let after = req.query("after").unwrap_or_default();
    let mut names = core
        .barrier
        .list(&format!("{AGENT_PREFIX}{project}/"), after, limit + 1)
        .await?;
    let more = names.len() > limit;
    names.truncate(limit);
    let next = if more { names.last().cloned() } else { None };
    let mut agents = serde_json::Map::new();
    for name in &names {
        if let Some((agent, _)) = read(&core.barrier, project, name).await? {
            let presence = presence::of(core, &agent).await;
            agents.insert(name.clone(), to_json(&agent, presence));
        }
    }
    Ok(Response::data(
        json!({ "keys": names, "agents": agents, "next": next }),
    ))
}

/// Deletes the agent and its token in one commit: the token is refused from then on.
async fn revoke(core: &Core, project: &str, name: &str) -> Result<Response> {
    let Some((agent, generation)) = read(&core.barrier, project, name).await? else {
        return Err(no_agent(project, name));
    };
    let mut writes = vec![
        Write::Delete {
            key: agent_key(project, name),
            expect: Some(Expect::Generation(generation)),
        },
        Write::Delete {
            key: token_key(&agent.token_hash),
            expect: None,
        },
    ];
    // Its events go with it (they are keyed by its id, so a re-created agent of the same name
    // would not see them anyway).
    writes.extend(events::deletions(core, &agent.id).await?);
    writes.push(Write::Delete {
        key: presence::key(&agent.id),
        expect: None,
    });
    match core.barrier.commit(writes).await {
        Ok(()) => {
            core.agent_revoked(&agent.id);
            Ok(Response::NoContent)
        }
        Err(BarrierError::Conflict { .. }) => Err(Error::Conflict {
            key: agent_key(project, name),
        }),
        Err(e) => Err(e.into()),
    }
}

/// A new token for the agent; the old one is refused from the same commit on.
async fn rotate(core: &Core, project: &str, name: &str) -> Result<Response> {
    let Some((mut agent, generation)) = read(&core.barrier, project, name).await? else {
        return Err(no_agent(project, name));
    };
    let old = agent.token_hash.clone();
    let (token, record) = new_token(&core.token_key()?, &mut agent);
    let writes = vec![
        Write::Put {
            key: agent_key(project, name),
            value: to_bytes(&agent),
            expect: Expect::Generation(generation),
        },
        Write::Delete {
            key: token_key(&old),
            expect: None,
        },
        Write::Put {
            key: token_key(&record.id_hash),
            value: to_bytes(&record),
            expect: Expect::Absent,
        },
    ];
    match core.barrier.commit(writes).await {
        Ok(()) => {}
        Err(BarrierError::Conflict { .. }) => {
            return Err(Error::Conflict {
                key: agent_key(project, name),
            });
        }
        Err(e) => return Err(e.into()),
    }
    // A session connected with the old token ends; the agent reconnects with the new one.
    core.agent_revoked(&agent.id);
    let mut data = to_json(&agent, None);
    data["token"] = json!(token);
    Ok(Response::data(data))
}

/// The agent as the caller of a request (audit entries name it so).
pub(crate) fn as_caller(agent: Agent) -> crate::caller::Caller {
    crate::caller::Caller::Agent(crate::caller::AgentCaller {
        token: crate::tokens::TokenEntry {
            accessor: agent.accessor.clone(),
            display_name: format!("agent-{}-{}", agent.project, agent.name),
            created_at: agent.created_at,
            path: "sys/agents".into(),
            ..Default::default()
        },
        agent,
    })
}

/// Resolves a `zafe_ag_` token to its agent. Unknown tokens, tokens of a revoked or re-created
/// agent, and replaced tokens are all `None`, indistinguishable to the caller.
pub(crate) async fn authenticate(
    barrier: &Barrier,
    key: &SecretKey,
    presented: &str,
    now: i64,
) -> Result<Option<Agent>> {
    if !token::is_well_formed(presented, TokenKind::Agent) {
        return Ok(None);
    }
    let hash = hex::encode(token::lookup_hash(key, presented));
    let Some(record) = barrier.get(&token_key(&hash)).await? else {
        return Ok(None);
    };
    let stored: AgentToken =
        serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
            key: token_key(&hash),
        })?;
    if !zafe_core::crypto::constant_time_eq(stored.id_hash.as_bytes(), hash.as_bytes()) {
        return Err(Error::Integrity {
            key: token_key(&hash),
        });
    }
    let Some((agent, generation)) = read(barrier, &stored.project, &stored.name).await? else {
        return Ok(None);
    };
    if agent.id != stored.agent_id || agent.token_hash != hash {
        return Ok(None);
    }
    if agent
        .last_seen
        .is_none_or(|t| now - t >= LAST_SEEN_RESOLUTION_SECS)
    {
        let mut seen = agent.clone();
        seen.last_seen = Some(now);
        // Losing this race to a rotation or another request is fine.
        let _ = barrier
            .put(
                &agent_key(&agent.project, &agent.name),
                &to_bytes(&seen),
                Expect::Generation(generation),
            )
            .await;
    }
    Ok(Some(agent))
}

/// The policy an agent's environments make, on its project's KV mount: read the secrets, list
/// and read their metadata; nothing else.
pub(crate) fn policy(agent: &Agent, mount: &str) -> Result<Acl> {
    let m = mount.trim_end_matches('/');
    let p = &agent.project;
    let mut hcl = String::new();
    for env in &agent.environments {
        hcl.push_str(&format!(
            "path \"{m}/data/{p}/{env}/*\" {{ capabilities = [\"read\"] }}\n\
             path \"{m}/metadata/{p}/{env}/*\" {{ capabilities = [\"read\", \"list\"] }}\n\
             path \"{m}/metadata/{p}/{env}/\" {{ capabilities = [\"list\"] }}\n"
        ));
    }
    if hcl.is_empty() {
        return Ok(Acl::new(std::iter::empty::<&Policy>()));
    }
    let policy = Policy::parse(&format!("agent/{p}/{}", agent.name), &hcl)
        .map_err(|e| Error::Internal(format!("generated agent policy does not parse: {e}")))?;
    Ok(Acl::new([&policy]))
}

#[cfg(test)]
mod tests {
    use zafe_core::policy::Capability;

    use super::*;

    fn agent(envs: &[&str]) -> Agent {
        Agent {
            id: "id".into(),
            project: "myapp".into(),
            project_id: "p1".into(),
            name: "web-1".into(),
            environments: envs.iter().map(|e| e.to_string()).collect(),
            token_hash: "h".into(),
            accessor: "a".into(),
            created_at: 0,
            created_by: "root".into(),
            last_seen: None,
        }
    }

    // R-AGT-1: an agent reads its environments and nothing else.
    #[test]
    fn the_policy_covers_its_environments_only() {
        let acl = policy(&agent(&["prod"]), "secret").unwrap();
        assert!(acl.allows("secret/data/myapp/prod/DB_URL", Capability::Read));
        assert!(acl.allows("secret/metadata/myapp/prod/", Capability::List));
        for (path, cap) in [
            ("secret/data/myapp/dev/DB_URL", Capability::Read),
            ("secret/data/other/prod/DB_URL", Capability::Read),
            ("secret/data/myapp/prod/DB_URL", Capability::Update),
            ("secret/data/myapp/prod/DB_URL", Capability::Create),
            ("secret/metadata/myapp/prod/DB_URL", Capability::Delete),
            ("sys/agents/myapp/web-1", Capability::Read),
        ] {
            assert!(!acl.allows(path, cap), "{path} {cap:?}");
        }
    }

    // The JSON shown for an agent never holds its token hash.
    #[test]
    fn the_json_never_shows_the_token_hash() {
        let mut a = agent(&["prod"]);
        a.token_hash = "deadbeefcafe".into();
        assert!(!to_json(&a, None).to_string().contains("deadbeefcafe"));
    }
}
