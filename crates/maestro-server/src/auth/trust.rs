//! The pure rules of the gate: which `Host`s and `Origin`s are ours, what makes a request
//! *local*, whose address a request is, and what scope a route needs. No I/O, so every rule
//! is unit-tested here.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, Method, header};
use maestro_protocol::Scope;

use super::routes::RouteScopes;
use crate::config::Config;

/// Headers a proxy (cloudflared, a reverse proxy) adds. A request carrying any of them came
/// through something that forwards other people's traffic, so it is never local, even from a
/// loopback peer.
pub const PROXY_HEADERS: [&str; 9] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "cf-connecting-ip",
    "cf-ray",
    "cf-visitor",
    "cf-access-jwt-assertion",
];

/// The host part of a `Host` header or URL authority, lower-cased, without the port; IPv6
/// keeps its brackets. `None` when it is not a plausible host.
pub fn host_name(authority: &str) -> Option<String> {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let end = rest.find(']')?;
        let after = &rest[end + 1..];
        if !(after.is_empty() || is_port(after)) {
            return None;
        }
        format!("[{}]", &rest[..end])
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) if is_port(&format!(":{port}")) => host.to_owned(),
            Some(_) => return None,
            None => authority.to_owned(),
        }
    };
    let ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.[]:_".contains(&b));
    ok.then(|| host.to_ascii_lowercase())
}

/// `:` followed by 1-5 digits.
fn is_port(s: &str) -> bool {
    s.strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The names of this machine itself.
pub fn is_local_host(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "[::1]")
}

/// The host of a URL such as `https://maestro.example.com/` (for `EXTERNAL_URL`).
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    host_name(authority)
}

/// Whether this server answers to `host` (already passed through [`host_name`]): a local name,
/// the host of a public URL (`EXTERNAL_URL`, a running tunnel's), or an `ALLOWED_HOSTS` entry. Anything else is DNS rebinding or a
/// misrouted request.
pub fn host_allowed(host: &str, config: &Config) -> bool {
    is_local_host(host)
        || config
            .public_urls()
            .iter()
            .filter_map(|u| url_host(u))
            .any(|h| h == host)
        || config
            .allowed_hosts
            .iter()
            .filter_map(|h| host_name(h))
            .any(|h| h == host)
}

/// Whether a browser origin may call the server: the server's own pages (the origin is the
/// request's own `Host`, which the gate has already checked), the desktop app, and the
/// configured public URL / extra origins (`CORS_ORIGINS`).
///
/// Other pages on this machine are not the owner: a dev server an agent just started on
/// another `localhost` port is as foreign as any web site (before, every `localhost` origin
/// passed, and such a page got local trust).
pub fn origin_allowed(origin: &str, host: Option<&str>, config: &Config) -> bool {
    let same_origin = host.is_some_and(|host| {
        let host = host.trim();
        !host.is_empty()
            && ["http://", "https://"].iter().any(|scheme| {
                origin
                    .strip_prefix(scheme)
                    .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
            })
    });
    same_origin
        || origin == "tauri://localhost"
        || origin == "http://tauri.localhost"
        || origin == "https://tauri.localhost"
        || config
            .public_urls()
            .iter()
            .any(|u| u.trim_end_matches('/') == origin)
        || config
            .cors_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == origin)
}

/// Whether a request carries any header a proxy adds.
pub fn has_proxy_headers(headers: &HeaderMap) -> bool {
    PROXY_HEADERS.iter().any(|h| headers.contains_key(*h))
}

