//! The JSON shapes of the `sys/` endpoints. Unknown fields are kept in
//! `extra`, so printing a response as JSON shows what the server sent.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroize as _;

/// `GET /v1/sys/seal-status`, and the answer to `PUT /v1/sys/unseal`.
/// Public: the server answers it before anyone has authenticated, and it
/// holds nothing secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealStatus {
    /// The seal's type; `"shamir"` on Zafe.
    #[serde(rename = "type", default)]
    pub seal_type: String,
    /// Whether `sys/init` has run.
    pub initialized: bool,
    /// Whether the server is sealed (cannot decrypt anything).
    pub sealed: bool,
    /// The threshold: shares needed to unseal.
    #[serde(default)]
    pub t: u32,
    /// The number of shares.
    #[serde(default)]
    pub n: u32,
    /// Shares accepted so far in this unseal attempt.
    #[serde(default)]
    pub progress: u32,
    /// Identifies the current unseal attempt (empty when none is under way).
    #[serde(default)]
    pub nonce: String,
    /// The server's version.
    #[serde(default)]
    pub version: String,
    /// The storage backend (`"sqlite"`, `"postgres"`, or Vault's names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_type: Option<String>,
    /// The cluster's name; sent only while unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The cluster's id; sent only while unsealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Vault: whether the seal is an auto-unseal with recovery keys; always
    /// false on Zafe.
    #[serde(default)]
    pub recovery_seal: bool,
    /// Vault: whether a seal migration is under way; always false on Zafe.
    #[serde(default)]
    pub migration: bool,
    /// What the server *claims*; only a verified identity proves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    /// Every field not named above, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/sys/health` (answered with 200, 501 or 503; see
/// [`crate::Client::health`]). Public, like [`SealStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Whether `sys/init` has run.
    pub initialized: bool,
    /// Whether the server is sealed.
    pub sealed: bool,
    /// Vault: whether this node is a standby; always false on Zafe (every
    /// node serves).
    #[serde(default)]
    pub standby: bool,
    /// Vault Enterprise's performance standby; always false on Zafe.
    #[serde(default)]
    pub performance_standby: bool,
    /// Vault Enterprise's replication mode; `"disabled"` on Zafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_performance_mode: Option<String>,
    /// Vault Enterprise's disaster-recovery mode; `"disabled"` on Zafe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_dr_mode: Option<String>,
    /// The server's clock, in Unix seconds.
    #[serde(default)]
    pub server_time_utc: i64,
    /// The server's version.
    #[serde(default)]
    pub version: String,
    /// The cluster's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    /// The cluster's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Every field not named above, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `PUT /v1/sys/init`: the unseal shares and the root token, shown once.
/// `Debug` redacts them and they are wiped from memory on drop.
#[derive(Clone, Serialize, Deserialize)]
pub struct InitResponse {
    /// The shares in hex.
    pub keys: Vec<String>,
    /// The same shares in standard base64.
    pub keys_base64: Vec<String>,
    /// The initial root token (`zafe_s_`): every capability. Revoke it once
    /// other administrators exist.
    pub root_token: String,
}

impl fmt::Debug for InitResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InitResponse({} keys, root token <redacted>)",
            self.keys.len()
        )
    }
}

impl Drop for InitResponse {
    fn drop(&mut self) {
        self.keys.zeroize();
        self.keys_base64.zeroize();
        self.root_token.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_status_keeps_unknown_fields_and_init_debug_is_redacted() {
        let raw = serde_json::json!({
            "type": "shamir", "initialized": true, "sealed": true, "t": 3, "n": 5,
            "progress": 1, "nonce": "", "version": "0.1.0", "storage_type": "sqlite",
            "recovery_seal": false, "migration": false, "server_id": "zs_x", "future_field": 1
        });
        let status: SealStatus = serde_json::from_value(raw.clone()).unwrap();
        assert_eq!((status.t, status.n, status.progress), (3, 5, 1));
        assert_eq!(serde_json::to_value(&status).unwrap(), raw);

        let init: InitResponse = serde_json::from_value(serde_json::json!({
            "keys": ["aa"], "keys_base64": ["qg=="], "root_token": "zafe_s_secret"
        }))
        .unwrap();
        let debug = format!("{init:?}");
        assert!(
            !debug.contains("zafe_s_secret") && !debug.contains("qg=="),
            "{debug}"
        );
    }
}
