//! Zafe's client library: the one HTTP client that the CLI, the host agent
//! and the MCP server use to talk to a Zafe (or Vault-compatible) server.
//!
//! Its core promise (R-ID-3): no token, unseal share or root token crosses
//! the wire before the server has proven its identity on that very
//! connection, and the identity matches what was pinned for the address.
//!
//! - [`config`]: address, token and directories from flags and environment.
//! - [`pins`]: the pin store, `<config_dir>/servers.toml`.
//! - [`session`]: a person's access and refresh tokens (credential store or files).
//! - [`Client`]: identity verification and the API calls; it refreshes an
//!   expired session once, transparently.

mod client;
pub mod config;
mod error;
pub mod path;
pub mod pins;
pub mod session;
mod tls;
mod types;

pub use client::{Client, FetchedProof};
pub use config::{ClientConfig, Flags, Token};
pub use error::{Error, Result};
pub use pins::{Checked, Pin, PinEvent, PinStore};
pub use reqwest::Method;
pub use types::{Health, InitResponse, SealStatus};
pub use zafe_core::identity::{IdentityProof, VerifiedIdentity};
