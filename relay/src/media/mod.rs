//! Pictures and the transforms between them: JPEG -> I420 -> (scaled) I420 -> H.264 or VP8.
//!
//! Invariant: nothing here knows about networking, axum or WebRTC; each type is usable from a
//! plain thread, which is where the pipeline runs them.

pub mod encoder;
pub mod fmp4;
pub mod h264;
pub mod i420;
pub mod jpeg;
pub mod jpeg_region;
pub mod scale;
pub mod scene;
pub mod sharpness;
pub mod simd;
pub mod sky;
pub mod stretch;
pub mod testpattern;
pub mod vp8;

pub use encoder::{Codec, EncodedFrame, EncoderSettings, H264Encoder, VideoEncoder};
pub use i420::I420;
