//! Pictures from encoded video, made only while someone needs them.
//!
//! - [`Decoder`]: openh264 on a thread of its own, fed access units (Annex B); it decodes every
//!   unit it is given (P-frames need their references) and hands on the pictures marked to be
//!   shown. When it falls behind it skips to the next IDR rather than queue.
//! - [`run_stills`]: for a passed-through stream, the pictures MJPEG clients and snapshots
//!   read. While any such client exists it reads the stream's track like a viewer (the kept
//!   GOP first, so the current picture comes at once, not at the camera's next keyframe),
//!   depacketizes and decodes. Nobody watching, nothing is decoded.

use crate::media::h264::H264Decoder;
use crate::media::I420;
use crate::pipeline::depacketize;
use crate::stream::Stream;
use bytes::Bytes;
use scopecast_shared::api::VideoPath;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::RecvError;

/// Units a decoder may have waiting before new ones are dropped until the next IDR.
const MAX_QUEUED: usize = 12;
/// Stills keep being decoded this long after the last MJPEG client or snapshot, so a page
/// that polls snapshots does not restart the decoder (and decode the GOP again) each time.
const STILLS_LINGER: Duration = Duration::from_secs(10);

/// One access unit for the decoder.
#[derive(Clone)]
pub struct Unit {
    pub annexb: Bytes,
    pub idr: bool,
    /// Hand the picture on (false while catching up through a GOP).
    pub show: bool,
    pub captured: Instant,
    pub captured_ms: u64,
}

/// A decoder thread. Dropping the handle ends it.
pub struct Decoder {
    tx: mpsc::Sender<Unit>,
    queued: Arc<AtomicUsize>,
    /// Dropping units until an IDR: nothing decodable yet, or the decoder fell behind.
    skipping: bool,
}

impl Decoder {
    /// Starts a thread that calls `on_picture` for every shown unit that produced a picture.
    pub fn spawn(name: &str, mut on_picture: impl FnMut(Arc<I420>, &Unit) + Send + 'static) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Unit>();
        let queued = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&queued);
        let stream = name.to_owned();
        std::thread::Builder::new().name(format!("decode-{name}")).spawn(move || {
            let mut decoder = match H264Decoder::new() {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(stream, "cannot start an H.264 decoder: {e}");
                    return;
                }
            };
            let mut picture = I420::new(2, 2);
            let mut errors = 0u64;
            while let Ok(unit) = rx.recv() {
                counter.fetch_sub(1, Ordering::Relaxed);
                match decoder.decode(&unit.annexb, &mut picture) {
                    Ok(true) if unit.show => on_picture(Arc::new(picture.clone()), &unit),
                    Ok(_) => {}
                    Err(e) => {
                        errors += 1;
                        // A corrupt unit at 30 fps must not flood the log.
                        if errors.is_power_of_two() {
                            tracing::warn!(stream, "cannot decode the source's H.264 ({errors} units so far): {e}");
                        }
                    }
                }
            }
        })?;
        Ok(Self { tx, queued, skipping: true })
    }

    /// Queues a unit; drops it (and what follows, up to the next IDR) when the decoder is
    /// behind. Returns whether it was queued.
    pub fn push(&mut self, unit: Unit) -> bool {
        if unit.idr {
            self.skipping = false;
        } else if self.skipping || self.queued.load(Ordering::Relaxed) >= MAX_QUEUED {
            self.skipping = true;
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(unit).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Queues a whole GOP (from its IDR) to catch up through: only its last picture is shown.
    pub fn catch_up(&mut self, units: impl IntoIterator<Item = Unit>) {
        let mut units = units.into_iter().peekable();
        if units.peek().is_some_and(|u| u.idr) {
            self.skipping = false;
        }
        while let Some(mut unit) = units.next() {
            unit.show = units.peek().is_none();
            self.queued.fetch_add(1, Ordering::Relaxed);
            if self.tx.send(unit).is_err() {
                return;
            }
        }
    }
}

/// Decodes a passed-through stream's pictures for MJPEG clients and snapshots, while there are
/// any; returns when the stream stops.
pub async fn run_stills(stream: Arc<Stream>) {
    let mut demand = stream.demand.subscribe();
    let wanted = |v: &scopecast_shared::Viewers| v.pictures() > 0;
    loop {
        tokio::select! {
            r = demand.wait_for(wanted) => if r.is_err() { return },
            () = stream.stopped() => return,
        }
        if stream.video().path != VideoPath::Passthrough {
            // An encoder makes this stream's pictures; wait for its video to change.
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                () = stream.stopped() => return,
            }
        }
        tokio::select! {
            () = decode_stills(&stream) => {}
            () = stream.stopped() => return,
            () = unwanted_for(&mut demand, STILLS_LINGER) => {}
        }
        stream.clear_still();
    }
}

