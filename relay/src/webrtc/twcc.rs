//! Probing a viewer's link with transport-wide feedback (draft-holmer-rmcat-transport-wide-cc-
//! extensions-01), before a step up to a larger rendition. Every packet sent to a viewer
//! carries a transport-wide sequence number; the browser reports when each one arrived. A probe
//! pads what the viewer gets up to the next rendition's rate (and some room) for 150 ms, paced:
//! a link that carries that rate delivers it as sent, and a narrower one delivers its own rate,
//! the rest queueing. Only the later half of the probe is judged: a shaper's burst allowance
//! (a token bucket, 16 KB in the tests' tbf) lets the first part through at any rate. A link
//! that cannot carry the next rendition then costs a moment of queueing, not the freeze of a
//! step up tried blind. (libwebrtc judges its probe clusters the same way, by the rate they
//! arrive at.)
//!
//! The same feedback tells queueing: a packet's one-way delay (arrival on the receiver's clock
//! minus sending on ours, offset unknown) over the lowest of the last 10 s is the time it
//! waited in a queue. A link too slow for its rendition queues before it loses (a shaper's
//! buffer, a modem's), so a standing queue moves the viewer down before loss does. (GCC
//! watches the same delay's trend; a standing queue's level is cruder and enough to step down.)
//!
//! Pure: packets, feedback and time in, a rate and a delay out. The I/O is in `ladder.rs` and
//! `mod.rs`.

use std::time::{Duration, Instant};
use webrtc::rtcp::transport_feedbacks::transport_layer_cc::{PacketStatusChunk, SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc};

/// Packets remembered: feedback comes every 100 ms or so; this is seconds of a 2 Mbit/s stream.
const HISTORY: usize = 4096;
/// A probe lasts this long.
pub const PROBE_SPAN: Duration = Duration::from_millis(150);
/// Each padding packet's size (about a full media packet: a link is measured as media uses it).
pub const PROBE_PACKET_BYTES: usize = 1000;
const PROBE_MAX_PACKETS: usize = 1000;
/// Fewer packets in the judged half cannot show a rate.
const MIN_JUDGED: usize = 4;
/// Without a verdict this long after a probe ended, it is judged on what was reported.
const PROBE_PATIENCE: Duration = Duration::from_secs(1);
/// Arrivals within this span are a link faster than the probe can measure.
const MIN_SPREAD_US: i64 = 1000;
/// The one-way delay's floor is the lowest over this many one-second buckets (by sending time).
const FLOOR_BUCKETS: usize = 10;

#[derive(Clone, Copy)]
struct Sent {
    seq: u16,
    bytes: u32,
    probe: Option<u32>,
    /// When it went out, µs since the log began.
    at_us: i64,
}

/// A probe: the packets sent while it ran (its padding and the media between) and what
/// feedback said of them.
struct Probe {
    id: u32,
    first: u16,
    /// Packets sent during it; known when it ends.
    packets: Option<u16>,
    ended_at: Option<Instant>,
    /// Each packet reported received: its place in the probe, arrival (receiver's clock, µs)
    /// and size.
    arrived: Vec<(u16, i64, u32)>,
    reported: u16,
}

/// What came of a probe.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeResult {
    /// The rate its later half arrived at, bits per second (`u64::MAX`: faster than
    /// measurable; 0: too little of it arrived to tell).
    pub bps: u64,
    /// Its packets lost.
    pub lost: u16,
    pub packets: u16,
}

/// One viewer's transport-wide numbering, and its probe.
pub struct TransportLog {
    slots: Vec<Option<Sent>>,
    next: u16,
    next_probe: u32,
    probe: Option<Probe>,
    /// Bytes reported received since a time on the receiver's clock (µs).
    received: Option<(i64, u64)>,
    /// What arrived over about the last second, bits per second.
    pub received_bps: Option<u64>,
    epoch: Option<Instant>,
    /// The lowest one-way delay (µs, offset unknown) per second of sending: (second, delay).
    floor: std::collections::VecDeque<(i64, i64)>,
    /// How long the latest feedback's fastest packet queued (`None` while probing: a probe
    /// queues on purpose).
    pub queue_delay: Option<Duration>,
}

impl Default for TransportLog {
    fn default() -> Self {
        Self {
            slots: vec![None; HISTORY],
            next: 1,
            next_probe: 1,
            probe: None,
            received: None,
            received_bps: None,
            epoch: None,
            floor: std::collections::VecDeque::new(),
            queue_delay: None,
        }
    }
}

