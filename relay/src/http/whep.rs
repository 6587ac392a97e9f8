//! The WHEP endpoint (draft-ietf-wish-whep), its whole HTTP contract in one place.
//!
//! `POST /{stream}/whep` (application/sdp offer) -> 201 + answer + Location + ETag
//! `GET|HEAD /{stream}/whep` -> 204 (discovery);  `OPTIONS` -> 204 + Accept-Post
//! `PATCH /{stream}/whep/{id}` (application/trickle-ice-sdpfrag) -> 204; restart -> 422
//! `DELETE /{stream}/whep/{id}` -> 200; unknown -> 404
//! `GET|PUT /{stream}/whep/{id}/rendition` -> the viewer's rendition (JSON); PUT pins one by
//! name, or `auto`; an unknown name -> 422 (so does `POST ...?rendition=NAME`)
//! URLs match MediaMTX's, so existing players only change the host.

use super::error::ApiError;
use super::AppState;
use crate::lock;
use crate::stream::ViewerKind;
use crate::webrtc::ladder::ViewerLadder;
use crate::webrtc::sdp::{parse_fragment, FragmentError, OfferError};
use crate::webrtc::{TrickleError, WebRtcError};
use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use scopecast_shared::{OfflinePolicy, SourceState};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Largest accepted offer or fragment. Real offers are 2-8 KiB.
pub const MAX_BODY: usize = 64 * 1024;
pub const SDP: &str = "application/sdp";
pub const TRICKLE: &str = "application/trickle-ice-sdpfrag";
/// Seconds a player is told to wait before offering again to a stream that is not live.
const RETRY_AFTER_S: u64 = 2;

pub const ACCEPT_POST: HeaderName = HeaderName::from_static("accept-post");
pub const ACCEPT_PATCH: HeaderName = HeaderName::from_static("accept-patch");

/// The media type of a request, lowercased, without parameters.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Checks the content type, then reads the body up to [`MAX_BODY`].
pub(crate) async fn read_body(req: Request, expected: &str) -> Result<String, ApiError> {
    match media_type(req.headers()) {
        Some(t) if t == expected => {}
        other => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Unsupported media type",
                format!("expected Content-Type {expected}, got {}", other.as_deref().unwrap_or("none")),
            ));
        }
    }
    let too_large = || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Body too large", format!("the body is over {MAX_BODY} bytes"));
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let bytes = to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| too_large())?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "malformed-body", "Malformed body", "the body is not UTF-8 text"))
}

pub async fn post_offer(State(state): State<Arc<AppState>>, Path(name): Path<String>, req: Request) -> Result<Response, ApiError> {
    let stream = state.stream(&name)?;
    // `?rendition=NAME` pins one from the start; without it (or "auto") the relay chooses.
    let pinned = req.uri().query().and_then(|q| url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "rendition").map(|(_, v)| v.into_owned()));
    // Each offer costs an ICE agent and a DTLS handshake for up to 30 s: limit how fast one
    // client may make them, and how many there are.
    if let Some(ConnectInfo(client)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if let Err(wait) = lock(&state.session_limiter).check(client.ip(), Instant::now()) {
            return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too-many-requests", "Too many requests", "this client creates sessions too fast")
                .with_retry_after(wait.as_secs().max(1)));
        }
    }
    let limit = state.security.max_sessions;
    if state.session_count() >= limit {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too-many-sessions",
            "Too many sessions",
            format!("the relay serves at most {limit} sessions"),
        )
        .with_retry_after(RETRY_AFTER_S));
    }
    let offer = read_body(req, SDP).await?;
    // H.264 where the browser takes it; VP8 (its own renditions) where it does not.
    let codec = crate::webrtc::sdp::check_offer(&offer).map_err(|e| offer_refused(WebRtcError::Offer(e)))?;
    let steps = stream.ladder_for(codec, pinned.as_deref());
    if steps.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unsupported-offer",
            "Unsupported offer",
            match stream.config.source {
                crate::config::SourceConfig::Whep { .. } => {
                    format!("this browser takes no H.264, only VP8, and stream '{name}' relays another server's H.264 as it comes")
                }
                _ => format!(
                    "this browser takes no H.264, only VP8, and stream '{name}' passes the camera's H.264 through \
                     (VP8 is encoded from pictures: set video = \"transcode\" on the stream)"
                ),
            },
        ));
    }
    let ladder = ViewerLadder::new(steps, pinned.as_deref()).map_err(unknown_rendition)?;
    // From here the viewer counts: an on-demand camera starts while ICE and DTLS are under way.
    let demand = stream.demand.join(ViewerKind::WebRtc);
    if stream.config.offline_policy == OfflinePolicy::Reject && !stream.is_live() && stream.wait_started(stream.config.start_timeout).await != SourceState::Live
    {
        // The draft's rule for a stream that is not live; never 400, which players take for
        // "switch to server-sent offers".
        let why = stream.state().last_error.unwrap_or_else(|| "no frame yet".to_owned());
        return Err(ApiError::new(StatusCode::CONFLICT, "source-offline", "Source offline", format!("stream '{name}' is not live: {why}"))
            .with_retry_after(RETRY_AFTER_S));
    }
    let id = super::random_token();
    let on_end = {
        let state = Arc::downgrade(&state);
        let id = id.clone();
        Box::new(move || {
            if let Some(state) = state.upgrade() {
                state.end_session(&id);
            }
        })
    };
    let ice_servers = state.engine.ice_servers_for_session();
    let session = state.engine.create_session(&offer, &ice_servers, ladder, on_end).await.map_err(offer_refused)?;
    let answer = session.answer.clone();
    let etag = format!("\"{}\"", super::random_token());
    state.insert_session(&id, &name, etag.clone(), session, demand);
    tracing::info!(stream = name, session = %&id[..8], "WHEP session created");

    let mut response = (StatusCode::CREATED, answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    let location = format!("/{name}/whep/{id}");
    h.append(header::LINK, header_value(&super::whep_sse::link(&location)));
    h.insert(header::LOCATION, header_value(&location));
    h.insert(header::ETAG, header_value(&etag));
    for link in crate::turn::link_values(&ice_servers) {
        h.append(header::LINK, header_value(&link));
    }
    Ok(response)
}

