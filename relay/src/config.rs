//! Configuration: command-line flags and an optional TOML file, validated at start with errors
//! that name the offending key.

use crate::media::scene::Scene;
pub use crate::media::Codec;
use crate::turn::{TurnAuth, TurnServer};
use scopecast_shared::api::Stretch;
use scopecast_shared::OfflinePolicy;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use url::Url;

/// Command line. `scopecast` alone serves the test pattern as stream `telescope`.
#[derive(Debug, clap::Parser)]
#[command(name = "scopecast", version, about = "Telescope cameras to any browser over WebRTC (WHEP): MJPEG or a test pattern in, one H.264 encode per stream.")]
pub struct Cli {
    /// HTTP listen address (pages, WHEP, API).
    #[arg(long, value_name = "ADDR")]
    pub http: Option<SocketAddr>,
    /// UDP address for all WebRTC media (one port for every viewer).
    #[arg(long = "webrtc-udp", value_name = "ADDR")]
    pub webrtc_udp: Option<SocketAddr>,
    /// A stream: NAME=SOURCE where SOURCE is an http(s) MJPEG or JPEG URL, an rtsp:// camera,
    /// `exec:COMMAND`, a whep:// or wheps:// endpoint to pull, `whip` (publishers push to
    /// /NAME/whip), or a built-in source `test:[SCENE][:WxH][@FPS]`, SCENE being pattern (the
    /// default), deepsky or moon (e.g. `test:1920x1080@0.2`). Repeatable; replaces the default
    /// test stream.
    #[arg(long = "stream", value_name = "NAME=SOURCE")]
    pub streams: Vec<String>,
    /// A TOML configuration file (see scopecast.example.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// An extra IP address or host name to advertise as an ICE host candidate (NAT 1:1, a
    /// public address of a port-forwarded relay). Repeatable.
    #[arg(long = "ice-host", value_name = "HOST")]
    pub ice_hosts: Vec<String>,
    /// A TURN server URL for viewers the relay cannot reach directly (`turn:HOST:3478`,
    /// `turn:HOST:443?transport=tcp`...). Repeatable: the URLs of one server, which needs
    /// --turn-secret, or --turn-username and --turn-credential.
    #[arg(long = "turn", value_name = "URL")]
    pub turn_urls: Vec<String>,
    /// The secret shared with the TURN server (coturn's static-auth-secret): each session gets
    /// its own short-lived credentials. Prefer the environment variable.
    #[arg(long, env = "SCOPECAST_TURN_SECRET", value_name = "SECRET", hide_env_values = true, conflicts_with = "turn_username")]
    pub turn_secret: Option<String>,
    /// A static TURN username (with --turn-credential).
    #[arg(long, value_name = "NAME", requires = "turn_credential")]
    pub turn_username: Option<String>,
    /// The static TURN password. Prefer the environment variable.
    #[arg(long, env = "SCOPECAST_TURN_CREDENTIAL", value_name = "PASSWORD", hide_env_values = true)]
    pub turn_credential: Option<String>,
    /// A bearer token that WHEP, the API, events, metrics, MJPEG and snapshots require
    /// (`Authorization: Bearer TOKEN`, or `?token=TOKEN`). Prefer the environment variable:
    /// command lines are visible to every user of the machine.
    #[arg(long, env = "SCOPECAST_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Serve HTTPS with this certificate chain (PEM, leaf first), reloaded when the file
    /// changes. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve HTTPS with a self-signed certificate for this machine's names and addresses, made
    /// once and kept (in $XDG_STATE_HOME/scopecast/tls, or ~/.local/state/scopecast/tls). Its
    /// fingerprint is printed at start, to compare with what a browser shows.
    #[arg(long, conflicts_with = "tls_cert")]
    pub tls_self_signed: bool,
    /// Validate the configuration, print it, and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Log lines as text (coloured only on a terminal) or as JSON objects, one per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {source}")]
    Toml { path: String, source: Box<toml::de::Error> },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// The file format. Every table rejects unknown keys, so a typo is an error, not a silent default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    ice: IceFile,
    #[serde(default)]
    streams: BTreeMap<String, StreamFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerFile {
    http: Option<SocketAddr>,
    webrtc_udp: Option<SocketAddr>,
    token: Option<String>,
    cors_origins: Option<Vec<String>>,
    max_sessions: Option<usize>,
    session_rate: Option<f64>,
    tls: Option<TlsFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    #[serde(default)]
    self_signed: bool,
    dir: Option<PathBuf>,
    #[serde(default)]
    names: Vec<String>,
}

impl TlsFile {
    fn resolve(self) -> Result<TlsConfig, ConfigError> {
        match (self.cert, self.key, self.self_signed) {
            (Some(cert), Some(key), false) => Ok(TlsConfig::Files { cert, key }),
            (None, None, true) => Ok(TlsConfig::SelfSigned { dir: self.dir.unwrap_or_else(default_tls_dir), names: self.names }),
            (Some(_), Some(_), true) => Err(invalid("server.tls.self_signed", "either cert and key, or self_signed = true")),
            (None, None, false) => Err(invalid("server.tls", "set cert and key, or self_signed = true")),
            _ => Err(invalid("server.tls.key", "cert and key go together")),
        }
    }
}

/// Where a self-signed certificate is kept: the XDG state directory.
pub fn default_tls_dir() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".local/state")));
    state.map_or_else(|| PathBuf::from("scopecast-tls"), |s| s.join("scopecast/tls"))
}

/// HTTPS for the page, API, WHEP and MJPEG.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsConfig {
    /// A certificate chain and its key, reloaded when either file changes.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate kept in `dir`, for this machine's names plus `names`.
    SelfSigned { dir: PathBuf, names: Vec<String> },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IceFile {
    #[serde(default)]
    additional_hosts: Vec<String>,
    #[serde(default)]
    stun_servers: Vec<String>,
    include_loopback: Option<bool>,
    #[serde(default)]
    turn: Vec<TurnFile>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TurnFile {
    urls: Vec<String>,
    username: Option<String>,
    credential: Option<String>,
    secret: Option<String>,
    ttl_s: Option<u64>,
}

impl std::fmt::Debug for TurnFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnFile").field("urls", &self.urls).finish_non_exhaustive()
    }
}

