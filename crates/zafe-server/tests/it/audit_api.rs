//! The audit log through the real router (R-AUD-1..6, R-SCALE-2, and the
//! audit items of lessons.md):
//!
//! - every request (allowed, denied, 404, 400, 405, 413, outside `/v1`) gets
//!   exactly one entry, naming its caller, status, decision and error;
//! - entries recorded while sealed are written first after unseal;
//! - if the database or the file refuses the entry, the request fails with
//!   503 and its answer (a secret) never leaves;
//! - edits, deletions, insertions, reordering and truncation of rows, made
//!   directly in SQLite and PostgreSQL, are caught and the first bad
//!   sequence number is named, by the server (MACs) and offline (public key);
//! - verification reads beyond 5,000 rows; retention keeps it passing;
//!   exports carry the hashes; order comes from the database, not clocks,
//!   with several nodes writing at once.
//!
//! PostgreSQL tests need `ZAFE_TEST_POSTGRES_URL` (see zafe-storage's tests).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sqlx::Connection;
use tower::ServiceExt;
use zafe_core::audit::{Line, Report, Verifier, entry_hash};
use zafe_core::identity::IdentityKey;
use zafe_core::secret::SecretKey;
use zafe_server::Config;
use zafe_server::audit::{Event, now_us};
use zafe_server::core::{Core, CoreParts};
use zafe_storage::Backend;
use zafe_storage::audit::{AuditCheckpoint, AuditRow};
use zafe_storage::postgres::PostgresBackend;
use zafe_storage::sqlite::SqliteBackend;

const ROOT: &str = "audit-test-root-token";
const SECRET: &str = "s3cr3t-Value-that-must-never-be-logged";

/// One server node: a core over `backend` with a fixed identity and master
/// key (so that several nodes, or a restart, share them).
async fn node(
    backend: Arc<dyn Backend>,
    config: Config,
    seed: &[u8; 32],
    master: &SecretKey,
) -> Harness {
    let clock = std::sync::Arc::new(zafe_engine::ManualClock::starting_now());
    let core = Core::new(CoreParts {
        config,
        clock: clock.clone(),
        projects: zafe_server::projects::rule(),
        engines: zafe_engines::build,
        backend,
        identity: IdentityKey::from_seed(seed),
        master_key: Some(master.duplicate()),
        token_pepper: None,
        tls_spki: None,
        proxy_spki: None,
    })
    .await
    .unwrap();
    if core.is_initialized().await.unwrap() {
        core.unseal_with_master_key().await.unwrap();
    }
    let app = zafe_server::http::router(core.clone());
    Harness { core, app, clock }
}

/// An initialised, unsealed node (auto-unseal) with the root token [`ROOT`].
async fn first_node(backend: Arc<dyn Backend>, config: Config) -> (Harness, [u8; 32], SecretKey) {
    let seed = [7u8; 32];
    let master = SecretKey::generate();
    let h = node(backend, config, &seed, &master).await;
    h.core.initialize(1, 1, Some(ROOT)).await.unwrap();
    assert!(!h.core.is_sealed());
    (h, seed, master)
}

async fn sqlite_file(dir: &Path) -> Arc<dyn Backend> {
    Arc::new(SqliteBackend::open(&dir.join("zafe.db")).await.unwrap())
}

async fn root(h: &Harness, method: &str, path: &str, body: Option<Value>) -> Answer {
    h.call(method, &format!("/v1/{path}"), Some(ROOT), body)
        .await
}

