//! What a device is told, and when: the per-device rules between an event that notifies and
//! a push request. Pure, unit-tested here; [`super::dispatch`] runs them inside a store
//! transaction on the device's [`DeviceState`], so every server sharing the store applies
//! them to the same state.
//!
//! In order, for one event and one device:
//! 1. **Never the same event twice.** The device remembers, per event scope, the last
//!    [`SEEN_WINDOW`] event numbers it was given ([`DeviceState::seen`]); one of them, or one
//!    older than all of them, is `expired`. A restart, a reconnect or a second server that
//!    sees an event again sends nothing. The numbers are a set, not a high-water mark: servers
//!    sharing a store handle a scope's events concurrently, so a device may be offered event 8
//!    after event 10, and 8 is still news.
//! 2. **The device's choices.** A kind it turned off, or quiet hours (in its own time zone),
//!    mute the event; approvals may still notify during quiet hours.
//! 3. **Already on screen.** A device whose app is visible and connected gets nothing
//!    (`suppressed_visible`); the caller knows that from the visibility record.
//! 4. **No floods.** Per notification tag (one per session, one per machine), the first event
//!    is sent at once; events within the coalescing window after a send are folded into one
//!    notification sent when the window ends ([`DeviceState::flush_due`]), which replaces
//!    the previous one (same tag) and says how many things happened.

use std::collections::BTreeMap;

use maestro_protocol::{Millis, NotifyKinds, NotifySettings, PushKind, PushPayload};
use serde::{Deserialize, Serialize};

use super::notification::{self, MAX_BODY, Notification};
use crate::util::one_line as cut;

/// Event scopes a device remembers event numbers for; beyond it the least recent are
/// forgotten.
pub const MAX_SCOPES: usize = 256;
/// Event numbers a device remembers per scope.
pub const SEEN_WINDOW: usize = 32;
/// Coalescing groups a device keeps; beyond it the quietest idle ones are forgotten.
pub const MAX_GROUPS: usize = 256;
const MINUTES_PER_DAY: i64 = 24 * 60;

/// One device's notification state, one record per device in the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct DeviceState {
    pub settings: NotifySettings,
    /// When a push service last accepted a notification for this device.
    pub last_delivery_at: Option<Millis>,
    /// Per event scope, the last [`SEEN_WINDOW`] event numbers this device was given (sent
    /// or folded), ascending.
    pub seen: BTreeMap<String, Vec<u64>>,
    /// Per notification tag, the coalescing group.
    pub groups: BTreeMap<String, Group>,
}

/// The notifications of one tag for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// When the group's last notification was sent.
    pub last_sent_at: Millis,
    /// Events the group stands for since it started.
    pub count: u32,
    /// The newest folded event's notification, sent at `due`.
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    pub payload: PushPayload,
    pub urgent: bool,
    pub due: Millis,
}

/// What happens to one event for one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this now.
    Send(Notification),
    /// Folded into the group's notification, sent at `due`.
    Coalesced { due: Millis },
    /// Not newer than what the device was already given.
    Expired,
    /// The device turned this kind off, or it is quiet hours.
    Muted,
    /// The device's app shows it already.
    SuppressedVisible,
}

/// Whether the device wants `kind` at all.
pub fn kind_enabled(kinds: &NotifyKinds, kind: PushKind) -> bool {
    match kind {
        PushKind::Approval => kinds.approvals,
        PushKind::NeedsInput => kinds.needs_input,
        PushKind::SessionFailed => kinds.failed,
        PushKind::SessionCompleted => kinds.completed,
        PushKind::MachineOffline | PushKind::MachineOnline => kinds.machine_offline,
        PushKind::Test => true,
    }
}

