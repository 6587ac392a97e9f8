//! WHIP publish targets (RFC 9725): a stream handed to an SFU or a CDN's ingest, which scales
//! it to audiences one machine cannot serve. Each target is one task that offers the stream's
//! encoded H.264 (the same packets viewers get: no second encode), POSTs the offer, keeps the
//! session while it lives, DELETEs it when stopped, and starts over with backoff when the target
//! drops it. A camera outage changes nothing here: the session carries on, as a viewer's does.

pub mod whip;

use crate::config::{endpoint, PublishTarget};
use crate::ingest::health::Backoff;
use crate::stream::{Stream, ViewerKind};
use crate::webrtc::publish::Publisher;
use crate::webrtc::{ViewerStats, WebRtcEngine};
use scopecast_shared::api::{PublishInfo, PublishState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use url::Url;
use whip::WhipError;

/// Each request to a target (the POST, a DELETE) gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publish session may stay disconnected (after ICE's own 4 s without consent)
/// before it is replaced by a new one.
const GIVE_UP_DISCONNECTED: Duration = Duration::from_secs(2);
/// A DELETE on the way out waits at most this long, so a dead target cannot hold up shutdown.
const DELETE_TIMEOUT: Duration = Duration::from_secs(3);

/// What the status API and metrics show of one target, updated by its task.
pub struct TargetStatus {
    pub name: String,
    pub endpoint: String,
    state: Mutex<(PublishState, u64, Option<String>)>,
    pub attempts: AtomicU64,
    pub connects: AtomicU64,
    /// Frames and keyframe requests over every session (each session adds to these).
    pub stats: Arc<ViewerStats>,
}

impl TargetStatus {
    fn new(target: &PublishTarget) -> Self {
        Self {
            name: target.name.clone(),
            endpoint: endpoint(&target.url),
            state: Mutex::new((PublishState::Connecting, crate::timing::unix_ms(), None)),
            attempts: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            stats: Arc::default(),
        }
    }

    pub fn state(&self) -> PublishState {
        crate::lock(&self.state).0
    }

    /// Enters `state`; an error is kept after recovery, for operators.
    fn set(&self, state: PublishState, error: Option<String>) {
        let mut s = crate::lock(&self.state);
        if s.0 != state {
            s.0 = state;
            s.1 = crate::timing::unix_ms();
        }
        if error.is_some() {
            s.2 = error;
        }
    }

    pub fn info(&self) -> PublishInfo {
        let (state, since, last_error) = crate::lock(&self.state).clone();
        PublishInfo {
            name: self.name.clone(),
            endpoint: self.endpoint.clone(),
            state,
            state_since_ms: since,
            last_error,
            attempts: self.attempts.load(Ordering::Relaxed),
            connects: self.connects.load(Ordering::Relaxed),
            frames_sent: self.stats.frames_sent.load(Ordering::Relaxed),
            keyframe_requests: self.stats.keyframe_requests.load(Ordering::Relaxed),
        }
    }
}

/// A running target. Stopping it deletes its session at the target.
pub struct PublishTask {
    pub status: Arc<TargetStatus>,
    stream: Arc<Stream>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PublishTask {
    /// Stops publishing: the session is DELETEd at the target (waiting at most a few seconds),
    /// and the target leaves the stream's status.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(DELETE_TIMEOUT + Duration::from_secs(2), &mut task).await.is_err() {
                task.abort();
            }
        }
        crate::lock(&self.stream.publish).retain(|s| !Arc::ptr_eq(s, &self.status));
    }
}

impl Drop for PublishTask {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// Starts publishing `stream` to `target`, until stopped. The target counts in the stream's
/// demand, so an on-demand camera runs while it is published.
pub fn spawn(stream: Arc<Stream>, engine: Arc<WebRtcEngine>, target: PublishTarget) -> PublishTask {
    let status = Arc::new(TargetStatus::new(&target));
    crate::lock(&stream.publish).push(Arc::clone(&status));
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(Arc::clone(&stream), engine, target, Arc::clone(&status), stopped));
    PublishTask { status, stream, stop, task: Some(task) }
}

/// A session the target accepted.
struct Live {
    publisher: Publisher,
    resource: Url,
}

async fn run(stream: Arc<Stream>, engine: Arc<WebRtcEngine>, target: PublishTarget, status: Arc<TargetStatus>, mut stop: watch::Receiver<bool>) {
    let _demand = stream.demand.join(ViewerKind::Publish);
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).redirect(reqwest::redirect::Policy::limited(5)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(stream = stream.name(), target = target.name, "cannot build an HTTP client: {e}");
            return;
        }
    };
    let mut backoff = Backoff::new(whip::RETRY_MIN, whip::RETRY_MAX);
    loop {
        status.set(PublishState::Connecting, None);
        status.attempts.fetch_add(1, Ordering::Relaxed);
        // Not cut short by a stop: an offer the target accepted must be deleted, not leaked.
        // Bounded by the gathering and request timeouts.
        let (outcome, retry_after) = offer(&client, &engine, &stream, &target, &status).await;
        match outcome {
            Ok(live) => {
                tracing::info!(stream = stream.name(), target = target.name, "publishing to {}", status.endpoint);
                let (ended, connected) = hold(&live, &status, &mut stop).await;
                live.publisher.close().await;
                delete(&client, &target, &live.resource).await;
                if connected {
                    backoff.reset();
                }
                if !ended {
                    status.set(PublishState::Stopped, None);
                    return;
                }
                let why = if connected { "the connection to the target was lost" } else { "ICE did not connect" };
                tracing::warn!(stream = stream.name(), target = target.name, "{why}; publishing again");
                status.set(PublishState::Retrying, Some(why.to_owned()));
            }
            Err(e) => {
                tracing::warn!(stream = stream.name(), target = target.name, "publish attempt failed: {e}");
                status.set(PublishState::Retrying, Some(e.to_string()));
            }
        }
        let wait = whip::next_wait(&mut backoff, rand::random(), retry_after);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => {
                status.set(PublishState::Stopped, None);
                return;
            }
        }
    }
}

