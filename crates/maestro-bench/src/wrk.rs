//! `wrk` for the HTTP throughput figures: it keeps 50 connections busy with far less CPU per
//! request than a Rust client built from generic parts, which matters with two cores shared
//! between the load and the server.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// What `wrk --latency` reports.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
}

impl WrkResult {
    /// Responses with a 2xx status.
    pub fn ok_responses(&self) -> u64 {
        self.requests.saturating_sub(self.non_2xx)
    }
}

/// Runs `wrk -t2 -c<connections> -d<duration> --latency [-s script] url`.
pub fn run(
    url: &str,
    connections: u32,
    duration: Duration,
    script: Option<&Path>,
) -> Result<WrkResult> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t2",
        &format!("-c{connections}"),
        &format!("-d{}s", duration.as_secs().max(1)),
        "--timeout",
        "5s",
        "--latency",
    ]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .context("cannot run wrk (cargo xtask bench installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("cannot read wrk's output:\n{text}"))
}

/// Reads wrk's report.
pub fn parse(text: &str) -> Result<WrkResult> {
    let mut r = WrkResult::default();
    let mut saw_rate = false;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => r.p50_ms = duration_ms(v)?,
            ["90%", v] => r.p90_ms = duration_ms(v)?,
            ["99%", v] => r.p99_ms = duration_ms(v)?,
            [n, "requests", "in", secs, ..] => {
                r.requests = n.parse()?;
                r.seconds = duration_ms(secs.trim_end_matches(','))? / 1000.0;
            }
            ["Requests/sec:", v] => {
                r.requests_per_sec = v.parse()?;
                saw_rate = true;
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => r.non_2xx = n.parse()?,
            ["Socket", "errors:", rest @ ..] => {
                r.socket_errors = rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum();
            }
            _ => {}
        }
    }
    if !saw_rate || r.requests == 0 {
        bail!("no requests/sec in the report");
    }
    Ok(r)
}

/// `812.00us`, `5.10ms`, `1.02s`, `2.00m` → milliseconds.
fn duration_ms(text: &str) -> Result<f64> {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .context("a duration without a unit")?;
    let (num, unit) = text.split_at(split);
    let v: f64 = num.parse()?;
    Ok(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        other => bail!("unknown unit {other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
Running 10s test @ http://127.0.0.1:8080/api/tasks?projectId=p
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     5.23ms    1.02ms  20.00ms   90.00%
    Req/Sec     4.80k   300.00     5.50k    70.00%
  Latency Distribution
     50%  812.00us
     75%    5.60ms
     90%    6.30ms
     99%    1.02s
  95612 requests in 10.00s, 1.23GB read
  Socket errors: connect 0, read 2, write 0, timeout 12
  Non-2xx or 3xx responses: 5
Requests/sec:   9561.20
Transfer/sec:    126.00MB
";

    #[test]
    fn reads_a_report() {
        let r = parse(SAMPLE).unwrap();
        assert_eq!(r.requests, 95_612);
        assert_eq!(r.seconds, 10.0);
        assert_eq!(r.requests_per_sec, 9561.2);
        assert_eq!(r.p50_ms, 0.812);
        assert_eq!(r.p90_ms, 6.3);
        assert_eq!(r.p99_ms, 1020.0);
        assert_eq!(r.non_2xx, 5);
        assert_eq!(r.socket_errors, 14);
        assert_eq!(r.ok_responses(), 95_607);
        assert!(parse("nothing here").is_err());
    }
}
