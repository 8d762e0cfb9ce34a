//! The core: holds the barrier, the seal, the token store's key and the
//! server identity, and handles every request in one place:
//!
//! 1. find the route (an unknown path is treated like a known private one
//!    until the caller is authenticated, so probing reveals nothing);
//! 2. authenticate, unless the route is on the public allowlist (R-AUTH-1);
//! 3. authorise (one decision, here);
//! 4. dispatch to the handler.

use parking_lot::RwLock;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use zafe_core::identity::IdentityKey;
use zafe_core::keyring::purpose;
use zafe_core::secret::SecretKey;
use zafe_storage::{Backend, Condition, Entry, Op};

use crate::barrier::{Barrier, RewrapProgress};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mounts::{Handler, MountTable, Mounted, Router};
use crate::policies::Capability;
use crate::policies::{AclCache, PolicyStore};
use crate::seal::{self, Seal};
use crate::sys::{self, Access};
use crate::tokens::{self, TokenSpec};
use zafe_engine::{Caller as EngineCaller, Clock, Ctx, Grant, Timestamp};

use crate::caller::Caller;

const CLUSTER_KEY: &str = "seal/cluster-info";

/// The capability an operation needs; writes need `create` when the target
/// does not exist yet and `update` when it does, as in Vault.
pub fn capability(op: Operation, exists: bool) -> Capability {
    match op {
        Operation::Read | Operation::Head => Capability::Read,
        Operation::List => Capability::List,
        Operation::Write if exists => Capability::Update,
        Operation::Write => Capability::Create,
        Operation::Delete => Capability::Delete,
        Operation::Patch => Capability::Patch,
    }
}

pub use zafe_engine::{Operation, Request, RequestBody, RequestToken, Response};

/// The cluster's name and id, as Vault's `sys/health` and `sys/leader` show them; the same on every node.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// A readable name, generated once at initialisation.
    pub cluster_name: String,
    /// A random uuid, generated once at initialisation.
    pub cluster_id: String,
}

/// Everything the core holds only while unsealed: one value, so that sealing is one `take()`
/// and nothing unsealed can outlive the seal by being forgotten in a field. The keys are
/// zeroized when the last in-flight request lets go of them.
struct Unsealed {
    token_key: SecretKey,
    /// Argon2's secret input for passwords (people/password.rs).
    password_pepper: SecretKey,
    /// The mount table as a router; loaded on first use, replaced on a mount change.
    router: RwLock<Option<Arc<Router>>>,
    /// Compiled ACLs.
    acls: AclCache,
    /// An `operator rekey` in progress.
    rekey: parking_lot::Mutex<Option<RekeyProgress>>,
}

/// The core: the barrier, the seal, the token store's keys, the policy store, the audit broker and the router,
/// and the one place every `/v1/` request is authenticated, authorised and dispatched ([`Core::handle`]).
pub struct Core {
    /// The server configuration, as loaded at start.
    pub config: Config,
    /// The one clock every decision about time reads.
    clock: Arc<dyn Clock>,
    /// The project rule the authorisation decision asks.
    projects: Arc<dyn ProjectRule>,
    /// The engines mounts can use.
    engines: crate::mounts::Engines,
    /// This node's random id, new at every start: tells its own notices from other nodes'.
    node_id: String,
    /// Which secrets changed, for whoever follows them, on every node.
    changes: Arc<crate::changes::NodeFeed>,
    /// The agents connected to this node.
    connected_agents: crate::agents::Connected,
    /// Ids of agents revoked or given a new token, so that their connections end at once.
    agent_revocations: tokio::sync::broadcast::Sender<String>,
    /// The encryption barrier: the only way to storage for everything above it.
    pub barrier: Arc<Barrier>,
    /// Init, unseal shares and the seal configuration.
    pub seal: Seal,
    /// The server's Ed25519 identity key (outside the barrier: it proves who the server is while sealed). Never log it.
    pub identity: IdentityKey,
    /// SHA-256 of the SPKI of the certificate our own TLS listener presents.
    pub tls_spki: Option<[u8; 32]>,
    /// The same, for the certificate a TLS-terminating proxy presents.
    pub proxy_spki: Option<[u8; 32]>,
    token_pepper: Option<SecretKey>,
    /// `None` while sealed.
    unsealed: RwLock<Option<Arc<Unsealed>>>,
    cluster: RwLock<ClusterInfo>,
    /// The policy store (serialises policy changes of this process).
    pub policies: PolicyStore,
    /// The progress of the last key-encryption-key re-wrap, for `sys/key-status`.
    pub rewrap: RwLock<Option<Arc<RewrapProgress>>>,
    /// Every request is written here before its response leaves (R-AUD-1).
    pub audit: crate::audit::AuditLog,
    /// Unix second of the last reload of the mount table on a routing miss.
    last_mount_reload: std::sync::atomic::AtomicI64,
    /// OIDC login, when `[oidc]` is configured (set once at start).
    oidc: std::sync::OnceLock<crate::people::oidc::Oidc>,
    /// People: password hashing, login limits (people/).
    pub people: crate::people::People,
}

