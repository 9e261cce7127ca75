//! Where a failure happened, found in its text: the first source location that looks like
//! the project's own code, in the forms test tools print them —
//!
//! | tool                  | form                                            |
//! |-----------------------|-------------------------------------------------|
//! | Python tracebacks     | `File "tests/test_x.py", line 12, in test_x`    |
//! | pytest                | `tests/test_x.py:12: AssertionError`            |
//! | Go `testing`          | `    x_test.go:12: want 1, got 2`, panics' `/src/x_test.go:12 +0x1d` |
//! | Java, Kotlin, Scala   | `at com.x.FooTest.bar(FooTest.java:12)` (the file as given) |
//! | Rust panics           | `panicked at src/lib.rs:12:5:`                  |
//! | JavaScript            | `at Object.<anonymous> (src/x.test.js:12:5)`    |
//! | PHPUnit               | `/app/tests/XTest.php:12`                       |
//!
//! A path must end in a source file's extension. Locations in code that is obviously not
//! the project's are passed over: installed packages (`site-packages/`, `node_modules/`,
//! `/go/pkg/mod/`, `.cargo/registry/`), the language's own library (`/usr/lib/`,
//! `/usr/local/go/`, `/rustc/`, Python's `lib/python3.x/`) and, in Java stack traces,
//! frames of the JDK and of test frameworks (`java.`, `org.junit.`, `org.assertj.`, …).

/// A source file and a line in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// As the text gives it (relative, absolute, or a bare file name for Java frames).
    pub file: String,
    /// From 1.
    pub line: u32,
}

/// The first location in `text` in the project's own code.
pub fn find_location(text: &str) -> Option<Location> {
    locations(text).next()
}

/// The line of the first location in `text` in `file` (the same path, or one ending with
/// it or it ending with the location's: a report's `file="tests/x.php"` matches
/// `/app/tests/x.php:12`).
pub fn find_line_in(text: &str, file: &str) -> Option<u32> {
    let file = file.trim_start_matches("./");
    locations(text)
        .find(|l| same_file(&l.file, file))
        .map(|l| l.line)
}

fn same_file(a: &str, b: &str) -> bool {
    let ends = |long: &str, short: &str| {
        long.strip_suffix(short)
            .is_some_and(|head| head.is_empty() || head.ends_with('/'))
    };
    ends(a, b) || ends(b, a)
}

/// Every location in the project's own code in `text`, in order.
fn locations(text: &str) -> impl Iterator<Item = Location> + '_ {
    text.lines().flat_map(in_line)
}

fn in_line(line: &str) -> Vec<Location> {
    let mut found = Vec::new();
    if let Some(location) = python_frame(line) {
        if !is_foreign_path(&location.file) {
            found.push(location);
        }
        return found;
    }
    let bytes = line.as_bytes();
    for (colon, _) in line.match_indices(':') {
        let Some((file, start)) = path_before(line, colon) else {
            continue;
        };
        let Some(number) = line_number_after(bytes, colon) else {
            continue;
        };
        if is_foreign_path(file) || is_foreign_frame(&line[..start]) {
            continue;
        }
        found.push(Location {
            file: normalize(file),
            line: number,
        });
    }
    found
}

/// `File "PATH", line N` (a Python traceback's frame).
fn python_frame(line: &str) -> Option<Location> {
    let rest = &line[line.find("File \"")? + 6..];
    let (file, rest) = rest.split_once('"')?;
    let rest = rest.strip_prefix(", line ")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let number = rest[..digits].parse().ok().filter(|n| *n > 0)?;
    Some(Location {
        file: normalize(file),
        line: number,
    })
}

