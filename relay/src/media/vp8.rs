//! VP8 encoding with libvpx, for browsers that offer no H.264 (Debian's Firefox ESR on a
//! machine without internet cannot fetch its OpenH264 plugin). Realtime deadline, constant
//! bitrate, no look-ahead and no dropped frames, keyframes on request: the same contract as
//! `encoder.rs`'s H.264, on the caller's thread.
//!
//! Written by hand over `env-libvpx-sys` (bindings to the system's libvpx, Debian's
//! `libvpx-dev`): the one wrapper crate, vpx-encode, can neither force a keyframe (a viewer's
//! PLI, a joiner) nor set a realtime speed, and Shiguredo's downloads libvpx at build time.
//! The unsafe code is limited to this file: one context, used by one thread at a time.
#![allow(unsafe_code)]

use super::encoder::{EncodedFrame, EncoderSettings};
use super::i420::I420;
use bytes::Bytes;
use std::mem::MaybeUninit;
use std::time::Instant;
use vpx_sys as vpx;

#[derive(Debug, thiserror::Error)]
pub enum Vp8Error {
    #[error("VP8 encoder: {0}")]
    Codec(String),
    #[error("VP8 encoder: a {0}x{1} picture (VP8 takes at most 16383x16383)")]
    Size(usize, usize),
}

/// libvpx's speed for the realtime deadline: -6 is what browsers use for a desktop camera;
/// lower is better looking and slower. Measured in BENCHMARKS.md ("VP8 beside H.264").
const CPU_USED: i32 = -6;

pub struct Vp8Encoder {
    settings: EncoderSettings,
    /// Made for the first picture, and again when the size changes (libvpx's VP8 cannot grow
    /// a context past its first size).
    context: Option<Box<Context>>,
    force_keyframe: bool,
    /// Presentation times are milliseconds since the first frame, strictly increasing.
    started: Option<Instant>,
    last_pts: i64,
    out: Vec<u8>,
}

/// The libvpx context and the configuration it points to, boxed so neither moves.
struct Context {
    ctx: vpx::vpx_codec_ctx_t,
    cfg: vpx::vpx_codec_enc_cfg_t,
    width: usize,
    height: usize,
}

// SAFETY: the context is only ever used through `&mut Vp8Encoder`, by one thread at a time;
// libvpx keeps no thread-local state for it.
unsafe impl Send for Context {}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: initialized in `Context::new` (a failed init never builds a Context).
        unsafe { vpx::vpx_codec_destroy(&mut self.ctx) };
    }
}

fn check(ctx: Option<&mut vpx::vpx_codec_ctx_t>, err: vpx::vpx_codec_err_t, what: &str) -> Result<(), Vp8Error> {
    if err == vpx::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: libvpx returns static strings for errors and a context's last error detail.
    let text = unsafe {
        let detail = ctx.map(|c| vpx::vpx_codec_error_detail(c)).filter(|p| !p.is_null());
        let base = std::ffi::CStr::from_ptr(vpx::vpx_codec_err_to_string(err)).to_string_lossy().into_owned();
        match detail {
            Some(d) => format!("{base}: {}", std::ffi::CStr::from_ptr(d).to_string_lossy()),
            None => base,
        }
    };
    Err(Vp8Error::Codec(format!("{what}: {text}")))
}

