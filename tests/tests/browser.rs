//! Headless Chromium plays the relay's page over WHEP and decodes H.264.

use scopecast::config::{SecurityConfig, StreamConfig};
use scopecast_shared::timecode;
use scopecast_tests::browser::{count, page_status, save_screenshot, show_overlay, wait_for_page, Browser, ProxiedPlayer};
use scopecast_tests::camera::{self, Frames, Framing};
use scopecast_tests::{base_url, eventually, mjpeg_stream, start_relay, start_relay_with};
use std::sync::atomic::Ordering;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_plays_the_page_stream_and_leaving_ends_the_session() {
    // A relay with a token: the page, opened with ?token=, passes it on to every request.
    let security = SecurityConfig { token: Some("page-token-123".into()), ..SecurityConfig::default() };
    let relay = start_relay_with(vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)], security).await;
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/telescope/?token=page-token-123", base_url(&relay))).await.expect("open page");

    let last = wait_for_page(c, "25 decoded frames of the configured size", 20, |v| count(v, "frames") >= 25 && count(v, "width") > 0).await;
    assert_eq!((last["width"].as_u64(), last["height"].as_u64()), (Some(640), Some(360)), "{last}");
    assert_eq!((last["state"].as_str(), last["transport"].as_str()), (Some("live"), Some("webrtc")), "{last}");
    assert_eq!(last["canvas_visible"], false, "no MJPEG while WebRTC plays: {last}");
    assert_eq!(relay.session_count(), 1);
    assert_levels_survive(c).await;

    show_overlay(c).await;
    tokio::time::sleep(Duration::from_millis(2200)).await; // two stats polls: rates need two samples
    let details = c
        .execute(r#"return Object.fromEntries([...document.querySelectorAll(".scopecast-overlay dd")].map((d) => [d.dataset.key, d.textContent]))"#, vec![])
        .await
        .expect("overlay");
    assert_eq!(details["transport"], "webrtc", "{details}");
    assert_eq!(details["resolution"], "640x360", "{details}");
    let fps: f64 = details["frame-rate"].as_str().and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    assert!((15.0..=30.0).contains(&fps), "about 25 fps shown: {details}");
    let latency: u64 = details["glass-to-glass"].as_str().and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).expect("latency read from the strip");
    assert!(latency < 1000, "glass-to-glass latency from the timecode strip: {details}");
    save_screenshot(c, "player-live").await;

    // Leaving the page sends DELETE.
    c.goto("about:blank").await.expect("leave");
    eventually(10, "the session to end when the page is left", || relay.session_count() == 0).await;
    browser.close().await;
    relay.shutdown().await;
}

