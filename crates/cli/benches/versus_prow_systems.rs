//! kubeci and Prow side by side on the real control plane (issue 31), set up for the same
//! work in the [`World`] (versus_prow_world.rs): per system a namespace of its own, its
//! identity (kubeci's ServiceAccount with the RBAC of deploy/manifests/kubeci.yaml; Prow's
//! from `kubeci_testkit::prow`) and one job: on a pull request from a trusted author,
//! clone its head, run [`SCRIPT`], report the result as a commit status.
//!
//! A driver starts a [`Side`] for each system, opens pull requests
//! ([`World::pull_request`]) and delivers them ([`Side::deliver`]), then reads the times
//! ([`Side::wait_reported`]), the API requests each system made (its user in the audit
//! log) and the GitHub calls (the fake's log, by `User-Agent`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};
use kube::runtime::watcher;
use kubeci_testkit::prow::{Presubmit, Prow, ProwSettings};
use serde_json::json;

use crate::world::{free_port, http, Plane, World, AUTHOR, GITHUB_TOKEN, REPO, REPO_URL};

const SECRET: &str = "versus-prow-webhook-secret";
/// What each build runs in the checkout of the pull request's head.
pub const SCRIPT: &str = "test -f README.md\necho \"built $(git rev-parse HEAD)\"";
/// How long one build may take from its delivery to its reported status.
const PATIENCE: Duration = Duration::from_secs(120);

/// Which system a [`Side`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Kubeci,
    Prow,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Kubeci => "kubeci",
            System::Prow => "Prow",
        }
    }

    /// The commit status context its job reports.
    pub fn context(self) -> &'static str {
        match self {
            System::Kubeci => "kubeci/hello",
            System::Prow => "prow/hello",
        }
    }

    /// The container of its build pod that runs the script (plank names an undecorated
    /// job's one container `test`).
    fn build_container(self) -> &'static str {
        match self {
            System::Kubeci => "build",
            System::Prow => "test",
        }
    }

    /// Whether the fake GitHub's call came from this system (Prow's commands send
    /// `<command>/<version>`, or `<command>.<plugin>/<version>`).
    pub fn made(self, user_agent: &str) -> bool {
        let command = user_agent.split(['/', '.']).next().unwrap_or("");
        let prow = kubeci_testkit::prow::COMPONENTS.contains(&command);
        prow == (self == System::Prow)
    }
}

/// When each pod of a namespace was first seen and when its container first started, from
/// a watch.
#[derive(Default)]
struct PodTimes {
    created: BTreeMap<String, Instant>,
    started: BTreeMap<String, Instant>,
    /// The pull request of each pod that names it ([`pull_of`]).
    pull: BTreeMap<String, u64>,
}

fn started(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    let statuses = status.and_then(|s| s.container_statuses.as_ref());
    status.and_then(|s| s.phase.as_deref()) == Some("Running")
        || statuses.is_some_and(|c| {
            c.iter().any(|c| {
                c.state
                    .as_ref()
                    .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            })
        })
}

/// The pull request a build pod is for, when the pod says: Prow's carry it as a label;
/// kubeci's name only their job and build (the pull request is on the Job).
fn pull_of(pod: &Pod) -> Option<u64> {
    pod.metadata
        .labels
        .as_ref()?
        .get("prow.k8s.io/refs.pull")?
        .parse()
        .ok()
}

/// A namespace name for one start of a system: the one before may still be terminating.
fn fresh_namespace(system: &str) -> String {
    static STARTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let start = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{system}-{}-{start}", std::process::id())
}

