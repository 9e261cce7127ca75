//! What GitHub's checks UI asks (`check_run` and `check_suite` deliveries): a re-run of a
//! check run or of the suite, and the "Approve and build" button; and the check runs that
//! wait for an admin's approval of an untrusted pull request.

use kubeci_engine::api::Backend;
use kubeci_github::checks::{self, APPROVE};
use kubeci_github::decide::{self, Action, JobRef, Waiting};
use kubeci_github::event::{CheckRunRef, Event};
use serde_json::json;

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
    /// A `check_run` or `check_suite` delivery (`id`) about a pull request's head.
    pub(super) async fn on_checks(&self, event: Event, jobs: &[JobRef<'_>], id: &str) -> Outcome {
        let Event::Checks {
            action,
            repository,
            head_sha,
            check_run,
            requested_action,
            pull_requests,
            sender,
        } = event
        else {
            return Ok(json!({"outcome": "not a checks event"}));
        };
        let Some(&number) = pull_requests.first() else {
            return Ok(
                json!({"outcome": "not a pull request's head: kubeci re-runs pull requests' checks"}),
            );
        };
        if !matches!(action.as_str(), "rerequested" | "requested_action") {
            return Ok(json!({"outcome": format!("check {action} starts nothing")}));
        }
        let jobs = decide::matching(jobs, &repository);
        let repo = &repository.full_name;
        let gh = |e: GitHubError| (Vec::new(), Failure::GitHub(e));
        let pr = self.github.pull_request(repo, number).await.map_err(gh)?;
        let members = self
            .memberships(&jobs, &[&pr.author, &sender])
            .await
            .map_err(gh)?;
        let decision = match requested_action {
            None => {
                let name = check_run.as_ref().map(|c| c.name.as_str());
                checks::on_rerun(&pr, &head_sha, name, &sender, id, &jobs, &members)
            }
            Some(identifier) => {
                let decision =
                    checks::on_requested_action(&identifier, &pr, &head_sha, &sender, &jobs);
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

    /// The check run whose "Approve and build" `sender` clicked says what came of it:
    /// approved (it steps aside for the build's own check run), or nothing, and why.
    async fn answer_on_check_run(
        &self,
        repo: &str,
        run: &CheckRunRef,
        sender: &str,
        decision: &decide::Decision,
    ) -> Result<(), GitHubError> {
        let fields = if decision.actions.contains(&Action::Approve) {
            json!({
                "status": "completed",
                "conclusion": "neutral",
                "output": {
                    "title": format!("Approved by @{sender}"),
                    "summary": format!("@{sender} approved this pull request (the `ok-to-test` label): its builds report in their own check runs."),
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
            let external_id = checks::approval_external_id(&job.namespace, &job.job);
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
