//! JPEG -> I420 through libjpeg-turbo, straight to planar YUV (no RGB round trip).
//!
//! libjpeg-turbo decodes frames without Huffman tables (most USB cameras' MJPEG) by falling back
//! to the standard tables of JPEG Annex K.3, so no table insertion is needed here; the
//! `no_huffman_tables` test pins that.

use super::i420::I420;
use turbojpeg::{Decompressor, ScalingFactor, Subsamp, YuvImage};

#[derive(Debug, thiserror::Error)]
pub enum JpegError {
    #[error("not a decodable JPEG: {0}")]
    Decode(#[from] turbojpeg::Error),
    #[error("JPEG of {0}x{1} is too small or too large (2x2 to 8192x8192)")]
    BadSize(usize, usize),
    #[error("unsupported JPEG chroma subsampling {0:?}")]
    Subsampling(Subsamp),
    #[error("JPEG region: {0}")]
    Region(String),
    #[error("no picture to encode")]
    NoPicture,
}

impl JpegInfo {
    /// The largest DCT-domain reduction (1/8, 1/4, 1/2 or 1) that still leaves at least
    /// `width x height`: far cheaper than decoding at full size and scaling.
    pub fn reduction_for(&self, width: usize, height: usize) -> usize {
        [8, 4, 2, 1].into_iter().find(|d| self.width / d >= width && self.height / d >= height).unwrap_or(1)
    }
}

/// Most progressive scans accepted in one JPEG.
pub(super) const MAX_SCANS: u32 = 100;

/// Reusable decoder state: the libjpeg-turbo handle and a scratch buffer.
pub struct JpegDecoder {
    tj: Decompressor,
    scratch: Vec<u8>,
}

/// Size a JPEG decodes to, read from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    pub width: usize,
    pub height: usize,
    pub subsamp: Subsamp,
}

impl JpegDecoder {
    pub fn new() -> Result<Self, JpegError> {
        Ok(Self { tj: Self::handle()?, scratch: Vec::new() })
    }

    fn handle() -> Result<Decompressor, JpegError> {
        let mut tj = Decompressor::new()?;
        // Each progressive scan is a pass over the whole picture; a JPEG that repeats one
        // scan thousands of times would hold the encoder thread for seconds. Real encoders
        // write about ten.
        tj.set_scan_limit(MAX_SCANS)?;
        Ok(tj)
    }

    /// After a libjpeg error the handle is left mid-header (TurboJPEG 3.1 returns from its
    /// error jump without aborting the decompression), and every later frame fails with the
    /// same error: one garbage frame from a camera would end its stream. A fresh handle
    /// costs microseconds, and errors are rare.
    fn recover<T>(&mut self, result: Result<T, JpegError>) -> Result<T, JpegError> {
        if matches!(result, Err(JpegError::Decode(_))) {
            if let Ok(tj) = Self::handle() {
                self.tj = tj;
            }
        }
        result
    }

    pub fn info(&mut self, jpeg: &[u8]) -> Result<JpegInfo, JpegError> {
        let result = self.read_info(jpeg);
        self.recover(result)
    }

    fn read_info(&mut self, jpeg: &[u8]) -> Result<JpegInfo, JpegError> {
        let h = self.tj.read_header(jpeg)?;
        if !(2..=8192).contains(&h.width) || !(2..=8192).contains(&h.height) {
            return Err(JpegError::BadSize(h.width, h.height));
        }
        Ok(JpegInfo { width: h.width, height: h.height, subsamp: h.subsamp })
    }

    /// Decodes into `out` (resized as needed), shrinking by `1/denom` in the DCT domain
    /// (`denom` of 1, 2, 4 or 8), which is far cheaper than decoding and then scaling.
    /// Odd sizes lose their last column or row so the encoder gets even dimensions.
    pub fn decode(&mut self, jpeg: &[u8], denom: usize, out: &mut I420) -> Result<(), JpegError> {
        let result = self.decode_into(jpeg, denom, out);
        self.recover(result)
    }

