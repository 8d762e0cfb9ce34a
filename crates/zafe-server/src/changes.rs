//! The change feed: which secrets changed, for whoever follows them (host agents, R-AGT-3).
//!
//! Engines report a committed change through the system view; the core publishes it here.
//! A change names the mount, the secret's path and its new version, never a value. This is the
//! one interface the push to agents builds on; in one process it is a broadcast channel, and
//! the multi-node work carries the same changes between nodes behind the same trait.

use tokio::sync::broadcast;

/// How many changes a slow follower may fall behind before it is told it lagged (it then
/// catches up by comparing versions, as after a reconnect).
const BACKLOG: usize = 1024;

/// A secret that changed. Never a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretChange {
    /// The mount, with its trailing slash (`secret/`).
    pub mount: String,
    /// The secret's path inside the mount (`myapp/prod/DB_URL`).
    pub path: String,
    /// Its new current version, when the change made one (a write); `None` for deletions,
    /// undeletions and destructions.
    pub version: Option<u64>,
}

/// Where changes are published and followed.
pub trait ChangeFeed: Send + Sync {
    /// Tells every follower. Never blocks; a change nobody follows is dropped.
    fn publish(&self, change: SecretChange);
    /// Follows the changes published from now on.
    fn subscribe(&self) -> broadcast::Receiver<SecretChange>;
}

/// The in-process feed.
pub struct LocalFeed {
    sender: broadcast::Sender<SecretChange>,
}

impl Default for LocalFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(BACKLOG).0,
        }
    }
}

impl ChangeFeed for LocalFeed {
    fn publish(&self, change: SecretChange) {
        // No follower is not an error.
        let _ = self.sender.send(change);
    }

    fn subscribe(&self) -> broadcast::Receiver<SecretChange> {
        self.sender.subscribe()
    }
}