/// An `operator rekey` in progress: the new configuration and the current
/// shares collected so far.
struct RekeyProgress {
    nonce: String,
    shares: usize,
    threshold: usize,
    collected: Vec<String>,
}

/// The project rule, as the core asks it: what a person's memberships grant, which paths a
/// person must not learn about, and what a service account's scopes allow. `projects`
/// implements it and the core holds it, so the core's authorisation imports no project code
/// (OpenBao's policy store depends on a small interface instead of the core in the same way).
#[async_trait::async_trait]
pub trait ProjectRule: Send + Sync {
    /// The role policies (name, HCL) `user_id` holds through their memberships, read from
    /// storage now, so a removed member loses access at once.
    async fn role_policies(&self, core: &Core, user_id: &str) -> Result<Vec<(String, String)>>;

    /// Refuses with the project's 404 when `path` is about a project `user_id` is not a member
    /// of, whether the project exists or not (R-ACL-2).
    async fn check_visible(
        &self,
        core: &Core,
        user_id: &str,
        path: &str,
        router: Option<&Router>,
    ) -> Result<()>;

    /// The ACL an agent's environments make, as they exist in its project now: a removed
    /// environment or project grants nothing (the core allows it read and list only).
    async fn agent_acl(
        &self,
        core: &Core,
        agent: &crate::agents::Agent,
    ) -> Result<zafe_core::policy::Acl>;

    /// The ACL a service account's scopes make (the core allows it read and list only).
    async fn account_acl(
        &self,
        core: &Core,
        account: &crate::service_accounts::ServiceAccount,
    ) -> Result<zafe_core::policy::Acl>;
}

/// Everything [`Core::new`] needs.
pub struct CoreParts {
    /// The server configuration, as loaded at start.
    pub config: Config,
    /// The one clock (the system's; a manual one in tests).
    pub clock: Arc<dyn Clock>,
    /// The project rule (`projects::rule()`).
    pub projects: Arc<dyn ProjectRule>,
    /// The engines mounts can use (`zafe_engines::build`).
    pub engines: crate::mounts::Engines,
    /// Physical storage (SQLite or PostgreSQL).
    pub backend: Arc<dyn Backend>,
    /// The server's Ed25519 identity key (outside the barrier: it proves who the server is while sealed). Never log it.
    pub identity: IdentityKey,
    /// A master key for auto-unseal (`ZAFE_MASTER_KEY`), if configured; otherwise Shamir shares.
    pub master_key: Option<SecretKey>,
    /// A configured secret the token key is derived from (so several nodes hash tokens alike), if any; otherwise it comes from the keyring.
    pub token_pepper: Option<SecretKey>,
    /// SHA-256 of the SPKI of the server's own TLS certificate, bound into identity proofs.
    pub tls_spki: Option<[u8; 32]>,
    /// The same for a TLS-terminating proxy's certificate, when one is configured.
    pub proxy_spki: Option<[u8; 32]>,
}

