//! The encoder of a picture source: source frames -> latest-frame slot -> encoder thread
//! (decode, scale, encode, packetize once) -> the stream's `Track` -> every reader.
//!
//! Only the newest source frame waits for the encoder: a frame that arrives while an older one
//! is still waiting replaces it and is counted as dropped. Nothing is decoded or encoded while no
//! one watches. A viewer that joins gets an IDR at once, re-encoded from the last picture when
//! no new frame is due, so even a 0.1 fps stream shows a picture immediately.

use crate::focus::FocusControl;
use crate::lock;
use crate::media::encoder::fit_for_encoder;
use crate::media::jpeg::JpegDecoder;
use crate::media::jpeg_region::RegionDecoder;
use crate::media::scale::Scaler;
use crate::media::sharpness;
use crate::media::stretch::{StretchControl, Stretcher};
use crate::media::{Codec, EncoderSettings, VideoEncoder, I420};
use crate::timing::{self, TimedFrame, TimingLog};
use crate::track::Track;
use bytes::Bytes;
use scopecast_shared::api::{FrameTiming, Sharpness};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use webrtc::rtp::codecs::h264::H264Payloader;
use webrtc::rtp::codecs::vp8::Vp8Payloader;
use webrtc::rtp::packet::Packet;
use webrtc::rtp::packetizer::Payloader;

/// RTP payload size: leaves room for SRTP, extensions and IP/UDP headers under a 1280-byte path MTU.
const RTP_PAYLOAD_MTU: usize = 1188;
/// H.264 RTP clock.
const RTP_CLOCK_HZ: u64 = 90_000;

/// What a source hands to the pipeline. Cloning shares the bytes or the picture.
#[derive(Clone)]
pub enum SourceFrame {
    Jpeg(Bytes),
    /// Shared with the stream's latest still (the test pattern's picture).
    Raw(Arc<I420>),
}

#[derive(Clone)]
pub struct CapturedFrame {
    pub data: SourceFrame,
    /// When the frame was made or arrived (monotonic), for RTP timestamps.
    pub captured: Instant,
    /// The capture time the source stamped (Unix ms), else the arrival's; for the stage times.
    pub captured_ms: f64,
    /// When the relay had the whole frame.
    pub arrived: Instant,
}

impl CapturedFrame {
    /// A frame made or received just now.
    pub fn now(data: SourceFrame) -> Self {
        let now = Instant::now();
        Self { data, captured: now, captured_ms: timing::wall_ms(now), arrived: now }
    }
}

/// An encoded access unit, packetized once, shared read-only by every viewer. Each viewer only
/// rewrites sequence numbers on its own copy of the header (payloads are `Bytes`, so no copy).
#[derive(Debug)]
pub struct RtpFrame {
    pub packets: Vec<Packet>,
    pub keyframe: bool,
    pub width: usize,
    pub height: usize,
    pub bytes: usize,
    /// Stage times of a new source frame (not of repeats); viewers stamp when it went out.
    pub timing: Option<Arc<TimedFrame>>,
    /// Its place in the track (set by `Track::publish`).
    pub index: u64,
}

#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Output size; `None` keeps the source's size.
    pub size: Option<(usize, usize)>,
    /// Frames closer together than `1/max_fps` are dropped before decoding.
    pub max_fps: Option<f64>,
    pub encoder: EncoderSettings,
    /// What the encoder makes: H.264, or VP8 for browsers without it.
    pub codec: Codec,
    /// Minimum spacing of viewer-requested (PLI/FIR) keyframes.
    pub keyframe_min_interval: Duration,
    /// The stream's RTP clock, shared by its renditions so a viewer moved between them sees
    /// one timeline.
    pub clock: RtpClock,
    /// The stream's stretch, applied by the lead to each picture it decodes (its followers
    /// get the stretched picture); `None` for followers.
    pub stretch: Option<Arc<StretchControl>>,
    /// This pipeline encodes the focus region: a crop of each source frame at native size.
    pub focus: Option<Arc<FocusControl>>,
}

/// Capture time to 90 kHz RTP time: one per stream, whatever rendition encodes the picture.
#[derive(Debug, Clone, Copy)]
pub struct RtpClock {
    epoch: Instant,
    offset: u32,
}

impl RtpClock {
    /// A clock from now, at a random offset (RFC 3550).
    pub fn new() -> Self {
        Self { epoch: Instant::now(), offset: rand::random() }
    }

    pub fn timestamp(&self, captured: Instant) -> u32 {
        let ticks = captured.saturating_duration_since(self.epoch).as_micros() as u64 * RTP_CLOCK_HZ / 1_000_000;
        self.offset.wrapping_add(ticks as u32)
    }
}

impl Default for RtpClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters an operator can read.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub frames_in: AtomicU64,
    pub frames_encoded: AtomicU64,
    /// Replaced in the slot before the encoder took them, or over the frame-rate cap.
    pub frames_dropped: AtomicU64,
    /// Source frames that could not be used: undecodable, oversized, not JPEG.
    pub frames_rejected: AtomicU64,
    pub keyframes: AtomicU64,
    pub width: AtomicUsize,
    pub height: AtomicUsize,
    /// The size the last source frame was decoded at: smaller than the output when only
    /// smaller followers are watched (the JPEG's DCT reduction).
    pub decoded_width: AtomicUsize,
    pub decoded_height: AtomicUsize,
}

/// A stream slower than this gets an IDR for every new frame, and a repeat of the picture in
/// between: browsers ask for a keyframe when nothing decodable came for ~3 s, and players'
/// freeze detectors fire on a still picture.
pub const REPEAT_INTERVAL: Duration = Duration::from_secs(1);

/// When to encode without a new source frame, and when a new frame must be an IDR. Time is an
/// argument, so the rule is tested without a clock.
#[derive(Debug, Default)]
pub struct Cadence {
    last_output: Option<Instant>,
    last_source: Option<Instant>,
}

impl Cadence {
    /// A new source frame; returns true when it comes after a gap that calls for an IDR (a slow
    /// stream, or the first frame after an outage).
    pub fn source_frame(&mut self, captured: Instant) -> bool {
        let gap = self.last_source.map(|t| captured.saturating_duration_since(t));
        self.last_source = Some(captured);
        gap.is_some_and(|g| g >= REPEAT_INTERVAL)
    }

