//! The sky tools' arithmetic, apart from the DOM so it is tested natively: zoom and pan, the
//! mapping from a point on the player to the camera's pixels (for the focus region), the
//! histogram, the picture's age, the sharpness graph and the snapshot's file name.

/// Zoom and pan of the picture: a CSS `translate(x, y) scale(scale)` (origin top left) of the
/// layer that holds it, inside a box of the player's size. At scale 1 the picture fits the
/// box (`object-fit: contain`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Zoom {
    pub scale: f64,
    pub x: f64,
    pub y: f64,
}

impl Default for Zoom {
    fn default() -> Self {
        Self { scale: 1.0, x: 0.0, y: 0.0 }
    }
}

/// Zoom limits: from an eighth (1:1 of a picture smaller than the box) to 64x.
pub const MIN_SCALE: f64 = 0.125;
pub const MAX_SCALE: f64 = 64.0;

/// The player's box (CSS pixels) and the size of the picture shown in it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Layout {
    pub width: f64,
    pub height: f64,
    pub picture_width: f64,
    pub picture_height: f64,
}

impl Layout {
    /// The picture's rectangle in the box at scale 1 (`object-fit: contain`): left, top and
    /// box pixels per picture pixel. `None` while either size is unknown.
    pub fn contain(&self) -> Option<(f64, f64, f64)> {
        let (w, h, vw, vh) = (self.width, self.height, self.picture_width, self.picture_height);
        if w <= 0.0 || h <= 0.0 || vw <= 0.0 || vh <= 0.0 {
            return None;
        }
        let fit = (w / vw).min(h / vh);
        Some(((w - vw * fit) / 2.0, (h - vh * fit) / 2.0, fit))
    }
}

impl Zoom {
    pub fn is_fit(&self) -> bool {
        *self == Self::default()
    }

    /// Scales by `factor` about a point of the box (`at`): that point of the picture stays
    /// under it (the cursor, a pinch's centre).
    pub fn zoom_at(self, factor: f64, at: (f64, f64), box_: &Layout) -> Self {
        let scale = (self.scale * factor).clamp(MIN_SCALE, MAX_SCALE);
        let k = scale / self.scale;
        Self { scale, x: at.0 - (at.0 - self.x) * k, y: at.1 - (at.1 - self.y) * k }.clamped(box_)
    }

    /// Moves the picture by (`dx`, `dy`) box pixels.
    pub fn pan(self, dx: f64, dy: f64, box_: &Layout) -> Self {
        Self { x: self.x + dx, y: self.y + dy, ..self }.clamped(box_)
    }

    /// Keeps the box covered by the zoomed layer (no empty margins to pan into); a layer
    /// smaller than the box is centred.
    pub fn clamped(self, box_: &Layout) -> Self {
        let (w, h) = (box_.width, box_.height);
        let axis = |pos: f64, size: f64| {
            let scaled = size * self.scale;
            if scaled <= size {
                (size - scaled) / 2.0
            } else {
                pos.clamp(size - scaled, 0.0)
            }
        };
        Self { x: axis(self.x, w), y: axis(self.y, h), ..self }
    }

    /// One picture pixel on one screen pixel (`dpr` device pixels per CSS pixel), about a
    /// point of the box: what focusing by eye needs.
    pub fn one_to_one(self, at: (f64, f64), layout: &Layout, dpr: f64) -> Self {
        let Some((_, _, fit)) = layout.contain() else { return self };
        let native = 1.0 / (fit * dpr.max(0.1));
        self.zoom_at(native / self.scale, at, layout)
    }

    /// A point of the box (CSS pixels from its top left) on the unzoomed layer.
    pub fn to_layer(&self, at: (f64, f64)) -> (f64, f64) {
        ((at.0 - self.x) / self.scale, (at.1 - self.y) / self.scale)
    }

    /// A point of the box in the picture's pixels, or `None` outside the picture.
    pub fn to_picture(&self, at: (f64, f64), layout: &Layout) -> Option<(f64, f64)> {
        let (x, y) = self.to_picture_unbounded(at, layout)?;
        ((0.0..layout.picture_width).contains(&x) && (0.0..layout.picture_height).contains(&y)).then_some((x, y))
    }

    /// As [`Zoom::to_picture`], for points outside the picture too (a box dragged past its
    /// edge); `None` only while the sizes are unknown.
    pub fn to_picture_unbounded(&self, at: (f64, f64), layout: &Layout) -> Option<(f64, f64)> {
        let (left, top, fit) = layout.contain()?;
        let (lx, ly) = self.to_layer(at);
        Some(((lx - left) / fit, (ly - top) / fit))
    }

