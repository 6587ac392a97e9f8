//! HTTP: a router factory over shared state. Handlers are thin; errors become responses only
//! in [`error::ApiError`].

pub mod api;
mod assets;
pub mod auth;
pub mod error;
pub mod h264_ws;
pub mod media;
pub mod whep;
pub mod whep_sse;
pub mod whip;

use crate::config::SecurityConfig;
use crate::lock;
use crate::stream::{DemandGuard, Stream};
use crate::track::Track;
use crate::webrtc::{Session, WebRtcEngine};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use error::ApiError;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tower_http::cors::{AllowOrigin, CorsLayer};
use whep::ACCEPT_PATCH;

pub struct SessionEntry {
    pub stream: String,
    /// Changes with each ICE restart.
    pub etag: Mutex<String>,
    pub session: Session,
    /// Counts the session as a viewer of its stream (and keeps an on-demand source running).
    pub _demand: DemandGuard,
    /// Its WHEP Server-Sent Events streams, by id.
    pub event_streams: Mutex<HashMap<String, whep_sse::EventStream>>,
}

pub struct AppState {
    pub streams: BTreeMap<String, Arc<Stream>>,
    pub engine: Arc<WebRtcEngine>,
    pub security: SecurityConfig,
    /// Session creations per client address.
    pub session_limiter: Mutex<auth::RateLimiter>,
    sessions: Mutex<HashMap<String, Arc<SessionEntry>>>,
    /// The H.264 rung's players, by number: their stream and rendition (for the API).
    rung_players: Arc<Mutex<BTreeMap<u64, (String, scopecast_shared::api::ViewerRendition)>>>,
    rung_players_opened: AtomicU64,
    /// Sessions that ended before they were registered (the race is real: ICE may fail fast).
    ended_early: Mutex<std::collections::HashSet<String>>,
    sessions_created: AtomicU64,
    metrics: api::Metrics,
    /// WHIP publish targets by (stream, target name).
    publishers: tokio::sync::Mutex<BTreeMap<(String, String), crate::publish::PublishTask>>,
    /// The process's CPU and memory (sampled by the relay every second).
    pub process: Arc<crate::process::ProcessStats>,
    /// WHIP ingest endpoints, by stream (streams with `source = "whip"`).
    pub whip: BTreeMap<String, Arc<crate::ingest::whip::Endpoint>>,
    /// Kept stills, by stream (streams with `stills`).
    pub stills: BTreeMap<String, Arc<crate::stills::StillStore>>,
}

/// An H.264 rung's entry in the API: updated as it moves, removed when dropped.
pub struct RungPlayer {
    id: u64,
    players: Arc<Mutex<BTreeMap<u64, (String, scopecast_shared::api::ViewerRendition)>>>,
}

impl RungPlayer {
    /// It moved to `rendition`, for `reason`.
    pub fn moved(&self, rendition: &str, reason: String) {
        if let Some((_, info)) = lock(&self.players).get_mut(&self.id) {
            info.rendition = rendition.to_owned();
            info.reason = reason;
        }
    }
}

impl Drop for RungPlayer {
    fn drop(&mut self) {
        lock(&self.players).remove(&self.id);
    }
}

impl AppState {
    pub fn new(streams: BTreeMap<String, Arc<Stream>>, engine: Arc<WebRtcEngine>, security: SecurityConfig) -> Self {
        let session_limiter = Mutex::new(auth::RateLimiter::new(security.session_rate, 2.0 * security.session_rate));
        Self {
            streams,
            engine,
            security,
            session_limiter,
            sessions: Mutex::default(),
            rung_players: Arc::default(),
            rung_players_opened: AtomicU64::new(0),
            ended_early: Mutex::default(),
            sessions_created: AtomicU64::new(0),
            metrics: api::Metrics::default(),
            publishers: tokio::sync::Mutex::default(),
            process: Arc::default(),
            whip: BTreeMap::new(),
            stills: BTreeMap::new(),
        }
    }

