//! `kubeci jobs`, `builds`, `logs`, `trigger`, `cancel` (and, in [`outputs`], `tests` and
//! `artifacts`): the REST API of a running kubeci (`kubeci serve`), from a terminal or a
//! script.

pub mod outputs;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{header, Method, Request};
use serde_json::Value;

/// Where the server is and who is asking.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The kubeci server [default: $KUBECI_SERVER, else http://127.0.0.1:8080].
    #[arg(long, value_name = "URL", global = true)]
    server: Option<String>,
    /// File holding the bearer token for actions [default: $KUBECI_TOKEN].
    #[arg(long, value_name = "FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Namespace of the job.
    #[arg(
        long,
        short = 'n',
        default_value = "default",
        value_name = "NS",
        global = true
    )]
    namespace: String,
    /// `table` for people, `json` for scripts (the API's own JSON).
    #[arg(long, short = 'o', default_value = "table", value_parser = ["table", "json"], global = true)]
    output: String,
}

#[derive(Debug, clap::Args)]
pub struct BuildsArgs {
    /// The job.
    job: String,
    /// At most this many builds, newest first.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    job: String,
    build: u64,
    /// Keep streaming until the build step ends.
    #[arg(long, short = 'f')]
    follow: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct TriggerArgs {
    job: String,
    /// An idempotency key: the same key again within three days gives the same build.
    #[arg(long, value_name = "KEY")]
    key: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    job: String,
    build: u64,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Args)]
pub struct JobsArgs {
    #[command(flatten)]
    server: ServerArgs,
}

struct Client {
    base: String,
    token: Option<String>,
    http: kubeci_https::HttpsClient,
}

/// An answer: the status and the body, read whole or streamed to stdout.
struct Answer {
    status: u16,
    body: Vec<u8>,
}

impl Client {
    fn new(args: &ServerArgs) -> Result<Client> {
        let base = args
            .server
            .clone()
            .or_else(|| std::env::var("KUBECI_SERVER").ok())
            .unwrap_or_else(|| "http://127.0.0.1:8080".into());
        let token = match &args.token_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            None => std::env::var("KUBECI_TOKEN").ok(),
        };
        Ok(Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http: kubeci_https::https_client()?,
        })
    }

    /// Sends a request; its answer's body read whole, or, when it succeeds (200) and
    /// `sink` is given, written to `sink` as it comes.
    async fn call(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        mut sink: Option<&mut dyn Write>,
    ) -> Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .with_context(|| format!("`{url}` is not a URL"))?;
        let response = self
            .http
            .request(request)
            .await
            .with_context(|| format!("cannot reach kubeci at {}", self.base))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the answer broke off")?;
            if let Some(data) = frame.data_ref() {
                match sink.as_mut() {
                    Some(sink) if status == 200 => {
                        sink.write_all(data)?;
                        sink.flush()?;
                    }
                    _ => bytes.extend_from_slice(data),
                }
            }
        }
        Ok(Answer {
            status,
            body: bytes,
        })
    }
}

