//! The file sink (R-AUD-4): the same chain as JSON lines, beside the
//! database, in the format of `sys/audit-log/export?format=jsonl`, so
//! `zafe audit verify --from-export <file>` checks it offline.
//!
//! - Written by the audit writer in the same batch as the database, after the
//!   database commit (which assigns sequence numbers), before any request of
//!   the batch is answered. A failure fails the batch: fail-closed.
//! - Opened for every batch (append, created 0600): a file that was made
//!   unwritable fails the next batch at once, and a file moved away by log
//!   rotation is replaced by a new one, which starts with a signed anchor.
//! - It holds the whole chain, not only this node's entries: rows written by
//!   other nodes, or by a batch whose file write failed, are copied from the
//!   database before the next batch, so the file stays contiguous.
//! - A partial last line (a crash in the middle of a write, never
//!   acknowledged) is cut off when the file is first opened.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use zafe_storage::Backend;
use zafe_storage::audit::AuditRow;

use super::{AuditKeys, FileFsync, now_us, verified_hash};
use zafe_core::audit::{CheckpointLine, Line, sign_checkpoint};
use zafe_core::identity::IdentityKey;

pub(crate) struct FileSink {
    path: PathBuf,
    fsync: FileFsync,
    /// The file we last wrote, by (device, inode), and the sequence number
    /// of its last entry (`None` for a file without entries).
    known: Option<((u64, u64), Option<i64>)>,
}

const PAGE: usize = 1000;

impl FileSink {
    /// Opens (creating) the file once, so a bad path stops start-up.
    pub(crate) fn open(path: &Path, fsync: FileFsync) -> Result<Self, String> {
        let mut sink = Self {
            path: path.to_path_buf(),
            fsync,
            known: None,
        };
        sink.file()?;
        Ok(sink)
    }

    /// The file, opened for appending, and the last sequence number in it.
    fn file(&mut self) -> Result<(std::fs::File, Option<i64>), String> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&self.path).map_err(|e| self.error(&e))?;
        let meta = file.metadata().map_err(|e| self.error(&e))?;
        if !meta.is_file() {
            return Err(format!(
                "the audit file {} is not a regular file",
                self.path.display()
            ));
        }
        #[cfg(unix)]
        let id = {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            // Whoever else can write it can forge lines (the chain would
            // show it, but nobody should have to).
            if meta.permissions().mode() & 0o022 != 0 {
                return Err(format!(
                    "the audit file {} is writable by group or others; run `chmod 600 {}`",
                    self.path.display(),
                    self.path.display()
                ));
            }
            Some((meta.dev(), meta.ino()))
        };
        #[cfg(not(unix))]
        let id: Option<(u64, u64)> = None;
        match (self.known, id) {
            (Some((known, last)), Some(id)) if known == id => Ok((file, last)),
            _ => {
                // A file we have not seen (first use, or rotated away).
                let last = last_entry_seq(&mut file).map_err(|e| self.error(&e))?;
                self.known = id.map(|id| (id, last));
                Ok((file, last))
            }
        }
    }

    fn error(&self, e: &std::io::Error) -> String {
        format!("cannot write the audit file {}: {e}", self.path.display())
    }

    fn finish(
        &mut self,
        file: &mut std::fs::File,
        text: &str,
        last: Option<i64>,
    ) -> Result<(), String> {
        file.write_all(text.as_bytes())
            .map_err(|e| self.error(&e))?;
        if self.fsync == FileFsync::EveryBatch {
            file.sync_data().map_err(|e| self.error(&e))?;
        }
        if let (Some((_, known_last)), Some(last)) = (&mut self.known, last) {
            *known_last = Some(last);
        }
        Ok(())
    }

    /// Appends `rows` (consecutive, just committed), first copying whatever
    /// the file lacks before them from the database, or starting a new file
    /// with a signed anchor.
    pub(crate) async fn append(
        &mut self,
        backend: &dyn Backend,
        identity: &IdentityKey,
        keys: &AuditKeys,
        rows: &[AuditRow],
    ) -> Result<(), String> {
        let Some(first) = rows.first() else {
            return Ok(());
        };
        let (mut file, last) = self.file()?;
        let mut text = String::new();
        let mut written = last;
        match last {
            None if first.seq > 1 => {
                // A new file: it starts after the entry before this batch.
                // Sign that entry's hash only after checking it is ours.
                let hash = verified_hash(backend, keys, first.seq - 1).await?;
                if hash != first.prev_hash {
                    return Err(format!(
                        "the audit chain does not link at seq {}",
                        first.seq
                    ));
                }
                let cp = sign_checkpoint(identity, "file-start", first.seq - 1, &hash, now_us());
                text.push_str(&Line::Checkpoint(CheckpointLine::new(&cp)).to_json());
                text.push('\n');
            }
            Some(last) if last + 1 < first.seq => {
                // Rows from other nodes, or from a batch whose file write
                // failed: copy them, in pages.
                self.copy_rows(backend, &mut file, last + 1, first.seq - 1)
                    .await?;
                written = Some(first.seq - 1);
            }
            _ => {}
        }
        for row in rows {
            push_row(&mut text, row);
            written = Some(row.seq);
        }
        self.finish(&mut file, &text, written)
    }

    /// Appends the rows `from..=to` from the database.
    async fn copy_rows(
        &mut self,
        backend: &dyn Backend,
        file: &mut std::fs::File,
        from: i64,
        to: i64,
    ) -> Result<(), String> {
        let mut next = from;
        while next <= to {
            let rows = backend
                .audit_read(next, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            let mut text = String::new();
            let mut last = None;
            for row in rows.iter().take_while(|r| r.seq <= to) {
                push_row(&mut text, row);
                last = Some(row.seq);
            }
            let Some(last) = last else {
                break;
            };
            file.write_all(text.as_bytes())
                .map_err(|e| self.error(&e))?;
            if let Some((_, known_last)) = &mut self.known {
                *known_last = Some(last);
            }
            next = last + 1;
        }
        Ok(())
    }

    /// Brings the file up to the database's head; returns the sequence
    /// number a checkpoint written to this file should sign.
    pub(crate) async fn catch_up(
        &mut self,
        backend: &dyn Backend,
        identity: &IdentityKey,
        keys: &AuditKeys,
    ) -> Result<Option<i64>, String> {
        let head = backend.audit_head().await.map_err(|e| e.to_string())?;
        let (mut file, last) = self.file()?;
        match last {
            Some(last) if last < head.seq => {
                self.copy_rows(backend, &mut file, last + 1, head.seq)
                    .await?;
                self.finish(&mut file, "", Some(head.seq))?;
                Ok(Some(head.seq))
            }
            Some(last) => Ok(Some(last)),
            None if head.seq > 0 => {
                // A new file with nothing in it yet: it starts at the head.
                let hash = verified_hash(backend, keys, head.seq).await?;
                let cp = sign_checkpoint(identity, "file-start", head.seq, &hash, now_us());
                let text = format!("{}\n", Line::Checkpoint(CheckpointLine::new(&cp)).to_json());
                self.finish(&mut file, &text, None)?;
                Ok(Some(head.seq))
            }
            None => Ok(None),
        }
    }

    /// Makes the file hold every entry from `from_seq` to the database's
    /// head (entries committed with their changes, beside the writer,
    /// R-AUD-0): copies what it lacks, in order; a new file starts right
    /// before `from_seq`, with a signed anchor.
    pub(crate) async fn sync_from(
        &mut self,
        backend: &dyn Backend,
        identity: &IdentityKey,
        keys: &AuditKeys,
        from_seq: i64,
    ) -> Result<(), String> {
        let head = backend.audit_head().await.map_err(|e| e.to_string())?;
        let (mut file, last) = self.file()?;
        let from = match last {
            Some(last) if last >= head.seq => return Ok(()),
            Some(last) => last + 1,
            None => {
                if from_seq > 1 {
                    let hash = verified_hash(backend, keys, from_seq - 1).await?;
                    let cp = sign_checkpoint(identity, "file-start", from_seq - 1, &hash, now_us());
                    let text =
                        format!("{}\n", Line::Checkpoint(CheckpointLine::new(&cp)).to_json());
                    file.write_all(text.as_bytes())
                        .map_err(|e| self.error(&e))?;
                }
                from_seq
            }
        };
        self.copy_rows(backend, &mut file, from, head.seq).await?;
        self.finish(&mut file, "", Some(head.seq))
    }

    /// Appends a checkpoint line.
    pub(crate) fn write_checkpoint(&mut self, line: &CheckpointLine) -> Result<(), String> {
        let (mut file, _) = self.file()?;
        let text = format!("{}\n", Line::Checkpoint(line.clone()).to_json());
        self.finish(&mut file, &text, None)
    }
}

