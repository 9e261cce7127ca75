use super::*;
use serde_json::json;

fn review(value: serde_json::Value) -> TokenReviewStatus {
    serde_json::from_value(value).unwrap()
}

fn good_review() -> serde_json::Value {
    json!({
        "authenticated": true,
        "audiences": ["kubeci-collect"],
        "user": {
            "username": "system:serviceaccount:team:default",
            "extra": {
                "authentication.kubernetes.io/pod-name": ["web-7-abcde"],
                "authentication.kubernetes.io/pod-uid": ["pod-uid-1"],
            },
        },
    })
}

#[test]
fn a_collector_is_the_pod_its_reviewed_token_was_bound_to_for_kubeci_s_audience_only() {
    assert_eq!(
        CollectorIdentity::of_review(&review(good_review())),
        Ok(CollectorIdentity {
            namespace: "team".into(),
            pod: "web-7-abcde".into(),
            pod_uid: "pod-uid-1".into(),
        })
    );
    let refused = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut value = good_review();
        change(&mut value);
        CollectorIdentity::of_review(&review(value)).unwrap_err()
    };
    let not_authenticated = refused(&|v| {
        v["authenticated"] = json!(false);
        v["error"] = json!("token audiences [\"other\"] is invalid");
    });
    assert_eq!(
        (not_authenticated.status, not_authenticated.code),
        (401, "not-a-collector")
    );
    assert!(
        not_authenticated.why.contains("is invalid"),
        "{not_authenticated:?}"
    );
    assert_eq!(
        refused(&|v| v["audiences"] = json!(["https://kubernetes.default.svc"])).status,
        401
    );
    assert_eq!(refused(&|v| v["audiences"] = json!(null)).status, 401);
    // A ServiceAccount's token not bound to a pod, a user's, two pods named: none is a
    // collector.
    assert_eq!(refused(&|v| v["user"]["extra"] = json!({})).status, 401);
    assert_eq!(
        refused(&|v| v["user"]["username"] = json!("alice")).status,
        401
    );
    assert_eq!(
        refused(
            &|v| v["user"]["extra"]["authentication.kubernetes.io/pod-name"] = json!(["a", "b"])
        )
        .status,
        401
    );
}

fn job() -> BuildJob {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-7", "namespace": "team", "uid": "job-uid-7",
            "labels": {"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": "web", "kubeci.io/build": "7"},
            "annotations": {"kubeci.io/outputs": "{\"workdir\":\"app\",\"test_reports\":[\"**/junit*.xml\"],\"artifacts\":[\"dist/\"]}"},
        },
    }))
    .unwrap()
}

fn pod() -> BuildPod {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-7-abcde", "namespace": "team", "uid": "pod-uid-1",
            "labels": {"app.kubernetes.io/managed-by": "kubeci", "kubeci.io/job": "web", "kubeci.io/build": "7"},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "web-7", "uid": "job-uid-7", "controller": true}],
        },
        "status": {"phase": "Running"},
    }))
    .unwrap()
}

fn who() -> CollectorIdentity {
    CollectorIdentity {
        namespace: "team".into(),
        pod: "web-7-abcde".into(),
        pod_uid: "pod-uid-1".into(),
    }
}

