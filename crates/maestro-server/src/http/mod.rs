//! The HTTP API: one router per feature, merged here, plus the cross-cutting layers (CORS,
//! body limit, JSON 404/405).
//!
//! Handlers extract, call a [`Domain`](crate::domain::Domain) operation and map the result;
//! rules live in `domain`.

/// Registers handlers on an [`OpenApiRouter`], as `utoipa_axum::routes!` does, for what
/// `$docs` ([`Docs`]) says the router is built for.
macro_rules! routes {
    ($docs:expr; $($handler:ident),+ $(,)?) => {
        match $docs {
            $crate::http::Docs::Full => utoipa_axum::routes!($($handler),+),
            $crate::http::Docs::Scopes => {
                use utoipa::Path as _;
                use utoipa_axum::PathItemExt as _;
                let mut paths = utoipa::openapi::path::Paths::new();
                let mut router = axum::routing::MethodRouter::new();
                $(
                    let (path, methods) = utoipa_axum::paste! {(
                        [<__path_ $handler>]::path(),
                        [<__path_ $handler>]::methods(),
                    )};
                    // Of the operation, only its security (the scope) is kept, and each is
                    // let go before the next is built: the whole document at once would
                    // leave the heap 1.5 MB larger for good.
                    let mut operation = utoipa::openapi::path::Operation::new();
                    operation.security =
                        utoipa_axum::paste! { [<__path_ $handler>]::operation() }.security;
                    router = methods
                        .iter()
                        .fold(router, |router, method| router.on(method.to_method_filter(), $handler));
                    paths.add_path_operation(&path, methods, operation);
                )+
                (Vec::new(), paths, router)
            }
        }
    };
}

mod approvals;
pub mod auth;
mod extract;
mod identity;
mod mail;
mod ops;
mod ordering;
mod projects;
mod push;
mod review;
mod runners;
mod sessions;
mod skills;
mod tasks;
mod team_members;
mod templates;
pub mod terminal;
mod transcript;
mod web;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, Method, Request, header};
use axum::response::IntoResponse;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use crate::auth::trust::origin_allowed;
pub use extract::{Body, IdPath, number, only};

use crate::auth::routes::{Declared, RouteScopes};
use crate::auth::trust::Need;
use crate::config::Config;
use crate::domain::Domain;
use crate::error::Error;
use maestro_protocol::Scope;

/// Everything handlers share; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub domain: Domain,
    pub config: Arc<Config>,
    pub started: Instant,
    /// Open legacy WebSocket connections, for `/ws-status`.
    pub ws_clients: Arc<AtomicUsize>,
    /// Cancelled when the server begins to shut down.
    pub shutdown: CancellationToken,
    /// Socket.IO (`/ui`, `/mobile`), served under `/socket.io/` by [`router`].
    pub socketio: crate::realtime::socketio::Realtime,
    /// Who may do what; runs before routing (see [`auth::gate`]).
    pub gate: crate::auth::Gate,
    /// Web Push: the VAPID key and the sender's counters.
    pub push: crate::push::Push,
    /// The live terminals of agent sessions (see [`crate::terminal`]).
    pub terminals: crate::terminal::Terminals,
}

/// What a router of documented routes is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Docs {
    /// The OpenAPI document: every operation and the schemas of its bodies and parameters.
    Full,
    /// Serving: the routes, and of each operation only what the gate reads (its scope). The
    /// rest (schemas, responses, descriptions) is generated code and allocations that a
    /// long-running server would otherwise keep mapped for nothing (docs/performance.md,
    /// "Idle memory").
    Scopes,
}

/// The API as an OpenAPI-documented router: every route is registered together with its
/// documentation, so the spec cannot list a route the server lacks or miss one it serves.
fn documented(built_for: Docs) -> OpenApiRouter<AppState> {
    let api = OpenApiRouter::new()
        .merge(projects::router(built_for))
        .merge(tasks::router(built_for))
        .merge(sessions::router(built_for))
        .merge(team_members::router(built_for))
        .merge(mail::router(built_for))
        .merge(approvals::router(built_for))
        .merge(runners::router(built_for))
        .merge(review::router(built_for))
        .merge(transcript::router(built_for))
        .merge(ordering::router(built_for))
        .merge(skills::router(built_for))
        .merge(templates::router(built_for))
        .merge(auth::router(built_for))
        .merge(identity::router(built_for))
        .merge(push::router(built_for));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest("/api", api)
        .merge(ops::router(built_for))
}

#[derive(OpenApi)]
#[openapi(
    modifiers(&CredentialScheme),
    info(
        title = "Maestro",
        description = "Coordination server for fleets of AI coding agents. A drop-in replacement for the upstream maestro-server API; see docs/compatibility.md for deliberate differences."
    ),
    tags(
        (name = "projects"), (name = "tasks"), (name = "sessions"), (name = "team-members"),
        (name = "mail"), (name = "ordering"), (name = "skills"), (name = "templates"),
        (name = "operations"), (name = "auth"), (name = "push"), (name = "runners"),
        (name = "review")
    )
)]
struct ApiDoc;

/// The `maestro` security scheme every route's `security` names with the scope it needs.
struct CredentialScheme;

impl utoipa::Modify for CredentialScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "A token (`maestro token create`) or a paired device's cookie. Each operation's \
                 requirement names the scope it needs: read < respond < operate < admin; runner \
                 stands apart. Requests from this machine need none (AUTH=local).",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme(crate::auth::routes::SCHEME, SecurityScheme::Http(scheme));
    }
}

/// The OpenAPI 3.1 description of every route the router serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented(Docs::Full).split_for_parts().1
}

