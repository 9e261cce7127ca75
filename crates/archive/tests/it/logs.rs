//! Logs: streamed in and out in bounded pieces, exact bytes kept, whole or not at all.

use std::convert::Infallible;

use futures_util::{stream, StreamExt};
use kubeci_archive::{ArchiveError, ArchivedLine, LogLine, LogWritten, PART_SIZE, READ_PIECE};

use crate::common::{archive_over, at, build, stores};

const LOG_KEY: &str = "kubeci/v1/jobs/ci/web/builds/3/logs/build.log";

/// Line `i` of a long log: every seventh without a time, some bytes not UTF-8.
fn line(i: u64) -> LogLine {
    let mut text = format!("line {i:08} \u{1b}[32mok\u{1b}[0m ").into_bytes();
    text.extend_from_slice(b"\xff\xfe\r\t");
    text.resize(190, b'a' + (i % 26) as u8);
    if i.is_multiple_of(7) {
        LogLine::untimed(text)
    } else {
        let start = at("2026-12-01T10:00:00Z").as_nanosecond();
        LogLine::new(
            jiff::Timestamp::from_nanosecond(start + i as i128 * 1_234_567).unwrap(),
            text,
        )
    }
}

fn lines(n: u64) -> impl futures_core::Stream<Item = Result<LogLine, Infallible>> {
    stream::iter((0..n).map(|i| Ok(line(i))))
}

async fn read_all(
    archive: &kubeci_archive::Archive,
    from: u64,
) -> Vec<Result<ArchivedLine, ArchiveError>> {
    let log = archive
        .log(build(3), "build", from)
        .await
        .unwrap()
        .expect("the log is there");
    log.collect().await
}

#[tokio::test]
async fn a_60_mb_log_round_trips_in_bounded_pieces() {
    const LINES: u64 = 320_000;
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let written = archive
            .put_log(build(3), "build", lines(LINES))
            .await
            .unwrap();
        assert_eq!(written.lines, LINES);
        assert!(written.bytes > 60_000_000, "{name}: {written:?}");
        let seen = store.take();
        assert!(
            seen.puts.iter().all(|(key, _)| key != LOG_KEY),
            "{name}: a long log is not sent whole"
        );
        assert_eq!(
            seen.largest_part, PART_SIZE,
            "{name}: parts of {PART_SIZE} bytes"
        );
        assert_eq!(
            seen.most_parts_in_flight, 1,
            "{name}: one part in flight at a time"
        );

        let mut log = archive.log(build(3), "build", 0).await.unwrap().unwrap();
        let mut i = 0;
        let mut next = 0;
        while let Some(read) = log.next().await {
            let read = read.unwrap();
            assert_eq!(read.line, line(i), "{name}: line {i}");
            assert!(read.next > next);
            next = read.next;
            i += 1;
        }
        assert_eq!(i, LINES, "{name}: every line read back");
        assert_eq!(next, written.bytes, "{name}: the last line ends the object");
        let seen = store.take();
        let reads: Vec<_> = seen.gets.iter().filter(|(key, _)| key == LOG_KEY).collect();
        assert!(
            reads
                .iter()
                .all(|(_, range)| range.is_some_and(|r| r <= READ_PIECE)),
            "{name}: every read is a range of at most {READ_PIECE} bytes"
        );
        assert_eq!(
            reads.len() as u64,
            written.bytes.div_ceil(READ_PIECE),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_short_log_keeps_each_lines_exact_bytes_and_missing_times() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        let given = vec![
            LogLine::new(
                at("2026-12-01T10:00:00.5Z"),
                &b"==> build: container started"[..],
            ),
            LogLine::untimed(&b"2026-12-01T10:00:00Z not a time of ours"[..]),
            LogLine::new(at("2026-12-01T10:00:01Z"), &b"\xc3\x28 \r"[..]),
            LogLine::untimed(&b""[..]),
        ];
        let from = stream::iter(given.clone().into_iter().map(Ok::<_, Infallible>));
        archive.put_log(build(3), "build", from).await.unwrap();
        assert_eq!(
            store.raw(LOG_KEY).await.unwrap().as_ref(),
            b"2026-12-01T10:00:00.5Z ==> build: container started\n\
              - 2026-12-01T10:00:00Z not a time of ours\n\
              2026-12-01T10:00:01Z \xc3\x28 \r\n\
              - \n",
            "{name}: the documented format"
        );
        let back: Vec<LogLine> = read_all(&archive, 0)
            .await
            .into_iter()
            .map(|r| r.unwrap().line)
            .collect();
        assert_eq!(back, given, "{name}");
        assert!(
            archive.log(build(3), "clone", 0).await.unwrap().is_none(),
            "{name}"
        );
        let empty = archive.put_log(build(3), "clone", lines(0)).await.unwrap();
        assert_eq!(empty, LogWritten { lines: 0, bytes: 0 });
        let log = archive.log(build(3), "clone", 0).await.unwrap().unwrap();
        assert_eq!(
            log.count().await,
            0,
            "{name}: an empty log is there, with no lines"
        );
    }
}

