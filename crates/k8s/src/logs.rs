//! A build's log, streamed from its pod through the API: the clone step's, then the build
//! step's, as one console (as Jenkins showed it), each begun by the step line the local
//! engine writes too (`==> clone: init container started`), so pages fold it into steps.
//!
//! Followers of one pod share one upstream: the first opens the followed `pods/log`
//! streams, later ones join it (replaying what it has read so far, or — past
//! [`HISTORY_LIMIT`] — reading the log up to now once and splicing it onto the shared
//! stream by byte offset). While a container cannot start, its log is asked for with a
//! growing pause ([`START_POLL`] up to [`START_POLL_MAX`]), once for all followers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kubeci_engine::api::{LogOptions, LogStream};
use kubeci_render::log_line::{LineSplitter, LINE_LIMIT};
use tokio::sync::{broadcast, mpsc};

use crate::hold::STEPS;

/// How long a followed log waits for a container to start.
const START_WAIT: Duration = Duration::from_secs(600);
/// The first pause before asking again for the log of a container that has not started;
/// doubled each time up to [`START_POLL_MAX`].
pub(crate) const START_POLL: Duration = Duration::from_millis(250);
pub(crate) const START_POLL_MAX: Duration = Duration::from_secs(5);
/// A shared upstream keeps what it read for joining followers up to this many bytes;
/// past it, a joining follower reads the log up to now once itself.
const HISTORY_LIMIT: usize = 1024 * 1024;
/// Chunks a follower may lag behind the shared stream before it is ended.
const FOLLOWER_BACKLOG: usize = 1024;

/// A log as chunks (or the error that ended it).
type Chunk = Result<Vec<u8>, String>;

/// A pod's log read once, or followed until its containers end: each of `steps`.
pub(crate) fn stream(
    pods: Api<Pod>,
    pod: String,
    steps: Vec<&'static str>,
    options: LogOptions,
) -> LogStream {
    let (sender, receiver) = mpsc::channel::<Chunk>(16);
    tokio::spawn(async move {
        for container in steps {
            let mut send = |chunk: Chunk| {
                let sender = sender.clone();
                async move { sender.send(chunk).await.is_ok() }
            };
            let wanted = || !sender.is_closed();
            if !copy(&pods, &pod, container, options, &wanted, &mut send).await {
                return;
            }
        }
    });
    Box::pin(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|chunk| (chunk, receiver)) },
    ))
}

/// The followed logs of pods, one upstream per pod (and with or without timestamps)
/// shared by all its followers.
#[derive(Default)]
pub(crate) struct LogHub {
    upstreams: Mutex<HashMap<(String, String, bool), Weak<Upstream>>>,
}

/// One pod's followed log, read once for every follower.
struct Upstream {
    state: Mutex<Shared>,
}

struct Shared {
    /// `None` once the log has ended: later followers read it themselves.
    sender: Option<broadcast::Sender<(u64, Arc<Vec<u8>>)>>,
    /// How many bytes were read so far.
    offset: u64,
    /// Everything read so far, while it is at most [`HISTORY_LIMIT`] bytes.
    history: Option<Vec<u8>>,
}

impl LogHub {
    /// Follows the log of `pod` (in `pods`' namespace), sharing its upstream.
    pub(crate) fn follow(
        &self,
        pods: Api<Pod>,
        namespace: &str,
        pod: &str,
        timestamps: bool,
    ) -> LogStream {
        let options = LogOptions {
            follow: true,
            timestamps,
        };
        let key = (namespace.to_owned(), pod.to_owned(), timestamps);
        let upstream = {
            let mut upstreams = self.upstreams.lock().expect("the log hub lock");
            upstreams.retain(|_, u| u.strong_count() > 0);
            match upstreams.get(&key).and_then(Weak::upgrade) {
                Some(upstream) => upstream,
                None => {
                    let upstream = Upstream::start(pods.clone(), pod.to_owned(), options);
                    upstreams.insert(key, Arc::downgrade(&upstream));
                    upstream
                }
            }
        };
        upstream.join(pods, pod.to_owned(), options)
    }
}

impl Upstream {
    fn start(pods: Api<Pod>, pod: String, options: LogOptions) -> Arc<Upstream> {
        let (sender, _) = broadcast::channel(FOLLOWER_BACKLOG);
        let upstream = Arc::new(Upstream {
            state: Mutex::new(Shared {
                sender: Some(sender),
                offset: 0,
                history: Some(Vec::new()),
            }),
        });
        let weak = Arc::downgrade(&upstream);
        tokio::spawn(async move {
            for container in STEPS {
                let mut send = |chunk: Chunk| {
                    let weak = weak.clone();
                    async move {
                        let Some(upstream) = weak.upgrade() else {
                            return false;
                        };
                        upstream.publish(chunk)
                    }
                };
                let wanted = || weak.strong_count() > 0;
                if !copy(&pods, &pod, container, options, &wanted, &mut send).await {
                    break;
                }
            }
            if let Some(upstream) = weak.upgrade() {
                upstream.state.lock().expect("the upstream lock").sender = None;
            }
        });
        upstream
    }

