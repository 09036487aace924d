//! What a run produces: one [`Row`] per figure, the table printed at the end and the JSON file
//! written to `bench/results/`. Pure code, unit-tested (the benchmarks themselves never run
//! in `cargo xtask test`).

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Miss,
    /// The figure could not be measured (the reason is the row's value).
    NotMeasured,
    /// Context for the other figures, without a target.
    Info,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Miss => "MISS",
            Self::NotMeasured => "-",
            Self::Info => "info",
        }
    }
}

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: String,
    /// The measured number, in `unit` (absent when not measured).
    pub value: Option<f64>,
    pub unit: &'static str,
    /// How the value is shown (e.g. `"7,812 req/s"`).
    pub shown: String,
    /// The target as text (e.g. `">= 7,500 req/s"`).
    pub target: String,
    pub verdict: Verdict,
    /// Everything else measured on the way (samples, percentiles, counts).
    pub detail: Value,
}

impl Row {
    /// A figure that must be at least `target`.
    pub fn at_least(figure: &str, value: f64, unit: &'static str, target: f64) -> Self {
        Self::compare(figure, value, unit, ">=", target, value >= target)
    }

    /// A figure that must be at most `target`.
    pub fn at_most(figure: &str, value: f64, unit: &'static str, target: f64) -> Self {
        Self::compare(figure, value, unit, "<=", target, value <= target)
    }

    fn compare(
        figure: &str,
        value: f64,
        unit: &'static str,
        op: &str,
        target: f64,
        ok: bool,
    ) -> Self {
        Self {
            figure: figure.to_owned(),
            value: Some(value),
            unit,
            shown: format!("{} {unit}", number(value)),
            target: format!("{op} {} {unit}", number(target)),
            verdict: if ok { Verdict::Pass } else { Verdict::Miss },
            detail: Value::Null,
        }
    }

    /// A measurement without a target, shown for what it explains.
    pub fn info(figure: &str, value: f64, unit: &'static str) -> Self {
        Self {
            figure: figure.to_owned(),
            value: Some(value),
            unit,
            shown: format!("{} {unit}", number(value)),
            target: "(no target)".into(),
            verdict: Verdict::Info,
            detail: Value::Null,
        }
    }

    /// A figure that could not be measured, and why.
    pub fn not_measured(figure: &str, target: &str, why: &str) -> Self {
        Self {
            figure: figure.to_owned(),
            value: None,
            unit: "",
            shown: format!("not measured: {why}"),
            target: target.to_owned(),
            verdict: Verdict::NotMeasured,
            detail: Value::Null,
        }
    }

    /// Marks a measured figure as a miss whatever its value (e.g. events were lost).
    pub fn failed(mut self, why: &str) -> Self {
        self.verdict = Verdict::Miss;
        self.shown = format!("{} ({why})", self.shown);
        self
    }

