//! The event sequencer: hands each scope's events to local subscribers once and in order,
//! holding early arrivals until their predecessors come or the journal fills the hole.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use maestro_protocol::EventRecord;
use tokio::sync::broadcast;

/// Hands each scope's events to local subscribers once, in order, without holes.
///
/// Concurrent commits of one scope finish in any order, so a server's own event `n` often
/// arrives here before `n - 1` (committed a moment earlier by another request, or by another
/// server). Such an event is held ([`Sequencer::hold`]) and goes out as soon as its
/// predecessor does; only a hole that stays open longer than [`HOLD_LIMIT`] is filled from the
/// journal. Reading the journal at once, as this did before, cost an extra round trip on most
/// commits under load.
pub(super) struct Sequencer {
    state: Mutex<SeqState>,
    /// Notified whenever an event is delivered.
    delivered: Condvar,
    /// [`Self::delivered`] for tasks ([`Sequencer::wait_for_async`]).
    delivered_async: tokio::sync::Notify,
    pub(super) bus: broadcast::Sender<Arc<EventRecord>>,
}

#[derive(Default)]
struct SeqState {
    last: HashMap<String, u64>,
    /// Events that arrived ahead of their predecessors, per scope, by `seq`.
    held: HashMap<String, BTreeMap<u64, EventRecord>>,
}

/// How long a server's own event may wait for the events before it before the journal is read.
pub(super) const HOLD_LIMIT: Duration = Duration::from_millis(20);

pub(super) enum Offer {
    Delivered,
    Duplicate,
    /// Events after `after` are missing before this one.
    Gap {
        after: u64,
    },
}

impl SeqState {
    /// Delivers `rec` (the next of its scope), then any held events that now follow.
    fn deliver(&mut self, bus: &broadcast::Sender<Arc<EventRecord>>, rec: EventRecord) {
        let scope = rec.scope.clone();
        let mut next = rec.seq + 1;
        self.last.insert(scope.clone(), rec.seq);
        let _ = bus.send(Arc::new(rec));
        if let Some(held) = self.held.get_mut(&scope) {
            while let Some(entry) = held.first_entry() {
                if *entry.key() < next {
                    entry.remove();
                } else if *entry.key() == next {
                    let rec = entry.remove();
                    self.last.insert(scope.clone(), rec.seq);
                    let _ = bus.send(Arc::new(rec));
                    next += 1;
                } else {
                    break;
                }
            }
            if held.is_empty() {
                self.held.remove(&scope);
            }
        }
    }
}

impl Sequencer {
    pub(super) fn new(bus: broadcast::Sender<Arc<EventRecord>>) -> Self {
        Self {
            state: Mutex::new(SeqState::default()),
            delivered: Condvar::new(),
            delivered_async: tokio::sync::Notify::new(),
            bus,
        }
    }

    pub(super) fn offer(&self, rec: &EventRecord) -> Offer {
        let mut st = self.state.lock().expect("sequencer lock");
        let seen = st.last.get(&rec.scope).copied().unwrap_or(0);
        if rec.seq <= seen {
            Offer::Duplicate
        } else if rec.seq == seen + 1 {
            st.deliver(&self.bus, rec.clone());
            drop(st);
            self.notify();
            Offer::Delivered
        } else {
            Offer::Gap { after: seen }
        }
    }

    /// Keeps `rec` until the events before it are delivered (then it goes out with them).
    pub(super) fn hold(&self, rec: EventRecord) {
        let mut st = self.state.lock().expect("sequencer lock");
        let seen = st.last.get(&rec.scope).copied().unwrap_or(0);
        if rec.seq > seen {
            st.held
                .entry(rec.scope.clone())
                .or_default()
                .insert(rec.seq, rec);
        }
    }

