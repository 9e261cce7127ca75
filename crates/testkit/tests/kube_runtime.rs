//! kube's own watcher, reflector and Controller, unchanged, against the fake API server:
//! they resume after a dropped connection without listing again, relist after 410 Gone,
//! and end with exactly the server's state — nothing lost, nothing stale.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher, Controller, WatchStreamExt};
use kubeci_testkit::{FakeApiServer, Options};
use serde_json::json;

fn configmap(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"v": value}})).unwrap()
}

/// (name, data value) of every ConfigMap the server holds.
async fn server_state(api: &Api<ConfigMap>) -> BTreeMap<String, String> {
    api.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|c| (c.metadata.name.unwrap(), c.data.unwrap()["v"].clone()))
        .collect()
}

/// (name, data value) of every ConfigMap, read from the store without a request.
fn stored(server: &FakeApiServer) -> BTreeMap<String, String> {
    server
        .store()
        .current(1, Some("default"))
        .iter()
        .map(|c| {
            (
                c["metadata"]["name"].as_str().unwrap().to_owned(),
                c["data"]["v"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Polls `check` for up to 30 s (kube's watcher backs off up to seconds after errors).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    for _ in 0..3000 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Requests of the watcher (it pages its lists; the test's own lists do not).
fn count(server: &FakeApiServer, verb: &str) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| {
            r.verb == verb
                && r.resource == "configmaps"
                && (verb != "list" || r.query.contains("limit="))
        })
        .count()
}

// Long on purpose: one watch's life (list, drop, resume, 410, relist) read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[tokio::test]
async fn the_reflector_resumes_after_a_drop_and_relists_after_410() {
    let server = FakeApiServer::start_with(Options {
        simulate: false,
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &configmap(&format!("cm-{i}"), "1"))
            .await
            .unwrap();
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    reader.wait_until_ready().await.unwrap();
    let store_state = || -> BTreeMap<String, String> {
        reader
            .state()
            .iter()
            .map(|c| {
                (
                    c.metadata.name.clone().unwrap(),
                    c.data.as_ref().unwrap()["v"].clone(),
                )
            })
            .collect()
    };
    assert_eq!(store_state().len(), 5);
    assert_eq!(count(&server, "list"), 1);

    // A dropped connection: the watcher watches again from where it was, without a list.
    eventually("the watch to start", async || count(&server, "watch") == 1).await;
    server.gate().drop_watches();
    api.create(&PostParams::default(), &configmap("cm-5", "1"))
        .await
        .unwrap();
    api.patch(
        "cm-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("cm-1", &DeleteParams::default()).await.unwrap();
    let expected = server_state(&api).await;
    eventually("the store to catch up after the drop", async || {
        store_state() == expected
    })
    .await;
    assert_eq!(count(&server, "list"), 1, "resumed without listing again");
    assert!(count(&server, "watch") >= 2, "watched again");

    // The server goes away; while it is gone objects change and the history is
    // compacted; when it is back, resuming from the old resourceVersion gets 410 Gone and
    // the watcher lists again.
    eventually("the watch to resume", async || count(&server, "watch") >= 2).await;
    server.stop();
    {
        let mut store = server.store();
        store.delete(1, "default", "cm-2", None, None).unwrap();
        let mut cm3 = (*store.get(1, "default", "cm-3").unwrap()).clone();
        cm3["data"]["v"] = json!("3");
        store.update(1, "default", "cm-3", cm3, false).unwrap();
        store
            .create(
                1,
                "default",
                serde_json::to_value(configmap("cm-6", "1")).unwrap(),
            )
            .unwrap();
        store.compact();
    }
    server.restart().await;
    let expected = server_state(&api).await;
    eventually("the store to converge after the 410", async || {
        store_state() == expected
    })
    .await;
    assert!(count(&server, "list") >= 2, "relisted after 410 Gone");
    task.abort();
}

/// The Controller reconciles every object's final state after faults; a reconcile of a
/// deleted object never happens after its deletion was seen.
#[tokio::test]
async fn the_controller_reconciles_every_final_state_through_faults() {
    let server = FakeApiServer::start_with(Options {
        simulate: false,
        bookmark_interval: Duration::from_millis(50),
        ..Options::default()
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(server.client().await, "default");
    for i in 0..3 {
        api.create(&PostParams::default(), &configmap(&format!("cm-{i}"), "1"))
            .await
            .unwrap();
    }
    let seen: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let record = seen.clone();
    let controller = Controller::new(api.clone(), watcher::Config::default()).run(
        move |object: Arc<ConfigMap>, _: Arc<()>| {
            let record = record.clone();
            async move {
                let name = object.metadata.name.clone().unwrap();
                record
                    .lock()
                    .unwrap()
                    .insert(name, object.data.as_ref().unwrap()["v"].clone());
                Ok::<_, kube::Error>(Action::await_change())
            }
        },
        |_, _, _| Action::requeue(Duration::from_millis(100)),
        Arc::new(()),
    );
    let task = tokio::spawn(controller.for_each(|_| async {}));
    eventually("the first reconciles", async || {
        seen.lock().unwrap().len() == 3
    })
    .await;
    eventually("the watch to start", async || count(&server, "watch") >= 1).await;

    server.gate().drop_watches();
    api.patch(
        "cm-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &configmap("cm-3", "4"))
        .await
        .unwrap();
    // The server goes away, objects change, the history is compacted, and the
    // controller's first requests when the server is back fail.
    eventually("the watch to resume", async || count(&server, "watch") >= 2).await;
    server.stop();
    {
        let mut store = server.store();
        let mut cm1 = (*store.get(1, "default", "cm-1").unwrap()).clone();
        cm1["data"]["v"] = json!("3");
        store.update(1, "default", "cm-1", cm1, false).unwrap();
        store.compact();
    }
    let expected = stored(&server);
    server.gate().fail_next(1, 500);
    server.restart().await;
    eventually("every final state to be reconciled", async || {
        *seen.lock().unwrap() == expected
    })
    .await;
    assert!(count(&server, "list") >= 2, "relisted after 410 Gone");
    task.abort();
}
