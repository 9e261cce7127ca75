//! Every build pod is held for the archive: the Job's pod template carries kubeci's
//! finalizer, which the Job controller copies to the pod it creates.

use kubeci_build::{keys, BuildRequest};
use kubeci_render::{render, JobOrigin, RenderConfig};
use kubeci_spec::Job;

#[test]
fn the_pod_template_carries_kubeci_s_archive_finalizer_and_no_other() {
    let job: Job = serde_json::from_value(serde_json::json!({
        "name": "api",
        "git": {"url": "https://github.com/org/api.git", "branch": "main"},
        "run_command": "make test",
    }))
    .unwrap();
    let origin = JobOrigin {
        namespace: "team".into(),
        spec_hash: "h".into(),
        chart_version: None,
    };
    let rendered = render(
        &job,
        &origin,
        &BuildRequest::manual(3),
        &RenderConfig::default(),
    )
    .unwrap();
    let template = rendered.spec.unwrap().template.metadata.unwrap();
    assert_eq!(
        template.finalizers,
        Some(vec!["kubeci.io/archive".to_owned()]),
        "kube's own job-tracking finalizer is the Job controller's to add, not kubeci's"
    );
    assert_eq!(keys::ARCHIVE_FINALIZER, "kubeci.io/archive");
    assert_eq!(
        rendered.metadata.finalizers, None,
        "the Job itself is not held: retention deletes it once its build is archived"
    );
}
