//! `GET /{stream}/h264` upgraded to a WebSocket: the stream's encoded H.264, one access unit
//! per message (framing: `scopecast_shared::h264_ws`), for players whose network blocks
//! WebRTC's UDP. They decode it themselves (WebCodecs), at a fraction of MJPEG's bandwidth.
//!
//! The same encodes WebRTC viewers get, read from the same tracks: `?rendition=NAME` for one,
//! else the relay chooses (`adapt.rs`'s Chooser, as for a WebRTC viewer). It starts at a
//! keyframe, and when TCP backs up it skips to the next one rather than queueing: a slow link
//! sees a jump, never seconds of delay. A backup also moves the player a rendition down (TCP
//! loses nothing, so it is the only sign of a link too slow); after 10 s without one it
//! tries a step up, on trial (there is no feedback to probe with). A move happens at the new
//! rendition's keyframe, with timestamps running on.
//!
//! `?container=fmp4` sends each access unit as an MP4 fragment instead (`media::fmp4`), for
//! players without WebCodecs (pages that are not a secure context) to feed Media Source
//! Extensions.

use super::error::ApiError;
use super::AppState;
use super::RungPlayer;
use crate::adapt::{Chooser, Why};
use crate::media::fmp4::{Muxer, Piece};
use crate::pipeline::{depacketize, ViewerCursor};
use crate::stream::{Step, Stream, ViewerKind};
use crate::track::KeyframeReason;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use scopecast_shared::api::ViewerRendition;
use scopecast_shared::h264_ws::{Unit, Unwrapper, CONTAINER_FMP4};
use scopecast_shared::sdp::ViewerCodec;
use scopecast_shared::{OfflinePolicy, SourceState};
use serde::Deserialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// Frames waiting for this socket beyond which it skips to the next keyframe (at 25 fps about
/// a third of a second; the ring holds 16).
const MAX_QUEUED_FRAMES: usize = 8;
/// A send that takes this long means the player is gone (or its link is): close.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// An MSE player can drop what it played only from one keyframe to the next, and a stream
/// makes keyframes only on request unless configured to: one is asked for when none came for
/// this long, so its buffer stays bounded (at 2 Mbit/s, 15 MB).
const MSE_KEYFRAME_EVERY: Duration = Duration::from_secs(60);
/// Messages from the player are not expected; anything large is not ours.
const MAX_MESSAGE: usize = 4096;

#[derive(Debug, Deserialize)]
pub struct RungQuery {
    rendition: Option<String>,
    /// `fmp4` for MP4 fragments (MSE); Annex B (WebCodecs) without it.
    container: Option<String>,
}

/// How access units go into messages: as they are, or muxed into MP4 fragments.
enum Framing {
    AnnexB,
    Fmp4(Muxer),
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(query): Query<RungQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let stream = state.stream(&name)?;
    let framing = match query.container.as_deref() {
        None | Some("annexb") => Framing::AnnexB,
        Some(CONTAINER_FMP4) => Framing::Fmp4(Muxer::default()),
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown-container",
                "Unknown container",
                format!("container '{other}' is not one the H.264 rung sends (annexb, fmp4)"),
            ))
        }
    };
    let mut steps = stream.ladder_for(ViewerCodec::H264, query.rendition.as_deref());
    if steps.is_empty() {
        return Err(ApiError::internal("a stream always has its own H.264 track"));
    }
    let names: Vec<String> = steps.iter().map(|s| s.name.clone()).collect();
    let pinned = query.rendition.as_deref().is_some_and(|r| r != scopecast_shared::api::RENDITION_AUTO);
    // One rendition by name, or the relay's choice among them all.
    if let Some(wanted) = query.rendition.as_deref().filter(|r| *r != scopecast_shared::api::RENDITION_AUTO) {
        let Some(step) = steps.iter().find(|s| s.name == wanted).cloned() else {
            let known: Vec<_> = steps.iter().map(|s| s.name.as_str()).collect();
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-rendition",
                "Unknown rendition",
                format!("stream '{name}' has no H.264 rendition '{wanted}' (it has: {})", known.join(", ")),
            ));
        };
        steps = vec![step];
    }
    let demand = stream.demand.join(ViewerKind::H264);
    if stream.config.offline_policy == OfflinePolicy::Reject && !stream.is_live() && stream.wait_started(stream.config.start_timeout).await != SourceState::Live
    {
        let why = stream.state().last_error.unwrap_or_else(|| "no frame yet".to_owned());
        return Err(ApiError::new(StatusCode::CONFLICT, "source-offline", "Source offline", format!("stream '{name}' is not live: {why}")).with_retry_after(2));
    }
    let why = match (pinned, steps.len()) {
        (true, _) => Why::Pinned,
        (false, 1) => Why::OnlyOne,
        (false, _) => Why::Start,
    };
    let info = ViewerRendition {
        session: String::new(),
        transport: "h264".to_owned(),
        rendition: steps[0].name.clone(),
        reason: why.to_string(),
        pinned,
        loss_percent: 0.0,
        estimate_bps: None,
        received_bps: None,
        probed_bps: None,
        renditions: names,
    };
    Ok(ws.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| async move {
        let _demand = demand;
        let player = state.rung_player(stream.name(), info);
        tracing::debug!(stream = stream.name(), rendition = steps[0].name, "H.264 rung opened");
        let sent = send_units(socket, &stream, &steps, &player, framing).await;
        tracing::debug!(stream = stream.name(), sent, "H.264 rung closed");
    }))
}

