//! Starts the real `zafe` binary on loopback for end-to-end tests, and
//! stops it when the test ends (also when the test fails).

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_zafe");

/// A free port on 127.0.0.1 for a server the test starts.
///
/// Not one the kernel picks with port 0: those come from the ephemeral
/// range, where any outgoing connection of any test running in parallel can
/// take the port between our check and the server's bind (seen as a test
/// talking to another test's server, or to nothing). Ports below that range
/// are never handed out to clients; among them we pick at random and keep
/// one nobody is bound to.
pub fn free_addr() -> SocketAddr {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let (low, high) = (20_000u64, 32_000u64);
    for _ in 0..1000 {
        let draw = RandomState::new()
            .hash_one((std::process::id(), DRAWS.fetch_add(1, Ordering::Relaxed)));
        let port = (low + draw % (high - low)) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}")
}

/// Installs ring as the process's rustls crypto provider, for the TLS the
/// tests do themselves (vaultrs is built without a bundled provider, see
/// Cargo.toml; the relay in `identity` serves TLS). All tests share one
/// process: whoever comes first installs it, later calls change nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn write_private(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub log: PathBuf,
    pub scheme: &'static str,
}

impl Server {
    /// Starts `zafe <args>` with `envs`, waiting until it answers HTTP.
    pub fn start(args: &[&str], envs: &[(&str, &str)], addr: SocketAddr, log: PathBuf) -> Server {
        let mut server = Self::spawn(args, envs, addr, log);
        server.wait_ready();
        server
    }

    /// Starts `zafe server --config <cfg>` with `envs`, as [`Server::start`].
    pub fn start_config(
        cfg: impl AsRef<Path>,
        envs: &[(&str, &str)],
        addr: SocketAddr,
        log: PathBuf,
    ) -> Server {
        let mut server = Self::spawn_config(cfg, envs, addr, log);
        server.wait_ready();
        server
    }

    /// Spawns `zafe server --config <cfg>` with `envs` without waiting for it
    /// (for start-up refusals: see [`Server::wait_exit`]).
    pub fn spawn_config(
        cfg: impl AsRef<Path>,
        envs: &[(&str, &str)],
        addr: SocketAddr,
        log: PathBuf,
    ) -> Server {
        let cfg = cfg.as_ref().to_str().unwrap();
        Self::spawn(&["server", "--config", cfg], envs, addr, log)
    }

    /// Spawns `zafe <args>` with `envs` without waiting for it; output goes
    /// to `log`. ZAFE_ADDR, ZAFE_TOKEN, VAULT_ADDR and VAULT_TOKEN are removed.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)], addr: SocketAddr, log: PathBuf) -> Server {
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env_remove("ZAFE_ADDR")
            .env_remove("ZAFE_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env("ZAFE_LOG_FORMAT", "json")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Server {
            child: Some(child),
            addr,
            log,
            scheme: "http",
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.addr, path)
    }

    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("zafe exited early with {status}:\n{}", self.log_text());
            }
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("zafe did not start listening:\n{}", self.log_text());
    }

    /// Waits for the process to exit by itself (for start-up refusals).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!("zafe did not exit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// SIGTERM, then wait: a graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub struct Reply {
    pub status: u16,
    pub json: Value,
}

pub async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let mut req = http().request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Reply { status, json }
}

