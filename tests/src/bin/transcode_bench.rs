//! Transcode CPU per frame, Scopecast against FFmpeg with libx264 (`-preset ultrafast -tune
//! zerolatency`), on the camera-like corpus of `scopecast_tests::corpus`, same input, same output
//! size, same bitrate, both measured in the same run. Two ways:
//!
//! 1. **The encoder thread alone**: the relay's decode, scale and encode on this thread (its
//!    CPU clock), against FFmpeg decoding the same JPEG file and encoding it (user + system
//!    CPU of all its threads; its start-up removed by running N and 2N frames and subtracting).
//! 2. **The whole process**: the release relay pulling the corpus from an MJPEG camera over HTTP
//!    at 25 fps with one WebRTC viewer (all its threads: HTTP, decode, encode, RTP, SRTP), against
//!    FFmpeg pulling the same camera and sending RTP over UDP.
//!
//! Quality at equal output size: PSNR and SSIM of luma, both encoders' output decoded and
//! compared with the same reference (the source JPEGs decoded).
//!
//! `cargo run --release -p scopecast-tests --bin transcode-bench [-- --frames N --runs R
//!  --inputs testsrc2,deepsky --no-process]` (after `cargo build --release -p scopecast`).

use openh264::formats::YUVSource;
use scopecast::media::jpeg::JpegDecoder;
use scopecast::media::{EncoderSettings, H264Encoder, I420};
use scopecast_tests::bench::{self, luma_psnr, luma_ssim, median, min_max, thread_cpu, RelayProcess};
use scopecast_tests::camera::{self, Frames, Framing};
use scopecast_tests::corpus::{self, Input};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BITRATE: u32 = 2_000_000;
const FPS: f64 = 25.0;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let frames: usize = arg("--frames").and_then(|v| v.parse().ok()).unwrap_or(150);
    let runs: usize = arg("--runs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let only: Vec<String> = arg("--inputs").map(|v| v.split(',').map(str::to_owned).collect()).unwrap_or_default();
    let process = !args.iter().any(|a| a == "--no-process");
    let inputs = corpus::inputs(2 * frames, 1280, 720, &only)?;
    let dir = std::env::temp_dir().join(format!("scopecast-transcode-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    let mut md = format!(
        "Inputs 1280x720 at 25 fps, {frames} frames each; output the same size, H.264 at {} kbit/s; FFmpeg {} with libx264 `-preset ultrafast -tune zerolatency`. Medians of {runs} runs (range).\n\n",
        BITRATE / 1000,
        ffmpeg_version()
    );
    md.push_str("**The encoder thread alone** (CPU ms per frame):\n\n");
    md.push_str("| input | JPEG KB | Scopecast | FFmpeg libx264 | ratio | Scopecast: decode / scale / encode | KB/frame out, ours / x264 |\n");
    md.push_str("| --- | --- | --- | --- | --- | --- | --- |\n");
    let mut quality = String::from(
        "**Quality at equal size** (luma against the decoded source; higher is better):\n\n| input | Scopecast PSNR / SSIM | KB/frame | x264 PSNR / SSIM | KB/frame |\n| --- | --- | --- | --- | --- |\n",
    );
    for input in &inputs {
        let short = write_mjpeg(&dir, input, frames)?;
        let long = write_mjpeg(&dir, input, 2 * frames)?;
        let (mut ours, mut theirs, mut stages) = (Vec::new(), Vec::new(), [Vec::new(), Vec::new(), Vec::new()]);
        let (mut our_bytes, mut their_bytes) = (0, 0);
        for _ in 0..runs {
            let run = scopecast_run(&input.jpegs[..frames])?;
            ours.push(run.total_ms);
            for (all, one) in stages.iter_mut().zip(run.stage_ms) {
                all.push(one);
            }
            our_bytes = run.bytes / frames;
            let (a, _) = ffmpeg_file(&short, None)?;
            let (b, out) = ffmpeg_file(&long, None)?;
            theirs.push((b - a).as_secs_f64() * 1000.0 / frames as f64);
            their_bytes = out / (2 * frames);
        }
        let (om, fm) = (median(&ours), median(&theirs));
        let [d, s, e] = stages.map(|v| median(&v));
        eprintln!("{}: ours {om:.2} ms, FFmpeg {fm:.2} ms, {:.2}x", input.name, om / fm);
        md.push_str(&format!(
            "| {} ({}) | {:.0} | {om:.2} {} | {fm:.2} {} | **{:.2}x** | {d:.2} / {s:.2} / {e:.2} | {:.1} / {:.1} |\n",
            input.name,
            input.what,
            input.avg_kb(),
            range(&ours),
            range(&theirs),
            om / fm,
            our_bytes as f64 / 1024.0,
            their_bytes as f64 / 1024.0
        ));
        let ours_q = scopecast_quality(&input.jpegs[..frames])?;
        let out = dir.join(format!("{}-q.h264", input.name));
        let (_, x264_bytes) = ffmpeg_file(&short, Some(&out))?;
        let theirs_q = h264_quality(&std::fs::read(&out)?, &input.jpegs[..frames])?;
        quality.push_str(&format!(
            "| {} | {:.1} dB / {:.3} | {:.1} | {:.1} dB / {:.3} | {:.1} |\n",
            input.name,
            ours_q.psnr,
            ours_q.ssim,
            ours_q.bytes as f64 / frames as f64 / 1024.0,
            theirs_q.psnr,
            theirs_q.ssim,
            x264_bytes as f64 / frames as f64 / 1024.0
        ));
    }
    md.push('\n');
    md.push_str(&quality);
    if process {
        md.push_str("\n**The whole process** (CPU ms per frame of all its threads; the camera's own CPU is in neither):\n\n");
        md.push_str("| input | Scopecast relay, one WebRTC viewer | FFmpeg, HTTP in, RTP out | ratio |\n| --- | --- | --- | --- |\n");
        for input in &inputs {
            let (ours, theirs) = process_run(input, frames).await?;
            eprintln!("{} process: ours {ours:.2} ms, FFmpeg {theirs:.2} ms", input.name);
            md.push_str(&format!("| {} | {ours:.2} | {theirs:.2} | **{:.2}x** |\n", input.name, ours / theirs));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    bench::report("transcode", &md);
    Ok(())
}

fn range(v: &[f64]) -> String {
    let (lo, hi) = min_max(v);
    format!("({lo:.2}-{hi:.2})")
}

fn ffmpeg_version() -> String {
    let out = Command::new("ffmpeg").arg("-version").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    out.split_whitespace().nth(2).unwrap_or("?").to_owned()
}

fn write_mjpeg(dir: &std::path::Path, input: &Input, n: usize) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(format!("{}-{n}.mjpeg", input.name));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    for j in &input.jpegs[..n] {
        f.write_all(j)?;
    }
    Ok(path)
}

fn encoder() -> anyhow::Result<H264Encoder> {
    Ok(H264Encoder::new(EncoderSettings { bitrate_bps: BITRATE, fps: FPS as f32, idr_interval_frames: 0 })?)
}

struct Run {
    total_ms: f64,
    /// Decode, scale (nothing at equal size: kept so the column shows it is free) and encode.
    stage_ms: [f64; 3],
    bytes: usize,
}

/// The relay's per-frame work, each stage timed on this thread.
fn scopecast_run(jpegs: &[Vec<u8>]) -> anyhow::Result<Run> {
    let mut dec = JpegDecoder::new()?;
    let mut enc = encoder()?;
    let mut pic = I420::new(2, 2);
    let mut stages = [Duration::ZERO; 3];
    let mut bytes = 0;
    let start = thread_cpu();
    for jpeg in jpegs {
        let t0 = thread_cpu();
        dec.decode(jpeg, 1, &mut pic)?;
        let t1 = thread_cpu();
        if let Some(f) = enc.encode(&pic)? {
            bytes += f.bitstream.len();
        }
        let t2 = thread_cpu();
        stages[0] += t1 - t0;
        stages[2] += t2 - t1;
    }
    let per_frame = |d: Duration| d.as_secs_f64() * 1000.0 / jpegs.len() as f64;
    Ok(Run { total_ms: per_frame(thread_cpu() - start), stage_ms: stages.map(per_frame), bytes })
}

struct Quality {
    psnr: f64,
    ssim: f64,
    bytes: usize,
}

fn scopecast_quality(jpegs: &[Vec<u8>]) -> anyhow::Result<Quality> {
    let mut dec = JpegDecoder::new()?;
    let mut enc = encoder()?;
    let mut pic = I420::new(2, 2);
    let mut stream = Vec::new();
    for jpeg in jpegs {
        dec.decode(jpeg, 1, &mut pic)?;
        if let Some(f) = enc.encode(&pic)? {
            stream.extend_from_slice(&f.bitstream);
        }
    }
    h264_quality(&stream, jpegs)
}

/// Decodes an H.264 stream (openh264) and compares each frame's luma with the source's.
fn h264_quality(stream: &[u8], jpegs: &[Vec<u8>]) -> anyhow::Result<Quality> {
    let mut decoder = openh264::decoder::Decoder::new()?;
    let mut dec = JpegDecoder::new()?;
    let mut reference = I420::new(2, 2);
    let (mut psnr, mut ssim, mut n) = (0.0, 0.0, 0usize);
    for packet in openh264::nal_units(stream) {
        let Some(frame) = decoder.decode(packet)? else { continue };
        let Some(jpeg) = jpegs.get(n) else { break };
        dec.decode(jpeg, 1, &mut reference)?;
        let (w, h) = (reference.width, reference.height);
        let stride = frame.strides().0;
        let got: Vec<u8> = (0..h).flat_map(|row| frame.y()[row * stride..row * stride + w].iter().copied()).collect();
        psnr += luma_psnr(&got, reference.y());
        ssim += luma_ssim(&got, reference.y(), w, h);
        n += 1;
    }
    anyhow::ensure!(n + 2 >= jpegs.len(), "decoded {n} of {} frames", jpegs.len());
    Ok(Quality { psnr: psnr / n as f64, ssim: ssim / n as f64, bytes: stream.len() })
}

/// libx264 as the issue measured it: same bitrate, no scaling, full-range pixels kept as they
/// are (a `yuv420p` output would add a range conversion the relay does not do).
fn x264_args() -> Vec<String> {
    ["-pix_fmt", "yuvj420p", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-b:v"]
        .iter()
        .map(|s| s.to_string())
        .chain([BITRATE.to_string()])
        .collect()
}

/// FFmpeg on a concatenated MJPEG file: (CPU time, output bytes). Output to `out`, else discarded.
fn ffmpeg_file(input: &std::path::Path, out: Option<&std::path::Path>) -> anyhow::Result<(Duration, usize)> {
    let target = out.map_or_else(|| input.with_extension("h264"), std::path::Path::to_path_buf);
    let before = children_cpu();
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "mjpeg", "-framerate", "25", "-i"])
        .arg(input)
        .args(x264_args())
        .args(["-f", "h264"])
        .arg(&target)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg ({e}); scripts/setup-debian.sh installs it"))?;
    anyhow::ensure!(output.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok((children_cpu() - before, std::fs::metadata(&target)?.len() as usize))
}

/// Both whole processes on the same live camera: returns CPU ms per frame (ours, FFmpeg's).
async fn process_run(input: &Input, frames: usize) -> anyhow::Result<(f64, f64)> {
    let jpegs = input.jpegs.iter().map(|j| bytes::Bytes::from(j.clone())).collect();
    let cam = camera::start(Frames::Fixed(jpegs), FPS, Framing::FfmpegCrlf).await;

    // Scopecast: steady state over `frames` encoded frames, after a warm-up.
    let relay = RelayProcess::start(&format!("[streams.cam]\nsource = \"{}\"\nbitrate_kbps = {}\n", cam.url(), BITRATE / 1000)).await?;
    let viewer = scopecast_tests::viewer::WhepViewer::connect_counting(&format!("{}/cam/whep", relay.http)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let encoded = || async {
        let info: serde_json::Value = reqwest::get(format!("{}/api/v1/streams/cam", relay.http)).await?.json().await?;
        anyhow::Ok(info["frames_encoded"].as_u64().unwrap_or(0))
    };
    let (cpu0, n0) = (relay.cpu(), encoded().await?);
    let deadline = Instant::now() + Duration::from_secs_f64(frames as f64 / FPS * 3.0);
    while encoded().await? < n0 + frames as u64 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (cpu1, n1) = (relay.cpu(), encoded().await?);
    anyhow::ensure!(n1 > n0, "the relay encoded nothing");
    let ours = (cpu1 - cpu0).as_secs_f64() * 1000.0 / (n1 - n0) as f64;
    // Time to attach a profiler to the relay (`perf record -p`), when asked for.
    if let Some(secs) = std::env::var("SCOPECAST_BENCH_HOLD_S").ok().and_then(|v| v.parse().ok()) {
        eprintln!("holding the relay (pid {}) for {secs} s", relay.pid());
        tokio::time::sleep(Duration::from_secs(secs)).await;
    }
    viewer.close().await;
    drop(viewer);
    drop(relay);

    // FFmpeg: N and 2N frames from the same camera, the difference removes its start-up.
    let sink = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let port = sink.local_addr()?.port();
    let url = cam.url();
    let run = move |n: usize| -> anyhow::Result<Duration> {
        let before = children_cpu();
        let output = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "mpjpeg", "-i", &url, "-frames:v", &n.to_string()])
            .args(x264_args())
            .args(["-f", "rtp", &format!("rtp://127.0.0.1:{port}?pkt_size=1200")])
            .stdin(Stdio::null())
            .output()?;
        anyhow::ensure!(output.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&output.stderr));
        Ok(children_cpu() - before)
    };
    let (a, b) = tokio::task::spawn_blocking(move || anyhow::Ok((run(frames)?, run(2 * frames)?))).await??;
    drop(sink);
    Ok((ours, (b.saturating_sub(a)).as_secs_f64() * 1000.0 / frames as f64))
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000)
}

/// CPU time of this thread.
/// User + system CPU of all waited-for child processes.
#[allow(unsafe_code)] // std exposes no rusage; getrusage is the POSIX call for it.
fn children_cpu() -> Duration {
    // SAFETY: rusage is plain old data, zero is a valid bit pattern, and getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    timeval(ru.ru_utime) + timeval(ru.ru_stime)
}
