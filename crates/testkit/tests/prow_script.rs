//! `scripts/prow` as the comparison with Prow uses it (issue 31): the ProwJob CRD it prints
//! is the pinned module's own, small enough for etcd's and the API server's request
//! limits once its schema's descriptions are gone, with every field kept — a field named
//! `description` included. (That the API server takes it and serves ProwJobs is shown by
//! `cargo test -p kubeci --bench versus_prow -- --smoke`, which `.ci/run` runs.)

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// etcd's default request limit, which the CRD as shipped (3.9 MB) is over.
const ETCD_REQUEST_LIMIT: usize = 1536 * 1024;

fn crd() -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/prow");
    let output = Command::new("bash")
        .arg(script)
        .arg("crd")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/prow crd: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Paths (dotted) of every `description` whose value is text.
fn descriptions(value: &Value, path: &str, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let here = format!("{path}.{key}");
                if key == "description" && child.is_string() {
                    found.push(here.clone());
                }
                descriptions(child, &here, found);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                descriptions(child, &format!("{path}[{i}]"), found);
            }
        }
        _ => {}
    }
}

#[test]
#[ignore = "needs Go and Prow's module (scripts/prow build downloads it): .ci/run builds it and runs cargo test --workspace -- --include-ignored"]
fn the_prowjob_crd_fits_the_request_limits_with_every_field_kept() {
    let text = crd();
    assert!(
        text.len() < ETCD_REQUEST_LIMIT,
        "{} bytes: over etcd's request limit",
        text.len()
    );
    let crd: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(crd["kind"], "CustomResourceDefinition");
    assert_eq!(crd["metadata"]["name"], "prowjobs.prow.k8s.io");
    let mut found = Vec::new();
    descriptions(&crd, "", &mut found);
    assert!(
        found.is_empty(),
        "descriptions left: {:?}",
        &found[..found.len().min(5)]
    );
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1");
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(
        status["description"]["type"], "string",
        "the status's own `description` field is a field, not documentation"
    );
    for field in ["state", "pod_name", "build_id", "url", "prev_report_states"] {
        assert!(status[field].is_object(), "status.{field} is gone");
    }
    let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in [
        "type", "job", "refs", "pod_spec", "report", "context", "agent",
    ] {
        assert!(spec[field].is_object(), "spec.{field} is gone");
    }
}
