//! Only regular files are collected, under names kubeci can show and store.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use crate::{paths, refused, refused_for, Workspace};

/// A FIFO matched by a pattern is refused without being opened: opening it to read would
/// wait for a writer forever, so this test would hang.
#[test]
fn fifos_and_sockets_are_refused_and_never_opened() {
    let ws = Workspace::create();
    ws.file("reports/real.xml", "<testsuite/>");
    let fifo = ws.root().join("reports/fifo.xml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let _socket =
        std::os::unix::net::UnixListener::bind(ws.root().join("reports/socket.xml")).unwrap();
    ws.link("reports/to-fifo.xml", "fifo.xml");
    let collected = ws.collect("", &["reports/*.xml"], &["reports/"]);
    assert_eq!(paths(&collected), ["reports/real.xml"]);
    assert!(refused_for(
        &collected,
        "reports/fifo.xml",
        "it is a FIFO (named pipe): only regular files are collected"
    ));
    assert!(refused_for(
        &collected,
        "reports/socket.xml",
        "it is a socket: only regular files are collected"
    ));
    assert!(refused_for(
        &collected,
        "reports/to-fifo.xml",
        "it is a symbolic link to a FIFO (named pipe)"
    ));
    assert_eq!(collected.refused.len(), 3, "{:?}", refused(&collected));
}

/// A device node (made where the tests may: `mknod` needs privileges) is refused like a
/// FIFO; a link to one outside the workspace leads out of it.
#[test]
fn devices_are_refused() {
    let ws = Workspace::create();
    ws.link("null.xml", "/dev/null");
    let made = std::process::Command::new("mknod")
        .arg(ws.root().join("zero.xml"))
        .args(["c", "1", "5"])
        .status()
        .is_ok_and(|s| s.success());
    let collected = ws.collect("", &["*.xml"], &[]);
    assert!(collected.files.is_empty(), "{:?}", paths(&collected));
    assert!(refused_for(
        &collected,
        "null.xml",
        "leading out of the workspace"
    ));
    if made {
        assert!(refused_for(
            &collected,
            "zero.xml",
            "it is a character device: only regular files are collected"
        ));
    } else {
        eprintln!("mknod is not permitted here: the device node itself is not tried");
    }
}

#[test]
fn names_not_utf8_or_with_control_characters_are_refused_with_them_escaped() {
    let ws = Workspace::create();
    ws.file("reports/ok.xml", "<testsuite/>")
        .file("reports/bell\u{7}.xml", "x")
        .file("reports/esc\u{1b}[31m.xml", "x")
        .file("reports/new\nline.xml", "x");
    let latin1 = ws
        .root()
        .join("reports")
        .join(OsStr::from_bytes(b"caf\xe9.xml"));
    std::fs::write(latin1, "x").unwrap();
    std::fs::create_dir_all(ws.root().join(OsStr::from_bytes(b"dir\xff/sub"))).unwrap();
    let collected = ws.collect("", &["reports/*.xml"], &["dir\u{fffd}/"]);
    assert_eq!(paths(&collected), ["reports/ok.xml"]);
    assert_eq!(
        refused(&collected),
        [
            (
                "dir\u{fffd}",
                "its name is not UTF-8: paths are kept as text"
            ),
            (
                "reports/bell\\u{7}.xml",
                "its name holds the control character U+0007: paths are kept as text"
            ),
            (
                "reports/caf\u{fffd}.xml",
                "its name is not UTF-8: paths are kept as text"
            ),
            (
                "reports/esc\\u{1b}[31m.xml",
                "its name holds the control character U+001B: paths are kept as text"
            ),
            (
                "reports/new\\u{a}line.xml",
                "its name holds the control character U+000A: paths are kept as text"
            ),
        ]
    );
}
