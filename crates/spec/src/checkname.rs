//! The name a job's builds are reported under on GitHub (a check run's name, a commit
//! status's context). GitHub keeps one result per name and commit, so two jobs reporting
//! under one name on one repository overwrite each other's results: one team's job could
//! turn another team's red check green. Names are therefore unique per repository, across
//! namespaces. A job's name is its `ghprb.context`, or by default `kubeci/<job>` — and
//! `kubeci/<namespace>/<job>` when jobs of two namespaces build the repository. A job
//! whose name another job already reports under (the one that comes first, see
//! [`check_names`]) is invalid.

use std::collections::{BTreeMap, BTreeSet};

use crate::giturl::GitUrl;
use crate::{Diagnostic, FieldPath, Job, LoadedJob, Severity};

/// A job that would report under a name another job already reports under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTaken {
    /// The name both would report under.
    pub name: String,
    /// The job that keeps it: (namespace, name).
    pub owner: (String, String),
}

impl NameTaken {
    /// What a job that lost its name is told.
    pub fn message(&self) -> String {
        format!(
            "builds of this repository are already reported under the name `{}` by job {}/{}: GitHub would show one result for both jobs",
            self.name, self.owner.0, self.owner.1
        )
    }

    pub const HELP: &'static str = "give `ghprb.context` another value (names are unique per repository across namespaces), or remove it for the default `kubeci/<job>` (`kubeci/<namespace>/<job>` where several namespaces build the repository)";
}

/// The repository a job builds (`GitUrl::repository_key`), if it names one.
pub fn repository_of(job: &Job) -> Option<String> {
    GitUrl::parse(&job.git.url).ok()?.repository_key()
}

fn default_name(namespace: &str, job: &str, shared: bool) -> String {
    if shared {
        format!("kubeci/{namespace}/{job}")
    } else {
        format!("kubeci/{job}")
    }
}

/// The name each of `jobs` (namespace, job) reports under, in the same order, or why it
/// may not. A job's default names (`kubeci/<job>`, `kubeci/<namespace>/<job>`) are its
/// own: a `ghprb.context` that is another job's default name on the same repository is
/// taken, whatever the order. Where two jobs declare one name, the first of `jobs` keeps
/// it. Jobs that lose their name no longer count as building the repository, so the names
/// are those of the jobs that remain (decided again until nothing changes): decided over
/// the remaining jobs alone, in any order, they are the same.
pub fn check_names(jobs: &[(&str, &Job)]) -> Vec<Result<String, NameTaken>> {
    let repositories: Vec<Option<String>> =
        jobs.iter().map(|(_, job)| repository_of(job)).collect();
    let mut taken: Vec<Option<NameTaken>> = vec![None; jobs.len()];
    loop {
        let remaining: Vec<bool> = (0..jobs.len())
            .map(|i| repositories[i].is_some() && taken[i].is_none())
            .collect();
        let mut namespaces: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        // Each default name with every job whose default it is: two jobs of one name in two
        // namespaces both have `kubeci/<job>`.
        let mut defaults: BTreeMap<(&str, String), Vec<usize>> = BTreeMap::new();
        for (i, (namespace, job)) in jobs.iter().enumerate().filter(|(i, _)| remaining[*i]) {
            let repository = repositories[i].as_deref().expect("remaining jobs have one");
            namespaces.entry(repository).or_default().insert(namespace);
            for shared in [false, true] {
                let name = comparable(&default_name(namespace, &job.name, shared));
                defaults.entry((repository, name)).or_default().push(i);
            }
        }
        let names: Vec<String> = jobs
            .iter()
            .zip(&repositories)
            .map(|((namespace, job), repository)| {
                let shared = repository
                    .as_deref()
                    .and_then(|r| namespaces.get(r))
                    .is_some_and(|n| n.len() > 1);
                name_of(namespace, job, shared)
            })
            .collect();
        let mut owners: BTreeMap<(&str, String), usize> = BTreeMap::new();
        let mut changed = false;
        for i in (0..jobs.len()).filter(|i| remaining[*i]) {
            let repository = repositories[i].as_deref().expect("remaining jobs have one");
            let declared = jobs[i]
                .1
                .ghprb
                .as_ref()
                .is_some_and(|g| g.context.is_some());
            let key = (repository, comparable(&names[i]));
            let default_owner = defaults
                .get(&key)
                .and_then(|jobs| jobs.iter().copied().find(|&owner| owner != i))
                .filter(|_| declared);
            match default_owner.or_else(|| owners.get(&key).copied()) {
                Some(owner) => {
                    taken[i] = Some(NameTaken {
                        name: names[i].clone(),
                        owner: (jobs[owner].0.to_owned(), jobs[owner].1.name.clone()),
                    });
                    changed = true;
                }
                None => {
                    owners.insert(key, i);
                }
            }
        }
        if !changed {
            return names
                .into_iter()
                .zip(taken)
                .map(|(name, taken)| taken.map_or(Ok(name), Err))
                .collect();
        }
    }
}

