//! `kubeci collect`: the build pod's collector (issue 30). It waits beside the build step
//! until Kubernetes stops it (SIGTERM: the build step ended, or the pod is being deleted
//! on its Job's deadline), then picks the files the job declares from the workspace —
//! by `kubeci_collect`, the rules the local engine keeps — and sends each to kubeci with
//! the pod's own token (`PUT /internal/v1/outputs/{reports|artifacts}/PATH`, streamed),
//! then says it is done (`POST /internal/v1/outputs/done`, with the files it did not
//! send and why). kubeci decides what it keeps.
//!
//! It resolves kubeci's host when it starts, before it says it is ready (its startup
//! probe holds the build step back until then), and connects to those addresses only:
//! the build step shares the pod's `/etc/hosts` and could point the name at itself
//! ([`address`]).
//!
//! Bounded (`--within`), and it always exits 0: a collector never fails or holds up a
//! build. What went wrong is in its log, which kubeci keeps as the build's step `collect`.

use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::{header, Method, Request, StatusCode};
use kubeci_collect::{collect_in_pod, CollectedFile, Limits, Pattern};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, ReadBuf};

mod address;

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// kubeci, as this pod reaches it (`serve --collect-url`). Its host is resolved once,
    /// when the collector starts; the files go to that address only.
    #[arg(long, value_name = "URL", required_unless_present = "probe")]
    server: Option<String>,
    /// The pod's token for kubeci (a projected ServiceAccount token of audience
    /// `kubeci-collect`), read when collecting.
    #[arg(long, value_name = "FILE", required_unless_present = "probe")]
    token_file: Option<PathBuf>,
    /// The checkout the build ran in.
    #[arg(long, value_name = "DIR", required_unless_present = "probe")]
    workspace: Option<PathBuf>,
    /// The job's `workdir`, relative to the checkout; the patterns are relative to it.
    #[arg(long, value_name = "DIR", default_value = "")]
    workdir: String,
    /// A `test_reports` pattern of the job (repeatable).
    #[arg(long = "test-report", value_name = "PATTERN")]
    test_reports: Vec<String>,
    /// An `artifacts` pattern of the job (repeatable).
    #[arg(long = "artifact", value_name = "PATTERN")]
    artifacts: Vec<String>,
    /// How long collecting may take once asked; past it the collector gives up.
    #[arg(long, value_name = "DURATION", default_value = "50s")]
    within: String,
    /// Collect at once instead of waiting for SIGTERM.
    #[arg(long)]
    now: bool,
    /// How long to try resolving `--server`'s host at start. Past it the collector is
    /// ready all the same (the build goes on) but hands nothing over: it never resolves
    /// the name once the build step may have changed what it means.
    #[arg(long, value_name = "DURATION", default_value = address::RESOLVE_WITHIN)]
    resolve_within: String,
    /// Once it has resolved kubeci's host and waits for SIGTERM, the collector says so in
    /// this file: the containers after it start only then (its startup probe), so a build
    /// that ends at once is collected and runs no code before the host is resolved.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// The startup probe: exit 0 when `--ready-file` is there, 1 otherwise.
    #[arg(long, requires = "ready_file")]
    probe: bool,
}

/// Attempts of one request that failed on the way (no answer, or a 5xx).
const ATTEMPTS: u32 = 3;

/// How big a piece of a file is read at a time.
const PIECE: usize = 64 * 1024;

