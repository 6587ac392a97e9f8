//! Sources: where a stream's frames come from. Each source pushes frames into its pipeline and
//! knows nothing of WebRTC or HTTP serving.

pub mod health;
pub mod mjpeg;
pub mod testpattern;

/// Wall-clock Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
