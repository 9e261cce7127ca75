use super::*;

fn pattern(text: &str) -> Pattern {
    Pattern::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

fn check(text: &str, cases: &[(&str, bool)]) {
    let p = pattern(text);
    for (path, expected) in cases {
        assert_eq!(p.matches(path), *expected, "{text:?} against {path:?}");
    }
}

#[test]
fn the_issue_examples_match_what_they_say() {
    check(
        "**/junit*.xml",
        &[
            ("junit.xml", true),
            ("junit-unit.xml", true),
            ("target/junit.xml", true),
            ("a/b/c/junit-e2e.xml", true),
            ("junit.xml.bak", false),
            ("report.xml", false),
            ("a/junit/report.xml", false),
        ],
    );
    check(
        "target/nextest/**/*.xml",
        &[
            ("target/nextest/junit.xml", true),
            ("target/nextest/ci/junit.xml", true),
            ("target/nextest/ci/deep/x.xml", true),
            ("target/nextest", false),
            ("target/junit.xml", false),
            ("other/target/nextest/junit.xml", false),
        ],
    );
    check(
        "dist/*.tar.gz",
        &[
            ("dist/kubeci-1.0.tar.gz", true),
            ("dist/.tar.gz", false),
            ("dist/sub/a.tar.gz", false),
            ("dist/a.tar.gz.sha256", false),
            ("a.tar.gz", false),
        ],
    );
    let coverage = pattern("coverage/");
    assert!(coverage.is_dir());
    for (path, expected) in [
        ("coverage/index.html", true),
        ("coverage/lcov-report/src/a.js.html", true),
        ("coverage", false),
        ("coverage.txt", false),
        ("coverage2/index.html", false),
        ("src/coverage/index.html", false),
    ] {
        assert_eq!(coverage.matches(path), expected, "coverage/ against {path}");
    }
}

#[test]
fn star_stays_within_one_segment() {
    check(
        "*.xml",
        &[
            ("a.xml", true),
            (".xml", false),
            ("a/b.xml", false),
            ("xml", false),
        ],
    );
    check(
        "a*b",
        &[
            ("ab", true),
            ("axxb", true),
            ("a/b", false),
            ("ax/b", false),
        ],
    );
    check("*/*", &[("a/b", true), ("a", false), ("a/b/c", false)]);
    check("*", &[("a", true), ("a/b", false)]);
    check(
        "a/*/c",
        &[("a/b/c", true), ("a/c", false), ("a/b/b/c", false)],
    );
}

#[test]
fn globstar_at_the_start_middle_and_end() {
    check(
        "**/x",
        &[
            ("x", true),
            ("a/x", true),
            ("a/b/x", true),
            ("xa", false),
            ("a/xb", false),
        ],
    );
    check(
        "a/**/b",
        &[
            ("a/b", true),
            ("a/x/b", true),
            ("a/x/y/b", true),
            ("a/b/b", true),
            ("b", false),
            ("a/x/y/c", false),
            ("x/a/b", false),
        ],
    );
    check(
        "a/**",
        &[("a/x", true), ("a/x/y", true), ("a", false), ("b/x", false)],
    );
    check("**", &[("x", true), ("a/b/c", true)]);
    check(
        "**/a/**/b/**",
        &[
            ("a/b/c", true),
            ("x/a/y/b/z/w", true),
            ("a/b", false),
            ("b/a/c", false),
        ],
    );
    assert_eq!(
        pattern("a/**/**/b"),
        pattern("a/**/b").with_text("a/**/**/b")
    );
}

impl Pattern {
    fn with_text(mut self, text: &str) -> Pattern {
        self.text = text.into();
        self
    }
}

#[test]
fn question_marks_and_classes() {
    check(
        "a?c",
        &[
            ("abc", true),
            ("ac", false),
            ("a/c", false),
            ("abbc", false),
        ],
    );
    check(
        "[abc].txt",
        &[
            ("a.txt", true),
            ("c.txt", true),
            ("d.txt", false),
            ("ab.txt", false),
        ],
    );
    check(
        "report-[0-9][0-9].xml",
        &[
            ("report-07.xml", true),
            ("report-7.xml", false),
            ("report-ab.xml", false),
        ],
    );
    check("[!a]x", &[("bx", true), ("ax", false), ("x", false)]);
    check("[^a]x", &[("bx", true), ("ax", false)]);
    check("[]]", &[("]", true), ("a", false)]);
    check("[!]]", &[("a", true), ("]", false)]);
    check("[a-]", &[("a", true), ("-", true), ("b", false)]);
    check("[*]", &[("*", true), ("a", false)]);
    check("[?][[]", &[("?[", true), ("a[", false)]);
    check("é*", &[("été.xml", true), ("ete.xml", false)]);
    check("?.xml", &[("é.xml", true)]);
    check("a]b", &[("a]b", true)]);
}

/// Hidden names (starting with `.`) are taken only where the pattern writes the `.`, so no
/// wildcard ships `.git/config` or `.npmrc` by accident.
#[test]
fn hidden_names_need_a_literal_dot() {
    check(
        "**/*.xml",
        &[
            ("a.xml", true),
            (".a.xml", false),
            (".git/a.xml", false),
            ("src/.cache/a.xml", false),
        ],
    );
    check("?git/config", &[(".git/config", false)]);
    check("[.]git", &[(".git", false)]);
    check(".git/config", &[(".git/config", true)]);
    check(
        ".coverage/*",
        &[(".coverage/a", true), (".coverage/.b", false)],
    );
    check(
        "**/.report.xml",
        &[("a/.report.xml", true), (".report.xml", true)],
    );
    check(
        "coverage/",
        &[
            ("coverage/.nyc/a", false),
            ("coverage/.hidden", false),
            ("coverage/a.html", true),
        ],
    );
    check(".*", &[(".env", true), ("env", false)]);
}

#[test]
fn paths_that_are_not_relative_match_nothing() {
    let all = pattern("**");
    for path in ["", "/", "/a", "a//b", "./a", "a/../b", "..", "a/"] {
        assert!(!all.matches(path), "{path:?}");
    }
}

#[test]
fn invalid_patterns_say_why() {
    let long = "a".repeat(MAX_PATTERN_CHARS + 1);
    for (text, error) in [
        ("", PatternError::Empty),
        (long.as_str(), PatternError::TooLong { chars: 257 }),
        ("a\0b", PatternError::ControlCharacter { ch: '\0' }),
        ("a\nb", PatternError::ControlCharacter { ch: '\n' }),
        ("a\\b", PatternError::Backslash),
        ("/etc/passwd", PatternError::Absolute),
        (
            "../secret",
            PatternError::DotSegment {
                segment: "..".into(),
            },
        ),
        (
            "a/../../b",
            PatternError::DotSegment {
                segment: "..".into(),
            },
        ),
        (
            "./dist/*",
            PatternError::DotSegment {
                segment: ".".into(),
            },
        ),
        ("a//b", PatternError::EmptySegment),
        ("a//", PatternError::EmptySegment),
        (
            "a**b",
            PatternError::StarStarInSegment {
                segment: "a**b".into(),
            },
        ),
        (
            "***",
            PatternError::StarStarInSegment {
                segment: "***".into(),
            },
        ),
        ("a/[bc", PatternError::UnclosedBracket { at: 3 }),
        ("[]", PatternError::UnclosedBracket { at: 1 }),
        ("[!]", PatternError::UnclosedBracket { at: 1 }),
        ("a[b/c]", PatternError::UnclosedBracket { at: 2 }),
        ("[z-a]", PatternError::ReversedRange { from: 'z', to: 'a' }),
    ] {
        assert_eq!(Pattern::parse(text), Err(error.clone()), "{text:?}");
        assert!(!error.to_string().is_empty() && !error.help().is_empty());
    }
    assert!(
        Pattern::parse(&"é".repeat(MAX_PATTERN_CHARS)).is_ok(),
        "characters, not bytes"
    );
    assert_eq!(
        PatternError::UnclosedBracket { at: 3 }.to_string(),
        "the `[` at character 3 is never closed"
    );
}

#[test]
fn a_walker_can_skip_directories_no_pattern_reaches() {
    let dist = pattern("dist/*.tar.gz");
    assert!(dist.may_match_under("dist"));
    assert!(!dist.may_match_under("src"));
    assert!(!dist.may_match_under("dist/sub"), "`*` does not go deeper");
    let reports = pattern("**/junit*.xml");
    assert!(reports.may_match_under("a") && reports.may_match_under("a/b/c"));
    assert!(
        !reports.may_match_under(".git"),
        "hidden directories are not entered"
    );
    let nextest = pattern("target/nextest/**/*.xml");
    assert!(nextest.may_match_under("target") && nextest.may_match_under("target/nextest/x"));
    assert!(!nextest.may_match_under("target/debug"));
    let coverage = pattern("coverage/");
    assert!(coverage.may_match_under("coverage") && coverage.may_match_under("coverage/a"));
    assert!(!coverage.may_match_under("src"));
}

#[test]
fn directories_are_named_by_names_not_by_globstar() {
    assert!(pattern("coverage/").names_dir("coverage"));
    assert!(pattern("coverage/*.html").names_dir("coverage"));
    assert!(pattern("*/lcov.info").names_dir("coverage"));
    assert!(pattern("**/coverage/").names_dir("a/b/coverage"));
    assert!(!pattern("**/junit.xml").names_dir("node_modules"));
    assert!(!pattern("**/junit.xml").names_dir("a/b"));
    assert!(
        pattern("coverage/").names_dir("coverage/a/b"),
        "every file under it"
    );
    assert!(pattern("**").names_dir("a/b"), "every file");
    assert!(
        !pattern("a/**/x.xml").names_dir("a/b"),
        "passed through, not named"
    );
    assert!(pattern("a/**/b/*.xml").names_dir("a/x/b"));
    assert!(!pattern("dist/*.tar.gz").names_dir("src"));
}

/// A hostile pattern against a long path answers at once: the automaton's steps are
/// bounded by the sizes (no timing asserted; a backtracking matcher would hang here).
#[test]
fn hostile_patterns_answer_at_once() {
    let name = "a".repeat(200);
    let path = vec![name.as_str(); 40].join("/");
    let stars = format!("{}b", "*a".repeat(60));
    assert!(!pattern(&stars).matches(&name));
    let deep = ["**/a*a*a*a*a*a*a*a*b"; 12].join("/");
    assert!(!pattern(&deep).matches(&path));
    let deep_match = ["**/a*a*a*a*a*a*a*a"; 12].join("/");
    assert!(pattern(&deep_match).matches(&path));
}

/// The definition the automaton must agree with: backtracking over segments, then over
/// characters, with the same hidden-name rule.
fn by_backtracking(segments: &[&str], names: &[&str]) -> bool {
    match segments {
        [] => names.is_empty(),
        ["**", rest @ ..] => (0..=names.len())
            .take_while(|&i| i == 0 || !names[i - 1].starts_with('.'))
            .any(|i| by_backtracking(rest, &names[i..])),
        [first, rest @ ..] => {
            names.first().is_some_and(|name| {
                (!name.starts_with('.') || first.starts_with('.'))
                    && chars_by_backtracking(first.as_bytes(), name.as_bytes())
            }) && by_backtracking(rest, &names[1..])
        }
    }
}

fn chars_by_backtracking(p: &[u8], n: &[u8]) -> bool {
    match p {
        [] => n.is_empty(),
        [b'*', rest @ ..] => (0..=n.len()).any(|i| chars_by_backtracking(rest, &n[i..])),
        [b'?', rest @ ..] => !n.is_empty() && chars_by_backtracking(rest, &n[1..]),
        [c, rest @ ..] => n.first() == Some(c) && chars_by_backtracking(rest, &n[1..]),
    }
}

/// Every pattern of up to three segments over a few names (with `*`, `?`, `**`, hidden
/// ones) against every path of up to three segments: the automaton answers as
/// backtracking does.
#[test]
fn the_automaton_agrees_with_backtracking() {
    let parts = ["a", "*", "**", "?", ".a", ".*", "a*", "*b"];
    let names = ["a", "b", "ab", ".a", "ba"];
    let mut patterns: Vec<Vec<&str>> = vec![vec![]];
    let mut paths: Vec<Vec<&str>> = vec![vec![]];
    for _ in 0..3 {
        patterns = patterns
            .iter()
            .flat_map(|p| {
                parts
                    .iter()
                    .map(move |part| [p.clone(), vec![*part]].concat())
            })
            .chain(patterns.iter().cloned())
            .collect();
        paths = paths
            .iter()
            .flat_map(|p| {
                names
                    .iter()
                    .map(move |name| [p.clone(), vec![*name]].concat())
            })
            .chain(paths.iter().cloned())
            .collect();
    }
    patterns.sort();
    patterns.dedup();
    paths.sort();
    paths.dedup();
    for segments in patterns.iter().filter(|p| !p.is_empty()) {
        // A trailing `**` is "every file under": backtracking needs one segment more.
        let text = segments.join("/");
        let parsed = pattern(&text);
        let reference: Vec<&str> = if segments.last() == Some(&"**") {
            [&segments[..], &["*"]].concat()
        } else {
            segments.clone()
        };
        for path in paths.iter().filter(|p| !p.is_empty()) {
            assert_eq!(
                parsed.matches(&path.join("/")),
                by_backtracking(&reference, path),
                "{text:?} against {path:?}"
            );
        }
    }
}
