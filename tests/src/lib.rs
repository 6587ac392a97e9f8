//! Shared harness for the end-to-end tests: a relay on 127.0.0.1, a WHEP viewer built on the
//! `webrtc` crate that decodes what it receives, and an MJPEG camera served over HTTP.

pub mod bench;
pub mod browser;
pub mod camera;
pub mod clients;
pub mod corpus;
pub mod deadnet;
pub mod logs;
pub mod proxy;
pub mod udp_proxy;
pub mod viewer;

use scopecast::config::{Config, IceConfig, SecurityConfig, StreamConfig};
use scopecast::Relay;

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
    let config = Config {
        http: "127.0.0.1:0".parse().expect("address"),
        ice: IceConfig { udp: "127.0.0.1:0".parse().expect("address"), additional_hosts: vec![], stun_servers: vec![], include_loopback: true },
        security,
        streams,
    };
    config.validate().expect("test configuration is valid");
    Relay::start(config).await.expect("relay starts")
}

pub fn base_url(relay: &Relay) -> String {
    format!("http://{}", relay.http_addr())
}

/// Waits until `cond` holds, polling; fails the test after `secs`.
pub async fn eventually(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
