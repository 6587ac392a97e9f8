//! Pulls another WHEP server's stream (`whep://`, `wheps://`: relay chaining) and passes its
//! H.264 through to this relay's readers, without decoding or encoding.
//!
//! As a WHEP client it does what MediaMTX's client expects of a server and expects the same: a
//! plain OPTIONS first (200 or 204; its `Link` ICE servers are used), the offer's POST answered
//! exactly 201 with SDP and a Location, DELETE at the end. A lost or failed session is pulled
//! again with backoff. The stream says `offline` soon after frames stop (so players do not
//! mistake the pause for a broken path), and its readers keep their sessions throughout, as
//! through a camera outage. Readers' keyframe requests go upstream as PLI, throttled.
//! A token for the server rides in the URL's password (`whep://:TOKEN@host/...`) and is sent
//! as a bearer token, never logged.

use super::health::{Backoff, SourceEvent};
use crate::publish::{read_created, whip, without_url};
use crate::stream::Stream;
use crate::webrtc::pull::{Puller, Rebase, UPSTREAM_KEYFRAME_INTERVAL};
use crate::webrtc::WebRtcEngine;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use url::Url;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// ICE must connect this soon after the answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames stopping for this long (or three of the upstream's frame intervals, if longer) make
/// the stream `offline`, while the session is given until the stall timeout to recover.
const OFFLINE_AFTER: Duration = Duration::from_millis(1_500);

pub fn spawn(stream: Arc<Stream>, url: Url, engine: Arc<WebRtcEngine>) -> tokio::task::JoinHandle<()> {
    let wanted = Arc::new(Notify::new());
    {
        let wanted = Arc::clone(&wanted);
        stream.track.set_producer(Box::new(move |_| wanted.notify_one()));
    }
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).timeout(REQUEST_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                stream.report(SourceEvent::Failed(format!("cannot build an HTTP client: {e}")));
                return;
            }
        };
        let token = url.password().map(str::to_owned);
        let mut endpoint = url;
        let _ = endpoint.set_username("");
        let _ = endpoint.set_password(None);
        let mut source = Source { client, endpoint, token, engine, wanted, clock: Arc::new(Rebase::default()) };
        super::supervise(&stream, &mut source).await;
    })
}

struct Source {
    client: reqwest::Client,
    endpoint: Url,
    token: Option<String>,
    engine: Arc<WebRtcEngine>,
    /// A reader wants a keyframe.
    wanted: Arc<Notify>,
    /// The output clock, continuous across upstream sessions.
    clock: Arc<Rebase>,
}

/// A pull session at the server.
struct Pull {
    puller: Puller,
    resource: Url,
}

impl Source {
    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        let request = self.client.request(method, url);
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// OPTIONS, offer, POST, answer.
    async fn open(&self, stream: &Stream) -> Result<Pull, (whip::WhipError, Option<Duration>)> {
        let unreachable = |e: reqwest::Error| (whip::WhipError::Unreachable(without_url(e)), None);
        let options = self.request(reqwest::Method::OPTIONS, self.endpoint.clone()).send().await.map_err(unreachable)?;
        if !matches!(options.status().as_u16(), 200 | 204) {
            return Err((whip::WhipError::Refused { status: options.status().as_u16(), detail: Some("to OPTIONS".into()) }, None));
        }
        let links: Vec<&str> = options.headers().get_all(reqwest::header::LINK).iter().filter_map(|v| v.to_str().ok()).collect();
        let servers: Vec<crate::turn::IceServer> = scopecast_shared::headers::ice_servers(links)
            .into_iter()
            .map(|s| crate::turn::IceServer { urls: vec![s.url], username: s.username, credential: s.credential })
            .collect();
        let puller = self
            .engine
            .create_puller(&servers, Arc::clone(&stream.track), Arc::clone(&self.clock))
            .await
            .map_err(|e| (whip::WhipError::WebRtc(e.to_string()), None))?;
        let post =
            self.request(reqwest::Method::POST, self.endpoint.clone()).header(reqwest::header::CONTENT_TYPE, "application/sdp").body(puller.offer.clone());
        let result = match post.send().await {
            Ok(response) => read_created(response).await,
            Err(e) => Err(unreachable(e)),
        };
        let (resource, answer) = match result {
            Ok(r) => r,
            Err(e) => {
                puller.close().await;
                return Err(e);
            }
        };
        let pull = Pull { puller, resource };
        if let Err(e) = pull.puller.accept_answer(&answer).await {
            pull.puller.close().await;
            self.delete(&pull.resource).await;
            return Err((whip::WhipError::WebRtc(e.to_string()), None));
        }
        Ok(pull)
    }

