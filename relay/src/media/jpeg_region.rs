//! One region of a JPEG decoded without decoding the rest: the focus view's source. For a
//! 256x256 region of a 4K frame this is 1.4x (at the bottom) to 10x (at the top) cheaper than
//! a full decode, 2.4-2.8x in the middle (BENCHMARKS.md): libjpeg-turbo skips the IDCT and colour
//! conversion outside the region's columns, entropy-decodes the rows above it without
//! reconstructing them, and stops after its last row.
//!
//! Written by hand over `turbojpeg-sys` (the bindings the `turbojpeg` crate is built on): the
//! crate has no cropping region, and its lossless crop still decodes every row (measured as
//! slow as a full decode). TurboJPEG crops only into packed pixels, so the region comes out
//! as RGB and is converted to I420 here (JFIF's full-range BT.601, what a JPEG's own YCbCr
//! is, so a focus picture matches the full picture's levels). The unsafe code is limited to
//! this file: one handle, used by one thread at a time.
#![allow(unsafe_code)]

use super::i420::I420;
use super::jpeg::{JpegError, JpegInfo, MAX_SCANS};
use std::ffi::{c_int, CStr};
use turbojpeg_sys as tj;

/// A TurboJPEG decompression handle and a scratch buffer for the region's RGB.
pub struct RegionDecoder {
    handle: Handle,
    rgb: Vec<u8>,
}

struct Handle(tj::tjhandle);

// SAFETY: the handle is only ever used through `&mut RegionDecoder`, by one thread at a time;
// TurboJPEG keeps its state in the handle, none in thread-locals.
unsafe impl Send for Handle {}

impl Handle {
    fn new() -> Result<Self, JpegError> {
        // SAFETY: tj3Init has no preconditions; a null handle is its failure.
        let raw = unsafe { tj::tj3Init(tj::TJINIT_TJINIT_DECOMPRESS as c_int) };
        if raw.is_null() {
            return Err(JpegError::Region("no TurboJPEG handle".into()));
        }
        let handle = Self(raw);
        // SAFETY: a valid handle; an integer parameter.
        unsafe { tj::tj3Set(handle.0, tj::TJPARAM_TJPARAM_SCANLIMIT as c_int, MAX_SCANS as c_int) };
        Ok(handle)
    }

    /// The handle's last error, as a result.
    fn check(&self, status: c_int) -> Result<(), JpegError> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: tj3GetErrorStr returns a NUL-terminated string owned by the handle, valid
        // until the next call on it; it is copied at once.
        let message = unsafe { CStr::from_ptr(tj::tj3GetErrorStr(self.0)) }.to_string_lossy().trim().to_owned();
        Err(JpegError::Region(message))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: made by tj3Init, destroyed once.
        unsafe { tj::tj3Destroy(self.0) };
    }
}

impl RegionDecoder {
    pub fn new() -> Result<Self, JpegError> {
        Ok(Self { handle: Handle::new()?, rgb: Vec::new() })
    }

    /// Decodes the `w x h` rectangle at (`x`, `y`) of the JPEG (all four even, inside the
    /// picture) into `out`, reshaped to `w x h`. `info` is the JPEG's, from
    /// [`JpegDecoder::info`](super::jpeg::JpegDecoder::info), which checks its size.
    pub fn decode(&mut self, jpeg: &[u8], info: &JpegInfo, region: (usize, usize, usize, usize), out: &mut I420) -> Result<(), JpegError> {
        let result = self.decode_region(jpeg, info, region, out);
        self.recover(result)
    }

    /// After an error the handle may be left mid-decode (see `jpeg.rs`): a new one.
    fn recover<T>(&mut self, result: Result<T, JpegError>) -> Result<T, JpegError> {
        if result.is_err() {
            if let Ok(handle) = Handle::new() {
                self.handle = handle;
            }
        }
        result
    }

