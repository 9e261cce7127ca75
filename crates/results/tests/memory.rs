//! Reading a report costs bounded memory whatever its size: texts are kept up to their
//! limit and the rest skipped, never buffered. Measured as this process's peak resident
//! memory (`VmHWM`, reset through /proc/self/clear_refs) while a 96 MB report made as it
//! is read goes through the reader: a test binary of its own with one test, so nothing
//! else allocates meanwhile.

use std::io::{BufReader, Read};

use kubeci_results::{read_junit, JunitLimits, Outcome};

/// A field of /proc/self/status, in bytes.
fn status(field: &str) -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kib: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A report made piece by piece as it is read: `parts` in order, each repeated.
struct Generated {
    parts: Vec<(Vec<u8>, usize)>,
    offset: usize,
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
        Ok(n)
    }
}

#[test]
fn a_96_mb_report_of_huge_texts_adds_under_two_mib() {
    let mb = |text: &str| (text.as_bytes().to_vec(), 32 * 1024 * 1024 / text.len());
    let report = Generated {
        parts: vec![
            (
                b"<testsuites><testsuite name=\"s\"><testcase name=\"big\"><failure message=\"m\">"
                    .to_vec(),
                1,
            ),
            // 32 MB of failure text with references to decode.
            mb("expected &lt;1&gt; but was &lt;2&gt; at Foo.java:12\n"),
            (b"</failure><system-out><![CDATA[".to_vec(), 1),
            // 32 MB of output in CDATA.
            mb("a log line ]] with brackets > and more text in it\n"),
            (b"]]></system-out></testcase><system-out>".to_vec(), 1),
            // 32 MB of the suite's own output, not kept at all.
            mb("suite output, read past\n"),
            (
                b"</system-out><testcase name=\"after\"/></testsuite></testsuites>".to_vec(),
                1,
            ),
        ],
        offset: 0,
    };
    let mut outcomes = Vec::new();
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = status("VmRSS");
    let file = read_junit(
        BufReader::new(report),
        "huge.xml",
        &JunitLimits::default(),
        &mut |case| outcomes.push((case.outcome, case.details.map_or(0, |d| d.len()))),
    )
    .unwrap();
    let added = status("VmHWM").saturating_sub(before);
    assert!(
        added < 2 * 1024 * 1024,
        "reading 96 MB of text added {:.1} MiB to the peak",
        added as f64 / 1048576.0
    );
    println!("added {:.2} MiB", added as f64 / 1048576.0);
    assert_eq!(file.cases, 2);
    assert_eq!(outcomes[0].0, Outcome::Failed);
    assert!(outcomes[0].1 <= kubeci_results::MAX_TEXT_BYTES + 3);
}
