//! The host agent over TLS end to end (R-AGT-1, issue 11 item 2): a real
//! `zafe server` serving TLS on 127.0.0.1 with a certificate from a test CA,
//! and a real `zafe agent run --config agent.toml` with an `https://`
//! address, trusting the server exactly as a `zafe` command on that host
//! would (`ZAFE_CACERT` for the CA, `ZAFE_SERVER_ID` for the identity it
//! expects). It renders over the verified channel, follows a change pushed
//! over `wss` without reconnecting, and an agent whose trust does not match
//! the server never connects, never writes its file, and says why without
//! printing its token or any value.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

const FIRST: &str = "postgres://first-over-tls";
const SECOND: &str = "postgres://second-over-tls";

/// A test certificate authority and certificates it signs for 127.0.0.1.
struct Pki {
    dir: PathBuf,
    name: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("Zafe test CA {name}"));
        let ca = params.self_signed(&ca_key).unwrap();
        let pki = Pki {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            ca,
            ca_key,
        };
        std::fs::write(pki.ca_file(), pki.ca.pem()).unwrap();
        pki
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// Issues a certificate for 127.0.0.1; returns (cert file, key file).
    fn issue(&self, name: &str) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
                .unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let cert_file = self.dir.join(format!("{name}.pem"));
        let key_file = self.dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        write_private(&key_file, &key.serialize_pem());
        (cert_file, key_file)
    }
}

/// `zafe` as a person on a host uses it against the TLS server: its own
/// configuration directory (the pin store), the CA and, once known, the
/// server id the deployment expects.
struct Cli {
    config_dir: PathBuf,
    addr: String,
    token: Option<String>,
    env: Vec<(String, String)>,
}

impl Cli {
    fn new(dir: &Path, name: &str, addr: &str, token: Option<&str>) -> Cli {
        let config_dir = dir.join(name);
        std::fs::create_dir_all(&config_dir).unwrap();
        Cli {
            config_dir,
            addr: addr.to_string(),
            token: token.map(str::to_string),
            env: Vec::new(),
        }
    }

