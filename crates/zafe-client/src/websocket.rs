//! The WebSocket a host agent keeps to its server, over the same verified and pinned channel as
//! every request of this client: the server's identity is proven first, and over TLS the
//! connection is accepted only with the certificate key that proof was bound to.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::client::{Client, SocketChannel};
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
    ///
    /// A TLS handshake refused because the server now presents another key (its certificate
    /// was renewed) makes the client verify the server afresh and try once more.
    pub async fn websocket(&self, path: &str, token: &str) -> Result<WebSocket> {
        let channel = self.channel_for_socket().await?;
        match self.websocket_on(&channel, path, token).await {
            Err(Refused::Key) => {
                self.forget_socket_channel(&channel).await;
                let fresh = self.channel_for_socket().await?;
                self.websocket_on(&fresh, path, token)
                    .await
                    .map_err(|refused| match refused {
                        Refused::Key => Error::TlsKeyChanged {
                            addr: self.addr().to_string(),
                        },
                        Refused::Other(e) => e,
                    })
            }
            Err(Refused::Other(e)) => Err(e),
            Ok(socket) => Ok(socket),
        }
    }

    async fn websocket_on(
        &self,
        channel: &SocketChannel,
        path: &str,
        token: &str,
    ) -> std::result::Result<WebSocket, Refused> {
        let (tls_spki, roots) = (channel.tls_spki, channel.roots.clone());
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
                let pin_rejected = Arc::new(AtomicBool::new(false));
                let mut config = crate::tls::client_config(roots, tls_spki, pin_rejected.clone())?;
                // A WebSocket upgrade is HTTP/1.1.
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| transport(e.to_string()))?;
                let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        if pin_rejected.load(Ordering::Relaxed) {
                            Refused::Key
                        } else {
                            Refused::Other(transport(e.to_string()))
                        }
                    })?;
                Box::new(tls)
            }
        };
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((socket, _)) => Ok(socket),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(Refused::Other(Error::ServerError {
                    status: response.status().as_u16(),
                    errors: Vec::new(),
                }))
            }
            Err(e) => Err(Refused::Other(transport(e.to_string()))),
        }
    }
}

/// Why one attempt failed.
enum Refused {
    /// The server presented another TLS key than the verified channel's.
    Key,
    Other(Error),
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused::Other(e)
    }
}
