//! The fallback ladder: every decision about how the player gets its picture, in one place.
//!
//! WebRTC first. While WebRTC is not (yet) showing frames, a fallback fills the canvas, so the
//! user never stares at a black box: the stream's H.264 over a WebSocket where the browser can
//! decode it (a Scopecast relay, WebCodecs), else the relay's MJPEG. An H.264 rung that never
//! shows a frame (WebSockets blocked, no decoder) gives way to MJPEG at once. The player keeps
//! climbing back to WebRTC and drops the fallback as soon as WebRTC frames render. Pure: the browser layer feeds it events with the time, and
//! carries out the [`Command`]s it returns.

use crate::backoff::Backoff;

/// Show MJPEG when WebRTC has not shown a picture this long after the offer went out.
pub const FALLBACK_AFTER_MS: u64 = 2_500;
/// Give up on a session that has not connected this long after the offer went out.
pub const CONNECT_TIMEOUT_MS: u64 = 6_000;
/// Chromium says `failed` ~17 s after a peer vanishes; `disconnected` this long is a drop.
pub const DISCONNECT_GRACE_MS: u64 = 3_000;
/// An ICE restart that has not reconnected in this long has failed.
pub const RESTART_TIMEOUT_MS: u64 = 5_000;
/// A session live this long resets the backoff.
pub const STABLE_AFTER_MS: u64 = 10_000;
/// A stall this soon after a stall's ICE restart is not healed by another: a fresh session.
pub const RESTART_AGAIN_AFTER_MS: u64 = 10_000;
/// Restarting the MJPEG reader after it ended.
pub const MJPEG_BACKOFF: Backoff = Backoff { base_ms: 1_000, cap_ms: 10_000 };

/// What happened, as the browser layer saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Begin (the element was mounted).
    Start,
    /// The WHEP POST answered 201 and the answer was applied.
    Answered,
    /// The WHEP POST failed: an HTTP status (0 when the request never got an answer), the
    /// server's Retry-After, and what it said.
    Refused { status: u16, retry_after_ms: Option<u64>, detail: String },
    /// The peer connection reached `connected`.
    Connected,
    /// WebRTC frames are being rendered.
    Playing,
    /// The peer connection went `disconnected` (may recover by itself).
    Disconnected,
    /// The peer connection `failed` or closed under us.
    Failed,
    /// The relay accepted an ICE restart (PATCH 200).
    RestartAnswered,
    /// The relay refused an ICE restart (422, 405, 501, ...): it does not offer them.
    RestartRefused,
    /// No new WebRTC frame (or, from a Scopecast relay, no RTP at all) for the stream's stall
    /// threshold while its source is live: the network path under the session is broken (a
    /// NAT rebinding, a Wi-Fi roam), which ICE does not notice by itself.
    Stalled,
    /// The fallback drew a frame.
    FallbackFrame,
    /// The fallback's stream ended or failed to start.
    FallbackEnded,
    /// Time passed (the layer ticks a few times a second).
    Tick,
    /// End everything (the element was removed or the page is going away).
    Stop,
}

/// What the browser layer must do, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Create a peer connection, send the offer to the WHEP endpoint.
    Post,
    /// Restart ICE on the current session (PATCH with new credentials).
    IceRestart,
    /// Close the peer connection and DELETE the session, if there is one.
    HangUp,
    /// Start the fallback on this rung, into the canvas (stopping one that runs).
    StartFallback(Rung),
    /// Stop the fallback and hide the canvas.
    StopFallback,
}

/// What the fallback draws into the canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rung {
    /// The stream's H.264 over a WebSocket, decoded by the browser (WebCodecs): WebRTC's
    /// bandwidth where UDP is blocked.
    H264,
    /// MJPEG, which every browser draws, at several times the bandwidth.
    Mjpeg,
}

/// Where the ladder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// An offer is out or a session is negotiating, since the given time.
    Connecting {
        since: u64,
    },
    /// The peer connection is connected; `disconnected_since` while ICE wobbles.
    Live {
        since: u64,
        disconnected_since: Option<u64>,
    },
    /// An ICE restart is under way.
    Restarting {
        since: u64,
    },
    /// WebRTC failed; the next offer goes out at `retry_at`.
    Waiting {
        retry_at: u64,
    },
    /// The server cannot do WebRTC with us (it refused the offer itself): the fallback only.
    FallbackOnly,
    Stopped(StopReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// Stopped on purpose.
    Ended,
    /// The relay wants a token we do not have (or a different one): retrying will not help.
    Unauthorized,
    /// WebRTC refused and no MJPEG fallback allowed.
    Unsupported,
}

