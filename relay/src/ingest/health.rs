//! How a source's health is judged, with no I/O: reconnect backoff, the silence watchdog, and
//! which state changes are worth a log line. Time and randomness are arguments.

use scopecast_shared::SourceState;
use std::time::{Duration, Instant};

/// Capped exponential backoff with jitter. The cap is short because a telescope camera is on
/// the LAN: a refused connection costs nothing, and viewers should see the camera again within
/// a second of its return.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const DEFAULT_MIN: Duration = Duration::from_millis(100);
    pub const DEFAULT_MAX: Duration = Duration::from_millis(500);

    pub fn new(min: Duration, max: Duration) -> Self {
        Self { min, max, next: min }
    }

    /// The wait before the next attempt. `jitter` in `[0, 1)` spreads it over +-20% so that
    /// relays restarted together do not reconnect in lockstep.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
    }

    /// After a connection that delivered frames, start again from the shortest wait.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Self::DEFAULT_MIN, Self::DEFAULT_MAX)
    }
}

/// Why a connection was given up although it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Silence {
    /// Nothing at all arrived for this long: the camera or the network is gone.
    NoBytes(Duration),
    /// Bytes kept coming but no complete frame for this long (garbage, or a stuck encoder).
    NoFrames(Duration),
}

impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Silence::NoBytes(d) => write!(f, "no data for {} s", d.as_secs()),
            Silence::NoFrames(d) => write!(f, "data but no complete frame for {} s", d.as_secs()),
        }
    }
}

/// Watches one stream for silence. The limit is `base`, or three typical frame intervals when
/// the camera is slower than that (a deep-sky camera may send one frame a minute), so a slow
/// camera is not taken for a dead one. The learnt interval survives reconnects.
#[derive(Debug, Clone)]
pub struct Watchdog {
    base: Duration,
    /// Smoothed interval between frames, once two frames have been seen.
    interval: Option<Duration>,
    last_frame: Option<Instant>,
    /// Start of the current connection, last byte and last frame on it.
    since: Instant,
    last_byte: Option<Instant>,
    frame_on_connection: Option<Instant>,
}

/// A limit never exceeds this, however slow the camera looked.
const MAX_LIMIT: Duration = Duration::from_secs(15 * 60);

impl Watchdog {
    pub fn new(base: Duration, now: Instant) -> Self {
        Self { base, interval: None, last_frame: None, since: now, last_byte: None, frame_on_connection: None }
    }

    /// A new connection starts now.
    pub fn connected(&mut self, now: Instant) {
        self.since = now;
        self.last_byte = None;
        self.frame_on_connection = None;
    }

    pub fn bytes(&mut self, now: Instant) {
        self.last_byte = Some(now);
    }

    pub fn frame(&mut self, now: Instant) {
        if let Some(last) = self.last_frame {
            let gap = now.saturating_duration_since(last);
            // Weighted towards history, so one long pause does not stretch the limit at once.
            self.interval = Some(match self.interval {
                Some(i) => i.mul_f64(0.75) + gap.mul_f64(0.25),
                None => gap,
            });
        }
        self.last_frame = Some(now);
        self.last_byte = Some(now);
        self.frame_on_connection = Some(now);
    }

    /// How long silence may last before the connection is given up.
    pub fn limit(&self) -> Duration {
        self.interval.map_or(self.base, |i| self.base.max(i * 3)).min(MAX_LIMIT)
    }

    /// When the connection is to be given up if nothing more happens.
    pub fn deadline(&self) -> Instant {
        self.frame_on_connection.unwrap_or(self.since) + self.limit()
    }

    /// `Some` once the limit has passed without a frame; says whether bytes came meanwhile.
    pub fn check(&self, now: Instant) -> Option<Silence> {
        let from = self.frame_on_connection.unwrap_or(self.since);
        let quiet = now.saturating_duration_since(from);
        if quiet < self.limit() {
            return None;
        }
        Some(match self.last_byte {
            Some(b) if b > from => Silence::NoFrames(quiet),
            _ => Silence::NoBytes(quiet),
        })
    }
}

