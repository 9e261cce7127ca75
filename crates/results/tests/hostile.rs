//! Huge, hostile and broken files: each is refused or read in part with an error that says
//! where and why (the text a build's page shows beside the file), never a panic, and the
//! cases read before a break are kept.

use std::io::{BufReader, Read};

use kubeci_results::{
    read_junit, summarize, JunitError, JunitLimits, Outcome, Position, ResultsBuilder, TestCase,
    MAX_LISTED_CASE_BYTES, MAX_TEXT_BYTES,
};

/// The cases read from `xml` and how the reading ended.
fn read(xml: &[u8], limits: &JunitLimits) -> (Vec<TestCase>, Result<u64, JunitError>) {
    let mut cases = Vec::new();
    let result = read_junit(xml, "report.xml", limits, &mut |c| cases.push(c)).map(|f| f.cases);
    (cases, result)
}

fn error_of(xml: &[u8]) -> JunitError {
    match read(xml, &JunitLimits::default()).1 {
        Ok(cases) => panic!("read {cases} cases from {}", String::from_utf8_lossy(xml)),
        Err(error) => error,
    }
}

fn position(line: u64, column: u64) -> Position {
    Position { line, column }
}

/// A reader of a prefix, then `filler` repeated `times`, then a suffix, made as it is read,
/// that counts the bytes taken from it.
struct Generated {
    parts: Vec<(Vec<u8>, u64)>,
    offset: usize,
    taken: std::rc::Rc<std::cell::Cell<u64>>,
}

impl Generated {
    fn new(parts: Vec<(&[u8], u64)>) -> Self {
        Generated {
            parts: parts.into_iter().map(|(b, n)| (b.to_vec(), n)).collect(),
            offset: 0,
            taken: Default::default(),
        }
    }
}

impl Read for Generated {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let Some((bytes, times)) = self.parts.first_mut() else {
            return Ok(0);
        };
        let n = (bytes.len() - self.offset).min(out.len());
        out[..n].copy_from_slice(&bytes[self.offset..self.offset + n]);
        self.offset += n;
        if self.offset == bytes.len() {
            self.offset = 0;
            *times -= 1;
            if *times == 0 {
                self.parts.remove(0);
            }
        }
        self.taken.set(self.taken.get() + n as u64);
        Ok(n)
    }
}

#[test]
fn a_billion_laughs_is_refused_at_its_doctype_before_the_rest_is_read() {
    let bomb = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<testsuite name="&lol9;"><testcase name="&lol9;">&lol9;</testcase></testsuite>
"#;
    let error = error_of(bomb);
    assert!(
        matches!(error, JunitError::Doctype { at } if at == position(2, 1)),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "refused: a DOCTYPE declaration at line 2, column 1; JUnit reports have none, and \
         kubeci expands no entity but XML's five (&lt; &gt; &amp; &quot; &apos;) and character \
         references"
    );
    // Refused where it stands: of a DOCTYPE followed by 100 MB, one chunk is read.
    let generated = Generated::new(vec![
        (b"<!DOCTYPE x [", 1),
        (
            b"<!ENTITY a \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\">\n",
            2_000_000,
        ),
    ]);
    let taken = generated.taken.clone();
    let (cases, result) = {
        let mut cases = Vec::new();
        let r = read_junit(
            BufReader::new(generated),
            "x.xml",
            &JunitLimits::default(),
            &mut |c| cases.push(c),
        );
        (cases, r)
    };
    assert!(matches!(result, Err(JunitError::Doctype { .. })));
    assert!(cases.is_empty());
    assert!(taken.get() <= 128 * 1024, "{} bytes read", taken.get());
}

