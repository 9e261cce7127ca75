//! Tests of `index`.
use super::*;

fn data(job_yaml: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("job.yaml".to_owned(), job_yaml.to_owned())])
}

const JOB: &str = "- job:\n    name: demo\n    git: {url: 'https://github.com/o/r'}\n    run_command: make\n    timeout: 5m\n";

#[test]
fn configmaps_come_and_go_and_versions_are_not_reread() {
    let labels = BTreeMap::new();
    let mut index = JobIndex::default();
    let good = data(JOB);
    let cm = ConfigMapData {
        namespace: "team",
        name: "demo-cm",
        labels: &labels,
        data: &good,
    };
    assert_eq!(
        index.upsert(cm, "1", &LoadOptions::default()),
        Change::Updated { errors: false }
    );
    assert_eq!(
        index.upsert(cm, "1", &LoadOptions::default()),
        Change::Unchanged
    );
    assert_eq!(index.find("team", "demo").unwrap().spec_hash.len(), 64);
    let of = |keys: &[&str]| {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        index.specs(Some(&keys)).len()
    };
    assert_eq!(of(&["github.com/o/r"]), 1, "matched by repository");
    assert_eq!(of(&["github.com/o/other"]), 0);
    assert_eq!(index.specs(None).len(), 1);
    assert!(index.find("other", "demo").is_none());

    let bad = data(&JOB.replace("run_command", "run_comand"));
    let edited = ConfigMapData { data: &bad, ..cm };
    assert_eq!(
        index.upsert(edited, "2", &LoadOptions::default()),
        Change::Updated { errors: true }
    );
    assert!(
        index.find("team", "demo").is_none(),
        "an invalid job cannot build"
    );
    assert!(
        index.find_declared("team", "demo").is_some(),
        "but it is shown with its error"
    );

    index.retain(Some("elsewhere"), &[]);
    assert_eq!(index.shared().count(), 1, "another watch's relist");
    index.retain(None, &[]);
    assert_eq!(index.shared().count(), 0);
    assert_eq!(
        index.upsert(cm, "3", &LoadOptions::default()),
        Change::Updated { errors: false }
    );
    assert!(index.remove("team", "demo-cm").is_some());
    assert!(index.find_declared("team", "demo").is_none());
}

#[test]
fn a_refused_declaration_in_another_namespace_never_takes_over_a_jobs_page() {
    let labels = BTreeMap::new();
    let mut index = JobIndex::default();
    let valid = data(JOB);
    let intruder = data(&JOB.replace("    git:", "    namespace: default\n    git:"));
    // `aaa` sorts before `default`: first by ConfigMap, it used to be the page's job.
    index.upsert(
        ConfigMapData {
            namespace: "aaa",
            name: "demo",
            labels: &labels,
            data: &intruder,
        },
        "1",
        &LoadOptions::default(),
    );
    index.upsert(
        ConfigMapData {
            namespace: "default",
            name: "demo",
            labels: &labels,
            data: &valid,
        },
        "2",
        &LoadOptions::default(),
    );
    let shown = index.find_declared("default", "demo").unwrap();
    assert!(shown.job.is_some(), "default's valid job: {shown:?}");
    assert_eq!(shown.configmap.as_ref().unwrap().namespace, "default");
    let refused = index.find_declared("aaa", "demo").unwrap();
    assert!(refused.job.is_none());
    assert!(refused
        .diagnostics
        .iter()
        .any(|d| d.code == "namespace-not-allowed"));
}

