//! Audit log storage (R-AUD-1..6, R-SCALE-2): an append-only hash chain.
//!
//! The chain link of every new row is made **inside the database transaction
//! that holds the chain head**: SQLite's single writer with `BEGIN
//! IMMEDIATE`, PostgreSQL's `SELECT .. FOR UPDATE` on the one row of
//! `zafe_audit_head`. So sequence numbers come from the database, never from
//! a clock or a node's memory, and any number of server nodes appending at
//! once produce one chain. On top of that, `prev_hash` is `UNIQUE`: a fork
//! (two rows claiming the same predecessor) cannot be stored at all.
//!
//! This crate does no cryptography: the caller passes a [`Linker`] that
//! computes a row's hash and MAC from its sequence number, its predecessor's
//! hash and its content. It is called with the head locked, once per row.
//!
//! Rows are never updated; the only deletes are [`Backend::audit_sweep`]'s
//! (retention), which removes a prefix of the chain. Triggers refuse
//! everything else (on SQLite: updates; on PostgreSQL: updates, deletes
//! outside the sweep, and `TRUNCATE`).
//!
//! [`Backend::audit_sweep`]: crate::Backend::audit_sweep

// The chain's pure types, shared with the server and the CLI's verifier:
// one definition, in zafe-core.
pub use zafe_core::audit::{AuditCheckpoint, GENESIS_HASH};

/// A row to append: its time (for display and time-range lookups only;
/// order is by sequence number) and its opaque content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditDraft {
    /// When the event happened, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// The serialised event, opaque to this crate (the server stores JSON
    /// whose sensitive fields are already HMACed).
    pub body: Vec<u8>,
}

/// A stored row of the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRow {
    /// Position in the chain, assigned by the database: 1 for the first
    /// row ever appended, then consecutive. Never reused, even after a sweep.
    pub seq: i64,
    /// The draft's time, in microseconds since the Unix epoch.
    pub time_us: i64,
    /// The `hash` of the row before (or [`GENESIS_HASH`]); unique across
    /// the table, so the chain cannot fork.
    pub prev_hash: Vec<u8>,
    /// This row's link, as the [`Linker`] computed it.
    pub hash: Vec<u8>,
    /// The MAC over `hash`, as the [`Linker`] computed it.
    pub mac: Vec<u8>,
    /// The draft's content, byte for byte.
    pub body: Vec<u8>,
}

/// What a [`Linker`] computes for a new row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditLink {
    /// The row's hash; the next row's `prev_hash`.
    pub hash: Vec<u8>,
    /// A MAC over the row, under a key this crate never sees.
    pub mac: Vec<u8>,
}

/// Computes the link of a new row from its sequence number, its
/// predecessor's hash and its draft. Called with the chain head locked.
pub type Linker<'a> = &'a (dyn Fn(i64, &[u8], &AuditDraft) -> AuditLink + Send + Sync);

/// A [`Linker`] that can be moved elsewhere (to the SQLite writer thread, which
/// links the rows of [`Backend::commit_audited`] inside its transaction).
///
/// [`Backend::commit_audited`]: crate::Backend::commit_audited
pub type SharedLinker = std::sync::Arc<dyn Fn(i64, &[u8], &AuditDraft) -> AuditLink + Send + Sync>;

/// The newest link of the chain: `seq` 0 and [`GENESIS_HASH`] before the
/// first append. Kept in its own row, so it survives a sweep of every row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditHead {
    /// The sequence number of the newest row ever appended (0 if none).
    pub seq: i64,
    /// That row's hash ([`GENESIS_HASH`] if none).
    pub hash: Vec<u8>,
}

/// Which end of a time range [`Backend::audit_seq_at`] looks for.
///
/// [`Backend::audit_seq_at`]: crate::Backend::audit_seq_at
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeBound {
    /// The lowest sequence number whose time is at or after the given time.
    FirstAtOrAfter,
    /// The highest sequence number whose time is at or before the given time.
    LastAtOrBefore,
}

