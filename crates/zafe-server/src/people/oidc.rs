//! OIDC login for people (R-AUTH-8, R-OPS-5): the authorization-code flow
//! with PKCE, in the shape of Vault's OIDC CLI flow.
//!
//! ```text
//!  zafe login --oidc                Zafe server                     identity provider
//!  verifier, client_nonce
//!  ── auth/oidc/auth_url ────────▶  state, nonce (random), stored
//!     {redirect_uri, client_nonce,  with the challenge, 10 min,
//!      code_challenge}              single use
//!  ◀──────── auth_url ───────────
//!  browser ─────────────────────────────────────────────────────▶ /authorize
//!  127.0.0.1:<port>/callback ◀──────────── code, state ──────────
//!  ── auth/oidc/callback ────────▶  takes the state (once), checks
//!     {state, code, code_verifier,  S256(verifier) = challenge,
//!      redirect_uri, client_nonce}  ── code + verifier + secret ──▶ /token
//!                                   ◀──────── ID token ────────────
//!                                   verifies it against the JWKS,
//!                                   maps it to a person, session
//!  ◀──── zafe_at_ / zafe_rt_ ─────
//! ```
//!
//! The PKCE verifier stays on the client (as with Vault's CLI): the server
//! stores only its challenge, so a stolen `state` or authorization code is
//! useless without the verifier that never left the person's machine, and
//! the IdP checks the same verifier again when the code is exchanged.
//!
//! The server only ever calls the configured issuer's endpoints (discovered
//! from `<issuer>/.well-known/openid-configuration`, or configured), never a
//! URL from a request, with a short timeout on every call and no redirects
//! followed. The redirect URI a client names must match the configured
//! allowlist and is only echoed to the IdP, never fetched.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zafe_core::crypto::{constant_time_eq, random_bytes};
use zeroize::Zeroizing;

use crate::barrier::{Barrier, BarrierError, Expect, Write};
use crate::config::ConfigError;
use crate::core::{Core, Request, Response};
use crate::error::{Error, Result};

/// Pending logins (state → nonce, challenge, redirect URI), behind the barrier.
const STATE_PREFIX: &str = "sys/people/oidc/state/";
/// A login must come back within this long, and only once.
pub(crate) const STATE_TTL_SECS: i64 = 600;
/// Clock skew allowed on `exp`, `nbf` and `iat`: 60 s unless configured, never more than 300 s.
pub(crate) const DEFAULT_CLOCK_SKEW_SECS: u64 = 60;
/// Largest `clock_skew_secs` accepted.
pub(crate) const MAX_CLOCK_SKEW_SECS: u64 = 300;
/// Every call to the IdP (connect and whole request): 5 s unless configured, at most 30 s.
pub(crate) const DEFAULT_TIMEOUT_SECS: u64 = 5;
/// Largest `timeout_secs` accepted.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 30;
/// The largest answer read from the IdP (discovery, JWKS, token endpoint).
const MAX_IDP_RESPONSE_BYTES: usize = 1024 * 1024;
/// The JWKS is fetched again for an unknown key id at most this often.
const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// Discovery results are kept this long.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// At most this many keys of a JWKS are considered.
const MAX_JWKS_KEYS: usize = 64;
/// At most this many groups are taken from a token.
const MAX_GROUPS: usize = 256;
/// Expired pending logins are swept at most this often (per node).
const SWEEP_INTERVAL_SECS: i64 = 60;
/// ID token signature algorithms accepted: never `none`, never HMAC.
const ALLOWED_ALGORITHMS: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

