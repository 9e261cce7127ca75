use super::*;
use crate::{load_configmap, ConfigMapData, LoadOptions, NamespacePolicy};

/// Job `demo` of a ConfigMap in `namespace`, with `extra` lines under `job:`.
fn loaded(namespace: &str, extra: &str) -> LoadedJob {
    let yaml = format!(
        "- job:\n    name: demo\n    git:\n      url: git@github.com:acme/app.git\n      ssh_fingerprint: SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8\n    run_command: make\n{extra}"
    );
    let data = BTreeMap::from([("job.yaml".to_owned(), yaml)]);
    let labels = BTreeMap::new();
    let options = LoadOptions {
        policy: NamespacePolicy {
            allowed: vec![("team-a".into(), "builds".into())],
        },
        ..LoadOptions::default()
    };
    let job = load_configmap(
        ConfigMapData {
            namespace,
            name: "demo",
            labels: &labels,
            data: &data,
        },
        &options,
    );
    assert!(!job.has_errors(), "{:?}", job.diagnostics);
    job
}

fn rules(name: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> NamespaceRules {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    NamespaceRules::from_metadata(name, &map(labels), &map(annotations))
}

fn enabled(name: &str, annotations: &[(&str, &str)]) -> NamespaceRules {
    rules(name, &[(BUILDS_LABEL, BUILDS_ENABLED)], annotations)
}

fn violations(loaded: &LoadedJob, namespaces: &[NamespaceRules]) -> Vec<Violation> {
    let home = &loaded.configmap.as_ref().unwrap().namespace;
    check(
        loaded.job.as_ref().unwrap(),
        home,
        &loaded.namespace,
        |ns| namespaces.iter().find(|r| r.name == ns),
    )
}

#[test]
fn a_namespace_builds_only_when_labelled_enabled() {
    let job = loaded("team-a", "");
    let found = violations(&job, &[]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, Rule::NamespaceNotEnabled);
    assert_eq!(found[0].namespace, "team-a");
    assert!(
        found[0]
            .help
            .contains("kubectl label namespace team-a kubeci.io/builds=enabled"),
        "{}",
        found[0].help
    );
    for value in ["disabled", "true", ""] {
        let labelled = rules("team-a", &[(BUILDS_LABEL, value)], &[]);
        assert_eq!(violations(&job, &[labelled]).len(), 1, "{value}");
    }
    assert_eq!(violations(&job, &[enabled("team-a", &[])]), []);
    assert_eq!(
        violations(&job, &[enabled("team-b", &[])]).len(),
        1,
        "another namespace's label allows nothing here"
    );
}

#[test]
fn only_the_default_service_account_or_one_the_namespace_lists() {
    let plain = enabled("team-a", &[]);
    assert_eq!(
        violations(
            &loaded("team-a", "    service_account_name: default\n"),
            std::slice::from_ref(&plain)
        ),
        []
    );
    let job = loaded("team-a", "    service_account_name: deployer\n");
    let found = violations(&job, &[plain]);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].rule, Rule::ServiceAccount);
    assert_eq!(
        format!("{}: {}", found[0].message, found[0].help),
        "namespace team-a does not allow ServiceAccount deployer: add it to the annotation \
         kubeci.io/service-accounts of Namespace team-a (kubectl annotate namespace team-a \
         kubeci.io/service-accounts=deployer)"
    );
    assert_eq!(found[0].field.to_string(), "job.service_account_name");
    let listed = enabled(
        "team-a",
        &[(SERVICE_ACCOUNTS_ANNOTATION, "builder, deployer")],
    );
    assert_eq!(violations(&job, &[listed]), []);
    let others = enabled("team-a", &[(SERVICE_ACCOUNTS_ANNOTATION, "builder")]);
    let found = violations(&job, &[others]);
    assert!(
        found[0].help.contains(
            "kubectl annotate --overwrite namespace team-a kubeci.io/service-accounts=builder,deployer"
        ),
        "the command keeps what is listed: {}",
        found[0].help
    );
}