    /// Waits (blocking) until `scope` has delivered up to `seq`, at most `limit`; whether it has.
    pub(super) fn wait_for(&self, scope: &str, seq: u64, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let mut st = self.state.lock().expect("sequencer lock");
        loop {
            if st.last.get(scope).copied().unwrap_or(0) >= seq {
                return true;
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .delivered
                .wait_timeout(st, left)
                .expect("sequencer lock")
                .0;
        }
    }

    /// [`Self::wait_for`], for a task: awaits rather than blocks its thread.
    pub(super) async fn wait_for_async(&self, scope: &str, seq: u64, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let delivered = self.delivered_async.notified();
            tokio::pin!(delivered);
            // Registered before the check, so a delivery between the two is not missed.
            delivered.as_mut().enable();
            if self.last(scope) >= seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, delivered).await.is_err() {
                return self.last(scope) >= seq;
            }
        }
    }

    fn notify(&self) {
        self.delivered.notify_all();
        self.delivered_async.notify_waiters();
    }

    /// Delivers `recs` (consecutive, from the journal) after a gap; if the journal no longer
    /// reaches back, skips ahead so delivery goes on (clients see the jump in `seq`).
    pub(super) fn fill(&self, recs: Vec<EventRecord>) {
        let mut st = self.state.lock().expect("sequencer lock");
        for rec in recs {
            let seen = st.last.get(&rec.scope).copied().unwrap_or(0);
            if rec.seq <= seen {
                continue;
            }
            if rec.seq > seen + 1 {
                tracing::warn!(scope = %rec.scope, from = seen + 1, to = rec.seq - 1, "events no longer in the journal were skipped");
            }
            st.deliver(&self.bus, rec);
        }
        drop(st);
        self.notify();
    }

    pub(super) fn baseline(&self, heads: HashMap<String, u64>) {
        let mut st = self.state.lock().expect("sequencer lock");
        for (scope, head) in heads {
            st.last.entry(scope).or_insert(head);
        }
    }

    /// The last `seq` delivered in `scope`.
    pub(super) fn last(&self, scope: &str) -> u64 {
        let st = self.state.lock().expect("sequencer lock");
        st.last.get(scope).copied().unwrap_or(0)
    }

    /// Whether no scope has been seen yet (the first catch-up after start).
    pub(super) fn is_new(&self) -> bool {
        self.state.lock().expect("sequencer lock").last.is_empty()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(in crate::backends::redis) fn rec(scope: &str, seq: u64) -> EventRecord {
        EventRecord {
            scope: scope.into(),
            seq,
            event: "x".into(),
            data: serde_json::Value::Null,
            timestamp: 0,
            session_id: None,
        }
    }

    pub(in crate::backends::redis) fn drain(
        rx: &mut broadcast::Receiver<Arc<EventRecord>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(format!("{}:{}", e.scope, e.seq));
        }
        out
    }

    #[test]
    fn held_events_go_out_after_their_predecessors_once_and_in_order() {
        let (bus, mut rx) = broadcast::channel(64);
        let seq = Sequencer::new(bus);
        assert!(matches!(seq.offer(&rec("p", 1)), Offer::Delivered));
        // 3 and 4 finish before 2: held, not delivered, not read from anywhere.
        for n in [4, 3] {
            assert!(matches!(seq.offer(&rec("p", n)), Offer::Gap { after: 1 }));
            seq.hold(rec("p", n));
        }
        assert!(!seq.wait_for("p", 3, Duration::from_millis(1)));
        assert_eq!(drain(&mut rx), ["p:1"]);
        assert!(
            matches!(seq.offer(&rec("q", 1)), Offer::Delivered),
            "scopes are apart"
        );
        assert!(matches!(seq.offer(&rec("p", 2)), Offer::Delivered));
        assert!(seq.wait_for("p", 4, Duration::ZERO));
        assert_eq!(drain(&mut rx), ["q:1", "p:2", "p:3", "p:4"]);
        // The channel brings them again: duplicates.
        for n in 2..=4 {
            assert!(matches!(seq.offer(&rec("p", n)), Offer::Duplicate));
        }
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn a_hole_filled_from_the_journal_releases_what_was_held() {
        let (bus, mut rx) = broadcast::channel(64);
        let seq = Sequencer::new(bus);
        seq.hold(rec("p", 3));
        seq.hold(rec("p", 5));
        seq.fill(vec![rec("p", 1), rec("p", 2)]);
        assert_eq!(drain(&mut rx), ["p:1", "p:2", "p:3"], "5 still waits for 4");
        // A waiter elsewhere is woken by the delivery of what it waits for.
        let seq = Arc::new(seq);
        let waiter = {
            let seq = seq.clone();
            std::thread::spawn(move || seq.wait_for("p", 5, Duration::from_secs(10)))
        };
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(seq.offer(&rec("p", 4)), Offer::Delivered));
        assert!(waiter.join().unwrap());
        assert_eq!(drain(&mut rx), ["p:4", "p:5"]);
    }
}
