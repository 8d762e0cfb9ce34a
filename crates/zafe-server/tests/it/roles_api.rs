//! Projects and roles (R-ACL-2, R-KV-2) with real people logged in through
//! the real router: one table of every project route and the project's KV
//! paths x every role, and the promises around it (non-members cannot tell
//! a project exists, a removed member loses access at once, one of two
//! racing creations wins, the last admin stays).

use crate::common::*;
use axum::body::Body;
use http::StatusCode;
use serde_json::{Value, json};

const PASSWORD: &str = "a-long-enough-passphrase-for-tests";
const SERVER_ADMIN: &str = "boss@example.com";

/// The roles of the table, in its column order.
const ROLES: [&str; 6] = ["admin", "operator", "member", "readonly", "outsider", "sa"];

struct World {
    h: Harness,
    root: String,
    /// The server administrator's session.
    boss: String,
    /// Tokens by role name (ROLES order); `sa` is a service account scoped
    /// to `project:myapp`.
    tokens: Vec<String>,
}

impl World {
    fn token(&self, role: &str) -> &str {
        &self.tokens[ROLES.iter().position(|r| *r == role).unwrap()]
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        self.h
            .call(method, &format!("/v1/{path}"), Some(token), body)
            .await
    }

    async fn ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Answer {
        let a = self.call(method, path, token, body).await;
        assert!(
            a.status.is_success(),
            "{method} {path}: {} {}",
            a.status,
            a.json
        );
        a
    }

    async fn create_user(&self, email: &str) -> String {
        create_user(
            &self.h,
            &self.boss,
            json!({"email": email, "password": PASSWORD}),
        )
        .await
    }

    async fn login(&self, email: &str) -> String {
        client_token(&password_login(&self.h, email, PASSWORD, None).await)
    }

    /// A project made by the server administrator, with one user per role
    /// (`<role>@example.com`) as members.
    async fn project(&self, slug: &str, environments: &[&str]) {
        self.ok(
            "POST",
            "sys/projects",
            &self.boss,
            Some(json!({"slug": slug, "environments": environments})),
        )
        .await;
        for role in ["admin", "operator", "member", "readonly"] {
            self.ok(
                "POST",
                &format!("sys/projects/{slug}/members/{role}@example.com"),
                &self.boss,
                Some(json!({"role": role})),
            )
            .await;
        }
    }

    async fn put_secret(&self, path: &str) {
        self.ok(
            "POST",
            &format!("secret/data/{path}"),
            &self.root,
            Some(json!({"data": {"value": "v"}})),
        )
        .await;
    }
}

async fn world() -> World {
    let (h, root) = auto_unsealed(people_config()).await;
    let boss = first_admin(&h, SERVER_ADMIN, PASSWORD).await;
    let mut w = World {
        h,
        root,
        boss,
        tokens: Vec::new(),
    };
    for role in &ROLES[..5] {
        w.create_user(&format!("{role}@example.com")).await;
        let token = w.login(&format!("{role}@example.com")).await;
        w.tokens.push(token);
    }
    let a = w
        .ok(
            "POST",
            "sys/service-accounts/ci",
            &w.root,
            Some(json!({"scopes": ["project:myapp"]})),
        )
        .await;
    w.tokens
        .push(a.json["data"]["token"].as_str().unwrap().to_string());
    w
}

/// What a role gets for a row.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// A 2xx answer.
    Ok,
    Forbidden,
    NotFound,
}
use Want::{Forbidden as F, NotFound as N, Ok as A};

struct Row {
    method: &'static str,
    /// `{r}` is replaced by the role's name, so that each role acts on its
    /// own target (its own key, environment, member or project).
    path: &'static str,
    body: Option<fn(&str) -> Value>,
    /// admin, operator, member, readonly, outsider, service account.
    want: [Want; 6],
}

const fn row(method: &'static str, path: &'static str, want: [Want; 6]) -> Row {
    Row {
        method,
        path,
        body: None,
        want,
    }
}

