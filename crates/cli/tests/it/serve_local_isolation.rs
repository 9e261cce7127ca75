//! `kubeci serve --local`, the real binary: what a build (an approved pull request's code)
//! can read of kubeci's own credentials (issue 27). As root, kubeci runs builds as another
//! user, who gets the build's own Secrets and nothing else of kubeci's.

use crate::common;

use common::local::{configmap, Local};
use common::serve::{http, AUTHORIZED};

// Long on purpose: one user's story read top to bottom, each step needing the state the one
// before left; split into helpers it would hide the order a user goes through.
#[test]
fn builds_run_as_another_user_and_read_only_their_own_secrets() {
    let (local, repo) = Local::new();
    let secrets = local.dir.path().join("secrets");
    for (secret, key, value) in [
        ("aws", "aws-access-key-id", "AKIA-the-builds-own"),
        ("aws", "aws-secret-access-key", "the-builds-own-secret"),
        ("deploy-key", "private-key", "the builds own key"),
        ("other", "token", "another jobs secret"),
    ] {
        std::fs::create_dir_all(secrets.join(secret)).unwrap();
        std::fs::write(secrets.join(secret).join(key), value).unwrap();
    }
    let token = local.dir.path().join("token");
    let database = local.data.join("kubeci.db");
    let other = secrets.join("other/token");
    let script = format!(
        "echo \"uid=$(id -u)\"\n\
         for f in {token} {database} {other}; do if cat \"$f\" >/dev/null 2>&1; then echo \"read $f\"; else echo \"cannot read $f\"; fi; done\n\
         if ls {secrets} >/dev/null 2>&1; then echo \"listed {secrets}\"; else echo \"cannot list {secrets}\"; fi\n\
         echo \"own secret: $AWS_ACCESS_KEY_ID, own key: $(cat \"$HOME/../volumes/ssh-key/private-key\")\"",
        token = token.display(),
        database = database.display(),
        other = other.display(),
        secrets = secrets.display(),
    );
    let extra = "        aws_secret: aws\n";
    let job = configmap("probe", &repo.bare, &script, extra).replace(
        "branch: main\n",
        "branch: main\n          ssh_secret_ref: deploy-key\n",
    );
    local.write("probe.yaml", &job);
    let kubeci = local.serve(&["--secrets", secrets.to_str().unwrap()], &[]);
    if !running_as_root() {
        assert!(
            kubeci
                .log()
                .contains("a build can read what kubeci can — its token, its database and the --secrets directory"),
            "not root: kubeci says builds are not kept apart: {}",
            kubeci.log()
        );
        return;
    }
    assert_eq!(
        http(
            &kubeci,
            "POST",
            "/api/v1/jobs/default/probe/builds",
            &[AUTHORIZED]
        )
        .0,
        201
    );
    common::serve::wait("the build to end", || {
        !matches!(
            common::serve::state(&kubeci, "probe", 1).as_str(),
            "queued" | "pending" | "running"
        )
    });
    let (_, log) = http(
        &kubeci,
        "GET",
        "/api/v1/jobs/default/probe/builds/1/log",
        &[],
    );
    let log = common::serve::dechunk(&log);
    assert_eq!(
        common::serve::state(&kubeci, "probe", 1),
        "succeeded",
        "{log}"
    );
    assert!(!log.contains("\nuid=0\n"), "{log}");
    assert!(log.contains("\nuid="), "{log}");
    for path in [&token, &database, &other] {
        assert!(
            log.contains(&format!("\ncannot read {}\n", path.display())),
            "{}: {log}",
            path.display()
        );
    }
    assert!(
        log.contains(&format!("\ncannot list {}\n", secrets.display())),
        "{log}"
    );
    assert!(
        log.contains("\nown secret: AKIA-the-builds-own, own key: the builds own key\n"),
        "{log}"
    );
    assert!(
        kubeci
            .log()
            .contains("kubeci: builds run as another user: kubeci's token, database and --secrets are not theirs to read user=nobody "),
        "{}",
        kubeci.log()
    );
}

/// Whether these tests run as root (CI does).
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

#[test]
fn a_data_directory_builds_cannot_reach_or_a_build_user_without_root_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (jobs, data) = (dir.path().join("jobs"), dir.path().join("data"));
    std::fs::create_dir_all(&jobs).unwrap();
    let (jobs, data) = (jobs.to_str().unwrap(), data.to_str().unwrap());
    let listen = format!("127.0.0.1:{}", common::free_port());
    let args = [
        "serve", "--local", jobs, "--data", data, "--listen", &listen,
    ];
    if running_as_root() {
        // A directory made 0700: `nobody` cannot pass it to the builds' directories.
        use std::os::unix::fs::PermissionsExt;
        let closed = std::fs::Permissions::from_mode(0o700);
        std::fs::set_permissions(dir.path(), closed).unwrap();
        let run = common::kubeci(&args);
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert!(
            run.stderr.contains(&format!(
                "builds run as nobody, who cannot reach the data directory: {} (mode 700) lets no other user pass; `chmod o+x {}`",
                dir.path().display(),
                dir.path().display()
            )),
            "{}",
            run.stderr
        );
        let run = common::kubeci(&[&args[..], &["--build-user", "no-such-user-here"]].concat());
        assert!(
            run.stderr
                .contains("--build-user no-such-user-here: no such user on this machine"),
            "{}",
            run.stderr
        );
    } else {
        let run = common::kubeci(&[&args[..], &["--build-user", "nobody"]].concat());
        assert!(
            run.stderr
                .contains("cannot start processes as another user; start it as root"),
            "{}",
            run.stderr
        );
    }
}