/// One TURN server from its URLs and whichever credentials are given (file or flags).
fn turn_server(
    key: &str,
    urls: Vec<String>,
    username: Option<String>,
    credential: Option<String>,
    secret: Option<String>,
    ttl_s: Option<u64>,
) -> Result<TurnServer, ConfigError> {
    if urls.is_empty() {
        return Err(invalid(format!("{key}.urls"), "at least one turn: URL"));
    }
    for url in &urls {
        crate::turn::check_url(url).map_err(|m| invalid(format!("{key}.urls"), m))?;
    }
    let auth = match (username, credential, secret) {
        (Some(username), Some(credential), None) => TurnAuth::Static { username, credential },
        (None, None, Some(secret)) if !secret.is_empty() => {
            let ttl = ttl_s.map_or(crate::turn::DEFAULT_TTL, Duration::from_secs);
            if !(60..=7 * 86400).contains(&ttl.as_secs()) {
                return Err(invalid(format!("{key}.ttl_s"), "must be between 60 and 604800"));
            }
            TurnAuth::Secret { secret, ttl }
        }
        _ => return Err(invalid(key, "give a secret (shared with the TURN server), or a username and a credential")),
    };
    Ok(TurnServer { urls, auth })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamFile {
    source: String,
    width: Option<u32>,
    height: Option<u32>,
    fps: Option<f64>,
    bitrate_kbps: Option<u32>,
    keyframe_interval_s: Option<f64>,
    on_demand: Option<bool>,
    stop_after_s: Option<f64>,
    when_offline: Option<OfflinePolicy>,
    start_timeout_s: Option<f64>,
    stall_timeout_s: Option<f64>,
    /// RTSP: "auto", "tcp" or "udp".
    transport: Option<RtspTransport>,
    /// RTSP: "auto" or "transcode".
    video: Option<VideoMode>,
    /// Passed-through streams: keep the frames since the last keyframe for joiners.
    gop_cache: Option<bool>,
    /// WHIP sources: the bearer token a publisher must present.
    publisher_token: Option<String>,
    #[serde(default)]
    publish: Vec<PublishFile>,
    /// Smaller encodings for viewers on slow links, besides the stream's own ("full").
    #[serde(default)]
    renditions: Vec<RenditionFile>,
    /// "off", "auto", or a table: `{ mode = "manual", black = .., white = .., midtones = .. }`,
    /// `{ mode = "auto", target = .., clip = .. }`.
    stretch: Option<StretchFile>,
    /// New frames kept as files.
    stills: Option<StillsFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StillsFile {
    dir: PathBuf,
    /// 0 (the default): every new frame; else at most one every this many seconds.
    #[serde(default)]
    every_s: f64,
    /// The directory's cap; the oldest stills go first.
    #[serde(default = "default_stills_mb")]
    max_mb: f64,
}

fn default_stills_mb() -> f64 {
    1024.0
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StretchFile {
    Mode(String),
    Table(Stretch),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenditionFile {
    name: String,
    /// "h264" (the default) or "vp8".
    #[serde(default)]
    codec: Codec,
    /// Both or neither: without them, the stream's own size.
    width: Option<u32>,
    height: Option<u32>,
    bitrate_kbps: u32,
    fps: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishFile {
    url: String,
    token: Option<String>,
    name: Option<String>,
}

/// Keeps the token out of error messages.
impl std::fmt::Debug for PublishFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishFile").field("name", &self.name).finish_non_exhaustive()
    }
}

fn publish_target(key: &str, file: PublishFile) -> Result<PublishTarget, ConfigError> {
    PublishTarget::new(file.name, &file.url, file.token).map_err(|(field, message)| invalid(format!("{key}.{field}"), message))
}

impl PublishTarget {
    /// Checks a target from the config file or the API: an http(s) URL, and a name (the URL's
    /// host when none is given) of 1-64 characters of a-z, A-Z, 0-9, '.', '-' and '_'. An error
    /// names the field (`url` or `name`).
    pub fn new(name: Option<String>, url: &str, token: Option<String>) -> Result<Self, (&'static str, String)> {
        let url = Url::parse(url).map_err(|e| ("url", format!("not a URL ({e})")))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(("url", "a WHIP endpoint is an http(s) URL".to_owned()));
        }
        let name = name.unwrap_or_else(|| url.host_str().unwrap_or_default().to_owned());
        if !valid_stream_name(&name.replace('.', "-")) {
            return Err(("name", "1-64 characters of a-z, A-Z, 0-9, '.', '-' and '_'".to_owned()));
        }
        Ok(Self { name, url, token: token.filter(|t| !t.is_empty()) })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    /// A built-in source: the test pattern or a synthetic telescope scene.
    TestPattern {
        scene: Scene,
        width: usize,
        height: usize,
        fps: f64,
    },
    Mjpeg {
        url: Url,
    },
    /// Another WHEP server's stream, pulled and passed through (`whep://` is fetched over
    /// http, `wheps://` over https; `url` holds that http(s) URL).
    Whep {
        url: Url,
    },
    /// A command whose standard output is MJPEG or H.264 (`exec:...`, run through `sh -c`).
    Exec {
        command: String,
        video: VideoMode,
    },
    /// An RTSP camera's H.264 (credentials in the URL are used, never logged).
    Rtsp {
        url: Url,
        transport: RtspTransport,
        video: VideoMode,
    },
    /// Pushed to the relay by a WHIP publisher (`source = "whip"`) at `POST /{stream}/whip`.
    Whip {
        /// What a publisher must present; without one, the server's token (viewers') does.
        token: Option<Secret>,
        video: VideoMode,
    },
}

/// A credential: compared, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// How an RTSP camera's packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RtspTransport {
    /// TCP (interleaved in the RTSP connection: no firewall or loss trouble), falling back to
    /// UDP when the camera refuses TCP.
    #[default]
    Auto,
    Tcp,
    Udp,
}

/// Whether an encoded source's H.264 is passed through or transcoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoMode {
    /// Passed through when browsers can play it as it is (Baseline, Main or High without
    /// B-frames), transcoded otherwise.
    #[default]
    Auto,
    /// Always decoded and encoded again (the output size, rate and bitrate settings apply).
    Transcode,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    pub name: String,
    pub source: SourceConfig,
    /// Output size; `None` keeps the source's.
    pub size: Option<(usize, usize)>,
    /// Frame-rate cap for cameras; the test pattern's own rate.
    pub max_fps: Option<f64>,
    pub bitrate_bps: u32,
    /// Periodic IDR interval in seconds; 0 = only on demand.
    pub keyframe_interval_s: f64,
    /// Pull the camera only while someone watches (WHEP, MJPEG or snapshot).
    pub on_demand: bool,
    /// On demand: how long the camera stays connected after the last viewer leaves.
    pub stop_after: Duration,
    /// What a WHEP viewer gets while the source is not live.
    pub offline_policy: OfflinePolicy,
    /// How long a request waits for a starting source (a snapshot, a rejected-if-offline WHEP).
    pub start_timeout: Duration,
    /// Silence before a camera connection is given up (stretched for cameras slower than that).
    pub stall_timeout: Duration,
    /// WHIP endpoints (an SFU, a CDN's ingest) this stream is sent to, always.
    pub publish: Vec<PublishTarget>,
    /// A passed-through stream keeps the frames since the camera's last keyframe and gives
    /// them to each joiner, who then shows a picture at once instead of waiting for the next
    /// keyframe (up to a whole GOP). Off only to compare, or to save the memory.
    pub gop_cache: bool,
    /// Smaller encodings for viewers on slow links, top (largest) first; the stream's own
    /// encoding ("full": `size`, `bitrate_bps`) is above them all.
    pub renditions: Vec<Rendition>,
    /// The stretch applied to pictures before encoding, until the API changes it.
    pub stretch: Stretch,
    /// Where new frames are kept as files, if anywhere.
    pub stills: Option<StillsConfig>,
}

/// A stream's stills: its new frames (the camera's JPEGs) kept on disk with a JSON sidecar.
#[derive(Debug, Clone, PartialEq)]
pub struct StillsConfig {
    pub dir: PathBuf,
    /// Zero: every new frame; else at most one this often.
    pub every: Duration,
    pub max_bytes: u64,
}

/// One encoding of a stream's pictures besides its own, made only while someone watches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    pub name: String,
    pub codec: Codec,
    /// `None`: the stream's own picture size.
    pub size: Option<(usize, usize)>,
    pub bitrate_bps: u32,
    pub max_fps: Option<f64>,
}

