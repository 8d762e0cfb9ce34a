//! The audit log (R-AUD-1..6): every request, allowed or denied, is written
//! to a hash chain in the database (and optionally a file) before its
//! response leaves; if that fails, the request fails with 503.
//!
//! - [`hook`] is the one place requests are audited, in the HTTP guard that
//!   every request passes through (so 404s, 413s, bad JSON, panics and
//!   denials are audited like everything else). A request that changes
//!   something has its entry committed in the same transaction as its
//!   change (R-AUD-0, `hook::commit`, called by the barrier): no change
//!   exists without its entry, and an entry that cannot be written fails
//!   the request with nothing changed.
//! - [`AuditLog`] is a writer task that drains every entry queued while the
//!   previous batch was written into one transaction (group commit: one
//!   fsync for many requests), the sealed-time buffer, checkpoints and the
//!   retention sweep.
//! - [`zafe_core::audit`] has the formats, hashing, signing and the verifier
//!   (pure: the CLI verifies exports with the same code).
//! - [`api`] serves `sys/audit-log/{export,verify,checkpoints}`.
//!
//! Keys: the chain's MAC key and the key for keyed hashes of identifiers
//! are derived from the keyring with HKDF for these purposes only (never a
//! data key); they exist only while unsealed. Checkpoints are signed with
//! the identity key, which exists while sealed too but signs only heads it
//! has verified with the MAC key, so it never vouches for rows it did not
//! check; and never a head (or an export's end) while the log no longer
//! holds the newest checkpoint this node signed, so a log cut back behind
//! its back is not made to verify by the next checkpoint. The head is also
//! signed at unseal (what waited while sealed, and a crash's unsigned
//! tail), so the freshness check of verification never trips on a server
//! that just started.
//!
//! While sealed there is no MAC key: entries (init, unseal attempts, status
//! checks, refusals) wait in a bounded in-memory buffer and become the first
//! entries written after unseal. No secret can leave a sealed server; the
//! one exception, the answer to `sys/init`, is buffered like the rest.

pub mod api;
mod file;
pub mod hook;

use parking_lot::RwLock;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::{mpsc, oneshot};
use zafe_core::crypto::constant_time_eq;
use zafe_core::identity::IdentityKey;
use zafe_core::keyring::{Keyring, purpose};
use zafe_core::secret::SecretKey;
use zafe_storage::Backend;
use zafe_storage::audit::{
    AuditCheckpoint, AuditDraft, AuditLink, AuditRow, SharedLinker, TimeBound,
};

pub use hook::{note_caller, note_resources};
pub use zafe_core::audit::{Actor, Event, Report};

use crate::config::ConfigError;
use file::FileSink;
use zafe_core::audit::{
    self, CheckpointLine, EntryLine, Verifier, entry_hash, entry_mac, sign_checkpoint,
};

/// At most this many entries wait while sealed.
pub(crate) const SEALED_BUFFER: usize = 10_000;
/// At most this many entries per transaction.
const MAX_BATCH: usize = 2048;
/// Rows per page when reading the log (verification, export, sweep).
pub(crate) const PAGE: usize = 1000;
/// How often the retention sweep runs, when retention is on.
const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// `[audit]` in the configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// A JSON-lines copy of the chain (also `ZAFE_AUDIT_FILE`).
    pub file_path: Option<PathBuf>,
    /// `every_batch` (default): fsync the file before answering; `never`:
    /// leave it to the operating system.
    #[serde(default)]
    pub file_fsync: FileFsync,
    /// How often the chain head is signed; default 60.
    pub checkpoint_interval_secs: Option<u64>,
    /// Delete entries older than this many days; off by default.
    pub retention_days: Option<u64>,
}

/// When the file sink flushes to disk (`audit.file_fsync`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileFsync {
    /// Before answering the requests of each batch (the default): an entry the
    /// client saw acknowledged survives a crash of the machine.
    #[default]
    EveryBatch,
    /// Never; the operating system writes when it likes. Faster, but a machine
    /// crash may lose the file's last entries (the database still has them).
    Never,
}

impl AuditConfig {
    /// `checkpoint_interval_secs`, default 60 seconds.
    pub(crate) fn checkpoint_interval(&self) -> Duration {
        Duration::from_secs(self.checkpoint_interval_secs.unwrap_or(60))
    }

    /// Refuses an interval or retention of 0.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, message: &str| ConfigError::Invalid {
            name,
            message: message.into(),
        };
        if self.checkpoint_interval_secs == Some(0) {
            return Err(invalid(
                "audit.checkpoint_interval_secs",
                "must be at least 1",
            ));
        }
        if self.retention_days == Some(0) {
            return Err(invalid(
                "audit.retention_days",
                "must be at least 1 (leave it out to keep everything)",
            ));
        }
        Ok(())
    }
}

