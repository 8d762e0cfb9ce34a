//! Zafe's server. Layers, from the bottom (each talks only to the one below):
//!
//! - physical storage (`zafe-storage`): untrusted, sees ciphertext only;
//! - [`barrier`]: the encryption barrier; everything above reads and writes
//!   plaintext through it, and it is closed while the server is sealed;
//! - [`seal`]: init, unseal, seal; turns shares or a master key into the
//!   keyring that opens the barrier;
//! - [`core`]: the token store and request handling: authentication, the
//!   single authorization decision, and dispatch to the system backend;
//! - [`http`]: axum on top: request ids, client addresses, limits, headers,
//!   TLS, and the Vault-compatible JSON shapes.

pub mod anchor;
pub mod audit;
pub mod barrier;
pub mod caller;
pub mod config;
pub mod core;
pub mod engine;
pub mod error;
pub mod hardening;
pub mod http;
pub mod identity;
pub mod mounts;
pub mod people;
pub mod policies;
pub mod projects;
pub mod resolve;
pub mod seal;
pub mod service_accounts;
pub mod sys;
pub mod tokens;

mod launch;

pub use config::Config;
pub use launch::{Launch, run};
