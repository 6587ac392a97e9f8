//! TURN, with a real coturn, in network namespaces where the relay and the browser cannot reach
//! each other directly:
//!
//! ```text
//!   this namespace (Chromium)          ns T (coturn, no forwarding)          ns R (relay)
//!   10.77.1.1  ───────────────────── 10.77.1.2 │ 10.77.2.1 ───────────────── 10.77.2.2
//! ```
//! T does not forward, so packets between the browser and the relay go through coturn's
//! relayed addresses or not at all. The relay's page and WHEP reach the browser through a TCP
//! forwarder in T (signalling only). The relay mints credentials per session from the secret
//! it shares with coturn (`use-auth-secret`), and coturn checks them.

use scopecast::config::{Config, IceConfig, SecurityConfig, StreamConfig};
use scopecast::turn::{TurnAuth, TurnServer};
use scopecast_tests::browser::{count, wait_for_page, Browser};
use scopecast_tests::netns::{link, Netns};
use std::net::SocketAddr;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

const TURN_IP: &str = "10.77.1.2";
const RELAY_IP: &str = "10.77.2.2";
const SECRET: &str = "orion-nebula-secret";

/// Keeps this namespace from sending the relay's subnet anywhere (its default route would take
/// the browser's checks off the machine): unreachable, removed on drop.
struct Unreachable(&'static str);

impl Unreachable {
    fn add(cidr: &'static str) -> Self {
        let _ = std::process::Command::new("ip").args(["route", "del", cidr]).stderr(std::process::Stdio::null()).status();
        let ok = std::process::Command::new("ip").args(["route", "add", "unreachable", cidr]).status().is_ok_and(|s| s.success());
        assert!(ok, "ip route add unreachable {cidr}");
        Self(cidr)
    }
}

impl Drop for Unreachable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip").args(["route", "del", self.0]).status();
    }
}

struct Lab {
    coturn: Child,
    relay: Arc<scopecast::http::AppState>,
    page: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    stop_forwarder: Option<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    _unreachable: Unreachable,
    _t: Netns,
    _r: Netns,
}

impl Lab {
    /// coturn in T (UDP and TCP, or TCP only), the relay in R with `turn_urls` and the shared
    /// secret, and the forwarder for its HTTP.
    async fn start(tcp_only: bool, turn_urls: &[&str]) -> Self {
        // Links left by a run that was killed would shadow this one's route.
        if let Ok(out) = std::process::Command::new("ip").args(["-br", "link"]).output() {
            for name in String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split(['@', ' ']).next()).filter(|n| n.starts_with("sc1a")) {
                let _ = std::process::Command::new("ip").args(["link", "del", name]).status();
            }
        }
        let unreachable = Unreachable::add("10.77.2.0/24");
        let t = Netns::add("t").expect("namespace T (tests run as root)");
        let r = Netns::add("r").expect("namespace R");
        link(None, "10.77.1.1/24", &t, &format!("{TURN_IP}/24"), "1").expect("link to T");
        link(Some(&t), "10.77.2.1/24", &r, &format!("{RELAY_IP}/24"), "2").expect("link T-R");
        // The relay reaches the TURN server's one address through T; T forwards nothing else.
        r.exec(&["ip", "route", "add", "10.77.1.0/24", "via", "10.77.2.1"]).expect("route");

        let dir = std::env::temp_dir().join(format!("scopecast-turn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let conf = dir.join("turnserver.conf");
        let mut lines = vec![
            format!("listening-ip={TURN_IP}"),
            format!("relay-ip={TURN_IP}"),
            "listening-port=3478".into(),
            "use-auth-secret".into(),
            format!("static-auth-secret={SECRET}"),
            "realm=scopecast.test".into(),
            "fingerprint".into(),
            "no-tls".into(),
            "no-dtls".into(),
            "no-cli".into(),
            "no-multicast-peers".into(),
            "min-port=50000".into(),
            "max-port=50999".into(),
            format!("pidfile={}", dir.join("turnserver.pid").display()),
            format!("userdb={}", dir.join("turndb").display()),
            "verbose".into(),
            "log-file=stdout".into(),
            "simple-log".into(),
        ];
        if tcp_only {
            lines.push("no-udp".into());
        }
        std::fs::write(&conf, lines.join("\n") + "\n").expect("coturn config");
        let log = std::fs::File::create(dir.join("coturn.log")).expect("log");
        let coturn = t.command("turnserver").arg("-c").arg(&conf).stdout(log).stderr(Stdio::null()).spawn().expect("coturn (CI installs it)");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(format!("{TURN_IP}:3478")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // The relay, on a runtime of its own inside R.
        let config = Config {
            http: format!("{RELAY_IP}:0").parse().expect("address"),
            tls: None,
            ice: IceConfig {
                udp: format!("{RELAY_IP}:0").parse().expect("address"),
                additional_hosts: vec![],
                stun_servers: vec![],
                turn: vec![TurnServer {
                    urls: turn_urls.iter().map(|u| u.to_string()).collect(),
                    auth: TurnAuth::Secret { secret: SECRET.into(), ttl: Duration::from_secs(600) },
                }],
                include_loopback: false,
            },
            security: SecurityConfig::default(),
            streams: vec![StreamConfig::test_pattern("telescope", 640, 360, 25.0)],
        };
        config.validate().expect("valid");
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let relay_thread = r.spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
            rt.block_on(async move {
                let relay = scopecast::Relay::start(config).await.expect("relay starts in R");
                let _ = ready_tx.send((Arc::clone(relay.state()), relay.http_addr()));
                let _ = stop_rx.await;
                relay.shutdown().await;
            });
        });
        let (relay, http) = ready_rx.await.expect("relay started");

        // Signalling only: TCP from this namespace to the relay's HTTP, through T.
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let (stop_forwarder, forwarder_rx) = tokio::sync::oneshot::channel::<()>();
        let forwarder = t.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            rt.block_on(async move {
                tokio::select! {
                    () = forward(http, port_tx) => {}
                    _ = forwarder_rx => {}
                }
            });
        });
        let port = port_rx.await.expect("forwarder");
        Self {
            coturn,
            relay,
            page: format!("http://{TURN_IP}:{port}"),
            stop: Some(stop),
            stop_forwarder: Some(stop_forwarder),
            threads: vec![relay_thread, forwarder],
            _unreachable: unreachable,
            _t: t,
            _r: r,
        }
    }

    fn coturn_log(&self) -> String {
        std::fs::read_to_string(std::env::temp_dir().join(format!("scopecast-turn-{}/coturn.log", std::process::id()))).unwrap_or_default()
    }

    async fn stop(mut self) {
        self.signal_stop();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
    }

    fn signal_stop(&mut self) {
        for stop in [self.stop.take(), self.stop_forwarder.take()].into_iter().flatten() {
            let _ = stop.send(());
        }
        // coturn holds namespace T (and its links) for as long as it runs.
        let _ = self.coturn.kill();
        let _ = self.coturn.wait();
    }
}

