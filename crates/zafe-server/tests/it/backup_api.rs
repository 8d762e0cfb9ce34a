//! `GET sys/backup` and `POST sys/restore` (R-OPS-8) through the real router:
//! who may take a backup (sudo only) and that it is audited; what a backup
//! holds (ciphertext, this server's identity); a restore into an uninitialised
//! server with the same identity, and refusals (another identity, a truncated
//! file) that leave it untouched; a forced restore over a live store that
//! needs the root token, rolls the store back to the backup and seals.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;
use zafe_core::identity::IdentityKey;
use zafe_engine::ManualClock;
use zafe_server::Config;
use zafe_server::core::{Core, CoreParts};
use zafe_storage::Backend;
use zafe_storage::sqlite::SqliteBackend;

use crate::common::*;

/// An uninitialised server whose identity key comes from `seed`.
async fn harness_seeded(seed: u8) -> Harness {
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
    let clock = Arc::new(ManualClock::starting_now());
    let core = Core::new(CoreParts {
        config: Config::default(),
        clock: clock.clone(),
        projects: zafe_server::projects::rule(),
        engines: zafe_engines::build,
        backend,
        identity: IdentityKey::from_seed(&[seed; 32]),
        master_key: None,
        token_pepper: None,
        tls_spki: None,
        proxy_spki: None,
    })
    .await
    .unwrap();
    let app = zafe_server::http::router(core.clone());
    Harness { core, app, clock }
}

