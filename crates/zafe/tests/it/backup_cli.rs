//! `zafe operator backup` and `zafe operator restore` end to end (R-OPS-8),
//! with the real binary: a server with secrets in several versions, a policy,
//! a token, a project with a secret and an agent is backed up while a loop
//! keeps writing; the file holds no value in the clear; a second,
//! uninitialised server on the other backend (with the first one's identity
//! key) restores it, is unsealed with the original key, serves everything
//! back, and `zafe audit verify` passes. A second restore is refused without
//! `--force`, and a truncated file is refused before anything is sent.
//!
//! PostgreSQL variants need `ZAFE_TEST_POSTGRES_URL` (see zafe-storage's tests).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Value, json};
use sqlx::Connection as _;

use crate::support::{
    BIN, Server, call, clean_command, free_addr, init, mode_of, run, sealed, unseal, write_private,
};

/// Where a server keeps its data.
#[derive(Clone)]
enum Store {
    Sqlite,
    Postgres(String),
}

fn config(dir: &Path, addr: std::net::SocketAddr, store: &Store) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let storage = match store {
        Store::Sqlite => format!(
            "kind = \"sqlite\"\npath = \"{}\"",
            data.join("zafe.db").display()
        ),
        Store::Postgres(url) => format!("kind = \"postgres\"\nurl = \"{url}\""),
    };
    let path = dir.join("zafe.toml");
    write_private(
        &path,
        &format!(
            "listen = \"{addr}\"\ndata_dir = \"{}\"\n[storage]\n{storage}\n",
            data.display()
        ),
    );
    path
}

struct Cli {
    dir: PathBuf,
    addr: String,
}

