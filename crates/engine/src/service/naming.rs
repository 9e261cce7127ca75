//! What a build's reports are addressed to, and the name they go under: from the build's
//! own record (the repository it was made from, the name recorded when it was created) and
//! its job as it is now ([`checkname::report_name`]).

use kubeci_spec::checkname::{self, JobNow, Recorded};
use kubeci_spec::validate::normalize_workdir;
use kubeci_spec::Catalogue;

use super::{BuildStore, Service};
use crate::api::BuildFacts;
use crate::report::ReportTarget;

impl<S: BuildStore> Service<'_, S> {
    /// What a report about `build` is about, addressed from the build's own record (the
    /// repository it was made from, the name recorded when it was created) by
    /// [`checkname::report_name`], with its job's `naming` now.
    pub(super) fn report_target(&self, build: &S::Build, naming: &Naming) -> ReportTarget {
        let facts = self.0.facts(build);
        let context = self.report_name(&facts, naming);
        let workdir = match naming {
            Naming::Valid { workdir, .. } => workdir.clone(),
            Naming::Invalid | Naming::Gone => None,
        };
        ReportTarget {
            namespace: facts.namespace.to_owned(),
            job: facts.job.to_owned(),
            number: facts.number,
            url: kubeci_build::build_url(
                &self.0.common().base_url,
                facts.namespace,
                facts.job,
                facts.number,
            ),
            build_name: facts.name,
            trigger: facts.trigger,
            git_url: facts.git_url,
            // Put into `/repos/{repo}/statuses/{sha}`: a commit id or nothing (a Job made
            // by hand can record anything).
            commit: facts
                .commit
                .filter(|c| kubeci_build::clone_result::is_commit(c)),
            pull_request: facts.pull_request,
            context,
            created_at: facts.created_at,
            workdir,
            checkout_dir: self.0.checkout_dir(build),
        }
    }

    /// What names the reports of job `job`'s builds now.
    pub(super) fn naming(&self, namespace: &str, job: &str) -> Naming {
        let jobs = self.0.catalogue();
        let valid = jobs.find(namespace, job);
        match valid.as_ref().and_then(|l| l.job.as_ref()) {
            Some(spec) => Naming::Valid {
                repository: checkname::repository_of(spec),
                check_name: jobs.check_name(namespace, job),
                workdir: match &spec.workdir {
                    Some(workdir) => normalize_workdir(workdir).ok(),
                    None => Some(String::new()),
                },
            },
            None if jobs.is_declared(namespace, job) => Naming::Invalid,
            None => Naming::Gone,
        }
    }

    /// The name a build with `facts` reports under now.
    fn report_name(&self, facts: &BuildFacts<'_>, naming: &Naming) -> Option<String> {
        let recorded = Recorded {
            git_url: facts.git_url.as_deref(),
            check_name: facts.check_name.as_deref(),
        };
        let (repository, check_name) = match naming {
            Naming::Valid {
                repository,
                check_name,
                ..
            } => (repository.as_deref(), check_name.as_deref()),
            Naming::Invalid => return self.report_name_of_invalid(facts.namespace, recorded),
            Naming::Gone => return checkname::report_name(JobNow::Gone, recorded, []),
        };
        let now = JobNow::Valid {
            repository,
            check_name,
        };
        checkname::report_name(now, recorded, [])
    }

    /// The name a build of an invalid job of `namespace` reports under now: what the valid
    /// jobs of the repository it was built from own now matters.
    fn report_name_of_invalid(&self, namespace: &str, recorded: Recorded<'_>) -> Option<String> {
        let jobs = self.0.catalogue();
        let built = recorded.git_url.and_then(|url| {
            kubeci_spec::giturl::GitUrl::parse(url)
                .ok()?
                .repository_key()
        });
        let now = JobNow::Invalid {
            repository_allowed: built
                .as_deref()
                .is_some_and(|built| jobs.allows_repository(namespace, built)),
        };
        let owned: Vec<String> = match built {
            Some(built) => {
                let specs = jobs.specs(Some(std::slice::from_ref(&built)));
                let names = specs
                    .iter()
                    .filter_map(|(ns, j)| jobs.check_name(ns, &j.name));
                names.collect()
            }
            None => Vec::new(),
        };
        checkname::report_name(now, recorded, owned.iter().map(String::as_str))
    }
}

/// What names the reports of a job's builds now: read once per job and pass.
pub(super) enum Naming {
    /// Valid: the repository its spec builds, the name it reports under, and the
    /// directory it runs in (normalized; `None` if it cannot be).
    Valid {
        repository: Option<String>,
        check_name: Option<String>,
        workdir: Option<String>,
    },
    /// Declared, and invalid.
    Invalid,
    /// No longer declared.
    Gone,
}