#[test]
fn every_secret_the_job_names_must_be_listed() {
    let job = loaded("team-a", "    aws_secret: aws-keys\n");
    let mut with_key = job.clone();
    std::sync::Arc::make_mut(with_key.job.as_mut().unwrap())
        .git
        .ssh_secret_ref = Some("deploy-key".into());
    let found = violations(&with_key, &[enabled("team-a", &[])]);
    let named: Vec<(&str, String)> = found
        .iter()
        .map(|v| (v.message.as_str(), v.field.to_string()))
        .collect();
    assert_eq!(
        named,
        [
            (
                "namespace team-a does not allow Secret deploy-key",
                "job.git.ssh_secret_ref".to_owned()
            ),
            (
                "namespace team-a does not allow Secret aws-keys",
                "job.aws_secret".to_owned()
            ),
        ]
    );
    assert!(found.iter().all(|v| v.rule == Rule::Secret));
    assert!(
        found[1].help.ends_with(
            "(kubectl annotate --overwrite namespace team-a kubeci.io/secrets=deploy-key,aws-keys)"
        ),
        "{}",
        found[1].help
    );
    let one = enabled("team-a", &[(SECRETS_ANNOTATION, "aws-keys")]);
    assert_eq!(violations(&with_key, &[one]).len(), 1);
    let both = enabled("team-a", &[(SECRETS_ANNOTATION, "deploy-key,aws-keys")]);
    assert_eq!(violations(&with_key, &[both]), []);
}

#[test]
fn repositories_are_any_without_the_annotation_else_those_it_matches() {
    let job = loaded("team-a", "");
    assert_eq!(violations(&job, &[enabled("team-a", &[])]), []);
    for allowed in [
        "github.com/acme/*",
        "GitHub.com/ACME/app",
        "github.com/other/*, github.com/acme/ap*",
        "github.com/*/app.git",
    ] {
        let ns = enabled("team-a", &[(REPOSITORIES_ANNOTATION, allowed)]);
        assert_eq!(violations(&job, &[ns]), [], "{allowed}");
    }
    for refused in [
        "github.com/other/*",
        "github.com/acme",
        "github.com/acme/*/*",
        "gitlab.com/acme/*",
        "",
    ] {
        let ns = enabled("team-a", &[(REPOSITORIES_ANNOTATION, refused)]);
        let found = violations(&job, &[ns]);
        assert_eq!(found.len(), 1, "{refused}");
        assert_eq!(found[0].rule, Rule::Repository);
        assert_eq!(
            found[0].message,
            "namespace team-a does not allow repository github.com/acme/app"
        );
    }
    assert!(!repository_matches(
        "github.com/acme/*",
        "github.com/acme/app/extra"
    ));
    assert!(repository_matches(
        "github.com/acme/*-ci",
        "github.com/acme/app-ci"
    ));
    assert!(!repository_matches(
        "github.com/acme/*-ci",
        "github.com/acme/app-cd"
    ));
}

#[test]
fn builds_in_another_namespace_need_both_enabled_and_the_build_namespace_allowing_everything() {
    let job = loaded(
        "team-a",
        "    namespace: builds\n    service_account_name: deployer\n",
    );
    let allows = |ns: &str| enabled(ns, &[(SERVICE_ACCOUNTS_ANNOTATION, "deployer")]);
    assert_eq!(violations(&job, &[allows("team-a"), allows("builds")]), []);
    let found = violations(&job, &[allows("builds")]);
    assert_eq!(
        found
            .iter()
            .map(|v| (v.rule, v.namespace.as_str()))
            .collect::<Vec<_>>(),
        [(Rule::NamespaceNotEnabled, "team-a")],
        "the ConfigMap's namespace must be enabled"
    );
    let found = violations(&job, &[allows("team-a"), enabled("builds", &[])]);
    assert_eq!(
        found
            .iter()
            .map(|v| (v.rule, v.namespace.as_str()))
            .collect::<Vec<_>>(),
        [(Rule::ServiceAccount, "builds")],
        "the ConfigMap's namespace allowing it is not enough"
    );
    assert_eq!(violations(&job, &[allows("team-a")]).len(), 1);
}

