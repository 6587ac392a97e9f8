//! The encoded path shared by sources that send H.264 (an RTSP camera, an `exec:` command that
//! prints Annex B): each access unit is judged (the first IDR's SPS, then B-slices), then
//! passed through (packetized once, on one continuous RTP clock, into the track, whose GOP
//! joiners get) or transcoded (decoded only while someone watches, the kept GOP first, into
//! the stream's encoder). The decision and its reason are the stream's `VideoChoice`.

use crate::config::VideoMode;
use crate::decode::{Decoder, Unit};
use crate::media::h264::{self, CameraProfile};
use crate::pipeline::{Packetizer, SourceFrame};
use crate::stream::{Stream, VideoChoice};
use crate::webrtc::pull::Rebase;
use bytes::Bytes;
use scopecast_shared::api::VideoPath;
use std::sync::Arc;
use std::time::Instant;

/// Annex B units kept since the last IDR for a transcoder that starts mid-GOP (it decodes them
/// to show the current picture at once): about 10 s at 30 fps, or 32 MB.
const GOP_MAX_UNITS: usize = 300;
const GOP_MAX_BYTES: usize = 32 << 20;

/// Passthrough or transcode, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Passthrough(String),
    Transcode(String),
}

impl Verdict {
    /// From the camera's SPS and the stream's setting. A stream whose SPS leaves reordering
    /// open is passed through until a B-slice is seen.
    pub fn judge(profile: &CameraProfile, mode: VideoMode) -> Self {
        let name = profile.profile_name();
        if mode == VideoMode::Transcode {
            return Verdict::Transcode("configured: video = \"transcode\"".to_owned());
        }
        if !profile.browsers_decode() {
            return Verdict::Transcode(format!("{name} is not a profile browsers decode"));
        }
        match profile.may_reorder {
            Some(true) => Verdict::Transcode(format!("{name} with B-frames (frames reordered), which WebRTC cannot carry")),
            Some(false) => Verdict::Passthrough(format!("{name} without B-frames")),
            None => Verdict::Passthrough(format!("{name}, no B-frames seen")),
        }
    }

    fn path(&self) -> VideoPath {
        match self {
            Verdict::Passthrough(_) => VideoPath::Passthrough,
            Verdict::Transcode(_) => VideoPath::Transcoded,
        }
    }

    fn why(&self) -> &str {
        match self {
            Verdict::Passthrough(w) | Verdict::Transcode(w) => w,
        }
    }
}

fn describe_codec(p: &CameraProfile) -> String {
    format!("H.264 {}, level {}.{}, {}x{} ({})", p.profile_name(), p.level_idc / 10, p.level_idc % 10, p.width, p.height, p.profile_level_id())
}

/// One encoded source's state across its sessions.
pub struct EncodedIngest {
    mode: VideoMode,
    /// The output clock, continuous across sessions.
    clock: Rebase,
    packetizer: Packetizer,
    verdict: Option<Verdict>,
    transcoder: Transcoder,
}

impl EncodedIngest {
    pub fn new(mode: VideoMode) -> Self {
        Self { mode, clock: Rebase::default(), packetizer: Packetizer::default(), verdict: None, transcoder: Transcoder::default() }
    }

    /// A new session with the source: the last one's GOP cannot be continued by its frames.
    pub fn new_session(&mut self, stream: &Stream) {
        self.clock.new_session();
        stream.track.reset();
        self.transcoder.reset();
    }

    /// The session ended: the decoder thread with it (a new one starts at the next IDR).
    pub fn end_session(&mut self) {
        self.transcoder.decoder = None;
    }

    /// One access unit (Annex B) with its 90 kHz presentation time.
    pub fn frame(&mut self, stream: &Arc<Stream>, transport: Option<&str>, annexb: Bytes, idr: bool, rtp_timestamp: u32, now: Instant) {
        let captured_ms = crate::timing::wall_ms(now) as u64;
        if idr {
            if let Some(profile) = h264::find_profile(&annexb) {
                self.judge(stream, &profile, transport);
            }
        }
        let Some(verdict) = &self.verdict else {
            return; // nothing is decodable before the first IDR and its SPS
        };
        if matches!(verdict, Verdict::Passthrough(_)) && h264::has_b_slice(&annexb) {
            let mut choice = stream.video();
            let why = format!("{}; B-frames seen, which WebRTC cannot carry", choice.why.as_deref().unwrap_or("H.264").replace(", no B-frames seen", ""));
            self.verdict = Some(Verdict::Transcode(why.clone()));
            choice.path = VideoPath::Transcoded;
            choice.why = Some(why);
            stream.track.reset();
            stream.track.set_profile(None);
            stream.set_video(choice);
        }
        match self.verdict {
            Some(Verdict::Passthrough(_)) => {
                let timestamp = self.clock.map(rtp_timestamp, now);
                let size = stream.video().size.unwrap_or_default();
                if let Some(frame) = self.packetizer.frame(&annexb, timestamp, idr, (size.0 as usize, size.1 as usize)) {
                    stream.deliver_encoded(frame, captured_ms);
                }
            }
            Some(Verdict::Transcode(_)) => {
                stream.source_frame(captured_ms);
                self.transcoder.push(stream, Unit { annexb, idr, show: true, captured: now, captured_ms });
            }
            None => {}
        }
    }