/// The strip's cells are luma 16 and 235. Shown as full-range video (what the relay signals,
/// since JPEG pixels are full range) they stay 16 and 235 in RGB; a player that took them for
/// limited range would crush the dark one to 0 and clip the bright one to 255, and with them a
/// telescope picture's faintest detail.
async fn assert_levels_survive(c: &fantoccini::Client) {
    let grab = r#"
        const v = document.querySelector(".scopecast video");
        const w = v.videoWidth, h = v.videoHeight, band = Math.max(8, Math.floor(h / 40)) & ~1;
        const canvas = document.createElement("canvas");
        canvas.width = w; canvas.height = h;
        const ctx = canvas.getContext("2d");
        ctx.drawImage(v, 0, 0);
        const px = ctx.getImageData(0, 0, w, band).data;
        const brightness = [];
        for (let i = 0; i < px.length; i += 4) brightness.push(Math.round((px[i] + px[i + 1] + px[i + 2]) / 3));
        return { w, h, brightness };
    "#;
    let got = c.execute(grab, vec![]).await.expect("read the strip");
    let (w, h) = (got["w"].as_u64().unwrap_or(0) as usize, got["h"].as_u64().unwrap_or(0) as usize);
    let band: Vec<u8> = got["brightness"].as_array().map(|a| a.iter().map(|v| v.as_u64().unwrap_or(0) as u8).collect()).unwrap_or_default();
    let sample = |x: usize, y: usize| band.get(y * w + x).copied().unwrap_or(0);
    let tc = timecode::read_with(w, h, sample).expect("a valid timecode strip on the rendered picture");
    let bits = tc.to_bits();
    let y = timecode::band_height(h) / 2;
    let (mut zeros, mut ones) = (Vec::new(), Vec::new());
    for i in 0..timecode::CELLS {
        let (a, b) = timecode::cell_span(i, w);
        let v = u32::from(sample((a + b) / 2, y));
        if (bits >> (timecode::CELLS - 1 - i)) & 1 == 1 {
            ones.push(v)
        } else {
            zeros.push(v)
        }
    }
    let mean = |v: &[u32]| v.iter().sum::<u32>() / v.len().max(1) as u32;
    let (dark, bright) = (mean(&zeros), mean(&ones));
    assert!((8..=28).contains(&dark), "luma 16 rendered as {dark}: shadows crushed (full range not signalled?)");
    assert!((222..=247).contains(&bright), "luma 235 rendered as {bright}: highlights clipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_on_a_slow_camera_asks_for_few_keyframes_and_sees_no_freezes() {
    // One frame every 5 s through the MJPEG ingest, played for 30 s.
    let cam = camera::start(Frames::Pattern { width: 640, height: 360, strip_huffman: false }, 0.2, Framing::FfmpegCrlf).await;
    let relay = start_relay(vec![mjpeg_stream("deep", &cam.url(), None)]).await;
    let stream = relay.state().stream("deep").expect("stream");
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/deep/", base_url(&relay))).await.expect("open page");
    wait_for_page(c, "a picture at once on a 0.2 fps stream", 10, |v| count(v, "frames") > 0).await;

    let requests_before = stream.track.keyframe_requests.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(30)).await;
    let last = page_status(c).await;
    let requests = stream.track.keyframe_requests.load(Ordering::Relaxed) - requests_before;
    assert!(requests <= 3, "the relay got {requests} PLI/FIR in 30 s ({last})");
    assert!(count(&last, "plis") <= 3, "Chromium sent too many PLIs: {last}");
    assert!(count(&last, "frames") >= 25, "about a frame a second kept the player fed: {last}");
    assert_eq!(last["freezes"].as_u64(), Some(0), "no freeze detected: {last}");
    browser.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_keeps_playing_through_a_camera_outage_and_says_so() {
    let cam = camera::start(Frames::Pattern { width: 640, height: 360, strip_huffman: false }, 25.0, Framing::FfmpegCrlf).await;
    let relay = start_relay(vec![mjpeg_stream("scope", &cam.url(), None)]).await;
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/scope/", base_url(&relay))).await.expect("open page");
    wait_for_page(c, "live frames", 10, |v| count(v, "frames") >= 25 && v["source"] == "live").await;

    cam.stop().await;
    let offline = wait_for_page(c, "the page to say the camera is offline", 10, |v| {
        v["source"] == "offline" && v["source_text"].as_str().is_some_and(|s| s.starts_with("source offline"))
    })
    .await;
    assert_eq!(offline["pc"], "connected", "the WebRTC session stays up: {offline}");
    assert_eq!(offline["transport"], "webrtc", "the last picture stays: {offline}");
    save_screenshot(c, "player-source-offline").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = count(&page_status(c).await, "frames");
    cam.restart().await;
    let back = tokio::time::Instant::now();
    wait_for_page(c, "the page to say the camera is live", 10, |v| v["source"] == "live").await;
    // During the outage only the once-a-second repeat arrives; 15 more frames means the
    // camera's 25 fps are decoded again.
    let deadline = back + Duration::from_secs(2);
    let mut frames = before;
    while frames < before + 15 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        frames = count(&page_status(c).await, "frames");
    }
    assert!(frames >= before + 15, "camera frames decoded again within 2 s of its return: {before} -> {frames}");
    assert_eq!(relay.state().sessions_created(), 1, "no reload, no new session");
    browser.close().await;
    relay.shutdown().await;
}

