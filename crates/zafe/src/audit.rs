//! `zafe audit verify|export|tail`: the tamper-evident audit log (R-AUD-2,
//! R-AUD-4, R-AUD-6).
//!
//! `verify` without a file asks the server to check everything it can
//! (hashes, MACs, signed checkpoints) *and* checks an export itself against
//! the identity key this client pinned, so it does not have to take the
//! server's word. With `--from-export` it checks a file offline (an export,
//! or the server's file sink) with only the public key. Either way it pages
//! through any length of log in constant memory.
//!
//! Each successful verification keeps the newest point it verified (the
//! sequence number and hash of the newest signed checkpoint, or of the last
//! entry under an export's signed end), per server id, in
//! `<config dir>/audit-checkpoints.json` next to the pinned servers; later
//! verifications require the log to still reach it with that hash, and
//! report a regression naming it otherwise. So removing the newest entries
//! *together with* their checkpoints (everything after some point) is
//! caught too, as long as this client verified before; and the failure is
//! reported again at every verification, since only a success moves it.
//!
//! Exports end with a signed end line: one cut short fails ("ends
//! unanchored"); and the newest entries must be covered by a checkpoint
//! within the interval the server signs at (see `chain::Verifier`).
//!
//! Exit codes: 0 intact, 1 tampered (the first bad sequence number is
//! named) or another error, 2 usage.