/// How the picture is currently coming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    None,
    WebRtc,
    H264,
    Mjpeg,
}

/// What the user is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Idle,
    Connecting,
    Live,
    Reconnecting,
    /// The picture comes over the fallback (H.264 or MJPEG) while WebRTC is down.
    Fallback,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Connecting => "connecting",
            Status::Live => "live",
            Status::Reconnecting => "reconnecting",
            Status::Fallback => "fallback",
            Status::Error => "error",
        }
    }
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::None => "none",
            Transport::WebRtc => "webrtc",
            Transport::H264 => "h264",
            Transport::Mjpeg => "mjpeg",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallback {
    Off,
    /// Reading (or starting to); `shown` once a frame was drawn.
    On {
        rung: Rung,
        shown: bool,
    },
    /// It ended; start again at the given time.
    Retrying {
        at: u64,
    },
}

/// Whether the relay does ICE restarts: unknown until the first one is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Restarts {
    Unknown,
    Supported,
    Unsupported,
}

/// The state machine. See the module comment.
#[derive(Debug, Clone)]
pub struct Ladder {
    phase: Phase,
    fallback_allowed: bool,
    fallback: Fallback,
    fallback_failures: u32,
    /// Whether the H.264 rung is to be tried: offered by the player, and not yet found not to
    /// work here (it ended without a frame).
    h264_rung: bool,
    /// WebRTC failures since the last stable session.
    failures: u32,
    restarts: Restarts,
    /// When a stall last led to an ICE restart.
    stall_restart_at: Option<u64>,
    playing: bool,
    last_error: Option<String>,
    backoff: Backoff,
}

impl Ladder {
    pub fn new(fallback_allowed: bool) -> Self {
        Self {
            phase: Phase::Idle,
            fallback_allowed,
            fallback: Fallback::Off,
            fallback_failures: 0,
            h264_rung: false,
            failures: 0,
            restarts: Restarts::Unknown,
            stall_restart_at: None,
            playing: false,
            last_error: None,
            backoff: Backoff::WHEP,
        }
    }

