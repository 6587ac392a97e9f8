//! The NACK responder of sending sessions: resends what a viewer reports lost, within bounds.
//!
//! Written here because the webrtc crate's responder resends every packet it still holds
//! (8,192 of them, about 40 s at 2 Mbit/s) as often as it is asked. A receiver behind a link
//! too slow for what it was sent asks for everything again every 100 ms (the crate's own NACK
//! generator does), and the resends then fill the link for good: the viewer never recovers,
//! even after moving to a rendition that fits. Here a packet is resent only while it can still
//! help (sent less than a second ago), at most twice, and resends may add at most half of what
//! was sent in the last second. The rules live in [`ResendLog`], which is pure.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use webrtc::interceptor::stream_info::StreamInfo;
use webrtc::interceptor::{Attributes, Interceptor, InterceptorBuilder, RTCPReader, RTCPWriter, RTPReader, RTPWriter};
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use webrtc::rtp::packet::Packet;

/// The interceptor traits' result (the crate does not export its alias).
type Result<T> = std::result::Result<T, webrtc::interceptor::Error>;

/// Packets kept for resending: about 5 s at 2 Mbit/s, 10 times a 100 ms round trip's need.
const HISTORY: usize = 1024;
/// A packet older than this is not resent: the receiver has given up on its frame (a
/// browser's jitter buffer waits a few round trips, then asks for a keyframe).
const MAX_AGE: Duration = Duration::from_secs(1);
/// Resends of one packet.
const MAX_RESENDS: u8 = 2;
/// Resent bytes in the last second may reach this share of the bytes sent in it...
const BUDGET_SHARE: f64 = 0.5;
/// ...or this much, whichever is more (a slow stream's lost keyframe is still resent whole).
const BUDGET_FLOOR: usize = 64 * 1024;

struct Sent {
    packet: Packet,
    at: Instant,
    bytes: usize,
    resends: u8,
}

/// What one stream sent lately, and which of it may be resent now.
#[derive(Default)]
pub struct ResendLog {
    slots: Vec<Option<Sent>>,
    resent: VecDeque<(Instant, usize)>,
    /// The bytes in `resent`.
    resent_bytes: usize,
    /// Bytes sent in the second before an instant, kept for the rest of one NACK's packets
    /// (a hostile NACK may list thousands: the history is walked once, not for each).
    window: Option<(Instant, usize)>,
    /// Counters: resent, refused as too old or gone, refused as resent enough, over budget.
    pub stats: ResendStats,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResendStats {
    pub resent: u64,
    pub too_old: u64,
    pub repeated: u64,
    pub over_budget: u64,
}

impl ResendLog {
    /// A packet went out.
    pub fn sent(&mut self, packet: &Packet, now: Instant) {
        if self.slots.is_empty() {
            self.slots.resize_with(HISTORY, || None);
        }
        // Header size aside: the budget is about the payload a slow link must carry again.
        let bytes = packet.payload.len() + 12;
        self.slots[usize::from(packet.header.sequence_number) % HISTORY] = Some(Sent { packet: packet.clone(), at: now, bytes, resends: 0 });
    }

    /// The packet `seq` again, if it may be resent now.
    pub fn resend(&mut self, seq: u16, now: Instant) -> Option<Packet> {
        let slot = self.slots.get(usize::from(seq) % HISTORY).and_then(Option::as_ref);
        let Some(sent) = slot.filter(|s| s.packet.header.sequence_number == seq && now.saturating_duration_since(s.at) <= MAX_AGE) else {
            self.stats.too_old += 1;
            return None;
        };
        if sent.resends >= MAX_RESENDS {
            self.stats.repeated += 1;
            return None;
        }
        let bytes = sent.bytes;
        while let Some(&(at, old)) = self.resent.front() {
            if now.saturating_duration_since(at) <= Duration::from_secs(1) {
                break;
            }
            self.resent.pop_front();
            self.resent_bytes -= old;
        }
        let resent = self.resent_bytes;
        let window_sent = match self.window {
            Some((at, bytes)) if at == now => bytes,
            _ => {
                let bytes = self.slots.iter().flatten().filter(|s| now.saturating_duration_since(s.at) <= Duration::from_secs(1)).map(|s| s.bytes).sum();
                self.window = Some((now, bytes));
                bytes
            }
        };
        let budget = ((window_sent as f64 * BUDGET_SHARE) as usize).max(BUDGET_FLOOR);
        if resent + bytes > budget {
            self.stats.over_budget += 1;
            return None;
        }
        self.resent.push_back((now, bytes));
        self.resent_bytes += bytes;
        self.stats.resent += 1;
        let sent = self.slots[usize::from(seq) % HISTORY].as_mut()?;
        sent.resends += 1;
        Some(sent.packet.clone())
    }
}

/// One sending stream: its log, and the writer its packets (and resends) go on to.
struct Stream {
    log: Mutex<ResendLog>,
    next: Arc<dyn RTPWriter + Send + Sync>,
}

#[async_trait::async_trait]
impl RTPWriter for Stream {
    async fn write(&self, packet: &Packet, attributes: &Attributes) -> Result<usize> {
        crate::lock(&self.log).sent(packet, Instant::now());
        self.next.write(packet, attributes).await
    }
}

type Streams = Arc<Mutex<HashMap<u32, Arc<Stream>>>>;

/// The interceptor (one per peer connection).
#[derive(Default)]
pub struct BoundedResponder {
    streams: Streams,
}

/// Makes a [`BoundedResponder`] for each peer connection.
pub struct BoundedResponderBuilder;

impl InterceptorBuilder for BoundedResponderBuilder {
    fn build(&self, _id: &str) -> Result<Arc<dyn Interceptor + Send + Sync>> {
        Ok(Arc::new(BoundedResponder::default()))
    }
}

struct NackReader {
    parent: Arc<dyn RTCPReader + Send + Sync>,
    streams: Streams,
}

#[async_trait::async_trait]
impl RTCPReader for NackReader {
    async fn read(&self, buf: &mut [u8], a: &Attributes) -> Result<(Vec<Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>>, Attributes)> {
        let (packets, attributes) = self.parent.read(buf, a).await?;
        for p in &packets {
            let Some(nack) = p.as_any().downcast_ref::<TransportLayerNack>() else { continue };
            let Some(stream) = crate::lock(&self.streams).get(&nack.media_ssrc).cloned() else { continue };
            let now = Instant::now();
            let again: Vec<Packet> = {
                let mut log = crate::lock(&stream.log);
                nack.nacks.iter().flat_map(|n| n.packet_list()).filter_map(|seq| log.resend(seq, now)).collect()
            };
            if again.is_empty() {
                continue;
            }
            // Not inline: this reader is the session's RTCP loop.
            let next = Arc::clone(&stream.next);
            tokio::spawn(async move {
                for packet in &again {
                    if let Err(e) = next.write(packet, &Attributes::new()).await {
                        tracing::debug!("resend failed: {e}");
                        return;
                    }
                }
            });
        }
        Ok((packets, attributes))
    }
}

#[async_trait::async_trait]
impl Interceptor for BoundedResponder {
    async fn bind_rtcp_reader(&self, reader: Arc<dyn RTCPReader + Send + Sync>) -> Arc<dyn RTCPReader + Send + Sync> {
        Arc::new(NackReader { parent: reader, streams: Arc::clone(&self.streams) })
    }