    pub fn with_detail(mut self, detail: Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn to_json(&self) -> Value {
        json!({
            "figure": self.figure,
            "value": self.value,
            "unit": self.unit,
            "shown": self.shown,
            "target": self.target,
            "result": self.verdict.label(),
            "detail": self.detail,
        })
    }
}

/// A number for people: thousands separated, two decimals below 10, one below 100.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let decimals = if v.abs() < 10.0 {
        2
    } else if v.abs() < 100.0 {
        1
    } else {
        0
    };
    let text = format!("{v:.decimals$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// Latency samples and their percentiles.
#[derive(Debug, Clone)]
pub struct Samples {
    sorted: Vec<Duration>,
}

impl Samples {
    pub fn new(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        Self { sorted: samples }
    }

    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// The nearest-rank percentile `p` (0–100], in milliseconds; 0 when empty.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.sorted.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.sorted.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.sorted.len()) - 1;
        ms(self.sorted[index])
    }

    pub fn max_ms(&self) -> f64 {
        self.sorted.last().copied().map_or(0.0, ms)
    }

    /// `{n, p50, p90, p99, max}` in milliseconds.
    pub fn summary(&self) -> Value {
        json!({
            "n": self.len(),
            "p50_ms": round3(self.percentile_ms(50.0)),
            "p90_ms": round3(self.percentile_ms(90.0)),
            "p99_ms": round3(self.percentile_ms(99.0)),
            "max_ms": round3(self.max_ms()),
        })
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The results table: figure, value, target, pass/miss.
pub fn table(title: &str, rows: &[Row]) -> String {
    let headers = ["figure", "value", "target", "result"];
    let cells: Vec<[&str; 4]> = rows
        .iter()
        .map(|r| {
            [
                r.figure.as_str(),
                r.shown.as_str(),
                r.target.as_str(),
                r.verdict.label(),
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = format!("{title}\n");
    let line = |out: &mut String, row: [&str; 4]| {
        let mut text = String::from("|");
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(text, " {cell:<w$} |");
        }
        out.push_str(&text);
        out.push('\n');
    };
    line(&mut out, headers);
    let rule = widths.map(|w| "-".repeat(w));
    line(&mut out, [&rule[0], &rule[1], &rule[2], &rule[3]]);
    for row in cells {
        line(&mut out, row);
    }
    out
}

/// The figures compared between the backends, and whether a bigger value is better.
pub const COMPARED: &[(&str, bool)] = &[
    ("create throughput", true),
    ("list throughput", true),
    ("mail wake p99", false),
    ("fan-out p99 (1,000 /ui sockets)", false),
];

/// How much worse Redis may be than the embedded store on a compared figure.
pub const RATIO_TARGET: f64 = 1.3;

/// Redis against the embedded store on each of [`COMPARED`]: for a throughput embedded / Redis,
/// for a latency Redis / embedded, so that bigger is worse either way; at most
/// [`RATIO_TARGET`]. A figure missing from either run (not selected, or not measured) is
/// shown as not measured.
pub fn ratio_rows(local: &[Row], redis: &[Row]) -> Vec<Row> {
    let value = |rows: &[Row], figure: &str| {
        rows.iter()
            .find(|r| r.figure == figure)
            .and_then(|r| r.value)
            .filter(|v| v.is_finite() && *v > 0.0)
    };
    COMPARED
        .iter()
        .map(|&(figure, higher_is_better)| {
            let name = format!("Redis / embedded: {figure}");
            match (value(local, figure), value(redis, figure)) {
                (Some(l), Some(r)) => {
                    let ratio = if higher_is_better { l / r } else { r / l };
                    Row::at_most(&name, round3(ratio), "x", RATIO_TARGET)
                        .with_detail(json!({ "local": l, "redis": r }))
                }
                (l, r) => {
                    let missing = match (l, r) {
                        (None, None) => "on both backends",
                        (None, _) => "on the embedded store",
                        _ => "on Redis",
                    };
                    Row::not_measured(
                        &name,
                        &format!("<= {} x", number(RATIO_TARGET)),
                        &format!("no figure {missing}"),
                    )
                }
            }
        })
        .collect()
}

/// Today's date (UTC) as `YYYY-MM-DD`, for result file names.
pub fn date_utc(unix_secs: u64) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let days = (unix_secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = Samples::new((1..=100).rev().map(Duration::from_millis).collect());
        assert_eq!(s.percentile_ms(50.0), 50.0);
        assert_eq!(s.percentile_ms(99.0), 99.0);
        assert_eq!(s.percentile_ms(100.0), 100.0);
        assert_eq!(s.max_ms(), 100.0);
        let one = Samples::new(vec![Duration::from_micros(1500)]);
        assert_eq!(one.percentile_ms(99.0), 1.5);
        assert_eq!(Samples::new(Vec::new()).percentile_ms(99.0), 0.0);
        assert_eq!(s.summary()["n"], 100);
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(number(7812.4), "7,812");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(15.26), "15.3");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(-4321.0), "-4,321");
        assert_eq!(number(999.0), "999");
    }

    #[test]
    fn verdicts_and_table() {
        let rows = vec![
            Row::at_least("create throughput", 8000.0, "req/s", 7500.0),
            Row::at_most("mail wake p99", 2.5, "ms", 2.0),
            Row::not_measured("CLI", "<= 10 ms", "command missing"),
            Row::at_most("replay p99", 3.0, "ms", 50.0).failed("999 of 1,000 delivered"),
            Row::info("disk: fsync p99", 1.5, "ms"),
        ];
        assert_eq!(rows[4].verdict, Verdict::Info);
        assert_eq!(rows[4].to_json()["result"], "info");
        assert_eq!(rows[0].verdict, Verdict::Pass);
        assert_eq!(rows[1].verdict, Verdict::Miss);
        assert_eq!(rows[3].verdict, Verdict::Miss);
        let t = table("local", &rows);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "local");
        assert!(lines[1].starts_with("| figure "));
        assert!(lines[3].contains("| 8,000 req/s") && lines[3].ends_with("| pass   |"));
        assert!(lines[4].contains(">= ") || lines[4].contains("<= 2.00 ms"));
        assert!(lines[5].contains("not measured: command missing"));
        let widths: Vec<usize> = lines[1..].iter().map(|l| l.chars().count()).collect();
        assert!(widths.windows(2).all(|w| w[0] == w[1]), "aligned: {t}");
        assert_eq!(rows[1].to_json()["result"], "MISS");
        assert_eq!(rows[2].to_json()["value"], Value::Null);
    }

    #[test]
    fn ratios_are_bigger_when_redis_is_worse() {
        let local = vec![
            Row::at_least("create throughput", 10_000.0, "req/s", 7_500.0),
            Row::at_least("list throughput", 8_000.0, "req/s", 4_500.0),
            Row::at_most("mail wake p99", 2.0, "ms", 2.0),
            Row::at_most("fan-out p99 (1,000 /ui sockets)", 10.0, "ms", 15.0),
        ];
        let redis = vec![
            Row::at_least("create throughput", 5_000.0, "req/s", 7_500.0),
            Row::at_least("list throughput", 8_000.0, "req/s", 4_500.0),
            Row::at_most("mail wake p99", 2.5, "ms", 4.0),
            Row::not_measured("fan-out p99 (1,000 /ui sockets)", "<= 15 ms", "error: x"),
        ];
        let rows = ratio_rows(&local, &redis);
        assert_eq!(rows.len(), COMPARED.len());
        // Throughput: embedded / Redis; 2x worse on Redis is 2.
        assert_eq!(rows[0].figure, "Redis / embedded: create throughput");
        assert_eq!(rows[0].value, Some(2.0));
        assert_eq!(rows[0].verdict, Verdict::Miss);
        assert_eq!(rows[0].target, "<= 1.30 x");
        assert_eq!(rows[0].detail["redis"], 5_000.0);
        assert_eq!(rows[1].value, Some(1.0));
        assert_eq!(rows[1].verdict, Verdict::Pass);
        // Latency: Redis / embedded.
        assert_eq!(rows[2].value, Some(1.25));
        assert_eq!(rows[2].verdict, Verdict::Pass);
        // Not measured on one side: not measured, not a pass.
        assert_eq!(rows[3].value, None);
        assert_eq!(rows[3].verdict, Verdict::NotMeasured);
        assert!(rows[3].shown.contains("on Redis"), "{}", rows[3].shown);
        // Not selected at all.
        let none = ratio_rows(&[], &redis);
        assert!(none.iter().all(|r| r.verdict == Verdict::NotMeasured));
        assert!(none[0].shown.contains("on the embedded store"));
        // A latency on Redis above 1.3x the embedded one misses.
        let slow = vec![Row::at_most("mail wake p99", 2.7, "ms", 4.0)];
        assert_eq!(ratio_rows(&local, &slow)[2].verdict, Verdict::Miss);
    }

    #[test]
    fn dates() {
        assert_eq!(date_utc(0), "1970-01-01");
        assert_eq!(date_utc(951_782_400), "2000-02-29");
        assert_eq!(date_utc(1_767_225_599), "2025-12-31");
    }
}
