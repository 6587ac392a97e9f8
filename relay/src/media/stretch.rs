//! Stretch: a screen transfer function on luma, applied to each decoded picture before it is
//! encoded, so every viewer sees a deep-sky frame brightened without a new session.
//!
//! `auto` is PixInsight's AutoSTF on the picture's luma histogram: the black point a few
//! normalized MADs under the median, and a midtones balance that brings the median to a
//! target brightness. The levels are smoothed over time so noise does not make the picture
//! pump. Either way the levels become one 256-entry lookup table per frame, applied in place to
//! the Y plane (chroma is left alone: colours keep their hue, stars their tint).
//!
//! Pure: no I/O and no clock of its own (times are arguments). [`StretchControl`] is what the
//! API writes and the lead encoder reads.

use super::I420;
use scopecast_shared::api::{Stretch, StretchLevels};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Scale factor from a MAD to a normal distribution's standard deviation.
const MAD_TO_SIGMA: f32 = 1.4826;
/// The smallest spread `auto` assumes, in full-scale units: a picture of one flat level (a
/// black frame, a cap on the lens) would otherwise stretch its last bit of noise to white.
const MIN_SIGMA: f32 = 0.5 / 255.0;
/// Pictures larger than this are histogrammed on every other row and column: a quarter of the
/// pixels (still 230 000 at 720p) gives the same median and MAD in a quarter of the time.
const SAMPLE_ALL_UP_TO: usize = 1 << 18;
/// `auto` levels follow the picture with this time constant.
const SMOOTHING: Duration = Duration::from_secs(1);
/// After a gap this long, a new picture gets its own levels at once (a slow stream's frames
/// are separate exposures; smoothing them would show each one with the last one's levels).
const FRESH_AFTER: Duration = Duration::from_secs(5);

/// The midtones transfer function: `m` = 0.5 is linear, smaller brightens, larger darkens;
/// 0, `m` and 1 go to 0, 0.5 and 1.
pub fn mtf(m: f32, x: f32) -> f32 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    (m - 1.0) * x / ((2.0 * m - 1.0) * x - m)
}

/// A 256-bin histogram of luma.
#[derive(Clone)]
pub struct Histogram {
    counts: [u32; 256],
    total: u64,
}

impl Histogram {
    pub fn from_counts(counts: [u32; 256]) -> Self {
        let total = counts.iter().map(|&c| u64::from(c)).sum();
        Self { counts, total }
    }

    /// The picture's luma (sampled on large pictures). Four interleaved counters, summed at
    /// the end: a run of equal values (a black sky) would otherwise stall on one counter.
    pub fn of_luma(picture: &I420) -> Self {
        let mut lanes = [[0u32; 256]; 4];
        let (w, h) = (picture.width, picture.height);
        let step = if w * h <= SAMPLE_ALL_UP_TO { 1 } else { 2 };
        for row in picture.y().chunks_exact(w).take(h).step_by(step) {
            let mut quads = row.chunks_exact(4 * step);
            for q in &mut quads {
                lanes[0][q[0] as usize] += 1;
                lanes[1][q[step] as usize] += 1;
                lanes[2][q[2 * step] as usize] += 1;
                lanes[3][q[3 * step] as usize] += 1;
            }
            for &v in quads.remainder().iter().step_by(step) {
                lanes[0][v as usize] += 1;
            }
        }
        let mut counts = [0u32; 256];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = lanes[0][i] + lanes[1][i] + lanes[2][i] + lanes[3][i];
        }
        Self::from_counts(counts)
    }

    /// The fraction of samples at or under `x` (full scale 0..1), each bin's samples spread
    /// evenly over its width, so medians and MADs have sub-level precision.
    fn cdf(&self, x: f32) -> f32 {
        let pos = x * 255.0 + 0.5; // bin i covers [i - 0.5, i + 0.5) in levels
        if pos <= 0.0 {
            return 0.0;
        }
        if pos >= 256.0 {
            return 1.0;
        }
        let bin = pos as usize;
        let below: u64 = self.counts[..bin].iter().map(|&c| u64::from(c)).sum();
        let partial = f64::from(self.counts[bin]) * f64::from(pos - bin as f32);
        ((below as f64 + partial) / self.total as f64) as f32
    }

    /// The median, full scale.
    pub fn median(&self) -> f32 {
        bisect(|x| self.cdf(x) >= 0.5)
    }

    /// The median absolute deviation from `median`, full scale.
    pub fn mad(&self, median: f32) -> f32 {
        bisect(|d| self.cdf(median + d) - self.cdf(median - d) >= 0.5)
    }
}

