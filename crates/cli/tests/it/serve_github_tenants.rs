//! Many teams, one kubeci: one team's admin approves nothing of another team's job. Jobs
//! `team-a/evil` (admin mallory) and `team-b/deploy` (admin boss) build the same
//! repository as `default/hello`; a stranger opens a pull request. The real `kubeci serve
//! --kubernetes` as a GitHub App, the fake API server running the pods, the fake GitHub.

use serde_json::{json, Value};

use crate::common::serve::{configmap, http};
use crate::serve_github::{
    check_run_payload, check_runs_of, comment_payload, pr_payload, signed, wait, Caller, World,
};

fn team_job(namespace: &str, name: &str, admin: &str) -> Value {
    team_job_with(namespace, name, &format!("      admin_users: [{admin}]\n"))
}

/// A job of `namespace` on the repository, with these `ghprb` lines.
/// (A commit with a file `slow` takes 15 s to build.)
pub(crate) fn team_job_with(namespace: &str, name: &str, ghprb: &str) -> Value {
    let yaml = format!(
        "- job:\n    name: {name}\n    git:\n      url: https://github.com/Codertocat/Hello-World.git\n      branch: main\n    run_command: if [ -f slow ]; then sleep 15; fi; echo \"built $GIT_COMMIT\"\n    ghprb:\n      enabled: true\n{ghprb}"
    );
    let mut object = configmap(name, &yaml);
    object["metadata"]["namespace"] = namespace.into();
    object
}

/// The builds a delivery's answer names: `namespace/job`.
pub(crate) fn built(answer: &Value) -> Vec<String> {
    answer["builds"]
        .as_array()
        .unwrap_or_else(|| panic!("builds in {answer}"))
        .iter()
        .map(|b| {
            format!(
                "{}/{}",
                b["namespace"].as_str().unwrap(),
                b["job"].as_str().unwrap()
            )
        })
        .collect()
}

fn reasons(answer: &Value) -> Vec<String> {
    serde_json::from_value(answer["reasons"].clone()).unwrap_or_default()
}

/// A `labeled` delivery: `sender` added `label` to pull request 7 at `head`.
fn labeled(head: &str, sender: &str, label: &str) -> Vec<u8> {
    let mut payload: Value =
        serde_json::from_slice(&pr_payload("labeled", 7, "stranger", head, &[label])).unwrap();
    payload["label"] = json!({ "name": label });
    payload["sender"]["login"] = sender.into();
    serde_json::to_vec(&payload).unwrap()
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_teams_admin_approves_nothing_of_another_teams_job_and_approvals_outlive_kubeci() {
    let world = World::calling_as(true, Caller::AppChecks).await;
    world
        .server
        .preload(vec![
            team_job("team-a", "evil", "mallory"),
            team_job("team-b", "deploy", "boss"),
        ])
        .unwrap();
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 7, "stranger", false);
    let (status, answer) = signed(&kubeci, "pull_request", "o-1", &opened);
    assert_eq!((status, built(&answer)), (200, vec![]), "{answer}");
    let mut waiting: Vec<String> = check_runs_of(&world.github, &head)
        .into_iter()
        .map(|run| run.external_id)
        .collect();
    waiting.sort();
    assert_eq!(
        waiting,
        [
            "approval:default/hello#7",
            "approval:team-a/evil#7",
            "approval:team-b/deploy#7"
        ]
    );

    // Mallory's "ok to test" approves her own job alone.
    let (_, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-1",
        &comment_payload(7, 701, "mallory", "ok to test"),
    );
    assert_eq!(built(&answer), ["team-a/evil"], "{answer}");
    assert!(
        reasons(&answer).contains(
            &"team-b/deploy: mallory is not an admin of this job: approval ignored".to_owned()
        ),
        "{answer}"
    );
    let labels = world
        .github
        .pull_request(crate::serve_github::REPO, 7)
        .unwrap()["labels"]
        .clone();
    assert!(labels.to_string().contains("ok-to-test"), "{labels}");

    // The label kubeci added, as GitHub then delivers it, and the same label added by
    // someone on no list: nothing is built.
    for (id, sender) in [("l-1", "kubeci-bot"), ("l-2", "nobody")] {
        let (status, answer) = signed(
            &kubeci,
            "pull_request",
            id,
            &labeled(&head, sender, "ok-to-test"),
        );
        assert_eq!(
            (status, built(&answer)),
            (200, vec![]),
            "{sender}: {answer}"
        );
    }

    // Mallory's "Approve and build" on team-b's check run changes nothing, and the run
    // says so, naming team-b's job alone.
    let team_b = |head: &str| {
        check_runs_of(&world.github, head)
            .into_iter()
            .find(|run| run.external_id == "approval:team-b/deploy#7")
            .unwrap()
    };
    let (status, answer) = signed(
        &kubeci,
        "check_run",
        "a-1",
        &check_run_payload(&team_b(&head), 7, "mallory", Some("approve")),
    );
    assert_eq!((status, built(&answer)), (200, vec![]), "{answer}");
    let refused = team_b(&head);
    assert_eq!(refused.history, ["completed:action_required"]);
    let summary = refused.output["summary"].as_str().unwrap();
    assert!(
        summary.contains("team-b/deploy: mallory is not an admin of this job: nothing changed"),
        "{summary}"
    );
    assert!(!summary.contains("evil"), "another job's reason: {summary}");

    // A push: the approval was of the old head; nothing is built until an admin approves
    // the new one. Boss approves it for team-b.
    let (pushed, synchronize) = world.pull_request("synchronize", 7, "stranger", false);
    let (_, answer) = signed(&kubeci, "pull_request", "s-1", &synchronize);
    assert_eq!(built(&answer), Vec::<String>::new(), "{answer}");
    let (_, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-2",
        &comment_payload(7, 702, "boss", "/ok-to-test"),
    );
    assert_eq!(built(&answer), ["team-b/deploy"], "{answer}");
    wait("team-b's build to report", || {
        check_runs_of(&world.github, &pushed)
            .iter()
            .any(|run| run.external_id == "team-b/deploy/1" && run.status == "completed")
    });

    // kubeci is replaced: the approval was kept in the cluster, so the author may retest
    // the job its admin approved, and no other.
    kubeci.kill();
    let kubeci = world.serve("0s");
    let (status, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-3",
        &comment_payload(7, 703, "stranger", "/retest"),
    );
    assert_eq!(
        (status, built(&answer)),
        (200, vec!["team-b/deploy".to_owned()]),
        "{answer}"
    );
    assert_eq!(answer["builds"][0]["number"], 2, "{answer}");
    assert!(
        reasons(&answer).contains(&"team-a/evil: stranger may not trigger builds".to_owned()),
        "{answer}"
    );
}

