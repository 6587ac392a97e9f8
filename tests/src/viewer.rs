//! A WHEP player written with the `webrtc` crate: POSTs an offer, receives RTP, depacketizes and
//! decodes H.264 with openh264, and reads the timecode strip from every decoded picture.

use openh264::formats::YUVSource;
use scopecast_shared::timecode::{self, Timecode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use webrtc::api::interceptor_registry::register_default_interceptors;
use webrtc::api::media_engine::MediaEngine;
use webrtc::api::setting_engine::SettingEngine;
use webrtc::api::APIBuilder;
use webrtc::ice::network_type::NetworkType;
use webrtc::interceptor::registry::Registry;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtp::codecs::h264::H264Packet;
use webrtc::rtp::packetizer::Depacketizer;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;

/// One decoded picture as the viewer saw it.
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    pub width: usize,
    pub height: usize,
    pub timecode: Option<Timecode>,
    pub at: Instant,
}

/// What arrived over RTP, for continuity checks: one track, one SSRC, no sequence gaps and no
/// timestamp going backwards, whatever the source did meanwhile.
#[derive(Debug, Default, Clone)]
pub struct RtpLog {
    pub tracks: usize,
    pub ssrcs: std::collections::BTreeSet<u32>,
    pub packets: u64,
    pub bytes: u64,
    /// Packets with the marker bit: complete frames sent.
    pub frames: u64,
    pub sequence_gaps: u64,
    pub timestamp_regressions: u64,
    last: Option<(u16, u32)>,
    /// Sequence numbers seen (extended past wraps), for what was lost for good.
    seen: SeenSet,
    highest: Option<i64>,
    first: Option<i64>,
}

/// Printed as its size (a minute of video is thousands of numbers).
#[derive(Default, Clone)]
struct SeenSet(std::collections::HashSet<i64>);

impl std::fmt::Debug for SeenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} seen", self.0.len())
    }
}

impl RtpLog {
    /// Packets the sender numbered so far and packets of them that never arrived (not even
    /// retransmitted).
    pub fn expected_and_lost(&self) -> (u64, u64) {
        let (Some(first), Some(highest)) = (self.first, self.highest) else { return (0, 0) };
        let expected = (highest - first + 1) as u64;
        (expected, expected.saturating_sub(self.seen.0.len() as u64))
    }

    fn packet(&mut self, h: &webrtc::rtp::header::Header, payload: usize) {
        let ext = match self.highest {
            None => i64::from(h.sequence_number),
            Some(top) => top + i64::from(h.sequence_number.wrapping_sub(top as u16) as i16),
        };
        self.highest = Some(self.highest.map_or(ext, |top| top.max(ext)));
        self.first = Some(self.first.map_or(ext, |first| first.min(ext)));
        self.seen.0.insert(ext);
        self.packets += 1;
        self.bytes += payload as u64;
        self.frames += u64::from(h.marker);
        self.ssrcs.insert(h.ssrc);
        if let Some((seq, ts)) = self.last {
            self.sequence_gaps += u64::from(h.sequence_number != seq.wrapping_add(1));
            self.timestamp_regressions += u64::from((h.timestamp.wrapping_sub(ts) as i32) < 0);
        }
        self.last = Some((h.sequence_number, h.timestamp));
    }
}

pub struct WhepViewer {
    pub pc: Arc<RTCPeerConnection>,
    /// Absolute session URL from the 201's Location.
    pub session_url: String,
    pub etag: Option<String>,
    /// When the offer was sent, and when the answer arrived.
    pub posted_at: Instant,
    pub answered_at: Instant,
    /// When ICE first reached `connected` (DTLS starts then).
    pub ice_connected_at: Arc<std::sync::Mutex<Option<Instant>>>,
    /// When the peer connection first reached `connected` (ICE and DTLS done).
    pub connected_at: Arc<std::sync::Mutex<Option<Instant>>>,
    pub frames: mpsc::UnboundedReceiver<DecodedFrame>,
    /// The answer's SDP.
    pub answer: String,
    /// The 201's Link header values.
    pub links: Vec<String>,
    pub rtp: Arc<std::sync::Mutex<RtpLog>>,
}

