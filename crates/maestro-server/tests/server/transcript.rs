//! Sessions' transcripts: the parser against hand-written samples of Claude Code's and Codex's
//! files (from their documented formats, with a malformed line each), the follower on a file
//! that grows while it is read, and the HTTP API (upload, paging, retries, the limit, events,
//! the scope) on the backend the suite runs with.

use crate::common;

use std::io::Write as _;
use std::path::PathBuf;

use common::TestServer;
use maestro_client::Client;
use maestro_protocol::{
    CreateProject, CreateSession, CreateTask, TranscriptEntry, TranscriptKind as K,
    TranscriptUpload,
};
use maestro_server::config::AuthMode;
use maestro_server::transcript::follow::{Follower, LINE_MAX};
use maestro_server::transcript::{self, Line};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/transcripts")
        .join(name)
}

/// Everything in a sample file, read by the follower in one poll.
fn read_all(name: &str) -> (Vec<TranscriptEntry>, u64) {
    let path = fixture(name);
    let len = std::fs::metadata(&path).unwrap().len();
    let batch = Follower::new(&path, 0)
        .poll(1 << 20, 10_000)
        .unwrap()
        .expect("lines");
    assert_eq!((batch.start, batch.end), (0, len), "the whole file is read");
    (batch.entries, batch.malformed)
}

fn kinds(entries: &[TranscriptEntry]) -> Vec<K> {
    entries.iter().map(|e| e.kind).collect()
}

#[test]
fn a_claude_code_transcript() {
    let (e, malformed) = read_all("claude-code.jsonl");
    assert_eq!(malformed, 1, "the cut-off line");
    assert_eq!(
        kinds(&e),
        [
            K::Other,
            K::User,
            K::Assistant,
            K::ToolCall,
            K::ToolResult,
            K::Edit,
            K::ToolResult,
            K::Other,
            K::Assistant
        ]
    );
    assert_eq!(e[0].label.as_deref(), Some("summary"));
    assert_eq!(e[1].text.as_deref(), Some("The add test fails. Fix it."));
    assert_eq!(
        e[1].at,
        Some(transcript::parse_time("2026-05-01T10:00:00Z").unwrap())
    );
    // Thinking is left out; text and the tool call stay, in order.
    assert_eq!(e[2].text.as_deref(), Some("I'll run the tests first."));
    assert_eq!(e[3].tool.as_deref(), Some("Bash"));
    assert_eq!(e[3].call_id.as_deref(), Some("toolu_01"));
    assert_eq!(e[3].summary.as_deref(), Some("cargo test"));
    assert!(
        e[3].input
            .as_deref()
            .unwrap()
            .contains("\"description\": \"Run the tests\"")
    );
    let tokens = e[3].tokens.clone().expect("the message's usage");
    assert_eq!(
        (tokens.input, tokens.output, tokens.cached),
        (Some(1200), Some(85), Some(3400))
    );
    // The result: its first lines, and that it failed.
    assert_eq!(e[4].call_id.as_deref(), Some("toolu_01"));
    assert_eq!(e[4].is_error, Some(true));
    let out = e[4].output.as_deref().unwrap();
    assert!(
        out.starts_with("running 3 tests\ntest add ... FAILED\n"),
        "{out}"
    );
    assert!(out.ends_with("… 5 more lines"), "{out}");
    assert!(e[4].truncated);
    // The edit as a diff.
    assert_eq!(e[5].path.as_deref(), Some("/work/calc/src/lib.rs"));
    assert_eq!(
        e[5].diff.as_deref(),
        Some(
            "@@ -1,3 +1,3 @@\n pub fn add(a: i32, b: i32) -> i32 {\n-    a + b + 1\n+    a + b\n }\n"
        )
    );
    assert_eq!(
        e[6].output.as_deref(),
        Some("The file /work/calc/src/lib.rs has been updated.")
    );
    assert_eq!(e[7].label.as_deref(), Some("file-history-snapshot"));
    assert!(e[8].text.as_deref().unwrap().starts_with("Fixed:"));
    assert!(e[8].tokens.is_some());
}

