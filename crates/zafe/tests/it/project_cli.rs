//! End to end: `zafe project|env|member|secret` (R-ACL-2, R-KV-2) against
//! the real `zafe server --dev` on loopback: projects and environments,
//! `env diff` and `env copy` (names only, never a value printed), members
//! and roles, per-key secrets with history, and `.zafe.toml` found from a
//! sub-directory of a repository.

use std::path::{Path, PathBuf};

use crate::support::*;
use serde_json::json;

const ROOT: &str = "project-cli-root";

struct Cli {
    config_dir: PathBuf,
    addr: String,
    token: String,
}

impl Cli {
    /// Runs `zafe <args>` in `cwd` with a clean environment; 60 s at most.
    fn run_in(&self, cwd: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = clean_command(BIN, &self.config_dir, &self.addr, Some(&self.token));
        cmd.args(args).current_dir(cwd);
        run(cmd, stdin.map(str::as_bytes))
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_in(&self.config_dir, args, None)
    }

    fn ok_in(&self, cwd: &Path, args: &[&str], stdin: Option<&str>) -> Run {
        let r = self.run_in(cwd, args, stdin);
        assert_eq!(
            r.code, 0,
            "zafe {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }

    fn ok(&self, args: &[&str]) -> Run {
        self.ok_in(&self.config_dir, args, None)
    }

    fn set(&self, env: &str, key: &str, value: &str) {
        self.ok_in(
            &self.config_dir,
            &["secret", "set", key, "--project", "myapp", "--env", env],
            Some(value),
        );
    }
}

fn dev_server(dir: &Path) -> (Server, Cli) {
    let (server, config_dir, addr) = crate::support::dev_server(dir, ROOT);
    let cli = Cli {
        config_dir,
        addr,
        token: ROOT.to_string(),
    };
    (server, cli)
}

const VALUES: [&str; 5] = [
    "postgres://dev-secret",
    "postgres://prod-secret",
    "shared-api-key-value",
    "only-dev-value",
    "only-prod-value",
];

fn assert_no_value(r: &Run) {
    for v in VALUES {
        assert!(
            !r.stdout.contains(v) && !r.stderr.contains(v),
            "a value was printed: {}\n{}",
            r.stdout,
            r.stderr
        );
    }
}

#[tokio::test]
async fn projects_environments_diff_copy_and_project_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = dev_server(dir.path());

    // Projects.
    let r = cli.ok(&["project", "create", "myapp"]);
    assert!(r.stderr.contains("dev, staging, prod"), "{}", r.stderr);
    let r = cli.run(&["project", "create", "My App"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("invalid project slug"), "{}", r.stderr);
    let r = cli.run(&["project", "create", "myapp"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    let list = cli.ok(&["project", "list", "--format", "json"]).json();
    assert_eq!(
        list["myapp"]["environments"],
        json!(["dev", "staging", "prod"])
    );
    let show = cli
        .ok(&["project", "show", "myapp", "--format", "json"])
        .json();
    assert_eq!(show["mount"], "secret");

    // Environments.
    cli.ok(&["env", "create", "myapp", "qa"]);
    let envs = cli.ok(&["env", "list", "myapp", "--format", "json"]).json();
    assert_eq!(envs, json!(["dev", "staging", "prod", "qa"]));
    cli.ok(&["env", "delete", "myapp", "qa"]);
    let r = cli.run(&["env", "delete", "myapp", "qa"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no environment qa"), "{}", r.stderr);

    // Secrets, one per key.
    cli.set("dev", "DB_URL", "postgres://dev-secret\n");
    cli.set("prod", "DB_URL", "postgres://prod-secret");
    cli.set("dev", "API_KEY", "shared-api-key-value");
    cli.set("prod", "API_KEY", "shared-api-key-value");
    cli.set("dev", "ONLY_DEV", "only-dev-value");
    cli.set("prod", "ONLY_PROD", "only-prod-value");
    let r = cli.run_in(
        &cli.config_dir,
        &["secret", "set", "X", "--project", "myapp", "--env", "qa"],
        Some("v"),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("has no environment qa"), "{}", r.stderr);
    // The layout is plain KV v2: `zafe kv` sees the same secret.
    let r = cli.ok(&["kv", "get", "--field", "value", "secret/myapp/dev/DB_URL"]);
    assert_eq!(r.stdout, "postgres://dev-secret");

    // Diff: names only, in JSON and as a table; --exit-code for scripts.
    let r = cli.ok(&["env", "diff", "myapp", "dev", "prod", "--format", "json"]);
    assert_no_value(&r);
    let d = r.json();
    assert_eq!(d["only_in_from"], json!(["ONLY_DEV"]));
    assert_eq!(d["only_in_to"], json!(["ONLY_PROD"]));
    assert_eq!(d["different"], json!(["DB_URL"]));
    assert_eq!(d["same"], json!(["API_KEY"]));
    let r = cli.ok(&["env", "diff", "myapp", "dev", "prod"]);
    assert_no_value(&r);
    for line in ["- ONLY_DEV", "+ ONLY_PROD", "~ DB_URL", "= API_KEY"] {
        assert!(r.stdout.contains(line), "{line}: {}", r.stdout);
    }
    let r = cli.run(&["env", "diff", "myapp", "dev", "prod", "--exit-code"]);
    assert_eq!(r.code, 1);
    let r = cli.run(&["env", "diff", "myapp", "dev", "nope"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no environment nope"), "{}", r.stderr);

    // Copy: named keys (all must exist), then the rest without replacing.
    let r = cli.run(&[
        "env",
        "copy",
        "myapp",
        "dev",
        "staging",
        "--keys",
        "DB_URL,NOPE",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("NOPE") && r.stderr.contains("nothing was copied"));
    let staging = cli.ok(&[
        "secret", "list", "-p", "myapp", "-e", "staging", "--format", "json",
    ]);
    assert_eq!(staging.json(), json!([]));
    let r = cli.ok(&["env", "copy", "myapp", "dev", "staging", "--keys", "DB_URL"]);
    assert_no_value(&r);
    cli.set("staging", "API_KEY", "staging-own-value");
    let r = cli.ok(&["env", "copy", "myapp", "dev", "staging", "--format", "json"]);
    assert_no_value(&r);
    let c = r.json();
    assert_eq!(c["copied"], json!(["ONLY_DEV"]));
    assert_eq!(c["skipped"], json!(["API_KEY", "DB_URL"]));
    let r = cli.ok(&["secret", "get", "API_KEY", "-p", "myapp", "-e", "staging"]);
    assert_eq!(
        r.stdout, "staging-own-value",
        "copy replaced without --overwrite"
    );
    let r = cli.ok(&[
        "env",
        "copy",
        "myapp",
        "dev",
        "staging",
        "--overwrite",
        "--format",
        "json",
    ]);
    assert_eq!(r.json()["copied"], json!(["API_KEY", "DB_URL", "ONLY_DEV"]));
    let d = cli
        .ok(&["env", "diff", "myapp", "dev", "staging", "--format", "json"])
        .json();
    assert_eq!(d["same"], json!(["API_KEY", "DB_URL", "ONLY_DEV"]));

    // .zafe.toml, found from a sub-directory: no flags needed.
    let repo = dir.path().join("repo");
    let deep = repo.join("src/app");
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(
        repo.join(".zafe.toml"),
        "project = \"myapp\"\nenvironment = \"dev\"\n",
    )
    .unwrap();
    let r = cli.ok_in(&deep, &["secret", "get", "DB_URL"], None);
    assert_eq!(r.stdout, "postgres://dev-secret");
    let r = cli.ok_in(&deep, &["secret", "get", "DB_URL", "--env", "prod"], None);
    assert_eq!(r.stdout, "postgres://prod-secret");
    let r = cli.ok_in(
        &deep,
        &["env", "diff", "dev", "prod", "--format", "json"],
        None,
    );
    assert_eq!(r.json()["different"], json!(["DB_URL"]));
    let r = cli.ok_in(&deep, &["secret", "list", "--format", "json"], None);
    assert_eq!(r.json(), json!(["API_KEY", "DB_URL", "ONLY_DEV"]));
    let r = cli.run_in(&deep, &["secret", "get", "MISSING"], None);
    assert_eq!(r.code, 2);
    // History: who changed what (never a token).
    let r = cli.ok_in(
        &deep,
        &["secret", "history", "DB_URL", "--format", "json"],
        None,
    );
    let by = r.json()["1"]["created_by"].as_str().unwrap().to_string();
    assert!(by.starts_with("root ("), "{by}");
    assert!(!r.stdout.contains(ROOT));
    // A malformed file is a clear error naming it, never a silent default.
    std::fs::write(
        repo.join(".zafe.toml"),
        "project = \"myapp\"\nenviroment = \"dev\"\n",
    )
    .unwrap();
    let r = cli.run_in(&deep, &["secret", "list"], None);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains(".zafe.toml") && r.stderr.contains("enviroment"),
        "{}",
        r.stderr
    );
    // Outside any repository, the project must be named.
    let r = cli.run_in(dir.path(), &["secret", "list"], None);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no project given"), "{}", r.stderr);

    // Deleting needs --purge while secrets remain.
    let r = cli.run(&["project", "delete", "myapp"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("purge"), "{}", r.stderr);
    cli.ok(&["project", "delete", "myapp", "--purge"]);
    let r = cli.run(&["kv", "get", "secret/myapp/dev/DB_URL"]);
    assert_eq!(r.code, 2);
}

#[tokio::test]
async fn members_and_roles() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = dev_server(dir.path());
    for email in ["alice@example.com", "bob@example.com"] {
        let r = call(
            "POST",
            &server.url("/v1/sys/users"),
            Some(ROOT),
            Some(json!({"email": email, "password": "a-long-enough-passphrase"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.json);
    }
    cli.ok(&["project", "create", "myapp"]);
    cli.ok(&[
        "member",
        "add",
        "myapp",
        "alice@example.com",
        "--role",
        "readonly",
    ]);
    let r = cli.run(&["member", "add", "myapp", "carol@example.com"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("no user carol@example.com"),
        "{}",
        r.stderr
    );
    let r = cli.run(&[
        "member",
        "add",
        "myapp",
        "bob@example.com",
        "--role",
        "owner",
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("unknown role"), "{}", r.stderr);
    let m = cli
        .ok(&["member", "list", "myapp", "--format", "json"])
        .json();
    assert_eq!(m.as_array().unwrap().len(), 1);
    assert_eq!(m[0]["email"], "alice@example.com");
    assert_eq!(m[0]["role"], "readonly");
    cli.ok(&["member", "role", "myapp", "alice@example.com", "admin"]);
    let r = cli.run(&["member", "role", "myapp", "bob@example.com", "admin"]);
    assert_eq!(r.code, 1, "role changes only members");
    let r = cli.run(&["member", "remove", "myapp", "alice@example.com"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("last admin"), "{}", r.stderr);
    cli.ok(&[
        "member",
        "add",
        "myapp",
        "bob@example.com",
        "--role",
        "admin",
    ]);
    cli.ok(&["member", "remove", "myapp", "alice@example.com"]);
    let r = cli.ok(&["member", "list", "myapp"]);
    assert!(r.stdout.contains("bob@example.com") && !r.stdout.contains("alice"));
    // From .zafe.toml too.
    std::fs::write(cli.config_dir.join(".zafe.toml"), "project = \"myapp\"\n").unwrap();
    let r = cli.ok(&["member", "list", "--format", "json"]);
    assert_eq!(r.json()[0]["email"], "bob@example.com");
}

/// A person's real session (password login) through the CLI: a readonly
/// member reads but cannot write; a non-member cannot tell the project
/// exists.
#[tokio::test]
async fn people_see_what_their_role_allows() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = dev_server(dir.path());
    let mut sessions = Vec::new();
    for email in ["reader@example.com", "stranger@example.com"] {
        let r = call(
            "POST",
            &server.url("/v1/sys/users"),
            Some(ROOT),
            Some(json!({"email": email, "password": "a-long-enough-passphrase"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.json);
        let r = call(
            "POST",
            &server.url("/v1/auth/user/login"),
            None,
            Some(json!({"email": email, "password": "a-long-enough-passphrase"})),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.json);
        sessions.push(Cli {
            config_dir: cli.config_dir.clone(),
            addr: cli.addr.clone(),
            token: r.json["auth"]["client_token"].as_str().unwrap().to_string(),
        });
    }
    let (reader, stranger) = (&sessions[0], &sessions[1]);
    cli.ok(&["project", "create", "myapp"]);
    cli.set("dev", "DB_URL", "postgres://dev-secret");
    cli.ok(&[
        "member",
        "add",
        "myapp",
        "reader@example.com",
        "--role",
        "readonly",
    ]);

    let r = reader.ok(&["secret", "get", "DB_URL", "-p", "myapp", "-e", "dev"]);
    assert_eq!(r.stdout, "postgres://dev-secret");
    let r = reader.ok(&["project", "list", "--format", "json"]);
    assert_eq!(r.json()["myapp"]["role"], "readonly");
    let r = reader.run_in(
        &reader.config_dir,
        &["secret", "set", "DB_URL", "-p", "myapp", "-e", "dev"],
        Some("overwritten"),
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);

    let existing = stranger.run(&["project", "show", "myapp"]);
    let missing = stranger.run(&["project", "show", "ghost"]);
    assert_eq!(existing.code, 1);
    assert_eq!(
        existing.stderr.replace("myapp", "X"),
        missing.stderr.replace("ghost", "X")
    );
    let r = stranger.ok(&["project", "list", "--format", "json"]);
    assert_eq!(r.json(), json!({}));
}

// R-AGT-1 from the command line: `zafe agent create` prints the token once
// (alone on stdout; `--format json` gives an object with `token`), the
// agent reads its environment and not the others, `list` shows it,
// `rotate-token` replaces the token and `revoke` ends it.
#[tokio::test]
async fn agents_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = dev_server(dir.path());
    cli.ok(&["project", "create", "myapp"]);
    cli.set("prod", "DB_URL", "postgres://prod-secret");
    cli.set("dev", "DB_URL", "postgres://dev-secret");

    let r = cli.ok(&[
        "agent",
        "create",
        "web-1",
        "--project",
        "myapp",
        "--env",
        "prod",
    ]);
    let token = r.stdout.trim().to_string();
    assert!(token.starts_with("zafe_ag_"), "{}", r.stdout);
    assert_eq!(r.stdout.lines().count(), 1, "the token alone: {}", r.stdout);
    assert!(r.stderr.contains("shown only this once"), "{}", r.stderr);
    let as_agent = |args: &[&str]| {
        let mut cmd = clean_command(BIN, &cli.config_dir, &cli.addr, Some(&token));
        cmd.args(args);
        run(cmd, None)
    };
    let read = as_agent(&["kv", "get", "--field", "value", "secret/myapp/prod/DB_URL"]);
    assert_eq!(read.code, 0, "{}", read.stderr);
    assert!(read.stdout.contains("postgres://prod-secret"));
    let denied = as_agent(&["kv", "get", "--field", "value", "secret/myapp/dev/DB_URL"]);
    assert_ne!(denied.code, 0);
    assert!(!denied.stdout.contains("dev-secret") && !denied.stderr.contains("dev-secret"));

    let json = cli
        .ok(&[
            "agent",
            "create",
            "worker",
            "--project",
            "myapp",
            "--env",
            "prod",
            "--env",
            "dev",
            "--format",
            "json",
        ])
        .json();
    assert!(
        json["token"].as_str().unwrap().starts_with("zafe_ag_"),
        "{json}"
    );
    assert_eq!(json["environments"], json!(["dev", "prod"]));
    let dup = cli.run(&[
        "agent",
        "create",
        "worker",
        "--project",
        "myapp",
        "--env",
        "prod",
    ]);
    assert_ne!(dup.code, 0);
    assert!(dup.stderr.contains("already exists"), "{}", dup.stderr);

    let listed = cli.ok(&["agent", "list", "--project", "myapp"]);
    assert!(
        listed.stdout.contains("web-1") && listed.stdout.contains("worker"),
        "{}",
        listed.stdout
    );
    assert!(!listed.stdout.contains(&token));
    let all = cli.ok(&["agent", "list", "--format", "json"]).json();
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");

    let rotated = cli.ok(&["agent", "rotate-token", "web-1", "--project", "myapp"]);
    let new = rotated.stdout.trim().to_string();
    assert!(new.starts_with("zafe_ag_") && new != token);
    let old = as_agent(&["kv", "get", "--field", "value", "secret/myapp/prod/DB_URL"]);
    assert_ne!(old.code, 0, "the old token is refused");

    cli.ok(&["agent", "revoke", "worker", "--project", "myapp"]);
    let left = cli
        .ok(&["agent", "list", "--project", "myapp", "--format", "json"])
        .json();
    assert_eq!(left.as_array().map(Vec::len), Some(1), "{left}");
    let gone = cli.run(&["agent", "revoke", "worker", "--project", "myapp"]);
    assert_ne!(gone.code, 0);
    assert!(gone.stderr.contains("no agent worker"), "{}", gone.stderr);
}

/// Waits up to ten seconds for `check` to hold.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

// R-AGT-1 and R-AGT-3 end to end: a real `zafe agent run` renders its
// template at start (0600), re-renders it as soon as the secret it uses
// changes (pushed over its WebSocket, not polled), and stops when it is
// revoked, keeping the file it rendered.
#[tokio::test]
async fn a_running_agent_renders_and_follows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = dev_server(dir.path());
    cli.ok(&["project", "create", "myapp"]);
    cli.set("prod", "DB_URL", "postgres://first");
    let token = cli
        .ok(&[
            "agent",
            "create",
            "web-1",
            "--project",
            "myapp",
            "--env",
            "prod",
        ])
        .stdout
        .trim()
        .to_string();
    let token_file = dir.path().join("agent.token");
    write_private(&token_file, &token);
    let template = dir.path().join("app.env.tpl");
    std::fs::write(&template, "DB_URL={{ zafe://myapp/prod/DB_URL }}\n").unwrap();
    let output = dir.path().join("out").join("app.env");
    std::fs::create_dir_all(output.parent().unwrap()).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "address = \"{}\"\ntoken_file = \"{}\"\n\n[[template]]\nsource = \"{}\"\ndestination = \"{}\"\n",
            cli.addr,
            token_file.display(),
            template.display(),
            output.display()
        ),
    )
    .unwrap();
    let agent_home = dir.path().join("agent-home");
    std::fs::create_dir_all(&agent_home).unwrap();
    let mut cmd = clean_command(BIN, &agent_home, &cli.addr, None);
    cmd.args(["agent", "run", "--config"]).arg(&config);
    let log = dir.path().join("agent.log");
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut agent = cmd.spawn().unwrap();

    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    eventually("the first render", || {
        read(&output) == "DB_URL=postgres://first\n"
    });
    assert_eq!(mode_of(&output), 0o600);
    // Once it is connected, a change reaches it by push: it renders again
    // without reconnecting.
    eventually("the connection", || read(&log).contains("connected to"));
    // `agent list` shows it connected, with the version it reported.
    eventually("the agent listed as connected", || {
        let listed = cli
            .ok(&["agent", "list", "--project", "myapp", "--format", "json"])
            .json();
        listed[0]["connected"] == true && listed[0]["version"] == env!("CARGO_PKG_VERSION")
    });
    cli.set("prod", "DB_URL", "postgres://second");
    eventually("the pushed re-render", || {
        read(&output) == "DB_URL=postgres://second\n"
    });

    cli.ok(&["agent", "revoke", "web-1", "--project", "myapp"]);
    eventually("the agent stops when revoked", || {
        agent.try_wait().unwrap().is_some()
    });
    assert!(!agent.wait().unwrap().success());
    assert_eq!(
        read(&output),
        "DB_URL=postgres://second\n",
        "the file is kept"
    );
}