#[test]
fn a_second_configmap_declaring_the_same_job_is_a_repeat_until_the_first_goes() {
    let labels = BTreeMap::new();
    let mut index = JobIndex::default();
    let job = data(JOB);
    let cm = |name| ConfigMapData {
        namespace: "team",
        name,
        labels: &labels,
        data: &job,
    };
    index.upsert(cm("b-demo"), "1", &LoadOptions::default());
    assert_eq!(
        index.upsert(cm("a-demo"), "2", &LoadOptions::default()),
        Change::Updated { errors: false }
    );
    let owner = |index: &JobIndex| {
        index
            .find("team", "demo")
            .and_then(|j| j.configmap.clone())
            .map(|c| c.name)
    };
    assert_eq!(owner(&index).as_deref(), Some("a-demo"), "first by name");
    assert_eq!(
        index
            .find_declared("team", "demo")
            .and_then(|j| j.configmap.clone())
            .map(|c| c.name)
            .as_deref(),
        Some("a-demo")
    );
    assert_eq!(index.specs(None).len(), 1, "one job, built once");
    let repeat = index
        .shared()
        .find(|j| j.configmap.as_ref().is_some_and(|c| c.name == "b-demo"))
        .unwrap();
    assert!(repeat.job.is_none());
    let error = repeat.diagnostics.last().unwrap();
    assert_eq!(error.code, "duplicate-job");
    assert!(
        error.message.contains("ConfigMap team/a-demo"),
        "{}",
        error.message
    );

    index.remove("team", "a-demo");
    assert_eq!(
        owner(&index).as_deref(),
        Some("b-demo"),
        "the repeat takes over"
    );
    assert!(index.shared().all(|j| !j.has_errors()));
    index.upsert(cm("a-demo"), "3", &LoadOptions::default());
    let renamed = data(&JOB.replace("name: demo", "name: other"));
    index.upsert(
        ConfigMapData {
            data: &renamed,
            ..cm("a-demo")
        },
        "4",
        &LoadOptions::default(),
    );
    assert_eq!(owner(&index).as_deref(), Some("b-demo"), "renamed away");
    assert!(index.find("team", "other").is_some());
    assert!(index.shared().all(|j| !j.has_errors()));
}

#[test]
fn an_invalid_job_stays_declared_until_its_configmap_goes() {
    let labels = BTreeMap::new();
    let mut index = JobIndex::default();
    let bad = data(&JOB.replace("run_command", "run_comand"));
    let good = data(&JOB.replace("name: demo", "name: other"));
    let cm = |name, data| ConfigMapData {
        namespace: "team",
        name,
        labels: &labels,
        data,
    };
    index.upsert(cm("demo-cm", &bad), "1", &LoadOptions::default());
    index.upsert(cm("other-cm", &good), "2", &LoadOptions::default());
    assert!(index.find("team", "demo").is_none(), "not buildable");
    assert!(index.is_declared("team", "demo"), "but its builds are kept");
    assert!(index.find_declared("team", "demo").unwrap().has_errors());
    assert!(!index.is_declared("other-team", "demo"));

    let present = [ConfigMapKey {
        namespace: "team".into(),
        name: "other-cm".into(),
    }];
    index.retain(Some("team"), &present);
    assert!(!index.is_declared("team", "demo"), "its ConfigMap is gone");
    assert!(index.find_declared("team", "demo").is_none());
    assert!(index.is_declared("team", "other"));
}

fn named(index: &mut JobIndex, namespace: &str, name: &str, context: Option<&str>) -> Change {
    let labels = BTreeMap::new();
    let context = context.map_or_else(String::new, |c| format!("      context: {c}\n"));
    let yaml = format!(
        "- job:\n    name: {name}\n    git: {{url: 'https://github.com/victim/repo'}}\n    run_command: make\n    timeout: 5m\n    ghprb:\n      enabled: true\n{context}"
    );
    let data = data(&yaml);
    let cm = ConfigMapData {
        namespace,
        name,
        labels: &labels,
        data: &data,
    };
    index.upsert(cm, "1", &LoadOptions::default())
}

#[test]
fn a_job_whose_check_name_another_job_keeps_is_invalid_until_it_is_free() {
    let mut index = JobIndex::default();
    assert_eq!(
        named(&mut index, "team-b", "deploy", None),
        Change::Updated { errors: false }
    );
    assert_eq!(
        index.check_name("team-b", "deploy").as_deref(),
        Some("kubeci/deploy")
    );
    // team-a takes team-b's name: refused, with the job that keeps it; team-b's
    // default now names its namespace, as two namespaces build the repository.
    assert_eq!(
        named(&mut index, "team-a", "evil", Some("kubeci/deploy")),
        Change::Updated { errors: true }
    );
    assert!(index.find("team-a", "evil").is_none());
    assert!(index.specs(None).iter().all(|(ns, _)| ns == "team-b"));
    let refused = index.find_declared("team-a", "evil").unwrap();
    let error = refused.diagnostics.last().unwrap();
    assert_eq!(error.code, "check-name-taken");
    assert!(
        error.message.contains("by job team-b/deploy"),
        "{}",
        error.message
    );
    assert_eq!(
        index.check_name("team-b", "deploy").as_deref(),
        Some("kubeci/deploy")
    );
    assert_eq!(index.check_name("team-a", "evil").as_deref(), None);
    // Another job of team-a with its own name: both namespaces build the repository.
    named(&mut index, "team-a", "lint", None);
    assert_eq!(
        index.check_name("team-a", "lint").as_deref(),
        Some("kubeci/team-a/lint")
    );
    assert_eq!(
        index.check_name("team-b", "deploy").as_deref(),
        Some("kubeci/team-b/deploy")
    );
    // team-b's job goes: the name is free, and team-a's job valid.
    index.remove("team-b", "deploy");
    assert!(index.find("team-a", "evil").is_some());
    assert_eq!(
        index.check_name("team-a", "evil").as_deref(),
        Some("kubeci/deploy")
    );
    assert_eq!(
        index.check_name("team-a", "lint").as_deref(),
        Some("kubeci/lint")
    );
}