    fn decode_into(&mut self, jpeg: &[u8], denom: usize, out: &mut I420) -> Result<(), JpegError> {
        let info = self.read_info(jpeg)?;
        let factor = ScalingFactor::new(1, denom.clamp(1, 8));
        self.tj.set_scaling_factor(factor)?;
        let (w, h) = (factor.scale(info.width), factor.scale(info.height));
        if w < 2 || h < 2 {
            return Err(JpegError::BadSize(w, h));
        }
        // A 4:2:0 JPEG of even size decodes straight into the picture: libjpeg-turbo's planar
        // layout with no row padding is exactly I420's.
        if info.subsamp == Subsamp::Sub2x2 && w % 2 == 0 && h % 2 == 0 {
            out.reshape(w, h);
            let image = YuvImage { pixels: out.as_bytes_mut(), width: w, align: 1, height: h, subsamp: Subsamp::Sub2x2 };
            self.tj.decompress_to_yuv(jpeg, image)?;
            return Ok(());
        }
        let len = turbojpeg::yuv_pixels_len(w, 1, h, info.subsamp)?;
        self.scratch.resize(len, 0);
        let image = YuvImage { pixels: &mut self.scratch[..], width: w, align: 1, height: h, subsamp: info.subsamp };
        let (yw, yh) = (image.y_width(), image.y_height());
        let (cw, ch) = (image.uv_width(), image.uv_height());
        self.tj.decompress_to_yuv(jpeg, image)?;

        let (ew, eh) = (w & !1, h & !1);
        out.reshape(ew, eh);
        let (y_out, u_out, v_out) = out.planes_mut();
        let (y_plane, rest) = self.scratch.split_at(yw * yh);
        for row in 0..eh {
            y_out[row * ew..(row + 1) * ew].copy_from_slice(&y_plane[row * yw..row * yw + ew]);
        }
        if info.subsamp == Subsamp::Gray {
            u_out.fill(128);
            v_out.fill(128);
            return Ok(());
        }
        let (u_plane, v_plane) = rest.split_at(cw * ch);
        let (ocw, och) = (ew / 2, eh / 2);
        // Horizontal and vertical chroma sampling ratios relative to 4:2:0 output.
        let (fx, fy) = match info.subsamp {
            Subsamp::Sub2x2 => (1, 1),
            Subsamp::Sub2x1 => (1, 2),
            Subsamp::None => (2, 2),
            Subsamp::Sub1x2 => (2, 1),
            other => return Err(JpegError::Subsampling(other)),
        };
        downsample_chroma(u_plane, cw, u_out, ocw, och, fx, fy);
        downsample_chroma(v_plane, cw, v_out, ocw, och, fx, fy);
        Ok(())
    }
}

/// Box-averages a chroma plane by `fx` x `fy` (each 1 or 2) into a tightly packed plane.
fn downsample_chroma(src: &[u8], stride: usize, dst: &mut [u8], w: usize, h: usize, fx: usize, fy: usize) {
    if (fx, fy) == (1, 1) {
        // Already 4:2:0: a row copy, not an average of each row with itself.
        for oy in 0..h {
            dst[oy * w..(oy + 1) * w].copy_from_slice(&src[oy * stride..oy * stride + w]);
        }
        return;
    }
    for oy in 0..h {
        let out = &mut dst[oy * w..(oy + 1) * w];
        let r0 = &src[oy * fy * stride..];
        let r1 = &src[(oy * fy + fy - 1) * stride..];
        match fx {
            1 => {
                for (x, o) in out.iter_mut().enumerate() {
                    *o = (u16::from(r0[x]) + u16::from(r1[x])).div_ceil(2) as u8;
                }
            }
            _ => {
                for (x, o) in out.iter_mut().enumerate() {
                    let s = u16::from(r0[2 * x]) + u16::from(r0[2 * x + 1]) + u16::from(r1[2 * x]) + u16::from(r1[2 * x + 1]);
                    *o = ((s + 2) / 4) as u8;
                }
            }
        }
    }
}

