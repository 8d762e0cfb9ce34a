//! End to end: `zafe run` (R-DEV-3) against the real `zafe server --dev` on
//! loopback: exit codes passed through exactly, signals forwarded, Zafe's
//! credentials kept from the child, output masked (plain, base64, hex via
//! od and xxd, reversed, split writes, through a pty), `--no-mask`,
//! `--files` (modes, tmpfs, cleanup, also after a signal), a missing
//! reference stopping everything before the command starts, and the
//! issue's end-to-end case: a 20-key `.env` whose app gets every real value
//! and prints none of them.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::*;
use base64::Engine as _;
use serde_json::json;

const ROOT: &str = "run-cli-root";

struct Env {
    _server: Server,
    addr: String,
    config_dir: PathBuf,
    dir: PathBuf,
}

impl Env {
    fn new(dir: &Path) -> Env {
        let (server, config_dir, addr) = dev_server(dir, ROOT);
        Env {
            _server: server,
            addr,
            config_dir,
            dir: dir.to_path_buf(),
        }
    }

    /// `zafe <args>` with a clean environment plus `envs`.
    fn command(&self, args: &[&str], envs: &[(&str, &str)]) -> Command {
        let mut cmd = self.program(BIN);
        cmd.args(args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd
    }

    /// `program` with the client's clean environment, in the test directory.
    fn program(&self, program: &str) -> Command {
        let mut cmd = clean_command(program, &self.config_dir, &self.addr, Some(ROOT));
        cmd.current_dir(&self.dir);
        cmd
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        finish(
            self.command(args, envs).spawn().unwrap(),
            &format!("{args:?}"),
        )
    }

    async fn put(&self, project: &str, env: &str, key: &str, value: &str) {
        let r = call(
            "POST",
            &format!("{}/v1/secret/data/{project}/{env}/{key}", self.addr),
            Some(ROOT),
            Some(json!({"data": {"value": value}})),
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", r.json);
    }

    fn env_file(&self, name: &str, lines: &[String]) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path.to_string_lossy().into_owned()
    }
}

/// Every form of `value` a leak check looks for.
fn leaked_forms(value: &str) -> Vec<(&'static str, String)> {
    let b = value.as_bytes();
    vec![
        ("plain", value.to_string()),
        ("reversed", value.chars().rev().collect()),
        ("hex", hex::encode(b)),
        ("HEX", hex::encode_upper(b)),
        (
            "base64",
            base64::engine::general_purpose::STANDARD.encode(b),
        ),
        (
            "base64url",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b),
        ),
    ]
}

fn assert_no_leak(text: &str, values: &[&str]) {
    for value in values {
        for (form, encoded) in leaked_forms(value) {
            assert!(
                !text.contains(&encoded),
                "the {form} form of a secret leaked into:\n{text}"
            );
        }
    }
}

// Exit codes pass through exactly, including death by a signal (128+N) and
// the shell's codes for a command that is missing or not executable.
#[tokio::test]
async fn exit_codes_pass_through_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    env.put("app", "dev", "K", "exit-code-test-value").await;
    let file = env.env_file(".env.zafe", &["K=zafe://app/dev/K".into()]);
    let not_executable = dir.path().join("data.txt");
    std::fs::write(&not_executable, "x").unwrap();
    // Masked (Zafe supervises the child), exec (--no-mask), and with no
    // secret at all (Zafe also execs).
    for mode in [
        &["--env-file", file.as_str()][..],
        &["--no-mask", "--env-file", &file],
        &[],
    ] {
        let run = |command: &[&str]| {
            let mut args = vec!["run"];
            args.extend(mode);
            args.push("--");
            args.extend(command);
            env.run(&args)
        };
        for code in [0, 1, 2, 3, 42, 126, 127, 128, 255] {
            let r = run(&["sh", "-c", &format!("exit {code}")]);
            assert_eq!(
                r.status.code(),
                Some(code),
                "{mode:?} exit {code}: {}",
                r.stderr
            );
        }
        // Supervised, a child killed by signal N makes Zafe exit 128+N;
        // exec'd, the command is Zafe's own process and dies of N itself,
        // which the caller's shell reports as 128+N just the same.
        let supervised = mode.len() == 2;
        for (signal, name) in [(9, "KILL"), (15, "TERM")] {
            let r = run(&["sh", "-c", &format!("kill -{name} $$")]);
            if supervised {
                assert_eq!(r.status.code(), Some(128 + signal), "{mode:?}");
            } else {
                assert_eq!(r.signal, Some(signal), "{mode:?}");
            }
        }
        let r = run(&["no-such-command-zafe-test"]);
        assert_eq!(r.status.code(), Some(127), "{mode:?}: {}", r.stderr);
        assert!(r.stderr.contains("command not found"), "{}", r.stderr);
        let r = run(&[not_executable.to_str().unwrap()]);
        assert_eq!(r.status.code(), Some(126), "{mode:?}: {}", r.stderr);
    }
}

