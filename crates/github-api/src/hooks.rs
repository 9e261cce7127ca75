//! The work of `POST /hooks/github` and of the resync: check the signature, read the
//! event, ask GitHub what the decision needs (a comment's pull request, organisation
//! membership), decide (pure, `kubeci_github::decide`), then do it — builds through the
//! engine's backend with idempotency keys, comments and labels on GitHub — before
//! answering. A delivery whose work fails is answered 5xx, so GitHub shows it as failed;
//! the resync heals what was missed.

use std::sync::Arc;

use kubeci_engine::api::{Backend, Delivery, DeliveryAnswer, TriggerError, TriggerRequest};
use kubeci_engine::approval::Approval;
use kubeci_github::decide::{self, Action, Decision, JobRef};
use kubeci_github::event::{Event, Repository};
use kubeci_github::trust::OK_TO_TEST;
use serde_json::{json, Value};
use tracing::Instrument;

use crate::client::GitHubClient;
use crate::GitHubError;

mod bounds;
mod checks;
mod resync;
mod webhooks;

/// The marker of kubeci's request for approval, so a pull request gets it once.
const APPROVAL_MARKER: &str = "<!-- kubeci:approval-request -->";

/// How the webhook endpoint is configured.
#[derive(Debug, Clone)]
pub struct HookSettings {
    /// The webhook secret; `None` refuses every delivery.
    pub secret: Option<Vec<u8>>,
    /// kubeci's own login: its comments never trigger.
    pub bot: Option<String>,
    /// The comment asking an admin to approve an untrusted pull request.
    pub request_message: String,
    /// The host of the repositories the GitHub API serves (`github.com`).
    pub host: String,
    /// Builds are reported as check runs (else as commit statuses): what the resync
    /// looks for on a head.
    pub check_runs: bool,
}

/// The default request for approval.
pub const REQUEST_MESSAGE: &str = "Thanks for your pull request! kubeci builds pull requests from trusted authors only. An admin of this repository's jobs can approve it by commenting `ok to test` (or `/ok-to-test`).";

/// The GitHub webhook endpoint's work, and the resync.
pub struct Hooks<B> {
    backend: Arc<B>,
    github: Arc<GitHubClient>,
    settings: HookSettings,
    /// Deliveries by event and answer status.
    counters: kubeci_engine::metrics::Counters,
    /// The comments kubeci made or found: each is looked for on GitHub once.
    asked: bounds::Asked,
}

/// What went wrong doing a decision's work.
enum Failure {
    GitHub(GitHubError),
    Backend(String),
}

/// What a delivery did (its JSON answer), or how it failed with the builds it had started.
type Outcome = Result<Value, (Vec<Value>, Failure)>;

fn answer(status: u16, body: Value) -> DeliveryAnswer {
    DeliveryAnswer { status, body }
}

/// The span a delivery is answered in, which names it by its headers. They are anyone's:
/// the span shows each cut short and printable (`kubeci_github::delivery`).
fn delivery_span(delivery: &Delivery) -> tracing::Span {
    use kubeci_github::delivery::logged_header;
    tracing::info_span!(
        "delivery",
        delivery = %delivery.id.as_deref().map_or("-".into(), logged_header),
        event = %delivery.event.as_deref().map_or("-".into(), logged_header),
    )
}

fn refusal(status: u16, code: &str, message: impl Into<String>) -> DeliveryAnswer {
    answer(
        status,
        json!({"error": {"code": code, "message": message.into()}}),
    )
}

impl<B: Backend> Hooks<B> {
    pub fn new(backend: Arc<B>, github: Arc<GitHubClient>, settings: HookSettings) -> Hooks<B> {
        Hooks {
            backend,
            github,
            settings,
            counters: Default::default(),
            asked: Default::default(),
        }
    }

    /// Answers a delivery in its span.
    async fn handle(&self, delivery: Delivery) -> DeliveryAnswer {
        let event = delivery.event.clone();
        let span = delivery_span(&delivery);
        let answer = self.answer(delivery).instrument(span.clone()).await;
        span.in_scope(|| self.record(event.as_deref(), &answer));
        answer
    }

    /// Counts and logs the answer to a delivery; the metric's `event` label is a known
    /// event's name or `other`.
    fn record(&self, event: Option<&str>, answer: &DeliveryAnswer) {
        use kubeci_github::delivery::event_label;
        self.counters.increment(
            "kubeci_webhook_deliveries_total",
            &[event_label(event), &answer.status.to_string()],
        );
        tracing::info!(
            status = answer.status,
            answer = %answer.body,
            "GitHub delivery answered"
        );
    }

