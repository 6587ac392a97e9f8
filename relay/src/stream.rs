//! One stream's hub: what its source feeds, and what every consumer reads.
//!
//! A source calls [`Stream::deliver`] for each frame and [`Stream::report`] for what happens to
//! its connection. From there a frame goes to the H.264 pipeline (WebRTC viewers) and becomes
//! the stream's latest [`Still`] (MJPEG clients, snapshots); a report becomes the stream's
//! [`StateEvent`], which the API and its event streams show. [`Demand`] counts who watches, by
//! kind, and is what starts and stops an on-demand source.

use crate::config::{redact, SourceConfig, StreamConfig};
use crate::focus::FocusControl;
use crate::ingest::health::{Health, SourceEvent};
use crate::media::jpeg::{encode_i420, JpegDecoder, JpegError};
use crate::media::stretch::{self, StretchControl};
use crate::media::{Codec, I420};
use crate::pipeline::{CapturedFrame, Pipeline, SourceFrame};
use crate::timing::unix_ms;
use crate::track::Track;
use bytes::Bytes;
use scopecast_shared::api::{FocusRegion, FocusRequest, Stretch, StretchLevels, FOCUS_RENDITION};
use scopecast_shared::api::{RenditionInfo, VideoPath};
use scopecast_shared::sdp::ViewerCodec;
use scopecast_shared::{SourceKind, SourceState, StateEvent, StreamInfo, Viewers};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// JPEG quality for stills made from raw pictures (the test pattern).
const STILL_QUALITY: i32 = 85;
/// JPEG quality for stretched stills: a stretch brings out faint detail, and noise with it.
const STRETCHED_QUALITY: i32 = 90;

/// The newest picture of a stream, as the source gave it: the camera's own JPEG bytes, or the
/// test pattern's picture, encoded to JPEG the first time someone asks for it.
pub struct Still {
    /// Increases by one per source frame: a consumer that sees a gap skipped frames.
    pub seq: u64,
    /// Capture time (Unix ms): the camera's `X-Timestamp` when it sends one, else arrival.
    pub captured_ms: u64,
    jpeg: OnceLock<Bytes>,
    picture: Option<Arc<I420>>,
    /// The stretched JPEG (`?stretch=1`), made once for every client that asks.
    stretched: OnceLock<Bytes>,
}

impl Still {
    pub fn from_jpeg(seq: u64, captured_ms: u64, jpeg: Bytes) -> Self {
        Self { seq, captured_ms, jpeg: OnceLock::from(jpeg), picture: None, stretched: OnceLock::new() }
    }

    pub fn from_picture(seq: u64, captured_ms: u64, picture: Arc<I420>) -> Self {
        Self { seq, captured_ms, jpeg: OnceLock::new(), picture: Some(picture), stretched: OnceLock::new() }
    }

    /// The JPEG. Encoding a raw picture costs milliseconds of CPU: unless [`Still::is_encoded`],
    /// call this from a blocking thread. Consumers of the same still share one encode.
    pub fn jpeg(&self) -> Result<Bytes, JpegError> {
        if let Some(j) = self.jpeg.get() {
            return Ok(j.clone());
        }
        let picture = self.picture.as_deref().ok_or(JpegError::NoPicture)?;
        let encoded = Bytes::from(encode_i420(picture, STILL_QUALITY)?);
        Ok(self.jpeg.get_or_init(|| encoded).clone())
    }

