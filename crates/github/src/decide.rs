//! What a GitHub event asks of kubeci, decided over data: which jobs it concerns, which
//! builds to start (with the idempotency key that makes a redelivery harmless), which to
//! cancel, whether to ask an admin or record an approval — each with its reason.

use kubeci_build::{BuildRequest, PullRequest, Trigger};
use kubeci_spec::giturl::GitUrl;
use kubeci_spec::Job;

use crate::event::{PullRequestInfo, Repository};
use crate::trust::{commands, skips_ci, Command, Trust, TrustPolicy};

/// A declared job, as the decisions need it.
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    pub namespace: &'a str,
    pub job: &'a Job,
}

/// What the decisions need to know beyond the event: organisation membership, asked of
/// GitHub beforehand (see [`orgs_to_ask`]), and admins' approvals, kept by kubeci with
/// each job's records.
pub trait Facts {
    fn is_member(&self, org: &str, login: &str) -> bool;
    /// Who approved `head` of pull request `pull_request` for job `namespace/job`.
    fn approver(
        &self,
        _namespace: &str,
        _job: &str,
        _pull_request: u64,
        _head: &str,
    ) -> Option<&str> {
        None
    }
}

/// Membership alone: no approval recorded.
impl<F: Fn(&str, &str) -> bool> Facts for F {
    fn is_member(&self, org: &str, login: &str) -> bool {
        self(org, login)
    }
}

/// One thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a build of `job`; `key` makes a repeated request (a redelivery, the resync)
    /// return the same build.
    Build {
        namespace: String,
        job: String,
        key: String,
        request: BuildRequest,
    },
    /// Cancel `job`'s unfinished builds of pull request `number`.
    Cancel {
        namespace: String,
        job: String,
        number: u64,
        by: String,
    },
    /// Ask an admin of these jobs to approve the pull request: a comment (once, when it
    /// is opened), and — where builds are reported as check runs — a check run on the
    /// head waiting for approval, with an "Approve and build" button.
    AskForApproval {
        waiting: Vec<Waiting>,
        comment: bool,
        /// The head that waits, and the pull request's author.
        head: String,
        author: String,
    },
    /// Record an admin's approval of one head for one job (and show it with the
    /// `ok-to-test` label).
    Approve(Approved),
    /// Reply on the pull request.
    Reply(String),
}

/// An admin's approval of `head` of pull request `pull_request`, for job `namespace/job`
/// alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    pub namespace: String,
    pub job: String,
    pub pull_request: u64,
    pub head: String,
    pub by: String,
}

/// A job waiting for an admin's approval of a pull request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub namespace: String,
    pub job: String,
    /// Its check run's (and commit status's) name.
    pub check_name: String,
    /// Who may approve.
    pub admins: Vec<String>,
}

/// The name of `job`'s check run and commit status among `jobs`, the jobs of its
/// repository (`kubeci_spec::checkname`: its `ghprb.context`, or `kubeci/<job>`, with the
/// namespace where several namespaces build the repository).
pub fn check_name(job: &JobRef, jobs: &[JobRef]) -> String {
    let pairs: Vec<(&str, &Job)> = jobs.iter().map(|j| (j.namespace, j.job)).collect();
    // A job not among `jobs` (none of the decisions asks for one) gets its long default,
    // which no other job can have.
    kubeci_spec::checkname::check_name_among(job.namespace, &job.job.name, &pairs)
        .unwrap_or_else(|| format!("kubeci/{}/{}", job.namespace, job.job.name))
}

/// The actions an event leads to, and why each job did or did not act.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub actions: Vec<Action>,
    /// `namespace/job: reason`, or the event's reason when no job is concerned.
    pub reasons: Vec<String>,
}

impl Decision {
    fn because(reason: impl Into<String>) -> Decision {
        Decision {
            actions: Vec::new(),
            reasons: vec![reason.into()],
        }
    }

    pub(crate) fn note(&mut self, job: &JobRef, reason: impl AsRef<str>) {
        self.reasons.push(format!(
            "{}/{}: {}",
            job.namespace,
            job.job.name,
            reason.as_ref()
        ));
    }

    fn push_once(&mut self, action: Action) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    /// The builds it starts.
    pub fn builds(&self) -> impl Iterator<Item = &Action> {
        self.actions
            .iter()
            .filter(|a| matches!(a, Action::Build { .. }))
    }
}

fn repository_key(url: &str) -> Option<String> {
    GitUrl::parse(url).ok()?.repository_key()
}