/// The audit keys, derived at unseal; dropping them zeroizes them.
pub struct AuditKeys {
    chain: SecretKey,
    field: SecretKey,
}

impl AuditKeys {
    /// Derives the chain key and the field key from the keyring.
    pub(crate) fn from_keyring(keyring: &Keyring) -> Self {
        Self {
            chain: keyring.derive(purpose::AUDIT_CHAIN),
            field: keyring.derive(purpose::AUDIT_FIELD_HMAC),
        }
    }

    /// `hmac-sha256:<hex>` of an identifier.
    pub fn hmac(&self, value: &str) -> String {
        audit::field_hmac(&self.field, value)
    }

    /// A copy of the chain (MAC) key, for a verifier. Never log it.
    pub(crate) fn chain_key(&self) -> SecretKey {
        self.chain.duplicate()
    }
}

/// A stored row as an export line; `None` if its body is not an event.
pub(crate) fn entry_line(row: &AuditRow) -> Option<EntryLine> {
    EntryLine::from_stored(row.seq, &row.body, &row.prev_hash, &row.hash, &row.mac)
}

/// The current time in microseconds since the Unix epoch: the unit of an
/// audit entry's `time_us`. 0 if the clock is before 1970.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The hash of entry `seq`, after checking that it is intact and ours: its
/// content matches its hash and its MAC is valid. What a checkpoint or
/// anchor signs is always checked this way first.
pub(crate) async fn verified_hash(
    backend: &dyn Backend,
    keys: &AuditKeys,
    seq: i64,
) -> Result<Vec<u8>, String> {
    let rows = backend
        .audit_read(seq, 1)
        .await
        .map_err(|e| e.to_string())?;
    let row = rows
        .into_iter()
        .next()
        .filter(|r| r.seq == seq)
        .ok_or_else(|| format!("audit entry {seq} is missing"))?;
    let intact = serde_json::from_slice::<Event>(&row.body)
        .ok()
        .is_some_and(|event| {
            event.time_us == row.time_us
                && constant_time_eq(&entry_hash(seq, &event, &row.prev_hash), &row.hash)
                && constant_time_eq(&entry_mac(&keys.chain, &row.hash), &row.mac)
        });
    if intact {
        Ok(row.hash)
    } else {
        tracing::error!(
            seq,
            "audit entry failed verification: the audit log was tampered with"
        );
        Err(format!(
            "audit entry {seq} failed verification (tampered); nothing was signed"
        ))
    }
}

/// Whether the stored log still reaches a signed point (seq, hash): the
/// one question behind refusing to sign over a cut log and behind the
/// rollback anchor checked at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    /// The entry is there with the same hash, or retention swept it and
    /// every entry left is newer.
    Holds,
    /// The chain head is back at `head`, below the point.
    Behind { head: i64 },
    /// The entry at that seq has another hash.
    Replaced { head: i64 },
    /// The entry is gone although older entries remain.
    Missing { head: i64 },
}

/// See [`Reach`].
pub(crate) async fn reach(
    backend: &dyn Backend,
    seq: i64,
    hash: &[u8],
) -> zafe_storage::Result<Reach> {
    let head = backend.audit_head().await?.seq;
    if head < seq {
        return Ok(Reach::Behind { head });
    }
    match backend.audit_read(seq, 1).await?.first() {
        Some(row) if row.seq == seq => Ok(if constant_time_eq(&row.hash, hash) {
            Reach::Holds
        } else {
            Reach::Replaced { head }
        }),
        _ => {
            // Retention removes the oldest entries; the point may be among
            // them if every entry left is newer.
            let oldest = backend.audit_read(i64::MIN, 1).await?;
            Ok(if oldest.first().is_some_and(|r| r.seq > seq) {
                Reach::Holds
            } else {
                Reach::Missing { head }
            })
        }
    }
}

/// Refuses to sign anything while the log no longer holds the newest
/// checkpoint this node signed: the chain head was moved back below it (the
/// newest entries removed) or the entry it names was replaced. Signing the
/// truncated head would make the removal verify.
async fn still_holds(
    backend: &dyn Backend,
    latest: Option<&AuditCheckpoint>,
) -> Result<(), String> {
    let Some(latest) = latest else {
        return Ok(());
    };
    let why = match reach(backend, latest.seq, &latest.hash)
        .await
        .map_err(|e| e.to_string())?
    {
        Reach::Holds => return Ok(()),
        Reach::Behind { head } => format!("the chain head is back at seq {head}"),
        Reach::Replaced { .. } => "that entry was replaced".to_string(),
        Reach::Missing { .. } => "that entry is missing".to_string(),
    };
    tracing::error!(
        seq = latest.seq,
        "audit log regressed below the newest signed checkpoint: {why}; nothing was signed"
    );
    Err(format!(
        "the audit log no longer holds the checkpoint this server signed at seq {}: {why}; nothing was signed",
        latest.seq
    ))
}

