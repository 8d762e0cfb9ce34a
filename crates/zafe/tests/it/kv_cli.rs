//! End to end: `zafe kv ...` (R-KV-1) against the real `zafe server --dev`
//! on loopback: put from files and stdin, get (table, JSON, one field),
//! patch, list, history, delete, undelete, destroy, rollback, metadata, the
//! exit codes scripts rely on, and Vault's single-dash flags.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use serde_json::json;

const ROOT: &str = "kv-cli-root";

struct Cli {
    config_dir: PathBuf,
    addr: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    /// Runs `zafe <args>` with a clean environment; gives up after 60 s.
    fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = clean_command(BIN, &self.config_dir, &self.addr, Some(ROOT));
        cmd.args(args);
        run(cmd, stdin.map(str::as_bytes))
    }

    /// Runs and insists on exit code 0.
    fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "zafe {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }
}

fn dev_server(dir: &Path) -> (Server, Cli) {
    let (server, config_dir, addr) = crate::support::dev_server(dir, ROOT);
    (server, Cli { config_dir, addr })
}

// R-KV-1 through the CLI: every command, Vault's JSON, and exit codes.
#[tokio::test]
async fn kv_commands_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = dev_server(dir.path());
    let pw_file = dir.path().join("pw.txt");
    write_private(&pw_file, "correct horse battery staple");
    let pw_arg = format!("password=@{}", pw_file.display());

    // put: one value from a file, one from standard input; the output shows
    // the new version's metadata, never the values.
    let r = cli.run_with_stdin(
        &["kv", "put", "secret/app/db", "user=app", &pw_arg, "token=-"],
        Some("tok-from-stdin"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("secret/data/app/db") && r.stdout.contains("version"),
        "{}",
        r.stdout
    );
    for value in ["correct horse", "tok-from-stdin"] {
        assert!(
            !r.stdout.contains(value) && !r.stderr.contains(value),
            "put printed a value"
        );
    }

    // get: a table with the values (as `vault kv get`), Vault's JSON, and one raw field.
    let r = cli.ok(&["kv", "get", "secret/app/db"]);
    assert!(
        r.stdout.contains("correct horse battery staple") && r.stdout.contains("tok-from-stdin"),
        "{}",
        r.stdout
    );
    let j = cli
        .ok(&["kv", "get", "--format", "json", "secret/app/db"])
        .json();
    assert_eq!(
        j["data"]["data"],
        json!({"user": "app", "password": "correct horse battery staple", "token": "tok-from-stdin"})
    );
    assert_eq!(j["data"]["metadata"]["version"], 1);
    assert!(
        j.get("request_id").is_some() && j.get("lease_id").is_some(),
        "Vault's envelope"
    );
    assert_eq!(
        cli.ok(&["kv", "get", "--field", "password", "secret/app/db"])
            .stdout,
        "correct horse battery staple"
    );

    // A whole JSON object from stdin; patch keeps the other keys.
    let r = cli.run_with_stdin(
        &["kv", "put", "--format", "json", "secret/app/cfg", "-"],
        Some(r#"{"port": 5432, "host": "db"}"#),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["data"]["version"], 1);
    cli.ok(&["kv", "patch", "secret/app/db", "user=app2"]);
    let j = cli
        .ok(&["kv", "get", "--format", "json", "secret/app/db"])
        .json();
    assert_eq!(j["data"]["data"]["user"], "app2");
    assert_eq!(
        j["data"]["data"]["password"],
        "correct horse battery staple"
    );
    assert_eq!(j["data"]["metadata"]["version"], 2);

    // list: folders end in '/'; JSON is the key list, as `vault kv list`.
    let r = cli.ok(&["kv", "list", "secret"]);
    assert_eq!(r.stdout, "Keys\n----\napp/\n");
    assert_eq!(
        cli.ok(&["kv", "list", "--format", "json", "secret/app"])
            .json(),
        json!(["cfg", "db"])
    );

    // Versions: -version like Vault, and history shows states without values.
    let j = cli
        .ok(&["kv", "get", "-version=1", "-format=json", "secret/app/db"])
        .json();
    assert_eq!(j["data"]["data"]["user"], "app");
    cli.ok(&["kv", "delete", "secret/app/db"]);
    let r = cli.run(&["kv", "get", "secret/app/db"]);
    assert_eq!(r.code, 2, "a deleted version is 'not found' for scripts");
    assert!(r.stderr.contains("deleted"), "{}", r.stderr);
    let h = cli
        .ok(&["kv", "history", "--format", "json", "secret/app/db"])
        .json();
    assert_eq!(h["current_version"], 2);
    assert_eq!(h["versions"][0]["state"], "deleted");
    assert_eq!(h["versions"][1]["state"], "live");
    let table = cli.ok(&["kv", "history", "secret/app/db"]).stdout;
    assert!(
        table.contains("2 (current)")
            && table.contains("deleted")
            && !table.contains("correct horse"),
        "{table}"
    );
    cli.ok(&["kv", "undelete", "-versions=2", "secret/app/db"]);
    assert_eq!(
        cli.ok(&["kv", "get", "-field=user", "secret/app/db"])
            .stdout,
        "app2"
    );

    // rollback writes version 1's data as version 3.
    let j = cli
        .ok(&[
            "kv",
            "rollback",
            "--format",
            "json",
            "--version",
            "1",
            "secret/app/db",
        ])
        .json();
    assert_eq!(j["data"]["version"], 3);
    assert_eq!(
        cli.ok(&["kv", "get", "--field", "user", "secret/app/db"])
            .stdout,
        "app"
    );

    // destroy is for good, and rollback to it is refused.
    cli.ok(&["kv", "destroy", "--versions", "1,2", "secret/app/db"]);
    let r = cli.run(&["kv", "get", "--version", "1", "secret/app/db"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("destroyed"), "{}", r.stderr);
    let r = cli.run(&["kv", "rollback", "--version", "2", "secret/app/db"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("destroyed"), "{}", r.stderr);

    // metadata put / patch / get / delete.
    cli.ok(&[
        "kv",
        "metadata",
        "put",
        "--max-versions",
        "4",
        "--custom-metadata",
        "owner=team-a",
        "--custom-metadata",
        "tier=1",
        "secret/app/db",
    ]);
    cli.ok(&[
        "kv",
        "metadata",
        "patch",
        "--custom-metadata",
        "tier=",
        "--cas-required",
        "true",
        "secret/app/db",
    ]);
    let m = cli
        .ok(&["kv", "metadata", "get", "--format", "json", "secret/app/db"])
        .json();
    assert_eq!(m["data"]["max_versions"], 4);
    assert_eq!(m["data"]["cas_required"], true);
    assert_eq!(m["data"]["custom_metadata"], json!({"owner": "team-a"}));
    assert_eq!(m["data"]["versions"]["1"]["destroyed"], true);
    // cas_required: a plain put is refused (exit 1), a put with --cas works.
    let r = cli.run(&["kv", "put", "secret/app/db", "user=x"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("check-and-set parameter required"),
        "{}",
        r.stderr
    );
    cli.ok(&["kv", "put", "--cas", "3", "secret/app/db", "user=x"]);
    cli.ok(&["kv", "metadata", "delete", "secret/app/db"]);

    // Exit code 2 for nothing at PATH and for usage mistakes; 1 for errors.
    for args in [
        &["kv", "get", "secret/app/db"][..],
        &["kv", "metadata", "get", "secret/app/db"],
        &["kv", "history", "secret/app/db"],
        &["kv", "list", "secret/nothing"],
        &["kv", "get", "--field", "nope", "secret/app/cfg"],
        &["kv", "patch", "secret/app/db", "a=b"],
        &["kv", "put", "secret/app/x", "no-equals-sign"],
        &["kv", "put", "secret", "a=b"],
        &["kv", "undelete", "secret/app/cfg"],
    ] {
        let r = cli.run(args);
        assert_eq!(r.code, 2, "zafe {args:?}: {}", r.stderr);
    }
    let r = cli.run(&["kv", "put", "secret/app/x", "k=@/nonexistent/file"]);
    assert_eq!(r.code, 1, "{}", r.stderr);

    // A mount given with --mount; another mount does not see secret/'s data.
    let r = call(
        "POST",
        &server.url("/v1/sys/mounts/team/kv"),
        Some(ROOT),
        Some(json!({"type": "kv", "options": {"version": "2"}})),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.json);
    cli.ok(&["kv", "put", "--mount", "team/kv", "app/cfg", "host=team-db"]);
    assert_eq!(
        cli.ok(&[
            "kv", "get", "--mount", "team/kv", "--field", "host", "app/cfg"
        ])
        .stdout,
        "team-db"
    );
    assert_eq!(
        cli.ok(&["kv", "get", "--field", "host", "secret/app/cfg"])
            .stdout,
        "db"
    );
    assert_eq!(
        cli.ok(&[
            "kv", "list", "--mount", "team/kv", "--format", "json", "app"
        ])
        .json(),
        json!(["cfg"])
    );
    drop(server);
}

#[test]
fn kv_help_has_examples() {
    let out = Command::new(BIN)
        .args(["kv", "put", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("Examples:") && help.contains("@FILE"),
        "{help}"
    );
}
