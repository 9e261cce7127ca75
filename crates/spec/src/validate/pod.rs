//! The checks of a job's pod: image, resources, tolerations, node selection, volumes and
//! secrets.

use super::*;
use crate::diagnostic::{FieldPath, Finding};
use crate::duration::parse_duration;
use crate::model::{Job, Resources, Toleration};
use crate::names;
use crate::quantity::parse_quantity;
use std::collections::BTreeMap;

pub(super) fn check_pod(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(image) = &job.image {
        check_image(image, &root.key("image"), out);
    }
    check_timeout(job, root, out);
    check_env(job, root, out);
    if let Some(resources) = &job.resources {
        check_resources(resources, &root.key("resources"), out);
    }
    check_node_selector(job, root, out);
    for (index, toleration) in job.tolerations.iter().enumerate() {
        check_toleration(toleration, &root.key("tolerations").index(index), out);
    }
    check_limits(job, root, out);
    check_archive(job, root, out);
    if let Some(template) = &job.log_url {
        check_log_url(template, &root.key("log_url"), out);
    }
}

/// `timeout`: a duration above zero; a warning without one.
fn check_timeout(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    if let Some(timeout) = &job.timeout {
        match parse_duration(timeout) {
            Ok(0) => out.push(
                Finding::error(
                    "invalid-duration",
                    root.key("timeout"),
                    "a timeout of 0 would kill every build at once",
                )
                .help("write e.g. `timeout: 1h`"),
            ),
            Ok(_) => {}
            Err(why) => out.push(
                Finding::error(
                    "invalid-duration",
                    root.key("timeout"),
                    format!("timeout `{timeout}` is not a duration: {why}"),
                )
                .help("write e.g. `90s`, `45m`, `1h30m`"),
            ),
        }
    } else {
        out.push(
            Finding::warning("no-timeout", root.clone(), "the job has no `timeout`: a build that hangs keeps its pod and its concurrency slot forever")
                .help("add e.g. `timeout: 1h`")
                .at_key(),
        );
    }
}

/// `env`: names that are valid and not kubeci's own.
fn check_env(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    for name in job.env.keys() {
        let path = root.key("env").key(name);
        if RESERVED_ENV.contains(&name.as_str()) {
            out.push(
                Finding::error(
                    "reserved-env",
                    path.clone(),
                    format!("`{name}` is set by kubeci for every build and cannot be overridden"),
                )
                .help("choose another name")
                .at_key(),
            );
        } else if let Err(why) = names::check_env_name(name) {
            out.push(
                Finding::error(
                    "invalid-env-name",
                    path,
                    format!("environment variable name `{name}` is not valid: {why}"),
                )
                .help("use letters, digits and `_`, e.g. `MY_SETTING`")
                .at_key(),
            );
        }
    }
}

/// `node_selector`: valid label keys and values.
fn check_node_selector(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    for (key, value) in &job.node_selector {
        let path = root.key("node_selector").key(key);
        if let Err(why) = names::check_label_key(key) {
            out.push(
                Finding::error(
                    "invalid-label",
                    path.clone(),
                    format!("node label key `{key}` is not valid: {why}"),
                )
                .help("use a label key as `kubectl get nodes --show-labels` shows it")
                .at_key(),
            );
        }
        if let Err(why) = names::check_label_value(value) {
            out.push(
                Finding::error(
                    "invalid-label",
                    path,
                    format!("node label value `{value}` is not valid: {why}"),
                )
                .help("label values have at most 63 letters, digits, `-`, `_` and `.`"),
            );
        }
    }
}

/// `max_concurrency` and `retention`: numbers that keep builds running and kept.
fn check_limits(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    if job.max_concurrency == Some(0) {
        out.push(
            Finding::error(
                "invalid-number",
                root.key("max_concurrency"),
                "`max_concurrency: 0` would never run a build",
            )
            .help("use 1 or more, or remove it for no limit"),
        );
    }
    if let Some(retention) = &job.retention {
        let path = root.key("retention");
        if retention.keep == Some(0) {
            out.push(
                Finding::error(
                    "invalid-number",
                    path.key("keep"),
                    "`keep: 0` would delete every build as soon as it finishes, with its log",
                )
                .help("keep at least 1 build"),
            );
        }
        if let Some(ttl) = &retention.ttl {
            if let Err(why) = parse_duration(ttl) {
                out.push(
                    Finding::error(
                        "invalid-duration",
                        path.key("ttl"),
                        format!("ttl `{ttl}` is not a duration: {why}"),
                    )
                    .help("write e.g. `7d` or `12h`"),
                );
            }
        }
    }
}

/// `archive.retention`: a count that keeps something and an age that is a duration.
fn check_archive(job: &Job, root: &FieldPath, out: &mut Vec<Finding>) {
    let Some(retention) = job.archive.as_ref().and_then(|a| a.retention.as_ref()) else {
        return;
    };
    let path = root.key("archive").key("retention");
    if retention.max_count == Some(0) {
        out.push(
            Finding::error(
                "invalid-number",
                path.key("max_count"),
                "`max_count: 0` would delete every archived build, with its log",
            )
            .help("keep at least 1 build, or remove `max_count` to keep them all"),
        );
    }
    if let Some(age) = &retention.max_age {
        if let Err(why) = parse_duration(age) {
            out.push(
                Finding::error(
                    "invalid-duration",
                    path.key("max_age"),
                    format!("max_age `{age}` is not a duration: {why}"),
                )
                .help("write e.g. `90d` or `12w`"),
            );
        }
    }
}

