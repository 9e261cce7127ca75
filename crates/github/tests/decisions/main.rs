//! GitHub's real payloads (tests/fixtures/github-webhooks) read and decided on, and the
//! trust table: every kind of author, label and phrase, with the decision and its reason.

use kubeci_build::Trigger;
use kubeci_github::decide::{self, Action, JobRef};
use kubeci_github::event::{parse, Event, PullRequestInfo};
use kubeci_spec::{Job, LoadOptions};

mod comments;

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/github-webhooks")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A job on the fixtures' repository, written as users write it.
fn job(name: &str, url: &str, extra: &str) -> Job {
    let yaml = format!(
        "- job:\n    name: {name}\n    git:\n      url: {url}\n    run_command: make test\n{extra}"
    );
    let report = kubeci_spec::load("job.yaml", yaml.as_bytes(), &LoadOptions::default());
    let loaded = report.jobs.into_iter().next().unwrap();
    loaded
        .job
        .map(std::sync::Arc::unwrap_or_clone)
        .unwrap_or_else(|| panic!("valid job: {:?}", loaded.diagnostics))
}

const GHPRB: &str = "    ghprb:\n      enabled: true\n      admin_users: [admin]\n      whitelisted_users: [friend]\n      whitelisted_orgs: [acme]\n";

fn pr_job() -> Job {
    job("hello", "git@github.com:Codertocat/Hello-World.git", GHPRB)
}

fn refs(jobs: &[Job]) -> Vec<JobRef<'_>> {
    jobs.iter()
        .map(|job| JobRef {
            namespace: "ci",
            job,
        })
        .collect()
}

fn no_orgs(_: &str, _: &str) -> bool {
    false
}

fn acme_members(org: &str, login: &str) -> bool {
    org == "acme" && login == "member"
}