    /// A (new) SPS: decide, or confirm, passthrough or transcode.
    fn judge(&mut self, stream: &Stream, profile: &CameraProfile, transport: Option<&str>) {
        let mut verdict = Verdict::judge(profile, self.mode);
        // B-frames once seen stay a reason to transcode, whatever a new SPS leaves open.
        if let (Some(Verdict::Transcode(why)), Verdict::Passthrough(_)) = (&self.verdict, &verdict) {
            if why.contains("B-frames") && profile.may_reorder.is_none() {
                verdict = Verdict::Transcode(why.clone());
            }
        }
        let choice = VideoChoice {
            path: verdict.path(),
            why: Some(format!("{}: {}", verdict.why(), if verdict.path() == VideoPath::Passthrough { "passed through" } else { "transcoded" })),
            codec: Some(describe_codec(profile)),
            transport: transport.map(str::to_owned),
            size: Some((profile.width, profile.height)),
        };
        if self.verdict.as_ref().map(Verdict::path) != Some(verdict.path()) {
            stream.track.reset();
        }
        // Answers to new viewers name the profile the frames are in.
        stream.track.set_profile((verdict.path() == VideoPath::Passthrough).then_some(profile.profile_idc));
        self.verdict = Some(verdict);
        stream.set_video(choice);
    }
}

/// The transcode path's decoder: started while someone watches, fed the kept GOP first.
#[derive(Default)]
struct Transcoder {
    decoder: Option<Decoder>,
    gop: Vec<Unit>,
    gop_bytes: usize,
}

impl Transcoder {
    /// A unit from the camera: decoded while someone watches (after the kept GOP, when the
    /// decoder starts mid-GOP), kept in any case.
    fn push(&mut self, stream: &Arc<Stream>, unit: Unit) {
        if unit.idr {
            self.reset();
        }
        let watched = stream.is_watched() || stream.demand.now().snapshot > 0;
        if !watched {
            if self.decoder.take().is_some() {
                // No new pictures until someone watches: the last one would go stale.
                stream.clear_still();
            }
        } else if self.decoder.is_none() {
            let target = Arc::clone(stream);
            match Decoder::spawn(stream.name(), move |picture, u| target.deliver(SourceFrame::Raw(picture), u.captured, u.captured_ms as f64)) {
                Ok(mut decoder) => {
                    decoder.catch_up(self.gop.clone());
                    self.decoder = Some(decoder);
                }
                Err(e) => tracing::error!(stream = stream.name(), "cannot start a decoder thread: {e}"),
            }
        }
        if let Some(decoder) = &mut self.decoder {
            decoder.push(unit.clone());
        }
        self.keep(unit);
    }

    fn keep(&mut self, unit: Unit) {
        if self.gop.is_empty() && !unit.idr {
            return; // nothing to continue from until an IDR
        }
        if self.gop.len() >= GOP_MAX_UNITS || self.gop_bytes + unit.annexb.len() > GOP_MAX_BYTES {
            self.gop.clear();
            self.gop_bytes = 0;
            return;
        }
        self.gop_bytes += unit.annexb.len();
        self.gop.push(unit);
    }

    fn reset(&mut self) {
        self.gop.clear();
        self.gop_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(profile_idc: u8, constraints: u8, may_reorder: Option<bool>) -> CameraProfile {
        CameraProfile { profile_idc, constraints, level_idc: 31, width: 1920, height: 1080, may_reorder }
    }

    #[test]
    fn browsers_get_the_cameras_h264_as_it_is_unless_frames_are_reordered() {
        let pass = |v: &Verdict| matches!(v, Verdict::Passthrough(_));
        assert!(pass(&Verdict::judge(&profile(66, 0xc0, Some(false)), VideoMode::Auto)));
        assert!(pass(&Verdict::judge(&profile(77, 0x40, Some(false)), VideoMode::Auto)));
        assert!(pass(&Verdict::judge(&profile(100, 0, None), VideoMode::Auto)), "until B-slices are seen");
        let b = Verdict::judge(&profile(100, 0, Some(true)), VideoMode::Auto);
        assert!(matches!(&b, Verdict::Transcode(w) if w.contains("High with B-frames")), "{b:?}");
        assert!(matches!(Verdict::judge(&profile(110, 0, Some(false)), VideoMode::Auto), Verdict::Transcode(w) if w.contains("High 10")));
        assert!(matches!(Verdict::judge(&profile(66, 0xc0, Some(false)), VideoMode::Transcode), Verdict::Transcode(w) if w.contains("configured")));
    }
}
