//! Conformance of the fake API server with the Kubernetes API conventions
//! (https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md
//! and the "API Concepts" reference), exercised through the real `kube` client. Each test
//! names the convention it checks.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube_testkit_helpers::*;
use kubeci_testkit::{FakeApiServer, Options};
use serde_json::json;

mod watch;

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
