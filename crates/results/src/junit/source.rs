//! The bytes of a report, read in bounded chunks: where the reader is (line and column),
//! a look ahead of a few bytes, and a budget that ends the input early for one tag.

use std::io::{self, BufRead, Read};

use crate::error::Position;

/// How many bytes are read from the file at a time.
const CHUNK: usize = 64 * 1024;

/// A [`BufRead`] over the report that counts lines and columns as bytes are consumed, can
/// look a few bytes ahead, and, while a budget is set, shows the end of the input once the
/// budget is spent (quick-xml then stops inside the tag it was reading).
pub(crate) struct Source<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
    at: Position,
    budget: Option<usize>,
    over_budget: bool,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Self {
        Source {
            inner,
            buf: vec![0; CHUNK].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            at: Position { line: 1, column: 1 },
            budget: None,
            over_budget: false,
        }
    }

    /// Where the next byte is.
    pub(crate) fn position(&self) -> Position {
        self.at
    }

    /// The bytes available now, at least one unless the input has ended (no budget).
    pub(crate) fn chunk(&mut self) -> io::Result<&[u8]> {
        if self.start == self.end && !self.eof {
            self.start = 0;
            self.end = 0;
            self.read_more()?;
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// Up to `n` bytes ahead (fewer only at the end of the input); `n` ≤ 64.
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        debug_assert!(n <= 64);
        if self.end - self.start < n && !self.eof {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < n && !self.eof {
                self.read_more()?;
            }
        }
        let available = (self.end - self.start).min(n);
        Ok(&self.buf[self.start..self.start + available])
    }

    /// Reads once into the free end of the buffer.
    fn read_more(&mut self) -> io::Result<()> {
        loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.end += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves past `n` available bytes, counting lines and columns.
    pub(crate) fn advance(&mut self, n: usize) {
        let bytes = &self.buf[self.start..self.start + n];
        let newlines = bytes.iter().filter(|b| **b == b'\n').count() as u64;
        let tail = match memchr::memrchr(b'\n', bytes) {
            Some(last) => {
                self.at.line += newlines;
                self.at.column = 1;
                &bytes[last + 1..]
            }
            None => bytes,
        };
        // A character is counted at its first byte (UTF-8 continuation bytes are 10xxxxxx).
        self.at.column += tail.iter().filter(|b| (**b & 0xC0) != 0x80).count() as u64;
        self.start += n;
        if let Some(budget) = self.budget.as_mut() {
            *budget = budget.saturating_sub(n);
        }
    }

    /// From now on, at most `limit` more bytes before the input seems to end.
    pub(crate) fn set_budget(&mut self, limit: usize) {
        self.budget = Some(limit);
        self.over_budget = false;
    }

    /// Lifts the budget; whether it was spent.
    pub(crate) fn clear_budget(&mut self) -> bool {
        self.budget = None;
        std::mem::take(&mut self.over_budget)
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let chunk = self.fill_buf()?;
        let n = chunk.len().min(out.len());
        out[..n].copy_from_slice(&chunk[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for Source<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let budget = self.budget;
        if budget == Some(0) {
            self.over_budget = true;
            return Ok(&[]);
        }
        let chunk = self.chunk()?;
        Ok(match budget {
            Some(budget) => &chunk[..chunk.len().min(budget)],
            None => chunk,
        })
    }

    fn consume(&mut self, amt: usize) {
        self.advance(amt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that gives one byte per read, as a slow pipe may.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let Some((first, rest)) = self.0.split_first() else {
                return Ok(0);
            };
            if out.is_empty() {
                return Ok(0);
            }
            out[0] = *first;
            self.0 = rest;
            Ok(1)
        }
    }

    #[test]
    fn lines_and_columns_count_characters() {
        let mut source = Source::new("ab\nçé x\n\nz".as_bytes());
        let n = source.chunk().unwrap().len();
        source.advance(4); // "ab\nç"
        assert_eq!(source.position(), Position { line: 2, column: 2 });
        source.advance(n - 4 - 1);
        assert_eq!(source.position(), Position { line: 4, column: 1 });
    }

    #[test]
    fn peek_looks_across_reads() {
        let mut source = Source::new(Trickle(b"<![CDATA[x]]>"));
        assert_eq!(source.peek(9).unwrap(), b"<![CDATA[");
        source.advance(9);
        assert_eq!(source.peek(9).unwrap(), b"x]]>");
    }

    #[test]
    fn a_spent_budget_looks_like_the_end() {
        let mut source = Source::new("<testcase name='long'>".as_bytes());
        source.set_budget(4);
        let mut read = Vec::new();
        source.read_to_end(&mut read).unwrap();
        assert_eq!(read, b"<tes");
        assert!(source.clear_budget());
        assert_eq!(source.fill_buf().unwrap(), b"tcase name='long'>");
    }
}
