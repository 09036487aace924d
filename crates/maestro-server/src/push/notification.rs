//! Which events become notifications, what they say, and which server sends each one.
//!
//! Pure rules, unit-tested here; the sender applies them.
//!
//! Exactly once across servers: every server sharing a store sees every event, so each one
//! *claims* an event before pushing it, in a transaction on a per-scope record of the event
//! numbers already claimed ([`claim`]). The transaction serialises the claimants (Redis
//! `WATCH`, the local backend's single writer), so exactly one of them finds the number
//! missing and sends. The record keeps the last [`CLAIM_WINDOW`] numbers: an event older than
//! all of them when the window is full is taken as handled (it is stale anyway).

use maestro_protocol::{EventRecord, PushKind, PushPayload};
use serde_json::Value;

/// Claimed event numbers remembered per scope.
pub const CLAIM_WINDOW: usize = 256;
/// Longest notification body, in characters.
pub const MAX_BODY: usize = 120;
/// Longest session name in a title, in characters.
const MAX_NAME: usize = 60;

/// A notification to send: its payload and whether it is urgent (`Urgency: high`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub payload: PushPayload,
    pub urgent: bool,
}

use crate::domain::runners::{MACHINE_OFFLINE, MACHINE_ONLINE};
use crate::util::one_line as cut;

/// The notification for `event`, if it is one that notifies.
pub fn for_event(event: &EventRecord) -> Option<Notification> {
    let kind = match event.event.as_str() {
        "notify:needs_input" => PushKind::NeedsInput,
        "notify:session_failed" => PushKind::SessionFailed,
        "notify:session_completed" => PushKind::SessionCompleted,
        "approval:requested" => PushKind::Approval,
        MACHINE_OFFLINE => return for_machine(event, PushKind::MachineOffline),
        MACHINE_ONLINE => return for_machine(event, PushKind::MachineOnline),
        _ => return None,
    };
    let project_id = event.project_id()?.to_owned();
    let session_id = event
        .data
        .get("sessionId")
        .and_then(Value::as_str)
        .or(event.session_id.as_deref())?
        .to_owned();
    let name = event
        .data
        .get("name")
        .or_else(|| event.data.get("sessionName"))
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(|n| cut(n, MAX_NAME))
        .unwrap_or_else(|| "A session".to_owned());
    let (title, body) = match kind {
        PushKind::NeedsInput => {
            let message = event
                .data
                .get("message")
                .and_then(Value::as_str)
                .map(str::trim)
                .filter(|m| !m.is_empty())
                .unwrap_or("Waiting for your answer");
            (format!("{name} needs you"), cut(message, MAX_BODY))
        }
        PushKind::SessionFailed => (format!("{name} failed"), "The session failed.".to_owned()),
        PushKind::SessionCompleted => (
            format!("{name} completed"),
            "The session completed.".to_owned(),
        ),
        PushKind::Approval => {
            let tool = event
                .data
                .get("toolName")
                .and_then(Value::as_str)
                .map(|t| cut(t, MAX_NAME))
                .unwrap_or_else(|| "a tool".to_owned());
            let summary = event
                .data
                .get("summary")
                .and_then(Value::as_str)
                .unwrap_or_default();
            (format!("{name} asks to run {tool}"), cut(summary, MAX_BODY))
        }
        // Not about a session (handled above, or never from an event).
        PushKind::MachineOffline | PushKind::MachineOnline | PushKind::Test => return None,
    };
    // An approval is answered on the home screen, where every pending one is listed; a
    // question in the session's reply box.
    let url = match kind {
        PushKind::Approval => "/#/".to_owned(),
        PushKind::NeedsInput => format!("/#/s/{session_id}?reply"),
        _ => format!("/#/s/{session_id}"),
    };
    let approval_id = (kind == PushKind::Approval)
        .then(|| event.data.get("id").and_then(Value::as_str))
        .flatten()
        .map(str::to_owned);
    Some(Notification {
        urgent: matches!(kind, PushKind::NeedsInput | PushKind::Approval),
        payload: PushPayload {
            title,
            body,
            url,
            tag: format!("s:{session_id}"),
            session_id,
            project_id,
            kind,
            count: 1,
            approval_id,
            actions: Vec::new(),
        },
    })
}

/// A machine's notification: one tag per runner, so "back" replaces "offline".
fn for_machine(event: &EventRecord, kind: PushKind) -> Option<Notification> {
    let id = event.data.get("id").and_then(Value::as_str)?;
    let host = event
        .data
        .get("hostname")
        .and_then(Value::as_str)
        .map(|h| cut(h, MAX_NAME))
        .unwrap_or_else(|| id.to_owned());
    let (title, body) = match kind {
        PushKind::MachineOffline => (
            format!("{host} is offline"),
            "Its runner stopped beating; agents there cannot be reached.".to_owned(),
        ),
        _ => (
            format!("{host} is back"),
            "Its runner beats again.".to_owned(),
        ),
    };
    Some(Notification {
        urgent: false,
        payload: PushPayload {
            title,
            body,
            session_id: String::new(),
            project_id: String::new(),
            kind,
            url: "/#/".to_owned(),
            tag: format!("m:{id}"),
            count: 1,
            approval_id: None,
            actions: Vec::new(),
        },
    })
}

