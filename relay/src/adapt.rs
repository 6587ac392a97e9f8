//! Which rendition one viewer gets, from what its receiver says: RTCP receiver reports
//! (loss over windows of at least a second, from their cumulative counters), NACKs (within a
//! round trip of a loss: the quick signal that a rendition does not fit), probes of the link
//! (transport-wide feedback on a burst of padding, `webrtc/twcc.rs`) and REMB bandwidth
//! estimates. Pure: events and time in, a rendition index and a reason out, so the policy is
//! tested without a network or a clock.
//!
//! The policy (after Neko's and LiveKit's, with libwebrtc's probes): down at once on sustained
//! loss or a burst of NACKs, or after a second of standing queue (packets waiting 100 ms more
//! than the path's floor, from transport-wide feedback: a link too slow queues before it
//! loses); up one step at a time after a stable period, and only after a
//! probe found the link carries the next step with room to spare. A probe that falls short
//! costs a fraction of a second of queueing where a step up tried blind cost a freeze of 2-3 s
//! (measured: Chromium behind a 1 Mbit/s tbf link); the next probe waits twice as long, up to
//! 20 s. A viewer that sends no transport-wide feedback is stepped up blind, as a trial: a
//! step up that loses is undone, and the next try waits twice as long, up to two minutes.
//! The browser's REMB estimate is kept and shown, not acted on: it only grows to about 1.5
//! times what the browser receives, so after a step down it stays below every step up
//! (measured with Chromium behind a 1 Mbit/s link: acting on it held a viewer at 150 kbit/s).

use std::time::{Duration, Instant};

/// Loss in one receiver report that is a congested link, not noise.
const LOSS_HIGH: f64 = 0.10;
/// Smoothed loss that is a congested link.
const LOSS_SUSTAINED: f64 = 0.04;
/// Loss that still counts as stable.
const LOSS_STABLE: f64 = 0.02;
/// After a step down, wait this long before another (its effect shows in the next reports).
const DOWN_HOLD: Duration = Duration::from_secs(2);
/// Stable this long before a step up.
const UP_AFTER: Duration = Duration::from_secs(10);
/// Longest wait before a step up, after steps up that failed.
const UP_AFTER_MAX: Duration = Duration::from_secs(120);
/// A step up that loses within this time failed.
const TRIAL: Duration = Duration::from_secs(6);
/// NACKs are counted over at least this long before they are judged.
const NACK_WINDOW: Duration = Duration::from_millis(300);
/// Receiver reports' loss is judged over at least this long.
const REPORT_WINDOW: Duration = Duration::from_secs(1);
/// A probe pads up to the next step's bitrate times this, and must find at least that
/// bitrate (the room covers the pacing's unevenness).
const PROBE_HEADROOM: f64 = 1.25;
/// A probe that came to nothing in this long (no frame to send it after, no feedback): the
/// step up is tried blind instead.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between probes that fell short: a link that got faster is found within it.
const PROBE_AFTER_MAX: Duration = Duration::from_secs(20);
/// A probe losing more than this share of its packets fell short, whatever its rate.
const PROBE_MAX_LOSS: f64 = 0.1;
/// Queueing this long (a packet's one-way delay over the path's floor) is a link too slow for
/// the rendition...
const QUEUE_HIGH: Duration = Duration::from_millis(100);
/// ...once it has lasted this long (a moment's queue is a burst: a keyframe, a probe draining).
const QUEUE_SUSTAINED: Duration = Duration::from_secs(1);

