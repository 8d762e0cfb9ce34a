//! End to end with the real binary: `zafe login --oidc` through a real
//! OpenID provider (tests/oidc, `oidc-provider` under node), with BROWSER
//! set to a script and with --no-browser; and `zafe totp enroll|disable`
//! (R-AUTH-8, R-AUTH-9).

#[path = "../../../zafe-server/tests/support/oidc_provider.rs"]
mod oidc_provider;

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple 42";

/// `zafe` as the user's client: the test's environment without Zafe's or
/// Vault's variables, its own configuration directory, stdin piped.
fn cli(dir: &Path, addr: &str, envs: &[(&str, &str)]) -> Command {
    let mut cmd = inherited_command(dir, addr, None);
    // The session goes to files (token, refresh-token) this test reads.
    cmd.env("ZAFE_KEYRING", "off")
        .stdin(Stdio::piped())
        .envs(envs.iter().copied());
    cmd
}

/// Waits for a child with a deadline; returns (exit code, stdout, stderr).
fn finish(child: Child, stderr_seen: String) -> (i32, String, String) {
    let r = crate::support::finish(child, "(oidc)");
    (r.code, r.stdout, stderr_seen + &r.stderr)
}

/// Reads stderr lines until one satisfies `want`; returns all read so far.
fn read_stderr_until(child: &mut Child, want: impl Fn(&str) -> bool) -> String {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = String::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("expected output did not come; stderr so far:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if want(&line) {
            return seen;
        }
    }
}

async fn start_server(dir: &Path, issuer: &str) -> (Server, String, String) {
    let secret = dir.join("oidc-client-secret");
    write_private(&secret, oidc_provider::CLIENT_SECRET);
    let addr = free_addr();
    let sections = format!(
        "[oidc]\nissuer = \"{issuer}\"\nclient_id = \"{}\"\nclient_secret_file = \"{}\"\n\
         [auth.registration]\nmode = \"domains\"\ndomains = [\"example.com\"]\n",
        oidc_provider::CLIENT_ID,
        secret.display()
    );
    let cfg = config_file(dir, addr, "", &sections);
    let server = Server::start_config(&cfg, &[], addr, dir.join("server.log"));
    let (keys, root) = init(&server, 1, 1).await;
    unseal(&server, &keys[0]).await;
    // OIDC logins make accounts only once an administrator exists (the
    // first account comes from the setup link, R-AUTH-13).
    let admin = call(
        "POST",
        &server.url("/v1/sys/users"),
        Some(&root),
        Some(json!({"email": "admin@example.com", "password": "the administrator's passphrase 1", "admin": true})),
    )
    .await;
    assert!((200..300).contains(&admin.status), "{:?}", admin.json);
    (server, root, format!("http://{addr}"))
}

/// Drives the login URL at the provider, then delivers the provider's
/// redirect to the CLI's loopback listener, as the browser would.
async fn browse(auth_url: &str) {
    let url = url::Url::parse(auth_url).unwrap();
    let redirect = oidc_provider::param(&url, "redirect_uri").unwrap();
    assert!(redirect.starts_with("http://127.0.0.1:"), "{redirect}");
    let back = oidc_provider::follow_login(auth_url, &redirect).await;
    let page = http().get(back.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("login complete"));
}

