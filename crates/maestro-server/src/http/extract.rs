//! Extractors that turn every bad input into the one error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

use super::AppState;
use crate::error::Error;

/// A JSON body. Lenient like upstream about the `Content-Type` and about an empty body (read as
/// `{}`), strict about syntax (400), types (400) and size (413).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for Body<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Error> {
        // A body trickled in to hold the request open is cut off: 408, and nothing is done.
        let limit = Duration::from_secs(state.config.body_read_timeout_secs);
        let read = tokio::time::timeout(limit, Bytes::from_request(req, state))
            .await
            .map_err(|_| Error::Coded {
                status: StatusCode::REQUEST_TIMEOUT,
                code: "REQUEST_TIMEOUT",
                message: format!(
                    "the request body did not arrive within {} s",
                    limit.as_secs()
                ),
                details: None,
            })?;
        let bytes = read.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge {
                    limit: state.config.max_body_bytes,
                }
            } else {
                Error::validation(format!("Cannot read request body: {rej}"))
            }
        })?;
        let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::validation(format!("Malformed JSON body: {e}")))?;
        // Every body is an object; serde would otherwise read an array positionally into a
        // struct (`["x"]` as `{name: "x"}`).
        if !value.is_object() {
            return Err(Error::validation(
                "Invalid request body: expected a JSON object",
            ));
        }
        T::deserialize(value)
            .map(Self)
            .map_err(|e| Error::validation(format!("Invalid request body: {e}")))
    }
}

/// Path parameters; a malformed segment is a 400, not a 500.
pub struct IdPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for IdPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Self(v))
            .map_err(|rej| Error::validation(format!("Invalid URL parameters: {rej}")))
    }
}

/// The query parameter `name` as a non-negative integer, if given.
pub fn number<T: std::str::FromStr>(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<Option<T>, Error> {
    q.get(name)
        .map(|v| {
            v.parse::<T>().map_err(|_| {
                Error::validation(format!("{name} must be a non-negative integer, not '{v}'"))
            })
        })
        .transpose()
}

/// Rejects query keys outside `allowed`, in upstream's error style.
pub fn only(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), Error> {
    let unknown: Vec<_> = q
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    Err(Error::Validation {
        message: "Invalid query parameters".into(),
        details: Some(json!(
            unknown
                .iter()
                .map(|k| json!({ "path": k, "message": "Unrecognized key" }))
                .collect::<Vec<_>>()
        )),
    })
}
