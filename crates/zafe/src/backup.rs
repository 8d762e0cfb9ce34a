//! `zafe operator backup -o FILE` and `zafe operator restore FILE [--force]`
//! (R-OPS-8), over `sys/backup` and `sys/restore`.
//!
//! The backup streams to a private (0600) temporary file beside FILE, is
//! checked as it arrives (format, order, counts, the trailer's SHA-256) and
//! is renamed into place only when complete. The restore checks the whole
//! file the same way before sending anything.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use zafe_client::{Client, Method};
use zafe_core::backup::{Frame, Reader};

use crate::files::{Incoming, PRIVATE};
use crate::output::{Out, outln};

const CONTENT_TYPE: &str = "application/vnd.zafe.backup";

fn progress(out: Out<'_>, total: u64, template: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || out.json() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(indicatif::ProgressStyle::with_template(template).expect("valid template"));
    Some(bar)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a complete, verified backup holds.
struct Checked {
    header: zafe_core::backup::Header,
    bytes: u64,
    sha256: String,
}

fn summary(file: &Path, c: &Checked) -> Value {
    json!({
        "file": file.display().to_string(),
        "bytes": c.bytes,
        "sha256": c.sha256,
        "format": c.header.format,
        "server_id": c.header.server_id,
        "backend": c.header.backend,
        "created": render_time(c.header.created_us),
        "entries": c.header.entries,
        "audit_rows": c.header.audit_rows,
        "checkpoints": c.header.checkpoints,
        "audit_head_seq": c.header.audit_head_seq,
    })
}

fn render_time(us: i64) -> String {
    zafe_core::audit::render_time(us)
}

/// `zafe operator backup -o FILE`.
pub(crate) async fn backup(client: &Client, out: Out<'_>, file: &Path) -> anyhow::Result<()> {
    let mut resp = client
        .download("/v1/sys/backup")
        .await
        .context("the server refused the backup (it needs a token with sudo on sys/backup)")?;
    let mut target = Incoming::create(file, PRIVATE)?;
    let mut reader = Reader::new();
    let mut bar = None;
    let mut records = 0u64;
    let mut bytes = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = client.next_chunk(&mut resp).await? {
        let frames = reader
            .push(&chunk)
            .context("the server sent a damaged backup; nothing was saved")?;
        target.write(&chunk)?;
        bytes += chunk.len() as u64;
        tail.extend_from_slice(&chunk);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 32);
        }
        for frame in frames {
            match frame {
                Frame::Header(h) => {
                    bar = progress(
                        out,
                        h.entries + h.audit_rows + h.checkpoints,
                        "backing up {bar:40} {pos}/{len} records {eta}",
                    );
                }
                Frame::End => {}
                _ => {
                    records += 1;
                    if let Some(bar) = &bar {
                        bar.set_position(records);
                    }
                }
            }
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    reader.finish().context(
        "the backup stream ended early (the server may have failed midway); nothing was saved",
    )?;
    target.finish()?;
    let header = reader.header().cloned().unwrap_or_default();
    let sha256 = hex(&tail[tail.len().saturating_sub(32)..]);
    let checked = Checked {
        header,
        bytes,
        sha256,
    };
    let data = summary(file, &checked);
    if out.json() {
        return out.print_json(&data);
    }
    print_summary(out, &checked, file);
    outln!(
        out,
        "\nThe backup holds ciphertext only: restoring it needs this server's unseal keys (or \
         master key), and the identity key file for `zafe audit verify` to accept its checkpoints."
    );
    Ok(())
}

fn print_summary(out: Out<'_>, c: &Checked, file: &Path) {
    out.print_table(&[
        ("File", file.display().to_string()),
        ("Bytes", c.bytes.to_string()),
        ("SHA-256", c.sha256.clone()),
        ("Server ID", c.header.server_id.clone()),
        ("Backend", c.header.backend.clone()),
        ("Created", render_time(c.header.created_us)),
        ("Entries", c.header.entries.to_string()),
        ("Audit rows", c.header.audit_rows.to_string()),
        ("Checkpoints", c.header.checkpoints.to_string()),
        ("Audit head", c.header.audit_head_seq.to_string()),
    ]);
}

/// Reads and checks the whole file; nothing is sent unless it is intact.
fn check_file(out: Out<'_>, file: &Path) -> anyhow::Result<(Vec<u8>, Checked)> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let bar = progress(
        out,
        bytes.len() as u64,
        "verifying {bar:40} {bytes}/{total_bytes} {eta}",
    );
    let mut reader = Reader::new();
    for (i, piece) in bytes.chunks(1 << 20).enumerate() {
        reader.push(piece).with_context(|| {
            format!(
                "{} is not a usable backup; nothing was sent",
                file.display()
            )
        })?;
        if let Some(bar) = &bar {
            bar.set_position(((i + 1) * (1 << 20)).min(bytes.len()) as u64);
        }
    }
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    reader.finish().with_context(|| {
        format!(
            "{} is not a usable backup; nothing was sent",
            file.display()
        )
    })?;
    let checked = Checked {
        header: reader.header().cloned().unwrap_or_default(),
        bytes: bytes.len() as u64,
        sha256: hex(&bytes[bytes.len().saturating_sub(32)..]),
    };
    Ok((bytes, checked))
}

/// `zafe operator restore FILE [--force]`.
pub(crate) async fn restore(
    client: &Client,
    out: Out<'_>,
    file: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let (bytes, checked) = check_file(out, file)?;
    let path = if force {
        "/v1/sys/restore?force=true"
    } else {
        "/v1/sys/restore"
    };
    let spinner = (!out.json() && std::io::stderr().is_terminal()).then(|| {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message("restoring");
        s.enable_steady_tick(std::time::Duration::from_millis(120));
        s
    });
    let answer = client.upload(Method::POST, path, CONTENT_TYPE, bytes).await;
    if let Some(s) = &spinner {
        s.finish_and_clear();
    }
    let answer = match answer {
        Ok(answer) => answer.unwrap_or(Value::Null),
        Err(e) => {
            let e = anyhow::Error::new(e);
            if !force
                && (format!("{e:#}").contains("not empty")
                    || format!("{e:#}").contains("initialised"))
            {
                bail!(
                    "{e:#}\nThe target server already holds data. `zafe operator restore --force` \
                     replaces all of it (it needs a root token of that server)."
                );
            }
            return Err(e.context("the restore failed; nothing was restored"));
        }
    };
    if out.json() {
        let mut data = summary(file, &checked);
        data["restored"] = answer;
        return out.print_json(&data);
    }
    print_summary(out, &checked, file);
    outln!(
        out,
        "\nRestored {} entries, {} audit rows and {} checkpoints{}.",
        answer["entries"],
        answer["audit_rows"],
        answer["checkpoints"],
        if answer["replaced"] == json!(true) {
            ", replacing what the server held"
        } else {
            ""
        }
    );
    outln!(
        out,
        "The server is sealed: unseal it with the unseal keys (or master key) of the server the \
         backup was taken from."
    );
    Ok(())
}
