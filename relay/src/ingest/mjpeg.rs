//! Pulls an MJPEG stream over HTTP(S) and hands its JPEGs to the stream; a URL that answers a
//! single `image/jpeg` (a still-only camera) is polled instead.
//!
//! Reconnects with a short capped backoff; tells silence ("no data", "no complete frame") apart
//! from connection errors through the [`Watchdog`]; reports each change of state once; on
//! demand, connects only while someone watches. Credentials in the URL are sent as Basic auth
//! and never logged.

use super::health::{Backoff, SourceEvent, Watchdog};
use crate::pipeline::SourceFrame;
use crate::stream::Stream;
use futures_util::StreamExt;
use scopecast_shared::multipart::{boundary_from_content_type, Event, MultipartParser, Skip, DEFAULT_MAX_PART};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A camera's `X-Timestamp` further than this from our clock is not trusted as capture time.
const TIMESTAMP_TRUST: Duration = Duration::from_secs(24 * 3600);

pub fn spawn(stream: Arc<Stream>, url: Url) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT).build() {
            Ok(c) => c,
            Err(e) => {
                stream.report(SourceEvent::Failed(format!("cannot build an HTTP client: {e}")));
                return;
            }
        };
        let mut source = Source { client, url, watchdog: Watchdog::new(stream.config.stall_timeout, Instant::now()), backoff: Backoff::default() };
        super::supervise(&stream, &mut source).await;
    })
}

struct Source {
    client: reqwest::Client,
    url: Url,
    watchdog: Watchdog,
    backoff: Backoff,
}

