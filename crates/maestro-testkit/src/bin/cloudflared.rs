//! A fake `cloudflared` for tests: the real one cannot be installed on these machines and
//! needs Cloudflare's network, so tunnel tests put this one first on `PATH` instead.
//!
//! It behaves like the real one at the process boundary, for what `maestro tunnel` uses:
//! - `cloudflared tunnel --no-autoupdate --url http://127.0.0.1:<port> --metrics <addr>` runs a
//!   quick tunnel: it logs to stderr like cloudflared (INF lines, the box announcing
//!   `https://<words>.trycloudflare.com`, `Registered tunnel connection`) and serves, on the
//!   metrics address, `GET /ready` (503 until the edge is up, then 200
//!   `{"status":200,"readyConnections":1,…}`), `GET /quicktunnel` (`{"hostname":"…"}`) and
//!   `GET /metrics`.
//! - `cloudflared tunnel --no-autoupdate --config <file> run [<name>]` runs a named tunnel from
//!   the config's `tunnel`, `credentials-file` and `ingress` (the service of the first rule is
//!   the origin; the last rule must be a catch-all, as cloudflared requires).
//! - `cloudflared tunnel --no-autoupdate run --token-file <f>` (or `--token`, or `TUNNEL_TOKEN`)
//!   runs a dashboard-managed tunnel; the origin comes from `--url`, from `--config`'s ingress,
//!   or from `FAKE_CLOUDFLARED_ORIGIN`, which stands in for the ingress set in the dashboard.
//! - What cloudflared rejects is rejected with an `ERR` line and exit status 1: an unknown flag,
//!   a missing config or credentials file, no tunnel name or token, an ingress without a
//!   catch-all. Commands it does not fake (`tunnel create`, `login`, …) fail the same way.
//!
//! The "edge" is a plain-HTTP listener on a free loopback port standing in for
//! `https://<hostname>`. It really proxies HTTP/1.1 (keep-alive, any method, bodies) and
//! WebSocket upgrades to the origin, adding what Cloudflare's edge adds: `Host` set to the
//! public hostname, `Cf-Connecting-Ip`, `Cf-Ray`, `X-Forwarded-For`, `X-Forwarded-Proto: https`
//! and `Cf-Visitor: {"scheme":"https"}`.
//!
//! Environment, for tests:
//! - `FAKE_CLOUDFLARED_EDGE_FILE`: where to write `http://127.0.0.1:<edge port>` once the edge
//!   listens (tests cannot resolve `trycloudflare.com`). Written atomically.
//! - `FAKE_CLOUDFLARED_PID_FILE`: where to write this process's id, so a test can kill it.
//! - `FAKE_CLOUDFLARED_ARGV_FILE`: where to write the command line, one argument per line.
//! - `FAKE_CLOUDFLARED_CLIENT_IP`: the visitor's address in `Cf-Connecting-Ip` and
//!   `X-Forwarded-For` (default `203.0.113.7`).
//! - `FAKE_CLOUDFLARED_ACCESS_JWT`: if set, sent as `Cf-Access-Jwt-Assertion`, as Cloudflare
//!   Access does.
//! - `FAKE_CLOUDFLARED_HOSTNAME`: the public hostname of a named or token tunnel when the
//!   config does not name one.
//! - `FAKE_CLOUDFLARED_READY_DELAY_MS`: how long "connecting to the edge" takes (default 200),
//!   so clients have to wait for `/ready` as they must with the real one.
//! - `FAKE_CLOUDFLARED_DIE_AFTER_MS`: exit with status 1 after that long (tests restarts).
//!
//! SIGTERM and SIGINT stop it with status 0.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const VERSION: &str = "2025.8.1 (fake, for tests)";

type Body = Either<Incoming, Full<Bytes>>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(path) = env("FAKE_CLOUDFLARED_ARGV_FILE") {
        write_atomically(Path::new(&path), &(args.join("\n") + "\n"));
    }
    let command = match parse(&args[1..]) {
        Ok(command) => command,
        Err(message) => fail(&message),
    };
    let tunnel = match command {
        Parsed::Version => {
            println!("cloudflared version {VERSION}");
            return;
        }
        Parsed::Tunnel(t) => t,
    };
    let plan = match plan(tunnel) {
        Ok(plan) => plan,
        Err(message) => fail(&message),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    std::process::exit(runtime.block_on(run(plan)));
}

