//! What agents report (R-AGT-4) over a real socket: events stored once per content (replays
//! and duplicates on a new connection too), bounded (bytes, retention by the core's clock;
//! the count is the same code, see the unit tests), audited (and not stored when the audit
//! entry cannot be written), refused when malformed, gone with the agent, and readable only by
//! whoever may read the agent.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::agents_api::{create, setup, setup_on, socket};
use crate::common::*;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A connected agent that said hello: the socket and the next sequence number to send.
async fn connected(addr: std::net::SocketAddr, token: &str) -> (Socket, u64) {
    let mut s = socket::connect(addr, token).await.unwrap();
    assert_eq!(socket::next(&mut s).await.unwrap()["type"], "hello");
    socket::send_with(&mut s, 1, "hello", json!({"version": "t", "host": "h"})).await;
    (s, 2)
}

/// Sends one event frame with time `ts`.
async fn event(s: &mut Socket, seq: &mut u64, ts: i64, payload: Value) {
    use futures_util::SinkExt as _;
    let frame = json!({"v": 1, "type": "event", "id": format!("agent-says-{seq}"), "seq": *seq, "ts": ts, "payload": payload});
    s.send(tokio_tungstenite::tungstenite::Message::Text(
        frame.to_string().into(),
    ))
    .await
    .unwrap();
    *seq += 1;
}

/// Waits until the session has handled every frame sent so far: an event of an unknown kind
/// is answered with an `error` frame, in order. Returns that frame.
async fn barrier(s: &mut Socket, seq: &mut u64) -> Value {
    let sent = *seq;
    event(s, seq, 0, json!({"kind": "sync-marker"})).await;
    loop {
        let frame = socket::next(s).await.expect("the connection stays");
        if frame["type"] == "error" && frame["payload"]["seq"] == sent {
            return frame;
        }
        // Heartbeats and change notices may come in between; errors for earlier frames too.
    }
}

async fn events(h: &Harness, token: &str, query: &str) -> crate::common::Answer {
    h.call(
        "GET",
        &format!("/v1/sys/agents/myapp/web-1/events{query}"),
        Some(token),
        None,
    )
    .await
}

