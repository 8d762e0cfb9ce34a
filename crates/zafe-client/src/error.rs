//! The client's errors.
//!
//! Every message is written for the person at the terminal: what happened,
//! and for identity failures, what to do next. No message ever contains a
//! token, an unseal share or a request body. Each `Display` is complete on
//! its own (no `source()` chain to print), so callers print it once.

use std::path::PathBuf;

use zafe_core::identity::IdentityError;

/// The result of every client call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a client call can fail with. Variants that name an identity
/// problem all mean the same thing for safety: the request was not sent with
/// any credential.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server address could not be used (not a URL, not http(s), has a
    /// path, query or credentials, ...).
    #[error("invalid server address {addr:?}: {reason}")]
    InvalidAddress {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No HTTP answer: connection refused, DNS, TLS handshake or timeout.
    #[error("cannot reach the server at {addr}: {detail}")]
    Transport {
        /// The server's normalised address.
        addr: String,
        /// The underlying error chain, on one line.
        detail: String,
    },

    /// The server answered with a non-success status and, usually, a
    /// Vault-style `{"errors": [...]}` body.
    #[error("{}", server_error_message(*status, errors))]
    ServerError {
        /// The HTTP status code.
        status: u16,
        /// The server's messages, in order (empty if the body had none).
        errors: Vec<String>,
    },

    /// An answer that is not what the API promises (unreadable JSON, a
    /// missing field).
    #[error("unexpected response from the server at {addr} (HTTP {status}): {what}")]
    UnexpectedResponse {
        /// The server's normalised address.
        addr: String,
        /// The HTTP status code.
        status: u16,
        /// What was wrong with the body (never the body itself).
        what: String,
    },

    /// The server's identity proof did not verify (see [`IdentityError`]).
    #[error(
        "could not verify the identity of the server at {addr}: {reason}. No credentials were sent."
    )]
    Identity {
        /// The server's normalised address.
        addr: String,
        /// Which check failed.
        reason: IdentityError,
    },

    /// A valid proof, but of another identity than the one pinned for the
    /// address: an impostor, a proxy, or a replaced key.
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
        /// The pin store's key for the server (its normalised address).
        addr: String,
        /// The pinned server id.
        pinned: String,
        /// The server id this server proved.
        presented: String,
        /// When the pin was recorded (RFC 3339).
        first_seen: String,
    },

    /// A valid proof, but not of the server id the caller demanded with
    /// `--server-id` or `ZAFE_SERVER_ID`.
    #[error(
        "the server at {addr} is {presented}, not the expected {expected} (from --server-id or ZAFE_SERVER_ID). \
         This may be an impostor. No credentials were sent."
    )]
    UnexpectedServerId {
        /// The server's normalised address.
        addr: String,
        /// The server id demanded.
        expected: String,
        /// The server id proved.
        presented: String,
    },

    /// The pin says the proof was bound to TLS, and now it is not: something
    /// terminates TLS in between.
    #[error(
        "the server at {addr} ({server_id}) was pinned with its identity bound to its TLS certificate, but its \
         proof no longer covers the TLS key on this connection: something between you and the server (a \
         TLS-terminating proxy, or an attacker) now terminates TLS. No credentials were sent. If a proxy was \
         deliberately put in front of the server, run `zafe server-id forget {addr}` and retry."
    )]
    TlsDowngrade {
        /// The server's normalised address.
        addr: String,
        /// The pinned server id.
        server_id: String,
    },

    /// A later connection presented another TLS key than the one the
    /// identity was verified on; the TLS verifier refused it before any
    /// request was written.
    #[error(
        "the server at {addr} presented a different TLS key than the one its identity was verified on; \
         the connection was refused and no credentials were sent"
    )]
    TlsKeyChanged {
        /// The server's normalised address.
        addr: String,
    },

    /// `zafe server-id migrate` refused to carry a pin over: the same address
    /// twice, no pin to move, a new address that proves another server (or
    /// is pinned to one), or a lost TLS binding.
    #[error("refusing to move the pin from {old} to {new}: {reason}")]
    MigrateRefused {
        /// The address the pin is recorded for.
        old: String,
        /// The address it was to move to.
        new: String,
        /// Why not.
        reason: String,
    },

    /// A call that needs a token, and none was configured.
    #[error(
        "no token: set ZAFE_TOKEN (or VAULT_TOKEN), or store it in {} with mode 0600",
        token_file.display()
    )]
    NoToken {
        /// Where a token file would be read from.
        token_file: PathBuf,
    },

    /// The token file exists but cannot be used (unreadable, too permissive,
    /// not a token). The reason never contains the file's content.
    #[error("token file {}: {reason}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The pin store (`servers.toml`) cannot be read or written.
    #[error("server pin store {}: {reason}", path.display())]
    PinStore {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The configured CA certificate file cannot be read or parsed.
    #[error("CA certificate {}: {reason}", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Any other configuration problem (no config directory, a token that
    /// cannot be sent as a header, the HTTP client could not be built).
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
