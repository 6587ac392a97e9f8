//! Pulls an MJPEG stream over HTTP(S) and feeds its JPEGs to the pipeline, reconnecting with
//! capped exponential backoff. Credentials in the URL are sent as Basic auth and never logged.

use super::multipart::{boundary_from_content_type, Event, MultipartParser, Skip, DEFAULT_MAX_PART};
use crate::config::redact;
use crate::pipeline::{CapturedFrame, Pipeline, SourceFrame};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// No bytes for this long means the camera is gone even if the socket is open.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub fn spawn(pipeline: Arc<Pipeline>, url: Url) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shown = redact(&url);
        let client = match reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).build() {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(stream = %pipeline.name, "cannot build an HTTP client: {e}");
                return;
            }
        };
        let mut backoff = BACKOFF_MIN;
        let mut last_error = String::new();
        while !pipeline.is_stopped() {
            let started = Instant::now();
            match pull(&client, &url, &pipeline).await {
                Ok(()) => last_error = String::from("stream ended"),
                Err(e) => {
                    // Log a state change once, not once per retry.
                    if e != last_error {
                        tracing::warn!(stream = %pipeline.name, url = %shown, "source: {e}");
                        last_error = e;
                    }
                }
            }
            if started.elapsed() > Duration::from_secs(5) {
                backoff = BACKOFF_MIN;
            }
            let jitter = Duration::from_millis(rand::random::<u64>() % (backoff.as_millis() as u64 / 2 + 1));
            tokio::time::sleep(backoff + jitter).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    })
}

/// One connection: returns when the stream ends or fails.
async fn pull(client: &reqwest::Client, url: &Url, pipeline: &Pipeline) -> Result<(), String> {
    let mut request_url = url.clone();
    let (user, password) = (url.username().to_owned(), url.password().map(str::to_owned));
    let _ = request_url.set_username("");
    let _ = request_url.set_password(None);
    let mut request = client.get(request_url);
    if !user.is_empty() || password.is_some() {
        request = request.basic_auth(user, password);
    }
    let response = request.send().await.map_err(|e| format!("connect failed: {}", without_url(&e)))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let content_type = response.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let boundary = boundary_from_content_type(&content_type);
    let mut parser = MultipartParser::new(boundary.as_deref(), DEFAULT_MAX_PART);
    tracing::info!(stream = %pipeline.name, "source connected ({content_type})");
    let mut body = response.bytes_stream();
    let mut skipped_logged = false;
    loop {
        let chunk = match tokio::time::timeout(READ_TIMEOUT, body.next()).await {
            Err(_) => return Err(format!("no data for {} s", READ_TIMEOUT.as_secs())),
            Ok(None) => {
                while let Some(event) = parser.finish() {
                    deliver(event, pipeline, &mut skipped_logged);
                }
                return Ok(());
            }
            Ok(Some(Err(e))) => return Err(format!("read failed: {}", without_url(&e))),
            Ok(Some(Ok(chunk))) => chunk,
        };
        parser.push(&chunk);
        while let Some(event) = parser.next_event() {
            deliver(event, pipeline, &mut skipped_logged);
        }
        if pipeline.is_stopped() {
            return Ok(());
        }
    }
}

fn deliver(event: Event, pipeline: &Pipeline, skipped_logged: &mut bool) {
    match event {
        // Timestamp on arrival: parts carry no usable timestamps of our clock.
        Event::Jpeg(part) => pipeline.push_frame(CapturedFrame { data: SourceFrame::Jpeg(part.jpeg), captured: Instant::now() }),
        Event::Skipped(skip) => {
            pipeline.stats.decode_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !*skipped_logged {
                let why = match skip {
                    Skip::TooLarge { size } => format!("part of {size} bytes is over the {DEFAULT_MAX_PART}-byte cap"),
                    Skip::NotJpeg { size } => format!("part of {size} bytes is not a JPEG"),
                    Skip::BadHeaders => "unreadable part headers".to_owned(),
                };
                tracing::warn!(stream = %pipeline.name, "skipping MJPEG part: {why} (further skips counted, not logged)");
                *skipped_logged = true;
            }
        }
    }
}

/// The error and its causes on one line. The request URL printed by reqwest has had its
/// credentials removed before the request was built.
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}
