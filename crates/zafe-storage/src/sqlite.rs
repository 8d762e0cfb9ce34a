//! The embedded default backend: one SQLite file.
//!
//! Writes go through a pool of exactly one connection, and every commit is a
//! `BEGIN IMMEDIATE` transaction. With a single writer, concurrent commits in
//! this process queue on the pool instead of racing for SQLite's write lock
//! (where a deferred transaction that upgrades from read to write can fail
//! with `SQLITE_BUSY` without ever calling the busy handler); `IMMEDIATE`
//! takes the write lock up front, so even another process on the same file
//! only ever waits, within `busy_timeout`. Because the write lock is held for
//! the whole transaction, conditions can be checked with plain reads.
//!
//! Reads go through a separate read-only pool. In WAL mode readers never block
//! the writer and see the last committed state.
//!
//! For a file, [`Backend::commit`] and audit appends do not use that pool:
//! they go to the group-commit writer thread (the private `sqlite_writer` module),
//! which runs every commit queued meanwhile in one transaction with one
//! fsync, each caller's batch atomic on its own. The pool stays for
//! migrations and the rare audit maintenance writes (checkpoints, sweeps).
//!
//! Reads are served from a bounded cache of stored entries
//! (the private `cache` module, ciphertext only) when they can be, kept exact by every
//! commit of this backend; see [`SqliteOptions`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use crate::cache::{CacheConfig, EntryCache, Lookup};
use crate::notices::{self, Notice, Notices};
use crate::sql::{
    backend_error, key_from_bytes, migration_error, prefix_upper_bound, scan_start, sql_limit,
};
use crate::sqlite_writer::GroupWriter;
use crate::{Backend, Condition, Entry, Op, Result, StorageError, audit};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// How long a statement waits for a lock held by another connection (another
/// process on the same file, or a checkpoint) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Read connections. Reads are short; a few let listings and gets proceed in
/// parallel with each other and with the writer.
const READ_CONNECTIONS: u32 = 4;

/// Distinguishes the in-memory databases of one process from each other.
static MEMORY_DB_SEQ: AtomicU64 = AtomicU64::new(0);

/// Tuning for [`SqliteBackend::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// The entry cache in front of reads; [`CacheConfig::OFF`] (the default
    /// here; the server turns it on from its configuration) turns it off.
    /// It is exact for everything this backend commits. Commits by another
    /// process on the same file clear it, but only when the writer thread
    /// notices them (at its next commit, or within 100 ms while idle), so
    /// until then that process's writes may be missed: with several
    /// processes on one file and reads that must see each other's writes at
    /// once, leave it off.
    pub cache: CacheConfig,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            cache: CacheConfig::OFF,
        }
    }
}

/// [`Backend`] over a SQLite database file (or an in-memory database).
pub struct SqliteBackend {
    /// Exactly one connection: see the module documentation.
    writer: SqlitePool,
    /// For a file: the group-commit writer thread, which takes every commit
    /// and audit append. `None` in memory, where `writer` commits.
    group: Option<GroupWriter>,
    /// Stored entries (ciphertext), kept exact by every commit.
    cache: Option<Arc<EntryCache>>,
    /// Read-only connections for a file; the writer pool again in memory.
    reader: SqlitePool,
    /// For [`SqliteBackend::memory`]: a connection outside the pools that
    /// keeps the shared in-memory database alive. SQLite frees an in-memory
    /// database when its last connection closes, and a pool may close and
    /// replace a connection it considers broken; without this, that would
    /// silently swap in an empty database. Never used after opening; the
    /// mutex only makes the field `Sync`.
    _memory_anchor: Option<std::sync::Mutex<SqliteConnection>>,
    /// Every commit is announced here, after it succeeded (one process: another process on the
    /// same file is not announced; several nodes need PostgreSQL).
    notices: Notices,
}

impl SqliteBackend {
    /// [`Backend::commit_audited`] without announcing it.
    async fn commit_audited_unannounced(
        &self,
        ops: Vec<Op>,
        drafts: Vec<audit::AuditDraft>,
        link: audit::SharedLinker,
    ) -> Result<Vec<audit::AuditRow>> {
        // With a writer thread, the ops and the entries are one job of its
        // group commit: one savepoint, one fsync shared with other callers.
        if let Some(group) = &self.group {
            return group.commit_audited(ops, drafts, link).await;
        }
        // In memory: one transaction, in its own task for the same reason
        // as `commit` (the cache must follow even if the caller goes away).
        let writer = self.writer.clone();
        let cache = self.cache.clone();
        tokio::spawn(async move {
            let result = commit_audited_with(&writer, &ops, drafts, &*link).await;
            if let Some(cache) = cache {
                cache.follow(ops, result.is_ok());
            }
            result
        })
        .await
        .map_err(|_| StorageError::Backend("commit: the storage task stopped".into()))?
    }

