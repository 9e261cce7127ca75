//! `pods/log`: a container's log, whole or followed, as the API server proxies it from the
//! kubelet.

use super::*;
use crate::store::{container_names, ApiError};
use axum::body::{Body, Bytes};
use axum::http::{header, Response, StatusCode};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

pub(super) async fn pod_log(
    shared: &Arc<Shared>,
    namespace: &str,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let (pod, updates) = {
        let store = shared.store.lock().expect("lock");
        (store.get(3, namespace, name)?, store.log_updates())
    };
    let container = log_container(&pod, name, query)?;
    let key = (namespace.to_owned(), name.to_owned(), container.clone());
    let follow = query.get("follow").is_some_and(|f| query_bool(f));
    let timestamps = query.get("timestamps").is_some_and(|t| query_bool(t));
    let tail = query.get("tailLines").and_then(|t| t.parse::<usize>().ok());
    let since = query.get("sinceTime").cloned();
    let mut within_budget = budget(query);
    let format = move |(time, line): &(String, String)| {
        if timestamps {
            format!("{time} {line}\n")
        } else {
            format!("{line}\n")
        }
    };
    let (first, sent, finished) = {
        let store = shared.store.lock().expect("lock");
        let Some(buffer) = store.logs.get(&key) else {
            return Err(ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{name}\" is waiting to start: PodInitializing"
            )));
        };
        let lines: Vec<&(String, String)> = buffer
            .lines
            .iter()
            .filter(|(t, _)| since.as_ref().is_none_or(|s| t >= s))
            .collect();
        let skip = tail.map_or(0, |t| lines.len().saturating_sub(t));
        let text: String = lines.iter().skip(skip).map(|l| format(l)).collect();
        (text, buffer.lines.len(), buffer.finished)
    };
    let (first, spent) = within_budget(first);
    if !follow || finished || spent {
        return Ok(Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(first))
            .expect("a valid response"));
    }
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let render =
        move |lines: &[(String, String)]| within_budget(lines.iter().map(&format).collect());
    tokio::spawn(follow_log(
        shared.clone(),
        key,
        sent,
        updates,
        render,
        sender,
        first,
    ));
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from_stream(ReceiverStream::new(receiver)))
        .expect("a valid response"))
}

/// The container whose log is asked for: the one named, else the pod's only one.
fn log_container(
    pod: &Value,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let containers = container_names(pod, "containers");
    let init = container_names(pod, "initContainers");
    match query.get("container") {
        Some(c) if containers.contains(c) || init.contains(c) => Ok(c.clone()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => Err(ApiError::bad_request(format!("a container name must be specified for pod {name}, choose one of: [{}] or one of the init containers: [{}]", containers.join(" "), init.join(" ")))),
    }
}

/// `limitBytes`: what of each piece of text may still be sent (the output stops after
/// that many bytes, mid-line if need be), and whether the budget is spent.
fn budget(query: &HashMap<String, String>) -> impl FnMut(String) -> (String, bool) {
    let mut budget = query
        .get("limitBytes")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    move |mut text: String| -> (String, bool) {
        if text.len() >= budget {
            text.truncate(budget);
            budget = 0;
            (text, true)
        } else {
            budget -= text.len();
            (text, false)
        }
    }
}

/// A followed log after its `first` piece: the lines after the `sent` first ones, as they
/// are added, until the container's log ends, `render` says the budget is spent, or the
/// client goes.
async fn follow_log(
    shared: Arc<Shared>,
    key: (String, String, String),
    mut sent: usize,
    mut updates: tokio::sync::watch::Receiver<u64>,
    mut render: impl FnMut(&[(String, String)]) -> (String, bool),
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    first: String,
) {
    if sender.send(Ok(Bytes::from(first))).await.is_err() {
        return;
    }
    loop {
        let (more, spent, done) = {
            let store = shared.store.lock().expect("lock");
            match store.logs.get(&key) {
                Some(buffer) => {
                    let (text, spent) = render(&buffer.lines[sent.min(buffer.lines.len())..]);
                    sent = buffer.lines.len();
                    (text, spent, buffer.finished)
                }
                None => (String::new(), false, true),
            }
        };
        if !more.is_empty() && sender.send(Ok(Bytes::from(more))).await.is_err() {
            return;
        }
        if spent || done || updates.changed().await.is_err() {
            return;
        }
    }
}
