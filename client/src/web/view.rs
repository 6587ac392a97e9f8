//! The Leptos views: `LiveView` (one stream) and the relay's page (the stream list and a view).

use super::net::{self, Req};
use super::player::{Elements, Options, Player, Shared, Ui};
use super::sky::{self, Tools};
use crate::sky::{Gesture, Release, Step, Zoom};
use gloo_events::{EventListener, EventListenerOptions};
use leptos::html;
use leptos::prelude::*;
use scopecast_shared::api::PlayerStreamList;
use scopecast_shared::SourceState;
use send_wrapper::SendWrapper;
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::spawn_local;

/// One live stream: video (WebRTC), a canvas (the fallback: H.264 or MJPEG), status badges, an
/// overlay of stream details the user can toggle, and the sky tools `opts.tools` asks for.
#[component]
pub fn LiveView(opts: Options, #[prop(default = true)] controls: bool, #[prop(default = false)] overlay: bool) -> impl IntoView {
    let tools = opts.tools.clone();
    let urls = sky::relay_urls(&opts);
    let token = opts.token.clone();
    let ui = RwSignal::new(Ui::default());
    let show_overlay = RwSignal::new(overlay);
    let waiting_for_play = RwSignal::new(!opts.autoplay);
    let root_ref = NodeRef::<html::Div>::new();
    let video_ref = NodeRef::<html::Video>::new();
    let canvas_ref = NodeRef::<html::Canvas>::new();
    let holder: Rc<RefCell<Option<Shared>>> = Rc::default();

    let started = Rc::clone(&holder);
    let start_opts = opts.clone();
    Effect::new(move |_| {
        let (Some(root), Some(video), Some(canvas)) = (root_ref.get(), video_ref.get(), canvas_ref.get()) else { return };
        if started.borrow().is_some() {
            return;
        }
        match Player::start(start_opts.clone(), Elements { root: root.into(), video, canvas }, ui) {
            Ok(p) => *started.borrow_mut() = Some(p),
            Err(e) => ui.update(|u| {
                u.status = "error";
                u.error = Some(e);
            }),
        }
    });
    let stopping = SendWrapper::new(Rc::clone(&holder));
    on_cleanup(move || {
        if let Some(p) = stopping.borrow_mut().take() {
            Player::stop(&p);
        }
    });
    let chooser = SendWrapper::new(Rc::clone(&holder));
    let on_choose = move |ev: leptos::ev::Event| {
        if let Some(p) = chooser.borrow().as_ref() {
            Player::choose(p, event_target_value(&ev));
        }
    };
    let play = SendWrapper::new(Rc::clone(&holder));
    let on_play = move |_| {
        waiting_for_play.set(false);
        if let Some(p) = play.borrow().as_ref() {
            Player::play(p);
        }
    };

    // The sky tools' state: the zoom, what is shown, the focus box being drawn (on the
    // unzoomed layer), and the last tool error.
    let zoom = RwSignal::new(Zoom::default());
    let show_reticle = RwSignal::new(tools.reticle.is_some() && !tools.start_hidden);
    let show_histogram = RwSignal::new(tools.histogram && !tools.start_hidden);
    let aiming = RwSignal::new(false);
    let focus_open = RwSignal::new(false);
    let drawing = RwSignal::new(None::<((f64, f64), (f64, f64))>);
    let notice = RwSignal::new(None::<String>);
    let gesture = StoredValue::new(Gesture::default());
    let can_focus = tools.focus && urls.is_some();
    let can_zoom = tools.zoom;

    let at = move |ev: &web_sys::MouseEvent| {
        root_ref.get_untracked().map_or((0.0, 0.0), |r| {
            let b = r.get_bounding_client_rect();
            (f64::from(ev.client_x()) - b.left(), f64::from(ev.client_y()) - b.top())
        })
    };
    let layout = move || ui.with_untracked(|u| u.layout);
    let zoom_by = move |factor: f64, point: Option<(f64, f64)>| {
        let l = layout();
        zoom.update(|z| *z = z.zoom_at(factor, point.unwrap_or((l.width / 2.0, l.height / 2.0)), &l));
    };
    let one_to_one = move |point: Option<(f64, f64)>| {
        let l = layout();
        let dpr = net::window().device_pixel_ratio();
        zoom.update(|z| *z = z.one_to_one(point.unwrap_or((l.width / 2.0, l.height / 2.0)), &l, dpr));
    };

    let focus_holder = SendWrapper::new(Rc::clone(&holder));
    let focus_urls = urls.clone();
    let focus_token = token.clone();
    let ask_focus = move |body: String| {
        let (Some(urls), Some(p)) = (focus_urls.clone(), focus_holder.borrow().clone()) else { return };
        let token = focus_token.clone();
        spawn_local(async move {
            match sky::put_focus(&urls, token.as_deref(), body).await {
                Ok(f) => {
                    Player::set_focus(&p, f);
                    notice.set(None);
                    focus_open.set(true);
                }
                Err(e) => notice.set(Some(format!("focus: {e}"))),
            }
        });
    };
    let on_down = move |ev: leptos::ev::PointerEvent| {
        if !(can_zoom || aiming.get_untracked()) || ev.button() != 0 {
            return;
        }
        if let Some(t) = ev.current_target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()) {
            let _ = t.set_pointer_capture(ev.pointer_id());
        }
        gesture.update_value(|g| g.down(ev.pointer_id(), at(&ev)));
        ev.prevent_default();
    };
    let on_move = move |ev: leptos::ev::PointerEvent| {
        let point = at(&ev);
        let Some(step) = gesture.try_update_value(|g| g.moved(ev.pointer_id(), point)) else { return };
        let l = layout();
        match step {
            Step::Drag { from, to, .. } if aiming.get_untracked() => {
                let z = zoom.get_untracked();
                drawing.set(Some((z.to_layer(from), z.to_layer(to))));
            }
            Step::Drag { delta, .. } if can_zoom => zoom.update(|z| *z = z.pan(delta.0, delta.1, &l)),
            Step::Pinch { factor, at } if can_zoom => zoom.update(|z| *z = z.zoom_at(factor, at, &l)),
            _ => {}
        }
    };
    let on_up = move |ev: leptos::ev::PointerEvent| {
        let point = at(&ev);
        let Some(Some(Release { from, to, dragged })) = gesture.try_update_value(|g| g.up(ev.pointer_id(), point)) else { return };
        drawing.set(None);
        if !aiming.get_untracked() {
            return;
        }
        let request = ui.with_untracked(|u| sky::focus_request(u, &zoom.get_untracked(), to, dragged.then_some(from)));
        match request {
            Some(body) => ask_focus(body),
            None => notice.set(Some("focus: click on the picture".into())),
        }
    };
    let on_cancel = move |ev: leptos::ev::PointerEvent| {
        gesture.update_value(|g| {
            g.up(ev.pointer_id(), (0.0, 0.0));
        });
        drawing.set(None);
    };
    let on_dblclick = move |ev: leptos::ev::MouseEvent| {
        if !can_zoom || aiming.get_untracked() {
            return;
        }
        if zoom.get_untracked().is_fit() {
            one_to_one(Some(at(&ev)));
        } else {
            zoom.set(Zoom::default());
        }
    };
    // Wheel listeners must be able to cancel the page's scroll: added by hand, not passive.
    let wheel = SendWrapper::new(RefCell::new(None::<EventListener>));
    Effect::new(move |_| {
        let Some(root) = root_ref.get().filter(|_| can_zoom) else { return };
        let listener = EventListener::new_with_options(&root, "wheel", EventListenerOptions::enable_prevent_default(), move |ev| {
            let Some(ev) = ev.dyn_ref::<web_sys::WheelEvent>() else { return };
            ev.prevent_default();
            let per_unit = match ev.delta_mode() {
                1 => 33.0,
                2 => 400.0,
                _ => 1.0,
            };
            zoom_by((-ev.delta_y() * per_unit * 0.0015).exp(), Some(at(ev)));
        });
        *wheel.borrow_mut() = Some(listener);
    });

    let toggle_fullscreen = move || {
        let doc = net::document();
        if doc.fullscreen_element().is_some() {
            doc.exit_fullscreen();
        } else if let Some(root) = root_ref.get_untracked() {
            let _ = root.request_fullscreen();
        }
    };
    let snapshot_urls = urls.clone();
    let take_snapshot = move || {
        let (Some(urls), Some(root)) = (snapshot_urls.clone(), root_ref.get_untracked()) else { return };
        let token = token.clone();
        spawn_local(async move {
            match sky::save_snapshot(urls, token, root.into()).await {
                Ok(()) => notice.set(None),
                Err(e) => notice.set(Some(format!("snapshot: {e}"))),
            }
        });
    };
    let can_snapshot = tools.snapshot && urls.is_some();
    let (can_fullscreen, can_reticle, can_histogram) = (tools.fullscreen, tools.reticle.is_some(), tools.histogram);
    let key_snapshot = take_snapshot.clone();
    let on_key = move |ev: leptos::ev::KeyboardEvent| {
        let in_control = ev.target().and_then(|t| t.dyn_into::<web_sys::Element>().ok()).is_some_and(|t| t.tag_name() == "SELECT");
        if ev.ctrl_key() || ev.meta_key() || ev.alt_key() || in_control {
            return;
        }
        let l = layout();
        let step = (l.width.min(l.height) * 0.1).max(10.0);
        match ev.key().as_str() {
            "+" | "=" if can_zoom => zoom_by(1.25, None),
            "-" if can_zoom => zoom_by(0.8, None),
            "0" if can_zoom => zoom.set(Zoom::default()),
            "1" if can_zoom => one_to_one(None),
            "ArrowLeft" | "ArrowRight" | "ArrowUp" | "ArrowDown" if can_zoom && !zoom.get_untracked().is_fit() => {
                let (dx, dy) = match ev.key().as_str() {
                    "ArrowLeft" => (step, 0.0),
                    "ArrowRight" => (-step, 0.0),
                    "ArrowUp" => (0.0, step),
                    _ => (0.0, -step),
                };
                zoom.update(|z| *z = z.pan(dx, dy, &l));
            }
            "f" if can_fullscreen => toggle_fullscreen(),
            "s" if can_snapshot => key_snapshot(),
            "r" if can_reticle => show_reticle.update(|v| *v = !*v),
            "h" if can_histogram => show_histogram.update(|v| *v = !*v),
            "a" if can_focus => aiming.update(|v| *v = !*v),
            "Escape" if aiming.get_untracked() => aiming.set(false),
            _ => return,
        }
        ev.prevent_default();
    };

    // HTTPS or localhost: what WebCodecs and an HTTPS embedding page need. Shown in the details
    // and kept as `data-secure` for pages and tests.
    let secure = net::window().is_secure_context();
    let reticle = tools.reticle;
    let focus_opts = opts.clone();
    let stills = urls.clone().filter(|_| tools.stills > 0).map(|u| view! { <sky::StillsStrip ui=ui urls=u token=opts.token.clone() count=tools.stills /> });
    view! {
        <div class="scopecast" node_ref=root_ref data-secure=secure.to_string() tabindex="0" on:keydown=on_key
            data-zoom=move || format!("{:.4}", zoom.get().scale) data-aiming=move || aiming.get().to_string()>
            <div class="scopecast-stage" class:scopecast-zoomable=can_zoom class:scopecast-aim=move || aiming.get()
                style:transform=move || zoom.get().css()
                on:pointerdown=on_down on:pointermove=on_move on:pointerup=on_up on:pointercancel=on_cancel on:dblclick=on_dblclick>
                <video class="scopecast-video" node_ref=video_ref autoplay=true playsinline=true muted=true prop:muted=true></video>
                <canvas class="scopecast-mjpeg scopecast-hidden" node_ref=canvas_ref></canvas>
                {reticle.map(|kind| view! { <Show when=move || show_reticle.get()><sky::ReticleView ui=ui kind=kind /></Show> })}
                {can_focus.then(|| view! { <sky::RegionOutline ui=ui /> })}
                {move || drawing.get().map(|(a, b)| view! {
                    <div class="scopecast-region scopecast-drawing" style:left=format!("{}px", a.0.min(b.0)) style:top=format!("{}px", a.1.min(b.1))
                        style:width=format!("{}px", (a.0 - b.0).abs()) style:height=format!("{}px", (a.1 - b.1).abs())></div>
                })}
            </div>
            <div class="scopecast-badges">
                <span class="scopecast-status">{move || ui.with(status_text)}</span>
                <span class="scopecast-source">{move || ui.with(source_text)}</span>
                {tools.age.then(|| view! { <sky::AgeBadge ui=ui /> })}
                <span class="scopecast-notice">{move || notice.get().unwrap_or_default()}</span>
            </div>
            {controls.then(|| view! {
                <Show when=move || ui.with(|u| u.rendition.as_ref().is_some_and(|r| r.renditions.len() > 1))>
                    <select class="scopecast-rendition" title="Rendition" on:change=on_choose.clone()
                        prop:value=move || ui.with(|u| u.rendition.as_ref().filter(|r| r.pinned).map_or("auto".to_owned(), |r| r.rendition.clone()))>
                        {move || ui.with(rendition_options)}
                    </select>
                </Show>
            })}
            <Show when=move || waiting_for_play.get()>
                <button class="scopecast-play" on:click=on_play.clone() title="Play">"▶"</button>
            </Show>
            {controls.then(|| view! {
                <button class="scopecast-toggle" title="Stream details" on:click=move |_| show_overlay.update(|v| *v = !*v)>"i"</button>
            })}
            <Show when=move || show_overlay.get()>
                <dl class="scopecast-overlay">{move || ui.with(overlay_rows)}</dl>
            </Show>
            {(tools.histogram).then(|| view! {
                <Show when=move || show_histogram.get()><sky::HistogramView ui=ui video=video_ref canvas=canvas_ref /></Show>
            })}
            {controls.then(|| view! {
                <div class="scopecast-tools" role="toolbar" aria-label="Sky tools">
                    {can_focus.then(|| view! {
                        <button class="scopecast-tool-focus" class:active=move || aiming.get() aria-pressed=move || aiming.get().to_string()
                            title="Focus: click a star or draw a box (a)" on:click=move |_| aiming.update(|v| *v = !*v)>"◎"</button>
                    })}
                    {can_zoom.then(|| view! {
                        <button class="scopecast-tool-zoom" title="1:1 pixels (1); fit (0)"
                            on:click=move |_| if zoom.get_untracked().is_fit() { one_to_one(None) } else { zoom.set(Zoom::default()) }>
                            {move || if zoom.get().is_fit() { "1:1" } else { "fit" }}
                        </button>
                    })}
                    {can_reticle.then(|| view! {
                        <button class="scopecast-tool-reticle" class:active=move || show_reticle.get() title="Reticle (r)" on:click=move |_| show_reticle.update(|v| *v = !*v)>"⊕"</button>
                    })}
                    {can_histogram.then(|| view! {
                        <button class="scopecast-tool-histogram" class:active=move || show_histogram.get() title="Histogram (h)" on:click=move |_| show_histogram.update(|v| *v = !*v)>"▁▃▆"</button>
                    })}
                    {can_snapshot.then(|| view! {
                        <button class="scopecast-tool-snapshot" title="Save the camera's picture (s)" on:click=move |_| take_snapshot()>"⤓"</button>
                    })}
                    {can_fullscreen.then(|| view! {
                        <button class="scopecast-tool-fullscreen" title="Fullscreen (f)" on:click=move |_| toggle_fullscreen()>"⤢"</button>
                    })}
                </div>
            })}
            {can_focus.then(|| view! {
                <Show when=move || focus_open.get()>
                    <sky::FocusPanel opts=focus_opts.clone() ui=ui on_close=Callback::new(move |()| focus_open.set(false)) />
                </Show>
            })}
            {stills}
        </div>
    }
}