/// Approvals of the fixture's pull request head: (namespace, job, by).
struct Approvals(Vec<(&'static str, &'static str, &'static str)>);

impl decide::Facts for Approvals {
    fn is_member(&self, _: &str, _: &str) -> bool {
        false
    }

    fn approver(&self, namespace: &str, job: &str, number: u64, head: &str) -> Option<&str> {
        let fixture = opened();
        (number == fixture.number && head == fixture.head_sha)
            .then(|| {
                self.0
                    .iter()
                    .find(|(n, j, _)| *n == namespace && *j == job)
                    .map(|(_, _, by)| *by)
            })
            .flatten()
    }
}

fn opened() -> PullRequestInfo {
    match parse("pull_request", &fixture("pull_request.opened.json")).unwrap() {
        Event::PullRequest { pull_request, .. } => pull_request,
        other => panic!("{other:?}"),
    }
}

fn by(author: &str, labels: &[&str]) -> PullRequestInfo {
    PullRequestInfo {
        author: author.into(),
        labels: labels.iter().map(|l| (*l).to_owned()).collect(),
        ..opened()
    }
}

#[test]
fn each_fixture_reads_as_its_event() {
    let Event::PullRequest {
        action,
        repository,
        pull_request,
        sender,
        label,
    } = parse("pull_request", &fixture("pull_request.opened.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!((action.as_str(), sender.as_str()), ("opened", "Codertocat"));
    assert_eq!(label, None, "only labeled and unlabeled name a label");
    assert_eq!(repository.full_name, "Codertocat/Hello-World");
    assert_eq!(pull_request.number, 2);
    assert_eq!(
        pull_request.head_sha,
        "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    );
    assert_eq!(pull_request.labels, ["bug"]);
    assert!(!pull_request.draft);
    for (file, action) in [
        ("pull_request.closed.json", "closed"),
        ("pull_request.reopened.json", "reopened"),
        ("pull_request.synchronize.json", "synchronize"),
    ] {
        assert!(
            matches!(parse("pull_request", &fixture(file)).unwrap(), Event::PullRequest { action: a, .. } if a == action),
            "{file}"
        );
    }
    assert_eq!(parse("ping", &fixture("ping.json")).unwrap(), Event::Ping);
    let Event::Comment {
        pull_request,
        comment_id,
        ..
    } = parse("issue_comment", &fixture("issue_comment.created.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!(
        pull_request, None,
        "the fixture's comment is on a plain issue"
    );
    assert_eq!(comment_id, 492700400);
    let Event::Push {
        git_ref, deleted, ..
    } = parse("push", &fixture("push.json")).unwrap()
    else {
        panic!()
    };
    assert_eq!((git_ref.as_str(), deleted), ("refs/tags/simple-tag", true));
}

#[test]
fn malformed_payloads_say_what_is_wrong() {
    let error = parse("pull_request", b"{\"action\": \"opened\"}").unwrap_err();
    assert!(
        error.to_string().contains("missing field `pull_request`"),
        "{error}"
    );
    assert!(parse("push", b"not json").is_err());
    assert!(parse("ping", b"[").is_err());
}

#[test]
fn jobs_match_the_repository_however_its_url_is_written() {
    let jobs = [
        job("scp", "git@github.com:Codertocat/Hello-World.git", ""),
        job("https", "https://github.com/codertocat/hello-world", ""),
        job("ssh", "ssh://git@github.com/Codertocat/Hello-World.git", ""),
        job("other-repo", "git@github.com:Codertocat/Other.git", ""),
        job(
            "enterprise",
            "git@github.example.com:Codertocat/Hello-World.git",
            "",
        ),
    ];
    let Event::PullRequest { repository, .. } =
        parse("pull_request", &fixture("pull_request.opened.json")).unwrap()
    else {
        panic!()
    };
    let names: Vec<&str> = decide::matching(&refs(&jobs), &repository)
        .iter()
        .map(|j| j.job.name.as_str())
        .collect();
    assert_eq!(names, ["scp", "https", "ssh"]);
    let enterprise = kubeci_github::Repository {
        full_name: "Codertocat/Hello-World".into(),
        urls: vec!["https://github.example.com/Codertocat/Hello-World.git".into()],
    };
    let names: Vec<&str> = decide::matching(&refs(&jobs), &enterprise)
        .iter()
        .map(|j| j.job.name.as_str())
        .collect();
    assert_eq!(names, ["enterprise"]);
}

fn built(decision: &decide::Decision) -> Vec<(String, Trigger)> {
    decision
        .builds()
        .map(|a| match a {
            Action::Build { key, request, .. } => (key.clone(), request.trigger),
            _ => unreachable!(),
        })
        .collect()
}

#[test]
fn pull_request_authors_are_trusted_or_wait_for_an_admin() {
    let jobs = [pr_job()];
    let jobs = refs(&jobs);
    let head = "pr:2:ec26c3e57ca3a959ca5aad62de7213c562f8c821";
    // (author, labels, builds?, reason contains)
    let table: &[(&str, &[&str], bool, &str)] = &[
        ("admin", &[], true, "(Admin)"),
        ("ADMIN", &[], true, "(Admin)"),
        ("friend", &[], true, "(WhitelistedUser)"),
        ("member", &[], true, "(OrgMember(\"acme\"))"),
        (
            "stranger",
            &[],
            false,
            "stranger is not trusted: waits for an admin",
        ),
        (
            "stranger",
            &["ok-to-test"],
            false,
            "stranger is not trusted: waits for an admin",
        ),
        ("stranger", &["bug"], false, "not trusted"),
        ("ghost-user-never-seen", &[], false, "not trusted"),
    ];
    for (author, labels, builds, reason) in table {
        let pr = by(author, labels);
        let decision = decide::on_pull_request("opened", &pr, author, &jobs, &acme_members);
        let expected: Vec<(String, Trigger)> = if *builds {
            vec![(head.to_owned(), Trigger::PullRequest)]
        } else {
            vec![]
        };
        assert_eq!(built(&decision), expected, "{author} {labels:?}");
        assert!(
            decision.reasons.iter().any(|r| r.contains(reason)),
            "{author} {labels:?}: {:?}",
            decision.reasons
        );
        let asks = decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::AskForApproval { comment: true, .. }));
        assert_eq!(
            asks, !builds,
            "{author}: one request for approval, only if untrusted"
        );
        // A push to an untrusted pull request comments again? No: one comment per PR
        // (its new head waits for approval all the same).
        let pushed = decide::on_pull_request("synchronize", &pr, author, &jobs, &acme_members);
        assert!(!pushed
            .actions
            .iter()
            .any(|a| matches!(a, Action::AskForApproval { comment: true, .. })));
        assert_eq!(
            pushed
                .actions
                .iter()
                .any(|a| matches!(a, Action::AskForApproval { comment: false, .. })),
            !builds,
            "{author}: its new head waits for approval"
        );
        assert_eq!(built(&pushed).len(), usize::from(*builds));
    }
}

// Long on purpose: a table of pull request states and their outcomes over one shared setup.
#[test]
fn drafts_skip_ci_trigger_phrases_and_closed_pull_requests() {
    let jobs = [pr_job()];
    let jobs = refs(&jobs);
    let draft = PullRequestInfo {
        draft: true,
        ..by("admin", &[])
    };
    let decision = decide::on_pull_request("opened", &draft, "admin", &jobs, &no_orgs);
    assert!(built(&decision).is_empty());
    assert!(decision.reasons[0].contains("draft pull request: waits for ready for review"));
    let ready = PullRequestInfo {
        draft: false,
        ..draft
    };
    assert_eq!(
        built(&decide::on_pull_request(
            "ready_for_review",
            &ready,
            "admin",
            &jobs,
            &no_orgs
        ))
        .len(),
        1
    );

    for (title, body) in [("Fix it [skip ci]", ""), ("Fix it", "details\n[SKIP CI]")] {
        let pr = PullRequestInfo {
            title: title.into(),
            body: body.into(),
            ..by("admin", &[])
        };
        let decision = decide::on_pull_request("opened", &pr, "admin", &jobs, &no_orgs);
        assert!(built(&decision).is_empty(), "{title} {body}");
        assert!(decision.reasons[0].ends_with("the pull request asks to skip CI"));
    }

    let phrase_job = [job(
        "phrase",
        "https://github.com/Codertocat/Hello-World",
        &format!("{GHPRB}      trigger_phrase: 'run the e2e'\n"),
    )];
    let phrase_jobs = refs(&phrase_job);
    let decision =
        decide::on_pull_request("opened", &by("admin", &[]), "admin", &phrase_jobs, &no_orgs);
    assert!(built(&decision).is_empty());
    assert!(decision.reasons[0].ends_with("builds on its trigger phrase only"));
    let comment = |body: &str, author: &str| {
        decide::on_comment(
            "created",
            &by("friend", &[]),
            7,
            author,
            body,
            Some("kubeci-bot"),
            &phrase_jobs,
            &no_orgs,
        )
    };
    assert_eq!(
        built(&comment("please RUN THE E2E now", "admin")),
        [("comment:7".to_owned(), Trigger::Comment)]
    );
    assert!(
        built(&comment("test this please", "admin")).is_empty(),
        "only its phrase"
    );

    let closed = decide::on_pull_request("closed", &by("friend", &[]), "friend", &jobs, &no_orgs);
    assert_eq!(
        closed.actions,
        [Action::Cancel {
            namespace: "ci".into(),
            job: "hello".into(),
            number: 2,
            by: "github:friend (pull request closed)".into()
        }]
    );
    let no_ghprb = [job(
        "plain",
        "git@github.com:Codertocat/Hello-World.git",
        "",
    )];
    let decision = decide::on_pull_request(
        "opened",
        &by("admin", &[]),
        "admin",
        &refs(&no_ghprb),
        &no_orgs,
    );
    assert_eq!(
        decision.reasons,
        ["no job builds this repository's pull requests"]
    );
}

#[test]
fn pushes_build_the_branches_a_job_asks_for() {
    let jobs = [
        job(
            "main-only",
            "git@github.com:Codertocat/Hello-World.git",
            "    triggers:\n      push:\n        branches: [main]\n",
        ),
        job(
            "releases",
            "git@github.com:Codertocat/Hello-World.git",
            "    triggers:\n      push:\n        branches: ['release/*', 'hotfix/**']\n",
        ),
        job("no-push", "git@github.com:Codertocat/Hello-World.git", ""),
    ];
    let jobs = refs(&jobs);
    let keys = |git_ref: &str| -> Vec<String> {
        decide::on_push(git_ref, "abc123", false, "dev", &jobs)
            .actions
            .iter()
            .map(|a| match a {
                Action::Build { job, key, .. } => format!("{job} {key}"),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(
        keys("refs/heads/main"),
        ["main-only push:refs/heads/main:abc123"]
    );
    assert_eq!(
        keys("refs/heads/release/1.2"),
        ["releases push:refs/heads/release/1.2:abc123"]
    );
    assert!(
        keys("refs/heads/release/1.2/rc").is_empty(),
        "`*` stays within a segment"
    );
    assert_eq!(
        keys("refs/heads/hotfix/a/b").len(),
        1,
        "`**` crosses segments"
    );
    assert!(keys("refs/heads/feature").is_empty());
    let Event::Push {
        git_ref,
        after,
        deleted,
        ..
    } = parse("push", &fixture("push.json")).unwrap()
    else {
        panic!()
    };
    let decision = decide::on_push(&git_ref, &after, deleted, "Codertocat", &jobs);
    assert_eq!(decision.reasons, ["a deleted ref starts nothing"]);
    assert_eq!(
        decide::on_push("refs/tags/v1", "abc", false, "dev", &jobs).reasons,
        ["refs/tags/v1 is not a branch"]
    );
}

#[test]
fn the_resync_builds_trusted_heads_without_a_status() {
    let jobs = [
        pr_job(),
        job("second", "git@github.com:Codertocat/Hello-World.git", GHPRB),
    ];
    let jobs = refs(&jobs);
    let decision = decide::resync(&by("friend", &[]), &jobs, &no_orgs, |j| {
        j.job.name == "hello"
    });
    let names: Vec<&str> = decision
        .builds()
        .map(|a| match a {
            Action::Build { job, .. } => job.as_str(),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(names, ["second"], "hello has a status already");
    let untrusted = decide::resync(&by("stranger", &[]), &jobs, &no_orgs, |_| false);
    assert!(
        untrusted.actions.is_empty(),
        "no build and no comment for untrusted heads"
    );
}

#[test]
fn a_head_is_built_only_while_it_is_the_open_pull_requests_current_head() {
    let jobs = [pr_job()];
    let jobs = refs(&jobs);
    let event = by("admin", &[]);
    let decision = || decide::on_pull_request("synchronize", &event, "admin", &jobs, &no_orgs);
    assert_eq!(built(&decision()).len(), 1);
    // GitHub shows the same head: built.
    let same = decide::only_current_head(decision(), &event, &event);
    assert_eq!(built(&same).len(), 1);
    // The pull request has moved on since this delivery (a replay): nothing.
    let moved = PullRequestInfo {
        head_sha: "f".repeat(40),
        ..event.clone()
    };
    let replayed = decide::only_current_head(decision(), &event, &moved);
    assert!(built(&replayed).is_empty());
    assert!(
        replayed.reasons[0].contains("is no longer the head of pull request"),
        "{:?}",
        replayed.reasons
    );
    // Closed since: nothing.
    let closed = PullRequestInfo {
        open: false,
        ..event.clone()
    };
    let replayed = decide::only_current_head(decision(), &event, &closed);
    assert!(built(&replayed).is_empty());
    assert!(
        replayed.reasons[0].contains("is closed"),
        "{:?}",
        replayed.reasons
    );
}
