//! What a build left, on its page (issue 30): its "Tests" section ([`super::results`]) and
//! its files — each with its size and a download link to the API's artifact URL (an
//! attachment, never shown inline) — and the declared files not kept, with why. Bounded
//! like the Tests section: at most [`SHOWN_ARTIFACTS`] files and [`SHOWN_REFUSED`] refusals,
//! names cut by their escaped length.

use kubeci_engine::api::BuildTests;
use kubeci_results::BuildOutputs;
use maud::{html, Markup, Render};

use super::parts::{cut_escaped, human_bytes, thousands, urlencode};
use super::results::{tests_section, BuildAt};

/// How many of a build's files its page lists (every one is in the API's list).
pub const SHOWN_ARTIFACTS: usize = 50;
/// How many declared files not kept its page names.
pub const SHOWN_REFUSED: usize = 20;

const PATH_BYTES: usize = 200;
const WHY_BYTES: usize = 300;

/// What a build left, as read for its page: nothing while it runs.
#[derive(Debug, Default)]
pub struct Left {
    pub tests: Option<BuildTests>,
    pub outputs: Option<BuildOutputs>,
    /// Why what it left cannot be read now (its archive cannot be read).
    pub unreadable: Option<String>,
}

/// A path as the page shows it: cut by its escaped length, with `…`.
fn shown_path(path: &str) -> Markup {
    let (kept, cut) = cut_escaped(path, PATH_BYTES);
    html! { code { (kept) @if cut { "…" } } }
}

/// The API's URL of one of the build's files: each segment of its path encoded.
fn download(at: BuildAt<'_>, path: &str) -> String {
    let segments: Vec<String> = path.split('/').map(urlencode).collect();
    format!("{}/artifacts/{}", at.api(), segments.join("/"))
}

/// The build's files and the declared files not kept; nothing when it has neither.
fn artifacts_section(at: BuildAt<'_>, outputs: &BuildOutputs) -> Markup {
    let (files, refused) = (&outputs.artifacts, &outputs.refused);
    if files.is_empty() && refused.is_empty() {
        return html! {};
    }
    let list = format!("{}/artifacts", at.api());
    html! {
        section id="artifacts" aria-labelledby="artifacts-title" {
            h2 id="artifacts-title" { "Artifacts" }
            @if files.is_empty() {
                p class="note" { "No file was kept." }
            } @else {
                @if files.len() > SHOWN_ARTIFACTS {
                    p class="note" {
                        "Showing the first " (SHOWN_ARTIFACTS) " of " (thousands(files.len() as u64))
                        " files; every one is in " a href=(list) { "the build's files (JSON)" } "."
                    }
                }
                div class="scroll" tabindex="0" role="region" aria-label="Artifacts" {
                    table {
                        thead { tr { th scope="col" { "File" } th scope="col" { "Size" } } }
                        tbody {
                            @for file in files.iter().take(SHOWN_ARTIFACTS) {
                                tr {
                                    td { a href=(download(at, &file.path)) { (shown_path(&file.path)) } }
                                    td { (human_bytes(file.size)) }
                                }
                            }
                        }
                    }
                }
            }
            @if !refused.is_empty() {
                h3 id="artifacts-refused" { "Declared but not kept (" (thousands(refused.len() as u64)) ")" }
                ul {
                    @for file in refused.iter().take(SHOWN_REFUSED) {
                        li {
                            (shown_path(&file.path)) ": "
                            @let (why, cut) = cut_escaped(&file.why, WHY_BYTES);
                            (why) @if cut { "…" }
                        }
                    }
                }
                @if refused.len() > SHOWN_REFUSED {
                    p class="note" { "And " (refused.len() - SHOWN_REFUSED) " more, in " a href=(list) { "the build's files (JSON)" } "." }
                }
            }
        }
    }
}

/// A build's Tests and Artifacts sections rendered ([`left_html`]): kept by the server
/// for a build whose outputs cannot change any more, put in its page as they are. Made
/// only by [`left_html`], so it holds only what the templates escaped.
#[derive(Debug, Default)]
pub struct LeftHtml(String);

