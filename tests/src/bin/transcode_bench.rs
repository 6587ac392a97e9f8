//! Transcode CPU per frame: Scopecast's decode + scale + encode against FFmpeg with libx264
//! (`-preset ultrafast -tune zerolatency`) on the same JPEGs and output size, in the same run.
//!
//! `cargo run --release -p scopecast-tests --bin transcode-bench [-- --frames N --runs R]`
//!
//! CPU time, not wall time: ours is the encoding thread's CPU clock; FFmpeg's is the child's
//! user+system time (all its threads). FFmpeg's start-up is removed by running it on N and 2N
//! frames and taking the difference. Each figure is the median of R runs, with the range.

use openh264::formats::YUVSource;
use scopecast::media::jpeg::{encode_i420, JpegDecoder};
use scopecast::media::scale::Scaler;
use scopecast::media::testpattern::TestPattern;
use scopecast::media::{EncoderSettings, H264Encoder, I420};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const BITRATE: u32 = 2_000_000;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: usize| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default);
    let frames = arg("--frames", 150);
    let runs = arg("--runs", 5);

    // Input: the moving test pattern at 1280x720, as a camera would send it (JPEG q85, 4:2:0).
    let mut pattern = TestPattern::new("bench", 1280, 720);
    let mut jpegs = Vec::with_capacity(2 * frames);
    for i in 0..2 * frames {
        let mut pic = I420::new(2, 2);
        pattern.render(1_795_000_000_000 + i as u64 * 40, &mut pic);
        jpegs.push(encode_i420(&pic, 85)?);
    }
    let avg_jpeg = jpegs.iter().map(Vec::len).sum::<usize>() / jpegs.len();
    let dir = std::env::temp_dir().join(format!("scopecast-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let write_input = |n: usize| -> anyhow::Result<std::path::PathBuf> {
        let path = dir.join(format!("in-{n}.mjpeg"));
        let mut f = std::fs::File::create(&path)?;
        for j in &jpegs[..n] {
            f.write_all(j)?;
        }
        Ok(path)
    };
    let (short, long) = (write_input(frames)?, write_input(2 * frames)?);

    println!("input: {} JPEG frames 1280x720 4:2:0 q85 (avg {} KB), output H.264 at {} kbit/s, {} runs\n", frames, avg_jpeg / 1024, BITRATE / 1000, runs);
    println!("| output | Scopecast ms/frame (median, range) | FFmpeg libx264 ms/frame (median, range) | ratio (ours / FFmpeg) | Scopecast KB/frame | FFmpeg KB/frame |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let (mut stage_rows, mut quality_rows) = (Vec::new(), Vec::new());
    for (w, h) in [(1280usize, 720usize), (640, 480)] {
        let mut ours = Vec::new();
        let mut stages: [Vec<f64>; 3] = Default::default();
        let mut theirs = Vec::new();
        let (mut our_bytes, mut their_bytes) = (0usize, 0usize);
        for _ in 0..runs {
            let run = scopecast_run(&jpegs[..frames], w, h)?;
            ours.push(run.total_ms);
            for (all, one) in stages.iter_mut().zip(run.stage_ms) {
                all.push(one);
            }
            our_bytes = run.bytes / frames;
            let (a, _) = ffmpeg_run(&short, w, h)?;
            let (b, out_bytes) = ffmpeg_run(&long, w, h)?;
            theirs.push((b - a) * 1000.0 / frames as f64);
            their_bytes = out_bytes / (2 * frames);
        }
        let (om, olo, ohi) = stats(&mut ours);
        let (fm, flo, fhi) = stats(&mut theirs);
        println!(
            "| {w}x{h} | {om:.2} ({olo:.2}-{ohi:.2}) | {fm:.2} ({flo:.2}-{fhi:.2}) | {:.2}x | {:.1} | {:.1} |",
            om / fm,
            our_bytes as f64 / 1024.0,
            their_bytes as f64 / 1024.0
        );
        let [d, s, e] = stages.map(|mut v| stats(&mut v).0);
        stage_rows.push(format!("| {w}x{h} | {d:.2} | {s:.2} | {e:.2} |"));
        quality_rows.push(format!(
            "| {w}x{h} | {:.1} | {:.1} | {:.1} | {:.1} |",
            scopecast_psnr(&jpegs[..frames], w, h)?,
            our_bytes as f64 / 1024.0,
            ffmpeg_psnr(&short, w, h)?,
            their_bytes as f64 / 1024.0
        ));
    }
    println!("\nScopecast by stage (CPU ms per frame, medians):\n");
    println!("| output | JPEG decode | scale | H.264 encode |\n| --- | --- | --- | --- |");
    for row in stage_rows {
        println!("{row}");
    }
    println!("\nPicture quality against each encoder's input (mean luma PSNR, dB; higher is better):\n");
    println!("| output | Scopecast PSNR Y | Scopecast KB/frame | FFmpeg libx264 PSNR Y | FFmpeg KB/frame |\n| --- | --- | --- | --- | --- |");
    for row in quality_rows {
        println!("{row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

struct Run {
    /// CPU ms per frame, all stages.
    total_ms: f64,
    /// CPU ms per frame in decode, scale and encode.
    stage_ms: [f64; 3],
    bytes: usize,
}

/// The relay's decode and scale steps, as the pipeline does them: decode with DCT-domain
/// reduction when it helps, then scale to the output size if still needed.
struct Frontend {
    dec: JpegDecoder,
    scaler: Scaler,
    decoded: I420,
    scaled: I420,
    size: (usize, usize),
}

impl Frontend {
    fn new(w: usize, h: usize) -> anyhow::Result<Self> {
        Ok(Self { dec: JpegDecoder::new()?, scaler: Scaler::default(), decoded: I420::new(2, 2), scaled: I420::new(w, h), size: (w, h) })
    }

    fn decode(&mut self, jpeg: &[u8]) -> anyhow::Result<()> {
        let denom = self.dec.info(jpeg)?.reduction_for(self.size.0, self.size.1);
        Ok(self.dec.decode(jpeg, denom, &mut self.decoded)?)
    }

    /// The picture the encoder gets.
    fn scale(&mut self) -> anyhow::Result<&I420> {
        if (self.decoded.width, self.decoded.height) == self.size {
            return Ok(&self.decoded);
        }
        self.scaler.scale(&self.decoded, &mut self.scaled, self.size.0, self.size.1)?;
        Ok(&self.scaled)
    }
}

fn encoder() -> anyhow::Result<H264Encoder> {
    Ok(H264Encoder::new(EncoderSettings { bitrate_bps: BITRATE, fps: 25.0, idr_interval_frames: 0 })?)
}

/// The relay's own per-frame work: decode, scale, encode, each stage timed on this thread.
fn scopecast_run(jpegs: &[Vec<u8>], w: usize, h: usize) -> anyhow::Result<Run> {
    let mut front = Frontend::new(w, h)?;
    let mut enc = encoder()?;
    let mut bytes = 0;
    let mut stages = [Duration::ZERO; 3];
    let start = thread_cpu();
    for jpeg in jpegs {
        let t0 = thread_cpu();
        front.decode(jpeg)?;
        let t1 = thread_cpu();
        let pic = front.scale()?;
        let t2 = thread_cpu();
        if let Some(f) = enc.encode(pic)? {
            bytes += f.annexb.len();
        }
        let t3 = thread_cpu();
        stages[0] += t1 - t0;
        stages[1] += t2 - t1;
        stages[2] += t3 - t2;
    }
    let per_frame = |d: Duration| d.as_secs_f64() * 1000.0 / jpegs.len() as f64;
    Ok(Run { total_ms: per_frame(thread_cpu() - start), stage_ms: stages.map(per_frame), bytes })
}

/// Mean luma PSNR of our H.264 against the picture the encoder was given, as x264's
/// `PSNR Mean Y` is against its input (untimed: it decodes our output with openh264).
fn scopecast_psnr(jpegs: &[Vec<u8>], w: usize, h: usize) -> anyhow::Result<f64> {
    let mut front = Frontend::new(w, h)?;
    let mut enc = encoder()?;
    let mut decoder = openh264::decoder::Decoder::new()?;
    let mut sum = 0.0;
    for jpeg in jpegs {
        front.decode(jpeg)?;
        let pic = front.scale()?;
        let frame = enc.encode(pic)?.ok_or_else(|| anyhow::anyhow!("no output for a frame"))?;
        let out = decoder.decode(&frame.annexb)?.ok_or_else(|| anyhow::anyhow!("the decoder held a frame back"))?;
        let stride = out.strides().0;
        let mut squared = 0u64;
        for (row, want) in pic.y.chunks_exact(w).enumerate() {
            let got = &out.y()[row * stride..row * stride + w];
            squared += got.iter().zip(want).map(|(a, b)| (i64::from(*a) - i64::from(*b)).pow(2) as u64).sum::<u64>();
        }
        let mse = (squared as f64 / (w * h) as f64).max(1e-10);
        sum += 10.0 * (255.0 * 255.0 / mse).log10();
    }
    Ok(sum / jpegs.len() as f64)
}

fn ffmpeg(input: &std::path::Path, w: usize, h: usize, loglevel: &str, extra: &[&str]) -> anyhow::Result<(std::process::Output, std::path::PathBuf)> {
    let out = input.with_extension(format!("{w}x{h}.h264"));
    let output = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", loglevel, "-y", "-f", "mjpeg", "-framerate", "25", "-i"])
        .arg(input)
        .args(["-vf", &format!("scale={w}:{h}"), "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"])
        .args(["-b:v", &format!("{}", BITRATE)])
        .args(extra)
        .args(["-f", "h264"])
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run ffmpeg ({e}); install Debian's ffmpeg"))?;
    anyhow::ensure!(output.status.success(), "ffmpeg failed: {}", String::from_utf8_lossy(&output.stderr));
    Ok((output, out))
}

/// FFmpeg on a concatenated MJPEG file; returns (CPU seconds, output bytes).
fn ffmpeg_run(input: &std::path::Path, w: usize, h: usize) -> anyhow::Result<(f64, usize)> {
    let before = children_cpu();
    let (_, out) = ffmpeg(input, w, h, "error", &[])?;
    let cpu = (children_cpu() - before).as_secs_f64();
    Ok((cpu, std::fs::metadata(&out)?.len() as usize))
}

/// x264's own mean luma PSNR against its input (untimed): its last `PSNR Mean Y` line is the
/// whole run's, after one line per frame type.
fn ffmpeg_psnr(input: &std::path::Path, w: usize, h: usize) -> anyhow::Result<f64> {
    let (output, _) = ffmpeg(input, w, h, "info", &["-psnr"])?;
    let log = String::from_utf8_lossy(&output.stderr);
    log.lines()
        .rev()
        .find_map(|l| l.split("PSNR Mean Y:").nth(1)?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no PSNR in FFmpeg's log"))
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000)
}

/// CPU time of this thread.
#[allow(unsafe_code)] // std has no per-thread CPU clock; clock_gettime is the portable POSIX call.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// User + system CPU of all waited-for child processes.
#[allow(unsafe_code)] // std exposes no rusage; getrusage is the POSIX call for it.
fn children_cpu() -> Duration {
    // SAFETY: rusage is plain old data, zero is a valid bit pattern, and getrusage only writes it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is valid and writable.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    timeval(ru.ru_utime) + timeval(ru.ru_stime)
}
