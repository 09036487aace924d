//! Small helpers: clock, id generation, (in [`files`]) the one atomic, private file write
//! the server and the CLI share, and (in [`hash`]) the hashing every layer shares.

pub mod files;
pub mod hash;

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

pub use maestro_protocol::one_line;

/// The server's host name, recorded on sessions as upstream did.
pub fn hostname() -> String {
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".into())
}

/// This machine's id: `/etc/machine-id` (systemd), `/var/lib/dbus/machine-id`, else the host
/// name; reduced to id characters so it can name keys.
pub fn machine_id() -> String {
    let raw = ["/etc/machine-id", "/var/lib/dbus/machine-id"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(hostname);
    let id: String = raw
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(64)
        .collect();
    if id.is_empty() { "unknown".into() } else { id }
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

/// Epoch milliseconds as ISO-8601 UTC with milliseconds, e.g. `2026-11-24T23:05:10.944Z`.
pub fn iso8601(ms: Millis) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod iso_tests {
    use super::iso8601;

    #[test]
    fn formats_known_instants() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(1_795_561_510_944), "2026-11-24T23:05:10.944Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
    }
}
