//! Scopecast relay: MJPEG cameras or a test pattern in, one H.264 encode per stream, WebRTC
//! (WHEP) out to every viewer. See ARCHITECTURE.md for the map.

pub mod config;
pub mod http;
pub mod ingest;
pub mod media;
pub mod pipeline;
pub mod relay;
pub mod webrtc;

pub use config::Config;
pub use relay::Relay;
