//! WHIP ingest (RFC 9725): a publisher (OBS, GStreamer, FFmpeg 7, a browser) pushes a
//! stream's H.264 to `POST /{stream}/whip` on a stream configured as `source = "whip"`. The
//! HTTP contract is `crate::http::whip`; this is the source side:
//! - One publisher at a time. A new one replaces the old: a publisher that comes back after a
//!   crash or a network change is not locked out by its own stale session (MediaMTX's default
//!   too). Both hold the token, so neither is a stranger.
//! - Its access units take the encoded path (`encoded.rs`): passed through, or transcoded when
//!   its H.264 is not what browsers play, or when configured.
//! - Viewers' keyframe requests (a joiner without a kept GOP, PLI, FIR) go upstream as PLI,
//!   throttled; when transcoding, the encoder makes them.
//! - Its leaving (DELETE, a lost connection, a replacement) is an outage like a camera's:
//!   offline, viewers keep their sessions, and the next publisher continues the same clock.

use super::encoded::EncodedIngest;
use super::health::SourceEvent;
use crate::config::VideoMode;
use crate::stream::Stream;
use crate::webrtc::ingest::IngestSession;
use crate::webrtc::pull::UPSTREAM_KEYFRAME_INTERVAL;
use scopecast_shared::api::VideoPath;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use tokio::sync::{watch, Notify};

/// A publisher that has not connected by then is closed (its POST held nothing).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Frames stopping for this long (or three of the publisher's frame intervals, if longer) make
/// the stream `offline`; the session stays, for the publisher to resume or end.
const OFFLINE_AFTER: Duration = Duration::from_millis(1_500);

/// A stream's WHIP endpoint: who may publish, and the publisher now sending.
pub struct Endpoint {
    stream: String,
    token: Option<String>,
    current: watch::Sender<Option<Arc<Publisher>>>,
}

/// One publisher's session.
pub struct Publisher {
    /// Its resource's id (the Location's last segment).
    pub id: String,
    /// Changes with each ICE restart.
    pub etag: Mutex<String>,
    pub ingest: IngestSession,
    pub from: Option<IpAddr>,
    /// Why it ended, when the relay ended it (DELETE, replaced).
    ended_because: Mutex<Option<&'static str>>,
}

impl Publisher {
    pub fn new(id: String, etag: String, ingest: IngestSession, from: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self { id, etag: Mutex::new(etag), ingest, from, ended_because: Mutex::new(None) })
    }
}

impl Endpoint {
    pub fn new(stream: &str, token: Option<String>) -> Arc<Self> {
        Arc::new(Self { stream: stream.to_owned(), token, current: watch::channel(None).0 })
    }

    /// Whether `presented` (a bearer token, if any) may publish: it is the endpoint's, or the
    /// endpoint has none.
    pub fn admits(&self, presented: Option<&str>) -> bool {
        match (&self.token, presented) {
            (None, _) => true,
            (Some(expected), Some(token)) => bool::from(token.as_bytes().ct_eq(expected.as_bytes())),
            (Some(_), None) => false,
        }
    }

    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    /// Makes `publisher` the stream's; the one it replaces, if any, is closed.
    pub fn install(&self, publisher: Arc<Publisher>) {
        if let Some(old) = self.current.send_replace(Some(publisher)) {
            *crate::lock(&old.ended_because) = Some("a new publisher replaced it");
            tracing::info!(stream = self.stream, session = %&old.id[..8], "WHIP publisher replaced by a new one");
            tokio::spawn(async move { old.ingest.session.close().await });
        }
    }

    /// The publisher `id`, if it is the current one.
    pub fn publisher(&self, id: &str) -> Option<Arc<Publisher>> {
        self.current.borrow().as_ref().filter(|p| p.id == id).cloned()
    }

    /// Ends the publisher `id` if it is the current one (`why`, when the relay ends it, is
    /// what the stream's error will say); whether it was.
    pub async fn end(&self, id: &str, why: Option<&'static str>) -> bool {
        let mut ended = None;
        self.current.send_if_modified(|current| {
            if current.as_ref().is_some_and(|p| p.id == id) {
                ended = current.take();
                true
            } else {
                false
            }
        });
        match ended {
            Some(p) => {
                if let Some(why) = why {
                    crate::lock(&p.ended_because).get_or_insert(why);
                }
                p.ingest.session.close().await;
                true
            }
            None => false,
        }
    }

    /// Ends the current publisher, if any (shutdown).
    pub async fn close(&self) {
        if let Some(p) = self.current.send_replace(None) {
            p.ingest.session.close().await;
        }
    }
}

