//! Browsers' push subscriptions in the store.
//!
//! A subscription belongs to the credential that made it (a paired device, or a token), or to
//! no one for a local caller, and lives in that owner's index, so revoking a device deletes its
//! subscriptions in the revocation's own transaction ([`delete_for_owner`]). The record id is a
//! hash of owner and endpoint: subscribing again updates the keys instead of adding a record.
//!
//! Bounded: [`MAX_PER_OWNER`] per owner (a new one evicts that owner's oldest) and
//! [`MAX_TOTAL`] in all.
//!
//! Endpoints are where the server will POST, so a subscriber must not choose just any URL:
//! only `https://` URLs on port 443 with a host name (no IP literal, no `localhost`) that
//! does not resolve to a local address are taken, as every browser's push service has,
//! unless `PUSH_ALLOW_LOCAL_ENDPOINTS` (tests with a local push endpoint). The sender checks
//! again when it connects ([`super::guard`]).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use maestro_protocol::{Millis, PushSubscribe, PushSubscriptionInfo};
use serde::{Deserialize, Serialize};

use super::guard;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, Txn, TxnExt, transact};
use crate::util::hash::sha256_hex;
use crate::util::now_ms;

/// Subscriptions one device (or token, or the local caller) may hold.
pub const MAX_PER_OWNER: usize = 10;
/// Subscriptions in all.
pub const MAX_TOTAL: usize = 1000;
/// Longest endpoint URL taken.
const MAX_ENDPOINT: usize = 2048;
/// Longest wait for the subscribe-time lookup of an endpoint's host.
const RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The owner index of subscriptions made by a local caller (no credential).
const LOCAL_OWNER: &str = "local";

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: String,
    pub endpoint: String,
    /// The browser's public key (uncompressed point), base64url.
    pub p256dh: String,
    /// The browser's authentication secret, base64url.
    pub auth: String,
    /// The credential that subscribed; `None` for a local caller.
    pub owner: Option<String>,
    pub created_at: Millis,
}

impl Subscription {
    pub fn info(&self) -> PushSubscriptionInfo {
        PushSubscriptionInfo {
            id: self.id.clone(),
            endpoint: self.endpoint.clone(),
            device_id: self.owner.clone(),
            created_at: self.created_at,
        }
    }
}

fn owner_key(owner: Option<&str>) -> &str {
    owner.unwrap_or(LOCAL_OWNER)
}

fn record_id(owner: Option<&str>, endpoint: &str) -> String {
    let hash = sha256_hex(format!("{}\n{endpoint}", owner_key(owner)).as_bytes());
    format!("push_{}", &hash[..32])
}

/// Checks an endpoint URL; `allow_local` also takes http and loopback / IP-literal hosts.
/// Otherwise: `https` on port 443 with a host name (no address, no `localhost`, with or
/// without a final dot), parsed as browsers parse URLs ([`guard::check_target`]).
pub fn check_endpoint(endpoint: &str, allow_local: bool) -> Result<()> {
    let refuse = |why: &str| Err(Error::validation(format!("endpoint {why}")));
    if endpoint.len() > MAX_ENDPOINT || endpoint.chars().any(|c| c.is_control() || c == ' ') {
        return refuse(&format!(
            "must be a URL of at most {MAX_ENDPOINT} characters"
        ));
    }
    let url = guard::check_target(endpoint, allow_local)?;
    if allow_local {
        return Ok(());
    }
    let named = match url.host() {
        Some(url::Host::Domain(host)) => {
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            host.contains('.') && host != "localhost" && !host.ends_with(".localhost")
        }
        _ => false,
    };
    if !named {
        return refuse("must name a push service host, not an address");
    }
    Ok(())
}

/// Refuses an endpoint whose host resolves, now, to no public address (a name pointing at
/// this machine or its network), for a clear answer at subscribe time. Only a refusal: when
/// the lookup fails or takes over [`RESOLVE_TIMEOUT`], the subscription is taken, since every
/// send checks the addresses again as it connects ([`guard::PublicOnly`]).
async fn check_resolves(endpoint: &str) -> Result<()> {
    let Some(host) = url::Url::parse(endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return Ok(());
    };
    match tokio::time::timeout(RESOLVE_TIMEOUT, guard::resolve_public(&host)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(Error::validation(
            format!("endpoint {host} resolves to no public address"),
        )),
        _ => Ok(()),
    }
}

/// Checks the browser's keys: a P-256 point and a 16-byte secret.
fn check_keys(p256dh: &str, auth: &str) -> Result<()> {
    let point = B64
        .decode(p256dh.trim_end_matches('='))
        .map_err(|_| Error::validation("keys.p256dh must be base64url"))?;
    if p256::PublicKey::from_sec1_bytes(&point).is_err() || point.len() != 65 {
        return Err(Error::validation(
            "keys.p256dh must be an uncompressed P-256 point",
        ));
    }
    let secret = B64
        .decode(auth.trim_end_matches('='))
        .map_err(|_| Error::validation("keys.auth must be base64url"))?;
    if secret.len() != 16 {
        return Err(Error::validation("keys.auth must be 16 bytes"));
    }
    Ok(())
}

