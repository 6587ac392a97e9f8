//! An HTTP proxy in front of a relay that can make WebRTC impossible on demand, the way a
//! firewall or a misbehaving server would, while everything else (the page, MJPEG, events)
//! still passes. WebSockets (the player's H.264 rung) are refused unless allowed, as by a proxy
//! that does not speak them; allowed, they are tunnelled. Browser tests load the page through
//! it; it counts the bytes it sends the browser (rung benchmarks).

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

/// What the proxy does to WHEP offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Everything passes.
    Pass = 0,
    /// Offers are answered, but ICE can never connect (UDP blocked by a firewall): the offer
    /// reaches the relay without the browser's candidates, trickled ones are swallowed, and
    /// every candidate in the answer points at a dead port.
    BlockUdp = 1,
    /// Offers get `503` with `Retry-After: 1` (the relay refusing).
    RefuseWhep = 2,
    /// Media goes through the UDP proxy set with [`Proxy::route_media_through`]: the offer
    /// reaches the relay without the browser's candidates (it learns the proxy's address from
    /// the checks), trickled ones are swallowed, and the answer's candidates point at the proxy.
    /// ICE restarts pass the same way: without the browser's candidates, the answer fragment's
    /// pointed at the proxy.
    ViaMediaProxy = 3,
}

struct Shared {
    upstream: String,
    mode: AtomicU8,
    offers: AtomicU64,
    restarts: AtomicU64,
    refuse_restarts: std::sync::atomic::AtomicBool,
    media_proxy: std::sync::Mutex<Option<SocketAddr>>,
    websockets: std::sync::atomic::AtomicBool,
    websockets_open: AtomicU64,
    /// Response body and WebSocket message bytes sent to the browser.
    bytes_out: AtomicU64,
    client: reqwest::Client,
}

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str, mode: Mode) -> Self {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            mode: AtomicU8::new(mode as u8),
            offers: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            refuse_restarts: Default::default(),
            media_proxy: std::sync::Mutex::new(None),
            websockets: Default::default(),
            websockets_open: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            client: reqwest::Client::new(),
        });
        let app = axum::Router::new().fallback(forward).with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Sends media through a [`crate::udp_proxy::UdpProxy`] at `addr` from now on.
    pub fn route_media_through(&self, addr: SocketAddr) {
        *self.shared.media_proxy.lock().expect("lock") = Some(addr);
        self.set_mode(Mode::ViaMediaProxy);
    }

    /// WHEP offers seen so far.
    pub fn offers(&self) -> u64 {
        self.shared.offers.load(Ordering::SeqCst)
    }

    /// ICE restarts (PATCH with `If-Match`) seen so far.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Tunnels WebSockets (true) or refuses them with 403 (false, the default).
    pub fn allow_websockets(&self, allow: bool) {
        self.shared.websockets.store(allow, Ordering::SeqCst);
    }

    /// WebSocket tunnels open right now.
    pub fn websockets_open(&self) -> u64 {
        self.shared.websockets_open.load(Ordering::SeqCst)
    }

    /// Bytes of response bodies and WebSocket messages sent to the browser so far.
    pub fn bytes_out(&self) -> u64 {
        self.shared.bytes_out.load(Ordering::SeqCst)
    }

    /// Answers ICE restarts with 422 from now on, as a server that does not do them.
    pub fn refuse_restarts(&self) {
        self.shared.refuse_restarts.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    if req.headers().get("upgrade").and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return websocket(shared, req).await;
    }
    let mode = shared.mode.load(Ordering::SeqCst);
    let offer = req.method() == Method::POST && req.uri().path().ends_with("/whep");
    if offer {
        shared.offers.fetch_add(1, Ordering::SeqCst);
        if mode == Mode::RefuseWhep as u8 {
            let body = r#"{"type":"urn:scopecast:problem:test-refusal","title":"Refused by the test proxy","status":503}"#;
            return (StatusCode::SERVICE_UNAVAILABLE, [("content-type", "application/problem+json"), ("retry-after", "1")], body).into_response();
        }
    }
    let url = format!("{}{}", shared.upstream, req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let method = req.method().clone();
    let mut headers = req.headers().clone();
    headers.remove("host");
    // The body may be rewritten below; reqwest sets the length of what is sent.
    headers.remove("content-length");
    let trickle = req.method() == Method::PATCH;
    let restart = trickle && req.headers().contains_key("if-match");
    if restart {
        shared.restarts.fetch_add(1, Ordering::SeqCst);
        if shared.refuse_restarts.load(Ordering::SeqCst) {
            let body = r#"{"type":"urn:scopecast:problem:test-refusal","title":"ICE restarts refused by the test proxy","status":422}"#;
            return (StatusCode::UNPROCESSABLE_ENTITY, [("content-type", "application/problem+json")], body).into_response();
        }
    }
    let Ok(mut body) = axum::body::to_bytes(req.into_body(), 1 << 20).await else { return StatusCode::BAD_REQUEST.into_response() };
    let rewrite = mode == Mode::BlockUdp as u8 || mode == Mode::ViaMediaProxy as u8;
    if rewrite {
        if trickle && !restart {
            return StatusCode::NO_CONTENT.into_response();
        }
        if offer || restart {
            let sdp = String::from_utf8_lossy(&body);
            let kept: Vec<&str> = sdp.lines().filter(|l| !l.starts_with("a=candidate:")).collect();
            body = (kept.join("\r\n") + "\r\n").into();
        }
    }
    let Ok(res) = shared.client.request(method, &url).headers(headers).body(body).send().await else { return StatusCode::BAD_GATEWAY.into_response() };
    let status = res.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in res.headers() {
        if k != "content-length" && k != "transfer-encoding" && k != "connection" {
            out_headers.append(k, v.clone());
        }
    }
    if rewrite && ((offer && status == StatusCode::CREATED) || (restart && status == StatusCode::OK)) {
        let answer = res.text().await.unwrap_or_default();
        let target = if mode == Mode::ViaMediaProxy as u8 { *shared.media_proxy.lock().expect("lock") } else { None };
        let mut builder = Response::builder().status(status);
        for (k, v) in &out_headers {
            builder = builder.header(k, v);
        }
        let answer = match target {
            Some(addr) => candidates_at(&answer, addr),
            None => dead_candidates(&answer),
        };
        return builder.body(Body::from(answer)).unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response());
    }
    // Streamed, so MJPEG and event streams pass through as they come.
    let counter = Arc::clone(&shared);
    let stream = res.bytes_stream().inspect_ok(move |b| {
        counter.bytes_out.fetch_add(b.len() as u64, Ordering::Relaxed);
    });
    let stream = stream.map_err(std::io::Error::other);
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    *response.headers_mut() = out_headers;
    response.headers_mut().insert("x-test-proxy", HeaderValue::from_static("1"));
    response
}