fn status_text(u: &Ui) -> String {
    match (u.status, &u.error, u.retry_in_ms) {
        ("live", _, _) => "live".into(),
        ("fallback", _, _) if u.transport == "h264" => "fallback (H.264 over TCP)".into(),
        ("fallback", _, _) => "fallback (MJPEG)".into(),
        ("reconnecting", Some(e), Some(ms)) => format!("reconnecting in {:.0} s: {e}", (ms as f64 / 1000.0).ceil()),
        ("reconnecting", Some(e), None) | ("error", Some(e), _) => format!("{}: {e}", u.status),
        (s, _, _) => s.to_owned(),
    }
}

/// "auto" (with what the relay chose and why), then every rendition the viewer may get.
fn rendition_options(u: &Ui) -> impl IntoView {
    let Some(r) = &u.rendition else { return Vec::new().collect_view() };
    let auto = if r.pinned { "auto".to_owned() } else { format!("auto: {} ({})", r.rendition, r.reason) };
    let choices = r.renditions.iter().map(|name| (name.clone(), name.clone(), r.pinned && *name == r.rendition));
    std::iter::once(("auto".to_owned(), auto, !r.pinned))
        .chain(choices)
        .map(|(value, label, selected)| view! { <option value=value selected=selected>{label}</option> })
        .collect_view()
}

