//! Firefox without H.264, as Debian's Firefox ESR is on a machine with no internet (it cannot
//! fetch its OpenH264 plugin, so it offers VP8, VP9 and AV1 only): the player plays WebRTC in
//! VP8, from the stream's VP8 rendition, encoded only while it is watched. A stream whose
//! camera H.264 is passed through has no VP8 to give: the offer gets a 422 and the player's
//! MJPEG rung plays instead.
//!
//! Firefox gathers no ICE candidates with only a loopback interface, so it runs in a network
//! namespace with a veth link and a default route (needs root, as CI has):
//! ```text
//!   test (root ns): the relay on 10.79.1.1 ═ 10.79.1.2 ── F: geckodriver + Firefox
//! ```

use scopecast::config::{Codec, Config, IceConfig, SecurityConfig, StreamConfig};
use scopecast_shared::api::VideoPath;
use scopecast_shared::StreamInfo;
use scopecast_tests::browser::{count, page_status, save_screenshot, Browser, INBOUND_CODEC_JS};
use scopecast_tests::netns::{link, Netns};
use std::time::Duration;

const RELAY_IP: &str = "10.79.1.1";
const FIREFOX_IP: &str = "10.79.1.2";

/// What Firefox showed of each page.
#[derive(Debug, Default)]
struct Seen {
    webrtc: serde_json::Value,
    codec: String,
    mjpeg: serde_json::Value,
}

async fn wait(client: &fantoccini::Client, what: &str, secs: u64, pred: impl Fn(&serde_json::Value) -> bool) -> Result<serde_json::Value, String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = page_status(client).await;
        if pred(&now) {
            return Ok(now);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("Firefox, waiting for {what}: {now}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Firefox, started from a thread inside `ns`, plays `sky` (WebRTC in VP8) and then `camera`
/// (the MJPEG rung).
fn firefox_in(ns: &Netns, sky: String, camera: String) -> std::thread::JoinHandle<Result<Seen, String>> {
    ns.spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        rt.block_on(async move {
            let browser =
                Browser::start_firefox().await.map_err(|e| format!("headless Firefox in F (scripts/test.sh installs firefox-esr and geckodriver): {e}"))?;
            let c = &browser.client;
            let result = async {
                c.goto(&sky).await.map_err(|e| e.to_string())?;
                let webrtc = wait(c, "VP8 frames over WebRTC", 30, |v| v["transport"] == "webrtc" && count(v, "frames") >= 50).await?;
                let codec = c.execute_async(INBOUND_CODEC_JS, vec![]).await.map_err(|e| e.to_string())?.as_str().unwrap_or_default().to_owned();
                save_screenshot(c, "firefox-vp8").await;
                c.goto(&camera).await.map_err(|e| e.to_string())?;
                let mjpeg = wait(c, "the MJPEG rung", 40, |v| v["transport"] == "mjpeg" && count(v, "fallback") >= 10).await?;
                Ok(Seen { webrtc, codec, mjpeg })
            }
            .await;
            browser.close().await;
            result
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_without_h264_plays_vp8_and_falls_back_to_mjpeg_where_there_is_none() {
    let f = Netns::add("ff").expect("namespace F (tests run as root)");
    link(None, &format!("{RELAY_IP}/24"), &f, &format!("{FIREFOX_IP}/24"), "9").expect("link to F");
    f.exec(&["ip", "route", "add", "default", "via", RELAY_IP]).expect("route in F");

    let sky = StreamConfig::test_pattern("sky", 1280, 720, 25.0);
    // A camera whose H.264 is passed through: no pictures are decoded for a VP8 encoder.
    let camera = StreamConfig::from_source(
        "camera",
        "exec:ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=15 -c:v libx264 -preset ultrafast -profile:v baseline -tune zerolatency -g 30 -bf 0 -f h264 -",
        "test",
    )
    .expect("an exec: source");
    let config = Config {
        http: format!("{RELAY_IP}:0").parse().expect("address"),
        tls: None,
        ice: IceConfig {
            udp: format!("{RELAY_IP}:0").parse().expect("address"),
            additional_hosts: vec![],
            stun_servers: vec![],
            turn: vec![],
            include_loopback: false,
        },
        security: SecurityConfig::default(),
        streams: vec![sky, camera],
    };
    let relay = scopecast_tests::start_relay_config(config).await;
    let base = relay.base_url();
    let info = || async {
        let sky: StreamInfo = reqwest::get(format!("{base}/api/v1/streams/sky")).await.expect("status").json().await.expect("StreamInfo");
        sky
    };
    let before = info().await;
    let vp8 = before.renditions.iter().find(|r| r.codec == Codec::Vp8.name()).expect("every encoded stream has a VP8 rendition");
    assert_eq!((vp8.readers, vp8.frames_encoded), (0, 0), "nothing encoded in VP8 while no one needs it");

    let firefox = firefox_in(&f, format!("{base}/sky/"), format!("{base}/camera/"));
    // While Firefox plays the sky in VP8, the VP8 rendition has a reader and the H.264 none.
    let mut during = None;
    for _ in 0..300 {
        let now = info().await;
        if now.renditions.iter().any(|r| r.codec == "vp8" && r.readers == 1 && r.frames_encoded > 25) {
            during = Some(now);
            break;
        }
        if firefox.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = tokio::task::spawn_blocking(move || firefox.join().expect("Firefox thread")).await.expect("join").unwrap_or_else(|e| panic!("{e}"));
    let during = during.expect("the VP8 rendition was read and encoded while Firefox played");
    let full = &during.renditions[0];
    assert_eq!((full.name.as_str(), full.readers), ("full", 0), "Firefox reads no H.264: {:?}", during.renditions);
    assert_eq!(seen.codec.to_ascii_lowercase(), "video/vp8", "{seen:?}");
    assert_eq!((count(&seen.webrtc, "width"), count(&seen.webrtc, "height")), (1280, 720), "the stream's own size: {}", seen.webrtc);
    assert!(count(&seen.webrtc, "frames") >= 50, "{}", seen.webrtc);
    let camera: StreamInfo = reqwest::get(format!("{base}/api/v1/streams/camera")).await.expect("status").json().await.expect("StreamInfo");
    assert_eq!(camera.video, VideoPath::Passthrough, "the camera's H.264 is passed through");
    assert!(count(&seen.mjpeg, "fallback") >= 10 && count(&seen.mjpeg, "canvas_width") == 640, "the MJPEG rung plays: {}", seen.mjpeg);
    relay.shutdown().await;
}