#[test]
fn only_xmls_five_entities_and_character_references_are_expanded() {
    let (cases, result) = read(
        br#"<testsuite><testcase name="a&amp;b &#x263A;"><failure message="&lt;1&gt; &quot;x&apos;">&#72;i &amp; bye</failure></testcase></testsuite>"#,
        &JunitLimits::default(),
    );
    assert_eq!(result.unwrap(), 1);
    assert_eq!(cases[0].name, "a&b ☺");
    assert_eq!(cases[0].message.as_deref(), Some("<1> \"x'"));
    assert_eq!(cases[0].details.as_deref(), Some("Hi & bye"));
    let in_text = error_of(b"<testsuite>\n<testcase name=\"a\">&nbsp;</testcase></testsuite>");
    assert!(
        matches!(&in_text, JunitError::UnknownEntity { at, name } if name == "nbsp" && *at == position(2, 20)),
        "{in_text:?}"
    );
    let in_attribute = error_of(b"<testsuite><testcase name=\"&lol;\"/></testsuite>");
    assert!(
        matches!(&in_attribute, JunitError::UnknownEntity { name, .. } if name == "lol"),
        "{in_attribute:?}"
    );
    assert_eq!(
        error_of(b"<testsuite name=\"fish & chips\"/>").to_string(),
        "a & at line 1, column 1 that begins no reference: write a literal & as &amp;"
    );
}

#[test]
fn nesting_stops_at_the_depth_limit() {
    let mut deep = String::from("<testsuites>");
    for _ in 0..100_000 {
        deep.push_str("<testsuite>");
    }
    let error = error_of(deep.as_bytes());
    let JunitError::TooDeep { at, limit } = error else {
        panic!("{error:?}");
    };
    assert_eq!(limit, 64);
    assert_eq!(at, position(1, 12 + 63 * 11 + 1));
    // At the limit it is read.
    let mut at_limit = String::new();
    for _ in 0..63 {
        at_limit.push_str("<testsuite>");
    }
    at_limit.push_str("<testcase name=\"deep\"/>");
    for _ in 0..63 {
        at_limit.push_str("</testsuite>");
    }
    let (cases, result) = read(at_limit.as_bytes(), &JunitLimits::default());
    assert_eq!((result.unwrap(), cases[0].name.as_str()), (1, "deep"));
}

#[test]
fn texts_and_attributes_are_cut_on_a_character_boundary() {
    let long_message = "é".repeat(MAX_TEXT_BYTES); // two bytes each
    let long_text = "ab\u{263A}".repeat(MAX_TEXT_BYTES); // five bytes each
    let xml = format!(
        "<testsuite><testcase name=\"t\"><failure message=\"{long_message}\">{long_text}</failure>\
         <system-out><![CDATA[{long_text}]]></system-out></testcase>\
         <testcase name=\"next\"/></testsuite>"
    );
    let (cases, result) = read(xml.as_bytes(), &JunitLimits::default());
    assert_eq!(result.unwrap(), 2);
    let message = cases[0].message.as_deref().unwrap();
    assert_eq!(message, format!("{}…", "é".repeat(MAX_TEXT_BYTES / 2)));
    let details = cases[0].details.as_deref().unwrap();
    assert!(details.len() <= MAX_TEXT_BYTES + '…'.len_utf8());
    assert!(
        details.ends_with("ab\u{263A}ab…"),
        "{}",
        &details[details.len() - 20..]
    );
    let output = cases[0].output.as_deref().unwrap();
    assert!(output.len() <= MAX_TEXT_BYTES + '…'.len_utf8() && output.ends_with('…'));
    assert_eq!(cases[1].name, "next");
}

#[test]
fn a_text_of_any_length_is_read_past_and_the_next_case_read() {
    // 64 MB of failure text, made as it is read: kept up to the limit, the rest skipped
    // (tests/memory.rs measures what that costs).
    let generated = Generated::new(vec![
        (
            b"<testsuite><testcase name=\"huge\"><failure message=\"m\">",
            1,
        ),
        (&[b'x'; 1000], 64_000),
        (
            b"</failure></testcase><testcase name=\"after\"/></testsuite>",
            1,
        ),
    ]);
    let mut cases = Vec::new();
    let file = read_junit(
        BufReader::new(generated),
        "big.xml",
        &JunitLimits::default(),
        &mut |c| cases.push(c),
    )
    .unwrap();
    assert_eq!(file.cases, 2);
    assert_eq!(cases[0].details.as_ref().unwrap().len(), MAX_TEXT_BYTES + 3);
    assert_eq!(cases[1].name, "after");
}

