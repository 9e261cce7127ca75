//! Commit statuses end to end (see `serve_github.rs` for the world they run in): a push
//! superseding the running build, a cancelled build reported as an error, an App's token
//! renewed mid-build, and statuses surviving a restart and rate limits, the resync healing
//! a missed webhook.

use crate::common;

use common::serve::builds;
use kubeci_testkit::FakeGitHub;

use crate::serve_github::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_supersedes_the_running_build_and_a_cancelled_build_reports_error() {
    a_push_supersedes_the_running_build(World::new(true).await).await;
}

/// As an App, with its installation's tokens expiring while the first build runs: the
/// refused token is replaced, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_a_github_app_a_token_expiring_mid_build_is_renewed() {
    let world = World::calling_as(true, Caller::App).await;
    let github = a_push_supersedes_the_running_build(world).await;
    assert!(
        github.refused_jwts().is_empty(),
        "{:?}",
        github.refused_jwts()
    );
    assert_eq!(
        github.tokens_made(),
        2,
        "one token until it expired, then one more for the rest"
    );
}

pub(crate) async fn a_push_supersedes_the_running_build(world: World) -> FakeGitHub {
    let kubeci = world.serve("0s");
    let (slow_head, opened) = world.pull_request("opened", 2, "friend", true);
    assert_eq!(signed(&kubeci, "pull_request", "s-1", &opened).0, 200);
    wait("build 1 to run", || state_of(&kubeci, 1) == "running");
    wait("its pending status", || {
        !world.states(&slow_head).is_empty()
    });
    if world.caller == Caller::App {
        world.github.expire_tokens();
    }
    let (new_head, pushed) = world.pull_request("synchronize", 2, "friend", false);
    let (status, answer) = signed(&kubeci, "pull_request", "s-2", &pushed);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["builds"][0]["number"], 2);
    wait("the old build to be aborted", || {
        state_of(&kubeci, 1) == "aborted"
    });
    wait("the new one to succeed", || {
        state_of(&kubeci, 2) == "succeeded"
    });
    wait("both final statuses", || {
        world.states(&slow_head).last().map(String::as_str) == Some("error")
            && world.states(&new_head).last().map(String::as_str) == Some("success")
    });
    let cancelled = world
        .github
        .statuses()
        .into_iter()
        .find(|s| s.sha == slow_head && s.state == "error")
        .unwrap();
    assert!(
        cancelled
            .description
            .contains("cancelled by kubeci (superseded by build 2)"),
        "{cancelled:?}"
    );
    world.github
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_survive_a_restart_and_rate_limits_and_the_resync_heals_a_missed_webhook() {
    let world = World::new(true).await;
    let kubeci = world.serve("0s");
    let (head, opened) = world.pull_request("opened", 2, "friend", false);
    // GitHub refuses everything (rate limit spent, reset in an hour) while the build runs
    // and finishes; kubeci is killed before it could report, and a new one reports.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let reset = (now + 3600).to_string();
    // The delivery's own look at the pull request's current head still gets through.
    world.github.serve_next(1);
    world.github.fail_next(
        10_000,
        403,
        &[
            ("X-RateLimit-Remaining", "0"),
            ("X-RateLimit-Reset", &reset),
        ],
    );
    assert_eq!(signed(&kubeci, "pull_request", "r-1", &opened).0, 200);
    wait("build 1 to succeed", || state_of(&kubeci, 1) == "succeeded");
    let refused = || {
        world
            .github
            .requests()
            .iter()
            .filter(|(m, p)| (m == "POST" && p.contains("/statuses/")) || p.ends_with("/statuses"))
            .count()
    };
    wait("a status to be attempted", || refused() > 0);
    let attempts = refused();
    kubeci.kill();
    assert!(world.states(&head).is_empty(), "nothing posted yet");
    assert!(
        attempts <= 2,
        "the rate limit's reset is honoured, not hammered: {attempts} attempts"
    );
    world.github.clear_faults();
    // A Retry-After answer is waited out too.
    world.github.fail_next(1, 429, &[("Retry-After", "1")]);
    let kubeci = world.serve("1s");
    wait("the final status after the restart", || {
        world.states(&head).last().map(String::as_str) == Some("success")
    });
    assert_eq!(
        world
            .states(&head)
            .iter()
            .filter(|s| *s == "success")
            .count(),
        1,
        "posted once: {:?}",
        world.states(&head)
    );

    // A pull request whose webhook never arrived: the resync builds its head, once.
    let missed = world.push_pr(4, false);
    world.github.set_pull_request(
        REPO,
        pr_json(&pr_payload("opened", 4, "friend", &missed, &[])),
    );
    let untrusted = world.push_pr(5, false);
    world.github.set_pull_request(
        REPO,
        pr_json(&pr_payload("opened", 5, "stranger", &untrusted, &[])),
    );
    wait("the resync to build the missed head", || {
        builds(&kubeci, "hello")
            .iter()
            .any(|b| b["pull_request"] == 4 && b["state"] == "succeeded")
    });
    wait("its status", || {
        world.states(&missed).last().map(String::as_str) == Some("success")
    });
    let pr_builds = |n: u64| {
        builds(&kubeci, "hello")
            .iter()
            .filter(|b| b["pull_request"] == n)
            .count()
    };
    assert_eq!(pr_builds(4), 1);
    assert_eq!(pr_builds(2), 1, "a head with a status is not built again");
    assert_eq!(pr_builds(5), 0, "the resync never builds an untrusted head");
    assert!(world.github.comments(REPO, 5).is_empty(), "nor comments");
}
