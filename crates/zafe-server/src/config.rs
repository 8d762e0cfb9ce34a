//! Server configuration: a TOML file, environment variables (`ZAFE_...`), and
//! secrets from `*_FILE` paths (R-OPS-5..7, R-KEY-5, R-KEY-8).
//!
//! Precedence: environment over file over defaults. Unknown keys in the file
//! are errors, so a typo never silently leaves a setting at its default.
//! Secret values (master key, peppers, database URLs with passwords) are
//! never part of [`Config`]'s `Debug` output: they are resolved into
//! [`Secrets`], which prints nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use zafe_core::secret::SecretKey;

pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8200";
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The server's configuration: the TOML file's settings with `ZAFE_...`
/// environment variables applied over them. Secrets are named here only by
/// the files or variables that hold them; [`Config::secrets`] reads them.
/// The one exception is a PostgreSQL URL written inline (`storage.url`),
/// which `Debug` shows, password included: prefer `url_file`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`ZAFE_LISTEN`); default `127.0.0.1:8200`.
    pub listen: Option<SocketAddr>,
    /// The address clients use, e.g. `https://zafe.example.com`.
    pub public_url: Option<String>,
    /// Where the identity key and (by default) the SQLite database live.
    pub data_dir: Option<PathBuf>,
    /// Largest request body accepted, in bytes (`ZAFE_MAX_BODY_BYTES`);
    /// default 2 MiB.
    pub max_body_bytes: Option<usize>,
    /// Peers whose `X-Forwarded-For` is believed (R-OPS-2).
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// Browser origins allowed to call the API; none by default (CORS off).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Name reported by `sys/health` and `sys/seal-status`, fixed when the cluster is
    /// first initialised (`ZAFE_CLUSTER_NAME`); default `zafe-cluster-` and the
    /// start of the cluster id.
    pub cluster_name: Option<String>,
    /// `[storage]`: where the data lives.
    #[serde(default)]
    pub storage: StorageConfig,
    /// `[tls]`: serve HTTPS; plain HTTP when absent.
    pub tls: Option<TlsConfig>,
    /// `[seal]`: the optional master key for auto-unseal.
    #[serde(default)]
    pub seal: SealConfig,
    /// `[identity]`: the server's Ed25519 identity key.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// `[auth]`: peppers, passwords, sessions, registration.
    #[serde(default)]
    pub auth: AuthConfig,
    /// `[audit]`: file sink, checkpoints, retention (R-AUD-1..6).
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
    /// `[oidc]`: OIDC login for people (R-AUTH-8); off when absent.
    pub oidc: Option<crate::people::oidc::OidcConfig>,
}

/// Which storage backend holds the data (`ZAFE_STORAGE_KIND`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// One SQLite file, one node (the default).
    #[default]
    Sqlite,
    /// PostgreSQL, shared by every node of a cluster.
    Postgres,
    /// In-memory SQLite, for `zafe server --dev` only.
    #[serde(skip)]
    Memory,
}

/// `[storage]`: the backend and how to reach it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// SQLite (default) or PostgreSQL.
    #[serde(default)]
    pub kind: StorageKind,
    /// SQLite database file; default `<data_dir>/zafe.db`.
    pub path: Option<PathBuf>,
    /// PostgreSQL URL. Prefer `url_file`, which keeps the password out of
    /// the configuration file.
    pub url: Option<String>,
    /// File holding the PostgreSQL URL (mode 0600; `ZAFE_STORAGE_URL_FILE`);
    /// wins over `url` and `ZAFE_STORAGE_URL`.
    pub url_file: Option<PathBuf>,
    /// The read cache of stored entries (ciphertext) in front of SQLite:
    /// at most this many entries (default 10,000; 0 turns it off;
    /// `ZAFE_STORAGE_CACHE_ENTRIES`). Not used with PostgreSQL, where other
    /// nodes write too.
    pub cache_entries: Option<usize>,
    /// ... and at most this many bytes of keys and values (default 4 MiB).
    pub cache_bytes: Option<usize>,
}

