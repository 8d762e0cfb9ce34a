//! The KV v2 engine through the real router (R-KV-1): Vault's shapes and
//! status codes, check-and-set, patch, soft delete, undelete, destroy,
//! pruning, metadata, listing, isolation between mounts, tampering, and the
//! no-lost-updates guarantee under concurrent writers, also with two server
//! nodes on one database.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};
use zafe_core::identity::IdentityKey;
use zafe_core::secret::SecretKey;
use zafe_server::Config;
use zafe_server::core::{Core, CoreParts};
use zafe_storage::{Backend, Condition, Entry, Op};

const ROOT: &str = "kv-test-root-token";

/// An initialised, unsealed server (auto-unseal with a master key) and its
/// root token.
async fn server_with(config: Config) -> Harness {
    let h = harness_with(config, Some(SecretKey::generate())).await;
    h.core.initialize(1, 1, Some(ROOT)).await.unwrap();
    assert!(!h.core.is_sealed());
    h
}

async fn server() -> Harness {
    server_with(Config::default()).await
}

impl Harness {
    async fn root(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call(method, &format!("/v1/{path}"), Some(ROOT), body)
            .await
    }

    async fn put(&self, path: &str, data: Value) -> Answer {
        self.root("POST", path, Some(json!({ "data": data }))).await
    }

    async fn mount_uuid(&self, mount: &str) -> String {
        let a = self.root("GET", "sys/mounts", None).await;
        a.json["data"][mount]["uuid"].as_str().unwrap().to_string()
    }
}

fn ok(a: &Answer) {
    assert!(a.status.is_success(), "{} {:?}", a.status, a.json);
}

/// Vault prints times as RFC 3339 in UTC with up to nine fraction digits.
fn assert_vault_time(t: &Value) {
    let s = t.as_str().unwrap();
    assert!(s.ends_with('Z'), "{s}");
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    if let Some((_, frac)) = s.trim_end_matches('Z').split_once('.') {
        assert!((1..=9).contains(&frac.len()) && !frac.ends_with('0'), "{s}");
    }
}

// R-KV-1: write, read, versions, and Vault's exact response shapes.
#[tokio::test]
async fn write_and_read_versions_in_vaults_shapes() {
    let h = server().await;
    let a = h
        .put(
            "secret/data/app/db",
            json!({"user": "alice", "password": "s3cr3t"}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let meta = &a.json["data"];
    let keys: BTreeSet<_> = meta.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "created_time",
            "custom_metadata",
            "deletion_time",
            "destroyed",
            "version"
        ]
        .map(String::from)
        .into()
    );
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["deletion_time"], "");
    assert_eq!(meta["destroyed"], false);
    assert_eq!(meta["custom_metadata"], Value::Null);
    assert_vault_time(&meta["created_time"]);
    for field in [
        "request_id",
        "lease_id",
        "renewable",
        "lease_duration",
        "data",
        "wrap_info",
        "warnings",
        "auth",
    ] {
        assert!(a.json.get(field).is_some(), "envelope lacks {field}");
    }

    h.put(
        "secret/data/app/db",
        json!({"user": "alice", "password": "v2", "n": 7, "nested": {"a": [1, 2]}}),
    )
    .await;
    let a = h.root("GET", "secret/data/app/db", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json["data"]["data"],
        json!({"user": "alice", "password": "v2", "n": 7, "nested": {"a": [1, 2]}})
    );
    assert_eq!(a.json["data"]["metadata"]["version"], 2);
    let a = h.root("GET", "secret/data/app/db?version=1", None).await;
    assert_eq!(
        a.json["data"]["data"],
        json!({"user": "alice", "password": "s3cr3t"})
    );
    assert_eq!(a.json["data"]["metadata"]["version"], 1);
    // version=0 means the latest, as in Vault.
    let a = h.root("GET", "secret/data/app/db?version=0", None).await;
    assert_eq!(a.json["data"]["metadata"]["version"], 2);

    // Unknown secrets and versions: Vault's bare 404.
    for path in [
        "secret/data/app/nope",
        "secret/data/app/db?version=3",
        "secret/metadata/app/nope",
        "secret/data/",
    ] {
        let a = h.root("GET", path, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(a.json, json!({"errors": []}), "{path}");
    }
    // R-KV-1: a version that is not a number, or is negative, is a 400,
    // never the latest version in its place.
    for bad in [
        "abc",
        "-1",
        "-0",
        "1.5",
        "1e2",
        "%202",
        "99999999999999999999",
    ] {
        let a = h
            .root("GET", &format!("secret/data/app/db?version={bad}"), None)
            .await;
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "version={bad}: {:?}",
            a.json
        );
        assert!(
            a.json["errors"][0]
                .as_str()
                .is_some_and(|e| e.contains("version must be a non-negative integer")),
            "{:?}",
            a.json
        );
    }

    let a = h.root("GET", "secret/metadata/app/db", None).await;
    let m = &a.json["data"];
    let keys: BTreeSet<_> = m.as_object().unwrap().keys().cloned().collect();
    let expected = [
        "cas_required",
        "created_time",
        "current_metadata_version",
        "current_version",
        "custom_metadata",
        "delete_version_after",
        "max_versions",
        "metadata_cas_required",
        "oldest_version",
        "updated_time",
        "versions",
    ];
    assert_eq!(keys, expected.map(String::from).into());
    assert_eq!(m["current_version"], 2);
    assert_eq!(m["oldest_version"], 0);
    assert_eq!(m["delete_version_after"], "0s");
    assert_eq!(m["versions"]["1"]["destroyed"], false);
    assert_eq!(m["versions"]["2"]["deletion_time"], "");
    assert_vault_time(&m["updated_time"]);

    // Unrecognised fields are ignored with Vault's warning.
    let a = h
        .root(
            "POST",
            "secret/data/app/db",
            Some(json!({"data": {"k": "v"}, "extra": 1})),
        )
        .await;
    assert_eq!(
        a.json["warnings"],
        json!(["Endpoint ignored these unrecognized parameters: [extra]"])
    );
}

