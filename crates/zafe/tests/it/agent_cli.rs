//! End to end: `zafe agent run` with `[exec]` (R-AGT-3, the exec mode and offline
//! promises): a real agent process supervises a real child against a real server on loopback.
//! The child is a small shell script that writes what it sees (its environment, the signals it
//! gets) to files the test reads.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::support::*;

const ROOT: &str = "agent-cli-root";

/// A client of one server, logged in with the root token.
struct Admin {
    config_dir: PathBuf,
    addr: String,
}

impl Admin {
    fn new(dir: &Path, addr: &str) -> Self {
        let config_dir = dir.join("admin");
        std::fs::create_dir_all(&config_dir).unwrap();
        Admin {
            config_dir,
            addr: addr.to_string(),
        }
    }

    fn at(&self, addr: &str) -> Self {
        Admin {
            config_dir: self.config_dir.clone(),
            addr: addr.to_string(),
        }
    }

    fn ok(&self, token: &str, args: &[&str], stdin: Option<&str>) -> String {
        let mut cmd = clean_command(BIN, &self.config_dir, &self.addr, Some(token));
        cmd.args(args);
        let r = run(cmd, stdin.map(str::as_bytes));
        assert_eq!(
            r.code, 0,
            "zafe {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    fn set(&self, token: &str, key: &str, value: &str) {
        self.ok(
            token,
            &["secret", "set", key, "--project", "myapp", "--env", "prod"],
            Some(value),
        );
    }

    /// Creates project `myapp` with `prod`, and an agent for it; returns the agent's token.
    fn project_and_agent(&self, token: &str) -> String {
        self.ok(token, &["project", "create", "myapp"], None);
        self.ok(
            token,
            &[
                "agent",
                "create",
                "web-1",
                "--project",
                "myapp",
                "--env",
                "prod",
            ],
            None,
        )
        .trim()
        .to_string()
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `zafe agent run`, killed when dropped.
struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// Writes `agent.toml` (the token in a 0600 file) and starts the agent.
    fn start(dir: &Path, addr: &str, token: &str, body: &str) -> Agent {
        let token_file = dir.join("agent.token");
        write_private(&token_file, token);
        let config = dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "address = \"{addr}\"\ntoken_file = \"{}\"\n\n{body}",
                token_file.display()
            ),
        )
        .unwrap();
        let home = dir.join("agent-home");
        std::fs::create_dir_all(&home).unwrap();
        let mut cmd = clean_command(BIN, &home, addr, None);
        cmd.args(["agent", "run", "--config"]).arg(&config);
        let log = dir.join("agent.log");
        cmd.stdout(std::fs::File::create(dir.join("agent.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap());
        Agent {
            child: cmd.spawn().unwrap(),
            log,
        }
    }

    fn log(&self) -> String {
        read(&self.log)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits for the agent to exit; its exit code.
    fn exit_code(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "the agent did not exit:\n{}",
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

fn lines(path: &Path) -> Vec<String> {
    read(path).lines().map(String::from).collect()
}

fn alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

// Exec mode: the child gets the resolved environment and none of the agent's credentials; a
// burst of changes to a value it uses restarts it once, with the last value; a change to a
// secret it does not use, or a new version with the same value, does not restart it; SIGTERM
// to the agent is forwarded and the child's exit code becomes the agent's.
#[test]
fn exec_restarts_the_child_once_per_burst_of_changes_to_its_values() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _, addr) = dev_server(dir.path(), ROOT);
    let admin = Admin::new(dir.path(), &addr);
    let token = admin.project_and_agent(ROOT);
    admin.set(ROOT, "DB_URL", "postgres://v1");
    admin.set(ROOT, "OTHER", "unused-1");
    let starts = dir.path().join("starts");
    let env_dump = dir.path().join("env-at-start");
    let script = format!(
        "env > '{}'; echo \"start $DB_URL $MODE\" >> '{}'; exec sleep 600",
        env_dump.display(),
        starts.display()
    );
    let mut agent = Agent::start(
        dir.path(),
        &addr,
        &token,
        &format!(
            "[exec]\ncommand = [\"sh\", \"-c\", {script:?}]\ndebounce = \"1s\"\nstop_grace = \"5s\"\n\
             env = {{ DB_URL = \"zafe://myapp/prod/DB_URL\", MODE = \"plain\" }}\n"
        ),
    );
    let wait = Duration::from_secs(20);
    eventually("the child's first start", wait, || {
        lines(&starts) == ["start postgres://v1 plain"]
    });
    let env = read(&env_dump);
    assert!(env.contains("DB_URL=postgres://v1\n"), "{env}");
    assert!(!env.contains(&token), "the agent's token reached its child");
    assert!(!env.contains("ZAFE_AGENT_TOKEN") && !env.contains("ZAFE_TOKEN"));
    eventually("the connection", wait, || {
        agent.log().contains("connected to")
    });

    for value in ["postgres://v2", "postgres://v3", "postgres://v4"] {
        admin.set(ROOT, "DB_URL", value);
    }
    eventually("the restart with the last value", wait, || {
        lines(&starts).last().map(String::as_str) == Some("start postgres://v4 plain")
    });
    // A secret the child does not use, and the same value written again: no restart.
    admin.set(ROOT, "OTHER", "unused-2");
    admin.set(ROOT, "DB_URL", "postgres://v4");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        lines(&starts),
        ["start postgres://v1 plain", "start postgres://v4 plain"],
        "one restart for the burst, none for unrelated or unchanged values"
    );
    let log = agent.log();
    assert_eq!(log.matches("connected to").count(), 1, "{log}");
    for value in ["postgres://v1", "postgres://v4", &token] {
        assert!(
            !log.contains(value),
            "the agent's log shows a secret:\n{log}"
        );
    }

    // What happened reached the server as events (R-AGT-4): the start, the restart.
    eventually("the child's events", wait, || {
        let events = admin.ok(
            ROOT,
            &[
                "agent",
                "events",
                "web-1",
                "--project",
                "myapp",
                "--format",
                "json",
            ],
            None,
        );
        events.contains("child_started") && events.contains("child_restarted")
    });

    // A rotated token put in the token file is picked up without restarting the child.
    let rotated = admin
        .ok(
            ROOT,
            &["agent", "rotate-token", "web-1", "--project", "myapp"],
            None,
        )
        .trim()
        .to_string();
    assert!(rotated.starts_with("zafe_ag_") && rotated != token);
    write_private(&dir.path().join("agent.token"), &rotated);
    eventually("the connection with the new token", wait, || {
        agent.log().matches("connected to").count() == 2
    });
    assert_eq!(lines(&starts).len(), 2, "a new token restarts nothing");

    // SIGTERM to the agent reaches the child (sleep dies of it): the agent exits as it did.
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.exit_code(wait), 128 + libc::SIGTERM);
}

// Exec mode with `on_change = "signal"`: a changed template is re-rendered and the child gets
// SIGHUP instead of a restart; signals sent to the agent are forwarded; the child's own exit
// code becomes the agent's.
#[test]
fn exec_signal_mode_reloads_the_child_and_forwards_signals() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _, addr) = dev_server(dir.path(), ROOT);
    let admin = Admin::new(dir.path(), &addr);
    let token = admin.project_and_agent(ROOT);
    admin.set(ROOT, "DB_URL", "postgres://v1");
    let template = dir.path().join("app.conf.tpl");
    std::fs::write(&template, "url={{ zafe://myapp/prod/DB_URL }}\n").unwrap();
    let conf = dir.path().join("app.conf");
    let signals = dir.path().join("signals");
    let pids = dir.path().join("pids");
    let script = format!(
        "echo $$ >> '{pids}'; trap 'echo hup >> {s}' HUP; trap 'echo usr1 >> {s}' USR1; \
         trap 'exit 7' TERM; while :; do sleep 0.05; done",
        pids = pids.display(),
        s = signals.display()
    );
    let mut agent = Agent::start(
        dir.path(),
        &addr,
        &token,
        &format!(
            "[[template]]\nsource = \"{}\"\ndestination = \"{}\"\n\n\
             [exec]\ncommand = [\"sh\", \"-c\", {script:?}]\non_change = \"signal\"\n\
             reload_signal = \"SIGHUP\"\ndebounce = \"200ms\"\n",
            template.display(),
            conf.display()
        ),
    );
    let wait = Duration::from_secs(20);
    eventually("the render and the child", wait, || {
        read(&conf) == "url=postgres://v1\n" && lines(&pids).len() == 1
    });
    eventually("the connection", wait, || {
        agent.log().contains("connected to")
    });
    admin.set(ROOT, "DB_URL", "postgres://v2");
    eventually("the re-render and SIGHUP", wait, || {
        read(&conf) == "url=postgres://v2\n" && lines(&signals) == ["hup"]
    });
    agent.signal(libc::SIGUSR1);
    eventually("the forwarded SIGUSR1", wait, || {
        lines(&signals) == ["hup", "usr1"]
    });
    assert_eq!(lines(&pids).len(), 1, "signalled, never restarted");
    agent.signal(libc::SIGTERM);
    assert_eq!(agent.exit_code(wait), 7, "the child's exit code");
}

