//! Pictures and the transforms between them: JPEG -> I420 -> (scaled) I420 -> H.264.
//!
//! Invariant: nothing here knows about networking, axum or WebRTC; each type is usable from a
//! plain thread, which is where the pipeline runs them.

pub mod encoder;
pub mod h264;
pub mod i420;
pub mod jpeg;
pub mod scale;
pub mod scene;
pub mod simd;
pub mod sky;
pub mod testpattern;

pub use encoder::{EncodedFrame, EncoderSettings, H264Encoder};
pub use i420::I420;
