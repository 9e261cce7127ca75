//! A build's log, streamed from its pod through the API: the clone step's, then the build
//! step's, as one console (as Jenkins showed it).

use std::time::Duration;

use futures_util::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kubeci_engine::api::LogStream;
use tokio::sync::mpsc;

/// How long a followed log waits for a container to start.
const START_WAIT: Duration = Duration::from_secs(600);
const START_POLL: Duration = Duration::from_millis(250);

pub(crate) fn stream(pods: Api<Pod>, pod: String, follow: bool) -> LogStream {
    let (sender, receiver) = mpsc::channel::<Result<Vec<u8>, String>>(16);
    tokio::spawn(async move {
        for container in ["clone", "build"] {
            if !copy(&pods, &pod, container, follow, &sender).await {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ))
}

/// Copies one container's log; false when the stream must end (the reader left, or the
/// pod is gone).
async fn copy(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    follow: bool,
    sender: &mpsc::Sender<Result<Vec<u8>, String>>,
) -> bool {
    let params = LogParams {
        container: Some(container.into()),
        follow,
        ..LogParams::default()
    };
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut reader = loop {
        match pods.log_stream(pod, &params).await {
            Ok(reader) => break reader,
            // Not started yet (400 "waiting to start"): a followed log waits for it.
            Err(kube::Error::Api(status))
                if status.code == 400 && follow && tokio::time::Instant::now() < deadline =>
            {
                if sender.is_closed() {
                    return false;
                }
                tokio::time::sleep(START_POLL).await;
            }
            Err(kube::Error::Api(status)) if status.code == 400 => return true,
            Err(e) => {
                let _ = sender.send(Err(e.to_string())).await;
                return false;
            }
        }
    };
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => return true,
            Ok(n) => {
                if sender.send(Ok(buffer[..n].to_vec())).await.is_err() {
                    return false;
                }
            }
            Err(e) => {
                let _ = sender.send(Err(e.to_string())).await;
                return false;
            }
        }
    }
}
