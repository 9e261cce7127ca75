//! A few lines of S3 on loopback: enough of PUT (with `If-Match` / `If-None-Match`), GET
//! (with `Range`), HEAD and DELETE to see what an s3:// archive sends and have it work.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub authorization: String,
    /// Whether it carried `If-Match` or `If-None-Match`.
    pub conditional: bool,
}

#[derive(Debug, Default)]
pub struct FakeS3 {
    objects: Mutex<HashMap<String, (Bytes, u64)>>,
    pub seen: Mutex<Vec<Seen>>,
    next_etag: Mutex<u64>,
}

impl FakeS3 {
    /// Serves on a loopback port until the test ends; its address.
    pub async fn start() -> (Arc<FakeS3>, std::net::SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let s3 = Arc::new(FakeS3::default());
        let serving = s3.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s3 = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let s3 = s3.clone();
                        async move { Ok::<_, Infallible>(s3.answer(request).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        (s3, address)
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (method, path) = (
            request.method().to_string(),
            request.uri().path().to_owned(),
        );
        let (if_match, if_none_match, range) =
            (header("if-match"), header("if-none-match"), header("range"));
        self.seen.lock().unwrap().push(Seen {
            method: method.clone(),
            path: path.clone(),
            authorization: header("authorization").unwrap_or_default(),
            conditional: if_match.is_some() || if_none_match.is_some(),
        });
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let mut objects = self.objects.lock().unwrap();
        let current = objects.get(&path).cloned();
        let etag = |n: u64| format!("\"{n}\"");
        match method.as_str() {
            "PUT" => {
                let refused = match (&current, if_match, if_none_match) {
                    (Some(_), _, Some(_)) => true,
                    (None, Some(_), _) => true,
                    (Some((_, tag)), Some(wanted), _) => etag(*tag) != wanted,
                    _ => false,
                };
                if refused {
                    return reply(StatusCode::PRECONDITION_FAILED, &[], Bytes::new());
                }
                let mut next = self.next_etag.lock().unwrap();
                *next += 1;
                objects.insert(path, (body, *next));
                reply(StatusCode::OK, &[("etag", etag(*next))], Bytes::new())
            }
            "GET" | "HEAD" => {
                let Some((bytes, tag)) = current else {
                    return reply(
                        StatusCode::NOT_FOUND,
                        &[],
                        Bytes::from_static(b"<Error><Code>NoSuchKey</Code></Error>"),
                    );
                };
                let mut headers = vec![
                    ("etag", etag(tag)),
                    ("last-modified", "Tue, 01 Dec 2026 10:00:00 GMT".to_owned()),
                ];
                let (status, part) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
                    Some(range) => {
                        let (start, end) = range.split_once('-').unwrap();
                        let (start, end): (usize, usize) =
                            (start.parse().unwrap(), end.parse().unwrap());
                        let end = end.min(bytes.len() - 1);
                        headers.push((
                            "content-range",
                            format!("bytes {start}-{end}/{}", bytes.len()),
                        ));
                        (StatusCode::PARTIAL_CONTENT, bytes.slice(start..=end))
                    }
                    None => (StatusCode::OK, bytes),
                };
                if method == "HEAD" {
                    headers.push(("content-length", part.len().to_string()));
                    return reply(status, &headers, Bytes::new());
                }
                reply(status, &headers, part)
            }
            "DELETE" => {
                objects.remove(&path);
                reply(StatusCode::NO_CONTENT, &[], Bytes::new())
            }
            _ => reply(StatusCode::NOT_IMPLEMENTED, &[], Bytes::new()),
        }
    }
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, value);
    }
    response.body(Full::new(body)).unwrap()
}