/// Playout delay (0, 0) is what lets Chromium render a frame the moment it is decoded. It must be
/// negotiated (the answer maps it, Chromium's receiver takes it) and be on the wire: a UDP proxy
/// in the media path reads the RTP headers, which SRTP leaves in the clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_negotiates_playout_delay_and_every_video_packet_carries_zero_zero() {
    let p = ProxiedPlayer::start(vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)]).await;
    let (c, media) = (&p.browser.client, &p.media);
    let negotiated = c
        .execute(
            r#"const pc = document.querySelector(".scopecast").scopecast.pc;
               const uri = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay";
               const line = pc.remoteDescription.sdp.split("\r\n").find((l) => l.startsWith("a=extmap:") && l.endsWith(" " + uri));
               const taken = pc.getReceivers()[0].getParameters().headerExtensions.find((e) => e.uri === uri);
               return { line: line || null, id: taken ? taken.id : null };"#,
            vec![],
        )
        .await
        .expect("read the negotiation");
    let id = negotiated["id"].as_u64().unwrap_or_else(|| panic!("Chromium's receiver did not take playout-delay: {negotiated}"));
    assert!(negotiated["line"].as_str().is_some_and(|l| l.starts_with(&format!("a=extmap:{id} "))), "the answer maps it: {negotiated}");

    let seen = media.downstream();
    assert!(seen.rtp_packets >= 50, "50 frames of video went through the proxy: {seen:?}");
    let (carrying, value) = seen.extensions.get(&(id as u8)).cloned().unwrap_or_default();
    assert!(carrying * 100 >= seen.rtp_packets * 99, "{carrying} of {} RTP packets carry extension {id}", seen.rtp_packets);
    assert_eq!(value, vec![0, 0, 0], "minimum and maximum delay both 0");
    p.stop().await;
}

/// Loss recovery: at 5 % random loss each way, Chromium NACKs what it misses and the relay
/// resends it from its NACK responder's buffer. The proxy sees sequence numbers go by twice, and
/// Chromium counts almost none of the dropped packets as lost (without resending, about 5 %).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_nacks_lost_packets_and_the_relay_resends_them() {
    use scopecast_tests::udp_proxy::Impairment;
    let p = ProxiedPlayer::start(vec![StreamConfig::test_pattern("telescope", 1280, 720, 25.0)]).await;
    let (c, media) = (&p.browser.client, &p.media);
    let before = page_status(c).await;
    let sent_before = media.downstream();

    media.set_impairment(Impairment { loss: 0.05, ..Impairment::default() });
    tokio::time::sleep(Duration::from_secs(10)).await;
    media.set_impairment(Impairment::default());
    tokio::time::sleep(Duration::from_secs(1)).await; // the last retransmissions arrive
    let after = page_status(c).await;
    let sent = media.downstream();

    let delta = |key: &str| count(&after, key).saturating_sub(count(&before, key));
    let (rtp, resent) = (sent.rtp_packets - sent_before.rtp_packets, sent.resent - sent_before.resent);
    let lost = delta("lost");
    assert!(rtp >= 500, "enough packets to lose some: {rtp}");
    eprintln!("at 5 % loss: {rtp} RTP packets, {resent} resent, {} NACKs, {lost} lost for good", delta("nacks"));
    assert!(delta("nacks") >= 10, "Chromium asked for what it missed: {before} -> {after}");
    assert!(resent >= 10, "the relay resent packets: {resent} of {rtp}");
    assert!(lost * 100 <= rtp, "{lost} of {rtp} packets lost for good at 5 % loss ({resent} resent): {after}");
    assert!(delta("frames") >= 200, "the picture kept moving: {before} -> {after}");
    p.stop().await;
}

