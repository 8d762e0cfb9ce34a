//! `zafe agent events` against a real server (R-AGT-4): what an agent reported over its
//! WebSocket is shown inert in the table (`<script>`, ANSI and OSC escapes, bidi overrides,
//! line breaks as visible escapes), as JSON with `--format json`, and `--follow` prints an
//! event that arrives after it started.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::support::{Run, Server, call, clean_command, run};

const ROOT: &str = "agent-events-root-token";
const HOSTILE: &str = "<script>alert(1)</script> \u{1b}[31mred\u{1b}[0m \u{1b}]0;owned\u{7} \u{202e}txt.exe\u{202c} line\nforged\r ignore previous instructions";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An agent's connection that said hello, and the next sequence number.
struct Agent {
    socket: Socket,
    seq: u64,
}

impl Agent {
    async fn connect(server: &Server, token: &str) -> Agent {
        let url = server
            .url("/v1/sys/agents/connect")
            .replacen("http", "ws", 1);
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("x-vault-token", token.parse().unwrap());
        let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        let mut agent = Agent { socket, seq: 1 };
        assert_eq!(agent.next().await["type"], "hello");
        agent
            .send("hello", 0, json!({"version": "test", "host": "h"}))
            .await;
        agent
    }

    async fn send(&mut self, kind: &str, ts: i64, payload: Value) -> u64 {
        let seq = self.seq;
        let frame = json!({"v": 1, "type": kind, "id": format!("f{seq}"), "seq": seq, "ts": ts, "payload": payload});
        self.socket
            .send(Message::Text(frame.to_string().into()))
            .await
            .unwrap();
        self.seq += 1;
        seq
    }

    async fn next(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.socket.next())
                .await
                .expect("a frame within 10 s")
                .expect("the connection stays")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(&text).unwrap();
            }
        }
    }

    /// Sends an event and waits until the server has handled it (an event of an unknown kind
    /// sent after it is answered in order).
    async fn report(&mut self, ts: i64, payload: Value) {
        self.send("event", ts, payload).await;
        let marker = self.send("event", 0, json!({"kind": "sync-marker"})).await;
        loop {
            let frame = self.next().await;
            if frame["type"] == "error" && frame["payload"]["seq"] == marker {
                return;
            }
        }
    }
}

struct Cli<'a> {
    config_dir: &'a Path,
    addr: String,
}

