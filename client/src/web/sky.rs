//! The sky tools of a live view: the picture's age, the reticle, the histogram, the snapshot
//! button, the focus panel and the stills strip (zoom, pan and the focus box are gestures of
//! the view itself, in `view.rs`). Their arithmetic is in [`crate::sky`].

use super::net::{self, Req};
use super::player::{with_token_query, Options, Ui};
use super::view::LiveView;
use crate::headers::{self, StreamUrls};
use crate::sky::{self, Layout, Zoom};
use gloo_net::http::Method;
use gloo_timers::callback::Interval;
use leptos::html;
use leptos::prelude::*;
use scopecast_shared::api::{FocusRegion, PlayerFocus, PlayerStillList, FOCUS_RENDITION};
use send_wrapper::SendWrapper;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlElement};

/// Which sky tools a view has: attributes of `<scopecast-player>` and options of `mount()`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tools {
    /// Wheel, pinch, drag and keys zoom and pan; double click or `1` for 1:1 pixels.
    pub zoom: bool,
    pub fullscreen: bool,
    /// A button that saves the camera's original JPEG, named with its capture time.
    pub snapshot: bool,
    /// The reticle: a centre cross, and with `circles` three circles.
    pub reticle: Option<Reticle>,
    pub histogram: bool,
    /// "new frame 3 s ago" and a bar toward the next frame, on slow streams.
    pub age: bool,
    /// Click or draw a box to watch that region at the camera's own pixels, with its
    /// sharpness figure.
    pub focus: bool,
    /// The last stills kept on the relay, as a strip; 0 hides it.
    pub stills: u32,
    /// The reticle and the histogram start hidden, and the toolbar toggles them (the relay's
    /// own page offers everything without showing everything).
    pub start_hidden: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reticle {
    Cross,
    Circles,
}

impl Tools {
    /// What a plain embed gets: the small buttons and the age (shown only on slow streams).
    pub fn embed() -> Self {
        Self { fullscreen: true, snapshot: true, age: true, ..Self::default() }
    }

    /// The relay's own page: everything.
    pub fn page() -> Self {
        Self { zoom: true, reticle: Some(Reticle::Circles), histogram: true, focus: true, stills: 8, start_hidden: true, ..Self::embed() }
    }
}

/// Stills in the strip when the attribute is given without a number.
pub const DEFAULT_STILLS: u32 = 6;

/// The relay's URLs of a view's stream (`None` for another server's WHEP: no sky extras).
pub fn relay_urls(opts: &Options) -> Option<StreamUrls> {
    StreamUrls::from_src(&opts.src).filter(|u| opts.whep.is_none() && u.has_extras())
}

/// Repaints every `ms` while mounted: a signal of the monotonic clock.
fn clock(ms: u32) -> ReadSignal<f64> {
    let (now, set_now) = signal(net::mono_ms() as f64);
    let timer = SendWrapper::new(Interval::new(ms, move || set_now.set(net::mono_ms() as f64)));
    on_cleanup(move || drop(timer));
    now
}

/// The picture's age and a bar toward the next frame; nothing while the picture is young.
#[component]
pub fn AgeBadge(ui: RwSignal<Ui>) -> impl IntoView {
    let now = clock(250);
    let text = move || ui.with(|u| u.age.text(now.get()));
    let progress = move || ui.with(|u| u.age.progress(now.get()));
    view! {
        <Show when=move || text().is_some()>
            <span class="scopecast-age" data-age-ms=move || ui.with(|u| u.age.age_ms(now.get()).unwrap_or(0.0).round().to_string())>
                {text}
                {move || progress().map(|p| view! {
                    <span class="scopecast-age-bar" data-progress=format!("{p:.3}")>
                        <span style:width=format!("{:.1}%", p * 100.0)></span>
                    </span>
                })}
            </span>
        </Show>
    }
}

/// The picture's rectangle on the unzoomed layer, as CSS (left, top, width, height).
fn picture_rect(l: &Layout) -> Option<(f64, f64, f64, f64)> {
    let (left, top, fit) = l.contain()?;
    Some((left, top, l.picture_width * fit, l.picture_height * fit))
}

