//! The player's rungs side by side, in headless Chromium on loopback: WebRTC, H.264 over a
//! WebSocket (UDP blocked: WebCodecs into a canvas on a secure page, MSE on a page that is not
//! one) and MJPEG (UDP and WebSockets blocked).
//! Glass-to-glass latency, frame rate and bandwidth of each, one after the other on the same
//! stream and the same encode.
//!
//! `cargo run --release -p scopecast-tests --bin rungs-bench [-- --secs 20]`
//! (after `cargo build --release -p scopecast`; needs chromium and chromium-driver).
//!
//! The source is the relay's deep-sky scene at 1280x720 and 25 fps (faint noise and stars
//! under the timecode strip), so the 2 Mbit/s encoder and the JPEG re-encode both carry a real
//! picture's detail. The page is the relay's player behind the tests' HTTP proxy, which blocks
//! WebRTC's UDP candidates and tunnels or refuses WebSockets. The secure page is the proxy's
//! loopback address; the other is the same address under a name (`scopecast.test`, mapped by
//! Chromium's resolver), which is not a secure context, as a LAN address over plain HTTP is not.
//!
//! Every rung is read the same way, so their numbers compare: an animation-frame loop draws
//! what the player shows (its `<video>` or its canvas), reads the timecode strip, and stamps
//! each new picture with the time it was first seen; latency = that time - capture time.
//! Bandwidth: what the page received (the overlay's bitrate: WebRTC's `bytesReceived`, the
//! WebSocket's messages, MJPEG's body), what crossed the proxy for the TCP rungs (HTTP and
//! WebSocket framing included), and the relay's encoder output over the same window.

use scopecast_tests::bench::{self, median, percentile, RelayProcess};
use scopecast_tests::browser::{count, show_overlay, wait_for_page, Browser};
use scopecast_tests::proxy::{Mode, Proxy};
use std::time::{Duration, Instant};

const W: usize = 1280;
const H: usize = 720;

struct Rung {
    label: &'static str,
    mode: Mode,
    websockets: bool,
    transport: &'static str,
    /// What the player draws this rung on.
    element: &'static str,
    /// The page's host: loopback is a secure context, the mapped name is not.
    host: &'static str,
}

const SECURE: &str = "127.0.0.1";
const NOT_SECURE: &str = "scopecast.test";

/// One rung's window.
struct Measured {
    latency: Vec<f64>,
    fps: f64,
    page_kbit: Vec<f64>,
    wire_kbit: Option<f64>,
    encoder_kbit: f64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.iter().position(|a| a == "--secs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(20);
    let relay = RelayProcess::start(&format!("[streams.sky]\nsource = \"test:deepsky:{W}x{H}@25\"\n")).await?;
    let browser = Browser::start_with(&[format!("--host-resolver-rules=MAP {NOT_SECURE} 127.0.0.1")]).await?;
    let c = &browser.client;
    let rungs = [
        Rung { label: "WebRTC (UDP)", mode: Mode::Pass, websockets: false, transport: "webrtc", element: "video", host: SECURE },
        Rung { label: "H.264 over WebSocket (WebCodecs)", mode: Mode::BlockUdp, websockets: true, transport: "h264", element: "canvas", host: SECURE },
        Rung { label: "H.264 over WebSocket (MSE, fMP4)", mode: Mode::BlockUdp, websockets: true, transport: "h264", element: "canvas", host: NOT_SECURE },
        Rung { label: "MJPEG", mode: Mode::BlockUdp, websockets: false, transport: "mjpeg", element: "canvas", host: SECURE },
    ];
    let mut results = Vec::new();
    for rung in &rungs {
        let proxy = Proxy::start(&relay.http, rung.mode).await;
        proxy.allow_websockets(rung.websockets);
        c.goto(&format!("{}/sky/", proxy.url().replace("127.0.0.1", rung.host))).await?;
        let frames = if rung.transport == "webrtc" { "frames" } else { "fallback" };
        wait_for_page(c, rung.label, 30, |v| v["transport"] == rung.transport && count(v, frames) > 50).await;
        show_overlay(c).await;
        tokio::time::sleep(Duration::from_secs(2)).await; // settled, and the overlay's first polls done
        let (wire0, enc0, t0) = (proxy.bytes_out(), encoded_bytes(&relay.http).await?, Instant::now());
        let m = measure(c, rung.element, secs).await?;
        let elapsed = t0.elapsed().as_secs_f64();
        let kbit = |bytes: u64| bytes as f64 * 8.0 / elapsed / 1000.0;
        let measured = Measured {
            latency: m.0,
            fps: m.1,
            page_kbit: m.2,
            wire_kbit: (rung.transport != "webrtc").then(|| kbit(proxy.bytes_out() - wire0)),
            encoder_kbit: kbit(encoded_bytes(&relay.http).await? - enc0),
        };
        eprintln!(
            "{}: {} frames, latency p50 {:.1} ms, {:.1} fps, page {:.0} kbit/s",
            rung.label,
            measured.latency.len(),
            median(&measured.latency),
            measured.fps,
            median(&measured.page_kbit)
        );
        results.push(measured);
        c.goto("about:blank").await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    browser.close().await;

    let webrtc_latency = median(&results[0].latency);
    let webrtc_kbit = median(&results[0].page_kbit);
    let mut md = format!(
        "Headless Chromium on loopback, the relay's player page behind the tests' proxy, {secs} s per rung, the deep-sky scene at \
         1280x720 and 25 fps, 2 Mbit/s encode. Latency: capture to the first animation frame showing the picture (ms). Bandwidth \
         in kbit/s: received by the page (median of 1 s windows), through the proxy (TCP rungs: with HTTP and WebSocket framing), \
         and the relay's encoder output in the same window.\n\n"
    );
    md.push_str(
        "| rung | frames | fps | latency p50 | p95 | vs WebRTC | page kbit/s | vs WebRTC | proxy kbit/s | encoder kbit/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for (rung, m) in rungs.iter().zip(&results) {
        let (lat, page) = (median(&m.latency), median(&m.page_kbit));
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:+.1} ms | {:.0} | {:.2}x | {} | {:.0} |\n",
            rung.label,
            m.latency.len(),
            m.fps,
            lat,
            percentile(&m.latency, 95.0),
            lat - webrtc_latency,
            page,
            page / webrtc_kbit,
            m.wire_kbit.map_or("-".into(), |k| format!("{k:.0}")),
            m.encoder_kbit
        ));
    }
    bench::report("rungs", &md);
    Ok(())
}

/// The relay's `scopecast_encoded_bytes_total` for the stream.
async fn encoded_bytes(http: &str) -> anyhow::Result<u64> {
    let text = reqwest::get(format!("{http}/metrics")).await?.text().await?;
    let line = text.lines().find(|l| l.starts_with("scopecast_encoded_bytes_total{") && l.contains("stream=\"sky\""));
    line.and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse::<f64>().ok()).map(|v| v as u64).ok_or_else(|| anyhow::anyhow!("no encoded bytes in /metrics"))
}

/// Latencies of the pictures first seen over `secs` (ms), their rate, and the overlay's
/// bitrate once a second (kbit/s).
async fn measure(c: &fantoccini::Client, element: &str, secs: u64) -> anyhow::Result<(Vec<f64>, f64, Vec<f64>)> {
    let (latency, bitrates) = bench::shown_latencies(c, element, secs, W, H).await?;
    anyhow::ensure!(!bitrates.is_empty(), "the overlay showed no bitrate");
    let fps = latency.len() as f64 / secs as f64;
    Ok((latency, fps, bitrates))
}
