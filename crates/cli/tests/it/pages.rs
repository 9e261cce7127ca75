//! The web pages of `kubeci serve`, over real HTTP: what they list, and that a job, an
//! error or a log line carrying `<script>` or terminal escape tricks shows as inert text.
//! The same pages in a real browser: `browser.rs`.

use crate::common;

use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{dechunk, http, AUTHORIZED};
use serde_json::json;

pub(crate) fn get(kubeci: &common::serve::Kubeci, path: &str) -> (u16, String) {
    http(kubeci, "GET", path, &[])
}

// Long on purpose: one server's pages visited in turn, each checked for what it lists and for
// the hostile text it must show inert; the pages share the jobs and builds set up first.
#[test]
fn pages_list_jobs_and_builds_and_render_hostile_text_inert() {
    let (local, repo) = Local::new();
    let script = r#"printf 'plain line\n\033[1;31mred alert\033[0m done\n<script>alert(1)</script>\n\033]0;owned title\007after title\n<img src=x onerror=alert(2)>\n'"#;
    local.write("pages.yaml", &configmap("pages", &repo.bare, script, ""));
    local.write(
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n  labels: {ci-job-spec: \"true\"}\ndata:\n  job.yaml: \"- job: {name: broken, <script>evil</script>: 1}\"\n",
    );
    let kubeci = local.serve(
        &[
            "--log-url-template",
            "https://logs.example/?q=\"><script>x</script>",
        ],
        &[],
    );
    let (status, _) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/pages/builds",
        &[AUTHORIZED],
    );
    assert_eq!(status, 201);
    common::git::wait_for(Duration::from_secs(60), "the build to succeed", || {
        common::serve::state(&kubeci, "pages", 1) == "succeeded"
    });

    let (status, index) = get(&kubeci, "/");
    assert_eq!(status, 200);
    assert!(
        index.contains("<a href=\"/jobs/default/pages\">pages</a>"),
        "{index}"
    );
    assert!(
        index.contains(">#1</a> <span class=\"st st-succeeded\">"),
        "{index}"
    );
    assert!(index.contains("<span class=\"st st-invalid\">"), "{index}");
    assert!(
        index.contains("jobs change through their ConfigMaps"),
        "{index}"
    );
    let (_, filtered) = get(&kubeci, "/?q=PAG");
    assert!(
        filtered.contains(">pages</a>") && !filtered.contains(">broken</a>"),
        "{filtered}"
    );

    let (status, broken) = get(&kubeci, "/jobs/default/broken");
    assert_eq!(status, 200);
    assert!(broken.contains("This job is invalid"), "{broken}");
    assert!(
        broken.contains("&lt;script&gt;evil&lt;/script&gt;"),
        "the error quotes the key, escaped: {broken}"
    );

    let (status, job) = get(&kubeci, "/jobs/default/pages");
    assert_eq!(status, 200);
    assert!(
        job.contains("<a href=\"/jobs/default/pages/builds/1\">#1</a>"),
        "{job}"
    );
    assert!(job.contains("src=\"/badges/default/pages.svg\""), "{job}");
    assert!(
        job.contains("<dt>Builds on</dt><dd>manual (API, CLI)"),
        "{job}"
    );
    assert!(
        job.contains("<h2>job.yaml</h2>") && job.contains("run_command</span>"),
        "the spec as written: {job}"
    );
    assert!(
        job.contains("As written in ConfigMap default/pages; change it there."),
        "{job}"
    );

    let (status, build) = get(&kubeci, "/jobs/default/pages/builds/1");
    assert_eq!(status, 200);
    assert!(
        build.contains("<span class=\"b c1\">red alert</span> done"),
        "{build}"
    );
    assert!(
        build.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{build}"
    );
    assert!(
        build.contains("<span>after title</span></li>"),
        "the title sequence is dropped: {build}"
    );
    assert!(
        build.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{build}"
    );
    assert!(
        !build.contains("kubectl"),
        "a local build has no cluster hints: {build}"
    );
    let duration = build
        .split("<dt>Duration</dt><dd id=\"duration\">")
        .nth(1)
        .and_then(|rest| rest.split("</dd>").next())
        .unwrap_or_default();
    assert!(
        duration.ends_with('s') && duration.starts_with(|c: char| c.is_ascii_digit()),
        "a duration: {duration:?}"
    );
    assert!(
        build.contains("<dt>Started</dt><dd id=\"started\"><time datetime=\"20"),
        "a start time: {build}"
    );
    assert!(
        build.contains("href=\"https://logs.example/?q=&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""),
        "the log store link stays inside its attribute: {build}"
    );
    for page in [&index, &broken, &job, &build] {
        let ours = "<script src=\"/static/kubeci.js\"></script>";
        assert_eq!(
            page.matches("<script").count(),
            1,
            "no markup from data: {page}"
        );
        assert!(page.contains(ours), "{page}");
        assert!(!page.contains('\u{1b}'), "no terminal escapes: {page}");
    }

    let (status, badge) = get(&kubeci, "/badges/default/pages.svg");
    assert_eq!(status, 200);
    assert!(
        badge.starts_with("<svg") && badge.contains(">succeeded</text>"),
        "{badge}"
    );
    for hostile in [
        "/?page=18446744073709551615",
        "/?page=-1",
        "/?state=%3Cb%3E&q=%00",
    ] {
        assert_eq!(get(&kubeci, hostile).0, 200, "{hostile}");
    }
    assert_eq!(get(&kubeci, "/jobs/default/absent").0, 404);
    assert_eq!(get(&kubeci, "/jobs/default/pages/builds/9").0, 404);
    assert_eq!(get(&kubeci, "/badges/default/absent.svg").0, 404);
}

#[test]
fn pages_forbid_scripts_through_their_content_security_policy() {
    let (local, _repo) = Local::new();
    let kubeci = local.serve(&[], &[]);
    let port = kubeci.port;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: l\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let head = response.split("\r\n\r\n").next().unwrap().to_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
}

#[test]
fn a_running_build_streams_its_log_live_over_server_sent_events() {
    let (local, repo) = Local::new();
    let script = "for i in 1 2 3; do echo \"line $i\"; sleep 0.3; done; printf '\\033[32mgreen <b>\\033[0m\\n'";
    local.write("live.yaml", &configmap("live", &repo.bare, script, ""));
    let kubeci = local.serve(&[], &[]);
    let (status, _) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/live/builds",
        &[AUTHORIZED],
    );
    assert_eq!(status, 201);
    let (_, page) = get(&kubeci, "/jobs/default/live/builds/1");
    assert!(
        page.contains("data-events=\"/jobs/default/live/builds/1/events\""),
        "a build not finished follows its log: {page}"
    );
    assert!(page.contains("id=\"follow\" checked"), "{page}");
    assert!(
        page.contains("<script src=\"/static/kubeci.js\"></script>"),
        "{page}"
    );
    // The events end when the build does: read to the end.
    let (status, events) = get(&kubeci, "/jobs/default/live/builds/1/events");
    assert_eq!(status, 200);
    let events = dechunk(&events);
    let lines: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("data: line"))
        .collect();
    assert_eq!(
        lines,
        ["data: line 1", "data: line 2", "data: line 3"],
        "{events}"
    );
    assert!(
        events.contains("data: <span class=\"c2\">green &lt;b&gt;</span>\n"),
        "rendered, escaped: {events}"
    );
    // Each line's event gives its time first.
    let event = events
        .split("\n\n")
        .find(|e| e.ends_with("\ndata: line 1"))
        .unwrap_or_else(|| panic!("line 1's event: {events}"));
    let time = event
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("data: "))
        .unwrap_or_default();
    assert!(
        time.parse::<jiff::Timestamp>().is_ok(),
        "{time:?} in {events}"
    );
    let end: serde_json::Value = serde_json::from_str(
        events
            .rsplit_once("event: end\ndata: ")
            .map(|(_, data)| data.trim_end())
            .unwrap_or_else(|| panic!("an end event: {events}")),
    )
    .unwrap();
    let record = common::serve::builds(&kubeci, "live")
        .into_iter()
        .find(|b| b["number"] == 1)
        .unwrap();
    assert_eq!(end["state"], "succeeded", "{events}");
    assert_eq!(end["finished_at"], record["finished_at"], "{events}");
    assert_eq!(end["commit"], record["commit"], "{events}");
    assert!(end["duration"].as_str().unwrap().ends_with('s'), "{end}");
    let (_, finished) = get(&kubeci, "/jobs/default/live/builds/1");
    assert!(
        !finished.contains("data-events"),
        "a finished build's page is static"
    );
    let (status, script) = get(&kubeci, "/static/kubeci.js");
    assert_eq!(status, 200);
    assert!(script.contains("EventSource"));
}