/// Links a row onto the chain: its hash over the event as read back from
/// the very bytes that are stored, and the hash's MAC under the chain key.
pub(crate) fn linker(keys: Arc<AuditKeys>) -> SharedLinker {
    Arc::new(move |seq: i64, prev: &[u8], draft: &AuditDraft| {
        let event: Event = serde_json::from_slice(&draft.body).unwrap_or_default();
        let hash = entry_hash(seq, &event, prev);
        AuditLink {
            hash: hash.to_vec(),
            mac: entry_mac(&keys.chain, &hash).to_vec(),
        }
    })
}

enum Job {
    Record {
        event: Box<Event>,
        keys: Option<Arc<AuditKeys>>,
        ack: oneshot::Sender<Result<(), String>>,
    },
    Checkpoint {
        kind: &'static str,
        ack: oneshot::Sender<Result<Option<AuditCheckpoint>, String>>,
    },
    /// Keys became available: write what waited while sealed.
    Flush,
    /// Answered once everything queued before it is written (and signed,
    /// for a `Flush`).
    Barrier(oneshot::Sender<()>),
    /// Entries were committed with changes, beside the writer: bring the
    /// file up to the database's head.
    SyncFile {
        /// The keys of the request that asks (a new file starts with an
        /// anchor signed only after checking the entry's MAC).
        keys: Arc<AuditKeys>,
        /// The sequence number of the entry the file must hold.
        seq: i64,
        ack: oneshot::Sender<Result<(), String>>,
    },
}

struct Shared {
    backend: Arc<dyn Backend>,
    keys: RwLock<Option<Arc<AuditKeys>>>,
    /// A copy of the server's identity key, for checkpoints.
    identity: IdentityKey,
    config: AuditConfig,
    /// The newest checkpoint this node signed: verification requires the log
    /// to still hold it, even if someone deleted it from the database along
    /// with the entries it covers.
    latest: parking_lot::Mutex<Option<AuditCheckpoint>>,
    /// Where each new checkpoint is also written, outside the store, for
    /// rollback detection at the next start (see `crate::anchor`).
    anchor: parking_lot::Mutex<Option<PathBuf>>,
}

/// The server's audit log. See the module documentation.
pub struct AuditLog {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Job>,
}

/// What a retention sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SweepReport {
    /// How many entries were deleted.
    pub deleted: u64,
    /// The newest deleted entry, which the signed anchor names.
    pub anchor_seq: Option<i64>,
}

impl AuditLog {
    /// Opens the file sink (if configured) and starts the writer and the
    /// checkpoint/retention task. Needs a Tokio runtime.
    pub fn start(
        backend: Arc<dyn Backend>,
        config: &AuditConfig,
        identity: &IdentityKey,
    ) -> Result<Self, String> {
        let file = match &config.file_path {
            Some(path) => Some(FileSink::open(path, config.file_fsync)?),
            None => None,
        };
        let shared = Arc::new(Shared {
            backend,
            keys: RwLock::new(None),
            identity: IdentityKey::from_seed(&identity.seed()),
            config: config.clone(),
            latest: parking_lot::Mutex::new(None),
            anchor: parking_lot::Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(65_536);
        let writer = Writer {
            shared: shared.clone(),
            file,
            buffer: VecDeque::new(),
            dropped: 0,
            last_checkpoint: None,
        };
        tokio::spawn(writer.run(rx));
        tokio::spawn(maintain(tx.downgrade(), Arc::downgrade(&shared)));
        Ok(Self { shared, tx })
    }

    /// From now on, every checkpoint is also written to the anchor file
    /// at `path` (see `crate::anchor`).
    pub fn set_anchor(&self, path: PathBuf) {
        *self.shared.anchor.lock() = Some(path);
    }

    /// The `[audit]` settings the log started with.
    pub fn config(&self) -> &AuditConfig {
        &self.shared.config
    }

    /// The storage the log writes to, below the barrier (the log is
    /// authenticated by its own chain and MACs, not encrypted).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.shared.backend
    }

    /// The identity public key checkpoints are signed with.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.identity.public_key()
    }

    /// Called at unseal: derives the keys and writes what waited.
    pub fn unsealed(&self, keyring: &Keyring) {
        *self.shared.keys.write() = Some(Arc::new(AuditKeys::from_keyring(keyring)));
        let _ = self.tx.try_send(Job::Flush);
    }

