//! Credentials in the store: API tokens, paired devices and pairing codes.
//!
//! A token is `<id>.<secret>`: the id (`tok_…` or `dev_…`) finds the record in one read, and
//! the record holds only a keyed hash of the whole token (HMAC-SHA256 under the server's
//! [`HashKey`], kept in `DATA_DIR`, not in the store), compared in constant time. The secret
//! is 256 random bits, so no salt or stretching is needed: there is nothing to guess. Records
//! live in the store like every entity, so every server sharing a Redis sees a revocation on
//! its very next request. A record from before the key (a plain SHA-256) is still accepted,
//! and its hash is replaced by the keyed one on that use ([`touch`]).
//!
//! Pairing: `create_pairing` stores the keyed hashes of a long code (for the URL) and a short
//! one (for typing); `pair` exchanges either for a new device credential, once, in one
//! transaction, so two phones racing with the same code get one device between them. A wrong
//! code counts against every pending pairing, and five wrong tries burn their short codes:
//! the short code's ~40 bits are safe because nobody gets more than five guesses at it. The
//! long code (256 bits) cannot be guessed, so misses never burn it: a stranger sending wrong
//! codes cannot keep the owner from pairing by the QR code or the link.

use maestro_protocol::{
    CREDENTIAL_REVOKED, CallerKind, CreatePairing, CreateToken, CredentialRevoked, DeviceInfo,
    GLOBAL_SCOPE, Millis, Paired, PairingCreated, Scope, TokenCreated, TokenInfo,
};
use serde::{Deserialize, Serialize};

use crate::domain::Domain;
use crate::error::{Error, Result};
use crate::ports::{Collection, ReaderExt, TxnExt, transact};
use crate::util::hash::{HashKey, Match, sha256_hex};
use crate::util::{files, new_id, now_ms};

/// Wrong codes that burn the pending pairings' short codes.
pub const PAIRING_MAX_FAILURES: u32 = 5;
/// What token hashes are keyed for ([`HashKey::digest`]'s purpose).
const TOKEN_PURPOSE: &str = "token";
/// What pairing-code hashes are keyed for.
const PAIRING_PURPOSE: &str = "pairing";
/// The id of the one record in [`Collection::HashKey`].
const HASH_KEY_RECORD: &str = "current";
/// Characters of a short pairing code: no 0/O, 1/I/L look-alikes.
const SHORT_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
/// Length of a short pairing code.
const SHORT_LEN: usize = 8;
/// How often `last used` is written at most, per credential.
const TOUCH_EVERY_MS: Millis = 60_000;
/// Longest name kept.
const MAX_NAME: usize = 100;

/// A stored credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Credential {
    pub id: String,
    pub kind: CallerKind,
    pub name: String,
    pub scope: Scope,
    /// Keyed hash of the whole token (`k1:<hex>`; a plain hex SHA-256 before the key).
    pub hash: String,
    pub created_at: Millis,
    pub expires_at: Option<Millis>,
    pub last_used_at: Option<Millis>,
    pub last_address: Option<String>,
}

impl Credential {
    fn token_info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            created_at: self.created_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            last_address: self.last_address.clone(),
        }
    }

    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            id: self.id.clone(),
            name: self.name.clone(),
            scope: self.scope,
            paired_at: self.created_at,
            last_seen_at: self.last_used_at,
            last_address: self.last_address.clone(),
        }
    }
}

/// A pending pairing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Pairing {
    id: String,
    code_hash: String,
    /// `None` once wrong codes burned the short code.
    short_hash: Option<String>,
    scope: Scope,
    name: Option<String>,
    created_at: Millis,
    expires_at: Millis,
    failures: u32,
}

/// Why a presented token was not accepted (for the audit trail; the client only learns 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    Unknown,
    Expired,
}

impl Rejected {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed_token",
            Self::Unknown => "unknown_token",
            Self::Expired => "expired_token",
        }
    }
}

