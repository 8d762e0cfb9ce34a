//! Several nodes over one storage agree (R-SCALE-2): a change acknowledged by one node is
//! enforced by the others within the documented bound, because every node follows the storage's
//! change notices (`zafe_storage::notices`, `zafe_server`'s `notices` module). Each scenario runs
//! twice: two cores over one SQLite backend (in-process notices), and two cores with their own
//! connections to one PostgreSQL database (`pg_notify` and `LISTEN`).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agents_api::{setup_on, socket};
use crate::common::*;
use http::StatusCode;
use serde_json::json;
use zafe_core::secret::SecretKey;
use zafe_storage::Backend;
use zafe_storage::postgres::PostgresBackend;
use zafe_storage::sqlite::SqliteBackend;

const ROOT: &str = "nodes-root-token";

/// The hard bound a change may take to reach every node (the backstop's); on one machine it
/// takes milliseconds.
const BOUND: Duration = Duration::from_secs(1);

async fn on_sqlite<F, Fut>(scenario: F)
where
    F: FnOnce(Harness, Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
    let master = SecretKey::generate();
    let a = node(backend.clone(), &master, ROOT).await;
    let b = node(backend, &master, ROOT).await;
    scenario(a, b).await;
}

async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(Harness, Harness) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    with_postgres_database(|url| async move {
        let master = SecretKey::generate();
        let a: Arc<dyn Backend> = Arc::new(PostgresBackend::connect(&url).await.unwrap());
        let b: Arc<dyn Backend> = Arc::new(PostgresBackend::connect(&url).await.unwrap());
        let a = node(a, &master, ROOT).await;
        let b = node(b, &master, ROOT).await;
        scenario(a, b).await;
    })
    .await;
}

/// Waits until `check` holds, at most [`BOUND`]; how long it took.
async fn within_bound<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < BOUND, "not within {BOUND:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn status(h: &Harness, token: &str, method: &str, path: &str) -> StatusCode {
    h.call(method, &format!("/v1/{path}"), Some(token), None)
        .await
        .status
}