/// Why the viewer is on its rendition (for the API and the log).
#[derive(Debug, Clone, PartialEq)]
pub enum Why {
    Start,
    Pinned,
    /// The receiver reports lost packets.
    Loss {
        percent: f64,
    },
    /// The viewer NACKed a large share of what was sent lately.
    Nacked {
        percent: f64,
    },
    Stable {
        secs: u64,
    },
    /// A probe found the link carries the next step.
    Probed {
        kbps: u64,
    },
    /// A TCP rung's frames queued past its limit.
    Backlog,
    /// Packets waited this long in a queue on the way, for a second or more.
    Queueing {
        ms: u64,
    },
    /// A probe found the link does not carry the next step.
    ProbeShort {
        kbps: u64,
        needed_kbps: u64,
    },
    OnlyOne,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Start => write!(f, "start at the top"),
            Why::Pinned => write!(f, "pinned by the viewer"),
            Why::Loss { percent } => write!(f, "down: {percent:.1} % loss"),
            Why::Nacked { percent } => write!(f, "down: {percent:.1} % of packets NACKed"),
            Why::Stable { secs } => write!(f, "up: stable for {secs} s"),
            Why::Backlog => write!(f, "down: the link backed up"),
            Why::Queueing { ms } => write!(f, "down: packets queued {ms} ms on the way"),
            Why::Probed { kbps } => write!(f, "up: a probe found {}", rate(*kbps)),
            Why::ProbeShort { kbps, needed_kbps } => write!(f, "held: a probe found {} of the {} the next step needs", rate(*kbps), rate(*needed_kbps)),
            Why::OnlyOne => write!(f, "the only rendition"),
        }
    }
}

/// A rate in kbit/s, in words.
fn rate(kbps: u64) -> String {
    match kbps {
        k if k >= 1_000_000 => "more than 1 Gbit/s".to_owned(),
        k if k >= 1000 => format!("{:.1} Mbit/s", k as f64 / 1000.0),
        k => format!("{k} kbit/s"),
    }
}

/// A probe the chooser wants sent, or sent and awaited.
#[derive(Debug, Clone, Copy)]
struct ProbeWanted {
    /// The next step's bitrate.
    step_bps: u64,
    asked: Instant,
    taken: bool,
}

/// A receiver report's cumulative counters, and when it came.
#[derive(Debug, Clone, Copy)]
struct ReportCounters {
    lost: i64,
    highest: u32,
    at: Instant,
}

/// RTCP's cumulative number of packets lost is a 24-bit signed count.
fn sign_extend_24(v: u32) -> i64 {
    let v = i64::from(v & 0x00ff_ffff);
    if v & 0x0080_0000 != 0 {
        v - 0x0100_0000
    } else {
        v
    }
}

/// One viewer's rendition choice. Renditions are indexed from the top (0, the largest) down.
#[derive(Debug)]
pub struct Chooser {
    /// Each rendition's bitrate, top first.
    bitrates: Vec<u64>,
    current: usize,
    why: Why,
    pinned: Option<usize>,
    /// Smoothed fraction lost.
    loss: f64,
    /// The counters of the receiver report that opened the current loss window.
    window: Option<ReportCounters>,
    /// Packets NACKed since `nack_since` (each once: receivers repeat their NACKs).
    nacked: std::collections::HashSet<u16>,
    sent_at_window: Option<u64>,
    nack_since: Instant,
    estimate: Option<u64>,
    /// Since when the link has been stable on the current rendition.
    stable_since: Instant,
    last_down: Option<Instant>,
    /// A step up being tried: when it started.
    trial: Option<Instant>,
    up_after: Duration,
    /// The viewer sends transport-wide feedback: steps up are probed first.
    can_probe: bool,
    probe: Option<ProbeWanted>,
    /// The last probe's rate, bits per second.
    probed_bps: Option<u64>,
    /// Since when packets have queued over [`QUEUE_HIGH`].
    queued_since: Option<Instant>,
}