#[test]
fn a_codex_rollout() {
    let (e, malformed) = read_all("codex-rollout.jsonl");
    assert_eq!(malformed, 1, "the line that is not JSON");
    assert_eq!(
        kinds(&e),
        [
            K::Other,
            K::Other,
            K::User,
            K::ToolCall,
            K::ToolResult,
            K::Edit,
            K::ToolResult,
            K::Tokens,
            K::Other,
            K::Assistant
        ]
    );
    assert_eq!(e[0].label.as_deref(), Some("session_meta"));
    assert_eq!(e[1].label.as_deref(), Some("turn_context"));
    assert_eq!(e[2].text.as_deref(), Some("The add test fails. Fix it."));
    assert_eq!(e[3].tool.as_deref(), Some("shell"));
    assert_eq!(e[3].summary.as_deref(), Some("bash -lc cargo test"));
    assert_eq!(e[3].call_id.as_deref(), Some("call_1"));
    assert_eq!(e[4].call_id.as_deref(), Some("call_1"));
    assert_eq!(e[4].is_error, Some(true), "exit code 101");
    assert!(
        e[4].output
            .as_deref()
            .unwrap()
            .starts_with("running 3 tests\n")
    );
    assert_eq!(e[5].tool.as_deref(), Some("apply_patch"));
    assert_eq!(e[5].path.as_deref(), Some("src/lib.rs"));
    assert_eq!(
        e[5].diff.as_deref(),
        Some(
            "*** Update File: src/lib.rs\n@@ pub fn add(a: i32, b: i32) -> i32 {\n-    a + b + 1\n+    a + b\n"
        )
    );
    assert_eq!(e[6].call_id.as_deref(), Some("call_2"));
    let tokens = e[7].tokens.clone().unwrap();
    assert_eq!(
        (tokens.input, tokens.output, tokens.cached, tokens.total),
        (Some(1800), Some(90), Some(1500), Some(5510))
    );
    assert_eq!(e[8].label.as_deref(), Some("mcp_startup_complete"));
    assert_eq!(
        e[9].text.as_deref(),
        Some("Fixed: `add` no longer adds 1; the tests pass.")
    );
}

#[test]
fn unknown_shapes_are_other_never_errors() {
    for line in [
        r#"{"type":"user","message":{"content":42}}"#,
        r#"{"type":"brand-new-kind","data":[1,2,3]}"#,
        r#"{"type":"assistant","message":{"content":[{"type":"hologram","x":1}]}}"#,
        r#"{"timestamp":"x","type":"response_item","payload":{"type":"teleport"}}"#,
    ] {
        let Line::Entries(entries) = transcript::parse_line(line.as_bytes()) else {
            panic!("{line} is JSON");
        };
        assert_eq!(kinds(&entries), [K::Other], "{line}");
    }
}

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(bytes).unwrap();
}

const USER: &str = r#"{"type":"user","message":{"role":"user","content":"one"}}"#;
const ASSISTANT: &str = r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"two"}]}}"#;

