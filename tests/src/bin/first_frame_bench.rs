//! Time to first frame: from the WHEP POST being sent to the first decoded picture, on a 25 fps
//! stream and on a 0.2 fps stream (one frame every 5 s), each new viewer arriving at a random
//! moment of the stream. Then an RTSP camera passed through (GStreamer's RTSP server, x264,
//! 1280x720 of fine moving detail at 2.5 Mbit/s, one IDR every 4 s): a joiner served the kept
//! GOP beside one that waits for the camera's next IDR (`gop_cache = false`), as MediaMTX's
//! and go2rtc's joiners do.
//!
//! `cargo run --release -p scopecast-tests --bin first-frame-bench [-- --trials 15]`
//! (after `cargo build --release -p scopecast`).
//!
//! The relay is the release binary in its own process; the viewer is a webrtc-crate peer that
//! depacketizes and decodes (openh264), like the end-to-end tests. The baseline in the same run
//! is the POST's own round trip (offer in, answer out): what no server can go below.

use rand::Rng;
use scopecast_tests::bench::{self, median, min_max, percentile, RelayProcess};
use scopecast_tests::viewer::WhepViewer;
use std::time::Duration;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let trials: usize = args.iter().position(|a| a == "--trials").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(15);
    let relay = RelayProcess::start("[streams.fast]\nsource = \"test:1280x720@25\"\n\n[streams.slow]\nsource = \"test:1280x720@0.2\"\n").await?;

    let mut md = format!("{trials} viewers per stream, one at a time, each joining at a random moment; milliseconds.\n\n");
    md.push_str("| stream | POST -> first decoded frame: median (p95, range) | POST -> answer (baseline): median | answer -> connected (ICE, DTLS): median | frames of the configured size |\n| --- | --- | --- | --- | --- |\n");
    for (name, label) in [("fast", "1280x720 at 25 fps"), ("slow", "1280x720 at 0.2 fps")] {
        let joins = joins(&relay, name, 2000, trials).await?;
        let sized = joins.iter().filter(|j| j.size == (1280, 720)).count();
        md.push_str(&format!("| {label} | {} | {sized}/{trials} |\n", timing_cells(label, &joins)));
    }
    md.push_str(&rtsp_gop(trials).await?);
    bench::report("first-frame", &md);
    Ok(())
}

/// The GOP joiner against the IDR waiter on one RTSP camera with a 4 s GOP.
async fn rtsp_gop(trials: usize) -> anyhow::Result<String> {
    use scopecast_tests::rtsp::{free_port, RtspCamera};
    let camera = RtspCamera::gstreamer(free_port(), &["--size", "1280x720", "--pattern", "zone-plate", "--bitrate", "2500", "--gop", "100"]);
    let url = camera.url();
    let relay = RelayProcess::start(&format!("[streams.gop]\nsource = \"{url}\"\n\n[streams.idr]\nsource = \"{url}\"\ngop_cache = false\n")).await?;
    // Both streams connected and past their first IDR.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let mut md = String::from(
        "\nAn RTSP camera passed through (GStreamer RTSP server, x264 Constrained Baseline, 1280x720 zone plate at 2.5 Mbit/s, \
         one IDR every 4 s), viewers joining at random moments of the GOP; milliseconds.\n\n\
         | joiner | POST -> first decoded frame: median (p95, range) | POST -> answer (baseline): median | answer -> connected (ICE, DTLS): median |\n| --- | --- | --- | --- |\n",
    );
    for (name, label) in [("gop", "served the kept GOP (Scopecast)"), ("idr", "waits for the next IDR (gop_cache = false; as MediaMTX, go2rtc)")] {
        let joins = joins(&relay, name, 4000, trials).await?;
        md.push_str(&format!("| {label} | {} |\n", timing_cells(&format!("RTSP, {label}"), &joins)));
    }
    drop(relay);
    camera.stop();
    Ok(md)
}

/// One join's timeline, in milliseconds.
struct Join {
    /// POST to the first decoded frame.
    to_frame: f64,
    /// POST to the answer.
    to_answer: f64,
    /// Answer to the peer connection's `connected` (ICE, then DTLS).
    handshake: f64,
    size: (usize, usize),
}

/// A handshake this slow waited a second somewhere. Seen so far (the per-join lines on stderr):
/// always ICE, about one join in 20-30 with the webrtc crate's viewer, never DTLS or the relay.
const RETRANSMITTED_MS: f64 = 900.0;

/// `trials` viewers joining `name` one after another (see `join`).
async fn joins(relay: &RelayProcess, name: &str, max_wait_ms: u64, trials: usize) -> anyhow::Result<Vec<Join>> {
    let mut joins = Vec::with_capacity(trials);
    for _ in 0..trials {
        joins.push(join(relay, name, max_wait_ms).await?);
    }
    Ok(joins)
}

/// The table cells both tables share: first frame (median, p95, range), answer (median), and
/// handshake (median, and how many waited a second). Logs the first-frame median as `what`.
fn timing_cells(what: &str, joins: &[Join]) -> String {
    let first: Vec<f64> = joins.iter().map(|j| j.to_frame).collect();
    let answer: Vec<f64> = joins.iter().map(|j| j.to_answer).collect();
    let handshake: Vec<f64> = joins.iter().map(|j| j.handshake).collect();
    let (lo, hi) = min_max(&first);
    let slow = handshake.iter().filter(|&&h| h >= RETRANSMITTED_MS).count();
    eprintln!("{what}: first frame median {:.0} ms", median(&first));
    format!(
        "{:.0} ({:.0}, {:.0}-{:.0}) | {:.0} | {:.0} ({slow} of {} over 1 s)",
        median(&first),
        percentile(&first, 95.0),
        lo,
        hi,
        median(&answer),
        median(&handshake),
        joins.len()
    )
}

/// One viewer joining `name` after a random wait of up to `max_wait_ms` (anywhere in the
/// stream's cycle): milliseconds from the POST to its first decoded frame and to the answer,
/// and the frame's size.
async fn join(relay: &RelayProcess, name: &str, max_wait_ms: u64) -> anyhow::Result<Join> {
    tokio::time::sleep(Duration::from_millis(rand::rng().random_range(0..max_wait_ms))).await;
    let mut viewer = WhepViewer::connect(&format!("{}/{name}/whep", relay.http)).await?;
    let frames = viewer.collect(1, Duration::from_secs(10)).await;
    let frame = frames.first().ok_or_else(|| anyhow::anyhow!("{name}: no frame within 10 s"))?;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let connected = viewer.connected_at.lock().ok().and_then(|c| *c).unwrap_or(frame.at);
    let ice = viewer.ice_connected_at.lock().ok().and_then(|c| *c).unwrap_or(connected);
    eprintln!(
        "{name}: answer -> ICE {:.0} ms, ICE -> DTLS {:.0} ms, then first frame {:.0} ms",
        ms(ice.saturating_duration_since(viewer.answered_at)),
        ms(connected.saturating_duration_since(ice)),
        ms(frame.at.saturating_duration_since(connected))
    );
    let result = Join {
        to_frame: ms(frame.at - viewer.posted_at),
        to_answer: ms(viewer.answered_at - viewer.posted_at),
        handshake: ms(connected.saturating_duration_since(viewer.answered_at)),
        size: (frame.width, frame.height),
    };
    let _ = viewer.delete().await;
    viewer.close().await;
    Ok(result)
}
