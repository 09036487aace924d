//! The heartbeat: pings, silent clients dropped, the connect timeout, and shutdown.

use super::*;

/// How often the heartbeat looks at the sessions, at most: a short `ping_interval` or
/// `ping_timeout` makes it look more often (see [`Engine::tick`]).
const TICK: Duration = Duration::from_millis(250);

impl Engine {
    /// How often the heartbeat looks at the sessions: [`TICK`], or an eighth of a shorter
    /// `ping_interval` or `ping_timeout`, so that pings leave, and silent clients are dropped,
    /// within an eighth of either of when they are due.
    pub(super) fn tick(&self) -> Duration {
        TICK.min(self.config.ping_interval / 8)
            .min(self.config.ping_timeout / 8)
            .max(Duration::from_millis(1))
    }

    /// Whether `session` let its ping go unanswered for longer than `ping_timeout`.
    pub(super) fn ping_overdue(&self, session: &Session, now: u64) -> bool {
        let sent = session.ping_sent.load(Ordering::Relaxed);
        sent != 0 && now.saturating_sub(sent) > self.config.ping_timeout.as_millis() as u64
    }

    /// The heartbeat: pings each session every `ping_interval`, closes those that did not
    /// answer within `ping_timeout`, and removes sessions closed by other means. Runs until
    /// shutdown.
    pub async fn heartbeat(self: Arc<Self>) {
        let ping = Frame::text("2");
        let mut tick = tokio::time::interval(self.tick());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let grace = self.interval_ms() + self.config.ping_timeout.as_millis() as u64;
            let now = self.now();
            self.closed_by_client
                .lock()
                .expect("engine lock")
                .retain(|_, at| now.saturating_sub(*at) <= grace);
            let connect_timeout = self.config.connect_timeout.map(|t| t.as_millis() as u64);
            for session in self.snapshot() {
                if session.is_closed() {
                    self.finish(&session);
                    continue;
                }
                let now = self.now();
                if let Some(limit) = connect_timeout
                    && !session.joined.load(Ordering::Relaxed)
                    && now.saturating_sub(session.opened) > limit
                {
                    tracing::debug!(session = %session.id, "no namespace joined within the connect timeout; closing");
                    self.finish(&session);
                    continue;
                }
                if session.ping_sent.load(Ordering::Relaxed) != 0 {
                    if self.ping_overdue(&session, now) {
                        tracing::debug!(session = %session.id, "no pong within the ping timeout; closing");
                        self.finish(&session);
                    }
                } else if now >= session.next_ping.load(Ordering::Relaxed) {
                    session.ping_sent.store(now, Ordering::Relaxed);
                    session.send(&ping);
                }
            }
        }
    }

    /// Closes every session (shutdown), after `last` has had a chance to queue goodbyes.
    pub fn close_all(&self, last: impl Fn(&Arc<Session>)) {
        for session in self.snapshot() {
            last(&session);
            self.finish(&session);
        }
    }
}
