//! A test's history page (issue 30): whether the job's builds show it flaky and why, then
//! its status in each of the newest builds (failed, passed on a rerun, not failing, or
//! unknown), each linking to the test on that build's page. Linked from every test of a
//! build's Tests section; its JSON is the API's `…/tests/history?name=`.

use kubeci_engine::api::TestHistory;
use kubeci_results::TestStatus;
use maud::{html, Markup};

use super::parts::{self, build_path, job_path, thousands, urlencode};
use super::results::test_anchor;
use super::{layout, Chrome};

/// How many builds the page lists, newest first (the API gives up to 1,000).
pub const SHOWN_HISTORY: usize = 100;

/// The page of test `id`'s history in a job, up to build `build` when given.
pub fn history_path(namespace: &str, job: &str, id: &str, build: Option<u64>) -> String {
    let mut path = format!(
        "{}/tests/history?name={}",
        job_path(namespace, job),
        urlencode(id)
    );
    if let Some(build) = build {
        path.push_str(&format!("&build={build}"));
    }
    path
}

/// A status as the page shows it: an icon of its own and words.
fn status(status: TestStatus) -> Markup {
    let (class, icon, words) = match status {
        TestStatus::Failed => ("failed", "✗", "failed"),
        TestStatus::Flaky => ("flaky", "↻", "passed on a rerun"),
        TestStatus::NotFailing => ("passed", "✓", "not failing"),
        TestStatus::Unknown => ("skipped", "?", "unknown"),
    };
    html! {
        span class={ "to to-" (class) } {
            span class="ic" aria-hidden="true" { (icon) } " " (words)
        }
    }
}

/// Test `history.id`'s history in job `namespace/job` (up to build `build` when given);
/// `web`: its repository's page, for links to commits.
pub fn test_history(
    namespace: &str,
    job: &str,
    history: &TestHistory,
    build: Option<u64>,
    web: Option<&str>,
    chrome: &Chrome,
) -> String {
    let anchor = test_anchor(&history.id);
    let mut json = format!("/api/v1/jobs/{}/{}", urlencode(namespace), urlencode(job));
    if let Some(build) = build {
        json.push_str(&format!("/builds/{build}"));
    }
    json.push_str(&format!("/tests/history?name={}", urlencode(&history.id)));
    let builds = &history.builds;
    let body = html! {
        h1 { a href=(job_path(namespace, job)) { (namespace) "/" (job) } ": a test's history" }
        p { code id="test-id" { (history.id) } }
        @match &history.flaky_because {
            Some(why) => p class="warning" id="flaky" { b { "Known flaky." } " " (why) },
            None => p id="flaky" { "Its history here does not show it flaky." },
        }
        @if let Some(build) = build {
            p class="note" { "Its builds up to #" (build) ", newest first." }
        }
        @if builds.is_empty() {
            p class="empty" { "No archived build of this job has test results yet." }
        } @else {
            @if builds.len() > SHOWN_HISTORY {
                p class="note" {
                    "Showing the newest " (SHOWN_HISTORY) " of the " (thousands(builds.len() as u64))
                    " builds read; every one is in " a href=(json) { "its history (JSON)" } "."
                }
            }
            div class="scroll" tabindex="0" role="region" aria-label="Builds" {
                table {
                    thead { tr {
                        th scope="col" { "Build" } th scope="col" { "This test" }
                        th scope="col" { "Commit" } th scope="col" { "PR" } th scope="col" { "Finished" }
                    } }
                    tbody {
                        @for b in builds.iter().take(SHOWN_HISTORY) {
                            @let target = match b.status {
                                TestStatus::Failed | TestStatus::Flaky => anchor.as_str(),
                                _ => "tests",
                            };
                            tr {
                                td { a href={ (build_path(namespace, job, b.number)) "#" (target) } { "#" (b.number) } }
                                td { (status(b.status)) }
                                td { (parts::commit(web, b.commit.as_deref(), true)) }
                                td { (parts::pull_request(web, b.pull_request)) }
                                td { (parts::time(b.finished_at.map(|t| t.to_string()).as_deref(), parts::now())) }
                            }
                        }
                    }
                }
            }
        }
        p class="note" {
            "What the job's archive index keeps of each build: a build whose lists were cut at their bound, or without test results, says "
            i { "unknown" } "; " i { "not failing" } " is passed, skipped, or not run. "
            a href=(json) { "As JSON" } "."
        }
    };
    layout(&format!("{namespace}/{job}: {}", history.id), chrome, body)
}

#[cfg(test)]
mod tests {
    use kubeci_engine::api::TestInBuild;
    use kubeci_results::FlakyReason;

    use super::*;

    fn point(number: u64, status: TestStatus) -> TestInBuild {
        TestInBuild {
            number,
            status,
            commit: Some(format!("{number:040x}")),
            pull_request: None,
            finished_at: None,
        }
    }

    #[test]
    fn a_test_s_history_says_why_it_is_flaky_and_links_each_build_to_the_test() {
        let reason = FlakyReason::PassedOnRerun { build: 3 };
        let history = TestHistory {
            id: "pkg.Mod::test_a".into(),
            builds: vec![
                point(4, TestStatus::Failed),
                point(3, TestStatus::Flaky),
                point(2, TestStatus::NotFailing),
                point(1, TestStatus::Unknown),
            ],
            flaky_because: Some(reason.to_string()),
            flaky: Some(reason),
        };
        let html = test_history("ci", "api", &history, Some(4), None, &Chrome::default());
        assert!(html.contains("<p class=\"warning\" id=\"flaky\"><b>Known flaky.</b> It failed, then passed on a rerun within build #3.</p>"), "{html}");
        let anchor = test_anchor("pkg.Mod::test_a");
        assert!(
            html.contains(&format!("<td><a href=\"/jobs/ci/api/builds/4#{anchor}\">#4</a></td><td><span class=\"to to-failed\"><span class=\"ic\" aria-hidden=\"true\">✗</span> failed</span></td>")),
            "{html}"
        );
        assert!(
            html.contains("<a href=\"/jobs/ci/api/builds/2#tests\">#2</a></td><td><span class=\"to to-passed\"><span class=\"ic\" aria-hidden=\"true\">✓</span> not failing</span>"),
            "{html}"
        );
        assert!(
            html.contains(
                "href=\"/api/v1/jobs/ci/api/builds/4/tests/history?name=pkg.Mod%3A%3Atest_a\""
            ),
            "{html}"
        );
        assert_eq!(
            history_path("ci", "api", "a b&c", Some(4)),
            "/jobs/ci/api/tests/history?name=a%20b%26c&build=4"
        );
    }

    #[test]
    fn a_long_history_lists_the_newest_builds_and_says_so() {
        let history = TestHistory {
            id: "<t>".into(),
            builds: (1..=1_000)
                .rev()
                .map(|n| point(n, TestStatus::NotFailing))
                .collect(),
            flaky: None,
            flaky_because: None,
        };
        let html = test_history("ci", "api", &history, None, None, &Chrome::default());
        assert_eq!(html.matches("<tr><td>").count(), SHOWN_HISTORY);
        assert!(
            html.contains("Showing the newest 100 of the 1,000 builds read"),
            "{html}"
        );
        assert!(
            html.contains("<code id=\"test-id\">&lt;t&gt;</code>"),
            "{html}"
        );
        assert!(html.contains("does not show it flaky"), "{html}");
    }
}
