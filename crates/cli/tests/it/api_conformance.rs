//! Every answer of the REST API — successes and errors — checked against the OpenAPI
//! document kubeci serves (`/api/v1/openapi.json`), with an independent JSON Schema
//! validator (Python's `jsonschema`): an answer with a status the document does not list,
//! or a body its schema refuses, fails.

use crate::common;

use std::process::Command;

use common::local::{configmap, Local};
use common::serve::{http, Kubeci, AUTHORIZED};
use serde_json::{json, Value};

/// (method, path template, status, body) of one exchange.
type Exchange = (&'static str, &'static str, u16, String);

fn call(
    kubeci: &Kubeci,
    method: &'static str,
    template: &'static str,
    path: &str,
    headers: &[(&str, &str)],
) -> Exchange {
    let (status, body) = http(kubeci, &method.to_uppercase(), path, headers);
    (method, template, status, body)
}

// Long on purpose: one walk over every operation of the OpenAPI document, in the order a
// build lives (create, read, follow, cancel), each call needing the objects before it.
#[test]
#[ignore = "needs Python's jsonschema and PyYAML: .ci/run installs them and runs cargo test --workspace -- --include-ignored"]
fn every_answer_matches_the_openapi_document() {
    common::require_python_module("jsonschema", "jsonschema");
    let (local, repo) = Local::new();
    local.write("ok.yaml", &configmap("ok", &repo.bare, "echo fine", ""));
    local.write("slow.yaml", &configmap("slow", &repo.bare, "sleep 30", ""));
    local.write("broken.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n  labels: {ci-job-spec: \"true\"}\ndata:\n  job.yaml: \"- job: {name: broken}\"\n");
    let kubeci = local.serve(
        &[
            "--log-url-template",
            "https://logs.example/{namespace}/{pod}",
        ],
        &[],
    );
    let builds = "/api/v1/jobs/{namespace}/{name}/builds";
    let one = "/api/v1/jobs/{namespace}/{name}/builds/{number}";
    let cancel = "/api/v1/jobs/{namespace}/{name}/builds/{number}/cancel";
    let rebuild = "/api/v1/jobs/{namespace}/{name}/builds/{number}/rebuild";
    let mut exchanges: Vec<Exchange> = vec![
        call(&kubeci, "get", "/api/v1/jobs", "/api/v1/jobs", &[]),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/ok/builds",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/ok/builds",
            &[AUTHORIZED, ("Idempotency-Key", "k1")],
        ),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/ok/builds",
            &[AUTHORIZED, ("Idempotency-Key", "k1")],
        ),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/ok/builds",
            &[],
        ),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/broken/builds",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/absent/builds",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "post",
            builds,
            "/api/v1/jobs/default/slow/builds",
            &[AUTHORIZED],
        ),
    ];
    common::git::wait_for(
        std::time::Duration::from_secs(60),
        "build 1 to finish",
        || common::serve::state(&kubeci, "ok", 1) == "succeeded",
    );
    exchanges.extend([
        call(
            &kubeci,
            "get",
            builds,
            "/api/v1/jobs/default/ok/builds",
            &[],
        ),
        call(
            &kubeci,
            "get",
            builds,
            "/api/v1/jobs/default/ok/builds?limit=1",
            &[],
        ),
        call(
            &kubeci,
            "get",
            builds,
            "/api/v1/jobs/default/ok/builds?limit=1&before=2",
            &[],
        ),
        call(
            &kubeci,
            "get",
            builds,
            "/api/v1/jobs/default/ok/builds?limit=many",
            &[],
        ),
        call(
            &kubeci,
            "get",
            builds,
            "/api/v1/jobs/default/absent/builds",
            &[],
        ),
        call(&kubeci, "get", one, "/api/v1/jobs/default/ok/builds/1", &[]),
        call(
            &kubeci,
            "get",
            one,
            "/api/v1/jobs/default/ok/builds/99",
            &[],
        ),
        call(
            &kubeci,
            "get",
            one,
            "/api/v1/jobs/default/ok/builds/first",
            &[],
        ),
        call(
            &kubeci,
            "post",
            cancel,
            "/api/v1/jobs/default/ok/builds/1/cancel",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "post",
            cancel,
            "/api/v1/jobs/default/slow/builds/1/cancel",
            &[],
        ),
        call(
            &kubeci,
            "post",
            cancel,
            "/api/v1/jobs/default/slow/builds/1/cancel",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "post",
            cancel,
            "/api/v1/jobs/default/ok/builds/99/cancel",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "get",
            "/api/v1/jobs/{namespace}/{name}/builds/{number}/log",
            "/api/v1/jobs/default/ok/builds/99/log",
            &[],
        ),
        call(&kubeci, "get", "/readyz", "/readyz", &[]),
        call(
            &kubeci,
            "post",
            rebuild,
            "/api/v1/jobs/default/ok/builds/1/rebuild",
            &[],
        ),
        call(
            &kubeci,
            "post",
            rebuild,
            "/api/v1/jobs/default/ok/builds/99/rebuild",
            &[AUTHORIZED],
        ),
        call(
            &kubeci,
            "post",
            rebuild,
            "/api/v1/jobs/default/ok/builds/1/rebuild",
            &[AUTHORIZED],
        ),
    ]);
    let statuses: Vec<u16> = exchanges.iter().map(|e| e.2).collect();
    assert_eq!(
        statuses,
        [
            200, 201, 201, 200, 401, 422, 404, 201, 200, 200, 200, 400, 404, 200, 404, 400, 409,
            401, 200, 404, 404, 200, 401, 404, 201
        ],
        "{exchanges:#?}"
    );
    // Pages: newest first, `next` until the last.
    let page =
        |path: &str| -> Value { serde_json::from_str(&http(&kubeci, "GET", path, &[]).1).unwrap() };
    let rebuilt: Value = serde_json::from_str(&exchanges.last().unwrap().3).unwrap();
    assert_eq!(rebuilt["number"], 3, "a rebuild is a new build: {rebuilt}");
    assert_eq!(rebuilt["requested_by"], "api (rebuild of #1)");
    let first = page("/api/v1/jobs/default/ok/builds?limit=1");
    assert_eq!(first["items"][0]["number"], 3);
    assert_eq!(
        first["next"],
        "/api/v1/jobs/default/ok/builds?limit=1&before=3"
    );
    let second = page(first["next"].as_str().unwrap());
    assert_eq!(second["items"][0]["number"], 2);
    let third = page(second["next"].as_str().unwrap());
    assert_eq!(third["items"][0]["number"], 1);
    assert_eq!(third["next"], Value::Null, "the last page");

    let (status, document) = http(&kubeci, "GET", "/api/v1/openapi.json", &[]);
    assert_eq!(status, 200);
    assert_eq!(
        document,
        kubeci_server_document(),
        "the document served is the one in the repository"
    );

    // Each JSON answer against the schema the document gives its path, method and status.
    let answers: Vec<Value> = exchanges
        .iter()
        .filter(|(_, path, ..)| *path != "/readyz")
        .map(|(method, path, status, body)| {
            json!({"method": method, "path": path, "status": status.to_string(),
                   "body": serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"))})
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("openapi.json"), &document).unwrap();
    std::fs::write(
        dir.path().join("answers.json"),
        serde_json::to_string(&answers).unwrap(),
    )
    .unwrap();
    let script = r#"
import json, sys
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
doc = json.load(open(sys.argv[1]))
registry = Registry().with_resource("urn:kubeci:openapi", Resource.from_contents(doc, default_specification=__import__("referencing.jsonschema").jsonschema.DRAFT202012))
failures = []
for a in json.load(open(sys.argv[2])):
    op = doc["paths"].get(a["path"], {}).get(a["method"])
    if op is None:
        failures.append(f"{a['method']} {a['path']}: not in the document"); continue
    response = op["responses"].get(a["status"])
    if response is None:
        failures.append(f"{a['method']} {a['path']}: status {a['status']} not in the document"); continue
    schema = response["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = {"$ref": "urn:kubeci:openapi" + schema["$ref"]}
    errors = [e.message for e in Draft202012Validator(schema, registry=registry).iter_errors(a["body"])]
    if errors:
        failures.append(f"{a['method']} {a['path']} {a['status']}: {errors}")
print("\n".join(failures))
sys.exit(1 if failures else 0)
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("openapi.json"))
        .arg(dir.path().join("answers.json"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "answers that do not match the OpenAPI document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn kubeci_server_document() -> String {
    std::fs::read_to_string(common::repo_root().join("crates/server/src/openapi.json")).unwrap()
}

/// Schemathesis (PyPI) against a running kubeci: requests generated from the document —
/// valid and invalid, with the links between operations followed (start a build, then
/// read, cancel, rebuild and follow it) — and every answer checked against it: status,
/// content type, headers, body schema, invalid input refused, valid input accepted.
fn schemathesis(kubeci: &Kubeci, engine: &str) {
    common::require_python_module("schemathesis", "schemathesis");
    let reports = tempfile::tempdir().unwrap();
    let output = Command::new("python3")
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!(
            "http://127.0.0.1:{}/api/v1/openapi.json",
            kubeci.port
        ))
        .args(["--header", &format!("{}: {}", AUTHORIZED.0, AUTHORIZED.1)])
        .args(["--checks", "all", "--max-examples", "25", "--seed", "17"])
        .args(["--no-shrink", "--workers", "2", "--request-timeout", "20"])
        .arg("--report-dir")
        .arg(reports.path())
        .current_dir(reports.path())
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{engine}:\n{report}");
    // Every operation Schemathesis selects from the document (all but its own
    // document's) is tested.
    let selected = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Selected: "))
        .and_then(|counts| counts.split_once('/'))
        .map(|(selected, total)| (selected.to_owned(), total.to_owned()));
    let Some((selected, total)) = selected else {
        panic!("{engine}: no count of operations:\n{report}");
    };
    assert!(
        selected == total
            && report.contains(&format!("Tested: {selected}\n"))
            && report.contains(" passed"),
        "{engine}: every operation tested:\n{report}"
    );
}

#[test]
#[ignore = "needs Python's schemathesis: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
fn schemathesis_finds_nothing_on_the_local_engine() {
    let (local, repo) = Local::new();
    local.write("ok.yaml", &configmap("ok", &repo.bare, "echo fine", ""));
    local.write("slow.yaml", &configmap("slow", &repo.bare, "sleep 5", ""));
    let kubeci = local.serve(&[], &[]);
    schemathesis(&kubeci, "serve --local");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Python's schemathesis: .ci/run installs it and runs cargo test --workspace -- --include-ignored"]
async fn schemathesis_finds_nothing_on_the_kubernetes_engine() {
    let cluster = common::cluster::TestCluster::fake().await;
    cluster
        .apply("ok", &cluster.job_yaml("ok", "echo fine", ""))
        .await;
    cluster
        .apply("slow", &cluster.job_yaml("slow", "sleep 5", ""))
        .await;
    let kubeci = cluster.serve(&[]);
    let probe = Kubeci::probe(kubeci.port);
    tokio::task::spawn_blocking(move || schemathesis(&probe, "serve --kubernetes"))
        .await
        .unwrap();
    drop(kubeci);
    cluster.finish().await;
}
