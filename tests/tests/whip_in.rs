//! WHIP ingest against real publishers: GStreamer's webrtcbin and aiortc, with a WHEP viewer
//! that decodes. H.264 passed through, pictures for snapshots, the publisher token, viewers'
//! keyframe requests reaching the publisher, a publisher leaving as an outage the viewer rides
//! out, and a crashed publisher replaced by its successor.

use scopecast::config::{Secret, SecurityConfig, SourceConfig, StreamConfig};
use scopecast::Relay;
use scopecast_shared::api::{SourceKind, VideoPath};
use scopecast_shared::SourceState;
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::whip_publisher::WhipPublisher;
use scopecast_tests::{base_url, eventually, one_at_a_time, start_relay_config, test_config};
use std::time::Duration;

const PUBLISHER_TOKEN: &str = "publisher-s3cret";
const VIEWER_TOKEN: &str = "viewer-t0ken-only";

fn whip_stream(name: &str, token: Option<&str>) -> StreamConfig {
    let mut stream = StreamConfig::from_source(name, "whip", "test").expect("a whip source");
    if let SourceConfig::Whip { token: t, .. } = &mut stream.source {
        *t = token.map(|t| Secret(t.to_owned()));
    }
    stream
}

/// A relay whose WebRTC port listens on every address: the publishers' ICE (libnice, aioice)
/// offers no loopback candidates, only this machine's addresses.
async fn relay_for_publishers(streams: Vec<StreamConfig>, security: SecurityConfig) -> Relay {
    let mut config = test_config(streams);
    config.ice.udp = "0.0.0.0:0".parse().expect("address");
    config.security = security;
    start_relay_config(config).await
}

async fn snapshot_size(base: &str, name: &str) -> (u32, u32) {
    let res = reqwest::get(format!("{base}/{name}/snapshot.jpg")).await.expect("snapshot answers");
    assert_eq!(res.status(), 200, "{name}: {}", res.text().await.unwrap_or_default());
    let jpeg = res.bytes().await.expect("body");
    let h = turbojpeg::read_header(&jpeg).expect("a JPEG");
    (h.width as u32, h.height as u32)
}

/// GStreamer publishes (with audio, which is dropped); a viewer decodes its H.264 as it was
/// sent. The publisher leaves with DELETE: the stream is offline, the viewer keeps its session,
/// and aiortc, publishing next, continues the same picture timeline for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_come_and_go_and_the_viewer_sees_each_one() {
    let _serial = one_at_a_time().await;
    let relay = relay_for_publishers(vec![whip_stream("scope", Some(PUBLISHER_TOKEN))], SecurityConfig::default()).await;
    let base = base_url(&relay);
    let stream = std::sync::Arc::clone(&relay.state().streams["scope"]);
    let info = stream.info();
    assert_eq!(info.source, SourceKind::Whip);
    assert_eq!(stream.state().state, SourceState::Offline);
    assert!(stream.state().last_error.unwrap_or_default().contains("waiting for a WHIP publisher"), "{:?}", stream.state());

    let gst = WhipPublisher::gstreamer(&format!("{base}/scope/whip"), Some(PUBLISHER_TOKEN), &["--audio", "--gop", "50"]);
    let answered = gst.wait_for("answered", 15).await.unwrap_or_else(|| panic!("no answer: {:?}", gst.lines()));
    assert!(answered.starts_with("answered 201 ") && answered.contains("/scope/whip/"), "{answered}");
    eventually(15, "the stream to be live", || stream.state().state == SourceState::Live).await;

    let mut viewer = WhepViewer::connect(&format!("{base}/scope/whep")).await.expect("WHEP negotiation");
    let frames = viewer.collect(40, Duration::from_secs(20)).await;
    assert!(frames.len() >= 40, "decoded only {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)), "the publisher's size");
    let info = stream.info();
    assert_eq!(info.video, VideoPath::Passthrough, "{info:?}");
    assert_eq!(info.frames_encoded, 0, "nothing encoded again");
    assert!(info.source_codec.as_deref().is_some_and(|c| c.contains("Baseline")), "{info:?}");
    assert_eq!(snapshot_size(&base, "scope").await, (640, 360));

    assert_eq!(gst.stop(), Some(0), "the publisher exits cleanly");
    eventually(10, "the stream to go offline", || stream.state().state == SourceState::Offline).await;
    let why = stream.state().last_error.unwrap_or_default();
    assert!(why.contains("DELETE"), "the API says the publisher left: {why}");
    assert_eq!(relay.session_count(), 1, "the viewer keeps its session through the outage");

    let _ = viewer.take_ready();
    let aiortc = WhipPublisher::aiortc(&format!("{base}/scope/whip"), Some(PUBLISHER_TOKEN), &["--size", "480x270"]);
    assert!(aiortc.wait_for("answered 201", 20).await.is_some(), "aiortc's offer answered: {:?}", aiortc.lines());
    let frames = viewer.collect(25, Duration::from_secs(25)).await;
    assert!(frames.len() >= 25, "frames from aiortc: {}; its log: {:?}", frames.len(), aiortc.lines());
    assert!(frames.iter().rev().take(5).all(|f| (f.width, f.height) == (480, 270)), "aiortc's picture");
    assert_eq!(stream.info().video, VideoPath::Passthrough);
    let rtp = viewer.rtp.lock().expect("log").clone();
    assert_eq!((rtp.ssrcs.len(), rtp.timestamp_regressions), (1, 0), "one continuous stream for the viewer: {rtp:?}");
    assert_eq!(aiortc.stop(), Some(0));
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}

