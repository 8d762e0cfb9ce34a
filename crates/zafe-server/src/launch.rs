//! Starting a server: the three ways in (`--dev`, quick start, `--config`),
//! preflight checks, the listener (plain or TLS) and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zafe_core::identity::IdentityKey;
use zafe_core::secret::SecretKey;
use zafe_storage::Backend;
use zafe_storage::postgres::PostgresBackend;
use zafe_storage::sqlite::SqliteBackend;

use crate::config::{self, Config, StorageKind};
use crate::core::{Core, CoreParts};

/// How `zafe server` was invoked.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `--config`: the configuration file; none means defaults and environment.
    pub config_path: Option<PathBuf>,
    /// `--dev`: in-memory storage, initialised and unsealed at start, with a
    /// root token printed (or `dev_root_token`). Never for real secrets.
    pub dev: bool,
    /// `--dev-root-token`: the root token a dev server uses instead of a
    /// random one.
    pub dev_root_token: Option<zafe_core::secret::SecretString>,
    /// `--listen`: overrides `listen` from the configuration.
    pub listen: Option<SocketAddr>,
    /// Start even though the store is older than this node's rollback
    /// anchor (`--accept-rollback`; also `ZAFE_ACCEPT_ROLLBACK=1`).
    pub accept_rollback: bool,
    /// The engines mounts can use (the binary passes `zafe_engines::build`), so that the
    /// server's crate does not depend on the engines'.
    pub engines: crate::mounts::Engines,
}

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityFileError),
    #[error(transparent)]
    Rollback(#[from] crate::anchor::AnchorError),
    #[error("storage: {0}")]
    Storage(#[from] zafe_storage::StorageError),
    #[error("{0}")]
    Preflight(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl From<crate::error::Error> for LaunchError {
    fn from(e: crate::error::Error) -> Self {
        LaunchError::Preflight(e.to_string())
    }
}

/// Runs a server until SIGINT or SIGTERM.
pub async fn run(launch: Launch) -> Result<(), LaunchError> {
    for failed in crate::hardening::disable_core_dumps() {
        tracing::warn!(call = failed, "could not disable core dumps");
    }
    install_panic_hook();
    let _ = rustls::crypto::ring::default_provider().install_default();

    enum Mode {
        Dev,
        Configured,
        Quick,
    }
    let (mode, mut config) = if launch.dev {
        let mut config = Config::default();
        config.apply_env(&config::process_env)?;
        config.storage.kind = StorageKind::Memory;
        (Mode::Dev, config)
    } else if let Some(path) = &launch.config_path {
        let mut config = Config::from_file(path)?;
        config.apply_env(&config::process_env)?;
        (Mode::Configured, config)
    } else {
        let mut config = Config::default();
        config.apply_env(&config::process_env)?;
        (Mode::Quick, config)
    };
    if let Some(listen) = launch.listen {
        config.listen = Some(listen);
    }
    config.validate()?;
    // Listen before anything is created or initialised: a first start on a
    // busy port once made the master key, identity and database, then
    // failed, and the root token and recovery key were never shown.
    let listener = bind(config.listen())?;
    let (core, banner) = match mode {
        Mode::Dev => {
            start_dev(
                config,
                launch
                    .dev_root_token
                    .as_ref()
                    .map(zafe_core::secret::SecretString::expose),
                launch.engines,
            )
            .await?
        }
        Mode::Configured => (
            start_configured(config, accept_rollback(&launch), launch.engines).await?,
            None,
        ),
        Mode::Quick => start_quick(config, accept_rollback(&launch), launch.engines).await?,
    };
    serve(core, banner, listener).await
}

/// The server's socket, bound and non-blocking, before any state exists.
fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, LaunchError> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| LaunchError::Listen { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| LaunchError::Listen { addr, source })?;
    Ok(listener)
}

/// `zafe server --dev`: in memory, unsealed, root token printed.
async fn start_dev(
    config: Config,
    dev_root_token: Option<&str>,
    engines: crate::mounts::Engines,
) -> Result<(Arc<Core>, Option<String>), LaunchError> {
    let backend: Arc<dyn Backend> = Arc::new(SqliteBackend::memory().await?);
    let core = Core::new(CoreParts {
        config,
        clock: std::sync::Arc::new(zafe_engine::SystemClock),
        projects: crate::projects::rule(),
        engines,
        backend,
        // Ephemeral by design, like everything else in dev mode.
        identity: IdentityKey::generate(),
        master_key: Some(SecretKey::generate()),
        token_pepper: None,
        tls_spki: None,
        proxy_spki: None,
    })
    .await?;
    let (shares, root_token) = core.initialize(1, 1, dev_root_token).await?;
    let addr = core.config.listen();
    let banner = format!(
        "\nZafe development server: IN MEMORY, UNSEALED, NOT FOR REAL SECRETS.\n\
         Everything is lost when it stops, and its identity is new at every start.\n\n\
         \x20   export ZAFE_ADDR='http://{addr}'\n\
         \x20   export ZAFE_TOKEN='{root_token}'\n\n\
         Unseal key (not needed in dev mode): {}\n\
         Server identity: {}\n",
        hex::encode(shares[0].as_bytes()),
        core.identity.server_id()
    );
    Ok((core, Some(banner)))
}

/// `zafe server` with no configuration: SQLite and a generated master key in
/// the data directory, initialised on the first run.
async fn start_quick(
    mut config: Config,
    accept_rollback: bool,
    engines: crate::mounts::Engines,
) -> Result<(Arc<Core>, Option<String>), LaunchError> {
    let data_dir = config.data_dir();
    create_private_dir(&data_dir)?;
    let key_file = data_dir.join("master.key");
    if config::process_env("ZAFE_MASTER_KEY").is_none()
        && config::process_env("ZAFE_MASTER_KEY_FILE").is_none()
    {
        if !key_file.exists() {
            if config.sqlite_path().exists() {
                return Err(LaunchError::Preflight(format!(
                    "{} exists but its master key file {} is missing: restore the key file, or set ZAFE_MASTER_KEY_FILE",
                    config.sqlite_path().display(),
                    key_file.display()
                )));
            }
            write_new_master_key(&key_file)?;
            eprintln!(
                "\nWARNING: generated a master key at {} BESIDE the data it protects.\n\
                 This quick start is for evaluation: anyone who copies the data directory gets every secret.\n\
                 For production, run `zafe server --config zafe.toml` with the key kept elsewhere\n\
                 (ZAFE_MASTER_KEY_FILE on another volume, or Shamir key shares).\n",
                key_file.display()
            );
        }
        config.seal.master_key_file = Some(key_file);
    }
    let core = start_configured(config, accept_rollback, engines).await?;
    let mut banner = None;
    if !core.is_initialized().await? {
        let (shares, root_token) = core.initialize(1, 1, None).await?;
        banner = Some(format!(
            "\nZafe is initialised. These are shown ONCE; store them somewhere safe:\n\n\
             \x20   Root token:   {root_token}\n\
             \x20   Recovery key: {}\n\n\
             Log in from another terminal:\n\n\
             \x20   export ZAFE_ADDR='http://{}'\n\
             \x20   export ZAFE_TOKEN='<the root token above>'\n\
             \x20   zafe status\n",
            hex::encode(shares[0].as_bytes()),
            core.config.listen()
        ));
    }
    Ok((core, banner))
}

/// Production start: storage, identity, secrets, and auto-unseal when a
/// master key is configured. Without one the server waits, sealed, for
/// `zafe operator init` / `unseal`.
async fn start_configured(
    config: Config,
    accept_rollback: bool,
    engines: crate::mounts::Engines,
) -> Result<Arc<Core>, LaunchError> {
    config.validate()?;
    let secrets = config.secrets(&config::process_env)?;
    let backend: Arc<dyn Backend> = match config.storage.kind {
        StorageKind::Sqlite | StorageKind::Memory => {
            let path = config.sqlite_path();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                create_private_dir(dir)?;
            }
            let options = zafe_storage::sqlite::SqliteOptions {
                cache: config.storage.cache(),
            };
            Arc::new(SqliteBackend::open_with(&path, options).await?)
        }
        StorageKind::Postgres => {
            let url = secrets.postgres_url.as_deref().ok_or_else(|| {
                LaunchError::Preflight(
                    "storage kind is postgres but no url, url_file or ZAFE_STORAGE_URL is set"
                        .into(),
                )
            })?;
            Arc::new(PostgresBackend::connect(url).await?)
        }
    };
    let identity_file = config.identity_key_file();
    if let Some(dir) = identity_file.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let identity = crate::identity::load_or_create(&identity_file, &*backend).await?;
    let anchor_file = crate::anchor::path_for(&identity_file);
    let accepted = check_rollback(&*backend, &identity, &anchor_file, accept_rollback).await?;
    let tls_spki = match &config.tls {
        Some(tls) => Some(spki_hash_of_cert_file(&tls.cert_file)?),
        None => None,
    };
    let proxy_spki = match &config.identity.proxy_cert_file {
        Some(path) => Some(spki_hash_of_cert_file(path)?),
        None => None,
    };
    let has_master_key = secrets.master_key.is_some();
    // OIDC: checked (and a JWKS file loaded) before the server listens.
    let oidc = match &config.oidc {
        Some(oidc) => Some(crate::people::oidc::Oidc::new(
            oidc.clone(),
            secrets.oidc_client_secret,
        )?),
        None => None,
    };
    let core = Core::new(CoreParts {
        config,
        clock: std::sync::Arc::new(zafe_engine::SystemClock),
        projects: crate::projects::rule(),
        engines,
        backend,
        identity,
        master_key: secrets.master_key,
        token_pepper: secrets.token_pepper,
        tls_spki,
        proxy_spki,
    })
    .await?;
    if let Some(detected) = accepted {
        // Buffered like every entry made while sealed; written at unseal.
        let event = crate::audit::Event {
            v: zafe_core::audit::EVENT_VERSION,
            time_us: crate::audit::now_us(),
            method: "START".into(),
            path: "server/accept-rollback".into(),
            actor: crate::audit::Actor {
                kind: "operator".into(),
                ..Default::default()
            },
            decision: "allowed".into(),
            status: 200,
            error: detected,
            ..Default::default()
        };
        core.audit
            .record(event, None)
            .await
            .map_err(LaunchError::Preflight)?;
    }
    core.audit.set_anchor(anchor_file);
    if let Some(oidc) = oidc {
        core.set_oidc(oidc);
    }
    if let Some(pepper) = secrets.password_pepper {
        core.people.set_configured_pepper(pepper);
    }
    if has_master_key && core.is_initialized().await? {
        // A wrong key stops the start-up here, with a clear message.
        core.unseal_with_master_key()
            .await
            .map_err(|e| LaunchError::Preflight(format!("auto-unseal failed: {e}")))?;
    }
    Ok(core)
}

/// `--accept-rollback`, or `ZAFE_ACCEPT_ROLLBACK` set to 1, true or yes.
fn accept_rollback(launch: &Launch) -> bool {
    launch.accept_rollback
        || config::process_env(crate::anchor::OVERRIDE_ENV)
            .is_some_and(|v| matches!(v.to_lowercase().as_str(), "1" | "true" | "yes"))
}

/// Refuses to start on a store older than this node's anchor (R-KEY-9),
/// unless the operator accepted it: then the old anchor is moved aside and
/// the detection is returned, for the audit log.
async fn check_rollback(
    backend: &dyn Backend,
    identity: &IdentityKey,
    anchor_file: &Path,
    accept: bool,
) -> Result<Option<String>, LaunchError> {
    use crate::anchor::{AnchorError, check, read, supersede};
    let result = match read(anchor_file, &identity.public_key()) {
        Ok(None) => return Ok(None),
        Ok(Some(anchor)) => check(backend, &anchor, anchor_file).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(None),
        Err(e @ AnchorError::Storage(_)) => Err(e.into()),
        Err(e) if accept => {
            let detected = e.to_string();
            let aside = supersede(anchor_file).map_err(|io| {
                LaunchError::Preflight(format!("cannot move {} aside: {io}", anchor_file.display()))
            })?;
            tracing::warn!(
                detected = %detected,
                old_anchor = %aside.display(),
                "ROLLBACK ACCEPTED by the operator: serving this database; the next audit checkpoint anchors it anew"
            );
            Ok(Some(detected))
        }
        Err(e) => {
            tracing::error!(error = %e, "refusing to start");
            Err(e.into())
        }
    }
}

async fn serve(
    core: Arc<Core>,
    banner: Option<String>,
    listener: std::net::TcpListener,
) -> Result<(), LaunchError> {
    let addr = core.config.listen();
    let app = crate::http::router(core.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    tokio::spawn(shutdown_on_signal(handle.clone()));
    let scheme = if core.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        %addr,
        scheme,
        storage = core.backend().kind(),
        server_id = %core.identity.server_id(),
        sealed = core.is_sealed(),
        "Zafe is listening"
    );
    if let Some(banner) = banner {
        eprintln!("{banner}");
    }
    // First run: the one-time link to create the first administrator.
    crate::people::setup::announce_if_needed(&core).await;
    let result = match &core.config.tls {
        Some(tls) => {
            let rustls =
                axum_server::tls_rustls::RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file)
                    .await
                    .map_err(|e| LaunchError::Preflight(format!("TLS certificate or key: {e}")))?;
            axum_server::from_tcp_rustls(listener, rustls)
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            axum_server::from_tcp(listener)
                .handle(handle)
                .serve(app)
                .await
        }
    };
    result.map_err(|source| LaunchError::Listen { addr, source })?;
    // Sign the audit chain head, so even the newest entries are covered.
    core.audit.shutdown().await;
    core.close();
    tracing::info!("Zafe stopped");
    Ok(())
}

