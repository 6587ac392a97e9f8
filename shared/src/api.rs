//! JSON returned by the relay's `/api/v1` routes and carried by its event streams.

use serde::{Deserialize, Serialize};

/// What feeds a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// The relay's built-in test pattern.
    TestPattern,
    /// An MJPEG camera pulled over HTTP(S).
    Mjpeg,
    /// Another WHEP server's stream (`whep://`, `wheps://`): relay chaining.
    Whep,
    /// An RTSP camera (`rtsp://`): H.264 passed through when browsers can play it as it is.
    Rtsp,
    /// A command's standard output (`exec:`): MJPEG or H.264.
    Exec,
    /// Pushed by a WHIP publisher (OBS, GStreamer, FFmpeg, a browser) to `/{stream}/whip`.
    Whip,
}

/// How a stream's WebRTC video is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoPath {
    /// Pictures decoded and encoded to H.264 here, once for every viewer.
    #[default]
    Encoded,
    /// The source's own H.264, passed through without decoding: no encoder runs.
    Passthrough,
    /// The source's H.264 decoded here and encoded again (B-frames, a profile browsers do not
    /// take, or configured so).
    Transcoded,
}

/// Where a stream's source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// An on-demand source with nobody watching: not connected, by design.
    Idle,
    /// Connecting, or connected and waiting for the first frame.
    Connecting,
    /// Frames are arriving.
    Live,
    /// The source failed or went silent and the relay is retrying; `last_error` says why.
    /// Viewers stay connected and keep the last picture.
    Offline,
}

/// What a stream does when a WHEP viewer arrives while its source is not live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfflinePolicy {
    /// Accept the session; the picture comes when the source does.
    #[default]
    Wait,
    /// Answer 409 Conflict with Retry-After (after waiting briefly for an on-demand source).
    Reject,
}

/// Consumers of a stream, by how they watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Viewers {
    /// WHEP sessions (from the POST until the session ends).
    pub webrtc: u32,
    /// Clients of `/{stream}/mjpeg`.
    pub mjpeg: u32,
    /// Snapshot requests waiting for a picture right now.
    pub snapshot: u32,
    /// WHIP publish targets (an SFU or CDN ingest): they keep the stream running like a viewer.
    #[serde(default)]
    pub publish: u32,
    /// Players on the H.264 rung (`/{stream}/h264`, a WebSocket): networks without UDP.
    #[serde(default)]
    pub h264: u32,
    /// The stills recorder (new frames kept as files): it keeps the stream running too.
    #[serde(default)]
    pub stills: u32,
}

impl Viewers {
    pub fn total(&self) -> u32 {
        self.webrtc + self.mjpeg + self.snapshot + self.publish + self.h264 + self.stills
    }

    /// Consumers of whole pictures (JPEGs): what a passed-through stream decodes for.
    pub fn pictures(&self) -> u32 {
        self.mjpeg + self.snapshot + self.stills
    }
}

/// One kept still: its JPEG (the camera's original) and this sidecar, side by side on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StillFile {
    /// The JPEG's file name (`{capture ms}-{n}.jpg`); the sidecar is the same with `.json`.
    pub name: String,
    pub stream: String,
    /// Capture time (Unix ms).
    pub captured_ms: u64,
    pub width: u32,
    pub height: u32,
    /// The JPEG's size.
    pub bytes: u64,
    /// The stream's stretch when it was kept (the file itself is not stretched).
    pub stretch: Stretch,
    #[serde(default)]
    pub stretch_levels: Option<StretchLevels>,
}

/// `GET /api/v1/streams/{name}/stills`: newest first, with where to fetch each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StillList {
    pub stills: Vec<StillEntry>,
    /// What the directory holds now, and its cap.
    pub total_bytes: u64,
    pub max_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StillEntry {
    #[serde(flatten)]
    pub file: StillFile,
    /// Path of the JPEG relative to the relay's root.
    pub url: String,
}

/// Where a WHIP publish target stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishState {
    /// Offering: gathering candidates, POST sent, or ICE and DTLS under way.
    Connecting,
    /// Connected: the target receives the stream.
    Live,
    /// The last attempt failed or the connection dropped; the next one waits for the backoff.
    /// `last_error` says why.
    Retrying,
    /// Stopped (shutdown, or the target removed); its resource was deleted.
    Stopped,
}

