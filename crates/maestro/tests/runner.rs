//! End to end: runners start, stop and lose real processes. `maestro serve` with its own
//! runner, and `maestro runner` processes beside it, run fake agents (shell scripts) from an
//! agents file; the tests check the processes themselves (their pids, files they write) and
//! what the server says about their sessions.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateTask, Session, SpawnRequest};
use support::{BIN, Server};

const WAIT: Duration = Duration::from_secs(20);

/// An agents file with the fake agents the tests use; `marks` is where they leave traces.
fn agents_file(dir: &Path, marks: &Path) -> PathBuf {
    let marks = marks.display();
    let file = dir.join("agents.toml");
    std::fs::write(
        &file,
        format!(
            r#"
# Leaves its pid in marks/<session>, then waits; ignores SIGINT (Stop must climb the ladder).
[agents.stubborn]
command = ["sh", "-c", "trap '' INT; echo $$ >> {marks}/$MAESTRO_SESSION_ID; echo started; exec sleep 600"]
prompt = "none"
resume = ["sh", "-c", "echo resumed >> {marks}/$MAESTRO_SESSION_ID.resumed; exec sleep 600"]

# Prints its prompt (passed as an argument) and the directory it runs in, then exits 0.
[agents.echo]
command = ["sh", "-c", "echo \"prompt=$0 cwd=$(pwd)\" > {marks}/$MAESTRO_SESSION_ID; exit 0"]

[agents.missing]
command = ["surely-not-installed-agent"]
"#
        ),
    )
    .unwrap();
    file
}

struct Fleet {
    server: Server,
    marks: tempfile::TempDir,
    agents: PathBuf,
    project: String,
    task: String,
}

