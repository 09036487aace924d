//! The server under test: the real `maestro serve` as a child process on loopback, with its own
//! data directory and, for the Redis backend, its own `redis-server` (maestro-testkit's, AOF
//! with `appendfsync always`, so a 2xx is durable on both backends).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use maestro_testkit::redis::RedisServer;
use rustix::process::{Pid, Resource, Signal, getrlimit, kill_process, setrlimit};

/// Which storage the server uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Local,
    Redis,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Redis => "redis",
        }
    }
}

/// Raises this process's open-files limit to its hard limit and returns the new soft limit.
/// Children (the server, wrk) inherit it.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(max) = limit.maximum
        && limit.current.is_some_and(|c| c < max)
    {
        limit.current = Some(max);
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("bench: cannot raise the open-files limit to {max}: {e}");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// Where a server keeps its state: a data directory, plus a Redis for the Redis backend. A
/// server can be stopped and started again on the same store.
pub struct Store {
    pub dir: PathBuf,
    redis: Option<Arc<RedisServer>>,
}

impl Store {
    pub fn new(backend: Backend, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the data directory");
        let redis = (backend == Backend::Redis).then(|| RedisServer::start(&dir.join("redis")));
        Self {
            dir: dir.to_path_buf(),
            redis,
        }
    }

    /// Another store on the same Redis (the Redis backend) with its own data directory: what
    /// a second server sharing the first one's state uses.
    pub fn sibling(&self, dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the data directory");
        Self {
            dir: dir.to_path_buf(),
            redis: self.redis.clone(),
        }
    }

    /// The `redis-server` process of the Redis backend, for its CPU time.
    pub fn redis_pid(&self) -> Option<u32> {
        self.redis.as_ref().and_then(|r| r.pid())
    }

    /// `serve` on `port` (0: any), not waiting for it.
    pub fn spawn(&self, bin: &Path, port: u16, env: &[(&str, &str)]) -> Result<Child> {
        let data = self.dir.join("data");
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", &data)
            .env("SESSION_DIR", self.dir.join("sessions"))
            .env("SKILLS_DIR", self.dir.join("skills"))
            // MAESTRO_BENCH_SERVER_LOG: the server's log filter, to look into a run.
            .env(
                "LOG_LEVEL",
                std::env::var("MAESTRO_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .env_remove("REDIS_URL")
            // Agents are started only by the figures that measure them (they pass RUNNER=on).
            .env("RUNNER", "off")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(redis) = &self.redis {
            cmd.env("REDIS_URL", redis.url());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {}", bin.display()))
    }

    /// Starts `serve` on a free port and waits until it accepts connections.
    pub fn start(&self, bin: &Path, env: &[(&str, &str)]) -> Result<Server> {
        let url_file = self.dir.join("data").join("server-url");
        let _ = std::fs::remove_file(&url_file);
        let child = self.spawn(bin, 0, env)?;
        let mut server = Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("maestro serve exited at start ({status})");
            }
            if let Ok(url) = std::fs::read_to_string(&url_file)
                && let Some(port) = url.trim().rsplit(':').next().and_then(|p| p.parse().ok())
            {
                server.addr = SocketAddr::from(([127, 0, 0, 1], port));
                if TcpStream::connect(server.addr).is_ok() {
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                bail!("maestro serve did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A running `maestro serve`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident set size, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Result<u64> {
        rss_kib(self.pid())
    }

    /// SIGTERM, then waits (at most 10 s, then SIGKILL) until the process is gone.
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SIGTERM (a clean shutdown flushes the store), then SIGKILL after 10 s.
pub fn stop_child(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    if let Some(pid) = i32::try_from(child.id()).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::TERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// `VmRSS` of a process, in KiB.
pub fn rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS:`, `RssAnon:`, `RssFile:`).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field} in /proc/<pid>/status"))
}

/// CPU time (user + system) a process has used so far (`/proc/<pid>/stat`, 10 ms ticks).
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let (user, system) = cpu_times(pid)?;
    Ok(user + system)
}

/// The CPU time `pid` has used so far in user space and in the kernel (`utime`, `stime`).
pub fn cpu_times(pid: u32) -> Result<(Duration, Duration)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may contain spaces; the fields after its closing ')' do not.
    let rest = stat
        .rsplit_once(')')
        .context("malformed /proc/<pid>/stat")?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<Duration> {
        let t: u64 = fields
            .get(i)
            .context("short /proc/<pid>/stat")?
            .parse()
            .context("a CPU time field of /proc/<pid>/stat")?;
        Ok(Duration::from_millis(t * 10))
    };
    Ok((ticks(11)?, ticks(12)?))
}

/// One `GET /health` over a fresh connection; true on a 200.
pub fn health_ok(addr: SocketAddr) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        Ok(&head == b"HTTP/1.1 200")
    };
    attempt().unwrap_or(false)
}

/// A TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The machine, for the results file.
pub fn machine() -> serde_json::Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: Option<u64> = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .ok();
    serde_json::json!({
        "nproc": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": cpu,
        "memory_mib": mem_kib.map(|k| k / 1024),
        "kernel": kernel,
    })
}
