//! `kubeci tests` and `kubeci artifacts` (issue 30): what a build left — its test results
//! (the counts, then the failures with their messages), a test's history, the build's
//! files listed, and one of them downloaded to a file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use hyper::Method;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

use super::{json, print_json, refused, runtime, table, text, Client, ServerArgs};

#[derive(Debug, clap::Args)]
pub struct TestsArgs {
    /// The job (in `-n NS`).
    job: String,
    /// The build; with `--history` and no BUILD, the job's whole history.
    build: Option<u64>,
    /// A test's history over the job's archived builds (up to BUILD) instead: whether
    /// they show it flaky, and its status in each. TEST_ID is `CLASSNAME::NAME`, as the
    /// build's tests name it.
    #[arg(long, value_name = "TEST_ID")]
    history: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ArtifactsArgs {
    /// The job (in `-n NS`).
    job: String,
    /// The build's number.
    build: u64,
    /// Download this file of the build (its path as listed) instead of listing them.
    #[arg(long, value_name = "PATH")]
    download: Option<String>,
    /// Where to write it, `-` for standard output [default: the file's own name (the last
    /// segment of PATH) in the current directory].
    #[arg(long, value_name = "FILE", requires = "download")]
    to: Option<PathBuf>,
    /// Replace FILE if it exists (by default an existing file is never overwritten).
    #[arg(long, requires = "download")]
    force: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// The characters encoded in a path segment or a query value: all but RFC 3986's
/// unreserved ones.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn encode(component: &str) -> String {
    utf8_percent_encode(component, COMPONENT).to_string()
}

/// The API's path of build `number` of a job.
fn build_path(server: &ServerArgs, job: &str, number: u64) -> String {
    format!(
        "/api/v1/jobs/{}/{}/builds/{number}",
        encode(&server.namespace),
        encode(job)
    )
}

/// `text` in at most `lines` lines, each indented by two spaces; `…` when cut.
fn indented(text: &str, lines: usize) -> String {
    let mut out = String::new();
    for line in text.lines().take(lines) {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    if text.lines().nth(lines).is_some() {
        out.push_str("  …\n");
    }
    out
}

/// The counts in one line: `412 passed, 3 failed, 0 errored, 1 flaky, 5 skipped`.
fn counts_line(counts: &Value) -> String {
    ["passed", "failed", "errored", "flaky", "skipped"]
        .iter()
        .map(|outcome| format!("{} {outcome}", counts[outcome].as_u64().unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A build's test results for people: the counts, then every failure (failed, then
/// errored) with its message and where it failed, the known flaky ones said so, then the
/// report files that could not be read.
fn results_text(header: &str, value: &Value) -> String {
    let counts = &value["counts"];
    let failures = counts["failed"].as_u64().unwrap_or(0) + counts["errored"].as_u64().unwrap_or(0);
    let known = value["known_flaky"].as_array().map_or(0, Vec::len);
    let mut out = format!("{header}: {}\n", counts_line(counts));
    if known > 0 {
        out.push_str(&format!("{failures} failed — {known} known flaky\n"));
    }
    let empty = Vec::new();
    let detailed = value["detailed"].as_array().unwrap_or(&empty);
    let failed = detailed
        .iter()
        .filter(|case| matches!(case["outcome"].as_str(), Some("failed" | "errored")));
    let mut listed = 0u64;
    for case in failed {
        let id = case_id(case);
        out.push_str(&format!(
            "\n{:<8} {id}\n",
            text(&case["outcome"]).to_uppercase()
        ));
        if let Some(flaky) = value["known_flaky"]
            .as_array()
            .and_then(|k| k.iter().find(|k| k["id"] == id.as_str()))
        {
            out.push_str(&format!(
                "  known flaky: {}\n",
                flaky_sentence(&flaky["reason"])
            ));
        }
        let message = match (case["kind"].as_str(), case["message"].as_str()) {
            (Some(kind), Some(message)) => format!("{kind}: {message}"),
            (Some(said), None) | (None, Some(said)) => said.to_owned(),
            (None, None) => String::new(),
        };
        out.push_str(&indented(&message, 5));
        if let Some(file) = case["file"].as_str() {
            match case["line"].as_u64() {
                Some(line) => out.push_str(&format!("  at {file}:{line}\n")),
                None => out.push_str(&format!("  at {file}\n")),
            }
        }
        listed += 1;
    }
    if listed < failures {
        out.push_str(&format!(
            "\nand {} more failures without details (-o json lists every case)\n",
            failures - listed
        ));
    }
    let unread: Vec<&Value> = (value["files"].as_array().into_iter().flatten())
        .filter(|f| f["error"].is_string())
        .collect();
    if !unread.is_empty() {
        out.push_str("\nreport files not read whole:\n");
        for file in unread {
            out.push_str(&format!(
                "  {}: {}\n",
                text(&file["path"]),
                text(&file["error"])
            ));
        }
    }
    out
}

/// A case's id as the API and the history name it: `CLASSNAME::NAME`, else
/// `SUITE::NAME`, else `NAME`.
fn case_id(case: &Value) -> String {
    let name = case["name"].as_str().unwrap_or_default();
    let scope = (case["classname"].as_str())
        .filter(|c| !c.is_empty())
        .or_else(|| case["suite"].as_str().filter(|s| !s.is_empty()));
    match scope {
        Some(scope) => format!("{scope}::{name}"),
        None => name.to_owned(),
    }
}

/// Why a failure is known flaky, from its reason's fields (a build's tests give the reason,
/// a test's history also its sentence).
fn flaky_sentence(reason: &Value) -> String {
    match reason["rule"].as_str() {
        Some("passed_on_rerun") => format!(
            "it failed, then passed on a rerun within build #{}",
            text(&reason["build"])
        ),
        Some("same_commit") => format!(
            "it failed in build #{} and did not fail in build #{} of the same commit",
            text(&reason["failed"]),
            text(&reason["not_failed"])
        ),
        Some("flips") => format!(
            "it flipped between failing and not failing {} times in its last {} runs on the default branch",
            text(&reason["flips"]),
            text(&reason["runs"])
        ),
        _ => reason.to_string(),
    }
}

/// A test's history for people: whether it is flaky and why, then its status per build.
fn history_text(value: &Value) -> String {
    let id = text(&value["id"]);
    let mut out = match value["flaky_because"].as_str() {
        Some(why) => format!("{id}: known flaky. {why}\n"),
        None => format!("{id}: its history here does not show it flaky.\n"),
    };
    let rows: Vec<Vec<String>> = (value["builds"].as_array().into_iter().flatten())
        .map(|b| {
            vec![
                text(&b["number"]),
                text(&b["status"]).replace('_', " "),
                b["commit"]
                    .as_str()
                    .map_or("-".into(), |c| c.chars().take(12).collect()),
                text(&b["pull_request"]),
                text(&b["finished_at"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("no archived build of this job has test results yet\n");
    } else {
        out.push_str(&table(
            &["BUILD", "STATUS", "COMMIT", "PR", "FINISHED"],
            &rows,
        ));
    }
    out
}

pub fn tests(args: &TestsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let path = match (&args.history, args.build) {
        (Some(id), Some(build)) => format!(
            "{}/tests/history?name={}",
            build_path(&args.server, &args.job, build),
            encode(id)
        ),
        (Some(id), None) => format!(
            "/api/v1/jobs/{}/{}/tests/history?name={}",
            encode(&args.server.namespace),
            encode(&args.job),
            encode(id)
        ),
        (None, Some(build)) => format!("{}/tests", build_path(&args.server, &args.job, build)),
        (None, None) => bail!("say which build: `kubeci tests JOB BUILD` (or `--history TEST_ID`)"),
    };
    let answer = runtime()?.block_on(client.call(Method::GET, &path, &[], None))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    let value = json(&answer)?;
    if args.server.output == "json" {
        return print_json(&value);
    }
    let out = match (&args.history, args.build) {
        (Some(_), _) => history_text(&value),
        (None, build) => {
            let header = format!(
                "build {} of {}/{}",
                build.unwrap_or_default(),
                args.server.namespace,
                args.job
            );
            results_text(&header, &value)
        }
    };
    crate::output::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// `bytes` for people: `812 B`, `3.4 KB`, `59.6 MB`.
fn human(bytes: u64) -> String {
    match bytes {
        b if b < 1000 => format!("{b} B"),
        b if b < 1_000_000 => format!("{:.1} KB", b as f64 / 1e3),
        b if b < 1_000_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b => format!("{:.1} GB", b as f64 / 1e9),
    }
}

pub fn artifacts(args: &ArtifactsArgs) -> Result<ExitCode> {
    if let Some(path) = &args.download {
        return download(args, path);
    }
    let client = Client::new(&args.server)?;
    let path = format!(
        "{}/artifacts",
        build_path(&args.server, &args.job, args.build)
    );
    let answer = runtime()?.block_on(client.call(Method::GET, &path, &[], None))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    let value = json(&answer)?;
    if args.server.output == "json" {
        return print_json(&value);
    }
    let rows: Vec<Vec<String>> = (value["artifacts"].as_array().into_iter().flatten())
        .map(|file| {
            vec![
                text(&file["path"]),
                human(file["size"].as_u64().unwrap_or(0)),
            ]
        })
        .collect();
    let mut out = if rows.is_empty() {
        format!(
            "build {} of {}/{} left no file\n",
            args.build, args.server.namespace, args.job
        )
    } else {
        table(&["PATH", "SIZE"], &rows)
    };
    let refused_files: Vec<&Value> = value["refused"].as_array().into_iter().flatten().collect();
    if !refused_files.is_empty() {
        out.push_str("\ndeclared but not kept:\n");
        for file in refused_files {
            out.push_str(&format!(
                "  {}: {}\n",
                text(&file["path"]),
                text(&file["why"])
            ));
        }
    }
    crate::output::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

/// Where a download of the build's file `path` goes when no `--to` is given: its last
/// segment, in the current directory — never a path the server's name for it makes
/// (`dist/app.tar.gz` is written to `./app.tar.gz`, nothing outside).
fn own_name(path: &str) -> Result<PathBuf> {
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." || name.contains(['\\', '\0']) {
        bail!("`{path}` does not end in a file name to write it to: give --to FILE");
    }
    Ok(PathBuf::from(name))
}

/// Downloads the build's file `path`, streamed to its file (or standard output): written
/// beside its target under a temporary name, then moved onto it — over an existing file
/// only with `--force`, so a failed download or an existing file is never half replaced.
fn download(args: &ArtifactsArgs, path: &str) -> Result<ExitCode> {
    let to = match &args.to {
        Some(to) => to.clone(),
        None => own_name(path)?,
    };
    let client = Client::new(&args.server)?;
    let segments: Vec<String> = path.split('/').map(encode).collect();
    let url = format!(
        "{}/artifacts/{}",
        build_path(&args.server, &args.job, args.build),
        segments.join("/")
    );
    if to == Path::new("-") {
        let mut stdout = std::io::stdout();
        let answer = runtime()?.block_on(client.call(Method::GET, &url, &[], Some(&mut stdout)))?;
        return if answer.status == 200 {
            Ok(ExitCode::SUCCESS)
        } else {
            refused(&answer)
        };
    }
    if !args.force && std::fs::symlink_metadata(&to).is_ok() {
        bail!(
            "{} exists: give --force to replace it, or --to FILE",
            to.display()
        );
    }
    let dir = match to.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".kubeci-download-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let answer = runtime()?.block_on(client.call(
        Method::GET,
        &url,
        &[],
        Some(file.as_file_mut() as &mut dyn Write),
    ));
    let answer = answer.with_context(|| format!("{path} was not downloaded"))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    let size = file.as_file().metadata().map_or(0, |m| m.len());
    let kept = if args.force {
        file.persist(&to).map(drop)
    } else {
        file.persist_noclobber(&to).map(drop)
    };
    kept.map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", to.display()))?;
    eprintln!("wrote {} ({})", to.display(), human(size));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_named_by_its_last_segment_and_never_by_a_path_out_of_here() {
        assert_eq!(
            own_name("dist/app.tar.gz").unwrap(),
            PathBuf::from("app.tar.gz")
        );
        assert_eq!(own_name("a.txt").unwrap(), PathBuf::from("a.txt"));
        for bad in ["dist/", "..", "a/..", "a/.", "", "a\\..\\b"] {
            let said = own_name(bad).unwrap_err().to_string();
            assert!(said.contains("give --to FILE"), "{bad}: {said}");
        }
    }

    #[test]
    fn a_test_id_and_a_file_s_segments_stay_one_component_each() {
        assert_eq!(
            encode("pkg.Mod::a b&c=d#e/f"),
            "pkg.Mod%3A%3Aa%20b%26c%3Dd%23e%2Ff"
        );
        assert_eq!(human(812), "812 B");
        assert_eq!(human(1_234_567), "1.2 MB");
    }
}