impl Fleet {
    async fn start(extra: &[(&str, &str)], working_dir: Option<&Path>) -> Fleet {
        let marks = tempfile::tempdir().unwrap();
        let conf = tempfile::tempdir().unwrap();
        let agents = agents_file(conf.path(), marks.path());
        let agents_str = agents.to_str().unwrap().to_owned();
        let mut env = vec![
            ("RUNNER", "on"),
            ("AGENTS_FILE", agents_str.as_str()),
            ("MAESTRO_MACHINE_ID", "serve-machine"),
            ("STOP_GRACE_MS", "200"),
        ];
        env.extend_from_slice(extra);
        let server = Server::start_with_env(&env).await;
        std::mem::forget(conf); // the agents file must outlive the server
        let c = server.client();
        let wd = working_dir
            .map(|p| p.to_str().unwrap().to_owned())
            .unwrap_or_else(|| marks.path().to_str().unwrap().to_owned());
        let project = c
            .create_project(&CreateProject {
                name: Some("fleet".into()),
                working_dir: Some(wd),
                ..Default::default()
            })
            .await
            .unwrap()
            .id;
        let task = c
            .create_task(&CreateTask {
                project_id: Some(project.clone()),
                title: Some("Make the build green".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .id;
        Fleet {
            server,
            marks,
            agents,
            project,
            task,
        }
    }

    fn client(&self) -> Client {
        self.server.client()
    }

    async fn spawn(&self, tool: &str, extra: SpawnRequest) -> String {
        self.client()
            .spawn(
                &SpawnRequest {
                    project_id: Some(self.project.clone()),
                    task_ids: Some(vec![self.task.clone()]),
                    agent_tool: Some(tool.into()),
                    ..extra
                },
                None,
            )
            .await
            .unwrap()
            .session_id
    }

    async fn until(&self, sid: &str, what: &str, ok: impl Fn(&Session) -> bool) -> Session {
        let c = self.client();
        let deadline = Instant::now() + WAIT;
        loop {
            let s = c.get_session(sid).await.unwrap();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{sid} never became {what}: {} {:?} {:?}",
                s.status,
                s.failure_reason,
                s.timeline.iter().map(|t| &t.message).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The pids the agent of `sid` wrote, once it wrote one.
    async fn pids(&self, sid: &str) -> Vec<i32> {
        let file = self.marks.path().join(sid);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && !text.trim().is_empty()
            {
                return text.lines().map(|l| l.trim().parse().unwrap()).collect();
            }
            assert!(
                Instant::now() < deadline,
                "the agent of {sid} never started"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `maestro runner` as its own process, on machine `machine`.
    fn runner(&self, name: &str, machine: &str, ttl_ms: &str) -> Running {
        let child = Command::new(BIN)
            .args(["runner", "--name", name])
            .env("MAESTRO_SERVER_URL", &self.server.url)
            .env("MAESTRO_MACHINE_ID", machine)
            .env("AGENTS_FILE", &self.agents)
            .env("MAESTRO_HEARTBEAT_TTL_MS", ttl_ms)
            .env("HOME", self.server.home.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start maestro runner");
        Running(child)
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn alive(pid: i32) -> bool {
    // Zombies count as gone: /proc/<pid>/stat's state is Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(") ").next().unwrap_or("").chars().next();
            state != Some('Z')
        })
        .unwrap_or(false)
}

async fn until_gone(pid: i32) {
    let deadline = Instant::now() + WAIT;
    while alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} is still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn runner_online(c: &Client, machine: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        let n = c
            .list_runners()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.online && r.machine_id == machine)
            .count();
        if n >= count {
            return;
        }
        assert!(Instant::now() < deadline, "no runner online on {machine}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_starts_the_agent_and_stop_stops_one_that_ignores_sigint() {
    let fleet = Fleet::start(&[], None).await;
    let c = fleet.client();
    runner_online(&c, "serve-machine", 1).await;
    let sid = fleet.spawn("stubborn", SpawnRequest::default()).await;
    let pids = fleet.pids(&sid).await;
    assert_eq!(pids.len(), 1, "one agent for one spawn: {pids:?}");
    let s = fleet
        .until(&sid, "working", |s| s.status == "working")
        .await;
    let meta = s.metadata.unwrap();
    assert_eq!(meta["launcher"], "runner");
    assert_eq!(meta["pid"], pids[0]);
    assert!(alive(pids[0]));

    c.stop_session(&sid, None).await.unwrap();
    let s = fleet
        .until(&sid, "stopped", |s| s.status == "stopped")
        .await;
    assert!(s.completed_at.is_some());
    until_gone(pids[0]).await;

    // Resume starts it again, with the agent's resume command.
    c.resume_session(&sid).await.unwrap();
    let resumed = fleet.marks.path().join(format!("{sid}.resumed"));
    let deadline = Instant::now() + WAIT;
    while !resumed.exists() {
        assert!(
            Instant::now() < deadline,
            "resume never ran the resume command"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet
        .until(&sid, "working again", |s| s.status == "working")
        .await;
    c.stop_session(&sid, None).await.unwrap();
    fleet
        .until(&sid, "stopped again", |s| s.status == "stopped")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_and_the_worktree_reach_the_agent() {
    // A real repository, so the spawn can ask for a worktree.
    let repo = tempfile::tempdir().unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(repo.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["commit", "-q", "--allow-empty", "-m", "start"]);
    let fleet = Fleet::start(&[], Some(repo.path())).await;
    runner_online(&fleet.client(), "serve-machine", 1).await;
    let sid = fleet
        .spawn(
            "echo",
            SpawnRequest {
                worktree: Some(true),
                ..Default::default()
            },
        )
        .await;
    let s = fleet
        .until(&sid, "completed", |s| s.status == "completed")
        .await;
    let worktree = s.metadata.unwrap()["worktree"]
        .as_str()
        .expect("the worktree is recorded")
        .to_owned();
    let trace = std::fs::read_to_string(fleet.marks.path().join(&sid)).unwrap();
    assert!(trace.contains("prompt=Task "), "{trace}");
    assert!(trace.contains("Make the build green"), "{trace}");
    assert!(trace.contains(&format!("cwd={worktree}")), "{trace}");
    let branch = Command::new("git")
        .args(["-C", &worktree, "branch", "--show-current"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&branch.stdout).trim(),
        format!("maestro/{sid}")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_missing_on_path_fails_the_session_with_the_reason() {
    let fleet = Fleet::start(&[], None).await;
    runner_online(&fleet.client(), "serve-machine", 1).await;
    let sid = fleet.spawn("missing", SpawnRequest::default()).await;
    let s = fleet.until(&sid, "failed", |s| s.status == "failed").await;
    let reason = s.failure_reason.unwrap();
    assert!(
        reason.starts_with("agent_not_found: surely-not-installed-agent is not on PATH on "),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runners_start_exactly_one_agent_per_spawn() {
    let fleet = Fleet::start(&[], None).await;
    let c = fleet.client();
    // A second runner on the same machine competes with the server's own for every spawn.
    let _second = fleet.runner("second", "serve-machine", "15000");
    runner_online(&c, "serve-machine", 2).await;
    let mut sessions = Vec::new();
    for _ in 0..6 {
        sessions.push(fleet.spawn("stubborn", SpawnRequest::default()).await);
    }
    let mut runners_used = std::collections::BTreeSet::new();
    for sid in &sessions {
        let pids = fleet.pids(sid).await;
        let s = fleet.until(sid, "working", |s| s.status == "working").await;
        runners_used.insert(s.metadata.unwrap()["runnerId"].as_str().unwrap().to_owned());
        // Give a second launch time to show itself, then count again.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = fleet.pids(sid).await;
        assert_eq!(again.len(), 1, "{sid} was started {} times", again.len());
        assert_eq!(pids, again);
    }
    for sid in &sessions {
        c.stop_session(sid, Some(100)).await.unwrap();
    }
    for sid in &sessions {
        fleet.until(sid, "stopped", |s| s.status == "stopped").await;
    }
    eprintln!("runners used: {runners_used:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_runner_fails_its_sessions_as_runner_lost() {
    let fleet = Fleet::start(
        &[
            ("HEARTBEAT_TTL_MS", "600"),
            ("HEARTBEAT_GRACE_MS", "200"),
            ("SWEEP_INTERVAL_MS", "50"),
        ],
        None,
    )
    .await;
    let c = fleet.client();
    let mut remote = fleet.runner("remote", "other-machine", "600");
    runner_online(&c, "other-machine", 1).await;
    let sid = fleet
        .spawn(
            "stubborn",
            SpawnRequest {
                machine_id: Some("other-machine".into()),
                ..Default::default()
            },
        )
        .await;
    let pid = fleet.pids(&sid).await[0];
    let s = fleet
        .until(&sid, "working", |s| s.status == "working")
        .await;
    assert_eq!(s.metadata.unwrap()["machineId"], "other-machine");
    remote.0.kill().unwrap(); // SIGKILL
    remote.0.wait().unwrap();
    let s = fleet.until(&sid, "failed", |s| s.status == "failed").await;
    assert_eq!(s.failure_reason.as_deref(), Some("runner_lost"));
    // Its terminal closed with it: the agent got SIGHUP.
    until_gone(pid).await;
    let runners = c.list_runners().await.unwrap();
    let r = runners
        .iter()
        .find(|r| r.machine_id == "other-machine")
        .unwrap();
    assert!(!r.online);
}
