//! The shared backend: several stateless Zafe nodes over one PostgreSQL
//! database.
//!
//! Commits run at PostgreSQL's default isolation, READ COMMITTED, where a
//! "check, then write" pair of statements is a race between nodes. So no
//! condition is ever checked by a separate read: each one is folded into the
//! statement that writes, and the number of rows it touched says whether the
//! condition held. Those statements are safe under concurrency because
//! PostgreSQL serializes writers of the same row (and of the same unique index
//! entry) and re-evaluates the `WHERE` clause against the newest committed row
//! after waiting:
//!
//! * `Absent` put: `INSERT .. ON CONFLICT DO NOTHING`. A concurrent inserter
//!   of the same key makes it wait for that transaction; if it commits, the
//!   insert does nothing and we report a conflict.
//! * `Generation(g)` put or delete: `UPDATE`/`DELETE .. WHERE generation = g`.
//!   If another transaction changed the row first, the re-check fails and
//!   zero rows are touched.
//! * `Any`: an upsert or an unconditional delete.
//!
//! A conflict rolls back the whole transaction.
//!
//! Every commit's keys are announced with `pg_notify` *after* it committed, by one task per
//! node that batches whatever queued up meanwhile into one short transaction
//! (`synchronous_commit = off`), and every node keeps one `LISTEN` connection that turns
//! notifications into [`Notice`]s (see [`crate::notices`]). Not inside the committing
//! transaction: PostgreSQL serialises notifying transactions on one database-wide lock held
//! through their WAL flush, which measured 6,365 updates a second falling to 474 (see
//! `bench/RESULTS.md`); batched after commit, a burst of commits costs one notification. The
//! price is a window: a node that dies between a commit and its announcement leaves the others
//! uninformed, which is why the server also re-reads what it holds every second.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};

use crate::notices::{self, BACKSTOP, Notice, Notices};

/// What a node announces to the others, queued for its announcer task.
enum Announcement {
    /// The keys of a commit that succeeded.
    Keys(Arc<[String]>),
    /// A published message, encoded.
    Message(String),
}

/// The most announcements sent in one notifying transaction.
const MAX_BATCH: usize = 1024;
use crate::sql::{
    backend_error, describe, key_from_bytes, migration_error, prefix_upper_bound, scan_start,
    sql_limit,
};
use crate::{Backend, Condition, Entry, Op, Result, StorageError, audit};

/// The notification channel of committed keys.
const KEYS_CHANNEL: &str = "zafe_keys";
/// The notification channel of published messages.
const MESSAGES_CHANNEL: &str = "zafe_messages";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// Per node. Several nodes share the server's `max_connections` (100 by
/// default), so this stays modest.
const MAX_CONNECTIONS: u32 = 16;

/// A request that cannot get a connection quickly should fail rather than
/// queue behind an unreachable database.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// [`Backend`] over a PostgreSQL database.
pub struct PostgresBackend {
    pool: PgPool,
    notices: Notices,
    /// Where commits and messages queue for the announcer task.
    announcer: tokio::sync::mpsc::UnboundedSender<Announcement>,
    /// The task that listens for other nodes' notifications; stopped with the backend.
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PostgresBackend {
    /// Connects to `url` (`postgres://user:password@host:port/database?...`),
    /// checks that the database answers, and brings its schema up to date.
    ///
    /// Several nodes may call this at once: sqlx serializes migrations with
    /// an advisory lock.
    pub async fn connect(url: &str) -> Result<Self> {
        // The URL may hold a password: it never goes into an error message.
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StorageError::Config(format!("invalid PostgreSQL URL: {}", describe(&e))))?
            .application_name("zafe");
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            // Establishes one connection now, so a wrong host or password
            // fails at startup rather than on the first request.
            .connect_with(options)
            .await
            .map_err(connect_error)?;

        MIGRATOR.run(&pool).await.map_err(migration_error)?;

        // Listening before the node serves: no commit after this point goes unannounced.
        let listener = listen(&pool).await.map_err(connect_error)?;
        let notices = Notices::default();
        let listener = tokio::spawn(follow(pool.clone(), listener, notices.clone()));
        let (announcer, queue) = tokio::sync::mpsc::unbounded_channel();
        // Ends when the backend (the sender) is dropped.
        tokio::spawn(announce(pool.clone(), queue));
        tracing::debug!("connected to PostgreSQL storage");
        Ok(Self {
            pool,
            notices,
            announcer,
            listener,
        })
    }

