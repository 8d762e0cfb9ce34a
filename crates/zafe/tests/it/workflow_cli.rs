//! End to end (R-DEV-2, R-DEV-4, the workflow part of issue 6): `zafe
//! import`, `zafe inject` and `zafe export` against the real `zafe server
//! --dev` on loopback, in a real git repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;
use serde_json::{Value, json};
use zafe_core::dotenv;

const ROOT: &str = "workflow-cli-root";

/// 20 keys: comments, blank lines, `export`, every quoting style,
/// multi-line values, `#` inside values, hostile shell characters.
const SAMPLE_ENV: &str = r#"# Application settings
APP_NAME=zafe-demo-Vq1
export APP_ENV=development-Vq2

# Database
DATABASE_URL=postgres://app:pg-pass-Vq3@localhost:5432/app   # local only
DB_PASSWORD='single $quoted Vq4 "double" inside'
DB_REPLICA = "replica-Vq5 with \"escapes\" and \\ backslash"
export REDIS_URL="redis://:redis-Vq6@localhost:6379/0"
HASH_IN_VALUE=abc#def-Vq7
EMPTY_LOOKING=empty-looking-Vq8
  INDENTED_KEY=indented-Vq9

# Keys and certificates
PRIVATE_KEY="-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-Vq10
line-two-Vq10b
-----END PRIVATE KEY-----"
SSH_KEY='ssh-ed25519 AAAAC3Nza-Vq11
second line of the single-quoted value Vq11b'
JWT_SECRET=`backtick-Vq12 it's "fine"`
API_TOKEN=tok_Vq13_0123456789abcdef
SHELL_HOSTILE='$(touch /tmp/zafe-owned-Vq14) `id` ; rm -rf / &'
ESCAPES="tab\there newline\nVq15 end"
SPACES_AROUND=  padded value Vq16   
UNICODE=pässwörd-Vq17-€
export LAST_ONE=last-Vq18 # trailing comment
QUOTE_IN_DOUBLE="it's Vq19"
URL_WITH_QUERY=https://example.com/?a=1&b=Vq20
"#;

struct Cli {
    config_dir: PathBuf,
    addr: String,
    token: String,
}

impl Cli {
    /// Runs `zafe <args>` in `dir` with a clean environment; 60 s at most.
    fn run_in(&self, dir: &Path, args: &[&str]) -> Run {
        let mut cmd = clean_command(BIN, &self.config_dir, &self.addr, Some(&self.token));
        cmd.args(args).current_dir(dir);
        run(cmd, None)
    }

