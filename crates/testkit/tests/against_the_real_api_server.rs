//! One suite, two API servers: the fake one (`kubeci-testkit`) and the real one of
//! `scripts/cluster up` (or any cluster named by `KUBECI_E2E_KUBECONFIG`). Each probe asks
//! both the same questions, in a namespace of its own, and what clients rely on in the
//! answers — list or watch, status codes and reasons, selectors, resourceVersion
//! conflicts, the status subresource, Events in both APIs, `pods/log` parameters — must be
//! the same. A difference is a place where kubeci could pass its fast tests and fail in a
//! cluster.

use std::time::Duration;

use hyper::Request;
use kubeci_testkit::{FakeApiServer, PodBehaviour};
use serde_json::{json, Value};

/// An API server to probe: the fake (kept alive here) or the real one.
struct Server {
    client: kube::Client,
    real: bool,
    _fake: Option<FakeApiServer>,
}

async fn fake() -> Server {
    let fake = FakeApiServer::start().await;
    fake.set_pod_behaviour(|_| PodBehaviour::Succeed {
        logs: vec!["one".into(), "two".into(), "three".into()],
        duration: Duration::from_millis(300),
    });
    Server {
        client: fake.client().await,
        real: false,
        _fake: Some(fake),
    }
}

async fn real() -> Server {
    let path = std::env::var_os("KUBECI_E2E_KUBECONFIG").expect(
        "the real API server is needed: `eval \"$(scripts/cluster up)\"` or \
         KUBECI_E2E_KUBECONFIG=<kubeconfig>",
    );
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    Server {
        client: kube::Client::try_from(config).unwrap(),
        real: true,
        _fake: None,
    }
}

impl Server {
    /// A fresh namespace; on a real cluster, once its `default` ServiceAccount exists.
    async fn namespace(&self) -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "conformance-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        self.send(
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
        if self.real {
            let path = format!("/api/v1/namespaces/{name}/serviceaccounts/default");
            for _ in 0..600 {
                if self.send("GET", &path, None).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        name
    }

    /// A request; the body's text, or the API's error as a `Status`.
    async fn send(&self, method: &str, path: &str, body: Option<Value>) -> Result<String, Value> {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", "application/json")
            .body(body)
            .unwrap();
        match self.client.request_text(request).await {
            Ok(text) => Ok(text),
            Err(kube::Error::Api(status)) => Err(serde_json::to_value(*status).unwrap()),
            Err(e) => panic!("{method} {path}: {e}"),
        }
    }

    async fn json(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let text = self
            .send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        serde_json::from_str(&text).unwrap()
    }
}

/// What clients rely on in an error: code, reason, and the object named.
fn error_shape(status: Value) -> Value {
    json!({
        "code": status["code"],
        "reason": status["reason"],
        "status": status["status"],
        "kind": status["details"]["kind"],
        "name": status["details"]["name"],
    })
}

/// Runs `probe` against the fake and the real API server and compares what it saw.
macro_rules! same_on_both {
    ($probe:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
        async fn $probe() {
            let on_fake = super::$probe(&fake().await).await;
            let on_real = super::$probe(&real().await).await;
            assert_eq!(
                on_fake, on_real,
                "the fake API server answers differently from the real one"
            );
        }
    };
}

mod same_answers {
    use super::*;
    same_on_both!(boolean_query_parameters);
    same_on_both!(errors_have_the_same_codes_reasons_and_details);
    same_on_both!(a_watch_from_a_lists_version_sees_what_came_after);
    same_on_both!(label_and_field_selectors);
    same_on_both!(resource_versions_and_conflicts);
    same_on_both!(the_status_subresource_is_separate);
    same_on_both!(events_are_one_object_in_both_apis);
    same_on_both!(pod_logs_honour_their_parameters);
    same_on_both!(a_pod_finalizer_holds_a_deleted_pod_until_it_is_removed);
    same_on_both!(a_bound_token_is_reviewed_for_its_audience_while_its_pod_lives);
    same_on_both!(a_token_is_bound_only_to_a_pod_running_as_its_service_account);
    same_on_both!(a_bound_token_is_a_jwt_whose_claims_name_its_pod);
}

#[path = "against_the_real_api_server/tokens.rs"]
mod tokens;
use tokens::{
    a_bound_token_is_a_jwt_whose_claims_name_its_pod,
    a_bound_token_is_reviewed_for_its_audience_while_its_pod_lives,
    a_token_is_bound_only_to_a_pod_running_as_its_service_account,
};

async fn configmap(server: &Server, ns: &str, name: &str, labels: Value) -> Value {
    server
        .json(
            "POST",
            &format!("/api/v1/namespaces/{ns}/configmaps"),
            Some(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})),
        )
        .await
}