#[test]
fn a_job_refused_its_name_by_anothers_change_is_owed_an_event() {
    let mut index = JobIndex::default();
    named(&mut index, "team-a", "evil", Some("kubeci/deploy"));
    assert!(index.find("team-a", "evil").is_some(), "valid while alone");
    index.take_named_out();
    // team-b's `deploy` arrives: its default name is the one team-a declared.
    named(&mut index, "team-b", "deploy", None);
    assert!(index.find("team-a", "evil").is_none());
    let owed = index.take_named_out();
    assert_eq!(
        owed,
        [ConfigMapKey {
            namespace: "team-a".into(),
            name: "evil".into()
        }]
    );
    named(&mut index, "team-b", "lint", None);
    assert!(index.take_named_out().is_empty(), "once");
}

#[test]
fn of_two_jobs_declaring_one_check_name_the_older_keeps_it() {
    let labels = BTreeMap::new();
    let declaring = |name: &str| {
        data(&format!(
            "- job:\n    name: {name}\n    git: {{url: 'https://github.com/victim/repo'}}\n    run_command: make\n    timeout: 5m\n    ghprb:\n      context: ci/deploy\n"
        ))
    };
    let (deploy, evil) = (declaring("deploy"), declaring("evil"));
    let mut index = JobIndex::default();
    let cm = |namespace, name, data| ConfigMapData {
        namespace,
        name,
        labels: &labels,
        data,
    };
    let options = LoadOptions::default();
    index.upsert_created(cm("team-b", "deploy", &deploy), "1", Some(1_000), &options);
    // team-a sorts first, but came later: team-b keeps its name.
    let change = index.upsert_created(cm("team-a", "evil", &evil), "1", Some(2_000), &options);
    assert_eq!(change, Change::Updated { errors: true });
    assert_eq!(
        index.check_name("team-b", "deploy").as_deref(),
        Some("ci/deploy")
    );
    assert!(index.find("team-a", "evil").is_none());
}

fn enabled(name: &str, service_accounts: &[&str]) -> NamespaceRules {
    NamespaceRules {
        name: name.into(),
        enabled: true,
        service_accounts: service_accounts.iter().map(|s| (*s).to_owned()).collect(),
        ..NamespaceRules::default()
    }
}

