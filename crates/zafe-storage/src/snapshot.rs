//! Online backup and restore (R-OPS-8): everything storage holds, read in one
//! consistent snapshot while writes continue, and written back, byte for byte,
//! into an empty store.
//!
//! A snapshot is one read transaction: PostgreSQL `REPEATABLE READ READ ONLY`,
//! SQLite a read transaction on one connection (WAL gives it snapshot
//! isolation). Inside it, the counts and the audit head are read first, then
//! every entry by key, every audit row by sequence number and every checkpoint
//! by (sequence number, id), a page at a time, sent as
//! [`zafe_core::backup::Frame`]s to a bounded channel: memory stays bounded by
//! the channel and the page, not by the size of the store.
//!
//! A restore is one write transaction: it checks that the store is empty
//! (no entry, no audit row, no checkpoint, the audit head at genesis) or,
//! when forced, deletes everything first; then inserts every frame as it
//! arrives (entries with their generations, audit rows with their sequence
//! numbers, hashes and MACs, checkpoints with their ids, the audit head from
//! the header) and commits only when it receives [`Frame::End`], which the
//! file reader yields only after the trailer's SHA-256 matched. A stream that
//! ends early, an error, a count that differs from the header: the
//! transaction rolls back and nothing was written.
//!
//! Nothing here looks inside a value: a backup is ciphertext.

use tokio::sync::mpsc;
use zafe_core::backup::{AuditRowRecord, FORMAT_VERSION, Frame, Header};

use crate::StorageError;
use crate::audit::AuditCheckpoint;
use crate::sql::backend_error;

/// Rows per page read inside a snapshot, and per insert statement in a restore.
pub(crate) const PAGE: usize = 500;

/// What a restore may write over.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Replace whatever the store holds (all of it, in the same transaction).
    pub force: bool,
    /// Keys that may exist in an otherwise empty store and are replaced
    /// (the server's identity record, which a new server writes at its first start).
    pub replaceable: Vec<String>,
}

