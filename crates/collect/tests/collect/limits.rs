//! The limits: a file past one is refused with which limit and its value, and collecting
//! goes on with the rest, in order of path, so the same workspace gives the same answer.

use kubeci_collect::{
    Limits, MAX_ARTIFACT_BYTES, MAX_DEPTH, MAX_ENTRIES_WALKED, MAX_FILES, MAX_FILE_BYTES,
    MAX_REFUSED, MAX_REPORT_BYTES,
};

use crate::{paths, refused, refused_for, Workspace};

const MIB: u64 = 1 << 20;

#[test]
fn the_defaults_are_the_documented_ones() {
    assert_eq!(
        Limits::default(),
        Limits {
            artifact_bytes: 1 << 30,
            report_bytes: 256 * MIB,
            file_bytes: 512 * MIB,
            files: 10_000,
            entries_walked: 100_000,
        }
    );
    assert_eq!(
        (
            MAX_ARTIFACT_BYTES,
            MAX_REPORT_BYTES,
            MAX_FILE_BYTES,
            MAX_FILES,
            MAX_ENTRIES_WALKED
        ),
        (1 << 30, 256 * MIB, 512 * MIB, 10_000, 100_000)
    );
}

/// Sparse files: their sizes count, their bytes take no room.
#[test]
fn a_50_mb_junit_file_fits_and_a_file_over_512_mib_does_not() {
    let ws = Workspace::create();
    ws.sized("junit.xml", 50_000_000)
        .sized("dist/huge.tar.gz", 600 * MIB)
        .sized("dist/small.tar.gz", 10);
    let collected = ws.collect("", &["junit.xml"], &["dist/*"]);
    assert_eq!(paths(&collected), ["dist/small.tar.gz", "junit.xml"]);
    assert_eq!(collected.files[1].size, 50_000_000);
    assert_eq!(
        refused(&collected),
        [(
            "dist/huge.tar.gz",
            "it is 600 MiB, over the limit of one file (512 MiB)"
        )]
    );
}

#[test]
fn totals_per_kind_take_files_in_order_of_path_while_they_fit() {
    let ws = Workspace::create();
    ws.sized("r/a.xml", 100 * MIB)
        .sized("r/b.xml", 100 * MIB)
        .sized("r/c.xml", 100 * MIB)
        .sized("r/d.xml", 50 * MIB)
        .sized("a/1.bin", 400 * MIB)
        .sized("a/2.bin", 400 * MIB)
        .sized("a/3.bin", 400 * MIB)
        .sized("a/4.bin", 100 * MIB);
    let collected = ws.collect("", &["r/*.xml"], &["a/*"]);
    assert_eq!(
        paths(&collected),
        ["a/1.bin", "a/2.bin", "a/4.bin", "r/a.xml", "r/b.xml", "r/d.xml"],
        "a smaller file after one refused still fits"
    );
    assert_eq!(
        refused(&collected),
        [
            (
                "a/3.bin",
                "with its 400 MiB, the build's artifacts would pass their limit of 1 GiB in all"
            ),
            (
                "r/c.xml",
                "with its 100 MiB, the build's test reports would pass their limit of 256 MiB in all"
            ),
        ]
    );
    assert_eq!(
        collected,
        ws.collect("", &["r/*.xml"], &["a/*"]),
        "the same again"
    );
}

#[test]
fn a_file_of_both_kinds_must_fit_both_totals() {
    let ws = Workspace::create();
    ws.sized("big.xml", 300 * MIB).sized("small.xml", MIB);
    let collected = ws.collect("", &["*.xml"], &["*.xml"]);
    assert_eq!(paths(&collected), ["small.xml"]);
    assert!(refused_for(
        &collected,
        "big.xml",
        "test reports would pass their limit"
    ));
}

#[test]
fn files_past_the_count_are_refused_in_order_of_path() {
    let ws = Workspace::create();
    for i in 0..12 {
        ws.file(&format!("out/{i:02}.txt"), "x");
    }
    let limits = Limits {
        files: 10,
        ..Limits::default()
    };
    let collected = ws.collect_within("", &[], &["out/"], &limits);
    assert_eq!(collected.files.len(), 10);
    assert_eq!(collected.files[9].path, "out/09.txt");
    assert_eq!(
        refused(&collected),
        [
            (
                "out/10.txt",
                "a build keeps at most 10 files (the limit of files per build)"
            ),
            (
                "out/11.txt",
                "a build keeps at most 10 files (the limit of files per build)"
            ),
        ]
    );
}

