//! A build pod's collector's uploads hold only what they must (issue 30's review, O2, O3,
//! O5): a `done` from someone unknown is answered before its body is read; one build's
//! uploads at once are bounded; and an upload that ends after its build's `done` never
//! changes what the build left.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common;

use common::cluster::TestCluster;
use common::serve::{http, Kubeci};

use crate::archive_kubernetes_served::Store;
use crate::collect_kubernetes::{code_of, done, put, running_build, serve, DECLARED};

/// A request whose head and the start of its body are sent; the rest is held back.
struct Held {
    stream: TcpStream,
    rest: Vec<u8>,
}

fn hold(kubeci: &Kubeci, method: &str, path: &str, token: &str, body: &[u8], sent: usize) -> Held {
    let mut stream = TcpStream::connect(("127.0.0.1", kubeci.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: kubeci\r\nAuthorization: Bearer {token}\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..sent]).unwrap();
    Held {
        stream,
        rest: body[sent..].to_vec(),
    }
}

impl Held {
    /// The answer's status and error code, read without sending the rest.
    fn answer(mut self) -> (u16, String) {
        let mut answer = Vec::new();
        let mut piece = [0u8; 4096];
        loop {
            let n = self
                .stream
                .read(&mut piece)
                .expect("an answer within a minute");
            answer.extend_from_slice(&piece[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = (head.lines())
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if body.len() >= length || n == 0 {
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, code_of(&body[..length.min(body.len())]));
                }
            }
            assert!(n > 0, "the connection closed without an answer: {text}");
        }
    }

    /// Sends the rest, then reads the answer.
    fn finish(mut self) -> (u16, String) {
        let rest = std::mem::take(&mut self.rest);
        self.stream.write_all(&rest).unwrap();
        self.answer()
    }
}

// Long on purpose: one build's uploads and `done`s in the order that shows each bound.
async fn uploads_hold_only_what_they_must(cluster: TestCluster) {
    let store = Store::for_cluster(&cluster);
    let holder = cluster.job_yaml("holder", "sleep 600", DECLARED);
    cluster.apply("holder", &holder).await;
    let kubeci = serve(&cluster, &store);
    let (_, collect) = running_build(&cluster, &kubeci, "holder").await;

    // A `done` from no one known is answered at once, its body never waited for (it
    // would be `408` after the read timeout).
    let body = vec![b' '; 1_000_000];
    let unknown = hold(
        &kubeci,
        "POST",
        "/internal/v1/outputs/done",
        "not-a-token",
        &body,
        10,
    );
    assert_eq!(unknown.answer(), (401, "not-a-collector".into()));

    // Once kubeci's caches hold the build's pod and Job, its first file is taken.
    common::git::wait_for(
        cluster.patience(),
        "the build's first file to be taken",
        || put(&kubeci, &collect, "artifacts", "dist/app.txt", b"holder's").0 == 201,
    );
    // Two uploads of the build held open take its slots: a third is told to wait.
    let late = hold(
        &kubeci,
        "PUT",
        "/internal/v1/outputs/artifacts/dist/app.txt",
        &collect,
        b"changed",
        3,
    );
    let other = hold(
        &kubeci,
        "PUT",
        "/internal/v1/outputs/artifacts/dist/other.txt",
        &collect,
        b"other",
        2,
    );
    common::git::wait_for(
        cluster.patience(),
        "both held uploads to be written",
        || {
            let metrics = http(&kubeci, "GET", "/metrics", &[]).1;
            metrics
                .lines()
                .any(|line| line == "kubeci_collector_uploads 2")
        },
    );
    common::git::wait_for(
        cluster.patience(),
        "a third upload to be told to wait",
        || {
            put(&kubeci, &collect, "artifacts", "dist/third.txt", b"3")
                == (503, "uploads-busy".into())
        },
    );
    assert_eq!(other.finish().0, 201);
    // The build's files are committed while one upload is still arriving…
    let (status, answer) = done(&kubeci, &collect);
    assert_eq!(status, 200, "{answer}");
    // … which then ends: it is kept apart, never one of the build's files.
    assert_eq!(late.finish().0, 201);
    let build = format!("/api/v1/jobs/{}/holder/builds/1", cluster.namespace);
    let (status, bytes) = http(
        &kubeci,
        "GET",
        &format!("{build}/artifacts/dist/app.txt"),
        &[],
    );
    assert_eq!((status, bytes.as_str()), (200, "holder's"));
    let listed = http(&kubeci, "GET", &format!("{build}/artifacts"), &[]).1;
    assert!(listed.contains("dist/other.txt"), "{listed}");
    assert_eq!(
        put(&kubeci, &collect, "artifacts", "dist/app.txt", b"again"),
        (409, "outputs-done".into())
    );
    drop(kubeci);
    cluster.finish().await;
}

on_both!(uploads_hold_only_what_they_must, s3);

/// A `done` that fails once it claimed its build's commit gives the claim up: the
/// collector's next try is not told another `done` commits (it would be for two minutes,
/// longer than the collector tries, and the build would keep nothing). The failure here:
/// two uploads a directory cannot both hold (`dist/x` and `dist/x/y`), which a `file://`
/// archive refuses when the second is taken into place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_done_that_fails_gives_its_claim_up() {
    let cluster = TestCluster::fake().await;
    let store = Store::for_cluster(&cluster);
    assert!(store.url.starts_with("file://"), "{}", store.url);
    let holder = cluster.job_yaml("holder", "sleep 600", DECLARED);
    cluster.apply("holder", &holder).await;
    let kubeci = serve(&cluster, &store);
    let (_, collect) = running_build(&cluster, &kubeci, "holder").await;
    common::git::wait_for(
        cluster.patience(),
        "the build's first file to be taken",
        || put(&kubeci, &collect, "artifacts", "dist/x", b"a file").0 == 201,
    );
    assert_eq!(
        put(&kubeci, &collect, "artifacts", "dist/x/y", b"under it").0,
        201
    );
    let first = done(&kubeci, &collect);
    assert!(first.0 >= 500, "{first:?}");
    let again = done(&kubeci, &collect);
    assert!(again.0 >= 500, "{again:?}");
    assert_ne!(
        again.1, "outputs-committing",
        "the failed done kept its claim"
    );
    drop(kubeci);
    cluster.finish().await;
}
