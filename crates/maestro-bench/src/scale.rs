//! The scale-out figure (Redis only): two `maestro serve` instances on one `redis-server`, 1,000
//! `/ui` sockets on each, tasks created through the first. An event reaches the second
//! instance's sockets through Redis (the commit's `PUBLISH`, the subscriber, the sequencer), so
//! the figure is the p99 from sending the create until all 2,000 sockets have it — what a
//! browser connected to another instance than the writer waits.
//!
//! Beside it, per event: the CPU of each instance and of `redis-server`, and the round trips
//! to Redis of both instances together (`maestro_redis_round_trips_total`), the numbers that
//! say what a third instance would cost.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use crate::api::Api;
use crate::crowd::{Crowd, OnEvent};
use crate::figures::{Bench, Shared, error_row, redis_round_trips, wait_connected};
use crate::report::{Row, Samples, ms, round3};
use crate::server::{Backend, Store, cpu_time};

/// Sockets on each instance.
const SOCKETS: usize = 1_000;
const FIGURE: &str = "scale-out p99 (2 instances x 1,000 /ui sockets)";
const TARGET_MS: f64 = 15.0;

/// Measures the scale-out figure, or says why not (the local backend is one process).
pub async fn run(bench: &Bench) -> Vec<Row> {
    let target = format!("<= {TARGET_MS} ms");
    if bench.backend != Backend::Redis {
        return vec![Row::not_measured(FIGURE, &target, "Redis only")];
    }
    match measure(bench).await {
        Ok(rows) => rows,
        Err(e) => vec![error_row(FIGURE, &target, &e)],
    }
}

async fn measure(bench: &Bench) -> Result<Vec<Row>> {
    let dir = bench.tmp.join("scale-out");
    let store_a = Store::new(bench.backend, &dir.join("a"));
    let store_b = store_a.sibling(&dir.join("b"));
    let redis_pid = store_a
        .redis_pid()
        .context("the Redis backend runs no redis-server")?;
    // Servers sharing one Redis must share the key that hashes tokens.
    let hash_key = dir.join("hash-key");
    let hash_key = hash_key.to_str().context("a non-UTF-8 temp path")?;
    let env = [("HASH_KEY_FILE", hash_key)];
    let a = store_a.start(&bench.bin, &env)?;
    let b = store_b.start(&bench.bin, &env)?;
    let (api_a, api_b) = (Api::new(&a.url())?, Api::new(&b.url())?);
    let project = api_a.create_project("bench scale-out").await?;

    let shared = Arc::new(Shared::new());
    let crowds = [&a, &b].map(|s| {
        Crowd::start(
            s.addr,
            "42/ui,[\"task:created\"",
            shared.clone() as Arc<dyn OnEvent>,
        )
    });
    let mut crowds: Vec<Crowd> = crowds.into_iter().collect::<Result<_>>()?;
    for crowd in &crowds {
        crowd.grow(SOCKETS)?;
    }
    let sockets = SOCKETS * crowds.len();
    wait_connected(&mut crowds, &shared, sockets, Duration::from_secs(300)).await?;
    // Settle, and count what the two instances send Redis when nothing happens (the liveness
    // sweep, the push flush loop): part of every window, events or not.
    let idle_window = Duration::from_secs(2);
    let idle_before = trips(&api_a, &api_b).await?;
    tokio::time::sleep(idle_window).await;
    let idle_trips = trips(&api_a, &api_b).await?.saturating_sub(idle_before);

    let pids = [a.pid(), b.pid(), redis_pid];
    let cpu_before = pids.map(cpu_time);
    let trips_before = trips(&api_a, &api_b).await?;
    let started = Instant::now();
    let events = bench.plan.fanout_events;
    let mut samples = Vec::with_capacity(events);
    let mut lost = None;
    for i in 0..events {
        shared.received.store(0, Ordering::SeqCst);
        shared.last_ns.store(0, Ordering::SeqCst);
        shared.expected.store(sockets, Ordering::SeqCst);
        let sent_ns = shared.base.elapsed().as_nanos() as u64;
        let all = shared.all.notified();
        api_a.create_task(&project, "scale-out").await?;
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            lost = Some(format!(
                "event {i}: {} of {sockets} sockets got it within 10 s",
                shared.received.load(Ordering::SeqCst)
            ));
            break;
        }
        let last = shared.last_ns.load(Ordering::SeqCst);
        samples.push(Duration::from_nanos(last.saturating_sub(sent_ns)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    shared.expected.store(usize::MAX, Ordering::SeqCst);
    let window = started.elapsed();
    let trips_used = trips(&api_a, &api_b).await?.saturating_sub(trips_before);
    let mut cpu_ms = [0.0; 3];
    for ((used, before), pid) in cpu_ms.iter_mut().zip(cpu_before).zip(pids) {
        *used = ms(cpu_time(pid)?.saturating_sub(before?));
    }
    drop(crowds);

    let n = samples.len().max(1) as f64;
    let s = Samples::new(samples);
    let idle_per_sec = idle_trips as f64 / idle_window.as_secs_f64();
    let mut p99 = Row::at_most(FIGURE, s.percentile_ms(99.0), "ms", TARGET_MS).with_detail(json!({
        "last_socket": s.summary(),
        "sockets_per_instance": SOCKETS,
        "instances": 2,
        "events": s.len(),
    }));
    if let Some(why) = lost {
        p99 = p99.failed(&why);
    }
    let per_event = |cpu: f64| round3(cpu / n);
    let cpu_row = |figure: &str, cpu: f64| {
        Row::info(figure, per_event(cpu), "ms").with_detail(json!({
            "cpu_ms": round3(cpu),
            "events": s.len(),
            "window_ms": round3(ms(window)),
        }))
    };
    Ok(vec![
        p99,
        cpu_row("scale-out: CPU per event, instance A (creates)", cpu_ms[0]),
        cpu_row("scale-out: CPU per event, instance B", cpu_ms[1]),
        cpu_row("scale-out: redis-server CPU per event", cpu_ms[2]),
        Row::info(
            "scale-out: Redis round trips per event (both instances)",
            round3(trips_used as f64 / n),
            "round trips",
        )
        .with_detail(json!({
            "round_trips": trips_used,
            "events": s.len(),
            "window_ms": round3(ms(window)),
            // What the window would have cost without events, from the idle rate.
            "idle_round_trips_per_sec": round3(idle_per_sec),
            "idle_share_per_event": round3(idle_per_sec * window.as_secs_f64() / n),
        })),
    ])
}

/// Round trips to Redis so far of both instances together.
async fn trips(a: &Api, b: &Api) -> Result<u64> {
    let mut total = 0;
    for api in [a, b] {
        total += redis_round_trips(api)
            .await?
            .context("no maestro_redis_round_trips_total on /metrics")?;
    }
    Ok(total)
}
