//! Build states as GitHub check runs (for a GitHub App): one check run per build, named
//! `kubeci/<job>` (or `ghprb.context`), created by the build's first report and updated
//! by the later ones — queued, in progress, completed with its conclusion — each call
//! one request. The check run's id is recorded with the build's reported states, so a
//! restarted kubeci updates it instead of creating a second one; when a first report may
//! have reached GitHub without being recorded (kubeci stopped in between, or the answer
//! was lost), the check run is looked for by its `external_id` before one is created.
//!
//! A final report with the build's test results also annotates each failed test on its
//! file ([`check_tests`]): fifty annotations with the request that ends the check run, fifty
//! more with each further update. GitHub appends annotations and replaces none, so a report
//! that may have reached GitHub before (its earlier attempt failed, or a leader before this
//! one sent it) first reads the check run's annotations and sends only those it lacks: a
//! retried report never doubles them.
//!
//! A recorded id is trusted only once kubeci has seen that it is this build's check run
//! (its `external_id` and name, [`check_run::belongs_to`]): the record is an annotation
//! of the build's Job, which a tenant allowed to patch Jobs in its namespace can rewrite
//! with another team's check run id. Each id is confirmed once per process.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use kubeci_engine::report::{Receipt, Report, ReportTarget, Reporter, Reporting};
use serde_json::{json, Value};

use crate::check_tests::{self, MAX_ANNOTATIONS};
use crate::client::{CheckRun, GitHubClient};
use crate::{check_run, repository_on};

/// How many check runs a reporter remembers as confirmed (the oldest are forgotten
/// first; a forgotten one costs one more GET when its build reports again).
const CONFIRMED_LIMIT: usize = 4096;

/// Which build a check run shows: its repository, `external_id` and check name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    repo: String,
    external_id: String,
    name: String,
}

impl Owner {
    fn owns(&self, run: &CheckRun) -> bool {
        check_run::belongs_to(run, &self.external_id, &self.name)
    }
}

/// Check runs known to be a build's (created or found by this reporter, or confirmed
/// with GitHub), by id, at most [`CONFIRMED_LIMIT`].
#[derive(Default)]
struct Confirmed {
    owners: HashMap<u64, Owner>,
    order: VecDeque<u64>,
}

impl Confirmed {
    fn holds(&self, id: u64, owner: &Owner) -> bool {
        self.owners.get(&id) == Some(owner)
    }

    fn remember(&mut self, id: u64, owner: &Owner) {
        if self.owners.insert(id, owner.clone()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > CONFIRMED_LIMIT {
            if let Some(oldest) = self.order.pop_front() {
                self.owners.remove(&oldest);
            }
        }
    }
}

/// Creates and updates check runs for builds of commits on one GitHub.
pub struct ChecksReporter {
    client: Arc<GitHubClient>,
    host: String,
    confirmed: Mutex<Confirmed>,
}

impl ChecksReporter {
    /// Reports builds whose `git.url` is on `host` (see [`crate::repository_host`]).
    pub fn new(client: Arc<GitHubClient>, host: &str) -> ChecksReporter {
        ChecksReporter {
            client,
            host: host.to_ascii_lowercase(),
            confirmed: Mutex::default(),
        }
    }

    fn remember(&self, id: u64, owner: &Owner) {
        self.confirmed.lock().expect("lock").remember(id, owner);
    }

