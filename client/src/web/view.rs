//! The Leptos views: `LiveView` (one stream) and the relay's page (the stream list and a view).

use super::net::{self, Req};
use super::player::{Elements, Options, Player, Shared, Ui};
use leptos::html;
use leptos::prelude::*;
use scopecast_shared::api::PlayerStreamList;
use scopecast_shared::SourceState;
use send_wrapper::SendWrapper;
use std::cell::RefCell;
use std::rc::Rc;

/// One live stream: video (WebRTC), a canvas (the fallback: H.264 or MJPEG), status badges, and an overlay
/// of stream details the user can toggle.
#[component]
pub fn LiveView(opts: Options, #[prop(default = true)] controls: bool, #[prop(default = false)] overlay: bool) -> impl IntoView {
    let ui = RwSignal::new(Ui::default());
    let show_overlay = RwSignal::new(overlay);
    let waiting_for_play = RwSignal::new(!opts.autoplay);
    let root_ref = NodeRef::<html::Div>::new();
    let video_ref = NodeRef::<html::Video>::new();
    let canvas_ref = NodeRef::<html::Canvas>::new();
    let holder: Rc<RefCell<Option<Shared>>> = Rc::default();

    let started = Rc::clone(&holder);
    Effect::new(move |_| {
        let (Some(root), Some(video), Some(canvas)) = (root_ref.get(), video_ref.get(), canvas_ref.get()) else { return };
        if started.borrow().is_some() {
            return;
        }
        match Player::start(opts.clone(), Elements { root: root.into(), video, canvas }, ui) {
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
    let play = SendWrapper::new(holder);
    let on_play = move |_| {
        waiting_for_play.set(false);
        if let Some(p) = play.borrow().as_ref() {
            Player::play(p);
        }
    };

    // HTTPS or localhost: what WebCodecs and an HTTPS embedding page need. Shown in the details
    // and kept as `data-secure` for pages and tests.
    let secure = net::window().is_secure_context();
    view! {
        <div class="scopecast" node_ref=root_ref data-secure=secure.to_string()>
            <video class="scopecast-video" node_ref=video_ref autoplay=true playsinline=true muted=true prop:muted=true></video>
            <canvas class="scopecast-mjpeg scopecast-hidden" node_ref=canvas_ref></canvas>
            <div class="scopecast-badges">
                <span class="scopecast-status">{move || ui.with(status_text)}</span>
                <span class="scopecast-source">{move || ui.with(source_text)}</span>
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
                let opts = Options { src: format!("/{name}"), whep: None, token: token.clone(), fallback: true, autoplay: true, rendition: None };
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
