//! The checks of a job's triggers: pull requests (ghprb), pushes, cron.

use crate::cron::CronSchedule;
use crate::diagnostic::{FieldPath, Finding};
use crate::giturl::GitUrl;
use crate::model::{Ghprb, Job, NameList};
use crate::names;

pub(super) fn check_triggers(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(triggers) = &job.triggers {
        let path = root.key("triggers");
        if let Some(cron) = &triggers.cron {
            check_cron(job, cron, &path, out);
        }
        if let Some(push) = &triggers.push {
            check_push(&push.branches, &path, out);
        }
    }
    if let Some(ghprb) = &job.ghprb {
        check_ghprb(job, ghprb, &root.key("ghprb"), out);
    }
    check_webhook_repository(job, root, out);
}

/// A job GitHub's events start (`ghprb.enabled`, `triggers.push`) names its repository
/// one way: a remote URL whose path is not plain `owner/name` segments (`%`-escapes, `.`
/// or `..` segments, other characters) names no repository, so no webhook would match it
/// and nothing would be reported.
fn check_webhook_repository(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    let by_events =
        job.pull_requests_enabled() || job.triggers.as_ref().is_some_and(|t| t.push.is_some());
    let Ok(url) = GitUrl::parse(&job.git.url) else {
        return;
    };
    let GitUrl::Remote { path, .. } = &url else {
        return;
    };
    if by_events && url.repository_key().is_none() {
        out.push(
            Finding::error(
                "git-url-not-a-repository",
                root.key("git").key("url"),
                format!("the path `{}` of this URL is not a repository's `owner/name`: GitHub's events and reports could never match it", path.escape_debug()),
            )
            .help("write the repository's path as GitHub shows it, without `%`-escapes, `.` or `..` segments, e.g. `https://github.com/org/repo.git`"),
        );
    }
}

/// `triggers.cron`: a schedule that parses, and a warning for one that runs every minute.
fn check_cron(job: &Job, cron: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    match CronSchedule::parse(cron, &job.name) {
        Ok(schedule) => {
            if schedule.lines.iter().any(|l| l.every_minute) {
                out.push(
                    Finding::warning(
                        "cron-every-minute",
                        path.key("cron"),
                        "the schedule starts a build every minute",
                    )
                    .help(
                        "if that is not meant, use `H` for the minute, e.g. `H * * * *` for hourly",
                    ),
                );
            }
        }
        Err(err) => {
            let line = if cron.lines().count() > 1 {
                format!(" (line {} of the schedule)", err.line)
            } else {
                String::new()
            };
            out.push(
                Finding::error(
                    "invalid-cron",
                    path.key("cron"),
                    format!("invalid cron schedule{line}: {}", err.message),
                )
                .help(err.help),
            );
        }
    }
}

/// `triggers.push.branches`: at least one, each a branch name with wildcards.
fn check_push(branches: &NameList, path: &FieldPath, out: &mut Vec<Finding>) {
    if branches.is_empty() {
        out.push(
            Finding::error(
                "empty-branches",
                path.key("push").key("branches"),
                "no branches are listed, so no push would ever build",
            )
            .help("list branches or patterns, e.g. `branches: [main, \"release/*\"]`"),
        );
    }
    for pattern in branches.iter() {
        let literal = pattern.replace("**", "x").replace('*', "x");
        if let Err(why) = names::check_branch_name(&literal) {
            out.push(
                Finding::error(
                    "invalid-branch",
                    path.key("push").key("branches"),
                    format!("branch pattern `{pattern}` is not valid: {why}"),
                )
                .help("use branch names with `*` wildcards, e.g. `release/*`"),
            );
        }
    }
}

/// The largest compiled size of a phrase (`trigger_phrase`, `skip_phrase`), in bytes of
/// regex-lite's program. Phrases are searched for in every comment (up to 64 KiB of an
/// outsider's text) on the server's async workers, in time that grows with program size ×
/// text: regex-lite's default, 10 MiB, let one phrase take seconds per comment
/// (issue 27 finding 2). Phrases as written take 0.5–1.5 KiB (`.*test\W+this\W+please.*`
/// 1.2 KiB); at 4 KiB the slowest phrase measured took 56 ms against a 64 KiB comment.
pub const PHRASE_SIZE_LIMIT: usize = 4 << 10;

/// A phrase as kubeci matches it: case-insensitive, within [`PHRASE_SIZE_LIMIT`].
pub fn phrase_regex(phrase: &str) -> Result<regex_lite::Regex, regex_lite::Error> {
    regex_lite::RegexBuilder::new(phrase)
        .case_insensitive(true)
        .size_limit(PHRASE_SIZE_LIMIT)
        .build()
}

/// `ghprb`: valid logins, phrases that compile, a context, and warnings for a pull request
/// trigger nobody can approve or that cannot work.
fn check_ghprb(job: &Job, ghprb: &Ghprb, path: &FieldPath, out: &mut Vec<Finding>) {
    for (field, list) in [
        ("admin_users", &ghprb.admin_users),
        ("whitelisted_users", &ghprb.whitelisted_users),
        ("whitelisted_orgs", &ghprb.whitelisted_orgs),
    ] {
        for login in list.iter() {
            if let Err(why) = names::check_github_login(login) {
                out.push(
                    Finding::error(
                        "invalid-github-login",
                        path.key(field),
                        format!("`{login}` is not a GitHub login: {why}"),
                    )
                    .help("separate names with spaces or commas, e.g. `alice, bob`"),
                );
            }
        }
    }
    for (field, phrase) in [
        ("trigger_phrase", &ghprb.trigger_phrase),
        ("skip_phrase", &ghprb.skip_phrase),
    ] {
        if let Some(phrase) = phrase {
            if phrase.trim().is_empty() {
                out.push(
                    Finding::error(
                        "invalid-phrase",
                        path.key(field),
                        format!("`{field}` is empty"),
                    )
                    .help("remove it or write the phrase"),
                );
            } else if let Err(err) = regex_lite::Regex::new(phrase) {
                out.push(
                    Finding::error(
                        "invalid-phrase",
                        path.key(field),
                        format!("`{field}` is not a valid regular expression: {err}"),
                    )
                    .help("escape special characters with `\\`, e.g. `\\[build\\]`"),
                );
            } else if phrase_regex(phrase).is_err() {
                out.push(
                    Finding::error(
                        "invalid-phrase",
                        path.key(field),
                        format!("`{field}` is too large: compiled, it takes more than {} KiB, and each comment would take long to search", PHRASE_SIZE_LIMIT / 1024),
                    )
                    .help("write the phrase itself (`test this please`) rather than long counted repetitions such as `.{0,500}`"),
                );
            }
        }
    }
    if let Some(context) = &ghprb.context {
        if context.trim().is_empty() {
            out.push(
                Finding::error("invalid-context", path.key("context"), "`context` is empty")
                    .help("remove it to use `kubeci/<job name>`"),
            );
        }
    }
    if ghprb.enabled.0 {
        if ghprb.admin_users.is_empty() {
            out.push(
                Finding::warning("no-admins", path.key("enabled"), "pull requests are enabled but `admin_users` is empty: nobody can approve a pull request from an untrusted author")
                    .help("list the people who may approve, e.g. `admin_users: alice`"),
            );
        }
        if let Ok(GitUrl::Local { .. }) = GitUrl::parse(&job.git.url) {
            out.push(
                Finding::warning(
                    "ghprb-local-repo",
                    path.key("enabled"),
                    "pull requests cannot come from a local repository",
                )
                .help("use the GitHub URL of the repository"),
            );
        }
    }
}