#[test]
fn a_tag_over_the_limit_ends_the_reading_and_keeps_the_cases_before() {
    let limits = JunitLimits {
        max_tag_bytes: 4096,
        ..JunitLimits::default()
    };
    let xml = format!(
        "<testsuite>\n<testcase name=\"first\"/>\n<testcase name=\"second\"><failure message=\"{}\"/></testcase></testsuite>",
        "m".repeat(5000)
    );
    let (cases, result) = read(xml.as_bytes(), &limits);
    assert_eq!(cases.len(), 1);
    let error = result.unwrap_err();
    assert!(
        matches!(error, JunitError::TagTooLong { at, limit: 4096 } if at == position(3, 25)),
        "{error:?}"
    );
}

#[test]
fn cases_past_the_limit_are_not_read() {
    let limits = JunitLimits {
        max_cases: 10,
        ..JunitLimits::default()
    };
    let mut xml = String::from("<testsuite>\n");
    for n in 0..15 {
        xml.push_str(&format!("<testcase name=\"t{n}\"/>\n"));
    }
    xml.push_str("</testsuite>\n");
    let (cases, result) = read(xml.as_bytes(), &limits);
    assert_eq!(cases.len(), 10);
    let error = result.unwrap_err();
    assert_eq!(
        error.to_string(),
        "more than 10 test cases: the rest, from line 12, column 1, is not read; split the \
         report into several files"
    );
}

#[test]
fn invalid_utf8_is_named_with_where_it_is_and_the_declared_encoding() {
    let error = error_of(
        b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<testsuite>\n<testcase name=\"t\">\n<failure>caf\xE9</failure></testcase></testsuite>",
    );
    assert_eq!(
        error.to_string(),
        "bytes that are not UTF-8 at line 4, column 13 (the file declares ISO-8859-1); \
         kubeci reads JUnit reports in UTF-8: write the report in UTF-8"
    );
    let in_attribute = error_of(b"<testsuite><testcase name=\"caf\xE9\"/></testsuite>");
    assert!(matches!(
        in_attribute,
        JunitError::InvalidUtf8 { declared: None, .. }
    ));
    let utf16: Vec<u8> = "\u{FEFF}<testsuite/>"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    assert_eq!(
        error_of(&utf16).to_string(),
        "the file is UTF-16; kubeci reads JUnit reports in UTF-8: write the report in UTF-8"
    );
    // A UTF-8 byte-order mark is fine.
    let (cases, result) = read(
        b"\xEF\xBB\xBF<testsuite><testcase name=\"t\"/></testsuite>",
        &JunitLimits::default(),
    );
    assert_eq!((result.unwrap(), cases.len()), (1, 1));
}

#[test]
fn a_file_that_is_not_junit_says_what_it_is() {
    assert_eq!(
        error_of(b"<!DOCTYPE html>\n<html><body>404</body></html>").to_string(),
        "refused: a DOCTYPE declaration at line 1, column 1; JUnit reports have none, and \
         kubeci expands no entity but XML's five (&lt; &gt; &amp; &quot; &apos;) and character \
         references"
    );
    assert_eq!(
        error_of(b"<?xml version=\"1.0\"?>\n<!-- coverage -->\n<coverage line-rate=\"0.9\"><packages/></coverage>").to_string(),
        "not a JUnit report: its root element is <coverage> (line 3, column 1); JUnit XML's is \
         <testsuites> or <testsuite>"
    );
    assert_eq!(
        error_of(b"  {\"numFailedTests\": 0, \"testResults\": []}").to_string(),
        "not XML: it begins with text (“{\"numFailedTests\": 0, \"testResults\": []}”) at line 1, \
         column 3, not an element; a JUnit report begins with <testsuites> or <testsuite>"
    );
    // A reference is text too.
    assert!(matches!(
        error_of(b"&lt;testsuite/&gt;"),
        JunitError::NotXml { .. }
    ));
    for empty in [
        &b""[..],
        b"  \n",
        b"<?xml version=\"1.0\"?>\n<!-- nothing -->\n",
    ] {
        assert_eq!(
            error_of(empty).to_string(),
            "no report in it: the file has no XML element (a test run that wrote no report?)"
        );
    }
    // An empty report is a report.
    assert_eq!(
        read(b"<testsuites/>", &JunitLimits::default()).1.unwrap(),
        0
    );
}