/// What a system is given besides its one job, before it starts (the cost phase's
/// background; nothing for the other phases).
#[derive(Default)]
pub struct Background<'a> {
    /// Prow's other presubmits (kubeci's other jobs are ConfigMaps `prepare` makes).
    pub presubmits: Vec<Presubmit>,
    /// Prow's sinker at Prow's defaults, not at the ages of its integration test.
    pub sinker_defaults: bool,
    /// Called with the system's namespace once it and the system's identity exist.
    pub prepare: Option<&'a dyn Fn(&str)>,
    /// No watch of its pods by the driver (which would list the background's pods while
    /// the system starts): [`Side::wait_reported`] and [`Side::pods_seen_since`] see none.
    pub unwatched: bool,
}

/// One system, started in its namespace.
pub struct Side {
    pub system: System,
    pub namespace: String,
    /// When its processes were launched, and how long until they answered ready (kubeci's
    /// `/readyz`; each Prow command's health or metrics endpoint).
    pub launched: Instant,
    pub ready: Duration,
    /// The user its API requests are made as, in the audit log.
    pub user: String,
    hook_port: u16,
    times: Arc<Mutex<PodTimes>>,
    watching: tokio::task::JoinHandle<()>,
    process: Running,
}

enum Running {
    Kubeci(KubeciProcess, tempfile::TempDir),
    Prow(Prow),
}

/// `kubeci serve`, killed when dropped (a driver that fails leaves none behind).
struct KubeciProcess(std::process::Child);

impl Drop for KubeciProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Side {
    /// Prow in namespace `prow-<pid>`: the ProwJob CRD applied (`scripts/prow apply-crd`),
    /// its identity made, hook, plank, crier and sinker started.
    pub fn prow(world: &World) -> Side {
        Side::prow_with(world, &Background::default())
    }

    /// [`Side::prow`] given `background` too.
    pub fn prow_with(world: &World, background: &Background) -> Side {
        let plane = &world.plane;
        let namespace = fresh_namespace("prow");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/prow");
        let applied = Command::new("bash")
            .arg(&script)
            .arg("apply-crd")
            .env("KUBECONFIG", &plane.kubeconfig)
            .status()
            .unwrap();
        assert!(applied.success(), "scripts/prow apply-crd failed");
        plane.namespace(&namespace, json!({}));
        let objects = kubeci_testkit::prow::identity_objects(&namespace);
        let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
        plane.kubectl(&["apply", "-f", "-"], &list.to_string());
        let account = kubeci_testkit::prow::SERVICE_ACCOUNT;
        let token = plane.kubectl(
            &[
                "create",
                "token",
                account,
                "-n",
                &namespace,
                "--duration=4h",
            ],
            "",
        );
        plane.map_repository(&namespace, &world.bare);
        if let Some(prepare) = background.prepare {
            prepare(&namespace);
        }
        let mut presubmits = vec![Presubmit {
            repo: REPO.into(),
            name: "hello".into(),
            script: SCRIPT.into(),
        }];
        presubmits.extend(background.presubmits.iter().cloned());
        let sinker =
            (!background.sinker_defaults).then(kubeci_testkit::prow::integration_test_sinker);
        let launched = Instant::now();
        let prow = Prow::start(&ProwSettings {
            namespace: namespace.clone(),
            api_server: plane.api_server.clone(),
            api_server_ca: plane.ca.clone(),
            token: token.trim().to_owned(),
            github_url: world.github.url(),
            github_token: GITHUB_TOKEN.into(),
            hmac_secret: SECRET.into(),
            presubmits,
            sinker,
        });
        let ready = launched.elapsed();
        let hook_port = prow.hook_port();
        let user = format!("system:serviceaccount:{namespace}:{account}");
        let side = Side::watching(
            world,
            (System::Prow, !background.unwatched),
            namespace,
            user,
            hook_port,
            Running::Prow(prow),
        );
        Side {
            launched,
            ready,
            ..side
        }
    }

    /// kubeci (`serve --kubernetes`) in namespace `kubeci-<pid>`, as its ServiceAccount
    /// with the RBAC of deploy/manifests/kubeci.yaml.
    pub fn kubeci(world: &World) -> Side {
        Side::kubeci_with(world, &Background::default())
    }

