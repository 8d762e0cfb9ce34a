//! The rollback anchor (R-KEY-9): detecting a whole store restored from an
//! earlier copy.
//!
//! Every record is bound to its key and generation, but a database put back
//! whole from an older copy is consistent with itself, so nothing inside it
//! can tell. The anchor is kept outside the store, in a file beside the
//! identity key (`<identity key file>.anchor`, mode 0600): the newest audit
//! checkpoint this node signed (sequence number, entry hash, time, Ed25519
//! signature by the identity key). It is rewritten at every checkpoint
//! (periodic, and the last one at shutdown), but never moved to a store that
//! no longer reaches it (see `advance`).
//!
//! At start-up, before anything is served, the store's audit chain must
//! still reach the anchor: its head at or past the anchor's entry, and that
//! entry present with the same hash (or removed by retention, when every
//! remaining entry is newer). Otherwise the server refuses to start with an
//! error naming both positions and the override. The override
//! (`zafe server --accept-rollback` or `ZAFE_ACCEPT_ROLLBACK=1`) logs a
//! warning, records an audit entry, and moves the old anchor aside to
//! `<anchor>.superseded`; the next checkpoint writes a new one.
//!
//! What this cannot see (SECURITY.md): a rollback to a state newer than the
//! anchor (anything within the last checkpoint interval, or after a crash
//! that skipped the shutdown checkpoint), and a node started without its
//! anchor file (a new node, or the file deleted with the database).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use zafe_storage::Backend;
use zafe_storage::audit::AuditCheckpoint;

use crate::config::check_private_file;
use zafe_core::audit::{CheckpointLine, checkpoint_signed_by, render_time};

/// The command-line flag and the environment variable that accept a
/// detected rollback.
pub(crate) const OVERRIDE_FLAG: &str = "--accept-rollback";
pub(crate) const OVERRIDE_ENV: &str = "ZAFE_ACCEPT_ROLLBACK";

/// Why start-up refused, or could not check, the rollback anchor. Every
/// message names the anchor file; `Behind` and `Diverged` also name both
/// positions and how to override.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// The anchor file could not be read, parsed, checked or written (for
    /// example: wrong mode, bad signature, not signed by this identity).
    #[error("rollback anchor file {path}: {message}")]
    File {
        /// The anchor file.
        path: String,
        /// What went wrong, without the file's content.
        message: String,
    },
    /// The store's audit chain ends before the entry the anchor recorded: the
    /// database was restored from an older copy, or its newest entries removed.
    #[error(
        "ROLLBACK DETECTED: the database's audit log ends at entry {store_seq}, but this server \
         already saw entry {anchor_seq} (signed {anchor_time}; anchor file {path}). The database \
         was restored from an older copy, or entries were removed. Refusing to start. If this \
         restore was intended, start once with {OVERRIDE_FLAG} (or {OVERRIDE_ENV}=1); that is \
         recorded in the audit log."
    )]
    Behind {
        /// Sequence number of the store's newest audit entry.
        store_seq: i64,
        /// Sequence number of the entry the anchor recorded.
        anchor_seq: i64,
        /// When the anchor's checkpoint was signed (RFC 3339, UTC).
        anchor_time: String,
        /// The anchor file.
        path: String,
    },
    /// The store reaches the anchor's sequence number, but that entry is
    /// missing or has another hash: the database was replaced by another copy
    /// or its audit log rewritten.
    #[error(
        "ROLLBACK DETECTED: audit entry {anchor_seq}, which this server saw (signed \
         {anchor_time}; anchor file {path}), {what} in the database (its audit log ends at entry \
         {store_seq}). The database was replaced by another copy or its audit log was rewritten. Refusing to \
         start. If this database is the one to keep, start once with {OVERRIDE_FLAG} (or \
         {OVERRIDE_ENV}=1); that is recorded in the audit log."
    )]
    Diverged {
        /// Sequence number of the store's newest audit entry.
        store_seq: i64,
        /// Sequence number of the entry the anchor recorded.
        anchor_seq: i64,
        /// When the anchor's checkpoint was signed (RFC 3339, UTC).
        anchor_time: String,
        /// What is wrong with the entry: `"is missing"` or `"is different"`.
        what: &'static str,
        /// The anchor file.
        path: String,
    },
    /// The store could not be read while checking the anchor.
    #[error("storage: {0}")]
    Storage(String),
}