/// A request with a raw body; the raw answer.
async fn raw(
    h: &Harness,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("x-vault-token", t);
    }
    let res = h
        .app
        .clone()
        .oneshot(req.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, bytes)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn put(h: &Harness, token: &str, path: &str, value: &str) {
    let a = h
        .call(
            "POST",
            &format!("/v1/secret/data/{path}"),
            Some(token),
            Some(json!({ "data": { "v": value } })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
}

async fn get(h: &Harness, token: &str, path: &str) -> Answer {
    h.call("GET", &format!("/v1/secret/data/{path}"), Some(token), None)
        .await
}

/// A server with one share, unsealed: (harness, share, root token).
async fn live(seed: u8) -> (Harness, String, String) {
    let h = harness_seeded(seed).await;
    let (keys, root) = h.init(1, 1).await;
    assert_eq!(h.unseal(&keys[0]).await.status, StatusCode::OK);
    (h, keys[0].clone(), root)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_needs_sudo_is_ciphertext_and_is_audited() {
    let (h, _, root) = live(7).await;
    put(&h, &root, "app", "plain-value-Bk93").await;

    for token in [None, Some("zafe_s_not-a-token")] {
        let (status, _, _) = raw(&h, "GET", "/v1/sys/backup", token, Vec::new()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    write_policy(
        &h,
        &root,
        "reads",
        "path \"sys/backup\" { capabilities = [\"read\"] }",
    )
    .await;
    let reader = token_with(&h, &root, &["reads"]).await;
    let (status, _, _) = raw(&h, "GET", "/v1/sys/backup", Some(&reader), Vec::new()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "read without sudo is not enough"
    );
    write_policy(
        &h,
        &root,
        "backs-up",
        "path \"sys/backup\" { capabilities = [\"read\", \"sudo\"] }",
    )
    .await;
    let operator = token_with(&h, &root, &["backs-up"]).await;
    let (status, headers, bytes) =
        raw(&h, "GET", "/v1/sys/backup", Some(&operator), Vec::new()).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&bytes));
    assert_eq!(headers["content-type"], "application/vnd.zafe.backup");

    let frames = zafe_core::backup::read_all(&bytes).unwrap();
    let zafe_core::backup::Frame::Header(header) = &frames[0] else {
        panic!("no header first");
    };
    assert_eq!(header.server_id, h.core.identity.server_id());
    assert_eq!(header.backend, "sqlite");
    assert!(header.entries > 5 && header.audit_rows > 3, "{header:?}");
    for needle in ["plain-value-Bk93", root.as_str(), operator.as_str()] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} in the clear"
        );
    }

    // Every attempt is in the audit log, the refused ones included.
    let (status, _, log) = raw(
        &h,
        "GET",
        "/v1/sys/audit-log/export",
        Some(&root),
        Vec::new(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<Value> = text(&log)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|l: &Value| l.to_string().contains("sys/backup"))
        .collect();
    assert!(lines.len() >= 4, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_an_uninitialised_server_of_the_same_identity() {
    let (a, key, root) = live(11).await;
    put(&a, &root, "app", "first").await;
    put(&a, &root, "app", "second").await;
    let (_, _, file) = raw(&a, "GET", "/v1/sys/backup", Some(&root), Vec::new()).await;

    // Another identity: refused, nothing written.
    let stranger = harness_seeded(12).await;
    let (status, _, body) = raw(&stranger, "POST", "/v1/sys/restore", None, file.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", text(&body));
    assert!(text(&body).contains("identity key file"), "{}", text(&body));
    let init = stranger.call("GET", "/v1/sys/init", None, None).await;
    assert_eq!(init.json["initialized"], false);

    // The same identity: a truncated or edited file is refused, nothing written.
    let b = harness_seeded(11).await;
    let cut = file[..file.len() - 1].to_vec();
    let (status, _, body) = raw(&b, "POST", "/v1/sys/restore", None, cut).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", text(&body));
    assert!(text(&body).contains("truncated"), "{}", text(&body));
    let mut edited = file.clone();
    let at = edited.len() / 2;
    edited[at] ^= 1;
    let (status, _, _) = raw(&b, "POST", "/v1/sys/restore", None, edited).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let init = b.call("GET", "/v1/sys/init", None, None).await;
    assert_eq!(init.json["initialized"], false);

    // The whole file: restored, sealed, and the original share opens it.
    let (status, _, body) = raw(&b, "POST", "/v1/sys/restore", None, file.clone()).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    let summary: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        summary["data"]["replaced"]
            .as_bool()
            .or(summary["replaced"].as_bool()),
        Some(false)
    );
    assert!(b.core.is_sealed());
    assert_eq!(b.unseal(&key).await.status, StatusCode::OK);
    let a2 = get(&b, &root, "app").await;
    assert_eq!(a2.json["data"]["data"]["v"], "second");
    assert_eq!(a2.json["data"]["metadata"]["version"], 2);
    let verify = b
        .call("GET", "/v1/sys/audit-log/verify", Some(&root), None)
        .await;
    assert_eq!(
        verify.json["data"]["report"]["ok"], true,
        "{:?}",
        verify.json
    );

    // Now initialised: no second restore without force (and a token).
    let (status, _, _) = raw(&b, "POST", "/v1/sys/restore", None, file.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = raw(&b, "POST", "/v1/sys/restore", Some(&root), file).await;
    assert_eq!(status, StatusCode::CONFLICT, "{}", text(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_restore_rolls_a_live_store_back_and_seals() {
    let (h, key, root) = live(21).await;
    put(&h, &root, "kept", "before").await;
    let (_, _, file) = raw(&h, "GET", "/v1/sys/backup", Some(&root), Vec::new()).await;
    put(&h, &root, "later", "after").await;

    let (status, _, _) = raw(&h, "POST", "/v1/sys/restore?force=true", None, file.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    write_policy(
        &h,
        &root,
        "no-sudo",
        "path \"sys/restore\" { capabilities = [\"update\"] }",
    )
    .await;
    let weak = token_with(&h, &root, &["no-sudo"]).await;
    let (status, _, _) = raw(
        &h,
        "POST",
        "/v1/sys/restore?force=true",
        Some(&weak),
        file.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(get(&h, &root, "later").await.status, StatusCode::OK);

    // A damaged file: the server sealed before anything was replaced, and
    // its own store is intact.
    let cut = file[..file.len() - 5].to_vec();
    let (status, _, body) = raw(&h, "POST", "/v1/sys/restore?force=true", Some(&root), cut).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{}", text(&body));
    assert!(h.core.is_sealed());
    assert_eq!(h.unseal(&key).await.status, StatusCode::OK);
    assert_eq!(
        get(&h, &root, "later").await.json["data"]["data"]["v"],
        "after"
    );

    let (status, _, body) = raw(&h, "POST", "/v1/sys/restore?force=true", Some(&root), file).await;
    assert_eq!(status, StatusCode::OK, "{}", text(&body));
    assert!(
        h.core.is_sealed(),
        "its keys belonged to the replaced store"
    );
    assert_eq!(h.unseal(&key).await.status, StatusCode::OK);
    assert_eq!(
        get(&h, &root, "kept").await.json["data"]["data"]["v"],
        "before"
    );
    assert_eq!(get(&h, &root, "later").await.status, StatusCode::NOT_FOUND);
}
