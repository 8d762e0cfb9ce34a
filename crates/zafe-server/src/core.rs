//! The core: holds the barrier, the seal, the token store's key and the
//! server identity, and handles every request in one place:
//!
//! 1. find the route (an unknown path is treated like a known private one
//!    until the caller is authenticated, so probing reveals nothing);
//! 2. authenticate, unless the route is on the public allowlist (R-AUTH-1);
//! 3. authorise (one decision, here);
//! 4. dispatch to the handler.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use zafe_core::identity::IdentityKey;
use zafe_core::keyring::purpose;
use zafe_core::secret::SecretKey;
use zafe_storage::{Backend, Condition, Entry, Op};

use crate::barrier::Barrier;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::seal::{Seal, Unsealed};
use crate::sys::{self, Access};
use crate::tokens::{self, TokenEntry, TokenSpec};

const CLUSTER_KEY: &str = "core/cluster-info";

/// What a request asks to do, from its HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Read,
    List,
    Write,
    Delete,
    Patch,
    Head,
}

/// A request as the core sees it: no HTTP types beyond this point.
#[derive(Debug)]
pub struct Request {
    pub operation: Operation,
    /// Without the `/v1/` prefix.
    pub path: String,
    pub body: Option<Value>,
    pub query: Vec<(String, String)>,
    pub token: Option<String>,
    pub client_ip: IpAddr,
    pub request_id: String,
}

impl Request {
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// A field of the JSON body.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.body.as_ref().and_then(|b| b.get(name))
    }
}

pub enum Reply {
    Json(StatusCode, Value),
    NoContent,
    /// A status without a body (`HEAD`).
    Status(StatusCode),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub cluster_name: String,
    pub cluster_id: String,
}

/// Keys that exist only while unsealed. Dropping this zeroizes them.
struct UnsealedKeys {
    _root_key: SecretKey,
    token_key: SecretKey,
}

pub struct Core {
    pub config: Config,
    pub barrier: Barrier,
    pub seal: Seal,
    pub identity: IdentityKey,
    /// SHA-256 of the SPKI of the certificate our own TLS listener presents.
    pub tls_spki: Option<[u8; 32]>,
    /// The same, for the certificate a TLS-terminating proxy presents.
    pub proxy_spki: Option<[u8; 32]>,
    token_pepper: Option<SecretKey>,
    unsealed: RwLock<Option<Arc<UnsealedKeys>>>,
    cluster: RwLock<ClusterInfo>,
}

/// Everything [`Core::new`] needs.
pub struct CoreParts {
    pub config: Config,
    pub backend: Arc<dyn Backend>,
    pub identity: IdentityKey,
    pub master_key: Option<SecretKey>,
    pub token_pepper: Option<SecretKey>,
    pub tls_spki: Option<[u8; 32]>,
    pub proxy_spki: Option<[u8; 32]>,
}

impl Core {
    pub async fn new(parts: CoreParts) -> Result<Arc<Self>> {
        let core = Arc::new(Self {
            config: parts.config,
            barrier: Barrier::new(parts.backend.clone()),
            seal: Seal::new(parts.backend, parts.master_key),
            identity: parts.identity,
            tls_spki: parts.tls_spki,
            proxy_spki: parts.proxy_spki,
            token_pepper: parts.token_pepper,
            unsealed: RwLock::new(None),
            cluster: RwLock::new(ClusterInfo::default()),
        });
        core.load_cluster_info().await?;
        Ok(core)
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.barrier.backend()
    }

    pub fn is_sealed(&self) -> bool {
        self.unsealed.read().expect("unsealed lock").is_none()
    }

    pub fn cluster(&self) -> ClusterInfo {
        self.cluster.read().expect("cluster lock").clone()
    }

    pub async fn is_initialized(&self) -> Result<bool> {
        Ok(self.seal.config().await?.is_some())
    }

