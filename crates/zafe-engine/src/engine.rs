//! The [`Engine`] trait and what an engine gets for one request.

use async_trait::async_trait;

use crate::caller::Caller;
use crate::error::Result;
use crate::request::{Operation, Request};
use crate::response::Response;
use crate::storage::View;
use crate::system::SystemView;

/// The mount an engine serves, as the engine may know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// With a trailing slash: `secret/`, `auth/approle/`.
    pub path: String,
    /// Engine kind: `kv`, `transit`, `approle`.
    pub kind: String,
    /// The mount's random, never reused id.
    pub uuid: String,
    /// Default TTL of what the mount issues, in seconds; 0 is the system's.
    pub default_lease_ttl: u64,
    /// Maximum TTL of what the mount issues, in seconds; 0 is the system's.
    pub max_lease_ttl: u64,
}

/// What an engine gets for one request.
pub struct Ctx<'a> {
    /// The mount being served.
    pub mount: &'a Mount,
    /// The mount's storage, and no one else's.
    pub view: View,
    /// The authenticated caller; `None` on public (login) paths.
    pub caller: Option<&'a Caller>,
    /// What the engine may ask of the core.
    pub system: &'a dyn SystemView,
}

/// An engine mounted at a path. The router keeps one instance per mount (by uuid) for as long
/// as the mount exists, so an engine may own state such as its write locks.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Paths (relative to the mount) that need no token: login endpoints.
    fn is_public(&self, _rel_path: &str, _op: Operation) -> bool {
        false
    }

    /// For writes: whether the target exists, which decides whether the policy must grant
    /// `update` (it exists) or `create` (it does not), as in Vault. Engines without the
    /// distinction say `true` (update).
    async fn exists(&self, _ctx: &Ctx<'_>, _rel_path: &str) -> Result<bool> {
        Ok(true)
    }

    /// Answers one request; `rel_path` is the path relative to the mount.
    async fn handle(&self, ctx: &Ctx<'_>, req: &Request, rel_path: &str) -> Result<Response>;
}