fn stored_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("token"))
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zafe_login_oidc_through_a_real_provider() {
    let Some(provider) = oidc_provider::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_server, _root, addr) = start_server(dir.path(), &provider.issuer).await;
    let client_dir = dir.path().join("client");

    // 1. BROWSER is a script that records the URL it was asked to open.
    let opened = dir.path().join("opened-url");
    let script = dir.path().join("browser.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" > {}.tmp && mv {0}.tmp {0}\n",
            opened.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let child = cli(&client_dir, &addr, &[("BROWSER", script.to_str().unwrap())])
        .args(["login", "--oidc", "--format", "json"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !opened.exists() {
        assert!(Instant::now() < deadline, "BROWSER was not run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let auth_url = std::fs::read_to_string(&opened).unwrap().trim().to_string();
    assert!(auth_url.starts_with(&provider.issuer), "{auth_url}");
    browse(&auth_url).await;
    let (code, out, err) = finish(child, String::new());
    assert_eq!(code, 0, "{out}\n{err}");
    let info: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["email"], "alice@example.com");
    let token = stored_token(&client_dir);
    assert!(token.starts_with("zafe_at_"));
    let refresh = std::fs::read_to_string(client_dir.join("refresh-token")).unwrap();
    assert!(
        refresh.trim().starts_with("zafe_rt_"),
        "stored like a password login's session"
    );
    let me = call(
        "GET",
        &format!("{addr}/v1/auth/user/self"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(me.status, 200, "{:?}", me.json);
    assert_eq!(me.json["data"]["email"], "alice@example.com");

    // 2. --no-browser prints the URL; a callback with another state is
    //    turned away and the CLI keeps waiting for the real one.
    let mut child = cli(&client_dir, &addr, &[("BROWSER", "/bin/false")])
        .args(["login", "--oidc", "--no-browser"])
        .spawn()
        .unwrap();
    let seen = read_stderr_until(&mut child, |l| l.trim_start().starts_with("http"));
    let auth_url = seen
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("http"))
        .unwrap()
        .to_string();
    let url = url::Url::parse(&auth_url).unwrap();
    let redirect = oidc_provider::param(&url, "redirect_uri").unwrap();
    let forged = http()
        .get(format!("{redirect}?code=stolen&state=not-this-login"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    browse(&auth_url).await;
    let (code, out, err) = finish(child, seen);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        !err.contains("zafe_at_") && !out.contains("zafe_rt_"),
        "tokens are not printed"
    );
    assert_ne!(stored_token(&client_dir), token, "a new session");

    // 3. Nobody comes back: the CLI gives up after its timeout.
    let child = cli(&client_dir, &addr, &[])
        .args(["login", "--oidc", "--no-browser", "--oidc-timeout", "1"])
        .spawn()
        .unwrap();
    let (code, _, err) = finish(child, String::new());
    assert_eq!(code, 1);
    assert!(err.contains("no answer from the browser"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zafe_totp_enroll_and_disable() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = config_file(dir.path(), addr, "", "");
    let server = Server::start_config(&cfg, &[], addr, dir.path().join("server.log"));
    let (keys, root) = init(&server, 1, 1).await;
    unseal(&server, &keys[0]).await;
    let addr = format!("http://{addr}");
    let created = call(
        "POST",
        &format!("{addr}/v1/sys/users"),
        Some(&root),
        Some(json!({"email": "tom@example.com", "password": PASSWORD})),
    )
    .await;
    assert!(created.status < 300, "{:?}", created.json);
    let login = |code: Option<String>| {
        let addr = addr.clone();
        async move {
            let mut body = json!({"email": "tom@example.com", "password": PASSWORD});
            if let Some(c) = code {
                body["totp_code"] = json!(c);
            }
            call(
                "POST",
                &format!("{addr}/v1/auth/user/login"),
                None,
                Some(body),
            )
            .await
        }
    };
    let session = login(None).await.json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    let client_dir = dir.path().join("client");

    let mut child = cli(&client_dir, &addr, &[("ZAFE_TOKEN", &session)])
        .args(["totp", "enroll"])
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{PASSWORD}").unwrap();
    let seen = read_stderr_until(&mut child, |l| l.contains("enter this secret by hand"));
    let secret = seen
        .lines()
        .find_map(|l| l.split("by hand: ").nth(1))
        .unwrap()
        .trim()
        .to_string();
    let app = totp_rs::TOTP::new(
        totp_rs::Algorithm::SHA1,
        6,
        1,
        30,
        totp_rs::Secret::Encoded(secret).to_bytes().unwrap(),
        None,
        "tom".into(),
    )
    .unwrap();
    let now = || time::OffsetDateTime::now_utc().unix_timestamp() as u64;
    writeln!(stdin, "{}", app.generate(now())).unwrap();
    drop(stdin);
    let (code, out, err) = finish(child, seen);
    assert_eq!(code, 0, "{out}\n{err}");
    let recovery: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.len() == 11 && l.as_bytes()[5] == b'-')
        .collect();
    assert_eq!(recovery.len(), 10, "{out}");

    let a = login(None).await;
    assert_eq!(a.json["mfa_required"], true, "{:?}", a.json);
    // `zafe login --email` asks for the code after the password.
    let mut child = cli(&client_dir, &addr, &[])
        .args(["login", "--email", "tom@example.com", "--password-stdin"])
        .spawn()
        .unwrap();
    writeln!(
        child.stdin.take().unwrap(),
        "{PASSWORD}\n{}",
        app.generate(now() + 30)
    )
    .unwrap();
    let (code, out, err) = finish(child, String::new());
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(stored_token(&client_dir).starts_with("zafe_at_"));
    // Without a code it fails, and says why.
    let mut child = cli(&client_dir, &addr, &[])
        .args(["login", "--email", "tom@example.com", "--password-stdin"])
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{PASSWORD}").unwrap();
    let (code, _, err) = finish(child, String::new());
    assert_eq!(code, 1);
    assert!(err.contains("TOTP code"), "{err}");

    let mut child = cli(&client_dir, &addr, &[("ZAFE_TOKEN", &session)])
        .args(["totp", "disable"])
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", recovery[0]).unwrap();
    let (code, out, err) = finish(child, String::new());
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(login(None).await.status, 200);
}
