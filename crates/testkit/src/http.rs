//! The REST surface: routing Kubernetes API paths to the store, watch streams, pod logs,
//! request recording and fault injection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, Response, StatusCode};
use serde_json::{json, Value};

use crate::gate::{Admission, Gate, RecordedRequest};
use crate::resources::{self, RESOURCES};
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{merge_patch, ApiError, Store};

mod events;
mod logs;
pub(crate) mod watches;

use events::serve_and_mirror;
pub use events::{convert_event, event_for};
use logs::pod_log;
use watches::watch;

/// A boolean query parameter as the API server reads it (apimachinery's
/// `Convert_Slice_string_To_bool`): false only for `0` and `false` in any case; anything
/// else, the empty string included, is true.
pub fn query_bool(value: &str) -> bool {
    !(value == "0" || value.eq_ignore_ascii_case("false"))
}

/// State shared by every connection.
pub struct Shared {
    pub store: Mutex<Store>,
    /// The service-account tokens it issued (TokenRequest), for TokenReview.
    pub tokens: Mutex<crate::tokens::Tokens>,
    pub gate: Gate,
    pub address: String,
    pub bookmark_interval: Duration,
    /// Whether watches stream their initial list (`Options::watch_list`).
    pub watch_list: bool,
}

type Reply = Response<Body>;

fn json_reply(code: StatusCode, value: &Value) -> Reply {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .expect("a valid response")
}

/// An injected fault's answer.
pub(crate) fn refusal(error: &ApiError, retry_after: Option<u64>) -> Reply {
    let mut reply = error_reply(error);
    if let Some(seconds) = retry_after {
        reply.headers_mut().insert(
            header::RETRY_AFTER,
            seconds.to_string().parse().expect("a number"),
        );
    }
    reply
}

fn error_reply(error: &ApiError) -> Reply {
    json_reply(
        StatusCode::from_u16(error.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &error.status(),
    )
}

/// What a path names.
#[derive(Debug, Clone)]
struct Target {
    resource: usize,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    Discovery(Value),
    Api(Target),
    /// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
    TokenReview,
    NotFound,
}

fn route(path: &str, address: &str) -> Route {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Route::Discovery(resources::version()),
        ["openapi", "v3"] => return Route::Discovery(resources::openapi_root()),
        ["openapi", "v3", "api", version] => {
            return resources::openapi_group_version("", version)
                .map_or(Route::NotFound, Route::Discovery)
        }
        ["openapi", "v3", "apis", group, version] => {
            return resources::openapi_group_version(group, version)
                .map_or(Route::NotFound, Route::Discovery)
        }
        ["api"] => return Route::Discovery(resources::core_versions(address)),
        ["apis"] => return Route::Discovery(resources::group_list()),
        ["apis", group] => {
            return resources::group(group).map_or(Route::NotFound, Route::Discovery)
        }
        ["apis", "authentication.k8s.io", "v1", "tokenreviews"] => return Route::TokenReview,
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return resources::resource_list(group, version).map_or(Route::NotFound, Route::Discovery);
    }
    let target = |plural: &str, namespace: Option<&str>, name: Option<&str>, sub: Option<&str>| {
        resources::find(group, version, plural).map_or(Route::NotFound, |resource| {
            Route::Api(Target {
                resource,
                namespace: namespace.map(str::to_owned),
                name: name.map(str::to_owned),
                subresource: sub.map(str::to_owned),
            })
        })
    };
    let is_resource = |plural: &str| resources::find(group, version, plural).is_some();
    match rest {
        ["namespaces", ns, plural] if is_resource(plural) => target(plural, Some(ns), None, None),
        ["namespaces", ns, plural, name] if is_resource(plural) => {
            target(plural, Some(ns), Some(name), None)
        }
        ["namespaces", ns, plural, name, sub] if is_resource(plural) => {
            target(plural, Some(ns), Some(name), Some(sub))
        }
        [plural] => target(plural, None, None, None),
        [plural, name] => target(plural, None, Some(name), None),
        [plural, name, sub] => target(plural, None, Some(name), Some(sub)),
        _ => Route::NotFound,
    }
}

fn verb(method: &Method, target: &Target, query: &HashMap<String, String>) -> &'static str {
    let watching = query.get("watch").is_some_and(|w| query_bool(w));
    match (method.as_str(), target.name.is_some()) {
        ("GET", _) if watching => "watch",
        ("GET", true) => "get",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => "unknown",
    }
}

/// The request as recorded: its Kubernetes verb and resource named from its route.
fn describe(
    parts: &axum::http::request::Parts,
    routed: &Route,
    query: &HashMap<String, String>,
) -> RecordedRequest {
    let (verb_name, resource_name) = match routed {
        Route::Api(t) => (
            verb(&parts.method, t, query).to_owned(),
            match &t.subresource {
                Some(sub) => format!("{}/{sub}", RESOURCES[t.resource].plural),
                None => RESOURCES[t.resource].plural.to_owned(),
            },
        ),
        Route::TokenReview => ("create".to_owned(), "tokenreviews".to_owned()),
        _ => ("get".to_owned(), String::new()),
    };
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or("").to_owned(),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned(),
        verb: verb_name,
        resource: resource_name,
        received: std::time::Instant::now(),
    }
}