/// The server's error, said plainly; exit code 1.
fn refused(answer: &Answer) -> Result<ExitCode> {
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    match value["error"]["message"].as_str() {
        Some(message) => eprintln!("kubeci: {message} ({})", answer.status),
        None => eprintln!("kubeci: the server answered {}", answer.status),
    }
    Ok(ExitCode::from(1))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn json(answer: &Answer) -> Result<Value> {
    serde_json::from_slice(&answer.body).context("the server's answer is not JSON")
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints `rows` under `headers`, columns aligned.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(padded.join("  ").trim_end());
        out.push('\n');
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    for row in rows {
        line(row.clone());
    }
    out
}

fn print_json(value: &Value) -> Result<ExitCode> {
    crate::output::print(&(serde_json::to_string_pretty(value)? + "\n"))?;
    Ok(ExitCode::SUCCESS)
}

fn build_row(b: &Value) -> Vec<String> {
    vec![
        text(&b["number"]),
        text(&b["state"]),
        text(&b["trigger"]),
        b["commit"]
            .as_str()
            .map_or("-".into(), |c| c.chars().take(12).collect()),
        text(&b["pull_request"]),
        b["message"].as_str().unwrap_or("").to_owned(),
    ]
}

pub fn jobs(args: &JobsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let answer = runtime()?.block_on(client.call(Method::GET, "/api/v1/jobs", &[], None))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    let value = json(&answer)?;
    if args.server.output == "json" {
        return print_json(&value);
    }
    let items: Vec<&Value> = value["items"].as_array().into_iter().flatten().collect();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|j| {
            vec![
                text(&j["namespace"]),
                text(&j["name"]),
                if j["valid"] == true {
                    "yes".into()
                } else {
                    "no".into()
                },
                text(&j["git_url"]),
                text(&j["branch"]),
                text(&j["chart_version"]),
            ]
        })
        .collect();
    let mut out = table(
        &["NAMESPACE", "JOB", "VALID", "REPOSITORY", "BRANCH", "CHART"],
        &rows,
    );
    for job in items.iter().filter(|j| j["valid"] != true) {
        for error in job["errors"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "\n{}/{}: {}\n",
                text(&job["namespace"]),
                text(&job["name"]),
                text(error)
            ));
        }
    }
    crate::output::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn builds(args: &BuildsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let path = format!(
        "/api/v1/jobs/{}/{}/builds?limit={}",
        args.server.namespace,
        args.job,
        args.limit.clamp(1, 500)
    );
    let answer = runtime()?.block_on(client.call(Method::GET, &path, &[], None))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    let value = json(&answer)?;
    if args.server.output == "json" {
        return print_json(&value);
    }
    let rows: Vec<Vec<String>> = value["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(build_row)
        .collect();
    crate::output::print(&table(
        &["BUILD", "STATE", "TRIGGER", "COMMIT", "PR", "MESSAGE"],
        &rows,
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn logs(args: &LogsArgs) -> Result<ExitCode> {
    let client = Client::new(&args.server)?;
    let path = format!(
        "/api/v1/jobs/{}/{}/builds/{}/log?follow={}",
        args.server.namespace, args.job, args.build, args.follow
    );
    let answer =
        runtime()?.block_on(client.call(Method::GET, &path, &[], Some(&mut std::io::stdout())))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    Ok(ExitCode::SUCCESS)
}

pub fn trigger(args: &TriggerArgs) -> Result<ExitCode> {
    let client = Client::new(&args.server)?;
    if client.token.is_none() {
        bail!("starting a build needs a token: --token-file FILE or $KUBECI_TOKEN");
    }
    let path = format!("/api/v1/jobs/{}/{}/builds", args.server.namespace, args.job);
    let headers: Vec<(&str, &str)> = args
        .key
        .iter()
        .map(|k| ("idempotency-key", k.as_str()))
        .collect();
    let answer = runtime()?.block_on(client.call(Method::POST, &path, &headers, None))?;
    if !matches!(answer.status, 200 | 201) {
        return refused(&answer);
    }
    let value = json(&answer)?;
    if args.server.output == "json" {
        return print_json(&value);
    }
    let started = if answer.status == 201 {
        "started"
    } else {
        "already started by this key"
    };
    crate::output::print(&format!(
        "build {} of {}/{} {started}: {}\n",
        text(&value["number"]),
        args.server.namespace,
        args.job,
        text(&value["state"])
    ))?;
    Ok(ExitCode::SUCCESS)
}

pub fn cancel(args: &CancelArgs) -> Result<ExitCode> {
    let client = Client::new(&args.server)?;
    if client.token.is_none() {
        bail!("cancelling a build needs a token: --token-file FILE or $KUBECI_TOKEN");
    }
    let path = format!(
        "/api/v1/jobs/{}/{}/builds/{}/cancel",
        args.server.namespace, args.job, args.build
    );
    let answer = runtime()?.block_on(client.call(Method::POST, &path, &[], None))?;
    if answer.status != 200 {
        return refused(&answer);
    }
    crate::output::print(&format!(
        "build {} of {}/{} cancelled\n",
        args.build, args.server.namespace, args.job
    ))?;
    Ok(ExitCode::SUCCESS)
}
