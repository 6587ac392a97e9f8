//! Status for operators and players: the stream list and details (JSON types from `shared`),
//! Server-Sent Events of state and viewer changes, Prometheus metrics, and a health check.

use super::error::ApiError;
use super::AppState;
use crate::config::PublishTarget;
use crate::stream::Stream;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use scopecast_shared::api::{
    FocusInfo, FocusRequest, FrameEvent, FrameTimings, PublishInfo, PublishState, StreamPatch, EVENT_FOCUS, EVENT_FRAME, EVENT_STATE, EVENT_VIEWERS,
    FOCUS_RENDITION,
};
use scopecast_shared::{SourceState, StreamInfo, StreamList};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn list_streams(State(state): State<Arc<AppState>>) -> Json<StreamList> {
    let relay = scopecast_shared::api::RelayStatus {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_s: state.process.uptime().as_secs(),
        cpu_percent: state.process.cpu_percent(),
        resident_bytes: state.process.last().map(|(_, rss)| rss),
    };
    Json(StreamList { streams: state.streams.values().map(|s| info(&state, s)).collect(), relay })
}

pub async fn get_stream(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<StreamInfo>, ApiError> {
    let stream = state.stream(&name)?;
    Ok(Json(info(&state, &stream)))
}

/// Changes a stream while it plays (today: its stretch); every viewer sees the change at the
/// next frame, without a new session. 200 with the stream's status.
pub async fn patch_stream(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<StreamPatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<StreamInfo>, ApiError> {
    let stream = state.stream(&name)?;
    let Json(patch) = body?;
    if let Some(stretch) = patch.stretch {
        stretch.check().map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-stretch", "Bad stretch", e))?;
        stream.set_stretch(stretch)?;
        tracing::info!(stream = %name, ?stretch, "stretch changed");
    }
    Ok(Json(info(&state, &stream)))
}

/// The focus region, its viewers and the last minute of sharpness figures.
fn focus_info(stream: &Stream) -> Option<FocusInfo> {
    let focus = stream.focus.as_ref()?;
    Some(FocusInfo {
        region: focus.control.region()?,
        rendition: FOCUS_RENDITION.to_owned(),
        readers: focus.track.readers() as u32,
        history: focus.control.history(),
    })
}

fn no_focus(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no-focus-region", "No focus region", format!("stream '{name}' has no focus region; PUT one first"))
}

/// `GET /api/v1/streams/{name}/focus`: the region, or 404 while none is set.
pub async fn get_focus(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<FocusInfo>, ApiError> {
    let stream = state.stream(&name)?;
    focus_info(&stream).map(Json).ok_or_else(|| no_focus(&name))
}

/// `PUT /api/v1/streams/{name}/focus`: `{"x", "y", "width", "height"}` in the camera's
/// pixels, or `{"x", "y"}` for a default-sized region around a point. One region per stream:
/// the last request wins, for every viewer of the focus rendition.
pub async fn put_focus(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<FocusRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<FocusInfo>, ApiError> {
    let stream = state.stream(&name)?;
    let Json(request) = body?;
    let region = stream.set_focus(request)?.map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-focus-region", "Bad focus region", e))?;
    tracing::info!(stream = %name, ?region, "focus region set");
    focus_info(&stream).map(Json).ok_or_else(|| no_focus(&name))
}

/// `DELETE /api/v1/streams/{name}/focus`: 204; its viewers keep their session and its last
/// picture.
pub async fn delete_focus(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<StatusCode, ApiError> {
    let stream = state.stream(&name)?;
    let focus = stream.focus.as_ref().filter(|f| f.control.region().is_some()).ok_or_else(|| no_focus(&name))?;
    focus.control.clear();
    Ok(StatusCode::NO_CONTENT)
}

/// A stream's status with its viewers' renditions.
fn info(state: &AppState, stream: &Stream) -> StreamInfo {
    StreamInfo { sessions: state.viewer_renditions(stream.name()), ..stream.info() }
}

/// The last frames' stage times through the relay, oldest first (what `latency` summarizes).
pub async fn get_timings(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<FrameTimings>, ApiError> {
    let stream = state.stream(&name)?;
    Ok(Json(FrameTimings { frames: stream.encoder.as_ref().map(|e| e.timings.frames()).unwrap_or_default() }))
}

/// `state` events (the source's [`scopecast_shared::StateEvent`]) and `viewers` events, each
/// sent at once with the current value and then on every change, and a `focus` event
/// ([`FocusInfo`] with the newest figure alone) for every frame of the focus region measured.
/// Ends when the relay stops.
pub async fn stream_events(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<impl IntoResponse, ApiError> {
    let stream = state.stream(&name)?;
    let mut states = stream.subscribe_state();
    let mut viewers = stream.demand.subscribe();
    states.mark_changed();
    viewers.mark_changed();
    // A stream without a focus view has a channel that never changes.
    let focus = stream.focus.as_ref().map_or_else(|| tokio::sync::watch::channel(None).1, |f| f.control.subscribe());
    let stills = stream.subscribe_stills();
    let mut second = tokio::time::interval(FRAME_EVENT_EVERY);
    second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watch = Watch { stream, states, viewers, focus, stills, second, told: None };
    let events = futures_util::stream::unfold(watch, |mut w| async move {
        loop {
            // A new frame is told at once unless one was told within the second; the ticker
            // tells the newest each second (and a passed-through stream's, which has no still).
            let quiet = w.told.is_none_or(|(_, at)| at.elapsed() >= FRAME_EVENT_EVERY);
            let event = tokio::select! {
                biased;
                changed = w.states.changed() => {
                    changed.ok()?;
                    let current = w.states.borrow_and_update().clone();
                    Event::default().event(EVENT_STATE).json_data(current).ok()?
                }
                changed = w.viewers.changed() => {
                    changed.ok()?;
                    let current = *w.viewers.borrow_and_update();
                    Event::default().event(EVENT_VIEWERS).json_data(current).ok()?
                }
                Ok(()) = w.focus.changed() => {
                    let newest = *w.focus.borrow_and_update();
                    let Some(info) = focus_info(&w.stream) else { continue };
                    Event::default().event(EVENT_FOCUS).json_data(FocusInfo { history: newest.into_iter().collect(), ..info }).ok()?
                }
                Ok(()) = w.stills.changed(), if quiet => {
                    w.stills.borrow_and_update();
                    let Some(frame) = w.new_frame() else { continue };
                    Event::default().event(EVENT_FRAME).json_data(frame).ok()?
                }
                _ = w.second.tick() => {
                    let Some(frame) = w.new_frame() else { continue };
                    Event::default().event(EVENT_FRAME).json_data(frame).ok()?
                }
                () = w.stream.stopped() => return None,
            };
            return Some((Ok::<Event, Infallible>(event), w));
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// The `frame` event is sent at most this often.
const FRAME_EVENT_EVERY: Duration = Duration::from_secs(1);

/// What one event stream watches, and the last frame it told (its capture time, and when).
struct Watch {
    stream: Arc<Stream>,
    states: tokio::sync::watch::Receiver<scopecast_shared::StateEvent>,
    viewers: tokio::sync::watch::Receiver<scopecast_shared::api::Viewers>,
    focus: tokio::sync::watch::Receiver<Option<scopecast_shared::api::Sharpness>>,
    stills: tokio::sync::watch::Receiver<Option<Arc<crate::stream::Still>>>,
    second: tokio::time::Interval,
    told: Option<(u64, std::time::Instant)>,
}

impl Watch {
    /// The newest frame, unless it was told already.
    fn new_frame(&mut self) -> Option<FrameEvent> {
        let captured_ms = self.stream.last_frame_ms()?;
        if self.told.is_some_and(|(ms, _)| ms == captured_ms) {
            return None;
        }
        self.told = Some((captured_ms, std::time::Instant::now()));
        let size = self.stream.latest().and_then(|s| s.size()).or(self.stream.video().size);
        Some(FrameEvent { captured_ms, age_ms: crate::timing::unix_ms().saturating_sub(captured_ms), width: size.map(|s| s.0), height: size.map(|s| s.1) })
    }
}

/// Body of `PUT /api/v1/streams/{name}/publish/{target}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    url: String,
    token: Option<String>,
}

/// Starts publishing a stream to a WHIP target, or replaces the target of that name (its old
/// session is deleted first): 201 with the target's status, or 200 when replaced. Changing
/// where a stream goes needs the relay's token: without one configured, the route is closed.
pub async fn put_publish_target(
    State(state): State<Arc<AppState>>,
    Path((name, target)): Path<(String, String)>,
    body: Result<Json<PublishRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<PublishInfo>), ApiError> {
    publishing_allowed(&state)?;
    let stream = state.stream(&name)?;
    let Json(request) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad-request", "Bad request", e.body_text()))?;
    let target = PublishTarget::new(Some(target), &request.url, request.token).map_err(|(field, message)| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "bad-publish-target", "Bad publish target", format!("{field}: {message}"))
    })?;
    let (replaced, status) = state.publish(&stream, target).await;
    Ok((if replaced { StatusCode::OK } else { StatusCode::CREATED }, Json(status.info())))
}

/// Stops publishing a stream to a target; its session is deleted at the target. 204, or 404.
pub async fn delete_publish_target(State(state): State<Arc<AppState>>, Path((name, target)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    publishing_allowed(&state)?;
    state.stream(&name)?;
    if state.unpublish(&name, &target).await {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "unknown-publish-target", "Unknown publish target", format!("stream '{name}' is not published to '{target}'")))
    }
}

/// With no token, anyone who can reach the relay could send its picture anywhere: refused.
fn publishing_allowed(state: &AppState) -> Result<(), ApiError> {
    if state.security.token.is_none() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "token-required",
            "Token required",
            "publish targets change at runtime only on a relay with a token (server.token); without one, set them in the config file",
        ));
    }
    Ok(())
}

/// Renders Prometheus text from a recorder of the relay's own (tests run several relays in one
/// process, so nothing is installed globally). Values are read from the streams' counters at
/// scrape time: the hot paths keep plain atomics.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        Self { recorder, handle }
    }
}

impl Metrics {
    fn render(&self, state: &AppState) -> String {
        metrics::with_local_recorder(&self.recorder, || {
            for stream in state.streams.values() {
                record_stream(stream);
            }
            metrics::gauge!("scopecast_whep_sessions").set(state.session_count() as f64);
            metrics::counter!("scopecast_whep_sessions_created_total").absolute(state.sessions_created());
            if let Some((cpu_s, rss)) = state.process.last() {
                metrics::gauge!("scopecast_process_cpu_seconds_total").set(cpu_s);
                metrics::gauge!("scopecast_process_resident_memory_bytes").set(rss as f64);
            }
        });
        self.handle.render()
    }
}

fn record_stream(stream: &Stream) {
    let name = stream.name().to_owned();
    let default_stats = crate::pipeline::PipelineStats::default();
    let stats = stream.encoder.as_ref().map_or(&default_stats, |e| &e.stats);
    let current = stream.state().state;
    // An info metric: which kind of source, and whether its video is encoded here, passed
    // through or transcoded (the status API says why).
    let info = stream.info();
    let kind = serde_json::to_value(info.source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let video = serde_json::to_value(info.video).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    for path in ["encoded", "passthrough", "transcoded"] {
        // Every path has a series, so a stream that switches leaves no stale 1 behind.
        metrics::gauge!("scopecast_stream_video", "stream" => name.clone(), "source" => kind.clone(), "video" => path).set(f64::from(u8::from(video == path)));
    }
    for (label, s) in [("idle", SourceState::Idle), ("connecting", SourceState::Connecting), ("live", SourceState::Live), ("offline", SourceState::Offline)] {
        metrics::gauge!("scopecast_source_state", "stream" => name.clone(), "state" => label).set(f64::from(u8::from(current == s)));
    }
    let counters = [
        ("scopecast_frames_in_total", stream.frames_in()),
        ("scopecast_frames_encoded_total", stats.frames_encoded.load(Ordering::Relaxed)),
        ("scopecast_frames_dropped_total", stats.frames_dropped.load(Ordering::Relaxed)),
        ("scopecast_frames_rejected_total", stats.frames_rejected.load(Ordering::Relaxed)),
        ("scopecast_keyframes_total", stats.keyframes.load(Ordering::Relaxed)),
        ("scopecast_keyframe_requests_total", stream.track.keyframe_requests.load(Ordering::Relaxed)),
        ("scopecast_encoded_bytes_total", stream.track.bytes()),
        ("scopecast_mjpeg_frames_skipped_total", stream.mjpeg_skipped.load(Ordering::Relaxed)),
    ];
    for (metric, value) in counters {
        metrics::counter!(metric, "stream" => name.clone()).absolute(value);
    }
    let viewers = stream.demand.now();
    for (kind, n) in [
        ("webrtc", viewers.webrtc),
        ("mjpeg", viewers.mjpeg),
        ("snapshot", viewers.snapshot),
        ("publish", viewers.publish),
        ("h264", viewers.h264),
        ("stills", viewers.stills),
    ] {
        metrics::gauge!("scopecast_viewers", "stream" => name.clone(), "kind" => kind).set(f64::from(n));
    }
    for target in crate::lock(&stream.publish).iter() {
        let info = target.info();
        let labels = [("stream", name.clone()), ("target", info.name.clone())];
        metrics::gauge!("scopecast_publish_up", &labels).set(f64::from(u8::from(info.state == PublishState::Live)));
        metrics::counter!("scopecast_publish_attempts_total", &labels).absolute(info.attempts);
        metrics::counter!("scopecast_publish_connects_total", &labels).absolute(info.connects);
        metrics::counter!("scopecast_publish_frames_sent_total", &labels).absolute(info.frames_sent);
        metrics::counter!("scopecast_publish_keyframe_requests_total", &labels).absolute(info.keyframe_requests);
    }
}

pub async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let text = state.metrics.render(&state);
    ([(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))], text)
}