/// The name of a stream's own encoding among its renditions.
pub const FULL_RENDITION: &str = "full";

/// The name of the VP8 rendition every encoded stream has unless VP8 ones are configured: the
/// stream's size and bitrate, for browsers that offer no H.264.
pub const VP8_RENDITION: &str = "vp8";

/// A WHIP endpoint a stream is published to (RFC 9725).
#[derive(Clone, PartialEq)]
pub struct PublishTarget {
    /// For the API, metrics and logs; unique per stream.
    pub name: String,
    pub url: Url,
    /// Sent as `Authorization: Bearer`; never logged or shown.
    pub token: Option<String>,
}

/// Never prints the token, nor the URL's path and query (Cloudflare puts its secret there).
impl std::fmt::Debug for PublishTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishTarget")
            .field("name", &self.name)
            .field("endpoint", &endpoint(&self.url))
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `scheme://host[:port]` of a URL: what may be shown of a URL whose path may be a secret.
pub fn endpoint(url: &Url) -> String {
    url.origin().ascii_serialization()
}

#[derive(Debug, Clone, PartialEq)]
pub struct IceConfig {
    pub udp: SocketAddr,
    pub additional_hosts: Vec<String>,
    pub stun_servers: Vec<String>,
    /// Given to every viewer, and used by the relay for its own relay candidates.
    pub turn: Vec<TurnServer>,
    pub include_loopback: bool,
}

/// Who may use the relay, and how much.
#[derive(Clone, PartialEq)]
pub struct SecurityConfig {
    /// Bearer token for everything but the page and the health check; `None` leaves it open.
    pub token: Option<String>,
    /// Origins whose pages may call the relay; `*` is any.
    pub cors_origins: Vec<String>,
    /// WHEP sessions at once, over all streams.
    pub max_sessions: usize,
    /// WHEP sessions one client address may create per second (in bursts of twice that).
    pub session_rate: f64,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self { token: None, cors_origins: vec!["*".to_owned()], max_sessions: 200, session_rate: 5.0 }
    }
}

/// Never prints the token.
impl std::fmt::Debug for SecurityConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityConfig")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("cors_origins", &self.cors_origins)
            .field("max_sessions", &self.max_sessions)
            .field("session_rate", &self.session_rate)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub http: SocketAddr,
    /// `None`: plain HTTP (the default, fine on loopback and for `http://` pages).
    pub tls: Option<TlsConfig>,
    pub ice: IceConfig,
    pub security: SecurityConfig,
    pub streams: Vec<StreamConfig>,
}

pub const DEFAULT_HTTP: &str = "127.0.0.1:8889";
pub const DEFAULT_WEBRTC_UDP: &str = "0.0.0.0:8189";
pub const DEFAULT_STREAM: &str = "telescope";

impl Config {
    /// The test pattern as `telescope`, on the default ports.
    pub fn default_test_pattern() -> Self {
        Self {
            http: DEFAULT_HTTP.parse().expect("constant address parses"),
            tls: None,
            ice: IceConfig {
                udp: DEFAULT_WEBRTC_UDP.parse().expect("constant address parses"),
                additional_hosts: Vec::new(),
                stun_servers: Vec::new(),
                turn: Vec::new(),
                include_loopback: true,
            },
            security: SecurityConfig::default(),
            streams: vec![StreamConfig::test_pattern(DEFAULT_STREAM, 1280, 720, 25.0)],
        }
    }

