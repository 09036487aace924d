//! Small helpers: clock and id generation.

use std::time::{SystemTime, UNIX_EPOCH};

use maestro_protocol::Millis;

/// Now, in epoch milliseconds.
pub fn now_ms() -> Millis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as Millis)
        .unwrap_or(0)
}

/// A new id in upstream's format, `<prefix>_<ms>_<9 base-36 chars>`.
///
/// The random part has 36^9 ≈ 10^14 values per millisecond; creation paths additionally check
/// that the id is free inside their transaction, so a collision cannot overwrite anything.
pub fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let suffix: String = (0..9)
        .map(|_| ALPHABET[fastrand::usize(..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{}_{suffix}", now_ms())
}

/// The server's host name, recorded on sessions as upstream did.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// The platform name in Node's spelling (`darwin`, `linux`, `win32`), as upstream reported it.
pub fn platform() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        "windows" => "win32",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_upstream_shape() {
        let id = new_id("task");
        let parts: Vec<_> = id.split('_').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0], "task");
        assert!(parts[1].parse::<i64>().is_ok());
        assert_eq!(parts[2].len(), 9);
        assert!(maestro_protocol::ids::is_valid_id(&id));
        assert_ne!(new_id("task"), new_id("task"));
    }
}