    async fn answer(&self, delivery: Delivery) -> DeliveryAnswer {
        if !delivery.verified {
            let secret = self.settings.secret.as_deref();
            let verified =
                kubeci_github::verify(secret, delivery.signature.as_deref(), &delivery.body);
            if let Err(e) = verified {
                return webhooks::signature_refusal(&e);
            }
        }
        let Some(name) = delivery.event.as_deref() else {
            return refusal(400, "no-event", "the X-GitHub-Event header is missing");
        };
        let event = match kubeci_github::parse(name, &delivery.body) {
            Ok(event) => event,
            Err(e) => return refusal(400, "invalid-payload", e.to_string()),
        };
        let specs = match &event {
            Event::PullRequest { repository, .. }
            | Event::Comment { repository, .. }
            | Event::Push { repository, .. }
            | Event::Checks { repository, .. } => self
                .backend
                .specs(Some(&decide::repository_keys(repository))),
            Event::Ping | Event::Other(_) => Vec::new(),
        };
        let jobs: Vec<JobRef> = specs
            .iter()
            .map(|(namespace, job)| JobRef { namespace, job })
            .collect();
        let id = delivery.id.as_deref().unwrap_or("");
        match self.on_event(event, &jobs, id).await {
            Ok(done) => answer(200, done),
            Err((builds, Failure::GitHub(e))) => answer(
                if e.is_retryable() { 503 } else { 502 },
                json!({"error": {"code": "github-failed", "message": e.to_string()}, "builds": builds}),
            ),
            Err((builds, Failure::Backend(message))) => answer(
                503,
                json!({"error": {"code": "backend-failed", "message": message}, "builds": builds}),
            ),
        }
    }

