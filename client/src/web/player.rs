//! The controller of one live view: carries out the ladder's commands with the browser's
//! WebRTC, fetch and canvas, and turns what the browser reports back into ladder events.
//! Everything it decides is decided in [`crate::ladder`].

use super::h264;
use super::mse;
use super::net::{self, Req};
use super::sky::Tools;
use super::stats::{self, Stats};
use crate::headers::{self, StreamUrls};
use crate::ladder::{Command, Event, Ladder, Rung, Transport};
use crate::sdpfrag::{self, IceParams};
use crate::sky::{Layout, PictureAge};
use crate::stall::{self, FrameClock};
use futures_util::StreamExt;
use gloo_events::EventListener;
use gloo_net::eventsource::futures::EventSource;
use gloo_net::http::Method;
use gloo_timers::callback::{Interval, Timeout};
use js_sys::{Array, Object, Reflect};
use leptos::prelude::*;
use scopecast_shared::api::{FrameEvent, PlayerFocus, PlayerStreamInfo, ViewerRendition, EVENT_FOCUS, EVENT_FRAME, EVENT_STATE};
use scopecast_shared::multipart::{boundary_from_content_type, Event as PartEvent, MultipartParser, DEFAULT_MAX_PART};
use scopecast_shared::{SourceState, StateEvent};
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::spawn_local;
use web_sys::{
    AbortController, CanvasRenderingContext2d, HtmlCanvasElement, HtmlElement, HtmlVideoElement, RtcConfiguration, RtcIceGatheringState, RtcIceServer,
    RtcOfferOptions, RtcPeerConnection, RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcRtpTransceiverDirection, RtcRtpTransceiverInit, RtcSdpType,
    RtcSessionDescriptionInit, RtcTrackEvent,
};

/// How often the ladder is ticked and WebRTC stats are read (the overlay's numbers every
/// fourth tick).
const TICK_MS: u32 = 250;
/// The offer waits this long at most for ICE gathering; later candidates are trickled.
const GATHER_CAP_MS: u32 = 1_000;

/// What the view shows; written by the controller, read reactively.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Ui {
    pub status: &'static str,
    pub transport: &'static str,
    pub source: Option<SourceState>,
    pub source_error: Option<String>,
    pub error: Option<String>,
    pub retry_in_ms: Option<u64>,
    pub stats: Stats,
    /// The WebRTC session's rendition on a Scopecast relay: which, why, and the choices.
    pub rendition: Option<ViewerRendition>,
    /// The source's newest frame, from the relay's `frame` events.
    pub age: PictureAge,
    /// The camera's own picture size (the focus region's coordinates), when the relay says.
    pub camera: Option<(u32, u32)>,
    /// The player's box (CSS pixels) and the size of the picture shown in it, for the sky
    /// tools' geometry.
    pub layout: Layout,
    /// The focus region and its sharpness figures, oldest first (with the `focus` tool).
    pub focus: Option<PlayerFocus>,
}

/// Sharpness figures kept for the focus graph: 30 s at 10 fps, 5 min at 1 fps.
const FOCUS_HISTORY: usize = 300;

/// Options of one view (from the element's attributes or `mount`'s options).
#[derive(Debug, Clone)]
pub struct Options {
    /// The stream's address on a Scopecast relay (`http://scope.local:8889/telescope`).
    pub src: String,
    /// Or a WHEP endpoint on any server, used as it is (WebRTC only: no MJPEG, status or events).
    pub whep: Option<String>,
    pub token: Option<String>,
    pub fallback: bool,
    /// Connect at once; otherwise on [`Player::play`] (a click).
    pub autoplay: bool,
    /// A rendition to pin from the start (a Scopecast relay's); `None` lets the relay choose.
    pub rendition: Option<String>,
    /// Which sky tools the view has.
    pub tools: Tools,
}

/// The DOM the controller drives.
pub struct Elements {
    pub root: HtmlElement,
    pub video: HtmlVideoElement,
    pub canvas: HtmlCanvasElement,
}

/// One WebRTC attempt: its peer connection, session URL and its event listeners (removed
/// when the session is dropped).
struct Session {
    pc: RtcPeerConnection,
    url: Option<String>,
    etag: Option<String>,
    /// Candidates gathered after the offer went out, waiting for the session URL.
    late_candidates: Vec<String>,
    remote_sdp: Option<String>,
    _listeners: Vec<EventListener>,
}

pub struct Player {
    ladder: Ladder,
    opts: Options,
    urls: StreamUrls,
    el: Elements,
    ui: RwSignal<Ui>,
    /// Bumped on every hang-up and MJPEG stop: callbacks of an older attempt see it and stay quiet.
    generation: u32,
    session: Option<Session>,
    ice_servers: Vec<headers::IceServer>,
    /// What fills the canvas while WebRTC cannot; dropping it stops it.
    fallback: Option<FallbackRun>,
    /// Bumped on every fallback start: callbacks of an older one see it and stay quiet.
    fallback_id: u32,
    fallback_frames: u64,
    fallback_last_ms: Option<u64>,
    /// Bytes the fallbacks have received (their bitrate in the overlay).
    fallback_bytes: Rc<Cell<u64>>,
    /// Fallback frames, bytes and time at the last stats poll (for its frame rate and bitrate).
    fallback_mark: (u64, u64, u64),
    webrtc_clock: FrameClock,
    webrtc_stats: Option<stats::Sample>,
    fps_hint: Option<f64>,
    /// The relay re-sends its picture at least once a second (it encodes the stream).
    repeats: bool,
    source: Option<SourceState>,
    source_error: Option<String>,
    /// The relay's event stream; dropping it closes it and ends its reader task.
    events: Option<EventSource>,
    /// Dropping it cancels the timer.
    ticker: Option<Interval>,
    ticks: u64,
    stats: Stats,
    rendition: Option<ViewerRendition>,
    age: PictureAge,
    camera: Option<(u32, u32)>,
    focus: Option<PlayerFocus>,
    /// Ends the session when the page goes away (unmount cleanups do not run then).
    on_pagehide: Option<EventListener>,
    me: Weak<RefCell<Player>>,
}

