//! Web Push: notifications on the phone when a session needs input, fails or completes, a tool
//! waits for approval or a machine goes offline, even while the web app is closed.
//!
//! - [`vapid`]: the server's key pair, made once and kept in the store (shared by every server
//!   on one Redis), and the `Authorization: vapid …` header (RFC 8292);
//! - [`subscriptions`]: browsers' subscriptions, owned by the device that made them and
//!   deleted with it;
//! - [`notification`]: which events notify, what the notification says, and the exactly-once
//!   claim that picks the one server that sends it;
//! - [`policy`]: per device, what is sent and when (its settings, quiet hours, visibility,
//!   coalescing, never older than its last delivery); [`devices`] keeps that state;
//! - [`dispatch`]: runs the policy for each device and sends each device its own payload;
//! - [`actions`]: the Allow and Deny buttons' single-use tokens;
//! - [`sender`]: the background task (event stream → bounded queue → push services);
//! - [`guard`]: where the push client may connect (public addresses, port 443), checked at
//!   connect time against DNS rebinding.
//!
//! Payloads are encrypted to each browser's keys (RFC 8291, `aes128gcm`) by `web-push-native`;
//! push services see only ciphertext, its size and the endpoint.

pub mod actions;
pub mod devices;
pub mod dispatch;
pub mod guard;
pub mod notification;
pub mod policy;
pub mod sender;
pub mod subscriptions;
pub mod vapid;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::Config;
use crate::domain::Domain;
use crate::error::Result;

/// Web Push for one server; cheap to clone.
#[derive(Clone)]
pub struct Push {
    inner: Arc<Inner>,
}

struct Inner {
    domain: Domain,
    config: Arc<Config>,
    vapid: vapid::Vapid,
    /// Built for the first push (a server with no subscriptions never runs the TLS set-up).
    client: std::sync::OnceLock<reqwest::Client>,
    metrics: PushMetrics,
}

/// Counters for `/metrics`.
#[derive(Default)]
pub struct PushMetrics {
    /// Notifications this server claimed (and so sent).
    pub claims_won: AtomicU64,
    /// Notifications another server sharing the store claimed first.
    pub claims_lost: AtomicU64,
    /// Push requests a push service accepted.
    pub sent: AtomicU64,
    /// Push requests refused or failed (not retried).
    pub failed: AtomicU64,
    /// Subscriptions deleted because their push service answered 404 or 410.
    pub gone: AtomicU64,
    /// Notifications dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Per kind and outcome ([`maestro_protocol::PushKind::ALL`] ×
    /// [`dispatch::Outcome::ALL`]).
    notifications:
        [[AtomicU64; dispatch::Outcome::ALL.len()]; maestro_protocol::PushKind::ALL.len()],
}

impl PushMetrics {
    /// Prometheus text for the counters.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "# HELP maestro_push_claims_total Notifications decided by this server: won (it sends) or lost (another server does).\n\
             # TYPE maestro_push_claims_total counter\n\
             maestro_push_claims_total{{outcome=\"won\"}} {}\n\
             maestro_push_claims_total{{outcome=\"lost\"}} {}\n\
             # HELP maestro_push_requests_total Web Push requests by result.\n\
             # TYPE maestro_push_requests_total counter\n\
             maestro_push_requests_total{{result=\"sent\"}} {}\n\
             maestro_push_requests_total{{result=\"failed\"}} {}\n\
             maestro_push_requests_total{{result=\"gone\"}} {}\n\
             # HELP maestro_push_dropped_total Notifications dropped because the send queue was full.\n\
             # TYPE maestro_push_dropped_total counter\n\
             maestro_push_dropped_total {}\n",
            get(&self.claims_won),
            get(&self.claims_lost),
            get(&self.sent),
            get(&self.failed),
            get(&self.gone),
            get(&self.dropped),
        ) + &self.render_notifications()
    }

    fn render_notifications(&self) -> String {
        let mut out = String::from(
            "# HELP maestro_push_notifications_total Notifications per device by kind and outcome: sent and failed count push requests; coalesced, suppressed_visible (the app was on screen), expired (not newer than the device's last delivery) and muted (kind off, quiet hours) count events.\n\
             # TYPE maestro_push_notifications_total counter\n",
        );
        for (k, kind) in maestro_protocol::PushKind::ALL.iter().enumerate() {
            for (o, outcome) in dispatch::Outcome::ALL.iter().enumerate() {
                out.push_str(&format!(
                    "maestro_push_notifications_total{{kind=\"{}\",outcome=\"{}\"}} {}\n",
                    kind.as_str(),
                    outcome.as_str(),
                    self.notifications[k][o].load(Ordering::Relaxed)
                ));
            }
        }
        out
    }
}

impl Push {
    /// Loads (or makes) the VAPID key; the sender runs once [`Push::run`] is spawned.
    pub async fn start(domain: Domain, config: Arc<Config>) -> Result<Self> {
        let vapid = vapid::ensure(&domain).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                domain,
                config,
                vapid,
                client: std::sync::OnceLock::new(),
                metrics: PushMetrics::default(),
            }),
        })
    }

    /// The VAPID public key, base64url (`applicationServerKey`).
    pub fn public_key(&self) -> &str {
        self.inner.vapid.public_key()
    }

    /// Redeems a notification button's token for `caller` ([`actions::redeem`]).
    pub async fn redeem(
        &self,
        caller: &crate::auth::Principal,
        token: &str,
    ) -> Result<maestro_protocol::Approval> {
        actions::redeem(
            &self.inner.domain,
            self.inner.vapid.action_key(),
            caller,
            token,
        )
        .await
    }

    /// The HTTP client pushes go through ([`guard::client`]), built on first use.
    fn client(&self) -> Result<&reqwest::Client> {
        if let Some(client) = self.inner.client.get() {
            return Ok(client);
        }
        let client = guard::client(
            self.inner.config.push_allow_local_endpoints,
            sender::REQUEST_TIMEOUT,
        )?;
        Ok(self.inner.client.get_or_init(|| client))
    }

    pub fn metrics(&self) -> &PushMetrics {
        &self.inner.metrics
    }

    /// VAPID `sub`: who a push service can contact about this sender. `PUSH_CONTACT`, else the
    /// public URL when it is https (a tunnel announced after start-up counts), else a
    /// placeholder.
    fn contact(&self) -> String {
        let config = &self.inner.config;
        config.push_contact.clone().unwrap_or_else(|| {
            config
                .public_url()
                .filter(|u| u.starts_with("https://"))
                .unwrap_or_else(|| "mailto:maestro@localhost".to_owned())
        })
    }
}
