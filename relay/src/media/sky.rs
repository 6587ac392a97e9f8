//! Synthetic telescope pictures: what a camera on a telescope really sends, for benchmarks,
//! tests and a relay without a camera (`test:deepsky`, `test:moon`).
//!
//! - [`DeepSky`]: a dark sky at high gain. Sensor noise in every pixel and both chroma planes
//!   (new every frame), a few hundred dim stars and some bright ones on a Gaussian seeing
//!   profile, a faint coloured nebula, a light-pollution gradient, hot pixels fixed to the
//!   sensor, and a slow drift of the sky across it (tracking error).
//! - [`Moon`]: a bright disk of maria and craters lit from the side (shadows near the
//!   terminator are where the fine detail is), seen through turbulent air: every frame the
//!   picture is displaced by a new field of small waves, tip-tilt wanders, and the seeing blurs
//!   parts of the disk more than others.
//!
//! Both carry the timecode strip of `shared/timecode.md` in their top band, so latency can be
//! read off them like off the test pattern. Both are deterministic for a given seed and frame.
//! Noise comes from a table of Gaussian samples indexed by a xorshift generator: drawing fresh
//! Gaussian numbers for a million pixels per frame would cost more than the encode.

use super::i420::I420;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use scopecast_shared::timecode::{self, Timecode};

/// Fast per-pixel Gaussian noise: standard normal samples from a fixed table.
struct Noise {
    table: Vec<f32>,
    state: u64,
}

impl Noise {
    const TABLE: usize = 1 << 16;

    fn new(rng: &mut StdRng) -> Self {
        let table = (0..Self::TABLE).map(|_| gaussian(rng) as f32).collect();
        Self { table, state: rng.random::<u64>() | 1 }
    }

    /// The next standard normal sample.
    #[inline]
    fn next(&mut self) -> f32 {
        // xorshift64*: fast, and far more than random enough for sensor noise.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        self.table[(r >> 48) as usize]
    }
}

