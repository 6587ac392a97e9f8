//! A UDP socket with a kill switch, for a WebRTC viewer whose network goes dead: once cut,
//! nothing it sends leaves and nothing sent to it arrives, with no error on either side, as
//! when a laptop drops off Wi-Fi. (Closing the peer connection would tell the relay.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use webrtc::util::Conn;

pub struct KillableSocket {
    inner: tokio::net::UdpSocket,
    dead: Arc<AtomicBool>,
}

impl KillableSocket {
    /// A socket on 127.0.0.1 and the switch that cuts it.
    pub async fn bind() -> std::io::Result<(Self, Arc<AtomicBool>)> {
        let dead = Arc::new(AtomicBool::new(false));
        let inner = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        Ok((Self { inner, dead: Arc::clone(&dead) }, dead))
    }

    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::SeqCst)
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
            if !self.is_dead() {
                return Ok(n);
            }
        }
    }

    async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SocketAddr)> {
        loop {
            let got = self.inner.recv_from(buf).await?;
            if !self.is_dead() {
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
