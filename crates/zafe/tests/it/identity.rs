//! Server identity end to end (R-ID-1..3): the real `zafe` CLI against the
//! real server over TLS, a relaying proxy with its own certificate, a server
//! whose identity changed, and a forged identity response.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::support::*;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;

/// A test certificate authority and certificates it signs for 127.0.0.1.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Zafe test CA");
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            ca,
            ca_key,
        }
    }

    fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
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

fn https_client(ca: &Path) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap()
}

/// Starts a TLS Zafe server with a master key; returns it and its root token.
async fn tls_server(dir: &Path, pki: &Pki, cert: &str) -> (Server, String) {
    let addr = free_addr();
    let (cert_file, key_file) = pki.issue(cert);
    let section = format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        cert_file.display(),
        key_file.display()
    );
    let cfg = config_file(dir, addr, "", &section);
    let mut server = Server::start_config(
        &cfg,
        &[("ZAFE_MASTER_KEY", &"33".repeat(32))],
        addr,
        dir.join("server.log"),
    );
    server.scheme = "https";
    let res = https_client(&pki.ca_file())
        .put(server.url("/v1/sys/init"))
        .json(&serde_json::json!({"secret_shares": 1, "secret_threshold": 1}))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "init over TLS failed: {e}\nserver log:\n{}",
                server.log_text()
            )
        });
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    (server, body["root_token"].as_str().unwrap().to_string())
}

struct Cli {
    config_dir: PathBuf,
    ca: Option<PathBuf>,
}

impl Cli {
    fn run(&self, addr: &str, token: Option<&str>, args: &[&str]) -> Run {
        let mut cmd = clean_command(BIN, &self.config_dir, addr, token);
        cmd.args(args);
        if let Some(ca) = &self.ca {
            cmd.env("ZAFE_CACERT", ca);
        }
        run(cmd, None)
    }
}

/// A relaying proxy: terminates TLS with its own (CA-signed) certificate and
/// forwards every request to `upstream`, remembering any token it sees.
async fn start_relay(pki: &Pki, upstream: String) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    #[derive(Clone)]
    struct Relay {
        upstream: String,
        client: reqwest::Client,
        captured: Arc<Mutex<Vec<String>>>,
    }
    async fn forward(
        State(relay): State<Relay>,
        req: axum::extract::Request,
    ) -> axum::response::Response {
        if let Some(t) = req.headers().get("x-vault-token") {
            relay
                .captured
                .lock()
                .unwrap()
                .push(t.to_str().unwrap_or_default().to_string());
        }
        let url = format!(
            "{}{}",
            relay.upstream,
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/")
        );
        let method = req.method().clone();
        let headers = req.headers().clone();
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap();
        let mut out = relay.client.request(method, url).body(body);
        for (k, v) in headers.iter() {
            if k != "host" {
                out = out.header(k, v);
            }
        }
        let res = out.send().await.unwrap();
        let status = res.status();
        let bytes = res.bytes().await.unwrap();
        (status, Body::from(bytes)).into_response()
    }
    install_crypto_provider();
    let (cert, key) = pki.issue("relay");
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .unwrap();
    let captured = Arc::new(Mutex::new(Vec::new()));
    let relay = Relay {
        upstream,
        client: https_client(&pki.ca_file()),
        captured: captured.clone(),
    };
    let app = axum::Router::new().fallback(forward).with_state(relay);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .serve(app.into_make_service())
            .await
            .unwrap();
    });
    (addr, captured)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relaying_tls_proxy_is_caught_before_any_token_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (server, root) = tls_server(dir.path(), &pki, "server").await;
    let direct = server.url("");
    let (relay_addr, captured) = start_relay(&pki, direct.clone()).await;
    let relayed = format!("https://{relay_addr}");

    // The relay works as a plain HTTPS proxy: public endpoints pass through.
    let res = https_client(&pki.ca_file())
        .get(format!("{relayed}/v1/sys/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // A client that has never seen the server, told to talk to the relay:
    // the CA vouches for the relay's certificate, but the identity proof
    // names the real server's TLS key, so the client refuses.
    let fresh = Cli {
        config_dir: dir.path().join("fresh-client"),
        ca: Some(pki.ca_file()),
    };
    let r = fresh.run(&relayed, Some(&root), &["operator", "seal"]);
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("relay"), "{}", r.stderr);
    // And a client that already pinned the real server, likewise.
    let pinned = Cli {
        config_dir: dir.path().join("pinned-client"),
        ca: Some(pki.ca_file()),
    };
    let r = pinned.run(&direct, None, &["status"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = pinned.run(&relayed, Some(&root), &["operator", "seal"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("relay"), "{}", r.stderr);
    eprintln!("relay refusal as the user sees it:\n{}", r.stderr);
    assert!(
        captured.lock().unwrap().is_empty(),
        "the relay captured a token: {:?}",
        captured.lock().unwrap()
    );

    // Directly, the same command works (and proves the token was good).
    let r = pinned.run(&direct, Some(&root), &["operator", "seal"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_identity_changed_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cli = Cli {
        config_dir: dir.path().join("client"),
        ca: None,
    };
    let url = format!("http://{addr}");
    let first_dir = dir.path().join("first");
    std::fs::create_dir_all(&first_dir).unwrap();
    let cfg = config_file(&first_dir, addr, "", "");
    let mut first = Server::start_config(&cfg, &[], addr, first_dir.join("s.log"));
    let r = cli.run(&url, None, &["status"]);
    assert_eq!(
        r.code, 2,
        "sealed and uninitialised: {}{}",
        r.stdout, r.stderr
    );
    let pinned_id = std::fs::read_to_string(dir.path().join("client/servers.toml")).unwrap();
    assert!(pinned_id.contains("zs_"));
    first.stop();

    // Another server (another identity key) on the same address.
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let cfg = config_file(&second_dir, addr, "", "");
    let _second = Server::start_config(&cfg, &[], addr, second_dir.join("s.log"));
    let r = cli.run(&url, Some("zafe_s_whatever"), &["operator", "seal"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("server-id forget") && r.stderr.contains("zs_"),
        "{}",
        r.stderr
    );
    let r = cli.run(&url, None, &["status"]);
    assert_eq!(r.code, 1, "{}", r.stderr);

    // An id given up front for CI must match too.
    let ci = Cli {
        config_dir: dir.path().join("ci"),
        ca: None,
    };
    let r = ci.run(
        &url,
        None,
        &[
            "--server-id",
            "zs_00000000000000000000000000000000",
            "status",
        ],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
}

// A "parrot": a server that copies the real server's public identity and
// answers with the real key and id but cannot sign the client's nonce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_identity_response_is_refused() {
    let real = zafe_core::identity::IdentityKey::generate();
    let captured = real.prove(&[9u8; 32], time_now(), None);
    let app = axum::Router::new().route(
        "/v1/sys/identity",
        axum::routing::get(
            move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let mut proof = captured.clone();
                // Echo the client's nonce, keep the old signature.
                proof.nonce = q.get("nonce").cloned().unwrap_or_default();
                proof.timestamp = time_now();
                async move { axum::Json(proof) }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let cli = Cli {
        config_dir: dir.path().to_path_buf(),
        ca: None,
    };
    let r = cli.run(
        &format!("http://{addr}"),
        Some("zafe_s_token"),
        &["operator", "seal"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.to_lowercase().contains("signature"),
        "{}",
        r.stderr
    );
    assert!(
        !dir.path().join("servers.toml").exists(),
        "nothing was pinned"
    );
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
