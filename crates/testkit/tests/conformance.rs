//! Conformance of the fake API server with the Kubernetes API conventions
//! (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md
//! and the "API Concepts" reference), exercised through the real `kube` client. Each test
//! names the convention it checks.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube_testkit_helpers::*;
use kubeci_testkit::{FakeApiServer, Options};
use serde_json::json;

mod kube_testkit_helpers {
    use super::*;

    pub fn configmap(name: &str, labels: serde_json::Value) -> ConfigMap {
        serde_json::from_value(
            json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
        )
        .unwrap()
    }

    pub fn rv<K: kube::Resource>(object: &K) -> u64 {
        object
            .meta()
            .resource_version
            .as_deref()
            .unwrap()
            .parse()
            .unwrap()
    }

    pub fn error_of<T: std::fmt::Debug>(result: kube::Result<T>) -> kube::core::Status {
        match result {
            Err(kube::Error::Api(status)) => *status,
            other => panic!("expected an API error, got {other:?}"),
        }
    }

    pub async fn server() -> FakeApiServer {
        FakeApiServer::start_with(Options {
            simulate: false,
            ..Options::default()
        })
        .await
    }
}

/// Convention: "resourceVersion ... a single, cluster-wide sequence" — every write of any
/// kind gets a larger resourceVersion, and a list's resourceVersion covers its items.
#[tokio::test]
async fn resource_versions_are_one_cluster_wide_sequence() {
    let server = server().await;
    let client = server.client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let a = cms
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .unwrap();
    let p = pods.create(&PostParams::default(), &pod).await.unwrap();
    let b = cms
        .create(&PostParams::default(), &configmap("b", json!({})))
        .await
        .unwrap();
    assert!(rv(&a) < rv(&p) && rv(&p) < rv(&b));
    let list = cms.list(&ListParams::default()).await.unwrap();
    assert!(
        list.metadata
            .resource_version
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= rv(&b)
    );
}

/// Convention: create returns 201; a duplicate name is 409 `AlreadyExists` as a
/// `metav1.Status` with details; `generateName` gives each object a unique name.
#[tokio::test]
async fn create_conflicts_and_generate_name() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    cms.create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    let status = error_of(
        cms.create(&PostParams::default(), &configmap("a", json!({})))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
    assert_eq!(status.message, "configmaps \"a\" already exists");
    assert_eq!(status.details.unwrap().name, "a");
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "job-"}})).unwrap();
    let one = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let two = cms
        .create(&PostParams::default(), &generated)
        .await
        .unwrap();
    let (one, two) = (one.metadata.name.unwrap(), two.metadata.name.unwrap());
    assert!(one.starts_with("job-") && two.starts_with("job-") && one != two);
    assert!(one.len() > "job-".len());
}

/// Convention: objects live in existing namespaces — creating in a missing one is 404.
#[tokio::test]
async fn namespaces_must_exist() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "nowhere");
    let status = error_of(
        cms.create(&PostParams::default(), &configmap("a", json!({})))
            .await,
    );
    assert_eq!(
        (status.code, status.message.as_str()),
        (404, "namespaces \"nowhere\" not found")
    );
}

/// Convention: get of a missing object is 404 `NotFound` with a Status body.
#[tokio::test]
async fn get_missing_is_not_found() {
    let server = server().await;
    let jobs: Api<Job> = Api::namespaced(server.client().await, "default");
    let status = error_of(jobs.get("missing").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "jobs.batch \"missing\" not found");
    assert_eq!(status.details.unwrap().group, "batch");
}