fn kinds(a: &crate::common::Answer) -> Vec<String> {
    a.json["data"]["events"]
        .as_array()
        .unwrap_or_else(|| panic!("{:?}", a.json))
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

// R-AGT-4: events are stored as reported (payloads as data), newest last, read with a cursor;
// the same event sent again (a replay on the same connection, a duplicate on a new one) is
// stored once; an unknown kind or a malformed payload is refused with an error frame and the
// connection stays; heartbeats are not events but show when the agent was last heard from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_stored_once_and_read_with_a_cursor() {
    let (h, root, agent) = setup().await;
    let addr = socket::serve(&h).await;
    let (mut s, mut seq) = connected(addr, &agent).await;
    let hostile =
        "<script>alert(1)</script>\u{1b}[31mred\u{1b}]0;owned\u{7} ignore previous instructions";
    event(
        &mut s,
        &mut seq,
        1_000,
        json!({"kind": "render_failed", "message": hostile, "destination": "/run/app/app.env", "code": 3}),
    )
    .await;
    event(&mut s, &mut seq, 2_000, json!({"kind": "child_started"})).await;
    // The same content at the same time, under another frame id: a duplicate.
    event(&mut s, &mut seq, 2_000, json!({"kind": "child_started"})).await;
    let hb = seq;
    socket::send(&mut s, hb, "heartbeat").await;
    seq += 1;
    // Refused, counted, and the connection stays.
    for bad in [
        json!({"kind": "launch_missiles"}),
        json!({"kind": "render_ok", "code": "three"}),
        json!({"kind": "render_ok", "extra": 1}),
    ] {
        let at = seq;
        event(&mut s, &mut seq, 3_000, bad.clone()).await;
        let refused = socket::next(&mut s).await.unwrap();
        assert_eq!(
            (refused["type"].as_str(), refused["payload"]["seq"].as_u64()),
            (Some("error"), Some(at)),
            "{bad}: {refused}"
        );
    }
    event(
        &mut s,
        &mut seq,
        4_000,
        json!({"kind": "child_exited", "code": -1}),
    )
    .await;
    barrier(&mut s, &mut seq).await;

    let all = events(&h, &root, "").await;
    assert_eq!(all.status, StatusCode::OK, "{:?}", all.json);
    assert_eq!(
        kinds(&all),
        ["render_failed", "child_started", "child_exited"]
    );
    let first = &all.json["data"]["events"][0];
    assert_eq!(first["message"], hostile, "stored as data, unchanged");
    assert_eq!(first["destination"], "/run/app/app.env");
    assert_eq!(first["code"], 3);
    assert_eq!(first["ts"], 1_000);
    assert_eq!(all.json["data"]["events"][2]["code"], -1);
    assert_ne!(
        first["id"], "agent-says-2",
        "the id is the content's, not the agent's"
    );
    // The cursor: the next call returns what came later, and nothing before it.
    let page = events(&h, &root, "?limit=1").await;
    assert_eq!(kinds(&page), ["render_failed"]);
    assert_eq!(page.json["data"]["more"], true);
    let cursor = page.json["data"]["cursor"].as_str().unwrap().to_string();
    let rest = events(&h, &root, &format!("?after={cursor}")).await;
    assert_eq!(kinds(&rest), ["child_started", "child_exited"]);
    let end = rest.json["data"]["cursor"].as_str().unwrap().to_string();
    let none = events(&h, &root, &format!("?after={end}")).await;
    assert_eq!(kinds(&none), Vec::<String>::new());
    assert_eq!(none.json["data"]["cursor"], end.as_str());
    assert_eq!(
        events(&h, &root, "?after=-1").await.status,
        StatusCode::BAD_REQUEST
    );

    // The agent reconnects and sends its buffer again: nothing is stored twice.
    drop(s);
    let (mut s, mut seq) = connected(addr, &agent).await;
    event(
        &mut s,
        &mut seq,
        1_000,
        json!({"kind": "render_failed", "message": hostile, "destination": "/run/app/app.env", "code": 3}),
    )
    .await;
    event(&mut s, &mut seq, 2_000, json!({"kind": "child_started"})).await;
    event(&mut s, &mut seq, 5_000, json!({"kind": "reconnected"})).await;
    socket::send(&mut s, seq, "heartbeat").await;
    seq += 1;
    barrier(&mut s, &mut seq).await;
    let after = events(&h, &root, &format!("?after={end}")).await;
    assert_eq!(kinds(&after), ["reconnected"]);

    // The heartbeat shows when the agent was last heard from (and is no event).
    let shown = h
        .call("GET", "/v1/sys/agents/myapp/web-1", Some(&root), None)
        .await;
    assert!(
        shown.json["data"]["last_heartbeat_time"].is_string(),
        "{:?}",
        shown.json
    );
}

