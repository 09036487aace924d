//! `maestro session watch <ids>`: follows sessions over the legacy WebSocket until every
//! watched session has finished.
//!
//! Unlike upstream, the sessions' current statuses are fetched first, so watching sessions
//! that already finished returns at once instead of waiting forever. With `--json` each event
//! is one line `{event, sessionId, data, timestamp}` (JSON Lines), as upstream printed them.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use maestro_client::Client;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::context::{Context, split_ids};
use super::output::{CliError, CmdResult, exit, fmt_time, now_ms};

const TERMINAL: &[&str] = &["completed", "failed", "stopped"];

pub async fn watch(ctx: &Context, c: &Client, ids: &str, timeout_ms: u64) -> CmdResult<i32> {
    let ids = split_ids(ids);
    if ids.is_empty() {
        return Err(CliError::usage("Pass at least one session id to watch."));
    }
    let url = ctx.ws_url();
    let human = !ctx.json;
    if human {
        say!(
            "[session:watch] Watching {} session(s): {}",
            ids.len(),
            ids.join(", ")
        );
        say!("[session:watch] Connecting to {url} ...");
    }
    // With AUTH=required the event stream needs the credential too.
    let request = super::host::ws_request(&url, c.socket_credential().await.as_deref())
        .map_err(|e| CliError::usage(format!("Invalid WebSocket URL {url}: {e}")))?;
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|e| {
            CliError::new(
                "connection_refused",
                exit::UNREACHABLE,
                format!("Cannot open the WebSocket at {url}: {e}"),
            )
            .with_hint("Is `maestro serve` running? Point the CLI at it with --server <url>.")
        })?;
    let subscribe = json!({ "type": "subscribe", "sessionIds": ids });
    ws.send(Message::text(subscribe.to_string()))
        .await
        .map_err(|e| CliError::new("network_error", exit::UNREACHABLE, e.to_string()))?;

    // Subscribed first, then read the current state: nothing can slip between the two.
    let mut statuses: HashMap<String, String> = HashMap::new();
    for id in &ids {
        let s = c.get_session(id).await.map_err(|e| ctx.err(e))?;
        statuses.insert(id.clone(), s.status);
    }
    let all_done = |st: &HashMap<String, String>| {
        ids.iter()
            .all(|id| st.get(id).is_some_and(|s| TERMINAL.contains(&s.as_str())))
    };
    if human {
        say!("[session:watch] Connected. Listening for events...");
        for id in &ids {
            say!("[session:watch] {id} status: {}", statuses[id]);
        }
    }
    if all_done(&statuses) {
        if human {
            say!("[session:watch] All watched sessions have finished.");
        }
        return Ok(exit::OK);
    }

    let deadline =
        (timeout_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(timeout_ms));
    loop {
        let next = async {
            match deadline {
                Some(d) => tokio::time::timeout_at(d, ws.next()).await.ok(),
                None => Some(ws.next().await),
            }
        };
        let msg = match next.await {
            None => {
                if human {
                    say!("[session:watch] Timeout reached ({timeout_ms}ms). Exiting.");
                }
                return Ok(exit::OK);
            }
            Some(None) | Some(Some(Err(_))) | Some(Some(Ok(Message::Close(_)))) => {
                if human {
                    say!("[session:watch] Disconnected.");
                }
                return Ok(exit::OK);
            }
            Some(Some(Ok(Message::Text(text)))) => text,
            Some(Some(Ok(_))) => continue,
        };
        let Ok(frame) = serde_json::from_str::<Value>(&msg) else {
            continue;
        };
        let Some(event) = frame
            .get("event")
            .or_else(|| frame.get("type"))
            .and_then(Value::as_str)
        else {
            continue;
        };
        let Some(data) = frame.get("data") else {
            continue;
        };
        let sid = data
            .get("sessionId")
            .or_else(|| {
                event
                    .starts_with("session:")
                    .then(|| data.get("id"))
                    .flatten()
            })
            .and_then(Value::as_str);
        let Some(sid) = sid.filter(|s| ids.iter().any(|i| i == s)) else {
            continue;
        };
        let ts = frame
            .get("timestamp")
            .and_then(Value::as_i64)
            .unwrap_or_else(now_ms);
        if event == "session:updated"
            && let Some(status) = data.get("status").and_then(Value::as_str)
        {
            let prev = statuses.insert(sid.to_owned(), status.to_owned());
            if human && prev.as_deref() != Some(status) {
                say!("[{}] {sid} status: {status}", fmt_time(ts));
            }
        }
        if ctx.json {
            let line = json!({ "event": event, "sessionId": sid, "data": data, "timestamp": ts });
            say!("{line}");
        } else {
            print_event(event, sid, data, ts);
        }
        if all_done(&statuses) {
            if human {
                say!("[session:watch] All watched sessions have finished.");
            }
            return Ok(exit::OK);
        }
    }
}

fn print_event(event: &str, sid: &str, data: &Value, ts: i64) {
    let ts = fmt_time(ts);
    let msg = |v: &Value| {
        v.get("message")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    match event {
        "session:updated" => {
            let latest = data
                .get("timeline")
                .and_then(Value::as_array)
                .and_then(|t| t.last());
            if let Some(l) = latest {
                let kind = l.get("type").and_then(Value::as_str).unwrap_or("");
                if matches!(
                    kind,
                    "progress" | "task_completed" | "task_blocked" | "error"
                ) {
                    say!("[{ts}] {sid} {kind}: {}", msg(l));
                }
            }
        }
        "notify:progress" => say!("[{ts}] {sid} progress: {}", msg(data)),
        "notify:session_completed" => say!("[{ts}] {sid} COMPLETED"),
        "notify:session_failed" => say!("[{ts}] {sid} FAILED"),
        "notify:needs_input" => say!("[{ts}] {sid} NEEDS INPUT: {}", msg(data)),
        other => say!("[{ts}] {sid} {other}"),
    }
}
