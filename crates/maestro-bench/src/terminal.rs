//! The runner and live-terminal figures (`docs/runners.md`): keystroke to echo, spawn to first
//! output, one terminal flooded with 10 MB under ten viewers, and 100 terminals streaming at
//! once.
//!
//! Every figure runs real agents in real pseudo-terminals, started by a real runner from an
//! agents file written here. Echo and first output run `maestro serve` with `RUNNER=on`, the
//! default deployment (the runner inside the server); the 10 MB and 100-terminal figures run the
//! server with `RUNNER=off` and a `maestro runner` process beside it, so the server's memory
//! and CPU are the terminal hub's alone and the runner's (the hosts: PTY reads, their parsed
//! screens, the uplinks) are reported apart.
//!
//! The agents: `cat` with the terminal in raw mode (echo), `sh` (first output), and this
//! binary's hidden `--term-agent` modes ([`agent`]): deterministic output, written at a
//! measured pace without forking a process per line, each waiting for a gate file so the
//! measurement starts when the viewers are in place.
//!
//! Layout: [`run`] measures the selected figures; [`Fleet`] is one server, its runner, a
//! project and a task; [`Viewer`] a terminal viewer's WebSocket; [`agent`] the fake agents.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::api::Api;
use crate::figures::{Bench, error_row};
use crate::report::{Row, Samples, ms, round3};
use crate::server::{Server, Store, cpu_time, rss_kib, stop_child};

/// The machine id the server and its runner share, so every spawn lands on the runner here.
const MACHINE: &str = "bench-machine";
/// The longest any one step (a start, a message, a stop) may take before the figure fails.
const WAIT: Duration = Duration::from_secs(30);
/// How long a fake agent lives at most, whatever happens to the bench.
const AGENT_LIFE: Duration = Duration::from_secs(600);
/// Bytes per line of the flood agent, newline included.
const FLOOD_LINE: usize = 100;
/// What the flood agent prints after its output (`\n` becomes `\r\n` on the terminal).
const FLOOD_END: &[u8] = b"flood-end\n";
/// The viewers of the 10 MB figure: this many read, one more never does.
const READERS: usize = 9;

/// Measures the runner and terminal figures that `bench` selects; a figure that fails is
/// reported as such and the others go on.
pub async fn run(bench: &Bench) -> Vec<Row> {
    let mut rows = Vec::new();
    let name = bench.backend.name();
    if bench.wants("terminal-echo") || bench.wants("spawn-first-output") {
        match Fleet::start(bench, "term-echo", true).await {
            Ok(fleet) => {
                if bench.wants("terminal-echo") {
                    eprintln!("bench[{name}]: terminal echo");
                    match echo(bench, &fleet).await {
                        Ok(r) => rows.extend(r),
                        Err(e) => rows.push(error_row("terminal echo p99", "<= 15 ms", &e)),
                    }
                }
                if bench.wants("spawn-first-output") {
                    eprintln!("bench[{name}]: spawn to first output");
                    let row = first_output(bench, &fleet).await;
                    rows.push(row.unwrap_or_else(|e| {
                        error_row("spawn → first output p99", "<= 250 ms", &e)
                    }));
                }
                fleet.stop().await;
            }
            Err(e) => rows.push(error_row("terminal echo p99", "<= 15 ms", &e)),
        }
    }
    if bench.wants("terminal-10mb") {
        eprintln!("bench[{name}]: one terminal, 10 viewers, a flood of output");
        match flood(bench).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(error_row(
                "terminal flood: server RSS growth per terminal",
                "<= 512 KiB",
                &e,
            )),
        }
    }
    if bench.wants("terminals-100") {
        eprintln!(
            "bench[{name}]: {} terminals streaming",
            bench.plan.terminals
        );
        match many(bench).await {
            Ok(r) => rows.extend(r),
            Err(e) => rows.push(error_row(
                "terminals: server CPU per terminal",
                "(no target)",
                &e,
            )),
        }
    }
    rows
}

// ---- the figures ----