/// Why an offer (a viewer's or a publisher's) could not be answered, as a response.
pub(crate) fn offer_refused(e: WebRtcError) -> ApiError {
    match e {
        WebRtcError::Offer(e @ OfferError::Malformed(_)) => ApiError::new(StatusCode::BAD_REQUEST, "malformed-sdp", "Malformed SDP offer", e.to_string()),
        // 422: the offer is well-formed but cannot be served. Not 400 (some players take 400
        // to mean "switch to server offers") and not 406 ("retry without audio").
        WebRtcError::Offer(e) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported-offer", "Unsupported offer", e.to_string()),
        WebRtcError::NoVideoInAnswer => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unsupported-offer", "Unsupported offer", e.to_string()),
        WebRtcError::Internal(err) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "negotiation-failed", "Negotiation failed", err.to_string()),
        other => ApiError::internal(other.to_string()),
    }
}

/// A PATCH's fragment applied to a session (a viewer's or a publisher's): 204 for candidates;
/// 200, the relay's new credentials and a new ETag for an ICE restart. `if_match` is the
/// request's If-Match, checked against `etag` first; `new_etag` stores the restart's.
pub(crate) async fn apply_patch(
    session: &crate::webrtc::Session,
    etag: &std::sync::Mutex<String>,
    req: Request<Body>,
    what: (&str, &str),
) -> Result<Response, ApiError> {
    let if_match = req.headers().contains_key(header::IF_MATCH);
    if let Some(tag) = req.headers().get(header::IF_MATCH).and_then(|v| v.to_str().ok()) {
        if tag.trim() != "*" && tag.trim() != *lock(etag) {
            return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "etag-mismatch", "Precondition failed", "If-Match does not match the session's ETag"));
        }
    }
    let text = read_body(req, TRICKLE).await?;
    let frag = parse_fragment(&text)
        .map_err(|e: FragmentError| ApiError::new(StatusCode::BAD_REQUEST, "malformed-fragment", "Malformed SDP fragment", e.to_string()))?;
    let restarted = session.patch(&frag, if_match).await.map_err(|e| match e {
        TrickleError::RestartWithoutIfMatch => ApiError::new(StatusCode::PRECONDITION_REQUIRED, "if-match-required", "Precondition required", e.to_string()),
        TrickleError::RestartIncomplete => ApiError::new(StatusCode::BAD_REQUEST, "malformed-fragment", "Malformed SDP fragment", e.to_string()),
        // 422 tells the client to send a new offer with POST instead (the player does).
        TrickleError::RestartFailed(msg) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ice-restart-failed", "ICE restart failed", msg),
        TrickleError::Candidate(msg) => ApiError::new(StatusCode::BAD_REQUEST, "bad-candidate", "Candidate rejected", msg),
    })?;
    match restarted {
        None => Ok(StatusCode::NO_CONTENT.into_response()),
        // An ICE restart: 200 with the relay's new credentials and candidates, and a new ETag
        // (the session's state changed; the next restart must name this one).
        Some(answer) => {
            let new_etag = format!("\"{}\"", super::random_token());
            *lock(etag) = new_etag.clone();
            let (stream, id) = what;
            tracing::info!(stream, session = %&id[..8.min(id.len())], "ICE restart");
            let mut response = (StatusCode::OK, answer).into_response();
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(TRICKLE));
            response.headers_mut().insert(header::ETAG, header_value(&new_etag));
            Ok(response)
        }
    }
}

