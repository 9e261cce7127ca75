use super::*;
use kubeci_build::record::BuildPod;
use serde_json::json;

fn pod(namespace: &str, name: &str, job: Option<&str>) -> BuildPod {
    let mut labels = serde_json::Map::new();
    if let Some(job) = job {
        labels.insert(keys::JOB.into(), job.into());
    }
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": name, "labels": labels,
                     "finalizers": if name.starts_with("held") { json!([keys::ARCHIVE_FINALIZER]) } else { json!(null) }},
        "status": {"phase": "Running", "containerStatuses": [{"name": "build", "image": "i", "imageID": "",
            "ready": true, "restartCount": 0, "state": {"running": {"startedAt": "2026-12-07T10:00:00Z"}}}]},
    }))
    .unwrap()
}

fn cache() -> Packed<BuildPod> {
    Packed::new(kubeci_engine::pod_hold::is_held)
}

fn names(pods: Vec<Arc<BuildPod>>) -> Vec<String> {
    let mut names: Vec<String> = pods.iter().map(|p| p.name_any()).collect();
    names.sort();
    names
}

#[test]
fn objects_read_back_as_they_were_and_are_found_by_their_job_until_deleted() {
    let cache = cache();
    let first = pod("team", "build-1", Some("build"));
    cache.apply(&Event::Apply(first.clone()));
    cache.apply(&Event::Apply(pod("team", "build-2", Some("build"))));
    cache.apply(&Event::Apply(pod("other", "build-3", Some("build"))));
    cache.apply(&Event::Apply(pod("team", "stray", None)));
    assert_eq!(
        *cache.get("team", "build-1").unwrap(),
        first,
        "read back whole"
    );
    assert!(cache.get("other", "build-1").is_none());
    assert_eq!(names(cache.of_job("team", "build")), ["build-1", "build-2"]);
    assert_eq!(names(cache.of_job("other", "build")), ["build-3"]);
    let mut jobs = cache.jobs();
    jobs.sort();
    let key = |namespace: &str| (namespace.to_owned(), "build".to_owned());
    assert_eq!(
        jobs,
        [key("other"), key("team")],
        "a stray is filed under no job"
    );
    cache.apply(&Event::Delete(pod("team", "build-1", Some("build"))));
    assert_eq!(names(cache.of_job("team", "build")), ["build-2"]);
    assert!(cache.get("team", "build-1").is_none());
    assert!(cache.of_job("team", "stray").is_empty());
}

#[test]
fn a_relabelled_object_moves_and_its_delete_removes_it_under_its_old_label_too() {
    let cache = cache();
    let key = |job: &str| ("team".to_owned(), job.to_owned());
    assert_eq!(
        cache.apply(&Event::Apply(pod("team", "build-1", Some("build")))),
        Changed::Jobs(vec![key("build")])
    );
    assert_eq!(
        cache.apply(&Event::Apply(pod("team", "build-1", Some("test")))),
        Changed::Jobs(vec![key("build"), key("test")]),
        "both jobs changed"
    );
    assert!(cache.of_job("team", "build").is_empty());
    assert_eq!(names(cache.of_job("team", "test")), ["build-1"]);
    assert_eq!(
        cache.apply(&Event::Delete(pod("team", "build-1", None))),
        Changed::Jobs(vec![key("test")])
    );
    assert!(cache.of_job("team", "test").is_empty());
    assert_eq!(
        cache.apply(&Event::Apply(pod("team", "stray", None))),
        Changed::Jobs(vec![])
    );
}

#[test]
fn a_relist_replaces_the_cache_only_when_complete() {
    let cache = cache();
    cache.apply(&Event::Apply(pod("team", "gone", Some("build"))));
    cache.apply(&Event::<BuildPod>::Init);
    cache.apply(&Event::InitApply(pod("team", "kept", Some("build"))));
    assert_eq!(names(cache.of_job("team", "build")), ["gone"]);
    assert_eq!(cache.apply(&Event::<BuildPod>::InitDone), Changed::All);
    assert_eq!(names(cache.of_job("team", "build")), ["kept"]);
    assert!(cache.get("team", "gone").is_none());
}

#[test]
fn marked_objects_are_found_without_reading_the_others_and_leave_when_unmarked() {
    let cache = cache();
    cache.apply(&Event::Apply(pod("team", "held-1", Some("build"))));
    cache.apply(&Event::Apply(pod("team", "build-2", Some("build"))));
    assert_eq!(names(cache.marked()), ["held-1"]);
    // Released: its finalizer is gone.
    let mut released = pod("team", "held-1", Some("build"));
    released.metadata.finalizers = None;
    cache.apply(&Event::Apply(released));
    assert!(cache.marked().is_empty());
    cache.apply(&Event::Apply(pod("team", "held-3", Some("build"))));
    cache.apply(&Event::Delete(pod("team", "held-3", Some("build"))));
    assert!(cache.marked().is_empty(), "deleted");
}
