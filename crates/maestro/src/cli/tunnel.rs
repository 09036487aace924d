//! `maestro tunnel`: put the server on the internet through a Cloudflare Tunnel, for the phone.
//!
//! It runs and supervises `cloudflared` rather than linking a tunnel client, because
//! cloudflared is what Cloudflare supports and updates; Maestro only drives it at its process
//! boundary: the command line, the log lines on stderr, and the metrics port's `/quicktunnel`
//! (a quick tunnel's hostname) and `/ready` (connected to the edge).
//!
//! The flow: find `cloudflared` (or say how to install it); attach to the server answering at
//! the configured port, or start one in this process with `EXTERNAL_URL` set to the public URL
//! (so the pairing URL, allowed origin and allowed host are right); check that the server
//! refuses a proxied request without a credential, and refuse to expose it otherwise; start
//! cloudflared, wait for its URL and readiness, then print the URL and a pairing QR code.
//! cloudflared is restarted with backoff when it dies and stopped (SIGTERM, then SIGKILL) on
//! every exit path. A quick tunnel gets a new hostname on every start, so after a restart an
//! in-process server is restarted with the new `EXTERNAL_URL` and a new pairing is printed.
//!
//! Layout: [`TunnelArgs`] and [`main`]; [`Mode`] says which tunnel; [`Origin`] is the server
//! (attached or in-process); [`supervise`] is the restart loop around [`run_cloudflared`].

use std::ffi::OsString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use maestro_protocol::PairingCreated;
use maestro_server::Config;
use maestro_server::config::AuthMode;
use maestro_server::util::files;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::credentials::print_pairing;

/// First wait before restarting cloudflared; doubled after each quick failure.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest wait between two restarts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A cloudflared that ran this long before dying starts again after [`INITIAL_BACKOFF`].
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// How long cloudflared may take to announce a quick tunnel's hostname.
const URL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long cloudflared may take to connect to Cloudflare's edge.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long cloudflared gets to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an in-process server may take to answer `/health`.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);

const INSTALL_HELP: &str = "cloudflared is not installed (no `cloudflared` on PATH). Install it, then run this again:
  Debian/Ubuntu: add Cloudflare's package repository (see https://pkg.cloudflare.com/) and run `sudo apt-get install cloudflared`
  macOS:         brew install cloudflared
  Other systems: download a release from https://github.com/cloudflare/cloudflared/releases and put it on PATH";

/// Expose the server through a Cloudflare Tunnel and print a QR code to pair a phone.
#[derive(Debug, clap::Args)]
pub struct TunnelArgs {
    /// A quick tunnel: a random https://<words>.trycloudflare.com hostname, no Cloudflare
    /// account needed. The hostname changes every time cloudflared starts.
    #[arg(long, conflicts_with_all = ["name", "token_file"])]
    quick: bool,

    /// A named tunnel (created with `cloudflared tunnel create <name>`): Maestro writes its
    /// ingress config to DATA_DIR/tunnel/<name>.yml and runs it. Needs --hostname.
    #[arg(long, requires = "hostname", conflicts_with = "token_file")]
    name: Option<String>,

    /// The public hostname of a named or dashboard-managed tunnel (e.g. maestro.example.com),
    /// routed to this tunnel in Cloudflare DNS / the dashboard.
    #[arg(long)]
    hostname: Option<String>,

    /// The named tunnel's credentials file (default: cloudflared's own lookup in
    /// ~/.cloudflared/).
    #[arg(long, requires = "name")]
    credentials_file: Option<PathBuf>,

    /// A file holding the token of a dashboard-managed tunnel, passed to cloudflared as a file
    /// (a token is never put on a command line). `TUNNEL_TOKEN` in the environment works too.
    #[arg(long, requires = "hostname")]
    token_file: Option<PathBuf>,