fn source_text(u: &Ui) -> String {
    match (u.source, &u.source_error) {
        (Some(SourceState::Offline), Some(e)) => format!("source offline: {e}"),
        (Some(SourceState::Offline), None) => "source offline".into(),
        (Some(SourceState::Connecting), _) => "source connecting".into(),
        (Some(SourceState::Idle), _) => "source idle".into(),
        _ => String::new(),
    }
}

fn overlay_rows(u: &Ui) -> impl IntoView {
    let s = &u.stats;
    let ms = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} ms"));
    let rows = [
        ("transport", if u.transport == "none" { "-".to_owned() } else { u.transport.to_owned() }),
        ("rendition", u.rendition.as_ref().map_or("-".into(), |r| format!("{}: {}", r.rendition, r.reason))),
        ("resolution", if s.width > 0 { format!("{}x{}", s.width, s.height) } else { "-".into() }),
        ("frame rate", format!("{:.1} fps", s.fps)),
        ("bitrate", if u.transport == "none" { "-".into() } else { format!("{:.0} kbit/s", s.bitrate_kbps) }),
        ("RTT", s.rtt_ms.map_or("-".into(), |v| format!("{v:.0} ms"))),
        ("packet loss", s.loss_pct.map_or("-".into(), |v| format!("{v:.1} %"))),
        ("last new frame", s.since_frame_ms.map_or("-".into(), |v| format!("{:.1} s ago", v as f64 / 1000.0))),
        ("glass-to-glass", ms(s.latency_ms)),
        ("page", if net::window().is_secure_context() { "secure context".into() } else { "not a secure context (plain HTTP)".into() }),
    ];
    rows.into_iter()
        .map(|(k, v)| {
            let key = k.replace(' ', "-");
            view! { <dt>{k}</dt><dd data-key=key>{v}</dd> }
        })
        .collect_view()
}

