//! The log format: one line per line of the log, `TIME SP BYTES LF`.
//!
//! `TIME` is when the line was written, RFC 3339 in UTC (`Z`) with up to nine fractional
//! digits (trailing zeros dropped), as `kubectl logs --timestamps` writes it; `-` when the
//! time is not known. `BYTES` are the line's bytes exactly as given (any byte but `\n`,
//! not necessarily UTF-8). `cut -d' ' -f2-` gives back the log; `grep`, `less` and
//! `kubectl`-style timestamp parsers read it as it is.

use bytes::Bytes;

/// The longest line the archive takes or reads back (its bytes, without the time).
/// kubeci cuts a pod's lines at 64 KiB before they get here; the margin is for others.
pub const MAX_LINE: usize = 1024 * 1024;

/// The time field of a line whose time is not known.
const NO_TIME: &[u8] = b"-";

/// One line of a log: when it was written (if known) and its bytes, without the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: Option<jiff::Timestamp>,
    pub text: Bytes,
}

impl LogLine {
    /// A line with its time.
    pub fn new(time: jiff::Timestamp, text: impl Into<Bytes>) -> Self {
        Self {
            time: Some(time),
            text: text.into(),
        }
    }

    /// A line whose time is not known.
    pub fn untimed(text: impl Into<Bytes>) -> Self {
        Self {
            time: None,
            text: text.into(),
        }
    }
}

/// Appends `line` as the format writes it, or says why it cannot be one line.
pub fn encode(line: &LogLine, out: &mut Vec<u8>) -> Result<(), String> {
    if line.text.len() > MAX_LINE {
        return Err(format!(
            "it is {} bytes long; the archive keeps lines of at most {MAX_LINE} bytes",
            line.text.len()
        ));
    }
    if let Some(at) = line.text.iter().position(|b| *b == b'\n') {
        return Err(format!(
            "it has a newline at byte {at}; split the log into lines first"
        ));
    }
    match line.time {
        Some(time) => out.extend_from_slice(time.to_string().as_bytes()),
        None => out.extend_from_slice(NO_TIME),
    }
    out.push(b' ');
    out.extend_from_slice(&line.text);
    out.push(b'\n');
    Ok(())
}

/// Reads one line as the format wrote it (`record` without its `\n`), or says what is
/// wrong with it.
pub fn decode(record: &[u8]) -> Result<LogLine, String> {
    let Some(space) = record.iter().position(|b| *b == b' ') else {
        return Err("a line has no space after its time".to_owned());
    };
    let (field, text) = (&record[..space], &record[space + 1..]);
    let time = if field == NO_TIME {
        None
    } else {
        let field = std::str::from_utf8(field)
            .ok()
            .filter(|f| f.ends_with('Z'))
            .ok_or_else(|| "a line does not begin with a UTC time (…Z) or `-`".to_owned())?;
        Some(
            field
                .parse::<jiff::Timestamp>()
                .map_err(|e| format!("a line's time `{field}` is not RFC 3339: {e}"))?,
        )
    };
    Ok(LogLine {
        time,
        text: Bytes::copy_from_slice(text),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(line: &LogLine) -> Vec<u8> {
        let mut out = Vec::new();
        encode(line, &mut out).unwrap();
        out
    }

    #[test]
    fn a_line_is_its_time_a_space_and_its_bytes() {
        let at: jiff::Timestamp = "2026-11-30T07:33:35.123456789Z".parse().unwrap();
        assert_eq!(
            encoded(&LogLine::new(at, "make: all done")),
            b"2026-11-30T07:33:35.123456789Z make: all done\n"
        );
        let whole_second: jiff::Timestamp = "2026-11-30T07:33:35Z".parse().unwrap();
        assert_eq!(
            encoded(&LogLine::new(whole_second, "")),
            b"2026-11-30T07:33:35Z \n"
        );
        assert_eq!(encoded(&LogLine::untimed("no time")), b"- no time\n");
    }

    #[test]
    fn any_bytes_but_a_newline_round_trip_exactly() {
        let at: jiff::Timestamp = "2026-11-30T07:33:35.12Z".parse().unwrap();
        let lines = [
            LogLine::new(
                at,
                &b"\r\x00\xff\xfe invalid utf-8 \x1b[31mred\x1b[0m\r"[..],
            ),
            LogLine::untimed(&b"2026-11-30T07:33:35Z looks timed but is not"[..]),
            LogLine::untimed(&b"- a dash"[..]),
            LogLine::untimed(&b""[..]),
            LogLine::new(at, &b"  two leading spaces"[..]),
            LogLine::new(at, vec![b'x'; MAX_LINE]),
        ];
        for line in lines {
            let bytes = encoded(&line);
            assert_eq!(bytes.last(), Some(&b'\n'));
            assert_eq!(decode(&bytes[..bytes.len() - 1]), Ok(line));
        }
    }

    #[test]
    fn a_line_that_cannot_be_one_line_is_refused() {
        let mut out = Vec::new();
        let newline = encode(&LogLine::untimed("one\ntwo"), &mut out).unwrap_err();
        assert!(newline.contains("newline at byte 3"), "{newline}");
        let long = encode(&LogLine::untimed(vec![b'x'; MAX_LINE + 1]), &mut out).unwrap_err();
        assert!(long.contains("at most 1048576 bytes"), "{long}");
        assert!(out.is_empty(), "nothing is written for a refused line");
    }

    #[test]
    fn foreign_lines_are_named_for_what_is_wrong() {
        assert!(decode(b"no-space-here").unwrap_err().contains("no space"));
        assert!(decode(b"hello world").unwrap_err().contains("UTC time"));
        assert!(decode(b"2026-13-40T99:00:00Z x")
            .unwrap_err()
            .contains("not RFC 3339"));
    }
}