fn check_image(image: &str, path: &FieldPath, out: &mut Vec<Finding>) {
    if image.is_empty()
        || image.chars().any(|c| c.is_whitespace() || c.is_control())
        || image.starts_with('-')
    {
        out.push(
            Finding::error(
                "invalid-image",
                path.clone(),
                format!(
                    "`{}` is not a container image reference",
                    image.escape_debug()
                ),
            )
            .help("write e.g. `docker.io/library/buildpack-deps:bookworm`"),
        );
        return;
    }
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let repository = without_digest.split(':').next().unwrap_or("");
    if repository.chars().any(|c| c.is_ascii_uppercase()) && !without_digest.contains('/') {
        out.push(
            Finding::error(
                "invalid-image",
                path.clone(),
                format!("image `{image}` has uppercase letters; repository names are lowercase"),
            )
            .help("write the repository in lowercase"),
        );
    }
    let tag = last.split_once(':').map(|(_, tag)| tag);
    if !image.contains('@') && matches!(tag, None | Some("latest")) {
        out.push(
            Finding::warning(
                "unpinned-image",
                path.clone(),
                format!(
                    "image `{image}` has no fixed tag: builds change when the image is updated"
                ),
            )
            .help("pin a version tag or a digest, e.g. `:1.2.3` or `@sha256:…`"),
        );
    }
}

fn check_resources(resources: &Resources, path: &FieldPath, out: &mut Vec<Finding>) {
    let mut parsed: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for (section, list) in [
        ("requests", &resources.requests),
        ("limits", &resources.limits),
    ] {
        for (name, quantity) in list {
            let field = path.key(section).key(name);
            let known = matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage")
                || name.starts_with("hugepages-")
                || name.contains('/');
            if !known {
                out.push(
                    Finding::error("unknown-resource", field.clone(), format!("`{name}` is not a resource name"))
                        .help(suggest(name, &["cpu", "memory", "ephemeral-storage"]).unwrap_or_else(|| "use cpu, memory, ephemeral-storage or an extended resource such as `nvidia.com/gpu`".into()))
                        .at_key(),
                );
                continue;
            }
            match parse_quantity(quantity) {
                Ok(value) => {
                    parsed.insert((section, name), value);
                }
                Err(why) => out.push(
                    Finding::error(
                        "invalid-quantity",
                        field,
                        format!("`{quantity}` is not a resource quantity: {why}"),
                    )
                    .help("write e.g. `cpu: 500m`, `memory: 1Gi`"),
                ),
            }
        }
    }
    for ((section, name), request) in &parsed {
        if *section != "requests" {
            continue;
        }
        if let Some(limit) = parsed.get(&("limits", name)) {
            if request > limit {
                out.push(
                    Finding::error(
                        "request-over-limit",
                        path.key("requests").key(name),
                        format!("the {name} request is larger than its limit"),
                    )
                    .help("raise the limit or lower the request; Kubernetes refuses such a pod"),
                );
            }
        }
    }
}

fn check_toleration(toleration: &Toleration, path: &FieldPath, out: &mut Vec<Finding>) {
    match toleration.operator.as_deref() {
        None | Some("Equal") => {}
        Some("Exists") => {
            if toleration.value.as_deref().is_some_and(|v| !v.is_empty()) {
                out.push(
                    Finding::error(
                        "invalid-toleration",
                        path.key("value"),
                        "a toleration with `operator: Exists` cannot have a value",
                    )
                    .help("remove `value`, or use `operator: Equal`"),
                );
            }
        }
        Some(other) => out.push(
            Finding::error(
                "invalid-toleration",
                path.key("operator"),
                format!("`{other}` is not a toleration operator"),
            )
            .help("use `Equal` or `Exists`"),
        ),
    }
    if let Some(effect) = &toleration.effect {
        if !matches!(
            effect.as_str(),
            "" | "NoSchedule" | "PreferNoSchedule" | "NoExecute"
        ) {
            out.push(
                Finding::error(
                    "invalid-toleration",
                    path.key("effect"),
                    format!("`{effect}` is not a taint effect"),
                )
                .help(
                    suggest(effect, &["NoSchedule", "PreferNoSchedule", "NoExecute"])
                        .unwrap_or_else(|| "use NoSchedule, PreferNoSchedule or NoExecute".into()),
                ),
            );
        }
    }
    if toleration.toleration_seconds.is_some() && toleration.effect.as_deref() != Some("NoExecute")
    {
        out.push(
            Finding::error(
                "invalid-toleration",
                path.key("tolerationSeconds"),
                "`tolerationSeconds` applies only to `effect: NoExecute`",
            )
            .help("set `effect: NoExecute` or remove `tolerationSeconds`"),
        );
    }
    if toleration.key.is_none() && toleration.operator.as_deref() != Some("Exists") {
        out.push(
            Finding::error(
                "invalid-toleration",
                path.clone(),
                "a toleration without `key` must have `operator: Exists`",
            )
            .help("add `key`, or `operator: Exists` to tolerate every taint"),
        );
    }
}