/// Keystroke to echo: one byte typed into `cat` (terminal in raw mode, so the byte comes back
/// exactly once and alone) by a viewer in control, timed until that byte comes back to the same
/// viewer. The path: viewer socket → hub → host socket → runner → PTY → `cat` → PTY → runner →
/// host socket → hub → viewer socket.
async fn echo(bench: &Bench, fleet: &Fleet) -> Result<Vec<Row>> {
    let sid = fleet.spawn("bench-echo").await?;
    let result = async {
        let mut viewer = Viewer::open(fleet.server.addr, &sid).await?;
        viewer.until_output(b"echo-ready", WAIT).await?;
        viewer.take_control().await?;
        let keys = bench.plan.echo_keys;
        let warmup = 20;
        let mut samples = Vec::with_capacity(keys);
        let deadline = Instant::now() + Duration::from_secs(120);
        for i in 0..warmup + keys {
            if Instant::now() > deadline {
                bail!("echo: over 120 s after {} keys", samples.len());
            }
            let key = b'a' + (i % 26) as u8;
            let sent = Instant::now();
            viewer.send_keys(&[key]).await?;
            loop {
                match viewer.next(Duration::from_secs(5)).await? {
                    Frame::Output(bytes) if bytes.contains(&key) => break,
                    // What followed the ready line, before the first key.
                    Frame::Output(_) if i == 0 => {}
                    Frame::Output(bytes) => {
                        bail!(
                            "typed {:?}, got {:?}",
                            key as char,
                            String::from_utf8_lossy(&bytes)
                        )
                    }
                    Frame::Event(e) if e["type"] == "error" => bail!("the hub refused: {e}"),
                    Frame::Event(_) => {}
                }
            }
            if i >= warmup {
                samples.push(sent.elapsed());
            }
        }
        viewer.close().await;
        let s = Samples::new(samples);
        let mut detail = s.summary();
        detail["agent"] = json!("sh -c 'stty raw -echo; exec cat' (RUNNER=on)");
        detail["warmup_keys"] = json!(warmup);
        Ok(vec![
            Row::at_most(
                "terminal echo p99 (key → echo, loopback)",
                s.percentile_ms(99.0),
                "ms",
                15.0,
            )
            .with_detail(detail.clone()),
            Row::info("terminal echo p50", s.percentile_ms(50.0), "ms").with_detail(detail),
        ])
    }
    .await;
    fleet.stop_session(&sid).await?;
    result
}

/// Spawn to first output: `POST /api/sessions/spawn` for an agent that prints one line and
/// sleeps, a viewer opened as soon as the spawn answers, timed until that line reaches it
/// (from the screen the hub sends on hello or from live output, whichever shows it first).
/// Each agent is stopped and seen `stopped` before the next spawn.
async fn first_output(bench: &Bench, fleet: &Fleet) -> Result<Row> {
    let trials = bench.plan.spawn_trials;
    let (mut totals, mut answered, mut connected) = (Vec::new(), Vec::new(), Vec::new());
    let mut hosted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    // One spawn first, not counted: the runner's first launch pays for cold caches.
    for i in 0..=trials {
        if Instant::now() > deadline {
            bail!("first output: over 300 s after {} spawns", totals.len());
        }
        let started = Instant::now();
        let sid = fleet.spawn("bench-first").await?;
        let spawn_took = started.elapsed();
        let seen = async {
            let mut viewer = Viewer::open(fleet.server.addr, &sid).await?;
            let connect_took = started.elapsed();
            let mut host_took = viewer.host_connected.then_some(connect_took);
            let marker = format!("first-output-{sid}");
            let mut seen = Vec::new();
            let deadline = Instant::now() + WAIT;
            let took = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match viewer.next(left).await? {
                    Frame::Output(bytes) => {
                        seen.extend_from_slice(&bytes);
                        if contains(&seen, marker.as_bytes()) {
                            break started.elapsed();
                        }
                    }
                    Frame::Event(e) if e["type"] == "snapshot" => seen.clear(),
                    Frame::Event(e) if e["type"] == "host" && e["connected"] == true => {
                        host_took.get_or_insert(started.elapsed());
                    }
                    Frame::Event(_) => {}
                }
            };
            viewer.close().await;
            anyhow::Ok((connect_took, host_took.unwrap_or(took), took))
        }
        .await;
        fleet.stop_session(&sid).await?;
        let (connect_took, host_took, took) = seen?;
        if i > 0 {
            answered.push(spawn_took);
            connected.push(connect_took);
            hosted.push(host_took);
            totals.push(took);
        }
    }
    let s = Samples::new(totals);
    Ok(Row::at_most(
        &format!("spawn → first output p99 ({trials} spawns)"),
        s.percentile_ms(99.0),
        "ms",
        250.0,
    )
    .with_detail(json!({
        "first_output": s.summary(),
        "spawn_answered": Samples::new(answered).summary(),
        "viewer_connected": Samples::new(connected).summary(),
        "host_connected": Samples::new(hosted).summary(),
        "agent": "sh -c 'printf first-output-$MAESTRO_SESSION_ID; exec sleep 600' (RUNNER=on)",
    })))
}

/// One agent writes `plan.flood_bytes` (100-byte lines) as fast as its terminal takes them,
/// first with no viewer, then with ten (nine read everything, one never reads its socket and
/// has a tiny receive buffer). Reports the agent's own write time with viewers over without,
/// whether each reading viewer got every byte or was resynchronised (and ended on the last
/// line), and the server's RSS growth for the terminal.
async fn flood(bench: &Bench) -> Result<Vec<Row>> {
    let fleet = Fleet::start(bench, "term-flood", false).await?;
    let result = flood_on(bench, &fleet).await;
    fleet.stop().await;
    result
}

