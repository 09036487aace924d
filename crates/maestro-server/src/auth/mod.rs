//! Who may use the server, decided in one place for every entry point.
//!
//! The HTTP layer runs [`Gate::admit`] on every request before routing — REST, every Engine.IO
//! request (polling and the WebSocket upgrade), the legacy WebSocket and static files — and
//! the Socket.IO namespace connect runs [`Gate::admit_socket`] for a token sent in the
//! handshake. Both `http` and `realtime` use this module; it uses neither.
//!
//! The rules, in order (see `docs/security.md`):
//! 1. `Host` must be ours (local names, `EXTERNAL_URL`'s host, `ALLOWED_HOSTS`): 421 otherwise,
//!    which stops DNS rebinding.
//! 2. An `Origin`, if present, must be allowed: 403 otherwise, credential or not, so no page on
//!    another site can use the developer's browser against the server.
//! 3. A write carries JSON or nothing (415), so no form or `text/plain` post gets in.
//! 4. A request is *local* when its peer is loopback, its `Host` is local and it carries no
//!    proxy header (and `AUTH` is not `required`). Tunnel traffic comes from loopback too, but
//!    cloudflared adds `Cf-Connecting-IP`, so it is never local.
//! 5. Non-local requests pass Cloudflare Access first when it is configured.
//! 6. A presented credential (`Authorization: Bearer`, or the device cookie) must be genuine
//!    and current (401; repeated failures 429); a cookie-carried one also needs `X-Maestro-CSRF`
//!    on writes. Tokens in query strings are never read.
//! 7. The credential's scope must cover what the route declares ([`routes`], [`trust::need`]);
//!    a local request without a credential has every scope.

pub mod access;
pub mod credentials;
pub mod limiter;
pub mod per_address;
pub mod routes;
pub mod trust;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode, header};
use maestro_protocol::{CallerKind, Scope};

use crate::config::{AuthMode, Config};
use crate::domain::Domain;
use access::AccessVerifier;
use credentials::{Credential, VerifyError};
use limiter::FailureLimiter;
use per_address::PerAddress;
use trust::Need;

/// Pairing attempts (`POST /api/auth/pair`) one client address may have in flight at once.
pub const PAIRING_ATTEMPTS_PER_ADDRESS: usize = 4;

/// Name of the device cookie (HttpOnly).
pub const DEVICE_COOKIE: &str = "maestro_device";
/// Name of the cookie the web app reads its CSRF value from (not HttpOnly).
pub const CSRF_COOKIE: &str = "maestro_csrf";
/// Header a cookie-authenticated write carries.
pub const CSRF_HEADER: &str = "x-maestro-csrf";

/// Who a request or socket acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub kind: CallerKind,
    pub scope: Scope,
    /// The credential's id (`None` for local trust).
    pub id: Option<String>,
    pub name: Option<String>,
    /// For a device signed in by its cookie: the CSRF value its writes must carry.
    pub csrf: Option<String>,
}

impl Principal {
    /// A request from this machine, trusted without a credential.
    pub fn local() -> Self {
        Self {
            kind: CallerKind::Local,
            scope: Scope::Admin,
            id: None,
            name: None,
            csrf: None,
        }
    }

    /// Who this is, for records such as "decided by": the credential's name, else its kind.
    pub fn label(&self) -> String {
        match (&self.name, self.kind) {
            (Some(name), _) => name.clone(),
            (None, CallerKind::Local) => "local".into(),
            (None, CallerKind::Token) => "token".into(),
            (None, CallerKind::Device) => "device".into(),
        }
    }

    fn of(credential: &Credential, csrf: Option<String>) -> Self {
        Self {
            kind: credential.kind,
            scope: credential.scope,
            id: Some(credential.id.clone()),
            name: Some(credential.name.clone()),
            csrf,
        }
    }

    /// Whether this principal may do what `scope` allows.
    pub fn allows(&self, scope: Scope) -> bool {
        self.scope.includes(scope)
    }
}