/// One WHIP publish target of a stream, as the status API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishInfo {
    /// The target's name from the configuration (its host when none was given).
    pub name: String,
    /// Scheme, host and port only: a WHIP URL's path may hold its secret (Cloudflare Stream).
    pub endpoint: String,
    pub state: PublishState,
    /// When `state` was entered (Unix ms).
    pub state_since_ms: u64,
    /// Why the last attempt or session ended, if one has (kept after recovery).
    pub last_error: Option<String>,
    /// POSTs made (each a new publish session offered).
    pub attempts: u64,
    /// Sessions that connected.
    pub connects: u64,
    /// Frames sent over all sessions.
    pub frames_sent: u64,
    /// PLI and FIR the target sent (each a throttled keyframe request to the encoder).
    pub keyframe_requests: u64,
}

/// One stream as the relay describes it to players and operators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The stream's name, the first path segment of its URLs.
    pub name: String,
    pub source: SourceKind,
    /// Source URL with any credentials removed; `None` for the test pattern.
    pub source_url: Option<String>,
    pub state: SourceState,
    /// Why the source last failed, if it has (kept after recovery, for operators).
    pub last_error: Option<String>,
    /// When `state` was entered (Unix ms).
    pub state_since_ms: u64,
    /// Whether the source is pulled only while someone watches.
    pub on_demand: bool,
    pub offline_policy: OfflinePolicy,
    /// Encoded here, passed through, or transcoded.
    #[serde(default)]
    pub video: VideoPath,
    /// Why `video` is what it is, in words ("Constrained Baseline without B-frames: passed
    /// through").
    #[serde(default)]
    pub video_reason: Option<String>,
    /// What an encoded source sends, once known ("H.264 High, level 3.1, 1920x1080").
    #[serde(default)]
    pub source_codec: Option<String>,
    /// How an RTSP source's packets come: "tcp" (interleaved) or "udp".
    #[serde(default)]
    pub source_transport: Option<String>,
    /// Size of the encoded video, once known.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Configured frame rate of the test pattern, or cap on a camera.
    pub max_fps: Option<f64>,
    /// Frames per second from the source and out of the encoder, over the last seconds.
    pub fps_in: f64,
    pub fps_out: f64,
    /// Encoded video bitrate over the last seconds, bits per second.
    pub bitrate_bps: u64,
    pub viewers: Viewers,
    /// Frames from the source so far.
    pub frames_in: u64,
    /// Frames encoded so far (repeats that keep slow streams alive included).
    pub frames_encoded: u64,
    /// Frames dropped because the encoder was busy or over the frame-rate cap.
    pub frames_dropped: u64,
    /// Source frames that could not be used (corrupt, oversized or not JPEG).
    pub frames_rejected: u64,
    /// Capture time of the newest source frame (Unix ms).
    pub last_frame_ms: Option<u64>,
    /// Paths relative to the relay's root.
    pub whep_url: String,
    pub mjpeg_url: String,
    pub snapshot_url: String,
    pub events_url: String,
    /// Where the relay's part of the latency goes, over the last frames sent; `None` until
    /// frames have gone out to a WebRTC viewer.
    #[serde(default)]
    pub latency: Option<RelayLatency>,
    /// WHIP publish targets this stream is sent to.
    #[serde(default)]
    pub publish: Vec<PublishInfo>,
    /// Per-frame times behind `latency` ([`FrameTimings`]).
    #[serde(default)]
    pub timings_url: String,
    /// The encodings viewers are moved between, top ("full", the stream's own) first.
    /// (The player reads these two with the browser's JSON.parse where it needs them: a serde
    /// deserializer for them would cost its wasm several KB of its 160 KB budget.)
    #[serde(default)]
    #[cfg_attr(target_arch = "wasm32", serde(skip_deserializing))]
    pub renditions: Vec<RenditionInfo>,
    /// Each viewer's rendition, and why: WHEP sessions, then the H.264 rung's players.
    #[serde(default)]
    #[cfg_attr(target_arch = "wasm32", serde(skip_deserializing))]
    pub sessions: Vec<ViewerRendition>,
    /// How the picture is stretched before encoding (`PATCH` the stream to change it).
    #[serde(default)]
    #[cfg_attr(target_arch = "wasm32", serde(skip_deserializing))]
    pub stretch: Stretch,
    /// The levels the encoder applied to the last picture (for `auto`, what it found);
    /// `None` with stretch off or before a picture was encoded.
    #[serde(default)]
    #[cfg_attr(target_arch = "wasm32", serde(skip_deserializing))]
    pub stretch_levels: Option<StretchLevels>,
    /// The focus region, when one is set (`/api/v1/streams/{name}/focus`).
    #[serde(default)]
    #[cfg_attr(target_arch = "wasm32", serde(skip_deserializing))]
    pub focus: Option<FocusRegion>,
}