// R-KV-1: check-and-set, per secret and per mount.
#[tokio::test]
async fn check_and_set_is_enforced() {
    let h = server().await;
    let cas = |n: Value| json!({"data": {"k": "v"}, "options": {"cas": n}});
    // cas 0: only if the secret does not exist.
    ok(&h.root("POST", "secret/data/c", Some(cas(json!(0)))).await);
    let a = h.root("POST", "secret/data/c", Some(cas(json!(0)))).await;
    assert_eq!(
        (a.status, a.first_error().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "check-and-set parameter did not match the current version"
        )
    );
    for wrong in [json!(2), json!(-1), json!(5)] {
        let a = h.root("POST", "secret/data/c", Some(cas(wrong))).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
    }
    let a = h.root("POST", "secret/data/c", Some(cas(json!("x")))).await;
    assert_eq!(a.first_error(), "error parsing check-and-set parameter");
    // A string number works, as Vault's weak decoding allows.
    let a = h.root("POST", "secret/data/c", Some(cas(json!("1")))).await;
    assert_eq!(a.json["data"]["version"], 2);
    // The refused writes changed nothing.
    let a = h.root("GET", "secret/metadata/c", None).await;
    assert_eq!(a.json["data"]["current_version"], 2);

    // cas_required on the secret.
    ok(&h
        .root(
            "POST",
            "secret/metadata/c",
            Some(json!({"cas_required": true})),
        )
        .await);
    let a = h.put("secret/data/c", json!({"k": "v"})).await;
    assert_eq!(
        (a.status, a.first_error().as_str()),
        (
            StatusCode::BAD_REQUEST,
            "check-and-set parameter required for this call"
        )
    );
    ok(&h.root("POST", "secret/data/c", Some(cas(json!(2)))).await);

    // cas_required on the mount applies to every secret.
    ok(&h
        .root("POST", "secret/config", Some(json!({"cas_required": true})))
        .await);
    let a = h.put("secret/data/other", json!({"k": "v"})).await;
    assert_eq!(
        a.first_error(),
        "check-and-set parameter required for this call"
    );
    ok(&h
        .root("POST", "secret/data/other", Some(cas(json!(0))))
        .await);
    let a = h.root("GET", "secret/config", None).await;
    assert_eq!(
        a.json["data"],
        json!({"cas_required": true, "delete_version_after": "0s", "max_versions": 0, "metadata_cas_required": false})
    );
}

// R-KV-1: PATCH merges into the latest version (JSON merge patch) and needs
// a live latest version.
#[tokio::test]
async fn patch_merges_into_the_latest_version() {
    let h = server().await;
    let hr = &h;
    let patch =
        move |body: Value| async move { hr.root("PATCH", "secret/data/p", Some(body)).await };
    let a = patch(json!({"data": {"x": "1"}})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "patching nothing is a 404");
    h.put(
        "secret/data/p",
        json!({"user": "a", "pw": "x", "nested": {"keep": 1, "drop": 2}}),
    )
    .await;
    let a =
        patch(json!({"data": {"pw": "y", "user": null, "nested": {"drop": null, "add": 3}}})).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(a.json["data"]["version"], 2);
    let a = h.root("GET", "secret/data/p", None).await;
    assert_eq!(
        a.json["data"]["data"],
        json!({"pw": "y", "nested": {"keep": 1, "add": 3}})
    );

    let a = patch(json!({"options": {"cas": 2}})).await;
    assert_eq!(
        (a.status, a.first_error().as_str()),
        (StatusCode::BAD_REQUEST, "no data provided")
    );
    let a = patch(json!({"data": {"z": 1}, "options": {"cas": 1}})).await;
    assert_eq!(
        a.first_error(),
        "check-and-set parameter did not match the current version"
    );
    ok(&patch(json!({"data": {"z": 1}, "options": {"cas": 2}})).await);

    // A deleted latest version cannot be patched: 404 with its metadata.
    assert_eq!(
        h.root("DELETE", "secret/data/p", None).await.status,
        StatusCode::NO_CONTENT
    );
    let a = patch(json!({"data": {"z": 2}})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json["data"]["version"], 3);
    assert_vault_time(&a.json["data"]["deletion_time"]);
    let a = h.root("GET", "secret/metadata/p", None).await;
    assert_eq!(
        a.json["data"]["current_version"], 3,
        "the refused patch wrote nothing"
    );
}