impl Context {
    fn new(settings: &EncoderSettings, width: usize, height: usize) -> Result<Box<Self>, Vp8Error> {
        if width == 0 || height == 0 || width > 16383 || height > 16383 {
            return Err(Vp8Error::Size(width, height));
        }
        // SAFETY: zeroed plain C structs, filled in by libvpx before use.
        let mut me = Box::new(unsafe { Context { ctx: MaybeUninit::zeroed().assume_init(), cfg: MaybeUninit::zeroed().assume_init(), width, height } });
        // SAFETY: the interface is a static; `cfg` is a valid struct to fill.
        let iface = unsafe { vpx::vpx_codec_vp8_cx() };
        check(None, unsafe { vpx::vpx_codec_enc_config_default(iface, &mut me.cfg, 0) }, "default configuration")?;
        let cfg = &mut me.cfg;
        cfg.g_w = width as u32;
        cfg.g_h = height as u32;
        cfg.g_timebase = vpx::vpx_rational { num: 1, den: 1000 };
        // One thread up to 1080p: a second costs 15-25 % more CPU per frame (measured at 720p,
        // vp8-bench) for a frame that one thread encodes well inside its interval. Above 1080p
        // one thread no longer keeps up with 25 fps.
        cfg.g_threads = if width * height > 1920 * 1080 { 2 } else { 1 };
        cfg.g_lag_in_frames = 0;
        // Each frame decodable after a loss as far as VP8 allows (no probability carry-over).
        cfg.g_error_resilient = vpx::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.g_pass = vpx::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.rc_end_usage = vpx::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = (settings.bitrate_bps / 1000).max(30);
        // Never skip a frame to meet the rate: a viewer would be left on a stale picture.
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        cfg.rc_min_quantizer = 2;
        // The whole range: a noisy sky must not blow through a slow viewer's bitrate.
        cfg.rc_max_quantizer = 63;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        // Keyframes come on request (joiners, PLI) and after gaps; periodic ones only if set.
        if settings.idr_interval_frames > 0 {
            cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_AUTO;
            cfg.kf_min_dist = 0;
            cfg.kf_max_dist = settings.idr_interval_frames;
        } else {
            cfg.kf_mode = vpx::vpx_kf_mode::VPX_KF_DISABLED;
        }
        let me_ptr: *mut Context = &mut *me;
        // SAFETY: `ctx` and `cfg` live in the box, which outlives the context (Drop destroys it).
        unsafe {
            check(None, vpx::vpx_codec_enc_init_ver(&mut (*me_ptr).ctx, iface, &(*me_ptr).cfg, 0, vpx::VPX_ENCODER_ABI_VERSION as i32), "init")?;
        }
        let controls: [(vpx::vp8e_enc_control_id, i32); 4] = [
            (vpx::vp8e_enc_control_id::VP8E_SET_CPUUSED, CPU_USED),
            // Skip encoding blocks that did not change: a still sky costs nothing.
            (vpx::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD, 1),
            // No denoising: a telescope's faint stars look like noise to it.
            (vpx::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY, 0),
            // A keyframe may take at most 3x an average frame, or it arrives late on a slow link.
            (vpx::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT, 300),
        ];
        for (id, value) in controls {
            // SAFETY: an initialized context; each of these controls takes one int.
            let err = unsafe { vpx::vpx_codec_control_(&mut me.ctx, id as i32, value) };
            check(Some(&mut me.ctx), err, "control")?;
        }
        Ok(me)
    }
}

impl Vp8Encoder {
    pub fn new(settings: EncoderSettings) -> Self {
        Self { settings, context: None, force_keyframe: true, started: None, last_pts: -1, out: Vec::new() }
    }

    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Makes the next encoded frame a keyframe.
    pub fn force_keyframe(&mut self) {
        self.force_keyframe = true;
    }

    /// Encodes one picture, captured at `at`: rate control divides the bitrate by the time
    /// between frames. `None` when libvpx produced no frame for it.
    pub fn encode(&mut self, pic: &I420, at: Instant) -> Result<Option<EncodedFrame>, Vp8Error> {
        let started = *self.started.get_or_insert(at);
        self.encode_at(pic, at.saturating_duration_since(started).as_millis() as i64)
    }

    fn encode_at(&mut self, pic: &I420, ms: i64) -> Result<Option<EncodedFrame>, Vp8Error> {
        if self.context.as_ref().is_none_or(|c| (c.width, c.height) != (pic.width, pic.height)) {
            self.context = None;
            self.context = Some(Context::new(&self.settings, pic.width, pic.height)?);
            self.force_keyframe = true;
        }
        let Some(context) = self.context.as_mut() else { return Ok(None) };
        let pts = ms.max(self.last_pts + 1);
        let duration = (1000.0 / self.settings.fps.max(0.1)) as u64;
        self.last_pts = pts;

        // SAFETY: a zeroed vpx_image_t is filled by vpx_img_wrap; the planes point into `pic`,
        // which outlives the encode call (libvpx copies what it keeps into its own buffers and
        // never writes to the input).
        let mut image: vpx::vpx_image_t = unsafe { MaybeUninit::zeroed().assume_init() };
        let data = pic.as_bytes().as_ptr() as *mut u8;
        let wrapped = unsafe { vpx::vpx_img_wrap(&mut image, vpx::vpx_img_fmt::VPX_IMG_FMT_I420, pic.width as u32, pic.height as u32, 1, data) };
        if wrapped.is_null() {
            return Err(Vp8Error::Codec("cannot wrap the picture".into()));
        }
        // Our planes are tightly packed at the chroma size rounded up, whatever libvpx assumed.
        image.planes[0] = pic.y().as_ptr() as *mut u8;
        image.planes[1] = pic.u().as_ptr() as *mut u8;
        image.planes[2] = pic.v().as_ptr() as *mut u8;
        image.stride[0] = pic.width as i32;
        image.stride[1] = pic.chroma_width() as i32;
        image.stride[2] = pic.chroma_width() as i32;
        let flags = if std::mem::take(&mut self.force_keyframe) { vpx::VPX_EFLAG_FORCE_KF as vpx::vpx_enc_frame_flags_t } else { 0 };
        // SAFETY: an initialized context and a wrapped image over live memory.
        let err = unsafe { vpx::vpx_codec_encode(&mut context.ctx, &image, pts, duration as _, flags, vpx::VPX_DL_REALTIME as _) };
        check(Some(&mut context.ctx), err, "encode")?;

        self.out.clear();
        let mut keyframe = false;
        let mut iter: vpx::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: iterating the context's output; each packet is valid until the next
            // encode call, and its bytes are copied out at once.
            let packet = unsafe { vpx::vpx_codec_get_cx_data(&mut context.ctx, &mut iter) };
            if packet.is_null() {
                break;
            }
            let packet = unsafe { &*packet };
            if packet.kind != vpx::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            let frame = unsafe { packet.data.frame };
            if frame.buf.is_null() || frame.sz == 0 {
                continue;
            }
            let bytes = unsafe { std::slice::from_raw_parts(frame.buf as *const u8, frame.sz as usize) };
            self.out.extend_from_slice(bytes);
            keyframe |= frame.flags & vpx::VPX_FRAME_IS_KEY != 0;
        }
        if self.out.is_empty() {
            return Ok(None);
        }
        Ok(Some(EncodedFrame { bitstream: Bytes::copy_from_slice(&self.out), keyframe, width: pic.width, height: pic.height }))
    }
}

