//! The client's errors.
//!
//! Every message is written for the person at the terminal: what happened,
//! and for identity failures, what to do next. No message ever contains a
//! token, an unseal share or a request body. Each `Display` is complete on
//! its own (no `source()` chain to print), so callers print it once.

use std::path::PathBuf;

use zafe_core::identity::IdentityError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid server address {addr:?}: {reason}")]
    InvalidAddress { addr: String, reason: &'static str },

    #[error("cannot reach the server at {addr}: {detail}")]
    Transport { addr: String, detail: String },

    /// The server answered with a non-success status and, usually, a
    /// Vault-style `{"errors": [...]}` body.
    #[error("{}", server_error_message(*status, errors))]
    ServerError { status: u16, errors: Vec<String> },

    #[error("unexpected response from the server at {addr} (HTTP {status}): {what}")]
    UnexpectedResponse {
        addr: String,
        status: u16,
        what: String,
    },

    #[error(
        "could not verify the identity of the server at {addr}: {reason}. No credentials were sent."
    )]
    Identity { addr: String, reason: IdentityError },

    #[error(
        "the server at {addr} proved a different identity than the one pinned for it.\n  \
         pinned:    {pinned} (first seen {first_seen})\n  \
         presented: {presented}\n\
         This may be an impostor or an intercepting proxy. No credentials were sent.\n  \
         - If the server's identity key was deliberately replaced, run `zafe server-id forget {addr}` and retry.\n  \
         - If the pinned server moved to another address, use that address and carry the pin over with \
         `zafe server-id migrate {addr} <new-addr>`."
    )]
    IdentityChanged {
        addr: String,
        pinned: String,
        presented: String,
        first_seen: String,
    },

    #[error(
        "the server at {addr} is {presented}, not the expected {expected} (from --server-id or ZAFE_SERVER_ID). \
         This may be an impostor. No credentials were sent."
    )]
    UnexpectedServerId {
        addr: String,
        expected: String,
        presented: String,
    },

    #[error(
        "the server at {addr} ({server_id}) was pinned with its identity bound to its TLS certificate, but its \
         proof no longer covers the TLS key on this connection: something between you and the server (a \
         TLS-terminating proxy, or an attacker) now terminates TLS. No credentials were sent. If a proxy was \
         deliberately put in front of the server, run `zafe server-id forget {addr}` and retry."
    )]
    TlsDowngrade { addr: String, server_id: String },

    #[error(
        "the server at {addr} presented a different TLS key than the one its identity was verified on; \
         the connection was refused and no credentials were sent"
    )]
    TlsKeyChanged { addr: String },

    #[error("refusing to move the pin from {old} to {new}: {reason}")]
    MigrateRefused {
        old: String,
        new: String,
        reason: String,
    },

    #[error(
        "no token: set ZAFE_TOKEN (or VAULT_TOKEN), or store it in {} with mode 0600",
        token_file.display()
    )]
    NoToken { token_file: PathBuf },

    #[error("token file {}: {reason}", path.display())]
    TokenFile { path: PathBuf, reason: String },

    #[error("server pin store {}: {reason}", path.display())]
    PinStore { path: PathBuf, reason: String },

    #[error("CA certificate {}: {reason}", path.display())]
    CaCert { path: PathBuf, reason: String },

    #[error("configuration: {0}")]
    Config(String),
}

fn server_error_message(status: u16, errors: &[String]) -> String {
    if errors.is_empty() {
        format!("the server answered HTTP {status}")
    } else {
        format!("the server answered HTTP {status}: {}", errors.join("; "))
    }
}

/// Flattens an error and its sources into one line ("a: b: c"), skipping a
/// source whose text the previous line already contains.
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}
