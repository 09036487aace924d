//! End to end: an agent under `maestro run` whose hook names its transcript file; the host
//! follows the file while the agent appends to it (a line written in two parts, a malformed
//! line) and the server ends up with each entry exactly once.

use crate::support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use maestro_client::Client;
use maestro_protocol::{CreateProject, CreateSession, CreateTask, TranscriptKind, TranscriptPage};
use support::{BIN, Server};

const USER: &str = r#"{"type":"user","message":{"role":"user","content":"Fix the add test."}}"#;
const ASSISTANT_HEAD: &str =
    r#"{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"Do"#;
const ASSISTANT_TAIL: &str =
    r#"ne."},{"type":"tool_use","id":"toolu_1","name":"Bash","input":{"command":"cargo test"}}]}}"#;

/// The agent: writes a line, runs the SessionStart hook as Claude Code would (payload on
/// stdin), writes half a line, waits for the test, finishes the line and adds a malformed one,
/// then waits to be told to exit.
const AGENT: &str = r#"
printf '%s\n' "$USER_LINE" > "$T"
printf '{"session_id":"c1","transcript_path":"%s","hook_event_name":"SessionStart"}' "$T" \
  | "$MAESTRO" session register >/dev/null
echo hooked
printf '%s' "$HEAD" >> "$T"
read go
printf '%s\n%s\n' "$TAIL" 'not json' >> "$T"
echo appended
read done
"#;

async fn session(c: &Client) -> String {
    let p = c
        .create_project(&CreateProject {
            name: Some("transcript".into()),
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
    c.create_session(&CreateSession {
        project_id: Some(p.id),
        task_ids: Some(vec![t.id]),
        ..Default::default()
    })
    .await
    .unwrap()
    .id
}

/// Pages until `done` holds, within a generous bound.
async fn until(
    c: &Client,
    sid: &str,
    what: &str,
    done: impl Fn(&TranscriptPage) -> bool,
) -> TranscriptPage {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = c
            .session_transcript(sid, Some(0), None, None)
            .await
            .unwrap();
        if done(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "{what}: {page:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_follows_the_transcript_its_agents_hook_names() {
    use std::io::{BufRead, BufReader, Write};
    let server = Server::start().await;
    let c = server.client();
    let sid = session(&c).await;
    let dir = tempfile::tempdir().unwrap();
    let transcript = dir.path().join("c1.jsonl");
    let mut child = Command::new(BIN)
        .env_remove("MAESTRO_API_URL")
        .env_remove("DATA_DIR")
        .env("HOME", server.home.path())
        .env("MAESTRO_SERVER_URL", &server.url)
        .env("MAESTRO_SESSION_ID", &sid)
        .env("T", &transcript)
        .env("MAESTRO", BIN)
        .env("USER_LINE", USER)
        .env("HEAD", ASSISTANT_HEAD)
        .env("TAIL", ASSISTANT_TAIL)
        .args(["run", "--", "sh", "-c", AGENT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let expect = |needle: &str| loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("no {needle:?} from the agent"));
        if line.contains(needle) {
            return;
        }
    };
    expect("hooked");
    // The first line arrives; the half line after it waits for its end.
    let page = until(&c, &sid, "the first line", |p| p.last >= 1).await;
    assert_eq!(page.entries[0].kind, TranscriptKind::User);
    assert_eq!(page.entries[0].text.as_deref(), Some("Fix the add test."));
    let source = page.source.clone().expect("the followed file");
    assert_eq!(source.path, transcript.to_string_lossy());
    assert_eq!(source.offset, USER.len() as u64 + 1, "only the whole line");

    stdin.write_all(b"go\r").unwrap();
    expect("appended");
    let page = until(&c, &sid, "the rest", |p| p.last >= 3 && p.malformed >= 1).await;
    let kinds: Vec<_> = page.entries.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            TranscriptKind::User,
            TranscriptKind::Assistant,
            TranscriptKind::ToolCall
        ]
    );
    assert_eq!(page.entries[1].text.as_deref(), Some("Done."));
    assert_eq!(page.entries[2].summary.as_deref(), Some("cargo test"));
    assert_eq!(page.malformed, 1);

    stdin.write_all(b"done\r").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Nothing was sent twice, and the rendezvous directory is gone with the host.
    let page = c
        .session_transcript(&sid, Some(0), None, None)
        .await
        .unwrap();
    assert_eq!(page.last, 3, "{page:#?}");
    assert_eq!(
        page.source.unwrap().offset,
        std::fs::metadata(&transcript).unwrap().len()
    );
}
