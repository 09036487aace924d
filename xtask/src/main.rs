//! Project automation: `cargo xtask <command>`.
//!
//! - `run`: build the server (release) and start it on the embedded backend;
//! - `test`: install what the tests need, then run every check CI runs (the Rust suites, then
//!   the Socket.IO interop tests in `tests/js` with node, schemathesis against the OpenAPI
//!   document on both backends, the official Engine.IO and Socket.IO
//!   protocol suites in `tests/conformance`, then the web app's unit and end-to-end tests);
//! - `openapi`: regenerate `docs/openapi.json`;
//! - `types`: regenerate the web app's `web/src/generated/protocol.ts`;
//! - `bench`: build the server and the load generator (release) and run the benchmarks of
//!   `docs/performance.md`, then time the web app's screens on a phone profile (never part of
//!   `test`).
//!
//! CI calls `cargo xtask test` and nothing else, so what passes here is what a newcomer gets.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  run [-- <serve args>]   build the web app and start `maestro serve` (release build,
                          embedded backend)
  test                    install test prerequisites, then fmt, clippy and every test
  openapi                 regenerate docs/openapi.json (CI fails when it drifts)
  types                   regenerate web/src/generated/protocol.ts (CI fails when it drifts)
  fuzz                    schemathesis against the debug binary, both backends (part of test)
  conformance             the official Engine.IO and Socket.IO protocol suites (part of test)
  bench [--quick] [--backend local|redis|both] [--only FIGURES]
                          benchmark a release build on loopback: prints the table, writes
                          bench/results/<date>-<backend>.json (--quick: under 3 minutes)
  help                    this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("test") => test(&args[1..]),
        Some("openapi") => openapi(),
        Some("types") => types(),
        Some("fuzz") => schemathesis_install().and_then(schemathesis),
        Some("conformance") => conformance(None),
        Some("bench") => bench(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace this xtask was run in. `cargo run` sets `CARGO_MANIFEST_DIR` for the
/// process, so a binary built in another checkout that shares the cargo target directory (and
/// which cargo therefore reuses) still works on the checkout it is run from; the path compiled
/// in is only the fallback.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (relative to the workspace) or `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { root().join(t) })
        .unwrap_or_else(|| root().join("target"))
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, echoing it first; fails with its exit status. Prints the step's wall time and
/// the CPU time its processes used: on 2 cores, a step far below 2 CPU-seconds a second leaves
/// room to run something beside it.
fn step(title: &str, mut cmd: Command) -> Result<()> {
    let started = Instant::now();
    let cpu_before = children_cpu();
    eprintln!("==> {title}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
    if !status.success() {
        bail!("{title} failed ({status})");
    }
    eprintln!(
        "    {title}: ok in {:.1?} (CPU {:.1?})",
        started.elapsed(),
        children_cpu().saturating_sub(cpu_before)
    );
    Ok(())
}

/// User and system CPU time of the child processes waited for so far (and theirs). Children
/// that run in the background are counted when they end, so a step's figure can include a
/// background install that finished during it.
#[cfg(unix)]
fn children_cpu() -> std::time::Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_CHILDREN) else {
        return std::time::Duration::ZERO;
    };
    let secs = |t: nix::sys::time::TimeVal| {
        std::time::Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
    };
    secs(usage.user_time()) + secs(usage.system_time())
}

#[cfg(not(unix))]
fn children_cpu() -> std::time::Duration {
    std::time::Duration::ZERO
}

/// A preparation step (a download or an install, which needs little of the CPU the compiler
/// wants) started at once and waited for where its result is needed. Its output goes to a log
/// file, printed if it fails.
struct Background {
    title: String,
    log: PathBuf,
    thread: std::thread::JoinHandle<Result<std::time::Duration>>,
}