fn fail(message: &str) -> ! {
    log("ERR", message);
    std::process::exit(1);
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Command line, as cloudflared's (urfave/cli) parser reads it.

enum Parsed {
    Version,
    Tunnel(TunnelArgs),
}

#[derive(Default)]
struct TunnelArgs {
    flags: HashMap<&'static str, String>,
    /// `run` was given.
    run: bool,
    /// The positional tunnel name or id after `run`.
    name: Option<String>,
}

/// Flags taking a value, and boolean flags, that this fake knows.
const VALUE_FLAGS: &[&str] = &[
    "url",
    "metrics",
    "config",
    "token",
    "token-file",
    "credentials-file",
    "loglevel",
    "logfile",
    "protocol",
    "edge-ip-version",
    "grace-period",
    "origincert",
];
const BOOL_FLAGS: &[&str] = &["no-autoupdate", "no-tls-verify"];

fn parse(args: &[String]) -> Result<Parsed, String> {
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("--version" | "-v" | "version") => return Ok(Parsed::Version),
        Some("tunnel") => {}
        Some(other) if other.starts_with('-') => {
            return Err(format!(
                "Incorrect Usage: flag provided but not defined: {other}"
            ));
        }
        Some(other) => return Err(format!("the fake cloudflared does not implement `{other}`")),
        None => return Err("the fake cloudflared needs a command (`tunnel`)".into()),
    }
    let mut parsed = TunnelArgs::default();
    while let Some(arg) = it.next() {
        if let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            if let Some(known) = BOOL_FLAGS.iter().find(|f| **f == name) {
                parsed
                    .flags
                    .insert(known, inline.unwrap_or_else(|| "true".into()));
            } else if let Some(known) = VALUE_FLAGS.iter().find(|f| **f == name) {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().cloned().ok_or_else(|| {
                        format!("Incorrect Usage: flag needs an argument: -{name}")
                    })?,
                };
                parsed.flags.insert(known, value);
            } else {
                return Err(format!(
                    "Incorrect Usage: flag provided but not defined: -{name}"
                ));
            }
        } else if !parsed.run && arg == "run" {
            parsed.run = true;
        } else if parsed.run && parsed.name.is_none() {
            parsed.name = Some(arg.clone());
        } else {
            return Err(format!(
                "the fake cloudflared does not implement `tunnel {arg}`"
            ));
        }
    }
    Ok(Parsed::Tunnel(parsed))
}

// ---------------------------------------------------------------------------------------------
// What to run.

enum Kind {
    Quick,
    Named { name: String },
    Token,
}

struct Plan {
    kind: Kind,
    /// `host:port` of the origin, from an `http://` service URL.
    origin: String,
    /// The public hostname requests arrive for.
    hostname: String,
    metrics: String,
}

/// The first ingress rule's hostname and service, after the checks cloudflared makes.
struct Config {
    tunnel: Option<String>,
    credentials_file: Option<String>,
    first: Option<(Option<String>, String)>,
}

fn read_config(path: &str) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("Cannot read configuration file error=\"open {path}: {e}\""))?;
    let docs = yaml_rust2::YamlLoader::load_from_str(&text)
        .map_err(|e| format!("Cannot parse configuration file {path} error=\"{e}\""))?;
    let doc = docs.first().cloned().unwrap_or(yaml_rust2::Yaml::Null);
    let string = |y: &yaml_rust2::Yaml| y.as_str().map(str::to_owned);
    let mut rules = Vec::new();
    if let Some(list) = doc["ingress"].as_vec() {
        for rule in list {
            let service = string(&rule["service"])
                .ok_or("Couldn't start tunnel error=\"an ingress rule has no service\"")?;
            rules.push((string(&rule["hostname"]), service, string(&rule["path"])));
        }
    }
    if let Some((hostname, _, path)) = rules.last()
        && (hostname.is_some() || path.is_some())
    {
        return Err(
            "Couldn't start tunnel error=\"The last ingress rule must match all URLs \
                    (i.e. it should not have a hostname or path filter)\""
                .into(),
        );
    }
    Ok(Config {
        tunnel: string(&doc["tunnel"]),
        credentials_file: string(&doc["credentials-file"]),
        first: rules.into_iter().next().map(|(h, s, _)| (h, s)),
    })
}