    fn decode_region(&mut self, jpeg: &[u8], info: &JpegInfo, (x, y, w, h): (usize, usize, usize, usize), out: &mut I420) -> Result<(), JpegError> {
        let (width, height) = (info.width, info.height);
        if w < 2 || h < 2 || x % 2 != 0 || y % 2 != 0 || w % 2 != 0 || h % 2 != 0 || x + w > width || y + h > height {
            return Err(JpegError::Region(format!("{w}x{h} at {x},{y} is not an even region of a {width}x{height} picture")));
        }
        // SAFETY: a valid handle; the pointer and length describe `jpeg`, which TurboJPEG
        // only reads. (The cropping region needs the header read on this handle.)
        let status = unsafe { tj::tj3DecompressHeader(self.handle.0, jpeg.as_ptr(), jpeg.len() as _) };
        self.handle.check(status)?;
        // The decoded columns start on an iMCU boundary at or left of the region.
        let left = x - x % info.subsamp.mcu_width();
        let cols = x + w - left;
        let region = tj::tjregion { x: left as c_int, y: y as c_int, w: cols as c_int, h: h as c_int };
        // SAFETY: a valid handle whose header was just read (the call's precondition).
        let status = unsafe { tj::tj3SetCroppingRegion(self.handle.0, region) };
        self.handle.check(status)?;
        self.rgb.resize(cols * h * 3, 0);
        // SAFETY: `rgb` holds `cols * 3` bytes per row (the pitch) for `h` rows: exactly the
        // cropping region in RGB, all TurboJPEG writes.
        let status = unsafe {
            tj::tj3Decompress8(self.handle.0, jpeg.as_ptr(), jpeg.len() as _, self.rgb.as_mut_ptr(), (cols * 3) as c_int, tj::TJPF_TJPF_RGB as c_int)
        };
        self.handle.check(status)?;
        rgb_to_i420(&self.rgb, cols * 3, x - left, w, h, out);
        Ok(())
    }
}

/// JFIF's full-range BT.601 (ITU-T T.871): what a JPEG's YCbCr is.
fn luma(r: i32, g: i32, b: i32) -> u8 {
    ((19_595 * r + 38_470 * g + 7_471 * b + 32_768) >> 16) as u8
}

fn chroma(r: i32, g: i32, b: i32) -> (u8, u8) {
    let cb = (-11_059 * r - 21_709 * g + 32_768 * b + (128 << 16) + 32_768) >> 16;
    let cr = (32_768 * r - 27_439 * g - 5_329 * b + (128 << 16) + 32_768) >> 16;
    (cb.clamp(0, 255) as u8, cr.clamp(0, 255) as u8)
}