/// 32 random bytes as unpadded base64url (43 characters).
fn random_secret() -> Result<String> {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no system randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn random_short_code() -> Result<String> {
    let mut bytes = [0u8; SHORT_LEN];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no system randomness: {e}")))?;
    // 256 is not a multiple of 31: reject the top values so every character is equally likely.
    let limit = 256 - 256 % SHORT_ALPHABET.len();
    let mut out = String::with_capacity(SHORT_LEN);
    let mut pool = bytes.to_vec();
    while out.len() < SHORT_LEN {
        if pool.is_empty() {
            let mut more = [0u8; SHORT_LEN];
            getrandom::fill(&mut more)
                .map_err(|e| Error::Internal(format!("no system randomness: {e}")))?;
            pool.extend_from_slice(&more);
        }
        let b = pool.remove(0) as usize;
        if b < limit {
            out.push(SHORT_ALPHABET[b % SHORT_ALPHABET.len()] as char);
        }
    }
    Ok(out)
}

/// A short code as typed: case, spaces and dashes do not matter.
fn normalize_short(code: &str) -> String {
    code.chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The CSRF value of a cookie-carried token: derived, so nothing more is stored, and
/// unguessable without the token.
pub fn csrf_for(token: &str) -> String {
    sha256_hex(format!("maestro-csrf:{token}").as_bytes())[..32].to_owned()
}

fn clean_name(name: Option<&str>, default: &str) -> Result<String> {
    let name = name
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .unwrap_or(default);
    if name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(Error::validation(format!(
            "name must be at most {MAX_NAME} printable characters"
        )));
    }
    Ok(name.to_owned())
}

/// Makes a credential and its token; the record is inserted by the caller's transaction.
fn mint(
    key: &HashKey,
    kind: CallerKind,
    name: String,
    scope: Scope,
    expires_at: Option<Millis>,
) -> Result<(Credential, String)> {
    let prefix = match kind {
        CallerKind::Device => "dev",
        _ => "tok",
    };
    let id = new_id(prefix);
    let token = format!("{id}.{}", random_secret()?);
    let credential = Credential {
        id,
        kind,
        name,
        scope,
        hash: key.digest(TOKEN_PURPOSE, token.as_bytes()),
        created_at: now_ms(),
        expires_at,
        last_used_at: None,
        last_address: None,
    };
    Ok((credential, token))
}

/// `POST /api/auth/tokens`.
pub async fn create_token(domain: &Domain, req: CreateToken) -> Result<TokenCreated> {
    let scope = req.scope.ok_or_else(|| {
        Error::validation("scope is required: one of read, respond, operate, admin, runner")
    })?;
    let name = clean_name(req.name.as_deref(), "")?;
    if name.is_empty() {
        return Err(Error::validation("name is required"));
    }
    let expires_at = match req.expires_in_days {
        Some(0) => return Err(Error::validation("expiresInDays must be at least 1")),
        Some(days) if days > 3650 => {
            return Err(Error::validation("expiresInDays must be at most 3650"));
        }
        Some(days) => Some(now_ms() + Millis::from(days) * 86_400_000),
        None => None,
    };
    let (credential, token) = mint(&domain.hash_key, CallerKind::Token, name, scope, expires_at)?;
    let stored = credential.clone();
    transact(&*domain.store, move |tx| {
        tx.insert(Collection::Credentials, &stored.id, None, &stored);
        Ok(())
    })
    .await?;
    tracing::info!(target: "maestro::audit", event = "token_created", token.id = %credential.id, scope = %scope, name = %credential.name);
    Ok(TokenCreated {
        id: credential.id,
        token,
        scope,
        name: credential.name,
        created_at: credential.created_at,
        expires_at,
    })
}

fn all(domain: &Domain) -> Result<Vec<Credential>> {
    domain.reader()?.list(Collection::Credentials, None)
}

/// `GET /api/auth/tokens`: every API token, oldest first.
pub fn list_tokens(domain: &Domain) -> Result<Vec<TokenInfo>> {
    Ok(all(domain)?
        .iter()
        .filter(|c| c.kind == CallerKind::Token)
        .map(Credential::token_info)
        .collect())
}

/// `GET /api/auth/devices`: every paired device, oldest first.
pub fn list_devices(domain: &Domain) -> Result<Vec<DeviceInfo>> {
    Ok(all(domain)?
        .iter()
        .filter(|c| c.kind == CallerKind::Device)
        .map(Credential::device_info)
        .collect())
}

/// Deletes a token or device and tells every server (`auth:revoked`), which closes the sockets
/// it opened. 404 when there is no such credential of that kind.
pub async fn revoke(domain: &Domain, kind: CallerKind, id: String) -> Result<Credential> {
    crate::domain::check_id("id", &id)?;
    let resource = match kind {
        CallerKind::Device => "Device",
        _ => "Token",
    };
    let revoked = transact(&*domain.store, move |tx| {
        let credential: Credential = tx
            .get(Collection::Credentials, &id)?
            .filter(|c: &Credential| c.kind == kind)
            .ok_or_else(|| Error::not_found(resource, &id))?;
        tx.delete(Collection::Credentials, &id);
        // Its notifications end with it, in the same commit.
        crate::push::subscriptions::delete_for_owner(tx, &id)?;
        tx.emit(
            GLOBAL_SCOPE,
            CREDENTIAL_REVOKED,
            &CredentialRevoked { id: id.clone() },
            None,
        );
        Ok(credential)
    })
    .await?;
    tracing::info!(target: "maestro::audit", event = match kind { CallerKind::Device => "device_revoked", _ => "token_revoked" }, credential.id = %revoked.id, name = %revoked.name);
    Ok(revoked)
}

/// The credential a token stands for, if it is genuine and current.
pub fn verify(domain: &Domain, token: &str) -> Result<Credential, VerifyError> {
    let (id, secret) = token.split_once('.').ok_or(Rejected::Malformed)?;
    if secret.is_empty() || !maestro_protocol::ids::is_valid_id(id) {
        return Err(Rejected::Malformed.into());
    }
    let credential: Credential = domain
        .reader()
        .and_then(|mut r| r.get(Collection::Credentials, id))
        .map_err(VerifyError::Store)?
        .ok_or(Rejected::Unknown)?;
    if !domain
        .hash_key
        .check(&credential.hash, TOKEN_PURPOSE, token.as_bytes())
        .ok()
    {
        return Err(Rejected::Unknown.into());
    }
    if credential.expires_at.is_some_and(|at| at <= now_ms()) {
        return Err(Rejected::Expired.into());
    }
    Ok(credential)
}

/// Why [`verify`] failed.
#[derive(Debug)]
pub enum VerifyError {
    /// The token is not a current credential.
    Rejected(Rejected),
    /// The store could not be read (the request gets 503, not 401).
    Store(Error),
}

impl From<Rejected> for VerifyError {
    fn from(r: Rejected) -> Self {
        Self::Rejected(r)
    }
}

/// Records that `credential` was just used from `address`, at most once a minute per
/// credential unless the address changed, and replaces a hash from before the key with the
/// keyed hash of `token` (which [`verify`] just accepted). A failure is logged, never fails
/// the request.
pub async fn touch(domain: &Domain, credential: &Credential, token: &str, address: Option<String>) {
    let now = now_ms();
    let fresh = credential
        .last_used_at
        .is_some_and(|at| now - at < TOUCH_EVERY_MS);
    let rehash = (!HashKey::is_keyed(&credential.hash))
        .then(|| domain.hash_key.digest(TOKEN_PURPOSE, token.as_bytes()));
    if fresh && credential.last_address == address && rehash.is_none() {
        return;
    }
    let id = credential.id.clone();
    let old_hash = credential.hash.clone();
    let result = transact(&*domain.store, move |tx| {
        // Revoked meanwhile: nothing to record.
        if let Some(mut c) = tx.get::<Credential>(Collection::Credentials, &id)? {
            c.last_used_at = Some(now);
            c.last_address = address.clone();
            if let Some(keyed) = &rehash
                && c.hash == old_hash
            {
                c.hash = keyed.clone();
            }
            tx.put(Collection::Credentials, &id, None, &c);
        }
        Ok(())
    })
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "cannot record a credential's last use");
    }
}