/// A WebSocket: refused unless allowed, else connected upstream first (its refusal passed
/// on) and tunnelled message by message.
async fn websocket(shared: Arc<Shared>, req: Request) -> Response {
    use axum::extract::ws::{Message as Down, WebSocketUpgrade};
    use axum::extract::FromRequestParts;
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as Up;
    if !shared.websockets.load(Ordering::SeqCst) {
        return (StatusCode::FORBIDDEN, "WebSockets blocked by the test proxy").into_response();
    }
    let url = format!("{}{}", shared.upstream.replacen("http", "ws", 1), req.uri().path_and_query().map_or("/", |p| p.as_str()));
    let (mut parts, _) = req.into_parts();
    let Ok(ws) = WebSocketUpgrade::from_request_parts(&mut parts, &()).await else { return StatusCode::BAD_REQUEST.into_response() };
    let upstream = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok((upstream, _)) => upstream,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            return StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY).into_response()
        }
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    ws.on_upgrade(move |browser| async move {
        shared.websockets_open.fetch_add(1, Ordering::SeqCst);
        let (mut up_tx, mut up_rx) = upstream.split();
        let (mut down_tx, mut down_rx) = browser.split();
        loop {
            tokio::select! {
                m = up_rx.next() => match m {
                    Some(Ok(Up::Binary(b))) => {
                        shared.bytes_out.fetch_add(b.len() as u64, Ordering::Relaxed);
                        if down_tx.send(Down::Binary(b)).await.is_err() { break }
                    }
                    Some(Ok(Up::Text(t))) => if down_tx.send(Down::Text(t.as_str().into())).await.is_err() { break },
                    Some(Ok(_)) => {}
                    _ => break,
                },
                m = down_rx.next() => match m {
                    Some(Ok(Down::Binary(b))) => if up_tx.send(Up::Binary(b)).await.is_err() { break },
                    Some(Ok(Down::Text(t))) => if up_tx.send(Up::Text(t.as_str().into())).await.is_err() { break },
                    Some(Ok(Down::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = down_tx.close().await;
        let _ = up_tx.close().await;
        shared.websockets_open.fetch_sub(1, Ordering::SeqCst);
    })
}

/// Points every candidate in an SDP at `addr`.
fn candidates_at(sdp: &str, addr: SocketAddr) -> String {
    sdp.lines()
        .map(|l| {
            let mut parts: Vec<String> = l.split(' ').map(str::to_owned).collect();
            if l.starts_with("a=candidate:") && parts.len() > 5 {
                parts[4] = addr.ip().to_string();
                parts[5] = addr.port().to_string();
            }
            parts.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}

/// Points every candidate in an SDP at the discard port (9), where nothing answers STUN.
fn dead_candidates(sdp: &str) -> String {
    sdp.lines()
        .map(|l| {
            if l.starts_with("a=candidate:") {
                let mut parts: Vec<&str> = l.split(' ').collect();
                if parts.len() > 5 {
                    parts[5] = "9";
                }
                parts.join(" ")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        + "\r\n"
}