/// `POST /api/push/subscriptions`: stores (or refreshes) `owner`'s subscription.
pub async fn subscribe(
    domain: &Domain,
    owner: Option<String>,
    req: PushSubscribe,
    allow_local: bool,
) -> Result<PushSubscriptionInfo> {
    let endpoint = req.endpoint.trim().to_owned();
    check_endpoint(&endpoint, allow_local)?;
    if !allow_local {
        check_resolves(&endpoint).await?;
    }
    check_keys(&req.keys.p256dh, &req.keys.auth)?;
    let id = record_id(owner.as_deref(), &endpoint);
    let now = now_ms();
    let subscription = Subscription {
        id: id.clone(),
        endpoint,
        p256dh: req.keys.p256dh.trim_end_matches('=').to_owned(),
        auth: req.keys.auth.trim_end_matches('=').to_owned(),
        owner,
        created_at: now,
    };
    let stored = transact(&*domain.store, move |tx| {
        let key = owner_key(subscription.owner.as_deref()).to_owned();
        if let Some(existing) = tx.get::<Subscription>(Collection::PushSubscriptions, &id)? {
            let refreshed = Subscription {
                created_at: existing.created_at,
                ..subscription.clone()
            };
            tx.put(Collection::PushSubscriptions, &id, Some(&key), &refreshed);
            return Ok(refreshed);
        }
        let mine: Vec<Subscription> = tx.list(Collection::PushSubscriptions, Some(&key))?;
        let evict = (mine.len() + 1).saturating_sub(MAX_PER_OWNER);
        for old in mine.iter().take(evict) {
            tx.delete(Collection::PushSubscriptions, &old.id);
        }
        let total = tx
            .list::<Subscription>(Collection::PushSubscriptions, None)?
            .len();
        if total - evict >= MAX_TOTAL {
            return Err(Error::Conflict(format!(
                "this server already holds {MAX_TOTAL} push subscriptions"
            )));
        }
        tx.put(
            Collection::PushSubscriptions,
            &id,
            Some(&key),
            &subscription,
        );
        Ok(subscription.clone())
    })
    .await?;
    Ok(stored.info())
}

/// `DELETE /api/push/subscriptions`: removes `owner`'s subscription of `endpoint`; whether
/// there was one.
pub async fn unsubscribe(domain: &Domain, owner: Option<String>, endpoint: &str) -> Result<bool> {
    let id = record_id(owner.as_deref(), endpoint.trim());
    transact(&*domain.store, move |tx| {
        let existed = tx
            .get::<Subscription>(Collection::PushSubscriptions, &id)?
            .is_some();
        tx.delete(Collection::PushSubscriptions, &id);
        Ok(existed)
    })
    .await
}

/// Every subscription, oldest first.
pub fn all(domain: &Domain) -> Result<Vec<Subscription>> {
    domain.reader()?.list(Collection::PushSubscriptions, None)
}

/// The subscriptions of one device (a credential id, or `local`), oldest first.
pub fn for_device(domain: &Domain, device: &str) -> Result<Vec<Subscription>> {
    domain
        .reader()?
        .list(Collection::PushSubscriptions, Some(device))
}

/// Deletes every subscription of `endpoint` (its push service said it is gone).
pub async fn forget_endpoint(domain: &Domain, endpoint: String) -> Result<usize> {
    transact(&*domain.store, move |tx| {
        let gone: Vec<Subscription> = tx
            .list::<Subscription>(Collection::PushSubscriptions, None)?
            .into_iter()
            .filter(|s| s.endpoint == endpoint)
            .collect();
        for s in &gone {
            tx.delete(Collection::PushSubscriptions, &s.id);
        }
        Ok(gone.len())
    })
    .await
}

/// Deletes `owner`'s subscriptions and notification records inside a transaction (a
/// credential being revoked).
pub fn delete_for_owner(tx: &mut dyn Txn, owner: &str) -> Result<()> {
    for s in tx.list::<Subscription>(Collection::PushSubscriptions, Some(owner))? {
        tx.delete(Collection::PushSubscriptions, &s.id);
    }
    super::devices::delete_for_owner(tx, owner);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_a_push_service() {
        for ok in [
            "https://fcm.googleapis.com/fcm/send/abc",
            "https://updates.push.services.mozilla.com/wpush/v2/x",
            "https://web.push.apple.com/Q",
        ] {
            check_endpoint(ok, false).unwrap();
        }
        for bad in [
            "http://fcm.googleapis.com/x",
            "https://127.0.0.1/x",
            "https://[::1]:8443/x",
            "https://localhost/x",
            "https://a.localhost/x",
            "https://intranet/x",
            "https://localhost./x",
            "https://A.LOCALHOST./x",
            "https://142.250.74.10/x",
            "https://user@push.example.net/x",
            "ftp://push.example.net/x",
            "not a url",
        ] {
            assert!(check_endpoint(bad, false).is_err(), "{bad}");
        }
        check_endpoint("http://127.0.0.1:9/push", true).unwrap();
        assert!(check_endpoint("ftp://127.0.0.1/x", true).is_err());
    }

    #[test]
    fn ids_depend_on_owner_and_endpoint() {
        let a = record_id(Some("dev_a"), "https://p.example/1");
        assert_ne!(a, record_id(Some("dev_b"), "https://p.example/1"));
        assert_ne!(a, record_id(None, "https://p.example/1"));
        assert_eq!(a, record_id(Some("dev_a"), "https://p.example/1"));
        assert!(maestro_protocol::ids::is_valid_id(&a));
    }
}