    /// Closes all connections, waiting for in-flight statements. Dropping the
    /// backend also closes them, but in the background.
    pub async fn close(&self) {
        self.listener.abort();
        self.pool.close().await;
    }
}

/// `url` with its database name replaced by `database`, keeping user, password, host, port and
/// query parameters: the URL of another database on the same server (tests make and drop one
/// per test this way).
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let authority_end = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{database}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[async_trait]
impl Backend for PostgresBackend {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let row: Option<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT value, generation FROM zafe_entries WHERE key = $1")
                .bind(key.as_bytes())
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| backend_error("get", e))?;
        Ok(row.map(|(value, generation)| Entry {
            key: key.to_string(),
            value,
            generation,
        }))
    }

    async fn keys(&self, prefix: &str, start_at: &str, limit: usize) -> Result<Vec<String>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = scan_start(prefix.as_bytes(), start_at.as_bytes());
        let rows: Vec<Vec<u8>> = match prefix_upper_bound(prefix.as_bytes()) {
            Some(upper) => {
                sqlx::query_scalar(
                    "SELECT key FROM zafe_entries WHERE key >= $1 AND key < $2 \
                     ORDER BY key LIMIT $3",
                )
                .bind(start)
                .bind(upper)
                .bind(sql_limit(limit))
                .fetch_all(&self.pool)
                .await
            }
            None => {
                sqlx::query_scalar(
                    "SELECT key FROM zafe_entries WHERE key >= $1 ORDER BY key LIMIT $2",
                )
                .bind(start)
                .bind(sql_limit(limit))
                .fetch_all(&self.pool)
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
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| backend_error("commit: begin", e))?;
        for op in &ops {
            if let Err(e) = apply(&mut tx, op).await {
                // Rolled back on drop as well, but explicitly here so that the
                // connection goes back to the pool clean.
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %describe(&rb), "PostgreSQL rollback failed");
                }
                return Err(e);
            }
        }
        // A commit that fails here (connection lost) leaves the outcome
        // unknown to us; PostgreSQL has either applied all ops or none.
        tx.commit().await.map_err(|e| backend_error("commit", e))?;
        // Every node hears it, this one too, through its LISTEN connection.
        let _ = self
            .announcer
            .send(Announcement::Keys(notices::keys_of(&ops)));
        Ok(())
    }

    async fn commit_audited(
        &self,
        ops: Vec<Op>,
        drafts: Vec<audit::AuditDraft>,
        link: audit::SharedLinker,
    ) -> Result<Vec<audit::AuditRow>> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| backend_error("commit: begin", e))?;
        let mut result = Ok(());
        for op in &ops {
            result = apply(&mut tx, op).await;
            if result.is_err() {
                break;
            }
        }
        // The head row is locked last, after every row of the ops: appends
        // from every node serialize on it for as short a time as possible,
        // and no transaction waits for an entry row while holding the head.
        let rows = match result {
            Ok(()) => audit::postgres::append_in(&mut tx, drafts, &*link)
                .await
                .map_err(|e| backend_error("audit append", e)),
            Err(e) => Err(e),
        };
        match rows {
            Ok(rows) => {
                tx.commit().await.map_err(|e| backend_error("commit", e))?;
                if !ops.is_empty() {
                    let _ = self
                        .announcer
                        .send(Announcement::Keys(notices::keys_of(&ops)));
                }
                Ok(rows)
            }
            Err(e) => {
                if let Err(rb) = tx.rollback().await {
                    tracing::warn!(error = %describe(&rb), "PostgreSQL rollback failed");
                }
                Err(e)
            }
        }
    }

    fn notices(&self) -> tokio::sync::broadcast::Receiver<Notice> {
        self.notices.subscribe()
    }

    async fn publish(&self, topic: &str, payload: &str) -> Result<()> {
        let text = notices::encode_message(topic, payload).ok_or_else(|| {
            StorageError::Backend(format!("publish: the message on {topic:?} is too large"))
        })?;
        self.announcer
            .send(Announcement::Message(text))
            .map_err(|_| StorageError::Backend("publish: the announcer stopped".into()))
    }

    async fn snapshot(
        &self,
        out: tokio::sync::mpsc::Sender<zafe_core::backup::Frame>,
    ) -> Result<()> {
        crate::snapshot::postgres::snapshot(&self.pool, out).await
    }

    async fn restore(
        &self,
        input: tokio::sync::mpsc::Receiver<zafe_core::backup::Frame>,
        options: &crate::snapshot::RestoreOptions,
    ) -> Result<crate::snapshot::RestoreSummary> {
        crate::snapshot::postgres::restore(&self.pool, input, options).await
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(|e| backend_error("ping", e))?;
        Ok(())
    }

    // The audit log: appends lock the head row `FOR UPDATE`, so every node
    // appends after the last (see `crate::audit`).
    async fn audit_append(
        &self,
        drafts: Vec<audit::AuditDraft>,
        link: audit::Linker<'_>,
    ) -> Result<Vec<audit::AuditRow>> {
        audit::postgres::append(&self.pool, drafts, link).await
    }

    async fn audit_head(&self) -> Result<audit::AuditHead> {
        audit::postgres::head(&self.pool).await
    }

    async fn audit_read(&self, from_seq: i64, limit: usize) -> Result<Vec<audit::AuditRow>> {
        audit::postgres::read(&self.pool, from_seq, limit).await
    }

    async fn audit_seq_at(&self, time_us: i64, bound: audit::TimeBound) -> Result<Option<i64>> {
        audit::postgres::seq_at(&self.pool, time_us, bound).await
    }

    async fn audit_sweep(&self, through_seq: i64, limit: usize) -> Result<u64> {
        audit::postgres::sweep(&self.pool, through_seq, limit).await
    }

    async fn audit_checkpoint_append(&self, checkpoint: audit::AuditCheckpoint) -> Result<()> {
        audit::postgres::checkpoint_append(&self.pool, checkpoint).await
    }

    async fn audit_checkpoints(
        &self,
        after: (i64, i64),
        limit: usize,
    ) -> Result<Vec<audit::AuditCheckpoint>> {
        audit::postgres::checkpoints(&self.pool, after, limit).await
    }
}