/// The keys (`host/owner/name`, `GitUrl::repository_key`) of the URLs `repository` is
/// known by.
pub fn repository_keys(repository: &Repository) -> Vec<String> {
    let mut keys: Vec<String> = repository
        .urls
        .iter()
        .filter_map(|u| repository_key(u))
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// The jobs whose `git.url` names `repository` (scp-like, ssh:// or https://, with or
/// without `.git`, any host).
pub fn matching<'a>(jobs: &[JobRef<'a>], repository: &Repository) -> Vec<JobRef<'a>> {
    let keys = repository_keys(repository);
    jobs.iter()
        .filter(|j| repository_key(&j.job.git.url).is_some_and(|k| keys.contains(&k)))
        .copied()
        .collect()
}

pub(crate) fn policy(job: &Job) -> TrustPolicy {
    let ghprb = job.ghprb.clone().unwrap_or_default();
    let list = |l: &kubeci_spec::model::NameList| l.iter().map(str::to_owned).collect();
    TrustPolicy {
        admins: list(&ghprb.admin_users),
        whitelisted_users: list(&ghprb.whitelisted_users),
        whitelisted_orgs: list(&ghprb.whitelisted_orgs),
    }
}

/// The organisations whose membership of these jobs' authors matters.
pub fn orgs_to_ask(jobs: &[JobRef]) -> Vec<String> {
    let mut orgs: Vec<String> = jobs
        .iter()
        .flat_map(|j| policy(j.job).whitelisted_orgs)
        .collect();
    orgs.sort();
    orgs.dedup();
    orgs
}

use crate::pattern::phrase_matches;

fn skipped(job: &Job, pr: &PullRequestInfo) -> bool {
    match job.ghprb.as_ref().and_then(|g| g.skip_phrase.as_deref()) {
        Some(phrase) => phrase_matches(phrase, &pr.title) || phrase_matches(phrase, &pr.body),
        None => skips_ci(&pr.title, &pr.body),
    }
}

fn trigger_phrase(job: &Job) -> Option<&str> {
    job.ghprb.as_ref()?.trigger_phrase.as_deref()
}

/// The trust of `pr` for `job`: its author's, or an approval of its head for this job.
pub(crate) fn trust(job: &JobRef, pr: &PullRequestInfo, facts: &dyn Facts) -> Trust {
    let approved_by = facts.approver(job.namespace, &job.job.name, pr.number, &pr.head_sha);
    policy(job.job).pull_request(&pr.author, approved_by, |org| {
        facts.is_member(org, &pr.author)
    })
}

/// `by`, an admin of `job`, approves the head of `pr` for `job` alone: the approval is
/// recorded and the head built (the key of the head's build, so the webhook, the approval
/// and the resync start one build).
pub(crate) fn approve(decision: &mut Decision, job: &JobRef, pr: &PullRequestInfo, by: &str) {
    decision.actions.push(Action::Approve(Approved {
        namespace: job.namespace.to_owned(),
        job: job.job.name.clone(),
        pull_request: pr.number,
        head: pr.head_sha.clone(),
        by: by.to_owned(),
    }));
    decision
        .actions
        .push(pr_build(job, pr, Trigger::Comment, head_key(pr), by));
    decision.note(
        job,
        format!("approved by admin {by} for {}", short(&pr.head_sha)),
    );
}

/// The build of `pr`'s head for `job`.
pub(crate) fn pr_build(
    job: &JobRef,
    pr: &PullRequestInfo,
    trigger: Trigger,
    key: String,
    by: &str,
) -> Action {
    Action::Build {
        namespace: job.namespace.to_owned(),
        job: job.job.name.clone(),
        key,
        request: BuildRequest {
            number: 0,
            trigger,
            commit: Some(pr.head_sha.clone()),
            git_ref: None,
            branch: None,
            pull_request: Some(PullRequest {
                number: pr.number,
                author: Some(pr.author.clone()),
                source_branch: Some(pr.head_ref.clone()),
                target_branch: Some(pr.base_ref.clone()),
            }),
            requested_by: Some(format!("github:{by}")),
        },
    }
}

/// The key of the build of `pr`'s head: the webhook, an approval and the resync all ask
/// for this one build.
pub fn head_key(pr: &PullRequestInfo) -> String {
    format!("pr:{}:{}", pr.number, pr.head_sha)
}

/// `decision` about pull request `event` (as a delivery described it), kept only as far
/// as `current` (the pull request as GitHub shows it now) allows: a head is built only
/// while it is the pull request's current head and the pull request is open, so a
/// delivery replayed after it moved on or closed builds nothing.
pub fn only_current_head(
    decision: Decision,
    event: &PullRequestInfo,
    current: &PullRequestInfo,
) -> Decision {
    let why = if !current.open {
        format!("pull request #{} is closed: nothing is built", event.number)
    } else if current.head_sha != event.head_sha {
        format!(
            "{} is no longer the head of pull request #{} (it is {}): nothing is built",
            short(&event.head_sha),
            event.number,
            short(&current.head_sha)
        )
    } else {
        return decision;
    };
    let builds = decision
        .actions
        .iter()
        .any(|a| matches!(a, Action::Build { .. }));
    if !builds {
        return decision;
    }
    Decision::because(why)
}