/// What a source reports about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    /// Someone wants the source (or it is always on) and a connection is being made.
    Starting,
    Frame,
    Failed(String),
    /// An on-demand source was stopped because nobody watches.
    Stopped,
}

/// The state a source is in, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub state: SourceState,
    pub last_error: Option<String>,
}

impl Health {
    pub fn new(state: SourceState) -> Self {
        Self { state, last_error: None }
    }

    /// Applies an event; returns true when the change is worth telling (a log line, an event to
    /// subscribers). Retries that fail the same way change nothing: a camera that is off for an
    /// hour is one line, not thousands. A failure while connecting counts as going offline, and
    /// retries do not pass through `Connecting` again.
    pub fn apply(&mut self, event: &SourceEvent) -> bool {
        let before = self.clone();
        match event {
            SourceEvent::Starting => {
                if matches!(self.state, SourceState::Idle) {
                    self.state = SourceState::Connecting;
                }
            }
            SourceEvent::Frame => self.state = SourceState::Live,
            SourceEvent::Failed(why) => {
                self.state = SourceState::Offline;
                self.last_error = Some(why.clone());
            }
            SourceEvent::Stopped => self.state = SourceState::Idle,
        }
        *self != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<u64> = (0..5).map(|_| b.next_delay(0.5).as_millis() as u64).collect();
        assert_eq!(waits, vec![100, 200, 400, 500, 500]);
        assert_eq!(b.next_delay(0.0), Duration::from_millis(400), "-20%");
        assert_eq!(b.next_delay(0.999_999).as_millis(), 599, "+20%");
        b.reset();
        assert_eq!(b.next_delay(0.5), Duration::from_millis(100));
    }

    #[test]
    fn silence_is_told_apart_and_the_limit_follows_a_slow_camera() {
        let t0 = Instant::now();
        let s = |n: u64| t0 + Duration::from_secs(n);
        let mut w = Watchdog::new(Duration::from_secs(10), t0);
        assert_eq!(w.check(s(9)), None);
        assert_eq!(w.check(s(10)), Some(Silence::NoBytes(Duration::from_secs(10))));

        w.connected(s(10));
        w.bytes(s(12));
        assert_eq!(w.check(s(20)), Some(Silence::NoFrames(Duration::from_secs(10))), "bytes without frames");

        // A camera sending one frame a minute: the limit grows to three intervals.
        w.connected(s(20));
        for n in [20, 80, 140, 200] {
            w.frame(s(n));
        }
        assert_eq!(w.limit(), Duration::from_secs(180));
        assert_eq!(w.check(s(300)), None, "a slow camera between frames is not dead");
        assert_eq!(w.deadline(), s(380));
        assert!(matches!(w.check(s(380)), Some(Silence::NoBytes(_))));
        // What was learnt survives a reconnect.
        w.connected(s(400));
        assert_eq!(w.deadline(), s(580));
    }

    #[test]
    fn retries_that_fail_alike_are_one_change() {
        let mut h = Health::new(SourceState::Idle);
        assert!(h.apply(&SourceEvent::Starting));
        assert_eq!(h.state, SourceState::Connecting);
        assert!(h.apply(&SourceEvent::Failed("connection refused".into())));
        assert_eq!(h.state, SourceState::Offline);
        for _ in 0..100 {
            assert!(!h.apply(&SourceEvent::Starting), "a retry is not a change");
            assert!(!h.apply(&SourceEvent::Failed("connection refused".into())));
        }
        assert!(h.apply(&SourceEvent::Failed("HTTP 503".into())), "a new reason is");
        assert!(h.apply(&SourceEvent::Frame));
        assert_eq!((h.state, h.last_error.as_deref()), (SourceState::Live, Some("HTTP 503")), "the last error stays for operators");
        assert!(!h.apply(&SourceEvent::Frame));
        assert!(h.apply(&SourceEvent::Stopped));
        assert_eq!(h.state, SourceState::Idle);
    }
}