/// Routes outside the OpenAPI document, with what they need (the documented ones declare it in
/// their entry).
const UNDOCUMENTED: &[Declared] = &[
    Declared {
        path: "/api/openapi.json",
        method: Method::GET,
        need: Need::Scope(Scope::Read),
    },
    Declared {
        path: "/api/docs",
        method: Method::GET,
        need: Need::Scope(Scope::Read),
    },
];

/// The scope of every route, as the gate reads it: fails when one declares none.
pub fn route_scopes() -> Result<RouteScopes, String> {
    scopes_of(&documented(Docs::Scopes).split_for_parts().1)
}

fn scopes_of(spec: &utoipa::openapi::OpenApi) -> Result<RouteScopes, String> {
    let declared: Vec<Declared> = UNDOCUMENTED
        .iter()
        .chain(terminal::DECLARED)
        .cloned()
        .collect();
    RouteScopes::new(spec, &declared)
}

/// The documented routes, built once at start-up without their schemas ([`Docs::Scopes`]):
/// the routes and the scope of each (for the gate). The OpenAPI document itself (about 270 KB
/// of JSON) is built and written only when someone asks for it ([`served_spec`]).
pub struct Api {
    pub routes: axum::Router<AppState>,
    pub scopes: RouteScopes,
}

impl Api {
    pub fn build() -> Result<Self, String> {
        let (routes, spec) = documented(Docs::Scopes).split_for_parts();
        Ok(Self {
            routes,
            scopes: scopes_of(&spec)?,
        })
    }
}

/// `/api/openapi.json`: the document, written on the first request and kept.
async fn served_spec() -> Result<impl IntoResponse, Error> {
    static SPEC: std::sync::OnceLock<axum::body::Bytes> = std::sync::OnceLock::new();
    let spec = match SPEC.get() {
        Some(spec) => spec.clone(),
        None => {
            let written = tokio::task::spawn_blocking(|| {
                openapi()
                    .to_pretty_json()
                    .map(axum::body::Bytes::from)
                    .map_err(|e| Error::Internal(format!("cannot write the OpenAPI document: {e}")))
            })
            .await
            .map_err(|e| Error::Internal(format!("writing the OpenAPI document: {e}")))??;
            SPEC.get_or_init(|| written).clone()
        }
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], spec))
}

/// The complete application router, around the `routes` of [`Api::build`].
pub fn router(state: AppState, routes: axum::Router<AppState>) -> Router {
    routes
        .route("/api/openapi.json", axum::routing::get(served_spec))
        .route("/", axum::routing::get(web::index))
        .route("/agents", axum::routing::get(index_page))
        .route("/api/docs", axum::routing::get(docs_page))
        .route("/socket.io", axum::routing::get(socketio).post(socketio))
        .route("/socket.io/", axum::routing::get(socketio).post(socketio))
        .merge(terminal::router())
        .fallback(web::fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(axum::middleware::from_fn_with_state(
            crate::realtime::legacy::LegacyState {
                domain: state.domain.clone(),
                config: state.config.clone(),
                clients: state.ws_clients.clone(),
                shutdown: state.shutdown.clone(),
            },
            crate::realtime::legacy::upgrade_middleware,
        ))
        .layer(cors(&state.config))
        // Outermost: nothing is routed, answered by CORS or upgraded before the gate decides.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::gate,
        ))
        .with_state(state)
}

/// `/socket.io/`: Engine.IO polling and WebSocket upgrades, for Socket.IO `/ui` and `/mobile`.
async fn socketio(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request<axum::body::Body>,
) -> axum::response::Response {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|info| info.0);
    state.socketio.serve(req, peer).await
}

/// The agents' help page at `/agents`: what this server is and where to go from here.
async fn index_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("index.html"))
}

/// A self-contained page that renders `/api/openapi.json` (no external scripts).
async fn docs_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("docs.html"))
}

async fn not_found(req: Request<axum::body::Body>) -> impl IntoResponse {
    Error::RouteNotFound {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
}

async fn method_not_allowed(req: Request<axum::body::Body>) -> impl IntoResponse {
    Error::MethodNotAllowed {
        method: req.method().to_string(),
        path: req.uri().path().to_owned(),
    }
}

fn cors(config: &Config) -> CorsLayer {
    let config = config.clone();
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(
            move |origin: &HeaderValue, parts| {
                let host = parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok());
                origin
                    .to_str()
                    .is_ok_and(|o| origin_allowed(o, host, &config))
            },
        ))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            header::HeaderName::from_static("x-requested-with"),
            header::HeaderName::from_static("idempotency-key"),
            header::HeaderName::from_static(crate::auth::CSRF_HEADER),
        ])
        .expose_headers([
            header::CONTENT_LENGTH,
            header::HeaderName::from_static("x-request-id"),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The server's routes are built without the document's schemas: the same paths and
    /// methods as the document, each with the same security (so the same scopes).
    #[test]
    fn served_routes_are_the_documented_ones() {
        let full = documented(Docs::Full).split_for_parts().1;
        let served = documented(Docs::Scopes).split_for_parts().1;
        let security = |paths: &utoipa::openapi::path::Paths| {
            let mut all: Vec<(String, String)> = Vec::new();
            for (path, item) in serde_json::to_value(paths).unwrap().as_object().unwrap() {
                for (method, op) in item.as_object().unwrap() {
                    all.push((format!("{method} {path}"), op["security"].to_string()));
                }
            }
            all
        };
        let documented = security(&full.paths);
        assert!(
            documented.len() > 100,
            "the document lists the API: {documented:?}"
        );
        assert_eq!(security(&served.paths), documented);
        assert!(
            full.components
                .as_ref()
                .is_some_and(|c| c.schemas.len() > 50),
            "the document has its schemas"
        );
        assert!(
            served
                .components
                .as_ref()
                .is_none_or(|c| c.schemas.is_empty()),
            "serving builds none"
        );
    }
}
