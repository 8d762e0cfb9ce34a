//! `zafe operator init | unseal | seal | rotate | key-status | rekey | bootstrap-admin |
//! backup | restore` (the last two in `backup.rs`).

use std::io::{BufRead as _, IsTerminal as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use zafe_client::{Client, Method};
use zeroize::Zeroizing;

use crate::ctx::{Ctx, with_token};
use crate::output::{Out, outln};
use crate::prompt::{read_password, stdin_line};
use crate::status::seal_rows;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum Args {
    /// Initialise a new server: create the root key and split it into unseal keys
    #[command(after_help = "\
Examples:
  zafe operator init
  zafe operator init --key-shares 5 --key-threshold 3
  zafe operator init --key-shares 1 --key-threshold 1 --format json > init.json

The unseal keys and the root token are shown once. Store each key separately and securely:
the server cannot show them again.")]
    Init {
        /// Number of unseal keys to create
        #[arg(long, visible_alias = "shares", default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..))]
        key_shares: u8,
        /// Number of unseal keys needed to unseal
        #[arg(long, visible_alias = "threshold", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
        key_threshold: u8,
    },

    /// Submit one unseal key (repeat with different keys until the threshold is met)
    #[command(after_help = "\
Examples:
  zafe operator unseal                 Prompt for the key without echo
  zafe operator unseal < key.txt       Read one key from standard input
  zafe operator unseal --reset         Discard the keys submitted so far

A key given as an argument ends up in your shell history; prefer the prompt.")]
    Unseal {
        /// The unseal key, in hex or base64 (prompted for when omitted)
        #[arg(value_name = "KEY", conflicts_with = "reset")]
        key: Option<zafe_core::secret::SecretString>,
        /// Discard the keys submitted so far and start over
        #[arg(long)]
        reset: bool,
    },

    /// Rotate the key-encryption key; older records are re-encrypted in the background
    #[command(after_help = "\
Examples:
  zafe operator rotate             Rotate and follow the re-encryption with a progress display
  zafe operator rotate --no-wait   Rotate and return at once

New writes use the new key at once; older records stay readable and are re-encrypted in the
background. Needs a token with sudo on sys/rotate.")]
    Rotate {
        /// Return right after the rotation instead of following the re-encryption
        #[arg(long)]
        no_wait: bool,
    },

    /// Show the active key term and the progress of the last re-encryption
    #[command(
        name = "key-status",
        after_help = "\
Examples:
  zafe operator key-status
  zafe operator key-status --format json"
    )]
    KeyStatus,

    /// Issue new unseal keys (the data is not re-encrypted; the old keys stop working)
    #[command(after_help = "\
Examples:
  zafe operator rekey --key-shares 5 --key-threshold 3    Prompts for the current keys
  zafe operator rekey < current-keys.txt                  One current key per line

Needs a token with sudo and a threshold of the current unseal keys.")]
    Rekey {
        /// Number of new unseal keys
        #[arg(long, visible_alias = "shares", default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..))]
        key_shares: u8,
        /// Number of new keys needed to unseal
        #[arg(long, visible_alias = "threshold", default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..))]
        key_threshold: u8,
    },

    /// Create the first administrator with the setup token a new server prints (headless first run)
    #[command(
        name = "bootstrap-admin",
        after_help = "\
Examples:
  ZAFE_SETUP_TOKEN=zafe_su_... zafe operator bootstrap-admin --email you@example.com
  ZAFE_SETUP_TOKEN=zafe_su_... zafe operator bootstrap-admin --email ops@example.com --password-stdin < pw.txt

While no account exists, the server prints a one-time setup link at start-up (valid 15 minutes);
its token goes in ZAFE_SETUP_TOKEN (or is asked for at a hidden prompt). You are logged in after."
    )]
    BootstrapAdmin {
        /// The administrator's email address
        #[arg(long)]
        email: String,
        #[arg(long)]
        display_name: Option<String>,
        /// Read the password from one line of standard input
        #[arg(long)]
        password_stdin: bool,
    },

    /// Seal the server: wipe its keys from memory until it is unsealed again (needs a root token)
    #[command(after_help = "\
Examples:
  zafe operator seal          The token comes from ZAFE_TOKEN or the token file")]
    Seal,

    /// Take an online backup: a consistent snapshot of everything the server stores (ciphertext only)
    #[command(after_help = "\
Examples:
  zafe operator backup -o zafe-2026-01-31.zbak
  zafe operator backup -o backup.zbak --format json

The server keeps serving while the snapshot is taken. The file (mode 0600, written atomically)
holds every stored record as ciphertext, the seal configuration, the audit log and its signed
checkpoints, with a SHA-256 over the whole: it is useless without the unseal keys or master key.
Needs a token with sudo on sys/backup; the backup is audited.")]
    Backup {
        /// The file to write
        #[arg(short = 'o', long, value_name = "FILE")]
        output: std::path::PathBuf,
    },

    /// Restore a backup into an uninitialised server (SQLite or PostgreSQL, either way)
    #[command(after_help = "\