// SIGTERM (and the other forwarded signals) sent to zafe reach the child,
// whose own exit code then comes back.
#[tokio::test]
async fn signals_sent_to_zafe_reach_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    env.put("app", "dev", "K", "signal-test-value").await;
    let file = env.env_file(".env.zafe", &["K=zafe://app/dev/K".into()]);
    for (signal, name) in [
        (libc::SIGTERM, "TERM"),
        (libc::SIGINT, "INT"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGUSR1, "USR1"),
    ] {
        let script = format!(
            "trap 'echo got {name}; exit 7' {name}; echo ready; while :; do sleep 0.05; done"
        );
        let mut child = env
            .command(
                &["run", "--env-file", &file, "--", "sh", "-c", &script],
                &[],
            )
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("ready") {
            assert_eq!(stdout.read(&mut byte).unwrap(), 1, "no ready line");
            seen.push(byte[0]);
        }
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(7), "SIG{name}: {rest}");
        assert!(rest.contains(&format!("got {name}")), "SIG{name}: {rest}");
    }
}

// The child never sees Zafe's own credentials unless asked.
#[tokio::test]
async fn zafe_credentials_are_not_passed_to_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    env.put("app", "dev", "K", "credential-test-value").await;
    let file = env.env_file(".env.zafe", &["K=zafe://app/dev/K".into()]);
    let show =
        "env | grep -E '^(ZAFE|VAULT)_(TOKEN|ADDR)=' | cut -d= -f1 | sort | tr '\\n' ' '; echo";
    let envs = [("VAULT_TOKEN", ROOT), ("VAULT_ADDR", "http://127.0.0.1:1")];
    for mask in [true, false] {
        let mut args = vec!["run", "--env-file", &file];
        if !mask {
            args.push("--no-mask");
        }
        args.extend(["--", "sh", "-c", show]);
        let r = env.run_env(&args, &envs);
        assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
        assert_eq!(r.stdout.trim(), "", "credentials reached the child");
    }
    let r = env.run_env(&["run", "--pass-zafe-env", "--", "sh", "-c", show], &envs);
    assert_eq!(
        r.stdout.trim(),
        "VAULT_ADDR VAULT_TOKEN ZAFE_ADDR ZAFE_TOKEN"
    );
}

