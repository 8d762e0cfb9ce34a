//! Where the client connects, with what, and where it keeps its state.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use url::Url;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The address used when no flag or variable names one (Vault's default).
pub(crate) const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";
/// How long one request may take, end to end.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// A bearer token. It zeroizes on drop and its `Debug` never prints it.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Wraps a token's text (taken as is: trim it first if it was read from
    /// a file or the environment).
    pub fn new(token: impl Into<String>) -> Self {
        Self(Zeroizing::new(token.into()))
    }

    /// The token itself, for putting in a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Everything a [`Client`](crate::Client) needs to connect. `Debug` is safe:
/// tokens print redacted.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's address: `http` or `https`, host, optional port and path.
    pub addr: Url,
    /// The token sent as `X-Vault-Token` on authenticated calls, and only
    /// after the server has proven its identity. `None` when none is
    /// configured: calls that need no token (status, init, unseal, login)
    /// still work.
    pub token: Option<Token>,
    /// The refresh token of a person's session (`zafe login --email`), when
    /// `token` is that session's access token: the client uses it to get a
    /// new pair once when the access token has expired.
    pub refresh_token: Option<Token>,
    /// A PEM file of CA certificates. When set, only these are trusted for
    /// TLS (as with `VAULT_CACERT`); otherwise the Mozilla root set is.
    pub ca_cert: Option<PathBuf>,
    /// The server_id the server must prove, given up front (e.g. in CI).
    pub server_id: Option<String>,
    /// Holds `servers.toml` (the pins) and `token`.
    pub config_dir: PathBuf,
    /// The limit on one request, end to end (connecting: at most 10 s of it).
    pub timeout: Duration,
}

/// Values from command-line flags; each overrides its environment variable.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    /// `--addr`, over `ZAFE_ADDR` and `VAULT_ADDR`.
    pub addr: Option<String>,
    /// `--ca-cert`, over `ZAFE_CACERT` and `VAULT_CACERT`.
    pub ca_cert: Option<PathBuf>,
    /// `--server-id`, over `ZAFE_SERVER_ID`.
    pub server_id: Option<String>,
}

impl ClientConfig {
    /// A configuration for `addr` with no token, no CA file and no expected
    /// server id; `addr` is used as given (check it with [`addr_key`] first
    /// when it comes from a person).
    pub fn new(addr: Url, config_dir: PathBuf) -> Self {
        Self {
            addr,
            token: None,
            refresh_token: None,
            ca_cert: None,
            server_id: None,
            config_dir,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Flags first, then `ZAFE_*`, then `VAULT_*`, then defaults. The token
    /// comes from `ZAFE_TOKEN`, `VAULT_TOKEN` or `<config_dir>/token`, never
    /// from a flag, so it stays out of shell history and `ps`.
    pub fn from_env_and_flags(flags: &Flags) -> Result<Self> {
        Self::from_lookup(flags, |name| std::env::var(name).ok())
    }

    /// [`Self::from_env_and_flags`] with the environment given as a function,
    /// for tests.
    pub(crate) fn from_lookup(flags: &Flags, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        // An empty variable counts as unset, as in most shells' `VAR= cmd`.
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let first = |names: &[&str]| names.iter().find_map(|n| var(n));

        let addr = flags
            .addr
            .clone()
            .or_else(|| first(&["ZAFE_ADDR", "VAULT_ADDR"]))
            .unwrap_or_else(|| DEFAULT_ADDR.to_string());
        let config_dir = config_dir_from_lookup(&env)?;
        let addr = parse_addr(&addr)?;
        // A token from the environment wins; then a person's session for
        // this address (credential store or files); then the token file.
        let (token, refresh_token) = match first(&["ZAFE_TOKEN", "VAULT_TOKEN"]) {
            Some(t) => (Some(Token::new(t.trim())), None),
            None => match crate::session::load(&config_dir, &normalize_addr(&addr))? {
                Some(session) => (Some(session.access), Some(session.refresh)),
                None => (read_token_file(&token_file(&config_dir))?, None),
            },
        };
        Ok(Self {
            addr,
            token,
            refresh_token,
            ca_cert: flags
                .ca_cert
                .clone()
                .or_else(|| first(&["ZAFE_CACERT", "VAULT_CACERT"]).map(PathBuf::from)),
            server_id: flags.server_id.clone().or_else(|| var("ZAFE_SERVER_ID")),
            config_dir,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// Where this configuration's token file is (`<config_dir>/token`).
    pub fn token_file(&self) -> PathBuf {
        token_file(&self.config_dir)
    }
}

/// `ZAFE_CONFIG_DIR`, else the platform's configuration directory + `zafe`.
pub fn config_dir_from_env() -> Result<PathBuf> {
    config_dir_from_lookup(&|name: &str| std::env::var(name).ok())
}

fn config_dir_from_lookup(env: &impl Fn(&str) -> Option<String>) -> Result<PathBuf> {
    match env("ZAFE_CONFIG_DIR").filter(|v| !v.trim().is_empty()) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => dirs::config_dir()
            .map(|d| d.join("zafe"))
            .ok_or_else(|| Error::Config("no configuration directory; set ZAFE_CONFIG_DIR".into())),
    }
}

/// The token file of a configuration directory: `<config_dir>/token`.
pub fn token_file(config_dir: &Path) -> PathBuf {
    config_dir.join("token")
}

/// Parses and checks a server address: `http` or `https` only, a host, no
/// credentials, query or fragment.
pub(crate) fn parse_addr(addr: &str) -> Result<Url> {
    let invalid = |reason| Error::InvalidAddress {
        addr: addr.to_string(),
        reason,
    };
    let url = Url::parse(addr.trim())
        .map_err(|_| invalid("expected a URL such as https://zafe.example.com:8200"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials do not belong in the address"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("no query or fragment is allowed"));
    }
    Ok(url)
}

/// The canonical form of an address: `scheme://host:port[/path]` with the
/// port explicit and no trailing slash. Pins are keyed by it, so
/// `https://Zafe.example.com/` and `https://zafe.example.com:443` share one.
pub(crate) fn normalize_addr(url: &Url) -> String {
    // `Url` already lowercases the scheme and host and brackets IPv6 hosts.
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(0);
    let path = url.path().trim_end_matches('/');
    format!("{}://{host}:{port}{path}", url.scheme())
}

/// Checks a server address (`http` or `https`, a host, no credentials, query
/// or fragment) and returns its canonical form, `scheme://host:port[/path]`
/// with the port explicit and no trailing slash: the key pins and sessions
/// are stored under.
pub fn addr_key(addr: &str) -> Result<String> {
    parse_addr(addr).map(|u| normalize_addr(&u))
}

/// Reads the token file, if there is one. A file that group or others can
/// read is refused: the token in it is as good as a password.
pub(crate) fn read_token_file(path: &Path) -> Result<Option<Token>> {
    let fail = |reason: String| Error::TokenFile {
        path: path.to_path_buf(),
        reason,
    };
    let contents = match std::fs::read_to_string(path) {
        Ok(c) => Zeroizing::new(c),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e.to_string())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|e| fail(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "it is readable by group or others (mode {:o}); run `chmod 600 {}`",
                mode & 0o777,
                path.display()
            )));
        }
    }
    let token = contents.trim();
    Ok((!token.is_empty()).then(|| Token::new(token)))
}

/// Stores a token in `<config_dir>/token` with mode 0600.
pub fn save_token(config_dir: &Path, token: &Token) -> Result<()> {
    let path = token_file(config_dir);
    write_private(&path, token.expose().as_bytes()).map_err(|e| Error::TokenFile {
        path,
        reason: e.to_string(),
    })
}

/// Replaces `path` atomically with `contents`, readable by the owner only,
/// creating its directory with mode 0700 if needed.
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;

