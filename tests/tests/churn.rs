//! Sessions that come and go leave nothing behind: WHEP join/leave cycles, viewers that really
//! connect and leave, and offers abandoned before ICE. Bounded: the cycle count is set by
//! SCOPECAST_CHURN_CYCLES (CI runs the default 2,000; HARDENING.md documents a longer run).

use scopecast::config::{SecurityConfig, StreamConfig};
use scopecast_tests::viewer::{make_offer, WhepViewer};
use scopecast_tests::{base_url, eventually, start_relay_with};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current().metrics().num_alive_tasks()
}

/// Waits until the runtime's task count is back to `baseline`, and says so.
async fn tasks_settle_to(baseline: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive_tasks() > baseline {
        assert!(Instant::now() < deadline, "{what}: {} tasks alive, {baseline} before", alive_tasks());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_sessions_tasks_or_memory_behind() {
    let cycles: usize = std::env::var("SCOPECAST_CHURN_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let security = SecurityConfig { session_rate: 1000.0, max_sessions: 1000, ..SecurityConfig::default() };
    let relay = start_relay_with(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)], security).await;
    let whep = format!("{}/telescope/whep", base_url(&relay));
    // No idle pooled connections: each would hold a task on both ends and blur the task count.
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
    let (_pc, offer) = make_offer().await.expect("offer");

    let join_leave = |n: usize| {
        let (client, whep, offer) = (client.clone(), whep.clone(), offer.clone());
        async move {
            for _ in 0..n {
                let res = client.post(&whep).header("content-type", "application/sdp").body(offer.clone()).send().await.expect("POST");
                assert_eq!(res.status(), 201);
                let location = res.headers()["location"].to_str().expect("location").to_owned();
                let _ = res.bytes().await;
                let del = client.delete(format!("{}{location}", whep.trim_end_matches("/telescope/whep"))).send().await.expect("DELETE");
                assert_eq!(del.status(), 200);
            }
        }
    };

    // Warm-up: lazily created pieces (the HTTP client's pool, the engine's caches) exist after it.
    join_leave(20).await;
    eventually(10, "warm-up sessions gone", || relay.session_count() == 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tasks_before = alive_tasks();

    let started = Instant::now();
    join_leave(cycles / 2).await;
    eventually(10, "first half's sessions gone", || relay.session_count() == 0).await;
    tasks_settle_to(tasks_before, "after the first half").await;
    let rss_half = rss_kib();
    join_leave(cycles - cycles / 2).await;
    eventually(10, "second half's sessions gone", || relay.session_count() == 0).await;
    tasks_settle_to(tasks_before, "after the second half").await;
    let rss_end = rss_kib();
    eprintln!("{cycles} join/leave cycles in {:.1} s; RSS {} KiB at half, {} KiB at the end", started.elapsed().as_secs_f64(), rss_half, rss_end);
    // Flat: the second half may not grow memory by more than a few MiB (allocator noise).
    assert!(rss_end <= rss_half + 8 * 1024, "RSS grew from {rss_half} KiB to {rss_end} KiB over the second {} cycles", cycles - cycles / 2);

    // Viewers that really connect (ICE, DTLS, media) and leave.
    for _ in 0..10 {
        let mut v = WhepViewer::connect(&whep).await.expect("viewer");
        assert!(!v.collect(1, Duration::from_secs(5)).await.is_empty(), "a frame");
        assert_eq!(v.delete().await.expect("DELETE"), 200);
        v.close().await;
    }
    eventually(10, "connected viewers' sessions gone", || relay.session_count() == 0).await;
    tasks_settle_to(tasks_before, "after connected viewers").await;

    // Offers abandoned before ICE: the relay ends them at its connect deadline (30 s).
    for _ in 0..20 {
        let res = client.post(&whep).header("content-type", "application/sdp").body(offer.clone()).send().await.expect("POST");
        assert_eq!(res.status(), 201);
    }
    assert_eq!(relay.session_count(), 20);
    eventually(40, "abandoned sessions to be reaped", || relay.session_count() == 0).await;
    tasks_settle_to(tasks_before, "after abandoned sessions").await;
    relay.shutdown().await;
}