pub type Shared = Rc<RefCell<Player>>;

/// A running fallback (the ladder's [`Rung`]).
enum FallbackRun {
    Mjpeg(AbortController),
    /// Held for its drop, which closes the socket and the decoder.
    H264(#[allow(dead_code)] h264::Rung),
    /// The same rung through MSE (no WebCodecs outside secure contexts); held for its drop.
    Mse(#[allow(dead_code)] mse::Rung),
}

impl Drop for FallbackRun {
    fn drop(&mut self) {
        if let FallbackRun::Mjpeg(abort) = self {
            abort.abort();
        }
    }
}

impl Player {
    pub fn start(opts: Options, el: Elements, ui: RwSignal<Ui>) -> Result<Shared, String> {
        let urls = match &opts.whep {
            Some(whep) => StreamUrls::for_whep(whep).ok_or_else(|| format!("not a WHEP URL: {whep:?}"))?,
            None => StreamUrls::from_src(&opts.src).ok_or_else(|| format!("not a stream URL: {:?}", opts.src))?,
        };
        // Another server's WHEP has no MJPEG to fall back to.
        let fallback = opts.fallback && urls.has_extras();
        let player = Rc::new_cyclic(|me| {
            RefCell::new(Player {
                // The H.264 rung needs the relay's WebSocket and the browser's WebCodecs or MSE.
                ladder: if fallback && (h264::available() || mse::available()) { Ladder::new(fallback).with_h264_rung() } else { Ladder::new(fallback) },
                opts,
                urls,
                el,
                ui,
                generation: 0,
                session: None,
                ice_servers: Vec::new(),
                fallback: None,
                fallback_id: 0,
                fallback_frames: 0,
                fallback_last_ms: None,
                fallback_bytes: Rc::default(),
                fallback_mark: (0, 0, 0),
                webrtc_clock: FrameClock::default(),
                webrtc_stats: None,
                fps_hint: None,
                repeats: false,
                source: None,
                source_error: None,
                events: None,
                ticker: None,
                ticks: 0,
                stats: Stats::default(),
                rendition: None,
                age: PictureAge::default(),
                camera: None,
                focus: None,
                on_pagehide: None,
                me: me.clone(),
            })
        });
        {
            let mut p = player.borrow_mut();
            p.watch_source();
            p.start_ticker();
            let me = p.me.clone();
            p.on_pagehide = Some(EventListener::new(&net::window(), "pagehide", move |_| {
                if let Some(p) = me.upgrade() {
                    Player::stop(&p);
                }
            }));
            p.publish();
        }
        spawn_local(fetch_info(Rc::downgrade(&player)));
        if player.borrow().opts.autoplay {
            dispatch(&player, Event::Start);
        }
        Ok(player)
    }

    /// Starts a player mounted without autoplay.
    pub fn play(this: &Shared) {
        dispatch(this, Event::Start);
    }

    /// Pins the session to a rendition by name, or `auto` to let the relay choose again; kept
    /// for the sessions after this one too.
    pub fn choose(this: &Shared, name: String) {
        let mut p = this.borrow_mut();
        p.opts.rendition = Some(name.clone()).filter(|n| n != "auto");
        let Some(url) = p.session.as_ref().and_then(|s| s.url.clone()) else { return };
        let (token, me) = (p.opts.token.clone(), p.me.clone());
        spawn_local(async move {
            let put = rendition_url(&url);
            let req = Req { body: Some(&name), headers: &[("Content-Type", "text/plain")], ..Req::new(Method::PUT, &put, token.as_deref()) };
            let Ok(res) = net::fetch(req).await else { return };
            if res.ok() {
                set_rendition(&me, &url, &net::text(&res).await);
            }
        });
    }

    /// The focus region the relay now has (from the view's own request), with its history.
    pub fn set_focus(this: &Shared, focus: PlayerFocus) {
        let mut p = this.borrow_mut();
        p.focus = Some(focus);
        p.publish();
    }

    /// Ends the session on the relay and releases everything. Idempotent.
    pub fn stop(this: &Shared) {
        dispatch(this, Event::Stop);
        let mut p = this.borrow_mut();
        p.ticker = None;
        p.events = None;
        p.on_pagehide = None;
    }

    fn publish(&mut self) {
        let now = net::mono_ms();
        let ui = Ui {
            status: self.ladder.status().as_str(),
            transport: self.ladder.transport().as_str(),
            source: self.source,
            source_error: self.source_error.clone(),
            error: self.ladder.last_error().map(str::to_owned),
            retry_in_ms: self.ladder.retry_in_ms(now),
            stats: self.stats.clone(),
            rendition: self.rendition.clone(),
            age: self.age,
            camera: self.camera,
            layout: self.layout(),
            focus: self.focus.clone(),
        };
        // Attributes for CSS, tests and host pages; the pc for those who want its stats.
        let root = &self.el.root;
        let _ = root.set_attribute("data-status", ui.status);
        let _ = root.set_attribute("data-transport", ui.transport);
        let _ = root.set_attribute("data-source", self.source.map_or("unknown", source_str));
        let _ = root.set_attribute("data-fallback-frames", &self.fallback_frames.to_string());
        let _ = root.set_attribute("data-webrtc-frames", &self.webrtc_clock.frames().to_string());
        let (rendition, pinned) = self.rendition.as_ref().map_or(("", false), |r| (r.rendition.as_str(), r.pinned));
        let _ = root.set_attribute("data-rendition", rendition);
        let _ = root.set_attribute("data-rendition-pinned", if pinned { "true" } else { "false" });
        let handle = Object::new();
        let pc = self.session.as_ref().map_or(JsValue::NULL, |s| s.pc.clone().into());
        let url = self.session.as_ref().and_then(|s| s.url.clone()).map_or(JsValue::NULL, |u| JsValue::from_str(&u));
        let _ = Reflect::set(&handle, &"pc".into(), &pc);
        let _ = Reflect::set(&handle, &"sessionUrl".into(), &url);
        let _ = Reflect::set(root, &"scopecast".into(), &handle);
        if self.ui.with_untracked(|old| *old != ui) {
            self.ui.set(ui);
        }
    }

    /// The box and the picture in it: the video's while WebRTC plays, else the canvas's.
    fn layout(&self) -> Layout {
        let root = &self.el.root;
        let (pw, ph) = match self.ladder.transport() {
            Transport::WebRtc => (self.el.video.video_width(), self.el.video.video_height()),
            Transport::H264 | Transport::Mjpeg => (self.el.canvas.width(), self.el.canvas.height()),
            Transport::None => (0, 0),
        };
        Layout { width: root.client_width().into(), height: root.client_height().into(), picture_width: pw.into(), picture_height: ph.into() }
    }

    fn start_ticker(&mut self) {
        let me = self.me.clone();
        self.ticker = Some(Interval::new(TICK_MS, move || {
            if let Some(p) = me.upgrade() {
                tick(&p);
            }
        }));
    }

    /// The source's state from the relay's event stream (a Scopecast extra: other WHEP servers
    /// have none, and the view then simply does not show it).
    fn watch_source(&mut self) {
        if !self.urls.has_extras() {
            return;
        }
        let url = with_token_query(&self.urls.events, self.opts.token.as_deref());
        let Ok(mut es) = EventSource::new(&url) else { return };
        let (Ok(states), Ok(frames), Ok(focus)) = (es.subscribe(EVENT_STATE), es.subscribe(EVENT_FRAME), es.subscribe(EVENT_FOCUS)) else { return };
        let mut events = futures_util::stream::select(futures_util::stream::select(states, frames), focus);
        let me = self.me.clone();
        spawn_local(async move {
            // Reconnects are the browser's; an error item means closed for good (or by us).
            while let Some(Ok((name, ev))) = events.next().await {
                let Some(p) = me.upgrade() else { return };
                let Some(data) = ev.data().as_string() else { continue };
                if p.borrow_mut().on_event(&name, &data) {
                    p.borrow_mut().publish();
                }
            }
        });
        self.events = Some(es);
    }
}

impl Player {
    /// One event from the relay's event stream; `true` when the view has something new.
    fn on_event(&mut self, name: &str, data: &str) -> bool {
        match name {
            EVENT_STATE => {
                let Ok(state) = serde_json::from_str::<StateEvent>(data) else { return false };
                let back_live = state.state == SourceState::Live && self.source != Some(SourceState::Live);
                self.source = Some(state.state);
                self.source_error = state.last_error;
                if back_live {
                    // The camera came back: its frames, not the once-a-second repeat, set the pace.
                    self.webrtc_clock.start(net::mono_ms());
                }
            }
            EVENT_FRAME => {
                let Ok(frame) = serde_json::from_str::<FrameEvent>(data) else { return false };
                self.age.on_frame(frame.captured_ms, frame.age_ms, net::mono_ms() as f64);
                self.camera = frame.width.zip(frame.height);
            }
            // Only a view with the focus tool keeps the figures (one per frame of the region).
            EVENT_FOCUS if self.opts.tools.focus => {
                let Ok(newest) = serde_json::from_str::<PlayerFocus>(data) else { return false };
                match &mut self.focus {
                    Some(f) if f.region == newest.region => {
                        f.history.extend(newest.history);
                        let excess = f.history.len().saturating_sub(FOCUS_HISTORY);
                        f.history.drain(..excess);
                    }
                    _ => self.focus = Some(newest),
                }
            }
            _ => return false,
        }
        true
    }
}

fn source_str(s: SourceState) -> &'static str {
    match s {
        SourceState::Idle => "idle",
        SourceState::Connecting => "connecting",
        SourceState::Live => "live",
        SourceState::Offline => "offline",
    }
}

/// `EventSource` and `<img>` cannot send headers: the relay takes the token as `?token=`.
pub(super) fn with_token_query(url: &str, token: Option<&str>) -> String {
    match token {
        Some(t) if !url.contains("token=") => with_query(url, "token", t),
        _ => url.to_owned(),
    }
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={}", js_sys::encode_uri_component(value))
}

/// Feeds one event to the ladder and carries out its commands.
pub fn dispatch(this: &Shared, event: Event) {
    let commands = {
        let mut p = this.borrow_mut();
        p.ladder.handle(net::mono_ms(), event, net::random())
    };
    for c in commands {
        run(this, c);
    }
    this.borrow_mut().publish();
}

fn run(this: &Shared, command: Command) {
    match command {
        Command::Post => {
            let generation = this.borrow().generation;
            spawn_local(post(Rc::downgrade(this), generation));
        }
        Command::IceRestart => {
            let generation = this.borrow().generation;
            spawn_local(ice_restart(Rc::downgrade(this), generation));
        }
        Command::HangUp => hang_up(this),
        Command::StartFallback(rung) => {
            let mut p = this.borrow_mut();
            p.fallback = None;
            p.fallback_id = p.fallback_id.wrapping_add(1);
            let _ = p.el.canvas.class_list().remove_1("scopecast-hidden");
            // Silence is counted from the start too (an H.264 rung that never sends is stuck).
            p.fallback_last_ms = Some(net::mono_ms());
            match rung {
                Rung::Mjpeg => {
                    let Ok(abort) = AbortController::new() else { return };
                    p.fallback = Some(FallbackRun::Mjpeg(abort.clone()));
                    spawn_local(read_mjpeg(Rc::downgrade(this), abort));
                }
                Rung::H264 => {
                    let id = p.fallback_id;
                    match start_h264(&p, id) {
                        Ok(rung) => p.fallback = Some(rung),
                        Err(e) => {
                            drop(p);
                            fallback_ended(Rc::downgrade(this), id, h264::js_message(&e));
                        }
                    }
                }
            }
        }
        Command::StopFallback => {
            let mut p = this.borrow_mut();
            p.fallback = None;
            p.fallback_id = p.fallback_id.wrapping_add(1);
            let _ = p.el.canvas.class_list().add_1("scopecast-hidden");
        }
    }
}

fn tick(this: &Shared) {
    let overlay = {
        let mut p = this.borrow_mut();
        p.ticks += 1;
        p.ticks.is_multiple_of(4)
    };
    dispatch(this, Event::Tick);
    spawn_local(poll(Rc::downgrade(this), overlay));
    if overlay {
        spawn_local(fetch_rendition(Rc::downgrade(this)));
    }
}

fn rendition_url(session: &str) -> String {
    format!("{}/rendition", session.split('?').next().unwrap_or(session))
}

/// The session's rendition, once a second while WebRTC plays from a Scopecast relay (another
/// server's WHEP has no such route: nothing is asked there).
async fn fetch_rendition(me: Weak<RefCell<Player>>) {
    let Some((url, token)) = me.upgrade().and_then(|p| {
        let p = p.borrow();
        let url = p.session.as_ref().and_then(|s| s.url.clone()).filter(|_| p.urls.has_extras() && p.ladder.transport() == Transport::WebRtc);
        url.map(|u| (u, p.opts.token.clone()))
    }) else {
        return;
    };
    let Ok(res) = net::fetch(Req::new(Method::GET, &rendition_url(&url), token.as_deref())).await else { return };
    if res.ok() {
        set_rendition(&me, &url, &net::text(&res).await);
    }
}

/// Keeps what the relay said of `session`'s rendition, unless that session has gone since.
fn set_rendition(me: &Weak<RefCell<Player>>, session: &str, body: &str) {
    let (Some(p), Ok(r)) = (me.upgrade(), serde_json::from_str::<ViewerRendition>(body)) else { return };
    let mut p = p.borrow_mut();
    if p.session.as_ref().and_then(|s| s.url.as_deref()) == Some(session) && p.rendition.as_ref() != Some(&r) {
        p.rendition = Some(r);
        p.publish();
    }
}

/// Reads the receiver's stats every tick: frames decoded ("playing", stalls) and the last
/// packet's age (a broken path under a relay session is acted on within about a second);
/// with `overlay`, once a second, also what the overlay shows.
async fn poll(me: Weak<RefCell<Player>>, overlay: bool) {
    let Some(p) = me.upgrade() else { return };
    let (pc, generation, prev) = {
        let p = p.borrow();
        (p.session.as_ref().map(|s| s.pc.clone()), p.generation, p.webrtc_stats.clone())
    };
    let now = net::mono_ms();
    let sample = match &pc {
        Some(pc) => stats::sample(pc, now).await,
        None => None,
    };
    let mut events = Vec::new();
    {
        let mut pl = p.borrow_mut();
        if pl.generation != generation {
            return;
        }
        let fps_hint = pl.fps_hint;
        if let Some(s) = &sample {
            if s.frames_decoded > 0 && s.frames_decoded != pl.webrtc_clock.frames() {
                events.push(Event::Playing);
            }
            pl.webrtc_clock.observe(now, s.frames_decoded);
        }
        let transport = pl.ladder.transport();
        // A live source but no new frames: the transport is stuck (an offline camera is not).
        // A relay's session is also stuck when its RTP stops: it repeats pictures each second.
        let source_live = !matches!(pl.source, Some(SourceState::Offline) | Some(SourceState::Connecting) | Some(SourceState::Idle));
        let relay_silent = pl.repeats && sample.as_ref().and_then(|s| s.since_packet_ms).is_some_and(|ms| ms > stall::RELAY_SILENCE_MS);
        if source_live && transport == Transport::WebRtc && (relay_silent || pl.webrtc_clock.stalled(now, fps_hint)) {
            events.push(Event::Stalled);
        }
        // The relay re-sends a picture each second: an H.264 rung silent for longer is stuck
        // (a dead TCP path shows no error for minutes).
        let h264_silent = pl.fallback_last_ms.is_some_and(|t| now.saturating_sub(t) > stall::RELAY_SILENCE_MS.max(3_000));
        if source_live && pl.repeats && transport == Transport::H264 && h264_silent {
            let id = pl.fallback_id;
            drop(pl);
            fallback_ended(Rc::downgrade(&p), id, "no H.264 frames".into());
            return;
        }
        if !overlay {
            drop(pl);
            for e in events {
                dispatch(&p, e);
            }
            return;
        }
        let mut st = stats::derive(prev.as_ref(), sample.as_ref());
        st.transport = transport.as_str();
        match transport {
            Transport::WebRtc => {
                st.width = pl.el.video.video_width();
                st.height = pl.el.video.video_height();
                st.since_frame_ms = pl.webrtc_clock.since_last_ms(now);
                st.latency_ms = stats::strip_latency(pl.el.video.as_ref(), st.width, st.height);
            }
            Transport::H264 | Transport::Mjpeg => {
                st.width = pl.el.canvas.width();
                st.height = pl.el.canvas.height();
                let (frames, bytes, at) = pl.fallback_mark;
                let secs = now.saturating_sub(at).max(1) as f64 / 1000.0;
                st.fps = pl.fallback_frames.saturating_sub(frames) as f64 / secs;
                st.bitrate_kbps = pl.fallback_bytes.get().saturating_sub(bytes) as f64 * 8.0 / 1000.0 / secs;
                st.since_frame_ms = pl.fallback_last_ms.map(|t| now.saturating_sub(t));
                st.latency_ms = stats::strip_latency(pl.el.canvas.as_ref(), st.width, st.height);
            }
            Transport::None => {}
        }
        pl.fallback_mark = (pl.fallback_frames, pl.fallback_bytes.get(), now);
        pl.stats = st;
        pl.webrtc_stats = sample;
    }
    for e in events {
        dispatch(&p, e);
    }
}

async fn fetch_info(me: Weak<RefCell<Player>>) {
    let Some((url, token)) = me.upgrade().map(|p| {
        let p = p.borrow();
        (p.urls.info.clone(), p.opts.token.clone())
    }) else {
        return;
    };
    if url.is_empty() {
        return; // not a Scopecast relay: no status route
    }
    let Ok(res) = net::fetch(Req::new(Method::GET, &url, token.as_deref())).await else { return };
    if !res.ok() {
        return;
    }
    let body = net::text(&res).await;
    if let (Ok(info), Some(p)) = (serde_json::from_str::<PlayerStreamInfo>(&body), me.upgrade()) {
        let mut p = p.borrow_mut();
        p.fps_hint = info.max_fps.or(Some(info.fps_in)).filter(|f| *f > 0.0);
        // Passed-through video (a chained relay) has no once-a-second repeat to rely on.
        p.repeats = info.video == scopecast_shared::api::VideoPath::Encoded;
        if p.source.is_none() {
            p.source = Some(info.state);
            p.source_error = info.last_error;
        }
        p.publish();
    }
}

/// One WHEP attempt: a recvonly peer connection, the offer (after ICE gathering, capped),
/// the POST, and the answer. Ends in a ladder event.
async fn post(me: Weak<RefCell<Player>>, generation: u32) {
    let outcome = negotiate(&me, generation).await;
    let Some(p) = me.upgrade() else { return };
    if p.borrow().generation != generation {
        return;
    }
    match outcome {
        Ok(()) => {
            trickle_late(&p);
            dispatch(&p, Event::Answered);
        }
        Err(refusal) => dispatch(&p, refusal),
    }
}

fn refused(status: u16, detail: impl Into<String>) -> Event {
    Event::Refused { status, retry_after_ms: None, detail: detail.into() }
}

async fn negotiate(me: &Weak<RefCell<Player>>, generation: u32) -> Result<(), Event> {
    let js = |e: JsValue| refused(0, format!("{e:?}"));
    // The ICE servers first (TURN with fresh credentials), so that this offer gathers relay
    // candidates: a 201's Links come too late for the offer they answer.
    let asked = {
        let p = me.upgrade().ok_or_else(|| refused(0, "gone"))?;
        let p = p.borrow();
        (p.urls.whep.clone(), p.opts.token.clone())
    };
    let fresh = ice_servers_of(&asked.0, asked.1.as_deref()).await;
    let (pc, whep, token) = {
        let p = me.upgrade().ok_or_else(|| refused(0, "gone"))?;
        let mut p = p.borrow_mut();
        if p.generation != generation {
            return Ok(());
        }
        if !fresh.is_empty() {
            p.ice_servers = fresh;
        }
        let pc = new_peer_connection(&p.ice_servers).map_err(js)?;
        let listeners = peer_listeners(&pc, me.clone(), generation, p.el.video.clone());
        p.session = Some(Session { pc: pc.clone(), url: None, etag: None, late_candidates: Vec::new(), remote_sdp: None, _listeners: listeners });
        let whep = match &p.opts.rendition {
            Some(r) if p.urls.has_extras() => with_query(&p.urls.whep, "rendition", r),
            _ => p.urls.whep.clone(),
        };
        (pc, whep, p.opts.token.clone())
    };
    let offer = net::wait(pc.create_offer()).await.map_err(js)?;
    let offer_sdp = Reflect::get(&offer, &"sdp".into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
    let desc = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    desc.set_sdp(&offer_sdp);
    net::wait(pc.set_local_description(&desc)).await.map_err(js)?;
    gathered(&pc, GATHER_CAP_MS).await;
    let sdp = pc.local_description().map(|d| d.sdp()).unwrap_or(offer_sdp);

    let res = net::fetch(Req { body: Some(&sdp), headers: &[("Content-Type", "application/sdp")], ..Req::new(Method::POST, &whep, token.as_deref()) })
        .await
        .map_err(|_| refused(0, "the relay did not answer"))?;
    let status = res.status();
    if status != 201 {
        let retry_after_ms = net::header(&res, "retry-after").and_then(|v| headers::retry_after_ms(&v, net::unix_ms()));
        let detail = net::problem_detail(&res).await;
        return Err(Event::Refused { status, retry_after_ms, detail });
    }
    let location = net::header(&res, "location").map(|l| headers::resolve(&net::absolute(&whep), &l));
    let etag = net::header(&res, "etag");
    let links = net::header(&res, "link").unwrap_or_default();
    let answer = net::text(&res).await;
    {
        let p = me.upgrade().ok_or_else(|| refused(0, "gone"))?;
        let mut p = p.borrow_mut();
        if p.generation != generation {
            // Hung up while the POST was out: end the session we just made.
            if let Some(url) = location {
                spawn_local(delete(url, token));
            }
            return Ok(());
        }
        let servers = headers::ice_servers([links.as_str()]);
        if !servers.is_empty() {
            // Too late for this offer; used by the next peer connection.
            p.ice_servers = servers;
        }
        if let Some(s) = p.session.as_mut() {
            s.url = location;
            s.etag = etag;
            s.remote_sdp = Some(answer.clone());
        }
    }
    let desc = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    desc.set_sdp(&answer);
    net::wait(pc.set_remote_description(&desc)).await.map_err(|e| refused(0, format!("the answer was refused: {e:?}")))?;
    Ok(())
}

/// The ICE servers a WHEP endpoint gives in its answer to OPTIONS; none when it gives none or
/// does not answer (the offer then goes without, as before).
async fn ice_servers_of(whep: &str, token: Option<&str>) -> Vec<headers::IceServer> {
    match net::fetch(Req::new(Method::OPTIONS, whep, token)).await {
        Ok(res) if res.ok() => headers::ice_servers([net::header(&res, "link").unwrap_or_default().as_str()]),
        _ => Vec::new(),
    }
}

fn new_peer_connection(servers: &[headers::IceServer]) -> Result<RtcPeerConnection, JsValue> {
    let config = RtcConfiguration::new();
    let list = Array::new();
    for s in servers {
        let server = RtcIceServer::new();
        server.set_urls(&JsValue::from_str(&s.url));
        if let Some(u) = &s.username {
            server.set_username(u);
        }
        if let Some(c) = &s.credential {
            server.set_credential(c);
        }
        list.push(&server);
    }
    config.set_ice_servers(&list);
    let pc = RtcPeerConnection::new_with_configuration(&config)?;
    let init = RtcRtpTransceiverInit::new();
    init.set_direction(RtcRtpTransceiverDirection::Recvonly);
    pc.add_transceiver_with_str_and_init("video", &init);
    Ok(pc)
}

/// Waits for ICE gathering to complete, at most `cap_ms`: host candidates come at once, and a
/// relay on the LAN needs nothing more; later ones are trickled. The listener and the timer
/// live in this call and are dropped with it.
async fn gathered(pc: &RtcPeerConnection, cap_ms: u32) {
    if pc.ice_gathering_state() == RtcIceGatheringState::Complete {
        return;
    }
    let mut resolve = None;
    let promise = js_sys::Promise::new(&mut |r, _| resolve = Some(r));
    let Some(resolve) = resolve else { return };
    let _timeout = {
        let resolve = resolve.clone();
        Timeout::new(cap_ms, move || {
            let _ = resolve.call0(&JsValue::NULL);
        })
    };
    let _listener = {
        let pc2 = pc.clone();
        EventListener::new(pc, "icegatheringstatechange", move |_| {
            if pc2.ice_gathering_state() == RtcIceGatheringState::Complete {
                let _ = resolve.call0(&JsValue::NULL);
            }
        })
    };
    let _ = net::wait(promise).await;
}

fn peer_listeners(pc: &RtcPeerConnection, me: Weak<RefCell<Player>>, generation: u32, video: HtmlVideoElement) -> Vec<EventListener> {
    let on_state = {
        let me = me.clone();
        let pc2 = pc.clone();
        EventListener::new(pc, "connectionstatechange", move |_| {
            let Some(p) = me.upgrade() else { return };
            if p.borrow().generation != generation {
                return;
            }
            let event = match pc2.connection_state() {
                RtcPeerConnectionState::Connected => Event::Connected,
                RtcPeerConnectionState::Disconnected => Event::Disconnected,
                RtcPeerConnectionState::Failed | RtcPeerConnectionState::Closed => Event::Failed,
                _ => return,
            };
            if event == Event::Connected {
                p.borrow_mut().webrtc_clock.start(net::mono_ms());
            }
            dispatch(&p, event);
        })
    };

    let on_track = EventListener::new(pc, "track", move |ev| {
        let Some(ev) = ev.dyn_ref::<RtcTrackEvent>() else { return };
        let stream = ev.streams().get(0).dyn_into::<web_sys::MediaStream>().ok().or_else(|| {
            let tracks = Array::of1(&ev.track());
            web_sys::MediaStream::new_with_tracks(&tracks).ok()
        });
        // Play out as soon as decoded: the browser's jitter buffer target to zero where supported.
        let receiver = ev.receiver();
        let _ = Reflect::set(&receiver, &"jitterBufferTarget".into(), &JsValue::from_f64(0.0));
        let _ = Reflect::set(&receiver, &"playoutDelayHint".into(), &JsValue::from_f64(0.0));
        video.set_muted(true);
        video.set_src_object(stream.as_ref());
        if let Ok(p) = video.play() {
            // Autoplay may be refused (no gesture); the picture still shows once allowed.
            spawn_local(async move {
                let _ = net::wait(p).await;
            });
        }
    });

    let on_candidate = EventListener::new(pc, "icecandidate", move |ev| {
        let Some(ev) = ev.dyn_ref::<RtcPeerConnectionIceEvent>() else { return };
        let Some(c) = ev.candidate() else { return };
        let Some(p) = me.upgrade() else { return };
        if p.borrow().generation != generation {
            return;
        }
        let line = c.candidate();
        if line.is_empty() {
            return;
        }
        // Before the POST's answer the candidate is in the offer (or will be trickled).
        if let Some(s) = p.borrow_mut().session.as_mut() {
            s.late_candidates.push(line);
        }
        if p.borrow().session.as_ref().is_some_and(|s| s.url.is_some()) {
            trickle_late(&p);
        }
    });
    vec![on_state, on_track, on_candidate]
}

/// PATCHes candidates that were not in the offer.
fn trickle_late(p: &Shared) {
    let mut pl = p.borrow_mut();
    let token = pl.opts.token.clone();
    let Some(s) = pl.session.as_mut() else { return };
    let Some(url) = s.url.clone() else { return };
    let offer = s.pc.local_description().map(|d| d.sdp()).unwrap_or_default();
    let pending: Vec<String> = std::mem::take(&mut s.late_candidates).into_iter().filter(|c| !offer.contains(c.as_str())).collect();
    let Some(ice) = IceParams::from_sdp(&offer) else { return };
    if pending.is_empty() {
        return;
    }
    let body = sdpfrag::fragment(&ice, &pending);
    spawn_local(async move {
        let _ = net::fetch(Req {
            body: Some(&body),
            headers: &[("Content-Type", "application/trickle-ice-sdpfrag")],
            ..Req::new(Method::PATCH, &url, token.as_deref())
        })
        .await;
    });
}

/// An ICE restart on the current session (WHEP's PATCH with `If-Match: *`).
async fn ice_restart(me: Weak<RefCell<Player>>, generation: u32) {
    let result = restart(&me, generation).await;
    let Some(p) = me.upgrade() else { return };
    if p.borrow().generation == generation {
        dispatch(&p, if result.is_ok() { Event::RestartAnswered } else { Event::RestartRefused });
    }
}

async fn restart(me: &Weak<RefCell<Player>>, generation: u32) -> Result<(), ()> {
    let (pc, url, token, remote) = {
        let p = me.upgrade().ok_or(())?;
        let p = p.borrow();
        let s = p.session.as_ref().ok_or(())?;
        (s.pc.clone(), s.url.clone().ok_or(())?, p.opts.token.clone(), s.remote_sdp.clone().ok_or(())?)
    };
    let options = RtcOfferOptions::new();
    options.set_ice_restart(true);
    let offer = net::wait(pc.create_offer_with_rtc_offer_options(&options)).await.map_err(|_| ())?;
    let sdp = Reflect::get(&offer, &"sdp".into()).ok().and_then(|v| v.as_string()).ok_or(())?;
    let desc = RtcSessionDescriptionInit::new(RtcSdpType::Offer);
    desc.set_sdp(&sdp);
    net::wait(pc.set_local_description(&desc)).await.map_err(|_| ())?;
    gathered(&pc, GATHER_CAP_MS).await;
    let local = pc.local_description().map(|d| d.sdp()).unwrap_or(sdp);
    let ice = IceParams::from_sdp(&local).ok_or(())?;
    let candidates: Vec<String> =
        local.lines().filter_map(|l| l.trim().strip_prefix("a=").filter(|c| c.starts_with("candidate:")).map(str::to_owned)).collect();
    let body = sdpfrag::fragment(&ice, &candidates);
    let res = net::fetch(Req {
        body: Some(&body),
        headers: &[("Content-Type", "application/trickle-ice-sdpfrag"), ("If-Match", "*")],
        ..Req::new(Method::PATCH, &url, token.as_deref())
    })
    .await
    .map_err(|_| ())?;
    if res.status() != 200 {
        return Err(());
    }
    let etag = net::header(&res, "etag");
    let fragment = net::text(&res).await;
    let new_remote = sdpfrag::apply_restart(&remote, &fragment).ok_or(())?;
    let desc = RtcSessionDescriptionInit::new(RtcSdpType::Answer);
    desc.set_sdp(&new_remote);
    net::wait(pc.set_remote_description(&desc)).await.map_err(|_| ())?;
    let p = me.upgrade().ok_or(())?;
    let mut p = p.borrow_mut();
    if p.generation == generation {
        if let Some(s) = p.session.as_mut() {
            s.remote_sdp = Some(new_remote);
            s.etag = etag.or(s.etag.take());
        }
    }
    Ok(())
}

fn hang_up(this: &Shared) {
    let mut p = this.borrow_mut();
    p.generation = p.generation.wrapping_add(1);
    p.webrtc_stats = None;
    p.webrtc_clock = FrameClock::default();
    p.rendition = None;
    let token = p.opts.token.clone();
    if let Some(s) = p.session.take() {
        // Its listeners go with it, so the closing pc reports nothing.
        s.pc.close();
        if let Some(url) = s.url {
            spawn_local(delete(url, token));
        }
    }
    p.el.video.set_src_object(None);
}

/// Ends a session on the relay. `keepalive`, so it goes out even when the page is unloading.
async fn delete(url: String, token: Option<String>) {
    net::delete_keepalive(&url, token.as_deref()).await;
}

/// The MJPEG fallback: reads `/{stream}/mjpeg` with fetch and draws the newest JPEG of each
/// chunk on the canvas. (An `<img>` would show each frame one frame late in Chromium.)
async fn read_mjpeg(me: Weak<RefCell<Player>>, abort: AbortController) {
    let result = mjpeg_loop(&me, &abort).await;
    let Some(p) = me.upgrade() else { return };
    let still_current = matches!(&p.borrow().fallback, Some(FallbackRun::Mjpeg(a)) if *a == abort);
    if still_current {
        if let Err(e) = result {
            web_sys::console::debug_1(&JsValue::from_str(&format!("scopecast: MJPEG ended: {e}")));
        }
        dispatch(&p, Event::FallbackEnded);
    }
}

async fn mjpeg_loop(me: &Weak<RefCell<Player>>, abort: &AbortController) -> Result<(), String> {
    let (url, token, canvas, received) = {
        let p = me.upgrade().ok_or("gone")?;
        let p = p.borrow();
        (p.urls.mjpeg.clone(), p.opts.token.clone(), p.el.canvas.clone(), Rc::clone(&p.fallback_bytes))
    };
    let signal = abort.signal();
    let res = net::fetch(Req { signal: Some(&signal), ..Req::new(Method::GET, &url, token.as_deref()) }).await.map_err(|_| "no answer".to_owned())?;
    if !res.ok() {
        return Err(format!("HTTP {}", res.status()));
    }
    let boundary = net::header(&res, "content-type").and_then(|ct| boundary_from_content_type(&ct));
    let body = res.body().ok_or("no body")?;
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let mut parser = MultipartParser::new(boundary.as_deref(), DEFAULT_MAX_PART);
    let ctx = canvas.get_context("2d").ok().flatten().and_then(|c| c.dyn_into::<CanvasRenderingContext2d>().ok()).ok_or("no 2d canvas")?;
    while let Some(chunk) = net::read_chunk(&reader).await.map_err(|e| format!("{e:?}"))? {
        received.set(received.get() + chunk.len() as u64);
        parser.push(&chunk);
        let mut newest = None;
        while let Some(event) = parser.next_event() {
            if let PartEvent::Jpeg(part) = event {
                newest = Some(part.jpeg);
            }
        }
        let Some(jpeg) = newest else { continue };
        if draw_jpeg(&jpeg, &canvas, &ctx).await.is_err() {
            continue; // A corrupt frame: skip it, the next one comes.
        }
        let p = me.upgrade().ok_or("gone")?;
        if !matches!(&p.borrow().fallback, Some(FallbackRun::Mjpeg(a)) if a == abort) {
            return Ok(());
        }
        fallback_frame(&p);
    }
    Err("the stream ended".into())
}

async fn draw_jpeg(jpeg: &[u8], canvas: &HtmlCanvasElement, ctx: &CanvasRenderingContext2d) -> Result<(), JsValue> {
    let blob = net::blob(jpeg, "image/jpeg")?;
    let bitmap: web_sys::ImageBitmap = net::wait(net::window().create_image_bitmap_with_blob(&blob)?).await?.dyn_into()?;
    if canvas.width() != bitmap.width() || canvas.height() != bitmap.height() {
        canvas.set_width(bitmap.width());
        canvas.set_height(bitmap.height());
    }
    ctx.draw_image_with_image_bitmap(&bitmap, 0.0, 0.0)?;
    bitmap.close();
    Ok(())
}

/// A fallback frame drawn: counted, and the ladder told.
fn fallback_frame(p: &Shared) {
    {
        let mut pl = p.borrow_mut();
        pl.fallback_frames += 1;
        pl.fallback_last_ms = Some(net::mono_ms());
    }
    dispatch(p, Event::FallbackFrame);
}

/// The H.264 rung (`/{stream}/h264` as a WebSocket, the pinned rendition's if any) into the
/// canvas, through WebCodecs where there is, else MSE; its frames and its end are reported
/// while it is fallback `id`.
fn start_h264(p: &Player, id: u32) -> Result<FallbackRun, JsValue> {
    let mut url = with_token_query(&net::absolute(&p.urls.h264), p.opts.token.as_deref());
    if let Some(r) = &p.opts.rendition {
        url = with_query(&url, "rendition", r);
    }
    let webcodecs = h264::available();
    if !webcodecs {
        url = with_query(&url, "container", scopecast_shared::h264_ws::CONTAINER_FMP4);
    }
    let url = headers::websocket_url(&url).ok_or("the relay's address is not http(s)")?;
    let (me, me2) = (p.me.clone(), p.me.clone());
    let on_frame = move || {
        if let Some(p) = me.upgrade().filter(|p| p.borrow().fallback_id == id) {
            fallback_frame(&p);
        }
    };
    // Deferred: the rung is dropped on its end, which must not happen inside its own callback.
    let on_end = move |why: String| {
        let me = me2.clone();
        spawn_local(async move { fallback_ended(me, id, why) });
    };
    let (canvas, received) = (p.el.canvas.clone(), Rc::clone(&p.fallback_bytes));
    Ok(if webcodecs {
        FallbackRun::H264(h264::start(&url, canvas, received, on_frame, on_end)?)
    } else {
        FallbackRun::Mse(mse::start(&url, canvas, received, on_frame, on_end)?)
    })
}

/// Fallback `id` ended (its stream closed, failed or went silent): stopped, and the ladder told.
fn fallback_ended(me: Weak<RefCell<Player>>, id: u32, why: String) {
    let Some(p) = me.upgrade() else { return };
    {
        let pl = &mut *p.borrow_mut();
        if pl.fallback_id != id {
            return;
        }
        pl.fallback = None;
        pl.fallback_id = pl.fallback_id.wrapping_add(1);
    }
    web_sys::console::debug_1(&JsValue::from_str(&format!("scopecast: fallback ended: {why}")));
    dispatch(&p, Event::FallbackEnded);
}
