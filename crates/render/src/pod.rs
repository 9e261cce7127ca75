//! The parts of a build's pod: the clone and build containers, their environment, volumes
//! and mounts.

use super::*;
use expansion::escape;
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapProjection, Container, DownwardAPIProjection, DownwardAPIVolumeFile,
    EnvVar, EnvVarSource, KeyToPath, ObjectFieldSelector, ProjectedVolumeSource,
    ResourceRequirements, SecretKeySelector, SecretProjection, SecurityContext,
    ServiceAccountTokenProjection, Toleration, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kubeci_spec::Job;
use std::collections::BTreeMap;

/// What a build pod collects once its build step ended, and where it sends it: the
/// files its job declares and kubeci's URL (`RenderConfig::collect_url`).
pub(crate) struct Collecting<'a> {
    pub(crate) declared: &'a DeclaredOutputs,
    pub(crate) url: &'a str,
    /// The Job's deadline (seconds), for the collector's token's life.
    pub(crate) deadline: Option<i64>,
}

/// The pod of build `request` of `job`: the clone step, then the build step, sharing the
/// workspace; hardened (no automounted token, RuntimeDefault seccomp, no service links).
/// With `collecting`, the collector runs beside the build step (see [`crate::collector`]).
pub(crate) fn build_pod(
    job: &Job,
    origin: &JobOrigin,
    request: &BuildRequest,
    (branch, workdir): (Option<&str>, &str),
    config: &RenderConfig,
    collecting: Option<&Collecting<'_>>,
) -> PodSpec {
    let ssh_secret = job.git.ssh_secret_ref.clone();
    let clone = clone_container(job, request, branch, config);
    let collector =
        collecting.map(|c| crate::collector::collector_container(c.declared, config, c.url));
    let mut build = build_container(job, origin, request, branch, workdir, config);
    if collecting.is_some() {
        if let Some(command) = build.command.as_mut() {
            command[2] = escape(crate::collector::COLLECTING_PRELUDE);
        }
    }
    PodSpec {
        restart_policy: Some("Never".into()),
        service_account_name: job.service_account_name.clone(),
        // Never mounted for every container: the job's token, if it chose a service
        // account, is mounted into the build step alone (`service_account_volume`).
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(PodSecurityContext {
            fs_group: Some(CLONE_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!job.node_selector.is_empty()).then(|| job.node_selector.clone()),
        tolerations: (!job.tolerations.is_empty())
            .then(|| job.tolerations.iter().map(toleration).collect()),
        init_containers: Some([Some(clone), collector].into_iter().flatten().collect()),
        containers: vec![build],
        termination_grace_period_seconds: collecting
            .map(|_| crate::collector::TERMINATION_GRACE_SECONDS),
        volumes: Some(
            [
                Some(Volume {
                    name: "workspace".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                }),
                Some(Volume {
                    name: "clone-tmp".into(),
                    empty_dir: Some(EmptyDirVolumeSource::default()),
                    ..Volume::default()
                }),
                ssh_secret.as_deref().map(ssh_key_volume),
                job.service_account_name
                    .as_ref()
                    .map(|_| service_account_volume()),
                collecting.map(|c| crate::collector::token_volume(c.deadline)),
                collecting.map(|_| crate::collector::state_volume()),
            ]
            .into_iter()
            .flatten()
            .collect(),
        ),
        ..PodSpec::default()
    }
}

/// The SSH Secret's two keys the clone step reads, and nothing else of it: `private-key`
/// (required) and `ssh_fingerprint` (optional: the job may pin the key itself). Two
/// projections of one Secret, because a plain secret volume fails on any missing item.
pub(crate) fn ssh_key_volume(secret: &str) -> Volume {
    let only = |key: &str, optional: bool| VolumeProjection {
        secret: Some(SecretProjection {
            name: secret.into(),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: key.into(),
                mode: None,
            }]),
            optional: Some(optional),
        }),
        ..VolumeProjection::default()
    };
    Volume {
        name: "ssh-key".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o440),
            sources: Some(vec![
                only("private-key", false),
                only("ssh_fingerprint", true),
            ]),
        }),
        ..Volume::default()
    }
}

