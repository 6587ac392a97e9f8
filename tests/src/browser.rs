//! Headless Chromium through chromedriver, with the flags WebRTC over loopback needs.

use crate::proxy::{Mode, Proxy};
use crate::udp_proxy::UdpProxy;
use fantoccini::{Client, ClientBuilder};
use scopecast::config::StreamConfig;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
    /// Chromium's profile directory (geckodriver makes and removes Firefox's itself).
    _profile: Option<std::path::PathBuf>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

impl Browser {
    /// Starts chromedriver and a fresh headless Chromium. `None` (with a message) when
    /// chromedriver is not installed, so the caller decides whether that fails the test.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(&[]).await
    }

    /// As `start`, with more Chromium flags (a trusted certificate, an ICE policy...).
    pub async fn start_with(extra_args: &[String]) -> anyhow::Result<Self> {
        Self::launch(extra_args, serde_json::json!({})).await
    }

    /// As `start`, saving downloads into `dir` without asking.
    pub async fn start_downloading_to(dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::launch(&[], serde_json::json!({ "download.default_directory": dir, "download.prompt_for_download": false })).await
    }

    async fn launch(extra_args: &[String], prefs: serde_json::Value) -> anyhow::Result<Self> {
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
        .chain(extra_args.iter().cloned())
        .collect::<Vec<_>>();
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": "/usr/bin/chromium", "args": args, "prefs": prefs }));
        let mut last = None;
        for _ in 0..50 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Ok(Self { client, driver, _profile: Some(profile) }),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut driver = driver;
        let _ = driver.kill();
        Err(anyhow::anyhow!("chromedriver did not start a session: {last:?}"))
    }

    /// Starts geckodriver and a fresh headless Firefox (Debian's firefox-esr) that has no H.264,
    /// as on a machine without internet, where it cannot fetch its OpenH264 plugin: its offers
    /// carry VP8, VP9 and AV1 only. Host addresses are not hidden behind mDNS names.
    pub async fn start_firefox() -> anyhow::Result<Self> {
        let port = free_port();
        let driver = Command::new("geckodriver")
            .args(["--port", &port.to_string(), "--log", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot run geckodriver ({e}); scripts/setup-geckodriver.sh installs it"))?;
        let prefs = serde_json::json!({
            "media.gmp-gmpopenh264.enabled": false,
            "media.gmp-gmpopenh264.autoupdate": false,
            "media.gmp-manager.updateEnabled": false,
            "media.webrtc.hw.h264.enabled": false,
            "media.peerconnection.ice.obfuscate_host_addresses": false,
            "media.autoplay.default": 0,
            "media.autoplay.blocking_policy": 0,
            "network.proxy.type": 0,
        });
        let mut caps = serde_json::Map::new();
        caps.insert(
            "moz:firefoxOptions".into(),
            serde_json::json!({ "binary": "/usr/bin/firefox-esr", "args": ["-headless", "--width=1280", "--height=800"], "prefs": prefs }),
        );
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => return Ok(Self { client, driver, _profile: None }),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let mut driver = driver;
        let _ = driver.kill();
        Err(anyhow::anyhow!("geckodriver did not start a session: {last:?}"))
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        if let Some(dir) = &self._profile {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// What a test sees of the first player on the page (`.scopecast`, the Leptos live view): its
/// status, transport and camera state (the `data-` attributes it keeps), fallback frames drawn (H.264 or MJPEG),
/// the badges' text, the `<video>`'s size, and the WebRTC receiver's stats (frames decoded,
/// PLIs, FIRs, freezes) with the peer connection's state.
pub async fn page_status(client: &Client) -> serde_json::Value {
    let probe = r#"
        const done = arguments[arguments.length - 1];
        const root = document.querySelector(".scopecast");
        if (!root) return done({ state: "none", frames: 0, fallback: 0, width: 0, height: 0, pc: "none" });
        const v = root.querySelector("video");
        const c = root.querySelector("canvas");
        const text = (sel) => (root.querySelector(sel) || {}).textContent || "";
        const base = {
            state: root.dataset.status || "none", transport: root.dataset.transport || "none", source: root.dataset.source || "unknown",
            status_text: text(".scopecast-status"), source_text: text(".scopecast-source"),
            fallback: Number(root.dataset.fallbackFrames || 0), canvas_width: c ? c.width : 0, canvas_visible: !!c && !c.classList.contains("scopecast-hidden"),
            frames: 0, plis: 0, firs: 0, freezes: 0, nacks: 0, lost: 0, received: 0, width: v ? v.videoWidth : 0, height: v ? v.videoHeight : 0, pc: "none",
            session: root.scopecast && root.scopecast.sessionUrl, secure: root.dataset.secure === "true",
            rendition: root.dataset.rendition || "", pinned: root.dataset.renditionPinned === "true",
            choices: [...root.querySelectorAll(".scopecast-rendition option")].map((o) => o.value),
        };
        const pc = root.scopecast && root.scopecast.pc;
        if (!pc) return done(base);
        pc.getStats().then((all) => {
            let rx = {};
            all.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") rx = s; });
            done({ ...base, frames: rx.framesDecoded || 0, plis: rx.pliCount || 0, firs: rx.firCount || 0, freezes: rx.freezeCount || 0,
                nacks: rx.nackCount || 0, lost: rx.packetsLost || 0, received: rx.packetsReceived || 0, pc: pc.connectionState });
        }, () => done(base));
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

/// Saves a screenshot of the page as `target/screenshots/{name}.png`. Tests never write the
/// tracked `docs/screenshots/` (README shows those): `scripts/screenshots.sh` copies these over
/// when the player's look changes.
pub async fn save_screenshot(client: &Client, name: &str) {
    let shot = client.screenshot().await.expect("screenshot");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    let _ = std::fs::create_dir_all(&dir);
    std::fs::write(dir.join(format!("{name}.png")), shot).expect("write screenshot");
}

/// The luma median (0-255) of what the first player shows: its `<video>` while WebRTC plays,
/// else its fallback canvas; `None` before it has a picture.
pub async fn shown_median(client: &Client) -> Option<u64> {
    let probe = r#"
        const root = document.querySelector(".scopecast");
        const canvas = root && root.querySelector("canvas");
        const video = root && root.querySelector("video");
        const el = canvas && !canvas.classList.contains("scopecast-hidden") ? canvas : video;
        const w = el ? el.videoWidth || el.width : 0, h = el ? el.videoHeight || el.height : 0;
        if (!w || !h) return null;
        const c = document.createElement("canvas");
        c.width = w; c.height = h;
        const g = c.getContext("2d", { willReadFrequently: true });
        g.drawImage(el, 0, 0);
        const d = g.getImageData(0, 0, w, h).data;
        const hist = new Array(256).fill(0);
        for (let i = 0; i < d.length; i += 4) hist[Math.round(0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2])]++;
        let seen = 0;
        for (let i = 0; i < 256; i++) { seen += hist[i]; if (seen * 2 >= w * h) return i; }
        return 255;
    "#;
    client.execute(probe, vec![]).await.ok().and_then(|v| v.as_u64())
}

/// Opens the player's details overlay (the "i" button).
pub async fn show_overlay(client: &Client) {
    client.execute(r#"document.querySelector(".scopecast .scopecast-toggle").click()"#, vec![]).await.expect("toggle overlay");
}

/// Chromium playing `streams`' first stream, "telescope", with its media through a UDP proxy,
/// which the test can impair, cut or rebind (a lossy link, a NAT rebinding, a viewer roaming
/// to another network), and read (the RTP headers that went by).
pub struct ProxiedPlayer {
    pub relay: scopecast::relay::Relay,
    pub proxy: Proxy,
    pub media: UdpProxy,
    pub browser: Browser,
}

impl ProxiedPlayer {
    pub async fn start(streams: Vec<StreamConfig>) -> Self {
        let relay = crate::start_relay(streams).await;
        let media = UdpProxy::start(format!("127.0.0.1:{}", relay.udp_port()).parse().expect("relay UDP address")).await;
        let proxy = Proxy::start(&crate::base_url(&relay), Mode::Pass).await;
        proxy.route_media_through(media.addr);
        let browser = Browser::start().await.expect("headless Chromium (CI installs chromium and chromium-driver)");
        browser.client.goto(&format!("{}/telescope/", proxy.url())).await.expect("open page");
        wait_for_page(&browser.client, "WebRTC through the UDP proxy", 20, |v| v["transport"] == "webrtc" && count(v, "frames") >= 50).await;
        Self { relay, proxy, media, browser }
    }

    /// Watches frames decoded from `since` until 25 new ones came after a gap: how long the
    /// picture stood still, and when (after `since`) frames came again.
    pub async fn recovery(&self, since: tokio::time::Instant) -> (Duration, Duration) {
        let c = &self.browser.client;
        let mut last = count(&page_status(c).await, "frames");
        let (mut last_change, mut longest, mut back_at, mut after_gap) = (since, Duration::ZERO, None, 0);
        let deadline = since + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let now = tokio::time::Instant::now();
            let frames = count(&page_status(c).await, "frames");
            if frames != last {
                let gap = now - last_change;
                if gap >= Duration::from_millis(500) {
                    longest = longest.max(gap);
                    back_at = Some(now - since);
                    after_gap = 0;
                }
                after_gap += frames.saturating_sub(last);
                (last, last_change) = (frames, now);
                if back_at.is_some() && after_gap >= 25 {
                    return (longest, back_at.unwrap_or_default());
                }
            }
        }
        panic!("frames did not come back steadily: {} (longest gap {longest:?})", page_status(c).await);
    }

    pub async fn stop(self) {
        self.browser.close().await;
        self.relay.shutdown().await;
    }
}

/// Script for `execute_async`: the codec of the player's inbound video, from its peer
/// connection's stats ("video/VP8", "video/H264"; "" before there is one).
pub const INBOUND_CODEC_JS: &str = r#"
    const done = arguments[arguments.length - 1];
    const pc = document.querySelector(".scopecast").scopecast.pc;
    if (!pc) return done("");
    pc.getStats().then((all) => {
        let rx = null;
        all.forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "video") rx = s; });
        const codec = rx && rx.codecId && all.get(rx.codecId);
        done(codec ? codec.mimeType : "");
    }, () => done(""));
"#;
