//! What a WHIP client (RFC 9725) decides, apart from I/O: which answers to a POST are a
//! session, where its resource is, what a DELETE may answer, and how long to wait before the
//! next try. The HTTP and the peer connection are in `publish/mod.rs` and `webrtc/publish.rs`.

use crate::ingest::health::Backoff;
use std::time::Duration;
use url::Url;

/// First and longest wait between publish attempts. A target that dropped us is tried again
/// after a second; one that keeps failing, every half minute at most.
pub const RETRY_MIN: Duration = Duration::from_secs(1);
pub const RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WhipError {
    #[error("the target answered {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Refused { status: u16, detail: Option<String> },
    #[error("the target answered 201 with {0}, not application/sdp")]
    NotSdp(String),
    #[error("the target answered 201 without a Location")]
    NoLocation,
    #[error("the target's Location '{0}' is not a URL")]
    BadLocation(String),
    #[error("cannot reach the target: {0}")]
    Unreachable(String),
    #[error("WebRTC: {0}")]
    WebRtc(String),
}

/// Checks the answer to the offer's POST: exactly 201 with an SDP body (RFC 9725 4.2).
/// `detail` is what an error body said (a problem's detail, or the start of a text body).
pub fn check_created(status: u16, content_type: Option<&str>, detail: Option<String>) -> Result<(), WhipError> {
    if status != 201 {
        return Err(WhipError::Refused { status, detail });
    }
    let media_type = content_type.and_then(|c| c.split(';').next()).map(|c| c.trim().to_ascii_lowercase());
    match media_type.as_deref() {
        Some("application/sdp") => Ok(()),
        other => Err(WhipError::NotSdp(other.unwrap_or("no Content-Type").to_owned())),
    }
}

/// The session's resource: `Location` resolved against the URL that answered (after any 307
/// or 308), so relative, root-relative and absolute forms all work, a query included.
pub fn resource_url(answered: &Url, location: Option<&str>) -> Result<Url, WhipError> {
    let location = location.map(str::trim).filter(|l| !l.is_empty()).ok_or(WhipError::NoLocation)?;
    let url = answered.join(location).map_err(|_| WhipError::BadLocation(location.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(WhipError::BadLocation(location.to_owned()));
    }
    Ok(url)
}

/// A DELETE of our resource succeeded, or it is gone anyway (a restarted target forgot it).
pub fn delete_done(status: u16) -> bool {
    matches!(status, 200 | 202 | 204 | 404 | 410)
}

/// The wait before the next attempt: the backoff, never shorter than the target's Retry-After.
pub fn next_wait(backoff: &mut Backoff, jitter: f64, retry_after: Option<Duration>) -> Duration {
    let wait = backoff.next_delay(jitter);
    retry_after.map_or(wait, |r| wait.max(r.min(Duration::from_secs(600))))
}

/// A short, single-line excerpt of an error body for the status API (problem bodies give their
/// `detail` or `title`).
pub fn error_detail(content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let text = if content_type.is_some_and(|c| c.contains("json")) {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("detail").or_else(|| v.get("title")).and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| text.into_owned())
    } else {
        text.into_owned()
    };
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(200).collect();
    (!line.is_empty()).then_some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_201_with_sdp_is_a_session() {
        assert_eq!(check_created(201, Some("application/sdp"), None), Ok(()));
        assert_eq!(check_created(201, Some("Application/SDP; charset=utf-8"), None), Ok(()));
        assert_eq!(check_created(200, Some("application/sdp"), None), Err(WhipError::Refused { status: 200, detail: None }));
        assert_eq!(check_created(201, Some("text/html"), None), Err(WhipError::NotSdp("text/html".into())));
        assert_eq!(check_created(201, None, None), Err(WhipError::NotSdp("no Content-Type".into())));
        let refused = check_created(403, Some("text/plain"), Some("bad token".into())).expect_err("refused");
        assert_eq!(refused.to_string(), "the target answered 403: bad token");
    }

    #[test]
    fn locations_resolve_against_the_url_that_answered() {
        let answered = Url::parse("https://sfu.example:8443/whip/endpoint/abc?room=1").expect("url");
        let r = |l: &str| resource_url(&answered, Some(l)).map(|u| u.to_string()).expect("resolves");
        assert_eq!(r("/whip/resource/abc"), "https://sfu.example:8443/whip/resource/abc");
        assert_eq!(r("abc/res?x=1"), "https://sfu.example:8443/whip/endpoint/abc/res?x=1");
        assert_eq!(r("https://other.example/r/1"), "https://other.example/r/1");
        assert_eq!(r("//cdn.example/r/2"), "https://cdn.example/r/2");
        // Broadcast Box answers the same fixed Location for every session.
        assert_eq!(r("/api/whip"), "https://sfu.example:8443/api/whip");
        assert_eq!(resource_url(&answered, None), Err(WhipError::NoLocation));
        assert_eq!(resource_url(&answered, Some("  ")), Err(WhipError::NoLocation));
        assert!(matches!(resource_url(&answered, Some("javascript:alert(1)")), Err(WhipError::BadLocation(_))));
    }

    #[test]
    fn deletes_and_waits() {
        assert!(delete_done(200) && delete_done(204) && delete_done(404));
        assert!(!delete_done(500) && !delete_done(401));
        let mut b = Backoff::new(RETRY_MIN, RETRY_MAX);
        assert_eq!(next_wait(&mut b, 0.5, None), RETRY_MIN);
        assert_eq!(next_wait(&mut b, 0.5, Some(Duration::from_secs(20))), Duration::from_secs(20), "Retry-After is a floor");
        for _ in 0..10 {
            next_wait(&mut b, 0.5, None);
        }
        assert_eq!(next_wait(&mut b, 0.5, None), RETRY_MAX, "capped");
        assert_eq!(next_wait(&mut b, 0.5, Some(Duration::from_secs(86_400))), Duration::from_secs(600), "a day-long Retry-After is capped");
    }

    #[test]
    fn error_details_are_short_single_lines() {
        assert_eq!(error_detail(Some("application/problem+json"), br#"{"title":"Bad","detail":"no such room"}"#).as_deref(), Some("no such room"));
        assert_eq!(error_detail(Some("text/plain"), b"Unauthorized\n  token\n").as_deref(), Some("Unauthorized token"));
        assert_eq!(error_detail(None, b"").as_deref(), None);
        assert_eq!(error_detail(None, &[b'x'; 1000]).map(|d| d.len()), Some(200));
    }
}
