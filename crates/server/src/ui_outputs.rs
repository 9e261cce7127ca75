//! The pages' side of what builds leave (issue 30): a finished build's test results and
//! files read and rendered for its page (the rendering kept for the builds viewed last:
//! [`Sections`]), and a test's history page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use kubeci_engine::api::Backend;

use crate::auth::with_cookie;
use crate::pages;
use crate::ui::{chrome, page};
use crate::AppState;

/// How many builds' rendered sections the server keeps: each at most 300 KB of tests
/// and 200 KB of files, so at most 8 MB (a build of 100,000 cases is about 110 KB).
pub(crate) const KEPT_SECTIONS: usize = 16;

/// A build: namespace, job, number.
type BuildKey = (String, String, u64);

/// The Tests and Artifacts sections of the builds whose pages were viewed last, newest
/// first. Once a build's `outputs.json` is written (after its files and its
/// `tests.json`: the commit point) what it left never changes, nor do the builds before
/// it that its known flaky failures are judged by; reading and parsing a `tests.json`
/// of 100,000 cases again (12 MB) for every view would cost more than the page's p99 of
/// 50 ms.
#[derive(Default)]
pub(crate) struct Sections(Mutex<VecDeque<(BuildKey, Arc<pages::LeftHtml>)>>);

impl Sections {
    fn get(&self, key: &BuildKey) -> Option<Arc<pages::LeftHtml>> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = kept.iter().position(|(k, _)| k == key)?;
        let entry = kept.remove(at)?;
        let html = entry.1.clone();
        kept.push_front(entry);
        Some(html)
    }

    fn put(&self, key: BuildKey, html: Arc<pages::LeftHtml>) {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.retain(|(k, _)| *k != key);
        kept.push_front((key, html));
        kept.truncate(KEPT_SECTIONS);
    }
}

/// Build `number`'s Tests and Artifacts sections: kept ones, else read and rendered —
/// and kept once its outputs are written and all of it could be read.
pub(crate) async fn sections<B: Backend>(
    state: &AppState<B>,
    namespace: &str,
    name: &str,
    number: u64,
) -> Arc<pages::LeftHtml> {
    let key = (namespace.to_owned(), name.to_owned(), number);
    if let Some(html) = state.sections.get(&key) {
        return html;
    }
    let read = left(&*state.backend, namespace, name, number).await;
    let at = pages::BuildAt {
        namespace,
        job: name,
        number,
    };
    let html = Arc::new(pages::left_html(at, &read));
    if read.outputs.is_some() && read.unreadable.is_none() {
        state.sections.put(key, html.clone());
    }
    html
}

/// What build `number` left — its test results and its files — read together; what
/// cannot be read is said on the page, the rest of it still shown.
async fn left<B: Backend>(backend: &B, namespace: &str, name: &str, number: u64) -> pages::Left {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn key(number: u64) -> BuildKey {
        ("ci".into(), "api".into(), number)
    }

    #[test]
    fn the_sections_of_the_builds_viewed_last_are_kept_and_no_more() {
        let sections = Sections::default();
        assert!(sections.get(&key(1)).is_none());
        for number in 1..=KEPT_SECTIONS as u64 {
            sections.put(key(number), Arc::default());
        }
        assert!(sections.get(&key(1)).is_some(), "viewed again: newest");
        sections.put(key(100), Arc::default());
        assert!(
            sections.get(&key(2)).is_none(),
            "the one viewed longest ago gives way"
        );
        assert!(sections.get(&key(1)).is_some());
        assert!(sections.get(&key(100)).is_some());
        assert_eq!(sections.0.lock().unwrap().len(), KEPT_SECTIONS);
    }
}
