//! Scopecast relay: cameras (MJPEG, RTSP, other WHEP servers) or a test pattern in, one H.264
//! encode per stream or the camera's own H.264 passed through, WebRTC (WHEP) out to every viewer. See ARCHITECTURE.md for the map.

pub mod adapt;
pub mod config;
pub mod decode;
pub mod focus;
pub mod http;
pub mod ingest;
pub mod media;
pub mod pipeline;
pub mod process;
pub mod publish;
pub mod relay;
pub mod stills;
pub mod stream;
pub mod timing;
pub mod tls;
pub mod track;
pub mod turn;
pub mod webrtc;

pub use config::Config;
pub use relay::Relay;

/// Locks a mutex, recovering from poisoning: every state guarded this way stays consistent on
/// its own (a slot, a registry), so a panic elsewhere must not take the relay down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