/// A screen transfer function on luma, as PixInsight's STF: values under `black` go black,
/// over `white` white, and the rest through a midtones transfer function (`midtones` 0.5 is
/// linear; smaller brightens). All three are fractions of full scale.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StretchLevels {
    pub black: f32,
    pub white: f32,
    pub midtones: f32,
}

impl StretchLevels {
    /// Leaves the picture as it is.
    pub const IDENTITY: Self = Self { black: 0.0, white: 1.0, midtones: 0.5 };

    /// Why these levels cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        let in_unit = |v: f32| (0.0..=1.0).contains(&v);
        if !in_unit(self.black) || !in_unit(self.white) || self.black >= self.white {
            return Err(format!("black ({}) and white ({}) must satisfy 0 <= black < white <= 1", self.black, self.white));
        }
        if !(self.midtones > 0.0 && self.midtones < 1.0) {
            return Err(format!("midtones ({}) must be between 0 and 1, exclusive (0.5 is linear)", self.midtones));
        }
        Ok(())
    }
}

/// Median brightness `auto` aims for, as PixInsight's AutoSTF.
pub const STRETCH_AUTO_TARGET: f32 = 0.25;
/// How far under the median `auto` puts the black point, in normalized MADs (AutoSTF's 2.8).
pub const STRETCH_AUTO_CLIP: f32 = 2.8;

/// A stream's stretch: applied to each decoded picture before encoding, for every viewer.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum Stretch {
    /// The camera's picture as it is.
    #[default]
    Off,
    /// Levels that follow the picture: black point `clip` normalized MADs under the median,
    /// and the median brought to `target` brightness; smoothed over frames.
    Auto {
        #[serde(default = "auto_target")]
        target: f32,
        #[serde(default = "auto_clip")]
        clip: f32,
    },
    /// Fixed levels.
    Manual { black: f32, white: f32, midtones: f32 },
}

fn auto_target() -> f32 {
    STRETCH_AUTO_TARGET
}

fn auto_clip() -> f32 {
    STRETCH_AUTO_CLIP
}

impl Stretch {
    /// `auto` with AutoSTF's defaults.
    pub const AUTO: Self = Self::Auto { target: STRETCH_AUTO_TARGET, clip: STRETCH_AUTO_CLIP };

    /// Why this stretch cannot be used, if it cannot.
    pub fn check(&self) -> Result<(), String> {
        match *self {
            Self::Off => Ok(()),
            Self::Auto { target, clip } => {
                if !(target > 0.0 && target < 1.0) {
                    return Err(format!("target ({target}) must be between 0 and 1, exclusive"));
                }
                if !(0.0..=10.0).contains(&clip) {
                    return Err(format!("clip ({clip}) must be between 0 and 10 MADs"));
                }
                Ok(())
            }
            Self::Manual { black, white, midtones } => StretchLevels { black, white, midtones }.check(),
        }
    }
}

/// How sharp a focus region is, per frame (see the relay's `media/sharpness.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sharpness {
    /// Median half-flux radius of the stars found, in pixels of the camera; smaller is
    /// sharper. `None` without stars.
    pub hfr_px: Option<f32>,
    /// Stars measured.
    pub stars: u32,
    /// Mean squared luma gradient; larger is sharper. For targets without stars; compares
    /// frames of one target only.
    pub gradient: f32,
    /// Capture time of the frame measured (Unix ms).
    pub captured_ms: u64,
}

/// A focus region, in the camera's pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FocusRegion {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// `PUT /api/v1/streams/{name}/focus`: a region, or a point to centre a default-sized one on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FocusRequest {
    Region(FocusRegion),
    Point { x: u32, y: u32 },
}

/// `GET /api/v1/streams/{name}/focus`, and the `focus` event on the stream's event stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FocusInfo {
    /// The region now (the last request wins), clamped to the picture.
    pub region: FocusRegion,
    /// Where to watch it: the stream's WHEP (or H.264 rung) with `?rendition=focus`.
    pub rendition: String,
    /// Viewers of the region; it is decoded and encoded only while there are any.
    pub readers: u32,
    /// The last frames' sharpness, oldest first (up to a minute of them).
    pub history: Vec<Sharpness>,
}

/// Name of the focus region's rendition.
pub const FOCUS_RENDITION: &str = "focus";
/// Carries [`FocusInfo`] (with only the newest figure in `history`) on every measured frame.
pub const EVENT_FOCUS: &str = "focus";

/// `PATCH /api/v1/streams/{name}`: what to change; fields left out stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamPatch {
    #[serde(default)]
    pub stretch: Option<Stretch>,
}