// The child cannot use the user's saved session either: its configuration
// directory is an empty one, so `zafe kv get` in the child (which would
// print a value the masker never saw) fails. --pass-zafe-env keeps it.
#[tokio::test]
async fn the_child_cannot_use_the_users_zafe_session() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    env.put("app", "dev", "K", "session-test-value").await;
    // `zafe login` saved the root token in the user's configuration directory.
    std::fs::write(env.config_dir.join("token"), ROOT).unwrap();
    let get = "ZAFE_ADDR=$TEST_ADDR \"$TEST_ZAFE\" kv get --field value secret/app/dev/K; \
               echo \"exit=$?\"; echo \"dir=$ZAFE_CONFIG_DIR\"";
    // An env file with a reference: a masked run (Zafe stays, and removes
    // the directory when the command ends).
    let file = env.env_file(".env.ref", &["OTHER=zafe://app/dev/K".into()]);
    let envs = [("TEST_ADDR", env.addr.as_str()), ("TEST_ZAFE", BIN)];
    for extra in [&[][..], &["--no-mask"], &["--env-file", &file]] {
        let mut args = vec!["run"];
        args.extend(extra);
        args.extend(["--", "sh", "-c", get]);
        let r = env.run_env(&args, &envs);
        assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
        assert!(
            !r.stdout.contains("session-test-value"),
            "{extra:?}: {}",
            r.stdout
        );
        assert!(!r.stdout.contains("exit=0"), "{extra:?}: {}", r.stdout);
        let child_dir = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("dir="))
            .unwrap();
        assert_ne!(Path::new(child_dir), env.config_dir.as_path());
        // Removed when a masked run ends (a run that replaces Zafe with the
        // command removes it before, and what the child writes is its own).
        if extra.len() == 2 {
            assert!(!Path::new(child_dir).exists(), "{child_dir}");
        } else {
            let _ = std::fs::remove_dir_all(child_dir);
        }
    }
    let args = ["run", "--pass-zafe-env", "--", "sh", "-c", get];
    let r = env.run_env(&args, &envs);
    assert!(
        r.stdout.contains("session-test-value"),
        "{} {}",
        r.stdout,
        r.stderr
    );
}

// Values and their encodings are masked; the child still gets the real
// values (its own checks pass); --no-mask shows them.
#[tokio::test]
async fn output_is_masked_in_every_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let api_key = "sk_live_4eC39HqLyjWDarjtT1zdp7dc";
    let password = "p@ss w0rd!/+=";
    let short_pin = "123";
    env.put("app", "dev", "API_KEY", api_key).await;
    env.put("app", "dev", "DB_PASSWORD", password).await;
    env.put("app", "dev", "PIN", short_pin).await;
    let file = env.env_file(
        ".env.zafe",
        &[
            "API_KEY=zafe://app/dev/API_KEY".into(),
            "DB_PASSWORD=zafe://app/dev/DB_PASSWORD".into(),
            "PIN=zafe://app/dev/PIN".into(),
            "GREETING=hello".into(),
        ],
    );
    let script = r#"
        test "$API_KEY" = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc' || { echo WRONG-VALUE; exit 9; }
        env
        printf %s "$API_KEY" | base64
        echo "$DB_PASSWORD" | base64
        printf %s "$API_KEY" | base64 | tr '+/' '-_'
        printf %s "$API_KEY" | od -An -tx1
        printf %s "$DB_PASSWORD" | xxd -p
        printf %s "$API_KEY" | xxd -p | tr a-f A-F
        printf %s "$API_KEY" | rev; echo
        printf %s "$API_KEY" >&2
        # one value split over two writes, with a pause between them
        printf %s "$API_KEY" | cut -c1-10 | tr -d '\n'; sleep 0.3; printf %s "$API_KEY" | cut -c11-
        echo "greeting=$GREETING"
    "#;
    let r = env.run(&["run", "--env-file", &file, "--", "sh", "-c", script]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    assert!(r.stdout.contains("***"), "{}", r.stdout);
    // A plain value of the env file is configuration left plain on purpose:
    // it passes through (only `zafe mcp` masks plain values too).
    assert!(r.stdout.contains("greeting=hello"), "{}", r.stdout);
    assert_no_leak(&r.stdout, &[api_key, password]);
    assert_no_leak(&r.stderr, &[api_key, password]);
    // Not even the first part of the split value.
    assert!(!r.stdout.contains(&api_key[..10]), "{}", r.stdout);
    // The short value is not masked, and zafe says so, by name.
    assert!(r.stdout.contains("PIN=123"), "{}", r.stdout);
    assert!(r.stderr.contains("PIN"), "{}", r.stderr);

    let r = env.run(&[
        "run",
        "--no-mask",
        "--env-file",
        &file,
        "--",
        "sh",
        "-c",
        "echo \"$API_KEY\"",
    ]);
    assert_eq!(r.status.code(), Some(0));
    assert_eq!(r.stdout.trim(), api_key);
    let r = env.run_env(
        &[
            "run",
            "--env-file",
            &file,
            "--",
            "sh",
            "-c",
            "echo \"$API_KEY\"",
        ],
        &[("ZAFE_RUN_NO_MASK", "1")],
    );
    assert_eq!(r.stdout.trim(), api_key);

    // References in Zafe's own environment are resolved too.
    let r = env.run_env(
        &[
            "run",
            "--",
            "sh",
            "-c",
            "test \"$K\" = 'sk_live_4eC39HqLyjWDarjtT1zdp7dc' && echo \"$K\"",
        ],
        &[("K", "zafe://app/dev/API_KEY")],
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "***");
}