/// Waits while the session lives: `Live` once connected. Returns (ended by the connection, it
/// had connected); `ended` is false when the target is being stopped.
///
/// A session whose ICE stays disconnected for [`GIVE_UP_DISCONNECTED`] counts as ended: a WHIP
/// target never restarts ICE towards us, and an SFU that restarted has forgotten the session, so
/// a new POST brings the picture back sooner than waiting for ICE to fail.
async fn hold(live: &Live, status: &TargetStatus, stop: &mut watch::Receiver<bool>) -> (bool, bool) {
    let mut connected = false;
    let mut disconnected_since: Option<tokio::time::Instant> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = live.publisher.ended() => return (true, connected),
            _ = stop.wait_for(|s| *s) => return (false, connected),
            _ = poll.tick() => {
                if !connected && live.publisher.is_connected() {
                    connected = true;
                    status.connects.fetch_add(1, Ordering::Relaxed);
                    status.set(PublishState::Live, None);
                }
                if !live.publisher.is_disconnected() {
                    disconnected_since = None;
                } else if disconnected_since.get_or_insert_with(tokio::time::Instant::now).elapsed() >= GIVE_UP_DISCONNECTED {
                    return (true, connected);
                }
            }
        }
    }
}

/// One attempt: offer, POST (following 307 and 308), answer. Also returns the target's
/// Retry-After, a floor for the next wait.
async fn offer(
    client: &reqwest::Client,
    engine: &WebRtcEngine,
    stream: &Stream,
    target: &PublishTarget,
    status: &TargetStatus,
) -> (Result<Live, WhipError>, Option<Duration>) {
    let servers = engine.ice_servers_for_session();
    let publisher = match engine.create_publisher(&servers, Arc::clone(&stream.track), Arc::clone(&status.stats)).await {
        Ok(p) => p,
        Err(e) => return (Err(WhipError::WebRtc(e.to_string())), None),
    };
    let mut request = client.post(target.url.clone()).header(reqwest::header::CONTENT_TYPE, "application/sdp").body(publisher.offer.clone());
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    let result = match request.send().await {
        Ok(response) => read_created(response).await,
        Err(e) => Err((WhipError::Unreachable(without_url(e)), None)),
    };
    let (resource, answer) = match result {
        Ok(r) => r,
        Err((e, retry_after)) => {
            publisher.close().await;
            return (Err(e), retry_after);
        }
    };
    let live = Live { publisher, resource };
    if let Err(e) = live.publisher.accept_answer(&answer).await {
        // The target made a resource for an answer we cannot use: remove it.
        live.publisher.close().await;
        delete(client, target, &live.resource).await;
        return (Err(WhipError::WebRtc(e.to_string())), None);
    }
    (Ok(live), None)
}

/// Reads the answer to an offer's POST, ours to a WHIP target or to a WHEP server we pull
/// from: exactly 201 with SDP, its resource resolved against the URL that answered (after any
/// 307 or 308). Returns the resource and the answer, or the error with the server's
/// Retry-After (a floor for the next wait).
pub(crate) async fn read_created(response: reqwest::Response) -> Result<(Url, String), (WhipError, Option<Duration>)> {
    let header = |name: reqwest::header::HeaderName| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header(reqwest::header::CONTENT_TYPE);
    let location = header(reqwest::header::LOCATION);
    let retry_after =
        header(reqwest::header::RETRY_AFTER).and_then(|v| scopecast_shared::headers::retry_after_ms(&v, crate::timing::unix_ms())).map(Duration::from_millis);
    let status_code = response.status().as_u16();
    let answered = response.url().clone();
    let body = response.bytes().await.map_err(|e| WhipError::Unreachable(without_url(e)));
    let detail = (status_code != 201).then(|| body.as_ref().ok().and_then(|b| whip::error_detail(content_type.as_deref(), b))).flatten();
    if let Err(e) = whip::check_created(status_code, content_type.as_deref(), detail) {
        return Err((e, retry_after));
    }
    let resource = whip::resource_url(&answered, location.as_deref()).map_err(|e| (e, None))?;
    let body = body.map_err(|e| (e, None))?;
    Ok((resource, String::from_utf8_lossy(&body).into_owned()))
}

/// Ends the session at the target (RFC 9725 4.3). Failure is logged: the target's own consent
/// check ends a session whose media stopped anyway.
async fn delete(client: &reqwest::Client, target: &PublishTarget, resource: &Url) {
    let mut request = client.delete(resource.clone()).timeout(DELETE_TIMEOUT);
    if let Some(token) = &target.token {
        request = request.bearer_auth(token);
    }
    match request.send().await {
        Ok(r) if whip::delete_done(r.status().as_u16()) => tracing::debug!(target = target.name, "publish session deleted"),
        Ok(r) => tracing::warn!(target = target.name, "the target answered {} to DELETE", r.status()),
        Err(e) => tracing::warn!(target = target.name, "cannot DELETE the publish session: {}", without_url(e)),
    }
}

/// A reqwest error and its causes, without the URL, whose path may hold the target's secret.
pub(crate) fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
