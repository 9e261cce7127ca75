//! The house rules a reviewer would otherwise count by hand: no Rust file over 600 lines,
//! and no function over 80 lines without a comment above it (or opening its body) saying
//! why it is long.

use crate::common::repo_root;

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

/// The Rust files git tracks.
fn rust_files() -> Vec<std::path::PathBuf> {
    let root = repo_root();
    let out = std::process::Command::new("git")
        .args(["ls-files", "*.rs"])
        .current_dir(&root)
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git ls-files failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|f| root.join(f))
        .collect()
}

/// A line with its string and char literals emptied and its `//` comment cut, so braces
/// inside them do not count.
fn code_of(line: &str) -> String {
    let mut code = String::new();
    let mut chars = line.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if in_string => {
                chars.next();
            }
            '"' => in_string = !in_string,
            '/' if !in_string && chars.peek() == Some(&'/') => break,
            '\'' if !in_string => {
                // A char literal ('{', '\'', '\u{7b}'): skip to its closing quote; a lifetime
                // ('a) has none within a few characters and is kept.
                let rest: String = chars.clone().take(10).collect();
                if let Some(end) = rest.find('\'').filter(|&e| e > 0) {
                    for _ in 0..=end {
                        chars.next();
                    }
                }
            }
            c if !in_string => code.push(c),
            _ => {}
        }
    }
    code
}

/// The name of the function a line declares, if it declares one.
fn declared_fn(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace().peekable();
    while let Some(word) = words.next() {
        match word {
            "fn" => {
                let name = words.next()?;
                let end = name.find(|c: char| !(c.is_alphanumeric() || c == '_'));
                return Some(&name[..end.unwrap_or(name.len())]);
            }
            "pub" | "async" | "const" | "unsafe" | "extern" => {}
            w if w.starts_with("pub(") => {}
            _ => return None,
        }
    }
    None
}

/// Functions longer than [`MAX_FN_LINES`] with no comment saying why: (line, name, length).
fn unexplained_long_fns(text: &str) -> Vec<(usize, String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some(name) = declared_fn(line) else {
            continue;
        };
        let (mut depth, mut opened, mut end) = (0i64, false, None);
        for (at, line) in lines.iter().enumerate().skip(start) {
            let code = code_of(line);
            for c in code.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if !opened && code.trim_end().ends_with(';') {
                break;
            }
            if opened && depth <= 0 {
                end = Some(at);
                break;
            }
        }
        let Some(end) = end else { continue };
        let length = end - start + 1;
        if length <= MAX_FN_LINES {
            continue;
        }
        let above = lines[..start]
            .iter()
            .rev()
            .find(|l| !l.trim_start().starts_with("#["))
            .map(|l| l.trim_start());
        let comment_above = above.is_some_and(|l| l.starts_with("//"));
        let comment_opening = lines[start + 1..(start + 4).min(lines.len())]
            .iter()
            .any(|l| l.trim_start().starts_with("// "));
        if !comment_above && !comment_opening {
            found.push((start + 1, name.to_owned(), length));
        }
    }
    found
}

