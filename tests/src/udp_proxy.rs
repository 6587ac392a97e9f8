//! A UDP proxy between a browser and the relay's WebRTC port, as a network path would be: it can
//! lose, delay and jitter packets, and it reads the clear-text RTP headers of what passes (SRTP
//! encrypts payloads, not headers), so tests can see header extensions on the wire.
//!
//! The browser must be made to send through it: the HTTP [`crate::proxy::Proxy`] in
//! `Mode::ViaMediaProxy` strips the browser's candidates from the offer (the relay then learns
//! the proxy's address from its checks) and points the answer's candidates at this proxy.
//! One browser session at a time: replies go to the address the last packet came from.

use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::UdpSocket;

/// What the path does to packets, each direction alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Probability that a packet is dropped.
    pub loss: f64,
    /// One-way delay, and up to this much more at random (packets may then reorder).
    pub delay: Duration,
    pub jitter: Duration,
}

/// What went towards the browser.
#[derive(Debug, Default)]
pub struct Downstream {
    /// Every packet from the relay (STUN, DTLS, RTP, RTCP) and from the browser.
    pub packets: u64,
    pub upstream_packets: u64,
    pub rtp_packets: u64,
    /// RTP packets whose sequence number had already gone by: retransmissions (one session, and
    /// a test shorter than the 65,536 packets after which the numbers wrap).
    pub resent: u64,
    seen: SeenSequence,
    /// Per one-byte header extension id: packets carrying it and the last value seen.
    pub extensions: BTreeMap<u8, (u64, Vec<u8>)>,
}

/// Which RTP sequence numbers went by, a bit each (not printed: 8 KiB of bits).
#[derive(Default)]
struct SeenSequence(Vec<u64>);

impl std::fmt::Debug for SeenSequence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