/// The address a request is from, for rate limits and the audit trail: the `CF-Connecting-IP`
/// of a request that a proxy on this machine forwarded (cloudflared), else the peer. Headers
/// from any other peer are never believed.
pub fn client_address(peer: Option<SocketAddr>, headers: &HeaderMap) -> Option<IpAddr> {
    let peer = peer?.ip();
    if peer.is_loopback()
        && let Some(ip) = headers
            .get("cf-connecting-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<IpAddr>().ok())
    {
        return Some(ip);
    }
    Some(peer)
}

/// Whether a method changes something.
pub fn is_write(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Whether a write's body is acceptable: JSON (`application/json`, any parameters), or no
/// body and no declared type. A form or `text/plain` post (which a page on another site can
/// send without a CORS preflight) never is.
pub fn content_type_ok(headers: &HeaderMap) -> bool {
    match headers.get(header::CONTENT_TYPE) {
        Some(value) => value.to_str().is_ok_and(|v| {
            let essence = v.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        }),
        None => {
            let empty_length = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| v.trim() == "0");
            empty_length && !headers.contains_key(header::TRANSFER_ENCODING)
        }
    }
}

/// What a request on `path` needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Anyone who passed the `Host`/`Origin` checks: the pairing exchange, `/health` and the
    /// web app's static files (they hold no data; the app must load before a phone can pair).
    Public,
    /// Engine.IO: the credential may come in the Socket.IO handshake instead, so the namespace
    /// connect decides (with the same gate).
    SocketIo,
    /// A credential of at least this scope (or local trust).
    Scope(Scope),
}

/// What a request needs: the scope its route declares (see [`super::routes`]). Engine.IO
/// leaves it to the namespace connect; outside `/api` and the operations routes, the web app's
/// static files are public and the legacy WebSocket needs `read`. A path no route declares is
/// answered (404, 405) to readers, and a write to one only to `admin`, so a route that somehow
/// escaped declaration fails closed.
pub fn need(routes: &RouteScopes, method: &Method, path: &str, websocket: bool) -> Need {
    if path == "/socket.io" || path.starts_with("/socket.io/") {
        return Need::SocketIo;
    }
    if let Some(need) = routes.lookup(method, path) {
        return need;
    }
    let api = path == "/api" || path.starts_with("/api/");
    let ops = matches!(path, "/ready" | "/ws-status" | "/metrics" | "/health");
    if !api && !ops {
        // The legacy raw WebSocket streams every event: it is not a static file.
        return if websocket {
            Need::Scope(Scope::Read)
        } else {
            Need::Public
        };
    }
    Need::Scope(if is_write(method) {
        Scope::Admin
    } else {
        Scope::Read
    })
}