pub async fn init(server: &Server, shares: usize, threshold: usize) -> (Vec<String>, String) {
    let r = call(
        "PUT",
        &server.url("/v1/sys/init"),
        None,
        Some(json!({"secret_shares": shares, "secret_threshold": threshold})),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
    let keys = r.json["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    (keys, r.json["root_token"].as_str().unwrap().to_string())
}

pub async fn unseal(server: &Server, key: &str) -> Reply {
    call(
        "PUT",
        &server.url("/v1/sys/unseal"),
        None,
        Some(json!({ "key": key })),
    )
    .await
}

pub async fn sealed(server: &Server) -> bool {
    call("GET", &server.url("/v1/sys/seal-status"), None, None)
        .await
        .json["sealed"]
        .as_bool()
        .unwrap()
}

/// A config file for `zafe server --config`, written 0600, in `dir`.
/// `top` holds top-level settings, `sections` whole `[section]`s.
pub fn config_file(dir: &Path, addr: SocketAddr, top: &str, sections: &str) -> PathBuf {
    let path = dir.join("zafe.toml");
    let text = format!(
        "listen = \"{addr}\"\ndata_dir = \"{}\"\n{top}\n[storage]\nkind = \"sqlite\"\npath = \"{}\"\n{sections}\n",
        dir.join("data").display(),
        dir.join("data/zafe.db").display()
    );
    write_private(&path, &text);
    path
}

// ---- The CLI runner: every test that runs `zafe` as a client uses these. ----

/// How long a client command may take before the test kills it and fails.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

/// What a finished client process left behind.
pub struct Run {
    /// The exit status as the OS reported it.
    pub status: std::process::ExitStatus,
    /// The exit code, or -1 when a signal ended the process.
    pub code: i32,
    /// The signal that ended the process, if one did.
    pub signal: Option<i32>,
    /// Standard output, decoded lossily as UTF-8.
    pub stdout: String,
    /// Standard output exactly as written (for binary output).
    pub stdout_bytes: Vec<u8>,
    /// Standard error, decoded lossily as UTF-8.
    pub stderr: String,
}

impl Run {
    /// Standard output parsed as JSON; panics showing stdout and stderr.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }

    /// Insists on exit code 0, showing both outputs otherwise.
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
}

/// `program` (usually [`BIN`]) with a clean environment: only `PATH`, and
/// `HOME` and `ZAFE_CONFIG_DIR` set to `config_dir`, `ZAFE_ADDR`,
/// `ZAFE_TOKEN` when `token` is given, and `NO_COLOR`. Stdin is
/// `/dev/null`, stdout and stderr are piped.
pub fn clean_command(program: &str, config_dir: &Path, addr: &str, token: Option<&str>) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", config_dir)
        .env("ZAFE_CONFIG_DIR", config_dir)
        .env("ZAFE_ADDR", addr)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("ZAFE_TOKEN", token);
    }
    cmd
}

/// `zafe` with the test's own environment (so `HOME`, the keyring and the
/// like stay as the user has them), minus every variable that would point
/// the client at another server or log it in: `ZAFE_ADDR`, `ZAFE_TOKEN`,
/// `VAULT_*`, `ZAFE_SECRET_ID`, `ZAFE_SETUP_TOKEN`, `ZAFE_SERVER_ID`,
/// `BROWSER`. Then `ZAFE_ADDR`, `ZAFE_CONFIG_DIR`, `NO_COLOR` and, when
/// given, `ZAFE_TOKEN` are set. Stdin is `/dev/null`, stdout and stderr
/// are piped.
pub fn inherited_command(config_dir: &Path, addr: &str, token: Option<&str>) -> Command {
    let mut cmd = Command::new(BIN);
    for name in [
        "ZAFE_TOKEN",
        "VAULT_TOKEN",
        "VAULT_ADDR",
        "ZAFE_SECRET_ID",
        "ZAFE_SETUP_TOKEN",
        "ZAFE_SERVER_ID",
        "BROWSER",
    ] {
        cmd.env_remove(name);
    }
    cmd.env("ZAFE_ADDR", addr)
        .env("ZAFE_CONFIG_DIR", config_dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        cmd.env("ZAFE_TOKEN", token);
    }
    cmd
}

/// Runs `cmd`, writing `stdin` to it when given (else its stdin stays as
/// the command says), and waits with [`finish`].
pub fn run(mut cmd: Command, stdin: Option<&[u8]>) -> Run {
    if stdin.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let what = format!("{:?}", cmd.get_args().collect::<Vec<_>>());
    let mut child = cmd.spawn().unwrap();
    if let Some(input) = stdin {
        // A client that exits without reading its input is not our error.
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    finish(child, &what)
}

/// Waits for `child` at most [`CLIENT_DEADLINE`] (then kills it and
/// panics naming `what`), reading stdout and stderr concurrently so a
/// chatty child never blocks on a full pipe. Output a test already took
/// from the child counts as empty.
pub fn finish(mut child: Child, what: &str) -> Run {
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("zafe {what} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout_bytes = stdout.join().unwrap();
    Run {
        status,
        code: status.code().unwrap_or(-1),
        signal: std::os::unix::process::ExitStatusExt::signal(&status),
        stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
        stdout_bytes,
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    }
}

/// Starts `zafe server --dev` on a free loopback port with `root` as its
/// root token, logging to `log`; waits until it answers.
pub fn start_dev_server(root: &str, log: PathBuf) -> Server {
    let addr = free_addr();
    let a = addr.to_string();
    Server::start(
        &["server", "--dev", "--dev-root-token", root, "--listen", &a],
        &[],
        addr,
        log,
    )
}

/// A dev server as [`start_dev_server`], logging to `dir/server.log`, and a
/// client's configuration directory `dir/client` (created); returns both
/// with the server's URL.
pub fn dev_server(dir: &Path, root: &str) -> (Server, PathBuf, String) {
    let server = start_dev_server(root, dir.join("server.log"));
    let config_dir = dir.join("client");
    std::fs::create_dir_all(&config_dir).unwrap();
    let url = server.url("");
    (server, config_dir, url)
}
