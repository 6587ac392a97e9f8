//! Shared harness for the end-to-end tests: a relay on 127.0.0.1, a WHEP viewer built on the
//! `webrtc` crate that decodes what it receives, and an MJPEG camera served over HTTP.

pub mod bench;
pub mod browser;
pub mod camera;
pub mod clients;
pub mod corpus;
pub mod deadnet;
pub mod janus;
pub mod logs;
pub mod netns;
pub mod proxy;
pub mod rtsp;
pub mod udp_proxy;
pub mod viewer;
pub mod whip_publisher;
pub mod whip_sink;

use scopecast::config::{Config, IceConfig, SecurityConfig, StreamConfig};
use scopecast::Relay;

/// The rendition ladder the tests use below a stream's own: "small" (640x360, 600 kbit/s) and
/// "tiny" (320x180, 150 kbit/s, 10 fps).
pub fn small_and_tiny() -> Vec<scopecast::config::Rendition> {
    use scopecast::config::{Codec, Rendition};
    vec![
        Rendition { name: "small".into(), codec: Codec::H264, size: Some((640, 360)), bitrate_bps: 600_000, max_fps: None },
        Rendition { name: "tiny".into(), codec: Codec::H264, size: Some((320, 180)), bitrate_bps: 150_000, max_fps: Some(10.0) },
    ]
}

/// The test pattern at 1280x720 and 25 fps with [`small_and_tiny`] below it.
pub fn laddered_pattern(name: &str) -> StreamConfig {
    let mut stream = StreamConfig::test_pattern(name, 1280, 720, 25.0);
    stream.renditions = small_and_tiny();
    stream
}

/// A stream pulling MJPEG from `url`, scaled to `size` when given.
pub fn mjpeg_stream(name: &str, url: &str, size: Option<(usize, usize)>) -> StreamConfig {
    let mut stream = StreamConfig::test_pattern(name, 1280, 720, 25.0);
    stream.source = scopecast::config::SourceConfig::Mjpeg { url: url.parse().expect("camera URL") };
    stream.size = size;
    stream.max_fps = None;
    stream
}

/// Starts a relay on free loopback ports with the given streams.
pub async fn start_relay(streams: Vec<StreamConfig>) -> Relay {
    start_relay_with(streams, SecurityConfig::default()).await
}

/// Starts a relay with a token, CORS origins or limits of the test's choosing.
pub async fn start_relay_with(streams: Vec<StreamConfig>, security: SecurityConfig) -> Relay {
    start_relay_config(Config { security, ..test_config(streams) }).await
}

/// Plain HTTP on free loopback ports with `streams`: change what the test needs, then
/// `start_relay_config`.
pub fn test_config(streams: Vec<StreamConfig>) -> Config {
    Config {
        http: "127.0.0.1:0".parse().expect("address"),
        tls: None,
        ice: IceConfig { udp: "127.0.0.1:0".parse().expect("address"), additional_hosts: vec![], stun_servers: vec![], turn: vec![], include_loopback: true },
        security: SecurityConfig::default(),
        streams,
    }
}

pub async fn start_relay_config(config: Config) -> Relay {
    config.validate().expect("test configuration is valid");
    Relay::start(config).await.expect("relay starts")
}

/// `http://` or `https://` and the relay's address.
pub fn base_url(relay: &Relay) -> String {
    relay.base_url()
}

/// Waits until `cond` holds, polling; fails the test after `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// As `eventually`, for a condition that has to await (an HTTP request, say).
pub async fn eventually_async<F: std::future::Future<Output = bool>>(secs: u64, what: &str, mut cond: impl FnMut() -> F) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Runs timing-sensitive tests of one binary one at a time. The webrtc crate (relay and test
/// viewer alike) drops a DTLS packet that arrives before its DTLS transport has started, and
/// the handshake then waits for the 1 s retransmission; seven relays and decoders sharing two
/// cores widen that window, and a first frame sent in milliseconds arrives a second late.
pub async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