#[test]
fn no_rust_file_is_over_600_lines() {
    let long: Vec<String> = rust_files()
        .iter()
        .filter_map(|path| {
            let lines = std::fs::read_to_string(path).ok()?.lines().count();
            (lines > MAX_FILE_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these into modules one can name (at most {MAX_FILE_LINES} lines each):\n{}",
        long.join("\n")
    );
}

#[test]
fn every_function_over_80_lines_says_why() {
    let mut long = Vec::new();
    for path in rust_files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for (line, name, length) in unexplained_long_fns(&text) {
            long.push(format!(
                "{}:{line}: {name} ({length} lines)",
                path.display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "split these, or say in a comment above each why it is long:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_counter_sees_long_functions_and_their_comments() {
    let body = "    let x = '{';\n    let s = \"}}\";\n".repeat(41);
    let bare = format!("fn long() {{\n{body}}}\n");
    assert_eq!(
        unexplained_long_fns(&bare),
        [(1, "long".to_owned(), 84)],
        "braces in strings and chars do not end it"
    );
    let explained = format!("// Long on purpose: a table.\n#[test]\n{bare}");
    assert!(unexplained_long_fns(&explained).is_empty());
    let short = "pub async fn short<'a>(x: &'a str) -> &'a str {\n    x\n}\n";
    assert!(unexplained_long_fns(short).is_empty());
}

/// Each crate's `kubeci-*` dependencies and dev-dependencies, as its `Cargo.toml` says.
fn manifest_deps(manifest: &str) -> (String, Vec<String>, Vec<String>) {
    let (mut name, mut deps, mut dev) = (String::new(), Vec::new(), Vec::new());
    let mut section = "";
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[package]" {
            if let Some(value) = line.strip_prefix("name = ") {
                name = value.trim_matches('"').to_owned();
            }
        }
        let Some(dep) = line
            .split(['.', ' ', '='])
            .next()
            .filter(|d| d.starts_with("kubeci-"))
        else {
            continue;
        };
        match section {
            "[dependencies]" => deps.push(dep.to_owned()),
            "[dev-dependencies]" => dev.push(dep.to_owned()),
            _ => {}
        }
    }
    dev.retain(|d| !deps.contains(d));
    deps.sort();
    dev.sort();
    (name, deps, dev)
}

/// The crate table of docs/ARCHITECTURE.md: crate → (dependencies, dev-dependencies).
fn architecture_table(
    text: &str,
) -> std::collections::BTreeMap<String, (Vec<String>, Vec<String>)> {
    let table = text
        .split("```")
        .nth(1)
        .expect("the crate table is the first code block");
    let mut rows = std::collections::BTreeMap::new();
    let mut current: Option<String> = None;
    for line in table.lines() {
        let (head, rest) = match line.split_once("─▶") {
            Some((head, rest)) => (Some(head.trim()), rest),
            None => (None, line),
        };
        if let Some(head) = head {
            let name = head
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            rows.insert(name.clone(), (Vec::new(), Vec::new()));
            current = Some(name);
        }
        let Some(name) = current.as_ref() else {
            continue;
        };
        // The dependency column ends where two spaces open the I/O column.
        let column = rest.trim_start();
        let column = column.split("  ").next().unwrap_or_default();
        let (dev, column) = match column.strip_prefix("dev:") {
            Some(column) => (true, column),
            None => (false, column),
        };
        let entry = rows.get_mut(name).expect("a row");
        for dep in column
            .split(',')
            .map(str::trim)
            .filter(|d| d.starts_with("kubeci-"))
        {
            let list = if dev { &mut entry.1 } else { &mut entry.0 };
            list.push(dep.to_owned());
        }
    }
    for (deps, dev) in rows.values_mut() {
        deps.sort();
        dev.sort();
    }
    rows
}

#[test]
fn the_architecture_table_is_the_crate_graph() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let table = architecture_table(&text);
    let mut manifests: Vec<_> = std::fs::read_dir(root.join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("Cargo.toml"))
        .collect();
    manifests.push(root.join("fuzz/Cargo.toml"));
    let mut wrong = Vec::new();
    for manifest in manifests {
        let (name, deps, dev) = manifest_deps(&std::fs::read_to_string(&manifest).unwrap());
        match table.get(&name) {
            None => wrong.push(format!("{name} is not in the table")),
            Some((listed, listed_dev)) if (listed, listed_dev) != (&deps, &dev) => wrong.push(format!(
                "{name}: Cargo.toml has {deps:?}, dev {dev:?}; the table says {listed:?}, dev {listed_dev:?}"
            )),
            Some(_) => {}
        }
    }
    assert!(
        wrong.is_empty(),
        "docs/ARCHITECTURE.md is not the crate graph:\n{}",
        wrong.join("\n")
    );
    assert!(
        table.len() >= 17,
        "every crate has a row: {:?}",
        table.keys()
    );
}