    /// Initialises the server: creates the keys, the shares and the root
    /// token. With a master key the server stays unsealed; with shares only
    /// it is sealed again afterwards, as in Vault.
    pub async fn initialize(&self, shares: usize, threshold: usize, root_token: Option<&str>) -> Result<(Vec<zafe_core::shamir::Share>, String)> {
        let init = self.seal.initialize(shares, threshold).await?;
        self.ensure_cluster_info().await?;
        self.open(init.unsealed);
        let created = tokens::create(
            &self.barrier,
            &self.token_key()?,
            TokenSpec {
                policies: vec!["root".into()],
                display_name: "root".into(),
                ttl_secs: None,
            },
            root_token,
        )
        .await;
        if !self.seal.has_master_key() {
            self.close();
        }
        let (token, _) = created?;
        Ok((init.shares, token))
    }

    /// Opens the barrier with unsealed keys.
    pub fn open(&self, unsealed: Unsealed) {
        let token_key = match &self.token_pepper {
            Some(pepper) => zafe_core::crypto::derive_key(pepper.expose(), purpose::TOKEN_HMAC),
            None => unsealed.keyring.derive(purpose::TOKEN_HMAC),
        };
        self.barrier.unseal(Arc::new(unsealed.keyring));
        *self.unsealed.write().expect("unsealed lock") = Some(Arc::new(UnsealedKeys {
            _root_key: unsealed.root_key,
            token_key,
        }));
    }

    /// Seals: forgets every key (they are zeroized when the last in-flight
    /// request lets go of them) and any unseal progress.
    pub fn close(&self) {
        self.unsealed.write().expect("unsealed lock").take();
        self.barrier.seal();
        self.seal.reset_progress();
    }

    pub async fn unseal_with_master_key(&self) -> Result<()> {
        let unsealed = self.seal.unseal_with_master_key().await?;
        self.open(unsealed);
        Ok(())
    }

    fn token_key(&self) -> Result<SecretKey> {
        self.unsealed
            .read()
            .expect("unsealed lock")
            .as_ref()
            .map(|u| u.token_key.duplicate())
            .ok_or(Error::Sealed)
    }

    /// Resolves the request's token. Every failure is the same 403.
    pub async fn authenticate(&self, req: &Request) -> Result<TokenEntry> {
        if self.is_sealed() {
            return Err(Error::Sealed);
        }
        let token = req.token.as_deref().ok_or(Error::PermissionDenied)?;
        tokens::lookup(&self.barrier, &self.token_key()?, token)
            .await?
            .ok_or(Error::PermissionDenied)
    }

    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        tokens::revoke(&self.barrier, &self.token_key()?, token).await
    }

    /// The single entry point for every `/v1/` request.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Reply> {
        let Some(route) = sys::find(&req.path) else {
            // Unknown paths look exactly like private ones to strangers.
            self.authenticate(&req).await?;
            return Err(Error::NotFound("unsupported path".into()));
        };
        let caller = match route.access {
            Access::Public => None,
            Access::Token | Access::Root => Some(self.authenticate(&req).await?),
        };
        if route.access == Access::Root && !caller.as_ref().is_some_and(TokenEntry::is_root) {
            return Err(Error::PermissionDenied);
        }
        if !route.operations.contains(&req.operation) {
            return Err(Error::MethodNotAllowed("unsupported operation".into()));
        }
        sys::dispatch(self, route.id, req, caller).await
    }

    async fn load_cluster_info(&self) -> Result<()> {
        if let Some(entry) = self.backend().get(CLUSTER_KEY).await.map_err(|e| Error::StorageUnavailable(e.to_string()))? {
            let info: ClusterInfo =
                serde_json::from_slice(&entry.value).map_err(|_| Error::Integrity { key: CLUSTER_KEY.into() })?;
            *self.cluster.write().expect("cluster lock") = info;
        }
        Ok(())
    }

    async fn ensure_cluster_info(&self) -> Result<()> {
        let id = uuid::Uuid::new_v4().to_string();
        let info = ClusterInfo {
            cluster_name: self
                .config
                .cluster_name
                .clone()
                .unwrap_or_else(|| format!("zafe-cluster-{}", &id[..8])),
            cluster_id: id,
        };
        let op = Op::Put {
            entry: Entry {
                key: CLUSTER_KEY.into(),
                value: serde_json::to_vec(&info).expect("serialisable"),
                generation: 1,
            },
            condition: Condition::Absent,
        };
        // Another node may have written it first; then we read theirs.
        let _ = self.backend().commit(vec![op]).await;
        self.load_cluster_info().await
    }
}