/// What Kubernetes mounts into every container when `automountServiceAccountToken` is on
/// (a bound token, the cluster's CA, the namespace); here it is mounted into the build
/// step only, so the clone step has no API access.
pub(crate) fn service_account_volume() -> Volume {
    Volume {
        name: "kube-api-access".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o444),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        expiration_seconds: Some(3607),
                        audience: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![KeyToPath {
                            key: "ca.crt".into(),
                            path: "ca.crt".into(),
                            mode: None,
                        }]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![DownwardAPIVolumeFile {
                            path: "namespace".into(),
                            field_ref: Some(ObjectFieldSelector {
                                api_version: Some("v1".into()),
                                field_path: "metadata.namespace".into(),
                            }),
                            ..DownwardAPIVolumeFile::default()
                        }]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

pub(crate) fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(crate) fn clone_container(
    job: &Job,
    request: &BuildRequest,
    branch: Option<&str>,
    config: &RenderConfig,
) -> Container {
    let mut args = vec![format!("--url={}", job.git.url)];
    let mut flag = |name: &str, value: Option<&str>| {
        if let Some(value) = value {
            args.push(format!("--{name}={value}"));
        }
    };
    flag("branch", branch);
    flag("ref", request.git_ref.as_deref());
    flag("commit", request.commit.as_deref());
    let pr_number = request.pull_request.as_ref().map(|p| p.number.to_string());
    flag("pr", pr_number.as_deref());
    let ssh_key = format!("{}/private-key", paths::SSH);
    let ssh_fingerprint_file = format!("{}/ssh_fingerprint", paths::SSH);
    if job.git.ssh_secret_ref.is_some() {
        flag("ssh-key", Some(&ssh_key));
        flag("fingerprint-file", Some(&ssh_fingerprint_file));
    }
    flag("fingerprint", job.git.ssh_fingerprint.as_deref());
    flag("dest", Some(paths::CHECKOUT));
    flag("meta-dir", Some(paths::META));
    flag("termination-message", Some(paths::TERMINATION_MESSAGE));

    let mut mounts = vec![
        mount("workspace", paths::WORKSPACE, false),
        mount("clone-tmp", "/tmp", false),
    ];
    if job.git.ssh_secret_ref.is_some() {
        mounts.push(mount("ssh-key", paths::SSH, true));
    }
    Container {
        name: "clone".into(),
        image: Some(config.clone_image.clone()),
        command: Some(vec!["kubeci".into(), "clone".into()]),
        args: Some(args.iter().map(|a| escape(a)).collect()),
        env: Some(vec![env("HOME", "/tmp")]),
        volume_mounts: Some(mounts),
        // git needs little CPU and bounded memory; without requests a busy node could
        // starve every build's checkout.
        resources: Some(ResourceRequirements {
            requests: Some(quantities(&[("cpu", "100m"), ("memory", "128Mi")])),
            limits: Some(quantities(&[("memory", "1Gi")])),
            ..ResourceRequirements::default()
        }),
        termination_message_path: Some(paths::TERMINATION_MESSAGE.into()),
        termination_message_policy: Some("File".into()),
        security_context: Some(unprivileged()),
        ..Container::default()
    }
}

pub(crate) fn quantities(list: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), Quantity((*v).to_owned())))
        .collect()
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(escape(value)),
        ..EnvVar::default()
    }
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// The build step's environment: Jenkins' and the GitHub pull request builder's
/// variables, the AWS keys from their Secret, then the job's own `env`.
fn build_env(
    job: &Job,
    origin: &JobOrigin,
    request: &BuildRequest,
    branch: Option<&str>,
    config: &RenderConfig,
) -> Vec<EnvVar> {
    let number = request.number.to_string();
    let mut vars = vec![
        env("KUBECI_WORKSPACE", paths::WORKSPACE),
        env("JOB_NAME", &job.name),
        env("BUILD_NUMBER", &number),
        env(
            "BUILD_URL",
            &build_url(config, &origin.namespace, &job.name, request.number),
        ),
        env("GIT_URL", &job.git.url),
    ];
    let pr = request.pull_request.as_ref();
    let git_branch = pr.and_then(|p| p.source_branch.as_deref()).or(branch);
    if let Some(branch) = git_branch {
        vars.push(env("GIT_BRANCH", branch));
    }
    if let Some(commit) = &request.commit {
        vars.push(env("GIT_COMMIT", commit));
    }
    if let Some(pr) = pr {
        vars.push(env("ghprbPullId", &pr.number.to_string()));
        if let Some(commit) = &request.commit {
            vars.push(env("ghprbActualCommit", commit));
            vars.push(env("sha1", commit));
        }
        let optional = [
            ("ghprbSourceBranch", &pr.source_branch),
            ("ghprbTargetBranch", &pr.target_branch),
            ("ghprbPullAuthorLogin", &pr.author),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                vars.push(env(name, value));
            }
        }
    }
    if let Some(secret) = &job.aws_secret {
        vars.push(secret_env("AWS_ACCESS_KEY_ID", secret, "aws-access-key-id"));
        vars.push(secret_env(
            "AWS_SECRET_ACCESS_KEY",
            secret,
            "aws-secret-access-key",
        ));
    }
    vars.extend(job.env.iter().map(|(k, v)| env(k, v)));
    vars
}

