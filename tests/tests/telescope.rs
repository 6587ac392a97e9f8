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
        if let Ok(Some(yuv)) = decoder.decode(unit.annexb) {
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
    drop(ws);

    // The deep sky: stars found, a half-flux radius on the event stream for every frame.
    let mut events = scopecast_tests::clients::SseReader::open(&format!("{base}/api/v1/streams/sky/events")).await.expect("events");
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
