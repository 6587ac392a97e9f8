//! The H.264 rung's framing: one WebSocket binary message per access unit, for players that
//! cannot do WebRTC (UDP blocked) but can decode H.264 themselves: WebCodecs in secure
//! contexts, Media Source Extensions elsewhere.
//!
//! A message is a 9-byte header, then its payload:
//!
//! | bytes | meaning                                                                |
//! |-------|------------------------------------------------------------------------|
//! | 0     | flags: bit 0 set for a keyframe (an IDR, decodable on its own), bit 1  |
//! |       | for an MP4 init segment                                                |
//! | 1..9  | presentation time, microseconds on the stream's clock, big-endian u64  |
//!
//! The payload is the access unit in Annex B (start codes, SPS and PPS before every IDR), or
//! with `?container=fmp4` (for MSE) its MP4 fragment (moof + mdat). An fMP4 connection sends an
//! init segment (ftyp + moov) before its first fragment and whenever the parameter sets change,
//! each preceded by a text message with the MIME type a SourceBuffer needs
//! (`video/mp4; codecs="avc1.42c01f"`).
//!
//! The first access unit of a connection is always a keyframe. Pure, so both sides and the
//! fuzz targets share it.

/// Header length in bytes.
pub const HEADER_LEN: usize = 9;
const KEYFRAME: u8 = 1;
const INIT_SEGMENT: u8 = 2;
/// `?container=` for MP4 fragments instead of Annex B.
pub const CONTAINER_FMP4: &str = "fmp4";

/// One access unit as sent over the rung.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit<'a> {
    pub keyframe: bool,
    /// An MP4 init segment rather than a picture (fMP4 only).
    pub init: bool,
    pub timestamp_us: u64,
    /// Annex B, or an MP4 fragment or init segment.
    pub payload: &'a [u8],
}

impl Unit<'_> {
    /// The message's header; the access unit follows it.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0; HEADER_LEN];
        h[0] = if self.keyframe { KEYFRAME } else { 0 } | if self.init { INIT_SEGMENT } else { 0 };
        h[1..].copy_from_slice(&self.timestamp_us.to_be_bytes());
        h
    }

    /// Reads one message; `None` if it is too short to be one or carries no video.
    pub fn parse(message: &[u8]) -> Option<Unit<'_>> {
        let (header, payload) = (message.get(..HEADER_LEN)?, &message[HEADER_LEN..]);
        if payload.is_empty() {
            return None;
        }
        let timestamp_us = u64::from_be_bytes(header[1..].try_into().ok()?);
        Some(Unit { keyframe: header[0] & KEYFRAME != 0, init: header[0] & INIT_SEGMENT != 0, timestamp_us, payload })
    }
}

/// 90 kHz RTP timestamps (32 bits, wrapping every 13 hours) to a microsecond clock that only
/// goes forward: what a decoder's timestamps must be.
#[derive(Debug, Default, Clone)]
pub struct Unwrapper {
    last: Option<u32>,
    ticks: u64,
}

impl Unwrapper {
    pub fn micros(&mut self, rtp: u32) -> u64 {
        if let Some(last) = self.last {
            // Forward by the wrapped difference; a step back (a repeat re-stamped) counts as +1.
            let step = rtp.wrapping_sub(last) as i32;
            self.ticks += u64::from(step.max(1).unsigned_abs());
        }
        self.last = Some(rtp);
        self.ticks * 1_000 / 90
    }
}

/// The WebCodecs codec string (`avc1.PPCCLL`, RFC 6381) from the SPS in an access unit, if it
/// has one.
pub fn avc_codec(annexb: &[u8]) -> Option<String> {
    let sps = nal_units(annexb).find(|n| n.first().is_some_and(|b| b & 0x1f == 7))?;
    let [_, profile, constraints, level, ..] = *sps else { return None };
    Some(format!("avc1.{profile:02x}{constraints:02x}{level:02x}"))
}

/// The NAL units of an Annex B stream, start codes removed.
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = annexb;
    std::iter::from_fn(move || loop {
        let start = memchr::memmem::find(rest, &[0, 0, 1])?;
        let body = &rest[start + 3..];
        let end = memchr::memmem::find(body, &[0, 0, 1]).unwrap_or(body.len());
        // A four-byte start code leaves its leading zero on the previous unit.
        let unit = body[..end].strip_suffix(&[0]).filter(|_| end < body.len()).unwrap_or(&body[..end]);
        rest = &body[end..];
        if !unit.is_empty() {
            return Some(unit);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_reads_back_as_it_was_written() {
        let au = [0, 0, 0, 1, 0x65, 1, 2, 3];
        let unit = Unit { keyframe: true, init: false, timestamp_us: 1_234_567_890_123, payload: &au };
        let message = [&unit.header()[..], &au].concat();
        assert_eq!(Unit::parse(&message), Some(unit));
        let delta = Unit { keyframe: false, ..unit };
        assert_eq!(Unit::parse(&[&delta.header()[..], &au].concat()).map(|u| u.keyframe), Some(false));
        let init = Unit { keyframe: false, init: true, ..unit };
        assert_eq!(Unit::parse(&[&init.header()[..], &au].concat()), Some(init), "an init segment reads back as one");
    }

    #[test]
    fn short_or_empty_messages_are_not_units() {
        assert_eq!(Unit::parse(&[]), None);
        assert_eq!(Unit::parse(&[1; HEADER_LEN]), None, "a header and no video");
        assert_eq!(Unit::parse(&[1; 4]), None);
    }

    #[test]
    fn timestamps_unwrap_forward_across_the_32_bit_wrap() {
        let mut u = Unwrapper::default();
        assert_eq!(u.micros(u32::MAX - 89), 0);
        assert_eq!(u.micros(0), 1_000, "90 ticks = 1 ms, across the wrap");
        assert_eq!(u.micros(90), 2_000);
        assert_eq!(u.micros(90 + 90_000), 1_002_000);
        let back = u.micros(90);
        assert!(back > 1_002_000, "never backwards: {back}");
    }

    #[test]
    fn the_codec_string_comes_from_the_sps() {
        // SPS: Constrained Baseline (66), constraint flags 0xe0, level 3.1 (31); then a PPS and an IDR.
        let au = [0, 0, 0, 1, 0x67, 66, 0xe0, 31, 0xab, 0, 0, 1, 0x68, 0xce, 0, 0, 1, 0x65, 0x88];
        assert_eq!(avc_codec(&au).as_deref(), Some("avc1.42e01f"));
        let units: Vec<_> = nal_units(&au).collect();
        assert_eq!(units, [&[0x67, 66, 0xe0, 31, 0xab][..], &[0x68, 0xce], &[0x65, 0x88]]);
        assert_eq!(avc_codec(&[0, 0, 1, 0x41, 9, 9, 9]), None, "no SPS in a delta frame");
        assert_eq!(avc_codec(&[0, 0, 1, 0x67, 66]), None, "truncated SPS");
    }
}