/// Links `drafts` onto the chain head (`seq`, `hash`) as the caller's
/// linker says: the rows to insert, in order. Every backend links here,
/// with the head locked.
pub(crate) fn link_rows(
    mut seq: i64,
    hash: &[u8],
    drafts: impl IntoIterator<Item = AuditDraft>,
    link: Linker<'_>,
) -> Vec<AuditRow> {
    let mut prev = hash.to_vec();
    let drafts = drafts.into_iter();
    let mut rows = Vec::with_capacity(drafts.size_hint().0);
    for draft in drafts {
        seq += 1;
        let AuditLink { hash, mac } = link(seq, &prev, &draft);
        let prev_hash = std::mem::replace(&mut prev, hash.clone());
        rows.push(AuditRow {
            seq,
            time_us: draft.time_us,
            prev_hash,
            hash,
            mac,
            body: draft.body,
        });
    }
    rows
}

/// The answer of a backend that has no audit log.
pub(crate) fn unsupported() -> crate::StorageError {
    crate::StorageError::Backend("this storage backend has no audit log".into())
}

type RowTuple = (i64, i64, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
type CheckpointTuple = (i64, i64, Vec<u8>, i64, String, Vec<u8>, Vec<u8>);

fn row((seq, time_us, prev_hash, hash, mac, body): RowTuple) -> AuditRow {
    AuditRow {
        seq,
        time_us,
        prev_hash,
        hash,
        mac,
        body,
    }
}

fn checkpoint(
    (id, seq, hash, time_us, kind, public_key, signature): CheckpointTuple,
) -> AuditCheckpoint {
    AuditCheckpoint {
        id,
        seq,
        hash,
        time_us,
        kind,
        public_key,
        signature,
    }
}

const ROW_COLUMNS: &str = "seq, time_us, prev_hash, hash, mac, body";
const CHECKPOINT_COLUMNS: &str = "id, seq, hash, time_us, kind, public_key, signature";

/// The SQLite side. Appends and sweeps go through the backend's single
/// writer connection, in `BEGIN IMMEDIATE` transactions: the write lock is
/// taken first, so reading the head and writing after it cannot race, not
/// even with another process on the same file.
pub(crate) mod sqlite {
    use sqlx::sqlite::{SqliteConnection, SqlitePool};

    use super::*;
    use crate::Result;
    use crate::sql::{backend_error, describe, sql_limit};

    pub(crate) async fn append(
        writer: &SqlitePool,
        drafts: Vec<AuditDraft>,
        link: Linker<'_>,
    ) -> Result<Vec<AuditRow>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| backend_error("audit append: begin", e))?;
        let result = append_in(&mut tx, drafts, link).await;
        match result {
            Ok(rows) => {
                tx.commit()
                    .await
                    .map_err(|e| backend_error("audit append: commit", e))?;
                Ok(rows)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %describe(&rb), "SQLite rollback failed");
                }
                Err(backend_error("audit append", e))
            }
        }
    }

    /// Appends `drafts` inside the caller's transaction, which holds the
    /// write lock.
    pub(crate) async fn append_in(
        conn: &mut SqliteConnection,
        drafts: Vec<AuditDraft>,
        link: Linker<'_>,
    ) -> sqlx::Result<Vec<AuditRow>> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM zafe_audit_head WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
        let rows = link_rows(seq, &hash, drafts, link);
        for r in &rows {
            sqlx::query(
                "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .bind(r.seq)
            .bind(r.time_us)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .bind(&r.mac)
            .bind(&r.body)
            .execute(&mut *conn)
            .await?;
        }
        if let Some(last) = rows.last() {
            sqlx::query("UPDATE zafe_audit_head SET seq = ?1, hash = ?2 WHERE id = 1")
                .bind(last.seq)
                .bind(&last.hash)
                .execute(&mut *conn)
                .await?;
        }
        Ok(rows)
    }

    pub(crate) async fn head(reader: &SqlitePool) -> Result<AuditHead> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM zafe_audit_head WHERE id = 1")
                .fetch_one(reader)
                .await
                .map_err(|e| backend_error("audit head", e))?;
        Ok(AuditHead { seq, hash })
    }

    pub(crate) async fn read(
        reader: &SqlitePool,
        from_seq: i64,
        limit: usize,
    ) -> Result<Vec<AuditRow>> {
        let rows: Vec<RowTuple> = sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM zafe_audit WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
        ))
        .bind(from_seq)
        .bind(sql_limit(limit))
        .fetch_all(reader)
        .await
        .map_err(|e| backend_error("audit read", e))?;
        Ok(rows.into_iter().map(row).collect())
    }

    pub(crate) async fn seq_at(
        reader: &SqlitePool,
        time_us: i64,
        bound: TimeBound,
    ) -> Result<Option<i64>> {
        let sql = match bound {
            TimeBound::FirstAtOrAfter => {
                "SELECT seq FROM zafe_audit WHERE time_us >= ?1 ORDER BY seq LIMIT 1"
            }
            TimeBound::LastAtOrBefore => {
                "SELECT seq FROM zafe_audit WHERE time_us <= ?1 ORDER BY seq DESC LIMIT 1"
            }
        };
        sqlx::query_scalar(sql)
            .bind(time_us)
            .fetch_optional(reader)
            .await
            .map_err(|e| backend_error("audit time lookup", e))
    }

    pub(crate) async fn sweep(writer: &SqlitePool, through_seq: i64, limit: usize) -> Result<u64> {
        let mut tx = writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| backend_error("audit sweep: begin", e))?;
        let done = sqlx::query(
            "DELETE FROM zafe_audit WHERE seq IN \
             (SELECT seq FROM zafe_audit WHERE seq <= ?1 ORDER BY seq LIMIT ?2)",
        )
        .bind(through_seq)
        .bind(sql_limit(limit))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend_error("audit sweep", e))?;
        tx.commit()
            .await
            .map_err(|e| backend_error("audit sweep: commit", e))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn checkpoint_append(writer: &SqlitePool, cp: AuditCheckpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO zafe_audit_checkpoints (seq, hash, time_us, kind, public_key, signature) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(cp.time_us)
        .bind(&cp.kind)
        .bind(&cp.public_key)
        .bind(&cp.signature)
        .execute(writer)
        .await
        .map_err(|e| backend_error("audit checkpoint", e))?;
        Ok(())
    }

    pub(crate) async fn checkpoints(
        reader: &SqlitePool,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<AuditCheckpoint>> {
        let rows: Vec<CheckpointTuple> = sqlx::query_as(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM zafe_audit_checkpoints \
             WHERE (seq, id) > (?1, ?2) ORDER BY seq, id LIMIT ?3"
        ))
        .bind(after.0)
        .bind(after.1)
        .bind(sql_limit(limit))
        .fetch_all(reader)
        .await
        .map_err(|e| backend_error("audit checkpoints", e))?;
        Ok(rows.into_iter().map(checkpoint).collect())
    }
}