/// Without a kept GOP, a joiner's keyframe request goes to the publisher, which sends one at
/// once, though its own keyframes are 40 s apart. A publisher that crashes (no DELETE) is
/// replaced by the next one, which the viewer then sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyframe_requests_reach_the_publisher_and_a_crashed_one_is_replaced() {
    let _serial = one_at_a_time().await;
    let mut config = whip_stream("scope", None);
    config.gop_cache = false;
    let security = SecurityConfig { token: Some(VIEWER_TOKEN.to_owned()), ..SecurityConfig::default() };
    let relay = relay_for_publishers(vec![config], security).await;
    let base = base_url(&relay);
    let stream = std::sync::Arc::clone(&relay.state().streams["scope"]);
    // Without a publisher token of its own, the stream takes the server's.
    let gst = WhipPublisher::gstreamer(&format!("{base}/scope/whip"), Some(VIEWER_TOKEN), &["--gop", "1000"]);
    assert!(gst.wait_for("answered 201", 15).await.is_some(), "{:?}", gst.lines());
    eventually(15, "the stream to be live", || stream.state().state == SourceState::Live).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // well past the publisher's first keyframe
    let asked_before = gst.lines().iter().filter(|l| l.starts_with("keyframe requests")).count();

    let mut viewer = WhepViewer::connect(&format!("{base}/scope/whep?token={VIEWER_TOKEN}")).await.expect("WHEP negotiation");
    let first = viewer.collect(1, Duration::from_secs(8)).await;
    assert_eq!(first.len(), 1, "a picture long before the publisher's next periodic keyframe");
    let asked_after = gst.lines().iter().filter(|l| l.starts_with("keyframe requests")).count();
    assert!(asked_after > asked_before, "the joiner's request reached the publisher: {:?}", gst.lines());

    gst.crash();
    let next = WhipPublisher::gstreamer(&format!("{base}/scope/whip"), Some(VIEWER_TOKEN), &["--gop", "1000", "--pattern", "zone-plate"]);
    assert!(next.wait_for("answered 201", 15).await.is_some(), "the next publisher is let in: {:?}", next.lines());
    let _ = viewer.take_ready();
    let frames = viewer.collect(25, Duration::from_secs(20)).await;
    assert!(frames.len() >= 25, "frames from the new publisher: {}", frames.len());
    assert_eq!(stream.state().state, SourceState::Live);
    viewer.close().await;
    drop(next);
    relay.shutdown().await;
}

/// A publisher's offer, as webrtcbin or a browser sends it (sendonly H.264).
const SENDONLY_OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtcp-mux\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\na=ssrc:1111 cname:x\r\n";

