//! Following the agent's own transcript file from its host (`maestro run`, the runner) and
//! uploading it to the server (`docs/runners.md`, "Transcripts").
//!
//! How the host learns the file: it makes a private directory for each agent and names a file
//! in it in the agent's environment ([`SINK_ENV`]). The agent's hooks (`maestro session
//! register`, `resume-working`, `needs-input`) receive `transcript_path` on stdin and write it
//! there ([`note_from_hook`]); the host polls that file and follows whichever transcript it
//! names last. Nothing goes through the network until the host uploads, and the agent never
//! waits on any of it: the hook writes a small local file, the host only reads.
//!
//! The file is the queue: the host reads a bounded batch, uploads it, and reads on only once
//! the server took it, so a slow or absent server costs no memory. A batch the server refuses
//! (4xx) is skipped, so one bad batch cannot stop the stream.

use std::io::{IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_client::Client;
use maestro_protocol::TranscriptUpload;
use maestro_server::transcript::follow::{Batch, Follower};
use tokio_util::sync::CancellationToken;

/// The environment variable that names the file a hook writes the agent's transcript path to.
pub const SINK_ENV: &str = "MAESTRO_TRANSCRIPT_SINK";

/// How often the host looks for new lines (and for a new transcript path).
const POLL: Duration = Duration::from_millis(500);
/// Bytes of the file read per batch.
const BATCH_BYTES: usize = 256 * 1024;
/// Entries per batch (the server takes at most 500).
const BATCH_ENTRIES: usize = 200;
/// Longest hook payload read from stdin.
const HOOK_STDIN_MAX: u64 = 4 * 1024 * 1024;
/// How long a hook waits for its payload's end.
const HOOK_STDIN_WAIT: Duration = Duration::from_secs(2);

/// The private directory of one agent's rendezvous file; removed when dropped.
pub struct Sink {
    dir: PathBuf,
    file: PathBuf,
}

impl Sink {
    /// Makes the directory (mode 0700) under the system's temp directory.
    pub fn create() -> std::io::Result<Sink> {
        let dir = std::env::temp_dir().join(format!(
            "maestro-transcript-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        maestro_server::util::files::create_private_dir(&dir)?;
        let file = dir.join("path");
        Ok(Sink { dir, file })
    }

    /// The variable to put in the agent's environment.
    pub fn env(&self) -> (String, String) {
        (
            SINK_ENV.to_owned(),
            self.file.to_string_lossy().into_owned(),
        )
    }

    /// The transcript path a hook left, if any.
    fn read(&self) -> Option<PathBuf> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| PathBuf::from(text))
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Follows the transcript named in `sink` and uploads it as session `session_id`'s, until
/// `stop`; then reads and uploads what is left once more (bounded in time).
pub async fn follow(client: Client, session_id: String, sink: Sink, stop: CancellationToken) {
    let mut follower: Option<Follower> = None;
    let mut pending: Option<Batch> = None;
    let mut failures = 0u32;
    loop {
        let stopping = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(POLL * (1 << failures.min(4))) => false,
        };
        if let Some(path) = sink.read()
            && follower.as_ref().is_none_or(|f| f.path() != path)
        {
            follower = Some(start(&client, &session_id, path).await);
            pending = None;
        }
        let Some(f) = follower.as_mut() else {
            if stopping {
                return;
            }
            continue;
        };
        // After the agent ended, drain what it wrote last, a bounded number of batches.
        let rounds = if stopping { 20 } else { 1 };
        for _ in 0..rounds {
            if pending.is_none() {
                pending = match f.poll(BATCH_BYTES, BATCH_ENTRIES) {
                    Ok(batch) => batch,
                    Err(e) => {
                        tracing::debug!(path = %f.path().display(), "cannot read the transcript: {e}");
                        None
                    }
                };
            }
            let Some(batch) = pending.take() else { break };
            match upload(&client, &session_id, f.path(), &batch).await {
                Ok(()) => failures = 0,
                Err(Retry::Later) => {
                    pending = Some(batch);
                    failures += 1;
                    break;
                }
                Err(Retry::Never) => failures = 0,
            }
        }
        if stopping {
            return;
        }
    }
}

/// A follower for `path`, from where the server's copy of it ends (0 for a new file). Asked
/// with an empty upload, which a `runner` token may send (it may not read).
async fn start(client: &Client, session_id: &str, path: PathBuf) -> Follower {
    let hello = TranscriptUpload {
        path: path.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let offset = match client.upload_transcript(session_id, &hello).await {
        Ok(page) => page
            .source
            .filter(|s| Path::new(&s.path) == path)
            .map_or(0, |s| s.offset),
        Err(_) => 0,
    };
    Follower::new(path, offset)
}

enum Retry {
    /// The server could not be reached or failed: send the batch again.
    Later,
    /// The server refused the batch: skip it.
    Never,
}

async fn upload(
    client: &Client,
    session_id: &str,
    path: &Path,
    batch: &Batch,
) -> Result<(), Retry> {
    let req = TranscriptUpload {
        path: path.to_string_lossy().into_owned(),
        start: batch.start,
        end: batch.end,
        entries: batch.entries.clone(),
        malformed: batch.malformed,
    };
    match client.upload_transcript(session_id, &req).await {
        Ok(_) => Ok(()),
        Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
            tracing::warn!(session.id = %session_id, "the server refused a transcript batch: {e}");
            Err(Retry::Never)
        }
        Err(_) => Err(Retry::Later),
    }
}

/// Called by the hook commands: when the agent runs under a Maestro host (`SINK_ENV` set),
/// reads the hook's payload from stdin and tells the host where the agent's transcript is.
/// Never fails the hook: problems are reported on stderr.
pub fn note_from_hook() {
    let Some(sink) = std::env::var_os(SINK_ENV) else {
        return;
    };
    if std::io::stdin().is_terminal() {
        return;
    }
    // Agents close the hook's stdin after the payload; a caller that leaves it open must not
    // hold the hook (and so the agent) for long.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut payload = Vec::new();
        let read = std::io::stdin()
            .take(HOOK_STDIN_MAX)
            .read_to_end(&mut payload);
        let _ = tx.send(read.map(|_| payload));
    });
    let payload = match rx.recv_timeout(HOOK_STDIN_WAIT) {
        Ok(Ok(payload)) => payload,
        Ok(Err(e)) => {
            eprintln!("[maestro] cannot read the hook's input: {e}");
            return;
        }
        Err(_) => return,
    };
    let Some(path) = super::agent_tools::transcript_path(&payload) else {
        return;
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    let sink = PathBuf::from(sink);
    if std::fs::read(&sink).is_ok_and(|old| old == bytes) {
        return;
    }
    if let Err(e) = maestro_server::util::files::write_atomic(
        &sink,
        &bytes,
        maestro_server::util::files::PRIVATE_FILE,
    ) {
        eprintln!(
            "[maestro] cannot tell the host where the transcript is ({}): {e}",
            sink.display()
        );
    }
}