    /// The CSS transform of the picture's layer.
    pub fn css(&self) -> String {
        format!("translate({:.2}px, {:.2}px) scale({:.5})", self.x, self.y, self.scale)
    }
}

/// What the pointers on the picture do: one drags (a pan, or a focus box), two pinch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gesture {
    pointers: Vec<(i32, (f64, f64))>,
    start: Option<(f64, f64)>,
    /// Moved past [`CLICK_SLOP`], or pinched: not a click.
    dragged: bool,
}

/// A press that moves less than this (CSS pixels) is a click.
pub const CLICK_SLOP: f64 = 4.0;

/// A gesture ended: where it started and ended, and whether it was a drag (else a click).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Release {
    pub from: (f64, f64),
    pub to: (f64, f64),
    pub dragged: bool,
}

/// One pointer move's meaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    None,
    /// One pointer dragged: from where it went down, where it is, and the move since last.
    Drag {
        from: (f64, f64),
        to: (f64, f64),
        delta: (f64, f64),
    },
    /// Two pointers: their spread changed by `factor` about their midpoint.
    Pinch {
        factor: f64,
        at: (f64, f64),
    },
}

impl Gesture {
    pub fn down(&mut self, id: i32, at: (f64, f64)) {
        self.pointers.retain(|p| p.0 != id);
        self.pointers.push((id, at));
        if self.pointers.len() == 1 {
            self.start = Some(at);
            self.dragged = false;
        } else {
            self.dragged = true;
        }
    }

    pub fn moved(&mut self, id: i32, at: (f64, f64)) -> Step {
        let before = self.spread();
        let Some(p) = self.pointers.iter_mut().find(|p| p.0 == id) else { return Step::None };
        let last = std::mem::replace(&mut p.1, at);
        match (self.pointers.as_slice(), self.start) {
            ([_], Some(from)) => {
                self.dragged |= (at.0 - from.0).hypot(at.1 - from.1) > CLICK_SLOP;
                if !self.dragged {
                    return Step::None;
                }
                Step::Drag { from, to: at, delta: (at.0 - last.0, at.1 - last.1) }
            }
            ([a, b, ..], _) => match (before, self.spread()) {
                (Some(old), Some(new)) if old > 0.0 => Step::Pinch { factor: new / old, at: ((a.1 .0 + b.1 .0) / 2.0, (a.1 .1 + b.1 .1) / 2.0) },
                _ => Step::None,
            },
            _ => Step::None,
        }
    }

    /// A pointer lifted. When it was the last: the whole gesture.
    pub fn up(&mut self, id: i32, at: (f64, f64)) -> Option<Release> {
        let had = self.pointers.len();
        self.pointers.retain(|p| p.0 != id);
        if had == 0 || !self.pointers.is_empty() {
            return None;
        }
        let from = self.start.take()?;
        Some(Release { from, to: at, dragged: self.dragged })
    }

    fn spread(&self) -> Option<f64> {
        match self.pointers.as_slice() {
            [a, b, ..] => Some((a.1 .0 - b.1 .0).hypot(a.1 .1 - b.1 .1)),
            _ => None,
        }
    }
}

/// Luma histogram (BT.601 weights) of RGBA pixels.
pub fn histogram(rgba: &[u8]) -> [u32; 256] {
    let mut counts = [0u32; 256];
    for px in rgba.chunks_exact(4) {
        let y = (77 * u32::from(px[0]) + 150 * u32::from(px[1]) + 29 * u32::from(px[2]) + 128) >> 8;
        counts[y.min(255) as usize] += 1;
    }
    counts
}

/// The level under which half the samples lie.
pub fn median(counts: &[u32; 256]) -> u8 {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut seen = 0u64;
    counts
        .iter()
        .position(|&c| {
            seen += u64::from(c);
            seen * 2 >= total
        })
        .unwrap_or(0) as u8
}

/// Bar heights (0..=1) of `bins` bins: log-scaled, so the faint tail of a sky histogram (the
/// stars) shows beside its huge background peak.
pub fn bars(counts: &[u32; 256], bins: usize) -> Vec<f64> {
    let bins = bins.clamp(1, 256);
    let per = 256usize.div_ceil(bins);
    let sums: Vec<f64> = counts.chunks(per).map(|c| c.iter().map(|&v| f64::from(v)).sum::<f64>()).collect();
    let top = sums.iter().copied().fold(0.0, f64::max);
    if top <= 0.0 {
        return vec![0.0; sums.len()];
    }
    sums.iter().map(|&s| if s > 0.0 { (1.0 + s).ln() / (1.0 + top).ln() } else { 0.0 }).collect()
}

