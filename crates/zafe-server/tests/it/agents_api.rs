//! Host agents (R-AGT-1): registration, the per-agent token and what it may
//! read, racing registrations, rotation and revocation.

use http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

/// `myapp` (dev, prod) and `other` (prod), each with a secret per
/// environment, and an agent `web-1` of `myapp` that may read prod.
pub(crate) async fn setup() -> (Harness, String, String) {
    let (h, root) = unsealed().await;
    let token = setup_on(&h, &root).await;
    (h, root, token)
}

/// [`setup`] on a server `h` of the caller's: the agent's token.
pub(crate) async fn setup_on(h: &Harness, root: &str) -> String {
    for (slug, envs) in [
        ("myapp", json!(["dev", "prod"])),
        ("other", json!(["prod"])),
    ] {
        let a = h
            .call(
                "POST",
                "/v1/sys/projects",
                Some(root),
                Some(json!({"slug": slug, "environments": envs})),
            )
            .await;
        assert!(a.status.is_success(), "{:?}", a.json);
    }
    for path in ["myapp/prod/DB_URL", "myapp/dev/DB_URL", "other/prod/DB_URL"] {
        let a = h
            .call(
                "POST",
                &format!("/v1/secret/data/{path}"),
                Some(root),
                Some(json!({"data": {"value": format!("value-of-{path}")}})),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    }
    create(h, root, "myapp", "web-1", json!(["prod"])).await
}

async fn make_project(h: &Harness, root: &str, slug: &str, environments: Value) {
    let a = h
        .call(
            "POST",
            "/v1/sys/projects",
            Some(root),
            Some(json!({"slug": slug, "environments": environments})),
        )
        .await;
    assert!(a.status.is_success(), "{:?}", a.json);
}

async fn register(h: &Harness, token: &str, project: &str, name: &str, envs: Value) -> Answer {
    h.call(
        "POST",
        &format!("/v1/sys/agents/{project}/{name}"),
        Some(token),
        Some(json!({ "environments": envs })),
    )
    .await
}

pub(crate) async fn create(
    h: &Harness,
    token: &str,
    project: &str,
    name: &str,
    envs: Value,
) -> String {
    let a = register(h, token, project, name, envs).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    a.json["data"]["token"].as_str().unwrap().to_string()
}

async fn read(h: &Harness, token: &str, path: &str) -> StatusCode {
    h.call("GET", &format!("/v1/{path}"), Some(token), None)
        .await
        .status
}

// R-AGT-1: the token is a 256-bit `zafe_ag_` token shown once, and it reads
// (and lists) only the environments the agent was created for.
#[tokio::test]
async fn an_agent_reads_its_environments_and_nothing_else() {
    let (h, root, agent) = setup().await;
    assert!(agent.starts_with("zafe_ag_"), "{agent}");
    assert!(agent.len() >= 8 + 43, "{agent}");
    assert_eq!(
        read(&h, &agent, "secret/data/myapp/prod/DB_URL").await,
        StatusCode::OK
    );
    let listed = h
        .call(
            "LIST",
            "/v1/secret/metadata/myapp/prod/",
            Some(&agent),
            None,
        )
        .await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.json);
    let resolved = h
        .call(
            "POST",
            "/v1/sys/resolve",
            Some(&agent),
            Some(json!({"references": ["zafe://myapp/prod/DB_URL"]})),
        )
        .await;
    assert_eq!(
        resolved.json["data"]["values"]["zafe://myapp/prod/DB_URL"], "value-of-myapp/prod/DB_URL",
        "{:?}",
        resolved.json
    );
    // Not another environment, not another project, no writes, no
    // management, nothing of the server.
    for path in [
        "secret/data/myapp/dev/DB_URL",
        "secret/data/other/prod/DB_URL",
        "sys/agents/myapp/web-1",
        "sys/policy",
        "sys/projects/myapp",
    ] {
        assert_eq!(
            read(&h, &agent, path).await,
            StatusCode::FORBIDDEN,
            "{path}"
        );
    }
    let write = h
        .call(
            "POST",
            "/v1/secret/data/myapp/prod/DB_URL",
            Some(&agent),
            Some(json!({"data": {"value": "overwritten"}})),
        )
        .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    let dev = h
        .call(
            "POST",
            "/v1/sys/resolve",
            Some(&agent),
            Some(json!({"references": ["zafe://myapp/dev/DB_URL"]})),
        )
        .await;
    assert_eq!(dev.status, StatusCode::FORBIDDEN, "{:?}", dev.json);
    assert!(!dev.json.to_string().contains("value-of"));
    // What the agent's record shows never includes the token or its hash.
    let shown = h
        .call("GET", "/v1/sys/agents/myapp/web-1", Some(&root), None)
        .await;
    assert_eq!(shown.json["data"]["environments"], json!(["prod"]));
    assert!(!shown.json.to_string().contains(&agent));
    assert!(shown.json["data"].get("token").is_none());
}