impl Background {
    /// Runs `commands` one after the other in a thread; the first failure stops them.
    fn start(title: &str, commands: Vec<Command>) -> Result<Self> {
        let log = log_path(title)?;
        let file = std::fs::File::create(&log)?;
        eprintln!("==> {title}: started in the background");
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            for mut cmd in commands {
                let status = cmd
                    .stdin(std::process::Stdio::null())
                    .stdout(file.try_clone()?)
                    .stderr(file.try_clone()?)
                    .status()
                    .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
                if !status.success() {
                    bail!("{:?} failed ({status})", cmd.get_program());
                }
            }
            Ok(started.elapsed())
        });
        Ok(Self {
            title: title.to_owned(),
            log,
            thread,
        })
    }

    /// Waits for the step; fails with its output if it failed.
    fn wait(self) -> Result<()> {
        let waited = Instant::now();
        let result = self
            .thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the thread panicked")));
        match result {
            Ok(took) => {
                eprintln!(
                    "    {}: ok in {took:.1?} (in the background; waited {:.1?} for it)",
                    self.title,
                    waited.elapsed()
                );
                Ok(())
            }
            Err(e) => {
                let output = std::fs::read_to_string(&self.log).unwrap_or_default();
                eprintln!("{output}");
                bail!(
                    "{} failed: {e:#} (output above, also in {})",
                    self.title,
                    self.log.display()
                )
            }
        }
    }
}

/// The log file of a step whose output is kept aside (`target/tmp/xtask-logs/<title>.log`).
fn log_path(title: &str) -> Result<PathBuf> {
    let logs = target_dir().join("tmp").join("xtask-logs");
    std::fs::create_dir_all(&logs)?;
    Ok(logs.join(format!(
        "{}.log",
        title
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    )))
}

/// What `cargo xtask test` installs while the Rust code compiles.
struct Prepared {
    apt: Option<Background>,
    js: Background,
    agents: Option<Background>,
    conformance: Background,
    schemathesis: Option<Background>,
}

impl Prepared {
    /// Starts every download and install the later steps need (the Debian packages that are
    /// missing, the npm trees of the interop, agent and conformance suites, schemathesis).
    fn start() -> Result<Self> {
        let missing: Vec<&str> = [("redis-server", "redis-server"), ("chromium", "chromium")]
            .into_iter()
            .filter(|(program, _)| !have(program))
            .map(|(_, package)| package)
            .collect();
        let apt = if missing.is_empty() || !(have("apt-get") && is_root()) {
            None
        } else {
            let mut update = Command::new("apt-get");
            update.args(["update", "-qq"]);
            let mut install = Command::new("apt-get");
            install
                .args(["install", "-y", "-qq"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive");
            Some(Background::start(
                &format!("apt-get install {}", missing.join(" ")),
                vec![update, install],
            )?)
        };
        let npm_ci = |dir: PathBuf| {
            let mut ci = Command::new("npm");
            ci.args(["ci", "--no-audit", "--no-fund"]).current_dir(dir);
            ci
        };
        let js = Background::start(
            "npm ci (tests/js)",
            vec![npm_ci(root().join("tests").join("js"))],
        )?;
        let agents = agent_clis_install()?;
        let suites = root().join("tests").join("conformance");
        let conformance = Background::start(
            "npm ci (tests/conformance)",
            vec![
                npm_ci(suites.join("engine.io-protocol")),
                npm_ci(suites.join("socket.io-protocol")),
            ],
        )?;
        let schemathesis = schemathesis_install()?;
        Ok(Self {
            apt,
            js,
            agents,
            conformance,
            schemathesis,
        })
    }
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn run(args: &[String]) -> Result<()> {
    let args = args.strip_prefix(&["--".to_owned()]).unwrap_or(args);
    web_build()?;
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--package", "maestro", "--", "serve"])
        .args(args);
    step("maestro serve", cmd)
}

/// Rewrites `docs/openapi.json` from the handlers' annotations. The drift check is the
/// `committed_spec_is_up_to_date` test, which `cargo xtask test` runs.
fn openapi() -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--package",
        "maestro-server",
        "--test",
        "openapi",
        "committed_spec_is_up_to_date",
    ])
    .env("UPDATE_OPENAPI", "1");
    step("regenerate docs/openapi.json", cmd)
}

/// Rewrites the web app's `web/src/generated/protocol.ts` from `maestro-protocol`'s types (with
/// ts-rs). The drift check is the `committed_types_are_up_to_date` test, which `cargo xtask
/// test` runs (the crate's tests always enable its `ts` feature).
fn types() -> Result<()> {
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--package",
        "maestro-protocol",
        "--test",
        "typescript",
        "committed_types_are_up_to_date",
    ])
    .env("UPDATE_TS", "1");
    step("regenerate web/src/generated/protocol.ts", cmd)
}

