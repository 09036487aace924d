//! Reviewing a session's work through the API, on real git repositories made in temp
//! directories: the changes of a worktree (added, modified, deleted, renamed, binary,
//! untracked, a name with spaces and unicode, commits ahead and behind), diffs with line
//! numbers, paths outside the work tree refused, `session:changes` only when something changed,
//! a session on another machine answered from its host's reports (the reporter the CLI runs),
//! and review comments sent to the agent as one directive.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestServer, WAIT, api_err, token};
use maestro_client::Client;
use maestro_protocol::{
    AddReviewComment, CreateProject, CreateSession, FileStatus, LineKind, SendReview,
};
use maestro_server::config::AuthMode;
use maestro_server::review::Reporter;
use serde_json::json;

const SERVER_MACHINE: &str = "server-machine";
const OTHER_MACHINE: &str = "laptop-machine";
const UNICODE: &str = "dir with space/ünïcode файл.txt";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, path: &str, content: impl AsRef<[u8]>) {
    let p = dir.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn lines(prefix: &str, n: usize) -> String {
    (1..=n).map(|i| format!("{prefix} line {i}\n")).collect()
}

/// A repository on `main` and a worktree of it on `maestro/s1` (made as the runner makes one),
/// with every kind of change in the worktree; one commit on `main` after the branch.
fn repo_with_changes(root: &Path) -> (PathBuf, PathBuf) {
    let repo = root.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    write(&repo, "keep.txt", "unchanged\n");
    write(&repo, "mod.txt", lines("mod", 10));
    write(&repo, "del.txt", lines("del", 4));
    write(&repo, "old-name.txt", lines("rename me", 20));
    write(&repo, "img.bin", [0u8, 1, 2, 3, 0, 255]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "initial"]);
    let wt = root.join("worktrees").join("s1");
    git(
        &repo,
        &[
            "worktree",
            "add",
            "-q",
            "-b",
            "maestro/s1",
            wt.to_str().unwrap(),
        ],
    );
    // On main after the branch: the worktree is one behind.
    write(&repo, "main-only.txt", "later\n");
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "main moves on"]);
    // In the worktree: one commit (ahead), then uncommitted and untracked changes.
    write(&wt, "committed.txt", lines("committed", 3));
    git(&wt, &["add", "-A"]);
    git(&wt, &["commit", "-q", "-m", "agent commit"]);
    let mut m = lines("mod", 10);
    m = m.replace("mod line 5\n", "mod line five\nmod line 5b\n");
    write(&wt, "mod.txt", m);
    std::fs::remove_file(wt.join("del.txt")).unwrap();
    git(&wt, &["mv", "old-name.txt", "new name.txt"]);
    write(&wt, "img.bin", [0u8, 9, 9, 9, 0, 255, 7]);
    write(&wt, UNICODE, "hello\nworld\n");
    // A symbolic link to a directory outside the tree (tracked as a link, never followed).
    std::os::unix::fs::symlink("/etc", wt.join("escape")).unwrap();
    (repo, wt)
}

