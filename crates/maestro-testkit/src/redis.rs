//! Real `redis-server` processes for tests.
//!
//! Each [`RedisServer`] listens on a unix socket in its own directory and can be killed and
//! restarted on the same socket and data (AOF with `appendfsync always`, so every
//! acknowledged write survives a kill). A watchdog shell ends it when the test process exits,
//! however it exits, so no server outlives its test.
//!
//! [`for_dir`] gives the Redis of a test data directory when the suite runs on the Redis
//! backend (`MAESTRO_TEST_BACKEND=redis`), so a server restarted on the same directory finds
//! its data again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Whether this test run uses the Redis backend.
pub fn enabled() -> bool {
    std::env::var("MAESTRO_TEST_BACKEND").is_ok_and(|b| b == "redis")
}

pub struct RedisServer {
    dir: PathBuf,
    /// The server and its watchdog.
    child: Mutex<Option<(Child, Child)>>,
}

impl RedisServer {
    /// Starts `redis-server` with its socket and data in `dir`.
    pub fn start(dir: &Path) -> Arc<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let server = Arc::new(Self {
            dir: dir.to_path_buf(),
            child: Mutex::new(None),
        });
        server.restart();
        server
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// `redis+unix://…` URL for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    /// The process id of the running `redis-server` (for its CPU time), if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(|(c, _)| c.id())
    }

    /// Starts the process (again), on the same socket and data directory.
    pub fn restart(&self) {
        let mut slot = self.child.lock().unwrap();
        assert!(slot.is_none(), "redis-server is already running");
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(self.socket())
            .args(["--unixsocketperm", "700", "--dir"])
            .arg(&self.dir)
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .args(["--logfile", "redis.log"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (cargo xtask test installs it)");
        // The watchdog: kill redis-server when this test process is gone.
        let script = format!(
            "while kill -0 {parent} 2>/dev/null && kill -0 {child} 2>/dev/null; do sleep 0.2; done; kill -9 {child} 2>/dev/null",
            parent = std::process::id(),
            child = child.id()
        );
        let watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        *slot = Some((child, watchdog));
    }

    /// SIGKILLs the process.
    pub fn kill(&self) {
        if let Some((mut child, mut watchdog)) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Redis serving test data directory `dir`, started on first use.
pub fn for_dir(dir: &Path) -> Arc<RedisServer> {
    static SERVERS: OnceLock<Mutex<HashMap<PathBuf, Arc<RedisServer>>>> = OnceLock::new();
    let mut servers = SERVERS.get_or_init(Default::default).lock().unwrap();
    servers
        .entry(dir.to_path_buf())
        .or_insert_with(|| RedisServer::start(&dir.join("redis")))
        .clone()
}
