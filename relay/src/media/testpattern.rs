//! The built-in test pattern: moving content (so the encoder works as on real video), a clock,
//! the stream name, and the timecode strip of `shared/timecode.md` in the top band.

use super::i420::I420;
use font8x8::UnicodeFonts;
use scopecast_shared::timecode::{self, Timecode};

pub struct TestPattern {
    name: String,
    background: I420,
    frame: u64,
}

impl TestPattern {
    /// `width` and `height` are rounded down to even numbers, minimum 128x96.
    pub fn new(name: &str, width: usize, height: usize) -> Self {
        let (w, h) = ((width & !1).max(128), (height & !1).max(96));
        Self { name: name.to_owned(), background: background(w, h), frame: 0 }
    }

    pub fn size(&self) -> (usize, usize) {
        (self.background.width, self.background.height)
    }

    /// Frames produced so far.
    pub fn frames(&self) -> u64 {
        self.frame
    }

    /// Draws the next frame into `out`, stamped with `unix_ms` (wall clock at capture).
    pub fn render(&mut self, unix_ms: u64, out: &mut I420) {
        self.frame += 1;
        let (w, h) = self.size();
        out.clone_from(&self.background);
        let t = self.frame as f64;

        // A bright box sweeping left to right and a "star" on a Lissajous path: motion in
        // both directions, with hard edges and a soft disc.
        let band = timecode::band_height(h);
        let box_size = (h / 6).max(8) & !1;
        let span = w - box_size;
        let x = ((t * 6.0) as usize) % (2 * span);
        let x = if x > span { 2 * span - x } else { x };
        fill_rect(out, x & !1, h - box_size - h / 20, box_size, box_size, (210, 80, 170));
        let cx = w as f64 / 2.0 + (t * 0.05).sin() * w as f64 * 0.3;
        let cy = (h as f64 * 0.55) + (t * 0.07).cos() * h as f64 * 0.25;
        disc(out, cx, cy, (h / 14).max(4) as f64);

        // Text: stream name, frame number and wall clock, below the strip.
        let scale = (h / 180).max(1);
        let secs = unix_ms / 1000;
        let clock = format!("{:02}:{:02}:{:02}.{:03} UTC", secs / 3600 % 24, secs / 60 % 60, secs % 60, unix_ms % 1000);
        let top = band + 4 * scale;
        draw_text(out, &self.name, 8 * scale, top, scale * 2);
        draw_text(out, &clock, 8 * scale, top + 20 * scale, scale * 2);
        draw_text(out, &format!("frame {}  {}x{}", self.frame, w, h), 8 * scale, top + 40 * scale, scale);

        timecode::draw(out.y_mut(), w, w, h, Timecode::new(self.frame as u16, unix_ms));
    }
}

/// A static backdrop: a luma ramp with colour bars in the lower part and neutral chroma under
/// the timecode band. Computed once; each frame starts from a copy.
fn background(w: usize, h: usize) -> I420 {
    let mut pic = I420::new(w, h);
    let band = timecode::band_height(h);
    for y in band..h {
        for x in 0..w {
            pic.y_mut()[y * w + x] = 40 + ((x * 60 / w + y * 40 / h) as u8);
        }
    }
    let bars: [(u8, u8); 6] = [(128, 128), (44, 142), (156, 44), (72, 58), (184, 198), (212, 114)];
    let (cw, ch) = (pic.chroma_width(), pic.chroma_height());
    for cy in (ch * 3 / 4)..ch {
        for cx in 0..cw {
            let (u, v) = bars[cx * bars.len() / cw];
            pic.u_mut()[cy * cw + cx] = u;
            pic.v_mut()[cy * cw + cx] = v;
        }
    }
    pic
}

fn fill_rect(pic: &mut I420, x: usize, y: usize, w: usize, h: usize, (ly, u, v): (u8, u8, u8)) {
    let (pw, cw) = (pic.width, pic.chroma_width());
    let (x1, y1) = ((x + w).min(pic.width), (y + h).min(pic.height));
    for row in y..y1 {
        pic.y_mut()[row * pw + x..row * pw + x1].fill(ly);
    }
    for row in y / 2..y1 / 2 {
        pic.u_mut()[row * cw + x / 2..row * cw + x1 / 2].fill(u);
        pic.v_mut()[row * cw + x / 2..row * cw + x1 / 2].fill(v);
    }
}

fn disc(pic: &mut I420, cx: f64, cy: f64, r: f64) {
    let band = timecode::band_height(pic.height) as f64;
    let y0 = (cy - r).max(band + 2.0) as usize;
    let y1 = ((cy + r) as usize).min(pic.height - 1);
    let x0 = (cx - r).max(0.0) as usize;
    let x1 = ((cx + r) as usize).min(pic.width - 1);
    for y in y0..=y1 {
        for x in x0..=x1 {
            let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt() / r;
            if d < 1.0 {
                let width = pic.width;
                let p = &mut pic.y_mut()[y * width + x];
                *p = (*p).max((235.0 * (1.0 - d * d)) as u8);
            }
        }
    }
}

/// 8x8 bitmap text scaled by `scale`, clipped to the picture; white on the backdrop.
fn draw_text(pic: &mut I420, text: &str, x: usize, y: usize, scale: usize) {
    for (i, ch) in text.chars().enumerate() {
        let Some(glyph) = font8x8::BASIC_FONTS.get(ch) else { continue };
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits >> gx & 1 == 0 {
                    continue;
                }
                let px = x + (i * 8 + gx) * scale;
                let py = y + gy * scale;
                for dy in 0..scale {
                    let row = py + dy;
                    if row >= pic.height || px + scale > pic.width {
                        continue;
                    }
                    let width = pic.width;
                    pic.y_mut()[row * width + px..row * width + px + scale].fill(235);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_increasing_timecodes_and_move() {
        let mut p = TestPattern::new("telescope", 1280, 720);
        let mut a = I420::new(2, 2);
        let mut b = I420::new(2, 2);
        p.render(1_795_575_705_000, &mut a);
        p.render(1_795_575_705_040, &mut b);
        assert_eq!((a.width, a.height), (1280, 720));
        assert_eq!(timecode::read(a.y(), 1280, 1280, 720), Some(Timecode::new(1, 1_795_575_705_000)));
        assert_eq!(timecode::read(b.y(), 1280, 1280, 720), Some(Timecode::new(2, 1_795_575_705_040)));
        let band = timecode::band_height(720) * 1280;
        let changed = a.y()[band..].iter().zip(&b.y()[band..]).filter(|(x, y)| x != y).count();
        assert!(changed > 1000, "content moves ({changed} pixels changed)");
        assert!(a.u()[..640 * 9].iter().all(|&u| u == 128), "neutral chroma under the strip");
    }

    #[test]
    fn odd_and_tiny_sizes_are_made_valid() {
        let p = TestPattern::new("x", 321, 11);
        assert_eq!(p.size(), (320, 96));
    }
}