    /// [`Side::kubeci`] given `background` too.
    pub fn kubeci_with(world: &World, background: &Background) -> Side {
        let plane = &world.plane;
        let namespace = fresh_namespace("kubeci");
        plane.namespace(&namespace, json!({"kubeci.io/builds": "enabled"}));
        let token = kubeci_identity(plane);
        plane.map_repository(&namespace, &world.bare);
        let job = format!(
            "- job:\n    name: hello\n    image: bash:5\n    git:\n      url: {REPO_URL}\n      branch: master\n    run_command: {}\n    timeout: 10m\n    ghprb:\n      enabled: true\n      whitelisted_users: [{AUTHOR}]\n",
            serde_json::to_string(SCRIPT).unwrap()
        );
        let configmap = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hello", "namespace": namespace, "labels": {"ci-job-spec": "true"}},
            "data": {"job.yaml": job}});
        plane.kubectl(&["apply", "-f", "-"], &configmap.to_string());
        if let Some(prepare) = background.prepare {
            prepare(&namespace);
        }
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text).unwrap();
            dir.path().join(name).display().to_string()
        };
        let kubeconfig = file("kubeconfig", &plane.kubeconfig_as(&token, &namespace));
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("kubeci.log")).unwrap();
        let launched = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_kubeci"))
            .args([
                "serve",
                "--kubernetes",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--namespace", &namespace, "--lease-namespace", &namespace])
            .args(["--github-webhook-secret-file", &file("secret", SECRET)])
            .args(["--github-token-file", &file("github-token", GITHUB_TOKEN)])
            .args([
                "--github-url",
                &world.github.url(),
                "--github-host",
                "github.com",
            ])
            .args(["--github-bot", "ci-bot", "--github-resync", "0s"])
            .args(["--token-file", &file("token", "versus-prow-api-token")])
            .env("KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        while http(port, "GET", "/readyz", &[], b"") != 200 {
            assert!(
                launched.elapsed() < Duration::from_secs(60),
                "kubeci never ready"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let ready = launched.elapsed();
        let user = "system:serviceaccount:kubeci:kubeci".to_owned();
        let running = Running::Kubeci(KubeciProcess(child), dir);
        let watched = (System::Kubeci, !background.unwatched);
        let side = Side::watching(world, watched, namespace, user, port, running);
        Side {
            launched,
            ready,
            ..side
        }
    }

    fn watching(
        world: &World,
        (system, watched): (System, bool),
        namespace: String,
        user: String,
        hook_port: u16,
        process: Running,
    ) -> Side {
        let times = Arc::new(Mutex::new(PodTimes::default()));
        let pods: Api<Pod> = Api::namespaced(world.plane.client.clone(), &namespace);
        let seen = times.clone();
        let watching = world.runtime.spawn(async move {
            if !watched {
                return;
            }
            let mut events = watcher(pods, watcher::Config::default()).boxed();
            while let Some(event) = events.next().await {
                let (Ok(watcher::Event::Apply(pod)) | Ok(watcher::Event::InitApply(pod))) = event
                else {
                    continue;
                };
                let now = Instant::now();
                let name = pod.metadata.name.clone().unwrap_or_default();
                let mut times = seen.lock().unwrap();
                times.created.entry(name.clone()).or_insert(now);
                if let Some(pull) = pull_of(&pod) {
                    times.pull.insert(name.clone(), pull);
                }
                if started(&pod) {
                    times.started.entry(name).or_insert(now);
                }
            }
        });
        Side {
            system,
            namespace,
            launched: Instant::now(),
            ready: Duration::ZERO,
            user,
            hook_port,
            times,
            watching,
            process,
        }
    }

    /// Delivers pull request `number`'s `opened` payload as GitHub does, signed for this
    /// system's webhook; the HTTP status.
    pub fn deliver(&self, number: u64, body: &[u8]) -> u16 {
        let id = format!("versus-{}-{number}", self.system.name());
        let mut headers = vec![
            ("Content-Type", "application/json".to_owned()),
            ("X-GitHub-Event", "pull_request".to_owned()),
            ("X-GitHub-Delivery", id),
            (
                "X-Hub-Signature-256",
                kubeci_github::signature::sign(SECRET.as_bytes(), body),
            ),
        ];
        let path = match self.system {
            System::Kubeci => "/hooks/github",
            System::Prow => {
                let signature = kubeci_testkit::prow::signature(SECRET.as_bytes(), body);
                headers.push(("X-Hub-Signature", signature));
                "/hook"
            }
        };
        http(self.hook_port, "POST", path, &headers, body)
    }

    /// When each pod seen in its namespace was first seen, of those first seen after `since`.
    pub fn pods_seen_since(&self, since: Instant) -> Vec<Instant> {
        let times = self.times.lock().unwrap();
        (times.created.values())
            .filter(|at| **at >= since)
            .copied()
            .collect()
    }

    /// Waits until the build of `head` (pull request `number`) is reported `success`;
    /// the times from `sent` to its pod's creation, its container's start and the report.
    pub fn wait_reported(&self, world: &World, number: u64, head: &str, sent: Instant) -> Times {
        let context = self.system.context();
        loop {
            let statuses = world.github.statuses();
            let mut mine = statuses
                .iter()
                .filter(|s| s.sha == head && s.context == context);
            if let Some(last) = mine.next_back().filter(|s| s.state != "pending") {
                assert_eq!(last.state, "success", "{}: {last:?}", self.system.name());
                break;
            }
            assert!(
                sent.elapsed() < PATIENCE,
                "{}: #{number} never reported; {}",
                self.system.name(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let reported = sent.elapsed();
        // Taken out of the watch's record, which is let go before anything waits on the
        // runtime: its task would block a worker on it.
        let (pod, created, started) = {
            let times = self.times.lock().unwrap();
            // The pod naming the pull request, else the first one made after the delivery
            // (a driver delivering one at a time).
            let named = times.pull.iter().find(|(_, pull)| **pull == number);
            let first_after = (times.created.iter())
                .filter(|(_, at)| **at >= sent)
                .min_by_key(|(_, at)| **at);
            let pod = (named.map(|(name, _)| name))
                .or(first_after.map(|(name, _)| name))
                .cloned();
            let pod =
                pod.unwrap_or_else(|| panic!("{}: no pod seen for #{number}", self.system.name()));
            let created = times.created.get(&pod).copied();
            let started = times.started.get(&pod).copied();
            (pod, created, started)
        };
        let since = |at: Option<Instant>| at.map(|at| at.saturating_duration_since(sent));
        // Both built the pull request's head: the script's line in the build container's log.
        let pods: Api<Pod> = Api::namespaced(world.plane.client.clone(), &self.namespace);
        let params = kube::api::LogParams {
            container: Some(self.system.build_container().to_owned()),
            ..Default::default()
        };
        let reading =
            async { tokio::time::timeout(Duration::from_secs(30), pods.logs(&pod, &params)).await };
        let log = world
            .runtime
            .block_on(reading)
            .expect("the log within 30 s")
            .unwrap();
        assert!(
            log.contains(&format!("built {head}")),
            "{}: pod {pod} did not build {head}: {log}",
            self.system.name()
        );
        Times {
            pod_created: since(created),
            started: since(started),
            reported,
        }
    }

    /// Its processes: kubeci's, or each of Prow's commands'.
    pub fn pids(&self) -> Vec<u32> {
        self.processes().into_iter().map(|(_, pid)| pid).collect()
    }

    /// Its processes by name: (command, process id).
    pub fn processes(&self) -> Vec<(&'static str, u32)> {
        match &self.process {
            Running::Kubeci(process, _) => vec![("kubeci", process.0.id())],
            Running::Prow(prow) => prow.pids(),
        }
    }

    /// What its processes cost so far: CPU time used, and resident memory now (MB).
    pub fn cost(&self) -> (Duration, f64) {
        let pids = self.pids();
        let cpu = pids.iter().map(|pid| crate::world::cpu_time(*pid)).sum();
        let rss = pids.iter().map(|pid| crate::world::rss_mb(*pid)).sum();
        (cpu, rss)
    }

    /// What one of its processes logged (kubeci's log for any name).
    pub fn log_of(&self, name: &str) -> String {
        match &self.process {
            Running::Kubeci(..) => self.log(),
            Running::Prow(prow) => prow.log(name),
        }
    }

    /// What the system logged (kubeci's log, or each Prow command's).
    pub fn log(&self) -> String {
        match &self.process {
            Running::Kubeci(_, dir) => {
                std::fs::read_to_string(dir.path().join("kubeci.log")).unwrap_or_default()
            }
            Running::Prow(prow) => kubeci_testkit::prow::COMPONENTS
                .iter()
                .map(|c| format!("--- {c}\n{}", prow.log(c)))
                .collect(),
        }
    }

    /// Stops the system and deletes its namespace (kubeci's finalizer taken off its pods
    /// first, as an administrator would once kubeci is gone — only kubeci's: the Job
    /// controller's own, taken off a pod it has not counted yet, would make it start the
    /// build again).
    pub fn stop(self, world: &World) {
        self.watching.abort();
        // Stopped here, before its namespace goes.
        drop(self.process);
        let plane = &world.plane;
        // Only the pods that hold it: one kubectl each, and the cost phase leaves 10,000.
        let pods: Api<Pod> = Api::namespaced(plane.client.clone(), &self.namespace);
        let listed = world
            .runtime
            .block_on(pods.list_metadata(&Default::default()))
            .unwrap();
        let held = (listed.items.into_iter())
            .filter(|pod| {
                (pod.metadata.finalizers.iter().flatten()).any(|f| f == "kubeci.io/archive")
            })
            .map(|pod| format!("pod/{}", pod.metadata.name.unwrap_or_default()));
        for pod in held {
            let unfinalized =
                r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["kubeci.io/archive"]}}"#;
            plane.kubectl(
                &[
                    "patch",
                    "-n",
                    &self.namespace,
                    &pod,
                    "--type=strategic",
                    "-p",
                    unfinalized,
                ],
                "",
            );
        }
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(world.plane.client.clone());
        let _ = world
            .runtime
            .block_on(namespaces.delete(&self.namespace, &DeleteParams::default()));
        let _ = std::fs::remove_file(
            world
                .plane
                .gitconfig_dir
                .join(format!("{}.gitconfig", self.namespace)),
        );
    }
}

/// From a delivery: its pod created, its container started, its status reported.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub pod_created: Option<Duration>,
    pub started: Option<Duration>,
    pub reported: Duration,
}

/// kubeci as installed: deploy/manifests/kubeci.yaml applied but its Deployment (kubeci
/// runs here), and a token of its ServiceAccount.
fn kubeci_identity(plane: &Plane) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/manifests/kubeci.yaml"),
    )
    .unwrap();
    let mut items =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kubeci"}})];
    items.extend(
        kubeci_spec::yaml::parse_stream(
            &text,
            &kubeci_spec::yaml::PosMap::Identity,
            Default::default(),
        )
        .unwrap()
        .into_iter()
        .filter_map(|d| d.map(|d| d.to_json()))
        .filter(|o| o["kind"] != "Deployment"),
    );
    let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
    plane.kubectl(&["apply", "-f", "-"], &list.to_string());
    plane
        .kubectl(
            &["create", "token", "kubeci", "-n", "kubeci", "--duration=4h"],
            "",
        )
        .trim()
        .to_owned()
}
