//! Tenancy (`--tenancy labels`, the default): Namespaces opt in to builds with a label and
//! list the ServiceAccounts, Secrets and repositories their jobs may use in annotations;
//! `--tenancy open` builds as before. Each scenario runs on the fake API server and on a
//! real control plane (see `serve_kubernetes_scenarios.rs`), with two namespaces.

use crate::common;

use common::cluster::{assert_rbac_grants, TestCluster};
use common::serve::{http, json, state_in, trigger_in, Kubeci};
use serde_json::{json, Value};

on_both!(namespaces_decide_what_their_jobs_may_use_and_a_change_applies_at_once);
on_both!(open_tenancy_builds_in_every_namespace_as_before);
on_both!(a_queued_build_never_starts_with_what_its_namespace_took_back);

/// The API's view of job `namespace/name`.
fn job(kubeci: &Kubeci, namespace: &str, name: &str) -> Value {
    json(kubeci, &format!("/api/v1/jobs/{namespace}/{name}"))
}

/// Whether job `namespace/name` is served and valid; not yet while its ConfigMap is on
/// its way (404).
fn valid(kubeci: &Kubeci, namespace: &str, name: &str) -> bool {
    let (status, body) = http(
        kubeci,
        "GET",
        &format!("/api/v1/jobs/{namespace}/{name}"),
        &[],
    );
    status == 200 && serde_json::from_str::<Value>(&body).unwrap()["valid"] == true
}

/// Its errors, one string.
fn errors(kubeci: &Kubeci, namespace: &str, name: &str) -> String {
    job(kubeci, namespace, name)["errors"].to_string()
}

/// `host/owner/*` of the scenario's repository.
fn owner_pattern(cluster: &TestCluster) -> String {
    let key = kubeci_spec::giturl::GitUrl::parse(cluster.repo_url())
        .unwrap()
        .repository_key()
        .unwrap();
    let (owner, _) = key.rsplit_once('/').unwrap();
    format!("{owner}/*")
}

/// Whether a Warning Event on ConfigMap `namespace/name` says `words`.
async fn warned(cluster: &TestCluster, namespace: &str, name: &str, words: &str) -> bool {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(cluster.client.clone(), namespace);
    events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .any(|e| {
            e.reason.as_deref() == Some("InvalidJob")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
                && e.note.as_deref().unwrap_or_default().contains(words)
        })
}