async fn project(c: &Client, dir: &Path) -> String {
    c.create_project(&CreateProject {
        name: Some("review".into()),
        working_dir: Some(dir.to_string_lossy().into_owned()),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

async fn session(c: &Client, project: &str, metadata: serde_json::Value) -> String {
    c.create_session(&CreateSession {
        project_id: Some(project.into()),
        task_ids: Some(Vec::new()),
        name: Some("agent".into()),
        status: Some("working".into()),
        metadata: Some(metadata),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

async fn server() -> TestServer {
    TestServer::start_with(|c| c.machine_id = Some(SERVER_MACHINE.into())).await
}

/// Reads frames until a `session:changes`, skipping others.
async fn next_changes(ws: &mut common::WsClient) -> serde_json::Value {
    loop {
        let frame = ws
            .try_next_frame(WAIT)
            .await
            .expect("a session:changes event");
        if frame["event"] == "session:changes" {
            return frame["data"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worktree_on_this_machine_shows_every_kind_of_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, wt) = repo_with_changes(tmp.path());
    let server = server().await;
    let c = server.api();
    let p = project(c, &repo).await;
    let sid = session(
        c,
        &p,
        json!({ "machineId": SERVER_MACHINE, "worktree": wt, "baseBranch": "main" }),
    )
    .await;
    let mut ws = server.ws().await;

    let changes = c.session_changes(&sid).await.unwrap();
    assert_eq!(changes.branch.as_deref(), Some("maestro/s1"));
    assert_eq!(changes.base_branch.as_deref(), Some("main"));
    assert_eq!((changes.ahead, changes.behind), (1, 1));
    assert_eq!(changes.machine_id, SERVER_MACHINE);
    assert!(changes.merge_base.is_some());
    let by_path = |p: &str| {
        changes
            .files
            .iter()
            .find(|f| f.path == p)
            .unwrap_or_else(|| panic!("{p} in {:#?}", changes.files))
    };
    let m = by_path("mod.txt");
    assert_eq!(
        (m.status, m.additions, m.deletions),
        (FileStatus::Modified, 2, 1)
    );
    assert_eq!(by_path("del.txt").status, FileStatus::Deleted);
    assert_eq!(by_path("del.txt").deletions, 4);
    let r = by_path("new name.txt");
    assert_eq!(r.status, FileStatus::Renamed);
    assert_eq!(r.old_path.as_deref(), Some("old-name.txt"));
    assert!(by_path("img.bin").binary);
    let c3 = by_path("committed.txt");
    assert_eq!((c3.status, c3.additions), (FileStatus::Added, 3));
    let u = by_path(UNICODE);
    assert!(u.untracked);
    assert_eq!((u.status, u.additions), (FileStatus::Added, 2));
    assert!(by_path("escape").untracked);
    assert!(!changes.files.iter().any(|f| f.path == "keep.txt"));
    assert!(!changes.files.iter().any(|f| f.path == "main-only.txt"));
    assert_eq!(changes.total_files, changes.files.len() as u64);
    assert_eq!(
        changes.additions,
        changes.files.iter().map(|f| f.additions).sum::<u64>()
    );

    // The first read is news: an event, and the session carries the stats.
    let ev = next_changes(&mut ws).await;
    assert_eq!(ev["sessionId"], sid);
    assert_eq!(ev["files"], changes.total_files);
    let s = c.get_session(&sid).await.unwrap();
    assert_eq!(
        s.metadata.as_ref().unwrap()["changes"]["files"],
        changes.total_files
    );

    // Diffs with line numbers.
    let d = c.session_diff(&sid, "mod.txt").await.unwrap();
    assert_eq!(d.hunks.len(), 1);
    let h = &d.hunks[0];
    let del = h.lines.iter().find(|l| l.kind == LineKind::Del).unwrap();
    assert_eq!(
        (del.old, del.new, del.text.as_str()),
        (Some(5), None, "mod line 5")
    );
    let adds: Vec<(Option<u64>, &str)> = h
        .lines
        .iter()
        .filter(|l| l.kind == LineKind::Add)
        .map(|l| (l.new, l.text.as_str()))
        .collect();
    assert_eq!(
        adds,
        vec![(Some(5), "mod line five"), (Some(6), "mod line 5b")]
    );
    assert!(!d.truncated && d.note.is_none());
    let u = c.session_diff(&sid, UNICODE).await.unwrap();
    assert_eq!(u.hunks[0].lines.len(), 2);
    assert_eq!(u.hunks[0].lines[1].new, Some(2));
    let b = c.session_diff(&sid, "img.bin").await.unwrap();
    assert!(b.binary && b.hunks.is_empty() && b.note.is_some());
    let r = c.session_diff(&sid, "new name.txt").await.unwrap();
    assert_eq!(r.status, FileStatus::Renamed);
    let gone = c.session_diff(&sid, "del.txt").await.unwrap();
    assert_eq!(gone.hunks[0].lines.len(), 4);
    let link = c.session_diff(&sid, "escape").await.unwrap();
    assert_eq!(
        link.hunks[0].lines[0].text, "/etc",
        "a link reads as its target"
    );

    // Outside the tree: refused, whatever the spelling; unchanged files are not found.
    for bad in [
        "../repo/keep.txt",
        "/etc/passwd",
        "escape/passwd",
        "a/../../x",
        "./mod.txt",
    ] {
        api_err(
            c.session_diff(&sid, bad).await,
            400,
            "PATH_OUTSIDE_WORK_TREE",
        );
    }
    api_err(c.session_diff(&sid, "keep.txt").await, 404, "NOT_CHANGED");

    // Reading again with nothing new emits nothing; a new edit emits the new counts (so the
    // next event carries them: an event for the unchanged read would come first).
    c.session_changes(&sid).await.unwrap();
    write(&wt, "another.txt", "x\n");
    let again = c.session_changes(&sid).await.unwrap();
    assert_eq!(again.total_files, changes.total_files + 1);
    let ev = next_changes(&mut ws).await;
    assert_eq!(ev["files"], again.total_files);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_that_is_not_a_repository_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let c = server.api();
    let p = project(c, tmp.path()).await;
    let sid = session(c, &p, json!({})).await;
    api_err(c.session_changes(&sid).await, 409, "NO_WORK_TREE");
    api_err(c.session_changes("nope").await, 404, "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_on_another_machine_is_answered_from_its_hosts_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, wt) = repo_with_changes(tmp.path());
    let server = server().await;
    let c = server.api();
    // The project's directory is not on the server's machine (it names the laptop's path).
    let p = project(c, Path::new("/on/the/laptop")).await;
    let sid = session(c, &p, json!({ "machineId": OTHER_MACHINE })).await;
    api_err(c.session_changes(&sid).await, 404, "CHANGES_NOT_REPORTED");

    // The host's side, as the CLI runs it: read, report what differs.
    let mut reporter = Reporter::new(
        wt.clone(),
        Some("main".into()),
        sid.clone(),
        OTHER_MACHINE.into(),
    );
    let mut ws = server.ws().await;
    let reports = reporter.poll(1).unwrap();
    assert!(!reports.is_empty());
    for r in &reports {
        c.report_changes(&sid, r).await.unwrap();
    }
    let ev = next_changes(&mut ws).await;
    let changes = c.session_changes(&sid).await.unwrap();
    assert_eq!(changes.machine_id, OTHER_MACHINE);
    assert_eq!(ev["files"], changes.total_files);
    assert_eq!(changes.base_branch.as_deref(), Some("main"));
    assert!(changes.files.iter().any(|f| f.path == UNICODE));
    let d = c.session_diff(&sid, "mod.txt").await.unwrap();
    assert_eq!(
        d.hunks[0]
            .lines
            .iter()
            .filter(|l| l.kind == LineKind::Add)
            .count(),
        2
    );
    let u = c.session_diff(&sid, UNICODE).await.unwrap();
    assert_eq!(u.hunks[0].lines[0].text, "hello");
    api_err(c.session_diff(&sid, "keep.txt").await, 404, "NOT_CHANGED");
    api_err(
        c.session_diff(&sid, "../etc/passwd").await,
        400,
        "PATH_OUTSIDE_WORK_TREE",
    );

    // Nothing changed: nothing to send. One edit: the summary and that one diff.
    assert!(reporter.poll(2).unwrap().is_empty());
    write(&wt, "mod.txt", lines("rewritten", 3));
    let reports = reporter.poll(3).unwrap();
    assert_eq!(reports.len(), 1);
    let paths: Vec<&str> = reports[0].diffs.iter().map(|d| d.path.as_str()).collect();
    assert_eq!(paths, vec!["mod.txt"]);
    c.report_changes(&sid, &reports[0]).await.unwrap();
    let d = c.session_diff(&sid, "mod.txt").await.unwrap();
    assert!(
        d.hunks[0]
            .lines
            .iter()
            .any(|l| l.text == "rewritten line 1")
    );

    // A file that is no longer changed loses its diff.
    git(&wt, &["checkout", "--", "mod.txt"]);
    for r in reporter.poll(4).unwrap() {
        c.report_changes(&sid, &r).await.unwrap();
    }
    api_err(c.session_diff(&sid, "mod.txt").await, 404, "NOT_CHANGED");

    // A report for another session's id, or a path outside, is refused.
    let mut bad = reporter.poll(5).unwrap_or_default();
    reporter.forget();
    let mut all = reporter.poll(6).unwrap();
    all[0].changes.as_mut().unwrap().session_id = "someone-else".into();
    api_err(
        c.report_changes(&sid, &all[0]).await,
        400,
        "VALIDATION_ERROR",
    );
    bad.push(maestro_protocol::ChangesReport {
        changes: None,
        diffs: vec![maestro_protocol::RawDiff {
            path: "../../etc/passwd".into(),
            patch: "@@ -0,0 +1 @@\n+x\n".into(),
            truncated: false,
        }],
    });
    api_err(
        c.report_changes(&sid, bad.last().unwrap()).await,
        400,
        "PATH_OUTSIDE_WORK_TREE",
    );
    drop(repo);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_host_reports_and_only_a_responder_comments() {
    let tmp = tempfile::tempdir().unwrap();
    let (_repo, wt) = repo_with_changes(tmp.path());
    let server = TestServer::start_with(|c| {
        c.auth = AuthMode::Required;
        c.machine_id = Some(SERVER_MACHINE.into());
    })
    .await;
    let owner = std::fs::read_to_string(server.dir().join("data").join("owner-token")).unwrap();
    let admin = server.client().with_token(owner.trim());
    let p = project(&admin, Path::new("/elsewhere")).await;
    let sid = session(&admin, &p, json!({ "machineId": OTHER_MACHINE })).await;
    let reader = server.client().with_token(token(&server, "read").await);
    let runner = server.client().with_token(token(&server, "runner").await);
    let mut reporter = Reporter::new(wt, None, sid.clone(), OTHER_MACHINE.into());
    let reports = reporter.poll(1).unwrap();
    // A read token may not report; nothing is kept.
    let e = reader.report_changes(&sid, &reports[0]).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    api_err(
        reader.session_changes(&sid).await,
        404,
        "CHANGES_NOT_REPORTED",
    );
    // A runner token may; a reader then reads.
    runner.report_changes(&sid, &reports[0]).await.unwrap();
    assert!(reader.session_changes(&sid).await.unwrap().total_files > 0);
    // A read token may not comment or send a review; nothing is kept, nothing is sent.
    let comment = AddReviewComment {
        path: "mod.txt".into(),
        line: 5,
        body: "why?".into(),
        ..Default::default()
    };
    let e = reader.add_review_comment(&sid, &comment).await.unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    let e = reader
        .send_review(
            &sid,
            &SendReview {
                approve: true,
                message: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403), "{e}");
    assert!(reader.review_comments(&sid).await.unwrap().is_empty());
    assert!(admin.inbox(&sid, &[]).await.unwrap().is_empty());
    // A respond token may.
    let responder = server.client().with_token(token(&server, "respond").await);
    responder.add_review_comment(&sid, &comment).await.unwrap();
    responder
        .send_review(&sid, &SendReview::default())
        .await
        .unwrap();
    assert_eq!(admin.inbox(&sid, &[]).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comments_go_to_the_agent_as_one_directive_and_are_marked_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server().await;
    let c = server.api();
    let p = project(c, tmp.path()).await;
    let sid = session(c, &p, json!({})).await;
    let add = |path: &str, line: u64, body: &str| AddReviewComment {
        path: path.into(),
        line,
        side: None,
        context: Some("@@ -3,2 +3,3 @@\n a\n+b".into()),
        body: body.into(),
    };
    let first = c
        .add_review_comment(&sid, &add("src/a.rs", 4, "Why b here?"))
        .await
        .unwrap();
    let dropped = c
        .add_review_comment(&sid, &add("src/a.rs", 9, "never mind"))
        .await
        .unwrap();
    c.add_review_comment(&sid, &add("docs/x.md", 1, "Typo in the title"))
        .await
        .unwrap();
    api_err(
        c.add_review_comment(&sid, &add("../x", 1, "no")).await,
        400,
        "PATH_OUTSIDE_WORK_TREE",
    );
    api_err(
        c.add_review_comment(&sid, &add("a", 1, "  ")).await,
        400,
        "VALIDATION_ERROR",
    );
    let e = c
        .raw(
            maestro_client::Method::DELETE,
            &format!("/api/sessions/{sid}/review/comments/{}", dropped.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(e.status.as_u16(), 200, "{:?}", e.body);
    assert_eq!(c.review_comments(&sid).await.unwrap().len(), 2);

    let sent = c
        .send_review(
            &sid,
            &SendReview {
                approve: false,
                message: Some("Nearly there.".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(sent.comments.len(), 2);
    let inbox = c.inbox(&sid, &[]).await.unwrap();
    assert_eq!(inbox.len(), 1);
    let mail = &inbox[0];
    assert_eq!(mail.id, sent.mail_id);
    assert_eq!(mail.kind, "directive");
    assert_eq!(mail.subject, "Review: 2 comments on 2 files");
    let details = mail.body["details"].as_str().unwrap();
    assert!(details.starts_with("Nearly there."), "{details}");
    assert!(
        details.contains("src/a.rs:4\n    @@ -3,2 +3,3 @@"),
        "{details}"
    );
    assert!(details.contains("> Why b here?"), "{details}");
    assert!(details.contains("docs/x.md:1"), "{details}");
    assert_eq!(mail.body["review"]["comments"].as_array().unwrap().len(), 2);
    let kept = c.review_comments(&sid).await.unwrap();
    assert!(
        kept.iter()
            .all(|k| k.sent_at.is_some() && k.mail_id.as_deref() == Some(&*sent.mail_id))
    );
    // A sent comment stays; nothing is left to send.
    let e = c
        .raw(
            maestro_client::Method::DELETE,
            &format!("/api/sessions/{sid}/review/comments/{}", first.id),
            None,
        )
        .await
        .unwrap();
    assert_eq!(e.status.as_u16(), 409, "{:?}", e.body);
    api_err(
        c.send_review(&sid, &SendReview::default()).await,
        409,
        "NOTHING_TO_SEND",
    );
    // Approve: a short directive.
    c.send_review(
        &sid,
        &SendReview {
            approve: true,
            message: None,
        },
    )
    .await
    .unwrap();
    let inbox = c.inbox(&sid, &[]).await.unwrap();
    assert_eq!(inbox.len(), 2);
    assert_eq!(inbox[1].subject, "Review: looks good");
    assert_eq!(inbox[1].kind, "directive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_cannot_point_the_server_at_another_directory_of_its_machine() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, _wt) = repo_with_changes(tmp.path());
    // Another repository on the server's machine, which the session has nothing to do with.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    git(&other, &["init", "-q", "-b", "main"]);
    write(&other, "private.txt", "x\n");
    let server = server().await;
    let c = server.api();
    let p = project(c, &repo).await;
    let sid = session(c, &p, json!({})).await;
    // A host (a runner token could say anything) reports that other directory as the work
    // tree, on the server's machine.
    let mut reporter = Reporter::new(other.clone(), None, sid.clone(), SERVER_MACHINE.into());
    for r in reporter.poll(1).unwrap() {
        c.report_changes(&sid, &r).await.unwrap();
    }
    // The server answers from the report; it does not read that directory itself: a file added
    // there since is not seen.
    write(&other, "later.txt", "y\n");
    let changes = c.session_changes(&sid).await.unwrap();
    let paths: Vec<&str> = changes.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["private.txt"]);
    api_err(c.session_diff(&sid, "later.txt").await, 404, "NOT_CHANGED");
}
