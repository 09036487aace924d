//! Reading what a session changed, shared by the server and the `maestro` CLI.
//!
//! - [`git`]: a work tree's changed files and one file's diff text, with the `git` command;
//! - [`patch`]: diff text → hunks with line numbers;
//! - [`Reporter`]: what a session's host (`maestro run`, a runner) sends the server about a
//!   work tree on its machine: the summary when it changed, and the diffs of the files whose
//!   diff changed since it last sent them, in requests that fit the server's body limit.
//!
//! The rules (who reads where, what is kept) are in `domain::review`.

pub mod git;
pub mod patch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use maestro_protocol::{ChangedFile, Changes, ChangesReport, Millis, RawDiff};

use git::{Snapshot, WorkTree};

/// How often a host reads its session's work tree (and reports only what differs).
pub const REPORT_EVERY: Duration = Duration::from_secs(2);

/// A report request's body is kept under this (the server's default `MAX_BODY_BYTES` is 1 MiB).
pub const REPORT_BODY_BYTES: usize = 768 * 1024;

/// A snapshot as the API shows it.
pub fn snapshot_to_changes(
    session_id: &str,
    machine_id: &str,
    tree: &WorkTree,
    snap: Snapshot,
    now: Millis,
) -> Changes {
    Changes {
        session_id: session_id.to_owned(),
        work_tree: tree.root().to_string_lossy().into_owned(),
        machine_id: machine_id.to_owned(),
        branch: snap.base.branch,
        head: snap.base.head,
        base_branch: snap.base.base_branch,
        merge_base: snap.base.merge_base,
        ahead: snap.base.ahead,
        behind: snap.base.behind,
        files: snap.files,
        truncated: snap.truncated,
        total_files: snap.total_files,
        additions: snap.additions,
        deletions: snap.deletions,
        computed_at: now,
    }
}

/// What makes a file's diff worth sending again: its line counts, status, and the file's size
/// and modification time (an edit that keeps the counts still changes the time).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    file: ChangedFileKey,
    size: u64,
    modified: Option<std::time::SystemTime>,
    merge_base: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ChangedFileKey(String);

impl ChangedFileKey {
    fn of(f: &ChangedFile) -> Self {
        Self(format!(
            "{:?}|{:?}|{}|{}|{}|{}",
            f.status, f.old_path, f.additions, f.deletions, f.binary, f.too_large
        ))
    }
}

/// Reads one session's work tree on its host and says what to send the server.
pub struct Reporter {
    dir: PathBuf,
    base: Option<String>,
    session_id: String,
    machine_id: String,
    /// The summary last sent (its content; the read time aside).
    last: Option<Changes>,
    /// Diffs last sent, by path.
    sent: HashMap<String, Fingerprint>,
}

impl Reporter {
    pub fn new(dir: PathBuf, base: Option<String>, session_id: String, machine_id: String) -> Self {
        Self {
            dir,
            base,
            session_id,
            machine_id,
            last: None,
            sent: HashMap::new(),
        }
    }

    /// Reads the work tree; the requests to send (none when nothing changed). Call
    /// [`Reporter::forget`] when sending fails, so the next call sends everything again.
    pub fn poll(&mut self, now: Millis) -> git::Result<Vec<ChangesReport>> {
        let tree = WorkTree::open(&self.dir)?;
        let snap = tree.changes(self.base.as_deref())?;
        let base = snap.base.clone();
        let changes = snapshot_to_changes(&self.session_id, &self.machine_id, &tree, snap, now);
        let summary_changed = self.last.as_ref().is_none_or(|last| {
            Changes {
                computed_at: 0,
                ..last.clone()
            } != Changes {
                computed_at: 0,
                ..changes.clone()
            }
        });
        let mut diffs: Vec<RawDiff> = Vec::new();
        let mut fingerprints = HashMap::new();
        for file in &changes.files {
            let meta = std::fs::symlink_metadata(tree.root().join(&file.path)).ok();
            let fp = Fingerprint {
                file: ChangedFileKey::of(file),
                size: meta.as_ref().map_or(0, |m| m.len()),
                modified: meta.and_then(|m| m.modified().ok()),
                merge_base: base.merge_base.clone(),
            };
            if self.sent.get(&file.path) != Some(&fp) && !file.binary && !file.too_large {
                diffs.push(tree.raw_diff(&base, file)?);
            }
            fingerprints.insert(file.path.clone(), fp);
        }
        self.sent = fingerprints;
        if !summary_changed && diffs.is_empty() {
            return Ok(Vec::new());
        }
        self.last = Some(changes.clone());
        Ok(batches(changes, diffs))
    }

    /// Sending failed: send everything next time.
    pub fn forget(&mut self) {
        self.last = None;
        self.sent.clear();
    }
}

/// The summary first, with as many diffs as fit; the remaining diffs in further requests, each
/// under [`REPORT_BODY_BYTES`]. A diff whose JSON alone would not fit is sent empty and marked
/// cut.
fn batches(changes: Changes, diffs: Vec<RawDiff>) -> Vec<ChangesReport> {
    let mut size = serde_json::to_vec(&changes).map_or(0, |v| v.len());
    let mut out = vec![ChangesReport {
        changes: Some(changes),
        diffs: Vec::new(),
    }];
    for mut d in diffs {
        let mut n = serde_json::to_vec(&d).map_or(usize::MAX, |v| v.len()) + 1;
        if n > REPORT_BODY_BYTES - 1024 {
            d.patch.clear();
            d.truncated = true;
            n = d.path.len() * 2 + 64;
        }
        if size + n > REPORT_BODY_BYTES {
            out.push(ChangesReport::default());
            size = 0;
        }
        size += n;
        out.last_mut().expect("one").diffs.push(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes() -> Changes {
        Changes {
            session_id: "s".into(),
            work_tree: "/w".into(),
            machine_id: "m".into(),
            branch: None,
            head: None,
            base_branch: None,
            merge_base: None,
            ahead: 0,
            behind: 0,
            files: Vec::new(),
            truncated: false,
            total_files: 0,
            additions: 0,
            deletions: 0,
            computed_at: 0,
        }
    }

    #[test]
    fn large_reports_are_split_under_the_body_limit() {
        let diffs: Vec<RawDiff> = (0..6)
            .map(|i| RawDiff {
                path: format!("f{i}"),
                patch: "+x\n".repeat(60_000),
                truncated: false,
            })
            .collect();
        let out = batches(changes(), diffs);
        assert!(out[0].changes.is_some());
        assert!(out[1..].iter().all(|r| r.changes.is_none()));
        assert_eq!(out.iter().map(|r| r.diffs.len()).sum::<usize>(), 6);
        for r in &out {
            assert!(
                serde_json::to_vec(r).unwrap().len() < REPORT_BODY_BYTES,
                "{}",
                r.diffs.len()
            );
        }
        let small = batches(changes(), Vec::new());
        assert_eq!(small.len(), 1);
    }
}
