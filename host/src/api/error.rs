//! The one place errors become HTTP status codes and JSON bodies.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::index::IndexError;
use crate::storage::StorageError;
use crate::tenants::{CatalogError, ChangeError};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// The `Allow` header of a 405.
    allow: Option<String>,
    /// More fields of the body, for the caller's program.
    more: Vec<(&'static str, serde_json::Value)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), allow: None, more: Vec::new() }
    }

    /// The error with another field in its body.
    pub fn with(mut self, name: &'static str, value: serde_json::Value) -> Self {
        self.more.push((name, value));
        self
    }

    /// A 405 naming the methods the path allows.
    pub fn method_not_allowed(message: impl Into<String>, allowed: &[&str]) -> Self {
        ApiError {
            allow: Some(allowed.join(", ")),
            ..Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message)
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub(super) fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let mut body = serde_json::json!({"code": self.code, "message": self.message, "request_id": request_id});
        for (name, value) in self.more {
            body[name] = value;
        }
        let mut r = super::json(self.status, &body);
        if let Some(allow) = self.allow.and_then(|a| hyper::header::HeaderValue::from_str(&a).ok()) {
            r.headers_mut().insert(hyper::header::ALLOW, allow);
        }
        r
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::Stopped => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match &e {
            StorageError::NotFound { .. } => ApiError::new(StatusCode::NOT_FOUND, "FileNotFound", e.to_string()),
            StorageError::Backend { .. } => ApiError::new(StatusCode::BAD_GATEWAY, "StorageUnavailable", e.to_string()),
            _ => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", e.to_string()),
        }
    }
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Rule(r) => ApiError::bad(r.code, r.to_string()),
            ChangeError::Invalid(c) => ApiError::bad("InvalidParameter", c.to_string()),
            ChangeError::Conflict(code, m) => ApiError::new(StatusCode::CONFLICT, code, m),
            ChangeError::NotFound(code, m) => ApiError::new(StatusCode::NOT_FOUND, code, m),
            ChangeError::Storage(s) => ApiError::bad("InvalidParameter.Storage", s.to_string()),
            ChangeError::Catalog(CatalogError::Stopped) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", e.to_string())
            }
            ChangeError::Catalog(CatalogError::Conflict(m)) => {
                ApiError::new(StatusCode::CONFLICT, "ConcurrentChange", m)
            }
            ChangeError::Catalog(CatalogError::Unavailable(m)) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ControlPlaneUnavailable", m)
            }
            ChangeError::Catalog(c) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", c.to_string()),
        }
    }
}