impl StorageConfig {
    /// The SQLite entry cache's size.
    pub fn cache(&self) -> zafe_storage::CacheConfig {
        zafe_storage::CacheConfig {
            max_entries: self
                .cache_entries
                .unwrap_or(zafe_storage::CacheConfig::DEFAULT_ENTRIES),
            max_bytes: self
                .cache_bytes
                .unwrap_or(zafe_storage::CacheConfig::DEFAULT_BYTES),
        }
    }
}

/// `[tls]`: the certificate and key to serve HTTPS with. Both
/// `ZAFE_TLS_CERT_FILE` and `ZAFE_TLS_KEY_FILE` together override it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key. Its mode is not checked here: keep it 0600.
    pub key_file: PathBuf,
}

/// `[seal]`: auto-unseal.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// File holding the master key (auto-unseal). `ZAFE_MASTER_KEY` and
    /// `ZAFE_MASTER_KEY_FILE` override it.
    pub master_key_file: Option<PathBuf>,
}

/// `[identity]`: the server's identity key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// The Ed25519 identity key; default `<data_dir>/identity.key`.
    pub key_file: Option<PathBuf>,
    /// When a proxy terminates TLS in front of Zafe: the certificate that
    /// proxy presents (public part only), so identity proofs still bind the
    /// TLS key clients see.
    pub proxy_cert_file: Option<PathBuf>,
}

/// `[auth]`: how people and tokens authenticate.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the token pepper (`ZAFE_TOKEN_PEPPER`,
    /// `ZAFE_TOKEN_PEPPER_FILE` override it); the password pepper when unset.
    pub token_pepper_file: Option<PathBuf>,
    /// File holding the password pepper (`ZAFE_PASSWORD_PEPPER`,
    /// `ZAFE_PASSWORD_PEPPER_FILE` override it).
    pub password_pepper_file: Option<PathBuf>,
    /// `[auth.password]`: Argon2id cost and login rate limits.
    #[serde(default)]
    pub password: crate::people::config::PasswordConfig,
    /// `[auth.sessions]`: access, refresh and setup token lifetimes.
    #[serde(default)]
    pub sessions: crate::people::config::SessionConfig,
    /// `[auth.registration]`: off, invite or domains.
    #[serde(default)]
    pub registration: crate::people::config::RegistrationConfig,
}

/// Why the configuration could not be loaded. Messages name the file or
/// setting, never a secret value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown keys.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A setting has an invalid value.
    #[error("invalid setting {name}: {message}")]
    Invalid {
        /// The setting (an environment variable or a file key).
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A file that holds secrets (or the configuration file, if writable) is
    /// accessible by group or other users.
    #[error("{path} is accessible by group or other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its Unix mode bits.
        mode: u32,
    },
}

/// Secret settings, resolved from the environment and files.
#[derive(Default)]
pub struct Secrets {
    /// Master key for auto-unseal; `None` means unsealing needs the shares.
    pub master_key: Option<SecretKey>,
    /// Key for hashing tokens before they are stored (the password pepper
    /// when not set on its own).
    pub token_pepper: Option<SecretKey>,
    /// Key mixed into password hashes, so a stolen database alone cannot be
    /// brute-forced.
    pub password_pepper: Option<SecretKey>,
    /// PostgreSQL URL, which may hold a password: never log it.
    pub postgres_url: Option<String>,
    /// The OIDC client secret, when OIDC login uses one.
    pub oidc_client_secret: Option<zeroize::Zeroizing<String>>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secrets")
            .field("master_key", &self.master_key.is_some())
            .field("token_pepper", &self.token_pepper.is_some())
            .field("password_pepper", &self.password_pepper.is_some())
            .field("postgres_url", &self.postgres_url.is_some())
            .field("oidc_client_secret", &self.oidc_client_secret.is_some())
            .finish()
    }
}

