//! `zafe login --oidc`: the authorization-code flow with PKCE, as Vault's
//! CLI does it.
//!
//! 1. Listen on 127.0.0.1, an ephemeral port, for `/callback`.
//! 2. Make a PKCE verifier and a client nonce (both stay here); ask the
//!    server for the IdP's authorization URL (`auth/oidc/auth_url`) with the
//!    verifier's S256 challenge.
//! 3. Open the browser (`BROWSER` if set, else the desktop's opener;
//!    `--no-browser` only prints the URL), and wait, with a timeout, for the
//!    IdP to redirect the browser back with a code and the same `state`.
//! 4. Send code, state, verifier and nonce to `auth/oidc/callback`; the
//!    server exchanges the code, checks the ID token and starts a session.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use zafe_client::{Client, Method};
use zeroize::Zeroizing;

/// What came back to the loopback listener.
enum Callback {
    Code(Zeroizing<String>),
    Error(String),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Logs in through the server's identity provider; returns the server's
/// answer (the session's tokens under `auth`), to store like a password
/// login's.
/// `totp_code` goes with the callback for an account with TOTP on (the
/// server answers `a TOTP code is required` without it).
pub(crate) async fn login(
    client: &Client,
    no_browser: bool,
    timeout: Duration,
    totp_code: Option<&str>,
) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot listen on 127.0.0.1 for the login callback")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = Zeroizing::new(b64(&zafe_core::crypto::random_bytes::<32>()));
    let challenge = b64(&Sha256::digest(verifier.as_bytes()));
    let client_nonce = Zeroizing::new(b64(&zafe_core::crypto::random_bytes::<24>()));

    let started = client
        .request_json(
            Method::POST,
            "/v1/auth/oidc/auth_url",
            Some(&json!({
                "redirect_uri": redirect_uri,
                "client_nonce": client_nonce.as_str(),
                "code_challenge": challenge,
                "code_challenge_method": "S256",
            })),
        )
        .await
        .context("the server could not start an OIDC login")?
        .unwrap_or_default();
    let auth_url = started["data"]["auth_url"]
        .as_str()
        .context("the server's answer has no auth_url")?
        .to_string();
    let state = started["data"]["state"]
        .as_str()
        .context("the server's answer has no state")?
        .to_string();

    let (tx, mut rx) = mpsc::channel::<Callback>(1);
    let expected_state = state.clone();
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(
            move |axum::extract::Query(q): axum::extract::Query<
                std::collections::HashMap<String, String>,
            >| {
                let tx = tx.clone();
                let expected_state = expected_state.clone();
                async move { callback_page(q, &expected_state, &tx).await }
            },
        ),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    eprintln!(
        "Complete the login in your browser. If it does not open, visit this URL:\n\n    {auth_url}\n"
    );
    if !no_browser && !open_browser(&auth_url) {
        eprintln!("(could not start a browser; open the URL above yourself)");
    }
    let outcome = tokio::time::timeout(timeout, rx.recv()).await;
    server.abort();
    let code = match outcome {
        Err(_) => bail!(
            "no answer from the browser within {} s; run `zafe login --oidc` again",
            timeout.as_secs()
        ),
        Ok(None) => bail!("the login callback listener stopped"),
        Ok(Some(Callback::Error(e))) => bail!("the identity provider refused the login: {e}"),
        Ok(Some(Callback::Code(code))) => code,
    };
    let mut body = json!({
        "state": state,
        "code": code.as_str(),
        "code_verifier": verifier.as_str(),
        "redirect_uri": redirect_uri,
        "client_nonce": client_nonce.as_str(),
    });
    if let Some(totp_code) = totp_code {
        body["totp_code"] = json!(totp_code);
    }
    let answer = client
        .request_json(Method::POST, "/v1/auth/oidc/callback", Some(&body))
        .await
        .context("OIDC login failed")?
        .unwrap_or_default();
    Ok(answer)
}

/// Answers the browser and hands the code (or the IdP's error) over. A
/// request with another `state` is refused and the wait goes on: it is not
/// the login this command started.
async fn callback_page(
    q: std::collections::HashMap<String, String>,
    expected_state: &str,
    tx: &mpsc::Sender<Callback>,
) -> (http::StatusCode, axum::response::Html<&'static str>) {
    use axum::response::Html;
    if q.get("state").map(String::as_str) != Some(expected_state) {
        return (
            http::StatusCode::BAD_REQUEST,
            Html("<h1>Zafe: this is not the login you started</h1>"),
        );
    }
    let message = match (q.get("code"), q.get("error")) {
        (Some(code), None) => Callback::Code(Zeroizing::new(code.clone())),
        (_, Some(error)) => {
            let error: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            Callback::Error(error)
        }
        _ => Callback::Error("no code in the callback".into()),
    };
    let ok = matches!(message, Callback::Code(_));
    let _ = tx.send(message).await;
    if ok {
        (
            http::StatusCode::OK,
            Html(
                "<h1>Zafe: login complete</h1><p>You can close this window and return to the terminal.</p>",
            ),
        )
    } else {
        (
            http::StatusCode::BAD_REQUEST,
            Html("<h1>Zafe: the login was refused</h1><p>See the terminal.</p>"),
        )
    }
}

/// Opens `url` with `BROWSER` (a `:`-separated list of commands; `%s` is
/// replaced by the URL, else it is appended) or the desktop's opener.
fn open_browser(url: &str) -> bool {
    let commands: Vec<String> = match std::env::var("BROWSER") {
        Ok(b) if !b.trim().is_empty() => b.split(':').map(str::to_string).collect(),
        _ if cfg!(target_os = "macos") => vec!["open".into()],
        _ => vec!["xdg-open".into()],
    };
    for command in commands {
        let mut words = command.split_whitespace();
        let Some(program) = words.next() else {
            continue;
        };
        let mut args: Vec<String> = words.map(|w| w.replace("%s", url)).collect();
        if !command.contains("%s") {
            args.push(url.to_string());
        }
        let spawned = Command::new(program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        if let Ok(mut child) = spawned {
            // Reap it whenever it ends; a browser may outlive this command.
            std::thread::spawn(move || child.wait());
            return true;
        }
    }
    false
}
