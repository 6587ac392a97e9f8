//! A UDP socket with a kill switch, for a WebRTC viewer whose network goes dead: once cut,
//! nothing it sends leaves and nothing sent to it arrives, with no error on either side, as
//! when a laptop drops off Wi-Fi. (Closing the peer connection would tell the relay.) It can
//! also lose a share of the RTP that comes in, as a congested downlink does, while STUN, DTLS
//! and RTCP pass (the session stays up, the receiver reports the loss).

use rand::Rng;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use webrtc::util::Conn;

pub struct KillableSocket {
    inner: tokio::net::UdpSocket,
    dead: Arc<AtomicBool>,
    /// Incoming RTP dropped, per mille.
    rtp_loss: Arc<AtomicU32>,
}

impl KillableSocket {
    /// A socket on 127.0.0.1 and the switch that cuts it.
    pub async fn bind() -> std::io::Result<(Self, Arc<AtomicBool>)> {
        Self::bind_on("127.0.0.1".parse().expect("an address")).await
    }

    /// A socket on `ip` (an address of a network namespace's link, say).
    pub async fn bind_on(ip: std::net::IpAddr) -> std::io::Result<(Self, Arc<AtomicBool>)> {
        let dead = Arc::new(AtomicBool::new(false));
        let inner = tokio::net::UdpSocket::bind((ip, 0)).await?;
        Ok((Self { inner, dead: Arc::clone(&dead), rtp_loss: Arc::default() }, dead))
    }

    /// The knob for the share of incoming RTP lost, per mille (0 at first).
    pub fn rtp_loss(&self) -> Arc<AtomicU32> {
        Arc::clone(&self.rtp_loss)
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
    }

    /// Whether an incoming datagram is lost: all while dead, else a share of the RTP (RFC 7983:
    /// first byte 128-191; RTCP's payload types 192-223 pass).
    fn drops(&self, packet: &[u8]) -> bool {
        if self.is_dead() {
            return true;
        }
        let loss = self.rtp_loss.load(Ordering::Relaxed);
        let rtp = packet.len() > 12 && (128..=191).contains(&packet[0]) && !(192..=223).contains(&packet[1]);
        rtp && loss > 0 && rand::rng().random_range(0..1000) < loss
    }
}

type Result<T> = std::result::Result<T, webrtc::util::Error>;

#[async_trait::async_trait]
impl Conn for KillableSocket {
    async fn connect(&self, addr: SocketAddr) -> Result<()> {
        Ok(self.inner.connect(addr).await?)
    }

    async fn recv(&self, buf: &mut [u8]) -> Result<usize> {
        loop {
            let n = self.inner.recv(buf).await?;
            if !self.drops(&buf[..n]) {
                return Ok(n);
            }
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        loop {
            let got = self.inner.recv_from(buf).await?;
            if !self.drops(&buf[..got.0]) {
                return Ok(got);
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> Result<usize> {
        if self.is_dead() {
            return Ok(buf.len());
        }
        Ok(self.inner.send(buf).await?)
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> Result<usize> {
        if self.is_dead() {
            return Ok(buf.len());
        }
        Ok(self.inner.send_to(buf, target).await?)
    }

    fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.inner.local_addr()?)
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        None
    }

    async fn close(&self) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}
