//! Which rendition one viewer gets, from what its receiver says: RTCP receiver reports
//! (loss over windows of at least a second, from their cumulative counters), NACKs (within a round trip of a loss: the quick
//! signal that a step up does not fit) and REMB bandwidth estimates. Pure: events and time in, a rendition
//! index and a reason out, so the policy is tested without a network or a clock.
//!
//! The policy (after Neko's and LiveKit's): down at once on sustained loss or a burst of NACKs;
//! up one step at a time after a stable period. A step up that loses is undone, and the next
//! try waits twice as long, up to two minutes: without probing (padding at the next step's rate
//! before moving), a step up is the probe, and on a link that cannot carry it, it costs a
//! freeze of a second or more (measured: Chromium behind a 1 Mbit/s tbf link, 2-3 s). The browser's REMB estimate is kept and shown, not acted on: it
//! only grows to about 1.5 times what the browser receives, so after a step down it stays below
//! every step up, and right after a step up it still describes the old rendition (measured with
//! Chromium behind a 1 Mbit/s link: acting on it held a viewer at 150 kbit/s for good).

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
            Why::OnlyOne => write!(f, "the only rendition"),
        }
    }
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
        self.current -= 1;
        self.why = Why::Stable { secs: stable.as_secs() };
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
