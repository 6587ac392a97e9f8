//! Wire types spoken by the Scopecast relay and its players.
//!
//! Invariant: this crate builds for `wasm32-unknown-unknown` and the host, and depends on
//! nothing that assumes an async runtime or a browser (no tokio, no web-sys). If a type here is
//! serializable, it is part of a boundary: change it with both sides in mind. The MJPEG
//! multipart parser lives here too: the relay reads cameras with it, the player its fallback.
//! So does the H.264 rung's WebSocket framing (h264_ws). So do the SDP checks (feature `sdp`), so that fuzzing them does not build the relay.

pub mod api;
pub mod h264_ws;
pub mod headers;
pub mod multipart;
pub mod problem;
#[cfg(feature = "sdp")]
pub mod sdp;
pub mod timecode;

pub use api::{OfflinePolicy, SourceKind, SourceState, StateEvent, StreamInfo, StreamList, Viewers};
pub use problem::Problem;
