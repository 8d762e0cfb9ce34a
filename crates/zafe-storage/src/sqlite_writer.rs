//! Group commit for a SQLite file: one writer thread, one connection.
//!
//! Every [`Backend::commit`] and every audit append of this process is a job
//! for the writer thread. The thread takes whatever jobs have queued up,
//! runs them all inside one `BEGIN IMMEDIATE` transaction and commits it with
//! one fsync (`synchronous = FULL` in WAL mode), then answers every caller.
//! So many commits share one fsync, and no statement pays for a hop to a
//! driver thread: the thread owns a plain synchronous connection.
//!
//! Each job stays atomic on its own: a batch of several ops runs inside its
//! own `SAVEPOINT`, its conditions checked there, and a failed condition
//! rolls back that batch alone (the caller gets its conflict, the other
//! batches commit). No caller is answered `Ok` before the transaction that
//! holds its writes is durable. If the commit itself fails, every caller of
//! the cycle gets the error.
//!
//! A change with its audit entries ([`crate::Backend::commit_audited`]) is
//! one job: its ops and its rows in one savepoint, linked here onto the head
//! as this thread finds it (the caller's linker is shared with the thread),
//! so any number of them group-commit without ever re-linking.
//!
//! Audit appends ([`crate::audit`]) share the transaction. Their links are
//! computed by the caller, not by this thread (the linker is the caller's
//! closure and holds the chain key): the caller links its rows onto the
//! chain head it expects, and the thread, holding the write lock, stores
//! them only if the head is still that one; otherwise it answers with the
//! current head and the caller links again. Within one process the
//! expectation is the head the last append left, so it is nearly always
//! right. They run first in their cycle, before any job that moves the head.
//!
//! WAL checkpoints (copying committed pages back into the database file,
//! and its fsync) run on a second thread and connection, passively, every
//! [`CHECKPOINT_EVERY`] after commits: SQLite would otherwise run them
//! inside a commit every 1,000 pages, holding every caller of that cycle.
//! The writer still checkpoints itself past [`WAL_BACKSTOP_PAGES`], which
//! bounds the log under any load (by then little is left to copy) and lets
//! SQLite start the log over.
//!
//! The entry cache ([`crate::cache`]) is updated here, after the commit is
//! durable and before anyone is answered, where no cancelled request can
//! skip it. When another connection (another process on the same file) has
//! committed, `PRAGMA data_version` changes and the cache is cleared: at the
//! start of every cycle, under the write lock, and every [`IDLE_POLL`] while
//! idle.
//!
//! [`Backend::commit`]: crate::Backend::commit

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::oneshot;

use crate::audit::{AuditDraft, AuditHead, AuditRow, Linker, SharedLinker, link_rows};
use crate::cache::EntryCache;
use crate::{Condition, Op, Result, StorageError};

/// Jobs per transaction at most; ops per transaction stop taking more jobs.
const MAX_JOBS: usize = 1024;
const MAX_OPS: usize = 16_384;

/// How often an idle writer checks whether another connection committed.
const IDLE_POLL: Duration = Duration::from_millis(100);

/// How often an audit append re-links after the head moved under it.
const MAX_AUDIT_ATTEMPTS: usize = 32;

/// How often the checkpointer runs, when there were commits.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The writer's own (SQLite automatic) checkpoint threshold, in pages.
const WAL_BACKSTOP_PAGES: i64 = 8000;

enum Job {
    Commit {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<()>>,
    },
    Audit {
        /// The head `rows` were linked onto; `None` asks for the head.
        expect: Option<AuditHead>,
        rows: Vec<AuditRow>,
        reply: oneshot::Sender<AuditOutcome>,
    },
    /// Ops and the audit entries that go with them, all or nothing.
    Audited {
        ops: Vec<Op>,
        drafts: Vec<AuditDraft>,
        link: SharedLinker,
        reply: oneshot::Sender<Result<Vec<AuditRow>>>,
    },
}

