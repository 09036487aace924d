//! Cloudflare Access: verifying the `Cf-Access-Jwt-Assertion` the Access edge adds to every
//! request it lets through.
//!
//! With Access in front of the tunnel, a request reaching the server has passed the team's login
//! policy, and the edge says so with a JWT signed by the team's keys. The server checks that JWT
//! itself rather than trusting the header's presence, because anyone who learns the tunnel's
//! origin could otherwise send the header by hand.
//!
//! What is accepted, and why:
//! - RS256 only. The algorithm is read from the header and checked *before* any key is looked
//!   up, so `alg: none` and HS256 signed with the public key (the classic key-confusion attack)
//!   never reach the signature code.
//! - The key is the team's JWKS entry named by the token's `kid`. Keys are cached; an unknown
//!   `kid` triggers a refetch (Cloudflare publishes the next key before signing with it), at most
//!   once per [`REFETCH_INTERVAL`] so a stream of forged `kid`s cannot turn every request into a
//!   request to Cloudflare, and concurrent refetches coalesce into one. The cache is also
//!   refreshed after [`MAX_KEY_AGE`] so a key Cloudflare withdrew stops being accepted.
//! - `iss` must be `https://<team>.cloudflareaccess.com`, `aud` (string or array) must contain
//!   the application's tag, and `exp` / `nbf` hold with [`LEEWAY_SECS`] of clock skew.
//!
//! Signature checks and claim validation are the `jsonwebtoken` crate's (pure-Rust RustCrypto
//! backend); this module only chooses the key and the rules.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The least time between two fetches of the JWKS, whatever tokens arrive.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Cached keys older than this are refetched before use (Cloudflare rotates every six weeks
/// and withdraws old keys; an hour bounds how long a withdrawn key keeps working).
pub const MAX_KEY_AGE: Duration = Duration::from_secs(3600);
/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 60;
/// Longest token considered; Access tokens are around 1 KB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS document read; Cloudflare's holds two keys in about 2 KB.
const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Bound on one JWKS fetch, connection included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Who Cloudflare Access says made the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessIdentity {
    /// The user's email; absent for service tokens.
    pub email: Option<String>,
    /// Access's stable id of the user (empty for service tokens).
    pub sub: String,
}

/// Why a `Cf-Access-Jwt-Assertion` was refused. [`AccessError::reason`] is the short, stable
/// word for audit logs and metrics labels.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the Access token is not a well-formed JWT")]
    Malformed,
    #[error("the Access token uses algorithm {0:?}; only RS256 is accepted")]
    BadAlgorithm(String),
    #[error("the Access token is signed by a key the team does not publish")]
    UnknownKey,
    #[error("the Access token's signature does not verify")]
    BadSignature,
    #[error("the Access token has expired")]
    Expired,
    #[error("the Access token is not valid yet")]
    NotYetValid,
    #[error("the Access token is for another application")]
    BadAudience,
    #[error("the Access token was issued by another team")]
    BadIssuer,
    #[error("the Access token lacks the {0} claim")]
    MissingClaim(String),
    #[error("the Access signing keys cannot be fetched: {0}")]
    CertsUnavailable(String),
}

impl AccessError {
    /// A short machine-readable reason, for audit logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadAlgorithm(_) => "bad_algorithm",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::BadAudience => "bad_audience",
            Self::BadIssuer => "bad_issuer",
            Self::MissingClaim(_) => "missing_claim",
            Self::CertsUnavailable(_) => "certs_unavailable",
        }
    }
}

/// Verifies Cloudflare Access JWTs for one team and one application. Cheap to clone: clones
/// share the key cache.
#[derive(Clone)]
pub struct AccessVerifier {
    inner: Arc<Inner>,
    refetch_interval: Duration,
}

struct Inner {
    certs_url: String,
    validation: Validation,
    http: reqwest::Client,
    /// The keys of the last successful fetch, by `kid`. A std lock: held only to read or swap
    /// the map, never across an `.await`.
    keys: RwLock<KeyCache>,
    /// When the JWKS was last requested (successfully or not). Held across the fetch on
    /// purpose: it is what makes concurrent refetches wait for one fetch instead of each
    /// making their own.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct KeyCache {
    keys: HashMap<String, Arc<DecodingKey>>,
    fetched: Option<Instant>,
}