    /// Something was sent to the viewers.
    pub fn output(&mut self, now: Instant) {
        self.last_output = Some(now);
    }

    /// When the picture is to be repeated if nothing else is sent before.
    pub fn repeat_at(&self) -> Option<Instant> {
        self.last_output.map(|t| t + REPEAT_INTERVAL)
    }
}

#[derive(Default)]
struct Slot {
    frame: Option<CapturedFrame>,
    keyframe_wanted: bool,
    /// Drop the last picture (the source went idle; a joiner must wait for a fresh one).
    forget: bool,
    /// A follower has a joiner and no picture: hand it the current one.
    feed: bool,
    shutdown: bool,
}

pub struct Pipeline {
    pub name: String,
    settings: PipelineSettings,
    slot: Mutex<Slot>,
    wake: Condvar,
    track: Arc<Track>,
    pub stats: PipelineStats,
    /// The last frames' stage times.
    pub timings: TimingLog,
    stopped: AtomicBool,
    /// The stream's smaller renditions: this pipeline decodes each source frame once and hands
    /// the picture to those being watched, which scale and encode it on their own threads.
    followers: Vec<Arc<Pipeline>>,
    /// A follower's lead, asked for a picture when a joiner finds none.
    lead: Mutex<std::sync::Weak<Pipeline>>,
}

impl Pipeline {
    /// Creates the pipeline, which encodes into `track` (and makes its keyframes), and starts
    /// its encoder thread. `followers` (the stream's smaller renditions) get its pictures.
    pub fn start(name: &str, settings: PipelineSettings, track: Arc<Track>, followers: Vec<Arc<Pipeline>>) -> std::io::Result<Arc<Self>> {
        let pipeline = Arc::new(Self {
            name: name.to_owned(),
            settings,
            slot: Mutex::new(Slot::default()),
            wake: Condvar::new(),
            track: Arc::clone(&track),
            stats: PipelineStats::default(),
            timings: TimingLog::default(),
            stopped: AtomicBool::new(false),
            followers,
            lead: Mutex::new(std::sync::Weak::new()),
        });
        for follower in &pipeline.followers {
            *lock(&follower.lead) = Arc::downgrade(&pipeline);
        }
        let weak = Arc::downgrade(&pipeline);
        track.set_producer(Box::new(move |_reason| {
            if let Some(p) = weak.upgrade() {
                p.make_keyframe();
            }
        }));
        let worker = Arc::clone(&pipeline);
        std::thread::Builder::new().name(format!("encode-{name}")).spawn(move || worker.run_encoder())?;
        Ok(pipeline)
    }

    /// The next encoded frame is an IDR (the track's throttle has already allowed it).
    pub fn make_keyframe(&self) {
        lock(&self.slot).keyframe_wanted = true;
        self.wake.notify_one();
    }

    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Hands a new source frame to the encoder, replacing any frame still waiting.
    pub fn push_frame(&self, frame: CapturedFrame) {
        self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
        let mut slot = lock(&self.slot);
        if slot.frame.replace(frame).is_some() && self.is_watched() {
            self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
        }
        drop(slot);
        self.wake.notify_one();
    }

    /// Encodes `frame` (the current picture again) unless a new source frame is already
    /// waiting, which then goes first and already shows whatever changed.
    pub fn refresh(&self, frame: CapturedFrame) {
        let mut slot = lock(&self.slot);
        if slot.frame.is_none() {
            slot.frame = Some(frame);
            drop(slot);
            self.wake.notify_one();
        }
    }

    /// Someone reads the track: encode.
    pub fn is_watched(&self) -> bool {
        self.track.readers() > 0
    }

    /// Someone reads this track or a follower's: decode.
    fn needs_pictures(&self) -> bool {
        self.is_watched() || self.followers.iter().any(|f| f.is_watched())
    }

    /// The largest output size among the watched followers, when all have one: what a picture
    /// decoded for them alone must cover.
    fn followers_size(&self) -> Option<(usize, usize)> {
        let sizes: Option<Vec<(usize, usize)>> = self.followers.iter().filter(|f| f.is_watched()).map(|f| f.settings.size).collect();
        sizes?.into_iter().max_by_key(|&(w, h)| w * h)
    }

    /// A follower wants the current picture (its joiner found none).
    fn feed_followers(&self) {
        lock(&self.slot).feed = true;
        self.wake.notify_one();
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Drops the last picture and any waiting frame, so no viewer is shown a stale one.
    pub fn forget_picture(&self) {
        let mut slot = lock(&self.slot);
        slot.frame = None;
        slot.forget = true;
        drop(slot);
        self.wake.notify_one();
        self.followers.iter().for_each(|f| f.forget_picture());
    }

    /// Stops the encoder thread, and its followers'.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        lock(&self.slot).shutdown = true;
        self.wake.notify_all();
        self.followers.iter().for_each(|f| f.stop());
    }

