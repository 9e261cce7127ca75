//! Opening a collected file checks it again: the same regular file, the same size, and
//! never through a link put in its place since.

use std::io::Read;

use crate::Workspace;

fn read(file: std::fs::File) -> String {
    let mut text = String::new();
    file.take(1 << 20).read_to_string(&mut text).unwrap();
    text
}

#[test]
fn an_unchanged_file_opens_and_reads_what_was_collected() {
    let ws = Workspace::create();
    ws.file("junit.xml", "<testsuite/>")
        .link("linked.xml", "junit.xml");
    let collected = ws.collect("", &["*.xml"], &[]);
    assert_eq!(collected.files.len(), 2);
    for file in &collected.files {
        assert_eq!(read(file.open().unwrap()), "<testsuite/>", "{}", file.path);
    }
}

#[test]
fn a_file_replaced_since_it_was_collected_does_not_open() {
    let ws = Workspace::create();
    ws.file("replaced.xml", "first")
        .file("linked.xml", "first")
        .file("grown.xml", "first")
        .file("fifo.xml", "first");
    let collected = ws.collect("", &["*.xml"], &[]);
    let file = |path: &str| collected.files.iter().find(|f| f.path == path).unwrap();
    let root = ws.root();

    // Another file of the same size, made while the first still exists (so it has its
    // own inode), put in its place.
    std::fs::write(root.join("other"), "other").unwrap();
    std::fs::rename(root.join("other"), root.join("replaced.xml")).unwrap();
    let err = file("replaced.xml").open().unwrap_err();
    assert!(
        err.to_string().contains("was replaced by another file"),
        "{err}"
    );

    std::fs::remove_file(root.join("linked.xml")).unwrap();
    std::os::unix::fs::symlink(ws.outside().join("secret"), root.join("linked.xml")).unwrap();
    let err = file("linked.xml").open().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "O_NOFOLLOW: {err}");

    std::fs::write(root.join("grown.xml"), "first, and more").unwrap();
    let err = file("grown.xml").open().unwrap_err();
    assert!(err.to_string().contains("went from 5 to 15 bytes"), "{err}");

    // A FIFO in its place opens at once (O_NONBLOCK) and is refused: no hang.
    std::fs::remove_file(root.join("fifo.xml")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(root.join("fifo.xml"))
        .status()
        .unwrap();
    assert!(made.success());
    let err = file("fifo.xml").open().unwrap_err();
    assert!(
        err.to_string().contains("is no longer a regular file"),
        "{err}"
    );
}

/// The engines read collected files on other threads (the local engine's blocking pool),
/// each holding the workspace open.
#[test]
fn collected_files_may_be_read_on_other_threads() {
    fn sendable<T: Send + Sync + 'static>(_: &T) {}
    let ws = Workspace::create();
    ws.file("junit.xml", "<testsuite/>");
    let collected = ws.collect("", &["*.xml"], &[]);
    sendable(&collected);
    let file = collected.files[0].clone();
    drop(collected);
    let read = std::thread::spawn(move || read(file.open().unwrap()));
    assert_eq!(read.join().unwrap(), "<testsuite/>");
}
