//! The glob patterns of a job's `test_reports` and `artifacts`: which files a build leaves
//! behind, named relative to its `workdir` (docs/job-spec.md, "Test reports and
//! artifacts").
//!
//! A pattern is parsed once ([`Pattern::parse`]) and matched against '/'-separated relative
//! paths ([`Pattern::matches`]). The syntax:
//!
//! - `*` matches any characters within one path segment (never `/`); `?` one character;
//!   `[abc]`, `[a-z]` one of those, `[!a]` (or `[^a]`) any but those. There is no
//!   escaping: `[*]`, `[?]` and `[[]` match those characters themselves.
//! - `**` as a whole segment matches any number of segments: `**/junit.xml` finds it at
//!   any depth, `a/**/b` matches `a/b` and `a/x/y/b`. A trailing `/**`, like a trailing
//!   `/`, means every file under that directory, at any depth.
//! - A name starting with `.` (a hidden file or directory) is matched only by a pattern
//!   segment that itself starts with a literal `.`: `*`, `?`, `[.]`, `**` and a directory
//!   pattern's "every file under it" skip `.git/`, `.env`, `.npmrc`. Uploading hidden files
//!   by accident is how tokens leak through CI artifacts (`.git/config` holding a token),
//!   so naming one takes a deliberate `.`: `.coverage/`, `**/.report.xml`.
//!
//! Matching runs the pattern as an automaton: one step per segment of the path and, within
//! a segment, one step per character, so its time is bounded by the pattern's size times
//! the path's, whatever either holds (the collector matches every name it walks).

use std::fmt;

/// The longest pattern, in characters.
pub const MAX_PATTERN_CHARS: usize = 256;

/// The most patterns one key (`test_reports`, `artifacts`) may list.
pub const MAX_PATTERNS: usize = 32;

/// A parsed glob pattern of files relative to a job's `workdir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
    dir: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// One path segment, matched by these tokens.
    Name(Vec<Token>),
    /// `**`: zero or more whole segments, none of them hidden. `rest`: the "every file
    /// under it" of a trailing `/` or `/**`, whose directories the pattern names.
    AnyDepth { rest: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Char(char),
    /// `?`
    AnyChar,
    /// `*`
    AnyRun,
    /// `[…]`: ranges (a single character is a range of one), negated by `!` or `^`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// Why a pattern is not valid; [`PatternError::help`] says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternError {
    Empty,
    TooLong {
        chars: usize,
    },
    ControlCharacter {
        ch: char,
    },
    Backslash,
    Absolute,
    /// A `.` or `..` segment.
    DotSegment {
        segment: String,
    },
    /// `a//b`
    EmptySegment,
    /// `**` inside a segment with other characters (`a**`).
    StarStarInSegment {
        segment: String,
    },
    /// A `[` without its `]` (its position counted in characters, from 1).
    UnclosedBracket {
        at: usize,
    },
    /// `[z-a]`
    ReversedRange {
        from: char,
        to: char,
    },
}

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PatternError::Empty => f.write_str("it is empty"),
            PatternError::TooLong { chars } => write!(
                f,
                "it is {chars} characters long; at most {MAX_PATTERN_CHARS} are allowed"
            ),
            PatternError::ControlCharacter { ch } => {
                write!(f, "it contains {}", crate::names::describe_char(*ch))
            }
            PatternError::Backslash => f.write_str(
                "it contains `\\`: paths are separated by `/`, and there is no escaping",
            ),
            PatternError::Absolute => {
                f.write_str("it is an absolute path; patterns are relative to the workdir")
            }
            PatternError::DotSegment { segment } => write!(
                f,
                "it has a `{segment}` segment; patterns name files inside the workdir, from it down"
            ),
            PatternError::EmptySegment => f.write_str("it has an empty segment (`//`)"),
            PatternError::StarStarInSegment { segment } => write!(
                f,
                "`**` must be a whole segment, but `{segment}` holds other characters too"
            ),
            PatternError::UnclosedBracket { at } => {
                write!(f, "the `[` at character {at} is never closed")
            }
            PatternError::ReversedRange { from, to } => {
                write!(f, "the range `{from}-{to}` runs backwards")
            }
        }
    }
}

impl std::error::Error for PatternError {}

