//! What the build's processes may change while kubeci collects: the directories around its
//! checkout are the build's (on the local engine, its whole build directory is its user's),
//! and a process it left behind may swap any of them for a link at any moment. Nothing
//! kubeci reads is then reached through such a link.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kubeci_collect::{collect, collect_in_pod, CollectError, Limits};

use crate::{patterns, Workspace};

/// Gives `dir` and everything in it to `nobody` when the tests run as root (as CI does,
/// and as kubeci does with `--build-user`): a build's directory is its user's, not
/// kubeci's.
fn give_to_the_build(dir: &Path) {
    if std::fs::metadata(dir).unwrap().uid() == 0 {
        give_to_nobody(dir);
    }
}

fn give_to_nobody(path: &Path) {
    std::os::unix::fs::lchown(path, Some(65534), Some(65534)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            give_to_nobody(&entry.unwrap().path());
        }
    }
}

/// The local engine collects from `BUILD/volumes/workspace/src`, all of it the build's: a
/// build that ends by swapping its checkout (or a directory above it) for a link to
/// kubeci's own files made kubeci collect them — its database, its token, other teams'
/// archived logs — as the build's test reports and artifacts, served to anyone.
#[test]
fn a_checkout_the_build_swapped_for_a_link_is_not_followed() {
    let base = tempfile::tempdir().unwrap();
    let kubeci = base.path().join("kubeci");
    std::fs::create_dir_all(kubeci.join("dist")).unwrap();
    std::fs::write(kubeci.join("junit-token.xml"), "kubeci's token").unwrap();
    std::fs::write(kubeci.join("dist/secrets.tar.gz"), "kubeci's secrets").unwrap();
    for swapped in ["volumes/workspace/src", "volumes/workspace", "volumes"] {
        let build = base.path().join(format!("build-{}", swapped.len()));
        let checkout = build.join("volumes/workspace/src");
        let link = build.join(swapped);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let target = if swapped == "volumes/workspace/src" {
            kubeci.clone()
        } else {
            // A tree of the build's own shape whose checkout is kubeci's directory.
            let shape = base.path().join(format!("shape-{}", swapped.len()));
            let rest = Path::new("volumes/workspace/src")
                .strip_prefix(swapped)
                .unwrap();
            let inner = shape.join(rest);
            std::fs::create_dir_all(inner.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(&kubeci, &inner).unwrap();
            shape
        };
        std::os::unix::fs::symlink(&target, &link).unwrap();
        give_to_the_build(&build);
        let collected = collect(
            &checkout,
            "",
            &patterns(&["**/junit*.xml"]),
            &patterns(&["dist/*.tar.gz"]),
            &Limits::default(),
        );
        match collected {
            Err(CollectError::Workspace { source, .. }) => assert!(
                source.to_string().contains("symbolic link"),
                "{swapped}: {source}"
            ),
            other => panic!("{swapped} swapped for a link: {other:?}"),
        }
    }
}

/// In a build pod the build step is root: it may make the workspace volume's top
/// directory root's, writable by no one else, and put there a link to the collector's own
/// token directory where the checkout was. The local engine's rule (a link in a directory
/// only root may change is an administrator's) would follow it; a pod's collector follows
/// no link on the way to the workspace.
#[test]
fn a_pod_s_collector_follows_no_link_to_its_workspace_even_one_root_made() {
    let base = tempfile::tempdir().unwrap();
    let token_dir = base.path().join("var/run/kubeci/collect");
    std::fs::create_dir_all(&token_dir).unwrap();
    std::fs::write(token_dir.join("token"), "the pod's kubeci-collect token").unwrap();
    let volume = base.path().join("workspace");
    std::fs::create_dir(&volume).unwrap();
    std::os::unix::fs::symlink(&token_dir, volume.join("src")).unwrap();
    let checkout = volume.join("src");
    let everything = patterns(&["**"]);
    if std::fs::metadata(&volume).unwrap().uid() == 0 {
        // As root (CI, and a pod's build step), the local engine's rule follows it.
        let on_a_machine = collect(&checkout, "", &[], &everything, &Limits::default());
        assert!(
            on_a_machine.is_ok(),
            "root's link, followed by the local engine's rule"
        );
    }
    let in_a_pod = collect_in_pod(&checkout, "", &[], &everything, &Limits::default());
    match in_a_pod {
        Err(CollectError::Workspace { source, .. }) => {
            assert!(source.to_string().contains("no link"), "{source}")
        }
        other => panic!("a pod's collector followed root's link: {other:?}"),
    }
}

/// A process of the build exchanges a directory of its workspace with a link to kubeci's
/// files as fast as it can while kubeci collects: a directory read as one must not be
/// entered as the link it has become (kubeci walked by path, so it listed and took
/// kubeci's files under the directory's name), and a link followed to a file inside the
/// workspace must not end outside it.
#[test]
fn a_directory_swapped_for_a_link_while_the_walk_runs_is_never_followed() {
    let ws = Workspace::create();
    let kubeci = ws.outside().join("kubeci");
    std::fs::create_dir(&kubeci).unwrap();
    std::fs::write(kubeci.join("report.xml"), "kubeci's").unwrap();
    for n in 0..50 {
        ws.file(&format!("a{n:02}.xml"), "the build's");
    }
    ws.file("out/report.xml", "the build's")
        .link("swap", &kubeci)
        .link("via.xml", "out/report.xml");
    let root = ws.root();
    let stop = AtomicBool::new(false);
    let swaps = AtomicU64::new(0);
    let leaked = std::thread::scope(|scope| {
        scope.spawn(|| {
            let dir = std::fs::File::open(&root).unwrap();
            while !stop.load(Ordering::Relaxed) {
                nix::fcntl::renameat2(
                    &dir,
                    "out",
                    &dir,
                    "swap",
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
                swaps.fetch_add(1, Ordering::Relaxed);
            }
        });
        let reports = patterns(&["*.xml", "out/*.xml"]);
        let mut leaked = None;
        for _ in 0..1_000 {
            let Ok(collected) = collect(&root, "", &reports, &[], &Limits::default()) else {
                continue;
            };
            for file in &collected.files {
                let mut text = String::new();
                if let Ok(opened) = file.open() {
                    opened.take(64).read_to_string(&mut text).unwrap();
                }
                if text == "kubeci's" || file.full.starts_with(&kubeci) {
                    leaked = Some(file.path.clone());
                }
            }
            if leaked.is_some() {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
        leaked
    });
    assert!(swaps.load(Ordering::Relaxed) > 0, "the swapper ran");
    assert_eq!(leaked, None, "kubeci's file was collected and read");
}