/// A lossy, distant link: 2 % random loss each way and 25 ms each way (50 ms RTT) on the media,
/// for a minute, with the noisy deep-sky scene at 2 Mbit/s (and its renditions, as a viewer on
/// such a link would have). NACKs and keyframe requests must keep the picture going: at most
/// one freeze of 500 ms or more (no new decoded frame, sampled every 50 ms) in that minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_at_two_percent_loss_and_50_ms_rtt_freezes_at_most_once_a_minute() {
    use scopecast::media::scene::Scene;
    use scopecast_tests::udp_proxy::Impairment;
    let logs = scopecast_tests::logs::capture();
    let mut sky = StreamConfig::test_scene("telescope", Scene::DeepSky, 1280, 720, 25.0);
    sky.renditions = scopecast_tests::small_and_tiny();
    let p = ProxiedPlayer::start(vec![sky]).await;
    let (c, media) = (&p.browser.client, &p.media);
    media.set_impairment(Impairment { loss: 0.02, delay: Duration::from_millis(25), ..Impairment::default() });
    let before = page_status(c).await;
    let start = tokio::time::Instant::now();
    let (mut freezes, mut longest) = (Vec::new(), Duration::ZERO);
    let (mut last_frames, mut last_change) = (count(&before, "frames"), start);
    while start.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let frames = count(&page_status(c).await, "frames");
        let now = tokio::time::Instant::now();
        if frames != last_frames {
            let gap = now - last_change;
            longest = longest.max(gap);
            if gap >= Duration::from_millis(500) {
                freezes.push((last_change - start, gap));
            }
            (last_frames, last_change) = (frames, now);
        }
    }
    media.set_impairment(Impairment::default());
    let after = page_status(c).await;
    let delta = |key: &str| count(&after, key).saturating_sub(count(&before, key));
    let fps = delta("frames") as f64 / 60.0;
    let status: scopecast_shared::StreamInfo =
        reqwest::get(format!("{}/api/v1/streams/telescope", base_url(&p.relay))).await.expect("status").json().await.expect("StreamInfo");
    eprintln!("the viewer's rendition: {:?}; moves: {:?}", status.sessions, logs.lines_with(&["viewer moved", "telescope"]));
    eprintln!(
        "2 % loss, 50 ms RTT, 60 s: {fps:.1} fps, freezes of 500 ms or more at {freezes:?}, longest gap {longest:?}; {} NACKs, {} lost for good of {}, {} PLIs; width {}",
        delta("nacks"),
        delta("lost"),
        delta("received"),
        delta("plis"),
        count(&after, "width")
    );
    assert!(freezes.len() <= 1, "freezes of 500 ms or more at 2 % loss and 50 ms RTT: {freezes:?}");
    assert!(fps >= 20.0, "the picture kept moving at about the camera's 25 fps: {fps:.1}");
    p.stop().await;
}

