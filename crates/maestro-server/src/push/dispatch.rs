//! Between a claimed notification and the push requests: each subscribed device's rules
//! ([`super::policy`]) in a transaction on its state, then the device's own payload (its
//! count, and the action buttons when it may decide) to each of its subscriptions.
//!
//! Coalesced notifications wait in the device's state with a deadline
//! ([`Deadline::PushFlush`]); every server's flush loop takes what is due, in a transaction,
//! so one of them sends it, and a restart loses nothing that was folded.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt as _;
use maestro_protocol::{Millis, PushKind, PushPayload, PushTestResult, Scope};
use tokio_util::sync::CancellationToken;

use super::Push;
use super::actions::{self, LOCAL_DEVICE};
use super::devices;
use super::notification::Notification;
use super::policy::{Decision, DeviceState};
use super::sender::CONCURRENCY;
use super::subscriptions::{self, Subscription};
use crate::auth::credentials::Credential;
use crate::error::Result;
use crate::ports::{Collection, Deadline, ReaderExt, TxnExt, transact};
use crate::util::now_ms;

/// Devices one flush pass handles at most; the rest wait for the next.
const FLUSH_BATCH: usize = 100;

/// What became of a notification for one device (the `outcome` label on `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A push service accepted it (counted per subscription).
    Sent,
    /// Folded into a later notification of the same tag.
    Coalesced,
    /// The device's app was on screen.
    SuppressedVisible,
    /// Not newer than what the device was already given.
    Expired,
    /// The push request failed or was refused (counted per subscription).
    Failed,
    /// The device turned the kind off, or it was quiet hours.
    Muted,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::Sent,
        Self::Coalesced,
        Self::SuppressedVisible,
        Self::Expired,
        Self::Failed,
        Self::Muted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Coalesced => "coalesced",
            Self::SuppressedVisible => "suppressed_visible",
            Self::Expired => "expired",
            Self::Failed => "failed",
            Self::Muted => "muted",
        }
    }
}

/// Groups subscriptions by device, one per endpoint.
fn by_device(subscribers: Vec<Subscription>) -> BTreeMap<String, Vec<Subscription>> {
    let mut endpoints = HashSet::new();
    let mut devices: BTreeMap<String, Vec<Subscription>> = BTreeMap::new();
    for s in subscribers {
        if endpoints.insert(s.endpoint.clone()) {
            devices
                .entry(devices::key(s.owner.as_deref()).to_owned())
                .or_default()
                .push(s);
        }
    }
    devices
}

impl Push {
    /// Applies every subscribed device's rules to a claimed notification (event `seq` of
    /// `scope`) and sends what is due now.
    pub(super) async fn dispatch(
        &self,
        scope: &str,
        seq: u64,
        notification: &Notification,
        subscribers: Vec<Subscription>,
    ) {
        let kind = notification.payload.kind;
        futures_util::stream::iter(by_device(subscribers))
            .for_each_concurrent(CONCURRENCY, |(device, subs)| async move {
                let outcome = match self.decide(&device, scope, seq, notification).await {
                    Ok(Decision::Send(n)) => {
                        self.send_to(&device, subs, n).await;
                        return;
                    }
                    Ok(Decision::Coalesced { .. }) => Outcome::Coalesced,
                    Ok(Decision::Expired) => Outcome::Expired,
                    Ok(Decision::Muted) => Outcome::Muted,
                    Ok(Decision::SuppressedVisible) => Outcome::SuppressedVisible,
                    Err(e) => {
                        tracing::warn!(device = %device, error = %e, "push: cannot apply the device's rules");
                        return;
                    }
                };
                self.inner.metrics.count(kind, outcome);
            })
            .await;
    }

    /// Runs the device's rules on its stored state, in one transaction.
    async fn decide(
        &self,
        device: &str,
        scope: &str,
        seq: u64,
        notification: &Notification,
    ) -> Result<Decision> {
        let domain = &self.inner.domain;
        let now = now_ms();
        let visible = devices::is_visible(domain, device, now)?;
        let window = Millis::try_from(self.inner.config.push_coalesce_ms).unwrap_or(Millis::MAX);
        let (device, scope, notification) =
            (device.to_owned(), scope.to_owned(), notification.clone());
        transact(&*domain.store, move |tx| {
            let mut state: DeviceState = tx
                .get(Collection::PushDevices, &device)?
                .unwrap_or_default();
            let before = state.clone();
            let decision = state.offer(&scope, seq, &notification, visible, now, window);
            if state != before {
                tx.put(Collection::PushDevices, &device, None, &state);
            }
            if matches!(decision, Decision::Coalesced { .. }) {
                tx.schedule(Deadline::PushFlush, &device, state.next_due());
            }
            Ok(decision)
        })
        .await
    }

