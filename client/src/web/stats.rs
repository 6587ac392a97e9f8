//! What the overlay shows: WebRTC receiver stats, and glass-to-glass latency read from the
//! timecode strip when the picture carries one.

use super::net;
use js_sys::{Array, Function, Reflect};
use scopecast_shared::timecode;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CanvasRenderingContext2d, HtmlCanvasElement, RtcPeerConnection};

/// One reading of the video receiver's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    pub at_ms: u64,
    pub frames_decoded: u64,
    pub bytes_received: u64,
    pub packets_received: u64,
    pub packets_lost: i64,
    pub rtt_ms: Option<f64>,
    /// How long before this reading the last RTP packet arrived (the browser's own clock).
    pub since_packet_ms: Option<u64>,
}

/// The overlay's numbers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub transport: &'static str,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub bitrate_kbps: f64,
    pub rtt_ms: Option<f64>,
    pub loss_pct: Option<f64>,
    pub since_frame_ms: Option<u64>,
    pub latency_ms: Option<u64>,
}

fn num(obj: &JsValue, key: &str) -> Option<f64> {
    Reflect::get(obj, &key.into()).ok().and_then(|v| v.as_f64())
}

pub async fn sample(pc: &RtcPeerConnection, now: u64) -> Option<Sample> {
    let report = net::wait(pc.get_stats()).await.ok()?;
    let mut s = Sample { at_ms: now, ..Sample::default() };
    let mut seen = false;
    // RTCStatsReport is map-like: its values() iterates the stats objects.
    let values = report.unchecked_ref::<js_sys::Map>().values();
    for stat in values.into_iter().flatten() {
        let kind = Reflect::get(&stat, &"type".into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
        let media = Reflect::get(&stat, &"kind".into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
        if kind == "inbound-rtp" && media == "video" {
            seen = true;
            s.frames_decoded = num(&stat, "framesDecoded").unwrap_or(0.0) as u64;
            s.bytes_received = num(&stat, "bytesReceived").unwrap_or(0.0) as u64;
            s.packets_received = num(&stat, "packetsReceived").unwrap_or(0.0) as u64;
            s.packets_lost = num(&stat, "packetsLost").unwrap_or(0.0) as i64;
            if let (Some(at), Some(last)) = (num(&stat, "timestamp"), num(&stat, "lastPacketReceivedTimestamp")) {
                s.since_packet_ms = Some((at - last).max(0.0) as u64);
            }
        } else if kind == "candidate-pair" && Reflect::get(&stat, &"nominated".into()).ok().is_some_and(|v| v.is_truthy()) {
            if let Some(rtt) = num(&stat, "currentRoundTripTime") {
                s.rtt_ms = Some(rtt * 1000.0);
            }
        }
    }
    seen.then_some(s)
}

/// Rates between two samples.
pub fn derive(prev: Option<&Sample>, cur: Option<&Sample>) -> Stats {
    let mut st = Stats::default();
    let Some(cur) = cur else { return st };
    st.rtt_ms = cur.rtt_ms;
    if let Some(prev) = prev {
        let dt = cur.at_ms.saturating_sub(prev.at_ms).max(1) as f64 / 1000.0;
        st.fps = cur.frames_decoded.saturating_sub(prev.frames_decoded) as f64 / dt;
        st.bitrate_kbps = cur.bytes_received.saturating_sub(prev.bytes_received) as f64 * 8.0 / 1000.0 / dt;
        let received = cur.packets_received.saturating_sub(prev.packets_received) as f64;
        let lost = (cur.packets_lost - prev.packets_lost).max(0) as f64;
        if received + lost > 0.0 {
            st.loss_pct = Some(100.0 * lost / (received + lost));
        }
    }
    st
}

/// Milliseconds from capture to now, read from the timecode strip at the top of `source` (a
/// `<video>` or `<canvas>`), when it carries one. Relay and viewer clocks are assumed in sync
/// (the same machine, or NTP).
pub fn strip_latency(source: &JsValue, width: u32, height: u32) -> Option<u64> {
    let (w, h) = (width as usize, height as usize);
    if w < 2 * timecode::CELLS || h < 8 {
        return None;
    }
    let band = timecode::band_height(h);
    let doc = net::window().document()?;
    let canvas: HtmlCanvasElement = doc.create_element("canvas").ok()?.dyn_into().ok()?;
    canvas.set_width(width);
    canvas.set_height(band as u32);
    let ctx: CanvasRenderingContext2d = canvas.get_context("2d").ok()??.dyn_into().ok()?;
    let draw: Function = Reflect::get(&ctx, &"drawImage".into()).ok()?.dyn_into().ok()?;
    let args = Array::new();
    args.push(source);
    for v in [0.0, 0.0, f64::from(width), band as f64, 0.0, 0.0, f64::from(width), band as f64] {
        args.push(&JsValue::from_f64(v));
    }
    draw.apply(&ctx, &args).ok()?;
    let rgba = ctx.get_image_data(0.0, 0.0, f64::from(width), band as f64).ok()?.data();
    let sample = |x: usize, y: usize| {
        let i = (y * w + x) * 4;
        rgba.get(i..i + 3).map_or(0, |p| ((u16::from(p[0]) + u16::from(p[1]) + u16::from(p[2])) / 3) as u8)
    };
    timecode::read_with(w, h, sample).map(|tc| tc.age_ms(net::unix_ms()))
}