#[tokio::test]
async fn reading_from_a_lines_next_goes_on_from_the_line_after() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive.put_log(build(3), "build", lines(10)).await.unwrap();
        let all = read_all(&archive, 0).await;
        let after_third = all[2].as_ref().unwrap().next;
        let rest: Vec<LogLine> = read_all(&archive, after_third)
            .await
            .into_iter()
            .map(|r| r.unwrap().line)
            .collect();
        assert_eq!(rest, (3..10).map(line).collect::<Vec<_>>(), "{name}");
        let end = all.last().unwrap().as_ref().unwrap().next;
        assert!(
            read_all(&archive, end).await.is_empty(),
            "{name}: from the end, nothing"
        );
        for bad in [after_third + 1, end + 1] {
            let error = archive.log(build(3), "build", bad).await.err();
            assert!(
                matches!(error, Some(ArchiveError::BadOffset { from, .. }) if from == bad),
                "{name}: {error:?}"
            );
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the pod's node is gone")]
struct NodeGone;

#[tokio::test]
async fn a_log_whose_writing_fails_leaves_the_earlier_copy_whole() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        archive.put_log(build(3), "build", lines(5)).await.unwrap();
        let before = store.raw(LOG_KEY).await.unwrap();
        // Past one part, so a multipart upload was under way when the source failed.
        let past_a_part = PART_SIZE as u64 / 150;
        let failing = stream::iter((0..past_a_part).map(|i| Ok(line(i))))
            .chain(stream::iter([Err(NodeGone)]));
        store.take();
        let error = archive
            .put_log(build(3), "build", failing)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ArchiveError::LogSource { .. }),
            "{name}: {error:?}"
        );
        assert_eq!(
            store.take().aborts,
            1,
            "{name}: the upload under way is aborted"
        );
        assert!(
            error.to_string().contains("the pod's node is gone"),
            "{error}"
        );
        let with_newline = stream::iter([Ok::<_, Infallible>(LogLine::untimed("a\nb"))]);
        let error = archive
            .put_log(build(3), "build", with_newline)
            .await
            .unwrap_err();
        assert!(
            matches!(&error, ArchiveError::BadLine { line: 1, problem, .. } if problem.contains("newline")),
            "{name}: {error:?}"
        );
        assert_eq!(
            store.raw(LOG_KEY).await.unwrap(),
            before,
            "{name}: the failed writes left the earlier log as it was"
        );
        let error = archive
            .put_log(build(4), "build", stream::iter([Err(NodeGone)]))
            .await;
        assert!(error.is_err());
        assert!(
            archive.log(build(4), "build", 0).await.unwrap().is_none(),
            "{name}: no object"
        );
        assert_eq!(
            store.keys("kubeci").await,
            [LOG_KEY],
            "{name}: no part or temporary object is left in sight"
        );
    }
}

#[tokio::test]
async fn a_cut_short_or_foreign_log_is_an_error_naming_its_key_and_byte() {
    for (name, store, _dir) in stores() {
        let archive = archive_over(&store);
        store
            .put_raw(
                LOG_KEY,
                b"2026-12-01T10:00:00Z first\n2026-12-01T10:00:01Z sec",
            )
            .await;
        let read = read_all(&archive, 0).await;
        assert_eq!(read.len(), 2, "{name}: the whole line, then the error");
        assert_eq!(read[0].as_ref().unwrap().line.text.as_ref(), b"first");
        match &read[1] {
            Err(ArchiveError::BadLog {
                key,
                offset,
                problem,
            }) => {
                assert_eq!((key.as_str(), *offset), (LOG_KEY, 27), "{name}");
                assert!(problem.contains("cut short"), "{problem}");
            }
            other => panic!("{name}: {other:?}"),
        }
        store
            .put_raw(LOG_KEY, b"plain text from another tool\n")
            .await;
        let read = read_all(&archive, 0).await;
        assert!(
            matches!(&read[..], [Err(ArchiveError::BadLog { offset: 0, .. })]),
            "{name}: {read:?}"
        );
        assert!(!read[0].as_ref().unwrap_err().is_retryable());
    }
}
