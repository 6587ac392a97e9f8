//! A stream's encoded video as its readers see it: WHEP viewers and WHIP publish targets.
//!
//! One producer writes packetized access units into the track: the encoder of a picture source
//! (`pipeline.rs`), or an encoded source passed through (`ingest/whep.rs`). Every reader holds
//! a bounded place in one ring and its own cursor (`ViewerCursor`), so a slow reader never
//! slows the producer or the others. A joiner needs a keyframe: an encoder makes one on
//! request; a passed-through source cannot, so its track keeps the frames since the last
//! keyframe (the GOP) and hands them to a joiner, who shows a picture at once instead of
//! waiting for the camera's next keyframe.

use crate::lock;
use crate::pipeline::RtpFrame;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// Encoded frames a reader may fall behind before it skips to the next keyframe.
pub const READER_QUEUE_FRAMES: usize = 16;
/// A GOP longer than this is not kept (a joiner then waits for a keyframe, as without a cache):
/// about 10 s at 30 fps, or 16 MB.
const GOP_MAX_FRAMES: usize = 300;
const GOP_MAX_BYTES: usize = 16 << 20;

/// Why a keyframe is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyframeReason {
    /// A viewer just started receiving: never delayed.
    ViewerJoined,
    /// A viewer lost packets or fell behind (PLI, FIR, queue overflow): throttled.
    ViewerRequest,
}

/// Allows at most one throttled keyframe per `min_interval`. Time is an argument, so tests
/// need no clock.
#[derive(Debug)]
pub struct KeyframeThrottle {
    min_interval: Duration,
    last: Option<Instant>,
}

impl KeyframeThrottle {
    pub fn new(min_interval: Duration) -> Self {
        Self { min_interval, last: None }
    }

    pub fn allow(&mut self, reason: KeyframeReason, now: Instant) -> bool {
        let ok = reason == KeyframeReason::ViewerJoined || self.last.is_none_or(|last| now.saturating_duration_since(last) >= self.min_interval);
        if ok {
            self.last = Some(now);
        }
        ok
    }
}

/// Who makes the track's keyframes: called (throttled) when a reader needs one.
pub type KeyframeHook = Box<dyn Fn(KeyframeReason) + Send + Sync>;

pub struct Track {
    pub name: String,
    ring: broadcast::Sender<Arc<RtpFrame>>,
    /// The GOP cache and the frame numbering, under one lock with subscribing, so a joiner's
    /// backlog and its live frames neither overlap nor leave a gap.
    state: Mutex<TrackState>,
    readers: AtomicUsize,
    throttle: Mutex<KeyframeThrottle>,
    producer: Mutex<Option<KeyframeHook>>,
    /// PLI and FIR from readers.
    pub keyframe_requests: AtomicU64,
    frames: AtomicU64,
    bytes: AtomicU64,
    /// The H.264 profile_idc of a passed-through camera's frames (an answer names it), or 0
    /// for the encoder's Constrained Baseline.
    profile: std::sync::atomic::AtomicU8,
}

#[derive(Default)]
struct TrackState {
    next_index: u64,
    /// `None` on a track whose producer makes keyframes on request.
    gop: Option<Gop>,
}

#[derive(Default)]
struct Gop {
    frames: Vec<Arc<RtpFrame>>,
    bytes: usize,
    /// The GOP outgrew the cache: nothing is kept until the next keyframe.
    overflowed: bool,
}

/// A reader's start: the frames since the last keyframe (empty where the producer makes a
/// keyframe for the joiner instead), then the live ring.
pub struct Reader {
    pub backlog: Vec<Arc<RtpFrame>>,
    pub live: broadcast::Receiver<Arc<RtpFrame>>,
    /// Live frames up to this index are already in the backlog.
    pub after: Option<u64>,
    pub guard: ReaderGuard,
}

