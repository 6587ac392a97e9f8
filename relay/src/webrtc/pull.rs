//! The relay as a WHEP client's peer connection: it offers to receive, another WHEP server (a
//! Scopecast origin, MediaMTX, a CDN) answers, and the H.264 it sends is passed through to this
//! relay's own readers without decoding: packets grouped into access units, timestamps rebased
//! so a new upstream session continues the old one's clock. The HTTP side (OPTIONS, POST,
//! DELETE, backoff) is `crate::ingest::whep`.

use super::{sdp, WebRtcEngine, WebRtcError, GATHER_TIMEOUT};
use crate::pipeline::RtpFrame;
use crate::track::Track;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use webrtc::peer_connection::configuration::RTCConfiguration;
use webrtc::peer_connection::peer_connection_state::RTCPeerConnectionState;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;
use webrtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use webrtc::rtp::packet::Packet;
use webrtc::rtp_transceiver::rtp_codec::RTPCodecType;
use webrtc::rtp_transceiver::rtp_transceiver_direction::RTCRtpTransceiverDirection;
use webrtc::rtp_transceiver::RTCRtpTransceiverInit;

/// An access unit of more packets than this (about 5 MB) is dropped: an upstream that never
/// ends a frame must not grow our memory.
const MAX_UNIT_PACKETS: usize = 4_096;
/// 90 kHz ticks put between the last frame of one upstream session and the first of the next.
const REBASE_GAP_TICKS: u32 = 3_000;

/// One pull session's peer connection.
pub struct Puller {
    pc: Arc<RTCPeerConnection>,
    /// The complete offer (gathered before it is sent: nothing to trickle).
    pub offer: String,
    /// The upstream SSRC once media flows (0 before), for keyframe requests.
    ssrc: Arc<AtomicU32>,
    ended: watch::Receiver<bool>,
}

impl WebRtcEngine {
    /// A recvonly offer for H.264 video whose frames, once the answer is applied and media
    /// flows, are published into `track` with timestamps continuing from `clock`.
    pub async fn create_puller(&self, servers: &[crate::turn::IceServer], track: Arc<Track>, clock: Arc<Rebase>) -> Result<Puller, WebRtcError> {
        let config = RTCConfiguration { ice_servers: servers.iter().filter_map(super::rtc_ice_server).collect(), ..Default::default() };
        let pc = Arc::new(self.pull_api.new_peer_connection(config).await?);
        match offer(&pc, track, clock).await {
            Ok(p) => Ok(p),
            Err(e) => {
                let _ = pc.close().await;
                Err(e)
            }
        }
    }
}

async fn offer(pc: &Arc<RTCPeerConnection>, track: Arc<Track>, clock: Arc<Rebase>) -> Result<Puller, WebRtcError> {
    let init = RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, send_encodings: vec![] };
    pc.add_transceiver_from_kind(RTPCodecType::Video, Some(init)).await?;
    let ssrc = Arc::new(AtomicU32::new(0));
    let (ended_tx, ended) = watch::channel(false);
    let ended_tx = Arc::new(ended_tx);
    {
        let ssrc = Arc::clone(&ssrc);
        pc.on_track(Box::new(move |remote, _, _| {
            let (track, clock, ssrc) = (Arc::clone(&track), Arc::clone(&clock), Arc::clone(&ssrc));
            tokio::spawn(async move {
                ssrc.store(remote.ssrc(), Ordering::Relaxed);
                clock.new_session();
                // The last session's GOP cannot be continued by this one's frames.
                track.reset();
                let mut frames = AccessUnits::default();
                while let Ok((packet, _)) = remote.read_rtp().await {
                    for frame in frames.push(packet, &clock) {
                        track.publish(frame);
                    }
                }
            });
            Box::pin(async {})
        }));
    }
    {
        let ended_tx = Arc::clone(&ended_tx);
        pc.on_peer_connection_state_change(Box::new(move |state| {
            if matches!(state, RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) {
                ended_tx.send_replace(true);
            }
            Box::pin(async {})
        }));
    }
    let offer = pc.create_offer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(offer).await?;
    let _ = tokio::time::timeout(GATHER_TIMEOUT, gathered.recv()).await;
    let local = pc.local_description().await.ok_or(WebRtcError::NoVideoInAnswer)?;
    Ok(Puller { pc: Arc::clone(pc), offer: local.sdp, ssrc, ended })
}

impl Puller {
    /// Applies the server's answer, after checking it sends H.264 video.
    pub async fn accept_answer(&self, answer: &str) -> Result<(), WebRtcError> {
        sdp::check_pull_answer(answer)?;
        self.pc.set_remote_description(RTCSessionDescription::answer(answer.to_owned())?).await?;
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.pc.connection_state() == RTCPeerConnectionState::Connected
    }