/// Where the anchor of the identity key file `identity_file` lives.
pub fn path_for(identity_file: &Path) -> PathBuf {
    let mut name = identity_file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "identity".into());
    name.push(".anchor");
    identity_file.with_file_name(name)
}

/// The anchor at `path`, if there is one; its signature must be by
/// `public_key`.
pub fn read(path: &Path, public_key: &[u8; 32]) -> Result<Option<AuditCheckpoint>, AnchorError> {
    let shown = path.display().to_string();
    let file_error = |message: String| AnchorError::File {
        path: shown.clone(),
        message,
    };
    if !path.exists() {
        return Ok(None);
    }
    check_private_file(path).map_err(|e| file_error(e.to_string()))?;
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let checkpoint = serde_json::from_str::<CheckpointLine>(&text)
        .ok()
        .and_then(|line| line.checkpoint())
        .ok_or_else(|| file_error("unreadable; expected a signed audit checkpoint".into()))?;
    if !checkpoint_signed_by(&checkpoint, public_key) {
        return Err(file_error(
            "not signed by this server's identity key".into(),
        ));
    }
    Ok(Some(checkpoint))
}

/// Replaces the anchor at `path` with `checkpoint`: written to a temporary
/// file (0600), flushed, then renamed over the old one.
pub fn write(path: &Path, checkpoint: &AuditCheckpoint) -> std::io::Result<()> {
    let text =
        serde_json::to_string(&CheckpointLine::new(checkpoint)).map_err(std::io::Error::other)?;
    let mut tmp_name = path.as_os_str().to_os_string();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // The rename itself must survive a crash.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Whether the store's audit chain still reaches `anchor`.
pub async fn check(
    backend: &dyn Backend,
    anchor: &AuditCheckpoint,
    path: &Path,
) -> Result<(), AnchorError> {
    use crate::audit::{Reach, reach};
    let storage = |e: zafe_storage::StorageError| AnchorError::Storage(e.to_string());
    let (path, anchor_time) = (path.display().to_string(), render_time(anchor.time_us));
    let diverged = |store_seq, what| AnchorError::Diverged {
        store_seq,
        anchor_seq: anchor.seq,
        anchor_time: anchor_time.clone(),
        what,
        path: path.clone(),
    };
    match reach(backend, anchor.seq, &anchor.hash)
        .await
        .map_err(storage)?
    {
        Reach::Holds => Ok(()),
        Reach::Behind { head } => Err(AnchorError::Behind {
            store_seq: head,
            anchor_seq: anchor.seq,
            anchor_time,
            path,
        }),
        Reach::Replaced { head } => Err(diverged(head, "is different")),
        Reach::Missing { head } => Err(diverged(head, "is missing")),
    }
}

/// Moves the anchor at `path` on to `checkpoint` (called at every
/// checkpoint), unless the store no longer reaches the anchor there: a
/// database restored under a running server (PostgreSQL restored while the
/// node runs) is then logged as an error and the anchor is kept, so the next
/// start refuses. Never fails: a checkpoint is stored either way.
pub(crate) async fn advance(
    backend: &dyn Backend,
    path: &Path,
    public_key: &[u8; 32],
    checkpoint: &AuditCheckpoint,
) {
    let previous = match read(path, public_key) {
        Ok(previous) => previous,
        Err(e) => {
            tracing::error!(error = %e, "replacing an unreadable rollback anchor");
            None
        }
    };
    if let Some(previous) = previous
        && let Err(e) = check(backend, &previous, path).await
    {
        tracing::error!(error = %e, "the database went back under the running server; keeping the rollback anchor");
        return;
    }
    if let Err(e) = write(path, checkpoint) {
        tracing::error!(path = %path.display(), error = %e, "could not write the rollback anchor");
    }
}

/// Accepting a detected rollback: keeps the old anchor as
/// `<anchor>.superseded` for the record; the next checkpoint anchors anew.
pub(crate) fn supersede(path: &Path) -> std::io::Result<PathBuf> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".superseded");
    let aside = PathBuf::from(name);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}
