//! Reviewing a session's work (docs/review.md): its changes, its diffs, and comments sent back
//! to the agent as one directive.
//!
//! Where the files are decides who reads them. A session's work tree is on the machine that
//! runs it. When that is this server's machine, the server reads it itself (with
//! [`crate::review::git`]) on every request; when it is another machine (or a directory other
//! than the session's worktree or project directory), the session's host there reads it with
//! the same code and reports it (`PUT /api/sessions/:id/changes`), and the
//! server answers from what was reported: the summary in [`Collection::Changes`] (one record
//! per session, so every server sharing the store answers alike) and each file's diff text in
//! [`Collection::ChangeDiffs`], parsed when asked for.
//!
//! `session:changes` (a [`ChangeStats`]) is emitted when the summary's content changes —
//! never for a re-read that found the same — and the same stats are kept in the session's
//! `metadata.changes`, so lists and state snapshots carry Fleet's "12 files +340 −51". Hosts read
//! every [`crate::review::REPORT_EVERY`] and report only differences, which is the debounce.

use std::collections::BTreeMap;
use std::path::PathBuf;

use maestro_protocol::ids::prefix;
use maestro_protocol::{
    AddReviewComment, ChangeStats, Changes, ChangesReport, Deleted, FileDiff, RawDiff,
    ReviewComment, ReviewSent, SendMail, SendReview, Session,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::runners::{coded, meta_str};
use super::{Domain, check_id, load_project, load_session};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, Txn, TxnExt, transact};
use crate::review::git::{self, GitError, MAX_DIFF_BYTES, MAX_FILES, WorkTree};
use crate::review::{patch, snapshot_to_changes};
use crate::util::{new_id, now_ms};

/// The event emitted when a session's changes differ from the last ones seen.
pub const SESSION_CHANGES: &str = "session:changes";
/// Most diff text kept for one session reported from another machine; diffs beyond it are not
/// kept (the diff route then says so).
pub const MAX_STORED_DIFF_BYTES: usize = 16 * 1024 * 1024;
/// Most review comments kept per session.
pub const MAX_COMMENTS: usize = 500;
/// Longest comment.
pub const MAX_COMMENT_CHARS: usize = 4_000;
/// Longest hunk context kept with a comment.
pub const MAX_CONTEXT_CHARS: usize = 2_000;

/// A session's latest summary and an index of the diffs kept for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredChanges {
    changes: Changes,
    /// Path → (diff record id, bytes) of the diffs kept for this summary.
    #[serde(default)]
    diffs: BTreeMap<String, (String, usize)>,
}

impl StoredChanges {
    fn diff_bytes(&self) -> usize {
        self.diffs.values().map(|(_, n)| n).sum()
    }
}

impl From<GitError> for Error {
    fn from(e: GitError) -> Self {
        use axum::http::StatusCode;
        match e {
            GitError::Outside(_) => Error::Coded {
                status: StatusCode::BAD_REQUEST,
                code: "PATH_OUTSIDE_WORK_TREE",
                message: e.to_string(),
                details: Some(json!([{ "path": "path", "message": "outside the work tree" }])),
            },
            GitError::Unchanged(_) => coded(StatusCode::NOT_FOUND, "NOT_CHANGED", e.to_string()),
            GitError::NoDirectory(_) | GitError::NotARepository(_) => {
                coded(StatusCode::CONFLICT, "NO_WORK_TREE", e.to_string())
            }
            GitError::Spawn(_) | GitError::Failed { .. } | GitError::Io { .. } => {
                tracing::warn!(error = %e, "reading a work tree failed");
                coded(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "GIT_FAILED",
                    "Reading the work tree with git failed",
                )
            }
        }
    }
}