/// Records `seq` in a scope's claimed numbers (ascending, at most [`CLAIM_WINDOW`]); whether
/// this caller claimed it (`false`: someone already did, or it is older than the full window).
pub fn claim(claimed: &mut Vec<u64>, seq: u64) -> bool {
    claim_within(claimed, seq, CLAIM_WINDOW)
}

/// Whether `seq` is new to `seen` (ascending, at most `window` numbers): not in it, and not
/// older than all of a full window.
pub fn is_new(seen: &[u64], seq: u64, window: usize) -> bool {
    seen.binary_search(&seq).is_err()
        && !(seen.len() >= window && seen.first().is_some_and(|&oldest| seq < oldest))
}

/// [`claim`] with a window of `window` numbers.
pub fn claim_within(seen: &mut Vec<u64>, seq: u64, window: usize) -> bool {
    if !is_new(seen, seq, window) {
        return false;
    }
    let at = seen.partition_point(|&s| s < seq);
    seen.insert(at, seq);
    if seen.len() > window {
        seen.remove(0);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(name: &str, data: Value) -> EventRecord {
        EventRecord {
            scope: "proj_1".into(),
            seq: 7,
            event: name.into(),
            data,
            timestamp: 0,
            session_id: Some("sess_1".into()),
        }
    }

    #[test]
    fn needs_input_is_urgent_and_short() {
        let long = "why ".repeat(100);
        let n = for_event(&event(
            "notify:needs_input",
            json!({"sessionId": "sess_1", "name": "fix login", "message": long}),
        ))
        .unwrap();
        assert!(n.urgent);
        assert_eq!(n.payload.title, "fix login needs you");
        assert_eq!(n.payload.body.chars().count(), MAX_BODY);
        assert!(n.payload.body.ends_with('…'));
        assert_eq!(n.payload.url, "/#/s/sess_1?reply", "opens the reply box");
        assert_eq!(n.payload.tag, "s:sess_1");
        assert_eq!(n.payload.project_id, "proj_1");
        assert_eq!(n.payload.kind, PushKind::NeedsInput);
    }

    #[test]
    fn an_approval_request_is_urgent_and_says_what_would_run() {
        let n = for_event(&event(
            "approval:requested",
            json!({"id": "appr_1", "sessionId": "sess_1", "sessionName": "fix login",
                   "toolName": "Bash", "summary": "Bash: rm -rf build/"}),
        ))
        .unwrap();
        assert!(n.urgent);
        assert_eq!(n.payload.title, "fix login asks to run Bash");
        assert_eq!(n.payload.body, "Bash: rm -rf build/");
        assert_eq!(n.payload.url, "/#/");
        assert_eq!(n.payload.kind, PushKind::Approval);
        assert_eq!(n.payload.approval_id.as_deref(), Some("appr_1"));
        // Its decision is not news.
        assert_eq!(
            for_event(&event("approval:decided", json!({"sessionId": "sess_1"}))),
            None
        );
    }

    #[test]
    fn endings_notify_and_other_events_do_not() {
        let failed = for_event(&event(
            "notify:session_failed",
            json!({"sessionId": "sess_1"}),
        ))
        .unwrap();
        assert!(!failed.urgent);
        assert_eq!(failed.payload.title, "A session failed");
        assert_eq!(failed.payload.kind, PushKind::SessionFailed);
        let done = for_event(&event(
            "notify:session_completed",
            json!({"sessionId": "sess_1", "name": "n"}),
        ))
        .unwrap();
        assert_eq!(done.payload.kind, PushKind::SessionCompleted);
        for other in ["notify:progress", "session:updated", "auth:revoked"] {
            assert_eq!(
                for_event(&event(other, json!({"sessionId": "sess_1"}))),
                None
            );
        }
        let mut global = event("notify:needs_input", json!({"sessionId": "s"}));
        global.scope = maestro_protocol::GLOBAL_SCOPE.into();
        assert_eq!(for_event(&global), None);
    }

    #[test]
    fn a_machine_going_offline_and_coming_back_notifies() {
        let mut off = event(
            MACHINE_OFFLINE,
            json!({"id": "run_1", "hostname": "build-box"}),
        );
        off.scope = maestro_protocol::GLOBAL_SCOPE.into();
        let n = for_event(&off).unwrap();
        assert_eq!(n.payload.kind, PushKind::MachineOffline);
        assert_eq!(n.payload.title, "build-box is offline");
        assert_eq!(n.payload.tag, "m:run_1");
        let mut back = off.clone();
        back.event = MACHINE_ONLINE.into();
        let n = for_event(&back).unwrap();
        assert_eq!(n.payload.title, "build-box is back");
        assert_eq!(n.payload.tag, "m:run_1", "replaces the offline one");
    }

    #[test]
    fn each_number_is_claimed_once() {
        let mut claimed = Vec::new();
        assert!(claim(&mut claimed, 5));
        assert!(!claim(&mut claimed, 5));
        assert!(claim(&mut claimed, 3), "an older number not yet claimed");
        assert!(!claim(&mut claimed, 3));
        for s in 10..10 + CLAIM_WINDOW as u64 * 2 {
            assert!(claim(&mut claimed, s));
        }
        assert_eq!(claimed.len(), CLAIM_WINDOW);
        assert!(claimed.windows(2).all(|w| w[0] < w[1]));
        assert!(!claim(&mut claimed, 4), "older than the full window");
        let newest = *claimed.last().unwrap();
        assert!(!claim(&mut claimed, newest));
    }
}
