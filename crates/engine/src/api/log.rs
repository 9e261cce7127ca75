//! A build's log as a backend streams it: how it is read, its timestamps, and its tail.

use std::pin::Pin;

use futures_core::Stream;

/// How a build's log is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming until the build's last step ends.
    pub follow: bool,
    /// Begin each line with when it was written (RFC 3339, UTC) and a space, as
    /// `kubectl logs --timestamps` does. A line whose time is not known has none.
    pub timestamps: bool,
}

/// `line` as a timestamped log shows it: its time (RFC 3339 with nanoseconds, trailing
/// zeros dropped, as the Kubernetes log API writes it), a space, the line.
pub fn stamp_line(at: jiff::Timestamp, line: &[u8]) -> Vec<u8> {
    let mut stamped = format!("{at} ").into_bytes();
    stamped.extend_from_slice(line);
    stamped
}

/// A timestamped log's line as its time and its text; a line without a leading time
/// is all text.
pub fn split_stamp(line: &str) -> (Option<jiff::Timestamp>, &str) {
    match line.split_once(' ') {
        Some((at, text)) if at.ends_with('Z') && at.len() >= 20 => match at.parse() {
            Ok(at) => (Some(at), text),
            Err(_) => (None, line),
        },
        _ => (None, line),
    }
}

/// A log as it is written: chunks of bytes.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Vec<u8>, String>> + Send>>;

/// The last `max_bytes` of a log (from the start of a line when one begins in them),
/// reading it through; `None` when it is empty.
pub async fn log_tail(mut stream: LogStream, max_bytes: usize) -> Option<String> {
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        let Ok(chunk) = chunk else { break };
        tail.extend_from_slice(&chunk);
        if tail.len() > 2 * max_bytes {
            tail.drain(..tail.len() - max_bytes);
        }
    }
    if tail.len() > max_bytes {
        tail.drain(..tail.len() - max_bytes);
        if let Some(newline) = tail.iter().position(|b| *b == b'\n') {
            tail.drain(..=newline);
        }
    }
    let text = String::from_utf8_lossy(&tail).into_owned();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_line_splits_back_into_its_time_and_text() {
        let at: jiff::Timestamp = "2026-11-30T07:33:35.120Z".parse().unwrap();
        let stamped = String::from_utf8(stamp_line(at, b"make: all done")).unwrap();
        assert_eq!(stamped, "2026-11-30T07:33:35.12Z make: all done");
        assert_eq!(split_stamp(&stamped), (Some(at), "make: all done"));
        // As the Kubernetes log API writes it, nanoseconds and all.
        let (at, text) = split_stamp("2026-11-30T07:33:35.123456789Z ==> build: container started");
        assert_eq!(at.map(|t| t.subsec_nanosecond()), Some(123_456_789));
        assert_eq!(text, "==> build: container started");
        for unstamped in ["plain words here", "2026-11-30Z not a time", "", "Z"] {
            assert_eq!(split_stamp(unstamped), (None, unstamped));
        }
    }
}