impl Cli {
    fn run(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> crate::support::Run {
        let mut cmd = clean_command(BIN, &self.dir, &self.addr, token);
        cmd.args(args);
        run(cmd, stdin.map(str::as_bytes))
    }

    fn ok(&self, token: Option<&str>, args: &[&str], stdin: Option<&str>) -> String {
        let r = self.run(token, args, stdin);
        assert_eq!(
            r.code, 0,
            "zafe {args:?}\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r.stdout
    }
}

async fn kv_put(server: &Server, token: &str, path: &str, data: Value) {
    let r = call(
        "POST",
        &server.url(&format!("/v1/secret/data/{path}")),
        Some(token),
        Some(json!({ "data": data })),
    )
    .await;
    assert_eq!(r.status, 200, "{:?}", r.json);
}

async fn kv_get(server: &Server, token: &str, path: &str, version: u32) -> Value {
    let r = call(
        "GET",
        &server.url(&format!("/v1/secret/data/{path}?version={version}")),
        Some(token),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{path} v{version}: {:?}", r.json);
    r.json["data"]["data"].clone()
}

/// The values the test writes; none may appear in the backup file.
const VALUES: [&str; 4] = [
    "pw-one-Xq81f0c3",
    "pw-two-Xq82e9d4",
    "pw-three-Xq83b7a5",
    "project-value-Xq84c6f6",
];

async fn scenario(from: Store, to: Store) {
    let dir = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
    let addr_a = free_addr();
    let cfg_a = config(&dir_a, addr_a, &from);
    let a = Server::start_config(&cfg_a, &[], addr_a, dir.path().join("a.log"));
    let (keys, root) = init(&a, 1, 1).await;
    assert_eq!(unseal(&a, &keys[0]).await.status, 200);
    let cli_a = Cli {
        dir: dir.path().join("client"),
        addr: a.url(""),
    };
    std::fs::create_dir_all(&cli_a.dir).unwrap();

    // Secrets in several versions, a policy, a token, a project with a
    // secret, an agent.
    for v in &VALUES[..3] {
        kv_put(&a, &root, "app/db", json!({ "password": v })).await;
    }
    cli_a.ok(
        Some(&root),
        &["policy", "write", "app-reader", "-"],
        Some("path \"secret/data/app/*\" { capabilities = [\"read\"] }"),
    );
    let token: Value = serde_json::from_str(&cli_a.ok(
        Some(&root),
        &[
            "token",
            "create",
            "--policy",
            "app-reader",
            "--format",
            "json",
        ],
        None,
    ))
    .unwrap();
    let token = token["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {token}"))
        .to_string();
    cli_a.ok(Some(&root), &["project", "create", "myapp"], None);
    cli_a.ok(
        Some(&root),
        &[
            "secret",
            "set",
            "API_KEY",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        Some(VALUES[3]),
    );
    cli_a.ok(
        Some(&root),
        &[
            "agent",
            "create",
            "web-1",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        None,
    );

    // A writer keeps going while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let loader = {
        let (stop, written, url, root) = (stop.clone(), written.clone(), a.url(""), root.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = call(
                    "POST",
                    &format!("{url}/v1/secret/data/load/counter"),
                    Some(&root),
                    Some(json!({ "data": { "n": n } })),
                )
                .await;
                assert_eq!(r.status, 200, "{:?}", r.json);
                written.store(n, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let file = dir.path().join("backup.zbak");
    let taken = {
        let (cli, root, file) = (
            Cli {
                dir: cli_a.dir.clone(),
                addr: cli_a.addr.clone(),
            },
            root.clone(),
            file.clone(),
        );
        tokio::task::spawn_blocking(move || {
            cli.ok(
                Some(&root),
                &[
                    "operator",
                    "backup",
                    "-o",
                    file.to_str().unwrap(),
                    "--format",
                    "json",
                ],
                None,
            )
        })
        .await
        .unwrap()
    };
    let during = written.load(Ordering::Relaxed);
    // Writes went on after the backup too: it did not stop the server.
    while written.load(Ordering::Relaxed) < during + 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    loader.await.unwrap();
    let taken: Value = serde_json::from_str(&taken).unwrap();
    assert!(taken["entries"].as_u64().unwrap() > 10, "{taken}");
    assert!(taken["audit_rows"].as_u64().unwrap() > 10, "{taken}");
    assert_eq!(taken["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(mode_of(&file), 0o600);

    // Ciphertext only: no value, no token, no unseal key in the clear.
    let bytes = std::fs::read(&file).unwrap();
    let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
    for needle in VALUES
        .iter()
        .copied()
        .chain([root.as_str(), token.as_str(), keys[0].as_str()])
    {
        assert!(
            !contains(needle),
            "the backup holds {needle:?} in the clear"
        );
    }

    // A second server, uninitialised, on the other backend, with the first
    // one's identity key (its checkpoints are signed with it).
    let addr_b = free_addr();
    let cfg_b = config(&dir_b, addr_b, &to);
    std::fs::copy(
        dir_a.join("data/identity.key"),
        dir_b.join("data/identity.key"),
    )
    .unwrap();
    let b = Server::start_config(&cfg_b, &[], addr_b, dir.path().join("b.log"));
    let cli_b = Cli {
        dir: dir.path().join("client-b"),
        addr: b.url(""),
    };
    std::fs::create_dir_all(&cli_b.dir).unwrap();

    // A damaged file is refused before anything is sent.
    let cut = dir.path().join("cut.zbak");
    write_private(&cut, "");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let r = cli_b.run(None, &["operator", "restore", cut.to_str().unwrap()], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("truncated"), "{}", r.stderr);

    let restored: Value = serde_json::from_str(&cli_b.ok(
        None,
        &[
            "operator",
            "restore",
            file.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(
        restored["restored"]["entries"], taken["entries"],
        "{restored}"
    );
    assert_eq!(restored["restored"]["audit_rows"], taken["audit_rows"]);
    assert!(sealed(&b).await, "sealed after a restore");

    // No second restore: not without a token while sealed, ...
    let r = cli_b.run(None, &["operator", "restore", file.to_str().unwrap()], None);
    assert_ne!(r.code, 0);

    // The original key unseals it, and everything is back.
    cli_b.ok(None, &["operator", "unseal"], Some(&keys[0]));
    assert!(!sealed(&b).await);

    // ... not from a stranger, and not even with the root token unless forced.
    let r = cli_b.run(None, &["operator", "restore", file.to_str().unwrap()], None);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("permission denied"), "{}", r.stderr);
    let r = cli_b.run(
        Some(&root),
        &["operator", "restore", file.to_str().unwrap()],
        None,
    );
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    for (i, v) in VALUES[..3].iter().enumerate() {
        assert_eq!(
            kv_get(&b, &root, "app/db", i as u32 + 1).await["password"],
            *v
        );
    }
    // The token and its policy.
    assert_eq!(kv_get(&b, &token, "app/db", 3).await["password"], VALUES[2]);
    let r = call(
        "GET",
        &b.url("/v1/secret/data/load/counter"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "the policy still confines the token");
    let r = call(
        "GET",
        &b.url("/v1/secret/data/load/counter"),
        Some(&root),
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    let n = r.json["data"]["data"]["n"].as_u64().unwrap();
    assert!(
        n >= 5 && n <= during + 1,
        "counter {n}, {during} written by the backup's end"
    );
    // The project's secret and its agent.
    let got = cli_b.ok(
        Some(&root),
        &[
            "secret",
            "get",
            "API_KEY",
            "--project",
            "myapp",
            "--env",
            "prod",
        ],
        None,
    );
    assert_eq!(got.trim(), VALUES[3]);
    let agents = cli_b.ok(Some(&root), &["agent", "list", "--project", "myapp"], None);
    assert!(agents.contains("web-1"), "{agents}");

    // The audit chain, with the checkpoints, verifies on the new server.
    let r = cli_b.run(Some(&root), &["audit", "verify"], None);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout.matches("intact").count(), 2, "{}", r.stdout);
}

/// A database of its own for each PostgreSQL server of the test.
async fn postgres_database(tag: &str) -> Option<(String, String)> {
    let admin = match std::env::var("ZAFE_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var("ZAFE_REQUIRE_POSTGRES").as_deref() == Ok("1") => {
            panic!("ZAFE_REQUIRE_POSTGRES=1 but ZAFE_TEST_POSTGRES_URL is not set")
        }
        _ => {
            eprintln!("skipping: ZAFE_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("zafe_backup_cli_{tag}_{}_{nanos}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE \"{name}\""))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, query) = match admin.split_once('?') {
        Some((b, q)) => (b.to_string(), format!("?{q}")),
        None => (admin.clone(), String::new()),
    };
    let root = base.rsplit_once('/').map_or(base.as_str(), |(r, _)| r);
    Some((format!("{root}/{name}{query}"), name))
}

async fn drop_database(name: &str) {
    let admin = std::env::var("ZAFE_TEST_POSTGRES_URL").unwrap();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    let _ = sqlx::query(&format!("DROP DATABASE \"{name}\" WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_into_a_new_sqlite_server() {
    scenario(Store::Sqlite, Store::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_from_sqlite_to_postgres_and_back() {
    let Some((url, name)) = postgres_database("a").await else {
        return;
    };
    let Some((url2, name2)) = postgres_database("b").await else {
        return;
    };
    let outcome = tokio::spawn(async move {
        scenario(Store::Sqlite, Store::Postgres(url)).await;
        scenario(Store::Postgres(url2), Store::Sqlite).await;
    })
    .await;
    drop_database(&name).await;
    drop_database(&name2).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
