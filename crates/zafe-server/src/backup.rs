//! Online backup and restore (R-OPS-8): `GET sys/backup` and `POST sys/restore`.
//!
//! A backup is the storage's consistent snapshot ([`zafe_storage::snapshot`])
//! in the [`zafe_core::backup`] format, streamed as it is read: ciphertext,
//! wrapped keys, the seal configuration with its share digests, the audit
//! chain and its checkpoints; never the root key or a plaintext. It holds every
//! ciphertext and the whole audit log, so `sys/backup` is a sudo route, and it
//! is audited like every request.
//!
//! A restore takes such a file as the raw request body. Into an uninitialised
//! server it needs no token (whoever can reach an uninitialised server can
//! initialise it, the same trust as `sys/init`), and storage refuses it unless
//! the store is empty. Onto an initialised server it needs `force` and a token
//! with sudo on `sys/restore`; the server seals first (its keys will not fit
//! the restored store, and nothing of its own may be written into it), then
//! everything is replaced in one transaction. Either way
//! nothing is written unless the file's trailer hash verified and every count
//! matched (one transaction, committed at the verified end), and afterwards
//! the server is sealed: unseal with the keys of the server the backup came
//! from.

use std::sync::Arc;

use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use serde_json::json;
use tokio::sync::mpsc;
use zafe_core::backup::{Frame, Reader, Writer};
use zafe_core::policy::Capability;
use zafe_engine::Status;
use zafe_storage::snapshot::RestoreOptions;

use crate::core::{Core, Request, Response};
use crate::error::{Error, Result};

/// The content type of a backup.
pub const CONTENT_TYPE: &str = "application/vnd.zafe.backup";

/// The path of the restore route (after `/v1/`), served by the HTTP edge
/// because its body is a stream of bytes, not JSON.
pub const RESTORE_PATH: &str = "sys/restore";

/// `GET sys/backup`: the snapshot as a stream of bytes ending in the trailer.
/// A snapshot that fails midway ends the body with an error, so the file
/// lacks its trailer and no reader accepts it.
pub(crate) async fn backup(core: &Arc<Core>) -> Result<Response> {
    let backend = core.audit.backend().clone();
    // Entries the audit broker holds are written first, so the backup has them.
    core.audit.settled().await;
    let server_id = core.identity.server_id();
    let created_us = core.now().micros();
    let (tx, rx) = mpsc::channel::<Frame>(64);
    let snapshot = tokio::spawn(async move { backend.snapshot(tx).await });
    struct State {
        rx: mpsc::Receiver<Frame>,
        writer: Writer,
        snapshot: Option<tokio::task::JoinHandle<zafe_storage::Result<()>>>,
        server_id: String,
        created_us: i64,
    }
    let state = State {
        rx,
        writer: Writer::new(),
        snapshot: Some(snapshot),
        server_id,
        created_us,
    };
    let body = futures_util::stream::unfold(state, |mut s| async move {
        match s.rx.recv().await {
            Some(Frame::Header(mut header)) => {
                header.server_id = s.server_id.clone();
                header.created_us = s.created_us;
                let bytes = s.writer.header(&header);
                Some((Ok(bytes), s))
            }
            Some(frame) => {
                let bytes = s.writer.frame(&frame);
                Some((Ok(bytes), s))
            }
            None => {
                let task = s.snapshot.take()?;
                let outcome = match task.await {
                    Ok(Ok(())) => return None,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "the snapshot task stopped".to_string(),
                };
                tracing::error!(error = %outcome, "backup failed midway");
                Some((Err(Error::StorageUnavailable(outcome)), s))
            }
        }
    });
    Ok(Response::Stream(CONTENT_TYPE, body.boxed()))
}

/// `POST sys/restore[?force=true]`: `body` is a backup file. `probe` is the
/// request without its body (its token, client address, request id).
pub async fn restore(
    core: &Arc<Core>,
    probe: &Request,
    force: bool,
    mut body: BoxStream<'static, std::result::Result<Vec<u8>, String>>,
) -> Result<Response> {
    let initialized = core.is_initialized().await?;
    if initialized || force {
        // Replacing a live store: a sudo token of this server (so it must be
        // unsealed). Strangers get the same 403 as on every private route.
        let caller = core.authenticate(probe).await?;
        core.authorize(&caller, RESTORE_PATH, Capability::Update, true)
            .await?;
    }
    if initialized && !force {
        return Err(Error::StateConflict(
            "the server is initialised: a restore would replace everything it stores; \
             pass force (zafe operator restore --force) to do that"
                .into(),
        ));
    }
    let backend = core.audit.backend().clone();
    if initialized {
        // Nothing of this server's may be written into the store being
        // replaced, and its keys will not fit the restored one: write out
        // what the audit broker holds, then seal before anything is replaced
        // (if the restore fails, the old store is intact: unseal it again).
        core.audit.settled().await;
        core.close();
        tracing::warn!(request_id = %probe.request_id, "sealed for a forced restore");
    }
    let options = RestoreOptions {
        force,
        // A new server records its identity at its first start; the
        // backup's record (the same identity, checked below) replaces it.
        replaceable: vec![crate::identity::RECORD_KEY.to_string()],
    };
    let (tx, rx) = mpsc::channel::<Frame>(64);
    let restoring = tokio::spawn(async move { backend.restore(rx, &options).await });
    let mut reader = Reader::new();
    let ours = core.identity.server_id();
    let fed: std::result::Result<(), String> = async {
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| format!("reading the upload: {e}"))?;
            for frame in reader.push(&chunk).map_err(|e| e.to_string())? {
                if let Frame::Header(h) = &frame
                    && h.server_id != ours
                {
                    return Err(format!(
                        "this backup was taken from server {}, but this server is {ours}: start \
                         it with the identity key file of the server the backup came from \
                         (clients pinned that identity, and the audit checkpoints are signed \
                         with it)",
                        h.server_id
                    ));
                }
                if tx.send(frame).await.is_err() {
                    return Ok(());
                }
            }
        }
        reader.finish().map_err(|e| e.to_string())
    }
    .await;
    // Without `End`, the restore rolls back.
    drop(tx);
    let restored = restoring
        .await
        .map_err(|_| Error::Internal("the restore task stopped".into()))?;
    if let Err(problem) = fed {
        return Err(Error::bad_request(format!(
            "the backup was refused, nothing was restored: {problem}"
        )));
    }
    let summary = match restored {
        Ok(summary) => summary,
        Err(zafe_storage::StorageError::Restore(m)) => {
            return Err(Error::StateConflict(format!("restore refused: {m}")));
        }
        Err(e) => return Err(Error::StorageUnavailable(e.to_string())),
    };
    core.reload_cluster_info().await?;
    let header = reader.header().cloned().unwrap_or_default();
    tracing::info!(
        request_id = %probe.request_id,
        entries = summary.entries,
        audit_rows = summary.audit_rows,
        checkpoints = summary.checkpoints,
        replaced = summary.replaced,
        "restored a backup"
    );
    Ok(Response::Json(
        Status::OK,
        json!({
            "entries": summary.entries,
            "audit_rows": summary.audit_rows,
            "checkpoints": summary.checkpoints,
            "replaced": summary.replaced,
            "server_id": header.server_id,
            "created_us": header.created_us,
            "audit_head_seq": header.audit_head_seq,
            "sealed": core.is_sealed(),
        }),
    ))
}