impl Core {
    /// A sealed core over its parts: starts the audit broker and reads the cluster identity.
    pub async fn new(parts: CoreParts) -> Result<Arc<Self>> {
        let audit = crate::audit::AuditLog::start(
            parts.backend.clone(),
            &parts.config.audit,
            &parts.identity,
        )
        .map_err(Error::AuditUnavailable)?;
        let people = crate::people::People::new(&parts.config.auth)?;
        let node_id = uuid::Uuid::new_v4().to_string();
        let core = Arc::new(Self {
            config: parts.config,
            clock: parts.clock,
            projects: parts.projects,
            engines: parts.engines,
            changes: Arc::new(crate::changes::NodeFeed::new(
                node_id.clone(),
                parts.backend.clone(),
            )),
            node_id,
            agent_revocations: tokio::sync::broadcast::channel(256).0,
            connected_agents: Default::default(),
            barrier: Arc::new(Barrier::new(parts.backend.clone())),
            seal: Seal::new(parts.backend, parts.master_key),
            identity: parts.identity,
            tls_spki: parts.tls_spki,
            proxy_spki: parts.proxy_spki,
            token_pepper: parts.token_pepper,
            unsealed: RwLock::new(None),
            cluster: RwLock::new(ClusterInfo::default()),
            policies: PolicyStore::default(),
            rewrap: RwLock::new(None),
            last_mount_reload: std::sync::atomic::AtomicI64::new(0),
            oidc: std::sync::OnceLock::new(),
            people,
            audit,
        });
        core.load_cluster_info().await?;
        crate::notices::follow(&core);
        Ok(core)
    }

    /// Turns OIDC login on; once, at start.
    pub fn set_oidc(&self, oidc: crate::people::oidc::Oidc) {
        if self.oidc.set(oidc).is_err() {
            tracing::warn!(
                "OIDC login was already configured; the second configuration is ignored"
            );
        }
    }

    /// OIDC login, when `[oidc]` is configured.
    pub fn oidc(&self) -> Option<&crate::people::oidc::Oidc> {
        self.oidc.get()
    }