async fn flood_on(bench: &Bench, fleet: &Fleet) -> Result<Vec<Row>> {
    let size = bench.plan.flood_bytes;
    let lines = size / FLOOD_LINE;
    // On the terminal every `\n` is `\r\n`.
    let on_terminal = (lines * (FLOOD_LINE + 1) + FLOOD_END.len() + 1) as u64;
    let label = format!("{} MB", crate::report::number(size as f64 / 1e6));

    // Alone: nobody watches (before and after the watched run, to bracket it).
    let alone_rss_before = fleet.server.rss_kib()?;
    let (alone, alone_bytes) = flood_alone(fleet, on_terminal).await?;
    let alone_rss_after = fleet.server.rss_kib()?;

    // Watched by ten.
    let rss_before = fleet.server.rss_kib()?;
    let runner_rss_before = fleet.runner_rss_kib()?;
    let sid = fleet.spawn("bench-flood").await?;
    let watched = async {
        fleet.until_metric("maestro_terminal_hosts", 1.0).await?;
        let counting = Arc::new(AtomicBool::new(false));
        let limit = Instant::now() + Duration::from_secs(180);
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..READERS {
            let viewer = Viewer::open(fleet.server.addr, &sid).await?;
            readers.spawn(read_flood(viewer, counting.clone(), limit));
        }
        let stalled = stalled_viewer(fleet.server.addr, &sid).await?;
        fleet
            .until_metric("maestro_terminal_viewers", (READERS + 1) as f64)
            .await?;
        // Let the hellos and screens settle before the output starts.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rss_connected = fleet.server.rss_kib()?;
        let bytes_before = fleet.metric("maestro_terminal_bytes_in_total").await?;
        let resyncs_before = fleet.metric("maestro_terminal_resyncs_total").await?;
        counting.store(true, Ordering::SeqCst);
        std::fs::write(fleet.work.join(format!("go-{sid}")), b"")?;
        let took = fleet.agent_elapsed(&sid).await?;
        let mut got = Vec::new();
        let mut viewers = Vec::new();
        while let Some(done) = readers.join_next().await {
            let (received, viewer) = done?;
            got.push(received);
            viewers.push(viewer);
        }
        let bytes_in = fleet.metric("maestro_terminal_bytes_in_total").await? - bytes_before;
        let resyncs = fleet.metric("maestro_terminal_resyncs_total").await? - resyncs_before;
        let mut metrics = json!({});
        for name in [
            "maestro_terminals_open",
            "maestro_terminal_hosts",
            "maestro_terminal_viewers",
        ] {
            metrics[name] = json!(fleet.metric(name).await?);
        }
        // The stalled viewer is still connected, and the readers too.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after = fleet.server.rss_kib()?;
        let runner_rss_after = fleet.runner_rss_kib()?;
        for v in viewers {
            v.close().await;
        }
        drop(stalled);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_closed = fleet.server.rss_kib()?;
        anyhow::Ok((
            took,
            got,
            (bytes_in, resyncs, metrics),
            [rss_connected, rss_after, rss_closed, runner_rss_after],
        ))
    }
    .await;
    fleet.stop_session(&sid).await?;
    let (
        took,
        got,
        (bytes_in, resyncs, metrics),
        [rss_connected, rss_after, rss_closed, runner_rss_after],
    ) = watched?;
    fleet
        .until_metric_at_most("maestro_terminal_hosts", 0.0)
        .await?;
    let (alone_again, alone_again_bytes) = flood_alone(fleet, on_terminal).await?;

    let alone_mean = (alone + alone_again) / 2;
    let ratio = took.as_secs_f64() / alone_mean.as_secs_f64().max(1e-9);
    let complete = got
        .iter()
        .filter(|r| r.ended && (r.snapshots > 0 || r.bytes == on_terminal))
        .count();
    let exact = got
        .iter()
        .filter(|r| r.snapshots == 0 && r.bytes == on_terminal)
        .count();
    let per_viewer: Vec<Value> = got
        .iter()
        .map(|r| {
            json!({
                "bytes": r.bytes, "snapshots": r.snapshots, "ended": r.ended, "error": r.error,
            })
        })
        .collect();
    let growth = rss_after.saturating_sub(rss_before);
    let mut complete_row = Row::at_least(
        &format!("terminal {label}: reading viewers with every byte or a resync"),
        complete as f64,
        "viewers",
        READERS as f64,
    )
    .with_detail(json!({
        "exact": exact,
        "resynced": complete - exact,
        "bytes_on_terminal": on_terminal,
        "hub_bytes_in": bytes_in,
        "hub_resyncs": resyncs,
        "hub_metrics_with_viewers": metrics,
        "viewers": per_viewer,
    }));
    if (bytes_in as u64) < on_terminal {
        // By design (docs/runners.md): the host's uplink queue overflowed, it sent a fresh
        // hello and screen, and every viewer got a snapshot.
        complete_row.shown = format!(
            "{} (the host resynced: the hub got {} of {} bytes)",
            complete_row.shown,
            crate::report::number(bytes_in),
            crate::report::number(on_terminal as f64)
        );
    }
    Ok(vec![
        Row::info(
            &format!("terminal {label}: agent write time, 10 viewers / none"),
            ratio,
            "x",
        )
        .with_detail(json!({
            "alone_ms": [round3(ms(alone)), round3(ms(alone_again))],
            "alone_hub_bytes_in": [alone_bytes, alone_again_bytes],
            "watched_ms": round3(ms(took)),
            "bytes": size,
        })),
        complete_row,
        Row::at_most(
            &format!("terminal {label}: server RSS growth per terminal (10 viewers)"),
            growth as f64,
            "KiB",
            512.0,
        )
        .with_detail(json!({
            "rss_before_kib": rss_before,
            "rss_viewers_connected_kib": rss_connected,
            "rss_after_kib": rss_after,
            "rss_viewers_closed_kib": rss_closed,
            "runner_rss_before_kib": runner_rss_before,
            "runner_rss_after_kib": runner_rss_after,
        })),
        Row::info(
            &format!("terminal {label}: server RSS growth, no viewer"),
            alone_rss_after.saturating_sub(alone_rss_before) as f64,
            "KiB",
        )
        .with_detail(json!({
            "rss_before_kib": alone_rss_before,
            "rss_after_kib": alone_rss_after,
        })),
    ])
}