impl Chooser {
    pub fn new(bitrates: Vec<u64>, pinned: Option<usize>, now: Instant) -> Self {
        let why = match (pinned, bitrates.len()) {
            (Some(_), _) => Why::Pinned,
            (None, n) if n <= 1 => Why::OnlyOne,
            _ => Why::Start,
        };
        let current = pinned.unwrap_or(0).min(bitrates.len().saturating_sub(1));
        Self {
            bitrates,
            current,
            why,
            pinned,
            loss: 0.0,
            window: None,
            nacked: Default::default(),
            sent_at_window: None,
            nack_since: now,
            estimate: None,
            stable_since: now,
            last_down: None,
            trial: None,
            up_after: UP_AFTER,
            can_probe: false,
            probe: None,
            probed_bps: None,
            queued_since: None,
        }
    }

    /// The viewer sends transport-wide feedback, so steps up can be probed first.
    pub fn can_probe(&mut self) {
        self.can_probe = true;
    }

    /// The rate to probe for, once, when a step up is due: the caller sends the probe and
    /// reports [`Chooser::probed`].
    pub fn take_probe(&mut self) -> Option<u64> {
        let p = self.probe.as_mut().filter(|p| !p.taken)?;
        p.taken = true;
        Some((p.step_bps as f64 * PROBE_HEADROOM) as u64)
    }

    /// The last probe's rate, bits per second.
    pub fn probed_bps(&self) -> Option<u64> {
        self.probed_bps
    }

