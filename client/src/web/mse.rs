//! The H.264 rung through Media Source Extensions, for pages that are not a secure context
//! (plain HTTP on a LAN address), where WebCodecs does not exist: the relay muxes each access
//! unit into an MP4 fragment (`?container=fmp4`), a hidden `<video>` plays them, and each frame
//! it presents is drawn on the canvas, so the rest of the player sees the rung as it sees the
//! WebCodecs one.
//!
//! MSE buffers for smooth playback; a live view wants the newest frame. So the stream is
//! declared live (infinite duration: Chromium then renders with low delay), each frame lasts
//! until the next replaces it (`relay/src/media/fmp4.rs`), the playhead is kept on the newest
//! frame (nudged faster when a little behind, moved when far behind), and what was played is
//! removed so the buffer never fills.

use super::h264::{end_once, js_message, open_socket};
use gloo_events::EventListener;
use js_sys::{Function, Uint8Array};
use scopecast_shared::h264_ws::Unit;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, HtmlVideoElement, MediaSource, MediaSourceReadyState, MessageEvent, SourceBuffer, Url, WebSocket};

/// What the relay sends for a Constrained Baseline stream: the rung is offered only where it plays.
const PROBE_TYPE: &str = "video/mp4; codecs=\"avc1.42e01f\"";
/// Fragments waiting to be appended beyond which deltas are dropped until the next keyframe.
const MAX_QUEUED: usize = 8;
/// Behind the newest frame by more than this, the playhead moves to it (a jump).
const JUMP_BEHIND_S: f64 = 0.5;
/// Behind by more than this, playback runs a little fast until it catches up.
const CATCH_UP_BEHIND_S: f64 = 0.04;
const CATCH_UP_RATE: f64 = 1.25;
/// Played video kept in the buffer; older is removed, from one keyframe to another.
const KEEP_S: f64 = 10.0;

#[wasm_bindgen]
extern "C" {
    /// The video element's frame callbacks, which web-sys has only as unstable APIs.
    #[wasm_bindgen(extends = HtmlVideoElement)]
    #[derive(Clone)]
    type FrameVideo;
    #[wasm_bindgen(method, js_name = requestVideoFrameCallback)]
    fn request_video_frame_callback(this: &FrameVideo, callback: &Function) -> u32;
    #[wasm_bindgen(method, js_name = cancelVideoFrameCallback)]
    fn cancel_video_frame_callback(this: &FrameVideo, handle: u32);
}

/// Whether this browser plays H.264 through MSE and can tell when a frame is shown. Not
/// Firefox for now: in the browser test (ESR, offline, its system FFmpeg) the rung drew six
/// frames in 40 s and never recovered, where MJPEG plays; until that is understood it keeps
/// MJPEG.
pub fn available() -> bool {
    let firefox = web_sys::window().and_then(|w| w.navigator().user_agent().ok()).is_some_and(|ua| ua.contains("Firefox/"));
    if firefox {
        return false;
    }
    let has_frame_callbacks = js_sys::Reflect::get(&js_sys::global(), &"HTMLVideoElement".into())
        .and_then(|c| js_sys::Reflect::get(&c, &"prototype".into()))
        .is_ok_and(|p| js_sys::Reflect::has(&p, &"requestVideoFrameCallback".into()).unwrap_or(false));
    has_frame_callbacks && js_sys::Reflect::has(&js_sys::global(), &"MediaSource".into()).unwrap_or(false) && MediaSource::is_type_supported(PROBE_TYPE)
}

/// A running rung; dropping it closes the socket and detaches the video.
pub struct Rung {
    socket: WebSocket,
    video: FrameVideo,
    object_url: String,
    frame_callback: Rc<Cell<u32>>,
    _listeners: Vec<EventListener>,
    _on_video_frame: FrameCallback,
}

/// The frame callback, which registers itself again each time it runs.
type FrameCallback = Rc<RefCell<Option<Closure<dyn FnMut()>>>>;

impl Drop for Rung {
    fn drop(&mut self) {
        let _ = self.socket.close();
        self.video.cancel_video_frame_callback(self.frame_callback.get());
        let _ = self.video.remove_attribute("src");
        self.video.load();
        self.video.remove();
        let _ = Url::revoke_object_url(&self.object_url);
        // The closure holds itself through the callback it registers: break the cycle.
        self._on_video_frame.borrow_mut().take();
    }
}

/// What waits for the SourceBuffer, which takes one operation at a time.
enum Op {
    Type(String),
    Append(Vec<u8>),
    Remove(f64),
}