/// Also when a test fails half-way: nothing of the lab outlives it.
impl Drop for Lab {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Accepts on T's outside address and pipes each connection to the relay, for at most a few
/// minutes (a test that hangs must not leave it running).
async fn forward(to: SocketAddr, port_tx: tokio::sync::oneshot::Sender<u16>) {
    let listener = tokio::net::TcpListener::bind(format!("{TURN_IP}:0")).await.expect("bind in T");
    let _ = port_tx.send(listener.local_addr().expect("addr").port());
    let serve = async {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(300), serve).await;
}

/// The selected candidate pair's local (browser) side: its type and, for a relay candidate,
/// how the browser reaches the TURN server.
async fn selected_local_candidate(c: &fantoccini::Client) -> serde_json::Value {
    let probe = r#"
        const done = arguments[arguments.length - 1];
        const pc = document.querySelector(".scopecast").scopecast.pc;
        pc.getStats().then((all) => {
            let pair = null;
            all.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = all.get(s.selectedCandidatePairId); });
            const local = pair ? all.get(pair.localCandidateId) : null;
            const remote = pair ? all.get(pair.remoteCandidateId) : null;
            done({ local: local ? local.candidateType : "none", relay_protocol: local ? (local.relayProtocol || "") : "",
                   remote: remote ? remote.candidateType : "none", remote_ip: remote ? remote.address : "" });
        }, (e) => done({ error: String(e) }));
    "#;
    c.execute_async(probe, vec![]).await.unwrap_or(serde_json::Value::Null)
}

async fn plays_through_turn(tcp_only: bool, turn_urls: &[&str], relay_protocol: &str) {
    let _serial = scopecast_tests::one_at_a_time().await;
    let logs = scopecast_tests::logs::capture();
    let lab = Lab::start(tcp_only, turn_urls).await;
    // The relay's OPTIONS gives the player the TURN server with minted credentials.
    let options = reqwest::Client::new().request(reqwest::Method::OPTIONS, format!("{}/telescope/whep", lab.page)).send().await.expect("OPTIONS");
    let links: Vec<String> = options.headers().get_all("link").iter().filter_map(|v| v.to_str().ok().map(str::to_owned)).collect();
    assert!(links.iter().any(|l| l.contains("rel=\"ice-server\"") && l.contains("username=\"") && l.contains("credential=\"")), "{links:?}");
    assert!(!links.iter().any(|l| l.contains(SECRET)), "the secret itself never leaves the relay");

    let browser = Browser::start().await.expect("headless Chromium");
    let c = &browser.client;
    c.goto(&format!("{}/telescope/", lab.page)).await.expect("open the page");
    let live = wait_for_page(c, "WebRTC through TURN", 30, |v| v["state"] == "live" && v["transport"] == "webrtc" && count(v, "frames") >= 20).await;
    let pair = selected_local_candidate(c).await;
    assert_eq!(pair["local"], "relay", "the browser reaches the relay only through TURN: {pair} {live}");
    assert_eq!(pair["relay_protocol"], relay_protocol, "{pair}");
    assert_eq!(lab.relay.session_count(), 1);
    let coturn = lab.coturn_log();
    assert!(coturn.lines().any(|l| l.contains("ALLOCATE processed, success")), "coturn accepted the minted credentials:\n{coturn}");

    // Credentials appear in no log line and no API answer.
    let status = reqwest::get(format!("{}/api/v1/streams", lab.page)).await.expect("API").text().await.expect("body");
    let minted = links.iter().find_map(|l| l.split("credential=\"").nth(1).and_then(|r| r.split('"').next()).map(str::to_owned)).expect("credential");
    for secret in [SECRET, minted.as_str()] {
        assert!(!status.contains(secret), "API shows a credential");
        assert!(logs.lines_with(&[secret]).is_empty(), "a log line shows a credential");
    }
    browser.close().await;
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_direct_path_chromium_plays_through_turn_over_udp() {
    plays_through_turn(false, &["turn:10.77.1.2:3478?transport=udp"], "udp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_browser_may_use_only_tcp_chromium_plays_through_turn_over_tcp() {
    // coturn takes no UDP from clients: only `?transport=tcp` works for the browser. The
    // relay's own leg (UDP from coturn's relayed address to the relay) is untouched.
    plays_through_turn(true, &["turn:10.77.1.2:3478?transport=tcp"], "tcp").await;
}
