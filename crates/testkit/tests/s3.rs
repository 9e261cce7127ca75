//! versitygw, the real S3 server of the archive's tests, started by `S3Server` and by
//! `scripts/s3`, serves what the archive's client needs — `object_store`'s AmazonS3 with
//! the settings it reads from the `AWS_*` environment: whole and ranged reads, listings by
//! prefix, delimiter and offset, multipart uploads of megabytes, conditional writes
//! (`If-None-Match: *`, `If-Match`, also on completing a multipart upload), and an outage
//! followed by a restart over the same objects.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::path::Path as Key;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, RetryConfig, UpdateVersion,
};

use kubeci_testkit::S3Server;

/// A client of the store at `env` (name, value pairs as `scripts/s3 up` prints them and
/// `S3Server::env` gives them), configured as `AmazonS3Builder::from_env` would be.
fn client_from_env(env: &[(String, String)], bucket: &str) -> AmazonS3Builder {
    // object_store's reqwest brings rustls without a provider (as kubeci-archive builds
    // it): the process's default is ring, as kubeci's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket);
    for (name, value) in env {
        let key: AmazonS3ConfigKey = name.to_ascii_lowercase().parse().unwrap();
        builder = builder.with_config(key, value);
    }
    // An outage fails a request within seconds instead of object_store's 3 minutes.
    builder.with_retry(RetryConfig {
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        ..RetryConfig::default()
    })
}

fn client(server: &S3Server) -> AmazonS3 {
    client_from_env(&server.env(), server.bucket())
        .build()
        .unwrap()
}

