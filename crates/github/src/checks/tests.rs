use super::*;
use kubeci_spec::{LoadOptions, LoadedJob};

fn job(extra: &str) -> LoadedJob {
    let yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: demo\n  namespace: ns\n  labels: {{ci-job-spec: \"true\"}}\ndata:\n  job.yaml: |\n    - job:\n        name: demo\n        git: {{url: 'https://github.com/o/r'}}\n        run_command: make\n        ghprb:\n          enabled: true\n          admin_users: [boss]\n          whitelisted_users: [friend]\n{extra}"
    );
    kubeci_spec::load("job.yaml", yaml.as_bytes(), &LoadOptions::default())
        .jobs
        .remove(0)
}

fn pr(author: &str) -> PullRequestInfo {
    PullRequestInfo {
        number: 7,
        author: author.into(),
        title: "change".into(),
        body: String::new(),
        labels: Vec::new(),
        draft: false,
        head_sha: "a".repeat(40),
        head_ref: "topic".into(),
        base_ref: "main".into(),
        html_url: String::new(),
        open: true,
    }
}

fn no_orgs(_: &str, _: &str) -> bool {
    false
}

fn keys(decision: &Decision) -> Vec<String> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Build { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect()
}

fn rerun<'a>(head: &'a str, name: Option<&'a str>, sender: &'a str) -> Rerun<'a> {
    Rerun {
        head,
        name,
        sender,
        delivery: "d-1",
        past: &[],
    }
}

fn past(job: &str, trigger: Trigger, failed: bool) -> PastBuild {
    PastBuild {
        namespace: "ns".into(),
        job: job.into(),
        pull_request: (trigger != Trigger::Push).then_some(7),
        trigger: Some(trigger),
        failed,
    }
}

#[test]
fn a_trusted_pull_request_is_re_run_by_anyone_an_untrusted_one_by_the_trusted_only() {
    let loaded = job("");
    let jobs = [JobRef {
        namespace: "ns",
        job: loaded.job.as_ref().unwrap(),
    }];
    let head = "a".repeat(40);
    let on = |pr: &PullRequestInfo, sender: &str, name: Option<&str>| {
        on_rerun(pr, rerun(&head, name, sender), &jobs, &no_orgs)
    };
    assert_eq!(
        keys(&on(&pr("friend"), "someone", Some("kubeci/demo"))),
        ["rerun:d-1"]
    );
    assert_eq!(
        keys(&on(&pr("friend"), "someone", None)),
        ["rerun:d-1"],
        "the suite"
    );
    assert!(keys(&on(&pr("friend"), "someone", Some("kubeci/other"))).is_empty());
    let refused = on(&pr("stranger"), "stranger", Some("kubeci/demo"));
    assert!(keys(&refused).is_empty());
    assert!(refused.reasons[0].contains("may not re-run an untrusted pull request"));
    assert_eq!(keys(&on(&pr("stranger"), "friend", None)), ["rerun:d-1"]);
    let moved = on_rerun(
        &pr("friend"),
        rerun(&"b".repeat(40), None, "friend"),
        &jobs,
        &no_orgs,
    );
    assert!(keys(&moved).is_empty());
    assert!(
        moved.reasons[0].contains("not the current head"),
        "{:?}",
        moved.reasons
    );
}

fn two_jobs() -> (LoadedJob, LoadedJob) {
    let mut other = job("");
    std::sync::Arc::make_mut(other.job.as_mut().unwrap()).name = "lint".into();
    (job(""), other)
}

