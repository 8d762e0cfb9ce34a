//! The HTTP client.
//!
//! It holds two reqwest clients. The *public* one talks to the
//! unauthenticated endpoints and carries nothing secret. The *verified* one
//! is built only after the server proved its identity (R-ID-3) and accepts
//! only the TLS key the proof was checked on; every request that carries a
//! token or a key share goes through it. Keeping them apart matters: a
//! pooled connection of the public client was never checked against the pin
//! and must not carry a token.
//!
//! A long-lived client (the agent, `zafe mcp`) outlives certificates: when a
//! connection presents another TLS key than the verified channel's (the
//! certificate was renewed with a new key), the TLS verifier refuses it
//! before anything is written, the channel is forgotten, the server's
//! identity is verified afresh (the new proof must come from the pinned
//! identity key and be bound to the key this connection presents), and the
//! request is sent once more on the new channel.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand_core::RngCore as _;
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use time::OffsetDateTime;
use zafe_core::identity::IdentityProof;
use zafe_core::reference::Reference;
use zafe_core::secret::SecretString;

use crate::config::{ClientConfig, Token, normalize_addr};
use crate::error::{Error, Result, chain};
use crate::pins::{Checked, PinEvent, PinStore};
use crate::tls;
use crate::types::{Health, InitResponse, SealStatus};

/// How long a backup's download or a restore's upload may take in all.
pub(crate) const BULK_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// A proof as fetched, before any check.
#[derive(Debug, Clone)]
pub struct FetchedProof {
    /// The proof as the server sent it; nothing about it is trusted yet.
    pub proof: IdentityProof,
    /// The fresh random nonce the proof must answer.
    pub nonce: [u8; 32],
    /// SHA-256 of the SubjectPublicKeyInfo of the certificate on the
    /// connection the proof came over; `None` for plain HTTP.
    pub observed_tls_spki: Option<[u8; 32]>,
}

/// What a WebSocket needs of the verified channel: its TLS key and the trust roots (`None`
/// over plain HTTP).
pub(crate) struct SocketChannel {
    pub(crate) tls_spki: Option<[u8; 32]>,
    pub(crate) roots: Option<Arc<rustls::RootCertStore>>,
    verified: Arc<Verified>,
}

/// What the verified channel is: its HTTP client and the identity it was
/// verified against.
struct Verified {
    http: reqwest::Client,
    checked: Checked,
    /// The TLS key the identity proof was bound to (`None` over plain HTTP).
    tls_spki: Option<[u8; 32]>,
    /// Set by the TLS verifier when a connection presented another key.
    pin_rejected: Arc<AtomicBool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Channel {
    /// Unverified, no token: public endpoints only.
    Public,
    /// Identity verified, no token (init, unseal).
    Verified,
    /// Identity verified, token attached if there is one.
    WithToken,
}

/// A connection to one server. Public endpoints (status, health, the
/// identity proof itself) go out at once; everything else waits until the
/// server has proven its identity on a connection pinned to the TLS key it
/// was proven on, and only then carries the token. `Debug` shows the address
/// only.
pub struct Client {
    config: ClientConfig,
    /// The normalised address: the pin key and the base of every URL.
    addr: String,
    /// Trust anchors for https; `None` for plain HTTP.
    roots: Option<Arc<rustls::RootCertStore>>,
    pins: PinStore,
    public: reqwest::Client,
    /// The verified channel, once opened; replaced when the server's TLS key changed.
    verified: tokio::sync::Mutex<Option<Arc<Verified>>>,
    /// A person's session, when the token is its access token: replaced
    /// (and stored again) when the client refreshes it.
    session: parking_lot::Mutex<Option<crate::session::Session>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// References per `sys/resolve` request: the server's limit.
pub(crate) const RESOLVE_BATCH: usize = 1000;

impl Client {
    /// A client for `config`. Reads the CA file for https addresses but
    /// sends nothing yet.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let roots = match config.addr.scheme() {
            "https" => Some(tls::root_store(config.ca_cert.as_deref())?),
            _ => None,
        };
        let session = match (&config.token, &config.refresh_token) {
            (Some(access), Some(refresh)) => Some(crate::session::Session {
                access: access.clone(),
                refresh: refresh.clone(),
            }),
            _ => None,
        };
        Ok(Self {
            session: parking_lot::Mutex::new(session),
            public: http_client(&config, roots.as_ref(), None, Arc::default())?,
            addr: normalize_addr(&config.addr),
            pins: PinStore::new(&config.config_dir),
            roots,
            config,
            verified: tokio::sync::Mutex::new(None),
        })
    }

