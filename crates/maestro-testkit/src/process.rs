//! `maestro serve` as a real child process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `maestro serve`, killed (SIGKILL) when dropped.
pub struct MaestroProcess {
    child: Child,
    url: String,
    data_dir: PathBuf,
}

impl MaestroProcess {
    /// Starts `bin serve` with `DATA_DIR=data_dir`, `PORT=0` (unless `env` sets `PORT`) and the
    /// extra environment, and waits until it accepts connections (it writes `server-url` once
    /// it listens).
    pub fn start(bin: &Path, data_dir: &Path, env: &[(&str, &str)]) -> Self {
        std::fs::create_dir_all(data_dir).unwrap();
        let url_file = data_dir.join("server-url");
        let _ = std::fs::remove_file(&url_file);
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .env("PORT", "0")
            .env("DATA_DIR", data_dir)
            .env("SESSION_DIR", data_dir.join("sessions"))
            .env("SKILLS_DIR", data_dir.join("skills"))
            .env("LOG_LEVEL", "warn")
            // No runner unless a test asks for one: spawns must not start agents here.
            .env("RUNNER", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        // Owned from the start, so a failed start kills and reaps the process (Drop).
        let mut this = Self {
            child: cmd.spawn().expect("spawn maestro"),
            url: String::new(),
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "maestro did not start");
            if let Ok(url) = std::fs::read_to_string(&url_file) {
                let addr = url
                    .trim_start_matches("http://")
                    .replace("localhost", "127.0.0.1");
                if std::net::TcpStream::connect(&addr).is_ok() {
                    this.url = url;
                    return this;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `http://localhost:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ws://localhost:<port>/`.
    pub fn ws_url(&self) -> String {
        format!("{}/", self.url.replacen("http://", "ws://", 1))
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MaestroProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port that was free a moment ago, for a server that must come back on the same port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
