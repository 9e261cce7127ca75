//! The local engine's store is used off the async workers: while a request waits for the
//! store (a slow disk, a long query, a busy lock), the server's other work still answers.

use std::sync::Arc;
use std::time::Duration;

use kubeci_engine::api::{Backend, LogOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the test holds the store at most: without the fix the single worker is stuck
/// until then, and `/healthz` answers only after it.
const HELD_AT_MOST: Duration = Duration::from_secs(20);

async fn healthz(address: std::net::SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: kubeci\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

/// One worker thread: a store call made inline on it would stall everything else.
#[tokio::test(flavor = "current_thread")]
async fn pages_answer_while_a_log_read_waits_for_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    let engine = kubeci_local::LocalBackend::start(
        kubeci_local::Settings {
            jobs_dir: jobs,
            data_dir: dir.path().join("data"),
            secrets_dir: None,
            kubeci_exe: env!("CARGO_BIN_EXE_kubeci").into(),
            render: Default::default(),
            load: Default::default(),
            log_url_template: None,
            reload_every: Duration::from_secs(60),
            log_limit: kubeci_local::DEFAULT_LOG_LIMIT,
            build_user: None,
        },
        None,
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = kubeci_server::app(Arc::clone(&engine), kubeci_server::Access::default());
    tokio::spawn(async move { axum::serve(listener, app).await });
    assert!(healthz(address).await.ends_with("ok"));

    // Another thread holds the store (as a slow write would) until told, or at most
    // HELD_AT_MOST; it says whether it was told.
    let (held, is_held) = tokio::sync::oneshot::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn({
        let engine = Arc::clone(&engine);
        move || {
            engine.with_store_held(|| {
                held.send(()).unwrap();
                released.recv_timeout(HELD_AT_MOST).is_ok()
            })
        }
    });
    is_held.await.unwrap();

    // A reader asks for a build's log: it waits for the store.
    let reading = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move {
            let how = LogOptions {
                follow: false,
                timestamps: false,
            };
            engine
                .log("default", "hello", 1, how)
                .await
                .err()
                .map(|e| e.to_string())
        }
    });

    let answer = healthz(address).await;
    let log_was_waiting = !reading.is_finished();
    let _ = release.send(());
    let released_by_the_test = holder.join().unwrap();
    assert!(answer.ends_with("ok"), "{answer}");
    assert!(
        released_by_the_test,
        "/healthz answered only once the store was released ({HELD_AT_MOST:?} later): the log read waited for the store on the async worker"
    );
    assert!(log_was_waiting, "the log read did not wait for the store");
    // Then the read goes on as before.
    let read = reading.await.unwrap();
    assert!(
        read.as_deref().is_some_and(|e| e.contains("hello")),
        "{read:?}"
    );
}
