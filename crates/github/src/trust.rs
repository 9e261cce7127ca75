//! Who may have their pull requests built, and what a comment asks for: pure decisions that
//! return their reason (as Prow's `trigger` does), so a log line or a PR comment can say why.

/// A job's `ghprb` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    pub admins: Vec<String>,
    pub whitelisted_users: Vec<String>,
    pub whitelisted_orgs: Vec<String>,
}

/// Why an author is trusted, or that they are not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Admin,
    WhitelistedUser,
    /// A member of this whitelisted organisation.
    OrgMember(String),
    /// An admin of the job approved this head of the pull request (named here).
    Approved(String),
    /// None of the above: the pull request waits for an admin.
    Untrusted,
}

impl Trust {
    pub fn is_trusted(&self) -> bool {
        *self != Trust::Untrusted
    }
}

/// The label kubeci adds when an admin approves a pull request, for people to see, and
/// that an admin may add instead of commenting. It approves only the jobs whose admin
/// added it, for the head it was added on: the approval itself is kept by kubeci, with
/// each job's records.
pub const OK_TO_TEST: &str = "ok-to-test";

fn listed(list: &[String], login: &str) -> bool {
    list.iter().any(|l| l.eq_ignore_ascii_case(login))
}

impl TrustPolicy {
    /// Whether `login` may trigger builds and approve others' pull requests.
    pub fn is_admin(&self, login: &str) -> bool {
        listed(&self.admins, login)
    }

    /// The trust of a pull request by `author` whose head `approved_by` someone (kubeci's
    /// record of an approval for this job and head). An approval counts only while its
    /// giver is an admin of the job. `member_of(org)` answers organisation membership
    /// (asked of GitHub and cached by the caller); it is only asked when the lists do not
    /// decide.
    pub fn pull_request(
        &self,
        author: &str,
        approved_by: Option<&str>,
        mut member_of: impl FnMut(&str) -> bool,
    ) -> Trust {
        if self.is_admin(author) {
            return Trust::Admin;
        }
        if listed(&self.whitelisted_users, author) {
            return Trust::WhitelistedUser;
        }
        if let Some(org) = self.whitelisted_orgs.iter().find(|org| member_of(org)) {
            return Trust::OrgMember(org.clone());
        }
        if let Some(admin) = approved_by.filter(|by| self.is_admin(by)) {
            return Trust::Approved(admin.to_owned());
        }
        Trust::Untrusted
    }
}

/// What a pull request comment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `ok to test`, `/ok-to-test`: approve this pull request (admins).
    OkToTest,
    /// `add to whitelist`: approve and trust its author from now on (admins).
    AddToWhitelist,
    /// `test this please`, `retest this please`, `/retest`, `/test all`: build every job.
    TestAll,
    /// `/test <job>`: build that job.
    Test(String),
}

/// The commands in a comment, one per line, case-insensitive, as ghprb's default phrases
/// and Prow's slash commands. Quoted lines (`>`) and code blocks are someone else's words
/// and ask nothing. An approval (`ok to test`, `add to whitelist`) is a line of its own —
/// at most followed by `please` and punctuation — so "this is not ok to test" approves
/// nothing.
pub fn commands(body: &str) -> Vec<Command> {
    let mut found = Vec::new();
    let mut in_code_block = false;
    for line in body.lines() {
        let line = line.trim();
        if line.starts_with("```") || line.starts_with("~~~") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block || line.starts_with('>') {
            continue;
        }
        let line = line.to_ascii_lowercase();
        let words: Vec<&str> = line.split_whitespace().collect();
        let command = match words.as_slice() {
            ["/ok-to-test"] => Command::OkToTest,
            ["/retest"] | ["/test", "all"] => Command::TestAll,
            ["/test", job] => Command::Test((*job).to_owned()),
            _ if is_phrase(&words, &["ok", "to", "test"]) => Command::OkToTest,
            _ if is_phrase(&words, &["add", "to", "whitelist"]) => Command::AddToWhitelist,
            _ if line.contains("retest this please") || line.contains("test this please") => {
                Command::TestAll
            }
            _ => continue,
        };
        if !found.contains(&command) {
            found.push(command);
        }
    }
    found
}