/// A `pull_request` event with `action`, from `sender`, to the matching `jobs`.
pub fn on_pull_request(
    action: &str,
    pr: &PullRequestInfo,
    sender: &str,
    jobs: &[JobRef],
    facts: &dyn Facts,
) -> Decision {
    let mut decision = Decision::default();
    let enabled: Vec<&JobRef> = jobs
        .iter()
        .filter(|j| j.job.pull_requests_enabled())
        .collect();
    if enabled.is_empty() {
        return Decision::because("no job builds this repository's pull requests");
    }
    match action {
        "opened" | "reopened" | "synchronize" | "ready_for_review" => {}
        "closed" => {
            for job in enabled {
                decision.actions.push(Action::Cancel {
                    namespace: job.namespace.to_owned(),
                    job: job.job.name.clone(),
                    number: pr.number,
                    by: format!("github:{sender} (pull request closed)"),
                });
                decision.note(job, "pull request closed: its builds are cancelled");
            }
            return decision;
        }
        other => return Decision::because(format!("pull request action `{other}` starts nothing")),
    }
    let mut waiting = Vec::new();
    for job in enabled {
        if pr.draft {
            decision.note(job, "draft pull request: waits for ready for review");
        } else if skipped(job.job, pr) {
            decision.note(job, "the pull request asks to skip CI");
        } else if trigger_phrase(job.job).is_some() {
            decision.note(job, "builds on its trigger phrase only");
        } else {
            let trust = trust(job, pr, facts);
            if trust.is_trusted() {
                decision.actions.push(pr_build(
                    job,
                    pr,
                    Trigger::PullRequest,
                    head_key(pr),
                    sender,
                ));
                decision.note(job, format!("builds {} ({trust:?})", short(&pr.head_sha)));
            } else {
                waiting.push(Waiting {
                    namespace: job.namespace.to_owned(),
                    job: job.job.name.clone(),
                    check_name: check_name(job, jobs),
                    admins: policy(job.job).admins,
                });
                decision.note(
                    job,
                    format!("{} is not trusted: waits for an admin", pr.author),
                );
            }
        }
    }
    // One comment when the pull request is opened, not one per push; a check run
    // waiting for approval on every head.
    if !waiting.is_empty() {
        let comment = matches!(action, "opened" | "reopened" | "ready_for_review");
        decision.actions.push(Action::AskForApproval {
            waiting,
            comment,
            head: pr.head_sha.clone(),
            author: pr.author.clone(),
        });
    }
    decision
}

/// A `labeled` delivery: `sender` added `label` to `pr`. The `ok-to-test` label approves
/// the pull request's head for the jobs `sender` is an admin of, as their comment would,
/// and for no other job: a label someone else added — kubeci's own, added for another
/// job's admin, or anyone's — approves nothing.
pub fn on_labeled(
    label: Option<&str>,
    pr: &PullRequestInfo,
    sender: &str,
    jobs: &[JobRef],
) -> Decision {
    if label != Some(crate::trust::OK_TO_TEST) {
        return Decision::because("a label other than ok-to-test starts nothing");
    }
    let mut decision = Decision::default();
    for job in jobs.iter().filter(|j| j.job.pull_requests_enabled()) {
        if pr.draft {
            decision.note(job, "draft pull request: waits for ready for review");
        } else if policy(job.job).is_admin(sender) {
            approve(&mut decision, job, pr, sender);
        } else {
            decision.note(
                job,
                format!("{sender} is not an admin of this job: the label approves nothing here"),
            );
        }
    }
    if decision.reasons.is_empty() {
        return Decision::because("no job builds this repository's pull requests");
    }
    decision
}

pub(crate) fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// Whether a comment may ask anything of `jobs` (a command, or a job's trigger phrase):
/// others need not fetch the pull request from GitHub.
pub fn comment_may_act(body: &str, jobs: &[JobRef]) -> bool {
    !commands(body).is_empty()
        || jobs
            .iter()
            .filter_map(|j| trigger_phrase(j.job))
            .any(|phrase| phrase_matches(phrase, body))
}

