//! Hostile input, table-driven: what cameras, HTTP clients and config files can throw at the
//! relay, each with the exact answer expected. Nothing panics, hangs or grows without bound; a
//! bad frame is counted and skipped and the next good one goes through. (The WHEP request
//! table is in whep_errors.rs.)

use scopecast::config::{Config, StreamConfig};
use scopecast::media::jpeg::encode_i420;
use scopecast::media::testpattern::TestPattern;
use scopecast::media::I420;
use scopecast_shared::{Problem, SourceState, StreamInfo};
use scopecast_tests::viewer::WhepViewer;
use scopecast_tests::{base_url, mjpeg_stream, start_relay};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

fn good_jpeg() -> Vec<u8> {
    let mut pattern = TestPattern::new("bad-input", 320, 240);
    let mut pic = I420::new(2, 2);
    pattern.render(1_795_000_000_000, &mut pic);
    encode_i420(&pic, 80).expect("jpeg")
}

fn part(body: &[u8]) -> Vec<u8> {
    let mut out = format!("--b\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
    out
}

const MULTIPART_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=b\r\nConnection: close\r\n\r\n";

/// A camera that answers every connection with `script` (raw HTTP bytes), then keeps good
/// frames coming when `then_good` (so the test sees the relay recover), else stays silent.
/// With `repeat`, the script's body (after the head) comes again before every good frame.
async fn hostile_camera(script: Vec<u8>, then_good: bool, repeat: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let good = part(&good_jpeg());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (script, good) = (script.clone(), good.clone());
            tokio::spawn(async move {
                let mut req = [0u8; 2048];
                let _ = tokio::io::AsyncReadExt::read(&mut sock, &mut req).await;
                for chunk in script.chunks(64 * 1024) {
                    if sock.write_all(chunk).await.is_err() {
                        return;
                    }
                }
                let again = script.strip_prefix(MULTIPART_HEAD).unwrap_or(&[]).to_vec();
                loop {
                    if repeat && sock.write_all(&again).await.is_err() {
                        return;
                    }
                    // The bad part stays the newest frame for a while: only the newest is
                    // decoded, and a good one right behind it would supersede it on a busy machine.
                    if repeat {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    if then_good && sock.write_all(&good).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            });
        }
    });
    format!("http://{addr}/stream")
}

