//! RTSP cameras (`rtsp://`), through retina, the client Moonfire NVR runs against real cameras.
//!
//! The first H.264 video stream is set up over TCP (interleaved in the RTSP connection), or
//! over UDP when the camera refuses TCP (VLC answers 461) or the stream is configured so. Each
//! access unit arrives in Annex B with the parameter sets in front of every IDR (retina puts
//! the SDP's `sprop-parameter-sets` there when the camera sends them only out of band).
//!
//! Then, per `encoded::Verdict`: **passthrough** (packetized once for every viewer, the GOP kept for
//! joiners) when browsers can play the camera's H.264 as it is (Baseline, Main or High, no
//! B-frames), or **transcode** (decoded on a thread of its own, only while someone watches,
//! and encoded like an MJPEG camera's pictures). B-frames that show up in a stream first
//! passed through switch it to transcode for good. Credentials in the URL go to the camera
//! (Basic or Digest), never to logs or the API.

use super::encoded::EncodedIngest;
use super::health::{Backoff, SourceEvent, Watchdog};
use crate::config::{RtspTransport, VideoMode};
use crate::stream::Stream;
use bytes::Bytes;
use futures_util::StreamExt;
use retina::client::{Credentials, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport, UdpTransportOptions};
use retina::codec::{CodecItem, FrameFormat};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// DESCRIBE, SETUP and PLAY each get this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
pub fn spawn(stream: Arc<Stream>, url: Url, transport: RtspTransport, mode: VideoMode) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let creds = (!url.username().is_empty() || url.password().is_some())
            .then(|| Credentials { username: percent(url.username()), password: percent(url.password().unwrap_or_default()) });
        let mut endpoint = url;
        let _ = endpoint.set_username("");
        let _ = endpoint.set_password(None);
        let mut source = Source {
            url: endpoint,
            creds,
            transport,
            udp_fallback: false,
            watchdog: Watchdog::new(stream.config.stall_timeout, Instant::now()),
            backoff: Backoff::default(),
            encoded: EncodedIngest::new(mode),
        };
        super::supervise(&stream, &mut source).await;
    })
}

fn percent(s: &str) -> String {
    percent_decode(s)
}

/// URL userinfo is percent-encoded (a password with '@' or ':' must be); cameras want it raw.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b))) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Source {
    url: Url,
    creds: Option<Credentials>,
    transport: RtspTransport,
    /// The camera refused TCP once: UDP from now on (auto only).
    udp_fallback: bool,
    watchdog: Watchdog,
    backoff: Backoff,
    /// Passthrough or transcode, across sessions.
    encoded: EncodedIngest,
}

impl Source {
    fn transports(&self) -> Vec<Transport> {
        let tcp = Transport::Tcp(TcpTransportOptions::default());
        let udp = Transport::Udp(UdpTransportOptions::default());
        match (self.transport, self.udp_fallback) {
            (RtspTransport::Tcp, _) => vec![tcp],
            (RtspTransport::Udp, _) | (RtspTransport::Auto, true) => vec![udp],
            (RtspTransport::Auto, false) => vec![tcp, udp],
        }
    }

