//! The pull request flow on both kinds of cluster — the fake API server, and the real
//! control plane of `scripts/cluster up` with its node agent — against the fake GitHub:
//! a trusted author's pull request is built at its head and reported pending then success;
//! an untrusted one gets one comment and no build until an admin says "ok to test".

use super::*;
use common::cluster::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_fake_api_server() {
    pull_requests(TestCluster::fake().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real control plane: eval \"$(scripts/cluster up)\", then cargo test --workspace -- --include-ignored (.ci/run does both)"]
async fn on_a_real_cluster() {
    pull_requests(TestCluster::real().await).await;
}

// Long on purpose: one scenario on both clusters, read top to bottom as a pull request lives
// (opened, pushed, commented on, closed); each step needs the state the one before left.
async fn pull_requests(cluster: TestCluster) {
    let ns = cluster.namespace.clone();
    let repo = common::git::Repo::new(&cluster.dir().join("github"));
    cluster.map_repository(REPO_URL, &repo.bare);
    cluster.apply("hello", JOB).await;
    let github = FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot").await;
    let secret = cluster.dir().join("secret");
    let token = cluster.dir().join("github-token");
    std::fs::write(&secret, SECRET).unwrap();
    std::fs::write(&token, GITHUB_TOKEN).unwrap();
    let url = github.url();
    let kubeci = cluster.serve(&[
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
    ]);
    let port = kubeci.port;
    let state =
        move |number: u64| common::serve::state_in(&Kubeci::probe(port), &ns, "hello", number);

    let head = repo.commit("change to #2");
    repo.push_head_to("refs/pull/2/head");
    let opened = pr_payload("opened", 2, "friend", &head, &[]);
    github.set_pull_request(REPO, pr_json(&opened));
    let (status, answer) = signed(&kubeci, "pull_request", "p-1", &opened);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"][0]["number"], 1, "{answer}");
    let state_1 = state.clone();
    cluster
        .until_blocking("build 1 to succeed", move || state_1(1) == "succeeded")
        .await;
    let (_, log) = common::serve::http(
        &kubeci,
        "GET",
        &format!("/api/v1/jobs/{}/hello/builds/1/log", cluster.namespace),
        &[],
    );
    assert!(
        log.contains(&format!("built {head}")),
        "the PR head was built: {log}"
    );
    cluster
        .until("the final status", async || {
            states_posted(&github, &head).last().map(String::as_str) == Some("success")
        })
        .await;
    assert_eq!(states_posted(&github, &head), ["pending", "success"]);

    let untrusted_head = repo.commit("change to #3");
    repo.push_head_to("refs/pull/3/head");
    let untrusted = pr_payload("opened", 3, "stranger", &untrusted_head, &[]);
    github.set_pull_request(REPO, pr_json(&untrusted));
    let (status, answer) = signed(&kubeci, "pull_request", "p-2", &untrusted);
    assert_eq!((status, &answer["builds"]), (200, &json!([])), "{answer}");
    let comments = github.comments(REPO, 3);
    assert_eq!(comments.len(), 1, "{comments:?}");
    assert!(comments[0].1.contains("ok to test"), "{comments:?}");
    assert_eq!(
        cluster.build_numbers("hello").await,
        [1],
        "no build for the untrusted PR"
    );

    let (status, answer) = signed(
        &kubeci,
        "issue_comment",
        "c-1",
        &comment_payload(3, 502, "admin", "ok to test"),
    );
    assert_eq!(
        (status, &answer["builds"][0]["number"]),
        (200, &json!(2)),
        "{answer}"
    );
    cluster
        .until_blocking("the approved build to succeed", move || {
            state(2) == "succeeded"
        })
        .await;
    cluster
        .until("its status", async || {
            states_posted(&github, &untrusted_head)
                .last()
                .map(String::as_str)
                == Some("success")
        })
        .await;
    drop(kubeci);
    cluster.finish().await;
}