    /// Commits without announcing it (the caller does, once it succeeded).
    async fn commit_unannounced(&self, ops: Vec<Op>) -> Result<()> {
        if let Some(group) = &self.group {
            return group.commit(ops).await;
        }
        let Some(cache) = self.cache.clone() else {
            return commit_with(&self.writer, &ops).await;
        };
        // In its own task, so that the cache is brought up to date even if
        // the caller gives up waiting: a commit that completes after its
        // caller went away must not leave the old value cached.
        let writer = self.writer.clone();
        tokio::spawn(async move {
            let result = commit_with(&writer, &ops).await;
            cache.follow(ops, result.is_ok());
            result
        })
        .await
        .map_err(|_| StorageError::Backend("commit: the storage task stopped".into()))?
    }

    /// Opens (creating if needed) the database file at `path` and brings its
    /// schema up to date. The parent directory must already exist.
    ///
    /// A new file is created with mode 0600. An existing file (or its `-wal`
    /// / `-shm` companions) that group or others can access is refused with
    /// [`StorageError::Config`]: whoever can read it can copy the ciphertext,
    /// and whoever can write it can roll it back.
    ///
    /// No entry cache: see [`SqliteBackend::open_with`].
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// [`SqliteBackend::open`] with explicit options (the entry cache).
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self> {
        prepare_db_file(path)?;

        let filename = sqlite_filename(path);
        let writer_options = SqliteConnectOptions::new()
            .filename(&filename)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: in WAL mode, every commit fsyncs the log before returning,
            // so an acknowledged write survives power loss. NORMAL would only
            // protect against corruption, not against losing the last commits.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // Commits queue here behind each other, each taking one fsync.
            .acquire_timeout(Duration::from_secs(30))
            // No reason to recycle the one connection; keeping it open also
            // keeps the WAL file in place for the read-only connections.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(writer_options)
            .await
            .map_err(|e| open_error(path, e))?;

        MIGRATOR.run(&writer).await.map_err(migration_error)?;

        // Not `journal_mode`: a read-only connection cannot change it, and
        // WAL is a property of the file, already set by the writer.
        let reader_options = SqliteConnectOptions::new()
            .filename(&filename)
            .read_only(true)
            .busy_timeout(BUSY_TIMEOUT)
            // 1 MiB of pages per read connection (SQLite's default is 2):
            // memory is bounded by configuration, not by the database's
            // size, and the entry cache answers most reads anyway.
            .pragma("cache_size", "-1024");
        let reader = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(10))
            // sqlx would otherwise ping the connection's worker thread
            // before every query: a second thread hop per read. A broken
            // connection fails its query instead, and the pool replaces it.
            .test_before_acquire(false)
            .connect_with(reader_options)
            .await
            .map_err(|e| open_error(path, e))?;

        let cache = EntryCache::new(options.cache).map(Arc::new);
        let group = GroupWriter::start(&filename, BUSY_TIMEOUT, cache.clone()).await?;