/// The error contract: the publisher token (not the viewers'), WHIP only where configured,
/// offers checked, unknown sessions 404, each with a problem body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_needs_the_publisher_token_a_whip_stream_and_a_sending_offer() {
    let camera = StreamConfig::test_pattern("pattern", 640, 360, 10.0);
    let security = SecurityConfig { token: Some(VIEWER_TOKEN.to_owned()), ..SecurityConfig::default() };
    let relay = relay_for_publishers(vec![whip_stream("scope", Some(PUBLISHER_TOKEN)), camera], security).await;
    let base = base_url(&relay);
    let http = reqwest::Client::new();
    let post = |path: &str, token: Option<&str>, content_type: &str, body: &str| {
        let mut r = http.post(format!("{base}{path}")).header("content-type", content_type).body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let problem = |res: reqwest::Response| async move {
        let status = res.status().as_u16();
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let body: serde_json::Value = res.json().await.expect("a problem body");
        (status, body["type"].as_str().unwrap_or_default().to_owned())
    };
    let (status, _) = problem(post("/scope/whip", None, "application/sdp", SENDONLY_OFFER).await.expect("answers")).await;
    assert_eq!(status, 401, "no token");
    let res = post("/scope/whip", Some(VIEWER_TOKEN), "application/sdp", SENDONLY_OFFER).await.expect("answers");
    assert!(res.headers()["www-authenticate"].to_str().unwrap_or_default().contains("invalid_token"));
    assert_eq!(problem(res).await.0, 401, "the viewers' token does not publish");
    let (status, kind) = problem(post("/pattern/whip", Some(PUBLISHER_TOKEN), "application/sdp", SENDONLY_OFFER).await.expect("answers")).await;
    assert_eq!((status, kind.ends_with("not-a-whip-stream")), (404, true), "{kind}");
    let (status, _) = problem(post("/scope/whip", Some(PUBLISHER_TOKEN), "text/plain", SENDONLY_OFFER).await.expect("answers")).await;
    assert_eq!(status, 415);
    let (status, _) = problem(post("/scope/whip", Some(PUBLISHER_TOKEN), "application/sdp", "not sdp").await.expect("answers")).await;
    assert_eq!(status, 400);
    let recvonly = SENDONLY_OFFER.replace("a=sendonly", "a=recvonly");
    let (status, kind) = problem(post("/scope/whip", Some(PUBLISHER_TOKEN), "application/sdp", &recvonly).await.expect("answers")).await;
    assert_eq!(status, 422, "{kind}");

    // A well-formed offer is answered, and its resource can be deleted, once.
    let res = post("/scope/whip", Some(PUBLISHER_TOKEN), "application/sdp", SENDONLY_OFFER).await.expect("answers");
    assert_eq!(res.status(), 201);
    assert!(res.headers().contains_key("etag"));
    let location = res.headers()["location"].to_str().expect("Location").to_owned();
    assert!(location.starts_with("/scope/whip/"), "{location}");
    let answer = res.text().await.expect("answer");
    assert!(answer.contains("a=recvonly") && answer.contains("H264"), "{answer}");
    let delete = |token: Option<&str>| {
        let mut r = http.delete(format!("{base}{location}"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    // Trickle: a candidate for the publisher's ICE session.
    let fragment = "a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\n";
    let patch =
        |content_type: &str| http.patch(format!("{base}{location}")).bearer_auth(PUBLISHER_TOKEN).header("content-type", content_type).body(fragment).send();
    assert_eq!(patch("application/trickle-ice-sdpfrag").await.expect("answers").status(), 204);
    assert_eq!(patch("application/sdp").await.expect("answers").status(), 415);
    assert_eq!(delete(None).await.expect("answers").status(), 401, "deleting needs the token too");
    assert_eq!(delete(Some(PUBLISHER_TOKEN)).await.expect("answers").status(), 200);
    let (status, _) = problem(delete(Some(PUBLISHER_TOKEN)).await.expect("answers")).await;
    assert_eq!(status, 404, "gone");
    // Viewers still use their own token.
    let res = http.get(format!("{base}/api/v1/streams/scope")).bearer_auth(VIEWER_TOKEN).send().await.expect("answers");
    assert_eq!(res.status(), 200);
    relay.shutdown().await;
}