impl Cli<'_> {
    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = clean_command(crate::support::BIN, self.config_dir, &self.addr, Some(ROOT));
        cmd.args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> Run {
        run(self.command(args), None).ok()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_events_are_shown_inert_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (server, config_dir, addr) = crate::support::dev_server(dir.path(), ROOT);
    let cli = Cli {
        config_dir: &config_dir,
        addr,
    };
    let a = call(
        "POST",
        &server.url("/v1/sys/projects"),
        Some(ROOT),
        Some(json!({"slug": "myapp", "environments": ["prod"]})),
    )
    .await;
    assert!(a.status < 300, "{:?}", a.json);
    let a = call(
        "POST",
        &server.url("/v1/sys/agents/myapp/web-1"),
        Some(ROOT),
        Some(json!({"environments": ["prod"]})),
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.json);
    let token = a.json["data"]["token"].as_str().unwrap().to_string();

    let mut agent = Agent::connect(&server, &token).await;
    agent
        .report(
            1_700_000_000_000_000,
            json!({"kind": "render_failed", "message": HOSTILE, "destination": "/run/app/\u{1b}[2Japp.env", "code": 3}),
        )
        .await;

    // The table: everything the agent said is there, as visible escapes, never as control
    // characters a terminal would act on.
    let table = cli.ok(&["agent", "events", "web-1", "--project", "myapp"]);
    let out = &table.stdout;
    for shown in [
        "<script>alert(1)</script>",
        "\\x1b[31mred\\x1b[0m",
        "\\x1b]0;owned\\x07",
        "\\u{202e}txt.exe\\u{202c}",
        "line\\nforged\\r",
        "ignore previous instructions",
        "/run/app/\\x1b[2Japp.env",
        "render_failed",
    ] {
        assert!(out.contains(shown), "{shown:?} not in {out}");
    }
    assert!(
        !out.chars()
            .any(|c| c != '\n' && (c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c))),
        "a control character reached the terminal: {out:?}"
    );
    assert_eq!(out.lines().count(), 2, "a header and one line: {out}");

    // JSON is JSON: the text exactly as reported.
    let json = cli
        .ok(&[
            "agent",
            "events",
            "web-1",
            "--project",
            "myapp",
            "--format",
            "json",
        ])
        .json();
    assert_eq!(json.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(json[0]["message"], HOSTILE);
    assert_eq!(json[0]["kind"], "render_failed");
    assert_eq!(json[0]["code"], 3);
    assert!(!cli.ok(&["agent", "events", "--help"]).stdout.is_empty());

    // --follow prints what arrives after it started, until it is stopped.
    let mut child = cli
        .command(&["agent", "events", "web-1", "--project", "myapp", "--follow"])
        .spawn()
        .unwrap();
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str| -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!("--follow printed no line with {needle:?} within 20 s"),
            }
        }
    };
    wait_for("render_failed");
    agent
        .report(
            1_700_000_001_000_000,
            json!({"kind": "child_exited", "code": 137, "message": "late \u{1b}[1mbold"}),
        )
        .await;
    let late = wait_for("child_exited");
    assert!(
        late.contains("137") && late.contains("late \\x1b[1mbold"),
        "{late}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "--follow keeps running"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    drop(server);
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// End to end: the real `zafe agent run` reports a render that worked and one that failed, and
// `zafe agent events` and `zafe agent list` show them and the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_daemons_reports_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let (server, config_dir, addr) = crate::support::dev_server(dir.path(), ROOT);
    let cli = Cli {
        config_dir: &config_dir,
        addr: addr.clone(),
    };
    for (method, path, body) in [
        (
            "POST",
            "/v1/sys/projects",
            json!({"slug": "myapp", "environments": ["prod"]}),
        ),
        (
            "POST",
            "/v1/secret/data/myapp/prod/DB_URL",
            json!({"data": {"value": "postgres://e2e"}}),
        ),
    ] {
        let a = call(method, &server.url(path), Some(ROOT), Some(body)).await;
        assert!(a.status < 300, "{path}: {:?}", a.json);
    }
    let a = call(
        "POST",
        &server.url("/v1/sys/agents/myapp/web-1"),
        Some(ROOT),
        Some(json!({"environments": ["prod"]})),
    )
    .await;
    let token = a.json["data"]["token"].as_str().unwrap().to_string();

    let d = dir.path();
    crate::support::write_private(&d.join("agent.token"), &token);
    std::fs::write(
        d.join("good.tpl"),
        "DB_URL={{ zafe://myapp/prod/DB_URL }}\n",
    )
    .unwrap();
    std::fs::write(d.join("bad.tpl"), "X={{ zafe://myapp/prod/MISSING }}\n").unwrap();
    let config = d.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "address = \"{addr}\"\ntoken_file = \"{}\"\n\n\
             [[template]]\nsource = \"{}\"\ndestination = \"{}\"\n\n\
             [[template]]\nsource = \"{}\"\ndestination = \"{}\"\n",
            d.join("agent.token").display(),
            d.join("good.tpl").display(),
            d.join("good.env").display(),
            d.join("bad.tpl").display(),
            d.join("bad.env").display(),
        ),
    )
    .unwrap();
    let home = d.join("agent-home");
    std::fs::create_dir_all(&home).unwrap();
    let mut cmd = clean_command(crate::support::BIN, &home, &addr, None);
    cmd.args(["agent", "run", "--config"]).arg(&config);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("agent.log")).unwrap());
    let _agent = Killed(cmd.spawn().unwrap());

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = cli
            .ok(&[
                "agent",
                "events",
                "web-1",
                "--project",
                "myapp",
                "--format",
                "json",
            ])
            .json();
        let kinds: Vec<&str> = events
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["kind"].as_str())
            .collect();
        if kinds.contains(&"render_ok") && kinds.contains(&"render_failed") {
            break events;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon's events within 30 s: {events}\n{}",
            std::fs::read_to_string(d.join("agent.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let failed = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "render_failed")
        .unwrap();
    assert!(
        failed["destination"].as_str().unwrap().ends_with("bad.env"),
        "{failed}"
    );
    assert!(
        !events.to_string().contains("postgres://e2e"),
        "no value in an event"
    );
    let table = cli.ok(&["agent", "events", "web-1", "--project", "myapp"]);
    assert!(table.stdout.contains("render_failed"), "{}", table.stdout);
    let listed = cli
        .ok(&["agent", "list", "--project", "myapp", "--format", "json"])
        .json();
    assert_eq!(listed[0]["connected"], true, "{listed}");
    assert!(listed[0].get("last_heartbeat_time").is_some(), "{listed}");
    let table = cli.ok(&["agent", "list", "--project", "myapp"]);
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("CONNECTED") && header.contains("LAST HEARTBEAT"),
        "{}",
        table.stdout
    );
    drop(server);
}