impl KeyCache {
    fn get(&self, kid: &str) -> Option<Arc<DecodingKey>> {
        self.keys.get(kid).cloned()
    }

    fn is_fresh(&self) -> bool {
        self.fetched.is_some_and(|t| t.elapsed() < MAX_KEY_AGE)
    }
}

impl std::fmt::Debug for AccessVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessVerifier")
            .field("certs_url", &self.inner.certs_url)
            .field("iss", &self.inner.validation.iss)
            .field("aud", &self.inner.validation.aud)
            .finish_non_exhaustive()
    }
}

/// The claims read from a verified token; the standard ones are checked by `Validation`.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    email: Option<String>,
}

/// The part of the JOSE header read before verification.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl AccessVerifier {
    /// A verifier for the Access application `aud` of team `team` (the part before
    /// `.cloudflareaccess.com`), with keys from the team's certs endpoint.
    pub fn new(team: &str, aud: &str) -> Self {
        let certs_url = format!("{}/cdn-cgi/access/certs", issuer(team));
        Self::with_certs_url(team, aud, &certs_url)
    }

    /// Like [`AccessVerifier::new`] but fetching the keys from `certs_url` (tests, self-hosted
    /// key servers). The issuer checked is still `https://<team>.cloudflareaccess.com`.
    pub fn with_certs_url(team: &str, aud: &str, certs_url: &str) -> Self {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        validation.set_audience(&[aud]);
        validation.set_issuer(&[issuer(team)]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                certs_url: certs_url.to_owned(),
                validation,
                http,
                keys: RwLock::new(KeyCache::default()),
                last_fetch: tokio::sync::Mutex::new(None),
            }),
            refetch_interval: REFETCH_INTERVAL,
        }
    }

    /// Changes the least time between two JWKS fetches from [`REFETCH_INTERVAL`] (tests use a
    /// short one to see a rotation without waiting 30 s).
    pub fn with_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// Checks `jwt` (the `Cf-Access-Jwt-Assertion` header's value) and returns who it names.
    pub async fn verify(&self, jwt: &str) -> Result<AccessIdentity, AccessError> {
        let kid = check_header(jwt)?;
        let key = self.inner.key(&kid, self.refetch_interval).await?;
        let data = jsonwebtoken::decode::<Claims>(jwt, &key, &self.inner.validation)
            .map_err(|e| map_error(e.kind()))?;
        Ok(AccessIdentity {
            email: data.claims.email.filter(|e| !e.is_empty()),
            sub: data.claims.sub,
        })
    }
}

