//! A pod's volumes on the local disk: emptyDir, Secrets (from the secrets directory),
//! ConfigMaps, the downward API and projected volumes.

use super::*;
use k8s_openapi::api::core::v1::{PodSpec, Volume};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each volume of the pod as a directory of this build; `Err` holds a mount failure in
/// the kubelet's words.
pub(crate) fn prepare_volumes(
    pod: &PodSpec,
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
) -> Result<Result<BTreeMap<String, PathBuf>, String>, LocalError> {
    let mut dirs = BTreeMap::new();
    for volume in pod.volumes.iter().flatten() {
        let dir = env.build_dir.join("volumes").join(&volume.name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io_error(&dir))?;
        }
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        if let Err(message) = fill_volume(volume, &dir, env, namespace, pod_name)? {
            return Ok(Err(message));
        }
        dirs.insert(volume.name.clone(), dir);
    }
    Ok(Ok(dirs))
}

/// The data of Secret `name`: from [`PodObjects`], else the secrets directory.
pub(crate) fn secret_data(env: &LocalEnv, name: &str) -> Option<BTreeMap<String, Vec<u8>>> {
    if let Some(data) = env.objects.secrets.get(name) {
        return Some(data.clone());
    }
    let dir = env.secrets_dir.as_ref()?.join(name);
    let entries = std::fs::read_dir(&dir).ok()?;
    let mut data = BTreeMap::new();
    for entry in entries.flatten() {
        let key = entry.file_name().to_string_lossy().into_owned();
        if !key.starts_with('.') && entry.path().is_file() {
            data.insert(key, std::fs::read(entry.path()).ok()?);
        }
    }
    Some(data)
}

/// A file a volume holds: (path in the volume, content, mode).
type VolumeFile = (String, Vec<u8>, Option<i32>);

/// The files of one volume source, or the kubelet's complaint. `what` names the source in it (`secret`, `configmap`).
fn projected_files(
    what: &str,
    name: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    optional: Option<bool>,
) -> Result<Vec<VolumeFile>, String> {
    let Some(data) = data else {
        return if optional == Some(true) {
            Ok(Vec::new())
        } else {
            Err(format!("{what} \"{name}\" not found"))
        };
    };
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, None)).collect()),
        // As the kubelet: a missing key fails the mount unless the source is optional.
        Some(items) => items
            .iter()
            .filter_map(|item| match data.get(&item.key) {
                Some(value) => Some(Ok((item.path.clone(), value.clone(), item.mode))),
                None if optional == Some(true) => None,
                None => Some(Err(format!(
                    "references non-existent {what} key: {}",
                    item.key
                ))),
            })
            .collect(),
    }
}

/// The value of a downward API field of the pod.
pub(crate) fn field_value(
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
    path: &str,
) -> Option<String> {
    env.objects.fields.get(path).cloned().or(match path {
        "metadata.name" => Some(pod_name.to_owned()),
        "metadata.namespace" => Some(namespace.to_owned()),
        _ => None,
    })
}

fn fill_volume(
    volume: &Volume,
    dir: &Path,
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
) -> Result<Result<(), String>, LocalError> {
    let (files, default_mode) = match volume_files(volume, env, namespace, pod_name)? {
        Ok(found) => found,
        Err(message) => {
            return Ok(Err(format!(
                "MountVolume.SetUp failed for volume \"{}\" : {message}",
                volume.name
            )))
        }
    };
    for (path, content, mode) in files {
        if Path::new(&path)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Ok(Err(format!(
                "MountVolume.SetUp failed for volume \"{}\" : invalid path {path:?}",
                volume.name
            )));
        }
        let to = dir.join(&path);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io_error(parent))?;
        }
        std::fs::write(&to, content).map_err(io_error(&to))?;
        use std::os::unix::fs::PermissionsExt;
        // The owner can always read: locally the build runs as the volume's owner.
        let mode = mode.unwrap_or(default_mode);
        let permissions = std::fs::Permissions::from_mode((mode as u32 & 0o777) | 0o400);
        std::fs::set_permissions(&to, permissions).map_err(io_error(&to))?;
    }
    Ok(Ok(()))
}