    /// Starts publishing `stream` to `target`. A target of the same name is stopped first (its
    /// session deleted). Returns whether one was replaced, and the new target's status.
    pub async fn publish(&self, stream: &Arc<Stream>, target: crate::config::PublishTarget) -> (bool, Arc<crate::publish::TargetStatus>) {
        let mut publishers = self.publishers.lock().await;
        let key = (stream.name().to_owned(), target.name.clone());
        let replaced = match publishers.remove(&key) {
            Some(old) => {
                old.stop().await;
                true
            }
            None => false,
        };
        let task = crate::publish::spawn(Arc::clone(stream), Arc::clone(&self.engine), target);
        let status = Arc::clone(&task.status);
        publishers.insert(key, task);
        (replaced, status)
    }

    /// Stops publishing `stream` to the target `name` (its session deleted); false if none.
    pub async fn unpublish(&self, stream: &str, name: &str) -> bool {
        let task = self.publishers.lock().await.remove(&(stream.to_owned(), name.to_owned()));
        match task {
            Some(task) => {
                task.stop().await;
                true
            }
            None => false,
        }
    }

    /// Stops every publish target, deleting their sessions (on shutdown).
    pub async fn stop_publishing(&self) {
        let tasks = std::mem::take(&mut *self.publishers.lock().await);
        futures_util::future::join_all(tasks.into_values().map(crate::publish::PublishTask::stop)).await;
    }

    pub fn stream(&self, name: &str) -> Result<Arc<Stream>, ApiError> {
        self.streams.get(name).cloned().ok_or_else(|| ApiError::unknown_stream(name))
    }

    /// The stream's encoded video, which its viewers read.
    pub fn track(&self, stream: &str) -> Result<Arc<Track>, ApiError> {
        Ok(Arc::clone(&self.stream(stream)?.track))
    }

    pub fn session(&self, stream: &str, id: &str) -> Result<Arc<SessionEntry>, ApiError> {
        self.stream(stream)?;
        lock(&self.sessions).get(id).filter(|s| s.stream == stream).cloned().ok_or_else(ApiError::unknown_session)
    }

    /// Each WHEP viewer of `stream`: its rendition and why (ids shortened to 8 characters).
    pub fn viewer_renditions(&self, stream: &str) -> Vec<scopecast_shared::api::ViewerRendition> {
        let mut all: Vec<_> = lock(&self.sessions)
            .iter()
            .filter(|(_, s)| s.stream == stream)
            .filter_map(|(id, s)| Some(s.session.ladder.as_ref()?.info(&id[..id.len().min(8)])))
            .collect();
        all.sort_by(|a, b| a.session.cmp(&b.session));
        all.extend(lock(&self.rung_players).values().filter(|(s, _)| s == stream).map(|(_, info)| info.clone()));
        all
    }

    /// An H.264 rung's player, listed in its stream's status while the returned entry lives.
    pub fn rung_player(&self, stream: &str, info: scopecast_shared::api::ViewerRendition) -> RungPlayer {
        let id = self.rung_players_opened.fetch_add(1, Ordering::Relaxed) + 1;
        let info = scopecast_shared::api::ViewerRendition { session: format!("h264-{id}"), ..info };
        lock(&self.rung_players).insert(id, (stream.to_owned(), info));
        RungPlayer { id, players: Arc::clone(&self.rung_players) }
    }

    pub fn session_count(&self) -> usize {
        lock(&self.sessions).len()
    }

    /// WHEP sessions created since start.
    pub fn sessions_created(&self) -> u64 {
        self.sessions_created.load(Ordering::Relaxed)
    }

