//! The browser layer: the exported `mount` and `mountPage`, the Leptos views, and the
//! controller that carries out the ladder's commands. Built for wasm32 only.

mod h264;
mod mse;
mod net;
mod player;
mod sky;
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

fn tools(options: &JsValue) -> sky::Tools {
    let embed = sky::Tools::embed();
    let reticle = match option_str(options, "reticle").as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("circles") => Some(sky::Reticle::Circles),
        _ if option_bool(options, "reticle", false) => Some(sky::Reticle::Cross),
        _ => None,
    };
    let stills = match option_str(options, "stills") {
        Some(n) if n.trim().parse::<u32>().is_ok() => n.trim().parse().unwrap_or(0).min(50),
        _ if option_bool(options, "stills", false) => sky::DEFAULT_STILLS,
        _ => 0,
    };
    sky::Tools {
        zoom: option_bool(options, "zoom", embed.zoom),
        fullscreen: option_bool(options, "fullscreen", embed.fullscreen),
        snapshot: option_bool(options, "snapshot", embed.snapshot),
        reticle,
        histogram: option_bool(options, "histogram", embed.histogram),
        age: option_bool(options, "age", embed.age),
        focus: option_bool(options, "focus", embed.focus),
        stills,
        start_hidden: false,
    }
}

/// Mounts a live view into `element`. Options: `src` (the stream's URL on a Scopecast relay) or
/// `whep` (a WHEP endpoint on any server, used as it is: WebRTC only), `token`,
/// `fallback` (MJPEG when WebRTC is down; default true), `controls` (the details toggle;
/// default true), `overlay` (details shown at start; default false), `autoplay` (connect at
/// once; default true, else on a click), `rendition` (one of the relay's renditions to pin from
/// the start, or `auto`, the default: the relay chooses by the viewer's link).
///
/// The sky tools (each an attribute of `<scopecast-player>` too): `zoom` (wheel, pinch, drag,
/// keys; double click or `1` for 1:1 pixels), `fullscreen` (default true), `snapshot` (saves
/// the camera's original JPEG named with its capture time; default true), `reticle` (a cross,
/// or `circles`), `histogram`, `age` ("new frame 3 s ago" on slow streams; default true),
/// `focus` (click a star or draw a box: that region at the camera's own pixels, with its
/// sharpness figure), `stills` (a strip of the last stills the relay kept: a number, or 6).
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
        tools: tools(&options),
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