enum Expect {
    /// Frames get through after the bad input, which was counted as rejected (at least n).
    RecoversAfterRejecting(u64),
    /// No frame; the source is offline with this in its last error.
    OfflineBecause(&'static str),
}

struct Camera {
    name: &'static str,
    script: Vec<u8>,
    then_good: bool,
    /// A viewer watches (frames are decoded only while someone watches).
    watched: bool,
    expect: Expect,
}

fn with_head(body: Vec<u8>) -> Vec<u8> {
    [MULTIPART_HEAD.to_vec(), body].concat()
}

fn camera_cases() -> Vec<Camera> {
    let good = good_jpeg();
    let mut truncated = good[..good.len() / 2].to_vec();
    truncated.extend_from_slice(&[0xff, 0xd9]);
    let mut noise = vec![0xff, 0xd8];
    noise.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    // A baseline SOF0 claiming 65500x65500: a decoder that trusts it allocates 12 GB.
    let mut giant = good.clone();
    if let Some(i) = giant.windows(2).position(|w| w == [0xff, 0xc0]) {
        giant[i + 5..i + 9].copy_from_slice(&[0xff, 0xdc, 0xff, 0xdc]);
    }
    let over_cap = 17 * 1024 * 1024;
    let mut declared_huge = format!("--b\r\nContent-Type: image/jpeg\r\nContent-Length: {over_cap}\r\n\r\n").into_bytes();
    declared_huge.extend(std::iter::repeat_n(0u8, over_cap));
    declared_huge.extend_from_slice(b"\r\n");
    let mut undeclared_huge = b"--b\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8".to_vec();
    undeclared_huge.extend(std::iter::repeat_n(0x55u8, over_cap));
    undeclared_huge.extend_from_slice(b"\r\n");
    let long_header = format!("--b\r\nX-Junk: {}\r\n\r\n", "j".repeat(20_000)).into_bytes();
    vec![
        Camera {
            name: "a 404 page",
            script: b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(),
            then_good: false,
            watched: false,
            expect: Expect::OfflineBecause("HTTP 404"),
        },
        Camera {
            name: "a 500 page",
            script: b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec(),
            then_good: false,
            watched: false,
            expect: Expect::OfflineBecause("HTTP 500"),
        },
        Camera {
            name: "not HTTP at all",
            script: b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(),
            then_good: false,
            watched: false,
            expect: Expect::OfflineBecause("connect failed"),
        },
        Camera { name: "headers then silence", script: MULTIPART_HEAD.to_vec(), then_good: false, watched: false, expect: Expect::OfflineBecause("no data") },
        Camera {
            name: "bytes but never a frame",
            script: with_head(b"junk ".repeat(400)),
            then_good: false,
            watched: false,
            expect: Expect::OfflineBecause("no complete frame"),
        },
        Camera {
            name: "a text part among JPEGs",
            script: with_head(part(b"hello, I am not a picture")),
            then_good: true,
            watched: false,
            expect: Expect::RecoversAfterRejecting(1),
        },
        Camera {
            name: "a declared part over the 16 MiB cap",
            script: with_head(declared_huge),
            then_good: true,
            watched: false,
            expect: Expect::RecoversAfterRejecting(1),
        },
        Camera {
            name: "an undeclared part over the cap",
            script: with_head(undeclared_huge),
            then_good: true,
            watched: false,
            expect: Expect::RecoversAfterRejecting(1),
        },
        Camera { name: "a 20 KB header line", script: with_head(long_header), then_good: true, watched: false, expect: Expect::RecoversAfterRejecting(1) },
        Camera { name: "a truncated JPEG", script: with_head(part(&truncated)), then_good: true, watched: true, expect: Expect::RecoversAfterRejecting(1) },
        Camera {
            name: "noise after a JPEG marker",
            script: with_head(part(&noise)),
            then_good: true,
            watched: true,
            expect: Expect::RecoversAfterRejecting(1),
        },
        Camera {
            name: "a JPEG claiming 65500x65500",
            script: with_head(part(&giant)),
            then_good: true,
            watched: true,
            expect: Expect::RecoversAfterRejecting(1),
        },
    ]
}

async fn stream_info(client: &reqwest::Client, base: &str) -> StreamInfo {
    client.get(format!("{base}/api/v1/streams/cam")).send().await.expect("status").json().await.expect("StreamInfo")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_cameras_are_survived_and_reported() {
    let logs = scopecast_tests::logs::capture();
    let client = reqwest::Client::new();
    let only = std::env::var("BAD_INPUT_CASE").ok();
    for case in camera_cases().into_iter().filter(|c| only.as_deref().is_none_or(|o| c.name.contains(o))) {
        // Watched cases decode, and only the newest frame is decoded: the bad one must keep coming.
        let url = hostile_camera(case.script, case.then_good, case.watched).await;
        let mut stream = mjpeg_stream("cam", &url, None);
        stream.stall_timeout = Duration::from_secs(1);
        let relay = start_relay(vec![stream]).await;
        let base = base_url(&relay);
        let viewer = if case.watched { Some(WhepViewer::connect(&format!("{base}/cam/whep")).await.expect("viewer")) } else { None };
        let deadline = Instant::now() + Duration::from_secs(8);
        let info = loop {
            let info = stream_info(&client, &base).await;
            let done = match case.expect {
                Expect::RecoversAfterRejecting(n) => info.frames_rejected >= n && info.state == SourceState::Live && (!case.watched || info.frames_encoded > 0),
                Expect::OfflineBecause(why) => info.state == SourceState::Offline && info.last_error.as_deref().is_some_and(|e| e.contains(why)),
            };
            if done || Instant::now() > deadline {
                break info;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match case.expect {
            Expect::RecoversAfterRejecting(n) => {
                assert!(info.frames_rejected >= n, "{}: rejected {} (want >= {n}): {info:?}", case.name, info.frames_rejected);
                assert_eq!(info.state, SourceState::Live, "{}: live again: {info:?}", case.name);
                assert!(info.frames_in > 0, "{}: good frames after the bad one: {info:?}", case.name);
            }
            Expect::OfflineBecause(why) => {
                assert_eq!(info.state, SourceState::Offline, "{}: {info:?}", case.name);
                assert!(info.last_error.as_deref().is_some_and(|e| e.contains(why)), "{}: last error should say {why:?}: {info:?}", case.name);
                assert_eq!(info.frames_in, 0, "{}", case.name);
            }
        }
        if let Some(mut v) = viewer {
            let got = v.collect(1, Duration::from_secs(5)).await;
            let rtp = v.rtp.lock().map(|l| l.clone()).unwrap_or_default();
            assert!(
                !got.is_empty(),
                "{}: the viewer still gets pictures ({rtp:?}, {:?}); the relay said: {:#?}",
                case.name,
                stream_info(&client, &base).await,
                logs.lines_with(&["cam"])
            );
            v.close().await;
        }
        relay.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_requests_get_a_problem_body() {
    let relay = start_relay(vec![StreamConfig::test_pattern("telescope", 320, 240, 5.0)]).await;
    let base = base_url(&relay);
    let client = reqwest::Client::new();
    let long_name = "x".repeat(5000);
    let cases: Vec<(&str, reqwest::Method, String, u16, &str)> = vec![
        ("unknown stream's status", reqwest::Method::GET, "/api/v1/streams/nebula".into(), 404, "unknown-stream"),
        ("a 5000-character stream name", reqwest::Method::GET, format!("/api/v1/streams/{long_name}"), 404, "unknown-stream"),
        ("a NUL in a stream name", reqwest::Method::GET, "/api/v1/streams/%00".into(), 404, "unknown-stream"),
        ("POST to the stream list", reqwest::Method::POST, "/api/v1/streams".into(), 405, "method-not-allowed"),
        ("PUT on a WHEP endpoint", reqwest::Method::PUT, "/telescope/whep".into(), 405, "method-not-allowed"),
        ("unknown stream's events", reqwest::Method::GET, "/api/v1/streams/nebula/events".into(), 404, "unknown-stream"),
        ("unknown stream's MJPEG", reqwest::Method::GET, "/nebula/mjpeg".into(), 404, "unknown-stream"),
        ("unknown stream's snapshot", reqwest::Method::GET, "/nebula/snapshot.jpg".into(), 404, "unknown-stream"),
        ("path traversal in /static", reqwest::Method::GET, "/static/%2e%2e/%2e%2e/Cargo.toml".into(), 404, "not-found"),
        ("an unknown static file", reqwest::Method::GET, "/static/nope.js".into(), 404, "not-found"),
        ("unknown stream's page", reqwest::Method::GET, "/nebula/".into(), 404, "unknown-stream"),
    ];
    for (name, method, path, status, slug) in cases {
        let res = client.request(method, format!("{base}{path}")).send().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(res.status().as_u16(), status, "{name}");
        assert_eq!(res.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/problem+json"), "{name}");
        let p: Problem = res.json().await.unwrap_or_else(|e| panic!("{name}: not a problem body: {e}"));
        assert_eq!((p.slug(), p.status), (slug, status), "{name}");
    }
    // Still serving after all that.
    assert!(client.get(format!("{base}/healthz")).send().await.expect("healthz").status().is_success());
    relay.shutdown().await;
}

#[test]
fn bad_config_files_are_refused_naming_the_problem() {
    let cases: [(&str, &str, &str); 10] = [
        ("not TOML at all", "{\"server\": 1}", "config"),
        ("an unknown table", "[servr]\nhttp = \"127.0.0.1:1\"\n", "servr"),
        ("a width of the wrong type", "[streams.a]\nsource = \"test:\"\nwidth = \"wide\"\n", "width"),
        ("a negative frame rate", "[streams.a]\nsource = \"test:640x480@-1\"\n", "fps"),
        ("a zero size", "[streams.a]\nsource = \"test:0x0\"\n", "width"),
        ("a 100000-pixel width", "[streams.a]\nsource = \"test:\"\nwidth = 100000\n", "width"),
        ("a URL with spaces", "[streams.a]\nsource = \"http://cam here/stream\"\n", "streams.a.source"),
        ("a stream defined twice", "[streams.a]\nsource = \"test:\"\n[streams.a]\nsource = \"test:\"\n", "config"),
        ("a zero bitrate", "[streams.a]\nsource = \"test:\"\nbitrate_kbps = 0\n", "bitrate_kbps"),
        ("a port out of range", "[server]\nhttp = \"127.0.0.1:70000\"\n", "http"),
    ];
    for (name, text, key) in cases {
        let err = Config::from_toml(text).expect_err(name).to_string();
        assert!(err.contains(key), "{name}: the error should name {key:?}: {err}");
    }
}