    fn insert_session(&self, id: &str, stream: &str, etag: String, session: Session, demand: DemandGuard) {
        let entry = Arc::new(SessionEntry { stream: stream.to_owned(), etag: Mutex::new(etag), session, _demand: demand, event_streams: Mutex::default() });
        self.sessions_created.fetch_add(1, Ordering::Relaxed);
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
                whep_sse::end_all(&entry);
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

    /// Ends every session, viewers' and publishers' (shutdown).
    pub async fn close_all(&self) {
        for endpoint in self.whip.values() {
            endpoint.close().await;
        }
        let all: Vec<_> = lock(&self.sessions).drain().map(|(_, s)| s).collect();
        for s in all {
            whep_sse::end_all(&s);
            s.session.close().await;
        }
    }
}

/// 128 random bits as hex: session ids and ETags cannot be guessed.
pub fn random_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The relay's routes.
pub fn router(state: Arc<AppState>) -> Router {
    let origins = &state.security.cors_origins;
    let allow_origin = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        // Validated as origins by the configuration.
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION, header::IF_MATCH])
        // Without these a cross-origin player plays but cannot read Location, never sends
        // DELETE, and sessions leak.
        .expose_headers([header::LOCATION, header::ETAG, header::LINK, ACCEPT_PATCH, header::HeaderName::from_static("accept-post")])
        .max_age(std::time::Duration::from_secs(86400))
        // A telescope UI on a public HTTPS site may call a relay on the LAN: Chromium asks
        // first (Private Network Access) and gives up without this.
        .allow_private_network(true);
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(api::healthz))
        .route("/metrics", get(api::metrics))
        .route("/api/v1/streams", get(api::list_streams))
        .route("/api/v1/streams/{name}", get(api::get_stream).patch(api::patch_stream))
        .route("/api/v1/streams/{name}/events", get(api::stream_events))
        .route("/api/v1/streams/{name}/timings", get(api::get_timings))
        .route("/api/v1/streams/{name}/focus", get(api::get_focus).put(api::put_focus).delete(api::delete_focus))
        .route("/api/v1/streams/{name}/stills", get(media::list_stills))
        .route("/api/v1/streams/{name}/stills/{file}", get(media::get_still))
        .route("/api/v1/streams/{name}/publish/{target}", put(api::put_publish_target).delete(api::delete_publish_target))
        .route("/{stream}/mjpeg", get(media::mjpeg))
        .route("/{stream}/snapshot.jpg", get(media::snapshot))
        .route("/{stream}/h264", get(h264_ws::upgrade))
        // Gzipped once and kept (assets.rs); MJPEG and event streams are never compressed.
        .route("/static/{*path}", get(static_file))
        .route("/{stream}/", get(stream_page))
        .route("/{stream}/whep", get(whep::endpoint_info).head(whep::endpoint_info).post(whep::post_offer))
        .route("/{stream}/whep/{id}", get(whep::session_info).patch(whep::patch_session).delete(whep::delete_session))
        .route("/{stream}/whip", get(whip::endpoint_info).head(whip::endpoint_info).post(whip::post_offer))
        .route("/{stream}/whip/{id}", axum::routing::patch(whip::patch_session).delete(whip::delete_session))
        .route("/{stream}/whep/{id}/rendition", get(whep::get_rendition).put(whep::put_rendition))
        .route("/{stream}/whep/{id}/sse", post(whep_sse::create))
        .route("/{stream}/whep/{id}/sse/{sid}", get(whep_sse::read).delete(whep_sse::delete))
        .fallback(|| async { ApiError::not_found() })
        // 405 with a problem body too (axum's own has none); axum still adds `Allow`.
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed", format!("{method} is not supported here"))
        })
        // Inside CORS, so that a page on another origin can read a 401 too.
        .layer(middleware::from_fn_with_state(Arc::clone(&state), auth::require_token))
        .layer(cors)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), whep::options_headers))
        .layer(middleware::from_fn(close_after_refused_body))
        .with_state(state)
}

/// A request refused before its body was read (too large, wrong type, unknown stream, rate
/// limited) leaves the connection unusable for another request. Saying so keeps clients from
/// sending their next request on a connection that is being closed (RFC 9112, 9.6).
async fn close_after_refused_body(req: Request, next: Next) -> Response {
    let headers = req.headers();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let has_body = declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    let mut res = next.run(req).await;
    if has_body && (res.status().is_client_error() || res.status().is_server_error()) {
        res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

async fn page(headers: HeaderMap) -> Response {
    serve_static("index.html", &headers).await
}

/// `/{stream}/`: the same page; it picks the stream from its own URL.
async fn stream_page(State(state): State<Arc<AppState>>, Path(stream): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    state.stream(&stream)?;
    Ok(serve_static("index.html", &headers).await)
}

async fn static_file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve_static(&path, &headers).await
}

async fn serve_static(path: &str, headers: &HeaderMap) -> Response {
    assets::serve(path, headers).await.unwrap_or_else(|| ApiError::not_found().into_response())
}