/// Why a request was refused; becomes the response (or a socket's `connect_error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 421: a `Host` this server does not answer to.
    Host(String),
    /// 403: an `Origin` not on the allowlist.
    Origin(String),
    /// 415: a write whose body is not JSON.
    MediaType,
    /// 403: Cloudflare Access is configured and the request has no valid assertion.
    Access(&'static str),
    /// 401: no credential where one is needed, or one that is not genuine and current.
    Unauthenticated(&'static str),
    /// 403: a cookie-authenticated write without the matching CSRF header.
    Csrf,
    /// 403: the credential's scope does not cover the operation.
    Scope { need: Scope, have: Scope },
    /// 429: too many failed credentials from this address.
    RateLimited(Duration),
    /// 429: this address already holds its share of a resource (pairing attempts in flight).
    Busy(&'static str),
    /// 503: the credential store cannot be read.
    Unavailable,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Host(_) => StatusCode::MISDIRECTED_REQUEST,
            Self::Origin(_) | Self::Access(_) | Self::Csrf | Self::Scope { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::MediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::RateLimited(_) | Self::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable `code` of the error body.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Host(_) => "MISDIRECTED_REQUEST",
            Self::Origin(_) | Self::Access(_) | Self::Csrf | Self::Scope { .. } => "FORBIDDEN",
            Self::MediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::Unauthenticated(_) => "UNAUTHORIZED",
            Self::RateLimited(_) | Self::Busy(_) => "RATE_LIMITED",
            Self::Unavailable => "UNAVAILABLE",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Host(host) => format!("this server does not answer to host '{host}'"),
            Self::Origin(origin) => format!("origin '{origin}' is not allowed"),
            Self::MediaType => "write requests must be sent as application/json".into(),
            Self::Access(_) => "a valid Cloudflare Access assertion is required".into(),
            Self::Unauthenticated("missing_credential") => {
                "a credential is required: pair this device (maestro pair) or send \
                 Authorization: Bearer <token>"
                    .into()
            }
            Self::Unauthenticated(_) => {
                "the credential is not valid (revoked, expired or wrong)".into()
            }
            Self::Csrf => {
                format!("cookie-authenticated writes must carry the {CSRF_HEADER} header")
            }
            Self::Scope { need, have } => {
                format!("this needs scope '{need}'; the credential has '{have}'")
            }
            Self::RateLimited(wait) => format!(
                "too many failed credentials from this address; try again in {} s",
                wait.as_secs().max(1)
            ),
            Self::Busy(what) => format!("too many {what} in progress from this address"),
            Self::Unavailable => "the credential store is unavailable".into(),
        }
    }

    /// The short reason recorded in the audit trail and the refusal counters.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Host(_) => "foreign_host",
            Self::Origin(_) => "foreign_origin",
            Self::MediaType => "not_json",
            Self::Access(reason) | Self::Unauthenticated(reason) => reason,
            Self::Csrf => "missing_csrf",
            Self::Scope { .. } => "insufficient_scope",
            Self::RateLimited(_) => "rate_limited",
            Self::Busy(_) => "address_busy",
            Self::Unavailable => "store_unavailable",
        }
    }
}

/// What the gate sees of a request.
pub struct RequestFacts<'a> {
    pub peer: Option<SocketAddr>,
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

/// Counters for `/metrics` and the audit trail.
#[derive(Default)]
pub struct AuthMetrics {
    pub refused: [AtomicU64; REFUSAL_REASONS.len()],
    pub accepted_credentials: AtomicU64,
    /// Credential changes made through this server, by [`AUDIT_EVENTS`].
    pub changes: [AtomicU64; AUDIT_EVENTS.len()],
}

/// The credential changes counted in `maestro_auth_events_total`.
pub const AUDIT_EVENTS: [&str; 5] = [
    "token_created",
    "token_revoked",
    "pairing_created",
    "device_paired",
    "device_revoked",
];

