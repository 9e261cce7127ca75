//! A pull request's build whose job turns invalid while it runs (a broken edit of its
//! ConfigMap or job file) still reports its end to GitHub, under the name recorded on it
//! when it was created — on both engines: `kubeci serve --kubernetes` with the fake API
//! server, and `kubeci serve --local`, each with the fake GitHub. The build waits for a
//! file the test creates once the job is invalid.

use std::path::Path;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use kubeci_testkit::FakeGitHub;

use crate::common;
use crate::common::serve::{configmap, Kubeci};
use crate::serve_github::{
    pr_json, pr_payload, signed, wait, Caller, World, GITHUB_TOKEN, REPO, REPO_URL, SECRET,
};

/// A job `gated` of the repository that friend's pull requests build; its build waits
/// for the file `gate`.
fn gated_job(gate: &Path) -> String {
    format!(
        "- job:\n    name: gated\n    git:\n      url: {REPO_URL}\n      branch: main\n    run_command: until [ -f {} ]; do sleep 0.1; done; echo \"built $GIT_COMMIT\"\n    timeout: 5m\n    ghprb:\n      enabled: true\n      whitelisted_users: [friend]\n",
        gate.display()
    )
}

/// The job made invalid: a misspelt key, and no command left.
fn broken(job_yaml: &str) -> String {
    job_yaml.replace("run_command:", "run_comand:")
}

/// The states posted on `head` under `kubeci/gated`.
fn states(github: &FakeGitHub, head: &str) -> Vec<String> {
    github
        .statuses()
        .into_iter()
        .filter(|s| s.sha == head && s.context == "kubeci/gated")
        .map(|s| s.state)
        .collect()
}

/// Opens pull request 7 at `head` (pushed already) by friend; kubeci builds `gated`.
fn open_pull_request(kubeci: &Kubeci, github: &FakeGitHub, head: &str) {
    let payload = pr_payload("opened", 7, "friend", head, &[]);
    github.set_pull_request(REPO, pr_json(&payload));
    let (status, answer) = signed(kubeci, "pull_request", "o-1", &payload);
    assert_eq!(status, 200, "{answer}");
    wait("its first status", || states(github, head) == ["pending"]);
}

/// Once the job was made invalid: waits for kubeci to see it so, lets the build end, and
/// checks GitHub hears of its end under the name it had.
fn end_the_build_of_the_invalid_job(kubeci: &Kubeci, github: &FakeGitHub, head: &str, gate: &Path) {
    wait("kubeci to see the job invalid", || {
        common::serve::json(kubeci, "/api/v1/jobs/default/gated")["valid"] == false
    });
    std::fs::write(gate, "go").unwrap();
    wait("the build to succeed", || {
        common::serve::state(kubeci, "gated", 1) == "succeeded"
    });
    wait("its final status", || {
        states(github, head) == ["pending", "success"]
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_requests_build_reports_its_end_after_its_configmap_turned_invalid() {
    let world = World::calling_as(true, Caller::App).await;
    let gates = tempfile::tempdir().unwrap();
    let gate = gates.path().join("gate");
    let configmaps: Api<ConfigMap> = Api::namespaced(world.server.client().await, "default");
    configmaps
        .delete("hello", &DeleteParams::default())
        .await
        .unwrap();
    world
        .server
        .preload(vec![configmap("gated", &gated_job(&gate))])
        .unwrap();
    let kubeci = world.serve("0s");
    let head = world.push_pr(7, false);
    open_pull_request(&kubeci, &world.github, &head);
    let mut edited = configmaps.get("gated").await.unwrap();
    let yaml = broken(&edited.data.as_ref().unwrap()["job.yaml"]);
    edited
        .data
        .as_mut()
        .unwrap()
        .insert("job.yaml".into(), yaml);
    configmaps
        .replace("gated", &PostParams::default(), &edited)
        .await
        .unwrap();
    end_the_build_of_the_invalid_job(&kubeci, &world.github, &head, &gate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_requests_build_reports_its_end_after_its_job_file_turned_invalid() {
    let (local, repo) = common::local::Local::new();
    let github = FakeGitHub::start(GITHUB_TOKEN, "kubeci-bot").await;
    let gate = local.dir.path().join("gate");
    let gitconfig = local.dir.path().join("gitconfig");
    std::fs::write(
        &gitconfig,
        format!(
            "[url \"{}\"]\n\tinsteadOf = {REPO_URL}\n",
            repo.bare.display()
        ),
    )
    .unwrap();
    let job_file = job_file(&gated_job(&gate));
    local.write("gated.yaml", &job_file);
    std::fs::write(local.dir.path().join("secret"), SECRET).unwrap();
    std::fs::write(local.dir.path().join("gh-token"), GITHUB_TOKEN).unwrap();
    let secret = local.dir.path().join("secret").display().to_string();
    let token = local.dir.path().join("gh-token").display().to_string();
    let url = github.url();
    let flags = [
        "--github-webhook-secret-file",
        secret.as_str(),
        "--github-token-file",
        token.as_str(),
        "--github-url",
        url.as_str(),
        "--github-host",
        "github.com",
        "--github-resync",
        "0s",
    ];
    let gitconfig = gitconfig.display().to_string();
    let kubeci = local.serve(&flags, &[("GIT_CONFIG_GLOBAL", gitconfig.as_str())]);
    repo.write("change", "7\n");
    let head = repo.commit("a change");
    repo.push_head_to("refs/pull/7/head");
    open_pull_request(&kubeci, &github, &head);
    local.write("gated.yaml", &broken(&job_file));
    end_the_build_of_the_invalid_job(&kubeci, &github, &head, &gate);
}

/// A job file: the ConfigMap `gated` holding `yaml`.
fn job_file(yaml: &str) -> String {
    let indented: String = yaml.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gated\n  labels:\n    ci-job-spec: \"true\"\ndata:\n  job.yaml: |\n{indented}"
    )
}
