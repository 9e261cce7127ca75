//! An s3:// archive against an endpoint on loopback, configured as users do: the URL names
//! the bucket and prefix, the `AWS_*` variables give the rest.

use futures_util::{stream, StreamExt};
use kubeci_archive::{Archive, ArchiveError, ArchiveUrl, LogLine};

use crate::common::{at, build, entry, JOB};
use crate::fake_s3::FakeS3;

fn env(endpoint: &str) -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "eu-west-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDKUBECI"),
        ("AWS_SECRET_ACCESS_KEY", "not-a-real-secret"),
        ("HOME", "/nowhere"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn an_s3_archive_signs_its_requests_to_the_endpoint_the_environment_names() {
    let (s3, address) = FakeS3::start().await;
    let url: ArchiveUrl = "s3://ci-archive/kubeci/prod".parse().unwrap();
    let archive = Archive::open_with_env(&url, &env(&format!("http://{address}"))).unwrap();

    assert_eq!(archive.record::<String>(build(7)).await.unwrap(), None);
    archive
        .put_record(build(7), &"succeeded".to_owned())
        .await
        .unwrap();
    assert_eq!(
        archive.record::<String>(build(7)).await.unwrap().as_deref(),
        Some("succeeded")
    );
    let lines = [
        LogLine::new(at("2026-12-01T10:00:00Z"), "hello"),
        LogLine::untimed("bye"),
    ];
    let given = stream::iter(lines.clone().map(Ok::<_, std::convert::Infallible>));
    archive.put_log(build(7), "build", given).await.unwrap();
    let back: Vec<LogLine> = archive
        .log(build(7), "build", 0)
        .await
        .unwrap()
        .unwrap()
        .map(|l| l.unwrap().line)
        .collect()
        .await;
    assert_eq!(back, lines);
    archive
        .add_to_index(JOB, &[entry(7, "succeeded")])
        .await
        .unwrap();
    archive
        .add_to_index(JOB, &[entry(8, "running")])
        .await
        .unwrap();
    let page = archive.page::<String>(JOB, None, 10).await.unwrap();
    assert_eq!(page.iter().map(|e| e.number).collect::<Vec<_>>(), [8, 7]);

    let seen = s3.seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|s| s.method == "PUT"
            && s.path == "/ci-archive/kubeci/prod/v1/jobs/ci/web/builds/7/record.json"),
        "path-style requests under the bucket and prefix: {seen:#?}"
    );
    assert!(
        seen.iter().all(|s| s
            .authorization
            .starts_with("AWS4-HMAC-SHA256 Credential=AKIDKUBECI/")
            && s.authorization.contains("/eu-west-1/s3/aws4_request")),
        "every request signed with the keys and region from AWS_*: {seen:#?}"
    );
    let index_writes: Vec<_> = seen
        .iter()
        .filter(|s| {
            s.method == "PUT"
                && (s.path.ends_with("/index/0.json") || s.path.ends_with("/head.json"))
        })
        .collect();
    assert_eq!(
        index_writes.len(),
        4,
        "the head and the chunk, for each build: {seen:#?}"
    );
    assert!(
        index_writes.iter().all(|s| s.conditional),
        "index writes are conditional by default: {index_writes:#?}"
    );
}

#[tokio::test]
async fn aws_conditional_put_disabled_writes_the_index_without_preconditions() {
    let (s3, address) = FakeS3::start().await;
    let url: ArchiveUrl = "s3://ci-archive".parse().unwrap();
    let mut env = env(&format!("http://{address}"));
    env.push(("AWS_CONDITIONAL_PUT".to_owned(), "disabled".to_owned()));
    let archive = Archive::open_with_env(&url, &env).unwrap();
    archive
        .add_to_index(JOB, &[entry(1, "succeeded")])
        .await
        .unwrap();
    archive
        .add_to_index(JOB, &[entry(2, "running")])
        .await
        .unwrap();
    let page = archive.page::<String>(JOB, None, 10).await.unwrap();
    assert_eq!(page.iter().map(|e| e.number).collect::<Vec<_>>(), [2, 1]);
    let seen = s3.seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .filter(|s| s.method == "PUT")
            .all(|s| !s.conditional),
        "{seen:#?}"
    );
}

#[tokio::test]
async fn an_unreachable_store_is_an_error_worth_retrying() {
    // A port nothing listens on: bound, then let go.
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let url: ArchiveUrl = "s3://ci-archive".parse().unwrap();
    let archive = Archive::open_with_env(&url, &env(&format!("http://{address}"))).unwrap();
    let error = archive.record::<String>(build(1)).await.unwrap_err();
    assert!(matches!(error, ArchiveError::Read { .. }), "{error:?}");
    assert!(error.is_retryable(), "{error}");
    assert!(
        error
            .to_string()
            .contains("v1/jobs/ci/web/builds/1/record.json"),
        "{error}"
    );
}

#[tokio::test]
async fn settings_a_store_cannot_do_without_are_an_error_at_open() {
    let url: ArchiveUrl = "az://builds".parse().unwrap();
    let error = Archive::open_with_env(&url, &[]).unwrap_err();
    assert!(matches!(error, ArchiveError::Open { .. }), "{error:?}");
    assert!(!error.is_retryable());
    assert!(
        error
            .to_string()
            .starts_with("cannot open the archive az://builds: "),
        "{error}"
    );
}

/// What AWS S3 answers a request signed with the wrong secret: the access key id, the
/// string it signed and the canonical request.
const SIGNATURE_DOES_NOT_MATCH: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><AWSAccessKeyId>AKIDKUBECI</AWSAccessKeyId><StringToSign>AWS4-HMAC-SHA256\n20261201T100000Z</StringToSign><CanonicalRequest>GET /ci-archive/kubeci/prod</CanonicalRequest></Error>";

#[tokio::test]
async fn what_the_store_answers_a_failed_request_is_logged_never_shown() {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_request| async {
                    let mut answer = hyper::Response::new(Full::new(bytes::Bytes::from(
                        SIGNATURE_DOES_NOT_MATCH,
                    )));
                    *answer.status_mut() = hyper::StatusCode::FORBIDDEN;
                    Ok::<_, std::convert::Infallible>(answer)
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    let url: ArchiveUrl = "s3://ci-archive/kubeci/prod".parse().unwrap();
    let archive = Archive::open_with_env(&url, &env(&format!("http://{address}"))).unwrap();
    let error = archive.record::<String>(build(7)).await.unwrap_err();
    assert!(
        error.to_string().contains("AKIDKUBECI"),
        "the whole error, for kubeci's log, has the store's answer: {error}"
    );
    // What pages and the API show of it (`archive_error`, "Archiving is behind"), to
    // whoever may read them.
    let shown = kubeci_archive::engine_error(error).message;
    for secret in [
        "AKIDKUBECI",
        "StringToSign",
        "CanonicalRequest",
        &address.to_string(),
    ] {
        assert!(!shown.contains(secret), "{secret} shown: {shown}");
    }
    assert_eq!(
        shown,
        "cannot read kubeci/prod/v1/jobs/ci/web/builds/7/record.json from the archive: the store denied kubeci permission"
    );
}