fn test(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("`cargo xtask test` takes no arguments");
    }
    let started = Instant::now();

    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("cargo fmt --check", fmt)?;

    // The server embeds web/dist: build the app before anything compiles the server.
    web_build()?;
    // Downloads and installs run while the Rust code compiles.
    let mut prepared = Prepared::start()?;
    let mut apt = prepared.apt.take();
    // The real agent CLIs' tests run beside the Redis pass and the short steps after it.
    let mut agents: Option<Spawned> = None;

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("cargo clippy", clippy)?;

    if !have("redis-server")
        && let Some(apt) = apt.take()
    {
        apt.wait()?;
    }
    ensure_redis_server()?;

    if have("cargo-nextest") {
        let mut nextest = cargo();
        nextest.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        step("cargo nextest run (local backend)", nextest)?;
        agents = Some(agent_clis(prepared.agents.take())?);
        // The server's conformance suite again, every test on its own redis-server. Selected
        // with a filter, not `--package`: building one package unifies features differently
        // from the workspace, and cargo would build the server and its dependencies again.
        let mut redis = cargo();
        redis
            .args([
                "nextest",
                "run",
                "--workspace",
                "--no-fail-fast",
                "-E",
                "package(maestro-server)",
            ])
            .env("MAESTRO_TEST_BACKEND", "redis");
        step("cargo nextest run (Redis backend)", redis)?;
        // nextest does not run doc tests.
        let mut doc = cargo();
        doc.args(["test", "--workspace", "--doc"]);
        step("cargo test --doc", doc)?;
    } else {
        let mut t = cargo();
        t.args(["test", "--workspace", "--no-fail-fast"]);
        step("cargo test (local backend)", t)?;
        let mut redis = cargo();
        redis
            .args(["test", "--package", "maestro-server", "--no-fail-fast"])
            .env("MAESTRO_TEST_BACKEND", "redis");
        step("cargo test (Redis backend)", redis)?;
    }

    js_interop(prepared.js)?;
    conformance(Some(prepared.conformance))?;
    match agents {
        Some(agents) => agents.wait()?,
        None => agent_clis(prepared.agents)?.wait()?,
    }
    schemathesis(prepared.schemathesis)?;
    if let Some(apt) = apt {
        apt.wait()?;
    }
    web_tests()?;

    eprintln!("==> all checks passed in {:.1?}", started.elapsed());
    Ok(())
}