Examples:
  zafe operator restore zafe-2026-01-31.zbak
  ZAFE_TOKEN=<root token> zafe operator restore --force backup.zbak

The file is checked whole (format, counts, SHA-256) before anything is sent, and the server
writes it in one transaction: a damaged file restores nothing. Into an uninitialised server no
token is needed; a server that holds data is refused unless --force, which needs a root token
of that server and replaces everything it stores. Afterwards the server is sealed: unseal it
with the keys of the server the backup came from. Give the new server that server's identity
key file so that `zafe audit verify` accepts the restored checkpoints.")]
    Restore {
        /// The backup file (from `zafe operator backup`)
        #[arg(value_name = "FILE")]
        file: std::path::PathBuf,
        /// Replace everything an initialised server stores (needs its root token)
        #[arg(long)]
        force: bool,
    },
}

pub(crate) async fn run(ctx: &Ctx<'_>, args: Args) -> anyhow::Result<ExitCode> {
    let client = &ctx.client()?;
    let out = ctx.out();
    match args {
        Args::Init {
            key_shares,
            key_threshold,
        } => init(client, out, key_shares, key_threshold).await?,
        Args::Unseal { key, reset } => unseal(client, out, key, reset).await?,
        Args::BootstrapAdmin {
            email,
            display_name,
            password_stdin,
        } => bootstrap_admin(client, out, &email, display_name.as_deref(), password_stdin).await?,
        Args::Seal => seal(client, out).await?,
        Args::Backup { output } => crate::backup::backup(client, out, &output).await?,
        Args::Restore { file, force } => crate::backup::restore(client, out, &file, force).await?,
        Args::Rotate { no_wait } => rotate(client, out, !no_wait).await?,
        Args::KeyStatus => key_status(client, out).await?,
        Args::Rekey {
            key_shares,
            key_threshold,
        } => rekey(client, out, key_shares, key_threshold).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn init(client: &Client, out: Out<'_>, shares: u8, threshold: u8) -> anyhow::Result<()> {
    if threshold > shares {
        bail!("the key threshold ({threshold}) cannot exceed the number of key shares ({shares})");
    }
    let init = client.init(shares, threshold).await?;
    if out.json() {
        return out.print_json(&init);
    }
    for (i, key) in init.keys_base64.iter().enumerate() {
        outln!(out, "Unseal Key {}: {key}", i + 1);
    }
    outln!(out);
    outln!(out, "Initial Root Token: {}", init.root_token);
    outln!(out);
    outln!(
        out,
        "Zafe initialized with {shares} key shares and a key threshold of {threshold}."
    );
    outln!(out);
    outln!(
        out,
        "{}",
        out.yellow(&format!(
            "WARNING: the unseal keys and the root token are shown only this once. Store each key \
             separately and securely (with different people or in different places): whoever holds \
             {threshold} of them can unseal the server, and lost keys cannot be recovered.\n\
             Each time the server starts it is sealed; unseal it with `zafe operator unseal`, \
             {threshold} times with different keys."
        ))
    );
    Ok(())
}

async fn unseal(
    client: &Client,
    out: Out<'_>,
    key: Option<zafe_core::secret::SecretString>,
    reset: bool,
) -> anyhow::Result<()> {
    let status = if reset {
        client.unseal_reset().await?
    } else {
        let key = match key {
            Some(key) => Zeroizing::new(key.expose().to_string()),
            None => crate::prompt::read_unseal_key()?,
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("no unseal key given");
        }
        client.unseal(key).await?
    };
    if out.json() {
        out.print_json(&status)
    } else {
        out.print_table(&seal_rows(&status, out));
        Ok(())
    }
}

async fn seal(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    client.seal().await?;
    if out.json() {
        out.print_json(&serde_json::json!({ "sealed": true }))
    } else {
        outln!(out, "Success! Zafe is sealed.");
        Ok(())
    }
}

// ---- The first administrator ------------------------------------------

/// `zafe operator bootstrap-admin`: the first administrator, with the setup
/// token the server printed at its first start (ZAFE_SETUP_TOKEN or prompt).
async fn bootstrap_admin(
    client: &Client,
    out: Out<'_>,
    email: &str,
    display_name: Option<&str>,
    password_stdin: bool,
) -> anyhow::Result<()> {
    let token = match std::env::var("ZAFE_SETUP_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Zeroizing::new(t.trim().to_string()),
        _ if std::io::stdin().is_terminal() => Zeroizing::new(
            rpassword::prompt_password(
                "Setup token from the server's first-run message (hidden): ",
            )?
            .trim()
            .to_string(),
        ),
        _ => bail!(
            "set ZAFE_SETUP_TOKEN to the zafe_su_... token the server printed at its first start"
        ),
    };
    let password = read_password(
        "New administrator password (hidden): ",
        true,
        password_stdin,
        &mut stdin_line,
    )?;
    let body = json!({
        "token": token.as_str(),
        "email": email,
        "password": password.as_str(),
        "display_name": display_name,
    });
    let answer = with_token(client, None)?
        .request_json(Method::POST, "/v1/sys/setup", Some(&body))
        .await
        .context("creating the first administrator failed")?
        .unwrap_or_default();
    crate::login::store_session(
        client,
        out,
        &answer,
        "Created the first administrator and logged in",
    )
}

// ---- Keys ----------------------------------------------------------------

async fn key_status(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let body = client
        .request_json(Method::GET, "/v1/sys/key-status", None)
        .await?
        .unwrap_or_default();
    if out.json() {
        return out.print_json(&body["data"]);
    }
    out.print_table(&key_rows(&body["data"]));
    Ok(())
}

/// Rows for `key-status` and `zafe status`.
pub(crate) fn key_rows(data: &Value) -> Vec<(&'static str, String)> {
    let mut rows = vec![("Key Term", data["term"].to_string())];
    if let Some(rewrap) = data["rewrap"].as_object() {
        let state = if rewrap.get("done") == Some(&Value::Bool(true)) {
            "done"
        } else {
            "running"
        };
        rows.push((
            "Re-wrap",
            format!(
                "{state}: {} re-encrypted, {} records scanned",
                rewrap.get("rewrapped").cloned().unwrap_or_default(),
                rewrap.get("scanned").cloned().unwrap_or_default()
            ),
        ));
    }
    rows
}

/// Rotates the key-encryption key and follows the re-wrap until it ends,
/// with a progress bar on a terminal.
async fn rotate(client: &Client, out: Out<'_>, wait: bool) -> anyhow::Result<()> {
    client
        .request_json(Method::PUT, "/v1/sys/rotate", None)
        .await?;
    let status = client
        .request_json(Method::GET, "/v1/sys/key-status", None)
        .await?
        .unwrap_or_default();
    eprintln!(
        "Success! Rotated the key-encryption key; new writes use key term {}.",
        status["data"]["term"]
    );
    if !wait {
        eprintln!(
            "Older records are re-encrypted in the background; `zafe operator key-status` shows the progress."
        );
        return Ok(());
    }
    let bar = if std::io::stderr().is_terminal() && !out.json() {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} re-encrypting older records: {msg}")
                .expect("valid template"),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        None
    };
    loop {
        let status = client
            .request_json(Method::GET, "/v1/sys/key-status", None)
            .await?
            .unwrap_or_default();
        let rewrap = &status["data"]["rewrap"];
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "{} re-encrypted, {} scanned",
                rewrap["rewrapped"], rewrap["scanned"]
            ));
        }
        if rewrap["done"] == true || rewrap.is_null() {
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            if out.json() {
                out.print_json(&status["data"])?;
            } else {
                eprintln!(
                    "Re-wrap finished: {} records re-encrypted.",
                    rewrap["rewrapped"]
                );
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `operator rekey`: new unseal shares from `threshold` current ones.
async fn rekey(client: &Client, out: Out<'_>, shares: u8, threshold: u8) -> anyhow::Result<()> {
    if threshold > shares {
        bail!("the key threshold ({threshold}) cannot exceed the number of key shares ({shares})");
    }
    let started = client
        .request_json(
            Method::PUT,
            "/v1/sys/rekey/init",
            Some(&json!({ "secret_shares": shares, "secret_threshold": threshold })),
        )
        .await?
        .unwrap_or_default();
    let nonce = started["nonce"].as_str().unwrap_or_default().to_string();
    let interactive = std::io::stdin().is_terminal();
    let mut stdin = std::io::stdin().lock();
    loop {
        let key = if interactive {
            Zeroizing::new(rpassword::prompt_password(
                "Current unseal key (will be hidden): ",
            )?)
        } else {
            let mut line = Zeroizing::new(String::new());
            if stdin.read_line(&mut line)? == 0 {
                client
                    .request_json(Method::DELETE, "/v1/sys/rekey/init", None)
                    .await?;
                bail!(
                    "standard input ended before enough current unseal keys were given; the rekey was cancelled"
                );
            }
            line
        };
        let key = key.trim();
        if key.is_empty() {
            continue;
        }
        let progress = client
            .request_json(
                Method::PUT,
                "/v1/sys/rekey/update",
                Some(&json!({ "nonce": nonce, "key": key })),
            )
            .await?
            .unwrap_or_default();
        if progress["complete"] == true {
            if out.json() {
                return out.print_json(&progress);
            }
            for (i, key) in progress["keys_base64"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .enumerate()
            {
                outln!(
                    out,
                    "New Unseal Key {}: {}",
                    i + 1,
                    key.as_str().unwrap_or_default()
                );
            }
            outln!(out);
            outln!(out,
                "{}",
                out.yellow("Zafe has new unseal keys; the old ones no longer work. Store each new key separately: they are shown only once.")
            );
            return Ok(());
        }
        eprintln!(
            "Key accepted ({}/{}).",
            progress["progress"], progress["required"]
        );
    }
}
