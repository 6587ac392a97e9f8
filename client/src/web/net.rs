//! Small wrappers over fetch and promises.

use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Headers, RequestInit, Response};

pub fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

/// Wall-clock Unix time in ms.
pub fn unix_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// Monotonic ms (the ladder's clock).
pub fn mono_ms() -> u64 {
    window().performance().map_or_else(js_sys::Date::now, |p| p.now()) as u64
}

pub fn random() -> f64 {
    js_sys::Math::random()
}

pub async fn wait(p: Promise) -> Result<JsValue, JsValue> {
    JsFuture::from(p).await
}

/// A request's options: method, body, headers, bearer token, abort signal.
pub struct Req<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub body: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub token: Option<&'a str>,
    pub signal: Option<&'a AbortSignal>,
    /// Survive the page going away (DELETE on unload).
    pub keepalive: bool,
}

impl<'a> Req<'a> {
    pub fn new(method: &'a str, url: &'a str, token: Option<&'a str>) -> Self {
        Self { method, url, body: None, headers: &[], token, signal: None, keepalive: false }
    }
}

/// Sends a request; `Err` only when no HTTP answer came (network, CORS, abort).
pub async fn fetch(req: Req<'_>) -> Result<Response, JsValue> {
    let init = RequestInit::new();
    init.set_method(req.method);
    let headers = Headers::new()?;
    for (k, v) in req.headers {
        headers.set(k, v)?;
    }
    if let Some(token) = req.token {
        headers.set("Authorization", &format!("Bearer {token}"))?;
    }
    init.set_headers(&headers);
    if let Some(body) = req.body {
        init.set_body(&JsValue::from_str(body));
    }
    if req.keepalive {
        // `keepalive` is not in every web-sys version's RequestInit; it is a plain field.
        Reflect::set(&init, &"keepalive".into(), &JsValue::TRUE)?;
    }
    init.set_signal(req.signal);
    let res = wait(window().fetch_with_str_and_init(req.url, &init)).await?;
    res.dyn_into::<Response>()
}

pub async fn text(res: &Response) -> String {
    match res.text() {
        Ok(p) => wait(p).await.ok().and_then(|v| v.as_string()).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

pub fn header(res: &Response, name: &str) -> Option<String> {
    res.headers().get(name).ok().flatten()
}

/// What a refused request said: an RFC 9457 problem's `detail` or `title`, else the status.
pub async fn problem_detail(res: &Response) -> String {
    let body = text(res).await;
    serde_json::from_str::<scopecast_shared::Problem>(&body)
        .ok()
        .map(|p| p.detail.clone().unwrap_or_else(|| p.title.clone()))
        .unwrap_or_else(|| format!("HTTP {}", res.status()))
}

/// Reads one chunk from a stream reader: `None` at the end.
pub async fn read_chunk(reader: &web_sys::ReadableStreamDefaultReader) -> Result<Option<Vec<u8>>, JsValue> {
    let result = wait(reader.read()).await?;
    if Reflect::get(&result, &"done".into())?.is_truthy() {
        return Ok(None);
    }
    let value = Reflect::get(&result, &"value".into())?;
    Ok(Some(value.dyn_into::<Uint8Array>()?.to_vec()))
}