/// Tests start their own `redis-server` processes; install Debian's package if it is missing.
fn ensure_redis_server() -> Result<()> {
    if have("redis-server") {
        return Ok(());
    }
    if have("apt-get") && is_root() {
        eprintln!("==> redis-server is missing; installing Debian's package");
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        step("apt-get update", update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", "redis-server"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        step("apt-get install redis-server", install)?;
        // The package may start a system service on 6379; tests never use it.
        return Ok(());
    }
    bail!(
        "the tests need `redis-server` (Redis 6 or later) on PATH; install it \
         (e.g. `sudo apt-get install redis-server` or `brew install redis`) and rerun"
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .is_some_and(|u| u.trim() == "0")
}

/// The Socket.IO interop tests in `tests/js`: the official `socket.io-client` (npm) against the
/// real `maestro` binary, run by node's test runner.
fn js_interop(install: Background) -> Result<()> {
    let version = Command::new("node").arg("--version").output();
    let major = version
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| {
            v.trim()
                .trim_start_matches('v')
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()
        });
    match major {
        Some(m) if m >= 20 && have("npm") => {}
        found => bail!(
            "the Socket.IO interop tests (tests/js) need Node.js 20 or later with npm \
             (found: {}); install Node 20 (https://nodejs.org; Debian 12's own `nodejs` \
             package is 18, too old), then rerun `cargo xtask test`",
            found.map_or("no node".to_owned(), |m| format!("node {m}"))
        ),
    }

    // The workspace's tests (run before) built the binary, with the test build's features; a
    // plain `cargo build -p maestro` would build it again with other features.
    let mut build = cargo();
    build.args(["nextest", "run", "--workspace", "--no-run"]);
    step("cargo nextest run --no-run (the maestro binary)", build)?;
    let target = target_dir();
    let bin = target
        .join("debug")
        .join(format!("maestro{}", std::env::consts::EXE_SUFFIX));

    let dir = root().join("tests").join("js");
    install.wait()?;
    let mut test = Command::new("npm");
    test.arg("test").current_dir(&dir).env("MAESTRO_BIN", &bin);
    step("npm test (tests/js)", test)
}

/// Starts installing the agent CLIs (`tests/agents`) into the target directory, unless the
/// lockfile installed there is the committed one.
fn agent_clis_install() -> Result<Option<Background>> {
    let src = root().join("tests").join("agents");
    let dir = target_dir().join("agent-clis");
    std::fs::create_dir_all(&dir)?;
    let lock = std::fs::read(src.join("package-lock.json"))?;
    let stamp = dir.join("installed-package-lock.json");
    let cached = std::fs::read(&stamp).is_ok_and(|s| s == lock)
        && dir.join("node_modules").join(".bin").is_dir();
    if cached {
        return Ok(None);
    }
    let _ = std::fs::remove_file(&stamp);
    std::fs::copy(src.join("package.json"), dir.join("package.json"))?;
    std::fs::write(dir.join("package-lock.json"), &lock)?;
    let mut ci = Command::new("npm");
    // Install scripts run: Claude Code's puts its native binary in place of a placeholder.
    ci.args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir);
    Ok(Some(Background::start(
        "npm ci (tests/agents: the real agent CLIs)",
        vec![ci],
    )?))
}