    /// The check run of this build GitHub already has: the recorded one once confirmed to
    /// be this build's, else (when the record names another or a report may have created
    /// one that was not recorded) the one found by its `external_id`.
    async fn existing(
        &self,
        report: &Report<'_>,
        sha: &str,
        owner: &Owner,
    ) -> Result<Option<u64>, crate::GitHubError> {
        if let Some(id) = report.before.check_run {
            if self.confirmed.lock().expect("lock").holds(id, owner) {
                return Ok(Some(id));
            }
            match self.client.check_run(&owner.repo, id).await? {
                Some(run) if owner.owns(&run) => {
                    self.remember(id, owner);
                    return Ok(Some(id));
                }
                run => tracing::warn!(
                    check_run = id,
                    build = %owner.external_id,
                    shows = ?run.map(|r| (r.external_id, r.name)),
                    "the check run recorded for this build is not its own: ignored"
                ),
            }
        } else if !report.may_have_been_sent {
            return Ok(None);
        }
        let runs = self
            .client
            .check_runs(&owner.repo, sha, Some(&owner.name))
            .await?;
        Ok(runs
            .into_iter()
            .find(|run| owner.owns(run))
            .map(|run| run.id))
    }

    /// The annotations of the failed tests to send to check run `id` (`None`: one to be
    /// created): all of them, or — when the report may have been sent before — those the
    /// check run does not hold yet.
    async fn annotations_to_send(
        &self,
        report: &Report<'_>,
        repo: &str,
        id: Option<u64>,
    ) -> Result<Vec<Value>, crate::GitHubError> {
        let wanted = check_tests::annotations(report).list;
        match id {
            Some(id) if report.may_have_been_sent && !wanted.is_empty() => {
                let present = self
                    .client
                    .check_run_annotations(repo, id, MAX_ANNOTATIONS)
                    .await?;
                Ok(check_tests::missing(wanted, &present))
            }
            _ => Ok(wanted),
        }
    }
}

impl Reporter for ChecksReporter {
    fn name(&self) -> &str {
        "github-checks"
    }

    fn wants(&self, target: &ReportTarget) -> bool {
        crate::reporter::reported_to_github(target, &self.host)
    }

    fn creates_on_first_report(&self) -> bool {
        true
    }

    fn wants_log_tail(&self) -> bool {
        true
    }

    fn wants_tests(&self) -> bool {
        true
    }

    fn reports_running(&self) -> bool {
        true
    }

    fn report<'a>(&'a self, report: &'a Report<'a>) -> Reporting<'a> {
        Box::pin(async move {
            let target = report.target;
            let repo = target
                .git_url
                .as_deref()
                .and_then(|url| repository_on(&self.host, url));
            let (Some(repo), Some(sha)) = (repo, target.commit.as_deref()) else {
                return Ok(Receipt::default());
            };
            let Some(name) = target.context.clone() else {
                return Ok(Receipt::default());
            };
            let now = jiff::Timestamp::now().as_second();
            let mut fields = check_run::fields(report, now);
            let failed = crate::report_error;
            let owner = Owner {
                repo,
                external_id: check_run::external_id(report),
                name,
            };
            let existing = self.existing(report, sha, &owner).await.map_err(failed)?;
            let annotations = self
                .annotations_to_send(report, &owner.repo, existing)
                .await
                .map_err(failed)?;
            let output = fields["output"].clone();
            let mut batches = check_tests::batches(&annotations);
            if let Some(first) = batches.next() {
                fields["output"]["annotations"] = first.into();
            }
            let id = match existing {
                Some(id) => {
                    self.client
                        .update_check_run(&owner.repo, id, fields)
                        .await
                        .map_err(failed)?;
                    id
                }
                None => {
                    fields["name"] = Value::String(owner.name.clone());
                    fields["head_sha"] = sha.into();
                    fields["external_id"] = owner.external_id.clone().into();
                    self.client
                        .create_check_run(&owner.repo, fields)
                        .await
                        .map_err(failed)?
                }
            };
            self.remember(id, &owner);
            // Each further fifty in an update of their own, with the same title and summary
            // (GitHub wants both with annotations).
            for batch in batches {
                let more = json!({"output": {
                    "title": output["title"], "summary": output["summary"], "annotations": batch,
                }});
                self.client
                    .update_check_run(&owner.repo, id, more)
                    .await
                    .map_err(failed)?;
            }
            Ok(Receipt {
                check_run: Some(id),
            })
        })
    }
}
