//! What a pod refers to, read as the kubelet reads it before starting the pod: its
//! Secrets and ConfigMaps (from env and volumes), its service-account tokens (a
//! TokenRequest per audience, bound to the pod), and its downward-API fields.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodSpec, Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use kubeci_pod_runner::PodObjects;

use super::Agent;

/// The objects a pod names.
#[derive(Default)]
struct Referenced {
    secrets: BTreeSet<String>,
    config_maps: BTreeSet<String>,
    /// Token audiences, with their expiration.
    audiences: BTreeMap<String, Option<i64>>,
}

impl Referenced {
    fn by(spec: &PodSpec) -> Referenced {
        let mut wanted = Referenced::default();
        let containers = spec
            .init_containers
            .iter()
            .flatten()
            .chain(&spec.containers);
        for var in containers.flat_map(|c| c.env.iter().flatten()) {
            if let Some(from) = &var.value_from {
                if let Some(s) = &from.secret_key_ref {
                    wanted.secrets.insert(s.name.clone());
                }
                if let Some(c) = &from.config_map_key_ref {
                    wanted.config_maps.insert(c.name.clone());
                }
            }
        }
        for volume in spec.volumes.iter().flatten() {
            if let Some(s) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                wanted.secrets.insert(s);
            }
            if let Some(c) = &volume.config_map {
                wanted.config_maps.insert(c.name.clone());
            }
            let sources = volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten());
            for source in sources {
                if let Some(s) = &source.secret {
                    wanted.secrets.insert(s.name.clone());
                }
                if let Some(c) = &source.config_map {
                    wanted.config_maps.insert(c.name.clone());
                }
                if let Some(t) = &source.service_account_token {
                    let audience = t.audience.clone().unwrap_or_default();
                    wanted.audiences.insert(audience, t.expiration_seconds);
                }
            }
        }
        wanted
    }
}

type Data = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

impl Agent {
    /// Reads what the pod refers to, as the kubelet does before starting it.
    pub(super) async fn objects(&self, pod: &Pod, spec: &PodSpec) -> Result<PodObjects, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let wanted = Referenced::by(spec);
        let account = spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into());
        Ok(PodObjects {
            secrets: self.secrets(&namespace, wanted.secrets).await?,
            config_maps: self.config_maps(&namespace, wanted.config_maps).await?,
            tokens: self.tokens(pod, &account, wanted.audiences).await?,
            fields: self.fields(pod, account),
        })
    }

    async fn secrets(&self, namespace: &str, names: BTreeSet<String>) -> Result<Data, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let mut read = Data::new();
        for name in names {
            let found = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("secret {name:?}: {e}"))?;
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
                read.insert(name, data);
            }
        }
        Ok(read)
    }

    async fn config_maps(&self, namespace: &str, names: BTreeSet<String>) -> Result<Data, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let mut read = Data::new();
        for name in names {
            let found = api
                .get_opt(&name)
                .await
                .map_err(|e| format!("configmap {name:?}: {e}"))?;
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
                read.insert(name, data);
            }
        }
        Ok(read)
    }

    /// A token of service account `account` per audience, bound to the pod.
    async fn tokens(
        &self,
        pod: &Pod,
        account: &str,
        audiences: BTreeMap<String, Option<i64>>,
    ) -> Result<BTreeMap<String, String>, String> {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &namespace);
        let mut tokens = BTreeMap::new();
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
                        name: pod.metadata.name.clone(),
                        uid: pod.metadata.uid.clone(),
                    }),
                },
                ..TokenRequest::default()
            };
            let token = accounts
                .create_token_request(account, &PostParams::default(), &request)
                .await
                .map_err(|e| format!("failed to fetch token: {e}"))?;
            tokens.insert(audience, token.status.map(|s| s.token).unwrap_or_default());
        }
        Ok(tokens)
    }

    /// The downward API's fields of the pod.
    fn fields(&self, pod: &Pod, account: String) -> BTreeMap<String, String> {
        let meta = &pod.metadata;
        let fields = [
            ("metadata.name", meta.name.clone().unwrap_or_default()),
            (
                "metadata.namespace",
                meta.namespace.clone().unwrap_or_default(),
            ),
            ("metadata.uid", meta.uid.clone().unwrap_or_default()),
            ("spec.nodeName", self.options.node_name.clone()),
            ("spec.serviceAccountName", account),
            ("status.hostIP", "127.0.0.1".into()),
            ("status.podIP", "127.0.0.1".into()),
        ];
        let mut fields: BTreeMap<String, String> =
            fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        for (k, v) in meta.labels.clone().unwrap_or_default() {
            fields.insert(format!("metadata.labels['{k}']"), v);
        }
        for (k, v) in meta.annotations.clone().unwrap_or_default() {
            fields.insert(format!("metadata.annotations['{k}']"), v);
        }
        fields
    }
}
