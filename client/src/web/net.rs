//! HTTP through gloo-net, plus the few browser calls it does not cover.

use gloo_net::http::{Method, RequestBuilder, Response};
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, Headers, RequestInit};

pub fn window() -> web_sys::Window {
    web_sys::window().expect("a browser window")
}

pub fn document() -> web_sys::Document {
    window().document().expect("a document")
}

/// Relative URLs (a page served by the relay) against the page's own address.
pub fn absolute(url: &str) -> String {
    if url.contains("://") {
        return url.to_owned();
    }
    crate::headers::resolve(&window().location().href().unwrap_or_default(), url)
}

/// Bytes as a `Blob` of type `mime`.
pub fn blob(bytes: &[u8], mime: &str) -> Result<web_sys::Blob, JsValue> {
    let parts = js_sys::Array::of1(&Uint8Array::from(bytes));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    web_sys::Blob::new_with_u8_array_sequence_and_options(&parts, &opts)
}

/// An object URL for bytes (revoke it when done).
pub fn blob_url(bytes: &[u8], mime: &str) -> Result<String, JsValue> {
    web_sys::Url::create_object_url_with_blob(&blob(bytes, mime)?)
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
    pub method: Method,
    pub url: &'a str,
    pub body: Option<&'a str>,
    pub headers: &'a [(&'a str, &'a str)],
    pub token: Option<&'a str>,
    pub signal: Option<&'a AbortSignal>,
}

impl<'a> Req<'a> {
    pub fn new(method: Method, url: &'a str, token: Option<&'a str>) -> Self {
        Self { method, url, body: None, headers: &[], token, signal: None }
    }
}

/// Sends a request; `Err` only when no HTTP answer came (network, CORS, abort).
pub async fn fetch(req: Req<'_>) -> Result<Response, gloo_net::Error> {
    let mut builder = RequestBuilder::new(req.url).method(req.method).abort_signal(req.signal);
    for (k, v) in req.headers {
        builder = builder.header(k, v);
    }
    if let Some(token) = req.token {
        builder = builder.header("Authorization", &format!("Bearer {token}"));
    }
    let request = match req.body {
        Some(body) => builder.body(body)?,
        None => builder.build()?,
    };
    request.send().await
}

/// DELETE that survives the page going away (the session's end on `pagehide`). Written with
/// web-sys because gloo-net's builder has no `keepalive`.
pub async fn delete_keepalive(url: &str, token: Option<&str>) {
    let init = RequestInit::new();
    init.set_method("DELETE");
    if let (Some(token), Ok(headers)) = (token, Headers::new()) {
        let _ = headers.set("Authorization", &format!("Bearer {token}"));
        init.set_headers(&headers);
    }
    // `keepalive` is not in every web-sys version's RequestInit; it is a plain field.
    let _ = Reflect::set(&init, &"keepalive".into(), &JsValue::TRUE);
    let _ = wait(window().fetch_with_str_and_init(url, &init)).await;
}

pub async fn text(res: &Response) -> String {
    res.text().await.unwrap_or_default()
}

pub fn header(res: &Response, name: &str) -> Option<String> {
    res.headers().get(name)
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