/// `POST /api/auth/pairings`: a single-use code for a device of `scope` (at most the
/// caller's), valid for `ttl_ms`. `base_url` is the public URL the phone opens.
pub async fn create_pairing(
    domain: &Domain,
    req: CreatePairing,
    caller: Scope,
    base_url: &str,
    ttl_ms: Millis,
) -> Result<PairingCreated> {
    let scope = req.scope.unwrap_or(Scope::Respond);
    if scope == Scope::Runner {
        return Err(Error::validation(
            "a phone or browser cannot be a runner: make a token for `maestro runner` instead \
             (maestro token create --scope runner)",
        ));
    }
    if !caller.includes(scope) {
        return Err(Error::Forbidden(format!(
            "cannot pair a device with scope '{scope}' from a credential with scope '{caller}'"
        )));
    }
    let name = match req.name.as_deref() {
        Some(n) => Some(clean_name(Some(n), "")?).filter(|n| !n.is_empty()),
        None => None,
    };
    let code = random_secret()?;
    let short = random_short_code()?;
    let now = now_ms();
    let key = &domain.hash_key;
    let pairing = Pairing {
        id: new_id("pair"),
        code_hash: key.digest(PAIRING_PURPOSE, code.as_bytes()),
        short_hash: Some(key.digest(PAIRING_PURPOSE, short.as_bytes())),
        scope,
        name,
        created_at: now,
        expires_at: now + ttl_ms,
        failures: 0,
    };
    let expires_at = pairing.expires_at;
    transact(&*domain.store, move |tx| {
        // Old codes are swept here, so the collection stays as small as the codes in flight.
        for old in tx.list::<Pairing>(Collection::Pairings, None)? {
            if old.expires_at <= now {
                tx.delete(Collection::Pairings, &old.id);
            }
        }
        tx.insert(Collection::Pairings, &pairing.id, None, &pairing);
        Ok(())
    })
    .await?;
    tracing::info!(target: "maestro::audit", event = "pairing_created", scope = %scope, expires_at);
    let base = base_url.trim_end_matches('/');
    Ok(PairingCreated {
        url: format!("{base}/pair#c={code}"),
        code,
        short_code: format!("{}-{}", &short[..4], &short[4..]),
        scope,
        expires_at,
    })
}

