//! The harness of the in-process API tests: a real core over real
//! (in-memory or file) SQLite, driven through the real axum router, and the
//! set-up steps the test modules share (servers, requests from a client
//! address, policies, tokens, people).

use std::future::Future;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::Connection as _;
use tower::ServiceExt;
use zafe_core::identity::IdentityKey;
use zafe_core::secret::SecretKey;
use zafe_engine::ManualClock;
use zafe_server::Config;
use zafe_server::core::{Core, CoreParts};
use zafe_storage::Backend;
use zafe_storage::sqlite::SqliteBackend;

/// One server: its core, the router in front of it, and its clock.
pub struct Harness {
    pub core: Arc<Core>,
    pub app: Router,
    /// The core's clock: it stands still until a test moves it, so expiry tests advance it
    /// instead of sleeping.
    pub clock: Arc<ManualClock>,
}

/// A fresh, uninitialised server over in-memory SQLite; with a master key
/// it unseals itself (auto-unseal mode).
pub async fn harness_with(config: Config, master_key: Option<SecretKey>) -> Harness {
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
    let clock = Arc::new(ManualClock::starting_now());
    let core = Core::new(CoreParts {
        config,
        clock: clock.clone(),
        projects: zafe_server::projects::rule(),
        engines: zafe_engines::build,
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
    Harness { core, app, clock }
}

/// One node of several over `backend`: all share the master key (so each unseals itself) and
/// the identity; the first one initialises the storage with `root` as its root token.
pub async fn node(backend: Arc<dyn Backend>, master: &SecretKey, root: &str) -> Harness {
    let clock = Arc::new(ManualClock::starting_now());
    let core = Core::new(CoreParts {
        config: Config::default(),
        clock: clock.clone(),
        projects: zafe_server::projects::rule(),
        engines: zafe_engines::build,
        backend,
        identity: IdentityKey::from_seed(&[3u8; 32]),
        master_key: Some(master.duplicate()),
        token_pepper: None,
        tls_spki: None,
        proxy_spki: None,
    })
    .await
    .unwrap();
    if core.is_initialized().await.unwrap() {
        core.unseal_with_master_key().await.unwrap();
    } else {
        core.initialize(1, 1, Some(root)).await.unwrap();
    }
    assert!(!core.is_sealed());
    let app = zafe_server::http::router(core.clone());
    Harness { core, app, clock }
}

/// A fresh, uninitialised server with the default configuration.
pub async fn harness() -> Harness {
    harness_with(Config::default(), None).await
}

/// A response: status, headers and the body as JSON (a JSON string when the
/// body is not JSON, `null` when it is empty).
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub json: Value,
}

impl Harness {
    /// A request as `token` (if any), with `body` as JSON (if any).
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

    /// Sends a request built by the caller.
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

    /// Submits one unseal share.
    pub async fn unseal(&self, key: &str) -> Answer {
        self.call(
            "PUT",
            "/v1/sys/unseal",
            None,
            Some(serde_json::json!({ "key": key })),
        )
        .await
    }

    /// A request that arrives through a trusted proxy (see [`behind_proxy`])
    /// on behalf of `client`, given in `X-Forwarded-For`.
    pub async fn call_from(
        &self,
        client: &str,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-forwarded-for", client);
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
}

impl Answer {
    /// The first error message, or "" when there is none.
    pub fn first_error(&self) -> String {
        self.json["errors"][0]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

// ---- Servers ------------------------------------------------------------------

/// An initialised server unsealed with its one share (Shamir mode, 1 of 1),
/// and its root token.
pub async fn unsealed_with(config: Config) -> (Harness, String) {
    let h = harness_with(config, None).await;
    let (keys, root) = h.init(1, 1).await;
    h.unseal(&keys[0]).await;
    (h, root)
}

/// [`unsealed_with`] the default configuration.
pub async fn unsealed() -> (Harness, String) {
    unsealed_with(Config::default()).await
}

/// An initialised server in master-key mode (it unseals itself), and its
/// root token.
pub async fn auto_unsealed(config: Config) -> (Harness, String) {
    let h = harness_with(config, Some(SecretKey::generate())).await;
    let (_, root) = h.init(1, 1).await;
    assert!(!h.core.is_sealed());
    (h, root)
}

/// The default configuration, trusting the harness's peer (127.0.0.1) as a
/// proxy, so that tests choose the client address with `X-Forwarded-For`
/// ([`Harness::call_from`]).
pub fn behind_proxy() -> Config {
    Config {
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..Config::default()
    }
}

/// A configuration for tests of people: cheap Argon2 so the suite stays
/// fast, and login limits loose unless a test sets them.
pub fn people_config() -> Config {
    let mut c = Config::default();
    c.auth.password.m_cost = 1024;
    c.auth.password.t_cost = 1;
    c.auth.password.per_ip_per_minute = 100_000;
    c.auth.password.per_account_per_minute = 100_000;
    c.auth.password.backoff_after_failures = 1_000_000;
    c
}

// ---- Policies and tokens --------------------------------------------------------

/// Writes the ACL policy `name` with `root`; asserts it was stored.
pub async fn write_policy(h: &Harness, root: &str, name: &str, policy: &str) {
    let a = h
        .call(
            "PUT",
            &format!("/v1/sys/policy/{name}"),
            Some(root),
            Some(json!({ "policy": policy })),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
}

/// A new child token of `root` carrying `policies`.
pub async fn token_with(h: &Harness, root: &str, policies: &[&str]) -> String {
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(root),
            Some(json!({ "policies": policies })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    a.json["auth"]["client_token"].as_str().unwrap().to_string()
}

// ---- People ---------------------------------------------------------------------

/// A new setup link's token; panics when an account already exists.
pub async fn setup_token(h: &Harness) -> String {
    zafe_server::people::setup::new_setup_token(&h.core)
        .await
        .unwrap()
        .expect("no account yet")
        .to_string()
}

/// Follows the setup link to make the first administrator; returns their
/// session's access token.
pub async fn first_admin(h: &Harness, email: &str, password: &str) -> String {
    let token = setup_token(h).await;
    let a = h
        .call(
            "POST",
            "/v1/sys/setup",
            None,
            Some(json!({"token": token, "email": email, "password": password})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    a.json["auth"]["client_token"].as_str().unwrap().to_string()
}

/// Creates a password account (`body` as `POST sys/users` takes it) as
/// `token`; returns its id.
pub async fn create_user(h: &Harness, token: &str, body: Value) -> String {
    let a = h
        .call("POST", "/v1/sys/users", Some(token), Some(body))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    a.json["data"]["id"].as_str().unwrap().to_string()
}

/// A password login, with a TOTP code when given; the answer as it comes.
pub async fn password_login(
    h: &Harness,
    email: &str,
    password: &str,
    totp_code: Option<&str>,
) -> Answer {
    let mut body = json!({"email": email, "password": password});
    if let Some(code) = totp_code {
        body["totp_code"] = json!(code);
    }
    h.call("POST", "/v1/auth/user/login", None, Some(body))
        .await
}

/// The access token of a successful login; asserts the login succeeded.
pub fn client_token(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    a.json["auth"]["client_token"].as_str().unwrap().to_string()
}

// ---- PostgreSQL: a throwaway database per test ----

pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("ZAFE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("ZAFE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("ZAFE_REQUIRE_POSTGRES=1 but ZAFE_TEST_POSTGRES_URL is not set")
        }
        _ => {
            eprintln!("skipping: ZAFE_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

pub async fn with_postgres_database<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(admin_url) = postgres_admin_url() else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // Unique within the process too: tests run in parallel in one binary.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("zafe_server_test_{}_{n}_{nanos}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(&admin_url)
        .await
        .expect("connect");
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut admin)
        .await
        .unwrap();
    let outcome = tokio::spawn(test(with_database(&admin_url, &name))).await;
    sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

pub use zafe_storage::postgres::with_database;
