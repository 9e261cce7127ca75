//! Native sidecars (restartable init containers, `restartPolicy: Always`), as the kubelet
//! runs them (Kubernetes ≥ 1.29): each is started in its turn among the init containers
//! and left running; the containers after it start at once. Once the pod's containers
//! ended (or were stopped), each sidecar gets SIGTERM and the pod's
//! `terminationGracePeriodSeconds` (30 s when unset) to end, then is killed. A sidecar's
//! end never makes the pod's outcome, and one that ends early is not restarted here.
//!
//! Whoever runs a pod chooses ([`LocalEnv::sidecars`]): a node agent and the fake kubelet
//! run them; the local engine and `kubeci run` leave them out, with the volumes only they
//! mount — kubeci's one sidecar is a build's collector, and these collect a build's files
//! from its workspace themselves (or not at all).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use tokio_util::sync::CancellationToken;

use crate::{LocalError, Outcome, Stops};

/// Kubernetes' grace period when a pod names none.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Whether `container` is a native sidecar.
pub fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// `pod` without its sidecars, and without the volumes only they mount.
pub(crate) fn without_sidecars(pod: &PodSpec) -> PodSpec {
    let mut pod = pod.clone();
    if let Some(inits) = pod.init_containers.as_mut() {
        inits.retain(|c| !is_sidecar(c));
    }
    let mounted: Vec<String> = (pod.init_containers.iter().flatten())
        .chain(&pod.containers)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .map(|m| m.name.clone())
        .collect();
    if let Some(volumes) = pod.volumes.as_mut() {
        volumes.retain(|v| mounted.contains(&v.name));
    }
    pod
}

type Run<'a> = Pin<Box<dyn Future<Output = Result<Outcome, LocalError>> + Send + 'a>>;

/// The sidecars started so far, and how to stop them.
pub(crate) struct Sidecars<'a> {
    running: Vec<Option<Run<'a>>>,
    /// SIGTERM to each sidecar.
    pub(crate) stops: Stops,
    grace: Duration,
}

impl<'a> Sidecars<'a> {
    /// No sidecar yet; killed with the pod (`kill`), stopped within `pod`'s grace period.
    pub(crate) fn new(pod: &PodSpec, kill: &CancellationToken) -> Sidecars<'a> {
        let seconds = pod
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_GRACE_SECONDS);
        Sidecars {
            running: Vec::new(),
            stops: Stops {
                terminate: CancellationToken::new(),
                kill: kill.child_token(),
            },
            grace: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
        }
    }

    pub(crate) fn start(&mut self, run: Run<'a>) {
        self.running.push(Some(run));
    }

    /// Polls every sidecar still running; true once none is.
    fn poll_all(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        for slot in &mut self.running {
            if let Some(run) = slot {
                if run.as_mut().poll(cx).is_ready() {
                    *slot = None;
                }
            }
        }
        self.running.iter().all(Option::is_none)
    }

    /// Runs `main` with the sidecars running beside it; its output.
    pub(crate) async fn alongside<T>(&mut self, main: impl Future<Output = T>) -> T {
        let mut main = std::pin::pin!(main);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = main.as_mut().poll(cx) {
                return Poll::Ready(out);
            }
            self.poll_all(cx);
            Poll::Pending
        })
        .await
    }

    /// Stops the sidecars: SIGTERM, then a kill once the grace period is over.
    pub(crate) async fn stop(mut self) {
        if self.running.iter().all(Option::is_none) {
            return;
        }
        self.stops.terminate.cancel();
        let grace = self.grace;
        let all_ended = std::future::poll_fn(|cx| {
            if self.poll_all(cx) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        if tokio::time::timeout(grace, all_ended).await.is_err() {
            self.stops.kill.cancel();
            std::future::poll_fn(|cx| {
                if self.poll_all(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
        }
    }
}
