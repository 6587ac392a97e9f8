//! Glass-to-glass latency in headless Chromium, read off the timecode strip of every presented
//! frame, and where it goes, stage by stage: p50 and p95 over 30 s of 1280x720 at 25 fps, from
//! an MJPEG camera that stamps its capture time into the strip and an `X-Timestamp` header
//! (ingest in the path), and from the built-in test pattern.
//!
//! `cargo run --release -p scopecast-tests --bin latency-bench [-- --secs 30]`
//! (after `cargo build --release -p scopecast`; needs chromium and chromium-driver).
//!
//! The page is the relay's own player. For each frame Chromium presents,
//! `requestVideoFrameCallback` gives its presentation time, the time its last packet arrived
//! (`receiveTime`), its decode time and its RTP timestamp; the strip is read from that very
//! frame (drawn to a canvas), and latency = presentation time (wall clock) - capture time. The
//! relay's own stage times (`/api/v1/streams/{name}/timings`) are joined to the browser's by
//! RTP timestamp. Camera, relay and browser share this machine's clock.

use scopecast_shared::api::{FrameTiming, FrameTimings};
use scopecast_tests::bench::{self, median, min_max, percentile, RelayProcess};
use scopecast_tests::browser::{count, wait_for_page, Browser};
use scopecast_tests::camera::{self, Frames, Framing};
use std::collections::HashMap;
use std::time::Duration;

const W: usize = 1280;
const H: usize = 720;

/// What the browser reported for one presented frame (wall-clock ms).
struct Presented {
    capture_ms: f64,
    presented_ms: f64,
    expected_display_ms: f64,
    received_ms: Option<f64>,
    decode_ms: Option<f64>,
    rtp_timestamp: Option<u32>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.iter().position(|a| a == "--secs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(30);
    let cam = camera::start(Frames::Pattern { width: W, height: H, strip_huffman: false }, 25.0, Framing::FfmpegCrlf).await;
    let relay = RelayProcess::start(&format!("[streams.camera]\nsource = \"{}\"\n\n[streams.pattern]\nsource = \"test:{W}x{H}@25\"\n", cam.url())).await?;
    let browser = Browser::start().await?;
    let c = &browser.client;

    let mut md = format!(
        "Headless Chromium, the relay's player page, {secs} s per source, 1280x720 at 25 fps; milliseconds from capture to presentation \
         (`requestVideoFrameCallback`'s `presentationTime`) and to the expected display (`expectedDisplayTime`, the next vsync).\n\n"
    );
    md.push_str("| source | frames read | presented p50 | p95 | range | displayed p50 | p95 |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    let mut breakdowns = String::new();
    for (stream, label) in [("camera", "MJPEG camera -> relay -> Chromium"), ("pattern", "built-in pattern -> Chromium")] {
        c.goto(&format!("{}/{stream}/", relay.http)).await?;
        wait_for_page(c, "WebRTC frames", 20, |v| v["transport"] == "webrtc" && count(v, "frames") > 25).await;
        let collector = collect_timings(format!("{}/api/v1/streams/{stream}/timings", relay.http));
        let frames = measure(c, secs).await?;
        let relay_frames = collector.finish().await;
        let lat: Vec<f64> = frames.iter().map(|f| f.presented_ms - f.capture_ms).collect();
        let shown: Vec<f64> = frames.iter().map(|f| f.expected_display_ms - f.capture_ms).collect();
        let (lo, hi) = min_max(&lat);
        eprintln!("{label}: {} frames, p50 {:.1} ms, p95 {:.1} ms", lat.len(), percentile(&lat, 50.0), percentile(&lat, 95.0));
        md.push_str(&format!(
            "| {label} | {} | {:.1} | {:.1} | {:.0}-{:.0} | {:.1} | {:.1} |\n",
            lat.len(),
            median(&lat),
            percentile(&lat, 95.0),
            lo,
            hi,
            median(&shown),
            percentile(&shown, 95.0)
        ));
        breakdowns.push_str(&breakdown(label, &frames, &relay_frames));
    }
    browser.close().await;
    md.push_str(&breakdowns);
    bench::report("latency", &md);
    Ok(())
}

/// Polls the relay's per-frame times while the browser measures (it keeps the last 10 s).
struct Collector {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<HashMap<u32, FrameTiming>>,
}

fn collect_timings(url: String) -> Collector {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut all = HashMap::new();
        let client = reqwest::Client::new();
        loop {
            if let Ok(res) = client.get(&url).send().await {
                if let Ok(t) = res.json::<FrameTimings>().await {
                    all.extend(t.frames.into_iter().filter(|f| f.sent_ms.is_some()).map(|f| (f.rtp_timestamp, f)));
                }
            }
            if tokio::time::timeout(Duration::from_secs(3), &mut stopped).await.is_ok() {
                return all;
            }
        }
    });
    Collector { stop, task }
}

