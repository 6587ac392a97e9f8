//! Sharpness figures for focusing, on a region's luma at native resolution:
//!
//! - **HFR**, the half-flux radius of the stars found: the radius around a star's centroid that
//!   holds half its flux above the local background. It shrinks as focus improves, and does
//!   not depend on how bright the star or the sky is. The figure is the median over the
//!   brightest stars.
//! - **Gradient energy**, the mean squared luma gradient, for targets without stars (the Moon,
//!   a planet, a terrestrial target): it grows as edges sharpen. It depends on the scene, so
//!   it only compares frames of one target.
//!
//! Pure: plain slices in, numbers out.

use scopecast_shared::api::Sharpness;

/// Stars measured at most (the brightest).
const MAX_STARS: usize = 50;
/// A star's peak must stand this many background sigmas over the median...
const DETECT_SIGMAS: f32 = 5.0;
/// ...and at least this many levels (a very smooth sky would otherwise let faint ripples in).
const DETECT_MIN_LEVELS: f32 = 6.0;
/// Peaks closer than this (pixels) to a brighter one are the same star (or its noise).
const SEPARATION: f32 = 10.0;
/// The largest measuring window, in pixels of radius.
const MAX_WINDOW: usize = 32;

/// Both figures for a `width x height` luma region (rows `stride` apart).
pub fn measure(luma: &[u8], width: usize, height: usize, stride: usize) -> Sharpness {
    let plane = Plane { luma, width, height, stride };
    let stars = plane.star_hfrs();
    Sharpness { hfr_px: median(&stars), stars: stars.len() as u32, gradient: plane.gradient_energy(), captured_ms: 0 }
}

fn median(values: &[f32]) -> Option<f32> {
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

struct Plane<'a> {
    luma: &'a [u8],
    width: usize,
    height: usize,
    stride: usize,
}