/// Whether `words` (a line) are `phrase` alone, perhaps followed by `please`, with
/// punctuation around words ignored.
fn is_phrase(words: &[&str], phrase: &[&str]) -> bool {
    let bare: Vec<&str> = words
        .iter()
        .map(|w| w.trim_matches(|c: char| c.is_ascii_punctuation()))
        .filter(|w| !w.is_empty())
        .collect();
    matches!(bare.strip_prefix(phrase), Some([] | ["please"]))
}

/// Whether a pull request's title or body asks not to be built (`[skip ci]`, any case).
pub fn skips_ci(title: &str, body: &str) -> bool {
    let wanted = "[skip ci]";
    [title, body]
        .iter()
        .any(|text| text.to_ascii_lowercase().contains(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TrustPolicy {
        TrustPolicy {
            admins: vec!["Alice".into()],
            whitelisted_users: vec!["bob".into()],
            whitelisted_orgs: vec!["acme".into()],
        }
    }

    #[test]
    fn trust_is_decided_with_its_reason() {
        let policy = policy();
        let no_org = |_: &str| false;
        assert_eq!(
            policy.pull_request("alice", None, no_org),
            Trust::Admin,
            "logins ignore case"
        );
        assert_eq!(
            policy.pull_request("bob", None, no_org),
            Trust::WhitelistedUser
        );
        assert_eq!(
            policy.pull_request("carol", None, |org| org == "acme"),
            Trust::OrgMember("acme".into())
        );
        assert_eq!(
            policy.pull_request("mallory", Some("alice"), no_org),
            Trust::Approved("alice".into())
        );
        assert_eq!(
            policy.pull_request("mallory", Some("mallory"), no_org),
            Trust::Untrusted,
            "an approval counts only while its giver is an admin of the job"
        );
        let untrusted = policy.pull_request("mallory", None, no_org);
        assert_eq!(untrusted, Trust::Untrusted);
        assert!(!untrusted.is_trusted());
        let mut asked = 0;
        policy.pull_request("bob", None, |_| {
            asked += 1;
            true
        });
        assert_eq!(asked, 0, "GitHub is not asked when the lists decide");
    }

    #[test]
    fn ghprb_phrases_and_slash_commands() {
        assert_eq!(commands("OK to test"), [Command::OkToTest]);
        assert_eq!(commands("/ok-to-test"), [Command::OkToTest]);
        assert_eq!(
            commands("Add to whitelist please"),
            [Command::AddToWhitelist]
        );
        assert_eq!(commands("Retest this please"), [Command::TestAll]);
        assert_eq!(commands("test this please"), [Command::TestAll]);
        assert_eq!(commands("/retest"), [Command::TestAll]);
        assert_eq!(commands("/test all"), [Command::TestAll]);
        assert_eq!(
            commands("/test Unit-Tests"),
            [Command::Test("unit-tests".into())]
        );
        assert_eq!(
            commands("looks good\n/ok-to-test\n/test lint\n/ok-to-test"),
            [Command::OkToTest, Command::Test("lint".into())]
        );
        assert_eq!(commands("I think this is not ok to merge"), []);
        assert_eq!(commands("OK to test!"), [Command::OkToTest]);
        assert_eq!(commands("ok to test, please."), [Command::OkToTest]);
        // A refusal, a question, a quote and a code block approve nothing (the review's
        // finding: "not ok to test" and a quote-reply of the author's question approved).
        assert_eq!(
            commands("This is NOT ok to test: it touches the deploy credentials."),
            []
        );
        assert_eq!(commands("can an admin say ok to test?"), []);
        assert_eq!(
            commands("> can an admin say ok to test?\n> ok to test\n\nNo."),
            []
        );
        assert_eq!(commands("```\nok to test\n/retest\n```"), []);
        assert_eq!(commands("please don't add to whitelist"), []);
        assert_eq!(
            commands("please /retest later"),
            [],
            "a slash command is its own line"
        );
    }

    #[test]
    fn skip_ci_in_title_or_body() {
        assert!(skips_ci("Fix typo [skip ci]", ""));
        assert!(skips_ci("Docs", "Only docs.\n[SKIP CI]"));
        assert!(!skips_ci("Fix CI", "skip the flaky test"));
    }
}