impl RestoreOptions {
    /// Into an empty store only.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Replacing everything.
    pub fn forced() -> Self {
        Self {
            force: true,
            replaceable: Vec::new(),
        }
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreSummary {
    /// Entries written.
    pub entries: u64,
    /// Audit rows written.
    pub audit_rows: u64,
    /// Checkpoints written.
    pub checkpoints: u64,
    /// Whether the store held something that was replaced (`force`).
    pub replaced: bool,
}

fn gone() -> StorageError {
    StorageError::Backend("snapshot: the reader went away".into())
}

async fn send(out: &mpsc::Sender<Frame>, frame: Frame) -> crate::Result<()> {
    out.send(frame).await.map_err(|_| gone())
}

fn header(backend: &str, counts: (i64, i64, i64), head: (i64, Vec<u8>)) -> Header {
    let n = |c: i64| u64::try_from(c).unwrap_or(0);
    Header {
        format: FORMAT_VERSION,
        created_us: 0,
        server_id: String::new(),
        backend: backend.to_string(),
        entries: n(counts.0),
        audit_rows: n(counts.1),
        checkpoints: n(counts.2),
        audit_head_seq: head.0,
        audit_head_hash: head.1.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Checks what arrives against the header, and knows where it is.
struct Tally {
    header: Option<Header>,
    summary: RestoreSummary,
}

impl Tally {
    fn new(replaced: bool) -> Self {
        Self {
            header: None,
            summary: RestoreSummary {
                replaced,
                ..RestoreSummary::default()
            },
        }
    }

    fn header(&mut self, h: Header) -> crate::Result<()> {
        if self.header.is_some() {
            return Err(invalid("a second header"));
        }
        if h.format != FORMAT_VERSION {
            return Err(invalid(format!("format version {}", h.format)));
        }
        self.header = Some(h);
        Ok(())
    }

    fn need_header(&self) -> crate::Result<()> {
        if self.header.is_none() {
            return Err(invalid("records before the header"));
        }
        Ok(())
    }

    /// Counts one frame and queues its record in `pending`; `true` at the end of the stream.
    fn take(&mut self, frame: Frame, pending: &mut Pending) -> crate::Result<bool> {
        match frame {
            Frame::Header(h) => self.header(h)?,
            Frame::Entry {
                key,
                value,
                generation,
            } => {
                self.need_header()?;
                self.summary.entries += 1;
                pending.entries.push((key, value, generation));
            }
            Frame::Audit(r) => {
                self.need_header()?;
                self.summary.audit_rows += 1;
                pending.audit.push(r);
            }
            Frame::Checkpoint(c) => {
                self.need_header()?;
                self.summary.checkpoints += 1;
                pending.checkpoints.push(c);
            }
            Frame::End => return Ok(true),
        }
        Ok(false)
    }

    /// The audit head to store, once every count matched.
    fn finish(&self) -> crate::Result<(i64, Vec<u8>)> {
        let Some(h) = &self.header else {
            return Err(invalid("no header"));
        };
        let s = &self.summary;
        if (h.entries, h.audit_rows, h.checkpoints) != (s.entries, s.audit_rows, s.checkpoints) {
            return Err(invalid("the counts differ from the header"));
        }
        let hash = unhex(&h.audit_head_hash).ok_or_else(|| invalid("bad audit head hash"))?;
        Ok((h.audit_head_seq, hash))
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

fn invalid(what: impl std::fmt::Display) -> StorageError {
    StorageError::Restore(format!("the backup stream is invalid: {what}"))
}

fn not_empty() -> StorageError {
    StorageError::Restore(
        "the target store is not empty (it holds entries or an audit log); \
         restore only into an uninitialised store, or force it to replace everything"
            .into(),
    )
}

fn cut_short() -> StorageError {
    StorageError::Restore(
        "the backup stream ended before its verified end; nothing was written".into(),
    )
}

/// Whether every key is one the restore may replace.
fn only_replaceable(keys: &[Vec<u8>], replaceable: &[String]) -> bool {
    keys.iter()
        .all(|k| replaceable.iter().any(|r| r.as_bytes() == k.as_slice()))
}

/// Buffers of one restore, flushed a page at a time.
#[derive(Default)]
struct Pending {
    entries: Vec<(String, Vec<u8>, i64)>,
    audit: Vec<AuditRowRecord>,
    checkpoints: Vec<AuditCheckpoint>,
}

impl Pending {
    fn full(&self) -> bool {
        self.entries.len() + self.audit.len() + self.checkpoints.len() >= PAGE
    }
}

// ---------------------------------------------------------------- SQLite

pub(crate) mod sqlite {
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnection, SqlitePool};

    use super::*;

    type EntryRow = (Vec<u8>, Vec<u8>, i64);
    type AuditTuple = (i64, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
    type CheckpointTuple = (i64, i64, Vec<u8>, i64, String, Vec<u8>, Vec<u8>);

    pub(crate) async fn snapshot(
        reader: &SqlitePool,
        out: mpsc::Sender<Frame>,
    ) -> crate::Result<()> {
        let err = |e| backend_error("snapshot", e);
        let mut conn = reader.acquire().await.map_err(err)?;
        // A deferred read transaction: its first read fixes the snapshot.
        let mut tx = conn.begin().await.map_err(err)?;
        let counts: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM zafe_entries), (SELECT count(*) FROM zafe_audit), \
             (SELECT count(*) FROM zafe_audit_checkpoints)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        let head: (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM zafe_audit_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
        send(&out, Frame::Header(header("sqlite", counts, head))).await?;

        let mut last: Option<Vec<u8>> = None;
        loop {
            let rows: Vec<EntryRow> = match &last {
                None => sqlx::query_as(
                    "SELECT key, value, generation FROM zafe_entries ORDER BY key LIMIT ?1",
                )
                .bind(PAGE as i64),
                Some(k) => sqlx::query_as(
                    "SELECT key, value, generation FROM zafe_entries WHERE key > ?1 \
                     ORDER BY key LIMIT ?2",
                )
                .bind(k.clone())
                .bind(PAGE as i64),
            }
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let done = rows.len() < PAGE;
            for (key, value, generation) in rows {
                last = Some(key.clone());
                let key = crate::sql::key_from_bytes(key)?;
                send(
                    &out,
                    Frame::Entry {
                        key,
                        value,
                        generation,
                    },
                )
                .await?;
            }
            if done {
                break;
            }
        }

        let mut after = i64::MIN;
        loop {
            let rows: Vec<AuditTuple> = sqlx::query_as(
                "SELECT seq, time_us, prev_hash, hash, mac, body FROM zafe_audit \
                 WHERE seq > ?1 ORDER BY seq LIMIT ?2",
            )
            .bind(after)
            .bind(PAGE as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let done = rows.len() < PAGE;
            for (seq, time_us, prev_hash, hash, mac, body) in rows {
                after = seq;
                send(
                    &out,
                    Frame::Audit(AuditRowRecord {
                        seq,
                        time_us,
                        prev_hash,
                        hash,
                        mac,
                        body,
                    }),
                )
                .await?;
            }
            if done {
                break;
            }
        }

        let mut after = (i64::MIN, i64::MIN);
        loop {
            let rows: Vec<CheckpointTuple> = sqlx::query_as(
                "SELECT id, seq, hash, time_us, kind, public_key, signature \
                 FROM zafe_audit_checkpoints WHERE (seq, id) > (?1, ?2) ORDER BY seq, id LIMIT ?3",
            )
            .bind(after.0)
            .bind(after.1)
            .bind(PAGE as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let done = rows.len() < PAGE;
            for (id, seq, hash, time_us, kind, public_key, signature) in rows {
                after = (seq, id);
                send(
                    &out,
                    Frame::Checkpoint(AuditCheckpoint {
                        id,
                        seq,
                        hash,
                        time_us,
                        kind,
                        public_key,
                        signature,
                    }),
                )
                .await?;
            }
            if done {
                break;
            }
        }
        tx.rollback().await.map_err(err)?;
        send(&out, Frame::End).await
    }

    async fn is_empty(conn: &mut SqliteConnection, replaceable: &[String]) -> sqlx::Result<bool> {
        let (audit, checkpoints, head): (i64, i64, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM zafe_audit), \
             EXISTS (SELECT 1 FROM zafe_audit_checkpoints), \
             (SELECT seq FROM zafe_audit_head WHERE id = 1)",
        )
        .fetch_one(&mut *conn)
        .await?;
        let keys: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT key FROM zafe_entries ORDER BY key LIMIT ?1")
                .bind(replaceable.len() as i64 + 1)
                .fetch_all(&mut *conn)
                .await?;
        Ok(audit == 0 && checkpoints == 0 && head == 0 && only_replaceable(&keys, replaceable))
    }

    async fn flush(conn: &mut SqliteConnection, p: &mut Pending) -> sqlx::Result<()> {
        for (key, value, generation) in p.entries.drain(..) {
            sqlx::query("INSERT INTO zafe_entries (key, value, generation) VALUES (?1, ?2, ?3)")
                .bind(key.into_bytes())
                .bind(value)
                .bind(generation)
                .execute(&mut *conn)
                .await?;
        }
        for r in p.audit.drain(..) {
            sqlx::query(
                "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(r.seq)
            .bind(r.time_us)
            .bind(r.prev_hash)
            .bind(r.hash)
            .bind(r.mac)
            .bind(r.body)
            .execute(&mut *conn)
            .await?;
        }
        for c in p.checkpoints.drain(..) {
            sqlx::query(
                "INSERT INTO zafe_audit_checkpoints \
                 (id, seq, hash, time_us, kind, public_key, signature) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(c.id)
            .bind(c.seq)
            .bind(c.hash)
            .bind(c.time_us)
            .bind(c.kind)
            .bind(c.public_key)
            .bind(c.signature)
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    /// Restores on the backend's writer connection, in one `BEGIN IMMEDIATE`
    /// transaction (the group-commit thread sees the new data version and
    /// drops what it held; the caller clears the entry cache).
    pub(crate) async fn restore(
        writer: &SqlitePool,
        mut input: mpsc::Receiver<Frame>,
        options: &RestoreOptions,
    ) -> crate::Result<RestoreSummary> {
        let force = options.force;
        let err = |e| backend_error("restore", e);
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await.map_err(err)?;
        let empty = is_empty(&mut tx, &options.replaceable).await.map_err(err)?;
        if !empty && !force {
            return Err(not_empty());
        }
        if !empty {
            // The flag row lets the checkpoints' append-only trigger through
            // for this transaction only (migration 0003).
            for sql in [
                "INSERT INTO zafe_restore (id) VALUES (1)",
                "DELETE FROM zafe_entries",
                "DELETE FROM zafe_audit",
                "DELETE FROM zafe_audit_checkpoints",
                "DELETE FROM zafe_restore",
            ] {
                sqlx::query(sql).execute(&mut *tx).await.map_err(err)?;
            }
        } else {
            for key in &options.replaceable {
                sqlx::query("DELETE FROM zafe_entries WHERE key = ?1")
                    .bind(key.as_bytes())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        let mut tally = Tally::new(!empty);
        let mut pending = Pending::default();
        loop {
            let frame = input.recv().await.ok_or_else(cut_short)?;
            let end = tally.take(frame, &mut pending)?;
            if end || pending.full() {
                flush(&mut tx, &mut pending).await.map_err(err)?;
            }
            if end {
                break;
            }
        }
        let (seq, hash) = tally.finish()?;
        sqlx::query("UPDATE zafe_audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
            .bind(seq)
            .bind(hash)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(tally.summary)
    }
}

// ---------------------------------------------------------------- PostgreSQL

pub(crate) mod postgres {
    use sqlx::postgres::{PgConnection, PgPool};

    use super::*;

    type EntryRow = (Vec<u8>, Vec<u8>, i64);
    type AuditTuple = (i64, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
    type CheckpointTuple = (i64, i64, Vec<u8>, i64, String, Vec<u8>, Vec<u8>);

    pub(crate) async fn snapshot(pool: &PgPool, out: mpsc::Sender<Frame>) -> crate::Result<()> {
        let err = |e| backend_error("snapshot", e);
        let mut tx = pool.begin().await.map_err(err)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let counts: (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM zafe_entries), (SELECT count(*) FROM zafe_audit), \
             (SELECT count(*) FROM zafe_audit_checkpoints)",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(err)?;
        let head: (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM zafe_audit_head WHERE id = 1")
                .fetch_one(&mut *tx)
                .await
                .map_err(err)?;
        send(&out, Frame::Header(header("postgres", counts, head))).await?;

        let mut last: Option<Vec<u8>> = None;
        loop {
            let rows: Vec<EntryRow> = match &last {
                None => sqlx::query_as(
                    "SELECT key, value, generation FROM zafe_entries ORDER BY key LIMIT $1",
                )
                .bind(PAGE as i64),
                Some(k) => sqlx::query_as(
                    "SELECT key, value, generation FROM zafe_entries WHERE key > $1 \
                     ORDER BY key LIMIT $2",
                )
                .bind(k.clone())
                .bind(PAGE as i64),
            }
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let done = rows.len() < PAGE;
            for (key, value, generation) in rows {
                last = Some(key.clone());
                let key = crate::sql::key_from_bytes(key)?;
                send(
                    &out,
                    Frame::Entry {
                        key,
                        value,
                        generation,
                    },
                )
                .await?;
            }
            if done {
                break;
            }
        }

        let mut after = i64::MIN;
        loop {
            let rows: Vec<AuditTuple> = sqlx::query_as(
                "SELECT seq, time_us, prev_hash, hash, mac, body FROM zafe_audit \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
            )
            .bind(after)
            .bind(PAGE as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let done = rows.len() < PAGE;
            for (seq, time_us, prev_hash, hash, mac, body) in rows {
                after = seq;
                send(
                    &out,
                    Frame::Audit(AuditRowRecord {
                        seq,
                        time_us,
                        prev_hash,
                        hash,
                        mac,
                        body,
                    }),
                )
                .await?;
            }
            if done {
                break;
            }
        }

        let mut after = (i64::MIN, i64::MIN);
        loop {
            let rows: Vec<CheckpointTuple> = sqlx::query_as(
                "SELECT id, seq, hash, time_us, kind, public_key, signature \
                 FROM zafe_audit_checkpoints WHERE (seq, id) > ($1, $2) ORDER BY seq, id LIMIT $3",
            )
            .bind(after.0)
            .bind(after.1)
            .bind(PAGE as i64)
            .fetch_all(&mut *tx)
            .await
            .map_err(err)?;
            let done = rows.len() < PAGE;
            for (id, seq, hash, time_us, kind, public_key, signature) in rows {
                after = (seq, id);
                send(
                    &out,
                    Frame::Checkpoint(AuditCheckpoint {
                        id,
                        seq,
                        hash,
                        time_us,
                        kind,
                        public_key,
                        signature,
                    }),
                )
                .await?;
            }
            if done {
                break;
            }
        }
        tx.rollback().await.map_err(err)?;
        send(&out, Frame::End).await
    }

    async fn is_empty(conn: &mut PgConnection, replaceable: &[String]) -> sqlx::Result<bool> {
        let (audit, checkpoints, head): (bool, bool, i64) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM zafe_audit), \
             EXISTS (SELECT 1 FROM zafe_audit_checkpoints), \
             (SELECT seq FROM zafe_audit_head WHERE id = 1)",
        )
        .fetch_one(&mut *conn)
        .await?;
        let keys: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT key FROM zafe_entries ORDER BY key LIMIT $1")
                .bind(replaceable.len() as i64 + 1)
                .fetch_all(&mut *conn)
                .await?;
        Ok(!audit && !checkpoints && head == 0 && only_replaceable(&keys, replaceable))
    }

    async fn flush(conn: &mut PgConnection, p: &mut Pending) -> sqlx::Result<()> {
        if !p.entries.is_empty() {
            let mut q =
                sqlx::QueryBuilder::new("INSERT INTO zafe_entries (key, value, generation) ");
            q.push_values(p.entries.drain(..), |mut b, (key, value, generation)| {
                b.push_bind(key.into_bytes())
                    .push_bind(value)
                    .push_bind(generation);
            });
            q.build().execute(&mut *conn).await?;
        }
        if !p.audit.is_empty() {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) ",
            );
            q.push_values(p.audit.drain(..), |mut b, r| {
                b.push_bind(r.seq)
                    .push_bind(r.time_us)
                    .push_bind(r.prev_hash)
                    .push_bind(r.hash)
                    .push_bind(r.mac)
                    .push_bind(r.body);
            });
            q.build().execute(&mut *conn).await?;
        }
        if !p.checkpoints.is_empty() {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO zafe_audit_checkpoints \
                 (id, seq, hash, time_us, kind, public_key, signature) ",
            );
            q.push_values(p.checkpoints.drain(..), |mut b, c| {
                b.push_bind(c.id)
                    .push_bind(c.seq)
                    .push_bind(c.hash)
                    .push_bind(c.time_us)
                    .push_bind(c.kind)
                    .push_bind(c.public_key)
                    .push_bind(c.signature);
            });
            q.build().execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Restores in one transaction. The head row is locked first, so no
    /// audit append of another node interleaves; `zafe.restore` (migration
    /// 0003) lets the append-only triggers through for this transaction only
    /// when the store is replaced.
    pub(crate) async fn restore(
        pool: &PgPool,
        mut input: mpsc::Receiver<Frame>,
        options: &RestoreOptions,
    ) -> crate::Result<RestoreSummary> {
        let force = options.force;
        let err = |e| backend_error("restore", e);
        let mut tx = pool.begin().await.map_err(err)?;
        sqlx::query("SELECT seq FROM zafe_audit_head WHERE id = 1 FOR UPDATE")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        let empty = is_empty(&mut tx, &options.replaceable).await.map_err(err)?;
        if !empty && !force {
            return Err(not_empty());
        }
        if !empty {
            for sql in [
                "SELECT set_config('zafe.restore', 'on', true)",
                "DELETE FROM zafe_entries",
                "DELETE FROM zafe_audit",
                "DELETE FROM zafe_audit_checkpoints",
            ] {
                sqlx::query(sql).execute(&mut *tx).await.map_err(err)?;
            }
        } else {
            for key in &options.replaceable {
                sqlx::query("DELETE FROM zafe_entries WHERE key = $1")
                    .bind(key.as_bytes())
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
        }
        let mut tally = Tally::new(!empty);
        let mut pending = Pending::default();
        loop {
            let frame = input.recv().await.ok_or_else(cut_short)?;
            let end = tally.take(frame, &mut pending)?;
            if end || pending.full() {
                flush(&mut tx, &mut pending).await.map_err(err)?;
            }
            if end {
                break;
            }
        }
        let (seq, hash) = tally.finish()?;
        sqlx::query("UPDATE zafe_audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(hash)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        // Every node drops what it derived from storage ("*": everything;
        // the channel is the backend's keys channel), when this commits.
        sqlx::query("SELECT pg_notify('zafe_keys', '*')")
            .execute(&mut *tx)
            .await
            .map_err(err)?;
        // The next checkpoint gets an id after every restored one.
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('zafe_audit_checkpoints', 'id'), \
             COALESCE((SELECT max(id) FROM zafe_audit_checkpoints), 0) + 1, false)",
        )
        .execute(&mut *tx)
        .await
        .map_err(err)?;
        tx.commit().await.map_err(err)?;
        Ok(tally.summary)
    }
}