/// Header-extension elements of this many zero bytes make a probe packet's size.
const STUFFING_ELEMENT: usize = 240;
/// Their ids: two-byte header-extension ids (RFC 8285) no SDP negotiates, which receivers skip.
const STUFFING_IDS: std::ops::RangeInclusive<u8> = 246..=249;

/// One probe packet: padding only (the P bit, no payload), numbered `sequence` in the viewer's
/// stream, with the timestamp of the last frame sent, so a receiver fills its sequence gap and
/// decodes nothing (libwebrtc's padding packets look the same). Its size comes from
/// header-extension elements the receiver does not know and skips: the webrtc crate writes at
/// most 4 bytes of RTP padding, and padding that looks like a retransmission (RTX) would need
/// RTX negotiated with every viewer.
pub fn probe_packet(sequence: u16, timestamp: u32) -> webrtc::rtp::packet::Packet {
    let mut header = webrtc::rtp::header::Header { version: 2, padding: true, sequence_number: sequence, timestamp, ..Default::default() };
    for id in STUFFING_IDS {
        // The first element over 16 bytes selects the two-byte form; none can fail.
        let _ = header.set_extension(id, bytes::Bytes::from_static(&[0; STUFFING_ELEMENT]));
    }
    webrtc::rtp::packet::Packet { header, payload: bytes::Bytes::new() }
}

/// How many padding packets make `bps` over a probe's span.
pub fn probe_packets(bps: u64) -> usize {
    let bytes = bps as f64 / 8.0 * PROBE_SPAN.as_secs_f64();
    ((bytes / PROBE_PACKET_BYTES as f64).ceil() as usize).clamp(1, PROBE_MAX_PACKETS)
}

impl TransportLog {
    /// Numbers a packet of `bytes` going out `now` (part of the probe while one runs).
    pub fn sent(&mut self, bytes: usize, now: Instant) -> u16 {
        let seq = self.next;
        self.next = self.next.wrapping_add(1);
        let probe = self.probe.as_ref().filter(|p| p.packets.is_none()).map(|p| p.id);
        let at_us = now.saturating_duration_since(*self.epoch.get_or_insert(now)).as_micros() as i64;
        self.slots[usize::from(seq) % HISTORY] = Some(Sent { seq, bytes: bytes as u32, probe, at_us });
        seq
    }

    /// A probe starts with the next packet numbered (one that had not ended is dropped).
    pub fn start_probe(&mut self) {
        let id = self.next_probe;
        self.next_probe = self.next_probe.wrapping_add(1);
        self.probe = Some(Probe { id, first: self.next, packets: None, ended_at: None, arrived: Vec::new(), reported: 0 });
    }

    /// The probe's last packet went out.
    pub fn end_probe(&mut self, now: Instant) {
        let next = self.next;
        if let Some(p) = self.probe.as_mut().filter(|p| p.packets.is_none()) {
            p.packets = Some(next.wrapping_sub(p.first));
            p.ended_at = Some(now);
        }
    }

    /// Feedback from the viewer; the probe's result once all of it is reported (or it waited
    /// long enough).
    pub fn feedback(&mut self, fb: &TransportLayerCc, now: Instant) -> Option<ProbeResult> {
        let mut bytes = 0u64;
        let (mut first_at, mut last_at) = (None, None);
        // The fastest packet of this feedback: (its sending second, its one-way delay).
        let mut fastest: Option<(i64, i64)> = None;
        for (seq, arrival) in arrivals(fb) {
            let Some(sent) = self.slots[usize::from(seq) % HISTORY].filter(|s| s.seq == seq) else { continue };
            if let Some(at) = arrival {
                bytes += u64::from(sent.bytes);
                first_at = Some(first_at.map_or(at, |f: i64| f.min(at)));
                last_at = Some(last_at.map_or(at, |l: i64| l.max(at)));
                let delay = at - sent.at_us;
                if fastest.is_none_or(|(_, d)| delay < d) {
                    fastest = Some((sent.at_us / 1_000_000, delay));
                }
            }
            if let Some(p) = self.probe.as_mut().filter(|p| sent.probe == Some(p.id)) {
                p.reported += 1;
                if let Some(at) = arrival {
                    p.arrived.push((seq.wrapping_sub(p.first), at, sent.bytes));
                }
            }
        }
        self.note_received(bytes, first_at, last_at);
        if let Some(fastest) = fastest {
            self.note_delay(fastest);
        }
        self.probe_result(now)
    }