    /// Builds the configuration from the command line (and the file it names).
    pub fn from_cli(cli: &Cli) -> Result<Self, ConfigError> {
        let mut config = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
                Self::from_toml(&text).map_err(|e| match e {
                    ConfigError::Toml { source, .. } => ConfigError::Toml { path: path.display().to_string(), source },
                    other => other,
                })?
            }
            None => Self::default_test_pattern(),
        };
        if let Some(http) = cli.http {
            config.http = http;
        }
        if let Some(udp) = cli.webrtc_udp {
            config.ice.udp = udp;
        }
        config.ice.additional_hosts.extend(cli.ice_hosts.iter().cloned());
        if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
            config.tls = Some(TlsConfig::Files { cert: cert.clone(), key: key.clone() });
        } else if cli.tls_self_signed {
            // A directory or names from the file stay; the flag only turns it on.
            if !matches!(config.tls, Some(TlsConfig::SelfSigned { .. })) {
                config.tls = Some(TlsConfig::SelfSigned { dir: default_tls_dir(), names: Vec::new() });
            }
        }
        if !cli.turn_urls.is_empty() {
            let server = turn_server("--turn", cli.turn_urls.clone(), cli.turn_username.clone(), cli.turn_credential.clone(), cli.turn_secret.clone(), None)?;
            config.ice.turn.push(server);
        }
        if let Some(token) = &cli.token {
            config.security.token = Some(token.clone());
        }
        if !cli.streams.is_empty() {
            config.streams = cli
                .streams
                .iter()
                .map(|spec| {
                    let (name, url) = spec.split_once('=').ok_or_else(|| invalid("--stream", format!("'{spec}' is not NAME=SOURCE")))?;
                    StreamConfig::from_source(name, url, &format!("--stream {name}"))
                })
                .collect::<Result<_, _>>()?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let file: FileConfig = toml::from_str(text).map_err(|e| ConfigError::Toml { path: "config".into(), source: Box::new(e) })?;
        let defaults = Self::default_test_pattern();
        let mut streams = Vec::new();
        for (name, s) in file.streams {
            let key = format!("streams.{name}");
            let mut stream = StreamConfig::from_source(&name, &s.source, &format!("{key}.source"))?;
            if let SourceConfig::TestPattern { width, height, fps, .. } = &mut stream.source {
                *width = s.width.map_or(*width, |v| v as usize);
                *height = s.height.map_or(*height, |v| v as usize);
                *fps = s.fps.unwrap_or(*fps);
                stream.max_fps = Some(*fps);
            } else {
                match (s.width, s.height) {
                    (Some(w), Some(h)) => stream.size = Some((w as usize, h as usize)),
                    (None, None) => {}
                    _ => return Err(invalid(format!("{key}.width"), "set both width and height, or neither")),
                }
                stream.max_fps = s.fps;
            }
            if let Some(kbps) = s.bitrate_kbps {
                stream.bitrate_bps = kbps.saturating_mul(1000);
            }
            if let Some(k) = s.keyframe_interval_s {
                stream.keyframe_interval_s = k;
            }
            if let (Some(true), SourceConfig::TestPattern { .. }) = (s.on_demand, &stream.source) {
                return Err(invalid(format!("{key}.on_demand"), "the test pattern is always on; on_demand is for cameras"));
            }
            match &mut stream.source {
                SourceConfig::Rtsp { transport, video, .. } => {
                    *transport = s.transport.unwrap_or(*transport);
                    *video = s.video.unwrap_or(*video);
                }
                SourceConfig::Exec { video, .. } if s.transport.is_none() => *video = s.video.unwrap_or(*video),
                SourceConfig::Whip { video, token } if s.transport.is_none() => {
                    *video = s.video.unwrap_or(*video);
                    *token = s.publisher_token.clone().map(Secret);
                }
                _ if s.transport.is_some() => return Err(invalid(format!("{key}.transport"), "transport is for rtsp:// sources")),
                _ if s.video.is_some() => return Err(invalid(format!("{key}.video"), "video is for rtsp://, exec: and whip sources")),
                _ => {}
            }
            if s.publisher_token.is_some() && !matches!(stream.source, SourceConfig::Whip { .. }) {
                return Err(invalid(format!("{key}.publisher_token"), "publisher_token is for source = \"whip\""));
            }
            if let (Some(true), SourceConfig::Whip { .. }) = (s.on_demand, &stream.source) {
                return Err(invalid(format!("{key}.on_demand"), "a WHIP stream is live while its publisher sends; on_demand is for cameras the relay pulls"));
            }
            stream.gop_cache = s.gop_cache.unwrap_or(stream.gop_cache);
            stream.on_demand = s.on_demand.unwrap_or(stream.on_demand);
            stream.offline_policy = s.when_offline.unwrap_or(stream.offline_policy);
            for (value, field, range, name) in [
                (s.stop_after_s, &mut stream.stop_after, 0.0..=3600.0, "stop_after_s"),
                (s.start_timeout_s, &mut stream.start_timeout, 0.1..=120.0, "start_timeout_s"),
                (s.stall_timeout_s, &mut stream.stall_timeout, 1.0..=3600.0, "stall_timeout_s"),
            ] {
                if let Some(v) = value {
                    if !range.contains(&v) {
                        return Err(invalid(format!("{key}.{name}"), format!("{v} is outside {} .. {}", range.start(), range.end())));
                    }
                    *field = Duration::from_secs_f64(v);
                }
            }
            stream.renditions = renditions(&key, s.renditions, &stream)?;
            if let Some(file) = s.stretch {
                stream.stretch = stretch(&format!("{key}.stretch"), file, &stream)?;
            }
            if let Some(st) = s.stills {
                if !(0.0..=86_400.0).contains(&st.every_s) {
                    return Err(invalid(format!("{key}.stills.every_s"), format!("{} is outside 0 .. 86400", st.every_s)));
                }
                if !(1.0..=10_000_000.0).contains(&st.max_mb) {
                    return Err(invalid(format!("{key}.stills.max_mb"), format!("{} is outside 1 .. 10000000", st.max_mb)));
                }
                if st.dir.as_os_str().is_empty() {
                    return Err(invalid(format!("{key}.stills.dir"), "a directory is needed"));
                }
                stream.stills = Some(StillsConfig { dir: st.dir, every: Duration::from_secs_f64(st.every_s), max_bytes: (st.max_mb * 1_048_576.0) as u64 });
            }
            for (i, p) in s.publish.into_iter().enumerate() {
                let target = publish_target(&format!("{key}.publish[{i}]"), p)?;
                if stream.publish.iter().any(|t| t.name == target.name) {
                    return Err(invalid(format!("{key}.publish[{i}].name"), format!("two targets named '{}': give each a name", target.name)));
                }
                stream.publish.push(target);
            }
            streams.push(stream);
        }
        if streams.is_empty() {
            streams = defaults.streams;
        }
        let config = Self {
            http: file.server.http.unwrap_or(defaults.http),
            tls: file.server.tls.map(TlsFile::resolve).transpose()?,
            ice: IceConfig {
                udp: file.server.webrtc_udp.unwrap_or(defaults.ice.udp),
                additional_hosts: file.ice.additional_hosts,
                stun_servers: file.ice.stun_servers,
                turn: file
                    .ice
                    .turn
                    .into_iter()
                    .enumerate()
                    .map(|(i, t)| turn_server(&format!("ice.turn[{i}]"), t.urls, t.username, t.credential, t.secret, t.ttl_s))
                    .collect::<Result<_, _>>()?,
                include_loopback: file.ice.include_loopback.unwrap_or(true),
            },
            security: SecurityConfig {
                token: file.server.token,
                cors_origins: file.server.cors_origins.unwrap_or(defaults.security.cors_origins),
                max_sessions: file.server.max_sessions.unwrap_or(defaults.security.max_sessions),
                session_rate: file.server.session_rate.unwrap_or(defaults.security.session_rate),
            },
            streams,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for s in &self.streams {
            let key = format!("streams.{}", s.name);
            if !valid_stream_name(&s.name) {
                return Err(invalid(&key, "stream names are 1-64 characters of a-z, A-Z, 0-9, '-' and '_'"));
            }
            if !names.insert(&s.name) {
                return Err(invalid(&key, "stream defined twice"));
            }
            let size = match &s.source {
                SourceConfig::TestPattern { width, height, .. } => Some((*width, *height)),
                SourceConfig::Mjpeg { .. } | SourceConfig::Whep { .. } | SourceConfig::Rtsp { .. } | SourceConfig::Exec { .. } | SourceConfig::Whip { .. } => {
                    s.size
                }
            };
            if let Some((w, h)) = size {
                if !(128..=3840).contains(&w) || !(96..=3840).contains(&h) || w * h > 3840 * 2160 {
                    return Err(invalid(format!("{key}.width"), format!("{w}x{h} is outside 128x96 .. 3840x2160")));
                }
            }
            if let SourceConfig::Whip { token: Some(token), .. } = &s.source {
                check_token(&format!("{key}.publisher_token"), &token.0)?;
            }
            if let Some(fps) = s.max_fps {
                if !(fps > 0.0 && fps <= 120.0) {
                    return Err(invalid(format!("{key}.fps"), format!("{fps} is outside (0, 120]")));
                }
            }
            if !(50_000..=50_000_000).contains(&s.bitrate_bps) {
                return Err(invalid(format!("{key}.bitrate_kbps"), "must be between 50 and 50000"));
            }
            if !(0.0..=3600.0).contains(&s.keyframe_interval_s) {
                return Err(invalid(format!("{key}.keyframe_interval_s"), "must be between 0 and 3600"));
            }
        }
        self.security.validate()?;
        for url in &self.ice.stun_servers {
            if !(url.starts_with("stun:") || url.starts_with("stuns:")) {
                return Err(invalid("ice.stun_servers", format!("'{url}' is not a stun: URL")));
            }
        }
        Ok(())
    }
}