    async fn bind_rtcp_writer(&self, writer: Arc<dyn RTCPWriter + Send + Sync>) -> Arc<dyn RTCPWriter + Send + Sync> {
        writer
    }

    async fn bind_local_stream(&self, info: &StreamInfo, writer: Arc<dyn RTPWriter + Send + Sync>) -> Arc<dyn RTPWriter + Send + Sync> {
        if !info.rtcp_feedback.iter().any(|f| f.typ == "nack" && f.parameter.is_empty()) {
            return writer;
        }
        let stream = Arc::new(Stream { log: Mutex::default(), next: writer });
        crate::lock(&self.streams).insert(info.ssrc, Arc::clone(&stream));
        stream
    }

    async fn unbind_local_stream(&self, info: &StreamInfo) {
        crate::lock(&self.streams).remove(&info.ssrc);
    }

    async fn bind_remote_stream(&self, _info: &StreamInfo, reader: Arc<dyn RTPReader + Send + Sync>) -> Arc<dyn RTPReader + Send + Sync> {
        reader
    }

    async fn unbind_remote_stream(&self, _info: &StreamInfo) {}

    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn packet(seq: u16, size: usize) -> Packet {
        let mut p = Packet { payload: Bytes::from(vec![0u8; size]), ..Default::default() };
        p.header.sequence_number = seq;
        p
    }

    #[test]
    fn a_lost_packet_is_resent_twice_at_most_and_only_while_it_can_help() {
        let t0 = Instant::now();
        let mut log = ResendLog::default();
        for seq in 0..10 {
            log.sent(&packet(seq, 1000), t0);
        }
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(log.resend(3, at(50)).map(|p| p.header.sequence_number), Some(3));
        assert!(log.resend(3, at(150)).is_some());
        assert!(log.resend(3, at(250)).is_none(), "a third time");
        assert!(log.resend(4, at(1100)).is_none(), "sent over a second ago");
        assert!(log.resend(20, at(50)).is_none(), "never sent");
        assert_eq!(log.stats, ResendStats { resent: 2, too_old: 2, repeated: 1, over_budget: 0 });
    }

    #[test]
    fn packets_overwritten_in_the_history_are_not_confused_with_new_ones() {
        let t0 = Instant::now();
        let mut log = ResendLog::default();
        log.sent(&packet(5, 100), t0);
        log.sent(&packet(5 + HISTORY as u16, 100), t0);
        assert!(log.resend(5, t0).is_none());
        assert!(log.resend(5 + HISTORY as u16, t0).is_some());
    }

    #[test]
    fn resends_stay_within_half_of_what_was_sent() {
        let t0 = Instant::now();
        let mut log = ResendLog::default();
        // 1,000 packets of 1,200 bytes in the last second: 1.2 MB sent, 600 kB may be resent.
        for seq in 0..1000u16 {
            log.sent(&packet(seq, 1188), t0 + Duration::from_millis(u64::from(seq)));
        }
        let now = t0 + Duration::from_millis(1000);
        let resent = (0..1000u16).filter(|s| log.resend(*s, now).is_some()).count();
        assert!((480..=510).contains(&resent), "about half the bytes: {resent} packets");
        assert!(log.stats.over_budget > 0);
    }
}