fn default_redirect_uris() -> Vec<String> {
    vec![
        "http://127.0.0.1:*/callback".into(),
        "http://[::1]:*/callback".into(),
    ]
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn default_email_claim() -> String {
    "email".into()
}

fn default_true() -> bool {
    true
}

/// How the server authenticates to the IdP's token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuthMethod {
    /// HTTP Basic authentication with the form-encoded client id and secret
    /// (RFC 6749, section 2.3.1); the default.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

/// `[oidc]` in the server configuration. The client secret is not here: it
/// comes from `client_secret_file` or `ZAFE_OIDC_CLIENT_SECRET(_FILE)` into
/// [`crate::config::Secrets`], which never prints it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The IdP's issuer identifier; ID tokens must carry exactly this `iss`.
    pub issuer: String,
    /// The client id the IdP registered for Zafe.
    pub client_id: String,
    /// File holding the client secret (mode 0600); `ZAFE_OIDC_CLIENT_SECRET`
    /// and `ZAFE_OIDC_CLIENT_SECRET_FILE` override it. None: a public client
    /// (PKCE only).
    pub client_secret_file: Option<PathBuf>,
    /// The `aud` ID tokens must carry; defaults to `client_id`.
    pub audience: Option<String>,
    /// Where the signing keys are: a URL of the IdP, or a local file. When
    /// neither is given, discovery's `jwks_uri` is used.
    pub jwks_url: Option<String>,
    /// A local JWKS file, read at start (instead of `jwks_url`).
    pub jwks_file: Option<PathBuf>,
    /// Endpoints; discovered from the issuer when not given.
    pub authorization_endpoint: Option<String>,
    /// The token endpoint; discovered when not given.
    pub token_endpoint: Option<String>,
    /// How the server authenticates at the token endpoint, when it has a
    /// client secret.
    #[serde(default)]
    pub token_auth_method: TokenAuthMethod,
    /// Redirect URIs clients may ask for; `*` as the port matches any port
    /// (the CLI listens on an ephemeral loopback port).
    #[serde(default = "default_redirect_uris")]
    pub allowed_redirect_uris: Vec<String>,
    /// Scopes requested; must include `openid`. Default `openid email profile`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The claim holding the person's email address; default `email`.
    #[serde(default = "default_email_claim")]
    pub email_claim: String,
    /// The claim holding the person's groups, if the IdP sends one.
    pub groups_claim: Option<String>,
    /// IdP group → project roles (`"<project>:<role>"`), recorded on the
    /// person at each login for project membership to use.
    #[serde(default)]
    pub group_roles: BTreeMap<String, Vec<String>>,
    /// Link a first OIDC login to an existing account with the same email,
    /// only when the IdP says `email_verified`. Off by default.
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// Create an account on a first login that links to none (still subject
    /// to the registration settings).
    #[serde(default = "default_true")]
    pub create_users: bool,
    /// `false` turns internal password login off: OIDC-only deployments.
    #[serde(default = "default_true")]
    pub password_login: bool,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in seconds; default 60,
    /// at most 300.
    pub clock_skew_secs: Option<u64>,
    /// Timeout of every call to the IdP, in seconds; default 5, at most 30.
    pub timeout_secs: Option<u64>,
}

impl OidcConfig {
    /// The `aud` ID tokens must carry: `audience`, or `client_id`.
    pub(crate) fn audience(&self) -> &str {
        self.audience.as_deref().unwrap_or(&self.client_id)
    }

    /// `clock_skew_secs`, or 60 seconds.
    pub(crate) fn clock_skew(&self) -> u64 {
        self.clock_skew_secs.unwrap_or(DEFAULT_CLOCK_SKEW_SECS)
    }

    /// `timeout_secs`, or 5 seconds.
    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))
    }

    /// Refuses a configuration that would accept tokens it should not: no
    /// issuer, no audience, unbounded skew or timeouts, odd URLs.
    pub fn validate(&self) -> std::result::Result<(), ConfigError> {
        let invalid = |name: &'static str, message: String| ConfigError::Invalid { name, message };
        if self.issuer.trim().is_empty() {
            return Err(invalid("oidc.issuer", "is required".into()));
        }
        idp_url(&self.issuer).map_err(|m| invalid("oidc.issuer", m))?;
        if self.client_id.trim().is_empty() {
            return Err(invalid("oidc.client_id", "is required".into()));
        }
        if self.audience().trim().is_empty() {
            return Err(invalid("oidc.audience", "must not be empty".into()));
        }
        for (name, url) in [
            ("oidc.jwks_url", &self.jwks_url),
            ("oidc.authorization_endpoint", &self.authorization_endpoint),
            ("oidc.token_endpoint", &self.token_endpoint),
        ] {
            if let Some(url) = url {
                idp_url(url).map_err(|m| invalid(name, m))?;
            }
        }
        if self.jwks_url.is_some() && self.jwks_file.is_some() {
            return Err(invalid(
                "oidc.jwks_file",
                "set jwks_url or jwks_file, not both".into(),
            ));
        }
        if self.allowed_redirect_uris.is_empty() {
            return Err(invalid(
                "oidc.allowed_redirect_uris",
                "must name at least one redirect URI".into(),
            ));
        }
        for uri in &self.allowed_redirect_uris {
            RedirectPattern::parse(uri).map_err(|m| invalid("oidc.allowed_redirect_uris", m))?;
        }
        if !self.scopes.iter().any(|s| s == "openid") {
            return Err(invalid("oidc.scopes", "must include openid".into()));
        }
        if self.clock_skew() > MAX_CLOCK_SKEW_SECS {
            return Err(invalid(
                "oidc.clock_skew_secs",
                format!("must be at most {MAX_CLOCK_SKEW_SECS}"),
            ));
        }
        let timeout = self.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if timeout == 0 || timeout > MAX_TIMEOUT_SECS {
            return Err(invalid(
                "oidc.timeout_secs",
                format!("must be between 1 and {MAX_TIMEOUT_SECS}"),
            ));
        }
        for (group, grants) in &self.group_roles {
            for grant in grants {
                parse_role_grant(grant)
                    .map_err(|m| invalid("oidc.group_roles", format!("group {group:?}: {m}")))?;
            }
        }
        Ok(())
    }
}

