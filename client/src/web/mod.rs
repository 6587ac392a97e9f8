//! The browser layer: the exported `mount` and `mountPage`, the Leptos views, and the
//! controller that carries out the ladder's commands. Built for wasm32 only.

mod h264;
mod net;
mod player;
mod stats;
mod view;

use js_sys::Reflect;
use leptos::prelude::*;
use player::Options;
use wasm_bindgen::prelude::*;
use web_sys::HtmlElement;

/// What `mount` returns: `destroy()` ends the WHEP session and removes the view.
#[wasm_bindgen]
pub struct PlayerHandle {
    view: Option<Box<dyn std::any::Any>>,
}

#[wasm_bindgen]
impl PlayerHandle {
    pub fn destroy(&mut self) {
        // Dropping the mount handle unmounts the view; its cleanup stops the player.
        self.view.take();
    }
}

fn option_str(options: &JsValue, key: &str) -> Option<String> {
    Reflect::get(options, &key.into()).ok().and_then(|v| v.as_string()).filter(|s| !s.is_empty())
}

/// A boolean option: `true`/`false`, or an attribute-style string (`""`, `"on"`, `"off"`, ...).
fn option_bool(options: &JsValue, key: &str, default: bool) -> bool {
    let Ok(v) = Reflect::get(options, &key.into()) else { return default };
    if let Some(b) = v.as_bool() {
        return b;
    }
    match v.as_string() {
        Some(s) => !matches!(s.trim().to_ascii_lowercase().as_str(), "false" | "off" | "no" | "0"),
        None => default,
    }
}

/// Mounts a live view into `element`. Options: `src` (the stream's URL on a Scopecast relay) or
/// `whep` (a WHEP endpoint on any server, used as it is: WebRTC only), `token`,
/// `fallback` (MJPEG when WebRTC is down; default true), `controls` (the details toggle;
/// default true), `overlay` (details shown at start; default false), `autoplay` (connect at
/// once; default true, else on a click), `rendition` (one of the relay's renditions to pin from
/// the start, or `auto`, the default: the relay chooses by the viewer's link).
#[wasm_bindgen]
pub fn mount(element: HtmlElement, options: JsValue) -> Result<PlayerHandle, JsValue> {
    let whep = option_str(&options, "whep");
    let src = match (&whep, option_str(&options, "src")) {
        (Some(w), _) if crate::headers::StreamUrls::for_whep(w).is_none() => return Err(JsValue::from_str(&format!("scopecast: not a WHEP URL: {w}"))),
        (Some(_), src) => src.unwrap_or_default(),
        (None, Some(src)) if crate::headers::StreamUrls::from_src(&src).is_some() => src,
        (None, Some(src)) => return Err(JsValue::from_str(&format!("scopecast: not a stream URL: {src}"))),
        (None, None) => return Err(JsValue::from_str("scopecast: give `src` (the stream's URL) or `whep` (a WHEP endpoint)")),
    };
    let opts = Options {
        src,
        whep,
        token: option_str(&options, "token"),
        fallback: option_bool(&options, "fallback", true),
        autoplay: option_bool(&options, "autoplay", true),
        rendition: option_str(&options, "rendition").filter(|r| r != "auto"),
    };
    let controls = option_bool(&options, "controls", true);
    let overlay = option_bool(&options, "overlay", false);
    let handle = leptos::mount::mount_to(element, move || view! { <view::LiveView opts=opts controls=controls overlay=overlay /> });
    Ok(PlayerHandle { view: Some(Box::new(handle)) })
}

/// Mounts the relay's page (stream list and player) into `element`.
#[wasm_bindgen(js_name = mountPage)]
pub fn mount_page(element: HtmlElement) {
    let handle = leptos::mount::mount_to(element, view::Page);
    // The page lives as long as the document.
    std::mem::forget(handle);
}