/// The path that ends just before `colon`, with a source file's extension, and where it
/// starts.
fn path_before(line: &str, colon: usize) -> Option<(&str, usize)> {
    let head = &line[..colon];
    let start = head
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_path_char(*c))
        .last()
        .map(|(i, _)| i)?;
    let path = &head[start..];
    let name = path.rsplit(['/', '\\']).next()?;
    let (stem, extension) = name.rsplit_once('.')?;
    (!stem.is_empty() && SOURCE_EXTENSIONS.contains(&extension)).then_some((path, start))
}

fn is_path_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | '\\' | '@' | '+' | '~' | '$')
}

/// `N` after the colon, ended by another colon, a space, `)`, `,` or the line's end.
fn line_number_after(bytes: &[u8], colon: usize) -> Option<u32> {
    let rest = &bytes[colon + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let ends_well = match rest.get(digits) {
        None => true,
        Some(b) => matches!(b, b':' | b')' | b',' | b']') || b.is_ascii_whitespace(),
    };
    let number: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    (ends_well && number > 0).then_some(number)
}

fn normalize(file: &str) -> String {
    let file = file.strip_prefix("file://").unwrap_or(file);
    let file = if file.starts_with("///") {
        &file[2..]
    } else {
        file
    };
    file.trim_start_matches("./").to_string()
}

const SOURCE_EXTENSIONS: &[&str] = &[
    "py", "go", "rs", "java", "kt", "kts", "scala", "groovy", "js", "jsx", "mjs", "cjs", "ts",
    "tsx", "mts", "cts", "php", "rb", "c", "cc", "cpp", "cxx", "h", "hh", "hpp", "cs", "fs",
    "swift", "m", "mm", "ex", "exs", "erl", "dart", "lua", "pl", "pm", "sh", "vue", "svelte",
    "clj", "zig", "jl", "hs", "ml", "feature", "robot",
];

/// Installed packages and the languages' own libraries.
const FOREIGN_PATHS: &[&str] = &[
    "site-packages/",
    "dist-packages/",
    "node_modules/",
    "/usr/lib/",
    "/usr/local/lib/",
    "/usr/share/",
    "/usr/local/go/",
    "/go/pkg/mod/",
    "/hostedtoolcache/",
    "/rustc/",
    ".cargo/registry/",
    ".cargo/git/",
    ".rustup/",
    "<frozen ",
];

fn is_foreign_path(file: &str) -> bool {
    FOREIGN_PATHS.iter().any(|p| file.contains(p)) || is_python_stdlib(file)
}

/// `…/lib/python3.11/unittest/case.py`: Python's own library wherever it is installed.
fn is_python_stdlib(file: &str) -> bool {
    file.split_once("/lib/python")
        .is_some_and(|(_, rest)| rest.starts_with(|c: char| c.is_ascii_digit()))
}

/// The JDK's and test frameworks' packages, in a Java stack trace's `at PACKAGE.Class.m(`.
const FOREIGN_FRAMES: &[&str] = &[
    "java.",
    "javax.",
    "jdk.",
    "sun.",
    "com.sun.",
    "kotlin.",
    "kotlinx.",
    "scala.",
    "junit.",
    "org.junit.",
    "org.opentest4j.",
    "org.assertj.",
    "org.hamcrest.",
    "org.testng.",
    "org.mockito.",
    "org.spockframework.",
    "io.kotest.",
    "com.google.common.truth.",
    "org.apache.maven.",
    "org.gradle.",
];

/// Whether the text before a location is a Java frame (`at PACKAGE.Class.method(`) of the
/// JDK or a test framework.
fn is_foreign_frame(before: &str) -> bool {
    let Some(frame) = before.strip_suffix('(') else {
        return false;
    };
    let Some(at) = frame.rfind("at ") else {
        return false;
    };
    let frame = frame[at + 3..].trim();
    // A module or class loader may come first: `java.base/java.lang.Thread`, `app//com.x`.
    let frame = frame.rsplit('/').next().unwrap_or(frame);
    FOREIGN_FRAMES.iter().any(|p| frame.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(file: &str, line: u32) -> Option<Location> {
        Some(Location {
            file: file.into(),
            line,
        })
    }

    #[test]
    fn each_tools_form_is_found() {
        let cases = [
            (
                "Traceback (most recent call last):\n  File \"/usr/lib/python3.11/unittest/case.py\", line 57, in testPartExecutor\n  File \"tests/test_x.py\", line 12, in test_x\n    assert f() == 2\nAssertionError",
                at("tests/test_x.py", 12),
            ),
            (
                "    def test_fails():\n>       assert add(1, 2) == 4\nE       assert 3 == 4\n\ntests/test_sample.py:13: AssertionError",
                at("tests/test_sample.py", 13),
            ),
            (
                "=== RUN   TestAdd\n    calc_test.go:14: Add(1, 2) = 3, want 4\n--- FAIL: TestAdd (0.00s)",
                at("calc_test.go", 14),
            ),
            (
                "panic: boom\n\ngoroutine 4 [running]:\ntesting.tRunner.func1.2({0x55a7a0, 0x6cae30})\n\t/usr/local/go/src/testing/testing.go:1974 +0x232\nexample.com/demo/crash.TestPanics(0x9c7a1ef2908?)\n\t/tmp/m/crash/crash_test.go:9 +0x28",
                at("/tmp/m/crash/crash_test.go", 9),
            ),
            (
                "org.opentest4j.AssertionFailedError: expected: <4> but was: <3>\n\tat org.junit.jupiter.api.AssertionUtils.fail(AssertionUtils.java:151)\n\tat java.base/java.lang.reflect.Method.invoke(Method.java:580)\n\tat app//com.example.CalcTest.adds(CalcTest.kt:21)",
                at("CalcTest.kt", 21),
            ),
            (
                "thread 'tests::adds' panicked at src/lib.rs:12:5:\nassertion `left == right` failed\nnote: run with `RUST_BACKTRACE=1`",
                at("src/lib.rs", 12),
            ),
            (
                "/rustc/90b35a6239c3d8bdabc530a6a0816f7ff89a0aaf/library/core/src/panicking.rs:75:14\nthread 'main' panicked at tests/it.rs:40:9:",
                at("tests/it.rs", 40),
            ),
            (
                "Error: expect(received).toBe(expected)\n    at Object.toBe (/home/u/proj/node_modules/expect/build/index.js:1:1)\n    at Object.<anonymous> (/home/u/proj/src/sum.test.js:9:17)",
                at("/home/u/proj/src/sum.test.js", 9),
            ),
            (
                "Tests\\CalcTest::testSub\nFailed asserting that 1 matches expected 2.\n\n/app/tests/CalcTest.php:20",
                at("/app/tests/CalcTest.php", 20),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(find_location(text), expected, "{text}");
        }
    }

    #[test]
    fn what_only_looks_like_a_location_is_not_one() {
        for text in [
            "connecting to http://example.com:8080/path failed",
            "at 12:30:00 the clock struck",
            "version 1.2:3",
            "see README.md: it says",
            "ratio 3.5:1",
            "  File \"/root/.pyenv/versions/3.11.7/lib/python3.11/site-packages/_pytest/x.py\", line 3",
            "\tat java.base/java.lang.Thread.run(Thread.java:1583)",
            "x.go:0: no line 0",
        ] {
            assert_eq!(find_location(text), None, "{text}");
        }
    }

    #[test]
    fn a_reports_file_picks_its_line_out_of_the_text() {
        let text = "/app/src/Calc.php:15\n/app/tests/CalcTest.php:26";
        assert_eq!(find_line_in(text, "tests/CalcTest.php"), Some(26));
        assert_eq!(find_line_in(text, "./tests/CalcTest.php"), Some(26));
        assert_eq!(find_line_in(text, "CalcTest.php"), Some(26));
        assert_eq!(find_line_in(text, "sts/CalcTest.php"), None);
        assert_eq!(find_line_in(text, "tests/Other.php"), None);
    }
}