/// `watch`, `allowWatchBookmarks` and the other booleans are read as apimachinery reads
/// them: false only for `0` and `false` in any case.
async fn boolean_query_parameters(server: &Server) -> Value {
    let ns = server.namespace().await;
    configmap(server, &ns, "present", json!({})).await;
    let mut seen = serde_json::Map::new();
    for value in [
        "true", "True", "TRUE", "1", "yes", "", "false", "False", "0",
    ] {
        let path = format!("/api/v1/namespaces/{ns}/configmaps?watch={value}&timeoutSeconds=1");
        let text = server.send("GET", &path, None).await.unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap_or("{}")).unwrap();
        let kind = if first.get("type").is_some() {
            "watch"
        } else {
            "list"
        };
        seen.insert(format!("watch={value}"), json!(kind));
    }
    Value::Object(seen)
}

async fn errors_have_the_same_codes_reasons_and_details(server: &Server) -> Value {
    let ns = server.namespace().await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    configmap(server, &ns, "taken", json!({})).await;
    let missing = server
        .send("GET", &format!("{cms}/missing"), None)
        .await
        .unwrap_err();
    let taken = server
        .send("POST", &cms, Some(json!({"metadata": {"name": "taken"}})))
        .await
        .unwrap_err();
    let invalid = server
        .send(
            "POST",
            &cms,
            Some(json!({"metadata": {"name": "Not_A_Name"}})),
        )
        .await
        .unwrap_err();
    let no_namespace = server
        .send(
            "POST",
            "/api/v1/namespaces/no-such-namespace/configmaps",
            Some(json!({"metadata": {"name": "x"}})),
        )
        .await
        .unwrap_err();
    json!({
        "404": error_shape(missing),
        "409": error_shape(taken),
        "422": error_shape(invalid),
        "namespace missing": error_shape(no_namespace),
    })
}

async fn a_watch_from_a_lists_version_sees_what_came_after(server: &Server) -> Value {
    let ns = server.namespace().await;
    let cms = format!("/api/v1/namespaces/{ns}/configmaps");
    configmap(server, &ns, "before", json!({})).await;
    let list = server.json("GET", &cms, None).await;
    let version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    configmap(server, &ns, "after", json!({})).await;
    server
        .send("DELETE", &format!("{cms}/before"), None)
        .await
        .unwrap();
    let path = format!("{cms}?watch=1&resourceVersion={version}&timeoutSeconds=1");
    let text = server.send("GET", &path, None).await.unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["object"]["metadata"]["name"] != "kube-root-ca.crt")
        .map(|e| json!([e["type"], e["object"]["metadata"]["name"]]))
        .collect();
    json!(events)
}

async fn label_and_field_selectors(server: &Server) -> Value {
    let ns = server.namespace().await;
    configmap(server, &ns, "a", json!({"tier": "web", "env": "prod"})).await;
    configmap(server, &ns, "b", json!({"tier": "db", "env": "prod"})).await;
    configmap(server, &ns, "c", json!({"tier": "web"})).await;
    let mut seen = serde_json::Map::new();
    for selector in [
        "labelSelector=tier%3Dweb",
        "labelSelector=tier%21%3Dweb",
        "labelSelector=tier%20in%20(web,db),env",
        "labelSelector=%21env",
        "labelSelector=env%20notin%20(prod)",
        "fieldSelector=metadata.name%3Db",
        "fieldSelector=metadata.name%21%3Db",
    ] {
        let list = server
            .json(
                "GET",
                &format!("/api/v1/namespaces/{ns}/configmaps?{selector}"),
                None,
            )
            .await;
        let mut names: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
            .filter(|n| n != "kube-root-ca.crt")
            .collect();
        names.sort();
        seen.insert(selector.to_owned(), json!(names));
    }
    let bad = server
        .send(
            "GET",
            &format!("/api/v1/namespaces/{ns}/configmaps?labelSelector=%3D%3D"),
            None,
        )
        .await
        .unwrap_err();
    seen.insert("a malformed selector".into(), json!(bad["code"]));
    Value::Object(seen)
}

