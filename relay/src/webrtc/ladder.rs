//! One viewer's renditions: the chooser (`adapt.rs`, pure) fed by the viewer's RTCP, the
//! transport-wide numbering its probes are judged by (`twcc.rs`, pure), and the choice its
//! media task follows at the next keyframe of the chosen rendition. A publish
//! target, or a stream without smaller renditions, has a ladder of one step and no chooser.

use super::twcc::TransportLog;
use crate::adapt::Chooser;
use crate::lock;
use crate::stream::Step;
use crate::track::Track;
use scopecast_shared::api::ViewerRendition;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::watch;
use webrtc::rtcp::payload_feedbacks::receiver_estimated_maximum_bitrate::ReceiverEstimatedMaximumBitrate;
use webrtc::rtcp::receiver_report::ReceiverReport;
use webrtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use webrtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

pub struct ViewerLadder {
    steps: Vec<Step>,
    chooser: Option<Mutex<Chooser>>,
    /// The rendition chosen (the media task moves there at its next keyframe).
    target: watch::Sender<usize>,
    /// The rendition being sent now.
    current: AtomicUsize,
    /// Packets sent to this viewer, and the rate they went at (sampled as RTCP comes).
    pub packets_sent: AtomicU64,
    /// Bytes of media sent to this viewer (what a probe's padding adds to).
    pub media_bytes_sent: AtomicU64,
    /// The sequence number of the last packet sent (NACKs for much older ones are stale).
    pub last_sequence: std::sync::atomic::AtomicU16,
    rate: Mutex<RateSample>,
    /// Transport-wide sequence numbers of what was sent, for the viewer's feedback.
    transport: Mutex<TransportLog>,
}

struct RateSample {
    at: Instant,
    packets: u64,
    packets_per_s: u64,
    media_bytes: u64,
    media_bps: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("no rendition named '{0}'")]
pub struct UnknownRendition(pub String);

impl ViewerLadder {
    /// `pinned`: a rendition's name, or `None` (or "auto") for the relay's choice.
    pub fn new(steps: Vec<Step>, pinned: Option<&str>) -> Result<Arc<Self>, UnknownRendition> {
        assert!(!steps.is_empty(), "a ladder has at least the stream's own track");
        let pinned = index_of(&steps, pinned)?;
        let chooser = Chooser::new(steps.iter().map(|s| s.bitrate_bps).collect(), pinned, Instant::now());
        let first = chooser.current();
        Ok(Arc::new(Self {
            chooser: (steps.len() > 1).then(|| Mutex::new(chooser)),
            steps,
            target: watch::channel(first).0,
            current: AtomicUsize::new(first),
            packets_sent: AtomicU64::new(0),
            media_bytes_sent: AtomicU64::new(0),
            last_sequence: std::sync::atomic::AtomicU16::new(0),
            rate: Mutex::new(RateSample { at: Instant::now(), packets: 0, packets_per_s: 0, media_bytes: 0, media_bps: 0 }),
            transport: Mutex::new(TransportLog::default()),
        }))
    }

    /// One track, no choice (a publish target).
    pub fn single(track: Arc<Track>) -> Arc<Self> {
        let step = Step { name: crate::config::FULL_RENDITION.to_owned(), track, bitrate_bps: 0, codec: crate::media::Codec::H264 };
        Self::new(vec![step], None).unwrap_or_else(|_| unreachable!("no pin, nothing to look up"))
    }

    pub fn step(&self, index: usize) -> &Step {
        &self.steps[index.min(self.steps.len() - 1)]
    }

    /// The track being sent now (where the viewer's keyframe requests go).
    pub fn current_track(&self) -> &Arc<Track> {
        &self.step(self.current.load(Ordering::Relaxed)).track
    }

    pub fn subscribe(&self) -> watch::Receiver<usize> {
        self.target.subscribe()
    }

    /// The media task moved the viewer to `index`.
    pub fn switched(&self, index: usize) {
        let from = self.current.swap(index, Ordering::Relaxed);
        if from != index {
            let why = self.chooser.as_ref().map(|c| lock(c).why().to_string()).unwrap_or_default();
            tracing::info!(track = %self.steps[0].track.name, from = %self.steps[from].name, to = %self.steps[index].name, "viewer moved: {why}");
        }
    }

    /// The transport-wide sequence number of a packet of `bytes` going out now.
    pub fn transport_sequence(&self, bytes: usize) -> u16 {
        lock(&self.transport).sent(bytes, Instant::now())
    }

    /// A probe the chooser wants started now: the padding's rate, bits per second (what the
    /// probe's rate adds to the media being sent, which is often under its rendition's
    /// bitrate: a quiet picture encodes small).
    pub fn take_probe(&self) -> Option<u64> {
        let bps = lock(self.chooser.as_ref()?).take_probe()?;
        let sending = lock(&self.rate).media_bps;
        lock(&self.transport).start_probe();
        Some(bps.saturating_sub(sending).max(bps / 4))
    }