async fn write(h: &Harness, path: &str) {
    let a = h
        .call(
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(ROOT),
            Some(json!({"data": {"value": "v"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
}

/// The review's reproduction: a policy narrowed, then deleted, on node A stops granting on
/// node B, which had compiled and cached it, for old tokens and new ones alike.
async fn policy_changes(a: Harness, b: Harness) {
    write_policy(
        &a,
        ROOT,
        "app",
        r#"path "secret/data/*" { capabilities = ["read"] }"#,
    )
    .await;
    write(&a, "hr/salaries").await;
    write(&a, "app/db").await;
    let token = token_with(&a, ROOT, &["app"]).await;
    assert_eq!(
        status(&b, &token, "GET", "secret/data/hr/salaries").await,
        StatusCode::OK
    );

    write_policy(
        &a,
        ROOT,
        "app",
        r#"path "secret/data/app/*" { capabilities = ["read"] }"#,
    )
    .await;
    within_bound("B refuses the narrowed grant", || async {
        status(&b, &token, "GET", "secret/data/hr/salaries").await == StatusCode::FORBIDDEN
    })
    .await;
    assert_eq!(
        status(&b, &token, "GET", "secret/data/app/db").await,
        StatusCode::OK
    );
    let newer = token_with(&a, ROOT, &["app"]).await;
    assert_eq!(
        status(&b, &newer, "GET", "secret/data/hr/salaries").await,
        StatusCode::FORBIDDEN
    );

    let deleted = a
        .call("DELETE", "/v1/sys/policy/app", Some(ROOT), None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    within_bound("B refuses the deleted policy's grant", || async {
        status(&b, &token, "GET", "secret/data/app/db").await == StatusCode::FORBIDDEN
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_on_one_node_is_enforced_by_the_others_sqlite() {
    on_sqlite(policy_changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_changed_on_one_node_is_enforced_by_the_others_postgres() {
    on_postgres(policy_changes).await;
}

/// A mount disabled on node A stops being served by node B (which had routed to it).
async fn mount_changes(a: Harness, b: Harness) {
    let enabled = a
        .call(
            "POST",
            "/v1/sys/mounts/team",
            Some(ROOT),
            Some(json!({"type": "kv-v2"})),
        )
        .await;
    assert_eq!(enabled.status, StatusCode::NO_CONTENT, "{:?}", enabled.json);
    let put = a
        .call(
            "POST",
            "/v1/team/data/x",
            Some(ROOT),
            Some(json!({"data": {"value": "v"}})),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.json);
    within_bound("B serves the new mount", || async {
        status(&b, ROOT, "GET", "team/data/x").await == StatusCode::OK
    })
    .await;
    let disabled = a
        .call("DELETE", "/v1/sys/mounts/team", Some(ROOT), None)
        .await;
    assert_eq!(
        disabled.status,
        StatusCode::NO_CONTENT,
        "{:?}",
        disabled.json
    );
    // A stale router on B would still take writes into the mount that no longer exists.
    within_bound("B no longer routes to the disabled mount", || async {
        let put = b
            .call(
                "POST",
                "/v1/team/data/y",
                Some(ROOT),
                Some(json!({"data": {"value": "v"}})),
            )
            .await;
        !put.status.is_success()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_changed_on_one_node_is_routed_alike_by_the_others_sqlite() {
    on_sqlite(mount_changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mount_changed_on_one_node_is_routed_alike_by_the_others_postgres() {
    on_postgres(mount_changes).await;
}

/// A key-encryption key rotated on node A is the one node B seals new records with (an old
/// keyring on B would keep writing with the retired key).
async fn keyring_changes(a: Harness, b: Harness) {
    assert_eq!(versions_written(&b, "before-rotation").await, [1]);
    let rotated = a.call("PUT", "/v1/sys/rotate", Some(ROOT), None).await;
    assert_eq!(rotated.status, StatusCode::NO_CONTENT);
    // B loads the new keyring by itself, before anything it reads is sealed with the new key.
    let active = || b.core.barrier.keyring().unwrap().active().0;
    within_bound("B loads the rotated keyring", || async { active() == 2 }).await;
    let mut n = 0;
    within_bound("B seals new records with the new key", || {
        n += 1;
        let (b, path) = (&b, format!("after-rotation-{n}"));
        async move { versions_written(b, &path).await == [2] }
    })
    .await;
}

/// Writes the secret `path` through `h`; the key-encryption key versions of the records the
/// write stored (deduplicated).
async fn versions_written(h: &Harness, path: &str) -> Vec<u32> {
    let backend = h.core.backend();
    let snapshot = || async {
        let mut entries = std::collections::HashMap::new();
        for key in backend.keys("", "", 100_000).await.unwrap() {
            if !key.starts_with("seal/") {
                let entry = backend.get(&key).await.unwrap().unwrap();
                entries.insert(key, (entry.generation, entry.value));
            }
        }
        entries
    };
    let before = snapshot().await;
    write(h, path).await;
    let mut versions: Vec<u32> = snapshot()
        .await
        .into_iter()
        .filter(|(key, (generation, _))| before.get(key).map(|b| b.0) != Some(*generation))
        .map(|(_, (_, value))| zafe_core::crypto::envelope_key_version(&value).unwrap())
        .collect();
    versions.sort();
    versions.dedup();
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_one_node_is_used_by_the_others_sqlite() {
    on_sqlite(keyring_changes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_one_node_is_used_by_the_others_postgres() {
    on_postgres(keyring_changes).await;
}

/// An agent connected to node B hears of a change made through node A, and is cut off at once
/// when it is revoked through node A (not at B's next heartbeat check).
async fn agents_across_nodes(a: Harness, b: Harness) {
    let agent = setup_on(&a, ROOT).await;
    let addr = socket::serve(&b).await;
    let mut s = socket::connect(addr, &agent).await.unwrap();
    assert_eq!(socket::next(&mut s).await.unwrap()["type"], "hello");
    let wrote = a
        .call(
            "POST",
            "/v1/secret/data/myapp/prod/DB_URL",
            Some(ROOT),
            Some(json!({"data": {"value": "v2"}})),
        )
        .await;
    assert_eq!(wrote.status, StatusCode::OK, "{:?}", wrote.json);
    let started = Instant::now();
    let changed = socket::next(&mut s).await.unwrap();
    assert!(started.elapsed() < BOUND);
    assert_eq!(changed["type"], "changed", "{changed}");
    assert_eq!(changed["payload"]["reference"], "zafe://myapp/prod/DB_URL");
    assert!(!changed.to_string().contains("v2\""));

    let revoked = a
        .call("DELETE", "/v1/sys/agents/myapp/web-1", Some(ROOT), None)
        .await;
    assert!(revoked.status.is_success(), "{:?}", revoked.json);
    let started = Instant::now();
    let bye = socket::next(&mut s).await.unwrap();
    assert_eq!(
        (bye["type"].as_str(), bye["payload"]["reason"].as_str()),
        (Some("bye"), Some("revoked"))
    );
    assert!(started.elapsed() < BOUND, "{:?}", started.elapsed());
    assert!(socket::next(&mut s).await.is_none(), "the socket closes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_hear_changes_and_revocations_from_every_node_sqlite() {
    on_sqlite(agents_across_nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_hear_changes_and_revocations_from_every_node_postgres() {
    on_postgres(agents_across_nodes).await;
}

/// `sys/audit-log/verify` on node A while node B keeps appending: entries appended after the
/// verification read the chain head are left for the next one, not reported as tampering.
async fn audit_verifies_while_others_append(a: Harness, b: Harness) {
    for i in 0..200 {
        write(&a, &format!("filler/{i}")).await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let appender = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                write(&b, &format!("during/{n}")).await;
                n += 1;
            }
            n
        })
    };
    for _ in 0..10 {
        let verified = a
            .call("GET", "/v1/sys/audit-log/verify", Some(ROOT), None)
            .await;
        assert_eq!(verified.status, StatusCode::OK, "{:?}", verified.json);
        assert_eq!(
            verified.json["data"]["report"]["ok"], true,
            "{:?}",
            verified.json
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(appender.await.unwrap() > 0, "B appended meanwhile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verifies_while_other_nodes_append_sqlite() {
    on_sqlite(audit_verifies_while_others_append).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verifies_while_other_nodes_append_postgres() {
    on_postgres(audit_verifies_while_others_append).await;
}