/// The id of a kept diff: the session and a digest of the path (paths are not ids).
fn diff_record_id(session_id: &str, path: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(path.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    format!("{session_id}-{hex}")
}

/// Whether two summaries say the same (the time they were read aside).
fn same_content(a: &Changes, b: &Changes) -> bool {
    Changes {
        computed_at: 0,
        ..a.clone()
    } == Changes {
        computed_at: 0,
        ..b.clone()
    }
}

fn stats(project_id: &str, c: &Changes) -> ChangeStats {
    ChangeStats {
        session_id: c.session_id.clone(),
        project_id: project_id.to_owned(),
        files: c.total_files,
        additions: c.additions,
        deletions: c.deletions,
        branch: c.branch.clone(),
        base_branch: c.base_branch.clone(),
        ahead: c.ahead,
        behind: c.behind,
        computed_at: c.computed_at,
    }
}

/// Keeps `changes` as the session's summary when it differs from the kept one: the record, the
/// session's `metadata.changes`, `session:changes`. Diffs of files no longer changed are
/// dropped. Returns the kept record.
fn keep_summary(
    tx: &mut dyn Txn,
    session: &mut Session,
    changes: Changes,
) -> Result<StoredChanges> {
    let before: Option<StoredChanges> = tx.get(Collection::Changes, &session.id)?;
    if let Some(before) = &before
        && same_content(&before.changes, &changes)
    {
        return Ok(before.clone());
    }
    let mut diffs = before.map(|b| b.diffs).unwrap_or_default();
    let listed: std::collections::HashSet<&str> =
        changes.files.iter().map(|f| f.path.as_str()).collect();
    diffs.retain(|path, (id, _)| {
        let keep = listed.contains(path.as_str());
        if !keep {
            tx.delete(Collection::ChangeDiffs, id);
        }
        keep
    });
    let stored = StoredChanges { changes, diffs };
    tx.put(
        Collection::Changes,
        &session.id,
        Some(&session.project_id),
        &stored,
    );
    let st = stats(&session.project_id, &stored.changes);
    let meta = session.metadata.get_or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta["changes"] = serde_json::to_value(&st).expect("stats serialise");
    tx.put(Collection::Sessions, &session.id, None, &*session);
    tx.emit(
        &session.project_id.clone(),
        SESSION_CHANGES,
        &st,
        Some(&session.id),
    );
    Ok(stored)
}

/// Removes everything review keeps for a session (it is being deleted).
pub(crate) fn delete_all(tx: &mut dyn Txn, session_id: &str) -> Result<()> {
    if let Some(stored) = tx.get::<StoredChanges>(Collection::Changes, session_id)? {
        for (id, _) in stored.diffs.values() {
            tx.delete(Collection::ChangeDiffs, id);
        }
        tx.delete(Collection::Changes, session_id);
    }
    for (id, _) in tx.entries::<Value>(Collection::ReviewComments, Some(session_id))? {
        tx.delete(Collection::ReviewComments, &id);
    }
    Ok(())
}

/// Where a session's files are, as far as this server can tell.
enum Place {
    /// On this machine, in this directory: the server reads it.
    Here { dir: PathBuf, base: Option<String> },
    /// On another machine, or in a directory the server does not know as the session's: only
    /// its host's reports tell.
    Reported,
}

impl Domain {
    /// Where the session's work tree is: its worktree, else the project's directory, on this
    /// machine unless the session (or its host's report) names another. A directory a host
    /// reported is never read by the server (a `runner` token must not be able to point the
    /// server at any repository of its machine): when the host reports a work tree other than
    /// the one the server would read (`maestro run` in another directory), its reports answer.
    fn place(&self, session: &Session, stored: Option<&StoredChanges>) -> Result<Place> {
        let machine = meta_str(session, "machineId")
            .map(str::to_owned)
            .or_else(|| stored.map(|s| s.changes.machine_id.clone()));
        if machine.is_some_and(|m| m != self.info.machine_id) {
            return Ok(Place::Reported);
        }
        let dir = match meta_str(session, "worktree") {
            Some(dir) => dir.to_owned(),
            None => load_project(&mut *self.reader()?, &session.project_id)?.working_dir,
        };
        if let Some(s) = stored {
            let known =
                std::fs::canonicalize(&dir).is_ok_and(|d| d.starts_with(&s.changes.work_tree));
            if !known {
                return Ok(Place::Reported);
            }
        }
        Ok(Place::Here {
            dir: PathBuf::from(dir),
            base: meta_str(session, "baseBranch").map(str::to_owned),
        })
    }

    fn stored_changes(&self, id: &str) -> Result<Option<StoredChanges>> {
        self.reader()?.get(Collection::Changes, id)
    }

    /// `GET /api/sessions/:id/changes`.
    pub async fn session_changes(&self, id: String) -> Result<Changes> {
        check_id("sessionId", &id)?;
        let session = load_session(&mut *self.reader()?, &id)?;
        let stored = self.stored_changes(&id)?;
        match self.place(&session, stored.as_ref())? {
            Place::Reported => stored.map(|s| s.changes).ok_or_else(not_reported),
            Place::Here { dir, base } => {
                let machine = self.info.machine_id.clone();
                let sid = id.clone();
                let changes = blocking(move || {
                    let tree = WorkTree::open(&dir)?;
                    let snap = tree.changes(base.as_deref())?;
                    Ok(snapshot_to_changes(&sid, &machine, &tree, snap, now_ms()))
                })
                .await?;
                let unchanged = stored
                    .as_ref()
                    .is_some_and(|s| same_content(&s.changes, &changes));
                if !unchanged {
                    let kept = changes.clone();
                    transact(&*self.store, move |tx| {
                        let mut session = load_session(tx, &id)?;
                        keep_summary(tx, &mut session, kept.clone())?;
                        Ok(())
                    })
                    .await?;
                }
                Ok(changes)
            }
        }
    }

    /// `GET /api/sessions/:id/diff?path=`.
    pub async fn session_diff(&self, id: String, path: String) -> Result<FileDiff> {
        check_id("sessionId", &id)?;
        let session = load_session(&mut *self.reader()?, &id)?;
        let stored = self.stored_changes(&id)?;
        match self.place(&session, stored.as_ref())? {
            Place::Reported => {
                // Checked as on the host: the path must be one the host reported.
                git::check_path(std::path::Path::new("/nonexistent"), &path)?;
                let stored = stored.ok_or_else(not_reported)?;
                let file = stored
                    .changes
                    .files
                    .iter()
                    .find(|f| f.path == path)
                    .ok_or_else(|| GitError::Unchanged(path.clone()))?;
                let raw = match stored.diffs.get(&path) {
                    Some((rid, _)) => self
                        .reader()?
                        .get::<RawDiff>(Collection::ChangeDiffs, rid)?,
                    None => None,
                };
                let mut diff = match &raw {
                    Some(raw) => patch::file_diff(&id, file, raw),
                    None => patch::file_diff(
                        &id,
                        file,
                        &RawDiff {
                            path: path.clone(),
                            patch: String::new(),
                            truncated: false,
                        },
                    ),
                };
                if raw.is_none() && !diff.binary && !diff.too_large {
                    diff.note = Some(
                        "The machine running this session has not sent this diff (yet, or it \
                         is over what the server keeps per session)."
                            .into(),
                    );
                }
                Ok(diff)
            }
            Place::Here { dir, base } => {
                blocking(move || {
                    let tree = WorkTree::open(&dir)?;
                    // Checked before git runs: a path outside is refused whether or not
                    // anything changed.
                    git::check_path(tree.root(), &path)?;
                    let snap = tree.changes(base.as_deref())?;
                    let file = tree.find(&snap, &path)?;
                    let raw = tree.raw_diff(&snap.base, file)?;
                    Ok(patch::file_diff(&id, file, &raw))
                })
                .await
            }
        }
    }

    /// `PUT /api/sessions/:id/changes`: a host's report of the work tree it runs the session in.
    pub async fn report_changes(&self, id: String, report: ChangesReport) -> Result<ChangeStats> {
        check_id("sessionId", &id)?;
        if let Some(c) = &report.changes {
            if c.session_id != id {
                return Err(Error::validation(
                    "changes.sessionId must be the session's id",
                ));
            }
            check_id("changes.machineId", &c.machine_id)?;
            if c.files.len() > MAX_FILES {
                return Err(Error::validation(format!(
                    "changes.files: at most {MAX_FILES} files"
                )));
            }
        }
        if report.diffs.len() > MAX_FILES {
            return Err(Error::validation(format!("diffs: at most {MAX_FILES}")));
        }
        for d in &report.diffs {
            git::check_path(std::path::Path::new("/nonexistent"), &d.path)?;
            if d.patch.len() > MAX_DIFF_BYTES {
                return Err(Error::validation(format!(
                    "diffs: at most {MAX_DIFF_BYTES} bytes of diff per file"
                )));
            }
        }
        transact(&*self.store, move |tx| {
            let mut session = load_session(tx, &id)?;
            let mut stored = match &report.changes {
                Some(c) => keep_summary(tx, &mut session, c.clone())?,
                None => tx
                    .get::<StoredChanges>(Collection::Changes, &id)?
                    .ok_or_else(|| {
                        Error::validation("send the changes before (or with) their diffs")
                    })?,
            };
            let mut changed = false;
            for d in &report.diffs {
                if !stored.changes.files.iter().any(|f| f.path == d.path) {
                    continue;
                }
                let previous = stored.diffs.get(&d.path).map_or(0, |(_, n)| *n);
                if stored.diff_bytes() - previous + d.patch.len() > MAX_STORED_DIFF_BYTES {
                    continue;
                }
                let rid = diff_record_id(&id, &d.path);
                tx.put(Collection::ChangeDiffs, &rid, Some(&id), d);
                stored.diffs.insert(d.path.clone(), (rid, d.patch.len()));
                changed = true;
            }
            if changed {
                tx.put(Collection::Changes, &id, Some(&session.project_id), &stored);
            }
            Ok(stats(&session.project_id, &stored.changes))
        })
        .await
    }

    /// `GET /api/sessions/:id/review/comments`, oldest first.
    pub fn review_comments(&self, id: &str) -> Result<Vec<ReviewComment>> {
        check_id("sessionId", id)?;
        let mut r = self.reader()?;
        load_session(&mut *r, id)?;
        r.list(Collection::ReviewComments, Some(id))
    }

    /// `POST /api/sessions/:id/review/comments`.
    pub async fn add_review_comment(
        &self,
        id: String,
        req: AddReviewComment,
    ) -> Result<ReviewComment> {
        check_id("sessionId", &id)?;
        git::check_path(std::path::Path::new("/nonexistent"), &req.path)?;
        let body = req.body.trim().to_owned();
        if body.is_empty() || body.chars().count() > MAX_COMMENT_CHARS {
            return Err(Error::validation(format!(
                "body must be 1-{MAX_COMMENT_CHARS} characters"
            )));
        }
        if req.line == 0 {
            return Err(Error::validation("line starts at 1"));
        }
        let side = req.side.clone().unwrap_or_else(|| "new".into());
        super::check_enum("side", &side, &["new", "old"])?;
        let context: String = req
            .context
            .clone()
            .unwrap_or_default()
            .chars()
            .take(MAX_CONTEXT_CHARS)
            .collect();
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let session = load_session(tx, &id)?;
            let existing = tx.list_entries_raw(Collection::ReviewComments, Some(&id))?;
            if existing.len() >= MAX_COMMENTS {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "TOO_MANY_COMMENTS",
                    format!("A session keeps at most {MAX_COMMENTS} review comments"),
                ));
            }
            let comment = ReviewComment {
                id: new_id(prefix::REVIEW_COMMENT),
                session_id: id.clone(),
                project_id: session.project_id.clone(),
                path: req.path.clone(),
                line: req.line,
                side: side.clone(),
                context: context.clone(),
                body: body.clone(),
                created_at: now,
                sent_at: None,
                mail_id: None,
            };
            tx.insert(Collection::ReviewComments, &comment.id, Some(&id), &comment);
            tx.emit(&session.project_id, "review:comment", &comment, Some(&id));
            Ok(comment)
        })
        .await
    }

    /// `DELETE /api/sessions/:id/review/comments/:commentId` (a sent comment stays: it is part
    /// of what the agent was told).
    pub async fn delete_review_comment(&self, id: String, comment_id: String) -> Result<Deleted> {
        check_id("sessionId", &id)?;
        check_id("commentId", &comment_id)?;
        transact(&*self.store, move |tx| {
            let comment: ReviewComment = tx
                .get(Collection::ReviewComments, &comment_id)?
                .filter(|c: &ReviewComment| c.session_id == id)
                .ok_or_else(|| Error::not_found("Review comment", &comment_id))?;
            if comment.sent_at.is_some() {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "COMMENT_SENT",
                    "This comment was sent to the agent; it stays with the session",
                ));
            }
            tx.delete(Collection::ReviewComments, &comment_id);
            tx.emit(
                &comment.project_id,
                "review:comment_deleted",
                &json!({ "id": comment_id, "sessionId": id }),
                Some(&id),
            );
            Ok(Deleted {
                success: true,
                id: comment_id.clone(),
            })
        })
        .await
    }

    /// `POST /api/sessions/:id/review/send`: the unsent comments (and the message) as one
    /// `directive` mail to the session; the comments are marked sent with it, in the same
    /// transaction.
    pub async fn send_review(&self, id: String, req: SendReview) -> Result<ReviewSent> {
        check_id("sessionId", &id)?;
        let message = req
            .message
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned);
        if message
            .as_ref()
            .is_some_and(|m| m.chars().count() > MAX_COMMENT_CHARS)
        {
            return Err(Error::validation(format!(
                "message: at most {MAX_COMMENT_CHARS} characters"
            )));
        }
        let now = now_ms();
        transact(&*self.store, move |tx| {
            let session = load_session(tx, &id)?;
            let mut pending: Vec<ReviewComment> = tx
                .list::<ReviewComment>(Collection::ReviewComments, Some(&id))?
                .into_iter()
                .filter(|c| c.sent_at.is_none())
                .collect();
            if pending.is_empty() && message.is_none() && !req.approve {
                return Err(coded(
                    axum::http::StatusCode::CONFLICT,
                    "NOTHING_TO_SEND",
                    "There is no unsent comment; add one, write a message, or approve",
                ));
            }
            let (subject, details) = review_text(&pending, message.as_deref(), req.approve);
            let mail_req = SendMail {
                project_id: session.project_id.clone(),
                from_session_id: "user".into(),
                kind: "directive".into(),
                subject,
                to_session_id: Some(id.clone()),
                to_team_member_id: None,
                reply_to_mail_id: None,
                body: Some(
                    json!({
                        "details": details,
                        "review": {
                            "approve": req.approve,
                            "message": message,
                            "comments": pending.iter().map(|c| json!({
                                "path": c.path, "line": c.line, "side": c.side,
                                "context": c.context, "comment": c.body,
                            })).collect::<Vec<_>>(),
                        },
                    })
                    .as_object()
                    .cloned()
                    .expect("an object"),
                ),
            };
            super::mail::validate_send(&mail_req)?;
            let sent = super::mail::store_mail(tx, &mail_req, now)?;
            let mail_id = sent.first().map(|m| m.id.clone()).unwrap_or_default();
            for c in &mut pending {
                c.sent_at = Some(now);
                c.mail_id = Some(mail_id.clone());
                tx.put(Collection::ReviewComments, &c.id, Some(&id), &*c);
                tx.emit(&c.project_id, "review:comment", &*c, Some(&id));
            }
            Ok(ReviewSent {
                mail_id,
                comments: pending,
            })
        })
        .await
    }
}