    /// The probe's padding is all sent.
    pub fn end_probe(&self) {
        lock(&self.transport).end_probe(Instant::now());
    }

    /// The viewer's RTCP: receiver reports, transport-wide feedback and REMB feed the chooser,
    /// then time is checked.
    pub fn on_rtcp(&self, packets: &[Box<dyn webrtc::rtcp::packet::Packet + Send + Sync>]) {
        let Some(chooser) = &self.chooser else { return };
        let now = Instant::now();
        self.sample_packet_rate(now);
        let mut chooser = lock(chooser);
        {
            let mut transport = lock(&self.transport);
            for p in packets {
                if let Some(fb) = p.as_any().downcast_ref::<TransportLayerCc>() {
                    // It sends transport-wide feedback: steps up are probed first.
                    chooser.can_probe();
                    if let Some(r) = transport.feedback(fb, now) {
                        chooser.probed(r.bps, r.lost, r.packets, now);
                    }
                    if let Some(delay) = transport.queue_delay {
                        chooser.queue_delay(delay, now);
                    }
                }
            }
            // A probe whose feedback never came whole is judged on what did.
            if let Some(r) = transport.probe_result(now) {
                chooser.probed(r.bps, r.lost, r.packets, now);
            }
        }
        for p in packets {
            let any = p.as_any();
            if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                for report in &rr.reports {
                    chooser.cumulative_report(report.total_lost, report.last_sequence_number, now);
                }
            } else if let Some(remb) = any.downcast_ref::<ReceiverEstimatedMaximumBitrate>() {
                chooser.estimate_bps(remb.bitrate as u64);
            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                // Only packets of about the last second: a receiver that keeps asking for
                // packets from long ago (the crate's own NACK generator does, forever) is not
                // losing what it gets now.
                let last = self.last_sequence.load(Ordering::Relaxed);
                let recent = lock(&self.rate).packets_per_s.clamp(32, u64::from(u16::MAX / 2)) as u16;
                let seqs = nack.nacks.iter().flat_map(|n| n.packet_list()).filter(|seq| last.wrapping_sub(*seq) <= recent);
                chooser.nacks(seqs, self.packets_sent.load(Ordering::Relaxed), now);
            }
        }
        chooser.tick(now);
        self.target.send_if_modified(|t| std::mem::replace(t, chooser.current()) != chooser.current());
    }

    /// The viewer pins a rendition by name, or ("auto") lets the relay choose.
    pub fn pin(&self, name: &str) -> Result<(), UnknownRendition> {
        let index = index_of(&self.steps, Some(name))?;
        if let Some(chooser) = &self.chooser {
            let mut chooser = lock(chooser);
            chooser.pin(index, Instant::now());
            self.target.send_if_modified(|t| std::mem::replace(t, chooser.current()) != chooser.current());
        }
        Ok(())
    }

    /// For the API: `session` names the viewer.
    pub fn info(&self, session: &str) -> ViewerRendition {
        let current = self.current.load(Ordering::Relaxed);
        let (reason, pinned, loss, estimate, probed) = match &self.chooser {
            Some(c) => {
                let c = lock(c);
                (c.why().to_string(), c.pinned().is_some(), c.loss(), c.estimate(), c.probed_bps())
            }
            None => (crate::adapt::Why::OnlyOne.to_string(), false, 0.0, None, None),
        };
        ViewerRendition {
            session: session.to_owned(),
            transport: "webrtc".to_owned(),
            rendition: self.steps[current].name.clone(),
            reason,
            pinned,
            loss_percent: (loss * 1000.0).round() / 10.0,
            estimate_bps: estimate,
            received_bps: lock(&self.transport).received_bps,
            probed_bps: probed,
            renditions: self.steps.iter().map(|s| s.name.clone()).collect(),
        }
    }

    /// Packets per second sent lately (how far back a NACK is still fresh) and the media's
    /// rate, sampled at most every half second.
    fn sample_packet_rate(&self, now: Instant) {
        let packets = self.packets_sent.load(Ordering::Relaxed);
        let media_bytes = self.media_bytes_sent.load(Ordering::Relaxed);
        let mut r = lock(&self.rate);
        let elapsed = now.saturating_duration_since(r.at).as_secs_f64();
        if elapsed >= 0.5 {
            r.packets_per_s = ((packets - r.packets) as f64 / elapsed) as u64;
            r.media_bps = ((media_bytes - r.media_bytes) as f64 * 8.0 / elapsed) as u64;
            (r.at, r.packets, r.media_bytes) = (now, packets, media_bytes);
        }
    }
}

fn index_of(steps: &[Step], name: Option<&str>) -> Result<Option<usize>, UnknownRendition> {
    match name {
        None | Some(scopecast_shared::api::RENDITION_AUTO) => Ok(None),
        Some(name) => steps.iter().position(|s| s.name == name).map(Some).ok_or_else(|| UnknownRendition(name.to_owned())),
    }
}