    /// Asks the server for a keyframe (PLI). The caller throttles.
    pub async fn request_keyframe(&self) {
        let media_ssrc = self.ssrc.load(Ordering::Relaxed);
        if media_ssrc != 0 {
            let _ = self.pc.write_rtcp(&[Box::new(PictureLossIndication { sender_ssrc: 0, media_ssrc })]).await;
        }
    }

    /// Resolves when the connection has failed or closed.
    pub async fn ended(&self) {
        let mut ended = self.ended.clone();
        let _ = ended.wait_for(|e| *e).await;
    }

    pub async fn close(&self) {
        let _ = self.pc.close().await;
    }
}

/// The output RTP clock of a passed-through stream: continuous across upstream sessions (each
/// starts at a random timestamp), so readers' decoders never see time jump back.
#[derive(Debug, Default)]
pub struct Rebase {
    state: std::sync::Mutex<RebaseState>,
}

#[derive(Debug, Default)]
struct RebaseState {
    /// The first upstream timestamp of this session and where it maps to.
    origin: Option<(u32, u32)>,
    last_out: Option<(u32, Instant)>,
}

impl Rebase {
    /// A new upstream session starts: its first timestamp continues from the last one sent.
    pub fn new_session(&self) {
        crate::lock(&self.state).origin = None;
    }

    /// The output timestamp for upstream timestamp `ts` received at `now`.
    pub fn map(&self, ts: u32, now: Instant) -> u32 {
        let mut s = crate::lock(&self.state);
        let (from, to) = match s.origin {
            Some(origin) => origin,
            None => {
                let start = match s.last_out {
                    // Continue from the last frame, plus the wall time since (a restart's pause).
                    Some((last, at)) => {
                        let paused = (now.saturating_duration_since(at).as_micros() as u64 * 90 / 1000) as u32;
                        last.wrapping_add(REBASE_GAP_TICKS.max(paused))
                    }
                    None => rand::random(),
                };
                *s.origin.insert((ts, start))
            }
        };
        let out = to.wrapping_add(ts.wrapping_sub(from));
        s.last_out = Some((out, now));
        out
    }
}

/// Groups upstream RTP packets into access units (one timestamp, ended by the marker bit or by
/// the next timestamp), each an `RtpFrame` as the encoder would make: clean headers (no
/// upstream extensions, SSRC or payload type; readers set their own), and whether it starts
/// with something decodable (an IDR, or parameter sets before one).
#[derive(Default)]
pub struct AccessUnits {
    packets: Vec<Packet>,
    timestamp: u32,
    keyframe: bool,
    bytes: usize,
}

impl AccessUnits {
    /// Adds one packet; returns the access units it completed (two when a marker was lost).
    pub fn push(&mut self, packet: Packet, clock: &Rebase) -> Vec<RtpFrame> {
        let mut done = Vec::new();
        if !self.packets.is_empty() && packet.header.timestamp != self.timestamp {
            done.push(self.finish(clock)); // the marker was lost: the new timestamp ends the unit
        }
        if self.packets.len() >= MAX_UNIT_PACKETS {
            tracing::warn!("dropping an upstream frame of over {MAX_UNIT_PACKETS} packets");
            self.packets.clear();
            (self.keyframe, self.bytes) = (false, 0);
        }
        self.timestamp = packet.header.timestamp;
        self.keyframe |= is_keyframe_payload(&packet.payload);
        self.bytes += packet.payload.len();
        let marker = packet.header.marker;
        self.packets.push(packet);
        if marker {
            done.push(self.finish(clock));
        }
        done
    }

    fn finish(&mut self, clock: &Rebase) -> RtpFrame {
        let timestamp = clock.map(self.timestamp, Instant::now());
        let count = self.packets.len();
        let packets = self
            .packets
            .drain(..)
            .enumerate()
            .map(|(i, p)| Packet {
                header: webrtc::rtp::header::Header { version: 2, marker: i + 1 == count, timestamp, ..Default::default() },
                payload: p.payload,
            })
            .collect();
        let frame = RtpFrame { packets, keyframe: self.keyframe, width: 0, height: 0, bytes: self.bytes, timing: None, index: 0 };
        self.keyframe = false;
        self.bytes = 0;
        frame
    }
}

