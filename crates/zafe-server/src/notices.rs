//! How a node keeps what it holds in memory in step with storage: it follows the storage's
//! notices (`zafe_storage::notices`: every commit's keys, from every node sharing the storage)
//! and drops or reloads what a notice makes stale.
//!
//! | Notice | What this node does |
//! |---|---|
//! | keys under `core/policy` | forgets every compiled ACL |
//! | `core/mounts` | rebuilds its router from the mount table |
//! | `seal/keyring` | reloads the keyring (a key rotated on another node) |
//! | message `zafe.secret-changed` from another node | tells its agents ([`crate::changes`]) |
//! | message `zafe.agent-revoked` from another node | ends that agent's session here |
//! | `Lost` (notices may have been missed) | all of the above |
//! | `Resumed` (the notification connection is back) | all of the above, and agents resync |
//! | every second, on PostgreSQL ([`REREAD`]) | compiled ACLs, router and keyring again |
//!
//! Its own changes a node applies at once, before answering; the notices carry them to the
//! others. The bound: a change acknowledged by one node is applied by the others as soon as its
//! notification arrives (milliseconds on one machine); while a node's notification connection
//! is down it drops its caches every 250 ms (`zafe_storage::notices::BACKSTOP`). On
//! PostgreSQL a commit is announced just after it commits, so a node that dies in between
//! leaves the others uninformed: there every node also re-reads what it holds every second
//! ([`REREAD`]), the hard bound. On SQLite (one process) every commit is announced before its
//! caller is answered, and there is nothing to re-read.

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use zafe_storage::Notice;

use crate::core::Core;

/// How often a node re-reads what it holds when other processes share its storage.
pub(crate) const REREAD: Duration = Duration::from_secs(1);

/// The storage topic of agent revocations between nodes.
pub(crate) const AGENT_REVOKED: &str = "zafe.agent-revoked";

/// A revocation as it travels between nodes.
#[derive(Serialize, Deserialize)]
pub(crate) struct Revoked {
    pub(crate) node: String,
    pub(crate) agent: String,
}

/// Starts following the storage's notices for `core`, for as long as the core lives. The
/// subscription is taken before this returns: no later commit goes unnoticed.
pub(crate) fn follow(core: &Arc<Core>) {
    let notices = core.backend().notices();
    let weak = Arc::downgrade(core);
    if core.backend().kind() != "sqlite" {
        tokio::spawn(reread(weak.clone()));
    }
    tokio::spawn(run(weak, notices));
}

/// The backstop: every [`REREAD`], what this node holds is read again.
async fn reread(core: Weak<Core>) {
    let mut tick = tokio::time::interval(REREAD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(core) = core.upgrade() else { return };
        refresh(&core).await;
    }
}

/// Drops or reloads everything this node derived from storage.
async fn refresh(core: &Arc<Core>) {
    core.clear_acl_cache();
    reload_mounts(core).await;
    reload_keyring(core).await;
}

async fn run(core: Weak<Core>, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    loop {
        let notice = match notices.recv().await {
            Ok(notice) => notice,
            // Fell behind: whatever was skipped is unknown.
            Err(RecvError::Lagged(_)) => Notice::Resumed,
            Err(RecvError::Closed) => return,
        };
        let Some(core) = core.upgrade() else { return };
        apply(&core, notice).await;
    }
}

async fn apply(core: &Arc<Core>, notice: Notice) {
    match notice {
        Notice::Keys(keys) => {
            if keys.iter().any(|k| k.starts_with("core/policy")) {
                core.clear_acl_cache();
            }
            if keys.iter().any(|k| k == crate::mounts::TABLE_KEY) {
                reload_mounts(core).await;
            }
            if keys.iter().any(|k| k == crate::barrier::KEYRING_KEY) {
                reload_keyring(core).await;
            }
        }
        Notice::Message { topic, payload } => match topic.as_str() {
            crate::changes::TOPIC => core.node_feed().deliver(&payload),
            AGENT_REVOKED => match serde_json::from_str::<Revoked>(&payload) {
                Ok(r) if r.node != core.node_id() => core.agent_revoked_here(&r.agent),
                Ok(_) => {}
                Err(_) => tracing::warn!("ignored a malformed revocation notice"),
            },
            _ => {}
        },
        Notice::Lost | Notice::Resumed => {
            refresh(core).await;
            if notice == Notice::Resumed {
                core.node_feed().resync();
            }
        }
    }
}

async fn reload_mounts(core: &Arc<Core>) {
    // Sealed: nothing is loaded, nothing to refresh.
    if core.is_sealed() {
        return;
    }
    if let Err(e) = core.reload_mounts().await {
        tracing::warn!(error = %e, "could not reload the mount table after another node changed it");
    }
}

async fn reload_keyring(core: &Arc<Core>) {
    if core.is_sealed() {
        return;
    }
    if let Err(e) = core.barrier.reload_keyring().await {
        tracing::warn!(error = %e, "could not reload the keyring after another node changed it");
    }
}
