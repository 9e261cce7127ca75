//! Conformance of watches and logs: changes in order, compacted versions, filtered watches,
//! and pod logs (follow, tail, containers).

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kubeci_testkit::{FakeApiServer, Options};
use serde_json::json;

use super::kube_testkit_helpers::*;

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
