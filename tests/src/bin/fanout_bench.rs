//! Whole-relay CPU and memory for one 720p25 stream with 1, 10, 50 and 100 WebRTC viewers, and
//! the frame rate each viewer receives.
//!
//! `cargo run --release -p scopecast-tests --bin fanout-bench [-- --viewers 1,10,50,100 --secs 5 --windows 3]`
//! (after `cargo build --release -p scopecast`). `--source rtsp` measures an RTSP camera's
//! H.264 passed through, beside the same camera transcoded (report `fanout-rtsp`).
//!
//! The relay is the release binary in its own process; the viewers are webrtc-crate peers in
//! this process that receive, decrypt and count RTP (no decoding). The source is an MJPEG
//! camera (in this process) sending the test pattern under grain, so the encoder really fills
//! its 2 Mbit/s (the plain pattern compresses to about 0.5); `--source pattern` uses the
//! relay's built-in pattern instead. Viewers are added step by
//! step; at each step, after a settling time, the relay's CPU (user + system, all threads,
//! from /proc) is measured over `windows` windows of `secs` seconds: median and range. The
//! baseline, measured in the same run, is the relay with its one viewer: the encode that every
//! count shares. Marginal cost per viewer = (cost at N - cost at 1) / (N - 1).

use rand::Rng;
use scopecast::media::jpeg::encode_i420;
use scopecast::media::testpattern::TestPattern;
use scopecast::media::I420;
use scopecast_tests::bench::{self, median, min_max, RelayProcess};
use scopecast_tests::camera::{self, Frames, Framing};
use scopecast_tests::viewer::WhepViewer;
use std::time::{Duration, Instant};

struct Step {
    viewers: usize,
    cpu_pct: Vec<f64>,
    rss_mib: f64,
    /// Frames per second received by each viewer over the last window.
    viewer_fps: Vec<f64>,
    mbit_per_viewer: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let counts: Vec<usize> = arg("--viewers").unwrap_or_else(|| "1,10,50,100".into()).split(',').filter_map(|v| v.parse().ok()).collect();
    let secs: u64 = arg("--secs").and_then(|v| v.parse().ok()).unwrap_or(5);
    let windows: usize = arg("--windows").and_then(|v| v.parse().ok()).unwrap_or(3);
    let source = arg("--source").unwrap_or_else(|| "noise".into());
    if source == "rtsp" {
        return rtsp(&counts, secs, windows).await;
    }

    let camera = if source == "pattern" { None } else { Some(camera::start(Frames::Fixed(grainy_frames(50)?), 25.0, Framing::FfmpegCrlf).await) };
    let url = camera.as_ref().map_or_else(|| "test:1280x720@25".to_owned(), |c| c.url());
    let relay = RelayProcess::start(&format!("[streams.telescope]\nsource = \"{url}\"\nbitrate_kbps = 2000\n")).await?;
    let steps = measure(&relay, "telescope", &counts, secs, windows).await?;
    let mut md = format!(
        "One stream, 1280x720 at 25 fps, 2 Mbit/s target, source: {}; relay CPU over {windows} windows of {secs} s per step (median, range).\n\n",
        if camera.is_some() { "MJPEG camera, test pattern under grain" } else { "built-in test pattern" }
    );
    md.push_str(&table(&steps));
    bench::report("fanout", &md);
    Ok(())
}

/// An RTSP camera (GStreamer's server, x264 Constrained Baseline, 1280x720 of fine moving
/// detail at 2 Mbit/s, 25 fps) passed through, beside the same camera transcoded, in one run.
async fn rtsp(counts: &[usize], secs: u64, windows: usize) -> anyhow::Result<()> {
    use scopecast_tests::rtsp::{free_port, RtspCamera};
    let camera = RtspCamera::gstreamer(free_port(), &["--size", "1280x720", "--pattern", "zone-plate", "--bitrate", "2000", "--gop", "50"]);
    let url = camera.url();
    let relay = RelayProcess::start(&format!(
        "[streams.pass]\nsource = \"{url}\"\n\n[streams.transcode]\nsource = \"{url}\"\nvideo = \"transcode\"\nbitrate_kbps = 2000\non_demand = true\nstop_after_s = 0\n"
    ))
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pass = measure(&relay, "pass", counts, secs, windows).await?;
    // What the relay's own status API says at the last step of passthrough.
    let api: serde_json::Value = reqwest::get(format!("{}/api/v1/streams", relay.http)).await?.json().await?;
    let api_cpu = api["relay"]["cpu_percent"].as_f64().unwrap_or(f64::NAN);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let transcode = measure(&relay, "transcode", counts, secs, windows).await?;
    let mut md = format!(
        "An RTSP camera (GStreamer RTSP server, x264 Constrained Baseline, 1280x720 zone plate at 2 Mbit/s, 25 fps, over TCP): \
         its H.264 passed through, then the same camera transcoded (decoded and encoded again), in one run; relay CPU over \
         {windows} windows of {secs} s per step (median, range).\n\n**Passed through:**\n\n"
    );
    md.push_str(&table(&pass));
    md.push_str(&format!(
        "\nThe status API (`relay.cpu_percent` in `/api/v1/streams`, the last 5 s) said **{api_cpu:.1} %** at {} viewers.\n\n**Transcoded (the baseline):**\n\n",
        pass.last().map_or(0, |s| s.viewers)
    ));
    md.push_str(&table(&transcode));
    if let (Some(p), Some(t)) = (pass.iter().find(|s| s.viewers == 10), transcode.iter().find(|s| s.viewers == 10)) {
        md.push_str(&format!(
            "\nAt 10 viewers: **{:.1} %** of a core passed through against {:.1} % transcoded ({:.0}x less).\n",
            median(&p.cpu_pct),
            median(&t.cpu_pct),
            median(&t.cpu_pct) / median(&p.cpu_pct).max(0.01)
        ));
    }
    bench::report("fanout-rtsp", &md);
    drop(relay);
    camera.stop();
    Ok(())
}