/// The reticle over the picture (it zooms with it; its lines stay one pixel wide).
#[component]
pub fn ReticleView(ui: RwSignal<Ui>, kind: Reticle) -> impl IntoView {
    let rect = move || ui.with(|u| picture_rect(&u.layout));
    let circles = (kind == Reticle::Circles).then(|| {
        view! {
            <circle r="10"></circle>
            <circle r="25"></circle>
            <circle r="45"></circle>
        }
    });
    view! {
        {move || rect().map(|(x, y, w, h)| view! {
            <svg class="scopecast-reticle" viewBox="-50 -50 100 100" preserveAspectRatio="xMidYMid meet"
                style:left=format!("{x}px") style:top=format!("{y}px") style:width=format!("{w}px") style:height=format!("{h}px")>
                <line x1="-5000" y1="0" x2="5000" y2="0"></line>
                <line x1="0" y1="-5000" x2="0" y2="5000"></line>
                {circles.clone()}
            </svg>
        })}
    }
}

/// The focus region's outline on the picture (camera pixels to the unzoomed layer).
#[component]
pub fn RegionOutline(ui: RwSignal<Ui>) -> impl IntoView {
    let rect = move || {
        ui.with(|u| {
            let r = u.focus.as_ref()?.region;
            let (left, top, fit) = u.layout.contain()?;
            let (cw, _) = u.camera.unwrap_or((u.layout.picture_width as u32, u.layout.picture_height as u32));
            let k = fit * u.layout.picture_width / f64::from(cw.max(1));
            Some((left + f64::from(r.x) * k, top + f64::from(r.y) * k, f64::from(r.width) * k, f64::from(r.height) * k))
        })
    };
    view! {
        {move || rect().map(|(x, y, w, h)| view! {
            <div class="scopecast-region" style:left=format!("{x}px") style:top=format!("{y}px") style:width=format!("{w}px") style:height=format!("{h}px")></div>
        })}
    }
}

/// The histogram of the picture shown, redrawn once a second (log scale: the stars' faint
/// tail shows beside the sky's peak). `data-median` carries the median luma.
#[component]
pub fn HistogramView(ui: RwSignal<Ui>, video: NodeRef<html::Video>, canvas: NodeRef<html::Canvas>) -> impl IntoView {
    let out = NodeRef::<html::Canvas>::new();
    let scratch = SendWrapper::new(net::document().create_element("canvas").ok().and_then(|c| c.dyn_into::<HtmlCanvasElement>().ok()));
    let now = clock(1_000);
    Effect::new(move |_| {
        now.track();
        let (Some(out), Some(scratch)) = (out.get(), scratch.as_ref()) else { return };
        let source: Option<HtmlElement> =
            if ui.with_untracked(|u| u.transport == "webrtc") { video.get().map(Into::into) } else { canvas.get().map(Into::into) };
        let layout = ui.with_untracked(|u| u.layout);
        if let Some(counts) = source.and_then(|s| histogram_of(&s, &layout, scratch)) {
            draw_bars(&out, &sky::bars(&counts, 64));
            let _ = out.set_attribute("data-median", &sky::median(&counts).to_string());
        }
    });
    view! { <canvas class="scopecast-histogram" node_ref=out width="256" height="80"></canvas> }
}

/// The luma histogram of `source` (a video or canvas), read through a small copy (320 px
/// wide: enough for levels, cheap to read back).
fn histogram_of(source: &HtmlElement, layout: &Layout, scratch: &HtmlCanvasElement) -> Option<[u32; 256]> {
    let (pw, ph) = (layout.picture_width, layout.picture_height);
    if pw < 1.0 || ph < 1.0 {
        return None;
    }
    let w = pw.min(320.0);
    let h = (ph * w / pw).round().max(1.0);
    scratch.set_width(w as u32);
    scratch.set_height(h as u32);
    let ctx = context(scratch)?;
    let drawn = match source.dyn_ref::<web_sys::HtmlVideoElement>() {
        Some(v) => ctx.draw_image_with_html_video_element_and_dw_and_dh(v, 0.0, 0.0, w, h),
        None => ctx.draw_image_with_html_canvas_element_and_dw_and_dh(source.dyn_ref::<HtmlCanvasElement>()?, 0.0, 0.0, w, h),
    };
    drawn.ok()?;
    let pixels = ctx.get_image_data(0.0, 0.0, w, h).ok()?.data();
    Some(sky::histogram(&pixels))
}

fn context(canvas: &HtmlCanvasElement) -> Option<CanvasRenderingContext2d> {
    canvas.get_context("2d").ok().flatten()?.dyn_into().ok()
}

