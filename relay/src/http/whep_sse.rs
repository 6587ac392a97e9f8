//! The WHEP Server-Sent Events extension (draft-ietf-wish-whep, "Server Sent Events
//! extension"): the 201 advertises it with a Link; the player POSTs the events it wants (a
//! JSON array, or nothing for all) and gets the Location of an event stream, which it reads
//! with GET and may DELETE. Every event stream ends with its WHEP session.
//!
//! Offered events: `active` / `inactive` (the camera is live / not), never an initial
//! `inactive`; `viewercount` (WebRTC and MJPEG viewers of the stream).

use super::error::ApiError;
use super::{AppState, SessionEntry};
use crate::lock;
use axum::body::to_bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use scopecast_shared::SourceState;
use std::convert::Infallible;
use std::sync::Arc;
use tokio::sync::watch;

pub const REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
pub const EVENTS: [&str; 3] = ["active", "inactive", "viewercount"];
/// A list of event names is tiny; anything bigger is not one.
const MAX_BODY: usize = 4096;
/// Event streams one session may hold open.
const MAX_PER_SESSION: usize = 8;

/// One event stream of a session: the events it asked for, and a switch that ends it.
pub struct EventStream {
    events: Vec<String>,
    ended: watch::Sender<bool>,
}

/// The Link header value for a session's 201.
pub fn link(session_path: &str) -> String {
    format!("<{session_path}/sse>; rel=\"{REL}\"; events=\"{}\"", EVENTS.join(","))
}

fn bad_request(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad-event-list", "Bad event list", detail)
}

/// The events asked for: a JSON array of announced names, or every one when the body is empty.
fn parse_event_list(body: &[u8]) -> Result<Vec<String>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(EVENTS.iter().map(|e| (*e).to_owned()).collect());
    }
    let wanted: Vec<String> = serde_json::from_slice(body).map_err(|e| bad_request(format!("expected a JSON array of event names: {e}")))?;
    if let Some(unknown) = wanted.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        return Err(bad_request(format!("unknown event '{unknown}'; offered: {}", EVENTS.join(", "))));
    }
    Ok(wanted)
}

pub async fn create(State(state): State<Arc<AppState>>, Path((stream, id)): Path<(String, String)>, req: Request) -> Result<Response, ApiError> {
    let entry = state.session(&stream, &id)?;
    let body = to_bytes(req.into_body(), MAX_BODY).await.map_err(|_| bad_request(format!("the body is over {MAX_BODY} bytes")))?;
    let events = parse_event_list(&body)?;
    let sid = super::random_token();
    {
        let mut streams = lock(&entry.event_streams);
        if streams.len() >= MAX_PER_SESSION {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too-many-event-streams",
                "Too many event streams",
                format!("a session may hold {MAX_PER_SESSION}"),
            ));
        }
        streams.insert(sid.clone(), EventStream { events, ended: watch::channel(false).0 });
    }
    let location = format!("/{stream}/whep/{id}/sse/{sid}");
    Ok((StatusCode::CREATED, [(header::LOCATION, super::whep::header_value(&location))]).into_response())
}

pub async fn delete(State(state): State<Arc<AppState>>, Path((stream, id, sid)): Path<(String, String, String)>) -> Result<Response, ApiError> {
    let entry = state.session(&stream, &id)?;
    let removed = lock(&entry.event_streams).remove(&sid).ok_or_else(unknown_event_stream)?;
    removed.ended.send_replace(true);
    Ok(StatusCode::OK.into_response())
}

fn unknown_event_stream() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "unknown-event-stream", "Unknown event stream", "no such event stream (deleted, or its session ended)")
}

/// What one reader of an event stream has told its player so far.
struct Reader {
    stream: Arc<crate::stream::Stream>,
    wanted: Vec<String>,
    states: watch::Receiver<scopecast_shared::StateEvent>,
    viewers: watch::Receiver<scopecast_shared::Viewers>,
    session_closed: watch::Receiver<bool>,
    ended: watch::Receiver<bool>,
    /// `None` until the first state is seen.
    active: Option<bool>,
    viewer_count: Option<u32>,
}

fn wants(wanted: &[String], name: &str) -> bool {
    wanted.iter().any(|w| w == name)
}

impl Reader {
    /// The next event to send, or `None` when the stream is over.
    async fn next(&mut self) -> Option<Event> {
        loop {
            tokio::select! {
                biased;
                _ = self.session_closed.wait_for(|c| *c) => return None,
                _ = self.ended.wait_for(|e| *e) => return None,
                () = self.stream.stopped() => return None,
                changed = self.states.changed() => {
                    changed.ok()?;
                    let active = self.states.borrow_and_update().state == SourceState::Live;
                    let before = self.active.replace(active);
                    // `active` at once when live, then on every change; never a first `inactive`.
                    let announce = match before { None => active, Some(was) => was != active };
                    let name = if active { "active" } else { "inactive" };
                    if announce && wants(&self.wanted, name) {
                        return Some(Event::default().event(name).data("{}"));
                    }
                }
                changed = self.viewers.changed() => {
                    changed.ok()?;
                    let v = *self.viewers.borrow_and_update();
                    let count = v.webrtc + v.mjpeg + v.h264;
                    if self.viewer_count.replace(count) != Some(count) && wants(&self.wanted, "viewercount") {
                        return Some(Event::default().event("viewercount").data(serde_json::json!({ "viewercount": count }).to_string()));
                    }
                }
            }
        }
    }
}

pub async fn read(State(state): State<Arc<AppState>>, Path((stream_name, id, sid)): Path<(String, String, String)>) -> Result<impl IntoResponse, ApiError> {
    let entry: Arc<SessionEntry> = state.session(&stream_name, &id)?;
    let (wanted, ended) = {
        let streams = lock(&entry.event_streams);
        let es = streams.get(&sid).ok_or_else(unknown_event_stream)?;
        (es.events.clone(), es.ended.subscribe())
    };
    let stream = state.stream(&stream_name)?;
    let mut states = stream.subscribe_state();
    let mut viewers = stream.demand.subscribe();
    states.mark_changed();
    viewers.mark_changed();
    let reader = Reader { session_closed: entry.session.closed(), wanted, states, viewers, ended, stream, active: None, viewer_count: None };
    let body = futures_util::stream::unfold(reader, |mut reader| async move {
        let event = reader.next().await?;
        Some((Ok::<Event, Infallible>(event), reader))
    });
    Ok(Sse::new(body).keep_alive(KeepAlive::default()))
}

/// Ends a session's event streams (its WHEP session is over).
pub fn end_all(entry: &SessionEntry) {
    for (_, es) in lock(&entry.event_streams).drain() {
        es.ended.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_lists() {
        assert_eq!(parse_event_list(b"").expect("all"), vec!["active", "inactive", "viewercount"]);
        assert_eq!(parse_event_list(b"[\"viewercount\"]").expect("one"), vec!["viewercount"]);
        assert_eq!(parse_event_list(b"[]").expect("none"), Vec::<String>::new());
        for bad in [&b"[\"layers\"]"[..], b"{\"a\":1}", b"viewercount", b"[1]"] {
            assert_eq!(parse_event_list(bad).expect_err("rejected").problem.status, 400, "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(link("/s/whep/1"), "</s/whep/1/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; events=\"active,inactive,viewercount\"");
    }
}