// Under a terminal the child gets a pseudo-terminal: it sees a tty, and its
// output is still masked. `script` gives zafe a terminal.
#[tokio::test]
async fn a_terminal_gets_a_pty_and_masked_output() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let value = "tty-secret-Zq9wX2vB7nM4";
    env.put("app", "dev", "TOKEN", value).await;
    let file = env.env_file(".env.zafe", &["TOKEN=zafe://app/dev/TOKEN".into()]);
    let inner = format!(
        "{BIN} run --env-file {file} -- sh -c 'test -t 1 && echo child-has-a-tty; \
         stty size; echo \"$TOKEN\"; printf %s \"$TOKEN\" | base64; exit 5'"
    );
    // `script -qec CMD /dev/null` runs CMD on a new pseudo-terminal.
    let mut script = env.program("script");
    script
        .args(["-qec", &inner, "/dev/null"])
        .env("TERM", "xterm");
    let r = finish(script.spawn().unwrap(), "script");
    assert!(r.stdout.contains("child-has-a-tty"), "{}", r.stdout);
    assert!(r.stdout.contains("***"), "{}", r.stdout);
    assert_no_leak(&r.stdout, &[value]);
    assert_eq!(r.status.code(), Some(5), "{}", r.stdout);

    // Without a terminal there is no pty.
    let r = env.run(&[
        "run",
        "--env-file",
        &file,
        "--",
        "sh",
        "-c",
        "test -t 1 || echo no-tty",
    ]);
    assert_eq!(r.stdout.trim(), "no-tty");
}

// --files: each secret is a 0400 file in a 0700 directory on tmpfs, the
// variable holds its path, and the directory is gone when the command
// exits, also when zafe was told to stop by a signal.
#[tokio::test]
async fn files_mode_uses_a_private_tmpfs_directory_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let value = "file-secret-value-8f2k";
    env.put("app", "dev", "CERT", value).await;
    let file = env.env_file(".env.zafe", &["CERT=zafe://app/dev/CERT".into()]);
    let script = r#"
        stat -c '%a' "$CERT"
        stat -c '%a' "$(dirname "$CERT")"
        stat -f -c '%T' "$CERT"
        echo "$CERT"
        test "$(cat "$CERT")" = 'file-secret-value-8f2k' && echo content-ok
    "#;
    for extra in [None, Some("--no-mask")] {
        let mut args = vec!["run", "--files", "--env-file", &file];
        args.extend(extra);
        args.extend(["--", "sh", "-c", script]);
        let r = env.run(&args);
        assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
        let lines: Vec<&str> = r.stdout.lines().collect();
        assert_eq!(lines[0], "400");
        assert_eq!(lines[1], "700");
        assert_eq!(lines[2], "tmpfs");
        assert_eq!(lines[4], "content-ok");
        let path = Path::new(lines[3]);
        assert!(!path.exists(), "{} was left behind", path.display());
        assert!(!path.parent().unwrap().exists());
    }

    // SIGTERM to zafe: forwarded, the child exits, the directory goes.
    let mut child = env
        .command(
            &[
                "run",
                "--files",
                "--env-file",
                &file,
                "--",
                "sh",
                "-c",
                "echo \"$CERT\"; while :; do sleep 0.05; done",
            ],
            &[],
        )
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\n") {
        assert_eq!(stdout.read(&mut byte).unwrap(), 1);
        line.push(byte[0]);
    }
    let path = PathBuf::from(String::from_utf8(line).unwrap().trim());
    assert!(path.exists());
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(!path.exists(), "{} survived SIGTERM", path.display());
}