/// A server on `addr` with its data in `dir/data`, auto-unsealed from `dir/master.key`.
fn persistent_server(dir: &Path, addr: std::net::SocketAddr, name: &str) -> Server {
    let key_file = dir.join("master.key");
    if !key_file.exists() {
        write_private(&key_file, &"5a".repeat(32));
    }
    let cfg = dir.join(format!("{name}.toml"));
    write_private(
        &cfg,
        &format!(
            "listen = \"{addr}\"\ndata_dir = \"{data}\"\n[storage]\nkind = \"sqlite\"\npath = \"{data}/zafe.db\"\n\
             [seal]\nmaster_key_file = \"{}\"\n",
            key_file.display(),
            data = dir.join("data").display()
        ),
    );
    Server::start_config(&cfg, &[], addr, dir.join(format!("{name}.log")))
}

// Offline: with the server stopped the agent keeps its files and its child and says so; a
// change made meanwhile (here through a second server on the same database) is caught up on
// when the server is back: the file re-rendered and the child restarted once; a reconnect
// without a change restarts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_rides_out_a_server_restart_and_catches_up() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut server = persistent_server(dir.path(), addr, "main");
    let (_, root) = init(&server, 1, 1).await;
    let url = format!("http://{addr}");
    let admin = Admin::new(dir.path(), &url);
    let token = admin.project_and_agent(&root);
    admin.set(&root, "DB_URL", "postgres://v1");
    let template = dir.path().join("app.env.tpl");
    std::fs::write(&template, "DB_URL={{ zafe://myapp/prod/DB_URL }}\n").unwrap();
    let output = dir.path().join("app.env");
    let starts = dir.path().join("starts");
    let script = format!(
        "echo \"$$ $DB_URL\" >> '{}'; exec sleep 600",
        starts.display()
    );
    let agent = Agent::start(
        dir.path(),
        &url,
        &token,
        &format!(
            "[[template]]\nsource = \"{}\"\ndestination = \"{}\"\n\n\
             [exec]\ncommand = [\"sh\", \"-c\", {script:?}]\ndebounce = \"300ms\"\n\
             env = {{ DB_URL = \"zafe://myapp/prod/DB_URL\" }}\n",
            template.display(),
            output.display()
        ),
    );
    let wait = Duration::from_secs(30);
    eventually("the first render and start", wait, || {
        read(&output) == "DB_URL=postgres://v1\n" && lines(&starts).len() == 1
    });
    eventually("the connection", wait, || {
        agent.log().matches("connected to").count() == 1
    });
    let pid: i32 = lines(&starts)[0]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    server.stop();
    eventually("the agent notices", wait, || {
        agent.log().contains("connection to")
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read(&output), "DB_URL=postgres://v1\n", "the file is kept");
    assert!(alive(pid), "the child keeps running");
    assert!(agent.log().contains("are kept"), "{}", agent.log());

    // Meanwhile the value changes through another server on the same database.
    let other_addr = free_addr();
    let mut other = persistent_server(dir.path(), other_addr, "other");
    admin
        .at(&format!("http://{other_addr}"))
        .set(&root, "DB_URL", "postgres://v2");
    other.stop();

    let mut server = persistent_server(dir.path(), addr, "main");
    eventually("the catch-up", wait, || {
        read(&output) == "DB_URL=postgres://v2\n"
            && lines(&starts)
                .last()
                .is_some_and(|l| l.ends_with(" postgres://v2"))
    });
    assert_eq!(lines(&starts).len(), 2, "one restart for the change");
    assert!(!alive(pid), "the old child was stopped");

    // Back again without a change: nothing restarts.
    server.stop();
    eventually("the agent notices again", wait, || {
        agent.log().matches("connection to").count() >= 2
    });
    let _server = persistent_server(dir.path(), addr, "main");
    eventually("the third connection", wait, || {
        agent.log().matches("connected to").count() == 3
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(lines(&starts).len(), 2, "a reconnect restarts nothing");
    let log = agent.log();
    assert!(
        !log.contains("postgres://") && !log.contains(&token),
        "{log}"
    );
}

// R-AGT-1 from the command line: ten `zafe agent create` processes racing for one name make
// exactly one agent; the other nine fail with a message saying the name is taken, and only
// the winner's token works.
#[test]
fn racing_registrations_from_the_command_line_make_one_agent() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _, addr) = dev_server(dir.path(), ROOT);
    let admin = Admin::new(dir.path(), &addr);
    admin.ok(ROOT, &["project", "create", "myapp"], None);
    admin.set(ROOT, "DB_URL", "postgres://v1");
    let racers: Vec<Child> = (0..10)
        .map(|_| {
            let mut cmd = clean_command(BIN, &admin.config_dir, &addr, Some(ROOT));
            cmd.args([
                "agent",
                "create",
                "web-1",
                "--project",
                "myapp",
                "--env",
                "prod",
            ]);
            cmd.spawn().unwrap()
        })
        .collect();
    let runs: Vec<Run> = racers
        .into_iter()
        .map(|child| finish(child, "zafe agent create"))
        .collect();
    let winners: Vec<&Run> = runs.iter().filter(|r| r.code == 0).collect();
    assert_eq!(winners.len(), 1, "exactly one registration wins");
    for loser in runs.iter().filter(|r| r.code != 0) {
        assert!(loser.stdout.trim().is_empty(), "a loser printed a token");
        assert!(loser.stderr.contains("already"), "{}", loser.stderr);
    }
    let listed = admin.ok(
        ROOT,
        &["agent", "list", "--project", "myapp", "--format", "json"],
        None,
    );
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    // The winner's token reads the environment.
    let token = winners[0].stdout.trim();
    let read = admin.ok(token, &["inject"], Some("{{ zafe://myapp/prod/DB_URL }}"));
    assert_eq!(read.trim(), "postgres://v1");
}