pub(crate) fn build_container(
    job: &Job,
    origin: &JobOrigin,
    request: &BuildRequest,
    branch: Option<&str>,
    workdir: &str,
    config: &RenderConfig,
) -> Container {
    let vars = build_env(job, origin, request, branch, config);
    let working_dir = if workdir.is_empty() {
        paths::CHECKOUT.to_owned()
    } else {
        format!("{}/{workdir}", paths::CHECKOUT)
    };
    let resources = job.resources.as_ref().map(|r| {
        let quantities = |list: &BTreeMap<String, String>| {
            (!list.is_empty()).then(|| {
                list.iter()
                    .map(|(k, v)| (k.clone(), Quantity(v.clone())))
                    .collect()
            })
        };
        ResourceRequirements {
            requests: quantities(&r.requests),
            limits: quantities(&r.limits),
            ..ResourceRequirements::default()
        }
    });
    Container {
        name: "build".into(),
        image: Some(
            job.image
                .clone()
                .unwrap_or_else(|| config.default_image.clone()),
        ),
        command: Some(vec![
            "/bin/bash".into(),
            "-c".into(),
            escape(BUILD_PRELUDE),
            "kubeci-prelude".into(),
            escape(&job.run_command),
        ]),
        working_dir: Some(working_dir),
        env: Some(vars),
        volume_mounts: Some(
            std::iter::once(mount("workspace", paths::WORKSPACE, false))
                .chain(
                    job.service_account_name
                        .as_ref()
                        .map(|_| mount("kube-api-access", paths::SERVICE_ACCOUNT, true)),
                )
                .collect(),
        ),
        resources,
        ..Container::default()
    }
}

pub(crate) fn toleration(t: &kubeci_spec::model::Toleration) -> Toleration {
    Toleration {
        key: t.key.clone(),
        operator: t.operator.clone(),
        value: t.value.clone(),
        effect: t.effect.clone(),
        toleration_seconds: t.toleration_seconds,
    }
}

/// The security context of kubeci's own steps (the clone step, a build pod's collector):
/// an unprivileged user of its own, no capabilities, no escalation, a read-only root.
pub(crate) fn unprivileged() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(CLONE_UID),
        run_as_group: Some(CLONE_UID),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        ..SecurityContext::default()
    }
}