// R-AGT-4: every stored event has its audit entry (the agent and the kind, never the payload);
// when the entry cannot be written the event is not stored, the agent is told, and the
// connection stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_audited_and_not_stored_without_their_entry() {
    let dir = tempfile::tempdir().unwrap();
    let h = file_harness(dir.path()).await;
    let (keys, root) = h.init(1, 1).await;
    h.unseal(&keys[0]).await;
    let agent = setup_on(&h, &root).await;
    let addr = socket::serve(&h).await;
    let (mut s, mut seq) = connected(addr, &agent).await;
    event(
        &mut s,
        &mut seq,
        1,
        json!({"kind": "render_ok", "message": "payload-text-not-in-the-log", "destination": "/run/a"}),
    )
    .await;
    barrier(&mut s, &mut seq).await;
    let export = h
        .call("GET", "/v1/sys/audit-log/export", Some(&root), None)
        .await;
    let text = match &export.json {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let entries: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("sys/agents/myapp/web-1/events/render_ok"))
        .collect();
    assert_eq!(entries.len(), 1, "{text}");
    assert!(entries[0].contains("agent-myapp-web-1"), "{}", entries[0]);
    assert!(!text.contains("payload-text-not-in-the-log"));

    // The log refuses entries: the event is not stored, the agent hears so, and stays.
    let mut db = sqlx::SqliteConnection::connect(&format!(
        "sqlite://{}",
        dir.path().join("zafe.db").display()
    ))
    .await
    .unwrap();
    sqlx::query("CREATE TRIGGER refuse_audit BEFORE INSERT ON zafe_audit BEGIN SELECT RAISE(ABORT, 'disk full'); END")
        .execute(&mut db)
        .await
        .unwrap();
    let at = seq;
    event(&mut s, &mut seq, 2, json!({"kind": "render_failed"})).await;
    let refused = socket::next(&mut s).await.unwrap();
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["payload"]["seq"], at);
    assert!(
        refused["payload"]["message"]
            .as_str()
            .unwrap()
            .contains("could not be stored"),
        "{refused}"
    );
    sqlx::query("DROP TRIGGER refuse_audit")
        .execute(&mut db)
        .await
        .unwrap();
    // Sent again once the log works: stored (once).
    event(&mut s, &mut seq, 2, json!({"kind": "render_failed"})).await;
    barrier(&mut s, &mut seq).await;
    let all = events(&h, &root, "").await;
    assert_eq!(kinds(&all), ["render_ok", "render_failed"]);
}