    /// DESCRIBE, SETUP (TCP, then UDP if refused), PLAY.
    async fn open(&mut self) -> Result<(retina::client::Demuxed, &'static str), String> {
        let mut last = String::new();
        for transport in self.transports() {
            let name = match transport {
                Transport::Udp(_) => "udp",
                _ => "tcp",
            };
            let options = SessionOptions::default().creds(self.creds.clone()).user_agent(format!("Scopecast/{}", env!("CARGO_PKG_VERSION")));
            let mut session = timeout("DESCRIBE", Session::describe(self.url.clone(), options)).await?;
            let Some(index) = session.streams().iter().position(|s| s.media() == "video" && s.encoding_name().eq_ignore_ascii_case("h264")) else {
                let offered: Vec<String> = session.streams().iter().map(|s| format!("{} {}", s.media(), s.encoding_name())).collect();
                return Err(format!("the camera offers no H.264 video (it offers: {})", offered.join(", ")));
            };
            let setup = SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE);
            match timeout("SETUP", session.setup(index, setup)).await {
                Ok(()) => {}
                Err(e) => {
                    last = e;
                    if name == "tcp" && self.transport == RtspTransport::Auto {
                        tracing::info!("the camera refused RTSP over TCP ({last}); trying UDP");
                        continue;
                    }
                    return Err(last);
                }
            }
            let playing = timeout("PLAY", session.play(PlayOptions::default())).await?;
            let demuxed = playing.demuxed().map_err(|e| clean(&e.to_string()))?;
            if name == "udp" && self.transport == RtspTransport::Auto {
                self.udp_fallback = true;
            }
            return Ok((demuxed, name));
        }
        Err(last)
    }

    /// One session: returns why it ended.
    async fn pull(&mut self, stream: &Arc<Stream>, frames: &mut u64) -> String {
        let (mut demuxed, transport) = match self.open().await {
            Ok(d) => d,
            Err(e) => return e,
        };
        tracing::debug!(stream = stream.name(), "RTSP session playing over {transport}");
        self.encoded.new_session(stream);
        self.watchdog.connected(Instant::now());
        loop {
            let item = match tokio::time::timeout_at(self.watchdog.deadline().into(), demuxed.next()).await {
                Err(_) => match self.watchdog.check(Instant::now()) {
                    Some(silence) => return silence.to_string(),
                    None => continue,
                },
                Ok(None) => return "the camera ended the session".to_owned(),
                Ok(Some(Err(e))) => return clean(&e.to_string()),
                Ok(Some(Ok(item))) => item,
            };
            let CodecItem::VideoFrame(frame) = item else {
                self.watchdog.bytes(Instant::now());
                continue;
            };
            let now = Instant::now();
            self.watchdog.frame(now);
            *frames += 1;
            let idr = frame.is_random_access_point();
            // The camera's 90 kHz presentation time (no reordering is passed through).
            let rtp_timestamp = frame.timestamp().timestamp() as u32;
            let annexb = Bytes::from(frame.into_data());
            self.encoded.frame(stream, Some(transport), annexb, idr, rtp_timestamp, now);
        }
    }
}

impl super::Connection for Source {
    async fn run(&mut self, stream: &Arc<Stream>) {
        self.watchdog.connected(Instant::now());
        loop {
            let mut frames = 0u64;
            let why = self.pull(stream, &mut frames).await;
            self.encoded.end_session();
            stream.report(SourceEvent::Failed(why));
            if frames > 0 {
                self.backoff.reset();
            }
            tokio::time::sleep(self.backoff.next_delay(rand::random())).await;
        }
    }
}

async fn timeout<T>(what: &str, f: impl std::future::Future<Output = Result<T, retina::Error>>) -> Result<T, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Err(_) => Err(format!("no answer to {what} for {} s", REQUEST_TIMEOUT.as_secs())),
        Ok(Err(e)) => Err(clean(&e.to_string())),
        Ok(Ok(v)) => Ok(v),
    }
}

/// retina's errors carry connection details over several lines; the first line says what
/// happened, which is what the API and log show.
fn clean(message: &str) -> String {
    let first = message.lines().next().unwrap_or(message).trim();
    let mut s: String = first.chars().take(240).collect();
    if s.len() < first.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_percent_decoded_for_the_camera() {
        assert_eq!(percent_decode("p%40ss%3Aword"), "p@ss:word");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz%4"), "bad%zz%4");
    }

    #[test]
    fn errors_are_one_short_line() {
        assert_eq!(clean("RTSP 461 Unsupported transport\nconn: 127.0.0.1:1->127.0.0.1:2"), "RTSP 461 Unsupported transport");
        assert_eq!(clean(&"x".repeat(1000)).chars().count(), 241);
    }
}