/// The `w x h` (even) pixels at column `x0` of packed RGB rows into `out`; chroma is the
/// average of each 2x2 block's colour.
fn rgb_to_i420(rgb: &[u8], pitch: usize, x0: usize, w: usize, h: usize, out: &mut I420) {
    out.reshape(w, h);
    let cw = w / 2;
    let (yp, up, vp) = out.planes_mut();
    for row in 0..h {
        let src = &rgb[row * pitch + x0 * 3..row * pitch + (x0 + w) * 3];
        for (o, px) in yp[row * w..(row + 1) * w].iter_mut().zip(src.chunks_exact(3)) {
            *o = luma(px[0].into(), px[1].into(), px[2].into());
        }
    }
    for cy in 0..h / 2 {
        let top = &rgb[2 * cy * pitch + x0 * 3..];
        let bottom = &rgb[(2 * cy + 1) * pitch + x0 * 3..];
        for cx in 0..cw {
            let sum = |c: usize| {
                let i = 6 * cx + c;
                i32::from(top[i]) + i32::from(top[i + 3]) + i32::from(bottom[i]) + i32::from(bottom[i + 3])
            };
            let (cb, cr) = chroma((sum(0) + 2) / 4, (sum(1) + 2) / 4, (sum(2) + 2) / 4);
            up[cy * cw + cx] = cb;
            vp[cy * cw + cx] = cr;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::jpeg::{encode_i420, JpegDecoder};

    /// A detailed, noisy picture (not flat: a region must land on the right pixels).
    fn picture(w: usize, h: usize) -> I420 {
        let mut pic = I420::new(w, h);
        let (y, u, v) = pic.planes_mut();
        let noise = |i: usize| ((i.wrapping_mul(2_654_435_761) >> 13) & 31) as i64;
        for (i, p) in y.iter_mut().enumerate() {
            let (px, py) = ((i % w) as i64, (i / w) as i64);
            *p = (((px * 7 + py * 3) % 180) + 20 + noise(i)).clamp(0, 255) as u8;
        }
        // Gentle colour, as a camera's RGB gives: strong chroma on dark or bright luma is out
        // of RGB's gamut, and would not come back the same through RGB.
        for (i, p) in u.iter_mut().enumerate() {
            *p = (112 + (i % (w / 2)) * 32 / (w / 2)) as u8;
        }
        for (i, p) in v.iter_mut().enumerate() {
            *p = (112 + (i / (w / 2)) * 32 / (h / 2)) as u8;
        }
        pic
    }

    fn mean_abs_diff(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(&p, &q)| f64::from(p.abs_diff(q))).sum::<f64>() / a.len() as f64
    }

    #[test]
    fn a_region_decodes_as_the_same_pixels_of_the_full_picture() {
        let jpeg = encode_i420(&picture(1280, 720), 90).expect("jpeg");
        let mut full = I420::new(2, 2);
        let mut whole = JpegDecoder::new().expect("decoder");
        whole.decode(&jpeg, 1, &mut full).expect("full decode");
        let info = whole.info(&jpeg).expect("header");
        let mut d = RegionDecoder::new().expect("handle");
        // Left edges on and off the 16-pixel iMCU grid, and the picture's corners.
        for region in [(512, 232, 256, 256), (100, 50, 98, 64), (0, 0, 64, 32), (1280 - 66, 720 - 34, 66, 34), (0, 0, 1280, 720)] {
            let mut part = I420::new(2, 2);
            d.decode(&jpeg, &info, region, &mut part).unwrap_or_else(|e| panic!("{region:?}: {e}"));
            let mut expected = I420::new(2, 2);
            expected.crop_from(&full, region);
            assert_eq!((part.width, part.height), (region.2, region.3));
            // Through RGB and back: within a level or two (upsampled then re-averaged chroma).
            let (dy, du, dv) = (mean_abs_diff(part.y(), expected.y()), mean_abs_diff(part.u(), expected.u()), mean_abs_diff(part.v(), expected.v()));
            assert!(dy < 1.0 && du < 2.0 && dv < 2.0, "{region:?}: mean differences Y {dy:.2}, U {du:.2}, V {dv:.2}");
        }
    }

    #[test]
    fn bad_regions_and_garbage_are_errors_and_the_decoder_goes_on() {
        let jpeg = encode_i420(&picture(320, 240), 85).expect("jpeg");
        let info = JpegDecoder::new().expect("decoder").info(&jpeg).expect("header");
        let mut d = RegionDecoder::new().expect("handle");
        let mut out = I420::new(2, 2);
        for bad in [(300, 0, 64, 64), (0, 0, 33, 32), (1, 0, 32, 32), (0, 220, 64, 64)] {
            assert!(matches!(d.decode(&jpeg, &info, bad, &mut out), Err(JpegError::Region(_))), "{bad:?}");
        }
        let mut truncated = jpeg[..jpeg.len() / 3].to_vec();
        truncated.extend_from_slice(&[0xff, 0xd9]);
        let noise: Vec<u8> = [0xff, 0xd8].into_iter().chain((0..5_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)).collect();
        // Garbage after a good header was read (`info` is the good frame's): the handle's own
        // header read refuses it.
        assert!(d.decode(&noise, &info, (0, 0, 64, 64), &mut out).is_err());
        for garbage in [&noise, &truncated] {
            // A truncated JPEG may decode (libjpeg pads the missing rows): either way, no panic,
            // and the next good frame decodes.
            let _ = d.decode(garbage, &info, (0, 0, 64, 64), &mut out);
            d.decode(&jpeg, &info, (32, 32, 64, 64), &mut out).expect("a good frame after garbage");
            assert_eq!((out.width, out.height), (64, 64));
        }
    }
}
