//! What GitHub's checks UI asks (`check_run` and `check_suite` deliveries): a re-run of a
//! check run or of the suite, and the "Approve and build" button; and the check runs that
//! wait for an admin's approval of an untrusted pull request.

use kubeci_build::Trigger;
use kubeci_engine::api::Backend;
use kubeci_github::checks::{self, PastBuild, Rerun, APPROVE};
use kubeci_github::decide::{self, Action, JobRef, Waiting};
use kubeci_github::event::{CheckRunRef, Event};
use serde_json::json;

/// How many of a job's newest builds a re-run looks through for the head it is about.
const PAST_BUILDS: usize = 100;

use super::{Failure, Hooks, Outcome};
use crate::GitHubError;

/// Who may approve, as a check run says it.
fn approvers(waiting: &Waiting) -> String {
    if waiting.admins.is_empty() {
        return "no one yet: the job names no `ghprb.admin_users`".into();
    }
    let admins: Vec<String> = waiting.admins.iter().map(|a| format!("@{a}")).collect();
    admins.join(", ")
}

impl<B: Backend> Hooks<B> {
    /// A `check_run` or `check_suite` delivery (`id`): a re-run or a button, about a pull
    /// request's head or a push's.
    pub(super) async fn on_checks(&self, event: Event, jobs: &[JobRef<'_>], id: &str) -> Outcome {
        let Event::Checks {
            action,
            repository,
            head_sha,
            check_run,
            requested_action,
            pull_requests,
            head_branch,
            sender,
        } = event
        else {
            return Ok(json!({"outcome": "not a checks event"}));
        };
        if !matches!(action.as_str(), "rerequested" | "requested_action") {
            return Ok(json!({"outcome": format!("check {action} starts nothing")}));
        }
        let jobs = decide::matching(jobs, &repository);
        let past = self.past_builds(&jobs, &head_sha).await;
        let external_id = check_run.as_ref().map(|c| c.external_id.as_str());
        let number = pull_requests
            .first()
            .copied()
            .or_else(|| checks::pull_request_of(external_id, &past));
        let rerun = Rerun {
            head: &head_sha,
            name: check_run.as_ref().map(|c| c.name.as_str()),
            sender: &sender,
            delivery: id,
            past: &past,
        };
        let Some(number) = number else {
            if requested_action.is_some() {
                return Ok(json!({"outcome": "no pull request has this head: nothing to approve"}));
            }
            let decision = checks::on_push_rerun(head_branch.as_deref(), rerun, &jobs);
            return self.execute(&repository, None, decision).await;
        };
        let repo = &repository.full_name;
        let gh = |e: GitHubError| (Vec::new(), Failure::GitHub(e));
        let pr = self.github.pull_request(repo, number).await.map_err(gh)?;
        let known = self.known(&jobs, &[&pr.author, &sender]).await;
        let decision = match requested_action {
            None => checks::on_rerun(&pr, rerun, &jobs, &known),
            Some(identifier) => {
                let decision = checks::on_requested_action(
                    &identifier,
                    external_id.unwrap_or_default(),
                    &pr,
                    &head_sha,
                    &sender,
                    &jobs,
                );
                if let Some(run) = check_run.as_ref().filter(|_| identifier == APPROVE) {
                    self.answer_on_check_run(repo, run, &sender, &decision)
                        .await
                        .map_err(gh)?;
                }
                decision
            }
        };
        self.execute(&repository, Some(number), decision).await
    }

    /// What kubeci built of `head` for `jobs`, newest first per job, from its own records
    /// (its newest builds, live or archived).
    async fn past_builds(&self, jobs: &[JobRef<'_>], head: &str) -> Vec<PastBuild> {
        let mut past = Vec::new();
        let newest = kubeci_engine::api::PageRequest {
            before: None,
            limit: PAST_BUILDS,
        };
        for job in jobs {
            let builds = self
                .backend
                .builds_page(job.namespace, &job.job.name, newest)
                .await
                .map(|page| page.builds)
                .unwrap_or_default();
            past.extend(
                builds
                    .into_iter()
                    .filter(|b| b.commit.as_deref() == Some(head))
                    .map(|b| PastBuild {
                        namespace: job.namespace.to_owned(),
                        job: job.job.name.clone(),
                        pull_request: b.pull_request,
                        trigger: b.trigger.as_deref().and_then(Trigger::parse),
                        failed: b.state.is_unsuccessful(),
                    }),
            );
        }
        past
    }

    /// The check run whose "Approve and build" `sender` clicked says what came of it:
    /// approved (it steps aside for the build's own check run), or nothing, and why.
    async fn answer_on_check_run(
        &self,
        repo: &str,
        run: &CheckRunRef,
        sender: &str,
        decision: &decide::Decision,
    ) -> Result<(), GitHubError> {
        let approved = decision.actions.iter().find_map(|a| match a {
            Action::Approve(approved) => Some(approved),
            _ => None,
        });
        let fields = if let Some(approved) = approved {
            json!({
                "status": "completed",
                "conclusion": "neutral",
                "output": {
                    "title": format!("Approved by @{sender}"),
                    "summary": format!(
                        "@{sender} approved {} of this pull request for `{}/{}`: its build reports in its own check run. A new push waits for an approval again.",
                        approved.head, approved.namespace, approved.job
                    ),
                },
                "actions": [],
            })
        } else {
            json!({
                "output": {
                    "title": "Waiting for an admin's approval",
                    "summary": format!(
                        "@{sender} clicked “Approve and build”, which changed nothing: {}.",
                        decision.reasons.join("; ")
                    ),
                },
            })
        };
        self.github.update_check_run(repo, run.id, fields).await
    }

    /// One check run per waiting job on `head` of pull request `number` by `author`,
    /// waiting for approval (`action_required`) with an "Approve and build" button — once:
    /// a redelivery, or a job already waiting there, adds none.
    pub(super) async fn ask_on_check_runs(
        &self,
        repo: &str,
        number: u64,
        head: &str,
        author: &str,
        waiting: &[Waiting],
    ) -> Result<(), GitHubError> {
        let existing = self.github.check_runs(repo, head, None).await?;
        for job in waiting {
            let external_id = checks::approval_external_id(&job.namespace, &job.job, number);
            if existing.iter().any(|run| run.external_id == external_id) {
                continue;
            }
            let summary = format!(
                "Pull request #{number} is by @{author}, whom `{}/{}` does not trust yet: nothing is built until an admin approves it — {} — with “Approve and build” above, or by commenting `ok to test`.",
                job.namespace,
                job.job,
                approvers(job)
            );
            let fields = json!({
                "name": job.check_name,
                "head_sha": head,
                "external_id": external_id,
                "status": "completed",
                "conclusion": "action_required",
                "output": {"title": "Waiting for an admin's approval", "summary": summary},
                "actions": [{
                    "label": "Approve and build",
                    "description": "Build this pull request (admins)",
                    "identifier": APPROVE,
                }],
            });
            self.github.create_check_run(repo, fields).await?;
        }
        Ok(())
    }
}