/// What a pairing attempt came to.
pub enum PairOutcome {
    Paired(Paired),
    /// Wrong, used or expired code; `burned` pairings lost their short code by this failure.
    Refused {
        burned: usize,
    },
}

/// `POST /api/auth/pair`: exchanges a code (long or short) for a device credential.
pub async fn pair(domain: &Domain, code: &str, device_name: Option<&str>) -> Result<PairOutcome> {
    let code = code.trim().to_owned();
    if code.is_empty() || code.len() > 200 {
        return Err(Error::validation("code is required"));
    }
    let device_name = match device_name {
        Some(n) => Some(clean_name(Some(n), "")?).filter(|n| !n.is_empty()),
        None => None,
    };
    let short_code = normalize_short(&code);
    let key = domain.hash_key.clone();
    // Minted outside the body (which may run more than once): one device per exchange.
    let secret_device = mint(&key, CallerKind::Device, String::new(), Scope::Read, None)?;
    let outcome = transact(&*domain.store, move |tx| {
        let now = now_ms();
        let mut found = None;
        let mut pending = Vec::new();
        for p in tx.list::<Pairing>(Collection::Pairings, None)? {
            if p.expires_at <= now {
                tx.delete(Collection::Pairings, &p.id);
                continue;
            }
            let long = key.check(&p.code_hash, PAIRING_PURPOSE, code.as_bytes());
            let short = p.short_hash.as_deref().map_or(Match::No, |h| {
                key.check(h, PAIRING_PURPOSE, short_code.as_bytes())
            });
            if long.ok() || short.ok() {
                found = Some(p);
            } else {
                pending.push(p);
            }
        }
        let Some(pairing) = found else {
            // A miss counts against every short code still usable; the long codes stay.
            let mut burned = 0;
            for mut p in pending.into_iter().filter(|p| p.short_hash.is_some()) {
                p.failures += 1;
                if p.failures >= PAIRING_MAX_FAILURES {
                    p.short_hash = None;
                    burned += 1;
                }
                tx.put(Collection::Pairings, &p.id, None, &p);
            }
            return Ok((None, burned));
        };
        tx.delete(Collection::Pairings, &pairing.id);
        let (mut device, token) = secret_device.clone();
        device.scope = pairing.scope;
        device.name = device_name
            .clone()
            .or(pairing.name.clone())
            .unwrap_or_else(|| "Phone".to_owned());
        tx.insert(Collection::Credentials, &device.id, None, &device);
        Ok((Some((device, token)), 0))
    })
    .await?;
    Ok(match outcome {
        (Some((device, token)), _) => {
            tracing::info!(target: "maestro::audit", event = "device_paired", device.id = %device.id, name = %device.name, scope = %device.scope);
            PairOutcome::Paired(Paired {
                csrf: csrf_for(&token),
                token: Some(token),
                device_id: device.id,
                device_name: device.name,
                scope: device.scope,
            })
        }
        (None, burned) => PairOutcome::Refused { burned },
    })
}