#[test]
fn with_tenancy_a_job_builds_only_while_its_namespace_allows_it() {
    // The ConfigMap's own labels claim what only the Namespace may say.
    let labels = BTreeMap::from([
        ("kubeci.io/builds".to_owned(), "enabled".to_owned()),
        (
            "kubeci.io/service-accounts".to_owned(),
            "deployer".to_owned(),
        ),
    ]);
    let mut index = JobIndex::with_tenancy();
    let job = data(&JOB.replace(
        "    timeout",
        "    service_account_name: deployer\n    timeout",
    ));
    let cm = ConfigMapData {
        namespace: "team",
        name: "demo-cm",
        labels: &labels,
        data: &job,
    };
    assert_eq!(
        index.upsert(cm, "1", &LoadOptions::default()),
        Change::Updated { errors: true },
        "refused: an Event is recorded"
    );
    assert!(index.find("team", "demo").is_none());
    assert!(index.specs(None).is_empty(), "GitHub builds nothing either");
    let shown = index.find_declared("team", "demo").unwrap();
    assert_eq!(
        shown.diagnostics.last().unwrap().code,
        "tenancy-namespace-not-enabled"
    );

    let configmap = ConfigMapKey {
        namespace: "team".into(),
        name: "demo-cm".into(),
    };
    assert_eq!(
        index.set_namespace("team", Some(enabled("team", &[]))),
        std::slice::from_ref(&configmap),
        "refused for another reason now"
    );
    let refused = index.find_declared("team", "demo").unwrap();
    assert_eq!(
        refused.diagnostics.last().unwrap().code,
        "tenancy-service-account"
    );
    assert_eq!(
        index.set_namespace("team", Some(enabled("team", &[]))),
        [],
        "the same rules again change nothing"
    );

    assert_eq!(
        index.set_namespace("team", Some(enabled("team", &["deployer"]))),
        []
    );
    assert!(
        index.find("team", "demo").is_some(),
        "allowed without a restart"
    );
    assert!(!index.find_declared("team", "demo").unwrap().has_errors());
    assert_eq!(index.specs(None).len(), 1);
    assert_eq!(
        index.upsert(cm, "2", &LoadOptions::default()),
        Change::Updated { errors: false }
    );

    assert_eq!(
        index.retain_namespaces(&[]),
        [configmap],
        "the Namespace is gone"
    );
    assert!(index.find("team", "demo").is_none());
    assert!(index.is_declared("team", "demo"), "its builds are kept");
}

#[test]
fn a_declaration_tenancy_refuses_never_stands_over_the_job() {
    let labels = BTreeMap::new();
    let mut index = JobIndex::with_tenancy();
    let options = LoadOptions {
        policy: kubeci_spec::NamespacePolicy {
            allowed: vec![("aaa".into(), "team".into())],
        },
        ..LoadOptions::default()
    };
    let intruder = data(&JOB.replace("    git:", "    namespace: team\n    git:"));
    let own = data(JOB);
    index.set_namespace("team", Some(enabled("team", &[])));
    for (namespace, data) in [("aaa", &intruder), ("team", &own)] {
        index.upsert(
            ConfigMapData {
                namespace,
                name: "demo",
                labels: &labels,
                data,
            },
            "1",
            &options,
        );
    }
    let job = index
        .find("team", "demo")
        .expect("team's own declaration builds");
    assert_eq!(job.configmap.as_ref().unwrap().namespace, "team");
    let open = JobIndex::default();
    assert!(open.tenancy.is_none(), "open: no rules at all");
}

#[test]
fn a_list_applied_whole_decides_check_names_once_as_one_by_one() {
    let mut listed = JobIndex::default();
    listed.defer_names();
    named(&mut listed, "team-a", "evil", Some("kubeci/deploy"));
    named(&mut listed, "team-b", "deploy", None);
    listed.settle_deferred();
    let mut one_by_one = JobIndex::default();
    named(&mut one_by_one, "team-a", "evil", Some("kubeci/deploy"));
    named(&mut one_by_one, "team-b", "deploy", None);
    for index in [&listed, &one_by_one] {
        assert!(index.find("team-a", "evil").is_none());
        assert_eq!(
            index.check_name("team-b", "deploy").as_deref(),
            Some("kubeci/deploy")
        );
        assert!(!index.is_valid_configmap(&ConfigMapKey {
            namespace: "team-a".into(),
            name: "evil".into()
        }));
    }
}

#[test]
fn a_namespace_allows_only_the_repositories_its_tenancy_rules_list() {
    let mut index = JobIndex::with_tenancy();
    assert!(
        !index.allows_repository("team", "github.com/acme/app"),
        "a Namespace not seen allows nothing"
    );
    index.set_namespace("team", Some(enabled("team", &[])));
    assert!(
        index.allows_repository("team", "github.com/victim/repo"),
        "without `kubeci.io/repositories`, any repository"
    );
    let pinned = NamespaceRules {
        repositories: Some(vec!["github.com/acme/*".into()]),
        ..enabled("team", &[])
    };
    index.set_namespace("team", Some(pinned.clone()));
    assert!(index.allows_repository("team", "github.com/acme/app"));
    assert!(!index.allows_repository("team", "github.com/victim/repo"));
    let disabled = NamespaceRules {
        enabled: false,
        ..pinned
    };
    index.set_namespace("team", Some(disabled));
    assert!(!index.allows_repository("team", "github.com/acme/app"));
    assert!(
        JobIndex::default().allows_repository("team", "github.com/victim/repo"),
        "`--tenancy open`: every repository"
    );
}