/// Convention: "Concurrency Control and Consistency" — an update carrying a stale
/// resourceVersion is 409 `Conflict`; one without resourceVersion is unconditional; an
/// update that changes nothing keeps the resourceVersion.
#[tokio::test]
async fn updates_use_optimistic_concurrency() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let created = cms
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    let mut first = created.clone();
    first.data = Some([("k".to_owned(), "first".to_owned())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &first)
        .await
        .unwrap();
    assert!(rv(&updated) > rv(&created));
    let mut stale = created.clone();
    stale.data = Some([("k".to_owned(), "stale".to_owned())].into());
    let status = error_of(cms.replace("a", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(status.message.contains("the object has been modified"));
    stale.metadata.resource_version = None;
    let forced = cms
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["k"], "stale");
    let again = cms.get("a").await.unwrap();
    let unchanged = cms
        .replace("a", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(rv(&unchanged), rv(&again), "a no-op update writes nothing");
}

/// Convention: "Patch operations" — JSON merge patch, JSON patch (a failed `test` is
/// rejected), server-side apply (needs a field manager; creates when missing).
#[tokio::test]
async fn merge_json_and_apply_patches() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    cms.create(&PostParams::default(), &configmap("a", json!({"x": "1"})))
        .await
        .unwrap();
    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"y": "2", "x": null}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merged.metadata.labels.unwrap(),
        [("y".to_owned(), "2".to_owned())].into()
    );
    let patch: json_patch::Patch =
        serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "w"}]))
            .unwrap();
    let patched = cms
        .patch("a", &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .unwrap();
    assert_eq!(patched.data.unwrap()["k"], "w");
    let failing: json_patch::Patch =
        serde_json::from_value(json!([{"op": "test", "path": "/data/k", "value": "nope"}]))
            .unwrap();
    let status = error_of(
        cms.patch("a", &PatchParams::default(), &Patch::Json::<()>(failing))
            .await,
    );
    assert_eq!(status.code, 422);
    let applied = cms
        .patch("b", &PatchParams::apply("kubeci").force(), &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}, "data": {"a": "1"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["a"], "1");
    let status = error_of(
        cms.patch(
            "b",
            &PatchParams::default(),
            &Patch::Apply(json!({"data": {"a": "2"}})),
        )
        .await,
    );
    assert_eq!(status.code, 400, "apply needs a field manager");
}

/// Convention: "Spec and Status" — the status subresource: updates of the object ignore
/// status; `/status` updates change only the status.
#[tokio::test]
async fn the_status_subresource_is_separate() {
    let server = server().await;
    let jobs: Api<Job> = Api::namespaced(server.client().await, "default");
    let job: Job = serde_json::from_value(json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(
        created.spec.as_ref().unwrap().backoff_limit,
        Some(6),
        "defaulted"
    );
    assert!(
        created.spec.as_ref().unwrap().selector.is_some(),
        "selector generated"
    );
    let with_status = jobs
        .patch_status(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 1}, "spec": {"parallelism": 5}})),
        )
        .await
        .unwrap();
    assert_eq!(with_status.status.unwrap().active, Some(1));
    assert_eq!(
        with_status.spec.unwrap().parallelism,
        Some(1),
        "a status write ignores spec"
    );
    let main = jobs
        .patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"active": 9}, "metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        main.status.unwrap().active,
        Some(1),
        "an object write ignores status"
    );
    let status = error_of(
        jobs.patch(
            "j",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"metadata": {"labels": {"x": "y"}}}}})),
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(status
        .message
        .contains("spec.template: Invalid value: field is immutable"));
}

/// Convention: "List and Watch filtering" — label selectors (equality and set-based) and
/// field selectors; an unsupported field is 400.
#[tokio::test]
async fn lists_filter_by_label_and_field() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for (name, labels) in [
        ("a", json!({"app": "x", "tier": "web"})),
        ("b", json!({"app": "x"})),
        ("c", json!({"app": "y"})),
    ] {
        cms.create(&PostParams::default(), &configmap(name, labels))
            .await
            .unwrap();
    }
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("app=x"))
                .await
                .unwrap()
        ),
        ["a", "b"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().labels("app in (y),!tier"))
                .await
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name!=a"))
                .await
                .unwrap()
        ),
        ["b", "c"]
    );
    let status = error_of(cms.list(&ListParams::default().fields("data.k=v")).await);
    assert_eq!(
        (status.code, status.message.as_str()),
        (400, "field label not supported: data.k")
    );
    let all: Api<ConfigMap> = Api::all(server.client().await);
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        3
    );
}