/// One rendition of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RenditionInfo {
    pub name: String,
    /// "h264", or "vp8" for browsers without H.264.
    #[serde(default)]
    pub codec: String,
    /// Its size; `None` while the source's own is not known yet.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// Configured bitrate, bits per second.
    pub bitrate_bps: u64,
    pub max_fps: Option<f64>,
    /// Viewers (and publish targets) reading it now; it is encoded only while there are any.
    pub readers: u32,
    pub frames_encoded: u64,
}

/// Name of the choice that lets the relay move a viewer between renditions.
pub const RENDITION_AUTO: &str = "auto";

/// A viewer's rendition: `GET /{stream}/whep/{session}/rendition`, and in the stream's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewerRendition {
    /// The session's id (the last segment of its URL); in the stream's status, its first 8
    /// characters. An H.264 rung's player has no session URL: `h264-` and a number.
    pub session: String,
    /// How it gets the picture: `webrtc`, or `h264` (the H.264 rung, over a WebSocket).
    #[serde(default = "webrtc_transport")]
    pub transport: String,
    /// The rendition the viewer gets now.
    pub rendition: String,
    /// Why, in words ("down: 12.5 % loss", "pinned by the viewer").
    pub reason: String,
    /// The viewer chose it (`PUT .../rendition`); `false` while the relay chooses.
    pub pinned: bool,
    /// Loss its receiver reports (smoothed), percent.
    pub loss_percent: f64,
    /// The browser's estimate of its link (REMB), where it sends one, bits per second.
    /// Browsers that send transport-wide feedback instead (Chromium, given it) send none.
    pub estimate_bps: Option<u64>,
    /// What its transport-wide feedback says arrived, over about the last second, bits per
    /// second; `None` from a viewer that sends none.
    #[serde(default)]
    pub received_bps: Option<u64>,
    /// What the last probe of its link (before a step up) found, bits per second.
    #[serde(default)]
    pub probed_bps: Option<u64>,
    /// Every rendition it may be moved to, top first.
    pub renditions: Vec<String>,
}

fn webrtc_transport() -> String {
    "webrtc".to_owned()
}

/// Medians over the last frames sent, milliseconds. Each stage ends where the next starts, so
/// they add up to `total_ms` (medians only roughly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RelayLatency {
    /// Frames the medians are over.
    pub frames: u32,
    /// Source capture to arrival: the camera's own encode and the network. Zero unless the
    /// source stamps its capture time (an `X-Timestamp` part header).
    pub source_ms: f64,
    /// Arrival to the encoder picking the frame up (waiting behind the previous frame).
    pub queue_ms: f64,
    /// JPEG decode and scaling (nothing for a built-in scene).
    pub decode_ms: f64,
    /// H.264 encode and RTP packetization.
    pub encode_ms: f64,
    /// Packetized to the first viewer's last packet handed to the network.
    pub send_ms: f64,
    /// Capture to the last packet sent.
    pub total_ms: f64,
}

/// One frame's trip through the relay, wall-clock Unix ms with fractions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTiming {
    /// The frame's RTP timestamp: a browser's `requestVideoFrameCallback` reports it too.
    pub rtp_timestamp: u32,
    pub keyframe: bool,
    /// Capture time the source stamped, or `arrived_ms`.
    pub captured_ms: f64,
    pub arrived_ms: f64,
    /// The encoder picked it up.
    pub started_ms: f64,
    pub decoded_ms: f64,
    /// Encoded and packetized.
    pub encoded_ms: f64,
    /// The first viewer's last packet of it was handed to the network; `None` until then.
    pub sent_ms: Option<f64>,
}

/// `GET /api/v1/streams/{name}/timings`: the last frames encoded, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTimings {
    pub frames: Vec<FrameTiming>,
}

/// `GET /api/v1/streams`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamList {
    pub streams: Vec<StreamInfo>,
    /// The relay process as a whole.
    #[serde(default)]
    pub relay: RelayStatus,
}

/// What the relay process costs the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RelayStatus {
    pub version: String,
    pub uptime_s: u64,
    /// CPU of every thread over the last 5 s, percent of one core (`None` off Linux).
    pub cpu_percent: Option<f64>,
    pub resident_bytes: Option<u64>,
}

/// Server-Sent Event `state` on `/api/v1/streams/{name}/events`: the source changed state
/// (or, when offline, the reason changed). The first event describes the current state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEvent {
    pub state: SourceState,
    pub last_error: Option<String>,
    pub since_ms: u64,
}