/// Encodes an I420 picture as a baseline 4:2:0 JPEG (stills of raw pictures, test sources).
pub fn encode_i420(pic: &I420, quality: i32) -> Result<Vec<u8>, JpegError> {
    let mut c = turbojpeg::Compressor::new()?;
    c.set_quality(quality)?;
    c.set_subsamp(Subsamp::Sub2x2)?;
    let image = YuvImage { pixels: pic.as_bytes(), width: pic.width, align: 1, height: pic.height, subsamp: Subsamp::Sub2x2 };
    Ok(c.compress_yuv_to_vec(image)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/../tests/fixtures/mjpeg/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    /// A camera that sends one frame of garbage must not break the decoder for the good
    /// frames after it (the handle's state after an error).
    #[test]
    fn a_good_frame_decodes_after_garbage() {
        let mut pic = I420::new(320, 240);
        crate::media::testpattern::TestPattern::new("jpeg", 320, 240).render(1_795_000_000_000, &mut pic);
        let good = encode_i420(&pic, 80).expect("jpeg");
        let mut noise = vec![0xff, 0xd8];
        noise.extend((0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
        let mut truncated = good[..good.len() / 2].to_vec();
        truncated.extend_from_slice(&[0xff, 0xd9]);
        let mut d = JpegDecoder::new().expect("turbojpeg handle");
        let mut out = I420::new(2, 2);
        for (i, bad) in [&noise, &truncated, &noise, &noise].into_iter().enumerate() {
            let info = d.info(bad).map(|h| (h.width, h.height));
            let decoded = d.decode(bad, 1, &mut out);
            assert!(info.is_err() || decoded.is_err(), "round {i}: garbage rejected ({info:?})");
            d.info(&good).unwrap_or_else(|e| panic!("round {i}: the good frame's header after garbage: {e}"));
            d.decode(&good, 1, &mut out).unwrap_or_else(|e| panic!("round {i}: the good frame after garbage: {e}"));
            assert_eq!((out.width, out.height), (320, 240));
        }
    }

    #[test]
    fn no_huffman_tables_decode_like_the_camera_sent_them() {
        let mut d = JpegDecoder::new().expect("turbojpeg handle");
        let mut a = I420::new(2, 2);
        let mut b = I420::new(2, 2);
        d.decode(&fixture("nodht-avi1.jpg"), 1, &mut a).expect("AVI1 frame without DHT decodes");
        d.decode(&fixture("nodht.jpg"), 1, &mut b).expect("JFIF frame without DHT decodes");
        assert_eq!((a.width, a.height), (1280, 720));
        assert_eq!(a, b);
        // A real picture, not a flat field.
        let mean = a.y().iter().map(|&v| u64::from(v)).sum::<u64>() / a.y().len() as u64;
        let var = a.y().iter().map(|&v| (i64::from(v) - mean as i64).pow(2) as u64).sum::<u64>() / a.y().len() as u64;
        assert!(var > 100, "variance {var}");
    }

    #[test]
    fn subsamplings_round_trip_through_i420() {
        let mut pic = I420::new(320, 240);
        for (i, v) in pic.y_mut().iter_mut().enumerate() {
            *v = (i % 320 / 4) as u8 + 80;
        }
        pic.u_mut().fill(110);
        pic.v_mut().fill(140);
        for subsamp in [Subsamp::Sub2x2, Subsamp::Sub2x1, Subsamp::None, Subsamp::Gray] {
            let mut px = I420::new(2, 2);
            // Go through turbojpeg's own RGB path to make a JPEG of the wanted subsampling.
            let mut dec = JpegDecoder::new().expect("handle");
            let jpeg = encode_i420(&pic, 95).expect("encode");
            let img = turbojpeg::decompress(&jpeg, turbojpeg::PixelFormat::RGB).expect("rgb");
            let mut c = turbojpeg::Compressor::new().expect("c");
            c.set_subsamp(subsamp).expect("subsamp");
            c.set_quality(95).expect("q");
            let again = c.compress_to_vec(img.as_deref()).expect("jpeg");
            dec.decode(&again, 1, &mut px).expect("decodes");
            assert_eq!((px.width, px.height), (320, 240), "{subsamp:?}");
            let y_err = px.y().iter().zip(pic.y()).map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs()).max();
            assert!(y_err.expect("pixels") <= 8, "{subsamp:?} luma error {y_err:?}");
            let want_u = if subsamp == Subsamp::Gray { 128 } else { 110 };
            let u_mid = px.u()[px.u().len() / 2];
            assert!((i32::from(u_mid) - want_u).abs() <= 6, "{subsamp:?} chroma {u_mid}");
        }
    }

    #[test]
    fn dct_scaling_halves_the_picture() {
        let mut d = JpegDecoder::new().expect("handle");
        let mut out = I420::new(2, 2);
        d.decode(&fixture("nodht.jpg"), 2, &mut out).expect("decodes at 1/2");
        assert_eq!((out.width, out.height), (640, 360));
    }

    /// Splits a JPEG into what precedes the first scan, the scans (SOS marker through its
    /// entropy-coded data) and the rest.
    fn split_scans(jpeg: &[u8]) -> (Vec<u8>, Vec<Vec<u8>>, Vec<u8>) {
        let first = jpeg.windows(2).position(|w| w == [0xFF, 0xDA]).expect("a scan");
        let (mut scans, mut at) = (Vec::new(), first);
        while jpeg[at..].starts_with(&[0xFF, 0xDA]) {
            let mut end = at + 2;
            // The scan ends at the next marker that is neither stuffing (FF00) nor a restart.
            while !(jpeg[end] == 0xFF && jpeg[end + 1] != 0 && !(0xD0..=0xD7).contains(&jpeg[end + 1])) || end == at {
                end += 1;
            }
            // Table segments between scans belong to the next scan.
            let mut next = end;
            while jpeg[next] == 0xFF && jpeg[next + 1] != 0xDA && jpeg[next + 1] != 0xD9 {
                next += 2 + usize::from(u16::from_be_bytes([jpeg[next + 2], jpeg[next + 3]]));
            }
            scans.push(jpeg[at..next].to_vec());
            at = next;
        }
        (jpeg[..first].to_vec(), scans, jpeg[at..].to_vec())
    }

    #[test]
    fn a_jpeg_with_endless_scans_is_refused_and_a_normal_progressive_one_decodes() {
        let mut pic = I420::new(256, 256);
        pic.y_mut().iter_mut().enumerate().for_each(|(i, v)| *v = (i % 251) as u8);
        let rgb = turbojpeg::decompress(&encode_i420(&pic, 90).expect("jpeg"), turbojpeg::PixelFormat::RGB).expect("rgb");
        let mut c = turbojpeg::Compressor::new().expect("compressor");
        c.set_progressive(true).expect("progressive");
        let progressive = c.compress_to_vec(rgb.as_deref()).expect("progressive jpeg");
        let (head, scans, tail) = split_scans(&progressive);
        assert!(scans.len() > 3 && scans.len() < 20, "{} scans", scans.len());

        let mut d = JpegDecoder::new().expect("handle");
        let mut out = I420::new(2, 2);
        d.decode(&progressive, 1, &mut out).expect("an ordinary progressive JPEG decodes");
        assert_eq!((out.width, out.height), (256, 256));

        // The first scan repeated 5000 times. Without a limit libjpeg-turbo runs every pass
        // and only then reports the odd progression; the limit stops it at scan 101.
        let mut bomb = head;
        for _ in 0..5000 {
            bomb.extend_from_slice(&scans[0]);
        }
        scans[1..].iter().for_each(|s| bomb.extend_from_slice(s));
        bomb.extend_from_slice(&tail);
        let err = d.decode(&bomb, 1, &mut out).expect_err("refused").to_string();
        assert!(err.contains(&format!("more than {MAX_SCANS} scans")), "refused by the scan limit, not after every pass: {err}");
        d.decode(&progressive, 1, &mut out).expect("the decoder is still usable");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = JpegDecoder::new().expect("handle");
        let mut out = I420::new(2, 2);
        for junk in [&b""[..], b"\xFF\xD8", b"\xFF\xD8\xFF\xE0garbage", &[0u8; 1000]] {
            assert!(d.decode(junk, 1, &mut out).is_err());
        }
        let mut truncated = fixture("nodht.jpg");
        truncated.truncate(500);
        // libjpeg-turbo may return a partial picture with a warning or an error: either way, no panic.
        let _ = d.decode(&truncated, 1, &mut out);
    }
}
