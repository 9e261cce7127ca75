//! The periodic resync: open pull requests' trusted heads that have no kubeci check run
//! or status yet are built, which heals missed deliveries and a restart during one.

use std::sync::Arc;
use std::time::Duration;

use kubeci_engine::api::Backend;
use kubeci_github::decide::{self, JobRef};
use kubeci_github::event::{PullRequestInfo, Repository};

use super::bounds::MAX_RESYNC_PULL_REQUESTS;
use super::{Failure, Hooks};
use crate::{repository_on, GitHubError};

impl<B: Backend> Hooks<B> {
    /// One resync: for each repository with pull-request jobs, build the trusted open
    /// pull requests' heads that have no kubeci check run or status yet — of its newest
    /// [`MAX_RESYNC_PULL_REQUESTS`] open pull requests. Returns the builds started.
    pub async fn resync(&self) -> Result<usize, GitHubError> {
        let specs = self.backend.specs(None);
        let all: Vec<JobRef> = specs
            .iter()
            .map(|(namespace, job)| JobRef { namespace, job })
            .collect();
        let mut repos: Vec<String> = all
            .iter()
            .filter(|j| j.job.pull_requests_enabled())
            .filter_map(|j| repository_on(&self.settings.host, &j.job.git.url))
            .collect();
        repos.sort();
        repos.dedup();
        let mut started = 0;
        let mut failed = None;
        for repo in repos {
            // One repository GitHub will not answer for (a rate limit, an App not installed
            // there) stops neither the others nor the next resync.
            match self.resync_repository(&repo, &all).await {
                Ok(n) => started += n,
                Err(e) => {
                    tracing::warn!(%repo, error = %e, "the resync of a repository failed");
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) if started == 0 => Err(e),
            _ => Ok(started),
        }
    }

    /// The resync of one repository, whose jobs are among `all` (every valid job).
    async fn resync_repository(
        &self,
        repo: &str,
        all: &[JobRef<'_>],
    ) -> Result<usize, GitHubError> {
        let repository = Repository {
            full_name: repo.to_owned(),
            urls: vec![format!("https://{}/{repo}.git", self.settings.host)],
        };
        let of_repository = decide::matching(all, &repository);
        let (open, more) = self
            .github
            .open_pull_requests(repo, MAX_RESYNC_PULL_REQUESTS)
            .await?;
        let mut started = 0;
        for pr in &open {
            started += self
                .resync_pull_request(&repository, pr, &of_repository)
                .await?;
        }
        if more {
            tracing::info!(
                %repo,
                looked_at = open.len(),
                "the resync looked at the newest open pull requests of a repository; older ones are resynced by their next event"
            );
        }
        Ok(started)
    }

    async fn resync_pull_request(
        &self,
        repository: &Repository,
        pr: &PullRequestInfo,
        jobs: &[JobRef<'_>],
    ) -> Result<usize, GitHubError> {
        let (repo, head) = (&repository.full_name, &pr.head_sha);
        let contexts: Vec<String> = if self.settings.check_runs {
            let runs = self.github.check_runs(repo, head, None).await?;
            runs.into_iter().map(|run| run.name).collect()
        } else {
            let statuses = self.github.statuses(repo, head).await?;
            statuses.into_iter().map(|status| status.context).collect()
        };
        let known = self.known(jobs, &[&pr.author]).await;
        let decision = decide::resync(pr, jobs, &known, |job| {
            contexts.contains(&decide::check_name(job, jobs))
        });
        match self.execute(repository, Some(pr.number), decision).await {
            Ok(done) => Ok(done["builds"]
                .as_array()
                .map_or(0, |b| b.iter().filter(|b| b["created"] == true).count())),
            Err((_, Failure::GitHub(e))) => Err(e),
            Err((_, Failure::Backend(message))) => {
                tracing::info!(
                    repo = %repository.full_name,
                    pull_request = pr.number,
                    error = %message,
                    "the resync cannot build a pull request"
                );
                Ok(0)
            }
        }
    }

    /// Resyncs once the backend is ready, then every `every`, for ever; failures are
    /// logged and tried again next time.
    pub async fn resync_every(self: Arc<Self>, every: Duration) {
        while !self.backend.ready() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match self.resync().await {
                Ok(0) => {}
                Ok(started) => tracing::info!(started, "the GitHub resync started builds"),
                Err(e) => tracing::warn!(error = %e, "the GitHub resync failed"),
            }
        }
    }
}
