//! Every page in a real headless Chromium as a user sees it: light and dark (the
//! browser's preference), wide and phone-narrow (375 px, with no sideways scroll of the
//! page), each checked by axe-core (npm's accessibility engine, run in the page) with no
//! serious or critical violation, and a screenshot of each left in
//! `target/ui-screenshots/`. Then the header (signed in, sign out), the jobs page's
//! filters kept in the URL, line anchors in a log, search within it, and an invalid job's
//! findings as `kubeci lint` prints them.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{Kubeci, TOKEN};
use common::webdriver::Browser;
use serde_json::{json, Value};

fn wait(what: &str, check: impl FnMut() -> bool) {
    common::git::wait_for(Duration::from_secs(60), what, check);
}

fn url(kubeci: &Kubeci, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", kubeci.port)
}

/// axe-core's script: `$KUBECI_AXE_JS`, else where `.ci/run` installs it
/// (`npm install --prefix target/axe axe-core`).
fn axe_source() -> String {
    let path = std::env::var_os("KUBECI_AXE_JS").map_or_else(
        || common::repo_root().join("target/axe/node_modules/axe-core/axe.min.js"),
        PathBuf::from,
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the accessibility check needs axe-core at {} ({e}): `npm install --prefix target/axe axe-core@4.10.2` (.ci/run does)",
            path.display()
        )
    })
}

/// axe-core's serious and critical violations on the open page (WCAG 2 A and AA rules
/// and best practices), as `rule: target…` lines.
fn serious_violations(browser: &Browser, axe: &str) -> Vec<String> {
    if browser.execute("return typeof window.axe;") != json!("object") {
        // Through WebDriver, not a <script> of the page: its CSP stays as it is.
        browser.execute_with("(0, eval)(arguments[0]); return true;", json!([axe]));
    }
    let result = browser.execute_async(
        "const done = arguments[arguments.length - 1];\
         axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations), e => done(String(e)));",
        json!([]),
    );
    let Value::Array(violations) = result else {
        panic!("axe did not run: {result}");
    };
    violations
        .iter()
        .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
        .map(|v| {
            let targets: Vec<String> = v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| n["target"].to_string())
                .collect();
            format!("{}: {} {}", v["id"], v["help"], targets.join(" "))
        })
        .collect()
}

/// A served jobs directory: the bundled example, a job that passes (three builds), one
/// that fails (one build), one never built, and one whose spec is invalid.
fn served() -> (Local, Kubeci) {
    let (local, repo) = Local::new();
    let example = "hello.configmap.yaml";
    std::fs::copy(
        common::repo_root().join("examples").join(example),
        local.jobs.join(example),
    )
    .unwrap();
    local.write(
        "passing.yaml",
        &configmap(
            "passing",
            &repo.bare,
            "printf 'compiling\\n\\033[32mall good\\033[0m\\n'",
            "",
        ),
    );
    local.write(
        "failing.yaml",
        &configmap(
            "failing",
            &repo.bare,
            "echo 'test x failed' >&2; exit 3",
            "",
        ),
    );
    local.write("quiet.yaml", &configmap("quiet", &repo.bare, "true", ""));
    local.write(
        "invalid.yaml",
        &configmap(
            "invalid",
            &repo.bare,
            "true",
            "        max_concurrency: lots\n",
        ),
    );
    let kubeci = local.serve(&[], &[]);
    for (job, count) in [("passing", 3), ("failing", 1)] {
        for _ in 0..count {
            assert_eq!(common::serve::trigger(&kubeci, job, None).0, 201);
        }
        wait(&format!("{job}'s builds to end"), || {
            common::serve::builds(&kubeci, job)
                .iter()
                .all(|b| matches!(b["state"].as_str(), Some("succeeded" | "failed" | "error")))
        });
    }
    (local, kubeci)
}

