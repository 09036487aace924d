//! What a client missed: the gap before its handshake's `lastSeq`, sent before it goes live;
//! `events:replay` (a page of the journal on request); and `state:sync` (a snapshot to resync
//! from when the journal no longer reaches back).

use maestro_protocol::{
    EventRecord, GLOBAL_SCOPE, ReplayIncomplete, ReplayRequest, StateSyncRequest,
};
use serde_json::{Value, json};

use super::Kind;
use super::codec::{event_packet, parse, to_object};
use super::hub::{Conn, Hub};
use crate::domain::{Domain, check_id};
use crate::error::{Error, Result};
use crate::realtime::engine::Frame;
use crate::realtime::legacy;

/// Journal page size for replays (handshake gaps, `events:replay`, the bridge's catch-up).
pub(super) const REPLAY_PAGE: usize = 1_000;

/// Sends the journaled events of `scope` after `after` to `conn`, or `replay:incomplete` when
/// the journal no longer reaches back (or `after` is ahead of the server). Raises the
/// connection's floor so live events the replay covered are not sent twice.
pub(super) async fn replay_gap(
    domain: &Domain,
    store: &dyn crate::ports::Store,
    conn: &Conn,
    scope: &str,
    mut after: u64,
) {
    loop {
        let replay = match store.replay(scope, after, REPLAY_PAGE).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, scope, "cannot read the journal for a replay");
                let head = domain.reader().and_then(|mut r| r.head_seq(scope));
                incomplete(conn, scope, after, head.unwrap_or(after));
                return;
            }
        };
        if !replay.complete || after > replay.head {
            incomplete(conn, scope, after, replay.head);
            return;
        }
        let page = replay.events.len();
        let wanted = {
            let state = conn.state.lock().expect("conn lock");
            replay
                .events
                .iter()
                .filter(|e| {
                    conn.follows_scope(&e.scope, Some(&e.data))
                        && legacy::wants(state.sessions.as_ref(), e)
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some(last) = replay.events.last() {
            after = last.seq;
        }
        let frames: Vec<Frame> = wanted
            .iter()
            .filter_map(|e| event_packet(conn.kind, &e.event, &e.envelope()))
            .map(|packet| Frame::text(&packet))
            .collect();
        if !conn.session.send_many(&frames) {
            return;
        }
        conn.raise_floor(scope, after);
        if page < REPLAY_PAGE || after >= replay.head {
            return;
        }
    }
}

fn incomplete(conn: &Conn, scope: &str, last_seq: u64, head_seq: u64) {
    // Live events already committed are covered by the resync the client now does.
    conn.raise_floor(scope, head_seq);
    let notice = ReplayIncomplete {
        recovered: false,
        project_id: (scope != GLOBAL_SCOPE).then(|| scope.to_owned()),
        head_seq,
        last_seq,
    };
    conn.emit("replay:incomplete", &notice);
}

/// `state:sync {projectId?}`: one snapshot. `/mobile` always gets its project; `/ui` the
/// requested project, or all.
pub(super) fn state_sync(hub: &Hub, conn: &Conn, data: Value) -> Result<Value> {
    let req: StateSyncRequest = parse(data)?;
    let project = match conn.kind {
        Kind::Mobile => {
            if let Some(p) = &req.project_id {
                conn.check_project(p)?;
            }
            conn.project.clone()
        }
        Kind::Ui => req.project_id,
    };
    to_object(&hub.domain.state_snapshot(project.as_deref())?)
}

/// `events:replay {afterSeq, projectId?, limit?}`.
pub(super) async fn events_replay(hub: &Hub, conn: &Conn, data: Value) -> Result<Value> {
    let req: ReplayRequest = parse(data)?;
    let Some(after) = req.after_seq else {
        return Err(Error::validation("afterSeq is required"));
    };
    if let Some(p) = &req.project_id {
        check_id("projectId", p)?;
        conn.check_project(p)?;
        hub.domain.get_project(p)?;
    }
    let scope = req
        .project_id
        .or_else(|| conn.project.clone())
        .unwrap_or_else(|| GLOBAL_SCOPE.to_owned());
    let limit = req.limit.unwrap_or(REPLAY_PAGE).clamp(1, REPLAY_PAGE);
    let replay = hub.domain.store.replay(&scope, after, limit).await?;
    let project_id = (scope != GLOBAL_SCOPE).then_some(scope.as_str());
    if !replay.complete || after > replay.head {
        return Ok(json!({
            "recovered": false,
            "events": [],
            "headSeq": replay.head,
            "projectId": project_id,
            "hasMore": false,
        }));
    }
    let last = replay.events.last().map_or(after, |e| e.seq);
    let envelopes: Vec<_> = replay.events.iter().map(EventRecord::envelope).collect();
    Ok(json!({
        "recovered": true,
        "events": envelopes,
        "headSeq": replay.head,
        "projectId": project_id,
        "hasMore": last < replay.head,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::Principal;
    use crate::realtime::engine::Session;
    use crate::realtime::socketio::hub::{Item, Outgoing};
    use crate::realtime::socketio::testing::{drain, emit_n, store_with};

    #[tokio::test]
    async fn a_replay_and_live_events_meet_without_duplicates_or_holes() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 100);
        let events = emit_n(&*store, "p", 6).await;
        // Registered (collecting live events) before its replay reads the journal.
        let conn = hub.register(
            &Session::detached(),
            Kind::Mobile,
            Some("p".into()),
            Principal::local(),
        );
        for e in &events[3..] {
            conn.offer(&Item::Event(Outgoing::new(Arc::new(e.clone()))));
        }
        assert!(drain(&conn).is_empty(), "nothing live before the replay");
        replay_gap(&hub.domain, &*store, &conn, "p", 2).await;
        conn.go_live();
        assert_eq!(drain(&conn), ["p:3", "p:4", "p:5", "p:6"]);
        let more = emit_n(&*store, "p", 1).await;
        conn.offer(&Item::Event(Outgoing::new(Arc::new(more[6].clone()))));
        assert_eq!(drain(&conn), ["p:7"]);
    }
}