// A missing reference fails before the command starts: nothing runs, the
// exit code says why, and the message names the reference, never a value.
#[tokio::test]
async fn a_missing_reference_fails_before_the_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    env.put("app", "dev", "PRESENT", "present-value-xyz1").await;
    let file = env.env_file(
        ".env.zafe",
        &[
            "PRESENT=zafe://app/dev/PRESENT".into(),
            "ABSENT=zafe://app/dev/ABSENT".into(),
        ],
    );
    let marker = dir.path().join("ran");
    let r = env.run(&[
        "run",
        "--env-file",
        &file,
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(121), "{}", r.stderr);
    assert!(!marker.exists(), "the command ran");
    assert!(r.stderr.contains("zafe://app/dev/ABSENT"), "{}", r.stderr);
    assert!(!r.stderr.contains("present-value-xyz1"), "{}", r.stderr);

    // An invalid reference and an unreadable env file: also before anything runs.
    let bad = env.env_file("bad.env", &["X=zafe://app/dev".into()]);
    let r = env.run(&[
        "run",
        "--env-file",
        &bad,
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(121), "{}", r.stderr);
    let r = env.run(&["run", "--env-file", "/nonexistent.env", "--", "true"]);
    assert_eq!(r.status.code(), Some(125), "{}", r.stderr);
    assert!(!marker.exists());
}

// The issue's end-to-end case: a sample app's .env with 20 keys is
// imported (`zafe import`); `zafe run -- app` gives the app every real value (it checks a
// checksum of them and prints "ok"), and its output holds none of them
// unless --no-mask.
#[tokio::test]
async fn twenty_key_app_gets_every_value_and_prints_none() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let values: Vec<String> = (1..=20)
        .map(|i| format!("v{i:02}-{}", hex::encode([i as u8 * 7; 6])))
        .collect();
    // The app's plain .env, imported: values go to the server, .env.zafe
    // holds references only.
    let dotenv: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("KEY_{}={v}", i + 1))
        .collect();
    env.env_file(".env", &dotenv);
    let r = env.run(&["import", "--project", "shop", "--env", "dev", ".env"]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "import: {}\n{}",
        r.stdout,
        r.stderr
    );
    let file = dir.path().join(".env.zafe").to_string_lossy().into_owned();
    let imported = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        imported.matches("zafe://shop/dev/KEY_").count(),
        20,
        "{imported}"
    );
    assert_no_leak(
        &imported,
        &values.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let concatenated: String = values.concat();
    let expected = sha256_hex(concatenated.as_bytes());
    let app = dir.path().join("app.sh");
    std::fs::write(
        &app,
        format!(
            "#!/bin/sh\n\
             all=''\n\
             for i in $(seq 1 20); do eval \"v=\\$KEY_$i\"; echo \"KEY_$i=$v\"; all=\"$all$v\"; done\n\
             sum=$(printf %s \"$all\" | sha256sum | cut -d' ' -f1)\n\
             if [ \"$sum\" = {expected} ]; then echo ok; else echo checksum-mismatch; exit 1; fi\n"
        ),
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", app.to_str().unwrap()])
        .status()
        .unwrap();
    let r = env.run(&["run", "--env-file", &file, "--", app.to_str().unwrap()]);
    assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.lines().any(|l| l == "ok"), "{}", r.stdout);
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    assert_no_leak(&r.stdout, &refs);
    assert_no_leak(&r.stderr, &refs);

    let r = env.run(&[
        "run",
        "--no-mask",
        "--env-file",
        &file,
        "--",
        app.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0));
    for v in &values {
        assert!(r.stdout.contains(v.as_str()));
    }

    // --project/--env gives the app the same keys without an env file.
    let r = env.run(&[
        "run",
        "--project",
        "shop",
        "--env",
        "dev",
        "--",
        app.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.lines().any(|l| l == "ok"), "{}", r.stdout);
    assert_no_leak(&r.stdout, &refs);
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

// A project member cannot run code on a teammate's machine through
// `zafe run --project`: a key such as BASH_ENV (or LD_PRELOAD, PATH,
// NODE_OPTIONS...) stops the run before the command starts, naming it,
// unless the teammate allows it by name. The user's own env file may set
// such a variable (their choice).
#[tokio::test]
async fn project_keys_that_run_code_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let payload = dir.path().join("payload.sh");
    std::fs::write(&payload, "echo PAYLOAD-RAN\n").unwrap();
    let payload = payload.to_str().unwrap();
    env.put("evil", "dev", "API_URL", "https://api.example.com")
        .await;
    env.put("evil", "dev", "BASH_ENV", payload).await;
    let marker = dir.path().join("ran");
    let script = format!("touch {}; echo started", marker.display());
    let run = |extra: &[&str]| {
        let mut args = vec!["run", "--project", "evil", "--env", "dev"];
        args.extend(extra);
        args.extend(["--", "bash", "-c", &script]);
        env.run(&args)
    };

    let r = run(&[]);
    assert_eq!(r.status.code(), Some(125), "{} {}", r.stdout, r.stderr);
    assert!(r.stderr.contains("evil/dev sets BASH_ENV"), "{}", r.stderr);
    assert!(r.stderr.contains("--allow-env BASH_ENV"), "{}", r.stderr);
    assert!(!r.stderr.contains(payload), "{}", r.stderr);
    assert!(!marker.exists(), "the command started");
    assert!(!r.stdout.contains("PAYLOAD-RAN"), "{}", r.stdout);
    // Allowing another name does not help.
    let r = run(&["--allow-env", "NODE_OPTIONS"]);
    assert_eq!(r.status.code(), Some(125), "{}", r.stderr);
    assert!(!marker.exists(), "the command started");

    // Allowed by name: the run goes ahead with it.
    let r = run(&["--allow-env", "BASH_ENV"]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("PAYLOAD-RAN"), "{}", r.stdout);
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();

    // The user's own env file setting the variable wins over the project's
    // key, and its references are the user's choice.
    let file = env.env_file(".env.mine", &["BASH_ENV=zafe://evil/dev/BASH_ENV".into()]);
    let r = env.run(&["run", "--env-file", &file, "--", "bash", "-c", &script]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    let r = env.run(&[
        "run",
        "--project",
        "evil",
        "--env",
        "dev",
        "--env-file",
        &file,
        "--",
        "bash",
        "-c",
        &script,
    ]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    assert!(marker.exists());
}

/// How a value shows in output, if it does (the README's promise: at most
/// 3 bytes of it): 4 consecutive bytes of it plain, in hex once spaces and
/// line breaks are removed (any dump), or as `od -c` prints them; or 6
/// characters of its base64 at any alignment, line breaks removed.
fn shows_four_bytes(out: &str, value: &[u8]) -> Option<String> {
    let squeezed: String = out.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let lower = squeezed.to_ascii_lowercase();
    for (i, run) in value.windows(4).enumerate() {
        if out.as_bytes().windows(4).any(|w| w == run) {
            return Some(format!("bytes {i}.. plain"));
        }
        if lower.contains(&hex::encode(run)) {
            return Some(format!("bytes {i}.. in hex"));
        }
        let od: String = run.iter().map(|&b| format!("{:>4}", b as char)).collect();
        if out.contains(od.trim_start()) {
            return Some(format!("bytes {i}.. as od -c"));
        }
    }
    for k in 0..3 {
        let mut stream = vec![0u8; k];
        stream.extend_from_slice(value);
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&stream);
        let core = &encoded[[0, 2, 3][k]..stream.len() * 8 / 6];
        for i in 0..core.len().saturating_sub(5) {
            if squeezed.contains(&core[i..i + 6]) {
                return Some(format!("base64 at alignment {k}"));
            }
        }
    }
    None
}

// R-DEV-3: a 59-byte value printed through the dump tools (od -An -tx1,
// od -tx1, od -c, xxd, xxd -p, hexdump -C, base64, printf %q), alone or
// in the middle of a longer stream, shows at most 3 bytes of itself
// anywhere (before: od -An -tx1 and the multi-line layouts showed it
// whole, printf %q with backslashes).
#[tokio::test]
async fn dump_tools_show_at_most_three_bytes_of_a_value() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let value = "sk_live_4eC39HqL yjWDar!T1zdp7dc-(0123456789)-abcdefghijklm";
    assert_eq!(value.len(), 59);
    env.put("app", "dev", "K", value).await;
    let file = env.env_file(".env.zafe", &["K=zafe://app/dev/K".into()]);
    for tool in [
        "od -An -tx1",
        "od -tx1",
        "od -c",
        "od -An -c",
        "xxd",
        "xxd -p",
        "hexdump -C",
        "base64",
    ] {
        for feed in [
            r#"printf %s "$K""#,
            r#"echo "$K""#,
            r#"printf 'LEAD=x%s\n' "$K""#,
            r#"printf 'SOME_LONGER_LEAD=%s&more' "$K""#,
        ] {
            let script = format!("{feed} | {tool}");
            let r = env.run(&["run", "--env-file", &file, "--", "sh", "-c", &script]);
            assert_eq!(r.status.code(), Some(0), "{script}: {}", r.stderr);
            assert!(r.stdout.contains("***"), "{script}: {}", r.stdout);
            assert_eq!(
                shows_four_bytes(&r.stdout, value.as_bytes()),
                None,
                "{script}:\n{}",
                r.stdout
            );
        }
    }
    for script in [r#"printf '%q\n' "$K""#, r#"printf '%q\n' "$K" | base64"#] {
        let r = env.run(&["run", "--env-file", &file, "--", "bash", "-c", script]);
        assert_eq!(r.status.code(), Some(0), "{script}: {}", r.stderr);
        assert_eq!(
            shows_four_bytes(&r.stdout, value.as_bytes()),
            None,
            "{script}: {}",
            r.stdout
        );
        assert!(!r.stdout.contains("yjWDar"), "{script}: {}", r.stdout);
    }
}

// R-DEV-3: a program printing a value one byte every 30-50 ms (longer
// than the idle flush) shows at most its first 3 bytes (before, each idle
// flush forgot what it had let out: all but the last bytes showed).
#[tokio::test]
async fn a_value_printed_a_byte_at_a_time_shows_at_most_three_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    let value = "slow-Zq9wX2vB7nM4-drip-fed-value-0123456789abcdefghijklmnop";
    env.put("app", "dev", "K", value).await;
    let file = env.env_file(".env.zafe", &["K=zafe://app/dev/K".into()]);
    let script = r#"i=0; for c in $(printf %s "$K" | fold -w1); do
        printf %s "$c"; if [ $((i % 2)) = 0 ]; then sleep 0.03; else sleep 0.05; fi; i=$((i + 1));
    done; echo"#;
    let r = env.run(&["run", "--env-file", &file, "--", "sh", "-c", script]);
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    let shown = r.stdout.trim_end();
    let before_mask = shown
        .strip_suffix("***")
        .unwrap_or_else(|| panic!("{shown:?}"));
    assert!(
        before_mask.len() <= 3 && value.starts_with(before_mask),
        "{shown:?}"
    );
}

