//! Streams that survive the telescope: camera outages under a live viewer, on-demand cameras,
//! MJPEG and snapshots from one upstream connection, and the policy for offline sources.

use scopecast::config::StreamConfig;
use scopecast::timing::unix_ms;
use scopecast_shared::{OfflinePolicy, Problem, SourceState};
use scopecast_tests::camera::{self, Frames, Framing};
use scopecast_tests::clients::MjpegReader;
use scopecast_tests::logs;
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::{base_url, eventually, mjpeg_stream, start_relay};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;

fn pattern(width: usize, height: usize) -> Frames {
    Frames::Pattern { width, height, strip_huffman: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_rides_out_three_camera_outages_in_one_session() {
    let logs = logs::capture();
    let cam = camera::start(pattern(640, 360), 25.0, Framing::FfmpegCrlf).await;
    let relay = start_relay(vec![mjpeg_stream("outage", &cam.url(), None)]).await;
    let stream = relay.state().stream("outage").expect("stream");
    let mut viewer = WhepViewer::connect(&format!("{}/outage/whep", base_url(&relay))).await.expect("WHEP negotiation");
    assert!(viewer.collect(10, Duration::from_secs(10)).await.len() >= 10, "frames before the first outage");

    for round in 1..=3 {
        cam.stop().await;
        eventually(5, "the stream to report the outage", || stream.state().state == SourceState::Offline).await;
        viewer.take_ready();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let during = viewer.take_ready();
        assert!(during.len() >= 3, "round {round}: the last picture kept coming during the outage ({} frames)", during.len());

        let (back_ms, back) = (unix_ms(), Instant::now());
        cam.restart().await;
        let fresh = viewer.first_captured_after(back_ms, Duration::from_secs(5)).await;
        let resumed = fresh.map(|f| f.at.duration_since(back));
        assert!(resumed.is_some_and(|d| d < Duration::from_secs(1)), "round {round}: new camera frames decoded {resumed:?} after its return");
        eventually(2, "the stream to be live again", || stream.state().state == SourceState::Live).await;
    }

    assert_eq!(viewer.pc.connection_state(), RTCPeerConnectionState::Connected);
    assert_eq!((relay.session_count(), relay.state().sessions_created()), (1, 1), "the same session throughout, no new one");
    let rtp = viewer.rtp.lock().expect("rtp log").clone();
    assert_eq!((rtp.tracks, rtp.ssrcs.len()), (1, 1), "one track, one SSRC: {rtp:?}");
    assert_eq!((rtp.sequence_gaps, rtp.timestamp_regressions), (0, 0), "continuous sequence numbers and timestamps: {rtp:?}");
    // Each outage retried several times (a short backoff over 5 s), yet is one line.
    let offline_lines = logs.lines_with(&["source offline", "outage"]);
    assert_eq!(offline_lines.len(), 3, "one log line per outage: {offline_lines:#?}");
    assert_eq!(logs.lines_with(&["source live", "outage"]).len(), 4, "first connection and three returns");
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_joining_a_slow_camera_mid_gap_decodes_at_once() {
    // One frame every 5 s through the MJPEG ingest; join 2.5 s after the last one.
    let cam = camera::start(pattern(640, 360), 0.2, Framing::FfmpegCrlf).await;
    let relay = start_relay(vec![mjpeg_stream("deep", &cam.url(), None)]).await;
    let stream = relay.state().stream("deep").expect("stream");
    eventually(5, "the first camera frame", || stream.state().state == SourceState::Live).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut viewer = WhepViewer::connect(&format!("{}/deep/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let first = viewer.collect(1, Duration::from_secs(3)).await;
    assert!(!first.is_empty(), "a frame within 3 s");
    viewer.assert_first_frame_prompt(&first[0]);
    assert!(first[0].timecode.is_some(), "the camera's picture, timecode and all");
    // Between camera frames the picture is repeated about once a second.
    let more = viewer.collect(3, Duration::from_secs(4)).await;
    assert!(more.len() >= 3, "repeats keep a slow stream alive: {} frames in 4 s", more.len());
    viewer.delete().await.expect("DELETE");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_camera_is_pulled_only_while_someone_watches() {
    let cam = camera::start(pattern(320, 240), 10.0, Framing::FfmpegCrlf).await;
    let mut config = mjpeg_stream("ondemand", &cam.url(), None);
    config.on_demand = true;
    config.stop_after = Duration::from_secs(2);
    let relay = start_relay(vec![config]).await;
    let base = base_url(&relay);
    let stream = relay.state().stream("ondemand").expect("stream");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(cam.connections.load(Ordering::SeqCst), 0, "nobody watches: the camera is left alone");
    assert_eq!(stream.state().state, SourceState::Idle);

    // A WebRTC viewer brings the camera in, and waits for its first frame.
    let mut viewer = WhepViewer::connect(&format!("{base}/ondemand/whep")).await.expect("WHEP negotiation");
    let frames = viewer.collect(5, Duration::from_secs(10)).await;
    assert_eq!(frames.len(), 5, "frames from the camera once someone watches");
    assert_eq!(cam.connections.load(Ordering::SeqCst), 1);
    viewer.delete().await.expect("DELETE");
    let left = Instant::now();
    eventually(6, "the camera to be let go after the last viewer left", || cam.active.load(Ordering::SeqCst) == 0).await;
    assert!(left.elapsed() >= Duration::from_millis(1500), "kept for stop_after, not dropped at once ({:?})", left.elapsed());
    eventually(2, "the stream to be idle", || stream.state().state == SourceState::Idle).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!((cam.connections.load(Ordering::SeqCst), cam.active.load(Ordering::SeqCst)), (1, 0), "no reconnecting while idle");

    // A snapshot brings it in again for a fresh picture, and an MJPEG client keeps it.
    let started = unix_ms();
    let res = reqwest::get(format!("{base}/ondemand/snapshot.jpg")).await.expect("snapshot");
    assert_eq!(res.status(), 200);
    let captured = res.headers()["x-timestamp"].to_str().expect("x-timestamp").parse::<f64>().expect("seconds");
    assert!(captured * 1000.0 >= started as f64 - 1.0, "a fresh picture, not the one from before idling");
    assert_eq!(cam.connections.load(Ordering::SeqCst), 2);
    let mut mjpeg = MjpegReader::open(&format!("{base}/ondemand/mjpeg")).await.expect("MJPEG");
    assert!(mjpeg.next(Duration::from_secs(5)).await.is_some());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cam.active.load(Ordering::SeqCst), 1, "an MJPEG client keeps the camera connected");
    drop(mjpeg);
    eventually(6, "the camera to be let go after the MJPEG client left", || cam.active.load(Ordering::SeqCst) == 0).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mjpeg_clients_and_snapshots_share_one_camera_connection() {
    let cam = camera::start(pattern(1280, 720), 25.0, Framing::FfmpegCrlf).await;
    // WebRTC gets a smaller picture; MJPEG and snapshots keep the camera's own.
    let relay = start_relay(vec![mjpeg_stream("fan", &cam.url(), Some((320, 180)))]).await;
    let base = base_url(&relay);
    let stream = relay.state().stream("fan").expect("stream");
    let mut a = MjpegReader::open(&format!("{base}/fan/mjpeg")).await.expect("MJPEG a");
    let mut b = MjpegReader::open(&format!("{base}/fan/mjpeg")).await.expect("MJPEG b");
    assert!(a.content_type.starts_with("multipart/x-mixed-replace"), "{}", a.content_type);
    let mut decoder = scopecast::media::jpeg::JpegDecoder::new().expect("decoder");
    for reader in [&mut a, &mut b] {
        let mut last = 0.0;
        for _ in 0..10 {
            let part = reader.next(Duration::from_secs(5)).await.expect("a part");
            let info = decoder.info(&part.jpeg).expect("a JPEG");
            assert_eq!((info.width, info.height), (1280, 720), "the camera's own JPEG");
            let ts = part.timestamp.expect("X-Timestamp on every part");
            assert!(ts > last && (ts * 1000.0 - unix_ms() as f64).abs() < 3000.0, "recent, increasing capture times");
            last = ts;
        }
    }
    assert_eq!(stream.demand.now().mjpeg, 2);
    assert_eq!(cam.connections.load(Ordering::SeqCst), 1, "one upstream connection for every client");

    let res = reqwest::get(format!("{base}/fan/snapshot.jpg")).await.expect("snapshot");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    let captured_ms = (res.headers()["x-timestamp"].to_str().expect("ts").parse::<f64>().expect("seconds") * 1000.0) as u64;
    assert!(unix_ms().abs_diff(captured_ms) < 1000, "the latest picture");
    let jpeg = res.bytes().await.expect("body");
    assert_eq!(decoder.info(&jpeg).map(|i| (i.width, i.height)).ok(), Some((1280, 720)), "full resolution");

    drop(b);
    // A client on a slow link (a small receive window, and it stops reading for 4 s) is
    // skipped ahead rather than queued for: it then gets the newest frames at once, and the
    // relay counts what it skipped.
    let mut slow = SlowClient::open(relay.http_addr(), "/fan/mjpeg").await;
    slow.read_for(Duration::from_millis(500)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let resumed = Instant::now();
    let mut newest_age = u64::MAX;
    while resumed.elapsed() < Duration::from_secs(2) && newest_age > 500 {
        newest_age = slow.read_for(Duration::from_millis(100)).await.iter().map(|ts| unix_ms().saturating_sub(*ts)).min().unwrap_or(newest_age);
    }
    assert!(newest_age <= 500, "caught up with the newest frames ({newest_age} ms old)");
    assert!(stream.mjpeg_skipped.load(Ordering::Relaxed) >= 25, "skipped frames are counted: {}", stream.mjpeg_skipped.load(Ordering::Relaxed));
    drop((a, slow));
    eventually(3, "MJPEG clients to be counted out", || stream.demand.now().mjpeg == 0).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_pattern_serves_mjpeg_and_snapshots_too() {
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 320, 240, 25.0)]).await;
    let base = base_url(&relay);
    let mut mjpeg = MjpegReader::open(&format!("{base}/telescope/mjpeg")).await.expect("MJPEG");
    let mut decoder = scopecast::media::jpeg::JpegDecoder::new().expect("decoder");
    let mut picture = scopecast::media::I420::new(2, 2);
    let mut numbers = Vec::new();
    for _ in 0..10 {
        let part = mjpeg.next(Duration::from_secs(5)).await.expect("a part");
        decoder.decode(&part.jpeg, 1, &mut picture).expect("decodes");
        let tc = scopecast_shared::timecode::read(picture.y(), picture.width, picture.width, picture.height).expect("timecode");
        numbers.push(tc.frame);
    }
    assert!(numbers.windows(2).all(|w| w[1] > w[0]), "the pattern at full rate for an MJPEG client: {numbers:?}");
    let res = reqwest::get(format!("{base}/telescope/snapshot.jpg")).await.expect("snapshot");
    assert_eq!(res.status(), 200);
    decoder.decode(&res.bytes().await.expect("body"), 1, &mut picture).expect("decodes");
    assert_eq!((picture.width, picture.height), (320, 240));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_camera_gets_409_or_a_waiting_session_as_configured() {
    // A camera address where nothing listens.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
    let url = format!("http://{closed}/stream");
    let mut strict = mjpeg_stream("strict", &url, None);
    strict.offline_policy = OfflinePolicy::Reject;
    strict.start_timeout = Duration::from_secs(1);
    let patient = mjpeg_stream("patient", &url, None);
    let relay = start_relay(vec![strict, patient]).await;
    let base = base_url(&relay);
    let strict_stream = relay.state().stream("strict").expect("stream");
    eventually(5, "the camera to be reported offline", || strict_stream.state().state == SourceState::Offline).await;
    assert!(strict_stream.state().last_error.is_some_and(|e| e.contains("connect")), "{:?}", strict_stream.state());

    let (_pc, offer) = scopecast_tests::viewer::make_offer().await.expect("offer");
    let client = reqwest::Client::new();
    let post = |stream: &str| client.post(format!("{base}/{stream}/whep")).header("content-type", "application/sdp").body(offer.clone()).send();
    let res = post("strict").await.expect("POST");
    assert_eq!(res.status(), 409);
    assert_eq!(res.headers()["retry-after"], "2");
    let problem: Problem = res.json().await.expect("problem body");
    assert_eq!(problem.slug(), "source-offline");
    assert!(problem.detail.is_some_and(|d| d.contains("strict")));
    assert_eq!(relay.session_count(), 0);

    let res = client.get(format!("{base}/strict/snapshot.jpg")).send().await.expect("snapshot");
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(res.json::<Problem>().await.expect("problem").slug(), "source-offline");

    // The default policy accepts and lets the viewer wait for the camera.
    assert_eq!(post("patient").await.expect("POST").status(), 201);
    assert_eq!(relay.session_count(), 1);
    relay.shutdown().await;
}

/// An MJPEG client with a small TCP receive window, reading the raw response: the capture
/// times of the parts it gets are all it looks at.
struct SlowClient {
    socket: tokio::net::TcpStream,
    seen: String,
}

impl SlowClient {
    async fn open(addr: std::net::SocketAddr, path: &str) -> Self {
        use tokio::io::AsyncWriteExt;
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(8 * 1024).expect("small receive buffer");
        let mut socket = socket.connect(addr).await.expect("connect");
        socket.write_all(format!("GET {path} HTTP/1.1\r\nHost: relay\r\n\r\n").as_bytes()).await.expect("request");
        Self { socket, seen: String::new() }
    }

    /// Reads for `time`; returns the capture times (Unix ms) of the parts whose headers came.
    async fn read_for(&mut self, time: Duration) -> Vec<u64> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + time;
        let mut buf = vec![0u8; 64 * 1024];
        let mut stamps = Vec::new();
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, self.socket.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            // Part headers are text inside binary JPEG data; keep a tail in case one is split.
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(at) = self.seen.find("X-Timestamp: ") {
                let rest = &self.seen[at + 13..];
                let Some(end) = rest.find("\r\n") else { break };
                if let Ok(secs) = rest[..end].parse::<f64>() {
                    stamps.push((secs * 1000.0) as u64);
                }
                self.seen.drain(..at + 13 + end);
            }
            let keep = self.seen.len().saturating_sub(64);
            self.seen.drain(..self.seen.floor_char_boundary(keep));
        }
        stamps
    }
}