#[test]
fn a_file_cut_short_keeps_the_cases_before_and_says_where() {
    let xml = "<testsuite name=\"s\">\n  <testcase name=\"one\"/>\n  <testcase name=\"two\">\n    <failure message=\"boom\">trace";
    let mut builder = ResultsBuilder::new();
    let file = builder.read_junit(xml.as_bytes(), "target/junit.xml", &JunitLimits::default());
    assert_eq!(file.cases, 1);
    assert_eq!(
        file.error.as_deref(),
        Some(
            "cut short at line 4, column 34: the file ends inside <failure> (opened at line 4); \
             the cases before it are kept — did the test run stop before it finished writing \
             the report?"
        )
    );
    let results = builder.finish();
    assert_eq!(results.counts.passed, 1);
    assert_eq!(results.files, [file]);
    // Cut inside a tag.
    let error = error_of(b"<testsuite>\n<testcase name=\"one\"/>\n<testcase na");
    assert!(
        matches!(&error, JunitError::CutShort { open, opened_at_line: 1, .. } if open == "testsuite"),
        "{error:?}"
    );
}

#[test]
fn every_prefix_of_every_report_reads_without_a_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reports");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let whole = std::fs::read(entry.unwrap().path()).unwrap();
        let (all, result) = read(&whole, &JunitLimits::default());
        assert!(result.is_ok());
        for end in 0..whole.len() {
            let (cases, result) = read(&whole[..end], &JunitLimits::default());
            assert!(cases.len() <= all.len());
            assert_eq!(cases[..], all[..cases.len()]);
            // Only a report whose last bytes are missing past its root's end is whole.
            if let Ok(n) = result {
                assert_eq!(n as usize, all.len(), "at {end}");
            }
        }
        seen += 1;
    }
    assert!(seen >= 8);
}

#[test]
fn malformed_xml_says_what_is_wrong_where() {
    assert_eq!(
        error_of(b"<testsuite>\n<testcase name=\"a\">\n</testsuite>").to_string(),
        "not well-formed XML at line 3, column 1: </testsuite> closes <testcase> (opened at line 2)"
    );
    assert_eq!(
        error_of(b"<testsuite></testsuite>\ntrailing words").to_string(),
        "not well-formed XML at line 2, column 1: text after the report's end (“trailing words”)"
    );
    let error = error_of(b"<testsuite><testcase name=unquoted/></testsuite>");
    assert!(
        matches!(error, JunitError::Malformed { at, .. } if at == position(1, 12)),
        "{error:?}"
    );
}

#[test]
fn only_read_errors_are_worth_a_retry() {
    struct Failing;
    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("connection reset"))
        }
    }
    let error = read_junit(
        BufReader::new(Failing),
        "x",
        &JunitLimits::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(error.is_retryable(), "{error:?}");
    assert!(error.to_string().contains("connection reset"));
    assert!(!error_of(b"<html/>").is_retryable());
}

#[test]
fn outcomes_when_a_case_has_several_children() {
    let (cases, _) = read(
        br#"<testsuite>
<testcase name="failed and errored"><error message="teardown"/><failure message="assert"/></testcase>
<testcase name="skipped then failed"><skipped/><failure message="x"/></testcase>
<testcase name="flaky then skipped"><flakyFailure message="once"/><skipped/></testcase>
<testcase name="rerun error only"><rerunError message="again"/></testcase>
<testcase name="two failures"><failure message="first"/><failure message="second"/></testcase>
</testsuite>"#,
        &JunitLimits::default(),
    );
    let outcomes: Vec<_> = cases
        .iter()
        .map(|c| (c.outcome, c.message.as_deref().unwrap()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Outcome::Failed, "assert"),
            (Outcome::Failed, "x"),
            (Outcome::Flaky, "once"),
            (Outcome::Errored, "again"),
            (Outcome::Failed, "first"),
        ]
    );
}

