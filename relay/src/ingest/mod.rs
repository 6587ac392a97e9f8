//! Sources: where a stream's frames come from. Each source pushes frames into its pipeline and
//! knows nothing of WebRTC or HTTP serving.

pub mod health;
pub mod mjpeg;
pub mod testpattern;
