//! The one error type that becomes HTTP responses: an RFC 9457 problem body and its status.
//! Bad input from clients is answered, not logged as a relay error.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use scopecast_shared::problem::{Problem, PROBLEM_CONTENT_TYPE};

#[derive(Debug)]
pub struct ApiError {
    pub problem: Problem,
    /// Headers the status calls for (Retry-After, WWW-Authenticate).
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self { problem: Problem::new(status.as_u16(), kind, title).with_detail(detail), headers: Vec::new() }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_retry_after(self, seconds: u64) -> Self {
        self.with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
    }

    pub fn unknown_stream(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown-stream", "Unknown stream", format!("no stream named '{name}'"))
    }

    pub fn unknown_session() -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown-session", "Unknown session", "no such WHEP session (it ended or never existed)")
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", "no such page or endpoint")
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", detail)
    }
}

/// A JSON body that did not parse (400) or did not fit the type (422, with what serde said).
impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(e: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(e.status(), "bad-request", "Bad request", e.body_text())
    }
}

/// A change that needs decoded pictures, asked of a passed-through stream.
impl From<crate::stream::NotDecoded> for ApiError {
    fn from(e: crate::stream::NotDecoded) -> Self {
        Self::new(StatusCode::CONFLICT, "not-decoded", "Stream not decoded", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.problem).unwrap_or_default();
        let mut response = (status, [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_CONTENT_TYPE))], body).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}