async fn unwanted_for(demand: &mut tokio::sync::watch::Receiver<scopecast_shared::Viewers>, linger: Duration) {
    loop {
        if demand.wait_for(|v| v.pictures() == 0).await.is_err() {
            return std::future::pending().await;
        }
        if tokio::time::timeout(linger, demand.wait_for(|v| v.pictures() > 0)).await.is_err() {
            return;
        }
    }
}

/// Reads the track (GOP, then live) into a decoder, until the stream stops being passed
/// through.
async fn decode_stills(stream: &Arc<Stream>) {
    let target = Arc::clone(stream);
    let mut decoder = match Decoder::spawn(stream.name(), move |picture, unit| target.set_still(picture, unit.captured_ms)) {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(stream = stream.name(), "cannot start the stills decoder thread: {e}");
            return std::future::pending().await;
        }
    };
    let unit = |frame: &crate::pipeline::RtpFrame| {
        depacketize(frame).map(|annexb| Unit { annexb, idr: frame.keyframe, show: true, captured: Instant::now(), captured_ms: crate::timing::unix_ms() })
    };
    let mut reader = stream.track.attach();
    let after = reader.after;
    decoder.catch_up(reader.backlog.iter().filter_map(|f| unit(f)));
    tracing::debug!(stream = stream.name(), "decoding pictures for MJPEG and snapshots ({} frames kept)", reader.backlog.len());
    loop {
        let frame = match reader.live.recv().await {
            Ok(f) => f,
            Err(RecvError::Lagged(_)) => {
                // Frames were missed: the decoder cannot continue until an IDR.
                decoder.skipping = true;
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if after.is_some_and(|a| frame.index <= a) {
            continue;
        }
        if stream.video().path != VideoPath::Passthrough {
            return;
        }
        if let Some(u) = unit(&frame) {
            decoder.push(u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{EncoderSettings, H264Encoder};

    fn encoded_frames(n: usize) -> Vec<Bytes> {
        let mut encoder = H264Encoder::new(EncoderSettings { bitrate_bps: 500_000, fps: 25.0, idr_interval_frames: 0 }).expect("encoder");
        let mut picture = I420::new(96, 64);
        (0..n)
            .map(|i| {
                picture.y_mut().iter_mut().enumerate().for_each(|(j, p)| *p = ((j + i * 7) % 200) as u8);
                encoder.encode(&picture).expect("encodes").expect("a frame").bitstream
            })
            .collect()
    }

    #[test]
    fn rtp_packets_depacketize_to_the_access_unit_that_was_packetized() {
        let annexb = encoded_frames(1).remove(0);
        let frame = crate::pipeline::Packetizer::default().frame(&annexb, 1, true, (96, 64)).expect("packetizes");
        assert!(frame.packets.len() > 1, "FU-A fragments");
        let back = depacketize(&frame).expect("depacketizes");
        let nals = |b: &[u8]| crate::media::encoder::nal_units(b).map(<[u8]>::to_vec).collect::<Vec<_>>();
        assert_eq!(nals(&back), nals(&annexb));
    }

    #[test]
    fn a_caught_up_gop_shows_only_its_last_picture_and_live_units_each() {
        let frames = encoded_frames(5);
        let (tx, rx) = mpsc::channel();
        let mut decoder = Decoder::spawn("t", move |p, u| tx.send((p.width, u.captured_ms)).expect("open")).expect("thread");
        let unit = |i: usize| Unit { annexb: frames[i].clone(), idr: i == 0, show: true, captured: Instant::now(), captured_ms: i as u64 };
        decoder.catch_up((0..3).map(unit));
        assert!(decoder.push(unit(3)));
        assert!(decoder.push(unit(4)));
        let shown: Vec<u64> = (0..3).map(|_| rx.recv_timeout(Duration::from_secs(5)).expect("a picture").1).collect();
        assert_eq!(shown, [2, 3, 4]);
        assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "nothing else");
    }

    #[test]
    fn a_decoder_behind_drops_until_the_next_idr() {
        let frames = encoded_frames(1);
        let (tx, rx) = mpsc::channel();
        let gate = Arc::new(std::sync::Mutex::new(()));
        let held = gate.lock().expect("lock");
        let wait = Arc::clone(&gate);
        let mut decoder = Decoder::spawn("t", move |_, _| {
            drop(wait.lock());
            let _ = tx.send(());
        })
        .expect("thread");
        let unit = |idr| Unit { annexb: frames[0].clone(), idr, show: true, captured: Instant::now(), captured_ms: 0 };
        assert!(!decoder.push(unit(false)), "nothing decodable before an IDR");
        assert!(decoder.push(unit(true)));
        // The first picture blocks the thread in the callback; the queue fills behind it.
        let queued = 1 + (0..MAX_QUEUED + 5).filter(|_| decoder.push(unit(false))).count();
        assert!(queued <= MAX_QUEUED + 1, "{queued} queued");
        assert!(!decoder.push(unit(false)), "skipping until an IDR");
        assert!(decoder.push(unit(true)), "an IDR goes in");
        drop(held);
        drop(decoder);
        assert!(rx.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