#[test]
fn the_follower_reads_whole_lines_as_the_file_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let mut f = Follower::new(&path, 0);
    assert_eq!(f.poll(1 << 20, 100).unwrap(), None, "no file yet");
    // A line and the first half of the next.
    let (head, tail) = ASSISTANT.split_at(30);
    append(&path, format!("{USER}\n{head}").as_bytes());
    let first = f.poll(1 << 20, 100).unwrap().unwrap();
    assert_eq!(kinds(&first.entries), [K::User]);
    assert_eq!((first.start, first.end), (0, USER.len() as u64 + 1));
    assert_eq!(f.poll(1 << 20, 100).unwrap(), None, "half a line waits");
    // The rest of it, then a blank line.
    append(&path, format!("{tail}\n\n").as_bytes());
    let second = f.poll(1 << 20, 100).unwrap().unwrap();
    assert_eq!(kinds(&second.entries), [K::Assistant]);
    assert_eq!(second.entries[0].text.as_deref(), Some("two"));
    assert_eq!(second.start, first.end);
    assert_eq!(second.end, std::fs::metadata(&path).unwrap().len());
    assert_eq!(second.malformed, 0);
    // A file that is rewritten shorter is read again from its start.
    std::fs::write(&path, format!("{ASSISTANT}\n")).unwrap();
    let again = f.poll(1 << 20, 100).unwrap().unwrap();
    assert_eq!(
        (again.start, kinds(&again.entries)),
        (0, vec![K::Assistant])
    );
}

#[test]
fn the_follower_stops_a_batch_at_max_entries_and_reads_on_later() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    append(&path, format!("{USER}\n{USER}\n{ASSISTANT}\n").as_bytes());
    let mut f = Follower::new(&path, 0);
    let a = f.poll(1 << 20, 2).unwrap().unwrap();
    assert_eq!(kinds(&a.entries), [K::User, K::User]);
    let b = f.poll(1 << 20, 2).unwrap().unwrap();
    assert_eq!((b.start, kinds(&b.entries)), (a.end, vec![K::Assistant]));
    // Small reads reassemble lines across polls.
    let mut small = Follower::new(&path, 0);
    let mut all = Vec::new();
    let len = std::fs::metadata(&path).unwrap().len();
    for _ in 0..len {
        if let Some(batch) = small.poll(16, 100).unwrap() {
            all.extend(batch.entries);
        }
    }
    assert_eq!(small.offset(), len);
    assert_eq!(kinds(&all), [K::User, K::User, K::Assistant]);
}

#[test]
fn an_overlong_line_is_skipped_and_counted_without_being_held() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.jsonl");
    let huge = format!(
        "{{\"type\":\"user\",\"pad\":\"{}\"}}\n",
        "x".repeat(LINE_MAX + 10)
    );
    append(&path, huge.as_bytes());
    append(&path, format!("{USER}\n").as_bytes());
    let mut f = Follower::new(&path, 0);
    let mut entries = Vec::new();
    let mut malformed = 0;
    // 1 MiB a poll: most polls end inside the long line and return nothing.
    for _ in 0..10 {
        if let Some(batch) = f.poll(1 << 20, 100).unwrap() {
            entries.extend(batch.entries);
            malformed += batch.malformed;
        }
    }
    assert_eq!(malformed, 1);
    assert_eq!(kinds(&entries), [K::User]);
    assert_eq!(f.offset(), std::fs::metadata(&path).unwrap().len());
}

// ---- HTTP ----