fn draw_bars(canvas: &HtmlCanvasElement, bars: &[f64]) {
    let Some(ctx) = context(canvas) else { return };
    let (w, h) = (f64::from(canvas.width()), f64::from(canvas.height()));
    ctx.clear_rect(0.0, 0.0, w, h);
    ctx.set_fill_style_str("rgba(215, 220, 229, .85)");
    let step = w / bars.len().max(1) as f64;
    for (i, b) in bars.iter().enumerate() {
        ctx.fill_rect(i as f64 * step, h - b * h, (step - 1.0).max(1.0), b * h);
    }
}

/// Saves the camera's original picture (not the stream's scaled, stretched one) as
/// `{stream}-{capture time}.jpg`. The name goes on the view as `data-snapshot` too.
pub async fn save_snapshot(urls: StreamUrls, token: Option<String>, root: HtmlElement) -> Result<(), String> {
    let res = net::fetch(Req::new(Method::GET, &urls.snapshot, token.as_deref())).await.map_err(|_| "the relay did not answer".to_owned())?;
    if !res.ok() {
        return Err(net::problem_detail(&res).await);
    }
    let captured = net::header(&res, "x-timestamp").and_then(|t| sky::timestamp_ms(&t)).unwrap_or_else(js_sys::Date::now);
    let iso: String = js_sys::Date::new(&JsValue::from_f64(captured)).to_iso_string().into();
    let name = sky::snapshot_name(&urls.name, &iso);
    let bytes = res.binary().await.map_err(|e| e.to_string())?;
    let url = net::blob_url(&bytes, "image/jpeg").map_err(|e| format!("{e:?}"))?;
    let link: web_sys::HtmlAnchorElement = net::document().create_element("a").map_err(|e| format!("{e:?}"))?.unchecked_into();
    link.set_href(&url);
    link.set_download(&name);
    link.click();
    // The download has the bytes once it started; the URL is no longer needed after that.
    gloo_timers::callback::Timeout::new(10_000, move || {
        let _ = web_sys::Url::revoke_object_url(&url);
    })
    .forget();
    let _ = root.set_attribute("data-snapshot", &name);
    let _ = root.set_attribute("data-snapshot-bytes", &bytes.len().to_string());
    Ok(())
}

fn focus_url(urls: &StreamUrls) -> String {
    format!("{}/focus", urls.info)
}

/// Asks the relay for a focus region (`body` is a point or a region, camera pixels); the last
/// request wins, whoever made it.
pub async fn put_focus(urls: &StreamUrls, token: Option<&str>, body: String) -> Result<PlayerFocus, String> {
    let url = focus_url(urls);
    let req = Req { body: Some(&body), headers: &[("Content-Type", "application/json")], ..Req::new(Method::PUT, &url, token) };
    let res = net::fetch(req).await.map_err(|_| "the relay did not answer".to_owned())?;
    if !res.ok() {
        return Err(net::problem_detail(&res).await);
    }
    serde_json::from_str(&net::text(&res).await).map_err(|e| e.to_string())
}

