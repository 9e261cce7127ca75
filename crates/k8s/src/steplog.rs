//! One step's log read from its pod for the archive: `pods/log` of the step's container
//! with `timestamps=true`, read once (not followed), as a stream of lines with their times
//! and their exact bytes, in bounded memory — a 64 KiB read buffer and at most one line
//! ([`MAX_LINE`]) beyond it, whatever the log's length. The step's line
//! (`==> build: container started`, as the live log shows it) comes first, with the time
//! of the step's first line.
//!
//! When the API server answers that the log cannot be read (the pod is gone, its node does
//! not answer) the step ends with what was read and says why
//! ([`StepReadError::Lost`]); when the API server itself cannot be reached, or the stream
//! breaks, nothing is kept now and the build is archived again later
//! ([`StepReadError::Retry`]). A container that never started has no log.

use std::collections::VecDeque;
use std::pin::Pin;

use futures_util::{AsyncRead, AsyncReadExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kubeci_engine::archive::{StepLog, StepReadError, TimedLine};

/// The longest line the archive takes (`kubeci_archive::logformat::MAX_LINE`); longer
/// lines are archived in pieces of this size.
pub const MAX_LINE: usize = 1024 * 1024;

/// How much of the log is read at a time.
const READ_SIZE: usize = 64 * 1024;

/// The log of container `step` of `pod`, with its times, as the archive takes it.
pub fn read_step(pods: Api<Pod>, pod: String, step: &str) -> StepLog {
    let state = State {
        source: Source::Closed {
            pods: Box::new(pods),
            pod,
        },
        step: step.to_owned(),
        step_line: true,
        lines: Lines::default(),
    };
    let lines = futures_util::stream::unfold(state, |mut state| async move {
        let item = state.next().await?;
        let go_on = item.is_ok();
        Some((item, state.end_unless(go_on)))
    });
    StepLog {
        name: step.to_owned(),
        lines: Box::pin(lines),
        incomplete: None,
    }
}

/// A step known to be lost whole: no line of it can be read (`why`).
pub fn lost_step(step: &str, why: String) -> StepLog {
    StepLog {
        name: step.to_owned(),
        lines: Box::pin(futures_util::stream::iter([Err(StepReadError::Lost(why))])),
        incomplete: None,
    }
}

type Reader = Pin<Box<dyn AsyncRead + Send>>;

enum Source {
    /// Not opened yet.
    Closed {
        pods: Box<Api<Pod>>,
        pod: String,
    },
    Open(Reader),
    Done,
}

struct State {
    source: Source,
    step: String,
    /// The step's line is still to come (before its first line, with that line's time).
    step_line: bool,
    lines: Lines,
}

/// Whether the API server's answer `error` means the log is lost (it answered: the pod or
/// its node cannot give it) or may be read later (it could not be reached, or was busy).
fn read_error(step: &str, error: kube::Error) -> StepReadError {
    let why = format!("the log of step {step} could not be read: {error}");
    match &error {
        kube::Error::Api(status) if status.code != 429 => StepReadError::Lost(why),
        _ => StepReadError::Retry(why),
    }
}

impl State {
    /// Ends the stream after an error.
    fn end_unless(mut self, go_on: bool) -> State {
        if !go_on {
            self.source = Source::Done;
            self.lines = Lines::default();
            self.step_line = false;
        }
        self
    }

    async fn next(&mut self) -> Option<Result<TimedLine, StepReadError>> {
        let mut buffer = vec![0u8; READ_SIZE];
        loop {
            if let Some(line) = self.lines.ready.pop_front() {
                if std::mem::take(&mut self.step_line) {
                    self.lines.ready.push_front(line.clone());
                    return Some(Ok(self.step_line(line.time)));
                }
                return Some(Ok(line));
            }
            match std::mem::replace(&mut self.source, Source::Done) {
                Source::Done => {
                    if let Some(last) = self.lines.finish() {
                        self.lines.ready.push_back(last);
                        continue;
                    }
                    // An opened log without a line still shows its step.
                    return std::mem::take(&mut self.step_line)
                        .then(|| Ok(self.step_line(None)))
                        .filter(|_| self.lines.opened);
                }
                Source::Closed { pods, pod } => {
                    let params = LogParams {
                        container: Some(self.step.clone()),
                        timestamps: true,
                        ..LogParams::default()
                    };
                    match pods.log_stream(&pod, &params).await {
                        Ok(reader) => {
                            self.lines.opened = true;
                            self.source = Source::Open(Box::pin(reader));
                        }
                        // The container never started ("waiting to start"): no log.
                        Err(kube::Error::Api(status)) if status.code == 400 => {
                            self.step_line = false;
                        }
                        Err(e) => return Some(Err(read_error(&self.step, e))),
                    }
                }
                Source::Open(mut reader) => match reader.read(&mut buffer).await {
                    Ok(0) => {}
                    Ok(n) => {
                        self.lines.push(&buffer[..n]);
                        self.source = Source::Open(reader);
                    }
                    Err(e) => {
                        return Some(Err(StepReadError::Retry(format!(
                            "reading the log of step {} stopped after {} lines: {e}",
                            self.step, self.lines.count
                        ))))
                    }
                },
            }
        }
    }

    /// The line that begins the step, as the live log writes it.
    fn step_line(&self, time: Option<jiff::Timestamp>) -> TimedLine {
        let what = if self.step == "clone" {
            "init container started"
        } else {
            "container started"
        };
        TimedLine {
            time,
            text: format!("==> {}: {what}", self.step).into_bytes(),
        }
    }
}

/// Splits `TIME SP BYTES LF` records into lines as they come; a line longer than
/// [`MAX_LINE`] goes in pieces of that size, each with the line's time.
#[derive(Default)]
struct Lines {
    /// The log was opened (the container started).
    opened: bool,
    /// The start of a line whose end has not come yet (at most [`MAX_LINE`] bytes and
    /// its time's).
    partial: Vec<u8>,
    /// The time of the line in `partial`, once a piece of it was sent.
    cut_time: Option<Option<jiff::Timestamp>>,
    ready: VecDeque<TimedLine>,
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
            let text = self.partial[start..start + MAX_LINE].to_vec();
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
        let text = self.partial[start..].to_vec();
        self.partial.clear();
        self.cut_time = None;
        self.emit(time, text);
    }

    fn emit(&mut self, time: Option<jiff::Timestamp>, text: Vec<u8>) {
        self.count += 1;
        self.ready.push_back(TimedLine { time, text });
    }

    /// The last line, if no newline ended it.
    fn finish(&mut self) -> Option<TimedLine> {
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

    fn split(chunks: &[&[u8]]) -> Vec<TimedLine> {
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

    fn line(time: Option<jiff::Timestamp>, text: &[u8]) -> TimedLine {
        TimedLine {
            time,
            text: text.to_vec(),
        }
    }

    fn at(time: &str) -> Option<jiff::Timestamp> {
        Some(time.parse().unwrap())
    }

    #[test]
    fn each_line_keeps_its_time_and_its_exact_bytes_however_the_chunks_fall() {
        let log: &[u8] =
            b"2026-11-30T07:33:35.123456789Z make all\r\n2026-11-30T07:33:36Z \xff\xfe binary  \n2026-11-30T07:33:37Z \n2026-11-30T07:33:38Z last";
        let expected = vec![
            line(at("2026-11-30T07:33:35.123456789Z"), b"make all\r"),
            line(at("2026-11-30T07:33:36Z"), b"\xff\xfe binary  "),
            line(at("2026-11-30T07:33:37Z"), b""),
            line(at("2026-11-30T07:33:38Z"), b"last"),
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
            vec![line(None, b"not a time here")]
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
        let joined: Vec<u8> = lines[..3].iter().flat_map(|l| l.text.clone()).collect();
        assert_eq!(joined, long, "no byte lost or added");
    }
}
