//! `sys/audit-log/...` (all sudo):
//!
//! - `GET export?format=jsonl|csv&since=&until=`: the chain, streamed page
//!   by page. `since`/`until` are sequence numbers or RFC 3339 times; a time
//!   range becomes the contiguous run of sequence numbers from the first
//!   entry at or after `since` to the last at or before `until`, so the
//!   chain inside it is intact. JSON lines carry every checkpoint in place,
//!   end with a signed end line (the last entry, the time, the checkpoint
//!   interval) and verify offline; CSV is for spreadsheets (hashes and MACs included,
//!   formula-looking cells neutralised).
//! - `GET verify`: the server checks hashes, MACs and checkpoints of the
//!   whole log and names the first bad sequence number.
//! - `GET checkpoints?after=&limit=`: signed checkpoints; `POST` signs one now.

use std::sync::Arc;

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use zafe_storage::audit::TimeBound;

use super::{Item, Merged};
use crate::core::{Core, Operation, Request, Response};
use crate::error::{Error, Result};
use zafe_core::audit::{CheckpointLine, EXPORT_FORMAT, ExportHeader, Line, b64};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Csv,
}

const CSV_COLUMNS: &[&str] = &[
    "seq",
    "time",
    "time_us",
    "request_id",
    "client_ip",
    "method",
    "path",
    "operation",
    "actor_kind",
    "actor_accessor",
    "actor_display_name",
    "actor_policies",
    "actor_token",
    "decision",
    "status",
    "error",
    "buffered",
    "dropped",
    "prev_hash",
    "hash",
    "mac",
];

/// `sys/audit-log/export`.
pub async fn export(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let format = match req.query("format").unwrap_or("jsonl") {
        "jsonl" | "json" => Format::Jsonl,
        "csv" => Format::Csv,
        other => {
            return Err(Error::bad_request(format!(
                "format must be jsonl or csv, not {:?}",
                clean_arg(other)
            )));
        }
    };
    let backend = core.audit.backend().clone();
    let from_seq = match req.query("since").filter(|s| !s.is_empty()) {
        Some(since) => Some(
            seq_bound(core, since, TimeBound::FirstAtOrAfter)
                .await?
                .unwrap_or(i64::MAX),
        ),
        None => None,
    };
    let to_seq = match req.query("until").filter(|s| !s.is_empty()) {
        Some(until) => Some(
            seq_bound(core, until, TimeBound::LastAtOrBefore)
                .await?
                .unwrap_or(i64::MIN),
        ),
        None => None,
    };
    let header = ExportHeader {
        format: EXPORT_FORMAT,
        server_id: core.identity.server_id(),
        from_seq,
        to_seq,
    };
    let first = match format {
        Format::Jsonl => format!("{}\n", Line::Header(header).to_json()),
        Format::Csv => format!("{}\r\n", CSV_COLUMNS.join(",")),
    };
    core.audit.settled().await;
    let merged = Merged::new(backend, from_seq, to_seq);
    let state = Export {
        merged,
        last: None,
        core: core.clone(),
    };
    let pages = futures_util::stream::unfold(Some(state), move |state| async move {
        let mut state = state?;
        match state.merged.next_page().await {
            Ok(items) if items.is_empty() => {
                if format == Format::Csv {
                    return None;
                }
                // The signed end: an export cut short no longer ends with it.
                match state
                    .core
                    .audit
                    .sign_export_end(state.last.take(), from_seq, to_seq)
                    .await
                {
                    Ok(end) => Some((
                        Ok(format!("{}\n", Line::End(end).to_json()).into_bytes()),
                        None,
                    )),
                    // Without it the export does not verify ("ends
                    // unanchored"); the reason is in the server's log.
                    Err(e) => {
                        tracing::error!(error = %e, "the audit export was not signed");
                        None
                    }
                }
            }
            Ok(items) => {
                if let Some(Item::Row(row)) = items.iter().rev().find(|i| matches!(i, Item::Row(_)))
                {
                    state.last = Some((row.seq, row.hash.clone()));
                }
                Some((Ok(render(&items, format).into_bytes()), Some(state)))
            }
            // The stream stops here; the client sees a broken transfer,
            // never a silently short export.
            Err(e) => Some((Err(Error::StorageUnavailable(e.to_string())), None)),
        }
    });
    let body = futures_util::stream::once(async move { Ok(first.into_bytes()) })
        .chain(pages)
        .boxed();
    let content_type = match format {
        Format::Jsonl => "application/x-ndjson",
        Format::Csv => "text/csv; charset=utf-8",
    };
    Ok(Response::Stream(content_type, body))
}

/// An export in progress: the pages still to come, and the last entry sent.
struct Export {
    merged: Merged,
    last: Option<(i64, Vec<u8>)>,
    core: Arc<Core>,
}

/// A sequence number, or the sequence number where a time range starts or
/// ends (`None`: no entry there).
async fn seq_bound(core: &Core, value: &str, bound: TimeBound) -> Result<Option<i64>> {
    if let Ok(seq) = value.parse::<i64>() {
        return Ok(Some(seq));
    }
    let time = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
        Error::bad_request(
            "since and until must be sequence numbers or RFC 3339 times (2024-01-31T12:00:00Z)",
        )
    })?;
    let time_us = i64::try_from(time.unix_timestamp_nanos() / 1000)
        .map_err(|_| Error::bad_request("time out of range"))?;
    core.audit
        .backend()
        .audit_seq_at(time_us, bound)
        .await
        .map_err(|e| Error::StorageUnavailable(e.to_string()))
}