    /// Called at seal: forgets the keys (entries in flight keep theirs until
    /// written).
    pub fn sealed(&self) {
        self.shared.keys.write().take();
    }

    /// The audit keys while unsealed, `None` while sealed. A request takes
    /// them when it starts and hands them to [`AuditLog::record`].
    pub fn keys(&self) -> Option<Arc<AuditKeys>> {
        self.shared.keys.read().clone()
    }

    /// Writes `event`, durably, before returning `Ok`. `keys` are the ones
    /// the request started with: `None` if it started sealed, in which case
    /// the entry is buffered and `Ok` is immediate.
    pub async fn record(&self, event: Event, keys: Option<Arc<AuditKeys>>) -> Result<(), String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Record {
                event: Box::new(event),
                keys,
                ack,
            })
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }

    /// Brings the file sink up to the database (entries that went in with
    /// their changes, R-AUD-0), before returning `Ok`: contiguous, in
    /// sequence order, fsynced as configured. Immediate without a file.
    pub(crate) async fn sync_file(&self, keys: Arc<AuditKeys>, seq: i64) -> Result<(), String> {
        if self.shared.config.file_path.is_none() {
            return Ok(());
        }
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::SyncFile { keys, seq, ack })
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }

    /// Signs the chain head now (after verifying it); `None` when there is
    /// nothing new to sign or the server is sealed.
    pub async fn checkpoint(&self, kind: &'static str) -> Result<Option<AuditCheckpoint>, String> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Job::Checkpoint { kind, ack })
            .await
            .map_err(|_| "the audit writer has stopped".to_string())?;
        done.await
            .map_err(|_| "the audit writer has stopped".to_string())?
    }

    /// At shutdown: a last checkpoint, so even the newest entries are covered.
    pub async fn shutdown(&self) {
        match self.checkpoint("shutdown").await {
            Ok(Some(cp)) => tracing::info!(seq = cp.seq, "signed the audit chain head at shutdown"),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "could not sign the audit chain head at shutdown")
            }
        }
    }

    /// Retention: deletes the entries before the first one at or after
    /// `cutoff_us` (always keeping the newest), after a checkpoint of the
    /// head and a signed anchor for the newest entry it deletes, so the rest
    /// still verifies.
    pub async fn sweep(&self, cutoff_us: i64) -> Result<SweepReport, String> {
        let keys = self.keys().ok_or("the server is sealed")?;
        let backend = &*self.shared.backend;
        self.checkpoint("sweep").await?;
        let head = backend.audit_head().await.map_err(|e| e.to_string())?;
        let through = match backend
            .audit_seq_at(cutoff_us, TimeBound::FirstAtOrAfter)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(seq) => seq - 1,
            None => head.seq - 1,
        }
        .min(head.seq - 1);
        let oldest = backend
            .audit_read(i64::MIN, 1)
            .await
            .map_err(|e| e.to_string())?
            .first()
            .map(|r| r.seq);
        let Some(oldest) = oldest.filter(|o| *o <= through) else {
            return Ok(SweepReport::default());
        };
        let hash = verified_hash(backend, &keys, through).await?;
        let anchor = sign_checkpoint(&self.shared.identity, "anchor", through, &hash, now_us());
        backend
            .audit_checkpoint_append(anchor)
            .await
            .map_err(|e| e.to_string())?;
        let mut deleted = 0;
        loop {
            let n = backend
                .audit_sweep(through, PAGE)
                .await
                .map_err(|e| e.to_string())?;
            deleted += n;
            if n == 0 {
                break;
            }
        }
        tracing::info!(deleted, from = oldest, through, "audit retention sweep");
        Ok(SweepReport {
            deleted,
            anchor_seq: Some(through),
        })
    }

    /// Returns once what the writer had queued (the entries and checkpoint
    /// of an unseal a moment ago) is stored, so that verification and
    /// exports do not find the newest entries unsigned while their
    /// checkpoint waits in the queue.
    pub(crate) async fn settled(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Job::Barrier(ack)).await.is_ok() {
            let _ = done.await;
        }
    }

    /// Signs the end of an export whose last entry is `last` (seq, hash),
    /// after checking that entry (content and MAC) and that the log still
    /// holds the newest checkpoint this node signed.
    pub(crate) async fn sign_export_end(
        &self,
        last: Option<(i64, Vec<u8>)>,
        from_seq: Option<i64>,
        to_seq: Option<i64>,
    ) -> Result<audit::EndLine, String> {
        let keys = self.keys().ok_or("the server is sealed")?;
        let backend = &*self.shared.backend;
        if let Some((seq, hash)) = &last
            && !constant_time_eq(&verified_hash(backend, &keys, *seq).await?, hash)
        {
            return Err(format!(
                "audit entry {seq} changed during the export; nothing was signed"
            ));
        }
        let latest = self.shared.latest.lock().clone();
        still_holds(backend, latest.as_ref()).await?;
        Ok(audit::sign_export_end(
            &self.shared.identity,
            last.as_ref().map(|(s, h)| (*s, h.as_slice())),
            from_seq,
            to_seq,
            self.shared.config.checkpoint_interval().as_secs(),
            now_us(),
        ))
    }

    /// Verifies the whole log as stored: links, hashes, MACs (while
    /// unsealed), checkpoint signatures, and that the head row agrees with
    /// the newest entry. Pages through any length in constant memory.
    ///
    /// The head is read first and the log is checked up to it: entries that
    /// other requests (or other nodes) append meanwhile are left for the next
    /// verification, instead of looking like a head that ran ahead of its
    /// entries.
    pub async fn verify(&self) -> Result<Report, String> {
        self.settled().await;
        let keys = self.keys();
        let backend = &self.shared.backend;
        let mut verifier = Verifier::new(keys.map(|k| k.chain_key()), self.public_key(), false);
        verifier.freshness(
            self.shared.config.checkpoint_interval().as_secs(),
            Some(now_us()),
        );
        if let Some(cp) = self.shared.latest.lock().clone() {
            verifier.remember(cp);
        }
        let head = backend.audit_head().await.map_err(|e| e.to_string())?;
        let mut merged = Merged::new(backend.clone(), None, None);
        let mut last_hash = None;
        let mut past_head = false;
        while !past_head {
            let items = merged.next_page().await.map_err(|e| e.to_string())?;
            if items.is_empty() {
                break;
            }
            for item in items {
                match item {
                    Item::Row(row) if row.seq > head.seq => {
                        past_head = true;
                        break;
                    }
                    Item::Checkpoint(cp) if cp.seq > head.seq => {}
                    Item::Row(row) => {
                        verifier.stored(
                            row.seq,
                            row.time_us,
                            &row.body,
                            &row.prev_hash,
                            &row.hash,
                            &row.mac,
                        );
                        last_hash = Some(row.hash);
                    }
                    Item::Checkpoint(cp) => verifier.checkpoint(cp),
                }
            }
            if verifier.failed() {
                break;
            }
        }
        let mut report = verifier.finish();
        if report.ok {
            let last = report.last_seq.unwrap_or(0);
            let same = head.seq == last
                && last_hash
                    .as_ref()
                    .is_none_or(|h| constant_time_eq(h, &head.hash));
            if !same {
                report.ok = false;
                report.first_bad_seq = Some(head.seq.min(last) + 1);
                report.problem = Some(format!(
                    "the chain head says seq {} but the newest entry is seq {last}: entries were removed or replaced",
                    head.seq
                ));
            }
        }
        Ok(report)
    }
}