#[test]
fn a_refused_job_is_invalid_with_one_error_per_violation_and_says_why() {
    let job = loaded("team-a", "    service_account_name: deployer\n");
    assert_eq!(refusal(&job), None);
    let found = violations(&job, &[enabled("team-a", &[])]);
    let refused = refuse(&job, &found);
    assert!(refused.job.is_none() && refused.has_errors());
    let error = refused.diagnostics.last().unwrap();
    assert_eq!(error.code, "tenancy-service-account");
    assert_eq!(error.object.as_deref(), Some("ConfigMap team-a/demo"));
    assert!(error.help.as_deref().unwrap().contains("kubectl annotate"));
    assert_eq!(
        refusal(&refused).as_deref(),
        Some("namespace team-a does not allow ServiceAccount deployer")
    );
}

#[test]
fn rules_come_from_labels_and_annotations_trimmed() {
    let ns = rules(
        "team-a",
        &[(BUILDS_LABEL, "enabled")],
        &[
            (SERVICE_ACCOUNTS_ANNOTATION, " a ,, b "),
            (SECRETS_ANNOTATION, ""),
        ],
    );
    assert!(ns.enabled);
    assert_eq!(ns.service_accounts, ["a", "b"]);
    assert!(ns.secrets.is_empty());
    assert_eq!(ns.repositories, None, "no annotation: any repository");
    assert!(ns.allows_repository(None));
    let pinned = enabled("team-a", &[(REPOSITORIES_ANNOTATION, "github.com/acme/*")]);
    assert!(
        !pinned.allows_repository(None),
        "a local path matches no pattern"
    );
}

#[test]
fn a_queued_builds_pod_is_checked_as_it_was_rendered() {
    let rules = NamespaceRules {
        name: "team".into(),
        enabled: true,
        service_accounts: vec!["deployer".into()],
        secrets: vec!["github-key".into()],
        repositories: Some(vec!["github.com/acme/*".into()]),
    };
    let uses = PodUses {
        service_account: Some("deployer".into()),
        secrets: vec!["github-key".into()],
        repository: Some("github.com/acme/app".into()),
    };
    assert_eq!(pod_refusal("team", &uses, Some(&rules)), None);
    let revoked = NamespaceRules {
        service_accounts: Vec::new(),
        secrets: Vec::new(),
        ..rules.clone()
    };
    assert_eq!(
        pod_refusal("team", &uses, Some(&revoked)).unwrap(),
        "namespace team does not allow ServiceAccount deployer; namespace team does not allow Secret github-key"
    );
    let elsewhere = PodUses {
        repository: Some("github.com/other/app".into()),
        ..uses.clone()
    };
    assert!(pod_refusal("team", &elsewhere, Some(&rules))
        .unwrap()
        .contains("repository github.com/other/app"));
    let disabled = NamespaceRules {
        enabled: false,
        ..rules
    };
    assert!(pod_refusal("team", &uses, Some(&disabled))
        .unwrap()
        .contains("not enabled"));
    assert!(
        pod_refusal("team", &uses, None).is_some(),
        "a Namespace not seen"
    );
}

#[test]
fn repository_patterns_match_in_linear_time() {
    let long = format!("github.com/acme/{}", "a".repeat(5_000));
    let hostile = format!("github.com/acme/{}b", "*a".repeat(50));
    assert!(!repository_matches(&hostile, &long));
    assert!(repository_matches("github.com/acme/*a*a*", &long));
    assert!(repository_matches(
        "github.com/*/app",
        "github.com/acme/app"
    ));
    assert!(!repository_matches(
        "github.com/*/app",
        "github.com/acme/apps"
    ));
    assert!(repository_matches(
        "github.com/acme/a*p*",
        "github.com/acme/app"
    ));
    assert!(!repository_matches(
        "github.com/acme/*x",
        "github.com/acme/app"
    ));
}
