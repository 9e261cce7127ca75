//! What a build reports to GitHub, and under which name, when a tenant tries to make it
//! another job's: `kubeci serve --kubernetes` with the fake API server and the fake GitHub.
//! team-b's `deploy` (admin boss) is the only job of its namespace on the repository, so it
//! reports as `kubeci/deploy` — the name its branch protection requires. (Found by the
//! second review's attack on the first fixes, issue 27.)

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job as KubeJob;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};

use crate::common::serve::{http, state_in};
use crate::serve_github::{check_runs_of, signed, wait, Caller, World};
use crate::serve_github_tenants::{built, team_job_with};

fn team_job(namespace: &str, name: &str, admin: &str, extra: &str) -> Value {
    team_job_with(
        namespace,
        name,
        &format!("      admin_users: [{admin}]\n{extra}"),
    )
}

/// The world without the seed's `default/hello`, so team-b builds the repository alone.
async fn world_calling_as(caller: Caller, jobs: Vec<Value>) -> World {
    let world = World::calling_as(true, caller).await;
    let configmaps: Api<ConfigMap> = Api::namespaced(world.server.client().await, "default");
    configmaps
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    world.server.preload(jobs).unwrap();
    world
}

/// team-a's job `deploy` declares `context: kubeci/deploy`, team-b's job's name: it is
/// refused, so mallory's own pull request builds nothing of it, and nothing but team-b's
/// job reports under that name (the reporters once fell back to `kubeci/<job>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_refused_a_check_name_builds_and_reports_nothing_under_it() {
    let world = world_calling_as(
        Caller::AppChecks,
        vec![
            team_job(
                "team-a",
                "deploy",
                "mallory",
                "      context: kubeci/deploy\n",
            ),
            team_job("team-b", "deploy", "boss", ""),
        ],
    )
    .await;
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 7, "mallory", false);
    let (status, answer) = signed(&kubeci, "pull_request", "o-1", &opened);
    assert_eq!(
        (status, built(&answer)),
        (200, Vec::<String>::new()),
        "{answer}"
    );
    let runs = check_runs_of(&world.github, &head);
    assert_eq!(
        runs.len(),
        1,
        "team-b's run waiting for boss alone: {runs:#?}"
    );
    assert_eq!(
        (runs[0].name.as_str(), runs[0].external_id.as_str()),
        ("kubeci/deploy", "approval:team-b/deploy#7")
    );
}

/// A Job someone creates by hand in their own namespace, with kubeci's labels and
/// annotations naming team-b's repository and a pull request's head, is no build of a job
/// of theirs that owns a name: kubeci reports nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_created_by_hand_with_kubecis_labels_reports_nothing() {
    let world = world_calling_as(
        Caller::AppChecks,
        vec![
            team_job("team-a", "evil", "mallory", ""),
            team_job("team-b", "deploy", "boss", ""),
        ],
    )
    .await;
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 7, "stranger", false);
    let (status, answer) = signed(&kubeci, "pull_request", "o-1", &opened);
    assert_eq!(status, 200, "{answer}");
    let labels = json!({
        "app.kubernetes.io/managed-by": "kubeci",
        "kubeci.io/job": "deploy",
        "kubeci.io/build": "1",
    });
    let forged: KubeJob = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {
            "name": "deploy-1", "namespace": "team-a", "labels": labels,
            "annotations": {
                "kubeci.io/trigger": "pull-request",
                "kubeci.io/git-url": "https://github.com/Codertocat/Hello-World.git",
                "kubeci.io/commit": head,
                "kubeci.io/pr": "7",
            },
        },
        "spec": {"template": {
            "metadata": {"labels": labels},
            "spec": {"restartPolicy": "Never", "containers": [{"name": "build", "image": "busybox", "command": ["true"]}]},
        }},
    }))
    .unwrap();
    let jobs: Api<KubeJob> = Api::namespaced(world.server.client().await, "team-a");
    jobs.create(&PostParams::default(), &forged).await.unwrap();
    // kubeci sees it, as a build of a job team-a never declared (until then, no such job).
    let path = "/api/v1/jobs/team-a/deploy/builds";
    wait("kubeci to see the forged Job", || {
        http(&kubeci, "GET", path, &[]).0 == 200
            && !state_in(&kubeci, "team-a", "deploy", 1).is_empty()
    });
    // A real build started after it reports; by then the forged one would have.
    let (_, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-1",
        &crate::serve_github::comment_payload(7, 701, "boss", "ok to test"),
    );
    assert_eq!(built(&answer), ["team-b/deploy"], "{answer}");
    wait("team-b's build to report", || {
        check_runs_of(&world.github, &head)
            .iter()
            .any(|run| run.external_id == "team-b/deploy/1" && run.status == "completed")
    });
    let forged_runs: Vec<_> = check_runs_of(&world.github, &head)
        .into_iter()
        .filter(|run| run.external_id.starts_with("team-a/"))
        .collect();
    assert!(forged_runs.is_empty(), "{forged_runs:#?}");
}

