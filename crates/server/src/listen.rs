//! The listener: HTTP/1 connections with a read deadline, so that a slow or silent
//! client (slowloris) holds a connection for a bounded time.
//!
//! `axum::serve` sets no timer, so hyper's header read timeout never fires there: a
//! client sending half a request head kept its connection open forever. Here:
//! - a request's head must arrive within `read_timeout` of the connection opening, or
//!   of the previous response on a kept-alive connection (hyper closes it otherwise);
//! - its body must then arrive within `read_timeout` more: a body still incomplete is
//!   answered `408 Request Timeout` and the connection closed. A build pod's file
//!   (`/internal/v1/outputs/…`, up to 512 MiB, read only once its token is known) must
//!   instead keep coming: each piece within `read_timeout` of the one before.
//!
//! Responses are not limited: a followed log streams as long as the build runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{header, HeaderValue, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// Serves `app` on `listener` until `shutdown` completes; then stops accepting and
/// gives the requests in flight up to `read_timeout` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    read_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    back_off_after(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small answers (health, badges) should not wait for Nagle.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            answer(app.clone(), request, read_timeout)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection ended");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(read_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!("stopped with requests still in flight (followed logs)");
    }
}

/// A failed accept: a connection that went away before it was accepted is nothing; any
/// other error (out of file descriptors) is waited out briefly instead of spinning.
async fn back_off_after(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(250)).await;
}

/// One request through `app`, its body under the deadline.
async fn answer(
    app: Router,
    request: Request<Incoming>,
    read_timeout: Duration,
) -> Result<Response, std::convert::Infallible> {
    let expired = Arc::new(AtomicBool::new(false));
    let path = request.uri().path();
    let streamed = STREAMED_BODIES
        .iter()
        .any(|prefix| path.starts_with(prefix));
    let request = request.map(|body| DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(read_timeout)),
        expired: Arc::clone(&expired),
        idle: streamed.then_some((read_timeout, false)),
    });
    let response = app.oneshot(request).await?;
    if expired.load(Ordering::Relaxed) {
        return Ok(too_slow(read_timeout));
    }
    Ok(response)
}

