//! One step's log read from its pod for the archive: `pods/log` of the step's container
//! with `timestamps=true`, read once (not followed), as a stream of lines with their times
//! and their exact bytes, in bounded memory — a 64 KiB read buffer and at most one line
//! ([`MAX_LINE`]) beyond it, whatever the log's length.
//!
//! A log that cannot be read whole (the pod's node is gone, the kubelet fails mid-way)
//! ends the stream with what was read, and its [`Gap`] says why: the archive keeps what
//! there is, and the build's record says what is missing. A container that never started
//! has an empty log, and no gap.

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{AsyncRead, AsyncReadExt, Stream};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kubeci_archive::logformat::MAX_LINE;
use kubeci_archive::LogLine;

/// How much of the log is read at a time.
const READ_SIZE: usize = 64 * 1024;

/// Why a step's log ended before its end, once its stream has ended (`None`: it was read
/// whole).
#[derive(Debug, Clone, Default)]
pub struct Gap(Arc<Mutex<Option<String>>>);

impl Gap {
    pub fn why(&self) -> Option<String> {
        self.0.lock().expect("the gap lock").clone()
    }

    fn set(&self, why: String) {
        *self.0.lock().expect("the gap lock") = Some(why);
    }
}

/// A step's lines; they never fail (a failure ends them and fills the [`Gap`]).
pub type StepLines = Pin<Box<dyn Stream<Item = Result<LogLine, std::convert::Infallible>> + Send>>;

/// The log of container `container` of `pod`, with its times.
pub fn read_step(pods: Api<Pod>, pod: String, container: &str) -> (StepLines, Gap) {
    let gap = Gap::default();
    let state = State {
        source: Source::Closed {
            pods: Box::new(pods),
            pod,
            container: container.to_owned(),
        },
        lines: Lines::default(),
        gap: gap.clone(),
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        let line = state.next().await?;
        Some((Ok(line), state))
    });
    (Box::pin(stream), gap)
}

type Reader = Pin<Box<dyn AsyncRead + Send>>;

enum Source {
    /// Not opened yet.
    Closed {
        pods: Box<Api<Pod>>,
        pod: String,
        container: String,
    },
    Open(Reader),
    Done,
}

struct State {
    source: Source,
    lines: Lines,
    gap: Gap,
}

impl State {
    async fn next(&mut self) -> Option<LogLine> {
        let mut buffer = vec![0u8; READ_SIZE];
        loop {
            if let Some(line) = self.lines.ready.pop_front() {
                return Some(line);
            }
            match std::mem::replace(&mut self.source, Source::Done) {
                Source::Done => return self.lines.finish(),
                Source::Closed {
                    pods,
                    pod,
                    container,
                } => {
                    let params = LogParams {
                        container: Some(container.clone()),
                        timestamps: true,
                        ..LogParams::default()
                    };
                    match pods.log_stream(&pod, &params).await {
                        Ok(reader) => self.source = Source::Open(Box::pin(reader)),
                        // The container never started ("waiting to start"): no log.
                        Err(kube::Error::Api(status)) if status.code == 400 => {}
                        Err(e) => self.gap.set(format!(
                            "the log of step {container} could not be read: {e}"
                        )),
                    }
                }
                Source::Open(mut reader) => match reader.read(&mut buffer).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.lines.push(&buffer[..n]);
                        self.source = Source::Open(reader);
                    }
                    Err(e) => self.gap.set(format!(
                        "reading the log stopped after {} lines: {e}",
                        self.lines.count
                    )),
                },
            }
        }
    }
}

/// Splits `TIME SP BYTES LF` records into lines as they come; a line longer than
/// [`MAX_LINE`] goes in pieces of that size, each with the line's time.
#[derive(Default)]
struct Lines {
    /// The start of a line whose end has not come yet (at most [`MAX_LINE`] bytes and
    /// its time's).
    partial: Vec<u8>,
    /// The time of the line in `partial`, once a piece of it was sent.
    cut_time: Option<Option<jiff::Timestamp>>,
    ready: std::collections::VecDeque<LogLine>,
    count: u64,
}

/// The longest time field `kubelet` writes (`2026-11-30T07:33:35.123456789Z`), with room.
const TIME_MAX: usize = 40;

