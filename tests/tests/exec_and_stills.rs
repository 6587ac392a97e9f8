//! `exec:` sources with FFmpeg as the command (multipart MJPEG, JPEGs back to back, H.264
//! Annex B; a command that exits, one that hangs, one that leaves a child behind), and a
//! still-only camera polled over HTTP, each with a WHEP viewer that decodes.

use scopecast::config::StreamConfig;
use scopecast_shared::api::VideoPath;
use scopecast_shared::SourceState;
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::{base_url, eventually, one_at_a_time, start_relay};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const FFMPEG: &str = "ffmpeg -hide_banner -loglevel error -re -f lavfi -i testsrc2=size=640x360:rate=25";

fn exec_stream(name: &str, command: &str) -> StreamConfig {
    StreamConfig::from_source(name, &format!("exec:{command}"), "test").expect("an exec: source")
}

/// Processes whose command line matches `pattern` (anchor it with ^ to leave out the `sh -c`
/// that started them).
fn running(pattern: &str) -> usize {
    let out = std::process::Command::new("pgrep").args(["-f", pattern]).output().expect("pgrep");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ffmpeg_mjpeg_in_either_framing_and_h264_play() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![
        exec_stream("multipart", &format!("{FFMPEG} -q:v 5 -f mpjpeg -")),
        exec_stream("jpegs", &format!("{FFMPEG} -q:v 5 -c:v mjpeg -f image2pipe -")),
        exec_stream("h264", &format!("{FFMPEG} -c:v libx264 -profile:v baseline -tune zerolatency -g 50 -bf 0 -f h264 -")),
    ])
    .await;
    let base = base_url(&relay);
    for (name, video) in [("multipart", VideoPath::Encoded), ("jpegs", VideoPath::Encoded), ("h264", VideoPath::Passthrough)] {
        let mut viewer = WhepViewer::connect(&format!("{base}/{name}/whep")).await.expect("WHEP negotiation");
        let frames = viewer.collect(30, Duration::from_secs(20)).await;
        assert!(frames.len() >= 30, "{name}: decoded only {} frames", frames.len());
        assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)), "{name}: the command's size");
        let info = relay.state().streams[name].info();
        assert_eq!((info.source, info.video), (scopecast_shared::SourceKind::Exec, video), "{name}: {info:?}");
        assert_eq!(info.source_url.as_deref(), Some("exec:ffmpeg"), "only the program is shown");
        let res = reqwest::get(format!("{base}/{name}/snapshot.jpg")).await.expect("snapshot");
        assert_eq!(res.status(), 200, "{name}");
        let header = turbojpeg::read_header(&res.bytes().await.expect("body")).expect("a JPEG");
        assert_eq!((header.width, header.height), (640, 360));
        viewer.delete().await.expect("DELETE");
        viewer.close().await;
    }
    relay.shutdown().await;
    eventually(5, "every FFmpeg stopped with the relay", || running("^ffmpeg .*testsrc2=size=640x360") == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_exits_is_restarted_and_one_that_hangs_is_stopped_with_its_children() {
    let _serial = one_at_a_time().await;
    let logs = scopecast_tests::logs::capture();
    let marker = 40_000 + std::process::id() % 10_000;
    let mut exits = exec_stream("exits", &format!("{FFMPEG} -t 1 -q:v 5 -f mpjpeg -"));
    exits.stall_timeout = Duration::from_secs(2);
    // Prints to stderr, leaves a child in the background, then says nothing.
    let mut hangs = exec_stream("hangs", &format!("echo hello-from-the-command >&2; sleep {marker} & exec sleep {}", marker + 1));
    hangs.stall_timeout = Duration::from_secs(2);
    let relay = start_relay(vec![exits, hangs]).await;
    let exits = Arc::clone(&relay.state().streams["exits"]);
    let hangs = Arc::clone(&relay.state().streams["hangs"]);

    eventually(10, "frames from the first run", || exits.frames_in() >= 10).await;
    eventually(10, "the exit to be an outage", || exits.state().state == SourceState::Offline).await;
    assert!(exits.state().last_error.unwrap_or_default().contains("exited"), "{:?}", exits.state());
    let first_run = exits.frames_in();
    eventually(10, "frames from the restarted command", || exits.frames_in() > first_run + 10).await;

    eventually(10, "the silent command to be an outage", || hangs.state().state == SourceState::Offline).await;
    assert!(hangs.state().last_error.unwrap_or_default().contains("no data"), "{:?}", hangs.state());
    // Each run's whole group is stopped before the next starts: never more than one of each.
    for _ in 0..10 {
        assert!(running(&format!("^sleep {marker}$")) <= 1 && running(&format!("^sleep {}$", marker + 1)) <= 1, "a run left its processes behind");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!logs.lines_with(&["hangs", "hello-from-the-command"]).is_empty(), "stderr reaches the log");
    relay.shutdown().await;
    eventually(5, "no process left after shutdown", || running(&format!("^sleep {marker}$")) + running(&format!("^sleep {}$", marker + 1)) == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_command_runs_only_while_watched() {
    let _serial = one_at_a_time().await;
    let mut stream = exec_stream("demand", &format!("{FFMPEG},format=yuv420p -q:v 5 -f mpjpeg -"));
    stream.on_demand = true;
    stream.stop_after = Duration::from_millis(500);
    let relay = start_relay(vec![stream]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running("^ffmpeg .*rate=25,format=yuv420p"), 0, "not started before anyone watches");
    let mut viewer = WhepViewer::connect(&format!("{}/demand/whep", base_url(&relay))).await.expect("WHEP negotiation");
    assert!(viewer.collect(10, Duration::from_secs(20)).await.len() >= 10);
    assert_eq!(running("^ffmpeg .*rate=25,format=yuv420p"), 1);
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    eventually(10, "the command to stop when nobody watches", || running("^ffmpeg .*rate=25,format=yuv420p") == 0).await;
    relay.shutdown().await;
}

/// A still-only camera: one JPEG per request, a new picture every fifth request, ETags and
/// 304 to If-None-Match on every other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_still_only_camera_is_polled_and_unchanged_pictures_are_not_encoded_again() {
    use axum::http::{header, HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let _serial = one_at_a_time().await;
    let pictures: Vec<bytes::Bytes> = (0..4u64)
        .map(|i| {
            let mut pattern = scopecast::media::testpattern::TestPattern::new("still", 640, 360);
            let mut pic = scopecast::media::I420::new(2, 2);
            pattern.render(1_795_000_000_000 + i * 1000, &mut pic);
            bytes::Bytes::from(scopecast::media::jpeg::encode_i420(&pic, 85).expect("JPEG"))
        })
        .collect();
    let requests = Arc::new(AtomicU64::new(0));
    let not_modified = Arc::new(AtomicU64::new(0));
    let app = {
        let (requests, not_modified) = (Arc::clone(&requests), Arc::clone(&not_modified));
        axum::Router::new().route(
            "/still.jpg",
            axum::routing::get(move |headers: HeaderMap| {
                let (requests, not_modified, pictures) = (Arc::clone(&requests), Arc::clone(&not_modified), pictures.clone());
                async move {
                    let n = requests.fetch_add(1, Ordering::Relaxed);
                    let version = (n / 5) % 4;
                    let etag = format!("\"v{version}\"");
                    // Pictures 0 and 2 come with an ETag; 1 and 3 without, the same bytes again.
                    let use_etag = version % 2 == 0;
                    let matches = headers.get(header::IF_NONE_MATCH).is_some_and(|v| v.to_str().is_ok_and(|v| v == etag));
                    if use_etag && matches {
                        not_modified.fetch_add(1, Ordering::Relaxed);
                        return StatusCode::NOT_MODIFIED.into_response();
                    }
                    let mut h = vec![(header::CONTENT_TYPE, "image/jpeg".to_owned())];
                    if use_etag {
                        h.push((header::ETAG, etag));
                    }
                    let body = pictures[version as usize].clone();
                    let mut response = body.into_response();
                    for (k, v) in h {
                        response.headers_mut().insert(k, v.parse().expect("header"));
                    }
                    response
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut stream = StreamConfig::from_source("still", &format!("http://{addr}/still.jpg"), "test").expect("a URL");
    stream.max_fps = Some(10.0);
    let relay = start_relay(vec![stream]).await;
    let mut viewer = WhepViewer::connect(&format!("{}/still/whep", base_url(&relay))).await.expect("WHEP negotiation");
    let frames = viewer.collect(3, Duration::from_secs(15)).await;
    assert!(frames.len() >= 3, "decoded {} frames", frames.len());
    assert!(frames.iter().all(|f| (f.width, f.height) == (640, 360)));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let info = relay.state().streams["still"].info();
    let asked = requests.load(Ordering::Relaxed);
    assert!((20..=60).contains(&asked), "polled at about 10 per second, one at a time: {asked} requests");
    assert!(not_modified.load(Ordering::Relaxed) > 0, "If-None-Match sent");
    // A new picture every 5 requests: only those go to the encoder.
    let changes = asked / 5 + 1;
    assert!(
        info.frames_in <= changes + 1 && info.frames_in >= changes.saturating_sub(2),
        "{} frames in for {asked} requests ({changes} changes)",
        info.frames_in
    );
    assert_eq!(info.state, SourceState::Live);
    viewer.delete().await.expect("DELETE");
    viewer.close().await;
    relay.shutdown().await;
}
