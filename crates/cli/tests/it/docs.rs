//! The documentation's links: every relative link in the README and docs/ names a file of
//! the repository, and every `#anchor` into a Markdown file names one of its headings.

use crate::common;

use std::path::{Path, PathBuf};

use common::repo_root;

fn markdown_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = vec![
        root.join("README.md"),
        root.join("BENCHMARKS.md"),
        root.join("examples/seed/README.md"),
    ];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The targets of `[text](target)` links, outside code blocks and code spans.
fn links(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut in_code_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code_block = !in_code_block;
            continue;
        }
        if in_code_block {
            continue;
        }
        let without_spans: String = line.split('`').step_by(2).collect::<Vec<_>>().join("");
        let mut rest = without_spans.as_str();
        while let Some(start) = rest.find("](") {
            let after = &rest[start + 2..];
            let Some(end) = after.find(')') else { break };
            found.push(after[..end].to_owned());
            rest = &after[end..];
        }
    }
    found
}

/// GitHub's anchor of a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &Path) -> Vec<String> {
    std::fs::read_to_string(markdown)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let root = repo_root();
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match link.split_once('#') {
                Some((path, anchor)) => (path, Some(anchor)),
                None => (link.as_str(), None),
            };
            let target = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            let Ok(target) = target.canonicalize() else {
                broken.push(format!("{}: {link} (no such file)", file.display()));
                continue;
            };
            if !target.starts_with(&root) {
                // The shared design documents live beside the repository.
                continue;
            }
            if let Some(anchor) = anchor {
                if target.extension().is_some_and(|e| e == "md")
                    && !anchors(&target).iter().any(|a| a == anchor)
                {
                    broken.push(format!("{}: {link} (no such heading)", file.display()));
                }
            }
            checked += 1;
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(checked > 20, "links were found and checked ({checked})");
}

#[test]
fn the_link_checker_finds_broken_links() {
    assert_eq!(
        links("see [a](docs/x.md#y) and `[b](not-a-link)`\n```\n[c](code)\n```\n[d](e.md)"),
        ["docs/x.md#y", "e.md"]
    );
    assert_eq!(slug(" Link the log store"), "link-the-log-store");
    assert_eq!(slug("Set it up (GitHub)"), "set-it-up-github");
}