async fn resource_versions_and_conflicts(server: &Server) -> Value {
    let ns = server.namespace().await;
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases");
    let created = server
        .json(
            "POST",
            &leases,
            Some(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}})),
        )
        .await;
    let mut newer = created.clone();
    newer["spec"]["holderIdentity"] = json!("b");
    let updated = server
        .json("PUT", &format!("{leases}/l"), Some(newer))
        .await;
    let version = |o: &Value| {
        o["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let mut stale = created.clone();
    stale["spec"]["holderIdentity"] = json!("c");
    let conflict = server
        .send("PUT", &format!("{leases}/l"), Some(stale))
        .await
        .unwrap_err();
    let list = server.json("GET", &leases, None).await;
    let list_version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    json!({
        "an update gets a larger resourceVersion": version(&updated) > version(&created),
        "a list's resourceVersion covers its items": list_version >= version(&updated),
        "a stale update": error_shape(conflict),
    })
}

async fn the_status_subresource_is_separate(server: &Server) -> Value {
    let ns = server.namespace().await;
    let jobs = format!("/apis/batch/v1/namespaces/{ns}/jobs");
    let job = json!({
        "metadata": {"name": "j"},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "bash:5", "command": ["true"]}]}}},
    });
    server.json("POST", &jobs, Some(job)).await;
    // A real Job controller writes the Job meanwhile: each change starts from the newest
    // version, and is made again from the newest after a conflict.
    let replaced = read_modify_write(server, &format!("{jobs}/j"), "", |job| {
        job["status"] = json!({"active": 5});
        job["metadata"]["labels"] = json!({"changed": "yes"});
    })
    .await;
    let status_written = read_modify_write(server, &format!("{jobs}/j"), "/status", |job| {
        job["spec"]["parallelism"] = json!(7);
        job["metadata"]["labels"] = json!({"changed": "again"});
    })
    .await;
    json!({
        "the main resource ignores status": replaced["status"]["active"] != 5,
        "the main resource takes labels": replaced["metadata"]["labels"]["changed"] == "yes",
        "/status ignores spec": status_written["spec"]["parallelism"] != 7,
        "/status ignores labels": status_written["metadata"]["labels"]["changed"] == "yes",
    })
}

/// GETs `path`, changes it with `change` and PUTs it to `path` + `subresource`, again from
/// the newest version while the PUT conflicts (at most 20 times).
async fn read_modify_write(
    server: &Server,
    path: &str,
    subresource: &str,
    change: impl Fn(&mut Value),
) -> Value {
    for _ in 0..20 {
        let mut object = server.json("GET", path, None).await;
        change(&mut object);
        match server
            .send("PUT", &format!("{path}{subresource}"), Some(object))
            .await
        {
            Ok(text) => return serde_json::from_str(&text).unwrap(),
            Err(status) if status["code"] == 409 => continue,
            Err(status) => panic!("PUT {path}{subresource}: {status}"),
        }
    }
    panic!("PUT {path}{subresource}: a conflict 20 times in a row")
}

async fn events_are_one_object_in_both_apis(server: &Server) -> Value {
    let ns = server.namespace().await;
    let now = "2026-11-29T12:00:00.000000Z";
    let event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "cm.1", "namespace": ns},
        "eventTime": now, "reportingController": "kubeci", "reportingInstance": "kubeci-0",
        "action": "Validate", "reason": "InvalidJob", "type": "Warning", "note": "unknown key",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "name": "cm", "namespace": ns},
    });
    server
        .json(
            "POST",
            &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
            Some(event),
        )
        .await;
    let core = server
        .json("GET", &format!("/api/v1/namespaces/{ns}/events"), None)
        .await;
    let seen: Vec<Value> = core["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            json!({"name": e["metadata"]["name"], "reason": e["reason"], "message": e["message"],
                   "type": e["type"], "involvedObject": e["involvedObject"]["name"],
                   "reportingComponent": e["reportingComponent"]})
        })
        .collect();
    json!(seen)
}

