//! `kubeci serve --kubernetes` (the controller) or `kubeci serve --local DIR` (the embedded
//! engine), and the HTTP API and GitHub webhook endpoint in front of either.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kubeci_render::RenderConfig;
use kubeci_spec::{LoadOptions, NamespacePolicy};

mod archive;
mod build_user;
mod github;

use github::GitHubFront;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Serve the jobs of a Kubernetes cluster (in-cluster config, or KUBECONFIG).
    #[arg(long, required_unless_present = "local", conflicts_with = "local")]
    kubernetes: bool,
    /// Serve the jobs of the ConfigMap files in DIR (reloaded when they change), built on
    /// this machine by the local engine, with history and logs in --data.
    #[arg(long, value_name = "DIR")]
    local: Option<PathBuf>,
    /// Where `--local` keeps its database and the builds' work directories.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".kubeci",
        requires = "local"
    )]
    data: PathBuf,
    /// Secrets for `--local` builds, laid out like mounted Secrets: DIR/<secret>/<key>.
    #[arg(long, value_name = "DIR", requires = "local")]
    secrets: Option<PathBuf>,
    /// The most of one `--local` build's output kept, as a Kubernetes quantity (`64Mi`,
    /// `1Gi`); past it, its lines are dropped (the build goes on) and its log says so.
    #[arg(long, value_name = "SIZE", default_value = "64Mi", requires = "local")]
    log_limit: String,
    /// The user `--local` builds run as (a name, or UID[:GID]) when kubeci runs as root, so
    /// they cannot read its token, database or --secrets [default: nobody]. Without root,
    /// builds run as kubeci's own user.
    #[arg(long, value_name = "USER", requires = "local")]
    build_user: Option<String>,
    /// A namespace to watch (repeatable) [default: all namespaces].
    #[arg(long = "namespace", short = 'n', value_name = "NS")]
    namespaces: Vec<String>,
    /// Label selector of job ConfigMaps.
    #[arg(long, default_value = "ci-job-spec=true", value_name = "SELECTOR")]
    selector: String,
    /// How stderr reads: `text` lines, or `json`, one object per line (time, level,
    /// target, message, then each field: namespace, job, build, request_id…).
    #[arg(long, value_enum, default_value_t = crate::logging::LogFormat::Text, value_name = "FORMAT")]
    log_format: crate::logging::LogFormat,
    /// Address of the HTTP server (pages, API, health) [default: 0.0.0.0:8080 with
    /// --kubernetes, 127.0.0.1:8080 (this machine only) with --local].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// How long a client may take to send a request's head, and then its body; a slower
    /// client's connection is closed (a body gets `408`).
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    read_timeout: String,
    /// How many clients may follow one build's log at once (the live page, `logs -f`);
    /// more are answered `503 too-many-followers`. Followers of one build share one
    /// stream from the cluster.
    #[arg(long, default_value_t = kubeci_server::Limits::default().log_followers_per_build, value_name = "N")]
    max_log_followers: usize,
    /// Base URL of this server as users reach it, for BUILD_URL.
    #[arg(long, value_name = "URL", default_value_t = RenderConfig::default().base_url)]
    base_url: String,
    /// Image of the clone step.
    #[arg(long, value_name = "IMAGE", default_value_t = RenderConfig::default().clone_image)]
    clone_image: String,
    /// Image of the build step for jobs without `image`.
    #[arg(long, value_name = "IMAGE", default_value_t = RenderConfig::default().default_image)]
    default_image: String,
    /// With --kubernetes and --archive: where build pods reach this server (its Service in
    /// the cluster, e.g. `http://kubeci.ci.svc:8080`) to hand over the test reports and
    /// artifacts their jobs declare; each such pod then runs a collector beside its build
    /// step. Without it those files stay in the pod.
    #[arg(long, value_name = "URL", conflicts_with = "local", value_parser = collect_url)]
    collect_url: Option<String>,
    /// How long a build's pod may be unable to start (missing secret, bad image,
    /// unschedulable) before the build fails, e.g. `5m`.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pending_deadline: String,
    /// Who decides where jobs build (--kubernetes): `labels` — only in Namespaces labelled
    /// `kubeci.io/builds=enabled`, with the ServiceAccounts, Secrets and repositories their
    /// annotations `kubeci.io/service-accounts`, `kubeci.io/secrets` and
    /// `kubeci.io/repositories` list; `open` — every watched namespace builds whatever its
    /// jobs name.
    #[arg(long, value_enum, default_value_t = TenancyArg::Labels, value_name = "MODE", conflicts_with = "local")]
    tenancy: TenancyArg,
    /// Allow jobs declared in namespace FROM to run builds in namespace TO (repeatable).
    #[arg(long = "allow-namespace", value_name = "FROM=TO", value_parser = NamespacePolicy::parse_pair)]
    allow_namespace: Vec<(String, String)>,
    /// File holding the bearer token that may start and cancel builds; without it the API
    /// is read-only.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The header in which an authenticating proxy in front of kubeci names the user
    /// (e.g. `X-Forwarded-User`, `X-Auth-Request-User`); users on the allow-list may then
    /// act in the pages and the API. Only for a kubeci that can be reached through that
    /// proxy alone. Needs --token-file, whose token signs the forms.
    #[arg(long, value_name = "HEADER", requires = "token_file")]
    auth_user_header: Option<axum::http::HeaderName>,
    /// A user the proxy may name who may act (repeatable).
    #[arg(
        long = "allow-user",
        value_name = "USER",
        requires = "auth_user_header"
    )]
    allow_users: Vec<String>,
    /// A file of users who may act, one per line (`#` starts a comment).
    #[arg(long, value_name = "FILE", requires = "auth_user_header")]
    allowed_users_file: Option<PathBuf>,
    /// URL of a build's log in the cluster's log store; `{namespace}`, `{pod}`, `{job}`,
    /// `{build}`, `{start}` and `{end}` are replaced (a job's `log_url` overrides it).
    #[arg(long, value_name = "TEMPLATE")]
    log_url_template: Option<String>,
    /// With --archive and --kubernetes: how long after its end a build pod is held for
    /// the archive at most (a store down that long); then kubeci releases it, and the
    /// build's record says why its log is missing.
    #[arg(long, default_value = "24h", value_name = "DURATION")]
    archive_give_up_after: String,
    /// POST each build state as JSON to this URL (retried until delivered).
    #[arg(long, value_name = "URL")]
    notify_url: Option<String>,
    /// Cancel the unfinished builds of a job whose ConfigMap is deleted [default: they
    /// finish].
    #[arg(long)]
    cancel_on_delete: bool,
    /// Namespace of the leader-election Lease [default: $POD_NAMESPACE, else `default`].
    #[arg(long, value_name = "NS")]
    lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "kubeci-leader", value_name = "NAME")]
    lease_name: String,
    /// How long a leader holds its Lease without renewing it: how soon another replica
    /// takes over from one that died.
    #[arg(long, default_value = "15s", value_name = "DURATION")]
    lease_duration: String,
    /// This replica's name in the Lease and in Events [default: $POD_NAME, else
    /// $HOSTNAME-<pid>].
    #[arg(long, value_name = "NAME")]
    identity: Option<String>,
    #[command(flatten)]
    archive: archive::ArchiveArgs,
    #[command(flatten)]
    github: github::GitHubArgs,
}

