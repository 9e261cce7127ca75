//! Build notifications: each state a build reaches (`pending`, then `success`, `failure`
//! or `error`) is POSTed as JSON to an HTTP endpoint — the way Tekton and Argo send
//! CloudEvents, for chat bots, dashboards and audit logs. It is one [`Reporter`]; the
//! GitHub commit-status reporter is another.
//!
//! The body: `{"id", "namespace", "job", "build", "name", "state", "description", "url",
//! "trigger", "git_url", "commit", "pull_request"}`. A 2xx answer is a delivery; 429 and
//! 5xx answers and network failures are retried (honouring `Retry-After`); other answers
//! are retried slowly, as the receiver may be fixed. Delivery is at least once: kubeci
//! records a delivered state on the build, and sends it again only if it stopped between
//! the two — `id` (also the `Idempotency-Key` header, `<ns>/<job>/<build>/<state>`) lets
//! the receiver drop that repeat.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request, Uri};
use kubeci_engine::report::{
    CommitState, Receipt, Report, ReportError, ReportTarget, Reporter, Reporting,
};

/// Why a notifier cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("`{url}` is not an http:// or https:// URL: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(transparent)]
    Client(#[from] kubeci_https::HttpsError),
}

/// POSTs every build state to one URL.
pub struct WebhookReporter {
    url: Uri,
    client: kubeci_https::HttpsClient,
    timeout: Duration,
}

impl WebhookReporter {
    pub fn new(url: &str) -> Result<WebhookReporter, NotifyError> {
        let invalid = |reason: String| NotifyError::InvalidUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed: Uri = url
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| invalid(e.to_string()))?;
        if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
            return Err(invalid("it needs a scheme and a host".into()));
        }
        Ok(WebhookReporter {
            url: parsed,
            client: kubeci_https::https_client()?,
            timeout: Duration::from_secs(10),
        })
    }

    async fn post(&self, body: Vec<u8>, key: String) -> Result<(), ReportError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, "kubeci")
            .header("idempotency-key", key)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid request");
        let failure = |message: String, retry_after| ReportError {
            message,
            retryable: true,
            retry_after,
        };
        let response = tokio::time::timeout(self.timeout, self.client.request(request))
            .await
            .map_err(|_| failure(format!("{} did not answer in time", self.url), None))?
            .map_err(|e| failure(format!("cannot reach {}: {e}", self.url), None))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the body so the connection can be reused.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            return Ok(());
        }
        Err(ReportError {
            message: format!("{} answered {status}", self.url),
            retryable: status.as_u16() == 429 || status.is_server_error(),
            retry_after,
        })
    }
}

/// The JSON body of a notification; `id` is also sent as the `Idempotency-Key` header.
pub fn body(target: &ReportTarget, state: CommitState, description: &str) -> serde_json::Value {
    serde_json::json!({
        "id": kubeci_engine::report::report_key(target, state),
        "namespace": target.namespace,
        "job": target.job,
        "build": target.number,
        "name": target.build_name,
        "state": state.as_str(),
        "description": description,
        "url": target.url,
        "trigger": target.trigger,
        "git_url": target.git_url,
        "commit": target.commit,
        "pull_request": target.pull_request,
    })
}

impl Reporter for WebhookReporter {
    fn name(&self) -> &str {
        "webhook"
    }

    fn wants(&self, _: &ReportTarget) -> bool {
        true
    }

    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        Box::pin(async move {
            let (target, state, description) = (report.target, report.state, report.description);
            let body = serde_json::to_vec(&body(target, state, description)).expect("JSON");
            self.post(body, kubeci_engine::report::report_key(target, state))
                .await
                .map(|()| Receipt::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use kubeci_engine::build::BuildState;
    use kubeci_engine::report::Reported;

    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use axum::{Json, Router};

    fn target() -> ReportTarget {
        ReportTarget {
            namespace: "team".into(),
            job: "demo".into(),
            number: 3,
            build_name: "demo-3".into(),
            trigger: Some("manual".into()),
            git_url: None,
            commit: Some("abc".into()),
            pull_request: None,
            url: "http://kubeci/jobs/team/demo/builds/3".into(),
            context: None,
            created_at: None,
            workdir: None,
            checkout_dir: None,
        }
    }

    static SUCCEEDED: BuildState = BuildState::Succeeded;
    static NOTHING: Reported = Reported {
        states: Vec::new(),
        check_run: None,
    };

    /// A report of `state` with nothing reported before.
    fn report<'a>(
        target: &'a ReportTarget,
        state: CommitState,
        description: &'a str,
    ) -> Report<'a> {
        Report {
            target,
            state,
            description,
            build: &SUCCEEDED,
            finished_at: None,
            before: &NOTHING,
            may_have_been_sent: false,
            log_tail: None,
            tests: None,
            known_flaky: &[],
        }
    }

    type Received = Arc<Mutex<Vec<serde_json::Value>>>;
    /// The answers to give, in order: (status, Retry-After).
    type Answers = Arc<Mutex<Vec<(u16, Option<&'static str>)>>>;

    async fn receiver(answers: Vec<(u16, Option<&'static str>)>) -> (String, Received) {
        let received: Received = Arc::default();
        let answers = Arc::new(Mutex::new(answers));
        let app = Router::new()
            .route(
                "/hook",
                post(
                    |State((received, answers)): State<(Received, Answers)>,
                     Json(body): Json<serde_json::Value>| async move {
                        received.lock().unwrap().push(body);
                        let (status, retry_after) = answers.lock().unwrap().remove(0);
                        let mut response = axum::response::Response::new(axum::body::Body::empty());
                        *response.status_mut() = StatusCode::from_u16(status).unwrap();
                        if let Some(after) = retry_after {
                            response
                                .headers_mut()
                                .insert("retry-after", after.parse().unwrap());
                        }
                        response
                    },
                ),
            )
            .with_state((received.clone(), answers));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}/hook"), received)
    }

    #[tokio::test]
    async fn states_are_posted_and_failures_say_whether_to_retry() {
        let (url, received) = receiver(vec![(204, None), (503, Some("7")), (404, None)]).await;
        let reporter = WebhookReporter::new(&url).unwrap();
        let target = target();
        reporter
            .report(&report(&target, CommitState::Success, "Build succeeded"))
            .await
            .unwrap();
        assert_eq!(
            received.lock().unwrap()[0],
            body(&target, CommitState::Success, "Build succeeded")
        );
        assert_eq!(received.lock().unwrap()[0]["state"], "success");
        let busy = reporter
            .report(&report(&target, CommitState::Success, "Build succeeded"))
            .await
            .unwrap_err();
        assert!(busy.retryable);
        assert_eq!(busy.retry_after, Some(Duration::from_secs(7)));
        let wrong = reporter
            .report(&report(&target, CommitState::Success, "Build succeeded"))
            .await
            .unwrap_err();
        assert!(!wrong.retryable, "{wrong}");
    }

    #[tokio::test]
    async fn an_unreachable_receiver_is_worth_retrying() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        drop(listener);
        let error = WebhookReporter::new(&url)
            .unwrap()
            .report(&report(&target(), CommitState::Pending, "Queued"))
            .await
            .unwrap_err();
        assert!(error.retryable);
        assert!(error.message.contains("cannot reach"), "{error}");
    }

    #[test]
    fn only_http_urls_are_accepted() {
        assert!(WebhookReporter::new("ftp://host/x").is_err());
        assert!(WebhookReporter::new("not a url").is_err());
    }
}
