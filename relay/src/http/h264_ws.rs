//! `GET /{stream}/h264` upgraded to a WebSocket: the stream's encoded H.264, one access unit
//! per message (framing: `scopecast_shared::h264_ws`), for players whose network blocks
//! WebRTC's UDP. They decode it themselves (WebCodecs), at a fraction of MJPEG's bandwidth.
//!
//! The same encodes WebRTC viewers get (`?rendition=NAME`, else the stream's own), read from
//! the same track. It starts at a keyframe, and when TCP backs up it skips to the next one
//! rather than queueing: a slow link sees a jump, never seconds of delay.

use super::error::ApiError;
use super::AppState;
use crate::pipeline::{depacketize, ViewerCursor};
use crate::stream::{Step, Stream, ViewerKind};
use crate::track::KeyframeReason;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use scopecast_shared::h264_ws::{Unit, Unwrapper};
use scopecast_shared::sdp::ViewerCodec;
use scopecast_shared::{OfflinePolicy, SourceState};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// Frames waiting for this socket beyond which it skips to the next keyframe (at 25 fps about
/// a third of a second; the ring holds 16).
const MAX_QUEUED_FRAMES: usize = 8;
/// A send that takes this long means the player is gone (or its link is): close.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages from the player are not expected; anything large is not ours.
const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Deserialize)]
pub struct RungQuery {
    rendition: Option<String>,
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<RungQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = state.stream(&name)?;
    let steps = stream.ladder_for(ViewerCodec::H264, query.rendition.as_deref());
    let step = match query.rendition.as_deref().filter(|r| *r != "auto") {
        None => steps.into_iter().next(),
        Some(wanted) => Some(steps.iter().find(|s| s.name == wanted).cloned().ok_or_else(|| {
            let known: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-rendition",
                "Unknown rendition",
                format!("stream '{name}' has no H.264 rendition '{wanted}' (it has: {})", known.join(", ")),
            )
        })?),
    };
    let step = step.ok_or_else(|| ApiError::internal("a stream always has its own H.264 track"))?;
    let demand = stream.demand.join(ViewerKind::H264);
    if stream.config.offline_policy == OfflinePolicy::Reject && !stream.is_live() && stream.wait_started(stream.config.start_timeout).await != SourceState::Live
    {
        let why = stream.state().last_error.unwrap_or_else(|| "no frame yet".to_owned());
        return Err(ApiError::new(StatusCode::CONFLICT, "source-offline", "Source offline", format!("stream '{name}' is not live: {why}")).with_retry_after(2));
    }
    Ok(ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| async move {
        let _demand = demand;
        tracing::debug!(stream = stream.name(), rendition = step.name, "H.264 rung opened");
        let sent = send_units(socket, &stream, &step).await;
        tracing::debug!(stream = stream.name(), rendition = step.name, sent, "H.264 rung closed");
    }))
}

/// Sends access units until the player goes, the stream stops or a send times out; returns how
/// many went out.
async fn send_units(mut socket: WebSocket, stream: &Stream, step: &Step) -> u64 {
    let reader = step.track.attach();
    let (_guard, mut live, after) = (reader.guard, reader.live, reader.after);
    // Only its keyframe gate is used: a WebSocket has no sequence numbers to keep.
    let mut gate = ViewerCursor::new(0);
    let mut clock = Unwrapper::default();
    let mut sent = 0;
    for frame in &reader.backlog {
        if !gate.admit(frame) {
            continue;
        }
        let Some(message) = message(frame, &mut clock) else {
            gate.lagged();
            continue;
        };
        if !send(&mut socket, message).await {
            return sent;
        }
        sent += 1;
    }
    loop {
        let frame = tokio::select! {
            r = live.recv() => r,
            message = socket.recv() => match message {
                // Pings are answered by the socket itself; nothing else is expected.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Text(_) | Message::Binary(_))) => continue,
                Some(Ok(Message::Close(_)) | Err(_)) | None => return sent,
            },
            () = stream.stopped() => return sent,
        };
        let frame = match frame {
            Ok(f) if after.is_some_and(|a| f.index <= a) => continue, // sent from the backlog
            Ok(f) => f,
            Err(RecvError::Lagged(_)) => {
                gate.lagged();
                step.track.request_keyframe(KeyframeReason::ViewerRequest);
                continue;
            }
            Err(RecvError::Closed) => return sent,
        };
        // TCP is backing up: what waits would arrive late. Skip to the next keyframe instead.
        if live.len() > MAX_QUEUED_FRAMES {
            while live.try_recv().is_ok() {}
            gate.lagged();
            step.track.request_keyframe(KeyframeReason::ViewerRequest);
            continue;
        }
        if !gate.admit(&frame) {
            continue;
        }
        let Some(message) = message(&frame, &mut clock) else {
            gate.lagged(); // what follows refers to it
            continue;
        };
        if !send(&mut socket, message).await {
            return sent;
        }
        if let Some(t) = &frame.timing {
            t.mark_sent();
        }
        sent += 1;
    }
}

/// One access unit as a message (`None` if its packets do not depacketize).
fn message(frame: &crate::pipeline::RtpFrame, clock: &mut Unwrapper) -> Option<Vec<u8>> {
    let (Some(annexb), Some(first)) = (depacketize(frame), frame.packets.first()) else {
        tracing::debug!("a frame that does not depacketize: skipped");
        return None;
    };
    let unit = Unit { keyframe: frame.keyframe, timestamp_us: clock.micros(first.header.timestamp), annexb: &annexb };
    Some([&unit.header()[..], &annexb].concat())
}

/// False once the player is gone (or its link has been stuck for [`SEND_TIMEOUT`]).
async fn send(socket: &mut WebSocket, message: Vec<u8>) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Binary(message.into()))).await, Ok(Ok(())))
}
