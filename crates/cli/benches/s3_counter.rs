//! A counting forwarder in front of an S3 server: kubeci talks to it as to the store, and
//! it counts each request by method and by what it names (a job's head, an index chunk, a
//! record, a log, a multipart upload's steps). Requests are forwarded byte for byte, the
//! `Host` header included: S3's SigV4 signs it, so the store checks the signature against
//! the address kubeci signed for (this forwarder's).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// Requests counted so far, by "METHOD what".
type Counts = Arc<Mutex<BTreeMap<String, u64>>>;

pub struct CountingProxy {
    port: u16,
    counts: Counts,
}

impl CountingProxy {
    /// Forwards every connection to `127.0.0.1:upstream`, from a thread of its own.
    pub fn start(upstream: u16) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let counts = Counts::default();
        let counting = counts.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let counts = counting.clone();
                std::thread::spawn(move || forward(client, upstream, counts));
            }
        });
        CountingProxy { port, counts }
    }

    /// `http://127.0.0.1:PORT`: the endpoint to give kubeci (`AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests counted so far, by "METHOD what".
    pub fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.lock().unwrap().clone()
    }

    pub fn total(&self) -> u64 {
        self.counts().values().sum()
    }
}

/// What a request names: the kind of object of docs/archive.md's layout, and the step of
/// a multipart upload when it is one.
fn what(method: &str, target: &str) -> String {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let object = if path.ends_with("/head.json") {
        "head.json"
    } else if path.contains("/index/") {
        "index chunk"
    } else if path.ends_with("/record.json") {
        "record.json"
    } else if path.contains("/logs/") {
        "log"
    } else {
        "other"
    };
    let step = if query.contains("uploads") {
        " (start multipart)"
    } else if query.contains("partNumber") {
        " (part)"
    } else if query.contains("uploadId") {
        " (complete/abort multipart)"
    } else if query.contains("list-type") || query.contains("prefix") {
        " (list)"
    } else {
        ""
    };
    format!("{method} {object}{step}")
}

/// Forwards one client connection: its requests parsed (to count them and to find each
/// body's end), the answers copied back as they come.
fn forward(client: TcpStream, upstream: u16, counts: Counts) {
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (mut answers_from, mut answers_to) =
        (server.try_clone().unwrap(), client.try_clone().unwrap());
    let answers = std::thread::spawn(move || {
        let _ = std::io::copy(&mut answers_from, &mut answers_to);
        let _ = answers_to.shutdown(Shutdown::Write);
    });
    let mut requests = BufReader::new(client);
    let mut to_server = server;
    while let Some(()) = forward_request(&mut requests, &mut to_server, &counts) {}
    let _ = to_server.shutdown(Shutdown::Write);
    let _ = answers.join();
}

/// Forwards one request (head and body); `None` at the connection's end or on an error.
fn forward_request(
    from: &mut BufReader<TcpStream>,
    to: &mut TcpStream,
    counts: &Counts,
) -> Option<()> {
    let mut head = Vec::new();
    loop {
        let start = head.len();
        if from.read_until(b'\n', &mut head).ok()? == 0 {
            return None;
        }
        if &head[start..] == b"\r\n" {
            break;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut first = text.lines().next()?.split(' ');
    let (method, target) = (first.next()?, first.next()?);
    *counts
        .lock()
        .unwrap()
        .entry(what(method, target))
        .or_insert(0) += 1;
    let header = |name: &str| {
        text.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    };
    to.write_all(&head).ok()?;
    if header("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
        return forward_chunked(from, to);
    }
    let length: u64 = header("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let copied = std::io::copy(&mut from.by_ref().take(length), to).ok()?;
    (copied == length).then_some(())
}

/// Forwards a chunked body: each chunk's size line, its bytes, then the trailers.
fn forward_chunked(from: &mut BufReader<TcpStream>, to: &mut TcpStream) -> Option<()> {
    loop {
        let mut line = Vec::new();
        from.read_until(b'\n', &mut line).ok()?;
        to.write_all(&line).ok()?;
        let size = String::from_utf8_lossy(&line);
        let size = size.trim().split(';').next()?;
        let size = u64::from_str_radix(size, 16).ok()?;
        if size == 0 {
            break;
        }
        let with_crlf = size + 2;
        let copied = std::io::copy(&mut from.by_ref().take(with_crlf), to).ok()?;
        if copied != with_crlf {
            return None;
        }
    }
    loop {
        let mut trailer = Vec::new();
        from.read_until(b'\n', &mut trailer).ok()?;
        to.write_all(&trailer).ok()?;
        if trailer == b"\r\n" || trailer.is_empty() {
            return Some(());
        }
    }
}