/// A ConfigMap in namespace `aaa` declaring a job for `default` (refused: no namespace pair
/// is allowed) is shown under its own ConfigMap; `default`'s job of the same name keeps its
/// page, with "Build now".
#[test]
fn a_refused_declaration_from_another_namespace_never_takes_over_a_jobs_page() {
    let (local, repo) = Local::new();
    local.write(
        "sleeper.yaml",
        &configmap("sleeper", &repo.bare, "echo the real sleeper", ""),
    );
    local.write(
        "intruder.yaml",
        &configmap("sleeper", &repo.bare, "echo intruder", "")
            .replace(
                "  name: sleeper\n  labels",
                "  name: sleeper\n  namespace: aaa\n  labels",
            )
            .replace("        git:", "        namespace: default\n        git:"),
    );
    let kubeci = local.serve(&[], &[]);
    let (status, page) = get(&kubeci, "/jobs/default/sleeper");
    assert_eq!(status, 200);
    assert!(page.contains("echo the real sleeper"), "{page}");
    assert!(!page.contains("intruder"), "{page}");
    let (status, refused) = get(&kubeci, "/jobs/aaa/sleeper");
    assert_eq!(status, 200);
    assert!(
        refused.contains("namespace-not-allowed")
            || refused.contains("may not run its builds in namespace"),
        "{refused}"
    );
    let jobs = common::serve::json(&kubeci, "/api/v1/jobs");
    let valid: Vec<_> = jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["namespace"].as_str().unwrap(),
                j["valid"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert!(valid.contains(&("default", true)), "{jobs}");
    assert!(valid.contains(&("aaa", false)), "{jobs}");
}

/// A job whose git URL holds a password is refused, and neither its page nor the API
/// shows the password to the anonymous reader.
#[test]
fn a_password_in_a_git_url_is_refused_and_shown_to_no_one() {
    let (local, repo) = Local::new();
    local.write(
        "cred.yaml",
        &configmap("cred", &repo.bare, "make", "").replace(
            &format!("url: {}", repo.bare.display()),
            "url: https://user:TOKEN123@github.com/o/r.git",
        ),
    );
    let kubeci = local.serve(&[], &[]);
    let (status, page) = get(&kubeci, "/jobs/default/cred");
    assert_eq!(status, 200);
    assert!(page.contains("https://***@github.com/o/r.git"), "{page}");
    assert!(page.contains("password or token"), "{page}");
    for path in ["/", "/api/v1/jobs", "/api/v1/jobs/default/cred/builds"] {
        let (_, body) = get(&kubeci, path);
        assert!(!body.contains("TOKEN123"), "{path}: {body}");
    }
    assert!(!page.contains("TOKEN123"));
    let (status, _) = http(
        &kubeci,
        "POST",
        "/api/v1/jobs/default/cred/builds",
        &[AUTHORIZED],
    );
    assert_eq!(status, 422, "an invalid job does not build");
}

/// `GET /api/v1/jobs/{ns}/{name}`: a job with every finding about its spec — errors and
/// warnings, each also as `kubeci lint` prints it — and its `job.yaml`; the list shows
/// the warnings too, and the job's page shows them.
#[test]
fn a_job_and_its_findings_are_in_the_api_and_on_its_page() {
    let (local, repo) = Local::new();
    local.write(
        "invalid.yaml",
        &configmap(
            "invalid",
            &repo.bare,
            "true",
            "        max_concurrency: lots\n",
        ),
    );
    let warned = configmap("warned", &repo.bare, "true", "")
        .replace("data:\n", "data:\n  notes.txt: \"kept elsewhere\"\n");
    local.write("warned.yaml", &warned);
    let kubeci = local.serve(&[], &[]);

    let invalid = common::serve::json(&kubeci, "/api/v1/jobs/default/invalid");
    assert_eq!(invalid["valid"], false, "{invalid}");
    let finding = &invalid["diagnostics"][0];
    assert_eq!(
        (&finding["severity"], &finding["code"], &finding["line"]),
        (&json!("error"), &json!("wrong-type"), &json!(16)),
        "{invalid}"
    );
    let rendered = finding["rendered"].as_str().unwrap();
    assert!(
        rendered.contains("--> ") && rendered.contains("max_concurrency: lots"),
        "{rendered}"
    );
    assert!(invalid["job_yaml"]
        .as_str()
        .unwrap()
        .contains("max_concurrency: lots"));

    let listed = common::serve::json(&kubeci, "/api/v1/jobs");
    let warned = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "warned")
        .unwrap();
    assert_eq!(warned["valid"], true);
    assert!(
        warned["warnings"][0]
            .as_str()
            .unwrap()
            .contains("key `notes.txt` is ignored"),
        "{warned}"
    );
    let (_, page) = get(&kubeci, "/jobs/default/warned");
    assert!(
        page.contains("<b>Warnings:</b>") && page.contains("key `notes.txt` is ignored"),
        "{page}"
    );

    let (status, absent) = get(&kubeci, "/api/v1/jobs/default/absent");
    assert_eq!(status, 404);
    assert!(absent.contains("\"code\":\"job-not-found\""), "{absent}");
}

