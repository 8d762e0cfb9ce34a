//! `POST sys/resolve` (R-DEV-3 and the design note's workflow section):
//! one request for many references, each authorised on its own KV path,
//! all or nothing, audited as one request with no value in the log.

use crate::common::*;
use http::StatusCode;
use serde_json::{Value, json};

const PROJECT_KEYS: usize = 50;

fn value_of(i: usize) -> String {
    format!("value-{i}-Zq7 \"quoted\" $(rm -rf /)\nsecond line")
}

async fn setup() -> (Harness, String) {
    let (h, root) = unsealed().await;
    for i in 0..PROJECT_KEYS {
        write(
            &h,
            &root,
            &format!("myapp/dev/KEY_{i}"),
            json!({"value": value_of(i)}),
        )
        .await;
    }
    write(
        &h,
        &root,
        "other/dev/TOKEN",
        json!({"value": "other-secret-8pX"}),
    )
    .await;
    write(
        &h,
        &root,
        "infra/db primary",
        json!({"password": "pw-v1-Hn3", "port": 5432}),
    )
    .await;
    write(
        &h,
        &root,
        "infra/db primary",
        json!({"password": "pw-v2-Kq9", "port": 5433}),
    )
    .await;
    (h, root)
}

async fn write(h: &Harness, token: &str, path: &str, data: Value) {
    let a = h
        .call(
            "POST",
            &format!("/v1/secret/data/{}", path.replace(' ', "%20")),
            Some(token),
            Some(json!({ "data": data })),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
}

async fn resolve(h: &Harness, token: &str, references: &[&str]) -> Answer {
    h.call(
        "POST",
        "/v1/sys/resolve",
        Some(token),
        Some(json!({ "references": references })),
    )
    .await
}

fn error_text(a: &Answer) -> String {
    a.json["errors"].to_string()
}

/// Every audit entry's stored body, in order.
async fn audit_bodies(h: &Harness) -> Vec<String> {
    let backend = h.core.backend();
    let mut out = Vec::new();
    let mut from = i64::MIN;
    loop {
        let page = backend.audit_read(from, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        out.extend(
            page.into_iter()
                .map(|row| String::from_utf8(row.body).unwrap()),
        );
    }
    out
}

fn resolve_entries(bodies: &[String]) -> usize {
    bodies
        .iter()
        .filter(|b| serde_json::from_str::<Value>(b).unwrap()["path"] == "sys/resolve")
        .count()
}

#[tokio::test]
async fn fifty_references_in_one_audited_request_with_no_value_in_the_log() {
    let (h, root) = setup().await;
    let texts: Vec<String> = (0..PROJECT_KEYS)
        .map(|i| format!("zafe://myapp/dev/KEY_{i}"))
        .collect();
    let mut references: Vec<&str> = texts.iter().map(String::as_str).collect();
    references.extend([
        "zafe:///secret/infra/db%20primary#password",
        "zafe:///secret/infra/db%20primary?version=1#password",
        "zafe:///secret/infra/db%20primary#port",
        // The same reference spelled another way: read once, answered under both.
        "zafe://myapp/dev/KEY%5F0",
    ]);
    let before = resolve_entries(&audit_bodies(&h).await);

    let a = resolve(&h, &root, &references).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let values = a.json["data"]["values"].as_object().unwrap();
    assert_eq!(values.len(), references.len());
    for (i, text) in texts.iter().enumerate() {
        assert_eq!(values[text], value_of(i));
    }
    assert_eq!(
        values["zafe:///secret/infra/db%20primary#password"],
        "pw-v2-Kq9"
    );
    assert_eq!(
        values["zafe:///secret/infra/db%20primary?version=1#password"],
        "pw-v1-Hn3"
    );
    assert_eq!(values["zafe:///secret/infra/db%20primary#port"], "5433");
    assert_eq!(values["zafe://myapp/dev/KEY%5F0"], value_of(0));

    let bodies = audit_bodies(&h).await;
    assert_eq!(
        resolve_entries(&bodies) - before,
        1,
        "one request, one audit entry"
    );
    // The entry names every secret the request reached (by reference, in
    // canonical spelling), so the log says who read what.
    let entry: Value = bodies
        .iter()
        .map(|b| serde_json::from_str::<Value>(b).unwrap())
        .rfind(|e| e["path"] == "sys/resolve")
        .unwrap();
    let named: Vec<&str> = entry["resources"]
        .as_array()
        .expect("resources in the sys/resolve entry")
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(named.len(), PROJECT_KEYS + 3, "{named:?}");
    for text in &texts {
        assert!(named.contains(&text.as_str()), "{text} not in {named:?}");
    }
    assert!(named.contains(&"zafe:///secret/infra/db%20primary?version=1#password"));
    let log = bodies.join("\n");
    for i in 0..PROJECT_KEYS {
        assert!(
            !log.contains(&format!("value-{i}-Zq7")),
            "value {i} in the audit log"
        );
    }
    for value in ["pw-v1-Hn3", "pw-v2-Kq9", "other-secret-8pX"] {
        assert!(!log.contains(value));
    }
}

#[tokio::test]
async fn a_missing_reference_fails_the_request_naming_it_and_returning_no_value() {
    let (h, root) = setup().await;
    for missing in [
        "zafe://myapp/dev/NOPE",
        "zafe://myapp/dev/KEY_1?version=9",
        "zafe:///secret/infra/db%20primary#nofield",
        "zafe:///nomount/x#y",
        "zafe:///secret/myapp/dev#value",
    ] {
        let a = resolve(&h, &root, &["zafe://myapp/dev/KEY_0", missing]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{missing}: {:?}", a.json);
        let body = a.json.to_string();
        assert!(error_text(&a).contains(missing), "{body}");
        assert!(!body.contains("value-0-Zq7"), "{body}");
        assert!(a.json.get("data").is_none());
    }

    // A deleted latest version is missing too.
    let a = h
        .call(
            "DELETE",
            "/v1/secret/data/myapp/dev/KEY_3",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let a = resolve(&h, &root, &["zafe://myapp/dev/KEY_3"]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_reference_is_authorised_on_its_own_path() {
    let (h, root) = setup().await;
    let a = h
        .call(
            "PUT",
            "/v1/sys/policy/myapp-dev",
            Some(&root),
            Some(
                json!({"policy": "path \"secret/data/myapp/dev/*\" { capabilities = [\"read\"] }"}),
            ),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.json);
    let a = h
        .call(
            "POST",
            "/v1/auth/token/create",
            Some(&root),
            Some(json!({"policies": ["myapp-dev"]})),
        )
        .await;
    let token = a.json["auth"]["client_token"].as_str().unwrap().to_string();

    let a = resolve(&h, &token, &["zafe://myapp/dev/KEY_1"]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        a.json["data"]["values"]["zafe://myapp/dev/KEY_1"],
        value_of(1)
    );

    // Forbidden references are named, allowed ones give nothing away, and a
    // forbidden reference's existence is not revealed (a missing one beside
    // it is not even looked up).
    let a = resolve(
        &h,
        &token,
        &[
            "zafe://myapp/dev/KEY_1",
            "zafe://other/dev/TOKEN",
            "zafe://other/dev/DOES_NOT_EXIST",
            "zafe://myapp/dev/NOPE",
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{:?}", a.json);
    let errors = error_text(&a);
    assert!(errors.contains("zafe://other/dev/TOKEN"), "{errors}");
    assert!(
        errors.contains("zafe://other/dev/DOES_NOT_EXIST"),
        "{errors}"
    );
    assert!(!errors.contains("zafe://myapp/dev/KEY_1"), "{errors}");
    assert!(!a.json.to_string().contains("value-1-Zq7"));
    assert!(!a.json.to_string().contains("other-secret-8pX"));

    // A path reference is checked on its data path too.
    let a = resolve(&h, &token, &["zafe:///secret/infra/db%20primary#password"]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);

    // No token at all.
    let a = h
        .call(
            "POST",
            "/v1/sys/resolve",
            None,
            Some(json!({"references": ["zafe://myapp/dev/KEY_1"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert!(!a.json.to_string().contains("value-1-Zq7"));
}

#[tokio::test]
async fn service_accounts_resolve_what_they_may_read() {
    let (h, root) = setup().await;
    let a = h
        .call(
            "POST",
            "/v1/sys/service-accounts/ci",
            Some(&root),
            Some(json!({"scopes": ["project:myapp"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let token = a.json["data"]["token"].as_str().unwrap().to_string();
    let a = resolve(&h, &token, &["zafe://myapp/dev/KEY_2"]).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        a.json["data"]["values"]["zafe://myapp/dev/KEY_2"],
        value_of(2)
    );
    let a = resolve(&h, &token, &["zafe://other/dev/TOKEN"]).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_read() {
    let (h, root) = setup().await;
    let too_many: Vec<String> = (0..=zafe_server::resolve::MAX_REFERENCES)
        .map(|i| format!("zafe://myapp/dev/K{i}"))
        .collect();
    let too_many: Vec<&str> = too_many.iter().map(String::as_str).collect();
    let a = resolve(&h, &root, &too_many).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    assert!(error_text(&a).contains("at most 1000"));

    let a = resolve(&h, &root, &["zafe://myapp/dev/KEY_0", "zafe://myapp/dev"]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert!(
        error_text(&a).contains("references[1]"),
        "{}",
        error_text(&a)
    );
    assert!(!a.json.to_string().contains("value-0-Zq7"));

    for body in [
        json!({}),
        json!({"references": "zafe://myapp/dev/KEY_0"}),
        json!({"references": [1]}),
    ] {
        let a = h
            .call("POST", "/v1/sys/resolve", Some(&root), Some(body))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{:?}", a.json);
    }
    let a = h.call("GET", "/v1/sys/resolve", Some(&root), None).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);

    let a = resolve(&h, &root, &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["data"]["values"], json!({}));
}

// A registered project's references read from the project's own mount.
#[tokio::test]
async fn project_references_read_from_the_projects_mount() {
    let (h, root) = setup().await;
    let a = h
        .call(
            "POST",
            "/v1/sys/mounts/team/kv",
            Some(&root),
            Some(json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.json);
    let a = h
        .call(
            "POST",
            "/v1/sys/projects",
            Some(&root),
            Some(json!({"slug": "payments", "mount": "team/kv", "environments": ["dev"]})),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.json);
    let a = h
        .call(
            "POST",
            "/v1/team/kv/data/payments/dev/KEY",
            Some(&root),
            Some(json!({"data": {"value": "team-value-Jk2"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    write(
        &h,
        &root,
        "payments/dev/KEY",
        json!({"value": "default-mount-Jk3"}),
    )
    .await;

    let a = resolve(
        &h,
        &root,
        &["zafe://payments/dev/KEY", "zafe://myapp/dev/KEY_4"],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    assert_eq!(
        a.json["data"]["values"]["zafe://payments/dev/KEY"],
        "team-value-Jk2"
    );
    assert_eq!(
        a.json["data"]["values"]["zafe://myapp/dev/KEY_4"],
        value_of(4)
    );
}

// People resolve through their project roles: a readonly member reads the
// project's references; a non-member and another project's references are
// refused (R-ACL-2 through the one policy engine).
#[tokio::test]
async fn people_resolve_through_their_project_roles() {
    const PASSWORD: &str = "a-long-enough-passphrase-for-tests";
    let (h, root) = auto_unsealed(people_config()).await;
    let boss = first_admin(&h, "boss@example.com", PASSWORD).await;
    let mut sessions = Vec::new();
    for email in ["reader@example.com", "outsider@example.com"] {
        create_user(&h, &boss, json!({"email": email, "password": PASSWORD})).await;
        sessions.push(client_token(
            &password_login(&h, email, PASSWORD, None).await,
        ));
    }
    for slug in ["myapp", "other"] {
        let a = h
            .call(
                "POST",
                "/v1/sys/projects",
                Some(&boss),
                Some(json!({"slug": slug, "environments": ["dev"]})),
            )
            .await;
        assert!(a.status.is_success(), "{}", a.json);
    }
    let a = h
        .call(
            "POST",
            "/v1/sys/projects/myapp/members/reader@example.com",
            Some(&boss),
            Some(json!({"role": "readonly"})),
        )
        .await;
    assert!(a.status.is_success(), "{}", a.json);
    write(
        &h,
        &root,
        "myapp/dev/KEY",
        json!({"value": "member-visible-Tt1"}),
    )
    .await;
    write(
        &h,
        &root,
        "other/dev/KEY",
        json!({"value": "not-yours-Tt2"}),
    )
    .await;

    let (reader, outsider) = (&sessions[0], &sessions[1]);
    let a = resolve(&h, reader, &["zafe://myapp/dev/KEY"]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
    assert_eq!(
        a.json["data"]["values"]["zafe://myapp/dev/KEY"],
        "member-visible-Tt1"
    );
    // A project one is not a member of answers like one that does not
    // exist: 404 naming the reference, whether the project exists or not.
    for (token, reference) in [
        (reader, "zafe://other/dev/KEY"),
        (outsider, "zafe://myapp/dev/KEY"),
        (outsider, "zafe://no-such-project/dev/KEY"),
    ] {
        let a = resolve(&h, token, &["zafe://myapp/dev/KEY", reference]).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.json);
        assert!(
            a.json["errors"].to_string().contains(reference),
            "{}",
            a.json
        );
        assert!(!a.json.to_string().contains("Tt"), "{}", a.json);
    }
    // On a KV mount every path's first segment may be a project, so a path
    // reference outside the reader's projects is hidden the same way.
    let a = resolve(&h, reader, &["zafe:///secret/infra/db#password"]).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.json);
    // Through a path reference, the reader's own project is readable too.
    let a = resolve(&h, reader, &["zafe:///secret/myapp/dev/KEY#value"]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.json);
}