async fn maintain(tx: mpsc::WeakSender<Job>, shared: Weak<Shared>) {
    let Some(config) = shared.upgrade().map(|s| s.config.clone()) else {
        return;
    };
    let mut last_sweep: Option<tokio::time::Instant> = None;
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + config.checkpoint_interval(),
        config.checkpoint_interval(),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (Some(tx), Some(shared)) = (tx.upgrade(), shared.upgrade()) else {
            return;
        };
        let log = AuditLog { shared, tx };
        if log.keys().is_none() {
            continue;
        }
        if let Err(e) = log.checkpoint("periodic").await {
            tracing::error!(error = %e, "could not sign the audit chain head");
        }
        if let Some(days) = config.retention_days
            && last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY)
        {
            last_sweep = Some(tokio::time::Instant::now());
            let cutoff = now_us().saturating_sub(
                i64::try_from(days)
                    .unwrap_or(i64::MAX / 86_400_000_000)
                    .saturating_mul(86_400_000_000),
            );
            if let Err(e) = log.sweep(cutoff).await {
                tracing::error!(error = %e, "audit retention sweep failed");
            }
        }
    }
}

/// One queued entry.
struct Pending {
    event: Event,
    keys: Option<Arc<AuditKeys>>,
    ack: oneshot::Sender<Result<(), String>>,
}

enum WriteError {
    /// Nothing was stored.
    Database(String),
    /// Stored in the database, not in the file.
    File(String),
}

