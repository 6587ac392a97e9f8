//! An MJPEG camera on 127.0.0.1: serves `multipart/x-mixed-replace` like real servers do, from
//! live test-pattern JPEGs (optionally without Huffman tables, as USB cameras send them) or
//! from fixed JPEGs.

use axum::body::Body;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use scopecast::media::testpattern::TestPattern;
use scopecast::media::I420;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub enum Frames {
    /// The test pattern (with its timecode strip) encoded live.
    Pattern { width: usize, height: usize, strip_huffman: bool },
    /// The same JPEGs over and over.
    Fixed(Vec<Bytes>),
}

/// How parts are framed on the wire.
#[derive(Clone, Copy)]
pub enum Framing {
    /// FFmpeg's mpjpeg: `--b\r\nContent-type: ...\r\nContent-length: N\r\n\r\n<jpeg>\r\n`.
    FfmpegCrlf,
    /// No Content-Length, LF line ends, junk before the first part (parts end at the next boundary).
    BareLf,
}

pub struct Camera {
    pub addr: SocketAddr,
    /// Connections accepted so far.
    pub connections: Arc<AtomicUsize>,
    /// Connections streaming right now.
    pub active: Arc<AtomicUsize>,
    /// Bumped by [`Camera::stop`]: streams of an older generation end.
    generation: Arc<AtomicU64>,
    app: Router,
    server: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Camera {
    pub fn url(&self) -> String {
        format!("http://{}/stream", self.addr)
    }

    /// The camera goes away: new connections are refused and open streams end.
    pub async fn stop(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(server) = self.server.lock().expect("camera lock").take() {
            server.abort();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.active.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The camera comes back on the same address.
    pub async fn restart(&self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        *self.server.lock().expect("camera lock") = Some(serve(listener, self.app.clone()));
    }
}

fn serve(listener: tokio::net::TcpListener, app: Router) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

pub async fn start(frames: Frames, fps: f64, framing: Framing) -> Camera {
    let connections = Arc::new(AtomicUsize::new(0));
    let active = Arc::new(AtomicUsize::new(0));
    let generation = Arc::new(AtomicU64::new(0));
    let app = {
        let (connections, active, generation) = (Arc::clone(&connections), Arc::clone(&active), Arc::clone(&generation));
        Router::new().route(
            "/stream",
            get(move || {
                connections.fetch_add(1, Ordering::SeqCst);
                let frames = frames.clone();
                let live = Live { active: Arc::clone(&active), generation: Arc::clone(&generation), born: generation.load(Ordering::SeqCst) };
                async move { stream_response(frames, fps, framing, live) }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind camera");
    let addr = listener.local_addr().expect("addr");
    let server = serve(listener, app.clone());
    Camera { addr, connections, active, generation, app, server: std::sync::Mutex::new(Some(server)) }
}

/// One streaming connection: counted as active while it lives, ended when the camera stops.
struct Live {
    active: Arc<AtomicUsize>,
    generation: Arc<AtomicU64>,
    born: u64,
}

impl Live {
    fn camera_stopped(&self) -> bool {
        self.generation.load(Ordering::SeqCst) != self.born
    }
}

fn stream_response(frames: Frames, fps: f64, framing: Framing, live: Live) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    // The pattern is rendered and JPEG-encoded on a blocking thread, like a camera would.
    tokio::task::spawn_blocking(move || {
        live.active.fetch_add(1, Ordering::SeqCst);
        struct Done(Arc<AtomicUsize>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(Arc::clone(&live.active));
        let mut pattern = match &frames {
            Frames::Pattern { width, height, .. } => Some(TestPattern::new("camera", *width, *height)),
            Frames::Fixed(_) => None,
        };
        let interval = Duration::from_secs_f64(1.0 / fps);
        let mut next = std::time::Instant::now();
        let mut i = 0usize;
        if matches!(framing, Framing::BareLf) && tx.blocking_send(Ok(Bytes::from_static(b"junk before the first part\n\n"))).is_err() {
            return;
        }
        loop {
            if live.camera_stopped() {
                return;
            }
            // Capture time, in the strip and (like mjpg-streamer) in an X-Timestamp header.
            let captured_ms = scopecast::timing::unix_ms();
            let jpeg = match (&frames, &mut pattern) {
                (Frames::Pattern { strip_huffman, .. }, Some(p)) => {
                    let mut pic = I420::new(2, 2);
                    p.render(captured_ms, &mut pic);
                    let jpeg = scopecast::media::jpeg::encode_i420(&pic, 85).expect("encode");
                    Bytes::from(if *strip_huffman { strip_dht(&jpeg) } else { jpeg })
                }
                (Frames::Fixed(list), _) => list[i % list.len()].clone(),
                _ => return,
            };
            i += 1;
            let mut part = Vec::with_capacity(jpeg.len() + 128);
            match framing {
                Framing::FfmpegCrlf => part.extend(
                    format!(
                        "--ffmpeg\r\nContent-type: image/jpeg\r\nContent-length: {}\r\nX-Timestamp: {}.{:03}\r\n\r\n",
                        jpeg.len(),
                        captured_ms / 1000,
                        captured_ms % 1000
                    )
                    .as_bytes(),
                ),
                Framing::BareLf => part.extend(b"--frame\nContent-Type: image/jpeg\n\n"),
            }
            part.extend_from_slice(&jpeg);
            part.extend_from_slice(if matches!(framing, Framing::FfmpegCrlf) { b"\r\n" } else { b"\n" });
            if matches!(framing, Framing::BareLf) {
                // The part only ends when the next boundary arrives: send it at once.
                part.extend(b"--frame\n");
            }
            if tx.blocking_send(Ok(Bytes::from(part))).is_err() {
                return; // Client left.
            }
            next += interval;
            // Sleep in steps, so a slow camera that is stopped ends its stream at once.
            while let Some(wait) = next.checked_duration_since(std::time::Instant::now()) {
                if live.camera_stopped() {
                    return;
                }
                std::thread::sleep(wait.min(Duration::from_millis(20)));
            }
        }
    });
    let content_type = match framing {
        Framing::FfmpegCrlf => "multipart/x-mixed-replace;boundary=ffmpeg",
        Framing::BareLf => "multipart/x-mixed-replace; boundary=\"--frame\"",
    };
    let body = Body::from_stream(tokio_stream_from(rx));
    Response::builder().header("content-type", content_type).body(body).expect("response")
}

fn tokio_stream_from(mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Removes every DHT segment, leaving a JPEG that relies on the standard tables (as most USB
/// cameras' MJPEG frames do). turbojpeg writes the standard tables unless told to optimise.
pub fn strip_dht(jpeg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(jpeg.len());
    out.extend_from_slice(&jpeg[..2]);
    let mut i = 2;
    while i + 4 <= jpeg.len() && jpeg[i] == 0xFF {
        let marker = jpeg[i + 1];
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return out;
        }
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[i..i + 2 + len]);
        }
        i += 2 + len;
    }
    out.extend_from_slice(&jpeg[i..]);
    out
}
