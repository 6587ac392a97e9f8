//! Headless Chromium through chromedriver, with the flags WebRTC over loopback needs.

use fantoccini::{Client, ClientBuilder};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: std::path::PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium. `None` (with a message) when
    /// chromedriver is not installed, so the caller decides whether that fails the test.
    pub async fn start() -> anyhow::Result<Self> {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run chromedriver ({e}); install chromium and chromium-driver"))?;
        let profile = std::env::temp_dir().join(format!("scopecast-chromium-{}-{}", std::process::id(), port));
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-loopback-in-peer-connection",
            "--disable-features=WebRtcHideLocalIpsWithMdns",
            "--autoplay-policy=no-user-gesture-required",
            "--disable-background-timer-throttling",
            "--disable-renderer-backgrounding",
            "--window-size=1280,800",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": "/usr/bin/chromium", "args": args }));
        let mut last = None;
        for _ in 0..50 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new()).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => return Ok(Self { client, driver, _profile: profile }),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut driver = driver;
        let _ = driver.kill();
        Err(anyhow::anyhow!("chromedriver did not start a session: {last:?}"))
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

/// What a test sees of the page's player: the video receiver's stats (frames decoded, PLIs,
/// FIRs, freezes), the `<video>`'s size, the player's state, the peer connection's state and
/// the camera state the page shows.
pub async fn page_status(client: &Client) -> serde_json::Value {
    let probe = r#"
        const done = arguments[arguments.length - 1];
        const p = window.scopecast;
        const v = document.getElementById("video");
        const source = (document.getElementById("source") || {}).textContent || "";
        const base = { frames: 0, plis: 0, firs: 0, freezes: 0, width: v ? v.videoWidth : 0, height: v ? v.videoHeight : 0, state: p ? p.state : "none", pc: "none", source };
        if (!p || !p.pc) return done(base);
        p.pc.getStats().then((all) => {
            let rx = {};
            all.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") rx = s; });
            done({ ...base, frames: rx.framesDecoded || 0, plis: rx.pliCount || 0, firs: rx.firCount || 0, freezes: rx.freezeCount || 0, pc: p.pc.connectionState });
        });
    "#;
    client.execute_async(probe, vec![]).await.unwrap_or(serde_json::Value::Null)
}

/// Polls [`page_status`] until `pred` holds; fails the test with the last status after `secs`.
pub async fn wait_for_page(client: &Client, what: &str, secs: u64, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let now = page_status(client).await;
        if pred(&now) {
            return now;
        }
        assert!(tokio::time::Instant::now() < deadline, "waiting for {what}: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A counter from [`page_status`].
pub fn count(status: &serde_json::Value, key: &str) -> u64 {
    status[key].as_u64().unwrap_or(0)
}
