//! The review figures (`docs/review.md`): a session's changes in a repository of 10,000 files
//! with 200 changed (150 modified, 50 untracked), and one 5,000-line diff as the phone gets it.
//!
//! The repository is real (made with `git` in the bench's temp directory) and the session is on
//! the server's own machine, so each request has the server read the work tree with git: the
//! time measured is the request's round trip on loopback, nearly all of it the server's.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::api::Api;
use crate::figures::{Bench, error_row};
use crate::report::{Row, Samples};
use crate::server::Store;

const FILES: usize = 10_000;
const MODIFIED: usize = 150;
const UNTRACKED: usize = 50;
const DIFF_LINES: usize = 2_500;

/// Measures the selected review figures on their own server.
pub async fn run(bench: &Bench) -> Vec<Row> {
    let mut rows = Vec::new();
    if !bench.wants("review-changes") && !bench.wants("review-diff") {
        return rows;
    }
    let name = bench.backend.name();
    eprintln!("bench[{name}]: review (a 10,000-file repository)");
    let repo = bench.tmp.join("review-repo");
    if let Err(e) = make_repo(&repo) {
        rows.push(error_row(
            "changes p99 (10,000 files, 200 changed)",
            "<= 150 ms",
            &e,
        ));
        return rows;
    }
    let store = Store::new(bench.backend, &bench.tmp.join("review"));
    let server = match store.start(&bench.bin, &[("RUNNER", "off")]) {
        Ok(s) => s,
        Err(e) => {
            rows.push(error_row(
                "changes p99 (10,000 files, 200 changed)",
                "<= 150 ms",
                &e,
            ));
            return rows;
        }
    };
    let result = async {
        let api = Api::new(&server.url())?;
        let project = api
            .post(
                "/api/projects",
                &json!({ "name": "bench review", "workingDir": repo }),
            )
            .await?["id"]
            .as_str()
            .context("project id")?
            .to_owned();
        let session = api.create_session(&project, "working").await?;
        let trials = bench.plan.review_trials;
        let mut out = Vec::new();
        if bench.wants("review-changes") {
            let path = format!("/api/sessions/{session}/changes");
            let first = api.get(&path).await?;
            if first["totalFiles"] != MODIFIED + UNTRACKED + 1 {
                bail!(
                    "expected {} changed files, got {}",
                    MODIFIED + UNTRACKED + 1,
                    first["totalFiles"]
                );
            }
            let s = time(trials, || api.get(&path)).await?;
            out.push(
                Row::at_most(
                    "changes p99 (10,000 files, 200 changed)",
                    s.percentile_ms(99.0),
                    "ms",
                    150.0,
                )
                .with_detail(s.summary()),
            );
        }
        if bench.wants("review-diff") {
            let path = format!("/api/sessions/{session}/diff?path=big.txt");
            let first = api.get(&path).await?;
            let lines: usize = first["hunks"]
                .as_array()
                .context("hunks")?
                .iter()
                .map(|h| h["lines"].as_array().map_or(0, Vec::len))
                .sum();
            if lines < 2 * DIFF_LINES {
                bail!("expected a diff of {} lines, got {lines}", 2 * DIFF_LINES);
            }
            let s = time(trials, || api.get(&path)).await?;
            out.push(
                Row::at_most("diff p99 (5,000 lines)", s.percentile_ms(99.0), "ms", 100.0)
                    .with_detail(s.summary()),
            );
        }
        anyhow::Ok(out)
    }
    .await;
    match result {
        Ok(r) => rows.extend(r),
        Err(e) => rows.push(error_row(
            "changes p99 (10,000 files, 200 changed)",
            "<= 150 ms",
            &e,
        )),
    }
    drop(server);
    rows
}

async fn time<F, Fut>(n: usize, mut f: F) -> Result<Samples>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value>>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        f().await?;
        samples.push(started.elapsed());
    }
    Ok(Samples::new(samples))
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=bench", "-c", "user.email=bench@localhost"])
        .args(args)
        .output()
        .context("git")?;
    if !out.status.success() {
        bail!("git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// 10,000 committed files of 20 lines in 100 directories and one of 2,500 lines; then 150 of
/// them modified, 50 untracked files added, and every line of the big one replaced (a diff of
/// 5,000 lines).
fn make_repo(repo: &Path) -> Result<()> {
    std::fs::create_dir_all(repo)?;
    git(repo, &["init", "-q", "-b", "main"])?;
    let body = |i: usize| -> String { (0..20).map(|l| format!("file {i} line {l}\n")).collect() };
    for i in 0..FILES {
        let dir = repo.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(format!("f{i}.txt")), body(i))?;
    }
    let big: String = (0..DIFF_LINES).map(|l| format!("old line {l}\n")).collect();
    std::fs::write(repo.join("big.txt"), big)?;
    git(repo, &["add", "-A"])?;
    git(repo, &["commit", "-q", "-m", "bench"])?;
    for i in 0..MODIFIED {
        let i = i * (FILES / MODIFIED);
        let path = repo
            .join(format!("d{:02}", i % 100))
            .join(format!("f{i}.txt"));
        std::fs::write(path, format!("{}changed\n", body(i)))?;
    }
    for i in 0..UNTRACKED {
        std::fs::write(repo.join(format!("new{i}.txt")), "a\nb\nc\n")?;
    }
    let big: String = (0..DIFF_LINES).map(|l| format!("new line {l}\n")).collect();
    std::fs::write(repo.join("big.txt"), big)?;
    Ok(())
}
