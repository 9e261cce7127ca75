//! Reporters that fail alone: `kubeci serve` reporting to GitHub and to a notification
//! endpoint (`--notify-url`, a real HTTP receiver) records what each was sent, so a
//! receiver that refuses for a while holds and repeats nothing of the other's; a build
//! recorded by the kubeci before (`kubeci.io/reported: pending,error,check-run=42`, or the
//! same in the local engine's database) counts as reported to both and is sent nothing.

use k8s_openapi::api::batch::v1::Job as KubeJob;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common;
use crate::common::serve::Receiver;
use crate::serve_github::{check_runs_of, signed, wait, Caller, World, REPO_URL};

/// The commit statuses of `sha`, in the order GitHub received them.
fn statuses_of(world: &World, sha: &str) -> Vec<String> {
    world
        .github
        .statuses()
        .into_iter()
        .filter(|s| s.sha == sha)
        .map(|s| s.state)
        .collect()
}

/// The notifier refuses (503) every delivery while the build runs and ends: GitHub still
/// gets `pending` then `success`, each once; once the notifier answers again it gets the
/// build's end, and GitHub nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_notifier_neither_holds_nor_repeats_githubs_statuses() {
    let world = World::new(true).await;
    let receiver = Receiver::start().await;
    receiver.refuse(true);
    let kubeci = world.serve_also("0s", &["--notify-url", &receiver.url]);
    let (head, opened) = world.pull_request("opened", 2, "friend", false);
    assert_eq!(signed(&kubeci, "pull_request", "r-1", &opened).0, 200);
    wait(
        "GitHub to get the build's end while the notifier refuses",
        || statuses_of(&world, &head) == ["pending", "success"],
    );
    wait("the notifier to have been retried", || {
        receiver.refused_count("hello", 1) >= 2
    });
    receiver.refuse(false);
    wait("the notifier to get the build's end", || {
        receiver.finals("hello", 1) == ["success"]
    });
    wait("both to be recorded", || {
        common::serve::builds(&kubeci, "hello")[0]["reported"] == json!(["pending", "success"])
    });
    assert_eq!(
        statuses_of(&world, &head),
        ["pending", "success"],
        "nothing twice"
    );
    assert_eq!(receiver.repeats(), 0);
}

/// A finished build's Job as the kubeci before wrote it: one list of what all its
/// reporters were sent, with the check run it created.
fn job_from_before(head: &str) -> KubeJob {
    let labels = json!({
        "app.kubernetes.io/managed-by": "kubeci",
        "kubeci.io/job": "hello",
        "kubeci.io/build": "1",
    });
    serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": "hello-1", "namespace": "default", "labels": labels,
            "annotations": {
                "kubeci.io/trigger": "pull-request",
                "kubeci.io/git-url": REPO_URL,
                "kubeci.io/commit": head,
                "kubeci.io/pr": "2",
                "kubeci.io/cancelled-by": "alice",
                "kubeci.io/finished-at": "2026-01-02T03:04:05Z",
                "kubeci.io/reported": "pending,error,check-run=42",
            },
        },
        "spec": {"suspend": true, "template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "busybox", "command": ["true"]}]},
        }},
    }))
    .unwrap()
}

/// After an upgrade, a build the kubeci before reported to GitHub's check run 42 and to
/// the notifier is sent nothing again: neither the check run nor the notifier hears of
/// it, while a new build is reported to both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_recorded_by_the_kubeci_before_is_not_reported_again() {
    let world = World::calling_as(true, Caller::AppChecks).await;
    let receiver = Receiver::start().await;
    let (old_head, _) = world.pull_request("opened", 2, "friend", false);
    let jobs: Api<KubeJob> = Api::namespaced(world.server.client().await, "default");
    jobs.create(&PostParams::default(), &job_from_before(&old_head))
        .await
        .unwrap();
    let kubeci = world.serve_also("0s", &["--notify-url", &receiver.url]);
    wait("kubeci to see the build from before", || {
        common::serve::state(&kubeci, "hello", 1) == "aborted"
    });
    let (head, opened) = world.pull_request("synchronize", 2, "friend", false);
    let (status, answer) = signed(&kubeci, "pull_request", "u-1", &opened);
    assert_eq!((status, &answer["builds"][0]["number"]), (200, &json!(2)));
    wait("the new build reported to both", || {
        receiver.finals("hello", 2) == ["success"]
            && check_runs_of(&world.github, &head)
                .iter()
                .any(|run| run.status == "completed")
    });
    assert_eq!(receiver.finals("hello", 1), Vec::<String>::new());
    assert!(receiver
        .accepted("hello")
        .keys()
        .all(|(build, _)| *build == 2));
    assert!(check_runs_of(&world.github, &old_head).is_empty());
    let calls = world.github.requests();
    assert!(
        !calls
            .iter()
            .any(|(_, path)| path.contains("/check-runs/42")),
        "{calls:?}"
    );
}

/// The local engine reads the `reported` column the kubeci before wrote the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_engine_does_not_report_again_a_build_its_database_says_was_reported() {
    let (local, repo) = common::local::Local::new();
    let job = common::local::configmap("hello", &repo.bare, "true", "");
    local.write("hello.yaml", &job);
    let trigger = |kubeci: &common::serve::Kubeci| {
        let path = "/api/v1/jobs/default/hello/builds";
        let authorized = [common::serve::AUTHORIZED];
        assert_eq!(
            common::serve::http(kubeci, "POST", path, &authorized).0,
            201
        );
    };
    // Without an archive, the build stays in the database once it ended and was reported.
    let kubeci = local.serve(&["--no-archive"], &[]);
    trigger(&kubeci);
    wait("build 1 to succeed", || {
        common::serve::state(&kubeci, "hello", 1) == "succeeded"
    });
    drop(kubeci);
    let database = rusqlite::Connection::open(local.data.join("kubeci.db")).unwrap();
    let changed = database
        .execute(
            "UPDATE builds SET reported = 'pending,success' WHERE job = 'hello' AND number = 1",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(database);

    let receiver = Receiver::start().await;
    let kubeci = local.serve(&["--no-archive", "--notify-url", &receiver.url], &[]);
    trigger(&kubeci);
    wait("build 2 to be notified", || {
        receiver.finals("hello", 2) == ["success"]
    });
    assert_eq!(receiver.finals("hello", 1), Vec::<String>::new());
    assert_eq!(receiver.refused_count("hello", 1), 0);
}