    /// Whether `device` may decide approvals (it gets Allow and Deny buttons).
    fn may_decide(&self, device: &str) -> bool {
        if device == LOCAL_DEVICE {
            return true;
        }
        let credential = self
            .inner
            .domain
            .reader()
            .and_then(|mut r| r.get::<Credential>(Collection::Credentials, device));
        matches!(credential, Ok(Some(c)) if c.scope.includes(Scope::Respond))
    }

    /// Sends `notification` to the device's subscriptions, with the device's own buttons;
    /// `(accepted, failed)`.
    async fn send_to(
        &self,
        device: &str,
        subs: Vec<Subscription>,
        mut notification: Notification,
    ) -> (u32, u32) {
        let kind = notification.payload.kind;
        notification.payload.actions = match &notification.payload.approval_id {
            Some(id) if kind == PushKind::Approval && self.may_decide(device) => {
                actions::buttons(self.inner.vapid.action_key(), id, device)
            }
            _ => Vec::new(),
        };
        let body = serde_json::to_vec(&notification.payload).expect("payloads serialise");
        let urgent = notification.urgent;
        let results: Vec<bool> = futures_util::stream::iter(subs)
            .map(|s| {
                let body = body.clone();
                async move { self.deliver(s, body, urgent).await }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let sent = results.iter().filter(|ok| **ok).count() as u32;
        let failed = results.len() as u32 - sent;
        self.inner.metrics.add(kind, Outcome::Failed, failed.into());
        if sent > 0 {
            if let Err(e) = devices::delivered(&self.inner.domain, device, now_ms()).await {
                tracing::warn!(device = %device, error = %e, "push: cannot record the delivery");
            }
            // Counted once recorded: whoever reads the counter sees the delivery time too.
            self.inner.metrics.add(kind, Outcome::Sent, sent.into());
        }
        (sent, failed)
    }

    /// Every server's loop that sends coalesced notifications when they are due.
    pub(super) async fn flush_loop(&self, shutdown: CancellationToken) {
        let window = self.inner.config.push_coalesce_ms;
        let tick = Duration::from_millis((window / 10).clamp(50, 1_000));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = tokio::time::sleep(tick) => {}
            }
            let now = now_ms();
            let due = match self
                .inner
                .domain
                .store
                .due(Deadline::PushFlush, now, FLUSH_BATCH)
            {
                Ok(due) => due,
                Err(e) => {
                    tracing::warn!(error = %e, "push: cannot read due notifications");
                    continue;
                }
            };
            for device in due {
                if let Err(e) = self.flush(&device, now).await {
                    tracing::warn!(device = %device, error = %e, "push: cannot send coalesced notifications");
                }
            }
        }
    }

    /// Takes the device's due notifications (one server wins each) and sends them.
    async fn flush(&self, device: &str, now: Millis) -> Result<()> {
        let id = device.to_owned();
        let due = transact(&*self.inner.domain.store, move |tx| {
            let Some(mut state) = tx.get::<DeviceState>(Collection::PushDevices, &id)? else {
                tx.schedule(Deadline::PushFlush, &id, None);
                return Ok(Vec::new());
            };
            let due = state.flush_due(now);
            if !due.is_empty() {
                tx.put(Collection::PushDevices, &id, None, &state);
            }
            tx.schedule(Deadline::PushFlush, &id, state.next_due());
            Ok(due)
        })
        .await?;
        if due.is_empty() {
            return Ok(());
        }
        let subs = by_device(subscriptions::for_device(&self.inner.domain, device)?)
            .remove(device)
            .unwrap_or_default();
        for notification in due {
            self.send_to(device, subs.clone(), notification).await;
        }
        Ok(())
    }

    /// `POST /api/push/test`: a test notification to the calling device's subscriptions, at
    /// once (no coalescing, quiet hours or visibility).
    pub async fn send_test(&self, device: &str) -> Result<PushTestResult> {
        let subs = by_device(subscriptions::for_device(&self.inner.domain, device)?)
            .remove(device)
            .unwrap_or_default();
        let notification = Notification {
            urgent: false,
            payload: PushPayload {
                title: "Maestro test notification".into(),
                body: "Notifications reach this device.".into(),
                session_id: String::new(),
                project_id: String::new(),
                kind: PushKind::Test,
                url: "/#/settings".into(),
                tag: "test".into(),
                count: 1,
                approval_id: None,
                actions: Vec::new(),
            },
        };
        let (sent, failed) = self.send_to(device, subs, notification).await;
        Ok(PushTestResult { sent, failed })
    }
}

impl super::PushMetrics {
    /// Counts one notification of `kind` with `outcome`.
    pub fn count(&self, kind: PushKind, outcome: Outcome) {
        self.add(kind, outcome, 1);
    }

    pub fn add(&self, kind: PushKind, outcome: Outcome, n: u64) {
        if n == 0 {
            return;
        }
        let k = PushKind::ALL
            .iter()
            .position(|x| *x == kind)
            .expect("every kind");
        let o = Outcome::ALL
            .iter()
            .position(|x| *x == outcome)
            .expect("every outcome");
        self.notifications[k][o].fetch_add(n, Ordering::Relaxed);
    }
}
