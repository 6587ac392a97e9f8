//! Fragmented MP4 (ISO BMFF) for the H.264 rung's MSE players: browsers without WebCodecs (it
//! exists only in secure contexts) can still play H.264 through Media Source Extensions, which
//! take MP4 fragments, not Annex B. The boxes are mp4-atom's; this decides what goes in them.
//!
//! One fragment (moof + mdat) per access unit, so nothing waits for a segment to fill: the
//! latency MSE adds is the browser's, not ours. An init segment (ftyp + moov) comes first, and
//! again whenever the parameter sets change (a rendition's other size).
//!
//! A live stream does not know how long a frame lasts until the next one comes, and MSE takes a
//! gap of more than two frame durations as a discontinuity, after which it drops every frame
//! until the next keyframe (measured: a 760 ms pause at a stream's start cost the picture until
//! the next IDR). So each sample says it lasts [`SAMPLE_DURATION_US`]: the next frame, whenever
//! it comes, starts inside it and takes over, as a live picture should (the last one stays
//! until a new one replaces it), and only a stream slower than one frame a minute ever has
//! a gap.
//!
//! Pure: Annex B in, bytes out.

use super::h264::{nal_type, CameraProfile};
use mp4_atom::{
    Avc1, Avcc, Codec, Dinf, Dref, Encode, Ftyp, Hdlr, Mdat, Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mvex, Mvhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf, Trak,
    Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};
use scopecast_shared::h264_ws::{avc_codec, nal_units};

/// Microseconds: the rung's timestamps are already in them.
const TIMESCALE: u32 = 1_000_000;
const TRACK: u32 = 1;
/// How long each frame says it lasts: until the next one, at the slowest streams we serve.
pub const SAMPLE_DURATION_US: u32 = 60_000_000;
/// ISO/IEC 14496-12 sample flags: an IDR depends on nothing; anything else depends on
/// earlier frames and is not a sync sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// What one access unit becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// An init segment, and the MIME type (with its codec) a SourceBuffer is made or changed for.
    Init { mime: String, segment: Vec<u8> },
    /// One access unit's moof + mdat.
    Fragment(Vec<u8>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    #[error("a keyframe's SPS does not parse")]
    BadSps,
    #[error("mp4 encoding: {0}")]
    Encode(String),
}

/// One player's muxer: its init segments follow the parameter sets, its fragments are numbered.
#[derive(Debug, Default)]
pub struct Muxer {
    /// The SPS and PPS of the init segment last written.
    parameter_sets: Option<(Vec<u8>, Vec<u8>)>,
    sequence: u32,
}

impl Muxer {
    /// One access unit (Annex B) as MP4: an init segment first when it is a keyframe with new
    /// parameter sets, then its fragment. Units before the first keyframe with an SPS and a PPS
    /// have nothing to refer to: nothing comes out.
    pub fn push(&mut self, keyframe: bool, timestamp_us: u64, annexb: &[u8]) -> Result<Vec<Piece>, MuxError> {
        let mut pieces = Vec::with_capacity(2);
        if keyframe {
            let sps = nal_units(annexb).find(|n| nal_type(n) == NAL_SPS);
            let pps = nal_units(annexb).find(|n| nal_type(n) == NAL_PPS);
            if let (Some(sps), Some(pps)) = (sps, pps) {
                if self.parameter_sets.as_ref().is_none_or(|(s, p)| s != sps || p != pps) {
                    pieces.push(Piece::Init { mime: mime(annexb).ok_or(MuxError::BadSps)?, segment: init_segment(sps, pps)? });
                    self.parameter_sets = Some((sps.to_vec(), pps.to_vec()));
                }
            }
        }
        if self.parameter_sets.is_none() {
            return Ok(pieces);
        }
        self.sequence = self.sequence.wrapping_add(1);
        pieces.push(Piece::Fragment(fragment(self.sequence, timestamp_us, SAMPLE_DURATION_US, keyframe, annexb)?));
        Ok(pieces)
    }
}

/// `video/mp4; codecs="avc1.PPCCLL"` from the SPS in an access unit.
fn mime(annexb: &[u8]) -> Option<String> {
    Some(format!("video/mp4; codecs=\"{}\"", avc_codec(annexb)?))
}

fn encode(atom: &impl Encode, out: &mut Vec<u8>) -> Result<(), MuxError> {
    atom.encode(out).map_err(|e| MuxError::Encode(e.to_string()))
}

