//! The background task that turns notify events into Web Push requests.
//!
//! Two stages joined by a bounded queue ([`QUEUE`]): the event loop reads the store's live
//! stream and queues the events that notify (dropping, and counting, what does not fit, so a
//! slow push service never holds up the stream); the worker claims each one
//! ([`super::notification::claim`], so one server of those sharing a store sends it), then
//! hands it to [`super::dispatch`], which applies each device's rules and sends to its
//! subscriptions ([`CONCURRENCY`] devices at a time, and as many requests per device), each bounded by
//! [`REQUEST_TIMEOUT`]. Nothing is retried: a notification is only useful now. A push service
//! answering 404 or 410 says the subscription is gone; it is deleted.

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use maestro_protocol::EventRecord;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::Push;
use super::notification::{self, Notification};
use super::subscriptions::{self, Subscription};
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, TxnExt, transact};

/// Notifications waiting to be sent; more are dropped.
pub const QUEUE: usize = 64;
/// Push requests in flight at once.
pub const CONCURRENCY: usize = 8;
/// Longest wait for a push service's answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a push service keeps an undelivered notification (`TTL`): a question stays
/// worth asking for a while; an ending is old news sooner.
const TTL_NEEDS_INPUT: Duration = Duration::from_secs(12 * 3600);
const TTL_ENDED: Duration = Duration::from_secs(3600);

/// One queued notification and the event it came from.
struct Job {
    scope: String,
    seq: u64,
    notification: Notification,
}

/// The per-scope record of claimed event numbers.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Claimed {
    seqs: Vec<u64>,
}

