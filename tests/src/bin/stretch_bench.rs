//! What the stretch costs the encoder thread per frame, beside what the frame costs anyway
//! (its JPEG decode and H.264 encode), both measured in the same run on the same pictures:
//! the camera-like corpus at 720p, and the deep sky at 4K.
//!
//! - `auto`: histogram of luma (a quarter of the pixels above 1 MP), AutoSTF levels, smoothing,
//!   the lookup table, and the pass over luma;
//! - `manual`: the lookup table and the pass over luma alone.
//!
//! `cargo run --release -p scopecast-tests --bin stretch-bench [-- --frames N --runs R]`

use scopecast::media::jpeg::JpegDecoder;
use scopecast::media::stretch::{StretchControl, Stretcher};
use scopecast::media::{Codec, EncoderSettings, VideoEncoder, I420};
use scopecast_shared::api::Stretch;
use scopecast_tests::bench::{median, thread_cpu};
use scopecast_tests::corpus;
use std::time::{Duration, Instant};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse::<usize>().ok());
    let frames = arg("--frames").unwrap_or(60);
    let runs = arg("--runs").unwrap_or(5);
    let mut inputs = corpus::inputs(frames, 1280, 720, &[])?;
    inputs.extend(corpus::inputs(frames.div_ceil(4), 3840, 2160, &["deepsky".to_owned()])?);

    let mut md = format!(
        "CPU ms per frame on the encoder thread, medians of {runs} runs of {frames} frames (a quarter of that at 4K); the frame's own cost is its JPEG decode and H.264 encode at 2 Mbit/s (8 Mbit/s at 4K), measured in the same run.\n\n"
    );
    md.push_str("| input | size | decode + encode | stretch auto | share | stretch manual | share |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for input in &inputs {
        let mut decoder = JpegDecoder::new()?;
        let pictures: Vec<I420> = input
            .jpegs
            .iter()
            .map(|j| {
                let mut p = I420::new(2, 2);
                decoder.decode(j, 1, &mut p).map(|()| p)
            })
            .collect::<Result<_, _>>()?;
        let bitrate = if input.width > 1920 { 8_000_000 } else { 2_000_000 };
        let (mut base, mut auto, mut manual) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..runs {
            base.push(per_frame(pictures.len(), || transcode(&input.jpegs, bitrate))?);
            auto.push(stretch(&pictures, Stretch::AUTO));
            manual.push(stretch(&pictures, Stretch::Manual { black: 0.05, white: 0.9, midtones: 0.2 }));
        }
        let (base, auto, manual) = (median(&base), median(&auto), median(&manual));
        md.push_str(&format!(
            "| {} | {}x{} | {base:.2} | {auto:.3} | {:.1} % | {manual:.3} | {:.1} % |\n",
            input.name,
            input.width,
            input.height,
            100.0 * auto / base,
            100.0 * manual / base
        ));
        eprintln!("{}: base {base:.2} ms, auto {auto:.3} ms, manual {manual:.3} ms", input.name);
    }
    print!("{md}");
    std::fs::create_dir_all("target/bench")?;
    std::fs::write("target/bench/stretch.md", md)?;
    Ok(())
}

/// Thread CPU ms per frame of `work` over `frames` frames.
fn per_frame(frames: usize, work: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    let before = thread_cpu();
    work()?;
    Ok((thread_cpu() - before).as_secs_f64() * 1000.0 / frames as f64)
}

/// What every frame costs anyway: the relay's JPEG decode and H.264 encode.
fn transcode(jpegs: &[Vec<u8>], bitrate_bps: u32) -> anyhow::Result<()> {
    let mut decoder = JpegDecoder::new()?;
    let mut encoder = VideoEncoder::new(Codec::H264, EncoderSettings { bitrate_bps, fps: 25.0, idr_interval_frames: 0 })?;
    let mut picture = I420::new(2, 2);
    let t0 = Instant::now();
    for (i, jpeg) in jpegs.iter().enumerate() {
        decoder.decode(jpeg, 1, &mut picture)?;
        encoder.encode(&picture, t0 + Duration::from_millis(40 * i as u64))?;
    }
    Ok(())
}

/// The stretch the lead encoder applies, CPU ms per frame. It stretches its own picture in
/// place; here each picture is copied first, and only the stretch is timed.
fn stretch(pictures: &[I420], how: Stretch) -> f64 {
    let control = StretchControl::new(how);
    let mut stretcher = Stretcher::default();
    let mut work = pictures[0].clone();
    let t0 = Instant::now();
    let mut spent = Duration::ZERO;
    for (i, picture) in pictures.iter().enumerate() {
        work.as_bytes_mut().copy_from_slice(picture.as_bytes());
        let before = thread_cpu();
        stretcher.apply(&control, &mut work, t0 + Duration::from_millis(40 * i as u64));
        spent += thread_cpu() - before;
    }
    spent.as_secs_f64() * 1000.0 / pictures.len() as f64
}
