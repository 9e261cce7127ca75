//! The web pages in a real headless Chromium, driven over WebDriver: `kubeci serve --local`
//! on the bundled examples (plus one job whose build the test holds open), the jobs page
//! listing them, signing in with the token, "Build now", the build running with its log
//! arriving live in colour, then its final state, and "Rebuild". Each page's screenshot is
//! written to `target/ui-screenshots/`.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{Kubeci, TOKEN};
use common::webdriver::Browser;

/// Marks the document of build page `path` (`window.samePage`), once the browser shows
/// it: the mark and the check are one script, so a document still on its way in (after a
/// redirect) is never the one marked.
fn mark_the_build_page(browser: &Browser, path: &str) {
    let script = format!(
        "if (location.pathname === '{path}' && document.querySelector('#log')) \
         {{ window.samePage = true; return true; }} return false;"
    );
    wait("the build page's document", || {
        browser.execute(&script) == true
    });
}

fn wait(what: &str, check: impl FnMut() -> bool) {
    common::git::wait_for(Duration::from_secs(60), what, check);
}

/// Copies the ConfigMap files of `from` (recursively) into `to`.
fn copy_job_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_job_files(&path, &target);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn url(kubeci: &Kubeci, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", kubeci.port)
}

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
#[ignore = "needs Debian's chromium and chromium-driver: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn a_user_sees_the_examples_starts_a_build_and_watches_its_log_live_to_the_end() {
    let (local, repo) = Local::new();
    copy_job_files(&common::repo_root().join("examples"), &local.jobs);
    let gate = local.dir.path().join("gate");
    let script = format!(
        "printf '\\033[32mstep one: green\\033[0m\\n'; echo '<img src=x onerror=\"window.pwned=1\">'; \
         while [ ! -e {} ]; do sleep 0.1; done; echo 'step two: done'",
        gate.display()
    );
    local.write(
        "live-log.yaml",
        &configmap("live-log", &repo.bare, &script, ""),
    );
    let kubeci = local.serve(&[], &[]);
    let browser = Browser::start();

    // The jobs page lists every job the API knows: the examples and the test's own.
    browser.open(&url(&kubeci, "/"));
    let listed = |browser: &Browser| -> Vec<String> {
        let mut names = browser.texts("tbody tr td:first-child > a");
        names.sort();
        names
    };
    let mut expected = common::serve::job_names(&kubeci);
    expected.sort();
    assert!(expected.contains(&"hello".to_owned()), "{expected:?}");
    assert!(
        expected.len() >= 3,
        "the examples and live-log: {expected:?}"
    );
    assert_eq!(listed(&browser), expected);
    assert_eq!(browser.text_of("h1"), "Jobs");
    browser.screenshot("jobs");

    // Search narrows the list.
    browser.find("input[name=q]").type_text("live");
    browser.find("form.filters button").click();
    wait("the filtered list", || listed(&browser) == ["live-log"]);
    assert!(
        browser.current_url().contains("q=live"),
        "the filter is in the URL"
    );

    // A job page offers to sign in; the token signs in and leads back.
    browser.open(&url(&kubeci, "/jobs/default/live-log"));
    assert!(browser.text_of("body").contains("Sign in to start builds"));
    browser.find("a[href^='/login']").click();
    browser.find("input[name=token]").type_text(TOKEN);
    browser.screenshot("login");
    browser.find("form[action='/login'] button").click();
    wait("back on the job page", || {
        browser.current_url().ends_with("/jobs/default/live-log")
    });
    browser.screenshot("job");

    // "Build now": the build page, running, its log arriving line by line.
    browser.find("form[action$='/build'] button").click();
    wait("the build's page", || {
        browser
            .current_url()
            .ends_with("/jobs/default/live-log/builds/1")
    });
    mark_the_build_page(&browser, "/jobs/default/live-log/builds/1");
    wait("the first line to stream in", || {
        browser.text_of("#log").contains("step one: green")
    });
    assert_eq!(browser.text_of("#state .word"), "running");
    assert!(
        browser.text_of("#log span.c2").contains("step one: green"),
        "the ANSI green line is green"
    );
    assert!(
        browser
            .text_of("#log")
            .contains("<img src=x onerror=\"window.pwned=1\">"),
        "the HTML in the log shows as text"
    );
    assert_eq!(
        browser.execute("return document.querySelectorAll('#log img, #log script').length;"),
        0
    );
    assert!(!browser.text_of("#log").contains("step two"));
    assert_eq!(browser.text_of("#finished"), "–");
    assert!(browser
        .find("#cancel form[action$='/cancel'] button")
        .is_displayed());
    // Each line's time, on demand: hidden until "show times" is ticked.
    assert!(!browser.find("#log li time.ts").is_displayed());
    browser.find("#show-times").click();
    let shown = browser.find("#log li time.ts");
    assert!(shown.is_displayed(), "ticked, the times show");
    let time = shown.text();
    assert!(
        time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
        "HH:MM:SS.mmm: {time:?}"
    );
    browser.find("#show-times").click();
    assert!(!browser.find("#log li time.ts").is_displayed());
    let first_duration = browser.text_of("#duration");
    wait("the running build's duration to count up", || {
        browser.text_of("#duration") != first_duration
    });
    browser.screenshot("build-running");

    // The build goes on; the same page (never reloaded) shows the rest and the end.
    std::fs::write(&gate, "").unwrap();
    wait("the last line and the final state", || {
        browser.text_of("#log").contains("step two: done")
            && browser.text_of("#state .word") == "succeeded"
    });
    assert_eq!(browser.execute("return window.samePage === true;"), true);
    assert_eq!(browser.text_of("#live"), "finished: succeeded");
    assert_eq!(browser.execute("return window.pwned === undefined;"), true);
    // The same page now shows the finished build as a reload would: its end time and
    // duration from the server, and "Rebuild" where "Cancel" was.
    let build = common::serve::builds(&kubeci, "live-log")
        .into_iter()
        .find(|b| b["number"] == 1)
        .unwrap();
    assert_eq!(
        browser
            .execute("return document.querySelector('#finished time').getAttribute('datetime');"),
        build["finished_at"],
        "the end time, as a time relative to now"
    );
    let finished = browser.text_of("#finished");
    assert!(
        finished == "just now" || finished.ends_with(" s ago"),
        "{finished}"
    );
    assert_eq!(
        browser.text_of("#commit"),
        &build["commit"].as_str().unwrap()[..12],
        "the commit the clone step checked out"
    );
    let duration = browser.text_of("#duration");
    assert!(duration.ends_with('s') && duration != "–", "{duration}");
    assert_eq!(
        browser.execute("return document.querySelectorAll(\"form[action$='/cancel']\").length;"),
        0,
        "no Cancel on a finished build"
    );
    assert!(browser
        .find("form[action$='/rebuild'] button")
        .is_displayed());
    browser.screenshot("build-finished");
    assert_eq!(common::serve::state(&kubeci, "live-log", 1), "succeeded");
    assert!(browser.text_of("#state-line").contains("succeeded"));

    // A finished build offers "Rebuild": a new build of the same thing — on this very
    // page, which was never reloaded.
    browser.find("form[action$='/rebuild'] button").click();
    wait("the rebuild's page", || {
        browser
            .current_url()
            .ends_with("/jobs/default/live-log/builds/2")
    });
    wait("the rebuild to succeed", || {
        common::serve::state(&kubeci, "live-log", 2) == "succeeded"
    });
    browser.open(&url(&kubeci, "/jobs/default/live-log"));
    let rows = browser.find_all("tbody tr");
    assert_eq!(rows.len(), 2, "two builds listed");
    let newest = rows[0].text();
    assert!(
        newest.starts_with("#2") && newest.contains("succeeded"),
        "{newest}"
    );
    browser.screenshot("job-builds");
}