/// Whether `now` falls in the device's quiet hours (its local time: UTC plus its offset).
pub fn in_quiet_hours(settings: &NotifySettings, now: Millis) -> bool {
    let Some(q) = settings.quiet_hours else {
        return false;
    };
    let local_minutes = now.div_euclid(60_000) + i64::from(settings.utc_offset_minutes);
    let minute = local_minutes.rem_euclid(MINUTES_PER_DAY);
    let (start, end) = (i64::from(q.start), i64::from(q.end));
    match start.cmp(&end) {
        std::cmp::Ordering::Equal => false,
        std::cmp::Ordering::Less => (start..end).contains(&minute),
        // Past midnight: 22:00-07:00.
        std::cmp::Ordering::Greater => minute >= start || minute < end,
    }
}

/// Whether the device's choices mute `kind` at `now`.
pub fn muted(settings: &NotifySettings, kind: PushKind, now: Millis) -> bool {
    if !kind_enabled(&settings.kinds, kind) {
        return true;
    }
    let still = kind == PushKind::Approval
        && settings
            .quiet_hours
            .is_some_and(|q| q.approvals_still_notify);
    kind != PushKind::Test && !still && in_quiet_hours(settings, now)
}

/// The notification of a group that stands for `count` events: the newest event's, saying
/// how many there were.
fn counted(mut payload: PushPayload, urgent: bool, count: u32) -> Notification {
    payload.count = count;
    if count > 1 {
        payload.body = cut(&format!("{count} updates · {}", payload.body), MAX_BODY);
    }
    Notification { payload, urgent }
}

impl DeviceState {
    /// Decides what `notification` (event `seq` of `scope`) does for this device at `now`,
    /// with a coalescing window of `window` ms, and records it.
    pub fn offer(
        &mut self,
        scope: &str,
        seq: u64,
        notification: &Notification,
        visible: bool,
        now: Millis,
        window: Millis,
    ) -> Decision {
        if self
            .seen
            .get(scope)
            .is_some_and(|seen| !notification::is_new(seen, seq, SEEN_WINDOW))
        {
            return Decision::Expired;
        }
        let kind = notification.payload.kind;
        if muted(&self.settings, kind, now) {
            return Decision::Muted;
        }
        if visible {
            return Decision::SuppressedVisible;
        }
        self.remember(scope, seq);
        self.prune(now, window);
        let tag = notification.payload.tag.clone();
        let recent = self
            .groups
            .get(&tag)
            .filter(|g| g.pending.is_some() || now - g.last_sent_at < window);
        match recent {
            Some(group) => {
                let due = group
                    .pending
                    .as_ref()
                    .map_or(group.last_sent_at + window, |p| p.due);
                let group = self.groups.get_mut(&tag).expect("just read");
                group.count = group.count.saturating_add(1);
                group.pending = Some(Pending {
                    payload: notification.payload.clone(),
                    urgent: notification.urgent || group.pending.as_ref().is_some_and(|p| p.urgent),
                    due,
                });
                Decision::Coalesced { due }
            }
            None => {
                self.groups.insert(
                    tag,
                    Group {
                        last_sent_at: now,
                        count: 1,
                        pending: None,
                    },
                );
                Decision::Send(counted(
                    notification.payload.clone(),
                    notification.urgent,
                    1,
                ))
            }
        }
    }

    /// Takes the folded notifications that are due at `now`; each counts as sent now.
    pub fn flush_due(&mut self, now: Millis) -> Vec<Notification> {
        let mut out = Vec::new();
        for group in self.groups.values_mut() {
            if let Some(p) = group.pending.take_if(|p| p.due <= now) {
                group.last_sent_at = now;
                out.push(counted(p.payload, p.urgent, group.count));
            }
        }
        out
    }

    /// When the next folded notification is due.
    pub fn next_due(&self) -> Option<Millis> {
        self.groups
            .values()
            .filter_map(|g| g.pending.as_ref().map(|p| p.due))
            .min()
    }