/// `"<project>:<role>"` with one of the project roles.
pub(crate) fn parse_role_grant(grant: &str) -> std::result::Result<(&str, &str), String> {
    let (project, role) = grant
        .split_once(':')
        .ok_or_else(|| format!("{grant:?} is not <project>:<role>"))?;
    if project.is_empty() || !["admin", "operator", "member", "readonly"].contains(&role) {
        return Err(format!(
            "{grant:?}: the role must be admin, operator, member or readonly"
        ));
    }
    Ok((project, role))
}

/// An IdP URL: https, or http only on a loopback address; no credentials,
/// no fragment.
fn idp_url(raw: &str) -> std::result::Result<url::Url, String> {
    crate::config::validate_public_url(raw)?;
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    if url.scheme() == "http" && !is_loopback_host(&url) {
        return Err("must use https (http only on a loopback address)".into());
    }
    Ok(url)
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// One allowed redirect URI; a `*` port matches any port.
#[derive(Debug, Clone)]
struct RedirectPattern {
    url: url::Url,
    any_port: bool,
}

impl RedirectPattern {
    fn parse(raw: &str) -> std::result::Result<Self, String> {
        let any_port = raw.contains(":*/") || raw.ends_with(":*");
        let text = if any_port {
            raw.replacen(":*", "", 1)
        } else {
            raw.to_string()
        };
        let url = idp_url(&text).map_err(|m| format!("{raw:?}: {m}"))?;
        Ok(Self { url, any_port })
    }

    fn matches(&self, candidate: &url::Url) -> bool {
        candidate.scheme() == self.url.scheme()
            && candidate.host() == self.url.host()
            && candidate.path() == self.url.path()
            && candidate.query() == self.url.query()
            && candidate.username().is_empty()
            && candidate.password().is_none()
            && candidate.fragment().is_none()
            && (self.any_port
                || candidate.port_or_known_default() == self.url.port_or_known_default())
    }
}

/// The endpoints in use.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: url::Url,
    token: url::Url,
    jwks: JwksSource,
}

#[derive(Debug, Clone)]
enum JwksSource {
    Url(url::Url),
    File(PathBuf),
}

#[derive(Default)]
struct JwksCache {
    keys: Vec<Jwk>,
    fetched: Option<Instant>,
}

/// What a verified ID token says about the person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The issuer (`iss`), exactly as configured.
    pub issuer: String,
    /// The subject (`sub`): the IdP's stable id for the person, at most 255
    /// bytes. With the issuer, it is what an account links to.
    pub subject: String,
    /// Lower-cased.
    pub email: Option<String>,
    /// Whether the IdP says the email is verified (`email_verified` true or
    /// `"true"`); only then may a first login link by email.
    pub email_verified: bool,
    /// The `name` claim, cut to 200 characters.
    pub name: Option<String>,
    /// The groups from `groups_claim` (at most 256); empty without one.
    pub groups: Vec<String>,
}

/// A login in progress, stored under the hash of its `state`.
#[derive(Serialize, Deserialize)]
struct Pending {
    nonce: String,
    client_nonce: String,
    code_challenge: String,
    redirect_uri: String,
    expires_at: i64,
}

/// OIDC login as configured: the HTTP client for the IdP, the discovered
/// endpoints and the JWKS cache.
pub struct Oidc {
    /// The `[oidc]` settings it was built with (no client secret in them).
    pub config: OidcConfig,
    client_secret: Option<Zeroizing<String>>,
    http: reqwest::Client,
    redirects: Vec<RedirectPattern>,
    endpoints: tokio::sync::Mutex<Option<(Endpoints, Instant)>>,
    jwks: tokio::sync::Mutex<JwksCache>,
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    last_sweep: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("config", &self.config)
            .field("client_secret", &self.client_secret.is_some())
            .finish_non_exhaustive()
    }
}

impl Oidc {
    /// Checks the configuration and loads a configured JWKS file, so that a
    /// wrong setting stops the server at start rather than at first login.
    pub fn new(
        config: OidcConfig,
        client_secret: Option<Zeroizing<String>>,
    ) -> std::result::Result<Self, ConfigError> {
        config.validate()?;
        let redirects = config
            .allowed_redirect_uris
            .iter()
            .map(|u| RedirectPattern::parse(u).expect("validated"))
            .collect();
        let http = reqwest::Client::builder()
            .connect_timeout(config.timeout())
            .timeout(config.timeout())
            // An IdP answer that redirects elsewhere is an error, not a hop.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("zafe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::Invalid {
                name: "oidc",
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        let mut jwks = JwksCache::default();
        if let Some(path) = &config.jwks_file {
            // Public keys: no permission check, unlike secret files.
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            jwks.keys = parse_jwks(&text).map_err(|m| ConfigError::Invalid {
                name: "oidc.jwks_file",
                message: m,
            })?;
            jwks.fetched = Some(Instant::now());
        }
        // Per client address: starting a login is cheap for the caller and
        // costs the server a stored record (finishing one needs a state
        // that only starting one gives, and it works once).
        let quota = governor::Quota::per_minute(NonZeroU32::new(60).expect("non-zero"))
            .allow_burst(NonZeroU32::new(30).expect("non-zero"));
        Ok(Self {
            config,
            client_secret,
            http,
            redirects,
            endpoints: tokio::sync::Mutex::new(None),
            jwks: tokio::sync::Mutex::new(jwks),
            limiter: governor::RateLimiter::keyed(quota),
            last_sweep: std::sync::atomic::AtomicI64::new(0),
        })
    }

