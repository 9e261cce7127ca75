//! What kubeci keeps of a delivery's headers in its metrics and its log. Anyone can send a
//! delivery, signed or not, with any headers: 20,000 unsigned deliveries with distinct
//! 4,000-character `X-GitHub-Event` headers grew kubeci to 98 MB, `/metrics` to 81 MB and
//! the log to 82 MB (issue 27 finding 3). Labels come from a fixed set and logged values
//! are cut short and printable.

/// The events GitHub sends webhooks for (docs.github.com, "Webhook events and payloads"),
/// sorted: the values an `event` label may take besides [`OTHER_EVENT`] and
/// [`NO_EVENT`].
pub const KNOWN_EVENTS: &[&str] = &[
    "branch_protection_configuration",
    "branch_protection_rule",
    "check_run",
    "check_suite",
    "code_scanning_alert",
    "commit_comment",
    "create",
    "custom_property",
    "custom_property_values",
    "delete",
    "dependabot_alert",
    "deploy_key",
    "deployment",
    "deployment_protection_rule",
    "deployment_review",
    "deployment_status",
    "discussion",
    "discussion_comment",
    "fork",
    "github_app_authorization",
    "gollum",
    "installation",
    "installation_repositories",
    "installation_target",
    "issue_comment",
    "issues",
    "label",
    "marketplace_purchase",
    "member",
    "membership",
    "merge_group",
    "meta",
    "milestone",
    "org_block",
    "organization",
    "package",
    "page_build",
    "personal_access_token_request",
    "ping",
    "project",
    "project_card",
    "project_column",
    "projects_v2",
    "projects_v2_item",
    "projects_v2_status_update",
    "public",
    "pull_request",
    "pull_request_review",
    "pull_request_review_comment",
    "pull_request_review_thread",
    "push",
    "registry_package",
    "release",
    "repository",
    "repository_advisory",
    "repository_dispatch",
    "repository_import",
    "repository_ruleset",
    "repository_vulnerability_alert",
    "secret_scanning_alert",
    "secret_scanning_alert_location",
    "secret_scanning_scan",
    "security_advisory",
    "security_and_analysis",
    "sponsorship",
    "star",
    "status",
    "sub_issues",
    "team",
    "team_add",
    "watch",
    "workflow_dispatch",
    "workflow_job",
    "workflow_run",
];

/// The `event` label of a delivery whose `X-GitHub-Event` names no event GitHub sends.
pub const OTHER_EVENT: &str = "other";
/// The `event` label of a delivery without an `X-GitHub-Event` header.
pub const NO_EVENT: &str = "-";

/// The longest header value kept in a log line, in characters. GitHub's delivery ids are
/// GUIDs (36 characters) and its event names at most 31.
pub const MAX_LOGGED_HEADER: usize = 64;

/// A delivery's `X-GitHub-Event` as a metric label: the event's name when GitHub sends
/// such events, else [`OTHER_EVENT`].
pub fn event_label(event: Option<&str>) -> &'static str {
    match event {
        None => NO_EVENT,
        Some(event) => KNOWN_EVENTS
            .binary_search(&event)
            .map_or(OTHER_EVENT, |i| KNOWN_EVENTS[i]),
    }
}

/// A header's value as a log line shows it: at most [`MAX_LOGGED_HEADER`] characters (then
/// `…`), control and bidirectional-override characters escaped (`\x09`, `\u{202e}`), so
/// no header can forge or hide a line of the log.
pub fn logged_header(value: &str) -> String {
    let mut chars = value.chars();
    let kept: String = chars.by_ref().take(MAX_LOGGED_HEADER).collect();
    let mut shown = kubeci_spec::diagnostic::printable(&kept).replace('\n', "\\x0a");
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_a_fixed_set() {
        assert!(KNOWN_EVENTS.windows(2).all(|w| w[0] < w[1]), "sorted");
        assert_eq!(event_label(Some("pull_request")), "pull_request");
        assert_eq!(event_label(Some("issue_comment")), "issue_comment");
        assert_eq!(event_label(None), NO_EVENT);
        for hostile in [
            "x".repeat(4_000),
            "Push".into(),
            "push ".into(),
            String::new(),
        ] {
            assert_eq!(event_label(Some(&hostile)), OTHER_EVENT, "{hostile}");
        }
    }

    #[test]
    fn logged_headers_are_short_and_printable() {
        assert_eq!(
            logged_header("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
            "72d3162e-cc78-11e3-81ab-4c9367dc0958"
        );
        let long = logged_header(&"é".repeat(4_000));
        assert_eq!(long.chars().count(), MAX_LOGGED_HEADER + 1);
        assert!(long.ends_with('…'));
        assert_eq!(logged_header("a\tb\nc\u{202e}"), "a b\\x0ac\\u{202e}");
    }
}
