//! The change feed: which secrets changed, for whoever follows them (host agents, R-AGT-3).
//!
//! Engines report a committed change through the system view; the core publishes it here.
//! A change names the mount, the secret's path and its new version, never a value.
//!
//! The feed is the node's, and reaches every node: a change is delivered at once to this node's
//! followers, and published through storage (`zafe_storage::Backend::publish`) to the other
//! nodes sharing the storage, whose notice follower ([`crate::notices`]) delivers it to theirs.
//! When a node may have missed changes (its notification connection was down, or a follower
//! fell behind), its followers are told to [`Change::Resync`]: compare versions, as after a
//! reconnect.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use zafe_storage::Backend;

/// How many changes a slow follower may fall behind before it is told it lagged (it then
/// catches up by comparing versions, as after a reconnect).
const BACKLOG: usize = 1024;

/// The storage topic changes travel on between nodes.
pub(crate) const TOPIC: &str = "zafe.secret-changed";

/// A secret that changed. Never a value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretChange {
    /// The mount, with its trailing slash (`secret/`).
    pub mount: String,
    /// The secret's path inside the mount (`myapp/prod/DB_URL`).
    pub path: String,
    /// Its new current version, when the change made one (a write); `None` for deletions,
    /// undeletions and destructions.
    pub version: Option<u64>,
}

/// What a follower is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A secret changed.
    Secret(SecretChange),
    /// Changes may have been missed: compare versions.
    Resync,
}

/// Where changes are published and followed.
pub trait ChangeFeed: Send + Sync {
    /// Tells every follower, on every node. Never blocks; a change nobody follows is dropped.
    fn publish(&self, change: SecretChange);
    /// Follows the changes published from now on.
    fn subscribe(&self) -> broadcast::Receiver<Change>;
}

/// A change as it travels between nodes: with the node that published it, which ignores its
/// own (its followers had it at once).
#[derive(Serialize, Deserialize)]
struct Travelling {
    node: String,
    #[serde(flatten)]
    change: SecretChange,
}

/// The node's feed.
pub struct NodeFeed {
    node: String,
    backend: Arc<dyn Backend>,
    sender: broadcast::Sender<Change>,
}

impl NodeFeed {
    /// The feed of node `node` over `backend`.
    pub fn new(node: String, backend: Arc<dyn Backend>) -> Self {
        Self {
            node,
            backend,
            sender: broadcast::channel(BACKLOG).0,
        }
    }

    /// Delivers a change another node published (its storage message's payload); this node's
    /// own, and anything malformed, is ignored.
    pub(crate) fn deliver(&self, payload: &str) {
        match serde_json::from_str::<Travelling>(payload) {
            Ok(t) if t.node != self.node => {
                let _ = self.sender.send(Change::Secret(t.change));
            }
            Ok(_) => {}
            Err(_) => tracing::warn!("ignored a malformed change notice"),
        }
    }

    /// Tells every follower that changes may have been missed.
    pub(crate) fn resync(&self) {
        let _ = self.sender.send(Change::Resync);
    }
}

impl ChangeFeed for NodeFeed {
    fn publish(&self, change: SecretChange) {
        // No follower is not an error.
        let _ = self.sender.send(Change::Secret(change.clone()));
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let payload = match serde_json::to_string(&Travelling {
            node: self.node.clone(),
            change,
        }) {
            Ok(payload) => payload,
            Err(_) => return,
        };
        let backend = self.backend.clone();
        runtime.spawn(async move {
            if let Err(e) = backend.publish(TOPIC, &payload).await {
                // The other nodes' agents catch up when they next reconnect or resync.
                tracing::warn!(error = %e, "could not tell the other nodes about a change");
            }
        });
    }

    fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.sender.subscribe()
    }
}