    /// The one-way delay's floor kept per second of sending; the queue is the fastest packet's
    /// delay over it.
    fn note_delay(&mut self, (second, delay): (i64, i64)) {
        match self.floor.back_mut() {
            Some((s, d)) if *s == second => *d = (*d).min(delay),
            Some((s, _)) if *s > second => {} // late feedback for an older second
            _ => self.floor.push_back((second, delay)),
        }
        while self.floor.front().is_some_and(|(s, _)| second - s >= FLOOR_BUCKETS as i64) {
            self.floor.pop_front();
        }
        let floor = self.floor.iter().map(|(_, d)| *d).min().unwrap_or(delay);
        self.queue_delay = (self.probe.is_none()).then(|| Duration::from_micros((delay - floor).max(0) as u64));
    }

    /// The probe's result once it ended and is all reported, or has waited long enough since;
    /// `None` before.
    pub fn probe_result(&mut self, now: Instant) -> Option<ProbeResult> {
        let p = self.probe.as_ref()?;
        let (Some(packets), Some(ended)) = (p.packets, p.ended_at) else { return None };
        if p.reported < packets && now.saturating_duration_since(ended) < PROBE_PATIENCE {
            return None;
        }
        let p = self.probe.take()?;
        let lost = packets.saturating_sub(p.arrived.len() as u16);
        Some(ProbeResult { bps: later_half_rate(p.arrived, packets), lost, packets })
    }

    /// Whether a probe is running or awaiting its verdict.
    #[cfg(test)]
    fn probing(&self) -> bool {
        self.probe.is_some()
    }

    /// The received rate over windows of about a second of the receiver's clock.
    fn note_received(&mut self, bytes: u64, first: Option<i64>, last: Option<i64>) {
        let (Some(first), Some(last)) = (first, last) else { return };
        let (start, total) = self.received.get_or_insert((first, 0));
        *total += bytes;
        let span = last - *start;
        if span >= 1_000_000 {
            self.received_bps = Some(*total * 8 * 1_000_000 / span as u64);
            self.received = None;
        }
    }
}

/// The rate the later half of a probe (by the order it was sent) arrived at: its bytes after
/// the first to arrive, over the time from that arrival to the last.
fn later_half_rate(arrived: Vec<(u16, i64, u32)>, packets: u16) -> u64 {
    let mut half: Vec<(i64, u32)> = arrived.into_iter().filter(|a| a.0 >= packets / 2).map(|a| (a.1, a.2)).collect();
    if half.len() < MIN_JUDGED.min(usize::from(packets / 2)).max(2) {
        return 0;
    }
    half.sort_unstable_by_key(|a| a.0);
    let spread = half[half.len() - 1].0 - half[0].0;
    if spread < MIN_SPREAD_US {
        return u64::MAX;
    }
    let bytes: u64 = half[1..].iter().map(|a| u64::from(a.1)).sum();
    bytes * 8 * 1_000_000 / spread as u64
}

