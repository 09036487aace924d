//! Helpers shared by the unit tests of the Socket.IO modules: a hub over a fresh store, events
//! committed to it, and what a connection's transport was given.

use std::sync::Arc;

use maestro_protocol::{EventRecord, GLOBAL_SCOPE};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Kind;
use super::hub::{Conn, Hub};
use crate::auth::{Gate, Principal};
use crate::config::Config;
use crate::ports::{Store, TxnExt, transact};
use crate::realtime::engine::Session;

pub(super) fn ev(scope: &str, data: Value, session: Option<&str>) -> EventRecord {
    EventRecord {
        scope: scope.into(),
        seq: 1,
        event: "x".into(),
        data,
        timestamp: 0,
        session_id: session.map(str::to_owned),
    }
}

pub(super) fn store_with(dir: &std::path::Path, capacity: u64) -> (Arc<Hub>, Arc<dyn Store>) {
    let mut config = Config::for_dir(dir);
    config.journal_capacity = capacity;
    let domain = crate::open(&config, "http://localhost".into()).unwrap();
    let store = domain.store.clone();
    let config = Arc::new(config);
    let gate = Gate::new(
        config.clone(),
        domain.clone(),
        crate::http::route_scopes().unwrap(),
    );
    let hub = Arc::new(Hub::new(
        domain,
        config,
        gate,
        TaskTracker::new(),
        CancellationToken::new(),
    ));
    (hub, store)
}

pub(super) async fn emit_n(store: &dyn Store, scope: &'static str, n: usize) -> Vec<EventRecord> {
    for i in 0..n {
        transact(store, move |tx| {
            tx.emit(scope, "x", &json!({ "i": i }), None);
            Ok(())
        })
        .await
        .unwrap();
    }
    store.replay(scope, 0, 10_000).await.unwrap().events
}

/// What a connection's transport was given, as `scope:seq` (events) or `gap:last>head`.
pub(super) fn drain(conn: &Conn) -> Vec<String> {
    conn.session
        .take_queued()
        .into_iter()
        .map(|packet| {
            let prefix = format!("42{},", conn.kind.namespace());
            let args: Value =
                serde_json::from_str(packet.strip_prefix(&prefix).expect("an event")).unwrap();
            let data = &args[1];
            if args[0] == "replay:incomplete" {
                format!("gap:{}>{}", data["lastSeq"], data["headSeq"])
            } else {
                let scope = data["projectId"].as_str().unwrap_or(GLOBAL_SCOPE);
                format!("{scope}:{}", data["seq"])
            }
        })
        .collect()
}

pub(super) fn live(hub: &Hub, kind: Kind, project: Option<&str>) -> Arc<Conn> {
    let conn = hub.register(
        &Session::detached(),
        kind,
        project.map(str::to_owned),
        Principal::local(),
    );
    conn.go_live();
    conn
}