/// A bearer token: RFC 6750's b64token, so it travels in a header and a query string unchanged.
fn check_token(key: &str, token: &str) -> Result<(), ConfigError> {
    let token_char = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    if !(8..=256).contains(&token.len()) || !token.chars().all(token_char) {
        return Err(invalid(key, "8-256 characters of A-Z, a-z, 0-9 and -._~+/="));
    }
    Ok(())
}

impl SecurityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(token) = &self.token {
            check_token("server.token", token)?;
        }
        for origin in &self.cors_origins {
            let bare_origin = Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https") && u.host().is_some() && u.path() == "/" && !origin.ends_with('/') && u.query().is_none()
            });
            if origin != "*" && !bare_origin {
                return Err(invalid("server.cors_origins", format!("'{origin}' is not an origin like http://host:port, or *")));
            }
        }
        if !(1..=10_000).contains(&self.max_sessions) {
            return Err(invalid("server.max_sessions", "must be between 1 and 10000"));
        }
        if !(0.1..=1000.0).contains(&self.session_rate) {
            return Err(invalid("server.session_rate", "must be between 0.1 and 1000 per second"));
        }
        Ok(())
    }
}

/// A stream's stretch: valid values, on a stream whose pictures are decoded. A camera's H.264
/// passed through is never decoded, so there it needs `video = "transcode"`.
fn stretch(key: &str, file: StretchFile, stream: &StreamConfig) -> Result<Stretch, ConfigError> {
    let value = match file {
        StretchFile::Mode(m) if m == "off" => Stretch::Off,
        StretchFile::Mode(m) if m == "auto" => Stretch::AUTO,
        StretchFile::Mode(m) => {
            return Err(invalid(key, format!("'{m}': use \"off\", \"auto\", or a table with mode = \"manual\" and black, white, midtones")))
        }
        StretchFile::Table(t) => t,
    };
    value.check().map_err(|e| invalid(key, e))?;
    let passthrough = match &stream.source {
        SourceConfig::Whep { .. } => true,
        SourceConfig::Rtsp { video, .. } | SourceConfig::Whip { video, .. } => *video != VideoMode::Transcode,
        _ => false,
    };
    if passthrough && value != Stretch::Off {
        return Err(invalid(key, "this stream's H.264 is passed through, never decoded; stretch needs video = \"transcode\" (not possible for whep://)"));
    }
    Ok(value)
}

