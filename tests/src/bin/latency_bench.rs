//! Glass-to-glass latency in headless Chromium, read off the timecode strip of every presented
//! frame: p50 and p95 over 30 s of 1280x720 at 25 fps, from an MJPEG camera that stamps its
//! capture time into the strip (ingest in the path) and from the built-in test pattern.
//!
//! `cargo run --release -p scopecast-tests --bin latency-bench [-- --secs 30]`
//! (after `cargo build --release -p scopecast`; needs chromium and chromium-driver).
//!
//! The page is the relay's own player. For each frame Chromium presents,
//! `requestVideoFrameCallback` gives its presentation time; the strip is read from that very
//! frame (drawn to a canvas), and latency = presentation time (wall clock) - capture time.
//! Camera, relay and browser share this machine's clock. Both sources are measured in the same
//! run, so the ingest's share shows as their difference.

use scopecast_shared::timecode::{self, Timecode};
use scopecast_tests::bench::{self, median, min_max, percentile, RelayProcess};
use scopecast_tests::browser::{count, wait_for_page, Browser};
use scopecast_tests::camera::{self, Frames, Framing};
use std::time::Duration;

const W: usize = 1280;
const H: usize = 720;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.iter().position(|a| a == "--secs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(30);
    let cam = camera::start(Frames::Pattern { width: W, height: H, strip_huffman: false }, 25.0, Framing::FfmpegCrlf).await;
    let relay = RelayProcess::start(&format!("[streams.camera]\nsource = \"{}\"\n\n[streams.pattern]\nsource = \"test:{W}x{H}@25\"\n", cam.url())).await?;
    let browser = Browser::start().await?;
    let c = &browser.client;

    let mut md = format!("Headless Chromium, the relay's player page, {secs} s per source; milliseconds from capture to presentation.\n\n");
    md.push_str("| source | frames read | p50 | p95 | range |\n| --- | --- | --- | --- | --- |\n");
    for (stream, label) in [("camera", "MJPEG camera -> relay -> Chromium"), ("pattern", "built-in pattern -> Chromium")] {
        c.goto(&format!("{}/{stream}/", relay.http)).await?;
        wait_for_page(c, "WebRTC frames", 20, |v| v["transport"] == "webrtc" && count(v, "frames") > 25).await;
        let lat = measure(c, secs).await?;
        let (lo, hi) = min_max(&lat);
        eprintln!("{label}: {} frames, p50 {:.0} ms, p95 {:.0} ms", lat.len(), percentile(&lat, 50.0), percentile(&lat, 95.0));
        md.push_str(&format!("| {label} | {} | {:.0} | {:.0} | {:.0}-{:.0} |\n", lat.len(), median(&lat), percentile(&lat, 95.0), lo, hi));
    }
    browser.close().await;
    bench::report("latency", &md);
    Ok(())
}

/// Latencies of the frames presented over `secs`.
async fn measure(c: &fantoccini::Client, secs: u64) -> anyhow::Result<Vec<f64>> {
    let band = timecode::band_height(H);
    let xs: Vec<usize> = (0..timecode::CELLS).map(|i| timecode::cell_span(i, W)).map(|(a, b)| (a + b) / 2).collect();
    let script = r#"
        const [xs, y, w, band, ms] = arguments;
        const done = arguments[arguments.length - 1];
        const v = document.querySelector(".scopecast video");
        const canvas = document.createElement("canvas");
        canvas.width = w; canvas.height = band;
        const ctx = canvas.getContext("2d", { willReadFrequently: true });
        const samples = [];
        const end = performance.now() + ms;
        function onFrame(_now, meta) {
            ctx.drawImage(v, 0, 0, w, band, 0, 0, w, band);
            const d = ctx.getImageData(0, 0, w, band).data;
            const cells = xs.map((x) => {
                let s = 0;
                for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
                    const i = ((y + dy) * w + Math.min(w - 1, Math.max(0, x + dx))) * 4;
                    s += (d[i] + d[i + 1] + d[i + 2]) / 3;
                }
                return s / 9;
            });
            samples.push([performance.timeOrigin + meta.presentationTime, cells]);
            if (performance.now() < end) v.requestVideoFrameCallback(onFrame); else done(samples);
        }
        v.requestVideoFrameCallback(onFrame);
    "#;
    let args = vec![serde_json::json!(xs), serde_json::json!(band / 2), serde_json::json!(W), serde_json::json!(band), serde_json::json!(secs * 1000)];
    let timeouts = fantoccini::wd::TimeoutConfiguration::new(Some(Duration::from_secs(secs + 30)), None, None);
    c.update_timeouts(timeouts).await?;
    let samples = c.execute_async(script, args).await?;
    let mut out = Vec::new();
    for s in samples.as_array().into_iter().flatten() {
        let presented = s[0].as_f64().unwrap_or(0.0);
        let bits = s[1].as_array().into_iter().flatten().fold(0u64, |acc, v| (acc << 1) | u64::from(v.as_f64().unwrap_or(0.0) > 128.0));
        if let Some(tc) = Timecode::from_bits(bits) {
            out.push(tc.age_ms(presented as u64) as f64);
        }
    }
    anyhow::ensure!(!out.is_empty(), "no frame carried a readable strip");
    Ok(out)
}