/// How old the shown picture is, from the relay's `frame` events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PictureAge {
    /// The newest frame's capture time (the relay's clock) and its age when told.
    captured_ms: u64,
    /// The local monotonic time the event came, less the frame's age then: the frame's
    /// capture time on the local clock.
    local_capture_ms: Option<f64>,
    /// The time between the last two frames told, when both were new (a slow stream's frame
    /// interval).
    interval_ms: Option<u64>,
}

/// Pictures younger than this have no age shown: a live stream's age is its latency.
pub const AGE_SHOWN_FROM_MS: f64 = 2_000.0;

impl PictureAge {
    /// A `frame` event came at local time `now` (ms, monotonic).
    pub fn on_frame(&mut self, captured_ms: u64, age_ms: u64, now: f64) {
        if captured_ms <= self.captured_ms {
            return;
        }
        if self.captured_ms > 0 {
            self.interval_ms = Some(captured_ms - self.captured_ms);
        }
        self.captured_ms = captured_ms;
        self.local_capture_ms = Some(now - age_ms as f64);
    }

    pub fn age_ms(&self, now: f64) -> Option<f64> {
        self.local_capture_ms.map(|t| (now - t).max(0.0))
    }

    /// Share of the expected interval gone (0..=1), for a stream slower than one frame in two
    /// seconds; `None` for faster ones or before two frames.
    pub fn progress(&self, now: f64) -> Option<f64> {
        let interval = self.interval_ms.filter(|&i| i as f64 >= AGE_SHOWN_FROM_MS)? as f64;
        Some((self.age_ms(now)? / interval).min(1.0))
    }

    /// "new frame 3 s ago", when the picture is old enough to say so.
    pub fn text(&self, now: f64) -> Option<String> {
        let age = self.age_ms(now).filter(|&a| a >= AGE_SHOWN_FROM_MS)? / 1000.0;
        Some(if age < 120.0 {
            format!("new frame {:.0} s ago", age.floor())
        } else if age < 7_200.0 {
            format!("new frame {:.0} min ago", (age / 60.0).floor())
        } else {
            format!("new frame {:.0} h ago", (age / 3_600.0).floor())
        })
    }

    pub fn captured_ms(&self) -> u64 {
        self.captured_ms
    }
}