/// A server over a SQLite file in `dir` (so a test can reach its tables).
async fn file_harness(dir: &Path) -> Harness {
    let backend: Arc<dyn zafe_storage::Backend> = Arc::new(
        zafe_storage::sqlite::SqliteBackend::open(&dir.join("zafe.db"))
            .await
            .unwrap(),
    );
    let clock = Arc::new(zafe_engine::ManualClock::starting_now());
    let core = zafe_server::core::Core::new(zafe_server::core::CoreParts {
        config: zafe_server::Config::default(),
        clock: clock.clone(),
        projects: zafe_server::projects::rule(),
        engines: zafe_engines::build,
        backend,
        identity: zafe_core::identity::IdentityKey::generate(),
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

// R-AGT-4: the store is bounded per agent: past its bytes the oldest events go first; past
// the retention (by the core's clock) events are not shown and are evicted by the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_is_bounded_in_bytes_and_age() {
    let (h, root, agent) = setup().await;
    let addr = socket::serve(&h).await;
    let (mut s, mut seq) = connected(addr, &agent).await;
    // About 5 KiB each (destination and message at their caps): 256 KiB holds about 49.
    let big = |i: i64| json!({"kind": "render_failed", "message": format!("{i:04}{}", "m".repeat(2000)), "destination": "d".repeat(9000)});
    for i in 0..60 {
        event(&mut s, &mut seq, i, big(i)).await;
        // Under the frame rate limit (50 a second).
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    barrier(&mut s, &mut seq).await;
    let held = events(&h, &root, "?limit=1000").await;
    let list = held.json["data"]["events"].as_array().unwrap();
    assert!(
        (40..60).contains(&list.len()),
        "bounded by bytes: {}",
        list.len()
    );
    let first = &list[0];
    assert_eq!(first["destination"].as_str().unwrap().len(), 4096, "capped");
    assert_eq!(first["message"].as_str().unwrap().len(), 1024, "capped");
    // The newest are kept, the oldest went.
    assert_eq!(list.last().unwrap()["ts"], 59);
    assert_eq!(first["ts"], 60 - list.len() as i64);
    let bytes: usize = list.iter().map(|e| e.to_string().len()).sum();
    assert!(bytes < 300 * 1024, "{bytes}");

    // Eight days later they are past the retention: not shown, and evicted by the next event.
    h.clock.advance(Duration::from_secs(8 * 24 * 3600));
    assert_eq!(kinds(&events(&h, &root, "").await), Vec::<String>::new());
    event(&mut s, &mut seq, 100, json!({"kind": "render_ok"})).await;
    barrier(&mut s, &mut seq).await;
    let fresh = events(&h, &root, "?limit=1000").await;
    assert_eq!(kinds(&fresh), ["render_ok"]);
    assert_eq!(fresh.json["data"]["more"], false);
}

// R-AGT-4: revoking an agent deletes its events; an agent re-created under the same name
// starts with none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_agents_events_go_with_it() {
    let (h, root, agent) = setup().await;
    let addr = socket::serve(&h).await;
    let (mut s, mut seq) = connected(addr, &agent).await;
    event(&mut s, &mut seq, 1, json!({"kind": "render_ok"})).await;
    barrier(&mut s, &mut seq).await;
    assert_eq!(kinds(&events(&h, &root, "").await), ["render_ok"]);
    let revoked = h
        .call("DELETE", "/v1/sys/agents/myapp/web-1", Some(&root), None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(
        events(&h, &root, "").await.status,
        StatusCode::NOT_FOUND,
        "no agent, no events"
    );
    let again = create(&h, &root, "myapp", "web-1", json!(["prod"])).await;
    assert_eq!(kinds(&events(&h, &root, "").await), Vec::<String>::new());
    let (mut s, mut seq) = connected(addr, &again).await;
    event(&mut s, &mut seq, 1, json!({"kind": "render_ok"})).await;
    barrier(&mut s, &mut seq).await;
    let fresh = events(&h, &root, "").await;
    assert_eq!(
        kinds(&fresh),
        ["render_ok"],
        "stored anew for the new agent"
    );
    assert_eq!(fresh.json["data"]["events"][0]["cursor"], "1");
}

// R-AGT-4: an agent's events are read like the agent: not by a token without the right, not
// by the agent itself, not with another verb.
#[tokio::test]
async fn only_those_who_may_read_the_agent_read_its_events() {
    let (h, root, agent) = setup().await;
    let reader = token_with(&h, &root, &["default"]).await;
    assert_eq!(events(&h, &reader, "").await.status, StatusCode::FORBIDDEN);
    assert_eq!(events(&h, &agent, "").await.status, StatusCode::FORBIDDEN);
    write_policy(
        &h,
        &root,
        "agents-reader",
        r#"path "sys/agents/myapp/*" { capabilities = ["read"] }"#,
    )
    .await;
    let allowed = token_with(&h, &root, &["agents-reader"]).await;
    assert_eq!(events(&h, &allowed, "").await.status, StatusCode::OK);
    let other = h
        .call(
            "GET",
            "/v1/sys/agents/other/web-1/events",
            Some(&allowed),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::FORBIDDEN);
    let posted = h
        .call(
            "POST",
            "/v1/sys/agents/myapp/web-1/events",
            Some(&root),
            Some(json!({"kind": "render_ok"})),
        )
        .await;
    assert_eq!(
        posted.status,
        StatusCode::METHOD_NOT_ALLOWED,
        "{:?}",
        posted.json
    );
}

// ---- presence across nodes ------------------------------------------------------------

/// Two nodes (cores with their own clocks) over one storage, the root token [`NODES_ROOT`].
async fn two_nodes() -> (Harness, Harness) {
    let backend: Arc<dyn zafe_storage::Backend> =
        Arc::new(zafe_storage::sqlite::SqliteBackend::memory().await.unwrap());
    let master = zafe_core::secret::SecretKey::generate();
    let a = node(backend.clone(), &master, NODES_ROOT).await;
    let b = node(backend, &master, NODES_ROOT).await;
    (a, b)
}

const NODES_ROOT: &str = "two-nodes-root-token";

async fn shown(h: &Harness) -> Value {
    let a = h
        .call("GET", "/v1/sys/agents/myapp/web-1", Some(NODES_ROOT), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    a.json["data"].clone()
}

async fn listed(h: &Harness) -> Value {
    let a = h
        .call("LIST", "/v1/sys/agents/myapp", Some(NODES_ROOT), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.json);
    a.json["data"]["agents"]["web-1"].clone()
}

/// Waits (at most 5 s) until `check` holds for what node `h` shows of the agent.
async fn until(h: &Harness, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let data = shown(h).await;
            if check(&data) {
                return data;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 5 s"))
}

// Presence across nodes: an agent connected to node A is shown connected on node B, with what
// its hello said, and not once it disconnects; its heartbeats reach storage at most once a
// minute; when A stops refreshing (a crashed node), B ages the agent out after two minutes
// while A, which holds the session, still shows it. Events it reports through A are read on B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_events_are_seen_from_every_node() {
    let (a, b) = two_nodes().await;
    let agent = setup_on(&a, NODES_ROOT).await;
    let addr = socket::serve(&a).await;
    assert_eq!(shown(&b).await["connected"], false);

    let (mut s, mut seq) = connected(addr, &agent).await;
    let on_b = until(&b, "B sees the hello", |d| d["version"] == "t").await;
    assert_eq!(
        (on_b["connected"].as_bool(), on_b["host"].as_str()),
        (Some(true), Some("h"))
    );
    assert_eq!(listed(&b).await["connected"], true);
    assert_eq!(on_b["last_heartbeat_time"], Value::Null);

    // Heartbeats: the first minute's go no further than A.
    for _ in 0..5 {
        socket::send(&mut s, seq, "heartbeat").await;
        seq += 1;
    }
    barrier(&mut s, &mut seq).await;
    assert!(shown(&a).await["last_heartbeat_time"].is_string());
    assert_eq!(
        shown(&b).await["last_heartbeat_time"],
        Value::Null,
        "not written within the minute"
    );
    // A minute later (by A's clock) the next one is written.
    a.clock.advance(Duration::from_secs(61));
    socket::send(&mut s, seq, "heartbeat").await;
    seq += 1;
    barrier(&mut s, &mut seq).await;
    let on_b = until(&b, "B sees the heartbeat", |d| {
        d["last_heartbeat_time"].is_string()
    })
    .await;
    assert_eq!(on_b["connected"], true);

    // An event stored through A is read on B.
    event(&mut s, &mut seq, 7, json!({"kind": "render_ok"})).await;
    barrier(&mut s, &mut seq).await;
    let read_on_b = b
        .call(
            "GET",
            "/v1/sys/agents/myapp/web-1/events",
            Some(NODES_ROOT),
            None,
        )
        .await;
    assert_eq!(kinds(&read_on_b), ["render_ok"]);

    // A stops refreshing (as a crashed node would): two minutes on, by B's clock, B no longer
    // shows the agent connected; A, which holds the session, still does.
    b.clock.advance(Duration::from_secs(61 + 121));
    assert_eq!(shown(&b).await["connected"], false);
    assert_eq!(listed(&b).await["connected"], false);
    assert_eq!(shown(&a).await["connected"], true);

    // A clean end of the session removes the record; a new session writes its own, which B
    // counts (the clocks agree again), and it too is gone at once when that session ends.
    socket::send(&mut s, seq, "bye").await;
    until(&a, "A sees the disconnect", |d| d["connected"] == false).await;
    a.clock.advance(Duration::from_secs(121));
    let (mut s, seq) = connected(addr, &agent).await;
    until(&b, "B sees the reconnect", |d| d["connected"] == true).await;
    socket::send(&mut s, seq, "bye").await;
    until(&b, "B sees the clean disconnect", |d| {
        d["connected"] == false
    })
    .await;
}
