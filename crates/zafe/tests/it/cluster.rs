//! Three `zafe server` nodes on one PostgreSQL database behind a real HAProxy, on loopback
//! (R-SCALE-2, the multi-node issue): one cluster identity that a client pins through the load
//! balancer, `kill -9` of a node under write load through HAProxy without losing an
//! acknowledged write, the other nodes serving on, the audit chain intact, the killed node
//! catching up when it is started again, and a sealed node taken out of the balancer by its
//! health answer (503) while the others serve.
//!
//! Needs PostgreSQL (`ZAFE_TEST_POSTGRES_URL`, as the storage tests) and `haproxy` on the
//! path; without them the test is skipped, unless `ZAFE_REQUIRE_POSTGRES=1` /
//! `ZAFE_REQUIRE_HAPROXY=1` (as in CI, where `scripts/test.sh` installs both).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::Connection as _;

use crate::support::*;

fn required(variable: &str) -> bool {
    std::env::var(variable).as_deref() == Ok("1")
}

/// `haproxy`, if installed.
fn haproxy() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|dir| dir.join("haproxy"))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            !required("ZAFE_REQUIRE_HAPROXY"),
            "ZAFE_REQUIRE_HAPROXY=1 but haproxy is not installed (apt-get install haproxy)"
        );
        eprintln!("skipping: haproxy is not installed");
    }
    found
}

/// A fresh database on the test PostgreSQL: (admin URL, the database's URL, its name).
async fn database() -> Option<(String, String, String)> {
    let admin = match std::env::var("ZAFE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            assert!(
                !required("ZAFE_REQUIRE_POSTGRES"),
                "ZAFE_REQUIRE_POSTGRES=1 but ZAFE_TEST_POSTGRES_URL is not set"
            );
            eprintln!("skipping: ZAFE_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    let name = format!("zafe_cluster_{}", std::process::id());
    let mut connection = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
    let url = zafe_storage::postgres::with_database(&admin, &name);
    Some((admin, url, name))
}

async fn drop_database(admin: &str, name: &str) {
    let mut connection = sqlx::PgConnection::connect(admin).await.unwrap();
    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut connection)
        .await
        .unwrap();
    connection.close().await.unwrap();
}

/// One node's configuration: its own port and data directory, the shared database, master key
/// and identity key.
fn node_config(dir: &Path, i: usize, addr: SocketAddr) -> PathBuf {
    let data = dir.join(format!("node{i}"));
    std::fs::create_dir_all(&data).unwrap();
    let path = dir.join(format!("node{i}.toml"));
    write_private(
        &path,
        &format!(
            "listen = \"{addr}\"\ndata_dir = \"{data}\"\n\
             [storage]\nkind = \"postgres\"\nurl_file = \"{url}\"\n\
             [seal]\nmaster_key_file = \"{master}\"\n\
             [identity]\nkey_file = \"{identity}\"\n",
            data = data.display(),
            url = dir.join("db-url").display(),
            master = dir.join("master.key").display(),
            identity = dir.join("identity.key").display(),
        ),
    );
    path
}

fn start_node(dir: &Path, i: usize, addr: SocketAddr) -> Server {
    let config = node_config(dir, i, addr);
    Server::start_config(&config, &[], addr, dir.join(format!("node{i}.log")))
}

/// HAProxy in front of `nodes`, health-checking `sys/health` (200 only when initialised and
/// unsealed) every 100 ms.
struct Proxy {
    child: Child,
    addr: SocketAddr,
}