    fn check_rate(&self, ip: IpAddr) -> Result<()> {
        self.limiter.check_key(&ip).map_err(|_| {
            Error::TooManyRequests("too many OIDC login attempts; try again in a minute".into())
        })
    }

    /// The redirect URI, if the allowlist permits it.
    fn allowed_redirect(&self, raw: &str) -> Result<url::Url> {
        let url = url::Url::parse(raw)
            .ok()
            .filter(|u| self.redirects.iter().any(|p| p.matches(u)))
            .ok_or_else(|| {
                Error::bad_request("redirect_uri is not one of the allowed redirect URIs")
            })?;
        Ok(url)
    }

    /// The endpoints: configured ones, else discovery (cached).
    async fn endpoints(&self) -> Result<Endpoints> {
        let c = &self.config;
        let configured_jwks = match (&c.jwks_url, &c.jwks_file) {
            (Some(u), _) => Some(JwksSource::Url(idp_url(u).map_err(Error::Internal)?)),
            (_, Some(f)) => Some(JwksSource::File(f.clone())),
            _ => None,
        };
        if let (Some(a), Some(t), Some(j)) = (
            &c.authorization_endpoint,
            &c.token_endpoint,
            &configured_jwks,
        ) {
            return Ok(Endpoints {
                authorization: idp_url(a).map_err(Error::Internal)?,
                token: idp_url(t).map_err(Error::Internal)?,
                jwks: j.clone(),
            });
        }
        let mut cached = self.endpoints.lock().await;
        if let Some((e, at)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(e.clone());
        }
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            c.issuer.trim_end_matches('/')
        );
        let doc = self
            .get_json(&discovery_url, "the discovery document")
            .await?;
        // OpenID Connect Discovery 1.0, section 4.3: the document must name
        // the issuer it was fetched for.
        if doc["issuer"].as_str() != Some(c.issuer.as_str()) {
            return Err(Error::Upstream(
                "the identity provider's discovery document names another issuer".into(),
            ));
        }
        let endpoint = |configured: &Option<String>, field: &str| -> Result<url::Url> {
            let raw = configured
                .clone()
                .or_else(|| doc[field].as_str().map(str::to_string))
                .ok_or_else(|| {
                    Error::Upstream(format!(
                        "the identity provider's discovery document has no {field}"
                    ))
                })?;
            idp_url(&raw).map_err(|m| {
                Error::Upstream(format!("the identity provider's {field} is unusable: {m}"))
            })
        };
        let endpoints = Endpoints {
            authorization: endpoint(&c.authorization_endpoint, "authorization_endpoint")?,
            token: endpoint(&c.token_endpoint, "token_endpoint")?,
            jwks: match configured_jwks {
                Some(j) => j,
                None => JwksSource::Url(endpoint(&None, "jwks_uri")?),
            },
        };
        *cached = Some((endpoints.clone(), Instant::now()));
        Ok(endpoints)
    }

    async fn get_json(&self, url: &str, what: &str) -> Result<Value> {
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| idp_error(what, &e))?;
        read_json(response, what).await
    }

    /// `auth/oidc/auth_url`: starts a login.
    pub async fn auth_url(&self, core: &Arc<Core>, req: &Request) -> Result<Value> {
        self.check_rate(req.client_ip)?;
        let redirect_uri = string_field(req, "redirect_uri")?;
        let redirect = self.allowed_redirect(&redirect_uri)?;
        let client_nonce = string_field(req, "client_nonce")?;
        if !(16..=256).contains(&client_nonce.len()) {
            return Err(Error::bad_request(
                "client_nonce must be 16 to 256 characters",
            ));
        }
        let code_challenge = string_field(req, "code_challenge")?;
        let method = req
            .field("code_challenge_method")
            .and_then(Value::as_str)
            .unwrap_or("S256");
        if method != "S256" {
            return Err(Error::bad_request("code_challenge_method must be S256"));
        }
        if code_challenge.len() != 43 || !code_challenge.bytes().all(is_base64url) {
            return Err(Error::bad_request(
                "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)",
            ));
        }
        let endpoints = self.endpoints().await?;
        let state = random_token();
        let nonce = random_token();
        let pending = Pending {
            nonce: nonce.clone(),
            client_nonce,
            code_challenge: code_challenge.clone(),
            redirect_uri: redirect.to_string(),
            expires_at: core.now_secs() + STATE_TTL_SECS,
        };
        core.barrier
            .put(
                &state_key(&state),
                &serde_json::to_vec(&pending).expect("serialisable"),
                Expect::Absent,
            )
            .await?;
        self.sweep_later(core);
        let mut url = endpoints.authorization;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect.as_str())
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &code_challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(json!({ "auth_url": url.to_string(), "state": state }))
    }

    /// `auth/oidc/callback`: finishes a login, up to a verified identity.
    pub async fn callback(&self, core: &Arc<Core>, req: &Request) -> Result<VerifiedIdentity> {
        let state = string_field(req, "state")?;
        let code = string_field(req, "code")?;
        let verifier = Zeroizing::new(string_field(req, "code_verifier")?);
        let redirect_uri = string_field(req, "redirect_uri")?;
        let client_nonce = string_field(req, "client_nonce")?;
        if code.len() > 4096 || state.len() > 256 {
            return Err(Error::bad_request("state or code is too long"));
        }
        // Take the pending login first, whatever follows: a state works once.
        let pending = take_pending(&core.barrier, &state).await?;
        if pending.expires_at < core.now_secs() {
            return Err(refused("the login took too long; start again"));
        }
        let redirect = self.allowed_redirect(&redirect_uri)?;
        if redirect.as_str() != pending.redirect_uri {
            return Err(refused(
                "redirect_uri is not the one the login was started with",
            ));
        }
        if !constant_time_eq(client_nonce.as_bytes(), pending.client_nonce.as_bytes()) {
            return Err(refused(
                "client_nonce is not the one the login was started with",
            ));
        }
        if !(43..=128).contains(&verifier.len()) || !verifier.bytes().all(is_pkce_char) {
            return Err(Error::bad_request(
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        if !constant_time_eq(
            pkce_challenge(&verifier).as_bytes(),
            pending.code_challenge.as_bytes(),
        ) {
            return Err(refused("code_verifier does not match the code_challenge"));
        }
        let endpoints = self.endpoints().await?;
        let id_token = self
            .exchange_code(&endpoints, &code, &verifier, redirect.as_str())
            .await?;
        self.verify_id_token(&endpoints, &id_token, &pending.nonce, core.now_secs())
            .await
    }

    async fn exchange_code(
        &self,
        endpoints: &Endpoints,
        code: &str,
        verifier: &str,
        redirect_uri: &str,
    ) -> Result<Zeroizing<String>> {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let mut request = self.http.post(endpoints.token.clone());
        match (&self.client_secret, self.config.token_auth_method) {
            (Some(secret), TokenAuthMethod::ClientSecretBasic) => {
                // RFC 6749, section 2.3.1: both parts form-encoded first.
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                request = request.basic_auth(enc(&self.config.client_id), Some(enc(secret)));
            }
            (Some(secret), TokenAuthMethod::ClientSecretPost) => {
                form.push(("client_id", &self.config.client_id));
                form.push(("client_secret", secret.as_str()));
            }
            (None, _) => form.push(("client_id", &self.config.client_id)),
        }
        let response = request
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| idp_error("the token endpoint", &e))?;
        let status = response.status();
        let body = read_json_any_status(response, "the token endpoint").await?;
        if !status.is_success() {
            // Only the registered error code: the description is free text.
            let code: String = body["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(refused(&format!(
                "the identity provider refused the authorization code ({code})"
            )));
        }
        body["id_token"]
            .as_str()
            .map(|t| Zeroizing::new(t.to_string()))
            .ok_or_else(|| Error::Upstream("the identity provider returned no ID token".into()))
    }

    /// Verifies an ID token: signature against the JWKS with an allowed
    /// algorithm, issuer, audience, times with bounded skew, nonce, `azp`.
    async fn verify_id_token(
        &self,
        endpoints: &Endpoints,
        token: &str,
        expected_nonce: &str,
        now: i64,
    ) -> Result<VerifiedIdentity> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| refused("the ID token is malformed or uses an unsupported algorithm"))?;
        if !ALLOWED_ALGORITHMS.contains(&header.alg) {
            return Err(refused(&format!(
                "the ID token's algorithm {:?} is not allowed",
                header.alg
            )));
        }
        let keys = self
            .keys_for(endpoints, header.kid.as_deref(), header.alg)
            .await?;
        if keys.is_empty() {
            return Err(refused(
                "no key of the identity provider matches the ID token",
            ));
        }
        let skew = self.config.clock_skew();
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[self.config.audience()]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = skew;
        validation.validate_nbf = true;
        let mut last = refused("the ID token's signature is not valid");
        for key in keys {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &validation) {
                Ok(data) => return self.identity_from(data.claims, expected_nonce, skew, now),
                Err(e) => {
                    last = token_error(&e);
                    if !matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature) {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn identity_from(
        &self,
        claims: serde_json::Map<String, Value>,
        expected_nonce: &str,
        skew: u64,
        now: i64,
    ) -> Result<VerifiedIdentity> {
        let iat = claims
            .get("iat")
            .and_then(Value::as_i64)
            .unwrap_or(i64::MAX);
        if iat > now + skew as i64 {
            return Err(refused("the ID token was issued in the future"));
        }
        let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
        if !constant_time_eq(nonce.as_bytes(), expected_nonce.as_bytes()) {
            return Err(refused("the ID token's nonce does not match this login"));
        }
        // OpenID Connect Core 1.0, section 3.1.3.7: several audiences need
        // an authorized party, and a present `azp` must be us.
        let audiences = match claims.get("aud") {
            Some(Value::Array(a)) => a.len(),
            _ => 1,
        };
        match claims.get("azp").and_then(Value::as_str) {
            Some(azp) if azp != self.config.client_id => {
                return Err(refused("the ID token was issued to another client"));
            }
            None if audiences > 1 => {
                return Err(refused(
                    "the ID token has several audiences and no authorized party",
                ));
            }
            _ => {}
        }
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 255)
            .ok_or_else(|| refused("the ID token has no usable subject"))?
            .to_string();
        let email = claims
            .get(&self.config.email_claim)
            .and_then(Value::as_str)
            .map(|e| e.trim().to_lowercase())
            .filter(|e| !e.is_empty() && e.len() <= 320 && e.contains('@'));
        // Some IdPs send the string "true".
        let email_verified = matches!(claims.get("email_verified"), Some(Value::Bool(true)))
            || claims.get("email_verified").and_then(Value::as_str) == Some("true");
        let groups = match self
            .config
            .groups_claim
            .as_deref()
            .and_then(|c| claims.get(c))
        {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .take(MAX_GROUPS)
                .map(str::to_string)
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        let name = claims
            .get("name")
            .and_then(Value::as_str)
            .map(|n| n.chars().take(200).collect());
        Ok(VerifiedIdentity {
            issuer: self.config.issuer.clone(),
            subject,
            email,
            email_verified,
            name,
            groups,
        })
    }

    /// The project roles the configured group mapping gives these groups.
    pub(crate) fn roles_for(&self, groups: &[String]) -> Vec<String> {
        let mut roles: Vec<String> = groups
            .iter()
            .filter_map(|g| self.config.group_roles.get(g))
            .flatten()
            .cloned()
            .collect();
        roles.sort();
        roles.dedup();
        roles
    }

    /// Keys that may have signed a token with this `kid` and algorithm,
    /// fetching the JWKS again (at most every 30 s) for an unknown `kid`.
    async fn keys_for(
        &self,
        endpoints: &Endpoints,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<DecodingKey>> {
        let mut cache = self.jwks.lock().await;
        let mut found = matching_keys(&cache.keys, kid, alg);
        let stale = cache
            .fetched
            .is_none_or(|at| at.elapsed() >= JWKS_REFRESH_INTERVAL);
        if found.is_empty() && stale {
            cache.keys = self.fetch_jwks(&endpoints.jwks).await?;
            cache.fetched = Some(Instant::now());
            found = matching_keys(&cache.keys, kid, alg);
        }
        Ok(found)
    }

    async fn fetch_jwks(&self, source: &JwksSource) -> Result<Vec<Jwk>> {
        let text = match source {
            JwksSource::Url(url) => self.get_json(url.as_str(), "the JWKS").await?.to_string(),
            JwksSource::File(path) => tokio::fs::read_to_string(path)
                .await
                .map_err(|e| Error::Internal(format!("cannot read the OIDC JWKS file: {e}")))?,
        };
        parse_jwks(&text).map_err(Error::Upstream)
    }

    /// Deletes expired pending logins, at most once a minute, in the
    /// background.
    fn sweep_later(&self, core: &Arc<Core>) {
        use std::sync::atomic::Ordering;
        let now = core.now_secs();
        let last = self.last_sweep.load(Ordering::Relaxed);
        if now - last < SWEEP_INTERVAL_SECS
            || self
                .last_sweep
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let core = core.clone();
        tokio::spawn(async move {
            if let Err(e) = sweep_expired(&core.barrier, now).await {
                tracing::warn!(error = %e, "could not sweep expired OIDC logins");
            }
        });
    }
}

/// Walks the pending logins (bounded per sweep) and deletes expired ones.
async fn sweep_expired(barrier: &Barrier, now: i64) -> Result<()> {
    let names = barrier.list(STATE_PREFIX, "", 1000).await?;
    for name in names {
        let key = format!("{STATE_PREFIX}{name}");
        if let Some(record) = barrier.get(&key).await?
            && serde_json::from_slice::<Pending>(&record.value).map_or(true, |p| p.expires_at < now)
        {
            let _ = barrier
                .commit(vec![Write::Delete {
                    key,
                    expect: Some(Expect::Generation(record.generation)),
                }])
                .await;
        }
    }
    Ok(())
}

/// Reads and deletes a pending login; of two concurrent callbacks with one
/// state, exactly one gets it.
async fn take_pending(barrier: &Barrier, state: &str) -> Result<Pending> {
    let gone = || refused("unknown, expired or already used login state; start again");
    let key = state_key(state);
    let record = barrier.get(&key).await?.ok_or_else(gone)?;
    match barrier
        .commit(vec![Write::Delete {
            key: key.clone(),
            expect: Some(Expect::Generation(record.generation)),
        }])
        .await
    {
        Ok(()) => {}
        Err(BarrierError::Conflict { .. }) => return Err(gone()),
        Err(e) => return Err(e.into()),
    }
    serde_json::from_slice(&record.value).map_err(|_| Error::Integrity { key })
}

fn state_key(state: &str) -> String {
    format!(
        "{STATE_PREFIX}{}",
        hex::encode(Sha256::digest(state.as_bytes()))
    )
}

/// 256 random bits, base64url.
fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// RFC 7636: BASE64URL(SHA256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

fn is_pkce_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

fn string_field(req: &Request, name: &str) -> Result<String> {
    req.field(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::bad_request(format!("'{name}' is required")))
}

fn refused(reason: &str) -> Error {
    Error::BadRequest(format!("OIDC login refused: {reason}"))
}

fn token_error(e: &jsonwebtoken::errors::Error) -> Error {
    use jsonwebtoken::errors::ErrorKind as K;
    refused(match e.kind() {
        K::InvalidIssuer => "the ID token was issued by another issuer",
        K::InvalidAudience => "the ID token is for another audience",
        K::ExpiredSignature => "the ID token has expired",
        K::ImmatureSignature => "the ID token is not valid yet",
        K::InvalidSignature => "the ID token's signature is not valid",
        K::InvalidAlgorithm | K::InvalidAlgorithmName => "the ID token's algorithm is not allowed",
        K::MissingRequiredClaim(_) => {
            "the ID token lacks a required claim (exp, iat, iss, aud, sub)"
        }
        _ => "the ID token is malformed",
    })
}

/// The usable signing keys of a JWKS document; keys of unknown types are
/// skipped, symmetric keys are never used.
fn parse_jwks(text: &str) -> std::result::Result<Vec<Jwk>, String> {
    let doc: Value = serde_json::from_str(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let keys = doc["keys"]
        .as_array()
        .ok_or_else(|| "not a JWKS: no \"keys\" array".to_string())?;
    Ok(keys
        .iter()
        .take(MAX_JWKS_KEYS)
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|k| !matches!(k.algorithm, AlgorithmParameters::OctetKey(_)))
        .collect())
}

fn matching_keys(keys: &[Jwk], kid: Option<&str>, alg: Algorithm) -> Vec<DecodingKey> {
    keys.iter()
        .filter(|k| match kid {
            Some(kid) => k.common.key_id.as_deref() == Some(kid),
            None => true,
        })
        .filter(|k| fits(k, alg))
        .filter_map(|k| DecodingKey::from_jwk(k).ok())
        .collect()
}

/// Whether a JWK may verify this algorithm: its type and curve fit, its
/// declared `alg` (if any) is this one, its `use` (if any) is signing.
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    let declared = match key.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::RS256) => alg == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => alg == Algorithm::EdDSA,
        Some(_) => false,
    };
    let usable = !matches!(
        key.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    );
    let kind = match (&key.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256) => true,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    declared && usable && kind
}

