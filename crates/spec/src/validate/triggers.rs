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