pub struct UdpProxy {
    pub addr: SocketAddr,
    relay: SocketAddr,
    front: Arc<UdpSocket>,
    browser: Arc<Mutex<Option<SocketAddr>>>,
    impairment: Arc<Mutex<Impairment>>,
    downstream: Arc<Mutex<Downstream>>,
    pub dropped: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl UdpProxy {
    pub async fn start(relay: SocketAddr) -> Self {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy"));
        let addr = front.local_addr().expect("proxy address");
        let mut proxy = Self {
            addr,
            relay,
            front,
            browser: Arc::default(),
            impairment: Arc::default(),
            downstream: Arc::default(),
            dropped: Arc::default(),
            tasks: Vec::new(),
        };
        proxy.rebind().await;
        proxy
    }

    /// Sends to the relay from a new port from now on, as a NAT that rebinds does (or a
    /// viewer whose network changed): the relay sees its viewer's packets come from a new
    /// address, and what it sends to the old one is lost. Returns the new address.
    pub async fn rebind(&mut self) -> SocketAddr {
        self.tasks.drain(..).for_each(|t| t.abort());
        let back = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind proxy upstream"));
        let up = {
            let (front, back, impairment, dropped, browser, downstream, relay) =
                (self.front.clone(), back.clone(), self.impairment.clone(), self.dropped.clone(), self.browser.clone(), self.downstream.clone(), self.relay);
            tokio::spawn(async move {
                let line = DelayLine::new(Arc::clone(&back));
                let mut buf = vec![0u8; 65536];
                while let Ok((n, from)) = front.recv_from(&mut buf).await {
                    *browser.lock().expect("lock") = Some(from);
                    downstream.lock().expect("lock").upstream_packets += 1;
                    forward(&line, buf[..n].to_vec(), relay, *impairment.lock().expect("lock"), &dropped);
                }
            })
        };
        let down = {
            let (front, back, impairment, dropped, downstream, browser) =
                (self.front.clone(), back.clone(), self.impairment.clone(), self.dropped.clone(), self.downstream.clone(), self.browser.clone());
            tokio::spawn(async move {
                let line = DelayLine::new(Arc::clone(&front));
                let mut buf = vec![0u8; 65536];
                while let Ok((n, _)) = back.recv_from(&mut buf).await {
                    let packet = buf[..n].to_vec();
                    inspect(&packet, &downstream);
                    let to = *browser.lock().expect("lock");
                    if let Some(to) = to {
                        forward(&line, packet, to, *impairment.lock().expect("lock"), &dropped);
                    }
                }
            })
        };
        self.tasks = vec![up, down];
        back.local_addr().expect("proxy upstream address")
    }

    pub fn set_impairment(&self, impairment: Impairment) {
        *self.impairment.lock().expect("lock") = impairment;
    }

    /// RTP seen on its way to the browser so far.
    pub fn downstream(&self) -> Downstream {
        let d = self.downstream.lock().expect("lock");
        Downstream {
            packets: d.packets,
            upstream_packets: d.upstream_packets,
            rtp_packets: d.rtp_packets,
            resent: d.resent,
            seen: SeenSequence::default(),
            extensions: d.extensions.clone(),
        }
    }
}

impl Drop for UdpProxy {
    fn drop(&mut self) {
        self.tasks.iter().for_each(|t| t.abort());
    }
}

/// One direction's packets, each sent at its time, in the order they came: a fixed delay never
/// reorders (a timer task per packet would, on a multi-threaded runtime, and a receiver would
/// NACK packets that were only late).
struct DelayLine {
    socket: Arc<UdpSocket>,
    queue: tokio::sync::mpsc::UnboundedSender<(tokio::time::Instant, Vec<u8>, SocketAddr)>,
    task: tokio::task::JoinHandle<()>,
}

impl DelayLine {
    fn new(socket: Arc<UdpSocket>) -> Self {
        let (queue, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>, SocketAddr)>();
        let sender = Arc::clone(&socket);
        let task = tokio::spawn(async move {
            while let Some((at, packet, to)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                let _ = sender.send_to(&packet, to).await;
            }
        });
        Self { socket, queue, task }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn forward(line: &DelayLine, packet: Vec<u8>, to: SocketAddr, imp: Impairment, dropped: &AtomicU64) {
    let mut rng = rand::rng();
    if imp.loss > 0.0 && rng.random_bool(imp.loss.clamp(0.0, 1.0)) {
        dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    if imp.delay.is_zero() && imp.jitter.is_zero() {
        let _ = line.socket.try_send_to(&packet, to);
        return;
    }
    if imp.jitter.is_zero() {
        let _ = line.queue.send((tokio::time::Instant::now() + imp.delay, packet, to));
        return;
    }
    // Jitter reorders, as it does on a real path.
    let wait = imp.delay + imp.jitter.mul_f64(rng.random::<f64>());
    let socket = Arc::clone(&line.socket);
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        let _ = socket.send_to(&packet, to).await;
    });
}

/// Counts RTP packets (not STUN, DTLS or RTCP: RFC 7983 and RFC 5761 demultiplexing) and their
/// one-byte header extensions (RFC 8285).
fn inspect(p: &[u8], downstream: &Mutex<Downstream>) {
    downstream.lock().expect("lock").packets += 1;
    if p.len() < 12 || !(128..=191).contains(&p[0]) || (192..=223).contains(&p[1]) {
        return;
    }
    let mut d = downstream.lock().expect("lock");
    d.rtp_packets += 1;
    let seq = usize::from(u16::from_be_bytes([p[2], p[3]]));
    if d.seen.0.is_empty() {
        d.seen.0 = vec![0; 65_536 / 64];
    }
    let (word, bit) = (seq / 64, 1u64 << (seq % 64));
    if d.seen.0[word] & bit != 0 {
        d.resent += 1;
    }
    d.seen.0[word] |= bit;
    if p[0] & 0x10 == 0 {
        return;
    }
    let at = 12 + 4 * usize::from(p[0] & 0x0F);
    if p.len() < at + 4 || p[at..at + 2] != [0xBE, 0xDE] {
        return;
    }
    let end = (at + 4 + 4 * usize::from(u16::from_be_bytes([p[at + 2], p[at + 3]]))).min(p.len());
    let mut i = at + 4;
    while i < end {
        let (id, len) = (p[i] >> 4, usize::from(p[i] & 0x0F) + 1);
        if id == 0 {
            i += 1; // padding
            continue;
        }
        if id == 15 || i + 1 + len > end {
            break;
        }
        let entry = d.extensions.entry(id).or_default();
        entry.0 += 1;
        entry.1 = p[i + 1..i + 1 + len].to_vec();
        i += 1 + len;
    }
}