async fn shutdown_on_signal(handle: axum_server::Handle) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing requests in flight");
    handle.graceful_shutdown(Some(Duration::from_secs(20)));
}

/// Panic messages can contain data; log only where it happened.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(%location, "panic");
    }));
}

/// Creates `dir` (and parents) and makes sure it is 0700 (R-OPS-7).
fn create_private_dir(dir: &Path) -> Result<(), LaunchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| LaunchError::Preflight(format!("cannot create {}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)
            .map_err(|e| LaunchError::Preflight(format!("{}: {e}", dir.display())))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(|e| {
                LaunchError::Preflight(format!("cannot chmod 700 {}: {e}", dir.display()))
            })?;
        }
    }
    Ok(())
}

fn write_new_master_key(path: &Path) -> Result<(), LaunchError> {
    use std::io::Write;
    let key = SecretKey::generate();
    let text = zeroize::Zeroizing::new(hex::encode(key.expose()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| LaunchError::Preflight(format!("cannot create {}: {e}", path.display())))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| LaunchError::Preflight(format!("cannot write {}: {e}", path.display())))
}

/// SHA-256 of the SubjectPublicKeyInfo of the first certificate in a PEM file.
pub(crate) fn spki_hash_of_cert_file(path: &Path) -> Result<[u8; 32], LaunchError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let cert = CertificateDer::pem_file_iter(path)
        .map_err(|e| LaunchError::Preflight(format!("{}: {e}", path.display())))?
        .next()
        .ok_or_else(|| LaunchError::Preflight(format!("{}: no certificate found", path.display())))?
        .map_err(|e| LaunchError::Preflight(format!("{}: {e}", path.display())))?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| LaunchError::Preflight(format!("{}: {e}", path.display())))?;
    Ok(zafe_core::identity::spki_sha256(parsed.public_key().raw))
}
