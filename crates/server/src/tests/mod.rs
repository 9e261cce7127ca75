//! The server's tests: its routes called in-process (`oneshot`), with a fake backend.

mod live;
mod proxy;
mod sessions;

use super::*;
use crate::auth::*;
use crate::ui::*;
use axum::body::Body;
use axum::body::Bytes;
use axum::http::Request;
use axum::http::{header, StatusCode};
use kubeci_build::BuildRequest;
use kubeci_engine::api::{
    Backend, CancelError, Delivery, LogError, TriggerError, TriggerRequest, Triggered, Webhooks,
};
use kubeci_engine::api::{BuildView, JobView};
use tower::ServiceExt;

/// A backend with one job, `demo`, whose build 1 exists; it records who started what.
#[derive(Default)]
struct Fake {
    started: std::sync::Mutex<Vec<String>>,
    log: FakeLog,
}

/// Build 1's log, as the fake serves it.
#[derive(Default)]
enum FakeLog {
    /// None: the log is not found.
    #[default]
    Absent,
    /// These chunks, then the end; build 1 has succeeded.
    Ended(Vec<Vec<u8>>),
    /// A log that stays open, printing nothing; the flag is set once its stream is dropped.
    Open(Arc<std::sync::atomic::AtomicBool>),
}

/// Sets its flag when dropped.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Backend for Fake {
    fn ready(&self) -> bool {
        true
    }
    fn kind(&self) -> kubeci_engine::api::EngineKind {
        kubeci_engine::api::EngineKind::Local
    }
    fn jobs(&self) -> Vec<JobView> {
        Vec::new()
    }
    fn declared_jobs(&self) -> Vec<Arc<kubeci_spec::LoadedJob>> {
        Vec::new()
    }
    fn builds(&self, _: &str, name: &str) -> Option<Vec<BuildView>> {
        let ended = matches!(self.log, FakeLog::Ended(_)).then(|| BuildView {
            name: "demo-1".into(),
            finished_at: Some("2026-11-30T07:34:00Z".into()),
            ..crate::pages::sample_build(1, kubeci_engine::Phase::Succeeded)
        });
        (name == "demo").then(|| ended.into_iter().collect())
    }
    async fn trigger(&self, request: TriggerRequest) -> Result<Triggered, TriggerError> {
        if request.name != "demo" {
            return Err(TriggerError::NotFound {
                namespace: request.namespace,
                name: request.name,
            });
        }
        self.started
            .lock()
            .unwrap()
            .push(request.build.requested_by.clone().unwrap_or_default());
        Ok(Triggered {
            build: BuildView {
                name: "demo-1".into(),
                trigger: Some("manual".into()),
                requested_by: request.build.requested_by,
                ..crate::pages::sample_build(1, kubeci_engine::Phase::Pending)
            },
            created: request.key.is_none(),
        })
    }
    async fn cancel(
        &self,
        namespace: &str,
        name: &str,
        number: u64,
        _: &str,
    ) -> Result<BuildView, CancelError> {
        Err(CancelError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
            number,
        })
    }
    async fn approve(
        &self,
        namespace: &str,
        name: &str,
        _: kubeci_engine::approval::Approval,
    ) -> Result<(), kubeci_engine::api::ApproveError> {
        Err(kubeci_engine::api::ApproveError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    }
    fn approvals(&self, _: &str, _: &str) -> Vec<kubeci_engine::approval::Approval> {
        Vec::new()
    }
    async fn request(&self, _: &str, name: &str, number: u64) -> Option<BuildRequest> {
        (name == "demo" && number == 1).then(|| BuildRequest::manual(1))
    }
    fn declaration(&self, _: &str, name: &str) -> Option<Arc<kubeci_spec::LoadedJob>> {
        let text = "- job:\n    name: demo\n    git:\n      url: https://example.com/demo.git\n    run_command: make\n";
        let report = kubeci_spec::load("demo.yaml", text.as_bytes(), &Default::default());
        (name == "demo").then(|| Arc::new(report.jobs.into_iter().next().unwrap()))
    }
    fn specs(&self, _: Option<&[String]>) -> Vec<(String, Arc<kubeci_spec::Job>)> {
        Vec::new()
    }
    async fn log(
        &self,
        _: &str,
        _: &str,
        _: u64,
        _: kubeci_engine::api::LogOptions,
    ) -> Result<kubeci_engine::api::LogStream, LogError> {
        use futures_util::StreamExt;
        match &self.log {
            FakeLog::Absent => Err(LogError::NotFound("no log".into())),
            FakeLog::Ended(chunks) => {
                Ok(futures_util::stream::iter(chunks.clone()).map(Ok).boxed())
            }
            FakeLog::Open(dropped) => {
                let flag = DropFlag(Arc::clone(dropped));
                Ok(futures_util::stream::pending()
                    .map(move |chunk| {
                        let _ = &flag;
                        chunk
                    })
                    .boxed())
            }
        }
    }
}

