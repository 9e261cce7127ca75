//! The state of every job's newest build, kept from the watch events of one scope's caches
//! (a job's entry is worked out again when its Jobs or pods change, all of them after a
//! re-list), so the jobs page's state filter reads it as it is. Worked out per request from
//! 10,000 cached Jobs it took tens of milliseconds, most of them fetching cold memory.
//!
//! A state that time alone changes (a pod that cannot start errs once the pending deadline
//! passes) is kept with when it changes ([`NewestState::later`]), so it needs no event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use kubeci_build::keys;
use kubeci_build::record::{BuildJob, BuildPod};
use kubeci_engine::api::{NewestState, StatesByJob};
use kubeci_engine::observe;

use crate::label;
use crate::packed::{Changed, JobKey, Packed};

/// One scope's caches.
pub(crate) struct Caches {
    pub jobs: Arc<Packed<BuildJob>>,
    pub pods: Arc<Packed<BuildPod>>,
}

/// The newest builds' states of one scope.
pub(crate) struct NewestStates {
    caches: OnceLock<Caches>,
    /// Copied on write only while a reader holds the previous version.
    states: Mutex<Arc<StatesByJob>>,
    pending_deadline: i64,
}

impl NewestStates {
    pub(crate) fn new(pending_deadline: i64) -> NewestStates {
        NewestStates {
            caches: OnceLock::new(),
            states: Mutex::new(Arc::default()),
            pending_deadline,
        }
    }

    /// Starts following `caches` (whose watches call [`NewestStates::after`]).
    pub(crate) fn follow(&self, caches: Caches) {
        if self.caches.set(caches).is_ok() {
            self.after(Changed::All);
        }
    }

    /// The states as they are now.
    pub(crate) fn snapshot(&self) -> Arc<StatesByJob> {
        Arc::clone(&self.states.lock().expect("the newest states lock"))
    }

    /// After a watch event (the cache and its index already show it): works out again the
    /// states of the jobs whose objects it changed. Each runs under the lock, reading the
    /// caches then, so the last one to run saw every change before it.
    pub(crate) fn after(&self, changed: Changed) {
        let Some(caches) = self.caches.get() else {
            return;
        };
        let mut states = self.states.lock().expect("the newest states lock");
        match changed {
            Changed::Nothing => {}
            Changed::All => {
                // Job by job: the packed caches are read back one job at a time.
                let mut all = StatesByJob::new();
                for key in caches.jobs.jobs() {
                    let state = self.state_of(caches, &key);
                    set(&mut all, key, state);
                }
                *states = Arc::new(all);
            }
            Changed::Jobs(jobs) => {
                for key in jobs {
                    let state = self.state_of(caches, &key);
                    set(Arc::make_mut(&mut states), key, state);
                }
            }
        }
    }

    /// The state of job `key`'s newest build, from its cached objects alone.
    fn state_of(&self, caches: &Caches, (namespace, job): &JobKey) -> Option<NewestState> {
        let jobs = caches.jobs.of_job(namespace, job);
        let pods = caches.pods.of_job(namespace, job);
        states_of(&jobs, &pods, self.pending_deadline)
            .get(namespace)?
            .get(job)
            .copied()
    }
}

/// `key`'s entry of `states` set to `state` (or removed: no build).
fn set(states: &mut StatesByJob, (namespace, job): JobKey, state: Option<NewestState>) {
    match state {
        Some(state) => {
            states.entry(namespace).or_default().insert(job, state);
        }
        None => {
            if let Some(jobs) = states.get_mut(&namespace) {
                jobs.remove(&job);
                if jobs.is_empty() {
                    states.remove(&namespace);
                }
            }
        }
    }
}