fn plan(args: TunnelArgs) -> Result<Plan, String> {
    let flag = |name: &str| args.flags.get(name).cloned();
    let config = flag("config").map(|p| read_config(&p)).transpose()?;
    let metrics = flag("metrics").unwrap_or_else(|| "127.0.0.1:0".into());
    let token = match flag("token-file") {
        Some(path) => Some(
            std::fs::read_to_string(&path)
                .map_err(|e| format!("Failed to read token file {path} error=\"{e}\""))?,
        ),
        None => flag("token").or_else(|| env("TUNNEL_TOKEN")),
    }
    .map(|t| t.trim().to_owned());
    let from_config = config.as_ref().and_then(|c| c.first.clone());
    let configured_host = from_config.as_ref().and_then(|(h, _)| h.clone());
    let public_host = || {
        configured_host
            .clone()
            .or_else(|| env("FAKE_CLOUDFLARED_HOSTNAME"))
            .unwrap_or_else(|| "fake-tunnel.example.com".into())
    };

    let (kind, service, hostname) = if !args.run {
        let Some(url) = flag("url") else {
            return Err("the fake cloudflared runs a quick tunnel (--url) or `tunnel run`".into());
        };
        if config.is_some() {
            return Err("a quick tunnel cannot be run with --config".into());
        }
        (
            Kind::Quick,
            url,
            format!("{}.trycloudflare.com", random_words()),
        )
    } else if let Some(token) = token {
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err("Provided Tunnel token is not valid.".into());
        }
        let service = flag("url")
            .or_else(|| from_config.as_ref().map(|(_, s)| s.clone()))
            .or_else(|| env("FAKE_CLOUDFLARED_ORIGIN"))
            .ok_or(
                "the fake cloudflared cannot fetch a dashboard's ingress: give --url, \
                    --config, or FAKE_CLOUDFLARED_ORIGIN",
            )?;
        (Kind::Token, service, public_host())
    } else {
        let name = args
            .name
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.tunnel.clone()))
            .ok_or(
                "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the \
                 last command line argument or in the configuration file.",
            )?;
        let credentials = flag("credentials-file")
            .or_else(|| config.as_ref().and_then(|c| c.credentials_file.clone()))
            .unwrap_or_else(|| {
                let home = std::env::var("HOME").unwrap_or_default();
                format!("{home}/.cloudflared/{name}.json")
            });
        if !Path::new(&credentials).is_file() {
            return Err(format!(
                "Tunnel credentials file '{credentials}' doesn't exist or is not a file"
            ));
        }
        let service = flag("url")
            .or_else(|| from_config.as_ref().map(|(_, s)| s.clone()))
            .ok_or("No ingress rules were defined in provided config (if any) nor from the cli")?;
        (Kind::Named { name }, service, public_host())
    };
    let origin = service
        .strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/').to_owned())
        .ok_or_else(|| {
            format!("the fake cloudflared proxies only http:// origins, not {service}")
        })?;
    Ok(Plan {
        kind,
        origin,
        hostname,
        metrics,
    })
}

// ---------------------------------------------------------------------------------------------
// Running.

/// What the edge and the metrics server share.
struct Edge {
    origin: String,
    hostname: String,
    client_ip: HeaderValue,
    access_jwt: Option<HeaderValue>,
    ready: AtomicBool,
    requests: AtomicU64,
    connector: String,
}