        tracing::debug!(path = %path.display(), "opened SQLite storage");
        Ok(Self {
            writer,
            group: Some(group),
            cache,
            reader,
            _memory_anchor: None,
            notices: Notices::default(),
        })
    }

    /// A fresh, empty in-memory database, private to this backend and gone
    /// when it is dropped. For `zafe server --dev` and tests.
    pub async fn memory() -> Result<Self> {
        // A uniquely named shared-cache database: every connection opened
        // with this name in this process sees the same data.
        let name = format!(
            "zafe-memory-{}-{}",
            std::process::id(),
            MEMORY_DB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let options = SqliteConnectOptions::new()
            .filename(&name)
            .in_memory(true)
            .shared_cache(true)
            .busy_timeout(BUSY_TIMEOUT);

        let anchor = SqliteConnection::connect_with(&options)
            .await
            .map_err(|e| backend_error("opening in-memory database", e))?;

        // One connection for reads and writes alike: shared-cache connections
        // lock whole tables against each other and report SQLITE_LOCKED,
        // which the busy timeout does not cover. Memory is fast enough that
        // serializing reads costs nothing worth that.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| backend_error("opening in-memory database", e))?;

        MIGRATOR.run(&pool).await.map_err(migration_error)?;

        Ok(Self {
            writer: pool.clone(),
            group: None,
            cache: EntryCache::new(CacheConfig::default()).map(Arc::new),
            reader: pool,
            _memory_anchor: Some(std::sync::Mutex::new(anchor)),
            notices: Notices::default(),
        })
    }

    /// Closes all connections, waiting for in-flight statements. Dropping the
    /// backend also closes them, but in the background.
    pub async fn close(&self) {
        if let Some(group) = &self.group {
            group.close().await;
        }
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn get_uncached(&self, key: &str) -> Result<Option<Entry>> {
        let row: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT value, generation FROM zafe_entries WHERE key = ?1")
                .bind(key.as_bytes())
                .fetch_optional(&self.reader)
                .await
                .map_err(|e| backend_error("get", e))?;
        Ok(row.map(|(value, generation)| Entry {
            key: key.to_string(),
            value,
            generation,
        }))
    }
}

#[async_trait]
impl Backend for SqliteBackend {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let Some(cache) = &self.cache else {
            return self.get_uncached(key).await;
        };
        match cache.lookup(key) {
            Lookup::Hit(entry) => Ok(Some(entry)),
            Lookup::Absent => Ok(None),
            Lookup::Miss(ticket) => {
                let found = self.get_uncached(key).await?;
                cache.fill(ticket, key, found.as_ref());
                Ok(found)
            }
        }
    }

    async fn keys(&self, prefix: &str, start_at: &str, limit: usize) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = scan_start(prefix.as_bytes(), start_at.as_bytes());
        let rows: Vec<Vec<u8>> = match prefix_upper_bound(prefix.as_bytes()) {
            Some(upper) => {
                sqlx::query_scalar(
                    "SELECT key FROM zafe_entries WHERE key >= ?1 AND key < ?2 \
                     ORDER BY key LIMIT ?3",
                )
                .bind(start)
                .bind(upper)
                .bind(sql_limit(limit))
                .fetch_all(&self.reader)
                .await
            }
            None => {
                sqlx::query_scalar(
                    "SELECT key FROM zafe_entries WHERE key >= ?1 ORDER BY key LIMIT ?2",
                )
                .bind(start)
                .bind(sql_limit(limit))
                .fetch_all(&self.reader)
                .await
            }
        }
        .map_err(|e| backend_error("keys", e))?;
        rows.into_iter().map(key_from_bytes).collect()
    }

    async fn commit(&self, ops: Vec<Op>) -> Result<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let keys = notices::keys_of(&ops);
        self.commit_unannounced(ops).await?;
        self.notices.send(Notice::Keys(keys));
        Ok(())
    }

    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    async fn publish(&self, topic: &str, payload: &str) -> Result<()> {
        // One process: the subscribers are all here.
        self.notices.send(Notice::Message {
            topic: topic.to_string(),
            payload: payload.to_string(),
        });
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(|e| backend_error("ping", e))?;
        Ok(())
    }

    // The audit log: appends and sweeps on the single writer, in
    // `BEGIN IMMEDIATE` transactions (see `crate::audit`).
    async fn audit_append(
        &self,
        drafts: Vec<audit::AuditDraft>,
        link: audit::Linker<'_>,
    ) -> Result<Vec<audit::AuditRow>> {
        // With a writer thread, appends share its transactions (and
        // fsyncs) with commits.
        if let Some(group) = &self.group {
            return group.audit_append(drafts, link).await;
        }
        audit::sqlite::append(&self.writer, drafts, link).await
    }

    async fn commit_audited(
        &self,
        ops: Vec<Op>,
        drafts: Vec<audit::AuditDraft>,
        link: audit::SharedLinker,
    ) -> Result<Vec<audit::AuditRow>> {
        let keys = notices::keys_of(&ops);
        let rows = self.commit_audited_unannounced(ops, drafts, link).await?;
        if !keys.is_empty() {
            self.notices.send(Notice::Keys(keys));
        }
        Ok(rows)
    }

    async fn audit_head(&self) -> Result<audit::AuditHead> {
        audit::sqlite::head(&self.reader).await
    }

    async fn audit_read(&self, from_seq: i64, limit: usize) -> Result<Vec<audit::AuditRow>> {
        audit::sqlite::read(&self.reader, from_seq, limit).await
    }

    async fn audit_seq_at(&self, time_us: i64, bound: audit::TimeBound) -> Result<Option<i64>> {
        audit::sqlite::seq_at(&self.reader, time_us, bound).await
    }

    async fn audit_sweep(&self, through_seq: i64, limit: usize) -> Result<u64> {
        audit::sqlite::sweep(&self.writer, through_seq, limit).await
    }

    async fn audit_checkpoint_append(&self, checkpoint: audit::AuditCheckpoint) -> Result<()> {
        audit::sqlite::checkpoint_append(&self.writer, checkpoint).await
    }

    async fn audit_checkpoints(
        &self,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<audit::AuditCheckpoint>> {
        audit::sqlite::checkpoints(&self.reader, after, limit).await
    }

    async fn snapshot(
        &self,
        out: tokio::sync::mpsc::Sender<zafe_core::backup::Frame>,
    ) -> Result<()> {
        crate::snapshot::sqlite::snapshot(&self.reader, out).await
    }

    async fn restore(
        &self,
        input: tokio::sync::mpsc::Receiver<zafe_core::backup::Frame>,
        options: &crate::snapshot::RestoreOptions,
    ) -> Result<crate::snapshot::RestoreSummary> {
        let result = crate::snapshot::sqlite::restore(&self.writer, input, options).await;
        // Whatever happened, nothing cached may outlive it (the writer
        // thread also sees the new data version and forgets the audit head).
        if let Some(cache) = &self.cache {
            cache.clear();
        }
        if result.is_ok() {
            self.notices.send(Notice::Lost);
            self.notices.send(Notice::Resumed);
        }
        result
    }
}

