//! Server configuration: one clap struct, every field settable by flag or environment.
//!
//! Names and defaults follow upstream where upstream had the knob (`PORT`, `DATA_DIR`, …);
//! unlike upstream, `HOST` is honoured and defaults to loopback, so nothing is exposed to the
//! network unless asked.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Args;

/// Configuration of `maestro serve`.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Address to listen on. Beyond loopback, every request needs a credential (only requests
    /// from this machine are trusted without one).
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Where the database and the `server-url` discovery file live.
    #[arg(long, env = "DATA_DIR", default_value = "~/.maestro/data")]
    pub data_dir: PathBuf,

    /// The key token and pairing-code hashes are made with (HMAC), made on first start.
    /// Default `$DATA_DIR/hash-key`. Servers sharing one Redis must share this file.
    #[arg(long, env = "HASH_KEY_FILE")]
    pub hash_key_file: Option<PathBuf>,

    /// Where spawn manifests are written (`<SESSION_DIR>/<sessionId>/manifest.json`).
    #[arg(long, env = "SESSION_DIR", default_value = "~/.maestro/sessions")]
    pub session_dir: PathBuf,

    /// Directory of agent skills (`<id>/SKILL.md`).
    #[arg(long, env = "SKILLS_DIR", default_value = "~/.claude/skills")]
    pub skills_dir: PathBuf,

    /// URL agents use to reach this server; written to `$DATA_DIR/server-url`.
    /// Defaults to `http://localhost:<port>` with the port actually bound.
    #[arg(long, env = "SERVER_URL")]
    pub server_url: Option<String>,

    /// Log filter: error, warn, info, debug, trace, or a tracing directive list.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Events kept per project in the replay journal.
    #[arg(long, env = "JOURNAL_CAPACITY", default_value_t = 10_000)]
    pub journal_capacity: u64,

    /// Extra origins allowed by CORS, comma-separated (localhost origins always are).
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Public URL of this server (e.g. the tunnel's); allowed as an origin.
    #[arg(long, env = "EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Cloudflare Access team name (the `<team>` of `<team>.cloudflareaccess.com`). With
    /// `--cf-access-aud`, every non-local request must carry a valid `Cf-Access-Jwt-Assertion`
    /// signed by that team.
    #[arg(long, env = "CF_ACCESS_TEAM", requires = "cf_access_aud")]
    pub cf_access_team: Option<String>,

    /// Audience (AUD) tag of the Cloudflare Access application in front of this server.
    #[arg(long, env = "CF_ACCESS_AUD", requires = "cf_access_team")]
    pub cf_access_aud: Option<String>,

    /// Where to fetch the Access signing keys (JWKS) instead of
    /// `https://<team>.cloudflareaccess.com/cdn-cgi/access/certs`: for tests and self-hosted
    /// setups. The issuer checked stays `https://<team>.cloudflareaccess.com`.
    #[arg(long, env = "CF_ACCESS_CERTS_URL", requires = "cf_access_team")]
    pub cf_access_certs_url: Option<String>,

    /// A public URL a running `maestro tunnel` announced (`PUT /api/auth/public-url`): treated
    /// like `EXTERNAL_URL` while set. Not a setting; shared by every clone of this config.
    #[arg(skip)]
    pub tunnel_url: std::sync::Arc<std::sync::RwLock<Option<String>>>,

    /// Who needs a credential. `local`: every request that is not provably from this
    /// machine (loopback peer, local `Host`, no proxy headers, no foreign `Origin`); `required`:
    /// every request, local ones too. There is no mode without credentials for remote requests.
    #[arg(long, env = "AUTH", value_enum, default_value_t = AuthMode::Local)]
    pub auth: AuthMode,

    /// Extra `Host` names this server answers to, comma-separated (a LAN name, a reverse
    /// proxy's). Local names and `EXTERNAL_URL`'s host always are; any other gets 421.
    #[arg(long, env = "ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Most open connections at once; more wait in the listen backlog until one closes.
    /// Default: three quarters of the open-files limit (`ulimit -n`), so the database, Redis
    /// and agents' terminals keep descriptors; the value in force is logged at start.
    #[arg(long, env = "MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,

    /// Most open connections one address other than this machine may hold; more are closed
    /// at once. An eighth of `MAX_CONNECTIONS` is kept for connections from this machine
    /// (where the tunnel's traffic also comes from).
    #[arg(long, env = "MAX_CONNECTIONS_PER_ADDRESS", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections_per_address: u64,

    /// Most Socket.IO (Engine.IO) connections open at once, polling or WebSocket; a handshake
    /// beyond it gets 503.
    #[arg(long, env = "MAX_SOCKETIO_SESSIONS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_socketio_sessions: u64,

    /// Most Socket.IO connections one client address (not this machine) may hold open; more
    /// get 429. Connections without a credential also leave an eighth of
    /// `MAX_SOCKETIO_SESSIONS` to those with one.
    #[arg(long, env = "MAX_SOCKETIO_SESSIONS_PER_ADDRESS", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_socketio_sessions_per_address: u64,

    /// A client must send a request's headers within this many seconds (slow clients that
    /// trickle headers to hold connections open are cut off).
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_secs: u64,

    /// A client must send a request's whole body within this many seconds once its headers
    /// are in; a slower one gets 408 and nothing is done.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub body_read_timeout_secs: u64,

    /// How long a pairing code (`maestro pair`) works, in seconds.
    #[arg(long, env = "PAIRING_TTL_SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub pairing_ttl_secs: u64,

    /// Seconds to wait for open connections to finish at shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 5)]
    pub shutdown_grace_secs: u64,

    /// How long a session stays online after a heartbeat, in milliseconds.
    #[arg(long, env = "HEARTBEAT_TTL_MS", default_value_t = 15_000)]
    pub heartbeat_ttl_ms: u64,

    /// Extra time past the TTL before a silent session is declared dead, in milliseconds.
    #[arg(long, env = "HEARTBEAT_GRACE_MS", default_value_t = 500)]
    pub heartbeat_grace_ms: u64,

    /// A session that beats but reports no progress for this long is `stalled`, in milliseconds.
    #[arg(long, env = "STALL_AFTER_MS", default_value_t = 600_000)]
    pub stall_after_ms: u64,

    /// How often expired heartbeats and leases are looked for, in milliseconds.
    #[arg(long, env = "SWEEP_INTERVAL_MS", default_value_t = 250)]
    pub sweep_interval_ms: u64,

    /// Socket.IO clients are pinged this often, in milliseconds (socket.io's default).
    #[arg(long, env = "SOCKETIO_PING_INTERVAL_MS", default_value_t = 25_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub socketio_ping_interval_ms: u64,

    /// A Socket.IO client that has not answered a ping within this many milliseconds is
    /// disconnected (socket.io's default).
    #[arg(long, env = "SOCKETIO_PING_TIMEOUT_MS", default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub socketio_ping_timeout_ms: u64,

    /// A Socket.IO client that has not connected a namespace this many milliseconds after
    /// its connection opened is disconnected (socket.io's `connectTimeout`).
    #[arg(long, env = "SOCKETIO_CONNECT_TIMEOUT_MS", default_value_t = 45_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub socketio_connect_timeout_ms: u64,

    /// Redis to keep all state in (e.g. `redis://127.0.0.1:6379`, `redis+unix:///run/redis.sock`).
    /// Unset: the embedded local backend. Several servers may share one Redis.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// `false` forces the local backend even when `REDIS_URL` is set.
    #[arg(long, env = "REDIS_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub redis_enabled: bool,

    /// Prefix of every Redis key and channel this server uses.
    #[arg(long, env = "REDIS_KEY_PREFIX", default_value = "maestro:")]
    pub redis_key_prefix: String,

    /// The contact push services see in Web Push requests (VAPID `sub`): a `mailto:` or
    /// `https:` URL. Defaults to the public URL when it is https, else `mailto:maestro@localhost`.
    #[arg(long, env = "PUSH_CONTACT")]
    pub push_contact: Option<String>,

    /// Bytes of terminal output the server keeps per agent session (the live terminal's
    /// scrollback), besides the parsed screen. Viewers read live output from it; at least
    /// 64 KiB is kept for them whatever this says.
    #[arg(long, env = "TERMINAL_SCROLLBACK_BYTES", default_value_t = 256 * 1024)]
    pub terminal_scrollback_bytes: usize,

    /// Accept Web Push endpoints on plain http and on loopback or IP-literal hosts (for tests
    /// with a local push endpoint). Off: only `https://<name>` endpoints, as browsers' push
    /// services have, so a subscriber cannot point the server at this machine or its network.
    #[arg(long, env = "PUSH_ALLOW_LOCAL_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set)]
    pub push_allow_local_endpoints: bool,

    /// Milliseconds within which a device's notifications about one session are folded into
    /// one (it replaces the previous and says how many things happened).
    #[arg(long, env = "PUSH_COALESCE_MS", default_value_t = 30_000)]
    pub push_coalesce_ms: u64,

    /// Who starts spawned agents: `auto` (the desktop app when one is connected, else this
    /// machine's runners), `runner` or `desktop` (see docs/runners.md).
    #[arg(long, env = "SPAWN_LAUNCHER", default_value = "auto", value_parser = ["auto", "runner", "desktop"])]
    pub spawn_launcher: String,

    /// Time between the steps of Stop's signal ladder (interrupt, terminate, kill), in
    /// milliseconds.
    #[arg(long, env = "STOP_GRACE_MS", default_value_t = 3000)]
    pub stop_grace_ms: u64,

    /// This machine's id, which runners and spawns name (default: /etc/machine-id, else the
    /// host name).
    #[arg(long, env = "MAESTRO_MACHINE_ID")]
    pub machine_id: Option<String>,

    /// `on`: `maestro serve` runs the agents of this machine itself (a runner); `off`: only
    /// the desktop app or `maestro runner` processes start agents.
    #[arg(long, env = "RUNNER", default_value = "on", value_parser = ["on", "off"])]
    pub runner: String,

    /// The agents file: commands for agent tools beyond the built-in ones (default
    /// `~/.maestro/agents.toml`).
    #[arg(long, env = "AGENTS_FILE")]
    pub agents_file: Option<PathBuf>,

    /// How many agents this machine's runner runs at once.
    #[arg(long, env = "RUNNER_CAPACITY", default_value_t = 8)]
    pub runner_capacity: u32,

    /// The longest any long-poll holds a request (`mail wait`, approval wait, runner claim), in
    /// milliseconds. A request that asks for longer is answered at this bound, as if its own
    /// timeout had passed. Lower it behind a proxy that cuts idle requests.
    #[arg(long, env = "LONG_POLL_MAX_MS", default_value_t = 120_000)]
    pub long_poll_max_ms: u64,
}