/// `--tenancy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TenancyArg {
    Labels,
    Open,
}

/// The token of `serve --local` without --token-file: made once, random, readable by
/// this user only, and kept in the data directory with the history.
fn local_token(path: &std::path::Path) -> Result<()> {
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;
    if path.exists() {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut random = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .context("cannot read /dev/urandom for a token")?;
    let token = hex::encode(random);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| writeln!(f, "{token}"))
        .with_context(|| format!("cannot write the token to {}", path.display()))?;
    Ok(())
}

/// Makes credential file `path` readable by its owner alone, when it is not already.
fn owner_only(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| {
                format!(
                    "{} is readable by others and cannot be made private: `chmod 600 {}`",
                    path.display(),
                    path.display()
                )
            })?;
        tracing::info!(
            file = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "a file was readable by others: now by its owner alone"
        );
    }
    Ok(())
}

/// A secret from a file, else from an environment variable; trimmed.
pub(crate) fn secret(file: Option<&PathBuf>, variable: &str, flag: &str) -> Result<Option<String>> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("{flag}: cannot read {}", path.display()))?,
        None => match std::env::var(variable) {
            Ok(value) => value,
            Err(_) => return Ok(None),
        },
    };
    let text = text.trim().to_owned();
    if text.is_empty() {
        bail!("{flag} (or ${variable}) is empty");
    }
    Ok(Some(text))
}