/// Check names are unique per repository across namespaces: `default/hello` reports as
/// `kubeci/hello` until another namespace builds the repository, then as
/// `kubeci/default/hello`; team-a's job declaring `kubeci/hello` — hello's name — is
/// invalid, says which job keeps the name, and never builds or reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_cannot_report_under_another_jobs_check_name() {
    let world = World::new(true).await;
    world
        .server
        .preload(vec![
            team_job_with(
                "team-a",
                "evil",
                "      whitelisted_users: [friend]\n      context: kubeci/hello\n",
            ),
            team_job_with("team-b", "lint", "      whitelisted_users: [friend]\n"),
        ])
        .unwrap();
    let kubeci = world.serve("0s");
    let (status, job) = http(&kubeci, "GET", "/api/v1/jobs/team-a/evil", &[]);
    assert_eq!(status, 200, "{job}");
    let job: Value = serde_json::from_str(&job).unwrap();
    assert_eq!(job["valid"], false, "{job}");
    let diagnostics = job["diagnostics"].to_string();
    assert!(diagnostics.contains("check-name-taken"), "{diagnostics}");
    assert!(
        diagnostics.contains("`kubeci/hello` by job default/hello"),
        "{diagnostics}"
    );

    let (head, opened) = world.pull_request("opened", 9, "friend", false);
    let (status, answer) = signed(&kubeci, "pull_request", "n-1", &opened);
    let mut started = built(&answer);
    started.sort();
    assert_eq!(
        (status, started),
        (
            200,
            vec!["default/hello".to_owned(), "team-b/lint".to_owned()]
        ),
        "{answer}"
    );
    let contexts = || {
        let mut contexts: Vec<String> = world
            .github
            .statuses()
            .into_iter()
            .filter(|s| s.sha == head && s.state == "success")
            .map(|s| s.context)
            .collect();
        contexts.sort();
        contexts
    };
    wait("both builds' final statuses", || contexts().len() == 2);
    assert_eq!(contexts(), ["kubeci/default/hello", "kubeci/team-b/lint"]);
    assert!(
        world
            .github
            .statuses()
            .iter()
            .all(|s| s.context != "kubeci/hello"),
        "no job reports under the short name while two namespaces build the repository"
    );
}