/// What the player reads of a stream's status ([`StreamInfo`]): only what it acts on, so that
/// its wasm carries no decoder for the rest (serde skips the other fields).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlayerStreamInfo {
    pub state: SourceState,
    pub last_error: Option<String>,
    #[serde(default)]
    pub video: VideoPath,
    pub max_fps: Option<f64>,
    pub fps_in: f64,
}

/// What the player reads of [`FocusInfo`] (the `focus` event and `GET .../focus`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlayerFocus {
    pub region: FocusRegion,
    pub history: Vec<Sharpness>,
}

/// What the player's strip reads of [`StillList`]: each still's address and capture time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlayerStillList {
    pub stills: Vec<PlayerStill>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlayerStill {
    pub url: String,
    pub captured_ms: u64,
}

/// The stream list as the relay's page reads it ([`StreamList`]): the names.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlayerStreamList {
    pub streams: Vec<PlayerStreamName>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PlayerStreamName {
    pub name: String,
}

/// Server-Sent Event names on `/api/v1/streams/{name}/events`.
pub const EVENT_STATE: &str = "state";
/// Carries [`Viewers`].
pub const EVENT_VIEWERS: &str = "viewers";
/// Carries [`FrameEvent`].
pub const EVENT_FRAME: &str = "frame";

/// Server-Sent Event `frame`: the source's newest picture, so a player can say how old the one
/// it shows is. Sent when a new frame arrives, at most about once a second (at once after a
/// quiet second: a slow stream's every frame is told as it comes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FrameEvent {
    /// Capture time, Unix ms (the camera's stamp, else arrival).
    pub captured_ms: u64,
    /// Its age when the event was sent, by the relay's clock: `captured_ms` read against the
    /// browser's clock would carry the two clocks' difference.
    pub age_ms: u64,
    /// The camera's own picture size (the focus region's coordinates), when known.
    pub width: Option<u32>,
    pub height: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_and_policies_are_snake_case_strings() {
        assert_eq!(serde_json::to_string(&SourceState::Offline).expect("json"), "\"offline\"");
        assert_eq!(serde_json::from_str::<OfflinePolicy>("\"reject\"").expect("json"), OfflinePolicy::Reject);
        let e = StateEvent { state: SourceState::Live, last_error: None, since_ms: 5 };
        assert_eq!(serde_json::to_value(&e).expect("json"), serde_json::json!({"state": "live", "last_error": null, "since_ms": 5}));
    }

    #[test]
    fn stretch_is_tagged_by_mode_with_autostf_defaults() {
        let parse = |j: &str| serde_json::from_str::<StreamPatch>(j).map(|p| p.stretch);
        assert_eq!(parse(r#"{"stretch": {"mode": "off"}}"#).expect("off"), Some(Stretch::Off));
        assert_eq!(parse(r#"{"stretch": {"mode": "auto"}}"#).expect("auto"), Some(Stretch::AUTO));
        assert_eq!(parse(r#"{"stretch": {"mode": "auto", "target": 0.15}}"#).expect("auto"), Some(Stretch::Auto { target: 0.15, clip: 2.8 }));
        assert_eq!(
            parse(r#"{"stretch": {"mode": "manual", "black": 0.1, "white": 0.9, "midtones": 0.2}}"#).expect("manual"),
            Some(Stretch::Manual { black: 0.1, white: 0.9, midtones: 0.2 })
        );
        assert_eq!(parse("{}").expect("empty"), None);
        assert!(parse(r#"{"stretch": {"mode": "manual", "black": 0.1}}"#).is_err(), "manual needs all three levels");
        assert!(parse(r#"{"stretch": {"mode": "curves"}}"#).is_err());
        assert!(parse(r#"{"stretch": {"mode": "auto", "gain": 2}}"#).is_err(), "unknown fields are refused, not ignored");
        assert!(parse(r#"{"strech": {"mode": "auto"}}"#).is_err());
    }

    #[test]
    fn stretch_values_are_checked() {
        assert!(Stretch::AUTO.check().is_ok());
        assert!(Stretch::Manual { black: 0.1, white: 0.9, midtones: 0.2 }.check().is_ok());
        assert!(Stretch::Manual { black: 0.5, white: 0.5, midtones: 0.2 }.check().is_err());
        assert!(Stretch::Manual { black: -0.1, white: 0.5, midtones: 0.2 }.check().is_err());
        assert!(Stretch::Manual { black: 0.0, white: 1.0, midtones: 1.0 }.check().is_err());
        assert!(Stretch::Manual { black: 0.0, white: 1.0, midtones: f32::NAN }.check().is_err());
        assert!(Stretch::Auto { target: 0.0, clip: 2.8 }.check().is_err());
        assert!(Stretch::Auto { target: 0.25, clip: 11.0 }.check().is_err());
    }
}
