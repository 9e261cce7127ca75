//! The comment table: who may ask for what with which phrase (admins, others, the bot).

use kubeci_github::decide::{self, Action};

use super::*;

// Long on purpose: a table of comments and their outcomes, one case per few lines; a case per
// test would repeat the same setup thirty times.
#[test]
fn comment_phrases_from_admins_others_and_the_bot() {
    let jobs = [pr_job()];
    let jobs = refs(&jobs);
    let untrusted_pr = by("stranger", &[]);
    let head = "pr:2:ec26c3e57ca3a959ca5aad62de7213c562f8c821".to_owned();
    // (commenter, phrase, builds with key, approves, reason contains)
    let table: &[(&str, &str, Option<&str>, bool, &str)] = &[
        (
            "admin",
            "ok to test",
            Some(&head),
            true,
            "approved by admin admin",
        ),
        (
            "admin",
            "OK TO TEST",
            Some(&head),
            true,
            "approved by admin",
        ),
        (
            "admin",
            "/ok-to-test",
            Some(&head),
            true,
            "approved by admin",
        ),
        (
            "admin",
            "add to whitelist",
            Some(&head),
            true,
            "approved by admin",
        ),
        (
            "admin",
            "test this please",
            Some("comment:9"),
            false,
            "asked by admin",
        ),
        (
            "admin",
            "Retest this please",
            Some("comment:9"),
            false,
            "asked by admin",
        ),
        (
            "admin",
            "/retest",
            Some("comment:9"),
            false,
            "asked by admin",
        ),
        (
            "admin",
            "/test all",
            Some("comment:9"),
            false,
            "asked by admin",
        ),
        (
            "admin",
            "/test hello",
            Some("comment:9"),
            false,
            "asked by admin",
        ),
        (
            "admin",
            "/test another-job",
            None,
            false,
            "the comment asks for nothing",
        ),
        (
            "friend",
            "ok to test",
            None,
            false,
            "friend is not an admin of this job: approval ignored",
        ),
        (
            "friend",
            "test this please",
            Some("comment:9"),
            false,
            "asked by friend",
        ),
        (
            "member",
            "/retest",
            Some("comment:9"),
            false,
            "asked by member",
        ),
        ("stranger", "ok to test", None, false, "not an admin"),
        (
            "stranger",
            "test this please",
            None,
            false,
            "stranger may not trigger builds",
        ),
        (
            "stranger",
            "looks good to me",
            None,
            false,
            "asks for nothing",
        ),
    ];
    for (commenter, phrase, key, approves, reason) in table {
        let decision = decide::on_comment(
            "created",
            &untrusted_pr,
            9,
            commenter,
            phrase,
            Some("kubeci-bot"),
            &jobs,
            &acme_members,
        );
        let keys: Vec<String> = built(&decision).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            key.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>(),
            "{commenter}: {phrase}"
        );
        assert_eq!(
            decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::Approve(_))),
            *approves,
            "{commenter}: {phrase}"
        );
        assert!(
            decision.reasons.iter().any(|r| r.contains(reason)),
            "{commenter}: {phrase}: {:?}",
            decision.reasons
        );
    }
    // The author of a pull request whose head an admin approved may retest it; the
    // ok-to-test label alone approves nothing.
    let approved = Approvals(vec![("ci", "hello", "admin")]);
    let decision = decide::on_comment(
        "created",
        &untrusted_pr,
        9,
        "stranger",
        "/retest",
        None,
        &jobs,
        &approved,
    );
    assert_eq!(built(&decision).len(), 1);
    let labelled = by("stranger", &["ok-to-test"]);
    let decision = decide::on_comment(
        "created", &labelled, 9, "stranger", "/retest", None, &jobs, &no_orgs,
    );
    assert_eq!(built(&decision).len(), 0, "{:?}", decision.reasons);
    // The bot's own comments, edited and deleted comments never trigger.
    for (action, author) in [
        ("created", "kubeci-bot"),
        ("created", "KUBECI-BOT"),
        ("edited", "admin"),
        ("deleted", "admin"),
    ] {
        let decision = decide::on_comment(
            action,
            &untrusted_pr,
            9,
            author,
            "ok to test",
            Some("kubeci-bot"),
            &jobs,
            &no_orgs,
        );
        assert!(decision.actions.is_empty(), "{action} by {author}");
    }
    assert!(
        !decide::comment_may_act("looks good to me", &jobs),
        "no need to ask GitHub"
    );
    assert!(decide::comment_may_act("LGTM\n/retest", &jobs));
    let whitelist = decide::on_comment(
        "created",
        &untrusted_pr,
        9,
        "admin",
        "add to whitelist",
        None,
        &jobs,
        &no_orgs,
    );
    assert!(whitelist.actions.iter().any(|a| matches!(a, Action::Reply(text) if text.contains("@stranger") && text.contains("whitelisted_users"))));
}
