//! The one UDP socket every session shares, demultiplexed by ICE username fragment.
//!
//! Ours rather than webrtc-ice's `UDPMuxDefault` because of a bug in that one (0.17.2):
//! closing a muxed connection empties its list of remote addresses *before* the mux's cleanup
//! reads that list to unmap them, so the mux keeps routing those addresses to the closed
//! connection for the life of the process. Every later ICE session from the same address and
//! port is then dropped on the floor: an ICE restart without a path change, a new session from
//! a viewer behind a NAT or proxy that keeps its mapping. And every closed session stays in the
//! map (a leak). Here the mux itself forgets a connection's addresses by its ufrag.
//!
//! Routing: a STUN message that names a username goes to the connection of its local ufrag
//! (the username is authoritative, so an address changing hands during an ICE restart is
//! followed at once); everything else (DTLS, SRTP, STUN responses) goes to the connection that
//! last sent to that address.
//!
//! Sending: inside [`held_sends`], a task's datagrams are held and then sent together, those
//! of one address as UDP GSO batches (one `sendmsg` for up to 64 of them). A viewer's task
//! holds one frame's packets this way: the kernel walks its send path once per batch instead
//! of once per packet.

use async_trait::async_trait;
use quinn_udp::{Transmit, UdpSocketState};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use webrtc::ice::udp_mux::{UDPMux, UDPMuxConn, UDPMuxConnParams, UDPMuxWriter};
use webrtc::stun::attributes::ATTR_USERNAME;
use webrtc::stun::message::{is_message as is_stun, Message};
use webrtc::util::{Conn, Error};

/// Large enough for any datagram a browser sends (webrtc-ice uses the same).
const RECEIVE_MTU: usize = 8192;

/// The most one GSO batch carries, whatever the kernel allows: a UDP datagram's 64 KiB.
const MAX_BATCH_BYTES: usize = 65_000;

tokio::task_local! {
    /// The datagrams a task running [`held_sends`] has sent so far.
    static HELD: RefCell<Held>;
}

pub struct SessionMux {
    socket: Arc<UdpSocket>,
    /// GSO for [`held_sends`]; None where the kernel has none, or with
    /// `SCOPECAST_UDP_GSO=0` (to compare, or to rule it out).
    gso: Option<Arc<UdpSocketState>>,
    local_addr: SocketAddr,
    /// Connections by local ufrag: one per ICE session (a restart makes a new one).
    by_ufrag: Mutex<HashMap<String, UDPMuxConn>>,
    /// Remote addresses by the connection that last sent to them.
    by_address: Mutex<HashMap<SocketAddr, UDPMuxConn>>,
    closed: watch::Sender<bool>,
}

impl SessionMux {
    pub fn new(socket: UdpSocket) -> std::io::Result<Arc<Self>> {
        let local_addr = socket.local_addr()?;
        let gso = if std::env::var("SCOPECAST_UDP_GSO").is_ok_and(|v| v == "0") { None } else { gso_state(local_addr) };
        tracing::debug!("UDP GSO batches of up to {} datagrams", gso.as_ref().map_or(1, |g| g.max_gso_segments()));
        let mux = Arc::new(Self {
            socket: Arc::new(socket),
            gso,
            local_addr,
            by_ufrag: Mutex::default(),
            by_address: Mutex::default(),
            closed: watch::channel(false).0,
        });
        let socket: Arc<dyn Conn + Send + Sync> = Arc::clone(&mux.socket) as _;
        tokio::spawn(receive_loop(Arc::downgrade(&mux), socket, mux.closed.subscribe()));
        Ok(mux)
    }

    /// Remote addresses currently routed (closed sessions must leave none).
    #[cfg(test)]
    fn routed_addresses(&self) -> usize {
        self.by_address.lock().expect("mux lock").len()
    }

    fn route(&self, packet: &[u8], from: SocketAddr) -> Option<UDPMuxConn> {
        if is_stun(packet) {
            if let Some(ufrag) = stun_local_ufrag(packet) {
                if let Some(conn) = self.by_ufrag.lock().expect("mux lock").get(&ufrag) {
                    return Some(conn.clone());
                }
            }
        }
        self.by_address.lock().expect("mux lock").get(&from).cloned()
    }
}