/// A walk reading more entries than its limit stops where it is and says so; what it
/// found before is kept, and where it stops does not depend on the file system's order.
#[test]
fn the_walk_stops_at_its_limit_of_entries_and_says_where() {
    let ws = Workspace::create();
    ws.file("a/junit.xml", "x").file("b/junit.xml", "x");
    for i in 0..50 {
        ws.file(&format!("c/{i:02}.txt"), "x");
    }
    ws.file("d/junit.xml", "x");
    let limits = Limits {
        entries_walked: 20,
        ..Limits::default()
    };
    let collected = ws.collect_within("", &["**/junit.xml"], &[], &limits);
    assert_eq!(paths(&collected), ["a/junit.xml", "b/junit.xml"]);
    assert_eq!(
        refused(&collected),
        [(
            "c",
            "the walk stopped in this directory after reading 20 directory entries (the limit of entries walked): files here and further on were not looked at"
        )]
    );
    assert_eq!(
        collected,
        ws.collect_within("", &["**/junit.xml"], &[], &limits)
    );
    let exactly = Limits {
        entries_walked: 4 + 2 + 50 + 1,
        ..Limits::default()
    };
    let all = ws.collect_within("", &["**/junit.xml"], &[], &exactly);
    assert_eq!(all.files.len(), 3, "{:?}", refused(&all));
    assert!(all.refused.is_empty());
}

/// The walk holds a directory's descriptor open for each directory above the one it reads:
/// a tree deeper than [`MAX_DEPTH`] is not entered past it (thousands of nested
/// directories would otherwise hold thousands of kubeci's descriptors).
#[test]
fn directories_deeper_than_the_limit_are_not_walked() {
    let ws = Workspace::create();
    let deep = vec!["d"; MAX_DEPTH + 2].join("/");
    ws.file(&format!("{deep}/junit.xml"), "x")
        .file("d/junit.xml", "x");
    let collected = ws.collect("", &["**/junit.xml"], &[]);
    assert_eq!(paths(&collected), ["d/junit.xml"]);
    let past_it = vec!["d"; MAX_DEPTH + 1].join("/");
    assert_eq!(
        refused(&collected),
        [(
            past_it.as_str(),
            "it is more than 128 directories under the workdir: it is not walked"
        )]
    );
}

/// The archive keeps a file's path up to 1,024 bytes: a longer one is refused with why when
/// it is collected (it was taken, then failed in the archive), and a directory whose path
/// is already that long is not walked — so what a walk holds in memory per file is bounded.
#[test]
fn paths_longer_than_the_archive_keeps_are_refused() {
    let ws = Workspace::create();
    let long = vec!["d".repeat(250); 4].join("/");
    let name = format!("{}.xml", "j".repeat(20));
    ws.file(&format!("{long}/{name}"), "x")
        .file(&format!("{long}/{}/junit.xml", "e".repeat(250)), "x")
        .file("d/junit.xml", "x");
    let collected = ws.collect("", &["**/*.xml"], &[]);
    assert_eq!(paths(&collected), ["d/junit.xml"]);
    let too_long = "its path is longer than 1024 bytes, the most the archive keeps";
    assert!(
        refused_for(&collected, &format!("{long}/{name}"), too_long),
        "{:?}",
        refused(&collected)
    );
    assert!(refused_for(
        &collected,
        &format!("{long}/{}", "e".repeat(250)),
        too_long
    ));
    assert_eq!(collected.refused.len(), 2, "{:?}", refused(&collected));
}

/// A build may make any number of files a pattern matches and kubeci refuses (links out of
/// the workspace, say): the first ones are listed with why, then how many more there were,
/// so the list (kept in the archive's `outputs.json`, served by the API) stays small.
#[test]
fn refused_files_are_listed_up_to_a_bound_then_counted() {
    let ws = Workspace::create();
    for i in 0..MAX_REFUSED + 200 {
        ws.link(&format!("out/{i:05}.xml"), "/etc/passwd");
    }
    let collected = ws.collect("", &["out/*.xml"], &[]);
    assert!(collected.files.is_empty());
    assert_eq!(collected.refused.len(), MAX_REFUSED + 1);
    assert_eq!(collected.refused[0].path, "out/00000.xml");
    assert_eq!(
        refused(&collected).last().copied(),
        Some((
            ".",
            "and 200 more files were refused: a build lists the first 1000"
        ))
    );
}
