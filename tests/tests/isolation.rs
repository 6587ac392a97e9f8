//! One viewer's trouble is its own: a viewer whose network goes dead raises neither the other
//! viewers' latency nor their frame loss, and the relay lets it go when consent expires.

use scopecast::config::StreamConfig;
use scopecast_tests::viewer::{DecodedFrame, WhepViewer};
use scopecast_tests::{base_url, eventually, start_relay};
use std::time::Duration;

/// Capture-to-decode latencies (ms) of frames carrying the timecode strip.
fn latencies(frames: &[DecodedFrame]) -> Vec<u64> {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    frames.iter().filter_map(|f| f.timecode.map(|t| t.age_ms(now_ms - f.at.elapsed().as_millis() as u64))).collect()
}

fn p95(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get((v.len() * 95 / 100).min(v.len().saturating_sub(1))).copied().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_whose_network_dies_does_not_hurt_the_others() {
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)]).await;
    let whep = format!("{}/telescope/whep", base_url(&relay));
    let (mut doomed, cut) = WhepViewer::connect_killable(&whep).await.expect("viewer on a killable network");
    let mut healthy = WhepViewer::connect(&whep).await.expect("viewer");
    assert!(!doomed.collect(10, Duration::from_secs(5)).await.is_empty(), "the doomed viewer plays first");
    healthy.collect(10, Duration::from_secs(5)).await; // settled

    let before = healthy.collect(75, Duration::from_secs(5)).await;
    let gaps_before = healthy.rtp.lock().map(|l| l.sequence_gaps).unwrap_or(0);
    cut.store(true, std::sync::atomic::Ordering::SeqCst);
    let after = healthy.collect(75, Duration::from_secs(5)).await;
    let gaps_after = healthy.rtp.lock().map(|l| l.sequence_gaps).unwrap_or(0);

    assert!(after.len() >= 70, "the healthy viewer keeps its 25 fps: {} frames in 3 s", after.len());
    assert_eq!(gaps_after, gaps_before, "no packet lost by the healthy viewer");
    let (p95_before, p95_after) = (p95(latencies(&before)), p95(latencies(&after)));
    assert!(p95_after <= p95_before + 20, "latency p95 {p95_before} ms before the cut, {p95_after} ms after");
    assert_eq!(relay.session_count(), 2, "the dead viewer's session lives until consent expires");

    // ICE consent fails without answers: the relay ends the dead session by itself.
    eventually(45, "the dead viewer's session to be reaped", || relay.session_count() == 1).await;
    assert!(healthy.collect(25, Duration::from_secs(2)).await.len() >= 20, "and the healthy viewer plays on");
    doomed.close().await;
    healthy.close().await;
    relay.shutdown().await;
}
