//! H.264 as it arrives from cameras: what its parameter sets say (profile, level, whether
//! frames may be reordered), whether a slice is a B-slice, and openh264's decoder into I420.
//! Parsing is h264-reader's (the crate retina itself uses); nothing here does I/O.

use super::encoder::nal_units;
use super::I420;
use h264_reader::nal::sps::{PicOrderCntType, SeqParameterSet};
use h264_reader::rbsp::{decode_nal, BitRead, BitReader};

const NAL_SLICE: u8 = 1;
const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;

pub fn nal_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |h| h & 0x1f)
}

/// What a camera's sequence parameter set says about its stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CameraProfile {
    pub profile_idc: u8,
    /// constraint_set0..5 flags as the byte between profile and level in profile-level-id.
    pub constraints: u8,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
    /// Whether output order can differ from decoding order (B-frames): `Some(false)` where the
    /// profile or the stream's own restrictions rule it out, `None` where only its slices tell.
    pub may_reorder: Option<bool>,
}

impl CameraProfile {
    /// From a sequence parameter set NAL unit (header included).
    pub fn from_sps(nal: &[u8]) -> Option<Self> {
        if nal_type(nal) != NAL_SPS {
            return None;
        }
        // The RBSP, without the NAL header byte.
        let rbsp = decode_nal(nal).ok()?;
        let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).ok()?;
        let (width, height) = sps.pixel_dimensions().ok()?;
        let profile_idc: u8 = sps.profile_idc.into();
        let constraints = rbsp.get(1).copied().unwrap_or(0);
        let reorder_frames = sps.vui_parameters.as_ref().and_then(|v| v.bitstream_restrictions.as_ref()).map(|b| b.max_num_reorder_frames);
        let may_reorder = if profile_idc == 66 || matches!(sps.pic_order_cnt, PicOrderCntType::TypeTwo) {
            // Baseline has no B-slices; picture order type 2 is output order = decoding order.
            Some(false)
        } else {
            reorder_frames.map(|n| n > 0)
        };
        Some(Self { profile_idc, constraints, level_idc: sps.level_idc, width, height, may_reorder })
    }

    /// The profile-level-id an SDP fmtp line gives for this stream (RFC 6184).
    pub fn profile_level_id(&self) -> String {
        format!("{:02x}{:02x}{:02x}", self.profile_idc, self.constraints, self.level_idc)
    }

    /// A name people know: Constrained Baseline, Main, High...
    pub fn profile_name(&self) -> &'static str {
        match (self.profile_idc, self.constraints & 0x40 != 0) {
            (66, true) => "Constrained Baseline",
            (66, false) => "Baseline",
            (77, _) => "Main",
            (88, _) => "Extended",
            (100, _) => "High",
            (110, _) => "High 10",
            (122, _) => "High 4:2:2",
            (244, _) => "High 4:4:4",
            _ => "an unusual profile",
        }
    }

    /// Whether browsers decode this profile over WebRTC: 8-bit 4:2:0 (Baseline, Main, High).
    pub fn browsers_decode(&self) -> bool {
        matches!(self.profile_idc, 66 | 77 | 100)
    }
}

/// The first SPS of an access unit, parsed.
pub fn find_profile(annexb: &[u8]) -> Option<CameraProfile> {
    nal_units(annexb).find(|n| nal_type(n) == NAL_SPS).and_then(CameraProfile::from_sps)
}

/// Whether an access unit holds a B-slice (slice_type 1 or 6).
pub fn has_b_slice(annexb: &[u8]) -> bool {
    nal_units(annexb).filter(|n| matches!(nal_type(n), NAL_SLICE | NAL_IDR)).any(|nal| {
        // first_mb_in_slice and slice_type sit in the first bytes: decode only those.
        let head = &nal[..nal.len().min(16)];
        let Ok(rbsp) = decode_nal(head) else { return false };
        let mut r = BitReader::new(&rbsp[..]);
        r.read_ue("first_mb_in_slice").is_ok() && r.read_ue("slice_type").is_ok_and(|t| t % 5 == 1)
    })
}

/// Whether an access unit starts something decodable on its own (an IDR slice).
pub fn is_idr(annexb: &[u8]) -> bool {
    nal_units(annexb).any(|n| nal_type(n) == NAL_IDR)
}

/// openh264's decoder, pictures copied out into I420 (it reuses its own buffers).
pub struct H264Decoder {
    inner: openh264::decoder::Decoder,
}