    /// Scope of the device paired with the printed code: read, respond, operate or admin.
    #[arg(long, default_value = "respond", value_parser = ["read", "respond", "operate", "admin"])]
    scope: String,

    #[command(flatten)]
    config: Config,
}

/// Which tunnel to run.
#[derive(Debug, Clone)]
enum Mode {
    Quick,
    Named {
        name: String,
        hostname: String,
        credentials_file: Option<PathBuf>,
    },
    /// Dashboard-managed; the token comes from this file, or from `TUNNEL_TOKEN` (inherited by
    /// cloudflared) when `None`.
    Token {
        file: Option<PathBuf>,
        hostname: String,
    },
}

impl Mode {
    fn from_args(args: &TunnelArgs) -> anyhow::Result<Self> {
        let token_env = std::env::var_os("TUNNEL_TOKEN").is_some_and(|v| !v.is_empty());
        if args.quick {
            return Ok(Self::Quick);
        }
        if let Some(name) = &args.name {
            if !valid_tunnel_name(name) {
                bail!("--name {name:?}: a tunnel name is letters, digits, '.', '_' and '-'");
            }
            return Ok(Self::Named {
                name: name.clone(),
                hostname: checked_hostname(args.hostname.as_deref())?,
                credentials_file: args.credentials_file.clone(),
            });
        }
        if args.token_file.is_some() || token_env {
            return Ok(Self::Token {
                file: args.token_file.clone(),
                hostname: checked_hostname(args.hostname.as_deref()).context(
                    "a dashboard-managed tunnel (--token-file / TUNNEL_TOKEN) needs --hostname",
                )?,
            });
        }
        bail!(
            "choose a tunnel: --quick, --name <tunnel> --hostname <host>, or --token-file <file> \
             (or TUNNEL_TOKEN) --hostname <host>"
        )
    }

    /// The public URL, when it is known before cloudflared starts.
    fn fixed_url(&self) -> Option<String> {
        match self {
            Self::Quick => None,
            Self::Named { hostname, .. } | Self::Token { hostname, .. } => {
                Some(format!("https://{hostname}"))
            }
        }
    }
}

/// Runs `maestro tunnel` to the end (Ctrl-C or SIGTERM).
pub fn main(args: TunnelArgs) -> anyhow::Result<()> {
    crate::init_tracing(&args.config.log_level);
    refuse_disabled_auth(&args.config);
    let mode = Mode::from_args(&args)?;
    let program = find_on_path("cloudflared").ok_or_else(|| anyhow::anyhow!(INSTALL_HELP))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        tokio::spawn(crate::cancel_on_signal(shutdown.clone()));
        let config = args.config.expand_paths();
        let mut origin = Origin::find(config, &shutdown).await?;
        let result = async {
            if let Some(url) = mode.fixed_url() {
                origin.serve_as(&url).await?;
            }
            let spec = Spec::new(program, &mode, &origin)?;
            supervise(&spec, &mut origin, &args.scope, &shutdown).await
        }
        .await;
        origin.stop().await;
        result
    })
}

/// Exposing a server to the internet is only allowed with credentials required for remote
/// requests. The match is exhaustive on purpose: a new auth mode must decide here whether
/// `maestro tunnel` may run with it. (`--auth off` does not exist, so clap refuses it.)
fn refuse_disabled_auth(config: &Config) {
    match config.auth {
        // Local trust never extends to tunnel traffic (it carries proxy headers), and the
        // server is checked for that before it is exposed ([`check_gate`]).
        AuthMode::Local | AuthMode::Required => {}
    }
}

fn valid_tunnel_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A DNS hostname, lowercase letters, digits, dots and hyphens (it goes into a YAML file, a
/// URL and the server's host allowlist).
fn checked_hostname(hostname: Option<&str>) -> anyhow::Result<String> {
    let Some(host) = hostname else {
        bail!("--hostname is required");
    };
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.contains('.')
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        bail!("--hostname {host:?} is not a DNS hostname such as maestro.example.com");
    }
    Ok(host)
}