/// A job whose pod needs a Secret the local engine was not given says so on its page and
/// in the API before anyone presses "Build now"; given the Secret (`--secrets DIR`), it
/// builds.
#[test]
fn a_job_the_local_engine_cannot_build_says_why_before_anyone_tries() {
    let (local, repo) = Local::new();
    let needs_key = configmap("keyed", &repo.bare, "true", "").replace(
        "          branch: main\n",
        "          branch: main\n          ssh_secret_ref: deploy-key\n",
    );
    local.write("keyed.yaml", &needs_key);
    let kubeci = local.serve(&[], &[]);
    let (_, page) = get(&kubeci, "/jobs/default/keyed");
    assert!(
        page.contains("id=\"cannot-build\"") && page.contains("`deploy-key`"),
        "{page}"
    );
    assert!(page.contains("--secrets DIR"), "{page}");
    assert!(!page.contains("Sign in to start builds"), "{page}");
    let job = common::serve::json(&kubeci, "/api/v1/jobs/default/keyed");
    assert!(
        job["cannot_build"]
            .as_str()
            .unwrap()
            .contains("`deploy-key`"),
        "{job}"
    );
    drop(kubeci);

    let secrets = local.dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("deploy-key")).unwrap();
    std::fs::write(secrets.join("deploy-key/private-key"), "not a real key\n").unwrap();
    let kubeci = local.serve(&["--secrets", secrets.to_str().unwrap()], &[]);
    let (_, page) = get(&kubeci, "/jobs/default/keyed");
    assert!(!page.contains("cannot-build"), "{page}");
    let job = common::serve::json(&kubeci, "/api/v1/jobs/default/keyed");
    assert_eq!(job["cannot_build"], serde_json::Value::Null, "{job}");
}

