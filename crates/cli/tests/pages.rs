//! The web pages of `kubeci serve`, over real HTTP: what they list, and that a job, an
//! error or a log line carrying `<script>` or terminal escape tricks shows as inert text.
//! (Browser tests in a headless Chromium are still to come.)

mod common;

use std::time::Duration;

use common::local::{configmap, Local};
use common::serve::{http, AUTHORIZED};

fn get(kubeci: &common::serve::Kubeci, path: &str) -> (u16, String) {
    http(kubeci, "GET", path, &[])
}

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
        index.contains("#1 <span class=\"state succeeded\">succeeded</span>"),
        "{index}"
    );
    assert!(
        index.contains("<span class=\"state error\">invalid</span>"),
        "{index}"
    );
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
        build.contains("after title\n"),
        "the title sequence is dropped: {build}"
    );
    assert!(
        build.contains("&lt;img src=x onerror=alert(2)&gt;"),
        "{build}"
    );
    assert!(
        build.contains("kubectl -n default get job pages-1"),
        "{build}"
    );
    assert!(
        build.contains("href=\"https://logs.example/?q=&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""),
        "the log store link stays inside its attribute: {build}"
    );
    for page in [&index, &broken, &job, &build] {
        assert!(!page.contains("<script"), "no markup from data: {page}");
        assert!(!page.contains('\u{1b}'), "no terminal escapes: {page}");
    }

    let (status, badge) = get(&kubeci, "/badges/default/pages.svg");
    assert_eq!(status, 200);
    assert!(
        badge.starts_with("<svg") && badge.contains(">succeeded</text>"),
        "{badge}"
    );
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