/// A comment `body` by `author` (id `comment_id`) on pull request `pr`; `bot` is kubeci's
/// own login. Only `created` comments act; edited and deleted ones never do.
#[allow(clippy::too_many_arguments)]
pub fn on_comment(
    action: &str,
    pr: &PullRequestInfo,
    comment_id: u64,
    author: &str,
    body: &str,
    bot: Option<&str>,
    jobs: &[JobRef],
    facts: &dyn Facts,
) -> Decision {
    if action != "created" {
        return Decision::because(format!("a comment {action} starts nothing"));
    }
    if bot.is_some_and(|b| b.eq_ignore_ascii_case(author)) {
        return Decision::because("kubeci's own comment");
    }
    let found = commands(body);
    let mut decision = Decision::default();
    for job in jobs.iter().filter(|j| j.job.pull_requests_enabled()) {
        let policy = policy(job.job);
        let admin = policy.is_admin(author);
        let commenter_trusted = policy
            .pull_request(author, None, |org| facts.is_member(org, author))
            .is_trusted();
        let pr_trust = trust(job, pr, facts);
        let approves = found
            .iter()
            .any(|c| matches!(c, Command::OkToTest | Command::AddToWhitelist));
        let by_phrase = match trigger_phrase(job.job) {
            Some(phrase) => phrase_matches(phrase, body),
            None => found.contains(&Command::TestAll),
        };
        let named = found.contains(&Command::Test(job.job.name.to_ascii_lowercase()));
        if pr.draft {
            decision.note(job, "draft pull request: waits for ready for review");
            continue;
        }
        if approves {
            if admin {
                if found.contains(&Command::AddToWhitelist) {
                    decision.push_once(Action::Reply(format!(
                        "Approved. kubeci keeps no list of its own: to trust @{} from now on, add them to `ghprb.whitelisted_users` of the job's chart.",
                        pr.author
                    )));
                }
                approve(&mut decision, job, pr, author);
                continue;
            }
            decision.note(
                job,
                format!("{author} is not an admin of this job: approval ignored"),
            );
        }
        if by_phrase || named {
            let may = commenter_trusted
                || (pr_trust.is_trusted() && author.eq_ignore_ascii_case(&pr.author));
            if may {
                decision.actions.push(pr_build(
                    job,
                    pr,
                    Trigger::Comment,
                    format!("comment:{comment_id}"),
                    author,
                ));
                decision.note(job, format!("asked by {author}"));
            } else {
                decision.note(job, format!("{author} may not trigger builds"));
            }
        } else if !approves {
            decision.note(job, "the comment asks for nothing");
        }
    }
    if decision.reasons.is_empty() {
        return Decision::because("no job builds this repository's pull requests");
    }
    decision
}

/// Whether `job` builds pushes to `branch` (its `triggers.push.branches`).
pub(crate) fn builds_pushes_to(job: &Job, branch: &str) -> bool {
    job.triggers
        .as_ref()
        .and_then(|t| t.push.as_ref())
        .is_some_and(|p| {
            p.branches
                .iter()
                .any(|pattern| branch_matches(pattern, branch))
        })
}

pub use crate::pattern::branch_matches;

/// A `push` of `after` to `git_ref`, to the matching `jobs`.
pub fn on_push(
    git_ref: &str,
    after: &str,
    deleted: bool,
    sender: &str,
    jobs: &[JobRef],
) -> Decision {
    if deleted {
        return Decision::because("a deleted ref starts nothing");
    }
    let Some(branch) = git_ref.strip_prefix("refs/heads/") else {
        return Decision::because(format!("{git_ref} is not a branch"));
    };
    let mut decision = Decision::default();
    for job in jobs {
        if builds_pushes_to(job.job, branch) {
            decision.actions.push(Action::Build {
                namespace: job.namespace.to_owned(),
                job: job.job.name.clone(),
                key: format!("push:{git_ref}:{after}"),
                request: BuildRequest {
                    number: 0,
                    trigger: Trigger::Push,
                    commit: Some(after.to_owned()),
                    git_ref: None,
                    branch: Some(branch.to_owned()),
                    pull_request: None,
                    requested_by: Some(format!("github:{sender}")),
                },
            });
            decision.note(job, format!("builds {branch} at {}", short(after)));
        } else {
            decision.note(job, format!("does not build pushes to {branch}"));
        }
    }
    if decision.reasons.is_empty() {
        return Decision::because("no job builds this repository");
    }
    decision
}

/// The resync's decision for one open pull request: build its head for each job that
/// would have built it on the webhook and has no status on it yet (`has_status(job)`).
pub fn resync(
    pr: &PullRequestInfo,
    jobs: &[JobRef],
    facts: &dyn Facts,
    has_status: impl Fn(&JobRef) -> bool,
) -> Decision {
    let pending: Vec<JobRef> = jobs.iter().filter(|j| !has_status(j)).copied().collect();
    let mut decision = on_pull_request("synchronize", pr, "resync", &pending, facts);
    decision
        .actions
        .retain(|a| matches!(a, Action::Build { .. }));
    decision
}