fn push_row(text: &mut String, row: &AuditRow) {
    match super::entry_line(row) {
        Some(line) => text.push_str(&Line::Entry(Box::new(line)).to_json()),
        // Not an event: copy what there is, and let verification say so.
        None => {
            text.push_str(&serde_json::json!({ "type": "unreadable", "seq": row.seq }).to_string())
        }
    }
    text.push('\n');
}

/// The sequence number of the last entry line in the file; cuts off a
/// partial last line first.
fn last_entry_seq(file: &mut std::fs::File) -> std::io::Result<Option<i64>> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        file.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.read_to_end(&mut tail)?;
        // Cut a partial last line (never acknowledged: the batch fsyncs
        // before it answers).
        if tail.last() != Some(&b'\n') {
            let keep = tail.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let new_len = start + keep as u64;
            if start > 0 && keep == 0 {
                // The partial line is longer than the window: widen it.
                window = window.saturating_mul(4);
                continue;
            }
            tracing::warn!(
                cut = len - new_len,
                "cutting a partial last line off the audit file"
            );
            file.set_len(new_len)?;
            return last_entry_seq(file);
        }
        // Complete lines only from here; the first may be cut by the window.
        let complete = if start == 0 {
            &tail[..]
        } else {
            &tail[tail
                .iter()
                .position(|&b| b == b'\n')
                .map_or(tail.len(), |i| i + 1)..]
        };
        for line in complete.split(|&b| b == b'\n').rev() {
            if line.is_empty() {
                continue;
            }
            if let Ok(Line::Entry(e)) = std::str::from_utf8(line)
                .map_err(|_| ())
                .and_then(|l| Line::parse(l).map_err(|_| ()))
            {
                return Ok(Some(e.seq));
            }
            if let Ok(value) = serde_json::from_slice::<serde_json::Value>(line)
                && let Some(seq) = value.get("seq").and_then(serde_json::Value::as_i64)
                && value.get("type").and_then(serde_json::Value::as_str) != Some("checkpoint")
            {
                return Ok(Some(seq));
            }
        }
        if start == 0 {
            return Ok(None);
        }
        window = window.saturating_mul(4);
    }
}