/// A standard normal sample (Box-Muller).
fn gaussian(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn to_u8(v: f32) -> u8 {
    v.clamp(0.0, 255.0) as u8
}

struct Star {
    x: f32,
    y: f32,
    /// Peak brightness above the sky, in luma steps (bright stars saturate).
    peak: f32,
    /// Chroma offsets: stars have colours, from blue-white to orange.
    u: f32,
    v: f32,
}

/// A deep-sky frame as a live-stacking or high-gain preview shows it. See the module docs.
pub struct DeepSky {
    width: usize,
    height: usize,
    stars: Vec<Star>,
    /// Sky background with the nebula, one value per pixel of a canvas a little larger than
    /// the frame (so the drift never runs off it), luma and chroma.
    sky_y: Vec<f32>,
    sky_u: Vec<f32>,
    sky_v: Vec<f32>,
    canvas_w: usize,
    hot: Vec<(usize, u8)>,
    /// Seeing: the Gaussian sigma of a star, in pixels.
    sigma: f32,
    noise: Noise,
    frame: u64,
    acc: Vec<f32>,
}

/// How far the sky may drift before the canvas runs out, in pixels.
const DRIFT_MARGIN: usize = 64;
/// Drift per frame (pixels): about a pixel every 25 frames, as a slightly misaligned mount.
const DRIFT: (f32, f32) = (0.04, 0.015);

impl DeepSky {
    /// `width` and `height` are rounded down to even numbers, minimum 128x96.
    pub fn new(width: usize, height: usize, seed: u64) -> Self {
        let (w, h) = ((width & !1).max(128), (height & !1).max(96));
        let mut rng = StdRng::seed_from_u64(seed);
        let (cw, chh) = (w + 2 * DRIFT_MARGIN, h + 2 * DRIFT_MARGIN);
        // Many faint stars, few bright ones: magnitudes uniform over 7 steps give a power law.
        let count = (w * h / 3000).max(40);
        let stars = (0..count)
            .map(|_| {
                let mag: f32 = rng.random_range(0.0..7.0);
                let warmth: f32 = rng.random_range(-1.0..1.0);
                Star {
                    x: rng.random_range(0.0..cw as f32),
                    y: rng.random_range(0.0..chh as f32),
                    peak: 400.0 * 10f32.powf(-0.4 * mag),
                    u: -6.0 * warmth,
                    v: 8.0 * warmth,
                }
            })
            .collect();
        // Nebula: a few large soft blobs, reddish (H-alpha) and a little blue (OIII).
        let blobs: Vec<(f32, f32, f32, f32, f32)> = (0..6)
            .map(|_| {
                let r = rng.random_range(0.08..0.25) * h as f32;
                (rng.random_range(0.0..cw as f32), rng.random_range(0.0..chh as f32), r, rng.random_range(4.0..12.0), rng.random_range(-0.3..1.0))
            })
            .collect();
        let (mut sky_y, mut sky_u, mut sky_v) = (vec![0f32; cw * chh], vec![0f32; cw * chh], vec![0f32; cw * chh]);
        for y in 0..chh {
            for x in 0..cw {
                // Light pollution: brighter towards one corner.
                let mut l = 24.0 + 8.0 * (x as f32 / cw as f32) + 5.0 * (y as f32 / chh as f32);
                let (mut u, mut v) = (0.0, 2.0 * (x as f32 / cw as f32));
                for &(bx, by, r, amp, red) in &blobs {
                    let d2 = ((x as f32 - bx).powi(2) + (y as f32 - by).powi(2)) / (r * r);
                    if d2 < 9.0 {
                        let k = amp * (-d2).exp();
                        l += k;
                        v += k * red;
                        u -= k * (0.4 - red).max(0.0);
                    }
                }
                let i = y * cw + x;
                (sky_y[i], sky_u[i], sky_v[i]) = (l, u, v);
            }
        }
        let hot = (0..(w * h / 20_000).max(8)).map(|_| (rng.random_range(0..w * h), rng.random_range(160..=255))).collect();
        let sigma = rng.random_range(1.1..1.5);
        Self { width: w, height: h, stars, sky_y, sky_u, sky_v, canvas_w: cw, hot, sigma, noise: Noise::new(&mut rng), frame: 0, acc: Vec::new() }
    }

    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Draws the next frame into `out`, stamped with `unix_ms`.
    pub fn render(&mut self, unix_ms: u64, out: &mut I420) {
        self.frame += 1;
        let (w, h, cw) = (self.width, self.height, self.canvas_w);
        out.reshape(w, h);
        // The drift bounces within the margin, so a long run stays on the canvas.
        let wander = |speed: f32| {
            let span = 2.0 * (DRIFT_MARGIN as f32 - 8.0);
            let t = (self.frame as f32 * speed) % (2.0 * span);
            (if t > span { 2.0 * span - t } else { t }) - span / 2.0
        };
        let (dx, dy) = (wander(DRIFT.0), wander(DRIFT.1));
        let (ox, oy) = ((DRIFT_MARGIN as f32 + dx).round() as usize, (DRIFT_MARGIN as f32 + dy).round() as usize);
        self.acc.resize(w * h, 0.0);
        for y in 0..h {
            let src = &self.sky_y[(y + oy) * cw + ox..(y + oy) * cw + ox + w];
            self.acc[y * w..(y + 1) * w].copy_from_slice(src);
        }
        // Stars, on a Gaussian profile at their sub-pixel position.
        let two_s2 = 2.0 * self.sigma * self.sigma;
        let reach = (self.sigma * 3.5).ceil() as isize;
        let (fx, fy) = (DRIFT_MARGIN as f32 + dx, DRIFT_MARGIN as f32 + dy);
        for s in &self.stars {
            let (sx, sy) = (s.x - fx, s.y - fy);
            if sx < -4.0 || sy < -4.0 || sx > w as f32 + 4.0 || sy > h as f32 + 4.0 {
                continue;
            }
            let (px, py) = (sx.round() as isize, sy.round() as isize);
            for yy in (py - reach).max(0)..(py + reach + 1).min(h as isize) {
                for xx in (px - reach).max(0)..(px + reach + 1).min(w as isize) {
                    let d2 = (xx as f32 - sx).powi(2) + (yy as f32 - sy).powi(2);
                    self.acc[yy as usize * w + xx as usize] += s.peak * (-d2 / two_s2).exp();
                }
            }
        }
        // High gain: noise on top of everything, then the hot pixels the sensor always has.
        for (o, a) in out.y_mut().iter_mut().zip(&self.acc) {
            *o = to_u8(a + 6.0 * self.noise.next());
        }
        for &(i, v) in &self.hot {
            out.y_mut()[i] = v;
        }
        let (ocw, och) = (out.chroma_width(), out.chroma_height());
        let (_, us, vs) = out.planes_mut();
        for cy in 0..och {
            for cx in 0..ocw {
                let si = (2 * cy + oy) * cw + 2 * cx + ox;
                us[cy * ocw + cx] = to_u8(128.0 + self.sky_u[si] + 3.5 * self.noise.next());
                vs[cy * ocw + cx] = to_u8(128.0 + self.sky_v[si] + 3.5 * self.noise.next());
            }
        }
        for s in self.stars.iter().filter(|s| s.peak > 40.0) {
            let (sx, sy) = ((s.x - fx) / 2.0, (s.y - fy) / 2.0);
            if sx >= 0.0 && sy >= 0.0 && (sx as usize) < ocw && (sy as usize) < och {
                let i = sy as usize * ocw + sx as usize;
                out.u_mut()[i] = to_u8(f32::from(out.u()[i]) + s.u);
                out.v_mut()[i] = to_u8(f32::from(out.v()[i]) + s.v);
            }
        }
        stamp(out, self.frame, unix_ms);
    }
}

/// The Moon through turbulent air. See the module docs.
pub struct Moon {
    width: usize,
    height: usize,
    /// The lit disk, sharp and as seeing blurs it, on a square texture of side `tex`.
    sharp: Vec<f32>,
    soft: Vec<f32>,
    tex: usize,
    radius: f32,
    waves: Vec<Wave>,
    tilt: (f32, f32),
    rng: StdRng,
    noise: Noise,
    frame: u64,
    /// Displacement and seeing on a coarse grid, recomputed each frame.
    grid: Vec<(f32, f32, f32)>,
}

struct Wave {
    kx: f32,
    ky: f32,
    amp: f32,
    phase: f32,
    speed: f32,
}

/// Coarse grid step for the turbulence field (pixels); it is smooth at this scale.
const GRID: usize = 16;

impl Moon {
    /// `width` and `height` are rounded down to even numbers, minimum 128x96.
    pub fn new(width: usize, height: usize, seed: u64) -> Self {
        let (w, h) = ((width & !1).max(128), (height & !1).max(96));
        let mut rng = StdRng::seed_from_u64(seed);
        let radius = 0.44 * h.min(w) as f32;
        let tex = (2.0 * radius) as usize + 16;
        let c = tex as f32 / 2.0;
        // Height field: craters of power-law sizes (a bowl with a raised rim), on gentle hills.
        let mut height = vec![0f32; tex * tex];
        let craters = (radius * radius / 90.0) as usize;
        for _ in 0..craters {
            let r: f32 = 2.0 + (radius / 7.0) * rng.random::<f32>().powi(4);
            let (cx, cy) = (rng.random_range(0.0..tex as f32), rng.random_range(0.0..tex as f32));
            let depth = 0.2 * r;
            let reach = (1.6 * r) as isize;
            for y in (cy as isize - reach).max(0)..(cy as isize + reach).min(tex as isize) {
                for x in (cx as isize - reach).max(0)..(cx as isize + reach).min(tex as isize) {
                    let d = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() / r;
                    let dh = if d < 1.0 {
                        depth * (d * d - 1.0) + 0.15 * depth
                    } else if d < 1.6 {
                        0.15 * depth * (1.0 - (d - 1.0) / 0.6)
                    } else {
                        0.0
                    };
                    height[y as usize * tex + x as usize] += dh;
                }
            }
        }
        // Albedo: dark maria from a smooth random field, bright ray systems ignored.
        let maria: Vec<(f32, f32, f32)> =
            (0..7).map(|_| (rng.random_range(0.0..tex as f32), rng.random_range(0.0..tex as f32), rng.random_range(0.12..0.3) * tex as f32)).collect();
        // Light from the right, low: a waning gibbous Moon, terminator down its left side.
        let light = {
            let (lx, ly, lz) = (-0.8f32, -0.15f32, 0.55f32);
            let n = (lx * lx + ly * ly + lz * lz).sqrt();
            (lx / n, ly / n, lz / n)
        };
        let mut sharp = vec![0f32; tex * tex];
        for y in 1..tex - 1 {
            for x in 1..tex - 1 {
                let (px, py) = ((x as f32 - c) / radius, (y as f32 - c) / radius);
                let rr = px * px + py * py;
                if rr >= 1.0 {
                    continue;
                }
                let pz = (1.0 - rr).sqrt();
                // Sphere normal tilted by the local slope of the height field.
                let gx = (height[y * tex + x + 1] - height[y * tex + x - 1]) * 0.5;
                let gy = (height[(y + 1) * tex + x] - height[(y - 1) * tex + x]) * 0.5;
                let (nx, ny, nz) = (px - gx * 0.6, py - gy * 0.6, pz);
                let n = (nx * nx + ny * ny + nz * nz).sqrt();
                let lambert = ((nx * -light.0 + ny * -light.1 + nz * light.2) / n).max(0.0);
                let mare = maria.iter().map(|&(mx, my, mr)| (-((x as f32 - mx).powi(2) + (y as f32 - my).powi(2)) / (mr * mr)).exp()).sum::<f32>().min(1.0);
                let albedo = 0.75 - 0.3 * mare;
                sharp[y * tex + x] = (albedo * lambert * 1.25).min(1.0);
            }
        }
        let soft = box_blur(&box_blur(&sharp, tex, 2), tex, 2);
        let waves = (0..6)
            .map(|i| {
                let len = rng.random_range(40.0..220.0f32);
                let dir = rng.random_range(0.0..std::f32::consts::TAU);
                Wave {
                    kx: std::f32::consts::TAU / len * dir.cos(),
                    ky: std::f32::consts::TAU / len * dir.sin(),
                    amp: rng.random_range(0.4..1.6) / (1.0 + i as f32 * 0.2),
                    phase: rng.random_range(0.0..std::f32::consts::TAU),
                    speed: rng.random_range(0.3..1.2),
                }
            })
            .collect();
        let noise = Noise::new(&mut rng);
        Self { width: w, height: h, sharp, soft, tex, radius, waves, tilt: (0.0, 0.0), rng, noise, frame: 0, grid: Vec::new() }
    }

    pub fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }

    /// Draws the next frame into `out`, stamped with `unix_ms`.
    pub fn render(&mut self, unix_ms: u64, out: &mut I420) {
        self.frame += 1;
        let (w, h, tex) = (self.width, self.height, self.tex);
        out.reshape(w, h);
        // The air changes: waves move on with a random kick, tip-tilt wanders (bounded).
        for wave in &mut self.waves {
            wave.phase += wave.speed + self.rng.random_range(-0.4..0.4);
        }
        self.tilt.0 = (self.tilt.0 * 0.9 + self.rng.random_range(-0.8..0.8)).clamp(-3.0, 3.0);
        self.tilt.1 = (self.tilt.1 * 0.9 + self.rng.random_range(-0.8..0.8)).clamp(-3.0, 3.0);
        let (gw, gh) = (w / GRID + 2, h / GRID + 2);
        self.grid.clear();
        for gy in 0..gh {
            for gx in 0..gw {
                let (x, y) = ((gx * GRID) as f32, (gy * GRID) as f32);
                let (mut dx, mut dy, mut blur) = (self.tilt.0, self.tilt.1, 0.0f32);
                for (i, wave) in self.waves.iter().enumerate() {
                    let s = (wave.kx * x + wave.ky * y + wave.phase).sin() * wave.amp;
                    if i % 2 == 0 {
                        dx += s;
                    } else {
                        dy += s;
                    }
                    blur += s;
                }
                self.grid.push((dx, dy, (0.5 + 0.25 * blur).clamp(0.0, 1.0)));
            }
        }
        let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0 + 0.02 * h as f32);
        let half = tex as f32 / 2.0;
        let reach = self.radius + 6.0;
        let sample = |img: &[f32], x: f32, y: f32| -> f32 {
            let (x0, y0) = (x.floor(), y.floor());
            if x0 < 0.0 || y0 < 0.0 || x0 as usize + 1 >= tex || y0 as usize + 1 >= tex {
                return 0.0;
            }
            let (fx, fy) = (x - x0, y - y0);
            let i = y0 as usize * tex + x0 as usize;
            let top = img[i] * (1.0 - fx) + img[i + 1] * fx;
            let bottom = img[i + tex] * (1.0 - fx) + img[i + tex + 1] * fx;
            top * (1.0 - fy) + bottom * fy
        };
        for y in 0..h {
            let (gy, fy) = (y / GRID, (y % GRID) as f32 / GRID as f32);
            let row = &mut out.y_mut()[y * w..(y + 1) * w];
            let inside_rows = (y as f32 - cy).abs() < reach;
            for (x, o) in row.iter_mut().enumerate() {
                let mut v = 10.0;
                if inside_rows && (x as f32 - cx).abs() < reach {
                    let (gx, fx) = (x / GRID, (x % GRID) as f32 / GRID as f32);
                    let at = |i: usize, j: usize| self.grid[j * gw + i];
                    let mix = |a: (f32, f32, f32), b: (f32, f32, f32), t: f32| (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t, a.2 + (b.2 - a.2) * t);
                    let (dx, dy, seeing) = mix(mix(at(gx, gy), at(gx + 1, gy), fx), mix(at(gx, gy + 1), at(gx + 1, gy + 1), fx), fy);
                    let (tx, ty) = (x as f32 - cx + half + dx, y as f32 - cy + half + dy);
                    let lit = sample(&self.sharp, tx, ty) * (1.0 - seeing) + sample(&self.soft, tx, ty) * seeing;
                    v += 225.0 * lit;
                }
                *o = to_u8(v + 1.8 * self.noise.next());
            }
        }
        // A faint warm cast, as an uncalibrated colour camera gives the Moon.
        let (_, us, vs) = out.planes_mut();
        for (u, v) in us.iter_mut().zip(vs.iter_mut()) {
            *u = to_u8(126.0 + self.noise.next());
            *v = to_u8(130.0 + self.noise.next());
        }
        stamp(out, self.frame, unix_ms);
    }
}