    fn with(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Cli {
        self.env.push((
            key.to_string(),
            value.as_ref().to_string_lossy().into_owned(),
        ));
        self
    }

    fn command(&self) -> std::process::Command {
        let mut cmd = clean_command(BIN, &self.config_dir, &self.addr, self.token.as_deref());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = self.command();
        cmd.args(args);
        let r = run(cmd, stdin.map(str::as_bytes));
        assert_eq!(
            r.code, 0,
            "zafe {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }

    /// Starts `zafe agent run --config <config>` with this environment and
    /// no token in it (the agent reads its own from `token_file`).
    fn spawn_agent(&self, config: &Path, log: &Path) -> Agent {
        let mut cmd = self.command();
        cmd.env_remove("ZAFE_TOKEN")
            .args(["agent", "run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        Agent {
            child: cmd.spawn().unwrap(),
            log: log.to_path_buf(),
        }
    }
}

/// A running `zafe agent run`, killed when the test ends (also on failure).
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the agent's log satisfies `check`; fails showing the log.
    fn wait_log(&self, what: &str, limit: Duration, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        while !check(&self.log()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting: {what}; the agent's log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `zafe server` on `addr` serving TLS with `cert` (from [`Pki::issue`]), its data
/// under `dir`, unsealed by `master` (hex); does not initialise it.
fn start_tls(
    dir: &Path,
    addr: std::net::SocketAddr,
    cert: &(PathBuf, PathBuf),
    master: &str,
) -> Server {
    let section = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert.0.display(),
        cert.1.display()
    );
    std::fs::create_dir_all(dir).unwrap();
    let cfg = config_file(dir, addr, "", &section);
    let mut server = Server::start_config(
        &cfg,
        &[("ZAFE_MASTER_KEY", master)],
        addr,
        dir.join("server.log"),
    );
    server.scheme = "https";
    server
}

/// A TLS server (certificate signed by `pki`) with a master key, initialised;
/// returns it, its https URL and the root token.
async fn tls_server(dir: &Path, pki: &Pki) -> (Server, String, String) {
    let server = start_tls(
        &dir.join("server"),
        free_addr(),
        &pki.issue("server"),
        &"44".repeat(32),
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.ca_file()).unwrap()).unwrap();
    let res = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
        .put(server.url("/v1/sys/init"))
        .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("init over TLS: {e}\n{}", server.log_text()));
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    let root = body["root_token"].as_str().unwrap().to_string();
    let url = server.url("");
    (server, url, root)
}

/// A project `myapp` with `prod/DB_URL` = [`FIRST`], and an agent `name`
/// for it; returns the agent's token.
fn project_and_agent(admin: &Cli, name: &str) -> String {
    admin.ok(&["project", "create", "myapp"], None);
    admin.ok(
        &[
            "secret",
            "set",
            "DB_URL",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        Some(FIRST),
    );
    agent_token(admin, name)
}

fn agent_token(admin: &Cli, name: &str) -> String {
    let token = admin
        .ok(
            &[
                "agent",
                "create",
                name,
                "--project",
                "myapp",
                "--env",
                "prod",
            ],
            None,
        )
        .stdout
        .trim()
        .to_string();
    assert!(token.starts_with("zafe_ag_"), "{token}");
    token
}

/// Writes the agent's token file, template and `agent.toml` under
/// `dir/name`; returns (agent.toml, the destination file).
fn agent_files(dir: &Path, name: &str, addr: &str, token: &str) -> (PathBuf, PathBuf) {
    let home = dir.join(name);
    std::fs::create_dir_all(home.join("out")).unwrap();
    let token_file = home.join("agent.token");
    write_private(&token_file, token);
    let template = home.join("app.env.tpl");
    std::fs::write(&template, "DB_URL={{ zafe://myapp/prod/DB_URL }}\n").unwrap();
    let output = home.join("out").join("app.env");
    let config = home.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "address = \"{addr}\"\ntoken_file = \"{}\"\n\n[[template]]\nsource = \"{}\"\ndestination = \"{}\"\n",
            token_file.display(),
            template.display(),
            output.display()
        ),
    )
    .unwrap();
    (config, output)
}

/// What the server says about the agent `name`: (connected, the whole row).
fn listed(admin: &Cli, name: &str) -> (bool, serde_json::Value) {
    let all = admin
        .ok(
            &["agent", "list", "--project", "myapp", "--format", "json"],
            None,
        )
        .json();
    let row = all
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("agent {name} not listed: {all}"));
    (row["connected"] == true, row)
}

fn assert_quiet(log: &str, token: &str) {
    assert!(!log.contains(token), "the agent logged its token:\n{log}");
    for value in [FIRST, SECOND] {
        assert!(!log.contains(value), "the agent logged a value:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_over_tls_renders_and_follows_pushed_changes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "real");
    let (server, url, root) = tls_server(dir.path(), &pki).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // The administrator: trusts the CA, pins the server on first use, and
    // learns the server id a deployment writes into its hosts' settings.
    let admin = Cli::new(dir.path(), "admin", &url, Some(&root)).with("ZAFE_CACERT", pki.ca_file());
    let shown = admin
        .ok(&["server-id", "show", "--format", "json"], None)
        .json();
    let server_id = shown["server_id"].as_str().unwrap().to_string();
    assert!(server_id.starts_with("zs_"), "{shown}");
    assert_eq!(
        shown["tls_bound"], true,
        "the identity proof covers the TLS key: {shown}"
    );
    let token = project_and_agent(&admin, "web-1");
    let (config, output) = agent_files(dir.path(), "web-1", &url, &token);

    // The host: a fresh configuration directory, the CA and the expected
    // server id, the same settings a `zafe secret get` there needs.
    let host = Cli::new(dir.path(), "host", &url, None)
        .with("ZAFE_CACERT", pki.ca_file())
        .with("ZAFE_SERVER_ID", &server_id);
    let status = host.ok(&["status", "--format", "json"], None).json();
    assert_eq!(status["sealed"], false, "{status}");
    let agent = host.spawn_agent(&config, &dir.path().join("web-1.log"));

    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the first render over TLS", Duration::from_secs(20), || {
        read(&output) == format!("DB_URL={FIRST}\n")
    });
    assert_eq!(mode_of(&output), 0o600);
    eventually("the wss connection", Duration::from_secs(20), || {
        agent.log().contains(&format!("connected to {url}"))
    });
    eventually(
        "the agent listed as connected",
        Duration::from_secs(20),
        || listed(&admin, "web-1").0,
    );

    // A change is pushed over the same socket: rendered again, no reconnect.
    admin.ok(
        &[
            "secret",
            "set",
            "DB_URL",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        Some(SECOND),
    );
    eventually("the pushed re-render", Duration::from_secs(20), || {
        read(&output) == format!("DB_URL={SECOND}\n")
    });
    assert_eq!(mode_of(&output), 0o600);
    let log = agent.log();
    assert_eq!(
        log.matches("connected to").count(),
        1,
        "one connection, kept:\n{log}"
    );
    assert!(!log.contains("lost"), "{log}");
    assert!(!log.contains("cannot connect"), "{log}");
    assert_quiet(&log, &token);
    assert!(listed(&admin, "web-1").0, "still connected");
    // The server accepted the agent over TLS only (nothing in plain HTTP).
    assert!(
        std::net::TcpStream::connect(server.addr).is_ok(),
        "the server is still up"
    );
    drop(agent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_does_not_trust_the_server_never_connects() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "real");
    let other = Pki::new(dir.path(), "other");
    let (_server, url, root) = tls_server(dir.path(), &pki).await;
    let admin = Cli::new(dir.path(), "admin", &url, Some(&root)).with("ZAFE_CACERT", pki.ca_file());
    let real_id = admin
        .ok(&["server-id", "show", "--format", "json"], None)
        .json()["server_id"]
        .as_str()
        .unwrap()
        .to_string();
    admin.ok(&["project", "create", "myapp"], None);
    admin.ok(
        &[
            "secret",
            "set",
            "DB_URL",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        Some(FIRST),
    );

    // (name, what the host trusts, what its log must say)
    let wrong_id = "zs_00000000000000000000000000000000";
    assert_ne!(wrong_id, real_id);
    let cases: Vec<(&str, Vec<(&str, PathBuf)>, &[&str])> = vec![
        // Another CA: the TLS handshake fails before anything is sent.
        (
            "other-ca",
            vec![("ZAFE_CACERT", other.ca_file())],
            &["UnknownIssuer"],
        ),
        // No CA at all: the system roots do not know the test CA either.
        ("no-ca", vec![], &["UnknownIssuer", "ZAFE_CACERT"]),
        // The right CA, but the host expects another server id.
        (
            "wrong-id",
            vec![
                ("ZAFE_CACERT", pki.ca_file()),
                ("ZAFE_SERVER_ID", PathBuf::from(wrong_id)),
            ],
            &[
                "not the expected zs_00000000000000000000000000000000",
                "No credentials were sent",
            ],
        ),
    ];
    for (name, env, reasons) in cases {
        let token = agent_token(&admin, name);
        let (config, output) = agent_files(dir.path(), name, &url, &token);
        let mut host = Cli::new(dir.path(), &format!("{name}-host"), &url, None);
        for (k, v) in &env {
            host = host.with(k, v);
        }
        let agent = host.spawn_agent(&config, &dir.path().join(format!("{name}.log")));
        // It keeps trying (start, then at least two reconnect attempts with
        // back-off) and keeps refusing.
        eventually(
            &format!("{name}: repeated refusals"),
            Duration::from_secs(30),
            || agent.log().matches("retrying").count() >= 2,
        );
        let log = agent.log();
        eprintln!("{name}: the agent's log as its operator sees it:\n{log}");
        for reason in reasons {
            assert!(log.contains(reason), "{name}: no {reason:?} in:\n{log}");
        }
        assert!(!log.contains("connected to"), "{name}:\n{log}");
        assert!(!log.contains("zafe agent: rendered"), "{name}:\n{log}");
        assert!(!output.exists(), "{name}: the file was written");
        assert_quiet(&log, &token);
        let (connected, row) = listed(&admin, name);
        assert!(!connected, "{name}: {row}");
        drop(agent);
    }
}

// The pin is what protects a connected agent when its server is replaced:
// an agent that pinned the server on first use (TOFU, only the CA
// configured) loses its connection, and at the same address comes another
// Zafe server with a certificate from the same CA. The running agent refuses
// it in the TLS handshake (not the key its server's identity was proven on),
// an agent restarted on that host refuses it for its identity (the pin);
// neither sends it a token, the file is kept; when the real server is back
// the agent reconnects over wss and follows changes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_refuses_an_impostor_at_its_address_and_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "real");
    let (mut server, url, root) = tls_server(dir.path(), &pki).await;
    let addr = server.addr;
    let admin = Cli::new(dir.path(), "admin", &url, Some(&root)).with("ZAFE_CACERT", pki.ca_file());
    let token = project_and_agent(&admin, "web-1");
    let (config, output) = agent_files(dir.path(), "web-1", &url, &token);
    let host = Cli::new(dir.path(), "host", &url, None).with("ZAFE_CACERT", pki.ca_file());
    let agent = host.spawn_agent(&config, &dir.path().join("web-1.log"));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the first render", Duration::from_secs(20), || {
        read(&output) == format!("DB_URL={FIRST}\n")
    });
    eventually("the wss connection", Duration::from_secs(20), || {
        agent.log().contains("connected to")
    });
    let pins = std::fs::read_to_string(dir.path().join("host/servers.toml")).unwrap();
    assert!(pins.contains("tls_bound = true"), "{pins}");

