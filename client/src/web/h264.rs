//! The H.264 rung: the stream's access units over a WebSocket (`/{stream}/h264`, framing in
//! `scopecast_shared::h264_ws`), decoded by WebCodecs and drawn on the canvas. For networks
//! that block WebRTC's UDP: the same encode, at WebRTC's bandwidth instead of MJPEG's.
//!
//! WebCodecs exists only in secure contexts (HTTPS, localhost). web-sys has its bindings only
//! behind `--cfg web_sys_unstable_apis`; the handful used here are declared below instead.

use gloo_events::EventListener;
use js_sys::{Object, Reflect, Uint8Array};
use scopecast_shared::h264_ws::{avc_codec, nal_units, Unit};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{BinaryType, CanvasRenderingContext2d, HtmlCanvasElement, MessageEvent, WebSocket};

/// Units waiting in the decoder beyond which deltas are dropped until the next keyframe: a
/// slow decoder shows a jump, never a growing delay.
const MAX_DECODE_QUEUE: u32 = 4;

#[wasm_bindgen]
extern "C" {
    #[derive(Clone)]
    type VideoDecoder;
    #[wasm_bindgen(constructor, catch)]
    fn new(init: &Object) -> Result<VideoDecoder, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn configure(this: &VideoDecoder, config: &Object) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn decode(this: &VideoDecoder, chunk: &EncodedVideoChunk) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn close(this: &VideoDecoder) -> Result<(), JsValue>;
    #[wasm_bindgen(method, getter, js_name = decodeQueueSize)]
    fn decode_queue_size(this: &VideoDecoder) -> u32;

    type EncodedVideoChunk;
    #[wasm_bindgen(constructor, catch)]
    fn new(init: &Object) -> Result<EncodedVideoChunk, JsValue>;

    type VideoFrame;
    #[wasm_bindgen(method, getter, js_name = displayWidth)]
    fn display_width(this: &VideoFrame) -> u32;
    #[wasm_bindgen(method, getter, js_name = displayHeight)]
    fn display_height(this: &VideoFrame) -> u32;
    #[wasm_bindgen(method)]
    fn close(this: &VideoFrame);

    /// A canvas' 2D context, for its `drawImage(VideoFrame)`, which web-sys lacks.
    type Canvas2d;
    #[wasm_bindgen(method, catch, js_name = drawImage)]
    fn draw_frame(this: &Canvas2d, frame: &VideoFrame, x: f64, y: f64) -> Result<(), JsValue>;
}

/// Whether this browser has WebCodecs' decoder (secure contexts only).
pub fn available() -> bool {
    Reflect::has(&js_sys::global(), &"VideoDecoder".into()).unwrap_or(false)
}

/// A running rung; dropping it closes the socket and the decoder.
pub struct Rung {
    socket: WebSocket,
    decoder: VideoDecoder,
    _listeners: [EventListener; 3],
    _output: Closure<dyn FnMut(VideoFrame)>,
    _error: Closure<dyn FnMut(JsValue)>,
}

impl Drop for Rung {
    fn drop(&mut self) {
        let _ = self.socket.close();
        let _ = self.decoder.close();
    }
}

/// What the decoder has been told so far.
#[derive(Default)]
struct DecodeState {
    /// The SPS it was configured for: a new one (a rendition's size) reconfigures it.
    sps: Option<Vec<u8>>,
    waiting_for_keyframe: bool,
}