/// A viewer moving to rendition `wanted` (sending `current`): the reader of the one it moves to
/// is kept in `pending` until that one's keyframe. Attaches to it if it is not the one being
/// sent nor already pending (its encoder makes a keyframe for the joiner at once), or forgets a
/// pending one no longer wanted. `track` names a rendition's track by index.
pub fn follow_rendition<'a>(pending: &mut Option<(usize, Reader)>, wanted: usize, current: usize, track: impl FnOnce(usize) -> &'a Arc<Track>) {
    if wanted == current {
        *pending = None;
    } else if pending.as_ref().is_none_or(|(i, _)| *i != wanted) {
        *pending = Some((wanted, track(wanted).attach()));
    }
}

impl Track {
    /// `keep_gop`: keep the frames since the last keyframe for joiners (for producers that
    /// cannot make a keyframe on request). `keyframe_min_interval` throttles readers' requests.
    pub fn new(name: &str, keep_gop: bool, keyframe_min_interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            ring: broadcast::channel(READER_QUEUE_FRAMES).0,
            state: Mutex::new(TrackState { next_index: 0, gop: keep_gop.then(Gop::default) }),
            readers: AtomicUsize::new(0),
            throttle: Mutex::new(KeyframeThrottle::new(keyframe_min_interval)),
            producer: Mutex::new(None),
            keyframe_requests: AtomicU64::new(0),
            frames: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            profile: std::sync::atomic::AtomicU8::new(0),
        })
    }

    /// The H.264 profile (profile_idc) the frames are in; `None` for Constrained Baseline as
    /// the encoder makes it.
    pub fn set_profile(&self, profile_idc: Option<u8>) {
        self.profile.store(profile_idc.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn profile(&self) -> Option<u8> {
        Some(self.profile.load(Ordering::Relaxed)).filter(|p| *p != 0)
    }

    /// Sets who makes keyframes for this track.
    pub fn set_producer(&self, hook: KeyframeHook) {
        *lock(&self.producer) = Some(hook);
    }

    /// A new frame from the producer, to every reader (and into the GOP cache).
    pub fn publish(&self, mut frame: RtpFrame) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(frame.bytes as u64, Ordering::Relaxed);
        let mut state = lock(&self.state);
        frame.index = state.next_index;
        state.next_index += 1;
        let frame = Arc::new(frame);
        if let Some(gop) = state.gop.as_mut() {
            gop.push(&frame);
        }
        // No receivers is not an error: the last reader may just have left.
        let _ = self.ring.send(frame);
    }

    /// Keep the GOP for joiners (a passed-through producer) or not (an encoder, which makes a
    /// keyframe for each joiner). A source that switches between the two says so here.
    pub fn set_keep_gop(&self, keep: bool) {
        let mut state = lock(&self.state);
        if keep != state.gop.is_some() {
            state.gop = keep.then(Gop::default);
        }
    }

    /// The producer restarted (a new upstream session): what was kept cannot be continued.
    pub fn reset(&self) {
        if let Some(gop) = lock(&self.state).gop.as_mut() {
            *gop = Gop::default();
        }
    }

    /// Registers a reader ready to receive. It gets the kept GOP, or, where the producer makes
    /// keyframes, a keyframe request that is never throttled. Dropping the guard unregisters it.
    pub fn attach(self: &Arc<Self>) -> Reader {
        let (backlog, live, after) = {
            let state = lock(&self.state);
            let backlog = state.gop.as_ref().map(|g| g.frames.clone()).unwrap_or_default();
            let after = backlog.last().map(|f| f.index);
            (backlog, self.ring.subscribe(), after)
        };
        self.readers.fetch_add(1, Ordering::Relaxed);
        if backlog.is_empty() {
            self.request_keyframe(KeyframeReason::ViewerJoined);
        }
        Reader { backlog, live, after, guard: ReaderGuard(Arc::clone(self)) }
    }

    /// Asks the producer for a keyframe; returns whether the request went out (throttled ones
    /// may not: one lossy reader must not cost every other an IDR a second).
    pub fn request_keyframe(&self, reason: KeyframeReason) -> bool {
        if !lock(&self.throttle).allow(reason, Instant::now()) {
            return false;
        }
        if let Some(hook) = lock(&self.producer).as_ref() {
            hook(reason);
        }
        true
    }

    /// Frames and bytes published so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn readers(&self) -> usize {
        self.readers.load(Ordering::Relaxed)
    }

    /// Frames kept for joiners (for status and tests).
    pub fn gop_frames(&self) -> usize {
        lock(&self.state).gop.as_ref().map_or(0, |g| g.frames.len())
    }
}

