//! Credentials: API tokens, paired devices and pairing codes (`/api/auth/*`).
//!
//! None of this exists upstream, which trusted everyone. Secrets (a token, a pairing code) are
//! returned once, when they are made, and never again.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Millis;

/// What a credential may do. `read` < `respond` < `operate` < `admin`, each including the ones
/// before it. `runner` stands apart: it may register a runner, claim spawns, host terminals and
/// report the sessions it runs, and nothing else; `operate` and `admin` include it. Ask
/// [`Scope::includes`] rather than comparing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// A runner: its own routes (`/api/runners/…`, terminal hosting) only.
    Runner,
    /// Every `GET` and the live events.
    Read,
    /// Also answer a session that needs input, and send mail.
    Respond,
    /// Also tasks, sessions, spawning and stopping agents.
    Operate,
    /// Also tokens, devices, projects and every delete.
    Admin,
}

impl Scope {
    /// Every scope, weakest first.
    pub const ALL: [Scope; 5] = [
        Self::Runner,
        Self::Read,
        Self::Respond,
        Self::Operate,
        Self::Admin,
    ];

    /// Whether a credential of this scope may do what `need` allows.
    pub fn includes(self, need: Scope) -> bool {
        match (self, need) {
            (Self::Runner, need) => need == Self::Runner,
            (have, Self::Runner) => have >= Self::Operate,
            (have, need) => have >= need,
        }
    }

    /// The scope's wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Runner => "runner",
            Self::Read => "read",
            Self::Respond => "respond",
            Self::Operate => "operate",
            Self::Admin => "admin",
        }
    }

    /// Parses a wire name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `POST /api/auth/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CreateToken {
    pub scope: Option<Scope>,
    /// What the token is for ("ci", "laptop agents"); shown in listings.
    pub name: Option<String>,
    /// Days until the token stops working; none: it works until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_days: Option<u32>,
}

/// A new token: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TokenCreated {
    pub id: String,
    /// The secret, to send as `Authorization: Bearer <token>`. The server keeps only its hash.
    pub token: String,
    pub scope: Scope,
    pub name: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
}

/// A token as listed (no secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    /// The client address of the last request that used it.
    pub last_address: Option<String>,
}

/// A paired device as listed (no secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub paired_at: Millis,
    pub last_seen_at: Option<Millis>,
    pub last_address: Option<String>,
}

/// `POST /api/auth/pairings`: make a single-use pairing code.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CreatePairing {
    /// The paired device's scope (default `respond`); at most the caller's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// The device's name, if known now (the device may give its own when it pairs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A pairing code, valid once until `expiresAt`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PairingCreated {
    /// The long code (≥ 128 bits), carried in the URL's fragment.
    pub code: String,
    /// The same pairing as 8 characters for typing by hand (no look-alike characters).
    pub short_code: String,
    /// `<public URL>/pair#c=<code>`: open it on the phone (or scan its QR code).
    pub url: String,
    pub scope: Scope,
    pub expires_at: Millis,
}

/// `POST /api/auth/pair`: a device exchanges a pairing code for its credential.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PairRequest {
    /// The long code or the short code.
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// Put the device's token in the answer too (for a client that is not a browser, such as
    /// a script on another machine). Without it the token is only set as an HttpOnly cookie,
    /// so no page script ever sees it; a request carrying an `Origin` (a browser's) cannot ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_token: Option<bool>,
}

/// A paired device's credential, which the device cookie carries.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Paired {
    /// The device's token, only when the request asked for it (`returnToken`); browsers get
    /// it as the HttpOnly device cookie only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub device_id: String,
    pub device_name: String,
    pub scope: Scope,
    /// The value a cookie-authenticated write carries in `X-Maestro-CSRF`.
    pub csrf: String,
}

/// How the caller of `GET /api/auth/me` was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "lowercase")]
pub enum CallerKind {
    /// A request from this machine, trusted without a credential.
    Local,
    Token,
    Device,
}

/// `GET /api/auth/me`: who the server takes the caller for.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Me {
    pub kind: CallerKind,
    pub scope: Scope,
    /// The token's or device's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// For a device signed in by its cookie: the `X-Maestro-CSRF` value its writes carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

/// The answer to revoking a token or a device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub id: String,
    pub revoked: bool,
}

/// `PUT /api/auth/public-url`: the public URL a tunnel reaches this server at.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct PublicUrl {
    /// An origin, `https://<host>`; `null` when none is announced.
    pub url: Option<String>,
}

/// The event every server acts on when a credential is revoked: it closes the sockets that
/// credential opened. Journaled in the global scope; carries no secret.
pub const CREDENTIAL_REVOKED: &str = "auth:revoked";

/// Payload of [`CREDENTIAL_REVOKED`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct CredentialRevoked {
    pub id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_include_the_ones_before() {
        assert!(Scope::Read < Scope::Respond);
        assert!(Scope::Respond < Scope::Operate);
        assert!(Scope::Operate < Scope::Admin);
        assert!(Scope::Admin.includes(Scope::Read));
        assert!(!Scope::Read.includes(Scope::Respond));
        // A runner token is good for runner routes only; operate and admin include them.
        assert!(Scope::Runner.includes(Scope::Runner));
        assert!(!Scope::Runner.includes(Scope::Read));
        assert!(Scope::Operate.includes(Scope::Runner));
        assert!(!Scope::Respond.includes(Scope::Runner));
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(Scope::parse("root"), None);
    }
}

/// `POST /api/auth/identity`: a challenge the server answers to prove it is the server whose
/// owner token this machine's user can read, before a client sends it that token.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct IdentityChallenge {
    /// 16 to 128 characters chosen at random by the client.
    pub nonce: String,
}

/// The answer to [`IdentityChallenge`].
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "camelCase")]
pub struct IdentityProof {
    /// [`identity_proof`] of the server's current owner token and the nonce.
    pub proof: String,
}

/// HMAC-SHA256 keyed with the owner token over a fixed label and `nonce`, lowercase hex. Only
/// someone who holds the token computes it, and it reveals nothing of the token.
pub fn identity_proof(owner_token: &str, nonce: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(owner_token.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(b"maestro server identity v1\n");
    mac.update(nonce.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