impl PatternError {
    /// How to fix the pattern.
    pub fn help(&self) -> &'static str {
        match self {
            PatternError::Empty => {
                "write a path relative to the workdir, e.g. `\"**/junit*.xml\"`, or remove the item"
            }
            PatternError::TooLong { .. } => {
                "shorten it: `**` and `*` stand for any directories and names"
            }
            PatternError::ControlCharacter { .. } | PatternError::Backslash => {
                "write directories separated by `/`; to match `*`, `?` or `[` themselves, put them in brackets: `[*]`"
            }
            PatternError::Absolute => {
                "write it relative to the workdir: `dist/*.tar.gz`, not `/workspace/src/dist/*.tar.gz`"
            }
            PatternError::DotSegment { .. } => {
                "write the path from the workdir down, without `.` or `..` (files outside the workdir are not collected)"
            }
            PatternError::EmptySegment => "write one `/` between directories",
            PatternError::StarStarInSegment { .. } => {
                "write `*` within a name (`junit*.xml`) and `**` alone between slashes for any directories (`a/**/b`)"
            }
            PatternError::UnclosedBracket { .. } => {
                "close it with `]` (a class holds no `/`), or write `[[]` to match `[` itself"
            }
            PatternError::ReversedRange { .. } => "write the smaller character first, e.g. `[a-z]`",
        }
    }
}

impl Pattern {
    /// Parses a pattern as a job declares it.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let chars = text.chars().count();
        if chars > MAX_PATTERN_CHARS {
            return Err(PatternError::TooLong { chars });
        }
        if let Some(ch) = text.chars().find(|c| c.is_control()) {
            return Err(PatternError::ControlCharacter { ch });
        }
        if text.contains('\\') {
            return Err(PatternError::Backslash);
        }
        if text.starts_with('/') {
            return Err(PatternError::Absolute);
        }
        let dir = text.ends_with('/');
        let body = text.strip_suffix('/').unwrap_or(text);
        let mut segments = Vec::new();
        // Where each segment starts, in characters from 1, for an unclosed `[`.
        let mut column = 1;
        for part in body.split('/') {
            let segment = match part {
                "" => return Err(PatternError::EmptySegment),
                "." | ".." => {
                    return Err(PatternError::DotSegment {
                        segment: part.into(),
                    })
                }
                "**" => Segment::AnyDepth { rest: false },
                _ if part.contains("**") => {
                    return Err(PatternError::StarStarInSegment {
                        segment: part.into(),
                    })
                }
                _ => Segment::Name(tokens(part, column)?),
            };
            // `a/**/**/b` is `a/**/b`.
            if !(segment.is_any_depth() && segments.last().is_some_and(Segment::is_any_depth)) {
                segments.push(segment);
            }
            column += part.chars().count() + 1;
        }
        // `dir/` and `dir/**` are every file under `dir`: one name, then any depth.
        if segments.last().is_some_and(Segment::is_any_depth) {
            segments.pop();
        }
        if dir || text.ends_with("**") {
            segments.push(Segment::Name(vec![Token::AnyRun]));
            segments.push(Segment::AnyDepth { rest: true });
        }
        Ok(Pattern {
            text: text.into(),
            segments,
            dir,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern names a directory (it ends in `/`): every file under it.
    pub fn is_dir(&self) -> bool {
        self.dir
    }

    /// Whether the file at `path` (relative to the workdir, '/'-separated) matches. A path
    /// that is empty, absolute, or has an empty, `.` or `..` segment matches nothing.
    pub fn matches(&self, path: &str) -> bool {
        self.walk(path)
            .is_some_and(|at| at.reached[self.segments.len()])
    }

    /// Whether a file somewhere under the directory `dir` could match: a walker need not
    /// read a directory for which this is false.
    pub fn may_match_under(&self, dir: &str) -> bool {
        self.walk(dir)
            .is_some_and(|at| at.reached[..self.segments.len()].contains(&true))
    }

    /// Whether the pattern names the directory `dir` — its last segment matched by a name
    /// of the pattern, or inside a directory pattern's "every file under it", rather than
    /// passed through by a `**` in the middle — with files under it that could match:
    /// `coverage/`, `coverage/*.html` and `*/lcov.info` name `coverage`, and `coverage/`
    /// every directory under it; `**/junit.xml` names no directory. A collector that does
    /// not enter `dir` (a link) tells the user so where they named it, not for every
    /// directory a `**` crosses.
    pub fn names_dir(&self, dir: &str) -> bool {
        self.walk(dir)
            .is_some_and(|at| (0..self.segments.len()).any(|i| at.reached[i] && at.by_name[i]))
    }

    /// The states the automaton is in after reading `path`, or `None` when no state is
    /// left or the path is not a relative one.
    fn walk(&self, path: &str) -> Option<States> {
        let mut at = States::start(&self.segments);
        for name in path.split('/') {
            if matches!(name, "" | "." | "..") {
                return None;
            }
            at = at.step(&self.segments, name);
            if !at.reached.contains(&true) {
                return None;
            }
        }
        Some(at)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(text)
    }
}

/// Which segments of a pattern the path read so far can end before (`reached[i]`: the
/// next path segment is read by segment `i`; `reached[len]`: the whole pattern matched),
/// and whether that state was reached by matching the last path segment with a name.
struct States {
    reached: Vec<bool>,
    by_name: Vec<bool>,
}

impl States {
    fn start(segments: &[Segment]) -> States {
        let mut states = States {
            reached: vec![false; segments.len() + 1],
            by_name: vec![false; segments.len() + 1],
        };
        states.reached[0] = true;
        states.skip_any_depth(segments);
        states
    }

    fn step(&self, segments: &[Segment], name: &str) -> States {
        let mut next = States {
            reached: vec![false; segments.len() + 1],
            by_name: vec![false; segments.len() + 1],
        };
        for (i, segment) in segments
            .iter()
            .enumerate()
            .filter(|(i, _)| self.reached[*i])
        {
            match segment {
                Segment::AnyDepth { rest } if !name.starts_with('.') => {
                    next.reached[i] = true;
                    next.by_name[i] |= rest;
                }
                Segment::AnyDepth { .. } => {}
                Segment::Name(tokens) if name_matches(tokens, name) => {
                    next.reached[i + 1] = true;
                    next.by_name[i + 1] = true;
                }
                Segment::Name(_) => {}
            }
        }
        next.skip_any_depth(segments);
        next
    }

    /// `**` may match no segment: where it begins, the segment after it begins too.
    fn skip_any_depth(&mut self, segments: &[Segment]) {
        for (i, segment) in segments.iter().enumerate() {
            if self.reached[i] && segment.is_any_depth() {
                self.reached[i + 1] = true;
                self.by_name[i + 1] |= self.by_name[i];
            }
        }
    }
}

impl Segment {
    fn is_any_depth(&self) -> bool {
        matches!(self, Segment::AnyDepth { .. })
    }
}

/// The tokens of one segment; `column` is where it starts in the pattern, for errors.
fn tokens(segment: &str, column: usize) -> Result<Vec<Token>, PatternError> {
    let chars: Vec<char> = segment.chars().collect();
    let mut tokens = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => tokens.push(Token::AnyRun),
            '?' => tokens.push(Token::AnyChar),
            '[' => {
                let (class, end) =
                    class(&chars, i).ok_or(PatternError::UnclosedBracket { at: column + i })??;
                tokens.push(class);
                i = end;
            }
            c => tokens.push(Token::Char(c)),
        }
        i += 1;
    }
    Ok(tokens)
}