/// Runs the stream's WHIP source until the stream stops.
pub fn spawn(stream: Arc<Stream>, endpoint: Arc<Endpoint>, video: VideoMode) -> tokio::task::JoinHandle<()> {
    let wanted = Arc::new(Notify::new());
    {
        let wanted = Arc::clone(&wanted);
        stream.track.set_producer(Box::new(move |_| wanted.notify_one()));
    }
    // Said before the task runs, so the API never shows a WHIP stream as "connecting" to a
    // source that only comes when a publisher does.
    stream.report(SourceEvent::Failed(format!("waiting for a WHIP publisher at /{}/whip", stream.name())));
    tokio::spawn(async move {
        let mut source = Source { endpoint, encoded: EncodedIngest::new(video), wanted, last_pli: None };
        let mut arrivals = source.endpoint.current.subscribe();
        loop {
            let publisher = tokio::select! {
                r = arrivals.wait_for(Option::is_some) => match r {
                    Ok(p) => p.clone(),
                    Err(_) => return,
                },
                () = stream.stopped() => return,
            };
            let Some(publisher) = publisher else { continue };
            arrivals.mark_unchanged();
            let why = tokio::select! {
                why = source.hold(&stream, &publisher, &mut arrivals) => why,
                () = stream.stopped() => return,
            };
            source.encoded.end_session();
            source.endpoint.end(&publisher.id, None).await;
            let why = crate::lock(&publisher.ended_because).map_or(why, |w| format!("the WHIP publisher left: {w}"));
            tracing::info!(stream = stream.name(), session = %&publisher.id[..8], "WHIP publisher gone: {why}");
            stream.report(SourceEvent::Failed(why));
        }
    })
}

struct Source {
    endpoint: Arc<Endpoint>,
    encoded: EncodedIngest,
    /// A reader wants a keyframe.
    wanted: Arc<Notify>,
    last_pli: Option<Instant>,
}

impl Source {
    /// Takes one publisher's frames until it goes: returns why.
    async fn hold(&mut self, stream: &Arc<Stream>, publisher: &Publisher, arrivals: &mut watch::Receiver<Option<Arc<Publisher>>>) -> String {
        let Some(mut frames) = publisher.ingest.take_frames() else { return "the WHIP session was already used".to_owned() };
        tracing::info!(stream = stream.name(), session = %&publisher.id[..8], from = ?publisher.from, "WHIP publisher connected");
        self.encoded.new_session(stream);
        stream.report(SourceEvent::Starting);
        let opened = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        let mut last_frame_at: Option<Instant> = None;
        let mut interval = Duration::ZERO;
        let mut offline = false;
        let mut asked = false;
        let mut rejected = 0u64;
        loop {
            tokio::select! {
                frame = frames.recv() => {
                    let Some(frame) = frame else { return "the WHIP publisher's connection closed".to_owned() };
                    let now = Instant::now();
                    if let Some(at) = last_frame_at {
                        interval = if interval.is_zero() { now - at } else { (interval * 7 + (now - at)) / 8 };
                    }
                    last_frame_at = Some(now);
                    offline = false;
                    let Some(timestamp) = frame.packets.first().map(|p| p.header.timestamp) else { continue };
                    match crate::pipeline::depacketize(&frame) {
                        Some(annexb) => {
                            let idr = crate::media::h264::is_idr(&annexb);
                            self.encoded.frame(stream, Some("WebRTC"), annexb, idr, timestamp, now);
                        }
                        None => {
                            rejected += 1;
                            if rejected.is_power_of_two() {
                                tracing::warn!(stream = stream.name(), "{rejected} WHIP frames skipped: not H.264 (RFC 6184) payloads");
                            }
                        }
                    }
                }
                () = self.wanted.notified() => self.keyframe(stream, publisher).await,
                r = arrivals.changed() => {
                    // Replaced or deleted: this publisher is no longer the current one.
                    if r.is_err() || arrivals.borrow_and_update().as_ref().is_none_or(|p| p.id != publisher.id) {
                        return "the WHIP publisher left".to_owned();
                    }
                }
                () = publisher.ingest.ended() => return "the WHIP publisher's connection was lost".to_owned(),
                _ = tick.tick() => {
                    let now = Instant::now();
                    if !asked && publisher.ingest.is_connected() {
                        // The first picture sooner than the publisher's next periodic keyframe
                        // (a transcoder, too, starts from one).
                        asked = true;
                        self.last_pli = Some(now);
                        publisher.ingest.request_keyframe().await;
                    }
                    let silent = now - last_frame_at.unwrap_or(opened);
                    if last_frame_at.is_none() && !publisher.ingest.is_connected() && silent >= CONNECT_TIMEOUT {
                        return format!("the WHIP publisher did not connect within {} s", CONNECT_TIMEOUT.as_secs());
                    }
                    if !offline && last_frame_at.is_some() && silent >= OFFLINE_AFTER.max(interval * 3) {
                        offline = true;
                        stream.report(SourceEvent::Failed(format!("no frames from the WHIP publisher for {:.1} s", silent.as_secs_f64())));
                    }
                }
            }
        }
    }

    /// A keyframe for readers: from the encoder when transcoding, else the publisher's (PLI,
    /// at most one per [`UPSTREAM_KEYFRAME_INTERVAL`]).
    async fn keyframe(&mut self, stream: &Stream, publisher: &Publisher) {
        if let (VideoPath::Transcoded, Some(encoder)) = (stream.video().path, &stream.encoder) {
            encoder.make_keyframe();
            return;
        }
        let now = Instant::now();
        if self.last_pli.is_none_or(|t| now - t >= UPSTREAM_KEYFRAME_INTERVAL) {
            self.last_pli = Some(now);
            publisher.ingest.request_keyframe().await;
        }
    }
}
