//! The figures, each measured against a real `maestro serve` on loopback.
//!
//! One backend's run, each group of figures on its own server and fresh store: the idle memory
//! and fan-out (with the memory per socket); the CLI, mail wake, list and create throughput and
//! replay; crash detection (with its own TTL); start-up (a store filled with 10,000 tasks,
//! restarted); then the runner and terminal figures ([`crate::terminal`]), each with its own
//! server and agents. Every loop is bounded in count and time.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;

use crate::api::Api;
use crate::crowd::{Crowd, OnEvent};
use crate::floor::Floor;
use crate::report::{Row, Samples, ms, round3};
use crate::server::{
    Backend, Server, Store, cpu_time, cpu_times, free_port, health_ok, stop_child,
};
use crate::sio::{Sio, envelope_seq};
use crate::wrk;

/// Sizes and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub list_tasks: usize,
    pub http_secs: u64,
    pub connections: u32,
    pub fanout_sockets: Vec<usize>,
    pub fanout_events: usize,
    pub mail_trips: usize,
    pub replay_events: u64,
    pub replay_trials: usize,
    pub crash_ttl_ms: u64,
    pub startup_tasks: usize,
    pub startup_runs: usize,
    pub cli_runs: usize,
    /// Keys typed for the terminal echo figure.
    pub echo_keys: usize,
    /// Spawns timed for the spawn-to-first-output figure.
    pub spawn_trials: usize,
    /// Bytes one agent writes for the terminal flood figure.
    pub flood_bytes: usize,
    /// Agents streaming at once for the many-terminals figure...
    pub terminals: usize,
    /// ...each writing this many lines a second...
    pub line_rate: u64,
    /// ...for this many seconds.
    pub terminal_secs: u64,
    /// Requests timed for each review figure.
    pub review_trials: usize,
}

impl Plan {
    pub fn full() -> Self {
        Self {
            list_tasks: 1_000,
            http_secs: 10,
            connections: 50,
            fanout_sockets: vec![1_000, 5_000, 10_000],
            fanout_events: 200,
            mail_trips: 1_000,
            replay_events: 1_000,
            replay_trials: 100,
            crash_ttl_ms: 15_000,
            startup_tasks: 10_000,
            startup_runs: 5,
            cli_runs: 50,
            echo_keys: 1_000,
            spawn_trials: 50,
            flood_bytes: 10_000_000,
            terminals: 100,
            line_rate: 100,
            terminal_secs: 10,
            review_trials: 100,
        }
    }

    /// Under three minutes for both backends: shorter, fewer, 1,000 sockets, a 2 s TTL, a
    /// 2 MB terminal flood, 100 terminals for 3 s.
    pub fn quick() -> Self {
        Self {
            http_secs: 3,
            fanout_sockets: vec![1_000],
            fanout_events: 50,
            mail_trips: 200,
            replay_trials: 20,
            crash_ttl_ms: 2_000,
            startup_runs: 3,
            cli_runs: 20,
            echo_keys: 200,
            spawn_trials: 10,
            review_trials: 20,
            flood_bytes: 2_000_000,
            terminal_secs: 3,
            ..Self::full()
        }
    }
}

/// Every figure's name, for `--only`.
pub const FIGURES: &[&str] = &[
    "memory",
    "cli",
    "mail",
    "approval",
    "list",
    "create",
    "replay",
    "fanout",
    "scale-out",
    "crash",
    "startup",
    "sweep",
    "transcript",
    "terminal-echo",
    "spawn-first-output",
    "terminal-10mb",
    "terminals-100",
    "review-changes",
    "review-diff",
];

/// What one backend's run shares.
pub struct Bench {
    pub bin: PathBuf,
    pub backend: Backend,
    pub plan: Plan,
    pub only: Vec<String>,
    pub tmp: PathBuf,
}

