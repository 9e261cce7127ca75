//! Running a pod: reading what it refers to (Secrets, ConfigMaps, the service account
//! token), running its containers with `kubeci_local`, the waiting reasons on the way.

use super::*;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Pod, PodSpec, PodTemplateSpec, Secret, ServiceAccount,
};
use kube::api::{Api, PostParams};
use kubeci_local::{LocalEnv, Outcome, PodObjects};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

impl Agent {
    /// Reads what the pod refers to, as the kubelet does before starting it.
    pub(super) async fn objects(&self, pod: &Pod, spec: &PodSpec) -> Result<PodObjects, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        let mut secrets = BTreeSet::new();
        let mut config_maps = BTreeSet::new();
        let mut audiences: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter());
        for container in containers {
            for var in container.env.iter().flatten() {
                if let Some(from) = &var.value_from {
                    if let Some(s) = &from.secret_key_ref {
                        secrets.insert(s.name.clone());
                    }
                    if let Some(c) = &from.config_map_key_ref {
                        config_maps.insert(c.name.clone());
                    }
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(s) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.insert(s);
            }
            if let Some(c) = &volume.config_map {
                config_maps.insert(c.name.clone());
            }
            for source in volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
            {
                if let Some(s) = &source.secret {
                    secrets.insert(s.name.clone());
                }
                if let Some(c) = &source.config_map {
                    config_maps.insert(c.name.clone());
                }
                if let Some(t) = &source.service_account_token {
                    audiences.insert(t.audience.clone().unwrap_or_default(), t.expiration_seconds);
                }
            }
        }
        let mut objects = PodObjects::default();
        let secret_api: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
        for secret in secrets {
            let found = secret_api
                .get_opt(&secret)
                .await
                .map_err(|e| format!("secret {secret:?}: {e}"))?;
            if let Some(found) = found {
                let mut data: BTreeMap<String, Vec<u8>> = found
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                for (k, v) in found.string_data.unwrap_or_default() {
                    data.insert(k, v.into_bytes());
                }
                objects.secrets.insert(secret, data);
            }
        }
        let map_api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
        for map in config_maps {
            let found = map_api
                .get_opt(&map)
                .await
                .map_err(|e| format!("configmap {map:?}: {e}"))?;
            if let Some(found) = found {
                let mut data: BTreeMap<String, Vec<u8>> = found
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                for (k, v) in found.binary_data.unwrap_or_default() {
                    data.insert(k, v.0);
                }
                objects.config_maps.insert(map, data);
            }
        }
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        for (audience, expiration) in audiences {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: if audience.is_empty() {
                        Vec::new()
                    } else {
                        vec![audience.clone()]
                    },
                    expiration_seconds: expiration,
                    bound_object_ref: Some(BoundObjectReference {
                        api_version: Some("v1".into()),
                        kind: Some("Pod".into()),
                        name: Some(name.clone()),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            };
            let token = accounts
                .create_token_request(&account, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("failed to fetch token: {e}"))?;
            let token = token.status.map(|s| s.token).unwrap_or_default();
            objects.tokens.insert(audience, token);
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let annotations = pod.metadata.annotations.clone().unwrap_or_default();
        let fields = [
            ("metadata.name", name.clone()),
            ("metadata.namespace", namespace.clone()),
            ("metadata.uid", pod.metadata.uid.clone().unwrap_or_default()),
            ("spec.nodeName", self.options.node_name.clone()),
            ("spec.serviceAccountName", account),
            ("status.hostIP", "127.0.0.1".into()),
            ("status.podIP", "127.0.0.1".into()),
        ];
        objects.fields = fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (k, v) in labels {
            objects.fields.insert(format!("metadata.labels['{k}']"), v);
        }
        for (k, v) in annotations {
            objects
                .fields
                .insert(format!("metadata.annotations['{k}']"), v);
        }
        Ok(objects)
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

        let containers: Vec<(String, String, bool)> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default(), true))
            .chain(
                spec.containers
                    .iter()
                    .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default(), false)),
            )
            .collect();
        if let Some((container, image, init)) = containers.iter().find(|(_, image, _)| {
            self.options
                .unpullable
                .iter()
                .any(|p| image_matches(p, image))
        }) {
            let message = format!("failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": not found");
            self.waiting(
                &status,
                &namespace,
                &name,
                container,
                *init,
                "ErrImagePull",
                &message,
            );
            writer.write_now().await;
            self.event(
                &pod,
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image}\": {message}"),
            )
            .await;
            self.event(&pod, "Warning", "Failed", "Error: ErrImagePull")
                .await;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(2)) => {}
                () = run.cancel.cancelled() => return,
            }
            let message = format!("Back-off pulling image \"{image}\"");
            self.waiting(
                &status,
                &namespace,
                &name,
                container,
                *init,
                "ImagePullBackOff",
                &message,
            );
            writer.write_now().await;
            self.event(&pod, "Normal", "BackOff", &message).await;
            run.cancel.cancelled().await;
            return;
        }

        let objects = match self.objects(&pod, &spec).await {
            Ok(objects) => objects,
            Err(message) => {
                self.event(&pod, "Warning", "FailedMount", &message).await;
                run.cancel.cancelled().await;
                return;
            }
        };
        let job = Job {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
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
        };
        let env = LocalEnv {
            build_dir: self.options.work_dir.join(&namespace).join(&name),
            secrets_dir: None,
            kubeci_exe: self.options.kubeci_exe.clone(),
            host_env: LocalEnv::host_env_from_process()
                .into_iter()
                .chain(self.options.env.iter().cloned())
                .chain(self.git_config(&namespace))
                .collect(),
            objects,
        };
        let sink: Arc<dyn kubeci_local::LogSink> = Arc::new(PodSink {
            namespace: namespace.clone(),
            pod: name.clone(),
            logs: self.logs.clone(),
            status: status.clone(),
            writer: writer.clone(),
            run: run.clone(),
        });
        let result = kubeci_local::run_job(&job, &env, sink, run.cancel.clone()).await;
        let _ = std::fs::remove_dir_all(&env.build_dir);
        match result.map(|r| r.outcome) {
            Ok(Outcome::Succeeded) => status.finish("Succeeded", None),
            Ok(Outcome::Failed { .. }) => status.finish("Failed", None),
            Ok(Outcome::DeadlineExceeded { .. }) => status.finish(
                "Failed",
                Some((
                    "DeadlineExceeded",
                    "Pod was active on the node longer than the specified deadline",
                )),
            ),
            Ok(Outcome::NotStarted { reason, message }) => {
                if reason == "FailedMount" {
                    self.event(&pod, "Warning", "FailedMount", &message).await;
                } else {
                    self.event(&pod, "Warning", "Failed", &format!("Error: {message}"))
                        .await;
                }
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