    /// The JPEG as viewers see it: stretched with `levels` (what the encoder applies now), or
    /// for `stretch` found from this picture alone when the encoder has applied none; the
    /// original when the stretch is off. Costs a decode and an encode: call it from a blocking
    /// thread. Consumers of the same still share one.
    pub fn stretched_jpeg(&self, stretch: Stretch, levels: Option<StretchLevels>) -> Result<Bytes, JpegError> {
        if let Some(j) = self.stretched.get() {
            return Ok(j.clone());
        }
        let mut picture = match &self.picture {
            Some(p) => I420::clone(p),
            None => {
                let jpeg = self.jpeg.get().ok_or(JpegError::NoPicture)?;
                let mut decoder = JpegDecoder::new()?;
                let mut out = I420::new(2, 2);
                decoder.decode(jpeg, 1, &mut out)?;
                out
            }
        };
        let levels = match (stretch, levels) {
            (Stretch::Off, _) => return self.jpeg(),
            (_, Some(l)) => l,
            (Stretch::Manual { black, white, midtones }, None) => StretchLevels { black, white, midtones },
            (Stretch::Auto { target, clip }, None) => stretch::auto_levels(&stretch::Histogram::of_luma(&picture), target, clip),
        };
        stretch::apply(&stretch::lut(&levels), &mut picture);
        let encoded = Bytes::from(encode_i420(&picture, STRETCHED_QUALITY)?);
        Ok(self.stretched.get_or_init(|| encoded).clone())
    }

    pub fn is_encoded(&self) -> bool {
        self.jpeg.get().is_some()
    }

    /// The camera's picture size: the picture's, else the JPEG header's (a few microseconds).
    pub fn size(&self) -> Option<(u32, u32)> {
        if let Some(p) = &self.picture {
            return Some((p.width as u32, p.height as u32));
        }
        let header = turbojpeg::read_header(self.jpeg.get()?).ok()?;
        Some((header.width as u32, header.height as u32))
    }

    /// The still as a source frame again: its picture, else its JPEG.
    fn source_frame(&self) -> Option<SourceFrame> {
        match (&self.picture, self.jpeg.get()) {
            (Some(p), _) => Some(SourceFrame::Raw(Arc::clone(p))),
            (None, Some(j)) => Some(SourceFrame::Jpeg(j.clone())),
            (None, None) => None,
        }
    }
}

/// Why a stream's stretch cannot be changed.
#[derive(Debug, thiserror::Error)]
#[error("stream '{0}' passes its source's H.264 through without decoding it, so there is no picture to stretch; an rtsp://, exec: or whip source stretches with video = \"transcode\" (a whep:// source cannot)")]
pub struct NotDecoded(String);

/// How a consumer watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerKind {
    WebRtc,
    Mjpeg,
    Snapshot,
    Publish,
    /// A player on the H.264 rung (WebSocket).
    H264,
    /// The stills recorder.
    Stills,
}

/// Who watches a stream right now. Subscribers (an on-demand source, event streams) see every
/// change through a watch channel.
pub struct Demand {
    viewers: watch::Sender<Viewers>,
}

impl Demand {
    fn new() -> Arc<Self> {
        Arc::new(Self { viewers: watch::channel(Viewers::default()).0 })
    }

    /// Counts a consumer until the guard is dropped.
    pub fn join(self: &Arc<Self>, kind: ViewerKind) -> DemandGuard {
        self.viewers.send_modify(|v| *slot(v, kind) += 1);
        DemandGuard { demand: Arc::clone(self), kind }
    }

    pub fn now(&self) -> Viewers {
        *self.viewers.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<Viewers> {
        self.viewers.subscribe()
    }
}

fn slot(v: &mut Viewers, kind: ViewerKind) -> &mut u32 {
    match kind {
        ViewerKind::WebRtc => &mut v.webrtc,
        ViewerKind::Mjpeg => &mut v.mjpeg,
        ViewerKind::Snapshot => &mut v.snapshot,
        ViewerKind::Publish => &mut v.publish,
        ViewerKind::H264 => &mut v.h264,
        ViewerKind::Stills => &mut v.stills,
    }
}

/// One consumer, counted while it lives.
pub struct DemandGuard {
    demand: Arc<Demand>,
    kind: ViewerKind,
}

impl Drop for DemandGuard {
    fn drop(&mut self) {
        let kind = self.kind;
        self.demand.viewers.send_modify(|v| *slot(v, kind) = slot(v, kind).saturating_sub(1));
    }
}

/// A rate over a sliding window of counter samples (fps, bitrate). Pure: samples carry time.
#[derive(Debug)]
pub struct RateMeter {
    window: Duration,
    samples: VecDeque<(Instant, u64)>,
}

impl RateMeter {
    pub fn new(window: Duration) -> Self {
        Self { window, samples: VecDeque::new() }
    }

