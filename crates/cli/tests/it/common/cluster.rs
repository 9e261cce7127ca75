//! One scenario, two clusters: the fake API server, whose pods the local engine really
//! runs, or a real cluster named by `KUBECI_E2E_KUBECONFIG`. Either way kubeci talks to it
//! through a fault-injecting [`ApiProxy`] — requests held to time a crash, errors, dropped
//! and expired watches, an outage — and the test reads and changes the cluster with the
//! kube client, as `kubectl` would.
//!
//! A real cluster must pull `bash:5` and kubeci's clone image (`KUBECI_E2E_CLONE_IMAGE`,
//! default `--clone-image`'s), and reach the repository its builds clone
//! (`KUBECI_E2E_REPO`, default `https://github.com/octocat/Hello-World.git`, branch
//! `KUBECI_E2E_BRANCH`, default `master`). Each scenario gets its own namespace, deleted at
//! its end.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kubeci_testkit::{ApiProxy, FakeApiServer, PodBehaviour};
use serde_json::json;

use super::serve::{http, spawn_in, Kubeci};

mod rbac;
pub use rbac::*;

pub struct TestCluster {
    /// What kubeci talks to.
    pub proxy: ApiProxy,
    /// The cluster itself, for the test's own reads and changes.
    pub client: kube::Client,
    pub namespace: String,
    fake: Option<FakeApiServer>,
    repo: (String, String),
    /// The bare repository on this machine that `repo`'s URL stands for, when builds run
    /// here (the fake's kubelet or the node agent).
    local_repo: Option<std::path::PathBuf>,
    /// Where the node agent reads a namespace's git configuration (`<ns>.gitconfig`); for
    /// the fake, its kubelet reads `dir/gitconfig`.
    gitconfig_dir: Option<std::path::PathBuf>,
    clone_image: Option<String>,
    /// Namespaces the scenario made besides its own, deleted with it.
    more_namespaces: std::sync::Mutex<Vec<String>>,
    dir: tempfile::TempDir,
}