/// The directive's subject and text: each comment with its file, line and hunk context.
fn review_text(
    comments: &[ReviewComment],
    message: Option<&str>,
    approve: bool,
) -> (String, String) {
    let files: std::collections::BTreeSet<&str> =
        comments.iter().map(|c| c.path.as_str()).collect();
    let subject = match (approve, comments.len()) {
        (true, 0) => "Review: looks good".to_owned(),
        (true, n) => format!(
            "Review: looks good, {n} comment{} on {} file{}",
            plural(n),
            files.len(),
            plural(files.len())
        ),
        (false, 0) => "Review".to_owned(),
        (false, n) => format!(
            "Review: {n} comment{} on {} file{}",
            plural(n),
            files.len(),
            plural(files.len())
        ),
    };
    let mut text = String::new();
    if approve {
        text.push_str("Looks good.");
        if comments.is_empty() && message.is_none() {
            text.push_str(" Your changes are approved.");
        }
        text.push('\n');
    }
    if let Some(m) = message {
        text.push_str(m);
        text.push('\n');
    }
    if !comments.is_empty() {
        text.push_str(&format!(
            "\nReview comments on your changes ({}):\n",
            comments.len()
        ));
    }
    for c in comments {
        let side = if c.side == "old" {
            " (removed line)"
        } else {
            ""
        };
        text.push_str(&format!("\n{}:{}{}\n", c.path, c.line, side));
        for line in c.context.lines() {
            text.push_str("    ");
            text.push_str(line);
            text.push('\n');
        }
        for line in c.body.lines() {
            text.push_str("> ");
            text.push_str(line);
            text.push('\n');
        }
    }
    (subject, text.trim_end().to_owned())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn not_reported() -> Error {
    coded(
        axum::http::StatusCode::NOT_FOUND,
        "CHANGES_NOT_REPORTED",
        "The machine that runs this session has not reported its changes yet",
    )
}

/// Runs git work on a blocking thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("git task: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comment(path: &str, line: u64, body: &str) -> ReviewComment {
        ReviewComment {
            id: "rvc_1".into(),
            session_id: "s".into(),
            project_id: "p".into(),
            path: path.into(),
            line,
            side: "new".into(),
            context: "@@ -1,2 +1,3 @@\n a\n+b".into(),
            body: body.into(),
            created_at: 0,
            sent_at: None,
            mail_id: None,
        }
    }

    #[test]
    fn a_review_names_file_line_context_and_comment() {
        let (subject, text) = review_text(
            &[
                comment("src/a.rs", 2, "Why b?"),
                comment("src/b.rs", 9, "ok"),
            ],
            Some("Nearly there."),
            false,
        );
        assert_eq!(subject, "Review: 2 comments on 2 files");
        assert!(text.starts_with("Nearly there."), "{text}");
        assert!(
            text.contains("src/a.rs:2\n    @@ -1,2 +1,3 @@\n     a\n    +b\n> Why b?"),
            "{text}"
        );
        let (subject, text) = review_text(&[], None, true);
        assert_eq!(subject, "Review: looks good");
        assert_eq!(text, "Looks good. Your changes are approved.");
    }
}