    pub fn sample(&mut self, now: Instant, count: u64) {
        self.samples.push_back((now, count));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|(t, _)| now.saturating_duration_since(*t) > self.window) {
            self.samples.pop_front();
        }
    }

    /// Per second over the window; 0 until two samples are in.
    pub fn rate(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some((t0, c0)), Some((t1, c1))) if t1 > t0 => c1.saturating_sub(*c0) as f64 / t1.duration_since(*t0).as_secs_f64(),
            _ => 0.0,
        }
    }
}

/// Rates shown by the API: 5 s for what the encoder does, 10 s for what slow cameras send.
struct Meters {
    fps_in: RateMeter,
    fps_out: RateMeter,
    bytes_out: RateMeter,
}

/// How the stream's WebRTC video is made right now, and why (an RTSP source decides once it
/// sees the camera's parameter sets, and again if B-frames show up).
#[derive(Debug, Clone)]
pub struct VideoChoice {
    pub path: VideoPath,
    pub why: Option<String>,
    pub codec: Option<String>,
    pub transport: Option<String>,
    /// The source's picture size, where it says (its SPS).
    pub size: Option<(u32, u32)>,
}

impl VideoChoice {
    pub fn new(path: VideoPath) -> Self {
        Self { path, why: None, codec: None, transport: None, size: None }
    }
}

pub struct Stream {
    pub config: StreamConfig,
    /// The encoded video every WHEP viewer and publish target reads.
    pub track: Arc<Track>,
    /// The encoder that makes `track` from pictures; `None` for a source whose H.264 is always
    /// passed through. An RTSP source has one, idle while it passes its H.264 through.
    pub encoder: Option<Arc<Pipeline>>,
    video: Mutex<VideoChoice>,
    pub demand: Arc<Demand>,
    latest: watch::Sender<Option<Arc<Still>>>,
    state: watch::Sender<StateEvent>,
    seq: AtomicU64,
    last_frame_ms: AtomicU64,
    /// Access units from an encoded source that is transcoded (decoded only while watched).
    encoded_in: AtomicU64,
    /// Frames MJPEG clients skipped because they read slower than the source sends.
    pub mjpeg_skipped: AtomicU64,
    meters: Mutex<Meters>,
    shutdown: watch::Sender<bool>,
    /// The WHIP publish targets sending this stream, in the order they were added.
    pub publish: Mutex<Vec<Arc<crate::publish::TargetStatus>>>,
    /// Smaller encodings for viewers on slow links, top first (below `track`, "full").
    pub renditions: Vec<RenditionTrack>,
    /// How the encoder stretches pictures; the API changes it while streaming.
    pub stretch: Arc<StretchControl>,
    /// The focus view; `None` for a stream that is never decoded (whep://).
    pub focus: Option<FocusTrack>,
}

/// The focus region's rendition: its own encoder, fed the source frames while watched.
pub struct FocusTrack {
    pub control: Arc<FocusControl>,
    pub track: Arc<Track>,
    pub encoder: Arc<Pipeline>,
}

/// A smaller rendition: its encoder follows the stream's own (which decodes for it).
pub struct RenditionTrack {
    pub config: crate::config::Rendition,
    pub track: Arc<Track>,
    pub encoder: Arc<Pipeline>,
}

impl From<ViewerCodec> for Codec {
    fn from(c: ViewerCodec) -> Self {
        match c {
            ViewerCodec::H264 => Codec::H264,
            ViewerCodec::Vp8 => Codec::Vp8,
        }
    }
}

/// One rung of the ladder a viewer is moved on.
#[derive(Clone)]
pub struct Step {
    pub name: String,
    pub track: Arc<Track>,
    pub bitrate_bps: u64,
    /// Every step of a ladder is in the codec the viewer negotiated.
    pub codec: Codec,
}

