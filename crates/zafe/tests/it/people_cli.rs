//! End to end with the real binary (R-AUTH-4, R-AUTH-6, R-AUTH-13): the
//! first-run link a new server prints, `zafe operator bootstrap-admin`,
//! `zafe login --email`, commands with the stored session (refreshed
//! transparently when its access token expires), `zafe user ...`, and
//! `zafe logout`; no token or password ever reaches the server's log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::*;

const ADMIN: &str = "admin@example.com";
const ADMIN_PASSWORD: &str = "admin-passphrase-for-cli";
const BOB: &str = "bob@example.com";
const BOB_PASSWORD: &str = "bob-has-a-long-passphrase";

/// The CLI with its own configuration directory; never ZAFE_TOKEN.
fn zafe(addr: &str, dir: &Path, args: &[&str], envs: &[(&str, &str)], stdin: &str) -> Run {
    let mut cmd = inherited_command(dir, addr, None);
    cmd.args(args).envs(envs.iter().copied());
    run(cmd, Some(stdin.as_bytes()))
}

fn read(path: &PathBuf) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_session_refresh_and_logout_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let key_file = dir.path().join("master.key");
    write_private(&key_file, &"3c".repeat(32));
    let sections = format!(
        "[seal]\nmaster_key_file = \"{}\"\n\
         [auth.password]\nm_cost = 1024\nt_cost = 1\n\
         [auth.sessions]\naccess_ttl_secs = 2\n",
        key_file.display()
    );
    let cfg = config_file(dir.path(), addr, "", &sections);
    let mut server = Server::start_config(&cfg, &[], addr, dir.path().join("server.log"));
    let url = format!("http://{addr}");
    init(&server, 1, 1).await;

    // R-AUTH-13: the server printed a one-time link; no account exists.
    let mut log = String::new();
    for _ in 0..100 {
        log = server.log_text();
        if log.contains("/ui/setup#token=") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = log
        .find("ZAFE_SETUP_TOKEN=")
        .expect("the headless command is printed");
    let setup_token: String = log[at + "ZAFE_SETUP_TOKEN=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    assert!(setup_token.starts_with("zafe_su_"), "{setup_token}");
    assert!(log.contains(&format!("{url}/ui/setup#token={setup_token}")));

    // Files, not the credential store, so the test can look at them.
    let admin_dir = dir.path().join("admin");
    let files = [("ZAFE_KEYRING", "off")];
    let run = zafe(
        &url,
        &admin_dir,
        &[
            "operator",
            "bootstrap-admin",
            "--email",
            ADMIN,
            "--password-stdin",
        ],
        &[files[0], ("ZAFE_SETUP_TOKEN", &setup_token)],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .ok();
    assert!(run.stdout.contains("first administrator"), "{}", run.stdout);
    let token_file = admin_dir.join("token");
    let refresh_file = admin_dir.join("refresh-token");
    assert_eq!(mode_of(&token_file), 0o600);
    assert_eq!(mode_of(&refresh_file), 0o600);
    let first_access = read(&token_file);
    let first_refresh = read(&refresh_file);
    assert!(first_access.starts_with("zafe_at_"));
    assert!(first_refresh.starts_with("zafe_rt_"));
    // The link worked once.
    let again = zafe(
        &url,
        &dir.path().join("other"),
        &[
            "operator",
            "bootstrap-admin",
            "--email",
            "x@example.com",
            "--password-stdin",
        ],
        &[files[0], ("ZAFE_SETUP_TOKEN", &setup_token)],
        "another-long-passphrase\n",
    );
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("invalid, expired or already used"),
        "{}",
        again.stderr
    );

    // The administrator's session works for everything.
    zafe(
        &url,
        &admin_dir,
        &["kv", "put", "secret/app", "db=s3cret-value"],
        &files,
        "",
    )
    .ok();
    zafe(
        &url,
        &admin_dir,
        &["user", "create", BOB, "--password-stdin"],
        &files,
        &format!("{BOB_PASSWORD}\n"),
    )
    .ok();
    let list = zafe(
        &url,
        &admin_dir,
        &["user", "list", "--format", "json"],
        &files,
        "",
    )
    .ok();
    assert_eq!(list.json()["keys"].as_array().unwrap().len(), 2);

    // After the access token expires, the next command refreshes the
    // session by itself, once, and stores the new pair.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let got = zafe(
        &url,
        &admin_dir,
        &["kv", "get", "-field=db", "secret/app"],
        &files,
        "",
    )
    .ok();
    assert_eq!(got.stdout.trim(), "s3cret-value");
    let second_access = read(&token_file);
    assert!(second_access.starts_with("zafe_at_") && second_access != first_access);
    assert_ne!(read(&refresh_file), first_refresh);

    // Bob logs in with a password; a wrong one exits 1 with the one message.
    let bob_dir = dir.path().join("bob");
    let wrong = zafe(
        &url,
        &bob_dir,
        &["login", "--email", BOB, "--password-stdin"],
        &files,
        "not-his-password\n",
    );
    assert_eq!(wrong.code, 1);
    assert!(
        wrong.stderr.contains("invalid email or password"),
        "{}",
        wrong.stderr
    );
    let run = zafe(
        &url,
        &bob_dir,
        &[
            "login",
            "--email",
            BOB,
            "--password-stdin",
            "--format",
            "json",
        ],
        &files,
        &format!("{BOB_PASSWORD}\n"),
    )
    .ok();
    assert_eq!(run.json()["email"], BOB);
    // Bob has no project or policy yet: the secret is not his. To a person,
    // `secret/app` is a path of project "app", which he is not a member of:
    // not found (exit 2, as for a missing secret), never "exists but denied".
    assert_eq!(
        zafe(&url, &bob_dir, &["kv", "get", "secret/app"], &files, "").code,
        2
    );
    let bob_access = read(&bob_dir.join("token"));

    // Logout ends the session on the server and forgets it here.
    zafe(&url, &bob_dir, &["logout"], &files, "").ok();
    assert!(!bob_dir.join("token").exists() && !bob_dir.join("refresh-token").exists());
    let r = call(
        "GET",
        &server.url("/v1/auth/user/self"),
        Some(&bob_access),
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let again = zafe(&url, &bob_dir, &["logout"], &files, "");
    assert_eq!(again.code, 1);

    // An administrator disables bob and sets his password.
    zafe(&url, &admin_dir, &["user", "disable", BOB], &files, "").ok();
    let read_bob = zafe(
        &url,
        &admin_dir,
        &["user", "read", BOB, "--format", "json"],
        &files,
        "",
    )
    .ok();
    assert_eq!(read_bob.json()["disabled"], true);
    zafe(&url, &admin_dir, &["user", "delete", BOB], &files, "").ok();

    // With the OS credential store where there is one (files otherwise),
    // the same flow works.
    let store_dir = dir.path().join("store");
    let run = zafe(
        &url,
        &store_dir,
        &[
            "login",
            "--email",
            ADMIN,
            "--password-stdin",
            "--format",
            "json",
        ],
        &[],
        &format!("{ADMIN_PASSWORD}\n"),
    )
    .ok();
    let stored_in = run.json()["stored_in"].as_str().unwrap().to_string();
    let got = zafe(
        &url,
        &store_dir,
        &["kv", "get", "-field=db", "secret/app"],
        &[],
        "",
    )
    .ok();
    assert_eq!(got.stdout.trim(), "s3cret-value");
    zafe(&url, &store_dir, &["logout"], &[], "").ok();
    assert_eq!(
        zafe(&url, &store_dir, &["kv", "get", "secret/app"], &[], "").code,
        1,
        "stored in {stored_in}"
    );

    // Nothing secret in the server's output but the (used) setup link.
    let log = server.log_text();
    for secret in [
        first_access.as_str(),
        first_refresh.as_str(),
        second_access.as_str(),
        bob_access.as_str(),
        ADMIN_PASSWORD,
        BOB_PASSWORD,
        "s3cret-value",
    ] {
        assert!(!log.contains(secret), "{secret} in the server log");
    }
    server.stop();
}
