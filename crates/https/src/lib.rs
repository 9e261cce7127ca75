//! kubeci's outbound HTTP client: HTTP/1 over http:// and https://, trusting the system's
//! certificates. Notifications, GitHub's API and the CLI's client use it.

use bytes::Bytes;
use http_body_util::Full;
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
pub type Https = hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>;

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