/// A loopback peer with the default codecs and interceptors, on its own UDP socket (through a
/// mux) when given one. The WHIP sink answers with the same kind of peer.
pub(crate) async fn new_peer_on(socket: Option<crate::deadnet::KillableSocket>) -> anyhow::Result<Arc<RTCPeerConnection>> {
    let mut media = MediaEngine::default();
    media.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let mut settings = SettingEngine::default();
    settings.set_include_loopback_candidate(true);
    settings.set_network_types(vec![NetworkType::Udp4]);
    // Loopback, or the one address a given socket is bound to.
    let only = socket.as_ref().and_then(|s| webrtc::util::Conn::local_addr(s).ok()).map(|a| a.ip()).filter(|ip| !ip.is_loopback());
    settings.set_ip_filter(Box::new(move |ip| only.map_or(ip.is_loopback(), |only| ip == only)));
    if let Some(socket) = socket {
        let mux = webrtc::ice::udp_mux::UDPMuxDefault::new(webrtc::ice::udp_mux::UDPMuxParams::new(socket));
        settings.set_udp_network(webrtc::ice::udp_network::UDPNetwork::Muxed(mux));
    }
    let api = APIBuilder::new().with_media_engine(media).with_interceptor_registry(registry).with_setting_engine(settings).build();
    Ok(Arc::new(api.new_peer_connection(RTCConfiguration::default()).await?))
}

/// What a viewer asks to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    Video,
    /// Audio and video, as many WHEP players offer even for a video-only stream.
    AudioAndVideo,
}

/// An offer like a browser's, with its candidates gathered (for error-table tests).
pub async fn make_offer() -> anyhow::Result<(Arc<RTCPeerConnection>, String)> {
    make_offer_for(Wants::Video).await
}

pub async fn make_offer_for(wants: Wants) -> anyhow::Result<(Arc<RTCPeerConnection>, String)> {
    make_offer_on(wants, None).await
}

async fn make_offer_on(wants: Wants, socket: Option<crate::deadnet::KillableSocket>) -> anyhow::Result<(Arc<RTCPeerConnection>, String)> {
    let pc = new_peer_on(socket).await?;
    let kinds: &[RTPCodecType] = match wants {
        Wants::Video => &[RTPCodecType::Video],
        Wants::AudioAndVideo => &[RTPCodecType::Audio, RTPCodecType::Video],
    };
    for kind in kinds {
        pc.add_transceiver_from_kind(*kind, Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] })).await?;
    }
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered.recv()).await;
    let sdp = pc.local_description().await.ok_or_else(|| anyhow::anyhow!("no local description"))?.sdp;
    Ok((pc, sdp))
}

impl WhepViewer {
    /// Negotiates with `whep_url` and starts decoding.
    pub async fn connect(whep_url: &str) -> anyhow::Result<Self> {
        Self::connect_with(whep_url, Wants::Video, |offer| offer).await
    }

    /// Like [`WhepViewer::connect`], with the offer rewritten by `edit` before it is sent (to
    /// play a browser that hides its addresses, say).
    pub async fn connect_with(whep_url: &str, wants: Wants, edit: impl FnOnce(String) -> String) -> anyhow::Result<Self> {
        Self::connect_full(whep_url, wants, edit, true).await
    }

    /// A viewer that only receives and counts RTP ([`WhepViewer::rtp`]), decoding nothing:
    /// many of them fit in one process (the fan-out benchmark).
    pub async fn connect_counting(whep_url: &str) -> anyhow::Result<Self> {
        Self::connect_full(whep_url, Wants::Video, |o| o, false).await
    }

    /// A decoding viewer whose network can be cut with the returned switch.
    pub async fn connect_killable(whep_url: &str) -> anyhow::Result<(Self, Arc<std::sync::atomic::AtomicBool>)> {
        let (socket, dead) = crate::deadnet::KillableSocket::bind().await?;
        Ok((Self::connect_full_on(whep_url, Wants::Video, |o| o, true, Some(socket)).await?, dead))
    }

    /// A decoding viewer whose downlink loses the returned share of RTP, per mille (0 at first).
    pub async fn connect_lossy(whep_url: &str) -> anyhow::Result<(Self, Arc<std::sync::atomic::AtomicU32>)> {
        Self::connect_lossy_from(whep_url, "127.0.0.1".parse()?).await
    }

    /// [`WhepViewer::connect_lossy`] from one address of this thread's network namespace.
    pub async fn connect_lossy_from(whep_url: &str, ip: std::net::IpAddr) -> anyhow::Result<(Self, Arc<std::sync::atomic::AtomicU32>)> {
        let (socket, _dead) = crate::deadnet::KillableSocket::bind_on(ip).await?;
        let loss = socket.rtp_loss();
        Ok((Self::connect_full_on(whep_url, Wants::Video, |o| o, true, Some(socket)).await?, loss))
    }

