//! Renditions: a stream encoded at several sizes, each only while watched, and every viewer
//! moved between them inside its one session. Pinned by the viewer (`?rendition=`, `PUT
//! .../rendition`), or chosen by the relay from the viewer's receiver reports: a viewer whose
//! downlink loses packets moves down, and back up once the loss is gone, while a clean viewer
//! of the same stream keeps the full picture.

use scopecast_shared::api::{StreamInfo, ViewerRendition};
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::{base_url, eventually_async, one_at_a_time, start_relay};
use std::sync::atomic::Ordering;
use std::time::Duration;

async fn rendition_of(viewer: &WhepViewer) -> ViewerRendition {
    let res = reqwest::get(format!("{}/rendition", viewer.session_url)).await.expect("GET rendition");
    assert_eq!(res.status(), 200);
    res.json().await.expect("ViewerRendition")
}

async fn pin(viewer: &WhepViewer, name: &str) -> reqwest::Response {
    reqwest::Client::new().put(format!("{}/rendition", viewer.session_url)).body(name.to_owned()).send().await.expect("PUT rendition")
}

async fn stream_info(base: &str) -> StreamInfo {
    reqwest::get(format!("{base}/api/v1/streams/sky")).await.expect("status").json().await.expect("StreamInfo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_viewer_gets_its_rendition_and_moves_when_it_pins_another_in_the_same_session() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![scopecast_tests::laddered_pattern("sky")]).await;
    let base = base_url(&relay);

    let refused = reqwest::Client::new()
        .post(format!("{base}/sky/whep?rendition=huge"))
        .header("content-type", "application/sdp")
        .body(scopecast_tests::viewer::make_offer().await.expect("offer").1)
        .send()
        .await
        .expect("POST");
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap_or_default().contains("unknown-rendition"));

    let mut viewer = WhepViewer::connect(&format!("{base}/sky/whep?rendition=tiny")).await.expect("WHEP negotiation");
    let frames = viewer.collect(15, Duration::from_secs(10)).await;
    assert!(frames.len() >= 15, "decoded only {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (320, 180)), "the tiny rendition's size");
    // Its 10 fps cap: 15 frames take well over a second (25 fps would take 0.6 s).
    let span = frames[14].at.duration_since(frames[1].at);
    assert!(span >= Duration::from_millis(1100), "13 frame intervals in {span:?}: not capped at 10 fps");
    let info = rendition_of(&viewer).await;
    assert_eq!((info.rendition.as_str(), info.pinned, info.reason.as_str()), ("tiny", true, "pinned by the viewer"), "{info:?}");
    assert_eq!(info.renditions, ["full", "small", "tiny"]);
    let status = stream_info(&base).await;
    let readers: Vec<(&str, u32)> = status.renditions.iter().map(|r| (r.name.as_str(), r.readers)).collect();
    assert_eq!(readers, [("full", 0), ("small", 0), ("tiny", 1), ("vp8", 0)], "{status:?}");
    assert_eq!(status.renditions[0].frames_encoded, 0, "the full rendition is not encoded while no one watches it");
    assert_eq!(status.sessions.len(), 1);
    assert_eq!(status.sessions[0].rendition, "tiny");

    let res = pin(&viewer, "small").await;
    assert_eq!(res.status(), 200);
    let _ = viewer.take_ready();
    let frames = viewer.collect(20, Duration::from_secs(5)).await;
    let first_small = frames.iter().position(|f| (f.width, f.height) == (640, 360)).expect("the small rendition within 20 frames");
    assert!(frames[first_small..].iter().all(|f| (f.width, f.height) == (640, 360)), "and only it after the move");
    assert_eq!(rendition_of(&viewer).await.rendition, "small");

    assert_eq!(pin(&viewer, "huge").await.status(), 422);
    let auto: ViewerRendition = pin(&viewer, "auto").await.json().await.expect("ViewerRendition");
    assert!(!auto.pinned, "{auto:?}");

    let rtp = viewer.rtp.lock().expect("log").clone();
    assert_eq!((rtp.tracks, rtp.ssrcs.len(), rtp.sequence_gaps, rtp.timestamp_regressions), (1, 1, 0, 0), "one continuous stream: {rtp:?}");
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lossy_viewer_moves_down_and_back_up_while_a_clean_one_keeps_the_full_rendition() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![scopecast_tests::laddered_pattern("sky")]).await;
    let base = base_url(&relay);
    let whep = format!("{base}/sky/whep");
    let mut clean = WhepViewer::connect(&whep).await.expect("WHEP negotiation");
    let (mut lossy, loss) = WhepViewer::connect_lossy(&whep).await.expect("WHEP negotiation");
    for viewer in [&mut clean, &mut lossy] {
        let frames = viewer.collect(10, Duration::from_secs(10)).await;
        assert!(frames.len() >= 10 && frames.iter().all(|f| (f.width, f.height) == (1280, 720)), "both start at the top");
    }

    // A quarter of the lossy viewer's RTP is lost: it moves down within seconds.
    loss.store(250, Ordering::Relaxed);
    let moved_at = tokio::time::Instant::now();
    eventually_async(10, "the lossy viewer to move down", || async { rendition_of(&lossy).await.rendition != "full" }).await;
    let down = rendition_of(&lossy).await;
    eprintln!("moved down after {:?}: {down:?}", moved_at.elapsed());
    assert!(down.reason.contains("loss") || down.reason.contains("NACKed"), "{down:?}");
    assert_eq!(rendition_of(&clean).await.rendition, "full", "the clean viewer keeps the full rendition");

    // The loss ends: back at the top within 30 s, a step at a time.
    loss.store(0, Ordering::Relaxed);
    let healed_at = tokio::time::Instant::now();
    eventually_async(30, "the viewer to be back at full", || async { rendition_of(&lossy).await.rendition == "full" }).await;
    let up = rendition_of(&lossy).await;
    eprintln!("back at full after {:?}: {up:?}", healed_at.elapsed());
    // This viewer sends transport-wide feedback (the crate's default interceptors): the last
    // step up followed a probe of its link.
    assert!(up.reason.starts_with("up: a probe found"), "{up:?}");
    assert!(up.probed_bps.is_some_and(|bps| bps >= 2_000_000) && up.received_bps.is_some(), "{up:?}");
    let _ = lossy.take_ready();
    let frames = lossy.collect(10, Duration::from_secs(5)).await;
    assert!(frames.len() >= 10 && frames.iter().all(|f| (f.width, f.height) == (1280, 720)), "full-size pictures again");

    assert_eq!(rendition_of(&clean).await.rendition, "full");
    let _ = clean.take_ready();
    assert!(clean.collect(10, Duration::from_secs(5)).await.len() >= 10, "the clean viewer played on");
    // (Its timestamps are not checked: retransmissions arrive late, out of order.)
    let rtp = lossy.rtp.lock().expect("log").clone();
    assert_eq!((rtp.tracks, rtp.ssrcs.len()), (1, 1), "one stream through every move: {rtp:?}");
    for viewer in [clean, lossy] {
        viewer.delete().await.expect("DELETE");
        viewer.close().await;
    }
    relay.shutdown().await;
}