/// A wrong password or database name is the operator's configuration to
/// fix; anything else (refused, timed out) may be the database's fault.
fn connect_error(err: sqlx::Error) -> StorageError {
    let message = format!("connecting to PostgreSQL: {}", describe(&err));
    match &err {
        // Class 28: invalid authorization; 3D000: no such database.
        sqlx::Error::Database(db)
            if db
                .code()
                .is_some_and(|code| code.starts_with("28") || code == "3D000") =>
        {
            StorageError::Config(message)
        }
        _ => StorageError::Backend(message),
    }
}

/// Applies one op inside the commit's transaction, or reports the conflict.
async fn apply(conn: &mut PgConnection, op: &Op) -> Result<()> {
    let (key, held) = match op {
        Op::Put { entry, condition } => (&entry.key, put(conn, entry, *condition).await),
        Op::Delete { key, condition } => (key, delete(conn, key, *condition).await),
    };
    match held {
        Ok(true) => Ok(()),
        Ok(false) => Err(StorageError::Conflict { key: key.clone() }),
        // Two commits that touch the same keys in different orders can
        // deadlock; PostgreSQL then aborts one of them. And a server whose
        // default isolation was raised to SERIALIZABLE reports some races as
        // serialization failures of a statement. Both mean "someone else changed this
        // concurrently, nothing was written": exactly a conflict, which the
        // caller already knows how to retry.
        Err(sqlx::Error::Database(db))
            if matches!(db.code().as_deref(), Some("40P01" | "40001")) =>
        {
            Err(StorageError::Conflict { key: key.clone() })
        }
        Err(e) => Err(backend_error("commit", e)),
    }
}

