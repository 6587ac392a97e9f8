//! Video encoding on the caller's thread (the pipeline gives it a thread of its own): H.264
//! with openh264 (Constrained Baseline, SPS/PPS with every IDR), or VP8 (`vp8.rs`) for
//! browsers without H.264, behind one [`VideoEncoder`].

use super::i420::I420;
use bytes::Bytes;
use openh264::encoder::{
    BitRate, Complexity, Encoder, EncoderConfig, FrameRate, FrameType, IntraFramePeriod, MatrixCoefficients, Profile, RateControlMode, UsageType, VuiConfig,
};
use openh264::OpenH264API;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EncoderSettings {
    pub bitrate_bps: u32,
    /// Expected frame rate, for rate control.
    pub fps: f32,
    /// Periodic IDR every this many frames; 0 leaves it to the encoder (keyframes come on
    /// demand from viewers anyway).
    pub idr_interval_frames: u32,
}

/// The codecs the relay encodes in: H.264 for everything that speaks it, VP8 for browsers
/// that offer no H.264.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    #[default]
    H264,
    Vp8,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::Vp8 => "vp8",
        }
    }
}

/// One encoded access unit, shared read-only by every viewer.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// H.264: an Annex B byte stream (start codes), SPS and PPS included on IDRs. VP8: one
    /// frame (RFC 6386).
    pub bitstream: Bytes,
    pub keyframe: bool,
    pub width: usize,
    pub height: usize,
}

pub struct H264Encoder {
    encoder: Encoder,
    settings: EncoderSettings,
    out: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("H.264 encoder: {0}")]
pub struct EncodeError(#[from] openh264::Error);

impl H264Encoder {
    pub fn new(settings: EncoderSettings) -> Result<Self, EncodeError> {
        let config = EncoderConfig::new()
            .bitrate(BitRate::from_bps(settings.bitrate_bps))
            .max_frame_rate(FrameRate::from_hz(settings.fps.max(1.0)))
            .rate_control_mode(RateControlMode::Bitrate)
            .profile(Profile::Baseline)
            .usage_type(UsageType::CameraVideoRealTime)
            .complexity(Complexity::Low)
            // Skipping frames to meet the bitrate would leave viewers on a stale picture.
            .skip_frames(false)
            // Background detection and scene-change IDRs make a star field's keyframes erratic,
            // and IDRs come on demand anyway; the scene analysis also costs CPU on every frame.
            .background_detection(false)
            .scene_change_detect(false)
            // JPEG (JFIF) pixels are full-range BT.601 YCbCr from an sRGB camera. Without saying
            // so, decoders assume limited range and crush everything below luma 16 to black,
            // which is where a telescope's faint detail lives.
            .vui(VuiConfig::srgb().matrix_coefficients(MatrixCoefficients::Smpte170M))
            .intra_frame_period(IntraFramePeriod::from_num_frames(settings.idr_interval_frames));
        Ok(Self { encoder: Encoder::with_api_config(OpenH264API::from_source(), config)?, settings, out: Vec::new() })
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Makes the next encoded frame an IDR with SPS and PPS.
    pub fn force_keyframe(&mut self) {
        self.encoder.force_intra_frame();
    }

    /// Encodes one picture. `None` when the encoder produced no output for it.
    pub fn encode(&mut self, pic: &I420) -> Result<Option<EncodedFrame>, EncodeError> {
        let bitstream = self.encoder.encode(pic)?;
        let keyframe = matches!(bitstream.frame_type(), FrameType::IDR | FrameType::I);
        if matches!(bitstream.frame_type(), FrameType::Skip | FrameType::Invalid) {
            return Ok(None);
        }
        self.out.clear();
        // The bitstream borrows the encoder: copy it out before the next call.
        bitstream.write_vec(&mut self.out);
        if self.out.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame { bitstream: Bytes::copy_from_slice(&self.out), keyframe, width: pic.width, height: pic.height }))
    }
}

/// The encoder of one rendition, in its codec.
pub enum VideoEncoder {
    /// Boxed: openh264's state is 7 KB inline, VP8's a pointer.
    H264(Box<H264Encoder>),
    Vp8(super::vp8::Vp8Encoder),
}