    /// Hands a chunk to every follower; false when none is left to read it.
    fn publish(&self, chunk: Chunk) -> bool {
        let mut state = self.state.lock().expect("the upstream lock");
        let Some(sender) = state.sender.clone() else {
            return false;
        };
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(_) => {
                // The followers end with the upstream; each may follow again.
                state.sender = None;
                return false;
            }
        };
        let at = state.offset;
        state.offset += bytes.len() as u64;
        let too_long = state
            .history
            .as_ref()
            .is_some_and(|h| h.len() + bytes.len() > HISTORY_LIMIT);
        if too_long {
            state.history = None;
        } else if let Some(history) = state.history.as_mut() {
            history.extend_from_slice(&bytes);
        }
        sender.send((at, Arc::new(bytes))).is_ok()
    }

    /// A follower's stream: what was read so far, then the shared chunks.
    fn join(self: Arc<Self>, pods: Api<Pod>, pod: String, options: LogOptions) -> LogStream {
        let (receiver, history) = {
            let state = self.state.lock().expect("the upstream lock");
            match &state.sender {
                Some(sender) => (sender.subscribe(), state.history.clone()),
                // The log has ended: read it whole.
                None => return stream(pods, pod, STEPS.to_vec(), options),
            }
        };
        let (out, chunks) = mpsc::channel::<Chunk>(16);
        tokio::spawn(async move {
            // Holds the upstream while this follower reads.
            let _upstream = self;
            let mut receiver = receiver;
            let mut next: u64 = match history {
                Some(history) => {
                    let len = history.len() as u64;
                    if !history.is_empty() && out.send(Ok(history)).await.is_err() {
                        return;
                    }
                    len
                }
                None => {
                    // Too long to keep: read up to now, then go on from where it ended.
                    let mut read = 0u64;
                    let once = LogOptions {
                        follow: false,
                        ..options
                    };
                    let mut before = stream(pods, pod, STEPS.to_vec(), once);
                    while let Some(chunk) = futures_util::StreamExt::next(&mut before).await {
                        if let Ok(bytes) = &chunk {
                            read += bytes.len() as u64;
                        }
                        if out.send(chunk).await.is_err() {
                            return;
                        }
                    }
                    read
                }
            };
            loop {
                match receiver.recv().await {
                    Ok((at, bytes)) => {
                        let end = at + bytes.len() as u64;
                        if end <= next {
                            continue;
                        }
                        let skip = next.saturating_sub(at) as usize;
                        next = end;
                        if out.send(Ok(bytes[skip..].to_vec())).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = out
                            .send(Err("the log follower fell behind; reload the log".into()))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Box::pin(futures_util::stream::unfold(
            chunks,
            |mut chunks| async move { chunks.recv().await.map(|chunk| (chunk, chunks)) },
        ))
    }
}

/// The pause before asking again for the log of a container that has not started, after
/// `tries` tries: doubling from [`START_POLL`] up to [`START_POLL_MAX`].
pub(crate) fn start_backoff(tries: u32) -> Duration {
    START_POLL
        .saturating_mul(1u32 << tries.min(16))
        .min(START_POLL_MAX)
}

/// Copies one container's log to `send`; false when the stream must end (the reader
/// left — `wanted` says whether anyone still reads — or the pod is gone).
async fn copy<F, Fut>(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    options: LogOptions,
    wanted: &(dyn Fn() -> bool + Sync),
    send: &mut F,
) -> bool
where
    F: FnMut(Chunk) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let LogOptions { follow, timestamps } = options;
    let params = LogParams {
        container: Some(container.into()),
        follow,
        timestamps,
        ..LogParams::default()
    };
    let deadline = tokio::time::Instant::now() + START_WAIT;
    let mut tries = 0;
    let mut reader = loop {
        match pods.log_stream(pod, &params).await {
            Ok(reader) => break reader,
            // Not started yet (400 "waiting to start"): a followed log waits for it.
            Err(kube::Error::Api(status))
                if status.code == 400 && follow && tokio::time::Instant::now() < deadline =>
            {
                if !wanted() {
                    return false;
                }
                tokio::time::sleep(start_backoff(tries)).await;
                tries += 1;
            }
            Err(kube::Error::Api(status)) if status.code == 400 => return true,
            Err(e) => {
                send(Err(e.to_string())).await;
                return false;
            }
        }
    };
    let mut step = StepLine::new(container, timestamps);
    if let Some(line) = step.at_open() {
        if !send(Ok(line)).await {
            return false;
        }
    }
    let mut buffer = vec![0u8; 16 * 1024];
    let mut lines = if timestamps {
        LineSplitter::stamped(LINE_LIMIT)
    } else {
        LineSplitter::new(LINE_LIMIT)
    };
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => {
                // The last line, if no newline ended it, then the step line if it is
                // still to send.
                let mut rest = Vec::new();
                if let Some(last) = lines.finish() {
                    rest.extend(step.before(&last).unwrap_or_default());
                }
                rest.extend(step.at_end().unwrap_or_default());
                return rest.is_empty() || send(Ok(rest)).await;
            }
            Ok(n) => {
                let whole = whole_lines(&mut lines, &buffer[..n]);
                if whole.is_empty() {
                    continue;
                }
                let Some(chunk) = step.before(&whole) else {
                    continue;
                };
                if !send(Ok(chunk)).await {
                    return false;
                }
            }
            Err(e) => {
                send(Err(e.to_string())).await;
                return false;
            }
        }
    }
}

/// The lines `chunk` ends, each with its newline and cut at the line limit; the bytes
/// of a line not ended yet stay in `lines`.
fn whole_lines(lines: &mut LineSplitter, chunk: &[u8]) -> Vec<u8> {
    let mut whole = Vec::new();
    lines.push(chunk, &mut |mut line| {
        line.push(b'\n');
        whole.append(&mut line);
    });
    whole
}

/// The line that begins a container's step, before its log. With timestamps it takes the
/// time of the container's first line, so it is held until that line's time is read (or,
/// for a container that wrote nothing, sent at its end without one).
struct StepLine {
    line: Option<String>,
    timestamps: bool,
    held: Vec<u8>,
}

/// A timestamp is this long at most (`2026-11-30T07:33:35.123456789Z`); a log whose first
/// bytes hold no space within it has none.
const STAMP_MAX: usize = 40;

impl StepLine {
    fn new(container: &str, timestamps: bool) -> StepLine {
        let what = if container == "clone" {
            "init container started"
        } else {
            "container started"
        };
        StepLine {
            line: Some(format!("==> {container}: {what}\n")),
            timestamps,
            held: Vec::new(),
        }
    }

    /// What to send once the container's log is open: the step line, unless it waits
    /// for a time.
    fn at_open(&mut self) -> Option<Vec<u8>> {
        if self.timestamps {
            return None;
        }
        self.line.take().map(String::into_bytes)
    }

    /// What to send for `chunk`, read from the container's log (`None`: nothing yet).
    fn before(&mut self, chunk: &[u8]) -> Option<Vec<u8>> {
        let Some(line) = self.line.as_ref() else {
            return Some(chunk.to_vec());
        };
        self.held.extend_from_slice(chunk);
        let stamp_end = self.held.iter().take(STAMP_MAX).position(|b| *b == b' ');
        let stamp = match stamp_end {
            Some(end) => std::str::from_utf8(&self.held[..end])
                .ok()
                .filter(|s| s.parse::<jiff::Timestamp>().is_ok()),
            None if self.held.len() < STAMP_MAX && !self.held.contains(&b'\n') => return None,
            None => None,
        };
        let mut out = match stamp {
            Some(stamp) => format!("{stamp} {line}").into_bytes(),
            None => line.clone().into_bytes(),
        };
        self.line = None;
        out.append(&mut self.held);
        Some(out)
    }

    /// What is still to send when the container's log ends.
    fn at_end(&mut self) -> Option<Vec<u8>> {
        let mut out = self.line.take()?.into_bytes();
        out.append(&mut self.held);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `StepLine` sends for a container's log read in `chunks`.
    fn sent(container: &str, timestamps: bool, chunks: &[&str]) -> Vec<String> {
        let mut step = StepLine::new(container, timestamps);
        let mut sent: Vec<Option<Vec<u8>>> = vec![step.at_open()];
        sent.extend(chunks.iter().map(|c| step.before(c.as_bytes())));
        sent.push(step.at_end());
        sent.into_iter()
            .flatten()
            .map(|b| String::from_utf8(b).unwrap())
            .collect()
    }

    #[test]
    fn each_container_s_log_begins_with_its_step_line() {
        assert_eq!(
            sent("clone", false, &["cloning\n", "checked out\n"]),
            [
                "==> clone: init container started\n",
                "cloning\n",
                "checked out\n"
            ]
        );
        assert_eq!(
            sent("build", false, &[]),
            ["==> build: container started\n"],
            "a silent container's step still shows"
        );
    }

    #[test]
    fn with_timestamps_the_step_line_takes_its_first_line_s_time() {
        let t = "2026-11-30T07:33:35.123456789Z";
        // The time may come in pieces: the step line waits for all of it.
        assert_eq!(
            sent(
                "build",
                true,
                &["2026-11-30T07:3", "3:35.123456789Z make\n", "later\n"]
            )
            .concat(),
            format!("{t} ==> build: container started\n{t} make\nlater\n")
        );
        assert_eq!(sent("build", true, &[]), ["==> build: container started\n"]);
        assert_eq!(
            sent("clone", true, &["no time here at all, none at all\n"]).concat(),
            "==> clone: init container started\nno time here at all, none at all\n",
            "a line without a time gives none to the step line"
        );
    }

    #[test]
    fn a_container_that_cannot_start_is_asked_for_ever_more_rarely() {
        let pauses: Vec<Duration> = (0..8).map(start_backoff).collect();
        assert_eq!(pauses[0], START_POLL);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]), "{pauses:?}");
        assert_eq!(*pauses.last().unwrap(), START_POLL_MAX);
        assert_eq!(start_backoff(u32::MAX), START_POLL_MAX);
    }
}
