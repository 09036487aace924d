//! Helpers for the end-to-end CLI tests: a real `maestro serve` on port 0 and a way to run
//! the `maestro` binary against it with a clean environment.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use maestro_client::Client;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_maestro");

/// Environment variables the CLI reads; cleared so the caller's shell cannot leak in.
const CONTEXT_VARS: &[&str] = &[
    "MAESTRO_SERVER_URL",
    "MAESTRO_API_URL",
    "DATA_DIR",
    "MAESTRO_SESSION_ID",
    "MAESTRO_PROJECT_ID",
    "MAESTRO_TASK_IDS",
    "MAESTRO_MODE",
    "MAESTRO_TOKEN",
    "MAESTRO_RETRIES",
    "MAESTRO_RETRY_DELAY",
    "MAESTRO_DEBUG",
    "MAESTRO_WS_URL",
    "MAESTRO_HEARTBEAT_TTL_MS",
];

/// A server process on a free port with its own data directory.
pub struct Server {
    child: Child,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// HOME for CLI runs (no ~/.maestro/config unless a test writes one).
    pub home: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `maestro serve --port 0` and waits until `/health` answers.
    pub async fn start() -> Server {
        Self::start_with_env(&[]).await
    }

    /// [`Server::start`] with extra environment for the server (e.g. `AUTH=required`).
    pub async fn start_with_env(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let url_file: PathBuf = dir.path().join("server-url");
        let child = Command::new(BIN)
            .args(["serve", "--port", "0"])
            // Tests that want this machine's runner turn it on; the others must not start
            // agents for their spawns.
            .env("RUNNER", "off")
            .envs(env.iter().copied())
            .env("DATA_DIR", dir.path())
            .env("SESSION_DIR", dir.path().join("sessions"))
            .env("SKILLS_DIR", dir.path().join("skills"))
            .env("LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn maestro serve");
        // Owned at once, so the process is reaped whatever happens next.
        let mut server = Server {
            child,
            url: String::new(),
            dir,
            home: tempfile::tempdir().unwrap(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "server did not start");
            if let Ok(url) = std::fs::read_to_string(&url_file)
                && Client::new(url.trim()).unwrap().health().await.is_ok()
            {
                server.url = url.trim().to_owned();
                return server;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&self.url).unwrap()
    }

    /// `maestro` pointed at this server through MAESTRO_SERVER_URL.
    pub fn cli(&self) -> Cli {
        Cli::new(Some(&self.url), self.home.path())
    }
}

/// One `maestro` invocation being assembled.
pub struct Cli {
    cmd: Command,
}

impl Cli {
    pub fn new(server: Option<&str>, home: &Path) -> Cli {
        let mut cmd = Command::new(BIN);
        for v in CONTEXT_VARS {
            cmd.env_remove(v);
        }
        cmd.env("HOME", home);
        if let Some(url) = server {
            cmd.env("MAESTRO_SERVER_URL", url);
        }
        cmd.stdin(Stdio::null());
        Cli { cmd }
    }

    pub fn env(mut self, k: &str, v: &str) -> Cli {
        self.cmd.env(k, v);
        self
    }

    pub fn session(self, id: &str) -> Cli {
        self.env("MAESTRO_SESSION_ID", id)
    }

    pub fn project(self, id: &str) -> Cli {
        self.env("MAESTRO_PROJECT_ID", id)
    }

    pub fn command(&mut self) -> &mut Command {
        &mut self.cmd
    }

    /// Runs with `args` and collects the result.
    pub fn run(mut self, args: &[&str]) -> Out {
        let out: Output = self.cmd.args(args).output().expect("run maestro");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A finished invocation.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts exit 0 and returns self.
    #[track_caller]
    pub fn ok(self) -> Out {
        assert_eq!(self.code, 0, "expected success: {self:#?}");
        self
    }

    /// Asserts the exit code.
    #[track_caller]
    pub fn code(self, code: i32) -> Out {
        assert_eq!(self.code, code, "unexpected exit code: {self:#?}");
        self
    }

    /// stdout as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// `data` of a `{"success":true,"data":…}` envelope.
    #[track_caller]
    pub fn data(&self) -> Value {
        let v = self.json();
        assert_eq!(v["success"], true, "not a success envelope: {self:#?}");
        v["data"].clone()
    }

    /// The `error` code of a `{"success":false,…}` envelope.
    #[track_caller]
    pub fn error_code(&self) -> String {
        let v = self.json();
        assert_eq!(v["success"], false, "not a failure envelope: {self:#?}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
        v["error"].as_str().unwrap().to_owned()
    }
}