    /// Holds the session while frames come: reports them, sends readers' keyframe requests
    /// upstream (throttled), and returns why it ended.
    async fn hold(&self, stream: &Stream, pull: &Pull) -> String {
        let opened = tokio::time::Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_frames = stream.track.frames();
        let mut last_frame_at: Option<tokio::time::Instant> = None;
        // The upstream's typical frame interval (an average), so a slow origin is not offline.
        let mut interval = Duration::ZERO;
        let mut last_pli: Option<tokio::time::Instant> = None;
        let mut offline = false;
        // A joiner of a passed-through stream without a GOP yet needs a keyframe at once.
        self.wanted.notify_one();
        loop {
            tokio::select! {
                () = pull.puller.ended() => return "the WHEP server ended the session".to_owned(),
                () = self.wanted.notified() => {
                    let now = tokio::time::Instant::now();
                    if last_pli.is_none_or(|t| now - t >= UPSTREAM_KEYFRAME_INTERVAL) {
                        last_pli = Some(now);
                        pull.puller.request_keyframe().await;
                    }
                }
                _ = tick.tick() => {
                    let now = tokio::time::Instant::now();
                    let frames = stream.track.frames();
                    if frames != last_frames {
                        if let Some(at) = last_frame_at {
                            let gap = (now - at) / u32::try_from(frames - last_frames).unwrap_or(u32::MAX).max(1);
                            interval = if interval.is_zero() { gap } else { (interval * 7 + gap) / 8 };
                        }
                        last_frames = frames;
                        last_frame_at = Some(now);
                        offline = false;
                        stream.report(SourceEvent::Frame);
                        continue;
                    }
                    let silent = now - last_frame_at.unwrap_or(opened);
                    if last_frame_at.is_none() && !pull.puller.is_connected() && silent >= CONNECT_TIMEOUT {
                        return "ICE did not connect to the WHEP server".to_owned();
                    }
                    if silent >= stream.config.stall_timeout {
                        return format!("no frames from the WHEP server for {} s", silent.as_secs());
                    }
                    if !offline && last_frame_at.is_some() && silent >= OFFLINE_AFTER.max(interval * 3) {
                        offline = true;
                        stream.report(SourceEvent::Failed(format!("no frames from the WHEP server for {:.1} s", silent.as_secs_f64())));
                    }
                }
            }
        }
    }

    /// Ends the session at the server; failure is only logged (its consent check ends it).
    async fn delete(&self, resource: &Url) {
        match self.request(reqwest::Method::DELETE, resource.clone()).timeout(Duration::from_secs(3)).send().await {
            Ok(r) if whip::delete_done(r.status().as_u16()) => {}
            Ok(r) => tracing::debug!("the WHEP server answered {} to DELETE", r.status()),
            Err(e) => tracing::debug!("cannot DELETE the pull session: {}", without_url(e)),
        }
    }
}

impl super::Connection for Source {
    /// Pulls, and pulls again after every failure, for as long as it is polled.
    async fn run(&mut self, stream: &Arc<Stream>) {
        let mut backoff = Backoff::default();
        loop {
            let frames_before = stream.track.frames();
            let (why, retry_after) = match self.open(stream).await {
                Ok(pull) => {
                    let why = self.hold(stream, &pull).await;
                    pull.puller.close().await;
                    self.delete(&pull.resource).await;
                    (why, None)
                }
                Err((e, retry_after)) => (e.to_string(), retry_after),
            };
            stream.report(SourceEvent::Failed(why));
            if stream.track.frames() > frames_before {
                backoff.reset();
            }
            tokio::time::sleep(whip::next_wait(&mut backoff, rand::random(), retry_after)).await;
        }
    }
}
