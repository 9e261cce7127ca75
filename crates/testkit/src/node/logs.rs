//! The kubelet's log endpoint (`/containerLogs`): queries, timestamps, following a
//! container's log.

use super::*;
use axum::body::Body;
use hyper::{Request, Response, StatusCode};

/// What `pods/log` asks the kubelet for.
#[derive(Debug, Default, PartialEq)]
pub(super) struct LogQuery {
    pub(super) follow: bool,
    pub(super) timestamps: bool,
    pub(super) previous: bool,
    pub(super) tail_lines: Option<usize>,
    pub(super) since_seconds: Option<i64>,
    pub(super) since_time: Option<jiff::Timestamp>,
    pub(super) limit_bytes: Option<usize>,
}

pub(super) fn parse_log_query(query: &str) -> Result<LogQuery, String> {
    let mut q = LogQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let number = |v: &str| {
            v.parse::<i64>()
                .map_err(|_| format!("{key}: not a number: {v}"))
        };
        match key.as_ref() {
            "follow" => q.follow = crate::http::query_bool(&value),
            "timestamps" => q.timestamps = crate::http::query_bool(&value),
            "previous" => q.previous = crate::http::query_bool(&value),
            "tailLines" => q.tail_lines = Some(usize::try_from(number(&value)?).unwrap_or(0)),
            "sinceSeconds" => q.since_seconds = Some(number(&value)?),
            "sinceTime" => {
                q.since_time = Some(
                    value
                        .parse()
                        .map_err(|_| format!("sinceTime: not a time: {value}"))?,
                )
            }
            "limitBytes" => q.limit_bytes = Some(usize::try_from(number(&value)?).unwrap_or(0)),
            _ => {}
        }
    }
    Ok(q)
}

fn format_line(query: &LogQuery, at: jiff::Timestamp, text: &str) -> String {
    if query.timestamps {
        format!("{} {text}\n", at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    } else {
        format!("{text}\n")
    }
}

pub(super) async fn serve_logs(
    listener: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    logs: Logs,
) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (tls, logs) = (tls.clone(), logs.clone());
        tokio::spawn(async move {
            let Ok(stream) = tls.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(
                move |request: Request<hyper::body::Incoming>| {
                    let logs = logs.clone();
                    async move { Ok::<_, std::convert::Infallible>(container_logs(&logs, &request)) }
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

fn plain(status: StatusCode, text: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(text))
        .expect("a response")
}

fn container_logs(logs: &Logs, request: &Request<hyper::body::Incoming>) -> Response<Body> {
    let path: Vec<&str> = request
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let ["containerLogs", namespace, pod, container] = path.as_slice() else {
        return plain(
            StatusCode::NOT_FOUND,
            format!("{} not found", request.uri().path()),
        );
    };
    let query = match parse_log_query(request.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let key = (
        (*namespace).to_owned(),
        (*pod).to_owned(),
        (*container).to_owned(),
    );
    if let Err((status, text)) = readable(logs, &key, &query) {
        return plain(status, text);
    }
    let since = match (query.since_time, query.since_seconds) {
        (Some(t), _) => Some(t),
        (None, Some(s)) => jiff::Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(s))
            .ok(),
        (None, None) => None,
    };
    let (sender, receiver) =
        tokio::sync::mpsc::channel::<Result<String, std::convert::Infallible>>(64);
    let logs = logs.clone();
    tokio::spawn(stream_log(logs, key, query, since, sender));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        ))
        .expect("a response")
}

/// Whether the container's log can be read now, or the kubelet's refusal (its status
/// and text).
fn readable(logs: &Logs, key: &LogKey, query: &LogQuery) -> Result<(), (StatusCode, String)> {
    let (_, pod, container) = key;
    let all = logs.logs.lock().expect("lock");
    let Some(log) = all.get(key) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod {pod:?} not found on this node"),
        ));
    };
    if query.previous {
        return Err((
            StatusCode::BAD_REQUEST,
            format!("previous terminated container {container:?} in pod {pod:?} not found"),
        ));
    }
    if !log.started {
        let reason = log
            .waiting
            .clone()
            .unwrap_or_else(|| "PodInitializing".into());
        return Err((
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is waiting to start: {reason}"),
        ));
    }
    Ok(())
}

/// Streams a container's log from `since` (or its last `tail_lines`), within
/// `limit_bytes`, and on while it is followed.
async fn stream_log(
    logs: Logs,
    key: LogKey,
    query: LogQuery,
    since: Option<jiff::Timestamp>,
    sender: tokio::sync::mpsc::Sender<Result<String, std::convert::Infallible>>,
) {
    let mut changed = logs.changed.subscribe();
    let mut budget = query.limit_bytes.unwrap_or(usize::MAX);
    let mut next = {
        let all = logs.logs.lock().expect("lock");
        let lines = all
            .get(&key)
            .map(|l| l.lines.as_slice())
            .unwrap_or_default();
        let first = lines
            .iter()
            .position(|(at, _)| since.is_none_or(|s| *at >= s))
            .unwrap_or(lines.len());
        match query.tail_lines {
            Some(n) => first.max(lines.len().saturating_sub(n)),
            None => first,
        }
    };
    loop {
        let (chunk, done) = {
            let all = logs.logs.lock().expect("lock");
            let Some(log) = all.get(&key) else { return };
            let mut chunk = String::new();
            for (at, text) in &log.lines[next.min(log.lines.len())..] {
                chunk.push_str(&format_line(&query, *at, text));
            }
            next = log.lines.len();
            (chunk, log.done)
        };
        if !chunk.is_empty() {
            let mut chunk = chunk;
            if chunk.len() >= budget {
                let mut cut = budget;
                while !chunk.is_char_boundary(cut) {
                    cut -= 1;
                }
                chunk.truncate(cut);
                let _ = sender.send(Ok(chunk)).await;
                return;
            }
            budget -= chunk.len();
            if sender.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if done || !query.follow {
            return;
        }
        if changed.changed().await.is_err() {
            return;
        }
    }
}