async fn run(plan: Plan) -> i32 {
    log("INF", &format!("Version {VERSION}"));
    let edge = Arc::new(Edge {
        origin: plan.origin.clone(),
        hostname: plan.hostname.clone(),
        client_ip: HeaderValue::from_str(
            &env("FAKE_CLOUDFLARED_CLIENT_IP").unwrap_or_else(|| "203.0.113.7".into()),
        )
        .expect("FAKE_CLOUDFLARED_CLIENT_IP is a header value"),
        access_jwt: env("FAKE_CLOUDFLARED_ACCESS_JWT")
            .map(|v| HeaderValue::from_str(&v).expect("FAKE_CLOUDFLARED_ACCESS_JWT")),
        ready: AtomicBool::new(false),
        requests: AtomicU64::new(0),
        connector: uuid_like(),
    });
    if let Some(path) = env("FAKE_CLOUDFLARED_PID_FILE") {
        write_atomically(Path::new(&path), &std::process::id().to_string());
    }
    match &plan.kind {
        Kind::Quick => {
            log(
                "INF",
                "Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, \
                 is a quick way to experiment and try it out. However, be aware that these \
                 account-less Tunnels have no uptime guarantee, are subject to the Cloudflare \
                 Online Services Terms of Use (https://www.cloudflare.com/website-terms/), and \
                 Cloudflare reserves the right to investigate your use of Tunnels for violations \
                 of such terms. If you intend to use Tunnels in production you should use a \
                 pre-created named tunnel by following: \
                 https://developers.cloudflare.com/cloudflare-one/connections/connect-apps",
            );
            log("INF", "Requesting new quick Tunnel on trycloudflare.com...");
            let line = format!("https://{}", plan.hostname);
            let width = 92;
            log("INF", &format!("+{}+", "-".repeat(width)));
            log(
                "INF",
                &format!(
                    "|{:<width$}|",
                    "  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):"
                ),
            );
            log("INF", &format!("|  {line:<w$}|", w = width - 2));
            log("INF", &format!("+{}+", "-".repeat(width)));
        }
        Kind::Named { name } => log("INF", &format!("Starting tunnel tunnelID={name}")),
        Kind::Token => log("INF", "Starting tunnel from a token"),
    }
    log(
        "INF",
        &format!(
            "Settings: map[no-autoupdate:true url:http://{}]",
            plan.origin
        ),
    );

    let metrics = match TcpListener::bind(&plan.metrics).await {
        Ok(l) => l,
        Err(e) => {
            log(
                "ERR",
                &format!(
                    "failed to bind the metrics server on {} error=\"{e}\"",
                    plan.metrics
                ),
            );
            return 1;
        }
    };
    let metrics_addr = metrics.local_addr().expect("metrics address");
    log(
        "INF",
        &format!("Starting metrics server on {metrics_addr}/metrics"),
    );
    tokio::spawn(serve(metrics, edge.clone(), Role::Metrics));

    let delay = env("FAKE_CLOUDFLARED_READY_DELAY_MS")
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let connect = {
        let edge = edge.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            edge.ready.store(true, Ordering::SeqCst);
            if let Some(path) = env("FAKE_CLOUDFLARED_EDGE_FILE") {
                write_atomically(Path::new(&path), &format!("http://{addr}"));
            }
            log(
                "INF",
                &format!(
                    "Registered tunnel connection connIndex=0 connection={} event=0 \
                     ip=198.41.192.107 location=ams08 protocol=quic edge=http://{addr}",
                    edge.connector
                ),
            );
            serve(listener, edge, Role::Edge).await;
            std::io::Result::Ok(())
        }
    };
    let die_after = env("FAKE_CLOUDFLARED_DIE_AFTER_MS").and_then(|v| v.parse::<u64>().ok());
    let die = async {
        match die_after {
            Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            None => std::future::pending().await,
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        result = connect => {
            if let Err(e) = result {
                log("ERR", &format!("edge listener failed error=\"{e}\""));
            }
            1
        }
        _ = die => {
            log("ERR", "Connection terminated error=\"FAKE_CLOUDFLARED_DIE_AFTER_MS elapsed\" connIndex=0");
            1
        }
        _ = term.recv() => {
            log("INF", "Initiating graceful shutdown due to signal terminated ...");
            0
        }
        _ = tokio::signal::ctrl_c() => {
            log("INF", "Initiating graceful shutdown due to signal interrupt ...");
            0
        }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Edge,
    Metrics,
}

async fn serve(listener: TcpListener, edge: Arc<Edge>, role: Role) {
    loop {
        let Ok((tcp, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let edge = edge.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let edge = edge.clone();
                async move {
                    Ok::<_, Infallible>(match role {
                        Role::Edge => proxy(req, &edge).await,
                        Role::Metrics => metrics(&req, &edge),
                    })
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

fn metrics(req: &Request<Incoming>, edge: &Edge) -> Response<Body> {
    let ready = edge.ready.load(Ordering::SeqCst);
    let (status, content_type, body) = match req.uri().path() {
        "/ready" => {
            let status = if ready { 200 } else { 503 };
            let body = format!(
                r#"{{"status":{status},"readyConnections":{},"connectorId":"{}"}}"#,
                u8::from(ready),
                edge.connector
            );
            (status, "application/json", body)
        }
        "/quicktunnel" => {
            let hostname = if edge.hostname.ends_with(".trycloudflare.com") {
                edge.hostname.as_str()
            } else {
                ""
            };
            (
                200,
                "application/json",
                format!(r#"{{"hostname":"{hostname}"}}"#),
            )
        }
        "/metrics" => (
            200,
            "text/plain; version=0.0.4",
            format!(
                "# TYPE cloudflared_tunnel_ha_connections gauge\n\
                 cloudflared_tunnel_ha_connections {}\n\
                 # TYPE cloudflared_tunnel_total_requests counter\n\
                 cloudflared_tunnel_total_requests {}\n",
                u8::from(ready),
                edge.requests.load(Ordering::SeqCst)
            ),
        ),
        "/healthcheck" => (200, "text/plain", "OK\n".into()),
        _ => (404, "text/plain", "404 page not found\n".into()),
    };
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Either::Right(Full::new(Bytes::from(body))))
        .expect("response")
}

/// Hop-by-hop headers a proxy does not pass on (RFC 9110 §7.6.1), but for an upgrade.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

async fn proxy(mut req: Request<Incoming>, edge: &Edge) -> Response<Body> {
    edge.requests.fetch_add(1, Ordering::SeqCst);
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .parse()
        .expect("a path is a URI");
    let headers = &mut parts.headers;
    if !upgrade {
        for name in HOP_BY_HOP {
            headers.remove(*name);
        }
    }
    let set = |headers: &mut hyper::HeaderMap, name: &'static str, value: HeaderValue| {
        headers.insert(HeaderName::from_static(name), value);
    };
    set(
        headers,
        "host",
        HeaderValue::from_str(&edge.hostname).expect("hostname"),
    );
    set(headers, "cf-connecting-ip", edge.client_ip.clone());
    set(headers, "x-forwarded-for", edge.client_ip.clone());
    set(
        headers,
        "x-forwarded-proto",
        HeaderValue::from_static("https"),
    );
    set(
        headers,
        "cf-visitor",
        HeaderValue::from_static(r#"{"scheme":"https"}"#),
    );
    set(
        headers,
        "cf-ray",
        HeaderValue::from_str(&format!("{:016x}-AMS", random_u64())).expect("ray"),
    );
    set(
        headers,
        "cf-warp-tag-id",
        HeaderValue::from_str(&edge.connector).expect("connector"),
    );
    if let Some(jwt) = &edge.access_jwt {
        set(headers, "cf-access-jwt-assertion", jwt.clone());
    } else {
        headers.remove("cf-access-jwt-assertion");
    }
    let outgoing = Request::from_parts(parts, body);

    let mut response = match forward(&edge.origin, outgoing).await {
        Ok(r) => r,
        Err(e) => {
            log(
                "ERR",
                &format!(
                    "Request failed error=\"Unable to reach the origin service. The service may \
                     be down or it may not be responding to traffic from cloudflared: {e}\" \
                     connIndex=0 dest=https://{}",
                    edge.hostname
                ),
            );
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .header(header::CONTENT_TYPE, "text/html")
                .body(Either::Right(Full::new(Bytes::from_static(
                    b"<html><body>Bad gateway: Cloudflare Tunnel error 1033</body></html>",
                ))))
                .expect("response");
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let origin_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let (Ok(client), Ok(origin)) = (client_upgrade.await, origin_upgrade.await) else {
                return;
            };
            let _ =
                tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(origin))
                    .await;
        });
    } else {
        for name in HOP_BY_HOP {
            response.headers_mut().remove(*name);
        }
    }
    response.map(Either::Left)
}

/// Sends one request to the origin on a new connection (upgrades included).
async fn forward(
    origin: &str,
    request: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(origin).await?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection.with_upgrades());
    Ok(sender.send_request(request).await?)
}

// ---------------------------------------------------------------------------------------------
// Small helpers.

/// A line as cloudflared logs it: `2025-01-01T12:00:00Z INF message`.
fn log(level: &str, message: &str) {
    eprintln!("{} {level} {message}", utc_now());
}

fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn random_u64() -> u64 {
    let mut hasher = std::hash::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.finish()
}

/// Four words, as quick tunnels' hostnames are (`seasonal-deck-organisms-sf`).
fn random_words() -> String {
    const WORDS: &[&str] = &[
        "amber", "basin", "cabin", "delta", "ember", "fabric", "garden", "harbor", "island",
        "jungle", "kernel", "lemon", "meadow", "nickel", "orbit", "pepper", "quartz", "river",
        "saddle", "timber", "umbrella", "velvet", "walnut", "yellow", "zephyr", "anchor", "bridge",
        "canyon", "dollar", "engine", "forest", "glacier",
    ];
    let mut n = random_u64();
    let mut words = Vec::new();
    for _ in 0..4 {
        words.push(WORDS[(n % WORDS.len() as u64) as usize]);
        n /= WORDS.len() as u64;
    }
    words.join("-")
}

fn uuid_like() -> String {
    let (a, b) = (random_u64(), random_u64());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0x3fff | 0x8000,
        b & 0xffff_ffff_ffff
    )
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader never sees
/// half a file.
fn write_atomically(path: &Path, contents: &str) {
    let tmp: PathBuf = path.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, contents).is_ok() {
        let _ = std::fs::rename(&tmp, path);
    }
}
