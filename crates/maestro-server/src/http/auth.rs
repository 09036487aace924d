//! `/api/auth/*` (tokens, devices, pairing) and the HTTP side of the auth gate.
//!
//! The rules live in [`crate::auth`]; here the gate runs as the outermost layer of the router
//! ([`gate`]), so no route, static file or WebSocket upgrade is reached without it, and the
//! principal it admitted is an extractor ([`Caller`]) for the handlers that need it.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequest as _, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maestro_protocol::{
    CallerKind, CreatePairing, CreateToken, DeviceInfo, ErrorBody, Me, PairRequest, Paired,
    PairingCreated, PublicUrl, Revoked, TokenCreated, TokenInfo,
};
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;

use super::Docs;

use super::{AppState, Body, IdPath};
use crate::auth::credentials::{self, PairOutcome};
use crate::auth::{CSRF_COOKIE, DEVICE_COOKIE, Principal, Refusal, RequestFacts, trust};
use crate::error::{Error, Result};

pub fn router(built_for: Docs) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(built_for; list_tokens, create_token))
        .routes(routes!(built_for; revoke_token))
        .routes(routes!(built_for; list_devices))
        .routes(routes!(built_for; revoke_device))
        .routes(routes!(built_for; create_pairing))
        .routes(routes!(built_for; pair))
        .routes(routes!(built_for; me))
        .routes(routes!(built_for; logout))
        .routes(routes!(built_for; set_public_url, clear_public_url))
}

/// The gate, before routing: refused requests get their status and the usual error body;
/// admitted ones carry their [`Principal`] (if any) in their extensions.
pub async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let peer = peer(&req);
    let facts = RequestFacts {
        peer,
        method: req.method(),
        path: req.uri().path(),
        headers: req.headers(),
    };
    match state.gate.admit(&facts).await {
        Ok(principal) => {
            if let Some(p) = principal {
                req.extensions_mut().insert(p);
            }
            next.run(req).await
        }
        Err(refusal) => refusal_response(&refusal),
    }
}

fn peer(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// A refusal as a response, in the API's one error shape.
pub fn refusal_response(refusal: &Refusal) -> Response {
    let status = refusal.status();
    let body = ErrorBody {
        error: true,
        status_code: status.as_u16(),
        code: refusal.code().to_owned(),
        message: refusal.message(),
        details: None,
    };
    let mut response = (status, Json(body)).into_response();
    let headers = response.headers_mut();
    match refusal {
        Refusal::RateLimited(wait) => {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
        Refusal::Busy(_) => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        Refusal::Unauthenticated(_) => {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"maestro\""),
            );
        }
        _ => {}
    }
    response
}

/// The principal the gate admitted (401 when the route let an anonymous request through).
pub struct Caller(pub Principal);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| refusal_response(&Refusal::Unauthenticated("missing_credential")))
    }
}

#[utoipa::path(
    get,
    path = "/auth/tokens",
    tag = "auth",
    summary = "API tokens (no secrets)",
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
async fn list_tokens(State(s): State<AppState>) -> Result<Json<Vec<TokenInfo>>> {
    Ok(Json(credentials::list_tokens(&s.domain)?))
}

