//! A WHEP viewer (webrtc crate) against a real relay on 127.0.0.1: frames decoded, picture
//! size, timecodes, time to first frame, and session teardown.

use scopecast::config::StreamConfig;
use scopecast_tests::camera::{self, Frames, Framing};
use scopecast_tests::viewer::{assert_increasing, hide_behind_mdns, Wants, WhepViewer};
use scopecast_tests::{base_url, eventually, mjpeg_stream, one_at_a_time, start_relay};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pattern_viewer_decodes_increasing_frames_and_delete_ends_the_session() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 640, 480, 25.0)]).await;
    let whep = format!("{}/telescope/whep", base_url(&relay));
    let mut viewer = WhepViewer::connect(&whep).await.expect("WHEP negotiation");
    assert_eq!(relay.session_count(), 1);

    let frames = viewer.collect(60, Duration::from_secs(15)).await;
    assert!(frames.len() >= 50, "decoded only {} frames", frames.len());
    viewer.assert_first_frame_prompt(&frames[0]);
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 480)), "configured size");
    assert!(assert_increasing(&frames) >= 50, "timecodes readable on the decoded pictures");

    assert_eq!(viewer.delete().await.expect("DELETE"), 200);
    assert_eq!(relay.session_count(), 0);
    assert_eq!(viewer.delete().await.expect("DELETE again"), 404, "the session is gone");
    let track = relay.state().track("telescope").expect("stream");
    eventually(10, "the encoder to lose its viewer", || track.readers() == 0).await;
    viewer.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_camera_without_huffman_tables_is_scaled_and_served() {
    let _serial = one_at_a_time().await;
    // A 1280x720 camera whose JPEGs lack DHT segments, parts without Content-Length, LF line
    // ends and junk before the first part; the relay scales to 640x360.
    let cam = camera::start(Frames::Pattern { width: 1280, height: 720, strip_huffman: true }, 25.0, Framing::BareLf).await;
    let relay = start_relay(vec![mjpeg_stream("scope", &cam.url(), Some((640, 360)))]).await;
    let mut viewer = WhepViewer::connect(&format!("{}/scope/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let frames = viewer.collect(60, Duration::from_secs(20)).await;
    assert!(frames.len() >= 50, "decoded only {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)), "scaled to the configured size");
    assert!(assert_increasing(&frames) >= 50, "camera timecodes survive JPEG, scaling and H.264");
    assert_eq!(viewer.delete().await.expect("DELETE"), 200);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_captures_are_ingested_through_each_framing() {
    let _serial = one_at_a_time().await;
    let fixture = |name: &str| std::fs::read(format!("{}/fixtures/mjpeg/{name}", env!("CARGO_MANIFEST_DIR"))).expect("fixture");
    // The real no-DHT USB-camera frame (4:2:2, AVI1), and FFmpeg's 4:2:0 frames from the capture.
    let nodht = bytes::Bytes::from(fixture("nodht-avi1.jpg"));
    let cam = camera::start(Frames::Fixed(vec![nodht]), 10.0, Framing::FfmpegCrlf).await;
    let relay = start_relay(vec![mjpeg_stream("usb", &cam.url(), None)]).await;
    let mut viewer = WhepViewer::connect(&format!("{}/usb/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let frames = viewer.collect(10, Duration::from_secs(15)).await;
    assert!(frames.len() >= 10, "decoded only {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (1280, 720)), "native size kept");
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;

    // FFmpeg's four 640x480 frames from its capture, split out by the relay's own parser.
    let mut parser = scopecast_shared::multipart::MultipartParser::new(Some("ffmpeg"), 1 << 24);
    parser.push(&fixture("ffmpeg-multipart.body.bin"));
    let jpegs: Vec<bytes::Bytes> = std::iter::from_fn(|| parser.next_event())
        .filter_map(|e| match e {
            scopecast_shared::multipart::Event::Jpeg(p) => Some(p.jpeg),
            _ => None,
        })
        .collect();
    assert_eq!(jpegs.len(), 4);
    let cam = camera::start(Frames::Fixed(jpegs), 25.0, Framing::BareLf).await;
    let relay = start_relay(vec![mjpeg_stream("ffmpeg", &cam.url(), None)]).await;
    let mut viewer = WhepViewer::connect(&format!("{}/ffmpeg/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let frames = viewer.collect(20, Duration::from_secs(15)).await;
    assert!(frames.len() >= 20, "decoded only {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 480)));
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_a_slow_stream_sees_a_picture_at_once() {
    let _serial = one_at_a_time().await;
    // One frame every 5 s: the joiner must not wait for the next one.
    let relay = start_relay(vec![StreamConfig::test_pattern("deep", 640, 480, 0.2)]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut viewer = WhepViewer::connect(&format!("{}/deep/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let frames = viewer.collect(1, Duration::from_secs(3)).await;
    assert_eq!(frames.len(), 1, "no picture within 3 s on a 0.2 fps stream");
    viewer.assert_first_frame_prompt(&frames[0]);
    assert!(frames[0].timecode.is_some());
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_that_vanishes_without_delete_is_reaped() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)]).await;
    let mut viewer = WhepViewer::connect(&format!("{}/telescope/whep", base_url(&relay))).await.expect("WHEP negotiation");
    assert!(!viewer.collect(3, Duration::from_secs(10)).await.is_empty());
    // Gone without a word: the relay notices through ICE consent and frees the session.
    viewer.close().await;
    eventually(25, "the vanished session to be reaped", || relay.session_count() == 0).await;
    let track = relay.state().track("telescope").expect("stream");
    eventually(5, "the viewer to be detached", || track.readers() == 0).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_with_only_mdns_candidates_plays_at_once() {
    let _serial = one_at_a_time().await;
    // Chromium on a LAN hides its host addresses behind random .local names. The relay does not
    // try to resolve them (that can stall): the browser's own checks reach the relay's
    // candidates and become peer-reflexive pairs.
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)]).await;
    let mut sent = String::new();
    let mut viewer = WhepViewer::connect_with(&format!("{}/telescope/whep", base_url(&relay)), Wants::Video, |offer| {
        sent = hide_behind_mdns(&offer);
        sent.clone()
    })
    .await
    .expect("WHEP negotiation");
    let candidates: Vec<&str> = sent.lines().filter(|l| l.starts_with("a=candidate:")).collect();
    assert!(!candidates.is_empty() && candidates.iter().all(|c| c.contains(".local ")), "only mDNS candidates offered: {candidates:?}");
    let frames = viewer.collect(10, Duration::from_secs(10)).await;
    assert!(frames.len() >= 10, "decoded only {} frames", frames.len());
    viewer.assert_first_frame_prompt(&frames[0]);
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_player_that_offers_audio_too_gets_video_and_a_declined_audio_section() {
    let _serial = one_at_a_time().await;
    // Many WHEP players offer audio and video whatever the stream carries.
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)]).await;
    let mut viewer =
        WhepViewer::connect_with(&format!("{}/telescope/whep", base_url(&relay)), Wants::AudioAndVideo, |offer| offer).await.expect("WHEP negotiation");
    let sections: Vec<&str> = viewer.answer.split("\r\nm=").skip(1).collect();
    assert_eq!(sections.len(), 2, "one answer section per offered one: {}", viewer.answer);
    let audio = sections.iter().find(|m| m.starts_with("audio")).expect("audio section");
    assert!(audio.starts_with("audio 0 ") || audio.contains("a=inactive"), "audio declined: {audio}");
    let video = sections.iter().find(|m| m.starts_with("video")).expect("video section");
    assert!(video.contains("a=sendonly"), "{video}");
    let frames = viewer.collect(10, Duration::from_secs(10)).await;
    assert!(frames.len() >= 10, "decoded only {} frames", frames.len());
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ice_restart_by_patch_keeps_the_session_and_its_pictures() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)]).await;
    let whep = format!("{}/telescope/whep", base_url(&relay));
    let mut viewer = WhepViewer::connect(&whep).await.expect("WHEP negotiation");
    assert!(viewer.collect(10, Duration::from_secs(10)).await.len() >= 10, "frames before the restart");
    let first_etag = viewer.etag.clone().expect("ETag");
    let before = viewer.rtp.lock().expect("rtp").clone();

    assert_eq!(viewer.ice_restart(Some("\"stale\"")).await.expect("PATCH"), 412, "a restart naming another state is refused");
    assert_eq!(viewer.ice_restart(None).await.expect("PATCH"), 200, "ICE restart with If-Match: 200 and the answer fragment");
    let second_etag = viewer.etag.clone().expect("a new ETag");
    assert_ne!(second_etag, first_etag);
    let _ = viewer.take_ready();
    let after = viewer.collect(25, Duration::from_secs(10)).await;
    assert!(after.len() >= 25, "pictures again after the restart: {}", after.len());
    assert!(assert_increasing(&after) >= 20);
    assert_eq!((relay.session_count(), relay.state().sessions_created()), (1, 1), "the same session, no new offer");
    // The same stream to the browser: SSRC and sequence numbers carry on across the restart.
    let log = viewer.rtp.lock().expect("rtp").clone();
    assert_eq!(log.ssrcs, before.ssrcs, "one SSRC throughout");
    // A second restart must name the new state.
    assert_eq!(viewer.ice_restart(Some(&first_etag)).await.expect("PATCH"), 412);
    assert_eq!(viewer.ice_restart(None).await.expect("PATCH"), 200);
    assert!(viewer.collect(10, Duration::from_secs(10)).await.len() >= 10, "pictures after a second restart");
    viewer.close().await;
    relay.shutdown().await;
}