    /// What a probe found: the rate its burst arrived at, and how many of its packets were lost.
    pub fn probed(&mut self, bps: u64, lost: u16, packets: u16, now: Instant) {
        let Some(p) = self.probe.take() else { return };
        self.probed_bps = Some(bps);
        if self.pinned.is_some() || self.current == 0 {
            return;
        }
        let kbps = bps / 1000;
        if bps >= p.step_bps && f64::from(lost) <= PROBE_MAX_LOSS * f64::from(packets) {
            self.step_up(Why::Probed { kbps }, now);
        } else {
            // Short: stay, and probe again after a longer stable period.
            self.why = Why::ProbeShort { kbps, needed_kbps: p.step_bps / 1000 };
            self.stable_since = now;
            self.up_after = (self.up_after * 2).min(PROBE_AFTER_MAX).max(self.up_after);
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    pub fn why(&self) -> &Why {
        &self.why
    }

    pub fn pinned(&self) -> Option<usize> {
        self.pinned
    }

    /// The smoothed loss, 0 to 1.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// The browser's last estimate of its link (REMB), bits per second.
    pub fn estimate(&self) -> Option<u64> {
        self.estimate
    }

    /// The viewer pins a rendition, or (`None`) lets the relay choose again.
    pub fn pin(&mut self, pinned: Option<usize>, now: Instant) {
        self.pinned = pinned.map(|p| p.min(self.bitrates.len().saturating_sub(1)));
        if let Some(p) = self.pinned {
            self.current = p;
            self.why = Why::Pinned;
        }
        self.stable_since = now;
        self.trial = None;
    }

    /// A receiver report's cumulative counters: packets lost (RTCP's 24-bit signed count) and
    /// the extended highest sequence number received. Loss is judged over windows of at least
    /// [`REPORT_WINDOW`], not by each report's own fraction: a browser sends a report with
    /// every NACK, over the few packets since its last one, so 2 % random loss shows up as
    /// reports of 10-15 %. The cumulative count also goes down again as resent packets arrive,
    /// so what NACKs repaired within the window is not loss.
    pub fn cumulative_report(&mut self, total_lost: u32, highest_sequence: u32, now: Instant) {
        let counters = ReportCounters { lost: sign_extend_24(total_lost), highest: highest_sequence, at: now };
        if self.last_down.is_some_and(|t| now.saturating_duration_since(t) < DOWN_HOLD) {
            // Right after a step down, reports still count what the old rendition lost in the
            // queue it filled: the new one is judged from the end of the hold.
            self.window = Some(counters);
            return;
        }
        let Some(start) = self.window else {
            self.window = Some(counters);
            return;
        };
        if now.saturating_duration_since(start.at) < REPORT_WINDOW {
            return;
        }
        let expected = i64::from(counters.highest.wrapping_sub(start.highest) as i32);
        if expected <= 0 {
            return;
        }
        self.window = Some(counters);
        let lost = (counters.lost - start.lost).clamp(0, expected);
        self.receiver_report((lost * 256 / expected).min(255) as u8, now);
    }

    /// Loss over one window, as a fraction of 256 (as RTCP's fraction lost carries it).
    pub fn receiver_report(&mut self, fraction_lost: u8, now: Instant) {
        let lost = f64::from(fraction_lost) / 256.0;
        self.loss = 0.6 * self.loss + 0.4 * lost;
        if lost > LOSS_STABLE {
            self.stable_since = now;
        }
        if lost >= LOSS_HIGH || self.loss >= LOSS_SUSTAINED {
            let percent = (lost.max(self.loss) * 1000.0).round() / 10.0;
            self.down(self.current + 1, Why::Loss { percent }, now);
        }
    }

    /// The viewer NACKed packets `seqs`; `sent` is the count of packets sent to it so far.
    /// Over a window of a few hundred milliseconds, a tenth of what was sent lost is a link
    /// that does not carry this rendition: down without waiting for the next receiver report
    /// (a step up that does not fit then costs a short stutter, not a second's freeze).
    pub fn nacks(&mut self, seqs: impl IntoIterator<Item = u16>, sent: u64, now: Instant) {
        let start = *self.sent_at_window.get_or_insert(sent);
        self.nacked.extend(seqs);
        if now.saturating_duration_since(self.nack_since) < NACK_WINDOW {
            return;
        }
        let window_sent = sent.saturating_sub(start).max(1);
        let share = self.nacked.len() as f64 / window_sent as f64;
        self.nacked.clear();
        (self.sent_at_window, self.nack_since) = (Some(sent), now);
        if share > LOSS_STABLE {
            self.stable_since = now;
        }
        if share >= LOSS_HIGH && window_sent >= 20 {
            self.down(self.current + 1, Why::Nacked { percent: (share.min(1.0) * 1000.0).round() / 10.0 }, now);
        }
    }

    /// The viewer's link backed up (a TCP rung's frames queued past its limit, so it skipped
    /// to a keyframe): down a step. TCP loses nothing, so this is its only sign of a link too
    /// slow for the rendition.
    pub fn backed_up(&mut self, now: Instant) {
        self.stable_since = now;
        self.down(self.current + 1, Why::Backlog, now);
    }

    /// How long the viewer's packets waited in a queue on the way (`twcc.rs`): a standing
    /// queue over [`QUEUE_HIGH`] for [`QUEUE_SUSTAINED`] moves it down a step. Not while a probe
    /// runs or is awaited: a probe fills the queue on purpose.
    pub fn queue_delay(&mut self, delay: Duration, now: Instant) {
        if delay < QUEUE_HIGH || self.probe.is_some_and(|p| p.taken) {
            self.queued_since = None;
            return;
        }
        self.stable_since = now;
        let since = *self.queued_since.get_or_insert(now);
        if now.saturating_duration_since(since) >= QUEUE_SUSTAINED {
            self.queued_since = None;
            self.down(self.current + 1, Why::Queueing { ms: delay.as_millis() as u64 }, now);
        }
    }

    /// A REMB estimate of the viewer's link, bits per second (kept for the API; see the
    /// module's note on why it moves nothing).
    pub fn estimate_bps(&mut self, bps: u64) {
        self.estimate = Some(bps);
    }

    /// Time passes: a step up when the link has been stable long enough.
    pub fn tick(&mut self, now: Instant) {
        if self.pinned.is_some() {
            self.trial = None;
            return;
        }
        if let Some(started) = self.trial {
            if now.saturating_duration_since(started) >= TRIAL {
                // The step up held: the next one waits the usual time again.
                self.trial = None;
                self.up_after = UP_AFTER;
            }
        }
        // At the top nothing is left to try, but a step up to it is still on trial.
        if self.current == 0 {
            return;
        }
        let stable = now.saturating_duration_since(self.stable_since);
        if stable < self.up_after || self.trial.is_some() {
            return;
        }
        if !self.can_probe {
            self.step_up(Why::Stable { secs: stable.as_secs() }, now);
            return;
        }
        match self.probe {
            None => {
                self.probe = Some(ProbeWanted { step_bps: self.bitrates[self.current - 1], asked: now, taken: false });
            }
            // Nothing came of it: try the step itself, on trial.
            Some(p) if now.saturating_duration_since(p.asked) >= PROBE_TIMEOUT => {
                self.probe = None;
                self.step_up(Why::Stable { secs: stable.as_secs() }, now);
            }
            Some(_) => {}
        }
    }

    fn step_up(&mut self, why: Why, now: Instant) {
        self.current -= 1;
        self.why = why;
        self.stable_since = now;
        self.trial = Some(now);
    }

    fn down(&mut self, to: usize, why: Why, now: Instant) {
        let lowest = self.bitrates.len().saturating_sub(1);
        if self.pinned.is_some() || self.current >= lowest || self.last_down.is_some_and(|t| now.saturating_duration_since(t) < DOWN_HOLD) {
            return;
        }
        if self.trial.take().is_some() {
            // The step up did not hold: wait longer before the next.
            self.up_after = (self.up_after * 2).min(UP_AFTER_MAX);
        }
        self.current = to.min(lowest);
        self.why = why;
        self.probe = None;
        self.last_down = Some(now);
        self.stable_since = now;
        // What was lost on the old rendition says nothing about the new one.
        self.loss = 0.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 3] = [2_000_000, 600_000, 150_000];

    #[test]
    fn a_standing_queue_moves_down_after_a_second_and_a_moment_of_one_does_not() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        // A keyframe's burst: 300 ms of queue, then none.
        for ms in (0..300).step_by(50) {
            c.queue_delay(Duration::from_millis(150), t0 + Duration::from_millis(ms));
        }
        c.queue_delay(Duration::from_millis(10), t0 + Duration::from_millis(300));
        c.queue_delay(Duration::from_millis(40), t0 + Duration::from_millis(900));
        assert_eq!(c.current(), 0, "bursts are not a slow link");
        // A link that keeps a queue: down after a second of it.
        for ms in (1000..2000).step_by(50) {
            c.queue_delay(Duration::from_millis(180), t0 + Duration::from_millis(ms));
        }
        assert_eq!(c.current(), 0, "not yet: {:?}", c.why());
        c.queue_delay(Duration::from_millis(180), t0 + Duration::from_millis(2000));
        assert_eq!((c.current(), c.why().to_string()), (1, "down: packets queued 180 ms on the way".to_owned()));
        // While a probe runs, its own queue moves nothing.
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.can_probe();
        c.pin(Some(1), t0);
        c.pin(None, t0);
        let later = t0 + UP_AFTER + Duration::from_secs(1);
        c.tick(later);
        assert!(c.take_probe().is_some(), "a probe for the step up");
        for ms in (0..1500).step_by(50) {
            c.queue_delay(Duration::from_millis(300), later + Duration::from_millis(ms));
        }
        assert_eq!(c.current(), 1, "still where it was: {:?}", c.why());
    }

    fn secs(t0: Instant, s: f64) -> Instant {
        t0 + Duration::from_secs_f64(s)
    }

    /// Reports once a second with `lost` (0-255) from `from` to `to` seconds, ticking each.
    fn run(c: &mut Chooser, t0: Instant, from: u64, to: u64, lost: u8) {
        for s in from..to {
            c.receiver_report(lost, secs(t0, s as f64));
            c.tick(secs(t0, s as f64 + 0.5));
        }
    }

    #[test]
    fn heavy_loss_steps_down_at_once_and_again_after_the_hold() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        assert_eq!((c.current(), c.why()), (0, &Why::Start));
        c.receiver_report(80, secs(t0, 1.0)); // 31 %
        assert_eq!(c.current(), 1);
        assert!(matches!(c.why(), Why::Loss { percent } if *percent > 30.0));
        c.receiver_report(80, secs(t0, 2.0));
        assert_eq!(c.current(), 1, "held: the step down has not shown yet");
        c.receiver_report(80, secs(t0, 3.5));
        assert_eq!(c.current(), 2);
        c.receiver_report(255, secs(t0, 6.0));
        assert_eq!(c.current(), 2, "nothing below the lowest");
    }