/// The state of the newest build of every job of `jobs` (build Jobs, with `pods`). One
/// pass keeps each job's newest (keyed by the names the objects hold, nothing copied), one
/// files the pods by build, and only the newest builds' states are worked out.
pub(crate) fn states_of(
    jobs: &[Arc<BuildJob>],
    pods: &[Arc<BuildPod>],
    pending_deadline: i64,
) -> StatesByJob {
    let mut newest: HashMap<(&str, &str), (u64, &str, &BuildJob)> =
        HashMap::with_capacity(jobs.len());
    for job in jobs {
        let (Some(name), Some(build)) = (label(&**job, keys::JOB), label(&**job, keys::BUILD))
        else {
            continue;
        };
        let Ok(number) = build.parse::<u64>() else {
            continue;
        };
        let namespace = job.metadata.namespace.as_deref().unwrap_or_default();
        let slot = newest
            .entry((namespace, name))
            .or_insert((number, build, job));
        if slot.0 < number {
            *slot = (number, build, job);
        }
    }
    let mut pods_by_build: HashMap<(&str, &str, &str), Vec<&BuildPod>> = HashMap::new();
    for pod in pods {
        if let (Some(job), Some(build)) = (label(&**pod, keys::JOB), label(&**pod, keys::BUILD)) {
            let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
            pods_by_build
                .entry((namespace, job, build))
                .or_default()
                .push(pod);
        }
    }
    let mut states = StatesByJob::new();
    for ((namespace, name), (_, build, job)) in newest {
        let pods = pods_by_build
            .get(&(namespace, name, build))
            .map_or(&[][..], Vec::as_slice);
        let state = observe::build_state_over_time(job, pods, pending_deadline);
        if !states.contains_key(namespace) {
            states.insert(namespace.to_owned(), HashMap::new());
        }
        if let Some(jobs) = states.get_mut(namespace) {
            jobs.insert(name.to_owned(), state.into());
        }
    }
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use kubeci_engine::api::LatestStates;
    use serde_json::json;

    const T0: i64 = 1_795_428_000; // 2026-11-23T10:00:00Z

    fn build_job(job: &str, number: u64, status: serde_json::Value) -> BuildJob {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ci", "name": format!("{job}-{number}"),
                "labels": {keys::JOB: job, keys::BUILD: number.to_string()}},
            "spec": {"template": {}},
            "status": status,
        }))
        .unwrap()
    }

    fn complete() -> serde_json::Value {
        json!({"conditions": [{"type": "Complete", "status": "True"}]})
    }

    /// A pod that cannot start: its Secret is missing.
    fn stuck_pod(job: &str, number: u64) -> BuildPod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "ci", "name": format!("{job}-{number}-x"),
                "creationTimestamp": "2026-11-23T10:00:00Z",
                "labels": {keys::JOB: job, keys::BUILD: number.to_string()}},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "build", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "CreateContainerConfigError", "message": "secret \"k\" not found"}}}]},
        }))
        .unwrap()
    }

    /// A scope's caches fed by hand, as its watches feed them.
    struct Scope {
        jobs: Arc<Packed<BuildJob>>,
        pods: Arc<Packed<BuildPod>>,
        newest: NewestStates,
    }

    impl Scope {
        fn new() -> Scope {
            let jobs = Arc::new(Packed::new(|_: &BuildJob| false));
            let pods = Arc::new(Packed::new(|_: &BuildPod| false));
            let newest = NewestStates::new(300);
            newest.follow(Caches {
                jobs: Arc::clone(&jobs),
                pods: Arc::clone(&pods),
            });
            Scope { jobs, pods, newest }
        }

        fn job(&mut self, event: Event<BuildJob>) {
            self.newest.after(self.jobs.apply(&event));
        }

        fn pod(&mut self, event: Event<BuildPod>) {
            self.newest.after(self.pods.apply(&event));
        }

        fn state(&self, job: &str, now: i64) -> Option<&'static str> {
            LatestStates::new(vec![self.newest.snapshot()], now)
                .get("ci", job)
                .map(kubeci_engine::Phase::as_str)
        }
    }

    #[test]
    fn each_job_s_newest_build_state_follows_its_objects_and_time() {
        let mut scope = Scope::new();
        scope.job(Event::Apply(build_job("api", 1, complete())));
        scope.job(Event::Apply(build_job(
            "web",
            1,
            json!({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}),
        )));
        assert_eq!(scope.state("api", T0), Some("succeeded"));
        assert_eq!(scope.state("web", T0), Some("failed"));
        assert_eq!(scope.state("docs", T0), None, "never built");

        // A newer build whose pod cannot start: pending, an error once the deadline passed.
        scope.job(Event::Apply(build_job("api", 2, json!({}))));
        assert_eq!(scope.state("api", T0), Some("pending"), "no pod yet");
        scope.pod(Event::Apply(stuck_pod("api", 2)));
        assert_eq!(scope.state("api", T0 + 299), Some("pending"));
        assert_eq!(scope.state("api", T0 + 300), Some("error"), "by time alone");
        let held = scope.newest.snapshot();

        // It ends; then it is deleted, and the build before it is the newest again.
        scope.job(Event::Apply(build_job("api", 2, complete())));
        assert_eq!(scope.state("api", T0 + 300), Some("succeeded"));
        assert_eq!(
            LatestStates::new(vec![held], T0).get("ci", "api"),
            Some(kubeci_engine::Phase::Pending),
            "a reader's snapshot stays as it was"
        );
        scope.job(Event::Delete(build_job("api", 2, complete())));
        scope.pod(Event::Delete(stuck_pod("api", 2)));
        assert_eq!(scope.state("api", T0), Some("succeeded"));
        scope.job(Event::Delete(build_job("api", 1, complete())));
        assert_eq!(scope.state("api", T0), None, "no build left");

        // Kept event by event, the states are what a full pass over the caches gives.
        let kept = scope.newest.snapshot();
        scope.newest.after(Changed::All);
        assert_eq!(*kept, *scope.newest.snapshot());
    }

    #[test]
    fn a_relist_replaces_every_state() {
        let mut scope = Scope::new();
        scope.job(Event::Apply(build_job("api", 1, complete())));
        scope.job(Event::Init);
        scope.job(Event::InitApply(build_job("web", 3, json!({}))));
        assert_eq!(scope.state("api", T0), Some("succeeded"), "until complete");
        scope.job(Event::InitDone);
        assert_eq!(scope.state("api", T0), None);
        assert_eq!(scope.state("web", T0), Some("pending"));
    }
}