/// Whether an H.264 RTP payload (RFC 6184) carries an IDR slice or a sequence parameter set:
/// single NAL units, STAP-A aggregates and the first fragment of an FU-A.
pub fn is_keyframe_payload(payload: &[u8]) -> bool {
    const IDR: u8 = 5;
    const SPS: u8 = 7;
    let Some(&first) = payload.first() else { return false };
    match first & 0x1f {
        IDR | SPS => true,
        24 => {
            // STAP-A: 16-bit sizes, each followed by a NAL unit.
            let mut rest = &payload[1..];
            while rest.len() > 2 {
                let size = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                let Some(nal) = rest.get(2..2 + size) else { return false };
                if nal.first().is_some_and(|h| matches!(h & 0x1f, IDR | SPS)) {
                    return true;
                }
                rest = &rest[2 + size..];
            }
            false
        }
        28 => payload.get(1).is_some_and(|fu| fu & 0x80 != 0 && fu & 0x1f == IDR),
        _ => false,
    }
}

/// How long one GOP-less joiner may wait before its keyframe request goes upstream again.
pub const UPSTREAM_KEYFRAME_INTERVAL: Duration = Duration::from_millis(500);

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(ts: u32, marker: bool, payload: &'static [u8]) -> Packet {
        let mut p = Packet { payload: Bytes::from_static(payload), ..Default::default() };
        p.header.timestamp = ts;
        p.header.marker = marker;
        p.header.ssrc = 1234;
        p.header.extension = true;
        p
    }

    #[test]
    fn keyframes_are_found_in_single_aggregated_and_fragmented_payloads() {
        assert!(is_keyframe_payload(&[0x65, 1, 2]), "IDR slice");
        assert!(is_keyframe_payload(&[0x67, 0x42]), "SPS");
        assert!(!is_keyframe_payload(&[0x41, 1]), "non-IDR slice");
        assert!(is_keyframe_payload(&[0x78, 0, 2, 0x67, 0x42, 0, 1, 0x68]), "STAP-A with SPS");
        assert!(!is_keyframe_payload(&[0x78, 0, 1, 0x06, 0, 9]), "STAP-A with SEI, truncated");
        assert!(is_keyframe_payload(&[0x7c, 0x85, 1]), "FU-A start of an IDR");
        assert!(!is_keyframe_payload(&[0x7c, 0x05, 1]), "FU-A middle of an IDR");
        assert!(!is_keyframe_payload(&[]));
    }

    #[test]
    fn packets_become_access_units_with_clean_headers_and_one_timestamp() {
        let clock = Rebase::default();
        let mut units = AccessUnits::default();
        assert!(units.push(packet(1000, false, &[0x7c, 0x85, 1]), &clock).is_empty());
        let idr = units.push(packet(1000, true, &[0x7c, 0x45, 2]), &clock).pop().expect("marker ends it");
        assert!(idr.keyframe);
        assert_eq!(idr.packets.len(), 2);
        assert!(idr.packets.iter().all(|p| !p.header.extension && p.header.ssrc == 0));
        assert_eq!(idr.packets.iter().map(|p| p.header.marker).collect::<Vec<_>>(), [false, true]);
        // A lost marker: the next timestamp ends the unit.
        assert!(units.push(packet(4000, false, &[0x41]), &clock).is_empty());
        let two = units.push(packet(7000, true, &[0x41]), &clock);
        assert_eq!(two.len(), 2, "the unit whose marker was lost, then the new one");
        assert!(!two[0].keyframe);
        assert_eq!(two[0].packets[0].header.timestamp.wrapping_sub(idr.packets[0].header.timestamp), 3000);
        assert_eq!(two[1].packets[0].header.timestamp.wrapping_sub(idr.packets[0].header.timestamp), 6000);
        assert!(two[0].packets[0].header.marker, "its last packet carries the marker");
    }

    #[test]
    fn a_frame_that_never_ends_is_dropped_not_kept() {
        let clock = Rebase::default();
        let mut units = AccessUnits::default();
        for _ in 0..3 * MAX_UNIT_PACKETS {
            assert!(units.push(packet(1000, false, &[0x41]), &clock).is_empty());
        }
        assert!(units.packets.len() <= MAX_UNIT_PACKETS);
        assert_eq!(units.push(packet(1000, true, &[0x41]), &clock).len(), 1, "the next frame goes out");
    }

    #[test]
    fn a_new_upstream_session_continues_the_clock_forward() {
        let clock = Rebase::default();
        let t0 = Instant::now();
        let a = clock.map(5_000, t0);
        assert_eq!(clock.map(8_000, t0).wrapping_sub(a), 3_000);
        clock.new_session();
        let b = clock.map(99, t0 + Duration::from_secs(2));
        assert_eq!(b.wrapping_sub(a.wrapping_add(3_000)), 180_000, "2 s of pause, at 90 kHz");
        assert_eq!(clock.map(3_099, t0 + Duration::from_secs(2)).wrapping_sub(b), 3_000);
    }
}
