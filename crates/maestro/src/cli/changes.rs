//! The host's side of reviewing a session: reads the session's work tree on this machine every
//! [`REPORT_EVERY`] and reports what differs to the server (`PUT /api/sessions/:id/changes`),
//! so the phone sees the changes and diffs of an agent that runs on another machine than the
//! server. `maestro run` and the runner both start it next to the terminal uplink.

use std::path::PathBuf;
use std::time::Duration;

use maestro_client::Client;
use maestro_server::review::git::GitError;
use maestro_server::review::{REPORT_EVERY, Reporter};
use maestro_server::util::now_ms;
use tokio_util::sync::CancellationToken;

/// What to watch.
pub struct Watch {
    pub dir: PathBuf,
    /// The branch the work started from, when known (a runner's worktree).
    pub base: Option<String>,
    pub session_id: String,
    pub machine_id: String,
}

/// Reports until `stop`, then once more (the agent's last edits).
pub async fn report_changes(client: Client, watch: Watch, stop: CancellationToken) {
    let sid = watch.session_id.clone();
    let mut reporter = Some(Reporter::new(
        watch.dir,
        watch.base,
        watch.session_id,
        watch.machine_id,
    ));
    loop {
        let last = stop.is_cancelled();
        let Some(r) = reporter.take() else { return };
        let (r, polled) = match tokio::task::spawn_blocking(move || {
            let mut r = r;
            let polled = r.poll(now_ms());
            (r, polled)
        })
        .await
        {
            Ok(done) => done,
            Err(_) => return,
        };
        reporter = Some(r);
        match polled {
            Ok(reports) => {
                for report in &reports {
                    if let Err(e) = client.report_changes(&sid, report).await {
                        tracing::debug!(session.id = %sid, error = %e, "changes report failed");
                        if let Some(r) = reporter.as_mut() {
                            r.forget();
                        }
                        break;
                    }
                }
            }
            // Not a git work tree: there is nothing to review here.
            Err(GitError::NoDirectory(_) | GitError::NotARepository(_)) => return,
            Err(e) => {
                tracing::debug!(session.id = %sid, error = %e, "reading the work tree failed")
            }
        }
        if last {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(REPORT_EVERY) => {}
        }
    }
}

/// Runs [`report_changes`] and, once `stop` is cancelled, waits for its last report (bounded).
pub async fn finish(task: tokio::task::JoinHandle<()>, stop: &CancellationToken) {
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