/// Relay chaining: an edge relay pulls the origin's stream over WHEP (`whep://`) and passes its
/// H.264 through to Chromium, with no encoder of its own. The origin restarts: the edge says
/// `offline`, pulls again with backoff, and Chromium's session on the edge carries on into the
/// new upstream session's frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_relay_passes_an_origins_stream_through_to_chromium_and_rides_out_an_origin_restart() {
    use scopecast::config::Config;
    use scopecast_tests::{start_relay_config, test_config};
    let origin_config = || test_config(vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)]);
    let origin = start_relay_config(origin_config()).await;
    let origin_http = origin.http_addr();
    let source = format!("whep://{origin_http}/telescope/whep");
    let edge_stream = StreamConfig::from_source("telescope", &source, "streams.telescope.source").expect("a whep:// source");
    let edge = start_relay_config(test_config(vec![edge_stream])).await;
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/telescope/", base_url(&edge))).await.expect("open the edge's page");
    let playing = wait_for_page(c, "the origin's frames through the edge", 20, |v| v["transport"] == "webrtc" && count(v, "frames") >= 50).await;
    assert_eq!((count(&playing, "width"), count(&playing, "height")), (640, 360), "{playing}");

    let info = |relay: &scopecast::Relay| relay.state().streams["telescope"].info();
    let edge_info = info(&edge);
    assert_eq!(edge_info.video, scopecast_shared::api::VideoPath::Passthrough);
    assert_eq!(edge_info.frames_encoded, 0, "the edge encodes nothing");
    assert!(edge_info.frames_in >= 50, "{edge_info:?}");
    assert!(edge.state().streams["telescope"].encoder.is_none(), "no encoder exists on the edge");
    assert_eq!(info(&origin).viewers.webrtc, 1, "the origin has one viewer, the edge");
    // Snapshots of the passed-through stream: its H.264 decoded (the kept GOP first), the
    // picture the origin sends.
    let res = reqwest::get(format!("{}/telescope/snapshot.jpg", base_url(&edge))).await.expect("edge answers");
    assert_eq!(res.status(), 200);
    let jpeg = res.bytes().await.expect("a snapshot");
    let header = turbojpeg::read_header(&jpeg).expect("a JPEG");
    assert_eq!((header.width, header.height), (640, 360));
    assert_eq!(info(&edge).frames_encoded, 0, "a picture decoded, nothing encoded");

    // The origin restarts on the same address.
    origin.shutdown().await;
    let edge_stream = std::sync::Arc::clone(&edge.state().streams["telescope"]);
    eventually(5, "the edge to say its source is offline", || edge_stream.state().state == scopecast_shared::SourceState::Offline).await;
    wait_for_page(c, "the player to show the source offline", 5, |v| v["source"] == "offline").await;
    let before = count(&page_status(c).await, "frames");
    let origin = start_relay_config(Config { http: origin_http, ..origin_config() }).await;
    let back = wait_for_page(c, "frames from the restarted origin", 20, |v| count(v, "frames") >= before + 50 && v["source"] == "live").await;
    assert_eq!(back["transport"], "webrtc", "{back}");
    assert_eq!((edge.state().sessions_created(), edge.session_count()), (1, 1), "the viewer kept its session on the edge");
    assert_eq!(info(&edge).frames_encoded, 0);
    browser.close().await;
    edge.shutdown().await;
    origin.shutdown().await;
}

/// A stream with renditions, in Chromium: the answer offers transport-wide feedback and
/// Chromium sends it (the API shows what it says arrived), a clean link keeps the top, and a pin (as an embedding UI would send
/// it, `PUT {session}/rendition`) moves the picture at once, inside the same session, without
/// a freeze.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_sends_transport_wide_feedback_and_a_pinned_rendition_plays_within_the_session() {
    let relay = start_relay(vec![scopecast_tests::laddered_pattern("telescope")]).await;
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/telescope/", base_url(&relay))).await.expect("open page");
    let playing = wait_for_page(c, "the full rendition", 20, |v| count(v, "frames") >= 25 && count(v, "width") == 1280).await;
    let session = playing["session"].as_str().expect("the page's session URL").to_owned();

    let api = format!("{}/api/v1/streams/telescope", base_url(&relay));
    let info = || async { reqwest::get(&api).await.expect("status").json::<scopecast_shared::StreamInfo>().await.expect("StreamInfo") };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while info().await.sessions.first().and_then(|s| s.received_bps).is_none_or(|bps| bps < 100_000) {
        assert!(tokio::time::Instant::now() < deadline, "no transport-wide feedback from Chromium: {:?}", info().await.sessions);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let viewer = info().await.sessions[0].clone();
    assert_eq!(viewer.rendition, "full", "a clean loopback link keeps the top: {viewer:?}");

    let frames_before = count(&page_status(c).await, "frames");
    let res = reqwest::Client::new().put(format!("{session}/rendition")).body("tiny").send().await.expect("PUT rendition");
    assert_eq!(res.status(), 200);
    let moved = wait_for_page(c, "the tiny rendition", 10, |v| count(v, "width") == 320).await;
    assert!(count(&moved, "frames") > frames_before, "{moved}");
    let viewer = info().await.sessions[0].clone();
    assert_eq!((viewer.rendition.as_str(), viewer.pinned), ("tiny", true), "{viewer:?}");
    assert_eq!(relay.session_count(), 1, "the same session");
    let later = wait_for_page(c, "frames of the tiny rendition", 10, |v| count(v, "frames") >= count(&moved, "frames") + 10).await;
    assert_eq!(count(&later, "freezes"), 0, "no freeze through the move: {later}");
    browser.close().await;
    relay.shutdown().await;
}
