//! Tools for looking at the sky, end to end: the stretch, changed while streaming and seen in
//! the pictures viewers decode (and in Chromium, on every rung of the player), in snapshots
//! when asked for, and refused with a problem body when it cannot be applied; the focus view,
//! a region at the camera's native resolution with its sharpness on the event stream; stills
//! kept on disk under a cap, listed and served.

use futures_util::StreamExt;
use openh264::formats::YUVSource;
use scopecast::config::{SecurityConfig, StreamConfig};
use scopecast::media::scene::Scene;
use scopecast_shared::api::{FocusInfo, FocusRegion, StillFile, StillList, StreamInfo, Stretch};
use scopecast_shared::h264_ws::Unit;
use scopecast_tests::browser::{shown_median, wait_for_page, Browser};
use scopecast_tests::proxy::{Mode, Proxy};
use scopecast_tests::{base_url, one_at_a_time, start_relay, start_relay_with};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The H.264 rung's socket (`query` such as `?rendition=focus`): the same encoded stream a
/// WebRTC viewer gets, easy to decode here.
async fn open(base: &str, stream: &str, query: &str) -> Socket {
    let url = format!("{}/{stream}/h264{query}", base.replacen("http://", "ws://", 1));
    tokio_tungstenite::connect_async(url).await.expect("the rung opens").0
}

/// Reads units until one decodes to a picture; returns its luma median and mean.
async fn next_picture(ws: &mut Socket, decoder: &mut openh264::decoder::Decoder) -> (u8, f64) {
    levels(&next_luma(ws, decoder).await.1)
}

/// Median and mean of 8-bit samples.
fn levels(samples: &[u8]) -> (u8, f64) {
    let mut counts = [0usize; 256];
    samples.iter().for_each(|&v| counts[v as usize] += 1);
    let mut seen = 0;
    let median = counts.iter().position(|&c| {
        seen += c;
        seen * 2 >= samples.len()
    });
    let mean = samples.iter().map(|&v| f64::from(v)).sum::<f64>() / samples.len() as f64;
    (median.unwrap_or(0) as u8, mean)
}