    fn ok_in(&self, dir: &Path, args: &[&str]) -> Run {
        let r = self.run_in(dir, args);
        assert_eq!(
            r.code, 0,
            "zafe {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r
    }
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The sample's values, as the one parser reads them.
fn sample_values(text: &str) -> BTreeMap<String, String> {
    dotenv::parse(text)
        .unwrap()
        .assignments()
        .map(|a| (a.key().to_string(), a.value().expose().to_string()))
        .collect()
}

/// Every value, and each line of multi-line values, must be absent.
fn assert_no_value(text: &str, values: &BTreeMap<String, String>, what: &str) {
    for (key, value) in values {
        assert!(
            !text.contains(value.as_str()),
            "{what} contains the value of {key}"
        );
        for line in value.lines().filter(|l| l.len() >= 6) {
            assert!(!text.contains(line), "{what} contains a line of {key}");
        }
    }
}

fn start(dir: &Path) -> (Server, Cli) {
    let (server, config_dir, addr) = dev_server(dir, ROOT);
    let cli = Cli {
        config_dir,
        addr,
        token: ROOT.into(),
    };
    (server, cli)
}

async fn resolve_entries(server: &Server) -> usize {
    let text = http()
        .get(server.url("/v1/sys/audit-log/export"))
        .header("X-Vault-Token", ROOT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.contains("\"path\":\"sys/resolve\""))
        .count()
}

#[tokio::test]
async fn import_inject_and_export_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (server, cli) = start(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    git(&project, &["init", "-q"]);
    std::fs::write(project.join("README.md"), "demo\n").unwrap();
    let env_path = project.join(".env");
    std::fs::write(&env_path, SAMPLE_ENV).unwrap();
    let values = sample_values(SAMPLE_ENV);
    assert_eq!(values.len(), 20);
    let import = ["import", "--project", "myapp", "--env", "dev"];

    // Import: everything added; the report names keys, never values.
    let r = cli.ok_in(&project, &import);
    assert!(
        r.stdout.contains("added") && r.stdout.contains("20"),
        "{}",
        r.stdout
    );
    assert_no_value(&r.stdout, &values, "import's output");
    assert_no_value(&r.stderr, &values, "import's errors");

    // .env.zafe: same keys, order and comments; references only.
    let zafe_text = std::fs::read_to_string(project.join(".env.zafe")).unwrap();
    assert_no_value(&zafe_text, &values, ".env.zafe");
    let references = dotenv::parse(&zafe_text).unwrap();
    let keys: Vec<&str> = references.assignments().map(|a| a.key()).collect();
    let original = dotenv::parse(SAMPLE_ENV).unwrap();
    let original_keys: Vec<&str> = original.assignments().map(|a| a.key()).collect();
    assert_eq!(keys, original_keys);
    for assignment in references.assignments() {
        assert_eq!(
            assignment.value().expose(),
            format!("zafe://myapp/dev/{}", assignment.key())
        );
    }
    let comments = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(comments(&zafe_text), comments(SAMPLE_ENV));
    assert!(zafe_text.contains("export APP_ENV=zafe://myapp/dev/APP_ENV\n"));
    assert!(zafe_text.contains("DATABASE_URL=zafe://myapp/dev/DATABASE_URL   # local only\n"));
    assert!(zafe_text.contains("export LAST_ONE=zafe://myapp/dev/LAST_ONE # trailing comment\n"));

    // The original: backed up 0600 outside the repository, then removed.
    assert!(!env_path.exists(), "the plaintext .env was removed");
    let backup_dir = cli.config_dir.join("backups/myapp/dev");
    let backups: Vec<PathBuf> = std::fs::read_dir(&backup_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(backups.len(), 1);
    assert_eq!(std::fs::read_to_string(&backups[0]).unwrap(), SAMPLE_ENV);
    assert_eq!(mode_of(&backups[0]), 0o600);
    assert_eq!(mode_of(&backup_dir), 0o700);
    assert!(
        backups[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".env.")
    );

    // .gitignore holds .env; git stages no plaintext value anywhere.
    assert_eq!(
        std::fs::read_to_string(project.join(".gitignore")).unwrap(),
        ".env\n"
    );
    std::fs::write(&env_path, SAMPLE_ENV).unwrap(); // as if it came back
    git(&project, &["add", "-A"]);
    let staged = git(&project, &["diff", "--cached", "--name-only"]);
    let staged: Vec<&str> = staged.lines().collect();
    assert_eq!(staged, [".env.zafe", ".gitignore", "README.md"]);
    for file in &staged {
        let content = git(&project, &["show", &format!(":{file}")]);
        assert_no_value(&content, &values, file);
    }

    // Importing the references file by mistake stores and moves nothing.
    let r = cli.ok_in(
        &project,
        &["import", ".env.zafe", "--project", "myapp", "--env", "dev"],
    );
    assert!(r.stdout.contains("Nothing to import"), "{}", r.stdout);
    assert_eq!(
        std::fs::read_to_string(project.join(".env.zafe")).unwrap(),
        zafe_text
    );
    assert!(!project.join(".env.zafe.zafe").exists());

    // Re-import (the file kept this time): idempotent, nothing written.
    let r = cli.ok_in(&project, &[&import[..], &["--keep-original"]].concat());
    assert!(
        r.stdout.contains("unchanged") && !r.stdout.contains("added"),
        "{}",
        r.stdout
    );
    assert_eq!(
        std::fs::read_to_string(project.join(".env.zafe")).unwrap(),
        zafe_text
    );
    assert_eq!(
        std::fs::read_to_string(project.join(".gitignore")).unwrap(),
        ".env\n"
    );
    assert_eq!(
        std::fs::read_dir(&backup_dir).unwrap().count(),
        1,
        "no new backup"
    );
    assert!(env_path.exists());
    let r = cli.ok_in(
        &project,
        &[&import[..], &["--keep-original", "--format", "json"]].concat(),
    );
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["unchanged"].as_array().unwrap().len(), 20);
    assert_eq!(report["added"], json!([]));

    // A changed value is refused without --force; nothing moves.
    let changed = SAMPLE_ENV.replace("tok_Vq13_0123456789abcdef", "tok_NEW_Vq13");
    std::fs::write(&env_path, &changed).unwrap();
    let r = cli.run_in(&project, &[&import[..], &["--keep-original"]].concat());
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("API_TOKEN") && r.stderr.contains("--force"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("tok_NEW_Vq13") && !r.stderr.contains("tok_Vq13_"));
    assert_eq!(std::fs::read_to_string(&env_path).unwrap(), changed);
    let r = cli.ok_in(
        &project,
        &[
            "kv",
            "get",
            "--field",
            "value",
            "secret/myapp/dev/API_TOKEN",
        ],
    );
    assert_eq!(r.stdout, "tok_Vq13_0123456789abcdef");
    let r = cli.ok_in(
        &project,
        &[
            &import[..],
            &["--keep-original", "--force", "--format", "json"],
        ]
        .concat(),
    );
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["changed"], json!(["API_TOKEN"]));
    let r = cli.ok_in(
        &project,
        &[
            "kv",
            "get",
            "--field",
            "value",
            "secret/myapp/dev/API_TOKEN",
        ],
    );
    assert_eq!(r.stdout, "tok_NEW_Vq13");
    let values = sample_values(&changed);

    // Export, three formats, each 0600 even over an existing 0644 file.
    let out = project.join("exported");
    std::fs::write(&out, "old").unwrap();
    std::fs::set_permissions(&out, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let export = [
        "export",
        "--project",
        "myapp",
        "--env",
        "dev",
        "-o",
        "exported",
    ];
    cli.ok_in(&project, &[&export[..], &["--format", "json"]].concat());
    assert_eq!(mode_of(&out), 0o600);
    let exported: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(exported, values);
    cli.ok_in(&project, &export);
    assert_eq!(mode_of(&out), 0o600);
    assert_eq!(
        sample_values(&std::fs::read_to_string(&out).unwrap()),
        values
    );
    cli.ok_in(&project, &[&export[..], &["--format", "shell"]].concat());
    assert_eq!(mode_of(&out), 0o600);
    let mut script = std::fs::read_to_string(&out).unwrap();
    for key in values.keys() {
        script.push_str(&format!("printf '%s\\036' \"${key}\"\n"));
    }
    let shell = Command::new("sh").arg("-c").arg(&script).output().unwrap();
    assert!(shell.status.success());
    let printed = String::from_utf8(shell.stdout).unwrap();
    let read: Vec<&str> = printed.split('\u{1e}').collect();
    let expected: Vec<&str> = values.values().map(String::as_str).collect();
    assert_eq!(&read[..expected.len()], &expected[..]);
    assert!(!Path::new("/tmp/zafe-owned-Vq14").exists());

    // Without flags, project and environment come from .zafe.toml.
    std::fs::write(
        project.join(".zafe.toml"),
        "project = \"myapp\"\nenvironment = \"dev\"\n",
    )
    .unwrap();
    let r = cli.ok_in(&project, &["export", "--format", "json"]);
    let exported: BTreeMap<String, String> = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(exported, values);

    // Inject: one batched request for 50 references; 0600 output.
    let mut many = String::new();
    for i in 0..50 {
        many.push_str(&format!("K{i}=value-{i}-Wz\n"));
    }
    let big = project.join("big.env");
    std::fs::write(&big, &many).unwrap();
    cli.ok_in(
        &project,
        &["import", "big.env", "--project", "myapp", "--env", "big"],
    );
    let mut template = String::from("helm: {{ .Values.keep }}\n");
    for i in 0..50 {
        template.push_str(&format!("k{i}: {{{{ zafe://myapp/big/K{i} }}}}\n"));
    }
    template.push_str("db: {{zafe://myapp/dev/DATABASE_URL}}\n");
    std::fs::write(project.join("config.tpl"), &template).unwrap();
    let before = resolve_entries(&server).await;
    cli.ok_in(
        &project,
        &["inject", "-i", "config.tpl", "-o", "config.yml"],
    );
    assert_eq!(
        resolve_entries(&server).await - before,
        1,
        "one resolve request"
    );
    let rendered = std::fs::read_to_string(project.join("config.yml")).unwrap();
    assert_eq!(mode_of(&project.join("config.yml")), 0o600);
    assert!(rendered.starts_with("helm: {{ .Values.keep }}\nk0: value-0-Wz\n"));
    assert!(rendered.contains("k49: value-49-Wz\n"));
    assert!(rendered.ends_with(&format!("db: {}\n", values["DATABASE_URL"])));

    // A missing reference fails, naming it, and writes nothing.
    std::fs::write(
        project.join("bad.tpl"),
        "a: {{ zafe://myapp/dev/APP_NAME }}\nb: {{ zafe://myapp/dev/NOPE }}\n",
    )
    .unwrap();
    let r = cli.run_in(&project, &["inject", "-i", "bad.tpl", "-o", "bad.out"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("zafe://myapp/dev/NOPE"), "{}", r.stderr);
    assert!(!r.stderr.contains("zafe-demo-Vq1"));
    assert!(!project.join("bad.out").exists());

    // The audit log holds no value either.
    let log = http()
        .get(server.url("/v1/sys/audit-log/export"))
        .header("X-Vault-Token", ROOT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_no_value(&log, &values, "the audit log");
    assert!(!log.contains("value-7-Wz"));
}

// A write that fails part-way: the report says what was stored and what
// not, the original file is untouched, and nothing else is written.
#[tokio::test]
async fn a_failed_write_changes_nothing_on_disk_and_says_what_was_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root_cli) = start(dir.path());
    let policy = r#"
path "secret/data/myapp/partial/A*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/myapp/partial/*" { capabilities = ["list"] }
"#;
    let a = call(
        "PUT",
        &server.url("/v1/sys/policy/partial"),
        Some(ROOT),
        Some(json!({ "policy": policy })),
    )
    .await;
    assert!(a.status < 300, "{:?}", a.json);
    let a = call(
        "POST",
        &server.url("/v1/auth/token/create"),
        Some(ROOT),
        Some(json!({ "policies": ["partial"] })),
    )
    .await;
    let cli = Cli {
        token: a.json["auth"]["client_token"].as_str().unwrap().to_string(),
        config_dir: root_cli.config_dir.clone(),
        addr: root_cli.addr.clone(),
    };
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let text = "A1=one-Pq1\nA2=two-Pq2\nB1=three-Pq3\nA3=four-Pq4\n";
    std::fs::write(project.join(".env"), text).unwrap();

    let r = cli.run_in(
        &project,
        &["import", "--project", "myapp", "--env", "partial"],
    );
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(r.stderr.contains("storing B1"), "{}", r.stderr);
    assert!(r.stderr.contains("stored (2): A1, A2"), "{}", r.stderr);
    assert!(r.stderr.contains("not stored (2): B1, A3"), "{}", r.stderr);
    for value in ["one-Pq1", "two-Pq2", "three-Pq3", "four-Pq4"] {
        assert!(!r.stderr.contains(value) && !r.stdout.contains(value));
    }
    assert_eq!(std::fs::read_to_string(project.join(".env")).unwrap(), text);
    assert!(!project.join(".env.zafe").exists());
    assert!(!project.join(".gitignore").exists());
    assert!(!cli.config_dir.join("backups").exists());

    // With the rights fixed (root), the same command finishes the job.
    let r = root_cli.ok_in(
        &project,
        &[
            "import",
            "--project",
            "myapp",
            "--env",
            "partial",
            "--format",
            "json",
        ],
    );
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["unchanged"], json!(["A1", "A2"]));
    assert_eq!(report["added"], json!(["B1", "A3"]));
}

// Bad input: a clear error with the line, no value, and nothing touched.
#[tokio::test]
async fn a_broken_env_file_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, cli) = start(dir.path());
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let text = "GOOD=fine\nBROKEN=\"unterminated-Xr5\nMORE=x\n";
    std::fs::write(project.join(".env"), text).unwrap();
    let r = cli.run_in(&project, &["import", "--project", "myapp", "--env", "dev"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains(".env: line 2:"), "{}", r.stderr);
    assert!(!r.stderr.contains("unterminated-Xr5"));
    assert_eq!(std::fs::read_to_string(project.join(".env")).unwrap(), text);
    assert!(!project.join(".env.zafe").exists());
}