    /// The configuration the client was made with.
    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// The normalised server address, as pins are keyed.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The pin store this client checks identities against.
    pub fn pins(&self) -> &PinStore {
        &self.pins
    }

    // ---- Identity -------------------------------------------------------

    /// Fetches an identity proof for a fresh random nonce, noting the TLS
    /// key of the connection it came over. Checks nothing; see
    /// [`Self::verify_identity`].
    pub async fn identity(&self) -> Result<FetchedProof> {
        let mut nonce = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let path = format!("/v1/sys/identity?nonce={}", hex::encode(nonce));
        // Straight on the public client: this is what opens the verified one.
        let resp = self
            .send_on(&self.public, None, Method::GET, &path, None)
            .await?;
        let observed_tls_spki = if self.roots.is_some() {
            // With `tls_info(true)` reqwest attaches the peer's leaf
            // certificate of the connection this response came over.
            let der = resp
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .ok_or_else(|| {
                    self.unexpected(
                        resp.status(),
                        "no TLS certificate seen on an https connection",
                    )
                })?;
            Some(tls::spki_hash(der).ok_or_else(|| {
                self.unexpected(resp.status(), "the server's TLS certificate does not parse")
            })?)
        } else {
            None
        };
        let proof = self.read_json(resp).await?;
        Ok(FetchedProof {
            proof,
            nonce,
            observed_tls_spki,
        })
    }

    /// Verifies the server's identity now, against the pin for this address
    /// and the expected server_id if one was configured, pinning it on first
    /// use. The first call also opens the verified channel that tokens use.
    pub async fn verify_identity(&self) -> Result<Checked> {
        let verified = self.establish().await?;
        let checked = verified.checked.clone();
        // If another call opened the channel first, keep that one: it is
        // pinned to a key that was verified just the same.
        self.verified.lock().await.get_or_insert(Arc::new(verified));
        Ok(checked)
    }

    /// Checks that the server at `self.addr()` proves the key pinned for
    /// `old_addr`, then moves that pin here (`zafe server-id migrate`).
    pub async fn migrate_pin_from(&self, old_addr: &str) -> Result<crate::pins::Pin> {
        let fetched = self.identity().await?;
        self.pins.migrate(
            old_addr,
            &self.addr,
            &fetched.proof,
            &fetched.nonce,
            OffsetDateTime::now_utc(),
            fetched.observed_tls_spki.as_ref(),
        )
    }

    /// For [`Client::websocket`]: the verified channel's TLS key (pinned) and the trust roots
    /// (`None` over plain HTTP).
    pub(crate) async fn channel_for_socket(&self) -> Result<SocketChannel> {
        let verified = self.verified().await?;
        Ok(SocketChannel {
            tls_spki: verified.tls_spki,
            roots: self.roots.clone(),
            verified,
        })
    }

    /// After a socket's TLS handshake refused the channel's key: forgets that channel, so that
    /// the next connection verifies the server afresh.
    pub(crate) async fn forget_socket_channel(&self, channel: &SocketChannel) {
        self.forget(&channel.verified).await;
    }

    async fn verified(&self) -> Result<Arc<Verified>> {
        let mut slot = self.verified.lock().await;
        if let Some(verified) = slot.as_ref() {
            return Ok(verified.clone());
        }
        let verified = Arc::new(self.establish().await?);
        *slot = Some(verified.clone());
        Ok(verified)
    }

