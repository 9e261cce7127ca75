//! The pages' side of what builds leave (issue 30): a finished build's test results and
//! files read for its page, and a test's history page.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kubeci_engine::api::Backend;

use crate::auth::with_cookie;
use crate::pages;
use crate::ui::{chrome, page};
use crate::AppState;

/// What build `number` left — its test results and its files — read together; what
/// cannot be read is said on the page, the rest of it still shown.
pub(crate) async fn left<B: Backend>(
    backend: &B,
    namespace: &str,
    name: &str,
    number: u64,
) -> pages::Left {
    let (tests, outputs) = tokio::join!(
        backend.tests(namespace, name, number),
        backend.outputs(namespace, name, number)
    );
    let unreadable = [tests.as_ref().err(), outputs.as_ref().err()]
        .into_iter()
        .flatten()
        .map(|e| e.message.clone())
        .next();
    pages::Left {
        tests: tests.ok().flatten(),
        outputs: outputs.ok().flatten(),
        unreadable,
    }
}

/// `?name=ID[&build=N]` on a test's history page: the test (`CLASSNAME::NAME`, as a
/// build's tests name it) and the build its history ends at.
#[derive(serde::Deserialize)]
pub(crate) struct HistoryQuery {
    #[serde(default)]
    name: String,
    build: Option<u64>,
}

/// `/jobs/{ns}/{name}/tests/history?name=ID[&build=N]`: test `ID`'s history over the
/// job's archived builds (up to build N).
pub(crate) async fn test_history_page<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    Path((namespace, job)): Path<(String, String)>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = query.map(|Query(q)| q);
    let test = query.as_ref().map_or("", |q| q.name.as_str());
    let here = pages::history_path(
        &namespace,
        &job,
        test,
        query.as_ref().ok().and_then(|q| q.build),
    );
    let (chrome, cookie) = chrome(&state, &headers, here, Some(&namespace));
    let problem = |status, what: &str| page(status, pages::not_found(&chrome, what));
    let query = match query {
        Ok(query) if !query.name.is_empty() => query,
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "Say which test: `?name=CLASSNAME::NAME`, as a build's tests name it, and `&build=N` to end its history at build N.",
            )
        }
    };
    let Some(declared) = state.backend.declaration(&namespace, &job) else {
        let what = format!("There is no job {namespace}/{job}.");
        return problem(StatusCode::NOT_FOUND, &what);
    };
    let before = query.build.map(|n| n.saturating_add(1));
    let history = state
        .backend
        .test_history(&namespace, &job, &query.name, before)
        .await;
    let history = match history {
        Ok(history) => history,
        Err(e) => {
            let what = format!("{namespace}/{job}: {}", query.name);
            let html = pages::archive_unreadable(&chrome, &what, &e.message);
            return page(StatusCode::SERVICE_UNAVAILABLE, html);
        }
    };
    let web = (declared.job.as_ref()).and_then(|j| pages::repository_web(&j.git.url));
    let html = pages::test_history(
        &namespace,
        &job,
        &history,
        query.build,
        web.as_deref(),
        &chrome,
    );
    with_cookie(page(StatusCode::OK, html), cookie)
}