/// quinn-udp's sender state, made on a socket of its own: on ours, making it would also switch
/// on GRO, which merges received datagrams for a reader that does not ask where they split.
/// Only its GSO probe (what the kernel supports) is wanted; `send` works on any UDP socket.
fn gso_state(local: SocketAddr) -> Option<Arc<UdpSocketState>> {
    let probe = std::net::UdpSocket::bind(SocketAddr::new(local.ip(), 0)).ok()?;
    let state = UdpSocketState::new((&probe).into()).ok()?;
    (state.max_gso_segments() > 1).then(|| Arc::new(state))
}

/// Runs `f` with the current task's datagrams held, then sends them: each address's run of
/// equal-sized datagrams (the last may be shorter) as one GSO batch. Order per address is kept.
pub async fn held_sends<F: Future>(f: F) -> F::Output {
    let (out, held) = HELD
        .scope(RefCell::default(), async {
            let out = f.await;
            (out, HELD.with(|h| h.take()))
        })
        .await;
    held.send().await;
    out
}

/// A task's held datagrams: their bytes back to back, so a run of them is already the batch.
#[derive(Default)]
struct Held {
    via: Option<(Arc<UdpSocket>, Arc<UdpSocketState>)>,
    bytes: Vec<u8>,
    /// Each datagram's address and end in `bytes` (it starts where the one before ends).
    datagrams: Vec<(SocketAddr, usize)>,
}

impl Held {
    fn push(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.bytes.extend_from_slice(datagram);
        self.datagrams.push((to, self.bytes.len()));
    }

    async fn send(self) {
        let Some((socket, state)) = self.via else { return };
        let max = state.max_gso_segments().max(1);
        let (mut start, mut i) = (0, 0);
        while let Some(&(to, first_end)) = self.datagrams.get(i) {
            let size = first_end - start;
            let (mut n, mut end) = (1, first_end);
            // Same address; every datagram but the last of the batch `size` long.
            while let Some(&(next_to, next_end)) = self.datagrams.get(i + n) {
                if size == 0 || n == max || next_to != to || end - start != n * size || next_end - end > size || next_end - start > MAX_BATCH_BYTES {
                    break;
                }
                (n, end) = (n + 1, next_end);
            }
            let transmit = Transmit { destination: to, ecn: None, contents: &self.bytes[start..end], segment_size: (n > 1).then_some(size), src_ip: None };
            // `send` logs (rate-limited) and drops what the kernel refuses, as UDP would.
            if let Err(e) = socket.async_io(Interest::WRITABLE, || state.send((&*socket).into(), &transmit)).await {
                tracing::debug!(%to, "UDP batch of {n} not sent: {e}");
            }
            (start, i) = (end, i + n);
        }
    }
}

/// The local part of a STUN request's USERNAME ("local:remote"), if it has one.
fn stun_local_ufrag(packet: &[u8]) -> Option<String> {
    let mut message = Message::new();
    message.unmarshal_binary(packet).ok()?;
    let (attr, found) = message.attributes.get(ATTR_USERNAME);
    if !found {
        return None;
    }
    let username = String::from_utf8(attr.value).ok()?;
    username.split(':').next().map(str::to_owned)
}