/// The H.264 rung (`/{stream}/h264` as a WebSocket): what a player without UDP decodes.
mod h264_rung {
    use super::*;
    use futures_util::StreamExt;
    use openh264::formats::YUVSource;
    use scopecast_shared::h264_ws::{avc_codec, Unit};
    use scopecast_shared::timecode;
    use tokio_tungstenite::tungstenite::{Error as WsError, Message};

    type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

    async fn open(base: &str, query: &str) -> Socket {
        let url = format!("{}/sky/h264{query}", base.replacen("http://", "ws://", 1));
        tokio_tungstenite::connect_async(url).await.expect("the rung opens").0
    }

    /// The rung at `query` refused before the upgrade: its status and problem body.
    async fn refused(base: &str, query: &str) -> (u16, String) {
        let url = format!("{}/sky/h264{query}", base.replacen("http://", "ws://", 1));
        match tokio_tungstenite::connect_async(url).await {
            Err(WsError::Http(res)) => (res.status().as_u16(), String::from_utf8_lossy(res.body().as_deref().unwrap_or_default()).into_owned()),
            other => panic!("expected the upgrade refused, got {:?}", other.map(|_| ())),
        }
    }

    /// The next access unit: (keyframe, timestamp in µs, Annex B).
    async fn next_unit(ws: &mut Socket) -> (bool, u64, Vec<u8>) {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a message within 5 s").expect("open").expect("no error");
            if let Message::Binary(bytes) = message {
                let unit = Unit::parse(&bytes).expect("every binary message is a unit");
                return (unit.keyframe, unit.timestamp_us, unit.payload.to_vec());
            }
        }
    }

    /// Decodes a unit: its picture's size and its age by the strip (ms), if it made one.
    fn decode(decoder: &mut openh264::decoder::Decoder, annexb: &[u8]) -> Option<((usize, usize), Option<u64>)> {
        let yuv = decoder.decode(annexb).ok()??;
        let (w, h) = yuv.dimensions();
        Some(((w, h), timecode::read(yuv.y(), yuv.strides().0, w, h).map(|t| t.age_ms(now_ms()))))
    }

    fn now_ms() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// Reads units from `ws` for at most `within`, at most `bps` (`None`: as fast as they
    /// come), decoding each, until `done` says so of a decoded picture's size; returns whether
    /// it did. Timestamps must only go forward, through every move.
    async fn read_until(
        ws: &mut Socket,
        decoder: &mut openh264::decoder::Decoder,
        last_ts: &mut Option<u64>,
        bps: Option<u64>,
        within: Duration,
        done: impl Fn((usize, usize)) -> bool,
    ) -> bool {
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            let (_, ts, annexb) = next_unit(ws).await;
            assert!(last_ts.is_none_or(|last| ts > last), "timestamps only go forward: {ts} after {last_ts:?}");
            *last_ts = Some(ts);
            let size = decode(decoder, &annexb).map(|d| d.0);
            if size.is_some_and(&done) {
                return true;
            }
            if let Some(bps) = bps {
                tokio::time::sleep(Duration::from_secs_f64(annexb.len() as f64 * 8.0 / bps as f64)).await;
            }
        }
        false
    }

    /// On "auto", a player whose TCP backs up (it reads slower than the full rendition comes,
    /// through a small receive buffer, as a slow link's would fill) is moved down a rendition;
    /// reading fast again, it is back at full within 30 s, without a new connection.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn on_auto_the_rung_moves_down_when_tcp_backs_up_and_back_up_when_it_drains() {
        let _serial = one_at_a_time().await;
        let relay = start_relay(vec![scopecast_tests::laddered_pattern("sky")]).await;
        let base = base_url(&relay);
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
        let tcp = socket.connect(relay.http_addr()).await.expect("connect");
        let url = format!("{}/sky/h264?rendition=auto", base.replacen("http://", "ws://", 1));
        let (mut ws, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp)).await.expect("the rung opens");
        let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
        let mut last_ts = None;

        // As fast as it comes: the full rendition, and how fast that is.
        assert!(read_until(&mut ws, &mut decoder, &mut last_ts, None, Duration::from_secs(5), |s| s == (1280, 720)).await, "starts at full");
        let started = std::time::Instant::now();
        let mut bytes = 0;
        while started.elapsed() < Duration::from_secs(2) {
            bytes += next_unit(&mut ws).await.2.len();
        }
        let full_bps = (bytes as f64 * 8.0 / started.elapsed().as_secs_f64()) as u64;

        // A quarter of that: a smaller rendition within 20 s.
        let slow = std::time::Instant::now();
        let moved = read_until(&mut ws, &mut decoder, &mut last_ts, Some(full_bps / 4), Duration::from_secs(20), |(w, _)| w < 1280).await;
        assert!(moved, "still full 20 s after reading at {} kbit/s (full is {} kbit/s)", full_bps / 4000, full_bps / 1000);
        eprintln!("moved down {:?} after reading slower than full's {} kbit/s", slow.elapsed(), full_bps / 1000);
        // The API lists the player, its rendition and why.
        let listed = stream_info(&base).await.sessions;
        assert!(
            listed.len() == 1
                && listed[0].transport == "h264"
                && listed[0].rendition != "full"
                && listed[0].reason == "down: the link backed up"
                && !listed[0].pinned,
            "{listed:?}"
        );

        // Fast again: full within 30 s (10 s without a backup, then a step at a time).
        let fast = std::time::Instant::now();
        let back = read_until(&mut ws, &mut decoder, &mut last_ts, None, Duration::from_secs(30), |s| s == (1280, 720)).await;
        assert!(back, "not back at full 30 s after reading fast again");
        eprintln!("back at full {:?} after reading fast again", fast.elapsed());
        // And it plays on there.
        let mut decoded = 0;
        for _ in 0..25 {
            let (_, _, annexb) = next_unit(&mut ws).await;
            decoded += usize::from(decode(&mut decoder, &annexb).is_some_and(|d| d.0 == (1280, 720)));
        }
        assert!(decoded >= 24, "{decoded} of 25 full-size pictures");
        drop(ws);
        eventually_async(5, "the rung's player gone from the API", || async { stream_info(&base).await.sessions.is_empty() }).await;
        relay.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_rung_starts_at_a_keyframe_plays_a_chosen_rendition_and_skips_ahead_when_the_reader_falls_behind() {
        let _serial = one_at_a_time().await;
        let relay = start_relay(vec![scopecast_tests::laddered_pattern("sky")]).await;
        let base = base_url(&relay);

        // The stream's own rendition: a keyframe with its SPS first, then every frame decodes.
        let mut ws = open(&base, "").await;
        let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
        let (keyframe, mut last_ts, first) = next_unit(&mut ws).await;
        assert!(keyframe, "the first unit is a keyframe");
        assert!(avc_codec(&first).is_some_and(|c| c.starts_with("avc1.42")), "Constrained Baseline SPS in it: {:?}", avc_codec(&first));
        assert_eq!(decode(&mut decoder, &first).map(|d| d.0), Some((1280, 720)));
        let mut decoded = 1;
        for _ in 0..49 {
            let (_, ts, annexb) = next_unit(&mut ws).await;
            assert!(ts > last_ts, "timestamps only go forward: {ts} after {last_ts}");
            last_ts = ts;
            decoded += usize::from(decode(&mut decoder, &annexb).is_some());
        }
        assert!(decoded >= 48, "{decoded} of 50 units decoded");
        assert_eq!(stream_info(&base).await.viewers.h264, 1, "the relay counts the rung");

        // A reader that stops for 4 s (a stalled link) gets a fresh picture soon after it reads
        // again: the relay skipped to a new keyframe instead of queueing 4 s of frames.
        tokio::time::sleep(Duration::from_secs(4)).await;
        let resumed = std::time::Instant::now();
        let fresh = loop {
            assert!(resumed.elapsed() < Duration::from_secs(3), "no fresh picture 3 s after reading again");
            let (_, _, annexb) = next_unit(&mut ws).await;
            if let Some((_, Some(age))) = decode(&mut decoder, &annexb) {
                if age < 400 {
                    break resumed.elapsed();
                }
            }
        };
        assert!(fresh < Duration::from_secs(1), "live again {fresh:?} after the reader resumed");
        drop(ws);
        eventually_async(5, "the rung's viewer gone", || async { stream_info(&base).await.viewers.h264 == 0 }).await;

        // A rendition by name.
        let mut tiny = open(&base, "?rendition=tiny").await;
        let (keyframe, _, first) = next_unit(&mut tiny).await;
        assert!(keyframe);
        assert_eq!(decode(&mut openh264::decoder::Decoder::new().expect("decoder"), &first).map(|d| d.0), Some((320, 180)));
        let listed = stream_info(&base).await.sessions;
        assert!(
            listed.len() == 1 && listed[0].session.starts_with("h264-") && (listed[0].rendition.as_str(), listed[0].pinned) == ("tiny", true),
            "{listed:?}"
        );
        assert_eq!(listed[0].renditions, ["full", "small", "tiny"]);
        drop(tiny);

        // An unknown one is refused before the upgrade, with a problem body.
        let (status, body) = refused(&base, "?rendition=huge").await;
        assert_eq!(status, 422);
        assert!(body.contains("unknown-rendition") && body.contains("full"), "{body}");
        relay.shutdown().await;
    }

    /// `?container=fmp4`, what an MSE player appends: a MIME type, an init segment, then one
    /// fragment per access unit; checked by FFmpeg, which plays the bytes as one MP4 file.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_container_fmp4_the_rung_sends_an_mp4_that_ffmpeg_decodes_frame_by_frame() {
        let _serial = one_at_a_time().await;
        let relay = start_relay(vec![scopecast_tests::laddered_pattern("sky")]).await;
        let base = base_url(&relay);
        let mut ws = open(&base, "?container=fmp4&rendition=small").await;
        let mut mime = None;
        let (mut file, mut fragments, mut last_ts) = (Vec::new(), 0, None);
        while fragments < 50 {
            let message = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a message within 5 s").expect("open").expect("no error");
            match message {
                Message::Text(text) => {
                    assert!(file.is_empty(), "one MIME type, before the init segment");
                    mime = Some(text.to_string());
                }
                Message::Binary(bytes) => {
                    let unit = Unit::parse(&bytes).expect("every binary message is a unit");
                    assert_eq!(unit.init, file.is_empty(), "the init segment first, then fragments");
                    assert!(mime.is_some(), "the MIME type before any MP4");
                    if !unit.init {
                        assert_eq!(&unit.payload[4..8], b"moof");
                        assert!(last_ts.is_none_or(|l| unit.timestamp_us > l));
                        last_ts = Some(unit.timestamp_us);
                        fragments += 1;
                    }
                    file.extend_from_slice(unit.payload);
                }
                _ => {}
            }
        }
        drop(ws);
        let mime = mime.expect("a MIME type");
        assert!(mime.starts_with("video/mp4; codecs=\"avc1.42"), "{mime}");
        let path = std::env::temp_dir().join(format!("scopecast-rung-{}.mp4", std::process::id()));
        std::fs::write(&path, &file).expect("write");
        let probe = std::process::Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=codec_name,width,height,nb_read_frames",
                "-of",
                "csv=p=0",
            ])
            .arg(&path)
            .output()
            .expect("ffprobe (scripts/setup-debian.sh installs ffmpeg)");
        let _ = std::fs::remove_file(&path);
        let (out, err) = (String::from_utf8_lossy(&probe.stdout).trim().to_owned(), String::from_utf8_lossy(&probe.stderr).into_owned());
        assert_eq!(out, "h264,640,360,50", "every fragment a decoded frame of the small rendition (stderr: {err})");
        assert!(err.trim().is_empty(), "FFmpeg found nothing wrong: {err}");

        // A container the rung does not know is refused before the upgrade.
        let (status, body) = refused(&base, "?container=webm").await;
        assert_eq!(status, 400);
        assert!(body.contains("unknown-container") && body.contains("fmp4"), "{body}");
        relay.shutdown().await;
    }
}