/// The smallest x in 0..1 where a monotonic `reached(x)` holds, to well under a level.
fn bisect(reached: impl Fn(f32) -> bool) -> f32 {
    let (mut lo, mut hi) = (0.0f32, 1.0f32);
    for _ in 0..24 {
        let mid = (lo + hi) / 2.0;
        if reached(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// AutoSTF's levels for a histogram: black `clip` normalized MADs under the median, white at
/// full scale, and midtones that put the median at `target`. A picture already brighter than
/// the target keeps linear midtones: auto never darkens.
pub fn auto_levels(histogram: &Histogram, target: f32, clip: f32) -> StretchLevels {
    if histogram.total == 0 {
        return StretchLevels::IDENTITY;
    }
    let median = histogram.median();
    let sigma = (MAD_TO_SIGMA * histogram.mad(median)).max(MIN_SIGMA);
    let black = (median - clip * sigma).clamp(0.0, 0.99);
    // Where the median lands once black is clipped; at least a level above black.
    let x0 = ((median - black) / (1.0 - black)).max(1.0 / 255.0);
    let midtones = if x0 >= target { 0.5 } else { mtf(target, x0) };
    StretchLevels { black, white: 1.0, midtones }
}

/// The levels as a lookup table on 8-bit values.
pub fn lut(levels: &StretchLevels) -> [u8; 256] {
    let mut table = [0u8; 256];
    let span = (levels.white - levels.black).max(f32::EPSILON);
    for (v, out) in table.iter_mut().enumerate() {
        let x = ((v as f32 / 255.0 - levels.black) / span).clamp(0.0, 1.0);
        *out = (mtf(levels.midtones, x) * 255.0).round() as u8;
    }
    table
}

/// Maps every luma sample through `table`, in place.
pub fn apply(table: &[u8; 256], picture: &mut I420) {
    let mut chunks = picture.y_mut().chunks_exact_mut(8);
    for c in &mut chunks {
        // Eight independent lookups per step: loads overlap instead of queueing.
        let v = [c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]].map(|x| table[x as usize]);
        c.copy_from_slice(&v);
    }
    for v in chunks.into_remainder() {
        *v = table[*v as usize];
    }
}

/// A stream's stretch, shared by the API (which sets it) and the lead encoder (which applies
/// it and says what it applied).
#[derive(Default, Debug)]
pub struct StretchControl {
    inner: Mutex<(Stretch, Option<StretchLevels>)>,
    /// Bumped on every change, so the encoder starts `auto` afresh instead of easing into it.
    generation: AtomicU64,
}

impl StretchControl {
    pub fn new(stretch: Stretch) -> Self {
        Self { inner: Mutex::new((stretch, None)), generation: AtomicU64::new(0) }
    }

    pub fn get(&self) -> Stretch {
        crate::lock(&self.inner).0
    }

    pub fn set(&self, stretch: Stretch) {
        *crate::lock(&self.inner) = (stretch, None);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// What the encoder applied to its last picture.
    pub fn applied(&self) -> Option<StretchLevels> {
        crate::lock(&self.inner).1
    }

    fn settings(&self) -> (Stretch, u64) {
        (self.get(), self.generation.load(Ordering::Relaxed))
    }

    fn record(&self, generation: u64, levels: Option<StretchLevels>) {
        let mut inner = crate::lock(&self.inner);
        // A change that came in meanwhile has cleared it; do not report the old levels.
        if self.generation.load(Ordering::Relaxed) == generation {
            inner.1 = levels;
        }
    }
}

/// The encoder's side: `auto`'s smoothed levels between frames.
#[derive(Default)]
pub struct Stretcher {
    smoothed: Option<(StretchLevels, Instant, u64)>,
}

impl Stretcher {
    /// Stretches `picture` (captured at `at`) as `control` says now.
    pub fn apply(&mut self, control: &StretchControl, picture: &mut I420, at: Instant) {
        let (stretch, generation) = control.settings();
        let levels = match stretch {
            Stretch::Off => None,
            Stretch::Manual { black, white, midtones } => Some(StretchLevels { black, white, midtones }),
            Stretch::Auto { target, clip } => Some(self.follow(auto_levels(&Histogram::of_luma(picture), target, clip), at, generation)),
        };
        if let Some(levels) = &levels {
            if *levels != StretchLevels::IDENTITY {
                apply(&lut(levels), picture);
            }
        }
        control.record(generation, levels);
    }

    /// Eases from the last levels toward `found` with time constant [`SMOOTHING`]; takes
    /// `found` as it is after a gap or a change of settings.
    fn follow(&mut self, found: StretchLevels, at: Instant, generation: u64) -> StretchLevels {
        let levels = match self.smoothed {
            Some((last, then, g)) if g == generation && at >= then && at - then < FRESH_AFTER => {
                let dt = (at - then).as_secs_f32();
                let k = 1.0 - (-dt / SMOOTHING.as_secs_f32()).exp();
                let ease = |a: f32, b: f32| a + (b - a) * k;
                StretchLevels { black: ease(last.black, found.black), white: ease(last.white, found.white), midtones: ease(last.midtones, found.midtones) }
            }
            _ => found,
        };
        self.smoothed = Some((levels, at, generation));
        levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram of a dark sky: a normal-ish background around `level` with spread `sigma`
    /// (in levels), plus a few bright stars.
    fn sky(level: f64, sigma: f64) -> Histogram {
        let mut counts = [0u32; 256];
        for (v, c) in counts.iter_mut().enumerate() {
            let z = (v as f64 - level) / sigma;
            *c = (100_000.0 * (-0.5 * z * z).exp()) as u32;
        }
        counts[250] += 500; // stars, far too few to move the median
        Histogram::from_counts(counts)
    }

    #[test]
    fn the_midtones_function_fixes_its_ends_and_maps_m_to_a_half() {
        for m in [0.05f32, 0.25, 0.5, 0.8] {
            assert_eq!(mtf(m, 0.0), 0.0);
            assert!((mtf(m, 1.0) - 1.0).abs() < 1e-6);
            assert!((mtf(m, m) - 0.5).abs() < 1e-5, "mtf({m}, {m})");
        }
        assert!((mtf(0.5, 0.3) - 0.3).abs() < 1e-6, "0.5 is linear");
        assert!(mtf(0.1, 0.3) > 0.3, "under 0.5 brightens");
        // The balance that maps x0 to t is mtf(t, x0).
        let (x0, t) = (0.04f32, 0.25f32);
        assert!((mtf(mtf(t, x0), x0) - t).abs() < 1e-5);
    }

    #[test]
    fn median_and_mad_have_sub_level_precision() {
        let h = sky(20.0, 3.0);
        assert!((h.median() * 255.0 - 20.0).abs() < 0.1, "median {}", h.median() * 255.0);
        // A normal distribution's MAD is 0.6745 sigma.
        let mad = h.mad(h.median()) * 255.0;
        assert!((mad - 0.6745 * 3.0).abs() < 0.15, "mad {mad}");
    }

    #[test]
    fn auto_puts_black_under_the_median_and_the_median_at_the_target() {
        let h = sky(20.0, 3.0);
        let l = auto_levels(&h, 0.25, 2.8);
        let sigma = 3.0 * 0.6745 * MAD_TO_SIGMA; // ~3 levels
        assert!((l.black * 255.0 - (20.0 - 2.8 * sigma)).abs() < 0.5, "black {}", l.black * 255.0);
        assert_eq!(l.white, 1.0);
        let table = lut(&l);
        assert!((i32::from(table[20]) - 64).abs() <= 1, "the median maps to a quarter: {}", table[20]);
        assert_eq!(table[(l.black * 255.0).floor() as usize], 0, "the black point goes black");
        assert_eq!(table[255], 255);
        assert!(table.windows(2).all(|w| w[0] <= w[1]), "monotonic");
        // A darker target gives a darker median.
        assert!(lut(&auto_levels(&h, 0.15, 2.8))[20] < table[20]);
    }

    #[test]
    fn auto_leaves_a_bright_picture_linear_and_a_flat_one_sane() {
        let bright = auto_levels(&sky(140.0, 20.0), 0.25, 2.8);
        assert_eq!(bright.midtones, 0.5, "never darkens");
        // One flat level (a capped lens): the floor on the spread keeps noise from going white.
        let mut counts = [0u32; 256];
        counts[12] = 1000;
        let flat = auto_levels(&Histogram::from_counts(counts), 0.25, 2.8);
        let table = lut(&flat);
        assert!(table[12] <= 70 && table[12] > 0, "the flat level lands near the target, not at white: {}", table[12]);
        assert!(table[14] < 200, "one level of noise is not blown out: {}", table[14]);
        assert_eq!(auto_levels(&Histogram::from_counts([0; 256]), 0.25, 2.8), StretchLevels::IDENTITY);
    }

    #[test]
    fn manual_levels_clip_and_bend() {
        let table = lut(&StretchLevels { black: 0.2, white: 0.6, midtones: 0.5 });
        assert_eq!(table[51], 0);
        assert_eq!(table[153], 255);
        assert!((i32::from(table[102]) - 128).abs() <= 1, "midway is half with linear midtones: {}", table[102]);
        assert_eq!(lut(&StretchLevels::IDENTITY).iter().enumerate().filter(|(v, o)| *v as u8 != **o).count(), 0);
    }

    #[test]
    fn the_stretcher_changes_luma_only_and_reports_what_it_applied() {
        let mut pic = I420::new(64, 32);
        pic.y_mut().iter_mut().enumerate().for_each(|(i, v)| *v = 10 + (i % 5) as u8);
        pic.u_mut().fill(100);
        pic.v_mut().fill(150);
        let control = StretchControl::new(Stretch::AUTO);
        Stretcher::default().apply(&control, &mut pic, Instant::now());
        let mean = pic.y().iter().map(|&v| f64::from(v)).sum::<f64>() / pic.y().len() as f64;
        assert!(mean > 40.0, "a dark picture is brightened: mean {mean}");
        assert!(pic.u().iter().all(|&v| v == 100) && pic.v().iter().all(|&v| v == 150));
        assert!(control.applied().is_some_and(|l| l.midtones < 0.5));
        control.set(Stretch::Off);
        assert_eq!(control.applied(), None, "a change clears what was applied");
        let before = pic.clone();
        Stretcher::default().apply(&control, &mut pic, Instant::now());
        assert_eq!(pic.y(), before.y(), "off leaves the picture alone");
    }

    #[test]
    fn auto_eases_toward_new_levels_and_starts_afresh_after_gaps_and_changes() {
        let control = StretchControl::new(Stretch::AUTO);
        let mut s = Stretcher::default();
        let t0 = Instant::now();
        let dark = StretchLevels { black: 0.05, white: 1.0, midtones: 0.05 };
        let light = StretchLevels { black: 0.10, white: 1.0, midtones: 0.20 };
        let (_, g) = control.settings();
        assert_eq!(s.follow(dark, t0, g), dark, "the first picture gets its own levels");
        // One frame at 25 fps later: a small step toward the new levels, not a jump.
        let next = s.follow(light, t0 + Duration::from_millis(40), g);
        assert!(next.midtones > dark.midtones && next.midtones < dark.midtones + 0.01, "eased: {}", next.midtones);
        // A second of frames later it is most of the way there.
        let mut at = t0 + Duration::from_millis(40);
        let mut l = next;
        for _ in 0..50 {
            at += Duration::from_millis(40);
            l = s.follow(light, at, g);
        }
        assert!((l.midtones - light.midtones).abs() < 0.02, "converged: {}", l.midtones);
        // A slow stream's next exposure, 10 s on, is shown with its own levels.
        assert_eq!(s.follow(dark, at + Duration::from_secs(10), g), dark);
        // So is the first picture after the settings change.
        control.set(Stretch::Auto { target: 0.2, clip: 2.8 });
        let (_, g2) = control.settings();
        assert_eq!(s.follow(light, at + Duration::from_millis(10_040), g2), light);
    }
}
