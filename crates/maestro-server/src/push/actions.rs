//! Action tokens: the Allow and Deny buttons of an approval notification.
//!
//! A token names one approval, one decision and one device, and is signed (HMAC-SHA256) with
//! a key derived from the VAPID private key, so any server sharing the store can check it and
//! nobody without the store can make one: `<approvalId>.<decision>.<device>.<mac>`. It
//! travels only inside the push payload, encrypted to the device's browser.
//!
//! No token is stored. It is single-use because the approval is: the decision goes through the
//! same exactly-once path as the app's ([`Domain::decide_approval`]), so a second tap, a
//! sibling token or a decision made elsewhere first gets 409 `APPROVAL_DECIDED` with who
//! decided, and a token is worth nothing once its approval ended. Redeeming also needs the
//! device's own credential (the service worker's request carries its cookie) with scope
//! `respond`: a token is useless to any other device, and a device whose scope is narrower
//! never gets one.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac as _};
use maestro_protocol::{Approval, ApprovalDecision, DecideApproval, PushAction, Scope};

use crate::auth::Principal;
use crate::domain::{Domain, check_id};
use crate::error::{Error, Result};

type HmacSha256 = Hmac<sha2::Sha256>;

/// The owner key of a local caller's subscriptions (no credential).
pub const LOCAL_DEVICE: &str = "local";

/// A verified token's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Action {
    pub approval_id: String,
    pub decision: ApprovalDecision,
    pub device: String,
}

fn decision_name(d: ApprovalDecision) -> Option<&'static str> {
    match d {
        ApprovalDecision::Allow => Some("allow"),
        ApprovalDecision::Deny => Some("deny"),
        ApprovalDecision::AllowSession => None,
    }
}

fn mac(key: &[u8; 32], message: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"maestro push action v1\n");
    mac.update(message.as_bytes());
    mac
}

/// A token for `decision` (allow or deny) on `approval_id`, for `device`.
pub fn mint(key: &[u8; 32], approval_id: &str, decision: ApprovalDecision, device: &str) -> String {
    let name = decision_name(decision).expect("buttons allow or deny");
    let message = format!("{approval_id}.{name}.{device}");
    let tag = B64.encode(mac(key, &message).finalize().into_bytes());
    format!("{message}.{tag}")
}

/// The Allow and Deny buttons of `approval_id` for `device`.
pub fn buttons(key: &[u8; 32], approval_id: &str, device: &str) -> Vec<PushAction> {
    [
        (ApprovalDecision::Allow, "Allow"),
        (ApprovalDecision::Deny, "Deny"),
    ]
    .into_iter()
    .map(|(d, title)| PushAction {
        action: decision_name(d).expect("allow or deny").to_owned(),
        title: title.to_owned(),
        token: mint(key, approval_id, d, device),
    })
    .collect()
}

/// Checks a token's signature and reads it.
pub fn verify(key: &[u8; 32], token: &str) -> Option<Action> {
    if token.len() > 512 {
        return None;
    }
    let (message, tag) = token.rsplit_once('.')?;
    let tag = B64.decode(tag).ok()?;
    mac(key, message).verify_slice(&tag).ok()?;
    let mut parts = message.splitn(3, '.');
    let approval_id = parts.next()?.to_owned();
    let decision = match parts.next()? {
        "allow" => ApprovalDecision::Allow,
        "deny" => ApprovalDecision::Deny,
        _ => return None,
    };
    let device = parts.next()?.to_owned();
    Some(Action {
        approval_id,
        decision,
        device,
    })
}

/// The device key of a caller: its credential's id, or [`LOCAL_DEVICE`].
pub fn device_of(caller: &Principal) -> &str {
    caller.id.as_deref().unwrap_or(LOCAL_DEVICE)
}

/// `POST /api/push/actions`: decides the token's approval for the calling device.
pub async fn redeem(
    domain: &Domain,
    key: &[u8; 32],
    caller: &Principal,
    token: &str,
) -> Result<Approval> {
    let refused = |why: &str| Error::Coded {
        status: axum::http::StatusCode::FORBIDDEN,
        code: "ACTION_REFUSED",
        message: why.to_owned(),
        details: None,
    };
    let action = verify(key, token.trim()).ok_or_else(|| refused("not a valid action token"))?;
    if action.device != device_of(caller) {
        tracing::info!(target: "maestro::audit", event = "push_action_refused", approval_id = %action.approval_id, reason = "another_device");
        return Err(refused("this action token belongs to another device"));
    }
    if !caller.allows(Scope::Respond) {
        return Err(refused("deciding approvals needs scope 'respond'"));
    }
    check_id("approvalId", &action.approval_id)?;
    let decided = domain
        .decide_approval(
            action.approval_id,
            DecideApproval {
                decision: action.decision,
                reason: None,
                request_id: None,
            },
            caller.label(),
        )
        .await?;
    tracing::info!(target: "maestro::audit", event = "push_action", approval_id = %decided.id, device = %device_of(caller));
    Ok(decided)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_says_one_approval_decision_and_device() {
        let key = [7u8; 32];
        let t = mint(&key, "appr_1", ApprovalDecision::Allow, "dev_a");
        assert_eq!(
            verify(&key, &t),
            Some(Action {
                approval_id: "appr_1".into(),
                decision: ApprovalDecision::Allow,
                device: "dev_a".into(),
            })
        );
        // Another key, or any change to what it says, breaks it.
        assert_eq!(verify(&[8u8; 32], &t), None);
        for forged in [
            t.replace("allow", "deny"),
            t.replace("appr_1", "appr_2"),
            t.replace("dev_a", "dev_b"),
            format!("{t}x"),
            t[..t.len() - 2].to_owned(),
            "appr_1.allow.dev_a".to_owned(),
            String::new(),
        ] {
            assert_eq!(verify(&key, &forged), None, "{forged}");
        }
        let buttons = buttons(&key, "appr_1", "local");
        assert_eq!(
            buttons
                .iter()
                .map(|b| b.action.as_str())
                .collect::<Vec<_>>(),
            ["allow", "deny"]
        );
        assert_eq!(
            verify(&key, &buttons[1].token).unwrap().decision,
            ApprovalDecision::Deny
        );
    }
}
