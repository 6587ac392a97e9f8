//! Headless Chromium plays the relay's page over WHEP and decodes H.264.

use scopecast::config::StreamConfig;
use scopecast_tests::browser::Browser;
use scopecast_tests::{base_url, eventually, start_relay};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_page_stream_and_leaving_ends_the_session() {
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)]).await;
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/telescope/", base_url(&relay))).await.expect("open page");

    // framesDecoded from the receiver's stats, and the <video>'s size.
    let probe = r#"
        const done = arguments[arguments.length - 1];
        const p = window.scopecast;
        if (!p || !p.pc) return done({ frames: 0, width: 0, height: 0, state: p ? p.state : "none" });
        p.pc.getStats().then((stats) => {
            let frames = 0;
            stats.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0; });
            const v = document.getElementById("video");
            done({ frames, width: v.videoWidth, height: v.videoHeight, state: p.state });
        });
    "#;
    let mut last = serde_json::Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        last = c.execute_async(probe, vec![]).await.expect("probe");
        if last["frames"].as_u64().unwrap_or(0) >= 25 && last["width"].as_u64().unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(last["frames"].as_u64().unwrap_or(0) >= 25, "Chromium decoded too few frames: {last}");
    assert_eq!((last["width"].as_u64(), last["height"].as_u64()), (Some(640), Some(360)), "{last}");
    assert_eq!(last["state"], "live");
    assert_eq!(relay.session_count(), 1);

    let shot = c.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("page-live.png"), shot);

    // Leaving the page sends DELETE.
    c.goto("about:blank").await.expect("leave");
    eventually(10, "the session to end when the page is left", || relay.session_count() == 0).await;
    browser.close().await;
    relay.shutdown().await;
}
