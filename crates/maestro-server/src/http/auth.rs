//! Who may use the server.
//!
//! Credentials (tokens, device pairing) have not landed yet. Until they do, one rule decides
//! for HTTP requests and socket handshakes alike: [`local_trust`]. When the credential check
//! arrives it replaces this function, and every caller (the HTTP extractor, the Socket.IO
//! connect middleware) gets it at once.

use std::net::SocketAddr;

use axum::http::{HeaderMap, header};

use super::origin_allowed;
use crate::config::Config;

/// Whether a request (or a socket's handshake request) is trusted without a credential.
///
/// Today: when it carries no `Origin` (the CLI, the desktop app, tests), or an `Origin` on
/// the allowlist ([`origin_allowed`]). A page on any other site never is, so a web page the
/// developer happens to visit cannot drive the server.
///
/// `peer` is not consulted yet; the credential check that replaces this will use it (loopback
/// peers without proxy headers keep local trust, see the architecture's security model).
pub fn local_trust(peer: Option<SocketAddr>, headers: &HeaderMap, config: &Config) -> bool {
    let _ = peer;
    match headers.get(header::ORIGIN) {
        None => true,
        Some(origin) => origin
            .to_str()
            .is_ok_and(|origin| origin_allowed(origin, config)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_trust_follows_the_origin() {
        let config = Config::for_dir(std::path::Path::new("/tmp"));
        let mut headers = HeaderMap::new();
        assert!(local_trust(None, &headers, &config));
        headers.insert(header::ORIGIN, "http://localhost:5173".parse().unwrap());
        assert!(local_trust(None, &headers, &config));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!local_trust(None, &headers, &config));
    }
}