impl Source {
    /// A GET of the camera's URL (credentials as Basic auth), bounded by the watchdog.
    async fn get(&self, if_none_match: Option<&str>) -> Result<reqwest::Response, String> {
        let mut request_url = self.url.clone();
        let (user, password) = (self.url.username().to_owned(), self.url.password().map(str::to_owned));
        let _ = request_url.set_username("");
        let _ = request_url.set_password(None);
        let mut request = self.client.get(request_url);
        if !user.is_empty() || password.is_some() {
            request = request.basic_auth(user, password);
        }
        if let Some(etag) = if_none_match {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        // A server that accepts the connection and never answers is silence too.
        let response = match tokio::time::timeout_at(self.watchdog.deadline().into(), request.send()).await {
            Err(_) => return Err(format!("no response for {} s", self.watchdog.limit().as_secs())),
            Ok(Err(e)) => return Err(format!("connect failed: {}", describe(&e))),
            Ok(Ok(r)) => r,
        };
        if !response.status().is_success() && response.status() != reqwest::StatusCode::NOT_MODIFIED {
            return Err(format!("HTTP {}", response.status()));
        }
        Ok(response)
    }

    /// One connection: returns when the stream ends, fails or falls silent.
    async fn pull(&mut self, stream: &Stream, frames: &mut u64) -> Result<(), String> {
        let response = self.get(None).await?;
        let content_type = response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if content_type.to_ascii_lowercase().starts_with("image/jpeg") {
            return self.poll_stills(stream, response, frames).await;
        }
        let mut parser = MultipartParser::new(boundary_from_content_type(&content_type).as_deref(), DEFAULT_MAX_PART);
        tracing::debug!(stream = stream.name(), "source connected ({content_type})");
        let mut body = response.bytes_stream();
        let mut skip_logged = false;
        loop {
            let chunk = match tokio::time::timeout_at(self.watchdog.deadline().into(), body.next()).await {
                Err(_) => match self.watchdog.check(Instant::now()) {
                    Some(silence) => return Err(silence.to_string()),
                    None => continue,
                },
                Ok(None) => {
                    while let Some(event) = parser.finish() {
                        self.deliver(event, stream, frames, &mut skip_logged);
                    }
                    return Ok(());
                }
                Ok(Some(Err(e))) => return Err(format!("read failed: {}", describe(&e))),
                Ok(Some(Ok(chunk))) => chunk,
            };
            self.watchdog.bytes(Instant::now());
            parser.push(&chunk);
            while let Some(event) = parser.next_event() {
                self.deliver(event, stream, frames, &mut skip_logged);
            }
        }
    }

    /// A camera that answers one JPEG per request: asked again and again, one request at a
    /// time, at the stream's `fps` (or as fast as it answers). A picture that did not change
    /// (304 to If-None-Match, the same ETag, or the same bytes) is not delivered, so it is not
    /// decoded and encoded again; the stream stays live and viewers keep the last picture.
    async fn poll_stills(&mut self, stream: &Stream, first: reqwest::Response, frames: &mut u64) -> Result<(), String> {
        let interval = stream.config.max_fps.filter(|f| *f > 0.0).map(|f| Duration::from_secs_f64(1.0 / f));
        let mut response = first;
        let mut last: Option<(Option<String>, bytes::Bytes)> = None;
        loop {
            let asked = tokio::time::Instant::now();
            let etag = response.headers().get(reqwest::header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if response.status() != reqwest::StatusCode::NOT_MODIFIED {
                let jpeg = match tokio::time::timeout_at(self.watchdog.deadline().into(), response.bytes()).await {
                    Err(_) => return Err(format!("no complete picture for {} s", self.watchdog.limit().as_secs())),
                    Ok(Err(e)) => return Err(format!("read failed: {}", describe(&e))),
                    Ok(Ok(b)) => b,
                };
                if !jpeg.starts_with(&[0xFF, 0xD8]) || jpeg.len() > DEFAULT_MAX_PART {
                    return Err(format!("the camera's answer of {} bytes is not a JPEG", jpeg.len()));
                }
                let unchanged = last.as_ref().is_some_and(|(last_etag, last_jpeg)| (etag.is_some() && *last_etag == etag) || *last_jpeg == jpeg);
                let now = Instant::now();
                self.watchdog.frame(now);
                if unchanged {
                    stream.report(SourceEvent::Frame);
                } else {
                    *frames += 1;
                    stream.deliver(SourceFrame::Jpeg(jpeg.clone()), now, crate::timing::wall_ms(now));
                }
                last = Some((etag, jpeg));
            } else {
                self.watchdog.frame(Instant::now());
                stream.report(SourceEvent::Frame);
            }
            if let Some(interval) = interval {
                tokio::time::sleep_until(asked + interval).await;
            }
            let known = last.as_ref().and_then(|(e, _)| e.clone());
            response = self.get(known.as_deref()).await?;
        }
    }

    fn deliver(&mut self, event: Event, stream: &Stream, frames: &mut u64, skip_logged: &mut bool) {
        match event {
            Event::Jpeg(part) => {
                // Arrival is when we have the frame; parts carry no timestamps of our clock.
                let now = Instant::now();
                self.watchdog.frame(now);
                *frames += 1;
                let arrival_ms = crate::timing::wall_ms(now);
                let captured_ms =
                    part.timestamp.map(|t| t * 1000.0).filter(|t| (t - arrival_ms).abs() < TIMESTAMP_TRUST.as_secs_f64() * 1000.0).unwrap_or(arrival_ms);
                stream.deliver(SourceFrame::Jpeg(part.jpeg), now, captured_ms);
            }
            Event::Skipped(skip) => {
                if let Some(encoder) = &stream.encoder {
                    encoder.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                }
                if !*skip_logged {
                    let why = match skip {
                        Skip::TooLarge { size } => format!("part of {size} bytes is over the {DEFAULT_MAX_PART}-byte cap"),
                        Skip::NotJpeg { size } => format!("part of {size} bytes is not a JPEG"),
                        Skip::BadHeaders => "unreadable part headers".to_owned(),
                    };
                    tracing::warn!(stream = stream.name(), "skipping MJPEG part: {why} (further skips on this connection are counted, not logged)");
                    *skip_logged = true;
                }
            }
        }
    }
}

impl super::Connection for Source {
    /// Connects, reads, and reconnects after every failure, for as long as it is polled.
    async fn run(&mut self, stream: &Arc<Stream>) {
        loop {
            self.watchdog.connected(Instant::now());
            let mut frames = 0u64;
            let why = match self.pull(stream, &mut frames).await {
                Ok(()) => "the camera ended the stream".to_owned(),
                Err(e) => e,
            };
            stream.report(SourceEvent::Failed(why));
            if frames > 0 {
                self.backoff.reset();
            }
            tokio::time::sleep(self.backoff.next_delay(rand::random())).await;
        }
    }
}

/// The root cause, which is what an operator can act on ("Connection refused (os error 111)"):
/// reqwest's own message repeats the URL and the layers it went through.
fn describe(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if e.is_timeout() {
        format!("timed out ({cause})")
    } else {
        cause.to_string()
    }
}
