//! VP8 beside H.264: the relay's two encoders on the same decoded pictures of the camera-like
//! corpus (`scopecast_tests::corpus`), same size, same bitrate, both in the same run. CPU ms
//! per frame of the whole process, all threads (libvpx runs one up to 1080p; the encode alone:
//! the JPEG decode before it is the same for both, and done before timing),
//! bytes per frame, and luma quality against the source (PSNR and SSIM of each encoder's
//! output, decoded: H.264 by openh264, VP8 by FFmpeg's decoder from an IVF file).
//!
//! `cargo run --release -p scopecast-tests --bin vp8-bench [-- --frames N --runs R --inputs deepsky,moon]`

use openh264::formats::YUVSource;
use scopecast::media::jpeg::JpegDecoder;
use scopecast::media::{Codec, EncoderSettings, VideoEncoder, I420};
use scopecast_tests::bench::{self, luma_psnr, luma_ssim, median, min_max, process_cpu};
use scopecast_tests::corpus;
use std::io::Write;
use std::process::{Command, Stdio};

const BITRATE: u32 = 2_000_000;
const FPS: f32 = 25.0;
const WIDTH: usize = 1280;
const HEIGHT: usize = 720;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let frames: usize = arg("--frames").and_then(|v| v.parse().ok()).unwrap_or(150);
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let only: Vec<String> = arg("--inputs").map(|v| v.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let inputs = corpus::inputs(frames, WIDTH, HEIGHT, &only)?;

    let mut md = format!(
        "Inputs {WIDTH}x{HEIGHT} at 25 fps, {frames} frames each, decoded once before timing; both encoders at {} kbit/s; CPU of all the encoder's threads \
         (openh264: one, Constrained Baseline, complexity low; libvpx {}: one up to 1080p, VP8 realtime, cpu-used -6, CBR). Medians of {runs} runs (range).\n\n",
        BITRATE / 1000,
        libvpx_version()
    );
    md.push_str("| input | H.264 ms/frame | VP8 ms/frame | VP8 / H.264 | KB/frame H.264 / VP8 | PSNR H.264 / VP8 | SSIM H.264 / VP8 |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    for input in &inputs {
        let pictures = decode_all(&input.jpegs)?;
        let (mut h264_ms, mut vp8_ms) = (Vec::new(), Vec::new());
        let (mut h264_out, mut vp8_out) = (Vec::new(), Vec::new());
        // Interleaved, so a change in the machine's speed hits both alike.
        for _ in 0..runs {
            let (ms, out) = encode_all(Codec::H264, &pictures)?;
            h264_ms.push(ms);
            h264_out = out;
            let (ms, out) = encode_all(Codec::Vp8, &pictures)?;
            vp8_ms.push(ms);
            vp8_out = out;
        }
        let (h, v) = (median(&h264_ms), median(&vp8_ms));
        let h264_q = h264_quality(&h264_out, &pictures)?;
        let vp8_q = vp8_quality(&vp8_out, &pictures)?;
        let kb = |out: &[Vec<u8>]| out.iter().map(Vec::len).sum::<usize>() as f64 / out.len().max(1) as f64 / 1024.0;
        eprintln!("{}: H.264 {h:.2} ms, VP8 {v:.2} ms ({:.2}x)", input.name, v / h);
        md.push_str(&format!(
            "| {} ({}) | {h:.2} {} | {v:.2} {} | **{:.2}x** | {:.1} / {:.1} | {:.1} / {:.1} dB | {:.3} / {:.3} |\n",
            input.name,
            input.what,
            range(&h264_ms),
            range(&vp8_ms),
            v / h,
            kb(&h264_out),
            kb(&vp8_out),
            h264_q.0,
            vp8_q.0,
            h264_q.1,
            vp8_q.1,
        ));
    }
    bench::report("vp8", &md);
    Ok(())
}

fn range(v: &[f64]) -> String {
    let (lo, hi) = min_max(v);
    format!("({lo:.2}-{hi:.2})")
}