pub(crate) fn duration_flag(flag: &str, value: &str) -> Result<Duration> {
    kubeci_spec::duration::parse_duration(value)
        .map(Duration::from_secs)
        .map_err(|why| anyhow::anyhow!("{flag} {value}: {why}"))
}

/// `kubeci serve`: flags → settings → the chosen engine behind the HTTP front.
pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    crate::logging::init(args.log_format);
    let github = GitHubFront::from_flags(&args.github)?;
    let reporter = github.reporter(args.notify_url.as_deref())?;
    let takeover_grace = github.takeover_grace();
    let front = front(args, github)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match &args.local {
            Some(dir) => {
                let archiving = local_archiving(args)?;
                let settings = kubeci_local::Settings {
                    archiving,
                    ..local_settings(args, dir)?
                };
                let engine = kubeci_local::LocalBackend::start(settings, reporter)
                        .with_context(|| {
                            format!("cannot start the local engine in {}", args.data.display())
                        })?;
                tracing::info!(
                    jobs = %dir.display(),
                    data = %args.data.display(),
                    "the local engine: jobs from files, built on this machine"
                );
                front.serve(engine).await
            }
            None => {
                let settings = kubeci_k8s::Settings {
                    takeover_grace,
                    ..kubernetes_settings(args)?
                };
                let config = kube::Config::infer()
                    .await
                    .context("no Kubernetes configuration (in-cluster or KUBECONFIG)")?;
                let client =
                    kube::Client::try_from(config).context("cannot create a Kubernetes client")?;
                match settings.tenancy {
                    kubeci_k8s::Tenancy::Labels => tracing::info!(
                        "tenancy: jobs build only in Namespaces labelled kubeci.io/builds=enabled, with the ServiceAccounts, Secrets and repositories their annotations kubeci.io/service-accounts, kubeci.io/secrets and kubeci.io/repositories list"
                    ),
                    kubeci_k8s::Tenancy::Open => tracing::warn!(
                        "tenancy open: whoever may write a job ConfigMap in a watched namespace runs pods there with any of its ServiceAccounts and Secrets, from any repository; --tenancy labels lets each Namespace say what it allows"
                    ),
                }
                front
                    .serve(kubeci_k8s::Cluster::start(client, settings, reporter))
                    .await
            }
        }
    })
}

/// Who may act: the token (made for `--local` when none is given), proxy users.
fn access(args: &ServeArgs) -> Result<kubeci_server::Access> {
    let local_token_file = args.data.join("token");
    let token_file = match (&args.token_file, &args.local) {
        (Some(path), _) => Some(path.clone()),
        (None, Some(_)) => {
            local_token(&local_token_file)?;
            Some(local_token_file)
        }
        (None, None) => None,
    };
    let token = match &token_file {
        Some(path) => {
            // A --local build runs on this machine; a cluster mounts the token into
            // kubeci's container alone (and read-only).
            if args.local.is_some() {
                owner_only(path)?;
            }
            let token = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?;
            let token = token.trim().to_owned();
            if token.len() < 16 {
                bail!(
                    "the token in {} is shorter than 16 characters",
                    path.display()
                );
            }
            Some(token)
        }
        None => None,
    };
    let mut allowed_users = args.allow_users.clone();
    if let Some(path) = &args.allowed_users_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--allowed-users-file: cannot read {}", path.display()))?;
        allowed_users.extend(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim())
                .filter(|l| !l.is_empty())
                .map(str::to_owned),
        );
    }
    Ok(kubeci_server::Access {
        token,
        user_header: args.auth_user_header.clone(),
        allowed_users,
        secure_cookies: args.base_url.starts_with("https://"),
    })
}

