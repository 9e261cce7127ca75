//! A client made by `https_client_to` connects to the addresses it was given and resolves
//! no name: a name that resolves nowhere (`.invalid`, RFC 6761) is reached at its kept
//! address, with its own name in the `Host` header, and another name is not reached.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use kubeci_https::{https_client_to, KeptAddresses};

/// A loopback server answering one request `200`, reporting the request's head.
fn one_answer() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let (heads, head) = mpsc::channel();
    std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(stream);
        let mut text = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            text.push_str(&line);
        }
        let mut stream = reader.into_inner();
        (stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"))
            .unwrap();
        heads.send(text).unwrap();
    });
    (address, head)
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::new(Bytes::new())).unwrap()
}

#[tokio::test]
async fn a_name_is_reached_at_its_kept_address_and_never_resolved() {
    let (address, head) = one_answer();
    let kept = KeptAddresses::new("kubeci.invalid", vec![address]);
    let client = https_client_to::<Full<Bytes>>(kept).unwrap();
    let port = address.port();

    let answer = (client
        .request(get(&format!("http://KUBECI.invalid:{port}/x")))
        .await)
        .expect("reached at the kept address");
    assert_eq!(answer.status(), 200);
    let head = head.recv().unwrap();
    assert!(head.starts_with("GET /x HTTP/1.1\r\n"), "{head}");
    let host = format!("host: kubeci.invalid:{port}\r\n");
    assert!(head.to_ascii_lowercase().contains(&host), "{head}");

    let other = client
        .request(get(&format!("http://other.invalid:{port}/x")))
        .await;
    let error = format!("{:?}", other.expect_err("another name is not reached"));
    assert!(
        error.contains("this client reaches kubeci.invalid only"),
        "{error}"
    );
}