/// Reads environment variables; a trait object so tests can pass a map.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment, treating an empty variable as unset.
pub(crate) fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Config {
    /// Reads and parses a TOML file, refusing one that others can write and
    /// warning about one that others can read.
    pub(crate) fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let mode = file_mode(path)?;
        if mode & 0o022 != 0 {
            return Err(ConfigError::Permissions {
                path: path.into(),
                mode,
            });
        }
        if mode & 0o044 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "configuration file is readable by group or other users; consider chmod 600");
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Applies `ZAFE_...` environment variables over the file's settings.
    pub(crate) fn apply_env(&mut self, env: Env) -> Result<(), ConfigError> {
        if let Some(v) = env("ZAFE_LISTEN") {
            self.listen = Some(v.parse().map_err(|e| invalid("ZAFE_LISTEN", e))?);
        }
        if let Some(v) = env("ZAFE_PUBLIC_URL") {
            self.public_url = Some(v);
        }
        if let Some(v) = env("ZAFE_DATA_DIR") {
            self.data_dir = Some(v.into());
        }
        if let Some(v) = env("ZAFE_MAX_BODY_BYTES") {
            self.max_body_bytes = Some(v.parse().map_err(|e| invalid("ZAFE_MAX_BODY_BYTES", e))?);
        }
        if let Some(v) = env("ZAFE_TRUSTED_PROXIES") {
            self.trusted_proxies = split_list(&v)
                .map(|s| parse_net(s).map_err(|e| invalid("ZAFE_TRUSTED_PROXIES", e)))
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = env("ZAFE_CORS_ORIGINS") {
            self.cors_origins = split_list(&v).map(str::to_string).collect();
        }
        if let Some(v) = env("ZAFE_CLUSTER_NAME") {
            self.cluster_name = Some(v);
        }
        if let Some(v) = env("ZAFE_STORAGE_KIND") {
            self.storage.kind = match v.as_str() {
                "sqlite" => StorageKind::Sqlite,
                "postgres" => StorageKind::Postgres,
                other => {
                    return Err(invalid(
                        "ZAFE_STORAGE_KIND",
                        format!("{other:?} is not sqlite or postgres"),
                    ));
                }
            };
        }
        if let Some(v) = env("ZAFE_STORAGE_PATH") {
            self.storage.path = Some(v.into());
        }
        if let Some(v) = env("ZAFE_STORAGE_URL_FILE") {
            self.storage.url_file = Some(v.into());
        }
        if let Some(v) = env("ZAFE_STORAGE_CACHE_ENTRIES") {
            self.storage.cache_entries = Some(
                v.parse()
                    .map_err(|e| invalid("ZAFE_STORAGE_CACHE_ENTRIES", e))?,
            );
        }
        match (env("ZAFE_TLS_CERT_FILE"), env("ZAFE_TLS_KEY_FILE")) {
            (Some(cert_file), Some(key_file)) => {
                self.tls = Some(TlsConfig {
                    cert_file: cert_file.into(),
                    key_file: key_file.into(),
                })
            }
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "ZAFE_TLS_CERT_FILE",
                    "ZAFE_TLS_CERT_FILE and ZAFE_TLS_KEY_FILE must be set together",
                ));
            }
        }
        if let Some(v) = env("ZAFE_IDENTITY_KEY_FILE") {
            self.identity.key_file = Some(v.into());
        }
        if let Some(v) = env("ZAFE_IDENTITY_PROXY_CERT_FILE") {
            self.identity.proxy_cert_file = Some(v.into());
        }
        if let Some(v) = env("ZAFE_AUDIT_FILE") {
            self.audit.file_path = Some(v.into());
        }
        Ok(())
    }

    /// Checks settings that do not need the file system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.public_url {
            validate_public_url(url).map_err(|m| invalid("public_url", m))?;
        }
        if self.max_body_bytes == Some(0) {
            return Err(invalid("max_body_bytes", "must be greater than zero"));
        }
        for origin in &self.cors_origins {
            validate_public_url(origin).map_err(|m| invalid("cors_origins", m))?;
        }
        self.audit.validate()?;
        if let Some(oidc) = &self.oidc {
            oidc.validate()?;
        }
        self.auth
            .password
            .validate()
            .map_err(|m| invalid("auth.password", m))?;
        self.auth
            .sessions
            .validate()
            .map_err(|m| invalid("auth.sessions", m))?;
        self.auth
            .registration
            .validate()
            .map_err(|m| invalid("auth.registration", m))?;
        Ok(())
    }

    /// Whether people may log in with an internal password: off with
    /// `[auth.password] enabled = false`, or `[oidc] password_login = false`
    /// for OIDC-only deployments.
    pub(crate) fn password_login_enabled(&self) -> bool {
        self.auth.password.enabled && self.oidc.as_ref().is_none_or(|o| o.password_login)
    }

    /// Address to listen on: `listen`, or `127.0.0.1:8200`.
    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"))
    }

    /// Largest request body in bytes: `max_body_bytes`, or 2 MiB.
    pub fn max_body_bytes(&self) -> usize {
        self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES)
    }

    /// `data_dir` (`ZAFE_DATA_DIR`), or [`default_data_dir`].
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(default_data_dir)
    }

    /// The SQLite file: `storage.path`, or `<data_dir>/zafe.db`.
    pub(crate) fn sqlite_path(&self) -> PathBuf {
        self.storage
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir().join("zafe.db"))
    }

    /// The identity key file: `identity.key_file`, or
    /// `<data_dir>/identity.key`.
    pub(crate) fn identity_key_file(&self) -> PathBuf {
        self.identity
            .key_file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("identity.key"))
    }

    /// Resolves secret settings. Files holding secrets must not be readable
    /// by group or other users (R-KEY-5, R-OPS-7).
    pub fn secrets(&self, env: Env) -> Result<Secrets, ConfigError> {
        let master_key =
            secret_setting(env, "ZAFE_MASTER_KEY", self.seal.master_key_file.as_deref())?
                .map(|text| {
                    crate::seal::parse_master_key(&text).map_err(|m| invalid("ZAFE_MASTER_KEY", m))
                })
                .transpose()?;
        let password_pepper = secret_setting(
            env,
            "ZAFE_PASSWORD_PEPPER",
            self.auth.password_pepper_file.as_deref(),
        )?
        .map(|p| pepper("ZAFE_PASSWORD_PEPPER", &p))
        .transpose()?;
        // The token pepper defaults to the password pepper (R-KEY-8); keys
        // for each use are derived separately from whichever is set.
        let token_pepper = match secret_setting(
            env,
            "ZAFE_TOKEN_PEPPER",
            self.auth.token_pepper_file.as_deref(),
        )? {
            Some(p) => Some(pepper("ZAFE_TOKEN_PEPPER", &p)?),
            None => password_pepper.as_ref().map(SecretKey::duplicate),
        };
        let postgres_url = match &self.storage.url_file {
            Some(path) => Some(read_secret_file(path)?),
            None => env("ZAFE_STORAGE_URL").or_else(|| self.storage.url.clone()),
        };
        let oidc_client_secret = secret_setting(
            env,
            "ZAFE_OIDC_CLIENT_SECRET",
            self.oidc
                .as_ref()
                .and_then(|o| o.client_secret_file.as_deref()),
        )?
        .map(zeroize::Zeroizing::new);
        Ok(Secrets {
            master_key,
            token_pepper,
            password_pepper,
            postgres_url,
            oidc_client_secret,
        })
    }
}

