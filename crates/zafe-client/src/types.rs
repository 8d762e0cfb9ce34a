//! The JSON shapes of the `sys/` endpoints. Unknown fields are kept in
//! `extra`, so printing a response as JSON shows what the server sent.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use zeroize::Zeroize as _;

/// `GET /v1/sys/seal-status`, and the answer to `PUT /v1/sys/unseal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealStatus {
    #[serde(rename = "type", default)]
    pub seal_type: String,
    pub initialized: bool,
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
    #[serde(default)]
    pub nonce: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub recovery_seal: bool,
    #[serde(default)]
    pub migration: bool,
    /// What the server *claims*; only a verified identity proves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `GET /v1/sys/health` (answered with 200, 501 or 503; see
/// [`crate::Client::health`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub initialized: bool,
    pub sealed: bool,
    #[serde(default)]
    pub standby: bool,
    #[serde(default)]
    pub performance_standby: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_performance_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_dr_mode: Option<String>,
    #[serde(default)]
    pub server_time_utc: i64,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
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