async fn call(
    app: Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_build_page_holds_only_the_end_of_a_long_log_from_a_whole_line() {
    let lines: Vec<Result<Vec<u8>, String>> = (0..10_000)
        .map(|i| Ok(format!("line {i:05}\n").into_bytes()))
        .collect();
    let stream: kubeci_engine::api::LogStream = Box::pin(futures_util::stream::iter(lines));
    let tail = log_tail(stream, 1000).await;
    let text = String::from_utf8(tail.text).unwrap();
    assert!(text.len() <= 1000, "{}", text.len());
    assert!(
        text.starts_with("line ") && text.ends_with("line 09999\n"),
        "{text}"
    );
    assert_eq!(tail.skipped_bytes as usize + text.len(), 10_000 * 11);
    let first_shown: u64 = text[5..10].parse().unwrap();
    assert_eq!(
        tail.skipped_lines, first_shown,
        "the lines before the tail, counted"
    );
    let short: kubeci_engine::api::LogStream =
        Box::pin(futures_util::stream::iter(vec![Ok(b"a\nb\n".to_vec())]));
    assert_eq!(
        log_tail(short, 1000).await,
        LogTail {
            text: b"a\nb\n".to_vec(),
            skipped_bytes: 0,
            skipped_lines: 0,
        }
    );
}

#[tokio::test]
async fn actions_need_the_token() {
    let open = || {
        app(
            Arc::new(Fake::default()),
            Access {
                token: Some("s3cret".into()),
                ..Access::default()
            },
        )
    };
    let closed = app(Arc::new(Fake::default()), Access::default());
    let uri = "/api/v1/jobs/default/demo/builds";
    assert_eq!(
        call(closed, "POST", uri, Some("s3cret")).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(open(), "POST", uri, None).await.0,
        StatusCode::UNAUTHORIZED
    );
    for wrong in ["wrong", "s3creT", "t3cret"] {
        let (status, body) = call(open(), "POST", uri, Some(wrong)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("forbidden")),
            "{wrong}: of the token's length or not"
        );
    }
    let (status, body) = call(open(), "POST", uri, Some("s3cret")).await;
    assert_eq!(
        (
            status,
            body["number"].as_u64(),
            body["requested_by"].as_str()
        ),
        (StatusCode::CREATED, Some(1), Some("api"))
    );
    assert_eq!(
        call(
            open(),
            "POST",
            "/api/v1/jobs/default/demo/builds/1/cancel",
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED,
        "cancelling needs the token too"
    );
    let (status, body) = call(
        open(),
        "POST",
        "/api/v1/jobs/default/nope/builds",
        Some("s3cret"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("job-not-found"))
    );
}

#[tokio::test]
async fn reads_are_open_and_errors_have_one_shape() {
    let app = || app(Arc::new(Fake::default()), Access::default());
    assert_eq!(
        call(app(), "GET", "/api/v1/jobs", None).await.1,
        json!({"items": []})
    );
    assert_eq!(
        call(app(), "GET", "/api/v1/jobs/default/demo/builds", None)
            .await
            .0,
        StatusCode::OK
    );
    let (status, body) = call(app(), "GET", "/api/v1/jobs/default/other/builds", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("job-not-found"))
    );
    assert_eq!(
        call(app(), "GET", "/nowhere", None).await.1["error"]["code"],
        "not-found"
    );
}

#[tokio::test]
async fn a_value_in_a_link_reads_back_whole_as_a_path_segment_or_a_query_value() {
    // Every character that could end a segment or a value, start an escape, or need UTF-8.
    let awkward = "a:b/c?d#e f%g&h=i+j é";
    let app = || app(Arc::new(Fake::default()), Access::default());
    let get = |uri: String| Request::get(uri).body(Body::empty()).unwrap();

    let job_page = format!("/jobs/ci/{}", pages::urlencode(awkward));
    let (status, body) = send(app(), get(job_page)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "routed to the job page");
    assert!(
        body.contains(&crate::ansi::escape(&format!(
            "There is no job ci/{awkward}."
        ))),
        "{body}"
    );

    let searched = format!("/?q={}&state=", pages::urlencode(awkward));
    let (status, body) = send(app(), get(searched)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains(&format!(
            "name=\"q\" value=\"{}\"",
            crate::ansi::escape(awkward)
        )),
        "{body}"
    );
}

/// Sends `request`; (status, body as text).
async fn send(app: Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

fn as_user(method: &str, uri: &str, user: &str, form: Option<&str>) -> Request<Body> {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("x-forwarded-user", user);
    match form {
        Some(form) => request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned())),
        None => request.body(Body::empty()),
    }
    .unwrap()
}

/// Webhooks that record the size of each body delivered to them.
#[derive(Default)]
struct Sizes(std::sync::Mutex<Vec<usize>>);