// Exec mode with `mask = true`: what the child prints goes through the same masker as
// `zafe run`'s, so its secret (and an encoding of it) reaches the agent's output as ***.
#[test]
fn exec_masks_the_childs_output_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _, addr) = dev_server(dir.path(), ROOT);
    let admin = Admin::new(dir.path(), &addr);
    let token = admin.project_and_agent(ROOT);
    admin.set(ROOT, "DB_URL", "postgres://masked-secret");
    let script =
        "echo \"url=$DB_URL\"; printf '%s' \"$DB_URL\" | base64; echo done; exec sleep 600";
    let mut agent = Agent::start(
        dir.path(),
        &addr,
        &token,
        &format!(
            "[exec]\ncommand = [\"sh\", \"-c\", {script:?}]\nmask = true\n\
             env = {{ DB_URL = \"zafe://myapp/prod/DB_URL\" }}\n"
        ),
    );
    let out = dir.path().join("agent.out");
    eventually("the child's output", Duration::from_secs(20), || {
        read(&out).contains("done")
    });
    let printed = read(&out);
    assert!(printed.contains("url=***"), "{printed}");
    assert!(!printed.contains("masked-secret"), "{printed}");
    assert!(
        !printed.contains("cG9zdGdyZXM6Ly9tYXNrZWQtc2VjcmV0"),
        "{printed}"
    );
    agent.signal(libc::SIGTERM);
    assert_eq!(
        agent.exit_code(Duration::from_secs(20)),
        128 + libc::SIGTERM
    );
}