/// Marks the valid jobs among `declarations` (in precedence order) whose check name
/// another job keeps as invalid, with an error naming that job. The names of the jobs
/// that remain are then `check_names` of them alone. Returns whether any job changed.
pub fn mark_taken<'a>(declarations: impl IntoIterator<Item = &'a mut LoadedJob>) -> bool {
    // Two versions of one ConfigMap (two files declaring one object, see
    // `crate::load::shadowed`) are one job: the later is not a second claim on its name.
    let mut seen = BTreeSet::new();
    let mut valid: Vec<&mut LoadedJob> = declarations
        .into_iter()
        .filter(|l| l.job.is_some())
        .filter(|l| match &l.configmap {
            Some(object) => seen.insert(object.to_string()),
            None => true,
        })
        .collect();
    let names = {
        let jobs: Vec<(&str, &Job)> = valid
            .iter()
            .map(|l| (l.namespace.as_str(), l.job.as_deref().expect("valid")))
            .collect();
        check_names(&jobs)
    };
    let mut changed = false;
    for (loaded, name) in valid.iter_mut().zip(names) {
        if let Err(taken) = name {
            refuse(loaded, &taken);
            changed = true;
        }
    }
    changed
}

/// `loaded`, refused because `taken`.
pub fn refuse(loaded: &mut LoadedJob, taken: &NameTaken) {
    let declared = loaded
        .job
        .as_ref()
        .and_then(|j| j.ghprb.as_ref())
        .is_some_and(|g| g.context.is_some());
    let field = if declared {
        FieldPath::new(&["job", "ghprb", "context"])
    } else {
        FieldPath::new(&["job", "name"])
    };
    loaded.job = None;
    loaded.diagnostics.push(Diagnostic {
        severity: Severity::Error,
        code: "check-name-taken",
        file: loaded.file.clone(),
        line: loaded.pos.line,
        column: loaded.pos.column,
        object: loaded.configmap.as_ref().map(ToString::to_string),
        field,
        message: taken.message(),
        help: Some(NameTaken::HELP.into()),
        source_line: None,
    });
}

/// A name as names are compared: without surrounding blanks, in lower case, so that names
/// people (or GitHub) may take for one are one.
fn comparable(name: &str) -> String {
    name.trim().to_lowercase()
}

/// `job`'s name: its `ghprb.context`, or the default.
fn name_of(namespace: &str, job: &Job, shared: bool) -> String {
    job.ghprb
        .as_ref()
        .and_then(|g| g.context.clone())
        .unwrap_or_else(|| default_name(namespace, &job.name, shared))
}

/// The name `job` of `namespace` reports under, among `jobs` (every valid job, or those
/// of its repository); `None` if it is not among them or lost its name.
pub fn check_name_among(namespace: &str, name: &str, jobs: &[(&str, &Job)]) -> Option<String> {
    let at = jobs
        .iter()
        .position(|(n, j)| *n == namespace && j.name == name)?;
    check_names(jobs).swap_remove(at).ok()
}

/// What kubeci recorded on a build when it created it: the repository it was made from
/// (its `git.url` then) and the name its job reported under then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded<'a> {
    pub git_url: Option<&'a str>,
    pub check_name: Option<&'a str>,
}

/// A build's job as it is declared now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobNow<'a> {
    /// Valid: the repository it builds and the name it reports under (`None`: it lost it).
    Valid {
        repository: Option<&'a str>,
        check_name: Option<&'a str>,
    },
    /// Still declared, but invalid now (a broken edit while the build ran).
    /// `repository_allowed`: whether the build's Namespace may build the repository
    /// recorded on the build now (its tenancy rules, `Catalogue::allows_repository`) — a
    /// Job made by hand records whatever repository its maker likes.
    Invalid { repository_allowed: bool },
    /// No longer declared at all.
    Gone,
}

