//! RFC 9457 problem details: the JSON body of every error the relay returns.

use serde::{Deserialize, Serialize};

/// Media type of a [`Problem`] body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem. `type` is a URI naming the kind of problem, so that clients can branch on
/// it without parsing `detail`, which is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Problem {
    /// `kind` is a short slug; it is turned into a `urn:scopecast:problem:` URI.
    pub fn new(status: u16, kind: &str, title: &str) -> Self {
        Self { kind: format!("urn:scopecast:problem:{kind}"), title: title.to_owned(), status, detail: None }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// The slug given to [`Problem::new`].
    pub fn slug(&self) -> &str {
        self.kind.strip_prefix("urn:scopecast:problem:").unwrap_or(&self.kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_rfc9457_field_names() {
        let p = Problem::new(404, "unknown-stream", "Unknown stream").with_detail("no stream 'x'");
        let json = serde_json::to_value(&p).expect("serializable");
        assert_eq!(json["type"], "urn:scopecast:problem:unknown-stream");
        assert_eq!(json["status"], 404);
        assert_eq!(json["detail"], "no stream 'x'");
        assert_eq!(p.slug(), "unknown-stream");
    }
}