/// Adds viewers step by step to `stream`; at each step, after settling, measures the relay.
async fn measure(relay: &RelayProcess, stream: &str, counts: &[usize], secs: u64, windows: usize) -> anyhow::Result<Vec<Step>> {
    let whep = format!("{}/{stream}/whep", relay.http);
    let mut viewers: Vec<WhepViewer> = Vec::new();
    let mut steps = Vec::new();
    let started = Instant::now();
    for &n in counts {
        while viewers.len() < n {
            viewers.push(WhepViewer::connect_counting(&whep).await?);
        }
        // Every viewer receiving, then a settling time.
        let deadline = Instant::now() + Duration::from_secs(30);
        while viewers.iter().any(|v| v.rtp.lock().map_or(0, |l| l.frames) == 0) {
            anyhow::ensure!(Instant::now() < deadline, "not every viewer received frames");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut cpu_pct = Vec::new();
        let mut viewer_fps = Vec::new();
        let mut bytes = 0.0;
        for _ in 0..windows {
            let counts0: Vec<(u64, u64)> = viewers.iter().map(|v| v.rtp.lock().map_or((0, 0), |l| (l.frames, l.bytes))).collect();
            let (cpu0, t0) = (relay.cpu(), Instant::now());
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let (cpu1, t1) = (relay.cpu(), Instant::now());
            let counts1: Vec<(u64, u64)> = viewers.iter().map(|v| v.rtp.lock().map_or((0, 0), |l| (l.frames, l.bytes))).collect();
            let dt = (t1 - t0).as_secs_f64();
            cpu_pct.push(100.0 * (cpu1 - cpu0).as_secs_f64() / dt);
            viewer_fps = counts0.iter().zip(&counts1).map(|(a, b)| (b.0 - a.0) as f64 / dt).collect();
            bytes = counts0.iter().zip(&counts1).map(|(a, b)| (b.1 - a.1) as f64).sum::<f64>() / counts1.len() as f64 / dt;
        }
        let step = Step { viewers: n, cpu_pct, rss_mib: relay.rss_kib() as f64 / 1024.0, viewer_fps, mbit_per_viewer: bytes * 8.0 / 1e6 };
        eprintln!(
            "{stream}: {n:>4} viewers: relay CPU {:.1} % of a core, RSS {:.1} MiB, viewer fps median {:.1} min {:.1} ({:.0} s)",
            median(&step.cpu_pct),
            step.rss_mib,
            median(&step.viewer_fps),
            min_max(&step.viewer_fps).0,
            started.elapsed().as_secs_f64()
        );
        steps.push(step);
    }
    for v in &viewers {
        let _ = v.delete().await;
        v.close().await;
    }
    Ok(steps)
}

fn table(steps: &[Step]) -> String {
    let mut md = String::from("| viewers | relay CPU, % of one core | relay RSS MiB | fps per viewer (median / min) | received Mbit/s per viewer |\n| --- | --- | --- | --- | --- |\n");
    for s in steps {
        let (lo, hi) = min_max(&s.cpu_pct);
        let (fmin, _) = min_max(&s.viewer_fps);
        md.push_str(&format!(
            "| {} | {:.1} ({:.1}-{:.1}) | {:.1} | {:.1} / {:.1} | {:.2} |\n",
            s.viewers,
            median(&s.cpu_pct),
            lo,
            hi,
            s.rss_mib,
            median(&s.viewer_fps),
            fmin,
            s.mbit_per_viewer
        ));
    }
    if let (Some(first), Some(last)) = (steps.first(), steps.last()) {
        if last.viewers > first.viewers {
            let extra = (last.viewers - first.viewers) as f64;
            let cpu = (median(&last.cpu_pct) - median(&first.cpu_pct)) / extra;
            let mem = (last.rss_mib - first.rss_mib) * 1024.0 / extra;
            md.push_str(&format!(
                "\nMarginal cost per viewer ({} -> {} viewers): **{:.2} % of a core** and **{:.0} KiB** of memory, at {:.2} Mbit/s per viewer.\n",
                first.viewers, last.viewers, cpu, mem, last.mbit_per_viewer
            ));
        }
    }
    md
}

/// The test pattern with film grain: detail an encoder must spend its bits on, as a real
/// camera's sensor noise does.
fn grainy_frames(n: usize) -> anyhow::Result<Vec<bytes::Bytes>> {
    let mut pattern = TestPattern::new("fanout", 1280, 720);
    let mut rng = rand::rng();
    (0..n)
        .map(|i| {
            let mut pic = I420::new(2, 2);
            pattern.render(1_795_000_000_000 + i as u64 * 40, &mut pic);
            for y in pic.y_mut().iter_mut() {
                *y = y.saturating_add_signed(rng.random_range(-12..=12));
            }
            Ok(bytes::Bytes::from(encode_i420(&pic, 85)?))
        })
        .collect()
}