async fn patch(base: &str, stream: &str, body: &str) -> reqwest::Response {
    reqwest::Client::new()
        .patch(format!("{base}/api/v1/streams/{stream}"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("PATCH")
}

async fn stream_info(base: &str, stream: &str) -> StreamInfo {
    reqwest::get(format!("{base}/api/v1/streams/{stream}")).await.expect("status").json().await.expect("StreamInfo")
}

/// The luma median of a snapshot (`query` appended to its URL).
async fn snapshot_median(base: &str, stream: &str, query: &str) -> u8 {
    let res = reqwest::get(format!("{base}/{stream}/snapshot.jpg{query}")).await.expect("snapshot");
    assert_eq!(res.status(), 200, "snapshot{query}");
    let jpeg = res.bytes().await.expect("body");
    let gray = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::GRAY).expect("a JPEG");
    levels(&gray.pixels).0
}

/// Pictures until one whose median satisfies `wanted`, within `secs`.
async fn picture_where(ws: &mut Socket, decoder: &mut openh264::decoder::Decoder, secs: u64, what: &str, wanted: impl Fn(u8) -> bool) -> (u8, Duration) {
    let started = Instant::now();
    loop {
        let (median, _) = next_picture(ws, decoder).await;
        if wanted(median) {
            return (median, started.elapsed());
        }
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}: the median is still {median} after {secs} s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stretch_changes_live_for_viewers_and_on_request_for_snapshots() {
    let _serial = one_at_a_time().await;
    // "chained" passes another relay's H.264 through (nothing listens there; it stays offline).
    let chained = StreamConfig::from_source("chained", "whep://127.0.0.1:9/sky/whep", "streams.chained.source").expect("a whep:// stream");
    let relay = start_relay(vec![StreamConfig::test_scene("sky", Scene::DeepSky, 640, 360, 10.0), chained]).await;
    let base = base_url(&relay);
    let mut ws = open(&base, "sky", "").await;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");

    // Off: the sky as the camera gives it, nearly black.
    let (dark, dark_mean) = next_picture(&mut ws, &mut decoder).await;
    assert!(dark < 40, "the deep sky's background is dark: median {dark}");
    assert!(stream_info(&base, "sky").await.stretch == Stretch::Off);

    // Auto, on the same socket: the background comes up to about a quarter (64), at once.
    let res = patch(&base, "sky", r#"{"stretch": {"mode": "auto"}}"#).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<StreamInfo>().await.expect("StreamInfo").stretch, Stretch::AUTO);
    let (auto, after) = picture_where(&mut ws, &mut decoder, 3, "auto", |m| (52..=76).contains(&m)).await;
    assert!(after < Duration::from_secs(2), "seen {after:?} after the change");
    let (_, auto_mean) = next_picture(&mut ws, &mut decoder).await;
    assert!(auto_mean > dark_mean + 25.0, "brighter: mean {dark_mean:.1} -> {auto_mean:.1} (median {dark} -> {auto})");
    let info = stream_info(&base, "sky").await;
    let applied = info.stretch_levels.expect("the levels auto found are shown");
    assert!(applied.black > 0.0 && applied.midtones < 0.2 && applied.white == 1.0, "{applied:?}");

    // Snapshots stay the camera's original unless asked.
    let original = snapshot_median(&base, "sky", "").await;
    let stretched = snapshot_median(&base, "sky", "?stretch=1").await;
    assert!(original.abs_diff(dark) <= 6, "snapshot {original}, stream off {dark}");
    assert!(stretched.abs_diff(auto) <= 10, "stretched snapshot {stretched}, stream {auto}");

    // Manual levels that clip the background black.
    let black = f32::from(dark) / 255.0 + 0.05;
    let res = patch(&base, "sky", &format!(r#"{{"stretch": {{"mode": "manual", "black": {black}, "white": 1.0, "midtones": 0.5}}}}"#)).await;
    assert_eq!(res.status(), 200);
    picture_where(&mut ws, &mut decoder, 3, "manual", |m| m <= 3).await;

    // Off again: back to the original levels.
    assert_eq!(patch(&base, "sky", r#"{"stretch": {"mode": "off"}}"#).await.status(), 200);
    picture_where(&mut ws, &mut decoder, 3, "off", |m| m.abs_diff(dark) <= 4).await;
    assert_eq!(stream_info(&base, "sky").await.stretch_levels, None);

    // What cannot be applied is refused with a problem body, and changes nothing.
    for (body, status) in [
        (r#"{"stretch": {"mode": "manual", "black": 0.6, "white": 0.5, "midtones": 0.5}}"#, 422),
        (r#"{"stretch": {"mode": "curves"}}"#, 422),
        (r#"{"stretch": {"mode": "auto"}"#, 400),
        (r#"{"strech": {"mode": "auto"}}"#, 422),
    ] {
        let res = patch(&base, "sky", body).await;
        assert_eq!(res.status().as_u16(), status, "{body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{body}");
    }
    assert_eq!(patch(&base, "nowhere", r#"{"stretch": {"mode": "auto"}}"#).await.status(), 404);
    // A passed-through stream is never decoded: nothing to stretch (turning it off is fine).
    let res = patch(&base, "chained", r#"{"stretch": {"mode": "auto"}}"#).await;
    assert_eq!(res.status(), 409);
    assert!(res.text().await.expect("problem").contains("transcode"), "the problem says what to do");
    assert_eq!(patch(&base, "chained", r#"{"stretch": {"mode": "off"}}"#).await.status(), 200);
    assert_eq!(stream_info(&base, "sky").await.stretch, Stretch::Off);
    let res = reqwest::get(format!("{base}/sky/snapshot.jpg?stretch=maybe")).await.expect("snapshot");
    assert_eq!(res.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_shows_a_new_stretch_at_once_and_changes_need_the_token() {
    let _serial = one_at_a_time().await;
    let security = SecurityConfig { token: Some("sekrit-token".into()), ..SecurityConfig::default() };
    // One frame every 5 s: waiting for the next frame would take up to 5 s.
    let relay = start_relay_with(vec![StreamConfig::test_scene("slow", Scene::DeepSky, 640, 360, 0.2)], security).await;
    let base = base_url(&relay);
    let mut ws = open(&base, "slow", "?token=sekrit-token").await;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    let (dark, _) = next_picture(&mut ws, &mut decoder).await;

    assert_eq!(patch(&base, "slow", r#"{"stretch": {"mode": "auto"}}"#).await.status(), 401, "no token, no change");
    let res = reqwest::Client::new()
        .patch(format!("{base}/api/v1/streams/slow"))
        .bearer_auth("sekrit-token")
        .json(&serde_json::json!({"stretch": {"mode": "auto"}}))
        .send()
        .await
        .expect("PATCH");
    assert_eq!(res.status(), 200);
    let (stretched, after) = picture_where(&mut ws, &mut decoder, 4, "slow auto", |m| m > dark + 20).await;
    assert!(after < Duration::from_millis(1500), "the stretched picture came {after:?} after the change (median {dark} -> {stretched})");
}

/// Polls what the player shows until its luma median satisfies `wanted`.
async fn shown_where(c: &fantoccini::Client, secs: u64, what: &str, wanted: impl Fn(u64) -> bool) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let median = shown_median(c).await;
        if let Some(m) = median.filter(|&m| wanted(m)) {
            return m;
        }
        assert!(Instant::now() < deadline, "{what}: the player shows a median of {median:?} after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_stretch_shows_on_the_mjpeg_rung_and_changes_live_over_webrtc() {
    let _serial = one_at_a_time().await;
    let mut sky = StreamConfig::test_scene("sky", Scene::DeepSky, 640, 360, 10.0);
    sky.stretch = Stretch::AUTO;
    let relay = start_relay(vec![sky]).await;
    let base = base_url(&relay);
    // Without UDP or WebSockets the player falls back to MJPEG, which it asks for stretched.
    let proxy = Proxy::start(&base, Mode::BlockUdp).await;
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    c.goto(&format!("{}/sky/", proxy.url())).await.expect("open page");
    wait_for_page(c, "the MJPEG rung", 15, |v| v["state"] == "fallback" && v["transport"] == "mjpeg").await;
    let mjpeg = shown_where(c, 5, "MJPEG, stretched", |m| (45..=85).contains(&m)).await;

    proxy.set_mode(Mode::Pass);
    wait_for_page(c, "WebRTC", 30, |v| v["state"] == "live" && v["transport"] == "webrtc" && v["canvas_visible"] == false).await;
    let auto = shown_where(c, 5, "WebRTC, stretched", |m| (45..=85).contains(&m)).await;
    scopecast_tests::browser::save_screenshot(c, "player-stretch-auto").await;
    let session = c.execute("return document.querySelector('.scopecast').scopecast.sessionUrl", vec![]).await.expect("session");

    assert_eq!(patch(&base, "sky", r#"{"stretch": {"mode": "off"}}"#).await.status(), 200);
    let off = shown_where(c, 3, "WebRTC, stretch off", |m| m < 40).await;
    scopecast_tests::browser::save_screenshot(c, "player-stretch-off").await;
    assert_eq!(patch(&base, "sky", r#"{"stretch": {"mode": "auto"}}"#).await.status(), 200);
    shown_where(c, 3, "WebRTC, stretched again", |m| (45..=85).contains(&m)).await;
    let same = c.execute("return document.querySelector('.scopecast').scopecast.sessionUrl", vec![]).await.expect("session");
    assert_eq!(session, same, "the same WebRTC session throughout (MJPEG {mjpeg}, auto {auto}, off {off})");
    browser.close().await;
    relay.shutdown().await;
}

/// Reads units until one decodes; returns its size and luma (rows packed).
async fn next_luma(ws: &mut Socket, decoder: &mut openh264::decoder::Decoder) -> ((usize, usize), Vec<u8>) {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(8), ws.next()).await.expect("a message within 8 s").expect("open").expect("no error");
        let Message::Binary(bytes) = message else { continue };
        let unit = Unit::parse(&bytes).expect("a unit");
        if let Ok(Some(yuv)) = decoder.decode(unit.payload) {
            let (w, h) = yuv.dimensions();
            let stride = yuv.strides().0;
            return ((w, h), (0..h).flat_map(|row| yuv.y()[row * stride..row * stride + w].iter().copied()).collect());
        }
    }
}

async fn put_focus(base: &str, stream: &str, body: serde_json::Value) -> reqwest::Response {
    reqwest::Client::new().put(format!("{base}/api/v1/streams/{stream}/focus")).json(&body).send().await.expect("PUT focus")
}

/// Mean absolute difference of `region` (x, y, w, h) of a `width`-wide luma plane and `crop`.
fn difference(plane: &[u8], width: usize, (x, y, w, h): (usize, usize, usize, usize), crop: &[u8]) -> f64 {
    let mut sum = 0u64;
    for row in 0..h {
        for col in 0..w {
            sum += u64::from(plane[(y + row) * width + x + col].abs_diff(crop[row * w + col]));
        }
    }
    sum as f64 / (w * h) as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_focus_region_plays_at_native_resolution_the_last_request_wins_and_its_sharpness_is_published() {
    let _serial = one_at_a_time().await;
    // A slow pattern (the same picture for 2 s) to compare pixels with the snapshot; a deep
    // sky for stars.
    let chained = StreamConfig::from_source("chained", "whep://127.0.0.1:9/sky/whep", "streams.chained.source").expect("a whep:// stream");
    let relay = start_relay(vec![
        StreamConfig::test_scene("pattern", Scene::Pattern, 1280, 720, 0.5),
        StreamConfig::test_scene("sky", Scene::DeepSky, 1280, 720, 10.0),
        chained,
    ])
    .await;
    let base = base_url(&relay);
    let res = reqwest::get(format!("{base}/api/v1/streams/pattern/focus")).await.expect("GET focus");
    assert_eq!(res.status(), 404, "no region yet");

    // A region of the pattern, 1:1 with the camera's pixels.
    let res = put_focus(&base, "pattern", serde_json::json!({"x": 0, "y": 0, "width": 320, "height": 180})).await;
    assert_eq!(res.status(), 200);
    let info: FocusInfo = res.json().await.expect("FocusInfo");
    assert_eq!((info.region, info.rendition.as_str()), (FocusRegion { x: 0, y: 0, width: 320, height: 180 }, "focus"));
    let mut ws = open(&base, "pattern", "?rendition=focus").await;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    let ((w, h), region) = next_luma(&mut ws, &mut decoder).await;
    assert_eq!((w, h), (320, 180), "the region's own size, not scaled");
    let jpeg = reqwest::get(format!("{base}/pattern/snapshot.jpg")).await.expect("snapshot").bytes().await.expect("body");
    let full = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::GRAY).expect("a JPEG");
    assert_eq!(full.width, 1280);
    let same = difference(&full.pixels, full.width, (0, 0, 320, 180), &region);
    let shifted = difference(&full.pixels, full.width, (8, 8, 320, 180), &region);
    assert!(same < 4.0 && shifted > 2.0 * same, "the region is the picture's own pixels at (0, 0): {same:.2} there, {shifted:.2} 8 px off");

    // The last request wins, on the same socket: a point gets a default 256x256 region.
    assert_eq!(put_focus(&base, "pattern", serde_json::json!({"x": 640, "y": 360})).await.status(), 200);
    let started = Instant::now();
    loop {
        let ((w, h), _) = next_luma(&mut ws, &mut decoder).await;
        if (w, h) == (256, 256) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "still {w}x{h} 3 s after the new region");
    }
    assert!(started.elapsed() < Duration::from_secs(1), "the new region shows at once, not at the next frame of a 0.5 fps stream");
    let info: StreamInfo = reqwest::get(format!("{base}/api/v1/streams/pattern")).await.expect("status").json().await.expect("StreamInfo");
    assert_eq!(info.focus, Some(FocusRegion { x: 512, y: 232, width: 256, height: 256 }), "the status shows it");

    // The newest frame's capture time on the event stream: every frame of a slow stream...
    let mut events = scopecast_tests::clients::SseReader::open(&format!("{base}/api/v1/streams/pattern/events")).await.expect("events");
    let frames_before = stream_info(&base, "pattern").await.frames_in;
    let started = Instant::now();
    let mut told: Vec<u64> = Vec::new();
    while started.elapsed() < Duration::from_millis(6_500) {
        let Some(e) = events.until("frame", Duration::from_millis(300), |_| true).await else { continue };
        assert_eq!((e.data["width"].as_u64(), e.data["height"].as_u64()), (Some(1280), Some(720)), "the camera's size: {}", e.data);
        assert!(e.data["age_ms"].as_u64().is_some_and(|a| a < 1_000), "told as it comes: {}", e.data);
        let captured = e.data["captured_ms"].as_u64().unwrap_or_default();
        assert!(told.last().is_none_or(|&last| captured > last), "each frame told once, in order: {captured} after {told:?}");
        told.push(captured);
    }
    let frames = stream_info(&base, "pattern").await.frames_in - frames_before;
    assert!(frames >= 2 && (told.len() as u64).abs_diff(frames) <= 1, "{} frame events for {frames} new frames: {told:?}", told.len());
    drop(ws);
    // ... and about one a second of a fast one.
    let mut events = scopecast_tests::clients::SseReader::open(&format!("{base}/api/v1/streams/sky/events")).await.expect("events");
    let started = Instant::now();
    let mut frames = 0;
    while started.elapsed() < Duration::from_millis(3_500) {
        if events.until("frame", Duration::from_millis(500), |_| true).await.is_some() {
            frames += 1;
        }
    }
    assert!((2..=7).contains(&frames), "{frames} frame events in 3.5 s of a 10 fps stream");

    // The deep sky: stars found, a half-flux radius on the event stream for every frame.
    assert_eq!(put_focus(&base, "sky", serde_json::json!({"x": 320, "y": 180, "width": 640, "height": 360})).await.status(), 200);
    let mut sky = open(&base, "sky", "?rendition=focus").await;
    let mut decoder = openh264::decoder::Decoder::new().expect("decoder");
    assert_eq!(next_luma(&mut sky, &mut decoder).await.0, (640, 360));
    let event = events.until("focus", Duration::from_secs(5), |v| v["history"][0]["hfr_px"].is_number()).await.expect("a focus event with a half-flux radius");
    let figure = &event.data["history"][0];
    let hfr = figure["hfr_px"].as_f64().unwrap_or_default();
    assert!((0.5..8.0).contains(&hfr) && figure["stars"].as_u64().unwrap_or(0) >= 3, "stars measured: {figure}");
    for _ in 0..20 {
        next_luma(&mut sky, &mut decoder).await;
    }
    let info: FocusInfo = reqwest::get(format!("{base}/api/v1/streams/sky/focus")).await.expect("GET").json().await.expect("FocusInfo");
    assert!(info.history.len() >= 10 && info.readers == 1, "a figure per frame, kept for the graph: {} figures, {} readers", info.history.len(), info.readers);
    drop(sky);
    scopecast_tests::eventually_async(5, "the focus encoder unwatched", || async {
        reqwest::get(format!("{base}/api/v1/streams/sky/focus")).await.expect("GET").json::<FocusInfo>().await.expect("FocusInfo").readers == 0
    })
    .await;

    // Refusals, each with a problem body.
    for (stream, body, status) in [
        ("sky", serde_json::json!({"x": 0, "y": 0, "width": 8, "height": 8}), 422),
        ("sky", serde_json::json!({"x": 0}), 422),
        ("chained", serde_json::json!({"x": 10, "y": 10}), 409),
        ("nowhere", serde_json::json!({"x": 10, "y": 10}), 404),
    ] {
        let res = put_focus(&base, stream, body.clone()).await;
        assert_eq!(res.status().as_u16(), status, "{stream} {body}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let res = reqwest::Client::new().delete(format!("{base}/api/v1/streams/sky/focus")).send().await.expect("DELETE");
    assert_eq!(res.status(), 204);
    assert_eq!(reqwest::get(format!("{base}/api/v1/streams/sky/focus")).await.expect("GET").status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stills_are_kept_under_the_cap_listed_newest_first_and_served() {
    let _serial = one_at_a_time().await;
    let dir = std::env::temp_dir().join(format!("scopecast-stills-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let every_frame = StreamConfig {
        stills: Some(scopecast::config::StillsConfig { dir: dir.join("all"), every: Duration::ZERO, max_bytes: 120_000 }),
        ..StreamConfig::test_scene("all", Scene::DeepSky, 320, 180, 5.0)
    };
    let each_second = StreamConfig {
        stills: Some(scopecast::config::StillsConfig { dir: dir.join("slow"), every: Duration::from_secs(1), max_bytes: 10_000_000 }),
        ..StreamConfig::test_scene("slow", Scene::DeepSky, 320, 180, 10.0)
    };
    let relay = start_relay(vec![every_frame, each_second, StreamConfig::test_pattern("none", 320, 180, 5.0)]).await;
    let base = base_url(&relay);
    let list = |stream: &'static str| {
        let base = base.clone();
        async move { reqwest::get(format!("{base}/api/v1/streams/{stream}/stills")).await.expect("list").json::<StillList>().await.expect("StillList") }
    };
    tokio::time::sleep(Duration::from_millis(4500)).await;

    // Every frame, under the cap: the oldest went.
    let all = list("all").await;
    assert!(all.total_bytes <= 120_000 && all.max_bytes == 120_000, "{} of {} bytes", all.total_bytes, all.max_bytes);
    let times: Vec<u64> = all.stills.iter().map(|s| s.file.captured_ms).collect();
    assert!(times.len() >= 3 && times.windows(2).all(|w| w[0] > w[1]), "newest first: {times:?}");
    let on_disk = std::fs::read_dir(dir.join("all")).expect("dir").filter_map(Result::ok).filter(|e| e.file_name().to_string_lossy().ends_with(".jpg")).count();
    assert_eq!(on_disk, all.stills.len(), "the cap deletes files, not just entries");
    assert!(reqwest::get(format!("{base}/api/v1/streams/all")).await.expect("status").json::<StreamInfo>().await.expect("info").viewers.stills == 1);

    // One served: the camera's JPEG with its capture time; its sidecar beside it on disk.
    let newest = &all.stills[0];
    let res = reqwest::get(format!("{base}{}", newest.url)).await.expect("still");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/jpeg");
    assert!(res.headers()["cache-control"].to_str().unwrap_or_default().contains("immutable"));
    let jpeg = res.bytes().await.expect("body");
    let picture = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::GRAY).expect("a JPEG");
    assert_eq!((picture.width, picture.height, jpeg.len() as u64), (320, 180, newest.file.bytes));
    let sidecar: StillFile =
        serde_json::from_slice(&std::fs::read(dir.join("all").join(newest.file.name.replace(".jpg", ".json"))).expect("sidecar")).expect("JSON");
    assert_eq!(sidecar, newest.file);
    assert_eq!((sidecar.stream.as_str(), sidecar.width, sidecar.height), ("all", 320, 180));

    // One every second of a 10 fps stream.
    let slow = list("slow").await;
    let gaps: Vec<u64> = slow.stills.windows(2).map(|w| w[0].file.captured_ms - w[1].file.captured_ms).collect();
    assert!((3..=6).contains(&slow.stills.len()) && gaps.iter().all(|&g| g >= 1000), "{} stills, gaps {gaps:?}", slow.stills.len());

    // Nothing else is served.
    for (path, status) in [
        ("/api/v1/streams/all/stills/..%2F..%2Fetc%2Fpasswd", 404),
        ("/api/v1/streams/all/stills/0000000000001-1.jpg", 404),
        ("/api/v1/streams/none/stills", 404),
        ("/api/v1/streams/nowhere/stills", 404),
    ] {
        let res = reqwest::get(format!("{base}{path}")).await.expect("GET");
        assert_eq!(res.status().as_u16(), status, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json", "{path}");
    }
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `script` (its last statement's value returned) in the page.
async fn js(c: &fantoccini::Client, script: &str) -> serde_json::Value {
    c.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// Polls `script` until `wanted` holds on its value, within `secs`.
async fn js_until(c: &fantoccini::Client, secs: u64, what: &str, script: &str, wanted: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let v = js(c, script).await;
        if wanted(&v) {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(secs), "{what}: still {v} after {secs} s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The embedding example playing `stream`, with the player's `attributes` set.
async fn embed(c: &fantoccini::Client, base: &str, stream: &str, attributes: &[(&str, &str)]) {
    c.goto(&format!("{base}/static/embed.html?stream={stream}")).await.expect("open the embed example");
    let set: String = attributes.iter().map(|(k, v)| format!("el.setAttribute({k:?}, {v:?});")).collect();
    js(c, &format!("const el = document.getElementById('scope'); el.style.width = '960px'; el.style.height = '540px'; {set} return true")).await;
}

/// Pointer events on the picture at the given points of the player's box (CSS pixels): down
/// at the first, moves through the rest, up at the last.
async fn pointer_path(c: &fantoccini::Client, points: &[(f64, f64)]) {
    let script = r#"
        const points = arguments[0];
        const stage = document.querySelector(".scopecast-stage");
        const box = document.querySelector(".scopecast").getBoundingClientRect();
        const at = (p, type) => stage.dispatchEvent(new PointerEvent(type, { pointerId: 7, button: 0, buttons: 1, isPrimary: true,
            clientX: box.left + p[0], clientY: box.top + p[1], bubbles: true, cancelable: true }));
        at(points[0], "pointerdown");
        points.slice(1).forEach((p) => at(p, "pointermove"));
        at(points[points.length - 1], "pointerup");
        return true;
    "#;
    let points: Vec<serde_json::Value> = points.iter().map(|(x, y)| serde_json::json!([x, y])).collect();
    c.execute(script, vec![serde_json::Value::Array(points)]).await.expect("pointer events");
}

/// A picture pixel of a 1280x720 camera shown whole in the player's 16:9 box, as a point of
/// the box.
async fn on_box(c: &fantoccini::Client, (x, y): (f64, f64)) -> (f64, f64) {
    let w = js(c, "return document.querySelector('.scopecast').clientWidth").await.as_f64().expect("width");
    (x * w / 1280.0, y * w / 1280.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_the_sky_tools_zoom_draw_a_reticle_and_histogram_save_snapshots_and_focus() {
    let _serial = one_at_a_time().await;
    let relay = start_relay(vec![StreamConfig::test_scene("sky", Scene::DeepSky, 1280, 720, 10.0)]).await;
    let base = base_url(&relay);
    let downloads = std::env::temp_dir().join(format!("scopecast-downloads-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&downloads);
    std::fs::create_dir_all(&downloads).expect("downloads dir");
    let browser = Browser::start_downloading_to(&downloads).await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    embed(c, &base, "sky", &[("zoom", ""), ("reticle", "circles"), ("histogram", ""), ("focus", "")]).await;
    wait_for_page(c, "WebRTC", 30, |v| v["state"] == "live" && v["transport"] == "webrtc" && v["width"] == 1280).await;

    // The reticle: centred on the picture, with its circles.
    let reticle = js_until(c, 5, "the reticle", r#"
        const r = document.querySelector(".scopecast-reticle"), box = document.querySelector(".scopecast").getBoundingClientRect();
        if (!r) return null;
        const b = r.getBoundingClientRect();
        return { dx: b.left + b.width / 2 - (box.left + box.width / 2), dy: b.top + b.height / 2 - (box.top + box.height / 2), w: b.width, circles: r.querySelectorAll("circle").length };
    "#, |v| !v.is_null()).await;
    assert!(reticle["dx"].as_f64().unwrap_or(99.0).abs() < 1.0 && reticle["dy"].as_f64().unwrap_or(99.0).abs() < 1.0, "centred: {reticle}");
    assert!(reticle["w"].as_f64().unwrap_or_default() > 900.0 && reticle["circles"] == 3, "over the whole picture: {reticle}");

    // The histogram: the levels of the picture shown (a dark sky).
    let histogram = js_until(c, 5, "the histogram", "return Number(document.querySelector('.scopecast-histogram')?.dataset.median ?? -1)", |v| {
        v.as_i64().unwrap_or(-1) >= 0
    })
    .await;
    let shown = shown_median(c).await.expect("a picture");
    assert!(histogram.as_u64().expect("median").abs_diff(shown) <= 6, "histogram median {histogram}, picture {shown}");
    scopecast_tests::browser::save_screenshot(c, "player-sky-tools").await;

    // Zoom: the wheel zooms about the cursor (and the page does not scroll), 1 is 1:1, 0 fits.
    let wheel = js(
        c,
        r#"
        const root = document.querySelector(".scopecast"), b = root.getBoundingClientRect();
        const e = new WheelEvent("wheel", { deltaY: -400, clientX: b.left + 100, clientY: b.top + 100, bubbles: true, cancelable: true });
        root.dispatchEvent(e);
        return e.defaultPrevented;
    "#,
    )
    .await;
    assert!(wheel == true, "the page does not scroll");
    let zoom = "return Number(document.querySelector('.scopecast').dataset.zoom)";
    js_until(c, 2, "zoomed in by the wheel", zoom, |v| v.as_f64().is_some_and(|z| z > 1.5)).await;
    // Keys (the view re-renders a moment later: polled).
    let key = |k: &'static str| {
        format!("const root = document.querySelector('.scopecast'); root.focus(); root.dispatchEvent(new KeyboardEvent('keydown', {{ key: '{k}', bubbles: true, cancelable: true }})); return true")
    };
    js(c, &key("0")).await;
    js_until(c, 2, "fit again", zoom, |v| v.as_f64() == Some(1.0)).await;
    js(c, &key("1")).await;
    let native = js_until(c, 2, "1:1", zoom, |v| v.as_f64().is_some_and(|z| z > 1.0)).await;
    // At 1:1 the 1280 px picture covers 1280 device pixels.
    let shown_width =
        js(c, "const b = document.querySelector('.scopecast video').getBoundingClientRect(); return Math.min(b.width, b.height * 16 / 9) * devicePixelRatio")
            .await;
    assert!((shown_width.as_f64().unwrap_or_default() - 1280.0).abs() < 2.0, "1:1 at zoom {native}: {shown_width} px wide");
    // A drag pans (the layer moves with the pointer).
    let before = js(c, "return document.querySelector('.scopecast video').getBoundingClientRect().left").await.as_f64().unwrap_or_default();
    pointer_path(c, &[(500.0, 300.0), (480.0, 300.0), (440.0, 300.0)]).await;
    let left = "return document.querySelector('.scopecast video').getBoundingClientRect().left";
    js_until(c, 2, "panned 60 px left", left, |v| v.as_f64().is_some_and(|after| (before - after - 60.0).abs() < 1.0)).await;
    scopecast_tests::browser::save_screenshot(c, "player-zoom-1to1").await;
    js(c, &key("0")).await;
    js_until(c, 2, "fit again", zoom, |v| v.as_f64() == Some(1.0)).await;

    // The snapshot: the camera's JPEG, saved under its capture time.
    c.find(fantoccini::Locator::Css(".scopecast-tool-snapshot")).await.expect("the snapshot button").click().await.expect("click");
    let name = js_until(c, 10, "the snapshot", "return document.querySelector('.scopecast').dataset.snapshot || null", |v| v.is_string()).await;
    let name = name.as_str().unwrap_or_default().to_owned();
    assert!(name.starts_with("sky-20") && name.ends_with("Z.jpg") && !name.contains(':'), "{name}");
    let file = downloads.join(&name);
    let started = Instant::now();
    while !file.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "{name} not downloaded: {:?}", std::fs::read_dir(&downloads).map(|d| d.count()));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let saved = turbojpeg::decompress(&std::fs::read(&file).expect("read"), turbojpeg::PixelFormat::GRAY).expect("a JPEG");
    assert_eq!((saved.width, saved.height), (1280, 720), "the camera's own size");

    // Focus: a box drawn on the picture becomes that region at the camera's pixels.
    c.find(fantoccini::Locator::Css(".scopecast-tool-focus")).await.expect("the focus button").click().await.expect("click");
    let (from, to) = (on_box(c, (400.0, 200.0)).await, on_box(c, (720.0, 440.0)).await);
    pointer_path(c, &[from, ((from.0 + to.0) / 2.0, (from.1 + to.1) / 2.0), to]).await;
    scopecast_tests::eventually_async(5, "a region set", || async {
        reqwest::get(format!("{base}/api/v1/streams/sky/focus")).await.expect("GET").status() == 200
    })
    .await;
    let info: FocusInfo = reqwest::get(format!("{base}/api/v1/streams/sky/focus")).await.expect("GET").json().await.expect("FocusInfo");
    let r = info.region;
    assert!(r.x.abs_diff(400) <= 4 && r.y.abs_diff(200) <= 4 && r.width.abs_diff(320) <= 4 && r.height.abs_diff(240) <= 4, "{r:?}");
    let focus = js_until(
        c,
        15,
        "the focus view playing with a figure",
        r#"
        const panel = document.querySelector(".scopecast-focus");
        const v = panel && panel.querySelector("video");
        if (!v || !v.videoWidth) return null;
        return { w: v.videoWidth, h: v.videoHeight, figure: panel.querySelector(".scopecast-focus-figure").textContent,
            points: panel.querySelector("polyline").getAttribute("points").split(" ").filter(Boolean).length,
            outline: !!document.querySelector(".scopecast-stage .scopecast-region") };
    "#,
        |v| v["figure"].as_str().is_some_and(|f| f.starts_with("HFR")) && v["points"].as_u64().unwrap_or(0) >= 5,
    )
    .await;
    assert_eq!((focus["w"].as_u64(), focus["h"].as_u64()), (Some(u64::from(r.width)), Some(u64::from(r.height))), "native pixels: {focus}");
    assert!(focus["outline"] == true, "the region is outlined on the picture: {focus}");
    scopecast_tests::browser::save_screenshot(c, "player-focus").await;
    // A click is a point: the relay's default region around it.
    js(c, "document.querySelector('.scopecast').dataset.aiming === 'true' || document.querySelector('.scopecast-tool-focus').click(); return true").await;
    let centre = on_box(c, (640.0, 360.0)).await;
    pointer_path(c, &[centre]).await;
    scopecast_tests::eventually_async(5, "the region around the click", || async {
        let info: FocusInfo = reqwest::get(format!("{base}/api/v1/streams/sky/focus")).await.expect("GET").json().await.expect("FocusInfo");
        info.region.width == 256 && info.region.x.abs_diff(512) <= 4 && info.region.y.abs_diff(232) <= 4
    })
    .await;
    js_until(c, 5, "the focus view at the new size", "const v = document.querySelector('.scopecast-focus video'); return v ? v.videoWidth : 0", |v| v == 256)
        .await;

    // Fullscreen, from a real click.
    c.find(fantoccini::Locator::Css(".scopecast-tool-fullscreen")).await.expect("the fullscreen button").click().await.expect("click");
    js_until(c, 5, "fullscreen", "return document.fullscreenElement === document.querySelector('.scopecast')", |v| v == true).await;
    browser.close().await;
    let _ = std::fs::remove_dir_all(&downloads);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_chromium_a_slow_stream_shows_its_pictures_age_and_a_strip_of_stills() {
    let _serial = one_at_a_time().await;
    let dir = std::env::temp_dir().join(format!("scopecast-stills-strip-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let slow = StreamConfig {
        stills: Some(scopecast::config::StillsConfig { dir: dir.clone(), every: Duration::ZERO, max_bytes: 50_000_000 }),
        ..StreamConfig::test_scene("slow", Scene::DeepSky, 1280, 720, 0.2)
    };
    let relay = start_relay(vec![slow]).await;
    let base = base_url(&relay);
    let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
    let c = &browser.client;
    embed(c, &base, "slow", &[("stills", "4")]).await;
    wait_for_page(c, "WebRTC", 30, |v| v["state"] == "live" && v["transport"] == "webrtc").await;

    // For 14 s (almost three frames): the age as shown, and the bar toward the next frame.
    let probe = r#"
        const a = document.querySelector(".scopecast-age"), bar = a && a.querySelector(".scopecast-age-bar");
        return a ? { ms: Number(a.dataset.ageMs), text: a.firstChild.textContent, progress: bar ? Number(bar.dataset.progress) : null } : null;
    "#;
    let started = Instant::now();
    let (mut seen, mut resets, mut last_ms, mut shot) = (Vec::new(), 0, 0.0, false);
    while started.elapsed() < Duration::from_secs(14) {
        let v = js(c, probe).await;
        if let Some(ms) = v["ms"].as_f64() {
            let text = v["text"].as_str().unwrap_or_default().to_owned();
            let whole = (ms / 1000.0).floor();
            assert_eq!(text, format!("new frame {whole} s ago"), "{v}");
            assert!(ms < 6_500.0, "never older than the 5 s interval and a little: {v}");
            if let Some(p) = v["progress"].as_f64() {
                assert!((p - (ms / 5_000.0).min(1.0)).abs() < 0.1, "the bar is the share of the 5 s interval gone: {v}");
                if !shot && p > 0.5 {
                    scopecast_tests::browser::save_screenshot(c, "player-age").await;
                    shot = true;
                }
            }
            seen.push(ms);
            last_ms = ms;
        } else if last_ms > 0.0 {
            // Young again: a new frame came.
            resets += 1;
            last_ms = 0.0;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(seen.iter().any(|&ms| ms >= 4_000.0), "an old picture's age was shown: {seen:?}");
    assert!(resets >= 2, "each new frame resets the age: {resets} resets, {seen:?}");
    assert!(shot, "the progress bar was shown");

    // The strip: the last stills, loaded.
    let strip = js_until(c, 10, "the stills strip", "return [...document.querySelectorAll('.scopecast-stills img')].map((i) => i.naturalWidth)", |v| {
        v.as_array().is_some_and(|a| a.len() >= 2 && a.iter().all(|w| w == 1280))
    })
    .await;
    scopecast_tests::browser::save_screenshot(c, "player-stills").await;
    assert!(strip.as_array().is_some_and(|a| a.len() <= 4), "at most the 4 asked for: {strip}");
    browser.close().await;
    relay.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