/// One `BEGIN IMMEDIATE` transaction on the writer pool (in memory).
async fn commit_with(writer: &SqlitePool, ops: &[Op]) -> Result<()> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| backend_error("commit: begin", e))?;
    for op in ops {
        if let Err(e) = apply(&mut tx, op).await {
            // Rolled back on drop as well, but explicitly here so that the
            // connection is clean before the next commit takes it.
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = %crate::sql::describe(&rb), "SQLite rollback failed");
            }
            return Err(e);
        }
    }
    tx.commit().await.map_err(|e| backend_error("commit", e))
}

/// One `BEGIN IMMEDIATE` transaction on the writer pool (in memory) that
/// applies `ops` and appends `drafts`, or does neither.
async fn commit_audited_with(
    writer: &SqlitePool,
    ops: &[Op],
    drafts: Vec<audit::AuditDraft>,
    link: audit::Linker<'_>,
) -> Result<Vec<audit::AuditRow>> {
    let mut tx = writer
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| backend_error("commit: begin", e))?;
    let mut result = Ok(());
    for op in ops {
        result = apply(&mut tx, op).await;
        if result.is_err() {
            break;
        }
    }
    let rows = match result {
        Ok(()) => audit::sqlite::append_in(&mut tx, drafts, link)
            .await
            .map_err(|e| backend_error("audit append", e)),
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => {
            tx.commit().await.map_err(|e| backend_error("commit", e))?;
            Ok(rows)
        }
        Err(e) => {
            if let Err(rb) = tx.rollback().await {
                tracing::warn!(error = %crate::sql::describe(&rb), "SQLite rollback failed");
            }
            Err(e)
        }
    }
}

/// Applies one op inside the commit's transaction, or reports the conflict.
async fn apply(conn: &mut SqliteConnection, op: &Op) -> Result<()> {
    let (key, held) = match op {
        Op::Put { entry, condition } => (&entry.key, put(conn, entry, *condition).await),
        Op::Delete { key, condition } => (key, delete(conn, key, *condition).await),
    };
    match held {
        Ok(true) => Ok(()),
        Ok(false) => Err(StorageError::Conflict { key: key.clone() }),
        Err(e) => Err(backend_error("commit", e)),
    }
}