const fn row_with(
    method: &'static str,
    path: &'static str,
    body: fn(&str) -> Value,
    want: [Want; 6],
) -> Row {
    Row {
        method,
        path,
        body: Some(body),
        want,
    }
}

/// Every project route and every KV endpoint of a project, for every role.
/// `myapp` has environments dev, staging, prod and `old-<role>`; the
/// `gone-<role>` projects have the same members as `myapp`; `ghost` does
/// not exist.
const TABLE: &[Row] = &[
    // -- the registry --
    row("LIST", "sys/projects", [A, A, A, A, A, F]),
    row_with(
        "POST",
        "sys/projects",
        |role| json!({"slug": format!("new-{role}")}),
        [F, F, F, F, F, F],
    ),
    row("GET", "sys/projects/myapp", [A, A, A, A, N, A]),
    row("GET", "sys/projects/ghost", [N, N, N, N, N, F]),
    row(
        "LIST",
        "sys/projects/myapp/environments",
        [A, A, A, A, N, A],
    ),
    row("GET", "sys/projects/myapp/environments", [A, A, A, A, N, A]),
    row(
        "GET",
        "sys/projects/myapp/environments/dev",
        [A, A, A, A, N, A],
    ),
    row(
        "POST",
        "sys/projects/myapp/environments/qa-{r}",
        [A, A, F, F, N, F],
    ),
    row_with(
        "POST",
        "sys/projects/myapp/environments",
        |role| json!({"name": format!("ci-{role}")}),
        [A, A, F, F, N, F],
    ),
    row(
        "DELETE",
        "sys/projects/myapp/environments/old-{r}",
        [A, A, F, F, N, F],
    ),
    row("LIST", "sys/projects/myapp/members", [A, A, A, A, N, F]),
    row(
        "GET",
        "sys/projects/myapp/members/member@example.com",
        [A, A, A, A, N, F],
    ),
    row_with(
        "POST",
        "sys/projects/myapp/members/extra-{r}@example.com",
        |_| json!({"role": "readonly"}),
        [A, F, F, F, N, F],
    ),
    row_with(
        "POST",
        "sys/projects/myapp/members/victim-{r}@example.com",
        |_| json!({"role": "member"}),
        [A, F, F, F, N, F],
    ),
    row(
        "DELETE",
        "sys/projects/myapp/members/victim-{r}@example.com",
        [A, F, F, F, N, F],
    ),
    row("DELETE", "sys/projects/gone-{r}", [A, F, F, F, N, F]),
    // -- the project's host agents (R-AGT-1): its admins manage them --
    row_with(
        "POST",
        "sys/agents/myapp/agent-{r}",
        |_| json!({"environments": ["dev"]}),
        [A, F, F, F, N, F],
    ),
    row("LIST", "sys/agents/myapp", [A, F, F, F, N, F]),
    // What an agent reported (R-AGT-4): read like the agent.
    row(
        "GET",
        "sys/agents/myapp/agent-{r}/events",
        [A, F, F, F, N, F],
    ),
    row(
        "GET",
        "sys/agents/ghost/agent-{r}/events",
        [N, N, N, N, N, F],
    ),
    row("LIST", "sys/agents/ghost", [N, N, N, N, N, F]),
    // -- the project's secrets --
    row("GET", "secret/data/myapp/dev/SEED", [A, A, A, A, N, A]),
    row("GET", "secret/data/ghost/dev/SEED", [N, N, N, N, N, F]),
    row("LIST", "secret/metadata/myapp/dev", [A, A, A, A, N, A]),
    row("LIST", "secret/metadata/myapp", [A, A, A, A, N, A]),
    row("GET", "secret/metadata/myapp/dev/SEED", [A, A, A, A, N, A]),
    row_with(
        "POST",
        "secret/data/myapp/dev/NEW_{r}",
        |_| json!({"data": {"value": "new"}}),
        [A, A, A, F, N, F],
    ),
    row_with(
        "POST",
        "secret/data/myapp/dev/SEED",
        |_| json!({"data": {"value": "changed"}}),
        [A, A, A, F, N, F],
    ),
    row_with(
        "PATCH",
        "secret/data/myapp/dev/P_{r}",
        |_| json!({"data": {"extra": "x"}}),
        [A, A, A, F, N, F],
    ),
    row("DELETE", "secret/data/myapp/dev/D_{r}", [A, A, A, F, N, F]),
    row_with(
        "POST",
        "secret/delete/myapp/dev/V_{r}",
        |_| json!({"versions": [1]}),
        [A, A, A, F, N, F],
    ),
    row_with(
        "POST",
        "secret/undelete/myapp/dev/V_{r}",
        |_| json!({"versions": [1]}),
        [A, A, A, F, N, F],
    ),
    row_with(
        "POST",
        "secret/destroy/myapp/dev/V_{r}",
        |_| json!({"versions": [1]}),
        [A, A, F, F, N, F],
    ),
    row_with(
        "POST",
        "secret/metadata/myapp/dev/M_{r}",
        |_| json!({"max_versions": 3}),
        [A, A, F, F, N, F],
    ),
    row(
        "DELETE",
        "secret/metadata/myapp/dev/M_{r}",
        [A, A, F, F, N, F],
    ),
];