fn built(decision: &Decision) -> Vec<String> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Build { job, .. } => Some(job.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_suite_re_run_rebuilds_the_failed_checks_only_or_all_when_none_failed() {
    let (demo, lint) = two_jobs();
    let jobs = [
        JobRef {
            namespace: "ns",
            job: demo.job.as_ref().unwrap(),
        },
        JobRef {
            namespace: "ns",
            job: lint.job.as_ref().unwrap(),
        },
    ];
    let head = "a".repeat(40);
    let on = |past: &[PastBuild], name: Option<&str>| {
        let asked = Rerun {
            past,
            ..rerun(&head, name, "friend")
        };
        on_rerun(&pr("friend"), asked, &jobs, &no_orgs)
    };
    // lint's newest build of the head failed; an older one of demo failed but its
    // newest succeeded.
    let history = [
        past("lint", Trigger::PullRequest, true),
        past("demo", Trigger::Comment, false),
        past("demo", Trigger::PullRequest, true),
    ];
    let failed_only = on(&history, None);
    assert_eq!(built(&failed_only), ["lint"]);
    assert!(failed_only.reasons[0].contains("the suite's failed checks"));
    let green = [past("lint", Trigger::PullRequest, false)];
    assert_eq!(
        built(&on(&green, None)),
        ["demo", "lint"],
        "none failed: all"
    );
    assert_eq!(
        built(&on(&history, Some("kubeci/demo"))),
        ["demo"],
        "one check run's re-run is that one, failed or not"
    );
}

#[test]
fn a_push_is_re_run_only_where_kubeci_built_it_as_a_push_of_a_branch_the_job_builds() {
    let loaded = job("        triggers: {push: {branches: [main]}}\n");
    let jobs = [JobRef {
        namespace: "ns",
        job: loaded.job.as_ref().unwrap(),
    }];
    let head = "c".repeat(40);
    let pushed = [past("demo", Trigger::Push, true)];
    let on = |branch: Option<&str>, past: &[PastBuild]| {
        let asked = Rerun {
            past,
            ..rerun(&head, Some("kubeci/demo"), "friend")
        };
        on_push_rerun(branch, asked, &jobs)
    };
    let again = on(Some("main"), &pushed);
    let Some(Action::Build { key, request, .. }) = again.actions.first() else {
        panic!("a build: {:?}", again.reasons);
    };
    assert_eq!(key, "rerun:d-1");
    assert_eq!(request.trigger, Trigger::Push);
    assert_eq!(request.commit.as_deref(), Some(head.as_str()));
    assert_eq!(request.branch.as_deref(), Some("main"));
    let from_a_fork = on(Some("main"), &[past("demo", Trigger::PullRequest, true)]);
    assert!(from_a_fork.actions.is_empty());
    assert!(
        from_a_fork.reasons[0].contains("never built"),
        "{:?}",
        from_a_fork.reasons
    );
    let elsewhere = on(Some("topic"), &pushed);
    assert!(elsewhere.actions.is_empty());
    assert!(elsewhere.reasons[0].contains("does not build pushes to topic"));
    assert!(on(None, &pushed).actions.is_empty());
}

#[test]
fn a_forks_pull_request_is_found_from_the_approval_check_run_or_kubecis_builds() {
    let waiting = approval_external_id("ns", "demo", 12);
    assert_eq!(pull_request_of(Some(&waiting), &[]), Some(12));
    let built = [past("demo", Trigger::Comment, false)];
    assert_eq!(pull_request_of(Some("ns/demo/3"), &built), Some(7));
    assert_eq!(pull_request_of(None, &built), Some(7));
    assert_eq!(pull_request_of(Some("approval:ns/demo"), &[]), None);
    assert_eq!(
        pull_request_of(None, &[past("demo", Trigger::Push, false)]),
        None
    );
}

#[test]
fn check_run_and_check_suite_deliveries_are_read() {
    let repository = r#""repository": {"full_name": "o/r", "clone_url": "https://github.com/o/r.git"}, "sender": {"login": "boss"}"#;
    let check_run = format!(
        r#"{{"action": "requested_action", "check_run": {{"id": 42, "name": "kubeci/demo", "head_sha": "abc", "external_id": "approval:ns/demo", "status": "completed", "pull_requests": [{{"number": 7, "head": {{"sha": "abc"}}}}]}}, "requested_action": {{"identifier": "approve"}}, {repository}}}"#
    );
    let Ok(crate::Event::Checks {
        action,
        head_sha,
        check_run: Some(run),
        requested_action,
        pull_requests,
        sender,
        ..
    }) = crate::parse("check_run", check_run.as_bytes())
    else {
        panic!("a check_run event");
    };
    assert_eq!(
        (
            action.as_str(),
            head_sha.as_str(),
            run.id,
            run.name.as_str()
        ),
        ("requested_action", "abc", 42, "kubeci/demo")
    );
    assert_eq!(run.external_id, "approval:ns/demo");
    assert_eq!(
        (requested_action.as_deref(), pull_requests, sender.as_str()),
        (Some("approve"), vec![7], "boss")
    );
    let suite = format!(
        r#"{{"action": "rerequested", "check_suite": {{"id": 9, "head_sha": "abc", "head_branch": null, "pull_requests": []}}, {repository}}}"#
    );
    let Ok(crate::Event::Checks {
        check_run: None,
        pull_requests,
        ..
    }) = crate::parse("check_suite", suite.as_bytes())
    else {
        panic!("a check_suite event");
    };
    assert!(pull_requests.is_empty());
    let missing = crate::parse("check_run", br#"{"action": "rerequested"}"#).unwrap_err();
    assert!(missing.to_string().contains("check_run"), "{missing}");
}

#[test]
fn approve_and_build_approves_the_clicked_job_alone_for_its_own_admin() {
    let (deploy, mut evil) = two_jobs();
    let evil_job = std::sync::Arc::make_mut(evil.job.as_mut().unwrap());
    evil_job.name = "evil".into();
    evil_job.ghprb.as_mut().unwrap().admin_users =
        kubeci_spec::model::NameList(vec!["mallory".to_owned()]);
    let jobs = [
        JobRef {
            namespace: "team-b",
            job: deploy.job.as_ref().unwrap(),
        },
        JobRef {
            namespace: "team-a",
            job: evil.job.as_ref().unwrap(),
        },
    ];
    let head = "a".repeat(40);
    let deploys_run = approval_external_id("team-b", "demo", 7);
    let evils_run = approval_external_id("team-a", "evil", 7);
    let click = |run: &str, clicker: &str| {
        on_requested_action(APPROVE, run, &pr("stranger"), &head, clicker, &jobs)
    };
    let approved = click(&deploys_run, "boss");
    assert_eq!(
        approved.actions[0],
        Action::Approve(crate::decide::Approved {
            namespace: "team-b".into(),
            job: "demo".into(),
            pull_request: 7,
            head: head.clone(),
            by: "boss".into(),
        })
    );
    assert_eq!(
        keys(&approved),
        [format!("pr:7:{head}")],
        "the head's one build"
    );
    assert_eq!(built(&approved), ["demo"]);
    assert_eq!(approved.reasons.len(), 1, "{:?}", approved.reasons);
    assert!(approved.reasons[0].starts_with("team-b/demo: approved by admin boss"));
    for clicker in ["stranger", "friend", "mallory"] {
        let refused = click(&deploys_run, clicker);
        assert!(refused.actions.is_empty(), "{clicker}");
        assert_eq!(
            refused.reasons,
            [format!(
                "team-b/demo: {clicker} is not an admin of this job: nothing changed"
            )],
            "the answer names the clicked job alone"
        );
    }
    let own = click(&evils_run, "mallory");
    assert_eq!(built(&own), ["evil"], "mallory approves her own job only");
    let elsewhere = click(&approval_external_id("team-b", "demo", 8), "boss");
    assert!(elsewhere.actions.is_empty(), "another pull request's run");
    let other = on_requested_action(
        "deploy",
        &deploys_run,
        &pr("stranger"),
        &head,
        "boss",
        &jobs,
    );
    assert!(other.actions.is_empty());
}