#[utoipa::path(
    post,
    path = "/auth/tokens",
    tag = "auth",
    summary = "Create an API token; its secret is shown only in this answer",
    request_body = CreateToken,
    security(("maestro" = ["admin"])),
    responses((status = 201, body = TokenCreated), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
async fn create_token(
    State(s): State<AppState>,
    Body(req): Body<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>)> {
    let created = credentials::create_token(&s.domain, req).await?;
    s.gate.metrics().record("token_created");
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    delete,
    path = "/auth/tokens/{id}",
    tag = "auth",
    summary = "Revoke a token: it fails on its next request, on every server",
    params(("id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Revoked), (status = 404, body = ErrorBody)),
)]
async fn revoke_token(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Revoked>> {
    let revoked = credentials::revoke(&s.domain, CallerKind::Token, id).await?;
    s.gate.metrics().record("token_revoked");
    Ok(Json(Revoked {
        id: revoked.id,
        revoked: true,
    }))
}

#[utoipa::path(
    get,
    path = "/auth/devices",
    tag = "auth",
    summary = "Paired devices",
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Vec<DeviceInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
async fn list_devices(State(s): State<AppState>) -> Result<Json<Vec<DeviceInfo>>> {
    Ok(Json(credentials::list_devices(&s.domain)?))
}

#[utoipa::path(
    delete,
    path = "/auth/devices/{id}",
    tag = "auth",
    summary = "Revoke a device: its requests fail and its open sockets close at once",
    params(("id" = String, Path)),
    security(("maestro" = ["admin"])),
    responses((status = 200, body = Revoked), (status = 404, body = ErrorBody)),
)]
async fn revoke_device(
    State(s): State<AppState>,
    IdPath(id): IdPath<String>,
) -> Result<Json<Revoked>> {
    let revoked = credentials::revoke(&s.domain, CallerKind::Device, id).await?;
    s.gate.metrics().record("device_revoked");
    Ok(Json(Revoked {
        id: revoked.id,
        revoked: true,
    }))
}

#[utoipa::path(
    post,
    path = "/auth/pairings",
    tag = "auth",
    summary = "Make a single-use pairing code for a phone (valid PAIRING_TTL_SECS, 2 minutes by default)",
    request_body = CreatePairing,
    security(("maestro" = ["admin"])),
    responses((status = 201, body = PairingCreated), (status = 403, body = ErrorBody)),
)]
async fn create_pairing(
    State(s): State<AppState>,
    Caller(caller): Caller,
    Body(req): Body<CreatePairing>,
) -> Result<(StatusCode, Json<PairingCreated>)> {
    let base = s
        .config
        .public_url()
        .unwrap_or_else(|| s.domain.info.server_url.clone());
    let ttl_ms = i64::try_from(s.config.pairing_ttl_secs * 1000).unwrap_or(i64::MAX);
    let created = credentials::create_pairing(&s.domain, req, caller.scope, &base, ttl_ms).await?;
    s.gate.metrics().record("pairing_created");
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    post,
    path = "/auth/pair",
    tag = "auth",
    summary = "Exchange a pairing code for this device's credential, set as an HttpOnly cookie",
    description = "The token is in the answer only when the request asks (`returnToken: true`) and carries no `Origin`: a web page never sees it.",
    request_body = PairRequest,
    security(()),
    responses((status = 200, body = Paired), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 408, body = ErrorBody), (status = 429, body = ErrorBody)),
)]
async fn pair(State(s): State<AppState>, req: Request) -> Response {
    let peer = peer(&req);
    let headers = req.headers().clone();
    let address = trust::client_address(peer, &headers);
    let refuse = |refusal: Refusal| {
        s.gate
            .audit_refusal(&refusal, peer, &headers, "/api/auth/pair");
        refusal_response(&refusal)
    };
    // Held until the answer: an address has few attempts in flight, so slow bodies from one
    // place cannot pile up (each is also cut off after BODY_READ_TIMEOUT_SECS).
    let _attempt = match address.map(|a| s.gate.hold_pairing_attempt(a)) {
        Some(Err(refusal)) => return refuse(refusal),
        Some(Ok(hold)) => Some(hold),
        None => None,
    };
    if let Some(wait) = address.and_then(|a| s.gate.blocked_for(a)) {
        return refuse(Refusal::RateLimited(wait));
    }
    let body = match Body::<PairRequest>::from_request(req, &s).await {
        Ok(Body(body)) => body,
        Err(e) => return e.into_response(),
    };
    let Some(code) = body.code.as_deref() else {
        return Error::validation("code is required").into_response();
    };
    let return_token = body.return_token == Some(true);
    if return_token && headers.contains_key(header::ORIGIN) {
        return Error::validation(
            "returnToken is for clients that are not browsers: a web page gets the device \
             cookie only",
        )
        .into_response();
    }
    match credentials::pair(&s.domain, code, body.device_name.as_deref()).await {
        Ok(PairOutcome::Paired(mut paired)) => {
            s.gate.metrics().record("device_paired");
            let secure = is_https(&headers, &s);
            let token = if return_token {
                paired.token.clone()
            } else {
                paired.token.take()
            }
            .expect("a new device has its token");
            let mut response = Json(&paired).into_response();
            let cookies = response.headers_mut();
            for cookie in device_cookies(&token, &paired.csrf, secure) {
                cookies.append(header::SET_COOKIE, cookie);
            }
            cookies.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Ok(PairOutcome::Refused { burned }) => {
            if burned > 0 {
                tracing::warn!(target: "maestro::audit", event = "pairing_burned", pairings = burned, address = ?address);
            }
            refuse(s.gate.failed(address, "bad_pairing_code"))
        }
        Err(e) => e.into_response(),
    }
}

/// Whether the client reached us over https (through the tunnel, or a proxy on this machine).
fn is_https(headers: &HeaderMap, s: &AppState) -> bool {
    let forwarded_https = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    forwarded_https
        || s.config
            .public_url()
            .is_some_and(|u| u.starts_with("https://"))
}

/// The device cookie (HttpOnly: scripts never see the token) and the CSRF cookie (readable by
/// the app, which echoes it in `X-Maestro-CSRF`). Both SameSite=Strict.
fn device_cookies(token: &str, csrf: &str, secure: bool) -> [HeaderValue; 2] {
    let secure = if secure { "; Secure" } else { "" };
    let year = 365 * 24 * 3600;
    let device = format!(
        "{DEVICE_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={year}{secure}"
    );
    let csrf = format!("{CSRF_COOKIE}={csrf}; Path=/; SameSite=Strict; Max-Age={year}{secure}");
    [
        HeaderValue::from_str(&device).expect("tokens are header-safe"),
        HeaderValue::from_str(&csrf).expect("hex is header-safe"),
    ]
}

fn clear_cookies() -> [HeaderValue; 2] {
    [DEVICE_COOKIE, CSRF_COOKIE].map(|name| {
        HeaderValue::from_str(&format!("{name}=; Path=/; SameSite=Strict; Max-Age=0"))
            .expect("a valid cookie")
    })
}

#[utoipa::path(
    get,
    path = "/auth/me",
    tag = "auth",
    summary = "Who the server takes the caller for, and its scope",
    security(("maestro" = ["read"])),
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)),
)]
async fn me(Caller(p): Caller) -> Json<Me> {
    Json(Me {
        kind: p.kind,
        scope: p.scope,
        id: p.id,
        name: p.name,
        csrf: p.csrf,
    })
}