/// Writes `entry` if `condition` holds; `Ok(false)` if it does not.
async fn put(
    conn: &mut SqliteConnection,
    entry: &Entry,
    condition: Condition,
) -> sqlx::Result<bool> {
    let key = entry.key.as_bytes();
    let value = entry.value.as_slice();
    let rows = match condition {
        Condition::Any => {
            sqlx::query(
                "INSERT INTO zafe_entries (key, value, generation) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE \
                 SET value = excluded.value, generation = excluded.generation",
            )
            .bind(key)
            .bind(value)
            .bind(entry.generation)
            .execute(&mut *conn)
            .await?;
            return Ok(true);
        }
        Condition::Absent => {
            sqlx::query(
                "INSERT INTO zafe_entries (key, value, generation) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .bind(value)
            .bind(entry.generation)
            .execute(&mut *conn)
            .await?
        }
        Condition::Generation(expected) => {
            sqlx::query(
                "UPDATE zafe_entries SET value = ?2, generation = ?3 \
                 WHERE key = ?1 AND generation = ?4",
            )
            .bind(key)
            .bind(value)
            .bind(entry.generation)
            .bind(expected)
            .execute(&mut *conn)
            .await?
        }
    };
    Ok(rows.rows_affected() == 1)
}

/// Deletes `key` if `condition` holds; `Ok(false)` if it does not.
async fn delete(
    conn: &mut SqliteConnection,
    key: &str,
    condition: Condition,
) -> sqlx::Result<bool> {
    let key = key.as_bytes();
    match condition {
        Condition::Any => {
            sqlx::query("DELETE FROM zafe_entries WHERE key = ?1")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
        Condition::Generation(expected) => {
            let rows = sqlx::query("DELETE FROM zafe_entries WHERE key = ?1 AND generation = ?2")
                .bind(key)
                .bind(expected)
                .execute(&mut *conn)
                .await?;
            Ok(rows.rows_affected() == 1)
        }
        Condition::Absent => {
            // Deleting a key that must not exist writes nothing but asserts
            // its absence. A plain read suffices: this transaction holds the
            // database's write lock, so nobody can insert the key before we
            // commit.
            let present: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM zafe_entries WHERE key = ?1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
            Ok(!present)
        }
    }
}

/// Errors while opening name the file, since that is what the operator must
/// fix ("file is not a database", "unable to open database file").
fn open_error(path: &Path, err: sqlx::Error) -> StorageError {
    backend_error(&format!("opening {}", path.display()), err)
}

/// What to hand SQLite as the file name. sqlx opens with `SQLITE_OPEN_URI`,
/// under which a name starting with `file:` is parsed as a URI; a relative
/// path that happens to look like one gets a `./` so it stays a path.
fn sqlite_filename(path: &Path) -> PathBuf {
    if path.is_relative() && path.to_string_lossy().starts_with("file:") {
        Path::new(".").join(path)
    } else {
        path.to_path_buf()
    }
}

/// Creates the database file with mode 0600 if it does not exist, then
/// checks that the file and any companions SQLite keeps next to it are
/// private to their owner.
///
/// The file is created here rather than by SQLite because SQLite creates it
/// with 0644 minus the umask; once the main file is 0600, SQLite gives the
/// `-wal` and `-shm` files it creates the same mode.
#[cfg(unix)]
fn prepare_db_file(path: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;

    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(StorageError::Config(format!(
                "cannot create database file {}: {e}",
                path.display()
            )));
        }
    }

    check_private(path, true)?;
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut companion = path.as_os_str().to_owned();
        companion.push(suffix);
        check_private(Path::new(&companion), false)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn prepare_db_file(_path: &Path) -> Result<()> {
    // No POSIX modes to set or check; rely on the directory's ACLs.
    Ok(())
}

/// Refuses `path` if group or others have any access to it. A missing file
/// is an error only if `required`.
#[cfg(unix)]
fn check_private(path: &Path, required: bool) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StorageError::Config(format!(
                "cannot inspect database file {}: {e}",
                path.display()
            )));
        }
    };
    if !metadata.is_file() {
        return Err(StorageError::Config(format!(
            "database path {} is not a regular file",
            path.display()
        )));
    }
    let mode = metadata.permissions().mode() & 0o777;
    // Not only read access: a group-writable file can be rolled back by the
    // group. Either way the fix is the same.
    if mode & 0o077 != 0 {
        return Err(StorageError::Config(format!(
            "database file {} has mode {mode:04o}, which gives group or others access to it; \
             restrict it with `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    Ok(())
}
