//! Test-only: a fake Kubernetes API server that the real `kube` client and `kubectl`
//! cannot tell from a real one, as far as kubeci's tests go.
//!
//! It serves the API over HTTP on loopback with the API conventions (one resourceVersion
//! sequence, list + watch with selectors and pagination, 409/404/410 as `metav1.Status`,
//! optimistic concurrency, patches, the status subresource, owner-reference garbage
//! collection, pod logs), plays the Job controller and the kubelet (pods follow a script
//! or really run through the local engine), records every request and injects faults.
//! [`S3Server`] starts a real S3 server, versitygw, on loopback for the archive's tests.
//! See `crates/testkit/README.md`.

pub mod audit;
pub mod gate;
pub mod github;
pub mod http;
pub mod node;
pub mod prow;
pub mod proxy;
pub mod resources;
pub mod s3;
mod scripts;
pub mod selector;
pub mod sim;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use gate::{Gate, RecordedRequest};
pub use github::FakeGitHub;
pub use proxy::ApiProxy;
pub use s3::S3Server;
pub use sim::PodBehaviour;
pub use store::{ApiError, Store};

/// How to start a fake API server.
#[derive(Debug, Clone)]
pub struct Options {
    /// Port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Changes kept for watches; older resourceVersions get 410 Gone.
    pub history: usize,
    /// How often watches that asked for them get BOOKMARK events.
    pub bookmark_interval: Duration,
    /// Run the simulated Job controller and kubelet.
    pub simulate: bool,
    /// Stream a watch's initial list when asked (`sendInitialEvents`: the WatchList
    /// feature, on by default since Kubernetes 1.32); `false` refuses such a watch, as an
    /// API server without the feature does.
    pub watch_list: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            port: 0,
            history: 100_000,
            bookmark_interval: Duration::from_secs(1),
            simulate: true,
            watch_list: true,
        }
    }
}

/// A running fake API server. Dropping it stops it.
pub struct FakeApiServer {
    shared: Arc<http::Shared>,
    address: SocketAddr,
    serving: Mutex<Option<JoinHandle<()>>>,
    simulation: Option<sim::Simulation>,
}

/// Serves HTTP/1 connections on `listener` with `handler` until aborted.
pub(crate) async fn accept_loop<H, F>(listener: TcpListener, handler: H)
where
    H: Fn(hyper::Request<Body>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Result<axum::http::Response<Body>, std::convert::Infallible>>
        + Send
        + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let handler = handler.clone();
                connections.spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        handler(request.map(Body::new))
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Binds `address` again after a stop; panics if that fails for 10 s (another process
/// took it).
pub(crate) async fn bind_again(address: SocketAddr) -> TcpListener {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(_) if attempts < 1000 => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("cannot listen on {address} again: {e}"),
        }
    }
}

/// A kubeconfig for a plain-HTTP server on loopback, as `kubectl` and `kube` load it.
pub(crate) fn loopback_kubeconfig(url: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: tester\n  user:\n    token: fake-token\n"
    )
}

fn serve(
    listener: TcpListener,
    shared: Arc<http::Shared>,
) -> impl std::future::Future<Output = ()> {
    accept_loop(listener, move |request| {
        http::handle(shared.clone(), request)
    })
}

impl FakeApiServer {
    /// Starts a server with the default options (a free port, the simulation on).
    pub async fn start() -> FakeApiServer {
        FakeApiServer::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> FakeApiServer {
        let listener = TcpListener::bind(("127.0.0.1", options.port))
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("a bound address");
        let shared = Arc::new(http::Shared {
            store: Mutex::new(Store::new(options.history)),
            tokens: Mutex::default(),
            gate: Gate::default(),
            address: address.to_string(),
            bookmark_interval: options.bookmark_interval,
            watch_list: options.watch_list,
        });
        let serving = tokio::spawn(serve(listener, shared.clone()));
        let simulation = options
            .simulate
            .then(|| sim::Simulation::start(shared.clone()));
        FakeApiServer {
            shared,
            address,
            serving: Mutex::new(Some(serving)),
            simulation,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// A kubeconfig for this server, as `kubectl` and `kube` load it.
    pub fn kubeconfig(&self) -> String {
        loopback_kubeconfig(&self.url(), "default")
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.kubeconfig())
    }

    /// A `kube` client for this server, configured from its kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::from_yaml(&self.kubeconfig()).expect("a valid kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("a usable kubeconfig");
        kube::Client::try_from(config).expect("a client")
    }

    /// The state, for direct inspection and changes that bypass HTTP.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.shared.store.lock().expect("the store lock")
    }

    /// Request recording and fault injection: [`Gate::hold`], [`Gate::fail_next`],
    /// [`Gate::drop_watches`], ...
    pub fn gate(&self) -> &Gate {
        &self.shared.gate
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.gate.requests()
    }

    /// Forgets the watch history: resuming from an earlier resourceVersion gets 410 Gone.
    pub fn compact(&self) {
        self.store().compact();
    }

    /// Stops listening and drops every connection: the server is gone.
    pub fn stop(&self) {
        self.shared.gate.drop_watches();
        if let Some(serving) = self.serving.lock().expect("lock").take() {
            serving.abort();
        }
    }

    /// Comes back on the same address with the same state after [`FakeApiServer::stop`].
    /// Panics if the address cannot be bound again within 10 s (another process took it).
    pub async fn restart(&self) {
        let listener = bind_again(self.address).await;
        *self.serving.lock().expect("lock") =
            Some(tokio::spawn(serve(listener, self.shared.clone())));
    }

    /// Chooses what the pods of the simulated kubelet do.
    pub fn set_pod_behaviour(
        &self,
        behaviour: impl Fn(&Value) -> PodBehaviour + Send + Sync + 'static,
    ) {
        if let Some(simulation) = &self.simulation {
            simulation.set_behaviour(Arc::new(behaviour));
        }
    }

    /// Creates many objects at once (namespaces as needed), for scale tests.
    pub fn preload(&self, objects: Vec<Value>) -> Result<usize, ApiError> {
        self.store().preload(objects)
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(simulation) = &self.simulation {
            simulation.stop();
        }
    }
}