/// Holds the mux only weakly, so dropping the engine ends the loop.
async fn receive_loop(mux: Weak<SessionMux>, socket: Arc<dyn Conn + Send + Sync>, mut closed: watch::Receiver<bool>) {
    let mut buffer = vec![0u8; RECEIVE_MTU];
    loop {
        let (len, from) = tokio::select! {
            received = socket.recv_from(&mut buffer) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::warn!("UDP receive failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            _ = closed.changed() => return,
        };
        let Some(mux) = mux.upgrade() else { return };
        let Some(conn) = mux.route(&buffer[..len], from) else {
            tracing::trace!(%from, "UDP packet for no session dropped");
            continue;
        };
        drop(mux);
        if let Err(e) = conn.write_packet(&buffer[..len], from).await {
            tracing::debug!(%from, "UDP packet for a closing session dropped: {e}");
        }
    }
}

#[async_trait]
impl UDPMux for SessionMux {
    async fn close(&self) -> Result<(), Error> {
        self.closed.send_replace(true);
        let conns: Vec<UDPMuxConn> = self.by_ufrag.lock().expect("mux lock").drain().map(|(_, c)| c).collect();
        self.by_address.lock().expect("mux lock").clear();
        for conn in conns {
            conn.close();
        }
        Ok(())
    }

    async fn get_conn(self: Arc<Self>, ufrag: &str) -> Result<Arc<dyn Conn + Send + Sync>, Error> {
        if *self.closed.borrow() {
            return Err(Error::ErrUseClosedNetworkConn);
        }
        let mut conns = self.by_ufrag.lock().expect("mux lock");
        if let Some(conn) = conns.get(ufrag) {
            return Ok(Arc::new(conn.clone()));
        }
        let writer: Weak<dyn UDPMuxWriter + Send + Sync> = Arc::downgrade(&self) as _;
        let conn = UDPMuxConn::new(UDPMuxConnParams { local_addr: self.local_addr, key: ufrag.to_owned(), udp_mux: writer });
        // The agent closes the connection when its ICE session ends (close, restart).
        let mut closed = conn.close_rx();
        let mux = Arc::downgrade(&self);
        let key = ufrag.to_owned();
        tokio::spawn(async move {
            let _ = closed.changed().await;
            if let Some(mux) = mux.upgrade() {
                mux.remove_conn_by_ufrag(&key).await;
            }
        });
        conns.insert(ufrag.to_owned(), conn.clone());
        Ok(Arc::new(conn))
    }

    async fn remove_conn_by_ufrag(&self, ufrag: &str) {
        self.by_ufrag.lock().expect("mux lock").remove(ufrag);
        // By key, not by the connection's own address list: closing empties that list.
        self.by_address.lock().expect("mux lock").retain(|_, conn| conn.key() != ufrag);
    }
}

#[async_trait]
impl UDPMuxWriter for SessionMux {
    async fn register_conn_for_address(&self, conn: &UDPMuxConn, addr: SocketAddr) {
        if *self.closed.borrow() {
            return;
        }
        let previous = self.by_address.lock().expect("mux lock").insert(addr, conn.clone());
        if let Some(previous) = previous.filter(|p| p.key() != conn.key()) {
            previous.remove_address(&addr);
        }
    }

    async fn send_to(&self, buf: &[u8], target: &SocketAddr) -> Result<usize, Error> {
        if let Some(gso) = &self.gso {
            let held = HELD.try_with(|h| {
                let mut h = h.borrow_mut();
                h.via.get_or_insert_with(|| (Arc::clone(&self.socket), Arc::clone(gso)));
                h.push(*target, buf);
            });
            if held.is_ok() {
                return Ok(buf.len());
            }
        }
        Conn::send_to(&*self.socket, buf, *target).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use webrtc::stun::agent::TransactionId;
    use webrtc::stun::message::BINDING_REQUEST;
    use webrtc::stun::textattrs::Username;

    fn binding_request(username: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.build(&[Box::new(BINDING_REQUEST), Box::new(TransactionId::new()), Box::new(Username::new(ATTR_USERNAME, username.to_owned()))]).expect("test setup");
        m.raw
    }

    async fn receive(conn: &Arc<dyn Conn + Send + Sync>) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_millis(500), conn.recv_from(&mut buf)).await.ok()?.ok()?;
        Some(buf[..n].to_vec())
    }

    async fn setup() -> (Arc<SessionMux>, tokio::net::UdpSocket, SocketAddr) {
        let mux = SessionMux::new(tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("test setup")).expect("test setup");
        let addr = mux.local_addr;
        let peer = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("test setup");
        (mux, peer, addr)
    }

    /// Held datagrams go out as batches yet arrive as they were sent: each one whole, in order
    /// per address, a shorter one closing a run, another address in between.
    #[tokio::test]
    async fn held_sends_arrive_one_by_one_and_in_order() {
        let (mux, a, _) = setup().await;
        let b = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("test setup");
        let (to_a, to_b) = (a.local_addr().expect("test setup"), b.local_addr().expect("test setup"));
        let sizes_a = [1200, 1200, 1200, 700, 1200, 90];
        held_sends(async {
            for (i, &size) in sizes_a.iter().enumerate() {
                UDPMuxWriter::send_to(&*mux, &vec![i as u8; size], &to_a).await.expect("held");
                if i == 1 {
                    UDPMuxWriter::send_to(&*mux, &[9u8; 1200], &to_b).await.expect("held");
                }
            }
        })
        .await;
        for (i, &size) in sizes_a.iter().enumerate() {
            let got = receive_from(&a).await.expect("a datagram for a");
            assert_eq!((got.len(), got[0], got[size - 1]), (size, i as u8, i as u8), "datagram {i}");
        }
        assert_eq!(receive_from(&b).await.map(|d| d.len()), Some(1200));
        assert!(receive_from(&a).await.is_none(), "nothing more");
        // Outside held_sends, a datagram goes at once.
        UDPMuxWriter::send_to(&*mux, b"now", &to_b).await.expect("sent");
        assert_eq!(receive_from(&b).await.as_deref(), Some(&b"now"[..]));
    }

    async fn receive_from(socket: &tokio::net::UdpSocket) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await.ok()?.ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// An ICE restart from an unchanged address: the old session's connection closes, and the
    /// new credentials' checks and then media from the same address reach the new one.
    /// (With webrtc-ice's UDPMuxDefault the address stays routed to the closed connection.)
    #[tokio::test]
    async fn a_new_ice_session_from_the_same_address_reaches_its_own_connection() {
        let (mux, peer, mux_addr) = setup().await;
        let peer_addr = peer.local_addr().expect("test setup");

        let old = Arc::clone(&mux).get_conn("oldufrag").await.expect("test setup");
        peer.send_to(&binding_request("oldufrag:browser1"), mux_addr).await.expect("test setup");
        assert!(receive(&old).await.is_some(), "the first session's check arrives");
        old.send_to(b"answer", peer_addr).await.expect("test setup"); // registers the address
        peer.send_to(b"\x80media", mux_addr).await.expect("test setup");
        assert_eq!(receive(&old).await.as_deref(), Some(&b"\x80media"[..]));

        old.close().await.expect("test setup");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(mux.routed_addresses(), 0, "a closed session leaves no address behind");

        let new = Arc::clone(&mux).get_conn("newufrag").await.expect("test setup");
        peer.send_to(&binding_request("newufrag:browser2"), mux_addr).await.expect("test setup");
        assert!(receive(&new).await.is_some(), "the restarted session's check arrives");
        new.send_to(b"answer", peer_addr).await.expect("test setup");
        peer.send_to(b"\x80media", mux_addr).await.expect("test setup");
        assert_eq!(receive(&new).await.as_deref(), Some(&b"\x80media"[..]), "media follows the new session");
    }

    /// Two live sessions: checks go by username even from an address the other one owns.
    #[tokio::test]
    async fn stun_checks_go_by_username_before_address() {
        let (mux, peer, mux_addr) = setup().await;
        let peer_addr = peer.local_addr().expect("test setup");
        let a = Arc::clone(&mux).get_conn("ufraga").await.expect("test setup");
        let b = Arc::clone(&mux).get_conn("ufragb").await.expect("test setup");
        a.send_to(b"x", peer_addr).await.expect("test setup");
        peer.send_to(&binding_request("ufragb:remote"), mux_addr).await.expect("test setup");
        assert!(receive(&b).await.is_some());
        assert!(receive(&a).await.is_none(), "not delivered to the address's owner");
        peer.send_to(b"\x80media", mux_addr).await.expect("test setup");
        assert!(receive(&a).await.is_some(), "non-STUN still goes by address");
    }

    #[tokio::test]
    async fn packets_for_no_session_are_dropped_and_close_ends_every_connection() {
        let (mux, peer, mux_addr) = setup().await;
        let conn = Arc::clone(&mux).get_conn("ufraga").await.expect("test setup");
        peer.send_to(&binding_request("unknown:x"), mux_addr).await.expect("test setup");
        peer.send_to(b"\x80stray", mux_addr).await.expect("test setup");
        assert!(receive(&conn).await.is_none());
        mux.close().await.expect("test setup");
        assert!(Arc::clone(&mux).get_conn("ufragc").await.is_err());
        let mut buf = [0u8; 16];
        assert!(
            tokio::time::timeout(Duration::from_millis(500), conn.recv_from(&mut buf)).await.map(|r| r.is_err()).unwrap_or(false),
            "a closed mux's connections end"
        );
    }
}