/// An SVG polyline's points for `values` (oldest first) in a `w x h` box, scaled between their
/// minimum and maximum (a flat series is drawn mid-height).
pub fn sparkline(values: &[f64], w: f64, h: f64) -> String {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return String::new();
    }
    let (lo, hi) = finite.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let step = if finite.len() > 1 { w / (finite.len() - 1) as f64 } else { 0.0 };
    finite
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let y = if hi > lo { h - (v - lo) / (hi - lo) * h } else { h / 2.0 };
            format!("{:.1},{:.1}", i as f64 * step, y)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The snapshot's file name: the stream's name and its capture time (an ISO 8601 UTC time as
/// `Date.toISOString` gives it), with characters file systems refuse replaced.
pub fn snapshot_name(stream: &str, iso_time: &str) -> String {
    let safe = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' }).collect::<String>();
    format!("{}-{}.jpg", safe(stream), safe(iso_time))
}

/// `X-Timestamp` (Unix seconds with a fraction) as Unix ms.
pub fn timestamp_ms(header: &str) -> Option<f64> {
    let secs: f64 = header.trim().parse().ok()?;
    (secs.is_finite() && secs > 0.0).then_some(secs * 1000.0)
}

/// A box drawn from one corner to the other (either order), as a region of at least `min`
/// pixels a side: (x, y, width, height).
pub fn region(a: (f64, f64), b: (f64, f64), min: f64) -> (u32, u32, u32, u32) {
    let (x0, x1) = (a.0.min(b.0), a.0.max(b.0));
    let (y0, y1) = (a.1.min(b.1), a.1.max(b.1));
    let (w, h) = ((x1 - x0).max(min), (y1 - y0).max(min));
    (x0.max(0.0).round() as u32, y0.max(0.0).round() as u32, w.round() as u32, h.round() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(width: f64, height: f64, picture_width: f64, picture_height: f64) -> Layout {
        Layout { width, height, picture_width, picture_height }
    }

    #[test]
    fn the_point_under_the_cursor_stays_under_it_while_zooming() {
        let l = layout(800.0, 450.0, 1600.0, 900.0);
        let z = Zoom::default();
        let before = z.to_picture((200.0, 100.0), &l).expect("inside");
        let z = z.zoom_at(4.0, (200.0, 100.0), &l);
        let after = z.to_picture((200.0, 100.0), &l).expect("inside");
        assert!((before.0 - after.0).abs() < 1e-9 && (before.1 - after.1).abs() < 1e-9, "{before:?} {after:?}");
        assert_eq!(z.scale, 4.0);
        // A point elsewhere now covers a quarter of the distance.
        let far = z.to_picture((600.0, 300.0), &l).expect("inside");
        assert!((far.0 - (before.0 + 400.0 * 2.0 / 4.0)).abs() < 1e-9, "{far:?}");
    }

    #[test]
    fn one_pointer_clicks_or_drags_and_two_pinch() {
        let mut g = Gesture::default();
        g.down(1, (10.0, 10.0));
        assert_eq!(g.moved(1, (12.0, 11.0)), Step::None, "within the slop");
        assert_eq!(g.up(1, (12.0, 11.0)), Some(Release { from: (10.0, 10.0), to: (12.0, 11.0), dragged: false }), "a click");
        g.down(1, (10.0, 10.0));
        assert_eq!(g.moved(1, (30.0, 10.0)), Step::Drag { from: (10.0, 10.0), to: (30.0, 10.0), delta: (20.0, 0.0) });
        assert_eq!(g.moved(1, (35.0, 12.0)), Step::Drag { from: (10.0, 10.0), to: (35.0, 12.0), delta: (5.0, 2.0) });
        assert_eq!(g.up(1, (35.0, 12.0)), Some(Release { from: (10.0, 10.0), to: (35.0, 12.0), dragged: true }));
        g.down(1, (0.0, 0.0));
        g.down(2, (100.0, 0.0));
        assert_eq!(g.moved(2, (200.0, 0.0)), Step::Pinch { factor: 2.0, at: (100.0, 0.0) });
        assert_eq!(g.up(2, (200.0, 0.0)), None, "one finger still down");
        assert_eq!(g.up(1, (0.0, 0.0)), Some(Release { from: (0.0, 0.0), to: (0.0, 0.0), dragged: true }), "a pinch is no click");
        assert_eq!(g.up(1, (0.0, 0.0)), None);
        assert_eq!(g.moved(7, (0.0, 0.0)), Step::None, "unknown pointer");
    }

    #[test]
    fn panning_never_uncovers_the_box_and_a_small_layer_is_centred() {
        let l = layout(800.0, 450.0, 1600.0, 900.0);
        let z = Zoom::default().zoom_at(2.0, (400.0, 225.0), &l);
        assert_eq!(z.pan(10_000.0, 10_000.0, &l), Zoom { scale: 2.0, x: 0.0, y: 0.0 });
        assert_eq!(z.pan(-10_000.0, -10_000.0, &l), Zoom { scale: 2.0, x: -800.0, y: -450.0 });
        let small = Zoom::default().zoom_at(0.5, (0.0, 0.0), &l);
        assert_eq!(small, Zoom { scale: 0.5, x: 200.0, y: 112.5 });
        assert_eq!(Zoom::default().zoom_at(1e6, (0.0, 0.0), &l).scale, MAX_SCALE);
    }

    #[test]
    fn one_to_one_puts_a_picture_pixel_on_a_device_pixel() {
        // A 4K picture in an 800 px wide box at fit is 4.8 picture pixels per CSS pixel.
        let l = layout(800.0, 450.0, 3840.0, 2160.0);
        let z = Zoom::default().one_to_one((400.0, 225.0), &l, 1.0);
        assert!((z.scale - 4.8).abs() < 1e-9, "{z:?}");
        // On a 2x screen, half that; a 640x360 picture in a 1280x720 box is shrunk.
        assert!((Zoom::default().one_to_one((400.0, 225.0), &l, 2.0).scale - 2.4).abs() < 1e-9);
        assert!((Zoom::default().one_to_one((0.0, 0.0), &layout(1280.0, 720.0, 640.0, 360.0), 1.0).scale - 0.5).abs() < 1e-9);
        // The point zoomed about stays where it was.
        let c = z.to_picture((400.0, 225.0), &l).expect("inside");
        assert!((c.0 - 1920.0).abs() < 1e-6 && (c.1 - 1080.0).abs() < 1e-6, "{c:?}");
    }

    #[test]
    fn points_map_to_picture_pixels_through_letterboxing() {
        // A 4:3 picture in a 16:9 box: bars left and right.
        let (z, l) = (Zoom::default(), layout(800.0, 450.0, 640.0, 480.0));
        assert_eq!(z.to_picture((50.0, 200.0), &l), None, "on the bar");
        // Outside, for a box dragged past the edge: 50 box px left of the picture, at 0.9375 box
        // px per picture px.
        assert_eq!(z.to_picture_unbounded((50.0, 0.0), &l), Some((-50.0 / 0.9375, 0.0)));
        let (x, y) = z.to_picture((400.0, 225.0), &l).expect("centre");
        assert!((x - 320.0).abs() < 1e-9 && (y - 240.0).abs() < 1e-9);
        let (x, _) = z.to_picture((100.0, 0.0), &l).expect("left edge");
        assert!(x.abs() < 1e-9);
        assert_eq!(layout(0.0, 450.0, 640.0, 480.0).contain(), None);
    }

    #[test]
    fn histograms_count_luma_and_draw_the_faint_tail() {
        let mut rgba = Vec::new();
        for _ in 0..999 {
            rgba.extend_from_slice(&[20, 20, 20, 255]);
        }
        rgba.extend_from_slice(&[255, 255, 255, 255]);
        let h = histogram(&rgba);
        assert_eq!((h[20], h[255], h.iter().sum::<u32>()), (999, 1, 1000));
        assert_eq!(median(&h), 20);
        assert_eq!(histogram(&[255, 0, 0, 255])[77], 1, "red is dark in luma");
        let b = bars(&h, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(b[5], 1.0);
        assert!(b[63] > 0.05, "one bright pixel still shows: {}", b[63]);
        assert!(bars(&[0; 256], 64).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn the_age_counts_from_capture_on_the_relays_clock_and_progresses_toward_the_next_frame() {
        let mut age = PictureAge::default();
        assert_eq!(age.text(0.0), None);
        // Told 300 ms after capture, at local time 10 s (the clocks need not agree).
        age.on_frame(1_700_000_000_000, 300, 10_000.0);
        assert_eq!(age.age_ms(10_000.0), Some(300.0));
        assert_eq!(age.text(11_000.0), None, "young pictures say nothing");
        assert_eq!(age.text(13_400.0).as_deref(), Some("new frame 3 s ago"));
        assert_eq!(age.progress(13_400.0), None, "one frame gives no interval");
        age.on_frame(1_700_000_005_000, 0, 15_000.0);
        assert_eq!(age.progress(17_500.0), Some(0.5));
        assert_eq!(age.progress(30_000.0), Some(1.0));
        assert_eq!(age.text(15_000.0 + 600_000.0).as_deref(), Some("new frame 10 min ago"));
        // The same frame told again (a reconnect) changes nothing.
        age.on_frame(1_700_000_005_000, 9_000, 20_000.0);
        assert_eq!(age.age_ms(20_000.0), Some(5_000.0));
        // A fast stream has no progress bar.
        age.on_frame(1_700_000_005_500, 0, 20_500.0);
        assert_eq!(age.progress(20_600.0), None);
    }

    #[test]
    fn sparklines_span_the_box() {
        assert_eq!(sparkline(&[2.0, 4.0, 3.0], 100.0, 20.0), "0.0,20.0 50.0,0.0 100.0,10.0");
        assert_eq!(sparkline(&[1.0], 100.0, 20.0), "0.0,10.0");
        assert_eq!(sparkline(&[], 100.0, 20.0), "");
    }

    #[test]
    fn snapshot_names_carry_the_capture_time_and_no_path() {
        assert_eq!(snapshot_name("m42", "2026-12-04T18:47:52.123Z"), "m42-2026-12-04T18-47-52.123Z.jpg");
        assert_eq!(snapshot_name("../a b", "x"), "..-a-b-x.jpg");
        assert_eq!(timestamp_ms("1764874072.123"), Some(1_764_874_072_123.0));
        assert_eq!(timestamp_ms("nope"), None);
    }

    #[test]
    fn drawn_boxes_become_regions_either_way() {
        assert_eq!(region((300.0, 200.0), (100.0, 50.0), 32.0), (100, 50, 200, 150));
        assert_eq!(region((10.0, 10.0), (12.0, 11.0), 32.0), (10, 10, 32, 32));
    }
}
