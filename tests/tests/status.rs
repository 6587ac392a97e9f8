//! What operators and players read: the stream API, its Server-Sent Events, Prometheus
//! metrics and the health check, followed through a camera going away and coming back.

use scopecast_shared::api::FrameTimings;
use scopecast_shared::{Problem, SourceKind, SourceState, StreamInfo, StreamList};
use scopecast_tests::camera::{self, Frames, Framing};
use scopecast_tests::clients::SseReader;
use scopecast_tests::logs;
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::{base_url, mjpeg_stream, start_relay};
use std::time::Duration;

/// The value of a Prometheus sample with exactly these labels (in any order).
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric_name, rest) = series.split_once('{').unwrap_or((series, "}"));
        let pairs: Vec<&str> = rest.trim_end_matches('}').split(',').filter(|p| !p.is_empty()).collect();
        let matches = metric_name == name && pairs.len() == labels.len() && labels.iter().all(|(k, v)| pairs.contains(&format!("{k}=\"{v}\"").as_str()));
        matches.then(|| value.parse().ok()).flatten()
    })
}

async fn get_json<T: serde::de::DeserializeOwned>(url: &str) -> T {
    reqwest::get(url).await.expect("GET").json().await.expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_api_events_and_metrics_follow_the_camera() {
    let logs = logs::capture();
    let cam = camera::start(Frames::Pattern { width: 640, height: 360, strip_huffman: false }, 25.0, Framing::FfmpegCrlf).await;
    let with_password = cam.url().replace("http://", "http://astro:hunter2@");
    let relay = start_relay(vec![mjpeg_stream("scope", &with_password, None)]).await;
    let base = base_url(&relay);
    let info_url = format!("{base}/api/v1/streams/scope");

    let mut events = SseReader::open(&format!("{info_url}/events")).await.expect("event stream");
    let first = events.next(Duration::from_secs(5)).await.expect("the current state at once");
    assert_eq!(first.event, "state", "{first:?}");
    if first.data["state"] != "live" {
        events.until("state", Duration::from_secs(5), |d| d["state"] == "live").await.expect("live");
    }

    let mut viewer = WhepViewer::connect(&format!("{base}/scope/whep")).await.expect("WHEP negotiation");
    events.until("viewers", Duration::from_secs(5), |d| d["webrtc"] == 1).await.expect("viewer count event");
    assert!(viewer.collect(25, Duration::from_secs(10)).await.len() >= 25);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let info: StreamInfo = get_json(&info_url).await;
    assert_eq!((info.name.as_str(), info.source, info.state), ("scope", SourceKind::Mjpeg, SourceState::Live));
    // The player's own reading of the same JSON (a subset, to keep its wasm small) agrees.
    let seen: scopecast_shared::api::PlayerStreamInfo = get_json(&info_url).await;
    assert_eq!((seen.state, seen.video, seen.max_fps, seen.last_error.is_none()), (info.state, info.video, info.max_fps, info.last_error.is_none()));
    assert!(seen.fps_in > 0.0, "{seen:?}");
    assert_eq!(info.source_url.as_deref(), Some(cam.url().as_str()), "the URL without its credentials");
    assert_eq!((info.width, info.height), (Some(640), Some(360)));
    assert!((15.0..=35.0).contains(&info.fps_in) && (15.0..=35.0).contains(&info.fps_out), "rates: in {} out {}", info.fps_in, info.fps_out);
    assert!(info.bitrate_bps > 10_000, "bitrate {}", info.bitrate_bps);
    assert_eq!(info.viewers.webrtc, 1);
    assert!(info.frames_in >= 25 && info.frames_encoded >= 25, "{info:?}");
    let age = scopecast::timing::unix_ms().saturating_sub(info.last_frame_ms.expect("a last frame"));
    assert!(age < 1000, "last frame {age} ms ago");
    assert_eq!((info.whep_url.as_str(), info.mjpeg_url.as_str(), info.snapshot_url.as_str()), ("/scope/whep", "/scope/mjpeg", "/scope/snapshot.jpg"));

    // Where the latency goes: the camera stamps X-Timestamp, so its own share shows too.
    let l = info.latency.clone().expect("stage times once frames went out");
    assert!(l.frames >= 25, "{l:?}");
    assert!(l.source_ms > 0.0 && l.decode_ms > 0.0 && l.encode_ms > 0.0 && l.queue_ms >= 0.0 && l.send_ms >= 0.0, "{l:?}");
    assert!(l.total_ms >= l.decode_ms + l.encode_ms && l.total_ms < 500.0, "{l:?}");
    let timings: FrameTimings = get_json(&format!("{base}{}", info.timings_url)).await;
    let sent: Vec<_> = timings.frames.iter().filter(|f| f.sent_ms.is_some()).collect();
    assert!(sent.len() >= 25, "{} of {} frames sent", sent.len(), timings.frames.len());
    for f in &sent {
        let stamps = [f.captured_ms, f.arrived_ms, f.started_ms, f.decoded_ms, f.encoded_ms, f.sent_ms.unwrap_or_default()];
        // The camera's stamp has whole milliseconds; the rest are the relay's own clock.
        assert!(stamps[0] <= stamps[1] + 1.0 && stamps[1..].windows(2).all(|w| w[0] <= w[1]), "stages out of order: {f:?}");
    }
    assert!(sent.windows(2).all(|w| (w[1].rtp_timestamp.wrapping_sub(w[0].rtp_timestamp) as i32) > 0), "RTP time moves forward");
    let list: StreamList = get_json(&format!("{base}/api/v1/streams")).await;
    assert_eq!(list.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["scope"]);
    let names: scopecast_shared::api::PlayerStreamList = get_json(&format!("{base}/api/v1/streams")).await;
    assert_eq!(names.streams.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), vec!["scope"], "the relay's page reads the names");

    let res = reqwest::get(format!("{base}/metrics")).await.expect("metrics");
    assert!(res.headers()["content-type"].to_str().expect("type").starts_with("text/plain; version=0.0.4"));
    let text = res.text().await.expect("text");
    let scope = ("stream", "scope");
    assert_eq!(metric(&text, "scopecast_source_state", &[scope, ("state", "live")]), Some(1.0), "{text}");
    assert_eq!(metric(&text, "scopecast_source_state", &[scope, ("state", "offline")]), Some(0.0));
    assert_eq!(metric(&text, "scopecast_viewers", &[scope, ("kind", "webrtc")]), Some(1.0));
    assert!(metric(&text, "scopecast_frames_in_total", &[scope]).is_some_and(|v| v >= 25.0));
    assert!(metric(&text, "scopecast_encoded_bytes_total", &[scope]).is_some_and(|v| v > 0.0));
    assert_eq!(metric(&text, "scopecast_whep_sessions", &[]), Some(1.0));

    // The camera goes away: the event says so with the reason, the API and metrics agree.
    cam.stop().await;
    let offline = events.until("state", Duration::from_secs(5), |d| d["state"] == "offline").await.expect("offline event");
    let reason = offline.data["last_error"].as_str().expect("a reason").to_owned();
    let info: StreamInfo = get_json(&info_url).await;
    assert_eq!(info.state, SourceState::Offline);
    assert!(info.last_error.is_some());
    let text = reqwest::get(format!("{base}/metrics")).await.expect("metrics").text().await.expect("text");
    assert_eq!(metric(&text, "scopecast_source_state", &[scope, ("state", "offline")]), Some(1.0));
    cam.restart().await;
    events.until("state", Duration::from_secs(5), |d| d["state"] == "live").await.expect("live again");

    viewer.delete().await.expect("DELETE");
    events.until("viewers", Duration::from_secs(5), |d| d["webrtc"] == 0).await.expect("viewer gone");

    assert_eq!(reqwest::get(format!("{base}/healthz")).await.expect("healthz").text().await.expect("text"), "ok");
    for path in ["/api/v1/streams/nebula", "/api/v1/streams/nebula/events"] {
        let res = reqwest::get(format!("{base}{path}")).await.expect("GET");
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.json::<Problem>().await.expect("problem").slug(), "unknown-stream");
    }
    // The password is sent to the camera, and shown nowhere else.
    assert!(!reason.contains("hunter2"));
    assert!(logs.lines_with(&["hunter2"]).is_empty(), "credentials in the log");
    assert!(!logs.lines_with(&["scope"]).is_empty(), "the log was captured");

    relay.shutdown().await;
    assert!(events.ends_within(Duration::from_secs(5)).await, "event streams end when the relay stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_server_sent_events_extension() {
    const REL: &str = "urn:ietf:params:whep:ext:core:server-sent-events";
    let cam = camera::start(Frames::Pattern { width: 320, height: 240, strip_huffman: false }, 25.0, Framing::FfmpegCrlf).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port");
    let relay = start_relay(vec![mjpeg_stream("scope", &cam.url(), None), mjpeg_stream("dark", &format!("http://{closed}/"), None)]).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    let viewer = WhepViewer::connect(&format!("{base}/scope/whep")).await.expect("WHEP negotiation");
    let link = viewer.links.iter().find(|l| l.contains(REL)).expect("the 201 advertises the extension");
    assert!(link.contains("events=\"active,inactive,viewercount\""), "{link}");
    let sse = viewer.link(REL).expect("extension URL");

    // Ask for the events; a body that names an event not offered is refused.
    let bad = client.post(&sse).header("content-type", "application/json").body(r#"["layers"]"#).send().await.expect("POST");
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Problem>().await.expect("problem").slug(), "bad-event-list");
    let created = client.post(&sse).header("content-type", "application/json").body(r#"["active","inactive","viewercount"]"#).send().await.expect("POST");
    assert_eq!(created.status(), 201);
    let events_url = format!("{base}{}", created.headers()["location"].to_str().expect("location"));
    let mut events = SseReader::open(&events_url).await.expect("event stream");
    let mut first_two = [events.next(Duration::from_secs(5)).await.expect("event"), events.next(Duration::from_secs(5)).await.expect("event")];
    first_two.sort_by(|a, b| a.event.cmp(&b.event));
    assert_eq!((first_two[0].event.as_str(), first_two[0].data.clone()), ("active", serde_json::json!({})));
    assert_eq!((first_two[1].event.as_str(), first_two[1].data.clone()), ("viewercount", serde_json::json!({ "viewercount": 1 })));

    // An MJPEG viewer counts; the camera going and coming is inactive, then active.
    let mjpeg = scopecast_tests::clients::MjpegReader::open(&format!("{base}/scope/mjpeg")).await.expect("MJPEG");
    events.until("viewercount", Duration::from_secs(5), |d| d["viewercount"] == 2).await.expect("two viewers");
    drop(mjpeg);
    events.until("viewercount", Duration::from_secs(5), |d| d["viewercount"] == 1).await.expect("one viewer");
    cam.stop().await;
    events.until("inactive", Duration::from_secs(5), |_| true).await.expect("inactive");
    cam.restart().await;
    events.until("active", Duration::from_secs(5), |_| true).await.expect("active again");

    // DELETE ends the event stream; it is gone afterwards.
    assert_eq!(client.delete(&events_url).send().await.expect("DELETE").status(), 200);
    assert!(events.ends_within(Duration::from_secs(5)).await, "the deleted stream ends");
    assert_eq!(client.get(&events_url).send().await.expect("GET").status(), 404);
    // Every event stream ends with its WHEP session.
    let created = client.post(&sse).send().await.expect("POST without a body: every event");
    assert_eq!(created.status(), 201);
    let mut events = SseReader::open(&format!("{base}{}", created.headers()["location"].to_str().expect("location"))).await.expect("event stream");
    assert!(events.next(Duration::from_secs(5)).await.is_some());
    assert_eq!(viewer.delete().await.expect("DELETE"), 200);
    assert!(events.ends_within(Duration::from_secs(5)).await, "the event stream ends with its session");

    // A stream that is not live sends no initial `inactive`.
    let dark = WhepViewer::connect(&format!("{base}/dark/whep")).await.expect("WHEP negotiation (the default policy waits)");
    let created = client.post(dark.link(REL).expect("extension URL")).send().await.expect("POST");
    let mut events = SseReader::open(&format!("{base}{}", created.headers()["location"].to_str().expect("location"))).await.expect("event stream");
    let first = events.next(Duration::from_secs(5)).await.expect("event");
    assert_eq!(first.event, "viewercount", "{first:?}");
    assert!(events.next(Duration::from_secs(2)).await.is_none_or(|e| e.event != "inactive"), "no initial inactive");
    dark.delete().await.expect("DELETE");
    relay.shutdown().await;
}
