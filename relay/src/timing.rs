//! The relay's wall clock, and where a frame's latency goes inside the relay. The encoder thread stamps each source frame's
//! stages, the first viewer to send it stamps `sent`, and the last [`KEPT`] frames are kept for
//! `GET /api/v1/streams/{name}/timings` and for the medians in the stream's status.

use scopecast_shared::api::{FrameTiming, RelayLatency};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Frames kept: 10 s at 25 fps.
const KEPT: usize = 250;

/// Unix ms of a monotonic instant. One anchor, taken at first use, maps the monotonic clock to
/// the wall clock, so stages timed with `Instant` line up with the wall-clock stamps of cameras
/// and browsers on the same machine (to within any clock slew since start).
pub fn wall_ms(at: Instant) -> f64 {
    static ANCHOR: OnceLock<(Instant, f64)> = OnceLock::new();
    let (i0, w0) = *ANCHOR.get_or_init(|| (Instant::now(), SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)));
    match at.checked_duration_since(i0) {
        Some(after) => w0 + after.as_secs_f64() * 1000.0,
        None => w0 - i0.duration_since(at).as_secs_f64() * 1000.0,
    }
}

pub fn now_ms() -> f64 {
    wall_ms(Instant::now())
}

/// Wall-clock Unix time in whole milliseconds, straight from the system clock (state changes,
/// the age of the last frame).
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A frame's stamps; `sent` is set once, by whichever viewer sends it first.
#[derive(Debug)]
pub struct TimedFrame {
    timing: FrameTiming,
    sent: OnceLock<f64>,
}

impl TimedFrame {
    pub fn new(timing: FrameTiming) -> Self {
        Self { timing, sent: OnceLock::new() }
    }

    pub fn mark_sent(&self) {
        self.sent.get_or_init(now_ms);
    }

    pub fn snapshot(&self) -> FrameTiming {
        FrameTiming { sent_ms: self.sent.get().copied(), ..self.timing.clone() }
    }
}

/// The last frames' stamps.
#[derive(Debug, Default)]
pub struct TimingLog {
    frames: Mutex<VecDeque<Arc<TimedFrame>>>,
}

impl TimingLog {
    pub fn push(&self, frame: Arc<TimedFrame>) {
        let mut frames = crate::lock(&self.frames);
        if frames.len() == KEPT {
            frames.pop_front();
        }
        frames.push_back(frame);
    }

    /// Oldest first.
    pub fn frames(&self) -> Vec<FrameTiming> {
        crate::lock(&self.frames).iter().map(|f| f.snapshot()).collect()
    }

    pub fn latency(&self) -> Option<RelayLatency> {
        summarize(&self.frames())
    }
}

/// Medians of each stage over the frames that were sent.
pub fn summarize(frames: &[FrameTiming]) -> Option<RelayLatency> {
    let sent: Vec<(&FrameTiming, f64)> = frames.iter().filter_map(|f| f.sent_ms.map(|s| (f, s))).collect();
    if sent.is_empty() {
        return None;
    }
    let median = |stage: &dyn Fn(&FrameTiming, f64) -> f64| {
        let mut v: Vec<f64> = sent.iter().map(|(f, s)| stage(f, *s)).collect();
        v.sort_by(f64::total_cmp);
        let m = if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0 };
        (m * 100.0).round() / 100.0
    };
    Some(RelayLatency {
        frames: sent.len() as u32,
        source_ms: median(&|f, _| f.arrived_ms - f.captured_ms),
        queue_ms: median(&|f, _| f.started_ms - f.arrived_ms),
        decode_ms: median(&|f, _| f.decoded_ms - f.started_ms),
        encode_ms: median(&|f, _| f.encoded_ms - f.decoded_ms),
        send_ms: median(&|f, s| s - f.encoded_ms),
        total_ms: median(&|f, s| s - f.captured_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(rtp: u32, base: f64, sent: Option<f64>) -> FrameTiming {
        FrameTiming {
            rtp_timestamp: rtp,
            keyframe: false,
            captured_ms: base,
            arrived_ms: base + 4.0,
            started_ms: base + 4.5,
            decoded_ms: base + 7.5,
            encoded_ms: base + 13.5,
            sent_ms: sent.map(|s| base + s),
        }
    }

    #[test]
    fn stages_are_medians_of_sent_frames_and_add_up() {
        let frames = vec![frame(1, 1000.0, Some(14.0)), frame(2, 1040.0, Some(15.0)), frame(3, 1080.0, Some(16.0)), frame(4, 1120.0, None)];
        let l = summarize(&frames).expect("sent frames");
        assert_eq!(l.frames, 3);
        assert_eq!((l.source_ms, l.queue_ms, l.decode_ms, l.encode_ms, l.send_ms, l.total_ms), (4.0, 0.5, 3.0, 6.0, 1.5, 15.0));
        assert!(summarize(&[frame(5, 0.0, None)]).is_none(), "nothing sent, nothing to say");
    }

    #[test]
    fn log_keeps_the_last_frames_and_the_first_send_only() {
        let log = TimingLog::default();
        let mut last = None;
        for i in 0..(KEPT as u32 + 10) {
            let f = Arc::new(TimedFrame::new(frame(i, f64::from(i), None)));
            log.push(Arc::clone(&f));
            last = Some(f);
        }
        let last = last.expect("frames");
        last.mark_sent();
        let first_send = last.snapshot().sent_ms.expect("sent");
        std::thread::sleep(Duration::from_millis(2));
        last.mark_sent();
        let frames = log.frames();
        assert_eq!(frames.len(), KEPT);
        assert_eq!(frames[0].rtp_timestamp, 10);
        assert_eq!(frames.last().and_then(|f| f.sent_ms), Some(first_send), "a second viewer does not move the stamp");
    }

    #[test]
    fn wall_clock_of_instants_follows_the_system_clock() {
        let now = Instant::now();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() * 1000.0;
        assert!((wall_ms(now) - unix).abs() < 50.0);
        let earlier = now - Duration::from_millis(500);
        assert!((wall_ms(now) - wall_ms(earlier) - 500.0).abs() < 0.01);
    }
}
