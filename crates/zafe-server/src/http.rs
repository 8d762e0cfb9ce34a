//! HTTP on top of the core: axum routes, and the middleware every request
//! passes through (R-OPS-1..3, R-WEB-2 headers):
//!
//! - a request id (from `X-Request-Id` if the caller sent a plain one, else
//!   a new UUID) on every response, log line and error;
//! - the real client address, believing `X-Forwarded-For` only from
//!   configured trusted proxies;
//! - a body size cap answered with a JSON 413 before anything is read;
//! - panics turned into a JSON 500 that names the request id and nothing else;
//! - security headers and `Cache-Control: no-store` on every response;
//! - CORS only for configured origins.

use std::net::{IpAddr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request as HttpRequest, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use ipnet::IpNet;
use serde_json::{Value, json};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;

use crate::core::Core;
use crate::error::Error;
use zafe_engine::{Operation, Request, RequestBody, RequestToken, Response as Reply, Status};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per-request facts the middleware establishes for handlers.
#[derive(Debug, Clone)]
struct RequestContext {
    /// The checked `X-Request-Id`, or a new UUID.
    request_id: String,
    /// The client's address, after trusted proxies ([`client_ip`]).
    client_ip: IpAddr,
}

/// The whole HTTP API of one core: `/v1/...` goes to the core, any other
/// path is a JSON 404. Around it: CORS for the configured origins only,
/// request tracing (the path, never the query string), and outermost the
/// guard that gives every request its id and client address, refuses a
/// declared body over the limit with 413, audits it (a request whose audit
/// entry cannot be written fails), turns a panic into a bare 500, and sets
/// the security headers.
///
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`:
/// without the peer address every request seems to come from 127.0.0.1.
pub fn router(core: Arc<Core>) -> Router {
    let mut app = Router::new()
        .route("/v1/sys/agents/connect", axum::routing::get(agent_socket))
        .route("/v1/sys/restore", axum::routing::any(restore))
        .route("/v1/{*path}", axum::routing::any(v1))
        .fallback(not_found);
    if let Some(cors) = cors_layer(&core.config.cors_origins) {
        app = app.layer(cors);
    }
    app.layer(TraceLayer::new_for_http().make_span_with(|req: &HttpRequest| {
        let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
        // The path only: query strings can carry things that are not ours to log.
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
    }))
    // Outermost, so that everything inside sees the checked request id.
    .layer(middleware::from_fn_with_state(core.clone(), guard))
    .with_state(core)
}

/// Keeps a caller's request id only if it is short and plain, so it cannot
/// inject anything into logs or audit entries; otherwise a new UUID is used.
fn acceptable_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:".contains(c))
}

fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| o.trim_end_matches('/').parse().ok())
        .collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::DELETE,
                Method::PATCH,
            ])
            .allow_headers([
                header::CONTENT_TYPE,
                header::AUTHORIZATION,
                HeaderName::from_static("x-vault-token"),
                REQUEST_ID,
            ]),
    )
}

/// The middleware every request passes through.
async fn guard(State(core): State<Arc<Core>>, mut req: HttpRequest, next: Next) -> Response {
    if !req
        .headers()
        .get(REQUEST_ID)
        .is_some_and(acceptable_request_id)
    {
        let fresh = uuid::Uuid::new_v4().to_string();
        req.headers_mut().insert(
            REQUEST_ID,
            HeaderValue::from_str(&fresh).expect("uuid is a header value"),
        );
    }
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let client_ip = client_ip(peer, req.headers(), &core.config.trusted_proxies);
    req.extensions_mut().insert(RequestContext {
        request_id: request_id.clone(),
        client_ip,
    });

    // R-AUD-1: every request is audited here, before its response leaves.
    let audited_path = match req.uri().path().strip_prefix("/v1/") {
        Some(rest) => percent_encoding::percent_decode_str(rest)
            .decode_utf8_lossy()
            .into_owned(),
        None => req.uri().path().to_string(),
    };
    let audit = crate::audit::hook::Pending::start(
        &core,
        crate::audit::hook::Seen {
            method: req.method().as_str(),
            path: &audited_path,
            listing: wants_list(req.uri()),
            token: presented_token(req.headers()),
            request_id: &request_id,
            client_ip,
        },
    );

    // A restore's body is a whole backup, streamed into storage as it
    // arrives (never held in memory): it has no size limit.
    let limit = if req.uri().path() == "/v1/sys/restore"
        && matches!(*req.method(), Method::POST | Method::PUT)
    {
        usize::MAX
    } else {
        core.config.max_body_bytes()
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let response = if declared.is_some_and(|n| n > limit as u64) {
        error_response(&Error::PayloadTooLarge(limit))
    } else {
        match audit
            .run(AssertUnwindSafe(next.run(req)).catch_unwind())
            .await
        {
            Ok(response) => response,
            Err(_) => {
                // The panic message may hold data; it goes nowhere. The hook
                // installed at start-up logs the location only.
                tracing::error!(%request_id, "handler panicked");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(
                        json!({ "errors": [format!("internal error (request id {request_id})")] }),
                    ),
                )
                    .into_response()
            }
        }
    };
    let status = response.status();
    let (response, error) = if status.is_client_error() || status.is_server_error() {
        error_message(response).await
    } else {
        (response, String::new())
    };
    let mut response = match audit.finish(&core, status.as_u16(), &error).await {
        Ok(()) => response,
        Err(e) => error_response(&e),
    };
    set_security_headers(response.headers_mut(), core.tls_spki.is_some());
    if let Ok(id) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, id);
    }
    response
}

fn set_security_headers(headers: &mut HeaderMap, tls: bool) {
    let fixed = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        ),
    ];
    for (name, value) in fixed {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    }
    if tls {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}

/// R-OPS-2: the client is the peer, unless the peer is a trusted proxy; then
/// walk `X-Forwarded-For` from the right (the hops our proxies appended) and
/// take the first address that is not a trusted proxy. The leftmost entries
/// are whatever the client chose to send and are never believed on their own.
fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // Garbage in the chain: stop at the last address we can vouch for.
            Err(_) => return client,
        }
    }
    client
}

async fn not_found() -> Response {
    error_response(&Error::NotFound("not found".into()))
}

/// `/v1/...`: turns HTTP into a core [`Request`] and the [`Reply`] back.
async fn v1(
    State(core): State<Arc<Core>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match build_request(&core, ctx, method, &uri, &headers, body).await {
        Ok(req) => {
            let request_id = req.request_id.clone();
            match core.handle(req).await {
                Ok(reply) => reply_response(&request_id, reply),
                Err(e) => {
                    log_error(&e);
                    error_response(&e)
                }
            }
        }
        Err(e) => error_response(&e),
    }
}

/// `POST /v1/sys/restore[?force=true]`: the body is a backup file, streamed to
/// [`crate::backup::restore`], which decides who may restore. Any other
/// method goes to the core like every request (403 for strangers, 405 after).
async fn restore(
    State(core): State<Arc<Core>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    method: Method,
    uri: http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use futures_util::StreamExt as _;
    if method != Method::POST && method != Method::PUT {
        return v1(
            State(core),
            axum::Extension(ctx),
            method,
            uri,
            headers,
            body,
        )
        .await;
    }
    let force = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| matches!(pair, "force" | "force=true" | "force=1"));
    let probe = Request {
        operation: Operation::Write,
        path: crate::backup::RESTORE_PATH.into(),
        body: None,
        query: Vec::new(),
        token: presented_token(&headers).map(|t| RequestToken::new(t.to_string())),
        client_ip: ctx.client_ip,
        request_id: ctx.request_id,
        user_agent: None,
        wrap_ttl: None,
    };
    let chunks = body
        .into_data_stream()
        .map(|chunk| chunk.map(|b| b.to_vec()).map_err(|e| e.to_string()))
        .boxed();
    match crate::backup::restore(&core, &probe, force, chunks).await {
        Ok(reply) => reply_response(&probe.request_id, reply),
        Err(e) => {
            log_error(&e);
            error_response(&e)
        }
    }
}

/// `GET /v1/sys/agents/connect`: an agent's WebSocket. The agent's token is checked before the
/// upgrade (anything else is the usual 403); then [`crate::agents::session::serve`] speaks the
/// frames, and this function only carries text between the socket and the session.
async fn agent_socket(
    State(core): State<Arc<Core>>,
    axum::Extension(ctx): axum::Extension<RequestContext>,
    headers: HeaderMap,
    upgrade: Result<
        axum::extract::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> Response {
    let probe = Request {
        operation: Operation::Read,
        path: "sys/agents/connect".into(),
        body: None,
        query: Vec::new(),
        token: presented_token(&headers).map(|t| RequestToken::new(t.to_string())),
        client_ip: ctx.client_ip,
        request_id: ctx.request_id,
        user_agent: None,
        wrap_ttl: None,
    };
    let agent = match core.authenticate(&probe).await {
        Ok(crate::caller::Caller::Agent(agent)) => agent.agent,
        Ok(_) => return error_response(&Error::PermissionDenied),
        Err(e) => return error_response(&e),
    };
    let Ok(upgrade) = upgrade else {
        return error_response(&Error::bad_request(
            "this endpoint is a WebSocket: connect with an Upgrade request",
        ));
    };
    // Frames are small (at most MAX_FRAME_BYTES, usually a few hundred bytes) and a server
    // holds thousands of these sockets: buffers of 8 KiB instead of tungstenite's 128 KiB.
    upgrade
        .max_message_size(crate::agents::session::MAX_FRAME_BYTES + 1024)
        .max_frame_size(crate::agents::session::MAX_FRAME_BYTES + 1024)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket| bridge(core, agent, ctx.client_ip, socket))
}

/// Carries text frames between an agent's socket and its session until either ends.
async fn bridge(
    core: Arc<Core>,
    agent: crate::agents::Agent,
    client_ip: std::net::IpAddr,
    socket: axum::extract::ws::WebSocket,
) {
    use axum::extract::ws::Message;
    use futures_util::{SinkExt as _, StreamExt as _};
    let (mut sink, mut stream) = socket.split();
    let (to_session, from_socket) = tokio::sync::mpsc::channel::<String>(64);
    let (to_socket, mut from_session) = tokio::sync::mpsc::channel::<String>(64);
    let reader = async move {
        while let Some(Ok(message)) = stream.next().await {
            let text = match message {
                Message::Text(text) => text.to_string(),
                Message::Close(_) => break,
                // Pings are answered by the library; binary frames are not part of the protocol.
                Message::Binary(_) => "binary".to_string(),
                _ => continue,
            };
            if to_session.send(text).await.is_err() {
                break;
            }
        }
    };
    let writer = async move {
        while let Some(text) = from_session.recv().await {
            if sink.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    };
    let name = format!("{}/{}", agent.project, agent.name);
    let session = crate::agents::session::serve(
        &core,
        agent,
        client_ip,
        from_socket,
        to_socket,
        crate::agents::session::HEARTBEAT,
    );
    let reader = tokio::spawn(reader);
    let ((ended, counts), ()) = tokio::join!(session, writer);
    // The session is over: stop reading even if the agent never closes its side.
    reader.abort();
    tracing::info!(agent = %name, ?ended, ?counts, "agent disconnected");
}

async fn build_request(
    core: &Core,
    ctx: RequestContext,
    method: Method,
    uri: &http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Request, Error> {
    let query: Vec<(String, String)> = uri
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default();
    let operation = match method.as_str() {
        "GET" if wants_list(uri) => Operation::List,
        "GET" => Operation::Read,
        "LIST" => Operation::List,
        "POST" | "PUT" => Operation::Write,
        "DELETE" => Operation::Delete,
        "PATCH" => Operation::Patch,
        "HEAD" => Operation::Head,
        _ => {
            return Err(Error::MethodNotAllowed(format!(
                "method {method} is not supported"
            )));
        }
    };
    let bytes = read_body(body, core.config.max_body_bytes()).await?;
    let body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::bad_request(format!("failed to parse JSON input: {e}")))?;
        match value {
            // Vault's clients send `null` for a write without data (`vault write -f`, OpenBao
            // Agent's AppRole secret-id): Vault reads it as an empty object, and so does Zafe.
            serde_json::Value::Null => None,
            serde_json::Value::Object(_) => Some(RequestBody::new(value, bytes.len())),
            _ => return Err(Error::bad_request("the request body must be a JSON object")),
        }
    };
    // Response wrapping: a duration ("60s", "5m", "300"); the core checks its bounds.
    let wrap_ttl = match headers.get("x-vault-wrap-ttl") {
        Some(value) if !value.is_empty() => Some(
            value
                .to_str()
                .ok()
                .and_then(zafe_engine::parse_duration)
                .ok_or_else(|| {
                    Error::bad_request(
                        "X-Vault-Wrap-TTL must be a duration, like \"60s\" or \"5m\"",
                    )
                })?,
        ),
        _ => None,
    };
    let token = presented_token(headers).map(|t| RequestToken::new(t.to_string()));
    let path = percent_decode(uri.path().strip_prefix("/v1/").unwrap_or_default())?;
    Ok(Request {
        operation,
        path,
        body,
        query,
        token,
        client_ip: ctx.client_ip,
        request_id: ctx.request_id,
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        wrap_ttl,
    })
}

/// Percent-decodes a path (without treating `+` as a space: paths are not forms).
fn percent_decode(path: &str) -> Result<String, Error> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(|p| p.into_owned())
        .map_err(|_| Error::bad_request("the path is not valid UTF-8"))
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, Error> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Error::PayloadTooLarge(limit)
        } else {
            Error::bad_request("could not read the request body")
        }
    })
}

/// The token a request presents: `X-Vault-Token`, `X-Zafe-Token`, or `Authorization: Bearer`.
fn presented_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-vault-token")
        .or_else(|| headers.get("x-zafe-token"))
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        })
        .filter(|t| !t.is_empty())
}

/// A `GET` with `?list=true` (or `1`) is Vault's other way to say `LIST`.
fn wants_list(uri: &http::Uri) -> bool {
    uri.query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .any(|(k, v)| k == "list" && (v == "true" || v == "1"))
    })
}

/// Error bodies are read (to record their message in the audit entry) up to this size.
const MAX_ERROR_BODY: u64 = 64 * 1024;

/// Reads a small error body's `errors` (for the audit entry), and puts the body back.
async fn error_message(response: Response) -> (Response, String) {
    use http_body_util::BodyExt as _;
    let small = axum::body::HttpBody::size_hint(response.body())
        .upper()
        .is_some_and(|n| n <= MAX_ERROR_BODY);
    if !small {
        return (response, String::new());
    }
    let (parts, body) = response.into_parts();
    let bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return (Response::from_parts(parts, Body::empty()), String::new()),
    };
    let message = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| {
            v.get("errors")?.as_array().map(|errors| {
                errors
                    .iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .unwrap_or_default();
    (Response::from_parts(parts, Body::from(bytes)), message)
}

/// The one mapping from a core error to HTTP: its status and Vault's `{"errors": [...]}` body,
/// whose message is written for the caller and never carries secrets or internal details.
fn error_response(e: &Error) -> Response {
    (
        http_status(e.status()),
        axum::Json(json!({ "errors": [e.to_string()] })),
    )
        .into_response()
}

/// Logs the details an error's message leaves out (within the request's span, so with its id).
fn log_error(e: &Error) {
    match e {
        Error::Integrity { key } => {
            tracing::error!(record = %key, "stored record failed its integrity check: possible tampering")
        }
        Error::StorageUnavailable(detail) => tracing::error!(%detail, "storage error"),
        Error::Internal(detail) => tracing::error!(%detail, "internal error"),
        _ => {}
    }
}

fn http_status(status: Status) -> StatusCode {
    // Every `Status` is in 100..=599, which `StatusCode` accepts.
    StatusCode::from_u16(status.code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Vault's response envelope, built here and nowhere else. Vault clients read every one of
/// these keys, so each is present even when null.
fn envelope(
    request_id: &str,
    data: Option<Value>,
    auth: Option<Value>,
    warnings: Vec<String>,
) -> Value {
    json!({
        "request_id": request_id,
        "lease_id": "",
        "renewable": false,
        "lease_duration": 0,
        "data": data,
        "wrap_info": null,
        "warnings": if warnings.is_empty() { Value::Null } else { json!(warnings) },
        "auth": auth,
        "mount_type": "",
    })
}

fn reply_response(request_id: &str, reply: Reply) -> Response {
    match reply {
        Reply::Vault {
            status,
            data,
            auth,
            warnings,
        } => (
            http_status(status),
            axum::Json(envelope(request_id, data, auth, warnings)),
        )
            .into_response(),
        Reply::VaultWithTopLevel { data, top_level } => {
            let mut body = envelope(request_id, Some(data), None, Vec::new());
            for (k, v) in top_level {
                body[k] = v;
            }
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Reply::Wrapped(wrap_info) => {
            let mut body = envelope(request_id, None, None, Vec::new());
            body["wrap_info"] = wrap_info;
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Reply::Json(status, body) => (http_status(status), axum::Json(body)).into_response(),
        Reply::NoContent => StatusCode::NO_CONTENT.into_response(),
        Reply::Status(status) => http_status(status).into_response(),
        // The core mints the token of a login before a response leaves it.
        Reply::Login { .. } => error_response(&Error::Internal("an unminted login grant".into())),
        Reply::Stream(content_type, body) => (
            [(header::CONTENT_TYPE, content_type)],
            Body::from_stream(body),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Vault clients read these keys; every one is present, even when null.
    #[test]
    fn the_envelope_has_vaults_shape() {
        let e = envelope("id", Some(json!({"k": "v"})), None, vec!["w".into()]);
        assert_eq!(
            e,
            json!({
                "request_id": "id",
                "lease_id": "",
                "renewable": false,
                "lease_duration": 0,
                "data": {"k": "v"},
                "wrap_info": null,
                "warnings": ["w"],
                "auth": null,
                "mount_type": "",
            })
        );
        let body = envelope("req-1", Some(json!({"x": 1})), None, Vec::new());
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["data"], json!({"x": 1}));
        assert_eq!(body["warnings"], Value::Null);
        // The data a typed response carries is what the edge sends, with its status.
        let response = reply_response("req-2", Reply::data(json!({"x": 1})));
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn tokens_are_found_where_the_core_finds_them() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_token(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_token(&h), Some("abc"));
        h.insert("x-vault-token", "def".parse().unwrap());
        assert_eq!(presented_token(&h), Some("def"));
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    // R-OPS-2
    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // An untrusted peer's header is ignored.
        assert_eq!(client_ip(stranger, &xff("1.2.3.4"), &trusted), stranger);
        // Without trusted proxies configured, nothing is believed.
        assert_eq!(client_ip(proxy, &xff("1.2.3.4"), &[]), proxy);
        // Through a trusted proxy, the rightmost untrusted hop is the client;
        // the spoofed leftmost entry is not.
        assert_eq!(
            client_ip(proxy, &xff("6.6.6.6, 198.51.100.7"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Several trusted hops are skipped.
        assert_eq!(
            client_ip(proxy, &xff("6.6.6.6, 198.51.100.7, 10.1.1.1"), &trusted),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Garbage stops the walk at the last trusted address.
        assert_eq!(client_ip(proxy, &xff("1.1.1.1, junk"), &trusted), proxy);
        // No header: the proxy itself.
        assert_eq!(client_ip(proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn request_ids_must_be_plain() {
        assert!(acceptable_request_id(&HeaderValue::from_static(
            "abc-123_x.y:z"
        )));
        assert!(!acceptable_request_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_request_id(&HeaderValue::from_static("")));
        assert!(!acceptable_request_id(
            &HeaderValue::from_str(&"a".repeat(129)).unwrap()
        ));
    }

    // R-OPS-3: a panic becomes a JSON 500 naming the request id, with no
    // stack trace and nothing from the panic message.
    #[tokio::test]
    async fn a_panicking_handler_becomes_a_json_500() {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let backend: Arc<dyn zafe_storage::Backend> =
            Arc::new(zafe_storage::sqlite::SqliteBackend::memory().await.unwrap());
        let core = Core::new(crate::core::CoreParts {
            config: Default::default(),
            clock: std::sync::Arc::new(zafe_engine::SystemClock),
            projects: crate::projects::rule(),
            engines: zafe_engines::build,
            backend,
            identity: zafe_core::identity::IdentityKey::generate(),
            master_key: None,
            token_pepper: None,
            tls_spki: None,
            proxy_spki: None,
        })
        .await
        .unwrap();
        let app: Router = Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("the secret hunter2 leaked into a panic");
                    }
                    ""
                }),
            )
            .layer(middleware::from_fn_with_state(core.clone(), guard))
            .with_state(core);
        let req = http::Request::builder()
            .uri("/boom")
            .header("x-request-id", "req-7")
            .body(Body::empty())
            .unwrap();
        let res = app.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.headers()["x-request-id"], "req-7");
        let body = String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        assert_eq!(body, r#"{"errors":["internal error (request id req-7)"]}"#);
    }

    /// One request through `app`; returns the status and the JSON body (Null when empty).
    async fn call(
        app: &Router,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> (StatusCode, serde_json::Value) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let mut req = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("x-vault-token", t);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Body::from(serde_json::to_vec(&b).unwrap())
            }
            None => Body::empty(),
        };
        let res = app.clone().oneshot(req.body(body).unwrap()).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    // A handler that panics while holding every lock of the core (the seal, the barrier, the
    // ACL cache, the audit log, the login limits...) becomes a 500, and every later request
    // still works: no lock stays poisoned behind the panic catcher.
    #[tokio::test]
    async fn a_panic_inside_locks_does_not_wedge_the_server() {
        let backend: Arc<dyn zafe_storage::Backend> =
            Arc::new(zafe_storage::sqlite::SqliteBackend::memory().await.unwrap());
        let core = Core::new(crate::core::CoreParts {
            config: Default::default(),
            clock: std::sync::Arc::new(zafe_engine::SystemClock),
            projects: crate::projects::rule(),
            engines: zafe_engines::build,
            backend,
            identity: zafe_core::identity::IdentityKey::generate(),
            master_key: None,
            token_pepper: None,
            tls_spki: None,
            proxy_spki: None,
        })
        .await
        .unwrap();
        // The real router, plus one route behind the same guard (and its panic catcher) that
        // panics inside every locked section.
        let boom: Router = Router::new()
            .route(
                "/boom",
                axum::routing::get(|State(core): State<Arc<Core>>| async move {
                    core.panic_holding_locks();
                    ""
                }),
            )
            .layer(middleware::from_fn_with_state(core.clone(), guard))
            .with_state(core.clone());
        let app = boom.merge(router(core.clone()));

        let (status, init) = call(
            &app,
            "PUT",
            "/v1/sys/init",
            None,
            Some(json!({"secret_shares": 1, "secret_threshold": 1})),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{init:?}");
        let key = init["keys"][0].as_str().unwrap().to_string();
        let root = init["root_token"].as_str().unwrap().to_string();
        let unseal = json!({ "key": key });
        let (status, _) = call(&app, "PUT", "/v1/sys/unseal", None, Some(unseal.clone())).await;
        assert_eq!(status, StatusCode::OK);
        let secret = json!({"data": {"password": "s3cret"}});
        let (status, _) = call(
            &app,
            "PUT",
            "/v1/secret/data/app",
            Some(&root),
            Some(secret.clone()),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let stranger = json!({"email": "nobody@example.com", "password": "wrong password"});
        let (refused, _) = call(
            &app,
            "POST",
            "/v1/auth/user/login",
            None,
            Some(stranger.clone()),
        )
        .await;
        assert!(refused.is_client_error(), "{refused}");

        for _ in 0..2 {
            let (status, _) = call(&app, "GET", "/boom", None, None).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        }

        // Everything that takes those locks still answers as before.
        let (status, seal) = call(&app, "GET", "/v1/sys/seal-status", None, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(seal["sealed"], false);
        let (status, read) = call(&app, "GET", "/v1/secret/data/app", Some(&root), None).await;
        assert_eq!(status, StatusCode::OK, "{read:?}");
        assert_eq!(read["data"]["data"]["password"], "s3cret");
        let (status, _) = call(
            &app,
            "PUT",
            "/v1/secret/data/app",
            Some(&root),
            Some(secret),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(&app, "POST", "/v1/auth/user/login", None, Some(stranger)).await;
        assert_eq!(status, refused);
        let (status, _) = call(&app, "PUT", "/v1/sys/seal", Some(&root), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = call(&app, "PUT", "/v1/sys/unseal", None, Some(unseal)).await;
        assert_eq!(status, StatusCode::OK);
        let (status, read) = call(&app, "GET", "/v1/secret/data/app", Some(&root), None).await;
        assert_eq!(status, StatusCode::OK, "{read:?}");
        assert_eq!(read["data"]["data"]["password"], "s3cret");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").unwrap(), "a/b c");
        assert_eq!(percent_decode("a+b").unwrap(), "a+b");
        assert!(percent_decode("%ff").is_err());
    }
}