fn render(items: &[Item], format: Format) -> String {
    let mut out = String::new();
    for item in items {
        match (item, format) {
            (Item::Row(row), Format::Jsonl) => {
                match super::entry_line(row) {
                    Some(line) => out.push_str(&Line::Entry(Box::new(line)).to_json()),
                    None => {
                        out.push_str(&json!({ "type": "unreadable", "seq": row.seq }).to_string())
                    }
                }
                out.push('\n');
            }
            (Item::Checkpoint(cp), Format::Jsonl) => {
                out.push_str(&Line::Checkpoint(CheckpointLine::new(cp)).to_json());
                out.push('\n');
            }
            (Item::Row(row), Format::Csv) => {
                let cells: Vec<String> = match super::entry_line(row) {
                    Some(e) => vec![
                        e.seq.to_string(),
                        e.time,
                        e.time_us.to_string(),
                        e.request_id,
                        e.client_ip,
                        e.method,
                        e.path,
                        e.operation,
                        e.actor.kind,
                        e.actor.accessor,
                        e.actor.display_name,
                        e.actor.policies.join(";"),
                        e.actor.token,
                        e.decision,
                        e.status.to_string(),
                        e.error,
                        e.buffered.to_string(),
                        e.dropped.to_string(),
                        e.prev_hash,
                        e.hash,
                        e.mac,
                    ],
                    None => vec![row.seq.to_string(), "unreadable entry".into()],
                };
                let cells: Vec<String> = cells.iter().map(|c| csv_cell(c)).collect();
                out.push_str(&cells.join(","));
                out.push_str("\r\n");
            }
            (Item::Checkpoint(_), Format::Csv) => {}
        }
    }
    out
}

/// One CSV cell: a cell a spreadsheet would run as a formula (`=`, `+`,
/// `-`, `@`, tab, carriage return first) gets a leading `'`; cells with
/// separators, quotes or line breaks are quoted (RFC 4180).
pub(crate) fn csv_cell(value: &str) -> String {
    let neutral = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_string()
    };
    if neutral.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

/// `GET sys/audit` (Vault's audit device list): Zafe's sinks, the audit chain in the database
/// (always on) and the JSON-lines file when configured.
pub fn devices(core: &Arc<Core>) -> Result<Response> {
    let mut map = serde_json::Map::new();
    map.insert(
        "database/".into(),
        json!({
            "type": "database",
            "path": "database/",
            "description": "the tamper-evident audit chain in Zafe's database (always on)",
            "options": {},
            "local": false,
        }),
    );
    if let Some(file) = &core.config.audit.file_path {
        map.insert(
            "file/".into(),
            json!({
                "type": "file",
                "path": "file/",
                "description": "JSON lines, written beside the database chain",
                "options": { "file_path": file.display().to_string() },
                "local": false,
            }),
        );
    }
    Ok(Response::VaultWithTopLevel {
        data: Value::Object(map.clone()),
        top_level: map,
    })
}

/// `sys/audit-log/verify`.
pub async fn verify(core: &Arc<Core>) -> Result<Response> {
    let report = core.audit.verify().await.map_err(Error::AuditUnavailable)?;
    let data = json!({
        "server_id": core.identity.server_id(),
        "public_key": b64(&core.audit.public_key()),
        "report": report,
    });
    Ok(Response::data(data))
}

/// `sys/audit-log/checkpoints`.
pub async fn checkpoints(core: &Arc<Core>, req: &Request) -> Result<Response> {
    if req.operation == Operation::Write {
        let cp = core
            .audit
            .checkpoint("manual")
            .await
            .map_err(Error::AuditUnavailable)?;
        let data = json!({ "checkpoint": cp.as_ref().map(CheckpointLine::new) });
        return Ok(Response::data(data));
    }
    let after = match req.query("after") {
        Some(a) => a
            .parse::<i64>()
            .map_err(|_| Error::bad_request("after must be a sequence number"))?,
        None => i64::MIN,
    };
    let limit = match req.query("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| Error::bad_request("limit must be 1 to 1000"))?,
        None => 100,
    };
    let list = core
        .audit
        .backend()
        .audit_checkpoints((after, i64::MAX), limit)
        .await
        .map_err(|e| Error::StorageUnavailable(e.to_string()))?;
    let lines: Vec<Value> = list
        .iter()
        .map(|cp| serde_json::to_value(CheckpointLine::new(cp)).expect("serialisable"))
        .collect();
    let head = core
        .audit
        .backend()
        .audit_head()
        .await
        .map_err(|e| Error::StorageUnavailable(e.to_string()))?;
    let data = json!({
        "server_id": core.identity.server_id(),
        "public_key": b64(&core.audit.public_key()),
        "head_seq": head.seq,
        "checkpoints": lines,
    });
    Ok(Response::data(data))
}

/// A query argument, shortened and without control characters, for an
/// error message.
fn clean_arg(value: &str) -> String {
    value.chars().take(32).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised() {
        for (raw, cell) in [
            ("=1+1", "'=1+1"),
            ("+cmd", "'+cmd"),
            ("-2", "'-2"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "\"'\rx\""),
            ("plain", "plain"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("=HYPERLINK(\"x\")", "\"'=HYPERLINK(\"\"x\"\")\""),
        ] {
            assert_eq!(csv_cell(raw), cell, "{raw:?}");
        }
    }
}
