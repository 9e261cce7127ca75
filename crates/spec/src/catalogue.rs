//! The jobs an engine knows, as its commands look them up: the Kubernetes engine's index
//! of job ConfigMaps and the local engine's job files both answer these questions, and
//! the look-up rules (which declaration is the job, which a page shows) are written here
//! once.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::{Job, LoadedJob};

/// The job declarations of an engine (ConfigMaps, or the files that hold them).
pub trait Catalogue {
    /// The declarations of job `name` whose builds run in `namespace`, valid or not, in
    /// the order that decides between them (the first valid one is the job).
    fn declarations(&self, namespace: &str, name: &str) -> Vec<&Arc<LoadedJob>>;

    /// Every declaration, valid or not, one per ConfigMap.
    fn all(&self) -> Vec<Arc<LoadedJob>>;

    /// The valid jobs with the namespace their builds run in; only those whose `git.url`
    /// names one of `repositories` (`GitUrl::repository_key`) when given.
    fn specs(&self, repositories: Option<&[String]>) -> Vec<(String, Arc<Job>)>;

    /// The name valid job `name` of `namespace` reports under on GitHub, if it has one
    /// (`crate::checkname`).
    fn check_name(&self, namespace: &str, name: &str) -> Option<String>;

    /// Whether builds of `namespace` may build repository `repository` (`host/owner/name`,
    /// `GitUrl::repository_key`) as the Namespace's tenancy rules say now; engines without
    /// such rules allow every repository.
    fn allows_repository(&self, _namespace: &str, _repository: &str) -> bool {
        true
    }

    /// The valid job `name` of `namespace`: the first valid declaration.
    fn find(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        self.declarations(namespace, name)
            .into_iter()
            .find(|j| j.job.is_some())
            .cloned()
    }

    /// Job `name` of `namespace` as its page shows it, valid or not: the valid job if
    /// there is one (an invalid declaration never stands over it), else the first.
    fn find_declared(&self, namespace: &str, name: &str) -> Option<Arc<LoadedJob>> {
        let declarations = self.declarations(namespace, name);
        declarations
            .iter()
            .find(|j| j.job.is_some())
            .or(declarations.first())
            .map(|j| Arc::clone(j))
    }

    /// Whether anything declares job `name` of `namespace`, valid or not.
    fn is_declared(&self, namespace: &str, name: &str) -> bool {
        !self.declarations(namespace, name).is_empty()
    }

    /// The namespaces that have jobs, sorted.
    fn namespaces(&self) -> Vec<String> {
        let found: BTreeSet<String> = self.all().iter().map(|j| j.namespace.clone()).collect();
        found.into_iter().collect()
    }
}