/// Convention: "Retrieving large results sets in chunks" — `limit` and `continue` page
/// through a consistent snapshot with `remainingItemCount`; an expired token is 410.
#[tokio::test]
async fn pagination_is_consistent() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for i in 0..5 {
        cms.create(
            &PostParams::default(),
            &configmap(&format!("cm-{i}"), json!({})),
        )
        .await
        .unwrap();
    }
    let first = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(first.items.len(), 2);
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    let token = first.metadata.continue_.clone().unwrap();
    cms.create(&PostParams::default(), &configmap("cm-9", json!({})))
        .await
        .unwrap();
    let second = cms
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let names: Vec<String> = second
        .items
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        names,
        ["cm-2", "cm-3", "cm-4"],
        "the snapshot of the first page, not cm-9"
    );
    assert_eq!(second.metadata.continue_.as_deref().unwrap_or(""), "");
    assert_eq!(
        second.metadata.resource_version,
        first.metadata.resource_version
    );
    server.compact();
    let status = error_of(
        cms.list(&ListParams::default().limit(2).continue_token(&token))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}

/// Convention: "Efficient detection of changes" — a watch from a resourceVersion gets
/// every later change in order (ADDED, MODIFIED, DELETED), BOOKMARKs when asked, and ends
/// after `timeoutSeconds`.
#[tokio::test]
async fn watches_deliver_changes_in_order() {
    let server = FakeApiServer::start_with(Options {
        simulate: false,
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let start = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let created = cms
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "2"}})),
    )
    .await
    .unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(2), &start)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while let Some(event) = stream.try_next().await.unwrap() {
        match event {
            WatchEvent::Added(c) => seen.push(format!("ADDED {}", rv(&c))),
            WatchEvent::Modified(c) => seen.push(format!("MODIFIED {}", rv(&c))),
            WatchEvent::Deleted(c) => seen.push(format!("DELETED {}", rv(&c))),
            WatchEvent::Bookmark(_) => seen.push("BOOKMARK".into()),
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    let first = rv(&created);
    assert_eq!(
        seen[..3],
        [
            format!("ADDED {first}"),
            format!("MODIFIED {}", first + 1),
            format!("DELETED {}", first + 2)
        ]
    );
    assert!(
        seen[3..].iter().all(|e| e == "BOOKMARK") && seen.len() > 3,
        "bookmarks, then the timeout ends the stream: {seen:?}"
    );
}

/// Convention: a watch from a resourceVersion older than the kept history gets a 410
/// `Expired` ERROR event, and the client must list again.
#[tokio::test]
async fn watching_from_a_compacted_version_is_gone() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let old = cms
        .create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &configmap("b", json!({})))
        .await
        .unwrap();
    server.compact();
    let mut stream = cms
        .watch(&WatchParams::default().timeout(5), &rv(&old).to_string())
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(e)) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"));
            assert!(
                e.message.starts_with("too old resource version"),
                "{}",
                e.message
            );
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

