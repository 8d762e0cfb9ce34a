//! What an engine may ask of the core, and nothing else.

use zafe_core::secret::SecretKey;

use crate::clock::Timestamp;
use crate::engine::Mount;
use crate::error::Result;

/// The system view: the core's answers to the few questions an engine may ask (as Vault's
/// `logical.SystemView`). The core implements it; tests can implement it with a fixed clock.
pub trait SystemView: Send + Sync {
    /// Now: the server's one clock (a manual one in tests).
    fn now(&self) -> Timestamp;

    /// The largest request body the server accepts, in bytes (limits of engine values follow it).
    fn max_body_bytes(&self) -> usize;

    /// A key for `purpose`, derived (HKDF) from the server's token key: the same for every node
    /// and every restart, different for every purpose. [`crate::Error::Sealed`] when sealed.
    fn derived_key(&self, purpose: &str) -> Result<SecretKey>;

    /// Reports that the secret at `path` (relative to `mount`) changed, after the change was
    /// committed: written (with its new `version`), deleted, undeleted or destroyed. The core
    /// tells whoever follows that secret (host agents). Names and versions only, never a value.
    fn changed(&self, mount: &Mount, path: &str, version: Option<u64>);
}