/// Mallory builds her pull request with her job `evil`, then, while it runs, points `evil`
/// at another repository and declares team-b's name there: the build, made from team-b's
/// repository, reports nothing more — neither under the new name nor anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_moved_to_another_repository_mid_build_reports_no_name_of_the_other() {
    let world = world_calling_as(
        Caller::App,
        vec![
            team_job("team-a", "evil", "mallory", ""),
            team_job("team-b", "deploy", "boss", ""),
        ],
    )
    .await;
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 7, "mallory", true);
    let (status, answer) = signed(&kubeci, "pull_request", "o-1", &opened);
    assert_eq!(
        (status, built(&answer)),
        (200, vec!["team-a/evil".to_owned()]),
        "{answer}"
    );
    wait("its first status", || {
        world
            .github
            .statuses()
            .iter()
            .any(|s| s.sha == head && s.context == "kubeci/team-a/evil")
    });
    let configmaps: Api<ConfigMap> = Api::namespaced(world.server.client().await, "team-a");
    let mut moved = configmaps.get("evil").await.unwrap();
    let yaml = moved.data.as_ref().unwrap()["job.yaml"]
        .replace(
            "https://github.com/Codertocat/Hello-World.git",
            "https://github.com/mallory/other.git",
        )
        .replace(
            "      enabled: true\n",
            "      enabled: true\n      context: kubeci/deploy\n",
        );
    moved.data.as_mut().unwrap().insert("job.yaml".into(), yaml);
    configmaps
        .replace("evil", &PostParams::default(), &moved)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while state_in(&kubeci, "team-a", "evil", 1) != "succeeded" {
        assert!(Instant::now() < deadline, "build 1 did not end");
        std::thread::sleep(Duration::from_millis(100));
    }
    let posted: Vec<(String, String)> = world
        .github
        .statuses()
        .into_iter()
        .filter(|s| s.sha == head)
        .map(|s| (s.context, s.state))
        .collect();
    assert!(
        posted
            .iter()
            .all(|(context, _)| context == "kubeci/team-a/evil"),
        "{posted:?}"
    );
}

/// team-a's `whitelisted_orgs` names an organisation the App is not installed on: asking
/// GitHub about it fails, which makes its members untrusted by team-a's job — and fails no
/// delivery of team-b's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_teams_unanswerable_whitelisted_org_stops_no_other_teams_builds() {
    let world = world_calling_as(
        Caller::AppChecks,
        vec![
            team_job(
                "team-a",
                "evil",
                "mallory",
                "      whitelisted_orgs: [elsewhere]\n",
            ),
            team_job(
                "team-b",
                "deploy",
                "boss",
                "      whitelisted_users: [friend]\n",
            ),
        ],
    )
    .await;
    let kubeci = world.serve("0s");
    let (_head, opened) = world.pull_request("opened", 7, "friend", false);
    let (status, answer) = signed(&kubeci, "pull_request", "o-1", &opened);
    assert_eq!(
        (status, built(&answer)),
        (200, vec!["team-b/deploy".to_owned()]),
        "{answer}"
    );
}