/// Each reported packet's transport-wide sequence number and arrival time on the receiver's
/// clock in microseconds (`None`: not received), in order. A malformed report (fewer deltas
/// than received packets) ends where its deltas do.
pub fn arrivals(fb: &TransportLayerCc) -> Vec<(u16, Option<i64>)> {
    let mut statuses = Vec::with_capacity(usize::from(fb.packet_status_count));
    for chunk in &fb.packet_chunks {
        let room = usize::from(fb.packet_status_count) - statuses.len();
        match chunk {
            PacketStatusChunk::RunLengthChunk(c) => statuses.extend(std::iter::repeat_n(c.packet_status_symbol, usize::from(c.run_length).min(room))),
            PacketStatusChunk::StatusVectorChunk(c) => {
                // A one-bit vector says received or not; its deltas are small.
                let symbols = c.symbol_list.iter().map(|s| match (c.symbol_size, s) {
                    (SymbolSizeTypeTcc::OneBit, SymbolTypeTcc::PacketNotReceived) => SymbolTypeTcc::PacketNotReceived,
                    (SymbolSizeTypeTcc::OneBit, _) => SymbolTypeTcc::PacketReceivedSmallDelta,
                    (_, s) => *s,
                });
                statuses.extend(symbols.take(room));
            }
        }
    }
    // The reference time is a signed 24-bit count of 64 ms; deltas (in µs here) run from it.
    let mut at = i64::from(fb.reference_time) * 64_000;
    let mut deltas = fb.recv_deltas.iter();
    let mut out = Vec::with_capacity(statuses.len());
    for (i, status) in statuses.into_iter().enumerate() {
        let seq = fb.base_sequence_number.wrapping_add(i as u16);
        match status {
            SymbolTypeTcc::PacketReceivedSmallDelta | SymbolTypeTcc::PacketReceivedLargeDelta => {
                let Some(d) = deltas.next() else { break };
                at += d.delta;
                out.push((seq, Some(at)));
            }
            SymbolTypeTcc::PacketReceivedWithoutDelta => out.push((seq, Some(at))),
            SymbolTypeTcc::PacketNotReceived => out.push((seq, None)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use webrtc::rtcp::transport_feedbacks::transport_layer_cc::{RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk};

    fn run(symbol: SymbolTypeTcc, n: u16) -> PacketStatusChunk {
        PacketStatusChunk::RunLengthChunk(RunLengthChunk { type_tcc: StatusChunkTypeTcc::RunLengthChunk, packet_status_symbol: symbol, run_length: n })
    }

    fn delta(us: i64) -> RecvDelta {
        let type_tcc_packet = if (0..=63_750).contains(&us) { SymbolTypeTcc::PacketReceivedSmallDelta } else { SymbolTypeTcc::PacketReceivedLargeDelta };
        RecvDelta { type_tcc_packet, delta: us }
    }

    /// Feedback saying packets `base..` arrived `gaps` µs apart (`None`: lost), after the
    /// reference time 10 (640 ms).
    fn feedback(base: u16, gaps: &[Option<i64>]) -> TransportLayerCc {
        let symbol_list = gaps
            .iter()
            .map(|g| match g {
                None => SymbolTypeTcc::PacketNotReceived,
                Some(us) if (0..=63_750).contains(us) => SymbolTypeTcc::PacketReceivedSmallDelta,
                Some(_) => SymbolTypeTcc::PacketReceivedLargeDelta,
            })
            .collect::<Vec<_>>();
        let packet_chunks = symbol_list
            .chunks(7)
            .map(|c| {
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: SymbolSizeTypeTcc::TwoBit,
                    symbol_list: c.to_vec(),
                })
            })
            .collect();
        TransportLayerCc {
            base_sequence_number: base,
            packet_status_count: gaps.len() as u16,
            reference_time: 10,
            packet_chunks,
            recv_deltas: gaps.iter().flatten().map(|us| delta(*us)).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn arrivals_follow_the_chunks_and_deltas() {
        let fb = TransportLayerCc {
            base_sequence_number: 65_534,
            packet_status_count: 5,
            reference_time: 1,
            packet_chunks: vec![
                run(SymbolTypeTcc::PacketReceivedSmallDelta, 2),
                run(SymbolTypeTcc::PacketNotReceived, 1),
                run(SymbolTypeTcc::PacketReceivedLargeDelta, 9),
            ],
            recv_deltas: vec![delta(250), delta(1000), delta(-500), delta(70_000)],
            ..Default::default()
        };
        // The last run is longer than the count says: only the count is read.
        assert_eq!(arrivals(&fb), [(65_534, Some(64_250)), (65_535, Some(65_250)), (0, None), (1, Some(64_750)), (2, Some(134_750))]);
        // Fewer deltas than received packets: it stops where they do.
        let short = TransportLayerCc { recv_deltas: vec![delta(250)], ..fb };
        assert_eq!(arrivals(&short), [(65_534, Some(64_250))]);
    }

    #[test]
    fn a_one_bit_vector_is_received_or_not() {
        let fb = TransportLayerCc {
            base_sequence_number: 7,
            packet_status_count: 3,
            packet_chunks: vec![PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::OneBit,
                symbol_list: vec![SymbolTypeTcc::PacketReceivedSmallDelta, SymbolTypeTcc::PacketNotReceived, SymbolTypeTcc::PacketReceivedSmallDelta],
            })],
            recv_deltas: vec![delta(0), delta(500)],
            ..Default::default()
        };
        assert_eq!(arrivals(&fb), [(7, Some(0)), (8, None), (9, Some(500))]);
    }

    /// Sends a frame of media, then a probe of `n` packets of 1000 bytes, returning the log and
    /// the probe's first sequence number.
    fn log_with_probe(n: u16, now: Instant) -> (TransportLog, u16) {
        let mut log = TransportLog::default();
        for _ in 0..3 {
            log.sent(1100, now);
        }
        log.start_probe();
        let first = log.next;
        for _ in 0..n {
            log.sent(PROBE_PACKET_BYTES, now);
        }
        log.end_probe(now);
        (log, first)
    }

    #[test]
    fn a_probe_through_a_1_mbit_shaper_measures_1_mbit_after_its_burst_allowance() {
        let t0 = Instant::now();
        let (mut log, first) = log_with_probe(40, t0);
        // Sent at 2.5 Mbit/s (one every 3.2 ms): a token bucket lets the first 16 through as
        // sent, then the link's 1 Mbit/s spreads them 8 ms apart.
        let mut gaps = vec![Some(0)];
        gaps.extend(std::iter::repeat_n(Some(3200), 15));
        gaps.extend(std::iter::repeat_n(Some(8000), 24));
        // The media before it, reported in the same feedback, is not part of it.
        let mut with_media = vec![Some(0); 3];
        with_media.extend(gaps);
        let result = log.feedback(&feedback(first - 3, &with_media), t0).expect("all reported");
        assert_eq!((result.lost, result.packets), (0, 40));
        // The later half: 20 packets 8 ms apart.
        assert_eq!(result.bps, 19 * 1000 * 8 * 1_000_000 / (19 * 8000), "{result:?}");
        assert!(!log.probing());
    }

    #[test]
    fn media_sent_during_a_probe_is_part_of_it() {
        let t0 = Instant::now();
        let mut log = TransportLog::default();
        log.start_probe();
        let first = log.next;
        for i in 0..20 {
            log.sent(if i % 5 == 0 { 1200 } else { PROBE_PACKET_BYTES }, t0);
        }
        assert_eq!(log.feedback(&feedback(first, &[Some(100); 20]), t0), None, "still running");
        assert_eq!(log.queue_delay, None, "a probe queues on purpose: no delay read while one runs");
        log.sent(1200, t0);
        log.end_probe(t0);
        assert_eq!(log.probe_result(t0), None, "its last packet is not reported yet");
        // Packets 0..20 arrived 100 µs apart, from 640.1 ms; the last at 642.1 ms.
        let late = log.feedback(&feedback(first + 20, &[Some(2100)]), t0).expect("all of it reported");
        assert_eq!((late.packets, late.lost), (21, 0));
        // The later half is packets 10..=20: after the first to arrive, 10,400 bytes (three of
        // them media) over 1 ms.
        assert_eq!(late.bps, 10_400 * 8 * 1000);
    }

    #[test]
    fn a_probe_reported_in_parts_is_judged_when_complete() {
        let t0 = Instant::now();
        let (mut log, first) = log_with_probe(10, t0);
        assert_eq!(log.feedback(&feedback(first, &[Some(0); 4]), t0), None, "6 still to come");
        let result = log.feedback(&feedback(first + 4, &[Some(2000); 6]), t0).expect("complete");
        assert_eq!(result, ProbeResult { bps: 4 * 1000 * 8 * 1_000_000 / 8000, lost: 0, packets: 10 });
    }

    #[test]
    fn a_probe_mostly_lost_measures_nothing_and_an_unanswered_one_is_judged_after_a_second() {
        let t0 = Instant::now();
        let (mut log, first) = log_with_probe(10, t0);
        let mut gaps = vec![Some(0); 6];
        gaps.extend([None; 4]);
        assert_eq!(log.feedback(&feedback(first, &gaps), t0), Some(ProbeResult { bps: 0, lost: 4, packets: 10 }));

        let (mut log, first) = log_with_probe(10, t0);
        assert_eq!(
            log.feedback(&feedback(first, &[Some(0), Some(2000), Some(2000), Some(2000), Some(2000), Some(2000), Some(2000), Some(2000), Some(2000)]), t0),
            None
        );
        assert_eq!(log.probe_result(t0 + Duration::from_millis(500)), None);
        let late = log.probe_result(t0 + PROBE_PATIENCE).expect("judged on what came");
        // Its later half: four of packets 5..10 arrived, 2 ms apart.
        assert_eq!((late.lost, late.bps), (1, 3 * 1000 * 8 * 1_000_000 / 6000));
    }

    #[test]
    fn feedback_for_unknown_or_overwritten_packets_is_ignored() {
        let t0 = Instant::now();
        let (mut log, first) = log_with_probe(10, t0);
        // Numbers far from anything sent lately: no verdict, no panic.
        assert_eq!(log.feedback(&feedback(first.wrapping_add(20_000), &[Some(0); 10]), t0), None);
        assert!(log.probing());
    }

    /// Feedback in batches of ten for packets `first..` sent 10 ms apart from the log's start,
    /// each arriving at `arrival(i)` µs on the receiver's clock; the queue delay after each.
    fn queue_delays(log: &mut TransportLog, first: u16, count: usize, arrival: impl Fn(usize) -> i64) -> Vec<Duration> {
        (0..count / 10)
            .map(|batch| {
                // Deltas: each arrival minus the one before (the first: minus the reference).
                let mut prev = 640_000;
                let gaps: Vec<Option<i64>> = (batch * 10..batch * 10 + 10).map(|i| Some(arrival(i) - std::mem::replace(&mut prev, arrival(i)))).collect();
                log.feedback(&feedback(first.wrapping_add(batch as u16 * 10), &gaps), Instant::now());
                log.queue_delay.expect("a delay read from every feedback")
            })
            .collect()
    }

    #[test]
    fn a_standing_queue_shows_as_delay_over_the_floor_and_jitter_does_not() {
        let t0 = Instant::now();
        let mut log = TransportLog::default();
        let first = log.next;
        for i in 0..200u64 {
            log.sent(1200, t0 + Duration::from_millis(i * 10));
        }
        // 5 ms of path; from packet 100 on each waits 4 ms more than the one before: a link
        // 40 % too slow filling its queue.
        let delays = queue_delays(&mut log, first, 200, |i| 640_000 + i as i64 * 10_000 + 5_000 + (i as i64 - 99).max(0) * 4_000);
        assert!(delays[..10].iter().all(|d| d.is_zero()), "no queue while the link keeps up: {delays:?}");
        assert_eq!(delays[10], Duration::from_millis(4), "the batch's fastest packet, 4 ms late");
        assert_eq!(delays[19], Duration::from_millis(4 * 91), "packet 190 waited 364 ms");

        // Jitter (some packets late, the fastest of each batch on time) is no queue.
        let mut log = TransportLog::default();
        let first = log.next;
        for i in 0..100u64 {
            log.sent(1200, t0 + Duration::from_millis(i * 10));
        }
        let delays = queue_delays(&mut log, first, 100, |i| 640_000 + i as i64 * 10_000 + 5_000 + if i % 3 == 1 { 30_000 } else { 0 });
        assert!(delays.iter().all(|d| d.is_zero()), "{delays:?}");
    }

    #[test]
    fn the_received_rate_is_measured_over_a_second_of_arrivals() {
        let t0 = Instant::now();
        let mut log = TransportLog::default();
        let first = log.next;
        for _ in 0..101 {
            log.sent(1250, t0);
        }
        // 101 packets of 1250 bytes, 10 ms apart: about 1 Mbit/s.
        let mut gaps = vec![Some(0)];
        gaps.extend(std::iter::repeat_n(Some(10_000), 100));
        log.feedback(&feedback(first, &gaps), t0);
        assert_eq!(log.received_bps, Some(101 * 1250 * 8));
    }

    #[test]
    fn a_probe_packet_is_padding_of_the_probe_size_with_no_payload() {
        use webrtc::util::{Marshal, MarshalSize, Unmarshal};
        let p = probe_packet(4242, 90_000);
        let size = p.marshal_size();
        assert!((PROBE_PACKET_BYTES - 50..=PROBE_PACKET_BYTES + 50).contains(&size), "{size}");
        let wire = p.marshal().expect("marshals");
        assert_eq!(wire.len(), size);
        let back = webrtc::rtp::packet::Packet::unmarshal(&mut &wire[..]).expect("parses");
        assert!(back.payload.is_empty() && back.header.padding);
        assert_eq!((back.header.sequence_number, back.header.timestamp, back.header.extension_profile), (4242, 90_000, 0x1000));
        assert_eq!(back.header.extensions.len(), 4);
        // The track adds its negotiated one-byte-id extensions to it as to any packet.
        let mut header = p.header.clone();
        header.set_extension(3, bytes::Bytes::from_static(&[0, 7])).expect("transport-wide number");
        let with = webrtc::rtp::packet::Packet { header, payload: bytes::Bytes::new() };
        let back = webrtc::rtp::packet::Packet::unmarshal(&mut &with.marshal().expect("marshals")[..]).expect("parses");
        assert_eq!(back.header.get_extension(3).as_deref(), Some(&[0u8, 7][..]));
    }

    #[test]
    fn probes_are_150_ms_of_the_rate_within_bounds() {
        assert_eq!(probe_packets(2_000_000), 38);
        assert_eq!(probe_packets(1000), 1);
        assert_eq!(probe_packets(1_000_000_000), PROBE_MAX_PACKETS);
    }
}