/// One flood with nobody watching: the agent's write time and the bytes the hub got (all of
/// them, unless the host resynchronised).
async fn flood_alone(fleet: &Fleet, on_terminal: u64) -> Result<(Duration, f64)> {
    let sid = fleet.spawn("bench-flood").await?;
    let alone = async {
        fleet.until_metric("maestro_terminal_hosts", 1.0).await?;
        let bytes_before = fleet.metric("maestro_terminal_bytes_in_total").await?;
        std::fs::write(fleet.work.join(format!("go-{sid}")), b"")?;
        let took = fleet.agent_elapsed(&sid).await?;
        // Until the hub has every byte, or its count stops moving (a resync skipped some).
        let (mut last, mut since) = (-1.0, Instant::now());
        loop {
            let got = fleet.metric("maestro_terminal_bytes_in_total").await? - bytes_before;
            if got >= on_terminal as f64 || since.elapsed() > Duration::from_millis(500) {
                break anyhow::Ok((took, got));
            }
            if got != last {
                (last, since) = (got, Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    .await;
    fleet.stop_session(&sid).await?;
    fleet
        .until_metric_at_most("maestro_terminal_hosts", 0.0)
        .await?;
    alone
}

/// What one reading viewer of the flood got once the output started.
#[derive(Debug, Default)]
struct Received {
    /// Binary bytes: live output, and the screens sent after a `snapshot`.
    bytes: u64,
    /// `{"type":"snapshot"}` messages: the viewer was resynchronised.
    snapshots: u32,
    /// It saw the agent's last line.
    ended: bool,
    error: Option<String>,
}

async fn read_flood(
    mut viewer: Viewer,
    counting: Arc<AtomicBool>,
    limit: Instant,
) -> (Received, Viewer) {
    let mut r = Received::default();
    let marker = &FLOOD_END[..FLOOD_END.len() - 1];
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let left = limit.saturating_duration_since(Instant::now());
        match viewer.next(left).await {
            Ok(Frame::Output(bytes)) if counting.load(Ordering::SeqCst) => {
                r.bytes += bytes.len() as u64;
                tail.extend_from_slice(&bytes);
                if contains(&tail, marker) {
                    r.ended = true;
                    return (r, viewer);
                }
                let keep = tail.len().saturating_sub(marker.len());
                tail.drain(..keep);
            }
            Ok(Frame::Event(e)) if e["type"] == "snapshot" && counting.load(Ordering::SeqCst) => {
                r.snapshots += 1;
                tail.clear();
            }
            Ok(_) => {}
            Err(e) => {
                r.error = Some(format!("{e:#}"));
                return (r, viewer);
            }
        }
    }
}

/// `plan.terminals` agents each print `plan.line_rate` lines a second for `plan.terminal_secs`
/// seconds, nobody watching: the server's CPU over that window per terminal and second, the
/// runner's beside it, the server's RSS per terminal, and how long `GET /api/sessions/:id`
/// takes meanwhile against the same server idle.
async fn many(bench: &Bench) -> Result<Vec<Row>> {
    let fleet = Fleet::start(bench, "term-many", false).await?;
    let mut sids = Vec::new();
    let result = many_on(bench, &fleet, &mut sids).await;
    let mut stops = tokio::task::JoinSet::new();
    for sid in sids {
        let (api, sid) = (fleet.api.clone(), sid);
        stops.spawn(async move { stop_and_wait(&api, &sid).await });
    }
    while let Some(stopped) = stops.join_next().await {
        if let Err(e) = stopped.map_err(anyhow::Error::from).and_then(|r| r) {
            eprintln!("bench: stopping an agent: {e:#}");
        }
    }
    fleet.stop().await;
    result
}

async fn many_on(bench: &Bench, fleet: &Fleet, sids: &mut Vec<String>) -> Result<Vec<Row>> {
    let n = bench.plan.terminals;
    let secs = bench.plan.terminal_secs;
    let rate = bench.plan.line_rate;
    let probe = fleet.api.create_session(&fleet.project, "idle").await?;
    let idle = probe_latency(&fleet.api, &probe, Duration::from_secs(2)).await?;
    let rss_before = fleet.server.rss_kib()?;
    for _ in 0..n {
        sids.push(fleet.spawn("bench-lines").await?);
    }
    fleet
        .until_metric("maestro_terminal_hosts", n as f64)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let bytes_before = fleet.metric("maestro_terminal_bytes_in_total").await?;
    let server_before = cpu_time(fleet.server.pid())?;
    let runner_before = fleet.runner_cpu()?;
    let window = Duration::from_secs(secs);
    std::fs::write(fleet.work.join("go"), b"")?;
    let started = Instant::now();
    let loaded = probe_latency(&fleet.api, &probe, window).await?;
    tokio::time::sleep(window.saturating_sub(started.elapsed())).await;
    let server_cpu = cpu_time(fleet.server.pid())?.saturating_sub(server_before);
    let runner_cpu = fleet.runner_cpu()?.saturating_sub(runner_before);
    let elapsed = started.elapsed().as_secs_f64();
    let rss_after = fleet.server.rss_kib()?;
    let runner_rss = fleet.runner_rss_kib()?;

    // Every agent finished its lines; every session is still working.
    let mut lines = 0u64;
    let mut late_ms: f64 = 0.0;
    let deadline = Instant::now() + WAIT;
    for sid in sids.iter() {
        let file = fleet.work.join(format!("lines-{sid}"));
        let report: Value = loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                break serde_json::from_str(&text)?;
            }
            if Instant::now() > deadline {
                bail!("the agent of {sid} never finished its lines");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        lines += report["lines"].as_u64().unwrap_or(0);
        late_ms = late_ms.max(report["maxLateMs"].as_f64().unwrap_or(0.0));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bytes_in = fleet.metric("maestro_terminal_bytes_in_total").await? - bytes_before;
    let mut not_working = Vec::new();
    for sid in sids.iter() {
        let s = fleet.api.get(&format!("/api/sessions/{sid}")).await?;
        if s["status"] != "working" {
            not_working.push(format!("{sid}: {}", s["status"]));
        }
    }

    let per = |cpu: Duration| round3(ms(cpu) / n as f64 / elapsed);
    let detail = json!({
        "terminals": n,
        "lines_per_second_each": rate,
        "window_s": round3(elapsed),
        "server_cpu_ms": round3(ms(server_cpu)),
        "runner_cpu_ms": round3(ms(runner_cpu)),
        "server_cpu_ms_per_terminal_s": per(server_cpu),
        "runner_cpu_ms_per_terminal_s": per(runner_cpu),
        "lines_written": lines,
        "lines_expected": n as u64 * rate * secs,
        "agent_max_late_ms": round3(late_ms),
        "hub_bytes_in": bytes_in,
        "runner_rss_kib": runner_rss,
    });
    let label = crate::report::number(n as f64);
    let mut cpu_row = Row::info(
        &format!("{label} terminals: server CPU per terminal"),
        per(server_cpu),
        "ms/s",
    )
    .with_detail(detail.clone());
    if !not_working.is_empty() {
        cpu_row = cpu_row.failed(&format!("sessions not working: {}", not_working.join(", ")));
    }
    let rss_per = rss_after.saturating_sub(rss_before) as f64 / n as f64;
    Ok(vec![
        cpu_row,
        Row::info(
            &format!("{label} terminals: runner CPU per terminal"),
            per(runner_cpu),
            "ms/s",
        )
        .with_detail(detail),
        Row::at_most(
            &format!("{label} terminals: server RSS per terminal"),
            rss_per,
            "KiB",
            512.0,
        )
        .with_detail(json!({ "rss_before_kib": rss_before, "rss_after_kib": rss_after })),
        Row::info(
            &format!("{label} terminals: GET /api/sessions/:id p99 meanwhile"),
            loaded.percentile_ms(99.0),
            "ms",
        )
        .with_detail(json!({ "streaming": loaded.summary(), "idle": idle.summary() })),
    ])
}

/// `GET /api/sessions/:id`, one every 20 ms for `window`.
async fn probe_latency(api: &Api, sid: &str, window: Duration) -> Result<Samples> {
    let path = format!("/api/sessions/{sid}");
    let until = Instant::now() + window;
    let mut samples = Vec::new();
    while Instant::now() < until {
        let at = Instant::now();
        api.get(&path).await?;
        samples.push(at.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Samples::new(samples))
}

// ---- the server, its runner, a project ----

/// A server with a runner, a project whose working directory is `work` (where the fake agents
/// run and leave their results) and a task to spawn for.
struct Fleet {
    server: Server,
    /// The `maestro runner` process, when the runner is not the server's own.
    runner: Option<std::sync::Mutex<Child>>,
    _store: Store,
    api: Api,
    work: PathBuf,
    project: String,
    task: String,
}

impl Fleet {
    /// `own_runner`: `RUNNER=on`; otherwise `RUNNER=off` and a `maestro runner` process.
    async fn start(bench: &Bench, name: &str, own_runner: bool) -> Result<Fleet> {
        let dir = bench.tmp.join(name);
        let work = dir.join("work");
        std::fs::create_dir_all(&work)?;
        let agents = dir.join("agents.toml");
        std::fs::write(&agents, agents_file(bench)?)?;
        let agents = agents.to_str().context("a UTF-8 temporary directory")?;
        let store = Store::new(bench.backend, &dir.join("store"));
        let server = store.start(
            &bench.bin,
            &[
                ("RUNNER", if own_runner { "on" } else { "off" }),
                ("AGENTS_FILE", agents),
                ("MAESTRO_MACHINE_ID", MACHINE),
                ("RUNNER_CAPACITY", "200"),
                ("STOP_GRACE_MS", "200"),
            ],
        )?;
        let api = Api::new(&server.url())?;
        let runner = if own_runner {
            None
        } else {
            let home = dir.join("runner-home");
            std::fs::create_dir_all(&home)?;
            let child = Command::new(&bench.bin)
                .args(["runner", "--name", "bench", "--capacity", "200"])
                .env("MAESTRO_SERVER_URL", server.url())
                .env("MAESTRO_MACHINE_ID", MACHINE)
                .env("AGENTS_FILE", agents)
                .env("HOME", &home)
                .env_remove("MAESTRO_TOKEN")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .context("cannot start maestro runner")?;
            Some(std::sync::Mutex::new(child))
        };
        let work_dir = work.to_str().context("a UTF-8 temporary directory")?;
        let project = api
            .post(
                "/api/projects",
                &json!({ "name": format!("bench {name}"), "workingDir": work_dir }),
            )
            .await?["id"]
            .as_str()
            .context("no project id")?
            .to_owned();
        let task = api.create_task(&project, "bench terminal").await?;
        let fleet = Fleet {
            server,
            runner,
            _store: store,
            api,
            work,
            project,
            task,
        };
        fleet.until_runner_online().await?;
        Ok(fleet)
    }

    async fn until_runner_online(&self) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let runners = self.api.get("/api/runners").await?;
            let ready = runners.as_array().is_some_and(|all| {
                all.iter().any(|r| {
                    r["online"] == true
                        && r["machineId"] == MACHINE
                        && r["agents"]
                            .as_array()
                            .is_some_and(|a| a.iter().any(|a| a == "bench-lines"))
                })
            });
            if ready {
                return Ok(());
            }
            if let Some(runner) = &self.runner
                && let Some(status) = runner.lock().expect("runner").try_wait()?
            {
                bail!("maestro runner exited ({status})");
            }
            if Instant::now() > deadline {
                bail!("no runner online with the bench agents within 30 s: {runners}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Spawns the agent `tool` for the task; the session's id.
    async fn spawn(&self, tool: &str) -> Result<String> {
        let answer = self
            .api
            .post(
                "/api/sessions/spawn",
                &json!({
                    "projectId": self.project,
                    "taskIds": [self.task],
                    "agentTool": tool,
                    "launcher": "runner",
                }),
            )
            .await?;
        answer["sessionId"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no sessionId in {answer}"))
    }

    async fn stop_session(&self, sid: &str) -> Result<()> {
        stop_and_wait(&self.api, sid).await
    }

    /// A gauge or counter of the server's `/metrics`.
    async fn metric(&self, name: &str) -> Result<f64> {
        let text = self
            .api
            .http
            .get(format!("{}/metrics", self.api.base))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .with_context(|| format!("no {name} in /metrics"))
    }

    async fn until_metric(&self, name: &str, at_least: f64) -> Result<()> {
        self.until(name, |v| v >= at_least, &format!(">= {at_least}"))
            .await
    }

    async fn until_metric_at_most(&self, name: &str, at_most: f64) -> Result<()> {
        self.until(name, |v| v <= at_most, &format!("<= {at_most}"))
            .await
    }

    async fn until(&self, name: &str, ok: impl Fn(f64) -> bool, what: &str) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            let v = self.metric(name).await?;
            if ok(v) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} stayed at {v}, not {what}, for 30 s");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The flood agent's own write time, from the file it leaves.
    async fn agent_elapsed(&self, sid: &str) -> Result<Duration> {
        let file = self.work.join(format!("elapsed-{sid}"));
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                return Ok(Duration::from_nanos(text.trim().parse()?));
            }
            if Instant::now() > deadline {
                bail!("the flood agent of {sid} did not finish within 180 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn runner_pid(&self) -> Option<u32> {
        self.runner.as_ref().map(|r| r.lock().expect("runner").id())
    }

    fn runner_cpu(&self) -> Result<Duration> {
        self.runner_pid().map_or(Ok(Duration::ZERO), cpu_time)
    }

    fn runner_rss_kib(&self) -> Result<u64> {
        self.runner_pid().map_or(Ok(0), rss_kib)
    }

    /// Stops the runner process (it stops its agents), then the server (dropped).
    async fn stop(mut self) {
        if let Some(runner) = self.runner.take() {
            let _ = tokio::task::spawn_blocking(move || {
                stop_child(&mut runner.into_inner().expect("runner"));
            })
            .await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(runner) = &self.runner {
            stop_child(&mut runner.lock().expect("runner"));
        }
    }
}

/// `POST /api/sessions/:id/stop`, then waits until the session is `stopped` (or otherwise
/// finished).
async fn stop_and_wait(api: &Api, sid: &str) -> Result<()> {
    api.post(
        &format!("/api/sessions/{sid}/stop"),
        &json!({ "graceMs": 200 }),
    )
    .await?;
    let deadline = Instant::now() + WAIT;
    loop {
        let s = api.get(&format!("/api/sessions/{sid}")).await?;
        if matches!(
            s["status"].as_str(),
            Some("stopped" | "completed" | "failed")
        ) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{sid} still {} 30 s after stop", s["status"]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The agents file: the echo and first-output agents as shell commands, the flood and lines
/// agents as this binary's hidden modes.
fn agents_file(bench: &Bench) -> Result<String> {
    let exe = std::env::current_exe()?;
    let exe = exe.to_str().context("a UTF-8 path to maestro-bench")?;
    let plan = &bench.plan;
    // A JSON array of strings is a TOML array of basic strings.
    let entry = |name: &str, argv: &[&str]| -> Result<String> {
        Ok(format!(
            "[agents.{name}]\ncommand = {}\nprompt = \"none\"\n\n",
            serde_json::to_string(argv)?
        ))
    };
    let flood = format!("flood:{}", plan.flood_bytes);
    let lines = format!("lines:{}:{}", plan.line_rate, plan.terminal_secs);
    Ok([
        entry(
            "bench-echo",
            &[
                "sh",
                "-c",
                "stty raw -echo; printf 'echo-ready\\r\\n'; exec cat",
            ],
        )?,
        entry(
            "bench-first",
            &[
                "sh",
                "-c",
                "printf 'first-output-%s\\n' \"$MAESTRO_SESSION_ID\"; exec sleep 600",
            ],
        )?,
        entry("bench-flood", &[exe, "--term-agent", &flood])?,
        entry("bench-lines", &[exe, "--term-agent", &lines])?,
    ]
    .concat())
}

// ---- a viewer ----

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One message from the terminal: output (binary) or a state message (text).
enum Frame {
    Output(tokio_tungstenite::tungstenite::Bytes),
    Event(Value),
}

/// A viewer of a session's terminal, over the real WebSocket.
struct Viewer {
    ws: Ws,
    /// Its `viewerId`, from the hello.
    id: String,
    /// The hello's `hostConnected`.
    host_connected: bool,
}

impl Viewer {
    /// Connects and reads the hello.
    async fn open(addr: SocketAddr, sid: &str) -> Result<Viewer> {
        let url = format!("ws://{addr}/api/sessions/{sid}/terminal");
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .context("the terminal's WebSocket did not open in time")??;
        let mut viewer = Viewer {
            ws,
            id: String::new(),
            host_connected: false,
        };
        match viewer.next(WAIT).await? {
            Frame::Event(hello) if hello["type"] == "hello" => {
                viewer.id = hello["viewerId"].as_str().unwrap_or("").to_owned();
                viewer.host_connected = hello["hostConnected"] == true;
            }
            Frame::Event(other) => bail!("expected the hello, got {other}"),
            Frame::Output(_) => bail!("expected the hello, got output"),
        }
        Ok(viewer)
    }

    /// The next output or state message, within `limit`.
    async fn next(&mut self, limit: Duration) -> Result<Frame> {
        loop {
            let msg = tokio::time::timeout(limit, self.ws.next())
                .await
                .context("nothing from the terminal in time")?
                .context("the terminal closed")??;
            match msg {
                Message::Binary(bytes) => return Ok(Frame::Output(bytes)),
                Message::Text(text) => return Ok(Frame::Event(serde_json::from_str(&text)?)),
                Message::Close(_) => bail!("the terminal closed"),
                _ => {}
            }
        }
    }

    /// Reads until the output since the last `snapshot` contains `needle`.
    async fn until_output(&mut self, needle: &[u8], limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await.with_context(|| {
                format!(
                    "waiting for {:?}; the output so far: {:?}",
                    String::from_utf8_lossy(needle),
                    String::from_utf8_lossy(&seen)
                )
            })? {
                Frame::Output(bytes) => {
                    seen.extend_from_slice(&bytes);
                    if contains(&seen, needle) {
                        return Ok(());
                    }
                }
                Frame::Event(e) if e["type"] == "snapshot" => seen.clear(),
                Frame::Event(_) => {}
            }
        }
    }

    /// `take-control`, then waits until the hub says this viewer is in control.
    async fn take_control(&mut self) -> Result<()> {
        self.ws
            .send(Message::text(json!({ "type": "take-control" }).to_string()))
            .await?;
        loop {
            match self.next(WAIT).await? {
                Frame::Event(e) if e["type"] == "control" && e["controller"] == self.id => {
                    return Ok(());
                }
                Frame::Event(e) if e["type"] == "error" => bail!("take-control refused: {e}"),
                _ => {}
            }
        }
    }

    async fn send_keys(&mut self, keys: &[u8]) -> Result<()> {
        self.ws.send(Message::binary(keys.to_vec())).await?;
        Ok(())
    }

    async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.ws.close(None)).await;
    }
}

/// A viewer that never reads its socket, with a tiny receive buffer (4 KiB asked for; the
/// kernel doubles it): once the hub's writes to it block, its queue overflows and stays
/// empty. Held open by the caller.
async fn stalled_viewer(addr: SocketAddr, sid: &str) -> Result<WebSocketStream<TcpStream>> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_recv_buffer_size(4096)?;
    let stream = socket.connect(addr).await?;
    let request = format!("ws://{addr}/api/sessions/{sid}/terminal").into_client_request()?;
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
        .await
        .context("the stalled viewer's WebSocket did not open in time")??;
    Ok(ws)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// ---- the fake agents ----

/// The hidden `--term-agent SPEC` mode, run by the runner in a pseudo-terminal:
/// - `flood:BYTES`: waits for `go-<session>` in its directory, writes BYTES of 100-byte lines
///   (`line 0000042 abcd…`) to the terminal, leaves its write time in ns in
///   `elapsed-<session>`, prints `flood-end`;
/// - `lines:RATE:SECS`: waits for `go`, writes RATE lines a second for SECS seconds (paced by
///   the clock, not by sleeping a fixed time after each), leaves
///   `{"lines","maxLateMs"}` in `lines-<session>`.
///
/// Then each waits to be stopped, at most 10 minutes.
pub fn agent(spec: &str) -> Result<()> {
    let sid = std::env::var("MAESTRO_SESSION_ID").context("no MAESTRO_SESSION_ID")?;
    let parts: Vec<&str> = spec.split(':').collect();
    let born = Instant::now();
    match parts.as_slice() {
        ["flood", bytes] => flood_agent(&sid, bytes.parse()?, born)?,
        ["lines", rate, secs] => lines_agent(&sid, rate.parse()?, secs.parse()?, born)?,
        _ => bail!("unknown --term-agent {spec:?}"),
    }
    std::thread::sleep(AGENT_LIFE.saturating_sub(born.elapsed()));
    Ok(())
}

fn wait_for_file(path: &Path, born: Instant) -> Result<()> {
    while !path.exists() {
        if born.elapsed() > AGENT_LIFE {
            bail!("{} never appeared", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Writes `text` to `path` whole (a reader never sees half of it).
fn write_whole(path: &str, text: &str) -> Result<()> {
    let partial = format!("{path}.partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

fn flood_agent(sid: &str, bytes: usize, born: Instant) -> Result<()> {
    const FILL: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let lines = bytes / FLOOD_LINE;
    let mut text = Vec::with_capacity(lines * FLOOD_LINE);
    for i in 0..lines {
        let start = text.len();
        write!(text, "line {i:07} ")?;
        let mut k = 0;
        while text.len() - start < FLOOD_LINE - 1 {
            text.push(FILL[(i + k) % FILL.len()]);
            k += 1;
        }
        text.push(b'\n');
    }
    wait_for_file(Path::new(&format!("go-{sid}")), born)?;
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    out.write_all(&text)?;
    out.flush()?;
    let took = started.elapsed();
    write_whole(&format!("elapsed-{sid}"), &took.as_nanos().to_string())?;
    out.write_all(FLOOD_END)?;
    out.flush()?;
    Ok(())
}

fn lines_agent(sid: &str, rate: u64, secs: u64, born: Instant) -> Result<()> {
    wait_for_file(Path::new("go"), born)?;
    let interval = Duration::from_secs(1) / u32::try_from(rate.max(1))?;
    let total = rate * secs;
    let mut out = std::io::stdout().lock();
    let started = Instant::now();
    let mut late = Duration::ZERO;
    for i in 0..total {
        let due = started + interval * u32::try_from(i)?;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        late = late.max(Instant::now().saturating_duration_since(due));
        writeln!(
            out,
            "{sid} line {i:06}: the quick brown fox jumps over the lazy dog"
        )?;
        out.flush()?;
    }
    let report = json!({ "lines": total, "maxLateMs": round3(ms(late)) });
    write_whole(&format!("lines-{sid}"), &report.to_string())?;
    Ok(())
}
