//! When is a picture stalled? It depends on the stream: 2 s without a frame is a stall at
//! 25 fps, but a telescope integrating for 10 s sends one frame every 10 s and is healthy.

/// How long without a new frame counts as stalled, for a stream expected at `fps`.
///
/// Three frame intervals, so one late or lost frame is not a stall, and never under 2 s (a
/// network hiccup is not a stall either) or over 5 minutes. Unknown or nonsense rates count as
/// 1 fps.
pub fn stall_after_ms(fps: Option<f64>) -> u64 {
    let fps = fps.filter(|f| f.is_finite() && *f > 0.0).unwrap_or(1.0);
    let three_intervals = (3000.0 / fps).round();
    (three_intervals as u64).clamp(2_000, 300_000)
}

/// A Scopecast relay sends each WebRTC viewer a picture at least once a second, whatever its
/// camera does (it repeats the last one), so on its sessions RTP silent for longer than this
/// is the network path, not the camera: the player acts on it long before [`stall_after_ms`],
/// so a path change is healed (by an ICE restart) within 2 s.
pub const RELAY_SILENCE_MS: u64 = 1_200;

/// Tracks when the last new frame arrived, on one transport.
#[derive(Debug, Clone, Default)]
pub struct FrameClock {
    last_frame_ms: Option<u64>,
    started_ms: Option<u64>,
    frames: u64,
}

impl FrameClock {
    /// Starts watching at `now` (a new transport or session): the stall timer runs from here.
    pub fn start(&mut self, now: u64) {
        *self = Self { started_ms: Some(now), ..Self::default() };
    }

    /// Reports the transport's frame counter (WebRTC's `framesDecoded`, or MJPEG frames drawn).
    /// A counter that moved is a new frame.
    pub fn observe(&mut self, now: u64, frames: u64) {
        if frames != self.frames {
            self.frames = frames;
            self.last_frame_ms = Some(now);
        }
    }

    /// Milliseconds since the last new frame, if there was one.
    pub fn since_last_ms(&self, now: u64) -> Option<u64> {
        self.last_frame_ms.map(|t| now.saturating_sub(t))
    }

    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// No new frame within [`stall_after_ms`] of the last one (or of the start).
    pub fn stalled(&self, now: u64, fps: Option<f64>) -> bool {
        match self.last_frame_ms.or(self.started_ms) {
            Some(t) => now.saturating_sub(t) > stall_after_ms(fps),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_follow_the_frame_rate() {
        assert_eq!(stall_after_ms(Some(25.0)), 2_000, "25 fps: the 2 s floor");
        assert_eq!(stall_after_ms(Some(1.0)), 3_000, "1 fps: three intervals");
        assert_eq!(stall_after_ms(Some(0.1)), 30_000, "0.1 fps: a 10 s exposure is not a stall");
        assert_eq!(stall_after_ms(Some(1.0 / 600.0)), 300_000, "capped at 5 minutes");
        assert_eq!(stall_after_ms(None), 3_000);
        assert_eq!(stall_after_ms(Some(0.0)), 3_000);
        assert_eq!(stall_after_ms(Some(f64::NAN)), 3_000);
    }

    #[test]
    fn a_25_fps_stream_stalls_after_2_s_without_frames() {
        let mut c = FrameClock::default();
        c.start(0);
        c.observe(100, 1);
        c.observe(140, 2);
        assert!(!c.stalled(2_140, Some(25.0)));
        assert!(c.stalled(2_141, Some(25.0)));
        c.observe(2_200, 3);
        assert!(!c.stalled(2_300, Some(25.0)));
        assert_eq!(c.since_last_ms(2_300), Some(100));
    }

    #[test]
    fn a_tenth_of_a_frame_per_second_is_not_stalled_between_frames() {
        let mut c = FrameClock::default();
        c.start(0);
        c.observe(500, 1);
        assert!(!c.stalled(10_500, Some(0.1)), "the next frame is due now");
        assert!(!c.stalled(25_000, Some(0.1)), "late, but not yet three intervals");
        assert!(c.stalled(30_501, Some(0.1)));
    }

    #[test]
    fn one_fps_allows_two_missing_frames() {
        let mut c = FrameClock::default();
        c.start(0);
        c.observe(1_000, 1);
        assert!(!c.stalled(4_000, Some(1.0)));
        assert!(c.stalled(4_001, Some(1.0)));
    }

    #[test]
    fn no_first_frame_counts_from_the_start_and_an_unchanged_counter_is_no_frame() {
        let mut c = FrameClock::default();
        assert!(!c.stalled(1_000_000, Some(25.0)), "not started: never stalled");
        c.start(1_000);
        c.observe(2_000, 0);
        assert_eq!(c.since_last_ms(2_500), None);
        assert!(c.stalled(3_001, Some(25.0)));
    }
}
