//! Pictures over plain HTTP, for players that cannot do WebRTC and for stills:
//! `GET /{stream}/mjpeg` re-serves the source as `multipart/x-mixed-replace`, one upstream
//! connection for any number of clients; `GET /{stream}/snapshot.jpg` is the latest original
//! JPEG at full resolution. Both are the camera's original pictures unless `?stretch=1` asks
//! for them stretched as the stream's viewers see them. A stream whose source sends H.264 has its pictures decoded
//! (`crate::decode`) while such clients exist.

use super::error::ApiError;
use super::AppState;
use crate::stream::{Still, Stream, ViewerKind};
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use scopecast_shared::api::{StillEntry, StillList, Stretch};
use scopecast_shared::SourceState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

const BOUNDARY: &str = "scopecast-frame";
/// Seconds a client is told to wait before asking again for an offline source.
const RETRY_AFTER_S: u64 = 2;

/// `?stretch=1`: the picture as WebRTC viewers see it, stretched; without it, the camera's
/// original.
#[derive(Debug, Default, serde::Deserialize)]
pub struct PictureQuery {
    stretch: Option<String>,
}

impl PictureQuery {
    fn stretched(&self) -> Result<bool, ApiError> {
        match self.stretch.as_deref() {
            None | Some("0" | "false") => Ok(false),
            Some("1" | "true" | "") => Ok(true),
            Some(other) => Err(ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", format!("stretch={other}: use stretch=1 or leave it out"))),
        }
    }
}

/// The still's JPEG (stretched as the stream is, when asked), encoding off the async workers
/// when that takes work.
async fn jpeg_of(stream: &Stream, still: &Arc<Still>, stretched: bool) -> Result<Bytes, ApiError> {
    let stretch = Some(stream.stretch.get()).filter(|s| stretched && *s != Stretch::Off).map(|s| (s, stream.stretch.applied()));
    let result = match stretch {
        None if still.is_encoded() => still.jpeg(),
        None => {
            let still = Arc::clone(still);
            tokio::task::spawn_blocking(move || still.jpeg()).await.map_err(|e| ApiError::internal(e.to_string()))?
        }
        Some((stretch, levels)) => {
            let still = Arc::clone(still);
            tokio::task::spawn_blocking(move || still.stretched_jpeg(stretch, levels)).await.map_err(|e| ApiError::internal(e.to_string()))?
        }
    };
    result.map_err(|e| ApiError::internal(e.to_string()))
}

/// Capture time as `X-Timestamp` gives it (Unix seconds, millisecond fraction), the header
/// µStreamer and mjpg-streamer use, which the relay's own MJPEG parser reads back.
fn timestamp_header(captured_ms: u64) -> String {
    format!("{}.{:03}", captured_ms / 1000, captured_ms % 1000)
}

fn source_unavailable(stream: &Stream) -> ApiError {
    let state = stream.state();
    let why = state.last_error.filter(|_| state.state == SourceState::Offline).unwrap_or_else(|| "it did not deliver a frame in time".to_owned());
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "source-offline", "Source offline", format!("stream '{}' has no live source: {why}", stream.name()))
        .with_retry_after(RETRY_AFTER_S)
}

pub async fn snapshot(State(state): State<Arc<AppState>>, Path(name): Path<String>, Query(query): Query<PictureQuery>) -> Result<Response, ApiError> {
    let stream = state.stream(&name)?;
    let stretched = query.stretched()?;
    // Counted while it waits, so an on-demand source starts for it (and a passed-through
    // stream's decoder, which makes its pictures).
    let _viewer = stream.demand.join(ViewerKind::Snapshot);
    let started = Instant::now();
    if !stream.is_live() && stream.wait_started(stream.config.start_timeout).await != SourceState::Live {
        return Err(source_unavailable(&stream));
    }
    // A live source's first picture may still be on its way (a decoder just started).
    let mut stills = stream.subscribe_stills();
    let left = stream.config.start_timeout.saturating_sub(started.elapsed());
    let _ = tokio::time::timeout(left, stills.wait_for(Option::is_some)).await;
    let still = stream.latest().ok_or_else(|| source_unavailable(&stream))?;
    let jpeg = jpeg_of(&stream, &still, stretched).await?;
    Ok(jpeg_response(jpeg, still.captured_ms, "no-store"))
}

/// A JPEG with its capture time (`X-Timestamp`) and how long it may be cached.
fn jpeg_response(jpeg: impl Into<Body>, captured_ms: u64, cache: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/jpeg")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
            (header::HeaderName::from_static("x-timestamp"), super::whep::header_value(&timestamp_header(captured_ms))),
        ],
        jpeg.into(),
    )
        .into_response()
}

