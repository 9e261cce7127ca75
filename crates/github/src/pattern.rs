//! Matching what a job's spec asks for against what GitHub sends, in time bounded by their
//! sizes: a webhook's decision runs on the server's async workers, so none may run long
//! (issue 27 finding 2: a branch pattern matched by backtracking took 13 s for one push).

/// Whether `branch` matches a `triggers.push.branches` pattern: `*` within a path segment,
/// `**` across segments, every other byte itself.
///
/// Runs the pattern as an automaton over its positions, one step per byte of the branch:
/// O(len(pattern) × len(branch)) whatever either holds.
pub fn branch_matches(pattern: &str, branch: &str) -> bool {
    let tokens = tokens(pattern.as_bytes());
    // `at[i]`: the branch read so far can end where token `i` begins.
    let mut at = vec![false; tokens.len() + 1];
    at[0] = true;
    skip_stars(&tokens, &mut at);
    for &byte in branch.as_bytes() {
        let mut next = vec![false; tokens.len() + 1];
        for (i, token) in tokens.iter().enumerate().filter(|(i, _)| at[*i]) {
            match token {
                Token::AnyAcross => next[i] = true,
                Token::AnyWithin if byte != b'/' => next[i] = true,
                Token::AnyWithin => {}
                Token::Byte(b) if *b == byte => next[i + 1] = true,
                Token::Byte(_) => {}
            }
        }
        skip_stars(&tokens, &mut next);
        if !next.contains(&true) {
            return false;
        }
        at = next;
    }
    at[tokens.len()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `**`
    AnyAcross,
    /// `*`
    AnyWithin,
    Byte(u8),
}

/// The pattern's tokens, `**` read before `*` from the left (`***` is `**` then `*`).
fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut tokens = Vec::with_capacity(pattern.len());
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i..] {
            [b'*', b'*', ..] => {
                tokens.push(Token::AnyAcross);
                i += 2;
            }
            [b'*', ..] => {
                tokens.push(Token::AnyWithin);
                i += 1;
            }
            _ => {
                tokens.push(Token::Byte(pattern[i]));
                i += 1;
            }
        }
    }
    tokens
}

/// A wildcard may match nothing: where one begins, the token after it begins too.
fn skip_stars(tokens: &[Token], at: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if at[i] && matches!(token, Token::AnyAcross | Token::AnyWithin) {
            at[i + 1] = true;
        }
    }
}

/// Whether a job's `phrase` (a case-insensitive regular expression) is found in `text`.
/// Compiled under [`kubeci_spec::validate::PHRASE_SIZE_LIMIT`] (a phrase over it is an
/// error in the spec, and matches nothing here); regex-lite searches with a Pike VM, in
/// time linear in the text for a bounded program.
pub fn phrase_matches(phrase: &str, text: &str) -> bool {
    kubeci_spec::validate::phrase_regex(phrase).is_ok_and(|re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backtracking matcher `branch_matches` replaced (exponential in the number of
    /// `*`), kept as the definition the automaton must agree with.
    fn by_backtracking(p: &[u8], b: &[u8]) -> bool {
        match p {
            [] => b.is_empty(),
            [b'*', b'*', rest @ ..] => (0..=b.len()).any(|i| by_backtracking(rest, &b[i..])),
            [b'*', rest @ ..] => (0..=b.len())
                .take_while(|&i| i == 0 || b[i - 1] != b'/')
                .any(|i| by_backtracking(rest, &b[i..])),
            [c, rest @ ..] => b.first() == Some(c) && by_backtracking(rest, &b[1..]),
        }
    }

    /// Every string of up to `len` bytes over `alphabet`.
    fn all_strings(alphabet: &[u8], len: usize) -> Vec<Vec<u8>> {
        let mut all = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..len {
            last = last
                .iter()
                .flat_map(|s: &Vec<u8>| {
                    alphabet.iter().map(move |c| {
                        let mut longer = s.clone();
                        longer.push(*c);
                        longer
                    })
                })
                .collect();
            all.extend(last.iter().cloned());
        }
        all
    }

    /// Pushed branches of 60 `a`s against `*a*a*a*a*a*a*a*b` took 13 s each by
    /// backtracking, and two such pushes stopped `/healthz` for 95 s. Before the automaton
    /// this test ran for minutes (stopped after 120 s); it takes milliseconds now. No
    /// timing is asserted: the answers are, and a hang fails the run.
    #[test]
    fn a_hostile_branch_pattern_answers_at_once() {
        let branch = "a".repeat(60);
        assert!(!branch_matches("*a*a*a*a*a*a*a*b", &branch));
        assert!(branch_matches("*a*a*a*a*a*a*a*a", &branch));
        assert!(!branch_matches("**a**a**a**a**a**a**a**b", &branch));
        assert!(branch_matches("**a**a**a**a**a**a**a**", &branch));
        let long = format!("{}/{}", "a".repeat(5_000), "a".repeat(5_000));
        assert!(
            !branch_matches(&"*a".repeat(200), &long),
            "`*` stays in a segment"
        );
        assert!(branch_matches(&"**a".repeat(200), &long));
    }

    /// The automaton answers as backtracking does, for every pattern and branch of a
    /// few bytes over `*`, `/`, `a`, `b`.
    #[test]
    fn the_automaton_agrees_with_backtracking_everywhere_small() {
        let patterns = all_strings(b"*/ab", 5);
        let branches = all_strings(b"/ab", 5);
        for pattern in &patterns {
            for branch in &branches {
                let (p, b) = (
                    std::str::from_utf8(pattern).unwrap(),
                    std::str::from_utf8(branch).unwrap(),
                );
                assert_eq!(
                    branch_matches(p, b),
                    by_backtracking(pattern, branch),
                    "{p:?} against {b:?}"
                );
            }
        }
    }

    /// A phrase is searched for in every comment: one that compiles past
    /// `PHRASE_SIZE_LIMIT` matches nothing (the spec refuses it), so a long comment is
    /// never searched by a huge program; phrases as written match as before.
    #[test]
    fn phrases_match_case_insensitively_within_their_size_bound() {
        let comment = format!("{} Test  This Please", "x".repeat(65_536));
        assert!(phrase_matches(r".*test\W+this\W+please.*", &comment));
        assert!(!phrase_matches(r".*retest.*", &comment));
        assert!(!phrase_matches(r"(?:.{0,2000})please", &comment));
        assert!(!phrase_matches(r"(unclosed", &comment));
    }

    #[test]
    fn branch_patterns_as_documented() {
        for (pattern, branch, matches) in [
            ("main", "main", true),
            ("main", "main2", false),
            ("release/*", "release/1.2", true),
            ("release/*", "release/1.2/rc", false),
            ("release/*", "release/", true),
            ("hotfix/**", "hotfix/a/b", true),
            ("**", "", true),
            ("*", "a/b", false),
            ("feature-*-x", "feature-é-x", true),
            ("***", "a/b", true),
        ] {
            assert_eq!(
                branch_matches(pattern, branch),
                matches,
                "{pattern} {branch}"
            );
        }
    }
}