// R-AGT-1: (project, name) is unique; ten racing registrations of one name
// make exactly one agent, and only its token works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_registrations_make_exactly_one_agent() {
    let (h, root, _) = setup().await;
    let h = std::sync::Arc::new(h);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (h, root) = (h.clone(), root.clone());
            tokio::spawn(async move { register(&h, &root, "myapp", "race", json!(["prod"])).await })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        let a = task.await.unwrap();
        match a.status {
            StatusCode::OK => won.push(a.json["data"]["token"].as_str().unwrap().to_string()),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}: {:?}", a.json),
        }
    }
    assert_eq!(won.len(), 1, "exactly one registration wins");
    let listed = h
        .call("LIST", "/v1/sys/agents/myapp", Some(&root), None)
        .await;
    assert_eq!(listed.json["data"]["keys"], json!(["race", "web-1"]));
    assert_eq!(
        read(&h, &won[0], "secret/data/myapp/prod/DB_URL").await,
        StatusCode::OK
    );
    // A duplicate later is refused the same way, and changes nothing.
    let again = register(&h, &root, "myapp", "race", json!(["dev"])).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert!(again.first_error().contains("already exists"));
    assert_eq!(
        read(&h, &won[0], "secret/data/myapp/prod/DB_URL").await,
        StatusCode::OK
    );
}

