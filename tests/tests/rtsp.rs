//! RTSP cameras against real RTSP servers: GStreamer's (TCP and UDP) and VLC's (UDP only), with
//! a WHEP viewer that decodes. Passthrough where browsers can take the camera's H.264 as it
//! is, transcode where they cannot (High with B-frames), the GOP handed to joiners, camera
//! restarts, credentials, and pictures for MJPEG and snapshots decoded from the H.264.

use scopecast::config::{RtspTransport, SourceConfig, StreamConfig, VideoMode};
use scopecast_shared::api::VideoPath;
use scopecast_shared::SourceState;
use scopecast_tests::rtsp::{free_port, h264_file, RtspCamera};
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::{base_url, eventually, one_at_a_time, start_relay};
use std::time::Duration;

fn rtsp_stream(name: &str, url: &str, transport: RtspTransport, video: VideoMode) -> StreamConfig {
    let mut stream = StreamConfig::from_source(name, url, "test").expect("an rtsp:// source");
    if let SourceConfig::Rtsp { transport: t, video: v, .. } = &mut stream.source {
        (*t, *v) = (transport, video);
    }
    stream
}

async fn snapshot_size(base: &str, name: &str) -> (u32, u32) {
    let res = reqwest::get(format!("{base}/{name}/snapshot.jpg")).await.expect("snapshot answers");
    assert_eq!(res.status(), 200, "{name}: {}", res.text().await.unwrap_or_default());
    let jpeg = res.bytes().await.expect("body");
    let h = turbojpeg::read_header(&jpeg).expect("a JPEG");
    (h.width as u32, h.height as u32)
}

/// Reads MJPEG parts until two pictures came; returns their count.
async fn mjpeg_pictures(base: &str, name: &str) -> usize {
    use futures_util::StreamExt;
    let res = reqwest::get(format!("{base}/{name}/mjpeg")).await.expect("mjpeg answers");
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while memchr_count(&seen) < 2 {
        match tokio::time::timeout_at(deadline, body.next()).await {
            Ok(Some(Ok(chunk))) => seen.extend_from_slice(&chunk),
            _ => break,
        }
    }
    memchr_count(&seen)
}