    /// What `event` (delivery `id`) starts (or cancels) among `jobs`, the jobs of its
    /// repository.
    async fn on_event(&self, event: Event, jobs: &[JobRef<'_>], id: &str) -> Outcome {
        match event {
            event @ Event::Checks { .. } => self.on_checks(event, jobs, id).await,
            Event::Ping => Ok(json!({"outcome": "pong"})),
            Event::Other(other)
                if other == "installation" || other == "installation_repositories" =>
            {
                // The App was installed, removed, or given other repositories: which
                // installation covers a repository is looked up again.
                self.github.forget_installations();
                Ok(json!({"outcome": "the App's installations changed: they are looked up again"}))
            }
            Event::Other(other) => {
                Ok(json!({"outcome": format!("the {other} event starts nothing")}))
            }
            Event::PullRequest {
                action,
                repository,
                pull_request,
                sender,
                label,
            } => {
                let jobs = decide::matching(jobs, &repository);
                let decision = if action == "labeled" {
                    decide::on_labeled(label.as_deref(), &pull_request, &sender, &jobs)
                } else {
                    let known = self.known(&jobs, &[&pull_request.author]).await;
                    decide::on_pull_request(&action, &pull_request, &sender, &jobs, &known)
                };
                let decision = self
                    .as_it_is_now(&repository, &pull_request, decision)
                    .await
                    .map_err(|e| (Vec::new(), Failure::GitHub(e)))?;
                self.execute(&repository, Some(pull_request.number), decision)
                    .await
            }
            Event::Comment {
                action,
                repository,
                pull_request,
                comment_id,
                author,
                body,
            } => {
                let Some(number) = pull_request else {
                    return Ok(
                        json!({"outcome": "a comment on an issue, not a pull request, starts nothing"}),
                    );
                };
                let bot = self.settings.bot.as_deref();
                if action != "created" || bot.is_some_and(|b| b.eq_ignore_ascii_case(&author)) {
                    return Ok(
                        json!({"outcome": "edited or deleted comments and kubeci's own start nothing"}),
                    );
                }
                let jobs = decide::matching(jobs, &repository);
                self.on_comment(&repository, number, comment_id, &author, &body, &jobs)
                    .await
            }
            Event::Push {
                repository,
                git_ref,
                after,
                deleted,
                sender,
            } => {
                let jobs = decide::matching(jobs, &repository);
                let decision = decide::on_push(&git_ref, &after, deleted, &sender, &jobs);
                self.execute(&repository, None, decision).await
            }
        }
    }

    /// `decision` about a delivery's pull request, checked against the pull request as
    /// GitHub shows it now when it would build: only its current head of an open pull
    /// request is built (a replayed delivery of an old head builds nothing).
    async fn as_it_is_now(
        &self,
        repository: &Repository,
        pull_request: &kubeci_github::PullRequestInfo,
        decision: Decision,
    ) -> Result<Decision, GitHubError> {
        if !decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::Build { .. }))
        {
            return Ok(decision);
        }
        let current = self
            .github
            .pull_request(&repository.full_name, pull_request.number)
            .await?;
        Ok(decide::only_current_head(decision, pull_request, &current))
    }

    async fn on_comment(
        &self,
        repository: &Repository,
        number: u64,
        comment_id: u64,
        author: &str,
        body: &str,
        jobs: &[JobRef<'_>],
    ) -> Outcome {
        if !jobs.iter().any(|j| j.job.pull_requests_enabled()) {
            return Ok(json!({"outcome": "no job builds this repository's pull requests"}));
        }
        if !decide::comment_may_act(body, jobs) {
            return Ok(json!({"outcome": "the comment asks for nothing"}));
        }
        let pr = self
            .github
            .pull_request(&repository.full_name, number)
            .await
            .map_err(|e| (Vec::new(), Failure::GitHub(e)))?;
        let known = self.known(jobs, &[&pr.author, author]).await;
        let decision = decide::on_comment(
            "created",
            &pr,
            comment_id,
            author,
            body,
            self.settings.bot.as_deref(),
            jobs,
            &known,
        );
        self.execute(repository, Some(number), decision).await
    }

    /// What the decisions about `jobs` may ask: the organisation memberships of `logins`
    /// that their policies name (asked of GitHub), and their approvals (kubeci's records).
    pub(crate) async fn known(&self, jobs: &[JobRef<'_>], logins: &[&str]) -> Known {
        let mut known = Known::default();
        for org in decide::orgs_to_ask(jobs) {
            for login in logins {
                // An organisation one job names that GitHub will not answer about (the App
                // is not installed there, a rate limit) makes its members untrusted by that
                // job, for now; it does not fail the delivery for every job of the
                // repository, which another team's `whitelisted_orgs` could otherwise do.
                match self.github.is_member(&org, login).await {
                    Ok(true) => known
                        .members
                        .push((org.to_ascii_lowercase(), login.to_ascii_lowercase())),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(
                        %login,
                        %org,
                        error = %e,
                        "cannot ask GitHub whether a user is a member of an organisation: taken as not a member"
                    ),
                }
            }
        }
        for job in jobs {
            let approvals = self.backend.approvals(job.namespace, &job.job.name);
            if !approvals.is_empty() {
                let key = (job.namespace.to_owned(), job.job.name.clone());
                known.approvals.push((key, approvals));
            }
        }
        known
    }

    /// Does what `decision` says; the JSON of what was done.
    async fn execute(
        &self,
        repository: &Repository,
        number: Option<u64>,
        decision: Decision,
    ) -> Outcome {
        let repo = &repository.full_name;
        let mut builds = Vec::new();
        let mut cancelled = Vec::new();
        let mut labelled = false;
        for action in decision.actions {
            let github = |result: Result<(), GitHubError>, builds: &Vec<Value>| {
                result.map_err(|e| (builds.clone(), Failure::GitHub(e)))
            };
            match action {
                Action::Approve(approved) => {
                    let approval = Approval {
                        pull_request: approved.pull_request,
                        head: approved.head,
                        by: approved.by,
                        at: jiff::Timestamp::now().as_second(),
                    };
                    let recorded = self
                        .backend
                        .approve(&approved.namespace, &approved.job, approval)
                        .await;
                    if let Err(e) = recorded {
                        return Err((builds, Failure::Backend(e.to_string())));
                    }
                    // The label shows people that an admin approved; it approves nothing.
                    if let (Some(n), false) = (number, labelled) {
                        github(self.github.add_label(repo, n, OK_TO_TEST).await, &builds)?;
                        labelled = true;
                    }
                }
                Action::Reply(text) => {
                    if let Some(n) = number {
                        github(self.comment_once(repo, n, &text, &text).await, &builds)?;
                    }
                }
                Action::AskForApproval {
                    waiting,
                    comment,
                    head,
                    author,
                } => {
                    if let (Some(n), true) = (number, comment) {
                        let names: Vec<&str> = waiting.iter().map(|w| w.job.as_str()).collect();
                        let text = format!(
                            "{}\n\nJobs waiting: {}.\n\n{APPROVAL_MARKER}",
                            self.settings.request_message,
                            names.join(", ")
                        );
                        github(
                            self.comment_once(repo, n, APPROVAL_MARKER, &text).await,
                            &builds,
                        )?;
                    }
                    if let (Some(n), true) = (number, self.settings.check_runs) {
                        let asked = self.ask_on_check_runs(repo, n, &head, &author, &waiting);
                        github(asked.await, &builds)?;
                    }
                }
                Action::Build {
                    namespace,
                    job,
                    key,
                    request,
                } => {
                    let request = TriggerRequest {
                        namespace,
                        name: job,
                        build: request,
                        key: Some(key),
                    };
                    match self.build(request).await {
                        Ok(build) => builds.push(build),
                        Err(message) => return Err((builds, Failure::Backend(message))),
                    }
                }
                Action::Cancel {
                    namespace,
                    job,
                    number,
                    by,
                } => match self
                    .cancel_pull_request(&namespace, &job, number, &by)
                    .await
                {
                    Ok(stopped) => cancelled.extend(stopped),
                    Err(message) => return Err((builds, Failure::Backend(message))),
                },
            }
        }
        Ok(json!({"builds": builds, "cancelled": cancelled, "reasons": decision.reasons}))
    }

    /// Starts a build (once per request key); what the answer says of it.
    async fn build(&self, request: TriggerRequest) -> Result<Value, String> {
        let (namespace, job) = (request.namespace.clone(), request.name.clone());
        match self.backend.trigger(request).await {
            Ok(triggered) => {
                if triggered.created {
                    tracing::info!(
                        namespace,
                        job,
                        build = triggered.build.number,
                        "build requested"
                    );
                }
                Ok(json!({
                "namespace": namespace,
                "job": job,
                "number": triggered.build.number,
                "created": triggered.created,
                }))
            }
            // A replay (within the days request keys are kept) of a delivery whose build
            // is gone: built before, nothing new.
            Err(TriggerError::Gone { number }) => Ok(json!({
                "namespace": namespace,
                "job": job,
                "number": number,
                "created": false,
                "outcome": "built before (this build has since been deleted): nothing new is built",
            })),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Cancels the unfinished builds of pull request `number` of a job; those it cancelled.
    async fn cancel_pull_request(
        &self,
        namespace: &str,
        job: &str,
        number: u64,
        by: &str,
    ) -> Result<Vec<Value>, String> {
        let unfinished = self
            .backend
            .builds(namespace, job)
            .unwrap_or_default()
            .into_iter()
            .filter(|b| b.pull_request == Some(number))
            .filter(|b| !b.state.is_finished());
        let mut cancelled = Vec::new();
        for build in unfinished {
            match self.backend.cancel(namespace, job, build.number, by).await {
                Ok(_) => cancelled
                    .push(json!({"namespace": namespace, "job": job, "number": build.number})),
                Err(kubeci_engine::api::CancelError::Finished { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(cancelled)
    }

    /// Comments `text` on `number` unless a comment containing `marker` is there already:
    /// a redelivery, or a push after the first request, does not comment again. An
    /// outsider can ask for this as often as they reopen their pull request, so it reads
    /// at most [`bounds::MAX_COMMENT_PAGES`] of its comments, and not again once the
    /// comment is known to be there.
    async fn comment_once(
        &self,
        repo: &str,
        number: u64,
        marker: &str,
        text: &str,
    ) -> Result<(), GitHubError> {
        if self.asked.contains(repo, number, marker) {
            return Ok(());
        }
        let existing = self
            .github
            .comments(repo, number, bounds::MAX_COMMENT_PAGES)
            .await?;
        if !existing.iter().any(|c| c.contains(marker)) {
            self.github.comment(repo, number, text).await?;
        }
        self.asked.insert(repo, number, marker);
        Ok(())
    }
}

/// What a decision may ask, gathered before it: memberships asked of GitHub (org,
/// login; lowercased) and each job's approvals.
#[derive(Default)]
pub(crate) struct Known {
    members: Vec<(String, String)>,
    approvals: Vec<((String, String), Vec<Approval>)>,
}

impl decide::Facts for Known {
    fn is_member(&self, org: &str, login: &str) -> bool {
        self.members
            .iter()
            .any(|(o, l)| o.eq_ignore_ascii_case(org) && l.eq_ignore_ascii_case(login))
    }

    fn approver(&self, namespace: &str, job: &str, pull_request: u64, head: &str) -> Option<&str> {
        let (_, approvals) = self
            .approvals
            .iter()
            .find(|((n, j), _)| n == namespace && j == job)?;
        let now = jiff::Timestamp::now().as_second();
        kubeci_engine::approval::approver(approvals, pull_request, head, now)
    }
}