/// The name a report of a build goes under, or `None` (nothing is reported: reporters
/// send nothing without a name). One name, one owner:
/// - while its job is valid, the job's own name, and only while the job builds the
///   repository recorded on the build (what is recorded on the build is ignored);
/// - while its job is declared but invalid, the name recorded on the build when it was
///   created, unless a valid job of the recorded repository owns that name now
///   (`owned`: the names the valid jobs of that repository report under) and only when
///   the build's Namespace may build that repository — so a build whose job a broken
///   edit made invalid still reports its end, and a record forged to name another job's
///   name, or a repository its Namespace may not use, is refused;
/// - a job no longer declared reports nothing (its owner withdrew it; nothing declared
///   vouches for the record).
pub fn report_name<'a>(
    job: JobNow<'_>,
    recorded: Recorded<'_>,
    owned: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    let built = GitUrl::parse(recorded.git_url?).ok()?.repository_key()?;
    match job {
        JobNow::Valid {
            repository,
            check_name,
        } => (repository? == built).then(|| check_name.map(str::to_owned))?,
        JobNow::Invalid { repository_allowed } => {
            if !repository_allowed {
                return None;
            }
            let name = recorded.check_name?;
            let taken = owned
                .into_iter()
                .any(|owner| comparable(owner) == comparable(name));
            (!taken).then(|| name.to_owned())
        }
        JobNow::Gone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, repo: &str, context: Option<&str>) -> Job {
        let context = context.map_or_else(String::new, |c| format!("      context: {c}\n"));
        let yaml = format!(
            "- job:\n    name: {name}\n    git:\n      url: https://github.com/{repo}.git\n    run_command: make\n    ghprb:\n      enabled: true\n{context}"
        );
        let report = crate::load("job.yaml", yaml.as_bytes(), &Default::default());
        Job::clone(report.jobs[0].job.as_deref().expect("a valid job"))
    }

    #[test]
    fn the_default_name_includes_the_namespace_where_two_namespaces_build_one_repository() {
        let (deploy, lint, other) = (
            job("deploy", "victim/repo", None),
            job("lint", "victim/repo", None),
            job("deploy", "someone/else", None),
        );
        let alone = check_names(&[("team-b", &deploy), ("team-b", &lint)]);
        assert_eq!(
            alone,
            [Ok("kubeci/deploy".into()), Ok("kubeci/lint".into())]
        );
        let shared = check_names(&[("team-b", &deploy), ("team-a", &lint), ("team-a", &other)]);
        assert_eq!(
            shared,
            [
                Ok("kubeci/team-b/deploy".into()),
                Ok("kubeci/team-a/lint".into()),
                Ok("kubeci/deploy".into()),
            ],
            "another repository is named as before"
        );
    }

    #[test]
    fn a_second_job_declaring_a_name_another_job_reports_under_loses_it() {
        let deploy = job("deploy", "victim/repo", Some("kubeci/deploy"));
        let spoof = job("evil", "Victim/Repo", Some("kubeci/deploy"));
        let names = check_names(&[("team-b", &deploy), ("team-a", &spoof)]);
        assert_eq!(names[0], Ok("kubeci/deploy".into()));
        let taken = names[1].clone().unwrap_err();
        assert_eq!(taken.owner, ("team-b".into(), "deploy".into()));
        assert!(
            taken.message().contains("job team-b/deploy"),
            "{}",
            taken.message()
        );
        // Elsewhere the same name is free.
        let elsewhere = job("evil", "someone/else", Some("kubeci/deploy"));
        assert!(check_names(&[("team-b", &deploy), ("team-a", &elsewhere)])
            .iter()
            .all(Result::is_ok));
        // A declared name may not take another job's default name, short or long, even
        // where the other job comes later or its default is now the long one: team-a's
        // `kubeci/deploy` is the name team-b's checks had before team-a came.
        let plain = job("deploy", "victim/repo", None);
        for order in [[0, 1], [1, 0]] {
            let both = [("team-b", &plain), ("team-a", &spoof)];
            let jobs: Vec<(&str, &Job)> = order.iter().map(|&i| both[i]).collect();
            let names = check_names(&jobs);
            let at = |ns: &str| jobs.iter().position(|(n, _)| *n == ns).unwrap();
            assert_eq!(names[at("team-b")], Ok("kubeci/deploy".into()), "{names:?}");
            assert_eq!(
                names[at("team-a")].clone().unwrap_err().owner,
                ("team-b".into(), "deploy".into())
            );
        }
        let long = job("evil", "victim/repo", Some("kubeci/team-b/deploy"));
        let names = check_names(&[("team-a", &long), ("team-b", &plain)]);
        assert!(names[0].is_err(), "{names:?}");
        let own = job("deploy", "victim/repo", Some("kubeci/deploy"));
        assert_eq!(
            check_names(&[("team-b", &own)]),
            [Ok("kubeci/deploy".into())]
        );
        // A job of the same name in another namespace has the same short default: its
        // declaring that name takes it from neither (the review's finding), and once it
        // lost, team-b alone builds the repository and keeps the short name.
        let namesake = job("deploy", "victim/repo", Some("kubeci/deploy"));
        let names = check_names(&[("team-b", &plain), ("zeta", &namesake)]);
        assert_eq!(names[0], Ok("kubeci/deploy".into()));
        assert_eq!(
            names[1].clone().unwrap_err().owner,
            ("team-b".into(), "deploy".into()),
            "{names:?}"
        );
        // Names differing in case or blanks are one name.
        let shouting = job("evil", "victim/repo", Some("' KubeCI/Deploy'"));
        assert!(check_names(&[("team-b", &plain), ("team-a", &shouting)])[1].is_err());
    }

    #[test]
    fn names_are_decided_over_the_jobs_that_keep_them() {
        // team-a's only job loses its name: team-b alone builds the repository, so its
        // default names are the short ones — the same as decided over team-b's jobs alone.
        let deploy = job("deploy", "victim/repo", Some("deploy-check"));
        let lint = job("lint", "victim/repo", None);
        let spoof = job("evil", "victim/repo", Some("deploy-check"));
        let all = check_names(&[("team-b", &deploy), ("team-b", &lint), ("team-a", &spoof)]);
        let remaining = check_names(&[("team-b", &deploy), ("team-b", &lint)]);
        assert_eq!(all[..2], remaining[..]);
        assert_eq!(all[1], Ok("kubeci/lint".into()));
        assert_eq!(
            check_name_among("team-b", "lint", &[("team-b", &deploy), ("team-b", &lint)]),
            Some("kubeci/lint".into())
        );
        assert_eq!(
            check_name_among("team-a", "evil", &[("team-b", &deploy)]),
            None
        );
    }

    const REPO: &str = "https://github.com/victim/repo.git";

    fn recorded(name: Option<&'static str>) -> Recorded<'static> {
        Recorded {
            git_url: Some(REPO),
            check_name: name,
        }
    }

    #[test]
    fn a_valid_job_reports_under_its_own_name_whatever_its_build_recorded() {
        let valid = JobNow::Valid {
            repository: Some("github.com/victim/repo"),
            check_name: Some("kubeci/deploy"),
        };
        for record in [None, Some("kubeci/deploy"), Some("kubeci/other")] {
            assert_eq!(
                report_name(valid, recorded(record), []).as_deref(),
                Some("kubeci/deploy"),
                "{record:?}"
            );
        }
        let moved = JobNow::Valid {
            repository: Some("github.com/mallory/other"),
            check_name: Some("kubeci/deploy"),
        };
        assert_eq!(
            report_name(moved, recorded(Some("kubeci/deploy")), []),
            None,
            "a job moved to another repository names nothing of the one its build was made from"
        );
        let unnamed = JobNow::Valid {
            repository: Some("github.com/victim/repo"),
            check_name: None,
        };
        assert_eq!(
            report_name(unnamed, recorded(Some("kubeci/deploy")), []),
            None
        );
    }

    #[test]
    fn a_build_of_a_job_turned_invalid_reports_under_its_recorded_name_unless_another_owns_it() {
        assert_eq!(
            report_name(
                JobNow::Invalid {
                    repository_allowed: true
                },
                recorded(Some("kubeci/lint")),
                ["kubeci/deploy"]
            )
            .as_deref(),
            Some("kubeci/lint")
        );
        // A record forged (or left from before) to name a name another valid job of the
        // repository owns: refused, however it is spelt.
        for forged in ["kubeci/deploy", " Kubeci/Deploy"] {
            assert_eq!(
                report_name(
                    JobNow::Invalid {
                        repository_allowed: true
                    },
                    recorded(Some(forged)),
                    ["kubeci/deploy"]
                ),
                None,
                "{forged}"
            );
        }
        assert_eq!(
            report_name(
                JobNow::Invalid {
                    repository_allowed: true
                },
                recorded(None),
                []
            ),
            None
        );
        let nowhere = Recorded {
            git_url: None,
            check_name: Some("kubeci/lint"),
        };
        assert_eq!(
            report_name(
                JobNow::Invalid {
                    repository_allowed: true
                },
                nowhere,
                []
            ),
            None
        );
        assert_eq!(
            report_name(JobNow::Gone, recorded(Some("kubeci/lint")), []),
            None,
            "a job no longer declared reports nothing"
        );
    }

    #[test]
    fn a_build_of_a_job_turned_invalid_reports_nothing_to_a_repository_its_namespace_may_not_build()
    {
        let refused = JobNow::Invalid {
            repository_allowed: false,
        };
        assert_eq!(
            report_name(refused, recorded(Some("kubeci/lint")), []),
            None,
            "a hand-made Job's record names a repository its Namespace may not use"
        );
    }
}
