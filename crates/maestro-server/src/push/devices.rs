//! Per-device notification records in the store: settings and state
//! ([`Collection::PushDevices`], see [`super::policy::DeviceState`]) and visibility
//! ([`Collection::PushVisible`]).
//!
//! A device is a subscription's owner: a paired device's or token's credential id, or
//! [`LOCAL_DEVICE`] for a local caller. Visibility is its own record because the app says it
//! every few seconds while on screen; it would otherwise contend with every notification's
//! transaction on the device's state. Both records go with the device's subscriptions when it
//! is revoked ([`delete_for_owner`]).

use maestro_protocol::{Millis, NotifySettings, NotifyStatus, VISIBLE_FOR_MS};
use serde::{Deserialize, Serialize};

use super::actions::LOCAL_DEVICE;
use super::policy::DeviceState;
use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, Txn, TxnExt, transact};
use crate::util::now_ms;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Visible {
    until: Millis,
}

/// The device key of a subscription owner.
pub fn key(owner: Option<&str>) -> &str {
    owner.unwrap_or(LOCAL_DEVICE)
}

/// The device's state (defaults when it has none).
pub fn state(domain: &Domain, device: &str) -> Result<DeviceState> {
    Ok(domain
        .reader()?
        .get(Collection::PushDevices, device)?
        .unwrap_or_default())
}

/// `GET /api/push/settings`.
pub fn status(domain: &Domain, device: &str) -> Result<NotifyStatus> {
    let state = state(domain, device)?;
    let subscriptions = super::subscriptions::for_device(domain, device)?.len();
    Ok(NotifyStatus {
        settings: state.settings,
        last_delivery_at: state.last_delivery_at,
        subscriptions: u32::try_from(subscriptions).unwrap_or(u32::MAX),
        visible: is_visible(domain, device, now_ms())?,
    })
}

fn check(settings: &NotifySettings) -> Result<()> {
    if let Some(q) = settings.quiet_hours
        && (q.start >= 1440 || q.end >= 1440)
    {
        return Err(Error::validation(
            "quietHours.start and .end are minutes of the day, 0-1439",
        ));
    }
    if settings.utc_offset_minutes.abs() > 18 * 60 {
        return Err(Error::validation(
            "utcOffsetMinutes must be within -1080..1080",
        ));
    }
    Ok(())
}

/// `PUT /api/push/settings`: replaces the device's settings.
pub async fn put_settings(
    domain: &Domain,
    device: &str,
    settings: NotifySettings,
) -> Result<NotifySettings> {
    check(&settings)?;
    let device = device.to_owned();
    transact(&*domain.store, move |tx| {
        let mut state: DeviceState = tx
            .get(Collection::PushDevices, &device)?
            .unwrap_or_default();
        state.settings = settings;
        tx.put(Collection::PushDevices, &device, None, &state);
        Ok(())
    })
    .await?;
    Ok(settings)
}

/// `client:visibility`: the device's app is on screen (for [`VISIBLE_FOR_MS`]) or not.
pub async fn set_visible(domain: &Domain, device: &str, visible: bool) -> Result<()> {
    let device = device.to_owned();
    let until = now_ms() + VISIBLE_FOR_MS;
    transact(&*domain.store, move |tx| {
        if visible {
            tx.put(Collection::PushVisible, &device, None, &Visible { until });
        } else {
            tx.delete(Collection::PushVisible, &device);
        }
        Ok(())
    })
    .await
}

/// Whether the device's app said it is on screen within the last [`VISIBLE_FOR_MS`].
pub fn is_visible(domain: &Domain, device: &str, now: Millis) -> Result<bool> {
    Ok(domain
        .reader()?
        .get::<Visible>(Collection::PushVisible, device)?
        .is_some_and(|v| v.until > now))
}

/// Records a delivery the push service accepted.
pub async fn delivered(domain: &Domain, device: &str, at: Millis) -> Result<()> {
    let device = device.to_owned();
    transact(&*domain.store, move |tx| {
        let mut state: DeviceState = tx
            .get(Collection::PushDevices, &device)?
            .unwrap_or_default();
        if state.last_delivery_at.is_none_or(|t| t < at) {
            state.last_delivery_at = Some(at);
            tx.put(Collection::PushDevices, &device, None, &state);
        }
        Ok(())
    })
    .await
}

/// Deletes a device's notification records inside a transaction (it is being revoked).
pub fn delete_for_owner(tx: &mut dyn Txn, device: &str) {
    tx.delete(Collection::PushDevices, device);
    tx.delete(Collection::PushVisible, device);
    tx.schedule(crate::ports::Deadline::PushFlush, device, None);
}