struct Writer {
    shared: Arc<Shared>,
    file: Option<FileSink>,
    /// Entries recorded while sealed, oldest first.
    buffer: VecDeque<Event>,
    dropped: u64,
    last_checkpoint: Option<i64>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.recv().await {
            let mut jobs = vec![job];
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let mut records = Vec::new();
            let mut syncs = Vec::new();
            for job in jobs {
                match job {
                    Job::Record { event, keys, ack } => records.push(Pending {
                        event: *event,
                        keys,
                        ack,
                    }),
                    Job::Flush => {
                        // What waited while sealed, and what was written
                        // before sealing, are signed at once: the freshness
                        // check must not wait for the next tick.
                        self.write(std::mem::take(&mut records)).await;
                        if let Err(e) = self.checkpoint("unseal").await {
                            tracing::error!(error = %e, "could not sign the audit chain head at unseal");
                        }
                    }
                    Job::Barrier(ack) => {
                        self.write(std::mem::take(&mut records)).await;
                        let _ = ack.send(());
                    }
                    Job::Checkpoint { kind, ack } => {
                        // In order: what was queued before it is covered.
                        self.write(std::mem::take(&mut records)).await;
                        let _ = ack.send(self.checkpoint(kind).await);
                    }
                    Job::SyncFile { keys, seq, ack } => syncs.push((keys, seq, ack)),
                }
            }
            self.write(records).await;
            if let Some((keys, _, _)) = syncs.first() {
                // One catch-up for every request that asked.
                let keys = keys.clone();
                let from = syncs.iter().map(|(_, seq, _)| *seq).min().unwrap_or(1);
                let synced = self.sync_file(&keys, from).await;
                for (_, _, ack) in syncs {
                    let _ = ack.send(synced.clone());
                }
            }
        }
    }

    async fn sync_file(&mut self, keys: &AuditKeys, from_seq: i64) -> Result<(), String> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let backend = self.shared.backend.clone();
        file.sync_from(&*backend, &self.shared.identity, keys, from_seq)
            .await
    }

    /// Writes a batch (and whatever waited while sealed) in one transaction,
    /// then answers each request.
    async fn write(&mut self, records: Vec<Pending>) {
        let keys = records
            .iter()
            .find_map(|r| r.keys.clone())
            .or_else(|| self.shared.keys.read().clone());
        let Some(keys) = keys else {
            for r in records {
                self.buffer_push(r.event);
                let _ = r.ack.send(Ok(()));
            }
            return;
        };
        if records.is_empty() && self.buffer.is_empty() {
            return;
        }
        let mut events: Vec<Event> = self
            .buffer
            .drain(..)
            .map(|e| Event {
                buffered: true,
                ..e
            })
            .collect();
        let mut acks = Vec::new();
        for r in records {
            if r.keys.is_some() {
                acks.push(r.ack);
                events.push(r.event);
            } else {
                // Started sealed: buffered semantics, answered at once.
                let _ = r.ack.send(Ok(()));
                events.push(Event {
                    buffered: true,
                    ..r.event
                });
            }
        }
        let dropped = std::mem::take(&mut self.dropped);
        events[0].dropped += dropped;
        match self.store(&keys, &events).await {
            Ok(()) => {
                for ack in acks {
                    let _ = ack.send(Ok(()));
                }
            }
            Err(e) => {
                let message = match &e {
                    WriteError::Database(m) | WriteError::File(m) => m.clone(),
                };
                tracing::error!(error = %message, entries = events.len(), "audit write failed: refusing the requests of this batch");
                for ack in acks {
                    let _ = ack.send(Err(message.clone()));
                }
                if let WriteError::Database(_) = e {
                    // Keep what waited while sealed for the next attempt.
                    events[0].dropped -= dropped;
                    self.dropped += dropped;
                    for event in events.into_iter().rev().filter(|e| e.buffered) {
                        if self.buffer.len() < SEALED_BUFFER {
                            self.buffer.push_front(event);
                        } else {
                            self.dropped += 1;
                        }
                    }
                }
            }
        }
    }

    async fn store(&mut self, keys: &Arc<AuditKeys>, events: &[Event]) -> Result<(), WriteError> {
        let drafts: Vec<AuditDraft> = events
            .iter()
            .map(|e| AuditDraft {
                time_us: e.time_us,
                body: serde_json::to_vec(e).expect("an event serialises"),
            })
            .collect();
        let link = linker(keys.clone());
        let backend = self.shared.backend.clone();
        let rows: Vec<AuditRow> = backend
            .audit_append(drafts, &*link)
            .await
            .map_err(|e| WriteError::Database(e.to_string()))?;
        if let Some(file) = &mut self.file {
            file.append(&*backend, &self.shared.identity, keys, &rows)
                .await
                .map_err(WriteError::File)?;
        }
        Ok(())
    }

    /// Keeps an entry recorded while sealed. When full, a status check
    /// (health, seal status, identity) makes room before anything else is
    /// lost, so unseal and init attempts survive a flood of probes.
    fn buffer_push(&mut self, event: Event) {
        if self.buffer.len() >= SEALED_BUFFER {
            let probe = |e: &Event| {
                matches!(e.method.as_str(), "GET" | "HEAD") && e.path.starts_with("sys/")
            };
            match self.buffer.iter().position(probe) {
                Some(i) => {
                    self.buffer.remove(i);
                }
                None => {
                    self.dropped += 1;
                    return;
                }
            }
            self.dropped += 1;
        }
        self.buffer.push_back(event);
    }

    async fn checkpoint(&mut self, kind: &'static str) -> Result<Option<AuditCheckpoint>, String> {
        let Some(keys) = self.shared.keys.read().clone() else {
            return Ok(None);
        };
        let backend = self.shared.backend.clone();
        let seq = match &mut self.file {
            Some(file) => {
                file.catch_up(&*backend, &self.shared.identity, &keys)
                    .await?
            }
            None => {
                Some(backend.audit_head().await.map_err(|e| e.to_string())?.seq).filter(|s| *s > 0)
            }
        };
        let Some(seq) = seq else {
            return Ok(None);
        };
        if kind == "periodic" && self.last_checkpoint == Some(seq) {
            return Ok(None);
        }
        let latest = self.shared.latest.lock().clone();
        still_holds(&*backend, latest.as_ref()).await?;
        let hash = verified_hash(&*backend, &keys, seq).await?;
        let cp = sign_checkpoint(&self.shared.identity, kind, seq, &hash, now_us());
        backend
            .audit_checkpoint_append(cp.clone())
            .await
            .map_err(|e| e.to_string())?;
        if let Some(file) = &mut self.file {
            file.write_checkpoint(&CheckpointLine::new(&cp))?;
        }
        self.last_checkpoint = Some(seq);
        *self.shared.latest.lock() = Some(cp.clone());
        let anchor = self.shared.anchor.lock().clone();
        if let Some(path) = anchor {
            let key = self.shared.identity.public_key();
            crate::anchor::advance(&*backend, &path, &key, &cp).await;
        }
        Ok(Some(cp))
    }
}