#[test]
#[ignore = "needs Debian's chromium and chromium-driver, and axe-core from npm: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn every_page_light_and_dark_wide_and_narrow_passes_the_accessibility_check() {
    let axe = axe_source();
    let (_local, kubeci) = served();
    let browser = Browser::start();
    let pages = [
        ("jobs", "/"),
        ("jobs-filtered", "/?state=failed"),
        ("job", "/jobs/default/passing"),
        ("job-never-built", "/jobs/default/quiet"),
        ("job-invalid", "/jobs/default/invalid"),
        ("build", "/jobs/default/passing/builds/3"),
        ("build-failed", "/jobs/default/failing/builds/1"),
        ("sign-in", "/login"),
        ("not-found", "/jobs/default/absent"),
    ];
    let mut problems = Vec::new();
    for (theme, dark, background) in [
        ("light", false, "rgb(255, 255, 255)"),
        ("dark", true, "rgb(13, 17, 23)"),
    ] {
        browser.prefer_dark(dark);
        for (width, size) in [(1280, "wide"), (375, "narrow")] {
            browser.set_window_size(width, 900);
            for (name, path) in pages {
                browser.open(&url(&kubeci, path));
                let shown = browser.execute(
                    "return [getComputedStyle(document.body).backgroundColor, document.documentElement.scrollWidth, document.documentElement.clientWidth];",
                );
                assert_eq!(shown[0], background, "{name} in {theme}");
                let (scroll, client) = (shown[1].as_u64().unwrap(), shown[2].as_u64().unwrap());
                assert!(
                    scroll <= client,
                    "{name}, {theme}, {size}: the page scrolls sideways ({scroll} > {client} px)"
                );
                browser.screenshot(&format!("{name}-{theme}-{size}"));
                for violation in serious_violations(&browser, &axe) {
                    problems.push(format!("{name} ({theme}, {size}): {violation}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
#[ignore = "needs Debian's chromium and chromium-driver: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn the_header_signs_in_and_out_filters_stay_in_the_url_and_log_lines_are_linkable() {
    let (local, kubeci) = served();
    let browser = Browser::start();

    // The jobs page: each job's last build, a strip of recent ones, the invalid job's
    // first error; filters by state and namespace, kept in the URL.
    browser.open(&url(&kubeci, "/"));
    assert_eq!(browser.text_of("#sign-in"), "Sign in");
    let row_of = |job: &str| {
        let rows: Vec<String> = browser
            .find_all("tbody tr")
            .iter()
            .map(|r| r.text())
            .collect();
        rows.iter()
            .find(|r| r.starts_with(job))
            .cloned()
            .unwrap_or_else(|| panic!("no row of {job} in {rows:#?}"))
    };
    let passing = row_of("passing");
    assert!(
        passing.contains("#3") && passing.contains("succeeded"),
        "{passing}"
    );
    assert_eq!(
        browser.execute("return document.querySelectorAll(\"a[href^='/jobs/default/passing/builds/'][class^='st-']\").length;"),
        3,
        "three builds in its strip"
    );
    let invalid = row_of("invalid");
    assert!(
        invalid.contains("invalid") && invalid.contains("max_concurrency"),
        "{invalid}"
    );
    browser.execute("document.querySelector('select#state').value = 'failed';");
    browser.find("form.filters button").click();
    wait("the failed jobs only", || {
        browser.current_url().contains("state=failed")
            && browser.texts("tbody tr td:first-child > a") == ["failing"]
    });
    browser.open(&url(&kubeci, "/?namespace=elsewhere"));
    assert!(browser
        .text_of("main")
        .contains("No job matches these filters"));

    // Sign in from the header; it then says who is signed in, and signs out.
    browser.open(&url(&kubeci, "/jobs/default/passing"));
    browser.find("#sign-in").click();
    browser.find("input[name=token]").type_text(TOKEN);
    browser.find("form[action='/login'] button").click();
    wait("back on the job page, signed in", || {
        browser.current_url().ends_with("/jobs/default/passing")
            && browser.text_of("#signed-in") == "Signed in with the server's token"
    });
    assert!(browser.find("form[action$='/build'] button").is_displayed());
    browser.find("header form[action='/logout'] button").click();
    wait("signed out", || browser.text_of("#sign-in") == "Sign in");
    browser.open(&url(&kubeci, "/jobs/default/passing"));
    assert_eq!(
        browser.find_all("form[action$='/build']").len(),
        0,
        "signed out: no Build now"
    );

    // A linked log line is highlighted, in its opened step; search marks matching lines.
    browser.open(&url(&kubeci, "/jobs/default/failing/builds/1#L1"));
    assert_eq!(
        browser.text_of("details[data-step='clone'] li:first-child a"),
        "1"
    );
    assert_eq!(
        browser.execute("return document.querySelector('#L1').closest('details').open;"),
        true,
        "the step of a linked line opens"
    );
    assert_ne!(
        browser.execute("return getComputedStyle(document.querySelector('#L1')).backgroundColor;"),
        browser.execute("return getComputedStyle(document.querySelector('#L2')).backgroundColor;"),
        "the linked line stands out"
    );
    assert!(
        browser.text_of("#reason").contains("exited with code 3"),
        "the reason first"
    );
    browser.find("#log-search").type_text("test x failed");
    wait("one line to match", || {
        browser.text_of("#log-hits") == "1 line matches"
    });
    assert!(browser.find("li.hit").text().contains("test x failed"));
    // "show times" shows each line's time (the page works so without its script too).
    assert!(!browser.find("#L1 time.ts").is_displayed());
    browser.find("#show-times").click();
    let stamped = browser.execute(
        "return Array.from(document.querySelectorAll('#log-box li')).every(function (l) { \
           var t = l.querySelector('time.ts'); \
           return t && t.getClientRects().length > 0 && /^\\d\\d:\\d\\d:\\d\\d\\.\\d{3}$/.test(t.textContent); });",
    );
    assert_eq!(stamped, true, "every line shows its time");

    // An invalid job shows every finding as `kubeci lint` prints it.
    browser.open(&url(&kubeci, "/jobs/default/invalid"));
    let findings = browser.text_of("section.problem");
    assert!(
        findings.contains("--> ") && findings.contains("= help: "),
        "{findings}"
    );
    let lint = std::process::Command::new(env!("CARGO_BIN_EXE_kubeci"))
        .arg("lint")
        .arg(local.jobs.join("invalid.yaml"))
        .output()
        .unwrap();
    let printed = String::from_utf8(lint.stdout).unwrap();
    let first = printed.split("\n\n").next().unwrap().trim_end();
    assert!(
        first.contains("max_concurrency: lots") && findings.contains(first),
        "the page shows what `kubeci lint` prints:\n{first}\n---\n{findings}"
    );
}

/// Every page of what a build left passes the accessibility check, light and dark, wide
/// and narrow, without sideways scroll: `problems` gets each serious violation.
fn check_outputs_pages(browser: &Browser, kubeci: &Kubeci, problems: &mut Vec<String>) {
    let axe = axe_source();
    let pages = [
        ("build-tests", "/jobs/default/api/builds/4"),
        ("build-100000-tests", "/jobs/default/api/builds/3"),
        ("job-passrate", "/jobs/default/api"),
        (
            "test-history",
            "/jobs/default/api/tests/history?name=pkg.Mod%3A%3Aflakes&build=4",
        ),
    ];
    for (theme, dark) in [("light", false), ("dark", true)] {
        browser.prefer_dark(dark);
        for (width, size) in [(1280, "wide"), (375, "narrow")] {
            browser.set_window_size(width, 900);
            for (name, path) in pages {
                browser.open(&url(kubeci, path));
                let widths = browser.execute(
                    "return [document.documentElement.scrollWidth, document.documentElement.clientWidth];",
                );
                assert!(
                    widths[0].as_u64() <= widths[1].as_u64(),
                    "{name}, {theme}, {size}: the page scrolls sideways {widths}"
                );
                browser.screenshot(&format!("{name}-{theme}-{size}"));
                for violation in serious_violations(browser, &axe) {
                    problems.push(format!("{name} ({theme}, {size}): {violation}"));
                }
            }
        }
    }
}

// Long on purpose: one user's story read top to bottom — a red build's page, its failures,
// a linked test, its history, the job's strip — each step on the page the one before left.
#[test]
#[ignore = "needs Debian's chromium and chromium-driver, and axe-core from npm: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn the_tests_section_leads_with_failures_its_tests_are_linkable_and_the_job_shows_its_pass_rate() {
    let (_local, kubeci) = crate::serve_local_outputs_pages::served_with_results();
    let browser = Browser::start();

    // Failures first: failed, then errored, then the rest; the known flaky one marked
    // with why.
    browser.set_window_size(1280, 900);
    browser.open(&url(&kubeci, "/jobs/default/api/builds/4"));
    let order = browser.execute(
        "return Array.from(document.querySelectorAll('#tests li.test a.test-id')).map(a => a.textContent);",
    );
    assert_eq!(
        order,
        serde_json::json!([
            "pkg.Mod::fails",
            "pkg.Mod::flakes",
            "pkg.Mod::errs",
            "pkg.Mod::skips",
            "pkg.Mod::reruns",
            "pkg.Mod::passes"
        ]),
        "failures first (the passed one folded)"
    );
    browser.execute("document.getElementById('tests').scrollIntoView();");
    browser.screenshot("build-tests-section");
    let first = browser.find("#tests li.test");
    assert!(
        first.text().contains("AssertionError: expected 1, got 2"),
        "{}",
        first.text()
    );
    assert!(
        !browser.find("#tests li.test pre.test-text").is_displayed(),
        "details folded"
    );
    let flakes = browser.find("#tests li.test:nth-child(2)");
    assert!(
        flakes.text().contains("known flaky")
            && flakes
                .text()
                .contains("It failed, then passed on a rerun within build #2."),
        "{}",
        flakes.text()
    );
    assert!(
        browser
            .find("#tests li.test:nth-child(2) .flaky-mark")
            .is_displayed(),
        "the mark shows"
    );
    assert!(browser
        .text_of("#report-errors")
        .contains("reports/bad.xml: not JUnit: its root element is <html>"));

    // A test's anchor, in a folded list far down the page: the link opens its list and
    // scrolls to it, highlighted.
    let anchor = browser.execute("return document.querySelector('#tests-passed li.test').id;");
    let anchor = anchor.as_str().unwrap().to_owned();
    assert!(anchor.starts_with("test-pkg-Mod-passes-"), "{anchor}");
    browser.set_window_size(1280, 400);
    browser.open(&url(
        &kubeci,
        &format!("/jobs/default/api/builds/4#{anchor}"),
    ));
    let seen = browser.execute_with(
        "const t = document.getElementById(arguments[0]); const r = t.getBoundingClientRect(); \
         return [t.closest('details').open, r.top >= 0 && r.bottom <= window.innerHeight, window.scrollY > 0, getComputedStyle(t).backgroundColor];",
        serde_json::json!([anchor]),
    );
    assert_eq!(seen[0], true, "its folded list opened");
    assert_eq!(seen[1], true, "it is in view: {seen}");
    assert_eq!(seen[2], true, "the page scrolled to it");
    assert_ne!(seen[3], "rgba(0, 0, 0, 0)", "it stands out");
    browser.set_window_size(1280, 900);

    // Its history, from the test's own link.
    browser.open(&url(&kubeci, "/jobs/default/api/builds/4"));
    browser
        .find("#tests li.test:nth-child(2) a[href*='/tests/history']")
        .click();
    wait("the test's history", || {
        browser
            .current_url()
            .contains("/tests/history?name=pkg.Mod%3A%3Aflakes")
    });
    assert!(browser
        .text_of("#flaky")
        .contains("Known flaky. It failed, then passed on a rerun within build #2."));
    assert_eq!(
        browser.texts("tbody tr td:nth-child(2)"),
        [
            "? unknown",
            "? unknown",
            "↻ passed on a rerun",
            "✓ not failing"
        ],
        "builds 4 (no results), 3 (its lists cut), 2, 1"
    );

    // The job page: a bar per build, each said in words, leading to its Tests section.
    browser.open(&url(&kubeci, "/jobs/default/api"));
    assert_eq!(
        browser.execute(
            "return Array.from(document.querySelectorAll('#passrate a')).map(a => a.textContent);"
        ),
        serde_json::json!([
            "#1: 10 passed, 0 failed",
            "#2: 10 passed, 0 failed (1 flaky)",
            "#3: 99,000 passed, 1,000 failed",
            "#4: no test results"
        ])
    );
    browser.find("#passrate li:nth-child(3) a").click();
    wait("build 3's tests", || {
        browser
            .current_url()
            .ends_with("/jobs/default/api/builds/3#tests")
    });
    assert!(browser.text_of("#test-counts").starts_with("100,000 tests"));

    let mut problems = Vec::new();
    check_outputs_pages(&browser, &kubeci, &mut problems);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