impl Config {
    /// A configuration for tests and embedding: loopback, port 0, everything under `dir`.
    pub fn for_dir(dir: &Path) -> Self {
        Self {
            port: 0,
            host: IpAddr::from([127, 0, 0, 1]),
            data_dir: dir.join("data"),
            hash_key_file: None,
            session_dir: dir.join("sessions"),
            skills_dir: dir.join("skills"),
            server_url: None,
            log_level: "info".into(),
            max_body_bytes: 1024 * 1024,
            journal_capacity: 10_000,
            cors_origins: Vec::new(),
            external_url: None,
            cf_access_team: None,
            cf_access_aud: None,
            cf_access_certs_url: None,
            tunnel_url: Default::default(),
            auth: AuthMode::Local,
            allowed_hosts: Vec::new(),
            pairing_ttl_secs: 120,
            max_connections: None,
            max_connections_per_address: 64,
            max_socketio_sessions: 20_000,
            max_socketio_sessions_per_address: 16,
            header_read_timeout_secs: 10,
            body_read_timeout_secs: 10,
            shutdown_grace_secs: 5,
            heartbeat_ttl_ms: 15_000,
            heartbeat_grace_ms: 500,
            stall_after_ms: 600_000,
            sweep_interval_ms: 250,
            socketio_ping_interval_ms: 25_000,
            socketio_ping_timeout_ms: 20_000,
            socketio_connect_timeout_ms: 45_000,
            redis_url: None,
            redis_enabled: true,
            redis_key_prefix: "maestro:".into(),
            push_contact: None,
            push_allow_local_endpoints: false,
            push_coalesce_ms: 30_000,
            spawn_launcher: "auto".into(),
            stop_grace_ms: 3000,
            machine_id: None,
            runner: "on".into(),
            agents_file: None,
            runner_capacity: 8,
            long_poll_max_ms: 120_000,
            terminal_scrollback_bytes: 256 * 1024,
        }
    }