/// ftyp + moov: one video track, no samples (they come in fragments).
fn init_segment(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, MuxError> {
    let profile = CameraProfile::from_sps(sps).ok_or(MuxError::BadSps)?;
    let (width, height) = (u16::try_from(profile.width).map_err(|_| MuxError::BadSps)?, u16::try_from(profile.height).map_err(|_| MuxError::BadSps)?);
    let ftyp = Ftyp { major_brand: b"iso5".into(), minor_version: 0, compatible_brands: vec![b"iso5".into(), b"iso6".into(), b"mp41".into()] };
    let avc1 = Avc1 {
        visual: Visual { data_reference_index: 1, width, height, ..Default::default() },
        avcc: Avcc {
            configuration_version: 1,
            avc_profile_indication: profile.profile_idc,
            profile_compatibility: profile.constraints,
            avc_level_indication: profile.level_idc,
            length_size: 4,
            sequence_parameter_sets: vec![sps.to_vec()],
            picture_parameter_sets: vec![pps.to_vec()],
            ext: None,
        },
        ..Default::default()
    };
    let trak = Trak {
        tkhd: Tkhd {
            track_id: TRACK,
            enabled: true,
            in_movie: true,
            width: width.into(),
            height: height.into(),
            matrix: Default::default(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: TIMESCALE, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: b"vide".into(), name: "Scopecast".into() },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: Dinf { dref: Dref { entries: vec![Url::default().into()] } },
                stbl: Stbl { stsd: Stsd { codecs: vec![Codec::from(avc1)] }, stco: Some(Stco::default()), ..Default::default() },
                ..Default::default()
            },
        },
        ..Default::default()
    };
    let moov = Moov {
        mvhd: Mvhd { timescale: TIMESCALE, next_track_id: TRACK + 1, rate: 1.into(), volume: 1.into(), ..Default::default() },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK,
                default_sample_description_index: 1,
                default_sample_duration: 0,
                default_sample_size: 0,
                default_sample_flags: 0,
            }],
        }),
        trak: vec![trak],
        ..Default::default()
    };
    let mut out = Vec::with_capacity(128 + sps.len() + pps.len() + 600);
    encode(&ftyp, &mut out)?;
    encode(&moov, &mut out)?;
    Ok(out)
}

