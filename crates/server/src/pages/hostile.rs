//! Every value a page shows, made hostile (`<script>`, `"` to end an attribute, a bare
//! `&`), comes out escaped: as text, and inside the attributes it lands in. One marker per
//! field, so a field that slipped through unescaped is named.

use kubeci_engine::api::{BuildView, EngineKind, JobView};
use kubeci_engine::Phase;
use kubeci_spec::LoadedJob;

use super::*;

/// `field` made hostile: it would close an attribute, open a script, and start an entity.
fn hostile(field: &str) -> String {
    format!("{field}\"><script>{field}</script>&")
}

/// How `hostile(field)` reads once escaped.
fn escaped(field: &str) -> String {
    format!("{field}&quot;&gt;&lt;script&gt;{field}&lt;/script&gt;&amp;")
}

/// No markup got in, and each of `fields` shows, escaped.
fn assert_inert(page: &str, fields: &[&str]) {
    assert!(!page.contains("<script>"), "a script got in: {page}");
    for field in fields {
        assert!(
            !page.contains(&hostile(field)),
            "{field} got in as markup: {page}"
        );
        assert!(
            page.contains(&escaped(field)),
            "{field} is not shown escaped: {page}"
        );
    }
}

/// A header for a signed-in proxy user whose name, token and namespaces are hostile.
fn chrome() -> Chrome {
    Chrome {
        user: Some(hostile("user")),
        signed_in: true,
        csrf: Some(hostile("csrf")),
        namespaces: vec![hostile("namespace")],
        namespace: Some(hostile("namespace")),
        here: hostile("here"),
        archive_behind: Some(hostile("behind")),
    }
}

/// A build whose every text is hostile.
fn build() -> BuildView {
    BuildView {
        name: hostile("k8sname"),
        message: Some(hostile("message")),
        trigger: Some(hostile("trigger")),
        requested_by: Some(hostile("requested_by")),
        commit: Some(hostile("commit")),
        spec_hash: Some(hostile("spec")),
        chart_version: Some(hostile("chart")),
        // Check names are kubeci's own words; one made hostile all the same.
        reported: vec!["reported\"><script>reported</script>&"],
        log_url: Some(hostile("logurl")),
        ..sample_build(3, Phase::Failed)
    }
}

/// A valid job, then given hostile names, repository, branch, chart and `job.yaml`.
fn declared() -> LoadedJob {
    let data = [(
        "job.yaml".to_owned(),
        "- job:\n    name: api\n    git: {url: 'https://github.com/o/api'}\n    run_command: make\n"
            .to_owned(),
    )]
    .into();
    let mut loaded = kubeci_spec::load_configmap(
        kubeci_spec::ConfigMapData {
            namespace: "ci",
            name: "api",
            labels: &Default::default(),
            data: &data,
        },
        &kubeci_spec::LoadOptions::default(),
    );
    let job = std::sync::Arc::make_mut(loaded.job.as_mut().expect("a valid job"));
    job.git.url = format!("https://github.com/o/{}", hostile("giturl"));
    job.git.branch = Some(hostile("branch"));
    loaded.name = Some(hostile("name"));
    loaded.namespace = hostile("namespace");
    loaded.chart_version = Some(hostile("chart"));
    loaded.source = format!("# {}\n- job: {}\n", hostile("comment"), hostile("yaml"));
    loaded
}

#[test]
fn the_jobs_page_shows_every_hostile_value_escaped() {
    let job = JobView {
        triggers: vec![hostile("jobtrigger")],
        ..JobView::of(&declared())
    };
    let mut broken = job.clone();
    broken.valid = false;
    broken.errors = vec![hostile("error")];
    let mut unnamed = broken.clone();
    unnamed.name = None;
    unnamed.configmap = Some(hostile("configmap"));
    let rows = [job, broken, unnamed].map(|job| jobs::JobRow {
        job,
        recent: vec![build()],
    });
    let query = JobsQuery {
        q: hostile("q"),
        namespace: hostile("namespace"),
        state: hostile("state"),
        page: Some(2),
    };
    let page = jobs(&rows, 500, true, &query, &chrome());
    assert_inert(
        &page,
        &[
            "name",
            "namespace",
            "giturl",
            "branch",
            "chart",
            "jobtrigger",
            "error",
            "configmap",
            "q",
            "user",
        ],
    );
    assert!(
        page.contains(&format!("value=\"{}\"", escaped("q"))),
        "{page}"
    );
    assert!(
        page.contains(&format!("value=\"{}\"", escaped("csrf"))),
        "{page}"
    );
}