    /// The public URLs this server is reached at: `EXTERNAL_URL` and the URL a running
    /// `maestro tunnel` announced.
    pub fn public_urls(&self) -> Vec<String> {
        let tunnel = self.tunnel_url.read().expect("tunnel url lock").clone();
        self.external_url.iter().cloned().chain(tunnel).collect()
    }

    /// The public URL to give out (pairing links): the tunnel's if one is announced, else
    /// `EXTERNAL_URL`.
    pub fn public_url(&self) -> Option<String> {
        self.public_urls().pop()
    }

    /// Where the hash key lives: `HASH_KEY_FILE`, else `$DATA_DIR/hash-key`.
    pub fn hash_key_path(&self) -> PathBuf {
        self.hash_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::util::hash::HASH_KEY_FILE))
    }

    /// The Redis URL to use, if the Redis backend is selected.
    pub fn redis(&self) -> Option<&str> {
        self.redis_url
            .as_deref()
            .filter(|u| self.redis_enabled && !u.trim().is_empty())
    }

    /// Expands a leading `~` in every path, as upstream did.
    pub fn expand_paths(mut self) -> Self {
        for p in [
            &mut self.data_dir,
            &mut self.session_dir,
            &mut self.skills_dir,
        ] {
            *p = expand_tilde(p);
        }
        if let Some(p) = &mut self.hash_key_file {
            *p = expand_tilde(p);
        }
        self
    }
}

/// Who needs a credential (`AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Requests provably from this machine need none; everything else does.
    Local,
    /// Every request needs one.
    Required,
}

fn expand_tilde(p: &Path) -> PathBuf {
    let Ok(rest) = p.strip_prefix("~") else {
        return p.to_path_buf();
    };
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(rest),
        None => p.to_path_buf(),
    }
}