/// Every stored entry, in order.
async fn entries(backend: &dyn Backend) -> Vec<(AuditRow, Event)> {
    let mut out = Vec::new();
    let mut from = i64::MIN;
    loop {
        let page = backend.audit_read(from, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        out.extend(page.into_iter().map(|r| {
            let e = serde_json::from_slice(&r.body).unwrap();
            (r, e)
        }));
    }
    out
}

async fn head(backend: &dyn Backend) -> i64 {
    backend.audit_head().await.unwrap().seq
}

/// Waits (bounded) until the log holds `seq`: entries of requests that
/// started sealed are written asynchronously after unseal.
async fn wait_for(backend: &dyn Backend, seq: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while head(backend).await < seq {
        assert!(
            std::time::Instant::now() < deadline,
            "the audit log never reached seq {seq}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn server_verify(h: &Harness) -> Report {
    let a = root(h, "GET", "sys/audit-log/verify", None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    serde_json::from_value(a.json["data"]["report"].clone()).unwrap()
}

/// The raw body of a GET (exports are not JSON).
async fn get_text(h: &Harness, path: &str) -> (StatusCode, String) {
    let req = Request::builder()
        .uri(path)
        .header("x-vault-token", ROOT)
        .body(Body::empty())
        .unwrap();
    let res = h.app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

async fn export(h: &Harness, query: &str) -> String {
    let (status, text) = get_text(h, &format!("/v1/sys/audit-log/export?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    text
}

/// What `zafe audit verify --from-export` does: the public key only.
fn offline(text: &str, public_key: [u8; 32]) -> Report {
    offline_remembering(text, public_key, None)
}

/// The same, with a checkpoint kept from an earlier verification.
fn offline_remembering(
    text: &str,
    public_key: [u8; 32],
    remembered: Option<AuditCheckpoint>,
) -> Report {
    let mut v = Verifier::new(None, public_key, false);
    if let Some(cp) = remembered {
        v.remember(cp);
    }
    for line in text.lines().filter(|l| !l.is_empty()) {
        match Line::parse(line) {
            Ok(l) => v.line(&l),
            Err(e) => v.malformed(&e),
        }
    }
    v.finish()
}

fn public_key(seed: &[u8; 32]) -> [u8; 32] {
    IdentityKey::from_seed(seed).public_key()
}

/// `n` ordinary requests: reads, writes, denials.
async fn traffic(h: &Harness, n: usize) {
    for i in 0..n {
        match i % 3 {
            0 => assert_eq!(
                h.call("GET", "/v1/sys/health", None, None).await.status,
                StatusCode::OK
            ),
            1 => assert_eq!(
                h.call("GET", "/v1/sys/mounts", Some("zafe_s_not-a-token"), None)
                    .await
                    .status,
                StatusCode::FORBIDDEN
            ),
            _ => assert_eq!(
                root(
                    h,
                    "PUT",
                    &format!("sys/policy/p{i}"),
                    Some(json!({"policy": "path \"x/*\" { capabilities = [\"read\"] }"}))
                )
                .await
                .status,
                StatusCode::NO_CONTENT
            ),
        }
    }
}

async fn checkpoint_now(h: &Harness) -> i64 {
    let a = root(h, "POST", "sys/audit-log/checkpoints", None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    a.json["data"]["checkpoint"]["seq"]
        .as_i64()
        .expect("a checkpoint was signed")
}

// ---- Every request, once -------------------------------------------------

// lessons.md: "the fail-closed HMAC audit code existed but was never called".
// Each kind of request adds exactly one entry, with what happened.
#[tokio::test]
async fn every_request_is_audited_exactly_once_allowed_or_denied() {
    let config = Config {
        max_body_bytes: Some(4096),
        ..Config::default()
    };
    let (h, _, _) = first_node(Arc::new(SqliteBackend::memory().await.unwrap()), config).await;
    let backend = h.core.backend().clone();

    struct Case {
        method: &'static str,
        uri: &'static str,
        token: Option<&'static str>,
        body: Option<Vec<u8>>,
        status: u16,
        decision: &'static str,
        actor: &'static str,
        error: &'static str,
    }
    let case = |method, uri, token, status, decision, actor, error| Case {
        method,
        uri,
        token,
        body: None,
        status,
        decision,
        actor,
        error,
    };
    let cases = vec![
        case(
            "GET",
            "/v1/sys/health",
            None,
            200,
            "allowed",
            "anonymous",
            "",
        ),
        case(
            "GET",
            "/v1/sys/mounts",
            None,
            403,
            "denied",
            "anonymous",
            "permission denied",
        ),
        case(
            "GET",
            "/v1/sys/mounts",
            Some("zafe_s_guessed"),
            403,
            "denied",
            "anonymous",
            "permission denied",
        ),
        case(
            "GET",
            "/v1/sys/mounts",
            Some(ROOT),
            200,
            "allowed",
            "token",
            "",
        ),
        case(
            "GET",
            "/v1/no/such/path",
            Some(ROOT),
            404,
            "failed",
            "token",
            "unsupported path",
        ),
        case(
            "GET",
            "/v1/sys/mounts?list=true",
            Some(ROOT),
            405,
            "failed",
            "token",
            "unsupported operation",
        ),
        case(
            "GET",
            "/not-the-api",
            None,
            404,
            "failed",
            "anonymous",
            "not found",
        ),
        Case {
            body: Some(b"{not json".to_vec()),
            // Refused before the core sees it: no caller was authenticated.
            ..case(
                "PUT",
                "/v1/sys/policy/x",
                Some(ROOT),
                400,
                "failed",
                "anonymous",
                "failed to parse JSON input",
            )
        },
        Case {
            body: Some(vec![b' '; 10_000]),
            ..case(
                "PUT",
                "/v1/sys/policy/x",
                Some(ROOT),
                413,
                "failed",
                "anonymous",
                "request body too large",
            )
        },
    ];
    for c in cases {
        let before = head(&*backend).await;
        let mut req = Request::builder()
            .method(c.method)
            .uri(c.uri)
            .header("x-request-id", format!("case-{before}"));
        if let Some(t) = c.token {
            req = req.header("x-vault-token", t);
        }
        let body = match &c.body {
            Some(b) => {
                req = req.header("content-length", b.len());
                Body::from(b.clone())
            }
            None => Body::empty(),
        };
        let a = h.send(req.body(body).unwrap()).await;
        assert_eq!(
            a.status.as_u16(),
            c.status,
            "{} {}: {:?}",
            c.method,
            c.uri,
            a.json
        );
        let all = entries(&*backend).await;
        assert_eq!(
            head(&*backend).await,
            before + 1,
            "{} {}: exactly one entry",
            c.method,
            c.uri
        );
        let (_, e) = all.last().unwrap();
        let what = format!("{} {}: {e:?}", c.method, c.uri);
        assert_eq!(
            (e.status, e.decision.as_str(), e.actor.kind.as_str()),
            (c.status, c.decision, c.actor),
            "{what}"
        );
        assert!(e.error.contains(c.error), "{what}");
        assert_eq!(e.method, c.method, "{what}");
        assert_eq!(
            e.request_id,
            format!("case-{before}"),
            "R-OPS-3: the request id is in the entry"
        );
        assert_eq!(a.headers["x-request-id"], e.request_id.as_str());
        assert_eq!(e.client_ip, "127.0.0.1");
        assert!(!e.buffered);
        match c.token {
            Some(t) => {
                assert!(
                    e.actor.token.starts_with("hmac-sha256:") && e.actor.token.len() == 12 + 64,
                    "{what}"
                );
                assert!(!e.actor.token.contains(t));
            }
            None => assert!(e.actor.token.is_empty(), "{what}"),
        }
        if c.actor == "token" {
            assert_eq!(
                (e.actor.display_name.as_str(), e.actor.policies.as_slice()),
                ("root", &["root".to_string()][..]),
                "{what}"
            );
            assert!(e.actor.accessor.starts_with("hmac-sha256:"), "{what}");
        }
    }
    let all = entries(&*backend).await;
    let paths: Vec<&str> = all.iter().map(|(_, e)| e.path.as_str()).collect();
    assert!(
        paths.contains(&"no/such/path")
            && paths.contains(&"/not-the-api")
            && paths.contains(&"sys/mounts")
    );
    let ops: Vec<&str> = all.iter().map(|(_, e)| e.operation.as_str()).collect();
    assert!(ops.contains(&"list") && ops.contains(&"write") && ops.contains(&"read"));
    // Two failed attempts with the same token correlate; different tokens do not.
    let a = h
        .call("GET", "/v1/sys/mounts", Some("zafe_s_guessed"), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let all = entries(&*backend).await;
    let guessed: Vec<&str> = all
        .iter()
        .filter(|(_, e)| e.status == 403 && !e.actor.token.is_empty())
        .map(|(_, e)| e.actor.token.as_str())
        .collect();
    assert_eq!(guessed.len(), 2);
    assert_eq!(guessed[0], guessed[1]);
    assert!(server_verify(&h).await.ok);
}

// ---- Sealed --------------------------------------------------------------

// Entries of requests made while sealed (status checks, init, failed and
// good unseal attempts) are the first entries written after unseal, in
// order, and no share is in them.
#[tokio::test]
async fn entries_written_while_sealed_appear_after_unseal() {
    let h = harness().await;
    let backend = h.core.backend().clone();
    assert_eq!(
        h.call("GET", "/v1/sys/seal-status", None, None)
            .await
            .status,
        StatusCode::OK
    );
    let (keys, root_token) = h.init(3, 2).await;
    let mut wrong = hex::decode(&keys[1]).unwrap();
    wrong[5] ^= 0x40;
    let wrong = hex::encode(wrong);
    assert_eq!(h.unseal(&wrong).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(h.unseal(&keys[0]).await.status, StatusCode::OK);
    assert_eq!(
        h.call("GET", "/v1/sys/mounts", Some(&root_token), None)
            .await
            .status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // At most the status check before init: init unseals for a moment (to
    // create the root token), and what waited may be written then.
    assert!(
        head(&*backend).await <= 1,
        "nothing else is written while sealed: there is no MAC key"
    );
    assert_eq!(h.unseal(&keys[2]).await.json["sealed"], false);
    assert_eq!(
        h.call("GET", "/v1/sys/mounts", Some(&root_token), None)
            .await
            .status,
        StatusCode::OK
    );
    wait_for(&*backend, 6).await;

    let all = entries(&*backend).await;
    let seen: Vec<(&str, u16, bool)> = all
        .iter()
        .map(|(_, e)| (e.path.as_str(), e.status, e.buffered))
        .collect();
    assert_eq!(
        seen,
        [
            ("sys/seal-status", 200, true),
            ("sys/init", 200, true),
            ("sys/unseal", 400, true),
            ("sys/unseal", 200, true),
            ("sys/mounts", 503, true),
            ("sys/unseal", 200, true),
            ("sys/mounts", 200, false),
        ]
    );
    assert!(all[2].1.error.contains("key"), "{:?}", all[2].1);
    assert_eq!(all[0].1.dropped, 0);
    let raw: Vec<u8> = all.iter().flat_map(|(r, _)| r.body.clone()).collect();
    let raw = String::from_utf8_lossy(&raw);
    for secret in keys.iter().chain([&wrong, &root_token]) {
        assert!(
            !raw.contains(secret.as_str()),
            "a share or token reached the audit log"
        );
    }
    let report = server_verify_with(&h, &root_token).await;
    assert!(report.ok, "{report:?}");
}

async fn server_verify_with(h: &Harness, token: &str) -> Report {
    let a = h
        .call("GET", "/v1/sys/audit-log/verify", Some(token), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    serde_json::from_value(a.json["data"]["report"].clone()).unwrap()
}

// ---- Fail-closed ---------------------------------------------------------

async fn write_secret(h: &Harness) {
    let a = root(
        h,
        "PUT",
        "secret/data/app",
        Some(json!({"data": {"password": SECRET}})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let a = root(h, "GET", "secret/data/app", None).await;
    assert_eq!(a.json["data"]["data"]["password"], SECRET);
}

fn assert_refused(a: &Answer) {
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", a.json);
    let text = a.json.to_string();
    assert!(text.contains("audit log unavailable"), "{text}");
    assert!(
        !text.contains(SECRET),
        "the secret left although its audit entry was not written"
    );
}

// R-AUD-1: the database refuses the entry (here: a trigger) → 503, and the
// secret the request would have returned never leaves.
#[tokio::test]
async fn a_request_fails_closed_when_the_database_refuses_its_entry() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _, _) = first_node(sqlite_file(dir.path()).await, Config::default()).await;
    write_secret(&h).await;
    let mut db = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("zafe.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER refuse_audit BEFORE INSERT ON zafe_audit BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        .execute(&mut db)
        .await
        .unwrap();
    assert_refused(&root(&h, "GET", "secret/data/app", None).await);
    assert_refused(&h.call("GET", "/v1/sys/health", None, None).await);
    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(&mut db)
        .await
        .unwrap();
    let a = root(&h, "GET", "secret/data/app", None).await;
    assert_eq!(
        a.json["data"]["data"]["password"], SECRET,
        "works again once the log accepts entries"
    );
    assert!(server_verify(&h).await.ok);
}

/// A raw connection to the test's SQLite file, and a trigger on it that
/// makes every audit insert fail (standing in for a full disk).
async fn refuse_audit_inserts(dir: &Path) -> sqlx::SqliteConnection {
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("zafe.db").display()))
            .await
            .unwrap();
    sqlx::query("CREATE TRIGGER refuse_audit BEFORE INSERT ON zafe_audit BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(&mut db)
        .await
        .unwrap();
    db
}

// R-AUD-0, R-AUD-1: a change and its entry are one commit. With audit
// inserts failing, a secret write and a policy change granting sudo answer
// 503 and change nothing; the log stays intact and holds no entry for them.
// (Before: both answered 503 but both changes were kept, unaudited.)
#[tokio::test]
async fn a_change_whose_entry_cannot_be_written_is_not_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (h, _, _) = first_node(sqlite_file(dir.path()).await, Config::default()).await;
    let backend = h.core.backend().clone();
    const OLD: &str = r#"path "secret/data/app" { capabilities = ["read"] }"#;
    const SUDO: &str =
        r#"path "*" { capabilities = ["create", "read", "update", "delete", "list", "sudo"] }"#;

    // A change that succeeds gets exactly one entry, committed with it.
    let before = head(&*backend).await;
    let a = root(&h, "PUT", "sys/policy/p", Some(json!({ "policy": OLD }))).await;
    assert!(a.status.is_success(), "{:?}", a.json);
    let all = entries(&*backend).await;
    assert_eq!(head(&*backend).await, before + 1, "exactly one entry");
    let (_, e) = all.last().unwrap();
    assert_eq!(
        (e.method.as_str(), e.path.as_str(), e.decision.as_str()),
        ("PUT", "sys/policy/p", "allowed")
    );
    assert_eq!(e.actor.kind, "token");
    write_secret(&h).await;

    let mut db = refuse_audit_inserts(dir.path()).await;
    let before = head(&*backend).await;
    assert_refused(
        &root(
            &h,
            "POST",
            "secret/data/x",
            Some(json!({ "data": { "password": SECRET } })),
        )
        .await,
    );
    assert_refused(&root(&h, "PUT", "sys/policy/p", Some(json!({ "policy": SUDO }))).await);
    // A read's entry cannot be written either: refused, its secret kept in.
    assert_refused(&root(&h, "GET", "secret/data/app", None).await);
    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(&mut db)
        .await
        .unwrap();

    assert_eq!(head(&*backend).await, before, "nothing was appended");
    let a = root(&h, "GET", "secret/data/x", None).await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "the secret was not kept: {:?}",
        a.json
    );
    let a = root(&h, "GET", "sys/policy/p", None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        a.json["data"]["rules"], OLD,
        "the policy change was not kept"
    );
    let report = server_verify(&h).await;
    assert!(report.ok, "{report:?}");
    let refused: Vec<_> = entries(&*backend)
        .await
        .into_iter()
        .filter(|(r, _)| r.seq > before && r.seq <= before + 2)
        .map(|(_, e)| (e.method, e.path))
        .collect();
    assert_eq!(
        refused,
        [
            ("GET".to_string(), "secret/data/x".to_string()),
            ("GET".to_string(), "sys/policy/p".to_string())
        ],
        "no entry for the refused changes, only the reads after"
    );
}

// R-AUD-0, R-AUD-4: the entry of a change (committed with it, beside the
// audit writer) is in the file before the response leaves, in sequence.
#[tokio::test]
async fn a_change_s_entry_is_in_the_audit_file_before_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut config = Config::default();
    config.audit.file_path = Some(file.clone());
    let (h, seed, _) = first_node(sqlite_file(dir.path()).await, config).await;
    for i in 0..3 {
        let a = root(
            &h,
            "PUT",
            &format!("secret/data/f{i}"),
            Some(json!({ "data": { "password": SECRET } })),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        let text = std::fs::read_to_string(&file).unwrap();
        let report = offline(&text, public_key(&seed));
        assert!(report.ok, "{report:?}");
        assert_eq!(
            report.last_seq,
            Some(head(&**h.core.backend()).await),
            "the file holds the write's entry"
        );
        assert!(text.contains(&format!("secret/data/f{i}")));
        assert!(!text.contains(SECRET));
    }
}

// R-AUD-4: the file sink fails (unwritable file) → 503 as well; once it is
// writable again it catches up from the database and still verifies.
#[tokio::test]
async fn a_request_fails_closed_when_the_audit_file_cannot_be_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.jsonl");
    let mut config = Config::default();
    config.audit.file_path = Some(file.clone());
    let (h, seed, _) = first_node(sqlite_file(dir.path()).await, config).await;
    write_secret(&h).await;
    checkpoint_now(&h).await;
    assert!(offline(&std::fs::read_to_string(&file).unwrap(), public_key(&seed)).ok);

    // Read-only. Root ignores permission bits, so as root the file is
    // replaced by something no one can append to: a directory.
    let root_user = unsafe { libc::geteuid() } == 0;
    let moved = dir.path().join("audit.jsonl.moved");
    if root_user {
        std::fs::rename(&file, &moved).unwrap();
        std::fs::create_dir(&file).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
    }
    assert_refused(&root(&h, "GET", "secret/data/app", None).await);
    assert_refused(&h.call("GET", "/v1/sys/health", None, None).await);

    if root_user {
        std::fs::remove_dir(&file).unwrap();
        std::fs::rename(&moved, &file).unwrap();
    } else {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let a = root(&h, "GET", "secret/data/app", None).await;
    assert_eq!(a.status, StatusCode::OK);
    checkpoint_now(&h).await;
    let text = std::fs::read_to_string(&file).unwrap();
    let report = offline(&text, public_key(&seed));
    assert!(report.ok, "{report:?}");
    assert_eq!(
        report.last_seq,
        Some(head(&**h.core.backend()).await),
        "the file caught up with the database"
    );
    assert!(!text.contains(SECRET));
}

// ---- Tampering -----------------------------------------------------------

/// A raw connection to the database, as an attacker with write access has.
enum Raw {
    Lite(sqlx::SqliteConnection),
    Pg(sqlx::PgConnection),
}

type RowParts = (i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);

impl Raw {
    async fn disable_guards(&mut self) {
        match self {
            Raw::Lite(c) => {
                sqlx::query("DROP TRIGGER zafe_audit_no_update")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
            Raw::Pg(c) => {
                sqlx::query("ALTER TABLE zafe_audit DISABLE TRIGGER USER")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
        }
    }

    /// (time_us, prev_hash, hash, mac, body)
    async fn row(&mut self, seq: i64) -> RowParts {
        match self {
            Raw::Lite(c) => sqlx::query_as(
                "SELECT time_us, prev_hash, hash, mac, body FROM zafe_audit WHERE seq = ?1",
            )
            .bind(seq)
            .fetch_one(&mut *c)
            .await
            .unwrap(),
            Raw::Pg(c) => sqlx::query_as(
                "SELECT time_us, prev_hash, hash, mac, body FROM zafe_audit WHERE seq = $1",
            )
            .bind(seq)
            .fetch_one(&mut *c)
            .await
            .unwrap(),
        }
    }

    async fn set(&mut self, seq: i64, prev: &[u8], hash: &[u8], body: &[u8]) {
        match self {
            Raw::Lite(c) => sqlx::query(
                "UPDATE zafe_audit SET prev_hash = ?2, hash = ?3, body = ?4 WHERE seq = ?1",
            )
            .bind(seq)
            .bind(prev)
            .bind(hash)
            .bind(body)
            .execute(&mut *c)
            .await
            .map(|_| ())
            .unwrap(),
            Raw::Pg(c) => sqlx::query(
                "UPDATE zafe_audit SET prev_hash = $2, hash = $3, body = $4 WHERE seq = $1",
            )
            .bind(seq)
            .bind(prev)
            .bind(hash)
            .bind(body)
            .execute(&mut *c)
            .await
            .map(|_| ())
            .unwrap(),
        }
    }

    async fn exec(&mut self, sql_lite: &str, sql_pg: &str, a: i64, b: i64) {
        match self {
            Raw::Lite(c) => sqlx::query(sql_lite)
                .bind(a)
                .bind(b)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .unwrap(),
            Raw::Pg(c) => sqlx::query(sql_pg)
                .bind(a)
                .bind(b)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .unwrap(),
        }
    }

    async fn renumber(&mut self, from: i64, to: i64) {
        self.exec(
            "UPDATE zafe_audit SET seq = ?2 WHERE seq = ?1",
            "UPDATE zafe_audit SET seq = $2 WHERE seq = $1",
            from,
            to,
        )
        .await;
    }

    async fn delete_range(&mut self, from: i64, to: i64) {
        self.exec(
            "DELETE FROM zafe_audit WHERE seq >= ?1 AND seq <= ?2",
            "DELETE FROM zafe_audit WHERE seq >= $1 AND seq <= $2",
            from,
            to,
        )
        .await;
    }

    async fn insert(&mut self, seq: i64, parts: &RowParts) {
        let (time_us, prev, hash, mac, body) = parts;
        match self {
            Raw::Lite(c) => sqlx::query("INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
                .bind(seq)
                .bind(time_us)
                .bind(prev)
                .bind(hash)
                .bind(mac)
                .bind(body)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .unwrap(),
            Raw::Pg(c) => sqlx::query("INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(seq)
                .bind(time_us)
                .bind(prev)
                .bind(hash)
                .bind(mac)
                .bind(body)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .unwrap(),
        }
    }

    async fn delete_checkpoints(&mut self) {
        match self {
            Raw::Lite(c) => {
                sqlx::query("DROP TRIGGER zafe_audit_checkpoints_no_delete")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                sqlx::query("DELETE FROM zafe_audit_checkpoints")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
            Raw::Pg(c) => {
                sqlx::query("ALTER TABLE zafe_audit_checkpoints DISABLE TRIGGER USER")
                    .execute(&mut *c)
                    .await
                    .unwrap();
                sqlx::query("DELETE FROM zafe_audit_checkpoints")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
        }
    }

    /// Deletes the checkpoints (anchors included) naming entries after `seq`.
    async fn delete_checkpoints_after(&mut self, seq: i64) {
        match self {
            Raw::Lite(c) => {
                sqlx::query("DROP TRIGGER zafe_audit_checkpoints_no_delete")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
            Raw::Pg(c) => {
                sqlx::query("ALTER TABLE zafe_audit_checkpoints DISABLE TRIGGER USER")
                    .execute(&mut *c)
                    .await
                    .unwrap();
            }
        }
        self.exec(
            "DELETE FROM zafe_audit_checkpoints WHERE seq > ?1 AND ?2 = ?2",
            "DELETE FROM zafe_audit_checkpoints WHERE seq > $1 AND $2 = $2",
            seq,
            0,
        )
        .await;
    }

    async fn set_head(&mut self, seq: i64, hash: &[u8]) {
        match self {
            Raw::Lite(c) => sqlx::query("UPDATE zafe_audit_head SET seq = ?1, hash = ?2")
                .bind(seq)
                .bind(hash)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .unwrap(),
            Raw::Pg(c) => sqlx::query("UPDATE zafe_audit_head SET seq = $1, hash = $2")
                .bind(seq)
                .bind(hash)
                .execute(&mut *c)
                .await
                .map(|_| ())
                .unwrap(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tamper {
    /// Change a field of entry 10.
    Edit,
    /// Change entry 10 and recompute its (public) hash.
    EditRehashed,
    /// Remove entry 10.
    Delete,
    /// A forged entry at 10, the rest moved up and relinked.
    Insert,
    /// Entries 10 and 11 change places.
    Reorder,
    /// The newest entries, through the last checkpoint, are removed and the
    /// head rolled back to match.
    Truncate,
    /// The same, and the checkpoints that covered them are deleted too.
    TruncateWithCheckpoints,
}

const TAMPERS: [Tamper; 7] = [
    Tamper::Edit,
    Tamper::EditRehashed,
    Tamper::Delete,
    Tamper::Insert,
    Tamper::Reorder,
    Tamper::Truncate,
    Tamper::TruncateWithCheckpoints,
];

/// Builds a log (about 40 entries, a checkpoint, entries after it), tampers
/// with it, and checks that the server (with MACs) and an offline verifier
/// (public key only) both catch it and name where.
async fn tamper_case(h: &Harness, raw: &mut Raw, seed: &[u8; 32], tamper: Tamper) {
    traffic(h, 30).await;
    let checkpoint = checkpoint_now(h).await;
    traffic(h, 6).await;
    assert!(
        server_verify(h).await.ok,
        "{tamper:?}: clean before tampering"
    );
    assert!(offline(&export(h, "format=jsonl").await, public_key(seed)).ok);
    // What an auditor keeps from this verification.
    let a = root(h, "GET", "sys/audit-log/checkpoints?limit=1000", None).await;
    let kept: zafe_core::audit::CheckpointLine = serde_json::from_value(
        a.json["data"]["checkpoints"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .clone(),
    )
    .unwrap();
    let kept = kept.checkpoint().unwrap();
    assert_eq!(kept.seq, checkpoint);

    raw.disable_guards().await;
    let backend = h.core.backend().clone();
    let last = head(&*backend).await;
    let (server_bad, offline_bad): (i64, std::ops::RangeInclusive<i64>) = match tamper {
        Tamper::Edit => {
            let (_, prev, hash, _, body) = raw.row(10).await;
            let body = String::from_utf8(body).unwrap();
            let edited = body.replace("\"status\":", "\"status\":1");
            assert_ne!(body, edited);
            raw.set(10, &prev, &hash, edited.as_bytes()).await;
            (10, 10..=10)
        }
        Tamper::EditRehashed => {
            let (_, prev, _, _, body) = raw.row(10).await;
            let mut event: Event = serde_json::from_slice(&body).unwrap();
            event.decision = "allowed".into();
            event.status = 200;
            event.actor.display_name = "someone else".into();
            let hash = entry_hash(10, &event, &prev);
            raw.set(10, &prev, &hash, &serde_json::to_vec(&event).unwrap())
                .await;
            // Offline, entry 11 no longer follows it: entry 10 is named.
            (10, 10..=10)
        }
        Tamper::Delete => {
            raw.delete_range(10, 10).await;
            (10, 10..=10)
        }
        Tamper::Insert => {
            for seq in (10..=last).rev() {
                raw.renumber(seq, seq + 1).await;
            }
            let (time_us, prev, _, _, body) = raw.row(11).await;
            let mut forged: Event = serde_json::from_slice(&body).unwrap();
            forged.path = "sys/forged".into();
            let forged_hash = entry_hash(10, &forged, &prev);
            // The old entry 10 (now 11) must claim the forged one as its
            // predecessor: the UNIQUE prev_hash refuses a fork.
            let moved: Event = serde_json::from_slice(&body).unwrap();
            let moved_hash = entry_hash(11, &moved, &forged_hash);
            raw.set(11, &forged_hash, &moved_hash, &body).await;
            raw.insert(
                10,
                &(
                    time_us,
                    prev,
                    forged_hash.to_vec(),
                    vec![0; 32],
                    serde_json::to_vec(&forged).unwrap(),
                ),
            )
            .await;
            let newest = raw.row(last + 1).await.2;
            raw.set_head(last + 1, &newest).await;
            (10, 10..=checkpoint + 1)
        }
        Tamper::Reorder => {
            raw.renumber(10, -10).await;
            raw.renumber(11, 10).await;
            raw.renumber(-10, 11).await;
            (10, 10..=10)
        }
        Tamper::Truncate => {
            let cut = checkpoint - 2;
            raw.delete_range(cut, last).await;
            let (_, _, hash, _, _) = raw.row(cut - 1).await;
            raw.set_head(cut - 1, &hash).await;
            // Offline, the export also holds the entries of the verify and
            // export requests, appended at `cut` after the tampering.
            (cut, cut..=checkpoint)
        }
        Tamper::TruncateWithCheckpoints => {
            let cut = checkpoint - 2;
            raw.delete_range(cut, last).await;
            raw.delete_checkpoints().await;
            let (_, _, hash, _, _) = raw.row(cut - 1).await;
            raw.set_head(cut - 1, &hash).await;
            // The server remembers the checkpoint it signed; an auditor
            // remembers the one it verified.
            (cut, cut..=checkpoint)
        }
    };
    let report = server_verify(h).await;
    assert!(!report.ok, "{tamper:?}: the server missed it");
    assert_eq!(
        report.first_bad_seq,
        Some(server_bad),
        "{tamper:?}: {report:?}"
    );
    assert!(report.problem.is_some());
    let text = export(h, "format=jsonl").await;
    if tamper == Tamper::TruncateWithCheckpoints {
        // Without anything kept from before, the entries alone cannot show
        // it; but the server refuses to sign the end of an export of a log
        // that lost its newest checkpoint (R-AUD-6).
        let report = offline(&text, public_key(seed));
        assert!(
            !report.ok
                && report
                    .problem
                    .as_deref()
                    .unwrap()
                    .contains("ends unanchored"),
            "{report:?}"
        );
    }
    let report = offline_remembering(&text, public_key(seed), Some(kept));
    assert!(!report.ok, "{tamper:?}: the offline verifier missed it");
    assert!(
        report
            .first_bad_seq
            .is_some_and(|s| offline_bad.contains(&s)),
        "{tamper:?}: {report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_sqlite_rows_is_detected_and_named() {
    for tamper in TAMPERS {
        let dir = tempfile::tempdir().unwrap();
        let (h, seed, _) = first_node(sqlite_file(dir.path()).await, Config::default()).await;
        let db = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join("zafe.db").display()
        ))
        .await
        .unwrap();
        tamper_case(&h, &mut Raw::Lite(db), &seed, tamper).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_with_postgres_rows_is_detected_and_named() {
    for tamper in TAMPERS {
        with_postgres_database(move |url| async move {
            let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::connect(&url).await.unwrap());
            let (h, seed, _) = first_node(backend, Config::default()).await;
            let db = sqlx::PgConnection::connect(&url).await.unwrap();
            tamper_case(&h, &mut Raw::Pg(db), &seed, tamper).await;
        })
        .await;
    }
}

// ---- Truncation of the newest entries (R-AUD-6) ------------------------------

/// The head is signed every second.
fn fast_checkpoints() -> Config {
    let mut config = Config::default();
    config.audit.checkpoint_interval_secs = Some(1);
    config
}

async fn raw_sqlite(dir: &Path) -> Raw {
    Raw::Lite(
        sqlx::SqliteConnection::connect(&format!("sqlite://{}", dir.join("zafe.db").display()))
            .await
            .unwrap(),
    )
}

/// An entry as if written `ago_secs` ago.
async fn record_old(h: &Harness, ago_secs: i64, n: usize) {
    let time_us = now_us() - ago_secs * 1_000_000;
    for i in 0..n {
        let event = Event {
            v: zafe_core::audit::EVENT_VERSION,
            time_us: time_us + i as i64,
            request_id: format!("old-{i}"),
            method: "GET".into(),
            path: "sys/health".into(),
            decision: "allowed".into(),
            status: 200,
            ..Event::default()
        };
        h.core
            .audit
            .record(event, h.core.audit.keys())
            .await
            .unwrap();
    }
}

fn problem(report: &Report) -> &str {
    report.problem.as_deref().unwrap_or_default()
}

// R-AUD-6, the attack of the "fail-closed for real" issue: behind a running
// server, the newest entries are deleted with the checkpoints that covered
// them and the head is moved back. The old code signed the shortened head at
// its next periodic checkpoint and then verified it. Now the server signs
// nothing that does not extend its newest checkpoint, so its verification
// keeps naming the removal and its exports end unanchored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncation_behind_a_running_server_is_never_signed_over() {
    let dir = tempfile::tempdir().unwrap();
    let (h, seed, _) = first_node(sqlite_file(dir.path()).await, fast_checkpoints()).await;
    traffic(&h, 20).await;
    let kept = checkpoint_now(&h).await;
    traffic(&h, 12).await;
    let newest = checkpoint_now(&h).await;
    assert!(server_verify(&h).await.ok);
    assert!(offline(&export(&h, "format=jsonl").await, public_key(&seed)).ok);

    let mut raw = raw_sqlite(dir.path()).await;
    raw.disable_guards().await;
    let cut = kept + 4;
    raw.delete_range(cut, i64::MAX).await;
    raw.delete_checkpoints_after(kept).await;
    let (_, _, hash, _, _) = raw.row(cut - 1).await;
    raw.set_head(cut - 1, &hash).await;
    // Periodic checkpoints come due (the old code signed the shortened
    // chain at the next one).
    tokio::time::sleep(Duration::from_millis(2_000)).await;

    let report = server_verify(&h).await;
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, Some(cut), "{report:?}");
    assert!(
        problem(&report).contains(&format!("covers seq {newest}")),
        "{report:?}"
    );
    let signed = h
        .core
        .backend()
        .audit_checkpoints((kept, i64::MAX), 100)
        .await
        .unwrap();
    assert!(
        signed.is_empty(),
        "the shortened chain was signed: {signed:?}"
    );
    assert!(
        h.core.audit.checkpoint("manual").await.is_err(),
        "a manual checkpoint is refused too"
    );
    let report = offline(&export(&h, "format=jsonl").await, public_key(&seed));
    assert!(!report.ok, "{report:?}");
    assert!(problem(&report).contains("ends unanchored"), "{report:?}");
}

// R-AUD-6: the newest entries must be signed within the checkpoint
// interval (+ slack). The log as the issue's attack left it: the newest
// checkpoint 12 minutes old, the entries after it written 12 minutes ago,
// with a 60 s interval. The server's verification and an export's fail,
// naming the first unsigned entry; signed, the same (now idle) log verifies.
#[tokio::test]
async fn entries_unsigned_longer_than_the_interval_allows_fail_verification() {
    let (h, seed, _) = first_node(
        Arc::new(SqliteBackend::memory().await.unwrap()),
        Config::default(),
    )
    .await;
    traffic(&h, 5).await;
    record_old(&h, 12 * 60 + 5, 1).await;
    let backend = h.core.backend().clone();
    let signed = head(&*backend).await;
    let row = backend.audit_read(signed, 1).await.unwrap().remove(0);
    let old_checkpoint = zafe_core::audit::sign_checkpoint(
        &IdentityKey::from_seed(&seed),
        "periodic",
        signed,
        &row.hash,
        now_us() - 12 * 60 * 1_000_000,
    );
    backend
        .audit_checkpoint_append(old_checkpoint)
        .await
        .unwrap();
    record_old(&h, 12 * 60, 3).await;
    let first_old = signed + 1;

    let report = server_verify(&h).await;
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, Some(first_old), "{report:?}");
    assert!(problem(&report).contains("stale checkpoints"), "{report:?}");
    let report = offline(&export(&h, "format=jsonl").await, public_key(&seed));
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_bad_seq, Some(first_old), "{report:?}");
    assert!(problem(&report).contains("stale checkpoints"), "{report:?}");

    checkpoint_now(&h).await;
    assert!(server_verify(&h).await.ok);
    assert!(offline(&export(&h, "format=jsonl").await, public_key(&seed)).ok);
}

// R-AUD-6: normal operation never trips the checks: verification and
// exports right after writes, on a server that signs every second, and
// right after a restart, even one that left entries unsigned for long (a
// crash): the head is signed at unseal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_idle_and_restarted_servers_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (h, seed, master) = first_node(sqlite_file(dir.path()).await, fast_checkpoints()).await;
    for round in 0..3 {
        traffic(&h, 4).await;
        let report = server_verify(&h).await;
        assert!(report.ok, "round {round}: {report:?}");
        let report = offline(&export(&h, "format=jsonl").await, public_key(&seed));
        assert!(report.ok, "round {round}: {report:?}");
    }
    // Old entries, all signed: an idle log.
    record_old(&h, 3600, 2).await;
    checkpoint_now(&h).await;
    assert!(server_verify(&h).await.ok);
    // Old entries left unsigned by a node that stopped without signing;
    // another node (a restart) signs them at unseal.
    record_old(&h, 3600, 2).await;
    let h2 = node(
        sqlite_file(dir.path()).await,
        fast_checkpoints(),
        &seed,
        &master,
    )
    .await;
    let report = server_verify(&h2).await;
    assert!(report.ok, "{report:?}");
    let report = offline(&export(&h2, "format=jsonl").await, public_key(&seed));
    assert!(report.ok, "{report:?}");
}

// ---- Length, retention, exports, order -------------------------------------

// lessons.md: "the verifier read only the oldest 5,000 rows". 6,500 entries;
// a change to entry 6,000 is found, by the server and offline.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_verifier_reads_far_beyond_5000_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (h, seed, _) = first_node(sqlite_file(dir.path()).await, Config::default()).await;
    let log = &h.core.audit;
    let tasks: Vec<_> = (0..6_500)
        .map(|i| {
            let core = h.core.clone();
            tokio::spawn(async move {
                let keys = core.audit.keys();
                let event = Event {
                    v: 1,
                    time_us: now_us(),
                    request_id: format!("bulk-{i}"),
                    method: "GET".into(),
                    path: "sys/health".into(),
                    decision: "allowed".into(),
                    status: 200,
                    ..Event::default()
                };
                core.audit.record(event, keys).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    log.checkpoint("manual").await.unwrap().unwrap();
    let report = server_verify(&h).await;
    assert!(report.ok && report.entries >= 6_500, "{report:?}");
    let text = export(&h, "format=jsonl").await;
    let report = offline(&text, public_key(&seed));
    assert!(
        report.ok && report.entries >= 6_500 && report.last_checkpoint_seq >= Some(6_500),
        "{report:?}"
    );

    let mut raw = Raw::Lite(
        sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join("zafe.db").display()
        ))
        .await
        .unwrap(),
    );
    raw.disable_guards().await;
    let (_, prev, hash, _, body) = raw.row(6_000).await;
    let edited = String::from_utf8(body).unwrap().replace("bulk-", "BULK-");
    raw.set(6_000, &prev, &hash, edited.as_bytes()).await;
    assert_eq!(server_verify(&h).await.first_bad_seq, Some(6_000));
    assert_eq!(
        offline(&export(&h, "format=jsonl").await, public_key(&seed)).first_bad_seq,
        Some(6_000)
    );
}

// lessons.md: "retention deleted the start of the chain so every later
// verify reported truncation". A sweep writes a signed anchor first; the
// rest still verifies, on the server and offline; deleting more than was
// swept is still caught.
#[tokio::test]
async fn retention_keeps_verification_passing() {
    let dir = tempfile::tempdir().unwrap();
    let (h, seed, _) = first_node(sqlite_file(dir.path()).await, Config::default()).await;
    traffic(&h, 20).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let cutoff = now_us();
    traffic(&h, 10).await;
    let backend = h.core.backend().clone();
    let before = entries(&*backend).await;
    let first_kept = before
        .iter()
        .find(|(r, _)| r.time_us >= cutoff)
        .unwrap()
        .0
        .seq;

    let swept = h.core.audit.sweep(cutoff).await.unwrap();
    assert_eq!(swept.anchor_seq, Some(first_kept - 1));
    assert_eq!(swept.deleted, (first_kept - 1) as u64);
    let after = entries(&*backend).await;
    assert_eq!(after[0].0.seq, first_kept);
    let report = server_verify(&h).await;
    assert!(report.ok, "{report:?}");
    let report = offline(&export(&h, "format=jsonl").await, public_key(&seed));
    assert!(report.ok && !report.partial, "{report:?}");

    // A sweep of everything keeps the newest entry, and still verifies.
    let swept = h.core.audit.sweep(i64::MAX).await.unwrap();
    assert!(swept.deleted > 0);
    assert!(server_verify(&h).await.ok);
    assert!(offline(&export(&h, "format=jsonl").await, public_key(&seed)).ok);

    // Deleting the oldest remaining entries behind the anchor is caught.
    traffic(&h, 5).await;
    let oldest = entries(&*backend).await[0].0.seq;
    let mut raw = Raw::Lite(
        sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join("zafe.db").display()
        ))
        .await
        .unwrap(),
    );
    raw.delete_range(oldest, oldest + 1).await;
    let report = server_verify(&h).await;
    assert!(!report.ok, "{report:?}");
    assert_eq!(
        report.first_bad_seq,
        Some(1),
        "no anchor covers the new start: {report:?}"
    );
}

// lessons.md: "exports left the hashes out, so no one could verify them".
#[tokio::test]
async fn exports_carry_the_chain_and_verify_offline() {
    let (h, seed, _) = first_node(
        Arc::new(SqliteBackend::memory().await.unwrap()),
        Config::default(),
    )
    .await;
    traffic(&h, 12).await;
    let req = Request::builder()
        .uri("/v1/sys/health")
        .header("x-request-id", "-cmd")
        .body(Body::empty())
        .unwrap();
    assert_eq!(h.send(req).await.status, StatusCode::OK);
    let checkpoint = checkpoint_now(&h).await;
    traffic(&h, 3).await;

    let text = export(&h, "format=jsonl").await;
    let lines: Vec<Line> = text.lines().map(|l| Line::parse(l).unwrap()).collect();
    assert!(
        matches!(&lines[0], Line::Header(hd) if hd.server_id == IdentityKey::from_seed(&seed).server_id() && hd.from_seq.is_none())
    );
    let entries: Vec<_> = lines
        .iter()
        .filter_map(|l| {
            if let Line::Entry(e) = l {
                Some(e)
            } else {
                None
            }
        })
        .collect();
    assert!(
        entries
            .iter()
            .all(|e| e.hash.len() == 64 && e.mac.len() == 64 && e.prev_hash.len() == 64)
    );
    assert!(
        entries
            .windows(2)
            .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash)
    );
    assert!(
        lines
            .iter()
            .any(|l| matches!(l, Line::Checkpoint(c) if c.seq == checkpoint))
    );
    let report = offline(&text, public_key(&seed));
    assert!(report.ok && report.checkpoints >= 1, "{report:?}");
    // A different key does not verify the same export.
    assert!(!offline(&text, IdentityKey::generate().public_key()).ok);

    // A range by sequence numbers: contiguous, verifies as a partial export.
    let part = export(&h, "format=jsonl&since=5&until=9").await;
    let seqs: Vec<i64> = part
        .lines()
        .filter_map(|l| {
            if let Ok(Line::Entry(e)) = Line::parse(l) {
                Some(e.seq)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(seqs, [5, 6, 7, 8, 9]);
    let report = offline(&part, public_key(&seed));
    assert!(report.ok && report.partial, "{report:?}");
    // ... and by time.
    let t = entries[4].time.clone();
    let part = export(&h, &format!("format=jsonl&since={}", t.replace('+', "%2B"))).await;
    let first = part.lines().find_map(|l| {
        if let Ok(Line::Entry(e)) = Line::parse(l) {
            Some(e.seq)
        } else {
            None
        }
    });
    assert!(first.is_some_and(|s| s <= entries[4].seq), "{first:?}");
    assert!(offline(&part, public_key(&seed)).ok);
    // A range with nothing in it: the header and the signed end alone.
    let none = export(&h, "format=jsonl&since=2999-01-01T00:00:00Z").await;
    assert_eq!(none.lines().count(), 2, "{none}");
    assert!(offline(&none, public_key(&seed)).ok);

    // CSV: the chain's columns, and formula-looking cells neutralised.
    let (status, csv) = get_text(&h, "/v1/sys/audit-log/export?format=csv").await;
    assert_eq!(status, StatusCode::OK);
    let mut rows = csv.lines();
    let header = rows.next().unwrap();
    assert!(
        header.starts_with("seq,time,") && header.ends_with(",prev_hash,hash,mac"),
        "{header}"
    );
    let total = head(&**h.core.backend()).await as usize;
    assert_eq!(
        csv.lines().count(),
        1 + total,
        "a header, and a row per entry (the CSV export's own included)"
    );
    assert!(
        csv.contains(",'-cmd,"),
        "a cell starting with '-' is neutralised"
    );
    assert!(csv.contains(&entries[3].mac));
    let (status, _) = get_text(&h, "/v1/sys/audit-log/export?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

// Exports and verification need sudo: a token with ordinary policies is
// refused, and the refusal is itself audited.
#[tokio::test]
async fn the_audit_routes_need_sudo() {
    let (h, _, _) = first_node(
        Arc::new(SqliteBackend::memory().await.unwrap()),
        Config::default(),
    )
    .await;
    let policy = r#"path "sys/audit-log/*" { capabilities = ["read", "update", "create"] }"#;
    assert_eq!(
        root(
            &h,
            "PUT",
            "sys/policy/auditor",
            Some(json!({ "policy": policy }))
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let a = root(
        &h,
        "POST",
        "auth/token/create",
        Some(json!({ "policies": ["auditor"] })),
    )
    .await;
    let token = a.json["auth"]["client_token"]
        .as_str()
        .expect("token create works")
        .to_string();
    for (method, path) in [
        ("GET", "export"),
        ("GET", "verify"),
        ("GET", "checkpoints"),
        ("POST", "checkpoints"),
    ] {
        let a = h
            .call(
                method,
                &format!("/v1/sys/audit-log/{path}"),
                Some(&token),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");
    }
    let all = entries(&**h.core.backend()).await;
    assert!(
        all.iter()
            .filter(|(_, e)| e.path.starts_with("sys/audit-log/") && e.decision == "denied")
            .count()
            >= 4
    );
    let raw = String::from_utf8_lossy(
        &all.iter()
            .flat_map(|(r, _)| r.body.clone())
            .collect::<Vec<u8>>(),
    )
    .into_owned();
    assert!(
        !raw.contains(&token) && !raw.contains(ROOT),
        "no token in the log"
    );
}

// R-AUD-5: order comes from the database, never from clocks. Two nodes on
// one database, one with its clock an hour behind, write at once: one
// chain, in sequence order, every entry once; and key rotation does not
// break it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_with_skewed_clocks_write_one_chain_in_sequence_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, seed, master) = first_node(sqlite_file(dir.path()).await, Config::default()).await;
    let b = node(
        sqlite_file(dir.path()).await,
        Config::default(),
        &seed,
        &master,
    )
    .await;
    assert!(!b.core.is_sealed());
    let before = head(&**a.core.backend()).await;
    let hour = 3_600_000_000;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let cb = b.core.clone();
        let (aa, ab) = (a.app.clone(), b.app.clone());
        tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .uri("/v1/sys/health")
                .body(Body::empty())
                .unwrap();
            assert_eq!(aa.oneshot(req).await.unwrap().status(), StatusCode::OK);
            let req = Request::builder()
                .uri("/v1/sys/health")
                .body(Body::empty())
                .unwrap();
            assert_eq!(ab.oneshot(req).await.unwrap().status(), StatusCode::OK);
            // Node b's clock is an hour behind.
            let skewed = Event {
                v: 1,
                time_us: now_us() - hour,
                request_id: format!("skewed-{i}"),
                decision: "allowed".into(),
                ..Event::default()
            };
            cb.audit.record(skewed, cb.audit.keys()).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        root(&a, "PUT", "sys/rotate", None).await.status,
        StatusCode::NO_CONTENT
    );
    traffic(&b, 3).await;
    let all = entries(&**a.core.backend()).await;
    assert_eq!(
        all.len() as i64 - before,
        40 * 3 + 1 + 3,
        "every entry once"
    );
    assert!(
        all.windows(2).any(|w| w[1].1.time_us < w[0].1.time_us),
        "times are not in order..."
    );
    assert!(
        all.windows(2)
            .all(|w| w[1].0.seq == w[0].0.seq + 1 && w[1].0.prev_hash == w[0].0.hash),
        "...sequence numbers are"
    );
    for h in [&a, &b] {
        let report = server_verify(h).await;
        assert!(report.ok, "{report:?}");
    }
    // The export is in sequence order too.
    let text = export(&b, "format=jsonl").await;
    assert!(offline(&text, public_key(&seed)).ok);
}

// R-SCALE-2: three nodes over one PostgreSQL database, many requests at
// once: one chain, no fork, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_postgres_nodes_write_one_chain() {
    with_postgres_database(|url| async move {
        let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::connect(&url).await.unwrap());
        let (first, seed, master) = first_node(backend, Config::default()).await;
        let mut nodes = vec![first];
        for _ in 0..2 {
            let backend: Arc<dyn Backend> = Arc::new(PostgresBackend::connect(&url).await.unwrap());
            nodes.push(node(backend, Config::default(), &seed, &master).await);
        }
        let before = head(&**nodes[0].core.backend()).await;
        let mut tasks = Vec::new();
        for (n, h) in nodes.iter().enumerate() {
            for i in 0..30 {
                let app = h.app.clone();
                tasks.push(tokio::spawn(async move {
                    let req = Request::builder()
                        .method("PUT")
                        .uri(format!("/v1/sys/policy/n{n}-{i}"))
                        .header("x-vault-token", ROOT)
                        .header("content-type", "application/json")
                        .body(Body::from(
                            json!({"policy": "path \"a/*\" { capabilities = [\"read\"] }"})
                                .to_string(),
                        ))
                        .unwrap();
                    assert_eq!(
                        app.oneshot(req).await.unwrap().status(),
                        StatusCode::NO_CONTENT
                    );
                }));
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        let all = entries(&**nodes[2].core.backend()).await;
        assert_eq!(all.len() as i64 - before, 90);
        assert!(
            all.windows(2)
                .all(|w| w[1].0.seq == w[0].0.seq + 1 && w[1].0.prev_hash == w[0].0.hash)
        );
        checkpoint_now(&nodes[1]).await;
        for h in &nodes {
            let report = server_verify(h).await;
            assert!(report.ok, "{report:?}");
        }
        assert!(offline(&export(&nodes[0], "format=jsonl").await, public_key(&seed)).ok);
    })
    .await;
}

// ---- PostgreSQL helpers (as in zafe-storage's tests) ------------------------
