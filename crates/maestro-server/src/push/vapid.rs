//! The server's VAPID key pair (RFC 8292): made on first start and kept in the store, so every
//! server sharing a Redis signs with the same key and a browser's subscription (which names
//! the key it accepts) works whichever server sends.
//!
//! The private key is a PKCS#8 document (what `jsonwebtoken` signs with); the public key the
//! uncompressed point browsers take as `applicationServerKey`. Whoever can read the store can
//! read the private key; it lets them send notifications to this server's subscribers, no
//! more (the payload is encrypted to each browser's own keys).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint as _;
use p256::pkcs8::EncodePrivateKey as _;
use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, TxnExt, transact};
use crate::util::now_ms;

/// The id of the one record in [`Collection::VapidKeys`].
const RECORD: &str = "vapid";
/// How long a VAPID signature is valid (RFC 8292 allows at most 24 hours).
pub const SIGNATURE_TTL_SECS: u64 = 12 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// PKCS#8 DER, base64url.
    private_pkcs8: String,
    /// Uncompressed point, base64url.
    public_key: String,
    created_at: maestro_protocol::Millis,
}

/// A loaded key pair, ready to sign.
#[derive(Clone)]
pub struct Vapid {
    public_key: String,
    signing: EncodingKey,
    /// The key of notification action tokens ([`super::actions`]), derived from the private
    /// key: every server sharing the store has it, nobody else does.
    action_key: [u8; 32],
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

impl Vapid {
    /// The public key, base64url (the `k=` of the header and the browser's
    /// `applicationServerKey`).
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// `Authorization: vapid t=<JWT>, k=<public key>` for a push to an endpoint of `origin`
    /// (`https://push.example.net`), signed ES256, valid [`SIGNATURE_TTL_SECS`].
    pub fn authorization(&self, origin: &str, contact: &str) -> Result<String> {
        let now = u64::try_from(now_ms() / 1000).unwrap_or(0);
        let claims = Claims {
            aud: origin,
            exp: now + SIGNATURE_TTL_SECS,
            sub: contact,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &self.signing)
            .map_err(|e| Error::Internal(format!("cannot sign a VAPID token: {e}")))?;
        Ok(format!("vapid t={token}, k={}", self.public_key))
    }

    /// The key action tokens are signed with.
    pub fn action_key(&self) -> &[u8; 32] {
        &self.action_key
    }

    fn from_stored(stored: &Stored) -> Result<Self> {
        let der = B64
            .decode(&stored.private_pkcs8)
            .map_err(|e| Error::Storage(format!("corrupt VAPID key: {e}")))?;
        let action_key = {
            use sha2::Digest as _;
            let mut h = sha2::Sha256::new();
            h.update(b"maestro push action key v1\n");
            h.update(&der);
            h.finalize().into()
        };
        Ok(Self {
            public_key: stored.public_key.clone(),
            signing: EncodingKey::from_ec_der(&der),
            action_key,
        })
    }
}

/// A fresh key pair.
fn generate() -> Result<Stored> {
    let secret = loop {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .map_err(|e| Error::Internal(format!("no system randomness: {e}")))?;
        // Out of range (≥ the group order, or zero) with probability ~2^-32: draw again.
        if let Ok(key) = p256::SecretKey::from_slice(&bytes) {
            break key;
        }
    };
    let der = secret
        .to_pkcs8_der()
        .map_err(|e| Error::Internal(format!("cannot encode the VAPID key: {e}")))?;
    let point = secret.public_key().to_encoded_point(false);
    Ok(Stored {
        private_pkcs8: B64.encode(der.as_bytes()),
        public_key: B64.encode(point.as_bytes()),
        created_at: now_ms(),
    })
}

/// The store's key pair, made now if there is none. Servers starting together agree: the key
/// is inserted only if absent, and the loser of that race reads the winner's.
pub async fn ensure(domain: &Domain) -> Result<Vapid> {
    if let Some(stored) = domain
        .reader()?
        .get::<Stored>(Collection::VapidKeys, RECORD)?
    {
        return Vapid::from_stored(&stored);
    }
    let fresh = generate()?;
    let inserted = fresh.clone();
    match transact(&*domain.store, move |tx| {
        tx.insert(Collection::VapidKeys, RECORD, None, &inserted);
        Ok(())
    })
    .await
    {
        Ok(()) => {
            tracing::info!(public_key = %fresh.public_key, "made the Web Push (VAPID) key");
            Vapid::from_stored(&fresh)
        }
        Err(Error::Conflict(_)) => {
            let stored: Stored = domain
                .reader()?
                .get(Collection::VapidKeys, RECORD)?
                .ok_or_else(|| Error::Internal("the VAPID key vanished".into()))?;
            Vapid::from_stored(&stored)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_with_the_public_key() {
        let stored = generate().unwrap();
        let vapid = Vapid::from_stored(&stored).unwrap();
        let point = B64.decode(vapid.public_key()).unwrap();
        assert_eq!(point.len(), 65);
        assert_eq!(point[0], 4, "uncompressed");
        let header = vapid
            .authorization("https://push.example.net", "mailto:a@example.net")
            .unwrap();
        let (t, k) = header
            .strip_prefix("vapid t=")
            .and_then(|rest| rest.split_once(", k="))
            .unwrap();
        assert_eq!(k, vapid.public_key());
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://push.example.net"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            t,
            &jsonwebtoken::DecodingKey::from_ec_der(&point),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "mailto:a@example.net");
        // Another key does not verify it.
        let other = B64.decode(generate().unwrap().public_key).unwrap();
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                t,
                &jsonwebtoken::DecodingKey::from_ec_der(&other),
                &validation
            )
            .is_err()
        );
    }
}