    async fn connect_full(whep_url: &str, wants: Wants, edit: impl FnOnce(String) -> String, decode: bool) -> anyhow::Result<Self> {
        Self::connect_full_on(whep_url, wants, edit, decode, None).await
    }

    async fn connect_full_on(
        whep_url: &str,
        wants: Wants,
        edit: impl FnOnce(String) -> String,
        decode: bool,
        socket: Option<crate::deadnet::KillableSocket>,
    ) -> anyhow::Result<Self> {
        let (pc, offer) = make_offer_on(wants, socket).await?;
        let offer = edit(offer);
        let (tx, frames) = mpsc::unbounded_channel();
        let rtp = Arc::new(std::sync::Mutex::new(RtpLog::default()));
        let log = Arc::clone(&rtp);
        pc.on_track(Box::new(move |track, _, _| {
            let tx = tx.clone();
            let log = Arc::clone(&log);
            log.lock().expect("rtp log").tracks += 1;
            // Decoding happens on a plain thread: openh264 is synchronous and CPU-bound.
            let (rtp_tx, rtp_rx) = std::sync::mpsc::channel();
            if decode {
                std::thread::spawn(move || decode_loop(rtp_rx, tx));
            }
            tokio::spawn(async move {
                while let Ok((packet, _)) = track.read_rtp().await {
                    log.lock().expect("rtp log").packet(&packet.header, packet.payload.len());
                    if !decode {
                        continue;
                    }
                    if rtp_tx.send(packet).is_err() {
                        break;
                    }
                }
            });
            Box::pin(async {})
        }));
        let posted_at = Instant::now();
        let connected_at = Arc::new(std::sync::Mutex::new(None));
        let mark = Arc::clone(&connected_at);
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if state == webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState::Connected {
                mark_first(&mark);
            }
            Box::pin(async {})
        }));
        let ice_connected_at = Arc::new(std::sync::Mutex::new(None));
        let mark = Arc::clone(&ice_connected_at);
        pc.on_ice_connection_state_change(Box::new(move |state| {
            if state == webrtc::ice_transport::ice_connection_state::RTCIceConnectionState::Connected {
                mark_first(&mark);
            }
            Box::pin(async {})
        }));
        let response = reqwest::Client::new().post(whep_url).header("content-type", "application/sdp").body(offer).send().await?;
        anyhow::ensure!(response.status() == 201, "POST answered {}: {}", response.status(), response.text().await.unwrap_or_default());
        let answered_at = Instant::now();
        let location = response.headers().get("location").and_then(|v| v.to_str().ok()).ok_or_else(|| anyhow::anyhow!("no Location"))?.to_owned();
        let etag = response.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let links = response.headers().get_all("link").iter().filter_map(|v| v.to_str().ok()).map(str::to_owned).collect();
        anyhow::ensure!(response.headers().get("content-type").is_some_and(|v| v == "application/sdp"), "answer content type");
        let answer = response.text().await?;
        pc.set_remote_description(RTCSessionDescription::answer(answer.clone())?).await?;
        let base = url_base(whep_url);
        let session_url = if location.starts_with('/') { format!("{base}{location}") } else { location };
        Ok(Self { pc, session_url, etag, posted_at, answered_at, ice_connected_at, connected_at, frames, answer, links, rtp })
    }

    /// Asserts that `frame`, the first decoded, came at once: within 1 s of the answer. One
    /// exception, told apart by timing: the webrtc crate drops a DTLS flight that arrives before
    /// its DTLS transport listens and resends it after a fixed 1 s (see `one_at_a_time`). Then
    /// the connection comes up 1-2.5 s after the answer, and the frame must follow within 1 s
    /// of that: the relay's part is as prompt as ever.
    pub fn assert_first_frame_prompt(&self, frame: &DecodedFrame) {
        let after_answer = frame.at.duration_since(self.answered_at);
        if after_answer < Duration::from_secs(1) {
            return;
        }
        let connected = self.connected_at.lock().ok().and_then(|c| *c).expect("a decoded frame, so connected");
        let handshake = connected.duration_since(self.answered_at);
        assert!(
            (Duration::from_millis(950)..Duration::from_millis(2500)).contains(&handshake) && frame.at.duration_since(connected) < Duration::from_secs(1),
            "first frame {after_answer:?} after the answer; the connection was up {handshake:?} after the answer"
        );
        eprintln!(
            "first frame {after_answer:?} after the answer: DTLS retransmission ({handshake:?} to connect), then {:?}",
            frame.at.duration_since(connected)
        );
    }

    /// Collects decoded frames until `n` arrive or `timeout` passes.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<DecodedFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(f)) => out.push(f),
                _ => break,
            }
        }
        out
    }

    /// Frames decoded and not yet taken.
    pub fn take_ready(&mut self) -> Vec<DecodedFrame> {
        std::iter::from_fn(|| self.frames.try_recv().ok()).collect()
    }

    /// The first decoded frame whose timecode was captured at or after `unix_ms`, and when.
    pub async fn first_captured_after(&mut self, unix_ms: u64, timeout: Duration) -> Option<DecodedFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.frames.recv()).await.ok()??;
            if frame.timecode.is_some_and(|t| t.capture_ms >= unix_ms & scopecast_shared::timecode::TIME_MASK) {
                return Some(frame);
            }
        }
    }

    /// The absolute URL of the 201's Link with relation `rel`.
    pub fn link(&self, rel: &str) -> Option<String> {
        let link = self.links.iter().find(|l| l.contains(&format!("rel=\"{rel}\"")))?;
        let target = link.split('>').next()?.trim_start_matches('<');
        Some(if target.starts_with('/') { format!("{}{target}", url_base(&self.session_url)) } else { target.to_owned() })
    }

    /// An ICE restart the WHEP way (RFC 9725 4.4.2): new local credentials and candidates in a
    /// PATCH with `If-Match: if_match` (the session's ETag when `None`); on 200, the relay's
    /// answer fragment is applied and the new ETag kept. Returns the status.
    pub async fn ice_restart(&mut self, if_match: Option<&str>) -> anyhow::Result<u16> {
        let options = webrtc::peer_connection::offer_answer_options::RTCOfferOptions { ice_restart: true, ..Default::default() };
        let offer = self.pc.create_offer(Some(options)).await?;
        let mut gathered = self.pc.gathering_complete_promise().await;
        self.pc.set_local_description(offer).await?;
        let _ = tokio::time::timeout(Duration::from_secs(3), gathered.recv()).await;
        let local = self.pc.local_description().await.ok_or_else(|| anyhow::anyhow!("no local description"))?.sdp;
        let attr = |sdp: &str, name: &str| sdp.lines().find_map(|l| l.trim_end().strip_prefix(name).map(str::to_owned));
        let mut frag = format!(
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n",
            attr(&local, "a=ice-ufrag:").unwrap_or_default(),
            attr(&local, "a=ice-pwd:").unwrap_or_default()
        );
        for c in local.lines().map(str::trim_end).filter(|l| l.starts_with("a=candidate:")) {
            frag.push_str(c);
            frag.push_str("\r\n");
        }
        frag.push_str("a=end-of-candidates\r\n");
        let tag = if_match.map(str::to_owned).or_else(|| self.etag.clone()).unwrap_or_else(|| "*".into());
        let res = reqwest::Client::new()
            .patch(&self.session_url)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", tag)
            .body(frag)
            .send()
            .await?;
        let status = res.status().as_u16();
        if status != 200 {
            return Ok(status);
        }
        anyhow::ensure!(res.headers().get("content-type").is_some_and(|v| v == "application/trickle-ice-sdpfrag"), "answer fragment type");
        self.etag = res.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let fragment = res.text().await?;
        // The relay's answer again, with its new credentials and candidates.
        let mut answer = Vec::new();
        for line in self.answer.split("\r\n") {
            if line.starts_with("a=candidate:") || line == "a=end-of-candidates" {
                continue;
            }
            if line.starts_with("a=ice-ufrag:") {
                answer.push(format!("a=ice-ufrag:{}", attr(&fragment, "a=ice-ufrag:").unwrap_or_default()));
            } else if line.starts_with("a=ice-pwd:") {
                answer.push(format!("a=ice-pwd:{}", attr(&fragment, "a=ice-pwd:").unwrap_or_default()));
            } else {
                answer.push(line.to_owned());
            }
            if line.starts_with("a=mid:") {
                answer.extend(fragment.lines().map(str::trim_end).filter(|l| l.starts_with("a=candidate:")).map(str::to_owned));
            }
        }
        let answer = answer.join("\r\n");
        self.pc.set_remote_description(RTCSessionDescription::answer(answer.clone())?).await?;
        self.answer = answer;
        Ok(status)
    }

    /// DELETE on the session URL; returns the status.
    pub async fn delete(&self) -> anyhow::Result<u16> {
        Ok(reqwest::Client::new().delete(&self.session_url).send().await?.status().as_u16())
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// The offer as Chromium sends it on a real network: every host candidate's address replaced
/// by a random `.local` mDNS name.
pub fn hide_behind_mdns(offer: &str) -> String {
    offer
        .split("\r\n")
        .enumerate()
        .map(|(i, line)| match line.strip_prefix("a=candidate:") {
            Some(rest) => {
                let mut fields: Vec<String> = rest.split(' ').map(str::to_owned).collect();
                if fields.len() > 4 {
                    fields[4] = format!("{:08x}-4f1c-4b2a-9c3d-{:012x}.local", i * 7919, i);
                }
                format!("a=candidate:{}", fields.join(" "))
            }
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn url_base(url: &str) -> String {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    let end = url[after_scheme..].find('/').map_or(url.len(), |i| after_scheme + i);
    url[..end].to_owned()
}

/// Puts one access unit together from its RTP packets and hands it over on the marker bit, as a
/// browser's jitter buffer does. (The webrtc crate's SampleBuilder holds each frame until the
/// next one starts, which would delay a slow stream's picture by a whole frame interval.)
/// Packets arrive in order on loopback, so a sequence gap is a loss: that frame is dropped.
#[derive(Default)]
struct FrameAssembler {
    depacketizer: H264Packet,
    access_unit: Vec<u8>,
    timestamp: Option<u32>,
    next_sequence: Option<u16>,
    broken: bool,
}

impl FrameAssembler {
    fn push(&mut self, packet: &webrtc::rtp::packet::Packet) -> Option<Vec<u8>> {
        let h = &packet.header;
        // Padding (the relay's probes of the link): a number taken, nothing to decode.
        if packet.payload.is_empty() && h.padding {
            if self.next_sequence == Some(h.sequence_number) {
                self.next_sequence = Some(h.sequence_number.wrapping_add(1));
            }
            return None;
        }
        if self.timestamp != Some(h.timestamp) {
            *self = Self { timestamp: Some(h.timestamp), next_sequence: self.next_sequence, ..Self::default() };
        }
        if self.next_sequence.is_some_and(|n| n != h.sequence_number) {
            self.broken = true;
        }
        self.next_sequence = Some(h.sequence_number.wrapping_add(1));
        match self.depacketizer.depacketize(&packet.payload) {
            Ok(nal) => self.access_unit.extend_from_slice(&nal),
            Err(_) => self.broken = true,
        }
        if !h.marker {
            return None;
        }
        self.timestamp = None;
        let complete = std::mem::take(&mut self.access_unit);
        (!self.broken).then_some(complete)
    }
}

pub(crate) fn decode_loop(rtp: std::sync::mpsc::Receiver<webrtc::rtp::packet::Packet>, tx: mpsc::UnboundedSender<DecodedFrame>) {
    let Ok(mut decoder) = openh264::decoder::Decoder::new() else { return };
    let mut assembler = FrameAssembler::default();
    while let Ok(packet) = rtp.recv() {
        if let Some(access_unit) = assembler.push(&packet) {
            let Ok(Some(yuv)) = decoder.decode(&access_unit) else { continue };
            let (width, height) = yuv.dimensions();
            let stride = yuv.strides().0;
            let frame = DecodedFrame { width, height, timecode: timecode::read(yuv.y(), stride, width, height), at: Instant::now() };
            if tx.send(frame).is_err() {
                return;
            }
        }
    }
}

/// Asserts frame numbers strictly increase (modulo 2^16) and returns how many carried a timecode.
pub fn assert_increasing(frames: &[DecodedFrame]) -> usize {
    let numbers: Vec<u16> = frames.iter().filter_map(|f| f.timecode.map(|t| t.frame)).collect();
    for w in numbers.windows(2) {
        let step = w[1].wrapping_sub(w[0]);
        assert!(step > 0 && step < 1000, "frame numbers must increase: {numbers:?}");
    }
    numbers.len()
}

/// Records now in `slot` unless a time is already there: the first time a state was reached.
fn mark_first(slot: &std::sync::Mutex<Option<Instant>>) {
    if let Ok(mut at) = slot.lock() {
        at.get_or_insert_with(Instant::now);
    }
}
