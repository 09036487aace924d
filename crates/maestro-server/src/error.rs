//! The server's error type and its one JSON shape.
//!
//! Domain code returns [`Error`]; the HTTP layer turns it into
//! `{error: true, statusCode, code, message, details?}` — the fields upstream clients read.
//! Internal causes (storage failures) are logged, never sent.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maestro_protocol::ErrorBody;
use serde_json::Value;

/// Result alias for domain and storage code.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad input (400 `VALIDATION_ERROR`).
    #[error("{message}")]
    Validation {
        message: String,
        details: Option<Value>,
    },
    /// `<Resource> with id '<id>' not found` (404 `NOT_FOUND`).
    #[error("{resource} with id '{id}' not found")]
    NotFound { resource: &'static str, id: String },
    /// The operation contradicts current state (409 `CONFLICT`).
    #[error("{0}")]
    Conflict(String),
    /// The operation breaks a rule of the domain (422 `BUSINESS_RULE_ERROR`).
    #[error("{0}")]
    BusinessRule(String),
    /// Not allowed on this entity (403 `FORBIDDEN`).
    #[error("{0}")]
    Forbidden(String),
    /// Body larger than the configured limit (413 `PAYLOAD_TOO_LARGE`).
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// No route for this path (404 `NOT_FOUND`).
    #[error("no route for {method} {path}")]
    RouteNotFound { method: String, path: String },
    /// Route exists, method does not (405 `METHOD_NOT_ALLOWED`).
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    /// The backend cannot take writes right now (503 `UNAVAILABLE`).
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// A storage failure; details are logged, not returned (500 `INTERNAL_ERROR`).
    #[error("storage error: {0}")]
    Storage(String),
    /// An error with its own status and code (spawn keeps upstream's snake_case codes).
    #[error("{message}")]
    Coded {
        status: StatusCode,
        code: &'static str,
        message: String,
        details: Option<Value>,
    },
    /// Any other bug (500 `INTERNAL_ERROR`).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A 400 with a message.
    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            details: None,
        }
    }

    /// A 404 for `resource` `id`.
    pub fn not_found(resource: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            resource,
            id: id.into(),
        }
    }

    /// HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound { .. } | Self::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::BusinessRule(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Storage(_) | Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Coded { status, .. } => *status,
        }
    }

    /// The stable `code` string clients can switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation { .. } => "VALIDATION_ERROR",
            Self::NotFound { .. } | Self::RouteNotFound { .. } => "NOT_FOUND",
            Self::Conflict(_) => "CONFLICT",
            Self::BusinessRule(_) => "BUSINESS_RULE_ERROR",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            Self::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Storage(_) | Self::Internal(_) => "INTERNAL_ERROR",
            Self::Coded { code, .. } => code,
        }
    }

    /// The JSON body sent for this error.
    pub fn body(&self) -> ErrorBody {
        let message = match self {
            Self::Storage(_) | Self::Internal(_) => "Internal server error".to_owned(),
            other => other.to_string(),
        };
        ErrorBody {
            error: true,
            status_code: self.status().as_u16(),
            code: self.code().to_owned(),
            message,
            details: match self {
                Self::Validation { details, .. } | Self::Coded { details, .. } => details.clone(),
                _ => None,
            },
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        (status, axum::Json(self.body())).into_response()
    }
}

impl From<redb::Error> for Error {
    fn from(e: redb::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self { Self::Storage(e.to_string()) }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);
