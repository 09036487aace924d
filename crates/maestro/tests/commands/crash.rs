//! Durability across a crash: a server process taking concurrent writes is killed with
//! SIGKILL and restarted on the same data directory. Every write that was acknowledged must be
//! there, intact, and the event sequence must continue without a gap.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use maestro_client::{Client, TaskQuery};
use maestro_protocol::{CreateProject, CreateTask};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `maestro serve` on a free port and waits until `/health` answers.
async fn start(dir: &Path) -> Server {
    let url_file: PathBuf = dir.join("server-url");
    let _ = std::fs::remove_file(&url_file);
    let child = Command::new(env!("CARGO_BIN_EXE_maestro"))
        .args(["serve", "--port", "0"])
        .env("DATA_DIR", dir)
        .env("SESSION_DIR", dir.join("sessions"))
        .env("LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn maestro");
    // Owned at once, so the process is reaped whatever happens next.
    let mut server = Server {
        child,
        url: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "server did not start");
        if let Ok(url) = std::fs::read_to_string(&url_file)
            && Client::new(&url).unwrap().health().await.is_ok()
        {
            server.url = url;
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path()).await;
    let client = Client::new(&server.url).unwrap();
    let project = client
        .create_project(&CreateProject {
            name: Some("crash".into()),
            ..Default::default()
        })
        .await
        .unwrap();

    // Watch the event stream before the load starts.
    let ws_url = server.url.replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let last_seq = Arc::new(AtomicUsize::new(0));
    let watcher = {
        let last_seq = last_seq.clone();
        let project_id = project.id.clone();
        tokio::spawn(async move {
            let mut expected = 1u64;
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                if frame["projectId"] != project_id.as_str() {
                    continue;
                }
                let seq = frame["seq"].as_u64().unwrap();
                assert_eq!(seq, expected, "live sequence has a gap or repeat");
                expected += 1;
                last_seq.store(seq as usize, Ordering::SeqCst);
            }
        })
    };

    // Eight writers create tasks until the server dies; each remembers what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let ack_count = Arc::new(AtomicUsize::new(0));
    let dead = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let (client, acked, ack_count, dead) = (
            client.clone(),
            acked.clone(),
            ack_count.clone(),
            dead.clone(),
        );
        let project_id = project.id.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..10_000 {
                if dead.load(Ordering::SeqCst) {
                    break;
                }
                let req = CreateTask {
                    project_id: Some(project_id.clone()),
                    title: Some(format!("writer {w} task {i}")),
                    description: Some("x".repeat(200)),
                    ..Default::default()
                };
                match client.create_task(&req).await {
                    Ok(task) => {
                        acked.lock().await.push(task.id);
                        ack_count.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => break,
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while ack_count.load(Ordering::SeqCst) < 300 {
        assert!(Instant::now() < deadline, "writes too slow to reach 300");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL, mid-stream
    server.child.wait().unwrap();
    dead.store(true, Ordering::SeqCst);
    for w in writers {
        w.await.unwrap();
    }
    watcher.await.unwrap();
    let acked = acked.lock().await.clone();
    let seen_live = last_seq.load(Ordering::SeqCst);

    let server = start(dir.path()).await;
    let client = Client::new(&server.url).unwrap();
    let tasks = client
        .list_tasks(&TaskQuery {
            project_id: Some(project.id.clone()),
            ..Default::default()
        })
        .await
        .expect("every stored task decodes");
    let stored: std::collections::HashSet<_> = tasks.iter().map(|t| t.id.as_str()).collect();
    for id in &acked {
        assert!(
            stored.contains(id.as_str()),
            "acknowledged task {id} was lost"
        );
    }
    assert!(tasks.len() >= acked.len());
    // Nothing half-written: every task is complete.
    for t in &tasks {
        assert_eq!(t.project_id, project.id);
        assert_eq!(t.description.len(), 200, "task {} is truncated", t.id);
    }
    // Events seen live never exceed what was committed.
    assert!(seen_live <= tasks.len());

    // The sequence continues exactly after the last committed event: each committed task
    // emitted one event in the project's scope, so the next one is number len + 1.
    let ws_url = server.url.replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    client
        .create_task(&CreateTask {
            project_id: Some(project.id.clone()),
            title: Some("after restart".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let frame = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("event after restart")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = msg {
            break serde_json::from_str::<serde_json::Value>(&text).unwrap();
        }
    };
    assert_eq!(frame["event"], "task:created");
    assert_eq!(frame["seq"].as_u64().unwrap() as usize, tasks.len() + 1);
}
