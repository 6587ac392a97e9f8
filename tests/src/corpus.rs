//! The benchmark corpus: JPEG sequences that look like what cameras send, made at run time.
//!
//! - `testsrc2`: FFmpeg's moving test source (scrolling gradients, fine text, a clock) at high
//!   JPEG quality (`-q:v 3`), as an IP camera's MJPEG.
//! - `deepsky`: a high-gain deep-sky preview ([`scopecast::media::sky::DeepSky`]): new sensor
//!   noise in every pixel of every frame, so the bitrate binds.
//! - `moon`: the Moon through turbulent air ([`scopecast::media::sky::Moon`]): every frame moves.
//! - `pattern`: the relay's own test pattern, mostly static and easy (kept to compare with
//!   earlier runs; flattering on its own).
//!
//! Scenes from the relay are JPEG-encoded at quality 90, as capture programs write previews.

use scopecast::media::jpeg::encode_i420;
use scopecast::media::scene::{Scene, SceneRenderer};
use scopecast::media::I420;
use std::process::{Command, Stdio};

pub struct Input {
    pub name: &'static str,
    pub what: &'static str,
    pub width: usize,
    pub height: usize,
    pub jpegs: Vec<Vec<u8>>,
}

impl Input {
    pub fn avg_kb(&self) -> f64 {
        self.jpegs.iter().map(Vec::len).sum::<usize>() as f64 / self.jpegs.len().max(1) as f64 / 1024.0
    }
}

/// The inputs to benchmark, `frames` frames each at `width x height`, in the order above.
/// `only` keeps the named ones (all when empty).
pub fn inputs(frames: usize, width: usize, height: usize, only: &[String]) -> anyhow::Result<Vec<Input>> {
    let wanted = |name: &str| only.is_empty() || only.iter().any(|o| o == name);
    let mut out = Vec::new();
    if wanted("testsrc2") {
        out.push(Input { name: "testsrc2", what: "FFmpeg testsrc2, MJPEG -q:v 3", width, height, jpegs: testsrc2(frames, width, height)? });
    }
    for (scene, name, what) in [
        (Scene::DeepSky, "deepsky", "deep-sky preview: noise, stars, nebula, q90"),
        (Scene::Moon, "moon", "the Moon through turbulence, q90"),
        (Scene::Pattern, "pattern", "Scopecast's test pattern, q85"),
    ] {
        if wanted(name) {
            let quality = if scene == Scene::Pattern { 85 } else { 90 };
            out.push(Input { name, what, width, height, jpegs: scene_jpegs(scene, frames, width, height, quality)? });
        }
    }
    anyhow::ensure!(!out.is_empty(), "no input matches {only:?} (testsrc2, deepsky, moon, pattern)");
    Ok(out)
}

/// Frames of a relay scene, 40 ms apart, as JPEGs.
pub fn scene_jpegs(scene: Scene, frames: usize, width: usize, height: usize, quality: i32) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut renderer = SceneRenderer::new(scene, "bench", width, height);
    let mut pic = I420::new(2, 2);
    (0..frames)
        .map(|i| {
            renderer.render(1_795_000_000_000 + i as u64 * 40, &mut pic);
            Ok(encode_i420(&pic, quality)?)
        })
        .collect()
}

/// FFmpeg's `testsrc2` encoded as MJPEG at `-q:v 3`, split into JPEGs.
pub fn testsrc2(frames: usize, width: usize, height: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", &format!("testsrc2=size={width}x{height}:rate=25")])
        .args(["-frames:v", &frames.to_string(), "-q:v", "3", "-c:v", "mjpeg", "-f", "image2pipe", "-"])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg ({e}); scripts/setup-debian.sh installs it"))?;
    anyhow::ensure!(out.status.success(), "ffmpeg testsrc2 failed: {}", String::from_utf8_lossy(&out.stderr));
    let jpegs = split_jpegs(&out.stdout);
    anyhow::ensure!(jpegs.len() == frames, "ffmpeg gave {} JPEGs, not {frames}", jpegs.len());
    Ok(jpegs)
}

/// Splits concatenated JPEGs at their end markers (FFD9 cannot occur inside entropy-coded data,
/// where FF is always stuffed, and FFmpeg writes no thumbnails).
pub fn split_jpegs(data: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut start = 0;
    while let Some(end) = memchr_eoi(&data[start..]) {
        out.push(data[start..start + end + 2].to_vec());
        start += end + 2;
    }
    out
}

fn memchr_eoi(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == [0xFF, 0xD9])
}
