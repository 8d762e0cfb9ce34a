//! Where an agent is connected, across nodes.
//!
//! A node knows its own sessions (the in-memory [`super::Connected`], exact and immediate). For
//! the others it reads `sys/agents/presence/<agent id>`, which each session writes: when it
//! starts, on the agent's `hello` (its version and host), and then at most once every
//! [`WRITE_EVERY_SECS`] (on the agent's heartbeats or the session's own tick, whichever comes
//! first), so that a thousand connected agents make about seventeen writes a second, not one
//! per heartbeat. A session that ends removes the record if it is still its own (an agent that
//! already reconnected elsewhere keeps the newer one). A node that dies removes nothing: its
//! agents' records stop being refreshed, and a record older than [`FRESH_SECS`] by the reading
//! node's clock no longer counts as connected.
//!
//! Presence is best effort: a write that fails is logged and tried again on the next
//! heartbeat; it never ends a session.

use serde::{Deserialize, Serialize};

use super::{Agent, Presence};
use crate::barrier::{Expect, Write};
use crate::core::Core;

/// A session writes its presence at most this often (besides its start and the hello).
pub const WRITE_EVERY_SECS: i64 = 60;
/// A presence record younger than this (twice the write interval) counts as connected.
pub const FRESH_SECS: i64 = 2 * WRITE_EVERY_SECS;

const PREFIX: &str = "sys/agents/presence/";

pub(crate) fn key(agent_id: &str) -> String {
    format!("{PREFIX}{agent_id}")
}

/// One session's presence, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The session that wrote it (a random id per connection).
    session: String,
    /// The node serving the session (`Core::node_id`).
    node: String,
    version: String,
    host: String,
    /// Unix seconds.
    since: i64,
    last_heartbeat: Option<i64>,
    /// When the record was written, Unix seconds by the writing node's clock.
    refreshed: i64,
}

/// What one session writes.
pub(crate) struct Writer {
    agent_id: String,
    record: Record,
    /// When this session last wrote its record.
    written: Option<i64>,
}

impl Writer {
    pub(crate) fn new(core: &Core, agent: &Agent) -> Self {
        Writer {
            agent_id: agent.id.clone(),
            record: Record {
                session: uuid::Uuid::new_v4().to_string(),
                node: core.node_id().to_string(),
                version: String::new(),
                host: String::new(),
                since: core.now_secs(),
                last_heartbeat: None,
                refreshed: 0,
            },
            written: None,
        }
    }

    /// The agent said who it is: written at once.
    pub(crate) async fn hello(&mut self, core: &Core, version: String, host: String) {
        self.record.version = version;
        self.record.host = host;
        self.write(core).await;
    }

    /// The agent's heartbeat: noted, written if the last write is a minute old.
    pub(crate) async fn heartbeat(&mut self, core: &Core) {
        self.record.last_heartbeat = Some(core.now_secs());
        self.refresh(core).await;
    }

    /// Writes the record if it was never written or the last write is [`WRITE_EVERY_SECS`] old.
    pub(crate) async fn refresh(&mut self, core: &Core) {
        let now = core.now_secs();
        if self.written.is_none_or(|at| now - at >= WRITE_EVERY_SECS) {
            self.write(core).await;
        }
    }

    async fn write(&mut self, core: &Core) {
        let now = core.now_secs();
        self.record.refreshed = now;
        let value = serde_json::to_vec(&self.record).expect("serialisable");
        match core
            .barrier
            .update(&key(&self.agent_id), |_| Some(value.clone()))
            .await
        {
            Ok(_) => self.written = Some(now),
            Err(e) => tracing::warn!(error = %e, "an agent's presence could not be written"),
        }
    }

    /// The session ended: its record goes, unless a newer session already wrote its own.
    pub(crate) async fn remove(&self, core: &Core) {
        let key = key(&self.agent_id);
        let Ok(Some(current)) = core.barrier.get(&key).await else {
            return;
        };
        let ours = serde_json::from_slice::<Record>(&current.value)
            .is_ok_and(|r| r.session == self.record.session);
        if ours {
            // A newer session that wrote meanwhile wins (the generation no longer matches).
            let _ = core
                .barrier
                .commit(vec![Write::Delete {
                    key,
                    expect: Some(Expect::Generation(current.generation)),
                }])
                .await;
        }
    }
}

/// Where `agent` is connected: on this node (exact), else on another whose record is fresh.
pub(crate) async fn of(core: &Core, agent: &Agent) -> Option<Presence> {
    if let Some(here) = core.connected_agents().get(&agent.id) {
        return Some(here);
    }
    let stored = core.barrier.get(&key(&agent.id)).await.ok()??;
    let record: Record = serde_json::from_slice(&stored.value).ok()?;
    (core.now_secs() - record.refreshed < FRESH_SECS).then(|| Presence {
        version: record.version,
        host: record.host,
        since: record.since,
        last_heartbeat: record.last_heartbeat,
    })
}
