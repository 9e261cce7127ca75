//! A password in a job's `git.url` is never repeated by kubeci, whether the URL parses or
//! not (issue 27 finding 1): not on the pages, not in the API, not in `kubeci lint`, not in
//! the Kubernetes engine's Events and log.

use crate::common;

use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{http, json, serve, Kubeci};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kubeci_testkit::FakeApiServer;

const SECRET: &str = "s3cretPW";

/// URLs whose password must stay hidden, by job name: each of them fails to parse.
fn hostile_urls() -> [(&'static str, String); 4] {
    [
        (
            "bad-port",
            format!("https://user:{SECRET}@github.com:99999/o/r"),
        ),
        (
            "trailing-space",
            format!("\"https://user:{SECRET}@github.com/o/r \""),
        ),
        (
            "space-in-password",
            format!("\"https://user:{SECRET} x@github.com/o/r\""),
        ),
        ("scp-like", format!("\"user:{SECRET}@github.com:o/r \"")),
    ]
}

fn assert_hidden(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

/// `serve --local`: the jobs page, the API's list and each job's diagnostics (API and
/// page) say the URL is wrong without showing its password; so does `kubeci lint`.
#[test]
fn a_password_in_a_git_url_that_does_not_parse_is_shown_to_no_one() {
    let (local, repo) = Local::new();
    for (name, url) in hostile_urls() {
        local.write(
            &format!("{name}.yaml"),
            &configmap(name, &repo.bare, "make", "").replace(
                &format!("url: {}", repo.bare.display()),
                &format!("url: {url}"),
            ),
        );
    }
    let kubeci = local.serve(&[], &[]);
    let get = |path: &str| {
        let (status, body) = http(&kubeci, "GET", path, &[]);
        assert_eq!(status, 200, "{path}: {body}");
        body
    };
    let listed = json(&kubeci, "/api/v1/jobs");
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(4),
        "{listed}"
    );
    assert_hidden("/api/v1/jobs", &listed.to_string());
    assert_hidden("/", &get("/"));
    for (name, _) in hostile_urls() {
        let job = json(&kubeci, &format!("/api/v1/jobs/default/{name}"));
        assert_eq!(job["valid"], false, "{job}");
        assert!(
            job["diagnostics"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d["code"] == "invalid-git-url")),
            "{job}"
        );
        assert_hidden(name, &job.to_string());
        let page = get(&format!("/jobs/default/{name}"));
        assert!(page.contains("invalid-git-url"), "{page}");
        assert_hidden(name, &page);
    }
    assert_hidden("kubeci's log", &kubeci.log());

    let lint = std::process::Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .arg("lint")
        .arg(&local.jobs)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&lint.stdout);
    assert!(printed.contains("invalid-git-url"), "{printed}");
    assert_hidden("kubeci lint", &printed);
    assert_hidden("kubeci lint", &String::from_utf8_lossy(&lint.stderr));
}

/// `serve --kubernetes`: the Warning Event on the ConfigMap and the log line about it
/// name what is wrong without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_engine_reports_such_a_job_without_its_password() {
    let server = FakeApiServer::start().await;
    let (name, url) = hostile_urls()[0].clone();
    let job_yaml = format!("- job:\n    name: {name}\n    git:\n      url: {url}\n    run_command: make test\n    timeout: 10m\n");
    server
        .preload(vec![common::serve::configmap(name, &job_yaml)])
        .unwrap();
    let kubeci: Kubeci = serve(&server);
    let events: Api<Event> = Api::namespaced(server.client().await, "default");
    let mut notes = Vec::new();
    for _ in 0..500 {
        notes = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("InvalidJob"))
            .filter_map(|e| e.note)
            .collect();
        if !notes.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("is not a port number"), "{notes:?}");
    assert_hidden("the Event", &notes[0]);
    let log = kubeci.log();
    assert!(log.contains("has an invalid job"), "{log}");
    assert_hidden("kubeci's log", &log);
    assert_hidden("/api/v1/jobs", &json(&kubeci, "/api/v1/jobs").to_string());
}