/// The first executable file named `name` in `PATH`.
fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

// ---------------------------------------------------------------------------------------------
// The server behind the tunnel.

/// The Maestro server the tunnel points at: one already running, or one this process runs.
struct Origin {
    /// `http://127.0.0.1:<port>`: how cloudflared and this command reach it.
    local_url: String,
    http: reqwest::Client,
    inner: OriginKind,
}

enum OriginKind {
    Attached,
    InProcess {
        /// Boxed: a `Config` is large, and `Attached` is empty.
        config: Box<Config>,
        addr: SocketAddr,
        /// Bound at start, so the port is ours before cloudflared points at it.
        listener: Option<TcpListener>,
        running: Option<Running>,
        shutdown: CancellationToken,
    },
}

struct Running {
    external_url: String,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Origin {
    /// Attaches to the server answering `/health` on the configured port, or binds that port
    /// for a server of our own (started by [`Origin::serve_as`]).
    async fn find(config: Config, shutdown: &CancellationToken) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let ip = match config.host {
            ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            ip => ip,
        };
        let addr = SocketAddr::new(ip, config.port);
        if config.port != 0 {
            let url = format!("http://{addr}");
            let health = http
                .get(format!("{url}/health"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                check_identity(&url).await?;
                println!("Using the Maestro server already running at {url}.");
                return Ok(Self {
                    local_url: url,
                    http,
                    inner: OriginKind::Attached,
                });
            }
        }
        let listener = TcpListener::bind((config.host, config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        let addr = SocketAddr::new(ip, listener.local_addr()?.port());
        Ok(Self {
            local_url: format!("http://{addr}"),
            http,
            inner: OriginKind::InProcess {
                config: Box::new(config),
                addr,
                listener: Some(listener),
                running: None,
                shutdown: shutdown.clone(),
            },
        })
    }

    /// Makes sure a server answers for `external_url`: starts ours with it (restarting it when
    /// the URL changed), then checks that it refuses proxied requests without a credential.
    async fn serve_as(&mut self, external_url: &str) -> anyhow::Result<()> {
        let OriginKind::InProcess {
            config,
            addr,
            listener,
            running,
            shutdown,
        } = &mut self.inner
        else {
            // Nothing is announced for a server that would let the tunnel's traffic in.
            check_gate(&self.http, &self.local_url).await?;
            self.announce_public_url(external_url).await;
            warn_if_host_refused(&self.http, &self.local_url, external_url).await;
            return Ok(());
        };
        if running
            .as_ref()
            .is_some_and(|r| r.external_url == external_url)
        {
            return Ok(());
        }
        if let Some(old) = running.take() {
            println!("Restarting the server for the new public URL.");
            stop_server(old).await;
        }
        let listener = match listener.take() {
            Some(l) => l,
            None => TcpListener::bind(*addr)
                .await
                .with_context(|| format!("cannot listen on {addr} again"))?,
        };
        let mut config = Config::clone(config);
        if let Some(previous) = config
            .external_url
            .as_deref()
            .filter(|u| *u != external_url)
        {
            tracing::warn!(%previous, tunnel = external_url, "EXTERNAL_URL replaced by the tunnel's URL");
        }
        config.external_url = Some(external_url.to_owned());
        let stop = shutdown.child_token();
        let task = tokio::spawn(maestro_server::run(config, listener, stop.clone()));
        let mut started = Running {
            external_url: external_url.to_owned(),
            stop,
            task,
        };
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if started.task.is_finished() {
                let result = (&mut started.task).await;
                return Err(match result {
                    Ok(Err(e)) => e.context("the server stopped at start"),
                    Ok(Ok(())) => anyhow::anyhow!("the server stopped at start"),
                    Err(e) => anyhow::anyhow!("the server panicked at start: {e}"),
                });
            }
            let health = self.http.get(format!("{}/health", self.local_url)).send();
            if health.await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if Instant::now() > deadline {
                stop_server(started).await;
                bail!("the server did not answer /health within {SERVER_START_TIMEOUT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        *running = Some(started);
        check_gate(&self.http, &self.local_url).await
    }

    /// Resolves when an in-process server ends on its own, with why; never for an attached one.
    async fn stopped(&mut self) -> anyhow::Error {
        let OriginKind::InProcess {
            running: Some(running),
            ..
        } = &mut self.inner
        else {
            return std::future::pending().await;
        };
        let result = (&mut running.task).await;
        self.inner_running_take();
        match result {
            Ok(Ok(())) => anyhow::anyhow!("the server stopped"),
            Ok(Err(e)) => e.context("the server stopped"),
            Err(e) => anyhow::anyhow!("the server panicked: {e}"),
        }
    }

    /// Forgets a server task that has ended (so [`Origin::stop`] does not await it again).
    fn inner_running_take(&mut self) {
        if let OriginKind::InProcess { running, .. } = &mut self.inner {
            running.take();
        }
    }

    async fn stop(&mut self) {
        if let OriginKind::InProcess { running, .. } = &mut self.inner
            && let Some(r) = running.take()
        {
            stop_server(r).await;
        }
        if matches!(self.inner, OriginKind::Attached) {
            let mut request = self
                .http
                .delete(format!("{}/api/auth/public-url", self.local_url));
            if let Some(token) = self.credential() {
                request = request.bearer_auth(token);
            }
            if let Err(e) = request.send().await {
                tracing::debug!(error = %e, "cannot tell the server the tunnel stopped");
            }
        }
    }

    /// Tells an attached server the tunnel's URL, so it answers that host and origin and
    /// points pairing links at it (`PUT /api/auth/public-url`); a server too old for that is
    /// left as it is (the host check below then warns).
    async fn announce_public_url(&self, public_url: &str) {
        let mut request = self
            .http
            .put(format!("{}/api/auth/public-url", self.local_url))
            .json(&serde_json::json!({ "url": public_url }));
        if let Some(token) = self.credential() {
            request = request.bearer_auth(token);
        }
        match request.send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(url = public_url, "told the running server its public URL")
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), "the running server did not take the tunnel's URL")
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell the running server the tunnel's URL"),
        }
    }

    /// The credential for our own requests, needed when the server runs with `AUTH=required`:
    /// `MAESTRO_TOKEN`, or the owner token the server writes in its `DATA_DIR` for this
    /// machine's user.
    fn credential(&self) -> Option<String> {
        let data_dir = match &self.inner {
            OriginKind::InProcess { config, .. } => config.data_dir.clone(),
            OriginKind::Attached => data_dir_from_env(),
        };
        std::env::var("MAESTRO_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .or_else(|| std::fs::read_to_string(data_dir.join("owner-token")).ok())
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
    }

    /// A single-use pairing code from the server, its URL on `public_url`.
    async fn pairing(&self, public_url: &str, scope: &str) -> anyhow::Result<PairingCreated> {
        let mut request = self
            .http
            .post(format!("{}/api/auth/pairings", self.local_url))
            .json(&serde_json::json!({ "scope": scope }));
        if let Some(token) = self.credential() {
            request = request.bearer_auth(token);
        }
        let response = request.send().await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("POST /api/auth/pairings answered {status}: {body}");
        }
        let mut created: PairingCreated = response.json().await?;
        // The server builds its URL from its own EXTERNAL_URL, which an attached server may
        // not have; the code is what matters.
        created.url = format!("{public_url}/pair#c={}", created.code);
        Ok(created)
    }
}

async fn stop_server(running: Running) {
    running.stop.cancel();
    // The server bounds its own shutdown by SHUTDOWN_GRACE_SECS; this is a backstop.
    match tokio::time::timeout(Duration::from_secs(60), running.task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(error = %format!("{e:#}"), "the server stopped with an error")
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "the server task failed"),
        Err(_) => tracing::warn!("the server did not stop in time"),
    }
}

/// Before the owner token in `DATA_DIR` is sent to the server found at `url`, that server
/// proves it wrote it (see `POST /api/auth/identity`); something else on the port is refused.
/// `MAESTRO_TOKEN`, when set, is what is sent instead, and needs no such proof.
async fn check_identity(url: &str) -> anyhow::Result<()> {
    if std::env::var("MAESTRO_TOKEN").is_ok_and(|t| !t.trim().is_empty()) {
        return Ok(());
    }
    let file = data_dir_from_env().join("owner-token");
    let Some(token) = std::fs::read_to_string(&file)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
    else {
        return Ok(());
    };
    let client = maestro_client::Client::new(url)?;
    if client.proves_owner_token(&token).await {
        return Ok(());
    }
    bail!(
        "the server at {url} cannot prove it is the one whose owner token is in {}: refusing to \
         send it that token or expose it (is another program on the port, or a server with \
         another DATA_DIR? set DATA_DIR or MAESTRO_TOKEN)",
        file.display()
    )
}

/// Refuses to expose a server that answers a proxied request without a credential: that is
/// what every request through the tunnel looks like (an older maestro, or a future setting
/// that disables credentials).
async fn check_gate(http: &reqwest::Client, local_url: &str) -> anyhow::Result<()> {
    let response = http
        .get(format!("{local_url}/api/projects"))
        .header("cf-connecting-ip", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .context("checking that the server requires credentials")?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Ok(());
    }
    bail!(
        "refusing to expose {local_url}: it answered a proxied request without a credential \
         with {status}, so anyone with the tunnel's URL could use it (is it an older maestro?)"
    )
}

/// An attached server only answers hosts it knows; say so when the tunnel's is not one.
async fn warn_if_host_refused(http: &reqwest::Client, local_url: &str, public_url: &str) {
    let host = public_url.trim_start_matches("https://");
    let answer = http
        .get(format!("{local_url}/health"))
        .header("host", host)
        .send()
        .await;
    if answer.is_ok_and(|r| r.status() == reqwest::StatusCode::MISDIRECTED_REQUEST) {
        println!(
            "Warning: the running server does not accept the host {host}; start it with \
             EXTERNAL_URL={public_url}, or stop it and let `maestro tunnel` start one."
        );
    }
}

// ---------------------------------------------------------------------------------------------
// cloudflared.

/// How to start cloudflared (everything but the metrics port, new for each start).
struct Spec {
    program: PathBuf,
    mode: Mode,
    origin_url: String,
    /// The config file of a named tunnel.
    config_file: Option<PathBuf>,
}

impl Spec {
    fn new(program: PathBuf, mode: &Mode, origin: &Origin) -> anyhow::Result<Self> {
        let config_file = match mode {
            Mode::Named {
                name,
                hostname,
                credentials_file,
            } => {
                let data_dir = match &origin.inner {
                    OriginKind::InProcess { config, .. } => config.data_dir.clone(),
                    OriginKind::Attached => data_dir_from_env(),
                };
                let path = data_dir.join("tunnel").join(format!("{name}.yml"));
                let yaml = named_tunnel_config(
                    name,
                    hostname,
                    credentials_file.as_deref(),
                    &origin.local_url,
                );
                files::create_private_dir(path.parent().expect("a parent"))?;
                files::write_atomic(&path, yaml.as_bytes(), files::PRIVATE_FILE)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("Wrote the tunnel's configuration to {}.", path.display());
                Some(path)
            }
            _ => None,
        };
        Ok(Self {
            program,
            mode: mode.clone(),
            origin_url: origin.local_url.clone(),
            config_file,
        })
    }

