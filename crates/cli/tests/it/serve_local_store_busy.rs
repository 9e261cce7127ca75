//! The local engine writes to its store off the async workers, and reads beside the writer:
//! while a request waits for a write (a slow disk, a long transaction), the server's other
//! work still answers, and reads never wait for it.

use std::sync::Arc;
use std::time::Duration;

use kubeci_build::BuildRequest;
use kubeci_engine::api::{Backend, LogOptions, TriggerRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long the test holds the store at most: a call that waited for it on the single
/// worker would stall the test until then.
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
async fn pages_and_reads_answer_while_a_build_request_waits_for_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("hello.yaml"),
        "- job:\n    name: hello\n    git: {url: 'https://github.com/o/r'}\n    run_command: make\n",
    )
    .unwrap();
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
            archiving: Default::default(),
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
    assert!(
        engine
            .jobs()
            .iter()
            .any(|j| j.name.as_deref() == Some("hello")),
        "{:?}",
        engine.jobs()
    );

    // Another thread holds the store's writer (as a slow write would) until told, or at
    // most HELD_AT_MOST; it says whether it was told.
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

    // A build is requested: numbering it is a write, which waits for the store.
    let triggering = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move {
            let request = TriggerRequest {
                namespace: "default".into(),
                name: "hello".into(),
                build: BuildRequest::manual(0),
                key: None,
            };
            engine.trigger(request).await.map(|t| t.build.number)
        }
    });
    // Meanwhile the server answers, and a read is answered from what is stored.
    let answer = healthz(address).await;
    let how = LogOptions {
        follow: false,
        timestamps: false,
    };
    let read_meanwhile = engine.log("default", "hello", 1, how).await.err();
    let trigger_was_waiting = !triggering.is_finished();
    let _ = release.send(());
    let released_by_the_test = holder.join().unwrap();
    assert!(answer.ends_with("ok"), "{answer}");
    assert!(
        released_by_the_test,
        "the test was stuck until the store was released ({HELD_AT_MOST:?} later): something waited for the write on the async worker"
    );
    assert!(
        trigger_was_waiting,
        "the build request did not wait for the store"
    );
    assert!(
        read_meanwhile
            .as_ref()
            .is_some_and(|e| e.to_string().contains("no build 1")),
        "the read while the write waited: {read_meanwhile:?}"
    );
    // Then the request goes on, and its build is read.
    assert_eq!(triggering.await.unwrap().unwrap(), 1);
    assert!(engine.log("default", "hello", 1, how).await.is_ok());
}
