//! A real OpenID provider for tests: `tests/oidc/provider.mjs` (the
//! `oidc-provider` npm package) under node, on 127.0.0.1; and a minimal
//! "browser" that follows its login through redirects and cookies up to the
//! redirect to a client's loopback callback.
//!
//! Shared by the server's and the CLI's tests (`#[path]`). Without node or
//! `npm ci` in tests/oidc, the tests using it are skipped locally, and fail
//! when `ZAFE_REQUIRE_OIDC=1` (scripts/test.sh sets it, so CI never skips).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const CLIENT_ID: &str = "zafe";
pub const CLIENT_SECRET: &str = "zafe-test-client-secret-0123456789";

pub struct Provider {
    pub issuer: String,
    child: Child,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/oidc")
}

/// Starts the provider, or returns `None` (test skipped) when node or its
/// packages are missing and `ZAFE_REQUIRE_OIDC` is not set.
pub fn start() -> Option<Provider> {
    let dir = provider_dir();
    let node = std::env::var("ZAFE_NODE").unwrap_or_else(|_| "node".into());
    let installed = dir.join("node_modules/oidc-provider/package.json").exists();
    let has_node = Command::new(&node)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed || !has_node {
        let why = format!(
            "the OIDC test provider is not available (node: {has_node}, `npm ci` in {}: {installed})",
            dir.display()
        );
        if std::env::var("ZAFE_REQUIRE_OIDC").is_ok_and(|v| v == "1") {
            panic!("{why}, and ZAFE_REQUIRE_OIDC=1");
        }
        eprintln!("SKIPPED: {why}");
        return None;
    }
    let mut child = Command::new(&node)
        .arg("provider.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = tx.send(line);
        // Keep draining, so the provider never writes into a closed pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the OIDC provider did not start within 20 s");
    let ready: serde_json::Value = serde_json::from_str(&line).expect("provider's ready line");
    Some(Provider {
        issuer: ready["issuer"].as_str().unwrap().to_string(),
        child,
    })
}

/// Follows an authorization URL as a browser would (cookies, redirects)
/// until the provider redirects to `callback_prefix`; returns that URL.
pub async fn follow_login(auth_url: &str, callback_prefix: &str) -> url::Url {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .no_proxy()
        .build()
        .unwrap();
    let mut cookies: BTreeMap<String, String> = BTreeMap::new();
    let mut url = url::Url::parse(auth_url).unwrap();
    for _ in 0..20 {
        assert!(
            matches!(url.host_str(), Some("127.0.0.1")),
            "the login left loopback: {url}"
        );
        let cookie_header = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = http.get(url.clone());
        if !cookie_header.is_empty() {
            req = req.header("cookie", cookie_header);
        }
        let res = req.send().await.expect("provider request");
        for value in res.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            if let Some((k, v)) = pair.split_once('=') {
                cookies.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        if !res.status().is_redirection() {
            let status = res.status();
            panic!(
                "the provider answered {status} at {url}: {}",
                res.text().await.unwrap_or_default()
            );
        }
        let location = res.headers()["location"].to_str().unwrap().to_string();
        let next = url.join(&location).unwrap();
        if next.as_str().starts_with(callback_prefix) {
            return next;
        }
        url = next;
    }
    panic!("the login did not come back within 20 redirects");
}

/// A query parameter of a URL.
pub fn param(url: &url::Url, name: &str) -> Option<String> {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