/// moof + mdat for one access unit: its NAL units length-prefixed (AVC format), parameter sets
/// and delimiters left out (they are in the init segment).
fn fragment(sequence: u32, timestamp_us: u64, duration_us: u32, keyframe: bool, annexb: &[u8]) -> Result<Vec<u8>, MuxError> {
    let mut sample = Vec::with_capacity(annexb.len() + 16);
    for nal in nal_units(annexb).filter(|n| !matches!(nal_type(n), NAL_SPS | NAL_PPS | NAL_AUD)) {
        let len = u32::try_from(nal.len()).map_err(|_| MuxError::Encode("a NAL unit over 4 GB".into()))?;
        sample.extend_from_slice(&len.to_be_bytes());
        sample.extend_from_slice(nal);
    }
    let size = u32::try_from(sample.len()).map_err(|_| MuxError::Encode("an access unit over 4 GB".into()))?;
    let moof = |data_offset: i32| Moof {
        mfhd: Mfhd { sequence_number: sequence },
        traf: vec![Traf {
            tfhd: Tfhd { track_id: TRACK, default_base_is_moof: true, ..Default::default() },
            tfdt: Some(Tfdt { base_media_decode_time: timestamp_us }),
            trun: vec![Trun {
                data_offset: Some(data_offset),
                samples: TrunSamples::Explicit(vec![TrunEntry {
                    duration: Some(duration_us),
                    size: Some(size),
                    flags: Some(if keyframe { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
                    cts: None,
                }]),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the moof's start to the sample: the moof's own length (which
    // the offset's value does not change) plus the mdat's 8-byte header.
    let mut out = Vec::with_capacity(sample.len() + 128);
    encode(&moof(0), &mut out)?;
    let offset = i32::try_from(out.len() + 8).map_err(|_| MuxError::Encode("a moof over 2 GB".into()))?;
    out.clear();
    encode(&moof(offset), &mut out)?;
    encode(&Mdat { data: sample }, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::H264Decoder;
    use crate::media::{EncoderSettings, H264Encoder, I420};
    use mp4_atom::{Decode, Mdat, Moof, Moov};

    /// `count` access units of a moving 64x48 picture, the first an IDR.
    fn access_units(width: usize, height: usize, count: usize) -> Vec<Vec<u8>> {
        let mut encoder = H264Encoder::new(EncoderSettings { bitrate_bps: 500_000, fps: 25.0, idr_interval_frames: 0 }).expect("encoder");
        let mut picture = I420::new(width, height);
        (0..count)
            .map(|n| {
                picture.y_mut().iter_mut().enumerate().for_each(|(i, p)| *p = ((i + n * 3) % 251) as u8);
                if n == 0 {
                    encoder.force_keyframe();
                }
                encoder.encode(&picture).expect("encodes").expect("a frame").bitstream.to_vec()
            })
            .collect()
    }

    fn init(pieces: &[Piece]) -> (String, Moov) {
        let Some(Piece::Init { mime, segment }) = pieces.first() else { panic!("an init segment first: {pieces:?}") };
        let mut buf = std::io::Cursor::new(segment.as_slice());
        mp4_atom::Ftyp::decode(&mut buf).expect("ftyp");
        (mime.clone(), Moov::decode(&mut buf).expect("moov"))
    }

    fn fragment_of(piece: &Piece) -> (Moof, Vec<u8>) {
        let Piece::Fragment(bytes) = piece else { panic!("a fragment: {piece:?}") };
        let mut buf = std::io::Cursor::new(bytes.as_slice());
        let moof = Moof::decode(&mut buf).expect("moof");
        let offset = moof.traf[0].trun[0].data_offset.expect("a data offset") as usize;
        assert_eq!(offset, buf.position() as usize + 8, "the data offset points at the sample");
        (moof, Mdat::decode(&mut buf).expect("mdat").data)
    }

    /// AVC (length-prefixed) back to Annex B, as a decoder wants it.
    fn annexb(sample: &[u8], sps: &[u8], pps: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for ps in [sps, pps] {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(ps);
        }
        let mut rest = sample;
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().expect("four bytes")) as usize;
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        assert!(rest.is_empty(), "the sample is whole NAL units");
        out
    }

    #[test]
    fn an_encoded_stream_becomes_an_init_segment_and_fragments_that_decode_back() {
        let units = access_units(64, 48, 6);
        let mut muxer = Muxer::default();
        let first = muxer.push(true, 0, &units[0]).expect("muxes");
        assert_eq!(first.len(), 2, "init, then the keyframe's fragment");
        let (mime, moov) = init(&first);
        assert!(mime.starts_with("video/mp4; codecs=\"avc1.42"), "{mime}");
        let track = &moov.trak[0];
        assert_eq!((track.tkhd.width.integer(), track.tkhd.height.integer()), (64, 48));
        assert_eq!(track.mdia.mdhd.timescale, TIMESCALE);
        let Codec::Avc1(avc1) = &track.mdia.minf.stbl.stsd.codecs[0] else { panic!("avc1") };
        let (sps, pps) = (avc1.avcc.sequence_parameter_sets[0].clone(), avc1.avcc.picture_parameter_sets[0].clone());
        assert_eq!((avc1.visual.width, avc1.visual.height), (64, 48));

        let mut decoder = H264Decoder::new().expect("decoder");
        let mut picture = I420::new(2, 2);
        let mut pieces = vec![first[1].clone()];
        for (n, unit) in units.iter().enumerate().skip(1) {
            let out = muxer.push(false, n as u64 * 50_000, unit).expect("muxes");
            assert_eq!(out.len(), 1, "deltas are fragments alone");
            pieces.extend(out);
        }
        for (n, piece) in pieces.iter().enumerate() {
            let (moof, sample) = fragment_of(piece);
            assert_eq!(moof.mfhd.sequence_number, n as u32 + 1);
            let traf = &moof.traf[0];
            assert_eq!(traf.tfdt.as_ref().map(|t| t.base_media_decode_time), Some(n as u64 * 50_000));
            let entry = traf.trun[0].samples.iter().next().expect("one sample");
            assert_eq!(entry.duration, Some(SAMPLE_DURATION_US), "until the next one replaces it");
            assert_eq!(entry.flags, Some(if n == 0 { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }));
            assert_eq!(entry.size, Some(sample.len() as u32));
            assert!(decoder.decode(&annexb(&sample, &sps, &pps), &mut picture).expect("decodes"), "frame {n} decodes");
            assert_eq!((picture.width, picture.height), (64, 48));
        }
    }

    #[test]
    fn deltas_before_a_keyframe_are_held_back_and_new_parameter_sets_bring_a_new_init() {
        let small = access_units(64, 48, 2);
        let large = access_units(128, 96, 1);
        let mut muxer = Muxer::default();
        assert_eq!(muxer.push(false, 0, &small[1]).expect("muxes"), [], "nothing to refer to yet");
        assert_eq!(muxer.push(true, 40_000, &small[0]).expect("muxes").len(), 2);
        assert_eq!(muxer.push(true, 80_000, &small[0]).expect("muxes").len(), 1, "the same parameter sets: no new init");
        let moved = muxer.push(true, 120_000, &large[0]).expect("muxes");
        let (_, moov) = init(&moved);
        assert_eq!(moov.trak[0].tkhd.width.integer(), 128, "a rendition of another size re-initialises");
        assert!(matches!(moved[1], Piece::Fragment(_)));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut garbage = vec![0, 0, 0, 1, 0x67, 0xff, 0xff];
        garbage.extend_from_slice(&[0, 0, 0, 1, 0x68, 1]);
        assert_eq!(Muxer::default().push(true, 0, &garbage), Err(MuxError::BadSps));
        assert_eq!(Muxer::default().push(true, 0, &[1, 2, 3]).expect("no parameter sets: nothing"), []);
    }
}