/// Writes `entry` if `condition` holds; `Ok(false)` if it does not.
async fn put(conn: &mut PgConnection, entry: &Entry, condition: Condition) -> sqlx::Result<bool> {
    let key = entry.key.as_bytes();
    let value = entry.value.as_slice();
    let rows = match condition {
        Condition::Any => {
            sqlx::query(
                "INSERT INTO zafe_entries (key, value, generation) VALUES ($1, $2, $3) \
                 ON CONFLICT (key) DO UPDATE \
                 SET value = EXCLUDED.value, generation = EXCLUDED.generation",
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
                "INSERT INTO zafe_entries (key, value, generation) VALUES ($1, $2, $3) \
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
                "UPDATE zafe_entries SET value = $2, generation = $3 \
                 WHERE key = $1 AND generation = $4",
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
async fn delete(conn: &mut PgConnection, key: &str, condition: Condition) -> sqlx::Result<bool> {
    let key = key.as_bytes();
    match condition {
        Condition::Any => {
            sqlx::query("DELETE FROM zafe_entries WHERE key = $1")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
        Condition::Generation(expected) => {
            let rows = sqlx::query("DELETE FROM zafe_entries WHERE key = $1 AND generation = $2")
                .bind(key)
                .bind(expected)
                .execute(&mut *conn)
                .await?;
            Ok(rows.rows_affected() == 1)
        }
        Condition::Absent => {
            // Deleting a key that must not exist writes nothing but asserts
            // its absence until commit. A plain SELECT would not: another node
            // could insert the key right after it, and two commits that each
            // assert one key absent while creating the other would both
            // succeed. Instead, claim the key's slot in the unique index with
            // a placeholder row (this waits for, or conflicts with, any
            // concurrent inserter, and blocks later ones until we finish) and
            // remove it again. No other transaction ever sees the placeholder.
            let inserted = sqlx::query(
                "INSERT INTO zafe_entries (key, value, generation) VALUES ($1, '', 0) \
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(key)
            .execute(&mut *conn)
            .await?;
            if inserted.rows_affected() == 0 {
                return Ok(false);
            }
            sqlx::query("DELETE FROM zafe_entries WHERE key = $1")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            Ok(true)
        }
    }
}

/// Sends what queues up, in batches: everything queued while the previous batch was being
/// sent goes out in one transaction, keys merged and split into notifications that fit.
async fn announce(pool: PgPool, mut queue: tokio::sync::mpsc::UnboundedReceiver<Announcement>) {
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut keys: Vec<String> = Vec::new();
        let mut payloads = Vec::new();
        for announcement in batch {
            match announcement {
                Announcement::Keys(k) => keys.extend(k.iter().cloned()),
                Announcement::Message(text) => payloads.push((MESSAGES_CHANNEL, text)),
            }
        }
        keys.sort();
        keys.dedup();
        payloads.extend(
            notices::encode_key_batches(&keys)
                .into_iter()
                .map(|text| (KEYS_CHANNEL, text)),
        );
        if let Err(e) = notify(&pool, &payloads).await {
            // The other nodes catch up by their periodic re-read.
            tracing::warn!(error = %describe(&e), "could not announce commits to the other nodes");
        }
    }
}

/// One short transaction of notifications. Nothing waits for its WAL flush: a notification lost
/// in a crash is lost like one sent over a dropped connection.
async fn notify(
    pool: &PgPool,
    payloads: &[(&str, String)],
) -> std::result::Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    for (channel, payload) in payloads {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(*channel)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// A connection listening on Zafe's channels.
async fn listen(pool: &PgPool) -> std::result::Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    // Reconnecting is done here, by `follow`, so that it knows when it is listening again.
    listener.eager_reconnect(false);
    listener
        .listen_all([KEYS_CHANNEL, MESSAGES_CHANNEL])
        .await?;
    Ok(listener)
}

/// Turns notifications into notices, for as long as the backend lives. When the connection
/// drops, whatever was notified meanwhile is lost: subscribers are told so at once, again every
/// [`BACKSTOP`] until the connection is back, and [`Notice::Resumed`] when it is.
async fn follow(pool: PgPool, mut listener: PgListener, notices: Notices) {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                let notice = if notification.channel() == KEYS_CHANNEL {
                    notices::decode_keys(notification.payload())
                } else {
                    match notices::decode_message(notification.payload()) {
                        Some(message) => message,
                        None => continue,
                    }
                };
                notices.send(notice);
            }
            Ok(None) | Err(_) => {
                tracing::warn!("the PostgreSQL notification connection dropped; reconnecting");
                notices.send(Notice::Lost);
                loop {
                    tokio::time::sleep(BACKSTOP).await;
                    match listen(&pool).await {
                        Ok(again) => {
                            listener = again;
                            notices.send(Notice::Resumed);
                            break;
                        }
                        Err(_) => notices.send(Notice::Lost),
                    }
                }
            }
        }
    }
}
