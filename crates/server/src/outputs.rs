//! What a build left (issue 30), in the JSON API: its test results, its files listed and
//! each file downloaded — streamed, as an attachment never shown inline (a build's file
//! is the build's, not kubeci's page), with the same read rights as its log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kubeci_engine::api::{Backend, BuildTests, PageRequest};
use kubeci_results::{BuildOutputs, TestResults, RESULTS_VERSION};
use serde_json::json;

use crate::api::{archive_failed, bad_build_path, bad_path, build_not_found, job_not_found};
use crate::{error, AppState};

/// Whether build `number` of a job is there (live or archived), else the answer saying
/// what is not.
async fn build_is_there<B: Backend>(
    state: &AppState<B>,
    namespace: &str,
    name: &str,
    number: u64,
) -> Result<(), Response> {
    match state.backend.build(namespace, name, number).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(build_not_found(state, namespace, name, number).await),
        Err(e) => Err(archive_failed(&e)),
    }
}

pub(crate) async fn tests<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    match state.backend.tests(&namespace, &name, number).await {
        Ok(Some(results)) => Json(results).into_response(),
        Err(e) => archive_failed(&e),
        // As a build that ran no test: its job declares no `test_reports`, it has not
        // ended, or it left none (a build's subresources answer while it exists).
        Ok(None) => match build_is_there(&state, &namespace, &name, number).await {
            Err(answer) => answer,
            Ok(()) => Json(BuildTests {
                results: TestResults {
                    version: RESULTS_VERSION,
                    ..TestResults::default()
                },
                known_flaky: Vec::new(),
            })
            .into_response(),
        },
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct HistoryQuery {
    name: String,
}

fn bad_history_query() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad-query",
        "say which test: `?name=CLASSNAME::NAME`, as the build's tests name it (`id`)",
    )
}

/// Test `name`'s history over the job's archived builds.
pub(crate) async fn job_test_history<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Ok(Path((namespace, name))) = path else {
        return bad_path();
    };
    let Ok(Query(query)) = query else {
        return bad_history_query();
    };
    test_history(&state, &namespace, &name, &query.name, None).await
}

/// Test `name`'s history up to build `number` (included).
pub(crate) async fn build_test_history<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
    query: Result<Query<HistoryQuery>, QueryRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let Ok(Query(query)) = query else {
        return bad_history_query();
    };
    if let Err(answer) = build_is_there(&state, &namespace, &name, number).await {
        return answer;
    }
    let before = number.saturating_add(1);
    test_history(&state, &namespace, &name, &query.name, Some(before)).await
}

async fn test_history<B: Backend>(
    state: &AppState<B>,
    namespace: &str,
    name: &str,
    test: &str,
    before: Option<u64>,
) -> Response {
    let newest = PageRequest {
        before: None,
        limit: 1,
    };
    if (state.backend.builds_page(namespace, name, newest).await).is_none() {
        return job_not_found(namespace, name);
    }
    match state
        .backend
        .test_history(namespace, name, test, before)
        .await
    {
        Ok(history) => Json(history).into_response(),
        Err(e) => archive_failed(&e),
    }
}

pub(crate) async fn artifacts<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name, number))) = path else {
        return bad_build_path();
    };
    let outputs = match state.backend.outputs(&namespace, &name, number).await {
        Ok(Some(outputs)) => outputs,
        Err(e) => return archive_failed(&e),
        Ok(None) => {
            if let Err(answer) = build_is_there(&state, &namespace, &name, number).await {
                return answer;
            }
            BuildOutputs::new()
        }
    };
    Json(json!({"artifacts": outputs.artifacts, "refused": outputs.refused})).into_response()
}

pub(crate) async fn artifact<B: Backend>(
    State(state): State<Arc<AppState<B>>>,
    path: Result<Path<(String, String, u64, String)>, PathRejection>,
) -> Response {
    let Ok(Path((namespace, name, number, file))) = path else {
        return bad_build_path();
    };
    match state
        .backend
        .artifact(&namespace, &name, number, &file)
        .await
    {
        Ok(Some((size, bytes))) => Response::builder()
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .header(header::CONTENT_DISPOSITION, attachment(&file))
            .header("x-content-type-options", "nosniff")
            .header(
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'",
            )
            .body(Body::from_stream(bytes))
            .expect("a valid response"),
        Err(e) => archive_failed(&e),
        Ok(None) => match build_is_there(&state, &namespace, &name, number).await {
            Err(answer) => answer,
            Ok(()) => error(
                StatusCode::NOT_FOUND,
                "artifact-not-found",
                format!("build {number} of job {namespace}/{name} left no file `{file}`"),
            ),
        },
    }
}

/// `attachment` with the file's own name (its last segment), in the RFC 6266 form every
/// browser reads whatever its characters.
fn attachment(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let encoded = percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC);
    format!("attachment; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_download_is_named_by_its_last_segment_whatever_its_characters() {
        assert_eq!(
            super::attachment("dist/app v1.tar.gz"),
            "attachment; filename*=UTF-8''app%20v1%2Etar%2Egz"
        );
        assert_eq!(
            super::attachment("r\u{e9}sum\u{e9}\";x.txt"),
            "attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%22%3Bx%2Etxt"
        );
    }
}
