//! The bridge from the store's event stream to the hub: it forwards each committed event once,
//! in order per scope, fills gaps and lags from the journal, and tells the sockets of a scope
//! when the journal lost events (`replay:incomplete`).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use maestro_protocol::{EventRecord, GLOBAL_SCOPE, ReplayIncomplete};
use tokio::sync::broadcast::error::RecvError;

use super::hub::{Hub, Item, Outgoing};
use super::replay::REPLAY_PAGE;
use crate::domain::Domain;
use crate::error::Result;

/// The head of every scope that exists, read after subscribing: the bridge forwards events
/// after these and detects gaps against them.
pub(super) fn initial_heads(domain: &Domain) -> HashMap<String, u64> {
    let read = || -> Result<HashMap<String, u64>> {
        let mut r = domain.reader()?;
        let mut heads = HashMap::new();
        heads.insert(GLOBAL_SCOPE.to_owned(), r.head_seq(GLOBAL_SCOPE)?);
        for p in domain_projects(&mut *r)? {
            let head = r.head_seq(&p)?;
            heads.insert(p, head);
        }
        Ok(heads)
    };
    read().unwrap_or_else(|e| {
        // Without heads the bridge starts from 0 and the first event of each scope fills from
        // the journal: slower, still correct.
        tracing::error!(error = %e, "cannot read event heads; the bridge starts from the journal");
        HashMap::new()
    })
}

fn domain_projects(r: &mut (dyn crate::ports::Reader + Send + '_)) -> Result<Vec<String>> {
    use crate::ports::{Collection, ReaderExt};
    Ok(
        r.list::<maestro_protocol::Project>(Collection::Projects, None)?
            .into_iter()
            .map(|p| p.id)
            .collect(),
    )
}

/// The bridge's state: the last `seq` it forwarded per scope.
pub(super) struct Bridge {
    pub(super) hub: Arc<Hub>,
    pub(super) last: HashMap<String, u64>,
}

impl Bridge {
    pub(super) async fn run(&mut self, mut rx: tokio::sync::broadcast::Receiver<Arc<EventRecord>>) {
        loop {
            let received = tokio::select! {
                biased;
                _ = self.hub.shutdown.cancelled() => return,
                r = rx.recv() => r,
            };
            match received {
                Ok(event) => self.forward(event).await,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "socket.io bridge lagged; filling from the journal");
                    self.catch_up().await;
                }
                Err(RecvError::Closed) => return,
            }
        }
    }

    /// Forwards `event` unless already forwarded; a gap before it is filled from the journal.
    async fn forward(&mut self, event: Arc<EventRecord>) {
        let seen = self.last.get(&event.scope).copied().unwrap_or(0);
        if event.seq <= seen {
            return;
        }
        if event.seq > seen + 1 {
            self.fill(&event.scope, seen, Some(event.seq - 1)).await;
        }
        self.hub
            .dispatch(&Item::Event(Outgoing::new(event.clone())));
        self.last.insert(event.scope.clone(), event.seq);
    }

    /// After a lag: every scope that may have moved is read from the journal.
    async fn catch_up(&mut self) {
        let mut scopes: BTreeSet<String> = self.last.keys().cloned().collect();
        scopes.insert(GLOBAL_SCOPE.to_owned());
        match self
            .hub
            .domain
            .reader()
            .and_then(|mut r| domain_projects(&mut *r))
        {
            Ok(projects) => scopes.extend(projects),
            Err(e) => tracing::error!(error = %e, "cannot list projects for the catch-up"),
        }
        for scope in scopes {
            let after = self.last.get(&scope).copied().unwrap_or(0);
            self.fill(&scope, after, None).await;
        }
    }

    /// Forwards the journaled events of `scope` after `after` (up to `upto`). If the journal
    /// no longer has them all, the scope's connections get a gap notice and resync.
    async fn fill(&mut self, scope: &str, mut after: u64, upto: Option<u64>) {
        let store = self.hub.domain.store.clone();
        loop {
            let replay = match store.replay(scope, after, REPLAY_PAGE).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, scope, "cannot read the journal");
                    self.gap(scope, after, upto.unwrap_or(after));
                    if let Some(u) = upto {
                        self.last.insert(scope.to_owned(), u);
                    }
                    return;
                }
            };
            let first = replay.events.first().map(|e| e.seq);
            if !replay.complete || first.is_some_and(|f| f > after + 1) {
                self.gap(scope, after, replay.head);
            }
            let page = replay.events.len();
            for event in replay.events {
                if upto.is_some_and(|u| event.seq > u) {
                    return;
                }
                after = event.seq;
                self.last.insert(scope.to_owned(), after);
                self.hub
                    .dispatch(&Item::Event(Outgoing::new(Arc::new(event))));
            }
            let done =
                page < REPLAY_PAGE || after >= replay.head || upto.is_some_and(|u| after >= u);
            if done {
                if let Some(u) = upto
                    && after < u
                {
                    self.last.insert(scope.to_owned(), u);
                }
                return;
            }
        }
    }

    fn gap(&self, scope: &str, last_seq: u64, head_seq: u64) {
        tracing::warn!(
            scope,
            last_seq,
            head_seq,
            "events lost to socket.io clients; they resync"
        );
        self.hub.dispatch(&Item::Gap(ReplayIncomplete {
            recovered: false,
            project_id: (scope != GLOBAL_SCOPE).then(|| scope.to_owned()),
            head_seq,
            last_seq,
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realtime::socketio::Kind;
    use crate::realtime::socketio::testing::{drain, emit_n, live, store_with};

    #[tokio::test]
    async fn the_bridge_fills_gaps_from_the_journal_and_drops_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 100);
        let events = emit_n(&*store, "p", 5).await;
        let conn = live(&hub, Kind::Ui, None);
        let mut bridge = Bridge {
            hub: hub.clone(),
            last: HashMap::new(),
        };
        // It sees only the fifth event: the four before come from the journal first.
        bridge.forward(Arc::new(events[4].clone())).await;
        assert_eq!(drain(&conn), ["p:1", "p:2", "p:3", "p:4", "p:5"]);
        bridge.forward(Arc::new(events[2].clone())).await;
        bridge.forward(Arc::new(events[4].clone())).await;
        assert!(drain(&conn).is_empty(), "already forwarded");

        // After a lag, every scope is read from where the bridge was.
        emit_n(&*store, "p", 2).await;
        emit_n(&*store, GLOBAL_SCOPE, 1).await;
        bridge.catch_up().await;
        assert_eq!(drain(&conn), ["global:1", "p:6", "p:7"]);
        bridge.catch_up().await;
        assert!(drain(&conn).is_empty());
    }

    #[tokio::test]
    async fn the_bridge_reports_what_the_journal_lost() {
        let dir = tempfile::tempdir().unwrap();
        let (hub, store) = store_with(dir.path(), 3);
        let events = emit_n(&*store, "p", 10).await;
        assert_eq!(
            events.first().map(|e| e.seq),
            Some(8),
            "the journal keeps 3"
        );
        let conn = live(&hub, Kind::Mobile, Some("p"));
        let mut bridge = Bridge {
            hub: hub.clone(),
            last: HashMap::new(),
        };
        bridge.forward(Arc::new(events[2].clone())).await;
        assert_eq!(drain(&conn), ["gap:0>10", "p:8", "p:9", "p:10"]);
    }
}