/// A pepper of any length becomes a 256-bit root with HKDF; purpose keys are
/// derived from that root, never by concatenation.
fn pepper(name: &'static str, text: &str) -> Result<SecretKey, ConfigError> {
    if text.len() < 16 {
        return Err(invalid(
            name,
            "must be at least 16 characters (use 32 random bytes)",
        ));
    }
    Ok(zafe_core::crypto::derive_key(
        text.as_bytes(),
        "zafe/v1/pepper-root",
    ))
}

/// `NAME` from the environment, else `NAME_FILE` from the environment, else
/// the configured file.
fn secret_setting(
    env: Env,
    name: &'static str,
    configured_file: Option<&Path>,
) -> Result<Option<String>, ConfigError> {
    if let Some(value) = env(name) {
        return Ok(Some(value));
    }
    let file = env(&format!("{name}_FILE"))
        .map(PathBuf::from)
        .or_else(|| configured_file.map(Path::to_path_buf));
    file.map(|f| read_secret_file(&f)).transpose()
}

/// Reads a secret from a file that only its owner may access, trimmed of
/// surrounding whitespace.
pub(crate) fn read_secret_file(path: &Path) -> Result<String, ConfigError> {
    check_private_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    Ok(text.trim().to_string())
}

/// Refuses a file that group or other users can access (on Unix).
pub(crate) fn check_private_file(path: &Path) -> Result<(), ConfigError> {
    let mode = file_mode(path)?;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions {
            path: path.into(),
            mode,
        });
    }
    Ok(())
}

