//! End to end: `zafe policy`, `zafe secrets`, `zafe operator rotate|key-status|rekey`
//! and key rotation shown in `zafe status`, with the real binary.

use crate::support::*;

struct Cli {
    dir: std::path::PathBuf,
    addr: String,
    token: String,
}

impl Cli {
    /// `zafe <args>` as this client, fed `stdin` (nothing when `None`).
    fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
        let mut cmd = inherited_command(&self.dir, &self.addr, Some(&self.token));
        cmd.args(args);
        let r = run(cmd, Some(stdin.unwrap_or("").as_bytes()));
        (r.code, r.stdout, r.stderr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_engines_rotation_and_rekey_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let cfg = config_file(dir.path(), addr, "", "");
    let server = Server::start_config(&cfg, &[], addr, dir.path().join("s.log"));
    let (keys, root) = init(&server, 3, 2).await;
    unseal(&server, &keys[0]).await;
    unseal(&server, &keys[1]).await;
    let cli = Cli {
        dir: dir.path().join("client"),
        addr: format!("http://{addr}"),
        token: root,
    };

    // Policies: write from stdin, read back, list, delete; a bad one is refused.
    let (code, _, err) = cli.run(
        &["policy", "write", "app-reader", "-"],
        Some("path \"secret/data/app/*\" { capabilities = [\"read\"] }\n"),
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = cli.run(&["policy", "read", "app-reader"], None);
    assert_eq!(code, 0);
    assert!(out.contains("secret/data/app/*"));
    let (_, out, _) = cli.run(&["policy", "list", "--format", "json"], None);
    let names: Vec<String> = serde_json::from_str(&out).unwrap();
    assert!(names.contains(&"app-reader".to_string()) && names.contains(&"default".to_string()));
    let (code, _, err) = cli.run(
        &["policy", "write", "broken", "-"],
        Some("path \"x\" { capabilities = [\"fly\"] }"),
    );
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = cli.run(&["policy", "delete", "app-reader"], None);
    assert_eq!(code, 0);

    // Secrets engines.
    let (code, _, err) = cli.run(&["secrets", "enable", "transit"], None);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli.run(&["secrets", "list", "--format", "json"], None);
    let mounts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(mounts["transit/"]["type"], "transit");
    assert_eq!(mounts["secret/"]["type"], "kv");
    let (code, _, err) = cli.run(&["secrets", "enable", "nonsense"], None);
    assert_eq!(code, 1, "{err}");
    let (code, _, _) = cli.run(&["secrets", "disable", "transit"], None);
    assert_eq!(code, 0);

    // Rotation, followed to the end; status shows the new term.
    let (code, _, err) = cli.run(&["operator", "rotate"], None);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("Re-wrap finished"), "{err}");
    let (_, out, _) = cli.run(&["operator", "key-status", "--format", "json"], None);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["term"], 2);
    assert_eq!(status["rewrap"]["done"], true);
    let (code, out, _) = cli.run(&["status"], None);
    assert_eq!(code, 0);
    assert!(out.contains("Key Term") && out.contains("Re-wrap"), "{out}");

    // Rekey from standard input, then unseal with the new keys only.
    let stdin = format!("{}\n{}\n", keys[0], keys[2]);
    let (code, out, err) = cli.run(
        &[
            "operator",
            "rekey",
            "--key-shares",
            "3",
            "--key-threshold",
            "2",
            "--format",
            "json",
        ],
        Some(&stdin),
    );
    assert_eq!(code, 0, "{err}");
    let rekeyed: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new_keys: Vec<String> = rekeyed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    let (code, _, _) = cli.run(&["operator", "seal"], None);
    assert_eq!(code, 0);
    assert_eq!(
        unseal(&server, &keys[0]).await.status,
        400,
        "old keys are dead"
    );
    unseal(&server, &new_keys[0]).await;
    unseal(&server, &new_keys[2]).await;
    assert!(!sealed(&server).await);
}

// R-AUTH-12 end to end: a service account from the command line reads its
// project, cannot write, and stops working when revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_accounts_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let a = addr.to_string();
    let server = Server::start(
        &[
            "server",
            "--dev",
            "--dev-root-token",
            "root-for-sa-test",
            "--listen",
            &a,
        ],
        &[],
        addr,
        dir.path().join("s.log"),
    );
    let cli = Cli {
        dir: dir.path().join("client"),
        addr: format!("http://{addr}"),
        token: "root-for-sa-test".into(),
    };
    let r = call(
        "POST",
        &server.url("/v1/secret/data/myapp/prod"),
        Some("root-for-sa-test"),
        Some(serde_json::json!({"data": {"DB": "pw"}})),
    )
    .await;
    assert_eq!(r.status, 200);
    let (code, out, err) = cli.run(
        &[
            "service-account",
            "create",
            "ci",
            "--scope",
            "project:myapp",
            "--ttl",
            "1h",
        ],
        None,
    );
    assert_eq!(code, 0, "{err}");
    let token = out.trim().to_string();
    assert!(token.starts_with("zafe_sa_"), "{out}");
    assert!(err.contains("shown only this once"));
    assert_eq!(
        call(
            "GET",
            &server.url("/v1/secret/data/myapp/prod"),
            Some(&token),
            None
        )
        .await
        .status,
        200
    );
    let w = call(
        "POST",
        &server.url("/v1/secret/data/myapp/prod"),
        Some(&token),
        Some(serde_json::json!({"data": {"DB": "x"}})),
    )
    .await;
    assert_eq!(w.status, 403);
    let (code, out, _) = cli.run(&["service-account", "read", "ci"], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("project:myapp") && !out.contains(&token),
        "{out}"
    );
    let (_, out, _) = cli.run(&["service-account", "list", "--format", "json"], None);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!(["ci"])
    );
    let (code, _, _) = cli.run(&["service-account", "revoke", "ci"], None);
    assert_eq!(code, 0);
    assert_eq!(
        call(
            "GET",
            &server.url("/v1/secret/data/myapp/prod"),
            Some(&token),
            None
        )
        .await
        .status,
        403
    );
}