/// A suite's name is repeated in each case it holds (its `suite`, and its id when the case
/// has no class name): suites nested 61 deep, each named with 16 KiB, made every case of a
/// 1 MiB report carry a megabyte — a thousand cases in it held a gigabyte of kubeci's
/// memory. The suite a case names is cut at the text limit like any other name.
#[test]
fn nested_suites_give_each_case_a_suite_within_the_text_limit() {
    let name = "s".repeat(MAX_TEXT_BYTES);
    let opening = format!("<testsuite name=\"{name}\">");
    let mut xml = String::from("<testsuites>");
    for _ in 0..61 {
        xml.push_str(&opening);
    }
    xml.push_str("<testcase name=\"a\"/><testcase name=\"b\"><failure/></testcase>");
    for _ in 0..61 {
        xml.push_str("</testsuite>");
    }
    xml.push_str("</testsuites>");
    let (cases, read) = read(xml.as_bytes(), &JunitLimits::default());
    assert_eq!(read.unwrap(), 2);
    for case in &cases {
        assert!(
            case.suite.len() <= MAX_TEXT_BYTES + '…'.len_utf8(),
            "a suite of {} bytes",
            case.suite.len()
        );
        assert!(case.suite.starts_with(&name) && case.suite.ends_with('…'));
    }
    let mut results = ResultsBuilder::new();
    results.read_junit(xml.as_bytes(), "nested.xml", &JunitLimits::default());
    let results = results.finish();
    assert!(
        results.cases[0].id.len() <= MAX_TEXT_BYTES + 8,
        "{}",
        results.cases[0].id.len()
    );
}

/// Cases are listed in a build's results with their ids within a bound of bytes: a report of
/// thousands of tiny cases in a suite with a long name (no class name, so the suite names
/// each) made results of 16 KiB per case, and a `tests.json` the archive refuses to read
/// back (over 32 MiB). Past the bound, cases are counted, not listed, and the results say so.
#[test]
fn cases_listed_stay_within_their_bound_however_long_their_suite() {
    let name = "s".repeat(MAX_TEXT_BYTES);
    let report = Generated::new(vec![
        (format!("<testsuite name=\"{name}\">").as_bytes(), 1),
        (b"<testcase name=\"t\"/>", 3_000),
        (
            b"<testcase name=\"last\"><failure/></testcase></testsuite>",
            1,
        ),
    ]);
    let mut results = ResultsBuilder::new();
    let file = results.read_junit(BufReader::new(report), "long.xml", &JunitLimits::default());
    assert_eq!((file.cases, file.error), (3_001, None));
    let results = results.finish();
    assert_eq!(results.counts.total(), 3_001, "every case counted");
    assert_eq!((results.counts.failed, results.detailed.len()), (1, 1));
    let listed: usize = results.cases.iter().map(|c| c.id.len()).sum();
    assert!(
        listed <= MAX_LISTED_CASE_BYTES,
        "{listed} bytes of ids listed"
    );
    assert!(results.cases_cut, "the results say their list is cut");
    let json = serde_json::to_vec(&results).unwrap();
    assert!(json.len() < 32 << 20, "tests.json of {} bytes", json.len());
    assert!(
        summarize(&results).cut(),
        "the index does not take the list as whole"
    );
}

#[test]
fn an_error_s_place_is_where_it_stopped_whatever_the_file_quotes() {
    let mut cases = 0;
    let error = kubeci_results::read_junit(
        &b"1.0\"? line 99 ("[..],
        "report.xml",
        &kubeci_results::JunitLimits::default(),
        &mut |_| cases += 1,
    )
    .unwrap_err();
    let at = error.position().expect("a place");
    assert_eq!((at.line, at.column), (1, 1), "{error}");
    assert!(
        error.to_string().contains("line 99"),
        "the start is quoted: {error}"
    );
}