    fn args(&self, metrics: SocketAddr) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["tunnel".into(), "--no-autoupdate".into()];
        args.extend(["--metrics".into(), metrics.to_string().into()]);
        match &self.mode {
            Mode::Quick => args.extend(["--url".into(), self.origin_url.clone().into()]),
            Mode::Named { name, .. } => {
                let config = self
                    .config_file
                    .clone()
                    .expect("written for a named tunnel");
                args.extend(["--config".into(), config.into(), "run".into(), name.into()]);
            }
            Mode::Token { file, .. } => {
                args.push("run".into());
                if let Some(file) = file {
                    args.extend(["--token-file".into(), file.clone().into()]);
                }
                // Otherwise cloudflared reads TUNNEL_TOKEN from the environment it inherits.
            }
        }
        args
    }
}

/// The DATA_DIR an attached server most likely uses, for the named tunnel's config file.
fn data_dir_from_env() -> PathBuf {
    let dir = std::env::var_os("DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("~/.maestro/data"));
    match (dir.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => dir,
    }
}

/// The ingress config of a named tunnel: the hostname to the local server, with settings
/// suited to long-lived WebSockets, then the catch-all 404 cloudflared requires. Values are
/// written as JSON strings, which YAML reads as the same strings.
fn named_tunnel_config(
    name: &str,
    hostname: &str,
    credentials_file: Option<&Path>,
    origin_url: &str,
) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("a string");
    let mut yaml =
        String::from("# Written by `maestro tunnel` at every start; edits are overwritten.\n");
    yaml += &format!("tunnel: {}\n", q(name));
    if let Some(file) = credentials_file {
        yaml += &format!("credentials-file: {}\n", q(&file.to_string_lossy()));
    }
    yaml += &format!(
        "ingress:\n  - hostname: {}\n    service: {}\n    originRequest:\n      \
         connectTimeout: 10s\n      tcpKeepAlive: 30s\n      keepAliveTimeout: 90s\n      \
         keepAliveConnections: 100\n      noHappyEyeballs: true\n  - service: http_status:404\n",
        q(hostname),
        q(origin_url)
    );
    yaml
}