/// A namespace without the label builds nothing, whatever its ConfigMap claims; an
/// unlisted ServiceAccount, Secret or repository makes a job invalid with the rule, the
/// Namespace and the command that allows it (page, API, Event) and never gives it a pod;
/// annotating the Namespace makes it valid and it builds, without a restart; taking the
/// permission back stops its queued build, with the reason. (One long scenario: each step
/// starts from the state the one before left, as an administrator's changes do.)
async fn namespaces_decide_what_their_jobs_may_use_and_a_change_applies_at_once(
    cluster: TestCluster,
) {
    let ns = cluster.namespace.clone();
    let closed = cluster.add_namespace("closed", false).await;
    let repositories = owner_pattern(&cluster);
    cluster
        .annotate_namespace(&[("kubeci.io/repositories", Some(&repositories))])
        .await;
    // What only the Namespace may say, claimed by the ConfigMap itself.
    let claims = json!({
        "labels": {"kubeci.io/builds": "enabled"},
        "annotations": {"kubeci.io/builds": "enabled", "kubeci.io/service-accounts": "deployer"},
    });
    let deployer = "    service_account_name: deployer\n";
    cluster
        .apply_in(
            &closed,
            "outsider",
            &cluster.job_yaml("outsider", "echo never", deployer),
            claims.clone(),
        )
        .await;
    cluster
        .apply_in(
            &ns,
            "deploy",
            &cluster.job_yaml("deploy", "echo deployed", deployer),
            claims,
        )
        .await;
    cluster
        .apply(
            "keyed",
            &cluster.job_yaml("keyed", "echo never", "    aws_secret: aws-keys\n"),
        )
        .await;
    let elsewhere = cluster.job_yaml("foreign", "echo never", "").replace(
        cluster.repo_url(),
        "https://git.kubeci.test/elsewhere/repo.git",
    );
    cluster.apply("foreign", &elsewhere).await;
    let kubeci = cluster.serve(&["--namespace", &closed]);

    let expected = [
        (closed.as_str(), "outsider", format!("namespace {closed} (where its builds run) is not enabled for kubeci builds"), format!("kubectl label namespace {closed} kubeci.io/builds=enabled")),
        (ns.as_str(), "deploy", format!("namespace {ns} does not allow ServiceAccount deployer"), format!("kubectl annotate namespace {ns} kubeci.io/service-accounts=deployer")),
        (ns.as_str(), "keyed", format!("namespace {ns} does not allow Secret aws-keys"), format!("kubectl annotate namespace {ns} kubeci.io/secrets=aws-keys")),
        (ns.as_str(), "foreign", format!("namespace {ns} does not allow repository git.kubeci.test/elsewhere/repo"), format!("kubectl annotate --overwrite namespace {ns} kubeci.io/repositories={repositories},git.kubeci.test/elsewhere/repo")),
    ];
    for (namespace, name, message, command) in &expected {
        let shown = job(&kubeci, namespace, name);
        assert_eq!(shown["valid"], false, "{shown}");
        let errors = shown["errors"].to_string();
        assert!(
            errors.contains(message) && errors.contains(command),
            "{errors}"
        );
        let (_, page) = http(&kubeci, "GET", &format!("/jobs/{namespace}/{name}"), &[]);
        assert!(page.contains(message), "{page}");
        assert_eq!(trigger_in(&kubeci, namespace, name, None).0, 422, "{name}");
        cluster
            .until(
                &format!("a Warning Event on {namespace}/{name}"),
                async || warned(&cluster, namespace, name, message).await,
            )
            .await;
    }
    let listed = json(&kubeci, "/api/v1/jobs");
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["valid"] == false),
        "{listed}"
    );

    // The administrator allows the ServiceAccount: the job is valid, kubeci not restarted.
    cluster
        .annotate_namespace(&[("kubeci.io/service-accounts", Some("deployer"))])
        .await;
    let probe = Kubeci::probe(kubeci.port);
    let at = ns.clone();
    cluster
        .until_blocking("the job to be valid", move || valid(&probe, &at, "deploy"))
        .await;
    assert!(
        errors(&kubeci, &ns, "keyed").contains("aws-keys"),
        "still refused"
    );

    // The administrator enables the closed namespace: its jobs build there.
    cluster
        .set_namespace_metadata(&closed, &[("kubeci.io/builds", Some("enabled"))], &[])
        .await;
    // Enabled, it still allows no ServiceAccount: its ConfigMap's own annotation counts
    // for nothing.
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the outsider to be refused its ServiceAccount", move || {
            errors(&probe, &at, "outsider").contains("does not allow ServiceAccount deployer")
        })
        .await;
    cluster
        .apply_in(
            &closed,
            "outsider",
            &cluster.job_yaml("outsider", "echo built", ""),
            json!({}),
        )
        .await;
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the outsider to be valid", move || {
            valid(&probe, &at, "outsider")
        })
        .await;
    assert_eq!(trigger_in(&kubeci, &closed, "outsider", None).0, 201);
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the build to succeed", move || {
            state_in(&probe, &at, "outsider", 1) == "succeeded"
        })
        .await;

    // Taken back while a build waits: the waiting build stops, with the reason, and never
    // gets a pod; the running one finishes.
    cluster
        .apply_in(
            &closed,
            "queue",
            &cluster.job_yaml("queue", "sleep 8", "    max_concurrency: 1\n"),
            json!({}),
        )
        .await;
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the queue job", move || valid(&probe, &at, "queue"))
        .await;
    assert_eq!(trigger_in(&kubeci, &closed, "queue", None).0, 201);
    assert_eq!(trigger_in(&kubeci, &closed, "queue", None).0, 201);
    assert_eq!(state_in(&kubeci, &closed, "queue", 2), "queued");
    // Build 1 is released first (a build released after the change would be stopped too:
    // releasing checks the queued pod against the Namespace as it is then).
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("build 1 to be released", move || {
            state_in(&probe, &at, "queue", 1) != "queued"
        })
        .await;
    cluster
        .set_namespace_metadata(&closed, &[("kubeci.io/builds", None)], &[])
        .await;
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the queued build to stop", move || {
            state_in(&probe, &at, "queue", 2) == "aborted"
        })
        .await;
    let stopped = json(&kubeci, &format!("/api/v1/jobs/{closed}/queue/builds/2"));
    assert!(
        stopped["message"]
            .as_str()
            .is_some_and(|m| m.contains("refused: namespace")
                && m.contains("is not enabled for kubeci builds")),
        "{stopped}"
    );
    assert!(trigger_in(&kubeci, &closed, "queue", None).0 == 422);
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(cluster.client.clone(), &closed);
    let pods_of = |build: u64| {
        let pods = pods.clone();
        async move {
            let selector = format!("kubeci.io/job=queue,kubeci.io/build={build}");
            pods.list(&kube::api::ListParams::default().labels(&selector))
                .await
                .unwrap()
                .items
                .len()
        }
    };
    assert_eq!(pods_of(2).await, 0, "no pod, ever");
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the running build to finish", move || {
            state_in(&probe, &at, "queue", 1) == "succeeded"
        })
        .await;
    for name in ["deploy", "keyed", "foreign"] {
        assert!(cluster.build_numbers(name).await.is_empty(), "{name}");
    }
    assert_rbac_grants(&cluster.proxy.gate().requests());
    drop(kubeci);
    cluster.finish().await;
}

