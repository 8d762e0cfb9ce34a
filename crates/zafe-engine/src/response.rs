//! What an engine answers: a typed [`Response`]. Vault's JSON envelope is built from it at the
//! HTTP edge, in one place, with the request id; engines never build envelopes.

use std::collections::BTreeMap;

use futures_util::stream::BoxStream;
use serde_json::Value;

use crate::error::Result;
use crate::params::LifetimeRequest;
use crate::status::Status;

/// An engine's (or the core's) answer to one request.
pub enum Response {
    /// Vault's envelope: `data`, `auth` and `warnings` (the edge adds the request id and the
    /// fields Vault clients expect even when empty).
    Vault {
        /// Usually 200; Vault answers some reads of deleted things with 404 and data.
        status: Status,
        /// The `data` object.
        data: Option<Value>,
        /// The `auth` object of a login or token answer, built by the core.
        auth: Option<Value>,
        /// Warnings for the caller; none is `null` in the envelope.
        warnings: Vec<String>,
    },
    /// Vault's envelope with `data` (status 200), and `top_level` fields repeated at the top
    /// level of the envelope, as Vault's older `sys/` endpoints answer for old clients.
    VaultWithTopLevel {
        /// The `data` object.
        data: Value,
        /// Fields also set at the top level of the envelope.
        top_level: serde_json::Map<String, Value>,
    },
    /// A JSON document as it is, outside the envelope (`sys/health`, Vault's bare
    /// `{"errors": []}` 404).
    Json(Status, Value),
    /// 204.
    NoContent,
    /// A status without a body (`HEAD`, OpenBao's bare 404s).
    Status(Status),
    /// An auth engine accepted a login: the core mints a token from the grant and answers
    /// with its `auth` block. Engines never mint tokens themselves.
    Login {
        /// What the token may do and how long it lives.
        grant: Grant,
        /// Warnings for the caller.
        warnings: Vec<String>,
    },
    /// A response wrapped in a single-use token (`X-Vault-Wrap-TTL`): the envelope's
    /// `wrap_info`, with `data` and `auth` empty. Made by the core only.
    Wrapped(Value),
    /// A body made in pieces (audit exports), with its content type.
    Stream(&'static str, BoxStream<'static, Result<Vec<u8>>>),
}

impl Response {
    /// 200 with `data` in the envelope.
    pub fn data(data: Value) -> Response {
        Response::with_warnings(Status::OK, data, Vec::new())
    }

    /// `data` and warnings in the envelope, with a status.
    pub fn with_warnings(status: Status, data: Value, warnings: Vec<String>) -> Response {
        Response::Vault {
            status,
            data: Some(data),
            auth: None,
            warnings,
        }
    }

    /// 200 with warnings only (`data` is `null`).
    pub fn warnings(warnings: Vec<String>) -> Response {
        Response::Vault {
            status: Status::OK,
            data: None,
            auth: None,
            warnings,
        }
    }

    /// Vault's bare 404: `{"errors": []}`.
    pub fn not_found() -> Response {
        Response::Json(Status::NOT_FOUND, serde_json::json!({ "errors": [] }))
    }

    /// The status this response will be sent with (a login's is the minted token's 200).
    pub fn status(&self) -> Status {
        match self {
            Response::Vault { status, .. }
            | Response::Json(status, _)
            | Response::Status(status) => *status,
            Response::NoContent => Status::NO_CONTENT,
            Response::VaultWithTopLevel { .. }
            | Response::Login { .. }
            | Response::Stream(..)
            | Response::Wrapped(_) => Status::OK,
        }
    }
}

impl std::fmt::Debug for Response {
    // Data may hold secret values: Debug names the kind and status only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Response::Vault { .. } => "Vault",
            Response::VaultWithTopLevel { .. } => "VaultWithTopLevel",
            Response::Json(..) => "Json",
            Response::NoContent => "NoContent",
            Response::Status(_) => "Status",
            Response::Login { .. } => "Login",
            Response::Stream(..) => "Stream",
            Response::Wrapped(_) => "Wrapped",
        };
        write!(f, "Response::{kind}({})", self.status().code())
    }
}

/// What an auth engine grants on a successful login. The core turns it into a token: it plans
/// the lifetime under the mount's limits, stores the entry and returns the token once.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Final, sanitised policy names.
    pub policies: Vec<String>,
    /// The token's display name (the mount's name, as Vault shows it).
    pub display_name: String,
    /// The login path, recorded with the token.
    pub path: String,
    /// Metadata copied into the token and its lookups.
    pub meta: BTreeMap<String, String>,
    /// Uses before the token is spent; 0 is unlimited.
    pub num_uses: u32,
    /// The TTLs asked for and the limits that apply.
    pub lifetime: LifetimeRequest,
    /// Whether the token may be renewed.
    pub renewable: bool,
    /// Addresses the token may be used from; empty is anywhere.
    pub bound_cidrs: Vec<ipnet::IpNet>,
}

#[cfg(test)]
mod tests {
    use super::*;

    // Response data may hold secret values; Debug must not show them.
    #[test]
    fn debug_shows_no_data() {
        let r = Response::data(serde_json::json!({"password": "hunter2-value"}));
        let shown = format!("{r:?}");
        assert_eq!(shown, "Response::Vault(200)");
    }
}
