//! Tenancy checks the Secrets a job names (`kubeci_spec::tenancy::secrets_named`): the
//! pod kubeci renders must name no other.

use std::collections::BTreeSet;

use kubeci_build::BuildRequest;
use kubeci_render::{render, JobOrigin, RenderConfig};
use kubeci_spec::Job;
use serde_json::Value;

/// The names of every Secret an object refers to: any field whose key mentions a secret
/// (`secretKeyRef`, `secret`, `secretRef`, `imagePullSecrets`, …) and names one.
fn secrets_in(value: &Value, under_secret_key: bool, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if under_secret_key {
                for key in ["name", "secretName"] {
                    if let Some(Value::String(name)) = map.get(key) {
                        found.insert(name.clone());
                    }
                }
            }
            for (key, child) in map {
                secrets_in(child, key.to_ascii_lowercase().contains("secret"), found);
            }
        }
        Value::Array(items) => {
            for item in items {
                secrets_in(item, under_secret_key, found);
            }
        }
        _ => {}
    }
}

#[test]
fn the_rendered_pod_names_exactly_the_secrets_tenancy_checks() {
    let job: Job = serde_json::from_value(serde_json::json!({
        "name": "api",
        "git": {"url": "git@github.com:org/api.git", "branch": "main",
                "ssh_secret_ref": "deploy-key"},
        "aws_secret": "aws-keys",
        "service_account_name": "deployer",
        "env": {"TOKEN_NAME": "not-a-secret", "SECRET": "plain-value"},
        "run_command": "make test",
    }))
    .unwrap();
    let origin = JobOrigin {
        namespace: "team".into(),
        spec_hash: "h".into(),
        chart_version: None,
    };
    let rendered = render(
        &job,
        &origin,
        &BuildRequest::manual(1),
        &RenderConfig::default(),
    )
    .unwrap();
    let mut in_pod = BTreeSet::new();
    secrets_in(
        &serde_json::to_value(&rendered).unwrap(),
        false,
        &mut in_pod,
    );
    let checked: BTreeSet<String> = kubeci_spec::tenancy::secrets_named(&job)
        .into_iter()
        .map(|(_, name)| name.to_owned())
        .collect();
    assert_eq!(in_pod, checked);
    assert_eq!(checked.len(), 2, "{checked:?}");
    // What a queued build is checked again with, before it is released.
    let uses = kubeci_render::pod_uses(&rendered);
    assert_eq!(
        uses.secrets.iter().cloned().collect::<BTreeSet<_>>(),
        checked
    );
    assert_eq!(uses.service_account.as_deref(), Some("deployer"));
    assert_eq!(uses.repository.as_deref(), Some("github.com/org/api"));
}