pub async fn mjpeg(State(state): State<Arc<AppState>>, Path(name): Path<String>, Query(query): Query<PictureQuery>) -> Result<Response, ApiError> {
    let stream = state.stream(&name)?;
    let stretched = query.stretched()?;
    let viewer = stream.demand.join(ViewerKind::Mjpeg);
    let mut stills = stream.subscribe_stills();
    // The current picture goes out at once (an idle source has none: it was dropped).
    stills.mark_changed();
    let mut opening = BytesMut::new();
    opening.put_slice(format!("--{BOUNDARY}\r\n").as_bytes());
    let first = Bytes::from(opening);
    // One part per newest still. The body is only polled as fast as the client reads, so a
    // slow client skips to the latest still and never queues frames; skips are counted.
    let parts =
        futures_util::stream::unfold((stream, stills, viewer, 0u64, Some(first)), move |(stream, mut stills, viewer, last_seq, mut opening)| async move {
            loop {
                tokio::select! {
                    changed = stills.changed() => changed.ok()?,
                    () = stream.stopped() => return None,
                }
                let Some(still) = stills.borrow_and_update().clone() else { continue };
                let Ok(jpeg) = jpeg_of(&stream, &still, stretched).await else { continue };
                if last_seq > 0 && still.seq > last_seq + 1 {
                    stream.mjpeg_skipped.fetch_add(still.seq - last_seq - 1, Ordering::Relaxed);
                }
                let mut part = BytesMut::with_capacity(jpeg.len() + 160);
                if let Some(opening) = opening.take() {
                    part.put_slice(&opening);
                }
                part.put_slice(
                    format!("Content-Type: image/jpeg\r\nContent-Length: {}\r\nX-Timestamp: {}\r\n\r\n", jpeg.len(), timestamp_header(still.captured_ms))
                        .as_bytes(),
                );
                part.put_slice(&jpeg);
                // The next boundary right away: browsers show a part only once they see it end,
                // and waiting for the next frame would show every picture one frame late.
                part.put_slice(format!("\r\n--{BOUNDARY}\r\n").as_bytes());
                let seq = still.seq;
                return Some((Ok::<Bytes, std::convert::Infallible>(part.freeze()), (stream, stills, viewer, seq, opening)));
            }
        });
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, super::whep::header_value(&format!("multipart/x-mixed-replace; boundary={BOUNDARY}"))),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        Body::from_stream(parts),
    )
        .into_response())
}

/// `?limit=N` on the stills list (100 by default).
#[derive(Debug, Default, serde::Deserialize)]
pub struct StillsQuery {
    limit: Option<usize>,
}

fn no_stills(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no-stills", "No stills", format!("stream '{name}' keeps no stills (set stills = {{ dir = ... }} on it)"))
}

/// `GET /api/v1/streams/{name}/stills`: the kept stills, newest first.
pub async fn list_stills(State(state): State<Arc<AppState>>, Path(name): Path<String>, Query(query): Query<StillsQuery>) -> Result<Response, ApiError> {
    state.stream(&name)?;
    let store = state.stills.get(&name).ok_or_else(|| no_stills(&name))?;
    let (files, total_bytes) = store.list(query.limit.unwrap_or(100).min(10_000));
    let stills = files.into_iter().map(|file| StillEntry { url: format!("/api/v1/streams/{name}/stills/{}", file.name), file }).collect();
    Ok(axum::Json(StillList { stills, total_bytes, max_bytes: store.max_bytes() }).into_response())
}

/// `GET /api/v1/streams/{name}/stills/{file}`: one kept JPEG, as the camera sent it. A still
/// never changes, so it may be cached for good.
pub async fn get_still(State(state): State<Arc<AppState>>, Path((name, file)): Path<(String, String)>) -> Result<Response, ApiError> {
    state.stream(&name)?;
    let store = state.stills.get(&name).ok_or_else(|| no_stills(&name))?;
    let unknown = || ApiError::new(StatusCode::NOT_FOUND, "unknown-still", "Unknown still", format!("stream '{name}' has no still '{file}' (any more)"));
    let (path, info) = store.path_of(&file).ok_or_else(unknown)?;
    // Deleted by the cap between the lookup and the read: as good as never there.
    let jpeg = tokio::fs::read(&path).await.map_err(|_| unknown())?;
    Ok(jpeg_response(jpeg, info.captured_ms, "public, max-age=31536000, immutable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_time_is_unix_seconds_with_milliseconds() {
        assert_eq!(timestamp_header(1_795_575_705_705), "1795575705.705");
        assert_eq!(timestamp_header(1_795_575_705_007), "1795575705.007");
    }
}