impl Plane<'_> {
    fn at(&self, x: usize, y: usize) -> f32 {
        f32::from(self.luma[y * self.stride + x])
    }

    /// Median and noise sigma (from the MAD) of the region, in levels.
    fn background(&self) -> (f32, f32) {
        let mut counts = [0u32; 256];
        for row in self.luma.chunks(self.stride).take(self.height) {
            for &v in &row[..self.width.min(row.len())] {
                counts[v as usize] += 1;
            }
        }
        let quantile_of = |counts: &[u32; 256], total: u32| {
            let mut seen = 0;
            counts.iter().position(|&c| {
                seen += c;
                seen * 2 >= total
            })
        };
        let total = (self.width * self.height) as u32;
        let median = quantile_of(&counts, total).unwrap_or(0);
        let mut deviations = [0u32; 256];
        for (v, &c) in counts.iter().enumerate() {
            deviations[v.abs_diff(median)] += c;
        }
        let mad = quantile_of(&deviations, total).unwrap_or(0) as f32;
        (median as f32, (1.4826 * mad).max(0.5))
    }

    /// The HFR of each star found, brightest first.
    fn star_hfrs(&self) -> Vec<f32> {
        if self.width < 8 || self.height < 8 {
            return Vec::new();
        }
        let (bg, sigma) = self.background();
        let threshold = bg + (DETECT_SIGMAS * sigma).max(DETECT_MIN_LEVELS);
        let faint = bg + 3.0 * sigma;
        // Local maxima over the threshold with some body: a hot pixel stands alone.
        let mut peaks = Vec::new();
        // Integer levels: `v > threshold` is `v > floor(threshold)`. Most pixels are sky and
        // leave at this one comparison.
        let Ok(floor) = u8::try_from(threshold.floor() as i64) else { return Vec::new() };
        for y in 2..self.height - 2 {
            let row = &self.luma[y * self.stride..y * self.stride + self.width];
            for (x, &level) in row.iter().enumerate().take(self.width - 2).skip(2) {
                if level <= floor {
                    continue;
                }
                let v = f32::from(level);
                let mut is_max = true;
                let mut body = 0;
                for (dx, dy) in [(-1i32, -1i32), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
                    let n = self.at((x as i32 + dx) as usize, (y as i32 + dy) as usize);
                    // Ties go to the first in scan order, so a flat top is one peak.
                    let before = dy < 0 || (dy == 0 && dx < 0);
                    if n > v || (before && n == v) {
                        is_max = false;
                        break;
                    }
                    body += usize::from(n > faint);
                }
                if is_max && body >= 3 {
                    peaks.push((v, x, y));
                }
            }
        }
        peaks.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut accepted: Vec<(usize, usize)> = Vec::new();
        let mut hfrs = Vec::new();
        let mut saturated = Vec::new();
        for &(v, x, y) in &peaks {
            if hfrs.len() + saturated.len() >= MAX_STARS {
                break;
            }
            let near = |&(ax, ay): &(usize, usize)| {
                let (dx, dy) = (ax as f32 - x as f32, ay as f32 - y as f32);
                dx * dx + dy * dy < SEPARATION * SEPARATION
            };
            if accepted.iter().any(near) {
                continue;
            }
            accepted.push((x, y));
            if let Some(hfr) = self.star_hfr(x, y, bg) {
                // A clipped core makes a star look wider: used only when nothing else is.
                if v >= 255.0 {
                    saturated.push(hfr);
                } else {
                    hfrs.push(hfr);
                }
            }
        }
        if hfrs.is_empty() {
            saturated
        } else {
            hfrs
        }
    }

    /// One star's half-flux radius: a first look in a small window, then again in a window
    /// sized to it, with the background from a ring just outside.
    fn star_hfr(&self, x: usize, y: usize, bg: f32) -> Option<f32> {
        let first = self.half_flux_radius(x, y, 8, bg)?;
        let window = ((3.0 * first + 3.0).ceil() as usize).clamp(6, MAX_WINDOW);
        let local_bg = self.ring_median(x, y, window).unwrap_or(bg);
        self.half_flux_radius(x, y, window, local_bg)
    }

    /// The median of the ring of pixels 1-3 px outside `radius`.
    fn ring_median(&self, x: usize, y: usize, radius: usize) -> Option<f32> {
        let mut ring = Vec::new();
        let outer = radius + 3;
        for (px, py, r2) in self.around(x, y, outer) {
            if r2 > (radius * radius) as f32 {
                ring.push(self.at(px, py));
            }
        }
        median(&ring)
    }

    /// Pixels within `radius` of (x, y) that lie in the region, with their squared distance.
    fn around(&self, x: usize, y: usize, radius: usize) -> impl Iterator<Item = (usize, usize, f32)> + '_ {
        let (x0, x1) = (x.saturating_sub(radius), (x + radius).min(self.width - 1));
        let (y0, y1) = (y.saturating_sub(radius), (y + radius).min(self.height - 1));
        let r2max = (radius * radius) as f32;
        (y0..=y1).flat_map(move |py| (x0..=x1).map(move |px| (px, py))).filter_map(move |(px, py)| {
            let (dx, dy) = (px as f32 - x as f32, py as f32 - y as f32);
            let r2 = dx * dx + dy * dy;
            (r2 <= r2max).then_some((px, py, r2))
        })
    }

    /// The radius around the flux-weighted centroid that holds half the flux above `bg`
    /// within `radius` of (x, y); `None` for a window that touches the region's edge (the star
    /// would be cut) or holds no flux.
    fn half_flux_radius(&self, x: usize, y: usize, radius: usize, bg: f32) -> Option<f32> {
        if x < radius || y < radius || x + radius >= self.width || y + radius >= self.height {
            return None;
        }
        // Centroid from the core: positive flux within 3 px of the peak.
        let (mut sx, mut sy, mut sf) = (0.0f32, 0.0f32, 0.0f32);
        for (px, py, _) in self.around(x, y, 3) {
            let f = (self.at(px, py) - bg).max(0.0);
            sx += f * px as f32;
            sy += f * py as f32;
            sf += f;
        }
        if sf <= 0.0 {
            return None;
        }
        let (cx, cy) = (sx / sf, sy / sf);
        // Signed flux: the noise around a star averages out instead of adding up.
        let mut samples: Vec<(f32, f32)> = self
            .around(x, y, radius)
            .map(|(px, py, _)| {
                let (dx, dy) = (px as f32 - cx, py as f32 - cy);
                ((dx * dx + dy * dy).sqrt(), self.at(px, py) - bg)
            })
            .collect();
        samples.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: f32 = samples.iter().map(|s| s.1).sum();
        if total <= 0.0 {
            return None;
        }
        let mut cumulative = 0.0;
        let mut last_r = 0.0;
        for (r, f) in samples {
            let next = cumulative + f;
            if next >= total / 2.0 {
                // Between the last radius and this one, in proportion to the flux still needed.
                let part = if f > 0.0 { (total / 2.0 - cumulative) / f } else { 1.0 };
                return Some(last_r + (r - last_r) * part.clamp(0.0, 1.0));
            }
            cumulative = next;
            last_r = r;
        }
        None
    }

    /// Mean squared central-difference gradient of luma, over the interior (exact integer
    /// sums, a row at a time).
    fn gradient_energy(&self) -> f32 {
        if self.width < 3 || self.height < 3 {
            return 0.0;
        }
        let row = |y: usize| &self.luma[y * self.stride..y * self.stride + self.width];
        let mut sum = 0u64;
        for y in 1..self.height - 1 {
            let (above, here, below) = (row(y - 1), row(y), row(y + 1));
            let mut line = 0u64;
            for x in 1..self.width - 1 {
                let gx = i32::from(here[x + 1]) - i32::from(here[x - 1]);
                let gy = i32::from(below[x]) - i32::from(above[x]);
                line += (gx * gx + gy * gy) as u64;
            }
            sum += line;
        }
        (sum as f64 / ((self.width - 2) * (self.height - 2)) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// A star field: stars of Gaussian profile `sigma` (px) on a sky of level 20 with sensor
    /// noise of 2 levels and a few hot pixels; the same stars for every sigma.
    fn star_field(sigma: f32, width: usize, height: usize) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut sky = vec![20.0f32; width * height];
        for _ in 0..25 {
            let (sx, sy) = (rng.random_range(40.0..width as f32 - 40.0), rng.random_range(40.0..height as f32 - 40.0));
            // The same total flux whatever the blur: a blurred star is dimmer at its peak.
            // Unsaturated when sharp (peak 190-245 at sigma 1), still found at sigma 4 (12-15).
            let flux = rng.random_range(1_200.0..1_550.0f32);
            let peak = flux / (2.0 * std::f32::consts::PI * sigma * sigma);
            let reach = (5.0 * sigma).ceil() as i32;
            for dy in -reach..=reach {
                for dx in -reach..=reach {
                    let (px, py) = (sx as i32 + dx, sy as i32 + dy);
                    let (fx, fy) = (px as f32 - sx, py as f32 - sy);
                    sky[py as usize * width + px as usize] += peak * (-(fx * fx + fy * fy) / (2.0 * sigma * sigma)).exp();
                }
            }
        }
        for _ in 0..10 {
            let i = rng.random_range(0..sky.len());
            sky[i] = 250.0;
        }
        sky.iter()
            .map(|&v| {
                // Approximately normal noise: the sum of four uniforms.
                let noise: f32 = (0..4).map(|_| rng.random_range(-1.0..1.0f32)).sum::<f32>() * 2.0 * (3.0f32 / 4.0).sqrt();
                (v + noise).round().clamp(0.0, 255.0) as u8
            })
            .collect()
    }

    #[test]
    fn hfr_tracks_the_blur_of_a_star_field() {
        let (w, h) = (320, 240);
        let mut last = 0.0;
        for sigma in [1.0f32, 1.5, 2.0, 2.5, 3.0, 4.0] {
            let s = measure(&star_field(sigma, w, h), w, h, w);
            let hfr = s.hfr_px.unwrap_or_else(|| panic!("stars found at sigma {sigma}"));
            // A Gaussian's half-flux radius is sigma * sqrt(2 ln 2) = 1.177 sigma.
            let expected = 1.177 * sigma;
            assert!((hfr - expected).abs() < 0.2 * expected + 0.3, "sigma {sigma}: HFR {hfr}, expected about {expected}");
            assert!(hfr > last, "HFR grows with the blur: {hfr} after {last} (sigma {sigma})");
            assert!(s.stars >= 15, "sigma {sigma}: {} stars of 25 (hot pixels are not stars)", s.stars);
            last = hfr;
        }
    }

    #[test]
    fn hfr_does_not_depend_on_the_sky_or_the_stars_brightness() {
        let (w, h) = (320, 240);
        let base = measure(&star_field(2.0, w, h), w, h, w).hfr_px.expect("stars");
        let brighter_sky: Vec<u8> = star_field(2.0, w, h).iter().map(|&v| v.saturating_add(40)).collect();
        let on_bright = measure(&brighter_sky, w, h, w).hfr_px.expect("stars");
        assert!((on_bright - base).abs() < 0.15 * base, "{on_bright} vs {base}");
    }

    #[test]
    fn an_empty_sky_has_no_stars_and_hot_pixels_are_not_stars() {
        let (w, h) = (200, 150);
        let mut sky = vec![20u8; w * h];
        sky[50 * w + 60] = 255;
        sky[90 * w + 130] = 200;
        let s = measure(&sky, w, h, w);
        assert_eq!((s.hfr_px, s.stars), (None, 0));
    }

    /// A bright disk (the Moon, a planet) box-blurred `blur` times.
    fn disk(blur: usize, width: usize, height: usize) -> Vec<u8> {
        let mut v: Vec<f32> = (0..width * height)
            .map(|i| {
                let (x, y) = ((i % width) as f32 - width as f32 / 2.0, (i / width) as f32 - height as f32 / 2.0);
                let inside = x * x + y * y < 50.0 * 50.0;
                // Craters: some texture inside the disk.
                if inside {
                    150.0 + 40.0 * ((x / 5.0).sin() * (y / 7.0).cos())
                } else {
                    10.0
                }
            })
            .collect();
        for _ in 0..blur {
            let src = v.clone();
            for y in 1..height - 1 {
                for x in 1..width - 1 {
                    let mut s = 0.0;
                    for dy in 0..3 {
                        for dx in 0..3 {
                            s += src[(y + dy - 1) * width + x + dx - 1];
                        }
                    }
                    v[y * width + x] = s / 9.0;
                }
            }
        }
        v.iter().map(|&x| x.round() as u8).collect()
    }

    #[test]
    fn gradient_energy_falls_as_a_disk_blurs() {
        let (w, h) = (160, 140);
        let figures: Vec<f32> = [0, 1, 2, 4, 8].iter().map(|&b| measure(&disk(b, w, h), w, h, w).gradient).collect();
        assert!(figures.windows(2).all(|p| p[1] < p[0]), "sharper is higher: {figures:?}");
        assert!(figures[0] > 3.0 * figures[4], "{figures:?}");
    }

    #[test]
    fn a_region_inside_a_larger_picture_is_read_by_its_stride() {
        let (w, h) = (320, 240);
        let field = star_field(2.0, w, h);
        // The same field with 40 columns of junk on the right of every row.
        let stride = w + 40;
        let mut wide = vec![255u8; stride * h];
        for y in 0..h {
            wide[y * stride..y * stride + w].copy_from_slice(&field[y * w..(y + 1) * w]);
        }
        assert_eq!(measure(&wide, w, h, stride), measure(&field, w, h, w));
    }
}