/// Checks a stream's renditions and orders them top first: names unique (not "full" or
/// "auto"), even sizes the encoder takes, bitrates below the stream's own (VP8 ones up to it).
fn renditions(key: &str, files: Vec<RenditionFile>, stream: &StreamConfig) -> Result<Vec<Rendition>, ConfigError> {
    let passthrough_only = matches!(stream.source, SourceConfig::Whep { .. });
    if !files.is_empty() && passthrough_only {
        return Err(invalid(format!("{key}.renditions"), "a whep:// stream is passed through as it comes; renditions need pictures to encode"));
    }
    let mut out: Vec<Rendition> = Vec::new();
    for (i, r) in files.into_iter().enumerate() {
        let at = |field: &str| format!("{key}.renditions[{i}].{field}");
        if !valid_stream_name(&r.name) || r.name == FULL_RENDITION || r.name == "auto" {
            return Err(invalid(at("name"), "1-64 characters of a-z, A-Z, 0-9, '-' and '_', not 'full' or 'auto'"));
        }
        if r.name == VP8_RENDITION && r.codec != Codec::Vp8 {
            return Err(invalid(at("name"), "'vp8' names a VP8 rendition (codec = \"vp8\")"));
        }
        if out.iter().any(|o| o.name == r.name) {
            return Err(invalid(at("name"), format!("two renditions named '{}'", r.name)));
        }
        let size = match (r.width, r.height) {
            (None, None) => None,
            (Some(w), Some(h)) if (16..=3840).contains(&w) && (16..=2160).contains(&h) && w % 2 == 0 && h % 2 == 0 => Some((w as usize, h as usize)),
            _ => return Err(invalid(at("width"), "width and height together, even, from 16x16 to 3840x2160 (neither: the stream's size)")),
        };
        let own = stream.bitrate_bps / 1000;
        let too_high = match r.codec {
            Codec::H264 => r.bitrate_kbps >= own,
            Codec::Vp8 => r.bitrate_kbps > own,
        };
        if !(50..=50_000).contains(&r.bitrate_kbps) || too_high {
            return Err(invalid(at("bitrate_kbps"), format!("50 kbit/s up to less than the stream's own {own} kbit/s (VP8: up to it)")));
        }
        if r.fps.is_some_and(|f| !(0.01..=120.0).contains(&f)) {
            return Err(invalid(at("fps"), "from 0.01 to 120"));
        }
        out.push(Rendition { name: r.name, codec: r.codec, size, bitrate_bps: r.bitrate_kbps * 1000, max_fps: r.fps });
    }
    // H.264 first, then VP8; top first within each.
    out.sort_by_key(|r| (r.codec != Codec::H264, std::cmp::Reverse(r.bitrate_bps)));
    Ok(out)
}

fn valid_stream_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl StreamConfig {
    /// The renditions the relay runs: those configured, and unless VP8 ones are among them,
    /// the stream's own in VP8 ("vp8", its size and bitrate), encoded only while a browser
    /// without H.264 watches. None for a whep:// stream, which is never decoded.
    pub fn all_renditions(&self) -> Vec<Rendition> {
        let mut all = self.renditions.clone();
        if !matches!(self.source, SourceConfig::Whep { .. }) && !all.iter().any(|r| r.codec == Codec::Vp8) {
            let vp8 = Rendition { name: VP8_RENDITION.to_owned(), codec: Codec::Vp8, size: None, bitrate_bps: self.bitrate_bps, max_fps: None };
            all.push(vp8);
        }
        all
    }

    pub fn test_pattern(name: &str, width: usize, height: usize, fps: f64) -> Self {
        Self::test_scene(name, Scene::Pattern, width, height, fps)
    }

    pub fn test_scene(name: &str, scene: Scene, width: usize, height: usize, fps: f64) -> Self {
        Self { max_fps: Some(fps), ..Self::defaults(name, SourceConfig::TestPattern { scene, width, height, fps }) }
    }

    /// Settings shared by every kind of source.
    fn defaults(name: &str, source: SourceConfig) -> Self {
        Self {
            name: name.to_owned(),
            source,
            size: None,
            max_fps: None,
            bitrate_bps: 2_000_000,
            keyframe_interval_s: 0.0,
            on_demand: false,
            stop_after: Duration::from_secs(10),
            offline_policy: OfflinePolicy::Wait,
            start_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(10),
            publish: Vec::new(),
            gop_cache: true,
            renditions: Vec::new(),
            stretch: Stretch::Off,
            stills: None,
        }
    }

    /// `test:[SCENE][:WxH][@FPS]` (SCENE: pattern, deepsky or moon), an http(s) MJPEG URL, an
    /// `rtsp://` camera, `exec:COMMAND`, or a WHEP endpoint as `whep://` or `wheps://`.
    pub fn from_source(name: &str, source: &str, key: &str) -> Result<Self, ConfigError> {
        if let Some(spec) = source.strip_prefix("test:") {
            let (rest, fps) = spec.split_once('@').unwrap_or((spec, ""));
            let (mut scene, mut w, mut h, mut f) = (Scene::Pattern, 1280, 720, 25.0);
            for part in rest.split(':').filter(|p| !p.is_empty()) {
                if let Some(s) = Scene::parse(part) {
                    scene = s;
                    continue;
                }
                let size = part.split_once('x').and_then(|(ws, hs)| Some((ws.parse().ok()?, hs.parse().ok()?)));
                let Some((sw, sh)) = size else {
                    let scenes: Vec<&str> = Scene::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(invalid(key, format!("'{part}' is neither WIDTHxHEIGHT nor a scene ({})", scenes.join(", "))));
                };
                (w, h) = (sw, sh);
            }
            if !fps.is_empty() {
                f = fps.parse().map_err(|_| invalid(key, format!("bad frame rate '{fps}'")))?;
            }
            return Ok(Self::test_scene(name, scene, w, h, f));
        }
        if source == "whip" {
            return Ok(Self::defaults(name, SourceConfig::Whip { token: None, video: VideoMode::Auto }));
        }
        if let Some(command) = source.strip_prefix("exec:") {
            let command = command.trim();
            if command.is_empty() {
                return Err(invalid(key, "exec: needs a command, e.g. exec:rpicam-vid -t 0 --codec mjpeg -o -"));
            }
            return Ok(Self::defaults(name, SourceConfig::Exec { command: command.to_owned(), video: VideoMode::Auto }));
        }
        for (scheme, http) in [("whep://", "http://"), ("wheps://", "https://")] {
            if let Some(rest) = source.strip_prefix(scheme) {
                let url = Url::parse(&format!("{http}{rest}")).map_err(|e| invalid(key, format!("not a URL ({e})")))?;
                if url.host().is_none() {
                    return Err(invalid(key, "a WHEP source needs a host"));
                }
                return Ok(Self::defaults(name, SourceConfig::Whep { url }));
            }
        }
        let url = Url::parse(source).map_err(|e| invalid(key, format!("not a URL ({e})")))?;
        if url.scheme() == "rtsp" && url.host().is_some() {
            return Ok(Self::defaults(name, SourceConfig::Rtsp { url, transport: RtspTransport::Auto, video: VideoMode::Auto }));
        }
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(key, "sources are http(s) MJPEG or JPEG URLs, rtsp:// cameras, exec: commands, whep:// or wheps:// endpoints, whip, or test:"));
        }
        Ok(Self::defaults(name, SourceConfig::Mjpeg { url }))
    }
}