impl Job {
    fn size(&self) -> usize {
        match self {
            Job::Commit { ops, .. } => ops.len(),
            Job::Audit { rows, .. } => rows.len(),
            Job::Audited { ops, drafts, .. } => ops.len() + drafts.len(),
        }
    }
}

enum AuditOutcome {
    Stored(Vec<AuditRow>),
    /// The head is not the one expected; link onto this one.
    Moved(AuditHead),
    Failed(StorageError),
}

/// The handle the backend keeps; the thread stops when it is closed or
/// dropped, after finishing the jobs already queued.
pub(crate) struct GroupWriter {
    tx: Mutex<Option<std_mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Dropped to stop the checkpointer.
    checkpoints: Mutex<Option<(std_mpsc::Sender<()>, JoinHandle<()>)>>,
    /// The chain head the last append left (what to link onto next).
    head: Arc<Mutex<Option<AuditHead>>>,
    /// One append at a time from this process: concurrent ones would all
    /// link onto the same head and all but one would have to link again.
    appending: tokio::sync::Mutex<()>,
}

fn stopped() -> StorageError {
    StorageError::Backend("the storage writer has stopped".into())
}

impl GroupWriter {
    /// Opens a second connection to `path` (already migrated, in WAL mode)
    /// and starts the writer thread on it.
    pub(crate) async fn start(
        path: &Path,
        busy_timeout: Duration,
        cache: Option<Arc<EntryCache>>,
    ) -> Result<Self> {
        let (tx, rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let head = Arc::new(Mutex::new(None));
        let commits = Arc::new(AtomicU64::new(0));
        let checkpoints = start_checkpointer(path, busy_timeout, commits.clone())?;
        let path = path.to_path_buf();
        let thread_head = head.clone();
        let thread = std::thread::Builder::new()
            .name("zafe-sqlite-writer".into())
            .spawn(move || {
                let writer = match Writer::open(&path, busy_timeout, cache, thread_head, commits) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                writer.run(rx);
            })
            .map_err(|e| {
                StorageError::Backend(format!("cannot start the storage writer thread: {e}"))
            })?;
        ready_rx.await.map_err(|_| stopped())??;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            checkpoints: Mutex::new(Some(checkpoints)),
            head,
            appending: tokio::sync::Mutex::new(()),
        })
    }

    fn send(&self, job: Job) -> Result<()> {
        let guard = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }

    pub(crate) async fn commit(&self, ops: Vec<Op>) -> Result<()> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Commit { ops, reply })?;
        done.await.map_err(|_| stopped())?
    }

    pub(crate) async fn commit_audited(
        &self,
        ops: Vec<Op>,
        drafts: Vec<AuditDraft>,
        link: SharedLinker,
    ) -> Result<Vec<AuditRow>> {
        let (reply, done) = oneshot::channel();
        self.send(Job::Audited {
            ops,
            drafts,
            link,
            reply,
        })?;
        done.await.map_err(|_| stopped())?
    }

    pub(crate) async fn audit_append(
        &self,
        drafts: Vec<AuditDraft>,
        link: Linker<'_>,
    ) -> Result<Vec<AuditRow>> {
        if drafts.is_empty() {
            return Ok(Vec::new());
        }
        let _one_at_a_time = self.appending.lock().await;
        let mut expect = self.head.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for _ in 0..MAX_AUDIT_ATTEMPTS {
            let rows = match &expect {
                Some(head) => link_rows(head.seq, &head.hash, drafts.iter().cloned(), link),
                None => Vec::new(),
            };
            let (reply, done) = oneshot::channel();
            self.send(Job::Audit {
                expect: expect.clone(),
                rows,
                reply,
            })?;
            match done.await.map_err(|_| stopped())? {
                AuditOutcome::Stored(rows) => return Ok(rows),
                AuditOutcome::Moved(head) => expect = Some(head),
                AuditOutcome::Failed(e) => return Err(e),
            }
        }
        Err(StorageError::Backend(
            "audit append: the chain head kept moving (too many concurrent writers)".into(),
        ))
    }

    /// Stops taking jobs, lets the thread finish the queued ones, and waits
    /// for it.
    pub(crate) async fn close(&self) {
        drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        let checkpoints = self
            .checkpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(thread) = thread {
                let _ = thread.join();
            }
            if let Some((stop, thread)) = checkpoints {
                drop(stop);
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// Starts the checkpointer thread on its own connection. It stops when the
/// returned sender is dropped.
fn start_checkpointer(
    path: &Path,
    busy_timeout: Duration,
    commits: Arc<AtomicU64>,
) -> Result<(std_mpsc::Sender<()>, JoinHandle<()>)> {
    let open = |e: rusqlite::Error| {
        backend_error(&format!("opening {} for checkpoints", path.display()), &e)
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open)?;
    conn.busy_timeout(busy_timeout).map_err(open)?;
    let (stop, stopped) = std_mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("zafe-sqlite-checkpoint".into())
        .spawn(move || {
            let mut seen = 0;
            loop {
                match stopped.recv_timeout(CHECKPOINT_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                let now = commits.load(Ordering::Relaxed);
                if now == seen {
                    continue;
                }
                seen = now;
                // PASSIVE: copies what it can without waiting for, or
                // blocking, the writer or any reader.
                let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                if let Err(e) = done {
                    tracing::warn!(error = %describe(&e), "SQLite checkpoint failed; the writer will checkpoint itself");
                }
            }
        })
        .map_err(|e| StorageError::Backend(format!("cannot start the checkpoint thread: {e}")))?;
    Ok((stop, thread))
}

/// Never quotes bound values: only SQLite's own message, which names
/// tables and constraints, not data.
fn describe(err: &rusqlite::Error) -> String {
    match err {
        rusqlite::Error::SqliteFailure(e, Some(message)) => {
            format!("database error {}: {message}", e.extended_code)
        }
        rusqlite::Error::SqliteFailure(e, None) => {
            format!("database error {}: {e}", e.extended_code)
        }
        rusqlite::Error::QueryReturnedNoRows => {
            "the database returned no row where one was expected".into()
        }
        _ => "unexpected database client error".into(),
    }
}

fn backend_error(context: &str, err: &rusqlite::Error) -> StorageError {
    StorageError::Backend(format!("{context}: {}", describe(err)))
}

/// What one job of a cycle came to, before the commit.
enum Done {
    Commit {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<()>>,
        outcome: Result<()>,
    },
    Audit {
        reply: oneshot::Sender<AuditOutcome>,
        outcome: AuditOutcome,
    },
    Audited {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<Vec<AuditRow>>>,
        outcome: Result<Vec<AuditRow>>,
    },
}

struct Writer {
    conn: Connection,
    cache: Option<Arc<EntryCache>>,
    head: Arc<Mutex<Option<AuditHead>>>,
    data_version: i64,
    /// Counts committed cycles, for the checkpointer.
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn open(
        path: &Path,
        busy_timeout: Duration,
        cache: Option<Arc<EntryCache>>,
        head: Arc<Mutex<Option<AuditHead>>>,
        commits: Arc<AtomicU64>,
    ) -> Result<Self> {
        let open = |e: rusqlite::Error| {
            backend_error(&format!("opening {} for writing", path.display()), &e)
        };
        let conn = Connection::open_with_flags(
            path,
            // No URI parsing (a path is a path) and no creation: the
            // backend created, checked and migrated the file already.
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        conn.busy_timeout(busy_timeout).map_err(open)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(open)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StorageError::Backend(format!(
                "{} is not in WAL mode ({mode})",
                path.display()
            )));
        }
        // FULL: every commit fsyncs the log before it returns, so an
        // acknowledged write survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open)?;
        let _: i64 = conn
            .query_row(
                &format!("PRAGMA wal_autocheckpoint = {WAL_BACKSTOP_PAGES}"),
                [],
                |r| r.get(0),
            )
            .map_err(open)?;
        conn.set_prepared_statement_cache_capacity(32);
        let mut writer = Self {
            conn,
            cache,
            head: head.clone(),
            data_version: 0,
            commits,
        };
        writer.data_version = writer.read_data_version().map_err(open)?;
        let current = writer.read_head().map_err(open)?;
        *head.lock().unwrap_or_else(|p| p.into_inner()) = Some(current);
        Ok(writer)
    }

    fn run(mut self, rx: std_mpsc::Receiver<Job>) {
        loop {
            let first = match rx.recv_timeout(IDLE_POLL) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => {
                    self.notice_other_writers();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut size = first.size();
            let mut jobs = vec![first];
            while jobs.len() < MAX_JOBS && size < MAX_OPS {
                match rx.try_recv() {
                    Ok(job) => {
                        size += job.size();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.cycle(jobs);
        }
    }

    fn read_data_version(&self) -> rusqlite::Result<i64> {
        self.conn
            .prepare_cached("PRAGMA data_version")?
            .query_row([], |r| r.get(0))
    }

    fn read_head(&self) -> rusqlite::Result<AuditHead> {
        self.conn
            .prepare_cached("SELECT seq, hash FROM zafe_audit_head WHERE id = 1")?
            .query_row([], |r| {
                Ok(AuditHead {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            })
    }

    /// Clears the cache if another connection committed since we last
    /// looked. In a transaction, this sees every commit before ours.
    fn notice_other_writers(&mut self) {
        match self.read_data_version() {
            Ok(v) if v == self.data_version => {}
            Ok(v) => {
                self.data_version = v;
                if let Some(cache) = &self.cache {
                    cache.clear();
                }
                self.head.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
            Err(e) => {
                // Cannot tell: assume the worst.
                tracing::warn!(error = %describe(&e), "could not read the SQLite data version");
                if let Some(cache) = &self.cache {
                    cache.clear();
                }
            }
        }
    }

    fn exec(&self, sql: &str) -> rusqlite::Result<usize> {
        self.conn.prepare_cached(sql)?.execute([])
    }

    fn cycle(&mut self, mut jobs: Vec<Job>) {
        // Plain appends were linked onto the head the cycle starts with:
        // they go first (a stable sort: the others keep their order).
        jobs.sort_by_key(|job| !matches!(job, Job::Audit { .. }));
        if let Err(e) = self.exec("BEGIN IMMEDIATE") {
            let error = backend_error("commit: begin", &e);
            for job in jobs {
                fail(job, &error);
            }
            return;
        }
        self.notice_other_writers();
        let mut done = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        let mut lost = None;
        for job in jobs.by_ref() {
            done.push(match job {
                Job::Commit { ops, reply } => {
                    let outcome = self.apply_batch(&ops);
                    Done::Commit {
                        ops,
                        reply,
                        outcome,
                    }
                }
                Job::Audit {
                    expect,
                    rows,
                    reply,
                } => Done::Audit {
                    outcome: self.append_audit(expect, rows),
                    reply,
                },
                Job::Audited {
                    ops,
                    drafts,
                    link,
                    reply,
                } => Done::Audited {
                    outcome: self.apply_audited(&ops, &drafts, &*link),
                    ops,
                    reply,
                },
            });
            // Some errors (I/O, disk full) make SQLite roll back the whole
            // transaction; then nothing of this cycle will be committed.
            if self.conn.is_autocommit() {
                lost = Some(StorageError::Backend(
                    "commit: the database rolled the transaction back after an error".into(),
                ));
                break;
            }
        }
        let committed = match lost {
            Some(e) => Err(e),
            None => self
                .exec("COMMIT")
                .map(|_| ())
                .map_err(|e| backend_error("commit", &e)),
        };
        match committed {
            Ok(()) => {
                self.commits.fetch_add(1, Ordering::Relaxed);
                self.answer(done)
            }
            Err(error) => {
                if !self.conn.is_autocommit() {
                    let _ = self.exec("ROLLBACK");
                }
                tracing::error!(error = %error, jobs = done.len(), "SQLite group commit failed");
                self.head.lock().unwrap_or_else(|p| p.into_inner()).take();
                for d in done {
                    match d {
                        Done::Commit { ops, reply, .. } => {
                            // Whatever state these keys are in now, the
                            // cache must not vouch for it.
                            if let Some(cache) = &self.cache {
                                for op in &ops {
                                    cache.invalidate(op_key(op));
                                }
                            }
                            let _ = reply.send(Err(error_copy(&error)));
                        }
                        Done::Audit { reply, .. } => {
                            let _ = reply.send(AuditOutcome::Failed(error_copy(&error)));
                        }
                        Done::Audited { ops, reply, .. } => {
                            if let Some(cache) = &self.cache {
                                for op in &ops {
                                    cache.invalidate(op_key(op));
                                }
                            }
                            let _ = reply.send(Err(error_copy(&error)));
                        }
                    }
                }
                for job in jobs {
                    fail(job, &error);
                }
            }
        }
    }

    /// After a durable commit: the cache first, then the callers.
    fn answer(&mut self, done: Vec<Done>) {
        let mut replies = Vec::with_capacity(done.len());
        for d in done {
            match d {
                Done::Commit {
                    ops,
                    reply,
                    outcome,
                } => {
                    if let Some(cache) = &self.cache {
                        match &outcome {
                            Ok(()) => cache.apply(ops),
                            // The conflict says our idea of this key may be
                            // stale (another process wrote it).
                            Err(StorageError::Conflict { key }) => cache.invalidate(key),
                            Err(_) => {
                                for op in &ops {
                                    cache.invalidate(op_key(op));
                                }
                            }
                        }
                    }
                    replies.push(Reply::Commit(reply, outcome));
                }
                Done::Audit { reply, outcome } => {
                    if let AuditOutcome::Stored(rows) = &outcome
                        && let Some(last) = rows.last()
                    {
                        *self.head.lock().unwrap_or_else(|p| p.into_inner()) = Some(AuditHead {
                            seq: last.seq,
                            hash: last.hash.clone(),
                        });
                    }
                    replies.push(Reply::Audit(reply, outcome));
                }
                Done::Audited {
                    ops,
                    reply,
                    outcome,
                } => {
                    match &outcome {
                        Ok(rows) => {
                            if let Some(cache) = &self.cache {
                                cache.apply(ops);
                            }
                            if let Some(last) = rows.last() {
                                *self.head.lock().unwrap_or_else(|p| p.into_inner()) =
                                    Some(AuditHead {
                                        seq: last.seq,
                                        hash: last.hash.clone(),
                                    });
                            }
                        }
                        Err(_) => {
                            if let Some(cache) = &self.cache {
                                for op in &ops {
                                    cache.invalidate(op_key(op));
                                }
                            }
                        }
                    }
                    replies.push(Reply::Audited(reply, outcome));
                }
            }
        }
        for reply in replies {
            match reply {
                Reply::Commit(tx, outcome) => {
                    let _ = tx.send(outcome);
                }
                Reply::Audit(tx, outcome) => {
                    let _ = tx.send(outcome);
                }
                Reply::Audited(tx, outcome) => {
                    let _ = tx.send(outcome);
                }
            }
        }
    }

    /// Applies one caller's batch, all or nothing.
    fn apply_batch(&self, ops: &[Op]) -> Result<()> {
        // One statement is atomic by itself, and a failed condition writes
        // nothing: no savepoint needed.
        if let [op] = ops {
            return self.apply(op);
        }
        self.exec("SAVEPOINT zafe_batch")
            .map_err(|e| backend_error("commit: savepoint", &e))?;
        for op in ops {
            if let Err(e) = self.apply(op) {
                let undo = self
                    .exec("ROLLBACK TO zafe_batch")
                    .and_then(|_| self.exec("RELEASE zafe_batch"));
                if let Err(undo) = undo {
                    // Part of the batch may still be in the transaction:
                    // give up the whole cycle rather than commit half of it.
                    tracing::warn!(error = %describe(&undo), "SQLite savepoint rollback failed");
                    let _ = self.exec("ROLLBACK");
                }
                return Err(e);
            }
        }
        self.exec("RELEASE zafe_batch")
            .map_err(|e| backend_error("commit: release", &e))?;
        Ok(())
    }

    fn apply(&self, op: &Op) -> Result<()> {
        let held = match op {
            Op::Put { entry, condition } => {
                self.put(&entry.key, &entry.value, entry.generation, *condition)
            }
            Op::Delete { key, condition } => self.delete(key, *condition),
        };
        match held {
            Ok(true) => Ok(()),
            Ok(false) => Err(StorageError::Conflict {
                key: op_key(op).to_string(),
            }),
            Err(e) => Err(backend_error("commit", &e)),
        }
    }

    fn put(
        &self,
        key: &str,
        value: &[u8],
        generation: i64,
        condition: Condition,
    ) -> rusqlite::Result<bool> {
        let key = key.as_bytes();
        match condition {
            Condition::Any => {
                self.conn
                    .prepare_cached(
                        "INSERT INTO zafe_entries (key, value, generation) VALUES (?1, ?2, ?3) \
                         ON CONFLICT (key) DO UPDATE \
                         SET value = excluded.value, generation = excluded.generation",
                    )?
                    .execute(params![key, value, generation])?;
                Ok(true)
            }
            Condition::Absent => Ok(self
                .conn
                .prepare_cached(
                    "INSERT INTO zafe_entries (key, value, generation) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (key) DO NOTHING",
                )?
                .execute(params![key, value, generation])?
                == 1),
            Condition::Generation(expected) => Ok(self
                .conn
                .prepare_cached(
                    "UPDATE zafe_entries SET value = ?2, generation = ?3 \
                     WHERE key = ?1 AND generation = ?4",
                )?
                .execute(params![key, value, generation, expected])?
                == 1),
        }
    }

    fn delete(&self, key: &str, condition: Condition) -> rusqlite::Result<bool> {
        let key = key.as_bytes();
        match condition {
            Condition::Any => {
                self.conn
                    .prepare_cached("DELETE FROM zafe_entries WHERE key = ?1")?
                    .execute(params![key])?;
                Ok(true)
            }
            Condition::Generation(expected) => Ok(self
                .conn
                .prepare_cached("DELETE FROM zafe_entries WHERE key = ?1 AND generation = ?2")?
                .execute(params![key, expected])?
                == 1),
            // Asserts absence; the write lock is held, so nobody can insert
            // the key before this transaction commits.
            Condition::Absent => Ok(!self
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM zafe_entries WHERE key = ?1)")?
                .query_row(params![key], |r| r.get::<_, bool>(0))?),
        }
    }

    /// Inserts linked rows and moves the head to the last one.
    fn insert_audit(&self, rows: &[AuditRow]) -> rusqlite::Result<()> {
        let Some(last) = rows.last() else {
            return Ok(());
        };
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO zafe_audit (seq, time_us, prev_hash, hash, mac, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for r in rows {
            insert.execute(params![
                r.seq,
                r.time_us,
                r.prev_hash,
                r.hash,
                r.mac,
                r.body
            ])?;
        }
        self.conn
            .prepare_cached("UPDATE zafe_audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
            .execute(params![last.seq, last.hash])?;
        Ok(())
    }

    /// Applies one caller's ops and appends its entries, linked onto the
    /// head as it is now, all in one savepoint: both or neither.
    fn apply_audited(
        &self,
        ops: &[Op],
        drafts: &[AuditDraft],
        link: Linker<'_>,
    ) -> Result<Vec<AuditRow>> {
        self.exec("SAVEPOINT zafe_audited")
            .map_err(|e| backend_error("commit: savepoint", &e))?;
        let result = (|| -> Result<Vec<AuditRow>> {
            for op in ops {
                self.apply(op)?;
            }
            let audit = |e: rusqlite::Error| backend_error("audit append", &e);
            let head = self.read_head().map_err(audit)?;
            let rows = link_rows(head.seq, &head.hash, drafts.iter().cloned(), link);
            self.insert_audit(&rows).map_err(audit)?;
            self.exec("RELEASE zafe_audited")
                .map_err(|e| backend_error("commit: release", &e))?;
            Ok(rows)
        })();
        if result.is_err() && !self.conn.is_autocommit() {
            let undo = self
                .exec("ROLLBACK TO zafe_audited")
                .and_then(|_| self.exec("RELEASE zafe_audited"));
            if let Err(undo) = undo {
                // Part of it may still be in the transaction: give up the
                // whole cycle rather than commit half of it.
                tracing::warn!(error = %describe(&undo), "SQLite savepoint rollback failed");
                let _ = self.exec("ROLLBACK");
            }
        }
        result
    }

    /// Stores `rows` if they were linked onto the current head.
    fn append_audit(&self, expect: Option<AuditHead>, rows: Vec<AuditRow>) -> AuditOutcome {
        let head = match self.read_head() {
            Ok(h) => h,
            Err(e) => return AuditOutcome::Failed(backend_error("audit append", &e)),
        };
        let linked = expect.as_ref() == Some(&head)
            && rows
                .first()
                .is_some_and(|r| r.seq == head.seq + 1 && r.prev_hash == head.hash)
            && rows
                .windows(2)
                .all(|w| w[1].seq == w[0].seq + 1 && w[1].prev_hash == w[0].hash);
        if !linked {
            return AuditOutcome::Moved(head);
        }
        let stored = (|| -> rusqlite::Result<()> {
            self.exec("SAVEPOINT zafe_audit")?;
            self.insert_audit(&rows)?;
            self.exec("RELEASE zafe_audit")?;
            Ok(())
        })();
        match stored {
            Ok(()) => AuditOutcome::Stored(rows),
            Err(e) => {
                if !self.conn.is_autocommit() {
                    let undo = self
                        .exec("ROLLBACK TO zafe_audit")
                        .and_then(|_| self.exec("RELEASE zafe_audit"));
                    if let Err(undo) = undo {
                        tracing::warn!(error = %describe(&undo), "SQLite savepoint rollback failed");
                        let _ = self.exec("ROLLBACK");
                    }
                }
                AuditOutcome::Failed(backend_error("audit append", &e))
            }
        }
    }
}

enum Reply {
    Commit(oneshot::Sender<Result<()>>, Result<()>),
    Audit(oneshot::Sender<AuditOutcome>, AuditOutcome),
    Audited(
        oneshot::Sender<Result<Vec<AuditRow>>>,
        Result<Vec<AuditRow>>,
    ),
}

fn op_key(op: &Op) -> &str {
    match op {
        Op::Put { entry, .. } => &entry.key,
        Op::Delete { key, .. } => key,
    }
}

fn error_copy(e: &StorageError) -> StorageError {
    match e {
        StorageError::Conflict { key } => StorageError::Conflict { key: key.clone() },
        StorageError::Backend(m) => StorageError::Backend(m.clone()),
        StorageError::Migration(m) => StorageError::Migration(m.clone()),
        StorageError::Config(m) => StorageError::Config(m.clone()),
        StorageError::Restore(m) => StorageError::Restore(m.clone()),
    }
}

fn fail(job: Job, error: &StorageError) {
    match job {
        Job::Commit { reply, .. } => {
            let _ = reply.send(Err(error_copy(error)));
        }
        Job::Audit { reply, .. } => {
            let _ = reply.send(AuditOutcome::Failed(error_copy(error)));
        }
        Job::Audited { reply, .. } => {
            let _ = reply.send(Err(error_copy(error)));
        }
    }
}