/// The feed's state between socket messages and the buffer's `updateend`.
struct Feed {
    source: MediaSource,
    buffer: Option<SourceBuffer>,
    buffer_listeners: Vec<EventListener>,
    mime: Option<String>,
    queue: VecDeque<Op>,
    waiting_for_keyframe: bool,
    /// The newest fragment's time (s), where the playhead should be.
    newest_s: Option<f64>,
    /// Keyframes' times (s) still in the buffer: what was played is removed up to one, never
    /// from inside a group of frames that is still playing.
    keyframes_s: VecDeque<f64>,
}

type End = Rc<dyn Fn(String)>;

/// Opens `url` (ws: or wss:, with `container=fmp4`) and shows what it sends on `canvas`,
/// adding the bytes of each message to `received`. `on_frame` runs after each picture drawn;
/// `on_end` once, when the socket closes or playback fails (never after a drop).
pub fn start(
    url: &str,
    canvas: HtmlCanvasElement,
    received: Rc<Cell<u64>>,
    on_frame: impl Fn() + 'static,
    on_end: impl Fn(String) + 'static,
) -> Result<Rung, JsValue> {
    let ctx = canvas.get_context("2d")?.ok_or("no 2d canvas")?.dyn_into::<CanvasRenderingContext2d>()?;
    let end: End = end_once(on_end);
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let video: FrameVideo = document.create_element("video")?.unchecked_into();
    video.set_muted(true);
    video.set_autoplay(true);
    video.set_attribute("playsinline", "")?;
    video.set_class_name("scopecast-mse");
    // Under the canvas, which covers it: in the page (so it presents frames), never seen.
    if let Some(parent) = canvas.parent_node() {
        parent.insert_before(&video, Some(&canvas))?;
    }
    let source = MediaSource::new()?;
    let object_url = Url::create_object_url_with_source(&source)?;
    video.set_src(&object_url);

    let feed = Rc::new(RefCell::new(Feed {
        source: source.clone(),
        buffer: None,
        buffer_listeners: Vec::new(),
        mime: None,
        queue: VecDeque::new(),
        waiting_for_keyframe: true,
        newest_s: None,
        keyframes_s: VecDeque::new(),
    }));
    let mut listeners = Vec::new();
    listeners.push({
        let (feed, video, end) = (Rc::clone(&feed), video.clone(), Rc::clone(&end));
        EventListener::once(&source, "sourceopen", move |_| {
            // Live: no end to wait for, and Chromium renders each frame as it comes.
            feed.borrow().source.set_duration(f64::INFINITY);
            pump(&feed, &video, &end);
        })
    });
    let (socket, socket_listeners) = open_socket(url, &end)?;
    listeners.extend(socket_listeners);
    listeners.push({
        let (feed, video, end) = (Rc::clone(&feed), video.clone(), Rc::clone(&end));
        EventListener::new(&socket, "message", move |e| {
            let Some(data) = e.dyn_ref::<MessageEvent>().map(MessageEvent::data) else { return };
            if let Some(mime) = data.as_string() {
                feed.borrow_mut().queue.push_back(Op::Type(mime));
            } else if let Ok(buffer) = data.dyn_into::<js_sys::ArrayBuffer>() {
                let bytes = Uint8Array::new(&buffer).to_vec();
                received.set(received.get() + bytes.len() as u64);
                queue_unit(&mut feed.borrow_mut(), &bytes);
            }
            pump(&feed, &video, &end);
        })
    });
    listeners.push({
        let (end, v) = (Rc::clone(&end), video.clone());
        EventListener::new(&video, "error", move |_| {
            let why = v.error().map(|e| e.message()).unwrap_or_default();
            end(format!("MSE playback: {why}"));
        })
    });

    // Each frame the video presents, drawn on the canvas.
    let frame_callback = Rc::new(Cell::new(0));
    let on_video_frame: FrameCallback = Rc::new(RefCell::new(None));
    {
        let (video, again, handle) = (video.clone(), Rc::clone(&on_video_frame), Rc::clone(&frame_callback));
        *on_video_frame.borrow_mut() = Some(Closure::new(move || {
            let (w, h) = (video.video_width(), video.video_height());
            if w > 0 && h > 0 {
                if canvas.width() != w || canvas.height() != h {
                    canvas.set_width(w);
                    canvas.set_height(h);
                }
                if ctx.draw_image_with_html_video_element(&video, 0.0, 0.0).is_ok() {
                    on_frame();
                }
            }
            if let Some(callback) = again.borrow().as_ref() {
                handle.set(video.request_video_frame_callback(callback.as_ref().unchecked_ref()));
            }
        }));
    }
    if let Some(callback) = on_video_frame.borrow().as_ref() {
        frame_callback.set(video.request_video_frame_callback(callback.as_ref().unchecked_ref()));
    }
    Ok(Rung { socket, video, object_url, frame_callback, _listeners: listeners, _on_video_frame: on_video_frame })
}

