//! `maestro serve` as a user starts it: what it says at start about who can reach it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A `maestro serve` whose log lines arrive on `lines`; killed when dropped.
struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(host: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_maestro"))
            .args(["serve", "--port", "0", "--host", host])
            .env("DATA_DIR", dir.path())
            .env("SESSION_DIR", dir.path().join("sessions"))
            .env("SKILLS_DIR", dir.path().join("skills"))
            .env("LOG_LEVEL", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn maestro");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            _dir: dir,
        }
    }

    /// Log lines up to and including the first that contains `needle`.
    fn until(&self, needle: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(e) => panic!("no log line with {needle:?} ({e}); saw {seen:#?}"),
            }
        }
    }

    /// Stops the server with SIGTERM; the log lines it wrote until it exited.
    fn stop(mut self) -> Vec<String> {
        let pid = rustix::process::Pid::from_child(&self.child);
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "maestro serve exited with {status}");
        self.lines.iter().collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const NOTICE: &str = "requests from other machines need a credential";

#[test]
fn listening_beyond_loopback_says_that_remote_requests_need_a_credential() {
    let server = Serve::start("0.0.0.0");
    let lines = server.until(NOTICE);
    let notice = lines.last().unwrap();
    assert!(notice.contains("INFO"), "{notice}");
    assert!(
        notice.contains("0.0.0.0:"),
        "the address is named: {notice}"
    );
}

#[test]
fn loopback_does_not_say_so() {
    let server = Serve::start("127.0.0.1");
    let mut lines = server.until("maestro listening");
    lines.extend(server.stop());
    assert!(
        lines.iter().any(|l| l.contains("maestro stopped")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains(NOTICE)), "{lines:#?}");
}