/// Why one run of cloudflared ended.
enum Ended {
    Shutdown,
    /// It exited or never became ready: restart it.
    Failed(String),
}

/// Starts cloudflared, restarts it with backoff when it ends, until `shutdown`.
async fn supervise(
    spec: &Spec,
    origin: &mut Origin,
    scope: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut backoff = INITIAL_BACKOFF;
    loop {
        let started = Instant::now();
        let why = match run_cloudflared(spec, origin, scope, shutdown).await? {
            Ended::Shutdown => return Ok(()),
            Ended::Failed(why) => why,
        };
        if started.elapsed() >= BACKOFF_RESET_AFTER {
            backoff = INITIAL_BACKOFF;
        }
        eprintln!("maestro: cloudflared {why}; starting it again in {backoff:?}");
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One cloudflared process, from start to exit. Errors are fatal (the server cannot start,
/// or would be exposed without credentials); cloudflared's own failures are [`Ended::Failed`].
async fn run_cloudflared(
    spec: &Spec,
    origin: &mut Origin,
    scope: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Ended> {
    let metrics = free_loopback_port()?;
    let mut child = Command::new(&spec.program)
        .args(spec.args(metrics))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", spec.program.display()))?;
    let (url_tx, url_rx) = watch::channel(None);
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_log(BufReader::new(stderr), Some(url_tx)));
    }
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_log(BufReader::new(stdout), None));
    }
    let metrics_url = format!("http://{metrics}");
    let setup = async {
        let url = match spec.mode.fixed_url() {
            Some(url) => url,
            None => quick_url(&origin.http, &metrics_url, url_rx).await?,
        };
        wait_ready(&origin.http, &metrics_url).await?;
        Ok::<_, String>(url)
    };
    let url = tokio::select! {
        url = setup => url,
        status = child.wait() => return Ok(Ended::Failed(exited(status))),
        _ = shutdown.cancelled() => {
            stop_child(&mut child).await;
            return Ok(Ended::Shutdown);
        }
    };
    let url = match url {
        Ok(url) => url,
        Err(why) => {
            stop_child(&mut child).await;
            return Ok(Ended::Failed(why));
        }
    };
    if let Err(e) = origin.serve_as(&url).await {
        stop_child(&mut child).await;
        return Err(e);
    }
    announce(origin, &url, &spec.mode, scope).await;
    tokio::select! {
        status = child.wait() => Ok(Ended::Failed(exited(status))),
        _ = shutdown.cancelled() => {
            stop_child(&mut child).await;
            Ok(Ended::Shutdown)
        }
        stopped = origin.stopped() => {
            // Our server is gone (it failed): a tunnel to nothing is no use.
            stop_child(&mut child).await;
            if shutdown.is_cancelled() {
                return Ok(Ended::Shutdown);
            }
            Err(stopped)
        }
    }
}