/// How a request to a proxied API server is recorded (the proxy knows the same
/// resources as the fake server; others are recorded without a resource).
pub(crate) fn describe_proxied(parts: &axum::http::request::Parts) -> (RecordedRequest, bool) {
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let routed = route(parts.uri.path(), "");
    let resumed_watch = query.get("watch").is_some_and(|w| query_bool(w))
        && query
            .get("resourceVersion")
            .is_some_and(|rv| !rv.is_empty() && rv != "0");
    (describe(parts, &routed, &query), resumed_watch)
}

/// Serves one request.
pub async fn handle(shared: Arc<Shared>, request: Request<Body>) -> Result<Reply, Infallible> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let routed = route(&path, &shared.address);
    let recorded = describe(&parts, &routed, &query);
    if let Admission::Refuse(error, retry_after) = shared.gate.admit(recorded).await {
        return Ok(refusal(&error, retry_after));
    }
    let body = match axum::body::to_bytes(body, 64 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Ok(error_reply(&ApiError::new(
                413,
                "RequestEntityTooLarge",
                "the request is too large",
            )))
        }
    };
    let reply = match routed {
        Route::Discovery(value) if parts.method == Method::GET => {
            json_reply(StatusCode::OK, &value)
        }
        Route::Discovery(_) => error_reply(&ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
        Route::NotFound => error_reply(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
        Route::TokenReview if parts.method == Method::POST => {
            match parse_body(&parts.headers, &body) {
                Ok(review) => {
                    let store = shared.store.lock().expect("lock");
                    let tokens = shared.tokens.lock().expect("lock");
                    json_reply(StatusCode::CREATED, &tokens.review(&store, review))
                }
                Err(e) => error_reply(&e),
            }
        }
        Route::TokenReview => error_reply(&ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
        Route::Api(target) => {
            serve_and_mirror(&shared, &parts.method, &parts.headers, target, &query, body)
                .await
                .unwrap_or_else(|e| error_reply(&e))
        }
    };
    Ok(reply)
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|_| ApiError::bad_request("the body is not UTF-8"))?;
        let documents = kubeci_spec::yaml::parse_stream(
            text,
            &kubeci_spec::yaml::PosMap::Identity,
            kubeci_spec::yaml::Limits::default(),
        )
        .map_err(|e| {
            ApiError::bad_request(format!(
                "error converting YAML to JSON: yaml: line {}: {}",
                e.pos.line, e.message
            ))
        })?;
        return Ok(documents
            .into_iter()
            .flatten()
            .next()
            .map(|n| n.to_json())
            .unwrap_or(Value::Null));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body of the request was in an unknown format: {e}"
        ))
    })
}

// A routing table: one arm per verb and subresource the fake serves, as long as the API
// it serves is wide.
async fn serve(
    shared: &Arc<Shared>,
    method: &Method,
    headers: &HeaderMap,
    target: Target,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Reply, ApiError> {
    let rt = &RESOURCES[target.resource];
    let namespace = target.namespace.clone().unwrap_or_default();
    if rt.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    }
    let (labels, fields) = selectors(rt, query)?;
    let list_namespace = if rt.namespaced {
        target.namespace.as_deref()
    } else {
        None
    };
    match (method.as_str(), &target.name, target.subresource.as_deref()) {
        ("GET", None, None) if query.get("watch").is_some_and(|w| query_bool(w)) => watch(
            shared,
            watches::Encoding::asked(headers, target.resource)?,
            target.resource,
            list_namespace,
            labels,
            fields,
            query,
        ),
        ("GET", None, None) => list(
            shared,
            target.resource,
            list_namespace,
            &labels,
            &fields,
            query,
        ),
        ("GET", Some(name), None | Some("status")) => {
            let object = shared.store.lock().expect("lock");
            let object = object.get(target.resource, &namespace, name)?;
            Ok(json_reply(StatusCode::OK, &object))
        }
        ("GET", Some(name), Some("log")) if rt.plural == "pods" => {
            pod_log(shared, &namespace, name, query).await
        }
        ("POST", Some(name), Some("token")) if rt.plural == "serviceaccounts" => {
            let request = parse_body(headers, &body)?;
            let store = shared.store.lock().expect("lock");
            let mut tokens = shared.tokens.lock().expect("lock");
            let issued = tokens.request(&store, &namespace, name, request)?;
            Ok(json_reply(StatusCode::CREATED, &issued))
        }
        ("POST", None, None) => {
            let object = parse_body(headers, &body)?;
            let mut store = shared.store.lock().expect("lock");
            let created = store.create(target.resource, &namespace, object)?;
            Ok(json_reply(StatusCode::CREATED, &created))
        }
        ("PUT", Some(name), sub @ (None | Some("status"))) => {
            let object = parse_body(headers, &body)?;
            let mut store = shared.store.lock().expect("lock");
            let status_only = sub.is_some();
            let updated = store.update(target.resource, &namespace, name, object, status_only)?;
            Ok(json_reply(StatusCode::OK, &updated))
        }
        ("PATCH", Some(_), None | Some("status")) => patch(shared, headers, &target, &body, query),
        ("DELETE", Some(name), None) => {
            delete(shared, target.resource, &namespace, name, &body, query)
        }
        ("DELETE", None, None) => delete_collection(
            shared,
            target.resource,
            list_namespace,
            &labels,
            &fields,
            query,
        ),
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// The request's label and field selectors.
fn selectors(
    rt: &crate::resources::ResourceType,
    query: &HashMap<String, String>,
) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map_or("", String::as_str),
        &rt.selectable_fields(),
    )
    .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

/// A list, a page at a time (`limit`, `continue`).
fn list(
    shared: &Arc<Shared>,
    resource: usize,
    list_namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let rt = &RESOURCES[resource];
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    let page = shared.store.lock().expect("lock").list(
        resource,
        list_namespace,
        labels,
        fields,
        limit,
        query
            .get("continue")
            .map(String::as_str)
            .filter(|c| !c.is_empty()),
    )?;
    let mut metadata = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<&Value> = page.items.iter().map(|i| i.as_ref()).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": metadata, "items": items}),
    ))
}