/// The README's first command: `serve --local examples/` starts without a note about
/// skipped or shadowed ConfigMaps, and the job that cannot build on this machine (the
/// kube-jenkins seed's, which needs its SSH key Secret) says why on its page and in the API
/// before anyone presses "Build now".
#[test]
fn the_bundled_examples_start_clean_and_say_which_cannot_build_here() {
    let (mut local, _) = Local::new();
    local.jobs = common::repo_root().join("examples");
    let kubeci = local.serve(&[], &[]);
    let mut names = common::serve::job_names(&kubeci);
    names.sort();
    assert_eq!(names, ["hello", "start-helm-test"]);
    let said = kubeci.log();
    assert!(
        !said.contains("note:") && !said.contains("warning"),
        "nothing to note on the first run: {said}"
    );
    let seed = common::serve::json(&kubeci, "/api/v1/jobs/default/start-helm-test");
    let why = seed["cannot_build"].as_str().unwrap_or_default();
    assert!(why.contains("`github-key`"), "{seed}");
    let (_, page) = get(&kubeci, "/jobs/default/start-helm-test");
    assert!(
        page.contains("id=\"cannot-build\"") && page.contains("`github-key`"),
        "{page}"
    );
    let hello = common::serve::json(&kubeci, "/api/v1/jobs/default/hello");
    assert_eq!(hello["cannot_build"], serde_json::Value::Null, "{hello}");
}
