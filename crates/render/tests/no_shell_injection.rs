//! Values from a spec or a webhook reach the build pod only as whole argv elements or
//! environment values, never inside a string a shell interprets.

use k8s_openapi::api::core::v1::Container;
use kubeci_build::{BuildRequest, PullRequest, Trigger};
use kubeci_render::expansion::expand;
use kubeci_render::{render, JobOrigin, RenderConfig, BUILD_PRELUDE};
use kubeci_spec::Job;

const HOSTILE: [&str; 6] = [
    "$(touch /tmp/x)",
    "`touch /tmp/x`",
    "a; touch /tmp/x",
    "q'uo\"te",
    "new\nline",
    "$(JOB_NAME)$$",
];

/// Every string a container receives, after the kubelet's `$(VAR)` expansion.
fn argv_and_env(container: &Container) -> (Vec<String>, Vec<(String, String)>) {
    let env: Vec<(String, String)> = container
        .env
        .iter()
        .flatten()
        .filter_map(|e| e.value.as_ref().map(|v| (e.name.clone(), v.clone())))
        .collect();
    let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let expanded_env: Vec<(String, String)> = env
        .iter()
        .map(|(n, v)| (n.clone(), expand(v, lookup)))
        .collect();
    let argv = container
        .command
        .iter()
        .flatten()
        .chain(container.args.iter().flatten())
        .map(|a| expand(a, lookup))
        .collect();
    (argv, expanded_env)
}

#[test]
fn hostile_values_travel_only_as_argv_elements_and_environment_values() {
    for value in HOSTILE {
        // A workdir is a path: control characters are refused rather than passed on.
        let workdir = if value.contains('\n') {
            "sub/plain".to_owned()
        } else {
            format!("sub/{value}")
        };
        let job: Job = serde_json::from_value(serde_json::json!({
            "name": value,
            "git": {"url": value, "branch": value, "ssh_secret_ref": "key", "ssh_fingerprint": value},
            "run_command": "make test",
            "workdir": workdir,
            "env": {"EXTRA": value},
        }))
        .unwrap();
        let request = BuildRequest {
            number: 3,
            trigger: Trigger::PullRequest,
            commit: Some(value.to_owned()),
            git_ref: Some(value.to_owned()),
            branch: None,
            pull_request: Some(PullRequest {
                number: 7,
                author: Some(value.to_owned()),
                source_branch: Some(value.to_owned()),
                target_branch: Some(value.to_owned()),
            }),
            requested_by: Some(value.to_owned()),
        };
        let origin = JobOrigin {
            namespace: "default".into(),
            spec_hash: "h".into(),
            chart_version: None,
        };
        let rendered = render(&job, &origin, &request, &RenderConfig::default()).unwrap();
        let pod = rendered.spec.unwrap().template.spec.unwrap();

        let clone = &pod.init_containers.unwrap()[0];
        let (argv, _) = argv_and_env(clone);
        assert_eq!(
            argv[..2],
            ["kubeci", "clone"],
            "the clone step is a program, not a shell"
        );
        for flag in ["url", "branch", "ref", "commit", "fingerprint"] {
            assert!(
                argv.contains(&format!("--{flag}={value}")),
                "--{flag} carries {value:?} whole: {argv:?}"
            );
        }

        let build = &pod.containers[0];
        let (argv, env) = argv_and_env(build);
        assert_eq!(argv[..2], ["/bin/bash", "-c"]);
        assert_eq!(
            argv[2], BUILD_PRELUDE,
            "the shell string is the constant prelude"
        );
        assert_eq!(
            argv[4], "make test",
            "the script is the job's run_command, unchanged"
        );
        assert!(!BUILD_PRELUDE.contains(value));
        for name in [
            "JOB_NAME",
            "GIT_URL",
            "GIT_COMMIT",
            "ghprbPullAuthorLogin",
            "ghprbSourceBranch",
            "EXTRA",
        ] {
            let found = env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
            assert_eq!(found, Some(value), "{name} holds the value exactly");
        }
        assert_eq!(
            build.working_dir.as_deref(),
            Some(format!("/workspace/src/{workdir}").as_str())
        );
    }
}

#[test]
fn scripts_survive_kubernetes_variable_expansion() {
    let job: Job = serde_json::from_value(serde_json::json!({
        "name": "demo",
        "git": {"url": "https://github.com/o/r"},
        "run_command": "echo $(JOB_NAME) $$ $HOME\nkill -0 $$",
    }))
    .unwrap();
    let origin = JobOrigin {
        namespace: "default".into(),
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
    let build = &rendered.spec.unwrap().template.spec.unwrap().containers[0];
    let (argv, _) = argv_and_env(build);
    assert_eq!(
        argv[4], job.run_command,
        "the kubelet hands bash the script as written"
    );
}

#[test]
fn a_workdir_with_control_characters_or_escaping_the_checkout_is_refused() {
    for workdir in ["a\nb", "../x", "/etc", "a/../../b"] {
        let job: Job = serde_json::from_value(serde_json::json!({
            "name": "demo", "git": {"url": "https://github.com/o/r"}, "run_command": "true", "workdir": workdir,
        }))
        .unwrap();
        let origin = JobOrigin {
            namespace: "default".into(),
            spec_hash: "h".into(),
            chart_version: None,
        };
        let err = render(
            &job,
            &origin,
            &BuildRequest::manual(1),
            &RenderConfig::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, kubeci_render::RenderError::InvalidWorkdir { .. }),
            "{workdir:?}: {err}"
        );
    }
}