// Long on purpose: every way a pod may not be its build's, one table.
#[test]
fn a_build_pod_kubeci_runs_may_hand_over_its_own_build_s_files_and_no_other_pod_may() {
    let build = authorize_pod(&who(), Some(&pod()), Some(&job())).unwrap();
    assert_eq!(
        (build.namespace.as_str(), build.job.as_str(), build.number),
        ("team", "web", 7)
    );
    assert_eq!(build.declared.workdir, "app");

    let refused = |pod: Option<BuildPod>, job: Option<BuildJob>| {
        authorize_pod(&who(), pod.as_ref(), job.as_ref()).unwrap_err()
    };
    let changed_pod = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut value = serde_json::to_value(pod()).unwrap();
        change(&mut value);
        Some(serde_json::from_value::<BuildPod>(value).unwrap())
    };
    let changed_job = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut value = serde_json::to_value(job()).unwrap();
        change(&mut value);
        Some(serde_json::from_value::<BuildJob>(value).unwrap())
    };
    let not_a_build = [
        ("no such pod", refused(None, Some(job()))),
        (
            "another pod made under its name",
            refused(
                changed_pod(&|p| p["metadata"]["uid"] = json!("pod-uid-2")),
                Some(job()),
            ),
        ),
        (
            "not kubeci's",
            refused(
                changed_pod(&|p| {
                    p["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("helm")
                }),
                Some(job()),
            ),
        ),
        // A pod made by hand with the build's labels, owned by nothing, or naming the
        // build's Job without its uid.
        (
            "a forged pod",
            refused(
                changed_pod(&|p| p["metadata"]["ownerReferences"] = json!([])),
                Some(job()),
            ),
        ),
        (
            "a forged owner",
            refused(
                changed_pod(&|p| p["metadata"]["ownerReferences"][0]["uid"] = json!("other")),
                Some(job()),
            ),
        ),
        (
            "owned, not controlled",
            refused(
                changed_pod(&|p| p["metadata"]["ownerReferences"][0]["controller"] = json!(false)),
                Some(job()),
            ),
        ),
        (
            "labelled as another build",
            refused(
                changed_pod(&|p| p["metadata"]["labels"]["kubeci.io/build"] = json!("8")),
                Some(job()),
            ),
        ),
        ("no Job", refused(Some(pod()), None)),
        (
            "a Job not kubeci's",
            refused(
                Some(pod()),
                changed_job(&|j| {
                    j["metadata"]["labels"]["app.kubernetes.io/managed-by"] = json!("me")
                }),
            ),
        ),
        (
            "a Job of another namespace",
            refused(
                Some(pod()),
                changed_job(&|j| j["metadata"]["namespace"] = json!("other")),
            ),
        ),
    ];
    for (case, refusal) in not_a_build {
        assert_eq!(
            (refusal.status, refusal.code),
            (403, "not-a-build-pod"),
            "{case}"
        );
        assert!(
            refusal.why.contains("pod team/web-7-abcde") && !refusal.why.contains("web-7 "),
            "{case}: says which pod, never which builds exist: {refusal:?}"
        );
    }
    let nothing = refused(
        Some(pod()),
        changed_job(&|j| j["metadata"]["annotations"] = json!({})),
    );
    assert_eq!((nothing.status, nothing.code), (403, "nothing-declared"));
    // A Job's annotation declaring more than the spec lets a job declare (written by hand
    // on a Job of its own namespace) is not read on each request.
    let many: Vec<String> = (0..33).map(|n| format!("dist/{n}/*")).collect();
    let long = format!("dist/{}", "a".repeat(300));
    let huge = format!("{{\"artifacts\": [\"{}\"]}}", "b".repeat(200_000));
    let over_bounds = [
        json!({"artifacts": many}).to_string(),
        json!({"test_reports": [long]}).to_string(),
        huge,
    ];
    for annotation in over_bounds {
        let refusal = refused(
            Some(pod()),
            changed_job(&|j| {
                j["metadata"]["annotations"] = json!({"kubeci.io/outputs": annotation})
            }),
        );
        assert_eq!((refusal.status, refusal.code), (403, "bad-declaration"));
        assert!(refusal.why.contains("more than a job may"), "{refusal:?}");
    }
    let ended = refused(
        changed_pod(&|p| p["status"]["phase"] = json!("Succeeded")),
        Some(job()),
    );
    assert_eq!((ended.status, ended.code), (409, "build-ended"));
}

#[test]
fn only_the_files_its_job_declares_under_their_own_kind_and_by_a_path_that_stays_under_the_build() {
    let build = authorize_pod(&who(), Some(&pod()), Some(&job())).unwrap();
    assert_eq!(
        authorize_file(&build, FileKind::Report, "pkg/junit-unit.xml"),
        Ok(())
    );
    assert_eq!(
        authorize_file(&build, FileKind::Artifact, "dist/app.tar.gz"),
        Ok(())
    );
    assert_eq!(
        authorize_file(&build, FileKind::Artifact, "dist/sub/dir/x"),
        Ok(())
    );
    let code = |kind, path: &str| authorize_file(&build, kind, path).unwrap_err().code;
    assert_eq!(
        code(FileKind::Artifact, "pkg/junit-unit.xml"),
        "not-declared",
        "a report is not an artifact"
    );
    assert_eq!(code(FileKind::Report, "dist/app.tar.gz"), "not-declared");
    assert_eq!(code(FileKind::Artifact, "secrets.env"), "not-declared");
    for path in [
        "../junit.xml",
        "dist/../../record.json",
        "/etc/passwd",
        "dist//x",
        "dist/./x",
        "",
        "dist/a\u{0}b",
    ] {
        assert_eq!(code(FileKind::Artifact, path), "bad-path", "{path:?}");
    }
}
