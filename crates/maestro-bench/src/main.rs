//! `maestro-bench`: Maestro's own load generator, run by `cargo xtask bench`.
//!
//! It starts the real `maestro` binary (a release build) as a child process on a loopback
//! port with a throwaway data directory — and, for the Redis backend, its own `redis-server`
//! with `appendfsync always` — measures the figures of `docs/performance.md` against it, prints
//! a table (figure, value, target, pass/miss) and writes `<out>/<date>-<backend>.json`.
//!
//! Load goes to 127.0.0.1 only; every loop is bounded in count and time and the run stops by
//! itself. HTTP throughput uses `wrk`; everything else (Socket.IO fan-out and replay, mail
//! wake, crash detection, start-up, memory, the CLI, the live terminal with real agents) is
//! measured by the code here.
//!
//! When both backends run, a third table compares them: Redis's figure over the embedded
//! store's, for the figures where a shared store should cost little (`report::ratio_rows`).
//!
//! Layout: [`figures`] measures, [`scale`] measures two instances on one Redis, [`terminal`]
//! measures the runner and live-terminal figures (and is the fake agents they run), [`review`]
//! the changes and diff figures, [`server`] runs the processes under test, [`api`] and [`sio`]
//! are the HTTP and Socket.IO clients, [`crowd`] holds the fan-out's thousands of sockets,
//! [`floor`] is the loopback floor the fan-out is compared with, [`wrk`] drives and reads wrk,
//! [`report`] makes the tables and the JSON.

mod api;
mod crowd;
mod figures;
mod floor;
mod report;
mod review;
mod scale;
mod server;
mod sio;
mod terminal;
mod wrk;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use serde_json::json;

use crate::figures::{Bench, FIGURES, Plan};
use crate::report::{Verdict, table};
use crate::server::Backend;

/// Benchmarks a `maestro` binary on loopback.
#[derive(Debug, Parser)]
#[command(name = "maestro-bench")]
struct Args {
    /// The `maestro` binary to measure (a release build).
    #[arg(long, required_unless_present_any = ["agent_url", "term_agent", "floor_writer"])]
    maestro: Option<PathBuf>,

    /// Which backend(s) to measure.
    #[arg(long, value_enum, default_value_t = Which::Both)]
    backend: Which,

    /// Shorter and smaller: under three minutes for both backends.
    #[arg(long)]
    quick: bool,

    /// Measure only these figures (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = clap::builder::PossibleValuesParser::new(FIGURES))]
    only: Vec<String>,

    /// Where the JSON results go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,

    /// Internal: run as the heartbeating agent of the crash-detection figure.
    #[arg(long, hide = true, requires = "agent_session")]
    agent_url: Option<String>,

    #[arg(long, hide = true)]
    agent_session: Option<String>,

    /// Internal: run as a fake agent of the terminal figures (`flood:BYTES`,
    /// `lines:RATE:SECS`), in the pseudo-terminal a runner started.
    #[arg(long, hide = true)]
    term_agent: Option<String>,

    /// Internal: run as the loopback floor's writer (`LEN:PREFIX`), see `floor.rs`.
    #[arg(long, hide = true)]
    floor_writer: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Which {
    Local,
    Redis,
    Both,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let (Some(url), Some(session)) = (&args.agent_url, &args.agent_session) {
        return figures::agent(url, session);
    }
    if let Some(spec) = &args.term_agent {
        return terminal::agent(spec);
    }
    if let Some(spec) = &args.floor_writer {
        return floor::writer(spec);
    }
    let nofile = server::raise_nofile_limit();
    let most_sockets = Plan::full().fanout_sockets.into_iter().max().unwrap_or(0);
    if !args.quick && nofile < most_sockets as u64 + 1_000 {
        bail!(
            "the open-files limit is {nofile}; the fan-out needs {most_sockets} sockets per \
             process plus headroom (raise the hard limit, e.g. `ulimit -Hn 20000`)"
        );
    }
    let bin = args
        .maestro
        .clone()
        .context("--maestro is required")?
        .canonicalize()
        .context("the maestro binary")?;
    let backends = match args.backend {
        Which::Local => vec![Backend::Local],
        Which::Redis => vec![Backend::Redis],
        Which::Both => vec![Backend::Local, Backend::Redis],
    };
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let mut tables = Vec::new();
    let mut misses = 0;
    let mut runs = Vec::new();
    for backend in backends {
        let tmp = tempfile::Builder::new()
            .prefix("maestro-bench-")
            .tempdir()?;
        let bench = Bench {
            bin: bin.clone(),
            backend,
            plan: plan.clone(),
            only: args.only.clone(),
            tmp: tmp.path().to_path_buf(),
        };
        let started = std::time::Instant::now();
        let rows = runtime.block_on(bench.run())?;
        let machine = server::machine();
        let title = format!(
            "maestro-bench: {} backend{} ({:.0} s) on {} x {}, kernel {}",
            backend.name(),
            if args.quick { ", quick" } else { "" },
            started.elapsed().as_secs_f64(),
            machine["nproc"],
            machine["cpu"].as_str().unwrap_or("an unknown CPU"),
            machine["kernel"].as_str().unwrap_or("unknown"),
        );
        let text = table(&title, &rows);
        println!("{text}");
        misses += rows.iter().filter(|r| r.verdict == Verdict::Miss).count();
        let path = write_json(&args, backend.name(), &rows)?;
        println!("results: {}\n", path.display());
        tables.push(text);
        runs.push((backend, rows));
    }
    if let [(Backend::Local, local), (Backend::Redis, redis)] = &runs[..] {
        let ratios = report::ratio_rows(local, redis);
        let text = table(
            "Redis / embedded (throughput: embedded / Redis; latency: Redis / embedded; bigger is worse)",
            &ratios,
        );
        println!("{text}");
        misses += ratios.iter().filter(|r| r.verdict == Verdict::Miss).count();
        let path = write_json(&args, "redis-vs-local", &ratios)?;
        println!("results: {}\n", path.display());
        tables.push(text);
    }
    if tables.len() > 1 {
        println!("{}", tables.join("\n"));
    }
    println!("{misses} figure(s) missed their target");
    Ok(())
}

/// `<out>/<date>-<name>[-quick|-partial][-<n>].json`; `name` is the backend's, or
/// `redis-vs-local` for the ratios.
fn write_json(args: &Args, name: &str, rows: &[report::Row]) -> Result<PathBuf> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let date = report::date_utc(now);
    let suffix = if !args.only.is_empty() {
        "-partial"
    } else if args.quick {
        "-quick"
    } else {
        ""
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    // Never over an earlier run's file (two `--only` runs of one day measure different
    // figures): the second is `-2`, and so on.
    let path = (1..)
        .map(|n| {
            let again = if n == 1 {
                String::new()
            } else {
                format!("-{n}")
            };
            args.out.join(format!("{date}-{name}{suffix}{again}.json"))
        })
        .find(|p| !p.exists())
        .expect("an unused file name");
    let doc = json!({
        "date": date,
        "unix_time": now,
        "backend": name,
        "quick": args.quick,
        "only": args.only,
        "command": std::env::var("MAESTRO_BENCH_COMMAND").ok(),
        "machine": server::machine(),
        "figures": rows.iter().map(report::Row::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")?;
    Ok(path)
}