#[tokio::test]
async fn every_route_for_every_role() {
    let w = world().await;
    w.project("myapp", &["dev", "staging", "prod"]).await;
    for role in ROLES {
        w.ok(
            "POST",
            &format!("sys/projects/myapp/environments/old-{role}"),
            &w.boss,
            None,
        )
        .await;
        w.project(&format!("gone-{role}"), &["dev"]).await;
        for email in [
            format!("extra-{role}@example.com"),
            format!("victim-{role}@example.com"),
        ] {
            w.create_user(&email).await;
        }
        for key in ["P", "D", "V", "M"] {
            w.put_secret(&format!("myapp/dev/{key}_{role}")).await;
        }
    }
    w.put_secret("myapp/dev/SEED").await;
    w.put_secret("ghost/dev/SEED").await;

    let mut failures = Vec::new();
    for row in TABLE {
        for (i, role) in ROLES.iter().enumerate() {
            // Members to remove must be members first: the add row runs for
            // admins only, so the server administrator adds them for the rest.
            let path = row.path.replace("{r}", role);
            if row.method == "DELETE" && path.contains("/members/victim-") && i > 0 {
                w.ok("POST", &path, &w.boss, Some(json!({"role": "member"})))
                    .await;
            }
            let a = w
                .call(row.method, &path, w.token(role), row.body.map(|b| b(role)))
                .await;
            let got = match a.status {
                s if s.is_success() => A,
                StatusCode::FORBIDDEN => F,
                StatusCode::NOT_FOUND => N,
                other => panic!(
                    "{} {path} as {role}: unexpected {other} {}",
                    row.method, a.json
                ),
            };
            if got != row.want[i] {
                failures.push(format!(
                    "{} {path} as {role}: want {:?}, got {got:?} ({} {})",
                    row.method, row.want[i], a.status, a.json
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A non-member cannot tell an existing project from one that does not
/// exist: the same status and the same body, on every kind of path.
#[tokio::test]
async fn non_members_see_the_same_404_for_existing_and_missing_projects() {
    let w = world().await;
    w.project("myapp", &["dev"]).await;
    w.put_secret("myapp/dev/KEY").await;
    let outsider = w.token("outsider");
    for (method, template) in [
        ("GET", "sys/projects/{p}"),
        ("DELETE", "sys/projects/{p}"),
        ("LIST", "sys/projects/{p}/environments"),
        ("POST", "sys/projects/{p}/environments/qa"),
        ("GET", "sys/projects/{p}/members"),
        ("DELETE", "sys/projects/{p}/members/admin@example.com"),
        ("GET", "secret/data/{p}/dev/KEY"),
        ("POST", "secret/data/{p}/dev/KEY"),
        ("LIST", "secret/metadata/{p}/dev"),
        ("DELETE", "secret/metadata/{p}/dev/KEY"),
        ("POST", "secret/destroy/{p}/dev/KEY"),
    ] {
        let body = Some(json!({"data": {"value": "x"}, "versions": [1]}));
        let existing = w
            .call(
                method,
                &template.replace("{p}", "myapp"),
                outsider,
                body.clone(),
            )
            .await;
        let missing = w
            .call(method, &template.replace("{p}", "nope"), outsider, body)
            .await;
        assert_eq!(
            existing.status,
            StatusCode::NOT_FOUND,
            "{method} {template}"
        );
        assert_eq!(
            (existing.status, &existing.json),
            (missing.status, &missing.json),
            "{method} {template}"
        );
    }
    // Nothing was changed by any of it.
    let a = w
        .ok("GET", "secret/data/myapp/dev/KEY", &w.root, None)
        .await;
    assert_eq!(a.json["data"]["data"]["value"], "v");
    // And the listing does not show it either.
    let a = w.ok("LIST", "sys/projects", outsider, None).await;
    assert_eq!(a.json["data"]["keys"], json!([]));
    let a = w
        .ok("LIST", "sys/projects", w.token("readonly"), None)
        .await;
    assert_eq!(a.json["data"]["keys"], json!(["myapp"]));
    assert_eq!(a.json["data"]["projects"]["myapp"]["role"], "readonly");
}

#[tokio::test]
async fn a_removed_member_loses_access_at_once() {
    let w = world().await;
    w.project("myapp", &["dev"]).await;
    w.put_secret("myapp/dev/KEY").await;
    let member = w.token("member");
    // Warm every cache there is.
    for _ in 0..3 {
        w.ok("GET", "secret/data/myapp/dev/KEY", member, None).await;
    }
    w.ok(
        "DELETE",
        "sys/projects/myapp/members/member@example.com",
        w.token("admin"),
        None,
    )
    .await;
    let a = w
        .call("GET", "secret/data/myapp/dev/KEY", member, None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.json);
    let a = w
        .call(
            "POST",
            "secret/data/myapp/dev/KEY",
            member,
            Some(json!({"data": {"value": "mine"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A demotion takes effect at once too.
    w.ok(
        "POST",
        "sys/projects/myapp/members/operator@example.com",
        w.token("admin"),
        Some(json!({"role": "readonly"})),
    )
    .await;
    let a = w
        .call(
            "POST",
            "secret/data/myapp/dev/KEY",
            w.token("operator"),
            Some(json!({"data": {"value": "x"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    // Deleting the project removes every membership with it.
    w.ok("DELETE", "secret/metadata/myapp/dev/KEY", &w.root, None)
        .await;
    w.ok("DELETE", "sys/projects/myapp", w.token("admin"), None)
        .await;
    w.ok(
        "POST",
        "sys/projects",
        &w.root,
        Some(json!({"slug": "myapp"})),
    )
    .await;
    let a = w
        .call("GET", "sys/projects/myapp", w.token("readonly"), None)
        .await;
    assert_eq!(
        a.status,
        StatusCode::NOT_FOUND,
        "re-created project kept old members"
    );
}

#[tokio::test]
async fn two_creations_of_one_slug_exactly_one_wins() {
    let w = world().await;
    for round in 0..10 {
        let slug = format!("race-{round}");
        let body = json!({"slug": slug});
        let (a, b) = tokio::join!(
            w.call("POST", "sys/projects", w.token("admin"), Some(body.clone())),
            w.call("POST", "sys/projects", &w.boss, Some(body)),
        );
        // A person needs `create` on sys/projects; give the admin user it.
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert!(
            statuses == [StatusCode::OK, StatusCode::FORBIDDEN]
                || statuses == [StatusCode::OK, StatusCode::CONFLICT],
            "{statuses:?}"
        );
    }
    // Both allowed to create: exactly one wins, the other is told why.
    w.ok(
        "POST",
        "sys/policies/acl/project-creator",
        &w.root,
        Some(json!({"policy": "path \"sys/projects\" { capabilities = [\"create\"] }"})),
    )
    .await;
    let uid = {
        let a = w
            .ok("GET", "sys/users/admin@example.com", &w.boss, None)
            .await;
        a.json["data"]["id"].as_str().unwrap().to_string()
    };
    w.ok(
        "POST",
        &format!("sys/users/{uid}"),
        &w.boss,
        Some(json!({"policies": ["project-creator"]})),
    )
    .await;
    let creator = w.login("admin@example.com").await;
    for round in 0..10 {
        let slug = format!("duel-{round}");
        let body = json!({"slug": slug});
        let (a, b) = tokio::join!(
            w.call("POST", "sys/projects", &creator, Some(body.clone())),
            w.call("POST", "sys/projects", &w.boss, Some(body)),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "{} {}",
            a.json,
            b.json
        );
        let loser = if a.status == StatusCode::CONFLICT {
            &a
        } else {
            &b
        };
        assert_eq!(
            loser.json,
            json!({"errors": [format!("project {slug} already exists")]})
        );
        // The winner, and only the winner, is the project's admin.
        let members = w
            .ok(
                "LIST",
                &format!("sys/projects/{slug}/members"),
                &w.root,
                None,
            )
            .await;
        assert_eq!(members.json["data"]["keys"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn the_last_admin_stays() {
    let w = world().await;
    w.project("myapp", &["dev"]).await;
    let admin = w.token("admin");
    // Two admins: the server administrator (creator) and admin@.
    w.ok(
        "DELETE",
        &format!("sys/projects/myapp/members/{SERVER_ADMIN}"),
        admin,
        None,
    )
    .await;
    let a = w
        .call(
            "DELETE",
            "sys/projects/myapp/members/admin@example.com",
            admin,
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.json);
    assert!(a.json["errors"][0].as_str().unwrap().contains("last admin"));
    let a = w
        .call(
            "POST",
            "sys/projects/myapp/members/admin@example.com",
            admin,
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    // Still admin.
    w.ok("LIST", "sys/projects/myapp/members", admin, None)
        .await;
    w.ok(
        "POST",
        "sys/projects/myapp/members/admin@example.com",
        admin,
        Some(json!({"role": "admin"})),
    )
    .await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let w = world().await;
    for (body, needle) in [
        (json!({}), "slug is required"),
        (json!({"slug": "My App"}), "invalid project slug"),
        (json!({"slug": "-x"}), "invalid project slug"),
        (json!({"slug": "a".repeat(64)}), "invalid project slug"),
        (
            json!({"slug": "ok", "environments": ["Prod"]}),
            "invalid environment name",
        ),
        (
            json!({"slug": "ok", "environments": []}),
            "at least one environment",
        ),
        (
            json!({"slug": "ok", "environments": "dev,../x"}),
            "invalid environment name",
        ),
        (
            json!({"slug": "ok", "mount": "nope"}),
            "not a KV v2 secrets engine",
        ),
        (
            json!({"slug": "ok", "mount": "sys"}),
            "not a KV v2 secrets engine",
        ),
        (json!({"slug": "ok", "tags": ["Bad Tag"]}), "invalid tag"),
    ] {
        let a = w
            .call("POST", "sys/projects", &w.root, Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.json);
        let message = a.json["errors"][0].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let a = w.ok("LIST", "sys/projects", &w.root, None).await;
    assert_eq!(a.json["data"]["keys"], json!([]));

    // Defaults: dev, staging, prod on `secret`; the creator (a person) is admin.
    let a = w
        .ok(
            "POST",
            "sys/projects",
            &w.boss,
            Some(json!({"slug": "myapp"})),
        )
        .await;
    assert_eq!(
        a.json["data"]["environments"],
        json!(["dev", "staging", "prod"])
    );
    assert_eq!(a.json["data"]["mount"], "secret");
    assert_eq!(a.json["data"]["role"], "admin");
    assert_eq!(a.json["data"]["created_by"], SERVER_ADMIN);
    let a = w
        .call(
            "POST",
            "sys/projects",
            &w.root,
            Some(json!({"slug": "myapp"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT);

    for (method, path, body, status) in [
        ("POST", "sys/projects/myapp/environments/Dev", None, 400),
        ("POST", "sys/projects/myapp/environments/dev", None, 409),
        (
            "POST",
            "sys/projects/myapp/environments",
            Some(json!({})),
            400,
        ),
        ("DELETE", "sys/projects/myapp/environments/qa", None, 404),
        (
            "POST",
            "sys/projects/myapp/members/nobody@example.com",
            Some(json!({"role": "member"})),
            404,
        ),
        (
            "POST",
            "sys/projects/myapp/members/readonly@example.com",
            Some(json!({"role": "owner"})),
            400,
        ),
        (
            "POST",
            "sys/projects/myapp/members/readonly@example.com",
            Some(json!({})),
            400,
        ),
        (
            "DELETE",
            "sys/projects/myapp/members/readonly@example.com",
            None,
            404,
        ),
    ] {
        let a = w.call(method, path, &w.boss, body).await;
        assert_eq!(a.status.as_u16(), status, "{method} {path}: {}", a.json);
        assert!(!a.json["errors"][0].as_str().unwrap_or_default().is_empty() || status == 404);
    }
    let a = w.ok("GET", "sys/projects/myapp", &w.boss, None).await;
    assert_eq!(
        a.json["data"]["environments"],
        json!(["dev", "staging", "prod"])
    );
}

/// Deleting an environment or a project that still holds secrets is
/// refused unless asked to purge them; a purge removes them for good, so a
/// later project of the same name starts empty.
#[tokio::test]
async fn deleting_with_secrets_needs_purge() {
    let w = world().await;
    w.project("myapp", &["dev", "prod"]).await;
    w.put_secret("myapp/dev/A").await;
    w.put_secret("myapp/dev/deep/B").await;
    w.put_secret("myapp/prod/C").await;
    w.put_secret("myappx/dev/KEEP").await;
    let admin = w.token("admin");
    let a = w
        .call("DELETE", "sys/projects/myapp/environments/dev", admin, None)
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.json);
    assert!(
        a.json["errors"][0]
            .as_str()
            .unwrap()
            .contains("2 secret(s)")
    );
    w.ok(
        "DELETE",
        "sys/projects/myapp/environments/dev?purge=true",
        admin,
        None,
    )
    .await;
    let a = w
        .call("GET", "secret/data/myapp/dev/deep/B", &w.root, None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    w.ok("GET", "secret/data/myapp/prod/C", &w.root, None).await;

    let a = w.call("DELETE", "sys/projects/myapp", admin, None).await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    w.ok("GET", "sys/projects/myapp", admin, None).await;
    w.ok("DELETE", "sys/projects/myapp?purge=true", admin, None)
        .await;
    let a = w
        .call("GET", "secret/data/myapp/prod/C", &w.root, None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    let a = w.call("GET", "sys/projects/myapp", &w.root, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A neighbour whose name starts the same is untouched.
    w.ok("GET", "secret/data/myappx/dev/KEEP", &w.root, None)
        .await;
}

/// R-KV-2: every version records who wrote it (never a token).
#[tokio::test]
async fn history_records_who_changed_what() {
    let w = world().await;
    w.project("myapp", &["dev"]).await;
    w.ok(
        "POST",
        "secret/data/myapp/dev/DB_URL",
        w.token("member"),
        Some(json!({"data": {"value": "one"}})),
    )
    .await;
    w.ok(
        "POST",
        "secret/data/myapp/dev/DB_URL",
        &w.root,
        Some(json!({"data": {"value": "two"}})),
    )
    .await;
    let a = w
        .ok(
            "GET",
            "secret/metadata/myapp/dev/DB_URL",
            w.token("readonly"),
            None,
        )
        .await;
    let versions = &a.json["data"]["versions"];
    assert_eq!(versions["1"]["created_by"], "member@example.com");
    let by_root = versions["2"]["created_by"].as_str().unwrap();
    assert!(by_root.starts_with("root ("), "{by_root}");
    assert!(!by_root.contains(&w.root));
}

/// The answer to a LIST with a body-less request through the raw router,
/// for the service account: read and list only, never a write.
#[tokio::test]
async fn service_accounts_stay_read_only_on_projects() {
    let w = world().await;
    w.project("myapp", &["dev"]).await;
    let sa = w.token("sa");
    for (method, path) in [
        ("DELETE", "sys/projects/myapp"),
        ("POST", "sys/projects/myapp/environments/qa"),
        ("POST", "sys/projects/myapp/members/outsider@example.com"),
        ("POST", "secret/data/myapp/dev/X"),
    ] {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("/v1/{path}"))
            .header("x-vault-token", sa)
            .header("content-type", "application/json")
            .body(Body::from(r#"{"role":"admin","data":{"value":"x"}}"#))
            .unwrap();
        let a = w.h.send(req).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{method} {path}");
    }
    let a = w
        .call("POST", "sys/projects", sa, Some(json!({"slug": "mine"})))
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

/// R-AUTH-12: service accounts scoped by project slug, project id or tag,
/// resolved at each request (a project tagged later is in scope at once),
/// on the project's own mount.
#[tokio::test]
async fn service_account_scopes_by_id_tag_and_mount() {
    let w = world().await;
    w.ok(
        "POST",
        "sys/mounts/team-kv",
        &w.root,
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    let a = w
        .ok(
            "POST",
            "sys/projects",
            &w.root,
            Some(json!({"slug": "pay", "mount": "team-kv", "tags": ["payments"]})),
        )
        .await;
    let pay_id = a.json["data"]["id"].as_str().unwrap().to_string();
    w.ok(
        "POST",
        "sys/projects",
        &w.root,
        Some(json!({"slug": "web"})),
    )
    .await;
    w.ok(
        "POST",
        "team-kv/data/pay/prod/KEY",
        &w.root,
        Some(json!({"data": {"value": "p"}})),
    )
    .await;
    w.put_secret("web/prod/KEY").await;
    let mut tokens = Vec::new();
    for (name, scope) in [
        ("by-slug", "project:pay".to_string()),
        ("by-id", format!("project-id:{pay_id}")),
        ("by-tag", "tag:payments".to_string()),
    ] {
        let a = w
            .ok(
                "POST",
                &format!("sys/service-accounts/{name}"),
                &w.root,
                Some(json!({"scopes": [scope]})),
            )
            .await;
        tokens.push(a.json["data"]["token"].as_str().unwrap().to_string());
    }
    for token in &tokens {
        w.ok("GET", "team-kv/data/pay/prod/KEY", token, None).await;
        w.ok("GET", "sys/projects/pay", token, None).await;
        let a = w.call("GET", "secret/data/web/prod/KEY", token, None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        let a = w
            .call(
                "POST",
                "team-kv/data/pay/prod/KEY",
                token,
                Some(json!({"data": {"value": "x"}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
    // A project created later with the tag is in the tag's scope at once;
    // a deleted project leaves every scope.
    w.ok(
        "POST",
        "sys/projects",
        &w.root,
        Some(json!({"slug": "pay2", "tags": ["payments"]})),
    )
    .await;
    w.put_secret("pay2/dev/KEY").await;
    w.ok("GET", "secret/data/pay2/dev/KEY", &tokens[2], None)
        .await;
    w.ok("DELETE", "team-kv/metadata/pay/prod/KEY", &w.root, None)
        .await;
    w.ok("DELETE", "sys/projects/pay", &w.root, None).await;
    for token in &tokens[1..] {
        let a = w.call("GET", "sys/projects/pay", token, None).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
    let a = w
        .call(
            "POST",
            "sys/service-accounts/bad",
            &w.root,
            Some(json!({"scopes": ["tag:Not Valid"]})),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

/// A deleted account leaves every project it was a member of.
#[tokio::test]
async fn a_deleted_account_leaves_its_projects() {
    let w = world().await;
    w.project("myapp", &["dev"]).await;
    w.project("other", &["dev"]).await;
    w.ok("DELETE", "sys/users/member@example.com", &w.boss, None)
        .await;
    for slug in ["myapp", "other"] {
        let a = w
            .ok(
                "LIST",
                &format!("sys/projects/{slug}/members"),
                &w.root,
                None,
            )
            .await;
        let keys = a.json["data"]["keys"].as_array().unwrap();
        assert!(!keys.contains(&json!("member@example.com")), "{keys:?}");
        assert_eq!(keys.len(), 4);
    }
    // The address can be given to a new account without inheriting anything.
    w.create_user("member@example.com").await;
    let token = w.login("member@example.com").await;
    let a = w.call("GET", "sys/projects/myapp", &token, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
}

/// R-ACL-2/R-ACL-4: creating a project over a KV folder that already holds
/// secrets (written by KV clients or AppRole applications) does not hand
/// them to the creator. Only a caller who can already list the folder and
/// read its secrets may wrap it; everyone else gets a 409 and no access.
#[tokio::test]
async fn creating_a_project_does_not_take_over_existing_secrets() {
    let w = world().await;
    w.put_secret("payments/prod/stripe").await;
    w.put_secret("owned/db").await;
    w.ok(
        "POST",
        "sys/policies/acl/project-creator",
        &w.root,
        Some(
            json!({"policy": "path \"sys/projects\" { capabilities = [\"create\"] }\n\
             path \"secret/metadata/owned/*\" { capabilities = [\"list\"] }\n\
             path \"secret/data/owned/*\" { capabilities = [\"read\"] }"}),
        ),
    )
    .await;
    let uid = w.create_user("creator@example.com").await;
    w.ok(
        "POST",
        &format!("sys/users/{uid}"),
        &w.boss,
        Some(json!({"policies": ["project-creator"]})),
    )
    .await;
    let creator = w.login("creator@example.com").await;

    // Someone else's secrets: refused, and the creator still cannot read them.
    let a = w
        .call(
            "POST",
            "sys/projects",
            &creator,
            Some(json!({"slug": "payments"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.json);
    let message = a.json["errors"][0].as_str().unwrap();
    assert!(
        message.contains("secret/payments/ already holds secrets"),
        "{message}"
    );
    assert!(!message.contains("stripe"), "{message}");
    let a = w
        .call("GET", "secret/data/payments/prod/stripe", &creator, None)
        .await;
    assert!(
        a.status == StatusCode::FORBIDDEN || a.status == StatusCode::NOT_FOUND,
        "{} {}",
        a.status,
        a.json
    );
    let a = w.call("GET", "sys/projects/payments", &w.boss, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "no project was registered");

    // Secrets the creator can already read and list: allowed.
    w.ok(
        "POST",
        "sys/projects",
        &creator,
        Some(json!({"slug": "owned"})),
    )
    .await;
    // An empty folder: allowed.
    w.ok(
        "POST",
        "sys/projects",
        &creator,
        Some(json!({"slug": "fresh"})),
    )
    .await;
    // The server administrator may wrap anything.
    w.ok(
        "POST",
        "sys/projects",
        &w.boss,
        Some(json!({"slug": "payments"})),
    )
    .await;
}