pub fn run(args: &CollectArgs) -> Result<ExitCode> {
    if args.probe {
        let ready = args.ready_file.as_ref().is_some_and(|f| f.exists());
        return Ok(if ready {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        // Installed first: a SIGTERM is the signal to collect, never the end of it.
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        // Before the build step can run, so before the ready file.
        let kept = kubeci_address(args).await;
        if let Some(ready) = &args.ready_file {
            if let Err(e) = std::fs::write(ready, b"waiting\n") {
                say(&format!("cannot write {}: {e}", ready.display()));
            }
        }
        if !args.now {
            say("waiting for the build step to end");
            match terminate.as_mut() {
                Some(terminate) => {
                    tokio::select! {
                        _ = terminate.recv() => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        let kept = match kept {
            Ok(kept) => kept,
            Err(why) => return say(&format!("the build's files were not handed over: {why}")),
        };
        let within = crate::serve::duration_flag("--within", &args.within)
            .unwrap_or(Duration::from_secs(50));
        match tokio::time::timeout(within, collect_and_send(args, kept)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => say(&format!(
                "the build's files were not handed over: {error:#}"
            )),
            Err(_) => say(&format!(
                "gave up after {}: what was not handed over by then is not kept",
                args.within
            )),
        }
    });
    Ok(ExitCode::SUCCESS)
}

fn say(line: &str) {
    println!("{line}");
}

/// kubeci's host resolved now, within `--resolve-within` (see [`address`]).
async fn kubeci_address(args: &CollectArgs) -> Result<kubeci_https::KeptAddresses, String> {
    let server = (args.server.as_deref()).ok_or("--server is needed to collect")?;
    let flag = crate::serve::duration_flag("--resolve-within", &args.resolve_within);
    let within = flag.unwrap_or_else(|error| {
        say(&format!(
            "{error:#}: trying for {}",
            address::RESOLVE_WITHIN
        ));
        address::resolve_within_by_default()
    });
    address::keep(server, within).await
}

/// One file not sent, and why.
struct Refused {
    path: String,
    why: String,
}

/// Each pattern of `texts` parsed; one that does not parse is refused with why.
fn patterns(texts: &[String], refused: &mut Vec<Refused>) -> Vec<Pattern> {
    (texts.iter())
        .filter_map(|text| match Pattern::parse(text) {
            Ok(pattern) => Some(pattern),
            Err(error) => {
                refused.push(Refused {
                    path: text.clone(),
                    why: format!("not a pattern: {error}"),
                });
                None
            }
        })
        .collect()
}

/// Collects the declared files and sends them to `kept`, the addresses kubeci's host had
/// when the collector started.
async fn collect_and_send(args: &CollectArgs, kept: kubeci_https::KeptAddresses) -> Result<()> {
    let mut refused = Vec::new();
    let reports = patterns(&args.test_reports, &mut refused);
    let artifacts = patterns(&args.artifacts, &mut refused);
    let (Some(server), Some(token_file), Some(workspace)) =
        (&args.server, &args.token_file, args.workspace.clone())
    else {
        return Err(anyhow!(
            "--server, --token-file and --workspace are needed to collect"
        ));
    };
    let workdir = args.workdir.clone();
    let collected = tokio::task::spawn_blocking(move || {
        collect_in_pod(
            &workspace,
            &workdir,
            &reports,
            &artifacts,
            &Limits::default(),
        )
    })
    .await
    .map_err(|e| anyhow!("collecting stopped: {e}"))??;
    refused.extend(collected.refused.iter().map(|r| Refused {
        path: r.path.clone(),
        why: r.why.clone(),
    }));
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("cannot read the token {}", token_file.display()))?;
    let sender = Sender {
        base: server.trim_end_matches('/').to_owned(),
        token: token.trim().to_owned(),
        http: kubeci_https::https_client_to::<Outgoing>(kept)?,
    };
    say(&format!(
        "handing over {} test reports and {} artifacts ({} refused here)",
        collected.test_reports().count(),
        collected.artifacts().count(),
        refused.len()
    ));
    for file in &collected.files {
        let kinds = [
            (file.kinds.test_report, "reports"),
            (file.kinds.artifact, "artifacts"),
        ];
        for (_, kind) in kinds.into_iter().filter(|(wanted, _)| *wanted) {
            match sender.put(kind, file).await {
                Sent::Kept => say(&format!("sent {kind}/{} ({} bytes)", file.path, file.size)),
                Sent::Refused(why) => {
                    say(&format!("not kept: {kind}/{}: {why}", file.path));
                    refused.push(Refused {
                        path: file.path.clone(),
                        why,
                    });
                }
                Sent::Stop(why) => return Err(anyhow!("{why}")),
            }
        }
    }
    sender.done(&refused).await
}

/// What became of one file.
enum Sent {
    Kept,
    /// Not kept, for a reason of this file's.
    Refused(String),
    /// kubeci takes nothing more from this pod (not authorized, or its build is done).
    Stop(String),
}

struct Sender {
    base: String,
    token: String,
    /// Reaches kubeci's host at its kept addresses only: never resolves a name.
    http: kubeci_https::Client<kubeci_https::KeptHttps, Outgoing>,
}

impl Sender {
    /// `PUT`s `file` as one of the build's `kind`, streamed from its file (opened again
    /// on each attempt, checked to be the file collected).
    async fn put(&self, kind: &str, file: &CollectedFile) -> Sent {
        let path: Vec<String> = (file.path.split('/'))
            .map(|segment| {
                percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC)
                    .to_string()
            })
            .collect();
        let url = format!(
            "{}/internal/v1/outputs/{kind}/{}",
            self.base,
            path.join("/")
        );
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let opened = match file.open() {
                Ok(opened) => tokio::fs::File::from_std(opened),
                Err(e) => return Sent::Refused(format!("cannot be read: {e}")),
            };
            let body = Outgoing::File {
                file: opened,
                left: file.size,
            };
            match self.send(Method::PUT, &url, body).await {
                Ok((status, _)) if status.is_success() => return Sent::Kept,
                Ok((status, message)) if status.is_server_error() => {
                    last = format!("kubeci answered {status}: {message}");
                }
                Ok((status, message)) => return judged(status, message),
                Err(e) => last = format!("kubeci could not be reached: {e}"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
        Sent::Refused(last)
    }

    /// Tells kubeci the build's files are all sent, with those that were not and why.
    async fn done(&self, refused: &[Refused]) -> Result<()> {
        let refused: Vec<Value> = (refused.iter())
            .map(|r| json!({"path": r.path, "why": r.why}))
            .collect();
        let body = Bytes::from(serde_json::to_vec(&json!({"refused": refused}))?);
        let url = format!("{}/internal/v1/outputs/done", self.base);
        let mut last = anyhow!("not sent");
        for attempt in 1..=ATTEMPTS {
            match self
                .send(Method::POST, &url, Outgoing::Bytes(Some(body.clone())))
                .await
            {
                Ok((status, answer)) if status.is_success() => {
                    say(&format!("done: {answer}"));
                    return Ok(());
                }
                Ok((status, message)) if !status.is_server_error() => {
                    return Err(anyhow!("kubeci answered {status}: {message}"))
                }
                Ok((status, message)) => last = anyhow!("kubeci answered {status}: {message}"),
                Err(e) => last = anyhow!("kubeci could not be reached: {e}"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
        }
        Err(last)
    }

    /// One request; its status and what kubeci said (its error's message, or its answer).
    async fn send(
        &self,
        method: Method,
        url: &str,
        body: Outgoing,
    ) -> Result<(StatusCode, String)> {
        let length = body.len();
        let request = Request::builder()
            .method(method)
            .uri(url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_LENGTH, length)
            .body(body)?;
        let response = self.http.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Ok((status, message))
    }
}

/// What an answer that is not a success means for the rest.
fn judged(status: StatusCode, message: String) -> Sent {
    match status {
        // Not this pod's to send (its token, its build done): nothing more will be kept.
        StatusCode::UNAUTHORIZED | StatusCode::CONFLICT => Sent::Stop(format!(
            "kubeci takes nothing more from this pod ({status}): {message}"
        )),
        _ => Sent::Refused(format!("kubeci refused it ({status}): {message}")),
    }
}

/// A request's body: a file read a piece at a time (at most `left` bytes), or bytes.
enum Outgoing {
    File { file: tokio::fs::File, left: u64 },
    Bytes(Option<Bytes>),
}

impl Outgoing {
    fn len(&self) -> u64 {
        match self {
            Outgoing::File { left, .. } => *left,
            Outgoing::Bytes(bytes) => bytes.as_ref().map_or(0, |b| b.len() as u64),
        }
    }
}

impl Body for Outgoing {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let (file, left) = match &mut *self {
            Outgoing::Bytes(bytes) => return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Outgoing::File { left: 0, .. } => return Poll::Ready(None),
            Outgoing::File { file, left } => (file, left),
        };
        let want = usize::try_from(*left).unwrap_or(PIECE).min(PIECE);
        let mut piece = vec![0u8; want];
        let mut buf = ReadBuf::new(&mut piece);
        match Pin::new(file).poll_read(cx, &mut buf) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len();
                if read == 0 {
                    return Poll::Ready(Some(Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file is shorter than when it was collected",
                    ))));
                }
                *left -= read as u64;
                piece.truncate(read);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(piece)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len())
    }
}
