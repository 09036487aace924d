//! The scope each route needs, read from where the route is registered.
//!
//! A documented route declares its scope in its OpenAPI entry, next to its handler:
//! `security(("maestro" = ["operate"]))`, or `security(())` for a route anyone who passed the
//! `Host`/`Origin` checks may call (the pairing exchange, `/health`). The few routes outside the
//! OpenAPI document (the terminal WebSockets) declare theirs in a [`Declared`] list next to their
//! registration. [`RouteScopes`] turns both into one table the gate looks requests up in, before
//! routing, and refuses to be built when a route declares nothing (or something unknown): a new
//! route cannot silently fall back to a default scope.

use std::collections::BTreeMap;

use axum::http::Method;
use maestro_protocol::Scope;
use utoipa::openapi::OpenApi;
use utoipa::openapi::path::HttpMethod;

use super::trust::Need;

/// The security scheme name the OpenAPI document uses for Maestro's credentials.
pub const SCHEME: &str = "maestro";

/// A route outside the OpenAPI document and what it needs.
#[derive(Debug, Clone)]
pub struct Declared {
    /// A path template in the router's syntax (`/api/sessions/{id}/terminal`).
    pub path: &'static str,
    pub method: Method,
    pub need: Need,
}

/// Path template → method → need, for every declared route.
pub struct RouteScopes {
    table: matchit::Router<BTreeMap<String, Need>>,
    /// Every declared (method, path, need), for listing and tests.
    routes: Vec<(Method, String, Need)>,
}

impl RouteScopes {
    /// The table of `spec`'s operations and `extra`. Fails with every route that declares no
    /// scope, more than one, or one that is not a scope.
    pub fn new(spec: &OpenApi, extra: &[Declared]) -> Result<Self, String> {
        let mut by_path: BTreeMap<String, BTreeMap<String, Need>> = BTreeMap::new();
        let mut problems = Vec::new();
        for (path, item) in &spec.paths.paths {
            for (method, op) in operations(item) {
                match declared_need(op.security.as_deref()) {
                    Ok(need) => {
                        by_path
                            .entry(path.clone())
                            .or_default()
                            .insert(method.to_owned(), need);
                    }
                    Err(why) => problems.push(format!("{method} {path}: {why}")),
                }
            }
        }
        for d in extra {
            by_path
                .entry(d.path.to_owned())
                .or_default()
                .insert(d.method.as_str().to_owned(), d.need);
        }
        if !problems.is_empty() {
            return Err(format!(
                "routes without a declared scope: {}",
                problems.join("; ")
            ));
        }
        let mut table = matchit::Router::new();
        let mut routes = Vec::new();
        for (path, methods) in by_path {
            for (method, need) in &methods {
                let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
                routes.push((method, path.clone(), *need));
            }
            table
                .insert(path.clone(), methods)
                .map_err(|e| format!("{path}: {e}"))?;
        }
        Ok(Self { table, routes })
    }

    /// What a request to `method path` needs, when a route declares it. `HEAD` is answered
    /// like `GET`.
    pub fn lookup(&self, method: &Method, path: &str) -> Option<Need> {
        let methods = self.table.at(path).ok()?.value;
        let method = if *method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        methods.get(method.as_str()).copied()
    }

    /// Every declared route: method, path template, need.
    pub fn routes(&self) -> &[(Method, String, Need)] {
        &self.routes
    }
}

fn operations(
    item: &utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = (&'static str, &utoipa::openapi::path::Operation)> {
    [
        (HttpMethod::Get, &item.get),
        (HttpMethod::Put, &item.put),
        (HttpMethod::Post, &item.post),
        (HttpMethod::Delete, &item.delete),
        (HttpMethod::Patch, &item.patch),
        (HttpMethod::Head, &item.head),
        (HttpMethod::Options, &item.options),
    ]
    .into_iter()
    .filter_map(|(method, op)| {
        let name = match method {
            HttpMethod::Get => "GET",
            HttpMethod::Put => "PUT",
            HttpMethod::Post => "POST",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Head => "HEAD",
            HttpMethod::Options => "OPTIONS",
            HttpMethod::Trace => "TRACE",
        };
        op.as_ref().map(|op| (name, op))
    })
}

/// `security(())` → public; `security(("maestro" = ["<scope>"]))` → that scope.
fn declared_need(
    security: Option<&[utoipa::openapi::security::SecurityRequirement]>,
) -> Result<Need, String> {
    let Some([requirement]) = security else {
        return Err("declare exactly one security requirement".into());
    };
    // The requirement serialises as `{}` (public) or `{"maestro": ["operate"]}`.
    let value = serde_json::to_value(requirement).map_err(|e| e.to_string())?;
    let map = value.as_object().ok_or("not an object")?;
    if map.is_empty() {
        return Ok(Need::Public);
    }
    let scopes = map
        .get(SCHEME)
        .and_then(|v| v.as_array())
        .filter(|_| map.len() == 1)
        .ok_or_else(|| format!("the only scheme must be '{SCHEME}'"))?;
    match scopes.as_slice() {
        [serde_json::Value::String(name)] => Scope::parse(name)
            .map(Need::Scope)
            .ok_or_else(|| format!("'{name}' is not a scope")),
        _ => Err("name exactly one scope".into()),
    }
}
