//! A running build's log over Server-Sent Events: read as raw frames over real HTTP and
//! parsed as `EventSource` parses them, kept alive while quiet, bounded per build, and
//! dropped upstream when its follower goes away.

use super::*;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a test waits for what must come; only a hang reaches it.
const BOUND: std::time::Duration = std::time::Duration::from_secs(60);

/// One event as `EventSource` hands it to the page: its type and its data.
#[derive(Debug, PartialEq)]
struct Received {
    kind: String,
    data: String,
}

/// `stream` parsed as the HTML standard's event stream interpretation does: lines end at
/// CRLF, LF or CR; a blank line dispatches; `:` begins a comment; a field's value loses
/// one leading space; `data` lines are joined by LF.
fn parse_event_stream(stream: &str) -> Vec<Received> {
    let (mut events, mut kind, mut data) = (Vec::new(), String::new(), String::new());
    let normalised = stream.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalised.split('\n') {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let kind = if kind.is_empty() { "message" } else { &kind };
                events.push(Received {
                    kind: kind.to_owned(),
                    data: std::mem::take(&mut data),
                });
            }
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            _ => {}
        }
    }
    events
}

/// A chunked HTTP/1.1 body, its chunks joined.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut joined = Vec::new();
    loop {
        let at = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size");
        let size = std::str::from_utf8(&body[..at]).unwrap();
        let size = usize::from_str_radix(size.trim(), 16).expect("a hex chunk size");
        if size == 0 {
            return joined;
        }
        joined.extend_from_slice(&body[at + 2..at + 2 + size]);
        body = &body[at + 2 + size + 2..];
    }
}

/// `GET path` over a real connection to an app serving `backend`: (head, body), read
/// until the server closes the connection.
async fn get_over_http(backend: Fake, path: &str) -> (String, Vec<u8>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = app(Arc::new(backend), Access::default());
    tokio::spawn(serve(listener, app, BOUND, std::future::pending()));
    let mut connection = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: kubeci\r\nConnection: close\r\n\r\n");
    connection.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(BOUND, connection.read_to_end(&mut received))
        .await
        .expect("the events end with the log")
        .unwrap();
    let at = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&received[..at]).to_lowercase();
    (head, received[at + 4..].to_vec())
}

#[tokio::test]
async fn lines_that_need_care_in_sse_arrive_as_the_page_reads_them() {
    let long = format!("{}END", "x".repeat(50_000));
    let stamped = |text: &str| format!("2026-11-30T07:33:35Z {text}\n").into_bytes();
    let chunks = vec![
        stamped("plain <b> & \"q\""),
        stamped("progress 50%\rprogress 100%\r"),
        stamped("data: not a field"),
        stamped("event: end"),
        stamped(": not a comment"),
        stamped("id: 7"),
        // A long line, and a character of two bytes, each split across chunks.
        long.as_bytes()[..20_000].to_vec(),
        [&long.as_bytes()[20_000..], b"\ncaf\xc3".as_slice()].concat(),
        b"\xa9\nbytes \xff\xfe end\n".to_vec(),
    ];
    let (head, body) = get_over_http(
        Fake {
            log: FakeLog::Ended(chunks),
            ..Fake::default()
        },
        "/jobs/ci/demo/builds/1/events",
    )
    .await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-cache"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let stream = String::from_utf8(dechunk(&body)).expect("the events are UTF-8");
    let events = parse_event_stream(&stream);
    // What the page's script does with each: the time before the first newline, the
    // line's HTML after it.
    let lines: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e.kind == "message")
        .map(|e| {
            e.data
                .split_once('\n')
                .expect("a time, a newline, the line")
        })
        .collect();
    let at = "2026-11-30T07:33:35Z";
    assert_eq!(
        lines,
        [
            (at, "plain &lt;b&gt; &amp; &quot;q&quot;"),
            // Control characters are dropped, as on the page itself.
            (at, "progress 50%progress 100%"),
            (at, "data: not a field"),
            (at, "event: end"),
            (at, ": not a comment"),
            (at, "id: 7"),
            ("", long.as_str()),
            ("", "café"),
            ("", "bytes \u{fffd}\u{fffd} end"),
        ],
        "{stream:.300}"
    );
    let end = events.last().expect("an end event");
    assert_eq!(
        end.kind, "end",
        "the stream ends with the build: {stream:.300}"
    );
    let end: serde_json::Value = serde_json::from_str(&end.data).unwrap();
    assert_eq!(end["state"], "succeeded");
    assert_eq!(end["finished_at"], "2026-11-30T07:34:00Z");
}

/// `GET …/events` of build 1, in-process, following at most one at a time.
async fn follow(app: Router) -> axum::response::Response {
    let request = Request::get("/jobs/ci/demo/builds/1/events")
        .body(Body::empty())
        .unwrap();
    app.oneshot(request).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_quiet_log_is_kept_alive_one_follower_is_bounded_and_leaving_drops_the_log() {
    let dropped = Arc::new(AtomicBool::new(false));
    let backend = Arc::new(Fake {
        log: FakeLog::Open(Arc::clone(&dropped)),
        ..Fake::default()
    });
    let limits = Limits {
        log_followers_per_build: 1,
    };
    let app = app_with(backend, Access::default(), Arc::new(NoWebhooks), limits);

    let first = follow(app.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let mut frames = first.into_body().into_data_stream();
    // The log prints nothing: (paused) time runs on to the keep-alive.
    let frame = tokio::time::timeout(2 * crate::live::KEEP_ALIVE, frames.next())
        .await
        .expect("a keep-alive within its interval")
        .expect("a frame")
        .unwrap();
    assert_eq!(&frame[..], b":\n\n", "a comment EventSource ignores");

    let second = follow(app.clone()).await;
    assert_eq!(second.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(second.headers()[header::RETRY_AFTER], "10");

    assert!(
        !dropped.load(Ordering::SeqCst),
        "the log is read while followed"
    );
    drop(frames);
    assert!(
        dropped.load(Ordering::SeqCst),
        "a follower that goes away drops the log's stream"
    );
    assert_eq!(
        follow(app).await.status(),
        StatusCode::OK,
        "and gives its place back"
    );
}