    /// Tries the H.264 rung before MJPEG (the browser decodes H.264 and the relay serves it).
    pub fn with_h264_rung(mut self) -> Self {
        self.h264_rung = true;
        self
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Consecutive WebRTC failures (the backoff exponent).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Feeds one event at time `now` (ms, any monotonic origin). `jitter` is a random number in
    /// `[0, 1)` for the backoff. Returns what to do, in order.
    pub fn handle(&mut self, now: u64, event: Event, jitter: f64) -> Vec<Command> {
        let mut out = Vec::new();
        if matches!(self.phase, Phase::Stopped(_)) && event != Event::Start {
            return out;
        }
        match event {
            Event::Start => {
                if matches!(self.phase, Phase::Idle | Phase::Stopped(_)) {
                    let h264_rung = self.h264_rung;
                    *self = Self::new(self.fallback_allowed);
                    self.h264_rung = h264_rung;
                    self.connect(now, &mut out);
                }
            }
            Event::Answered => {}
            Event::Refused { status, retry_after_ms, detail } => {
                if matches!(self.phase, Phase::Connecting { .. }) {
                    self.last_error = Some(if detail.is_empty() { format!("HTTP {status}") } else { detail });
                    self.refused(now, status, retry_after_ms, jitter, &mut out);
                }
            }
            Event::Connected => match self.phase {
                Phase::Connecting { .. } | Phase::Restarting { .. } => self.phase = Phase::Live { since: now, disconnected_since: None },
                Phase::Live { since, .. } => self.phase = Phase::Live { since, disconnected_since: None },
                _ => {}
            },
            Event::Playing => match self.phase {
                Phase::Live { .. } if !self.playing => {
                    self.playing = true;
                    self.last_error = None;
                    self.stop_fallback(&mut out);
                }
                // Frames again after a restart: the new path works (the connection state may
                // never have left `connected`).
                Phase::Restarting { .. } => {
                    self.phase = Phase::Live { since: now, disconnected_since: None };
                    self.playing = true;
                    self.last_error = None;
                    self.stop_fallback(&mut out);
                }
                _ => {}
            },
            Event::Disconnected => {
                if let Phase::Live { since, disconnected_since: None } = self.phase {
                    self.phase = Phase::Live { since, disconnected_since: Some(now) };
                }
            }
            Event::Failed => {
                if matches!(self.phase, Phase::Connecting { .. } | Phase::Live { .. } | Phase::Restarting { .. }) {
                    self.last_error = Some("WebRTC connection failed".into());
                    self.fail(now, None, jitter, &mut out);
                }
            }
            Event::RestartAnswered => {
                if matches!(self.phase, Phase::Restarting { .. }) {
                    self.restarts = Restarts::Supported;
                }
            }
            Event::RestartRefused => {
                if matches!(self.phase, Phase::Restarting { .. }) {
                    self.restarts = Restarts::Unsupported;
                    self.reconnect(now, jitter, &mut out);
                }
            }
            Event::Stalled => {
                if matches!(self.phase, Phase::Live { .. }) {
                    self.last_error = Some("no new frames".into());
                    let restarted_lately = self.stall_restart_at.is_some_and(|t| now.saturating_sub(t) < RESTART_AGAIN_AFTER_MS);
                    if self.restarts == Restarts::Unsupported || restarted_lately {
                        self.reconnect(now, jitter, &mut out);
                    } else {
                        self.stall_restart_at = Some(now);
                        self.phase = Phase::Restarting { since: now };
                        out.push(Command::IceRestart);
                    }
                }
            }
            Event::FallbackFrame => {
                if let Fallback::On { rung, .. } = self.fallback {
                    self.fallback = Fallback::On { rung, shown: true };
                    self.fallback_failures = 0;
                }
            }
            Event::FallbackEnded => match self.fallback {
                // It never showed a picture: it does not work here. MJPEG, at once.
                Fallback::On { rung: Rung::H264, shown: false } => {
                    self.h264_rung = false;
                    self.fallback = Fallback::On { rung: Rung::Mjpeg, shown: false };
                    out.push(Command::StartFallback(Rung::Mjpeg));
                }
                Fallback::On { .. } => {
                    let delay = MJPEG_BACKOFF.delay_ms(self.fallback_failures, jitter, None);
                    self.fallback_failures = self.fallback_failures.saturating_add(1);
                    self.fallback = Fallback::Retrying { at: now + delay };
                }
                _ => {}
            },
            Event::Tick => self.tick(now, jitter, &mut out),
            Event::Stop => {
                self.phase = Phase::Stopped(StopReason::Ended);
                self.playing = false;
                out.push(Command::HangUp);
                self.stop_fallback(&mut out);
            }
        }
        out
    }

    fn tick(&mut self, now: u64, jitter: f64, out: &mut Vec<Command>) {
        match self.phase {
            Phase::Connecting { since } => {
                if now.saturating_sub(since) >= CONNECT_TIMEOUT_MS {
                    self.last_error = Some("WebRTC did not connect".into());
                    self.fail(now, None, jitter, out);
                } else if now.saturating_sub(since) >= FALLBACK_AFTER_MS {
                    self.start_fallback(out);
                }
            }
            Phase::Live { since, disconnected_since } => {
                if disconnected_since.is_some_and(|d| now.saturating_sub(d) >= DISCONNECT_GRACE_MS) {
                    if self.restarts == Restarts::Unsupported {
                        self.last_error = Some("WebRTC connection lost".into());
                        self.fail(now, None, jitter, out);
                    } else {
                        self.phase = Phase::Restarting { since: now };
                        out.push(Command::IceRestart);
                    }
                } else if self.playing && now.saturating_sub(since) >= STABLE_AFTER_MS {
                    self.failures = 0;
                }
            }
            Phase::Restarting { since } => {
                if now.saturating_sub(since) >= RESTART_TIMEOUT_MS {
                    self.last_error = Some("ICE restart did not reconnect".into());
                    self.fail(now, None, jitter, out);
                } else if now.saturating_sub(since) >= FALLBACK_AFTER_MS {
                    self.start_fallback(out);
                }
            }
            Phase::Waiting { retry_at } if now >= retry_at => self.connect(now, out),
            _ => {}
        }
        if let Fallback::Retrying { at } = self.fallback {
            if now >= at {
                let rung = self.rung();
                self.fallback = Fallback::On { rung, shown: false };
                out.push(Command::StartFallback(rung));
            }
        }
    }

    fn connect(&mut self, now: u64, out: &mut Vec<Command>) {
        self.phase = Phase::Connecting { since: now };
        self.playing = false;
        out.push(Command::Post);
    }

    fn refused(&mut self, now: u64, status: u16, retry_after_ms: Option<u64>, jitter: f64, out: &mut Vec<Command>) {
        match status {
            401 | 403 => {
                self.phase = Phase::Stopped(StopReason::Unauthorized);
                out.push(Command::HangUp);
                self.stop_fallback(out);
            }
            // The offer itself cannot be served (bad SDP, no common codec, too large, wrong
            // type): the same browser will get the same answer, so stop asking.
            400 | 406 | 413 | 415 | 422 => {
                out.push(Command::HangUp);
                self.playing = false;
                if self.fallback_allowed {
                    self.phase = Phase::FallbackOnly;
                    self.start_fallback(out);
                } else {
                    self.phase = Phase::Stopped(StopReason::Unsupported);
                }
            }
            // Everything else may pass: the relay restarting (0, 502, 503), the camera offline
            // (409), too many sessions (429, 503), a stream not configured yet (404).
            _ => self.fail(now, retry_after_ms, jitter, out),
        }
    }

    /// The session was fine but its path is not, and the relay answers: a fresh offer at once,
    /// without the backoff, the first time. A path that keeps failing gets the backoff.
    fn reconnect(&mut self, now: u64, jitter: f64, out: &mut Vec<Command>) {
        if self.failures > 0 {
            return self.fail(now, None, jitter, out);
        }
        self.failures = 1;
        out.push(Command::HangUp);
        self.connect(now, out);
    }

    /// The current WebRTC attempt is over: hang up, show MJPEG, and schedule the next offer.
    fn fail(&mut self, now: u64, retry_after_ms: Option<u64>, jitter: f64, out: &mut Vec<Command>) {
        out.push(Command::HangUp);
        self.playing = false;
        let delay = self.backoff.delay_ms(self.failures, jitter, retry_after_ms);
        self.failures = self.failures.saturating_add(1);
        self.phase = Phase::Waiting { retry_at: now + delay };
        self.start_fallback(out);
    }

    fn rung(&self) -> Rung {
        if self.h264_rung {
            Rung::H264
        } else {
            Rung::Mjpeg
        }
    }

    fn start_fallback(&mut self, out: &mut Vec<Command>) {
        if self.fallback_allowed && self.fallback == Fallback::Off {
            let rung = self.rung();
            self.fallback = Fallback::On { rung, shown: false };
            out.push(Command::StartFallback(rung));
        }
    }

    fn stop_fallback(&mut self, out: &mut Vec<Command>) {
        if self.fallback != Fallback::Off {
            self.fallback = Fallback::Off;
            self.fallback_failures = 0;
            out.push(Command::StopFallback);
        }
    }

    /// How the picture is coming right now.
    pub fn transport(&self) -> Transport {
        match self.fallback {
            _ if self.playing => Transport::WebRtc,
            Fallback::On { rung: Rung::H264, shown: true } => Transport::H264,
            Fallback::On { rung: Rung::Mjpeg, shown: true } => Transport::Mjpeg,
            _ => Transport::None,
        }
    }

    /// What the user is told.
    pub fn status(&self) -> Status {
        let fallback_shown = matches!(self.fallback, Fallback::On { shown: true, .. });
        match self.phase {
            Phase::Idle | Phase::Stopped(StopReason::Ended) => Status::Idle,
            Phase::Stopped(_) => Status::Error,
            Phase::Live { .. } if self.playing => Status::Live,
            _ if fallback_shown => Status::Fallback,
            Phase::Connecting { .. } | Phase::Live { .. } => Status::Connecting,
            Phase::Restarting { .. } | Phase::Waiting { .. } | Phase::FallbackOnly => Status::Reconnecting,
        }
    }

    /// Milliseconds until the next WebRTC attempt, while waiting for one.
    pub fn retry_in_ms(&self, now: u64) -> Option<u64> {
        match self.phase {
            Phase::Waiting { retry_at } => Some(retry_at.saturating_sub(now)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command::*;

    const START_MJPEG: Command = StartFallback(Rung::Mjpeg);

    /// A ladder that has started: the first offer is out at t=0.
    fn started(fallback: bool) -> Ladder {
        let mut l = Ladder::new(fallback);
        assert_eq!(l.handle(0, Event::Start, 0.0), [Post]);
        assert_eq!(l.status(), Status::Connecting);
        l
    }

    /// A ladder playing WebRTC since t=100.
    fn playing() -> Ladder {
        let mut l = started(true);
        assert_eq!(l.handle(50, Event::Answered, 0.0), []);
        assert_eq!(l.handle(100, Event::Connected, 0.0), []);
        assert_eq!(l.status(), Status::Connecting, "connected, but no picture yet");
        assert_eq!(l.handle(150, Event::Playing, 0.0), []);
        assert_eq!((l.status(), l.transport()), (Status::Live, Transport::WebRtc));
        l
    }

    #[test]
    fn happy_path_never_touches_mjpeg() {
        let mut l = playing();
        for t in (200..60_000).step_by(250) {
            assert_eq!(l.handle(t, Event::Tick, 0.5), [], "t={t}");
        }
        assert_eq!(l.status(), Status::Live);
    }

    #[test]
    fn slow_connect_shows_mjpeg_meanwhile_then_drops_it_when_webrtc_plays() {
        let mut l = started(true);
        assert_eq!(l.handle(FALLBACK_AFTER_MS - 1, Event::Tick, 0.0), []);
        assert_eq!(l.handle(FALLBACK_AFTER_MS, Event::Tick, 0.0), [START_MJPEG]);
        assert_eq!(l.handle(FALLBACK_AFTER_MS + 10, Event::Tick, 0.0), [], "started once");
        assert_eq!(l.status(), Status::Connecting, "no MJPEG frame yet");
        l.handle(2_700, Event::FallbackFrame, 0.0);
        assert_eq!((l.status(), l.transport()), (Status::Fallback, Transport::Mjpeg));
        l.handle(3_000, Event::Connected, 0.0);
        assert_eq!(l.transport(), Transport::Mjpeg, "MJPEG stays until WebRTC frames render");
        assert_eq!(l.handle(3_100, Event::Playing, 0.0), [StopFallback]);
        assert_eq!((l.status(), l.transport()), (Status::Live, Transport::WebRtc));
    }

    #[test]
    fn connect_timeout_fails_over_to_mjpeg_and_retries_with_backoff() {
        let mut l = started(true);
        l.handle(FALLBACK_AFTER_MS, Event::Tick, 0.0);
        assert_eq!(l.handle(CONNECT_TIMEOUT_MS, Event::Tick, 1.0), [HangUp], "MJPEG is already on");
        assert_eq!(l.phase(), Phase::Waiting { retry_at: CONNECT_TIMEOUT_MS + 500 });
        assert_eq!(l.retry_in_ms(CONNECT_TIMEOUT_MS + 100), Some(400));
        assert_eq!(l.handle(CONNECT_TIMEOUT_MS + 499, Event::Tick, 1.0), []);
        assert_eq!(l.handle(CONNECT_TIMEOUT_MS + 500, Event::Tick, 1.0), [Post]);
        assert_eq!(l.last_error(), Some("WebRTC did not connect"));
    }

    #[test]
    fn refusals_back_off_exponentially_and_honour_retry_after() {
        let mut l = started(true);
        let mut now = 0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let cmds = l.handle(now, Event::Refused { status: 503, retry_after_ms: None, detail: String::new() }, 1.0);
            assert_eq!(cmds[0], HangUp);
            let Phase::Waiting { retry_at } = l.phase() else { panic!("waiting: {:?}", l.phase()) };
            delays.push(retry_at - now);
            now = retry_at;
            assert_eq!(l.handle(now, Event::Tick, 1.0), [Post]);
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10_000]);
        assert_eq!(l.last_error(), Some("HTTP 503"));

        l.handle(now, Event::Refused { status: 409, retry_after_ms: Some(30_000), detail: "camera offline".into() }, 1.0);
        assert_eq!(l.phase(), Phase::Waiting { retry_at: now + 30_000 }, "Retry-After beats our 10 s");
        assert_eq!(l.last_error(), Some("camera offline"));
    }

    #[test]
    fn the_first_failure_starts_mjpeg_at_once() {
        let mut l = started(true);
        assert_eq!(l.handle(10, Event::Refused { status: 0, retry_after_ms: None, detail: "network".into() }, 0.0), [HangUp, START_MJPEG]);
        assert_eq!(l.status(), Status::Reconnecting, "until an MJPEG frame shows");
        l.handle(20, Event::FallbackFrame, 0.0);
        assert_eq!(l.status(), Status::Fallback);
    }

    #[test]
    fn without_fallback_failures_only_retry() {
        let mut l = started(false);
        assert_eq!(l.handle(10, Event::Refused { status: 503, retry_after_ms: None, detail: String::new() }, 0.0), [HangUp]);
        assert_eq!(l.handle(FALLBACK_AFTER_MS * 10, Event::Tick, 0.0), [Post]);
        assert_eq!(l.handle(FALLBACK_AFTER_MS * 11, Event::Tick, 0.0), [], "no MJPEG while connecting either");
        assert_eq!(l.status(), Status::Connecting);
    }

    #[test]
    fn unauthorized_stops_for_good() {
        let mut l = started(true);
        assert_eq!(l.handle(10, Event::Refused { status: 401, retry_after_ms: None, detail: "token required".into() }, 0.0), [HangUp]);
        assert_eq!(l.phase(), Phase::Stopped(StopReason::Unauthorized));
        assert_eq!(l.status(), Status::Error);
        assert_eq!(l.handle(100_000, Event::Tick, 0.0), []);
        assert_eq!(l.last_error(), Some("token required"));
    }

    #[test]
    fn an_offer_the_server_cannot_serve_means_mjpeg_only() {
        for status in [400, 406, 413, 415, 422] {
            let mut l = started(true);
            assert_eq!(l.handle(10, Event::Refused { status, retry_after_ms: None, detail: String::new() }, 0.0), [HangUp, START_MJPEG]);
            assert_eq!(l.phase(), Phase::FallbackOnly, "{status}");
            assert_eq!(l.handle(1_000_000, Event::Tick, 0.0), [], "no more offers: {status}");
        }
        let mut l = started(false);
        l.handle(10, Event::Refused { status: 422, retry_after_ms: None, detail: String::new() }, 0.0);
        assert_eq!(l.phase(), Phase::Stopped(StopReason::Unsupported));
    }

    #[test]
    fn a_short_disconnect_recovers_by_itself() {
        let mut l = playing();
        assert_eq!(l.handle(1_000, Event::Disconnected, 0.0), []);
        assert_eq!(l.handle(1_000 + DISCONNECT_GRACE_MS - 1, Event::Tick, 0.0), []);
        assert_eq!(l.handle(3_500, Event::Connected, 0.0), []);
        assert_eq!(l.handle(10_000, Event::Tick, 0.0), []);
        assert_eq!(l.status(), Status::Live);
    }

    #[test]
    fn a_long_disconnect_tries_an_ice_restart_first() {
        let mut l = playing();
        l.handle(1_000, Event::Disconnected, 0.0);
        assert_eq!(l.handle(1_000 + DISCONNECT_GRACE_MS, Event::Tick, 0.0), [IceRestart]);
        assert_eq!((l.status(), l.transport()), (Status::Reconnecting, Transport::WebRtc), "the last WebRTC frame stays up");
        l.handle(4_100, Event::RestartAnswered, 0.0);
        assert_eq!(l.handle(4_500, Event::Connected, 0.0), []);
        assert!(matches!(l.phase(), Phase::Live { disconnected_since: None, .. }));
    }

    #[test]
    fn a_refused_restart_means_a_fresh_offer_and_no_more_restarts() {
        let mut l = playing();
        l.handle(1_000, Event::Disconnected, 0.0);
        l.handle(4_000, Event::Tick, 0.0);
        assert_eq!(l.handle(4_050, Event::RestartRefused, 0.0), [HangUp, Post], "at once, no backoff");
        l.handle(4_400, Event::Connected, 0.0);
        l.handle(4_450, Event::Playing, 0.0);
        l.handle(5_000, Event::Disconnected, 0.0);
        assert_eq!(l.handle(8_000, Event::Tick, 0.0), [HangUp, START_MJPEG], "known unsupported: no restart");
    }

    #[test]
    fn a_restart_that_does_not_reconnect_fails() {
        let mut l = playing();
        l.handle(1_000, Event::Disconnected, 0.0);
        l.handle(4_000, Event::Tick, 0.0);
        l.handle(4_100, Event::RestartAnswered, 0.0);
        assert_eq!(l.handle(4_000 + FALLBACK_AFTER_MS, Event::Tick, 0.0), [START_MJPEG], "picture meanwhile");
        assert_eq!(l.handle(4_000 + RESTART_TIMEOUT_MS, Event::Tick, 0.0), [HangUp]);
        assert!(matches!(l.phase(), Phase::Waiting { .. }));
    }

    #[test]
    fn a_failed_session_falls_back_and_retries() {
        let mut l = playing();
        assert_eq!(l.handle(2_000, Event::Failed, 0.0), [HangUp, START_MJPEG]);
        assert_eq!(l.transport(), Transport::None);
        assert!(l.retry_in_ms(2_000).is_some());
    }

    #[test]
    fn a_stall_is_healed_by_an_ice_restart_and_frames_end_it() {
        let mut l = started(true);
        assert_eq!(l.handle(10, Event::Stalled, 0.0), [], "not live: nothing to stall");
        let mut l = playing();
        assert_eq!(l.handle(2_000, Event::Stalled, 0.0), [IceRestart]);
        assert_eq!((l.status(), l.transport()), (Status::Reconnecting, Transport::WebRtc), "the last frame stays up");
        assert_eq!(l.handle(2_100, Event::Stalled, 0.0), [], "one restart at a time");
        l.handle(2_150, Event::RestartAnswered, 0.0);
        // Chromium's connection state may never leave `connected`: frames end the restart.
        assert_eq!(l.handle(2_400, Event::Playing, 0.0), []);
        assert!(matches!(l.phase(), Phase::Live { since: 2_400, .. }));
        assert_eq!(l.status(), Status::Live);
        assert_eq!(l.failures(), 0, "the session was kept");
    }

    #[test]
    fn a_stall_the_restart_does_not_heal_gets_a_fresh_session_at_once_then_the_backoff() {
        let mut l = playing();
        l.handle(2_000, Event::Stalled, 0.0);
        l.handle(2_150, Event::RestartAnswered, 0.0);
        l.handle(2_400, Event::Playing, 0.0);
        assert_eq!(l.handle(2_000 + RESTART_AGAIN_AFTER_MS - 1, Event::Stalled, 0.0), [HangUp, Post], "stalled again soon: a fresh offer, no wait");
        l.handle(12_200, Event::Connected, 0.0);
        l.handle(12_300, Event::Playing, 0.0);
        assert_eq!(l.handle(13_000, Event::Stalled, 0.0), [IceRestart], "a restart is tried again later");
        assert_eq!(l.handle(13_100, Event::RestartRefused, 0.0), [HangUp, START_MJPEG], "failing again: the backoff");
        assert!(matches!(l.phase(), Phase::Waiting { .. }));
    }

    #[test]
    fn with_restarts_refused_a_stall_is_a_fresh_offer_at_once() {
        let mut l = playing();
        assert_eq!(l.handle(2_000, Event::Stalled, 0.0), [IceRestart]);
        assert_eq!(l.handle(2_050, Event::RestartRefused, 0.0), [HangUp, Post]);
        l.handle(2_300, Event::Connected, 0.0);
        l.handle(2_400, Event::Playing, 0.0);
        l.handle(2_400 + STABLE_AFTER_MS, Event::Tick, 0.0);
        assert_eq!(l.handle(30_000, Event::Stalled, 0.0), [HangUp, Post], "known unsupported: straight to a fresh offer");
    }

    #[test]
    fn a_stable_session_resets_the_backoff() {
        let mut l = started(true);
        for t in [0, 1_000, 3_000] {
            l.handle(t, Event::Refused { status: 503, retry_after_ms: None, detail: String::new() }, 0.0);
            l.handle(t + 100_000, Event::Tick, 0.0);
        }
        assert_eq!(l.failures(), 3);
        l.handle(200_000, Event::Connected, 0.0);
        l.handle(200_050, Event::Playing, 0.0);
        l.handle(200_000 + STABLE_AFTER_MS - 1, Event::Tick, 0.0);
        assert_eq!(l.failures(), 3);
        l.handle(200_000 + STABLE_AFTER_MS, Event::Tick, 0.0);
        assert_eq!(l.failures(), 0);
    }

    #[test]
    fn mjpeg_that_ends_is_restarted_with_its_own_backoff() {
        let mut l = started(true);
        l.handle(10, Event::Refused { status: 0, retry_after_ms: None, detail: String::new() }, 0.0);
        assert_eq!(l.handle(20, Event::FallbackEnded, 1.0), []);
        assert!(!l.handle(1_019, Event::Tick, 1.0).contains(&START_MJPEG), "1 s later, not sooner");
        assert!(l.handle(1_020, Event::Tick, 1.0).contains(&START_MJPEG));
        l.handle(1_030, Event::FallbackEnded, 1.0);
        assert!(!l.handle(2_029, Event::Tick, 1.0).contains(&START_MJPEG));
        assert!(l.handle(3_030, Event::Tick, 1.0).contains(&START_MJPEG), "2 s the second time");
        // Once WebRTC plays, a late MJPEG end changes nothing.
        l.handle(3_100, Event::Tick, 1.0);
        let mut l2 = playing();
        assert_eq!(l2.handle(200, Event::FallbackEnded, 0.0), []);
        assert_eq!(l2.handle(5_000, Event::Tick, 0.0), []);
    }

    #[test]
    fn stop_hangs_up_and_ignores_everything_after() {
        let mut l = started(true);
        l.handle(10, Event::Refused { status: 0, retry_after_ms: None, detail: String::new() }, 0.0);
        assert_eq!(l.handle(20, Event::Stop, 0.0), [HangUp, StopFallback]);
        assert_eq!(l.status(), Status::Idle);
        for e in [Event::Tick, Event::Connected, Event::Failed, Event::FallbackEnded] {
            assert_eq!(l.handle(100_000, e, 0.0), []);
        }
        assert_eq!(l.handle(200_000, Event::Start, 0.0), [Post], "can start again");
    }

    #[test]
    fn events_out_of_place_are_ignored() {
        let mut l = Ladder::new(true);
        for e in [Event::Connected, Event::Playing, Event::Failed, Event::Disconnected, Event::RestartRefused, Event::Tick] {
            assert_eq!(l.handle(5, e, 0.0), []);
        }
        assert_eq!(l.phase(), Phase::Idle);
        let mut l = playing();
        assert_eq!(l.handle(500, Event::Refused { status: 503, retry_after_ms: None, detail: String::new() }, 0.0), [], "a late refusal of an old offer");
        assert_eq!(l.handle(600, Event::Start, 0.0), [], "already running");
    }

    const START_H264: Command = StartFallback(Rung::H264);

    fn started_with_h264() -> Ladder {
        let mut l = Ladder::new(true).with_h264_rung();
        assert_eq!(l.handle(0, Event::Start, 0.0), [Post]);
        l
    }

    #[test]
    fn with_udp_blocked_the_h264_rung_comes_first_and_webrtc_still_takes_over() {
        let mut l = started_with_h264();
        assert_eq!(l.handle(FALLBACK_AFTER_MS, Event::Tick, 0.0), [START_H264]);
        assert_eq!(l.transport(), Transport::None, "nothing shown yet");
        l.handle(2_700, Event::FallbackFrame, 0.0);
        assert_eq!((l.status(), l.transport()), (Status::Fallback, Transport::H264));
        assert_eq!(l.handle(CONNECT_TIMEOUT_MS, Event::Tick, 0.0), [HangUp], "the rung keeps playing while WebRTC waits");
        assert_eq!(l.transport(), Transport::H264);
        // WebRTC works again later: it takes over and the rung stops.
        let retry = match l.phase() {
            Phase::Waiting { retry_at } => retry_at,
            p => panic!("{p:?}"),
        };
        assert_eq!(l.handle(retry, Event::Tick, 0.0), [Post]);
        l.handle(retry + 100, Event::Connected, 0.0);
        assert_eq!(l.handle(retry + 150, Event::Playing, 0.0), [StopFallback]);
        assert_eq!(l.transport(), Transport::WebRtc);
    }

    #[test]
    fn an_h264_rung_that_never_shows_a_frame_gives_way_to_mjpeg_for_good() {
        let mut l = started_with_h264();
        assert_eq!(l.handle(10, Event::Refused { status: 0, retry_after_ms: None, detail: "network".into() }, 0.0), [HangUp, START_H264]);
        assert_eq!(l.handle(50, Event::FallbackEnded, 0.0), [START_MJPEG], "WebSockets blocked: MJPEG at once, no backoff");
        l.handle(80, Event::FallbackFrame, 0.0);
        assert_eq!(l.transport(), Transport::Mjpeg);
        // The next WebRTC failure goes straight to MJPEG.
        let retry = match l.phase() {
            Phase::Waiting { retry_at } => retry_at,
            p => panic!("{p:?}"),
        };
        l.handle(retry, Event::Tick, 0.0);
        l.handle(retry + 100, Event::Connected, 0.0);
        assert_eq!(l.handle(retry + 150, Event::Playing, 0.0), [StopFallback]);
        assert_eq!(l.handle(retry + 200, Event::Failed, 0.0), [HangUp, START_MJPEG]);
    }

    #[test]
    fn an_h264_rung_that_played_and_ended_is_retried_with_the_backoff() {
        let mut l = started_with_h264();
        l.handle(10, Event::Refused { status: 422, retry_after_ms: None, detail: String::new() }, 0.0);
        assert_eq!(l.phase(), Phase::FallbackOnly);
        l.handle(20, Event::FallbackFrame, 0.0);
        assert_eq!(l.handle(30, Event::FallbackEnded, 1.0), [], "it worked: a dropped connection, not a dead end");
        assert!(l.handle(1_029, Event::Tick, 1.0).is_empty());
        assert_eq!(l.handle(1_030, Event::Tick, 1.0), [START_H264], "the same rung again");
    }
}
