//! WebRTC latency in the two browsers the player meets: headless Chromium, which plays the
//! H.264 rendition, and Firefox without H.264 (Debian's ESR offline), which plays the VP8 one.
//! Same relay, same stream (the deep-sky scene at 1280x720 and 25 fps, 2 Mbit/s each), same
//! link, same way of reading (an animation-frame loop reads the timecode strip of the player's
//! `<video>`: capture to the first animation frame that shows the picture, as the rungs bench
//! reads its rungs).
//!
//! `cargo run --release -p scopecast-tests --bin browsers-bench [-- --secs 20]` (as root:
//! Firefox gathers no ICE candidates on loopback alone, so both browsers run in a network
//! namespace behind a veth link; needs chromium, chromium-driver, firefox-esr and geckodriver).
//!
//! ```text
//!   relay (this process, 10.81.1.1) ═ 10.81.1.2 ── B: chromedriver + Chromium, then geckodriver + Firefox
//! ```

use scopecast::config::{Config, IceConfig, SecurityConfig, StreamConfig};
use scopecast_tests::bench::{self, median, percentile};
use scopecast_tests::browser::{count, wait_for_page, Browser, INBOUND_CODEC_JS};
use scopecast_tests::netns::{link, Netns};
use std::time::Duration;

const W: usize = 1280;
const H: usize = 720;
const RELAY_IP: &str = "10.81.1.1";
const BROWSER_IP: &str = "10.81.1.2";

struct Measured {
    browser: &'static str,
    codec: String,
    latency: Vec<f64>,
    secs: u64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let secs: u64 = args.iter().position(|a| a == "--secs").and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(20);
    let ns = Netns::add("bb")?;
    link(None, &format!("{RELAY_IP}/24"), &ns, &format!("{BROWSER_IP}/24"), "bb")?;
    ns.exec(&["ip", "route", "add", "default", "via", RELAY_IP])?;

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let relay = rt.block_on(async {
        let sky = StreamConfig::from_source("sky", &format!("test:deepsky:{W}x{H}@25"), "bench").map_err(|e| anyhow::anyhow!("{e}"))?;
        let config = Config {
            http: format!("{RELAY_IP}:0").parse()?,
            tls: None,
            ice: IceConfig { udp: format!("{RELAY_IP}:0").parse()?, additional_hosts: vec![], stun_servers: vec![], turn: vec![], include_loopback: false },
            security: SecurityConfig::default(),
            streams: vec![sky],
        };
        anyhow::Ok(scopecast_tests::start_relay_config(config).await)
    })?;
    let page = format!("{}/sky/", relay.base_url());

    let mut results = Vec::new();
    for browser in ["Chromium", "Firefox"] {
        let page = page.clone();
        let m = ns.spawn(move || -> anyhow::Result<Measured> {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            rt.block_on(async move {
                let b = if browser == "Firefox" { Browser::start_firefox().await? } else { Browser::start().await? };
                let c = &b.client;
                c.goto(&page).await?;
                wait_for_page(c, browser, 30, |v| v["transport"] == "webrtc" && count(v, "frames") > 50).await;
                tokio::time::sleep(Duration::from_secs(2)).await;
                let codec = c.execute_async(INBOUND_CODEC_JS, vec![]).await?.as_str().unwrap_or_default().to_owned();
                let (latency, _) = bench::shown_latencies(c, "video", secs, W, H).await?;
                b.close().await;
                Ok(Measured { browser, codec, latency, secs })
            })
        });
        let m = m.join().map_err(|_| anyhow::anyhow!("{browser}'s thread panicked"))??;
        eprintln!("{}: {} {} pictures, p50 {:.1} ms", m.browser, m.codec, m.latency.len(), median(&m.latency));
        results.push(m);
    }
    rt.block_on(relay.shutdown());

    let base = median(&results[0].latency);
    let mut md = format!(
        "Headless Chromium and Firefox ESR (no H.264: it plays the VP8 rendition) in a network namespace behind a veth link, the relay's \
         player page, {secs} s each, the deep-sky scene at 1280x720 and 25 fps, 2 Mbit/s per encoder. Latency: capture to the first \
         animation frame showing the picture (ms), read off the timecode strip.\n\n"
    );
    md.push_str("| browser | codec | pictures | fps | latency p50 | p95 | vs Chromium |\n| --- | --- | --- | --- | --- | --- | --- |\n");
    for m in &results {
        let p50 = median(&m.latency);
        md.push_str(&format!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:+.1} ms |\n",
            m.browser,
            m.codec,
            m.latency.len(),
            m.latency.len() as f64 / m.secs as f64,
            p50,
            percentile(&m.latency, 95.0),
            p50 - base
        ));
    }
    bench::report("browsers", &md);
    Ok(())
}