impl Push {
    /// Runs until `shutdown`: the event loop, the worker and the flush loop of coalesced
    /// notifications ([`super::dispatch`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let events = self.inner.domain.store.subscribe();
        tokio::join!(
            self.read_events(events, queue, shutdown.clone()),
            self.work(jobs, shutdown.clone()),
            self.flush_loop(shutdown),
        );
    }

    async fn read_events(
        &self,
        mut events: broadcast::Receiver<std::sync::Arc<EventRecord>>,
        queue: mpsc::Sender<Job>,
        shutdown: CancellationToken,
    ) {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            let event = match event {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "push: fell behind the event stream");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let Some(notification) = notification::for_event(&event) else {
                continue;
            };
            let job = Job {
                scope: event.scope.clone(),
                seq: event.seq,
                notification,
            };
            if queue.try_send(job).is_err() {
                self.inner.metrics.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(scope = %event.scope, seq = event.seq, "push: queue full; notification dropped");
            }
        }
    }

    async fn work(&self, mut jobs: mpsc::Receiver<Job>, shutdown: CancellationToken) {
        loop {
            let job = tokio::select! {
                _ = shutdown.cancelled() => return,
                job = jobs.recv() => match job {
                    Some(job) => job,
                    None => return,
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = self.handle(job) => {}
            }
        }
    }

    #[tracing::instrument(skip_all, fields(scope = %job.scope, seq = job.seq))]
    async fn handle(&self, job: Job) {
        let subscribers = match subscriptions::all(&self.inner.domain) {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(error = %e, "push: cannot read subscriptions");
                return;
            }
        };
        // Nobody to tell: nothing to claim either (saves a transaction per event).
        if subscribers.is_empty() {
            return;
        }
        match self.claim(&job.scope, job.seq).await {
            Ok(true) => {
                self.inner
                    .metrics
                    .claims_won
                    .fetch_add(1, Ordering::Relaxed);
            }
            Ok(false) => {
                self.inner
                    .metrics
                    .claims_lost
                    .fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "push: cannot claim the notification");
                return;
            }
        }
        self.dispatch(&job.scope, job.seq, &job.notification, subscribers)
            .await;
    }

    /// Claims `scope`'s event `seq` for this server; whether it is ours to send.
    async fn claim(&self, scope: &str, seq: u64) -> Result<bool> {
        let scope = scope.to_owned();
        transact(&*self.inner.domain.store, move |tx| {
            let mut claimed: Claimed = tx.get(Collection::PushSent, &scope)?.unwrap_or_default();
            let mine = notification::claim(&mut claimed.seqs, seq);
            if mine {
                tx.put(Collection::PushSent, &scope, None, &claimed);
            }
            Ok(mine)
        })
        .await
    }

    /// Sends one push; whether the push service accepted it.
    pub(super) async fn deliver(&self, s: Subscription, body: Vec<u8>, urgent: bool) -> bool {
        let endpoint = s.endpoint.clone();
        match self.send(&s, body, urgent).await {
            Ok(status) if status.is_success() => {
                self.inner.metrics.sent.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            Ok(status) if status.as_u16() == 404 || status.as_u16() == 410 => {
                tracing::info!(subscription = %s.id, status = status.as_u16(), "push: subscription gone; deleting it");
                if let Err(e) = subscriptions::forget_endpoint(&self.inner.domain, endpoint).await {
                    tracing::warn!(error = %e, "push: cannot delete a gone subscription");
                }
                // Counted once the subscription is deleted: whoever reads the counter (a
                // dashboard, a test) sees the deletion done.
                self.inner.metrics.gone.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => {
                self.inner.metrics.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subscription = %s.id, status = status.as_u16(), "push: the push service refused");
            }
            Err(e) => {
                self.inner.metrics.failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(subscription = %s.id, error = %e, "push: cannot send");
            }
        }
        false
    }

    /// Encrypts `body` to the subscription's keys (RFC 8291, `aes128gcm`), signs for its push
    /// service (RFC 8292) and posts it.
    async fn send(
        &self,
        s: &Subscription,
        body: Vec<u8>,
        urgent: bool,
    ) -> Result<reqwest::StatusCode> {
        let corrupt = |what: &str| Error::Storage(format!("push subscription {}: {what}", s.id));
        // Checked again at every send (a subscription may predate the rules); the client's
        // resolver checks the addresses a name resolves to when it connects.
        super::guard::check_target(&s.endpoint, self.inner.config.push_allow_local_endpoints)
            .map_err(|e| Error::Forbidden(format!("push subscription {}: {e}", s.id)))?;
        let uri: axum::http::Uri = s.endpoint.parse().map_err(|_| corrupt("endpoint"))?;
        let origin = match (uri.scheme_str(), uri.authority()) {
            (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
            _ => return Err(corrupt("endpoint")),
        };
        let key = B64
            .decode(&s.p256dh)
            .ok()
            .and_then(|k| p256::PublicKey::from_sec1_bytes(&k).ok())
            .ok_or_else(|| corrupt("p256dh"))?;
        let auth = B64
            .decode(&s.auth)
            .ok()
            .filter(|a| a.len() == 16)
            .ok_or_else(|| corrupt("auth"))?;
        let ttl = if urgent { TTL_NEEDS_INPUT } else { TTL_ENDED };
        let request = web_push_native::WebPushBuilder::new(
            uri,
            key,
            web_push_native::Auth::clone_from_slice(&auth),
        )
        .with_valid_duration(ttl)
        .build(body)
        .map_err(|e| Error::Internal(format!("cannot encrypt a push: {e}")))?;
        let (parts, encrypted) = request.into_parts();
        let mut headers = parts.headers;
        // reqwest sets it from the body.
        headers.remove(reqwest::header::CONTENT_LENGTH);
        let authorization = self.inner.vapid.authorization(&origin, &self.contact())?;
        let response = self
            .client()?
            .post(&s.endpoint)
            .headers(headers)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .header("Urgency", if urgent { "high" } else { "normal" })
            .body(encrypted)
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| Error::Unavailable(format!("push service: {e}")))?;
        Ok(response.status())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    fn event(seq: u64, name: &str) -> Arc<EventRecord> {
        Arc::new(EventRecord {
            scope: "proj_1".into(),
            seq,
            event: name.into(),
            data: json!({"sessionId": "sess_1", "name": "n", "message": "?"}),
            timestamp: 0,
            session_id: Some("sess_1".into()),
        })
    }

    /// A full queue drops notifications (and counts them) instead of holding up the stream.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::Config::for_dir(dir.path());
        let domain = crate::open(&config, "http://localhost:0".into()).unwrap();
        let push = Push::start(domain, Arc::new(config)).await.unwrap();
        let (events_tx, events) = broadcast::channel(16);
        let (queue, mut jobs) = mpsc::channel(2);
        for (seq, name) in [
            (1, "notify:needs_input"),
            (2, "session:updated"),
            (3, "notify:session_failed"),
            (4, "notify:session_completed"),
            (5, "notify:needs_input"),
        ] {
            events_tx.send(event(seq, name)).unwrap();
        }
        drop(events_tx);
        // Returns when the stream closes: it never waited for room in the queue.
        push.read_events(events, queue, CancellationToken::new())
            .await;
        let queued: Vec<u64> = std::iter::from_fn(|| jobs.try_recv().ok())
            .map(|j| j.seq)
            .collect();
        assert_eq!(queued, [1, 3], "the first two notifications, in order");
        assert_eq!(push.metrics().dropped.load(Ordering::Relaxed), 2);
    }
}