/// `--tenancy open`: a namespace without the label builds, with any ServiceAccount.
async fn open_tenancy_builds_in_every_namespace_as_before(cluster: TestCluster) {
    let closed = cluster.add_namespace("open", false).await;
    cluster
        .apply_in(
            &closed,
            "anywhere",
            &cluster.job_yaml("anywhere", "echo built", ""),
            json!({}),
        )
        .await;
    let kubeci = cluster.serve(&["--namespace", &closed, "--tenancy", "open"]);
    assert_eq!(job(&kubeci, &closed, "anywhere")["valid"], true);
    assert_eq!(trigger_in(&kubeci, &closed, "anywhere", None).0, 201);
    let probe = Kubeci::probe(kubeci.port);
    let at = closed.clone();
    cluster
        .until_blocking("the build to succeed", move || {
            state_in(&probe, &at, "anywhere", 1) == "succeeded"
        })
        .await;
    assert!(
        kubeci
            .log()
            .contains("tenancy open: whoever may write a job ConfigMap"),
        "the server says what open allows: {}",
        kubeci.log()
    );
    assert!(
        cluster
            .proxy
            .gate()
            .requests()
            .iter()
            .all(|r| r.resource != "namespaces" || r.verb == "create"),
        "open reads no Namespace"
    );
    drop(kubeci);
    cluster.finish().await;
}

/// A queued build's Job holds the pod rendered when it was queued. The tenant queues
/// builds naming ServiceAccount `deployer`, then changes its ConfigMap so the job names it
/// no more (still valid), and the administrator takes `deployer` back: the queued build
/// is checked as it was rendered when it is released, and stops instead of starting as
/// `deployer` (the third review's finding: it was released with the revoked account).
async fn a_queued_build_never_starts_with_what_its_namespace_took_back(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    cluster
        .annotate_namespace(&[("kubeci.io/service-accounts", Some("deployer"))])
        .await;
    let limited = "    max_concurrency: 1\n    service_account_name: deployer\n";
    cluster
        .apply("queue", &cluster.job_yaml("queue", "sleep 30", limited))
        .await;
    let kubeci = cluster.serve(&[]);
    let probe = Kubeci::probe(kubeci.port);
    let at = ns.clone();
    cluster
        .until_blocking("the job to be valid", move || valid(&probe, &at, "queue"))
        .await;
    assert_eq!(trigger_in(&kubeci, &ns, "queue", None).0, 201);
    assert_eq!(trigger_in(&kubeci, &ns, "queue", None).0, 201);
    assert_eq!(state_in(&kubeci, &ns, "queue", 2), "queued");
    let probe = Kubeci::probe(kubeci.port);
    let at = ns.clone();
    cluster
        .until_blocking("build 1 to be released", move || {
            state_in(&probe, &at, "queue", 1) != "queued"
        })
        .await;
    // The tenant drops the ServiceAccount from its ConfigMap (the job stays valid)...
    let unlimited = cluster.job_yaml("queue", "sleep 30", "    max_concurrency: 1\n");
    cluster.apply("queue", &unlimited).await;
    let probe = Kubeci::probe(kubeci.port);
    let at = ns.clone();
    cluster
        .until_blocking("the job to name no ServiceAccount", move || {
            !job(&probe, &at, "queue")["job_yaml"]
                .to_string()
                .contains("deployer")
        })
        .await;
    // ...the administrator takes `deployer` back, and build 1 ends, freeing the slot.
    cluster
        .annotate_namespace(&[("kubeci.io/service-accounts", None)])
        .await;
    let (status, body) = http(
        &kubeci,
        "POST",
        &format!("/api/v1/jobs/{ns}/queue/builds/1/cancel"),
        &[common::serve::AUTHORIZED],
    );
    assert!(status < 300, "{status} {body}");
    let probe = Kubeci::probe(kubeci.port);
    let at = ns.clone();
    cluster
        .until_blocking("build 2 to stop or start", move || {
            state_in(&probe, &at, "queue", 2) != "queued"
        })
        .await;
    let build = json(&kubeci, &format!("/api/v1/jobs/{ns}/queue/builds/2"));
    assert_eq!(build["state"], "aborted", "{build}");
    assert!(
        build["message"]
            .as_str()
            .is_some_and(|m| m.contains("does not allow ServiceAccount deployer")),
        "{build}"
    );
    assert!(cluster.pods("queue", 2).await.is_empty(), "no pod, ever");
    drop(kubeci);
    cluster.finish().await;
}
