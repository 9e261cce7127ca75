//! The fake GitHub answers what Prow's hook and crier call besides kubeci's calls — the
//! authenticated user, a branch's head — as GitHub answers them, over real HTTP, and
//! records every call with who made it (issue 31 counts each system's calls from it).

use std::io::{Read, Write};
use std::net::TcpStream;

use kubeci_testkit::github::GitHubCall;
use kubeci_testkit::FakeGitHub;
use serde_json::Value;

const TOKEN: &str = "token-for-prows-calls";

/// One GET with `token` and `user_agent`, on a blocking thread: (status, JSON body).
async fn get(github: &FakeGitHub, path: &str, token: &str, user_agent: &str) -> (u16, Value) {
    let address = github.url().trim_start_matches("http://").to_owned();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\nUser-Agent: {user_agent}\r\nConnection: close\r\n\r\n"
    );
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(address).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_branch_head_is_served_as_githubs_git_refs_api_serves_it() {
    let github = FakeGitHub::start(TOKEN, "ci-bot").await;
    let sha = "8b3f2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b";
    github.set_branch("Codertocat/Hello-World", "release/1.x", sha);

    let (status, body) = get(
        &github,
        "/repos/codertocat/hello-world/git/refs/heads/release/1.x",
        TOKEN,
        "hook.trigger/v1",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ref"], "refs/heads/release/1.x");
    assert_eq!(body["object"]["sha"], sha);
    assert_eq!(body["object"]["type"], "commit");

    let (status, _) = get(
        &github,
        "/repos/Codertocat/Hello-World/git/refs/heads/main",
        TOKEN,
        "hook.trigger/v1",
    )
    .await;
    assert_eq!(status, 404, "a branch never set");
    let (status, _) = get(
        &github,
        "/repos/Codertocat/Hello-World/git/refs/heads/release/1.x",
        "someone-elses-token",
        "hook.trigger/v1",
    )
    .await;
    assert_eq!(status, 401, "the token is checked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authenticated_user_is_the_bot() {
    let github = FakeGitHub::start(TOKEN, "ci-bot").await;
    let (status, body) = get(&github, "/user", TOKEN, "crier/v1").await;
    assert_eq!(status, 200);
    assert_eq!(body["login"], "ci-bot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_recorded_with_who_made_it() {
    let github = FakeGitHub::start(TOKEN, "ci-bot").await;
    get(&github, "/user", TOKEN, "crier/v20240619-cfb8754e0459").await;
    get(&github, "/repos/o/r/pulls/7?per_page=1", TOKEN, "kubeci").await;
    get(&github, "/orgs/o/members/dev", "wrong", "").await;
    let call = |method: &str, path: &str, user_agent: &str| GitHubCall {
        method: method.into(),
        path: path.into(),
        user_agent: user_agent.into(),
    };
    assert_eq!(
        github.calls(),
        vec![
            call("GET", "/user", "crier/v20240619-cfb8754e0459"),
            call("GET", "/repos/o/r/pulls/7", "kubeci"),
            call("GET", "/orgs/o/members/dev", ""),
        ],
        "in order, refused ones too, without the query"
    );
    assert_eq!(github.requests().len(), 3);
}