    /// Forgets the verified channel if it is still `stale` (another request may have replaced
    /// it already).
    async fn forget(&self, stale: &Arc<Verified>) {
        let mut slot = self.verified.lock().await;
        if slot.as_ref().is_some_and(|v| Arc::ptr_eq(v, stale)) {
            *slot = None;
        }
    }

    async fn establish(&self) -> Result<Verified> {
        let fetched = self.identity().await?;
        let checked = self.pins.verify_and_pin(
            &self.addr,
            &fetched.proof,
            &fetched.nonce,
            OffsetDateTime::now_utc(),
            fetched.observed_tls_spki.as_ref(),
            self.config.server_id.as_deref(),
        )?;
        self.announce(&checked);
        let pin_rejected = Arc::new(AtomicBool::new(false));
        let http = http_client(
            &self.config,
            self.roots.as_ref(),
            fetched.observed_tls_spki,
            pin_rejected.clone(),
        )?;
        Ok(Verified {
            http,
            checked,
            tls_spki: fetched.observed_tls_spki,
            pin_rejected,
        })
    }

    /// Tells the person at the terminal when a pin is created or changed,
    /// on stderr so that it never mixes with a command's output.
    fn announce(&self, checked: &Checked) {
        let id = &checked.identity.server_id;
        let bound = if checked.identity.tls_bound {
            ", bound to its TLS certificate"
        } else {
            ""
        };
        match checked.event {
            PinEvent::Matched => {}
            PinEvent::FirstUse if self.config.server_id.is_some() => {
                eprintln!(
                    "zafe: pinned {} as {id} (the expected server id){bound}.",
                    self.addr
                );
            }
            PinEvent::FirstUse => eprintln!(
                "zafe: first connection to {}: pinned its identity {id}{bound}.\n      \
                 From now on a server at this address that cannot prove this identity is refused.\n      \
                 Check this id with the server's operator (its startup log, or `zafe server-id show` on a trusted \
                 machine).",
                self.addr
            ),
            PinEvent::UpgradedToTls => eprintln!(
                "zafe: {}'s identity {id} is now bound to its TLS certificate; the pin was updated.",
                self.addr
            ),
        }
    }

    // ---- sys/ endpoints ---------------------------------------------------

    /// `sys/seal-status`, unauthenticated and before any identity check
    /// (it sends nothing secret; its `server_id` is only a claim).
    pub async fn seal_status(&self) -> Result<SealStatus> {
        let resp = self
            .send(Method::GET, "/v1/sys/seal-status", None, Channel::Public)
            .await?;
        self.read_json(resp).await
    }

    /// The server's health. Like Vault, the server answers 501 when not
    /// initialised and 503 when sealed, with the same JSON; those are
    /// returned as `Ok`, not as errors.
    pub async fn health(&self) -> Result<Health> {
        let resp = self
            .send(Method::GET, "/v1/sys/health", None, Channel::Public)
            .await?;
        let status = resp.status();
        let body = self.read_bytes(resp).await?;
        match serde_json::from_slice::<Health>(&body) {
            Ok(health) => Ok(health),
            Err(_) if !status.is_success() => Err(server_error(status, &body)),
            Err(e) => Err(self.bad_json(status, &e)),
        }
    }

    /// Whether the server has been initialised.
    pub async fn init_status(&self) -> Result<bool> {
        #[derive(serde::Deserialize)]
        struct Init {
            initialized: bool,
        }
        let resp = self
            .send(Method::GET, "/v1/sys/init", None, Channel::Public)
            .await?;
        Ok(self.read_json::<Init>(resp).await?.initialized)
    }

    /// Initialises the server. Its identity is verified first: the answer
    /// holds every unseal share and the root token.
    pub async fn init(&self, shares: u8, threshold: u8) -> Result<InitResponse> {
        let body = json!({ "secret_shares": shares, "secret_threshold": threshold });
        let resp = self
            .send(Method::PUT, "/v1/sys/init", Some(&body), Channel::Verified)
            .await?;
        self.read_json(resp).await
    }