fn libvpx_version() -> String {
    Command::new("pkg-config").args(["--modversion", "vpx"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

fn decode_all(jpegs: &[Vec<u8>]) -> anyhow::Result<Vec<I420>> {
    let mut dec = JpegDecoder::new()?;
    jpegs
        .iter()
        .map(|j| {
            let mut pic = I420::new(2, 2);
            dec.decode(j, 1, &mut pic)?;
            Ok(pic)
        })
        .collect()
}

/// CPU ms per frame on this thread, and the encoded frames.
fn encode_all(codec: Codec, pictures: &[I420]) -> anyhow::Result<(f64, Vec<Vec<u8>>)> {
    let mut enc = VideoEncoder::new(codec, EncoderSettings { bitrate_bps: BITRATE, fps: FPS, idr_interval_frames: 0 })?;
    let mut out = Vec::with_capacity(pictures.len());
    // Capture times 40 ms apart, as from a 25 fps camera (VP8's rate control goes by them).
    let t0 = std::time::Instant::now();
    let start = process_cpu();
    for (i, pic) in pictures.iter().enumerate() {
        let at = t0 + std::time::Duration::from_secs_f32(i as f32 / FPS);
        if let Some(f) = enc.encode(pic, at)? {
            out.push(f.bitstream.to_vec());
        }
    }
    Ok(((process_cpu() - start).as_secs_f64() * 1000.0 / pictures.len() as f64, out))
}

fn compare(got_y: &[u8], reference: &I420, psnr: &mut f64, ssim: &mut f64) {
    *psnr += luma_psnr(got_y, reference.y());
    *ssim += luma_ssim(got_y, reference.y(), reference.width, reference.height);
}

fn h264_quality(frames: &[Vec<u8>], pictures: &[I420]) -> anyhow::Result<(f64, f64)> {
    let mut decoder = openh264::decoder::Decoder::new()?;
    let (mut psnr, mut ssim, mut n) = (0.0, 0.0, 0usize);
    for (frame, reference) in frames.iter().zip(pictures) {
        let Some(yuv) = decoder.decode(frame)? else { continue };
        let (w, h, stride) = (reference.width, reference.height, yuv.strides().0);
        let got: Vec<u8> = (0..h).flat_map(|row| yuv.y()[row * stride..row * stride + w].iter().copied()).collect();
        compare(&got, reference, &mut psnr, &mut ssim);
        n += 1;
    }
    anyhow::ensure!(n + 2 >= pictures.len(), "H.264: decoded {n} of {} frames", pictures.len());
    Ok((psnr / n as f64, ssim / n as f64))
}

/// The VP8 frames in an IVF file, decoded by FFmpeg to raw I420.
fn vp8_quality(frames: &[Vec<u8>], pictures: &[I420]) -> anyhow::Result<(f64, f64)> {
    let mut ivf = Vec::new();
    ivf.extend_from_slice(b"DKIF");
    ivf.extend_from_slice(&0u16.to_le_bytes());
    ivf.extend_from_slice(&32u16.to_le_bytes());
    ivf.extend_from_slice(b"VP80");
    ivf.extend_from_slice(&(WIDTH as u16).to_le_bytes());
    ivf.extend_from_slice(&(HEIGHT as u16).to_le_bytes());
    ivf.extend_from_slice(&25u32.to_le_bytes());
    ivf.extend_from_slice(&1u32.to_le_bytes());
    ivf.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    ivf.extend_from_slice(&0u32.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        ivf.extend_from_slice(&(f.len() as u32).to_le_bytes());
        ivf.extend_from_slice(&(i as u64).to_le_bytes());
        ivf.extend_from_slice(f);
    }
    let mut child = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "ivf", "-i", "-", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg ({e}); scripts/setup-debian.sh installs it"))?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("ffmpeg stdin"))?;
    let writer = std::thread::spawn(move || stdin.write_all(&ivf));
    let out = child.wait_with_output()?;
    let _ = writer.join();
    let frame_len = WIDTH * HEIGHT * 3 / 2;
    let (mut psnr, mut ssim, mut n) = (0.0, 0.0, 0usize);
    for (raw, reference) in out.stdout.chunks_exact(frame_len).zip(pictures) {
        compare(&raw[..WIDTH * HEIGHT], reference, &mut psnr, &mut ssim);
        n += 1;
    }
    anyhow::ensure!(n + 2 >= pictures.len(), "VP8: decoded {n} of {} frames", pictures.len());
    Ok((psnr / n as f64, ssim / n as f64))
}