/// A separable box blur of radius `r` on a square `size x size` image.
fn box_blur(src: &[f32], size: usize, r: usize) -> Vec<f32> {
    let n = (2 * r + 1) as f32;
    let mut tmp = vec![0f32; src.len()];
    for y in 0..size {
        for x in 0..size {
            let (a, b) = (x.saturating_sub(r), (x + r).min(size - 1));
            tmp[y * size + x] = src[y * size + a..=y * size + b].iter().sum::<f32>() / n;
        }
    }
    let mut out = vec![0f32; src.len()];
    for y in 0..size {
        for x in 0..size {
            let (a, b) = (y.saturating_sub(r), (y + r).min(size - 1));
            out[y * size + x] = (a..=b).map(|yy| tmp[yy * size + x]).sum::<f32>() / n;
        }
    }
    out
}

/// The timecode strip, on a band cleared to black with neutral chroma.
fn stamp(out: &mut I420, frame: u64, unix_ms: u64) {
    let (w, h) = (out.width, out.height);
    let band = timecode::band_height(h);
    out.y_mut()[..band * w].fill(16);
    let cw = out.chroma_width();
    out.u_mut()[..band.div_ceil(2) * cw].fill(128);
    out.v_mut()[..band.div_ceil(2) * cw].fill(128);
    timecode::draw(out.y_mut(), w, w, h, Timecode::new(frame as u16, unix_ms));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_sd(v: &[u8]) -> (f64, f64) {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n;
        (mean, var.sqrt())
    }

    #[test]
    fn deep_sky_is_a_dark_noisy_sky_with_stars_that_drift() {
        let mut sky = DeepSky::new(1280, 720, 7);
        let (mut a, mut b) = (I420::new(2, 2), I420::new(2, 2));
        sky.render(1_000, &mut a);
        for _ in 0..48 {
            sky.render(2_000, &mut b);
        }
        let band = timecode::band_height(720) * 1280;
        let (mean, sd) = mean_and_sd(&a.y()[band..]);
        assert!((20.0..45.0).contains(&mean), "a dark sky: mean luma {mean}");
        assert!(sd > 5.0, "noisy: sd {sd}");
        let bright = a.y()[band..].iter().filter(|&&v| v > 120).count();
        assert!(bright > 100, "stars: {bright} bright pixels");
        let (_, csd) = mean_and_sd(a.u());
        assert!(csd > 2.5, "chroma noise too: sd {csd}");
        // Noise is new every frame, so consecutive frames differ nearly everywhere.
        let changed = a.y()[band..].iter().zip(&b.y()[band..]).filter(|(x, y)| x != y).count();
        assert!(changed > a.y().len() / 2, "{changed} pixels changed");
        assert_eq!(timecode::read(b.y(), 1280, 1280, 720), Some(Timecode::new(49, 2_000)));
    }

    #[test]
    fn the_moon_is_a_bright_detailed_disk_that_shimmers() {
        let mut moon = Moon::new(1280, 720, 3);
        let (mut a, mut b) = (I420::new(2, 2), I420::new(2, 2));
        moon.render(1_000, &mut a);
        moon.render(1_040, &mut b);
        let at = |p: &I420, x: usize, y: usize| p.y()[y * 1280 + x];
        let disk: u64 = (300..460).flat_map(|y| (600..760).map(move |x| (x, y))).map(|(x, y)| u64::from(at(&a, x, y))).sum();
        assert!(disk / (160 * 160) > 80, "bright in the middle: {}", disk / (160 * 160));
        assert!(at(&a, 20, 700) < 40, "dark sky at the corner");
        // Surface detail: neighbouring pixels on the disk differ more than on the sky, where
        // only sensor noise varies.
        let gradient = |x0: usize, y0: usize| {
            let sum: u64 =
                (y0..y0 + 100).flat_map(|y| (x0..x0 + 100).map(move |x| (x, y))).map(|(x, y)| u64::from(at(&a, x + 1, y).abs_diff(at(&a, x, y)))).sum();
            sum as f64 / 10_000.0
        };
        let (disk_grad, sky_grad) = (gradient(600, 300), gradient(20, 500));
        assert!(disk_grad > 1.5 * sky_grad, "detail: mean gradient {disk_grad:.2} on the disk, {sky_grad:.2} on the sky");
        let band = timecode::band_height(720) * 1280;
        let changed = a.y()[band..].iter().zip(&b.y()[band..]).filter(|(x, y)| x.abs_diff(**y) > 6).count();
        assert!(changed > 20_000, "the air moves the picture every frame: {changed}");
        assert_eq!(timecode::read(b.y(), 1280, 1280, 720), Some(Timecode::new(2, 1_040)));
    }
}
