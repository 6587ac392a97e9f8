//! JSON returned by the relay's `/api/v1` routes.

use serde::{Deserialize, Serialize};

/// What feeds a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The relay's built-in test pattern.
    TestPattern,
    /// An MJPEG camera pulled over HTTP(S).
    Mjpeg,
}

/// One stream as the relay describes it to players and operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's name, the first path segment of its URLs.
    pub name: String,
    pub source: SourceKind,
    /// Source URL with any credentials removed; `None` for the test pattern.
    pub source_url: Option<String>,
    /// Size of the encoded video, once known.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Configured frame rate of the test pattern or cap on a camera, in frames per second.
    pub max_fps: Option<f64>,
    /// WebRTC viewers attached right now.
    pub viewers: u32,
    /// Path of the WHEP endpoint, relative to the relay's root.
    pub whep_url: String,
    /// Frames from the source so far.
    pub frames_in: u64,
    /// Frames encoded so far.
    pub frames_encoded: u64,
    /// Frames dropped because the encoder was busy or a part was unusable.
    pub frames_dropped: u64,
}

/// `GET /api/v1/streams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
}