#[utoipa::path(
    post,
    path = "/auth/logout",
    tag = "auth",
    summary = "Sign this device out: revokes its credential and clears its cookies",
    security(("maestro" = ["read"])),
    responses((status = 200), (status = 401, body = ErrorBody)),
)]
async fn logout(State(s): State<AppState>, Caller(p): Caller) -> Result<Response> {
    let mut revoked = false;
    if p.kind == CallerKind::Device
        && let Some(id) = p.id.clone()
    {
        match credentials::revoke(&s.domain, CallerKind::Device, id).await {
            Ok(_) => {
                s.gate.metrics().record("device_revoked");
                revoked = true
            }
            // Revoked meanwhile: signed out all the same.
            Err(Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let mut response = Json(json!({ "signedOut": true, "revoked": revoked })).into_response();
    for cookie in clear_cookies() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    Ok(response)
}

#[utoipa::path(
    put,
    path = "/auth/public-url",
    tag = "auth",
    summary = "Announce the public URL this server is reached at (maestro tunnel does, when it attaches to a running server)",
    description = "While set, the URL's host and origin are allowed like EXTERNAL_URL's, and pairing links point at it. Kept in memory by this server only; cleared by DELETE or a restart.",
    request_body = PublicUrl,
    security(("maestro" = ["admin"])),
    responses((status = 200, body = PublicUrl), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
)]
async fn set_public_url(
    State(s): State<AppState>,
    Body(req): Body<PublicUrl>,
) -> Result<Json<PublicUrl>> {
    let url = req
        .url
        .as_deref()
        .map(str::trim)
        .map(|u| u.trim_end_matches('/'))
        .unwrap_or_default()
        .to_owned();
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    let path_free = url
        .split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?', '#', '@']));
    if !scheme_ok || !path_free || trust::url_host(&url).is_none() {
        return Err(Error::validation(
            "url must be an origin such as https://name.example.com (no path)",
        ));
    }
    *s.config.tunnel_url.write().expect("tunnel url lock") = Some(url.clone());
    tracing::info!(target: "maestro::audit", event = "public_url_set", url = %url);
    Ok(Json(PublicUrl { url: Some(url) }))
}

#[utoipa::path(
    delete,
    path = "/auth/public-url",
    tag = "auth",
    summary = "Forget the announced public URL (the tunnel stopped)",
    security(("maestro" = ["admin"])),
    responses((status = 200, body = PublicUrl)),
)]
async fn clear_public_url(State(s): State<AppState>) -> Json<PublicUrl> {
    let previous = s.config.tunnel_url.write().expect("tunnel url lock").take();
    if let Some(url) = &previous {
        tracing::info!(target: "maestro::audit", event = "public_url_cleared", url = %url);
    }
    Json(PublicUrl { url: None })
}