    /// Submits one unseal share (hex or base64). Its identity is verified
    /// first: a share must never reach an impostor.
    pub async fn unseal(&self, key: &str) -> Result<SealStatus> {
        let body = json!({ "key": key });
        let resp = self
            .send(
                Method::PUT,
                "/v1/sys/unseal",
                Some(&body),
                Channel::Verified,
            )
            .await?;
        self.read_json(resp).await
    }

    /// Discards the shares submitted so far.
    pub async fn unseal_reset(&self) -> Result<SealStatus> {
        let body = json!({ "reset": true });
        let resp = self
            .send(Method::PUT, "/v1/sys/unseal", Some(&body), Channel::Public)
            .await?;
        self.read_json(resp).await
    }

    /// Seals the server (needs a root token).
    pub async fn seal(&self) -> Result<()> {
        self.require_token()?;
        let resp = self
            .send(Method::PUT, "/v1/sys/seal", None, Channel::WithToken)
            .await?;
        let status = resp.status();
        let body = self.read_bytes(resp).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(server_error(status, &body))
        }
    }

    /// Resolves `zafe://` references to their values with `POST
    /// sys/resolve`: one request for up to 1000 references, the server's limit (more
    /// are sent in batches of that size). All or nothing: if any reference
    /// is missing or forbidden the server names them and no value is
    /// returned. Values are held as [`SecretString`]s (zeroized on drop,
    /// redacted in `Debug`).
    pub async fn resolve(
        &self,
        references: &[Reference],
    ) -> Result<BTreeMap<Reference, SecretString>> {
        #[derive(serde::Deserialize)]
        struct Answer {
            data: Values,
        }
        #[derive(serde::Deserialize)]
        struct Values {
            values: BTreeMap<String, SecretString>,
        }
        self.require_token()?;
        let unique: BTreeSet<&Reference> = references.iter().collect();
        let unique: Vec<&Reference> = unique.into_iter().collect();
        let mut resolved = BTreeMap::new();
        for batch in unique.chunks(RESOLVE_BATCH) {
            let texts: Vec<String> = batch.iter().map(|r| r.to_string()).collect();
            let body = json!({ "references": texts });
            let resp = self
                .send(
                    Method::POST,
                    "/v1/sys/resolve",
                    Some(&body),
                    Channel::WithToken,
                )
                .await?;
            let mut answer: Answer = self.read_json(resp).await?;
            for (reference, text) in batch.iter().zip(&texts) {
                let value = answer.data.values.remove(text).ok_or_else(|| {
                    self.unexpected(StatusCode::OK, "an answer without a requested reference")
                })?;
                resolved.insert((*reference).clone(), value);
            }
        }
        Ok(resolved)
    }

    /// Any request, over the verified channel, with the token if there is
    /// one. `path` is the URL path from `/v1/` on, already percent-encoded,
    /// with an optional query (`/v1/secret/metadata/app?list=true`). Returns
    /// `None` for an empty answer (204).
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>> {
        let mut resp = self
            .send(method.clone(), path, body, Channel::WithToken)
            .await?;
        // An expired session: refresh once, then try again once.
        if resp.status() == StatusCode::FORBIDDEN && self.refresh_session().await? {
            resp = self.send(method, path, body, Channel::WithToken).await?;
        }
        let status = resp.status();
        let bytes = self.read_bytes(resp).await?;
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.bad_json(status, &e))
    }

    /// Like [`Self::request_json`], for an answer that is not JSON or too
    /// long to hold (audit exports): the response, once its status is a
    /// success, to read in chunks with `reqwest::Response::chunk`.
    pub async fn request_stream(&self, method: Method, path: &str) -> Result<reqwest::Response> {
        let resp = self.send(method, path, None, Channel::WithToken).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = self.read_bytes(resp).await?;
            return Err(server_error(status, &bytes));
        }
        Ok(resp)
    }

    /// A request over the verified channel with the token if there is one,
    /// allowed [`BULK_TIMEOUT`] instead of the client's timeout (which
    /// covers the whole body too): for backups, which move a whole store.
    async fn bulk(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<reqwest::Response> {
        let v = self.verified().await?;
        let sep = if path.starts_with('/') { "" } else { "/" };
        let mut req = v
            .http
            .request(method, format!("{}{sep}{path}", self.addr))
            .timeout(BULK_TIMEOUT);
        if let Some((content_type, body)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body);
        }
        if let Some(token) = self.current_token() {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                Error::Config("the token contains characters not allowed in an HTTP header".into())
            })?;
            value.set_sensitive(true);
            req = req.header("X-Vault-Token", value);
        }
        req.send().await.map_err(|e| self.transport(e))
    }

    /// Like [`Self::request_stream`], allowed [`BULK_TIMEOUT`] (a backup).
    pub async fn download(&self, path: &str) -> Result<reqwest::Response> {
        let resp = self.bulk(Method::GET, path, None).await?;
        let status = resp.status();
        if !status.is_success() {
            let bytes = self.read_bytes(resp).await?;
            return Err(server_error(status, &bytes));
        }
        Ok(resp)
    }

    /// Sends `body` as raw bytes of `content_type` (a backup to
    /// `sys/restore`), allowed [`BULK_TIMEOUT`], and reads a JSON answer.
    /// `path` as for [`Self::request_json`].
    pub async fn upload(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Option<Value>> {
        let resp = self.bulk(method, path, Some((content_type, body))).await?;
        let status = resp.status();
        let bytes = self.read_bytes(resp).await?;
        if !status.is_success() {
            return Err(server_error(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| self.bad_json(status, &e))
    }

    /// Reads the next chunk of a [`Self::request_stream`] body.
    pub async fn next_chunk(&self, resp: &mut reqwest::Response) -> Result<Option<Vec<u8>>> {
        resp.chunk()
            .await
            .map(|c| c.map(|b| b.to_vec()))
            .map_err(|e| self.transport(e))
    }

    /// The token requests carry now (a session's current access token).
    pub(crate) fn current_token(&self) -> Option<Token> {
        match self.session.lock().as_ref() {
            Some(session) => Some(session.access.clone()),
            None => self.config.token.clone(),
        }
    }

    /// Every credential this client holds: its token, and a session's
    /// current access and refresh tokens (for masking them, never for
    /// showing them).
    pub fn held_tokens(&self) -> Vec<Token> {
        let mut tokens: Vec<Token> = self.config.token.iter().cloned().collect();
        if let Some(session) = self.session.lock().as_ref() {
            tokens.push(session.access.clone());
            tokens.push(session.refresh.clone());
        }
        tokens
    }

    /// Trades the session's refresh token for a new pair and stores it.
    /// `false` when there is no session or the server refused (expired,
    /// revoked): the caller then sees the original refusal.
    pub(crate) async fn refresh_session(&self) -> Result<bool> {
        let Some(refresh) = self.session.lock().as_ref().map(|s| s.refresh.clone()) else {
            return Ok(false);
        };
        let v = self.verified().await?;
        let body = serde_json::json!({ "refresh_token": refresh.expose() });
        let resp = self
            .send_on(
                &v.http,
                None,
                Method::POST,
                "/v1/auth/user/refresh",
                Some(&body),
            )
            .await?;
        if !resp.status().is_success() {
            return Ok(false);
        }
        let answer: Value = self.read_json(resp).await?;
        let (Some(access), Some(refresh)) = (
            answer["auth"]["client_token"].as_str(),
            answer["auth"]["refresh_token"].as_str(),
        ) else {
            return Ok(false);
        };
        let session = crate::session::Session {
            access: Token::new(access),
            refresh: Token::new(refresh),
        };
        crate::session::save(&self.config.config_dir, &self.addr, &session)?;
        *self.session.lock() = Some(session);
        Ok(true)
    }

    // ---- Plumbing -------------------------------------------------------

    fn require_token(&self) -> Result<()> {
        match &self.config.token {
            Some(_) => Ok(()),
            None => Err(Error::NoToken {
                token_file: self.config.token_file(),
            }),
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        channel: Channel,
    ) -> Result<reqwest::Response> {
        match channel {
            Channel::Public => self.send_on(&self.public, None, method, path, body).await,
            Channel::Verified | Channel::WithToken => {
                let token = match channel {
                    Channel::WithToken => self.current_token(),
                    _ => None,
                };
                let mut attempt = 0;
                loop {
                    attempt += 1;
                    let v = self.verified().await?;
                    match self
                        .send_on(&v.http, token.as_ref(), method.clone(), path, body)
                        .await
                    {
                        // The verifier refused a connection for its TLS key, before the request
                        // was written: verify the server afresh and send it once more.
                        Err(Error::Transport { .. })
                            if v.pin_rejected.load(Ordering::Relaxed) && attempt == 1 =>
                        {
                            self.forget(&v).await;
                        }
                        // Still refused: say so rather than show a bare TLS error.
                        Err(Error::Transport { .. }) if v.pin_rejected.load(Ordering::Relaxed) => {
                            return Err(Error::TlsKeyChanged {
                                addr: self.addr.clone(),
                            });
                        }
                        other => return other,
                    }
                }
            }
        }
    }

    async fn send_on(
        &self,
        http: &reqwest::Client,
        token: Option<&Token>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let sep = if path.starts_with('/') { "" } else { "/" };
        let mut req = http.request(method, format!("{}{sep}{path}", self.addr));
        if let Some(token) = token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
                Error::Config("the token contains characters not allowed in an HTTP header".into())
            })?;
            value.set_sensitive(true);
            req = req.header("X-Vault-Token", value);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.map_err(|e| self.transport(e))
    }

    async fn read_bytes(
        &self,
        resp: reqwest::Response,
    ) -> Result<impl std::ops::Deref<Target = [u8]> + use<>> {
        resp.bytes().await.map_err(|e| self.transport(e))
    }

    async fn read_json<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T> {
        let status = resp.status();
        let body = self.read_bytes(resp).await?;
        if !status.is_success() {
            return Err(server_error(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| self.bad_json(status, &e))
    }

    fn transport(&self, err: reqwest::Error) -> Error {
        // The URL would repeat the address and show the nonce: leave it out.
        let mut detail = chain(&err.without_url());
        if detail.contains("UnknownIssuer") {
            detail.push_str(
                " (set ZAFE_CACERT or --ca-cert to the CA that signed the server's certificate)",
            );
        }
        Error::Transport {
            addr: self.addr.clone(),
            detail,
        }
    }

    fn unexpected(&self, status: StatusCode, what: &str) -> Error {
        Error::UnexpectedResponse {
            addr: self.addr.clone(),
            status: status.as_u16(),
            what: what.to_string(),
        }
    }

    /// serde_json's messages can quote the offending value, which might be
    /// secret, so only its position is reported.
    fn bad_json(&self, status: StatusCode, err: &serde_json::Error) -> Error {
        self.unexpected(
            status,
            &format!(
                "the body is not the JSON expected (line {}, column {})",
                err.line(),
                err.column()
            ),
        )
    }
}

/// One of the two reqwest clients; see the module documentation.
fn http_client(
    config: &ClientConfig,
    roots: Option<&Arc<rustls::RootCertStore>>,
    pinned_spki: Option<[u8; 32]>,
    pin_rejected: Arc<AtomicBool>,
) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("zafe/", env!("CARGO_PKG_VERSION")))
        .timeout(config.timeout)
        .connect_timeout(config.timeout.min(Duration::from_secs(10)))
        // reqwest strips `Authorization` on a cross-host redirect but not
        // `X-Vault-Token`; a Zafe server never redirects, so follow none.
        .redirect(reqwest::redirect::Policy::none());
    if let Some(roots) = roots {
        let tls = tls::client_config(roots.clone(), pinned_spki, pin_rejected)?;
        builder = builder.use_preconfigured_tls(tls).tls_info(true);
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("HTTP client: {}", chain(&e))))
}

/// A non-success answer, with the messages of a Vault-style
/// `{"errors": [...]}` body when it has one.
fn server_error(status: StatusCode, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<String>,
    }
    let errors = serde_json::from_slice::<Errors>(body)
        .map(|e| e.errors)
        .unwrap_or_default();
    Error::ServerError {
        status: status.as_u16(),
        errors,
    }
}
