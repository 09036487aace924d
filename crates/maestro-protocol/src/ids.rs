//! Identifier rules shared by the server and clients.
//!
//! Ids end up in storage keys and, for some upstream clients, in file names, so every id that
//! comes from outside is checked against one rule before it is used anywhere.

/// Longest id accepted from a client.
pub const MAX_ID_LEN: usize = 128;

/// Whether `id` is a well-formed id: 1..=128 characters from `[A-Za-z0-9_-]`.
///
/// This is the rule upstream applied to mail routes only; Maestro applies it to every id.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Id prefixes, as upstream generates them.
pub mod prefix {
    pub const PROJECT: &str = "proj";
    pub const TASK: &str = "task";
    pub const SESSION: &str = "sess";
    pub const EVENT: &str = "evt";
    pub const DOC: &str = "doc";
    pub const MAIL: &str = "mail";
    pub const TEAM_MEMBER: &str = "tm";
    pub const REVIEW_COMMENT: &str = "rvc";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_generated_and_client_ids() {
        assert!(is_valid_id("task_1795561507742_9stvok5ik"));
        assert!(is_valid_id("evt-1739800000000"));
        assert!(is_valid_id("A"));
    }

    #[test]
    fn rejects_path_tricks_and_oversize() {
        for bad in ["", "../etc", "a/b", "a.b", "a b", "%2e%2e", "é"] {
            assert!(!is_valid_id(bad), "{bad:?} should be rejected");
        }
        assert!(is_valid_id(&"x".repeat(MAX_ID_LEN)));
        assert!(!is_valid_id(&"x".repeat(MAX_ID_LEN + 1)));
    }
}