impl Collector {
    async fn finish(self) -> HashMap<u32, FrameTiming> {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The stage table of one source: medians and p95 of each stage over the frames both the relay
/// and the browser reported.
fn breakdown(label: &str, frames: &[Presented], relay: &HashMap<u32, FrameTiming>) -> String {
    /// A stage's name, whether it is a step of capture -> presented (they add up), and its length.
    type Stage = (&'static str, bool, fn(&FrameTiming, &Presented) -> Option<f64>);
    let stages: [Stage; 9] = [
        ("capture -> relay receive (source render, JPEG encode, HTTP)", true, |r, p| Some(r.arrived_ms - p.capture_ms)),
        ("-> encoder picks it up (queue)", true, |r, _| Some(r.started_ms - r.arrived_ms)),
        ("-> decoded (JPEG decode, scale)", true, |r, _| Some(r.decoded_ms - r.started_ms)),
        ("-> encoded (H.264, RTP packetization)", true, |r, _| Some(r.encoded_ms - r.decoded_ms)),
        ("-> sent (last packet to the socket)", true, |r, _| Some(r.sent_ms? - r.encoded_ms)),
        ("-> browser receive (network, SRTP)", true, |r, p| Some(p.received_ms? - r.sent_ms?)),
        ("-> presented (jitter buffer, decode, to compositor)", true, |_, p| Some(p.presented_ms - p.received_ms?)),
        ("  of which decode (`processingDuration`)", false, |_, p| p.decode_ms),
        ("-> expected on screen (next vsync)", false, |_, p| Some(p.expected_display_ms - p.presented_ms)),
    ];
    let joined: Vec<(&FrameTiming, &Presented)> = frames.iter().filter_map(|p| Some((relay.get(&p.rtp_timestamp?)?, p))).collect();
    let mut md = format!("\n{label}: {} of {} presented frames joined to the relay's times by RTP timestamp.\n\n", joined.len(), frames.len());
    md.push_str("| stage | p50 | p95 |\n| --- | --- | --- |\n");
    let mut sum = 0.0;
    for (name, on_path, f) in &stages {
        let v: Vec<f64> = joined.iter().filter_map(|(r, p)| f(r, p)).collect();
        if v.is_empty() {
            md.push_str(&format!("| {name} | n/a | n/a |\n"));
            continue;
        }
        if *on_path {
            sum += median(&v);
        }
        md.push_str(&format!("| {name} | {:.1} | {:.1} |\n", median(&v), percentile(&v, 95.0)));
    }
    let total: Vec<f64> = joined.iter().map(|(_, p)| p.presented_ms - p.capture_ms).collect();
    md.push_str(&format!("| capture -> presented (sum of the medians above: {sum:.1}) | {:.1} | {:.1} |\n", median(&total), percentile(&total, 95.0)));
    md
}

/// The frames presented over `secs`.
async fn measure(c: &fantoccini::Client, secs: u64) -> anyhow::Result<Vec<Presented>> {
    let script = bench::strip_reader_js(W, H)
        + r#"
        const [ms] = arguments;
        const done = arguments[arguments.length - 1];
        const v = document.querySelector(".scopecast video");
        const samples = [];
        const origin = performance.timeOrigin;
        const end = performance.now() + ms;
        function onFrame(_now, meta) {
            const cells = readStrip(v);
            samples.push({
                presented: origin + meta.presentationTime,
                expected: origin + meta.expectedDisplayTime,
                received: meta.receiveTime === undefined ? null : origin + meta.receiveTime,
                decode: meta.processingDuration === undefined ? null : meta.processingDuration * 1000,
                rtp: meta.rtpTimestamp === undefined ? null : meta.rtpTimestamp,
                cells,
            });
            if (performance.now() < end) v.requestVideoFrameCallback(onFrame); else done(samples);
        }
        v.requestVideoFrameCallback(onFrame);
    "#;
    let args = vec![serde_json::json!(secs * 1000)];
    let timeouts = fantoccini::wd::TimeoutConfiguration::new(Some(Duration::from_secs(secs + 30)), None, None);
    c.update_timeouts(timeouts).await?;
    let samples = c.execute_async(&script, args).await?;
    let mut out = Vec::new();
    for s in samples.as_array().into_iter().flatten() {
        let presented_ms = s["presented"].as_f64().unwrap_or(0.0);
        let Some(tc) = bench::strip_timecode(&s["cells"]) else { continue };
        // The strip holds whole milliseconds.
        let capture_ms = (presented_ms as u64).saturating_sub(tc.age_ms(presented_ms as u64)) as f64;
        out.push(Presented {
            capture_ms,
            presented_ms,
            expected_display_ms: s["expected"].as_f64().unwrap_or(presented_ms),
            received_ms: s["received"].as_f64(),
            decode_ms: s["decode"].as_f64(),
            rtp_timestamp: s["rtp"].as_u64().map(|v| v as u32),
        });
    }
    anyhow::ensure!(!out.is_empty(), "no frame carried a readable strip");
    Ok(out)
}