/// The reasons counted in `maestro_auth_refusals_total`.
pub const REFUSAL_REASONS: [&str; 15] = [
    "foreign_host",
    "foreign_origin",
    "not_json",
    "missing_credential",
    "malformed_token",
    "unknown_token",
    "expired_token",
    "missing_csrf",
    "insufficient_scope",
    "rate_limited",
    "store_unavailable",
    "access_denied",
    "bad_pairing_code",
    "address_busy",
    "other",
];

impl AuthMetrics {
    /// Counts a credential change (one of [`AUDIT_EVENTS`]).
    pub fn record(&self, event: &str) {
        if let Some(i) = AUDIT_EVENTS.iter().position(|e| *e == event) {
            self.changes[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self, reason: &str) {
        let i = REFUSAL_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REFUSAL_REASONS.len() - 1);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text for the counters.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP maestro_auth_refusals_total Requests and sockets refused by the auth gate, by reason.\n\
             # TYPE maestro_auth_refusals_total counter\n",
        );
        for (i, reason) in REFUSAL_REASONS.iter().enumerate() {
            out.push_str(&format!(
                "maestro_auth_refusals_total{{reason=\"{reason}\"}} {}\n",
                self.refused[i].load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP maestro_auth_credentials_accepted_total Requests admitted on a token or device credential.\n\
             # TYPE maestro_auth_credentials_accepted_total counter\n\
             maestro_auth_credentials_accepted_total {}\n",
            self.accepted_credentials.load(Ordering::Relaxed)
        ));
        out.push_str(
            "# HELP maestro_auth_events_total Credential changes made through this server.\n\
             # TYPE maestro_auth_events_total counter\n",
        );
        for (i, event) in AUDIT_EVENTS.iter().enumerate() {
            out.push_str(&format!(
                "maestro_auth_events_total{{event=\"{event}\"}} {}\n",
                self.changes[i].load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// The one check, shared by HTTP and the sockets; cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    domain: Domain,
    limiter: FailureLimiter,
    /// Pairing attempts in flight per client address.
    pairing_attempts: PerAddress,
    access: Option<AccessVerifier>,
    metrics: AuthMetrics,
    routes: routes::RouteScopes,
    /// This start's owner token (also in `$DATA_DIR/owner-token`), for identity proofs.
    owner_token: std::sync::OnceLock<String>,
}

impl Gate {
    /// `routes`: the scope every route declares (see [`routes`]).
    pub fn new(config: Arc<Config>, domain: Domain, routes: routes::RouteScopes) -> Self {
        let access = match (&config.cf_access_team, &config.cf_access_aud) {
            (Some(team), Some(aud)) => Some(match &config.cf_access_certs_url {
                Some(url) => AccessVerifier::with_certs_url(team, aud, url),
                None => AccessVerifier::new(team, aud),
            }),
            _ => None,
        };
        Self {
            inner: Arc::new(Inner {
                config,
                domain,
                limiter: FailureLimiter::default(),
                pairing_attempts: PerAddress::new(PAIRING_ATTEMPTS_PER_ADDRESS),
                access,
                metrics: AuthMetrics::default(),
                routes,
                owner_token: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The owner token this server wrote at start (see [`Gate::identity_proof`]).
    pub fn set_owner_token(&self, token: String) {
        let _ = self.inner.owner_token.set(token);
    }

    /// Proves to a client on this machine that this is the server whose owner token it can
    /// read, without revealing the token (`None` before the token is written).
    pub fn identity_proof(&self, nonce: &str) -> Option<String> {
        let token = self.inner.owner_token.get()?;
        Some(maestro_protocol::identity_proof(token, nonce))
    }

    pub fn metrics(&self) -> &AuthMetrics {
        &self.inner.metrics
    }

    /// A pairing attempt in flight from `addr`, given back when the hold drops; 429 when the
    /// address already has [`PAIRING_ATTEMPTS_PER_ADDRESS`] in flight.
    pub fn hold_pairing_attempt(&self, addr: IpAddr) -> Result<per_address::Hold, Refusal> {
        self.inner
            .pairing_attempts
            .try_hold(addr)
            .ok_or(Refusal::Busy("pairing attempts"))
    }

    /// How long `addr` must still wait after too many failed credentials, if it must.
    pub fn blocked_for(&self, addr: IpAddr) -> Option<Duration> {
        self.inner.limiter.blocked_for(addr)
    }

    /// Decides a request. `Ok(None)`: admitted without a principal (a public route, or
    /// Engine.IO whose namespace connect decides).
    pub async fn admit(&self, req: &RequestFacts<'_>) -> Result<Option<Principal>, Refusal> {
        let result = self.decide(req).await;
        if let Err(refusal) = &result {
            self.audit_refusal(refusal, req.peer, req.headers, req.path);
        }
        result
    }

    async fn decide(&self, req: &RequestFacts<'_>) -> Result<Option<Principal>, Refusal> {
        let config = &*self.inner.config;
        let host_header = req
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        let host = trust::host_name(host_header)
            .filter(|h| trust::host_allowed(h, config))
            .ok_or_else(|| Refusal::Host(host_header.chars().take(100).collect()))?;
        check_origin(req.headers, config)?;
        let websocket = req
            .headers
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        let need = trust::need(&self.inner.routes, req.method, req.path, websocket);
        let socketio = need == Need::SocketIo;
        if trust::is_write(req.method) && !socketio && !trust::content_type_ok(req.headers) {
            return Err(Refusal::MediaType);
        }
        // CORS preflights carry no credential by design; they learn nothing and change nothing.
        if *req.method == Method::OPTIONS {
            return Ok(None);
        }
        // Straight from this machine: loopback peer, local `Host`, no proxy header.
        let direct = req.peer.is_some_and(|p| p.ip().is_loopback())
            && trust::is_local_host(&host)
            && !trust::has_proxy_headers(req.headers);
        let local = config.auth == AuthMode::Local && direct;
        let address = trust::client_address(req.peer, req.headers);
        // Cloudflare Access guards what comes through the tunnel. A client on this machine is
        // not behind it; with `AUTH=required` it still needs a credential (below).
        if !direct && let Some(access) = &self.inner.access {
            let assertion = req
                .headers
                .get("cf-access-jwt-assertion")
                .and_then(|v| v.to_str().ok())
                .ok_or(Refusal::Access("access_denied"))?;
            if let Err(e) = access.verify(assertion).await {
                tracing::info!(target: "maestro::audit", event = "access_refused", address = ?address, reason = e.reason());
                return Err(Refusal::Access("access_denied"));
            }
        }
        let presented = presented_credential(req.headers);
        let principal = match presented {
            Some((token, via_cookie)) => {
                let credential = self.check_token(token, address)?;
                if via_cookie
                    && trust::is_write(req.method)
                    && !socketio
                    && !trust::csrf_exempt(req.method, req.path)
                    && !csrf_matches(req.headers, token)
                {
                    return Err(Refusal::Csrf);
                }
                credentials::touch(
                    &self.inner.domain,
                    &credential,
                    token,
                    address.map(|a| a.to_string()),
                )
                .await;
                let csrf = via_cookie.then(|| credentials::csrf_for(token));
                Some(Principal::of(&credential, csrf))
            }
            None if local => Some(Principal::local()),
            None => None,
        };
        match (need, principal) {
            (Need::Public | Need::SocketIo, p) => Ok(p),
            (Need::Scope(_), None) => Err(Refusal::Unauthenticated("missing_credential")),
            (Need::Scope(need), Some(p)) if !p.allows(need) => Err(Refusal::Scope {
                need,
                have: p.scope,
            }),
            (Need::Scope(_), Some(p)) => Ok(Some(p)),
        }
    }

    /// Checks a token presented from `address`, counting failures against it.
    fn check_token(&self, token: &str, address: Option<IpAddr>) -> Result<Credential, Refusal> {
        if let Some(wait) = address.and_then(|a| self.inner.limiter.blocked_for(a)) {
            return Err(Refusal::RateLimited(wait));
        }
        match credentials::verify(&self.inner.domain, token) {
            Ok(credential) => {
                self.inner
                    .metrics
                    .accepted_credentials
                    .fetch_add(1, Ordering::Relaxed);
                Ok(credential)
            }
            Err(VerifyError::Store(e)) => {
                tracing::warn!(error = %e, "cannot read credentials");
                Err(Refusal::Unavailable)
            }
            Err(VerifyError::Rejected(why)) => Err(self.failed(address, why.reason())),
        }
    }

    /// Counts a failed credential (a token, a pairing code) from `address`: the refusal to
    /// answer with, 401 or — once the address has failed too often — 429.
    pub fn failed(&self, address: Option<IpAddr>, reason: &'static str) -> Refusal {
        match address.and_then(|a| self.inner.limiter.fail(a)) {
            Some(wait) => Refusal::RateLimited(wait),
            None => Refusal::Unauthenticated(reason),
        }
    }

    /// The Socket.IO handshake: `principal` is what the gate admitted the Engine.IO
    /// connection with; `token` the handshake's `auth.token`, if any. A token, when given, is
    /// checked and wins.
    pub fn admit_socket(
        &self,
        principal: Option<&Principal>,
        token: Option<&str>,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<Principal, Refusal> {
        let address = trust::client_address(peer, headers);
        let result = match (token, principal) {
            (Some(token), _) => self
                .check_token(token, address)
                .map(|c| Principal::of(&c, None)),
            (None, Some(p)) => Ok(p.clone()),
            (None, None) => Err(Refusal::Unauthenticated("missing_credential")),
        };
        if let Err(refusal) = &result {
            self.audit_refusal(refusal, peer, headers, "/socket.io/");
        }
        result
    }

    /// Logs a refusal in the audit trail and counts it.
    pub fn audit_refusal(
        &self,
        refusal: &Refusal,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        path: &str,
    ) {
        let address = trust::client_address(peer, headers);
        self.inner.metrics.count(refusal.reason());
        tracing::info!(
            target: "maestro::audit",
            event = "credential_refused",
            address = ?address,
            reason = refusal.reason(),
            status = refusal.status().as_u16(),
            path,
        );
    }
}

/// An `Origin` header, if present, must be on the allowlist.
pub fn check_origin(headers: &HeaderMap, config: &Config) -> Result<(), Refusal> {
    match headers.get(header::ORIGIN) {
        None => Ok(()),
        Some(origin) => {
            let text = origin.to_str().unwrap_or("<not text>");
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            if trust::origin_allowed(text, host, config) {
                Ok(())
            } else {
                Err(Refusal::Origin(text.chars().take(200).collect()))
            }
        }
    }
}

/// The credential a request carries: a bearer token, else the device cookie (`true`).
fn presented_credential(headers: &HeaderMap) -> Option<(&str, bool)> {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        return Some((token, false));
    }
    cookie(headers, DEVICE_COOKIE).map(|t| (t, true))
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

fn csrf_matches(headers: &HeaderMap, token: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    let expected = credentials::csrf_for(token);
    headers
        .get(CSRF_HEADER)
        .is_some_and(|v| bool::from(v.as_bytes().ct_eq(expected.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_header_or_the_cookie_never_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_credential(&h), None);
        h.insert(
            header::COOKIE,
            "a=1; maestro_device=dev_x.s; b=2".parse().unwrap(),
        );
        assert_eq!(presented_credential(&h), Some(("dev_x.s", true)));
        h.insert(header::AUTHORIZATION, "Bearer tok_y.t".parse().unwrap());
        assert_eq!(presented_credential(&h), Some(("tok_y.t", false)));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_credential(&h), Some(("dev_x.s", true)));
    }

    #[test]
    fn refusals_have_distinct_statuses() {
        assert_eq!(Refusal::Host("x".into()).status(), 421);
        assert_eq!(Refusal::Origin("x".into()).status(), 403);
        assert_eq!(Refusal::MediaType.status(), 415);
        assert_eq!(Refusal::Unauthenticated("unknown_token").status(), 401);
        assert_eq!(Refusal::RateLimited(Duration::from_secs(3)).status(), 429);
        for r in REFUSAL_REASONS {
            assert!(!r.is_empty());
        }
    }
}