/// Rows and checkpoints of the stored log, merged in sequence order: each
/// checkpoint right after the entry it names, the anchor (a checkpoint of
/// the entry before the first row) first, and checkpoints beyond the last
/// row (the sign that newest entries are missing) at the end.
pub(crate) enum Item {
    Row(AuditRow),
    Checkpoint(AuditCheckpoint),
}

pub(crate) struct Merged {
    backend: Arc<dyn Backend>,
    next_seq: i64,
    to_seq: Option<i64>,
    cp_after: (i64, i64),
    cp_buffer: VecDeque<AuditCheckpoint>,
    started: bool,
    rows_done: bool,
    finished: bool,
}

impl Merged {
    /// Rows from `from_seq` to `to_seq` (inclusive; `None`: no bound).
    /// Checkpoints after the last row only come without `to_seq`.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        from_seq: Option<i64>,
        to_seq: Option<i64>,
    ) -> Self {
        Self {
            backend,
            next_seq: from_seq.unwrap_or(i64::MIN),
            to_seq,
            // A range with no rows still starts its checkpoints there.
            cp_after: (from_seq.map_or(i64::MIN, |s| s.saturating_sub(1)), i64::MIN),
            cp_buffer: VecDeque::new(),
            started: false,
            rows_done: false,
            finished: false,
        }
    }

    /// Loads checkpoints until one beyond `seq` is buffered, or none is left.
    async fn load_checkpoints(&mut self, seq: i64) -> zafe_storage::Result<()> {
        while self.cp_buffer.back().is_none_or(|c| c.seq <= seq) {
            let page = self.backend.audit_checkpoints(self.cp_after, PAGE).await?;
            let full = page.len() == PAGE;
            if let Some(last) = page.last() {
                self.cp_after = (last.seq, last.id);
            }
            self.cp_buffer.extend(page);
            if !full {
                break;
            }
        }
        Ok(())
    }

    /// The next page of items; empty at the end.
    pub(crate) async fn next_page(&mut self) -> zafe_storage::Result<Vec<Item>> {
        let mut out = Vec::new();
        if self.finished {
            return Ok(out);
        }
        if !self.rows_done {
            let mut rows = self.backend.audit_read(self.next_seq, PAGE).await?;
            if rows.len() < PAGE {
                self.rows_done = true;
            }
            if let Some(to) = self.to_seq
                && rows.last().is_some_and(|r| r.seq >= to)
            {
                rows.retain(|r| r.seq <= to);
                self.rows_done = true;
            }
            if let Some(first) = rows.first()
                && !self.started
            {
                self.started = true;
                // Older checkpoints cover swept entries; only the anchor of
                // the first row matters.
                self.cp_after = (first.seq - 1, i64::MIN);
            }
            if let Some(last) = rows.last() {
                self.next_seq = last.seq + 1;
                self.load_checkpoints(last.seq).await?;
            }
            for row in rows {
                while self.cp_buffer.front().is_some_and(|c| c.seq < row.seq) {
                    out.extend(self.cp_buffer.pop_front().map(Item::Checkpoint));
                }
                let seq = row.seq;
                out.push(Item::Row(row));
                while self.cp_buffer.front().is_some_and(|c| c.seq == seq) {
                    out.extend(self.cp_buffer.pop_front().map(Item::Checkpoint));
                }
            }
            if !out.is_empty() {
                return Ok(out);
            }
        }
        if self.to_seq.is_some() {
            self.finished = true;
            return Ok(out);
        }
        if self.cp_buffer.is_empty() {
            let page = self.backend.audit_checkpoints(self.cp_after, PAGE).await?;
            if let Some(last) = page.last() {
                self.cp_after = (last.seq, last.id);
            }
            self.cp_buffer.extend(page);
        }
        out.extend(self.cp_buffer.drain(..).map(Item::Checkpoint));
        if out.is_empty() {
            self.finished = true;
        }
        Ok(out)
    }
}