/// The real agent CLIs (issue 19, `crates/maestro/tests/commands/agents.rs`): Claude Code, Codex and
/// Gemini CLI from npm at the versions `tests/agents/package-lock.json` pins, installed into the
/// target directory (again only when the lockfile changed), each driven through a terminal
/// against a scripted model on loopback. Where an unprivileged network namespace is available
/// (`unshare -rn`) the tests run inside one with only loopback up, so nothing can leave the
/// machine whatever a CLI tries; the CLIs' own telemetry and update switches are set as well.
/// Starts the real agent CLIs' tests, which mostly wait on the CLIs (about half a core): the
/// caller runs other steps meanwhile and waits for it.
fn agent_clis(install: Option<Background>) -> Result<Spawned> {
    require_node("the real agent CLIs (tests/agents)")?;
    let dir = target_dir().join("agent-clis");
    if let Some(install) = install {
        install.wait()?;
        let lock = std::fs::read(
            root()
                .join("tests")
                .join("agents")
                .join("package-lock.json"),
        )?;
        std::fs::write(dir.join("installed-package-lock.json"), &lock)?;
    }
    let mut build = cargo();
    // The whole workspace, as the test steps built it (one package alone would be built again
    // with other features).
    build.args(["nextest", "run", "--workspace", "--no-run"]);
    step("cargo nextest run --no-run (real agent CLIs)", build)?;
    let isolated = Command::new("unshare")
        .args(["-rn", "true"])
        .output()
        .is_ok_and(|o| o.status.success());
    let nextest = [
        "nextest",
        "run",
        "--workspace",
        "--no-capture",
        "--offline",
        "-E",
        "package(maestro) and binary(commands) and test(/^agents::/)",
    ];
    let mut run = if isolated {
        eprintln!("==> real agent CLIs: in a network namespace (loopback only)");
        let mut c = Command::new("unshare");
        c.current_dir(root())
            .args(["-rn", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
            .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .args(nextest);
        c
    } else {
        eprintln!(
            "==> real agent CLIs: no network namespace here (`unshare -rn` failed); relying on \
             the CLIs' own switches and a loopback-only model"
        );
        let mut c = cargo();
        c.args(nextest);
        c
    };
    run.env("MAESTRO_AGENT_CLIS", &dir)
        .env("CARGO_TARGET_DIR", target_dir());
    Spawned::start("real agent CLIs (Claude Code, Codex, Gemini CLI)", run)
}

/// The official protocol test suites, `tests/conformance/{engine.io,socket.io}-protocol`
/// (vendored unchanged, see their ORIGIN.md), run by mocha against `examples/conformance.rs` of
/// maestro-server: our Engine.IO transport with the suites' reference handlers. The suites
/// hard-code `http://localhost:3000`, so the server takes that port.
fn conformance(installed: Option<Background>) -> Result<()> {
    const PORT: u16 = 3000;
    let bin = conformance_example()?;

    let listening = || std::net::TcpStream::connect(("127.0.0.1", PORT)).is_ok();
    if listening() {
        bail!(
            "port {PORT} is in use, and the protocol test suites only talk to localhost:{PORT}; \
             stop what listens there (`ss -ltnp 'sport = :{PORT}'`) and rerun"
        );
    }
    eprintln!("==> conformance server on localhost:{PORT}");
    let child = Command::new(&bin)
        .arg(PORT.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut server = StopOnDrop(child);
    // It prints one line once it listens, and exits (after saying why) if it cannot.
    let mut ready = String::new();
    if let Some(out) = server.0.stdout.as_mut() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready)?;
    }
    if ready.is_empty() {
        bail!("the conformance server exited before listening");
    }

    match installed {
        Some(install) => install.wait()?,
        None => {
            for suite in ["engine.io-protocol", "socket.io-protocol"] {
                let mut ci = Command::new("npm");
                ci.args(["ci", "--no-audit", "--no-fund"])
                    .current_dir(root().join("tests").join("conformance").join(suite));
                step(&format!("npm ci ({suite})"), ci)?;
            }
        }
    }
    for suite in ["engine.io-protocol", "socket.io-protocol"] {
        let dir = root().join("tests").join("conformance").join(suite);
        let mut test = Command::new("npm");
        test.arg("test").current_dir(&dir);
        step(&format!("{suite} test suite"), test)?;
    }
    Ok(())
}

/// The conformance example, as the workspace's test build builds it (`cargo test --no-run`,
/// which is what nextest runs): a `cargo build --example` would compile the server and its
/// dependencies again, without the dev-dependencies' features. Cargo says where the executable
/// is in its JSON messages (a test build does not copy it to `examples/`).
fn conformance_example() -> Result<PathBuf> {
    let started = Instant::now();
    eprintln!("==> cargo test --workspace --no-run (the conformance example)");
    let out = cargo()
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot start cargo")?;
    if !out.status.success() {
        bail!("cargo test --no-run failed ({})", out.status);
    }
    let exe = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|m| {
            m["reason"] == "compiler-artifact"
                && m["target"]["name"] == "conformance"
                && m["target"]["kind"][0] == "example"
        })
        .and_then(|m| m["executable"].as_str().map(PathBuf::from))
        .context("cargo built no conformance example")?;
    eprintln!(
        "    cargo test --workspace --no-run (the conformance example): ok in {:.1?}",
        started.elapsed()
    );
    Ok(exe)
}

/// The pinned schemathesis (PyPI) that fuzzes the API, in a virtualenv of its own.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";

fn schemathesis_venv() -> PathBuf {
    target_dir().join("py").join("schemathesis")
}

/// Starts installing schemathesis into its virtualenv, unless it is there.
fn schemathesis_install() -> Result<Option<Background>> {
    let venv = schemathesis_venv();
    if venv.join("bin").join("schemathesis").exists() {
        return Ok(None);
    }
    let mut create = Command::new("python3");
    create.args(["-m", "venv"]).arg(&venv);
    let mut install = Command::new(venv.join("bin").join("pip"));
    install.args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SCHEMATHESIS,
    ]);
    Ok(Some(Background::start(
        &format!("pip install {SCHEMATHESIS}"),
        vec![create, install],
    )?))
}