    #[test]
    fn light_loss_is_noise_and_sustained_loss_is_not() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        run(&mut c, t0, 1, 30, 3); // about 1 %
        assert_eq!(c.current(), 0);
        run(&mut c, t0, 30, 34, 15); // about 6 %, every report
        assert_eq!(c.current(), 1);
    }

    #[test]
    fn steps_up_after_a_stable_period_and_backs_off_when_the_step_fails() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.receiver_report(100, secs(t0, 0.0));
        c.receiver_report(100, secs(t0, 2.0));
        assert_eq!(c.current(), 2);
        run(&mut c, t0, 3, 12, 0);
        assert_eq!(c.current(), 2, "not stable long enough");
        run(&mut c, t0, 12, 14, 0);
        assert_eq!(c.current(), 1);
        assert!(matches!(c.why(), Why::Stable { secs } if *secs >= 10));
        // The step up loses at once: back down, and the next try waits 20 s.
        c.receiver_report(60, secs(t0, 14.0));
        assert_eq!(c.current(), 2);
        run(&mut c, t0, 15, 33, 0);
        assert_eq!(c.current(), 2, "backed off");
        run(&mut c, t0, 33, 36, 0);
        assert_eq!(c.current(), 1);
        // This one holds; the next step waits the usual 10 s again.
        run(&mut c, t0, 36, 48, 0);
        assert_eq!(c.current(), 0);
    }

    #[test]
    fn loss_is_judged_over_a_second_of_reports_and_repaired_packets_are_not_lost() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        // A browser's reports ride on its NACKs: every 100 ms here, each over 20 packets, one
        // of them missing when the report is written and resent 50 ms later (2 % loss, all
        // repaired). Each report's own fraction would say 5 %; the window says none.
        let (mut lost, mut highest) = (0u32, 1000u32);
        c.cumulative_report(lost, highest, t0);
        for i in 1..=100 {
            highest += 20;
            c.cumulative_report(lost + 1, highest, secs(t0, i as f64 * 0.1));
            c.tick(secs(t0, i as f64 * 0.1 + 0.05));
        }
        assert_eq!(c.current(), 0, "{:?}", c.why());
        assert!(c.loss() < 0.01, "{}", c.loss());
        // Congestion: a quarter of the packets lost for good, in every window.
        for i in 101..=104 {
            highest += 200;
            lost += 50;
            c.cumulative_report(lost, highest, secs(t0, i as f64));
        }
        assert_eq!(c.current(), 2, "down twice: {:?}", c.why());
        assert!(matches!(c.why(), Why::Loss { percent } if (24.0..=26.0).contains(percent)), "{:?}", c.why());
    }

    #[test]
    fn a_step_up_undone_by_nacks_backs_off_too() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.receiver_report(100, t0);
        assert_eq!(c.current(), 1);
        let mut sent = 0;
        let mut up_at = Vec::new();
        for tenth in 1..600 {
            let now = secs(t0, f64::from(tenth) / 10.0);
            sent += 10;
            if c.current() == 0 {
                // The top does not fit: a third of what is sent is NACKed.
                c.nacks((sent as u16 - 3)..(sent as u16), sent, now);
            } else {
                c.nacks(std::iter::empty(), sent, now);
            }
            let before = c.current();
            c.tick(now);
            if before == 1 && c.current() == 0 {
                up_at.push(tenth / 10);
            }
        }
        assert_eq!(up_at, [10, 30], "tries at 10 s, then 20 s after the failure (and 40 s after the next)");
    }

    /// A viewer on "small" after a step down, sending transport-wide feedback.
    fn probing_viewer(t0: Instant) -> Chooser {
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.can_probe();
        c.receiver_report(100, t0);
        assert_eq!(c.current(), 1);
        c
    }

    #[test]
    fn a_step_up_waits_for_a_probe_and_one_that_falls_short_holds_the_viewer_and_backs_off() {
        let t0 = Instant::now();
        let mut c = probing_viewer(t0);
        run(&mut c, t0, 1, 10, 0);
        assert_eq!(c.take_probe(), None, "not stable long enough");
        run(&mut c, t0, 10, 11, 0);
        assert_eq!(c.take_probe(), Some(2_500_000), "the top's 2 Mbit/s and room to spare");
        assert_eq!(c.take_probe(), None, "asked for once");
        assert_eq!(c.current(), 1, "no step before the probe's verdict");
        // The link carries 1 Mbit/s: held, with the reason.
        c.probed(1_000_000, 0, 16, secs(t0, 10.7));
        assert_eq!(c.current(), 1);
        assert_eq!(c.why().to_string(), "held: a probe found 1.0 Mbit/s of the 2.0 Mbit/s the next step needs");
        assert_eq!(c.probed_bps(), Some(1_000_000));
        // The next probe waits 20 s, and the one after that too (20 s at most).
        run(&mut c, t0, 11, 31, 0);
        assert_eq!(c.take_probe(), None);
        run(&mut c, t0, 31, 32, 0);
        assert_eq!(c.take_probe(), Some(2_500_000));
        c.probed(900_000, 0, 16, secs(t0, 31.7));
        run(&mut c, t0, 32, 52, 0);
        assert_eq!(c.take_probe(), None);
        run(&mut c, t0, 52, 53, 0);
        assert_eq!(c.take_probe(), Some(2_500_000));
        // The link got faster: up, on trial.
        c.probed(u64::MAX, 0, 16, secs(t0, 52.7));
        assert_eq!((c.current(), c.why().to_string()), (0, "up: a probe found more than 1 Gbit/s".to_owned()));
    }

    #[test]
    fn a_fast_probe_that_lost_packets_or_a_probe_under_the_step_falls_short_and_loss_cancels_a_probe() {
        let t0 = Instant::now();
        let mut c = probing_viewer(t0);
        run(&mut c, t0, 1, 11, 0);
        assert!(c.take_probe().is_some());
        c.probed(5_000_000, 4, 16, secs(t0, 10.7));
        assert_eq!(c.current(), 1, "a quarter of it lost");
        run(&mut c, t0, 11, 32, 0);
        assert_eq!(c.take_probe(), Some(2_500_000));
        c.probed(1_900_000, 0, 40, secs(t0, 31.7));
        assert_eq!(c.current(), 1, "under the next step's 2 Mbit/s");
        assert!(matches!(c.why(), Why::ProbeShort { .. }), "{:?}", c.why());

        let mut c = probing_viewer(t0);
        run(&mut c, t0, 1, 11, 0);
        assert!(c.take_probe().is_some());
        c.receiver_report(100, secs(t0, 10.8));
        assert_eq!(c.current(), 2, "down on loss");
        c.probed(u64::MAX, 0, 16, secs(t0, 10.9));
        assert_eq!(c.current(), 2, "the probe sent before it says nothing now");
    }

    #[test]
    fn a_probe_that_comes_to_nothing_gives_way_to_a_step_on_trial() {
        let t0 = Instant::now();
        let mut c = probing_viewer(t0);
        run(&mut c, t0, 1, 11, 0);
        assert!(c.take_probe().is_some());
        run(&mut c, t0, 11, 13, 0);
        assert_eq!(c.current(), 1, "still waiting for its feedback");
        run(&mut c, t0, 13, 14, 0);
        assert_eq!(c.current(), 0, "no verdict in 3 s: the step itself");
        assert!(matches!(c.why(), Why::Stable { .. }), "{:?}", c.why());
    }

    #[test]
    fn a_backed_up_link_steps_down_and_a_blind_step_up_that_backs_up_again_backs_off() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.backed_up(secs(t0, 1.0));
        assert_eq!((c.current(), c.why().to_string()), (1, "down: the link backed up".to_owned()));
        c.backed_up(secs(t0, 2.0));
        assert_eq!(c.current(), 1, "held: the step down has not shown yet");
        // No feedback on a TCP rung: after 10 s without a backup, a step up on trial.
        for tenth in 30..=125 {
            c.tick(secs(t0, f64::from(tenth) / 10.0));
        }
        assert_eq!(c.current(), 0);
        c.backed_up(secs(t0, 13.0));
        assert_eq!(c.current(), 1, "the step up did not fit");
        for tenth in 131..=320 {
            c.tick(secs(t0, f64::from(tenth) / 10.0));
        }
        assert_eq!(c.current(), 1, "the next try waits 20 s");
        c.tick(secs(t0, 33.1));
        assert_eq!(c.current(), 0);
    }

    #[test]
    fn the_cumulative_count_is_24_bit_signed() {
        assert_eq!(sign_extend_24(5), 5);
        assert_eq!(sign_extend_24(0x00ff_ffff), -1, "more duplicates than losses");
        assert_eq!(sign_extend_24(0x0080_0000), -0x0080_0000);
    }

    #[test]
    fn an_estimate_is_kept_and_moves_nothing() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.estimate_bps(200_000);
        c.tick(secs(t0, 1.0));
        assert_eq!((c.current(), c.estimate()), (0, Some(200_000)));
    }

    #[test]
    fn a_burst_of_nacks_steps_down_before_the_next_receiver_report() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), None, t0);
        c.nacks([1, 2], 100, secs(t0, 0.0)); // opens the window
        c.nacks([1, 2, 3, 150, 160], 200, secs(t0, 0.4));
        assert_eq!(c.current(), 0, "5 of 100 is noise");
        c.nacks(200..230, 300, secs(t0, 0.5));
        c.nacks(200..230, 300, secs(t0, 0.8));
        assert_eq!(c.current(), 1, "30 of 100 (NACKed twice, counted once)");
        assert!(matches!(c.why(), Why::Nacked { percent } if (29.0..=31.0).contains(percent)), "{:?}", c.why());
        c.nacks(300..305, 302, secs(t0, 1.2));
        assert_eq!(c.current(), 1, "too few packets to judge");
    }

    #[test]
    fn a_pinned_viewer_stays_put_until_it_unpins() {
        let t0 = Instant::now();
        let mut c = Chooser::new(LADDER.to_vec(), Some(0), t0);
        run(&mut c, t0, 1, 10, 200);
        assert_eq!((c.current(), c.why()), (0, &Why::Pinned));
        c.pin(Some(2), secs(t0, 10.0));
        run(&mut c, t0, 11, 40, 0);
        assert_eq!(c.current(), 2);
        c.pin(None, secs(t0, 40.0));
        run(&mut c, t0, 41, 52, 0);
        assert_eq!(c.current(), 1, "free again: steps up");
    }

    #[test]
    fn a_single_rendition_never_moves() {
        let t0 = Instant::now();
        let mut c = Chooser::new(vec![2_000_000], None, t0);
        run(&mut c, t0, 1, 10, 200);
        c.estimate_bps(100_000);
        assert_eq!((c.current(), c.why()), (0, &Why::OnlyOne));
    }
}