/// The attacks above on both kinds of cluster — the fake API server and the real control
/// plane of `scripts/cluster up` — with two namespaces, as their tenancy enables them, and
/// the fake GitHub (commit statuses, with a token): one team's admin approves nothing of
/// the other's job, a label or a push approves nothing, an approval outlives kubeci (in
/// the job's ledger Lease), and a job declaring the other team's check name is refused.
mod on_both_clusters {
    use super::*;
    use crate::common::cluster::TestCluster;
    use crate::common::serve::{state_in, Kubeci};
    use crate::serve_github::{pr_json, GITHUB_TOKEN, REPO, REPO_URL, SECRET};
    use kubeci_testkit::FakeGitHub;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_the_fake_api_server() {
        two_teams(TestCluster::fake().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
    async fn on_a_real_cluster() {
        two_teams(TestCluster::real().await).await;
    }

    fn job(name: &str, ghprb: &str) -> String {
        format!(
            "- job:\n    name: {name}\n    git:\n      url: {REPO_URL}\n      branch: main\n    run_command: echo \"built $GIT_COMMIT\"\n    timeout: 5m\n    ghprb:\n      enabled: true\n{ghprb}"
        )
    }

    // Long on purpose: one scenario on both clusters, read top to bottom as two teams act on one
    // repository; each step needs the state the one before left.
    async fn two_teams(cluster: TestCluster) {
        let team_b = cluster.namespace.clone();
        let team_a = cluster.add_namespace("a", true).await;
        let repo = crate::common::git::Repo::new(&cluster.dir().join("github"));
        cluster.map_repository(REPO_URL, &repo.bare);
        cluster
            .apply("deploy", &job("deploy", "      admin_users: [boss]\n"))
            .await;
        cluster
            .apply_in(
                &team_a,
                "evil",
                &job("evil", "      admin_users: [mallory]\n"),
                json!({}),
            )
            .await;
        let spoof = job(
            "spoof",
            "      whitelisted_users: [stranger]\n      context: kubeci/deploy\n",
        );
        cluster.apply_in(&team_a, "spoof", &spoof, json!({})).await;
        let github = FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot").await;
        let (secret, token) = (cluster.dir().join("secret"), cluster.dir().join("token"));
        std::fs::write(&secret, SECRET).unwrap();
        std::fs::write(&token, GITHUB_TOKEN).unwrap();
        let url = github.url();
        let flags = [
            "--namespace",
            team_a.as_str(),
            "--github-webhook-secret-file",
            secret.to_str().unwrap(),
            "--github-token-file",
            token.to_str().unwrap(),
            "--github-url",
            &url,
            "--github-host",
            "github.com",
            "--github-bot",
            "kubeci-bot",
            "--github-resync",
            "0s",
        ];
        let kubeci = cluster.serve(&flags);

        // The job declaring team-b's name is refused, and says whose it is.
        let (_, spoofed) = http(&kubeci, "GET", &format!("/api/v1/jobs/{team_a}/spoof"), &[]);
        assert!(spoofed.contains("check-name-taken"), "{spoofed}");
        assert!(
            spoofed.contains(&format!("by job {team_b}/deploy")),
            "{spoofed}"
        );

        let head = repo.commit("change to #7");
        repo.push_head_to("refs/pull/7/head");
        let opened = pr_payload("opened", 7, "stranger", &head, &[]);
        github.set_pull_request(REPO, pr_json(&opened));
        let (status, answer) = signed(&kubeci, "pull_request", "o-1", &opened);
        assert_eq!((status, built(&answer)), (200, vec![]), "{answer}");

        let comment = |id: u64, author: &str, body: &str| comment_payload(7, id, author, body);
        let (_, answer) = signed(
            &kubeci,
            "issue_comment",
            "c-1",
            &comment(701, "mallory", "ok to test"),
        );
        assert_eq!(built(&answer), [format!("{team_a}/evil")], "{answer}");
        for (id, sender) in [("l-1", "kubeci-bot"), ("l-2", "nobody")] {
            let (_, answer) = signed(
                &kubeci,
                "pull_request",
                id,
                &labeled(&head, sender, "ok-to-test"),
            );
            assert_eq!(built(&answer), Vec::<String>::new(), "{sender}: {answer}");
        }

        // A push waits again; boss approves it for team-b alone.
        let pushed = repo.commit("another change to #7");
        repo.push_head_to("refs/pull/7/head");
        let synchronize = pr_payload("synchronize", 7, "stranger", &pushed, &[]);
        github.set_pull_request(REPO, pr_json(&synchronize));
        let (_, answer) = signed(&kubeci, "pull_request", "s-1", &synchronize);
        assert_eq!(built(&answer), Vec::<String>::new(), "{answer}");
        let (_, answer) = signed(
            &kubeci,
            "issue_comment",
            "c-2",
            &comment(702, "boss", "/ok-to-test"),
        );
        assert_eq!(built(&answer), [format!("{team_b}/deploy")], "{answer}");
        let port = kubeci.port;
        let ns = team_b.clone();
        cluster
            .until_blocking("team-b's build to succeed", move || {
                state_in(&Kubeci::probe(port), &ns, "deploy", 1) == "succeeded"
            })
            .await;
        let context = format!("kubeci/{team_b}/deploy");
        cluster
            .until("its status", async || {
                github
                    .statuses()
                    .iter()
                    .any(|s| s.sha == pushed && s.context == context && s.state == "success")
            })
            .await;
        assert!(
            github
                .statuses()
                .iter()
                .all(|s| s.context != "kubeci/deploy"),
            "nothing reports under the short name while two namespaces build the repository"
        );

        // A new kubeci finds the approval in the cluster: the author may retest team-b's
        // job, and only it.
        kubeci.kill();
        let kubeci = cluster.serve(&flags);
        let (status, answer) = signed(
            &kubeci,
            "issue_comment",
            "c-3",
            &comment(703, "stranger", "/retest"),
        );
        assert_eq!(
            (status, built(&answer)),
            (200, vec![format!("{team_b}/deploy")]),
            "{answer}"
        );
        drop(kubeci);
        cluster.finish().await;
    }
}
