//! The server's identity key on disk (R-ID-1).
//!
//! The key lives in a file outside the barrier, so the server can prove who
//! it is while sealed, before anyone trusts it with an unseal share. Its
//! public half is recorded in storage the first time, so that a missing or
//! replaced key file is an error at start-up rather than a silently new
//! identity (a comparable server regenerated its key at every start when none
//! was configured, which made pinning meaningless).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zafe_core::identity::IdentityKey;
use zafe_storage::{Backend, Condition, Entry, Op};
use zeroize::Zeroizing;

use crate::config::check_private_file;

pub(crate) const RECORD_KEY: &str = "seal/identity";

#[derive(Serialize, Deserialize)]
struct Record {
    server_id: String,
    public_key: String,
}

/// Why the identity key file and the store's identity record do not agree,
/// or could not be read. Start-up refuses on any of these: a server must
/// never answer under an identity its clients did not pin.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFileError {
    /// The file could not be read, created or parsed, or its mode is too open.
    #[error("identity key file {path}: {message}")]
    File {
        /// The identity key file.
        path: String,
        /// What went wrong; never the key itself.
        message: String,
    },
    /// The store already belongs to an identity, but the key file is absent.
    #[error(
        "the identity key file {path} is missing, but this server's data belongs to identity {server_id}. \
         Restore the file from backup (every node of a cluster needs the same file). \
         Creating a new identity would make every client that pinned {server_id} refuse this server."
    )]
    Missing {
        /// Where the key file was expected.
        path: String,
        /// The identity (server id) the store records.
        server_id: String,
    },
    /// The key file holds another identity than the one the store records.
    #[error(
        "the identity key file {path} holds identity {found}, but this server's data belongs to {expected}"
    )]
    Mismatch {
        /// The identity key file.
        path: String,
        /// Server id derived from the key in the file.
        found: String,
        /// Server id the store records.
        expected: String,
    },
    /// The store's identity record could not be read, written or parsed.
    #[error("storage: {0}")]
    Storage(String),
}

/// Loads the identity key from `path`, creating it (mode 0600) on the very
/// first start, and checks it against the identity recorded in storage.
pub(crate) async fn load_or_create(
    path: &Path,
    backend: &dyn Backend,
) -> Result<IdentityKey, IdentityFileError> {
    let recorded = read_record(backend).await?;
    let shown = path.display().to_string();
    let key = if path.exists() {
        check_private_file(path).map_err(|e| IdentityFileError::File {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|e| IdentityFileError::File {
                    path: shown.clone(),
                    message: e.to_string(),
                })?,
            );
        let seed = Zeroizing::new(hex::decode(text.trim()).unwrap_or_default());
        let seed: &[u8; 32] = seed[..].try_into().map_err(|_| IdentityFileError::File {
            path: shown.clone(),
            message: "expected 64 hex characters".into(),
        })?;
        IdentityKey::from_seed(seed)
    } else {
        if let Some(record) = &recorded {
            return Err(IdentityFileError::Missing {
                path: shown,
                server_id: record.server_id.clone(),
            });
        }
        let key = IdentityKey::generate();
        write_new_key_file(path, &key).map_err(|e| IdentityFileError::File {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(server_id = %key.server_id(), path = %shown, "created a new server identity key");
        key
    };
    match recorded {
        Some(record) if record.server_id != key.server_id() => Err(IdentityFileError::Mismatch {
            path: shown,
            found: key.server_id(),
            expected: record.server_id,
        }),
        Some(_) => Ok(key),
        None => {
            record(backend, &key).await?;
            Ok(key)
        }
    }
}

async fn read_record(backend: &dyn Backend) -> Result<Option<Record>, IdentityFileError> {
    let entry = backend
        .get(RECORD_KEY)
        .await
        .map_err(|e| IdentityFileError::Storage(e.to_string()))?;
    entry
        .map(|e| {
            serde_json::from_slice(&e.value)
                .map_err(|_| IdentityFileError::Storage("unreadable identity record".into()))
        })
        .transpose()
}

async fn record(backend: &dyn Backend, key: &IdentityKey) -> Result<(), IdentityFileError> {
    use base64::Engine as _;
    let record = Record {
        server_id: key.server_id(),
        public_key: base64::engine::general_purpose::STANDARD.encode(key.public_key()),
    };
    let op = Op::Put {
        entry: Entry {
            key: RECORD_KEY.into(),
            value: serde_json::to_vec(&record).expect("serialisable"),
            generation: 1,
        },
        condition: Condition::Absent,
    };
    backend
        .commit(vec![op])
        .await
        .map_err(|e| IdentityFileError::Storage(e.to_string()))
}

fn write_new_key_file(path: &Path, key: &IdentityKey) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let text = Zeroizing::new(hex::encode(&key.seed()[..]));
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use zafe_storage::sqlite::SqliteBackend;

    #[tokio::test]
    async fn the_identity_persists_and_a_lost_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::memory().await.unwrap();
        let path = dir.path().join("identity.key");
        let first = load_or_create(&path, &backend).await.unwrap();
        let again = load_or_create(&path, &backend).await.unwrap();
        assert_eq!(first.server_id(), again.server_id());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            load_or_create(&path, &backend).await,
            Err(IdentityFileError::Missing { .. })
        ));
        // Another key in the file is a mismatch, not a new identity.
        write_new_key_file(&path, &IdentityKey::generate()).unwrap();
        assert!(matches!(
            load_or_create(&path, &backend).await,
            Err(IdentityFileError::Mismatch { .. })
        ));
    }

    #[tokio::test]
    async fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let backend = SqliteBackend::memory().await.unwrap();
        let path = dir.path().join("identity.key");
        load_or_create(&path, &backend).await.unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            load_or_create(&path, &backend).await,
            Err(IdentityFileError::File { .. })
        ));
    }
}
