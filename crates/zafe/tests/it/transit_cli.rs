//! End to end: `zafe transit ...` against the real `zafe server --dev` on
//! loopback (R-KV-3): create, encrypt from stdin and @FILE, raw decrypt,
//! rotate, rewrap, min_decryption_version, list/read in JSON, sign/verify,
//! delete, exit codes, and no plaintext in the server's log.

use std::path::Path;

use crate::support::*;
use serde_json::json;

const ROOT: &str = "transit-cli-root";

/// Runs `zafe <args>` as a client of `server`, feeding `stdin`; bounded by
/// a deadline so a hung client fails the test instead of stalling it.
fn zafe(server: &Server, home: &Path, args: &[&str], stdin: &[u8]) -> Run {
    let mut cmd = clean_command(BIN, home, &server.url(""), Some(ROOT));
    cmd.args(args);
    run(cmd, Some(stdin))
}

#[tokio::test]
async fn transit_commands_against_a_dev_server() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let server = start_dev_server(ROOT, dir.path().join("server.log"));
    let r = call(
        "POST",
        &server.url("/v1/sys/mounts/transit"),
        Some(ROOT),
        Some(json!({"type": "transit"})),
    )
    .await;
    assert_eq!(r.status, 204, "{:?}", r.json);
    let z = |args: &[&str], stdin: &[u8]| zafe(&server, &home, args, stdin);

    // Create, then encrypt from standard input.
    let r = z(&["transit", "create", "payments"], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("aes256-gcm96"), "{}", r.stdout);
    const SECRET: &str = "card-4111-1111-1111-1111";
    let r = z(
        &["transit", "encrypt", "payments", "--format", "json"],
        SECRET.as_bytes(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v1 = r.json()["ciphertext"].as_str().unwrap().to_string();
    assert!(v1.starts_with("vault:v1:"), "{v1}");

    // Decrypt prints the raw plaintext, nothing else.
    let r = z(&["transit", "decrypt", "payments", &v1], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout_bytes, SECRET.as_bytes());

    // Binary input from @FILE survives the round trip byte for byte.
    let binary: Vec<u8> = (0..=255u8).collect();
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, &binary).unwrap();
    let at_file = format!("@{}", file.display());
    let r = z(&["transit", "encrypt", "payments", &at_file], b"");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let table = r.stdout;
    let blob_ct = table
        .split_whitespace()
        .find(|w| w.starts_with("vault:v1:"))
        .unwrap_or_else(|| panic!("no ciphertext in {table}"))
        .to_string();
    let r = z(&["transit", "decrypt", "payments", "-"], blob_ct.as_bytes());
    assert_eq!(r.stdout_bytes, binary);

    // Associated data must match.
    let r = z(
        &[
            "transit",
            "encrypt",
            "payments",
            "--associated-data",
            "order-7",
            "--format",
            "json",
        ],
        b"x",
    );
    let bound = r.json()["ciphertext"].as_str().unwrap().to_string();
    let r = z(&["transit", "decrypt", "payments", &bound], b"");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("message authentication failed"),
        "{}",
        r.stderr
    );
    let r = z(
        &[
            "transit",
            "decrypt",
            "payments",
            &bound,
            "--associated-data",
            "order-7",
        ],
        b"",
    );
    assert_eq!((r.code, r.stdout_bytes.as_slice()), (0, b"x".as_slice()));

    // Rotate, rewrap, then retire v1.
    let r = z(&["transit", "rotate", "payments", "--format", "json"], b"");
    assert_eq!(r.json()["latest_version"], 2);
    let r = z(
        &["transit", "rewrap", "payments", &v1, "--format", "json"],
        b"",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v2 = r.json()["ciphertext"].as_str().unwrap().to_string();
    assert!(v2.starts_with("vault:v2:"));
    let r = z(
        &[
            "transit",
            "config",
            "payments",
            "--min-decryption-version",
            "2",
        ],
        b"",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = z(&["transit", "decrypt", "payments", &v1], b"");
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("disallowed by policy (too old)"),
        "{}",
        r.stderr
    );
    assert!(r.stdout_bytes.is_empty());
    assert_eq!(
        z(&["transit", "decrypt", "payments", &v2], b"").stdout_bytes,
        SECRET.as_bytes()
    );

    // Read and list, in both formats.
    let r = z(&["transit", "read", "payments", "--format", "json"], b"");
    assert_eq!(r.json()["min_decryption_version"], 2);
    assert!(r.json()["keys"].get("1").is_none());
    let r = z(&["transit", "read", "payments"], b"");
    assert!(
        r.stdout.contains("min_decryption_version") && r.stdout.contains("versions"),
        "{}",
        r.stdout
    );

    // Ed25519 signatures over @FILE; verify exits 1 for a bad one.
    assert_eq!(
        z(&["transit", "create", "release", "--type", "ed25519"], b"").code,
        0
    );
    let r = z(
        &["transit", "sign", "release", &at_file, "--format", "json"],
        b"",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sig = r.json()["signature"].as_str().unwrap().to_string();
    let r = z(&["transit", "verify", "release", &sig, &at_file], b"");
    assert_eq!(r.code, 0, "{} {}", r.stdout, r.stderr);
    assert!(r.stdout.contains("true"));
    let r = z(&["transit", "verify", "release", &sig], b"tampered");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("NOT valid"));

    let r = z(&["transit", "list", "--format", "json"], b"");
    assert_eq!(r.json(), json!(["payments", "release"]));
    let r = z(&["transit", "list"], b"");
    assert!(r.stdout.contains("payments") && r.stdout.contains("release"));

    // Deletion needs deletion_allowed.
    let r = z(&["transit", "delete", "release"], b"");
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("deletion is not allowed"), "{}", r.stderr);
    assert_eq!(
        z(
            &["transit", "config", "release", "--deletion-allowed", "true"],
            b""
        )
        .code,
        0
    );
    assert_eq!(z(&["transit", "delete", "release"], b"").code, 0);
    assert_eq!(z(&["transit", "read", "release"], b"").code, 1);

    // Usage errors exit 2: plaintext on argv, config without a change.
    let r = z(&["transit", "encrypt", "payments", SECRET], b"");
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("never taken from the command line"));
    assert_eq!(z(&["transit", "config", "payments"], b"").code, 2);
    // A mount that is not there.
    let r = z(&["transit", "list", "--mount", "elsewhere"], b"");
    assert_eq!(r.code, 1, "{}", r.stderr);

    // The plaintext never reached the server's log, not even in base64.
    let log = server.log_text();
    assert!(!log.contains(SECRET));
    use base64::Engine as _;
    assert!(!log.contains(&base64::engine::general_purpose::STANDARD.encode(SECRET)));
}