/// The PostgreSQL side. An append locks the head row with `FOR UPDATE`, so
/// appends from every node serialize on it for the length of one
/// transaction; the sweep sets `zafe.audit_sweep` for its own transaction
/// only, which is what the append-only trigger lets through.
pub(crate) mod postgres {
    use sqlx::postgres::{PgConnection, PgPool};

    use super::*;
    use crate::Result;
    use crate::sql::{backend_error, describe, sql_limit};

    pub(crate) async fn append(
        pool: &PgPool,
        drafts: Vec<AuditDraft>,
        link: Linker<'_>,
    ) -> Result<Vec<AuditRow>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| backend_error("audit append: begin", e))?;
        let result = append_in(&mut tx, drafts, link).await;
        match result {
            Ok(rows) => {
                tx.commit()
                    .await
                    .map_err(|e| backend_error("audit append: commit", e))?;
                Ok(rows)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %describe(&rb), "PostgreSQL rollback failed");
                }
                Err(backend_error("audit append", e))
            }
        }
    }

    /// Appends `drafts` inside the caller's transaction: locks the head row
    /// (held until that transaction ends), links and inserts.
    pub(crate) async fn append_in(
        conn: &mut PgConnection,
        drafts: Vec<AuditDraft>,
        link: Linker<'_>,
    ) -> sqlx::Result<Vec<AuditRow>> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM zafe_audit_head WHERE id = 1 FOR UPDATE")
                .fetch_one(&mut *conn)
                .await?;
        let rows = link_rows(seq, &hash, drafts, link);
        // Few statements for the whole batch: few round trips. (A
        // statement takes at most 65,535 parameters, six per row.)
        for chunk in rows.chunks(1000) {
            let mut insert = sqlx::QueryBuilder::new(
                "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) ",
            );
            insert.push_values(chunk, |mut b, r| {
                b.push_bind(r.seq)
                    .push_bind(r.time_us)
                    .push_bind(&r.prev_hash)
                    .push_bind(&r.hash)
                    .push_bind(&r.mac)
                    .push_bind(&r.body);
            });
            insert.build().execute(&mut *conn).await?;
        }
        if let Some(last) = rows.last() {
            sqlx::query("UPDATE zafe_audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(last.seq)
                .bind(&last.hash)
                .execute(&mut *conn)
                .await?;
        }
        Ok(rows)
    }

    pub(crate) async fn head(pool: &PgPool) -> Result<AuditHead> {
        let (seq, hash): (i64, Vec<u8>) =
            sqlx::query_as("SELECT seq, hash FROM zafe_audit_head WHERE id = 1")
                .fetch_one(pool)
                .await
                .map_err(|e| backend_error("audit head", e))?;
        Ok(AuditHead { seq, hash })
    }

    pub(crate) async fn read(pool: &PgPool, from_seq: i64, limit: usize) -> Result<Vec<AuditRow>> {
        let rows: Vec<RowTuple> = sqlx::query_as(&format!(
            "SELECT {ROW_COLUMNS} FROM zafe_audit WHERE seq >= $1 ORDER BY seq LIMIT $2"
        ))
        .bind(from_seq)
        .bind(sql_limit(limit))
        .fetch_all(pool)
        .await
        .map_err(|e| backend_error("audit read", e))?;
        Ok(rows.into_iter().map(row).collect())
    }

    pub(crate) async fn seq_at(
        pool: &PgPool,
        time_us: i64,
        bound: TimeBound,
    ) -> Result<Option<i64>> {
        let sql = match bound {
            TimeBound::FirstAtOrAfter => {
                "SELECT seq FROM zafe_audit WHERE time_us >= $1 ORDER BY seq LIMIT 1"
            }
            TimeBound::LastAtOrBefore => {
                "SELECT seq FROM zafe_audit WHERE time_us <= $1 ORDER BY seq DESC LIMIT 1"
            }
        };
        sqlx::query_scalar(sql)
            .bind(time_us)
            .fetch_optional(pool)
            .await
            .map_err(|e| backend_error("audit time lookup", e))
    }

    pub(crate) async fn sweep(pool: &PgPool, through_seq: i64, limit: usize) -> Result<u64> {
        let mut tx = pool
            .begin()
            .await
            .map_err(|e| backend_error("audit sweep: begin", e))?;
        sqlx::query("SELECT set_config('zafe.audit_sweep', 'on', true)")
            .execute(&mut *tx)
            .await
            .map_err(|e| backend_error("audit sweep", e))?;
        let done = sqlx::query(
            "DELETE FROM zafe_audit WHERE seq IN \
             (SELECT seq FROM zafe_audit WHERE seq <= $1 ORDER BY seq LIMIT $2)",
        )
        .bind(through_seq)
        .bind(sql_limit(limit))
        .execute(&mut *tx)
        .await
        .map_err(|e| backend_error("audit sweep", e))?;
        tx.commit()
            .await
            .map_err(|e| backend_error("audit sweep: commit", e))?;
        Ok(done.rows_affected())
    }

    pub(crate) async fn checkpoint_append(pool: &PgPool, cp: AuditCheckpoint) -> Result<()> {
        sqlx::query(
            "INSERT INTO zafe_audit_checkpoints (seq, hash, time_us, kind, public_key, signature) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(cp.seq)
        .bind(&cp.hash)
        .bind(cp.time_us)
        .bind(&cp.kind)
        .bind(&cp.public_key)
        .bind(&cp.signature)
        .execute(pool)
        .await
        .map_err(|e| backend_error("audit checkpoint", e))?;
        Ok(())
    }

    pub(crate) async fn checkpoints(
        pool: &PgPool,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<AuditCheckpoint>> {
        let rows: Vec<CheckpointTuple> = sqlx::query_as(&format!(
            "SELECT {CHECKPOINT_COLUMNS} FROM zafe_audit_checkpoints \
             WHERE (seq, id) > ($1, $2) ORDER BY seq, id LIMIT $3"
        ))
        .bind(after.0)
        .bind(after.1)
        .bind(sql_limit(limit))
        .fetch_all(pool)
        .await
        .map_err(|e| backend_error("audit checkpoints", e))?;
        Ok(rows.into_iter().map(checkpoint).collect())
    }
}