// Revoking an agent refuses its token on every route at once; rotating its
// token refuses the old one; a re-created agent of the same name does not
// bring an old token back.
#[tokio::test]
async fn revoked_and_rotated_tokens_are_refused() {
    let (h, root, old) = setup().await;
    let rotated = h
        .call(
            "POST",
            "/v1/sys/agents/myapp/web-1/rotate-token",
            Some(&root),
            None,
        )
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.json);
    let new = rotated.json["data"]["token"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert_eq!(
        read(&h, &old, "secret/data/myapp/prod/DB_URL").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read(&h, &new, "secret/data/myapp/prod/DB_URL").await,
        StatusCode::OK
    );

    let revoked = h
        .call("DELETE", "/v1/sys/agents/myapp/web-1", Some(&root), None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    for path in [
        "secret/data/myapp/prod/DB_URL",
        "auth/token/lookup-self",
        "sys/leader",
    ] {
        assert_eq!(read(&h, &new, path).await, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(
        read(&h, &root, "sys/agents/myapp/web-1").await,
        StatusCode::NOT_FOUND
    );
    let recreated = create(&h, &root, "myapp", "web-1", json!(["prod"])).await;
    assert_eq!(
        read(&h, &new, "secret/data/myapp/prod/DB_URL").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        read(&h, &recreated, "secret/data/myapp/prod/DB_URL").await,
        StatusCode::OK
    );
}

// Bad registrations get a clear error and create nothing.
#[tokio::test]
async fn bad_registrations_are_refused_and_change_nothing() {
    let (h, root, _) = setup().await;
    for (project, name, envs, status, says) in [
        (
            "myapp",
            "x",
            json!(["staging"]),
            StatusCode::BAD_REQUEST,
            "no environment",
        ),
        (
            "myapp",
            "x",
            json!([]),
            StatusCode::BAD_REQUEST,
            "environments",
        ),
        (
            "myapp",
            "Bad-Name",
            json!(["prod"]),
            StatusCode::BAD_REQUEST,
            "invalid agent name",
        ),
        (
            "nope",
            "x",
            json!(["prod"]),
            StatusCode::NOT_FOUND,
            "no project",
        ),
    ] {
        let a = register(&h, &root, project, name, envs).await;
        assert_eq!(a.status, status, "{project}/{name}: {:?}", a.json);
        assert!(a.first_error().contains(says), "{:?}", a.json);
    }
    let listed = h
        .call("LIST", "/v1/sys/agents/myapp", Some(&root), None)
        .await;
    assert_eq!(listed.json["data"]["keys"], json!(["web-1"]));
    // A token without the right to manage agents cannot register one.
    let reader = token_with(&h, &root, &["default"]).await;
    let a = register(&h, &reader, "myapp", "sneaky", json!(["prod"])).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
}

// An agent belongs to the project it was registered in, not to its name: a
// project deleted and created again under the same name grants an old agent
// nothing.
#[tokio::test]
async fn a_recreated_project_grants_an_old_agent_nothing() {
    let (h, root, _) = setup().await;
    make_project(&h, &root, "tmp", json!(["prod"])).await;
    let old = create(&h, &root, "tmp", "web", json!(["prod"])).await;
    let deleted = h
        .call("DELETE", "/v1/sys/projects/tmp", Some(&root), None)
        .await;
    assert!(deleted.status.is_success(), "{:?}", deleted.json);
    make_project(&h, &root, "tmp", json!(["prod"])).await;
    let a = h
        .call(
            "POST",
            "/v1/secret/data/tmp/prod/KEY",
            Some(&root),
            Some(json!({"data": {"value": "new-project-value"}})),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    let read = h
        .call("GET", "/v1/secret/data/tmp/prod/KEY", Some(&old), None)
        .await;
    assert_eq!(read.status, StatusCode::FORBIDDEN);
    assert!(!read.json.to_string().contains("new-project-value"));
}

// ---- the agent's connection (R-AGT-2, R-AGT-3) --------------------------------

pub(crate) mod socket {
    use std::net::SocketAddr;
    use std::time::Duration;

    use futures_util::{SinkExt as _, StreamExt as _};
    use serde_json::{Value, json};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    use super::*;

    type Socket = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// Serves the harness's router on a loopback port.
    pub async fn serve(h: &Harness) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = zafe_server::http::router(h.core.clone())
            .into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    /// Connects as `token`; `Err(status)` when the server refuses the upgrade.
    pub async fn connect(addr: SocketAddr, token: &str) -> Result<Socket, u16> {
        let mut request = format!("ws://{addr}/v1/sys/agents/connect")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("x-vault-token", token.parse().unwrap());
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(e) => panic!("connect: {e}"),
        }
    }

    /// The next text frame, within five seconds; `None` when the socket closed.
    pub async fn next(socket: &mut Socket) -> Option<Value> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
                .await
                .expect("a frame within 5 s");
            match message {
                Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn send(socket: &mut Socket, seq: u64, kind: &str) {
        send_with(socket, seq, kind, json!({})).await;
    }

    pub async fn send_with(socket: &mut Socket, seq: u64, kind: &str, payload: Value) {
        let frame = json!({"v": 1, "type": kind, "id": format!("f{seq}"), "seq": seq, "ts": 0, "payload": payload});
        socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
    }
}

// R-AGT-3: a connected agent is told of a change to a secret it may read
// (its reference and version, never the value) as it happens, and of
// nothing it may not read; R-AGT-2: the server's frames are sequenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_is_told_what_changed_and_nothing_else() {
    let (h, root, agent) = setup().await;
    let addr = socket::serve(&h).await;
    assert_eq!(socket::connect(addr, &root).await.err(), Some(403));
    assert_eq!(
        socket::connect(addr, "zafe_ag_not-a-token").await.err(),
        Some(403)
    );
    let mut s = socket::connect(addr, &agent).await.unwrap();
    let hello = socket::next(&mut s).await.unwrap();
    assert_eq!(
        (hello["type"].as_str(), hello["seq"].as_u64()),
        (Some("hello"), Some(1))
    );
    assert_eq!(hello["payload"]["environments"], json!(["prod"]));
    // What the agent reports is shown as data: no control characters, capped.
    socket::send_with(
        &mut s,
        1,
        "hello",
        json!({"version": "1.2.3\u{1b}[2J", "host": format!("web-1\n<script>{}", "x".repeat(400))}),
    )
    .await;
    let shown = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let a = h
                .call("GET", "/v1/sys/agents/myapp/web-1", Some(&root), None)
                .await;
            if a.json["data"]["version"] == "1.2.3[2J" {
                break a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the agent's hello is recorded within 5 s");
    assert_eq!(shown.json["data"]["connected"], true);
    let host = shown.json["data"]["host"].as_str().unwrap();
    assert!(
        host.starts_with("web-1<script>") && host.chars().count() == 253,
        "{host}"
    );

    let write = |path: &'static str, value: &'static str| {
        let (h, root) = (&h, &root);
        async move {
            let a = h
                .call(
                    "POST",
                    &format!("/v1/secret/data/{path}"),
                    Some(root),
                    Some(json!({"data": {"value": value}})),
                )
                .await;
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        }
    };
    write("myapp/dev/DB_URL", "dev-value-never-sent").await;
    write("other/prod/DB_URL", "other-value-never-sent").await;
    write("myapp/prod/DB_URL", "prod-value-never-sent").await;
    let changed = socket::next(&mut s).await.unwrap();
    assert_eq!(changed["type"], "changed", "{changed}");
    assert_eq!(
        changed["seq"], 2,
        "nothing was sent for dev or another project"
    );
    assert_eq!(changed["payload"]["reference"], "zafe://myapp/prod/DB_URL");
    assert_eq!(changed["payload"]["version"], 2);
    assert!(!changed.to_string().contains("never-sent"));
}

// R-AGT-2: the agent's frames must come in sequence: a duplicate or a
// replay is dropped, an unknown type is refused, a frame that skips ahead
// ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_frames_end_the_connection() {
    let (h, _root, agent) = setup().await;
    let addr = socket::serve(&h).await;
    let mut s = socket::connect(addr, &agent).await.unwrap();
    assert_eq!(socket::next(&mut s).await.unwrap()["type"], "hello");
    socket::send(&mut s, 1, "hello").await;
    socket::send(&mut s, 1, "hello").await;
    socket::send(&mut s, 2, "launch-missiles").await;
    let refused = socket::next(&mut s).await.unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"]["message"], "unknown frame type");
    socket::send(&mut s, 9, "event").await;
    let error = socket::next(&mut s).await.unwrap();
    assert_eq!(error["type"], "error");
    assert!(
        error["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("out-of-order"),
        "{error}"
    );
    assert!(socket::next(&mut s).await.is_none(), "the connection ends");
}

// Revoking an agent ends its connection at once, and it cannot connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_agent_closes_its_connection() {
    let (h, root, agent) = setup().await;
    let addr = socket::serve(&h).await;
    let mut s = socket::connect(addr, &agent).await.unwrap();
    assert_eq!(socket::next(&mut s).await.unwrap()["type"], "hello");
    let a = h
        .call("DELETE", "/v1/sys/agents/myapp/web-1", Some(&root), None)
        .await;
    assert_eq!(a.status, StatusCode::NO_CONTENT);
    let bye = socket::next(&mut s).await.unwrap();
    assert_eq!(
        (bye["type"].as_str(), bye["payload"]["reason"].as_str()),
        (Some("bye"), Some("revoked"))
    );
    assert!(socket::next(&mut s).await.is_none(), "the connection ends");
    assert_eq!(socket::connect(addr, &agent).await.err(), Some(403));
    // A session that ended leaves nothing marked connected.
    let again = create(&h, &root, "myapp", "web-2", json!(["prod"])).await;
    let mut s = socket::connect(addr, &again).await.unwrap();
    socket::next(&mut s).await.unwrap();
    drop(s);
    let gone = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        loop {
            let a = h
                .call("GET", "/v1/sys/agents/myapp/web-2", Some(&root), None)
                .await;
            if a.json["data"]["connected"] == false {
                break a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ended session is no longer connected within 5 s");
    assert_eq!(gone.json["data"]["host"], Value::Null);
}

// A project's agents are listed page by page (`limit`, `after`, `next`), so that a project with
// more agents than one answer holds is listed whole; a bad limit is a clear 400.
#[tokio::test]
async fn agents_are_listed_page_by_page() {
    let (h, root, _) = setup().await;
    for name in ["web-2", "web-3", "web-4", "web-5"] {
        create(&h, &root, "myapp", name, json!(["prod"])).await;
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let a = h
            .call(
                "GET",
                &format!("/v1/sys/agents/myapp?list=true&limit=2&after={after}"),
                Some(&root),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
        let keys: Vec<String> = serde_json::from_value(a.json["data"]["keys"].clone()).unwrap();
        assert!(keys.len() <= 2);
        seen.extend(keys);
        match a.json["data"]["next"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, ["web-1", "web-2", "web-3", "web-4", "web-5"]);
    for bad in ["0", "1001", "many"] {
        let a = h
            .call(
                "GET",
                &format!("/v1/sys/agents/myapp?list=true&limit={bad}"),
                Some(&root),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
}
