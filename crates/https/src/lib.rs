//! kubeci's outbound HTTP client: HTTP/1 over http:// and https://, trusting the system's
//! certificates. Notifications, GitHub's API and the CLI's client use it; a build pod's
//! collector uses [`https_client_to`], which connects only to addresses it was given.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
pub use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Why the client cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    /// The system's trusted certificates cannot be read. Not worth retrying: the machine
    /// (or its image) needs its CA certificates.
    #[error("cannot load the system's trusted certificates: {0}")]
    Certificates(#[source] std::io::Error),
}

/// An HTTP/1 connector for http:// and https:// (the system's trusted certificates).
pub type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTP/1 connector for http:// and https:// that never resolves a name: it connects
/// to the addresses of [`KeptAddresses`] (TLS still checks the URL's host name).
pub type KeptHttps = hyper_rustls::HttpsConnector<HttpConnector<KeptAddresses>>;

/// The client, with bodies sent whole.
pub type HttpsClient = Client<Https, Full<Bytes>>;

/// A new client.
pub fn https_client() -> Result<HttpsClient, HttpsError> {
    https_client_for::<Full<Bytes>>()
}

/// A new client sending bodies of type `B` (a file streamed as it is read, say).
pub fn https_client_for<B>() -> Result<Client<Https, B>, HttpsError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(HttpsError::Certificates)?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// A new client sending bodies of type `B` that reaches `kept`'s host only, at the
/// addresses kept for it, and resolves no name: what the name means later (a changed
/// `/etc/hosts`, say) does not change where it connects. The URL's host still names the
/// server in the `Host` header and for TLS; a URL of another host name is not reached.
pub fn https_client_to<B>(kept: KeptAddresses) -> Result<Client<KeptHttps, B>, HttpsError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut http = HttpConnector::new_with_resolver(kept);
    // The scheme is the TLS layer's to check (http:// or https://), as `build` does.
    http.enforce_http(false);
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()
        .map_err(HttpsError::Certificates)?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// One host name and the addresses it had when they were kept: the resolver of
/// [`https_client_to`]'s client, which answers with them and never asks the system.
#[derive(Clone, Debug)]
pub struct KeptAddresses {
    host: Arc<str>,
    addresses: Vec<SocketAddr>,
}

impl KeptAddresses {
    /// `host`'s addresses, as resolved once by the caller (their ports are the URL's).
    pub fn new(host: &str, addresses: Vec<SocketAddr>) -> KeptAddresses {
        KeptAddresses {
            host: host.into(),
            addresses,
        }
    }

    /// The host name they were kept for.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The addresses kept.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }
}

impl tower_service::Service<Name> for KeptAddresses {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        std::future::ready(if name.as_str().eq_ignore_ascii_case(&self.host) {
            Ok(self.addresses.clone().into_iter())
        } else {
            Err(std::io::Error::other(format!(
                "{name} is not reached: this client reaches {} only",
                self.host
            )))
        })
    }
}