#[derive(Debug, thiserror::Error)]
pub enum VideoEncodeError {
    #[error(transparent)]
    H264(#[from] EncodeError),
    #[error(transparent)]
    Vp8(#[from] super::vp8::Vp8Error),
}

impl VideoEncoder {
    pub fn new(codec: Codec, settings: EncoderSettings) -> Result<Self, VideoEncodeError> {
        Ok(match codec {
            Codec::H264 => Self::H264(Box::new(H264Encoder::new(settings)?)),
            Codec::Vp8 => Self::Vp8(super::vp8::Vp8Encoder::new(settings)),
        })
    }

    pub fn force_keyframe(&mut self) {
        match self {
            Self::H264(e) => e.force_keyframe(),
            Self::Vp8(e) => e.force_keyframe(),
        }
    }

    /// Encodes `pic`, captured at `at` (VP8's rate control goes by the time between frames;
    /// openh264's by the configured frame rate).
    pub fn encode(&mut self, pic: &I420, at: std::time::Instant) -> Result<Option<EncodedFrame>, VideoEncodeError> {
        Ok(match self {
            Self::H264(e) => e.encode(pic)?,
            Self::Vp8(e) => e.encode(pic, at)?,
        })
    }
}

/// Largest picture openh264 encodes: 3840x2160, or 2160x3840 in portrait.
pub const MAX_LONG_SIDE: usize = 3840;
pub const MAX_SHORT_SIDE: usize = 2160;

/// The size to encode a `width x height` source at when no size is configured: the source's
/// own (rounded down to even), or, for a larger source such as a full-sensor preview, the
/// largest size that fits the encoder with the same shape.
pub fn fit_for_encoder(width: usize, height: usize) -> (usize, usize) {
    let (long, short) = (width.max(height).max(1), width.min(height).max(1));
    let scale = (MAX_LONG_SIDE as f64 / long as f64).min(MAX_SHORT_SIDE as f64 / short as f64).min(1.0);
    let fit = |v: usize| (((v as f64 * scale) as usize) & !1).max(2);
    (fit(width), fit(height))
}

/// NAL units of an Annex B stream, start codes removed.
pub fn nal_units(annexb: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = annexb;
    std::iter::from_fn(move || {
        let start = find_start_code(rest)?;
        let body = &rest[start..];
        let next = find_start_code_at(body).map(|(at, _)| at).unwrap_or(body.len());
        rest = &body[next..];
        Some(&body[..next])
    })
    .filter(|n| !n.is_empty())
}

/// Offset just past the first start code.
fn find_start_code(b: &[u8]) -> Option<usize> {
    find_start_code_at(b).map(|(at, len)| at + len)
}

/// Offset and length of the first 3- or 4-byte start code.
fn find_start_code_at(b: &[u8]) -> Option<(usize, usize)> {
    let i = memchr::memmem::find(b, &[0, 0, 1])?;
    if i > 0 && b[i - 1] == 0 {
        Some((i - 1, 4))
    } else {
        Some((i, 3))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EncoderSettings {
        EncoderSettings { bitrate_bps: 1_000_000, fps: 25.0, idr_interval_frames: 0 }
    }

    #[test]
    fn first_and_forced_frames_are_idrs_with_parameter_sets() {
        let mut enc = H264Encoder::new(settings()).expect("encoder");
        let mut pic = I420::new(320, 240);
        let mut kinds = Vec::new();
        for i in 0..6 {
            pic.y_mut().iter_mut().enumerate().for_each(|(j, v)| *v = ((j + i * 7) % 200) as u8 + 16);
            if i == 4 {
                enc.force_keyframe();
            }
            let f = enc.encode(&pic).expect("encodes").expect("output");
            let types: Vec<u8> = nal_units(&f.bitstream).map(|n| n[0] & 0x1f).collect();
            if f.keyframe {
                assert!(types.contains(&7) && types.contains(&8) && types.contains(&5), "IDR carries SPS, PPS: {types:?}");
                // Constrained Baseline, as profile-level-id=42e01f announces.
                let sps = nal_units(&f.bitstream).find(|n| n[0] & 0x1f == 7).expect("sps");
                assert_eq!(sps[1], 0x42, "profile_idc baseline");
                assert!(sps[2] & 0x40 != 0, "constraint_set1 (constrained baseline)");
            }
            kinds.push(f.keyframe);
        }
        assert_eq!(kinds, vec![true, false, false, false, true, false]);
    }

    /// A decoder may hold frames back for reordering unless the SPS says none come: without
    /// `max_num_reorder_frames = 0` in the VUI, some decoders buffer frames (latency).
    #[test]
    fn sps_tells_decoders_no_frame_is_reordered() {
        use h264_reader::nal::sps::SeqParameterSet;
        use h264_reader::rbsp::{decode_nal, BitReader};
        let mut enc = H264Encoder::new(settings()).expect("encoder");
        let f = enc.encode(&I420::new(1280, 720)).expect("encodes").expect("output");
        let nal = nal_units(&f.bitstream).find(|n| n[0] & 0x1f == 7).expect("sps");
        let rbsp = decode_nal(nal).expect("rbsp");
        let sps = SeqParameterSet::from_bits(BitReader::new(&rbsp[..])).expect("a valid SPS");
        assert_eq!(sps.pic_width_in_mbs_minus1 + 1, 80);
        let restrictions = sps.vui_parameters.and_then(|v| v.bitstream_restrictions).expect("VUI with bitstream_restriction");
        assert_eq!(restrictions.max_num_reorder_frames, 0, "{restrictions:?}");
        assert!(restrictions.max_dec_frame_buffering <= 1, "{restrictions:?}");
    }

    #[test]
    fn oversized_sources_are_fitted_keeping_their_shape() {
        assert_eq!(fit_for_encoder(1280, 720), (1280, 720));
        assert_eq!(fit_for_encoder(1281, 721), (1280, 720));
        assert_eq!(fit_for_encoder(3840, 2160), (3840, 2160));
        assert_eq!(fit_for_encoder(2160, 3840), (2160, 3840), "portrait is allowed too");
        assert_eq!(fit_for_encoder(4000, 3000), (2880, 2160));
        assert_eq!(fit_for_encoder(4144, 2822), (3170, 2160));
        assert_eq!(fit_for_encoder(8192, 8192), (2160, 2160));
        assert_eq!(fit_for_encoder(8000, 100), (3840, 48));
    }

    #[test]
    fn nal_split_handles_both_start_code_lengths() {
        let s = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 4, 5];
        let nals: Vec<&[u8]> = nal_units(&s).collect();
        assert_eq!(nals, vec![&[0x67, 1, 2][..], &[0x68, 3][..], &[0x65, 4, 5][..]]);
    }
}