impl Gop {
    fn push(&mut self, frame: &Arc<RtpFrame>) {
        if frame.keyframe {
            *self = Gop::default();
        } else if self.frames.is_empty() || self.overflowed {
            return; // nothing to continue from until a keyframe
        }
        if self.frames.len() >= GOP_MAX_FRAMES || self.bytes + frame.bytes > GOP_MAX_BYTES {
            *self = Gop { overflowed: true, ..Gop::default() };
            return;
        }
        self.bytes += frame.bytes;
        self.frames.push(Arc::clone(frame));
    }
}

/// Unregisters a reader when dropped.
pub struct ReaderGuard(Arc<Track>);

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn frame(keyframe: bool) -> RtpFrame {
        RtpFrame { packets: Vec::new(), keyframe, width: 2, height: 2, bytes: 100, timing: None, index: 0 }
    }

    #[test]
    fn throttle_passes_joins_and_spaces_requests() {
        let t0 = Instant::now();
        let mut t = KeyframeThrottle::new(Duration::from_millis(500));
        assert!(t.allow(KeyframeReason::ViewerRequest, t0));
        assert!(!t.allow(KeyframeReason::ViewerRequest, t0 + Duration::from_millis(100)));
        assert!(t.allow(KeyframeReason::ViewerJoined, t0 + Duration::from_millis(200)));
        assert!(!t.allow(KeyframeReason::ViewerRequest, t0 + Duration::from_millis(600)));
        assert!(t.allow(KeyframeReason::ViewerRequest, t0 + Duration::from_millis(700)));
    }

    #[tokio::test]
    async fn a_joiner_gets_the_gop_then_exactly_the_live_frames_after_it() {
        let track = Track::new("t", true, Duration::from_secs(1));
        track.publish(frame(false)); // before any keyframe: undecodable, not kept
        track.publish(frame(true));
        track.publish(frame(false));
        let mut reader = track.attach();
        assert_eq!(reader.backlog.iter().map(|f| (f.index, f.keyframe)).collect::<Vec<_>>(), [(1, true), (2, false)]);
        assert_eq!(reader.after, Some(2));
        track.publish(frame(false));
        assert_eq!(reader.live.recv().await.expect("a live frame").index, 3, "no overlap, no gap");
        track.publish(frame(true));
        assert_eq!(track.gop_frames(), 1, "a keyframe starts the cache again");
        assert_eq!(track.readers(), 1);
        drop(reader);
        assert_eq!(track.readers(), 0);
    }

    #[test]
    fn a_gop_too_long_to_keep_is_dropped_until_the_next_keyframe() {
        let track = Track::new("t", true, Duration::from_secs(1));
        track.publish(frame(true));
        for _ in 0..GOP_MAX_FRAMES {
            track.publish(frame(false));
        }
        assert_eq!(track.gop_frames(), 0);
        track.publish(frame(false));
        assert_eq!(track.gop_frames(), 0, "no partial GOP: it could not be decoded");
        track.publish(frame(true));
        assert_eq!(track.gop_frames(), 1);
    }

    #[test]
    fn joiners_of_an_encoder_track_ask_for_a_keyframe_at_once_and_others_are_throttled() {
        let track = Track::new("t", false, Duration::from_secs(60));
        let asked = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&asked);
        track.set_producer(Box::new(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        }));
        track.publish(frame(true));
        let a = track.attach();
        let b = track.attach();
        assert!(a.backlog.is_empty() && b.backlog.is_empty(), "an encoder track keeps nothing");
        assert_eq!(asked.load(Ordering::Relaxed), 2, "every joiner, unthrottled");
        assert!(!track.request_keyframe(KeyframeReason::ViewerRequest), "a PLI right after a join waits");
        assert_eq!(asked.load(Ordering::Relaxed), 2);
    }
}
