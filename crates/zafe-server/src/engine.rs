//! Engines mounted at paths behind the router (Vault's "secrets engines"
//! and "auth methods").
//!
//! An engine sees only its own slice of storage: a [`View`] that prefixes
//! every key with `logical/<mount uuid>/` (or `auth/<uuid>/`). Because the
//! prefix is added here and nowhere else, an engine handler that forgets a
//! check still cannot read or write another mount's rows (R-ACL-4).

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::barrier::{Expect, Record, Write};
use crate::core::{Core, Operation, Reply, Request};
use crate::error::{Error, Result};
use crate::mounts::MountEntry;
use crate::tokens::TokenEntry;

/// What an engine gets for one request.
pub struct Ctx<'a> {
    pub core: &'a Arc<Core>,
    pub mount: &'a MountEntry,
    pub view: View,
    /// The authenticated caller; `None` on public (login) paths.
    pub caller: Option<&'a TokenEntry>,
}

#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// Paths (relative to the mount) that need no token: login endpoints.
    fn is_public(&self, _rel_path: &str, _op: Operation) -> bool {
        false
    }

    /// For writes: whether the target exists, which decides whether the
    /// policy must grant `update` (it exists) or `create` (it does not), as
    /// in Vault. Engines without the distinction say `true` (update).
    async fn exists(&self, _ctx: &Ctx<'_>, _rel_path: &str) -> Result<bool> {
        Ok(true)
    }

    async fn handle(&self, ctx: &Ctx<'_>, req: &Request, rel_path: &str) -> Result<Reply>;
}

/// A mount's slice of the barrier.
#[derive(Clone)]
pub struct View {
    core: Arc<Core>,
    prefix: String,
}

impl View {
    pub fn new(core: Arc<Core>, prefix: String) -> Self {
        debug_assert!(prefix.ends_with('/'));
        Self { core, prefix }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn get(&self, key: &str) -> Result<Option<Record>> {
        Ok(self.core.barrier.get(&self.full(key)).await?)
    }

    /// Reads and deserialises a JSON record, with its generation.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, i64)>> {
        match self.get(key).await? {
            None => Ok(None),
            Some(record) => {
                let value =
                    serde_json::from_slice(&record.value).map_err(|_| Error::Integrity {
                        key: self.full(key),
                    })?;
                Ok(Some((value, record.generation)))
            }
        }
    }

    pub async fn put(&self, key: &str, value: &[u8], expect: Expect) -> Result<i64> {
        Ok(self
            .core
            .barrier
            .put(&self.full(key), value, expect)
            .await?)
    }

    pub async fn put_json<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        expect: Expect,
    ) -> Result<i64> {
        self.put(
            key,
            &serde_json::to_vec(value).expect("serialisable"),
            expect,
        )
        .await
    }

    pub async fn update<F>(&self, key: &str, f: F) -> Result<Option<i64>>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        Ok(self.core.barrier.update(&self.full(key), f).await?)
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        Ok(self.core.barrier.delete(&self.full(key)).await?)
    }

    /// Atomic batch; keys are relative to the view.
    pub async fn commit(&self, writes: Vec<Write>) -> Result<()> {
        let writes = writes
            .into_iter()
            .map(|w| match w {
                Write::Put { key, value, expect } => Write::Put {
                    key: self.full(&key),
                    value,
                    expect,
                },
                Write::Delete { key, expect } => Write::Delete {
                    key: self.full(&key),
                    expect,
                },
            })
            .collect();
        Ok(self.core.barrier.commit(writes).await?)
    }

    /// As [`Self::commit`], but a failed expectation (another writer got
    /// there first) is `Ok(false)` instead of an error, so that the caller
    /// can re-read and decide again. Nothing is written in that case.
    pub async fn try_commit(&self, writes: Vec<Write>) -> Result<bool> {
        let writes = writes
            .into_iter()
            .map(|w| match w {
                Write::Put { key, value, expect } => Write::Put {
                    key: self.full(&key),
                    value,
                    expect,
                },
                Write::Delete { key, expect } => Write::Delete {
                    key: self.full(&key),
                    expect,
                },
            })
            .collect();
        match self.core.barrier.commit(writes).await {
            Ok(()) => Ok(true),
            Err(crate::barrier::BarrierError::Conflict { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn list(&self, prefix: &str, start_after: &str, limit: usize) -> Result<Vec<String>> {
        Ok(self
            .core
            .barrier
            .list(&self.full(prefix), start_after, limit)
            .await?)
    }
}

/// Vault's response envelope for engine responses.
pub fn envelope(
    request_id: &str,
    data: Option<Value>,
    auth: Option<Value>,
    warnings: Option<Vec<String>>,
) -> Value {
    serde_json::json!({
        "request_id": request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": warnings,
        "auth": auth,
        "mount_type": "",
    })
}

/// A 200 with `data` in Vault's envelope.
pub fn data_reply(req: &Request, data: Value) -> Reply {
    Reply::Json(
        http::StatusCode::OK,
        envelope(&req.request_id, Some(data), None, None),
    )
}

/// A field of the request body or query, as a string.
pub fn str_field<'a>(req: &'a Request, name: &str) -> Option<&'a str> {
    req.field(name)
        .and_then(Value::as_str)
        .or_else(|| req.query(name))
}

/// Clamps a caller's page size (R-ACL-3).
pub const MAX_LIST: usize = 1000;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use serde_json::json;

    use super::*;

    fn request(body: Option<Value>, query: &[(&str, &str)]) -> Request {
        Request {
            operation: Operation::Write,
            path: "secret/data/x".into(),
            body: body.map(|b| crate::core::RequestBody::new(b, 0)),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            token: None,
            client_ip: IpAddr::from([127, 0, 0, 1]),
            request_id: "req-1".into(),
            user_agent: None,
        }
    }

    // Vault clients read these keys; every one is present, even when null.
    #[test]
    fn the_envelope_has_vaults_shape() {
        let e = envelope("id", Some(json!({"k": "v"})), None, Some(vec!["w".into()]));
        assert_eq!(
            e,
            json!({
                "request_id": "id",
                "lease_id": "",
                "renewable": false,
                "lease_duration": 0,
                "data": {"k": "v"},
                "wrap_info": null,
                "warnings": ["w"],
                "auth": null,
                "mount_type": "",
            })
        );
        let Reply::Json(status, body) = data_reply(&request(None, &[]), json!({"x": 1})) else {
            panic!("a data reply is JSON");
        };
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["data"], json!({"x": 1}));
        assert_eq!(body["warnings"], Value::Null);
    }

    // A string field comes from the body first, then from the query; a
    // body field that is not a string falls back to the query too.
    #[test]
    fn string_fields_come_from_the_body_then_the_query() {
        let req = request(
            Some(json!({"a": "body", "n": 5})),
            &[("a", "query"), ("n", "7"), ("q", "only")],
        );
        assert_eq!(str_field(&req, "a"), Some("body"));
        assert_eq!(str_field(&req, "n"), Some("7"));
        assert_eq!(str_field(&req, "q"), Some("only"));
        assert_eq!(str_field(&req, "missing"), None);
        assert_eq!(str_field(&request(None, &[("a", "q")]), "a"), Some("q"));
    }

    // R-ACL-3: at most 1000 keys per list call.
    #[test]
    fn list_pages_are_capped_at_1000() {
        assert_eq!(MAX_LIST, 1000);
    }
}