impl Proxy {
    fn start(binary: &Path, dir: &Path, nodes: &[SocketAddr]) -> Proxy {
        let addr = free_addr();
        let servers: String = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| format!("    server n{i} {node} check\n"))
            .collect();
        let config = dir.join("haproxy.cfg");
        std::fs::write(
            &config,
            format!(
                "global\n    maxconn 1024\n\
                 defaults\n    mode http\n    timeout connect 1s\n    timeout client 20s\n    timeout server 20s\n\
                 \x20   retries 3\n    option redispatch\n\
                 frontend zafe\n    bind {addr}\n    default_backend nodes\n\
                 backend nodes\n    balance roundrobin\n    option httpchk GET /v1/sys/health\n\
                 \x20   http-check expect status 200\n    default-server inter 100ms fall 1 rise 2\n{servers}"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
        let child = Command::new(binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Proxy { child, addr }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn put(base: &str, root: &str, path: &str, value: &str) -> bool {
    let reply = http()
        .post(format!("{base}/v1/secret/data/{path}"))
        .header("X-Vault-Token", root)
        .json(&json!({"data": {"v": value}}))
        .send()
        .await;
    matches!(reply, Ok(r) if r.status().as_u16() == 200)
}

async fn get(base: &str, token: &str, path: &str) -> (u16, Option<String>) {
    let reply = call(
        "GET",
        &format!("{base}/v1/secret/data/{path}"),
        Some(token),
        None,
    )
    .await;
    let value = reply.json["data"]["data"]["v"].as_str().map(String::from);
    (reply.status, value)
}

/// `zafe <args>` against `addr` with the client configuration in `config_dir`.
fn zafe(config_dir: &Path, addr: &str, token: &str, args: &[&str]) -> Run {
    let mut cmd = clean_command(BIN, config_dir, addr, Some(token));
    cmd.args(args);
    run(cmd, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_haproxy_survive_kill_9_under_write_load() {
    let Some(haproxy) = haproxy() else { return };
    let Some((admin_url, db_url, db_name)) = database().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("db-url"), &db_url);
    write_private(&dir.path().join("master.key"), &"6b".repeat(32));
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();

    // The first node creates the identity key (shared with the others, as the master key is)
    // and initialises the storage; the others unseal themselves from the master key.
    let first = start_node(dir.path(), 0, addrs[0]);
    let (_, root) = init(&first, 1, 1).await;
    let mut nodes = vec![Some(first)];
    for (i, addr) in addrs.iter().enumerate().skip(1) {
        nodes.push(Some(start_node(dir.path(), i, *addr)));
    }
    let proxy = Proxy::start(&haproxy, dir.path(), &addrs);
    let base = format!("http://{}", proxy.addr);

    // Ready when every node answers healthy through the balancer several times over.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut healthy = 0;
    while healthy < 9 {
        assert!(
            Instant::now() < deadline,
            "the cluster did not become healthy"
        );
        let ok = http()
            .get(format!("{base}/v1/sys/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200);
        healthy = if ok { healthy + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // One cluster identity: a client pins it through the balancer and every node proves it.
    let client_dir = dir.path().join("client");
    std::fs::create_dir_all(&client_dir).unwrap();
    for i in 0..6 {
        let value = format!("v{i}");
        let r = zafe(
            &client_dir,
            &base,
            &root,
            &["kv", "put", "secret/pinned", &format!("v={value}")],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    for (i, addr) in addrs.iter().enumerate() {
        let r = zafe(
            &client_dir,
            &format!("http://{addr}"),
            &root,
            &["kv", "get", "--field", "v", "secret/pinned"],
        );
        assert_eq!(
            (r.code, r.stdout.trim()),
            (0, "v5"),
            "node {i}: {}",
            r.stderr
        );
    }

    // Write load through the balancer; node 1 is killed in the middle of it.
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..6)
        .map(|w| {
            let (base, root, stop) = (base.clone(), root.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let path = format!("load/w{w}-{n}");
                    let value = format!("value-{w}-{n}");
                    if put(&base, &root, &path, &value).await {
                        acknowledged.push((path, value, Instant::now()));
                    }
                    n += 1;
                }
                acknowledged
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed_at = Instant::now();
    let victim = nodes[1].as_mut().unwrap();
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(victim.child.as_ref().unwrap().id() as i32, libc::SIGKILL);
    }
    let _ = victim.child.as_mut().unwrap().wait();
    nodes[1] = None;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let after_kill = acknowledged
        .iter()
        .filter(|(_, _, at)| *at > killed_at)
        .count();
    assert!(
        acknowledged.len() > 50 && after_kill > 20,
        "too little load: {} writes, {after_kill} after the kill",
        acknowledged.len()
    );

    // No acknowledged write is lost; the survivors serve every one of them.
    for (i, (path, value, _)) in acknowledged.iter().enumerate() {
        let node = if i % 2 == 0 { addrs[0] } else { addrs[2] };
        let (status, read) = get(&format!("http://{node}"), &root, path).await;
        assert_eq!(
            (status, read.as_deref()),
            (200, Some(value.as_str())),
            "acknowledged write {path} lost"
        );
    }

    // The audit chain is intact after the kill.
    let verified = zafe(&client_dir, &base, &root, &["audit", "verify"]);
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, verified.stderr);

    // While node 1 is down a policy changes; started again, it enforces it and serves every
    // acknowledged write.
    let policy = call(
        "PUT",
        &format!("{base}/v1/sys/policy/load-reader"),
        Some(&root),
        Some(json!({"policy": "path \"secret/data/load/w0-*\" { capabilities = [\"read\"] }"})),
    )
    .await;
    assert_eq!(policy.status, 204, "{:?}", policy.json);
    let token = call(
        "POST",
        &format!("{base}/v1/auth/token/create"),
        Some(&root),
        Some(json!({"policies": ["load-reader"]})),
    )
    .await
    .json["auth"]["client_token"]
        .as_str()
        .unwrap()
        .to_string();
    nodes[1] = Some(start_node(dir.path(), 1, addrs[1]));
    let restarted = format!("http://{}", addrs[1]);
    for (path, value, _) in &acknowledged {
        let (status, read) = get(&restarted, &root, path).await;
        assert_eq!(
            (status, read.as_deref()),
            (200, Some(value.as_str())),
            "{path}"
        );
    }
    let mine = acknowledged
        .iter()
        .find(|(path, _, _)| path.starts_with("load/w0-"))
        .unwrap();
    let other = acknowledged
        .iter()
        .find(|(path, _, _)| path.starts_with("load/w1-"))
        .unwrap();
    assert_eq!(get(&restarted, &token, &mine.0).await.0, 200);
    assert_eq!(get(&restarted, &token, &other.0).await.0, 403);

    // Sealing one node takes it out of the balancer; the others keep serving.
    let sealed = call(
        "PUT",
        &format!("http://{}/v1/sys/seal", addrs[2]),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(sealed.status, 204, "{:?}", sealed.json);
    let health = call(
        "GET",
        &format!("http://{}/v1/sys/health", addrs[2]),
        None,
        None,
    )
    .await;
    assert_eq!(health.status, 503, "a sealed node says so to the balancer");
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (path, value, _) in acknowledged.iter().take(30) {
        let (status, read) = get(&base, &root, path).await;
        assert_eq!(
            (status, read.as_deref()),
            (200, Some(value.as_str())),
            "{path}"
        );
    }

    drop(proxy);
    for node in nodes.iter_mut().flatten() {
        node.stop();
    }
    drop_database(&admin_url, &db_name).await;
}
