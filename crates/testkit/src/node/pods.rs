//! Running a pod: reading what it refers to (Secrets, ConfigMaps, the service account
//! token), running its containers with `kubeci_pod_runner`, the waiting reasons on the way.

use super::*;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec};
use kube::api::Api;
use kubeci_pod_runner::{LocalEnv, Outcome, PodObjects};
use std::sync::Arc;
use std::time::Duration;

impl Agent {
    /// The first container whose image cannot be pulled (`--unpullable`): (name, image,
    /// init).
    fn unpullable(&self, spec: &PodSpec) -> Option<(String, String, bool)> {
        let init = spec.init_containers.iter().flatten().map(|c| (c, true));
        init.chain(spec.containers.iter().map(|c| (c, false)))
            .map(|(c, init)| (c.name.clone(), c.image.clone().unwrap_or_default(), init))
            .find(|(_, image, _)| {
                self.options
                    .unpullable
                    .iter()
                    .any(|p| image_matches(p, image))
            })
    }

    /// What the kubelet shows of an image it cannot pull: ErrImagePull, then
    /// ImagePullBackOff until the pod is deleted.
    async fn fail_image_pull(
        &self,
        pod: &Pod,
        status: &PodStatus,
        writer: &StatusWriter,
        run: &PodRun,
        (container, image, init): (String, String, bool),
    ) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let message = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
        self.waiting(
            status,
            &namespace,
            &name,
            &container,
            init,
            "ErrImagePull",
            &message,
        );
        writer.write_now().await;
        self.event(
            pod,
            "Warning",
            "Failed",
            &format!("Failed to pull image \"{image}\": {message}"),
        )
        .await;
        self.event(pod, "Warning", "Failed", "Error: ErrImagePull")
            .await;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = run.cancel.cancelled() => return,
        }
        let message = format!("Back-off pulling image \"{image}\"");
        self.waiting(
            status,
            &namespace,
            &name,
            &container,
            init,
            "ImagePullBackOff",
            &message,
        );
        writer.write_now().await;
        self.event(pod, "Normal", "BackOff", &message).await;
        run.cancel.cancelled().await;
    }

    /// The machine the pod's processes run on: a work directory of its own, the host's
    /// allowed environment, the agent's, and the namespace's git configuration.
    fn local_env(&self, namespace: &str, name: &str, objects: PodObjects) -> LocalEnv {
        LocalEnv {
            build_dir: self.options.work_dir.join(namespace).join(name),
            secrets_dir: None,
            kubeci_exe: self.options.kubeci_exe.clone(),
            host_env: LocalEnv::host_env_from_process()
                .into_iter()
                .chain(self.options.env.iter().cloned())
                .chain(self.git_config(namespace))
                .collect(),
            objects,
            run_as: None,
            sidecars: true,
        }
    }

    /// One try at running `pod`: how it ended, or why its volumes cannot be mounted yet.
    async fn try_run(
        &self,
        pod: &Pod,
        spec: &PodSpec,
        status: &Arc<PodStatus>,
        writer: &StatusWriter,
        run: &Arc<PodRun>,
    ) -> Result<Result<Outcome, kubeci_pod_runner::LocalError>, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let objects = self.objects(pod, spec).await?;
        let job = pod_job(&namespace, &name, spec);
        let env = self.local_env(&namespace, &name, objects);
        let sink: Arc<dyn kubeci_pod_runner::LogSink> = Arc::new(PodSink {
            namespace,
            pod: name,
            logs: self.logs.clone(),
            status: status.clone(),
            writer: writer.clone(),
            run: run.clone(),
        });
        let result = kubeci_pod_runner::run_job(&job, &env, sink, run.cancel.clone()).await;
        let _ = std::fs::remove_dir_all(&env.build_dir);
        match result.map(|r| r.outcome) {
            Ok(Outcome::NotStarted { reason, message }) if reason == "FailedMount" => Err(message),
            other => Ok(other),
        }
    }

    pub(super) async fn run_pod(self: Arc<Self>, pod: Pod, run: Arc<PodRun>) {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(spec) = pod.spec.clone() else { return };
        let status = Arc::new(PodStatus::new(&spec));
        let writer = StatusWriter::start(
            Api::namespaced(self.client.clone(), &namespace),
            name.clone(),
            status.clone(),
        );
        for container in status.names() {
            self.logs
                .change(&(namespace.clone(), name.clone(), container), |_| {});
        }
        writer.write_now().await;

        if let Some(unpullable) = self.unpullable(&spec) {
            self.fail_image_pull(&pod, &status, &writer, &run, unpullable)
                .await;
            return;
        }
        // As the kubelet does, a pod whose volumes cannot be mounted yet (a Secret not there
        // yet, a new namespace's `kube-root-ca.crt` not written yet) is tried again each
        // second until it is deleted, its Warning said once per reason.
        let mut said: Option<String> = None;
        let result = loop {
            let attempt = self.try_run(&pod, &spec, &status, &writer, &run).await;
            let message = match attempt {
                Ok(result) => break result,
                Err(message) => message,
            };
            if said.as_ref() != Some(&message) {
                self.event(&pod, "Warning", "FailedMount", &message).await;
                writer.write_now().await;
                said = Some(message);
            }
            tokio::select! {
                () = run.cancel.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        };
        match result {
            Ok(Outcome::Succeeded) => status.finish("Succeeded", None),
            Ok(Outcome::Failed { .. }) => status.finish("Failed", None),
            Ok(Outcome::DeadlineExceeded { .. }) => status.finish(
                "Failed",
                Some((
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )),
            ),
            Ok(Outcome::NotStarted { message, .. }) => {
                self.event(&pod, "Warning", "Failed", &format!("Error: {message}"))
                    .await;
                writer.write_now().await;
                run.cancel.cancelled().await;
                return;
            }
            Ok(Outcome::Cancelled) => status.finish("Failed", None),
            Err(error) => {
                self.event(&pod, "Warning", "Failed", &format!("Error: {error}"))
                    .await;
                status.finish("Failed", Some(("Error", &error.to_string())));
            }
        }
        for container in status.names() {
            self.logs
                .change(&(namespace.clone(), name.clone(), container), |l| {
                    l.done = true
                });
        }
        writer.write_now().await;
    }

    /// `GIT_CONFIG_GLOBAL` for the pods of `namespace`, if a test left a file for it.
    pub(super) fn git_config(&self, namespace: &str) -> Option<(String, String)> {
        let file = self
            .options
            .git_config_dir
            .as_ref()?
            .join(format!("{namespace}.gitconfig"));
        file.is_file()
            .then(|| ("GIT_CONFIG_GLOBAL".to_owned(), file.display().to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn waiting(
        &self,
        status: &PodStatus,
        namespace: &str,
        pod: &str,
        container: &str,
        init: bool,
        reason: &str,
        message: &str,
    ) {
        status.change(|s| s.set_waiting(container, init, reason, message));
        self.logs.change(
            &(namespace.to_owned(), pod.to_owned(), container.to_owned()),
            |l| l.waiting = Some(reason.to_owned()),
        );
    }
}

/// A Job that runs `spec` once, as the local runner takes pods.
fn pod_job(namespace: &str, name: &str, spec: &PodSpec) -> Job {
    Job {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            active_deadline_seconds: spec.active_deadline_seconds,
            template: PodTemplateSpec {
                metadata: None,
                spec: Some(spec.clone()),
            },
            ..Default::default()
        }),
        status: None,
    }
}