async fn session(c: &Client) -> (String, String) {
    let p = c
        .create_project(&CreateProject {
            name: Some("transcripts".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let t = c
        .create_task(&CreateTask {
            project_id: Some(p.id.clone()),
            title: Some("Fix the add test".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let s = c
        .create_session(&CreateSession {
            project_id: Some(p.id.clone()),
            task_ids: Some(vec![t.id]),
            name: Some("agent".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    (p.id, s.id)
}

fn texts(n: usize, from: usize) -> Vec<TranscriptEntry> {
    (from..from + n)
        .map(|i| {
            let mut e = TranscriptEntry::new(K::Assistant);
            e.text = Some(format!("message {i}"));
            e
        })
        .collect()
}

fn upload(path: &str, start: u64, end: u64, entries: Vec<TranscriptEntry>) -> TranscriptUpload {
    TranscriptUpload {
        path: path.into(),
        start,
        end,
        entries,
        malformed: 0,
    }
}

fn seqs(entries: &[TranscriptEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_numbered_paged_and_announced() {
    let server = TestServer::start().await;
    let c = server.api();
    let (project, sid) = session(c).await;
    let mut ws = server.ws().await;
    let empty = c.session_transcript(&sid, None, None, None).await.unwrap();
    assert_eq!((empty.first, empty.last, empty.entries.len()), (0, 0, 0));
    assert_eq!(empty.source, None);

    let mut first = upload("/t/a.jsonl", 0, 100, texts(120, 1));
    first.malformed = 2;
    let answer = c.upload_transcript(&sid, &first).await.unwrap();
    assert_eq!((answer.first, answer.last), (1, 120));
    assert!(
        answer.entries.is_empty(),
        "an upload answers the totals only"
    );
    let frames = ws.expect_events(&["session:transcript"]).await;
    let data = &frames[0]["data"];
    assert_eq!(data["sessionId"], sid.as_str());
    assert_eq!(data["projectId"], project.as_str());
    assert_eq!(
        (data["from"].as_u64(), data["to"].as_u64()),
        (Some(1), Some(120))
    );
    assert_eq!(data["entries"].as_array().unwrap().len(), 120);
    assert_eq!(data["entries"][119]["text"], "message 120");

    // The same batch again (a retry) changes nothing and announces nothing.
    c.upload_transcript(&sid, &first).await.unwrap();
    c.upload_transcript(&sid, &upload("/t/a.jsonl", 100, 180, texts(30, 121)))
        .await
        .unwrap();
    let frames = ws.expect_events(&["session:transcript"]).await;
    assert_eq!(frames[0]["data"]["from"], 121, "no event for the retry");

    // The newest page, then back, then forward.
    let tail = c
        .session_transcript(&sid, None, None, Some(40))
        .await
        .unwrap();
    assert_eq!(seqs(&tail.entries), (111..=150).collect::<Vec<_>>());
    assert!(tail.has_more);
    assert_eq!(tail.malformed, 2);
    let source = tail.source.clone().unwrap();
    assert_eq!((source.path.as_str(), source.offset), ("/t/a.jsonl", 180));
    let back = c
        .session_transcript(&sid, None, Some(111), Some(40))
        .await
        .unwrap();
    assert_eq!(seqs(&back.entries), (71..=110).collect::<Vec<_>>());
    let oldest = c
        .session_transcript(&sid, None, Some(20), Some(40))
        .await
        .unwrap();
    assert_eq!(seqs(&oldest.entries), (1..=19).collect::<Vec<_>>());
    assert!(!oldest.has_more);
    let after = c
        .session_transcript(&sid, Some(45), None, Some(10))
        .await
        .unwrap();
    assert_eq!(seqs(&after.entries), (46..=55).collect::<Vec<_>>());
    assert_eq!(after.entries[0].text.as_deref(), Some("message 46"));
    assert!(after.has_more);
    let end = c
        .session_transcript(&sid, Some(145), None, None)
        .await
        .unwrap();
    assert_eq!(seqs(&end.entries), (146..=150).collect::<Vec<_>>());
    assert!(!end.has_more);
    let totals = c
        .session_transcript(&sid, Some(0), None, Some(0))
        .await
        .unwrap();
    assert_eq!((totals.entries.len(), totals.last), (0, 150));

    // Another file (the agent began a new conversation) carries on the numbering.
    c.upload_transcript(&sid, &upload("/t/b.jsonl", 0, 10, texts(1, 151)))
        .await
        .unwrap();
    let tail = c
        .session_transcript(&sid, None, None, Some(1))
        .await
        .unwrap();
    assert_eq!(seqs(&tail.entries), [151]);
    assert_eq!(tail.source.unwrap().path, "/t/b.jsonl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let c = server.api();
    let (_, sid) = session(c).await;
    let status = |e: maestro_client::Error| e.status().map(|s| s.as_u16());
    let e = c
        .upload_transcript("nope", &upload("/t", 0, 1, texts(1, 1)))
        .await
        .unwrap_err();
    assert_eq!(status(e), Some(404));
    for bad in [
        upload("", 0, 1, texts(1, 1)),
        upload("/t", 5, 1, texts(1, 1)),
        upload("/t", 0, 1, texts(501, 1)),
    ] {
        let e = c.upload_transcript(&sid, &bad).await.unwrap_err();
        assert_eq!(status(e), Some(400));
    }
    for (after, before, limit) in [(Some(1), Some(2), None), (None, None, Some(501))] {
        let e = c
            .session_transcript(&sid, after, before, limit)
            .await
            .unwrap_err();
        assert_eq!(status(e), Some(400));
    }
    let page = c.session_transcript(&sid, None, None, None).await.unwrap();
    assert_eq!((page.last, page.source), (0, None));
    // Oversized fields are cut to the limits, not refused.
    let mut big = TranscriptEntry::new(K::Assistant);
    big.text = Some("y".repeat(transcript::TEXT_MAX * 2));
    c.upload_transcript(&sid, &upload("/t", 0, 1, vec![big]))
        .await
        .unwrap();
    let page = c.session_transcript(&sid, None, None, None).await.unwrap();
    let kept = &page.entries[0];
    assert!(kept.truncated);
    assert_eq!(
        kept.text.as_ref().unwrap().chars().count(),
        transcript::TEXT_MAX
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_entries_go_past_the_limit_and_with_the_session() {
    use maestro_server::domain::transcript::{MAX_ENTRIES, MAX_UPLOAD_ENTRIES, PAGE};
    let server = TestServer::start().await;
    let c = server.api();
    let (_, sid) = session(c).await;
    let per = MAX_UPLOAD_ENTRIES as u64;
    let uploads = MAX_ENTRIES / per + 2;
    for i in 0..uploads {
        let entries = texts(MAX_UPLOAD_ENTRIES, (i * per) as usize + 1);
        c.upload_transcript(&sid, &upload("/t", i, i + 1, entries))
            .await
            .unwrap();
    }
    let total = uploads * per;
    let page = c
        .session_transcript(&sid, Some(0), None, Some(3))
        .await
        .unwrap();
    assert_eq!(page.last, total);
    assert!(page.last - page.first < MAX_ENTRIES + PAGE, "{page:?}");
    assert!(page.last - page.first + 1 >= MAX_ENTRIES, "{page:?}");
    assert_eq!(
        page.entries[0].seq, page.first,
        "after=0 starts at the oldest kept"
    );
    assert_eq!(
        page.entries[0].text.as_deref(),
        Some(format!("message {}", page.first).as_str())
    );
    // Deleting the session deletes its transcript: a new session of the same id starts empty.
    c.delete_session(&sid).await.unwrap();
    let e = c
        .session_transcript(&sid, None, None, None)
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(404));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_upload_and_readers_only_read() {
    let server = TestServer::start_with(|c| c.auth = AuthMode::Required).await;
    let owner = std::fs::read_to_string(server.dir().join("data").join("owner-token")).unwrap();
    let admin = server.client().with_token(owner.trim());
    let (_, sid) = session(&admin).await;
    let reader = server
        .client()
        .with_token(common::token(&server, "read").await);
    let runner = server
        .client()
        .with_token(common::token(&server, "runner").await);
    let e = reader
        .upload_transcript(&sid, &upload("/t", 0, 1, texts(1, 1)))
        .await
        .unwrap_err();
    assert_eq!(e.status().map(|s| s.as_u16()), Some(403));
    assert_eq!(
        reader
            .session_transcript(&sid, None, None, None)
            .await
            .unwrap()
            .last,
        0,
        "the refused upload stored nothing"
    );
    runner
        .upload_transcript(&sid, &upload("/t", 0, 1, texts(2, 1)))
        .await
        .unwrap();
    let page = reader
        .session_transcript(&sid, None, None, None)
        .await
        .unwrap();
    assert_eq!(seqs(&page.entries), [1, 2]);
}