impl H264Decoder {
    pub fn new() -> Result<Self, openh264::Error> {
        use openh264::decoder::{Decoder, DecoderConfig, Flush};
        // No flush after each unit: the crate's default flushes pictures a B-frame stream still
        // reorders, and openh264 then fails every unit after the tenth or so (out of memory,
        // then no parameter sets). Streams without reordering give each picture at once anyway.
        let config = DecoderConfig::new().flush_after_decode(Flush::NoFlush);
        Ok(Self { inner: Decoder::with_api_config(openh264::OpenH264API::from_source(), config)? })
    }

    /// Decodes one access unit (Annex B) into `out`; returns whether a picture came out (a
    /// stream with reordering gives its first ones late).
    pub fn decode(&mut self, annexb: &[u8], out: &mut I420) -> Result<bool, openh264::Error> {
        use openh264::formats::YUVSource;
        let Some(yuv) = self.inner.decode(annexb)? else { return Ok(false) };
        let (width, height) = yuv.dimensions();
        let (ys, us, vs) = yuv.strides();
        out.reshape(width, height);
        let (cw, ch) = (out.chroma_width(), out.chroma_height());
        let (y, u, v) = out.planes_mut();
        copy_plane(yuv.y(), ys, y, width, height);
        copy_plane(yuv.u(), us, u, cw, ch);
        copy_plane(yuv.v(), vs, v, cw, ch);
        Ok(true)
    }
}

fn copy_plane(src: &[u8], stride: usize, dst: &mut [u8], width: usize, height: usize) {
    for (row, out) in dst.chunks_exact_mut(width).take(height).enumerate() {
        if let Some(line) = src.get(row * stride..row * stride + width) {
            out.copy_from_slice(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EncoderSettings, H264Encoder};

    #[test]
    fn nal_units_split_on_three_and_four_byte_start_codes() {
        let au = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let units: Vec<&[u8]> = nal_units(&au).collect();
        assert_eq!(units, [&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 4, 5]]);
        assert!(is_idr(&au));
        assert_eq!(nal_units(&[0, 0, 1]).count(), 0);
        assert_eq!(nal_units(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn our_encoder_is_constrained_baseline_without_reordering_and_decodes_back() {
        let mut encoder = H264Encoder::new(EncoderSettings { bitrate_bps: 1_000_000, fps: 25.0, idr_interval_frames: 0 }).expect("encoder");
        let mut picture = I420::new(64, 48);
        picture.y_mut().iter_mut().enumerate().for_each(|(i, p)| *p = (i % 251) as u8);
        encoder.force_keyframe();
        let frame = encoder.encode(&picture).expect("encodes").expect("a frame");
        let profile = find_profile(&frame.bitstream).expect("SPS in front of the IDR");
        assert_eq!((profile.width, profile.height), (64, 48));
        assert_eq!(profile.profile_name(), "Constrained Baseline");
        assert!(profile.profile_level_id().starts_with("42"));
        assert_eq!(profile.may_reorder, Some(false));
        assert!(!has_b_slice(&frame.bitstream));
        let mut decoder = H264Decoder::new().expect("decoder");
        let mut out = I420::new(2, 2);
        assert!(decoder.decode(&frame.bitstream, &mut out).expect("decodes"));
        assert_eq!((out.width, out.height), (64, 48));
        let error: u64 = out.y().iter().zip(picture.y()).map(|(a, b)| u64::from(a.abs_diff(*b))).sum();
        assert!(error / (64 * 48) < 20, "the picture survives the round trip (mean error {})", error / (64 * 48));
    }

    #[test]
    fn b_slices_are_told_from_p_and_i_slices() {
        // slice NAL (type 1), first_mb_in_slice = 0 ('1'), then slice_type as ue(v):
        // 1 (B) = '010', 0 (P) = '1', 6 (B) = '00111', 7 (I) = '0001000'.
        let b = [0, 0, 1, 0x01, 0b1010_0000];
        let p = [0, 0, 1, 0x01, 0b1100_0000];
        let b6 = [0, 0, 1, 0x01, 0b1001_1100];
        let i7 = [0, 0, 1, 0x01, 0b1000_1000, 0];
        assert!(has_b_slice(&b) && has_b_slice(&b6));
        assert!(!has_b_slice(&p) && !has_b_slice(&i7));
        assert!(!has_b_slice(&[0, 0, 1, 0x01]), "a truncated slice is not a B-slice");
    }

    #[test]
    fn garbage_is_not_a_profile() {
        assert_eq!(CameraProfile::from_sps(&[0x67]), None);
        assert_eq!(CameraProfile::from_sps(&[0x67, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(CameraProfile::from_sps(&[0x68, 0x42, 0, 0x1f]), None);
    }
}