impl Stream {
    pub fn new(
        config: StreamConfig,
        track: Arc<Track>,
        encoder: Option<Arc<Pipeline>>,
        renditions: Vec<RenditionTrack>,
        stretch: Arc<StretchControl>,
        focus: Option<FocusTrack>,
    ) -> Arc<Self> {
        let initial = if config.on_demand { SourceState::Idle } else { SourceState::Connecting };
        let video = match (&config.source, &encoder) {
            (SourceConfig::Whep { .. }, _) | (_, None) => VideoChoice::new(VideoPath::Passthrough),
            // Passed through (its GOP kept) from the first keyframe, unless the camera's SPS says
            // otherwise then.
            (SourceConfig::Rtsp { .. }, _) => VideoChoice::new(VideoPath::Passthrough),
            _ => VideoChoice::new(VideoPath::Encoded),
        };
        track.set_keep_gop(video.path == VideoPath::Passthrough && config.gop_cache);
        Arc::new(Self {
            config,
            track,
            encoder,
            video: Mutex::new(video),
            demand: Demand::new(),
            latest: watch::channel(None).0,
            state: watch::channel(StateEvent { state: initial, last_error: None, since_ms: unix_ms() }).0,
            seq: AtomicU64::new(0),
            last_frame_ms: AtomicU64::new(0),
            encoded_in: AtomicU64::new(0),
            mjpeg_skipped: AtomicU64::new(0),
            meters: Mutex::new(Meters {
                fps_in: RateMeter::new(Duration::from_secs(10)),
                fps_out: RateMeter::new(Duration::from_secs(5)),
                bytes_out: RateMeter::new(Duration::from_secs(5)),
            }),
            shutdown: watch::channel(false).0,
            publish: Mutex::default(),
            renditions,
            stretch,
            focus,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The renditions a viewer of `codec` may be moved between, top first: for H.264 the
    /// stream's own ("full") and its smaller H.264 renditions, for VP8 its VP8 ones. A
    /// passed-through stream has only its own: the others are encoded from pictures, which a
    /// passed-through source does not decode for them (so none for VP8).
    pub fn ladder(&self, codec: ViewerCodec) -> Vec<Step> {
        let codec = Codec::from(codec);
        let mut steps = Vec::new();
        if codec == Codec::H264 {
            let bitrate_bps = u64::from(self.config.bitrate_bps);
            steps.push(Step { name: crate::config::FULL_RENDITION.to_owned(), track: Arc::clone(&self.track), bitrate_bps, codec });
        }
        if self.video().path != VideoPath::Passthrough {
            steps.extend(self.renditions.iter().filter(|r| r.config.codec == codec).map(|r| Step {
                name: r.config.name.clone(),
                track: Arc::clone(&r.track),
                bitrate_bps: u64::from(r.config.bitrate_bps),
                codec,
            }));
        }
        steps
    }

    /// A new frame from the source, to the encoder and as the latest still: `captured`
    /// (monotonic, for RTP time) and `captured_ms` (Unix ms the source stamped, or arrival) say
    /// when it was taken; it arrived just now.
    pub fn deliver(&self, data: SourceFrame, captured: Instant, captured_ms: f64) {
        let arrived = Instant::now();
        let captured_whole_ms = captured_ms as u64;
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let still = match &data {
            SourceFrame::Jpeg(jpeg) => Still::from_jpeg(seq, captured_whole_ms, jpeg.clone()),
            SourceFrame::Raw(picture) => Still::from_picture(seq, captured_whole_ms, Arc::clone(picture)),
        };
        self.latest.send_replace(Some(Arc::new(still)));
        self.last_frame_ms.store(captured_whole_ms, Ordering::Relaxed);
        if let Some(focus) = self.focus.as_ref().filter(|f| f.encoder.is_watched() && f.control.region().is_some()) {
            focus.encoder.push_frame(CapturedFrame { data: data.clone(), captured, captured_ms, arrived });
        }
        if let Some(encoder) = &self.encoder {
            encoder.push_frame(CapturedFrame { data, captured, captured_ms, arrived });
        }
        self.report(SourceEvent::Frame);
    }

    /// The renditions a viewer may be moved between, as [`Stream::ladder`]; a viewer that
    /// asks for the focus region gets that alone (it is never chosen for anyone).
    pub fn ladder_for(&self, codec: ViewerCodec, wanted: Option<&str>) -> Vec<Step> {
        match (wanted, &self.focus) {
            (Some(FOCUS_RENDITION), Some(focus)) if codec == ViewerCodec::H264 && self.video().path != VideoPath::Passthrough => {
                // A joiner gets the current picture's region at once, not at the next frame.
                self.refresh_focus();
                vec![Step {
                    name: FOCUS_RENDITION.to_owned(),
                    track: Arc::clone(&focus.track),
                    bitrate_bps: u64::from(self.config.bitrate_bps),
                    codec: Codec::H264,
                }]
            }
            _ => self.ladder(codec),
        }
    }

    /// Sets the focus region (the last request wins); its viewers see it from the current
    /// picture on.
    pub fn set_focus(&self, request: FocusRequest) -> Result<Result<FocusRegion, String>, NotDecoded> {
        let focus = self.focus.as_ref().filter(|_| self.video().path != VideoPath::Passthrough).ok_or_else(|| NotDecoded(self.name().to_owned()))?;
        let region = focus.control.set(request);
        if region.is_ok() {
            self.refresh_focus();
        }
        Ok(region)
    }

    /// The focus encoder gets the current picture again (a new region, a joiner).
    fn refresh_focus(&self) {
        if let (Some(focus), Some(frame)) = (&self.focus, self.latest().and_then(|s| s.source_frame())) {
            if focus.control.region().is_some() {
                focus.encoder.refresh(CapturedFrame::now(frame));
            }
        }
    }

    /// An encoded source's access unit, passed through to the track's readers.
    pub fn deliver_encoded(&self, frame: crate::pipeline::RtpFrame, captured_ms: u64) {
        self.last_frame_ms.store(captured_ms, Ordering::Relaxed);
        self.track.publish(frame);
        self.report(SourceEvent::Frame);
    }

    /// A frame from a source whose pictures are made elsewhere (an encoded source being
    /// transcoded, decoded only while watched): counted, and the source is live.
    pub fn source_frame(&self, captured_ms: u64) {
        self.last_frame_ms.store(captured_ms, Ordering::Relaxed);
        self.encoded_in.fetch_add(1, Ordering::Relaxed);
        self.report(SourceEvent::Frame);
    }

    /// A picture decoded from a passed-through stream, for MJPEG clients and snapshots.
    pub fn set_still(&self, picture: Arc<I420>, captured_ms: u64) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        self.latest.send_replace(Some(Arc::new(Still::from_picture(seq, captured_ms, picture))));
    }

    /// No more decoded pictures will come (the stills decoder stopped): the last one would go
    /// stale.
    pub fn clear_still(&self) {
        self.latest.send_replace(None);
    }

    pub fn video(&self) -> VideoChoice {
        crate::lock(&self.video).clone()
    }

    /// The source chose how its video is made: passed through keeps the GOP for joiners; an
    /// encoder makes keyframes instead. A change is logged once.
    pub fn set_video(&self, choice: VideoChoice) {
        let mut current = crate::lock(&self.video);
        if current.path != choice.path || current.why != choice.why {
            tracing::info!(stream = self.name(), "video {:?}: {}", choice.path, choice.why.as_deref().unwrap_or(""));
            self.track.set_keep_gop(choice.path == VideoPath::Passthrough && self.config.gop_cache);
            if let (Some(encoder), VideoPath::Passthrough) = (&self.encoder, choice.path) {
                // Its last picture must not be repeated into a track now passed through.
                encoder.forget_picture();
            }
        }
        *current = choice;
    }

    /// Something happened to the source. Changes (not every retry) are logged once and shown
    /// to subscribers.
    pub fn report(&self, event: SourceEvent) {
        let name = self.name();
        self.state.send_if_modified(|current| {
            let mut health = Health { state: current.state, last_error: current.last_error.clone() };
            if !health.apply(&event) {
                return false;
            }
            let changed_state = health.state != current.state;
            if changed_state {
                current.since_ms = unix_ms();
            }
            // A line per change of state; a new reason while already offline (the cause, then
            // "connection refused" from the retries) is shown by the API and events, not logged.
            match (&health.state, &event) {
                (SourceState::Offline, SourceEvent::Failed(why)) if changed_state => tracing::warn!(stream = name, "source offline: {why}"),
                (SourceState::Offline, SourceEvent::Failed(why)) => tracing::debug!(stream = name, "source still offline: {why}"),
                (SourceState::Live, _) => tracing::info!(stream = name, "source live"),
                (SourceState::Idle, _) => tracing::info!(stream = name, "source stopped: nobody is watching"),
                (SourceState::Connecting, _) => tracing::info!(stream = name, "source starting"),
                _ => {}
            }
            current.state = health.state;
            current.last_error = health.last_error;
            true
        });
    }

    pub fn state(&self) -> StateEvent {
        self.state.borrow().clone()
    }

    pub fn subscribe_state(&self) -> watch::Receiver<StateEvent> {
        self.state.subscribe()
    }

    pub fn is_live(&self) -> bool {
        self.state.borrow().state == SourceState::Live
    }

    /// Waits, up to `timeout`, for a starting source to either deliver a frame or fail, and
    /// returns the state it is in then. The caller should hold demand, so that an on-demand
    /// source starts.
    pub async fn wait_started(&self, timeout: Duration) -> SourceState {
        let mut rx = self.state.subscribe();
        let settled = |s: &StateEvent| matches!(s.state, SourceState::Live | SourceState::Offline);
        let _ = tokio::time::timeout(timeout, rx.wait_for(settled)).await;
        self.state.borrow().state
    }

    /// An on-demand source was stopped because nobody watches. Its last picture is dropped:
    /// the next viewer waits for a fresh one rather than seeing one from hours ago.
    pub fn went_idle(&self) {
        self.latest.send_replace(None);
        if let Some(encoder) = &self.encoder {
            encoder.forget_picture();
        }
        if let Some(focus) = &self.focus {
            focus.encoder.forget_picture();
        }
        self.track.reset();
        self.report(SourceEvent::Stopped);
    }

    /// Changes the stretch for every viewer. The current picture goes to the encoder again at
    /// once, so on a slow stream the change shows without waiting for the next frame.
    pub fn set_stretch(&self, stretch: Stretch) -> Result<(), NotDecoded> {
        let Some(encoder) = self.encoder.as_ref().filter(|_| self.video().path != VideoPath::Passthrough) else {
            if stretch == Stretch::Off {
                return Ok(());
            }
            return Err(NotDecoded(self.name().to_owned()));
        };
        self.stretch.set(stretch);
        if let Some(frame) = self.latest().and_then(|still| still.source_frame()) {
            encoder.refresh(CapturedFrame::now(frame));
        }
        Ok(())
    }

    /// The newest source frame's capture time (Unix ms), of a decoded or a passed-through
    /// stream alike; `None` before the first.
    pub fn last_frame_ms(&self) -> Option<u64> {
        Some(self.last_frame_ms.load(Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    pub fn latest(&self) -> Option<Arc<Still>> {
        self.latest.borrow().clone()
    }

    pub fn subscribe_stills(&self) -> watch::Receiver<Option<Arc<Still>>> {
        self.latest.subscribe()
    }

    /// Whether frames are wanted at full rate: a WebRTC viewer is attached or an MJPEG client
    /// reads (the test pattern slows down otherwise).
    pub fn is_watched(&self) -> bool {
        let v = self.demand.now();
        self.track.readers() > 0
            || self.renditions.iter().any(|r| r.track.readers() > 0)
            || self.focus.as_ref().is_some_and(|f| f.track.readers() > 0)
            || v.mjpeg > 0
            || v.stills > 0
    }

    /// Stops the source and the encoder.
    pub fn stop(&self) {
        self.shutdown.send_replace(true);
        if let Some(encoder) = &self.encoder {
            encoder.stop();
        }
        if let Some(focus) = &self.focus {
            focus.encoder.stop();
        }
    }

    pub fn is_stopped(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves when the stream is stopped.
    pub async fn stopped(&self) {
        let mut rx = self.shutdown.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Frames from the source so far: what reached the encoder, or, passed through, the track.
    pub fn frames_in(&self) -> u64 {
        match (&self.encoder, self.video().path) {
            (Some(e), VideoPath::Encoded) => e.stats.frames_in.load(Ordering::Relaxed),
            (_, VideoPath::Transcoded) => self.encoded_in.load(Ordering::Relaxed),
            _ => self.track.frames(),
        }
    }

    /// Feeds the rate meters; the relay calls this about once a second.
    pub fn sample_rates(&self, now: Instant) {
        let frames_in = self.frames_in();
        let mut m = crate::lock(&self.meters);
        m.fps_in.sample(now, frames_in);
        m.fps_out.sample(now, self.track.frames());
        m.bytes_out.sample(now, self.track.bytes());
    }

    /// Every rendition viewers may get now (H.264 and VP8), top first within each codec.
    fn rendition_info(&self, width: Option<u32>, height: Option<u32>, frames_encoded: &AtomicU64) -> Vec<RenditionInfo> {
        let full = RenditionInfo {
            name: crate::config::FULL_RENDITION.to_owned(),
            codec: Codec::H264.name().to_owned(),
            width,
            height,
            bitrate_bps: u64::from(self.config.bitrate_bps),
            max_fps: self.config.max_fps,
            readers: self.track.readers() as u32,
            frames_encoded: frames_encoded.load(Ordering::Relaxed),
        };
        let passthrough = self.video().path == VideoPath::Passthrough;
        let others = self.renditions.iter().filter(|_| !passthrough).map(|r| RenditionInfo {
            name: r.config.name.clone(),
            codec: r.config.codec.name().to_owned(),
            width: r.config.size.map(|s| s.0 as u32).or(width),
            height: r.config.size.map(|s| s.1 as u32).or(height),
            bitrate_bps: u64::from(r.config.bitrate_bps),
            max_fps: r.config.max_fps,
            readers: r.track.readers() as u32,
            frames_encoded: r.encoder.stats.frames_encoded.load(Ordering::Relaxed),
        });
        std::iter::once(full).chain(others).collect()
    }

    /// What the API shows.
    pub fn info(&self) -> StreamInfo {
        let default_stats = crate::pipeline::PipelineStats::default();
        let stats = self.encoder.as_ref().map_or(&default_stats, |e| &e.stats);
        let known = |v: usize| (v > 0).then_some(v as u32);
        let name = &self.config.name;
        let (source, source_url) = match &self.config.source {
            SourceConfig::TestPattern { .. } => (SourceKind::TestPattern, None),
            SourceConfig::Mjpeg { url } => (SourceKind::Mjpeg, Some(redact(url))),
            SourceConfig::Whep { url } => (SourceKind::Whep, Some(redact(url))),
            SourceConfig::Rtsp { url, .. } => (SourceKind::Rtsp, Some(redact(url))),
            // The program only: arguments may hold a camera's password.
            SourceConfig::Exec { command, .. } => (SourceKind::Exec, Some(format!("exec:{}", command.split_whitespace().next().unwrap_or_default()))),
            SourceConfig::Whip { .. } => (SourceKind::Whip, Some(format!("/{}/whip", self.config.name))),
        };
        let video = self.video();
        let (width, height) = match (&self.config.source, self.config.size) {
            _ if video.path == VideoPath::Passthrough => (video.size.map(|s| s.0), video.size.map(|s| s.1)),
            (_, Some((w, h))) => (Some(w as u32), Some(h as u32)),
            (SourceConfig::TestPattern { width, height, .. }, None) => (Some(*width as u32), Some(*height as u32)),
            _ => match (known(stats.width.load(Ordering::Relaxed)), known(stats.height.load(Ordering::Relaxed)), video.size) {
                // A transcoded source not yet encoded: its own size (which the encoder keeps).
                (None, _, Some((w, h))) => (Some(w), Some(h)),
                (w, h, _) => (w, h),
            },
        };
        let state = self.state();
        let (fps_in, fps_out, bitrate) = {
            let m = crate::lock(&self.meters);
            (m.fps_in.rate(), m.fps_out.rate(), m.bytes_out.rate() * 8.0)
        };
        StreamInfo {
            name: name.clone(),
            source,
            source_url,
            state: state.state,
            last_error: state.last_error,
            state_since_ms: state.since_ms,
            on_demand: self.config.on_demand,
            offline_policy: self.config.offline_policy,
            video: video.path,
            video_reason: video.why,
            source_codec: video.codec,
            source_transport: video.transport,
            width,
            height,
            max_fps: self.config.max_fps,
            fps_in: (fps_in * 100.0).round() / 100.0,
            fps_out: (fps_out * 100.0).round() / 100.0,
            bitrate_bps: bitrate.round() as u64,
            viewers: self.demand.now(),
            frames_in: self.frames_in(),
            frames_encoded: stats.frames_encoded.load(Ordering::Relaxed),
            frames_dropped: stats.frames_dropped.load(Ordering::Relaxed),
            frames_rejected: stats.frames_rejected.load(Ordering::Relaxed),
            last_frame_ms: self.last_frame_ms(),
            whep_url: format!("/{name}/whep"),
            mjpeg_url: format!("/{name}/mjpeg"),
            snapshot_url: format!("/{name}/snapshot.jpg"),
            events_url: format!("/api/v1/streams/{name}/events"),
            latency: self.encoder.as_ref().and_then(|e| e.timings.latency()),
            publish: crate::lock(&self.publish).iter().map(|t| t.info()).collect(),
            timings_url: format!("/api/v1/streams/{name}/timings"),
            renditions: self.rendition_info(width, height, &stats.frames_encoded),
            sessions: Vec::new(),
            stretch: self.stretch.get(),
            stretch_levels: self.stretch.applied(),
            focus: self.focus.as_ref().and_then(|f| f.control.region()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demand_counts_by_kind_until_guards_drop() {
        let d = Demand::new();
        let mut rx = d.subscribe();
        let a = d.join(ViewerKind::WebRtc);
        let b = d.join(ViewerKind::Mjpeg);
        let c = d.join(ViewerKind::Mjpeg);
        let e = d.join(ViewerKind::H264);
        assert_eq!(d.now(), Viewers { webrtc: 1, mjpeg: 2, snapshot: 0, publish: 0, h264: 1, stills: 0 });
        assert!(rx.has_changed().expect("open"));
        drop((a, b, e));
        assert_eq!(d.now().total(), 1);
        drop(c);
        assert_eq!(rx.borrow_and_update().total(), 0);
    }

    #[test]
    fn rates_over_a_sliding_window() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut m = RateMeter::new(Duration::from_secs(5));
        assert_eq!(m.rate(), 0.0);
        for n in 0..=10 {
            m.sample(s(n), n * 25);
        }
        assert_eq!(m.rate(), 25.0);
        // The source stops: the rate falls as the window slides past the last frames.
        for n in 11..=14 {
            m.sample(s(n), 250);
        }
        assert_eq!(m.rate(), 25.0 / 5.0);
        m.sample(s(16), 250);
        assert_eq!(m.rate(), 0.0);
    }

    #[test]
    fn a_raw_still_is_encoded_once_on_demand() {
        let still = Still::from_picture(1, 5, Arc::new(I420::new(64, 48)));
        assert!(!still.is_encoded());
        let a = still.jpeg().expect("encodes");
        assert!(still.is_encoded() && a.starts_with(&[0xFF, 0xD8]));
        assert_eq!(still.jpeg().expect("cached").as_ptr(), a.as_ptr(), "shared, not encoded again");
    }
}