impl Bench {
    pub(crate) fn wants(&self, figure: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|f| f == figure)
    }

    /// Measures every selected figure; a figure that fails is reported as such and the run
    /// goes on.
    pub async fn run(&self) -> Result<Vec<Row>> {
        let mut rows = Vec::new();
        if self.wants("mail") || self.wants("create") {
            eprintln!("bench[{}]: fsync latency", self.backend.name());
            rows.push(self.or_error("disk: fsync p99", "(no target)", self.fsync_probe()));
        }
        if self.wants("memory") || self.wants("fanout") {
            // Its own server: the sockets' memory is measured on a fresh heap, and the heap
            // they leave behind (10,000 sockets freed) does not slow the figures after them.
            let store = Store::new(self.backend, &self.tmp.join("sockets"));
            let server = store.start(&self.bin, &[])?;
            let api = Api::new(&server.url())?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.wants("memory") {
                eprintln!("bench[{}]: memory idle", self.backend.name());
                rows.extend(idle_memory(&server));
            }
            if self.wants("fanout") {
                eprintln!("bench[{}]: fan-out", self.backend.name());
                match self.fanout(&api, &server).await {
                    Ok(r) => rows.extend(r),
                    Err(e) => rows.push(error_row("fan-out p99", "<= 15 ms", &e)),
                }
            }
        }
        if self.wants("scale-out") {
            eprintln!("bench[{}]: scale-out", self.backend.name());
            rows.extend(crate::scale::run(self).await);
        }
        let main = Store::new(self.backend, &self.tmp.join("main"));
        let server = main.start(&self.bin, &[])?;
        let api = Api::new(&server.url())?;
        if self.wants("cli") {
            eprintln!("bench[{}]: CLI", self.backend.name());
            rows.push(self.or_error("CLI: session register", "<= 10 ms", self.cli(&api).await));
        }
        if self.wants("mail") {
            eprintln!("bench[{}]: mail wake", self.backend.name());
            match self.mail(&api).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(error_row("mail wake p99", &self.mail_target(), &e)),
            }
        }
        if self.wants("approval") {
            eprintln!("bench[{}]: approval round trip", self.backend.name());
            match self.approval(&api).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(error_row("approval round trip p99", "<= 5 ms", &e)),
            }
        }
        let mut events_project = None;
        if self.wants("list") || self.wants("replay") {
            let p = api.create_project("bench list").await?;
            api.create_tasks(&p, self.plan.list_tasks).await?;
            events_project = Some(p);
        }
        if self.wants("list") {
            eprintln!("bench[{}]: list throughput", self.backend.name());
            let p = events_project.as_deref().expect("created above");
            match self.list(&api, &server, p).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(error_row("list throughput", ">= 4,500 req/s", &e)),
            }
        }
        if self.wants("create") {
            eprintln!("bench[{}]: create throughput", self.backend.name());
            match self.create(&api, &server).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(error_row("create throughput", ">= 7,500 req/s", &e)),
            }
        }
        if self.wants("replay") {
            eprintln!("bench[{}]: replay", self.backend.name());
            let p = events_project.as_deref().expect("created above");
            let row = self.replay(server.addr, p).await;
            rows.push(self.or_error("replay p99 (1,000 events)", "<= 50 ms", row));
        }
        if self.wants("transcript") {
            eprintln!("bench[{}]: transcript first page", self.backend.name());
            match self.transcript(&api).await {
                Ok(r) => rows.extend(r),
                Err(e) => rows.push(error_row(
                    "transcript first page p99 (10,000 entries)",
                    "<= 20 ms",
                    &e,
                )),
            }
        }
        drop(server);

        if self.wants("crash") {
            eprintln!("bench[{}]: crash detection", self.backend.name());
            let target = format!("<= {} s", (self.plan.crash_ttl_ms + 1_000) as f64 / 1000.0);
            let row = self.crash().await;
            rows.push(self.or_error("crash detection", &target, row));
        }
        if self.wants("sweep") {
            eprintln!("bench[{}]: liveness sweep", self.backend.name());
            let row = self.sweep().await;
            rows.push(self.or_error("sweep cost, 10,000 idle sessions", "<= 1 ms per sweep", row));
        }
        if self.wants("startup") {
            eprintln!("bench[{}]: start-up", self.backend.name());
            let row = self.startup().await;
            rows.push(self.or_error("start-up (10,000 tasks)", "<= 100 ms", row));
        }
        rows.extend(crate::terminal::run(self).await);
        rows.extend(crate::review::run(self).await);
        Ok(rows)
    }

    /// How long this disk takes to make 4 KiB durable (`fdatasync`): the floor under every
    /// acknowledged write, hence under create throughput's latency and mail wake.
    fn fsync_probe(&self) -> Result<Row> {
        use std::io::Write as _;
        let path = self.tmp.join("fsync-probe");
        let mut file = std::fs::File::create(&path)?;
        let block = [7u8; 4096];
        let mut samples = Vec::with_capacity(self.plan.mail_trips);
        for _ in 0..self.plan.mail_trips {
            file.write_all(&block)?;
            let started = Instant::now();
            file.sync_data()?;
            samples.push(started.elapsed());
        }
        drop(file);
        std::fs::remove_file(&path)?;
        let s = Samples::new(samples);
        Ok(Row::info(
            "disk: fsync p99 (4 KiB append)",
            s.percentile_ms(99.0),
            "ms",
        )
        .with_detail(s.summary()))
    }

    fn or_error(&self, figure: &str, target: &str, row: Result<Row>) -> Row {
        row.unwrap_or_else(|e| error_row(figure, target, &e))
    }

    fn mail_target(&self) -> String {
        format!("<= {} ms", self.mail_target_ms())
    }

    fn mail_target_ms(&self) -> f64 {
        match self.backend {
            Backend::Local => 2.0,
            Backend::Redis => 4.0,
        }
    }

    /// `maestro session register` as an agent hook runs it: a fresh process each time, the
    /// context in the environment, the session already known to the server.
    async fn cli(&self, api: &Api) -> Result<Row> {
        let project = api.create_project("bench cli").await?;
        let session = api.create_session(&project, "idle").await?;
        let home = self.tmp.join("cli-home");
        std::fs::create_dir_all(&home)?;
        let (bin, url, runs) = (self.bin.clone(), api.base.clone(), self.plan.cli_runs);
        tokio::task::spawn_blocking(move || -> Result<Row> {
            let command = |args: &[&str]| {
                let mut cmd = Command::new(&bin);
                cmd.args(args)
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("HOME", &home)
                    .env("MAESTRO_SERVER_URL", &url)
                    .env("MAESTRO_SESSION_ID", &session)
                    .env("MAESTRO_PROJECT_ID", &project)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                cmd
            };
            let help = command(&["session", "register", "--help"]).output()?;
            if !help.status.success() {
                return Ok(Row::not_measured(
                    "CLI: session register",
                    "<= 10 ms",
                    "command missing",
                ));
            }
            let mut samples = Vec::with_capacity(runs);
            for i in 0..=runs {
                let started = Instant::now();
                let out = command(&["session", "register"]).output()?;
                let took = started.elapsed();
                if !out.status.success() {
                    bail!(
                        "maestro session register failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                if i > 0 {
                    samples.push(took); // the first run only warms the page cache
                }
            }
            let s = Samples::new(samples);
            Ok(Row::at_most(
                &format!("CLI: session register (median of {runs})"),
                s.percentile_ms(50.0),
                "ms",
                10.0,
            )
            .with_detail(s.summary()))
        })
        .await?
    }

    /// `/api/mail/wait` parked, then a send: from the send going out to the waiter's answer.
    /// Upstream's wait (`GET`, `since`), and the exactly-once wait (`POST`, which acknowledges).
    async fn mail(&self, api: &Api) -> Result<Vec<Row>> {
        let project = api.create_project("bench mail").await?;
        let to = api.create_session(&project, "working").await?;
        let from = api.create_session(&project, "working").await?;
        let mut rows = Vec::new();
        for ack in [false, true] {
            if ack {
                // Take what the first pass left unread.
                api.post(
                    &format!("/api/mail/wait/{to}"),
                    &json!({ "projectId": project, "timeout": 1000 }),
                )
                .await?;
            }
            let mut since = 0i64;
            let trips_before = redis_round_trips(api).await?;
            let mut samples = Vec::with_capacity(self.plan.mail_trips);
            // The send's own answer, beside: the wake cannot come before the send is durable.
            let mut send_samples = Vec::with_capacity(self.plan.mail_trips);
            let deadline = Instant::now() + Duration::from_secs(300);
            for _ in 0..self.plan.mail_trips {
                if Instant::now() > deadline {
                    bail!("mail wake: over 300 s");
                }
                let request = if ack {
                    api.http
                        .post(format!("{}/api/mail/wait/{to}", api.base))
                        .json(&json!({ "projectId": project, "timeout": 10000 }))
                } else {
                    api.http.get(format!(
                        "{}/api/mail/wait/{to}?projectId={project}&timeout=10000&since={since}",
                        api.base
                    ))
                };
                let waiter = tokio::spawn(async move {
                    let body = request.send().await?.error_for_status()?.text().await?;
                    anyhow::Ok((body, Instant::now()))
                });
                wait_parked(api, "maestro_mail_waiters").await?;
                // A message in the same millisecond as the last would not be after `since`.
                while now_ms() <= since {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
                let body = json!({
                    "projectId": project, "fromSessionId": from, "toSessionId": to,
                    "type": "query", "subject": "ping",
                });
                let started = Instant::now();
                let send = async {
                    let sent = api.post("/api/mail", &body).await;
                    (sent, Instant::now())
                };
                let ((sent, sent_at), woken) = tokio::join!(send, waiter);
                sent?;
                send_samples.push(sent_at.duration_since(started));
                let (answer, at) = woken??;
                let messages: Vec<Value> = serde_json::from_str(&answer)?;
                if messages.len() != 1 {
                    bail!("the waiter got {} messages, not 1", messages.len());
                }
                since = messages[0]["createdAt"].as_i64().context("createdAt")?;
                samples.push(at.duration_since(started));
            }
            let trips_after = redis_round_trips(api).await?;
            let s = Samples::new(samples);
            // The figure is upstream's wait; `ack=true` (exactly once, `maestro mail wait
            // --ack`) is shown beside it without a target of its own.
            let row = if ack {
                Row::info("mail wake p99, wait ack=true", s.percentile_ms(99.0), "ms")
            } else {
                Row::at_most(
                    "mail wake p99",
                    s.percentile_ms(99.0),
                    "ms",
                    self.mail_target_ms(),
                )
            };
            let mut detail = s.summary();
            detail["send"] = Samples::new(send_samples).summary();
            rows.push(row.with_detail(detail));
            // Each trip is two requests: the wait and the send.
            if !ack && let (Some(before), Some(after)) = (trips_before, trips_after) {
                let requests = 2 * s.len() as u64;
                rows.push(round_trip_row("mail wake", requests, before, after));
            }
        }
        Ok(rows)
    }

    /// An agent's hook parked on `GET /api/approvals/:id/wait`, then a human's decision: from
    /// the decision going out to the hook's answer (the wake-up), and, beside it, the whole
    /// cycle the agent waits through minus the human (ask, decide, woken).
    /// A session with 10,000 transcript entries (uploaded as a host does, 500 at a time):
    /// how long the phone waits for its first page (the newest 100), and for the oldest 100.
    async fn transcript(&self, api: &Api) -> Result<Vec<Row>> {
        const ENTRIES: usize = 10_000;
        const BATCH: usize = 500;
        let project = api.create_project("bench transcript").await?;
        let session = api.create_session(&project, "working").await?;
        let path = format!("/api/sessions/{session}/transcript");
        for b in 0..ENTRIES / BATCH {
            let entries: Vec<Value> = (0..BATCH)
                .map(|i| {
                    let n = b * BATCH + i;
                    match n % 4 {
                        0 => json!({ "kind": "assistant", "text": format!("Step {n}: {}", "reading the code and deciding what to change next. ".repeat(4)) }),
                        1 => json!({ "kind": "tool_call", "tool": "Bash", "callId": format!("call_{n}"), "summary": "cargo test --workspace", "input": "{\n  \"command\": \"cargo test --workspace\"\n}" }),
                        2 => json!({ "kind": "tool_result", "callId": format!("call_{}", n - 1), "output": "running 42 tests\ntest a ... ok\ntest b ... ok\n… 40 more lines" }),
                        _ => json!({ "kind": "edit", "tool": "Edit", "path": "src/lib.rs", "diff": "@@ -1,3 +1,3 @@\n fn add(a: i32, b: i32) -> i32 {\n-    a + b + 1\n+    a + b\n }\n" }),
                    }
                })
                .collect();
            let upload = json!({
                "path": "/bench/transcript.jsonl",
                "start": b * 1000,
                "end": (b + 1) * 1000,
                "entries": entries,
            });
            api.post(&path, &upload).await?;
        }
        let runs = 200;
        let mut rows = Vec::new();
        for (figure, query, target) in [
            (
                "transcript first page p99 (10,000 entries)",
                "limit=100",
                Some(20.0),
            ),
            (
                "transcript oldest page p99 (after=0)",
                "after=0&limit=100",
                None,
            ),
        ] {
            let url = format!("{path}?{query}");
            let mut samples = Vec::with_capacity(runs);
            for _ in 0..runs {
                let started = Instant::now();
                let page = api.get(&url).await?;
                samples.push(started.elapsed());
                let got = page["entries"].as_array().map_or(0, Vec::len);
                if got != 100 || page["last"] != ENTRIES {
                    bail!("{query}: {got} entries, last {}", page["last"]);
                }
            }
            let s = Samples::new(samples);
            let row = match target {
                Some(t) => Row::at_most(figure, s.percentile_ms(99.0), "ms", t),
                None => Row::info(figure, s.percentile_ms(99.0), "ms"),
            };
            rows.push(row.with_detail(s.summary()));
        }
        Ok(rows)
    }

    async fn approval(&self, api: &Api) -> Result<Vec<Row>> {
        let project = api.create_project("bench approvals").await?;
        let session = api.create_session(&project, "working").await?;
        let trips = self.plan.mail_trips;
        let mut wakes = Vec::with_capacity(trips);
        let mut cycles = Vec::with_capacity(trips);
        let deadline = Instant::now() + Duration::from_secs(300);
        for i in 0..trips {
            if Instant::now() > deadline {
                bail!("approval round trip: over 300 s");
            }
            let asked = Instant::now();
            let created = api
                .post(
                    &format!("/api/sessions/{session}/approvals"),
                    &json!({
                        "agentTool": "claude-code", "toolName": "Bash",
                        "input": { "command": format!("make step-{i}") },
                    }),
                )
                .await?;
            let asking = asked.elapsed();
            let id = created["id"].as_str().context("approval id")?.to_owned();
            let url = format!("{}/api/approvals/{id}/wait?timeout=10000", api.base);
            let http = api.http.clone();
            let waiter = tokio::spawn(async move {
                let body: Value = http
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await?;
                anyhow::Ok((body, Instant::now()))
            });
            wait_parked(api, "maestro_approval_waiters").await?;
            let decided_at = Instant::now();
            let decision = format!("/api/approvals/{id}/decision");
            let allow = json!({ "decision": "allow" });
            let (decided, woken) = tokio::join!(api.post(&decision, &allow), waiter);
            decided?;
            let (answer, at) = woken??;
            if answer["status"] != "allowed" {
                bail!("the waiter got {answer}");
            }
            let wake = at.duration_since(decided_at);
            wakes.push(wake);
            // Leaves out the wait for the waiter to park, a bench artefact.
            cycles.push(asking + wake);
        }
        let wake = Samples::new(wakes);
        let cycle = Samples::new(cycles);
        Ok(vec![
            Row::at_most(
                "approval round trip p99",
                wake.percentile_ms(99.0),
                "ms",
                5.0,
            )
            .with_detail(wake.summary()),
            Row::info(
                "approval ask + decide + wake p99",
                cycle.percentile_ms(99.0),
                "ms",
            )
            .with_detail(cycle.summary()),
        ])
    }

    /// The liveness sweep's cost with 10,000 sessions online and idle (beating with a long
    /// TTL, nothing due): the server's CPU time over 10 s of 250 ms sweeps, per sweep. Before
    /// the deadline indexes every sweep read every presence record.
    async fn sweep(&self) -> Result<Row> {
        const SESSIONS: usize = 10_000;
        const WINDOW: Duration = Duration::from_secs(10);
        const INTERVAL_MS: u64 = 250;
        let store = Store::new(self.backend, &self.tmp.join("sweep"));
        let interval = INTERVAL_MS.to_string();
        let server = store.start(
            &self.bin,
            &[
                ("HEARTBEAT_TTL_MS", "3600000"),
                ("SWEEP_INTERVAL_MS", interval.as_str()),
            ],
        )?;
        let api = Api::new(&server.url())?;
        let project = api.create_project("bench sweep").await?;
        api.create_beating_sessions(&project, SESSIONS).await?;
        // Let the writes settle, then measure a quiet server.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let before = cpu_time(server.pid())?;
        tokio::time::sleep(WINDOW).await;
        let used = cpu_time(server.pid())?.saturating_sub(before);
        let sweeps = WINDOW.as_millis() as f64 / INTERVAL_MS as f64;
        Ok(Row::at_most(
            "sweep cost, 10,000 idle sessions (CPU per sweep)",
            ms(used) / sweeps,
            "ms",
            1.0,
        )
        .with_detail(json!({
            "sessions": SESSIONS,
            "windowSecs": WINDOW.as_secs(),
            "sweepIntervalMs": INTERVAL_MS,
            "serverCpuMs": ms(used),
        })))
    }

    /// wrk, 50 connections, on `GET /api/tasks?projectId=` with 1,000 tasks.
    async fn list(&self, api: &Api, server: &Server, project: &str) -> Result<Vec<Row>> {
        let n = api.count_tasks(project).await?;
        if n != self.plan.list_tasks {
            bail!("the project has {n} tasks, not {}", self.plan.list_tasks);
        }
        let url = format!("{}/api/tasks?projectId={project}", server.url());
        let (c, d) = (
            self.plan.connections,
            Duration::from_secs(self.plan.http_secs),
        );
        let trips_before = redis_round_trips(api).await?;
        let r = tokio::task::spawn_blocking(move || wrk::run(&url, c, d, None)).await??;
        let trips_after = redis_round_trips(api).await?;
        let detail = wrk_detail(&r);
        let mut rate = Row::at_least("list throughput", r.requests_per_sec, "req/s", 4_500.0)
            .with_detail(detail.clone());
        let mut p99 = Row::at_most("list p99", r.p99_ms, "ms", 50.0).with_detail(detail);
        if r.non_2xx > 0 || r.socket_errors > 0 {
            let why = format!("{} non-2xx, {} socket errors", r.non_2xx, r.socket_errors);
            rate = rate.failed(&why);
            p99 = p99.failed(&why);
        }
        let mut rows = vec![rate, p99];
        if let (Some(before), Some(after)) = (trips_before, trips_after) {
            rows.push(round_trip_row("list", r.requests, before, after));
        }
        Ok(rows)
    }

    /// wrk, 50 connections, `POST /api/tasks`; afterwards every acknowledged task must be
    /// stored.
    async fn create(&self, api: &Api, server: &Server) -> Result<Vec<Row>> {
        let project = api.create_project("bench create").await?;
        let script = self.tmp.join("create.lua");
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\n\
                 wrk.body = '{{\"projectId\":\"{project}\",\"title\":\"bench task\"}}'\n\
                 wrk.headers[\"Content-Type\"] = \"application/json\"\n"
            ),
        )?;
        let url = format!("{}/api/tasks", server.url());
        let (c, d) = (
            self.plan.connections,
            Duration::from_secs(self.plan.http_secs),
        );
        let trips_before = redis_round_trips(api).await?;
        let r = tokio::task::spawn_blocking(move || wrk::run(&url, c, d, Some(&script))).await??;
        let trips_after = redis_round_trips(api).await?;
        let stored = api.count_tasks(&project).await?;
        let mut detail = wrk_detail(&r);
        detail["stored"] = json!(stored);
        let mut row = Row::at_least("create throughput", r.requests_per_sec, "req/s", 7_500.0)
            .with_detail(detail);
        if r.non_2xx > 0 || r.socket_errors > 0 {
            row = row.failed(&format!(
                "{} non-2xx, {} socket errors",
                r.non_2xx, r.socket_errors
            ));
        }
        if (stored as u64) < r.ok_responses() {
            row = row.failed(&format!(
                "{stored} stored of {} acknowledged",
                r.ok_responses()
            ));
        }
        let mut rows = vec![row];
        if let (Some(before), Some(after)) = (trips_before, trips_after) {
            rows.push(round_trip_row("create", r.requests, before, after));
        }
        Ok(rows)
    }

    /// A `/ui` socket reconnecting with `lastSeq` 1,000 events behind: from the connect to the
    /// 1,000th replayed event, each checked in order.
    async fn replay(&self, addr: SocketAddr, project: &str) -> Result<Row> {
        let behind = self.plan.replay_events;
        let mut probe = Sio::connect(addr, "/ui", &json!({})).await?;
        let sync = probe
            .call("state:sync", json!({ "projectId": project }))
            .await?;
        probe.close().await;
        let head = sync["seqs"][project].as_u64().context("no head seq")?;
        if head < behind {
            bail!("the project has {head} events, fewer than {behind}");
        }
        let auth = json!({ "projectId": project, "lastSeq": head - behind });
        let mut samples = Vec::with_capacity(self.plan.replay_trials);
        let deadline = Instant::now() + Duration::from_secs(300);
        for _ in 0..self.plan.replay_trials {
            if Instant::now() > deadline {
                bail!("replay: over 300 s");
            }
            let started = Instant::now();
            let mut sio = Sio::connect(addr, "/ui", &auth).await?;
            let mut expected = head - behind + 1;
            while expected <= head {
                let packet = sio.read().await?.context("closed during the replay")?;
                if !packet.starts_with("42/ui,[") {
                    continue;
                }
                let seq = envelope_seq(&packet).context("an event without seq")?;
                if seq != expected {
                    bail!("replay delivered seq {seq}, expected {expected}");
                }
                expected += 1;
            }
            samples.push(started.elapsed());
            sio.close().await;
        }
        let s = Samples::new(samples);
        Ok(Row::at_most(
            "replay p99 (1,000 events)",
            s.percentile_ms(99.0),
            "ms",
            50.0,
        )
        .with_detail(s.summary()))
    }

    /// N idle `/ui` sockets: the server's RSS per socket, then one task created at a time and
    /// the time until the last socket has its `task:created`.
    async fn fanout(&self, api: &Api, server: &Server) -> Result<Vec<Row>> {
        let project = api.create_project("bench fan-out").await?;
        let shared = Arc::new(Shared::new());
        let rss_before = server.rss_kib()?;
        // What an event costs the server with no socket to send it to (the create itself):
        // taken off the fan-out's CPU before it is compared with the floor.
        let baseline_events = self.plan.fanout_events * 4;
        let cpu_before = cpu_times(server.pid())?;
        for _ in 0..baseline_events {
            api.create_task(&project, "fan-out").await?;
        }
        let cpu_after = cpu_times(server.pid())?;
        let per_event = |t: Duration| ms(t) / baseline_events as f64;
        let baseline_ms =
            per_event((cpu_after.0 + cpu_after.1).saturating_sub(cpu_before.0 + cpu_before.1));
        let baseline_user_ms = per_event(cpu_after.0.saturating_sub(cpu_before.0));
        let mut crowd = Crowd::start(
            server.addr,
            "42/ui,[\"task:created\"",
            shared.clone() as Arc<dyn OnEvent>,
        )?;
        let mut rows = Vec::new();
        let mut connected = 0;
        for &n in &self.plan.fanout_sockets {
            crowd.grow(n - connected)?;
            connected = n;
            wait_connected(
                std::slice::from_mut(&mut crowd),
                &shared,
                n,
                Duration::from_secs(300),
            )
            .await?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rss = server.rss_kib()?;
            let per_socket_kb = rss.saturating_sub(rss_before) as f64 * 1024.0 / n as f64 / 1000.0;
            let label = count_label(n);
            rows.push(
                Row::at_most(
                    &format!("memory: RSS per idle socket ({label} sockets)"),
                    per_socket_kb,
                    "KB",
                    20.0,
                )
                .with_detail(json!({
                    "rss_before_kib": rss_before, "rss_kib": rss, "sockets": n,
                })),
            );

            let target = if n <= 1_000 { 15.0 } else { 100.0 };
            // The floor runs beside the server's events, one of its own after each of the
            // server's ([`FloorRun`]); it sends packets of the size this first event (not
            // measured) shows.
            let mut floor = None;
            if n <= FLOOR_MAX_SOCKETS {
                self.one_event(api, &project, &shared, n).await?;
                eprintln!(
                    "bench[{}]: the loopback floor ({label} sockets) beside the server",
                    self.backend.name()
                );
                let packet = shared.packet_len.load(Ordering::Relaxed);
                floor = Some(FloorRun::start(n, packet).await);
            }
            let mut samples = Vec::with_capacity(self.plan.fanout_events);
            let (mut firsts, mut posts) = (Vec::new(), Vec::new());
            let mut lost = None;
            // The server's user and kernel time apart, the bench's as a whole.
            let cpu_before = (cpu_times(server.pid())?, cpu_time(std::process::id())?);
            for i in 0..self.plan.fanout_events {
                shared.received.store(0, Ordering::SeqCst);
                shared.last_ns.store(0, Ordering::SeqCst);
                shared.first_ns.store(u64::MAX, Ordering::SeqCst);
                shared.expected.store(n, Ordering::SeqCst);
                let sent_ns = shared.base.elapsed().as_nanos() as u64;
                api.create_task(&project, "fan-out").await?;
                posts.push(Duration::from_nanos(
                    (shared.base.elapsed().as_nanos() as u64).saturating_sub(sent_ns),
                ));
                let all = tokio::time::timeout(Duration::from_secs(10), shared.all.notified());
                if all.await.is_err() {
                    lost = Some(format!(
                        "event {i}: {} of {n} sockets got it within 10 s",
                        shared.received.load(Ordering::SeqCst)
                    ));
                    if let Some(Err(e)) = crowd.finished() {
                        lost = Some(format!("{lost:?}; the sockets' thread failed: {e:#}"));
                    }
                    break;
                }
                let last = shared.last_ns.load(Ordering::SeqCst);
                let first = shared.first_ns.load(Ordering::SeqCst);
                firsts.push(Duration::from_nanos(first.saturating_sub(sent_ns)));
                samples.push(Duration::from_nanos(last.saturating_sub(sent_ns)));
                tokio::time::sleep(Duration::from_millis(5)).await;
                if let Some(Ok(run)) = floor.as_mut()
                    && let Err(e) = run.fire().await
                {
                    floor = Some(Err(e));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            shared.expected.store(usize::MAX, Ordering::SeqCst);
            let events = samples.len().max(1) as f64;
            let samples_len = samples.len();
            let per_event = |used: Duration| round3(ms(used) / events);
            let (user, system) = cpu_times(server.pid())?;
            let server_user = per_event(user.saturating_sub(cpu_before.0.0));
            let server_cpu =
                per_event((user + system).saturating_sub(cpu_before.0.0 + cpu_before.0.1));
            let bench_cpu = per_event(cpu_time(std::process::id())?.saturating_sub(cpu_before.1));
            let server_us_per_socket = (server_cpu - baseline_ms).max(0.0) * 1000.0 / n as f64;
            let user_us_per_socket = (server_user - baseline_user_ms).max(0.0) * 1000.0 / n as f64;
            let s = Samples::new(samples);
            let mut row = Row::at_most(
                &format!("fan-out p99 ({label} /ui sockets)"),
                s.percentile_ms(99.0),
                "ms",
                target,
            )
            .with_detail(json!({
                "last_socket": s.summary(),
                "first_socket": Samples::new(firsts).summary(),
                "post_answered": Samples::new(posts).summary(),
                "server_cpu_ms_per_event": server_cpu,
                "server_cpu_ms_per_event_without_sockets": round3(baseline_ms),
                "bench_cpu_ms_per_event": bench_cpu,
            }));
            if let Some(why) = lost {
                row = row.failed(&why);
                rows.push(row);
                break;
            }
            rows.push(row);
            rows.push(
                Row::info(
                    &format!("fan-out: server CPU per socket per event ({label})"),
                    round3(server_us_per_socket),
                    "µs",
                )
                .with_detail(json!({
                    "server_cpu_ms_per_event": server_cpu,
                    "without_sockets_ms": round3(baseline_ms),
                    "events": samples_len,
                })),
            );
            // The part of it in the server's own code (the rest is the kernel's send, which
            // the floor measures): steadier from run to run than the whole.
            rows.push(
                Row::info(
                    &format!("fan-out: server user-space CPU per socket per event ({label})"),
                    round3(user_us_per_socket),
                    "µs",
                )
                .with_detail(json!({
                    "server_user_ms_per_event": server_user,
                    "without_sockets_user_ms": round3(baseline_user_ms),
                    "events": samples_len,
                })),
            );
            if let Some(run) = floor {
                rows.extend(floor_rows(
                    &label,
                    server_us_per_socket,
                    run.and_then(FloorRun::finish),
                ));
            }
        }
        drop(crowd);
        Ok(rows)
    }

    /// One event to the `n` sockets of `shared`, not measured: it shows the packet's size.
    async fn one_event(&self, api: &Api, project: &str, shared: &Shared, n: usize) -> Result<()> {
        shared.received.store(0, Ordering::SeqCst);
        shared.expected.store(n, Ordering::SeqCst);
        api.create_task(project, "fan-out").await?;
        tokio::time::timeout(Duration::from_secs(10), shared.all.notified())
            .await
            .with_context(|| {
                format!(
                    "{} of {n} sockets got the first event within 10 s",
                    shared.received.load(Ordering::SeqCst)
                )
            })?;
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok(())
    }

    /// An agent process beating every 200 ms is SIGKILLed; the time until the server's
    /// `notify:session_failed` reaches a WebSocket client.
    async fn crash(&self) -> Result<Row> {
        let ttl = self.plan.crash_ttl_ms;
        let store = Store::new(self.backend, &self.tmp.join("crash"));
        let server = store.start(&self.bin, &[("HEARTBEAT_TTL_MS", &ttl.to_string())])?;
        let api = Api::new(&server.url())?;
        let project = api.create_project("bench crash").await?;
        let session = api.create_session(&project, "working").await?;
        let mut agent = Command::new(std::env::current_exe()?)
            .args(["--agent-url", &server.url(), "--agent-session", &session])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let result = async {
            let deadline = Instant::now() + Duration::from_secs(10);
            while api.get(&format!("/api/sessions/{session}")).await?["online"] != json!(true) {
                if Instant::now() > deadline {
                    bail!("the agent's session never came online");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let (mut ws, _) =
                tokio_tungstenite::connect_async(format!("ws://{}/", server.addr)).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let killed = Instant::now();
            agent.kill()?;
            agent.wait()?;
            let limit = Duration::from_millis(ttl) + Duration::from_secs(15);
            let noticed = tokio::time::timeout(limit, async {
                while let Some(msg) = ws.next().await {
                    if let Message::Text(text) = msg?
                        && text.contains("\"notify:session_failed\"")
                        && text.contains(&session)
                    {
                        return anyhow::Ok(killed.elapsed());
                    }
                }
                bail!("the WebSocket closed")
            })
            .await
            .context("no notify:session_failed in time")??;
            let status = api.get(&format!("/api/sessions/{session}")).await?["status"].clone();
            let secs = noticed.as_secs_f64();
            let row = Row::at_most(
                &format!("crash detection (TTL {} s)", ttl as f64 / 1000.0),
                secs,
                "s",
                (ttl + 1_000) as f64 / 1000.0,
            )
            .with_detail(
                json!({ "ttl_ms": ttl, "detected_ms": round3(ms(noticed)), "status": status }),
            );
            Ok(if status == "failed" {
                row
            } else {
                row.failed(&format!("status {status}"))
            })
        }
        .await;
        let _ = agent.kill();
        let _ = agent.wait();
        result
    }

    /// `maestro serve` on a store holding 10,000 tasks: from spawning the process to the first
    /// 200 on `/health`.
    async fn startup(&self) -> Result<Row> {
        let store = Store::new(self.backend, &self.tmp.join("startup"));
        {
            let mut server = store.start(&self.bin, &[])?;
            let api = Api::new(&server.url())?;
            let project = api.create_project("bench start-up").await?;
            api.create_tasks(&project, self.plan.startup_tasks).await?;
            let n = api.count_tasks(&project).await?;
            if n != self.plan.startup_tasks {
                bail!("stored {n} tasks, not {}", self.plan.startup_tasks);
            }
            server.stop();
        }
        let (bin, runs) = (self.bin.clone(), self.plan.startup_runs);
        let samples = tokio::task::spawn_blocking(move || -> Result<Vec<Duration>> {
            let mut samples = Vec::with_capacity(runs);
            for _ in 0..runs {
                samples.push(time_startup(&store, &bin)?);
            }
            Ok(samples)
        })
        .await??;
        let s = Samples::new(samples);
        let mut detail = s.summary();
        detail["tasks"] = json!(self.plan.startup_tasks);
        Ok(Row::at_most(
            &format!("start-up, 10,000 tasks (median of {runs})"),
            s.percentile_ms(50.0),
            "ms",
            100.0,
        )
        .with_detail(detail))
    }
}

fn time_startup(store: &Store, bin: &Path) -> Result<Duration> {
    let port = free_port()?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    let mut child = store.spawn(bin, port, &[])?;
    let took = loop {
        if health_ok(addr) {
            break Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!("maestro serve exited at start ({status})"));
        }
        if started.elapsed() > Duration::from_secs(30) {
            break Err(anyhow::anyhow!("no 200 on /health within 30 s"));
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    stop_child(&mut child);
    took
}

/// What the fan-out's sockets share with the driver (one or more crowds feed the same one).
pub(crate) struct Shared {
    pub(crate) base: Instant,
    /// Sockets that got the current event.
    pub(crate) received: AtomicUsize,
    /// When the latest of them got it, in ns since `base`.
    pub(crate) last_ns: AtomicU64,
    /// When the first of them got it.
    pub(crate) first_ns: AtomicU64,
    /// How many sockets must get it.
    pub(crate) expected: AtomicUsize,
    pub(crate) all: Notify,
    pub(crate) connected: AtomicUsize,
    /// The length of the latest event packet a socket got.
    pub(crate) packet_len: AtomicUsize,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            received: AtomicUsize::new(0),
            last_ns: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            expected: AtomicUsize::new(usize::MAX),
            all: Notify::new(),
            connected: AtomicUsize::new(0),
            packet_len: AtomicUsize::new(0),
        }
    }
}

impl OnEvent for Shared {
    fn received(&self, len: usize) {
        self.packet_len.store(len, Ordering::Relaxed);
        let at = self.base.elapsed().as_nanos() as u64;
        self.last_ns.fetch_max(at, Ordering::SeqCst);
        self.first_ns.fetch_min(at, Ordering::SeqCst);
        let got = self.received.fetch_add(1, Ordering::SeqCst) + 1;
        if got == self.expected.load(Ordering::SeqCst) {
            self.all.notify_one();
        }
    }

    fn connected(&self) {
        self.connected.fetch_add(1, Ordering::SeqCst);
    }
}

/// The value of the unlabelled series `name` on the server's `/metrics`, if it has one.
pub(crate) async fn metric(api: &Api, name: &str) -> Result<Option<f64>> {
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok()))
}

/// The Redis backend's count of round trips to Redis so far (`None` on the local backend).
pub(crate) async fn redis_round_trips(api: &Api) -> Result<Option<u64>> {
    Ok(metric(api, "maestro_redis_round_trips_total")
        .await?
        .map(|v| v as u64))
}

/// `Redis round trips per request (<what>)`: the counter's growth over `requests` requests.
fn round_trip_row(what: &str, requests: u64, before: u64, after: u64) -> Row {
    let trips = after.saturating_sub(before);
    Row::info(
        &format!("Redis round trips per request ({what})"),
        round3(trips as f64 / requests.max(1) as f64),
        "round trips",
    )
    .with_detail(json!({ "requests": requests, "round_trips": trips }))
}

/// Waits until the server's `/metrics` gauge `gauge` counts a parked waiter, then a moment more
/// so it is waiting on the event stream.
async fn wait_parked(api: &Api, gauge: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let parked = metric(api, gauge).await?.unwrap_or(0.0);
        if parked >= 1.0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no waiter parked ({gauge})");
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

/// RSS one second after start, and beside it the two parts of it: the memory the server
/// allocated (heap, stacks) and the pages of its binary and libraries it has mapped, which
/// are the page cache's and move with it (the kernel maps up to 64 KB around each page of
/// code that runs).
fn idle_memory(server: &Server) -> Vec<Row> {
    let mb = |kib: u64| kib as f64 * 1024.0 / 1e6;
    let mut rows = vec![match server.rss_kib() {
        Ok(kib) => Row::at_most("memory: RSS idle", mb(kib), "MB", 20.0)
            .with_detail(json!({ "rss_kib": kib })),
        Err(e) => error_row("memory: RSS idle", "<= 20 MB", &e),
    }];
    for (name, field) in [
        ("memory: RSS idle, allocated (anonymous)", "RssAnon:"),
        ("memory: RSS idle, code and files mapped", "RssFile:"),
    ] {
        if let Ok(kib) = crate::server::status_kib(server.pid(), field) {
            rows.push(Row::info(name, mb(kib), "MB").with_detail(json!({ "kib": kib })));
        }
    }
    rows
}

fn wrk_detail(r: &wrk::WrkResult) -> Value {
    json!({
        "requests": r.requests, "seconds": r.seconds, "p50_ms": r.p50_ms, "p90_ms": r.p90_ms,
        "p99_ms": r.p99_ms, "non_2xx": r.non_2xx, "socket_errors": r.socket_errors,
    })
}

pub(crate) fn error_row(figure: &str, target: &str, e: &anyhow::Error) -> Row {
    eprintln!("bench: {figure}: {e:#}");
    let mut row = Row::not_measured(figure, target, &format!("error: {e:#}"));
    row.verdict = crate::report::Verdict::Miss;
    row
}

/// The loopback floor for `n` sockets ([`crate::floor`]), measured event by event between the
/// server's: a writer process and a crowd of its own, sending a packet of the size the
/// server's fan-out sent. Interleaved so that both figures of a ratio see the same machine:
/// measured one after the other, half a minute apart, the floor alone moved by up to 30 %
/// between runs on a shared host.
struct FloorRun {
    floor: Floor,
    shared: Arc<Shared>,
    crowd: Crowd,
    n: usize,
    packet_len: usize,
    cpu_before: Duration,
    samples: Vec<Duration>,
}

impl FloorRun {
    async fn start(n: usize, packet_len: usize) -> Result<Self> {
        let prefix = "42/ui,[\"task:created\"";
        let floor = Floor::start(prefix, packet_len.max(prefix.len() + 4))?;
        let shared = Arc::new(Shared::new());
        let mut crowd = Crowd::start(floor.addr, prefix, shared.clone() as Arc<dyn OnEvent>)?;
        crowd.grow(n)?;
        wait_connected(
            std::slice::from_mut(&mut crowd),
            &shared,
            n,
            Duration::from_secs(120),
        )
        .await
        .context("the floor writer's sockets")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let cpu_before = cpu_time(floor.pid())?;
        Ok(Self {
            floor,
            shared,
            crowd,
            n,
            packet_len,
            cpu_before,
            samples: Vec::new(),
        })
    }

    /// One event: the frame to every socket, and the wait until all of them have it.
    async fn fire(&mut self) -> Result<()> {
        let (shared, n) = (&self.shared, self.n);
        shared.received.store(0, Ordering::SeqCst);
        shared.last_ns.store(0, Ordering::SeqCst);
        shared.expected.store(n, Ordering::SeqCst);
        let sent_ns = shared.base.elapsed().as_nanos() as u64;
        let all = shared.all.notified();
        let sent = tokio::task::block_in_place(|| self.floor.fire())?;
        if sent != n {
            bail!("the floor writer had {sent} sockets, not {n}");
        }
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            bail!(
                "floor event {}: {} of {n} sockets got it within 10 s",
                self.samples.len(),
                shared.received.load(Ordering::SeqCst)
            );
        }
        let last = shared.last_ns.load(Ordering::SeqCst);
        self.samples
            .push(Duration::from_nanos(last.saturating_sub(sent_ns)));
        Ok(())
    }

    /// The writer's CPU per socket per event, in µs, and the details.
    fn finish(self) -> Result<(f64, Value)> {
        let cpu = ms(cpu_time(self.floor.pid())?.saturating_sub(self.cpu_before));
        let events = self.samples.len().max(1) as f64;
        let us_per_socket = cpu * 1000.0 / events / self.n as f64;
        drop(self.crowd);
        Ok((
            us_per_socket,
            json!({
                "writer_cpu_ms_per_event": round3(cpu / events),
                "packet_bytes": self.packet_len,
                "events": self.samples.len(),
                "interleaved": true,
                "last_socket": Samples::new(self.samples).summary(),
            }),
        ))
    }
}

/// Waits until `n` sockets of `crowds` have connected (as `shared` counts them), or fails when
/// a crowd's thread stops or after `limit`.
pub(crate) async fn wait_connected(
    crowds: &mut [Crowd],
    shared: &Shared,
    n: usize,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while shared.connected.load(Ordering::Relaxed) < n {
        for crowd in crowds.iter_mut() {
            if let Some(ended) = crowd.finished() {
                ended?;
                bail!("a crowd's thread stopped");
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} sockets connected in {} s",
                shared.connected.load(Ordering::Relaxed),
                limit.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Most sockets the floor is measured for: the bench holds the server's sockets and the
/// floor's at once, within the open-files limit.
const FLOOR_MAX_SOCKETS: usize = 5_000;

/// The floor's figure and the server's ratio to it (target: 1.2).
fn floor_rows(label: &str, server_us: f64, floor: Result<(f64, Value)>) -> Vec<Row> {
    let figure = format!("fan-out: ratio to the loopback floor ({label})");
    match floor {
        Ok((floor_us, detail)) if floor_us > 0.0 => {
            let mut rows = Vec::new();
            // What the fan-out p99 compares with: the same crowd on the same machine, and
            // nothing but the writes.
            if let Some(p99) = detail["last_socket"]["p99_ms"].as_f64() {
                rows.push(Row::info(
                    &format!("loopback floor: p99 to the last socket ({label})"),
                    p99,
                    "ms",
                ));
            }
            rows.push(
                Row::info(
                    &format!("loopback floor: CPU per socket per event ({label})"),
                    round3(floor_us),
                    "µs",
                )
                .with_detail(detail),
            );
            rows.push(
                Row::at_most(&figure, round3(server_us / floor_us), "x", 1.2).with_detail(json!({
                    "server_us_per_socket": round3(server_us),
                    "floor_us_per_socket": round3(floor_us),
                })),
            );
            rows
        }
        Ok(_) => vec![Row::not_measured(
            &figure,
            "<= 1.2 x",
            "the floor measured no CPU time",
        )],
        Err(e) => vec![error_row(&figure, "<= 1.2 x", &e)],
    }
}

fn count_label(n: usize) -> String {
    crate::report::number(n as f64)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The hidden `--agent-url` mode: an agent that beats its session every 200 ms until it is
/// killed (at most 30 minutes).
pub fn agent(url: &str, session: &str) -> Result<()> {
    use std::io::{Read, Write};
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .parse()
        .context("the agent needs http://<ip>:<port>")?;
    let request = format!(
        "POST /api/sessions/{session}/heartbeat HTTP/1.1\r\nHost: {addr}\r\n\
         Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    let until = Instant::now() + Duration::from_secs(1_800);
    while Instant::now() < until {
        let beat = || -> std::io::Result<()> {
            let mut s = std::net::TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(request.as_bytes())?;
            let mut sink = Vec::new();
            s.read_to_end(&mut sink)?;
            Ok(())
        };
        if let Err(e) = beat() {
            eprintln!("bench agent: heartbeat failed: {e}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}
