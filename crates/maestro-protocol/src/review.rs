//! Reviewing a session's work: what changed in its work tree, per-file diffs, and review
//! comments sent back to the agent. `docs/review.md` describes the routes and limits.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Millis;

/// How a file differs from the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Added,
    Modified,
    Deleted,
    Renamed,
}

/// One changed file of a session's work tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ChangedFile {
    /// Path relative to the work tree's root, `/`-separated.
    pub path: String,
    /// The path before a rename.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub status: FileStatus,
    /// Lines added (0 for a binary file).
    pub additions: u64,
    /// Lines removed (0 for a binary file).
    pub deletions: u64,
    pub binary: bool,
    /// Not known to git yet (neither committed nor staged).
    #[serde(default)]
    pub untracked: bool,
    /// Too large to count or diff (see `docs/review.md`).
    #[serde(default)]
    pub too_large: bool,
}

/// `GET /api/sessions/:id/changes`: what a session changed, against the branch it started from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Changes {
    pub session_id: String,
    /// The work tree's root on the machine that runs the session.
    pub work_tree: String,
    /// The machine whose files these are.
    pub machine_id: String,
    /// The checked-out branch (absent when `HEAD` is detached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit `HEAD` points at (absent in a repository with no commit yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The branch the work started from: the one the worktree was made from, else the
    /// repository's default branch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    /// The merge base of `HEAD` and the base branch: what the files are compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_base: Option<String>,
    /// Commits on `HEAD` that the base branch lacks.
    pub ahead: u64,
    /// Commits on the base branch that `HEAD` lacks.
    pub behind: u64,
    /// Changed files (committed since the merge base, staged, unstaged and untracked), by
    /// path; at most `MAX_FILES` (see `truncated`).
    pub files: Vec<ChangedFile>,
    /// More files changed than are listed.
    pub truncated: bool,
    /// Every changed file, listed or not.
    pub total_files: u64,
    pub additions: u64,
    pub deletions: u64,
    /// When these were read from the work tree.
    pub computed_at: Millis,
}

/// A line of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum LineKind {
    Context,
    Add,
    Del,
}

/// One line of a hunk, with its numbers in the old and the new file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct DiffLine {
    pub kind: LineKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<u64>,
    pub text: String,
}

/// One hunk of a unified diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Hunk {
    /// `@@ -1,4 +1,6 @@ fn main()`.
    pub header: String,
    pub old_start: u64,
    pub old_lines: u64,
    pub new_start: u64,
    pub new_lines: u64,
    pub lines: Vec<DiffLine>,
}

/// `GET /api/sessions/:id/diff?path=`: one file's diff against the merge base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct FileDiff {
    pub session_id: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    pub status: FileStatus,
    pub binary: bool,
    pub too_large: bool,
    /// The diff was cut at the documented size; `note` says where.
    pub truncated: bool,
    /// Why the diff is cut or absent, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub additions: u64,
    pub deletions: u64,
    pub hunks: Vec<Hunk>,
}

/// A file's diff as `git diff` prints it, what a host sends for a session whose files are on
/// its machine (the server parses it when asked).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct RawDiff {
    pub path: String,
    /// Unified diff text (no headers needed; hunks from the first `@@`), empty for a binary
    /// or too large file.
    pub patch: String,
    /// The text was cut at the documented size.
    #[serde(default)]
    pub truncated: bool,
}

/// `PUT /api/sessions/:id/changes` (scope `runner`): the host of a session reports its work
/// tree. `changes` replaces the summary; `diffs` replace the stored diffs of those files (a
/// host sends only those whose diff changed since its last report, and splits a large report
/// into several requests). Diffs of files no longer in the summary are dropped.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ChangesReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
    #[serde(default)]
    pub diffs: Vec<RawDiff>,
}

/// The short form of a session's changes that Fleet shows ("12 files +340 −51"): the payload of
/// `session:changes` and the session's `metadata.changes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ChangeStats {
    pub session_id: String,
    pub project_id: String,
    pub files: u64,
    pub additions: u64,
    pub deletions: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_branch: Option<String>,
    pub ahead: u64,
    pub behind: u64,
    pub computed_at: Millis,
}

/// A reviewer's comment on one line of a session's diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReviewComment {
    /// `rvc_…`.
    pub id: String,
    pub session_id: String,
    pub project_id: String,
    pub path: String,
    /// The line's number in the new file (or in the old one for a removed line, see `side`).
    pub line: u64,
    /// `new` or `old`.
    pub side: String,
    /// A few lines of the hunk around the line, as the reviewer saw them.
    pub context: String,
    pub body: String,
    pub created_at: Millis,
    /// When it went to the agent in a review (absent while it waits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<Millis>,
    /// The directive mail that carried it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail_id: Option<String>,
}

/// `POST /api/sessions/:id/review/comments`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddReviewComment {
    pub path: String,
    pub line: u64,
    /// `new` (default) or `old`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side: Option<String>,
    /// The hunk's lines around the comment (the server keeps at most a few).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub body: String,
}

/// `POST /api/sessions/:id/review/send`: every unsent comment (and `message`) as one directive;
/// `approve` sends "Looks good" instead when there is nothing else to say.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendReview {
    #[serde(default)]
    pub approve: bool,
    /// A general remark placed before the line comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The answer to a sent review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct ReviewSent {
    pub mail_id: String,
    /// The comments it carried, now marked sent.
    pub comments: Vec<ReviewComment>,
}
