use std::pin::pin;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::ResourceExt;
use kubeci_build::record::BuildJob;
use serde_json::json;

use super::*;

const MANAGED: &str = "app.kubernetes.io/managed-by=kubeci";

fn job(name: &str, managed: bool) -> Job {
    let labels = if managed {
        json!({"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": "demo"})
    } else {
        json!({"team": "a"})
    };
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "build", "image": "bash:5"}]}}}
    }))
    .unwrap()
}

/// What the next event is (`Init`, `InitApply demo-1`, `error`...), waiting at most 10 s.
async fn next(
    events: &mut (impl Stream<Item = watcher::Result<Event<BuildJob>>> + Unpin),
) -> String {
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream never ends");
    match event {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::InitApply(job)) => format!("InitApply {}", job.name_any()),
        Ok(Event::Apply(job)) => {
            let trigger = job.annotations().get("kubeci.io/trigger").cloned();
            format!("Apply {} {}", job.name_any(), trigger.unwrap_or_default())
        }
        Ok(Event::Delete(job)) => format!("Delete {}", job.name_any()),
        Err(watcher::Error::WatchError(status)) => format!("error {}", status.code),
        Err(_) => "error".into(),
    }
}

/// Reads events until `expected`; those before it may only be changes of Jobs (the fake's
/// Job controller writes each Job's status once it is created).
async fn until(
    events: &mut (impl Stream<Item = watcher::Result<Event<BuildJob>>> + Unpin),
    expected: &str,
) {
    loop {
        let event = next(events).await;
        if event == expected {
            return;
        }
        assert!(event.starts_with("Apply "), "{event} before {expected}");
    }
}

#[tokio::test]
async fn a_protobuf_watch_lists_follows_resumes_and_relists_after_410() {
    let fake = kubeci_testkit::FakeApiServer::start().await;
    let client = fake.client().await;
    let jobs = Api::<Job>::namespaced(client.clone(), "default");
    for (name, managed) in [("demo-1", true), ("demo-2", true), ("other", false)] {
        jobs.create(&PostParams::default(), &job(name, managed))
            .await
            .unwrap();
    }
    let url = Api::<BuildJob>::namespaced(client.clone(), "default")
        .resource_url()
        .to_owned();
    let mut events = pin!(watch::<BuildJob>(client, url, MANAGED.into()));

    // The first list, streamed: only the Jobs the selector matches.
    let mut listed = Vec::new();
    for _ in 0..4 {
        listed.push(next(&mut events).await);
    }
    listed[1..3].sort();
    assert_eq!(
        listed,
        ["Init", "InitApply demo-1", "InitApply demo-2", "InitDone"]
    );

    // Then changes, as they come.
    let annotate = json!({"metadata": {"annotations": {"kubeci.io/trigger": "manual"}}});
    let patch = PatchParams::default();
    jobs.patch("demo-1", &patch, &Patch::Merge(&annotate))
        .await
        .unwrap();
    until(&mut events, "Apply demo-1 manual").await;
    jobs.delete("demo-2", &DeleteParams::default())
        .await
        .unwrap();
    until(&mut events, "Delete demo-2").await;

    // A broken connection: resumed where it was, nothing listed again.
    fake.gate().drop_watches();
    until(&mut events, "error").await;
    jobs.create(&PostParams::default(), &job("demo-3", true))
        .await
        .unwrap();
    until(&mut events, "Apply demo-3 ").await;

    // History compacted while it was away: the resumed watch is answered 410 Gone, and
    // everything is listed again from the start.
    fake.gate().drop_watches();
    until(&mut events, "error").await;
    jobs.create(&PostParams::default(), &job("demo-4", true))
        .await
        .unwrap();
    fake.compact();
    until(&mut events, "error 410").await;
    let mut relisted = Vec::new();
    for _ in 0..5 {
        relisted.push(next(&mut events).await);
    }
    relisted[1..4].sort();
    assert_eq!(
        relisted,
        [
            "Init",
            "InitApply demo-1",
            "InitApply demo-3",
            "InitApply demo-4",
            "InitDone"
        ]
    );
}

#[tokio::test]
async fn an_event_that_cannot_be_read_is_an_error_and_the_watch_goes_on() {
    use kubeci_build::record::protobuf::encode;
    let job: Job = serde_json::from_value(json!({"metadata": {"name": "demo-1"}})).unwrap();
    let mut body = encode::watch_frame("ADDED", b"not an enveloped object");
    let object = encode::enveloped("batch/v1", "Job", &encode::job(&job));
    body.extend(encode::watch_frame("ADDED", &object));
    let end = encode::enveloped("batch/v1", "Job", &encode::bookmark("7", true));
    body.extend(encode::watch_frame("BOOKMARK", &end));
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            let media = "application/vnd.kubernetes.protobuf;stream=watch";
            ([(axum::http::header::CONTENT_TYPE, media)], body)
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = kube::Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    let url = Api::<BuildJob>::namespaced(client.clone(), "default")
        .resource_url()
        .to_owned();
    let mut events = pin!(watch::<BuildJob>(client, url, MANAGED.into()));
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next(&mut events).await);
    }
    assert_eq!(seen, ["Init", "error", "InitApply demo-1", "InitDone"]);
}