impl Webhooks for Sizes {
    fn deliver(
        &self,
        delivery: Delivery,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = kubeci_engine::api::DeliveryAnswer> + Send + '_>,
    > {
        self.0.lock().unwrap().push(delivery.body.len());
        Box::pin(async {
            kubeci_engine::api::DeliveryAnswer {
                status: 202,
                body: json!({}),
            }
        })
    }
}

#[tokio::test]
async fn a_delivery_without_a_usable_signature_is_refused_before_its_body_is_read() {
    // No webhook secret: every delivery is refused, and its body — here one that never
    // ends — is not waited for.
    let endless = futures_util::stream::pending::<Result<Bytes, std::io::Error>>();
    let request = Request::builder()
        .method("POST")
        .uri("/hooks/github")
        .header("x-github-event", "ping")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(Body::from_stream(endless))
        .unwrap();
    let app = app(Arc::new(Fake::default()), Access::default());
    let answered =
        tokio::time::timeout(std::time::Duration::from_secs(10), send(app, request)).await;
    let (status, body) = answered.expect("answered without reading the body");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.contains("no-webhook-secret"), "{body}");
}

#[tokio::test]
async fn each_route_takes_bodies_up_to_its_own_limit() {
    let sizes = Arc::new(Sizes::default());
    let app = || {
        app_with_webhooks(
            Arc::new(Fake::default()),
            Access {
                token: Some("s3cret".into()),
                ..Access::default()
            },
            Arc::clone(&sizes) as Arc<dyn Webhooks>,
        )
    };
    let post = |uri: &str, body: Vec<u8>| {
        Request::builder()
            .method("POST")
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-github-event", "ping")
            .body(Body::from(body))
            .unwrap()
    };
    // A delivery far above the forms' limit is taken whole; above GitHub's, refused.
    let (status, _) = send(app(), post("/hooks/github", vec![b'x'; 1 << 20])).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = send(app(), post("/hooks/github", vec![b'x'; MAX_DELIVERY + 1])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(*sizes.0.lock().unwrap(), [1 << 20]);

    // The right token padded past the forms' limit signs no one in.
    let padded = format!("token=s3cret&next=/&pad={}", "x".repeat(MAX_REQUEST));
    let response = app()
        .oneshot(post("/login", padded.into_bytes()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let (status, _) = send(app(), post("/login", b"token=s3cret&next=/".to_vec())).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the same form, unpadded, signs in"
    );
}

#[tokio::test]
async fn a_sign_in_with_a_token_of_the_same_length_but_one_character_off_is_refused() {
    let app = || {
        app(
            Arc::new(Fake::default()),
            Access {
                token: Some("s3cret".into()),
                ..Access::default()
            },
        )
    };
    let sign_in = |token: &str| {
        Request::post("/login")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={token}&next=/")))
            .unwrap()
    };
    for wrong in ["s3creT", "t3cret", "s3cre", "s3crets"] {
        let response = app().oneshot(sign_in(wrong)).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{wrong}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
    }
    let response = app().oneshot(sign_in("s3cret")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(response.headers().get(header::SET_COOKIE).is_some());
}

#[test]
fn tokens_are_compared_whole() {
    assert!(same_secret("abc", "abc"));
    assert!(!same_secret("abc", "abd"), "the same length, one byte off");
    assert!(!same_secret("abd", "abc"));
    assert!(!same_secret("abc", "ab"));
    assert!(!same_secret("ab", "abc"));
    assert!(!same_secret("", "abc"));
}

#[tokio::test]
async fn signing_out_clears_the_session_and_signing_in_goes_only_to_this_server() {
    let app_for_tests = || {
        app(
            Arc::new(Fake::default()),
            Access {
                token: Some("s3cret".into()),
                ..Access::default()
            },
        )
    };
    let session = session::issue("s3cret", now(), "a-nonce");
    let response = app_for_tests()
        .oneshot(
            Request::post("/logout")
                .header(header::COOKIE, format!("kubeci_session={session}"))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "csrf={}",
                    session::csrf("s3cret", &session)
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/");
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    assert!(
        cookie.starts_with("kubeci_session=;") && cookie.contains("Max-Age=0"),
        "{cookie}"
    );

    // The open redirect found by the review: `%09` (a tab) made `/\t/evil.example/`,
    // which browsers follow to another host; a line break or NUL left no Location at all.
    for next in [
        "%2F%09%2Fevil.example%2F",
        "%2F%0A%2Fevil.example",
        "%2F%00",
        "%2F%0D",
    ] {
        let response = app_for_tests()
            .oneshot(
                Request::post("/login")
                    .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(Body::from(format!("token=s3cret&next={next}")))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{next}");
        assert_eq!(response.headers()[header::LOCATION], "/", "{next}");
    }
}