/// Where the owner token lives: readable by this machine's user only.
pub const OWNER_TOKEN_FILE: &str = "owner-token";

/// Replaces this data directory's owner token: an `admin` token whose secret is written to
/// `$DATA_DIR/owner-token` (mode 0600), so the `maestro` CLI on this machine can act when
/// `AUTH=required` takes local trust away. Whoever can read the data directory can read the
/// database anyway, so the file grants nothing new. The previous owner token is revoked.
pub async fn rotate_owner_token(domain: &Domain, data_dir: &std::path::Path) -> Result<String> {
    let path = data_dir.join(OWNER_TOKEN_FILE);
    let previous = std::fs::read_to_string(&path)
        .ok()
        .and_then(|t| t.trim().split_once('.').map(|(id, _)| id.to_owned()))
        .filter(|id| maestro_protocol::ids::is_valid_id(id));
    let name = format!("owner ({})", domain.info.hostname);
    let (credential, token) = mint(
        &domain.hash_key,
        CallerKind::Token,
        name,
        Scope::Admin,
        None,
    )?;
    transact(&*domain.store, move |tx| {
        if let Some(id) = &previous {
            tx.delete(Collection::Credentials, id);
            crate::push::subscriptions::delete_for_owner(tx, id)?;
        }
        tx.insert(Collection::Credentials, &credential.id, None, &credential);
        Ok(())
    })
    .await?;
    let shown = path.display().to_string();
    files::write_atomic_async(path, token.clone().into_bytes(), files::PRIVATE_FILE)
        .await
        .map_err(|e| Error::Internal(format!("cannot write {shown}: {e}")))?;
    Ok(token)
}

/// Makes sure this server hashes with the key the store's credentials were hashed with.
/// The store keeps the key's fingerprint (never the key); a server started with another key
/// (a second server on a shared Redis without a copy of `HASH_KEY_FILE`) would refuse every
/// credential, so it refuses to start instead and says what to copy.
pub async fn check_hash_key(domain: &Domain, key_path: &std::path::Path) -> Result<()> {
    let mine = domain.hash_key.fingerprint();
    let theirs = {
        let fingerprint = mine.clone();
        transact(&*domain.store, move |tx| {
            match tx.get::<KeyFingerprint>(Collection::HashKey, HASH_KEY_RECORD)? {
                Some(stored) => Ok(stored.fingerprint),
                None => {
                    tx.insert(
                        Collection::HashKey,
                        HASH_KEY_RECORD,
                        None,
                        &KeyFingerprint {
                            fingerprint: fingerprint.clone(),
                        },
                    );
                    Ok(fingerprint.clone())
                }
            }
        })
        .await?
    };
    if theirs != mine {
        return Err(Error::Internal(format!(
            "the credentials in this store were hashed with another key than {}: servers \
             sharing a store must share the key file (copy it from a server already using \
             this store, or point HASH_KEY_FILE at a shared copy)",
            key_path.display()
        )));
    }
    Ok(())
}

/// The stored fingerprint of the hash key ([`check_hash_key`]).
#[derive(Debug, Serialize, Deserialize)]
struct KeyFingerprint {
    fingerprint: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_codes_avoid_look_alikes() {
        for _ in 0..200 {
            let code = random_short_code().unwrap();
            assert_eq!(code.len(), SHORT_LEN);
            assert!(code.bytes().all(|b| SHORT_ALPHABET.contains(&b)), "{code}");
            assert!(!code.contains(['0', 'O', '1', 'I', 'L']));
        }
        assert_eq!(normalize_short("abcd-efgh"), "ABCDEFGH");
        assert_eq!(normalize_short(" AB CD-EF GH "), "ABCDEFGH");
    }

    #[test]
    fn secrets_are_256_bits() {
        let a = random_secret().unwrap();
        assert_eq!(a.len(), 43);
        assert_ne!(a, random_secret().unwrap());
    }

    #[test]
    fn csrf_depends_on_the_token() {
        assert_ne!(csrf_for("a.b"), csrf_for("a.c"));
        assert_eq!(csrf_for("a.b"), csrf_for("a.b"));
        assert_eq!(csrf_for("a.b").len(), 32);
    }
}