    /// Physical storage (ciphertext only), for the parts that write below the barrier: seal, audit.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.barrier.backend()
    }

    /// The change feed: committed changes to secrets, names and versions only.
    pub fn changes(&self) -> &dyn crate::changes::ChangeFeed {
        self.changes.as_ref()
    }

    /// Follows revocations of agents (their ids): a connected agent's session ends at once.
    pub fn agent_revocations(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.agent_revocations.subscribe()
    }

    /// The agents connected to this node, and what they reported.
    pub fn connected_agents(&self) -> &crate::agents::Connected {
        &self.connected_agents
    }

    /// Tells connected sessions, on every node, that the agent `id` was revoked or given a new
    /// token.
    pub(crate) fn agent_revoked(&self, id: &str) {
        self.agent_revoked_here(id);
        let payload = serde_json::to_string(&crate::notices::Revoked {
            node: self.node_id.clone(),
            agent: id.to_string(),
        });
        if let (Ok(payload), Ok(runtime)) = (payload, tokio::runtime::Handle::try_current()) {
            let backend = self.backend().clone();
            runtime.spawn(async move {
                if let Err(e) = backend
                    .publish(crate::notices::AGENT_REVOKED, &payload)
                    .await
                {
                    // The other nodes' sessions still end at their next heartbeat check.
                    tracing::warn!(error = %e, "could not tell the other nodes about a revocation");
                }
            });
        }
    }

    /// Tells this node's connected sessions that the agent `id` was revoked.
    pub(crate) fn agent_revoked_here(&self, id: &str) {
        // Nobody connected is not an error.
        let _ = self.agent_revocations.send(id.to_string());
    }

    /// This node's id (random, new at every start).
    pub(crate) fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The node's change feed, for the notice follower.
    pub(crate) fn node_feed(&self) -> &crate::changes::NodeFeed {
        &self.changes
    }

    /// Now, by the core's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Now in Unix seconds, the unit of the token store and of sessions.
    pub fn now_secs(&self) -> i64 {
        self.clock.now().secs()
    }

    /// Whether the core holds no keys.
    pub fn is_sealed(&self) -> bool {
        self.unsealed.read().is_none()
    }

    /// The cluster's name and id.
    pub fn cluster(&self) -> ClusterInfo {
        self.cluster.read().clone()
    }

    /// Whether `sys/init` has run (a seal configuration is stored).
    pub async fn is_initialized(&self) -> Result<bool> {
        Ok(self.seal.config().await?.is_some())
    }

    /// Initialises the server: creates the keys, the shares and the root
    /// token. With a master key the server stays unsealed; with shares only
    /// it is sealed again afterwards, as in Vault.
    pub async fn initialize(
        &self,
        shares: usize,
        threshold: usize,
        root_token: Option<&str>,
    ) -> Result<(Vec<zafe_core::shamir::Share>, String)> {
        let init = self
            .seal
            .initialize(shares, threshold, self.now_secs())
            .await?;
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
            self.now_secs(),
        )
        .await;
        if !self.seal.has_master_key() {
            self.close();
        }
        let (token, _) = created?;
        Ok((init.shares, token))
    }

    /// Opens the barrier with unsealed keys.
    pub fn open(&self, unsealed: seal::Unsealed) {
        let token_key = match &self.token_pepper {
            Some(pepper) => zafe_core::crypto::derive_key(pepper.expose(), purpose::TOKEN_HMAC),
            None => unsealed.keyring.derive(purpose::TOKEN_HMAC),
        };
        let password_pepper = self.people.pepper_from(&unsealed.keyring);
        // The audit keys first: no request may run unsealed without them.
        self.audit.unsealed(&unsealed.keyring);
        self.barrier.unseal(unsealed.root_key, unsealed.keyring);
        *self.unsealed.write() = Some(Arc::new(Unsealed {
            token_key,
            password_pepper,
            router: RwLock::new(None),
            acls: AclCache::default(),
            rekey: parking_lot::Mutex::new(None),
        }));
    }

    /// Seals: forgets every key (they are zeroized when the last in-flight
    /// request lets go of them) and any unseal progress.
    pub fn close(&self) {
        // The core's keys, router, ACL cache and rekey progress, in one.
        self.unsealed.write().take();
        // The parts below keep their own keys and forget them themselves.
        self.barrier.seal();
        self.seal.reset_progress();
        self.audit.sealed();
    }

    /// Unseals with the configured master key (auto-unseal).
    pub async fn unseal_with_master_key(&self) -> Result<()> {
        let unsealed = self.seal.unseal_with_master_key().await?;
        self.open(unsealed);
        Ok(())
    }

    /// The unsealed state, or [`Error::Sealed`].
    fn unsealed(&self) -> Result<Arc<Unsealed>> {
        self.unsealed.read().clone().ok_or(Error::Sealed)
    }

    /// A copy of the token store's HMAC key, while unsealed. Never log it.
    pub fn token_key(&self) -> Result<SecretKey> {
        Ok(self.unsealed()?.token_key.duplicate())
    }

    /// Forgets every compiled ACL (after a policy change).
    pub fn clear_acl_cache(&self) {
        if let Some(unsealed) = self.unsealed.read().as_ref() {
            unsealed.acls.clear();
        }
    }

    /// The password pepper (Argon2's secret), while unsealed.
    pub fn password_pepper(&self) -> Result<SecretKey> {
        Ok(self.unsealed()?.password_pepper.duplicate())
    }

    /// Resolves the request's token. Every failure is the same 403: unknown,
    /// expired, used up, or used from outside its bound CIDRs. A limited-use
    /// token has one use counted here (R-AUTH-10).
    pub async fn authenticate(&self, req: &Request) -> Result<Caller> {
        if self.is_sealed() {
            return Err(Error::Sealed);
        }
        let token = req.token.as_deref().ok_or(Error::PermissionDenied)?;
        if token.starts_with("zafe_sa_") {
            return crate::service_accounts::authenticate(
                &self.barrier,
                &self.token_key()?,
                token,
                req.client_ip,
                self.now_secs(),
            )
            .await?
            .map(crate::service_accounts::Principal::into_caller)
            .ok_or(Error::PermissionDenied)
            .inspect(crate::audit::note_caller);
        }
        // Borrowed, not `token_key()`: no copy of the key per request.
        let keys = self.unsealed()?;
        if token.starts_with("zafe_ag_") {
            // A host agent (agents.rs).
            return crate::agents::authenticate(
                &self.barrier,
                &keys.token_key,
                token,
                self.now_secs(),
            )
            .await?
            .map(crate::agents::as_caller)
            .ok_or(Error::PermissionDenied)
            .inspect(crate::audit::note_caller);
        }
        if token.starts_with("zafe_at_") {
            // A person's session (people/sessions.rs).
            return crate::people::sessions::authenticate(
                &self.barrier,
                &keys.token_key,
                token,
                self.now_secs(),
            )
            .await?
            .ok_or(Error::PermissionDenied)
            .inspect(crate::audit::note_caller);
        }
        tokens::authenticate(
            &self.barrier,
            &keys.token_key,
            token,
            req.client_ip,
            self.now_secs(),
        )
        .await?
        .map(Caller::Token)
        .ok_or(Error::PermissionDenied)
        .inspect(crate::audit::note_caller)
    }

    /// Revokes a token of the token store and its children.
    pub async fn revoke_token(&self, token: &str) -> Result<()> {
        tokens::revoke(&self.barrier, &self.token_key()?, token).await
    }

    /// The single entry point for every `/v1/` request.
    pub async fn handle(self: &Arc<Self>, req: Request) -> Result<Response> {
        // `X-Vault-Wrap-TTL`: the answer goes into a single-use wrapping token.
        let wrap = req.wrap_ttl.map(|ttl| (ttl, req.path.clone()));
        let response = self.answer(req).await?;
        match wrap {
            Some((ttl, path)) => crate::wrapping::wrap(self, response, ttl, &path).await,
            None => Ok(response),
        }
    }

    /// [`Core::handle`] before any wrapping.
    async fn answer(self: &Arc<Self>, req: Request) -> Result<Response> {
        if let Some((route, rest)) = sys::find(&req.path) {
            let caller = match route.access {
                Access::Public => None,
                // Harmless metadata any valid token may see (`sys/leader`,
                // the CLI's mount probe): authenticated, no ACL check.
                Access::Authenticated => Some(self.authenticate(&req).await?),
                Access::Token | Access::Sudo => {
                    let caller = self.authenticate(&req).await?;
                    let needed = capability(req.operation, true);
                    self.authorize(&caller, &req.path, needed, route.access == Access::Sudo)
                        .await?;
                    Some(caller)
                }
            };
            if !route.operations.contains(&req.operation) {
                return Err(Error::MethodNotAllowed("unsupported operation".into()));
            }
            let rest = rest.to_string();
            return sys::dispatch(self, route.id, &rest, req, caller).await;
        }
        if self.is_sealed() {
            return Err(Error::Sealed);
        }
        let router = self.router().await?;
        let resolved = match router.resolve(&req.path) {
            Some((m, rel)) => Some((m.clone(), rel.to_string())),
            // Another node may have mounted it since we loaded the table.
            // Reloads on a miss are rate-limited, so strangers probing
            // unknown paths cannot make the server re-read storage at will.
            None if self.may_reload_mounts() => self
                .reload_mounts_router()
                .await?
                .resolve(&req.path)
                .map(|(m, rel)| (m.clone(), rel.to_string())),
            None => None,
        };
        let Some((mounted, rel)) = resolved else {
            // Unknown paths look exactly like private ones to strangers.
            self.authenticate(&req).await?;
            return Err(Error::NotFound("unsupported path".into()));
        };
        let engine = match &mounted.handler {
            Handler::TokenStore => {
                let caller = self.authenticate(&req).await?;
                let ctx = crate::tokens::api::Ctx {
                    core: self,
                    mount: &mounted.entry,
                    view: crate::mounts::view_for(self, &mounted.entry),
                    caller: &caller,
                };
                let exists = match req.operation {
                    Operation::Write => crate::tokens::api::exists(&ctx, &rel).await?,
                    _ => true,
                };
                self.authorize(&caller, &req.path, capability(req.operation, exists), false)
                    .await?;
                return crate::tokens::api::handle(&ctx, &req, &rel).await;
            }
            Handler::Engine(engine) => engine,
        };
        let entry = if engine.is_public(&rel, req.operation) {
            None
        } else {
            Some(self.authenticate(&req).await?)
        };
        let caller = entry.as_ref().map(Caller::engine_caller);
        let ctx = self.engine_ctx(&mounted, caller.as_ref());
        if let Some(entry) = &entry {
            let exists = match req.operation {
                Operation::Write => engine.exists(&ctx, &rel).await?,
                _ => true,
            };
            self.authorize(entry, &req.path, capability(req.operation, exists), false)
                .await?;
        }
        match engine.handle(&ctx, &req, &rel).await? {
            Response::Login { grant, warnings } => self.mint(&mounted, grant, warnings).await,
            response => Ok(response),
        }
    }

    /// What an engine gets for one request: its mount, its view, the caller, the system view.
    fn engine_ctx<'a>(&'a self, mounted: &'a Mounted, caller: Option<&'a EngineCaller>) -> Ctx<'a> {
        Ctx {
            mount: &mounted.mount,
            view: crate::mounts::view_for(self, &mounted.entry),
            caller,
            system: self,
        }
    }

    /// A request the core makes to an engine for a caller it has already authorised for
    /// everything the request does (`sys/resolve`, project listings).
    pub(crate) async fn call_engine(
        &self,
        mounted: &Mounted,
        caller: &Caller,
        request: &Request,
        rel: &str,
    ) -> Result<Response> {
        let Handler::Engine(engine) = &mounted.handler else {
            return Err(Error::NotFound("unsupported path".into()));
        };
        let caller = caller.engine_caller();
        engine
            .handle(&self.engine_ctx(mounted, Some(&caller)), request, rel)
            .await
    }

    /// Turns an auth engine's grant into a token: the lifetime is planned under the grant's
    /// limits, the entry stored, and the token returned once in Vault's `auth` block.
    async fn mint(
        &self,
        mounted: &Mounted,
        grant: Grant,
        mut warnings: Vec<String>,
    ) -> Result<Response> {
        let (lifetime, planned) = tokens::plan_lifetime(&grant.lifetime, None, self.now_secs());
        warnings.extend(planned);
        let new = tokens::NewToken {
            policies: grant.policies,
            display_name: grant.display_name,
            path: grant.path,
            meta: grant.meta,
            parent: None,
            num_uses: grant.num_uses,
            lifetime,
            renewable: grant.renewable,
            role: None,
            bound_cidrs: grant.bound_cidrs,
        };
        let (token, entry) =
            tokens::issue(&self.barrier, &self.token_key()?, new, self.now_secs()).await?;
        tracing::info!(mount = %mounted.entry.path, accessor = %entry.accessor, "login");
        Ok(crate::tokens::api::auth_reply(
            &entry,
            Some(&token),
            warnings,
            entry.created_at,
        ))
    }

    /// The one authorisation decision (R-ACL-1): the caller's policies must
    /// grant `needed` on `path` (and `sudo` too, for root-protected paths).
    pub async fn authorize(
        &self,
        caller: &Caller,
        path: &str,
        needed: Capability,
        sudo: bool,
    ) -> Result<()> {
        if caller.is_root() {
            return Ok(());
        }
        // Vault's HTTP layer gives LIST paths a trailing slash before the
        // ACL sees them; policies are written with that in mind.
        let listed;
        let path = if needed == Capability::List && !path.ends_with('/') {
            listed = format!("{path}/");
            listed.as_str()
        } else {
            path
        };
        // Machine identities (service accounts, agents) read and list, nothing else, whatever
        // their scopes or environments say (lessons.md: "read-only" accounts that could write
        // through a second API).
        let machine = match (caller.service_account(), caller.agent()) {
            (Some(account), _) => Some(self.projects.account_acl(self, account).await?),
            (_, Some(agent)) => Some(self.projects.agent_acl(self, agent).await?),
            _ => None,
        };
        if let Some(acl) = machine {
            let permitted = matches!(needed, Capability::Read | Capability::List)
                && !sudo
                && acl.allows(path, needed);
            return if permitted {
                Ok(())
            } else {
                Err(Error::PermissionDenied)
            };
        }
        let acl = self.acl_of(caller).await?;
        if acl.allows(path, needed) && (!sudo || acl.allows(path, Capability::Sudo)) {
            return Ok(());
        }
        // A person who is not a member of the project a path is about gets
        // the same 404 whether the project exists or not (R-ACL-2).
        if let Some(user) = caller.person() {
            let router = self.unsealed()?.router.read().clone();
            self.projects
                .check_visible(self, &user.user_id, path, router.as_deref())
                .await?;
        }
        Err(Error::PermissionDenied)
    }

    /// The compiled ACL of a caller that is not root: a token's policies,
    /// or for a person's session the role policies of their project
    /// memberships (read from storage on every call, so a removed member
    /// loses access at once) plus the extra policies they were given.
    pub async fn acl_of(&self, caller: &Caller) -> Result<Arc<zafe_core::policy::Acl>> {
        match caller.person() {
            Some(user) => {
                let generated = self.projects.role_policies(self, &user.user_id).await?;
                self.unsealed()?
                    .acls
                    .acl_for_generated(&self.barrier, &generated, &caller.token().policies)
                    .await
            }
            None => {
                self.unsealed()?
                    .acls
                    .acl_for(&self.barrier, &caller.token().policies)
                    .await
            }
        }
    }

    /// The routing table, loading it on first use after unseal.
    pub async fn router(self: &Arc<Self>) -> Result<Arc<Router>> {
        if let Some(router) = self.unsealed()?.router.read().clone() {
            return Ok(router);
        }
        self.reload_mounts_router().await
    }

    /// At most one reload-on-miss per second.
    fn may_reload_mounts(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = self.now_secs();
        let last = self.last_mount_reload.load(Ordering::Relaxed);
        now > last
            && self
                .last_mount_reload
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    async fn reload_mounts_router(self: &Arc<Self>) -> Result<Arc<Router>> {
        let table = crate::mounts::load_or_create(self).await?;
        let unsealed = self.unsealed()?;
        let previous = unsealed.router.read().clone();
        let router = Arc::new(Router::build(&table, previous.as_deref(), self.engines));
        *unsealed.router.write() = Some(router.clone());
        Ok(router)
    }

    /// Rebuilds the router after a change to the mount table.
    pub async fn reload_mounts(self: &Arc<Self>) -> Result<MountTable> {
        let table = crate::mounts::load_or_create(self).await?;
        let unsealed = self.unsealed()?;
        let previous = unsealed.router.read().clone();
        *unsealed.router.write() = Some(Arc::new(Router::build(
            &table,
            previous.as_deref(),
            self.engines,
        )));
        Ok(table)
    }

    /// `operator rotate`: a new key-encryption key for new writes, then a
    /// background re-wrap of older records, whose progress `key_status` shows.
    pub async fn rotate_keyring(self: &Arc<Self>) -> Result<u32> {
        let version = self.barrier.rotate().await?;
        let progress = Arc::new(RewrapProgress::default());
        *self.rewrap.write() = Some(progress.clone());
        let core = self.clone();
        tokio::spawn(async move {
            match core.barrier.rewrap(&progress).await {
                Ok(()) => tracing::info!(
                    rewrapped = progress
                        .rewrapped
                        .load(std::sync::atomic::Ordering::Relaxed),
                    "re-wrap finished"
                ),
                Err(e) => tracing::error!(error = %e, "re-wrap stopped"),
            }
            progress
                .done
                .store(true, std::sync::atomic::Ordering::Relaxed);
        });
        Ok(version)
    }

    /// Vault's `sys/key-status`, plus the progress of the last re-wrap.
    pub fn key_status(&self) -> Result<Response> {
        use std::sync::atomic::Ordering::Relaxed;
        let keyring = self.barrier.keyring()?;
        let rewrap = self.rewrap.read().clone();
        let data = serde_json::json!({
            "term": keyring.active().0,
            "versions": keyring.versions().collect::<Vec<_>>(),
            "install_time": "",
            "encryptions": 0,
            "rewrap": rewrap.map(|p| serde_json::json!({
                "scanned": p.scanned.load(Relaxed),
                "rewrapped": p.rewrapped.load(Relaxed),
                "done": p.done.load(Relaxed),
            })),
        });
        // Vault puts these at the top level as well.
        let top_level = data.as_object().cloned().unwrap_or_default();
        Ok(Response::VaultWithTopLevel { data, top_level })
    }

    /// Starts an `operator rekey`: new share count and threshold.
    pub fn rekey_init(&self, shares: usize, threshold: usize) -> Result<Value> {
        zafe_core::shamir::validate(shares, threshold)
            .map_err(|e| Error::bad_request(format!("invalid seal configuration: {e}")))?;
        let nonce = uuid::Uuid::new_v4().to_string();
        *self.unsealed()?.rekey.lock() = Some(RekeyProgress {
            nonce: nonce.clone(),
            shares,
            threshold,
            collected: Vec::new(),
        });
        Ok(
            serde_json::json!({ "started": true, "nonce": nonce, "n": shares, "t": threshold, "progress": 0 }),
        )
    }

    /// `GET sys/rekey/init`: the rekey in progress, in Vault's shape.
    pub async fn rekey_status(&self) -> Result<Value> {
        let required = self.seal.config().await?.map_or(0, |c| c.secret_threshold);
        let unsealed = self.unsealed()?;
        let guard = unsealed.rekey.lock();
        Ok(match guard.as_ref() {
            Some(p) => serde_json::json!({
                "started": true, "nonce": p.nonce, "t": p.threshold, "n": p.shares,
                "progress": p.collected.len(), "required": required, "pgp_fingerprints": null,
                "backup": false, "verification_required": false, "verification_nonce": "",
            }),
            None => serde_json::json!({
                "started": false, "nonce": "", "t": 0, "n": 0, "progress": 0, "required": required,
                "pgp_fingerprints": null, "backup": false, "verification_required": false, "verification_nonce": "",
            }),
        })
    }

    /// Forgets the `operator rekey` in progress, if any.
    pub fn rekey_cancel(&self) {
        if let Some(unsealed) = self.unsealed.read().as_ref() {
            unsealed.rekey.lock().take();
        }
    }

    /// Takes one current share; at the threshold, rekeys and returns the
    /// new shares.
    pub async fn rekey_update(&self, nonce: &str, key: &str) -> Result<Value> {
        let threshold = self
            .seal
            .config()
            .await?
            .ok_or(Error::NotInitialized)?
            .secret_threshold;
        let (shares, new_threshold, collected) = {
            let unsealed = self.unsealed()?;
            let mut guard = unsealed.rekey.lock();
            let progress = guard.as_mut().ok_or_else(|| {
                Error::bad_request("no rekey is in progress: start one with sys/rekey/init")
            })?;
            if progress.nonce != nonce {
                return Err(Error::bad_request(
                    "the nonce does not match the rekey in progress",
                ));
            }
            if !progress.collected.iter().any(|k| k == key) {
                progress.collected.push(key.to_string());
            }
            if progress.collected.len() < threshold {
                return Ok(
                    serde_json::json!({ "started": true, "nonce": nonce, "progress": progress.collected.len(), "required": threshold, "complete": false }),
                );
            }
            let p = guard.take().expect("checked above");
            (p.shares, p.threshold, p.collected)
        };
        let root = self.barrier.root_key()?;
        let issued = self
            .seal
            .rekey(&self.barrier, &root, &collected, shares, new_threshold)
            .await?;
        use base64::Engine as _;
        Ok(serde_json::json!({
            "complete": true,
            "nonce": nonce,
            "keys": issued.iter().map(|s| hex::encode(s.as_bytes())).collect::<Vec<_>>(),
            "keys_base64": issued.iter().map(|s| base64::engine::general_purpose::STANDARD.encode(s.as_bytes())).collect::<Vec<_>>(),
        }))
    }

    /// Reads the cluster's name and id again (after a restore replaced them).
    pub(crate) async fn reload_cluster_info(&self) -> Result<()> {
        self.load_cluster_info().await
    }

    async fn load_cluster_info(&self) -> Result<()> {
        if let Some(entry) = self
            .backend()
            .get(CLUSTER_KEY)
            .await
            .map_err(|e| Error::StorageUnavailable(e.to_string()))?
        {
            let info: ClusterInfo =
                serde_json::from_slice(&entry.value).map_err(|_| Error::Integrity {
                    key: CLUSTER_KEY.into(),
                })?;
            *self.cluster.write() = info;
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

#[cfg(test)]
impl Core {
    /// Panics while holding every lock of the core and of its parts (barrier, seal, ACL cache,
    /// audit log, password hasher): the test that a panic cannot wedge the server
    /// (http.rs, `a_panic_inside_locks_does_not_wedge_the_server`).
    pub(crate) fn panic_holding_locks(&self) {
        let unsealed = self.unsealed.read().clone();
        let _unsealed = unsealed
            .as_ref()
            .map(|u| (u.router.write(), u.rekey.lock(), u.acls.hold_locks()));
        let _core = (
            self.unsealed.write(),
            self.cluster.write(),
            self.rewrap.write(),
        );
        let _parts = (
            self.barrier.hold_locks(),
            self.seal.hold_locks(),
            self.audit.hold_locks(),
            self.people.limits.hold_locks(),
            self.people.hasher.hold_locks(),
        );
        panic!("a panic inside locked sections");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vault's rule: a write needs `create` on a new target and `update` on
    // an existing one; every other operation needs its own capability,
    // whether or not the target exists.
    #[test]
    fn each_operation_needs_its_capability() {
        use Capability as C;
        for exists in [false, true] {
            assert_eq!(capability(Operation::Read, exists), C::Read);
            assert_eq!(capability(Operation::Head, exists), C::Read);
            assert_eq!(capability(Operation::List, exists), C::List);
            assert_eq!(capability(Operation::Delete, exists), C::Delete);
            assert_eq!(capability(Operation::Patch, exists), C::Patch);
        }
        assert_eq!(capability(Operation::Write, false), C::Create);
        assert_eq!(capability(Operation::Write, true), C::Update);
    }
}