fn memchr_count(b: &[u8]) -> usize {
    b.windows(3).filter(|w| *w == [0xFF, 0xD8, 0xFF]).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gstreamer_camera_is_passed_through_over_tcp_and_udp_and_gives_pictures_too() {
    let _serial = one_at_a_time().await;
    // One camera per transport: GStreamer's server can abort (an assertion in
    // create_and_plug_queue_to_linked_stream_probe_cb) when a TCP and a UDP client set up one
    // shared media at the same moment. Real cameras do not share our fixture's code.
    let (tcp_camera, udp_camera) = (RtspCamera::gstreamer(free_port(), &["--gop", "50"]), RtspCamera::gstreamer(free_port(), &["--gop", "50"]));
    let relay = start_relay(vec![
        rtsp_stream("tcp", &tcp_camera.url(), RtspTransport::Auto, VideoMode::Auto),
        rtsp_stream("udp", &udp_camera.url(), RtspTransport::Udp, VideoMode::Auto),
    ])
    .await;
    let base = base_url(&relay);
    for (name, transport) in [("tcp", "tcp"), ("udp", "udp")] {
        let mut viewer = WhepViewer::connect(&format!("{base}/{name}/whep")).await.expect("WHEP negotiation");
        let frames = viewer.collect(50, Duration::from_secs(20)).await;
        assert!(frames.len() >= 50, "{name}: decoded only {} frames", frames.len());
        assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)), "{name}: the camera's own size");
        let info = relay.state().streams[name].info();
        assert_eq!(info.video, VideoPath::Passthrough, "{info:?}");
        assert_eq!(info.source_transport.as_deref(), Some(transport), "{info:?}");
        assert!(info.video_reason.as_deref().is_some_and(|r| r.contains("Constrained Baseline")), "{info:?}");
        assert!(info.source_codec.as_deref().is_some_and(|c| c.contains("640x360") && c.contains("42c0")), "{info:?}");
        assert_eq!(info.frames_encoded, 0, "nothing encoded: {info:?}");
        assert_eq!((info.width, info.height), (Some(640), Some(360)));
        let rtp = viewer.rtp.lock().expect("log").clone();
        assert_eq!((rtp.ssrcs.len(), rtp.sequence_gaps, rtp.timestamp_regressions), (1, 0, 0), "{rtp:?}");
        viewer.delete().await.expect("DELETE");
        viewer.close().await;
    }
    // Pictures for MJPEG clients and snapshots, decoded from the passed-through H.264.
    assert_eq!(snapshot_size(&base, "tcp").await, (640, 360));
    assert!(mjpeg_pictures(&base, "udp").await >= 2, "MJPEG pictures of a passed-through stream");
    assert_eq!(relay.state().streams["tcp"].info().frames_encoded, 0, "pictures decoded, nothing encoded");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vlc_refuses_tcp_so_the_relay_falls_back_to_udp() {
    let _serial = one_at_a_time().await;
    let camera = RtspCamera::vlc(free_port(), &h264_file(50));
    let relay = start_relay(vec![rtsp_stream("vlc", &camera.url(), RtspTransport::Auto, VideoMode::Auto)]).await;
    let mut viewer = WhepViewer::connect(&format!("{}/vlc/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let frames = viewer.collect(30, Duration::from_secs(25)).await;
    assert!(frames.len() >= 30, "decoded only {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)));
    let info = relay.state().streams["vlc"].info();
    assert_eq!((info.video, info.source_transport.as_deref()), (VideoPath::Passthrough, Some("udp")), "{info:?}");
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_profile_camera_with_b_frames_is_transcoded_and_says_why() {
    let _serial = one_at_a_time().await;
    // One camera per stream: a second client joining GStreamer's shared media before its sink
    // has a segment aborts the server (an assertion in gst_rtsp_media_get_rates), and x264's
    // B-frame delay widens that window. Real cameras do not share our fixture's code.
    let args = ["--profile", "high", "--bframes", "2", "--gop", "50"];
    let (camera, forced_camera) = (RtspCamera::gstreamer(free_port(), &args), RtspCamera::gstreamer(free_port(), &args));
    let relay = start_relay(vec![
        rtsp_stream("bframes", &camera.url(), RtspTransport::Auto, VideoMode::Auto),
        rtsp_stream("forced", &forced_camera.url(), RtspTransport::Tcp, VideoMode::Transcode),
    ])
    .await;
    let base = base_url(&relay);
    for name in ["bframes", "forced"] {
        let mut viewer = WhepViewer::connect(&format!("{base}/{name}/whep")).await.expect("WHEP negotiation");
        let frames = viewer.collect(40, Duration::from_secs(25)).await;
        assert!(frames.len() >= 40, "{name}: decoded only {} frames", frames.len());
        assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)));
        let info = relay.state().streams[name].info();
        assert_eq!(info.video, VideoPath::Transcoded, "{info:?}");
        let reason = info.video_reason.clone().unwrap_or_default();
        let expected = if name == "forced" { "configured" } else { "B-frames" };
        assert!(reason.contains(expected), "{name}: {reason}");
        assert!(info.frames_encoded >= 40, "{info:?}");
        assert!(info.source_codec.as_deref().is_some_and(|c| c.contains("High")), "{info:?}");
        let rtp = viewer.rtp.lock().expect("log").clone();
        assert_eq!((rtp.sequence_gaps, rtp.timestamp_regressions), (0, 0), "{rtp:?}");
        viewer.delete().await.expect("DELETE");
        viewer.close().await;
    }
    assert_eq!(snapshot_size(&base, "bframes").await, (640, 360));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_high_profile_camera_without_b_frames_is_passed_through_as_high() {
    let _serial = one_at_a_time().await;
    let camera = RtspCamera::gstreamer(free_port(), &["--profile", "high", "--gop", "50"]);
    let relay = start_relay(vec![rtsp_stream("high", &camera.url(), RtspTransport::Auto, VideoMode::Auto)]).await;
    let stream = std::sync::Arc::clone(&relay.state().streams["high"]);
    eventually(15, "the camera's profile to be known", || stream.info().source_codec.is_some()).await;
    let mut viewer = WhepViewer::connect(&format!("{}/high/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let profiles: Vec<&str> = viewer.answer.lines().filter_map(|l| l.split("profile-level-id=").nth(1)).collect();
    assert!(!profiles.is_empty() && profiles.iter().all(|p| p.starts_with("6400")), "the answer names High, the camera's profile: {profiles:?}");
    let frames = viewer.collect(40, Duration::from_secs(20)).await;
    assert!(frames.len() >= 40, "decoded only {} frames", frames.len());
    let info = stream.info();
    assert_eq!(info.video, VideoPath::Passthrough, "{info:?}");
    assert!(info.source_codec.as_deref().is_some_and(|c| c.contains("High")), "{info:?}");
    assert_eq!(info.frames_encoded, 0);
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}

/// A camera with a 4 s GOP: a joiner mid-GOP decodes its first frame from the kept GOP, before
/// the camera's next IDR. (The first-frame benchmark measures how soon.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_mid_gop_gets_a_picture_without_waiting_for_the_next_idr() {
    let _serial = one_at_a_time().await;
    let camera = RtspCamera::gstreamer(free_port(), &["--gop", "100"]);
    let relay = start_relay(vec![rtsp_stream("cam", &camera.url(), RtspTransport::Auto, VideoMode::Auto)]).await;
    let track = relay.state().track("cam").expect("stream");
    // Early in the second half of a GOP: the next IDR is over a second away.
    eventually(20, "half a GOP kept", || (40..=55).contains(&track.gop_frames())).await;
    let before = track.gop_frames();
    let mut viewer = WhepViewer::connect(&format!("{}/cam/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let first = viewer.collect(1, Duration::from_secs(10)).await;
    assert_eq!(first.len(), 1, "a first frame");
    let after = track.gop_frames();
    // A new IDR would have restarted the kept GOP below `before`; a wrap past it takes 4 s.
    // (The frame may come within one frame time, so the GOP need not have grown.)
    assert!(after >= before, "the GOP restarted ({before} -> {after}): the joiner waited for a new IDR");
    let waited = first[0].at.duration_since(viewer.posted_at);
    assert!(waited < Duration::from_millis(1800), "the first frame took {waited:?}, as long as the rest of the GOP");
    eprintln!("first frame {:?} after the answer, {before} frames into the GOP", first[0].at.duration_since(viewer.answered_at));
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}

/// The camera goes away and comes back on the same port: the stream says offline, then live,
/// and the viewer's session carries on into the new RTSP session's frames.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_restart_is_an_outage_the_viewer_rides_out() {
    let _serial = one_at_a_time().await;
    let port = free_port();
    let camera = RtspCamera::gstreamer(port, &["--gop", "25"]);
    let mut config = rtsp_stream("cam", &camera.url(), RtspTransport::Auto, VideoMode::Auto);
    config.stall_timeout = Duration::from_secs(2);
    let relay = start_relay(vec![config]).await;
    let stream = std::sync::Arc::clone(&relay.state().streams["cam"]);
    let mut viewer = WhepViewer::connect(&format!("{}/cam/whep", base_url(&relay))).await.expect("WHEP negotiation");
    assert!(viewer.collect(25, Duration::from_secs(20)).await.len() >= 25);
    camera.stop();
    eventually(10, "the stream to go offline", || stream.state().state == SourceState::Offline).await;
    let _ = viewer.take_ready();
    let _camera = RtspCamera::gstreamer(port, &["--gop", "25"]);
    eventually(15, "the stream to be live again", || stream.state().state == SourceState::Live).await;
    let frames = viewer.collect(25, Duration::from_secs(15)).await;
    assert!(frames.len() >= 25, "frames after the restart: {}", frames.len());
    assert_eq!(relay.session_count(), 1, "the same session");
    let rtp = viewer.rtp.lock().expect("log").clone();
    assert_eq!((rtp.ssrcs.len(), rtp.timestamp_regressions), (1, 0), "one continuous stream: {rtp:?}");
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_reach_the_camera_and_nowhere_else() {
    let _serial = one_at_a_time().await;
    let logs = scopecast_tests::logs::capture();
    let camera = RtspCamera::gstreamer(free_port(), &["--user", "astro", "--password", "s3cr%t@m31"]);
    let relay = start_relay(vec![
        rtsp_stream("good", &camera.url_with("astro", "s3cr%25t%40m31"), RtspTransport::Auto, VideoMode::Auto),
        rtsp_stream("bad", &camera.url_with("astro", "wrong-pass"), RtspTransport::Auto, VideoMode::Auto),
    ])
    .await;
    let mut viewer = WhepViewer::connect(&format!("{}/good/whep", base_url(&relay))).await.expect("WHEP negotiation");
    assert!(viewer.collect(10, Duration::from_secs(20)).await.len() >= 10, "frames with the right password");
    let bad = std::sync::Arc::clone(&relay.state().streams["bad"]);
    eventually(15, "the wrong password to be an offline source", || bad.state().state == SourceState::Offline).await;
    let error = bad.state().last_error.unwrap_or_default();
    assert!(error.contains("401"), "the camera's refusal is shown: {error}");
    let api = reqwest::get(format!("{}/api/v1/streams", base_url(&relay))).await.expect("API").text().await.expect("body");
    assert!(!api.contains("s3cr") && !api.contains("wrong-pass"), "no password in the API: {api}");
    let logged = logs.lines_with(&["bad"]);
    assert!(logged.iter().any(|l| l.contains("source offline") && l.contains("401")), "the refusal is logged once: {logged:?}");
    assert!(logs.lines_with(&["s3cr"]).is_empty() && logs.lines_with(&["wrong-pass"]).is_empty(), "no password in the log");
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}