    // Write a sibling and rename it over the target, so a crash or a
    // concurrent reader never sees half a file.
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = (|| {
        let mut file = options.open(&tmp)?;
        // The mode above applies only to a file this call created.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn addresses_normalise() {
        let key = |a| addr_key(a).unwrap();
        assert_eq!(
            key("https://Zafe.Example.com/"),
            "https://zafe.example.com:443"
        );
        assert_eq!(
            key("https://zafe.example.com:443"),
            "https://zafe.example.com:443"
        );
        assert_eq!(key("http://127.0.0.1:8200"), "http://127.0.0.1:8200");
        assert_eq!(key("http://[::1]:8200/zafe/"), "http://[::1]:8200/zafe");
        for bad in [
            "127.0.0.1:8200",
            "ftp://x",
            "https://u:p@x",
            "https://x/?a=b",
            "not a url",
        ] {
            assert!(addr_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_beat_zafe_env_which_beats_vault_env() {
        let dir = tempfile::tempdir().unwrap();
        let env = env(vec![
            ("ZAFE_CONFIG_DIR", dir.path().to_str().unwrap().to_string()),
            ("VAULT_ADDR", "https://vault:8200".into()),
            ("ZAFE_ADDR", "https://zafe:8200".into()),
            ("VAULT_TOKEN", "vault-token".into()),
            ("ZAFE_TOKEN", "".into()),
        ]);
        let cfg = ClientConfig::from_lookup(&Flags::default(), &env).unwrap();
        assert_eq!(cfg.addr.as_str(), "https://zafe:8200/");
        // An empty ZAFE_TOKEN counts as unset.
        assert_eq!(cfg.token.as_ref().unwrap().expose(), "vault-token");
        assert!(!format!("{cfg:?}").contains("vault-token"));

        let flags = Flags {
            addr: Some("http://flag:1".into()),
            ..Flags::default()
        };
        let cfg = ClientConfig::from_lookup(&flags, &env).unwrap();
        assert_eq!(cfg.addr.as_str(), "http://flag:1/");
    }

    #[test]
    fn the_token_file_is_read_and_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_token_file(&token_file(dir.path())).unwrap().is_none());
        save_token(dir.path(), &Token::new("zafe_s_abc")).unwrap();
        let token = read_token_file(&token_file(dir.path())).unwrap().unwrap();
        assert_eq!(token.expose(), "zafe_s_abc");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let path = token_file(dir.path());
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = read_token_file(&path).unwrap_err().to_string();
            assert!(
                err.contains("chmod 600") && !err.contains("zafe_s_abc"),
                "{err}"
            );
        }
    }
}