async fn pod_logs_honour_their_parameters(server: &Server) -> Value {
    let ns = server.namespace().await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let pod = json!({
        "metadata": {"name": "p"},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "bash:5",
            "command": ["/bin/sh", "-c", "echo one; echo two; echo three"]}]},
    });
    server.json("POST", &pods, Some(pod)).await;
    for _ in 0..600 {
        let pod = server.json("GET", &format!("{pods}/p"), None).await;
        if pod["status"]["phase"] == "Succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = |query: &'static str| {
        let path = format!("{pods}/p/log?{query}");
        async move { server.send("GET", &path, None).await.unwrap() }
    };
    let stamped = log("timestamps=true").await;
    json!({
        "whole": log("").await,
        "tailLines=2": log("tailLines=2").await,
        "limitBytes=5": log("limitBytes=5").await,
        "follow=True (ended)": log("follow=True").await,
        "container=main": log("container=main").await,
        "timestamps=true": stamped.lines().map(|l| {
            let (time, text) = l.split_once(' ').unwrap_or(("", l));
            json!([time.parse::<jiff::Timestamp>().is_ok(), text])
        }).collect::<Vec<_>>(),
    })
}

/// A JSON patch (`application/json-patch+json`); the body's text or the API's error.
async fn json_patch(server: &Server, path: &str, operations: Value) -> Result<String, Value> {
    let request = Request::builder()
        .method("PATCH")
        .uri(path)
        .header("content-type", "application/json-patch+json")
        .body(operations.to_string().into_bytes())
        .unwrap();
    match server.client.request_text(request).await {
        Ok(text) => Ok(text),
        Err(kube::Error::Api(status)) => Err(serde_json::to_value(*status).unwrap()),
        Err(e) => panic!("PATCH {path}: {e}"),
    }
}

/// What kubeci's archive relies on: the Job controller copies the template's finalizers
/// to the pod (beside its own, which it removes once it counted the pod); a deleted pod
/// with a finalizer stays, being deleted, with its log, until the finalizer goes; a JSON
/// patch whose `test` fails changes nothing.
async fn a_pod_finalizer_holds_a_deleted_pod_until_it_is_removed(server: &Server) -> Value {
    let ns = server.namespace().await;
    let job = json!({
        "metadata": {"name": "held"},
        "spec": {"backoffLimit": 0, "template": {
            "metadata": {"finalizers": ["kubeci.io/archive"]},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "bash:5",
                "command": ["/bin/sh", "-c", "echo one; echo two; echo three"]}]}}},
    });
    let jobs = format!("/apis/batch/v1/namespaces/{ns}/jobs");
    server.json("POST", &jobs, Some(job)).await;
    let pods = format!("/api/v1/namespaces/{ns}/pods");
    let mut pod = Value::Null;
    // Until the pod ended and the Job controller took its own finalizer off.
    for _ in 0..600 {
        let list = server
            .json(
                "GET",
                &format!("{pods}?labelSelector=job-name%3Dheld"),
                None,
            )
            .await;
        pod = list["items"][0].clone();
        if pod["status"]["phase"] == "Succeeded"
            && pod["metadata"]["finalizers"] == json!(["kubeci.io/archive"])
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let at_end = pod["metadata"]["finalizers"].clone();
    let path = format!("{pods}/{}", pod["metadata"]["name"].as_str().unwrap());
    server.send("DELETE", &path, None).await.unwrap();
    let deleted = server.json("GET", &path, None).await;
    let log = server.send("GET", &format!("{path}/log"), None).await;
    let stale = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "other"},
                       {"op": "remove", "path": "/metadata/finalizers/0"}]);
    let refused = json_patch(server, &path, stale).await.unwrap_err();
    let still = server.json("GET", &path, None).await;
    let release = json!([{"op": "test", "path": "/metadata/finalizers/0", "value": "kubeci.io/archive"},
                         {"op": "remove", "path": "/metadata/finalizers/0"}]);
    json_patch(server, &path, release).await.unwrap();
    let mut gone = Value::Null;
    for _ in 0..300 {
        if let Err(status) = server.send("GET", &path, None).await {
            gone = status["code"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    json!({
        "finalizers once ended": at_end,
        "deleted, still there": deleted["metadata"]["deletionTimestamp"].is_string(),
        "deleted, its finalizers": deleted["metadata"]["finalizers"],
        "deleted, its log": log,
        "a failed test": {"code": refused["code"], "reason": refused["reason"]},
        "after a failed test": still["metadata"]["finalizers"],
        "after the release": gone,
    })
}