/// The files of `volume` and their default mode; `Err` inside: what the kubelet would say
/// is missing.
fn volume_files(
    volume: &Volume,
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
) -> Result<Result<(Vec<VolumeFile>, i32), String>, LocalError> {
    let with_mode = |mode: Option<i32>| move |files| (files, mode.unwrap_or(0o644));
    if volume.empty_dir.is_some() {
        Ok(Ok((Vec::new(), 0o644)))
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = secret_data(env, &name);
        let files = projected_files(
            "secret",
            &name,
            data,
            secret.items.as_deref(),
            secret.optional,
        );
        Ok(files.map(with_mode(secret.default_mode)))
    } else if let Some(map) = &volume.config_map {
        let data = env.objects.config_maps.get(&map.name).cloned();
        let files = projected_files(
            "configmap",
            &map.name,
            data,
            map.items.as_deref(),
            map.optional,
        );
        Ok(files.map(with_mode(map.default_mode)))
    } else if let Some(projected) = &volume.projected {
        let mut files = Vec::new();
        for source in projected.sources.iter().flatten() {
            match source_files(volume, source, env, namespace, pod_name)? {
                Ok(more) => files.extend(more),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(with_mode(projected.default_mode)(files)))
    } else {
        Err(LocalError::Unsupported(format!(
            "volume {} is not emptyDir, secret, configMap or projected",
            volume.name
        )))
    }
}

/// The files of one source of a projected volume.
fn source_files(
    volume: &Volume,
    source: &k8s_openapi::api::core::v1::VolumeProjection,
    env: &LocalEnv,
    namespace: &str,
    pod_name: &str,
) -> Result<Result<Vec<VolumeFile>, String>, LocalError> {
    Ok(if let Some(token) = &source.service_account_token {
        let audience = token.audience.clone().unwrap_or_default();
        match env.objects.tokens.get(&audience) {
            Some(t) => Ok(vec![(token.path.clone(), t.clone().into_bytes(), None)]),
            None => Err(format!(
                "failed to fetch token: no token for audience {audience:?}"
            )),
        }
    } else if let Some(map) = &source.config_map {
        let data = env.objects.config_maps.get(&map.name).cloned();
        projected_files(
            "configmap",
            &map.name,
            data,
            map.items.as_deref(),
            map.optional,
        )
    } else if let Some(secret) = &source.secret {
        let data = secret_data(env, &secret.name);
        projected_files(
            "secret",
            &secret.name,
            data,
            secret.items.as_deref(),
            secret.optional,
        )
    } else if let Some(downward) = &source.downward_api {
        downward
            .items
            .iter()
            .flatten()
            .map(|item| {
                let path = item.field_ref.as_ref().map(|f| f.field_path.as_str());
                match path.and_then(|p| field_value(env, namespace, pod_name, p)) {
                    Some(value) => Ok((item.path.clone(), value.into_bytes(), item.mode)),
                    None => Err(format!("unsupported downward API item {}", item.path)),
                }
            })
            .collect()
    } else {
        return Err(LocalError::Unsupported(format!(
            "volume {}: a projected source other than a token, ConfigMap, Secret or downward API",
            volume.name
        )));
    })
}

/// The Secrets `pod` needs (not marked optional) that `env` cannot give: neither its
/// objects nor its secrets directory hold them. The local engine says so on a job's page
/// before anyone starts a build that would fail on them.
pub fn missing_secrets(pod: &PodSpec, env: &LocalEnv) -> Vec<String> {
    let mut needed: Vec<&str> = Vec::new();
    for volume in pod.volumes.iter().flatten() {
        if let Some(secret) = &volume.secret {
            if secret.optional != Some(true) {
                needed.extend(secret.secret_name.as_deref());
            }
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(secret) = source.secret.as_ref().filter(|s| s.optional != Some(true)) {
                needed.push(&secret.name);
            }
        }
    }
    let containers = pod
        .init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter());
    for container in containers {
        for var in container.env.iter().flatten() {
            let secret = var
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref());
            if let Some(secret) = secret.filter(|s| s.optional != Some(true)) {
                needed.push(&secret.name);
            }
        }
        for from in container.env_from.iter().flatten() {
            if let Some(secret) = from
                .secret_ref
                .as_ref()
                .filter(|s| s.optional != Some(true))
            {
                needed.push(&secret.name);
            }
        }
    }
    needed.sort_unstable();
    needed.dedup();
    needed
        .into_iter()
        .filter(|name| secret_data(env, name).is_none())
        .map(str::to_owned)
        .collect()
}