/// Fuzzes every operation of the OpenAPI document with schemathesis against the real debug
/// binary (built by `js_interop`), on the embedded store and on a `redis-server` of its own:
/// no answer may be a 5xx, and every answer must match the document's own schema. The seed is
/// fixed so a failure reproduces. The two backends are fuzzed at the same time: each run is
/// one Python process that keeps about one core busy, so on 2 cores the pair takes little
/// more than one.
fn schemathesis(install: Option<Background>) -> Result<()> {
    if let Some(install) = install {
        install.wait()?;
    }
    let tool = schemathesis_venv().join("bin").join("schemathesis");
    let bin = target_dir()
        .join("debug")
        .join(format!("maestro{}", std::env::consts::EXE_SUFFIX));
    // Servers (and Redis) stop when these go out of scope, after both runs.
    let mut keep: Vec<StopOnDrop> = Vec::new();
    let mut runs: Vec<(String, Command)> = Vec::new();
    let mut dirs = Vec::new();
    for backend in ["local", "redis"] {
        let dir = tempdir_in_target(&format!("schemathesis-{backend}"))?;
        let mut env: Vec<(String, String)> = Vec::new();
        if backend == "redis" {
            let socket = dir.join("redis.sock");
            let child = Command::new("redis-server")
                .args(["--port", "0", "--save", "", "--appendonly", "no"])
                .arg("--unixsocket")
                .arg(&socket)
                .arg("--dir")
                .arg(&dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .context("cannot start redis-server")?;
            keep.push(StopOnDrop(child));
            wait_until(|| socket.exists(), "redis-server did not create its socket")?;
            env.push((
                "REDIS_URL".into(),
                format!("redis+unix://{}", socket.display()),
            ));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(&bin)
            .arg("serve")
            .env("PORT", port.to_string())
            .env("DATA_DIR", dir.join("data"))
            .env("SESSION_DIR", dir.join("sessions"))
            .env("SKILLS_DIR", dir.join("skills"))
            .env("LOG_LEVEL", "error")
            // Fuzzed spawns must not start agents on this machine.
            .env("RUNNER", "off")
            // Long-polls (`mail/wait`, approval wait, runner claim) answer within 50 ms whatever
            // timeout a fuzzed request asks for: the answer's shape is what is checked, and
            // waiting them out is idle time.
            .env("LONG_POLL_MAX_MS", "50")
            .envs(env)
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        keep.push(StopOnDrop(child));
        wait_until(
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
            "maestro serve did not listen",
        )?;
        let mut run = Command::new(&tool);
        run.args(["run", &format!("http://127.0.0.1:{port}/api/openapi.json")])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args(["--max-examples", "20", "--workers", "2", "--seed", "1"])
            .args(["--request-timeout", "30", "--no-color"]);
        runs.push((format!("schemathesis ({backend} backend)"), run));
        dirs.push(dir);
    }
    steps_together(runs)?;
    drop(keep);
    for dir in dirs {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// A step running beside others, its output in a log file (printed if it fails). Dropped
/// without being waited for (another step failed first), it is killed rather than left running
/// after `cargo xtask` has ended.
struct Spawned {
    title: String,
    log: PathBuf,
    child: Option<std::process::Child>,
    started: Instant,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Spawned {
    fn start(title: &str, mut cmd: Command) -> Result<Self> {
        let log = log_path(title)?;
        let file = std::fs::File::create(&log)?;
        eprintln!(
            "==> {title} (beside other steps; output in {})",
            log.display()
        );
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        Ok(Self {
            title: title.to_owned(),
            log,
            child: Some(child),
            started: Instant::now(),
        })
    }

    /// Waits for the step; prints its output if it failed.
    fn wait(mut self) -> Result<()> {
        let mut child = self.child.take().expect("a step is waited for once");
        let status = child.wait()?;
        if status.success() {
            eprintln!("    {}: ok in {:.1?}", self.title, self.started.elapsed());
            Ok(())
        } else {
            eprintln!("{}", std::fs::read_to_string(&self.log).unwrap_or_default());
            bail!(
                "{} failed ({status}); output above, also in {}",
                self.title,
                self.log.display()
            )
        }
    }
}

/// Runs the steps at the same time; fails if any fails, after all have ended. The CPU time
/// printed is the group's.
fn steps_together(steps: Vec<(String, Command)>) -> Result<()> {
    let started = Instant::now();
    let cpu_before = children_cpu();
    let running = steps
        .into_iter()
        .map(|(title, cmd)| Spawned::start(&title, cmd))
        .collect::<Result<Vec<_>>>()?;
    let failed: Vec<String> = running
        .into_iter()
        .filter_map(|step| step.wait().err().map(|e| format!("{e:#}")))
        .collect();
    eprintln!(
        "    together: {:.1?} (CPU {:.1?})",
        started.elapsed(),
        children_cpu().saturating_sub(cpu_before)
    );
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

/// A fresh directory under the target directory (removed first if a run left it).
fn tempdir_in_target(name: &str) -> Result<PathBuf> {
    let dir = target_dir().join("tmp").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Polls `ready` every 50 ms for up to 30 s.
fn wait_until(ready: impl Fn() -> bool, what: &str) -> Result<()> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what} within 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

/// A child process killed when this goes out of scope, whatever the outcome.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cargo xtask bench`: builds `maestro` and `maestro-bench` with `--release` and runs the
/// benchmarks against the real binary (`crates/maestro-bench`; figures and targets in
/// `docs/performance.md`). Flags go to `maestro-bench` as they are.
fn bench(args: &[String]) -> Result<()> {
    let backend = args
        .iter()
        .enumerate()
        .find_map(|(i, a)| match a.strip_prefix("--backend") {
            Some("") => args.get(i + 1).map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        })
        .unwrap_or("both");
    if !have("wrk") {
        install_debian_package("wrk", "wrk")?;
    }
    if backend != "local" {
        ensure_redis_server()?;
    }
    // The release binary embeds the web app, which the screen timing below loads.
    web_build()?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "--package",
        "maestro",
        "--package",
        "maestro-bench",
    ]);
    step("cargo build --release (maestro, maestro-bench)", build)?;
    let release = target_dir().join("release");
    let exe = |name: &str| release.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let mut run = Command::new(exe("maestro-bench"));
    run.current_dir(root())
        .arg("--maestro")
        .arg(exe("maestro"))
        .arg("--out")
        .arg(root().join("bench").join("results"))
        .args(args)
        .env(
            "MAESTRO_BENCH_COMMAND",
            format!("cargo xtask bench {}", args.join(" ")).trim_end(),
        );
    step("maestro-bench", run)?;
    // The web app on a mid-range phone profile (web/scripts/screen-timing.mjs); it needs
    // Chromium, and is skipped when only some server figures were asked for.
    if args.iter().any(|a| a.starts_with("--only")) {
        return Ok(());
    }
    if !have("chromium") {
        install_debian_package("chromium", "chromium")?;
    }
    let mut timing = Command::new("npm");
    timing
        .args(["run", "timing"])
        .current_dir(web_dir())
        .env("MAESTRO_BIN", exe("maestro"));
    if args.iter().any(|a| a == "--quick") {
        timing.env("RUNS", "2");
    }
    step("web app screen timing (Chromium, phone profile)", timing)
}

/// Installs Debian's `package` for `program` when we can (root with apt-get), else explains.
fn install_debian_package(program: &str, package: &str) -> Result<()> {
    if have("apt-get") && is_root() {
        eprintln!("==> {program} is missing; installing Debian's package {package}");
        let mut update = Command::new("apt-get");
        update.args(["update", "-qq"]);
        step("apt-get update", update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-qq", package])
            .env("DEBIAN_FRONTEND", "noninteractive");
        return step(&format!("apt-get install {package}"), install);
    }
    bail!(
        "`{program}` is needed on PATH; install it (e.g. `sudo apt-get install {package}`) and rerun"
    )
}

/// The phone web app's folder.
fn web_dir() -> PathBuf {
    root().join("web")
}

/// Builds the phone web app (`web/` → `web/dist`, which the server embeds): `npm ci` when
/// `node_modules` is missing or older than `package-lock.json`, then `npm run build` (which
/// type-checks, bundles and fails above the JavaScript budget).
fn web_build() -> Result<()> {
    require_node("the web app (web/)")?;
    let dir = web_dir();
    let lock = dir.join("package-lock.json");
    // npm writes node_modules/.package-lock.json on every install.
    let installed = dir.join("node_modules").join(".package-lock.json");
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let stale = match (modified(&lock), modified(&installed)) {
        (Some(lock), Some(installed)) => lock > installed,
        _ => true,
    };
    if stale {
        let mut ci = Command::new("npm");
        ci.args(["ci", "--no-audit", "--no-fund"]).current_dir(&dir);
        step("npm ci (web)", ci)?;
    }
    // Vite writes every file anew. Files that come out the same keep their modification time,
    // so an unchanged app does not make cargo build the server (which embeds web/dist) again.
    // (Cargo watches the folder: its files' times and its folders' own.)
    let dist = dir.join("dist");
    let before = tree_under(&dist);
    let mut build = Command::new("npm");
    build.args(["run", "build"]).current_dir(&dir);
    step("npm run build (web)", build)?;
    let after = tree_under(&dist);
    let now: std::collections::HashMap<&PathBuf, &Vec<u8>> = after
        .files
        .iter()
        .map(|(path, (bytes, _))| (path, bytes))
        .collect();
    let keep_time = |path: &std::path::Path, modified: std::time::SystemTime| {
        std::fs::File::open(path)
            .and_then(|f| f.set_modified(modified))
            .with_context(|| format!("cannot keep the time of {}", path.display()))
    };
    let mut all_same = before.files.len() == after.files.len();
    for (path, (bytes, modified)) in &before.files {
        if now.get(path) == Some(&bytes) {
            keep_time(path, *modified)?;
        } else {
            all_same = false;
        }
    }
    // The folders keep theirs only if every file came out the same (none added or removed).
    if all_same {
        for (path, modified) in &before.dirs {
            if path.is_dir() {
                keep_time(path, *modified)?;
            }
        }
    }
    Ok(())
}

/// The files under a folder (recursively), with their contents and modification
/// times, and the folders' own modification times.
#[derive(Default)]
struct Tree {
    files: Vec<(PathBuf, (Vec<u8>, std::time::SystemTime))>,
    dirs: Vec<(PathBuf, std::time::SystemTime)>,
}

fn tree_under(dir: &std::path::Path) -> Tree {
    let mut tree = Tree::default();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        if let Ok(modified) = std::fs::metadata(&d).and_then(|m| m.modified()) {
            tree.dirs.push((d.clone(), modified));
        }
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(t) if t.is_file() => {
                    if let (Ok(bytes), Ok(modified)) = (
                        std::fs::read(&path),
                        entry.metadata().and_then(|m| m.modified()),
                    ) {
                        tree.files.push((path, (bytes, modified)));
                    }
                }
                _ => {}
            }
        }
    }
    tree
}

/// The web app's unit tests, then its end-to-end tests: Debian's Chromium (installed when
/// missing) driven by playwright-core against the debug `maestro` that `js_interop` built.
fn web_tests() -> Result<()> {
    let dir = web_dir();
    let mut unit = Command::new("npm");
    unit.arg("test").current_dir(&dir);
    step("npm test (web unit tests)", unit)?;
    if !have("chromium") {
        install_debian_package("chromium", "chromium")?;
    }
    let target = target_dir();
    let bin = target
        .join("debug")
        .join(format!("maestro{}", std::env::consts::EXE_SUFFIX));
    let mut e2e = Command::new("npm");
    e2e.args(["run", "e2e"])
        .current_dir(&dir)
        .env("MAESTRO_BIN", &bin);
    step("npm run e2e (web, Chromium)", e2e)
}

/// Fails with how to get Node.js unless `node` 20.19 or later and `npm` are on PATH (Vite 7
/// needs 20.19).
fn require_node(what: &str) -> Result<()> {
    let version = Command::new("node")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().trim_start_matches('v').to_owned());
    let parts: Vec<u32> = version
        .as_deref()
        .unwrap_or("")
        .split('.')
        .filter_map(|p| p.parse().ok())
        .collect();
    let recent = matches!(parts.as_slice(), [major, minor, ..] if (*major, *minor) >= (20, 19));
    if recent && have("npm") {
        return Ok(());
    }
    bail!(
        "{what} needs Node.js 20.19 or later with npm (found: {}); install it \
         (https://nodejs.org), then rerun",
        version.map_or("no node".to_owned(), |v| format!("node {v}"))
    )
}