/// Values built from validated stream names, hex tokens and configured URLs are header-safe;
/// anything else degrades to an empty value rather than a panic.
pub(crate) fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// GET/HEAD on the endpoint: it exists, and takes offers.
pub async fn endpoint_info(State(state): State<Arc<AppState>>, Path(stream): Path<String>) -> Result<Response, ApiError> {
    state.stream(&stream)?;
    Ok((StatusCode::NO_CONTENT, [(ACCEPT_POST, HeaderValue::from_static(SDP))]).into_response())
}

/// What OPTIONS answers on WHEP URLs. The CORS layer answers every OPTIONS as a preflight, so
/// this middleware, outside it, adds to that answer:
/// - WHEP's discovery headers: `Accept-Post` on an endpoint, `Accept-Patch` on a session;
/// - on an endpoint, when the request is not a preflight, the ICE servers, TURN credentials
///   included, before the offer, so that a client's first offer gathers relay candidates (the
///   201's Links come too late for the offer they answer; MediaMTX's WHEP client asks this way
///   too). They are exposed to a cross-origin script, and credentials go only to a caller with
///   the token when one is set.
pub async fn options_headers(State(state): State<Arc<AppState>>, req: Request<Body>, next: axum::middleware::Next) -> Response {
    let preflight = req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let endpoint = req.uri().path().strip_prefix('/').and_then(|p| p.strip_suffix("/whep")).filter(|s| !s.contains('/')).map(str::to_owned);
    let give = req.method() == Method::OPTIONS && !preflight && endpoint.is_some_and(|s| state.stream(&s).is_ok()) && super::auth::authorized(&state, &req);
    let cross_origin = req.headers().contains_key(header::ORIGIN);
    let options = req.method() == Method::OPTIONS;
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    if options && res.status().is_success() {
        let h = res.headers_mut();
        if path.ends_with("/whep") || path.ends_with("/whip") {
            h.entry(ACCEPT_POST).or_insert(HeaderValue::from_static(SDP));
        } else if path.contains("/whep/") || path.contains("/whip/") {
            h.entry(ACCEPT_PATCH).or_insert(HeaderValue::from_static(TRICKLE));
        }
    }
    if give && res.status().is_success() {
        let h = res.headers_mut();
        for link in crate::turn::link_values(&state.engine.ice_servers_for_session()) {
            h.append(header::LINK, header_value(&link));
        }
        if cross_origin {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("link, accept-post"));
        }
    }
    res
}

pub async fn session_info(State(state): State<Arc<AppState>>, Path((stream, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    state.session(&stream, &id)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /{stream}/whep/{id}/rendition`: the viewer's rendition, why, and the others.
pub async fn get_rendition(State(state): State<Arc<AppState>>, Path((stream, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    let ladder = viewer_ladder(&state, &stream, &id)?;
    Ok(axum::Json(ladder.info(&id)).into_response())
}

/// `PUT /{stream}/whep/{id}/rendition` with a rendition's name, or `auto`, as the body: pins
/// the viewer to it (it moves at that rendition's next keyframe, asked for at once), or lets
/// the relay choose again.
pub async fn put_rendition(
    State(state): State<Arc<AppState>>,
    Path((stream, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let ladder = viewer_ladder(&state, &stream, &id)?;
    let name = std::str::from_utf8(&body).map(str::trim).unwrap_or_default();
    ladder.pin(name).map_err(unknown_rendition)?;
    tracing::info!(stream, session = %&id[..id.len().min(8)], rendition = name, "viewer chose a rendition");
    Ok(axum::Json(ladder.info(&id)).into_response())
}

fn viewer_ladder(state: &AppState, stream: &str, id: &str) -> Result<Arc<ViewerLadder>, ApiError> {
    state.session(stream, id)?.session.ladder.clone().ok_or_else(ApiError::unknown_session)
}

/// 422, not 400: some players take a 400 to a WHEP POST for "switch to server offers".
fn unknown_rendition(e: crate::webrtc::ladder::UnknownRendition) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown-rendition", "Unknown rendition", e.to_string())
}

pub async fn delete_session(State(state): State<Arc<AppState>>, Path((stream, id)): Path<(String, String)>) -> Result<Response, ApiError> {
    state.session(&stream, &id)?;
    state.end_session(&id);
    tracing::info!(stream, session = %&id[..id.len().min(8)], "WHEP session deleted");
    Ok(StatusCode::OK.into_response())
}

pub async fn patch_session(State(state): State<Arc<AppState>>, Path((stream, id)): Path<(String, String)>, req: Request<Body>) -> Result<Response, ApiError> {
    let entry = state.session(&stream, &id)?;
    apply_patch(&entry.session, &entry.etag, req, (&stream, &id)).await
}