fn exited(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => format!("exited ({s})"),
        Err(e) => format!("could not be waited for: {e}"),
    }
}

/// SIGTERM, then SIGKILL if it has not exited within [`STOP_TIMEOUT`].
async fn stop_child(child: &mut Child) {
    if let Some(pid) = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32))
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        if tokio::time::timeout(STOP_TIMEOUT, child.wait())
            .await
            .is_ok()
        {
            return;
        }
        tracing::warn!("cloudflared did not stop after SIGTERM; killing it");
    }
    let _ = child.kill().await;
}

fn free_loopback_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?)
}

/// Forwards cloudflared's log lines to our log (errors and warnings as warnings, the rest at
/// debug), and reports the first `https://….trycloudflare.com` it sees.
async fn forward_log<R: tokio::io::AsyncRead + Unpin>(
    reader: BufReader<R>,
    url_tx: Option<watch::Sender<Option<String>>>,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains(" ERR ") || line.contains(" WRN ") {
            tracing::warn!(target: "cloudflared", "{line}");
        } else {
            tracing::debug!(target: "cloudflared", "{line}");
        }
        if let (Some(tx), Some(url)) = (&url_tx, quick_url_in(&line)) {
            tx.send_if_modified(|seen| {
                let first = seen.is_none();
                if first {
                    *seen = Some(url);
                }
                first
            });
        }
    }
}