/// Deletes one object, with the propagation policy and preconditions of the request.
fn delete(
    shared: &Arc<Shared>,
    resource: usize,
    namespace: &str,
    name: &str,
    body: &Bytes,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let options: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body).unwrap_or(json!({}))
    };
    let policy = query
        .get("propagationPolicy")
        .cloned()
        .or_else(|| {
            options
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| {
            (options.get("orphanDependents") == Some(&json!(true))).then(|| "Orphan".to_owned())
        });
    let uid = options
        .pointer("/preconditions/uid")
        .and_then(Value::as_str);
    let deleted = shared.store.lock().expect("lock").delete(
        resource,
        namespace,
        name,
        policy.as_deref(),
        uid,
    )?;
    Ok(json_reply(StatusCode::OK, &deleted))
}

/// Deletes every object a list would show.
fn delete_collection(
    shared: &Arc<Shared>,
    resource: usize,
    list_namespace: Option<&str>,
    labels: &LabelSelector,
    fields: &FieldSelector,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let rt = &RESOURCES[resource];
    let mut store = shared.store.lock().expect("lock");
    let page = store.list(resource, list_namespace, labels, fields, None, None)?;
    let mut deleted = Vec::new();
    for item in page.items {
        let ns = item
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let name = item
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        deleted.push(store.delete(
            resource,
            &ns,
            &name,
            query.get("propagationPolicy").map(String::as_str),
            None,
        )?);
    }
    let items: Vec<&Value> = deleted.iter().map(|i| i.as_ref()).collect();
    Ok(json_reply(
        StatusCode::OK,
        &json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": {"resourceVersion": store.resource_version().to_string()}, "items": items}),
    ))
}

fn patch(
    shared: &Arc<Shared>,
    headers: &HeaderMap,
    target: &Target,
    body: &Bytes,
    query: &HashMap<String, String>,
) -> Result<Reply, ApiError> {
    let resource = target.resource;
    let namespace = target.namespace.as_deref().unwrap_or("");
    let name = target.name.as_deref().unwrap_or("");
    let status_only = target.subresource.is_some();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let patch_body = parse_body(headers, body)?;
    let mut store = shared.store.lock().expect("lock");
    let existing = store.get(resource, namespace, name);
    if content_type.starts_with("application/apply-patch") {
        if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return Err(ApiError::bad_request("PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch"));
        }
        if let Err(e) = &existing {
            if e.code == 404 {
                let created = store.create(resource, namespace, patch_body)?;
                return Ok(json_reply(StatusCode::CREATED, &created));
            }
        }
    }
    let mut object = (*existing?).clone();
    let expected_rv = object.pointer("/metadata/resourceVersion").cloned();
    match content_type.split(';').next().unwrap_or("") {
        "application/json-patch+json" => {
            let operations: json_patch::Patch = serde_json::from_value(patch_body).map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(&mut object, &operations).map_err(|e| ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}")))?;
        }
        "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/apply-patch+yaml" | "application/apply-patch+json" => {
            merge_patch(&mut object, &patch_body);
        }
        other => return Err(ApiError::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"))),
    }
    // A patch carries a resourceVersion precondition only if it names one itself.
    let patch_rv = object.pointer("/metadata/resourceVersion").cloned();
    if patch_rv == expected_rv {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
    }
    let updated = store.update(resource, namespace, name, object, status_only)?;
    Ok(json_reply(StatusCode::OK, &updated))
}
