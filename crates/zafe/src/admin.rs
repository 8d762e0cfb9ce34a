//! Administration: `zafe policy ...`, `zafe secrets enable|disable|list`,
//! `zafe operator rotate|rekey|key-status`.

use std::io::{BufRead as _, IsTerminal as _, Read as _};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use zafe_client::path::{encode_path, encode_segment as encode};
use zafe_client::{Client, Method};
use zeroize::Zeroizing;

use crate::output::Out;
use crate::output::outln;

// ---- Policies ------------------------------------------------------------

pub(crate) async fn policy_list(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let body = client
        .request_json(Method::GET, "/v1/sys/policy", None)
        .await?
        .unwrap_or_default();
    let names = body["policies"].as_array().cloned().unwrap_or_default();
    if out.json() {
        return out.print_json(&names);
    }
    for name in names {
        outln!(out, "{}", name.as_str().unwrap_or_default());
    }
    Ok(())
}

pub(crate) async fn policy_read(client: &Client, out: Out<'_>, name: &str) -> anyhow::Result<()> {
    let path = format!("/v1/sys/policy/{}", encode(name));
    let body = client
        .request_json(Method::GET, &path, None)
        .await?
        .unwrap_or_default();
    if out.json() {
        return out.print_json(&body["data"]);
    }
    outln!(out, "{}", body["rules"].as_str().unwrap_or_default());
    Ok(())
}

/// `FILE` may be `-` for standard input.
pub(crate) async fn policy_write(client: &Client, name: &str, file: &str) -> anyhow::Result<()> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text)?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?
    };
    let path = format!("/v1/sys/policy/{}", encode(name));
    client
        .request_json(Method::PUT, &path, Some(&json!({ "policy": text })))
        .await?;
    eprintln!("Success! Uploaded policy: {name}");
    Ok(())
}

pub(crate) async fn policy_delete(client: &Client, name: &str) -> anyhow::Result<()> {
    client
        .request_json(
            Method::DELETE,
            &format!("/v1/sys/policy/{}", encode(name)),
            None,
        )
        .await?;
    eprintln!("Success! Deleted policy: {name}");
    Ok(())
}

// ---- Secrets engines -----------------------------------------------------

pub(crate) async fn secrets_list(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
    let body = client
        .request_json(Method::GET, "/v1/sys/mounts", None)
        .await?
        .unwrap_or_default();
    let data = body["data"].as_object().cloned().unwrap_or_default();
    if out.json() {
        return out.print_json(&data);
    }
    let width = data.keys().map(String::len).max().unwrap_or(4).max(4);
    outln!(
        out,
        "{:width$}    {:10}    {:24}    Description",
        "Path",
        "Type",
        "Accessor"
    );
    outln!(
        out,
        "{:width$}    {:10}    {:24}    -----------",
        "----",
        "----",
        "--------"
    );
    for (path, mount) in data {
        outln!(
            out,
            "{path:width$}    {:10}    {:24}    {}",
            mount["type"].as_str().unwrap_or_default(),
            mount["accessor"].as_str().unwrap_or_default(),
            mount["description"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) async fn secrets_enable(
    client: &Client,
    kind: &str,
    path: Option<&str>,
    description: Option<&str>,
) -> anyhow::Result<()> {
    let path = path.unwrap_or(kind).trim_matches('/');
    let mut body = json!({ "type": kind, "description": description.unwrap_or_default() });
    if kind == "kv" || kind == "kv-v2" {
        body["options"] = json!({ "version": "2" });
    }
    client
        .request_json(
            Method::POST,
            &format!("/v1/sys/mounts/{}", encode_path(path)),
            Some(&body),
        )
        .await?;
    eprintln!("Success! Enabled the {kind} secrets engine at: {path}/");
    Ok(())
}

pub(crate) async fn secrets_disable(client: &Client, path: &str) -> anyhow::Result<()> {
    let path = path.trim_matches('/');
    client
        .request_json(
            Method::DELETE,
            &format!("/v1/sys/mounts/{}", encode_path(path)),
            None,
        )
        .await?;
    eprintln!("Success! Disabled the secrets engine (if it existed) at: {path}/");
    Ok(())
}

// ---- Keys ----------------------------------------------------------------

pub(crate) async fn key_status(client: &Client, out: Out<'_>) -> anyhow::Result<()> {
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
pub(crate) async fn rotate(client: &Client, out: Out<'_>, wait: bool) -> anyhow::Result<()> {
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
pub(crate) async fn rekey(
    client: &Client,
    out: Out<'_>,
    shares: u8,
    threshold: u8,
) -> anyhow::Result<()> {
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