impl LeftHtml {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Render for LeftHtml {
    fn render_to(&self, buffer: &mut String) {
        buffer.push_str(&self.0);
    }
}

/// What build `at` left, rendered for its page.
pub fn left_html(at: BuildAt<'_>, left: &Left) -> LeftHtml {
    LeftHtml(left_sections(at, left).into_string())
}

/// The build's Tests and Artifacts sections, or why they cannot be read now.
pub(crate) fn left_sections(at: BuildAt<'_>, left: &Left) -> Markup {
    html! {
        @if let Some(why) = &left.unreadable {
            p class="warning" id="outputs-error" {
                "What this build left (its test results and files) cannot be read now: " (why)
            }
        }
        @if let Some(tests) = &left.tests { (tests_section(at, tests)) }
        @if let Some(outputs) = &left.outputs { (artifacts_section(at, outputs)) }
    }
}

#[cfg(test)]
mod tests {
    use kubeci_results::{ArtifactFile, RefusedFile};

    use super::*;

    const AT: BuildAt<'static> = BuildAt {
        namespace: "ci",
        job: "api",
        number: 7,
    };

    #[test]
    fn files_link_to_their_download_and_refused_ones_say_why() {
        let outputs = BuildOutputs {
            artifacts: vec![
                ArtifactFile {
                    path: "dist/app v1.tar.gz".into(),
                    size: 1_234_567,
                },
                ArtifactFile {
                    path: "coverage/index.html".into(),
                    size: 812,
                },
            ],
            refused: vec![RefusedFile {
                path: "dist/link".into(),
                why: "it is a link out of the workspace".into(),
            }],
            ..BuildOutputs::new()
        };
        let html = artifacts_section(AT, &outputs).into_string();
        assert!(
            html.contains("<a href=\"/api/v1/jobs/ci/api/builds/7/artifacts/dist/app%20v1.tar.gz\"><code>dist/app v1.tar.gz</code></a></td><td>1.2 MB</td>"),
            "{html}"
        );
        assert!(html.contains("<td>812 bytes</td>"), "{html}");
        assert!(
            html.contains("<li><code>dist/link</code>: it is a link out of the workspace</li>"),
            "{html}"
        );
        assert_eq!(
            artifacts_section(AT, &BuildOutputs::new()).into_string(),
            "",
            "no section for a build that left no file"
        );
    }

    #[test]
    fn what_cannot_be_read_is_said_and_the_rest_still_shown() {
        let left = Left {
            outputs: Some(BuildOutputs {
                artifacts: vec![ArtifactFile {
                    path: "a.txt".into(),
                    size: 1,
                }],
                ..BuildOutputs::new()
            }),
            unreadable: Some("tests.json in the archive is not JSON".into()),
            ..Left::default()
        };
        let html = left_sections(AT, &left).into_string();
        assert!(html.contains("<p class=\"warning\" id=\"outputs-error\">What this build left (its test results and files) cannot be read now: tests.json in the archive is not JSON</p>"), "{html}");
        assert!(html.contains("<code>a.txt</code>"), "{html}");
        assert!(!html.contains("id=\"tests\""), "{html}");
    }

    #[test]
    fn a_build_with_many_files_lists_a_bounded_number_and_says_so() {
        let outputs = BuildOutputs {
            artifacts: (0..10_000)
                .map(|n| ArtifactFile {
                    path: format!("{}/{n}", "\"".repeat(1000)),
                    size: n,
                })
                .collect(),
            refused: (0..1_000)
                .map(|n| RefusedFile {
                    path: format!("r{n}"),
                    why: "<".repeat(10_000),
                })
                .collect(),
            ..BuildOutputs::new()
        };
        let html = artifacts_section(AT, &outputs).into_string();
        assert_eq!(html.matches("<tr><td>").count(), SHOWN_ARTIFACTS);
        assert!(
            html.contains("Showing the first 50 of 10,000 files"),
            "{html}"
        );
        assert!(html.contains("And 980 more"), "{html}");
        assert!(html.len() < 250 * 1024, "{} bytes", html.len());
    }
}
