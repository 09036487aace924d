//! Hashing, below every layer that needs it: `auth`, `domain` and `push` use this module and
//! it uses none of them.
//!
//! Two kinds, for two jobs:
//! - [`sha256_hex`], a plain digest, for ids derived from content (an approval's idempotency
//!   key, a push subscription's record id): nothing secret goes in, anyone may recompute them.
//! - [`HashKey`], an HMAC-SHA256 key, for what stands in for a secret in the store: the hashes
//!   of tokens and of pairing codes. The key lives in a file of `DATA_DIR` (0600), never in the
//!   store, so a copy of the database alone (a backup, a Redis dump) gives nobody a way to test
//!   guesses at a short pairing code, whose ~40 bits a plain hash would give up in minutes.
//!
//! Keyed hashes are stored as `k1:<hex>`, so a record from before the key (a plain SHA-256 in
//! hex) is told apart and still accepted once ([`Match::Legacy`]); its owner rehashes it.

use std::fmt;
use std::io;
use std::path::Path;

use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::files;

/// The key's file in `DATA_DIR` (unless `HASH_KEY_FILE` names another).
pub const HASH_KEY_FILE: &str = "hash-key";
/// What a keyed hash starts with.
const KEYED_PREFIX: &str = "k1:";
/// Bytes of key.
const KEY_LEN: usize = 32;

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

/// Hex SHA-256, for ids derived from content. Never for a secret: use [`HashKey::digest`].
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// How a presented secret compared with a stored hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Match {
    /// It matches a keyed hash.
    Keyed,
    /// It matches a hash stored before the key existed (plain SHA-256): accept it, and store
    /// the keyed hash instead.
    Legacy,
    /// It does not match.
    No,
}

impl Match {
    pub fn ok(self) -> bool {
        self != Self::No
    }
}

/// The server's hashing key (HMAC-SHA256). Its `Debug` shows no key material.
#[derive(Clone)]
pub struct HashKey {
    key: [u8; KEY_LEN],
}

impl fmt::Debug for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKey(..)")
    }
}

impl HashKey {
    /// A key from its bytes (tests, and [`Self::load_or_create`]).
    pub fn from_bytes(key: [u8; KEY_LEN]) -> Self {
        Self { key }
    }

    /// Reads the key at `path`, or makes one there: 256 random bits in hex, written 0600 and
    /// atomically ([`files::create_new_atomic`]), so two servers starting on the same file at
    /// once end up with the same key. An existing file is narrowed to 0600.
    pub fn load_or_create(path: &Path) -> io::Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                files::ensure_private_file(path)?;
                Self::parse(&text).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} does not hold a hash key (64 hex digits)",
                            path.display()
                        ),
                    )
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                getrandom::fill(&mut key).map_err(io::Error::other)?;
                if files::create_new_atomic(path, hex(&key).as_bytes(), files::PRIVATE_FILE)? {
                    Ok(Self::from_bytes(key))
                } else {
                    // Another server made it first: use that one.
                    Self::load_or_create(path)
                }
            }
            Err(e) => Err(e),
        }
    }

    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != KEY_LEN * 2 || !text.is_ascii() {
            return None;
        }
        let mut key = [0u8; KEY_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self::from_bytes(key))
    }

    /// The keyed hash of `secret` for `purpose` (`token`, `pairing`…: the same secret hashes
    /// differently per purpose), as stored: `k1:<hex>`.
    pub fn digest(&self, purpose: &str, secret: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(secret);
        format!("{KEYED_PREFIX}{}", hex(&mac.finalize().into_bytes()))
    }

    /// Compares `secret` with a `stored` hash in constant time: a keyed one, or a plain SHA-256
    /// from before the key.
    pub fn check(&self, stored: &str, purpose: &str, secret: &[u8]) -> Match {
        let (expected, kind) = if stored.starts_with(KEYED_PREFIX) {
            (self.digest(purpose, secret), Match::Keyed)
        } else {
            (sha256_hex(secret), Match::Legacy)
        };
        if bool::from(expected.as_bytes().ct_eq(stored.as_bytes())) {
            kind
        } else {
            Match::No
        }
    }

    /// Whether `stored` was made with a key (else it is a plain SHA-256 from before).
    pub fn is_keyed(stored: &str) -> bool {
        stored.starts_with(KEYED_PREFIX)
    }

    /// Names this key without revealing it: servers sharing a store compare fingerprints, so
    /// one started with another key refuses to start instead of refusing every credential.
    pub fn fingerprint(&self) -> String {
        self.digest("fingerprint", b"maestro hash key")[..KEYED_PREFIX.len() + 32].to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_the_standard_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn keyed_hashes_depend_on_key_purpose_and_secret() {
        let a = HashKey::from_bytes([1; 32]);
        let b = HashKey::from_bytes([2; 32]);
        let h = a.digest("token", b"secret");
        assert!(h.starts_with("k1:") && h.len() == 3 + 64, "{h}");
        assert_ne!(h, b.digest("token", b"secret"));
        assert_ne!(h, a.digest("pairing", b"secret"));
        assert_ne!(h, a.digest("token", b"secreT"));
        assert_eq!(a.check(&h, "token", b"secret"), Match::Keyed);
        assert_eq!(b.check(&h, "token", b"secret"), Match::No);
        assert_eq!(a.check(&h, "token", b"other"), Match::No);
    }

    #[test]
    fn a_plain_hash_from_before_the_key_is_accepted_as_legacy() {
        let key = HashKey::from_bytes([7; 32]);
        let old = sha256_hex(b"tok_1.s");
        assert_eq!(key.check(&old, "token", b"tok_1.s"), Match::Legacy);
        assert_eq!(key.check(&old, "token", b"tok_1.t"), Match::No);
        assert!(!HashKey::is_keyed(&old));
    }

    #[cfg(unix)]
    #[test]
    fn the_key_file_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HASH_KEY_FILE);
        let first = HashKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = HashKey::load_or_create(&path).unwrap();
        assert_eq!(first.fingerprint(), again.fingerprint());
        assert_eq!(format!("{first:?}"), "HashKey(..)");
        std::fs::write(&path, "not a key").unwrap();
        assert!(HashKey::load_or_create(&path).is_err());
    }
}
