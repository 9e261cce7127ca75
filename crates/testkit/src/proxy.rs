//! A loopback HTTP proxy in front of a Kubernetes API server — the fake one, or a real
//! cluster reached with its kubeconfig's credentials — that records every request and
//! injects faults through the same [`Gate`] as the fake server. A scenario that times a
//! crash on a held request, or waits out an outage, then runs unchanged against either.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use kubeci_build::record::protobuf::MEDIA_TYPE;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::gate::{Admission, Gate};
use crate::http::watches::Encoding;
use crate::store::ApiError;
use crate::{accept_loop, bind_again, http, loopback_kubeconfig};

struct Shared {
    gate: Gate,
    upstream: kube::Client,
}

/// The proxy; it stops when dropped.
pub struct ApiProxy {
    shared: Arc<Shared>,
    address: SocketAddr,
    namespace: String,
    serving: Mutex<Option<JoinHandle<()>>>,
}

/// Headers that belong to one hop, or to the upstream's credentials.
const NOT_FORWARDED: [header::HeaderName; 5] = [
    header::HOST,
    header::AUTHORIZATION,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

fn status_reply(error: &ApiError) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(error.code).unwrap_or(StatusCode::BAD_GATEWAY))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(error.status().to_string()))
        .expect("a valid response")
}

/// What an API server answers a watch resumed from a compacted resourceVersion, in the
/// encoding the watch asked for.
fn expired_watch(headers: &header::HeaderMap) -> Response<Body> {
    let gone = ApiError::new(410, "Expired", "too old resource version (injected)");
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let encoding = if accept.is_some_and(|a| a.contains(MEDIA_TYPE)) {
        Encoding::Protobuf
    } else {
        Encoding::Json
    };
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, encoding.content_type())
        .body(Body::from(encoding.error(&gone)))
        .expect("a valid response")
}

async fn forward(
    shared: Arc<Shared>,
    request: Request<Body>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    // Taken now: a drop while the upstream answers still ends this watch.
    let dropped = shared.gate.watch_epoch().cancelled_owned();
    let (recorded, resumed_watch) = http::describe_proxied(&parts);
    if let Admission::Refuse(error, retry_after) = shared.gate.admit(recorded).await {
        return Ok(http::refusal(&error, retry_after));
    }
    if resumed_watch && shared.gate.take_expired_watch() {
        return Ok(expired_watch(&parts.headers));
    }
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(status_reply(&ApiError::bad_request(
            "the request body broke off",
        )));
    };
    let mut upstream = Request::builder().method(parts.method).uri(
        parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
    );
    for (name, value) in &parts.headers {
        if !NOT_FORWARDED.contains(name) {
            upstream = upstream.header(name, value);
        }
    }
    let upstream = upstream
        .body(kube::client::Body::from(body.to_vec()))
        .expect("a request built from a valid one");
    match shared.upstream.send(upstream).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.remove(header::TRANSFER_ENCODING);
            let stream = body.into_data_stream().take_until(dropped);
            Ok(Response::from_parts(parts, Body::from_stream(stream)))
        }
        Err(error) => Ok(status_reply(&ApiError::new(
            502,
            "BadGateway",
            format!("the proxied API server did not answer: {error}"),
        ))),
    }
}

fn serve(listener: TcpListener, shared: Arc<Shared>) -> impl std::future::Future<Output = ()> {
    accept_loop(listener, move |request| forward(shared.clone(), request))
}

impl ApiProxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream`; `namespace` is
    /// its kubeconfig's default namespace.
    pub async fn start(upstream: kube::Client, namespace: &str) -> ApiProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let shared = Arc::new(Shared {
            gate: Gate::default(),
            upstream,
        });
        let serving = tokio::spawn(serve(listener, shared.clone()));
        ApiProxy {
            shared,
            address,
            namespace: namespace.to_owned(),
            serving: Mutex::new(Some(serving)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig for the proxy: plain HTTP, no credentials (the proxy adds the
    /// upstream's).
    pub fn kubeconfig(&self) -> String {
        loopback_kubeconfig(&self.url(), &self.namespace)
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// Request recording and fault injection.
    pub fn gate(&self) -> &Gate {
        &self.shared.gate
    }

    /// Stops listening and drops every connection: the API server is gone for its clients.
    pub fn stop(&self) {
        self.shared.gate.drop_watches();
        if let Some(serving) = self.serving.lock().expect("lock").take() {
            serving.abort();
        }
    }

    /// Comes back on the same address after [`ApiProxy::stop`].
    pub async fn restart(&self) {
        let listener = bind_again(self.address).await;
        *self.serving.lock().expect("lock") =
            Some(tokio::spawn(serve(listener, self.shared.clone())));
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