/// The HTTP front: listener, limits, access and the GitHub webhooks.
fn front(args: &ServeArgs, github: GitHubFront) -> Result<Front> {
    let read_timeout = duration_flag("--read-timeout", &args.read_timeout)?;
    if read_timeout.is_zero() {
        bail!("--read-timeout must be at least 1s");
    }
    let default_host = if args.local.is_some() {
        [127, 0, 0, 1]
    } else {
        [0, 0, 0, 0]
    };
    Ok(Front {
        listen: args
            .listen
            .unwrap_or_else(|| SocketAddr::from((default_host, 8080))),
        read_timeout,
        limits: kubeci_server::Limits {
            log_followers_per_build: args.max_log_followers.max(1),
        },
        access: access(args)?,
        sign_in_hint: (args.local.is_some() && args.token_file.is_none()).then(|| {
            format!(
                "sign in with the token in {} to start builds",
                args.data.join("token").display()
            )
        }),
        resync: github.client.has_credentials().then_some(github.resync),
        hook_settings: kubeci_github_api::HookSettings {
            secret: github.webhook_secret.map(String::into_bytes),
            bot: args.github.github_bot.clone(),
            request_message: args.github.github_request_message.clone(),
            host: github.host,
            check_runs: github.report == github::GitHubReport::Checks,
        },
        github: github.client,
    })
}

fn render_config(args: &ServeArgs) -> RenderConfig {
    RenderConfig {
        clone_image: args.clone_image.clone(),
        default_image: args.default_image.clone(),
        base_url: args.base_url.clone(),
        collect_url: None,
    }
}

