//! A build log's lines as both engines keep and serve them: at most [`LINE_LIMIT`] bytes
//! each. A longer line (a build printing without a newline) keeps its first
//! [`LINE_LIMIT`] bytes and the [`cut_mark`]; the rest of it is dropped, so no writer or
//! reader ever holds more than that of one line.

/// The longest line kept, in bytes (its cut mark aside).
pub const LINE_LIMIT: usize = 64 * 1024;

/// What ends a line cut at `limit` bytes.
pub fn cut_mark(limit: usize) -> String {
    format!(" … [line cut at {limit} bytes]")
}

/// `line` as kept: whole when it is at most `limit` bytes, else cut and marked (for lines
/// stored before they were cut as they were written).
pub fn cut(line: &[u8], limit: usize) -> Vec<u8> {
    if line.len() <= limit {
        return line.to_vec();
    }
    let mut splitter = LineSplitter::new(limit);
    splitter.line.extend_from_slice(&line[..limit]);
    splitter.cut_line(line[limit]);
    splitter.line
}

/// Splits a stream of bytes, arriving in chunks of any size, into lines of at most
/// `limit` bytes (without their `\n`); a longer line is cut at a character boundary and
/// marked. Only the bytes of each new chunk are searched for the next newline.
#[derive(Debug)]
pub struct LineSplitter {
    limit: usize,
    /// The line being read, up to `limit` bytes.
    line: Vec<u8>,
    /// The line being read was cut: its bytes up to the next newline are dropped.
    cut: bool,
    /// Lines begin with a time and a space (as the Kubernetes log API writes them with
    /// timestamps), which the limit does not count.
    stamped: bool,
}

/// A line's time is this long at most (`2026-11-30T07:33:35.123456789Z`), its space aside.
const STAMP_MAX: usize = 40;

impl LineSplitter {
    pub fn new(limit: usize) -> LineSplitter {
        LineSplitter {
            limit,
            line: Vec::new(),
            cut: false,
            stamped: false,
        }
    }

    /// A splitter of lines that each begin with a time and a space, which `limit` does
    /// not count.
    pub fn stamped(limit: usize) -> LineSplitter {
        LineSplitter {
            stamped: true,
            ..LineSplitter::new(limit)
        }
    }

    /// How many more bytes the line being read may take, `piece` being its next bytes.
    fn room(&self, piece: &[u8]) -> usize {
        let stamp = if self.stamped {
            let head = self.line.iter().chain(piece).take(STAMP_MAX + 1);
            head.into_iter()
                .position(|b| *b == b' ')
                .map_or(0, |at| at + 1)
        } else {
            0
        };
        (self.limit + stamp).saturating_sub(self.line.len())
    }

    /// Reads `chunk`, giving each line it ends to `line`.
    pub fn push(&mut self, mut chunk: &[u8], line: &mut dyn FnMut(Vec<u8>)) {
        while !chunk.is_empty() {
            let newline = chunk.iter().position(|b| *b == b'\n');
            let (piece, rest) = match newline {
                Some(at) => (&chunk[..at], Some(&chunk[at + 1..])),
                None => (chunk, None),
            };
            if !self.cut {
                let room = if self.line.len() + piece.len() <= self.limit {
                    piece.len()
                } else {
                    self.room(piece)
                };
                if piece.len() <= room {
                    self.line.extend_from_slice(piece);
                } else {
                    self.line.extend_from_slice(&piece[..room]);
                    self.cut_line(piece[room]);
                }
            }
            match rest {
                Some(rest) => {
                    line(self.take());
                    chunk = rest;
                }
                None => break,
            }
        }
    }

