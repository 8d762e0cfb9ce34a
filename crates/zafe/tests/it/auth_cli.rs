//! End to end with the real binary (R-AUTH-10, R-AUTH-11): `zafe login`
//! (token and AppRole), `zafe token create|lookup|renew|revoke|capabilities`
//! and `zafe approle role|role-id|secret-id`, against a real server on
//! 127.0.0.1.

use std::path::PathBuf;

use crate::support::*;

/// Runs the CLI with its own config dir (pins and token file); `token` goes
/// in ZAFE_TOKEN when given, else the token file is used.
struct Cli {
    dir: PathBuf,
    addr: String,
}

impl Cli {
    fn run(&self, args: &[&str], token: Option<&str>, envs: &[(&str, &str)], stdin: &str) -> Run {
        let mut cmd = inherited_command(&self.dir, &self.addr, token);
        cmd.args(args).envs(envs.iter().copied());
        run(cmd, Some(stdin.as_bytes()))
    }

    fn token_file(&self) -> PathBuf {
        self.dir.join("token")
    }
}

// R-AUTH-10, R-AUTH-11: login, token create/lookup/renew/revoke, AppRole login, from the command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_tokens_and_approle_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_dev_server("e2e-root", dir.path().join("s.log"));
    let cli = Cli {
        dir: dir.path().join("client"),
        addr: server.url(""),
    };

    // A wrong token is refused and nothing is stored.
    let r = cli.run(&["login"], None, &[], "zafe_s_wrong\n");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!cli.token_file().exists());
    // The right one is checked, then stored with mode 0600, and used by later commands.
    let r = cli.run(&["login"], None, &[], "e2e-root\n");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !r.stdout.contains("e2e-root"),
        "login does not echo the token"
    );
    assert_eq!(mode_of(&cli.token_file()), 0o600);
    let r = cli.run(&["token", "lookup", "--format", "json"], None, &[], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let me = r.json();
    assert_eq!(me["policies"], serde_json::json!(["root"]));
    assert!(me.get("id").is_none(), "lookups never print a token");

    // token create (JSON), lookup by accessor and by stdin, renew, capabilities.
    let r = cli.run(
        &[
            "token",
            "create",
            "--policy",
            "reader",
            "--ttl",
            "1h",
            "--metadata",
            "team=ops",
            "--format",
            "json",
        ],
        None,
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let created = r.json();
    let child = created["token"].as_str().unwrap().to_string();
    let accessor = created["token_accessor"].as_str().unwrap().to_string();
    assert!(child.starts_with("zafe_s_"));
    assert_eq!(
        created["token_policies"],
        serde_json::json!(["default", "reader"])
    );
    assert_eq!(created["token_duration"], 3600);
    let r = cli.run(
        &[
            "token",
            "lookup",
            "--accessor",
            &accessor,
            "--format",
            "json",
        ],
        None,
        &[],
        "",
    );
    assert_eq!(r.json()["meta"]["team"], "ops");
    let r = cli.run(
        &["token", "lookup", "--stdin"],
        None,
        &[],
        &format!("{child}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("token-") || r.stdout.contains("display_name"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains(&child));
    let r = cli.run(
        &["token", "renew", "--increment", "30m", "--format", "json"],
        Some(&child),
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["token_duration"], 1800);
    let r = cli.run(
        &[
            "token",
            "capabilities",
            "auth/token/lookup-self",
            "sys/mounts",
            "--format",
            "json",
        ],
        Some(&child),
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.json()["auth/token/lookup-self"],
        serde_json::json!(["read"])
    );
    assert_eq!(r.json()["sys/mounts"], serde_json::json!(["deny"]));
    // The subset rule from the command line: a reader cannot mint root.
    let r = cli.run(
        &["token", "create", "--policy", "root"],
        Some(&child),
        &[],
        "",
    );
    assert_eq!(r.code, 1);
    // Usage errors exit 2.
    assert_eq!(cli.run(&["token", "revoke"], None, &[], "").code, 2);
    assert_eq!(
        cli.run(&["token", "create", "--num-uses", "-1"], None, &[], "")
            .code,
        2
    );
    // Revoke by stdin: the child is gone.
    let r = cli.run(
        &["token", "revoke", "--stdin"],
        None,
        &[],
        &format!("{child}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(cli.run(&["token", "lookup"], Some(&child), &[], "").code, 1);

    // AppRole: enable, role, role id, secret id, login.
    let r = call(
        "POST",
        &server.url("/v1/sys/auth/approle"),
        Some("e2e-root"),
        Some(serde_json::json!({"type": "approle"})),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.json);
    let r = cli.run(
        &[
            "approle",
            "role",
            "create",
            "deployer",
            "--policy",
            "deploy",
            "--token-ttl",
            "20m",
            "--secret-id-num-uses",
            "1",
        ],
        None,
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = cli.run(
        &["approle", "role", "list", "--format", "json"],
        None,
        &[],
        "",
    );
    assert_eq!(r.json(), serde_json::json!(["deployer"]));
    let r = cli.run(
        &["approle", "role", "read", "deployer", "--format", "json"],
        None,
        &[],
        "",
    );
    assert_eq!(r.json()["token_ttl"], 1200);
    let r = cli.run(
        &["approle", "role-id", "deployer", "--format", "json"],
        None,
        &[],
        "",
    );
    let role_id = r.json()["role_id"].as_str().unwrap().to_string();
    let r = cli.run(
        &[
            "approle",
            "secret-id",
            "create",
            "deployer",
            "--metadata",
            "host=runner-1",
            "--format",
            "json",
        ],
        None,
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let secret_id = r.json()["secret_id"].as_str().unwrap().to_string();
    assert!(secret_id.starts_with("zafe_sid_"));
    let r = cli.run(
        &[
            "approle",
            "secret-id",
            "lookup",
            "deployer",
            "--stdin",
            "--format",
            "json",
        ],
        None,
        &[],
        &format!("{secret_id}\n"),
    );
    assert_eq!(r.json()["metadata"]["host"], "runner-1");
    assert!(!r.stdout.contains(&secret_id));

    // A wrong secret id: refused, the stored token is untouched.
    let before = std::fs::read_to_string(cli.token_file()).unwrap();
    let r = cli.run(
        &["login", "--method", "approle", "--role-id", &role_id],
        None,
        &[("ZAFE_SECRET_ID", "zafe_sid_wrong")],
        "",
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("invalid role or secret ID"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(cli.token_file()).unwrap(), before);
    // The right one (from standard input) logs in and replaces the stored token.
    let r = cli.run(
        &["login", "--method", "approle", "--role-id", &role_id],
        None,
        &[],
        &format!("{secret_id}\n"),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let stored = std::fs::read_to_string(cli.token_file()).unwrap();
    assert_ne!(stored, before);
    let r = cli.run(&["token", "lookup", "--format", "json"], None, &[], "");
    let me = r.json();
    assert_eq!(me["path"], "auth/approle/login");
    assert_eq!(me["policies"], serde_json::json!(["default", "deploy"]));
    assert_eq!(me["meta"]["role_name"], "deployer");
    // secret_id_num_uses = 1: a second login fails.
    let r = cli.run(
        &[
            "login",
            "--method",
            "approle",
            "--role-id",
            &role_id,
            "--no-store",
        ],
        None,
        &[("ZAFE_SECRET_ID", &secret_id)],
        "",
    );
    assert_eq!(r.code, 1);
    // The AppRole token may revoke itself (default policy); afterwards it is refused.
    let r = cli.run(&["token", "revoke", "--self"], None, &[], "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(cli.run(&["token", "lookup"], None, &[], "").code, 1);
    // Secret ids can be destroyed by accessor.
    let r = cli.run(
        &[
            "approle",
            "secret-id",
            "create",
            "deployer",
            "--format",
            "json",
        ],
        Some("e2e-root"),
        &[],
        "",
    );
    let (sid, acc) = (
        r.json()["secret_id"].as_str().unwrap().to_string(),
        r.json()["secret_id_accessor"].as_str().unwrap().to_string(),
    );
    let r = cli.run(
        &[
            "approle",
            "secret-id",
            "destroy",
            "deployer",
            "--accessor",
            &acc,
        ],
        Some("e2e-root"),
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = cli.run(
        &[
            "login",
            "--method",
            "approle",
            "--role-id",
            &role_id,
            "--no-store",
        ],
        None,
        &[("ZAFE_SECRET_ID", &sid)],
        "",
    );
    assert_eq!(r.code, 1);
    let r = cli.run(
        &["approle", "role", "delete", "deployer"],
        Some("e2e-root"),
        &[],
        "",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = cli.run(
        &["approle", "role", "list", "--format", "json"],
        Some("e2e-root"),
        &[],
        "",
    );
    assert_eq!(r.json(), serde_json::json!([]));

    // No token or secret id ever reached the server's log.
    let log = server.log_text();
    for secret in [&child, &secret_id, &sid, &stored] {
        assert!(
            !log.contains(secret.trim()),
            "a secret is in the server log"
        );
    }
}