/// `--collect-url`: an `http://` or `https://` URL of a host, with nothing after its path
/// (no credentials, query or fragment: it is logged and rendered into every build pod).
pub(crate) fn collect_url(value: &str) -> Result<String, String> {
    let rest = (value.strip_prefix("http://"))
        .or_else(|| value.strip_prefix("https://"))
        .ok_or("give an http:// or https:// URL, e.g. http://kubeci.ci.svc:8080")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err("the URL names no host".into());
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '@' | '?' | '#') || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{}` has no place in it: give the server's URL alone",
            c.escape_default()
        ));
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn load_options(args: &ServeArgs, builds_run: kubeci_spec::BuildsRun) -> LoadOptions {
    LoadOptions {
        policy: NamespacePolicy {
            allowed: args.allow_namespace.clone(),
        },
        builds_run,
        ..LoadOptions::default()
    }
}

/// The Kubernetes engine's settings (`--kubernetes`).
fn kubernetes_settings(args: &ServeArgs) -> Result<kubeci_k8s::Settings> {
    let lease_duration = duration_flag("--lease-duration", &args.lease_duration)?;
    if lease_duration.is_zero() {
        bail!("--lease-duration must be at least 1s");
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("POD_NAME").unwrap_or_else(|_| {
            format!(
                "{}-{}",
                std::env::var("HOSTNAME").unwrap_or_else(|_| "kubeci".into()),
                std::process::id()
            )
        })
    });
    let archiving = args.archive.archiving(None)?;
    let collect_url = match (&args.collect_url, &archiving.archive) {
        (Some(url), Some(_)) => Some(url.clone()),
        (Some(_), None) => {
            tracing::warn!("--collect-url without --archive: build pods collect nothing (there is nowhere to keep their files)");
            None
        }
        (None, _) => None,
    };
    Ok(kubeci_k8s::Settings {
        selector: args.selector.clone(),
        namespaces: args.namespaces.clone(),
        render: RenderConfig {
            collect_url,
            ..render_config(args)
        },
        // Build pods run elsewhere: a path on this machine is out of their reach.
        load: load_options(args, kubeci_spec::BuildsRun::InACluster),
        pending_deadline: duration_flag("--pending-deadline", &args.pending_deadline)?,
        identity,
        election: kubeci_k8s::Election {
            namespace: args.lease_namespace.clone().unwrap_or_else(|| {
                std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into())
            }),
            name: args.lease_name.clone(),
            lease_duration,
        },
        cancel_when_deleted: args.cancel_on_delete,
        log_url_template: args.log_url_template.clone(),
        resync: Duration::from_secs(1),
        tenancy: match args.tenancy {
            TenancyArg::Labels => kubeci_k8s::Tenancy::Labels,
            TenancyArg::Open => kubeci_k8s::Tenancy::Open,
        },
        archiving,
        archive_give_up_after: duration_flag(
            "--archive-give-up-after",
            &args.archive_give_up_after,
        )?,
        ..kubeci_k8s::Settings::default()
    })
}

/// The local engine's archive: `--archive URL`, else `DATA/archive` (for kubeci's user
/// alone, as its database is), unless `--no-archive`.
fn local_archiving(args: &ServeArgs) -> Result<kubeci_engine::archive::Archiving> {
    let archiving = args.archive.archiving(Some(&args.data))?;
    if archiving.archive.is_some() && !args.archive.given() {
        use std::os::unix::fs::PermissionsExt;
        let dir = args.data.join("archive");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} kubeci's user's alone", dir.display()))?;
    }
    Ok(archiving)
}

/// The local engine's settings (`--local DIR`).
fn local_settings(args: &ServeArgs, dir: &std::path::Path) -> Result<kubeci_local::Settings> {
    Ok(kubeci_local::Settings {
        jobs_dir: dir.to_owned(),
        data_dir: args.data.clone(),
        secrets_dir: args.secrets.clone(),
        kubeci_exe: std::env::current_exe().context("cannot find the kubeci executable")?,
        render: render_config(args),
        load: load_options(args, kubeci_spec::BuildsRun::OnThisMachine),
        log_url_template: args.log_url_template.clone(),
        reload_every: Duration::from_secs(1),
        log_limit: size_flag("--log-limit", &args.log_limit)?,
        build_user: build_user::build_user(args.build_user.as_deref())?,
        archiving: Default::default(),
    })
}

/// A size in bytes, written as a Kubernetes quantity (`64Mi`); at least 1 KiB.
fn size_flag(flag: &str, value: &str) -> Result<u64> {
    let bytes = kubeci_spec::quantity::parse_quantity(value)
        .map_err(|why| anyhow::anyhow!("{flag} {value}: {why}"))?;
    if !(1024.0..=u64::MAX as f64).contains(&bytes) || bytes.fract() != 0.0 {
        bail!("{flag} {value}: give a whole number of bytes of at least 1Ki, e.g. `64Mi`");
    }
    Ok(bytes as u64)
}

/// What stands in front of either engine: the HTTP API and the GitHub webhooks.
struct Front {
    listen: SocketAddr,
    read_timeout: Duration,
    limits: kubeci_server::Limits,
    access: kubeci_server::Access,
    /// Where the token of `--local` is, for the first message.
    sign_in_hint: Option<String>,
    github: Arc<kubeci_github_api::GitHubClient>,
    hook_settings: kubeci_github_api::HookSettings,
    /// How often to resync open pull requests; `None` without a GitHub token.
    resync: Option<Duration>,
}

impl Front {
    async fn serve<B: kubeci_engine::api::Backend>(self, backend: Arc<B>) -> Result<ExitCode> {
        let hooks = Arc::new(kubeci_github_api::Hooks::new(
            Arc::clone(&backend),
            self.github,
            self.hook_settings,
        ));
        if let Some(every) = self.resync.filter(|d| !d.is_zero()) {
            tokio::spawn(Arc::clone(&hooks).resync_every(every));
        }
        let stopper = Arc::clone(&backend);
        let app = kubeci_server::app_with(backend, self.access, hooks, self.limits);
        let listener = tokio::net::TcpListener::bind(self.listen)
            .await
            .with_context(|| format!("cannot listen on {}", self.listen))?;
        let address = listener.local_addr()?;
        match &self.sign_in_hint {
            Some(hint) => {
                tracing::info!("serving on http://{address} — open it in a browser; {hint}")
            }
            None => tracing::info!("serving on http://{address}"),
        }
        // Kubernetes stops a pod with SIGTERM (then SIGKILL after its grace period); a
        // terminal sends SIGINT. Either way: give the leader Lease back first (another
        // replica leads at once), then take no new requests and finish those in flight
        // (at most --read-timeout), and exit 0.
        kubeci_server::serve(listener, app, self.read_timeout, async move {
            stop_signal().await;
            tracing::info!("stopping: giving up leadership, finishing the requests in flight");
            // An unreachable API server must not hold the exit past the pod's grace period:
            // the Lease then simply expires.
            if tokio::time::timeout(Duration::from_secs(5), stopper.stop())
                .await
                .is_err()
            {
                tracing::warn!("could not give the leader Lease back within 5 s");
            }
        })
        .await;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    }
}

/// Completes on SIGTERM or SIGINT.
async fn stop_signal() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch for SIGTERM: stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
