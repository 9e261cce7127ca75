//! Review F2: one GitHub repository written another way (`%6F` for `o`, `./`, `../`) must
//! not count as another repository — the one-name-one-owner rule would see two
//! repositories while the reporter posts to one. Such a URL names no repository: a job
//! GitHub's events start is invalid with it, and a build recording it reports nothing.

use kubeci_spec::checkname::{check_names, report_name, JobNow, Recorded};
use kubeci_spec::giturl::GitUrl;
use kubeci_spec::{LoadedJob, Severity};

const ALIASES: [&str; 3] = [
    "https://github.com/victim/rep%6F.git",
    "https://github.com/victim/./repo.git",
    "https://github.com/mallory/../victim/repo.git",
];

fn load(name: &str, url: &str, context: Option<&str>) -> LoadedJob {
    let context = context.map_or_else(String::new, |c| format!("      context: {c}\n"));
    let yaml = format!(
        "- job:\n    name: {name}\n    git:\n      url: {url}\n    run_command: make\n    ghprb:\n      enabled: true\n{context}"
    );
    let report = kubeci_spec::load("job.yaml", yaml.as_bytes(), &Default::default());
    report.jobs.into_iter().next().unwrap()
}

#[test]
fn a_pull_request_job_on_another_spelling_of_a_repository_is_invalid_and_takes_no_name() {
    let deploy = load("deploy", "https://github.com/victim/repo.git", None);
    let deploy = deploy.job.expect("the victim's job is valid");
    for alias in ALIASES {
        let evil = load("evil", alias, Some("kubeci/deploy"));
        let error = evil
            .diagnostics
            .iter()
            .find(|d| d.severity == Severity::Error)
            .unwrap_or_else(|| panic!("{alias} is accepted: {:?}", evil.diagnostics));
        assert_eq!(error.code, "git-url-not-a-repository", "{alias}");
        assert!(error.message.contains("owner/name"), "{}", error.message);
        assert!(evil.job.is_none(), "{alias}: an invalid job builds nothing");
        // Only the victim's job is left to the rule; it keeps its name.
        assert_eq!(
            check_names(&[("team-b", &deploy)]),
            [Ok("kubeci/deploy".to_owned())]
        );
        let url = GitUrl::parse(alias).unwrap();
        assert_eq!(url.repository_key(), None, "{alias}");
        assert_eq!(
            url.github_repository("github.com"),
            None,
            "{alias}: nothing reported"
        );
    }
}

#[test]
fn a_forged_record_on_another_spelling_of_a_repository_reports_nothing() {
    // team-a's job is invalid now; a Job it made by hand records an alias of victim/repo
    // and the name team-b's valid job owns there. `owned` as engine::service computes it:
    // none, since the alias names no repository whose jobs could own names.
    for alias in ALIASES {
        let recorded = Recorded {
            git_url: Some(alias),
            check_name: Some("kubeci/deploy"),
        };
        let invalid = JobNow::Invalid {
            repository_allowed: true,
        };
        assert_eq!(report_name(invalid, recorded, []), None, "{alias}");
    }
}