impl Inner {
    /// The key named `kid`: from the cache, or after a (throttled, coalesced) refetch.
    async fn key(
        &self,
        kid: &str,
        refetch_interval: Duration,
    ) -> Result<Arc<DecodingKey>, AccessError> {
        let cached = {
            let cache = self.keys.read().unwrap_or_else(|e| e.into_inner());
            match cache.get(kid) {
                Some(key) if cache.is_fresh() => return Ok(key),
                other => other,
            }
        };
        // Whoever holds this lock is fetching; the others wait here and then find the keys it
        // stored, instead of fetching again.
        let mut last_fetch = self.last_fetch.lock().await;
        {
            let cache = self.keys.read().unwrap_or_else(|e| e.into_inner());
            if let Some(key) = cache.get(kid).filter(|_| cache.is_fresh()) {
                return Ok(key);
            }
        }
        if last_fetch.is_some_and(|t| t.elapsed() < refetch_interval) {
            return cached.ok_or_else(|| self.missing());
        }
        *last_fetch = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(url = %self.certs_url, keys = keys.len(), "fetched the Access signing keys");
                let mut cache = self.keys.write().unwrap_or_else(|e| e.into_inner());
                *cache = KeyCache {
                    keys,
                    fetched: Some(Instant::now()),
                };
                cache.get(kid).ok_or(AccessError::UnknownKey)
            }
            Err(e) => {
                tracing::warn!(url = %self.certs_url, error = %e, "cannot fetch the Access signing keys");
                // A stale key still beats refusing everyone while Cloudflare is unreachable.
                cached.ok_or(e)
            }
        }
    }

    /// The error for a `kid` not in the cache when no refetch is allowed yet.
    fn missing(&self) -> AccessError {
        let cache = self.keys.read().unwrap_or_else(|e| e.into_inner());
        if cache.fetched.is_none() {
            AccessError::CertsUnavailable("no successful fetch yet; retrying shortly".into())
        } else {
            AccessError::UnknownKey
        }
    }

    /// Fetches and parses the JWKS, keeping the RSA keys that have a `kid`.
    async fn fetch(&self) -> Result<HashMap<String, Arc<DecodingKey>>, AccessError> {
        let unavailable = |e: &dyn std::fmt::Display| AccessError::CertsUnavailable(e.to_string());
        let mut response = self
            .http
            .get(&self.certs_url)
            .send()
            .await
            .map_err(|e| unavailable(&e))?;
        if !response.status().is_success() {
            return Err(unavailable(&format_args!("HTTP {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(unavailable(&"the key set is too large"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(unavailable(&"the key set is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).map_err(|e| unavailable(&e))
    }
}

/// Reads the header without trusting it: only RS256 with a `kid` goes further.
fn check_header(jwt: &str) -> Result<String, AccessError> {
    if jwt.len() > MAX_TOKEN_BYTES {
        return Err(AccessError::Malformed);
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AccessError::Malformed);
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AccessError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AccessError::Malformed)?;
    if header.alg != "RS256" {
        return Err(AccessError::BadAlgorithm(header.alg));
    }
    header
        .kid
        .filter(|k| !k.is_empty())
        .ok_or(AccessError::UnknownKey)
}

/// The RSA keys of a JWKS document, by `kid`. Entries of other types, or without a `kid`, are
/// skipped rather than failing the whole set.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, Arc<DecodingKey>>, String> {
    #[derive(Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for value in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            continue;
        };
        let Some(kid) = jwk.common.key_id.clone() else {
            continue;
        };
        if !matches!(
            jwk.algorithm,
            jsonwebtoken::jwk::AlgorithmParameters::RSA(_)
        ) {
            continue;
        }
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, Arc::new(key));
        }
    }
    Ok(keys)
}

fn issuer(team: &str) -> String {
    format!("https://{team}.cloudflareaccess.com")
}

fn map_error(kind: &ErrorKind) -> AccessError {
    match kind {
        ErrorKind::ExpiredSignature => AccessError::Expired,
        ErrorKind::ImmatureSignature => AccessError::NotYetValid,
        ErrorKind::InvalidAudience => AccessError::BadAudience,
        ErrorKind::InvalidIssuer => AccessError::BadIssuer,
        ErrorKind::InvalidSignature => AccessError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AccessError::BadAlgorithm("mismatched".into())
        }
        ErrorKind::MissingRequiredClaim(claim) => AccessError::MissingClaim(claim.clone()),
        _ => AccessError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn only_rs256_with_a_kid_passes_the_header_check() {
        let token = |h: &str| format!("{}.{}.sig", b64(h), b64("{}"));
        assert_eq!(
            check_header(&token(r#"{"alg":"RS256","kid":"k1"}"#)).unwrap(),
            "k1"
        );
        for alg in ["none", "HS256", "RS512", "ES256", "PS256"] {
            let err = check_header(&token(&format!(r#"{{"alg":"{alg}","kid":"k1"}}"#)));
            assert_eq!(err.unwrap_err().reason(), "bad_algorithm", "{alg}");
        }
        let err = check_header(&token(r#"{"alg":"RS256"}"#)).unwrap_err();
        assert_eq!(err.reason(), "unknown_key");
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_key_lookup() {
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.e30.sig",
            &format!("{}.e30.sig", b64("not json")),
            &"a".repeat(MAX_TOKEN_BYTES + 1),
        ] {
            assert_eq!(
                check_header(bad).unwrap_err().reason(),
                "malformed",
                "{bad:.20}"
            );
        }
    }

    #[test]
    fn jwks_entries_that_are_not_rsa_signing_keys_are_skipped() {
        let body = br#"{"keys":[
            {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
            {"kty":"RSA","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"RSA","kid":"rsa","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"},
            {"kty":"weird"}
        ]}"#;
        let keys = parse_jwks(body).unwrap();
        assert_eq!(keys.keys().collect::<Vec<_>>(), vec!["rsa"]);
        assert!(parse_jwks(b"[]").is_err());
    }
}