use std::io::{BufRead, BufReader, IsTerminal as _, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use zafe_client::{Client, Method};
use zafe_core::audit::{Line, Report, Verifier};

use crate::cli::Format;
use crate::ctx::Ctx;
use crate::output::{Out, outln};

#[derive(Debug, Subcommand)]
pub(crate) enum Args {
    /// Check that the audit log is intact: nothing edited, removed, inserted or reordered
    #[command(after_help = "\
Examples:
  zafe audit verify                        Ask the server, and check its export against the pinned identity
  zafe audit verify --from-export audit.jsonl --public-key <BASE64>
  zafe --server-id zs_0123... audit verify --from-export /var/log/zafe/audit.jsonl

Offline, the file is checked with the server's public identity key only (--public-key, or
--server-id to take the key from the file's checkpoints and check it against the id).
An export must end with its signed end line (one cut short fails), and the newest entries must
be covered by a checkpoint within the server's checkpoint interval. The newest point verified
is kept per server; a log that no longer reaches it is reported as a regression.
Exit codes: 0 intact, 1 tampered (the first bad sequence number is named) or error, 2 usage.")]
    Verify {
        /// An export (`zafe audit export`) or the server's audit file, to check offline
        #[arg(long, value_name = "FILE")]
        from_export: Option<PathBuf>,
        /// The server's identity public key, in base64 (shown by `zafe server-id show --format json`)
        #[arg(long, value_name = "BASE64")]
        public_key: Option<String>,
    },

    /// Export the audit log with its hashes, MACs and signed checkpoints
    #[command(after_help = "\
Examples:
  zafe audit export -o audit.jsonl
  zafe audit export --format csv -o audit.csv
  zafe audit export --since 2024-01-01T00:00:00Z --until 2024-02-01T00:00:00Z
  zafe audit export --since 1200 -o recent.jsonl

--since and --until take sequence numbers or RFC 3339 times. JSON lines (the default) verify
offline with `zafe audit verify --from-export`; CSV is for spreadsheets.")]
    Export {
        /// First entry: a sequence number or an RFC 3339 time
        #[arg(long, value_name = "SEQ|TIME")]
        since: Option<String>,
        /// Last entry: a sequence number or an RFC 3339 time
        #[arg(long, value_name = "SEQ|TIME")]
        until: Option<String>,
        /// Write to FILE instead of standard output
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },

    /// Show the newest audit entries, and with --follow, new ones as they come
    #[command(after_help = "\
Examples:
  zafe audit tail
  zafe audit tail -n 50 --follow
  zafe audit tail --follow --format jsonl

Successful reads of the audit log itself (exports and checkpoint listings, which tail
makes when it polls) are left out unless --all is given.")]
    Tail {
        /// How many of the newest entries to show first
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u64,
        /// Keep polling for new entries
        #[arg(short, long)]
        follow: bool,
        /// Seconds between polls with --follow
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
        interval: u64,
        /// Also show successful reads of the audit log itself
        #[arg(long)]
        all: bool,
    },
}

/// Longest line accepted from a file (a real line is under 4 KiB).
const MAX_LINE: u64 = 1 << 20;

pub(crate) async fn run(ctx: &Ctx<'_>, cmd: Args) -> anyhow::Result<ExitCode> {
    // A client only when the server is asked: offline verification needs none.
    let client = || ctx.client();
    let expected_id: Option<String> = ctx.server_id().map(str::to_owned);
    let out = ctx.out();
    match cmd {
        Args::Verify {
            from_export: Some(file),
            public_key,
        } => verify_file(&file, public_key.as_deref(), expected_id.as_deref(), out),
        Args::Verify {
            from_export: None,
            public_key,
        } => verify_server(&client()?, public_key.as_deref(), out).await,
        Args::Export {
            since,
            until,
            output,
        } => {
            export(
                &client()?,
                out,
                since.as_deref(),
                until.as_deref(),
                output.as_deref(),
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Args::Tail {
            lines,
            follow,
            interval,
            all,
        } => {
            tail(
                &client()?,
                out,
                lines,
                follow,
                Duration::from_secs(interval),
                all,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn usage(message: &str) -> anyhow::Result<ExitCode> {
    eprintln!("Error: {message}");
    Ok(ExitCode::from(2))
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    zafe_core::audit::public_key_from_b64(b64)
}

// ---- verify --------------------------------------------------------------

/// Offline: a file, with the public key only.
fn verify_file(
    path: &Path,
    public_key: Option<&str>,
    expected_id: Option<&str>,
    out: Out<'_>,
) -> anyhow::Result<ExitCode> {
    let key = match (public_key, expected_id) {
        (Some(b64), _) => match decode_key(b64) {
            Some(key) => key,
            None => return usage("--public-key must be a 32-byte Ed25519 public key in base64"),
        },
        (None, Some(id)) => match first_checkpoint_key(path)?
            .or_else(|| Kept::load(id).and_then(|k| k.public_key.as_deref().and_then(decode_key)))
        {
            Some(key) if zafe_core::identity::server_id_for(&key) == id => key,
            Some(key) => {
                let found = zafe_core::identity::server_id_for(&key);
                return report_and_exit(
                    out,
                    "export",
                    &Report {
                        problem: Some(format!(
                            "the checkpoints are signed by {found}, not by the expected {id}"
                        )),
                        ..Report::default()
                    },
                );
            }
            // No checkpoint to take a key from: hashes only, and every
            // signature check would fail anyway.
            None => [0; 32],
        },
        (None, None) => {
            return usage(
                "give --public-key (or --server-id): the verifier must know whose signatures to trust, \
                 or anyone could re-sign a forged log",
            );
        }
    };
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress(out, Some(size));
    let mut reader = BufReader::new(file);
    let mut verifier = Verifier::new(None, key, false);
    let server_id = zafe_core::identity::server_id_for(&key);
    let kept = Kept::load(&server_id);
    expect_kept(kept.as_ref(), &mut verifier);
    let mut newest: Option<Kept> = None;
    let mut line = String::new();
    let mut read: u64 = 0;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_LINE)
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if !line.ends_with('\n') && n as u64 == MAX_LINE {
            verifier.malformed("a line longer than 1 MiB");
            break;
        }
        let text = line.trim_end_matches(['\n', '\r']);
        if text.is_empty() {
            continue;
        }
        match Line::parse(text) {
            Ok(parsed) => {
                verifier.line(&parsed);
                keep_newest(&mut newest, &parsed);
            }
            Err(why) => verifier.malformed(&why),
        }
        if verifier.failed() {
            break;
        }
        if let Some(bar) = &bar
            && verifier.entries().is_multiple_of(1000)
        {
            bar.set_position(read);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = verifier.finish();
    if report.ok && key != [0; 32] {
        Kept::save(&server_id, kept, newest);
    }
    report_and_exit(out, "export", &report)
}

/// The public key of the first checkpoint (or end) line in the file.
fn first_checkpoint_key(path: &Path) -> anyhow::Result<Option<[u8; 32]>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        if (&mut reader).take(MAX_LINE).read_line(&mut line)? == 0 {
            return Ok(None);
        }
        match Line::parse(line.trim_end()) {
            Ok(Line::Checkpoint(cp)) => return Ok(decode_key(&cp.public_key)),
            Ok(Line::End(end)) => return Ok(decode_key(&end.public_key)),
            _ => {}
        }
    }
}

/// Online: the server's own check, and ours of its export.
async fn verify_server(
    client: &Client,
    public_key: Option<&str>,
    out: Out<'_>,
) -> anyhow::Result<ExitCode> {
    let pinned = client.verify_identity().await?.identity;
    let key = match public_key {
        None => pinned.public_key,
        Some(b64) => match decode_key(b64) {
            Some(key) if key == pinned.public_key => key,
            Some(_) => bail!(
                "--public-key is not the identity key the server at {} proved ({})",
                client.addr(),
                pinned.server_id
            ),
            None => return usage("--public-key must be a 32-byte Ed25519 public key in base64"),
        },
    };
    let bar = progress(out, None);
    if let Some(bar) = &bar {
        bar.set_message("the server is checking hashes, MACs and checkpoints");
    }
    let answer = client
        .request_json(Method::GET, "/v1/sys/audit-log/verify", None)
        .await?
        .unwrap_or_default();
    let server: Report = serde_json::from_value(answer["data"]["report"].clone())
        .context("the server's verification report is malformed")?;

    let mut resp = client
        .request_stream(Method::GET, "/v1/sys/audit-log/export?format=jsonl")
        .await?;
    let mut verifier = Verifier::new(None, key, false);
    let kept = Kept::load(&pinned.server_id);
    expect_kept(kept.as_ref(), &mut verifier);
    let mut newest: Option<Kept> = None;
    let mut pending: Vec<u8> = Vec::new();
    while let Some(chunk) = client.next_chunk(&mut resp).await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            if let Some(parsed) = feed(&mut verifier, &line) {
                keep_newest(&mut newest, &parsed);
            }
        }
        if pending.len() as u64 > MAX_LINE {
            verifier.malformed("a line longer than 1 MiB");
        }
        if verifier.failed() {
            break;
        }
        if let Some(bar) = &bar {
            bar.set_message(format!(
                "checking the export: {} entries",
                verifier.entries()
            ));
        }
    }
    if !pending.is_empty()
        && !verifier.failed()
        && let Some(parsed) = feed(&mut verifier, &pending)
    {
        keep_newest(&mut newest, &parsed);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let local = verifier.finish();
    if server.ok && local.ok {
        Kept::save(&pinned.server_id, kept, newest);
    }
    if out.json() {
        out.print_json(&serde_json::json!({ "server": server, "export": local, "server_id": pinned.server_id }))?;
    } else {
        print_report(
            out,
            "Server check (hashes, MACs, signed checkpoints)",
            &server,
        );
        print_report(
            out,
            &format!(
                "Export checked here against the pinned identity {}",
                pinned.server_id
            ),
            &local,
        );
    }
    Ok(if server.ok && local.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn feed(verifier: &mut Verifier, line: &[u8]) -> Option<Line> {
    let Ok(text) = std::str::from_utf8(line) else {
        verifier.malformed("not UTF-8");
        return None;
    };
    let text = text.trim_end_matches(['\n', '\r']);
    if text.is_empty() {
        return None;
    }
    match Line::parse(text) {
        Ok(parsed) => {
            verifier.line(&parsed);
            Some(parsed)
        }
        Err(why) => {
            verifier.malformed(&why);
            None
        }
    }
}

/// Notes the newest point a line vouches for (kept only if everything
/// verifies): a signed checkpoint, or the last entry under a signed end.
fn keep_newest(newest: &mut Option<Kept>, line: &Line) {
    let point = match line {
        Line::Checkpoint(cp) => Kept {
            seq: cp.seq,
            hash: cp.hash.clone(),
            time_us: Some(cp.time_us),
            public_key: Some(cp.public_key.clone()),
        },
        Line::End(end) if end.seq > 0 => Kept {
            seq: end.seq,
            hash: end.hash.clone(),
            time_us: Some(end.time_us),
            public_key: Some(end.public_key.clone()),
        },
        _ => return,
    };
    if newest.as_ref().is_none_or(|n| n.seq <= point.seq) {
        *newest = Some(point);
    }
}

/// The newest point (sequence number and entry hash) verified so far, per
/// server id, in the client's configuration directory. Only points of logs
/// that verified are kept, and only a newer one replaces an older one.
/// (Files written by earlier versions hold whole checkpoint lines, which
/// read as the same.)
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Kept {
    seq: i64,
    /// Hex, as in exports.
    hash: String,
    /// When the server signed it (an export made before then need not
    /// reach it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_us: Option<i64>,
    /// The identity key that signed it, for `--server-id` without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
}

/// The log must still reach the kept point, with its hash.
fn expect_kept(kept: Option<&Kept>, verifier: &mut Verifier) {
    if let Some(kept) = kept {
        // An unreadable hash never matches: reported, not ignored.
        verifier.expect_reaches(
            kept.seq,
            hex::decode(&kept.hash).unwrap_or_default(),
            kept.time_us,
        );
    }
}

impl Kept {
    fn path() -> Option<PathBuf> {
        zafe_client::config::config_dir_from_env()
            .ok()
            .map(|d| d.join("audit-checkpoints.json"))
    }

    fn all() -> serde_json::Map<String, serde_json::Value> {
        Self::path()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn load(server_id: &str) -> Option<Kept> {
        serde_json::from_value(Self::all().get(server_id)?.clone()).ok()
    }

    /// Best effort: failing to keep it only weakens the next verification.
    fn save(server_id: &str, kept: Option<Kept>, newest: Option<Kept>) {
        let Some(newest) = newest.filter(|n| kept.as_ref().is_none_or(|k| k.seq < n.seq)) else {
            return;
        };
        let Some(path) = Self::path() else { return };
        let mut all = Self::all();
        all.insert(
            server_id.to_string(),
            serde_json::to_value(&newest).expect("serialisable"),
        );
        let result = (|| -> std::io::Result<()> {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension("json.tmp");
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            file.write_all(
                serde_json::to_string_pretty(&all)
                    .expect("serialisable")
                    .as_bytes(),
            )?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = result {
            eprintln!(
                "zafe: could not keep the newest audit checkpoint in {}: {e}",
                path.display()
            );
        }
    }
}

fn report_and_exit(out: Out<'_>, what: &str, report: &Report) -> anyhow::Result<ExitCode> {
    if out.json() {
        out.print_json(report)?;
    } else {
        print_report(out, &format!("Audit log ({what})"), report);
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(out: Out<'_>, title: &str, r: &Report) {
    let range = match (r.first_seq, r.last_seq) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "none".into(),
    };
    let state = if r.ok {
        out.green("intact")
    } else {
        out.red("TAMPERED")
    };
    outln!(out, "{}: {state}", out.bold(title));
    let mut rows = vec![
        ("Entries", format!("{} (seq {range})", r.entries)),
        (
            "Checkpoints",
            format!(
                "{} verified, newest at seq {}",
                r.checkpoints,
                r.last_checkpoint_seq.map_or("-".into(), |s| s.to_string())
            ),
        ),
        ("MACs checked", r.macs_checked.to_string()),
    ];
    if r.partial {
        rows.push((
            "Partial",
            "yes: the first entry's predecessor is not in this export".into(),
        ));
    }
    if let (Some(last), Some(cp)) = (r.last_seq, r.last_checkpoint_seq)
        && r.ok
        && last > cp
    {
        rows.push((
            "Not yet signed",
            format!("{} newest entries (after seq {cp})", last - cp),
        ));
    }
    if let Some(seq) = r.first_bad_seq {
        rows.push(("First bad seq", seq.to_string()));
    }
    if let Some(problem) = &r.problem {
        rows.push(("Problem", problem.clone()));
    }
    out.print_table(&rows);
}

fn progress(out: Out<'_>, total: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() || out.json() {
        return None;
    }
    let bar = match total {
        Some(total) => {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "verifying {bar:40} {bytes}/{total_bytes} {eta}",
                )
                .expect("valid template"),
            );
            bar
        }
        None => {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        }
    };
    Some(bar)
}

// ---- export --------------------------------------------------------------

fn export_path(format: &str, since: Option<&str>, until: Option<&str>) -> String {
    let mut path = format!("/v1/sys/audit-log/export?format={format}");
    for (name, value) in [("since", since), ("until", until)] {
        if let Some(value) = value {
            path.push_str(&format!(
                "&{name}={}",
                zafe_client::path::encode_segment(value)
            ));
        }
    }
    path
}

async fn export(
    client: &Client,
    out: Out<'_>,
    since: Option<&str>,
    until: Option<&str>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let format = if out.format == Format::Csv {
        "csv"
    } else {
        "jsonl"
    };
    let mut resp = client
        .request_stream(Method::GET, &export_path(format, since, until))
        .await?;
    let mut sink: Box<dyn Write> = match output {
        Some(path) => {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            Box::new(std::io::BufWriter::new(
                options
                    .open(path)
                    .with_context(|| format!("cannot write {}", path.display()))?,
            ))
        }
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let mut bytes = 0u64;
    while let Some(chunk) = client.next_chunk(&mut resp).await? {
        sink.write_all(&chunk)?;
        bytes += chunk.len() as u64;
    }
    sink.flush()?;
    if let Some(path) = output {
        eprintln!(
            "Exported the audit log ({bytes} bytes) to {}",
            path.display()
        );
    }
    Ok(())
}

// ---- tail ----------------------------------------------------------------

/// A successful read of the audit log itself: what `tail` does when it polls.
fn audit_read(e: &zafe_core::audit::EntryLine) -> bool {
    e.status < 400
        && e.method == "GET"
        && matches!(
            e.path.as_str(),
            "sys/audit-log/export" | "sys/audit-log/checkpoints"
        )
}

async fn tail(
    client: &Client,
    out: Out<'_>,
    lines: u64,
    follow: bool,
    interval: Duration,
    all: bool,
) -> anyhow::Result<()> {
    let head = client
        .request_json(Method::GET, "/v1/sys/audit-log/checkpoints?limit=1", None)
        .await?
        .unwrap_or_default()["data"]["head_seq"]
        .as_i64()
        .unwrap_or(0);
    let mut next = (head - lines as i64 + 1).max(1);
    // The first page ends at the head as it was: after it come the
    // entries of these very requests.
    let mut until = Some(head);
    loop {
        let mut resp = client
            .request_stream(
                Method::GET,
                &export_path("jsonl", Some(&next.to_string()), None),
            )
            .await?;
        let mut pending: Vec<u8> = Vec::new();
        while let Some(chunk) = client.next_chunk(&mut resp).await? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if let Ok(Line::Entry(e)) = std::str::from_utf8(&line)
                    .map_err(|_| String::new())
                    .and_then(|l| Line::parse(l.trim_end()))
                {
                    if until.is_some_and(|u| e.seq > u) {
                        continue;
                    }
                    next = next.max(e.seq + 1);
                    if all || !audit_read(&e) {
                        print_entry(out, &e);
                    }
                }
            }
        }
        out.flush()?;
        if !follow {
            return Ok(());
        }
        until = None;
        tokio::time::sleep(interval).await;
    }
}

fn print_entry(out: Out<'_>, e: &zafe_core::audit::EntryLine) {
    if matches!(out.format, Format::Json | Format::Jsonl) {
        outln!(out, "{}", Line::Entry(Box::new(e.clone())).to_json());
        return;
    }
    let who = match e.actor.kind.as_str() {
        "token" if !e.actor.display_name.is_empty() => e.actor.display_name.clone(),
        "token" => "token".into(),
        _ => "anonymous".into(),
    };
    let decision = match e.decision.as_str() {
        "allowed" => out.green("allowed"),
        "denied" => out.red("denied"),
        other => out.yellow(other),
    };
    let mut text = format!(
        "{:>8}  {}  {decision:7}  {}  {:6} {}  {who}  {}",
        e.seq, e.time, e.status, e.method, e.path, e.client_ip
    );
    if !e.error.is_empty() {
        text.push_str(&format!("  ({})", e.error));
    }
    outln!(out, "{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_paths_encode_their_bounds() {
        assert_eq!(
            export_path("csv", None, None),
            "/v1/sys/audit-log/export?format=csv"
        );
        assert_eq!(
            export_path("jsonl", Some("2024-01-01T00:00:00+01:00"), Some("9")),
            "/v1/sys/audit-log/export?format=jsonl&since=2024-01-01T00%3A00%3A00%2B01%3A00&until=9"
        );
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(decode_key(&zafe_core::audit::b64(&[7u8; 32])).is_some());
        assert!(decode_key("AAAA").is_none());
        assert!(decode_key("not base64!").is_none());
    }
}

/// What `audit verify` and `audit tail` print, rendered in-process.
#[cfg(test)]
mod output_tests {
    use zafe_core::audit::{Actor, EntryLine, Event};

    use super::*;
    use crate::output::Captured;

    #[test]
    fn a_verification_report_is_a_titled_table() {
        let report = Report {
            ok: false,
            entries: 9,
            first_seq: Some(1),
            last_seq: Some(9),
            checkpoints: 2,
            last_checkpoint_seq: Some(8),
            first_bad_seq: Some(4),
            problem: Some("entry 4 was altered".into()),
            ..Report::default()
        };
        let captured = Captured::new();
        print_report(captured.out(Format::Table), "audit.jsonl", &report);
        assert_eq!(
            captured.text(),
            "\
audit.jsonl: TAMPERED
Key              Value
---              -----
Entries          9 (seq 1..=9)
Checkpoints      2 verified, newest at seq 8
MACs checked     false
First bad seq    4
Problem          entry 4 was altered
"
        );
    }

    #[test]
    fn tail_prints_one_line_per_entry_or_its_json_line() {
        let event = Event {
            v: 2,
            time_us: 1_700_000_000_000_000,
            request_id: "r1".into(),
            client_ip: "127.0.0.1".into(),
            method: "GET".into(),
            path: "secret/data/app".into(),
            operation: "read".into(),
            actor: Actor {
                kind: "token".into(),
                display_name: "ci".into(),
                ..Actor::default()
            },
            decision: "denied".into(),
            status: 403,
            error: "permission denied".into(),
            ..Event::default()
        };
        let entry = EntryLine::new(7, event, &[0; 32], &[1; 32], &[2; 32]);
        let captured = Captured::new();
        print_entry(captured.out(Format::Table), &entry);
        assert_eq!(
            captured.text(),
            "       7  2023-11-14T22:13:20Z  denied   403  GET    secret/data/app  ci  127.0.0.1  (permission denied)\n"
        );
        let captured = Captured::new();
        print_entry(captured.out(Format::Jsonl), &entry);
        let text = captured.text();
        assert_eq!(text.lines().count(), 1);
        assert_eq!(
            Line::parse(text.trim_end()).unwrap(),
            Line::Entry(Box::new(entry))
        );
    }
}