#[test]
fn a_job_s_page_shows_every_hostile_value_escaped() {
    let builds = kubeci_engine::api::BuildsPage {
        builds: vec![build()],
        more: true,
        archive_error: Some(hostile("archive")),
    };
    let page = job(&declared(), &builds, Some(&hostile("cannot")), &chrome());
    assert_inert(
        &page,
        &[
            "name",
            "namespace",
            "giturl",
            "branch",
            "chart",
            "comment",
            "yaml",
            "message",
            "trigger",
            "requested_by",
            "cannot",
            "user",
        ],
    );
    // The builds table shows a commit's first 12 characters: `commit"><scr`.
    assert!(
        page.contains("<code>commit&quot;&gt;&lt;scr</code>"),
        "{page}"
    );
}

/// What a build left, every text of it hostile.
fn left() -> Left {
    use kubeci_results::{ArtifactFile, BuildOutputs, Outcome, RefusedFile, ReportFile, TestCase};
    let mut builder = kubeci_results::ResultsBuilder::new();
    let case = TestCase {
        suite: hostile("suite"),
        name: hostile("testname"),
        outcome: Outcome::Failed,
        message: Some(hostile("testmsg")),
        kind: Some(hostile("kind")),
        details: Some(hostile("details")),
        output: Some(hostile("output")),
        file: Some(hostile("file")),
        ..TestCase::default()
    };
    builder.case(case.clone());
    builder.case(TestCase {
        outcome: Outcome::Skipped,
        message: Some(hostile("skipmsg")),
        ..case.clone()
    });
    builder.file(ReportFile {
        path: hostile("report"),
        cases: 0,
        error: Some(hostile("reporterror")),
    });
    let results = builder.finish();
    Left {
        tests: Some(kubeci_engine::api::BuildTests {
            known_flaky: vec![kubeci_results::KnownFlaky {
                id: case.id(),
                reason: kubeci_results::FlakyReason::SameCommit {
                    failed: 3,
                    not_failed: 2,
                    commit: hostile("sha"),
                },
            }],
            results,
        }),
        outputs: Some(BuildOutputs {
            artifacts: vec![ArtifactFile {
                path: hostile("artifact"),
                size: 1,
            }],
            refused: vec![RefusedFile {
                path: hostile("refused"),
                why: hostile("why"),
            }],
            ..BuildOutputs::new()
        }),
        unreadable: None,
    }
}

#[test]
fn a_build_s_page_shows_every_hostile_value_escaped() {
    let log = format!(
        "{}\n\u{1b}[31m{}\u{1b}[0m\n",
        hostile("line"),
        hostile("red")
    );
    let shown = LogShown {
        text: &log,
        skipped_bytes: 0,
        skipped_lines: 0,
    };
    let (namespace, name, web) = (hostile("namespace"), hostile("name"), hostile("web"));
    let at = BuildAt {
        namespace: &namespace,
        job: &name,
        number: 3,
    };
    let left = left_html(at, &left());
    let page = super::build(
        &BuildPage {
            namespace: &namespace,
            job: &name,
            build: &build(),
            shown: &shown,
            web: Some(&web),
            engine: EngineKind::Kubernetes,
            left: &left,
        },
        &chrome(),
    );
    assert_inert(
        &page,
        &[
            "namespace",
            "name",
            "message",
            "trigger",
            "requested_by",
            "commit",
            "chart",
            "reported",
            "logurl",
            "k8sname",
            "line",
            "red",
            "web",
            "user",
            "suite",
            "testname",
            "testmsg",
            "kind",
            "details",
            "output",
            "file",
            "report",
            "reporterror",
            "skipmsg",
            "artifact",
            "refused",
            "why",
        ],
    );
    // The spec's hash shows its first 12 characters: `spec"><scrip`.
    assert!(page.contains("spec spec&quot;&gt;&lt;scrip</dd>"), "{page}");
    assert!(
        page.contains(&format!("download=\"{}-3.log\"", escaped("name"))),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "href=\"{}\" rel=\"noreferrer\"",
            escaped("logurl")
        )),
        "{page}"
    );
}

#[test]
fn the_small_pages_and_the_badge_show_every_hostile_value_escaped() {
    let signing_in = login(&hostile("next"), Some(&hostile("problem")));
    assert_inert(&signing_in, &["next", "problem"]);
    assert_inert(&not_found(&chrome(), &hostile("what")), &["what", "user"]);
    assert_inert(
        &problem(&hostile("title"), &hostile("why")),
        &["title", "why"],
    );
    assert_inert(&badge(&hostile("label"), None), &["label"]);
}