    fn remember(&mut self, scope: &str, seq: u64) {
        let seen = self.seen.entry(scope.to_owned()).or_default();
        notification::claim_within(seen, seq, SEEN_WINDOW);
        while self.seen.len() > MAX_SCOPES {
            let least_recent = self
                .seen
                .iter()
                .min_by_key(|(_, s)| s.last().copied().unwrap_or(0))
                .map(|(k, _)| k.clone())
                .expect("not empty");
            self.seen.remove(&least_recent);
        }
    }

    /// Forgets idle groups whose window has passed, and the quietest beyond [`MAX_GROUPS`].
    fn prune(&mut self, now: Millis, window: Millis) {
        self.groups
            .retain(|_, g| g.pending.is_some() || now - g.last_sent_at < window);
        while self.groups.len() >= MAX_GROUPS {
            let Some(oldest) = self
                .groups
                .iter()
                .filter(|(_, g)| g.pending.is_none())
                .min_by_key(|(_, g)| g.last_sent_at)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            self.groups.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use maestro_protocol::QuietHours;

    use super::*;

    const W: Millis = 30_000;

    fn note(kind: PushKind, tag: &str, body: &str) -> Notification {
        Notification {
            urgent: kind == PushKind::Approval,
            payload: PushPayload {
                title: "t".into(),
                body: body.into(),
                session_id: "sess_1".into(),
                project_id: "proj_1".into(),
                kind,
                url: "/".into(),
                tag: tag.into(),
                count: 1,
                approval_id: None,
                actions: Vec::new(),
            },
        }
    }

    #[test]
    fn a_burst_becomes_one_notification_then_one_with_the_count() {
        let mut d = DeviceState::default();
        let n = note(PushKind::NeedsInput, "s:1", "q");
        let Decision::Send(first) = d.offer("p", 1, &n, false, 1_000, W) else {
            panic!("the first is sent at once")
        };
        assert_eq!(first.payload.count, 1);
        for seq in 2..=10 {
            let body = format!("q{seq}");
            assert_eq!(
                d.offer(
                    "p",
                    seq,
                    &note(PushKind::NeedsInput, "s:1", &body),
                    false,
                    1_000 + seq as i64 * 100,
                    W
                ),
                Decision::Coalesced { due: 1_000 + W }
            );
        }
        assert_eq!(d.next_due(), Some(1_000 + W));
        assert!(d.flush_due(1_000 + W - 1).is_empty(), "not yet");
        let flushed = d.flush_due(1_000 + W);
        assert_eq!(flushed.len(), 1);
        assert_eq!(flushed[0].payload.count, 10);
        assert_eq!(flushed[0].payload.body, "10 updates · q10");
        assert_eq!(d.next_due(), None);
        assert!(d.flush_due(10 * W).is_empty(), "sent once");
        // Another tag is its own group.
        assert!(matches!(
            d.offer(
                "p",
                11,
                &note(PushKind::NeedsInput, "s:2", "x"),
                false,
                1_000 + W,
                W
            ),
            Decision::Send(_)
        ));
        // Once the window after the last send has passed, the next event goes at once.
        assert!(matches!(
            d.offer("p", 12, &n, false, 1_000 + 2 * W, W),
            Decision::Send(_)
        ));
    }

    #[test]
    fn the_same_event_is_never_given_twice() {
        let mut d = DeviceState::default();
        let n = note(PushKind::SessionFailed, "s:1", "x");
        assert!(matches!(
            d.offer("p", 5, &n, false, 0, W),
            Decision::Send(_)
        ));
        assert_eq!(d.offer("p", 5, &n, false, 10 * W, W), Decision::Expired);
        // Two servers handle a scope's events concurrently: 4 may come after 5, and is news.
        assert!(matches!(
            d.offer("p", 4, &n, false, 10 * W, W),
            Decision::Send(_)
        ));
        assert_eq!(d.offer("p", 4, &n, false, 10 * W, W), Decision::Expired);
        // Scopes number their events separately.
        assert!(matches!(
            d.offer("q", 4, &n, false, 12 * W, W),
            Decision::Send(_)
        ));
        // Survives a round trip through the store.
        let mut again: DeviceState =
            serde_json::from_value(serde_json::to_value(&d).unwrap()).unwrap();
        assert_eq!(again.offer("p", 4, &n, false, 20 * W, W), Decision::Expired);
        // Older than every remembered number of a full window: expired.
        let mut d = DeviceState::default();
        for seq in 100..100 + SEEN_WINDOW as u64 {
            d.offer("p", seq, &n, false, 0, W);
        }
        assert_eq!(d.seen["p"].len(), SEEN_WINDOW);
        assert_eq!(d.offer("p", 99, &n, false, 0, W), Decision::Expired);
    }

    #[test]
    fn kinds_quiet_hours_and_visibility() {
        let mut d = DeviceState::default();
        d.settings.kinds.completed = false;
        let done = note(PushKind::SessionCompleted, "s:1", "x");
        assert_eq!(d.offer("p", 1, &done, false, 0, W), Decision::Muted);
        let failed = note(PushKind::SessionFailed, "s:1", "x");
        assert_eq!(
            d.offer("p", 2, &failed, true, 0, W),
            Decision::SuppressedVisible
        );
        // Muted and suppressed events are not remembered as given.
        assert!(matches!(
            d.offer("p", 2, &failed, false, 0, W),
            Decision::Send(_)
        ));
    }

    #[test]
    fn quiet_hours_are_in_the_devices_time() {
        let h = |h: i64, m: i64| (h * 60 + m) * 60_000;
        let mut s = NotifySettings {
            quiet_hours: Some(QuietHours {
                start: 22 * 60,
                end: 7 * 60,
                approvals_still_notify: true,
            }),
            ..NotifySettings::default()
        };
        assert!(in_quiet_hours(&s, h(23, 0)));
        assert!(in_quiet_hours(&s, h(0, 30)));
        assert!(in_quiet_hours(&s, h(6, 59)));
        assert!(!in_quiet_hours(&s, h(7, 0)));
        assert!(!in_quiet_hours(&s, h(12, 0)));
        // UTC+2: 21:00 UTC is 23:00 there.
        s.utc_offset_minutes = 120;
        assert!(in_quiet_hours(&s, h(21, 0)));
        assert!(!in_quiet_hours(&s, h(5, 0)), "07:00 there");
        // UTC-5: 03:00 UTC is 22:00 the day before.
        s.utc_offset_minutes = -300;
        assert!(in_quiet_hours(&s, h(3, 0)));
        assert!(!in_quiet_hours(&s, h(2, 59)));
        // A daytime range.
        s.utc_offset_minutes = 0;
        s.quiet_hours = Some(QuietHours {
            start: 9 * 60,
            end: 17 * 60,
            approvals_still_notify: false,
        });
        assert!(in_quiet_hours(&s, h(9, 0)));
        assert!(!in_quiet_hours(&s, h(17, 0)));
        assert!(muted(&s, PushKind::Approval, h(10, 0)));
        assert!(!muted(&s, PushKind::Test, h(10, 0)), "a test always goes");
        s.quiet_hours.as_mut().unwrap().approvals_still_notify = true;
        assert!(!muted(&s, PushKind::Approval, h(10, 0)));
        assert!(muted(&s, PushKind::NeedsInput, h(10, 0)));
        assert!(!muted(&s, PushKind::NeedsInput, h(18, 0)));
    }

    #[test]
    fn state_is_bounded() {
        let mut d = DeviceState::default();
        for i in 0..(MAX_SCOPES as u64 + 10) {
            let n = note(PushKind::NeedsInput, &format!("s:{i}"), "x");
            d.offer(&format!("p{i}"), 1, &n, false, 0, W);
        }
        assert_eq!(d.seen.len(), MAX_SCOPES);
        assert!(d.groups.len() <= MAX_GROUPS);
    }
}