    fn run_encoder(self: Arc<Self>) {
        let mut worker = match EncoderWorker::new(&self.settings) {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(stream = %self.name, "cannot start the encoder: {e}");
                return;
            }
        };
        loop {
            let (frame, keyframe, repeat) = {
                let mut slot = lock(&self.slot);
                loop {
                    if slot.shutdown {
                        return;
                    }
                    if std::mem::take(&mut slot.forget) {
                        worker.picture = None;
                        worker.last_frame = None;
                    }
                    if std::mem::take(&mut slot.feed) {
                        if let Some(picture) = &worker.picture {
                            self.hand_to_followers(picture, worker.picture_captured.unwrap_or_else(Instant::now));
                        }
                    }
                    let watched = self.is_watched();
                    if (slot.frame.is_some() && self.needs_pictures()) || (watched && slot.keyframe_wanted && worker.has_picture()) {
                        break (slot.frame.take(), std::mem::take(&mut slot.keyframe_wanted), false);
                    }
                    let now = Instant::now();
                    let repeat_at = worker.has_picture().then(|| worker.cadence.repeat_at()).flatten();
                    if watched && repeat_at.is_some_and(|t| t <= now) {
                        break (None, false, true);
                    }
                    let wait = match repeat_at {
                        Some(t) if watched => t.saturating_duration_since(now).clamp(Duration::from_millis(1), Duration::from_secs(1)),
                        _ => Duration::from_secs(1),
                    };
                    slot = match self.wake.wait_timeout(slot, wait) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
            };
            // A joiner of this track while the picture is a small one made for the followers:
            // the same source frame again, at full size (not handed to the followers twice).
            let reload = frame.is_none() && keyframe && worker.reduced;
            let frame = if reload { worker.last_frame.clone() } else { frame };
            if let Some(frame) = frame {
                if !worker.accept(&frame, keyframe, self.settings.max_fps) {
                    self.stats.frames_dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let started_ms = timing::now_ms();
                let captured = frame.captured;
                let for_followers = if self.is_watched() { None } else { self.followers_size() };
                if let Err(e) = worker.load(frame, started_ms, for_followers) {
                    self.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                    if let Some(count) = worker.decode_errors.hit(Instant::now()) {
                        tracing::warn!(stream = %self.name, count, "skipping undecodable frame: {e}");
                    }
                    if !keyframe {
                        continue;
                    }
                    // A joiner still gets the previous picture as an IDR, below.
                } else if reload {
                    // Not a new frame: no stage times (its capture is old news).
                    worker.pending_timing = None;
                } else if let Some(picture) = &worker.picture {
                    self.stats.decoded_width.store(picture.width, Ordering::Relaxed);
                    self.stats.decoded_height.store(picture.height, Ordering::Relaxed);
                    self.hand_to_followers(picture, captured);
                }
                if !self.is_watched() {
                    continue; // decoded for the followers only
                }
            }
            match worker.encode(keyframe, repeat) {
                Ok(Some(out)) => {
                    self.stats.frames_encoded.fetch_add(1, Ordering::Relaxed);
                    self.stats.width.store(out.width, Ordering::Relaxed);
                    self.stats.height.store(out.height, Ordering::Relaxed);
                    if out.keyframe {
                        self.stats.keyframes.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Some(t) = &out.timing {
                        self.timings.push(Arc::clone(t));
                    }
                    self.track.publish(out);
                }
                Ok(None) => self.keep_keyframe_request(keyframe, &worker),
                Err(e) => {
                    if let Some(count) = worker.encode_errors.hit(Instant::now()) {
                        tracing::warn!(stream = %self.name, count, "encode failed: {e}");
                    }
                    self.keep_keyframe_request(keyframe, &worker);
                }
            }
        }
    }

    /// A keyframe was asked for but nothing could be encoded because there is no picture yet
    /// (the joiner's first frame was undecodable, or a follower has had none): the request
    /// waits for the next good frame, instead of being lost and leaving the joiner without an
    /// IDR. A follower asks its lead for the current picture meanwhile.
    fn keep_keyframe_request(&self, keyframe: bool, worker: &EncoderWorker) {
        if keyframe && !worker.has_picture() {
            lock(&self.slot).keyframe_wanted = true;
            if let Some(lead) = lock(&self.lead).upgrade() {
                lead.feed_followers();
            }
        }
    }

    /// The decoded picture, shared (one copy for all) with the followers someone watches.
    fn hand_to_followers(&self, picture: &I420, captured: Instant) {
        let watched: Vec<&Arc<Pipeline>> = self.followers.iter().filter(|f| f.is_watched()).collect();
        if watched.is_empty() {
            return;
        }
        let shared = Arc::new(picture.clone());
        let now = Instant::now();
        for follower in watched {
            let data = SourceFrame::Raw(Arc::clone(&shared));
            follower.push_frame(CapturedFrame { data, captured, captured_ms: timing::wall_ms(captured), arrived: now });
        }
    }
}

/// One viewer's place in the stream: its own RTP sequence numbers, its timestamps (continuous
/// across renditions), and whether it has to wait for a keyframe (it just joined, or fell
/// behind and skipped frames). Pure, so the rules are tested without a network.
#[derive(Debug)]
pub struct ViewerCursor {
    sequence: u16,
    waiting_for_keyframe: bool,
    /// Added to every timestamp: a rendition's first frame never goes back in time.
    timestamp_offset: u32,
    last_timestamp: Option<u32>,
}

impl ViewerCursor {
    pub fn new(first_sequence: u16) -> Self {
        Self { sequence: first_sequence, waiting_for_keyframe: true, timestamp_offset: 0, last_timestamp: None }
    }

    /// The viewer moves to another rendition at `keyframe`. Renditions share the stream's RTP
    /// clock, but the new one's first frame may be a picture the viewer already got (each
    /// encoder re-encodes its last picture for a joiner): it is moved just past the last
    /// timestamp sent, and what follows by as much, so time never runs backwards or repeats.
    pub fn switched(&mut self, keyframe: &RtpFrame) {
        let (Some(last), Some(first)) = (self.last_timestamp, keyframe.packets.first()) else { return };
        let next = first.header.timestamp.wrapping_add(self.timestamp_offset);
        if (next.wrapping_sub(last) as i32) <= 0 {
            self.timestamp_offset = self.timestamp_offset.wrapping_add(last.wrapping_sub(next).wrapping_add(1));
        }
    }

    /// The sequence number of the last packet stamped.
    pub fn last_sequence(&self) -> u16 {
        self.sequence.wrapping_sub(1)
    }

    /// The viewer missed frames: what follows cannot be decoded until the next keyframe.
    pub fn lagged(&mut self) {
        self.waiting_for_keyframe = true;
    }

    /// The timestamp `frame` is sent with (its first packet's, moved as `switched` says), for
    /// a reader that sends whole frames, not numbered packets (the H.264 rung).
    pub fn frame_timestamp(&mut self, frame: &RtpFrame) -> Option<u32> {
        let timestamp = frame.packets.first()?.header.timestamp.wrapping_add(self.timestamp_offset);
        self.last_timestamp = Some(timestamp);
        Some(timestamp)
    }

    /// The sequence number and timestamp for a padding packet sent now (after a frame's
    /// packets: it takes the next number and the last timestamp); `None` before any frame.
    pub fn padding(&mut self) -> Option<(u16, u32)> {
        let timestamp = self.last_timestamp?;
        let sequence = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        Some((sequence, timestamp))
    }

    /// Whether `frame` is to be sent; a delta frame is skipped while waiting for a keyframe.
    pub fn admit(&mut self, frame: &RtpFrame) -> bool {
        if self.waiting_for_keyframe && !frame.keyframe {
            return false;
        }
        self.waiting_for_keyframe = false;
        true
    }

    /// A copy of `packet` numbered for this viewer (payloads are shared, not copied). Skipped
    /// frames take no numbers, so the viewer sees no gap to NACK.
    pub fn stamp(&mut self, packet: &Packet) -> Packet {
        let mut packet = packet.clone();
        packet.header.sequence_number = self.sequence;
        packet.header.timestamp = packet.header.timestamp.wrapping_add(self.timestamp_offset);
        self.sequence = self.sequence.wrapping_add(1);
        self.last_timestamp = Some(packet.header.timestamp);
        packet
    }
}

/// State owned by the encoder thread.
struct EncoderWorker {
    jpeg: JpegDecoder,
    scaler: Scaler,
    encoder: VideoEncoder,
    packetizer: Packetizer,
    decoded: I420,
    /// The last picture, at output size; re-encoded as an IDR for viewers who join between frames.
    picture: Option<I420>,
    size: Option<(usize, usize)>,
    /// Capture time of the last accepted frame (frame-rate cap).
    last_accepted: Option<Instant>,
    /// Capture time of `picture`.
    picture_captured: Option<Instant>,
    clock: RtpClock,
    last_rtp: Option<u32>,
    /// The capture time of the picture to encode next, if it is a new one.
    pending_capture: Option<Instant>,
    /// Its stage times so far.
    pending_timing: Option<FrameTiming>,
    /// The picture to encode next follows a gap and goes out as an IDR.
    pending_idr: bool,
    cadence: Cadence,
    decode_errors: LogLimiter,
    encode_errors: LogLimiter,
    stretch: Option<Arc<StretchControl>>,
    stretcher: Stretcher,
    focus: Option<Arc<FocusControl>>,
    /// The focus pipeline's decoder of just its region (made at its first frame).
    region: Option<RegionDecoder>,
    /// `picture` was decoded small, for the followers alone; a joiner of this pipeline's own
    /// track gets `last_frame` decoded again at full size.
    reduced: bool,
    /// The source frame `picture` came from (shared bytes, not a copy).
    last_frame: Option<CapturedFrame>,
}

#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error(transparent)]
    Jpeg(#[from] crate::media::jpeg::JpegError),
    #[error(transparent)]
    Scale(#[from] crate::media::scale::ScaleError),
    #[error(transparent)]
    Encode(#[from] crate::media::encoder::VideoEncodeError),
    #[error("no focus region is set, or the picture is smaller than one")]
    NoRegion,
}

impl EncoderWorker {
    fn new(settings: &PipelineSettings) -> Result<Self, WorkerError> {
        Ok(Self {
            jpeg: JpegDecoder::new()?,
            scaler: Scaler::default(),
            encoder: VideoEncoder::new(settings.codec, settings.encoder)?,
            packetizer: Packetizer::new(settings.codec),
            decoded: I420::new(2, 2),
            picture: None,
            size: settings.size,
            last_accepted: None,
            picture_captured: None,
            clock: settings.clock,
            last_rtp: None,
            pending_capture: None,
            pending_timing: None,
            pending_idr: false,
            cadence: Cadence::default(),
            decode_errors: LogLimiter::default(),
            encode_errors: LogLimiter::default(),
            stretch: settings.stretch.clone(),
            stretcher: Stretcher::default(),
            focus: settings.focus.clone(),
            region: None,
            reduced: false,
            last_frame: None,
        })
    }

    fn has_picture(&self) -> bool {
        self.picture.is_some()
    }

    /// Applies the frame-rate cap (keyframe requests always pass).
    fn accept(&mut self, frame: &CapturedFrame, keyframe: bool, max_fps: Option<f64>) -> bool {
        if let (Some(fps), Some(last), false) = (max_fps, self.last_accepted, keyframe) {
            // 10% slack so a source running exactly at the cap is not halved by jitter.
            let min_gap = Duration::from_secs_f64(0.9 / fps.max(0.001));
            if frame.captured.saturating_duration_since(last) < min_gap {
                return false;
            }
        }
        self.last_accepted = Some(frame.captured);
        true
    }

    /// The configured output size, or the source's own fitted to what the encoder takes.
    fn target_size(&self, width: usize, height: usize) -> (usize, usize) {
        self.size.unwrap_or_else(|| fit_for_encoder(width, height))
    }

    /// Decodes and scales (or crops) a source frame into the current picture, stretches it,
    /// and stamps its stage times.
    /// `for_followers`: nobody watches this pipeline's own output, and its followers need at
    /// most this size.
    fn load(&mut self, frame: CapturedFrame, started_ms: f64, for_followers: Option<(usize, usize)>) -> Result<(), WorkerError> {
        let (captured_ms, arrived_ms) = (frame.captured_ms, timing::wall_ms(frame.arrived));
        let kept = frame.clone();
        match self.focus.clone() {
            Some(focus) => self.crop(frame.data, &focus, captured_ms)?,
            None => self.scale(frame.data, for_followers)?,
        }
        self.last_frame = Some(kept);
        if let (Some(control), Some(picture)) = (&self.stretch, &mut self.picture) {
            // In place, at output size, before the followers get it: one pass over luma.
            self.stretcher.apply(control, picture, frame.captured);
        }
        self.pending_capture = Some(frame.captured);
        self.picture_captured = Some(frame.captured);
        self.pending_timing = Some(FrameTiming {
            rtp_timestamp: 0,
            keyframe: false,
            captured_ms,
            arrived_ms,
            started_ms,
            decoded_ms: timing::now_ms(),
            encoded_ms: 0.0,
            sent_ms: None,
        });
        self.pending_idr = self.cadence.source_frame(frame.captured);
        Ok(())
    }

    /// The source frame at output size. Buffers are swapped, not reallocated, so a steady
    /// stream allocates nothing per frame. A JPEG decoded for smaller followers alone is
    /// decoded as small as the DCT allows for the largest of them, and not scaled here.
    fn scale(&mut self, data: SourceFrame, for_followers: Option<(usize, usize)>) -> Result<(), WorkerError> {
        let (raw, (w, h), reduced) = match data {
            SourceFrame::Jpeg(jpeg) => {
                let info = self.jpeg.info(&jpeg)?;
                let target = self.target_size(info.width, info.height);
                let full = info.reduction_for(target.0, target.1);
                let reduction = for_followers.map_or(full, |(fw, fh)| info.reduction_for(fw, fh).max(full));
                self.jpeg.decode(&jpeg, reduction, &mut self.decoded)?;
                let reduced = reduction > full;
                (None, if reduced { (self.decoded.width, self.decoded.height) } else { target }, reduced)
            }
            SourceFrame::Raw(pic) => {
                let target = self.target_size(pic.width, pic.height);
                (Some(pic), target, false)
            }
        };
        let src = raw.as_deref().unwrap_or(&self.decoded);
        if (src.width, src.height) != (w, h) {
            let mut out = self.picture.take().unwrap_or_else(|| I420::new(w, h));
            self.scaler.scale(src, &mut out, w, h)?;
            self.picture = Some(out);
        } else {
            self.picture = Some(match raw {
                // A copy only while the still still holds the picture.
                Some(pic) => Arc::unwrap_or_clone(pic),
                None => {
                    let spare = self.picture.take().unwrap_or_else(|| I420::new(2, 2));
                    std::mem::replace(&mut self.decoded, spare)
                }
            });
        }
        // Only now: after an error, the picture kept is the one `reduced` describes.
        self.reduced = reduced;
        Ok(())
    }

    /// The focus region of the source frame at its native resolution (a JPEG's region
    /// decoded alone, not the whole frame), and its sharpness (measured before any stretch:
    /// HFR needs the camera's linear levels).
    fn crop(&mut self, data: SourceFrame, focus: &FocusControl, captured_ms: f64) -> Result<(), WorkerError> {
        let out = match data {
            SourceFrame::Jpeg(jpeg) => {
                let info = self.jpeg.info(&jpeg)?;
                let region = focus.crop_for(info.width, info.height).ok_or(WorkerError::NoRegion)?;
                let decoder = match &mut self.region {
                    Some(d) => d,
                    None => self.region.insert(RegionDecoder::new()?),
                };
                // Into the scratch picture first: a bad frame leaves the last picture shown.
                decoder.decode(&jpeg, &info, region, &mut self.decoded)?;
                let spare = self.picture.take().unwrap_or_else(|| I420::new(2, 2));
                self.picture.insert(std::mem::replace(&mut self.decoded, spare))
            }
            SourceFrame::Raw(pic) => {
                let region = focus.crop_for(pic.width, pic.height).ok_or(WorkerError::NoRegion)?;
                let mut out = self.picture.take().unwrap_or_else(|| I420::new(2, 2));
                out.crop_from(&pic, region);
                self.picture.insert(out)
            }
        };
        let figure = sharpness::measure(out.y(), out.width, out.height, out.width);
        focus.record(Sharpness { captured_ms: captured_ms as u64, ..figure });
        Ok(())
    }

    /// Encodes the current picture: a new frame, or the last one again, as an IDR for a
    /// joiner or as a cheap repeat (a P-frame of skipped blocks) that keeps a slow stream alive.
    fn encode(&mut self, keyframe: bool, repeat: bool) -> Result<Option<RtpFrame>, WorkerError> {
        let Some(picture) = &self.picture else { return Ok(None) };
        let captured = match self.pending_capture.take() {
            Some(t) => t,
            None if keyframe || repeat => Instant::now(),
            None => return Ok(None),
        };
        let pending_timing = self.pending_timing.take();
        if keyframe || std::mem::take(&mut self.pending_idr) {
            self.encoder.force_keyframe();
        }
        self.cadence.output(Instant::now());
        let Some(encoded) = self.encoder.encode(picture, captured)? else { return Ok(None) };
        // RTP time follows capture time, so a camera's jitter and pauses show up as they were.
        let mut timestamp = self.clock.timestamp(captured);
        if let Some(last) = self.last_rtp {
            // Never go backwards or repeat (a re-encoded picture shares no time with the last).
            if (timestamp.wrapping_sub(last) as i32) <= 0 {
                timestamp = last.wrapping_add(1);
            }
        }
        self.last_rtp = Some(timestamp);
        let Some(mut frame) = self.packetizer.frame(&encoded.bitstream, timestamp, encoded.keyframe, (encoded.width, encoded.height)) else { return Ok(None) };
        frame.timing = pending_timing
            .map(|t| Arc::new(TimedFrame::new(FrameTiming { rtp_timestamp: timestamp, keyframe: encoded.keyframe, encoded_ms: timing::now_ms(), ..t })));
        Ok(Some(frame))
    }
}

/// Encoded frames into RTP packets, once for every reader. H.264 access units (Annex B) by
/// RFC 6184 (STAP-A for parameter sets, FU-A for large NAL units); VP8 frames by RFC 7741,
/// with a picture ID, which lets a receiver tell a lost frame from a late one. The encoder's
/// and an encoded source's frames both go through it; headers are clean (readers set their
/// own SSRC, sequence and payload type).
pub struct Packetizer {
    payloader: Box<dyn Payloader + Send>,
}

impl Default for Packetizer {
    fn default() -> Self {
        Self::new(Codec::H264)
    }
}

impl Packetizer {
    pub fn new(codec: Codec) -> Self {
        let payloader: Box<dyn Payloader + Send> = match codec {
            Codec::H264 => Box::<H264Payloader>::default(),
            Codec::Vp8 => {
                let mut vp8 = Vp8Payloader::default();
                vp8.enable_picture_id = true;
                Box::new(vp8)
            }
        };
        Self { payloader }
    }

    /// `None` (logged) if the unit does not packetize.
    pub fn frame(&mut self, bitstream: &Bytes, timestamp: u32, keyframe: bool, (width, height): (usize, usize)) -> Option<RtpFrame> {
        let payloads = match self.payloader.payload(RTP_PAYLOAD_MTU, bitstream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("RTP packetization failed: {e}");
                return None;
            }
        };
        let count = payloads.len();
        let packets = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Packet { header: webrtc::rtp::header::Header { version: 2, marker: i + 1 == count, timestamp, ..Default::default() }, payload })
            .collect();
        Some(RtpFrame { packets, keyframe, width, height, bytes: bitstream.len(), timing: None, index: 0 })
    }
}

/// A packetized access unit back to Annex B (the decoder of a passed-through stream's pictures
/// reads the track). `None` if its packets do not parse.
pub fn depacketize(frame: &RtpFrame) -> Option<Bytes> {
    use webrtc::rtp::packetizer::Depacketizer;
    let mut depacketizer = webrtc::rtp::codecs::h264::H264Packet::default();
    let mut out = bytes::BytesMut::with_capacity(frame.bytes + 64);
    for packet in &frame.packets {
        out.extend_from_slice(&depacketizer.depacketize(&packet.payload).ok()?);
    }
    Some(out.freeze())
}

/// Hot-path errors (a corrupt JPEG at 30 fps) are logged at most once a second, with how many
/// happened since. Time is an argument, so the rule is testable without a clock.
#[derive(Debug, Default)]
struct LogLimiter {
    logged_at: Option<Instant>,
    since_log: u64,
}

impl LogLimiter {
    /// Counts one error; returns how many to report when it is time to log.
    fn hit(&mut self, now: Instant) -> Option<u64> {
        self.since_log += 1;
        if self.logged_at.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return None;
        }
        self.logged_at = Some(now);
        Some(std::mem::take(&mut self.since_log))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::KeyframeReason;
    use tokio::sync::broadcast;

    fn rtp_frame(keyframe: bool, packets: usize) -> RtpFrame {
        let packets = (0..packets).map(|_| Packet { payload: Bytes::from_static(b"x"), ..Default::default() }).collect();
        RtpFrame { packets, keyframe, width: 2, height: 2, bytes: 1, timing: None, index: 0 }
    }

    #[test]
    fn a_viewer_starts_and_resumes_at_keyframes_with_gapless_sequence_numbers() {
        let mut cursor = ViewerCursor::new(u16::MAX - 1);
        let mut sent = Vec::new();
        let mut feed = |cursor: &mut ViewerCursor, frame: RtpFrame| {
            let admitted = cursor.admit(&frame);
            if admitted {
                sent.extend(frame.packets.iter().map(|p| cursor.stamp(p).header.sequence_number));
            }
            admitted
        };
        assert!(!feed(&mut cursor, rtp_frame(false, 2)), "a joiner skips deltas");
        assert!(feed(&mut cursor, rtp_frame(true, 3)));
        assert!(feed(&mut cursor, rtp_frame(false, 1)));
        cursor.lagged();
        assert!(!feed(&mut cursor, rtp_frame(false, 2)), "after lagging, deltas are undecodable");
        assert!(feed(&mut cursor, rtp_frame(true, 2)));
        assert_eq!(sent, vec![65534, 65535, 0, 1, 2, 3], "continuous through the skip and the wrap");
    }

    #[test]
    fn a_move_to_another_rendition_never_sends_time_backwards() {
        let at = |keyframe: bool, ts: u32| {
            let mut f = rtp_frame(keyframe, 1);
            f.packets[0].header.timestamp = ts;
            f
        };
        let mut cursor = ViewerCursor::new(0);
        let send = |cursor: &mut ViewerCursor, f: &RtpFrame| cursor.stamp(&f.packets[0]).header.timestamp;
        assert!(cursor.admit(&at(true, u32::MAX - 10)));
        assert_eq!(send(&mut cursor, &at(true, u32::MAX - 10)), u32::MAX - 10);
        // The new rendition's keyframe re-encodes a picture already sent (an earlier time).
        let first = at(true, u32::MAX - 3000);
        cursor.switched(&first);
        let t1 = send(&mut cursor, &first);
        assert_eq!(t1, u32::MAX - 9, "just after the last");
        assert_eq!(send(&mut cursor, &at(false, 600)).wrapping_sub(t1), 600u32.wrapping_sub(u32::MAX - 3000), "the gaps after it kept");
        // A move to a rendition ahead in time changes nothing.
        let mut ahead = ViewerCursor::new(0);
        assert_eq!(send(&mut ahead, &at(true, 100)), 100);
        ahead.switched(&at(true, 4000));
        assert_eq!(send(&mut ahead, &at(true, 4000)), 4000);
    }

    #[test]
    fn a_viewer_that_never_reads_holds_up_neither_the_encoder_nor_other_viewers() {
        let (p, track) = started("fan", settings(None));
        let (_slow_guard, mut slow) = attach(&track);
        let (_fast_guard, mut fast) = attach(&track);
        let mut received = 0;
        for _ in 0..3 * crate::track::READER_QUEUE_FRAMES {
            p.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::new(I420::new(160, 120)))));
            recv(&mut fast);
            received += 1;
        }
        assert_eq!(received, 3 * crate::track::READER_QUEUE_FRAMES, "the fast viewer got every frame");
        match slow.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert!(n >= crate::track::READER_QUEUE_FRAMES as u64, "lagged {n}"),
            other => panic!("the slow viewer should have been left behind, got {other:?}"),
        }
        assert!(slow.try_recv().is_ok(), "and it resumes from the newest frames");
        p.stop();
    }

    #[test]
    fn slow_streams_get_idrs_after_gaps_and_repeats_in_between() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut c = Cadence::default();
        assert_eq!(c.repeat_at(), None, "nothing to repeat before the first output");
        assert!(!c.source_frame(ms(0)), "the first frame is an IDR anyway (a viewer joined)");
        c.output(ms(5));
        assert_eq!(c.repeat_at(), Some(ms(1005)));
        assert!(!c.source_frame(ms(40)), "25 fps: deltas");
        c.output(ms(45));
        assert_eq!(c.repeat_at(), Some(ms(1045)), "any output postpones the repeat");
        assert!(c.source_frame(ms(5040)), "one frame in 5 s: each is an IDR");
    }

    #[test]
    fn a_watched_slow_stream_repeats_its_picture_and_sends_new_frames_as_idrs() {
        let (p, track) = started("slow", settings(None));
        let (_guard, mut rx) = attach(&track);
        p.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::new(I420::new(160, 120)))));
        let first = recv(&mut rx);
        assert!(first.keyframe);
        // No new frame for 2.3 s: the picture goes out again about once a second, cheaply.
        let (a, b) = (recv(&mut rx), recv(&mut rx));
        assert!(!a.keyframe && !b.keyframe, "repeats are P-frames");
        assert!(a.bytes < first.bytes / 4, "a repeat of an unchanged picture is small: {} vs {}", a.bytes, first.bytes);
        let ts = |f: &RtpFrame| f.packets[0].header.timestamp;
        let gap = ts(&b).wrapping_sub(ts(&a));
        assert!((80_000..=100_000).contains(&gap), "about 1 s of 90 kHz RTP time between repeats: {gap}");
        p.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::new(I420::new(160, 120)))));
        let next = recv(&mut rx);
        assert!(next.keyframe, "a frame after a gap of seconds is an IDR");
        p.stop();
    }

    #[test]
    fn frame_errors_are_logged_once_a_second_with_a_count() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut limiter = LogLimiter::default();
        assert_eq!(limiter.hit(ms(0)), Some(1));
        assert_eq!((limiter.hit(ms(10)), limiter.hit(ms(500)), limiter.hit(ms(999))), (None, None, None));
        assert_eq!(limiter.hit(ms(1000)), Some(4), "three suppressed and this one");
        assert_eq!(limiter.hit(ms(5000)), Some(1));
    }

    fn settings(size: Option<(usize, usize)>) -> PipelineSettings {
        PipelineSettings {
            size,
            max_fps: None,
            encoder: EncoderSettings { bitrate_bps: 1_000_000, fps: 25.0, idr_interval_frames: 0 },
            codec: Codec::H264,
            keyframe_min_interval: Duration::from_millis(500),
            clock: RtpClock::new(),
            stretch: None,
            focus: None,
        }
    }

    fn started(name: &str, settings: PipelineSettings) -> (Arc<Pipeline>, Arc<Track>) {
        let track = Track::new(name, false, settings.keyframe_min_interval);
        (Pipeline::start(name, settings, Arc::clone(&track), Vec::new()).expect("start"), track)
    }

    fn attach(track: &Arc<Track>) -> (crate::track::ReaderGuard, broadcast::Receiver<Arc<RtpFrame>>) {
        let reader = track.attach();
        (reader.guard, reader.live)
    }

    fn recv(rx: &mut broadcast::Receiver<Arc<RtpFrame>>) -> Arc<RtpFrame> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match rx.try_recv() {
                Ok(f) => return f,
                Err(broadcast::error::TryRecvError::Empty) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => panic!("no frame: {e:?}"),
            }
        }
    }

    /// A lead of `lead_size` with one follower of `follower_size` on its clock: (lead, its
    /// track, follower, its track).
    fn lead_and_follower(lead_size: Option<(usize, usize)>, follower_size: (usize, usize)) -> (Arc<Pipeline>, Arc<Track>, Arc<Pipeline>, Arc<Track>) {
        let lead_settings = settings(lead_size);
        let small = PipelineSettings { size: Some(follower_size), clock: lead_settings.clock, ..settings(None) };
        let small_track = Track::new("small", false, small.keyframe_min_interval);
        let follower = Pipeline::start("small", small, Arc::clone(&small_track), Vec::new()).expect("start");
        let track = Track::new("t", false, lead_settings.keyframe_min_interval);
        let lead = Pipeline::start("t", lead_settings, Arc::clone(&track), vec![Arc::clone(&follower)]).expect("start");
        (lead, track, follower, small_track)
    }

    #[test]
    fn a_follower_encodes_the_leads_pictures_at_its_size_on_the_same_clock() {
        let (lead, track, follower, small_track) = lead_and_follower(Some((640, 480)), (160, 120));
        let frame = || CapturedFrame::now(SourceFrame::Raw(Arc::new(I420::new(640, 480))));
        lead.push_frame(frame());
        std::thread::sleep(Duration::from_millis(100));
        // A joiner of the follower alone: the lead hands over the picture it has, and encodes
        // nothing itself.
        let (small_guard, mut small_rx) = attach(&small_track);
        let first = recv(&mut small_rx);
        assert!(first.keyframe && (first.width, first.height) == (160, 120), "{first:?}");
        assert_eq!(lead.stats.frames_encoded.load(Ordering::Relaxed), 0, "the lead only decodes for its followers");
        let (guard, mut rx) = attach(&track);
        let big = recv(&mut rx);
        assert_eq!((big.width, big.height), (640, 480));
        lead.push_frame(frame());
        let (a, b) = (recv(&mut small_rx), recv(&mut rx));
        assert_eq!(a.packets[0].header.timestamp, b.packets[0].header.timestamp, "one capture, one RTP time in every rendition");
        drop((small_guard, guard));
        lead.stop();
        std::thread::sleep(Duration::from_millis(50));
        assert!(follower.is_stopped(), "stopping the lead stops its followers");
    }

    #[test]
    fn jpegs_for_small_followers_alone_are_decoded_small_and_a_joiner_of_the_lead_gets_full_size_at_once() {
        let (lead, track, _follower, small_track) = lead_and_follower(None, (320, 180));
        let mut picture = I420::new(1280, 720);
        crate::media::testpattern::TestPattern::new("t", 1280, 720).render(1_795_000_000_000, &mut picture);
        let jpeg = Bytes::from(crate::media::jpeg::encode_i420(&picture, 85).expect("jpeg"));
        let frame = || CapturedFrame::now(SourceFrame::Jpeg(jpeg.clone()));
        let decoded = || (lead.stats.decoded_width.load(Ordering::Relaxed), lead.stats.decoded_height.load(Ordering::Relaxed));

        let (small_guard, mut small_rx) = attach(&small_track);
        lead.push_frame(frame());
        let first = recv(&mut small_rx);
        assert_eq!((first.width, first.height), (320, 180));
        assert_eq!(decoded(), (320, 180), "a quarter in the DCT: the follower's size, nothing larger");
        lead.push_frame(frame());
        assert_eq!((recv(&mut small_rx).width, decoded()), (320, (320, 180)));

        // A joiner of the full rendition between frames: the same frame again, at full size,
        // without waiting for the next one (a slow stream's may be minutes away).
        let (guard, mut rx) = attach(&track);
        let full = recv(&mut rx);
        assert!(full.keyframe && (full.width, full.height) == (1280, 720), "keyframe {} at {}x{}", full.keyframe, full.width, full.height);
        assert!(full.timing.is_none(), "a picture decoded again carries no stage times");
        std::thread::sleep(Duration::from_millis(100));
        while let Ok(f) = small_rx.try_recv() {
            assert!(f.timing.is_none(), "the followers do not get the same frame twice (only a repeat of theirs)");
        }
        lead.push_frame(frame());
        assert_eq!((recv(&mut rx).width, recv(&mut small_rx).width), (1280, 320));
        assert_eq!(decoded(), (1280, 720), "watched: decoded at its own size");
        drop((small_guard, guard));
        lead.stop();
    }

    /// The mean luma of an encoded keyframe, decoded.
    fn decoded_mean_luma(frame: &RtpFrame) -> f64 {
        let annexb = depacketize(frame).expect("an access unit");
        let mut decoder = crate::media::h264::H264Decoder::new().expect("decoder");
        let mut picture = I420::new(2, 2);
        assert!(decoder.decode(&annexb, &mut picture).expect("decodes"), "a picture");
        picture.y().iter().map(|&v| f64::from(v)).sum::<f64>() / picture.y().len() as f64
    }

    #[test]
    fn the_lead_stretches_what_it_and_its_followers_encode_and_a_change_applies_to_the_next_frame() {
        use scopecast_shared::api::Stretch;
        let control = Arc::new(StretchControl::new(Stretch::Manual { black: 0.0, white: 0.25, midtones: 0.5 }));
        let lead_settings = PipelineSettings { stretch: Some(Arc::clone(&control)), ..settings(None) };
        let small = PipelineSettings { size: Some((160, 120)), clock: lead_settings.clock, ..settings(None) };
        let small_track = Track::new("small", false, small.keyframe_min_interval);
        let follower = Pipeline::start("small", small, Arc::clone(&small_track), Vec::new()).expect("start");
        let track = Track::new("t", false, lead_settings.keyframe_min_interval);
        let lead = Pipeline::start("t", lead_settings, Arc::clone(&track), vec![Arc::clone(&follower)]).expect("start");
        // A dark, flat picture at level 32, which the still keeps holding (the source's copy
        // must not be stretched: snapshots are the camera's original).
        let mut dark = I420::new(320, 240);
        dark.y_mut().fill(32);
        dark.u_mut().fill(128);
        dark.v_mut().fill(128);
        let dark = Arc::new(dark);
        let (guard, mut rx) = attach(&track);
        let (small_guard, mut small_rx) = attach(&small_track);
        lead.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::clone(&dark))));
        let (full, small) = (recv(&mut rx), recv(&mut small_rx));
        // black 0, white 0.25: level 32 of 64 is half way, 128.
        for (what, f) in [("lead", &full), ("follower", &small)] {
            let mean = decoded_mean_luma(f);
            assert!((mean - 128.0).abs() < 4.0, "{what}: mean luma {mean}");
        }
        assert!(dark.y().iter().all(|&v| v == 32), "the source's picture is untouched");
        assert_eq!(control.applied().map(|l| l.white), Some(0.25));
        control.set(Stretch::Off);
        // The frame first: a keyframe asked for before it could go out as an IDR of the
        // picture the encoder already has (the stretched one), if its thread wakes in between.
        lead.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::clone(&dark))));
        lead.make_keyframe();
        let next = loop {
            let f = recv(&mut rx);
            if f.keyframe {
                break f;
            }
        };
        let mean = decoded_mean_luma(&next);
        assert!((mean - 32.0).abs() < 4.0, "off: the camera's levels again, {mean}");
        assert_eq!(control.applied(), None);
        drop((guard, small_guard));
        lead.stop();
    }

    #[test]
    fn nothing_is_encoded_unwatched_and_a_joiner_gets_an_idr_of_the_last_picture() {
        let (p, track) = started("t", settings(Some((320, 240))));
        p.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::new(I420::new(640, 480)))));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(p.stats.frames_encoded.load(Ordering::Relaxed), 0, "no encoding while unwatched");

        let (guard, mut rx) = attach(&track);
        let first = recv(&mut rx);
        assert!(first.keyframe && (first.width, first.height) == (320, 240));
        assert!(first.packets.last().is_some_and(|pk| pk.header.marker));

        // A second viewer joining with no new source frame still gets an IDR at once.
        let (_g2, mut rx2) = attach(&track);
        let again = recv(&mut rx2);
        assert!(again.keyframe);
        assert!(again.packets[0].header.timestamp != first.packets[0].header.timestamp);
        drop(guard);
        p.stop();
    }
    #[test]
    fn a_joiner_whose_first_frame_is_undecodable_gets_an_idr_of_the_next_good_one() {
        let (p, track) = started("bad-first", settings(None));
        let (_guard, mut rx) = attach(&track);
        // Prime the encoder: its very first output is an IDR whatever was asked.
        p.push_frame(CapturedFrame::now(SourceFrame::Raw(Arc::new(I420::new(320, 240)))));
        assert!(recv(&mut rx).keyframe);
        // The encoder forgets its picture (an idle on-demand source), a new viewer joins, and
        // the first frame it is offered is garbage.
        p.forget_picture();
        std::thread::sleep(Duration::from_millis(100));
        track.request_keyframe(KeyframeReason::ViewerJoined);
        p.push_frame(CapturedFrame::now(SourceFrame::Jpeg(vec![0xff, 0xd8, 1, 2, 3].into())));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(p.stats.frames_rejected.load(Ordering::Relaxed), 1);
        let good = crate::media::jpeg::encode_i420(&I420::new(320, 240), 70).expect("jpeg");
        p.push_frame(CapturedFrame::now(SourceFrame::Jpeg(good.into())));
        assert!(recv(&mut rx).keyframe, "the request outlived the bad frame");
        p.stop();
    }

    #[test]
    fn a_source_larger_than_the_encoder_takes_is_fitted_not_refused() {
        // A full-sensor preview from an astro camera, with no output size configured.
        let (p, track) = started("big", settings(None));
        let jpeg = crate::media::jpeg::encode_i420(&I420::new(4000, 3000), 70).expect("jpeg");
        let (_guard, mut rx) = attach(&track);
        p.push_frame(CapturedFrame::now(SourceFrame::Jpeg(jpeg.into())));
        let frame = recv(&mut rx);
        assert_eq!((frame.width, frame.height), (2880, 2160), "4:3 kept, inside openh264's 3840x2160");
        assert_eq!(p.stats.frames_rejected.load(Ordering::Relaxed), 0);
        p.stop();
    }
}
