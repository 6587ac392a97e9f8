//! HTTP: a router factory over shared state. Handlers are thin; errors become responses only
//! in [`error::ApiError`].

pub mod error;
pub mod whep;

use crate::config::{redact, SourceConfig, StreamConfig};
use crate::lock;
use crate::pipeline::Pipeline;
use crate::webrtc::{Session, WebRtcEngine};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use error::ApiError;
use whep::ACCEPT_PATCH;
use scopecast_shared::{SourceKind, StreamInfo, StreamList};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tower_http::cors::{Any, CorsLayer};

/// Static files (the page and its assets), built into the binary.
#[derive(rust_embed::RustEmbed)]
#[folder = "../static/"]
struct StaticFiles;

pub struct StreamEntry {
    pub config: StreamConfig,
    pub pipeline: Arc<Pipeline>,
}

pub struct SessionEntry {
    pub stream: String,
    pub etag: String,
    pub session: Session,
}

#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub max_sessions: Option<usize>,
}

pub struct AppState {
    pub streams: BTreeMap<String, StreamEntry>,
    pub engine: WebRtcEngine,
    pub limits: Limits,
    sessions: Mutex<HashMap<String, Arc<SessionEntry>>>,
    /// Sessions that ended before they were registered (the race is real: ICE may fail fast).
    ended_early: Mutex<std::collections::HashSet<String>>,
}

impl AppState {
    pub fn new(streams: BTreeMap<String, StreamEntry>, engine: WebRtcEngine, limits: Limits) -> Self {
        Self { streams, engine, limits, sessions: Mutex::default(), ended_early: Mutex::default() }
    }

    pub fn pipeline(&self, stream: &str) -> Result<Arc<Pipeline>, ApiError> {
        self.streams.get(stream).map(|s| Arc::clone(&s.pipeline)).ok_or_else(|| ApiError::unknown_stream(stream))
    }

    pub fn session(&self, stream: &str, id: &str) -> Result<Arc<SessionEntry>, ApiError> {
        self.pipeline(stream)?;
        lock(&self.sessions).get(id).filter(|s| s.stream == stream).cloned().ok_or_else(ApiError::unknown_session)
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    fn insert_session(&self, id: &str, stream: &str, etag: String, session: Session) {
        let entry = Arc::new(SessionEntry { stream: stream.to_owned(), etag, session });
        lock(&self.sessions).insert(id.to_owned(), entry);
        if lock(&self.ended_early).remove(id) {
            self.end_session(id);
        }
    }

    /// Removes a session and closes its peer connection. Idempotent.
    pub fn end_session(&self, id: &str) {
        let removed = lock(&self.sessions).remove(id);
        match removed {
            Some(entry) => {
                tokio::spawn(async move { entry.session.close().await });
            }
            None => {
                let mut early = lock(&self.ended_early);
                // Bounded: ids of sessions never registered are dropped past a few thousand.
                if early.len() > 4096 {
                    early.clear();
                }
                early.insert(id.to_owned());
            }
        }
    }

    /// Ends every session (shutdown).
    pub async fn close_all(&self) {
        let all: Vec<_> = lock(&self.sessions).drain().map(|(_, s)| s).collect();
        for s in all {
            s.session.close().await;
        }
    }

    fn stream_info(&self, entry: &StreamEntry) -> StreamInfo {
        let stats = &entry.pipeline.stats;
        let known = |v: usize| (v > 0).then_some(v as u32);
        let (source, source_url) = match &entry.config.source {
            SourceConfig::TestPattern { .. } => (SourceKind::TestPattern, None),
            SourceConfig::Mjpeg { url } => (SourceKind::Mjpeg, Some(redact(url))),
        };
        let (w, h) = match (&entry.config.source, entry.config.size) {
            (_, Some((w, h))) => (Some(w as u32), Some(h as u32)),
            (SourceConfig::TestPattern { width, height, .. }, None) => (Some(*width as u32), Some(*height as u32)),
            _ => (known(stats.width.load(Ordering::Relaxed)), known(stats.height.load(Ordering::Relaxed))),
        };
        StreamInfo {
            name: entry.config.name.clone(),
            source,
            source_url,
            width: w,
            height: h,
            max_fps: entry.config.max_fps,
            viewers: entry.pipeline.viewers() as u32,
            whep_url: format!("/{}/whep", entry.config.name),
            frames_in: stats.frames_in.load(Ordering::Relaxed),
            frames_encoded: stats.frames_encoded.load(Ordering::Relaxed),
            frames_dropped: stats.frames_dropped.load(Ordering::Relaxed),
        }
    }
}


/// 128 random bits as hex: session ids and ETags cannot be guessed.
pub fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The relay's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::IF_MATCH])
        // Without these a cross-origin player plays but cannot read Location, never sends
        // DELETE, and sessions leak.
        .expose_headers([header::LOCATION, header::ETAG, header::LINK, ACCEPT_PATCH, header::HeaderName::from_static("accept-post")])
        .max_age(std::time::Duration::from_secs(86400));
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/streams", get(list_streams))
        .route("/api/v1/streams/{name}", get(get_stream))
        .route("/static/{*path}", get(static_file))
        .route("/{stream}/", get(stream_page))
        .route(
            "/{stream}/whep",
            get(whep::endpoint_info).head(whep::endpoint_info).post(whep::post_offer).options(whep::endpoint_options),
        )
        .route(
            "/{stream}/whep/{id}",
            get(whep::session_info).patch(whep::patch_session).delete(whep::delete_session).options(whep::session_options),
        )
        .fallback(|| async { ApiError::not_found() })
        .layer(cors)
        .layer(middleware::from_fn(whep_discovery_headers))
        .with_state(state)
}

/// CORS preflights never reach the handlers; this gives them WHEP's Accept-Post/Accept-Patch.
async fn whep_discovery_headers(req: Request, next: Next) -> Response {
    let options = req.method() == Method::OPTIONS;
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    if options && res.status().is_success() {
        let h = res.headers_mut();
        if path.ends_with("/whep") {
            h.entry(header::HeaderName::from_static("accept-post")).or_insert(HeaderValue::from_static(whep::SDP));
        } else if path.contains("/whep/") {
            h.entry(ACCEPT_PATCH).or_insert(HeaderValue::from_static(whep::TRICKLE));
        }
    }
    res
}

async fn list_streams(State(state): State<Arc<AppState>>) -> Json<StreamList> {
    Json(StreamList { streams: state.streams.values().map(|e| state.stream_info(e)).collect() })
}

async fn get_stream(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<StreamInfo>, ApiError> {
    let entry = state.streams.get(&name).ok_or_else(|| ApiError::unknown_stream(&name))?;
    Ok(Json(state.stream_info(entry)))
}

async fn page() -> Response {
    serve_static("index.html")
}

/// `/{stream}/`: the same page; it picks the stream from its own URL.
async fn stream_page(State(state): State<Arc<AppState>>, Path(stream): Path<String>) -> Result<Response, ApiError> {
    state.pipeline(&stream)?;
    Ok(serve_static("index.html"))
}

async fn static_file(Path(path): Path<String>) -> Response {
    serve_static(&path)
}

fn serve_static(path: &str) -> Response {
    match StaticFiles::get(path) {
        Some(file) => {
            let mime = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("wasm") => "application/wasm",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "no-cache")], file.data).into_response()
        }
        None => ApiError::not_found().into_response(),
    }
}