/// A build that fails while its page is open: without a reload, the page says why first,
/// shows the failed state and its end, and offers "Rebuild" instead of "Cancel".
#[test]
#[ignore = "needs Debian's chromium and chromium-driver: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn a_build_failing_while_its_page_is_open_says_why_without_a_reload() {
    let (local, repo) = Local::new();
    let gate = local.dir.path().join("gate");
    let script = format!(
        "echo 'compiling'; while [ ! -e {} ]; do sleep 0.1; done; echo 'error: it broke'; exit 3",
        gate.display()
    );
    local.write("breaks.yaml", &configmap("breaks", &repo.bare, &script, ""));
    let kubeci = local.serve(&[], &[]);
    let (status, body) = common::serve::http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/breaks/builds",
        &[common::serve::AUTHORIZED],
    );
    assert_eq!(status, 201, "{body}");
    let browser = Browser::start();
    let page = "/jobs/default/breaks/builds/1";
    browser.open(&url(&kubeci, &format!("/login?next={page}")));
    browser.find("input[name=token]").type_text(TOKEN);
    browser.find("form[action='/login'] button").click();
    wait("the build's page, signed in", || {
        browser.current_url().ends_with(page)
    });
    mark_the_build_page(&browser, page);
    wait("the first line to stream in", || {
        browser.text_of("#log").contains("compiling")
    });
    assert_eq!(
        browser.execute("return document.querySelectorAll('#reason').length;"),
        0,
        "no reason while it runs"
    );
    assert!(browser.find("#cancel button").is_displayed());

    std::fs::write(&gate, "").unwrap();
    wait("the failed state", || {
        browser.text_of("#state .word") == "failed"
    });
    assert_eq!(browser.execute("return window.samePage === true;"), true);
    let build = common::serve::builds(&kubeci, "breaks")
        .into_iter()
        .find(|b| b["number"] == 1)
        .unwrap();
    let message = build["message"].as_str().unwrap();
    assert!(message.contains("exited with code 3"), "{build}");
    let reason = browser.text_of("#reason");
    assert_eq!(reason, format!("Why it failed: {message}"));
    assert_eq!(
        browser.execute(
            "var r = document.querySelector('#reason'), s = document.querySelector('#state-line'); \
             return !!(r.compareDocumentPosition(s) & Node.DOCUMENT_POSITION_FOLLOWING);"
        ),
        true,
        "the reason comes first"
    );
    assert!(browser.text_of("#log").contains("error: it broke"));
    assert_eq!(browser.text_of("#live"), "finished: failed");
    assert_eq!(
        browser
            .execute("return document.querySelector('#finished time').getAttribute('datetime');"),
        build["finished_at"]
    );
    assert_eq!(
        browser.execute("return document.querySelectorAll(\"form[action$='/cancel']\").length;"),
        0
    );
    assert!(browser
        .find("form[action$='/rebuild'] button")
        .is_displayed());
    browser.screenshot("build-failed-live");
}