/// The relay's own page: its streams, and the chosen one playing (from `/{stream}/`, or
/// `?stream=`, else the first). The page's `?token=` goes along with every request.
#[component]
pub fn Page() -> impl IntoView {
    let location = net::window().location();
    let search = location.search().unwrap_or_default();
    let params = web_sys::UrlSearchParams::new_with_str(&search).ok();
    let token = params.as_ref().and_then(|p| p.get("token"));
    let wanted = params.as_ref().and_then(|p| p.get("stream")).or_else(|| {
        let path = location.pathname().unwrap_or_default();
        path.split('/').find(|s| !s.is_empty()).map(|s| js_sys::decode_uri_component(s).ok().and_then(|v| v.as_string()).unwrap_or_else(|| s.to_owned()))
    });
    let streams = RwSignal::new(None::<Result<Vec<String>, String>>);
    let t = token.clone();
    wasm_bindgen_futures::spawn_local(async move {
        let result = list_streams(t.as_deref()).await;
        streams.set(Some(result));
    });
    let chosen = move || {
        streams.with(|s| match s {
            Some(Ok(names)) => wanted.clone().filter(|w| names.contains(w)).or_else(|| names.first().cloned()),
            _ => None,
        })
    };
    let chosen_nav = chosen.clone();
    let query = if search.is_empty() { String::new() } else { search.clone() };
    view! {
        <header class="scopecast-page-header">
            <h1>"Scopecast"</h1>
            <nav aria-label="Streams">
                {move || streams.with(|s| match s {
                    Some(Ok(names)) => names.iter().map(|n| {
                        let current = chosen_nav().as_deref() == Some(n.as_str());
                        let href = format!("/{}/{query}", js_sys::encode_uri_component(n));
                        view! { <a href=href class:current=current>{n.clone()}</a> }
                    }).collect_view().into_any(),
                    Some(Err(e)) => view! { <span class="scopecast-error">{e.clone()}</span> }.into_any(),
                    None => ().into_any(),
                })}
            </nav>
        </header>
        <main class="scopecast-page-main">
            {move || chosen().map(|name| {
                let opts = Options { src: format!("/{name}"), whep: None, token: token.clone(), fallback: true, autoplay: true, rendition: None, tools: Tools::page() };
                view! { <LiveView opts=opts controls=true overlay=false /> }
            })}
        </main>
    }
}

async fn list_streams(token: Option<&str>) -> Result<Vec<String>, String> {
    let res = net::fetch(Req::new(gloo_net::http::Method::GET, "/api/v1/streams", token)).await.map_err(|_| "the relay did not answer".to_owned())?;
    if !res.ok() {
        return Err(net::problem_detail(&res).await);
    }
    let list: PlayerStreamList = serde_json::from_str(&net::text(&res).await).map_err(|e| e.to_string())?;
    if list.streams.is_empty() {
        return Err("no streams configured".into());
    }
    Ok(list.streams.into_iter().map(|s| s.name).collect())
}