impl Lines {
    fn push(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            match chunk.iter().position(|b| *b == b'\n') {
                Some(end) => {
                    self.partial.extend_from_slice(&chunk[..end]);
                    self.line_ended();
                    chunk = &chunk[end + 1..];
                }
                None => {
                    let room = (MAX_LINE + TIME_MAX + 1).saturating_sub(self.partial.len());
                    let take = room.min(chunk.len());
                    self.partial.extend_from_slice(&chunk[..take]);
                    chunk = &chunk[take..];
                    self.cut_if_too_long();
                }
            }
        }
    }

    /// A line longer than [`MAX_LINE`]: its first [`MAX_LINE`] bytes go as a line now.
    fn cut_if_too_long(&mut self) {
        loop {
            let (time, start) = self.time_of_partial();
            if self.partial.len() - start <= MAX_LINE {
                return;
            }
            let text = Bytes::copy_from_slice(&self.partial[start..start + MAX_LINE]);
            self.partial.drain(..start + MAX_LINE);
            self.cut_time = Some(time);
            self.emit(time, text);
        }
    }

    /// The time of the line in `partial` and where its bytes start.
    fn time_of_partial(&self) -> (Option<jiff::Timestamp>, usize) {
        if let Some(time) = self.cut_time {
            return (time, 0);
        }
        let space = self.partial.iter().take(TIME_MAX).position(|b| *b == b' ');
        let time = space.and_then(|s| {
            std::str::from_utf8(&self.partial[..s])
                .ok()?
                .parse::<jiff::Timestamp>()
                .ok()
        });
        match (time, space) {
            (Some(time), Some(space)) => (Some(time), space + 1),
            _ => (None, 0),
        }
    }

    fn line_ended(&mut self) {
        self.cut_if_too_long();
        let (time, start) = self.time_of_partial();
        let text = Bytes::copy_from_slice(&self.partial[start..]);
        self.partial.clear();
        self.cut_time = None;
        self.emit(time, text);
    }

    fn emit(&mut self, time: Option<jiff::Timestamp>, text: Bytes) {
        self.count += 1;
        self.ready.push_back(LogLine { time, text });
    }

    /// The last line, if no newline ended it.
    fn finish(&mut self) -> Option<LogLine> {
        if self.partial.is_empty() {
            self.cut_time = None;
            return None;
        }
        self.line_ended();
        self.ready.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<LogLine> {
        let mut lines = Lines::default();
        let mut out = Vec::new();
        for chunk in chunks {
            lines.push(chunk);
            out.extend(lines.ready.drain(..));
            assert!(lines.partial.len() <= MAX_LINE + TIME_MAX + 1, "bounded");
        }
        out.extend(lines.finish());
        out
    }

    fn at(time: &str) -> Option<jiff::Timestamp> {
        Some(time.parse().unwrap())
    }

    #[test]
    fn each_line_keeps_its_time_and_its_exact_bytes_however_the_chunks_fall() {
        let log: &[u8] =
            b"2026-11-30T07:33:35.123456789Z make all\r\n2026-11-30T07:33:36Z \xff\xfe binary  \n2026-11-30T07:33:37Z \n2026-11-30T07:33:38Z last";
        let expected = vec![
            LogLine {
                time: at("2026-11-30T07:33:35.123456789Z"),
                text: Bytes::from_static(b"make all\r"),
            },
            LogLine {
                time: at("2026-11-30T07:33:36Z"),
                text: Bytes::from_static(b"\xff\xfe binary  "),
            },
            LogLine {
                time: at("2026-11-30T07:33:37Z"),
                text: Bytes::new(),
            },
            LogLine {
                time: at("2026-11-30T07:33:38Z"),
                text: Bytes::from_static(b"last"),
            },
        ];
        assert_eq!(split(&[log]), expected);
        let bytes: Vec<&[u8]> = log.chunks(1).collect();
        assert_eq!(split(&bytes), expected, "one byte at a time");
        let sevens: Vec<&[u8]> = log.chunks(7).collect();
        assert_eq!(split(&sevens), expected);
    }

    #[test]
    fn a_line_without_a_time_is_kept_whole_without_one() {
        assert_eq!(
            split(&[b"not a time here\n"]),
            vec![LogLine {
                time: None,
                text: Bytes::from_static(b"not a time here")
            }]
        );
    }

    #[test]
    fn a_line_longer_than_the_archive_takes_goes_in_pieces_with_its_time_in_bounded_memory() {
        let time = "2026-11-30T07:33:35Z";
        let long = vec![b'x'; 2 * MAX_LINE + 10];
        let mut log = format!("{time} ").into_bytes();
        log.extend_from_slice(&long);
        log.extend_from_slice(format!("\n{time} after\n").as_bytes());
        let chunks: Vec<&[u8]> = log.chunks(READ_SIZE).collect();
        let lines = split(&chunks);
        let sizes: Vec<usize> = lines.iter().map(|l| l.text.len()).collect();
        assert_eq!(sizes, [MAX_LINE, MAX_LINE, 10, 5]);
        assert!(lines.iter().all(|l| l.time == at(time)));
        let joined: Vec<u8> = lines[..3].iter().flat_map(|l| l.text.to_vec()).collect();
        assert_eq!(joined, long, "no byte lost or added");
    }
}
