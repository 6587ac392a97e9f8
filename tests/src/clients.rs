//! Plain HTTP clients of the relay's other outputs: a Server-Sent Events reader and an MJPEG
//! reader (which splits the stream with the relay's own multipart parser).

use bytes::Bytes;
use futures_util::StreamExt;
use scopecast_shared::multipart::{boundary_from_content_type, Event, MultipartParser, DEFAULT_MAX_PART};
use std::collections::VecDeque;
use std::time::Duration;

/// What came next on an event stream.
#[derive(Debug)]
pub enum Next {
    Event(SseEvent),
    Ended,
    TimedOut,
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub data: serde_json::Value,
}

pub struct SseReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    buf: String,
    ready: VecDeque<SseEvent>,
}

impl SseReader {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let res = reqwest::Client::new().get(url).header("accept", "text/event-stream").send().await?;
        anyhow::ensure!(res.status() == 200, "events answered {}", res.status());
        let ct = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        anyhow::ensure!(ct.starts_with("text/event-stream"), "content type {ct}");
        Ok(Self { body: res.bytes_stream().boxed(), buf: String::new(), ready: VecDeque::new() })
    }

    /// The next event (keep-alive comments skipped), or `None` when the stream ends or
    /// `timeout` passes.
    pub async fn next(&mut self, timeout: Duration) -> Option<SseEvent> {
        match self.next_or_end(timeout).await {
            Next::Event(e) => Some(e),
            Next::Ended | Next::TimedOut => None,
        }
    }

    /// Whether the server ends the stream within `timeout` (events before the end are skipped).
    pub async fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.next_or_end(deadline.saturating_duration_since(tokio::time::Instant::now())).await {
                Next::Event(_) => continue,
                Next::Ended => return true,
                Next::TimedOut => return false,
            }
        }
    }

    pub async fn next_or_end(&mut self, timeout: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Next::Event(e);
            }
            let chunk = match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::TimedOut,
                Ok(None) | Ok(Some(Err(_))) => return Next::Ended,
                Ok(Some(Ok(chunk))) => chunk,
            };
            self.buf.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut event, mut data) = (String::from("message"), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim());
                    }
                }
                if !data.is_empty() {
                    self.ready.push_back(SseEvent { event, data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)) });
                }
            }
        }
    }

    /// The next event named `name` whose data satisfies `pred`.
    pub async fn until(&mut self, name: &str, timeout: Duration, pred: impl Fn(&serde_json::Value) -> bool) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let e = self.next(left).await?;
            if e.event == name && pred(&e.data) {
                return Some(e);
            }
        }
    }
}

/// A JPEG from an MJPEG stream, with the capture time its part header gave.
#[derive(Debug, Clone)]
pub struct MjpegPart {
    pub jpeg: Bytes,
    pub timestamp: Option<f64>,
}

pub struct MjpegReader {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<Bytes>>,
    parser: MultipartParser,
    pub content_type: String,
}

impl MjpegReader {
    pub async fn open(url: &str) -> anyhow::Result<Self> {
        let res = reqwest::Client::new().get(url).send().await?;
        anyhow::ensure!(res.status() == 200, "MJPEG answered {}", res.status());
        let content_type = res.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let parser = MultipartParser::new(boundary_from_content_type(&content_type).as_deref(), DEFAULT_MAX_PART);
        Ok(Self { body: res.bytes_stream().boxed(), parser, content_type })
    }

    /// The next JPEG, or `None` after `timeout` or at the end of the stream.
    pub async fn next(&mut self, timeout: Duration) -> Option<MjpegPart> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(event) = self.parser.next_event() {
                if let Event::Jpeg(part) = event {
                    return Some(MjpegPart { jpeg: part.jpeg, timestamp: part.timestamp });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next()).await.ok()??.ok()?;
            self.parser.push(&chunk);
        }
    }
}