#[cfg(unix)]
fn file_mode(path: &Path) -> Result<u32, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    Ok(meta.permissions().mode() & 0o777)
}

#[cfg(not(unix))]
fn file_mode(path: &Path) -> Result<u32, ConfigError> {
    std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.into(),
        source,
    })?;
    Ok(0o600)
}

/// R-OPS-5: http or https only, no credentials, no whitespace, a host.
pub(crate) fn validate_public_url(raw: &str) -> Result<(), String> {
    if raw.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace".into());
    }
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("must name a host".into());
    }
    Ok(())
}

/// `$XDG_DATA_HOME/zafe`, else `~/.local/share/zafe`, else `./zafe`: the
/// data directory when `data_dir` is not set.
pub(crate) fn default_data_dir() -> PathBuf {
    dirs_data_dir().join("zafe")
}

fn dirs_data_dir() -> PathBuf {
    // XDG on Linux; fall back to the home directory, then the working one.
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn split_list(v: &str) -> impl Iterator<Item = &str> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A CIDR, or a bare address meaning just that address.
fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
}

fn invalid(name: &'static str, message: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        name,
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_minimal_file_parses() {
        let c: Config = toml::from_str(
            r#"
            listen = "127.0.0.1:8200"
            [storage]
            kind = "sqlite"
            path = "/var/lib/zafe/zafe.db"
            [tls]
            cert_file = "/etc/zafe/cert.pem"
            key_file = "/etc/zafe/key.pem"
            "#,
        )
        .unwrap();
        assert_eq!(c.storage.kind, StorageKind::Sqlite);
        assert_eq!(c.sqlite_path(), PathBuf::from("/var/lib/zafe/zafe.db"));
        assert!(c.tls.is_some());
    }

    #[test]
    fn the_storage_cache_is_on_by_default_and_sized_by_configuration() {
        let c: Config = toml::from_str("[storage]\nkind = \"sqlite\"").unwrap();
        assert_eq!(c.storage.cache(), zafe_storage::CacheConfig::default());
        assert!(!c.storage.cache().is_off());
        let mut c: Config =
            toml::from_str("[storage]\ncache_entries = 500\ncache_bytes = 65536").unwrap();
        assert_eq!(
            c.storage.cache(),
            zafe_storage::CacheConfig {
                max_entries: 500,
                max_bytes: 65536
            }
        );
        c.apply_env(&env_of(&[("ZAFE_STORAGE_CACHE_ENTRIES", "0")]))
            .unwrap();
        assert!(c.storage.cache().is_off());
        assert!(
            c.apply_env(&env_of(&[("ZAFE_STORAGE_CACHE_ENTRIES", "many")]))
                .is_err()
        );
    }

    #[test]
    fn people_settings_parse_and_are_validated() {
        let c: Config = toml::from_str(
            r#"
            [auth.password]
            m_cost = 65536
            per_ip_per_minute = 10
            [auth.sessions]
            access_ttl_secs = 300
            [auth.registration]
            mode = "domains"
            domains = ["example.com"]
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.auth.password.m_cost, 65536);
        assert_eq!(c.auth.password.t_cost, 2, "defaults fill the rest");
        assert_eq!(c.auth.sessions.access_ttl_secs, 300);
        assert_eq!(c.auth.sessions.refresh_ttl_secs, 24 * 3600);
        assert!(c.auth.registration.allows_domain_of("a@EXAMPLE.com"));
        assert!(!c.auth.registration.allows_domain_of("a@example.com.evil"));
        let defaults = Config::default();
        assert_eq!(
            defaults.auth.registration.mode,
            crate::people::config::RegistrationMode::Off
        );
        for bad in [
            "[auth.password]\nm_cost = 1",
            "[auth.password]\nper_ip_per_minute = 0",
            "[auth.sessions]\naccess_ttl_secs = 0",
            "[auth.registration]\nmode = \"domains\"",
            "[auth.registration]\nmode = \"open\"",
            "[auth.password]\nmcost = 1",
        ] {
            let parsed = toml::from_str::<Config>(bad);
            assert!(
                parsed.is_err() || parsed.unwrap().validate().is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn typos_are_errors() {
        assert!(toml::from_str::<Config>("lisen = \"127.0.0.1:1\"").is_err());
        assert!(toml::from_str::<Config>("[storage]\nkind = \"mysql\"").is_err());
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c: Config = toml::from_str("listen = \"127.0.0.1:1\"").unwrap();
        c.apply_env(&env_of(&[
            ("ZAFE_LISTEN", "127.0.0.1:2"),
            ("ZAFE_TRUSTED_PROXIES", "10.0.0.0/8, 192.0.2.1"),
        ]))
        .unwrap();
        assert_eq!(c.listen().port(), 2);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(
            c.apply_env(&env_of(&[("ZAFE_TRUSTED_PROXIES", "nonsense")]))
                .is_err()
        );
    }

    // R-OPS-5
    #[test]
    fn public_urls_are_validated() {
        assert!(validate_public_url("https://zafe.example.com").is_ok());
        assert!(validate_public_url("http://127.0.0.1:8200/").is_ok());
        for bad in [
            "ftp://x",
            "https://user:pw@zafe.example.com",
            "https://user@zafe.example.com",
            "https://zafe.example.com /x",
            "javascript:alert(1)",
            "file:///etc/passwd",
            "zafe.example.com",
        ] {
            assert!(validate_public_url(bad).is_err(), "{bad}");
        }
    }

    // R-KEY-5, R-OPS-7
    #[test]
    fn secret_files_readable_by_others_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        std::fs::write(&path, "ab".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let c = Config::default();
        let env = env_of(&[("ZAFE_MASTER_KEY_FILE", path.to_str().unwrap())]);
        match c.secrets(&env) {
            Err(ConfigError::Permissions { mode, .. }) => assert_eq!(mode, 0o644),
            other => panic!("expected a permission error, got {other:?}"),
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(c.secrets(&env).unwrap().master_key.is_some());
    }

    // R-KEY-8: the token pepper defaults to the password pepper; both are
    // independent of the master key.
    #[test]
    fn peppers() {
        let c = Config::default();
        let s = c
            .secrets(&env_of(&[(
                "ZAFE_PASSWORD_PEPPER",
                "a-long-enough-pepper-value",
            )]))
            .unwrap();
        assert_eq!(s.token_pepper, s.password_pepper);
        let s = c
            .secrets(&env_of(&[
                ("ZAFE_PASSWORD_PEPPER", "a-long-enough-pepper-value"),
                ("ZAFE_TOKEN_PEPPER", "another-long-enough-pepper"),
            ]))
            .unwrap();
        assert_ne!(s.token_pepper, s.password_pepper);
        assert!(
            c.secrets(&env_of(&[("ZAFE_TOKEN_PEPPER", "short")]))
                .is_err()
        );
        assert!(format!("{s:?}").contains("true") && !format!("{s:?}").contains("pepper-value"));
    }
}
