//! A WHIP endpoint (RFC 9725) of our own on loopback, built on the webrtc crate, that decodes
//! what it receives: for what Janus cannot be made to do on cue. Its entry URL answers 307 to
//! the real endpoint, which answers 201 with a relative Location; it counts DELETEs, can drop a
//! session as a crashed SFU would, and can refuse offers.

use crate::viewer::DecodedFrame;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use webrtc::peer_connection::sdp::session_description::RTCSessionDescription;
use webrtc::peer_connection::RTCPeerConnection;

pub const SINK_TOKEN: &str = "sink-token-1234";

/// One publish session the sink accepted.
pub struct SinkSession {
    pub pc: Arc<RTCPeerConnection>,
    pub offer: String,
    pub deleted: bool,
}

#[derive(Default)]
struct Inner {
    sessions: Vec<SinkSession>,
    /// Status to answer POSTs with instead of a session (e.g. 503), while set.
    refuse: Option<u16>,
    posts: u32,
}

pub struct WhipSink {
    /// The URL to configure: it redirects (307) to the endpoint proper.
    pub entry_url: String,
    inner: Arc<Mutex<Inner>>,
    frames: tokio::sync::Mutex<mpsc::UnboundedReceiver<(usize, DecodedFrame)>>,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct AppState {
    inner: Arc<Mutex<Inner>>,
    frames: mpsc::UnboundedSender<(usize, DecodedFrame)>,
}

impl WhipSink {
    pub async fn start() -> anyhow::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let state = AppState { inner: Arc::clone(&inner), frames: frames_tx };
        let app = axum::Router::new()
            .route("/entry", post(|| async { (StatusCode::TEMPORARY_REDIRECT, [("location", "/whip/ep?room=7")]) }))
            .route("/whip/ep", post(publish))
            .route("/whip/ep/sessions/{n}", delete(remove))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { entry_url: format!("http://{addr}/entry"), inner, frames: tokio::sync::Mutex::new(frames), server })
    }

    /// Sessions accepted so far, and which of them were DELETEd.
    pub fn sessions(&self) -> (usize, Vec<bool>) {
        let inner = self.inner.lock().expect("sink");
        (inner.sessions.len(), inner.sessions.iter().map(|s| s.deleted).collect())
    }

    pub fn posts(&self) -> u32 {
        self.inner.lock().expect("sink").posts
    }

    /// The offer of session `n`.
    pub fn offer(&self, n: usize) -> String {
        self.inner.lock().expect("sink").sessions[n].offer.clone()
    }

    /// Answers every POST with `status` (None: accept again).
    pub fn refuse(&self, status: Option<u16>) {
        self.inner.lock().expect("sink").refuse = status;
    }

    /// Closes session `n` without a word, as an SFU that restarted would.
    pub async fn drop_session(&self, n: usize) {
        let pc = Arc::clone(&self.inner.lock().expect("sink").sessions[n].pc);
        let _ = pc.close().await;
    }

    /// Waits for `count` decoded frames of session `n` (frames of other sessions are skipped).
    pub async fn frames_of(&self, n: usize, count: usize, timeout: Duration) -> Vec<DecodedFrame> {
        let mut rx = self.frames.lock().await;
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + timeout;
        while out.len() < count {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((session, frame))) if session == n => out.push(frame),
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        out
    }
}

impl Drop for WhipSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn publish(State(state): State<AppState>, headers: HeaderMap, body: String) -> Response {
    let refuse = {
        let mut inner = state.inner.lock().expect("sink");
        inner.posts += 1;
        inner.refuse
    };
    if let Some(status) = refuse {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return (status, [("retry-after", "1")], "refused by the test").into_response();
    }
    if bearer(&headers) != Some(SINK_TOKEN) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/sdp") {
        return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "not SDP").into_response();
    }
    match answer(&state, &body).await {
        Ok((n, answer)) => (
            StatusCode::CREATED,
            [("content-type", "application/sdp".to_owned()), ("location", format!("ep/sessions/{n}")), ("etag", "\"s1\"".to_owned())],
            answer,
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn answer(state: &AppState, offer: &str) -> anyhow::Result<(usize, String)> {
    let pc = crate::viewer::new_peer_on(None).await?;
    let n = {
        let mut inner = state.inner.lock().expect("sink");
        inner.sessions.push(SinkSession { pc: Arc::clone(&pc), offer: offer.to_owned(), deleted: false });
        inner.sessions.len() - 1
    };
    let frames = state.frames.clone();
    pc.on_track(Box::new(move |track, _, _| {
        let (rtp_tx, rtp_rx) = std::sync::mpsc::channel();
        let (tx, mut rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || crate::viewer::decode_loop(rtp_rx, tx));
        let frames = frames.clone();
        tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                let _ = frames.send((n, frame));
            }
        });
        tokio::spawn(async move {
            while let Ok((packet, _)) = track.read_rtp().await {
                if rtp_tx.send(packet).is_err() {
                    break;
                }
            }
        });
        Box::pin(async {})
    }));
    pc.set_remote_description(RTCSessionDescription::offer(offer.to_owned())?).await?;
    let answer = pc.create_answer(None).await?;
    let mut gathered = pc.gathering_complete_promise().await;
    pc.set_local_description(answer).await?;
    let _ = tokio::time::timeout(Duration::from_secs(3), gathered.recv()).await;
    let sdp = pc.local_description().await.ok_or_else(|| anyhow::anyhow!("no local description"))?.sdp;
    Ok((n, sdp))
}

async fn remove(State(state): State<AppState>, Path(n): Path<usize>, headers: HeaderMap) -> StatusCode {
    if bearer(&headers) != Some(SINK_TOKEN) {
        return StatusCode::UNAUTHORIZED;
    }
    let pc = {
        let mut inner = state.inner.lock().expect("sink");
        let Some(s) = inner.sessions.get_mut(n) else { return StatusCode::NOT_FOUND };
        s.deleted = true;
        Arc::clone(&s.pc)
    };
    let _ = pc.close().await;
    StatusCode::OK
}
