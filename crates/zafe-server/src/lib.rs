//! Zafe's server. Layers, from the bottom (each talks only to the one below):
//!
//! - physical storage (`zafe-storage`): untrusted, sees ciphertext only;
//! - [`barrier`]: the encryption barrier; everything above reads and writes
//!   plaintext through it, and it is closed while the server is sealed;
//! - [`seal`]: init, unseal, seal; turns shares or a master key into the
//!   keyring that opens the barrier;
//! - [`mounts`]: the mount table and the router, which hands a request to
//!   the engine mounted at its path. The engines themselves are not here:
//!   the contract between router and engine (request, typed response,
//!   caller, storage view, system view) is the crate `zafe-engine`, and KV
//!   v2, transit and AppRole are the crate `zafe-engines`, which cannot
//!   name the server. [`engine`] is the server's side of that contract: the
//!   barrier as an engine's storage, the core as its system view;
//! - [`core`]: the token store and request handling: authentication, the
//!   single authorization decision, dispatch to the system backend
//!   ([`sys`]) or a mount, and minting the token an auth engine's grant
//!   asks for;
//! - [`http`]: axum on top: request ids, client addresses, limits, headers,
//!   TLS, and the Vault-compatible JSON shapes.
//!
//! Beside them: [`audit`] (the hash-chained audit log every request passes
//! through), [`people`] (user accounts, sessions, OIDC), [`identity`] and
//! [`anchor`] (the server's identity key and the rollback anchor kept
//! beside it), [`config`] and [`run`] (starting a server from a [`Launch`]).

#![warn(missing_docs)]

pub mod agents;
pub mod anchor;
pub mod audit;
pub mod backup;
pub mod barrier;
pub mod caller;
pub mod changes;
pub mod config;
pub mod core;
pub mod engine;
pub mod error;
pub mod hardening;
pub mod http;
pub mod identity;
pub mod mounts;
mod notices;
pub mod people;
pub mod policies;
pub mod projects;
pub mod resolve;
pub mod seal;
pub mod service_accounts;
pub mod sys;
pub mod tokens;
mod wrapping;

mod launch;

pub use config::Config;
pub use launch::{Launch, run};
