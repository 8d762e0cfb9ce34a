//! Shared set-up for the in-process API tests: a real core over real
//! (in-memory or file) SQLite, driven through the real axum router.

#![allow(dead_code)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;
use zafe_core::identity::IdentityKey;
use zafe_core::secret::SecretKey;
use zafe_server::Config;
use zafe_server::core::{Core, CoreParts};
use zafe_storage::Backend;
use zafe_storage::sqlite::SqliteBackend;

pub struct Harness {
    pub core: Arc<Core>,
    pub app: Router,
}

pub async fn harness_with(config: Config, master_key: Option<SecretKey>) -> Harness {
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
    let core = Core::new(CoreParts {
        config,
        backend,
        identity: IdentityKey::generate(),
        master_key,
        token_pepper: None,
        tls_spki: None,
        proxy_spki: None,
    })
    .await
    .unwrap();
    let app = zafe_server::http::router(core.clone());
    Harness { core, app }
}

pub async fn harness() -> Harness {
    harness_with(Config::default(), None).await
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub json: Value,
}

impl Harness {
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("x-vault-token", t);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&b).unwrap())
            }
            None => Body::empty(),
        };
        self.send(req.body(body).unwrap()).await
    }

    pub async fn send(&self, req: Request<Body>) -> Answer {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Answer {
            status,
            headers,
            json,
        }
    }

    /// Initialises with `n` shares / threshold `t`; returns (hex shares, root token).
    pub async fn init(&self, n: usize, t: usize) -> (Vec<String>, String) {
        let a = self
            .call(
                "PUT",
                "/v1/sys/init",
                None,
                Some(serde_json::json!({"secret_shares": n, "secret_threshold": t})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        let keys = a.json["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_string())
            .collect();
        (keys, a.json["root_token"].as_str().unwrap().to_string())
    }

    pub async fn unseal(&self, key: &str) -> Answer {
        self.call(
            "PUT",
            "/v1/sys/unseal",
            None,
            Some(serde_json::json!({ "key": key })),
        )
        .await
    }
}