/// `size` bytes that differ from part to part, so a misplaced part shows.
fn pattern(size: usize) -> Vec<u8> {
    (0..size)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect()
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn objects_round_trip_whole_in_ranges_and_are_files_under_the_root() {
    let server = S3Server::start();
    let store = client(&server);
    let key = Key::from("builds/job-a/7/log/build.txt");
    let log = b"line 1\nline 2\nline 3\n".to_vec();

    store.put(&key, log.clone().into()).await.unwrap();

    let whole = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(whole, log);
    assert_eq!(store.get_range(&key, 7..13).await.unwrap(), &log[7..13]);
    let tail = GetOptions::new().with_range(Some(GetRange::Suffix(7)));
    let tail = store
        .get_opts(&key, tail)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(tail, &log[log.len() - 7..]);
    let rest = GetOptions::new().with_range(Some(GetRange::Offset(14)));
    let rest = store
        .get_opts(&key, rest)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(rest, &log[14..]);
    let meta = store.head(&key).await.unwrap();
    assert_eq!(meta.size, log.len() as u64);
    assert!(meta.e_tag.is_some(), "{meta:?}");
    // The POSIX backend keeps the object as a file, where a test can reach it.
    let file = server.root().join("kubeci/builds/job-a/7/log/build.txt");
    assert_eq!(std::fs::read(file).unwrap(), log);

    store.delete(&key).await.unwrap();
    let gone = store.get(&key).await.unwrap_err();
    assert!(
        matches!(gone, object_store::Error::NotFound { .. }),
        "{gone:?}"
    );
    let missing = store.head(&Key::from("builds/none")).await.unwrap_err();
    assert!(
        matches!(missing, object_store::Error::NotFound { .. }),
        "{missing:?}"
    );
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn listings_go_by_prefix_delimiter_and_offset() {
    let server = S3Server::start();
    let store = client(&server);
    let keys = [
        "jobs/a/builds/1/record.json",
        "jobs/a/builds/2/record.json",
        "jobs/a/builds/3/record.json",
        "jobs/a/index.json",
        "jobs/b/builds/1/record.json",
    ];
    for key in keys {
        store.put(&Key::from(key), key.into()).await.unwrap();
    }
    let names = |metas: Vec<object_store::ObjectMeta>| {
        let mut names: Vec<String> = metas.into_iter().map(|m| m.location.into()).collect();
        names.sort();
        names
    };

    let under_a: Vec<_> = store
        .list(Some(&Key::from("jobs/a")))
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names(under_a), keys[..4]);

    let level = store
        .list_with_delimiter(Some(&Key::from("jobs/a")))
        .await
        .unwrap();
    assert_eq!(level.common_prefixes, [Key::from("jobs/a/builds")]);
    assert_eq!(names(level.objects), ["jobs/a/index.json"]);

    let after: Vec<_> = store
        .list_with_offset(
            Some(&Key::from("jobs/a/builds")),
            &Key::from("jobs/a/builds/1/record.json"),
        )
        .try_collect()
        .await
        .unwrap();
    assert_eq!(names(after), keys[1..3]);
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn a_multipart_upload_of_megabytes_round_trips() {
    let server = S3Server::start();
    let store = client(&server);
    let key = Key::from("builds/big/log");
    let content = pattern(12 << 20);

    let mut upload = store.put_multipart(&key).await.unwrap();
    // S3's smallest part but the last is 5 MiB.
    for part in content.chunks(5 << 20) {
        upload.put_part(part.to_vec().into()).await.unwrap();
    }
    upload.complete().await.unwrap();

    assert_eq!(store.head(&key).await.unwrap().size, content.len() as u64);
    let back = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert!(back == content, "the 12 MiB read back differ");
    let across_parts = (5 << 20) - 10..(5 << 20) + 10;
    assert_eq!(
        store.get_range(&key, across_parts.clone()).await.unwrap(),
        &content[across_parts.start as usize..across_parts.end as usize]
    );
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn a_second_create_and_a_stale_update_are_refused() {
    let server = S3Server::start();
    let store = client(&server);
    let key = Key::from("jobs/a/builds/9/record.json");
    let create = || PutMode::Create.into();

    let first = store
        .put_opts(&key, "first".into(), create())
        .await
        .unwrap();
    let second = store.put_opts(&key, "second".into(), create()).await;
    assert!(
        matches!(second, Err(object_store::Error::AlreadyExists { .. })),
        "{second:?}"
    );
    let read = |store: &AmazonS3| {
        let store = store.clone();
        let key = key.clone();
        async move { store.get(&key).await.unwrap().bytes().await.unwrap() }
    };
    assert_eq!(read(&store).await, "first");

    let update = |e_tag: Option<String>| {
        PutMode::Update(UpdateVersion {
            e_tag,
            version: None,
        })
        .into()
    };
    let updated = store
        .put_opts(&key, "updated".into(), update(first.e_tag.clone()))
        .await
        .unwrap();
    assert_ne!(updated.e_tag, first.e_tag);
    let stale = store
        .put_opts(&key, "stale".into(), update(first.e_tag))
        .await;
    assert!(
        matches!(stale, Err(object_store::Error::Precondition { .. })),
        "{stale:?}"
    );
    assert_eq!(read(&store).await, "updated");
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn completing_a_multipart_upload_with_if_none_match_refuses_an_existing_object() {
    let server = S3Server::start();
    // object_store's copy-if-not-exists by multipart: one part copied from the source,
    // then CompleteMultipartUpload with `If-None-Match: *`.
    let store = client_from_env(&server.env(), server.bucket())
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart)
        .build()
        .unwrap();
    let (from, to) = (Key::from("staging/log"), Key::from("builds/1/log"));
    store.put(&from, "the log".into()).await.unwrap();

    store.copy_if_not_exists(&from, &to).await.unwrap();
    store.put(&from, "another log".into()).await.unwrap();
    let again = store.copy_if_not_exists(&from, &to).await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    let kept = store.get(&to).await.unwrap().bytes().await.unwrap();
    assert_eq!(kept, "the log");
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn a_stopped_server_refuses_requests_and_a_restart_serves_the_same_objects() {
    let mut server = S3Server::start();
    let store = client(&server);
    let key = Key::from("builds/1/record.json");
    store.put(&key, "kept".into()).await.unwrap();
    let port = server.port();

    server.stop();
    assert!(!server.is_running());
    let refused = store
        .put(&Key::from("builds/2/record.json"), "x".into())
        .await;
    assert!(refused.is_err(), "a put while stopped: {refused:?}");

    server.restart();
    assert_eq!(server.port(), port);
    let kept = store.get(&key).await.unwrap().bytes().await.unwrap();
    assert_eq!(kept, "kept");
    store
        .put(&Key::from("builds/2/record.json"), "y".into())
        .await
        .unwrap();
}

#[test]
#[should_panic(expected = "build it with scripts/s3 build")]
fn a_missing_versitygw_fails_saying_how_to_build_it() {
    S3Server::start_binary("/nonexistent/versitygw");
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `scripts/s3 ARGS` with its server in `dir` on `port`.
fn script(dir: &Path, port: u16, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(repo_root().join("scripts/s3"))
        .args(args)
        .env("KUBECI_S3_DIR", dir)
        .env("KUBECI_S3_PORT", port.to_string())
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The `export NAME=VALUE` lines of `up` as pairs.
fn exports(output: &Output) -> Vec<(String, String)> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export ")?.split_once('='))
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

#[tokio::test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
async fn scripts_s3_up_serves_the_environment_it_prints_and_down_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let up = script(dir.path(), port, &["up"]);
    let _down = scopeguard(dir.path(), port);
    assert!(up.status.success(), "{}", text(&up));
    let env = exports(&up);
    let value = |name: &str| &env.iter().find(|(n, _)| n == name).unwrap().1;
    assert_eq!(
        value("AWS_ENDPOINT_URL"),
        &format!("http://127.0.0.1:{port}")
    );
    let bucket = value("KUBECI_S3_BUCKET").clone();
    let aws: Vec<_> = env
        .iter()
        .filter(|(name, _)| name.starts_with("AWS_"))
        .cloned()
        .collect();
    let store = client_from_env(&aws, &bucket).build().unwrap();
    store.put(&Key::from("a/b"), "c".into()).await.unwrap();
    let back = store
        .get(&Key::from("a/b"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back, "c");
    assert_eq!(
        std::fs::read(dir.path().join("data/kubeci/a/b")).unwrap(),
        b"c"
    );
    assert!(Path::new(value("KUBECI_VERSITYGW")).is_file());

    let twice = script(dir.path(), port, &["up"]);
    assert!(!twice.status.success());
    assert!(text(&twice).contains("already up"), "{}", text(&twice));

    let down = script(dir.path(), port, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(!script(dir.path(), port, &["status"]).status.success());
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "something still listens on {port} after down"
    );
}

#[test]
#[ignore = "needs versitygw (scripts/s3 build): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
fn scripts_s3_up_on_a_port_in_use_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let up = script(dir.path(), port, &["up"]);
    assert!(!up.status.success());
    assert!(
        text(&up).contains(&format!("port {port} on 127.0.0.1 is in use")),
        "{}",
        text(&up)
    );
}

/// Takes the script's server down when the test ends, passed or failed.
fn scopeguard(dir: &Path, port: u16) -> impl Drop {
    struct Down(PathBuf, u16);
    impl Drop for Down {
        fn drop(&mut self) {
            let _ = script(&self.0, self.1, &["down"]);
        }
    }
    Down(dir.to_path_buf(), port)
}