// R-KV-1: soft delete, undelete, destroy, with Vault's 404 bodies.
#[tokio::test]
async fn delete_undelete_and_destroy() {
    let h = server().await;
    for v in ["one", "two", "three"] {
        h.put("secret/data/d", json!({ "v": v })).await;
    }
    // DELETE on data soft-deletes the latest version only.
    assert_eq!(
        h.root("DELETE", "secret/data/d", None).await.status,
        StatusCode::NO_CONTENT
    );
    let a = h.root("GET", "secret/data/d", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json["data"]["data"], Value::Null);
    assert_eq!(a.json["data"]["metadata"]["version"], 3);
    assert_vault_time(&a.json["data"]["metadata"]["deletion_time"]);
    assert_eq!(
        h.root("GET", "secret/data/d?version=2", None).await.json["data"]["data"]["v"],
        "two"
    );

    // delete/ takes versions; undelete/ brings them back.
    let versions = |v: Value| Some(json!({ "versions": v }));
    assert_eq!(
        h.root("POST", "secret/delete/d", versions(json!([1, 2])))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.root("GET", "secret/data/d?version=1", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.root("POST", "secret/undelete/d", versions(json!([1, 3])))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.root("GET", "secret/data/d", None).await.json["data"]["data"]["v"],
        "three"
    );
    assert_eq!(
        h.root("GET", "secret/data/d?version=1", None).await.json["data"]["data"]["v"],
        "one"
    );

    // destroy/ is for good: undelete cannot bring it back, and the record
    // is gone from storage.
    assert_eq!(
        h.root("PUT", "secret/destroy/d", versions(json!([1])))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    let a = h.root("GET", "secret/data/d?version=1", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json["data"]["metadata"]["destroyed"], true);
    assert_eq!(a.json["data"]["metadata"]["deletion_time"], "");
    h.root("POST", "secret/undelete/d", versions(json!([1])))
        .await;
    assert_eq!(
        h.root("GET", "secret/data/d?version=1", None).await.status,
        StatusCode::NOT_FOUND
    );
    let uuid = h.mount_uuid("secret/").await;
    let backend = h.core.backend();
    assert!(
        backend
            .get(&format!("logical/{uuid}/ver/d/1"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        backend
            .get(&format!("logical/{uuid}/ver/d/2"))
            .await
            .unwrap()
            .is_some()
    );
    let a = h.root("GET", "secret/metadata/d", None).await;
    assert_eq!(a.json["data"]["versions"]["1"]["destroyed"], true);

    // Vault's messages for a missing version list; unknown secrets are a 204.
    for (op, msg) in [
        ("delete", "No version number provided"),
        ("undelete", "No version number provided"),
        ("destroy", "no version number provided"),
    ] {
        let a = h
            .root("POST", &format!("secret/{op}/d"), Some(json!({})))
            .await;
        assert_eq!(
            (a.status, a.first_error().as_str()),
            (StatusCode::BAD_REQUEST, msg)
        );
        let a = h
            .root("POST", &format!("secret/{op}/d"), versions(json!([])))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        let a = h
            .root("POST", &format!("secret/{op}/nope"), versions(json!([1])))
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
    }
    let a = h
        .root("POST", "secret/delete/d", versions(json!(["x"])))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        h.root("DELETE", "secret/data/nope", None).await.status,
        StatusCode::NO_CONTENT
    );
}

// R-KV-1: max_versions prunes the oldest versions (mount, secret, default
// 10), and the pruned data leaves storage.
#[tokio::test]
async fn max_versions_prunes_the_oldest() {
    let h = server().await;
    for i in 1..=12 {
        h.put("secret/data/many", json!({ "i": i })).await;
    }
    let m = h.root("GET", "secret/metadata/many", None).await.json["data"].clone();
    assert_eq!(
        (m["current_version"].as_u64(), m["oldest_version"].as_u64()),
        (Some(12), Some(3))
    );
    let kept: Vec<u64> = m["versions"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.parse().unwrap())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(kept, (3..=12).collect::<Vec<_>>(), "the default keeps 10");
    assert_eq!(
        h.root("GET", "secret/data/many?version=2", None).await.json,
        json!({"errors": []})
    );
    let uuid = h.mount_uuid("secret/").await;
    assert!(
        h.core
            .backend()
            .get(&format!("logical/{uuid}/ver/many/2"))
            .await
            .unwrap()
            .is_none()
    );

    // A secret's own setting, applied on the next write.
    ok(&h
        .root(
            "POST",
            "secret/metadata/many",
            Some(json!({"max_versions": 3})),
        )
        .await);
    h.put("secret/data/many", json!({"i": 13})).await;
    let m = h.root("GET", "secret/metadata/many", None).await.json["data"].clone();
    assert_eq!(m["versions"].as_object().unwrap().len(), 3);
    assert_eq!(m["oldest_version"], 11);
    let rows = h
        .core
        .backend()
        .keys(&format!("logical/{uuid}/ver/many/"), "", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");

    // The mount's setting, when larger, wins (as in OpenBao).
    ok(&h
        .root("POST", "secret/config", Some(json!({"max_versions": 5})))
        .await);
    for i in 14..=20 {
        h.put("secret/data/many", json!({ "i": i })).await;
    }
    let m = h.root("GET", "secret/metadata/many", None).await.json["data"].clone();
    assert_eq!(m["versions"].as_object().unwrap().len(), 5);
    assert_eq!(m["oldest_version"], 16);
}

// R-KV-1: delete_version_after schedules deletion at write time; the
// shorter of the mount's and the secret's setting applies.
#[tokio::test]
async fn delete_version_after_expires_versions() {
    let h = server().await;
    ok(&h
        .root(
            "POST",
            "secret/config",
            Some(json!({"delete_version_after": "1h"})),
        )
        .await);
    let a = h.put("secret/data/exp", json!({"k": "v"})).await;
    let created = time::OffsetDateTime::parse(
        a.json["data"]["created_time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let deletion = time::OffsetDateTime::parse(
        a.json["data"]["deletion_time"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(deletion - created, time::Duration::hours(1));
    let a = h.root("GET", "secret/config", None).await;
    assert_eq!(a.json["data"]["delete_version_after"], "1h0m0s");

    ok(&h
        .root(
            "POST",
            "secret/metadata/exp",
            Some(json!({"delete_version_after": 1})),
        )
        .await);
    let a = h.put("secret/data/exp", json!({"k": "short-lived"})).await;
    assert_eq!(a.json["data"]["version"], 2);
    assert_eq!(
        h.root("GET", "secret/data/exp", None).await.status,
        StatusCode::OK
    );
    h.clock.advance(Duration::from_millis(1100));
    let a = h.root("GET", "secret/data/exp", None).await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "expired versions read as deleted"
    );
    assert_eq!(a.json["data"]["metadata"]["version"], 2);
    // Undelete clears the scheduled deletion.
    h.root(
        "POST",
        "secret/undelete/exp",
        Some(json!({"versions": [2]})),
    )
    .await;
    let a = h.root("GET", "secret/data/exp", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["metadata"]["deletion_time"], "");

    for bad in [json!("-5s"), json!(-1), json!("abc"), json!([1])] {
        let a = h
            .root(
                "POST",
                "secret/metadata/exp",
                Some(json!({ "delete_version_after": bad })),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}

// R-KV-1: metadata write, patch and delete; custom metadata limits.
#[tokio::test]
async fn metadata_write_patch_and_delete() {
    let h = server().await;
    // Metadata may come before any data.
    let a = h
        .root(
            "POST",
            "secret/metadata/m",
            Some(json!({"max_versions": 4, "custom_metadata": {"owner": "me", "n": 1, "b": true}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let m = h.root("GET", "secret/metadata/m", None).await.json["data"].clone();
    assert_eq!(m["current_version"], 0);
    assert_eq!(m["versions"], json!({}));
    assert_eq!(m["current_metadata_version"], 1);
    assert_eq!(
        m["custom_metadata"],
        json!({"owner": "me", "n": "1", "b": "1"})
    );
    assert_eq!(
        h.root("GET", "secret/data/m", None).await.json,
        json!({"errors": []})
    );

    // Data writes report the custom metadata.
    let a = h.put("secret/data/m", json!({"k": "v"})).await;
    assert_eq!(a.json["data"]["custom_metadata"]["owner"], "me");

    // PATCH merges custom_metadata key by key; null removes a key.
    let a = h
        .root(
            "PATCH",
            "secret/metadata/m",
            Some(json!({"custom_metadata": {"team": "x", "owner": null}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT, "{:?}", a.json);
    let m = h.root("GET", "secret/metadata/m", None).await.json["data"].clone();
    assert_eq!(
        m["custom_metadata"],
        json!({"team": "x", "n": "1", "b": "1"})
    );
    assert_eq!(m["max_versions"], 4, "untouched fields stay");
    assert_eq!(
        h.root(
            "PATCH",
            "secret/metadata/nothere",
            Some(json!({"max_versions": 3}))
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.root("GET", "secret/metadata/nothere", None).await.status,
        StatusCode::NOT_FOUND,
        "a failed patch creates nothing"
    );

    // POST replaces custom_metadata as a whole.
    ok(&h
        .root(
            "POST",
            "secret/metadata/m",
            Some(json!({"custom_metadata": {"only": "this"}})),
        )
        .await);
    let m = h.root("GET", "secret/metadata/m", None).await.json["data"].clone();
    assert_eq!(m["custom_metadata"], json!({"only": "this"}));

    // Bad input: a 400 and nothing changes.
    let too_many: serde_json::Map<String, Value> =
        (0..65).map(|i| (i.to_string(), json!("v"))).collect();
    for (body, msg) in [
        (json!({"custom_metadata": too_many}), "at most 64 keys"),
        (
            json!({"custom_metadata": {"k".repeat(129): "v"}}),
            "length of key",
        ),
        (
            json!({"custom_metadata": {"k": "v".repeat(513)}}),
            "length of value",
        ),
        (json!({"custom_metadata": {"": "v"}}), "length of key"),
        (
            json!({"custom_metadata": {"k": "line\nbreak"}}),
            "unprintable",
        ),
        (json!({"custom_metadata": {"k\u{7}": "v"}}), "unprintable"),
        (
            json!({"custom_metadata": {"k": {"nested": 1}}}),
            "must be a string",
        ),
        (json!({"custom_metadata": "x"}), "custom_metadata"),
        (json!({"max_versions": "x"}), "max_versions"),
        (json!({"max_versions": -1}), "max_versions"),
        (json!({"cas_required": "maybe"}), "cas_required"),
        (json!({"metadata_cas_required": true}), "not supported"),
        (
            json!({"max_versions": 9, "custom_metadata": {"k": {"x": 1}}}),
            "must be a string",
        ),
    ] {
        let a = h
            .root("POST", "secret/metadata/m", Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(a.first_error().contains(msg), "{body}: {}", a.first_error());
    }
    let m2 = h.root("GET", "secret/metadata/m", None).await.json["data"].clone();
    assert_eq!(m2, m, "refused writes changed nothing");

    // DELETE removes every version and the metadata, rows included.
    h.put("secret/data/m", json!({"k": "v2"})).await;
    assert_eq!(
        h.root("DELETE", "secret/metadata/m", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.root("GET", "secret/metadata/m", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.root("GET", "secret/data/m?version=1", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.root("DELETE", "secret/metadata/m", None).await.status,
        StatusCode::NO_CONTENT
    );
    let uuid = h.mount_uuid("secret/").await;
    let rows = h
        .core
        .backend()
        .keys(&format!("logical/{uuid}/"), "", 100)
        .await
        .unwrap();
    // The version rows and the listing marker are gone; the metadata row
    // stays as a tombstone without versions, so that its generation keeps
    // counting (see a_stale_write_never_lands_on_a_recreated_secret).
    let left: Vec<&String> = rows.iter().filter(|k| k.contains("/m")).collect();
    assert_eq!(left, vec![&format!("logical/{uuid}/meta/m")], "{rows:?}");
    let tombstone = h.core.barrier.get(left[0]).await.unwrap().unwrap();
    let tombstone: Value = serde_json::from_slice(&tombstone.value).unwrap();
    assert_eq!(
        (&tombstone["deleted"], &tombstone["versions"]),
        (&json!(true), &json!({}))
    );
    // A re-created secret starts again at version 1.
    assert_eq!(
        h.put("secret/data/m", json!({"k": "new"})).await.json["data"]["version"],
        1
    );
}

#[tokio::test]
async fn config_validation_changes_nothing() {
    let h = server().await;
    ok(&h
        .root(
            "POST",
            "secret/config",
            Some(json!({"max_versions": 3, "delete_version_after": "10m"})),
        )
        .await);
    for body in [
        json!({"max_versions": "x"}),
        json!({"max_versions": 5, "delete_version_after": "soon"}),
        json!({"cas_required": 3}),
        json!({"max_versions": 4_294_967_296u64}),
        json!({"metadata_cas_required": true}),
    ] {
        let a = h.root("POST", "secret/config", Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
    }
    let a = h.root("GET", "secret/config", None).await;
    assert_eq!(
        a.json["data"],
        json!({"cas_required": false, "delete_version_after": "10m0s", "max_versions": 3, "metadata_cas_required": false})
    );
    assert_eq!(
        h.root("DELETE", "secret/config", None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        h.root("LIST", "secret/data/", None).await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    let a = h.root("GET", "secret/foo", None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert!(
        a.json["warnings"][0]
            .as_str()
            .unwrap()
            .contains("Invalid path for a versioned K/V")
    );
}

// R-KV-1 listing, and R-ACL-3: a page never holds more than 1000 keys.
#[tokio::test]
async fn list_folders_pages_and_clamps() {
    let h = server().await;
    for path in ["dir/a", "dir/sub/b", "dir2", "app"] {
        h.put(&format!("secret/data/{path}"), json!({"k": "v"}))
            .await;
    }
    let keys = |a: &Answer| a.json["data"]["keys"].clone();
    for path in [
        "secret/metadata",
        "secret/metadata/",
        "secret/metadata/?list=true",
    ] {
        let a = h
            .root(
                if path.contains("list=") {
                    "GET"
                } else {
                    "LIST"
                },
                path,
                None,
            )
            .await;
        assert_eq!(keys(&a), json!(["app", "dir/", "dir2"]), "{path}");
    }
    assert_eq!(
        keys(&h.root("LIST", "secret/metadata/dir", None).await),
        json!(["a", "sub/"])
    );
    assert_eq!(
        keys(&h.root("LIST", "secret/metadata/?after=dir", None).await),
        json!(["dir/", "dir2"])
    );
    assert_eq!(
        keys(&h.root("LIST", "secret/metadata/?limit=2", None).await),
        json!(["app", "dir/"])
    );
    assert_eq!(
        keys(
            &h.root("LIST", "secret/metadata/?limit=2&after=dir/", None)
                .await
        ),
        json!(["dir2"])
    );
    let a = h.root("LIST", "secret/metadata/zzz/", None).await;
    assert_eq!(
        (a.status, a.json.clone()),
        (StatusCode::NOT_FOUND, json!({"errors": []}))
    );
    assert_eq!(
        h.root("LIST", "secret/metadata/?limit=x", None)
            .await
            .status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        h.root("LIST", "secret/metadata/a/../b", None).await.status,
        StatusCode::BAD_REQUEST
    );

    // 1005 secrets in one folder: at most 1000 per call, and a warning that
    // says how to continue; asking for more is clamped.
    let mut tasks = tokio::task::JoinSet::new();
    let h = Arc::new(h);
    for t in 0..8 {
        let h = h.clone();
        tasks.spawn(async move {
            for i in (t..1005).step_by(8) {
                ok(&h
                    .put(&format!("secret/data/big/k{i:04}"), json!({"i": i}))
                    .await);
            }
        });
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("writes finished in time");
    for path in ["secret/metadata/big/", "secret/metadata/big/?limit=5000"] {
        let a = h.root("LIST", path, None).await;
        let listed = a.json["data"]["keys"].as_array().unwrap();
        assert_eq!(listed.len(), 1000, "{path}");
        assert_eq!(listed[999], "k0999");
        assert!(
            a.json["warnings"][0]
                .as_str()
                .unwrap()
                .contains("after=k0999")
        );
    }
    let a = h
        .root("LIST", "secret/metadata/big/?after=k0999", None)
        .await;
    assert_eq!(
        a.json["data"]["keys"],
        json!(["k1000", "k1001", "k1002", "k1003", "k1004"])
    );
    assert_eq!(a.json["warnings"], Value::Null);
}

// Bad paths and oversized secrets get a 400 and change nothing.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let config = Config {
        max_body_bytes: Some(4096),
        ..Config::default()
    };
    let h = server_with(config).await;
    let long = "a".repeat(1025);
    for path in [
        "a//b",
        "a/%2e%2e/b",
        "a/./b",
        "dir/",
        "%2e%2e",
        "a%00b",
        long.as_str(),
    ] {
        let a = h
            .put(&format!("secret/data/{path}"), json!({"k": "v"}))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {:?}", a.json);
        let a = h
            .root(
                "POST",
                &format!("secret/metadata/{path}"),
                Some(json!({"max_versions": 1})),
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}");
    }
    assert_eq!(
        h.put("secret/data/dir/", json!({"k": "v"})).await.json["errors"][0],
        "cannot write to a path ending in '/'"
    );
    for body in [
        json!({}),
        json!({"data": null}),
        json!({"data": "str"}),
        json!({"data": [1]}),
        json!({"data": {"k": 1}, "options": "x"}),
    ] {
        let a = h.root("POST", "secret/data/ok", Some(body.clone())).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}");
    }
    // A chain of patches cannot grow a secret beyond what one request may carry.
    h.put("secret/data/grow", json!({"a": "x".repeat(3000)}))
        .await;
    let a = h
        .root(
            "PATCH",
            "secret/data/grow",
            Some(json!({"data": {"b": "y".repeat(3000)}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(a.first_error().contains("too large"));
    assert!(!a.first_error().contains("xxx"), "no value in the message");
    let uuid = h.mount_uuid("secret/").await;
    let rows = h
        .core
        .backend()
        .keys(&format!("logical/{uuid}/"), "", 100)
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            format!("logical/{uuid}/keys/grow"),
            format!("logical/{uuid}/meta/grow"),
            format!("logical/{uuid}/ver/grow/1")
        ]
    );
}

// No lost updates across nodes, also when a secret is deleted and
// re-created: its metadata row's generation must never repeat. Otherwise a
// node that read the old secret at generation g (and stalled) could commit
// its stale metadata over the re-created secret once that reached g again
// (the ABA problem), silently dropping the new secret's acknowledged
// writes. This replays exactly that stale compare-and-swap.
#[tokio::test]
async fn a_stale_write_never_lands_on_a_recreated_secret() {
    use zafe_server::barrier::{BarrierError, Expect, Write};
    let h = server().await;
    let uuid = h.mount_uuid("secret/").await;
    let meta_row = format!("logical/{uuid}/meta/aba");
    let generation = |h: &Harness| {
        let backend = h.core.backend().clone();
        let row = meta_row.clone();
        async move { backend.get(&row).await.unwrap().unwrap().generation }
    };
    for i in 0..3 {
        ok(&h.put("secret/data/aba", json!({ "old": i })).await);
    }
    // What the stalled node read: the old secret's metadata and generation.
    let stale = h.core.barrier.get(&meta_row).await.unwrap().unwrap();
    ok(&h.root("DELETE", "secret/metadata/aba", None).await);
    assert_eq!(
        h.root("GET", "secret/metadata/aba", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.root("LIST", "secret/metadata", None).await.status,
        StatusCode::NOT_FOUND,
        "a tombstone is not listed"
    );
    let mut seen = vec![stale.generation];
    for i in 0..6 {
        let a = h.put("secret/data/aba", json!({ "new": i })).await;
        assert_eq!(
            a.json["data"]["version"],
            i + 1,
            "the re-created secret starts at version 1"
        );
        // The stalled node's compare-and-swap fails, whatever happened since.
        let replay = h
            .core
            .barrier
            .commit(vec![Write::Put {
                key: meta_row.clone(),
                value: stale.value.to_vec(),
                expect: Expect::Generation(stale.generation),
            }])
            .await;
        assert!(
            matches!(replay, Err(BarrierError::Conflict { .. })),
            "a stale write landed on the re-created secret after {} writes",
            i + 1
        );
        // Generations are fresh random draws (R-KEY-9): never repeated,
        // not necessarily growing.
        let g = generation(&h).await;
        assert!(
            !seen.contains(&g),
            "the generation {g} repeated one of {seen:?}"
        );
        seen.push(g);
    }
    let m = h.root("GET", "secret/metadata/aba", None).await;
    assert_eq!(m.json["data"]["current_version"], 6);
    assert_eq!(
        h.root("GET", "secret/data/aba", None).await.json["data"]["data"],
        json!({"new": 5})
    );
    let listed = h.root("LIST", "secret/metadata", None).await;
    assert_eq!(listed.json["data"]["keys"], json!(["aba"]));
}

// As OpenBao: turning off check-and-set on a secret while the mount
// requires it is accepted with a warning (the mount's rule still applies).
#[tokio::test]
async fn turning_off_a_required_check_and_set_warns() {
    let h = server().await;
    ok(&h
        .root("POST", "secret/config", Some(json!({"cas_required": true})))
        .await);
    let a = h
        .root(
            "POST",
            "secret/metadata/w",
            Some(json!({"cas_required": false})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json["warnings"][0],
        "\"cas_required\" set to false, but is mandated by backend config. This value will be ignored."
    );
    let a = h.put("secret/data/w", json!({"k": "v"})).await;
    assert_eq!(
        (a.status, a.first_error()),
        (
            StatusCode::BAD_REQUEST,
            "check-and-set parameter required for this call".into()
        )
    );
    // Without the mount's rule there is nothing to warn about.
    ok(&h
        .root(
            "POST",
            "secret/config",
            Some(json!({"cas_required": false})),
        )
        .await);
    let a = h
        .root(
            "POST",
            "secret/metadata/w",
            Some(json!({"cas_required": false})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
}

// R-KEY-1 for KV: what reaches storage is ciphertext only.
#[tokio::test]
async fn storage_never_sees_secret_values() {
    let h = server().await;
    let marker = "plaintext-marker-7f3a9c";
    h.put("secret/data/leak", json!({ "password": marker }))
        .await;
    h.root(
        "PATCH",
        "secret/data/leak",
        Some(json!({"data": {"other": marker}})),
    )
    .await;
    h.root(
        "POST",
        "secret/metadata/leak",
        Some(json!({"custom_metadata": {"note": "meta-marker-1b2c"}})),
    )
    .await;
    let backend = h.core.backend();
    let keys = backend.keys("", "", 10_000).await.unwrap();
    assert!(keys.iter().any(|k| k.ends_with("/ver/leak/2")));
    for key in keys {
        let entry = backend.get(&key).await.unwrap().unwrap();
        for needle in [marker.as_bytes(), b"meta-marker-1b2c"] {
            assert!(
                !entry.value.windows(needle.len()).any(|w| w == needle),
                "{key} holds plaintext"
            );
        }
    }
}

// R-KEY-3: an old version record put back after the secret was deleted and
// re-created at the same path (same storage key, same generation) is
// refused, not served.
#[tokio::test]
async fn a_restored_stale_version_record_is_refused() {
    let h = server().await;
    let uuid = h.mount_uuid("secret/").await;
    let key = format!("logical/{uuid}/ver/app/1");
    h.put("secret/data/app", json!({"password": "old"})).await;
    let stale = h.core.backend().get(&key).await.unwrap().unwrap();
    assert_eq!(
        h.root("DELETE", "secret/metadata/app", None).await.status,
        StatusCode::NO_CONTENT
    );
    h.put("secret/data/app", json!({"password": "new"})).await;
    h.core
        .backend()
        .commit(vec![Op::Put {
            entry: Entry {
                key: key.clone(),
                value: stale.value,
                generation: stale.generation,
            },
            condition: Condition::Any,
        }])
        .await
        .unwrap();
    let a = h.root("GET", "secret/data/app", None).await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{:?}", a.json);
    assert!(a.first_error().contains("integrity"));
    assert!(!a.json.to_string().contains("old"));
}

// R-ACL-4: two KV mounts with the same paths never see each other's data.
#[tokio::test]
async fn mounts_never_see_each_others_data() {
    let h = server().await;
    ok(&h
        .root(
            "POST",
            "sys/mounts/other",
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await);
    for (mount, value) in [("secret", "from-secret"), ("other", "from-other")] {
        ok(&h
            .put(&format!("{mount}/data/shared/path"), json!({ "v": value }))
            .await);
    }
    h.put("secret/data/shared/path", json!({"v": "from-secret-2"}))
        .await;
    let a = h.root("GET", "other/data/shared/path", None).await;
    assert_eq!(a.json["data"]["data"]["v"], "from-other");
    assert_eq!(a.json["data"]["metadata"]["version"], 1);
    let a = h
        .root("GET", "secret/data/shared/path?version=1", None)
        .await;
    assert_eq!(a.json["data"]["data"]["v"], "from-secret");
    assert_eq!(
        h.root("GET", "other/data/shared/path?version=2", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Deleting in one mount leaves the other alone.
    assert_eq!(
        h.root("DELETE", "other/metadata/shared/path", None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        h.root("GET", "secret/data/shared/path", None).await.json["data"]["data"]["v"],
        "from-secret-2"
    );
    assert_eq!(
        h.root("LIST", "other/metadata/", None).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        h.root("LIST", "secret/metadata/", None).await.json["data"]["keys"],
        json!(["shared/"])
    );
    // Each mount's config is its own.
    ok(&h
        .root("POST", "other/config", Some(json!({"max_versions": 2})))
        .await);
    assert_eq!(
        h.root("GET", "secret/config", None).await.json["data"]["max_versions"],
        0
    );
    // Disabling a mount removes its rows and nothing else.
    let other = h.mount_uuid("other/").await;
    h.put("other/data/x", json!({"v": 1})).await;
    assert_eq!(
        h.root("DELETE", "sys/mounts/other", None).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(
        h.core
            .backend()
            .keys(&format!("logical/{other}/"), "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        h.root("GET", "secret/data/shared/path", None).await.status,
        StatusCode::OK
    );
}

// The core asks for `create` on a new secret and `update` on an existing
// one, as Vault does for KV v2; PATCH needs `patch`.
#[tokio::test]
async fn writes_need_create_or_update_like_vault() {
    let h = server().await;
    for (name, caps) in [
        ("creator", r#"["create", "read"]"#),
        ("updater", r#"["update", "read"]"#),
        ("patcher", r#"["patch", "read"]"#),
    ] {
        let policy = format!(
            "path \"secret/data/*\" {{ capabilities = {caps} }}\npath \"secret/metadata/*\" {{ capabilities = {caps} }}"
        );
        let a = h
            .root(
                "PUT",
                &format!("sys/policy/{name}"),
                Some(json!({ "policy": policy })),
            )
            .await;
        assert!(a.status.is_success(), "{:?}", a.json);
    }
    let token = |policy: &'static str| {
        let core = h.core.clone();
        async move {
            let spec = zafe_server::tokens::TokenSpec {
                policies: vec![policy.into()],
                display_name: policy.into(),
                ttl_secs: None,
            };
            zafe_server::tokens::create(
                &core.barrier,
                &core.token_key().unwrap(),
                spec,
                None,
                core.now_secs(),
            )
            .await
            .unwrap()
            .0
        }
    };
    let (creator, updater, patcher) = (
        token("creator").await,
        token("updater").await,
        token("patcher").await,
    );
    let write = |t: String, path: &'static str| {
        let h = &h;
        async move {
            h.call(
                "POST",
                &format!("/v1/secret/data/{path}"),
                Some(&t),
                Some(json!({"data": {"k": "v"}})),
            )
            .await
            .status
        }
    };
    assert_eq!(
        write(updater.clone(), "fresh").await,
        StatusCode::FORBIDDEN,
        "update does not allow creating"
    );
    assert_eq!(write(creator.clone(), "fresh").await, StatusCode::OK);
    assert_eq!(
        write(creator.clone(), "fresh").await,
        StatusCode::FORBIDDEN,
        "create does not allow overwriting"
    );
    assert_eq!(write(updater.clone(), "fresh").await, StatusCode::OK);
    // Metadata writes follow the same rule.
    let meta = |t: &str, path: &str| {
        let (h, t, path) = (&h, t.to_string(), path.to_string());
        async move {
            h.call(
                "POST",
                &format!("/v1/secret/metadata/{path}"),
                Some(&t),
                Some(json!({"max_versions": 2})),
            )
            .await
            .status
        }
    };
    assert_eq!(meta(&updater, "m-new").await, StatusCode::FORBIDDEN);
    assert_eq!(meta(&creator, "m-new").await, StatusCode::NO_CONTENT);
    assert_eq!(meta(&updater, "m-new").await, StatusCode::NO_CONTENT);
    // PATCH needs `patch`, not `update`.
    let patch = |t: String| {
        let h = &h;
        async move {
            h.call(
                "PATCH",
                "/v1/secret/data/fresh",
                Some(&t),
                Some(json!({"data": {"p": 1}})),
            )
            .await
            .status
        }
    };
    assert_eq!(patch(updater).await, StatusCode::FORBIDDEN);
    assert_eq!(patch(patcher).await, StatusCode::OK);
    // No token at all: 403, and nothing is revealed about what exists.
    assert_eq!(
        h.call("GET", "/v1/secret/data/fresh", None, None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// Writes `writers` x `each` times to one key through `apps` (round robin)
/// and checks that every acknowledged write got its own version and that
/// the secret's current version counts exactly the acknowledged writes. At
/// most `max_failed` writes may be refused (honestly: 409 or 5xx).
async fn hammer(apps: Vec<Harness>, writers: usize, each: usize, max_failed: usize) {
    let apps: Vec<Arc<Harness>> = apps.into_iter().map(Arc::new).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..writers {
        let h = apps[w % apps.len()].clone();
        tasks.spawn(async move {
            let mut versions = Vec::new();
            let mut failed = 0;
            for i in 0..each {
                let a = h
                    .put("secret/data/hot", json!({ "writer": w, "i": i }))
                    .await;
                if a.status == StatusCode::OK {
                    versions.push(a.json["data"]["version"].as_u64().unwrap());
                } else {
                    // Not acknowledged, so not lost; must be rare and honest.
                    assert!(
                        a.status == StatusCode::CONFLICT || a.status.is_server_error(),
                        "{} {:?}",
                        a.status,
                        a.json
                    );
                    failed += 1;
                }
            }
            (versions, failed)
        });
    }
    let mut acknowledged = Vec::new();
    let mut failed = 0;
    tokio::time::timeout(Duration::from_secs(180), async {
        while let Some(r) = tasks.join_next().await {
            let (v, f) = r.unwrap();
            acknowledged.extend(v);
            failed += f;
        }
    })
    .await
    .expect("the writers finished in time");
    let distinct: BTreeSet<u64> = acknowledged.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        acknowledged.len(),
        "two acknowledged writes share a version number"
    );
    let m = apps[0].root("GET", "secret/metadata/hot", None).await;
    assert_eq!(
        m.json["data"]["current_version"].as_u64().unwrap(),
        acknowledged.len() as u64,
        "acknowledged writes were lost"
    );
    assert_eq!(
        distinct,
        (1..=acknowledged.len() as u64).collect(),
        "versions are exactly 1..=n"
    );
    assert!(
        failed <= max_failed,
        "{failed} of {} writes failed",
        writers * each
    );
    // The latest version holds the data of the write that got it.
    let latest = apps[1 % apps.len()]
        .root("GET", "secret/data/hot", None)
        .await;
    assert_eq!(
        latest.json["data"]["metadata"]["version"].as_u64().unwrap(),
        acknowledged.len() as u64
    );
}

// lessons.md: a comparable server acknowledged 51,395 concurrent writes to
// one key and kept 1,684 versions. R-KV-1: here every acknowledged write
// has its own version and none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_never_lose_an_update() {
    let h = server().await;
    // Requests to a path no engine serves make the core reload the mount
    // table, and so build new engine instances, while the writers run: the
    // per-path lock must hold across instances, so on one node not a single
    // write may be refused.
    let app = h.app.clone();
    let reloads = tokio::spawn(async move {
        for _ in 0..200 {
            let req = http::Request::builder()
                .uri("/v1/no-such-mount/x")
                .header("x-vault-token", ROOT)
                .body(axum::body::Body::empty())
                .unwrap();
            let res = tower::ServiceExt::oneshot(app.clone(), req).await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
            tokio::task::yield_now().await;
        }
    });
    hammer(vec![h], 32, 25, 0).await;
    reloads.await.unwrap();
}

// The same across two server nodes on one database: the in-process lock
// does not help across nodes; the compare-and-swap on the metadata must.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_database_never_lose_an_update() {
    let backend: Arc<dyn Backend> =
        Arc::new(zafe_storage::sqlite::SqliteBackend::memory().await.unwrap());
    let master = SecretKey::generate();
    let node = |master: SecretKey| {
        let backend = backend.clone();
        async move {
            let clock = std::sync::Arc::new(zafe_engine::ManualClock::starting_now());
            let core = Core::new(CoreParts {
                config: Config::default(),
                clock: clock.clone(),
                projects: zafe_server::projects::rule(),
                engines: zafe_engines::build,
                backend,
                identity: IdentityKey::generate(),
                master_key: Some(master),
                token_pepper: None,
                tls_spki: None,
                proxy_spki: None,
            })
            .await
            .unwrap();
            let app = zafe_server::http::router(core.clone());
            Harness { core, app, clock }
        }
    };
    let a = node(master.duplicate()).await;
    a.core.initialize(1, 1, Some(ROOT)).await.unwrap();
    let b = node(master).await;
    b.core.unseal_with_master_key().await.unwrap();
    // Across nodes only the compare-and-swap protects; a write that loses
    // it 32 times in a row is refused with 409, which must stay rare.
    hammer(vec![a, b], 16, 20, 3).await;
}

// R-KV-1: with the same `cas`, exactly one of the racing writers wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_racing_check_and_set_writer_wins() {
    let h = Arc::new(server().await);
    for round in 0..5u64 {
        let mut tasks = tokio::task::JoinSet::new();
        for w in 0..16 {
            let h = h.clone();
            tasks.spawn(async move {
                h.root(
                    "POST",
                    "secret/data/race",
                    Some(json!({"data": {"w": w}, "options": {"cas": round}})),
                )
                .await
            });
        }
        let mut winners = 0;
        while let Some(a) = tasks.join_next().await {
            let a = a.unwrap();
            match a.status {
                StatusCode::OK => {
                    assert_eq!(a.json["data"]["version"], round + 1);
                    winners += 1;
                }
                StatusCode::BAD_REQUEST => assert_eq!(
                    a.first_error(),
                    "check-and-set parameter did not match the current version"
                ),
                other => panic!("unexpected {other}: {:?}", a.json),
            }
        }
        assert_eq!(winners, 1, "round {round}");
    }
    let m = h.root("GET", "secret/metadata/race", None).await;
    assert_eq!(m.json["data"]["current_version"], 5);
}

#[tokio::test]
async fn a_sealed_server_serves_no_secrets() {
    let h = server().await;
    h.put("secret/data/s", json!({"k": "v"})).await;
    h.core.close();
    let a = h.root("GET", "secret/data/s", None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!a.json.to_string().contains("\"v\""));
}

// R-AGT-3's foundation: every committed change to a secret is published on
// the change feed with its mount, path and new version, and nothing else; a
// write that is refused publishes nothing.
#[tokio::test]
async fn committed_changes_are_published_without_values() {
    use zafe_server::changes::{Change, SecretChange};
    let h = server().await;
    let mut feed = h.core.changes().subscribe();
    let change = |path: &str, version: Option<u64>| {
        Change::Secret(SecretChange {
            mount: "secret/".into(),
            path: path.into(),
            version,
        })
    };

    ok(&h
        .put("secret/data/app/db", json!({"password": "feed-s3cret"}))
        .await);
    assert_eq!(feed.try_recv().unwrap(), change("app/db", Some(1)));
    let patched = h
        .call(
            "PATCH",
            "/v1/secret/data/app/db",
            Some(ROOT),
            Some(json!({"data": {"user": "app"}})),
        )
        .await;
    ok(&patched);
    assert_eq!(feed.try_recv().unwrap(), change("app/db", Some(2)));
    // A check-and-set that fails changes nothing and says nothing.
    let refused = h
        .root(
            "POST",
            "secret/data/app/db",
            Some(json!({"options": {"cas": 1}, "data": {"password": "lost"}})),
        )
        .await;
    assert!(!refused.status.is_success());
    assert!(feed.try_recv().is_err());
    // Reads publish nothing either.
    ok(&h.root("GET", "secret/data/app/db", None).await);
    assert!(feed.try_recv().is_err());
    for (method, path, body) in [
        ("DELETE", "secret/data/app/db", None),
        (
            "POST",
            "secret/undelete/app/db",
            Some(json!({"versions": [2]})),
        ),
        (
            "POST",
            "secret/destroy/app/db",
            Some(json!({"versions": [1]})),
        ),
        ("DELETE", "secret/metadata/app/db", None),
    ] {
        ok(&h.root(method, path, body).await);
        let got = feed.try_recv().unwrap();
        assert_eq!(got, change("app/db", None), "{method} {path}");
        assert!(!format!("{got:?}").contains("feed-s3cret"));
    }
}