    /// The last line, when the stream ends without a newline after it.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.line.is_empty() || self.cut).then(|| self.take())
    }

    /// Cuts the line being read, whose next byte was `next`, at its last character
    /// boundary, and marks it.
    fn cut_line(&mut self, next: u8) {
        let continuation = |b: u8| b & 0b1100_0000 == 0b1000_0000;
        let mut end = self.line.len();
        // Back over a character cut in the middle: at most 3 bytes of it are kept.
        for _ in 0..3 {
            let following = if end == self.line.len() {
                next
            } else {
                self.line[end]
            };
            if end == 0 || !continuation(following) {
                break;
            }
            end -= 1;
        }
        self.line.truncate(end);
        self.line.extend_from_slice(cut_mark(self.limit).as_bytes());
        self.cut = true;
    }

    fn take(&mut self) -> Vec<u8> {
        self.cut = false;
        std::mem::take(&mut self.line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of `chunks` split with `limit`.
    fn lines(limit: usize, chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = LineSplitter::new(limit);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk, &mut |l| lines.push(l));
        }
        lines.extend(splitter.finish());
        lines
            .into_iter()
            .map(|l| String::from_utf8(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_are_found_across_chunks_and_the_last_needs_no_newline() {
        assert_eq!(
            lines(100, &[b"one\ntw", b"o\n\nthr", b"ee"]),
            ["one", "two", "", "three"]
        );
        assert_eq!(lines(100, &[b"one\n"]), ["one"]);
        assert!(lines(100, &[b""]).is_empty());
    }

    #[test]
    fn a_long_line_arriving_in_many_chunks_is_cut_at_the_limit_and_marked() {
        let limit = 64 * 1024;
        let mut splitter = LineSplitter::new(limit);
        let mut lines = Vec::new();
        // 50 MB of one line in 4 KiB chunks, then a short line.
        let chunk = vec![b'x'; 4096];
        for _ in 0..(50 * 1024 * 1024 / chunk.len()) {
            splitter.push(&chunk, &mut |l| lines.push(l));
            assert!(lines.is_empty(), "no line ends before its newline");
            assert!(splitter.line.len() <= limit + cut_mark(limit).len());
        }
        splitter.push(b"xx\nafter\n", &mut |l| lines.push(l));
        let mut expected = vec![b'x'; limit];
        expected.extend_from_slice(b" \xe2\x80\xa6 [line cut at 65536 bytes]");
        assert_eq!(lines, [expected, b"after".to_vec()]);
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn a_line_is_cut_between_characters_and_a_line_of_exactly_the_limit_is_whole() {
        // "é" is two bytes: a limit of 3 falls inside the second.
        assert_eq!(
            lines(3, &["ééé\n".as_bytes()]),
            ["é … [line cut at 3 bytes]"]
        );
        assert_eq!(
            lines(5, &["aéé€\n".as_bytes()]),
            ["aéé … [line cut at 5 bytes]"]
        );
        assert_eq!(
            lines(6, &["a€€\n".as_bytes()]),
            ["a€ … [line cut at 6 bytes]"]
        );
        assert_eq!(
            lines(4, &[b"abcd\nabcde"]),
            ["abcd", "abcd … [line cut at 4 bytes]"]
        );
        assert_eq!(lines(4, &["éé\n".as_bytes()]), ["éé"]);
        assert_eq!(
            cut("aéé€".as_bytes(), 5),
            "aéé … [line cut at 5 bytes]".as_bytes()
        );
        assert_eq!(cut(b"short", 5), b"short");
    }

    #[test]
    fn a_lines_time_does_not_count_against_the_limit() {
        let mut splitter = LineSplitter::stamped(4);
        let mut lines = Vec::new();
        for chunk in [
            &b"2026-11-30T07:33:35.1Z ab"[..],
            b"cdef
",
            b"2026-11-30T07:33:35.2Z abc
",
        ] {
            splitter.push(chunk, &mut |l| lines.push(String::from_utf8(l).unwrap()));
        }
        assert_eq!(
            lines,
            [
                "2026-11-30T07:33:35.1Z abcd … [line cut at 4 bytes]",
                "2026-11-30T07:33:35.2Z abc"
            ]
        );
    }
}