/// A point of the box as a focus request in the camera's pixels: a click is a point (the
/// relay centres its default region on it), a drag from `from` a region.
pub fn focus_request(ui: &Ui, zoom: &Zoom, at: (f64, f64), from: Option<(f64, f64)>) -> Option<String> {
    let l = &ui.layout;
    let (cw, ch) = ui.camera.map_or((l.picture_width, l.picture_height), |(w, h)| (f64::from(w), f64::from(h)));
    let k = cw / l.picture_width.max(1.0);
    let to_camera = |p: (f64, f64)| {
        let (x, y) = zoom.to_picture_unbounded(p, l)?;
        let (x, y) = (x.clamp(0.0, l.picture_width), y.clamp(0.0, l.picture_height));
        Some(((x * k).min(cw - 1.0), (y * k).min(ch - 1.0)))
    };
    match from {
        None => {
            zoom.to_picture(at, l)?;
            let (x, y) = to_camera(at)?;
            Some(format!(r#"{{"x":{},"y":{}}}"#, x.round(), y.round()))
        }
        Some(start) => {
            let (x, y, width, height) = sky::region(to_camera(start)?, to_camera(at)?, 32.0);
            Some(format!(r#"{{"x":{x},"y":{y},"width":{width},"height":{height}}}"#))
        }
    }
}

/// The focus region playing at the camera's own pixels (a nested view of the `focus`
/// rendition), its sharpness now and its graph.
#[component]
pub fn FocusPanel(opts: Options, ui: RwSignal<Ui>, on_close: Callback<()>) -> AnyView {
    let nested = Options { rendition: Some(FOCUS_RENDITION.to_owned()), tools: Tools::default(), autoplay: true, ..opts };
    let figure = move || {
        ui.with(|u| {
            let newest = u.focus.as_ref()?.history.last()?;
            Some(match newest.hfr_px {
                Some(hfr) => format!("HFR {hfr:.2} px · {} stars", newest.stars),
                None => format!("gradient {:.1}", newest.gradient),
            })
        })
    };
    // HFR when the newest figure has stars (smaller is sharper: drawn upside down), else the
    // gradient energy (larger is sharper).
    let graph = move || {
        ui.with(|u| {
            let history = &u.focus.as_ref()?.history;
            let stars = history.last()?.hfr_px.is_some();
            let values: Vec<f64> = history.iter().map(|s| if stars { s.hfr_px.map_or(f64::NAN, |h| -f64::from(h)) } else { f64::from(s.gradient) }).collect();
            Some(sky::sparkline(&values, 200.0, 40.0))
        })
    };
    let region = move || ui.with(|u| u.focus.as_ref().map(|f| region_text(&f.region)).unwrap_or_default());
    view! {
        <div class="scopecast-focus">
            <div class="scopecast-focus-video"><LiveView opts=nested controls=false overlay=false /></div>
            <div class="scopecast-focus-figures">
                <span class="scopecast-focus-figure">{move || figure().unwrap_or_else(|| "measuring…".into())}</span>
                <span class="scopecast-focus-region">{region}</span>
                <button class="scopecast-focus-close" title="Close the focus view" on:click=move |_| on_close.run(())>"×"</button>
            </div>
            <svg class="scopecast-focus-graph" viewBox="-2 -2 204 44" preserveAspectRatio="none">
                <polyline points=move || graph().unwrap_or_default()></polyline>
            </svg>
        </div>
    }
    .into_any()
}

fn region_text(r: &FocusRegion) -> String {
    format!("{}x{} at {},{}", r.width, r.height, r.x, r.y)
}

/// The last stills the relay kept, oldest to newest. Looked at every 2.5 s, and fetched when
/// a frame newer than the newest listed came (the recorder writes it a moment after the frame
/// event: asking at once would miss it). Hidden when the stream keeps none.
#[component]
pub fn StillsStrip(ui: RwSignal<Ui>, urls: StreamUrls, token: Option<String>, count: u32) -> impl IntoView {
    let stills = RwSignal::new(Vec::<(String, String)>::new());
    // The newest still listed (0 before the first answer); `None` once the relay said no.
    let listed = StoredValue::new(Some(0u64));
    let busy = StoredValue::new(false);
    let list = format!("{}/stills?limit={count}", urls.info);
    let base = net::absolute(&urls.info);
    let now = clock(2_500);
    Effect::new(move |_| {
        now.track();
        let newest = ui.with_untracked(|u| u.age.captured_ms());
        let Some(known) = listed.get_value() else { return };
        if busy.get_value() || (known > 0 && newest <= known) {
            return;
        }
        busy.set_value(true);
        let (list, base, token) = (list.clone(), base.clone(), token.clone());
        wasm_bindgen_futures::spawn_local(async move {
            let answer = match net::fetch(Req::new(Method::GET, &list, token.as_deref())).await {
                Ok(res) if res.status() == 404 || res.status() == 403 => Err(true),
                Ok(res) if res.ok() => serde_json::from_str::<PlayerStillList>(&net::text(&res).await).map_err(|_| false),
                _ => Err(false),
            };
            busy.set_value(false);
            let list = match answer {
                Ok(list) => list,
                Err(for_good) => {
                    if for_good {
                        listed.set_value(None);
                    }
                    return;
                }
            };
            listed.set_value(Some(list.stills.iter().map(|s| s.captured_ms).max().unwrap_or(1)));
            let items = list
                .stills
                .into_iter()
                .rev()
                .map(|s| {
                    let url = with_token_query(&headers::resolve(&base, &s.url), token.as_deref());
                    let time: String = js_sys::Date::new(&JsValue::from_f64(s.captured_ms as f64)).to_locale_time_string("en-GB").into();
                    (url, time)
                })
                .collect();
            stills.set(items);
        });
    });
    view! {
        <Show when=move || stills.with(|s| !s.is_empty())>
            <div class="scopecast-stills">
                <For each=move || stills.get() key=|(url, _)| url.clone() children=|(url, time)| {
                    let (href, alt, title) = (url.clone(), format!("still of {time}"), time.clone());
                    view! {
                        <a href=href target="_blank" rel="noopener" title=title>
                            <img src=url alt=alt loading="lazy" />
                            <span>{time}</span>
                        </a>
                    }
                } />
            </div>
        </Show>
    }
}