/// Takes kubeci's finalizer off every pod of `namespace`, as an administrator would once
/// kubeci is gone (the scenario's kubeci has stopped): its namespace can then go.
async fn release_pods(client: &kube::Client, namespace: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let Ok(listed) = pods.list(&ListParams::default()).await else {
        return;
    };
    for pod in listed.items {
        let kept: Vec<String> = (pod.metadata.finalizers.clone().unwrap_or_default())
            .into_iter()
            .filter(|f| f != "kubeci.io/archive")
            .collect();
        let patch = json!({"metadata": {"finalizers": kept}});
        let name = pod.metadata.name.unwrap_or_default();
        let _ = pods
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

/// The URL the scenarios' jobs clone: a remote one, as `serve --kubernetes` requires;
/// git's `insteadOf` makes it the scenario's local repository (standing for the network).
const SCENARIO_REPO_URL: &str = "https://git.kubeci.test/e2e/repo.git";

impl TestCluster {
    /// The fake API server, behind the proxy; its pods run with the local engine.
    pub async fn fake() -> TestCluster {
        let dir = tempfile::tempdir().unwrap();
        let repo = super::git::Repo::new(dir.path());
        let server = FakeApiServer::start().await;
        let run = PodBehaviour::RunLocally {
            kubeci_exe: env!("CARGO_BIN_EXE_kubeci").into(),
            secrets_dir: None,
            work_root: dir.path().join("pods"),
            env: vec![(
                "GIT_CONFIG_GLOBAL".into(),
                dir.path().join("gitconfig").display().to_string(),
            )],
        };
        server.set_pod_behaviour(move |pod| PodBehaviour::like_a_kubelet(pod, &run));
        let client = server.client().await;
        TestCluster::around(
            client.clone(),
            Some(client),
            Some(server),
            Some(repo.bare.clone()),
            None,
            dir,
        )
        .await
    }

    /// The cluster of `KUBECI_E2E_KUBECONFIG`: the real control plane of `scripts/cluster
    /// up` (`.ci/run` starts it), or any cluster. Without one the test fails, saying why.
    /// When `KUBECI_E2E_NODE_AGENT` is set the cluster's pods run on this machine (the
    /// node agent), so builds clone a repository made here.
    pub async fn real() -> TestCluster {
        let Some(path) = std::env::var_os("KUBECI_E2E_KUBECONFIG") else {
            panic!(
                "this scenario runs on a real Kubernetes control plane and none is given: \
                 start one with `eval \"$(scripts/cluster up)\"` (builds it from control-plane/ \
                 the first time) or set KUBECI_E2E_KUBECONFIG=<kubeconfig of a cluster>"
            );
        };
        let gitconfig_dir = std::env::var_os("KUBECI_E2E_NODE_AGENT")
            .and(std::env::var_os("KUBECI_E2E_GITCONFIG_DIR"))
            .map(std::path::PathBuf::from);
        TestCluster::real_at(std::path::Path::new(&path), gitconfig_dir).await
    }

    /// The cluster of `kubeconfig`; `gitconfig_dir`: its pods run on this machine, by a
    /// node agent reading each namespace's git configuration there.
    pub async fn real_at(
        path: &std::path::Path,
        gitconfig_dir: Option<std::path::PathBuf>,
    ) -> TestCluster {
        let kubeconfig = kube::config::Kubeconfig::read_from(path)
            .unwrap_or_else(|e| panic!("kubeconfig {}: {e}", path.display()));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = kube::Client::try_from(config.clone()).unwrap();
        let as_kubeci = kubeci_identity(path, config);
        let dir = tempfile::tempdir().unwrap();
        let local_repo = gitconfig_dir
            .is_some()
            .then(|| super::git::Repo::new(dir.path()).bare);
        let clone_image = std::env::var("KUBECI_E2E_CLONE_IMAGE").ok();
        let mut cluster =
            TestCluster::around(client, Some(as_kubeci), None, local_repo, clone_image, dir).await;
        cluster.gitconfig_dir = gitconfig_dir;
        if let Some(local) = cluster.local_repo.clone() {
            cluster.map_repository(SCENARIO_REPO_URL, &local);
        }
        cluster
    }

    async fn around(
        client: kube::Client,
        kubeci_client: Option<kube::Client>,
        fake: Option<FakeApiServer>,
        local_repo: Option<std::path::PathBuf>,
        clone_image: Option<String>,
        dir: tempfile::TempDir,
    ) -> TestCluster {
        let repo = match &local_repo {
            Some(_) => (SCENARIO_REPO_URL.to_owned(), "main".to_owned()),
            None => (
                std::env::var("KUBECI_E2E_REPO")
                    .unwrap_or_else(|_| "https://github.com/octocat/Hello-World.git".into()),
                std::env::var("KUBECI_E2E_BRANCH").unwrap_or_else(|_| "master".into()),
            ),
        };
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let namespace = format!(
            "kubeci-e2e-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        );
        // Enabled for builds, as an install's administrator enables a team's.
        create_namespace(&client, &namespace, true, fake.is_none()).await;
        let proxy =
            ApiProxy::start(kubeci_client.unwrap_or_else(|| client.clone()), &namespace).await;
        let cluster = TestCluster {
            proxy,
            client,
            namespace,
            fake,
            repo,
            local_repo,
            gitconfig_dir: None,
            clone_image,
            more_namespaces: Default::default(),
            dir,
        };
        if let (Some(_), Some(local)) = (&cluster.fake, &cluster.local_repo) {
            cluster.map_repository(SCENARIO_REPO_URL, local);
        }
        cluster
    }

    /// Sets labels and annotations of Namespace `namespace` (`None` removes one), as its
    /// administrator would with `kubectl label` / `kubectl annotate`.
    pub async fn set_namespace_metadata(
        &self,
        namespace: &str,
        labels: &[(&str, Option<&str>)],
        annotations: &[(&str, Option<&str>)],
    ) {
        let map = |pairs: &[(&str, Option<&str>)]| -> serde_json::Map<String, serde_json::Value> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect()
        };
        Api::<Namespace>::all(self.client.clone())
            .patch(
                namespace,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {
                    "labels": map(labels),
                    "annotations": map(annotations),
                }})),
            )
            .await
            .unwrap();
    }

    /// Sets annotations of this scenario's Namespace.
    pub async fn annotate_namespace(&self, annotations: &[(&str, Option<&str>)]) {
        self.set_namespace_metadata(&self.namespace, &[], annotations)
            .await;
    }

    /// Makes another namespace for this scenario, `<namespace>-<suffix>`, enabled for
    /// builds or not, whose builds clone the scenario's repository too.
    pub async fn add_namespace(&self, suffix: &str, enabled: bool) -> String {
        let name = format!("{}-{suffix}", self.namespace);
        create_namespace(&self.client, &name, enabled, self.is_real()).await;
        self.more_namespaces.lock().unwrap().push(name.clone());
        if let (Some(dir), Some(local)) = (&self.gitconfig_dir, &self.local_repo) {
            std::fs::copy(
                dir.join(format!("{}.gitconfig", self.namespace)),
                dir.join(format!("{name}.gitconfig")),
            )
            .unwrap_or_else(|e| panic!("the git configuration of {}: {e}", local.display()));
        }
        name
    }

    /// The URL of the repository the scenario's jobs build.
    pub fn repo_url(&self) -> &str {
        &self.repo.0
    }

    /// The fake API server, when this is it.
    pub fn fake_server(&self) -> Option<&FakeApiServer> {
        self.fake.as_ref()
    }

    /// The head of the builds' branch, when their repository is on this machine.
    pub fn repo_head(&self) -> Option<String> {
        let local = self.local_repo.as_ref()?;
        let branch = &self.repo.1;
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(local)
            .args(["rev-parse", &format!("refs/heads/{branch}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        Some(String::from_utf8(out.stdout).unwrap().trim().to_owned())
    }

    pub fn is_real(&self) -> bool {
        self.fake.is_none()
    }

    /// Makes the builds of this scenario clone `local` when they ask for `url` (git's
    /// `insteadOf`, standing for the network): through the fake's kubelet, or the node
    /// agent of `scripts/cluster` (`KUBECI_E2E_GITCONFIG_DIR`).
    pub fn map_repository(&self, url: &str, local: &std::path::Path) {
        let file = match (&self.fake, &self.gitconfig_dir) {
            (Some(_), _) => self.dir.path().join("gitconfig"),
            (None, Some(dir)) => dir.join(format!("{}.gitconfig", self.namespace)),
            (None, None) => panic!("mapping a repository needs the node agent of scripts/cluster (KUBECI_E2E_GITCONFIG_DIR)"),
        };
        use std::io::Write;
        let mut config = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .unwrap();
        write!(
            config,
            "[url \"{}\"]\n\tinsteadOf = {url}\n",
            local.display()
        )
        .unwrap();
    }

    /// A directory of this scenario's own.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// How long a build may take to get anywhere: pods of a real cluster pull images.
    pub fn patience(&self) -> Duration {
        Duration::from_secs(if self.is_real() { 300 } else { 60 })
    }

    /// Polls `check` until it holds, for up to [`TestCluster::patience`].
    pub async fn until(&self, what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + self.patience();
        while !check().await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out after {:?} waiting for {what}",
                self.patience()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls a blocking `check` (kubeci's API) from a blocking thread, for up to
    /// [`TestCluster::patience`].
    pub async fn until_blocking(&self, what: &str, check: impl FnMut() -> bool + Send + 'static) {
        let limit = self.patience();
        let what = what.to_owned();
        tokio::task::spawn_blocking(move || super::git::wait_for(limit, &what, check))
            .await
            .unwrap();
    }

    /// A job cloning the cluster's test repository and running `run_command` in `bash:5`.
    pub fn job_yaml(&self, name: &str, run_command: &str, extra: &str) -> String {
        self.job_yaml_in_image(name, "bash:5", run_command, extra)
    }

    pub fn job_yaml_in_image(
        &self,
        name: &str,
        image: &str,
        run_command: &str,
        extra: &str,
    ) -> String {
        let (url, branch) = &self.repo;
        format!(
            "- job:\n    name: {name}\n    image: {image}\n    git:\n      url: {url}\n      branch: {branch}\n    run_command: {}\n{}{extra}",
            serde_json::to_string(run_command).unwrap(),
            if extra.contains("timeout:") { "" } else { "    timeout: 10m\n" }
        )
    }

    fn configmaps(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates or replaces the job ConfigMap `name` declaring `job_yaml`.
    pub async fn apply(&self, name: &str, job_yaml: &str) {
        self.apply_in(&self.namespace, name, job_yaml, json!({}))
            .await;
    }

    /// Creates or replaces the job ConfigMap `namespace/name` declaring `job_yaml`, with
    /// `metadata` (labels, annotations) merged into its own.
    pub async fn apply_in(
        &self,
        namespace: &str,
        name: &str,
        job_yaml: &str,
        metadata: serde_json::Value,
    ) {
        let mut configmap = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "labels": {"ci-job-spec": "true"}},
            "data": {"job.yaml": job_yaml},
        });
        kubeci_testkit::store::merge_patch(&mut configmap["metadata"], &metadata);
        Api::<ConfigMap>::namespaced(self.client.clone(), namespace)
            .patch(
                name,
                &PatchParams::apply("kubeci-e2e").force(),
                &Patch::Apply(&configmap),
            )
            .await
            .unwrap();
    }

    pub async fn delete_configmap(&self, name: &str) {
        self.configmaps()
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// The build numbers of `job` that have a Job in the cluster.
    pub async fn build_numbers(&self, job: &str) -> Vec<u64> {
        let listed = self
            .jobs()
            .list(&ListParams::default().labels(&format!("kubeci.io/job={job}")))
            .await
            .unwrap();
        let mut numbers: Vec<u64> = listed
            .items
            .iter()
            .filter_map(|j| {
                j.metadata
                    .labels
                    .as_ref()?
                    .get("kubeci.io/build")?
                    .parse()
                    .ok()
            })
            .collect();
        numbers.sort_unstable();
        numbers
    }

    pub async fn job(&self, name: &str) -> Option<Job> {
        self.jobs().get_opt(name).await.unwrap()
    }

    /// Whether Job `name` completed.
    pub async fn completed(&self, name: &str) -> bool {
        self.job(name).await.is_some_and(|job| {
            job.status.and_then(|s| s.conditions).is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            })
        })
    }

    /// Whether build `build` of `job` has a running pod.
    pub async fn pod_running(&self, job: &str, build: u64) -> bool {
        self.pods(job, build)
            .await
            .iter()
            .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    }

    /// The pods of build `build` of `job`.
    pub async fn pods(&self, job: &str, build: u64) -> Vec<Pod> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let selector = format!("kubeci.io/job={job},kubeci.io/build={build}");
        pods.list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
    }

    /// Whether build `build` of `job` has a pod at all.
    pub async fn pod_exists(&self, job: &str, build: u64) -> bool {
        !self.pods(job, build).await.is_empty()
    }

    pub async fn delete_job(&self, name: &str) {
        self.jobs()
            .delete(name, &DeleteParams::background())
            .await
            .unwrap();
    }

    /// Who holds the leader Lease.
    pub async fn leader(&self) -> Option<String> {
        Api::<Lease>::namespaced(self.client.clone(), &self.namespace)
            .get_opt("kubeci-leader")
            .await
            .unwrap()?
            .spec?
            .holder_identity
    }

    /// Starts `kubeci serve --kubernetes` on this cluster's namespace, through the proxy,
    /// and waits for /readyz.
    pub fn serve(&self, extra: &[&str]) -> Kubeci {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        self.proxy.write_kubeconfig(&kubeconfig).unwrap();
        let mut flags = vec![
            "--namespace",
            &self.namespace,
            "--lease-namespace",
            &self.namespace,
        ];
        if let Some(image) = &self.clone_image {
            flags.extend(["--clone-image", image.as_str()]);
        }
        flags.extend(extra);
        let kubeci = spawn_in(dir, &kubeconfig, &flags);
        super::git::wait_for(self.patience(), "kubeci to be ready", || {
            http(&kubeci, "GET", "/readyz", &[]).0 == 200
        });
        kubeci
    }

    /// Deletes the scenario's namespace (a real cluster's; the fake one just stops).
    pub async fn finish(self) {
        if self.is_real() {
            let more = self.more_namespaces.lock().unwrap().clone();
            for namespace in more.iter().chain([&self.namespace]) {
                Api::<Namespace>::all(self.client.clone())
                    .delete(namespace, &DeleteParams::background())
                    .await
                    .unwrap();
                release_pods(&self.client, namespace).await;
            }
        }
        drop(self.dir);
    }
}

/// Creates Namespace `namespace`, labelled `kubeci.io/builds=enabled` when `enabled`; on a
/// real cluster, waits for its `default` ServiceAccount.
async fn create_namespace(client: &kube::Client, namespace: &str, enabled: bool, real: bool) {
    let labels = if enabled {
        json!({"kubeci.io/builds": "enabled"})
    } else {
        json!({})
    };
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace, "labels": labels}}))
                .unwrap(),
        )
        .await
        .unwrap();
    if real {
        // Pods are refused until the ServiceAccount controller made `default`.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), namespace);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while accounts.get_opt("default").await.unwrap().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no default ServiceAccount in {namespace} after 60 s: is kube-controller-manager running?"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// How many first lists `gate` has seen kubeci read: in pages (`list`) or, where the API
/// server can, streamed by a watch (`sendInitialEvents`).
pub fn first_lists(gate: &kubeci_testkit::Gate) -> usize {
    let requests = gate.requests();
    let first_lists = requests.iter().filter(|r| {
        r.verb == "list" || (r.verb == "watch" && r.query.contains("sendInitialEvents=true"))
    });
    first_lists.count()
}