// R-DEV-5: a command `zafe run` starts cannot read Zafe's token from
// /proc/<ppid>/environ: the token is scrubbed from Zafe's environment block
// once read (tests run as root, who may read any process's /proc files
// whether it is dumpable or not, so the scrub is what shows here).
#[tokio::test]
async fn the_child_cannot_read_the_token_from_zafes_environment_block() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::new(dir.path());
    env.put("app", "dev", "K", "environ-test-value").await;
    let file = env.env_file(".env.zafe", &["K=zafe://app/dev/K".into()]);
    let copy = dir.path().join("parent-environ");
    let script = format!("tr '\\0' '\\n' < /proc/$PPID/environ > {}", copy.display());
    let envs = [("VAULT_TOKEN", "vault-token-in-env")];
    let r = env.run_env(
        &["run", "--env-file", &file, "--", "sh", "-c", &script],
        &envs,
    );
    assert_eq!(r.status.code(), Some(0), "{}", r.stderr);
    let seen = std::fs::read_to_string(&copy).unwrap();
    assert!(seen.contains("ZAFE_ADDR="), "{seen}");
    assert!(seen.contains("ZAFE_TOKEN="), "{seen}");
    assert!(!seen.contains(ROOT), "{seen}");
    assert!(!seen.contains("vault-token-in-env"), "{seen}");
}