/// The class that opens at `chars[open]` and the index of its `]`, `None` when it is never
/// closed. A `]` right after `[` or `[!` is itself a member; so is a `-` first or last.
fn class(chars: &[char], open: usize) -> Option<Result<(Token, usize), PatternError>> {
    let mut i = open + 1;
    let negated = matches!(chars.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let first = i;
    let mut ranges = Vec::new();
    loop {
        let c = *chars.get(i)?;
        if c == ']' && i > first {
            return Some(Ok((Token::Class { negated, ranges }, i)));
        }
        match (chars.get(i + 1), chars.get(i + 2)) {
            (Some('-'), Some(&to)) if to != ']' => {
                if to < c {
                    return Some(Err(PatternError::ReversedRange { from: c, to }));
                }
                ranges.push((c, to));
                i += 3;
            }
            _ => {
                ranges.push((c, c));
                i += 1;
            }
        }
    }
}

/// Whether one path segment matches the tokens: an automaton over the tokens' positions,
/// one step per character. A hidden name needs a pattern segment starting with `.`.
fn name_matches(tokens: &[Token], name: &str) -> bool {
    if name.starts_with('.') && tokens.first() != Some(&Token::Char('.')) {
        return false;
    }
    let skip_runs = |at: &mut [bool]| {
        for (i, token) in tokens.iter().enumerate() {
            if at[i] && *token == Token::AnyRun {
                at[i + 1] = true;
            }
        }
    };
    let mut at = vec![false; tokens.len() + 1];
    at[0] = true;
    skip_runs(&mut at);
    for c in name.chars() {
        let mut next = vec![false; tokens.len() + 1];
        for (i, token) in tokens.iter().enumerate().filter(|(i, _)| at[*i]) {
            match token {
                Token::AnyRun => next[i] = true,
                Token::AnyChar => next[i + 1] = true,
                Token::Char(want) => next[i + 1] |= *want == c,
                Token::Class { negated, ranges } => {
                    next[i + 1] |= ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                }
            }
        }
        skip_runs(&mut next);
        if !next.contains(&true) {
            return false;
        }
        at = next;
    }
    at[tokens.len()]
}

#[cfg(test)]
mod tests;