/// One binary message into the queue: init segments always, fragments from a keyframe on,
/// deltas dropped while the buffer is behind.
fn queue_unit(feed: &mut Feed, message: &[u8]) {
    let Some(unit) = Unit::parse(message) else { return }; // not ours: skipped
    if !unit.init {
        let appends = feed.queue.iter().filter(|op| matches!(op, Op::Append(_))).count();
        if unit.keyframe {
            feed.waiting_for_keyframe = false;
        } else if feed.waiting_for_keyframe || appends > MAX_QUEUED {
            feed.waiting_for_keyframe = true;
            return;
        }
        let at = unit.timestamp_us as f64 / 1e6;
        feed.newest_s = Some(at);
        if unit.keyframe {
            feed.keyframes_s.push_back(at);
        }
    }
    feed.queue.push_back(Op::Append(unit.payload.to_vec()));
}

/// Runs the next queued operation if the buffer is free, and keeps the playhead on the newest
/// frame.
fn pump(feed: &Rc<RefCell<Feed>>, video: &FrameVideo, end: &End) {
    if let Err(e) = step(feed, video, end) {
        end(format!("MSE: {}", js_message(&e)));
    }
}

fn step(feed_rc: &Rc<RefCell<Feed>>, video: &FrameVideo, end: &End) -> Result<(), JsValue> {
    let mut feed = feed_rc.borrow_mut();
    if feed.source.ready_state() != MediaSourceReadyState::Open {
        return Ok(());
    }
    let Some(buffer) = feed.buffer.clone() else {
        // The first operation must say what the buffer is for.
        match feed.queue.pop_front() {
            Some(Op::Type(mime)) => {
                let buffer = feed.source.add_source_buffer(&mime)?;
                let (f, v, e) = (Rc::clone(feed_rc), video.clone(), Rc::clone(end));
                feed.buffer_listeners.push(EventListener::new(&buffer, "updateend", move |_| {
                    chase(&f.borrow(), &v);
                    pump(&f, &v, &e);
                }));
                feed.buffer = Some(buffer);
                feed.mime = Some(mime);
                drop(feed);
                return step(feed_rc, video, end);
            }
            // A fragment before any MIME type: nothing can take it.
            Some(_) => {
                drop(feed);
                return step(feed_rc, video, end);
            }
            None => return Ok(()),
        }
    };
    if buffer.updating() {
        return Ok(());
    }
    let Some(op) = feed.queue.pop_front() else {
        // Idle: remove what was played long ago, up to the last keyframe before it.
        let played = video.current_time() - KEEP_S;
        let mut until = None;
        while feed.keyframes_s.get(1).is_some_and(|&k| k <= played) {
            until = feed.keyframes_s.pop_front();
        }
        if let Some(until) = until.and_then(|_| feed.keyframes_s.front().copied()) {
            feed.queue.push_back(Op::Remove(until));
            drop(feed);
            return step(feed_rc, video, end);
        }
        return Ok(());
    };
    match op {
        Op::Type(mime) if feed.mime.as_deref() == Some(&mime) => {
            drop(feed);
            return step(feed_rc, video, end);
        }
        Op::Type(mime) => {
            buffer.change_type(&mime)?;
            feed.mime = Some(mime);
            drop(feed);
            return step(feed_rc, video, end);
        }
        Op::Append(mut bytes) => buffer.append_buffer_with_u8_array(&mut bytes)?,
        Op::Remove(until) => buffer.remove(0.0, until)?,
    }
    Ok(())
}

/// Keeps the playhead on the newest frame: plays if paused, a little faster when slightly
/// behind, moves when far behind (a slow stream's gap, a stall).
fn chase(feed: &Feed, video: &FrameVideo) {
    let Some(newest) = feed.newest_s else { return };
    let behind = newest - video.current_time();
    if behind > JUMP_BEHIND_S {
        video.set_current_time(newest);
    }
    let rate = if behind > CATCH_UP_BEHIND_S { CATCH_UP_RATE } else { 1.0 };
    if video.playback_rate() != rate {
        video.set_playback_rate(rate);
    }
    if video.paused() {
        let _ = video.play();
    }
}