/// `408`, and the connection closes: the rest of the body is not waited for.
fn too_slow(read_timeout: Duration) -> Response {
    let mut response = crate::error(
        StatusCode::REQUEST_TIMEOUT,
        "request-timeout",
        format!(
            "the request body did not arrive within {}s; send it at once",
            read_timeout.as_secs_f64()
        ),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The paths whose bodies are files streamed as they come (a build pod's collector): each
/// piece within the read timeout of the one before, and [`kubeci_engine`]'s deadline for
/// the whole file. Every other body (a collector's `done` too) arrives within the read
/// timeout.
const STREAMED_BODIES: [&str; 2] = [
    "/internal/v1/outputs/reports/",
    "/internal/v1/outputs/artifacts/",
];

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
    /// A streamed body's deadline: each piece within this of the one before (or of the
    /// first read of it), and whether it was read yet.
    idle: Option<(Duration, bool)>,
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if let Some((idle, read)) = &mut this.idle {
            if !*read {
                *read = true;
                this.deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + *idle);
            }
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if let Some((idle, _)) = this.idle {
                this.deadline
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle);
            }
            return Poll::Ready(frame.map(|result| result.map_err(Into::into)));
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    //! Real TCP on loopback, a client misbehaving byte by byte.

    use super::*;
    use axum::routing::{get, post};
    use std::sync::atomic::AtomicUsize;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const READ_TIMEOUT: Duration = Duration::from_secs(1);
    /// How long a test waits for what should happen after about READ_TIMEOUT.
    const BOUND: Duration = Duration::from_secs(30);

    /// A server with `/healthz`, `/upload` (counts the bodies it received whole) and
    /// `/follow` (answers in three parts, each after READ_TIMEOUT).
    async fn start() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let uploads = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&uploads);
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/upload",
                post(move |body: Bytes| async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    format!("{} bytes", body.len())
                }),
            )
            .route(
                "/internal/v1/outputs/artifacts/upload",
                post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
            )
            .route(
                "/internal/v1/outputs/done",
                post(|body: Bytes| async move { format!("{} bytes", body.len()) }),
            )
            .route(
                "/follow",
                get(|| async {
                    let parts = futures_util::stream::unfold(0, |sent| async move {
                        if sent == 3 {
                            return None;
                        }
                        tokio::time::sleep(READ_TIMEOUT).await;
                        let part = Bytes::from(format!("part {sent}\n"));
                        Some((Ok::<_, std::convert::Infallible>(part), sent + 1))
                    });
                    axum::body::Body::from_stream(parts)
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, app, READ_TIMEOUT, std::future::pending()));
        (address, uploads)
    }

    /// Everything the server sends until it closes the connection; fails the test if it
    /// is still open after BOUND.
    async fn read_until_closed(stream: &mut TcpStream) -> String {
        let mut received = Vec::new();
        tokio::time::timeout(BOUND, async {
            let mut buffer = [0u8; 4096];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                }
            }
        })
        .await
        .expect("the server should have closed the connection");
        String::from_utf8_lossy(&received).into_owned()
    }

    /// Sends `request` on a new connection; everything answered until the server closes
    /// it. (The server may stop reading before all of the request is written.)
    async fn exchange(address: std::net::SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let _ = stream.write_all(request).await;
        read_until_closed(&mut stream).await
    }

    async fn healthz(address: std::net::SocketAddr) -> String {
        exchange(
            address,
            b"GET /healthz HTTP/1.1\r\nHost: kubeci\r\nConnection: close\r\n\r\n",
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_never_finishes_its_request_head_is_closed() {
        let (address, _) = start().await;
        let mut half = TcpStream::connect(address).await.unwrap();
        half.write_all(b"GET /healthz HTTP/1.1\r\nHost: kubeci\r\n")
            .await
            .unwrap();
        let mut silent = TcpStream::connect(address).await.unwrap();
        assert!(healthz(address).await.ends_with("ok"));
        assert_eq!(
            read_until_closed(&mut half).await,
            "",
            "no answer, just closed"
        );
        assert_eq!(read_until_closed(&mut silent).await, "");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_head_trickled_byte_by_byte_is_cut_off_at_the_deadline() {
        let (address, _) = start().await;
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: kubeci\r\nX-Padding: {}\r\n\r\n",
            "x".repeat(200)
        );
        // One byte every 50 ms would take 12 s: far past the 1 s deadline. The deadline
        // is on the whole head, not on each byte.
        let mut cut_off = false;
        for byte in head.as_bytes() {
            if stream.write_all(&[*byte]).await.is_err() {
                cut_off = true;
                break;
            }
            let mut probe = [0u8; 1];
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut probe)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    cut_off = true;
                    break;
                }
                Ok(Ok(_)) => panic!("the server answered a head it never fully received"),
                Err(_) => {}
            }
        }
        assert!(cut_off, "the whole head was accepted byte by byte");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_kept_alive_connection_is_closed() {
        let (address, _) = start().await;
        let answer = exchange(address, b"GET /healthz HTTP/1.1\r\nHost: kubeci\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("ok"), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_body_sent_too_slowly_is_answered_408_and_never_handled() {
        let (address, uploads) = start().await;
        let answer = exchange(
            address,
            b"POST /upload HTTP/1.1\r\nHost: kubeci\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("\"request-timeout\""), "{answer}");
        assert_eq!(uploads.load(Ordering::SeqCst), 0);

        let answer = exchange(address, b"POST /upload HTTP/1.1\r\nHost: kubeci\r\nContent-Length: 10\r\nConnection: close\r\n\r\n0123456789").await;
        assert!(answer.ends_with("10 bytes"), "{answer}");
        assert_eq!(uploads.load(Ordering::SeqCst), 1);
    }

    /// Sends a head, then `pieces` pieces of ten bytes, each `every` after the one before;
    /// the answer.
    async fn trickle(
        address: std::net::SocketAddr,
        path: &str,
        pieces: usize,
        every: Duration,
    ) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: kubeci\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            pieces * 10
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        for _ in 0..pieces {
            tokio::time::sleep(every).await;
            if stream.write_all(b"0123456789").await.is_err() {
                break;
            }
        }
        read_until_closed(&mut stream).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_build_pod_s_file_may_take_longer_than_the_deadline_while_it_keeps_coming() {
        let (address, _) = start().await;
        let every = READ_TIMEOUT / 3;
        let answer = trickle(address, "/internal/v1/outputs/artifacts/upload", 6, every).await;
        assert!(
            answer.ends_with("60 bytes"),
            "twice the deadline in all: {answer}"
        );
        let answer = trickle(address, "/upload", 6, every).await;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "any other body: {answer}"
        );
        let answer = trickle(address, "/internal/v1/outputs/done", 6, every).await;
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "a collector's done too: {answer}"
        );
        // One that stops coming is cut off all the same.
        let answer = exchange(
            address,
            b"POST /internal/v1/outputs/artifacts/upload HTTP/1.1\r\nHost: kubeci\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_request_head_is_refused_before_routing() {
        let (address, _) = start().await;
        let head = format!(
            "GET /healthz HTTP/1.1\r\nHost: kubeci\r\nX-Padding: {}\r\n\r\n",
            "x".repeat(1 << 20)
        );
        let answer = exchange(address, head.as_bytes()).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{answer}"
        );
        assert!(!answer.ends_with("ok"), "{answer}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_response_is_not_cut_by_the_read_deadline() {
        let (address, _) = start().await;
        let answer = exchange(
            address,
            b"GET /follow HTTP/1.1\r\nHost: kubeci\r\nConnection: close\r\n\r\n",
        )
        .await;
        for part in ["part 0", "part 1", "part 2"] {
            assert!(answer.contains(part), "{part} missing: {answer}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hundreds_of_slow_clients_do_not_keep_others_out() {
        let (address, _) = start().await;
        let mut slow = Vec::new();
        for _ in 0..300 {
            let mut stream = TcpStream::connect(address).await.unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\n")
                .await
                .unwrap();
            slow.push(stream);
        }
        assert!(healthz(address).await.ends_with("ok"));
        for stream in &mut slow {
            assert_eq!(read_until_closed(stream).await, "");
        }
        assert!(healthz(address).await.ends_with("ok"));
    }
}