/// Whether a cookie-authenticated write may come without the CSRF header: only a
/// notification button's action, whose body carries a signed token bound to the device that a
/// foreign page cannot know (the service worker that posts it cannot read the CSRF cookie).
pub fn csrf_exempt(method: &Method, path: &str) -> bool {
    *method == Method::POST && path == "/api/push/actions"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gate's rule with this server's real route table.
    fn need(method: &Method, path: &str, websocket: bool) -> Need {
        static ROUTES: std::sync::LazyLock<RouteScopes> =
            std::sync::LazyLock::new(|| crate::http::route_scopes().unwrap());
        super::need(&ROUTES, method, path, websocket)
    }

    fn config() -> Config {
        let mut c = Config::for_dir(std::path::Path::new("/tmp"));
        c.cors_origins = vec!["https://extra.example".into()];
        c.external_url = Some("https://maestro.example/".into());
        c.allowed_hosts = vec!["laptop.lan".into()];
        c
    }

    #[test]
    fn hosts() {
        assert_eq!(host_name("LocalHost:3000").as_deref(), Some("localhost"));
        assert_eq!(host_name("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_name("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name("a b"), None);
        assert_eq!(host_name("x:port"), None);
        assert_eq!(host_name(""), None);
        assert_eq!(
            url_host("https://user@Maestro.Example:8443/x").as_deref(),
            Some("maestro.example")
        );
        let c = config();
        for ok in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "maestro.example",
            "laptop.lan",
        ] {
            assert!(host_allowed(ok, &c), "{ok}");
        }
        for bad in [
            "evil.example",
            "localhost.evil.example",
            "127.0.0.2",
            "[::2]",
        ] {
            assert!(!host_allowed(bad, &c), "{bad}");
        }
    }

    #[test]
    fn origins() {
        let c = config();
        let host = Some("127.0.0.1:3000");
        for ok in [
            "http://127.0.0.1:3000",
            "tauri://localhost",
            "https://extra.example",
            "https://maestro.example",
        ] {
            assert!(origin_allowed(ok, host, &c), "{ok}");
        }
        for bad in [
            "http://evil.example",
            // Another page on this machine is not the server's own.
            "http://localhost:5173",
            "http://127.0.0.1:3001",
            "http://127.0.0.1",
            "http://localhost.evil.example",
            "http://localhost:80evil",
            "http://localhost:",
            "null",
        ] {
            assert!(!origin_allowed(bad, host, &c), "{bad}");
        }
        assert!(origin_allowed(
            "http://LOCALHOST:3000",
            Some("localhost:3000"),
            &c
        ));
        assert!(!origin_allowed("http://localhost:3000", None, &c));
    }

    #[test]
    fn client_addresses() {
        let mut h = HeaderMap::new();
        h.insert("cf-connecting-ip", "203.0.113.7".parse().unwrap());
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        assert_eq!(
            client_address(Some(loopback), &h),
            Some("203.0.113.7".parse().unwrap())
        );
        // A remote peer cannot choose its own address.
        assert_eq!(client_address(Some(remote), &h), Some(remote.ip()));
        assert_eq!(
            client_address(Some(loopback), &HeaderMap::new()),
            Some(loopback.ip())
        );
    }

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(content_type_ok(&h));
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        assert!(!content_type_ok(&h));
        h.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert!(content_type_ok(&h));
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            h.insert(header::CONTENT_TYPE, bad.parse().unwrap());
            assert!(!content_type_ok(&h), "{bad}");
        }
    }

    #[test]
    fn needs() {
        use Need::{Public, SocketIo};
        use maestro_protocol::Scope as S;
        let scope = Need::Scope;
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(need(&get, "/", false), Public);
        assert_eq!(need(&get, "/assets/app.js", false), Public);
        assert_eq!(need(&get, "/", true), scope(S::Read));
        assert_eq!(need(&get, "/socket.io/", true), SocketIo);
        assert_eq!(need(&post, "/api/auth/pair", false), Public);
        assert_eq!(need(&get, "/api/tasks", false), scope(S::Read));
        assert_eq!(need(&get, "/health", false), Public);
        assert_eq!(need(&get, "/metrics", false), scope(S::Read));
        assert_eq!(need(&get, "/api/auth/tokens", false), scope(S::Admin));
        assert_eq!(need(&post, "/api/auth/logout", false), scope(S::Read));
        assert_eq!(need(&post, "/api/mail", false), scope(S::Respond));
        assert_eq!(need(&post, "/api/mail/wait/s1", false), scope(S::Respond));
        assert_eq!(
            need(&post, "/api/approvals/appr_1/decision", false),
            scope(S::Respond)
        );
        assert_eq!(
            need(&post, "/api/sessions/s/approvals", false),
            scope(S::Operate)
        );
        assert_eq!(
            need(&post, "/api/sessions/s1/modal/m1/actions", false),
            scope(S::Respond)
        );
        assert_eq!(need(&post, "/api/tasks", false), scope(S::Operate));
        assert_eq!(
            need(&post, "/api/sessions/s1/transcript", false),
            scope(S::Runner)
        );
        assert_eq!(
            need(&get, "/api/sessions/s1/transcript", false),
            scope(S::Read)
        );
        assert_eq!(need(&post, "/api/sessions/spawn", false), scope(S::Operate));
        assert_eq!(need(&post, "/api/projects", false), scope(S::Admin));
        assert_eq!(
            need(&Method::DELETE, "/api/tasks/t", false),
            scope(S::Admin)
        );
        assert_eq!(
            need(&Method::PATCH, "/api/tasks/t", false),
            scope(S::Operate)
        );
    }

    #[test]
    fn terminals_need_read_to_watch_and_the_runner_scope_to_host() {
        use maestro_protocol::Scope as S;
        let get = Method::GET;
        assert_eq!(
            need(&get, "/api/sessions/s1/terminal", true),
            Need::Scope(S::Read)
        );
        for websocket in [true, false] {
            // `runner`, which operate and admin include (a read token is refused).
            assert_eq!(
                need(&get, "/api/sessions/s1/terminal/host", websocket),
                Need::Scope(S::Runner)
            );
        }
        assert_eq!(
            need(&Method::POST, "/api/runners", false),
            Need::Scope(S::Runner)
        );
        assert_eq!(
            need(&Method::POST, "/api/runners/run_1/claim", false),
            Need::Scope(S::Runner)
        );
        assert_eq!(need(&get, "/api/runners", false), Need::Scope(S::Read));
        // Only that shape of path.
        assert_eq!(
            need(&get, "/api/sessions/a/b/terminal/host", true),
            Need::Scope(S::Read)
        );
    }

    #[test]
    fn review_reads_need_read_comments_respond_and_reports_the_runner_scope() {
        use maestro_protocol::Scope as S;
        let get = Method::GET;
        for path in [
            "/api/sessions/s1/changes",
            "/api/sessions/s1/diff",
            "/api/sessions/s1/review/comments",
        ] {
            assert_eq!(need(&get, path, false), Need::Scope(S::Read), "{path}");
        }
        assert_eq!(
            need(&Method::POST, "/api/sessions/s1/review/comments", false),
            Need::Scope(S::Respond)
        );
        assert_eq!(
            need(
                &Method::DELETE,
                "/api/sessions/s1/review/comments/rvc_1",
                false
            ),
            Need::Scope(S::Respond)
        );
        assert_eq!(
            need(&Method::POST, "/api/sessions/s1/review/send", false),
            Need::Scope(S::Respond)
        );
        assert_eq!(
            need(&Method::PUT, "/api/sessions/s1/changes", false),
            Need::Scope(S::Runner)
        );
        // Deleting anything else still needs admin.
        assert_eq!(
            need(&Method::DELETE, "/api/sessions/s1/review", false),
            Need::Scope(S::Admin)
        );
    }

    #[test]
    fn push_subscriptions_need_only_read() {
        use maestro_protocol::Scope as S;
        for method in [Method::POST, Method::DELETE] {
            assert_eq!(
                need(&method, "/api/push/subscriptions", false),
                Need::Scope(S::Read),
                "{method}"
            );
        }
        assert_eq!(
            need(&Method::GET, "/api/push/vapid-public-key", false),
            Need::Scope(S::Read)
        );
        // Only that path: a look-alike keeps the default rules.
        assert_eq!(
            need(&Method::DELETE, "/api/push/subscriptions/x", false),
            Need::Scope(S::Admin)
        );
        assert_eq!(
            need(&Method::POST, "/api/push/other", false),
            Need::Scope(S::Admin)
        );
        // A device's own notification settings and test: read.
        assert_eq!(
            need(&Method::PUT, "/api/push/settings", false),
            Need::Scope(S::Read)
        );
        assert_eq!(
            need(&Method::POST, "/api/push/test", false),
            Need::Scope(S::Read)
        );
        // A notification button decides an approval: respond, like the app's decision.
        assert_eq!(
            need(&Method::POST, "/api/push/actions", false),
            Need::Scope(S::Respond)
        );
        assert!(csrf_exempt(&Method::POST, "/api/push/actions"));
        assert!(!csrf_exempt(&Method::POST, "/api/push/subscriptions"));
        assert!(!csrf_exempt(&Method::POST, "/api/approvals/a/decision"));
    }
}