/// A URL with user and password removed, for logs and the API.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_file_parses() {
        let c = Config::from_toml(
            r#"
            [server]
            http = "127.0.0.1:9000"
            webrtc_udp = "0.0.0.0:9001"
            token = "s3cret-t0ken"
            cors_origins = ["http://telescope-ui.local:3000"]
            max_sessions = 50
            session_rate = 2
            [ice]
            additional_hosts = ["192.0.2.7", "scope.example"]
            [streams.scope]
            source = "http://user:secret@cam.local/stream"
            width = 640
            height = 480
            fps = 15
            bitrate_kbps = 1500
            on_demand = true
            stop_after_s = 30
            when_offline = "reject"
            start_timeout_s = 5
            stall_timeout_s = 120
            [[streams.scope.publish]]
            url = "https://customer-x.cloudflarestream.com/pathsecret123/webRTC/publish"
            [[streams.scope.publish]]
            url = "http://janus.local:7080/whip/endpoint/scope"
            token = "whip-bearer-token"
            name = "club-sfu"
            [streams.pattern]
            source = "test:"
            fps = 0.2
            "#,
        )
        .expect("valid");
        assert_eq!(c.http.port(), 9000);
        assert_eq!(c.security.token.as_deref(), Some("s3cret-t0ken"));
        assert_eq!(
            (c.security.cors_origins.as_slice(), c.security.max_sessions, c.security.session_rate),
            (&["http://telescope-ui.local:3000".to_owned()][..], 50, 2.0)
        );
        assert!(!format!("{:?}", c).contains("s3cret"), "Debug never shows the token");
        assert_eq!(c.streams.len(), 2);
        let pattern = c.streams.iter().find(|s| s.name == "pattern").expect("pattern");
        assert_eq!(pattern.source, SourceConfig::TestPattern { scene: Scene::Pattern, width: 1280, height: 720, fps: 0.2 });
        let scope = c.streams.iter().find(|s| s.name == "scope").expect("scope");
        assert_eq!((scope.size, scope.max_fps, scope.bitrate_bps), (Some((640, 480)), Some(15.0), 1_500_000));
        assert_eq!((scope.on_demand, scope.stop_after, scope.offline_policy), (true, Duration::from_secs(30), OfflinePolicy::Reject));
        assert_eq!((scope.start_timeout, scope.stall_timeout), (Duration::from_secs(5), Duration::from_secs(120)));
        assert!(!pattern.on_demand && pattern.offline_policy == OfflinePolicy::Wait);
        let names: Vec<&str> = scope.publish.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["customer-x.cloudflarestream.com", "club-sfu"], "a target is named after its host unless named");
        assert_eq!(scope.publish[1].token.as_deref(), Some("whip-bearer-token"));
        let debug = format!("{c:?}");
        assert!(!debug.contains("whip-bearer-token") && !debug.contains("pathsecret123"), "Debug shows neither a WHIP token nor a URL's path: {debug}");
        assert!(pattern.publish.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("[streams.a]\nsource = \"test:\"\nwidht = 5\n", "widht"),
            ("[streams.a]\nsource = \"ftp://x/\"\n", "streams.a.source"),
            ("[streams.a]\nsource = \"test:10x10\"\n", "streams.a.width"),
            ("[streams.a]\nsource = \"test:@0\"\n", "streams.a.fps"),
            ("[streams.\"bad name\"]\nsource = \"test:\"\n", "streams.bad name"),
            ("[server]\nhttp = \"nope\"\n", "http"),
            ("[ice]\nstun_servers = [\"http://x\"]\n", "ice.stun_servers"),
            ("[streams.a]\nsource = \"http://cam/\"\nwhen_offline = \"explode\"\n", "when_offline"),
            ("[streams.a]\nsource = \"http://cam/\"\nstall_timeout_s = 0\n", "streams.a.stall_timeout_s"),
            ("[streams.a]\nsource = \"http://cam/\"\nstop_after_s = -1\n", "streams.a.stop_after_s"),
            ("[streams.a]\nsource = \"test:\"\non_demand = true\n", "streams.a.on_demand"),
            ("[server]\ntoken = \"short\"\n", "server.token"),
            ("[server]\ntoken = \"has spaces in it\"\n", "server.token"),
            ("[server]\ncors_origins = [\"http://ui.local/path\"]\n", "server.cors_origins"),
            ("[server]\nmax_sessions = 0\n", "server.max_sessions"),
            ("[server]\nsession_rate = 0\n", "server.session_rate"),
            ("[streams.a]\nsource = \"test:\"\n[[streams.a.publish]]\nurl = \"rtmp://x/\"\n", "streams.a.publish[0].url"),
            ("[streams.a]\nsource = \"test:\"\n[[streams.a.publish]]\nurl = \"http://x/\"\nname = \"no spaces\"\n", "streams.a.publish[0].name"),
            (
                "[streams.a]\nsource = \"test:\"\n[[streams.a.publish]]\nurl = \"http://x/a\"\n[[streams.a.publish]]\nurl = \"http://x/b\"\n",
                "streams.a.publish[1].name",
            ),
            ("[streams.a]\nsource = \"test:\"\n[[streams.a.publish]]\nurl = \"http://x/\"\ntokn = \"t\"\n", "tokn"),
            (
                "[streams.a]\nsource = \"test:\"\n[[streams.a.renditions]]\nname = \"full\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600\n",
                "streams.a.renditions[0].name",
            ),
            (
                "[streams.a]\nsource = \"test:\"\n[[streams.a.renditions]]\nname = \"s\"\nwidth = 641\nheight = 360\nbitrate_kbps = 600\n",
                "streams.a.renditions[0].width",
            ),
            (
                "[streams.a]\nsource = \"test:\"\n[[streams.a.renditions]]\nname = \"s\"\nwidth = 640\nheight = 360\nbitrate_kbps = 2000\n",
                "streams.a.renditions[0].bitrate_kbps",
            ),
            (
                "[streams.a]\nsource = \"whep://x/s\"\n[[streams.a.renditions]]\nname = \"s\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600\n",
                "streams.a.renditions",
            ),
            ("[streams.a]\nsource = \"test:\"\nstretch = \"strong\"\n", "streams.a.stretch"),
            ("[streams.a]\nsource = \"test:\"\nstills = { dir = \"/tmp/s\", max_mb = 0 }\n", "streams.a.stills.max_mb"),
            ("[streams.a]\nsource = \"test:\"\nstills = { dir = \"/tmp/s\", every_s = -1 }\n", "streams.a.stills.every_s"),
            ("[streams.a]\nsource = \"test:\"\nstretch = { mode = \"manual\", black = 0.6, white = 0.5, midtones = 0.5 }\n", "streams.a.stretch"),
            ("[streams.a]\nsource = \"rtsp://cam/1\"\nstretch = \"auto\"\n", "streams.a.stretch"),
            ("[streams.a]\nsource = \"whep://x/s\"\nstretch = \"auto\"\n", "streams.a.stretch"),
        ];
        for (text, key) in cases {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
        }
    }

    #[test]
    fn the_example_configuration_is_valid() {
        let c = Config::from_toml(include_str!("../../scopecast.example.toml")).expect("scopecast.example.toml parses and validates");
        assert!(c.streams.iter().any(|s| s.stretch == Stretch::AUTO), "it shows the stretch");
    }

    #[test]
    fn stretch_is_a_mode_or_a_table() {
        let of = |text: &str| Config::from_toml(text).expect(text).streams[0].stretch;
        assert_eq!(of("[streams.a]\nsource = \"test:\"\n"), Stretch::Off);
        assert_eq!(of("[streams.a]\nsource = \"test:\"\nstretch = \"auto\"\n"), Stretch::AUTO);
        assert_eq!(
            of("[streams.a]\nsource = \"test:\"\nstretch = { mode = \"manual\", black = 0.1, white = 0.8, midtones = 0.2 }\n"),
            Stretch::Manual { black: 0.1, white: 0.8, midtones: 0.2 }
        );
        assert_eq!(of("[streams.a]\nsource = \"rtsp://cam/1\"\nvideo = \"transcode\"\nstretch = \"auto\"\n"), Stretch::AUTO);
    }

    #[test]
    fn renditions_are_ordered_top_first() {
        let text = "[streams.a]\nsource = \"test:\"\n\
            [[streams.a.renditions]]\nname = \"tiny\"\nwidth = 320\nheight = 180\nbitrate_kbps = 150\nfps = 10\n\
            [[streams.a.renditions]]\nname = \"small\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600\n";
        let c = Config::from_toml(text).expect("valid");
        let r = &c.streams[0].all_renditions();
        assert_eq!(
            r.iter().map(|r| (r.name.as_str(), r.codec, r.size, r.bitrate_bps, r.max_fps)).collect::<Vec<_>>(),
            [
                ("small", Codec::H264, Some((640, 360)), 600_000, None),
                ("tiny", Codec::H264, Some((320, 180)), 150_000, Some(10.0)),
                ("vp8", Codec::Vp8, None, 2_000_000, None),
            ],
            "the stream's own VP8 rendition, for browsers without H.264, comes unasked"
        );
        let vp8 = "[streams.a]\nsource = \"test:\"\n[[streams.a.renditions]]\nname = \"v\"\ncodec = \"vp8\"\nwidth = 640\nheight = 360\nbitrate_kbps = 600\n";
        let c = Config::from_toml(vp8).expect("valid");
        assert_eq!(
            c.streams[0].all_renditions().iter().map(|r| (r.name.as_str(), r.codec)).collect::<Vec<_>>(),
            [("v", Codec::Vp8)],
            "configured VP8 replaces the default"
        );
        let c = Config::from_toml("[streams.a]\nsource = \"whep://x/s\"\n").expect("valid");
        assert!(c.streams[0].all_renditions().is_empty(), "a whep:// stream is passed through: nothing to encode VP8 from");
    }

    #[test]
    fn stream_specs() {
        let s = StreamConfig::from_source("x", "test:640x480@0.5", "k").expect("ok");
        assert_eq!(s.source, SourceConfig::TestPattern { scene: Scene::Pattern, width: 640, height: 480, fps: 0.5 });
        let s = StreamConfig::from_source("x", "test:deepsky:1920x1080@0.2", "k").expect("ok");
        assert_eq!(s.source, SourceConfig::TestPattern { scene: Scene::DeepSky, width: 1920, height: 1080, fps: 0.2 });
        let s = StreamConfig::from_source("x", "test:moon", "k").expect("ok");
        assert_eq!(s.source, SourceConfig::TestPattern { scene: Scene::Moon, width: 1280, height: 720, fps: 25.0 });
        assert!(StreamConfig::from_source("x", "test:640", "k").is_err());
        assert!(StreamConfig::from_source("x", "test:galaxy", "k").expect_err("unknown scene").to_string().contains("deepsky"));
        assert!(StreamConfig::from_source("x", "http://cam:8080/?action=stream", "k").is_ok());
    }

    #[test]
    fn whip_streams_take_a_publisher_token_and_are_never_on_demand() {
        let c = Config::from_toml("[streams.obs]\nsource = \"whip\"\npublisher_token = \"pub-t0ken-123\"\nvideo = \"transcode\"\n").expect("valid");
        assert_eq!(c.streams[0].source, SourceConfig::Whip { token: Some(Secret("pub-t0ken-123".into())), video: VideoMode::Transcode });
        assert!(!format!("{c:?}").contains("pub-t0ken"), "Debug never shows the publisher token");
        for (text, key) in [
            ("[streams.obs]\nsource = \"whip\"\npublisher_token = \"short\"\n", "streams.obs.publisher_token"),
            ("[streams.obs]\nsource = \"whip\"\non_demand = true\n", "streams.obs.on_demand"),
            ("[streams.cam]\nsource = \"test:\"\npublisher_token = \"pub-t0ken-123\"\n", "streams.cam.publisher_token"),
            ("[streams.obs]\nsource = \"whip\"\ntransport = \"tcp\"\n", "streams.obs.transport"),
        ] {
            let err = Config::from_toml(text).expect_err(text).to_string();
            assert!(err.contains(key), "{text:?} -> {err}");
        }
        assert_eq!(StreamConfig::from_source("x", "whip", "k").expect("ok").source, SourceConfig::Whip { token: None, video: VideoMode::Auto });
    }

    #[test]
    fn credentials_are_redacted() {
        let url = Url::parse("http://admin:hunter2@cam.local:81/video").expect("url");
        assert_eq!(redact(&url), "http://cam.local:81/video");
    }
}