/// Sends access units until the player goes, the stream stops or a send times out; returns how
/// many went out. With more than one of `steps`, the relay moves the player between them.
async fn send_units(mut socket: WebSocket, stream: &Stream, steps: &[Step], player: &RungPlayer, mut framing: Framing) -> u64 {
    let mut chooser = (steps.len() > 1).then(|| Chooser::new(steps.iter().map(|s| s.bitrate_bps).collect(), None, Instant::now()));
    let mut current = 0;
    let reader = steps[current].track.attach();
    let (mut _guard, mut live, mut after) = (reader.guard, reader.live, reader.after);
    // Its keyframe gate and timestamps: a WebSocket has no sequence numbers to keep.
    let mut gate = ViewerCursor::new(0);
    let mut clock = Unwrapper::default();
    let mut sent = 0;
    for frame in &reader.backlog {
        if !gate.admit(frame) {
            continue;
        }
        let Some(messages) = messages(frame, &mut gate, &mut clock, &mut framing) else {
            gate.lagged();
            continue;
        };
        if !send(&mut socket, messages).await {
            return sent;
        }
        sent += 1;
    }
    let mut keyframe_at = Instant::now();
    // The rendition being moved to, read until its first keyframe.
    let mut pending: Option<(usize, crate::track::Reader)> = None;
    let mut ticks = tokio::time::interval(Duration::from_millis(500));
    loop {
        let next_pending = async {
            match pending.as_mut() {
                Some((_, r)) => r.live.recv().await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            r = live.recv() => r,
            r = next_pending => match r {
                Ok(f) if f.keyframe => {
                    let Some((index, reader)) = pending.take() else { continue };
                    (current, _guard, live, after) = (index, reader.guard, reader.live, None);
                    let why = chooser.as_ref().map(|c| c.why().to_string()).unwrap_or_default();
                    tracing::debug!(stream = stream.name(), rendition = steps[current].name, why, "H.264 rung moved");
                    player.moved(&steps[current].name, why);
                    gate.switched(&f);
                    Ok(f)
                }
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => {
                    pending = None;
                    continue;
                }
            },
            _ = ticks.tick(), if chooser.is_some() => {
                if let Some(c) = chooser.as_mut() {
                    c.tick(Instant::now());
                }
                follow(&chooser, steps, current, &mut pending);
                continue;
            }
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
                steps[current].track.request_keyframe(KeyframeReason::ViewerRequest);
                continue;
            }
            Err(RecvError::Closed) => return sent,
        };
        // TCP is backing up: what waits would arrive late. Skip to the next keyframe instead,
        // of a smaller rendition if there is one.
        if live.len() > MAX_QUEUED_FRAMES {
            while live.try_recv().is_ok() {}
            gate.lagged();
            if let Some(c) = chooser.as_mut() {
                c.backed_up(Instant::now());
            }
            follow(&chooser, steps, current, &mut pending);
            if pending.is_none() {
                steps[current].track.request_keyframe(KeyframeReason::ViewerRequest);
            }
            continue;
        }
        if !gate.admit(&frame) {
            continue;
        }
        let Some(messages) = messages(&frame, &mut gate, &mut clock, &mut framing) else {
            gate.lagged(); // what follows refers to it
            continue;
        };
        if !send(&mut socket, messages).await {
            return sent;
        }
        if let Some(t) = &frame.timing {
            t.mark_sent();
        }
        sent += 1;
        if frame.keyframe {
            keyframe_at = Instant::now();
        } else if matches!(framing, Framing::Fmp4(_)) && keyframe_at.elapsed() > MSE_KEYFRAME_EVERY {
            steps[current].track.request_keyframe(KeyframeReason::ViewerRequest);
            keyframe_at = Instant::now(); // asked: again after as long if none comes
        }
    }
}

/// Follows the rendition the chooser picked (`track::follow_rendition`).
fn follow(chooser: &Option<Chooser>, steps: &[Step], current: usize, pending: &mut Option<(usize, crate::track::Reader)>) {
    if let Some(wanted) = chooser.as_ref().map(Chooser::current) {
        crate::track::follow_rendition(pending, wanted, current, |i| &steps[i].track);
    }
}

/// One access unit as messages: itself, or its fragment (after a MIME type and an init
/// segment when its parameter sets are new). `None` if it does not depacketize or mux.
fn messages(frame: &crate::pipeline::RtpFrame, gate: &mut ViewerCursor, clock: &mut Unwrapper, framing: &mut Framing) -> Option<Vec<Message>> {
    let (Some(annexb), Some(timestamp)) = (depacketize(frame), gate.frame_timestamp(frame)) else {
        tracing::debug!("a frame that does not depacketize: skipped");
        return None;
    };
    let timestamp_us = clock.micros(timestamp);
    let binary = |init: bool, payload: &[u8]| {
        let unit = Unit { keyframe: frame.keyframe, init, timestamp_us, payload };
        Message::Binary([&unit.header()[..], payload].concat().into())
    };
    let Framing::Fmp4(muxer) = framing else {
        return Some(vec![binary(false, &annexb)]);
    };
    let pieces = match muxer.push(frame.keyframe, timestamp_us, &annexb) {
        Ok(pieces) => pieces,
        Err(e) => {
            tracing::debug!(error = %e, "a frame that does not mux: skipped");
            return None;
        }
    };
    let mut out = Vec::with_capacity(3);
    for piece in pieces {
        match piece {
            Piece::Init { mime, segment } => out.extend([Message::Text(mime.into()), binary(true, &segment)]),
            Piece::Fragment(fragment) => out.push(binary(false, &fragment)),
        }
    }
    // Deltas before the first keyframe have nothing to refer to: the gate keeps them out.
    Some(out)
}

/// False once the player is gone (or its link has been stuck for [`SEND_TIMEOUT`]).
async fn send(socket: &mut WebSocket, messages: Vec<Message>) -> bool {
    for message in messages {
        if !matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(()))) {
            return false;
        }
    }
    true
}