#[cfg(test)]
impl AuditLog {
    /// Holds the audit log's locks, for the test that a panic cannot wedge the server.
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        (
            self.shared.keys.write(),
            self.shared.latest.lock(),
            self.shared.anchor.lock(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_storage::sqlite::SqliteBackend;

    fn event(method: &str, path: &str, status: u16) -> Event {
        Event {
            v: audit::EVENT_VERSION,
            time_us: now_us(),
            method: method.into(),
            path: path.into(),
            status,
            decision: "allowed".into(),
            ..Event::default()
        }
    }

    async fn wait_for_head(backend: &dyn Backend, seq: i64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while backend.audit_head().await.unwrap().seq < seq {
            assert!(
                std::time::Instant::now() < deadline,
                "the audit writer did not write"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    // Failed unseal attempts are never lost to a flood of probes while
    // sealed; what is dropped is counted in the first entry after unseal.
    #[tokio::test]
    async fn the_sealed_buffer_keeps_unseal_attempts_and_counts_what_it_drops() {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let log = AuditLog::start(
            backend.clone(),
            &AuditConfig::default(),
            &IdentityKey::generate(),
        )
        .unwrap();
        log.record(event("PUT", "sys/unseal", 400), None)
            .await
            .unwrap();
        for _ in 0..SEALED_BUFFER + 50 {
            log.record(event("GET", "sys/health", 503), None)
                .await
                .unwrap();
        }
        log.record(event("PUT", "sys/unseal", 400), None)
            .await
            .unwrap();
        assert_eq!(
            backend.audit_head().await.unwrap().seq,
            0,
            "nothing is written without the key"
        );

        log.unsealed(&Keyring::generate());
        wait_for_head(&*backend, SEALED_BUFFER as i64).await;
        let mut rows = Vec::new();
        let mut from = 1;
        loop {
            let page = backend.audit_read(from, PAGE).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.seq + 1;
            rows.extend(page);
        }
        assert_eq!(rows.len(), SEALED_BUFFER);
        let events: Vec<Event> = rows
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect();
        assert_eq!(events[0].path, "sys/unseal");
        assert_eq!(
            events[0].dropped, 52,
            "1 + 10,050 + 1 recorded, 10,000 kept"
        );
        assert_eq!(events.last().unwrap().path, "sys/unseal");
        assert!(events.iter().all(|e| e.buffered));
        assert!(events[1..].iter().all(|e| e.dropped == 0));
        let report = log.verify().await.unwrap();
        assert!(report.ok && report.macs_checked, "{report:?}");
    }

    // The writer drains what queued up while it was busy into one
    // transaction; each request still gets its own answer.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_records_are_group_committed_and_each_acknowledged() {
        let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await.unwrap());
        let log = Arc::new(
            AuditLog::start(
                backend.clone(),
                &AuditConfig::default(),
                &IdentityKey::generate(),
            )
            .unwrap(),
        );
        log.unsealed(&Keyring::generate());
        let keys = log.keys();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let (log, keys) = (log.clone(), keys.clone());
                tokio::spawn(
                    async move { log.record(event("GET", &format!("p/{i}"), 200), keys).await },
                )
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(backend.audit_head().await.unwrap().seq, 200);
        let cp = log.checkpoint("manual").await.unwrap().unwrap();
        assert_eq!(cp.seq, 200);
        assert!(audit::checkpoint_signed_by(&cp, &log.public_key()));
        // Nothing new: a periodic checkpoint is skipped.
        assert!(log.checkpoint("periodic").await.unwrap().is_none());
        assert!(log.verify().await.unwrap().ok);
    }
}