fn idp_error(what: &str, e: &reqwest::Error) -> Error {
    let why = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    Error::Upstream(format!("identity provider: {what}: {why}"))
}

async fn read_json(response: reqwest::Response, what: &str) -> Result<Value> {
    if !response.status().is_success() {
        return Err(Error::Upstream(format!(
            "identity provider: {what} answered {}",
            response.status().as_u16()
        )));
    }
    read_json_any_status(response, what).await
}

/// The body as JSON, reading at most [`MAX_IDP_RESPONSE_BYTES`].
async fn read_json_any_status(mut response: reqwest::Response, what: &str) -> Result<Value> {
    let too_big = || Error::Upstream(format!("identity provider: {what}: answer too large"));
    if response
        .content_length()
        .is_some_and(|n| n > MAX_IDP_RESPONSE_BYTES as u64)
    {
        return Err(too_big());
    }
    let mut body = Zeroizing::new(Vec::new());
    while let Some(chunk) = response.chunk().await.map_err(|e| idp_error(what, &e))? {
        if body.len() + chunk.len() > MAX_IDP_RESPONSE_BYTES {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body)
        .map_err(|_| Error::Upstream(format!("identity provider: {what}: not JSON")))
}

/// `POST auth/oidc/auth_url`.
pub(crate) async fn auth_url_route(core: &Arc<Core>, req: &Request) -> Result<Response> {
    let oidc = configured(core)?;
    let data = oidc.auth_url(core, req).await?;
    Ok(Response::data(data))
}

/// The configured OIDC login, or a 400 saying it is not.
pub fn configured(core: &Core) -> Result<&Oidc> {
    core.oidc()
        .ok_or_else(|| Error::bad_request("OIDC login is not configured on this server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(toml_text: &str) -> OidcConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn issuer_and_audience_are_required() {
        assert!(toml::from_str::<OidcConfig>("client_id = \"zafe\"").is_err());
        let c = config("issuer = \"\"\nclient_id = \"zafe\"");
        assert!(c.validate().is_err());
        let c =
            config("issuer = \"https://idp.example.com\"\nclient_id = \"zafe\"\naudience = \" \"");
        assert!(c.validate().is_err());
        let c = config("issuer = \"https://idp.example.com\"\nclient_id = \"zafe\"");
        c.validate().unwrap();
        assert_eq!(c.audience(), "zafe");
    }

    #[test]
    fn skew_and_timeouts_are_bounded() {
        let base = "issuer = \"https://idp.example.com\"\nclient_id = \"zafe\"\n";
        assert!(
            config(&format!("{base}clock_skew_secs = 301"))
                .validate()
                .is_err()
        );
        config(&format!("{base}clock_skew_secs = 300"))
            .validate()
            .unwrap();
        assert!(
            config(&format!("{base}timeout_secs = 0"))
                .validate()
                .is_err()
        );
        assert!(
            config(&format!("{base}timeout_secs = 31"))
                .validate()
                .is_err()
        );
        assert_eq!(config(base).clock_skew(), 60);
        assert_eq!(config(base).timeout(), Duration::from_secs(5));
    }

    // R-OPS-5: only https IdP URLs (http on loopback), no credentials.
    #[test]
    fn idp_urls_are_checked() {
        let base = "client_id = \"zafe\"\n";
        for bad in [
            "http://idp.example.com",
            "https://user:pw@idp.example.com",
            "file:///etc/passwd",
            "https://idp.example.com/#x",
        ] {
            let c = config(&format!("{base}issuer = \"{bad}\""));
            assert!(c.validate().is_err(), "{bad}");
        }
        config(&format!("{base}issuer = \"http://127.0.0.1:9000\""))
            .validate()
            .unwrap();
        let c = config(&format!(
            "{base}issuer = \"https://idp.example.com\"\ntoken_endpoint = \"http://10.0.0.1/token\""
        ));
        assert!(c.validate().is_err());
    }

    #[test]
    fn redirect_uris_match_the_allowlist_only() {
        let p = RedirectPattern::parse("http://127.0.0.1:*/callback").unwrap();
        let ok = |s: &str| p.matches(&url::Url::parse(s).unwrap());
        assert!(ok("http://127.0.0.1:49152/callback"));
        assert!(ok("http://127.0.0.1/callback"));
        assert!(!ok("http://127.0.0.1:49152/callback/x"));
        assert!(!ok("http://127.0.0.2:49152/callback"));
        assert!(!ok("https://127.0.0.1:49152/callback"));
        assert!(!ok("http://evil.example.com:49152/callback"));
        assert!(!ok("http://u@127.0.0.1:1/callback"));
        assert!(!ok("http://127.0.0.1:1/callback?x=1"));
        let fixed = RedirectPattern::parse("https://zafe.example.com/oidc/callback").unwrap();
        assert!(
            fixed.matches(&url::Url::parse("https://zafe.example.com:443/oidc/callback").unwrap())
        );
        assert!(
            !fixed.matches(&url::Url::parse("https://zafe.example.com:444/oidc/callback").unwrap())
        );
        assert!(RedirectPattern::parse("http://example.com:*/callback").is_err());
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn role_grants_are_checked() {
        assert_eq!(
            parse_role_grant("myapp:member").unwrap(),
            ("myapp", "member")
        );
        assert!(parse_role_grant("myapp:owner").is_err());
        assert!(parse_role_grant("member").is_err());
        assert!(parse_role_grant(":member").is_err());
    }

    #[test]
    fn symmetric_and_unknown_keys_are_never_used() {
        let jwks = r#"{"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "h"},
            {"kty": "weird", "kid": "w"},
            {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "e", "alg": "EdDSA"}
        ]}"#;
        let keys = parse_jwks(jwks).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(matching_keys(&keys, Some("e"), Algorithm::EdDSA).len(), 1);
        assert!(matching_keys(&keys, Some("e"), Algorithm::RS256).is_empty());
        assert!(matching_keys(&keys, Some("h"), Algorithm::EdDSA).is_empty());
    }
}
