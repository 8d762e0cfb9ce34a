//! The WebSocket a host agent keeps to its server, over the same verified and pinned channel as
//! every request of this client: the server's identity is proven first, and over TLS the
//! connection is accepted only with the certificate key that proof was bound to.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::client::Client;
use crate::error::{Error, Result};

/// What a WebSocket runs over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An open WebSocket to the server.
pub type WebSocket = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

impl Client {
    /// Opens a WebSocket to `path` (`/v1/...`), presenting `token`. The server's identity is
    /// verified (and pinned on first use) before anything is sent; over TLS the socket is
    /// accepted only with the key that identity proof was bound to. A refused upgrade is
    /// [`Error::ServerError`] with the server's status.
    pub async fn websocket(&self, path: &str, token: &str) -> Result<WebSocket> {
        let (tls_spki, roots) = self.channel_for_socket().await?;
        let url = self.config().addr.clone();
        let transport = |detail: String| Error::Transport {
            addr: self.addr().to_string(),
            detail,
        };
        let host = url
            .host_str()
            .ok_or_else(|| transport("the address has no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = url
            .port_or_known_default()
            .ok_or_else(|| transport("the address has no port".into()))?;
        let scheme = if roots.is_some() { "wss" } else { "ws" };
        let mut request = format!(
            "{scheme}://{}{path}",
            &url[url::Position::BeforeHost..url::Position::AfterPort]
        )
        .into_client_request()
        .map_err(|e| transport(e.to_string()))?;
        let value = token
            .parse()
            .map_err(|_| Error::Config("the token is not a valid header value".into()))?;
        request.headers_mut().insert("x-vault-token", value);
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| transport(e.to_string()))?;
        let stream: Box<dyn Io> = match roots {
            None => Box::new(tcp),
            Some(roots) => {
                let mut config =
                    crate::tls::client_config(roots, tls_spki, Arc::new(AtomicBool::new(false)))?;
                // A WebSocket upgrade is HTTP/1.1.
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| transport(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| transport(e.to_string()))?;
                Box::new(tls)
            }
        };
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(Error::ServerError {
                status: response.status().as_u16(),
                errors: Vec::new(),
            }),
            Err(e) => Err(transport(e.to_string())),
        }
    }
}
