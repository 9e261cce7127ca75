//! Symbolic links: followed only to a regular file inside the workspace, collected under
//! the link's name; refused with why when they lead out, to nothing, in a loop, or to a
//! directory (never entered, so no walk loops).

use crate::{paths, refused, refused_for, Workspace};

const OUT: &str = "it is a symbolic link leading out of the workspace";

#[test]
fn a_link_to_a_file_inside_the_workspace_is_collected_under_its_own_name() {
    let ws = Workspace::create();
    ws.file("app/build/report.xml", "<testsuite/>")
        .file("README.md", "outside the workdir, inside the checkout")
        .link("app/junit.xml", "build/report.xml")
        .link("app/readme.txt", "../README.md")
        .link("app/chain.xml", "junit.xml");
    let collected = ws.collect("app", &["*.xml", "*.txt"], &[]);
    assert_eq!(paths(&collected), ["chain.xml", "junit.xml", "readme.txt"]);
    let real = ws.root().canonicalize().unwrap();
    assert_eq!(collected.files[1].full, real.join("app/build/report.xml"));
    assert_eq!(collected.files[1].size, 12);
    assert_eq!(collected.files[0].full, real.join("app/build/report.xml"));
    assert_eq!(collected.files[2].full, real.join("README.md"));
}

#[test]
fn links_leading_out_of_the_workspace_are_refused() {
    let ws = Workspace::create();
    let secret = ws.outside().join("secret");
    ws.link("passwd.xml", "/etc/passwd")
        .link("secret.xml", "../secret")
        .link("deep/secret.xml", "../../secret")
        .link("absolute.xml", &secret)
        .link("hop1.xml", "hop2.xml")
        .link("hop2.xml", "hop3.xml")
        .link("hop3.xml", &secret)
        .link("proc.xml", "/proc/self/environ");
    let collected = ws.collect("", &["**/*.xml"], &[]);
    assert!(collected.files.is_empty(), "{:?}", paths(&collected));
    for path in [
        "absolute.xml",
        "deep/secret.xml",
        "hop1.xml",
        "hop2.xml",
        "hop3.xml",
        "passwd.xml",
        "proc.xml",
        "secret.xml",
    ] {
        assert!(
            refused_for(&collected, path, OUT),
            "{path}: {:?}",
            refused(&collected)
        );
    }
    assert_eq!(collected.refused.len(), 8);
}

#[test]
fn a_workdir_that_is_a_link_out_of_the_workspace_collects_nothing() {
    let ws = Workspace::create();
    std::fs::create_dir(ws.outside().join("elsewhere")).unwrap();
    std::fs::write(ws.outside().join("elsewhere/junit.xml"), "x").unwrap();
    ws.link("app", ws.outside().join("elsewhere"));
    let collected = ws.collect("app", &["*.xml"], &[]);
    assert!(collected.files.is_empty());
    assert_eq!(
        refused(&collected),
        [(
            ".",
            "the workdir `app` leads out of the workspace through a symbolic link: nothing is collected"
        )]
    );
}

#[test]
fn dangling_and_looping_links_are_refused() {
    let ws = Workspace::create();
    ws.link("gone.xml", "nothing-here.xml")
        .link("a.xml", "b.xml")
        .link("b.xml", "a.xml")
        .link("self.xml", "self.xml");
    let collected = ws.collect("", &["*.xml"], &[]);
    assert!(collected.files.is_empty());
    assert!(refused_for(
        &collected,
        "gone.xml",
        "a symbolic link to nothing"
    ));
    for path in ["a.xml", "b.xml", "self.xml"] {
        assert!(
            refused_for(&collected, path, "a symbolic link in a loop"),
            "{path}: {:?}",
            refused(&collected)
        );
    }
}

/// A link to a directory is never entered, even inside the workspace, even pointing at
/// its own parent: the walk ends, and the user is told where a pattern named it.
#[test]
fn links_to_directories_are_not_entered_and_named_ones_are_refused() {
    let ws = Workspace::create();
    ws.file("build/coverage/index.html", "<html>")
        .file("reports/junit.xml", "<testsuite/>")
        .link("coverage", "build/coverage")
        .link("reports/again", ".")
        .link("reports/up", "..")
        .link("node_modules/react", "../build");
    let collected = ws.collect("", &["**/*.xml"], &["coverage/"]);
    assert_eq!(paths(&collected), ["reports/junit.xml"]);
    const DIR: &str = "it is a symbolic link to a directory";
    assert_eq!(refused(&collected).len(), 1, "{:?}", refused(&collected));
    assert!(refused_for(&collected, "coverage", DIR));
    // `**` passes through `reports/again` and `node_modules/react` without naming them:
    // not entered, and not reported either (a pnpm tree has thousands).
    let named = ws.collect("", &["reports/*/junit.xml"], &["**"]);
    assert!(
        refused_for(&named, "reports/again", DIR),
        "{:?}",
        refused(&named)
    );
    assert!(refused_for(&named, "reports/up", DIR));
    assert!(
        refused_for(&named, "coverage", DIR),
        "`**` takes everything"
    );
}
