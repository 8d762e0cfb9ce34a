//! Zafe's client library: the one HTTP client that the CLI, the host agent
//! and the MCP server use to talk to a Zafe (or Vault-compatible) server.
//!
//! Its core promise (R-ID-3): no token, unseal share or root token crosses
//! the wire before the server has proven its identity on that very
//! connection, and the identity matches what was pinned for the address.
//!
//! - [`config`]: address, token and directories from flags and environment.
//! - [`pins`]: the pin store, `<config_dir>/servers.toml`.
//! - [`mask`]: the output scrubber of `zafe run` and `zafe mcp`.
//! - [`session`]: a person's access and refresh tokens (credential store or files).
//! - [`Client`]: identity verification and the API calls; it refreshes an
//!   expired session once, transparently.
//! - [`project_file`]: `.zafe.toml`, the project and environment of a repository.
//! - [`path`]: percent-encoding of user input placed in request paths.
//!
//! Invariants the crate keeps:
//!
//! - Credentials ([`Token`], unseal shares, the root token in
//!   [`InitResponse`]) are zeroized on drop and redacted in `Debug`; a token
//!   goes out only as a sensitive `X-Vault-Token` header on a connection
//!   whose server identity was verified and whose TLS key is the one the
//!   proof named.
//! - Every error message ([`Error`]) is meant for a person and never holds a
//!   token, a share or a request body.
//! - Files it writes that hold credentials or trust (the token file, the
//!   refresh-token file, the pin store) are replaced atomically with mode
//!   0600 (a missing directory is created 0700); a token file that group or
//!   others can read is refused.
//! - User input placed in a request path is escaped with [`path`], here and
//!   in the callers, so it cannot change which endpoint is called.

#![warn(missing_docs)]

mod client;
pub mod config;
mod error;
pub mod mask;
pub mod path;
pub mod pins;
pub mod project_file;
pub mod session;
mod tls;
mod types;
pub mod websocket;

pub use client::{Client, FetchedProof};
pub use config::{ClientConfig, Flags, Token};
pub use error::{Error, Result};
pub use pins::{Checked, Pin, PinEvent, PinStore};
pub use reqwest::Method;
pub use types::{Health, InitResponse, SealStatus};
pub use zafe_core::identity::{IdentityProof, VerifiedIdentity};
pub use zafe_core::reference::Reference;
pub use zafe_core::secret::SecretString;