    server.stop();
    agent.wait_log("the lost connection", Duration::from_secs(20), |log| {
        log.contains("lost")
    });
    let impostor = start_tls(
        &dir.path().join("impostor"),
        addr,
        &pki.issue("impostor"),
        &"55".repeat(32),
    );
    // The running agent holds the TLS key its server's identity was proven on:
    // the impostor's certificate is refused in the handshake, before any
    // request; the agent then verifies afresh (a renewed certificate would
    // pass), and the impostor cannot prove the pinned identity.
    agent.wait_log("the impostor refused", Duration::from_secs(60), |log| {
        log.split("lost").nth(1).is_some_and(|after| {
            after.matches("proved a different identity").count() >= 2
                && after.contains("No credentials were sent")
        })
    });
    // An agent (re)started on that host checks the pin: another identity.
    let restarted = host.spawn_agent(&config, &dir.path().join("web-1-restarted.log"));
    restarted.wait_log(
        "the restarted agent refuses",
        Duration::from_secs(30),
        |log| log.contains("proved a different identity") && log.contains("retrying"),
    );
    for log in [agent.log(), restarted.log()] {
        assert!(
            log.contains("No credentials were sent") || log.contains("invalid peer certificate"),
            "{log}"
        );
        assert_quiet(&log, &token);
    }
    assert!(
        !restarted.log().contains("connected to"),
        "{}",
        restarted.log()
    );
    assert!(
        !restarted.log().contains("zafe agent: rendered"),
        "{}",
        restarted.log()
    );
    assert_eq!(
        agent.log().matches("connected to").count(),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(
        read(&output),
        format!("DB_URL={FIRST}\n"),
        "the file is kept"
    );
    drop(restarted);
    let impostor_log = impostor.log_text();
    assert!(
        !impostor_log.contains(&token) && !impostor_log.contains("agents/connect"),
        "{impostor_log}"
    );
    drop(impostor);

    // The real server again, same identity, same certificate.
    let _server = start_tls(
        &dir.path().join("server"),
        addr,
        &(
            dir.path().join("server.pem"),
            dir.path().join("server-key.pem"),
        ),
        &"44".repeat(32),
    );
    agent.wait_log("the reconnection", Duration::from_secs(60), |log| {
        log.matches("connected to").count() == 2
    });
    admin.ok(
        &[
            "secret",
            "set",
            "DB_URL",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        Some(SECOND),
    );
    eventually("the pushed re-render", Duration::from_secs(20), || {
        read(&output) == format!("DB_URL={SECOND}\n")
    });
    assert_quiet(&agent.log(), &token);
}

// A server's certificate is renewed with a new key (what most ACME clients
// do): its identity key is unchanged and its new identity proof is bound to
// the new TLS key. A running agent refused at the handshake verifies the
// server afresh (the pinned identity key must sign a proof bound to the new
// TLS key) and reconnects, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connected_agent_follows_its_server_through_a_certificate_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "real");
    let (mut server, url, root) = tls_server(dir.path(), &pki).await;
    let addr = server.addr;
    let admin = Cli::new(dir.path(), "admin", &url, Some(&root)).with("ZAFE_CACERT", pki.ca_file());
    let token = project_and_agent(&admin, "web-1");
    let (config, output) = agent_files(dir.path(), "web-1", &url, &token);
    let host = Cli::new(dir.path(), "host", &url, None).with("ZAFE_CACERT", pki.ca_file());
    let agent = host.spawn_agent(&config, &dir.path().join("web-1.log"));
    agent.wait_log("the wss connection", Duration::from_secs(20), |log| {
        log.contains("connected to")
    });
    server.stop();
    let _server = start_tls(
        &dir.path().join("server"),
        addr,
        &pki.issue("server-renewed"),
        &"44".repeat(32),
    );
    // A fresh client accepts the renewed server: same identity, new TLS key.
    host.ok(&["status"], None);
    agent.wait_log("the reconnection", Duration::from_secs(60), |log| {
        log.matches("connected to").count() == 2
    });
    admin.ok(
        &[
            "secret",
            "set",
            "DB_URL",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        Some(SECOND),
    );
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the pushed re-render", Duration::from_secs(20), || {
        read(&output) == format!("DB_URL={SECOND}\n")
    });
}
