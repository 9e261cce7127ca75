//! Where in the repository a test case's file is: test tools write a file relative to where
//! they ran (the job's `workdir` inside the checkout) or as an absolute path inside the
//! checkout (`/workspace/src/…` in a build pod, the build's own directory on the local
//! engine). A GitHub annotation, a link to the file, needs its path from the repository's
//! root; a file that leaves the repository (`..` past its root) or lies outside it has none.

/// The path of `file` from the repository's root, if it names a file inside it.
///
/// - `workdir`: the directory, inside the checkout, the tools ran in (`""` for the
///   checkout itself); `None` when it is not known (a relative `file` then has no path).
/// - `checkouts`: where the checkout lay as the tools saw it (absolute; `/workspace/src`).
///
/// A relative `file` is taken from `workdir`, an absolute one must lie under one of
/// `checkouts`; `.` and `..` are resolved and the result must stay inside the checkout.
/// A `file://` URL is read as its path.
pub fn repository_path(file: &str, workdir: Option<&str>, checkouts: &[&str]) -> Option<String> {
    let file = file.trim();
    let file = file.strip_prefix("file://").unwrap_or(file);
    if file.is_empty() || file.chars().any(char::is_control) {
        return None;
    }
    let path = if file.starts_with('/') {
        let file = normalized(file)?;
        checkouts.iter().find_map(|checkout| {
            let checkout = normalized(checkout.trim())?;
            let rest = file.strip_prefix(&checkout)?;
            // Under it, not beside it (`/workspace/src2`), and not the checkout itself.
            rest.strip_prefix('/')
                .filter(|rest| !rest.is_empty())
                .map(str::to_owned)
        })?
    } else {
        let workdir = workdir?;
        if workdir.starts_with('/') {
            return None;
        }
        let workdir = workdir.trim_end_matches('/');
        if workdir.is_empty() {
            normalized(file)?
        } else {
            normalized(&format!("{workdir}/{file}"))?
        }
    };
    (!path.is_empty()).then_some(path)
}

/// `path` with `.` and empty segments dropped and `..` resolved, keeping a leading `/`;
/// `None` when a `..` goes above its start.
fn normalized(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    let joined = parts.join("/");
    Some(if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &[&str] = &["/workspace/src"];

    #[test]
    fn a_relative_file_is_taken_from_the_workdir() {
        let path = |file, workdir| repository_path(file, workdir, POD);
        assert_eq!(
            path("tests/test_a.py", Some("")).as_deref(),
            Some("tests/test_a.py")
        );
        assert_eq!(
            path("tests/test_a.py", Some("backend")).as_deref(),
            Some("backend/tests/test_a.py")
        );
        assert_eq!(
            path("./pkg/../lib/x_test.go", Some("services/api/")).as_deref(),
            Some("services/api/lib/x_test.go")
        );
        assert_eq!(
            path("../common/util.py", Some("backend")).as_deref(),
            Some("common/util.py"),
            "up from the workdir, still inside the repository"
        );
        assert_eq!(path("x.py", None), None, "the workdir is not known");
    }

    #[test]
    fn an_absolute_file_inside_a_checkout_is_stripped_of_it() {
        let local = "/var/lib/kubeci/work/team/app/7/volumes/workspace/src";
        let roots = ["/workspace/src", local];
        let path = |file: &str| repository_path(file, Some("backend"), &roots);
        assert_eq!(
            path("/workspace/src/backend/tests/test_a.py").as_deref(),
            Some("backend/tests/test_a.py")
        );
        assert_eq!(
            path(&format!("{local}/src/lib.rs")).as_deref(),
            Some("src/lib.rs")
        );
        assert_eq!(
            path("file:///workspace/src/./a/../b.rs").as_deref(),
            Some("b.rs")
        );
        assert_eq!(
            repository_path("/workspace/src/a.rs", None, &["/workspace/src/"]).as_deref(),
            Some("a.rs"),
            "an absolute file needs no workdir"
        );
    }

    #[test]
    fn a_file_outside_the_repository_has_no_path() {
        let path = |file: &str, workdir| repository_path(file, workdir, POD);
        assert_eq!(path("../../etc/passwd", Some("backend")), None, "escapes");
        assert_eq!(path("../x.py", Some("")), None, "escapes from the root");
        assert_eq!(path("/usr/lib/python3/unittest/case.py", Some("")), None);
        assert_eq!(path("/workspace/src2/a.py", Some("")), None, "beside it");
        assert_eq!(
            path("/workspace/src", Some("")),
            None,
            "the checkout itself"
        );
        assert_eq!(
            path("/workspace/src/../.kubeci/commit", Some("")),
            None,
            "out of the checkout through `..`"
        );
        assert_eq!(path(".", Some("")), None);
        assert_eq!(path("", Some("")), None);
        assert_eq!(path("a\nb.py", Some("")), None);
        assert_eq!(path("x.py", Some("/abs")), None, "a workdir is relative");
        assert_eq!(repository_path("/workspace/src/a.py", Some(""), &[]), None);
    }
}