/// Opens `url` (ws: or wss:) and draws what it sends on `canvas`, adding the bytes of each
/// message to `received`. `on_frame` runs after each picture drawn; `on_end` once, when the
/// socket closes or decoding fails (never after a drop).
pub fn start(
    url: &str,
    canvas: HtmlCanvasElement,
    received: Rc<Cell<u64>>,
    on_frame: impl Fn() + 'static,
    on_end: impl Fn(String) + 'static,
) -> Result<Rung, JsValue> {
    let ctx: Canvas2d = canvas.get_context("2d")?.ok_or("no 2d canvas")?.dyn_into::<CanvasRenderingContext2d>()?.unchecked_into();
    let end = end_once(on_end);
    let output = Closure::<dyn FnMut(VideoFrame)>::new(move |frame: VideoFrame| {
        let (w, h) = (frame.display_width(), frame.display_height());
        if canvas.width() != w || canvas.height() != h {
            canvas.set_width(w);
            canvas.set_height(h);
        }
        let drawn = ctx.draw_frame(&frame, 0.0, 0.0).is_ok();
        frame.close();
        if drawn {
            on_frame();
        }
    });
    let error = {
        let end = Rc::clone(&end);
        Closure::<dyn FnMut(JsValue)>::new(move |e: JsValue| end(format!("H.264 decoder: {}", js_message(&e))))
    };
    let init = Object::new();
    Reflect::set(&init, &"output".into(), output.as_ref())?;
    Reflect::set(&init, &"error".into(), error.as_ref())?;
    let decoder = VideoDecoder::new(&init)?;
    let (socket, [on_close, on_error]) = open_socket(url, &end)?;
    let state = Rc::new(RefCell::new(DecodeState { sps: None, waiting_for_keyframe: true }));
    let on_message = {
        let (decoder, end) = (decoder.clone(), Rc::clone(&end));
        EventListener::new(&socket, "message", move |e| {
            let Some(data) = e.dyn_ref::<MessageEvent>().map(MessageEvent::data) else { return };
            let Ok(buffer) = data.dyn_into::<js_sys::ArrayBuffer>() else { return };
            let bytes = Uint8Array::new(&buffer).to_vec();
            received.set(received.get() + bytes.len() as u64);
            if let Err(e) = feed(&decoder, &mut state.borrow_mut(), &bytes) {
                end(format!("H.264 decoder: {}", js_message(&e)));
            }
        })
    };
    Ok(Rung { socket, decoder, _listeners: [on_message, on_close, on_error], _output: output, _error: error })
}

/// `on_end` made to run once, however many of a rung's parts (its socket, its decoder or
/// player) report an end. Shared by both ways of playing the rung (this and `mse.rs`).
pub(super) fn end_once(on_end: impl Fn(String) + 'static) -> Rc<dyn Fn(String)> {
    let ended = Cell::new(false);
    Rc::new(move |why: String| {
        if !ended.replace(true) {
            on_end(why);
        }
    })
}

/// The rung's WebSocket (binary messages as ArrayBuffers), and the listeners that report its
/// closing or failing to `end`.
pub(super) fn open_socket(url: &str, end: &Rc<dyn Fn(String)>) -> Result<(WebSocket, [EventListener; 2]), JsValue> {
    let socket = WebSocket::new(url)?;
    socket.set_binary_type(BinaryType::Arraybuffer);
    let on_close = {
        let end = Rc::clone(end);
        EventListener::new(&socket, "close", move |_| end("the H.264 stream closed".into()))
    };
    let on_error = {
        let end = Rc::clone(end);
        EventListener::new(&socket, "error", move |_| end("the H.264 stream failed".into()))
    };
    Ok((socket, [on_close, on_error]))
}

/// One message into the decoder: configured at the first keyframe (and again when the SPS
/// changes), deltas dropped while it is behind.
fn feed(decoder: &VideoDecoder, state: &mut DecodeState, message: &[u8]) -> Result<(), JsValue> {
    let Some(unit) = Unit::parse(message).filter(|u| !u.init) else { return Ok(()) }; // not ours: skipped
    if unit.keyframe {
        let sps = nal_units(unit.payload).find(|n| n.first().is_some_and(|b| b & 0x1f == 7)).map(<[u8]>::to_vec);
        if sps.is_some() && sps != state.sps {
            let codec = avc_codec(unit.payload).ok_or("a keyframe without an SPS")?;
            let config = Object::new();
            Reflect::set(&config, &"codec".into(), &codec.into())?;
            Reflect::set(&config, &"optimizeForLatency".into(), &true.into())?;
            decoder.configure(&config)?;
            state.sps = sps;
        }
        state.waiting_for_keyframe = state.sps.is_none();
    } else if state.waiting_for_keyframe || decoder.decode_queue_size() > MAX_DECODE_QUEUE {
        state.waiting_for_keyframe = true;
        return Ok(());
    }
    if state.sps.is_none() {
        return Ok(());
    }
    let init = Object::new();
    Reflect::set(&init, &"type".into(), &(if unit.keyframe { "key" } else { "delta" }).into())?;
    // Microseconds fit an f64 exactly for 285 years.
    Reflect::set(&init, &"timestamp".into(), &(unit.timestamp_us as f64).into())?;
    Reflect::set(&init, &"data".into(), &Uint8Array::from(unit.payload))?;
    decoder.decode(&EncodedVideoChunk::new(&init)?)
}

pub fn js_message(e: &JsValue) -> String {
    Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()).or_else(|| e.as_string()).unwrap_or_else(|| format!("{e:?}"))
}
