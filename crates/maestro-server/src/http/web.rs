//! The phone web app (`web/`), embedded in the binary and served at `/`.
//!
//! `web/dist` is compiled in by `rust-embed` (release builds carry the files; debug builds read
//! them from disk, so `npm run build` shows up without recompiling). `build.rs` makes sure the
//! folder exists, with a placeholder page, so the server compiles before the app is built.
//!
//! Routing: a GET for a file of the app serves it; any other GET outside `/api` and
//! `/socket.io` from a browser (it accepts HTML) gets `index.html`, so the app's own paths
//! (`/pair`, …) load the app; everything else falls through to the API's JSON 404.
//!
//! Caching: Vite names the files under `assets/` after a hash of their content, so they are
//! cached for a year; `index.html`, the manifest and the service worker must be revalidated on
//! every load, or a phone would keep an old app.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A fingerprint of `web/dist` at build time: using it makes the crate recompile when the app
/// is rebuilt (see `build.rs`).
const STAMP: &str = env!("MAESTRO_WEB_STAMP");

#[derive(rust_embed::RustEmbed)]
#[folder = "../../web/dist/"]
struct Dist;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const REVALIDATE: &str = "no-cache";

/// What the app's page may load: only this origin (its scripts, styles, API and socket).
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; manifest-src 'self'; worker-src 'self'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'; object-src 'none'";

/// `GET /`: the app.
pub async fn index() -> Response {
    serve("index.html").unwrap_or_else(|| StatusCode::NOT_FOUND.into_response())
}

/// The router's fallback: a file of the app, the app's page for a browser's navigation, or
/// the API's JSON 404 / 405.
pub async fn fallback(req: Request<Body>) -> Response {
    let path = req.uri().path();
    if (req.method() == Method::GET || req.method() == Method::HEAD) && is_app_path(path) {
        let rel = path.trim_start_matches('/');
        if !rel.is_empty()
            && let Some(response) = serve(rel)
        {
            return response;
        }
        if accepts_html(req.headers()) {
            return index().await;
        }
    }
    super::not_found(req).await.into_response()
}

/// Paths the app may answer: not the API, not Socket.IO, and nothing that could climb out of
/// the embedded folder.
fn is_app_path(path: &str) -> bool {
    let reserved = ["/api", "/socket.io"];
    !reserved
        .iter()
        .any(|r| path == *r || path.starts_with(&format!("{r}/")))
        && !path.split('/').any(|seg| seg == ".." || seg == ".")
        && !path.contains('\\')
        && !path.contains("//")
}

/// A browser navigating (as opposed to `fetch`, curl or an agent asking for JSON).
fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The embedded file at `rel`, with its type and cache policy.
fn serve(rel: &str) -> Option<Response> {
    let file = Dist::get(rel)?;
    let mut response = Response::new(Body::from(file.data.into_owned()));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(rel)),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control(rel)),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if rel == "index.html" {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(
            header::HeaderName::from_static("x-maestro-web"),
            HeaderValue::from_static(STAMP),
        );
    }
    Some(response)
}

fn cache_control(rel: &str) -> &'static str {
    if rel.starts_with("assets/") {
        IMMUTABLE
    } else {
        // index.html, sw.js, manifest.webmanifest, icons: small, and must not go stale.
        REVALIDATE
    }
}

fn content_type(rel: &str) -> &'static str {
    let ext = rel.rsplit_once('.').map_or("", |(_, ext)| ext);
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "webp" => "image/webp",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths_exclude_the_api_and_traversal() {
        for ok in [
            "/",
            "/pair",
            "/assets/index-abc.js",
            "/fleet/x",
            "/apix",
            "/socket.iox",
        ] {
            assert!(is_app_path(ok), "{ok}");
        }
        for bad in [
            "/api",
            "/api/tasks",
            "/socket.io",
            "/socket.io/",
            "/../Cargo.toml",
            "/assets/../../x",
            "/./index.html",
            "/a\\b",
            "//etc/passwd",
        ] {
            assert!(!is_app_path(bad), "{bad}");
        }
    }

    #[test]
    fn hashed_assets_are_immutable_and_the_shell_is_revalidated() {
        assert_eq!(cache_control("assets/index-CNxgAmTS.js"), IMMUTABLE);
        assert_eq!(cache_control("index.html"), REVALIDATE);
        assert_eq!(cache_control("sw.js"), REVALIDATE);
        assert_eq!(cache_control("manifest.webmanifest"), REVALIDATE);
        assert_eq!(
            content_type("assets/a.js"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            content_type("manifest.webmanifest"),
            "application/manifest+json"
        );
    }

    #[test]
    fn index_html_is_always_embedded() {
        // build.rs writes a placeholder when the app has not been built.
        let index = Dist::get("index.html").expect("web/dist/index.html");
        assert!(String::from_utf8_lossy(&index.data).contains("<title>Maestro</title>"));
    }
}