/// The quick tunnel URL in a log line, if any.
fn quick_url_in(line: &str) -> Option<String> {
    let start = line.find("https://")?;
    let rest = &line[start + "https://".len()..];
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
        .unwrap_or(rest.len());
    let host = &rest[..end];
    (host.ends_with(".trycloudflare.com") && host.len() > ".trycloudflare.com".len())
        .then(|| format!("https://{host}"))
}

/// A quick tunnel's URL: from the metrics port's `/quicktunnel`, or else its log line.
async fn quick_url(
    http: &reqwest::Client,
    metrics_url: &str,
    from_log: watch::Receiver<Option<String>>,
) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct QuickTunnel {
        hostname: String,
    }
    let deadline = Instant::now() + URL_TIMEOUT;
    loop {
        let answer = http.get(format!("{metrics_url}/quicktunnel")).send().await;
        if let Ok(r) = answer
            && r.status().is_success()
            && let Ok(q) = r.json::<QuickTunnel>().await
            && !q.hostname.is_empty()
        {
            return Ok(format!("https://{}", q.hostname));
        }
        if let Some(url) = from_log.borrow().clone() {
            return Ok(url);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "announced no quick tunnel URL within {URL_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for the metrics port's `/ready` to answer 200 (connected to Cloudflare's edge).
async fn wait_ready(http: &reqwest::Client, metrics_url: &str) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let answer = http.get(format!("{metrics_url}/ready")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("was not ready within {READY_TIMEOUT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Prints the public URL and a pairing (URL, short code and QR code).
async fn announce(origin: &Origin, url: &str, mode: &Mode, scope: &str) {
    println!();
    println!("Maestro is reachable at {url}");
    if matches!(mode, Mode::Quick) {
        println!(
            "A quick tunnel's hostname changes every time it starts: after a restart, pair the \
             phone again."
        );
    }
    match origin.pairing(url, scope).await {
        Ok(pairing) => {
            println!();
            print_pairing(&pairing);
            println!();
            println!("Make another code with `maestro pair`. Ctrl-C stops the tunnel.");
        }
        Err(e) => println!(
            "Could not make a pairing code ({e:#}); run `maestro pair` once the server is ready."
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_url_is_found_in_cloudflareds_box() {
        let line = "2026-12-06T20:41:13Z INF |  https://fabric-quartz-island-pepper.trycloudflare.com                                     |";
        assert_eq!(
            quick_url_in(line).as_deref(),
            Some("https://fabric-quartz-island-pepper.trycloudflare.com")
        );
        assert_eq!(
            quick_url_in("INF Requesting new quick Tunnel on trycloudflare.com..."),
            None
        );
        assert_eq!(
            quick_url_in("see https://developers.cloudflare.com/cloudflare-one"),
            None
        );
        assert_eq!(quick_url_in("https://.trycloudflare.com"), None);
    }

    #[test]
    fn hostnames_and_names_are_checked_before_they_reach_yaml() {
        assert_eq!(
            checked_hostname(Some("Maestro.Example.com.")).unwrap(),
            "maestro.example.com"
        );
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.example.com",
            "a.example.com\ningress: x",
            "a b.com",
            "a.example.com:443",
        ] {
            assert!(checked_hostname(Some(bad)).is_err(), "{bad:?}");
        }
        assert!(valid_tunnel_name("maestro-laptop_1.2"));
        assert!(!valid_tunnel_name("a\"b"));
        assert!(!valid_tunnel_name(""));
    }

    #[test]
    fn the_named_tunnel_config_routes_the_hostname_then_404s() {
        let yaml = named_tunnel_config(
            "maestro",
            "maestro.example.com",
            Some(Path::new("/home/me/.cloudflared/abc.json")),
            "http://127.0.0.1:3000",
        );
        let docs = yaml_rust2::YamlLoader::load_from_str(&yaml).unwrap();
        let doc = &docs[0];
        assert_eq!(doc["tunnel"].as_str(), Some("maestro"));
        assert_eq!(
            doc["credentials-file"].as_str(),
            Some("/home/me/.cloudflared/abc.json")
        );
        let ingress = doc["ingress"].as_vec().unwrap();
        assert_eq!(ingress.len(), 2);
        assert_eq!(ingress[0]["hostname"].as_str(), Some("maestro.example.com"));
        assert_eq!(
            ingress[0]["service"].as_str(),
            Some("http://127.0.0.1:3000")
        );
        assert_eq!(
            ingress[0]["originRequest"]["keepAliveTimeout"].as_str(),
            Some("90s")
        );
        assert!(ingress[1]["hostname"].is_badvalue());
        assert_eq!(ingress[1]["service"].as_str(), Some("http_status:404"));
    }

    #[test]
    fn a_token_never_goes_on_the_command_line() {
        let spec = Spec {
            program: "cloudflared".into(),
            mode: Mode::Token {
                file: Some("/run/secrets/tunnel-token".into()),
                hostname: "m.example.com".into(),
            },
            origin_url: "http://127.0.0.1:3000".into(),
            config_file: None,
        };
        let args = spec.args("127.0.0.1:20241".parse().unwrap());
        assert_eq!(
            args,
            [
                "tunnel",
                "--no-autoupdate",
                "--metrics",
                "127.0.0.1:20241",
                "run",
                "--token-file",
                "/run/secrets/tunnel-token"
            ]
            .map(OsString::from)
        );
    }
}