/// Convention: a watch with a label selector sees an object that stops matching as
/// DELETED and one that starts matching as ADDED.
#[tokio::test]
async fn filtered_watches_see_objects_enter_and_leave() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    let start = cms
        .create(
            &PostParams::default(),
            &configmap("a", json!({"ci-job-spec": "true"})),
        )
        .await
        .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"ci-job-spec": null}}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "ignored"}})),
    )
    .await
    .unwrap();
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"ci-job-spec": "true"}}})),
    )
    .await
    .unwrap();
    let params = WatchParams::default().labels("ci-job-spec=true").timeout(1);
    let events: Vec<String> = cms
        .watch(&params, &rv(&start).to_string())
        .await
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e {
            WatchEvent::Added(_) => Some("ADDED".to_owned()),
            WatchEvent::Modified(_) => Some("MODIFIED".to_owned()),
            WatchEvent::Deleted(_) => Some("DELETED".to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(events, ["DELETED", "ADDED"]);
}

/// Convention: "Garbage collection" — deleting a Job with `Background` propagation
/// deletes its pods; batch/v1 Jobs orphan their pods by default (owner reference removed);
/// an object with finalizers gets a deletionTimestamp and stays until they are removed.
#[tokio::test]
async fn deletion_propagates_to_dependents_and_honours_finalizers() {
    let server = server().await;
    let client = server.client().await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for name in ["bg", "orphan"] {
        let job: Job = serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}})).unwrap();
        let job = jobs.create(&PostParams::default(), &job).await.unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": format!("{name}-pod"), "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job.metadata.uid, "controller": true}]}, "spec": {"containers": [{"name": "c", "image": "i"}]}})).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    jobs.delete("bg", &DeleteParams::background())
        .await
        .unwrap();
    assert_eq!(error_of(pods.get("bg-pod").await).code, 404);
    jobs.delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    let orphan = pods.get("orphan-pod").await.unwrap();
    assert!(orphan
        .metadata
        .owner_references
        .unwrap_or_default()
        .is_empty());

    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut held = configmap("held", json!({}));
    held.metadata.finalizers = Some(vec!["kubeci.io/test".into()]);
    cms.create(&PostParams::default(), &held).await.unwrap();
    cms.delete("held", &DeleteParams::default()).await.unwrap();
    let terminating = cms.get("held").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert_eq!(error_of(cms.get("held").await).code, 404);
}

/// Convention: `pods/log` — `container` is required for several containers, `tailLines`
/// keeps the last lines, `follow` streams until the container ends.
#[tokio::test]
async fn pod_logs_follow_tail_and_choose_containers() {
    let server = server().await;
    let pods: Api<Pod> = Api::namespaced(server.client().await, "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = error_of(pods.logs("p", &Default::default()).await);
    assert_eq!(status.code, 400);
    assert!(
        status
            .message
            .starts_with("a container name must be specified for pod p"),
        "{}",
        status.message
    );
    for i in 1..=3 {
        server
            .store()
            .append_log("default", "p", "a", &format!("line {i}"));
    }
    let params = kube::api::LogParams {
        container: Some("a".into()),
        tail_lines: Some(2),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &params).await.unwrap(), "line 2\nline 3\n");
    {
        // `sinceTime` keeps lines written at or after it (times set here, to be exact).
        let mut store = server.store();
        let buffer = store
            .logs
            .get_mut(&("default".to_owned(), "p".to_owned(), "a".to_owned()))
            .unwrap();
        for (i, line) in buffer.lines.iter_mut().enumerate() {
            line.0 = format!("2026-01-01T00:00:0{i}Z");
        }
    }
    let since = kube::api::LogParams {
        container: Some("a".into()),
        since_time: Some("2026-01-01T00:00:01Z".parse().unwrap()),
        ..Default::default()
    };
    assert_eq!(pods.logs("p", &since).await.unwrap(), "line 2\nline 3\n");
    let follow = kube::api::LogParams {
        container: Some("a".into()),
        follow: true,
        ..Default::default()
    };
    let mut stream = pods.log_stream("p", &follow).await.unwrap();
    server.store().append_log("default", "p", "a", "line 4");
    server.store().finish_log("default", "p", "a");
    let mut text = String::new();
    use futures_util::AsyncBufReadExt;
    let mut lines = (&mut stream).lines();
    while let Some(line) = lines.next().await {
        text.push_str(&line.unwrap());
        text.push('\n');
    }
    assert_eq!(text, "line 1\nline 2\nline 3\nline 4\n");
}

/// Test controls: every request is recorded with its verb (the user agent is checked with
/// kubectl, which sends one).
#[tokio::test]
async fn requests_are_recorded() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    cms.create(&PostParams::default(), &configmap("a", json!({})))
        .await
        .unwrap();
    let _ = cms.get("a").await.unwrap();
    let requests = server.requests();
    let verbs: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| (r.verb.as_str(), r.resource.as_str()))
        .collect();
    assert_eq!(verbs, [("create", "configmaps"), ("get", "configmaps")]);
    assert_eq!(requests[1].path, "/api/v1/namespaces/default/configmaps/a");
}