/// Whether a VP8 frame (RFC 6386, 9.1) is a keyframe: bit 0 of its first byte is 0.
pub fn is_keyframe(frame: &[u8]) -> bool {
    frame.first().is_some_and(|b| b & 1 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> EncoderSettings {
        EncoderSettings { bitrate_bps: 500_000, fps: 25.0, idr_interval_frames: 0 }
    }

    fn moving(pic: &mut I420, i: usize) {
        let w = pic.width;
        pic.y_mut().iter_mut().enumerate().for_each(|(j, v)| *v = (((j % w) + (j / w) * 3 + i * 5) % 220) as u8 + 16);
    }

    #[test]
    fn first_and_forced_frames_are_keyframes_with_the_size_in_their_header() {
        let mut enc = Vp8Encoder::new(settings());
        let mut pic = I420::new(320, 240);
        let mut kinds = Vec::new();
        for i in 0..6 {
            moving(&mut pic, i);
            if i == 4 {
                enc.force_keyframe();
            }
            let f = enc.encode_at(&pic, i as i64 * 40).expect("encodes").expect("a frame per picture: no look-ahead, none dropped");
            assert_eq!(f.keyframe, is_keyframe(&f.bitstream), "the flag agrees with the frame tag");
            if f.keyframe {
                // RFC 6386 9.1: start code 9d 01 2a, then 14-bit width and height.
                assert_eq!(&f.bitstream[3..6], &[0x9d, 0x01, 0x2a]);
                let w = u16::from_le_bytes([f.bitstream[6], f.bitstream[7]]) & 0x3fff;
                let h = u16::from_le_bytes([f.bitstream[8], f.bitstream[9]]) & 0x3fff;
                assert_eq!((w, h), (320, 240));
            }
            kinds.push(f.keyframe);
        }
        assert_eq!(kinds, vec![true, false, false, false, true, false]);
    }

    #[test]
    fn a_new_size_restarts_with_a_keyframe_of_that_size() {
        let mut enc = Vp8Encoder::new(settings());
        let mut small = I420::new(160, 120);
        moving(&mut small, 0);
        assert!(enc.encode_at(&small, 0).expect("encodes").expect("frame").keyframe);
        assert!(!enc.encode_at(&small, 40).expect("encodes").expect("frame").keyframe);
        let mut big = I420::new(640, 360);
        moving(&mut big, 1);
        let f = enc.encode_at(&big, 80).expect("encodes").expect("frame");
        assert!(f.keyframe);
        assert_eq!((f.width, f.height), (640, 360));
    }

    #[test]
    fn the_rate_is_held_near_the_target() {
        let mut enc = Vp8Encoder::new(EncoderSettings { bitrate_bps: 300_000, fps: 25.0, idr_interval_frames: 0 });
        let mut pic = I420::new(640, 360);
        let mut bytes = 0usize;
        let mut state = 1u32;
        for i in 0..100i64 {
            // A moving picture under sensor noise, which no encoder compresses well at this
            // size and rate: the rate control has to work.
            moving(&mut pic, i as usize);
            for v in pic.y_mut().iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *v = v.saturating_add((state % 24) as u8);
            }
            let f = enc.encode_at(&pic, i * 40).expect("encodes").expect("frame");
            if i >= 25 {
                bytes += f.bitstream.len();
            }
        }
        let kbps = bytes as f64 * 8.0 / (75.0 / 25.0) / 1000.0;
        assert!((100.0..300.0 * 1.6).contains(&kbps), "{kbps:.0} kbit/s for a 300 kbit/s target");
    }

    #[test]
    fn oversized_pictures_are_an_error_not_a_crash() {
        let mut enc = Vp8Encoder::new(settings());
        assert!(matches!(enc.encode(&I420::new(16384, 2), Instant::now()), Err(Vp8Error::Size(16384, 2))));
    }
}
