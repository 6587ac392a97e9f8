//! Assembles a running relay: pipelines and their sources, the WebRTC engine, the HTTP server.

use crate::config::{Config, SourceConfig};
use crate::http::{router, AppState};
use crate::media::EncoderSettings;
use crate::pipeline::{Pipeline, PipelineSettings};
use crate::stream::Stream;
use crate::track::Track;
use crate::webrtc::{WebRtcEngine, WebRtcError};
use axum::serve::ListenerExt;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("cannot listen for HTTP on {0}: {1}")]
    HttpBind(SocketAddr, std::io::Error),
    #[error(transparent)]
    WebRtc(#[from] WebRtcError),
    #[error("HTTPS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot start a thread: {0}")]
    Thread(#[from] std::io::Error),
    #[error("stills directory {0}: {1}")]
    Stills(std::path::PathBuf, std::io::Error),
}

pub struct Relay {
    http_addr: SocketAddr,
    /// The certificate served, when HTTPS is on.
    certificate: Option<crate::tls::Certificate>,
    udp_port: u16,
    state: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    rate_sampler: tokio::task::JoinHandle<()>,
    tls_reloader: Option<tokio::task::JoinHandle<()>>,
}

impl Relay {
    /// Binds every socket and starts every stream. Ports of 0 pick free ports.
    pub async fn start(config: Config) -> Result<Self, RelayError> {
        log_codec_paths();
        let engine = Arc::new(WebRtcEngine::new(&config.ice).await?);
        let mut streams = BTreeMap::new();
        let mut whip = BTreeMap::new();
        let mut stills = BTreeMap::new();
        for stream in &config.streams {
            let fps = stream.max_fps.unwrap_or(25.0);
            let settings = PipelineSettings {
                size: stream.size,
                max_fps: match stream.source {
                    SourceConfig::TestPattern { .. } => None,
                    SourceConfig::Mjpeg { .. }
                    | SourceConfig::Whep { .. }
                    | SourceConfig::Rtsp { .. }
                    | SourceConfig::Exec { .. }
                    | SourceConfig::Whip { .. } => stream.max_fps,
                },
                encoder: EncoderSettings {
                    bitrate_bps: stream.bitrate_bps,
                    fps: fps as f32,
                    idr_interval_frames: (stream.keyframe_interval_s * fps).round() as u32,
                },
                codec: crate::media::Codec::H264,
                keyframe_min_interval: Duration::from_millis(500),
                clock: crate::pipeline::RtpClock::new(),
                stretch: Some(Arc::new(crate::media::stretch::StretchControl::new(stream.stretch))),
                focus: None,
            };
            // A picture source's track is made by its encoder, which makes keyframes on request;
            // a passed-through source's keeps its GOP for joiners.
            // (An RTSP, exec or WHIP source has an encoder, idle unless its H.264 must be
            // transcoded.)
            let passthrough_only = matches!(stream.source, SourceConfig::Whep { .. });
            let track = Track::new(&stream.name, passthrough_only, settings.keyframe_min_interval);
            // Smaller renditions, and the VP8 ones, follow the stream's own encoder: it decodes,
            // they scale and encode, each only while someone watches it.
            let mut renditions = Vec::new();
            for r in stream.all_renditions() {
                let settings = PipelineSettings {
                    size: r.size.or(stream.size),
                    codec: r.codec,
                    max_fps: r.max_fps,
                    encoder: EncoderSettings { bitrate_bps: r.bitrate_bps, fps: r.max_fps.unwrap_or(fps).min(fps) as f32, ..settings.encoder },
                    // The lead stretches the picture it hands them.
                    stretch: None,
                    ..settings.clone()
                };
                let name = format!("{}.{}", stream.name, r.name);
                let track = Track::new(&name, false, settings.keyframe_min_interval);
                let encoder = Pipeline::start(&name, settings, Arc::clone(&track), Vec::new())?;
                renditions.push(crate::stream::RenditionTrack { config: r, track, encoder });
            }
            let followers = renditions.iter().map(|r| Arc::clone(&r.encoder)).collect();
            let stretch = settings.stretch.clone().unwrap_or_default();
            // The focus view: a crop at native size, its own encoder fed the source frames.
            let focus = if passthrough_only {
                None
            } else {
                let control = Arc::new(crate::focus::FocusControl::default());
                let name = format!("{}.{}", stream.name, scopecast_shared::api::FOCUS_RENDITION);
                let settings = PipelineSettings { size: None, focus: Some(Arc::clone(&control)), ..settings.clone() };
                let track = Track::new(&name, false, settings.keyframe_min_interval);
                let encoder = Pipeline::start(&name, settings, Arc::clone(&track), Vec::new())?;
                Some(crate::stream::FocusTrack { control, track, encoder })
            };
            let encoder = if passthrough_only { None } else { Some(Pipeline::start(&stream.name, settings, Arc::clone(&track), followers)?) };
            let hub = Stream::new(stream.clone(), track, encoder, renditions, stretch, focus);
            if matches!(stream.source, SourceConfig::Whep { .. } | SourceConfig::Rtsp { .. } | SourceConfig::Exec { .. } | SourceConfig::Whip { .. }) {
                // Pictures for MJPEG clients and snapshots of a passed-through stream.
                tokio::spawn(crate::decode::run_stills(Arc::clone(&hub)));
            }
            match &stream.source {
                SourceConfig::TestPattern { scene, width, height, fps } => crate::ingest::testpattern::spawn(Arc::clone(&hub), *scene, *width, *height, *fps)?,
                SourceConfig::Mjpeg { url } => {
                    // Ends by itself when the stream is stopped.
                    crate::ingest::mjpeg::spawn(Arc::clone(&hub), url.clone());
                }
                SourceConfig::Whep { url } => {
                    crate::ingest::whep::spawn(Arc::clone(&hub), url.clone(), Arc::clone(&engine));
                }
                SourceConfig::Rtsp { url, transport, video } => {
                    crate::ingest::rtsp::spawn(Arc::clone(&hub), url.clone(), *transport, *video);
                }
                SourceConfig::Exec { command, video } => {
                    crate::ingest::exec::spawn(Arc::clone(&hub), command.clone(), *video);
                }
                SourceConfig::Whip { token, video } => {
                    let token = token.as_ref().map(|t| t.0.clone()).or_else(|| config.security.token.clone());
                    if token.is_none() {
                        tracing::warn!(stream = stream.name, "anyone who reaches the relay may publish to /{}/whip: set publisher_token", stream.name);
                    }
                    let endpoint = crate::ingest::whip::Endpoint::new(&stream.name, token);
                    crate::ingest::whip::spawn(Arc::clone(&hub), Arc::clone(&endpoint), *video);
                    whip.insert(stream.name.clone(), endpoint);
                }
            }
            if let Some(config) = &stream.stills {
                let store = crate::stills::StillStore::open(&config.dir, config.max_bytes).map_err(|e| RelayError::Stills(config.dir.clone(), e))?;
                let store = Arc::new(store);
                tokio::spawn(crate::stills::record(Arc::clone(&hub), Arc::clone(&store), config.clone()));
                stills.insert(stream.name.clone(), store);
            }
            streams.insert(stream.name.clone(), hub);
        }

        // Loaded before binding: a bad certificate is a start-up error, not a listening port
        // that fails every handshake.
        let certificate = config.tls.as_ref().map(|tls| crate::tls::load(tls, &config.ice.additional_hosts)).transpose()?;
        let listener = tokio::net::TcpListener::bind(config.http).await.map_err(|e| RelayError::HttpBind(config.http, e))?;
        let http_addr = listener.local_addr().map_err(|e| RelayError::HttpBind(config.http, e))?;
        let udp_port = engine.udp_port();
        let mut state = AppState::new(streams, engine, config.security.clone());
        state.whip = whip;
        state.stills = stills;
        let state = Arc::new(state);
        let rate_sampler = {
            let streams: Vec<Arc<Stream>> = state.streams.values().cloned().collect();
            let process = Arc::clone(&state.process);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    let now = tick.tick().await.into_std();
                    streams.iter().for_each(|s| s.sample_rates(now));
                    process.sample(now);
                }
            })
        };
        for stream in &config.streams {
            for target in &stream.publish {
                state.publish(&state.streams[&stream.name], target.clone()).await;
            }
        }
        // Client addresses, for the per-client session limit.
        let app = router(Arc::clone(&state)).into_make_service_with_connect_info::<SocketAddr>();
        let (tx, rx) = oneshot::channel::<()>();
        let mut tls_reloader = None;
        let server = match (&certificate, &config.tls) {
            (Some(cert), Some(tls)) => {
                let rustls = crate::tls::server_config(cert).await.map_err(|e| RelayError::HttpBind(config.http, e))?;
                tls_reloader = crate::tls::spawn_reloader(tls, rustls.clone());
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                tokio::spawn(async move {
                    let _ = rx.await;
                    stopper.graceful_shutdown(Some(Duration::from_secs(3)));
                });
                let listener = listener.into_std().map_err(|e| RelayError::HttpBind(config.http, e))?;
                let serve = axum_server::from_tcp(listener)
                    .map_err(|e| RelayError::HttpBind(config.http, e))?
                    .acceptor(axum_server::tls_rustls::RustlsAcceptor::new(rustls).acceptor(TunedAcceptor))
                    .handle(handle);
                tokio::spawn(async move {
                    if let Err(e) = serve.serve(app).await {
                        tracing::error!("HTTPS server failed: {e}");
                    }
                })
            }
            _ => {
                let listener = listener.tap_io(tune_http_socket);
                tokio::spawn(async move {
                    let serve = axum::serve(listener, app).with_graceful_shutdown(async {
                        let _ = rx.await;
                    });
                    if let Err(e) = serve.await {
                        tracing::error!("HTTP server failed: {e}");
                    }
                })
            }
        };
        Ok(Self { http_addr, certificate, udp_port, state, shutdown: Some(tx), server, rate_sampler, tls_reloader })
    }

    /// `http://ADDR` or `https://ADDR`: where the page, API and WHEP are.
    pub fn base_url(&self) -> String {
        let scheme = if self.certificate.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// The certificate served (as loaded at start), when HTTPS is on.
    pub fn certificate(&self) -> Option<&crate::tls::Certificate> {
        self.certificate.as_ref()
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn udp_port(&self) -> u16 {
        self.udp_port
    }

    /// WHEP sessions alive right now.
    pub fn session_count(&self) -> usize {
        self.state.session_count()
    }

    /// The state behind the HTTP routes (for tests and embedding).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Deletes every publish session at its target, closes every session, stops every stream
    /// (which ends MJPEG and event streams) and the HTTP server.
    pub async fn shutdown(mut self) {
        self.state.stop_publishing().await;
        self.state.close_all().await;
        for stream in self.state.streams.values() {
            stream.stop();
        }
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }
}

/// Says which SIMD code the codecs run: a relay built without its assembly is slow and says so.
fn log_codec_paths() {
    let slow = matches!(crate::media::simd::encoder_simd(), crate::media::simd::EncoderSimd::CFallback) || crate::media::simd::jpeg_simd().is_none();
    let line = crate::media::simd::describe();
    if slow && cfg!(target_arch = "x86_64") {
        tracing::warn!("{line}; rebuild after `cargo clean -p openh264-sys2 --release` with nasm installed");
    } else {
        tracing::info!("{line}");
    }
}

/// At most this much may wait unsent in the kernel for one HTTP client. Linux grows a socket's
/// send buffer to megabytes for a client that reads slowly; an MJPEG client on weak Wi-Fi would
/// then see pictures seconds old. Capped, the relay stops handing it parts, and the client skips
/// to the newest frame instead. 32 KB, not 128: on a 130 kbit/s H.264 rung, 128 KB unsent is 8 s
/// of pictures the player must still read before it sees the relay's move to a smaller
/// rendition (measured by the rung's adaptation test: moved down in 16.4 s, 8.1 s with 32 KB).
/// The cap is on what is unsent, not in flight, so it does not limit a fast link's throughput.
const HTTP_UNSENT_LIMIT: u32 = 32 * 1024;

/// Tunes each accepted TCP connection before its TLS handshake, as `tap_io` does for plain HTTP.
#[derive(Clone, Copy)]
struct TunedAcceptor;

impl<S> axum_server::accept::Accept<tokio::net::TcpStream, S> for TunedAcceptor {
    type Stream = tokio::net::TcpStream;
    type Service = S;
    type Future = std::future::Ready<std::io::Result<(Self::Stream, S)>>;

    fn accept(&self, mut stream: tokio::net::TcpStream, service: S) -> Self::Future {
        tune_http_socket(&mut stream);
        std::future::ready(Ok((stream, service)))
    }
}

fn tune_http_socket(tcp: &mut tokio::net::TcpStream) {
    // Small writes (SSE events, part headers) go out at once.
    let _ = tcp.set_nodelay(true);
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Err(e) = socket2::SockRef::from(&*tcp).set_tcp_notsent_lowat(HTTP_UNSENT_LIMIT) {
        tracing::debug!("TCP_NOTSENT_LOWAT not set: {e}");
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for stream in self.state.streams.values() {
            stream.stop();
        }
        self.rate_sampler.abort();
        if let Some(reloader) = &self.tls_reloader {
            reloader.abort();
        }
        self.server.abort();
    }
}