/// Test controls: injected 500s and 429s with Retry-After reach the client.
#[tokio::test]
async fn faults_are_injected() {
    let server = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    server.gate().fail_next(1, 500);
    assert_eq!(error_of(cms.list(&ListParams::default()).await).code, 500);
    // kube retries 429 after the server's Retry-After: two requests, one answer.
    server.gate().clear_requests();
    server.gate().throttle_next(1, 1);
    assert!(cms.list(&ListParams::default()).await.is_ok());
    assert_eq!(server.requests().len(), 2);
    server.stop();
    assert!(matches!(
        cms.list(&ListParams::default()).await,
        Err(kube::Error::HyperError(_) | kube::Error::Service(_))
    ));
    server.restart().await;
    assert!(cms.list(&ListParams::default()).await.is_ok());
}

/// Leases (coordination.k8s.io), Events of both APIs (with their field selectors) and
/// ServiceAccounts are served with the same semantics: a stale lease renewal is a 409, as leader election relies on.
#[tokio::test]
async fn leases_events_and_service_accounts_are_served() {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::{Event as CoreEvent, ServiceAccount};
    use k8s_openapi::api::events::v1::Event;
    let server = server().await;
    let client = server.client().await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "kubeci-leader"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}})).unwrap();
    let held = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renewed = held.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("kubeci-leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    let mut late = held.clone();
    late.spec.as_mut().unwrap().holder_identity = Some("c".into());
    assert_eq!(
        error_of(
            leases
                .replace("kubeci-leader", &PostParams::default(), &late)
                .await
        )
        .code,
        409
    );

    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let event: Event = serde_json::from_value(json!({"metadata": {"generateName": "cm."}, "eventTime": "2026-01-01T00:00:00.000000Z", "reason": "InvalidJob", "note": "bad job.yaml", "type": "Warning", "action": "Validate", "reportingController": "kubeci.io/controller", "reportingInstance": "kubeci-0", "regarding": {"kind": "ConfigMap", "name": "x", "namespace": "default"}})).unwrap();
    events.create(&PostParams::default(), &event).await.unwrap();
    let found = events
        .list(&ListParams::default().fields("regarding.name=x,reason=InvalidJob"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 1);
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let core_event: CoreEvent = serde_json::from_value(json!({"metadata": {"generateName": "cm."}, "reason": "InvalidJob", "message": "bad job.yaml", "type": "Warning", "involvedObject": {"kind": "ConfigMap", "name": "x", "namespace": "default"}})).unwrap();
    core.create(&PostParams::default(), &core_event)
        .await
        .unwrap();
    let found = core
        .list(&ListParams::default().fields("involvedObject.name=x,type=Warning"))
        .await
        .unwrap();
    // One Event in either API is one object in both, as in a real API server.
    assert_eq!(found.items.len(), 2, "{found:?}");
    let found = events
        .list(&ListParams::default().fields("regarding.name=x"))
        .await
        .unwrap();
    assert_eq!(found.items.len(), 2, "{found:?}");

    let accounts: Api<ServiceAccount> = Api::namespaced(client, "default");
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "builder"}})).unwrap();
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();
    assert_eq!(
        accounts
            .get("builder")
            .await
            .unwrap()
            .metadata
            .name
            .as_deref(),
        Some("builder")
    );
}

/// Test controls: injected latency delays answers (a client with a shorter timeout gives
/// up), and removing it restores them.
#[tokio::test]
async fn latency_is_injected() {
    let server = server().await;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    config.read_timeout = Some(Duration::from_millis(100));
    let cms: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    server.gate().set_latency(Duration::from_secs(2));
    assert!(
        cms.list(&ListParams::default()).await.is_err(),
        "the answer came later than the client waits"
    );
    server.gate().set_latency(Duration::ZERO);
    assert!(cms.list(&ListParams::default()).await.is_ok());
}
